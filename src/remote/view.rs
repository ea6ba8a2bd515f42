//! A remote seen as read-only directories: the snapshots it holds (from
//! every node), and their files read on demand. Chunks are fetched on
//! first read, a run of neighbouring records per request with read-ahead,
//! checked against their ids, and kept in a bounded in-memory cache, so a
//! new machine can load one checkpoint without downloading the history.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use quick_cache::sync::Cache;
use quick_cache::Weighter;

use super::catalog::{self, ChunkCatalog};
use super::layout::{self, RemoteSnapshot};
use super::spec::GLOBAL_NODE;
use super::{Remote, RemoteError, Result};
use crate::ids::{ChunkId, IdMap};
use crate::tree::{Entry, ReadAhead};

/// How long a listing of the remote's snapshots is reused.
const LIST_FOR: Duration = Duration::from_secs(5);
/// Bytes fetched beyond a read, with it, for the next reads.
const READ_AHEAD: u64 = 4 << 20;
/// Bytes beyond a read fetched in the background while the reader works
/// on what it has.
const PREFETCH: u64 = 32 << 20;
/// Longest stretch of a pack fetched with one request (several requests
/// run at once).
const MAX_RANGE: u64 = 4 << 20;
/// Ranged GETs in flight at once.
const GETS_IN_FLIGHT: usize = 4;

#[derive(Clone)]
struct Weight;

impl Weighter<ChunkId, Arc<Vec<u8>>> for Weight {
    fn weight(&self, _key: &ChunkId, val: &Arc<Vec<u8>>) -> u64 {
        val.len() as u64 + 64
    }
}

impl Weighter<String, Arc<FileMap>> for Weight {
    fn weight(&self, _key: &String, val: &Arc<FileMap>) -> u64 {
        (val.entries.len() * 40 + 64) as u64
    }
}

/// A manifest with where each entry starts.
struct FileMap {
    entries: Vec<Entry>,
    starts: Vec<u64>,
}

#[derive(Default)]
struct Listing {
    at: Option<Instant>,
    /// Snapshot object key → its id here (stable while the view lives).
    ids: HashMap<String, u32>,
    /// By id - 1.
    snaps: Vec<Arc<RemoteSnapshot>>,
}

/// One remote, browsable.
pub struct RemoteView {
    remote: Remote,
    listing: Mutex<Listing>,
    catalog: RwLock<ChunkCatalog>,
    chunks: Cache<ChunkId, Arc<Vec<u8>>, Weight>,
    files: Cache<String, Arc<FileMap>, Weight>,
    trees: Mutex<HashMap<u32, Arc<SnapTree>>>,
    /// The nodes a global snapshot waits for (empty: any).
    global_nodes: Vec<String>,
    /// A background prefetch is running (one at a time per remote).
    prefetching: std::sync::atomic::AtomicBool,
    /// Chunks a prefetch fetched that no read has taken yet.
    ahead: Mutex<ReadAhead<Arc<Vec<u8>>>>,
}

/// Fetched chunks by id.
type Chunks = IdMap<Arc<Vec<u8>>>;

/// Where fetched chunks go.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dest {
    /// The read-through cache (a read is waiting for them).
    Cache,
    /// The prefetched set, until a read takes them.
    Ahead,
}

/// Most bytes of prefetched chunks waiting for a read.
const AHEAD_MAX: u64 = 2 * PREFETCH;

impl RemoteView {
    /// A view of `remote` keeping at most `cache_bytes` of fetched chunks;
    /// a global snapshot shows once each of `global_nodes` pushed its part.
    pub fn new(remote: Remote, cache_bytes: u64, global_nodes: Vec<String>) -> Self {
        RemoteView {
            remote,
            listing: Mutex::new(Listing::default()),
            catalog: RwLock::new(ChunkCatalog::default()),
            chunks: Cache::with_weighter(
                (cache_bytes / 16384).max(16) as usize,
                cache_bytes,
                Weight,
            ),
            files: Cache::with_weighter(1024, 64 << 20, Weight),
            trees: Mutex::new(HashMap::new()),
            global_nodes,
            prefetching: std::sync::atomic::AtomicBool::new(false),
            ahead: Mutex::new(ReadAhead::new(AHEAD_MAX)),
        }
    }

    /// The remote's URL.
    pub fn url(&self) -> &str {
        self.remote.url()
    }

    /// Every snapshot the remote holds, with its id here (ids start at 1).
    /// The listing is refreshed when older than a few seconds; snapshot
    /// objects are read once.
    pub fn snapshots(&self) -> Result<Vec<(u32, Arc<RemoteSnapshot>)>> {
        let mut listing = self.listing.lock();
        if listing.at.is_none_or(|at| at.elapsed() > LIST_FOR) {
            for entry in catalog::snapshots(&self.remote, None)? {
                if listing.ids.contains_key(&entry.key) {
                    continue;
                }
                let snap = catalog::read_snapshot(&self.remote, &entry.key)?;
                listing.snaps.push(Arc::new(snap));
                let id = listing.snaps.len() as u32;
                listing.ids.insert(entry.key, id);
            }
            self.add_globals(&mut listing);
            listing.at = Some(Instant::now());
        }
        Ok(listing
            .snaps
            .iter()
            .enumerate()
            .map(|(i, s)| (i as u32 + 1, s.clone()))
            .collect())
    }

    /// Adds each global snapshot whose parts are all there, as a snapshot
    /// of the node `global` merging them.
    fn add_globals(&self, listing: &mut Listing) {
        let mut parts: std::collections::BTreeMap<String, Vec<Arc<RemoteSnapshot>>> =
            Default::default();
        for s in &listing.snaps {
            if s.global && s.node != GLOBAL_NODE {
                parts.entry(s.name.clone()).or_default().push(s.clone());
            }
        }
        for (name, mut group) in parts {
            let key = format!("{GLOBAL_NODE}/{name}");
            if listing.ids.contains_key(&key) {
                continue;
            }
            if !self.global_nodes.is_empty() {
                let complete = self
                    .global_nodes
                    .iter()
                    .all(|n| group.iter().any(|s| s.node == *n));
                if !complete {
                    continue;
                }
                group.retain(|s| self.global_nodes.contains(&s.node));
                group.sort_by_key(|s| self.global_nodes.iter().position(|n| *n == s.node));
            }
            listing.snaps.push(Arc::new(merge(&name, &group)));
            let id = listing.snaps.len() as u32;
            listing.ids.insert(key, id);
        }
    }

    /// Every snapshot, global ones included, oldest first.
    pub fn list(&self) -> Result<Vec<Arc<RemoteSnapshot>>> {
        let mut out: Vec<Arc<RemoteSnapshot>> =
            self.snapshots()?.into_iter().map(|(_, s)| s).collect();
        out.sort_by(|a, b| {
            (a.created_secs, a.created_nanos, &a.node, a.seq).cmp(&(
                b.created_secs,
                b.created_nanos,
                &b.node,
                b.seq,
            ))
        });
        Ok(out)
    }

    /// Streams a whole file (`size` bytes, manifest `hash`) to `out` in
    /// pieces of at most [`READ_AHEAD`], with the background prefetch.
    pub fn read_file(
        self: &Arc<Self>,
        hash: &str,
        size: u64,
        mut out: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<u64> {
        let mut at = 0u64;
        while at < size {
            let piece = self.read(hash, at, (size - at).min(READ_AHEAD) as u32)?;
            if piece.is_empty() {
                break;
            }
            out(&piece)?;
            at += piece.len() as u64;
        }
        Ok(at)
    }

    /// A snapshot by its id here.
    pub fn snapshot(&self, id: u32) -> Option<Arc<RemoteSnapshot>> {
        let listing = self.listing.lock();
        listing.snaps.get(id.checked_sub(1)? as usize).cloned()
    }

    fn file_map(&self, hash: &str) -> Result<Arc<FileMap>> {
        if let Some(m) = self.files.get(hash) {
            return Ok(m);
        }
        let reader_key = layout::manifest_key(hash);
        let bytes = self
            .remote
            .get(&reader_key)?
            .ok_or_else(|| RemoteError::Missing {
                url: self.url().to_string(),
                what: reader_key.clone(),
            })?;
        let entries = layout::decode_manifest(&reader_key, hash, &bytes)?;
        let mut starts = Vec::with_capacity(entries.len());
        let mut at = 0u64;
        for e in &entries {
            starts.push(at);
            at += e.len();
        }
        let map = Arc::new(FileMap { entries, starts });
        self.files.insert(hash.to_string(), map.clone());
        Ok(map)
    }

    /// Reads `size` bytes at `offset` of the file whose manifest is `hash`,
    /// and starts fetching what follows in the background.
    pub fn read(self: &Arc<Self>, hash: &str, offset: u64, size: u32) -> Result<Vec<u8>> {
        let map = self.file_map(hash)?;
        let end = offset.saturating_add(size as u64);
        let first = map
            .starts
            .partition_point(|&s| s <= offset)
            .saturating_sub(1);
        // The entries the read covers.
        let mut wanted = Vec::new();
        let mut i = first;
        while i < map.entries.len() && map.starts[i] < end {
            wanted.push(i);
            i += 1;
        }
        self.wait_for_prefetch(&map, &wanted);
        let fetched = self.fetch(&map, &wanted, Dest::Cache, false)?;
        self.prefetch(&map, i);
        let mut out = Vec::with_capacity(size as usize);
        for i in wanted {
            let start = map.starts[i];
            let e = map.entries[i];
            let from = offset.max(start) - start;
            let to = end.min(start + e.len()) - start;
            match e {
                Entry::Hole { .. } => out.resize(out.len() + (to - from) as usize, 0),
                Entry::Chunk { id, .. } => {
                    let bytes = match self.cached(id).or_else(|| fetched.get(&id).cloned()) {
                        Some(b) => b,
                        // Evicted meanwhile by other reads: fetch it again.
                        None => self
                            .fetch(&map, &[i], Dest::Cache, true)?
                            .remove(&id)
                            .ok_or_else(|| RemoteError::Missing {
                                url: self.url().to_string(),
                                what: format!("chunk {id}"),
                            })?,
                    };
                    let piece = bytes.get(from as usize..to as usize).ok_or_else(|| {
                        RemoteError::Corrupt {
                            key: layout::manifest_key(hash),
                            why: format!("chunk {id} is shorter than the manifest says"),
                        }
                    })?;
                    out.extend_from_slice(piece);
                }
            }
        }
        Ok(out)
    }

    /// Starts fetching the entries from `from` on, up to [`PREFETCH`]
    /// bytes, on a thread of its own, unless one is running or they are
    /// all cached.
    fn prefetch(self: &Arc<Self>, map: &Arc<FileMap>, from: usize) {
        use std::sync::atomic::Ordering;
        let mut upto = from;
        let mut bytes = 0u64;
        while upto < map.entries.len() && bytes < PREFETCH {
            bytes += map.entries[upto].len();
            upto += 1;
        }
        let window: Vec<usize> = (from..upto).collect();
        if self.missing(map, &window).is_empty() || self.prefetching.swap(true, Ordering::AcqRel) {
            return;
        }
        let (view, map) = (self.clone(), map.clone());
        let spawned = std::thread::Builder::new()
            .name("ckptfs-prefetch".into())
            .spawn(move || {
                if let Err(e) = view.fetch(&map, &window, Dest::Ahead, false) {
                    log::warn!("prefetch from {}: {e}", view.url());
                }
                view.prefetching.store(false, Ordering::Release);
            });
        if spawned.is_err() {
            self.prefetching.store(false, Ordering::Release);
        }
    }

    /// While a prefetch runs, waits (a bounded time) for the chunks a read
    /// needs rather than fetching them a second time.
    fn wait_for_prefetch(&self, map: &FileMap, wanted: &[usize]) {
        use std::sync::atomic::Ordering;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.prefetching.load(Ordering::Acquire)
            && !self.missing(map, wanted).is_empty()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The entries of `wanted` whose chunk is neither cached nor
    /// prefetched.
    fn missing(&self, map: &FileMap, wanted: &[usize]) -> Vec<usize> {
        wanted
            .iter()
            .copied()
            .filter(|&i| matches!(map.entries[i], Entry::Chunk { id, .. } if !self.has(id)))
            .collect()
    }

    fn has(&self, id: ChunkId) -> bool {
        self.chunks.contains_key(&id) || self.ahead.lock().contains(&id)
    }

    /// A cached chunk, or a prefetched one (which moves to the cache).
    fn cached(&self, id: ChunkId) -> Option<Arc<Vec<u8>>> {
        if let Some(b) = self.chunks.get(&id) {
            return Some(b);
        }
        let b = self.ahead.lock().take(&id)?;
        self.chunks.insert(id, b.clone());
        Some(b)
    }

    /// Fetches the chunks of `wanted` (entry indexes) that are neither
    /// cached nor prefetched (with `force`, all of them), with read-ahead
    /// over the entries that follow; they go to `dest` and are returned.
    fn fetch(&self, map: &FileMap, wanted: &[usize], dest: Dest, force: bool) -> Result<Chunks> {
        let missing = if force {
            wanted.to_vec()
        } else {
            self.missing(map, wanted)
        };
        let mut fetched = Chunks::default();
        let Some(&first) = missing.first() else {
            return Ok(fetched);
        };
        let last = missing.last().copied().unwrap_or(first);
        // Read-ahead: the chunks after the read, up to READ_AHEAD bytes.
        let mut ahead_bytes = 0u64;
        let mut upto = last + 1;
        while upto < map.entries.len() && ahead_bytes < READ_AHEAD {
            ahead_bytes += map.entries[upto].len();
            upto += 1;
        }
        let ids: Vec<ChunkId> = (first..upto)
            .filter_map(|i| match map.entries[i] {
                Entry::Chunk { id, .. } if (force && i <= last) || !self.has(id) => Some(id),
                _ => None,
            })
            .collect();
        if ids.iter().any(|id| !self.catalog.read().contains(*id)) {
            // Pushed after the catalog was read: read the new indexes.
            *self.catalog.write() = ChunkCatalog::load(&self.remote, None)?;
        }
        let catalog = self.catalog.read();
        let mut ranges: Vec<(String, std::ops::Range<u64>)> = Vec::new();
        let mut members: Vec<Vec<(ChunkId, u64, u32)>> = Vec::new();
        for id in ids {
            let Some(place) = catalog.place(id) else {
                return Err(RemoteError::Missing {
                    url: self.url().to_string(),
                    what: format!("chunk {id}"),
                });
            };
            let key = layout::pack_key(&place.pack);
            let end = place.offset + place.len as u64;
            match ranges.last_mut() {
                Some((k, r))
                    if *k == key && r.end == place.offset && end - r.start <= MAX_RANGE =>
                {
                    r.end = end;
                }
                _ => {
                    ranges.push((key, place.offset..end));
                    members.push(Vec::new());
                }
            }
            if let Some(m) = members.last_mut() {
                m.push((id, place.offset, place.len));
            }
        }
        drop(catalog);
        let starts: Vec<u64> = ranges.iter().map(|(_, r)| r.start).collect();
        let mut n = 0usize;
        self.remote
            .get_ranges(ranges, GETS_IN_FLIGHT, |key, bytes| {
                let start = starts.get(n).copied().unwrap_or(0);
                let group = members.get(n).cloned().unwrap_or_default();
                n += 1;
                for (id, offset, len) in group {
                    let from = (offset - start) as usize;
                    let record = bytes.get(from..from + len as usize).ok_or_else(|| {
                        RemoteError::Corrupt {
                            key: key.to_string(),
                            why: format!("chunk {id}: the object is shorter than its index says"),
                        }
                    })?;
                    let raw = Arc::new(layout::decode_record(key, id, record)?);
                    match dest {
                        Dest::Cache => self.chunks.insert(id, raw.clone()),
                        Dest::Ahead => {
                            let len = raw.len() as u64;
                            self.ahead.lock().insert(id, raw.clone(), len)
                        }
                    }
                    fetched.insert(id, raw);
                }
                Ok(())
            })?;
        Ok(fetched)
    }
}

/// One snapshot made of several nodes' parts: every item of each part, the
/// first node's where two hold the same path (hard links kept per node).
fn merge(name: &str, parts: &[Arc<RemoteSnapshot>]) -> RemoteSnapshot {
    let mut seen: HashMap<String, ()> = HashMap::new();
    let mut items = Vec::new();
    for (n, part) in parts.iter().enumerate() {
        for item in &part.items {
            if seen.insert(item.path.clone(), ()).is_some() {
                if item.kind != "dir" {
                    log::warn!(
                        "global snapshot {name}: {} is in several nodes' parts; the first node's is shown",
                        item.path
                    );
                }
                continue;
            }
            let mut item = item.clone();
            item.link = item.link.map(|l| (n as u64) << 48 | (l & ((1 << 48) - 1)));
            items.push(item);
        }
    }
    let newest = parts
        .iter()
        .max_by_key(|p| (p.created_secs, p.created_nanos));
    RemoteSnapshot {
        node: GLOBAL_NODE.to_string(),
        name: name.to_string(),
        seq: 0,
        created_secs: newest.map_or(0, |p| p.created_secs),
        created_nanos: newest.map_or(0, |p| p.created_nanos),
        trigger: format!(
            "global: {}",
            parts
                .iter()
                .map(|p| p.node.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        pinned: parts.iter().any(|p| p.pinned),
        logical_bytes: parts.iter().map(|p| p.logical_bytes).sum(),
        global: true,
        chunker: newest.and_then(|p| p.chunker.clone()),
        items,
    }
}

/// A remote snapshot's items as a tree: each item's name, parent and
/// children (item 0 is the root).
pub struct SnapTree {
    /// The snapshot.
    pub snap: Arc<RemoteSnapshot>,
    /// Each item's last path component (empty for the root).
    pub names: Vec<Vec<u8>>,
    /// Each item's parent (the root is its own).
    pub parents: Vec<u32>,
    /// Each directory's children, in the snapshot's order.
    pub children: Vec<Vec<u32>>,
}

impl SnapTree {
    /// Indexes a snapshot; items whose parent is missing are left out.
    pub fn new(snap: Arc<RemoteSnapshot>) -> Self {
        let n = snap.items.len();
        let mut names = vec![Vec::new(); n];
        let mut parents = vec![0u32; n];
        let mut children = vec![Vec::new(); n];
        let mut by_path: HashMap<Vec<u8>, u32> = HashMap::new();
        for (i, item) in snap.items.iter().enumerate() {
            let Some(path) = layout::from_text(&item.path) else {
                continue;
            };
            if i == 0 {
                by_path.insert(Vec::new(), 0);
                continue;
            }
            let (parent, name) = match path.iter().rposition(|&b| b == b'/') {
                Some(at) => (path[..at].to_vec(), path[at + 1..].to_vec()),
                None => (Vec::new(), path.clone()),
            };
            let Some(&p) = by_path.get(&parent) else {
                continue;
            };
            names[i] = name;
            parents[i] = p;
            children[p as usize].push(i as u32);
            if item.kind == "dir" {
                by_path.insert(path, i as u32);
            }
        }
        SnapTree {
            snap,
            names,
            parents,
            children,
        }
    }

    /// The child of `dir` called `name`.
    pub fn lookup(&self, dir: u32, name: &[u8]) -> Option<u32> {
        self.children
            .get(dir as usize)?
            .iter()
            .copied()
            .find(|&c| self.names[c as usize] == name)
    }
}

impl RemoteView {
    /// A snapshot's items as a tree (cached while the view lives).
    pub fn tree(&self, id: u32) -> Option<Arc<SnapTree>> {
        let mut trees = self.trees.lock();
        if let Some(t) = trees.get(&id) {
            return Some(t.clone());
        }
        let t = Arc::new(SnapTree::new(self.snapshot(id)?));
        trees.insert(id, t.clone());
        Some(t)
    }

    /// The nodes that pushed snapshots, in the order first seen (a node's
    /// position is stable while the view lives).
    pub fn nodes(&self) -> Result<Vec<String>> {
        let mut nodes: Vec<String> = Vec::new();
        for (_, s) in self.snapshots()? {
            if !nodes.contains(&s.node) {
                nodes.push(s.node.clone());
            }
        }
        Ok(nodes)
    }
}
