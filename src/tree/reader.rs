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
//! one round trip per chunk. Chunks being fetched are marked in flight; a
//! reader that needs one waits for that fetch instead of starting a second.
//!
//! Fetched chunks wait in a bounded [`ReadAhead`] set until they are read,
//! not in the cache, which would evict them before their first read. A
//! chunk enters the cache, in a buffer of its own, when a read stops
//! inside it (the next read wants the rest); a chunk read to its end is
//! dropped, so a sequential read leaves the cache alone and no cached chunk
//! keeps a run's whole buffer alive.

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

    /// Queues, in batches, the chunks of `seg` that start before manifest
    /// offset `end`, from entry `i` on, that are neither cached nor in
    /// flight. Skips what `hint` says this reader queued already, as long
    /// as that lies inside the window.
    fn prefetch(&self, seg: &Segment, i: usize, end: u64, hint: &mut ReadHint) {
        let Some(tx) = &self.prefetch else { return };
        let i = seg.first_unqueued(i, end, hint.queued_to);
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
        if all_sent {
            hint.queued_to = Some((seg.manifest, seg.queued_end(end)));
        }
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
                self.shared.fetch(&missing);
            }
            self.prefetch(&seg, i, wanted_end + READ_AHEAD, hint);
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
