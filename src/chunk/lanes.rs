//! Byte-lane coding for tensors of floats, which lz4 cannot shrink.
//!
//! In float32 (and in bf16 and fp16) data every 4th byte carries the sign
//! and the exponent, and training leaves those few values concentrated: a
//! lane of N(0, 0.02) weights holds about 15 distinct exponent bytes, and
//! 98% of them are among the 14 most common. The other lanes are mantissa
//! noise. This codec splits a chunk into the four byte lanes of positions
//! `i mod 4` (so whatever the alignment of the tensor, its exponents fall in
//! one lane) and gives each lane that pays a 4-bit code: the 15 most common
//! bytes of the lane get codes 0..15, code 15 escapes to a literal byte.
//!
//! ```text
//! payload = [mask: u8]                         bit p: lane p is coded
//!           for each coded lane p, ascending:
//!             [table: 15 bytes][escapes: u32 LE][nibbles: ceil(n/2)][escaped bytes]
//!           [rest]: every byte of the chunk whose lane is not coded, in
//!                   order, then the len mod 4 tail bytes
//! ```
//! with `n = len / 4`. On float32 weights this stores about 0.87 of the
//! raw bytes; encoding and decoding are table lookups, a few microseconds
//! per 16 KiB chunk (byte shuffles with SSSE3, `lanes_simd.rs`). A lane is
//! coded only if that saves a quarter of it; which lanes a run of chunks
//! codes, and with which tables, is planned in `lane_plans.rs`.

use super::codec::CodecError;

/// Codes a lane may use before the escape code.
const TABLE_LEN: usize = 15;
const ESCAPE: u8 = 15;
/// Groups sampled to decide whether a lane is worth coding.
pub(super) const SAMPLE: usize = 256;
/// A sampled lane with more distinct bytes than this is mantissa noise.
const MAX_SAMPLED_DISTINCT: usize = 48;
/// The table is built from every `TABLE_STRIDE`th group.
const TABLE_STRIDE: usize = 8;

/// One lane's 4-bit code: `codes[byte]` is its nibble (or [`ESCAPE`]).
pub(super) struct LaneCode {
    table: [u8; TABLE_LEN],
    codes: [u8; 256],
}

/// The code for `lane`, if a sample of the groups says that the lane is
/// concentrated enough for coding to save a quarter of it.
pub(super) fn plan_lane(groups: &[[u8; 4]], lane: usize) -> Option<LaneCode> {
    if too_spread(
        groups[..SAMPLE].iter().map(|g| g[lane]),
        MAX_SAMPLED_DISTINCT,
    ) {
        return None;
    }
    // Four partial histograms: runs of one exponent byte would otherwise
    // chain every increment on the one before.
    let mut partial = [[0u32; 256]; 4];
    for four in groups.chunks_exact(4 * TABLE_STRIDE) {
        for (counts, group) in partial.iter_mut().zip(four.iter().step_by(TABLE_STRIDE)) {
            counts[group[lane] as usize] += 1;
        }
    }
    let counts: [u32; 256] =
        std::array::from_fn(|byte| partial.iter().map(|counts| counts[byte]).sum());
    let mut by_count: Vec<(u32, u8)> = (0..=255u8)
        .map(|b| (counts[b as usize], b))
        .filter(|&(c, _)| c > 0)
        .collect();
    by_count.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut code = LaneCode {
        table: [0; TABLE_LEN],
        codes: [ESCAPE; 256],
    };
    let sampled: u32 = by_count.iter().map(|&(c, _)| c).sum();
    let mut escaped = sampled;
    for (nibble, &(count, byte)) in by_count.iter().take(TABLE_LEN).enumerate() {
        code.table[nibble] = byte;
        code.codes[byte as usize] = nibble as u8;
        escaped -= count;
    }
    // Coded: half a byte per value plus a byte per escape; worth it when
    // that is at most three quarters of a byte per value.
    (4 * escaped <= sampled).then_some(code)
}

/// The lane-coded payload of `raw`, or `None` when no lane pays (the
/// store codes through `codec::Coder`, which plans runs of chunks).
#[cfg(test)]
pub fn encode(raw: &[u8]) -> Option<Vec<u8>> {
    super::lane_plans::LanePlans::default().plan(raw)
}

/// True when `sample` holds more than `max` distinct bytes: mantissa
/// noise, too spread to code.
pub(super) fn too_spread(sample: impl Iterator<Item = u8>, max: usize) -> bool {
    let mut seen = [false; 256];
    let mut distinct = 0;
    for byte in sample {
        let slot = &mut seen[byte as usize];
        distinct += usize::from(!*slot);
        *slot = true;
    }
    distinct > max
}

/// The payload of `groups` and `tail` coded with `plans`; `None` when no
/// lane is coded, or, when `checked`, when a coded lane escapes more than
/// planning allows.
pub(super) fn code(
    plans: [Option<&LaneCode>; 4],
    groups: &[[u8; 4]],
    tail: &[u8],
    checked: bool,
) -> Option<Vec<u8>> {
    let mask = plans.iter().enumerate().fold(0u8, |m, (lane, plan)| {
        m | (u8::from(plan.is_some()) << lane)
    });
    if mask == 0 {
        return None;
    }
    let mut out = Vec::with_capacity(4 * groups.len() + tail.len() + 64);
    out.push(mask);
    for (lane, plan) in plans.iter().enumerate() {
        if let Some(code) = plan {
            let escaped = write_lane(&mut out, groups, lane, code);
            if checked && 4 * escaped > groups.len() {
                return None;
            }
        }
    }
    compact(&mut out, groups, mask);
    out.extend_from_slice(tail);
    Some(out)
}

/// Packs the uncoded bytes of every group, in order, into `out`.
fn compact(out: &mut Vec<u8>, groups: &[[u8; 4]], mask: u8) {
    match mask {
        1 => compact_one::<0>(out, groups),
        2 => compact_one::<1>(out, groups),
        4 => compact_one::<2>(out, groups),
        8 => compact_one::<3>(out, groups),
        _ => {
            for group in groups {
                out.extend(
                    (0..4)
                        .filter(|lane| mask & (1 << lane) == 0)
                        .map(|lane| group[lane]),
                );
            }
        }
    }
}

/// [`compact`] with one coded lane, `LANE`, known at compile time.
/// Goes through a block on the stack: growing `out` by zeroing it first
/// and then overwriting cost a fifth of the coding.
fn compact_one<const LANE: usize>(out: &mut Vec<u8>, groups: &[[u8; 4]]) {
    let mut block = [[0u8; 3]; COMPACT_BLOCK];
    for groups in groups.chunks(COMPACT_BLOCK) {
        for (rest, &[a, b, c, d]) in block.iter_mut().zip(groups) {
            *rest = match LANE {
                0 => [b, c, d],
                1 => [a, c, d],
                2 => [a, b, d],
                _ => [a, b, c],
            };
        }
        out.extend_from_slice(block[..groups.len()].as_flattened());
    }
}

/// Groups [`compact_one`] packs at a time (3 KiB on the stack).
const COMPACT_BLOCK: usize = 1024;

/// The inverse of [`compact`] for chunks with several coded lanes (one
/// coded lane goes through [`decode_one`]): fills `out`'s groups from the
/// packed uncoded bytes `rest` and the decoded lanes.
fn spread(
    out: &mut [[u8; 4]],
    rest: &[u8],
    lanes: &[Vec<u8>; 4],
    mask: u8,
) -> Result<(), CodecError> {
    let mut rest = rest.iter();
    for (i, group) in out.iter_mut().enumerate() {
        for (lane, slot) in group.iter_mut().enumerate() {
            *slot = if mask & (1 << lane) != 0 {
                lanes[lane].get(i).copied()
            } else {
                rest.next().copied()
            }
            .ok_or(CodecError::Malformed("short lane rest"))?;
        }
    }
    Ok(())
}

/// Appends `lane` coded with `code`; returns how many bytes it escaped.
fn write_lane(out: &mut Vec<u8>, groups: &[[u8; 4]], lane: usize, code: &LaneCode) -> usize {
    out.extend_from_slice(&code.table);
    let count_at = out.len();
    out.extend_from_slice(&[0; 4]);
    let nibbles_at = out.len();
    out.resize(nibbles_at + groups.len().div_ceil(2), 0);
    // Room for what a planned lane escapes on fp32 weights (about one
    // byte in 50): grown from empty, it was reallocated about 4 times a
    // lane.
    let mut escaped = Vec::with_capacity(groups.len() / 16 + 16);
    let nibbles = &mut out[nibbles_at..];
    let codes = &code.codes;
    let simd_done = match lane {
        0 => super::lanes_simd::code_groups::<0>(codes, groups, nibbles, &mut escaped),
        1 => super::lanes_simd::code_groups::<1>(codes, groups, nibbles, &mut escaped),
        2 => super::lanes_simd::code_groups::<2>(codes, groups, nibbles, &mut escaped),
        _ => super::lanes_simd::code_groups::<3>(codes, groups, nibbles, &mut escaped),
    };
    let (pairs, odd) = groups[simd_done..].as_chunks::<2>();
    let nibbles = &mut nibbles[simd_done / 2..];
    for (slot, [first, second]) in nibbles.iter_mut().zip(pairs) {
        let low = codes[first[lane] as usize];
        let high = codes[second[lane] as usize];
        *slot = low | (high << 4);
        if low == ESCAPE || high == ESCAPE {
            escaped.extend(
                [(low, first), (high, second)]
                    .iter()
                    .filter(|(nibble, _)| *nibble == ESCAPE)
                    .map(|(_, group)| group[lane]),
            );
        }
    }
    if let [last] = odd {
        let nibble = codes[last[lane] as usize];
        nibbles[pairs.len()] = nibble;
        if nibble == ESCAPE {
            escaped.push(last[lane]);
        }
    }
    out[count_at..nibbles_at].copy_from_slice(&(escaped.len() as u32).to_le_bytes());
    out.extend_from_slice(&escaped);
    escaped.len()
}

/// A coded lane as stored.
struct CodedLane<'a> {
    /// Byte of each nibble (the escape nibble's is patched in later).
    table: [u8; 16],
    nibbles: &'a [u8],
    escaped: &'a [u8],
}

impl<'a> CodedLane<'a> {
    /// Parses one coded lane of `n` bytes from the front of `payload`;
    /// returns it and what follows it.
    fn parse(payload: &'a [u8], n: usize) -> Result<(Self, &'a [u8]), CodecError> {
        const SHORT: CodecError = CodecError::Malformed("short lane");
        let (table, body) = payload.split_first_chunk::<TABLE_LEN>().ok_or(SHORT)?;
        let (escapes, body) = body.split_first_chunk::<4>().ok_or(SHORT)?;
        let escapes = u32::from_le_bytes(*escapes) as usize;
        let (nibbles, body) = body.split_at_checked(n.div_ceil(2)).ok_or(SHORT)?;
        let (escaped, body) = body.split_at_checked(escapes).ok_or(SHORT)?;
        let mut full_table = [0u8; 16];
        full_table[..TABLE_LEN].copy_from_slice(table);
        let lane = CodedLane {
            table: full_table,
            nibbles,
            escaped,
        };
        Ok((lane, body))
    }

    /// The lane's `n` bytes.
    fn bytes(&self, n: usize) -> Result<Vec<u8>, CodecError> {
        let mut lane: Vec<u8> = self
            .nibbles
            .iter()
            .flat_map(|&byte| {
                [
                    self.table[(byte & 0x0f) as usize],
                    self.table[(byte >> 4) as usize],
                ]
            })
            .collect();
        lane.truncate(n);
        self.patch(n, |i, byte| lane[i] = byte)?;
        Ok(lane)
    }

    /// Calls `set(i, byte)` for every escaped byte of the lane's `n`, in
    /// order; checks that their count is the one stored.
    fn patch(&self, n: usize, mut set: impl FnMut(usize, u8)) -> Result<(), CodecError> {
        /// The lowest bit of every nibble of a word.
        const NIBBLE_LOW_BITS: u64 = 0x1111_1111_1111_1111;
        let mut escaped = self.escaped.iter();
        if !self.escaped.is_empty() {
            for (word_at, word) in self.nibbles.chunks(8).enumerate() {
                let mut bytes = [0u8; 8];
                bytes[..word.len()].copy_from_slice(word);
                let x = u64::from_le_bytes(bytes);
                // A bit at the bottom of each nibble that is all ones.
                let mut found = x & (x >> 1) & (x >> 2) & (x >> 3) & NIBBLE_LOW_BITS;
                while found != 0 {
                    let i = 16 * word_at + found.trailing_zeros() as usize / 4;
                    found &= found - 1;
                    if i < n {
                        let value = escaped
                            .next()
                            .ok_or(CodecError::Malformed("short escapes"))?;
                        set(i, *value);
                    }
                }
            }
        }
        match escaped.next() {
            Some(_) => Err(CodecError::Malformed("unused escapes")),
            None => Ok(()),
        }
    }
}

/// Decodes a lane-coded payload back to the `len` raw bytes.
#[cfg(test)]
pub fn decode(payload: &[u8], len: usize) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![0u8; len];
    decode_into(payload, &mut out)?;
    Ok(out)
}

/// Decodes a lane-coded payload into `out`, whose length is the chunk's
/// raw length. Every byte of `out` is written (it need not be zeroed), or
/// an error is returned.
pub fn decode_into(payload: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    let len = out.len();
    let (&mask, mut body) = payload
        .split_first()
        .ok_or(CodecError::Malformed("no lane mask"))?;
    if mask == 0 || mask > 0x0f {
        return Err(CodecError::Malformed("bad lane mask"));
    }
    let n = len / 4;
    let mut coded: [Option<CodedLane>; 4] = Default::default();
    for (lane, slot) in coded.iter_mut().enumerate() {
        if mask & (1 << lane) != 0 {
            let (parsed, after) = CodedLane::parse(body, n)?;
            *slot = Some(parsed);
            body = after;
        }
    }
    let kept = 4 - mask.count_ones() as usize;
    if body.len() != kept * n + len % 4 {
        return Err(CodecError::Malformed("lane rest length mismatch"));
    }
    let (rest, tail) = body.split_at(kept * n);
    match &coded {
        [Some(lane), None, None, None] => return decode_one::<0>(lane, rest, tail, out),
        [None, Some(lane), None, None] => return decode_one::<1>(lane, rest, tail, out),
        [None, None, Some(lane), None] => return decode_one::<2>(lane, rest, tail, out),
        [None, None, None, Some(lane)] => return decode_one::<3>(lane, rest, tail, out),
        _ => {}
    }
    let mut lanes: [Vec<u8>; 4] = Default::default();
    for (bytes, lane) in lanes.iter_mut().zip(&coded) {
        if let Some(lane) = lane {
            *bytes = lane.bytes(n)?;
        }
    }
    let (groups, out_tail) = out.as_chunks_mut::<4>();
    spread(groups, rest, &lanes, mask)?;
    out_tail.copy_from_slice(tail);
    Ok(())
}

/// [`decode_into`] of a chunk with one coded lane, `LANE`: the nibbles are
/// decoded straight into the output, 16 groups at a time with SSSE3
/// (`lanes_simd.rs`), the rest two groups (one `u64`) at a time.
fn decode_one<const LANE: usize>(
    lane: &CodedLane,
    rest: &[u8],
    tail: &[u8],
    out: &mut [u8],
) -> Result<(), CodecError> {
    let low_mask = (1u64 << (8 * LANE)) - 1;
    // Places a group's three uncoded bytes and its lane byte.
    let group = |rest: u64, byte: u8| -> u64 {
        (rest & low_mask) | (u64::from(byte) << (8 * LANE)) | ((rest & !low_mask) << 8)
    };
    let table = &lane.table;
    let (pairs, out_rest) = out.as_chunks_mut::<8>();
    let (rests, odd) = rest.as_chunks::<6>();
    if rests.len() != pairs.len() || lane.nibbles.len() < pairs.len() {
        return Err(CodecError::Malformed("short lane rest"));
    }
    let simd_done = super::lanes_simd::decode_pairs::<LANE>(table, lane.nibbles, rest, pairs);
    for ((slot, &[a, b, c, d, e, f]), &nibbles) in pairs
        .iter_mut()
        .zip(rests)
        .zip(lane.nibbles)
        .skip(simd_done)
    {
        let first = u64::from_le_bytes([a, b, c, 0, 0, 0, 0, 0]);
        let second = u64::from_le_bytes([d, e, f, 0, 0, 0, 0, 0]);
        let x = table[(nibbles & 0x0f) as usize];
        let y = table[(nibbles >> 4) as usize];
        *slot = (group(first, x) | (group(second, y) << 32)).to_le_bytes();
    }
    let (last, out_tail) = out_rest.split_at_mut(out_rest.len() - tail.len());
    if let (&[a, b, c], Some(&nibbles)) = (odd, lane.nibbles.last()) {
        let value = group(
            u64::from_le_bytes([a, b, c, 0, 0, 0, 0, 0]),
            table[(nibbles & 0x0f) as usize],
        );
        last.copy_from_slice(&value.to_le_bytes()[..4]);
    }
    out_tail.copy_from_slice(tail);
    lane.patch(out.len() / 4, |i, byte| out[4 * i + LANE] = byte)
}

#[cfg(test)]
mod tests {
    use super::super::testdata::{noise, weights};
    use super::*;

    #[test]
    fn float_weights_shrink_to_seven_eighths_and_round_trip() {
        for shift in 0..4 {
            let mut raw = weights(4099, 7)[shift..].to_vec();
            raw.truncate(16383 - shift);
            let coded = encode(&raw).expect("float weights are lane coded");
            let ratio = coded.len() as f64 / raw.len() as f64;
            assert!(ratio < 0.9, "ratio {ratio} at shift {shift}");
            assert_eq!(decode(&coded, raw.len()).unwrap(), raw, "shift {shift}");
        }
    }

    #[test]
    fn every_lane_and_length_round_trips_through_the_shuffle_and_the_tail() {
        // The SSSE3 kernel takes 16 groups a step and leaves the rest to
        // the scalar loop: cover every lane and tails of every length.
        let fp32 = weights(2100, 5);
        for shift in 0..4 {
            for len in (1024..1024 + 70).chain([4099, 8191, 8192 - shift]) {
                let raw = &fp32[shift..shift + len];
                let coded = encode(raw).expect("float weights are lane coded");
                assert_eq!(coded[0].count_ones(), 1, "one coded lane");
                assert_eq!(decode(&coded, raw.len()).unwrap(), raw, "{shift}+{len}");
            }
        }
    }

    #[test]
    fn bf16_codes_two_lanes() {
        let raw: Vec<u8> = weights(8192, 3)
            .chunks_exact(4)
            .flat_map(|f| [f[2], f[3]])
            .collect();
        let coded = encode(&raw).expect("bf16 is lane coded");
        assert_eq!(coded[0], 0b1010);
        assert!(
            coded.len() * 10 < raw.len() * 8,
            "{} of {}",
            coded.len(),
            raw.len()
        );
        assert_eq!(decode(&coded, raw.len()).unwrap(), raw);
    }

    #[test]
    fn noise_is_left_alone() {
        let raw = noise(16384, 0x2545_F491_4F6C_DD1D);
        assert!(encode(&raw).is_none());
    }

    #[test]
    fn randomly_damaged_payloads_never_panic() {
        let mut x: u64 = 0x1234_5678_9abc_def1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let fp32 = weights(4099, 21);
        let bf16: Vec<u8> = fp32.chunks_exact(4).flat_map(|f| [f[2], f[3]]).collect();
        for raw in [&fp32[..], &bf16[..]] {
            let coded = encode(raw).unwrap();
            for _ in 0..2000 {
                let mut bad = coded.clone();
                for _ in 0..1 + next() % 4 {
                    let at = (next() % bad.len() as u64) as usize;
                    bad[at] ^= 1 + (next() % 255) as u8;
                }
                if next() % 4 == 0 {
                    bad.truncate((next() % bad.len() as u64) as usize);
                }
                // An error or bytes of the claimed length, never a panic;
                // the caller's hash check rejects wrong bytes.
                if let Ok(out) = decode(&bad, raw.len()) {
                    assert_eq!(out.len(), raw.len());
                }
            }
        }
    }

    #[test]
    fn damaged_payloads_are_errors() {
        let raw = weights(4096, 11);
        let coded = encode(&raw).unwrap();
        for cut in [0, 1, 10, 30, coded.len() / 2, coded.len() - 1] {
            assert!(decode(&coded[..cut], raw.len()).is_err(), "cut at {cut}");
        }
        let mut bad = coded.clone();
        bad[0] = 0;
        assert!(decode(&bad, raw.len()).is_err());
        assert!(decode(&coded, raw.len() + 4).is_err());
    }
}
