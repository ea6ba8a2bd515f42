//! Manifests: the ordered list of chunks (and holes) that make one version
//! of a file, stored as segments of at most [`SEGMENT_ENTRIES`] entries.
//!
//! A segment's key carries the file offset where it starts, so finding the
//! chunk under an offset is one `seek_for_prev` plus a scan of one segment,
//! and a 20 GiB file never has to be held in memory as one list.

use super::bytes::{Dec, Enc};
use super::StoreError;
use crate::ids::ChunkId;

/// Entries per stored segment (about 16 MiB of data at 16 KiB chunks).
pub const SEGMENT_ENTRIES: usize = 1024;

const KIND_CHUNK: u8 = 0;
const KIND_HOLE: u8 = 1;

/// One run of a file's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// `len` bytes stored as chunk `id`.
    Chunk {
        /// The chunk.
        id: ChunkId,
        /// Its raw length.
        len: u32,
    },
    /// `len` zero bytes, nothing stored.
    Hole {
        /// How many zeros.
        len: u64,
    },
}

impl Entry {
    /// How many file bytes the entry covers.
    pub fn len(&self) -> u64 {
        match *self {
            Entry::Chunk { len, .. } => len as u64,
            Entry::Hole { len } => len,
        }
    }

    /// True for a zero-length entry (never stored).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Encodes a segment.
pub fn encode_segment(entries: &[Entry]) -> Vec<u8> {
    let mut e = Enc::new();
    e.u32(entries.len() as u32);
    for entry in entries {
        match *entry {
            Entry::Chunk { id, len } => {
                e.u8(KIND_CHUNK).u32(len).u128(id.0);
            }
            Entry::Hole { len } => {
                e.u8(KIND_HOLE).u64(len);
            }
        }
    }
    e.finish()
}

/// Decodes a segment.
pub fn decode_segment(buf: &[u8]) -> Result<Vec<Entry>, StoreError> {
    let mut d = Dec::new(buf, "manifest segment");
    let count = d.u32()? as usize;
    if count > SEGMENT_ENTRIES * 4 {
        return Err(StoreError::Corrupt(format!(
            "manifest segment of {count} entries"
        )));
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        out.push(match d.u8()? {
            KIND_CHUNK => {
                let len = d.u32()?;
                Entry::Chunk {
                    id: ChunkId(d.u128()?),
                    len,
                }
            }
            KIND_HOLE => Entry::Hole { len: d.u64()? },
            other => {
                return Err(StoreError::Corrupt(format!("manifest entry kind {other}")));
            }
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_round_trip_and_reject_garbage() {
        let entries = vec![
            Entry::Chunk {
                id: ChunkId(0xabc),
                len: 16384,
            },
            Entry::Hole { len: 1 << 40 },
            Entry::Chunk {
                id: ChunkId(u128::MAX),
                len: 1,
            },
        ];
        let bytes = encode_segment(&entries);
        assert_eq!(decode_segment(&bytes).unwrap(), entries);
        assert!(decode_segment(&bytes[..bytes.len() - 3]).is_err());
        assert!(decode_segment(&[1, 0, 0, 0, 9]).is_err());
    }
}
