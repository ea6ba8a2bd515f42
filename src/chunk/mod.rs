//! The chunk layer: content-defined chunking, hashing and the stored codec
//! (lz4, or byte lanes for float tensors).
//!
//! Pure functions over byte slices: no I/O, no RocksDB, no FUSE. Everything
//! above uses it to turn a byte stream into content-addressed chunks.

pub mod cdc;
pub mod codec;
mod gear;
pub mod hash;
pub mod lane_plans;
pub mod lanes;
mod lanes_simd;
pub mod rollsum;
pub mod successors;
#[cfg(test)]
pub(crate) mod testdata;
mod two_stage;
pub mod window;

pub use cdc::{ChunkParams, Chunker, Cut, CutSearch};
pub use codec::{
    decode, decode_into, encode, encode_parts, layout, CodecError, Coder, Compression, Layout,
    MAX_CHUNK_LEN,
};
pub use hash::chunk_id;
pub use successors::Successors;

/// True when every byte is zero: such chunks are stored as holes.
pub fn is_zero(data: &[u8]) -> bool {
    // OR-folding fixed blocks vectorizes; an early exit per block keeps it
    // cheap on data that is not zero.
    data.chunks(256)
        .all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn is_zero_sees_a_single_set_byte() {
        let mut v = vec![0u8; 1001];
        assert!(super::is_zero(&v));
        v[1000] = 1;
        assert!(!super::is_zero(&v));
        v[1000] = 0;
        v[3] = 1;
        assert!(!super::is_zero(&v));
    }
}
