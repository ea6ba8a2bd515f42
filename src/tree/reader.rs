//! Reading committed content: from a manifest offset to bytes, through a
//! cache of decoded, verified chunks.
//!
//! Every chunk is checked against its id when it is read from the store
//! (`Store::read_chunk`); the cache only ever holds verified bytes.

use std::sync::Arc;

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

/// Reads file content out of manifests.
pub struct ContentReader {
    store: Arc<Store>,
    chunks: Cache<ChunkId, Arc<Vec<u8>>, ChunkWeight>,
}

impl ContentReader {
    /// A reader over `store` caching up to `cache_bytes` of chunks.
    pub fn new(store: Arc<Store>, cache_bytes: u64) -> Self {
        ContentReader {
            store,
            chunks: Cache::with_weighter((cache_bytes / 16384).max(16) as usize, cache_bytes, ChunkWeight),
        }
    }

    /// A chunk's verified bytes, from the cache or the store.
    pub fn chunk(&self, id: ChunkId) -> Result<Arc<Vec<u8>>, StoreError> {
        if let Some(hit) = self.chunks.get(&id) {
            return Ok(hit);
        }
        let raw = Arc::new(self.store.read_chunk(id)?);
        self.chunks.insert(id, raw.clone());
        Ok(raw)
    }

    fn segment(&self, manifest: ManifestId, offset: u64, hint: &mut ReadHint) -> Result<Option<Arc<Segment>>, StoreError> {
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
    pub fn read(&self, manifest: ManifestId, offset: u64, buf: &mut [u8], hint: &mut ReadHint) -> Result<(), StoreError> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let Some(seg) = (if manifest == ManifestId::EMPTY { None } else { self.segment(manifest, at, hint)? }) else {
                buf[done..].fill(0);
                return Ok(());
            };
            let Some((mut i, mut entry_start)) = seg.locate(at) else {
                buf[done..].fill(0);
                return Ok(());
            };
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
