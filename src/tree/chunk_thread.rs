//! Chunking a large file's stream on a thread of its own, so that a write
//! is answered once its bytes are queued and the writer's next write
//! overlaps this one's cut-point search (FastCDC is the largest cost of a
//! save, and a writer sends one request at a time).
//!
//! The thread owns the stream's chunker and manifest builder while it
//! runs; [`ChunkThread::join`] hands them back once every queued byte is
//! chunked, so whatever needs the state in one place (a commit, a read of
//! the file, an out-of-order write, a GC) joins first and carries on as
//! with a stream chunked in place. The queue is bounded: a writer that
//! outruns the thread waits, and memory stays bounded. A store error ends
//! the thread; the next write or the join reports it.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Sender};

use super::builder::ManifestBuilder;
use super::pipeline::Pipeline;
use super::TreeError;
use crate::chunk::Chunker;
use crate::store::{Store, StoreError};

/// Writes waiting for the thread, at most (about 1 MiB each).
const QUEUED_WRITES: usize = 4;

/// A stream's chunking state.
pub struct StreamState {
    /// Cut points so far and the bytes after the last one.
    pub chunker: Chunker,
    /// The manifest the chunks go to.
    pub builder: ManifestBuilder,
}

type Outcome = Result<StreamState, StoreError>;

/// A stream being chunked on its own thread.
pub struct ChunkThread {
    bytes: Option<Sender<Vec<u8>>>,
    thread: Option<JoinHandle<Outcome>>,
}

impl ChunkThread {
    /// Moves `state` to a new thread; gives it back if none can start.
    pub fn start(
        state: StreamState,
        pipeline: Arc<Pipeline>,
        store: Arc<Store>,
    ) -> Result<ChunkThread, Box<StreamState>> {
        // The state is sent once the thread runs, so that a failed spawn
        // leaves it here.
        let (state_tx, state_rx) = bounded::<StreamState>(1);
        let (tx, rx) = bounded::<Vec<u8>>(QUEUED_WRITES);
        let spawned =
            std::thread::Builder::new()
                .name("ckptfs-cdc".into())
                .spawn(move || -> Outcome {
                    let mut s = state_rx
                        .recv()
                        .map_err(|_| StoreError::Db("chunk thread got no stream".into()))?;
                    for bytes in rx {
                        let StreamState { chunker, builder } = &mut s;
                        chunker.push(&bytes, |c| builder.submit(&pipeline, c));
                        builder.drain(&pipeline, &store, false)?;
                    }
                    Ok(s)
                });
        let thread = match spawned {
            Ok(thread) => thread,
            Err(e) => {
                log::debug!("no chunk thread ({e}); chunking in place");
                return Err(Box::new(state));
            }
        };
        if let Err(unsent) = state_tx.send(state) {
            let _ = thread.join();
            return Err(Box::new(unsent.0));
        }
        Ok(ChunkThread {
            bytes: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues bytes that continue the stream; waits while the queue is
    /// full. Fails with the thread's error if it stopped.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), TreeError> {
        let sent = match &self.bytes {
            Some(tx) => tx.send(bytes.to_vec()).is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The thread ended: only an error ends it early.
        match self.finish() {
            Err(e) => Err(e),
            Ok(_) => Err(TreeError::Invalid("chunk thread ended early")),
        }
    }

    /// Waits until every queued byte is chunked and takes the state back.
    pub fn join(mut self) -> Result<StreamState, TreeError> {
        self.finish()
    }

    fn finish(&mut self) -> Result<StreamState, TreeError> {
        self.bytes.take();
        let Some(thread) = self.thread.take() else {
            return Err(TreeError::Invalid("chunk thread joined twice"));
        };
        match thread.join() {
            Ok(outcome) => outcome.map_err(TreeError::from),
            Err(_) => Err(StoreError::Db("chunk thread panicked".into()).into()),
        }
    }
}

impl Drop for ChunkThread {
    fn drop(&mut self) {
        // A stream given up (truncated away, or its file dropped): let the
        // thread finish what it has, and wait, so nothing outlives the tree.
        if self.thread.is_some() {
            let _ = self.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::testdata::noise;
    use crate::chunk::ChunkParams;
    use crate::ids::{ChunkId, ManifestId};

    fn chunk_ids(
        state: &mut StreamState,
        pipeline: &Pipeline,
        store: &Store,
    ) -> (ManifestId, Vec<ChunkId>) {
        let StreamState { chunker, builder } = state;
        chunker.finish(|c| builder.submit(pipeline, c));
        builder.referenced(pipeline, store).unwrap()
    }

    #[test]
    fn a_stream_chunked_on_its_thread_cuts_and_stores_as_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let pipeline = Arc::new(Pipeline::start(store.clone(), Arc::default(), 2, 4).unwrap());
        let params = ChunkParams::with_average(16 << 10);
        let data = noise(3 << 20, 0xc0de);
        let new_state = |id: u64| StreamState {
            chunker: Chunker::new(params),
            builder: ManifestBuilder::new(ManifestId(id)),
        };

        let mut in_place = new_state(100);
        for piece in data.chunks(1 << 20) {
            let StreamState { chunker, builder } = &mut in_place;
            chunker.push(piece, |c| builder.submit(&pipeline, c));
        }
        let (_, expected) = chunk_ids(&mut in_place, &pipeline, &store);

        let mut thread = ChunkThread::start(new_state(200), pipeline.clone(), store.clone())
            .unwrap_or_else(|_| panic!("no thread"));
        for piece in data.chunks(1 << 20) {
            thread.send(piece).unwrap();
        }
        let mut joined = thread.join().unwrap();
        let (id, got) = chunk_ids(&mut joined, &pipeline, &store);
        assert_eq!(id, ManifestId(200), "the same builder comes back");
        assert!(expected.len() > 100, "{} chunks", expected.len());
        assert_eq!(got, expected);
        for chunk in &got {
            assert!(store.has_chunk(*chunk).unwrap());
        }
    }
}
