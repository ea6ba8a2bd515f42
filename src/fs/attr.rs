//! Conversions between tree records and fuser's attribute types.

use std::time::SystemTime;

use fuser::{FileAttr, FileType, INodeNo, TimeOrNow};

use crate::ids::Ino;
use crate::tree::{FileKind, InodeRecord, Time};

/// Block size reported in `st_blksize`: large, so `cp` and friends use
/// big writes that map onto few FUSE requests.
const BLKSIZE: u32 = 1 << 20;

/// The fuser file type of a tree kind.
pub fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDev => FileType::CharDevice,
        FileKind::BlockDev => FileType::BlockDevice,
    }
}

/// The tree kind of a `mode`'s file type bits; `None` for unknown types.
pub fn kind_of_mode(mode: u32) -> Option<FileKind> {
    Some(match mode & libc::S_IFMT {
        libc::S_IFREG | 0 => FileKind::File,
        libc::S_IFDIR => FileKind::Dir,
        libc::S_IFLNK => FileKind::Symlink,
        libc::S_IFIFO => FileKind::Fifo,
        libc::S_IFSOCK => FileKind::Socket,
        libc::S_IFCHR => FileKind::CharDev,
        libc::S_IFBLK => FileKind::BlockDev,
        _ => return None,
    })
}

/// `stat` data for an inode.
pub fn file_attr(ino: Ino, rec: &InodeRecord) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino.0),
        size: rec.size,
        blocks: rec.size.div_ceil(512),
        atime: rec.atime.into(),
        mtime: rec.mtime.into(),
        ctime: rec.ctime.into(),
        crtime: rec.crtime.into(),
        kind: file_type(rec.kind),
        perm: rec.perm,
        nlink: rec.nlink,
        uid: rec.uid,
        gid: rec.gid,
        rdev: rec.rdev,
        blksize: BLKSIZE,
        flags: 0,
    }
}

/// A utimensat time: a given time or now (UTIME_OMIT arrives as `None`).
pub fn time_of(t: TimeOrNow) -> Time {
    match t {
        TimeOrNow::SpecificTime(t) => Time::from(t),
        TimeOrNow::Now => Time::from(SystemTime::now()),
    }
}
