//! Which chunk followed which: a guess at where the next chunk ends when a
//! file repeats data written before (`last.pt` = `best.pt`, an unchanged
//! tensor saved again), so the chunker can skip the cut-point search.
//!
//! A guess is only a guess: the chunker takes it only when the bytes at
//! hand hash to the chunk that followed last time, and a content-defined
//! cut depends on nothing but the bytes from the chunk's start to the cut.
//! A taken guess therefore cuts exactly where the search would have, and a
//! wrong or stale one costs one hash. Only cuts made by content (not the
//! end of a file) are learned as successors.
//!
//! Memory is bounded: two generations of at most half the capacity each;
//! when the young one fills, the old one is dropped (an approximate LRU).
//! Keys and guessed ids are the low 64 bits of chunk ids: a collision only
//! makes a guess that the hash check then rejects, or, at 2^-64, a cut
//! that is not content-defined (the chunk's id is always hashed from its
//! bytes, so nothing stored is ever wrong).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::ids::{ChunkId, IdHash};

/// Entries kept by default: about 14 GiB of recent writes at 16 KiB
/// chunks. Each generation then just fits a table of 2^19 buckets (at
/// most 7/8 full) of 25 bytes: about 26 MiB in all.
pub const DEFAULT_CAPACITY: usize = 2 * (7 << 19) / 8;

/// The chunk expected next: its length and the low 64 bits of its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Guess {
    /// Its length in bytes.
    pub len: u32,
    /// The low 64 bits of its id.
    pub id: u64,
}

impl Guess {
    /// True when `id` is the id this guess names.
    pub fn names(&self, id: ChunkId) -> bool {
        self.id == low(id)
    }
}

/// Keys are bits of xxh3 hashes already: hashing them again (SipHash by
/// default) only costs time.
type Map = HashMap<u64, Guess, IdHash>;

/// What followed each recently seen chunk.
pub struct Successors {
    generations: Mutex<[Map; 2]>,
    /// Entries per generation.
    half: usize,
    taken: AtomicU64,
    rejected: AtomicU64,
}

fn low(id: ChunkId) -> u64 {
    id.0 as u64
}

impl Successors {
    /// A map of at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        Successors {
            generations: Mutex::new([Map::default(), Map::default()]),
            half: (capacity / 2).max(1),
            taken: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    /// Learns that `next` (`len` bytes, cut by content) followed `prev`,
    /// and returns what followed `next` the last time it was seen.
    pub fn follow(&self, prev: Option<ChunkId>, next: ChunkId, len: usize) -> Option<Guess> {
        let mut gens = self.generations.lock();
        if let (Some(prev), Ok(len)) = (prev, u32::try_from(len)) {
            let guess = Guess { len, id: low(next) };
            if gens[0].len() >= self.half && !gens[0].contains_key(&low(prev)) {
                gens[1] = std::mem::take(&mut gens[0]);
            }
            gens[0].insert(low(prev), guess);
        }
        let key = low(next);
        gens[0].get(&key).or_else(|| gens[1].get(&key)).copied()
    }

    /// Counts a guess the chunker took (`true`) or rejected.
    pub fn count(&self, taken: bool) {
        let counter = if taken { &self.taken } else { &self.rejected };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Guesses taken and rejected so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.taken.load(Ordering::Relaxed),
            self.rejected.load(Ordering::Relaxed),
        )
    }

    /// Entries held now.
    #[cfg(test)]
    fn entries(&self) -> usize {
        let gens = self.generations.lock();
        gens[0].len() + gens[1].len()
    }
}

impl Default for Successors {
    fn default() -> Self {
        Successors::new(DEFAULT_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_learned_successor_is_returned_for_its_predecessor() {
        let s = Successors::new(16);
        assert_eq!(s.follow(None, ChunkId(1), 100), None);
        assert_eq!(s.follow(Some(ChunkId(1)), ChunkId(2), 200), None);
        let guess = s.follow(Some(ChunkId(7)), ChunkId(1), 50).unwrap();
        assert_eq!(guess.len, 200);
        assert!(guess.names(ChunkId(2)));
        assert!(!guess.names(ChunkId(3)));
    }

    #[test]
    fn memory_stays_bounded_and_recent_entries_survive() {
        let s = Successors::new(100);
        for i in 0..1000u128 {
            s.follow(Some(ChunkId(i)), ChunkId(i + 1), 10);
        }
        assert!(s.entries() <= 100, "{} entries", s.entries());
        assert!(s.follow(None, ChunkId(998), 10).is_some());
        assert!(s.follow(None, ChunkId(5), 10).is_none());
    }
}
