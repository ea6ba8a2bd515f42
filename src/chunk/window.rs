//! The `window` cut-point search: a chunk ends after byte `i` when a hash
//! of the bytes just before it has enough zero bits. Twice as fast as
//! FastCDC's gear hash on the machines ckptfs was measured on, with the
//! same dedup on float tensors; stores made with `--chunker window` use
//! it. Its hash sees 8 bytes, so data with few distinct 4-byte patterns
//! (small integers, text) gets few cuts: see `CutSearch::NEW_STORES`.
//!
//! The gear hash is a chain, one shift and add per byte, whose table
//! lookups take two loads per byte: about one cycle per byte on a core
//! that does two loads a cycle, however many chains run side by side
//! (`gear.rs`). Here the hash of a position depends on a window of 8
//! bytes and on nothing before them, so 16 positions are hashed at once
//! with byte shuffles:
//!
//! ```text
//! stage 1:  h8(i)  = F0[b(i-3)] ^ F1[b(i-2)] ^ F2[b(i-1)] ^ F3[b(i)]
//!           Fk[b]  = Ak[b & 15] ^ Bk[b >> 4]          (8 tables of 16 bytes)
//! stage 2:  h64(i) = u64::from_le_bytes(b(i-7) ..= b(i)) * K
//! cut after byte i  when  h8(i) == 0  and  the top `s` bits of h64(i) are 0
//! ```
//!
//! Stage 1 is 8 `pshufb` lookups per 16 positions (`Ak`, `Bk` are
//! exactly what one shuffle looks up) and lets through one position in
//! 256; stage 2, a multiply, decides those. As in FastCDC v2020 (level 1
//! normalization), positions before `min` are skipped, and the condition
//! takes `log2(avg) + 1` zero bits in all before `avg` and `log2(avg) - 1`
//! after it, so chunk sizes gather around `avg`; a cut is forced at `max`.
//!
//! The tables and `K` are part of the store format: a store keeps
//! deduplicating only while its cuts stay where they were. The scalar
//! search ([`cut_scalar`]) is the definition; the shuffles must agree with
//! it byte for byte (a test compares them).

use super::two_stage::{nibble_tables, Bounds};

/// The stage 2 multiplier (the golden ratio in 64 bits).
const K: u64 = 0x9e37_79b9_7f4a_7c15;

/// Positions before this are never searched: stage 2's window.
const WINDOW: usize = 16;

/// `Ak` and `Bk` of the module docs: the nibble tables of the four window
/// positions, from splitmix64 with a fixed seed.
struct NibbleTables {
    low: [[u8; 16]; 4],
    high: [[u8; 16]; 4],
}

const TABLES: NibbleTables = {
    let (low, high) = nibble_tables::<4>(0x6b63_7074_6673_0001); // "kcptfs", version 1
    NibbleTables { low, high }
};

/// `Fk[b]`.
fn table(k: usize, b: u8) -> u8 {
    TABLES.low[k][(b & 15) as usize] ^ TABLES.high[k][(b >> 4) as usize]
}

/// Stage 1 at position `i` (`i >= 3`).
fn stage1(d: &[u8], i: usize) -> bool {
    table(0, d[i - 3]) ^ table(1, d[i - 2]) ^ table(2, d[i - 1]) ^ table(3, d[i]) == 0
}

/// Stage 2 at position `i` (`i >= 7`) with `bits` top bits that must be 0.
#[inline(always)]
fn stage2(d: &[u8], i: usize, bits: u32) -> bool {
    let Some(window) = i.checked_sub(7).and_then(|from| d.get(from..=i)) else {
        return false;
    };
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(window);
    u64::from_le_bytes(bytes).wrapping_mul(K) >> (64 - bits) == 0
}

/// Where the first chunk of `source` ends, by the definition: one
/// position at a time.
pub fn cut_scalar(source: &[u8], min: usize, avg: usize, max: usize) -> usize {
    let b = Bounds::new(source.len(), WINDOW, min, avg, max);
    if source.len() <= b.min {
        return source.len();
    }
    scan_from(source, &b, b.min)
}

/// The scalar search from position `from` on: the chunk's length.
fn scan_from(d: &[u8], b: &Bounds, from: usize) -> usize {
    (from..b.end)
        .find(|&i| stage1(d, i) && stage2(d, i, b.bits(i)))
        .map_or(b.end, |i| i + 1)
}

/// Where the first chunk of `source` ends (`min`, `avg` and `max` as in
/// FastCDC): the same cut as [`cut_scalar`], 16 positions a step where
/// the CPU has SSSE3.
pub fn cut(source: &[u8], min: usize, avg: usize, max: usize) -> usize {
    let b = Bounds::new(source.len(), WINDOW, min, avg, max);
    if source.len() <= b.min {
        return source.len();
    }
    match search_blocks(source, &b) {
        (Some(i), _) => i + 1,
        (None, from) => scan_from(source, &b, from),
    }
}

/// Stage 1 on whole blocks of 16 positions from `b.min`: the first cut
/// found, or where the blocks ended (the caller searches the rest).
#[cfg(all(target_arch = "x86_64", target_feature = "ssse3"))]
fn search_blocks(d: &[u8], b: &Bounds) -> (Option<usize>, usize) {
    use safe_arch::{
        bitand_m128i, bitxor_m128i, cmp_eq_mask_i8_m128i, combined_byte_shr_imm_m128i,
        load_unaligned_m128i, m128i, move_mask_i8_m128i, set_splat_i8_m128i, shr_imm_u16_m128i,
        shuffle_av_i8z_all_m128i as shuffle, zeroed_m128i,
    };
    let low_nibble = set_splat_i8_m128i(0x0f);
    let low: [m128i; 4] = std::array::from_fn(|k| m128i::from(TABLES.low[k]));
    let high: [m128i; 4] = std::array::from_fn(|k| m128i::from(TABLES.high[k]));
    let load = |p: usize| {
        d.get(p..p + 16)
            .and_then(|s| <&[u8; 16]>::try_from(s).ok())
            .map(load_unaligned_m128i)
    };
    // `Fk` of 16 bytes at once.
    let lookup = |v: m128i| -> [m128i; 4] {
        let lo = bitand_m128i(v, low_nibble);
        let hi = bitand_m128i(shr_imm_u16_m128i::<4>(v), low_nibble);
        std::array::from_fn(|k| bitxor_m128i(shuffle(low[k], lo), shuffle(high[k], hi)))
    };
    let mut p = b.min;
    let Some(before) = p.checked_sub(16).and_then(load) else {
        return (None, p);
    };
    let mut prev = lookup(before);
    while p + 16 <= b.end {
        let Some(v) = load(p) else { break };
        let f = lookup(v);
        // Position j of the block: F3 of its own byte, F2 of the byte
        // before (shifted in from the previous block), and so on.
        let h = bitxor_m128i(
            bitxor_m128i(f[3], combined_byte_shr_imm_m128i::<15>(f[2], prev[2])),
            bitxor_m128i(
                combined_byte_shr_imm_m128i::<14>(f[1], prev[1]),
                combined_byte_shr_imm_m128i::<13>(f[0], prev[0]),
            ),
        );
        let mut hits = move_mask_i8_m128i(cmp_eq_mask_i8_m128i(h, zeroed_m128i())) as u32;
        while hits != 0 {
            let i = p + hits.trailing_zeros() as usize;
            hits &= hits - 1;
            if stage2(d, i, b.bits(i)) {
                return (Some(i), p);
            }
        }
        prev = f;
        p += 16;
    }
    (None, p)
}

/// Without SSSE3 the caller searches every position.
#[cfg(not(all(target_arch = "x86_64", target_feature = "ssse3")))]
fn search_blocks(_d: &[u8], b: &Bounds) -> (Option<usize>, usize) {
    (None, b.min)
}

#[cfg(test)]
mod tests {
    use super::super::testdata::{
        assert_cuts_follow_the_content, assert_same_cuts, chunk_lens, noise, weights,
    };
    use super::*;

    /// `cut`, in the shape the shared checks take.
    fn searched(source: &[u8], min: usize, avg: usize, max: usize) -> Option<usize> {
        Some(cut(source, min, avg, max))
    }

    fn scalar(source: &[u8], min: usize, avg: usize, max: usize) -> Option<usize> {
        Some(cut_scalar(source, min, avg, max))
    }

    #[test]
    fn the_shuffles_find_the_scalar_searchs_cuts() {
        assert_same_cuts(searched, scalar, &[16, 17, 31, 64]);
    }

    #[test]
    fn chunks_gather_around_the_average_within_the_bounds() {
        for data in [noise(16 << 20, 1), weights(16 << 20, 2)] {
            let sizes = chunk_lens(&data, 16384, searched);
            let mean = data.len() / sizes.len();
            assert!((14_000..26_000).contains(&mean), "mean chunk {mean} B");
            let body = &sizes[..sizes.len() - 1];
            assert!(body.iter().all(|&s| (4096..=65536).contains(&s)));
            let at_max = body.iter().filter(|&&s| s == 65536).count();
            assert!(
                at_max * 100 < body.len(),
                "{at_max} of {} chunks cut at max",
                body.len()
            );
        }
    }

    #[test]
    fn cuts_follow_the_content_not_where_it_starts() {
        let data = weights(8 << 20, 5);
        assert_cuts_follow_the_content(&data, &[1, 3, 4, 1000, 12345], searched);
    }

    #[test]
    fn short_sources_and_tiny_bounds_end_where_they_must() {
        let data = noise(100, 4);
        assert_eq!(cut(&data[..10], 16, 32, 64), 10);
        assert_eq!(cut(&data, 16, 32, 64), cut_scalar(&data, 16, 32, 64));
        assert!(cut(&data, 16, 32, 64) <= 64);
        assert_eq!(cut(&[], 256, 1024, 4096), 0);
    }
}
