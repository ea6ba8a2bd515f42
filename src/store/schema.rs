//! The RocksDB schema: column families, key layouts and their encoders.
//!
//! | CF            | key                                   | value                         |
//! |---------------|---------------------------------------|-------------------------------|
//! | `meta`        | ascii name                            | format version, id ceiling    |
//! | `inodes`      | ino u64 BE                            | [`InodeRecord`]               |
//! | `dentries`    | parent u64 BE ++ name                 | [`DirEntry`]                  |
//! | `dirorder`    | parent u64 BE ++ cookie u64 BE        | name (readdir order/offsets)  |
//! | `xattrs`      | ino u64 BE ++ name                    | value                         |
//! | `manifests`   | manifest u64 BE ++ start offset u64 BE| one segment of chunk entries  |
//! | `versions`    | ino u64 BE ++ seq u64 BE              | [`VersionRecord`]             |
//! | `chunk_index` | chunk id (16 bytes)                   | raw len u32, stored len u32   |
//! | `chunks`      | chunk id (16 bytes)                   | codec value (in BlobDB)       |
//!
//! Big-endian integers make RocksDB's byte order the numeric order, so a
//! prefix scan over `dirorder` is a directory in creation order and a
//! `seek_for_prev` over `manifests` finds the segment holding an offset.
//!
//! [`InodeRecord`]: super::records::InodeRecord
//! [`DirEntry`]: super::records::DirEntry
//! [`VersionRecord`]: super::records::VersionRecord

use crate::ids::{ChunkId, Ino, ManifestId};

/// Format/bookkeeping values.
pub const CF_META: &str = "meta";
/// Inode attributes.
pub const CF_INODES: &str = "inodes";
/// Name → child lookups.
pub const CF_DENTRIES: &str = "dentries";
/// Cookie → name, the stable readdir order.
pub const CF_DIRORDER: &str = "dirorder";
/// Extended attributes.
pub const CF_XATTRS: &str = "xattrs";
/// File manifests, segmented.
pub const CF_MANIFESTS: &str = "manifests";
/// Committed file versions.
pub const CF_VERSIONS: &str = "versions";
/// Small per-chunk records: the dedup check never reads chunk values.
pub const CF_CHUNK_INDEX: &str = "chunk_index";
/// Chunk values, kept in BlobDB blob files, sharded by id so that several
/// memtable flushes (RocksDB runs one per column family) write in parallel.
pub const CF_CHUNKS: &str = "chunks";
/// The second chunk shard.
pub const CF_CHUNKS_1: &str = "chunks-1";
/// Chunk value shards, indexed by [`chunk_shard`].
pub const CHUNK_SHARDS: [&str; 2] = [CF_CHUNKS, CF_CHUNKS_1];

/// The shard holding a chunk.
pub fn chunk_shard(id: ChunkId) -> &'static str {
    CHUNK_SHARDS[(id.0 as usize) % CHUNK_SHARDS.len()]
}

/// Every column family, in creation order.
pub const ALL_CFS: [&str; 10] = [
    CF_META,
    CF_INODES,
    CF_DENTRIES,
    CF_DIRORDER,
    CF_XATTRS,
    CF_MANIFESTS,
    CF_VERSIONS,
    CF_CHUNK_INDEX,
    CF_CHUNKS,
    CF_CHUNKS_1,
];

/// `meta` key of the id allocator's persisted ceiling.
pub const META_ID_CEILING: &[u8] = b"id_ceiling";
/// `meta` key of the database format version.
pub const META_FORMAT: &[u8] = b"format";
/// `meta` key of the number of chunk shards the store was created with.
pub const META_CHUNK_SHARDS: &[u8] = b"chunk_shards";

/// Key of an inode.
pub fn inode_key(ino: Ino) -> [u8; 8] {
    ino.0.to_be_bytes()
}

/// Key of a directory entry.
pub fn dentry_key(parent: Ino, name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + name.len());
    k.extend_from_slice(&parent.0.to_be_bytes());
    k.extend_from_slice(name);
    k
}

/// Key of a directory-order record.
pub fn dirorder_key(parent: Ino, cookie: u64) -> [u8; 16] {
    pair_key(parent.0, cookie)
}

/// Key of an extended attribute.
pub fn xattr_key(ino: Ino, name: &[u8]) -> Vec<u8> {
    dentry_key(ino, name)
}

/// Key of the manifest segment that starts at `start`.
pub fn manifest_key(id: ManifestId, start: u64) -> [u8; 16] {
    pair_key(id.0, start)
}

/// Key of a file version.
pub fn version_key(ino: Ino, seq: u64) -> [u8; 16] {
    pair_key(ino.0, seq)
}

/// Key of a chunk (in `chunks` and `chunk_index`).
pub fn chunk_key(id: ChunkId) -> [u8; 16] {
    id.to_bytes()
}

/// Two big-endian u64s.
pub fn pair_key(a: u64, b: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&a.to_be_bytes());
    k[8..].copy_from_slice(&b.to_be_bytes());
    k
}

/// Splits a 16-byte pair key; `None` when the key is not 16 bytes.
pub fn split_pair_key(key: &[u8]) -> Option<(u64, u64)> {
    let a: [u8; 8] = key.get(..8)?.try_into().ok()?;
    let b: [u8; 8] = key.get(8..16)?.try_into().ok()?;
    Some((u64::from_be_bytes(a), u64::from_be_bytes(b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_keys_sort_numerically() {
        assert!(pair_key(1, 255) < pair_key(1, 256));
        assert!(pair_key(1, u64::MAX) < pair_key(2, 0));
        assert_eq!(split_pair_key(&pair_key(7, 9)), Some((7, 9)));
        assert_eq!(split_pair_key(b"short"), None);
    }
}
