//! The FUSE edge: `fuser::Filesystem` over the tree. The only module that
//! names `fuser`; it never touches the store.
//!
//! Requests run on several fuser threads (`n_threads`), so a commit waiting
//! for its chunks does not stall other files; hashing, compression and
//! RocksDB writes run in the tree's chunk pipeline. Errors become errno
//! values in one place (`errno.rs`).

mod attr;
mod ckpt;
mod ckpt_io;
mod errno;
mod route;
mod vino;

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BsdFileFlags, Errno, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow, WriteFlags,
};

use crate::ids::Ino;
use crate::retention::Retention;
use crate::tree::{FileKind, OpenMode, RenameMode, SetAttr, Tree, TreeError};
pub use attr::kind_of_mode;
pub use ckpt::{version_name, ControlOptions};
use ckpt::ControlDir;
use route::{is_ctl, is_ctl_fh, reply_attr, reply_data, reply_empty, reply_entry};
use attr::{file_attr, file_type, time_of};

/// How long the kernel may cache names and attributes. Every change goes
/// through this mount, so the kernel's view cannot go stale behind it.
const TTL: Duration = Duration::from_secs(1);
/// Largest write request we accept (the kernel's 256-page limit).
pub const MAX_WRITE: u32 = 1 << 20;

/// The filesystem served to the kernel: the live tree, and the `.ckpt/`
/// control tree at its root.
pub struct CkptFs {
    tree: Arc<Tree>,
    ctl: ControlDir,
}

impl CkptFs {
    /// Serves `tree` with its retention service and control directory.
    pub fn new(tree: Arc<Tree>, retention: Arc<Retention>, ctl: ControlOptions) -> Self {
        if let Ok(Some(_)) = tree.lookup(Ino::ROOT, &ctl.name).map(Some) {
            log::warn!(
                "a live entry named {} at the root is hidden by the control directory; rename it or use --control-dir",
                String::from_utf8_lossy(&ctl.name)
            );
        }
        CkptFs {
            ctl: ControlDir::new(tree.clone(), retention, ctl),
            tree,
        }
    }

    /// The root's listing with the control directory shown (offset 3,
    /// between `..` and the first entry, whose cookie is at least 16).
    fn readdir_root_with_ctl(&self, offset: u64, mut reply: ReplyDirectory) {
        const CTL_OFFSET: u64 = 3;
        let ctl_ino = self.ctl.root_ino();
        let name = self.ctl.name().to_vec();
        let mut pending = offset < CTL_OFFSET;
        let mut full = false;
        let r = self.tree.readdir(Ino::ROOT, offset, |item| {
            if pending && item.offset > CTL_OFFSET {
                pending = false;
                if reply.add(ctl_ino, CTL_OFFSET, fuser::FileType::Directory, OsStr::from_bytes(&name)) {
                    full = true;
                    return false;
                }
            }
            full = reply.add(INodeNo(item.ino.0), item.offset, file_type(item.kind), OsStr::from_bytes(item.name));
            !full
        });
        if r.is_ok() && pending && !full {
            let _ = reply.add(ctl_ino, CTL_OFFSET, fuser::FileType::Directory, OsStr::from_bytes(&name));
        }
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail("readdir", Ino::ROOT, &e)),
        }
    }

    /// Maps an error to errno, logging the ones the caller cannot explain.
    fn fail(&self, op: &str, ino: Ino, e: &TreeError) -> Errno {
        let code = errno::errno(e);
        if code == Errno::EIO || code == Errno::ENOSPC {
            log::error!("{op} {}: {e}", self.tree.path_of(ino));
        } else {
            log::debug!("{op} {}: {e}", self.tree.path_of(ino));
        }
        code
    }

    fn entry(
        &self,
        op: &str,
        parent: INodeNo,
        r: crate::tree::Result<(Ino, crate::tree::InodeRecord)>,
        reply: ReplyEntry,
    ) {
        match r {
            Ok((ino, rec)) => reply.entry(&TTL, &file_attr(ino, &rec), Generation(0)),
            Err(e) => reply.error(self.fail(op, ino(parent), &e)),
        }
    }
}

fn ino(i: INodeNo) -> Ino {
    Ino(i.0)
}

fn open_mode(flags: i32) -> OpenMode {
    let acc = flags & libc::O_ACCMODE;
    OpenMode {
        write: acc == libc::O_WRONLY || acc == libc::O_RDWR,
        append: flags & libc::O_APPEND != 0,
        truncate: flags & libc::O_TRUNC != 0,
    }
}

impl Filesystem for CkptFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let _ = config.set_max_write(MAX_WRITE);
        let _ = config.set_max_readahead(MAX_WRITE);
        let _ = config
            .add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS | InitFlags::FUSE_ATOMIC_O_TRUNC);
        Ok(())
    }

    fn destroy(&mut self) {
        if let Err(e) = self.tree.commit_all() {
            log::error!("committing open files at unmount failed: {e}");
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        guarded("lookup", || {
            if let Some(r) = self.ctl_lookup(parent, name.as_bytes()) {
                return reply_entry(reply, r);
            }
            match self.tree.lookup(ino(parent), name.as_bytes()) {
                Ok((i, rec)) => reply.entry(&TTL, &file_attr(i, &rec), Generation(0)),
                // A miss is the normal answer to "does it exist?": no log line.
                Err(TreeError::NotFound) => reply.error(Errno::ENOENT),
                Err(e) => reply.error(self.fail("lookup", ino(parent), &e)),
            }
        });
    }

    fn getattr(&self, _req: &Request, i: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        guarded("getattr", || {
            if is_ctl(i) {
                return reply_attr(reply, self.on_ctl(i, |n| self.ctl.getattr(n)));
            }
        match self.tree.getattr(ino(i)) {
            Ok(rec) => reply.attr(&TTL, &file_attr(ino(i), &rec)),
            Err(e) => reply.error(self.fail("getattr", ino(i), &e)),
        }
        });
    }

    fn setattr(
        &self,
        _req: &Request,
        i: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        guarded("setattr", || {
            if is_ctl(i) {
                let only_size = mode.is_none() && uid.is_none() && gid.is_none() && atime.is_none() && mtime.is_none();
                let fh = fh.map(|f| f.0);
                return reply_attr(reply, self.on_ctl(i, |n| self.ctl.setattr(n, size, only_size, fh)));
            }
            let change = SetAttr {
                mode,
                uid,
                gid,
                size,
                atime: atime.map(time_of),
                mtime: mtime.map(time_of),
            };
            match self.tree.setattr(ino(i), change, fh.map(|f| f.0)) {
                Ok(rec) => reply.attr(&TTL, &file_attr(ino(i), &rec)),
                Err(e) => reply.error(self.fail("setattr", ino(i), &e)),
            }
        });
    }

    fn readlink(&self, _req: &Request, i: INodeNo, reply: ReplyData) {
        guarded("readlink", || {
            if is_ctl(i) {
                return reply_data(reply, self.on_ctl(i, |n| self.ctl.readlink(n)));
            }
        match self.tree.readlink(ino(i)) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(self.fail("readlink", ino(i), &e)),
        }
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        guarded("mknod", || {
            if let Some(e) = self.refuse_create(parent, name.as_bytes()) {
                return reply.error(e);
            }
            let Some(kind) = kind_of_mode(mode) else {
                return reply.error(Errno::EINVAL);
            };
            if kind == FileKind::Dir || kind == FileKind::Symlink {
                return reply.error(Errno::EINVAL);
            }
            let perm = (mode & !umask & 0o7777) as u16;
            let r = self.tree.new_node(
                ino(parent),
                name.as_bytes(),
                kind,
                perm,
                rdev,
                req.uid(),
                req.gid(),
                b"",
            );
            self.entry("mknod", parent, r, reply);
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        guarded("mkdir", || {
            if is_ctl(parent) {
                return reply_entry(reply, self.on_ctl(parent, |n| self.ctl.mkdir(n, name.as_bytes())));
            }
            if self.is_ctl_name(parent, name.as_bytes()) {
                return reply.error(Errno::EEXIST);
            }
            let perm = (mode & !umask & 0o7777) as u16;
            let r = self.tree.new_node(
                ino(parent),
                name.as_bytes(),
                FileKind::Dir,
                perm,
                0,
                req.uid(),
                req.gid(),
                b"",
            );
            self.entry("mkdir", parent, r, reply);
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guarded("unlink", || {
            if is_ctl(parent) {
                return reply.error(Errno::EROFS);
            }
            if self.is_ctl_name(parent, name.as_bytes()) {
                return reply.error(Errno::EISDIR);
            }
            match self.tree.unlink(ino(parent), name.as_bytes()) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(self.fail("unlink", ino(parent), &e)),
            }
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guarded("rmdir", || {
            if is_ctl(parent) {
                return reply_empty(reply, self.on_ctl(parent, |n| self.ctl.rmdir(n, name.as_bytes())));
            }
            if self.is_ctl_name(parent, name.as_bytes()) {
                return reply.error(Errno::EBUSY);
            }
            match self.tree.rmdir(ino(parent), name.as_bytes()) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(self.fail("rmdir", ino(parent), &e)),
            }
        });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        guarded("symlink", || {
            if let Some(e) = self.refuse_create(parent, link_name.as_bytes()) {
                return reply.error(e);
            }
            let target = target.as_os_str().as_bytes();
            let r = self.tree.new_node(
                ino(parent),
                link_name.as_bytes(),
                FileKind::Symlink,
                0o777,
                0,
                req.uid(),
                req.gid(),
                target,
            );
            self.entry("symlink", parent, r, reply);
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        guarded("rename", || {
            match (is_ctl(parent), is_ctl(newparent)) {
                (true, true) => {
                    let r = self.on_ctl(parent, |a| {
                        let b = self.ctl.node(newparent)?;
                        self.ctl.rename(a, name.as_bytes(), b, newname.as_bytes())
                    });
                    return reply_empty(reply, r);
                }
                (true, false) | (false, true) => return reply.error(Errno::EXDEV),
                (false, false) => {}
            }
            if self.is_ctl_name(parent, name.as_bytes()) || self.is_ctl_name(newparent, newname.as_bytes()) {
                return reply.error(Errno::EBUSY);
            }
            let mode = if flags.contains(RenameFlags::RENAME_EXCHANGE) {
                RenameMode::Exchange
            } else if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                RenameMode::NoReplace
            } else if flags.is_empty() {
                RenameMode::Replace
            } else {
                return reply.error(Errno::EINVAL);
            };
            match self.tree.rename(
                ino(parent),
                name.as_bytes(),
                ino(newparent),
                newname.as_bytes(),
                mode,
            ) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(self.fail("rename", ino(parent), &e)),
            }
        });
    }

    fn link(
        &self,
        _req: &Request,
        i: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        guarded("link", || {
            if is_ctl(newparent) {
                return reply.error(Errno::EROFS);
            }
            if is_ctl(i) {
                return reply.error(Errno::EXDEV);
            }
            if self.is_ctl_name(newparent, newname.as_bytes()) {
                return reply.error(Errno::EEXIST);
            }
            let r = self.tree.link(ino(i), ino(newparent), newname.as_bytes());
            self.entry("link", newparent, r, reply);
        });
    }

    fn open(&self, _req: &Request, i: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        guarded("open", || {
            if is_ctl(i) {
                return match self.on_ctl(i, |n| self.ctl.open(n, flags.0)) {
                    // Generated text bypasses the page cache; snapshot and
                    // version files never change, so their pages may stay.
                    Ok(fh) if self.ctl.is_generated(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
                    Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
                    Err(e) => reply.error(e),
                };
            }
            match self.tree.open(ino(i), open_mode(flags.0)) {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply.error(self.fail("open", ino(i), &e)),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        i: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        guarded("read", || {
            if is_ctl_fh(fh.0) {
                return reply_data(reply, self.ctl.read(fh.0, offset, size));
            }
        match self.tree.read(fh.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(self.fail("read", ino(i), &e)),
        }
        });
    }

    fn write(
        &self,
        _req: &Request,
        i: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        guarded("write", || {
            if is_ctl_fh(fh.0) {
                return match self.ctl.write(fh.0, offset, data) {
                    Ok(n) => reply.written(n),
                    Err(e) => reply.error(e),
                };
            }
        match self.tree.write(fh.0, offset, data) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(self.fail("write", ino(i), &e)),
        }
        });
    }

    fn flush(
        &self,
        _req: &Request,
        i: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        guarded("flush", || {
            if is_ctl_fh(fh.0) {
                return reply_empty(reply, self.ctl.flush(fh.0));
            }
        match self.tree.flush(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail("close", ino(i), &e)),
        }
        });
    }

    fn release(
        &self,
        _req: &Request,
        i: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        guarded("release", || {
            if is_ctl_fh(fh.0) {
                return reply_empty(reply, self.ctl.release(fh.0));
            }
        match self.tree.release(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail("release", ino(i), &e)),
        }
        });
    }

    fn fsync(
        &self,
        _req: &Request,
        i: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        guarded("fsync", || {
            if is_ctl_fh(fh.0) {
                return reply_empty(reply, self.ctl.flush(fh.0));
            }
        match self.tree.fsync(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail("fsync", ino(i), &e)),
        }
        });
    }

    fn opendir(&self, _req: &Request, i: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        guarded("opendir", || {
            if is_ctl(i) {
                return match self.on_ctl(i, |n| self.ctl.getattr(n)) {
                    Ok(a) if a.kind == FileType::Directory => reply.opened(FileHandle(0), FopenFlags::empty()),
                    Ok(_) => reply.error(Errno::ENOTDIR),
                    Err(e) => reply.error(e),
                };
            }
        match self.tree.getattr(ino(i)) {
            Ok(rec) if rec.kind == FileKind::Dir => {
                reply.opened(FileHandle(0), FopenFlags::empty())
            }
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(self.fail("opendir", ino(i), &e)),
        }
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        i: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        guarded("readdir", || {
            if is_ctl(i) {
                let r = self.on_ctl(i, |n| self.ctl.readdir(n, offset, |ino, off, kind, name| reply.add(ino, off, kind, OsStr::from_bytes(name))));
                return match r {
                    Ok(()) => reply.ok(),
                    Err(e) => reply.error(e),
                };
            }
            if i == INodeNo::ROOT && self.ctl.shown() {
                return self.readdir_root_with_ctl(offset, reply);
            }
            let r = self.tree.readdir(ino(i), offset, |item| {
                !reply.add(
                    INodeNo(item.ino.0),
                    item.offset,
                    file_type(item.kind),
                    OsStr::from_bytes(item.name),
                )
            });
            match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(self.fail("readdir", ino(i), &e)),
            }
        });
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        i: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        guarded("fsyncdir", || {
        match self.tree.sync() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail("fsyncdir", ino(i), &e)),
        }
        });
    }

    fn statfs(&self, _req: &Request, i: INodeNo, reply: ReplyStatfs) {
        guarded("statfs", || {
        match self.tree.disk_space() {
            Ok(s) => reply.statfs(
                s.blocks,
                s.free,
                s.available,
                s.files,
                s.files_free,
                s.block_size as u32,
                crate::tree::NAME_MAX as u32,
                s.block_size as u32,
            ),
            Err(e) => reply.error(self.fail("statfs", ino(i), &e)),
        }
        });
    }

    fn setxattr(
        &self,
        _req: &Request,
        i: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        guarded("setxattr", || {
            if is_ctl(i) {
                return reply_empty(reply, self.on_ctl(i, |n| self.ctl.setxattr(n, name.as_bytes(), value)));
            }
            match self.tree.setxattr(ino(i), name.as_bytes(), value, flags) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(self.fail("setxattr", ino(i), &e)),
            }
        });
    }

    fn getxattr(&self, _req: &Request, i: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        guarded("getxattr", || {
            if is_ctl(i) {
                return match self.on_ctl(i, |n| self.ctl.getxattr(n, name.as_bytes())) {
                    Ok(v) => reply_sized(reply, &v, size),
                    Err(e) => reply.error(e),
                };
            }
            match self.tree.getxattr(ino(i), name.as_bytes()) {
                Ok(value) => reply_sized(reply, &value, size),
                Err(TreeError::NoAttr) => reply.error(Errno::ENODATA),
                Err(e) => reply.error(self.fail("getxattr", ino(i), &e)),
            }
        });
    }

    fn listxattr(&self, _req: &Request, i: INodeNo, size: u32, reply: ReplyXattr) {
        guarded("listxattr", || {
            if is_ctl(i) {
                return match self.on_ctl(i, |n| self.ctl.listxattr(n)) {
                    Ok(names) => reply_sized(reply, &names.iter().flat_map(|n| n.iter().copied().chain([0])).collect::<Vec<u8>>(), size),
                    Err(e) => reply.error(e),
                };
            }
        match self.tree.listxattr(ino(i)) {
            Ok(names) => {
                let mut list = Vec::new();
                for n in names {
                    list.extend_from_slice(&n);
                    list.push(0);
                }
                reply_sized(reply, &list, size);
            }
            Err(e) => reply.error(self.fail("listxattr", ino(i), &e)),
        }
        });
    }

    fn removexattr(&self, _req: &Request, i: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guarded("removexattr", || {
            if is_ctl(i) {
                return reply_empty(reply, self.on_ctl(i, |n| self.ctl.removexattr(n, name.as_bytes())));
            }
            match self.tree.removexattr(ino(i), name.as_bytes()) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(self.fail("removexattr", ino(i), &e)),
            }
        });
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        guarded("access", || {
            // default_permissions: the kernel checks modes itself.
            reply.ok();
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        guarded("create", || {
            if let Some(e) = self.refuse_create(parent, name.as_bytes()) {
                return reply.error(e);
            }
            let perm = (mode & !umask & 0o7777) as u16;
            match self.tree.create(
                ino(parent),
                name.as_bytes(),
                perm,
                req.uid(),
                req.gid(),
                open_mode(flags),
            ) {
                Ok((i, rec, fh)) => reply.created(
                    &TTL,
                    &file_attr(i, &rec),
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::empty(),
                ),
                Err(e) => reply.error(self.fail("create", ino(parent), &e)),
            }
        });
    }

    fn fallocate(
        &self,
        _req: &Request,
        i: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        guarded("fallocate", || {
            if is_ctl(i) {
                return reply.error(Errno::EROFS);
            }
            if mode != 0 {
                return reply.error(Errno::EOPNOTSUPP);
            }
            let r = self.tree.getattr(ino(i)).and_then(|rec| {
                let end = offset.saturating_add(length);
                if end > rec.size {
                    let grow = SetAttr {
                        size: Some(end),
                        ..SetAttr::default()
                    };
                    self.tree.setattr(ino(i), grow, Some(fh.0)).map(|_| ())
                } else {
                    Ok(())
                }
            });
            match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(self.fail("fallocate", ino(i), &e)),
            }
        });
    }
}

/// Runs a request handler; a panic (a bug) becomes EIO for that request
/// instead of killing the fuser thread and with it the whole mount. The
/// unanswered reply is dropped during unwinding, and fuser answers EIO.
/// Locks are parking_lot's, which do not poison.
fn guarded(op: &str, handler: impl FnOnce()) {
    if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(handler)) {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        log::error!("{op}: internal error, answered EIO: {what}");
    }
}

fn reply_sized(reply: ReplyXattr, value: &[u8], size: u32) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}
