//! The store layer: ckptfs's RocksDB schema and every read and write of it.
//!
//! It owns the database, the store directory's lock and the id allocator,
//! and knows nothing of FUSE or of POSIX semantics. Callers group a change
//! into one [`Txn`] (one RocksDB `WriteBatch`) so that a version commit
//! (manifest tail, inode, version record) is atomic.
//!
//! Durability: records go through RocksDB's WAL. A write that returned
//! survives the death of the process (the WAL is in the page cache); it
//! survives power loss once [`Store::sync`] or a `sync` commit returned.
//! Chunks and manifest segments are written before the commit that names
//! them, so any prefix of the log that recovery replays never names a chunk
//! it does not hold. Chunks of large files go to pack files instead of the
//! WAL (see `chunks.rs` and `packs.rs`); a version commit calls
//! [`Store::persist_chunks`] first, which syncs the packs written since the
//! last commit, unless lazy durability is on: then it records what it
//! replaced instead, and a power loss before the next [`Store::sync`] rolls
//! it back at open (`pending.rs`).

mod buffers;
mod bytes;
mod chunk_reads;
mod chunker;
mod chunks;
mod counters;
mod freeing;
mod history;
mod maintenance;
pub mod manifest;
mod namespace;
mod open;
mod packs;
mod pending;
pub mod records;
mod relocate;
pub mod schema;
mod txn;
mod unsynced;

use std::path::{Path, PathBuf};

use rocksdb::{WriteBatch, WriteOptions, DB};
use thiserror::Error;

use crate::ids::{ChunkId, Ino, ManifestId};
pub use chunk_reads::ChunkBytes;
pub use chunks::EncodedChunk;
use counters::Counter;
pub use counters::{MAX_INO, MAX_PATH_ID, MAX_SNAP_ID};
pub use history::CopyStats;
pub use maintenance::IndexedChunk;
pub use manifest::Entry;
pub use namespace::Scope;
pub use open::{FORMAT_VERSION, WAL_PREALLOC_BYTES};
pub use pending::PendingCommit;
use records::{FileKind, InodeRecord};
pub use relocate::{scattered, Placement};
use schema::*;
pub use txn::Txn;

/// Everything that can go wrong below the tree layer.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// RocksDB failed.
    #[error("database error: {0}")]
    Db(String),
    /// The disk holding the store is full.
    #[error("no space left on the store's disk")]
    NoSpace,
    /// A file operation in the store directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A record did not decode.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// A manifest names a chunk the store does not have.
    #[error("chunk {0} is missing")]
    ChunkMissing(ChunkId),
    /// A chunk's bytes do not hash to its id, or do not decode.
    #[error("chunk {0} is corrupt")]
    ChunkCorrupt(ChunkId),
    /// Another process holds the store.
    #[error("store {path} is already in use by another ckptfs process (pid {holder})")]
    InUse {
        /// The store.
        path: PathBuf,
        /// The pid written in the lock file.
        holder: String,
    },
    /// The directory is not a ckptfs store.
    #[error("{path} is not a ckptfs store: {why}")]
    NotAStore {
        /// The directory.
        path: PathBuf,
        /// Why not.
        why: String,
    },
    /// A sync of a pack failed earlier in this session. The kernel may have
    /// dropped the pages it could not write and would report a retry as a
    /// success, so nothing more can be made durable until the store is
    /// opened again (the open checks what reached the disk).
    #[error("{path}: an earlier sync failed ({cause}); nothing more can be made durable until the store is mounted again")]
    SyncFailed {
        /// The pack whose sync failed.
        path: PathBuf,
        /// What the OS said then.
        cause: String,
    },
    /// A counter ran out of the ids that fit in inode numbers.
    #[error("no more {0} can be allocated in this store")]
    Exhausted(&'static str),
    /// A mount asked for another cut search than the store's chunks were
    /// cut with.
    #[error("store {path} cuts chunks with --chunker {recorded}; --chunker {requested} would cut elsewhere and deduplicate nothing against what it holds")]
    ChunkerMismatch {
        /// The store.
        path: PathBuf,
        /// The store's.
        recorded: crate::chunk::CutSearch,
        /// The one asked for.
        requested: crate::chunk::CutSearch,
    },
    /// The store was written by a newer ckptfs.
    #[error("store {path} has format {found}; this ckptfs reads format {supported} and older")]
    NewerFormat {
        /// The store.
        path: PathBuf,
        /// Its format.
        found: u32,
        /// Ours.
        supported: u32,
    },
}

impl StoreError {
    /// The same error again, for each of several operations it failed
    /// (running out of space stays `NoSpace`, an OS error keeps its code).
    pub fn duplicate(&self) -> StoreError {
        match self {
            StoreError::NoSpace => StoreError::NoSpace,
            StoreError::Io { path, source } => StoreError::Io {
                path: path.clone(),
                source: match source.raw_os_error() {
                    Some(code) => std::io::Error::from_raw_os_error(code),
                    None => std::io::Error::new(source.kind(), source.to_string()),
                },
            },
            StoreError::ChunkMissing(id) => StoreError::ChunkMissing(*id),
            StoreError::ChunkCorrupt(id) => StoreError::ChunkCorrupt(*id),
            other => StoreError::Db(other.to_string()),
        }
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        if source.raw_os_error() == Some(libc::ENOSPC) {
            return StoreError::NoSpace;
        }
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl From<rocksdb::Error> for StoreError {
    fn from(e: rocksdb::Error) -> Self {
        let text = e.into_string();
        if text.contains("No space left") || text.contains("NoSpace") {
            StoreError::NoSpace
        } else {
            StoreError::Db(text)
        }
    }
}

type Result<T> = std::result::Result<T, StoreError>;

/// Free and total space of the disk holding the store.
#[derive(Clone, Copy, Debug)]
pub struct DiskSpace {
    /// Fragment size.
    pub block_size: u64,
    /// Total blocks.
    pub blocks: u64,
    /// Free blocks.
    pub free: u64,
    /// Blocks free to unprivileged users.
    pub available: u64,
    /// Total inodes.
    pub files: u64,
    /// Free inodes.
    pub files_free: u64,
}

/// An open store.
pub struct Store {
    /// First, so it is dropped first: its thread finishes freeing moved
    /// records while the store is still held.
    relocations: relocate::Relocations,
    db: DB,
    dir: open::StoreDir,
    ids: Counter,
    inos: Counter,
    paths: Counter,
    snaps: Counter,
    packs: packs::Packs,
    /// How new chunks are coded (`chunk::Compression` as a u8).
    compression: std::sync::atomic::AtomicU8,
    /// See [`Store::set_relocate_below`].
    relocate_below: std::sync::atomic::AtomicU64,
    /// Commits whose chunks may not be durable yet (`pending.rs`).
    pending: pending::Pending,
    /// True when this open made the store (see `chunker.rs`).
    made_now: bool,
    /// Read options for the chunk index's point lookups, made once: the
    /// default ones the plain `get` makes are a C++ allocation per call,
    /// and every chunk written is looked up.
    point_reads: rocksdb::ReadOptions,
}

impl Store {
    /// Opens the store in `root`, creating it when the directory is missing
    /// or empty. Fails when another process holds it.
    pub fn open(root: &Path) -> Result<Store> {
        let dir = open::claim(root)?;
        let db = open::open_db(&dir.db_path())?;
        let packs = packs::Packs::open(dir.packs_path(), open::sealed_pack_lengths(&db)?)?;
        // Ids below 16 are reserved (readdir offsets 1 and 2 are "." and
        // ".."); inode 1 is the root, path 1 the history's root.
        let mut store = Store {
            ids: Counter::load(&db, META_ID_CEILING, "ids", 16, 1 << 16, u64::MAX)?,
            inos: Counter::load(&db, META_INO_CEILING, "inode numbers", 2, 1 << 12, MAX_INO)?,
            paths: Counter::load(
                &db,
                META_PATH_CEILING,
                "history paths",
                2,
                1 << 10,
                MAX_PATH_ID,
            )?,
            snaps: Counter::load(&db, META_SNAP_CEILING, "snapshots", 1, 1 << 6, MAX_SNAP_ID)?,
            db,
            dir,
            packs,
            compression: std::sync::atomic::AtomicU8::new(0),
            relocate_below: std::sync::atomic::AtomicU64::new(0),
            relocations: Default::default(),
            pending: Default::default(),
            made_now: false,
            point_reads: rocksdb::ReadOptions::default(),
        };
        store.made_now = store.init_if_new()?;
        let pending = store.pending_commits()?;
        let lost = store.recover_packs(!pending.is_empty())?;
        store.recover_pending(&pending, &lost)?;
        store.free_listed_records()?;
        Ok(store)
    }

    /// Makes the root directory and the format records of a new store;
    /// true when the store is new.
    fn init_if_new(&self) -> Result<bool> {
        let shards = (CHUNK_SHARDS.len() as u32).to_le_bytes();
        if self.inode(Ino::ROOT)?.is_some() {
            // A store whose chunks are spread over another number of column
            // families would read as missing chunks: refuse it up front.
            let found = self.db.get_cf(self.cf(CF_META), META_CHUNK_SHARDS)?;
            if found.as_deref() != Some(&shards[..]) {
                return Err(StoreError::NotAStore {
                    path: self.root().to_path_buf(),
                    why: "its chunk layout differs from this build's (made by a development build)"
                        .into(),
                });
            }
            return Ok(false);
        }
        let mut root = InodeRecord::new(
            FileKind::Dir,
            0o755,
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        root.nlink = 2;
        let mut txn = self.txn();
        txn.put_inode(Ino::ROOT, &root);
        txn.batch
            .put_cf(self.cf(CF_META), META_FORMAT, FORMAT_VERSION.to_le_bytes());
        txn.batch
            .put_cf(self.cf(CF_META), META_CHUNK_SHARDS, shards);
        txn.batch.put_cf(
            self.cf(CF_META),
            META_CHUNKER,
            crate::chunk::CutSearch::NEW_STORES.to_string(),
        );
        self.commit(txn, true)?;
        Ok(true)
    }

    /// Sets how chunks stored from now on are coded. Chunks already
    /// stored keep their coding: every build reads all of them.
    pub fn set_compression(&self, compression: crate::chunk::Compression) {
        use crate::chunk::Compression;
        let code = match compression {
            Compression::Auto => 0,
            Compression::Lz4 => 1,
            Compression::None => 2,
        };
        self.compression
            .store(code, std::sync::atomic::Ordering::Relaxed);
    }

    /// How new chunks are coded.
    pub fn compression(&self) -> crate::chunk::Compression {
        use crate::chunk::Compression;
        match self.compression.load(std::sync::atomic::Ordering::Relaxed) {
            0 => Compression::Auto,
            1 => Compression::Lz4,
            _ => Compression::None,
        }
    }

    /// The store directory.
    pub fn root(&self) -> &Path {
        &self.dir.root
    }

    /// Where pack files are.
    pub fn packs_dir(&self) -> PathBuf {
        self.dir.packs_path()
    }

    /// Where staging files go.
    pub fn staging_dir(&self) -> PathBuf {
        self.dir.staging_path()
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        cf(&self.db, name)
    }

    /// The manifest segment holding `offset`: its start and entries.
    pub fn segment_at(&self, id: ManifestId, offset: u64) -> Result<Option<(u64, Vec<Entry>)>> {
        self.segment_near(id, offset, true)
    }

    /// The segment that starts at or after `offset`.
    pub fn segment_from(&self, id: ManifestId, offset: u64) -> Result<Option<(u64, Vec<Entry>)>> {
        self.segment_near(id, offset, false)
    }

    /// The segment of `id` at or before (`backward`) or at or after
    /// `offset`.
    fn segment_near(
        &self,
        id: ManifestId,
        offset: u64,
        backward: bool,
    ) -> Result<Option<(u64, Vec<Entry>)>> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_MANIFESTS));
        if backward {
            it.seek_for_prev(manifest_key(id, offset));
        } else {
            it.seek(manifest_key(id, offset));
        }
        if let (Some(key), Some(value)) = (it.key(), it.value()) {
            if let Some((mid, start)) = split_pair_key(key) {
                if mid == id.0 {
                    return Ok(Some((start, manifest::decode_segment(value)?)));
                }
            }
        }
        it.status()?;
        Ok(None)
    }

    /// Writes one manifest segment on its own (not part of a commit). The
    /// manifest stays unreferenced until a commit names it.
    pub fn put_segment(&self, id: ManifestId, start: u64, entries: &[Entry]) -> Result<()> {
        self.db.put_cf(
            self.cf(CF_MANIFESTS),
            manifest_key(id, start),
            manifest::encode_segment(entries),
        )?;
        Ok(())
    }

    /// Starts a batch of changes.
    pub fn txn(&self) -> Txn<'_> {
        Txn {
            store: self,
            batch: WriteBatch::default(),
        }
    }

    /// Applies a batch atomically; `sync` makes it durable before returning.
    /// A batch that names new chunks must call
    /// [`Store::persist_chunks`] first.
    pub fn commit(&self, txn: Txn<'_>, sync: bool) -> Result<()> {
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db.write_opt(txn.batch, &wo)?;
        Ok(())
    }

    /// Space on the disk holding the store.
    pub fn disk_space(&self) -> Result<DiskSpace> {
        let s = nix::sys::statvfs::statvfs(self.root())
            .map_err(|e| StoreError::io(self.root(), e.into()))?;
        Ok(DiskSpace {
            block_size: s.fragment_size() as u64,
            blocks: s.blocks() as u64,
            free: s.blocks_free() as u64,
            available: s.blocks_available() as u64,
            files: s.files() as u64,
            files_free: s.files_free() as u64,
        })
    }
}

pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> &'a rocksdb::ColumnFamily {
    // Every CF in ALL_CFS is created by open_db; a missing one is a bug.
    #[allow(clippy::expect_used)]
    db.cf_handle(name).expect("column family created at open")
}

pub(crate) fn decode_u64(v: &[u8]) -> Result<u64> {
    let arr: [u8; 8] = v
        .try_into()
        .map_err(|_| StoreError::Corrupt("meta value is not 8 bytes".into()))?;
    Ok(u64::from_le_bytes(arr))
}
