//! FastCDC's cut-point search (v2020, as `fastcdc::v2020::cut`), with two
//! independent hash chains in flight instead of one.
//!
//! The gear hash is one long dependency chain (shift, add, add per two
//! bytes), so a single scan leaves most of the core idle. But the hash at
//! a byte depends only on the 64 bytes before it: every older byte has
//! been shifted out of the 64-bit word. So a second lane can start 64
//! bytes before a later block with a zero hash and, once warmed up, holds
//! exactly the hash the single scan would hold there. Lane A scans a block
//! while lane B scans the next one; A's first hit is the cut, else B's.
//! The cuts are those of `fastcdc::v2020::cut` byte for byte (a test
//! compares them), so stores written before keep deduplicating.

use std::sync::OnceLock;

/// Pairs of bytes per lane and round.
const BLOCK: usize = 512;
/// Pairs after which a lane's hash no longer depends on where it started.
const WARM: usize = 32;

/// The gear tables: `g[b]` and `g[b] << 1`.
struct Tables {
    g: [u64; 256],
    g_ls: [u64; 256],
}

/// fastcdc's own table, read back through its public `cut`: one byte
/// above a zero minimum is folded into a zero hash as `GEAR[byte]`.
fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let mut g = [0u64; 256];
        for (b, slot) in g.iter_mut().enumerate() {
            let (hash, _) =
                fastcdc::v2020::cut(&[b as u8], 0, 2, 2, u64::MAX, u64::MAX, u64::MAX, u64::MAX);
            *slot = hash;
        }
        let g_ls = g.map(|v| v << 1);
        Tables { g, g_ls }
    })
}

/// The byte pairs of `bytes` (a trailing odd byte is left out).
fn pairs(bytes: &[u8]) -> &[[u8; 2]] {
    bytes.as_chunks::<2>().0
}

/// One step of a lane over a pair of bytes: the offset (0 or 1) of a cut
/// in it, if any. `m` is the mask, `m_ls` the mask shifted left by one.
#[inline(always)]
fn step(t: &Tables, &[x, y]: &[u8; 2], hash: &mut u64, m: u64, m_ls: u64) -> Option<usize> {
    *hash = (*hash << 2).wrapping_add(t.g_ls[x as usize]);
    if *hash & m_ls == 0 {
        return Some(0);
    }
    *hash = hash.wrapping_add(t.g[y as usize]);
    if *hash & m == 0 {
        return Some(1);
    }
    None
}

/// Scans the pairs of `src[2 * from..2 * to]` with one mask, `hash` being
/// the hash before pair `from`: the byte index of the first cut, or `None`
/// with `hash` at the end.
fn scan(t: &Tables, src: &[u8], from: usize, to: usize, m: u64, hash: &mut u64) -> Option<usize> {
    let m_ls = m << 1;
    let mut p = from;
    while to - p >= 2 * BLOCK {
        // Lane A: pairs [p, p + BLOCK). Lane B: warms up on the WARM pairs
        // before p + BLOCK, then scans [p + BLOCK, p + 2 * BLOCK).
        let (a_warm, a_rest) = src[2 * p..2 * (p + BLOCK)].split_at(2 * WARM);
        let (b_warm, b_main) = src[2 * (p + BLOCK - WARM)..2 * (p + 2 * BLOCK)].split_at(2 * WARM);
        let (b_lock, b_tail) = b_main.split_at(2 * (BLOCK - WARM));
        let mut hb = 0u64;
        for (k, (pa, pb)) in pairs(a_warm).iter().zip(pairs(b_warm).iter()).enumerate() {
            if let Some(off) = step(t, pa, hash, m, m_ls) {
                return Some(2 * (p + k) + off);
            }
            let &[x, y] = pb;
            hb = (hb << 2).wrapping_add(t.g_ls[x as usize]);
            hb = hb.wrapping_add(t.g[y as usize]);
        }
        let lockstep = pairs(a_rest).iter().zip(pairs(b_lock).iter());
        for (k, (pa, pb)) in lockstep.enumerate() {
            if let Some(off) = step(t, pa, hash, m, m_ls) {
                return Some(2 * (p + WARM + k) + off);
            }
            if let Some(off) = step(t, pb, &mut hb, m, m_ls) {
                // A's rest comes first; B's cut holds if A has none.
                let rest = &a_rest[2 * (k + 1)..];
                for (j, pa) in pairs(rest).iter().enumerate() {
                    if let Some(off) = step(t, pa, hash, m, m_ls) {
                        return Some(2 * (p + WARM + k + 1 + j) + off);
                    }
                }
                return Some(2 * (p + BLOCK + k) + off);
            }
        }
        for (k, pb) in pairs(b_tail).iter().enumerate() {
            if let Some(off) = step(t, pb, &mut hb, m, m_ls) {
                return Some(2 * (p + 2 * BLOCK - WARM + k) + off);
            }
        }
        *hash = hb;
        p += 2 * BLOCK;
    }
    for (k, pair) in pairs(&src[2 * p..2 * to]).iter().enumerate() {
        if let Some(off) = step(t, pair, hash, m, m_ls) {
            return Some(2 * (p + k) + off);
        }
    }
    None
}

/// Where the first chunk of `source` ends: `fastcdc::v2020::cut(source,
/// min, avg, max, mask_s, mask_l, mask_s << 1, mask_l << 1).1`.
pub fn cut(source: &[u8], min: usize, avg: usize, max: usize, mask_s: u64, mask_l: u64) -> usize {
    let t = tables();
    let mut remaining = source.len();
    if remaining <= min {
        return remaining;
    }
    let mut center = avg;
    if remaining > max {
        remaining = max;
    } else if remaining < center {
        center = remaining;
    }
    let (first, center, end) = (min / 2, center / 2, remaining / 2);
    let mut hash = 0u64;
    // The strict mask before the average, the relaxed one after it.
    if first < center {
        if let Some(at) = scan(t, source, first, center, mask_s, &mut hash) {
            return at;
        }
    }
    if let Some(at) = scan(t, source, first.max(center), end, mask_l, &mut hash) {
        return at;
    }
    remaining
}

#[cfg(test)]
mod tests {
    use super::super::testdata::noise;
    use super::*;
    use fastcdc::v2020::{select_masks, Normalization};

    fn reference(src: &[u8], min: usize, avg: usize, max: usize, ms: u64, ml: u64) -> usize {
        fastcdc::v2020::cut(src, min, avg, max, ms, ml, ms << 1, ml << 1).1
    }

    #[test]
    fn cuts_are_fastcdcs_for_every_size_and_length() {
        let data = noise(4 << 20, 3);
        // Low-entropy data too: long runs without a cut, and repeats.
        let mut runs = vec![0u8; 1 << 20];
        for (i, b) in runs.iter_mut().enumerate() {
            *b = ((i / 4096) % 7) as u8;
        }
        for avg in [1024usize, 4096, 16 * 1024, 64 * 1024, 256 * 1024] {
            let (ms, ml) = select_masks(avg, Normalization::Level1);
            let (min, max) = (avg / 4, avg * 4);
            for src in [&data[..], &runs[..]] {
                let mut at = 0;
                let mut cuts = 0;
                while at < src.len() && cuts < 400 {
                    let window = &src[at..(at + max).min(src.len())];
                    let want = reference(window, min, avg, max, ms, ml);
                    assert_eq!(
                        cut(window, min, avg, max, ms, ml),
                        want,
                        "avg {avg} at {at}"
                    );
                    // Every shorter window too, around the lanes' edges.
                    for len in [min, min + 1, avg - 1, avg + 3, min + 2 * BLOCK * 2 + 1] {
                        let w = &window[..len.min(window.len())];
                        assert_eq!(
                            cut(w, min, avg, max, ms, ml),
                            reference(w, min, avg, max, ms, ml),
                            "avg {avg} at {at} len {len}"
                        );
                    }
                    at += want.max(1);
                    cuts += 1;
                }
            }
        }
    }
}
