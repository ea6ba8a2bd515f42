//! Content addressing: the xxh3-128 of a chunk's raw bytes is its id.

use crate::ids::ChunkId;

/// The id of `data`: xxh3-128 of the raw bytes.
pub fn chunk_id(data: &[u8]) -> ChunkId {
    ChunkId(xxhash_rust::xxh3::xxh3_128(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_bytes_give_equal_ids_and_one_bit_changes_it() {
        let a = vec![7u8; 5000];
        let mut b = a.clone();
        assert_eq!(chunk_id(&a), chunk_id(&b));
        b[4999] ^= 1;
        assert_ne!(chunk_id(&a), chunk_id(&b));
    }
}
