//! Request handlers: each FUSE operation routed to the control tree or
//! applied to the live tree. `mod.rs` holds only the `Filesystem` impl,
//! which runs these under `guarded`.

// The handlers take exactly the arguments of fuser's `Filesystem` methods.
#![allow(clippy::too_many_arguments)]

use super::*;

impl CkptFs {
    pub(super) fn op_lookup(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        reply: ReplyEntry,
    ) {
        if let Some(r) = self.ctl_lookup(parent, name.as_bytes()) {
            return reply_entry(reply, r);
        }
        match self.tree.lookup(ino(parent), name.as_bytes()) {
            Ok((i, rec)) => {
                self.tree.note_lookup(i);
                reply.entry(&TTL, &file_attr(i, &rec), Generation(0))
            }
            // A miss is the normal answer to "does it exist?": no log line.
            Err(TreeError::NotFound) => reply.error(Errno::ENOENT),
            Err(e) => reply.error(self.fail("lookup", ino(parent), &e)),
        }
    }

    pub(super) fn op_getattr(
        &self,
        _req: &Request,
        i: INodeNo,
        _fh: Option<FileHandle>,
        reply: ReplyAttr,
    ) {
        if is_ctl(i) {
            return reply_attr(reply, self.on_ctl(i, |n| self.ctl.getattr(n)));
        }
        match self.tree.getattr(ino(i)) {
            Ok(rec) => reply.attr(&TTL, &file_attr(ino(i), &rec)),
            Err(e) => reply.error(self.fail("getattr", ino(i), &e)),
        }
    }

    pub(super) fn op_setattr(
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
        if is_ctl(i) {
            let only_size = mode.is_none()
                && uid.is_none()
                && gid.is_none()
                && atime.is_none()
                && mtime.is_none();
            let fh = fh.map(|f| f.0);
            return reply_attr(
                reply,
                self.on_ctl(i, |n| self.ctl.setattr(n, size, only_size, fh)),
            );
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
    }

    pub(super) fn op_readlink(&self, _req: &Request, i: INodeNo, reply: ReplyData) {
        if is_ctl(i) {
            return reply_data(reply, self.on_ctl(i, |n| self.ctl.readlink(n)));
        }
        match self.tree.readlink(ino(i)) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(self.fail("readlink", ino(i), &e)),
        }
    }

    pub(super) fn op_mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
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
    }

    pub(super) fn op_mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        if is_ctl(parent) {
            return reply_entry(
                reply,
                self.on_ctl(parent, |n| self.ctl.mkdir(n, name.as_bytes())),
            );
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
    }

    pub(super) fn op_unlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        reply: ReplyEmpty,
    ) {
        if is_ctl(parent) {
            return reply.error(Errno::EROFS);
        }
        if self.is_ctl_name(parent, name.as_bytes()) {
            return reply.error(Errno::EISDIR);
        }
        self.done(
            reply,
            "unlink",
            ino(parent),
            self.tree.unlink(ino(parent), name.as_bytes()),
        )
    }

    pub(super) fn op_rmdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        reply: ReplyEmpty,
    ) {
        if is_ctl(parent) {
            return reply_empty(
                reply,
                self.on_ctl(parent, |n| self.ctl.rmdir(n, name.as_bytes())),
            );
        }
        if self.is_ctl_name(parent, name.as_bytes()) {
            return reply.error(Errno::EBUSY);
        }
        self.done(
            reply,
            "rmdir",
            ino(parent),
            self.tree.rmdir(ino(parent), name.as_bytes()),
        )
    }

    pub(super) fn op_symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
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
    }

    pub(super) fn op_rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
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
        if self.is_ctl_name(parent, name.as_bytes())
            || self.is_ctl_name(newparent, newname.as_bytes())
        {
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
        self.done(
            reply,
            "rename",
            ino(parent),
            self.tree.rename(
                ino(parent),
                name.as_bytes(),
                ino(newparent),
                newname.as_bytes(),
                mode,
            ),
        )
    }

    pub(super) fn op_link(
        &self,
        _req: &Request,
        i: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
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
    }

    pub(super) fn op_open(&self, _req: &Request, i: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if is_ctl(i) {
            return match self.on_ctl(i, |n| self.ctl.open(n, flags.0)) {
                // Generated text bypasses the page cache; snapshot and
                // version files never change, so their pages may stay.
                Ok(fh) if self.ctl.is_generated(fh) => {
                    reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO)
                }
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
                Err(e) => reply.error(e),
            };
        }
        let mode = open_mode(flags.0);
        match self.tree.open(ino(i), mode) {
            Ok(fh) => reply.opened(FileHandle(fh), self.file_open_flags()),
            Err(e) => reply.error(self.fail("open", ino(i), &e)),
        }
    }

    pub(super) fn op_read(
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
        if is_ctl_fh(fh.0) {
            return reply_data(reply, self.ctl.read(fh.0, offset, size));
        }
        match self.tree.read(fh.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(self.fail("read", ino(i), &e)),
        }
    }

    pub(super) fn op_write(
        &self,
        req: &Request,
        i: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if is_ctl_fh(fh.0) {
            return match self.ctl.write(fh.0, offset, data) {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(e),
            };
        }
        // Answered from inside the write, as soon as the writer may go on.
        let mut reply = Some(reply);
        let written = self.tree.write(fh.0, offset, data, req.pid(), |n| {
            if let Some(reply) = reply.take() {
                reply.written(n as u32);
            }
        });
        if let (Err(e), Some(reply)) = (written, reply) {
            reply.error(self.fail("write", ino(i), &e));
        }
    }

    pub(super) fn op_flush(
        &self,
        req: &Request,
        i: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        if is_ctl_fh(fh.0) {
            return reply_empty(reply, self.ctl.flush(fh.0));
        }
        let flushed = self
            .tree
            .flush(fh.0, req.pid(), super::process::same_process);
        self.done(reply, "close", ino(i), flushed)
    }

    pub(super) fn op_release(
        &self,
        _req: &Request,
        i: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if is_ctl_fh(fh.0) {
            return reply_empty(reply, self.ctl.release(fh.0));
        }
        self.done(reply, "release", ino(i), self.tree.release(fh.0))
    }

    pub(super) fn op_fsync(
        &self,
        _req: &Request,
        i: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        if is_ctl_fh(fh.0) {
            return reply_empty(reply, self.ctl.flush(fh.0));
        }
        // Answered from the sync pool: the FUSE thread goes on to the next
        // request (another rank's write) while this one waits for the disk.
        let (tree, fh, ino) = (self.tree.clone(), fh.0, ino(i));
        self.syncer.run(move || {
            super::guarded("fsync", || match tree.fsync(fh) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(super::fail(&tree, "fsync", ino, &e)),
            })
        });
    }

    pub(super) fn op_opendir(
        &self,
        _req: &Request,
        i: INodeNo,
        _flags: OpenFlags,
        reply: ReplyOpen,
    ) {
        if is_ctl(i) {
            return match self.on_ctl(i, |n| self.ctl.getattr(n)) {
                Ok(a) if a.kind == FileType::Directory => {
                    reply.opened(FileHandle(0), FopenFlags::empty())
                }
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
    }

    pub(super) fn op_readdir(
        &self,
        _req: &Request,
        i: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if is_ctl(i) {
            let r = self.on_ctl(i, |n| {
                self.ctl.readdir(n, offset, |ino, off, kind, name| {
                    reply.add(ino, off, kind, OsStr::from_bytes(name))
                })
            });
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
    }

    pub(super) fn op_fsyncdir(
        &self,
        _req: &Request,
        i: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.done(reply, "fsyncdir", ino(i), self.tree.sync())
    }

    pub(super) fn op_statfs(&self, _req: &Request, i: INodeNo, reply: ReplyStatfs) {
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
    }

    pub(super) fn op_access(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mask: AccessFlags,
        reply: ReplyEmpty,
    ) {
        // default_permissions: the kernel checks modes itself.
        reply.ok();
    }

    pub(super) fn op_create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
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
            Ok((i, rec, fh)) => {
                self.tree.note_lookup(i);
                reply.created(
                    &TTL,
                    &file_attr(i, &rec),
                    Generation(0),
                    FileHandle(fh),
                    self.file_open_flags(),
                )
            }
            Err(e) => reply.error(self.fail("create", ino(parent), &e)),
        }
    }

    pub(super) fn op_fallocate(
        &self,
        _req: &Request,
        i: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
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
    }
}
