//! The SIMD kernels of float lanes: decoding chunks with one coded lane
//! (fp32 weights), 16 groups of 4 bytes per SSE step, and coding a lane,
//! 32 groups per AVX2 step (then 16 per SSE step).
//!
//! A coded lane is 4-bit codes into a 16-byte table, which is exactly what
//! the `pshufb` byte shuffle looks up: one shuffle decodes 16 lane bytes,
//! and two more per 16 output bytes put each group's three stored bytes
//! and its lane byte in place. The scalar loop in `lanes.rs` did one table
//! lookup per group and took a quarter of a cold read's CPU. Coding looks
//! each byte's code up the same way (see [`code_groups`]). Built only
//! where the compiler may use SSSE3 and SSE4.1, and AVX2 for the wide
//! coding step (`.cargo/config.toml` targets Haswell); elsewhere the
//! scalar loops do the rest.

/// Decodes the first pairs of groups of a chunk whose lane `LANE` is
/// coded: `nibbles` are the lane's codes (one byte per pair), `rest` the
/// other three bytes of every group, back to back, and `out` the output
/// pairs. Returns how many pairs it wrote (a multiple of 8); the caller
/// decodes the rest. Escaped bytes come out as `table[15]` and are patched
/// by the caller, as in the scalar loop.
#[cfg(all(target_arch = "x86_64", target_feature = "ssse3"))]
pub fn decode_pairs<const LANE: usize>(
    table: &[u8; 16],
    nibbles: &[u8],
    rest: &[u8],
    out: &mut [[u8; 8]],
) -> usize {
    use safe_arch::{
        bitand_m128i, bitor_m128i, load_unaligned_m128i, m128i, set_splat_i8_m128i,
        shr_imm_u16_m128i, shuffle_av_i8z_all_m128i as shuffle, store_unaligned_m128i,
        unpack_low_i8_m128i,
    };
    /// A shuffle index that zeroes its output byte.
    const ZERO: u8 = 0x80;
    // Output byte 4g + p of a 4-group block: stored byte 3g + j, where j
    // counts the positions other than LANE; at LANE, nothing (the lane).
    let rest_mask: [u8; 16] = std::array::from_fn(|i| {
        let (group, pos) = (i / 4, i % 4);
        match pos.cmp(&LANE) {
            std::cmp::Ordering::Less => (3 * group + pos) as u8,
            std::cmp::Ordering::Equal => ZERO,
            std::cmp::Ordering::Greater => (3 * group + pos - 1) as u8,
        }
    });
    // Block q's lane bytes: lane byte 4q + g goes to output byte 4g + LANE.
    let lane_masks: [m128i; 4] = std::array::from_fn(|q| {
        let mask: [u8; 16] = std::array::from_fn(|i| {
            if i % 4 == LANE {
                (4 * q + i / 4) as u8
            } else {
                ZERO
            }
        });
        m128i::from(mask)
    });
    let rest_mask = m128i::from(rest_mask);
    let table = load_unaligned_m128i(table);
    let low_nibble = set_splat_i8_m128i(0x0f);
    let mut done = 0usize;
    // Each step reads 8 code bytes, 48 stored bytes (loaded as 16 from
    // offsets 0, 12, 24, 36) and writes 8 pairs.
    while done + 8 <= out.len() && done + 8 <= nibbles.len() && 6 * done + 52 <= rest.len() {
        let mut codes = [0u8; 16];
        codes[..8].copy_from_slice(&nibbles[done..done + 8]);
        let codes = load_unaligned_m128i(&codes);
        let low = bitand_m128i(codes, low_nibble);
        let high = bitand_m128i(shr_imm_u16_m128i::<4>(codes), low_nibble);
        // Group 2k's code is byte k's low nibble, group 2k + 1's its high.
        let lanes = shuffle(table, unpack_low_i8_m128i(low, high));
        for (q, lane_mask) in lane_masks.iter().enumerate() {
            let at = 6 * done + 12 * q;
            let Some(stored) = rest
                .get(at..at + 16)
                .and_then(|s| <&[u8; 16]>::try_from(s).ok())
            else {
                return done;
            };
            let block = bitor_m128i(
                shuffle(load_unaligned_m128i(stored), rest_mask),
                shuffle(lanes, *lane_mask),
            );
            let pairs = &mut out[done + 2 * q..done + 2 * q + 2];
            let Ok(target) = <&mut [u8; 16]>::try_from(pairs.as_flattened_mut()) else {
                return done;
            };
            store_unaligned_m128i(target, block);
        }
        done += 8;
    }
    done
}

/// Without SSSE3 the caller's scalar loop decodes every pair.
#[cfg(not(all(target_arch = "x86_64", target_feature = "ssse3")))]
pub fn decode_pairs<const LANE: usize>(
    _table: &[u8; 16],
    _nibbles: &[u8],
    _rest: &[u8],
    _out: &mut [[u8; 8]],
) -> usize {
    0
}

/// Coded bytes of a lane spread over more high nibbles than this are left
/// to the scalar loop (one compare and blend per high nibble).
const MAX_ROWS: usize = 4;

/// Codes lane `LANE` of the first groups of a chunk, 16 groups a step:
/// `codes[byte]` is the byte's 4-bit code (15: escaped), the codes go two
/// to a byte into `nibbles` (the earlier group's in the low nibble), and
/// escaped bytes are appended to `escaped`, in order. Returns how many
/// groups it coded (a multiple of 16); the caller codes the rest, as in
/// the scalar loop, whose output this is byte for byte.
///
/// The scalar loop loads each byte and then its code: two dependent loads
/// per group, 85% of coding's time. Here `codes` is cut into rows of 16
/// by the byte's high nibble; a lane's coded bytes (the exponents of one
/// tensor) fall in one to four rows, and `pshufb` looks a row up by the
/// low nibble for 16 bytes at once. Lanes whose codes spread over more
/// rows are left to the scalar loop (returns 0).
#[cfg(all(target_arch = "x86_64", target_feature = "sse4.1"))]
pub fn code_groups<const LANE: usize>(
    codes: &[u8; 256],
    groups: &[[u8; 4]],
    nibbles: &mut [u8],
    escaped: &mut Vec<u8>,
) -> usize {
    use safe_arch::{
        bitand_m128i, bitor_m128i, blend_varying_i8_m128i, cmp_eq_mask_i8_m128i,
        load_unaligned_m128i, m128i, move_mask_i8_m128i, mul_u8i8_add_horizontal_saturating_m128i,
        pack_i16_to_u8_m128i, set_splat_i16_m128i, set_splat_i8_m128i, shr_imm_u16_m128i,
        shuffle_av_i8z_all_m128i as shuffle,
    };
    const ZERO: u8 = 0x80;
    const ESCAPE: u8 = 15;
    // On the stack: a chunk is coded in microseconds, and three small
    // allocations per chunk were a third of the writer's mallocs.
    let mut found = [(0u8, [ESCAPE; 16]); MAX_ROWS];
    let mut count = 0;
    let (all_rows, _) = codes.as_chunks::<16>();
    for (high, row) in all_rows.iter().enumerate() {
        if row.iter().any(|&code| code != ESCAPE) {
            let Some(slot) = found.get_mut(count) else {
                return 0;
            };
            *slot = (high as u8, *row);
            count += 1;
        }
    }
    let rows = &found[..count];
    let wide = code_groups_wide::<LANE>(rows, groups, nibbles, escaped);
    let (groups, nibbles) = (&groups[wide..], &mut nibbles[wide / 2..]);
    let rows: [(m128i, m128i); MAX_ROWS] = std::array::from_fn(|i| {
        let (high, row) = found[i];
        (set_splat_i8_m128i(high as i8), m128i::from(row))
    });
    let rows = &rows[..count];
    // Block q (groups 4q..4q + 4) puts its lane bytes at 4q..4q + 4.
    let gather: [m128i; 4] = std::array::from_fn(|q| {
        let mask: [u8; 16] = std::array::from_fn(|i| {
            if i / 4 == q {
                (4 * (i % 4) + LANE) as u8
            } else {
                ZERO
            }
        });
        m128i::from(mask)
    });
    let low_nibble = set_splat_i8_m128i(0x0f);
    let escape = set_splat_i8_m128i(ESCAPE as i8);
    // Byte pairs (low, high) to low + 16 * high.
    let nibble_weights = set_splat_i16_m128i(0x1001);
    let (steps, _) = groups.as_chunks::<16>();
    let (slots, _) = nibbles.as_chunks_mut::<8>();
    let mut done = 0;
    for (step, slot) in steps.iter().zip(slots) {
        let (blocks, _) = step.as_flattened().as_chunks::<16>();
        let lane = blocks
            .iter()
            .zip(&gather)
            .fold(m128i::default(), |lane, (block, mask)| {
                bitor_m128i(lane, shuffle(load_unaligned_m128i(block), *mask))
            });
        let low = bitand_m128i(lane, low_nibble);
        let high = bitand_m128i(shr_imm_u16_m128i::<4>(lane), low_nibble);
        let coded = rows.iter().fold(escape, |coded, (row_high, row)| {
            let in_row = cmp_eq_mask_i8_m128i(high, *row_high);
            blend_varying_i8_m128i(coded, shuffle(*row, low), in_row)
        });
        let pairs = mul_u8i8_add_horizontal_saturating_m128i(coded, nibble_weights);
        let packed: [u8; 16] = pack_i16_to_u8_m128i(pairs, pairs).into();
        slot.copy_from_slice(&packed[..8]);
        let mut escapes = move_mask_i8_m128i(cmp_eq_mask_i8_m128i(coded, escape)) as u32;
        if escapes != 0 {
            let bytes: [u8; 16] = lane.into();
            while escapes != 0 {
                escaped.push(bytes[escapes.trailing_zeros() as usize]);
                escapes &= escapes - 1;
            }
        }
        done += 16;
    }
    wide + done
}

/// [`code_groups`] 32 groups a step, with AVX2: each 128-bit half codes
/// 16 groups as the SSE loop does (the first half groups 0..16, the
/// second 16..32, loaded as halves). Returns how many groups it coded (a
/// multiple of 32); `rows` are the codes' rows by high nibble.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
fn code_groups_wide<const LANE: usize>(
    rows: &[(u8, [u8; 16])],
    groups: &[[u8; 4]],
    nibbles: &mut [u8],
    escaped: &mut Vec<u8>,
) -> usize {
    use safe_arch::{
        bitand_m256i, bitor_m256i, blend_varying_i8_m256i, cmp_eq_mask_i8_m256i,
        load_unaligned_m128i, m256i, move_mask_i8_m256i, mul_u8i8_add_horizontal_saturating_m256i,
        pack_i16_to_u8_m256i, set_m128i_m256i, set_splat_i16_m256i, set_splat_i8_m256i,
        shr_imm_u16_m256i, shuffle_av_i8z_half_m256i as shuffle,
    };
    const ZERO: u8 = 0x80;
    const ESCAPE: u8 = 15;
    if rows.len() > MAX_ROWS {
        // More rows than the registers hold: code nothing here, rather
        // than code with some rows missing.
        return 0;
    }
    let wide_rows: [(m256i, m256i); MAX_ROWS] = std::array::from_fn(|i| {
        let (high, row) = rows.get(i).copied().unwrap_or((0, [ESCAPE; 16]));
        let both: [u8; 32] = std::array::from_fn(|i| row[i % 16]);
        (set_splat_i8_m256i(high as i8), m256i::from(both))
    });
    let rows = &wide_rows[..rows.len()];
    // Block q (groups 4q..4q + 4 of each half) puts its lane bytes at
    // 4q..4q + 4 of that half.
    let gather: [m256i; 4] = std::array::from_fn(|q| {
        let mask: [u8; 32] = std::array::from_fn(|i| {
            let i = i % 16;
            if i / 4 == q {
                (4 * (i % 4) + LANE) as u8
            } else {
                ZERO
            }
        });
        m256i::from(mask)
    });
    let low_nibble = set_splat_i8_m256i(0x0f);
    let escape = set_splat_i8_m256i(ESCAPE as i8);
    let nibble_weights = set_splat_i16_m256i(0x1001);
    let (steps, _) = groups.as_chunks::<32>();
    let (slots, _) = nibbles.as_chunks_mut::<16>();
    let mut done = 0;
    for (step, slot) in steps.iter().zip(slots) {
        let (halves, _) = step.as_flattened().as_chunks::<64>();
        let [first, second] = halves else {
            break;
        };
        let (first, _) = first.as_chunks::<16>();
        let (second, _) = second.as_chunks::<16>();
        let lane = first.iter().zip(second).zip(&gather).fold(
            m256i::default(),
            |lane, ((low, high), mask)| {
                let block = set_m128i_m256i(load_unaligned_m128i(high), load_unaligned_m128i(low));
                bitor_m256i(lane, shuffle(block, *mask))
            },
        );
        let low = bitand_m256i(lane, low_nibble);
        let high = bitand_m256i(shr_imm_u16_m256i::<4>(lane), low_nibble);
        let coded = rows.iter().fold(escape, |coded, (row_high, row)| {
            let in_row = cmp_eq_mask_i8_m256i(high, *row_high);
            blend_varying_i8_m256i(coded, shuffle(*row, low), in_row)
        });
        let pairs = mul_u8i8_add_horizontal_saturating_m256i(coded, nibble_weights);
        let packed: [u8; 32] = pack_i16_to_u8_m256i(pairs, pairs).into();
        slot[..8].copy_from_slice(&packed[..8]);
        slot[8..].copy_from_slice(&packed[16..24]);
        let mut escapes = move_mask_i8_m256i(cmp_eq_mask_i8_m256i(coded, escape)) as u32;
        if escapes != 0 {
            let bytes: [u8; 32] = lane.into();
            while escapes != 0 {
                escaped.push(bytes[escapes.trailing_zeros() as usize]);
                escapes &= escapes - 1;
            }
        }
        done += 32;
    }
    done
}

/// Without AVX2, the SSE loop codes every group it can.
#[cfg(not(all(target_arch = "x86_64", target_feature = "avx2")))]
fn code_groups_wide<const LANE: usize>(
    _rows: &[(u8, [u8; 16])],
    _groups: &[[u8; 4]],
    _nibbles: &mut [u8],
    _escaped: &mut Vec<u8>,
) -> usize {
    0
}

/// Without SSE4.1 the caller's scalar loop codes every group.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse4.1")))]
pub fn code_groups<const LANE: usize>(
    _codes: &[u8; 256],
    _groups: &[[u8; 4]],
    _nibbles: &mut [u8],
    _escaped: &mut Vec<u8>,
) -> usize {
    0
}

#[cfg(all(test, target_arch = "x86_64", target_feature = "sse4.1"))]
mod tests {
    use super::*;

    /// Groups whose lane `lane` holds mostly `table` bytes, and the codes
    /// map of `table`.
    fn lane_data(table: &[u8], lane: usize, n: usize, seed: u64) -> (Vec<[u8; 4]>, [u8; 256]) {
        let mut x = seed | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut codes = [15u8; 256];
        for (code, &byte) in table.iter().enumerate() {
            codes[byte as usize] = code as u8;
        }
        let groups = (0..n)
            .map(|_| {
                let mut group = (next() as u32).to_le_bytes();
                let r = next();
                if r % 20 != 0 {
                    group[lane] = table[(r >> 8) as usize % table.len()];
                }
                group
            })
            .collect();
        (groups, codes)
    }

    /// The scalar coding of the first `n` groups.
    fn scalar(codes: &[u8; 256], groups: &[[u8; 4]], lane: usize) -> (Vec<u8>, Vec<u8>) {
        let nibbles = groups
            .chunks(2)
            .map(|pair| codes[pair[0][lane] as usize] | (codes[pair[1][lane] as usize] << 4))
            .collect();
        let escaped = groups
            .iter()
            .map(|g| g[lane])
            .filter(|&b| codes[b as usize] == 15)
            .collect();
        (nibbles, escaped)
    }

    fn simd(codes: &[u8; 256], groups: &[[u8; 4]], lane: usize) -> (usize, Vec<u8>, Vec<u8>) {
        let mut nibbles = vec![0u8; groups.len().div_ceil(2)];
        let mut escaped = Vec::new();
        let done = match lane {
            0 => code_groups::<0>(codes, groups, &mut nibbles, &mut escaped),
            1 => code_groups::<1>(codes, groups, &mut nibbles, &mut escaped),
            2 => code_groups::<2>(codes, groups, &mut nibbles, &mut escaped),
            _ => code_groups::<3>(codes, groups, &mut nibbles, &mut escaped),
        };
        nibbles.truncate(done / 2);
        (done, nibbles, escaped)
    }

    #[test]
    fn lane_coding_matches_the_scalar_loop_byte_for_byte() {
        // fp32 exponents of small weights: two rows (high nibbles 3, B).
        let exponents: Vec<u8> = (0x38..0x3f).chain(0xb8..0xbf).chain([0x37]).collect();
        // Four rows, the most the shuffle takes.
        let four_rows = [0x01, 0x12, 0x23, 0x34, 0x05, 0x16, 0x27, 0x38, 0x09];
        for (t, table) in [&exponents[..], &four_rows[..]].into_iter().enumerate() {
            for lane in 0..4 {
                for n in [16, 17, 48, 100, 4096, 4099] {
                    let (groups, codes) = lane_data(table, lane, n, (t * 10 + lane) as u64 + 7);
                    let (done, nibbles, escaped) = simd(&codes, &groups, lane);
                    assert_eq!(done, n / 16 * 16, "table {t}, lane {lane}, {n} groups");
                    let (want_nibbles, want_escaped) = scalar(&codes, &groups[..done], lane);
                    assert_eq!(nibbles, want_nibbles, "table {t}, lane {lane}, {n} groups");
                    assert_eq!(escaped, want_escaped, "table {t}, lane {lane}, {n} groups");
                    assert!(!escaped.is_empty() || n < 100, "the data has escapes");
                }
            }
        }
    }

    #[test]
    fn codes_spread_over_five_rows_are_left_to_the_scalar_loop() {
        let (groups, codes) = lane_data(&[0x01, 0x12, 0x23, 0x34, 0x45], 3, 256, 9);
        assert_eq!(simd(&codes, &groups, 3).0, 0);
    }
}
