//! Chunk storage: the dedup check, writes of new chunks and verified reads.
//!
//! `chunk_index` holds a few bytes per chunk so that the dedup check is a
//! bloom-filtered point lookup that never touches chunk values; `chunks`
//! holds the codec value in BlobDB. Both are written in one batch.
//!
//! Chunks of large files skip the WAL (BlobDB then writes them to disk once,
//! at flush) and are *volatile* until the chunks column family is flushed.
//! Every commit calls [`Store::persist_volatile_chunks`] first, so no commit
//! can name a chunk that a crash would lose. The epoch is raised *before* a
//! volatile put, so a writer that deduplicates against a chunk that is still
//! being put also sees that a flush is due.

use std::sync::atomic::Ordering;

use rocksdb::{WriteBatch, WriteOptions};

use super::schema::{chunk_key, chunk_shard, CF_CHUNK_INDEX, CHUNK_SHARDS};
use super::{Result, Store, StoreError};
use crate::chunk;
use crate::ids::ChunkId;

impl Store {
    /// True when the chunk is already stored.
    pub fn has_chunk(&self, id: ChunkId) -> Result<bool> {
        let cf = self.cf(CF_CHUNK_INDEX);
        let key = chunk_key(id);
        if !self.db.key_may_exist_cf(cf, key) {
            return Ok(false);
        }
        Ok(self.db.get_pinned_cf(cf, key)?.is_some())
    }

    /// The stored length of a chunk, from the index.
    pub fn chunk_stored_len(&self, id: ChunkId) -> Result<Option<u32>> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_CHUNK_INDEX), chunk_key(id))?
            .and_then(|v| {
                v.get(4..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u32::from_le_bytes)
            }))
    }

    /// Stores a chunk given its raw bytes; returns the stored size. The
    /// caller has checked [`Store::has_chunk`]; storing twice is harmless.
    /// With `volatile`, the write skips the WAL (see the module docs).
    pub fn put_chunk(&self, id: ChunkId, raw: &[u8], volatile: bool) -> Result<usize> {
        let stored = chunk::encode(raw);
        let mut index = [0u8; 8];
        index[..4].copy_from_slice(&(raw.len() as u32).to_le_bytes());
        index[4..].copy_from_slice(&(stored.len() as u32).to_le_bytes());
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(chunk_shard(id)), chunk_key(id), &stored);
        batch.put_cf(self.cf(CF_CHUNK_INDEX), chunk_key(id), index);
        let mut wo = WriteOptions::default();
        if volatile {
            self.volatile_epoch.fetch_add(1, Ordering::SeqCst);
            wo.disable_wal(true);
        }
        self.db.write_opt(batch, &wo)?;
        Ok(stored.len())
    }

    /// Makes every chunk written so far durable: flushes the chunk column
    /// families when a volatile chunk was put since the last such flush.
    pub fn persist_volatile_chunks(&self) -> Result<()> {
        let epoch = self.volatile_epoch.load(Ordering::SeqCst);
        if epoch <= self.flushed_epoch.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut cfs: Vec<&rocksdb::ColumnFamily> =
            CHUNK_SHARDS.iter().map(|n| self.cf(n)).collect();
        cfs.push(self.cf(CF_CHUNK_INDEX));
        self.db
            .flush_cfs_opt(&cfs, &rocksdb::FlushOptions::default())?;
        self.flushed_epoch.fetch_max(epoch, Ordering::SeqCst);
        Ok(())
    }

    /// Bytes of chunk data in memtables: written, but not yet on disk, so
    /// `statvfs` cannot see them yet.
    pub fn unflushed_chunk_bytes(&self) -> Result<u64> {
        let mut total = 0;
        for name in CHUNK_SHARDS.iter().chain([&CF_CHUNK_INDEX]) {
            total += self
                .db
                .property_int_value_cf(self.cf(name), "rocksdb.cur-size-all-mem-tables")?
                .unwrap_or(0);
        }
        Ok(total)
    }

    /// Reads a chunk, decodes it and checks that it hashes to its id.
    pub fn read_chunk(&self, id: ChunkId) -> Result<Vec<u8>> {
        let stored = match self
            .db
            .get_pinned_cf(self.cf(chunk_shard(id)), chunk_key(id))
        {
            Ok(Some(v)) => v,
            Ok(None) => return Err(StoreError::ChunkMissing(id)),
            Err(e) if e.kind() == rocksdb::ErrorKind::Corruption => {
                return Err(StoreError::ChunkCorrupt(id))
            }
            Err(e) => return Err(e.into()),
        };
        let raw = chunk::decode(&stored).map_err(|_| StoreError::ChunkCorrupt(id))?;
        if chunk::chunk_id(&raw) != id {
            return Err(StoreError::ChunkCorrupt(id));
        }
        Ok(raw)
    }

    /// Overwrites a chunk's stored value with arbitrary bytes. Only for
    /// tests and `verify` drills that need a corrupt store.
    #[doc(hidden)]
    pub fn overwrite_chunk_value_for_test(&self, id: ChunkId, value: &[u8]) -> Result<()> {
        self.db
            .put_cf(self.cf(chunk_shard(id)), chunk_key(id), value)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::chunk::chunk_id;
    use crate::store::{Store, StoreError};

    #[test]
    fn chunks_round_trip_dedup_and_detect_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let data = vec![5u8; 30000];
        let id = chunk_id(&data);
        assert!(!store.has_chunk(id).unwrap());
        store.put_chunk(id, &data, false).unwrap();
        assert!(store.has_chunk(id).unwrap());
        assert_eq!(store.read_chunk(id).unwrap(), data);

        let mut bad = crate::chunk::encode(&data);
        let n = bad.len();
        bad[n - 1] ^= 1;
        store.overwrite_chunk_value_for_test(id, &bad).unwrap();
        assert!(matches!(
            store.read_chunk(id),
            Err(StoreError::ChunkCorrupt(_))
        ));
        let missing = chunk_id(b"never stored");
        assert!(matches!(
            store.read_chunk(missing),
            Err(StoreError::ChunkMissing(_))
        ));
    }

    #[test]
    fn a_second_open_is_refused_while_the_first_holds_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        match Store::open(dir.path()) {
            Err(StoreError::InUse { holder, .. }) => {
                assert_eq!(holder, std::process::id().to_string())
            }
            Err(other) => panic!("wrong error: {other}"),
            Ok(_) => panic!("second open succeeded"),
        }
    }

    #[test]
    fn foreign_and_newer_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), "hi").unwrap();
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::NotAStore { .. })
        ));
        let newer = tempfile::tempdir().unwrap();
        std::fs::write(newer.path().join("CKPTFS"), "ckptfs store format 99\n").unwrap();
        assert!(matches!(
            Store::open(newer.path()),
            Err(StoreError::NewerFormat { found: 99, .. })
        ));
    }
}
