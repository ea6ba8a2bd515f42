//! Reading committed content: from a manifest offset to bytes, through a
//! cache of decoded, verified chunks.
//!
//! Every chunk is checked against its id when it is read from the store
//! (`Store::read_chunk`); the cache only ever holds verified bytes.
//!
//! A read also queues the chunks of the next [`READ_AHEAD`] bytes to a small
//! prefetch pool, so that a cold sequential read keeps several chunk reads
//! in flight instead of one disk round trip per chunk. Loads go through the
//! cache's `get_or_insert_with`: a reader that needs a chunk a prefetcher is
//! loading waits for that load instead of starting a second one.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Sender};

use quick_cache::sync::Cache;
use quick_cache::Weighter;

use crate::ids::{ChunkId, ManifestId};
use crate::store::manifest::Entry;
use crate::store::{Store, StoreError};

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

    /// Index of the entry holding `offset` and that entry's start.
    fn locate(&self, offset: u64) -> Option<(usize, u64)> {
        let i = self.ends.partition_point(|&end| end <= offset);
        let entry_start = if i == 0 { self.start } else { self.ends[i - 1] };
        (i < self.entries.len()).then_some((i, entry_start))
    }
}

/// Where a sequential reader left off: saves a segment lookup per read.
pub type ReadHint = Option<Arc<Segment>>;

#[derive(Clone)]
struct ChunkWeight;

impl Weighter<ChunkId, Arc<Vec<u8>>> for ChunkWeight {
    fn weight(&self, _key: &ChunkId, val: &Arc<Vec<u8>>) -> u64 {
        val.len() as u64 + 64
    }
}

type ChunkCache = Cache<ChunkId, Arc<Vec<u8>>, ChunkWeight>;

/// Bytes beyond a read whose chunks are prefetched.
pub const READ_AHEAD: u64 = 4 << 20;
const PREFETCH_THREADS: usize = 4;

/// Reads file content out of manifests.
pub struct ContentReader {
    store: Arc<Store>,
    chunks: Arc<ChunkCache>,
    prefetch: Option<Sender<ChunkId>>,
    prefetchers: Vec<JoinHandle<()>>,
}

fn load(store: &Store, cache: &ChunkCache, id: ChunkId) -> Result<Arc<Vec<u8>>, StoreError> {
    cache.get_or_insert_with(&id, || store.read_chunk(id).map(Arc::new))
}

impl ContentReader {
    /// A reader over `store` caching up to `cache_bytes` of chunks.
    pub fn new(store: Arc<Store>, cache_bytes: u64) -> Self {
        let chunks = Arc::new(Cache::with_weighter(
            (cache_bytes / 16384).max(16) as usize,
            cache_bytes,
            ChunkWeight,
        ));
        let (tx, rx) = bounded::<ChunkId>(1024);
        let mut prefetchers = Vec::new();
        for i in 0..PREFETCH_THREADS {
            let (rx, store, chunks) = (rx.clone(), store.clone(), chunks.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("ckptfs-prefetch-{i}"))
                .spawn(move || {
                    for id in rx.iter() {
                        // A failure here is reported when the reader itself
                        // asks for the chunk.
                        let _ = load(&store, &chunks, id);
                    }
                });
            match spawned {
                Ok(h) => prefetchers.push(h),
                Err(e) => log::warn!("no prefetch thread: {e}"),
            }
        }
        ContentReader {
            store,
            chunks,
            prefetch: (!prefetchers.is_empty()).then_some(tx),
            prefetchers,
        }
    }

    /// A chunk's verified bytes, from the cache or the store.
    pub fn chunk(&self, id: ChunkId) -> Result<Arc<Vec<u8>>, StoreError> {
        load(&self.store, &self.chunks, id)
    }

    /// Queues the chunks of `seg` from entry `i` that are not cached, up to
    /// `bytes` of file data.
    fn prefetch(&self, seg: &Segment, mut i: usize, bytes: u64) {
        let Some(tx) = &self.prefetch else { return };
        let mut queued = 0u64;
        while i < seg.entries.len() && queued < bytes {
            if let Entry::Chunk { id, len } = seg.entries[i] {
                if !self.chunks.contains_key(&id) && tx.try_send(id).is_err() {
                    return;
                }
                queued += len as u64;
            } else {
                queued += seg.entries[i].len();
            }
            i += 1;
        }
    }

    fn segment(
        &self,
        manifest: ManifestId,
        offset: u64,
        hint: &mut ReadHint,
    ) -> Result<Option<Arc<Segment>>, StoreError> {
        if let Some(seg) = hint.as_ref().filter(|s| s.covers(manifest, offset)) {
            return Ok(Some(seg.clone()));
        }
        let found = self.store.segment_at(manifest, offset)?;
        let seg = found.map(|(start, entries)| Arc::new(Segment::new(manifest, start, entries)));
        match seg {
            Some(s) if s.covers(manifest, offset) => {
                *hint = Some(s.clone());
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
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let Some(seg) = (if manifest == ManifestId::EMPTY {
                None
            } else {
                self.segment(manifest, at, hint)?
            }) else {
                buf[done..].fill(0);
                return Ok(());
            };
            let Some((mut i, mut entry_start)) = seg.locate(at) else {
                buf[done..].fill(0);
                return Ok(());
            };
            self.prefetch(&seg, i, (buf.len() - done) as u64 + READ_AHEAD);
            while i < seg.entries.len() && done < buf.len() {
                let at = offset + done as u64;
                let entry = seg.entries[i];
                let skip = (at - entry_start) as usize;
                let take = ((entry.len() - skip as u64) as usize).min(buf.len() - done);
                let out = &mut buf[done..done + take];
                match entry {
                    Entry::Hole { .. } => out.fill(0),
                    Entry::Chunk { id, len } => {
                        let data = self.chunk(id)?;
                        if data.len() != len as usize {
                            return Err(StoreError::ChunkCorrupt(id));
                        }
                        out.copy_from_slice(&data[skip..skip + take]);
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
        while let Some((start, entries)) = self.store.segment_from(manifest, from)? {
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
