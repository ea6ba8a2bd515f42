//! The stored form of a chunk: a tag byte, the raw length, then either the
//! raw bytes, their lz4 block, or their byte lanes (see [`super::lanes`]).
//!
//! ```text
//! [tag: u8][raw_len: u32 LE][payload]     tag 0 = raw, 1 = lz4 block, 2 = lanes
//! ```
//! A coding is kept only when it saves at least 1/16 of the chunk. lz4 is
//! tried first, on a 4 KiB probe; float weights, which lz4 cannot shrink,
//! then get their exponent lanes coded (about 0.88 of raw). Decoding
//! bounds the claimed length by [`MAX_CHUNK_LEN`] so that a corrupt header
//! cannot make us allocate gigabytes.

use std::borrow::Cow;

use thiserror::Error;

use super::lane_plans::LanePlans;
use super::lanes;

/// The largest chunk the codec accepts (fastcdc's maximum maximum).
pub const MAX_CHUNK_LEN: usize = 16 * 1024 * 1024;

const TAG_RAW: u8 = 0;
const TAG_LZ4: u8 = 1;
const TAG_LANES: u8 = 2;
/// Bytes of the header in front of every stored value.
pub const HEADER_LEN: usize = 5;

/// Why a stored chunk value could not be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    /// The value is shorter than its header or has an unknown tag.
    #[error("malformed chunk value ({0})")]
    Malformed(&'static str),
    /// The header claims more than [`MAX_CHUNK_LEN`] bytes.
    #[error("chunk claims {0} bytes, more than the maximum")]
    TooLarge(usize),
    /// lz4 refused the payload or produced the wrong length.
    #[error("lz4 payload does not decode")]
    BadLz4,
}

/// Bytes lz4 tries first: if they do not shrink, the chunk is stored raw
/// without compressing the rest (float weights never shrink).
const PROBE_LEN: usize = 4096;

fn shrinks(raw: &[u8], compressed_len: usize) -> bool {
    compressed_len + compressed_len / 16 < raw.len()
}

/// Which codings new chunks may get (`ckptfs mount --compression`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// lz4 where it pays, else the float lanes where they pay.
    #[default]
    Auto,
    /// lz4 only: float data stays raw, and reads it with a plain copy.
    Lz4,
    /// Everything raw.
    None,
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Compression::Auto),
            "lz4" => Ok(Compression::Lz4),
            "none" => Ok(Compression::None),
            _ => Err(format!("unknown compression {s:?} (auto, lz4 or none)")),
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compression::Auto => "auto",
            Compression::Lz4 => "lz4",
            Compression::None => "none",
        })
    }
}

/// Encodes `raw` for storage, compressing only when it pays.
pub fn encode(raw: &[u8]) -> Vec<u8> {
    let (header, payload) = encode_parts(raw, Compression::Auto);
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(&payload);
    out
}

/// The stored form of `raw` as its header and its payload (`raw` itself
/// when it is stored raw), so a caller can write both without a copy.
pub fn encode_parts(raw: &[u8], compression: Compression) -> ([u8; HEADER_LEN], Cow<'_, [u8]>) {
    Coder::default().encode_parts(raw, compression)
}

/// Encodes a run of neighbouring chunks (a batch of one file's), where
/// what coding one chunk found holds for the next: float chunks reuse the
/// lane plan of the one before ([`LanePlans`]) and, being like it,
/// skip the lz4 probe that it failed.
#[derive(Default)]
pub struct Coder {
    lanes: LanePlans,
}

impl Coder {
    /// The next chunk starts `position` bytes into the run (by default,
    /// where the last one ended).
    pub fn seek(&mut self, position: u64) {
        self.lanes.seek(position);
    }

    /// [`encode_parts`] for the next chunk of the run.
    pub fn encode_parts<'a>(
        &mut self,
        raw: &'a [u8],
        compression: Compression,
    ) -> ([u8; HEADER_LEN], Cow<'a, [u8]>) {
        let auto = compression == Compression::Auto;
        let compressed = match auto.then(|| self.lanes.reuse(raw)).flatten() {
            Some(c) if shrinks(raw, c.len()) => Some((TAG_LANES, c)),
            _ => self.compress(raw, compression),
        };
        self.lanes.advance(raw.len());
        let mut header = [0u8; HEADER_LEN];
        header[1..].copy_from_slice(&(raw.len() as u32).to_le_bytes());
        match compressed {
            Some((tag, c)) => {
                header[0] = tag;
                (header, Cow::Owned(c))
            }
            None => {
                header[0] = TAG_RAW;
                (header, Cow::Borrowed(raw))
            }
        }
    }

    /// lz4 where a probe says it pays, else lanes planned afresh.
    fn compress(&mut self, raw: &[u8], compression: Compression) -> Option<(u8, Vec<u8>)> {
        let probe = &raw[..raw.len().min(PROBE_LEN)];
        let promising = compression != Compression::None
            && (raw.len() <= PROBE_LEN || shrinks(probe, lz4_flex::block::compress(probe).len()));
        promising
            .then(|| lz4_flex::block::compress(raw))
            .filter(|c| shrinks(raw, c.len()))
            .map(|c| (TAG_LZ4, c))
            .or_else(|| {
                (compression == Compression::Auto)
                    .then(|| self.lanes.plan(raw))
                    .flatten()
                    .filter(|c| shrinks(raw, c.len()))
                    .map(|c| (TAG_LANES, c))
            })
    }
}

/// The raw length a stored value claims, without decoding it.
pub fn raw_len(stored: &[u8]) -> Result<usize, CodecError> {
    let header: [u8; 4] = stored
        .get(1..HEADER_LEN)
        .and_then(|s| s.try_into().ok())
        .ok_or(CodecError::Malformed("short header"))?;
    Ok(u32::from_le_bytes(header) as usize)
}

/// Decodes a stored value back to the raw bytes. The caller checks the hash.
pub fn decode(stored: &[u8]) -> Result<Vec<u8>, CodecError> {
    match layout(stored)? {
        Layout::Raw(raw) => Ok(raw.to_vec()),
        Layout::Coded(len) => {
            let mut out = vec![0u8; len];
            decode_into(stored, &mut out)?;
            Ok(out)
        }
    }
}

/// Where a stored value's raw bytes are to be had.
#[derive(Debug, PartialEq, Eq)]
pub enum Layout<'a> {
    /// In the value itself: this slice of it.
    Raw(&'a [u8]),
    /// Only by decoding ([`decode_into`]) into a buffer of this length.
    Coded(usize),
}

/// Checks a stored value's header and says where its raw bytes are.
pub fn layout(stored: &[u8]) -> Result<Layout<'_>, CodecError> {
    let len = raw_len(stored)?;
    if len > MAX_CHUNK_LEN {
        return Err(CodecError::TooLarge(len));
    }
    let payload = &stored[HEADER_LEN..];
    match stored[0] {
        TAG_RAW if payload.len() == len => Ok(Layout::Raw(payload)),
        TAG_RAW => Err(CodecError::Malformed("raw length mismatch")),
        TAG_LZ4 | TAG_LANES => Ok(Layout::Coded(len)),
        _ => Err(CodecError::Malformed("unknown tag")),
    }
}

/// Decodes a stored value into `out`, which must be as long as the raw
/// bytes ([`Layout::Coded`]). Every byte of `out` is written (it need not
/// be zeroed first), or an error is returned. The caller checks the hash.
pub fn decode_into(stored: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    if raw_len(stored)? != out.len() {
        return Err(CodecError::Malformed("raw length mismatch"));
    }
    let payload = &stored[HEADER_LEN..];
    match stored[0] {
        TAG_RAW if payload.len() == out.len() => {
            out.copy_from_slice(payload);
            Ok(())
        }
        TAG_LZ4 => match lz4_flex::block::decompress_into(payload, out) {
            Ok(n) if n == out.len() => Ok(()),
            _ => Err(CodecError::BadLz4),
        },
        TAG_LANES => lanes::decode_into(payload, out),
        TAG_RAW => Err(CodecError::Malformed("raw length mismatch")),
        _ => Err(CodecError::Malformed("unknown tag")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testdata::{noise, weights};
    use super::*;

    #[test]
    fn zeros_compress_and_round_trip() {
        let raw = vec![0u8; 65536];
        let stored = encode(&raw);
        assert!(
            stored.len() < 1024,
            "zeros stored in {} bytes",
            stored.len()
        );
        assert_eq!(stored[0], TAG_LZ4);
        assert_eq!(decode(&stored).unwrap(), raw);
    }

    #[test]
    fn incompressible_data_is_stored_raw() {
        let raw = noise(20000, 0x9E37_79B9_7F4A_7C15);
        let stored = encode(&raw);
        assert_eq!(stored[0], TAG_RAW);
        assert_eq!(stored.len(), raw.len() + HEADER_LEN);
        assert_eq!(decode(&stored).unwrap(), raw);
    }

    #[test]
    fn float_tensors_get_their_lanes_coded() {
        let raw = weights(4096, 5);
        let stored = encode(&raw);
        assert_eq!(stored[0], TAG_LANES);
        assert!(stored.len() < raw.len() * 15 / 16);
        assert_eq!(decode(&stored).unwrap(), raw);
    }

    #[test]
    fn compression_modes_choose_the_codings() {
        let floats = weights(4096, 5);
        let zeros = vec![0u8; 16384];
        let tag = |raw: &[u8], c: Compression| encode_parts(raw, c).0[0];
        assert_eq!(tag(&floats, Compression::Auto), TAG_LANES);
        assert_eq!(tag(&floats, Compression::Lz4), TAG_RAW);
        assert_eq!(tag(&zeros, Compression::Lz4), TAG_LZ4);
        assert_eq!(tag(&zeros, Compression::None), TAG_RAW);
        for c in ["auto", "lz4", "none"] {
            assert_eq!(c.parse::<Compression>().unwrap().to_string(), c);
        }
        assert!("zstd".parse::<Compression>().is_err());
    }

    #[test]
    fn a_coder_run_skips_lz4_only_for_chunks_like_the_last() {
        // Floats, then text-like data in the same batch: the floats after
        // the first reuse its lane plan; the text still gets lz4.
        let floats = weights(4 * 16384 / 4, 8);
        let text: Vec<u8> = b"step_100/data/0 model.layers.0.weight "
            .iter()
            .copied()
            .cycle()
            .take(16384)
            .collect();
        let mut coder = Coder::default();
        let mut tags = Vec::new();
        for raw in floats.chunks(16384).chain([&text[..]]) {
            for c in [Compression::Auto, Compression::Lz4, Compression::None] {
                let mut alone = Coder::default();
                let (header, payload) = alone.encode_parts(raw, c);
                assert_eq!(decode(&[&header[..], &payload].concat()).unwrap(), raw);
            }
            let (header, payload) = coder.encode_parts(raw, Compression::Auto);
            assert_eq!(decode(&[&header[..], &payload].concat()).unwrap(), raw);
            tags.push(header[0]);
        }
        assert_eq!(tags, [TAG_LANES, TAG_LANES, TAG_LANES, TAG_LANES, TAG_LZ4]);
        // A run that may not code lanes never reuses a plan.
        let mut coder = Coder::default();
        for raw in floats.chunks(16384) {
            assert_eq!(coder.encode_parts(raw, Compression::Lz4).0[0], TAG_RAW);
        }
    }

    #[test]
    fn corrupt_values_are_errors_not_panics() {
        assert!(decode(&[]).is_err());
        assert!(decode(&[9, 1, 0, 0, 0, 1]).is_err());
        assert_eq!(
            decode(&[TAG_LZ4, 0xff, 0xff, 0xff, 0x7f]),
            Err(CodecError::TooLarge(0x7fff_ffff))
        );
        let mut stored = encode(&[1u8; 4000]);
        let last = stored.len() - 1;
        stored[last] ^= 0xff;
        stored.truncate(last - 2);
        assert!(decode(&stored).is_err());
    }
}
