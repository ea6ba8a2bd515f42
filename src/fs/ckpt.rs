//! The `.ckpt/` control directory: resolving its virtual nodes (attributes,
//! lookup, readdir, links). I/O and the writable controls are in
//! `ckpt_io.rs`.
//!
//! ```text
//! .ckpt/versions/<path>/NNNNNN-YYYYMMDDTHHMMSSZ   a version of a file (read-only)
//! .ckpt/versions/<path>/latest                  -> its newest version
//! .ckpt/snapshots/<name>/...                    a snapshot of the whole tree
//! .ckpt/snapshots/latest, best                  -> snapshot names
//! .ckpt/retention/policy                        the retention policy (writable)
//! .ckpt/retention/status                        is it valid, what it keeps (JSON)
//! .ckpt/retention/gc                            write: run GC; read: last run (JSON)
//! .ckpt/retention/kept/<name>, expiring/<name>  -> the snapshots, xattr user.ckpt.rules
//! .ckpt/stats                                   logical and stored bytes (JSON)
//! .ckpt/events                                  JSON lines of commits, snapshots, GC (tail -f)
//! .ckpt/verify                                  reading it scrubs the store (JSON report)
//! ```

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuser::{Errno, FileAttr, FileType, INodeNo};
use parking_lot::Mutex;

use super::attr::{file_attr, file_type};
use super::errno::errno;
use super::vino::{decode, encode, Ctl, VNode};
use crate::ids::{Ino, PathId, SnapId};
use crate::retention::Retention;
use crate::tree::{compact_utc, FileKind, InodeRecord, Scope, Time, Tree, TreeError};

/// Result of a control-tree operation, already an errno on failure.
pub type CResult<T> = std::result::Result<T, Errno>;

/// Readdir offsets of entries listed by id start here (the fixed entries
/// use the small ones).
const ID_OFFSET: u64 = 16;
/// Offsets of history child paths: above every version's.
const CHILD_OFFSET: u64 = 1 << 32;
/// How long computed listings (plan, stats) are reused.
const CACHE_FOR: Duration = Duration::from_secs(2);

/// How the control directory appears, and what it controls besides the
/// tree and retention.
#[derive(Clone)]
pub struct ControlOptions {
    /// Its name at the mount root.
    pub name: Vec<u8>,
    /// Listed in the root's readdir (hidden by default, like ZFS's .zfs).
    pub show: bool,
    /// Replication to remotes (`.ckpt/remotes/`); none on a read-only mount.
    pub replication: Option<Arc<dyn super::Replication>>,
}

/// The control directory of one mount.
pub struct ControlDir {
    pub(super) tree: Arc<Tree>,
    pub(super) retention: Arc<Retention>,
    pub(super) opts: ControlOptions,
    pub(super) started: Time,
    pub(super) owner: (u32, u32),
    pub(super) handles: Mutex<HashMap<u64, super::ckpt_io::VHandle>>,
    pub(super) next_fh: AtomicU64,
    plan_cache: Mutex<Option<(Instant, PlanView)>>,
}

/// The retention plan by snapshot id, with rule labels.
#[derive(Clone, Default)]
pub(super) struct PlanView {
    pub kept: HashMap<SnapId, Vec<&'static str>>,
    pub expiring: Vec<SnapId>,
}

pub(super) fn vino(node: VNode) -> CResult<INodeNo> {
    encode(node).map(INodeNo).ok_or(Errno::EOVERFLOW)
}

fn te(e: TreeError) -> Errno {
    errno(&e)
}

/// The name of a version file.
pub fn version_name(seq: u64, committed: Time) -> String {
    format!("{seq:06}-{}", compact_utc(committed))
}

impl ControlDir {
    /// The control directory over `tree`.
    pub fn new(tree: Arc<Tree>, retention: Arc<Retention>, opts: ControlOptions) -> Self {
        ControlDir {
            tree,
            retention,
            opts,
            started: Time::now(),
            owner: (
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            ),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1 << 62),
            plan_cache: Mutex::new(None),
        }
    }

    /// The control directory's name.
    pub fn name(&self) -> &[u8] {
        &self.opts.name
    }

    /// Listed in the root's readdir?
    pub fn shown(&self) -> bool {
        self.opts.show
    }

    /// The inode number of `.ckpt` itself.
    pub fn root_ino(&self) -> INodeNo {
        INodeNo(encode(VNode::Ctl(Ctl::Root)).unwrap_or(u64::MAX))
    }

    pub(super) fn plan_view(&self) -> PlanView {
        let mut cache = self.plan_cache.lock();
        if let Some((at, view)) = cache.as_ref() {
            if at.elapsed() < CACHE_FOR {
                return view.clone();
            }
        }
        let view = match self.retention.plan() {
            Ok(plan) => PlanView {
                kept: plan
                    .kept
                    .iter()
                    .map(|(id, reasons)| (SnapId(*id), reasons.iter().map(|r| r.label()).collect()))
                    .collect(),
                expiring: plan.expiring.iter().map(|id| SnapId(*id)).collect(),
            },
            Err(e) => {
                log::warn!("retention plan: {e}");
                PlanView::default()
            }
        };
        *cache = Some((Instant::now(), view.clone()));
        view
    }

    /// Forgets cached listings (after snapshots or the policy changed).
    pub(super) fn invalidate(&self) {
        *self.plan_cache.lock() = None;
    }

    pub(super) fn fixed(&self, ino: INodeNo, kind: FileType, perm: u16, size: u64) -> FileAttr {
        let t = self.started.into();
        FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: self.owner.0,
            gid: self.owner.1,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn link_attr(&self, ino: INodeNo, target: &[u8]) -> FileAttr {
        self.fixed(ino, FileType::Symlink, 0o777, target.len() as u64)
    }

    /// `stat` of a virtual node.
    pub fn getattr(&self, node: VNode) -> CResult<FileAttr> {
        let ino = vino(node)?;
        Ok(match node {
            VNode::Ctl(Ctl::Root | Ctl::Retention | Ctl::Kept | Ctl::Expiring | Ctl::Remotes) => {
                self.fixed(ino, FileType::Directory, 0o555, 0)
            }
            VNode::Ctl(Ctl::RemotesPush) => self.fixed(
                ino,
                FileType::RegularFile,
                0o644,
                self.push_text().len() as u64,
            ),
            VNode::Ctl(Ctl::Snapshots) => self.fixed(ino, FileType::Directory, 0o755, 0),
            VNode::Ctl(Ctl::Policy) => self.fixed(
                ino,
                FileType::RegularFile,
                0o644,
                self.retention.policy_text().len() as u64,
            ),
            VNode::Ctl(Ctl::Gc) => self.fixed(
                ino,
                FileType::RegularFile,
                0o644,
                self.gc_text().len() as u64,
            ),
            VNode::Ctl(c @ (Ctl::Status | Ctl::Stats | Ctl::RemotesStatus)) => self.fixed(
                ino,
                FileType::RegularFile,
                0o444,
                self.generated(c).len() as u64,
            ),
            VNode::Ctl(Ctl::Events) => {
                self.fixed(ino, FileType::RegularFile, 0o444, self.tree.events_len())
            }
            // Its content is a scrub run at open: no size until then.
            VNode::Ctl(Ctl::Verify) => self.fixed(ino, FileType::RegularFile, 0o444, 0),
            VNode::Ctl(c @ (Ctl::SnapLatest | Ctl::SnapBest)) => {
                self.link_attr(ino, &self.readlink(VNode::Ctl(c))?)
            }
            VNode::Snap(s, i) => {
                let mut rec = self.tree.inode_in(Scope::Snapshot(s), i).map_err(te)?;
                if i == Ino::ROOT {
                    let snap = self.tree.snapshot(s).map_err(te)?;
                    rec.mtime = snap.created;
                    rec.ctime = snap.created;
                }
                FileAttr {
                    ino,
                    ..file_attr(Ino(ino.0), &rec)
                }
            }
            VNode::Path(p) => {
                let rec = self.tree.history_path(p).map_err(te)?;
                let mut a = self.fixed(
                    ino,
                    FileType::Directory,
                    if rec.perm == 0 {
                        0o755
                    } else {
                        rec.perm & 0o7777
                    },
                    0,
                );
                a.uid = rec.uid;
                a.gid = rec.gid;
                a
            }
            VNode::Version(p, seq) => {
                let v = self.tree.version(p, seq).map_err(te)?;
                let rec = InodeRecord {
                    size: v.size,
                    mtime: v.mtime,
                    ctime: v.committed,
                    atime: v.committed,
                    crtime: v.committed,
                    perm: v.perm,
                    uid: v.uid,
                    gid: v.gid,
                    ..InodeRecord::new(FileKind::File, v.perm, v.uid, v.gid)
                };
                FileAttr {
                    ino,
                    ..file_attr(Ino(ino.0), &rec)
                }
            }
            VNode::Latest(_) | VNode::Link(..) => self.link_attr(ino, &self.readlink(node)?),
            VNode::RemoteDir(_) | VNode::RemoteNode(..) | VNode::RemoteItem(..) => {
                self.remote_getattr(node)?
            }
        })
    }

    /// A symlink's target.
    pub fn readlink(&self, node: VNode) -> CResult<Vec<u8>> {
        match node {
            VNode::Ctl(Ctl::SnapLatest) => {
                let snaps = self.tree.snapshots().map_err(te)?;
                snaps
                    .last()
                    .map(|(_, r)| r.name.clone())
                    .ok_or(Errno::ENOENT)
            }
            VNode::Ctl(Ctl::SnapBest) => {
                let best = self.retention.best().map_err(te)?.ok_or(Errno::ENOENT)?;
                Ok(self.tree.snapshot(best).map_err(te)?.name)
            }
            VNode::Latest(p) => {
                let rec = self.tree.history_path(p).map_err(te)?;
                let v = self
                    .tree
                    .version(p, rec.last_seq)
                    .map_err(|_| Errno::ENOENT)?;
                Ok(version_name(rec.last_seq, v.committed).into_bytes())
            }
            VNode::Link(_, s) => {
                let snap = self.tree.snapshot(s).map_err(te)?;
                let mut t = b"../../snapshots/".to_vec();
                t.extend_from_slice(&snap.name);
                Ok(t)
            }
            VNode::Snap(s, i) => self.tree.readlink_in(Scope::Snapshot(s), i).map_err(te),
            VNode::RemoteItem(r, s, i) => self.remote_readlink(r, s, i),
            _ => Err(Errno::EINVAL),
        }
    }

    /// Resolves `name` in a virtual directory.
    pub fn lookup(&self, parent: VNode, name: &[u8]) -> CResult<(VNode, FileAttr)> {
        let node = self.resolve(parent, name)?;
        Ok((node, self.getattr(node)?))
    }

    fn resolve(&self, parent: VNode, name: &[u8]) -> CResult<VNode> {
        let fixed = |table: &[(&[u8], Ctl)]| {
            table
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, c)| VNode::Ctl(*c))
                .ok_or(Errno::ENOENT)
        };
        match parent {
            VNode::Ctl(Ctl::Root) => match name {
                b"versions" => Ok(VNode::Path(PathId::ROOT)),
                _ => fixed(&[
                    (b"snapshots", Ctl::Snapshots),
                    (b"retention", Ctl::Retention),
                    (b"stats", Ctl::Stats),
                    (b"events", Ctl::Events),
                    (b"verify", Ctl::Verify),
                    (b"remotes", Ctl::Remotes),
                ]),
            },
            VNode::Ctl(Ctl::Remotes)
            | VNode::RemoteDir(_)
            | VNode::RemoteNode(..)
            | VNode::RemoteItem(..) => self.remote_resolve(parent, name),
            VNode::Ctl(Ctl::Retention) => fixed(&[
                (b"policy", Ctl::Policy),
                (b"status", Ctl::Status),
                (b"gc", Ctl::Gc),
                (b"kept", Ctl::Kept),
                (b"expiring", Ctl::Expiring),
            ]),
            VNode::Ctl(Ctl::Snapshots) => match name {
                b"latest" => self
                    .readlink(VNode::Ctl(Ctl::SnapLatest))
                    .map(|_| VNode::Ctl(Ctl::SnapLatest)),
                b"best" => self
                    .readlink(VNode::Ctl(Ctl::SnapBest))
                    .map(|_| VNode::Ctl(Ctl::SnapBest)),
                _ => Ok(VNode::Snap(
                    self.tree.snapshot_named(name).map_err(te)?.0,
                    Ino::ROOT,
                )),
            },
            VNode::Ctl(c @ (Ctl::Kept | Ctl::Expiring)) => {
                let (id, _) = self.tree.snapshot_named(name).map_err(te)?;
                let view = self.plan_view();
                let listed = if c == Ctl::Kept {
                    view.kept.contains_key(&id)
                } else {
                    view.expiring.contains(&id)
                };
                if listed {
                    Ok(VNode::Link(c == Ctl::Kept, id))
                } else {
                    Err(Errno::ENOENT)
                }
            }
            VNode::Snap(s, dir) => Ok(VNode::Snap(
                s,
                self.tree
                    .lookup_in(Scope::Snapshot(s), dir, name)
                    .map_err(te)?
                    .0,
            )),
            VNode::Path(p) => {
                // `latest` is the link to the newest version when the path
                // has versions; otherwise a child may be named so
                // (DeepSpeed's `latest` file).
                if name == b"latest" && self.readlink(VNode::Latest(p)).is_ok() {
                    return Ok(VNode::Latest(p));
                }
                if let Some(seq) = parse_version_name(name) {
                    if let Ok(v) = self.tree.version(p, seq) {
                        if version_name(seq, v.committed).as_bytes() == name {
                            return Ok(VNode::Version(p, seq));
                        }
                    }
                }
                Ok(VNode::Path(self.tree.history_child(p, name).map_err(te)?))
            }
            _ => Err(Errno::ENOTDIR),
        }
    }

    /// Lists a virtual directory from `offset`; `add(ino, offset, kind,
    /// name)` returns true when the reply is full.
    pub fn readdir(
        &self,
        node: VNode,
        offset: u64,
        mut add: impl FnMut(INodeNo, u64, FileType, &[u8]) -> bool,
    ) -> CResult<()> {
        let me = vino(node)?;
        let parent = match node {
            VNode::Ctl(Ctl::Root) => INodeNo::ROOT,
            VNode::Ctl(Ctl::Snapshots | Ctl::Retention | Ctl::Remotes)
            | VNode::Path(PathId::ROOT) => self.root_ino(),
            VNode::Ctl(Ctl::Kept | Ctl::Expiring) => vino(VNode::Ctl(Ctl::Retention))?,
            VNode::Path(p) => vino(VNode::Path(self.tree.history_path(p).map_err(te)?.parent))?,
            VNode::Snap(_, Ino::ROOT) => vino(VNode::Ctl(Ctl::Snapshots))?,
            VNode::RemoteDir(_) | VNode::RemoteNode(..) | VNode::RemoteItem(..) => {
                self.remote_parent(node)?
            }
            VNode::Snap(s, dir) => vino(VNode::Snap(
                s,
                self.tree
                    .inode_in(Scope::Snapshot(s), dir)
                    .map_err(te)?
                    .parent,
            ))?,
            _ => return Err(Errno::ENOTDIR),
        };
        // Entries as (offset, ino, kind, name), from `offset` on.
        let mut items: Vec<(u64, INodeNo, FileType, Vec<u8>)> = vec![
            (1, me, FileType::Directory, b".".to_vec()),
            (2, parent, FileType::Directory, b"..".to_vec()),
        ];
        let dir = FileType::Directory;
        let fixed = |list: &[(&[u8], VNode, FileType)], items: &mut Vec<_>| -> CResult<()> {
            for (i, (name, n, kind)) in list.iter().enumerate() {
                items.push((3 + i as u64, vino(*n)?, *kind, name.to_vec()));
            }
            Ok(())
        };
        match node {
            VNode::Ctl(Ctl::Root) => fixed(
                &[
                    (b"versions", VNode::Path(PathId::ROOT), dir),
                    (b"snapshots", VNode::Ctl(Ctl::Snapshots), dir),
                    (b"retention", VNode::Ctl(Ctl::Retention), dir),
                    (b"stats", VNode::Ctl(Ctl::Stats), FileType::RegularFile),
                    (b"events", VNode::Ctl(Ctl::Events), FileType::RegularFile),
                    (b"verify", VNode::Ctl(Ctl::Verify), FileType::RegularFile),
                    (b"remotes", VNode::Ctl(Ctl::Remotes), dir),
                ],
                &mut items,
            )?,
            VNode::Ctl(Ctl::Remotes)
            | VNode::RemoteDir(_)
            | VNode::RemoteNode(..)
            | VNode::RemoteItem(..) => self.remote_items(node, &mut items)?,
            VNode::Ctl(Ctl::Retention) => fixed(
                &[
                    (b"policy", VNode::Ctl(Ctl::Policy), FileType::RegularFile),
                    (b"status", VNode::Ctl(Ctl::Status), FileType::RegularFile),
                    (b"gc", VNode::Ctl(Ctl::Gc), FileType::RegularFile),
                    (b"kept", VNode::Ctl(Ctl::Kept), dir),
                    (b"expiring", VNode::Ctl(Ctl::Expiring), dir),
                ],
                &mut items,
            )?,
            VNode::Ctl(Ctl::Snapshots) => {
                let snaps = self.tree.snapshots().map_err(te)?;
                if !snaps.is_empty() {
                    items.push((
                        3,
                        vino(VNode::Ctl(Ctl::SnapLatest))?,
                        FileType::Symlink,
                        b"latest".to_vec(),
                    ));
                }
                if self.readlink(VNode::Ctl(Ctl::SnapBest)).is_ok() {
                    items.push((
                        4,
                        vino(VNode::Ctl(Ctl::SnapBest))?,
                        FileType::Symlink,
                        b"best".to_vec(),
                    ));
                }
                for (id, rec) in snaps {
                    items.push((
                        ID_OFFSET + rec.seq,
                        vino(VNode::Snap(id, Ino::ROOT))?,
                        dir,
                        rec.name,
                    ));
                }
            }
            VNode::Ctl(c @ (Ctl::Kept | Ctl::Expiring)) => {
                let view = self.plan_view();
                for (id, rec) in self.tree.snapshots().map_err(te)? {
                    let listed = if c == Ctl::Kept {
                        view.kept.contains_key(&id)
                    } else {
                        view.expiring.contains(&id)
                    };
                    if listed {
                        items.push((
                            ID_OFFSET + rec.seq,
                            vino(VNode::Link(c == Ctl::Kept, id))?,
                            FileType::Symlink,
                            rec.name,
                        ));
                    }
                }
            }
            VNode::Snap(s, d) => {
                // Cookies of a snapshot are those of the live tree: stable.
                items.truncate(2);
                let scope = Scope::Snapshot(s);
                let mut inner = Vec::new();
                self.tree
                    .readdir_in(scope, d, offset.max(2), |item| {
                        inner.push((item.offset, item.ino, item.kind, item.name.to_vec()));
                        inner.len() < 4096
                    })
                    .map_err(te)?;
                for (off, ino, kind, name) in inner {
                    items.push((off, vino(VNode::Snap(s, ino))?, file_type(kind), name));
                }
            }
            VNode::Path(p) => self.path_items(p, &mut items)?,
            _ => return Err(Errno::ENOTDIR),
        }
        items.sort_by_key(|(off, ..)| *off);
        for (off, ino, kind, name) in items {
            if off > offset && add(ino, off, kind, &name) {
                break;
            }
        }
        Ok(())
    }

    /// A history directory: `latest`, its versions, then its children
    /// (by path id, so offsets stay stable as new paths appear).
    fn path_items(
        &self,
        p: PathId,
        items: &mut Vec<(u64, INodeNo, FileType, Vec<u8>)>,
    ) -> CResult<()> {
        let mut versions = Vec::new();
        self.tree
            .versions_of(p, 0, |seq, v| {
                versions.push((seq, v.committed));
                true
            })
            .map_err(te)?;
        if !versions.is_empty() {
            items.push((
                3,
                vino(VNode::Latest(p))?,
                FileType::Symlink,
                b"latest".to_vec(),
            ));
        }
        for (seq, committed) in versions {
            items.push((
                ID_OFFSET + seq,
                vino(VNode::Version(p, seq))?,
                FileType::RegularFile,
                version_name(seq, committed).into_bytes(),
            ));
        }
        let mut children = Vec::new();
        self.tree
            .history_children(p, None, |id, name| {
                children.push((id, name.to_vec()));
                true
            })
            .map_err(te)?;
        for (id, name) in children {
            items.push((
                CHILD_OFFSET + id.0,
                vino(VNode::Path(id))?,
                FileType::Directory,
                name,
            ));
        }
        Ok(())
    }
}

/// The sequence number of a version file name (`NNNNNN-...`).
fn parse_version_name(name: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(name).ok()?;
    let (seq, _) = text.split_once('-')?;
    seq.parse().ok()
}

/// Decodes a virtual inode number, or ENOENT.
pub fn node_of(ino: INodeNo) -> CResult<VNode> {
    decode(ino.0).ok_or(Errno::ENOENT)
}
