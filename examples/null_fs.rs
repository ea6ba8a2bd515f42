//! A null FUSE filesystem: what FUSE itself costs on this machine, with no
//! storage behind it. `scripts/bench` mounts it before its rounds to print
//! the ceiling that ckptfs's reads and writes are bounded by.
//!
//! ```text
//! null_fs MOUNTPOINT SIZE_BYTES [SINK_FILE [passthrough]]
//! ```
//!
//! The root holds one file, `data`, of SIZE_BYTES. Files are opened with
//! `FOPEN_DIRECT_IO`, as ckptfs opens them, and requests run on 4 threads,
//! as in ckptfs: a read is answered from a constant buffer, a write is
//! accepted and dropped, or, given SINK_FILE, written there at its offset
//! (`pwrite`, into the page cache): the least any FUSE server that keeps
//! the bytes in a local file does. A truncation (`O_TRUNC`, `ftruncate`)
//! truncates the sink.
//!
//! With `passthrough` (Linux 6.9 or newer, as root), `data` is opened in
//! FUSE passthrough mode on SINK_FILE: the kernel reads and writes the
//! sink itself and no request reaches this server: what a FUSE server
//! that hands a file to the kernel reaches. Such a server never sees the
//! bytes as they are written, so it could chunk and hash them only after
//! the file is closed. It serves until unmounted.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use fuser::{
    BackingId, BsdFileFlags, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, MountOption, OpenFlags, ReplyAttr,
    ReplyData, ReplyEntry, ReplyOpen, ReplyWrite, Request, Session, TimeOrNow, WriteFlags,
};

/// The largest request the kernel sends (ckptfs's `max_write` too).
const MAX_REQUEST: u32 = 1 << 20;
const TTL: Duration = Duration::from_secs(60);
const ROOT: u64 = 1;
const DATA: u64 = 2;

struct NullFs {
    size: u64,
    bytes: Vec<u8>,
    started: SystemTime,
    /// Where writes go, if anywhere.
    sink: Option<File>,
    /// Open `data` in passthrough mode on the sink.
    passthrough: bool,
    /// The sink registered with the kernel for passthrough, once `data`
    /// is first opened; every later open reuses it.
    backing: Mutex<Option<BackingId>>,
}

impl NullFs {
    fn attr(&self, ino: u64) -> FileAttr {
        let dir = ino == ROOT;
        FileAttr {
            ino: INodeNo(ino),
            size: if dir { 0 } else { self.size },
            blocks: if dir { 0 } else { self.size.div_ceil(512) },
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            crtime: self.started,
            kind: if dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: if dir { 0o755 } else { 0o644 },
            nlink: if dir { 2 } else { 1 },
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }
}

impl Filesystem for NullFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_REQUEST);
        let _ = config.set_max_readahead(MAX_REQUEST);
        let _ = config.add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP);
        if self.passthrough {
            config
                .add_capabilities(InitFlags::FUSE_PASSTHROUGH)
                .map_err(|_| std::io::Error::other("this kernel has no FUSE passthrough"))?;
            config
                .set_max_stack_depth(1)
                .map_err(|max| std::io::Error::other(format!("stack depth 1 refused ({max})")))?;
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent.0 == ROOT && name == "data" {
            reply.entry(&TTL, &self.attr(DATA), Generation(0));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn getattr(&self, _req: &Request, i: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match i.0 {
            ROOT | DATA => reply.attr(&TTL, &self.attr(i.0)),
            _ => reply.error(Errno::ENOENT),
        }
    }

    // A truncation (`O_TRUNC` at open, `ftruncate`) truncates the sink;
    // without one it changes nothing.
    fn setattr(
        &self,
        _req: &Request,
        i: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if i.0 != DATA {
            return reply.error(Errno::EPERM);
        }
        if let (Some(sink), Some(size)) = (&self.sink, size) {
            // Only a change of size: on ext4, truncating even an empty file
            // to 0 makes its last close flush it to disk (`auto_da_alloc`).
            let unchanged = sink.metadata().is_ok_and(|m| m.len() == size);
            if !unchanged {
                if let Err(e) = sink.set_len(size) {
                    eprintln!("null_fs: cannot truncate the sink to {size}: {e}");
                    return reply.error(Errno::EIO);
                }
            }
        }
        reply.attr(&TTL, &self.attr(DATA))
    }

    fn open(&self, _req: &Request, i: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if i.0 != DATA {
            return reply.error(Errno::EISDIR);
        }
        let Some(sink) = self.sink.as_ref().filter(|_| self.passthrough) else {
            return reply.opened(FileHandle(1), FopenFlags::FOPEN_DIRECT_IO);
        };
        let mut backing = match self.backing.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let id = match backing.take() {
            Some(id) => id,
            None => match reply.open_backing(sink) {
                Ok(id) => id,
                Err(e) => {
                    eprintln!("null_fs: the kernel refused the sink as a passthrough backing: {e}");
                    return reply.error(Errno::EIO);
                }
            },
        };
        reply.opened_passthrough(FileHandle(1), FopenFlags::empty(), &id);
        *backing = Some(id);
    }

    fn read(
        &self,
        _req: &Request,
        _i: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let left = self.size.saturating_sub(offset);
        let n = (size as u64).min(left).min(self.bytes.len() as u64) as usize;
        reply.data(&self.bytes[..n]);
    }

    fn write(
        &self,
        _req: &Request,
        _i: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if let Some(sink) = &self.sink {
            if let Err(e) = sink.write_all_at(data, offset) {
                eprintln!("null_fs: cannot write the sink at {offset}: {e}");
                return reply.error(Errno::EIO);
            }
        }
        match u32::try_from(data.len()) {
            Ok(n) => reply.written(n),
            Err(_) => reply.error(Errno::EINVAL),
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(mountpoint), Some(size)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: null_fs MOUNTPOINT SIZE_BYTES [SINK_FILE [passthrough]]");
        return ExitCode::from(2);
    };
    let Ok(size) = size.parse::<u64>() else {
        eprintln!("null_fs: SIZE_BYTES must be a number of bytes, not {size:?}");
        return ExitCode::from(2);
    };
    let passthrough = match args.get(4).map(String::as_str) {
        None => false,
        Some("passthrough") => true,
        Some(other) => {
            eprintln!("null_fs: the fourth argument can only be `passthrough`, not {other:?}");
            return ExitCode::from(2);
        }
    };
    // Read and write: a passthrough backing serves both.
    let create = |path: &String| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
    };
    let sink = match args.get(3).map(|path| create(path).map_err(|e| (path, e))) {
        None => None,
        Some(Ok(file)) => Some(file),
        Some(Err((path, e))) => {
            eprintln!("null_fs: cannot create the sink {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let fs = NullFs {
        size,
        sink,
        passthrough,
        backing: Mutex::new(None),
        // Several times the largest request: a reply never runs short.
        bytes: vec![0x5a; 4 * MAX_REQUEST as usize],
        started: SystemTime::now(),
    };
    let mut config = Config::default();
    config.mount_options = vec![MountOption::FSName("ckptfs-null".into())];
    config.n_threads = Some(4);
    config.clone_fd = true;
    let result = Session::new(fs, mountpoint, &config).and_then(|session| session.run());
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The end of a session by unmount, as ckptfs's daemon reads it.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENODEV | libc::ECONNABORTED)) => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("null_fs: cannot serve {mountpoint}: {e}");
            ExitCode::FAILURE
        }
    }
}
