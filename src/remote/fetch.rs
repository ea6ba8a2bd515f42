//! Reading a remote back: its snapshots and their files' bytes, every
//! chunk checked against its id as it arrives. Neighbouring records of a
//! pack are fetched with one ranged GET, several at a time.

use super::catalog::{self, ChunkCatalog, SnapshotEntry};
use super::layout::{self, RemoteSnapshot};
use super::{Remote, RemoteError, Result};
use crate::ids::ChunkId;
use crate::tree::Entry;

/// Longest stretch of a pack fetched with one request.
const MAX_RANGE: u64 = 8 << 20;
/// Ranged GETs in flight at once.
const GETS_IN_FLIGHT: usize = 4;

/// A remote opened for reading.
pub struct RemoteReader<'r> {
    remote: &'r Remote,
    catalog: ChunkCatalog,
}

impl<'r> RemoteReader<'r> {
    /// Reads the remote's pack indexes.
    pub fn new(remote: &'r Remote) -> Result<Self> {
        Ok(RemoteReader {
            remote,
            catalog: ChunkCatalog::load(remote, None)?,
        })
    }

    /// The remote.
    pub fn remote(&self) -> &Remote {
        self.remote
    }

    /// Every snapshot the remote holds, read, oldest first.
    pub fn snapshots(&self) -> Result<Vec<RemoteSnapshot>> {
        let mut out = Vec::new();
        for SnapshotEntry { key, .. } in catalog::snapshots(self.remote, None)? {
            out.push(catalog::read_snapshot(self.remote, &key)?);
        }
        out.sort_by_key(|s| (s.created_secs, s.created_nanos, s.node.clone(), s.seq));
        Ok(out)
    }

    /// A manifest's entries, checked against its name.
    pub fn manifest(&self, hash: &str) -> Result<Vec<Entry>> {
        let key = layout::manifest_key(hash);
        let bytes = self.remote.get(&key)?.ok_or_else(|| RemoteError::Missing {
            url: self.remote.url().to_string(),
            what: key.clone(),
        })?;
        layout::decode_manifest(&key, hash, &bytes)
    }

    /// Streams a file's bytes to `out` in order (holes as zeros, in pieces
    /// of at most 1 MiB). Returns how many bytes it produced.
    pub fn read_file(&self, hash: &str, mut out: impl FnMut(&[u8]) -> Result<()>) -> Result<u64> {
        let entries = self.manifest(hash)?;
        // Requests: runs of records that lie side by side in one pack.
        let mut ranges: Vec<(String, std::ops::Range<u64>)> = Vec::new();
        // For each request, the entries it serves (holes ride along).
        let mut plan: Vec<Vec<Entry>> = Vec::new();
        let mut leading_holes: Vec<Entry> = Vec::new();
        for e in entries {
            let Entry::Chunk { id, .. } = e else {
                match plan.last_mut() {
                    Some(p) => p.push(e),
                    None => leading_holes.push(e),
                }
                continue;
            };
            let place = self.catalog.place(id).ok_or_else(|| RemoteError::Missing {
                url: self.remote.url().to_string(),
                what: format!("chunk {id} (named by manifest {hash})"),
            })?;
            let key = layout::pack_key(&place.pack);
            let end = place.offset + place.len as u64;
            let extend = match (ranges.last_mut(), plan.last()) {
                (Some((k, r)), Some(p)) => {
                    *k == key
                        && r.end == place.offset
                        && end - r.start <= MAX_RANGE
                        && matches!(p.last(), Some(Entry::Chunk { .. }))
                }
                _ => false,
            };
            if extend {
                if let (Some((_, r)), Some(p)) = (ranges.last_mut(), plan.last_mut()) {
                    r.end = end;
                    p.push(e);
                }
            } else {
                ranges.push((key, place.offset..end));
                plan.push(vec![e]);
            }
        }
        let mut total = 0u64;
        // Holes before the first chunk.
        write_holes(&mut out, &leading_holes, &mut total)?;
        let mut plans = plan.into_iter();
        let starts: Vec<u64> = ranges.iter().map(|(_, r)| r.start).collect();
        let mut request = 0usize;
        self.remote
            .get_ranges(ranges, GETS_IN_FLIGHT, |key, bytes| {
                let start = starts.get(request).copied().unwrap_or(0);
                request += 1;
                let entries = plans.next().unwrap_or_default();
                for e in entries {
                    match e {
                        Entry::Chunk { id, len } => {
                            let place = self.place(id, hash)?;
                            let from = (place.offset - start) as usize;
                            let record = bytes
                                .get(from..from + place.len as usize)
                                .ok_or_else(|| short(key, id))?;
                            let raw = layout::decode_record(key, id, record)?;
                            if raw.len() != len as usize {
                                return Err(RemoteError::Corrupt {
                                    key: key.to_string(),
                                    why: format!(
                                        "chunk {id}: {} bytes, manifest says {len}",
                                        raw.len()
                                    ),
                                });
                            }
                            out(&raw)?;
                            total += raw.len() as u64;
                        }
                        hole => write_holes(&mut out, &[hole], &mut total)?,
                    }
                }
                Ok(())
            })?;
        Ok(total)
    }

    fn place(&self, id: ChunkId, hash: &str) -> Result<&super::catalog::ChunkPlace> {
        self.catalog.place(id).ok_or_else(|| RemoteError::Missing {
            url: self.remote.url().to_string(),
            what: format!("chunk {id} (named by manifest {hash})"),
        })
    }
}

fn short(key: &str, id: ChunkId) -> RemoteError {
    RemoteError::Corrupt {
        key: key.to_string(),
        why: format!("chunk {id}: the object is shorter than its index says"),
    }
}

fn write_holes(
    out: &mut impl FnMut(&[u8]) -> Result<()>,
    holes: &[Entry],
    total: &mut u64,
) -> Result<()> {
    let zeros = vec![0u8; 1 << 20];
    for h in holes {
        let mut left = h.len();
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            out(&zeros[..n])?;
            left -= n as u64;
            *total += n as u64;
        }
    }
    Ok(())
}
