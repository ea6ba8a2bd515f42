//! Test data for the chunk layer's unit tests (noise and float weights,
//! each from a fixed generator), and the checks the cut searches share.

/// `len` bytes of xorshift64 noise, which nothing compresses.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `count` float32 values as trained weights are, N(0, 0.02),
/// little-endian.
pub fn weights(count: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..count)
        .flat_map(|_| {
            let (u, v) = (next().max(1e-12), next());
            let normal = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
            ((0.02 * normal) as f32).to_le_bytes()
        })
        .collect()
}

/// The length of the first chunk of a slice, given `min`, `avg`, `max`;
/// `None` where the search finds no cut (the chunk then runs to `max`).
pub type FirstChunk = fn(&[u8], usize, usize, usize) -> Option<usize>;

/// Chunk lengths of `data` cut by `search` with FastCDC's spread around
/// `avg` (min a quarter, max four times).
pub fn chunk_lens(data: &[u8], avg: usize, search: FirstChunk) -> Vec<usize> {
    let (min, max) = (avg / 4, avg * 4);
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let rest = &data[at..];
        let len = search(rest, min, avg, max).unwrap_or(rest.len().min(max));
        assert!(len >= 1 && len <= max, "chunk of {len} bytes");
        out.push(len);
        at += len;
    }
    out
}

/// Asserts that at least 97% of the 16 KiB-average chunks of `data` are
/// cut alike after each of `shifts` bytes of noise are put in front.
pub fn assert_cuts_follow_the_content(data: &[u8], shifts: &[usize], search: FirstChunk) {
    let chunks = |d: &[u8]| -> std::collections::HashSet<Vec<u8>> {
        let mut at = 0;
        chunk_lens(d, 16384, search)
            .into_iter()
            .map(|len| {
                at += len;
                d[at - len..at].to_vec()
            })
            .collect()
    };
    let plain = chunks(data);
    for &shift in shifts {
        let shifted = [noise(shift, 9), data.to_vec()].concat();
        let shared = chunks(&shifted).intersection(&plain).count();
        assert!(
            shared * 100 >= plain.len() * 97,
            "shift {shift}: {shared} of {} chunks shared",
            plain.len()
        );
    }
}

/// Asserts that `fast` cuts where `definition` does: on 4 MiB of noise
/// and weights at four averages, and on every length and alignment up
/// to 300 bytes with each of `mins` (where blocks of shuffles begin and
/// end), with tiny bounds whose stage 2 passes often.
pub fn assert_same_cuts(fast: FirstChunk, definition: FirstChunk, mins: &[usize]) {
    let data = [noise(3 << 20, 7), weights(1 << 20, 3)].concat();
    for avg in [1024, 4096, 16384, 65536] {
        assert_eq!(
            chunk_lens(&data, avg, fast),
            chunk_lens(&data, avg, definition),
            "avg {avg}"
        );
    }
    for len in 0..300 {
        for &min in mins {
            let slice = &data[len..len + 2 * len];
            assert_eq!(
                fast(slice, min, 64, 256),
                definition(slice, min, 64, 256),
                "{len} bytes at {len}, min {min}"
            );
        }
    }
}
