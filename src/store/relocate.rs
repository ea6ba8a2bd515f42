//! Relocation of scattered duplicates (what deduplicating backup stores
//! call "capping"): a save's unchanged chunks that sit in short stretches
//! of older packs, between its changed chunks, are written again next to
//! the save's new chunks, and their old records are freed. The newest
//! version then reads back in long runs instead of one small read per
//! surviving chunk; the disk holds one copy either way. Older versions read
//! those chunks from the newer pack.
//!
//! Which chunks move is decided per chunk batch by [`scattered`], a pure
//! function of where the batch's chunks are. A move is safe against crashes
//! and against concurrent readers:
//!
//! 1. the chunk's record is appended to the save's pack like a new chunk's,
//!    but its index entry is left alone: the move waits in [`Relocations`];
//! 2. [`Store::persist_chunks`] takes the moves waiting when it starts,
//!    syncs the packs (which then hold their records for good), and writes
//!    their index entries with the packs' durable lengths, synced;
//! 3. only then is the old record punched, by a thread of its own (so a
//!    commit does not wait for it). A reader that looked the chunk up just
//!    before reads a hole there, fails the hash check, and reads it again
//!    where the index now says (`chunk_reads.rs`).
//!
//! A crash before step 2 leaves the old entry in force (the new record is
//! cut off at open); a crash between 2 and 3 leaves the old record listed
//! in the store, and the next open punches it (`freeing.rs`). Neither
//! costs data.

use parking_lot::Mutex;
use rocksdb::WriteBatch;

use super::chunks::IndexEntry;
use super::freeing::{list_to_free, Freer};
use super::packs::PackLocation;
use super::schema::{chunk_key, CF_CHUNK_INDEX};
use super::{Result, Store};
use crate::ids::{ChunkId, IdMap};

/// Where a chunk of a batch stands before the batch is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Not stored yet: it goes to the batch's pack.
    New,
    /// Stored already, in this pack record.
    Packed(PackLocation),
    /// Anything else: a hole, or a chunk kept outside packs.
    Elsewhere,
}

/// Which chunks of a batch (given in file order) to write again: those
/// stored in a stretch of neighbouring records of one pack that holds
/// fewer than `below` bytes, when the batch also stores new chunks. A batch
/// of duplicates only (an unchanged file, a copy) moves nothing, and long
/// unchanged stretches stay where they are, as does every stretch with a
/// chunk in `pinned`: the submitter knows it lies in a run of at least
/// `below` bytes that the batch's edge cut short.
pub fn scattered(batch: &[Placement], pinned: &[bool], below: u64) -> Vec<bool> {
    let mut moved = vec![false; batch.len()];
    if below == 0 || !batch.contains(&Placement::New) {
        return moved;
    }
    let mut start = 0;
    while start < batch.len() {
        let Placement::Packed(first) = batch[start] else {
            start += 1;
            continue;
        };
        let (mut end, mut last, mut bytes) = (start + 1, first, first.len as u64);
        while let Some(&Placement::Packed(next)) = batch.get(end) {
            if next.pack != last.pack || next.offset != last.end() {
                break;
            }
            bytes += next.len as u64;
            last = next;
            end += 1;
        }
        let pinned = pinned.get(start..end).is_some_and(|p| p.contains(&true));
        if bytes < below && !pinned {
            moved[start..end].fill(true);
        }
        start = end;
    }
    moved
}

/// A chunk written again, waiting for its index entry to move.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Relocation {
    pub id: ChunkId,
    pub raw_len: u32,
    pub stored_len: u32,
    /// The record the index names now.
    pub from: PackLocation,
    /// The record just appended.
    pub to: PackLocation,
}

impl Relocation {
    /// The index entry the move gives its chunk.
    fn entry(&self) -> IndexEntry {
        IndexEntry {
            raw_len: self.raw_len,
            stored_len: self.stored_len,
            packed: Some(self.to),
        }
    }
}

/// Moves appended but not yet in the index, in the order they were made,
/// with where each chunk's latest of them put it.
#[derive(Default)]
struct Pending {
    moves: Vec<Relocation>,
    latest: IdMap<Relocation>,
}

/// Moves appended but not yet in the index, and the thread that frees
/// the records of moves made.
#[derive(Default)]
pub(crate) struct Relocations {
    pending: Mutex<Pending>,
    /// One `persist_chunks` applies moves at a time.
    applying: Mutex<()>,
    pub(super) freer: Freer,
}

impl Relocations {
    /// Notes moves whose records were just appended.
    pub fn add(&self, moves: impl IntoIterator<Item = Relocation>) {
        let mut pending = self.pending.lock();
        for m in moves {
            pending.latest.insert(m.id, m);
            pending.moves.push(m);
        }
    }

    /// Puts the chunks of `entries` that a move not applied yet put
    /// elsewhere where that move put them.
    fn apply_latest(&self, ids: &[ChunkId], entries: &mut [Result<Option<IndexEntry>>]) {
        let pending = self.pending.lock();
        if pending.latest.is_empty() {
            return;
        }
        for (id, entry) in ids.iter().zip(entries) {
            if let (Some(m), Ok(Some(found))) = (pending.latest.get(id), entry) {
                if found.packed.is_some() {
                    *found = m.entry();
                }
            }
        }
    }

    /// Forgets the first `n` moves, applied (or found unneeded).
    fn drain_applied(&self, n: usize) {
        let mut pending = self.pending.lock();
        let Pending { moves, latest } = &mut *pending;
        for m in moves.drain(..n) {
            if latest.get(&m.id).is_some_and(|l| l.to == m.to) {
                latest.remove(&m.id);
            }
        }
    }

    /// Packs holding records of moves not applied yet: they are live even
    /// though no index entry names them.
    pub fn target_packs(&self) -> Vec<u32> {
        self.pending
            .lock()
            .moves
            .iter()
            .map(|m| m.to.pack)
            .collect()
    }
}

impl Store {
    /// Chunks of a save found in stretches of older packs shorter than
    /// this many stored bytes are written again next to the save's new
    /// chunks (see [`scattered`]); 0 turns relocation off.
    pub fn set_relocate_below(&self, bytes: u64) {
        self.relocate_below
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Where chunk `id` is stored, as the next save's moves must see it:
    /// its index entry, or the record a move not applied yet put it in.
    /// A save right after another (before the store's next sync applied
    /// the first one's moves) then keeps the chunks the first one moved
    /// next to its own, instead of moving them from their old place again
    /// and losing that race at the sync (the loser's record is freed,
    /// which left holes in the newest save's stretch).
    pub(crate) fn stored_at(&self, id: ChunkId) -> Result<Option<IndexEntry>> {
        let mut entry = [self.index_entry(id)];
        self.relocations.apply_latest(&[id], &mut entry);
        let [entry] = entry;
        entry
    }

    /// Where several chunks are to be read from: their index entries, or
    /// the records moves not applied yet put them in (written, and read
    /// back verified like any record). A save read back before the next
    /// sync then reads its moved chunks in its own stretch, not scattered
    /// over the older packs.
    pub(super) fn read_entries(&self, ids: &[ChunkId]) -> Vec<Result<Option<IndexEntry>>> {
        let mut entries = self.index_entries(ids);
        self.relocations.apply_latest(ids, &mut entries);
        entries
    }

    /// See [`Store::set_relocate_below`].
    pub fn relocate_below(&self) -> u64 {
        self.relocate_below
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Makes every packed chunk written so far durable: syncs the packs
    /// written since the last call and records their lengths (in the WAL,
    /// ahead of the commit that follows), with the index entries of the
    /// chunks moved into them; then frees the records they moved from.
    /// Someone waits for it (a commit that syncs), so from now on appends
    /// start their writeback at once.
    pub fn persist_chunks(&self) -> Result<()> {
        self.packs.set_eager_writeback(true);
        self.sync_packs()
    }

    /// [`Store::persist_chunks`], leaving the writeback mode as it is.
    pub(crate) fn sync_packs(&self) -> Result<()> {
        let _one_at_a_time = self.relocations.applying.lock();
        // Taken before the sync, so every move taken has its record synced.
        let taken = self.relocations.pending.lock().moves.len();
        let synced = self.packs.sync()?;
        let moves: Vec<Relocation> = self.relocations.pending.lock().moves[..taken].to_vec();
        let mut batch = WriteBatch::default();
        for (pack, len) in synced {
            log::debug!(
                "{}: pack {pack:08x} durable up to {len} bytes",
                self.root().display()
            );
            batch.put_cf(
                self.cf(super::schema::CF_META),
                super::schema::pack_len_key(pack),
                len.to_le_bytes(),
            );
            self.unlist_synced(&mut batch, pack, len);
        }
        let (mut freed, mut unused) = (Vec::new(), Vec::new());
        // Where the moves applied so far put their chunks: the index read
        // below does not see this batch. A save that found a chunk where a
        // move not applied yet had put it moves it on from there (two
        // saves in quick succession), so moves are applied in order and
        // each starts from where the one before left the chunk; a move
        // from anywhere else was overtaken and is not needed.
        let mut now_at: IdMap<PackLocation> = IdMap::default();
        let ids: Vec<ChunkId> = moves.iter().map(|m| m.id).collect();
        for (m, found) in moves.iter().zip(self.index_entries(&ids)) {
            let indexed = found?.and_then(|e| e.packed);
            let current = now_at.get(&m.id).copied().or(indexed);
            if current == Some(m.from) {
                batch.put_cf(self.cf(CF_CHUNK_INDEX), chunk_key(m.id), m.entry().encode());
                freed.push(m.from);
                now_at.insert(m.id, m.to);
            } else {
                // Moved or deleted meanwhile: the new record is not needed.
                unused.push(m.to);
            }
        }
        // The records left behind are listed with the moves, and the ones
        // punched since the last call are unlisted.
        let moved = freed.len();
        freed.extend(unused);
        list_to_free(self, &mut batch, &freed);
        self.unlist_punched(&mut batch);
        if !batch.is_empty() {
            let mut wo = rocksdb::WriteOptions::default();
            // The old records are punched next: their moves must be durable.
            wo.set_sync(!freed.is_empty());
            self.db.write_opt(batch, &wo)?;
        }
        self.relocations.drain_applied(taken);
        if !moves.is_empty() {
            log::debug!(
                "{}: moved {moved} chunks next to their new neighbours",
                self.root().display(),
            );
        }
        match self.packs.dead_stretches(&freed) {
            Ok(stretches) => self.relocations.freer.free(stretches, freed),
            // The moves stand; the records stay listed for the next open.
            Err(e) => log::warn!(
                "{}: could not free {} moved records: {e}",
                self.root().display(),
                freed.len()
            ),
        }
        Ok(())
    }

    /// Waits until the records left behind by moves made so far are
    /// punched (they are freed by a thread of their own).
    #[cfg(test)]
    pub fn wait_for_freed_records(&self) {
        self.relocations.freer.flush();
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::chunk::testdata::noise;
    use crate::chunk::{chunk_id, Coder};
    use crate::store::StoreError;
    use Placement::{Elsewhere, New, Packed};

    pub(in crate::store) fn location(store: &Store, id: ChunkId) -> PackLocation {
        store.index_entry(id).unwrap().unwrap().packed.unwrap()
    }

    /// Stores `old` in a pack of stream 1, durably; then appends a new
    /// chunk and `old` moved next to it to a pack of `stream`.
    pub(in crate::store) fn store_then_move(
        store: &Store,
        old: &[u8],
        stream: u64,
    ) -> (ChunkId, PackLocation, ChunkId) {
        let id = chunk_id(old);
        if store.index_entry(id).unwrap().is_none() {
            store.put_chunk(id, old, Some(1)).unwrap();
            store.persist_chunks().unwrap();
        }
        let from = location(store, id);
        let fresh_id = move_from(store, old, stream, from);
        (id, from, fresh_id)
    }

    /// Appends a new chunk and `old`, moved from `from`, next to it to a
    /// pack of `stream`; returns the new chunk's id.
    pub(in crate::store) fn move_from(
        store: &Store,
        old: &[u8],
        stream: u64,
        from: PackLocation,
    ) -> ChunkId {
        let id = chunk_id(old);
        let fresh = noise(30_000, 100 + stream);
        let fresh_id = chunk_id(&fresh);
        let data = [&fresh[..], old].concat();
        let encoded = [
            store.encode_chunk(fresh_id, &data, 0..fresh.len(), &mut Coder::default()),
            store
                .encode_chunk(id, &data, fresh.len()..data.len(), &mut Coder::default())
                .moving_from(from),
        ];
        store.put_packed(stream, &data, &encoded).unwrap();
        fresh_id
    }

    /// Applies the moves made so far (the next sync's work) and waits for
    /// their old records to be freed.
    pub(in crate::store) fn apply_moves(store: &Store) {
        store.persist_chunks().unwrap();
        store.wait_for_freed_records();
    }

    /// Applies the moves made so far; asserts that `id` now sits right
    /// after the new chunk `fresh_id` of the save that moved it, and
    /// returns where.
    fn assert_moved_next_to(store: &Store, id: ChunkId, fresh_id: ChunkId) -> PackLocation {
        apply_moves(store);
        let to = location(store, id);
        let fresh = location(store, fresh_id);
        assert_eq!(to.pack, fresh.pack, "in the pack of the save that moved it");
        assert_eq!(to.offset, fresh.end(), "right after the save's new chunk");
        to
    }

    pub(in crate::store) fn pack_bytes(store: &Store, loc: PackLocation) -> Vec<u8> {
        use std::os::unix::fs::FileExt;
        let path = store.packs_dir().join(format!("{:08x}.pack", loc.pack));
        let mut buf = vec![0u8; loc.len as usize];
        std::fs::File::open(path)
            .unwrap()
            .read_exact_at(&mut buf, loc.offset)
            .unwrap();
        buf
    }

    #[test]
    fn a_move_takes_effect_at_persist_and_then_frees_the_old_record() {
        let dir = tempfile::tempdir().unwrap();
        let old = noise(40_000, 1);
        let (id, from, fresh_id) = {
            let store = Store::open(dir.path()).unwrap();
            let (id, from, fresh_id) = store_then_move(&store, &old, 2);
            assert_eq!(location(&store, id), from, "not moved before persist");
            assert_eq!(&*store.read_chunk(id).unwrap(), &old[..]);
            assert_moved_next_to(&store, id, fresh_id);
            assert!(pack_bytes(&store, from).iter().all(|&b| b == 0), "punched");
            assert_eq!(&*store.read_chunk(id).unwrap(), &old[..]);
            (id, from, fresh_id)
        };
        let store = Store::open(dir.path()).unwrap();
        assert_ne!(location(&store, id), from, "the move is durable");
        assert_eq!(&*store.read_chunk(id).unwrap(), &old[..]);
        assert!(store.has_chunk(fresh_id).unwrap());
    }

    #[test]
    fn a_reader_that_finds_the_old_record_punched_reads_where_the_chunk_moved() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let old = noise(40_000, 7);
        // The reader looked the chunk up here, then the move was applied.
        let (id, looked_up, _) = store_then_move(&store, &old, 2);
        apply_moves(&store);
        assert!(matches!(
            store.read_record(id, looked_up),
            Err(StoreError::ChunkCorrupt(_))
        ));
        let read = store.retry_if_moved(id, looked_up, |loc| store.read_record(id, loc));
        assert_eq!(&*read.unwrap(), &old[..]);
    }

    #[test]
    fn a_move_never_persisted_leaves_the_chunk_where_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let old = noise(40_000, 3);
        let (id, from) = {
            let store = Store::open(dir.path()).unwrap();
            let (id, from, _) = store_then_move(&store, &old, 2);
            (id, from) // the process dies before the next commit
        };
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(location(&store, id), from);
        assert_eq!(&*store.read_chunk(id).unwrap(), &old[..]);
    }

    #[test]
    fn of_two_moves_of_one_chunk_the_first_wins_and_the_second_record_is_freed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let old = noise(40_000, 5);
        let (id, from, _) = store_then_move(&store, &old, 2);
        let (_, from_again, _) = store_then_move(&store, &old, 3);
        assert_eq!(from, from_again, "both moves start from the same record");
        let second_to = store.relocations.pending.lock().moves[1].to;
        apply_moves(&store);
        let to = location(&store, id);
        assert_ne!(to, from);
        assert_ne!(to, second_to);
        assert!(pack_bytes(&store, second_to).iter().all(|&b| b == 0));
        assert_eq!(&*store.read_chunk(id).unwrap(), &old[..]);
        assert!(store.relocations.pending.lock().moves.is_empty());
        assert!(store.relocations.pending.lock().latest.is_empty());
    }

    #[test]
    fn a_save_before_the_sync_moves_a_chunk_on_from_where_the_last_move_put_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let old = noise(40_000, 6);
        let (id, from, _) = store_then_move(&store, &old, 2);
        // The next save looks the chunk up before any sync: it sees the
        // record the first move appended, and moves it on from there.
        let first_to = store.stored_at(id).unwrap().unwrap().packed.unwrap();
        assert_ne!(first_to, from, "the pending move is what a save sees");
        assert_eq!(location(&store, id), from, "the index is not moved yet");
        let second_fresh = move_from(&store, &old, 3, first_to);
        let to = assert_moved_next_to(&store, id, second_fresh);
        for left in [from, first_to] {
            assert!(pack_bytes(&store, left).iter().all(|&b| b == 0), "freed");
        }
        assert!(pack_bytes(&store, to).iter().any(|&b| b != 0), "kept");
        assert_eq!(&*store.read_chunk(id).unwrap(), &old[..]);
        assert_eq!(store.stored_at(id).unwrap().unwrap().packed, Some(to));
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(location(&store, id), to, "durable");
        assert_eq!(&*store.read_chunk(id).unwrap(), &old[..]);
    }

    fn at(pack: u32, offset: u64, len: u32) -> Placement {
        Packed(PackLocation { pack, offset, len })
    }

    #[test]
    fn short_stretches_between_new_chunks_move_and_long_ones_stay() {
        let batch = [
            New,
            at(1, 0, 100),
            at(1, 100, 100), // same stretch: 200 bytes
            New,
            at(1, 1000, 100),
            at(2, 1100, 100), // another pack: a stretch of its own
            Elsewhere,
            at(3, 0, 500), // 500 bytes: long enough to stay
            at(3, 500, 500),
        ];
        let moved = scattered(&batch, &[], 300);
        assert_eq!(
            moved,
            [false, true, true, false, true, true, false, false, false]
        );
    }

    #[test]
    fn batches_without_new_chunks_and_a_zero_limit_move_nothing() {
        let duplicates = [at(1, 0, 100), at(7, 0, 100), Elsewhere];
        assert_eq!(scattered(&duplicates, &[], 1 << 20), [false; 3]);
        let mixed = [New, at(1, 0, 100)];
        assert_eq!(scattered(&mixed, &[], 0), [false; 2]);
        assert_eq!(scattered(&mixed, &[], 101), [false, true]);
        assert_eq!(scattered(&mixed, &[], 100), [false, false]);
    }

    #[test]
    fn records_out_of_order_are_separate_stretches() {
        // Neighbours in the pack, but in the other order in the file.
        let reversed = [New, at(1, 100, 100), at(1, 0, 100)];
        assert_eq!(scattered(&reversed, &[], 150), [false, true, true]);
        let in_order = [New, at(1, 0, 100), at(1, 100, 100)];
        assert_eq!(scattered(&in_order, &[], 150), [false, false, false]);
    }

    #[test]
    fn a_stretch_with_a_pinned_chunk_stays_however_short() {
        // The head of a long unchanged run, cut by the batch's start.
        let batch = [at(1, 900, 100), at(1, 1000, 100), New, at(2, 0, 100), New];
        let pinned = [false, true, false, false, false];
        assert_eq!(
            scattered(&batch, &pinned, 1 << 20),
            [false, false, false, true, false]
        );
    }
}
