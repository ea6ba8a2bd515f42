//! The chunk pipeline: worker threads that dedup-check, compress and store
//! chunks (hashed by the chunker as it cuts them), so that none of that
//! runs on the FUSE request threads.
//!
//! Chunks travel in batches of about [`BATCH_BYTES`] (one job, one reply),
//! not one by one: a channel round trip per 16 KiB chunk cost more than
//! hashing it. The job queue is bounded: a writer that outruns the disk
//! blocks in `submit` (back-pressure), and memory stays bounded whatever
//! the file size. Results come back through a per-job channel so that the
//! caller can keep them in file order.
//!
//! A job's new chunks are encoded in parallel with other jobs, then its
//! pack records are appended with one write, in the order the stream's jobs
//! were submitted ([`StreamOrder`]): a file ends up as one stretch of its
//! pack. A job's reply is sent once its chunks are indexed, so whoever
//! waits for the replies of a file can read all of its chunks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::{Mutex, RwLock, RwLockWriteGuard};

use crate::ids::{ChunkId, IdSet};

use super::stream_order::StreamOrder;
use crate::chunk::{is_zero, Coder, Cut};
use crate::store::manifest::Entry;
use crate::store::{scattered, EncodedChunk, Placement, Store, StoreError};

/// What a chunk yields: its manifest entry.
pub type ChunkResult = Result<Entry, StoreError>;

/// Bytes of chunk data sent to the workers as one job.
pub const BATCH_BYTES: usize = 256 << 10;

/// Chunks sent to the workers together, their bytes back to back.
#[derive(Default)]
pub struct ChunkBatch {
    data: Vec<u8>,
    chunks: Vec<BatchChunk>,
    /// Bytes the chunks cover, sent or not.
    covered: usize,
}

/// One chunk of a [`ChunkBatch`].
#[derive(Clone, Copy)]
struct BatchChunk {
    len: u32,
    id: ChunkId,
    /// `Some(stream)` when it goes to a pack file (see `Store::put_chunk`).
    packed: Option<u64>,
    /// Where it is stored, when the submitter found it stored already
    /// ([`Pipeline::find_stored`]); its bytes are then not in the batch.
    stored: Option<Placement>,
}

impl ChunkBatch {
    /// Adds a chunk.
    pub fn push(&mut self, chunk: Cut<'_>, packed: Option<u64>) {
        if self.data.capacity() == 0 {
            self.data.reserve(BATCH_BYTES + (64 << 10));
        }
        self.data.extend_from_slice(chunk.data);
        self.add(chunk.data.len(), chunk.id, packed, None);
    }

    /// Adds a chunk found stored at `placement`, without its bytes: the
    /// submitter knows it lies in a run of stored chunks that relocation
    /// leaves in place (its stretch is pinned).
    pub fn push_stored(&mut self, chunk: Cut<'_>, packed: Option<u64>, placement: Placement) {
        self.add(chunk.data.len(), chunk.id, packed, Some(placement));
    }

    fn add(&mut self, len: usize, id: ChunkId, packed: Option<u64>, stored: Option<Placement>) {
        self.covered += len;
        self.chunks.push(BatchChunk {
            len: len as u32,
            id,
            packed,
            stored,
        });
    }

    /// Bytes the batch's chunks cover (sent with their bytes or not).
    pub fn bytes(&self) -> usize {
        self.covered
    }

    /// Number of chunks in the batch.
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// True when no chunk was added.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }
}

/// The submission order of one stream's jobs.
pub type JobOrder = StreamOrder<Prepared>;

struct Job {
    batch: ChunkBatch,
    reply: Sender<Vec<ChunkResult>>,
    order: Arc<JobOrder>,
    ticket: u64,
}

/// A job whose chunks are hashed, checked and encoded, waiting for its
/// turn to append them.
pub struct Prepared {
    data: Vec<u8>,
    results: Vec<ChunkResult>,
    /// New chunks for the stream's pack.
    encoded: Vec<EncodedChunk>,
    /// Each new chunk's place in `results`.
    slots: Vec<usize>,
    stream: u64,
    reply: Sender<Vec<ChunkResult>>,
}

fn stopped(batch: &ChunkBatch) -> Vec<ChunkResult> {
    (0..batch.len())
        .map(|_| Err(StoreError::Db("chunk pipeline stopped".into())))
        .collect()
}

/// What keeps garbage collection from deleting a chunk that a writer has
/// just stored or deduplicated against but not committed yet: while a GC
/// runs, every chunk id the pipeline hands out is noted in `protect`, and
/// the check-and-note happens under `gate` (shared), which the sweep takes
/// exclusively while it deletes.
#[derive(Default)]
pub struct GcGuard {
    gate: RwLock<()>,
    protect: Mutex<Option<IdSet>>,
}

impl GcGuard {
    /// Starts noting chunk ids.
    pub fn begin(&self) {
        *self.protect.lock() = Some(Default::default());
    }

    /// Stops noting and forgets the ids.
    pub fn end(&self) {
        *self.protect.lock() = None;
    }

    fn note(&self, id: ChunkId) {
        if let Some(set) = self.protect.lock().as_mut() {
            set.insert(id);
        }
    }

    /// Excludes producers; `is_protected` is exact while the guard is held.
    pub fn exclusive(&self) -> RwLockWriteGuard<'_, ()> {
        self.gate.write()
    }

    /// True when a writer has handed out `id` since `begin`.
    pub fn is_protected(&self, id: &ChunkId) -> bool {
        self.protect.lock().as_ref().is_some_and(|s| s.contains(id))
    }
}

/// Counters of what the pipeline did, for logs and stats.
#[derive(Default)]
pub struct PipelineCounters {
    /// Chunks stored because they were new.
    pub stored_chunks: AtomicU64,
    /// Raw bytes of those chunks.
    pub stored_raw_bytes: AtomicU64,
    /// Bytes they took after compression.
    pub stored_bytes: AtomicU64,
    /// Chunks found already stored.
    pub dedup_chunks: AtomicU64,
    /// All-zero chunks turned into holes.
    pub zero_chunks: AtomicU64,
    /// Stored chunks written again next to a save's new chunks
    /// (`store::scattered`); they count as deduplicated too.
    pub moved_chunks: AtomicU64,
    /// Bytes those took.
    pub moved_bytes: AtomicU64,
}

/// What `prepare` found of a batch's chunks, in file order.
struct Found<'a> {
    /// The batch's bytes, and each chunk's span of them (empty for chunks
    /// sent without their bytes, which are `pinned`).
    data: &'a [u8],
    spans: &'a [std::ops::Range<usize>],
    pinned: &'a [bool],
    results: &'a [ChunkResult],
    placements: &'a [Placement],
}

/// What the workers share.
struct Context {
    store: Arc<Store>,
    guard: Arc<GcGuard>,
    counters: Arc<PipelineCounters>,
}

/// A pool of chunk-storing workers.
pub struct Pipeline {
    jobs: Option<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
    context: Arc<Context>,
    /// What was done so far.
    pub counters: Arc<PipelineCounters>,
}

impl Pipeline {
    /// Stretches of stored chunks shorter than this may move
    /// (`--relocate-below`; 0: none).
    pub fn relocate_below(&self) -> u64 {
        self.context.store.relocate_below()
    }

    /// Starts `threads` workers over `store` with `queue` jobs of slack.
    pub fn start(
        store: Arc<Store>,
        guard: Arc<GcGuard>,
        threads: usize,
        queue: usize,
    ) -> std::io::Result<Self> {
        let (tx, rx) = bounded::<Job>(queue.max(1));
        let counters = Arc::new(PipelineCounters::default());
        let context = Arc::new(Context {
            store,
            guard,
            counters: counters.clone(),
        });
        let mut workers = Vec::new();
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let context = context.clone();
            workers.push(
                std::thread::Builder::new()
                    .name(format!("ckptfs-chunk-{i}"))
                    .spawn(move || {
                        for job in rx.iter() {
                            let (order, ticket) = (job.order.clone(), job.ticket);
                            let prepared = context.prepare(job.batch, job.reply);
                            order.hand_in(ticket, prepared, |p| context.append(p));
                        }
                    })?,
            );
        }
        Ok(Pipeline {
            jobs: Some(tx),
            workers,
            context,
            counters,
        })
    }

    /// Queues a batch of chunks of the stream whose jobs `order` orders;
    /// blocks while the queue is full. The reply holds one result per
    /// chunk, in order.
    pub fn submit(&self, batch: ChunkBatch, order: &Arc<JobOrder>) -> Receiver<Vec<ChunkResult>> {
        let (reply, result) = bounded(1);
        let job = Job {
            batch,
            reply,
            order: order.clone(),
            ticket: order.ticket(),
        };
        let refused = match &self.jobs {
            Some(jobs) => jobs.send(job).err().map(|e| e.0),
            None => Some(job),
        };
        if let Some(job) = refused {
            // The ticket is handed in all the same, or the stream's later
            // jobs would wait for it forever.
            let prepared = Prepared {
                results: stopped(&job.batch),
                data: Vec::new(),
                encoded: Vec::new(),
                slots: Vec::new(),
                stream: 0,
                reply: job.reply,
            };
            job.order
                .hand_in(job.ticket, prepared, |p| self.context.append(p));
        }
        result
    }

    /// Where chunk `id` is stored, if it is. A submitter that finds a
    /// chunk stored in a long run (a guessed cut: a repeat) sends it
    /// without its bytes ([`ChunkBatch::push_stored`]), which spares
    /// copying them (7% of a duplicate save, on the request's thread).
    /// Checked and noted under the GC gate, as the workers' own checks
    /// are; an error only means the chunk is sent with its bytes.
    pub fn find_stored(&self, id: ChunkId) -> Option<Placement> {
        let context = &self.context;
        let _gate = context.guard.gate.read();
        context.guard.note(id);
        let found = context.store.stored_at(id).ok().flatten()?;
        Some(found.packed.map_or(Placement::Elsewhere, Placement::Packed))
    }
}

impl Context {
    /// Turns a batch's zero chunks into holes, checks which are
    /// stored already, stores the new ones that go through the WAL, and
    /// encodes the new ones that go to a pack.
    fn prepare(&self, batch: ChunkBatch, reply: Sender<Vec<ChunkResult>>) -> Prepared {
        let ChunkBatch { data, chunks, .. } = batch;
        let mut at = 0;
        let mut stream = 0;
        let mut encoded = Vec::with_capacity(chunks.len());
        let mut slots = Vec::with_capacity(chunks.len());
        let mut results = Vec::with_capacity(chunks.len());
        let mut placements = Vec::with_capacity(chunks.len());
        let mut spans = Vec::with_capacity(chunks.len());
        // The batch's chunks are neighbours in one file: coded as a run.
        let mut coder = Coder::default();
        // Where each chunk starts in the batch (in the file, less the
        // batch's start): float lanes are planned by position.
        let mut position = 0u64;
        for c in &chunks {
            let starts_at = position;
            position += u64::from(c.len);
            if let Some(s) = c.packed {
                stream = s;
            }
            if let Some(placement) = c.stored {
                // Found stored by the submitter; no bytes in the batch.
                spans.push(at..at);
                self.counters.dedup_chunks.fetch_add(1, Ordering::Relaxed);
                results.push(Ok(Entry::Chunk {
                    id: c.id,
                    len: c.len,
                }));
                placements.push(placement);
                continue;
            }
            let raw = at..at + c.len as usize;
            at += c.len as usize;
            spans.push(raw.clone());
            let bytes = &data[raw.clone()];
            let (result, placement) = match c.packed {
                Some(_) => self.dedup(bytes, c.id, || {
                    coder.seek(starts_at);
                    let chunk = self.store.encode_chunk(c.id, &data, raw, &mut coder);
                    encoded.push(chunk);
                    slots.push(results.len());
                    Ok(())
                }),
                None => {
                    let (result, _) = self.dedup(bytes, c.id, || {
                        let stored = self.store.put_chunk(c.id, bytes, None)?;
                        self.counted(bytes.len(), stored);
                        Ok(())
                    });
                    (result, Placement::Elsewhere)
                }
            };
            results.push(result);
            placements.push(placement);
        }
        if !encoded.is_empty() {
            let pinned: Vec<bool> = chunks.iter().map(|c| c.stored.is_some()).collect();
            let found = Found {
                data: &data,
                spans: &spans,
                pinned: &pinned,
                results: &results,
                placements: &placements,
            };
            self.add_moves(found, &mut encoded, &mut slots);
        }
        Prepared {
            data,
            results,
            encoded,
            slots,
            stream,
            reply,
        }
    }

    /// Adds to a batch's new chunks, in file order, the stored ones that
    /// sit scattered in older packs (see `store::scattered`), to be moved
    /// next to them. Chunks sent without their bytes lie in long runs:
    /// their stretches stay.
    fn add_moves(&self, found: Found, encoded: &mut Vec<EncodedChunk>, slots: &mut Vec<usize>) {
        let moved = scattered(found.placements, found.pinned, self.store.relocate_below());
        if !moved.contains(&true) {
            return;
        }
        let mut coder = Coder::default();
        let mut merged: Vec<(usize, EncodedChunk)> =
            slots.drain(..).zip(encoded.drain(..)).collect();
        for (slot, raw) in found.spans.iter().enumerate() {
            if let (true, Placement::Packed(from), Ok(Entry::Chunk { id, .. })) =
                (moved[slot], found.placements[slot], &found.results[slot])
            {
                if found.pinned[slot] {
                    continue; // sent without its bytes; never chosen
                }
                let chunk = self
                    .store
                    .encode_chunk(*id, found.data, raw.clone(), &mut coder);
                merged.push((slot, chunk.moving_from(from)));
            }
        }
        merged.sort_unstable_by_key(|(slot, _)| *slot);
        (*slots, *encoded) = merged.into_iter().unzip();
    }

    /// A chunk's entry: a hole for zeros, else its id, after `store_new`
    /// ran for it if it is not stored yet; and where the chunk stands. The
    /// check and `store_new` run under the GC gate, and the id is noted
    /// for a GC in progress.
    fn dedup(
        &self,
        data: &[u8],
        id: ChunkId,
        store_new: impl FnOnce() -> Result<(), StoreError>,
    ) -> (ChunkResult, Placement) {
        let len = data.len() as u32;
        if is_zero(data) {
            self.counters.zero_chunks.fetch_add(1, Ordering::Relaxed);
            return (Ok(Entry::Hole { len: len as u64 }), Placement::Elsewhere);
        }
        let _gate = self.guard.gate.read();
        self.guard.note(id);
        let placement = match self.store.stored_at(id) {
            Ok(Some(found)) => {
                self.counters.dedup_chunks.fetch_add(1, Ordering::Relaxed);
                found.packed.map_or(Placement::Elsewhere, Placement::Packed)
            }
            Ok(None) => match store_new() {
                Ok(()) => Placement::New,
                Err(e) => return (Err(e), Placement::Elsewhere),
            },
            Err(e) => return (Err(e), Placement::Elsewhere),
        };
        (Ok(Entry::Chunk { id, len }), placement)
    }

    fn counted(&self, raw_len: usize, stored_len: usize) {
        let counters = &self.counters;
        counters.stored_chunks.fetch_add(1, Ordering::Relaxed);
        counters
            .stored_raw_bytes
            .fetch_add(raw_len as u64, Ordering::Relaxed);
        counters
            .stored_bytes
            .fetch_add(stored_len as u64, Ordering::Relaxed);
    }

    /// Appends a prepared job's new chunks to its stream's pack and
    /// replies.
    fn append(&self, mut job: Prepared) {
        let _gate = self.guard.gate.read();
        match self.store.put_packed(job.stream, &job.data, &job.encoded) {
            Ok(()) => {
                for c in &job.encoded {
                    if c.is_move() {
                        let counters = &self.counters;
                        counters.moved_chunks.fetch_add(1, Ordering::Relaxed);
                        (counters.moved_bytes).fetch_add(c.stored_len() as u64, Ordering::Relaxed);
                    } else {
                        self.counted(c.raw_len() as usize, c.stored_len() as usize);
                    }
                }
            }
            Err(e) => {
                // A chunk that was to move is stored where it was: fine.
                for (&slot, c) in job.slots.iter().zip(&job.encoded) {
                    if !c.is_move() {
                        job.results[slot] = Err(e.duplicate());
                    }
                }
            }
        }
        // The submitter may have given up (its file was truncated away);
        // the result is then unneeded.
        let _ = job.reply.send(job.results);
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.jobs.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
