//! Routing between the live tree and the `.ckpt/` control tree, and the
//! small reply helpers both use.

use fuser::{Errno, FileAttr, Generation, INodeNo, ReplyAttr, ReplyData, ReplyEmpty, ReplyEntry};

use super::ckpt::CResult;
use super::vino::{is_virtual, Ctl, VNode};
use std::time::Duration;

use super::CkptFs;

/// File handles of the control tree start here (the tree's start at 1).
pub(super) const CTL_FH: u64 = 1 << 62;

/// True for a handle of a `.ckpt/` file.
pub(super) fn is_ctl_fh(fh: u64) -> bool {
    fh >= CTL_FH
}

/// True for an inode of the control tree.
pub(super) fn is_ctl(ino: INodeNo) -> bool {
    is_virtual(ino.0)
}

/// The control tree changes behind the kernel's back (GC expires
/// snapshots, prunes history paths, new snapshots appear): its entries and
/// attributes are not cached.
const CTL_TTL: Duration = Duration::ZERO;

pub(super) fn reply_entry(reply: ReplyEntry, r: CResult<FileAttr>) {
    match r {
        Ok(attr) => reply.entry(&CTL_TTL, &attr, Generation(0)),
        Err(e) => reply.error(e),
    }
}

pub(super) fn reply_attr(reply: ReplyAttr, r: CResult<FileAttr>) {
    match r {
        Ok(attr) => reply.attr(&CTL_TTL, &attr),
        Err(e) => reply.error(e),
    }
}

pub(super) fn reply_data(reply: ReplyData, r: CResult<Vec<u8>>) {
    match r {
        Ok(data) => reply.data(&data),
        Err(e) => reply.error(e),
    }
}

pub(super) fn reply_empty(reply: ReplyEmpty, r: CResult<()>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl CkptFs {
    /// True for the control directory's own name at the mount root.
    pub(super) fn is_ctl_name(&self, parent: INodeNo, name: &[u8]) -> bool {
        parent == INodeNo::ROOT && name == self.ctl.name()
    }

    /// A lookup that the control tree answers, if it is one.
    pub(super) fn ctl_lookup(&self, parent: INodeNo, name: &[u8]) -> Option<CResult<FileAttr>> {
        if self.is_ctl_name(parent, name) {
            return Some(self.ctl.getattr(VNode::Ctl(Ctl::Root)));
        }
        if !is_ctl(parent) {
            return None;
        }
        Some(
            self.ctl
                .node(parent)
                .and_then(|p| self.ctl.lookup(p, name))
                .map(|(_, attr)| attr),
        )
    }

    /// The error for creating `name` in `parent`, if the control tree
    /// refuses it: nothing is created under `.ckpt/` (EROFS), and nothing
    /// may take the control directory's name (EEXIST).
    pub(super) fn refuse_create(&self, parent: INodeNo, name: &[u8]) -> Option<Errno> {
        if is_ctl(parent) {
            Some(Errno::EROFS)
        } else if self.is_ctl_name(parent, name) {
            Some(Errno::EEXIST)
        } else {
            None
        }
    }

    /// Runs a control-tree operation on the node of `ino`.
    pub(super) fn on_ctl<T>(
        &self,
        ino: INodeNo,
        f: impl FnOnce(VNode) -> CResult<T>,
    ) -> CResult<T> {
        self.ctl.node(ino).and_then(f)
    }
}
