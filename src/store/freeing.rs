//! Freeing the pack records that moves leave behind (`relocate.rs`), off
//! the commit path and without losing track of them in a crash.
//!
//! The batch that moves chunks' index entries away from their old records
//! also lists those records under `meta` keys `free/<pack><offset>`. A
//! thread punches them ([`Freer`]: one `fallocate` per stretch costs about
//! 0.2 ms on ext4, and a sparse save leaves thousands); the keys of what it
//! punched are deleted by the next `persist_chunks` or a clean stop. Any
//! key still there at open (a crash came between the move and its punch)
//! is punched then. A listed record is dead for good: packs are append
//! only and no index entry ever points back to an old record, so punching
//! one twice is harmless. Keys are cleared, synced, at open before any new
//! pack is made, so a pack number freed by GC and reused after a restart
//! can never be punched by a stale key.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{unbounded, Sender};
use parking_lot::Mutex;
use rocksdb::WriteBatch;

use super::open::for_each_meta;
use super::packs::{DeadStretches, PackLocation};
use super::schema::{CF_META, META_FREE_PREFIX};
use super::{Result, Store};

/// `meta` key listing a record to be punched.
pub(crate) fn free_key(loc: PackLocation) -> Vec<u8> {
    let mut k = META_FREE_PREFIX.to_vec();
    k.extend_from_slice(&loc.pack.to_be_bytes());
    k.extend_from_slice(&loc.offset.to_be_bytes());
    k
}

/// The record a `free/` key (without its prefix) and value name.
fn parse_free(rest: &[u8], value: &[u8]) -> Option<PackLocation> {
    let (pack, offset) = rest.split_at_checked(4)?;
    Some(PackLocation {
        pack: u32::from_be_bytes(pack.try_into().ok()?),
        offset: u64::from_be_bytes(offset.try_into().ok()?),
        len: u32::from_le_bytes(value.try_into().ok()?),
    })
}

/// Adds to `batch` the listing of `records`, to be punched.
pub(crate) fn list_to_free(store: &Store, batch: &mut WriteBatch, records: &[PackLocation]) {
    for &loc in records {
        batch.put_cf(store.cf(CF_META), free_key(loc), loc.len.to_le_bytes());
    }
}

/// Work for the freeing thread: stretches to punch, and the records they
/// cover (whose keys go once they are punched).
type Work = (Vec<DeadStretches>, Vec<PackLocation>);

/// The thread that punches freed records, started on first use.
/// [`Freer::flush`] (and dropping it) waits for the work sent, so a clean
/// unmount leaves nothing unpunched.
#[derive(Default)]
pub(crate) struct Freer {
    running: Mutex<Option<(Sender<Work>, JoinHandle<()>)>>,
    /// Records punched whose keys are not deleted yet.
    punched: Arc<Mutex<Vec<PackLocation>>>,
    /// Tests: drop the work, as a crash before the punch would.
    #[cfg(test)]
    pub dropping: std::sync::atomic::AtomicBool,
}

impl Freer {
    /// Hands `stretches` (covering `records`) to the thread, or punches
    /// them here if it cannot be started.
    pub fn free(&self, stretches: Vec<DeadStretches>, records: Vec<PackLocation>) {
        #[cfg(test)]
        if self.dropping.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        if records.is_empty() {
            return;
        }
        let mut running = self.running.lock();
        if running.is_none() {
            let (tx, rx) = unbounded::<Work>();
            let punched = self.punched.clone();
            let spawned = std::thread::Builder::new()
                .name("ckptfs-free".into())
                .spawn(move || {
                    for (stretches, records) in rx {
                        punch_all(&stretches, records, &punched);
                    }
                });
            match spawned {
                Ok(thread) => *running = Some((tx, thread)),
                Err(e) => log::warn!("no thread to free moved records ({e}); freeing inline"),
            }
        }
        match running.as_ref() {
            Some((tx, _)) => {
                if let Err(unsent) = tx.send((stretches, records)) {
                    let (stretches, records) = unsent.0;
                    punch_all(&stretches, records, &self.punched);
                }
            }
            None => punch_all(&stretches, records, &self.punched),
        }
    }

    /// Waits until everything handed over so far is punched: ends the
    /// thread (the next `free` starts another).
    pub fn flush(&self) {
        let taken = self.running.lock().take();
        if let Some((tx, thread)) = taken {
            drop(tx);
            let _ = thread.join();
        }
    }

    /// Records punched since the last call: their keys can go.
    pub fn take_punched(&self) -> Vec<PackLocation> {
        std::mem::take(&mut *self.punched.lock())
    }
}

impl Drop for Freer {
    fn drop(&mut self) {
        self.flush();
    }
}

fn punch_all(
    stretches: &[DeadStretches],
    records: Vec<PackLocation>,
    punched: &Mutex<Vec<PackLocation>>,
) {
    for s in stretches {
        if let Err(e) = s.punch() {
            // The moves stand; the records stay listed and are tried again
            // at the next open.
            log::warn!("could not free moved records: {e}");
            return;
        }
    }
    punched.lock().extend(records);
}

impl Store {
    /// Adds to `batch` the deletion of the keys of records punched so far.
    pub(crate) fn unlist_punched(&self, batch: &mut WriteBatch) {
        for loc in self.relocations.freer.take_punched() {
            batch.delete_cf(self.cf(CF_META), free_key(loc));
        }
    }

    /// Punches the records a move left listed (a crash came before they
    /// were punched) and deletes their keys, durably. Runs at open. Only
    /// space is at stake, so nothing here keeps a store from opening: a
    /// damaged key is dropped, and records that cannot be punched stay
    /// listed for the next open.
    pub(crate) fn free_listed_records(&self) -> Result<()> {
        let mut listed = Vec::new();
        let mut damaged = Vec::new();
        for_each_meta(&self.db, META_FREE_PREFIX, |rest, value| {
            match parse_free(rest, value) {
                Some(loc) => listed.push(loc),
                None => damaged.push([META_FREE_PREFIX, rest].concat()),
            }
            Ok(())
        })?;
        let mut batch = WriteBatch::default();
        for key in &damaged {
            log::warn!(
                "{}: dropping a damaged record-to-free key {key:02x?}",
                self.root().display()
            );
            batch.delete_cf(self.cf(CF_META), key);
        }
        let punched = match self.punch_listed(&listed) {
            Ok(()) => listed.len(),
            Err(e) => {
                log::warn!(
                    "{}: could not free {} records left behind by moves ({e}); trying again at the next open",
                    self.root().display(),
                    listed.len()
                );
                0
            }
        };
        if punched > 0 {
            for &loc in &listed {
                batch.delete_cf(self.cf(CF_META), free_key(loc));
            }
            log::info!(
                "{}: freed {punched} records left behind by moves",
                self.root().display()
            );
        }
        if !batch.is_empty() {
            let mut wo = rocksdb::WriteOptions::default();
            wo.set_sync(true);
            self.db.write_opt(batch, &wo)?;
        }
        Ok(())
    }

    fn punch_listed(&self, listed: &[PackLocation]) -> Result<()> {
        for stretches in self.packs.dead_stretches(listed)? {
            stretches.punch()?;
        }
        Ok(())
    }

    /// Waits for the freeing thread and deletes the keys of what it
    /// punched (a clean stop; otherwise the next open punches them again).
    pub(crate) fn finish_freeing(&self) -> Result<()> {
        self.relocations.freer.flush();
        let mut batch = WriteBatch::default();
        self.unlist_punched(&mut batch);
        if !batch.is_empty() {
            self.db.write(batch)?;
        }
        Ok(())
    }

    /// Records listed to be punched now (tests).
    #[cfg(test)]
    pub(crate) fn listed_records(&self) -> usize {
        let mut n = 0;
        for_each_meta(&self.db, META_FREE_PREFIX, |_, _| {
            n += 1;
            Ok(())
        })
        .unwrap();
        n
    }
}

#[cfg(test)]
mod tests {
    use super::super::relocate::tests::{location, pack_bytes, store_then_move};
    use super::*;
    use crate::chunk::testdata::noise;
    use crate::ids::ChunkId;
    use std::sync::atomic::Ordering;

    /// Stores `old` durably, then moves it next to a new chunk in a pack
    /// of `stream`, durably; returns its id and where it was.
    fn move_one(store: &Store, old: &[u8], stream: u64) -> (ChunkId, PackLocation) {
        let (id, from, _) = store_then_move(store, old, stream);
        store.persist_chunks().unwrap();
        assert_ne!(location(store, id), from, "moved");
        (id, from)
    }

    #[test]
    fn a_record_a_crash_kept_from_its_punch_is_punched_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let old = noise(40_000, 1);
        let (id, from) = {
            let store = Store::open(dir.path()).unwrap();
            store
                .relocations
                .freer
                .dropping
                .store(true, Ordering::Relaxed);
            let (id, from) = move_one(&store, &old, 2);
            assert_eq!(store.listed_records(), 1);
            (id, from)
            // Dropped without punching: the crash.
        };
        let store = Store::open(dir.path()).unwrap();
        assert!(
            pack_bytes(&store, from).iter().all(|&b| b == 0),
            "the old record is punched at open"
        );
        assert_eq!(store.listed_records(), 0, "and no longer listed");
        assert_eq!(&*store.read_chunk(id).unwrap(), &old[..]);
    }

    #[test]
    fn punched_records_are_unlisted_by_the_next_persist_and_by_a_clean_stop() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (id, from) = move_one(&store, &noise(40_000, 2), 2);
        store.wait_for_freed_records();
        assert!(pack_bytes(&store, from).iter().all(|&b| b == 0));
        assert_eq!(store.listed_records(), 1, "punched, not unlisted yet");
        store.persist_chunks().unwrap();
        assert_eq!(store.listed_records(), 0);

        move_one(&store, &noise(40_000, 3), 3);
        store.settle(std::time::Duration::from_secs(10)).unwrap();
        assert_eq!(store.listed_records(), 0, "a clean stop unlists");
        assert_eq!(store.read_chunk(id).unwrap().len(), 40_000);
    }

    #[test]
    fn keys_round_trip_and_damaged_ones_are_refused() {
        let loc = PackLocation {
            pack: 7,
            offset: 1 << 40,
            len: 16_421,
        };
        let key = free_key(loc);
        let rest = &key[META_FREE_PREFIX.len()..];
        assert_eq!(parse_free(rest, &loc.len.to_le_bytes()), Some(loc));
        assert_eq!(parse_free(b"abc", &[0; 4]), None);
        assert_eq!(parse_free(rest, &[0; 3]), None);
    }

    #[test]
    fn a_store_opens_over_damaged_keys_and_records_of_packs_gone_and_drops_them() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let gone = PackLocation {
                pack: 999,
                offset: 4096,
                len: 100,
            };
            let mut batch = WriteBatch::default();
            list_to_free(&store, &mut batch, &[gone]);
            batch.put_cf(store.cf(CF_META), b"free/bad", b"x");
            store.db.write(batch).unwrap();
            assert_eq!(store.listed_records(), 2);
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.listed_records(), 0);
    }
}
