//! Inode numbers of the virtual `.ckpt/` tree. They are computed, not
//! allocated: bit 63 marks a virtual inode, bits 60-62 its kind, the rest
//! what it shows. Nothing has to be remembered or forgotten per inode, and
//! the same object always has the same number.
//!
//! ```text
//! 1 000 ............................ ctl    fixed nodes (.ckpt, versions/, stats, remotes/, ...)
//! 1 001 snap:24 ino:36                snap   a node of a snapshot (ino 1: its root)
//! 1 010 path:60                       path   a directory of .ckpt/versions/
//! 1 011 path:32 seq:28                ver    one version file
//! 1 100 path:60                       latest the `latest` link of a path
//! 1 101 kept:1 snap:24                link   an entry of retention/kept or expiring
//! 1 110 sub:4 remote:8 node:16        remote .ckpt/remotes/NAME (sub 0), NAME/NODE (sub 1)
//! 1 111 remote:8 snap:24 item:28      ritem  an item of a remote snapshot (item 0: its root)
//! ```

use crate::ids::{Ino, PathId, SnapId};

const VIRTUAL: u64 = 1 << 63;
const KIND_SHIFT: u32 = 60;
const LOW60: u64 = (1 << 60) - 1;

/// The fixed nodes of the control directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ctl {
    /// `.ckpt` itself.
    Root = 1,
    /// `.ckpt/snapshots`
    Snapshots,
    /// `.ckpt/snapshots/latest`
    SnapLatest,
    /// `.ckpt/snapshots/best`
    SnapBest,
    /// `.ckpt/retention`
    Retention,
    /// `.ckpt/retention/policy`
    Policy,
    /// `.ckpt/retention/status`
    Status,
    /// `.ckpt/retention/gc`
    Gc,
    /// `.ckpt/retention/kept`
    Kept,
    /// `.ckpt/retention/expiring`
    Expiring,
    /// `.ckpt/stats`
    Stats,
    /// `.ckpt/events`
    Events,
    /// `.ckpt/verify`
    Verify,
    /// `.ckpt/remotes`
    Remotes,
    /// `.ckpt/remotes/status`
    RemotesStatus,
    /// `.ckpt/remotes/push`
    RemotesPush,
}

impl Ctl {
    const ALL: [Ctl; 16] = [
        Ctl::Root,
        Ctl::Snapshots,
        Ctl::SnapLatest,
        Ctl::SnapBest,
        Ctl::Retention,
        Ctl::Policy,
        Ctl::Status,
        Ctl::Gc,
        Ctl::Kept,
        Ctl::Expiring,
        Ctl::Stats,
        Ctl::Events,
        Ctl::Verify,
        Ctl::Remotes,
        Ctl::RemotesStatus,
        Ctl::RemotesPush,
    ];
}

/// What a virtual inode shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VNode {
    /// A fixed node.
    Ctl(Ctl),
    /// A node of a snapshot's tree (`Ino::ROOT`: the snapshot directory).
    Snap(SnapId, Ino),
    /// A directory of the version history (`PathId::ROOT`: `versions/`).
    Path(PathId),
    /// One version of a path.
    Version(PathId, u64),
    /// The `latest` link of a path.
    Latest(PathId),
    /// A link in `retention/kept` (true) or `retention/expiring` (false).
    Link(bool, SnapId),
    /// `.ckpt/remotes/NAME`: a remote, by its position in the store's list.
    RemoteDir(u8),
    /// `.ckpt/remotes/NAME/NODE`: a node that pushed to it.
    RemoteNode(u8, u16),
    /// An item of a remote snapshot: remote, snapshot id in its view, item.
    RemoteItem(u8, u32, u32),
}

/// True for inode numbers of the control tree.
pub fn is_virtual(ino: u64) -> bool {
    ino & VIRTUAL != 0
}

fn make(kind: u64, low: u64) -> u64 {
    VIRTUAL | (kind << KIND_SHIFT) | (low & LOW60)
}

/// The inode number of a node; `None` when an id is too large to encode
/// (the store's counters stop before that happens).
pub fn encode(node: VNode) -> Option<u64> {
    Some(match node {
        VNode::Ctl(c) => make(0, c as u64),
        VNode::Snap(s, i) if s.0 < 1 << 24 && i.0 < 1 << 36 => make(1, (s.0 << 36) | i.0),
        VNode::Path(p) if p.0 <= LOW60 => make(2, p.0),
        VNode::Version(p, seq) if p.0 < 1 << 32 && seq < 1 << 28 => make(3, (p.0 << 28) | seq),
        VNode::Latest(p) if p.0 <= LOW60 => make(4, p.0),
        VNode::Link(kept, s) if s.0 < 1 << 24 => make(5, ((kept as u64) << 24) | s.0),
        VNode::RemoteDir(r) => make(6, (r as u64) << 16),
        VNode::RemoteNode(r, n) => make(6, (1 << 56) | ((r as u64) << 16) | n as u64),
        VNode::RemoteItem(r, s, i) if s < 1 << 24 && i < 1 << 28 => {
            make(7, ((r as u64) << 52) | ((s as u64) << 28) | i as u64)
        }
        _ => return None,
    })
}

/// The node an inode number shows; `None` for live or unknown numbers.
pub fn decode(ino: u64) -> Option<VNode> {
    if !is_virtual(ino) {
        return None;
    }
    let low = ino & LOW60;
    Some(match (ino & !VIRTUAL) >> KIND_SHIFT {
        0 => VNode::Ctl(*Ctl::ALL.iter().find(|c| **c as u64 == low)?),
        1 => VNode::Snap(SnapId(low >> 36), Ino(low & ((1 << 36) - 1))),
        2 => VNode::Path(PathId(low)),
        3 => VNode::Version(PathId(low >> 28), low & ((1 << 28) - 1)),
        4 => VNode::Latest(PathId(low)),
        5 => VNode::Link(low >> 24 & 1 == 1, SnapId(low & ((1 << 24) - 1))),
        6 => {
            let r = (low >> 16 & 0xff) as u8;
            match low >> 56 {
                0 => VNode::RemoteDir(r),
                1 => VNode::RemoteNode(r, (low & 0xffff) as u16),
                _ => return None,
            }
        }
        7 => VNode::RemoteItem(
            (low >> 52 & 0xff) as u8,
            (low >> 28 & ((1 << 24) - 1)) as u32,
            (low & ((1 << 28) - 1)) as u32,
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_and_live_numbers_are_not_virtual() {
        let nodes = [
            VNode::Ctl(Ctl::Root),
            VNode::Ctl(Ctl::Stats),
            VNode::Snap(SnapId(5), Ino::ROOT),
            VNode::Snap(SnapId((1 << 24) - 1), Ino((1 << 36) - 1)),
            VNode::Path(PathId::ROOT),
            VNode::Version(PathId(123_456), 1000),
            VNode::Latest(PathId(7)),
            VNode::Link(true, SnapId(9)),
            VNode::Link(false, SnapId(9)),
            VNode::RemoteDir(0),
            VNode::RemoteDir(255),
            VNode::RemoteNode(3, 7),
            VNode::RemoteNode(255, u16::MAX),
            VNode::RemoteItem(0, 1, 0),
            VNode::RemoteItem(255, (1 << 24) - 1, (1 << 28) - 1),
        ];
        let mut seen = std::collections::HashSet::new();
        for n in nodes {
            let ino = encode(n).unwrap();
            assert!(is_virtual(ino));
            assert!(seen.insert(ino), "{n:?} collides");
            assert_eq!(decode(ino), Some(n));
        }
        assert_eq!(decode(1), None);
        assert_eq!(decode(1 << 40), None);
        assert_eq!(encode(VNode::Snap(SnapId(1 << 24), Ino(1))), None);
        assert_eq!(encode(VNode::Version(PathId(1), 1 << 28)), None);
    }
}
