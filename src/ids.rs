//! Identifiers shared by every layer: chunk ids, inode numbers, manifest ids.
//!
//! They are plain newtypes so that a chunk id can never be passed where an
//! inode number is expected. Their byte encodings (big-endian, so that
//! RocksDB's byte order is numeric order) live in `store::schema`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

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

/// Hashes a [`ChunkId`] for in-memory maps with two multiplies: an id
/// is an xxh3 hash already, and SipHash (the default) cost a read's fuser
/// threads a few per cent of their CPU, a lookup per chunk and map. The
/// multiplies spread made-up ids (small, as in tests, or with equal
/// halves) over every bit, the high ones included, which hashbrown's
/// probing uses. Keys other than ids go through a byte fold.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }

    fn write_u128(&mut self, n: u128) {
        self.0 ^= n as u64 ^ ((n >> 64) as u64).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    }
}

/// The [`IdHasher`] for maps and sets keyed by chunk ids.
pub type IdHash = BuildHasherDefault<IdHasher>;
/// A map keyed by chunk ids.
pub type IdMap<V> = HashMap<ChunkId, V, IdHash>;
/// A set of chunk ids.
pub type IdSet = HashSet<ChunkId, IdHash>;

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn ids_that_differ_in_either_half_hash_apart_and_spread_over_the_high_bits() {
        let hash = |id: u128| IdHash::default().hash_one(ChunkId(id));
        let low: HashSet<u64> = (0..1000u128).map(hash).collect();
        let high: HashSet<u64> = (0..1000u128).map(|k| hash(k << 64)).collect();
        assert_eq!((low.len(), high.len()), (1000, 1000));
        // hashbrown keys its probe groups on the top 7 bits.
        let tops: HashSet<u64> = (0..1000u128).map(|k| hash(k) >> 57).collect();
        assert!(tops.len() > 100, "{} distinct top bits", tops.len());
        let same_halves: HashSet<u64> = (0..1000u128).map(|k| hash(k << 64 | k)).collect();
        assert_eq!(same_halves.len(), 1000);
        let set: IdSet = (0..1000u128).map(|k| ChunkId(k << 64 | k)).collect();
        assert!(set.contains(&ChunkId(5 << 64 | 5)) && !set.contains(&ChunkId(5 << 64)));
    }
}
