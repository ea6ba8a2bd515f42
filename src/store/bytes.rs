//! A tiny bounds-checked binary encoder/decoder for the store's records.
//!
//! Every decode error is a value, never a panic: records come from disk.

use super::StoreError;

/// Appends fixed-width little-endian fields to a buffer.
#[derive(Default)]
pub struct Enc(pub Vec<u8>);

impl Enc {
    /// A new empty buffer.
    pub fn new() -> Self {
        Enc(Vec::with_capacity(64))
    }
    /// Appends one byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    /// Appends a u16.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends a u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends a u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends an i64.
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends a u128 (big-endian, as chunk ids are keys elsewhere).
    pub fn u128(&mut self, v: u128) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Appends a u32 length and the bytes.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
        self
    }
    /// The encoded bytes.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

/// Reads the fields `Enc` wrote, failing cleanly on short input.
pub struct Dec<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Dec<'a> {
    /// Decodes `buf`, naming `what` in errors.
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Dec { buf, what }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        if self.buf.len() < N {
            return Err(StoreError::Corrupt(format!(
                "{} record is truncated",
                self.what
            )));
        }
        let (head, rest) = self.buf.split_at(N);
        self.buf = rest;
        let mut out = [0u8; N];
        out.copy_from_slice(head);
        Ok(out)
    }
    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take::<1>()?[0])
    }
    /// Reads a u16.
    pub fn u16(&mut self) -> Result<u16, StoreError> {
        Ok(u16::from_le_bytes(self.take()?))
    }
    /// Reads a u32.
    pub fn u32(&mut self) -> Result<u32, StoreError> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    /// Reads a u64.
    pub fn u64(&mut self) -> Result<u64, StoreError> {
        Ok(u64::from_le_bytes(self.take()?))
    }
    /// Reads an i64.
    pub fn i64(&mut self) -> Result<i64, StoreError> {
        Ok(i64::from_le_bytes(self.take()?))
    }
    /// Reads a big-endian u128.
    pub fn u128(&mut self) -> Result<u128, StoreError> {
        Ok(u128::from_be_bytes(self.take()?))
    }
    /// Reads a length-prefixed byte string.
    pub fn bytes(&mut self) -> Result<Vec<u8>, StoreError> {
        let len = self.u32()? as usize;
        if self.buf.len() < len {
            return Err(StoreError::Corrupt(format!(
                "{} record is truncated",
                self.what
            )));
        }
        let (head, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(head.to_vec())
    }
}
