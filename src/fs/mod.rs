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
mod ckpt_remote;
mod errno;
mod live;
mod process;
mod replication;
mod route;
mod syncer;
mod vino;
mod xattrs;

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BsdFileFlags, Errno, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::ids::Ino;
use crate::retention::Retention;
use crate::tree::{FileKind, OpenMode, RenameMode, SetAttr, Tree, TreeError};
pub use attr::kind_of_mode;
use attr::{file_attr, file_type, time_of};
use ckpt::ControlDir;
pub use ckpt::{version_name, ControlOptions};
pub use replication::{PushFailure, Replication};
use route::{is_ctl, is_ctl_fh, reply_attr, reply_data, reply_empty, reply_entry};

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
    /// Files bypass the page cache (the kernel granted
    /// FUSE_DIRECT_IO_ALLOW_MMAP, so mmap still works).
    direct_io: bool,
    /// Where fsyncs wait, so that FUSE threads do not.
    syncer: syncer::Syncer,
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
            direct_io: false,
            syncer: syncer::Syncer::new(),
        }
    }

    /// How live files are opened: past the page cache when mmap still
    /// works on such files (see `init`).
    fn file_open_flags(&self) -> FopenFlags {
        if self.direct_io {
            FopenFlags::FOPEN_DIRECT_IO
        } else {
            FopenFlags::empty()
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
                if reply.add(
                    ctl_ino,
                    CTL_OFFSET,
                    fuser::FileType::Directory,
                    OsStr::from_bytes(&name),
                ) {
                    full = true;
                    return false;
                }
            }
            full = reply.add(
                INodeNo(item.ino.0),
                item.offset,
                file_type(item.kind),
                OsStr::from_bytes(item.name),
            );
            !full
        });
        if r.is_ok() && pending && !full {
            let _ = reply.add(
                ctl_ino,
                CTL_OFFSET,
                fuser::FileType::Directory,
                OsStr::from_bytes(&name),
            );
        }
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail("readdir", Ino::ROOT, &e)),
        }
    }

    /// Answers an empty reply from a tree result.
    fn done(&self, reply: ReplyEmpty, op: &str, ino: Ino, r: crate::tree::Result<()>) {
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail(op, ino, &e)),
        }
    }

    /// Maps an error to errno, logging the ones the caller cannot explain.
    fn fail(&self, op: &str, ino: Ino, e: &TreeError) -> Errno {
        fail(&self.tree, op, ino, e)
    }

    fn entry(
        &self,
        op: &str,
        parent: INodeNo,
        r: crate::tree::Result<(Ino, crate::tree::InodeRecord)>,
        reply: ReplyEntry,
    ) {
        match r {
            Ok((ino, rec)) => {
                self.tree.note_lookup(ino);
                reply.entry(&TTL, &file_attr(ino, &rec), Generation(0))
            }
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
        // Files skip the page cache: one copy less per byte read or
        // written (saves 30-40% faster, reads without page-cache
        // readahead: ckptfs prefetches itself). Only when mmap keeps
        // working on such files.
        self.direct_io = config
            .add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP)
            .is_ok();
        log::info!(
            "file reads and writes {} the page cache",
            if self.direct_io { "bypass" } else { "use" }
        );
        Ok(())
    }

    fn destroy(&mut self) {
        if let Err(e) = self.tree.commit_all() {
            log::error!("committing open files at unmount failed: {e}");
        }
    }

    fn forget(&self, _req: &Request, i: INodeNo, nlookup: u64) {
        // The control tree's inode numbers are computed: nothing to drop.
        if !is_ctl(i) {
            self.tree.forget(ino(i), nlookup);
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        guarded("lookup", || self.op_lookup(_req, parent, name, reply));
    }

    fn getattr(&self, _req: &Request, i: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        guarded("getattr", || self.op_getattr(_req, i, _fh, reply));
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
            self.op_setattr(
                _req, i, mode, uid, gid, size, atime, mtime, _ctime, fh, _crtime, _chgtime,
                _bkuptime, _flags, reply,
            )
        });
    }

    fn readlink(&self, _req: &Request, i: INodeNo, reply: ReplyData) {
        guarded("readlink", || self.op_readlink(_req, i, reply));
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
            self.op_mknod(req, parent, name, mode, umask, rdev, reply)
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
            self.op_mkdir(req, parent, name, mode, umask, reply)
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guarded("unlink", || self.op_unlink(_req, parent, name, reply));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guarded("rmdir", || self.op_rmdir(_req, parent, name, reply));
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
            self.op_symlink(req, parent, link_name, target, reply)
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
            self.op_rename(_req, parent, name, newparent, newname, flags, reply)
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
        guarded("link", || self.op_link(_req, i, newparent, newname, reply));
    }

    fn open(&self, _req: &Request, i: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        guarded("open", || self.op_open(_req, i, flags, reply));
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
            self.op_read(_req, i, fh, offset, size, _flags, _lock_owner, reply)
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
            self.op_write(
                _req,
                i,
                fh,
                offset,
                data,
                _write_flags,
                _flags,
                _lock_owner,
                reply,
            )
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
        guarded("flush", || self.op_flush(_req, i, fh, _lock_owner, reply));
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
            self.op_release(_req, i, fh, _flags, _lock_owner, _flush, reply)
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
        guarded("fsync", || self.op_fsync(_req, i, fh, _datasync, reply));
    }

    fn opendir(&self, _req: &Request, i: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        guarded("opendir", || self.op_opendir(_req, i, _flags, reply));
    }

    fn readdir(
        &self,
        _req: &Request,
        i: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        guarded("readdir", || self.op_readdir(_req, i, _fh, offset, reply));
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
            self.op_fsyncdir(_req, i, _fh, _datasync, reply)
        });
    }

    fn statfs(&self, _req: &Request, i: INodeNo, reply: ReplyStatfs) {
        guarded("statfs", || self.op_statfs(_req, i, reply));
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
            self.op_setxattr(_req, i, name, value, flags, _position, reply)
        });
    }

    fn getxattr(&self, _req: &Request, i: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        guarded("getxattr", || self.op_getxattr(_req, i, name, size, reply));
    }

    fn listxattr(&self, _req: &Request, i: INodeNo, size: u32, reply: ReplyXattr) {
        guarded("listxattr", || self.op_listxattr(_req, i, size, reply));
    }

    fn removexattr(&self, _req: &Request, i: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guarded("removexattr", || self.op_removexattr(_req, i, name, reply));
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        guarded("access", || self.op_access(_req, _ino, _mask, reply));
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
            self.op_create(req, parent, name, mode, umask, flags, reply)
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
            self.op_fallocate(_req, i, fh, offset, length, mode, reply)
        });
    }
}

/// Maps an error to errno, logging the ones the caller cannot explain,
/// with the path they concern.
fn fail(tree: &Tree, op: &str, ino: Ino, e: &TreeError) -> Errno {
    let code = errno::errno(e);
    if code == Errno::EIO || code == Errno::ENOSPC {
        log::error!("{op} {}: {e}", tree.path_of(ino));
    } else {
        log::debug!("{op} {}: {e}", tree.path_of(ino));
    }
    code
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
