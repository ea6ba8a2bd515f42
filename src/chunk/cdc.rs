//! Push-based content-defined chunking over `fastcdc`'s v2020 cut function.
//!
//! `write()` hands us data in whatever pieces the kernel chose; the chunk
//! boundaries must not depend on those pieces. FastCDC's cut point depends on
//! how many bytes it may look at when fewer than the average are available,
//! so a cut is only taken once `max` bytes are buffered (or at `finish`):
//! then the result is the same as chunking the whole stream at once.

use fastcdc::v2020::{cut, select_masks, Normalization};

/// Minimum, average and maximum chunk sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkParams {
    /// No cut before this many bytes.
    pub min: usize,
    /// The target average.
    pub avg: usize,
    /// A cut is forced here.
    pub max: usize,
}

impl ChunkParams {
    /// The usual FastCDC spread around an average: min avg/4, max avg*4.
    /// `avg` is clamped to fastcdc's limits and rounded to an even number.
    pub fn with_average(avg: usize) -> Self {
        let avg = avg.clamp(1024, 4 * 1024 * 1024) & !1;
        ChunkParams {
            min: (avg / 4).max(256),
            avg,
            max: (avg * 4).min(16 * 1024 * 1024),
        }
    }
}

impl Default for ChunkParams {
    fn default() -> Self {
        ChunkParams::with_average(16 * 1024)
    }
}

/// Buffers pushed bytes and yields complete chunks.
pub struct Chunker {
    params: ChunkParams,
    mask_s: u64,
    mask_l: u64,
    buf: Vec<u8>,
    /// Bytes of `buf` before this offset were already returned as chunks.
    start: usize,
}

impl Chunker {
    /// A chunker with the given sizes.
    pub fn new(params: ChunkParams) -> Self {
        let (mask_s, mask_l) = select_masks(params.avg, Normalization::Level1);
        Chunker {
            params,
            mask_s,
            mask_l,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// The sizes this chunker cuts with.
    pub fn params(&self) -> ChunkParams {
        self.params
    }

    /// Bytes pushed but not yet returned in a chunk.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Appends `data`; calls `emit` with every chunk that became complete.
    /// Chunks that lie wholly inside `data` are cut from it in place; only
    /// the bytes around a call's boundaries are copied into the buffer.
    pub fn push(&mut self, data: &[u8], mut emit: impl FnMut(&[u8])) {
        let max = self.params.max;
        let mut data = data;
        if self.buffered() == 0 {
            self.buf.clear();
            self.start = 0;
        }
        // Finish the chunk that started in an earlier call, from the buffer.
        while self.buffered() > 0 && !data.is_empty() {
            self.buf.drain(..self.start);
            self.start = 0;
            let old = self.buf.len();
            let take = max.saturating_sub(old).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            if self.buf.len() < max {
                return; // all of `data` is buffered; wait for more
            }
            let cut = self.next_cut(0, max);
            emit(&self.buf[..cut]);
            if cut >= old {
                // The next chunk starts inside `data`: cut it from there.
                self.buf.clear();
                data = &data[cut - old..];
            } else {
                // It starts inside the old bytes: the appended ones are
                // appended again on the next turn.
                self.buf.truncate(old);
                self.start = cut;
            }
        }
        let mut at = 0;
        while data.len() - at >= max {
            let cut = cut_in(&self.params, self.mask_s, self.mask_l, &data[at..at + max]);
            emit(&data[at..at + cut]);
            at += cut;
        }
        self.buf.extend_from_slice(&data[at..]);
    }

    /// Cuts everything still buffered into chunks and resets the chunker.
    pub fn finish(&mut self, mut emit: impl FnMut(&[u8])) {
        while self.buffered() > 0 {
            let end = self.start + self.next_cut(self.start, self.buffered());
            emit(&self.buf[self.start..end]);
            self.start = end;
        }
        self.buf.clear();
        self.start = 0;
    }

    fn next_cut(&self, from: usize, len: usize) -> usize {
        let window = &self.buf[from..from + len.min(self.params.max)];
        cut_in(&self.params, self.mask_s, self.mask_l, window)
    }
}

/// Where the first chunk of `window` ends (at most `window.len()`).
fn cut_in(p: &ChunkParams, mask_s: u64, mask_l: u64, window: &[u8]) -> usize {
    let (_, at) = cut(
        window,
        p.min,
        p.avg,
        p.max,
        mask_s,
        mask_l,
        mask_s << 1,
        mask_l << 1,
    );
    at.max(1)
}

#[cfg(test)]
mod tests {
    use super::super::testdata::noise;
    use super::*;

    fn chunk_all(data: &[u8], piece: usize) -> Vec<Vec<u8>> {
        let mut c = Chunker::new(ChunkParams::default());
        let mut out = Vec::new();
        for part in data.chunks(piece) {
            c.push(part, |ch| out.push(ch.to_vec()));
        }
        c.finish(|ch| out.push(ch.to_vec()));
        out
    }

    #[test]
    fn boundaries_do_not_depend_on_write_sizes() {
        let data = noise(3_000_000, 42);
        let a = chunk_all(&data, 1 << 20);
        let b = chunk_all(&data, 4096);
        let c = chunk_all(&data, 777);
        assert_eq!(a, b);
        assert_eq!(a, c);
        let p = ChunkParams::default();
        for piece in [1, p.min - 1, p.max - 1, p.max, p.max + 1, 3 * p.max + 7] {
            assert_eq!(a, chunk_all(&data, piece), "pieces of {piece} bytes");
        }
        assert_eq!(a.concat(), data);
        let p = ChunkParams::default();
        assert!(a[..a.len() - 1]
            .iter()
            .all(|ch| ch.len() >= p.min && ch.len() <= p.max));
        let avg = data.len() / a.len();
        assert!(avg > 8 * 1024 && avg < 32 * 1024, "average {avg}");
    }

    #[test]
    fn an_insertion_changes_only_nearby_chunks() {
        let data = noise(2_000_000, 7);
        let mut edited = data[..1_000_000].to_vec();
        edited.extend_from_slice(b"inserted bytes");
        edited.extend_from_slice(&data[1_000_000..]);
        let a = chunk_all(&data, 1 << 20);
        let b = chunk_all(&edited, 1 << 20);
        let shared = b.iter().filter(|ch| a.contains(ch)).count();
        assert!(
            shared + 4 >= a.len(),
            "{} of {} chunks shared",
            shared,
            a.len()
        );
    }

    #[test]
    fn zeros_cut_at_max_and_empty_input_gives_nothing() {
        let out = chunk_all(&vec![0u8; 300_000], 65536);
        assert!(out[..out.len() - 1].iter().all(|c| c.len() == 65536));
        assert!(chunk_all(&[], 10).is_empty());
    }
}
