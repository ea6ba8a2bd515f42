//! `.ckpt/` I/O and controls: reading snapshot and version files and the
//! generated JSON files, and the only writable things under `.ckpt/`:
//! `mkdir`/`rmdir`/`mv` in `snapshots/`, writing `retention/policy`,
//! writing `retention/gc` (runs GC), writing `remotes/push` (pushes to a
//! remote now), and the `user.ckpt.pinned` xattr of a
//! snapshot directory. Everything else fails with EROFS.

use std::sync::atomic::Ordering;

use fuser::{Errno, FileAttr};

use super::ckpt::{node_of, CResult, ControlDir};
use super::errno::errno;
use super::vino::{Ctl, VNode};
use crate::ids::{Ino, ManifestId};
use crate::tree::{rfc3339, FileKind, ReadHint, Scope, SnapshotRequest, TreeError};

/// An open virtual file.
pub enum VHandle {
    /// A snapshot's or a version's file.
    Content {
        /// Its content.
        manifest: ManifestId,
        /// Its size.
        size: u64,
        /// Where the last read was.
        hint: ReadHint,
    },
    /// Generated text, fixed at open.
    Text(Vec<u8>),
    /// `retention/policy` opened for writing: applied at close.
    Policy {
        /// The new text.
        buf: Vec<u8>,
        /// Written since the last apply.
        dirty: bool,
        /// A write was refused: nothing of this handle is applied.
        failed: bool,
    },
    /// `retention/gc`: a write runs GC.
    Gc(Vec<u8>),
    /// `remotes/push`: a write (a remote's name, or `all`) pushes now.
    Push(Vec<u8>),
    /// `.ckpt/events`: reads go to the live log, so `tail -f` follows it.
    Events,
    /// A file of a remote snapshot, read through its remote's view.
    Remote {
        /// The remote.
        view: std::sync::Arc<crate::remote::RemoteView>,
        /// Its manifest (none when empty).
        manifest: Option<String>,
        /// Its size.
        size: u64,
    },
}

const PINNED: &[u8] = b"user.ckpt.pinned";

fn te(e: TreeError) -> Errno {
    errno(&e)
}

fn truthy(v: &[u8]) -> Option<bool> {
    match String::from_utf8_lossy(v)
        .trim()
        .to_ascii_lowercase()
        .as_str()
    {
        "1" | "true" | "yes" | "on" | "pinned" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

impl ControlDir {
    /// The text of a generated file.
    pub(super) fn generated(&self, c: Ctl) -> Vec<u8> {
        let value = match c {
            Ctl::Status => self.retention.status_json(),
            Ctl::Stats => self.stats_json(),
            Ctl::RemotesStatus => self.remotes_json(),
            _ => serde_json::Value::Null,
        };
        let mut text = serde_json::to_vec_pretty(&value).unwrap_or_default();
        text.push(b'\n');
        text
    }

    pub(super) fn gc_text(&self) -> Vec<u8> {
        let value = match self.retention.last_gc() {
            Some(r) => r.to_json(),
            None => serde_json::json!({ "last_gc": null, "run": "echo run > .ckpt/retention/gc" }),
        };
        let mut text = serde_json::to_vec_pretty(&value).unwrap_or_default();
        text.push(b'\n');
        text
    }

    fn stats_json(&self) -> serde_json::Value {
        let mut value = match self.tree.stats() {
            Ok(s) => serde_json::to_value(&s).unwrap_or_default(),
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        };
        if let Some(obj) = value.as_object_mut() {
            obj.insert("remotes".into(), self.remotes_json());
        }
        value
    }

    /// Each remote's replication status (empty without replication).
    fn remotes_json(&self) -> serde_json::Value {
        match &self.opts.replication {
            Some(r) => r.status(),
            None => serde_json::json!({}),
        }
    }

    /// What `remotes/push` shows until a push is written to it.
    pub(super) fn push_text(&self) -> Vec<u8> {
        b"write a remote's name (or all) here to push now; see remotes/status\n".to_vec()
    }

    fn add_handle(&self, h: VHandle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().insert(fh, h);
        fh
    }

    /// Opens a virtual file; only the policy and gc files open for writing.
    pub fn open(&self, node: VNode, flags: i32) -> CResult<u64> {
        let acc = flags & libc::O_ACCMODE;
        let write = acc == libc::O_WRONLY || acc == libc::O_RDWR;
        let handle = match node {
            VNode::Ctl(Ctl::Policy) if write => VHandle::Policy {
                buf: if flags & libc::O_TRUNC != 0 {
                    Vec::new()
                } else {
                    self.retention.policy_text().into_bytes()
                },
                dirty: flags & libc::O_TRUNC != 0,
                failed: false,
            },
            VNode::Ctl(Ctl::Gc) => VHandle::Gc(self.gc_text()),
            VNode::Ctl(Ctl::RemotesPush) => VHandle::Push(self.push_text()),
            _ if write => return Err(Errno::EROFS),
            VNode::Ctl(Ctl::Policy) => VHandle::Text(self.retention.policy_text().into_bytes()),
            VNode::Ctl(c @ (Ctl::Status | Ctl::Stats | Ctl::RemotesStatus)) => {
                VHandle::Text(self.generated(c))
            }
            VNode::Ctl(Ctl::Events) => VHandle::Events,
            VNode::RemoteItem(r, s, i) => {
                let (view, manifest, size) = self.remote_content(r, s, i)?;
                VHandle::Remote {
                    view,
                    manifest,
                    size,
                }
            }
            VNode::Ctl(Ctl::Verify) => {
                let report = self.tree.verify(&|_, _, _| {}).map_err(te)?;
                let mut text = serde_json::to_vec_pretty(&report.to_json()).unwrap_or_default();
                text.push(b'\n');
                VHandle::Text(text)
            }
            VNode::Snap(s, i) => {
                let rec = self.tree.inode_in(Scope::Snapshot(s), i).map_err(te)?;
                if rec.kind != FileKind::File {
                    return Err(Errno::EISDIR);
                }
                VHandle::Content {
                    manifest: rec.content,
                    size: rec.size,
                    hint: ReadHint::default(),
                }
            }
            VNode::Version(p, seq) => {
                let v = self.tree.version(p, seq).map_err(te)?;
                VHandle::Content {
                    manifest: v.manifest,
                    size: v.size,
                    hint: ReadHint::default(),
                }
            }
            _ => return Err(Errno::EISDIR),
        };
        Ok(self.add_handle(handle))
    }

    /// True when the handle shows generated text (opened with direct I/O,
    /// so the kernel does not cache it and the size need not be exact).
    pub fn is_generated(&self, fh: u64) -> bool {
        !matches!(
            self.handles.lock().get(&fh),
            Some(VHandle::Content { .. } | VHandle::Remote { .. })
        )
    }

    /// Reads from a virtual file.
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> CResult<Vec<u8>> {
        let mut handles = self.handles.lock();
        let h = handles.get_mut(&fh).ok_or(Errno::EBADF)?;
        let slice = |b: &[u8]| {
            let start = (offset as usize).min(b.len());
            let end = (start + size as usize).min(b.len());
            b[start..end].to_vec()
        };
        match h {
            VHandle::Text(b)
            | VHandle::Gc(b)
            | VHandle::Push(b)
            | VHandle::Policy { buf: b, .. } => Ok(slice(b)),
            VHandle::Events => Ok(self.tree.read_events(offset, size)),
            VHandle::Remote {
                view,
                manifest,
                size: len,
            } => {
                let (view, manifest, len) = (view.clone(), manifest.clone(), *len);
                drop(handles);
                let Some(hash) = manifest.filter(|_| offset < len) else {
                    return Ok(Vec::new());
                };
                let want = (len - offset).min(size as u64) as u32;
                view.read(&hash, offset, want).map_err(|e| {
                    log::error!("read of remote file (manifest {hash}) at {offset}: {e}");
                    Errno::EIO
                })
            }
            VHandle::Content {
                manifest,
                size: len,
                hint,
            } => {
                let (m, l, mut h) = (*manifest, *len, std::mem::take(hint));
                drop(handles);
                let r = self
                    .tree
                    .read_content(m, l, offset, size, &mut h)
                    .map_err(te);
                if let Some(VHandle::Content { hint, .. }) = self.handles.lock().get_mut(&fh) {
                    *hint = h;
                }
                r
            }
        }
    }

    /// Writes to the policy (buffered, applied at close) or the gc file
    /// (runs GC now). A complete policy text that does not parse is
    /// refused at once with EINVAL.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> CResult<u32> {
        let mut handles = self.handles.lock();
        match handles.get_mut(&fh).ok_or(Errno::EBADF)? {
            VHandle::Policy { buf, dirty, failed } => {
                let end = offset as usize + data.len();
                if buf.len() < end {
                    buf.resize(end, b'\n');
                }
                buf[offset as usize..end].copy_from_slice(data);
                *dirty = true;
                // Each complete line must make sense on its own (a typo
                // fails here, visibly to `echo ... >>`); the rules between
                // lines are checked when the file is closed.
                let complete = match buf.iter().rposition(|&b| b == b'\n') {
                    Some(i) => &buf[..=i],
                    None => &buf[..0],
                };
                if let Err(e) =
                    crate::retention::Policy::check_lines(&String::from_utf8_lossy(complete))
                {
                    *failed = true;
                    drop(handles);
                    self.retention.note_refused(&e);
                    return Err(Errno::EINVAL);
                }
                Ok(data.len() as u32)
            }
            VHandle::Gc(_) => {
                drop(handles);
                match self.retention.run_gc() {
                    Ok(report) => {
                        self.invalidate();
                        if let Some(VHandle::Gc(text)) = self.handles.lock().get_mut(&fh) {
                            *text =
                                serde_json::to_vec_pretty(&report.to_json()).unwrap_or_default();
                        }
                        Ok(data.len() as u32)
                    }
                    Err(e) => Err(te(e)),
                }
            }
            VHandle::Push(_) => {
                drop(handles);
                let Some(replication) = &self.opts.replication else {
                    return Err(Errno::EROFS);
                };
                let text = String::from_utf8_lossy(data);
                let name = text.trim();
                let only = (!name.is_empty() && name != "all").then_some(name);
                match replication.push(only) {
                    Ok(report) => {
                        if let Some(VHandle::Push(text)) = self.handles.lock().get_mut(&fh) {
                            *text = serde_json::to_vec_pretty(&report).unwrap_or_default();
                            text.push(b'\n');
                        }
                        Ok(data.len() as u32)
                    }
                    Err(super::PushFailure::NoSuchRemote) => Err(Errno::ENOENT),
                    Err(super::PushFailure::Failed(why)) => {
                        log::error!("push through .ckpt/remotes/push ({name}) failed: {why}");
                        Err(Errno::EIO)
                    }
                }
            }
            _ => Err(Errno::EBADF),
        }
    }

    /// Applies a written policy (close or fsync); EINVAL keeps the old one.
    pub fn flush(&self, fh: u64) -> CResult<()> {
        let mut handles = self.handles.lock();
        if let Some(VHandle::Policy { buf, dirty, failed }) = handles.get_mut(&fh) {
            if *failed {
                return Err(Errno::EINVAL);
            }
            if *dirty {
                *dirty = false;
                let text = String::from_utf8_lossy(buf).into_owned();
                drop(handles);
                self.retention
                    .set_policy_text(&text)
                    .map_err(|_| Errno::EINVAL)?;
                self.invalidate();
            }
        }
        Ok(())
    }

    /// Closes a virtual file.
    pub fn release(&self, fh: u64) -> CResult<()> {
        let r = self.flush(fh);
        self.handles.lock().remove(&fh);
        r
    }

    /// Truncation of the policy file (`> policy`, `truncate -s`); every
    /// other attribute change under `.ckpt/` is refused.
    pub fn setattr(
        &self,
        node: VNode,
        size: Option<u64>,
        only_size: bool,
        fh: Option<u64>,
    ) -> CResult<FileAttr> {
        match (node, size) {
            (VNode::Ctl(Ctl::Policy), Some(len)) if only_size => {
                let mut handles = self.handles.lock();
                match fh.and_then(|f| handles.get_mut(&f)) {
                    Some(VHandle::Policy { buf, dirty, .. }) => {
                        buf.resize(len as usize, b'\n');
                        *dirty = true;
                    }
                    _ => {
                        drop(handles);
                        let mut text = self.retention.policy_text().into_bytes();
                        text.resize(len as usize, b'\n');
                        self.retention
                            .set_policy_text(&String::from_utf8_lossy(&text))
                            .map_err(|_| Errno::EINVAL)?;
                    }
                }
                self.getattr(node)
            }
            (VNode::Ctl(Ctl::Gc | Ctl::RemotesPush), Some(_)) if only_size => self.getattr(node),
            _ => Err(Errno::EROFS),
        }
    }

    /// `mkdir .ckpt/snapshots/NAME`: takes a snapshot.
    pub fn mkdir(&self, parent: VNode, name: &[u8]) -> CResult<FileAttr> {
        if parent != VNode::Ctl(Ctl::Snapshots) {
            return Err(Errno::EROFS);
        }
        let req = SnapshotRequest {
            name: Some(name.to_vec()),
            trigger: "mkdir".into(),
            auto: false,
        };
        let (id, _) = self.tree.take_snapshot(&req).map_err(te)?;
        self.invalidate();
        self.getattr(VNode::Snap(id, Ino::ROOT))
    }

    /// `rmdir .ckpt/snapshots/NAME`: deletes an unpinned snapshot.
    pub fn rmdir(&self, parent: VNode, name: &[u8]) -> CResult<()> {
        match parent {
            VNode::Ctl(Ctl::Snapshots) if name == b"latest" || name == b"best" => {
                Err(Errno::ENOTDIR)
            }
            VNode::Ctl(Ctl::Snapshots) => {
                self.tree.delete_snapshot(name).map_err(te)?;
                self.invalidate();
                Ok(())
            }
            _ => Err(Errno::EROFS),
        }
    }

    /// `mv .ckpt/snapshots/A .ckpt/snapshots/B`.
    pub fn rename(
        &self,
        parent: VNode,
        name: &[u8],
        newparent: VNode,
        newname: &[u8],
    ) -> CResult<()> {
        let snaps = VNode::Ctl(Ctl::Snapshots);
        if parent != snaps || newparent != snaps {
            return Err(Errno::EROFS);
        }
        self.tree.rename_snapshot(name, newname).map_err(te)?;
        self.invalidate();
        Ok(())
    }

    /// The `user.ckpt.*` metadata of a snapshot directory (none for other
    /// nodes).
    /// The names of a snapshot directory's `user.ckpt.*` metadata (none
    /// for other nodes).
    fn snapshot_xattr_names(&self, node: VNode) -> CResult<Vec<String>> {
        let VNode::Snap(s, Ino::ROOT) = node else {
            return Ok(Vec::new());
        };
        self.tree.snapshot(s).map_err(te)?;
        let mut names: Vec<String> = [
            "created",
            "files",
            "logical_bytes",
            "stored_bytes",
            "pinned",
            "trigger",
            "rules",
        ]
        .iter()
        .map(|k| format!("user.ckpt.{k}"))
        .collect();
        if let (Some(name), Some(_)) = (self.retention.metric_name(), self.retention.metric_of(s)) {
            names.push(format!("user.ckpt.metric.{name}"));
        }
        Ok(names)
    }

    /// One `user.ckpt.*` value of a snapshot directory, computed only when
    /// asked for (stored bytes scan the snapshot's manifests).
    fn snapshot_xattr(&self, s: crate::ids::SnapId, key: &str) -> CResult<Option<String>> {
        let rec = self.tree.snapshot(s).map_err(te)?;
        Ok(Some(match key {
            "created" => rfc3339(rec.created),
            "files" => rec.files.to_string(),
            "logical_bytes" => rec.logical_bytes.to_string(),
            "stored_bytes" => self.tree.snapshot_stored_bytes(s).map_err(te)?.to_string(),
            "pinned" => (rec.pinned as u8).to_string(),
            "trigger" => String::from_utf8_lossy(&rec.trigger).into_owned(),
            // What retention decided (also reachable through the links in
            // retention/kept and expiring: Linux refuses user.* xattrs on
            // the links themselves).
            "rules" => match self.plan_view().kept.get(&s) {
                Some(r) => r.join(","),
                None => "expiring".into(),
            },
            _ => match (key.strip_prefix("metric."), self.retention.metric_name()) {
                (Some(asked), Some(name)) if asked == name => match self.retention.metric_of(s) {
                    Some(v) => v.to_string(),
                    None => return Ok(None),
                },
                _ => return Ok(None),
            },
        }))
    }

    /// Reads an xattr: a snapshot's `user.ckpt.*` metadata, or what the
    /// snapshotted file had.
    pub fn getxattr(&self, node: VNode, name: &[u8]) -> CResult<Vec<u8>> {
        if let (VNode::Snap(s, Ino::ROOT), Some(key)) = (node, name.strip_prefix(b"user.ckpt.")) {
            if let Some(v) = self.snapshot_xattr(s, &String::from_utf8_lossy(key))? {
                return Ok(v.into_bytes());
            }
        }
        match node {
            VNode::Snap(s, i) => self
                .tree
                .getxattr_in(Scope::Snapshot(s), i, name)
                .map_err(te),
            _ => Err(Errno::ENODATA),
        }
    }

    /// Lists xattrs.
    pub fn listxattr(&self, node: VNode) -> CResult<Vec<Vec<u8>>> {
        let mut names: Vec<Vec<u8>> = self
            .snapshot_xattr_names(node)?
            .into_iter()
            .map(String::into_bytes)
            .collect();
        if let VNode::Snap(s, i) = node {
            names.extend(self.tree.listxattr_in(Scope::Snapshot(s), i).map_err(te)?);
        }
        Ok(names)
    }

    /// `setfattr -n user.ckpt.pinned -v 1` pins a snapshot (0 unpins).
    pub fn setxattr(&self, node: VNode, name: &[u8], value: &[u8]) -> CResult<()> {
        match node {
            VNode::Snap(s, Ino::ROOT) if name == PINNED => {
                let pinned = truthy(value).ok_or(Errno::EINVAL)?;
                self.tree.set_pinned(s, pinned).map_err(te)?;
                self.invalidate();
                Ok(())
            }
            VNode::Snap(..) => Err(Errno::EPERM),
            _ => Err(Errno::EROFS),
        }
    }

    /// `setfattr -x user.ckpt.pinned` unpins a snapshot.
    pub fn removexattr(&self, node: VNode, name: &[u8]) -> CResult<()> {
        self.setxattr(node, name, b"0")
    }

    /// Resolves a number that must be a virtual inode.
    pub fn node(&self, ino: fuser::INodeNo) -> CResult<VNode> {
        node_of(ino)
    }
}
