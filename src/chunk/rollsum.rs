//! The `rollsum` cut-point search, the first half of the cut search new
//! stores use (`CutSearch::Rollsum`): a chunk ends after byte `i` when a
//! rolling sum over the 64 bytes up to it, and then a hash of those same
//! 64 bytes, both pass. When no position of the window passes, `cdc.rs`
//! cuts where FastCDC would: see below.
//!
//! ```text
//! stage 1:  s(i)  = T[b(i-63)] + ... + T[b(i)]   (mod 256)
//!           T[b]  = A[b & 15] + B[b >> 4]        (2 tables of 16 bytes)
//! stage 2:  h(i)  = mix of the eight little-endian words of b(i-63) ..= b(i)
//! cut after byte i  when  s(i) == 0x55  and  the top `s` bits of h(i) are 0
//! ```
//!
//! Stage 1 lets through one position in 256 on any data whose windows
//! vary. Sixteen positions are summed at once: two `pshufb` look up `T`,
//! the sum rolls by adding the new bytes' `T` and taking away those 64
//! bytes back, and four byte shifts make the prefix sums within a block;
//! with AVX2, 32 at once (each half of the register a block, the low
//! half's total carried into the high half). That is about half the work
//! per byte of FastCDC's gear hash (a chain of one shift, two loads and an
//! add per byte). Stage 2, run on the positions stage 1 lets through, is
//! a strong hash of the window, so whether a window cuts depends on all of
//! its 64 bytes. Sizes and normalization are FastCDC's
//! (`two_stage::Bounds`).
//!
//! A sum cannot tell apart windows that hold the same bytes in another
//! order: on data of two or three byte values (random bits, ternary
//! weights as int8) `s` takes only a few values, and may never be 0x55.
//! The target is odd, so a run of one byte value, or any pattern whose
//! period divides 64, never passes. Where no position from `min` to the
//! window's end passes, the chunk is cut by FastCDC's search instead:
//! that is still a function of the chunk's own bytes, so cuts stay
//! content-defined, and such data is cut as well as FastCDC cuts it.
//!
//! The tables, the target and the mix are part of the store format. The
//! scalar search ([`find_scalar`]) is the definition; the shuffles must
//! agree with it byte for byte, and a test pins the cuts of a fixed input.

use super::two_stage::{nibble_tables, Bounds};

/// Bytes summed and hashed per position.
const WINDOW: usize = 64;
/// The stage 1 sum that passes.
const TARGET: u8 = 0x55;

/// `A` and `B` of the module docs.
const TABLES: ([[u8; 16]; 1], [[u8; 16]; 1]) = nibble_tables::<1>(0x6b63_7074_6673_0002);

/// `T[b]`.
fn table(b: u8) -> u8 {
    TABLES.0[0][(b & 15) as usize].wrapping_add(TABLES.1[0][(b >> 4) as usize])
}

/// The odd constants stage 2 mixes the window's words with.
const MIX: [u64; 8] = [
    0x9e37_79b9_7f4a_7c15,
    0xbf58_476d_1ce4_e5b9,
    0x94d0_49bb_1331_11eb,
    0xd6e8_feb8_6659_fd93,
    0xa076_1d64_78bd_642f,
    0xe703_7ed1_a0b4_28db,
    0x8ebc_6af0_9c88_c6e3,
    0x5899_65cc_7537_4cc3,
];

/// Stage 2's hash of the window ending at `i`: its words XORed with
/// `MIX`, multiplied in pairs with both halves of each 128-bit product
/// folded together (as xxh3 does), summed, then xxh3's avalanche.
fn window_hash(window: &[u8; WINDOW]) -> u64 {
    let (words, _) = window.as_chunks::<8>();
    let word = |k: usize| u64::from_le_bytes(words[k]) ^ MIX[k];
    let fold = |a: u64, b: u64| {
        let product = u128::from(a) * u128::from(b);
        product as u64 ^ (product >> 64) as u64
    };
    let acc = (0..4).fold(0u64, |acc, k| {
        acc.wrapping_add(fold(word(2 * k), word(2 * k + 1)))
    });
    let acc = (acc ^ (acc >> 37)).wrapping_mul(0x1656_6791_9e37_79f9);
    acc ^ (acc >> 32)
}

/// Stage 2 at position `i` with `bits` top bits that must be 0.
#[inline(always)]
fn stage2(d: &[u8], i: usize, bits: u32) -> bool {
    let window = (i + 1)
        .checked_sub(WINDOW)
        .and_then(|from| d.get(from..=i))
        .and_then(|w| <&[u8; WINDOW]>::try_from(w).ok());
    window.is_some_and(|w| window_hash(w) >> (64 - bits) == 0)
}

/// Where the first chunk of `source` ends by this search, if a position
/// from `min` to `min(len, max)` passes: the definition, one position at
/// a time.
pub fn find_scalar(source: &[u8], min: usize, avg: usize, max: usize) -> Option<usize> {
    let b = Bounds::new(source.len(), WINDOW, min, avg, max);
    if source.len() <= b.min {
        return None;
    }
    scan_from(source, &b, b.min, sum_of_63_before(source, b.min))
}

/// The sum of `T` over the 63 bytes before `at` (`at >= 64`).
fn sum_of_63_before(d: &[u8], at: usize) -> u8 {
    d[at + 1 - WINDOW..at]
        .iter()
        .fold(0u8, |s, &x| s.wrapping_add(table(x)))
}

/// The scalar search from position `from` on, given the sum of the 63
/// bytes before it.
fn scan_from(d: &[u8], b: &Bounds, from: usize, mut sum: u8) -> Option<usize> {
    for i in from..b.end {
        sum = sum.wrapping_add(table(d[i]));
        if sum == TARGET && stage2(d, i, b.bits(i)) {
            return Some(i + 1);
        }
        sum = sum.wrapping_sub(table(d[i + 1 - WINDOW]));
    }
    None
}

/// What [`find`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// The chunk ends here: the cut of [`find_scalar`].
    Cut(usize),
    /// No position before this one passes, for this chunk or for one
    /// that starts later (see [`find`]).
    Quiet(usize),
}

/// The same cut as [`find_scalar`], 16 positions a step where the CPU
/// has SSSE3, searching from `quiet` (at least `min`) on.
///
/// When nothing passes, the window was searched to its end `e`
/// (`Found::Quiet(e)`). Whether a position passes depends only on its 64
/// bytes and on whether it lies before `avg` (7 bits of stage 2) or not
/// (5): a chunk that starts later, at `c`, checks each position with as
/// many bits or more. So none of those positions passes for it either,
/// and its search may start at `e - c`.
pub fn find(source: &[u8], min: usize, avg: usize, max: usize, quiet: usize) -> Found {
    let b = Bounds::new(source.len(), WINDOW, min, avg, max);
    let from = quiet.max(b.min);
    if from >= b.end {
        return Found::Quiet(from);
    }
    let cut = match search_wide(source, &b, from) {
        Ok(cut) => Some(cut),
        Err((from, sum)) => scan_from(source, &b, from, sum),
    };
    cut.map_or(Found::Quiet(b.end), Found::Cut)
}

/// Whole blocks of 16 positions from `from` (at least `b.min`): the cut,
/// or where the blocks ended and the sum of the 63 bytes before it (the
/// caller searches the rest).
#[cfg(all(target_arch = "x86_64", target_feature = "ssse3"))]
fn search_blocks(d: &[u8], b: &Bounds, from: usize) -> Result<usize, (usize, u8)> {
    use safe_arch::{
        add_i8_m128i, bitand_m128i, byte_shl_imm_u128_m128i as shift_in, cmp_eq_mask_i8_m128i,
        load_unaligned_m128i, m128i, move_mask_i8_m128i, set_splat_i8_m128i, shr_imm_u16_m128i,
        shuffle_av_i8z_all_m128i as shuffle, sub_i8_m128i, sum_of_u8_abs_diff_m128i, zeroed_m128i,
    };
    let low_nibble = set_splat_i8_m128i(0x0f);
    let (low, high) = (m128i::from(TABLES.0[0]), m128i::from(TABLES.1[0]));
    // `T` of the 16 bytes at `p`.
    let t = |p: usize| {
        let v = d
            .get(p..p + 16)
            .and_then(|s| <&[u8; 16]>::try_from(s).ok())
            .map(load_unaligned_m128i)?;
        let lo = bitand_m128i(v, low_nibble);
        let hi = bitand_m128i(shr_imm_u16_m128i::<4>(v), low_nibble);
        Some(add_i8_m128i(shuffle(low, lo), shuffle(high, hi)))
    };
    let p = from;
    let window = p - WINDOW;
    let (Some(t0), Some(t1), Some(t2), Some(t3)) =
        (t(window), t(window + 16), t(window + 32), t(window + 48))
    else {
        return Err((p, sum_of_63_before(d, p)));
    };
    // `T` of the 64 bytes before the block, oldest first, and their sum.
    let mut behind = [t0, t1, t2, t3];
    let total = add_i8_m128i(add_i8_m128i(t0, t1), add_i8_m128i(t2, t3));
    let halves: [u64; 2] = sum_of_u8_abs_diff_m128i(total, zeroed_m128i()).into();
    let mut sum_before = set_splat_i8_m128i(halves[0].wrapping_add(halves[1]) as i8);
    let last_byte = set_splat_i8_m128i(15);
    let target = set_splat_i8_m128i(TARGET as i8);
    // Position j's sum: the sum before the block plus, for every position
    // up to j, its byte's T less that of the byte 64 back.
    let block_sums = |entering: m128i, leaving: m128i, sum_before: m128i| {
        let step = sub_i8_m128i(entering, leaving);
        let step = add_i8_m128i(step, shift_in::<1>(step));
        let step = add_i8_m128i(step, shift_in::<2>(step));
        let step = add_i8_m128i(step, shift_in::<4>(step));
        let step = add_i8_m128i(step, shift_in::<8>(step));
        add_i8_m128i(step, sum_before)
    };
    let hits_in = |sums: m128i| move_mask_i8_m128i(cmp_eq_mask_i8_m128i(sums, target)) as u16;
    let first_cut = |p: usize, mut hits: u64| {
        while hits != 0 {
            let i = p + hits.trailing_zeros() as usize;
            hits &= hits - 1;
            if stage2(d, i, b.bits(i)) {
                return Some(i + 1);
            }
        }
        None
    };
    let mut p = p;
    // Four blocks a turn: `behind` then holds the T of each block's
    // bytes 64 back in place, in registers.
    while p + 64 <= b.end {
        let (Some(e0), Some(e1), Some(e2), Some(e3)) = (t(p), t(p + 16), t(p + 32), t(p + 48))
        else {
            break;
        };
        let s0 = block_sums(e0, behind[0], sum_before);
        let s1 = block_sums(e1, behind[1], shuffle(s0, last_byte));
        let s2 = block_sums(e2, behind[2], shuffle(s1, last_byte));
        let s3 = block_sums(e3, behind[3], shuffle(s2, last_byte));
        let hits = u64::from(hits_in(s0))
            | u64::from(hits_in(s1)) << 16
            | u64::from(hits_in(s2)) << 32
            | u64::from(hits_in(s3)) << 48;
        if let Some(cut) = first_cut(p, hits) {
            return Ok(cut);
        }
        behind = [e0, e1, e2, e3];
        sum_before = shuffle(s3, last_byte);
        p += 64;
    }
    let mut oldest = 0;
    while p + 16 <= b.end {
        let Some(entering) = t(p) else { break };
        let sums = block_sums(entering, behind[oldest], sum_before);
        behind[oldest] = entering;
        oldest = (oldest + 1) % 4;
        if let Some(cut) = first_cut(p, u64::from(hits_in(sums))) {
            return Ok(cut);
        }
        sum_before = shuffle(sums, last_byte);
        p += 16;
    }
    // The scalar search takes the sum without the byte 63 back.
    let [sum, ..]: [u8; 16] = sum_before.into();
    Err((p, sum.wrapping_sub(table(d[p - WINDOW]))))
}

/// Whole steps of 32 positions with AVX2 (two a turn), then
/// [`search_blocks`] for what is left: the same sums as the SSE blocks,
/// with each 128-bit half summing 16 positions and the low half's total
/// carried into the high half. About 40% fewer instructions per position
/// than four SSE blocks.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
fn search_wide(d: &[u8], b: &Bounds, from: usize) -> Result<usize, (usize, u8)> {
    use safe_arch::{
        add_i8_m256i, bitand_m256i, byte_shl_imm_u128_m256i as shift_in, cmp_eq_mask_i8_m256i,
        m256i, move_mask_i8_m256i, set_splat_i8_m256i, shr_imm_u16_m256i,
        shuffle_abi_i128z_all_m256i as lanes, shuffle_av_i8z_half_m256i as shuffle, sub_i8_m256i,
        sum_of_u8_abs_diff_m256i, zeroed_m256i,
    };
    let both_halves = |t: [u8; 16]| {
        let mut wide = [0u8; 32];
        wide[..16].copy_from_slice(&t);
        wide[16..].copy_from_slice(&t);
        m256i::from(wide)
    };
    let low_nibble = set_splat_i8_m256i(0x0f);
    let (low, high) = (both_halves(TABLES.0[0]), both_halves(TABLES.1[0]));
    // `T` of the 32 bytes at `p`.
    let t = |p: usize| {
        let v = d
            .get(p..p + 32)
            .and_then(|s| <[u8; 32]>::try_from(s).ok())
            .map(m256i::from)?;
        let lo = bitand_m256i(v, low_nibble);
        let hi = bitand_m256i(shr_imm_u16_m256i::<4>(v), low_nibble);
        Some(add_i8_m256i(shuffle(low, lo), shuffle(high, hi)))
    };
    let last_byte = set_splat_i8_m256i(15);
    // Every byte the last byte of the high half: a step's total.
    let carry = |sums: m256i| shuffle(lanes::<0x11>(sums, sums), last_byte);
    let target = set_splat_i8_m256i(TARGET as i8);
    let mut p = from;
    let (Some(t0), Some(t1)) = (t(p - WINDOW), t(p - WINDOW + 32)) else {
        return search_blocks(d, b, p);
    };
    // `T` of the 64 bytes before the step, oldest first, and their sum.
    let mut behind = [t0, t1];
    let partial: [u64; 4] = sum_of_u8_abs_diff_m256i(add_i8_m256i(t0, t1), zeroed_m256i()).into();
    let total = partial.iter().fold(0u64, |s, &x| s.wrapping_add(x));
    let mut sum_before = set_splat_i8_m256i(total as i8);
    // Position j's sum: the sum before the step plus, for every position
    // up to j, its byte's T less that of the byte 64 back. The steps'
    // own sums do not depend on what came before, so the only chain from
    // one turn to the next is two adds.
    let step_changes = |entering: m256i, leaving: m256i| {
        let step = sub_i8_m256i(entering, leaving);
        let step = add_i8_m256i(step, shift_in::<1>(step));
        let step = add_i8_m256i(step, shift_in::<2>(step));
        let step = add_i8_m256i(step, shift_in::<4>(step));
        let step = add_i8_m256i(step, shift_in::<8>(step));
        // The low half's total, added to every byte of the high half.
        let low_total = shuffle(lanes::<0x08>(step, step), last_byte);
        add_i8_m256i(step, low_total)
    };
    let hits_in = |sums: m256i| move_mask_i8_m256i(cmp_eq_mask_i8_m256i(sums, target)) as u32;
    while p + 64 <= b.end {
        let (Some(e0), Some(e1)) = (t(p), t(p + 32)) else {
            break;
        };
        let (c0, c1) = (step_changes(e0, behind[0]), step_changes(e1, behind[1]));
        let (total0, total1) = (carry(c0), carry(c1));
        let s0 = add_i8_m256i(c0, sum_before);
        let after_first = add_i8_m256i(sum_before, total0);
        let s1 = add_i8_m256i(c1, after_first);
        let mut hits = u64::from(hits_in(s0)) | u64::from(hits_in(s1)) << 32;
        while hits != 0 {
            let i = p + hits.trailing_zeros() as usize;
            hits &= hits - 1;
            if stage2(d, i, b.bits(i)) {
                return Ok(i + 1);
            }
        }
        behind = [e0, e1];
        sum_before = add_i8_m256i(after_first, total1);
        p += 64;
    }
    search_blocks(d, b, p)
}

/// Without AVX2, the SSE blocks.
#[cfg(not(all(target_arch = "x86_64", target_feature = "avx2")))]
fn search_wide(d: &[u8], b: &Bounds, from: usize) -> Result<usize, (usize, u8)> {
    search_blocks(d, b, from)
}

/// Without SSSE3 the caller searches every position.
#[cfg(not(all(target_arch = "x86_64", target_feature = "ssse3")))]
fn search_blocks(d: &[u8], _b: &Bounds, from: usize) -> Result<usize, (usize, u8)> {
    Err((from, sum_of_63_before(d, from)))
}

#[cfg(test)]
mod tests {
    use super::super::testdata::{
        assert_cuts_follow_the_content, assert_same_cuts, chunk_lens, noise, weights,
    };
    use super::*;

    /// [`find`] from `min`, as [`find_scalar`] answers.
    fn searched(source: &[u8], min: usize, avg: usize, max: usize) -> Option<usize> {
        match find(source, min, avg, max, 0) {
            Found::Cut(len) => Some(len),
            Found::Quiet(_) => None,
        }
    }

    /// The sum of stage 1 straight from its definition.
    fn window_sum(d: &[u8], i: usize) -> u8 {
        d[i + 1 - WINDOW..=i]
            .iter()
            .fold(0u8, |s, &x| s.wrapping_add(table(x)))
    }

    #[test]
    fn the_shuffles_find_the_scalar_searchs_cuts() {
        assert_same_cuts(searched, find_scalar, &[16, 64, 65, 79, 100]);
    }

    /// The first cut from `min` by the SSE blocks alone (the wide search
    /// hands them only its tail), then the scalar search.
    fn by_sse_blocks(source: &[u8], min: usize, avg: usize, max: usize) -> Option<usize> {
        let b = Bounds::new(source.len(), WINDOW, min, avg, max);
        if b.min >= b.end {
            return None;
        }
        match search_blocks(source, &b, b.min) {
            Ok(cut) => Some(cut),
            Err((from, sum)) => scan_from(source, &b, from, sum),
        }
    }

    #[test]
    fn the_sse_blocks_alone_find_the_scalar_searchs_cuts() {
        assert_same_cuts(by_sse_blocks, find_scalar, &[16, 64, 65, 79, 100]);
    }

    #[test]
    fn the_rolling_sum_is_the_sum_of_the_window() {
        let data = noise(4096, 12);
        let mut sum = data[..63]
            .iter()
            .fold(0u8, |s, &x| s.wrapping_add(table(x)));
        for i in 63..data.len() {
            sum = sum.wrapping_add(table(data[i]));
            assert_eq!(sum, window_sum(&data, i), "at {i}");
            sum = sum.wrapping_sub(table(data[i + 1 - WINDOW]));
        }
        assert_eq!(
            sum_of_63_before(&data, 64),
            window_sum(&data, 63).wrapping_sub(table(data[0]))
        );
    }

    #[test]
    fn the_cuts_of_a_fixed_input_are_frozen() {
        // Part of the store format: stores deduplicate only while their
        // cuts stay where they were.
        let sizes = chunk_lens(&noise(1 << 20, 99), 16384, searched);
        assert_eq!(
            &sizes[..8],
            &[29445, 23944, 21933, 17170, 4810, 35972, 21015, 7903]
        );
    }

    #[test]
    fn chunks_gather_around_the_average_on_data_that_varies() {
        let ints: Vec<u8> = (0..2u64 << 20)
            .flat_map(|k| (k.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 54).to_le_bytes())
            .collect();
        let text: Vec<u8> = (0..400_000u32)
            .flat_map(|k| {
                format!(
                    "{{\"step\": {k}, \"loss\": {:.4}}}\n",
                    f64::from(k * 7919 % 10007) / 3000.0
                )
                .into_bytes()
            })
            .collect();
        for (name, data) in [
            ("noise", noise(16 << 20, 1)),
            ("weights", weights(4 << 20, 2)),
            ("int64 below 1024", ints),
            ("json lines", text),
        ] {
            let sizes = chunk_lens(&data, 16384, searched);
            let mean = data.len() / sizes.len();
            assert!(
                (14_000..26_000).contains(&mean),
                "{name}: mean chunk {mean} B"
            );
            let body = &sizes[..sizes.len() - 1];
            assert!(body.iter().all(|&s| (4096..=65536).contains(&s)));
            let at_max = body.iter().filter(|&&s| s == 65536).count();
            assert!(
                at_max * 50 < body.len(),
                "{name}: {at_max} of {} chunks cut at max",
                body.len()
            );
        }
    }

    #[test]
    fn runs_and_short_periods_never_pass() {
        for period in [1, 2, 4, 8, 16, 32, 64] {
            let data: Vec<u8> = noise(period, period as u64)
                .into_iter()
                .cycle()
                .take(1 << 17)
                .collect();
            assert_eq!(searched(&data, 4096, 16384, 65536), None, "period {period}");
        }
        assert_eq!(
            find(&vec![0; 100_000], 64, 1024, 4096, 0),
            Found::Quiet(4096)
        );
    }

    #[test]
    fn a_search_from_a_quiet_position_finds_the_same_cut() {
        let data = [vec![0u8; 40_000], noise(40_000, 6)].concat();
        let (min, avg, max) = (4096, 16384, 65536);
        let cut = find_scalar(&data, min, avg, max).expect("noise passes");
        assert!(cut > 40_000, "cut at {cut}");
        for quiet in [0, 4096, 30_000, 40_000, cut - 1] {
            assert_eq!(
                find(&data, min, avg, max, quiet),
                Found::Cut(cut),
                "quiet {quiet}"
            );
        }
        assert_eq!(
            find(&data[..30_000], min, avg, max, 0),
            Found::Quiet(30_000)
        );
        // Known quiet to the window's end: nothing left to search.
        assert_eq!(
            find(&data[..30_000], min, avg, max, 30_000),
            Found::Quiet(30_000)
        );
    }

    #[test]
    fn cuts_follow_the_content_not_where_it_starts() {
        let data = weights(2 << 20, 5);
        assert_cuts_follow_the_content(&data, &[1, 3, 4, 63, 1000, 12345], searched);
    }

    #[test]
    fn short_sources_find_nothing() {
        let data = noise(200, 4);
        assert_eq!(searched(&data[..64], 64, 128, 256), None);
        assert_eq!(searched(&[], 256, 1024, 4096), None);
        assert_eq!(
            searched(&data, 64, 128, 256),
            find_scalar(&data, 64, 128, 256)
        );
    }
}
