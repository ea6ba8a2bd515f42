//! The SSSE3 kernel of float-lane decoding for chunks with one coded lane
//! (fp32 weights): 16 groups of 4 bytes per step.
//!
//! A coded lane is 4-bit codes into a 16-byte table, which is exactly what
//! the `pshufb` byte shuffle looks up: one shuffle decodes 16 lane bytes,
//! and two more per 16 output bytes put each group's three stored bytes
//! and its lane byte in place. The scalar loop in `lanes.rs` did one table
//! lookup per group and took a quarter of a cold read's CPU. Built only
//! where the compiler may use SSSE3 (`.cargo/config.toml` targets Haswell);
//! elsewhere the scalar loop does all of it.

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
