//! Chunk storage: the index, the dedup check and writes of new chunks
//! (verified reads are in `chunk_reads.rs`).
//!
//! `chunk_index` holds a few bytes per chunk so that the dedup check is a
//! bloom-filtered point lookup that never touches chunk values:
//!
//! ```text
//! [raw len u32][stored len u32]                          value in `chunks`
//! [raw len u32][stored len u32][pack u32][offset u64]    record in a pack
//! ```
//!
//! Chunks of small files (the first `VOLATILE_AFTER` bytes of a file) go
//! through the WAL into the `chunks` column family, so a small file's
//! commit needs no extra sync. Chunks of large files go to pack files
//! (`packs.rs`), written once; a commit calls [`Store::persist_chunks`]
//! first, which syncs the packs written since the last commit and records
//! their durable lengths, so no commit can name a chunk that a crash would
//! lose, or, with lazy durability, records what it replaced so that one
//! that did is rolled back at open (`pending.rs`). A stored chunk may be
//! written again to move it next to a new save's chunks (`relocate.rs`).

use std::borrow::Cow;
use std::ops::Range;

use rocksdb::WriteBatch;

use super::packs::{PackLocation, RECORD_HEADER};
use super::relocate::Relocation;
use super::schema::{chunk_key, chunk_shard, CF_CHUNK_INDEX};
use super::{Result, Store, StoreError};
use crate::chunk::{self, Coder};
use crate::ids::ChunkId;

/// A chunk encoded for a pack record, not written yet.
pub struct EncodedChunk {
    /// The chunk.
    pub id: ChunkId,
    /// Where its raw bytes are in the caller's buffer.
    raw: Range<usize>,
    codec_header: [u8; chunk::codec::HEADER_LEN],
    /// The coded payload; `None`: the raw bytes are stored as they are.
    coded: Option<Vec<u8>>,
    /// The record it is stored in already, when it is written again to
    /// move it next to its neighbours (see `relocate.rs`).
    moved_from: Option<PackLocation>,
}

impl EncodedChunk {
    /// Bytes of the raw chunk.
    pub fn raw_len(&self) -> u32 {
        self.raw.len() as u32
    }

    /// Bytes of the record's value (codec header and payload).
    pub fn stored_len(&self) -> u32 {
        let payload = self.coded.as_ref().map_or(self.raw.len(), Vec::len);
        (self.codec_header.len() + payload) as u32
    }

    /// Marks the chunk as stored already in `from`: appending it moves it
    /// there once the next [`Store::persist_chunks`] makes the move safe.
    pub(crate) fn moving_from(mut self, from: PackLocation) -> Self {
        self.moved_from = Some(from);
        self
    }

    /// True when the chunk is moved, not new.
    pub fn is_move(&self) -> bool {
        self.moved_from.is_some()
    }
}

/// What the index says of a chunk.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IndexEntry {
    pub raw_len: u32,
    pub stored_len: u32,
    /// Where its record is, when it is in a pack.
    pub packed: Option<PackLocation>,
}

impl IndexEntry {
    pub(crate) fn decode(v: &[u8]) -> Result<IndexEntry> {
        let u32_at = |at: usize| -> Option<u32> {
            Some(u32::from_le_bytes(v.get(at..at + 4)?.try_into().ok()?))
        };
        let bad = || StoreError::Corrupt("chunk index value".into());
        let raw_len = u32_at(0).ok_or_else(bad)?;
        let stored_len = u32_at(4).ok_or_else(bad)?;
        let packed = match v.len() {
            8 => None,
            20 => {
                let offset = v
                    .get(12..20)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_le_bytes)
                    .ok_or_else(bad)?;
                Some(PackLocation {
                    pack: u32_at(8).ok_or_else(bad)?,
                    offset,
                    len: stored_len
                        .checked_add(RECORD_HEADER as u32)
                        .ok_or_else(bad)?,
                })
            }
            _ => return Err(bad()),
        };
        Ok(IndexEntry {
            raw_len,
            stored_len,
            packed,
        })
    }

    /// The entry as stored, on the stack: one is written per chunk.
    pub(crate) fn encode(&self) -> EncodedEntry {
        let mut e = EncodedEntry {
            bytes: [0; ENCODED_ENTRY_MAX],
            len: 8,
        };
        e.bytes[..4].copy_from_slice(&self.raw_len.to_le_bytes());
        e.bytes[4..8].copy_from_slice(&self.stored_len.to_le_bytes());
        if let Some(loc) = self.packed {
            e.bytes[8..12].copy_from_slice(&loc.pack.to_le_bytes());
            e.bytes[12..20].copy_from_slice(&loc.offset.to_le_bytes());
            e.len = ENCODED_ENTRY_MAX;
        }
        e
    }
}

/// The longest stored index entry: lengths, pack and offset.
const ENCODED_ENTRY_MAX: usize = 20;

/// An [`IndexEntry`] as stored (8 bytes, or 20 with a pack location).
pub(crate) struct EncodedEntry {
    bytes: [u8; ENCODED_ENTRY_MAX],
    len: usize,
}

impl AsRef<[u8]> for EncodedEntry {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl Store {
    /// The index entry of a chunk whose bytes can be relied on.
    pub(crate) fn index_entry(&self, id: ChunkId) -> Result<Option<IndexEntry>> {
        Ok(self
            .any_index_entry(id)?
            .filter(|entry| entry.packed.is_none_or(|loc| self.packs.is_durable(loc))))
    }

    /// The index entry of a chunk, also when it puts the chunk past its
    /// pack's durable length (see `unsynced.rs`).
    pub(crate) fn any_index_entry(&self, id: ChunkId) -> Result<Option<IndexEntry>> {
        // One lookup: the memtable and SST bloom filters answer misses.
        let Some(v) =
            self.db
                .get_pinned_cf_opt(self.cf(CF_CHUNK_INDEX), chunk_key(id), &self.point_reads)?
        else {
            return Ok(None);
        };
        IndexEntry::decode(&v).map(Some)
    }

    /// True when the chunk is already stored.
    pub fn has_chunk(&self, id: ChunkId) -> Result<bool> {
        Ok(self.index_entry(id)?.is_some())
    }

    /// The stored length of a chunk, from the index.
    pub fn chunk_stored_len(&self, id: ChunkId) -> Result<Option<u32>> {
        Ok(self.index_entry(id)?.map(|e| e.stored_len))
    }

    /// Stores a chunk given its raw bytes; returns the stored size. The
    /// caller has checked [`Store::has_chunk`]; storing twice is harmless.
    /// `Some(stream)` puts it in a pack file (see the module docs): chunks
    /// of one stream (one file version) go to the same pack, next to each
    /// other, so reading the file back reads long runs.
    pub fn put_chunk(&self, id: ChunkId, raw: &[u8], packed: Option<u64>) -> Result<usize> {
        if let Some(stream) = packed {
            let encoded = self.encode_chunk(id, raw, 0..raw.len(), &mut Coder::default());
            let stored_len = encoded.stored_len();
            self.put_packed(stream, raw, &[encoded])?;
            return Ok(stored_len as usize);
        }
        let (codec_header, payload) = chunk::encode_parts(raw, self.compression());
        let stored = [&codec_header[..], &payload].concat();
        let entry = IndexEntry {
            raw_len: raw.len() as u32,
            stored_len: stored.len() as u32,
            packed: None,
        };
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(chunk_shard(id)), chunk_key(id), &stored);
        batch.put_cf(self.cf(CF_CHUNK_INDEX), chunk_key(id), entry.encode());
        self.db.write(batch)?;
        Ok(entry.stored_len as usize)
    }

    /// Encodes the chunk `id` whose raw bytes are `data[raw]`, for
    /// [`Store::put_packed`], as the next of `coder`'s run.
    pub fn encode_chunk(
        &self,
        id: ChunkId,
        data: &[u8],
        raw: Range<usize>,
        coder: &mut Coder,
    ) -> EncodedChunk {
        let (codec_header, payload) = coder.encode_parts(&data[raw.clone()], self.compression());
        let coded = match payload {
            Cow::Owned(coded) => Some(coded),
            Cow::Borrowed(_) => None,
        };
        EncodedChunk {
            id,
            raw,
            codec_header,
            coded,
            moved_from: None,
        }
    }

    /// Appends encoded chunks (their raw bytes in `data`) to a pack of
    /// `stream`, side by side in the order given, with one write, and
    /// indexes them with one batch while the pack is held (see
    /// `Packs::appending`). Chunks of one stream go to the same pack, next
    /// to each other, so reading the file back reads long runs. Chunks
    /// marked [`EncodedChunk::moving_from`] are not indexed here: their
    /// moves wait for [`Store::persist_chunks`].
    pub fn put_packed(&self, stream: u64, data: &[u8], chunks: &[EncodedChunk]) -> Result<()> {
        if chunks.is_empty() {
            return Ok(());
        }
        let headers: Vec<[u8; RECORD_HEADER]> = chunks
            .iter()
            .map(|c| {
                let mut header = [0u8; RECORD_HEADER];
                header[..16].copy_from_slice(&c.id.to_bytes());
                header[16..].copy_from_slice(&c.stored_len().to_le_bytes());
                header
            })
            .collect();
        let records: Vec<[&[u8]; 3]> = chunks
            .iter()
            .zip(&headers)
            .map(|(c, header)| {
                let payload = c.coded.as_deref().unwrap_or(&data[c.raw.clone()]);
                [&header[..], &c.codec_header[..], payload]
            })
            .collect();
        self.packs.append_records(stream, &records, |locations| {
            // Sized for the index puts and the unsynced list's (about
            // 40 bytes each): grown from empty, the batch's buffer was
            // reallocated several times per batch.
            let mut batch = WriteBatch::with_capacity_bytes(128 * chunks.len() + 64);
            let mut moves = Vec::new();
            let mut indexed = Vec::with_capacity(chunks.len());
            for (c, &loc) in chunks.iter().zip(locations) {
                let (raw_len, stored_len) = (c.raw.len() as u32, c.stored_len());
                if let Some(from) = c.moved_from {
                    moves.push(Relocation {
                        id: c.id,
                        raw_len,
                        stored_len,
                        from,
                        to: loc,
                    });
                    continue;
                }
                let entry = IndexEntry {
                    raw_len,
                    stored_len,
                    packed: Some(loc),
                };
                batch.put_cf(self.cf(CF_CHUNK_INDEX), chunk_key(c.id), entry.encode());
                indexed.push((c.id, loc));
            }
            self.list_unsynced(&mut batch, &indexed);
            self.db.write(batch)?;
            self.relocations.add(moves);
            Ok(())
        })?;
        Ok(())
    }

    /// Bytes of chunk data in memtables: written, but not yet on disk, so
    /// `statvfs` cannot see them yet.
    pub fn unflushed_chunk_bytes(&self) -> Result<u64> {
        let mut total = 0;
        for name in super::schema::CHUNK_SHARDS.iter().chain([&CF_CHUNK_INDEX]) {
            total += self
                .db
                .property_int_value_cf(self.cf(name), "rocksdb.cur-size-all-mem-tables")?
                .unwrap_or(0);
        }
        Ok(total)
    }

    /// Overwrites a chunk's stored bytes (its value, or the payload of its
    /// pack record) with arbitrary bytes. Only for tests and `verify`
    /// drills that need a corrupt store.
    #[doc(hidden)]
    pub fn overwrite_chunk_value_for_test(&self, id: ChunkId, value: &[u8]) -> Result<()> {
        match self.index_entry(id)?.and_then(|e| e.packed) {
            Some(loc) => {
                use std::os::unix::fs::FileExt;
                let path = self.packs_dir().join(format!("{:08x}.pack", loc.pack));
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| StoreError::io(&path, e))?;
                let n = value.len().min(loc.len as usize - RECORD_HEADER);
                f.write_all_at(&value[..n], loc.offset + RECORD_HEADER as u64)
                    .map_err(|e| StoreError::io(&path, e))?;
            }
            None => {
                self.db
                    .put_cf(self.cf(chunk_shard(id)), chunk_key(id), value)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::IndexEntry;
    use crate::chunk::chunk_id;
    use crate::store::packs::PackLocation;
    use crate::store::{Store, StoreError};

    #[test]
    fn index_entries_round_trip_with_and_without_a_pack() {
        let loc = PackLocation {
            pack: 7,
            offset: 1 << 40,
            len: 1000 + super::RECORD_HEADER as u32,
        };
        for packed in [None, Some(loc)] {
            let entry = IndexEntry {
                raw_len: 16384,
                stored_len: 1000,
                packed,
            };
            let encoded = entry.encode();
            assert_eq!(
                encoded.as_ref().len(),
                if packed.is_some() { 20 } else { 8 }
            );
            let back = IndexEntry::decode(encoded.as_ref()).unwrap();
            assert_eq!((back.raw_len, back.stored_len), (16384, 1000));
            assert_eq!(back.packed, packed);
        }
        assert!(IndexEntry::decode(&[0; 12]).is_err());
    }

    #[test]
    fn chunks_round_trip_dedup_and_detect_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let data = vec![5u8; 30000];
        let id = chunk_id(&data);
        assert!(!store.has_chunk(id).unwrap());
        store.put_chunk(id, &data, None).unwrap();
        assert!(store.has_chunk(id).unwrap());
        assert_eq!(&*store.read_chunk(id).unwrap(), &data[..]);

        let mut bad = crate::chunk::encode(&data);
        let n = bad.len();
        bad[n - 1] ^= 1;
        store.overwrite_chunk_value_for_test(id, &bad).unwrap();
        assert!(matches!(
            store.read_chunk(id),
            Err(StoreError::ChunkCorrupt(_))
        ));
        let missing = chunk_id(b"never stored");
        assert!(matches!(
            store.read_chunk(missing),
            Err(StoreError::ChunkMissing(_))
        ));
    }

    #[test]
    fn every_indexed_chunk_is_listed_in_id_order_from_tables_and_memtable_alike() {
        // The index memtable is a hash of lists by id prefix, not one
        // sorted list: chunks only it holds must still be listed, in
        // order with those in table files (GC counts unlisted ones dead).
        let dir = tempfile::tempdir().unwrap();
        let chunk = |i: u32| -> Vec<u8> { (0..600u32).map(|j| (i * 31 + j * 7) as u8).collect() };
        let mut want = Vec::new();
        {
            let store = Store::open(dir.path()).unwrap();
            for i in 0..300 {
                let raw = chunk(i);
                store.put_chunk(chunk_id(&raw), &raw, None).unwrap();
                want.push(chunk_id(&raw));
            }
        }
        // Reopened: the first 300 are in table files now.
        let store = Store::open(dir.path()).unwrap();
        for i in 300..600 {
            let raw = chunk(i);
            store.put_chunk(chunk_id(&raw), &raw, None).unwrap();
            want.push(chunk_id(&raw));
        }
        want.sort();
        want.dedup();
        let mut listed = Vec::new();
        store
            .for_each_chunk(|c| {
                listed.push(c.id);
                Ok(())
            })
            .unwrap();
        assert_eq!(listed.len(), want.len());
        assert!(listed == want, "chunks listed out of order or missing");
    }

    #[test]
    fn a_second_open_is_refused_while_the_first_holds_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        match Store::open(dir.path()) {
            Err(StoreError::InUse { holder, .. }) => {
                assert_eq!(holder, std::process::id().to_string())
            }
            Err(other) => panic!("wrong error: {other}"),
            Ok(_) => panic!("second open succeeded"),
        }
    }

    #[test]
    fn foreign_and_newer_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), "hi").unwrap();
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::NotAStore { .. })
        ));
        let newer = tempfile::tempdir().unwrap();
        std::fs::write(newer.path().join("CKPTFS"), "ckptfs store format 99\n").unwrap();
        assert!(matches!(
            Store::open(newer.path()),
            Err(StoreError::NewerFormat { found: 99, .. })
        ));
    }
}
