//! A Bloom filter over chunk ids for GC's mark phase: bounded memory (two
//! bytes per chunk) whatever the store size. A false positive only keeps a
//! garbage chunk until the next GC; there are no false negatives, so a
//! referenced chunk is never deleted. Chunk ids are already uniform hashes,
//! so the probe positions are taken from their bits.

use crate::ids::ChunkId;

const PROBES: u32 = 8;

/// The filter.
pub struct ChunkBloom {
    bits: Vec<u64>,
    mask: u64,
}

impl ChunkBloom {
    /// Sized for `expected` ids at 16 bits each (about 0.05% false
    /// positives), rounded up to a power of two.
    pub fn with_capacity(expected: u64) -> Self {
        let nbits = (expected.max(1024) * 16).next_power_of_two();
        ChunkBloom {
            bits: vec![0; (nbits / 64) as usize],
            mask: nbits - 1,
        }
    }

    fn positions(&self, id: &ChunkId) -> impl Iterator<Item = u64> + '_ {
        let h1 = id.0 as u64;
        let h2 = ((id.0 >> 64) as u64) | 1;
        (0..PROBES).map(move |i| h1.wrapping_add(h2.wrapping_mul(i as u64)) & self.mask)
    }

    /// Adds an id.
    pub fn insert(&mut self, id: &ChunkId) {
        let positions: Vec<u64> = self.positions(id).collect();
        for p in positions {
            self.bits[(p / 64) as usize] |= 1 << (p % 64);
        }
    }

    /// False only when `id` was never inserted.
    pub fn may_contain(&self, id: &ChunkId) -> bool {
        self.positions(id)
            .all(|p| self.bits[(p / 64) as usize] & (1 << (p % 64)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::chunk_id;

    #[test]
    fn inserted_ids_are_always_found_and_others_rarely() {
        let mut b = ChunkBloom::with_capacity(10_000);
        let ids: Vec<ChunkId> = (0..10_000u32).map(|i| chunk_id(&i.to_le_bytes())).collect();
        for id in &ids {
            b.insert(id);
        }
        assert!(ids.iter().all(|id| b.may_contain(id)));
        let false_hits = (10_000..110_000u32)
            .filter(|i| b.may_contain(&chunk_id(&i.to_le_bytes())))
            .count();
        assert!(false_hits < 200, "{false_hits} false positives in 100000");
    }
}
