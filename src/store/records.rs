//! The records kept per inode, directory entry and file version, and their
//! on-disk encodings (each starts with a version byte).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::bytes::{Dec, Enc};
use super::StoreError;
use crate::ids::{Ino, ManifestId};

const INODE_RECORD_V1: u8 = 1;
const VERSION_RECORD_V1: u8 = 1;

/// What kind of object an inode is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file with versioned content.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A named pipe (metadata only).
    Fifo,
    /// A unix socket (metadata only).
    Socket,
    /// A character device node (metadata only).
    CharDev,
    /// A block device node (metadata only).
    BlockDev,
}

impl FileKind {
    fn to_u8(self) -> u8 {
        match self {
            FileKind::File => 1,
            FileKind::Dir => 2,
            FileKind::Symlink => 3,
            FileKind::Fifo => 4,
            FileKind::Socket => 5,
            FileKind::CharDev => 6,
            FileKind::BlockDev => 7,
        }
    }

    fn from_u8(v: u8) -> Result<Self, StoreError> {
        Ok(match v {
            1 => FileKind::File,
            2 => FileKind::Dir,
            3 => FileKind::Symlink,
            4 => FileKind::Fifo,
            5 => FileKind::Socket,
            6 => FileKind::CharDev,
            7 => FileKind::BlockDev,
            other => return Err(StoreError::Corrupt(format!("unknown file kind {other}"))),
        })
    }
}

/// A point in time with nanoseconds, as POSIX timestamps are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Time {
    /// Seconds since the epoch (negative before 1970).
    pub secs: i64,
    /// Nanoseconds within the second.
    pub nanos: u32,
}

impl Time {
    /// The current wall-clock time.
    pub fn now() -> Self {
        Time::from(SystemTime::now())
    }

    fn encode(self, e: &mut Enc) {
        e.i64(self.secs).u32(self.nanos);
    }

    fn decode(d: &mut Dec) -> Result<Self, StoreError> {
        Ok(Time {
            secs: d.i64()?,
            nanos: d.u32()?.min(999_999_999),
        })
    }
}

impl From<SystemTime> for Time {
    fn from(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Time {
                secs: d.as_secs() as i64,
                nanos: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                let mut secs = -(d.as_secs() as i64);
                let mut nanos = d.subsec_nanos();
                if nanos > 0 {
                    secs -= 1;
                    nanos = 1_000_000_000 - nanos;
                }
                Time { secs, nanos }
            }
        }
    }
}

impl From<Time> for SystemTime {
    fn from(t: Time) -> Self {
        if t.secs >= 0 {
            UNIX_EPOCH + Duration::new(t.secs as u64, t.nanos)
        } else {
            UNIX_EPOCH - Duration::new(t.secs.unsigned_abs(), 0) + Duration::new(0, t.nanos)
        }
    }
}

/// Everything `stat` shows about an inode, plus where its content is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InodeRecord {
    /// What the inode is.
    pub kind: FileKind,
    /// Permission bits including setuid/setgid/sticky (mode & 07777).
    pub perm: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Hard links (directories: 2 + subdirectories).
    pub nlink: u32,
    /// Device number for device nodes.
    pub rdev: u32,
    /// Size in bytes of the committed content (or of the symlink target).
    pub size: u64,
    /// Access time.
    pub atime: Time,
    /// Modification time.
    pub mtime: Time,
    /// Status change time.
    pub ctime: Time,
    /// Creation time.
    pub crtime: Time,
    /// The committed content of a regular file.
    pub content: ManifestId,
    /// How many versions of this file were committed (the last `seq`).
    pub versions: u64,
    /// A symlink's target.
    pub target: Vec<u8>,
    /// The directory of the inode's most recent name (the only one for
    /// directories): used for `..` and to name the file in logs.
    pub parent: Ino,
    /// That most recent name.
    pub name: Vec<u8>,
}

impl InodeRecord {
    /// A fresh inode of `kind` owned by `uid:gid`, all times now.
    pub fn new(kind: FileKind, perm: u16, uid: u32, gid: u32) -> Self {
        let now = Time::now();
        InodeRecord {
            kind,
            perm: perm & 0o7777,
            uid,
            gid,
            nlink: if kind == FileKind::Dir { 2 } else { 1 },
            rdev: 0,
            size: 0,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            content: ManifestId::EMPTY,
            versions: 0,
            target: Vec::new(),
            parent: Ino::ROOT,
            name: Vec::new(),
        }
    }

    /// The on-disk form.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new();
        e.u8(INODE_RECORD_V1)
            .u8(self.kind.to_u8())
            .u16(self.perm)
            .u32(self.uid)
            .u32(self.gid)
            .u32(self.nlink)
            .u32(self.rdev)
            .u64(self.size);
        for t in [self.atime, self.mtime, self.ctime, self.crtime] {
            t.encode(&mut e);
        }
        e.u64(self.content.0)
            .u64(self.versions)
            .bytes(&self.target)
            .u64(self.parent.0)
            .bytes(&self.name);
        e.finish()
    }

    /// Parses the on-disk form.
    pub fn decode(buf: &[u8]) -> Result<Self, StoreError> {
        let mut d = Dec::new(buf, "inode");
        let version = d.u8()?;
        if version != INODE_RECORD_V1 {
            return Err(StoreError::Corrupt(format!(
                "inode record version {version}"
            )));
        }
        Ok(InodeRecord {
            kind: FileKind::from_u8(d.u8()?)?,
            perm: d.u16()?,
            uid: d.u32()?,
            gid: d.u32()?,
            nlink: d.u32()?,
            rdev: d.u32()?,
            size: d.u64()?,
            atime: Time::decode(&mut d)?,
            mtime: Time::decode(&mut d)?,
            ctime: Time::decode(&mut d)?,
            crtime: Time::decode(&mut d)?,
            content: ManifestId(d.u64()?),
            versions: d.u64()?,
            target: d.bytes()?,
            parent: Ino(d.u64()?),
            name: d.bytes()?,
        })
    }
}

/// A name in a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The inode the name refers to.
    pub ino: Ino,
    /// Its kind (for readdir without reading the inode).
    pub kind: FileKind,
    /// Its position in the directory's readdir order.
    pub cookie: u64,
}

impl DirEntry {
    /// The on-disk form.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new();
        e.u64(self.ino.0).u8(self.kind.to_u8()).u64(self.cookie);
        e.finish()
    }

    /// Parses the on-disk form.
    pub fn decode(buf: &[u8]) -> Result<Self, StoreError> {
        let mut d = Dec::new(buf, "directory entry");
        Ok(DirEntry {
            ino: Ino(d.u64()?),
            kind: FileKind::from_u8(d.u8()?)?,
            cookie: d.u64()?,
        })
    }

    /// The readdir-order form: the entry followed by its name.
    pub fn encode_with_name(&self, name: &[u8]) -> Vec<u8> {
        let mut v = self.encode();
        v.extend_from_slice(name);
        v
    }

    /// Parses the readdir-order form.
    pub fn decode_with_name(buf: &[u8]) -> Result<(Self, &[u8]), StoreError> {
        const FIXED: usize = 17;
        if buf.len() < FIXED {
            return Err(StoreError::Corrupt(
                "directory order record is truncated".into(),
            ));
        }
        Ok((DirEntry::decode(&buf[..FIXED])?, &buf[FIXED..]))
    }
}

/// One committed version of a regular file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionRecord {
    /// The content.
    pub manifest: ManifestId,
    /// Its size.
    pub size: u64,
    /// The file's permission bits then.
    pub perm: u16,
    /// Owner then.
    pub uid: u32,
    /// Group then.
    pub gid: u32,
    /// The file's mtime then.
    pub mtime: Time,
    /// When the version was committed.
    pub committed: Time,
    /// The path (from the mount root) the file had when committed.
    pub path: Vec<u8>,
}

impl VersionRecord {
    /// The on-disk form.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new();
        e.u8(VERSION_RECORD_V1)
            .u64(self.manifest.0)
            .u64(self.size)
            .u16(self.perm)
            .u32(self.uid)
            .u32(self.gid);
        self.mtime.encode(&mut e);
        self.committed.encode(&mut e);
        e.bytes(&self.path);
        e.finish()
    }

    /// Parses the on-disk form.
    pub fn decode(buf: &[u8]) -> Result<Self, StoreError> {
        let mut d = Dec::new(buf, "version");
        let version = d.u8()?;
        if version != VERSION_RECORD_V1 {
            return Err(StoreError::Corrupt(format!(
                "version record version {version}"
            )));
        }
        Ok(VersionRecord {
            manifest: ManifestId(d.u64()?),
            size: d.u64()?,
            perm: d.u16()?,
            uid: d.u32()?,
            gid: d.u32()?,
            mtime: Time::decode(&mut d)?,
            committed: Time::decode(&mut d)?,
            path: d.bytes()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inode_round_trips_and_truncation_is_an_error() {
        let mut r = InodeRecord::new(FileKind::Symlink, 0o777, 1000, 100);
        r.target = b"../x".to_vec();
        r.size = 4;
        r.mtime = Time { secs: -5, nanos: 7 };
        let bytes = r.encode();
        assert_eq!(InodeRecord::decode(&bytes).unwrap(), r);
        assert!(InodeRecord::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(InodeRecord::decode(&[]).is_err());
    }

    #[test]
    fn times_convert_both_ways_before_and_after_epoch() {
        for t in [
            Time { secs: 5, nanos: 9 },
            Time {
                secs: -3,
                nanos: 250,
            },
        ] {
            assert_eq!(Time::from(SystemTime::from(t)), t);
        }
    }

    #[test]
    fn dentry_and_version_round_trip() {
        let d = DirEntry {
            ino: Ino(42),
            kind: FileKind::Dir,
            cookie: 9,
        };
        assert_eq!(DirEntry::decode(&d.encode()).unwrap(), d);
        let v = VersionRecord {
            manifest: ManifestId(3),
            size: 10,
            perm: 0o644,
            uid: 1,
            gid: 2,
            mtime: Time::now(),
            committed: Time::now(),
            path: b"a/b.pt".to_vec(),
        };
        assert_eq!(VersionRecord::decode(&v.encode()).unwrap(), v);
    }
}
