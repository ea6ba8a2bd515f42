//! What a remote holds, as far as uploading and fetching need to know:
//! every chunk in its packs (from the `index/` objects, cached locally so
//! that each index is downloaded once), its manifests and its snapshots.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::layout::{self, RemoteSnapshot};
use super::{Remote, RemoteError, Result};
use crate::ids::ChunkId;

/// Where a chunk's record lies on a remote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkPlace {
    /// The pack's id (its key is `packs/ID`).
    pub pack: Arc<str>,
    /// Offset of the record in the pack.
    pub offset: u64,
    /// Length of the record.
    pub len: u32,
}

/// Every chunk a remote holds, by id.
#[derive(Default)]
pub struct ChunkCatalog {
    chunks: HashMap<ChunkId, ChunkPlace>,
}

impl ChunkCatalog {
    /// Reads the remote's pack indexes. With `cache`, indexes already in
    /// that directory are read from it and new ones are saved to it.
    pub fn load(remote: &Remote, cache: Option<&Path>) -> Result<ChunkCatalog> {
        if let Some(dir) = cache {
            std::fs::create_dir_all(dir).map_err(|e| RemoteError::Local(dir.to_path_buf(), e))?;
        }
        let mut catalog = ChunkCatalog::default();
        for listed in remote.list("index")? {
            let Some(pack) = listed.key.strip_prefix("index/") else {
                continue;
            };
            let key = layout::index_key(pack);
            let cached: Option<PathBuf> = cache.map(|d| d.join(pack));
            let from_cache = cached
                .as_ref()
                .and_then(|p| std::fs::read(p).ok())
                .and_then(|b| layout::decode_index(&key, &b).ok());
            let entries = match from_cache {
                Some(entries) => entries,
                None => {
                    let bytes = remote.get(&key)?.ok_or_else(|| RemoteError::Missing {
                        url: remote.url().to_string(),
                        what: key.clone(),
                    })?;
                    let entries = layout::decode_index(&key, &bytes)?;
                    if let Some(p) = &cached {
                        save_cached(p, &bytes)?;
                    }
                    entries
                }
            };
            catalog.add_pack(pack, &entries);
        }
        Ok(catalog)
    }

    /// Records a pack and its chunks (after it and its index were written).
    pub fn add_pack(&mut self, pack: &str, entries: &[layout::IndexEntry]) {
        let name: Arc<str> = Arc::from(pack);
        for e in entries {
            self.chunks.entry(e.id).or_insert_with(|| ChunkPlace {
                pack: name.clone(),
                offset: e.offset,
                len: e.len,
            });
        }
    }

    /// The catalog without the packs `drop` names: their chunks count as
    /// absent (a push uploads them again).
    pub fn without_packs(self, drop: impl Fn(&str) -> bool) -> ChunkCatalog {
        ChunkCatalog {
            chunks: self
                .chunks
                .into_iter()
                .filter(|(_, place)| !drop(&place.pack))
                .collect(),
        }
    }

    /// Whether the remote holds a chunk.
    pub fn contains(&self, id: ChunkId) -> bool {
        self.chunks.contains_key(&id)
    }

    /// Where a chunk lies.
    pub fn place(&self, id: ChunkId) -> Option<&ChunkPlace> {
        self.chunks.get(&id)
    }
}

fn save_cached(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| RemoteError::Local(path.to_path_buf(), e))
}

/// The hashes of the manifests a remote holds.
pub fn manifests(remote: &Remote) -> Result<HashSet<String>> {
    Ok(remote
        .list("manifests")?
        .into_iter()
        .filter_map(|l| l.key.strip_prefix("manifests/").map(str::to_string))
        .collect())
}

/// A snapshot a remote holds, as listed (not yet read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotEntry {
    /// The node that pushed it.
    pub node: String,
    /// Its object key.
    pub key: String,
}

/// The snapshots a remote holds, optionally of one node only.
pub fn snapshots(remote: &Remote, node: Option<&str>) -> Result<Vec<SnapshotEntry>> {
    let dir = match node {
        Some(n) => format!("snapshots/{n}"),
        None => "snapshots".to_string(),
    };
    let mut out: Vec<SnapshotEntry> = remote
        .list(&dir)?
        .into_iter()
        .filter_map(|l| {
            let rest = l.key.strip_prefix("snapshots/")?;
            let (node, file) = rest.split_once('/')?;
            (file.ends_with(".json") && !file.contains('/')).then(|| SnapshotEntry {
                node: node.to_string(),
                key: l.key.clone(),
            })
        })
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// Reads and checks one snapshot object.
pub fn read_snapshot(remote: &Remote, key: &str) -> Result<RemoteSnapshot> {
    let bytes = remote.get(key)?.ok_or_else(|| RemoteError::Missing {
        url: remote.url().to_string(),
        what: key.to_string(),
    })?;
    layout::decode_snapshot(key, &bytes)
}
