//! Identifiers shared by every layer: chunk ids, inode numbers, manifest ids.
//!
//! They are plain newtypes so that a chunk id can never be passed where an
//! inode number is expected. Their byte encodings (big-endian, so that
//! RocksDB's byte order is numeric order) live in `store::schema`.

use std::fmt;

/// The content address of a chunk: xxh3-128 of its raw (uncompressed) bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub u128);

impl ChunkId {
    /// Big-endian bytes, the chunk's key in the store.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// Parses the 16 key bytes; `None` when the slice is not 16 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; 16] = bytes.try_into().ok()?;
        Some(ChunkId(u128::from_be_bytes(arr)))
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// A live-tree inode number. 1 is the root; numbers are never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ino(pub u64);

impl Ino {
    /// The root directory of the live tree.
    pub const ROOT: Ino = Ino(1);
}

impl fmt::Display for Ino {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Identifies one immutable file manifest (the ordered chunk list of one
/// version). 0 means "no manifest": an empty file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ManifestId(pub u64);

impl ManifestId {
    /// The manifest of an empty file; nothing is stored for it.
    pub const EMPTY: ManifestId = ManifestId(0);
}

/// A snapshot's index: small and dense, so that it fits in the virtual
/// inode numbers of `.ckpt/snapshots/` (24 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SnapId(pub u64);

/// A path of the version history (`.ckpt/versions/...`): every directory
/// or file path that ever held a committed version. Dense (32 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PathId(pub u64);

impl PathId {
    /// The history's root, mirroring the live root.
    pub const ROOT: PathId = PathId(1);
}
