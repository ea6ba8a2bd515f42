//! The list of pack records that were indexed before their pack was
//! synced: what the open after a crash must check, without walking the
//! whole chunk index.
//!
//! A chunk's index entry is written as soon as its record is appended to a
//! pack, before the pack is synced (`chunks.rs`). After a crash, every
//! entry that puts its record past the pack's durable length must be
//! checked or dropped (`Store::recover_packs`). Finding them by walking the
//! index cost about half a microsecond per stored chunk (measured with
//! warm index blocks): half a minute per TiB of 16 KiB chunks. So the entries of each batch of records appended side by
//! side are also listed in the `unsynced` column family (`pack ++ offset`
//! of the first record → their chunk ids) by the batch that writes them
//! (one key per batch, about 256 KiB of records), and each sync
//! drops the listing of every record it made durable with one range
//! deletion per pack. Nothing reads this column family but the open after
//! a crash, so its range tombstones cost no lookup anything.
//!
//! Stores made before format 3 have no list: their first open that needs
//! the check walks the index once, and the batch that ends it marks the
//! store as listed (`format` in `meta`).

use std::collections::{HashMap, HashSet};

use rocksdb::WriteBatch;

use super::maintenance::IndexedChunk;
use super::packs::PackLocation;
use super::schema::{
    chunk_key, pack_len_key, unsynced_key, CF_CHUNK_INDEX, CF_META, CF_UNSYNCED, META_FORMAT,
};
use super::{Result, Store, StoreError, FORMAT_VERSION};
use crate::ids::ChunkId;

/// The first `format` in `meta` whose stores list their unsynced records.
const LISTED_SINCE_FORMAT: u32 = 3;

impl Store {
    /// After a crash, when commits were made without a sync
    /// (`unsynced_commits`): checks every record an index entry puts past
    /// the durable end of a pack (found in the list this module keeps)
    /// against its id. Records that read back
    /// whole (all of them after a crash of the daemon alone) are synced and
    /// made durable; the index entries of the others are deleted, durably,
    /// and their ids returned, for [`Store::recover_pending`]. Without such
    /// commits no commit names those records: their entries are deleted
    /// unread. Then the packs are cut back past their last good record.
    /// Runs at open (also when no pack is longer than its recorded length:
    /// a power loss may have cut one back to it, and the pending commits
    /// must learn what they lost); a crash in between leaves the same work
    /// for the next open.
    pub(crate) fn recover_packs(&mut self, unsynced_commits: bool) -> Result<HashSet<ChunkId>> {
        let mut lost = HashSet::new();
        let needed = self.packs.has_leftovers() || unsynced_commits;
        let listed = self.unsynced_are_listed()?;
        let unsynced = match (listed, needed) {
            (true, _) => self.listed_unsynced()?,
            (false, true) => self.walk_unsynced()?,
            (false, false) => Vec::new(),
        };
        if !needed && unsynced.is_empty() && listed {
            return Ok(lost);
        }
        let mut batch = WriteBatch::default();
        let mut good_ends: HashMap<u32, u64> = HashMap::new();
        let checked = unsynced.len();
        for c in unsynced {
            let Some(loc) = c.packed else { continue };
            let whole = unsynced_commits
                && self
                    .read_record(c.id, loc)
                    .map_err(|e| {
                        log::debug!(
                            "{}: chunk {} in pack {} lost in a crash: {e}",
                            self.root().display(),
                            c.id,
                            loc.pack
                        )
                    })
                    .is_ok();
            if whole {
                let end = good_ends.entry(loc.pack).or_default();
                *end = (*end).max(loc.end());
            } else {
                batch.delete_cf(self.cf(CF_CHUNK_INDEX), chunk_key(c.id));
                lost.insert(c.id);
            }
        }
        for (&pack, &end) in &good_ends {
            self.packs.sync_pack(pack)?;
            log::debug!(
                "{}: pack {pack:08x} durable up to {end} bytes",
                self.root().display()
            );
            batch.put_cf(self.cf(CF_META), pack_len_key(pack), end.to_le_bytes());
        }
        // The checked records are now durable or unindexed.
        self.reset_unsynced(&mut batch);
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo)?;
        for (pack, end) in good_ends {
            self.packs.extend_durable(pack, end);
        }
        let level = if lost.is_empty() {
            log::Level::Info
        } else {
            log::Level::Warn
        };
        if unsynced_commits {
            log::log!(
                level,
                "{}: checked the chunks written after the last sync: {} whole, {} lost",
                self.root().display(),
                checked - lost.len(),
                lost.len()
            );
        } else if checked > 0 {
            log::info!(
                "{}: dropped {checked} index entries of chunks no commit names",
                self.root().display()
            );
        }
        self.packs.cut_leftovers()?;
        Ok(lost)
    }

    /// Lists records just appended side by side to one pack (`indexed`,
    /// in pack order), in the batch that indexes them: one key for all,
    /// at the first one's offset, holding their ids.
    pub(super) fn list_unsynced(
        &self,
        batch: &mut WriteBatch,
        indexed: &[(ChunkId, PackLocation)],
    ) {
        let Some(&(_, first)) = indexed.first() else {
            return;
        };
        let ids: Vec<u8> = indexed.iter().flat_map(|(id, _)| id.to_bytes()).collect();
        batch.put_cf(
            self.cf(CF_UNSYNCED),
            unsynced_key(first.pack, first.offset),
            ids,
        );
    }

    /// Unlists every record of `pack` below `durable_len`, in the batch
    /// that records that length.
    pub(super) fn unlist_synced(&self, batch: &mut WriteBatch, pack: u32, durable_len: u64) {
        batch.delete_range_cf(
            self.cf(CF_UNSYNCED),
            unsynced_key(pack, 0),
            unsynced_key(pack, durable_len),
        );
    }

    /// Unlists every record and marks the store as listed, in the batch
    /// that ends a recovery.
    pub(super) fn reset_unsynced(&self, batch: &mut WriteBatch) {
        batch.delete_range_cf(
            self.cf(CF_UNSYNCED),
            unsynced_key(0, 0),
            unsynced_key(u32::MAX, u64::MAX),
        );
        batch.put_cf(self.cf(CF_META), META_FORMAT, FORMAT_VERSION.to_le_bytes());
    }

    /// True when every record indexed before its pack was synced is
    /// listed (the store was made, or last recovered, by a format-3 build).
    pub(super) fn unsynced_are_listed(&self) -> Result<bool> {
        let Some(v) = self.db.get_cf(self.cf(CF_META), META_FORMAT)? else {
            return Ok(false);
        };
        let bytes: [u8; 4] = v
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::Corrupt("the store's format key".into()))?;
        Ok(u32::from_le_bytes(bytes) >= LISTED_SINCE_FORMAT)
    }

    /// The listed records that their index entry still puts in the pack
    /// they were listed in, past its durable length, in list order.
    pub(super) fn listed_unsynced(&self) -> Result<Vec<IndexedChunk>> {
        let mut found = Vec::new();
        let mut it = self.db.raw_iterator_cf(self.cf(CF_UNSYNCED));
        it.seek_to_first();
        while let (Some(key), Some(value)) = (it.key(), it.value()) {
            let pack = key.get(..4).and_then(|p| p.try_into().ok());
            let (Some(pack), 0) = (pack.map(u32::from_be_bytes), value.len() % 16) else {
                return Err(StoreError::Corrupt(format!(
                    "unsynced record list entry {key:02x?}"
                )));
            };
            for id in value.chunks_exact(16).filter_map(ChunkId::from_slice) {
                found.extend(self.unsynced_entry(id, pack)?);
            }
            it.next();
        }
        it.status()?;
        Ok(found)
    }

    /// The chunk `id`, when its index entry still puts it in `pack`, past
    /// the pack's durable length. A listed record may since have been
    /// deleted (GC) or moved (relocation, to a durable record).
    fn unsynced_entry(&self, id: ChunkId, pack: u32) -> Result<Option<IndexedChunk>> {
        let Some(entry) = self.any_index_entry(id)? else {
            return Ok(None);
        };
        let here = entry
            .packed
            .filter(|loc| loc.pack == pack && !self.packs.is_durable(*loc));
        Ok(here.map(|loc| IndexedChunk {
            id,
            raw_len: entry.raw_len,
            stored_len: entry.stored_len,
            packed: Some(loc),
        }))
    }

    /// Every index entry that puts its record past its pack's durable
    /// length, by walking the whole index: for stores not listed yet.
    pub(super) fn walk_unsynced(&self) -> Result<Vec<IndexedChunk>> {
        let mut found = Vec::new();
        self.for_each_chunk(|c| {
            if c.packed.is_some_and(|loc| !self.packs.is_durable(loc)) {
                found.push(c);
            }
            Ok(())
        })?;
        Ok(found)
    }
}

#[cfg(test)]
#[path = "unsynced_tests.rs"]
mod tests;
