//! Reusable buffers for chunk reads: a run of pack records read with one
//! `pread`, and the chunks of that run decoded side by side.
//!
//! A cold sequential read allocates one or two megabyte-sized buffers per
//! run. Fresh ones cost a tenth of the read's CPU (malloc, zeroing, page
//! faults), so a large buffer goes back to a small pool when the last chunk
//! that borrows it is dropped, and its next user overwrites it as it is:
//! pack reads and decoders write every byte they hand out.

use std::ops::{Deref, DerefMut};

use parking_lot::Mutex;

/// Buffers at least this long are pooled; smaller ones are plain
/// allocations.
const POOLED_FROM: usize = 64 << 10;
/// Larger buffers are not kept.
const POOLED_UP_TO: usize = 4 << 20;
/// Buffers kept at most.
const POOL_SLOTS: usize = 16;

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// A byte buffer of a given length that returns to the pool when dropped.
#[derive(Debug)]
pub struct ReadBuf {
    bytes: Vec<u8>,
    /// The buffer is `bytes[..len]`.
    len: usize,
}

impl ReadBuf {
    /// A buffer of `len` bytes whose contents are unspecified (zeros or
    /// what an earlier user left): the caller overwrites all of it.
    pub fn take(len: usize) -> Self {
        let reused = if (POOLED_FROM..=POOLED_UP_TO).contains(&len) {
            take_pooled(len)
        } else {
            None
        };
        let mut bytes = reused.unwrap_or_default();
        if bytes.len() < len {
            // Only the growth is zeroed.
            bytes.resize(len, 0);
        }
        ReadBuf { bytes, len }
    }

    /// Wraps bytes read elsewhere.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        let len = bytes.len();
        ReadBuf { bytes, len }
    }
}

fn take_pooled(len: usize) -> Option<Vec<u8>> {
    let mut pool = POOL.lock();
    let lens: Vec<usize> = pool.iter().map(Vec::len).collect();
    pick(&lens, len).map(|i| pool.swap_remove(i))
}

/// Which of buffers of lengths `lens` serves a request for `len` bytes:
/// the shortest at least as long and at most twice as long, else the
/// longest shorter one (to be grown), else none.
fn pick(lens: &[usize], len: usize) -> Option<usize> {
    let fitting = (0..lens.len())
        .filter(|&i| (len..=2 * len).contains(&lens[i]))
        .min_by_key(|&i| lens[i]);
    fitting.or_else(|| {
        (0..lens.len())
            .filter(|&i| lens[i] < len)
            .max_by_key(|&i| lens[i])
    })
}

impl Drop for ReadBuf {
    fn drop(&mut self) {
        if (POOLED_FROM..=POOLED_UP_TO).contains(&self.bytes.len()) {
            let mut pool = POOL.lock();
            if pool.len() < POOL_SLOTS {
                pool.push(std::mem::take(&mut self.bytes));
            }
        }
    }
}

impl Deref for ReadBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl DerefMut for ReadBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_takes_the_closest_fit_else_the_longest_shorter_buffer() {
        let lens = [64 << 10, 300 << 10, 256 << 10, 2 << 20];
        assert_eq!(pick(&lens, 200 << 10), Some(2), "256 KiB fits best");
        assert_eq!(pick(&lens, 1 << 20), Some(3), "2 MiB is within twice");
        assert_eq!(pick(&lens, 600 << 10), Some(1), "none fits: grow 300 KiB");
        assert_eq!(pick(&lens, 16 << 10), None, "64 KiB is over twice 16 KiB");
        assert_eq!(pick(&[], 1 << 20), None);
    }

    #[test]
    fn buffers_have_the_asked_length_pooled_or_not() {
        let mut first = ReadBuf::take(300 << 10);
        assert_eq!(first.len(), 300 << 10);
        first.fill(7);
        drop(first);
        // Whatever buffer serves it, a request sees exactly its length.
        let second = ReadBuf::take(200 << 10);
        assert_eq!(second.len(), 200 << 10);
        let small = ReadBuf::take(100);
        assert_eq!(small.len(), 100);
        let grown = ReadBuf::take(3 << 20);
        assert_eq!(grown.len(), 3 << 20);
        let wrapped = ReadBuf::from_vec(vec![1, 2, 3]);
        assert_eq!(&wrapped[..], &[1, 2, 3]);
    }
}
