//! What a remote holds and how each object is encoded. Everything lives
//! under the remote's prefix:
//!
//! | key                          | content                                        |
//! |------------------------------|------------------------------------------------|
//! | `packs/ID`                   | chunk records, as in local packs: id, stored length, codec value |
//! | `index/ID`                   | where each record of `packs/ID` starts, with a checksum |
//! | `manifests/HASH`             | one file version's chunks and holes, named by its hash |
//! | `snapshots/NODE/NAME.json`   | a snapshot: its files with attributes and manifests |
//!
//! Objects are written once and never changed (create-only puts), in an
//! order that keeps the remote consistent at every moment: a pack before
//! its index, every pack before the manifests that use its chunks, and the
//! manifests before the snapshot that names them. A reader that sees an
//! object can therefore rely on everything it names.

use serde::{Deserialize, Serialize};

use super::{RemoteError, Result};
use crate::chunk;
use crate::ids::ChunkId;
use crate::tree::Entry;

/// Bytes in front of every pack record: chunk id and stored length.
pub const RECORD_HEADER: usize = 20;

const INDEX_MAGIC: &[u8; 8] = b"CKPTIDX1";
const MANIFEST_MAGIC: &[u8; 8] = b"CKPTMAN1";
const SNAPSHOT_MAGIC: &[u8; 8] = b"CKPTSNP1";

/// The key of a pack.
pub fn pack_key(pack: &str) -> String {
    format!("packs/{pack}")
}

/// The key of a pack's index.
pub fn index_key(pack: &str) -> String {
    format!("index/{pack}")
}

/// The key of a manifest.
pub fn manifest_key(hash: &str) -> String {
    format!("manifests/{hash}")
}

/// The key of a node's snapshot.
pub fn snapshot_key(node: &str, name: &[u8]) -> String {
    format!("snapshots/{node}/{}.json", object_name(name))
}

/// A snapshot name as an object name: itself when it is plain
/// (`[A-Za-z0-9._-]`, not starting with `.`), else `~` and its hex.
fn object_name(name: &[u8]) -> String {
    let plain = !name.is_empty()
        && name[0] != b'.'
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if plain {
        String::from_utf8_lossy(name).into_owned()
    } else {
        format!("~{}", hex(name))
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The bytes of lower-case or upper-case hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The name of a content-addressed object: the hex of its xxh3-128.
pub fn content_name(bytes: &[u8]) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(bytes))
}

fn with_trailer(mut body: Vec<u8>) -> Vec<u8> {
    let sum = xxhash_rust::xxh3::xxh3_64(&body);
    body.extend_from_slice(&sum.to_le_bytes());
    body
}

fn check_trailer<'a>(key: &str, bytes: &'a [u8], magic: &[u8; 8]) -> Result<&'a [u8]> {
    let corrupt = |why: &str| RemoteError::Corrupt {
        key: key.to_string(),
        why: why.to_string(),
    };
    let (body, sum) = bytes
        .split_last_chunk::<8>()
        .ok_or_else(|| corrupt("too short"))?;
    if xxhash_rust::xxh3::xxh3_64(body) != u64::from_le_bytes(*sum) {
        return Err(corrupt("checksum mismatch"));
    }
    body.strip_prefix(magic.as_slice())
        .ok_or_else(|| corrupt("not a ckptfs object of this kind"))
}

/// Where one record of a pack lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// The chunk.
    pub id: ChunkId,
    /// Offset of its record in the pack.
    pub offset: u64,
    /// Length of its record (header included).
    pub len: u32,
}

/// Encodes a pack's index.
pub fn encode_index(entries: &[IndexEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + entries.len() * 28);
    out.extend_from_slice(INDEX_MAGIC);
    for e in entries {
        out.extend_from_slice(&e.id.to_bytes());
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.len.to_le_bytes());
    }
    with_trailer(out)
}

/// Decodes a pack's index, checking its checksum.
pub fn decode_index(key: &str, bytes: &[u8]) -> Result<Vec<IndexEntry>> {
    let body = check_trailer(key, bytes, INDEX_MAGIC)?;
    if !body.len().is_multiple_of(28) {
        return Err(RemoteError::Corrupt {
            key: key.to_string(),
            why: "index length is not a whole number of entries".into(),
        });
    }
    Ok(body
        .chunks_exact(28)
        .filter_map(|e| {
            Some(IndexEntry {
                id: ChunkId::from_slice(&e[..16])?,
                offset: u64::from_le_bytes(e[16..24].try_into().ok()?),
                len: u32::from_le_bytes(e[24..28].try_into().ok()?),
            })
        })
        .collect())
}

/// Encodes a manifest: its chunks (id, raw length) and holes in file order.
pub fn encode_manifest(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + entries.len() * 21);
    out.extend_from_slice(MANIFEST_MAGIC);
    for e in entries {
        match *e {
            Entry::Chunk { id, len } => {
                out.push(0);
                out.extend_from_slice(&id.to_bytes());
                out.extend_from_slice(&len.to_le_bytes());
            }
            Entry::Hole { len } => {
                out.push(1);
                out.extend_from_slice(&len.to_le_bytes());
            }
        }
    }
    with_trailer(out)
}

/// Decodes a manifest fetched as `manifests/HASH`: its name must be the
/// hash of its bytes.
pub fn decode_manifest(key: &str, hash: &str, bytes: &[u8]) -> Result<Vec<Entry>> {
    let corrupt = |why: &str| RemoteError::Corrupt {
        key: key.to_string(),
        why: why.to_string(),
    };
    if content_name(bytes) != hash {
        return Err(corrupt("its bytes do not hash to its name"));
    }
    let mut body = check_trailer(key, bytes, MANIFEST_MAGIC)?;
    let mut entries = Vec::new();
    while let Some((&kind, rest)) = body.split_first() {
        match kind {
            0 if rest.len() >= 20 => {
                let id = ChunkId::from_slice(&rest[..16]).ok_or_else(|| corrupt("bad id"))?;
                let len = u32::from_le_bytes(rest[16..20].try_into().map_err(|_| corrupt("len"))?);
                entries.push(Entry::Chunk { id, len });
                body = &rest[20..];
            }
            1 if rest.len() >= 8 => {
                let len = u64::from_le_bytes(rest[..8].try_into().map_err(|_| corrupt("len"))?);
                entries.push(Entry::Hole { len });
                body = &rest[8..];
            }
            _ => return Err(corrupt("bad entry")),
        }
    }
    Ok(entries)
}

/// One pack record: header (id, stored length) and the codec value.
pub fn push_record(pack: &mut Vec<u8>, id: ChunkId, stored: &[u8]) {
    pack.extend_from_slice(&id.to_bytes());
    pack.extend_from_slice(&(stored.len() as u32).to_le_bytes());
    pack.extend_from_slice(stored);
}

/// Decodes one fetched pack record and checks it against its chunk id:
/// the raw bytes, or an error naming the pack; never wrong bytes.
pub fn decode_record(key: &str, id: ChunkId, record: &[u8]) -> Result<Vec<u8>> {
    let corrupt = |why: String| RemoteError::Corrupt {
        key: key.to_string(),
        why,
    };
    let (header, value) = record
        .split_at_checked(RECORD_HEADER)
        .ok_or_else(|| corrupt(format!("chunk {id}: short record")))?;
    let stored_len = u32::from_le_bytes([header[16], header[17], header[18], header[19]]);
    if header[..16] != id.to_bytes() || stored_len as usize != value.len() {
        return Err(corrupt(format!("chunk {id}: record header does not match")));
    }
    let raw = chunk::decode(value).map_err(|e| corrupt(format!("chunk {id}: {e}")))?;
    if chunk::chunk_id(&raw) != id {
        return Err(corrupt(format!("chunk {id}: bytes do not hash to its id")));
    }
    Ok(raw)
}

/// A snapshot as a remote holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteSnapshot {
    /// The node that pushed it.
    pub node: String,
    /// Its name ([`text`] form: UTF-8, or `hex:` and its bytes).
    pub name: String,
    /// Its order among the node's snapshots.
    pub seq: u64,
    /// When it was taken: seconds since the epoch.
    pub created_secs: i64,
    /// And nanoseconds.
    pub created_nanos: u32,
    /// What took it.
    pub trigger: String,
    /// Pinned on the node when pushed.
    pub pinned: bool,
    /// Total size of its regular files.
    pub logical_bytes: u64,
    /// A node's part of a global snapshot of this name.
    #[serde(default)]
    pub global: bool,
    /// The cut search of the store that pushed it (`chunk::CutSearch` by
    /// name; absent: `fastcdc`, as every store cut before `window`). A
    /// clone takes it over, so that what it saves deduplicates against
    /// what it read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunker: Option<String>,
    /// Everything in it, directories before their contents; the first item
    /// is its root.
    pub items: Vec<RemoteItem>,
}

/// One file, directory, link or special file of a remote snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteItem {
    /// Path inside the snapshot, `/`-separated ([`text`] form; empty: the root).
    pub path: String,
    /// `dir`, `file`, `symlink`, `fifo`, `socket`, `chardev` or `blockdev`.
    pub kind: String,
    /// Permission bits.
    pub perm: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time: seconds.
    pub mtime_secs: i64,
    /// And nanoseconds.
    pub mtime_nanos: u32,
    /// Size (regular files).
    #[serde(default)]
    pub size: u64,
    /// Names with the same value are hard links to one file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<u64>,
    /// The content: a `manifests/` hash (non-empty regular files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// A symlink's target ([`text`] form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// Bytes as JSON text: themselves when they are UTF-8 and do not start
/// with `hex:`, else `hex:` and their hex.
pub fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.starts_with("hex:") => s.to_string(),
        _ => format!("hex:{}", hex(bytes)),
    }
}

/// The bytes of a [`text`] form.
pub fn from_text(text: &str) -> Option<Vec<u8>> {
    match text.strip_prefix("hex:") {
        Some(h) => unhex(h),
        None => Some(text.as_bytes().to_vec()),
    }
}

/// Encodes a snapshot object: magic, JSON, checksum.
pub fn encode_snapshot(snap: &RemoteSnapshot) -> Result<Vec<u8>> {
    let mut out = SNAPSHOT_MAGIC.to_vec();
    serde_json::to_writer(&mut out, snap)
        .map_err(|e| RemoteError::Config(format!("encoding snapshot {}: {e}", snap.name)))?;
    Ok(with_trailer(out))
}

/// Decodes a snapshot object, checking its checksum.
pub fn decode_snapshot(key: &str, bytes: &[u8]) -> Result<RemoteSnapshot> {
    let body = check_trailer(key, bytes, SNAPSHOT_MAGIC)?;
    serde_json::from_slice(body).map_err(|e| RemoteError::Corrupt {
        key: key.to_string(),
        why: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_round_trip_and_any_damage_is_caught() {
        let id = chunk::chunk_id(b"abc");
        let entries = vec![
            Entry::Chunk { id, len: 3 },
            Entry::Hole { len: 1 << 40 },
            Entry::Chunk { id, len: 3 },
        ];
        let m = encode_manifest(&entries);
        let name = content_name(&m);
        assert_eq!(decode_manifest("m", &name, &m).ok(), Some(entries));
        let idx = vec![IndexEntry {
            id,
            offset: 7,
            len: 28,
        }];
        let i = encode_index(&idx);
        assert_eq!(decode_index("i", &i).ok(), Some(idx));
        let mut rec = Vec::new();
        push_record(&mut rec, id, &chunk::encode(b"abc"));
        assert_eq!(decode_record("p", id, &rec).ok(), Some(b"abc".to_vec()));
        for at in 0..m.len() {
            let mut bad = m.clone();
            bad[at] ^= 0x10;
            assert!(
                decode_manifest("m", &name, &bad).is_err(),
                "manifest byte {at}"
            );
        }
        for at in 0..i.len() {
            let mut bad = i.clone();
            bad[at] ^= 0x10;
            assert!(decode_index("i", &bad).is_err(), "index byte {at}");
        }
        for at in 0..rec.len() {
            let mut bad = rec.clone();
            bad[at] ^= 0x10;
            assert!(decode_record("p", id, &bad).is_err(), "record byte {at}");
        }
    }

    #[test]
    fn names_and_bytes_survive_the_text_form() {
        for b in [&b"plain"[..], b"hex:looks-encoded", b"\xff\xfe", b""] {
            assert_eq!(from_text(&text(b)).as_deref(), Some(b));
        }
        assert_eq!(
            snapshot_key("n1", b"step-100"),
            "snapshots/n1/step-100.json"
        );
        assert_eq!(snapshot_key("n1", b"a b"), "snapshots/n1/~612062.json");
        assert_eq!(snapshot_key("n1", b".x"), "snapshots/n1/~2e78.json");
    }
}
