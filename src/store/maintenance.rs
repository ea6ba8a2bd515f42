//! What garbage collection needs from the store: enumerating manifests and
//! chunks, deleting them, and compacting so that space returns to the disk.

use rocksdb::WriteBatch;

use super::schema::{
    chunk_key, chunk_shard, split_pair_key, CF_CHUNK_INDEX, CF_MANIFESTS, CF_META, CHUNK_SHARDS,
    META_COMPACTION_PENDING,
};
use super::{Result, Store, StoreError, Txn};
use crate::ids::{ChunkId, ManifestId};

/// A chunk as the index describes it.
#[derive(Clone, Copy, Debug)]
pub struct IndexedChunk {
    /// Its id.
    pub id: ChunkId,
    /// Raw length.
    pub raw_len: u32,
    /// Length as stored.
    pub stored_len: u32,
    /// Where its record is, when it is in a pack.
    pub(crate) packed: Option<super::packs::PackLocation>,
}

impl Store {
    /// The next general id: every manifest created from now on has an id
    /// at or above it.
    pub fn id_watermark(&self) -> Result<u64> {
        self.alloc_id()
    }

    /// Calls `f(id)` once per manifest that has segments, in id order.
    pub fn for_each_manifest_id(&self, mut f: impl FnMut(ManifestId) -> Result<()>) -> Result<()> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_MANIFESTS));
        it.seek_to_first();
        while let Some(key) = it.key() {
            let (id, _) =
                split_pair_key(key).ok_or_else(|| StoreError::Corrupt("manifest key".into()))?;
            f(ManifestId(id))?;
            // Skip the rest of this manifest's segments.
            it.seek(super::schema::manifest_key(
                ManifestId(id.saturating_add(1)),
                0,
            ));
        }
        it.status().map_err(StoreError::from)
    }

    /// Calls `f` for every chunk in the index.
    pub fn for_each_chunk(&self, mut f: impl FnMut(IndexedChunk) -> Result<()>) -> Result<()> {
        let mut read = rocksdb::ReadOptions::default();
        read.set_total_order_seek(true);
        let mut it = self.db.raw_iterator_cf_opt(self.cf(CF_CHUNK_INDEX), read);
        it.seek_to_first();
        while let (Some(key), Some(value)) = (it.key(), it.value()) {
            let id = ChunkId::from_slice(key)
                .ok_or_else(|| StoreError::Corrupt("chunk index key".into()))?;
            let entry = super::chunks::IndexEntry::decode(value)?;
            f(IndexedChunk {
                id,
                raw_len: entry.raw_len,
                stored_len: entry.stored_len,
                packed: entry.packed,
            })?;
            it.next();
        }
        it.status().map_err(StoreError::from)
    }

    /// Deletes chunks (value or pack record, and index entry), as
    /// [`Store::for_each_chunk`] described them. The index deletions are
    /// made durable before the pack records are punched, so a crash can
    /// never leave an index entry over a punched record.
    pub fn delete_chunks(&self, chunks: &[IndexedChunk]) -> Result<()> {
        let mut batch = WriteBatch::default();
        let mut punched = Vec::new();
        for c in chunks {
            let key = chunk_key(c.id);
            punched.extend(c.packed);
            batch.delete_cf(self.cf(chunk_shard(c.id)), key);
            batch.delete_cf(self.cf(CF_CHUNK_INDEX), key);
        }
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(!punched.is_empty());
        self.db.write_opt(batch, &wo)?;
        self.packs.punch(&punched)
    }

    /// Deletes the pack files left without a live record (and their
    /// recorded lengths); returns how many and the bytes they took.
    pub fn remove_dead_packs(&self) -> Result<(u64, u64)> {
        // Packs rotated out before this call have every record indexed,
        // and the scan below starts after it.
        let appending = self.packs.appending();
        // Then the packs of moves not indexed yet: a move leaves this list
        // only after its index entry is written, so the scan sees it.
        let mut live: std::collections::HashSet<u32> =
            self.relocations.target_packs().into_iter().collect();
        self.for_each_chunk(|c| {
            live.extend(c.packed.map(|loc| loc.pack));
            Ok(())
        })?;
        let removed = self.packs.remove_dead(&live, &appending)?;
        let mut batch = WriteBatch::default();
        for (id, _) in &removed {
            batch.delete_cf(self.cf(CF_META), super::schema::pack_len_key(*id));
        }
        self.db.write(batch)?;
        Ok((
            removed.len() as u64,
            removed.iter().map(|(_, bytes)| bytes).sum(),
        ))
    }

    /// Deletes manifests (all their segments) in one batch.
    pub fn delete_manifests(&self, ids: &[ManifestId]) -> Result<()> {
        let mut txn: Txn<'_> = self.txn();
        for id in ids {
            txn.delete_manifest(*id);
        }
        self.commit(txn, false)
    }

    /// True when a GC deleted chunks but did not finish compacting (it
    /// was killed): the next GC compacts even if it deletes nothing.
    pub fn compaction_pending(&self) -> Result<bool> {
        Ok(self
            .db
            .get_cf(self.cf(CF_META), META_COMPACTION_PENDING)?
            .is_some())
    }

    /// Sets or clears the compaction-pending mark (durably).
    pub fn set_compaction_pending(&self, pending: bool) -> Result<()> {
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        if pending {
            self.db
                .put_cf_opt(self.cf(CF_META), META_COMPACTION_PENDING, [1u8], &wo)?;
        } else {
            self.db
                .delete_cf_opt(self.cf(CF_META), META_COMPACTION_PENDING, &wo)?;
        }
        Ok(())
    }

    /// Leaves the database settled for a clean stop: records moves left
    /// behind punched and unlisted, memtables flushed (so
    /// the next start replays no WAL) and pending compactions done (so no
    /// compaction input lingers next to its output), waiting at most
    /// `timeout`.
    pub fn settle(&self, timeout: std::time::Duration) -> Result<()> {
        self.finish_freeing()?;
        let mut opts = rocksdb::WaitForCompactOptions::default();
        opts.set_flush(true);
        opts.set_abort_on_pause(true);
        opts.set_timeout(timeout.as_micros() as u64);
        self.db.wait_for_compact(&opts)?;
        Ok(())
    }

    /// Estimated number of chunks (RocksDB's key estimate).
    pub fn chunk_count_estimate(&self) -> Result<u64> {
        Ok(self
            .db
            .property_int_value_cf(self.cf(CF_CHUNK_INDEX), "rocksdb.estimate-num-keys")?
            .unwrap_or(0))
    }

    /// Bytes the store directory takes on disk (allocated blocks of every
    /// file: SST and blob files, the WAL, staging files), as `du` counts.
    pub fn disk_usage(&self) -> Result<u64> {
        fn walk(dir: &std::path::Path) -> std::io::Result<u64> {
            use std::os::unix::fs::MetadataExt;
            let mut total = 0;
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                let meta = entry.metadata()?;
                total += if meta.is_dir() {
                    walk(&entry.path())?
                } else {
                    meta.blocks() * 512
                };
            }
            Ok(total)
        }
        walk(self.root()).map_err(|e| StoreError::io(self.root(), e))
    }

    /// Compacts the chunk column families so deleted chunks leave the disk.
    /// Blob files whose blobs are all deleted go in any case; with
    /// `relocate`, live blobs are also moved out of files that hold
    /// garbage (every live chunk is rewritten once).
    pub fn compact_chunks(&self, relocate: bool) -> Result<()> {
        for name in CHUNK_SHARDS {
            let cf = self.cf(name);
            if relocate {
                self.db.set_options_cf(
                    cf,
                    &[
                        ("enable_blob_garbage_collection", "true"),
                        ("blob_garbage_collection_age_cutoff", "1.0"),
                    ],
                )?;
            }
            self.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
            if relocate {
                self.db
                    .set_options_cf(cf, &[("enable_blob_garbage_collection", "false")])?;
            }
        }
        for name in [CF_CHUNK_INDEX, CF_MANIFESTS, super::schema::CF_SNAP_TREE] {
            self.db
                .compact_range_cf(self.cf(name), None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }
}
