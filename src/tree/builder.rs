//! Builds a new manifest from chunk results that arrive out of order from
//! the pipeline but must be recorded in file order.
//!
//! Full segments are written as they fill (the manifest is unreferenced until
//! the commit names it, so a crash leaves only garbage for GC); the last one
//! goes into the commit's batch.

use std::collections::VecDeque;
use std::sync::Arc;

use crossbeam_channel::Receiver;

use super::pipeline::{ChunkBatch, ChunkResult, JobOrder, Pipeline, BATCH_BYTES};
use crate::chunk::Cut;
use crate::ids::{ChunkId, ManifestId};
use crate::store::manifest::{Entry, SEGMENT_ENTRIES};
use crate::store::{Placement, Store, StoreError, Txn};

/// Bytes of a manifest whose chunks go through the WAL; see `submit`.
pub const VOLATILE_AFTER: u64 = 1 << 20;

enum Pending {
    Job(Receiver<Vec<ChunkResult>>),
    Ready(Entry),
}

/// An in-progress manifest.
pub struct ManifestBuilder {
    id: ManifestId,
    seg_start: u64,
    seg_len: u64,
    entries: Vec<Entry>,
    pending: VecDeque<Pending>,
    /// Chunks not sent to the pipeline yet; they come after `pending`.
    batch: ChunkBatch,
    /// Bytes submitted so far (done or pending).
    submitted: u64,
    /// The first error a job returned; the manifest is then unusable.
    failed: Option<StoreError>,
    /// Keeps this manifest's chunks in file order in their pack.
    order: Arc<JobOrder>,
    /// The run of stored chunks that the last chunks submitted form.
    run: Option<StoredRun>,
}

/// Chunks found stored (by their guessed cuts) whose records lie side by
/// side in one pack, in file order.
#[derive(Clone, Copy)]
struct StoredRun {
    pack: u32,
    /// Where the last one's record ends.
    end: u64,
    /// Record bytes of the run.
    bytes: u64,
}

impl ManifestBuilder {
    /// Starts manifest `id`.
    pub fn new(id: ManifestId) -> Self {
        ManifestBuilder {
            id,
            seg_start: 0,
            seg_len: 0,
            entries: Vec::new(),
            pending: VecDeque::new(),
            batch: ChunkBatch::default(),
            submitted: 0,
            failed: None,
            order: Arc::default(),
            run: None,
        }
    }

    /// Bytes the manifest will cover once everything pending is done.
    pub fn len(&self) -> u64 {
        self.submitted
    }

    /// Sends a chunk to the pipeline and records its place. Past the first
    /// [`VOLATILE_AFTER`] bytes, chunks go to pack files instead of the
    /// WAL: a large file is then written to disk once, and the sync before
    /// its commit is amortized.
    /// Packed chunks carry the manifest id as their stream, so a file's
    /// chunks sit next to each other in one pack.
    pub fn submit(&mut self, pipeline: &Pipeline, chunk: Cut<'_>) {
        let packed = (self.submitted >= VOLATILE_AFTER).then_some(self.id.0);
        self.submitted += chunk.data.len() as u64;
        let below = pipeline.relocate_below();
        // A guessed cut repeats data seen before, so it is likely stored.
        let found = chunk
            .guessed
            .then(|| pipeline.find_stored(chunk.id))
            .flatten();
        self.run = match found {
            Some(Placement::Packed(at)) => Some(match self.run {
                Some(run) if run.pack == at.pack && run.end == at.offset => StoredRun {
                    end: at.end(),
                    bytes: run.bytes + at.len as u64,
                    ..run
                },
                _ => StoredRun {
                    pack: at.pack,
                    end: at.end(),
                    bytes: at.len as u64,
                },
            }),
            _ => None,
        };
        // Deep in a run of at least `below` bytes, a stored chunk stays
        // where it is (relocation leaves long runs alone), so its bytes
        // need not travel to the workers.
        let deep = self.run.is_some_and(|run| run.bytes >= below);
        match found {
            Some(placement) if deep => self.batch.push_stored(chunk, packed, placement),
            _ => self.batch.push(chunk, packed),
        }
        // A full batch waits while it ends in a run that may still reach
        // `below`: cut there, the run's head would look short and move
        // (each tensor of `last.pt` = `best.pt`, whose record headers
        // differ, lost its first chunks that way).
        let growing = self.run.is_some_and(|run| run.bytes < below);
        let full = self.batch.bytes() >= BATCH_BYTES;
        if full && !growing || self.batch.bytes() >= 2 * BATCH_BYTES {
            self.send_batch(pipeline);
        }
    }

    /// Sends the chunks gathered so far to the pipeline.
    fn send_batch(&mut self, pipeline: &Pipeline) {
        if !self.batch.is_empty() {
            let batch = std::mem::take(&mut self.batch);
            self.pending
                .push_back(Pending::Job(pipeline.submit(batch, &self.order)));
        }
    }

    /// Adds an entry that needs no work (a reused chunk or a hole).
    pub fn push_ready(&mut self, pipeline: &Pipeline, entry: Entry) {
        self.run = None;
        self.send_batch(pipeline);
        self.submitted += entry.len();
        self.pending.push_back(Pending::Ready(entry));
    }

    /// Moves finished results into the manifest; with `wait`, all of them
    /// (chunks not sent yet are sent first).
    pub fn drain(
        &mut self,
        pipeline: &Pipeline,
        store: &Store,
        wait: bool,
    ) -> Result<(), StoreError> {
        if wait {
            self.send_batch(pipeline);
        }
        while let Some(front) = self.pending.front() {
            let results = match front {
                Pending::Ready(e) => vec![Ok(*e)],
                Pending::Job(rx) => {
                    let got = if wait {
                        rx.recv().ok()
                    } else {
                        rx.try_recv().ok()
                    };
                    match got {
                        Some(r) => r,
                        None if wait => vec![Err(StoreError::Db("chunk worker vanished".into()))],
                        None => break,
                    }
                }
            };
            self.pending.pop_front();
            for result in results {
                match result {
                    Ok(e) => self.append(store, e)?,
                    Err(e) => {
                        if self.failed.is_none() {
                            self.failed = Some(e);
                        }
                    }
                }
            }
        }
        match self.failed.take() {
            Some(e) => {
                self.pending.clear();
                Err(e)
            }
            None => Ok(()),
        }
    }

    fn append(&mut self, store: &Store, entry: Entry) -> Result<(), StoreError> {
        if entry.is_empty() {
            return Ok(());
        }
        if let (Some(Entry::Hole { len }), Entry::Hole { len: more }) =
            (self.entries.last_mut(), entry)
        {
            *len += more;
            self.seg_len += more;
            return Ok(());
        }
        if self.entries.len() >= SEGMENT_ENTRIES {
            store.put_segment(self.id, self.seg_start, &self.entries)?;
            self.seg_start += self.seg_len;
            self.seg_len = 0;
            self.entries.clear();
        }
        self.seg_len += entry.len();
        self.entries.push(entry);
        Ok(())
    }

    /// What the manifest references so far (for GC): waits for pending
    /// chunks, then returns its id (its full segments are stored under it)
    /// and the chunks of the segment still in memory.
    pub fn referenced(
        &mut self,
        pipeline: &Pipeline,
        store: &Store,
    ) -> Result<(ManifestId, Vec<ChunkId>), StoreError> {
        self.drain(pipeline, store, true)?;
        let chunks = self
            .entries
            .iter()
            .filter_map(|e| match e {
                Entry::Chunk { id, .. } => Some(*id),
                Entry::Hole { .. } => None,
            })
            .collect();
        Ok((self.id, chunks))
    }

    /// Waits for everything and puts the last segment into `txn`.
    /// Returns the manifest id (EMPTY for an empty file) and its length.
    pub fn finish_into(
        mut self,
        pipeline: &Pipeline,
        store: &Store,
        txn: &mut Txn<'_>,
    ) -> Result<(ManifestId, u64), StoreError> {
        self.drain(pipeline, store, true)?;
        if self.seg_start + self.seg_len == 0 {
            return Ok((ManifestId::EMPTY, 0));
        }
        if !self.entries.is_empty() {
            txn.put_segment(self.id, self.seg_start, &self.entries);
        }
        Ok((self.id, self.seg_start + self.seg_len))
    }

    /// Waits for everything and writes the last segment directly: the
    /// manifest becomes a readable (still uncommitted) base.
    pub fn finish_stored(
        mut self,
        pipeline: &Pipeline,
        store: &Store,
    ) -> Result<(ManifestId, u64), StoreError> {
        self.drain(pipeline, store, true)?;
        if self.seg_start + self.seg_len == 0 {
            return Ok((ManifestId::EMPTY, 0));
        }
        if !self.entries.is_empty() {
            store.put_segment(self.id, self.seg_start, &self.entries)?;
        }
        Ok((self.id, self.seg_start + self.seg_len))
    }
}
