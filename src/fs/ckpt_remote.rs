//! `.ckpt/remotes/NAME/NODE/SNAPSHOT/...`: what each remote holds, as
//! read-only directories, files read from the remote on demand (through
//! the remote's [`RemoteView`], which checks every chunk and caches them).

use std::sync::Arc;

use fuser::{Errno, FileAttr, FileType, INodeNo};

use super::attr::file_attr;
use super::ckpt::{vino, CResult, ControlDir};
use super::vino::{Ctl, VNode};
use crate::ids::Ino;
use crate::remote::layout::{self, RemoteItem};
use crate::remote::view::SnapTree;
use crate::remote::RemoteView;
use crate::tree::{FileKind, InodeRecord, Time};

/// Readdir offsets of snapshot items: above `.` and `..`.
const FIRST: u64 = 3;

fn kind_of(item: &RemoteItem) -> FileKind {
    match item.kind.as_str() {
        "dir" => FileKind::Dir,
        "file" => FileKind::File,
        "symlink" => FileKind::Symlink,
        "fifo" => FileKind::Fifo,
        "socket" => FileKind::Socket,
        "chardev" => FileKind::CharDev,
        _ => FileKind::BlockDev,
    }
}

fn eio(what: &str, e: impl std::fmt::Display) -> Errno {
    log::error!("{what}: {e}");
    Errno::EIO
}

impl ControlDir {
    fn remote_name(&self, r: u8) -> CResult<String> {
        let rep = self.opts.replication.as_ref().ok_or(Errno::ENOENT)?;
        rep.remote_names()
            .get(r as usize)
            .cloned()
            .ok_or(Errno::ENOENT)
    }

    /// The view of remote number `r`.
    pub(super) fn remote_view(&self, r: u8) -> CResult<Arc<RemoteView>> {
        let name = self.remote_name(r)?;
        let rep = self.opts.replication.as_ref().ok_or(Errno::ENOENT)?;
        rep.view(&name)
            .map_err(|e| eio(&format!(".ckpt/remotes/{name}"), e))
    }

    fn remote_tree(&self, r: u8, s: u32) -> CResult<(Arc<RemoteView>, Arc<SnapTree>)> {
        let view = self.remote_view(r)?;
        let tree = view.tree(s).ok_or(Errno::ENOENT)?;
        Ok((view, tree))
    }

    /// `stat` of a node under `.ckpt/remotes/NAME`.
    pub(super) fn remote_getattr(&self, node: VNode) -> CResult<FileAttr> {
        let ino = vino(node)?;
        match node {
            VNode::RemoteDir(r) => {
                self.remote_name(r)?;
                Ok(self.fixed(ino, FileType::Directory, 0o555, 0))
            }
            VNode::RemoteNode(r, n) => {
                let view = self.remote_view(r)?;
                let nodes = view.nodes().map_err(|e| eio(view.url(), e))?;
                nodes.get(n as usize).ok_or(Errno::ENOENT)?;
                Ok(self.fixed(ino, FileType::Directory, 0o555, 0))
            }
            VNode::RemoteItem(r, s, i) => {
                let (_, tree) = self.remote_tree(r, s)?;
                let item = tree.snap.items.get(i as usize).ok_or(Errno::ENOENT)?;
                let kind = kind_of(item);
                let (secs, nanos) = if i == 0 {
                    (tree.snap.created_secs, tree.snap.created_nanos)
                } else {
                    (item.mtime_secs, item.mtime_nanos)
                };
                let t = Time {
                    secs,
                    nanos: nanos.min(999_999_999),
                };
                let rec = InodeRecord {
                    size: match kind {
                        FileKind::File => item.size,
                        FileKind::Symlink => item
                            .target
                            .as_deref()
                            .map_or(0, |t| layout::from_text(t).map_or(0, |b| b.len() as u64)),
                        _ => 0,
                    },
                    mtime: t,
                    ctime: t,
                    atime: t,
                    crtime: t,
                    nlink: if kind == FileKind::Dir { 2 } else { 1 },
                    ..InodeRecord::new(kind, (item.perm & 0o7777) as u16, item.uid, item.gid)
                };
                Ok(FileAttr {
                    ino,
                    ..file_attr(Ino(ino.0), &rec)
                })
            }
            _ => Err(Errno::ENOENT),
        }
    }

    /// Looks `name` up under `.ckpt/remotes` or below.
    pub(super) fn remote_resolve(&self, parent: VNode, name: &[u8]) -> CResult<VNode> {
        match parent {
            VNode::Ctl(Ctl::Remotes) if name == b"status" => Ok(VNode::Ctl(Ctl::RemotesStatus)),
            VNode::Ctl(Ctl::Remotes) if name == b"push" => Ok(VNode::Ctl(Ctl::RemotesPush)),
            VNode::Ctl(Ctl::Remotes) => {
                let rep = self.opts.replication.as_ref().ok_or(Errno::ENOENT)?;
                let names = rep.remote_names();
                let r = names
                    .iter()
                    .position(|n| n.as_bytes() == name)
                    .ok_or(Errno::ENOENT)?;
                Ok(VNode::RemoteDir(
                    u8::try_from(r).map_err(|_| Errno::ENOENT)?,
                ))
            }
            VNode::RemoteDir(r) => {
                let view = self.remote_view(r)?;
                let nodes = view.nodes().map_err(|e| eio(view.url(), e))?;
                let n = nodes
                    .iter()
                    .position(|n| n.as_bytes() == name)
                    .ok_or(Errno::ENOENT)?;
                Ok(VNode::RemoteNode(
                    r,
                    u16::try_from(n).map_err(|_| Errno::ENOENT)?,
                ))
            }
            VNode::RemoteNode(r, n) => {
                let view = self.remote_view(r)?;
                let nodes = view.nodes().map_err(|e| eio(view.url(), e))?;
                let node = nodes.get(n as usize).ok_or(Errno::ENOENT)?;
                let snaps = view.snapshots().map_err(|e| eio(view.url(), e))?;
                snaps
                    .iter()
                    .find(|(_, s)| {
                        s.node == *node && layout::from_text(&s.name).as_deref() == Some(name)
                    })
                    .map(|(id, _)| VNode::RemoteItem(r, *id, 0))
                    .ok_or(Errno::ENOENT)
            }
            VNode::RemoteItem(r, s, i) => {
                let (_, tree) = self.remote_tree(r, s)?;
                let item = tree.snap.items.get(i as usize).ok_or(Errno::ENOENT)?;
                if item.kind != "dir" {
                    return Err(Errno::ENOTDIR);
                }
                tree.lookup(i, name)
                    .map(|c| VNode::RemoteItem(r, s, c))
                    .ok_or(Errno::ENOENT)
            }
            _ => Err(Errno::ENOENT),
        }
    }

    /// The parent of a node under `.ckpt/remotes`.
    pub(super) fn remote_parent(&self, node: VNode) -> CResult<INodeNo> {
        match node {
            VNode::RemoteDir(_) => vino(VNode::Ctl(Ctl::Remotes)),
            VNode::RemoteNode(r, _) => vino(VNode::RemoteDir(r)),
            VNode::RemoteItem(r, s, 0) => {
                let (view, tree) = self.remote_tree(r, s)?;
                let nodes = view.nodes().map_err(|e| eio(view.url(), e))?;
                let n = nodes
                    .iter()
                    .position(|n| *n == tree.snap.node)
                    .ok_or(Errno::ENOENT)?;
                vino(VNode::RemoteNode(r, n as u16))
            }
            VNode::RemoteItem(r, s, i) => {
                let (_, tree) = self.remote_tree(r, s)?;
                let p = tree.parents.get(i as usize).copied().ok_or(Errno::ENOENT)?;
                vino(VNode::RemoteItem(r, s, p))
            }
            _ => Err(Errno::ENOTDIR),
        }
    }

    /// The entries (offset, ino, kind, name) of a directory under
    /// `.ckpt/remotes`, `.` and `..` excluded.
    pub(super) fn remote_items(
        &self,
        node: VNode,
        items: &mut Vec<(u64, INodeNo, FileType, Vec<u8>)>,
    ) -> CResult<()> {
        let dir = FileType::Directory;
        match node {
            VNode::Ctl(Ctl::Remotes) => {
                let file = FileType::RegularFile;
                items.push((
                    FIRST,
                    vino(VNode::Ctl(Ctl::RemotesStatus))?,
                    file,
                    b"status".to_vec(),
                ));
                items.push((
                    FIRST + 1,
                    vino(VNode::Ctl(Ctl::RemotesPush))?,
                    file,
                    b"push".to_vec(),
                ));
                if let Some(rep) = &self.opts.replication {
                    for (r, name) in rep.remote_names().into_iter().enumerate().take(256) {
                        let id = VNode::RemoteDir(r as u8);
                        items.push((FIRST + 2 + r as u64, vino(id)?, dir, name.into_bytes()));
                    }
                }
            }
            VNode::RemoteDir(r) => {
                let view = self.remote_view(r)?;
                let nodes = view.nodes().map_err(|e| eio(view.url(), e))?;
                for (n, name) in nodes.into_iter().enumerate().take(1 << 16) {
                    let id = VNode::RemoteNode(r, n as u16);
                    items.push((FIRST + n as u64, vino(id)?, dir, name.into_bytes()));
                }
            }
            VNode::RemoteNode(r, n) => {
                let view = self.remote_view(r)?;
                let nodes = view.nodes().map_err(|e| eio(view.url(), e))?;
                let node = nodes.get(n as usize).ok_or(Errno::ENOENT)?;
                for (id, snap) in view.snapshots().map_err(|e| eio(view.url(), e))? {
                    if snap.node == *node {
                        let name = layout::from_text(&snap.name).unwrap_or_default();
                        let ino = vino(VNode::RemoteItem(r, id, 0))?;
                        items.push((FIRST + id as u64, ino, dir, name));
                    }
                }
            }
            VNode::RemoteItem(r, s, i) => {
                let (_, tree) = self.remote_tree(r, s)?;
                let children = tree.children.get(i as usize).ok_or(Errno::ENOTDIR)?;
                for &c in children {
                    let kind = super::attr::file_type(kind_of(&tree.snap.items[c as usize]));
                    let ino = vino(VNode::RemoteItem(r, s, c))?;
                    items.push((FIRST + c as u64, ino, kind, tree.names[c as usize].clone()));
                }
            }
            _ => return Err(Errno::ENOTDIR),
        }
        Ok(())
    }

    /// A remote symlink's target.
    pub(super) fn remote_readlink(&self, r: u8, s: u32, i: u32) -> CResult<Vec<u8>> {
        let (_, tree) = self.remote_tree(r, s)?;
        let item = tree.snap.items.get(i as usize).ok_or(Errno::ENOENT)?;
        item.target
            .as_deref()
            .and_then(layout::from_text)
            .ok_or(Errno::EINVAL)
    }

    /// What an open remote file reads: its view, manifest and size.
    pub(super) fn remote_content(
        &self,
        r: u8,
        s: u32,
        i: u32,
    ) -> CResult<(Arc<RemoteView>, Option<String>, u64)> {
        let (view, tree) = self.remote_tree(r, s)?;
        let item = tree.snap.items.get(i as usize).ok_or(Errno::ENOENT)?;
        if item.kind != "file" {
            return Err(Errno::EISDIR);
        }
        Ok((view, item.manifest.clone(), item.size))
    }
}
