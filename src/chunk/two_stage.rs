//! What the two-stage cut searches (`window`, `rollsum`) share: the
//! nibble tables their byte shuffles look up, drawn from splitmix64, and
//! FastCDC's sizes with its level 1 normalization (`Bounds`): no cut
//! before `min`, `log2(avg) + 1` zero bits in all before `avg` and
//! `log2(avg) - 1` after it, a forced cut at `max`.

/// Bits stage 1 checks: one position in 256 passes it.
pub(super) const STAGE1_BITS: u32 = 8;

/// `N` pairs of 16-byte tables (for the low and the high nibble of a
/// byte) from splitmix64 started at `seed`: the tables one `pshufb`
/// looks up. Part of the store format of the search that uses them.
pub(super) const fn nibble_tables<const N: usize>(seed: u64) -> ([[u8; 16]; N], [[u8; 16]; N]) {
    let mut state = seed;
    let mut low = [[0u8; 16]; N];
    let mut high = [[0u8; 16]; N];
    let mut k = 0;
    while k < N {
        let mut j = 0;
        while j < 16 {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            low[k][j] = splitmix_finish(state);
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            high[k][j] = splitmix_finish(state);
            j += 1;
        }
        k += 1;
    }
    (low, high)
}

const fn splitmix_finish(mut z: u64) -> u8 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) as u8
}

/// The stage 2 bits before and after the average: `(strict, relaxed)`.
pub(super) fn stage2_bits(avg: usize) -> (u32, u32) {
    let log2 = usize::BITS - 1 - avg.max(2).leading_zeros();
    let total = |bits: u32| bits.saturating_sub(STAGE1_BITS).clamp(1, 40);
    (total(log2 + 1), total(log2 - 1))
}

/// The sizes a search runs with, checked: `min` at least the search's
/// window (every position searched has its whole window in the chunk),
/// `min <= avg <= max`.
#[derive(Clone, Copy)]
pub(super) struct Bounds {
    pub min: usize,
    pub avg: usize,
    pub end: usize,
    pub strict: u32,
    pub relaxed: u32,
}

impl Bounds {
    pub fn new(len: usize, window: usize, min: usize, avg: usize, max: usize) -> Self {
        let min = min.max(window);
        let (strict, relaxed) = stage2_bits(avg);
        Bounds {
            min,
            avg: avg.max(min),
            end: len.min(max.max(min)),
            strict,
            relaxed,
        }
    }

    /// The stage 2 bits at position `i`.
    pub fn bits(&self, i: usize) -> u32 {
        if i < self.avg {
            self.strict
        } else {
            self.relaxed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage2_takes_the_bits_stage1_leaves() {
        assert_eq!(stage2_bits(16384), (7, 5));
        assert_eq!(stage2_bits(1024), (3, 1));
    }
}
