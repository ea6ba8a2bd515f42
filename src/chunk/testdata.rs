//! Test data for the chunk layer's unit tests: noise and float weights,
//! each from a fixed generator.

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
