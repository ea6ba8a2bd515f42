//! Verified chunk reads: one chunk by its index entry, or a file's chunks
//! in batches, read as runs of neighbouring pack records.
//!
//! Every chunk read is decoded and checked against its id (xxh3-128) before
//! it is handed out: a damaged record is an error, never wrong bytes.

use std::ops::Deref;
use std::sync::Arc;

use super::buffers::ReadBuf;
use super::chunks::IndexEntry;
use super::packs::{PackLocation, RECORD_HEADER};
use super::schema::{chunk_key, chunk_shard, CF_CHUNK_INDEX};
use super::{Result, Store, StoreError};
use crate::chunk::{self, Layout};
use crate::ids::{ChunkId, IdMap};

/// Longest run of pack records read with one `pread`.
const MAX_RUN: u64 = 2 << 20;
/// Records of scattered chunks this close in one pack are read together
/// (with what lies between): cheaper than another read.
const MAX_GAP: u64 = 64 << 10;
/// Runs shorter than this that are not one stretch of a pack are not split
/// further: their chunks are looked up one by one.
const MIN_SPLIT_RUN: usize = 8;

/// A chunk's verified bytes: its own buffer, or a slice of a larger read
/// shared with its neighbours (no copy per chunk).
#[derive(Clone, Debug)]
pub struct ChunkBytes {
    buf: Arc<ReadBuf>,
    start: usize,
    len: usize,
}

impl ChunkBytes {
    fn owned(bytes: Vec<u8>) -> Self {
        let len = bytes.len();
        ChunkBytes {
            buf: Arc::new(ReadBuf::from_vec(bytes)),
            start: 0,
            len,
        }
    }

    /// The same bytes in a buffer of their own, so that keeping them does
    /// not keep the rest of a shared buffer alive.
    pub fn detached(&self) -> Self {
        if self.len == self.buf.len() {
            return self.clone();
        }
        ChunkBytes::owned(self.to_vec())
    }

    fn slice_of(buf: &Arc<ReadBuf>, start: usize, len: usize) -> Self {
        ChunkBytes {
            buf: buf.clone(),
            start,
            len,
        }
    }
}

impl Deref for ChunkBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
}

impl Store {
    /// Reads a chunk, decodes it and checks that it hashes to its id.
    pub fn read_chunk(&self, id: ChunkId) -> Result<ChunkBytes> {
        let entry = self.index_entry(id)?.ok_or(StoreError::ChunkMissing(id))?;
        match entry.packed {
            Some(loc) => self.retry_if_moved(id, loc, |loc| self.read_record(id, loc)),
            None => self.read_inline_chunk(id),
        }
    }

    /// Reads and checks the chunk `id` in the pack record at `loc`.
    pub(super) fn read_record(&self, id: ChunkId, loc: PackLocation) -> Result<ChunkBytes> {
        let record = self
            .packs
            .read(loc.pack, loc.offset, loc.len as usize)
            .map_err(|e| packed_read_error(id, e))?;
        let record = Arc::new(record);
        let mut out = Vec::with_capacity(1);
        decode_records(&record, &[(id, 0, loc.len as usize)], &mut out);
        out.pop()
            .map(|(_, result)| result)
            .unwrap_or(Err(StoreError::ChunkCorrupt(id)))
    }

    /// `read(loc)`, and once more where the index puts the chunk now if
    /// that failed as damaged because the chunk was moved meanwhile (its
    /// old record is punched once the move is durable: `relocate.rs`).
    pub(super) fn retry_if_moved<T>(
        &self,
        id: ChunkId,
        loc: PackLocation,
        read: impl Fn(PackLocation) -> Result<T>,
    ) -> Result<T> {
        match read(loc) {
            Err(StoreError::ChunkCorrupt(_)) => {
                match self.index_entry(id)?.and_then(|e| e.packed) {
                    Some(now) if now != loc => read(now),
                    _ => Err(StoreError::ChunkCorrupt(id)),
                }
            }
            other => other,
        }
    }

    /// A chunk's stored form (codec header and payload), as replication
    /// copies it elsewhere: checked first by decoding it and hashing the
    /// result, so damage is never copied on.
    pub fn read_stored_chunk(&self, id: ChunkId) -> Result<Vec<u8>> {
        let entry = self.index_entry(id)?.ok_or(StoreError::ChunkMissing(id))?;
        let stored = match entry.packed {
            Some(loc) => self.retry_if_moved(id, loc, |loc| {
                let record = self
                    .packs
                    .read(loc.pack, loc.offset, loc.len as usize)
                    .map_err(|e| packed_read_error(id, e))?;
                let value = record_value(id, &record, 0, loc.len as usize)?;
                let raw = chunk::decode(value).map_err(|_| StoreError::ChunkCorrupt(id))?;
                check_hash(id, &raw)?;
                Ok(value.to_vec())
            })?,
            None => {
                let stored = self
                    .db
                    .get_cf(self.cf(chunk_shard(id)), chunk_key(id))
                    .map_err(|e| match e.kind() {
                        rocksdb::ErrorKind::Corruption => StoreError::ChunkCorrupt(id),
                        _ => e.into(),
                    })?
                    .ok_or(StoreError::ChunkMissing(id))?;
                let raw = chunk::decode(&stored).map_err(|_| StoreError::ChunkCorrupt(id))?;
                check_hash(id, &raw)?;
                stored
            }
        };
        Ok(stored)
    }

    fn read_inline_chunk(&self, id: ChunkId) -> Result<ChunkBytes> {
        let stored = match self
            .db
            .get_pinned_cf(self.cf(chunk_shard(id)), chunk_key(id))
        {
            Ok(Some(v)) => v,
            Ok(None) => return Err(StoreError::ChunkMissing(id)),
            Err(e) if e.kind() == rocksdb::ErrorKind::Corruption => {
                return Err(StoreError::ChunkCorrupt(id))
            }
            Err(e) => return Err(e.into()),
        };
        let raw = chunk::decode(&stored).map_err(|_| StoreError::ChunkCorrupt(id))?;
        check_hash(id, &raw)?;
        Ok(ChunkBytes::owned(raw))
    }

    /// Index entries of several chunks, in one batched lookup.
    pub(super) fn index_entries(&self, ids: &[ChunkId]) -> Vec<Result<Option<IndexEntry>>> {
        let keys: Vec<[u8; 16]> = ids.iter().map(|&id| chunk_key(id)).collect();
        self.db
            .batched_multi_get_cf(self.cf(CF_CHUNK_INDEX), &keys, false)
            .into_iter()
            .map(|found| {
                let Some(v) = found? else { return Ok(None) };
                let entry = IndexEntry::decode(&v)?;
                Ok(entry
                    .packed
                    .is_none_or(|loc| self.packs.is_durable(loc))
                    .then_some(entry))
            })
            .collect()
    }

    /// Reads several chunks of one file, given in file order with their
    /// raw lengths: what a sequential reader's prefetch asks for.
    ///
    /// A stream's chunks sit side by side in its pack (see
    /// [`Store::put_chunk`]), so the batch is first taken as one run: the
    /// index is asked only where the first and the last chunk are, that
    /// span is read with one `pread`, and every wanted chunk whose record
    /// the span holds (by the records' headers) is taken from it. The rest
    /// is looked up chunk by chunk and read in one `pread` per group of
    /// neighbouring records.
    pub fn read_chunks(&self, wanted: &[(ChunkId, u32)]) -> Vec<(ChunkId, Result<ChunkBytes>)> {
        let mut out = Vec::with_capacity(wanted.len());
        let mut rest = wanted;
        while !rest.is_empty() {
            let (run, next) = rest.split_at(self.run_len(rest));
            rest = next;
            let missed = self.read_run(run, &mut out);
            self.read_scattered(&missed, &mut out);
        }
        for (id, result) in &mut out {
            if matches!(result, Err(StoreError::ChunkCorrupt(_))) {
                // Moved while this read was under way? `read_chunk` looks
                // it up again, and fails the same way if it was not.
                *result = self.read_chunk(*id);
            }
        }
        out
    }

    /// How many chunks from the front of `wanted` one run read may cover:
    /// as many as fit in [`MAX_RUN`] even if none of them compressed.
    fn run_len(&self, wanted: &[(ChunkId, u32)]) -> usize {
        let record_bound =
            |raw_len: u32| (RECORD_HEADER + chunk::codec::HEADER_LEN) as u64 + raw_len as u64;
        let mut span = 0u64;
        let n = wanted
            .iter()
            .take_while(|(_, raw_len)| {
                span += record_bound(*raw_len);
                span <= MAX_RUN
            })
            .count();
        n.max(1)
    }

    /// Reads the span of one pack between where the index puts the first
    /// and the last chunk of `run`, with one `pread`, and takes from it
    /// every chunk of `run` whose record it holds (walking the records'
    /// headers, so chunks of older versions in between cost nothing).
    /// A run that is not one stretch is split in halves, each read the
    /// same way. Returns the chunks it did not find there.
    fn read_run(
        &self,
        run: &[(ChunkId, u32)],
        out: &mut Vec<(ChunkId, Result<ChunkBytes>)>,
    ) -> Vec<(ChunkId, u32)> {
        let (Some(first), Some(last)) = (run.first(), run.last()) else {
            return Vec::new();
        };
        if run.len() < 2 {
            return run.to_vec();
        }
        let ends = self.read_entries(&[first.0, last.0]);
        let located = |found: &Result<Option<IndexEntry>>| match found {
            Ok(Some(IndexEntry {
                packed: Some(loc), ..
            })) => Some(*loc),
            _ => None,
        };
        let (Some(start), Some(end)) = (located(&ends[0]), located(&ends[1])) else {
            return run.to_vec();
        };
        if start.pack != end.pack
            || end.offset <= start.offset
            || end.end() - start.offset > MAX_RUN
        {
            // Not one stretch of one pack: the run spans two packs, or its
            // chunks were written before appends kept file order. Halves
            // usually are; below that, each chunk is looked up.
            if run.len() < MIN_SPLIT_RUN {
                return run.to_vec();
            }
            let (front, back) = run.split_at(run.len() / 2);
            let mut missed = self.read_run(front, out);
            missed.extend(self.read_run(back, out));
            return missed;
        }
        let Ok(bytes) = self.packs.read(
            start.pack,
            start.offset,
            (end.end() - start.offset) as usize,
        ) else {
            return run.to_vec();
        };
        let bytes = Arc::new(bytes);
        let (records, walked_to) = record_spans(&bytes);
        let mut found = Vec::with_capacity(run.len());
        let mut missed = Vec::new();
        for &(id, raw_len) in run {
            match records.get(&id) {
                Some(&(at, len)) => found.push((id, at, len)),
                None => missed.push((id, raw_len)),
            }
        }
        if !missed.is_empty() && walked_to < bytes.len() {
            // The walk stopped short: what it missed may lie past there.
            missed = self.find_in_span(missed, start, &bytes, &mut found);
        }
        decode_records(&bytes, &found, out);
        missed
    }

    /// The chunks of `missed` whose records the span read at `start` holds
    /// after all, by their index entries: the walk over the span's record
    /// headers stops at a punched hole (a record freed by GC or by a move)
    /// and cannot tell where the next record begins. They join `found`
    /// instead of being read again; the others are returned.
    fn find_in_span(
        &self,
        missed: Vec<(ChunkId, u32)>,
        start: PackLocation,
        span: &[u8],
        found: &mut Vec<(ChunkId, usize, usize)>,
    ) -> Vec<(ChunkId, u32)> {
        let ids: Vec<ChunkId> = missed.iter().map(|&(id, _)| id).collect();
        let span_end = start.offset + span.len() as u64;
        let mut elsewhere = Vec::new();
        for ((id, raw_len), entry) in missed.into_iter().zip(self.read_entries(&ids)) {
            match entry {
                Ok(Some(IndexEntry {
                    packed: Some(loc), ..
                })) if loc.pack == start.pack
                    && loc.offset >= start.offset
                    && loc.end() <= span_end =>
                {
                    found.push((id, (loc.offset - start.offset) as usize, loc.len as usize));
                }
                _ => elsewhere.push((id, raw_len)),
            }
        }
        elsewhere
    }

    /// Reads chunks wherever the index puts them: one `pread` per group of
    /// nearby pack records, all groups announced to the disk first.
    fn read_scattered(&self, ids: &[(ChunkId, u32)], out: &mut Vec<(ChunkId, Result<ChunkBytes>)>) {
        if ids.is_empty() {
            return;
        }
        let just_ids: Vec<ChunkId> = ids.iter().map(|&(id, _)| id).collect();
        let mut packed: Vec<(PackLocation, ChunkId)> = Vec::new();
        for (id, found) in just_ids.iter().copied().zip(self.read_entries(&just_ids)) {
            match found {
                Ok(Some(IndexEntry {
                    packed: Some(loc), ..
                })) => packed.push((loc, id)),
                Ok(Some(_)) => out.push((id, self.read_inline_chunk(id))),
                Ok(None) => out.push((id, Err(StoreError::ChunkMissing(id)))),
                Err(e) => out.push((id, Err(e))),
            }
        }
        packed.sort_unstable_by_key(|(loc, _)| (loc.pack, loc.offset));
        let mut groups = Vec::new();
        let mut rest = &packed[..];
        while let Some((first, _)) = rest.first() {
            let mut n = 1;
            let mut end = first.end();
            while let Some((loc, _)) = rest.get(n) {
                if loc.pack != first.pack
                    || loc.offset < end
                    || loc.offset - end > MAX_GAP
                    || loc.end() - first.offset > MAX_RUN
                {
                    break;
                }
                end = loc.end();
                n += 1;
            }
            let (group, tail) = rest.split_at(n);
            rest = tail;
            groups.push((first.pack, first.offset, end, group));
        }
        if groups.len() > 1 {
            // The disk gets every group's read at once, instead of one
            // small read after another.
            for &(pack, start, end, _) in &groups {
                self.packs.will_need(pack, start, end - start);
            }
        }
        for (pack, start, end, group) in groups {
            match self.packs.read(pack, start, (end - start) as usize) {
                Ok(bytes) => {
                    let records: Vec<_> = group
                        .iter()
                        .map(|(loc, id)| (*id, (loc.offset - start) as usize, loc.len as usize))
                        .collect();
                    decode_records(&Arc::new(bytes), &records, out);
                }
                Err(e) => {
                    // Fall back to one read per record, so one bad record
                    // does not fail its neighbours.
                    log::debug!("run read failed ({e}); reading records one by one");
                    for (_, id) in group {
                        out.push((*id, self.read_chunk(*id)));
                    }
                }
            }
        }
    }
}

/// A failed pack read: bytes missing from the pack mean a damaged store.
fn packed_read_error(id: ChunkId, e: StoreError) -> StoreError {
    match e {
        StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::UnexpectedEof => {
            StoreError::ChunkCorrupt(id)
        }
        StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            StoreError::ChunkMissing(id)
        }
        other => other,
    }
}

/// Where each record of a stretch of a pack starts and how long it is, by
/// its header, and where the walk ended. The stretch starts at a record; a
/// walk that runs into bytes that are not a record (a punched hole,
/// garbage) stops there. Only a hint: every record taken from it is
/// checked against its id and hash.
fn record_spans(bytes: &[u8]) -> (IdMap<(usize, usize)>, usize) {
    let mut spans = IdMap::default();
    let mut at = 0usize;
    while let Some(header) = bytes.get(at..at + RECORD_HEADER) {
        let stored_len = u32::from_le_bytes([header[16], header[17], header[18], header[19]]);
        let len = RECORD_HEADER + stored_len as usize;
        if stored_len as usize <= chunk::codec::HEADER_LEN || at + len > bytes.len() {
            break;
        }
        let Some(id) = ChunkId::from_slice(&header[..16]) else {
            break;
        };
        spans.insert(id, (at, len));
        at += len;
    }
    (spans, at)
}

/// The codec value of the pack record at `buf[at..at + len]`, after
/// checking that the record holds the chunk it should.
fn record_value(id: ChunkId, buf: &[u8], at: usize, len: usize) -> Result<&[u8]> {
    let corrupt = || StoreError::ChunkCorrupt(id);
    let record = buf.get(at..at + len).ok_or_else(corrupt)?;
    let (header, value) = record.split_at_checked(RECORD_HEADER).ok_or_else(corrupt)?;
    let stored_len = header[16..]
        .try_into()
        .map(u32::from_le_bytes)
        .map_err(|_| corrupt())?;
    if header[..16] != id.to_bytes() || stored_len as usize != value.len() {
        return Err(corrupt());
    }
    Ok(value)
}

/// How one record of a run is had: failed, raw in the run's buffer, or
/// decoded into the shared buffer at `at`.
enum Planned<'a> {
    Failed(StoreError),
    Raw(&'a [u8]),
    Coded {
        value: &'a [u8],
        at: usize,
        len: usize,
    },
}

/// Decodes and verifies the records `(id, at, len)` of `buf` (a run read
/// from a pack). Raw values are handed out as slices of `buf`; the coded
/// ones are decoded side by side into one pooled buffer and handed out as
/// slices of it, so a run costs two buffers, not one per chunk.
fn decode_records(
    buf: &Arc<ReadBuf>,
    records: &[(ChunkId, usize, usize)],
    out: &mut Vec<(ChunkId, Result<ChunkBytes>)>,
) {
    let mut decoded_len = 0usize;
    let mut plans: Vec<Planned> = records
        .iter()
        .map(|&(id, at, len)| {
            let value = match record_value(id, buf, at, len) {
                Ok(value) => value,
                Err(e) => return Planned::Failed(e),
            };
            match chunk::layout(value) {
                Ok(Layout::Raw(raw)) => Planned::Raw(raw),
                Ok(Layout::Coded(len)) => {
                    decoded_len += len;
                    Planned::Coded {
                        value,
                        at: decoded_len - len,
                        len,
                    }
                }
                Err(_) => Planned::Failed(StoreError::ChunkCorrupt(id)),
            }
        })
        .collect();
    let mut decoded = ReadBuf::take(decoded_len);
    for (plan, &(id, ..)) in plans.iter_mut().zip(records) {
        if let Planned::Coded { value, at, len } = *plan {
            if chunk::decode_into(value, &mut decoded[at..at + len]).is_err() {
                *plan = Planned::Failed(StoreError::ChunkCorrupt(id));
            }
        }
    }
    let decoded = Arc::new(decoded);
    for (plan, &(id, ..)) in plans.into_iter().zip(records) {
        let result = match plan {
            Planned::Failed(e) => Err(e),
            Planned::Raw(raw) => check_hash(id, raw).map(|()| {
                let start = raw.as_ptr() as usize - buf.as_ptr() as usize;
                ChunkBytes::slice_of(buf, start, raw.len())
            }),
            Planned::Coded { at, len, .. } => check_hash(id, &decoded[at..at + len])
                .map(|()| ChunkBytes::slice_of(&decoded, at, len)),
        };
        out.push((id, result));
    }
}

fn check_hash(id: ChunkId, raw: &[u8]) -> Result<()> {
    if chunk::chunk_id(raw) != id {
        return Err(StoreError::ChunkCorrupt(id));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::chunk::chunk_id;
    use crate::store::{Store, StoreError};

    fn chunk(seed: u32, len: usize) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) ^ seed).to_le_bytes()[1])
            .collect()
    }

    #[test]
    fn a_run_with_a_punched_record_takes_the_chunks_past_the_hole_from_its_read() {
        use crate::store::relocate::tests::location;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let file: Vec<Vec<u8>> = (0..10)
            .map(|i| crate::chunk::testdata::noise(20_000, 2 * i + 41))
            .collect();
        for c in &file {
            store.put_chunk(chunk_id(c), c, Some(1)).unwrap();
        }
        store.persist_chunks().unwrap();
        // A record in the middle freed (as GC or a move frees one): its
        // whole blocks read as zeros, and the header walk stops there.
        store
            .packs
            .punch(&[location(&store, chunk_id(&file[4]))])
            .unwrap();
        let mut kept: Vec<&Vec<u8>> = file.iter().collect();
        kept.remove(4);
        let run: Vec<_> = kept.iter().map(|c| (chunk_id(c), c.len() as u32)).collect();
        let mut out = Vec::new();
        let missed = store.read_run(&run, &mut out);
        assert!(missed.is_empty(), "{} chunks read again", missed.len());
        assert_eq!(out.len(), kept.len());
        for (id, result) in out {
            let c = kept.iter().find(|c| chunk_id(c) == id).unwrap();
            assert_eq!(&*result.unwrap(), &c[..]);
        }
    }

    #[test]
    fn a_save_read_before_its_moves_apply_reads_the_moved_chunks_in_its_stretch() {
        use crate::chunk::testdata::noise;
        use crate::store::relocate::tests::{apply_moves, location, store_then_move};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let old = noise(40_000, 11);
        let (id, from, fresh_id) = store_then_move(&store, &old, 2);
        assert_eq!(location(&store, id), from, "the move is not applied yet");
        // The save's new chunk and the moved one, as its reader asks: one
        // run of the save's pack, not a run broken into two packs.
        let run = [(fresh_id, 30_000), (id, old.len() as u32)];
        let mut out = Vec::new();
        let missed = store.read_run(&run, &mut out);
        assert!(missed.is_empty(), "{} chunks looked up again", missed.len());
        let moved = out.iter().find(|(got, _)| *got == id).unwrap();
        assert_eq!(&moved.1.as_ref().unwrap()[..], &old[..]);
        // Applied, the index says the same; the old record is freed.
        apply_moves(&store);
        assert_ne!(location(&store, id), from);
        let again = store.read_chunks(&run);
        assert!(again.iter().all(|(_, r)| r.is_ok()));
    }

    #[test]
    fn batches_read_runs_and_whatever_breaks_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // Stream 1 holds a file's chunks side by side; stream 2 one chunk
        // that a later version put in the middle of the file.
        let file: Vec<Vec<u8>> = (0..12).map(|i| chunk(i, 9000 + 37 * i as usize)).collect();
        for c in &file {
            store.put_chunk(chunk_id(c), c, Some(1)).unwrap();
        }
        let changed = chunk(99, 12_000);
        store
            .put_chunk(chunk_id(&changed), &changed, Some(2))
            .unwrap();
        let small = chunk(7, 3000);
        store.put_chunk(chunk_id(&small), &small, None).unwrap();
        store.persist_chunks().unwrap();
        // Read whole, the file is one run.
        let whole: Vec<_> = file.iter().map(|c| (chunk_id(c), c.len() as u32)).collect();
        for ((id, result), c) in store.read_chunks(&whole).into_iter().zip(&file) {
            assert_eq!(id, chunk_id(c));
            assert_eq!(&*result.unwrap(), &c[..]);
        }
        let victim = chunk_id(&file[1]);
        let mut damaged = crate::chunk::encode(&file[1]);
        damaged[100] ^= 0x40;
        store
            .overwrite_chunk_value_for_test(victim, &damaged)
            .unwrap();

        let mut version: Vec<&Vec<u8>> = file.iter().collect();
        version[5] = &changed;
        version.insert(8, &small);
        let mut wanted: Vec<_> = version
            .iter()
            .map(|c| (chunk_id(c), c.len() as u32))
            .collect();
        wanted.insert(3, (chunk_id(b"never stored"), 10));
        let got = store.read_chunks(&wanted);
        assert_eq!(got.len(), wanted.len());
        for (id, result) in got {
            match version.iter().find(|c| chunk_id(c) == id) {
                Some(_) if id == victim => {
                    assert!(matches!(result, Err(StoreError::ChunkCorrupt(_))))
                }
                Some(c) => assert_eq!(&*result.unwrap(), &c[..]),
                None => assert!(matches!(result, Err(StoreError::ChunkMissing(_)))),
            }
        }
    }
}
