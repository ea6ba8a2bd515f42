//! Reading committed content: from a manifest offset to bytes, through a
//! cache of decoded, verified chunks.
//!
//! Every chunk is checked against its id when it is read from the store
//! (`Store::read_chunk`); the cache only ever holds verified bytes.
//!
//! A read fetches the chunks it misses together (`Store::read_chunks`: one
//! `pread` per run of neighbouring pack records), and queues the chunks of
//! the next [`READ_AHEAD`] bytes to a small prefetch pool in batches, so a
//! cold sequential read keeps a few large disk reads in flight instead of
//! one round trip per chunk. The window runs on into the manifest's next
//! segment (segments hold about 20 MB of a file), so a reader never meets
//! a segment's first chunks unfetched. Chunks being fetched are marked in
//! flight; a reader that needs one waits for that fetch instead of
//! starting a second.
//!
//! Fetched chunks wait in a bounded [`ReadAhead`] set until they are read,
//! not in the cache, which would evict them before their first read. A
//! chunk enters the cache, in a buffer of its own, when a read stops
//! inside it (the next read wants the rest); a chunk read to its end is
//! dropped, so a sequential read leaves the cache alone and no cached chunk
//! keeps a run's whole buffer alive.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Sender};
use parking_lot::{Condvar, Mutex};

use quick_cache::sync::Cache;
use quick_cache::Weighter;

use super::read_ahead::ReadAhead;
use crate::ids::{ChunkId, IdSet, ManifestId};
use crate::store::manifest::Entry;
use crate::store::{ChunkBytes, Store, StoreError};

/// A decoded manifest segment with the end offset of every entry.
pub struct Segment {
    manifest: ManifestId,
    start: u64,
    ends: Vec<u64>,
    entries: Vec<Entry>,
}

impl Segment {
    fn new(manifest: ManifestId, start: u64, entries: Vec<Entry>) -> Self {
        let mut at = start;
        let ends = entries
            .iter()
            .map(|e| {
                at += e.len();
                at
            })
            .collect();
        Segment {
            manifest,
            start,
            ends,
            entries,
        }
    }

    fn end(&self) -> u64 {
        self.ends.last().copied().unwrap_or(self.start)
    }

    fn covers(&self, manifest: ManifestId, offset: u64) -> bool {
        self.manifest == manifest && offset >= self.start && offset < self.end()
    }

    /// The first entry, from `i` on, that a reader whose chunks are queued
    /// for prefetch up to `queued` (manifest, offset) has not queued yet,
    /// for a read-ahead window ending at `end`. A queue mark of another
    /// manifest or past the window (the reader went back) counts for
    /// nothing.
    fn first_unqueued(&self, i: usize, end: u64, queued: Option<(ManifestId, u64)>) -> usize {
        match queued {
            Some((manifest, to)) if manifest == self.manifest && to <= end => {
                i.max(self.ends.partition_point(|&e| e <= to))
            }
            _ => i,
        }
    }

    /// Where the queue stands once the chunks starting before `end` are
    /// queued: the end of the last of them.
    fn queued_end(&self, end: u64) -> u64 {
        let last = self.ends.partition_point(|&e| e < end);
        self.ends.get(last).copied().unwrap_or_else(|| self.end())
    }

    /// Where entry `i` starts (`i` at most the entry count).
    fn start_of(&self, i: usize) -> u64 {
        i.checked_sub(1).map_or(self.start, |prev| self.ends[prev])
    }

    /// Index of the entry holding `offset` and that entry's start.
    fn locate(&self, offset: u64) -> Option<(usize, u64)> {
        let i = self.ends.partition_point(|&end| end <= offset);
        (i < self.entries.len()).then(|| (i, self.start_of(i)))
    }
}

/// A stretch of file content handed out by [`ContentReader::read_pieces`].
enum Piece<'a> {
    Bytes(&'a [u8]),
    Zeros(usize),
}

impl Piece<'_> {
    fn len(&self) -> usize {
        match self {
            Piece::Bytes(bytes) => bytes.len(),
            Piece::Zeros(n) => *n,
        }
    }
}

/// Where a sequential reader left off, kept with its open file.
#[derive(Default)]
pub struct ReadHint {
    /// The segment it read last: saves a segment lookup per read.
    segment: Option<Arc<Segment>>,
    /// The segment after it, once the read-ahead window reached it (none:
    /// the manifest ends there), keyed by where it starts.
    following: Option<(ManifestId, u64, Option<Arc<Segment>>)>,
    /// The manifest offset up to which its chunks were queued for
    /// prefetch: the next read queues only the read-ahead window's new
    /// tail instead of checking every chunk of the window again (576
    /// lookups in three maps per 1 MiB read, a few per cent of a read's
    /// CPU).
    queued_to: Option<(ManifestId, u64)>,
}

#[derive(Clone)]
struct ChunkWeight;

impl Weighter<ChunkId, ChunkBytes> for ChunkWeight {
    fn weight(&self, _key: &ChunkId, val: &ChunkBytes) -> u64 {
        val.len() as u64 + 64
    }
}

type ChunkCache = Cache<ChunkId, ChunkBytes, ChunkWeight>;

/// Bytes beyond a read whose chunks are prefetched.
pub const READ_AHEAD: u64 = 8 << 20;
/// File bytes per prefetch batch.
const PREFETCH_BATCH: u64 = 1 << 20;
const PREFETCH_THREADS: usize = 4;

/// Bytes of fetched chunks kept waiting for their first read; past it the
/// oldest are dropped (several sequential readers fit at once).
const AHEAD_MAX: u64 = 64 << 20;

/// Chunks some thread is fetching right now.
#[derive(Default)]
struct InFlight {
    ids: Mutex<IdSet>,
    done: Condvar,
}

/// State shared by readers and prefetchers.
struct Shared {
    store: Arc<Store>,
    chunks: ChunkCache,
    ahead: Mutex<ReadAhead<ChunkBytes>>,
    in_flight: InFlight,
    /// Chunks a read fetched itself, on its request's path, because no
    /// prefetch had queued them: a sequential read's first request, a
    /// jump, or read-ahead that fell behind.
    not_prefetched: AtomicU64,
}

impl Shared {
    /// Fetches `ids` (marked in flight by [`Shared::claim`]) in one batch,
    /// keeps what verified for its first read and clears the marks.
    /// Failures are reported when a reader asks for the chunk itself.
    fn fetch(&self, wanted: &[(ChunkId, u32)]) {
        let fetched = self.store.read_chunks(wanted);
        {
            let mut ahead = self.ahead.lock();
            for (id, result) in fetched {
                if let Ok(bytes) = result {
                    let len = bytes.len() as u64;
                    ahead.insert(id, bytes, len);
                }
            }
        }
        self.release(wanted.iter().map(|&(id, _)| id));
    }

    /// A cached chunk, or one fetched ahead (which leaves the read-ahead
    /// set).
    fn ready(&self, id: &ChunkId) -> Option<ChunkBytes> {
        if let Some(hit) = self.chunks.get(id) {
            return Some(hit);
        }
        self.ahead.lock().take(id)
    }

    /// Caches a chunk a read stopped inside of, in a buffer of its own.
    fn keep(&self, id: ChunkId, bytes: &ChunkBytes) {
        if !self.chunks.contains_key(&id) {
            self.chunks.insert(id, bytes.detached());
        }
    }

    fn release(&self, ids: impl Iterator<Item = ChunkId>) {
        let mut marks = self.in_flight.ids.lock();
        for id in ids {
            marks.remove(&id);
        }
        self.in_flight.done.notify_all();
    }

    /// Marks the chunks that are neither cached nor in flight; returns
    /// them, with their lengths, in file order.
    fn claim(&self, chunks: impl Iterator<Item = (ChunkId, u32)>) -> Vec<(ChunkId, u32)> {
        let ahead = self.ahead.lock();
        let mut marks = self.in_flight.ids.lock();
        chunks
            .filter(|(id, _)| {
                !self.chunks.contains_key(id) && !ahead.contains(id) && marks.insert(*id)
            })
            .collect()
    }

    /// A chunk's verified bytes: waits for a fetch in flight, then reads it
    /// on its own if it is still not cached.
    fn chunk(&self, id: ChunkId) -> Result<ChunkBytes, StoreError> {
        if let Some(hit) = self.ready(&id) {
            return Ok(hit);
        }
        {
            let mut marks = self.in_flight.ids.lock();
            while marks.contains(&id) {
                // Bounded: a fetch always clears its marks, but a reader
                // must never hang on a bug there.
                if self
                    .in_flight
                    .done
                    .wait_for(&mut marks, Duration::from_secs(5))
                    .timed_out()
                {
                    break;
                }
            }
        }
        if let Some(hit) = self.ready(&id) {
            return Ok(hit);
        }
        let store = &self.store;
        self.chunks.get_or_insert_with(&id, || store.read_chunk(id))
    }
}

/// Reads file content out of manifests.
pub struct ContentReader {
    shared: Arc<Shared>,
    prefetch: Option<Sender<Vec<(ChunkId, u32)>>>,
    prefetchers: Vec<JoinHandle<()>>,
}

impl ContentReader {
    /// A reader over `store` caching up to `cache_bytes` of chunks.
    pub fn new(store: Arc<Store>, cache_bytes: u64) -> Self {
        let shared = Arc::new(Shared {
            store,
            chunks: Cache::with_weighter(
                (cache_bytes / 16384).max(16) as usize,
                cache_bytes,
                ChunkWeight,
            ),
            ahead: Mutex::new(ReadAhead::new(AHEAD_MAX)),
            in_flight: InFlight::default(),
            not_prefetched: AtomicU64::new(0),
        });
        let (tx, rx) = bounded::<Vec<(ChunkId, u32)>>(64);
        let mut prefetchers = Vec::new();
        for i in 0..PREFETCH_THREADS {
            let (rx, shared) = (rx.clone(), shared.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("ckptfs-prefetch-{i}"))
                .spawn(move || {
                    for ids in rx.iter() {
                        shared.fetch(&ids);
                    }
                });
            match spawned {
                Ok(h) => prefetchers.push(h),
                Err(e) => log::warn!("no prefetch thread: {e}"),
            }
        }
        ContentReader {
            shared,
            prefetch: (!prefetchers.is_empty()).then_some(tx),
            prefetchers,
        }
    }

    /// A chunk's verified bytes, from the cache or the store.
    pub fn chunk(&self, id: ChunkId) -> Result<ChunkBytes, StoreError> {
        self.shared.chunk(id)
    }

    /// Chunks reads have fetched themselves since the start, because no
    /// prefetch had queued them.
    pub fn chunks_not_prefetched(&self) -> u64 {
        self.shared.not_prefetched.load(Ordering::Relaxed)
    }

    /// The chunks of `seg` (ids and lengths) from entry `i` on, as long as
    /// they start before manifest offset `end`.
    fn chunks_of(seg: &Segment, i: usize, end: u64) -> impl Iterator<Item = (ChunkId, u32)> + '_ {
        let i = i.min(seg.entries.len());
        let starts = std::iter::once(seg.start_of(i)).chain(seg.ends[i..].iter().copied());
        seg.entries[i..]
            .iter()
            .zip(starts)
            .take_while(move |&(_, start)| start < end)
            .filter_map(|(e, _)| match e {
                Entry::Chunk { id, len } => Some((*id, *len)),
                Entry::Hole { .. } => None,
            })
    }

    /// Queues for prefetch the chunks of the read-ahead window from entry
    /// `i` of `seg` up to manifest offset `end`, and on into the segment
    /// after `seg` when the window reaches past it: a manifest is stored in
    /// segments of about 20 MB, and a window that stopped at their edge
    /// left the reader to fetch the next one's first chunks itself, on the
    /// request's path, and to wait for its first batches (a third of a
    /// cold read's time went there).
    fn prefetch_window(&self, seg: &Segment, i: usize, end: u64, hint: &mut ReadHint) {
        let Some(mut queued) = self.prefetch(seg, i, end, hint.queued_to) else {
            return;
        };
        if end > seg.end() {
            if let Some(next) = self.following(seg, hint) {
                match self.prefetch(&next, 0, end, hint.queued_to) {
                    Some(to) => queued = to,
                    None => return,
                }
            }
        }
        hint.queued_to = Some((seg.manifest, queued));
    }

    /// The segment after `seg`, looked up once per reader. A failed lookup
    /// only means no prefetch there; the read itself reports it.
    fn following(&self, seg: &Segment, hint: &mut ReadHint) -> Option<Arc<Segment>> {
        let start = seg.end();
        if let Some((manifest, at, next)) = &hint.following {
            if *manifest == seg.manifest && *at == start {
                return next.clone();
            }
        }
        let found = match self.shared.store.segment_at(seg.manifest, start) {
            Ok(found) => found,
            Err(e) => {
                log::debug!("no prefetch past offset {start} of {:?}: {e}", seg.manifest);
                return None;
            }
        };
        let next = found
            .map(|(at, entries)| Arc::new(Segment::new(seg.manifest, at, entries)))
            .filter(|next| next.covers(seg.manifest, start));
        hint.following = Some((seg.manifest, start, next.clone()));
        next
    }

    /// Queues, in batches, the chunks of `seg` that start before manifest
    /// offset `end`, from entry `i` on, that are neither cached nor in
    /// flight, skipping what the reader's mark `queued` says it queued
    /// already (as long as that lies inside the window). Returns where the
    /// queue then stands, or `None` when the pool was too busy to take it
    /// all.
    fn prefetch(
        &self,
        seg: &Segment,
        i: usize,
        end: u64,
        queued: Option<(ManifestId, u64)>,
    ) -> Option<u64> {
        let tx = self.prefetch.as_ref()?;
        let i = seg.first_unqueued(i, end, queued);
        let ids = self.shared.claim(Self::chunks_of(seg, i, end));
        let per_batch = (PREFETCH_BATCH / 16384).max(1) as usize;
        let mut all_sent = true;
        for batch in ids.chunks(per_batch) {
            if let Err(e) = tx.try_send(batch.to_vec()) {
                // The pool is busy: drop the marks; readers fetch these.
                self.shared
                    .release(e.into_inner().into_iter().map(|(id, _)| id));
                all_sent = false;
            }
        }
        all_sent.then(|| seg.queued_end(end))
    }

    fn segment(
        &self,
        manifest: ManifestId,
        offset: u64,
        hint: &mut ReadHint,
    ) -> Result<Option<Arc<Segment>>, StoreError> {
        if let Some(seg) = hint.segment.as_ref().filter(|s| s.covers(manifest, offset)) {
            return Ok(Some(seg.clone()));
        }
        if let Some((_, _, Some(next))) = &hint.following {
            if next.covers(manifest, offset) {
                hint.segment = Some(next.clone());
                return Ok(Some(next.clone()));
            }
        }
        let found = self.shared.store.segment_at(manifest, offset)?;
        let seg = found.map(|(start, entries)| Arc::new(Segment::new(manifest, start, entries)));
        match seg {
            Some(s) if s.covers(manifest, offset) => {
                hint.segment = Some(s.clone());
                Ok(Some(s))
            }
            _ => Ok(None),
        }
    }

    /// Fills `buf` with the manifest's bytes from `offset`. Bytes past the
    /// manifest's end read as zeros (the caller bounds reads by file size).
    pub fn read(
        &self,
        manifest: ManifestId,
        offset: u64,
        buf: &mut [u8],
        hint: &mut ReadHint,
    ) -> Result<(), StoreError> {
        let mut at = 0usize;
        self.read_pieces(manifest, offset, buf.len(), hint, |piece| {
            let out = &mut buf[at..at + piece.len()];
            match piece {
                Piece::Bytes(bytes) => out.copy_from_slice(bytes),
                Piece::Zeros(_) => out.fill(0),
            }
            at += out.len();
        })
    }

    /// The manifest's `len` bytes from `offset`, in a new buffer that is
    /// filled once (never zeroed first): what a FUSE read replies with.
    pub fn read_vec(
        &self,
        manifest: ManifestId,
        offset: u64,
        len: usize,
        hint: &mut ReadHint,
    ) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::with_capacity(len);
        self.read_pieces(manifest, offset, len, hint, |piece| match piece {
            Piece::Bytes(bytes) => out.extend_from_slice(bytes),
            Piece::Zeros(n) => out.resize(out.len() + n, 0),
        })?;
        Ok(out)
    }

    /// Hands the manifest's `len` bytes from `offset` to `emit`, in order.
    fn read_pieces(
        &self,
        manifest: ManifestId,
        offset: u64,
        len: usize,
        hint: &mut ReadHint,
        mut emit: impl FnMut(Piece<'_>),
    ) -> Result<(), StoreError> {
        let mut done = 0usize;
        while done < len {
            let at = offset + done as u64;
            let Some(seg) = (if manifest == ManifestId::EMPTY {
                None
            } else {
                self.segment(manifest, at, hint)?
            }) else {
                emit(Piece::Zeros(len - done));
                return Ok(());
            };
            let Some((mut i, mut entry_start)) = seg.locate(at) else {
                emit(Piece::Zeros(len - done));
                return Ok(());
            };
            // What this read needs, fetched together; then what comes next.
            let wanted_end = at + (len - done) as u64;
            let missing = self.shared.claim(Self::chunks_of(&seg, i, wanted_end));
            if !missing.is_empty() {
                self.shared
                    .not_prefetched
                    .fetch_add(missing.len() as u64, Ordering::Relaxed);
                self.shared.fetch(&missing);
            }
            self.prefetch_window(&seg, i, wanted_end + READ_AHEAD, hint);
            while i < seg.entries.len() && done < len {
                let at = offset + done as u64;
                let entry = seg.entries[i];
                let skip = (at - entry_start) as usize;
                let take = ((entry.len() - skip as u64) as usize).min(len - done);
                match entry {
                    Entry::Hole { .. } => emit(Piece::Zeros(take)),
                    Entry::Chunk { id, len } => {
                        let data = self.chunk(id)?;
                        if data.len() != len as usize {
                            return Err(StoreError::ChunkCorrupt(id));
                        }
                        emit(Piece::Bytes(&data[skip..skip + take]));
                        if skip + take < data.len() {
                            self.shared.keep(id, &data);
                        }
                    }
                }
                done += take;
                entry_start += entry.len();
                i += 1;
            }
        }
        Ok(())
    }

    /// Calls `f(start, entry)` for each entry of a manifest, in order.
    pub fn for_each_entry(
        &self,
        manifest: ManifestId,
        mut f: impl FnMut(u64, Entry) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        if manifest == ManifestId::EMPTY {
            return Ok(());
        }
        let mut from = 0u64;
        while let Some((start, entries)) = self.shared.store.segment_from(manifest, from)? {
            let mut at = start;
            for e in entries {
                if !f(at, e)? {
                    return Ok(());
                }
                at += e.len();
            }
            if at <= start {
                break;
            }
            from = at;
        }
        Ok(())
    }
}

impl Drop for ContentReader {
    fn drop(&mut self) {
        self.prefetch.take();
        for h in self.prefetchers.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chunks of 10 bytes from offset 100, the third a hole: entries end
    /// at 110, 120, ..., 160.
    fn segment() -> Segment {
        let entries = (0..6u128)
            .map(|k| match k {
                2 => Entry::Hole { len: 10 },
                _ => Entry::Chunk {
                    id: ChunkId(k),
                    len: 10,
                },
            })
            .collect();
        Segment::new(ManifestId(7), 100, entries)
    }

    fn ids(seg: &Segment, i: usize, end: u64) -> Vec<u128> {
        ContentReader::chunks_of(seg, i, end)
            .map(|(id, _)| id.0)
            .collect()
    }

    #[test]
    fn a_window_holds_the_chunks_that_start_before_its_end() {
        let seg = segment();
        assert_eq!(ids(&seg, 0, 100), Vec::<u128>::new());
        assert_eq!(ids(&seg, 0, 101), [0]);
        assert_eq!(ids(&seg, 0, 135), [0, 1, 3]);
        assert_eq!(ids(&seg, 1, 1000), [1, 3, 4, 5]);
        assert_eq!(seg.queued_end(135), 140);
        assert_eq!(seg.queued_end(140), 140);
        assert_eq!(seg.queued_end(1000), 160);
    }

    #[test]
    fn read_ahead_runs_on_past_the_end_of_a_manifest_segment() {
        use crate::chunk::{chunk_id, testdata::noise};
        use crate::store::manifest::SEGMENT_ENTRIES;
        const CHUNK: usize = 2048;
        const READ: usize = 256 << 10;
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        // Three segments of 2 MiB: the first read's window (8 MiB ahead)
        // covers all of them.
        let manifest = ManifestId(5);
        let mut content = Vec::new();
        let mut txn = store.txn();
        for segment in 0..3 {
            let entries: Vec<Entry> = (0..SEGMENT_ENTRIES)
                .map(|k| {
                    let chunk = noise(CHUNK, (2 * (segment * SEGMENT_ENTRIES + k) + 1) as u64);
                    let id = chunk_id(&chunk);
                    store.put_chunk(id, &chunk, Some(1)).unwrap();
                    content.extend_from_slice(&chunk);
                    Entry::Chunk {
                        id,
                        len: CHUNK as u32,
                    }
                })
                .collect();
            txn.put_segment(
                manifest,
                (segment * SEGMENT_ENTRIES * CHUNK) as u64,
                &entries,
            );
        }
        store.commit(txn, true).unwrap();
        store.persist_chunks().unwrap();

        let reader = ContentReader::new(store, 64 << 20);
        let mut hint = ReadHint::default();
        for at in (0..content.len()).step_by(READ) {
            let got = reader
                .read_vec(manifest, at as u64, READ, &mut hint)
                .unwrap();
            assert!(got == content[at..at + READ], "bytes at {at}");
        }
        // Only the first read's chunks were fetched on its own path; each
        // later segment's first chunks were queued by the reads before.
        assert_eq!(reader.chunks_not_prefetched(), (READ / CHUNK) as u64);
    }

    #[test]
    fn a_sequential_reader_queues_only_the_windows_new_tail() {
        let seg = segment();
        let here = Some((ManifestId(7), 130));
        // Queued to 130: the next window starts at the entry ending at 140.
        assert_eq!(seg.first_unqueued(0, 150, here), 3);
        assert_eq!(ids(&seg, seg.first_unqueued(0, 150, here), 150), [3, 4]);
        // A read further on starts where it is.
        assert_eq!(seg.first_unqueued(4, 150, here), 4);
        // Another manifest, no mark, or a mark past the window (the reader
        // went back): the whole window is checked again.
        assert_eq!(seg.first_unqueued(0, 150, Some((ManifestId(8), 130))), 0);
        assert_eq!(seg.first_unqueued(0, 150, None), 0);
        assert_eq!(seg.first_unqueued(0, 125, here), 0);
    }
}
