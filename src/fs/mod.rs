//! The FUSE edge: `fuser::Filesystem` over the tree. The only module that
//! names `fuser`; it never touches the store.
//!
//! Requests run on several fuser threads (`n_threads`), so a commit waiting
//! for its chunks does not stall other files; hashing, compression and
//! RocksDB writes run in the tree's chunk pipeline. Errors become errno
//! values in one place (`errno.rs`).

mod attr;
mod errno;

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BsdFileFlags, Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow, WriteFlags,
};

use crate::ids::Ino;
use crate::tree::{FileKind, OpenMode, RenameMode, SetAttr, Tree, TreeError};
pub use attr::kind_of_mode;
use attr::{file_attr, file_type, time_of};

/// How long the kernel may cache names and attributes. Every change goes
/// through this mount, so the kernel's view cannot go stale behind it.
const TTL: Duration = Duration::from_secs(1);
/// Largest write request we accept (the kernel's 256-page limit).
pub const MAX_WRITE: u32 = 1 << 20;

/// The filesystem served to the kernel.
pub struct CkptFs {
    tree: Arc<Tree>,
}

impl CkptFs {
    /// Serves `tree`.
    pub fn new(tree: Arc<Tree>) -> Self {
        CkptFs { tree }
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
            match self.tree.lookup(ino(parent), name.as_bytes()) {
                Ok((i, rec)) => reply.entry(&TTL, &file_attr(i, &rec), Generation(0)),
                // A miss is the normal answer to "does it exist?": no log line.
                Err(TreeError::NotFound) => reply.error(Errno::ENOENT),
                Err(e) => reply.error(self.fail("lookup", ino(parent), &e)),
            }
        });
    }

    fn getattr(&self, _req: &Request, i: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        guarded("getattr", || match self.tree.getattr(ino(i)) {
            Ok(rec) => reply.attr(&TTL, &file_attr(ino(i), &rec)),
            Err(e) => reply.error(self.fail("getattr", ino(i), &e)),
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
        guarded("readlink", || match self.tree.readlink(ino(i)) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(self.fail("readlink", ino(i), &e)),
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
            match self.tree.unlink(ino(parent), name.as_bytes()) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(self.fail("unlink", ino(parent), &e)),
            }
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guarded("rmdir", || {
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
            let r = self.tree.link(ino(i), ino(newparent), newname.as_bytes());
            self.entry("link", newparent, r, reply);
        });
    }

    fn open(&self, _req: &Request, i: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        guarded("open", || {
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
        guarded("read", || match self.tree.read(fh.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(self.fail("read", ino(i), &e)),
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
        guarded("write", || match self.tree.write(fh.0, offset, data) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(self.fail("write", ino(i), &e)),
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
        guarded("flush", || match self.tree.flush(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail("close", ino(i), &e)),
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
        guarded("release", || match self.tree.release(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail("release", ino(i), &e)),
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
        guarded("fsync", || match self.tree.fsync(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail("fsync", ino(i), &e)),
        });
    }

    fn opendir(&self, _req: &Request, i: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        guarded("opendir", || match self.tree.getattr(ino(i)) {
            Ok(rec) if rec.kind == FileKind::Dir => {
                reply.opened(FileHandle(0), FopenFlags::empty())
            }
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(self.fail("opendir", ino(i), &e)),
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
        guarded("fsyncdir", || match self.tree.sync() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail("fsyncdir", ino(i), &e)),
        });
    }

    fn statfs(&self, _req: &Request, i: INodeNo, reply: ReplyStatfs) {
        guarded("statfs", || match self.tree.disk_space() {
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
            match self.tree.setxattr(ino(i), name.as_bytes(), value, flags) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(self.fail("setxattr", ino(i), &e)),
            }
        });
    }

    fn getxattr(&self, _req: &Request, i: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        guarded("getxattr", || {
            match self.tree.getxattr(ino(i), name.as_bytes()) {
                Ok(value) => reply_sized(reply, &value, size),
                Err(TreeError::NoAttr) => reply.error(Errno::ENODATA),
                Err(e) => reply.error(self.fail("getxattr", ino(i), &e)),
            }
        });
    }

    fn listxattr(&self, _req: &Request, i: INodeNo, size: u32, reply: ReplyXattr) {
        guarded("listxattr", || match self.tree.listxattr(ino(i)) {
            Ok(names) => {
                let mut list = Vec::new();
                for n in names {
                    list.extend_from_slice(&n);
                    list.push(0);
                }
                reply_sized(reply, &list, size);
            }
            Err(e) => reply.error(self.fail("listxattr", ino(i), &e)),
        });
    }

    fn removexattr(&self, _req: &Request, i: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guarded("removexattr", || {
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
