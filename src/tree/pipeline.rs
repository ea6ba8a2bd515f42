//! The chunk pipeline: worker threads that hash, dedup-check, compress and
//! store chunks, so that none of that runs on the FUSE request threads.
//!
//! Chunks travel in batches of about [`BATCH_BYTES`] (one job, one reply),
//! not one by one: a channel round trip per 16 KiB chunk cost more than
//! hashing it. The job queue is bounded: a writer that outruns the disk
//! blocks in `submit` (back-pressure), and memory stays bounded whatever
//! the file size. Results come back through a per-job channel so that the
//! caller can keep them in file order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::{Mutex, RwLock, RwLockWriteGuard};

use crate::ids::ChunkId;

use crate::chunk::{chunk_id, is_zero};
use crate::store::manifest::Entry;
use crate::store::{Store, StoreError};

/// What a chunk yields: its manifest entry.
pub type ChunkResult = Result<Entry, StoreError>;

/// Bytes of chunk data sent to the workers as one job.
pub const BATCH_BYTES: usize = 256 << 10;

/// Chunks sent to the workers together, their bytes back to back.
#[derive(Default)]
pub struct ChunkBatch {
    data: Vec<u8>,
    /// Each chunk's length, and `Some(stream)` when it goes to a pack file
    /// (see `Store::put_chunk`).
    chunks: Vec<(u32, Option<u64>)>,
}

impl ChunkBatch {
    /// Adds a chunk.
    pub fn push(&mut self, data: &[u8], packed: Option<u64>) {
        if self.data.capacity() == 0 {
            self.data.reserve(BATCH_BYTES + (64 << 10));
        }
        self.data.extend_from_slice(data);
        self.chunks.push((data.len() as u32, packed));
    }

    /// Bytes of chunk data in the batch.
    pub fn bytes(&self) -> usize {
        self.data.len()
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

struct Job {
    batch: ChunkBatch,
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
    protect: Mutex<Option<std::collections::HashSet<ChunkId>>>,
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
}

/// A pool of chunk-storing workers.
pub struct Pipeline {
    jobs: Option<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
    /// What was done so far.
    pub counters: Arc<PipelineCounters>,
}

impl Pipeline {
    /// Starts `threads` workers over `store` with `queue` jobs of slack.
    pub fn start(
        store: Arc<Store>,
        guard: Arc<GcGuard>,
        threads: usize,
        queue: usize,
    ) -> std::io::Result<Self> {
        let (tx, rx) = bounded::<Job>(queue.max(1));
        let counters = Arc::new(PipelineCounters::default());
        let mut workers = Vec::new();
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let store = store.clone();
            let counters = counters.clone();
            let guard = guard.clone();
            workers.push(
                std::thread::Builder::new()
                    .name(format!("ckptfs-chunk-{i}"))
                    .spawn(move || {
                        for job in rx.iter() {
                            let mut at = 0;
                            let results = job
                                .batch
                                .chunks
                                .iter()
                                .map(|&(len, packed)| {
                                    let data = &job.batch.data[at..at + len as usize];
                                    at += len as usize;
                                    store_chunk(&store, &guard, &counters, data, packed)
                                })
                                .collect();
                            // The submitter may have given up (its file was
                            // truncated away); the result is then unneeded.
                            let _ = job.reply.send(results);
                        }
                    })?,
            );
        }
        Ok(Pipeline {
            jobs: Some(tx),
            workers,
            counters,
        })
    }

    /// Queues a batch of chunks; blocks while the queue is full. The reply
    /// holds one result per chunk, in order.
    pub fn submit(&self, batch: ChunkBatch) -> Receiver<Vec<ChunkResult>> {
        let (reply, result) = bounded(1);
        let job = Job { batch, reply };
        match &self.jobs {
            Some(jobs) => {
                if let Err(crossbeam_channel::SendError(job)) = jobs.send(job) {
                    let _ = job.reply.send(stopped(&job.batch));
                }
            }
            None => {
                let _ = job.reply.send(stopped(&job.batch));
            }
        }
        result
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

fn store_chunk(
    store: &Store,
    guard: &GcGuard,
    counters: &PipelineCounters,
    data: &[u8],
    packed: Option<u64>,
) -> ChunkResult {
    let len = data.len() as u32;
    if is_zero(data) {
        counters.zero_chunks.fetch_add(1, Ordering::Relaxed);
        return Ok(Entry::Hole { len: len as u64 });
    }
    let id = chunk_id(data);
    let _gate = guard.gate.read();
    guard.note(id);
    if store.has_chunk(id)? {
        counters.dedup_chunks.fetch_add(1, Ordering::Relaxed);
    } else {
        let stored = store.put_chunk(id, data, packed)?;
        counters.stored_chunks.fetch_add(1, Ordering::Relaxed);
        counters
            .stored_raw_bytes
            .fetch_add(len as u64, Ordering::Relaxed);
        counters
            .stored_bytes
            .fetch_add(stored as u64, Ordering::Relaxed);
    }
    Ok(Entry::Chunk { id, len })
}
