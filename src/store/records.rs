//! The records kept per inode, directory entry and file version, and their
//! on-disk encodings (each starts with a version byte).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::bytes::{Dec, Enc};
use super::StoreError;
use crate::ids::{Ino, ManifestId, PathId};

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

    pub(super) fn encode(self, e: &mut Enc) {
        e.i64(self.secs).u32(self.nanos);
    }

    pub(super) fn decode(d: &mut Dec) -> Result<Self, StoreError> {
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

/// One committed version of a regular file at one path.
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
    /// When the version was committed (or the file arrived at this path).
    pub committed: Time,
    /// The live inode it was committed from.
    pub ino: Ino,
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
        e.u64(self.ino.0);
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
            ino: Ino(d.u64()?),
        })
    }
}

/// A path of the version history: where it hangs and who may list it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathRecord {
    /// The parent path (the root is its own parent).
    pub parent: PathId,
    /// The last component.
    pub name: Vec<u8>,
    /// The sequence number of its newest version (0: none, a directory).
    pub last_seq: u64,
    /// Permission bits of the live file or directory it last mirrored.
    pub perm: u16,
    /// Its owner then.
    pub uid: u32,
    /// Its group then.
    pub gid: u32,
}

impl PathRecord {
    /// The history's root (never stored): everyone may list it.
    pub fn root() -> Self {
        PathRecord {
            parent: PathId::ROOT,
            name: Vec::new(),
            last_seq: 0,
            perm: 0o755,
            uid: 0,
            gid: 0,
        }
    }

    /// The on-disk form.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new();
        e.u8(1)
            .u64(self.parent.0)
            .bytes(&self.name)
            .u64(self.last_seq)
            .u16(self.perm)
            .u32(self.uid)
            .u32(self.gid);
        e.finish()
    }

    /// Parses the on-disk form.
    pub fn decode(buf: &[u8]) -> Result<Self, StoreError> {
        let mut d = Dec::new(buf, "history path");
        if d.u8()? != 1 {
            return Err(StoreError::Corrupt("history path record version".into()));
        }
        Ok(PathRecord {
            parent: PathId(d.u64()?),
            name: d.bytes()?,
            last_seq: d.u64()?,
            perm: d.u16()?,
            uid: d.u32()?,
            gid: d.u32()?,
        })
    }
}

/// A snapshot: a frozen copy of the live namespace (no file data).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// Its directory name under `.ckpt/snapshots/`.
    pub name: Vec<u8>,
    /// Global order of snapshots (the NNNNNN of automatic names).
    pub seq: u64,
    /// When it was taken.
    pub created: Time,
    /// Regular files it holds.
    pub files: u64,
    /// Their total size.
    pub logical_bytes: u64,
    /// Pinned snapshots are never expired and cannot be removed.
    pub pinned: bool,
    /// Taken automatically (a framework commit point or a quiet period).
    pub auto: bool,
    /// What took it ("mkdir", "rename checkpoint-500", ...).
    pub trigger: Vec<u8>,
}

impl SnapshotRecord {
    /// The on-disk form.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new();
        e.u8(1).bytes(&self.name).u64(self.seq);
        self.created.encode(&mut e);
        e.u64(self.files)
            .u64(self.logical_bytes)
            .u8(self.pinned as u8)
            .u8(self.auto as u8)
            .bytes(&self.trigger);
        e.finish()
    }

    /// Parses the on-disk form.
    pub fn decode(buf: &[u8]) -> Result<Self, StoreError> {
        let mut d = Dec::new(buf, "snapshot");
        if d.u8()? != 1 {
            return Err(StoreError::Corrupt("snapshot record version".into()));
        }
        Ok(SnapshotRecord {
            name: d.bytes()?,
            seq: d.u64()?,
            created: Time::decode(&mut d)?,
            files: d.u64()?,
            logical_bytes: d.u64()?,
            pinned: d.u8()? != 0,
            auto: d.u8()? != 0,
            trigger: d.bytes()?,
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
            ino: Ino(77),
        };
        assert_eq!(VersionRecord::decode(&v.encode()).unwrap(), v);
        let p = PathRecord {
            parent: PathId(1),
            name: b"x.pt".to_vec(),
            last_seq: 3,
            perm: 0o644,
            uid: 0,
            gid: 0,
        };
        assert_eq!(PathRecord::decode(&p.encode()).unwrap(), p);
        let sn = SnapshotRecord {
            name: b"auto-000001".to_vec(),
            seq: 1,
            created: Time::now(),
            files: 10,
            logical_bytes: 1 << 30,
            pinned: true,
            auto: true,
            trigger: b"mkdir".to_vec(),
        };
        assert_eq!(SnapshotRecord::decode(&sn.encode()).unwrap(), sn);
    }
}
