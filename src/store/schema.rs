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
//! | `paths`       | parent path u64 BE ++ name            | path id u64 BE                |
//! | `path_info`   | path id u64 BE                        | [`PathRecord`]                |
//! | `versions`    | path id u64 BE ++ seq u64 BE          | [`VersionRecord`]             |
//! | `snapshots`   | snapshot id u64 BE                    | [`SnapshotRecord`]            |
//! | `snap_tree`   | snapshot id u64 BE ++ tag ++ live key | copy of a live namespace record |
//! | `chunk_index` | chunk id (16 bytes)                   | lengths [, pack u32, offset u64] |
//! | `chunks`      | chunk id (16 bytes)                   | codec value (in BlobDB), small files |
//! | `unsynced`    | pack u32 BE ++ offset u64 BE          | chunk ids of a batch of records indexed before their pack was synced |
//!
//! Big-endian integers make RocksDB's byte order the numeric order, so a
//! prefix scan over `dirorder` is a directory in creation order and a
//! `seek_for_prev` over `manifests` finds the segment holding an offset.
//!
//! [`InodeRecord`]: super::records::InodeRecord
//! [`DirEntry`]: super::records::DirEntry
//! [`VersionRecord`]: super::records::VersionRecord
//! [`PathRecord`]: super::records::PathRecord
//! [`SnapshotRecord`]: super::records::SnapshotRecord
//!
//! A snapshot copies the live `inodes`, `dentries`, `dirorder` and `xattrs`
//! records under its id and a tag byte ([`Tag`]), so the same accessors read
//! the live tree and any snapshot ([`super::Scope`]), and deleting a snapshot
//! is one range deletion.

use crate::ids::{ChunkId, Ino, ManifestId, PathId, SnapId};

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
/// Committed file versions, by history path.
pub const CF_VERSIONS: &str = "versions";
/// History paths by parent and name.
pub const CF_PATHS: &str = "paths";
/// History paths by id.
pub const CF_PATH_INFO: &str = "path_info";
/// Snapshot records.
pub const CF_SNAPSHOTS: &str = "snapshots";
/// The namespace records of every snapshot.
pub const CF_SNAP_TREE: &str = "snap_tree";
/// Small per-chunk records: the dedup check never reads chunk values.
pub const CF_CHUNK_INDEX: &str = "chunk_index";
/// Chunk values, kept in BlobDB blob files, sharded by id so that several
/// memtable flushes (RocksDB runs one per column family) write in parallel.
pub const CF_CHUNKS: &str = "chunks";
/// The second chunk shard.
pub const CF_CHUNKS_1: &str = "chunks-1";
/// Pack records indexed before their pack was synced (`unsynced.rs`):
/// written with each index entry, range-deleted per pack by each sync, and
/// read only by the open after a crash.
pub const CF_UNSYNCED: &str = "unsynced";
/// Chunk value shards, indexed by [`chunk_shard`].
pub const CHUNK_SHARDS: [&str; 2] = [CF_CHUNKS, CF_CHUNKS_1];

/// The shard holding a chunk.
pub fn chunk_shard(id: ChunkId) -> &'static str {
    CHUNK_SHARDS[(id.0 as usize) % CHUNK_SHARDS.len()]
}

/// Every column family, in creation order.
pub const ALL_CFS: [&str; 15] = [
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
    CF_PATHS,
    CF_PATH_INFO,
    CF_SNAPSHOTS,
    CF_SNAP_TREE,
    CF_UNSYNCED,
];

/// Which namespace table a record belongs to (its tag in `snap_tree`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    /// `inodes`
    Inode = b'i' as isize,
    /// `dentries`
    Dentry = b'd' as isize,
    /// `dirorder`
    Order = b'o' as isize,
    /// `xattrs`
    Xattr = b'x' as isize,
}

impl Tag {
    /// All four, for copying a namespace.
    pub const ALL: [Tag; 4] = [Tag::Inode, Tag::Dentry, Tag::Order, Tag::Xattr];

    /// The live column family of the table.
    pub fn live_cf(self) -> &'static str {
        match self {
            Tag::Inode => CF_INODES,
            Tag::Dentry => CF_DENTRIES,
            Tag::Order => CF_DIRORDER,
            Tag::Xattr => CF_XATTRS,
        }
    }
}

/// `snap_tree` key prefix of one table of one snapshot.
pub fn snap_prefix(snap: SnapId, tag: Tag) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[..8].copy_from_slice(&snap.0.to_be_bytes());
    k[8] = tag as u8;
    k
}

/// Key of a history path's child.
pub fn path_child_key(parent: PathId, name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + name.len());
    k.extend_from_slice(&parent.0.to_be_bytes());
    k.extend_from_slice(name);
    k
}

/// `meta` key of the id allocator's persisted ceiling.
pub const META_ID_CEILING: &[u8] = b"id_ceiling";
/// `meta` key of the database format version.
pub const META_FORMAT: &[u8] = b"format";
/// `meta` key of the cut search the store's chunks were cut with
/// (`chunk::CutSearch` by name); absent: `fastcdc`.
pub const META_CHUNKER: &[u8] = b"chunker";
/// `meta` key set while a GC's deletions are not compacted away yet.
pub const META_COMPACTION_PENDING: &[u8] = b"gc_compaction_pending";
/// `meta` key of the retention policy text.
pub const META_POLICY: &[u8] = b"retention_policy";
/// `meta` keys of the dedicated counters' ceilings.
pub const META_INO_CEILING: &[u8] = b"ino_ceiling";
/// See [`META_INO_CEILING`].
pub const META_PATH_CEILING: &[u8] = b"path_ceiling";
/// See [`META_INO_CEILING`].
pub const META_SNAP_CEILING: &[u8] = b"snap_ceiling";
/// Prefix of the `meta` keys holding each pack file's durable length.
pub const META_PACK_LEN_PREFIX: &[u8] = b"pack_len/";

/// Prefix of the `meta` keys of pack records that moves left behind and
/// that are not known to be punched yet (`store/freeing.rs`).
pub const META_FREE_PREFIX: &[u8] = b"free/";

/// Key of a pack record in [`CF_UNSYNCED`].
pub fn unsynced_key(pack: u32, offset: u64) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..4].copy_from_slice(&pack.to_be_bytes());
    k[4..].copy_from_slice(&offset.to_be_bytes());
    k
}

/// `meta` key of a pack's durable length.
pub fn pack_len_key(pack: u32) -> Vec<u8> {
    let mut k = META_PACK_LEN_PREFIX.to_vec();
    k.extend_from_slice(&pack.to_be_bytes());
    k
}

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
pub fn version_key(path: PathId, seq: u64) -> [u8; 16] {
    pair_key(path.0, seq)
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
