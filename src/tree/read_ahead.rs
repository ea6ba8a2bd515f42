//! The set of chunks fetched ahead of a sequential reader, waiting for
//! their first read: local reads (`reader.rs`) and reads from a remote
//! (`remote/view.rs`) both keep one.
//!
//! Kept apart from the read cache on purpose: a cache admits new entries on
//! probation and evicts a burst of them before their first read, which then
//! costs a second fetch each. The set is bounded in bytes; past the bound
//! the oldest chunks go (left by readers that stopped or seeked away).

use std::collections::VecDeque;

use crate::ids::{ChunkId, IdMap};

/// Fetched chunks not read yet, oldest first.
pub struct ReadAhead<V> {
    max_bytes: u64,
    bytes: u64,
    chunks: IdMap<(V, u64)>,
    /// Insertion order; may still name chunks taken since (see `take`).
    order: VecDeque<ChunkId>,
}

impl<V> ReadAhead<V> {
    /// An empty set holding at most `max_bytes` of chunks.
    pub fn new(max_bytes: u64) -> Self {
        ReadAhead {
            max_bytes,
            bytes: 0,
            chunks: IdMap::default(),
            order: VecDeque::new(),
        }
    }

    /// Adds a chunk of `len` bytes, dropping the oldest past the bound.
    pub fn insert(&mut self, id: ChunkId, value: V, len: u64) {
        self.bytes += len;
        match self.chunks.insert(id, (value, len)) {
            Some((_, old)) => self.bytes -= old,
            None => self.order.push_back(id),
        }
        while self.bytes > self.max_bytes {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some((_, len)) = self.chunks.remove(&oldest) {
                self.bytes -= len;
            }
        }
    }

    /// True when the chunk is waiting.
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.chunks.contains_key(id)
    }

    /// Takes a waiting chunk out of the set.
    pub fn take(&mut self, id: &ChunkId) -> Option<V> {
        let (value, len) = self.chunks.remove(id)?;
        self.bytes -= len;
        // Its id stays in `order` until it comes up; removing it from the
        // middle would cost a scan each time, so stale ids are swept out
        // once they are the majority.
        if self.order.len() > 2 * self.chunks.len() + 64 {
            let chunks = &self.chunks;
            self.order.retain(|id| chunks.contains_key(id));
        }
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_chunks_go_past_the_bound_and_taken_ones_are_gone() {
        let mut set = ReadAhead::new(100);
        for i in 0..5u128 {
            set.insert(ChunkId(i), i, 30);
        }
        // 150 bytes inserted, 100 kept: chunks 0 and 1 were dropped.
        assert!(!set.contains(&ChunkId(0)) && !set.contains(&ChunkId(1)));
        assert_eq!(set.take(&ChunkId(3)), Some(3));
        assert_eq!(set.take(&ChunkId(3)), None);
        // Room for one more now; 2 is the oldest left when it overflows.
        set.insert(ChunkId(9), 9, 30);
        assert!(set.contains(&ChunkId(2)));
        set.insert(ChunkId(10), 10, 30);
        assert!(!set.contains(&ChunkId(2)));
        assert!(set.contains(&ChunkId(4)) && set.contains(&ChunkId(9)));
    }

    #[test]
    fn ids_of_taken_chunks_do_not_pile_up() {
        let mut set = ReadAhead::new(u64::MAX);
        for i in 0..10_000u128 {
            set.insert(ChunkId(i), (), 1);
            assert_eq!(set.take(&ChunkId(i)), Some(()));
        }
        assert!(set.order.len() <= 64 + 1, "{} stale ids", set.order.len());
    }
}
