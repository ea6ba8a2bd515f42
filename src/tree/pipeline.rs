//! The chunk pipeline: worker threads that hash, dedup-check, compress and
//! store chunks, so that none of that runs on the FUSE request threads.
//!
//! The job queue is bounded: a writer that outruns the disk blocks in
//! `submit` (back-pressure), and memory stays bounded whatever the file size.
//! Results come back through a per-job channel so that the caller can keep
//! them in file order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::chunk::{chunk_id, is_zero};
use crate::store::manifest::Entry;
use crate::store::{Store, StoreError};

/// What a job yields: the manifest entry for the chunk.
pub type ChunkResult = Result<Entry, StoreError>;

struct Job {
    data: Vec<u8>,
    volatile: bool,
    reply: Sender<ChunkResult>,
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
    pub fn start(store: Arc<Store>, threads: usize, queue: usize) -> std::io::Result<Self> {
        let (tx, rx) = bounded::<Job>(queue.max(1));
        let counters = Arc::new(PipelineCounters::default());
        let mut workers = Vec::new();
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let store = store.clone();
            let counters = counters.clone();
            workers.push(
                std::thread::Builder::new()
                    .name(format!("ckptfs-chunk-{i}"))
                    .spawn(move || {
                        for job in rx.iter() {
                            let result = store_chunk(&store, &counters, &job.data, job.volatile);
                            // The submitter may have given up (its file was
                            // truncated away); the result is then unneeded.
                            let _ = job.reply.send(result);
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

    /// Queues a chunk; blocks while the queue is full. `volatile` chunks
    /// skip the WAL (see `Store::put_chunk`).
    pub fn submit(&self, data: Vec<u8>, volatile: bool) -> Receiver<ChunkResult> {
        let (reply, result) = bounded(1);
        let job = Job {
            data,
            volatile,
            reply,
        };
        match &self.jobs {
            Some(jobs) => {
                if let Err(crossbeam_channel::SendError(job)) = jobs.send(job) {
                    let _ = job
                        .reply
                        .send(Err(StoreError::Db("chunk pipeline stopped".into())));
                }
            }
            None => {
                let _ = job
                    .reply
                    .send(Err(StoreError::Db("chunk pipeline stopped".into())));
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
    counters: &PipelineCounters,
    data: &[u8],
    volatile: bool,
) -> ChunkResult {
    let len = data.len() as u32;
    if is_zero(data) {
        counters.zero_chunks.fetch_add(1, Ordering::Relaxed);
        return Ok(Entry::Hole { len: len as u64 });
    }
    let id = chunk_id(data);
    if store.has_chunk(id)? {
        counters.dedup_chunks.fetch_add(1, Ordering::Relaxed);
    } else {
        let stored = store.put_chunk(id, data, volatile)?;
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
