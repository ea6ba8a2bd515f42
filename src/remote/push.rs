//! `push`: uploads the snapshots a remote lacks, and only the chunks it
//! lacks, in pack objects (a 16 KiB chunk is not one request), with
//! create-only puts, in the order that keeps the remote consistent: packs
//! and their indexes, then manifests, then the snapshot record.
//!
//! A push that stops halfway (network down, process killed) leaves only
//! objects no snapshot names yet; the next push finds the packs whose
//! index was written and uploads the rest.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::catalog::{self, ChunkCatalog};
use super::layout::{self, IndexEntry, RemoteItem, RemoteSnapshot};
use super::{Remote, Result};
use crate::ids::{ChunkId, Ino, ManifestId, SnapId};
use crate::tree::{Entry, FileKind, InodeRecord, Scope, SnapshotRecord, Tree, TreeError};

/// A pack is uploaded once it holds this much.
const PACK_TARGET: usize = 16 << 20;
/// Packs uploading at once (each holds its bytes in memory until done).
const PACKS_IN_FLIGHT: usize = 4;
/// Chunks read from the local store per round of parallel reads.
const READ_BATCH: usize = 256;
/// Manifest uploads at once.
const MANIFESTS_IN_FLIGHT: usize = 8;

/// What a push did.
#[derive(Debug, Default, Clone)]
pub struct PushReport {
    /// Snapshots uploaded, by name.
    pub snapshots: Vec<String>,
    /// Snapshots the remote already held.
    pub already: u64,
    /// Snapshots pushed before that the remote's retention has expired
    /// since: not pushed again.
    pub expired_remotely: u64,
    /// Size of the files of the snapshots uploaded: what a full copy
    /// would upload.
    pub logical_bytes: u64,
    /// Chunks uploaded.
    pub chunks_uploaded: u64,
    /// Their stored (compressed) bytes.
    pub chunk_bytes_uploaded: u64,
    /// Distinct chunks the snapshots use that the remote already held
    /// (uploaded by an earlier push or by another node).
    pub chunks_present: u64,
    /// Pack objects written.
    pub packs: u64,
    /// Manifests written.
    pub manifests: u64,
    /// Every byte sent: packs, indexes, manifests, snapshot records.
    pub bytes_uploaded: u64,
    /// Wall time.
    pub seconds: f64,
}

impl PushReport {
    /// The report as JSON, for remote `name`.
    pub fn to_json(&self, name: &str) -> serde_json::Value {
        serde_json::json!({
            "remote": name,
            "snapshots": self.snapshots,
            "already": self.already,
            "expired_remotely": self.expired_remotely,
            "logical_bytes": self.logical_bytes,
            "chunks_uploaded": self.chunks_uploaded,
            "chunk_bytes_uploaded": self.chunk_bytes_uploaded,
            "chunks_present": self.chunks_present,
            "packs": self.packs,
            "manifests": self.manifests,
            "bytes_uploaded": self.bytes_uploaded,
            "seconds": self.seconds,
        })
    }
}

/// What to push and how.
#[derive(Default, Clone, Copy)]
pub struct PushOptions<'a> {
    /// Only the snapshot of this name.
    pub only: Option<&'a [u8]>,
    /// A directory that keeps downloaded pack indexes between pushes.
    pub cache: Option<&'a Path>,
    /// Set to stop early (between chunks): what was written stays, no
    /// snapshot record names anything missing.
    pub cancel: Option<&'a AtomicBool>,
    /// Names of snapshots that are parts of global snapshots.
    pub globals: &'a [String],
}

/// Pushes the snapshots of `tree` that `remote` lacks under node id `node`.
pub fn push(tree: &Tree, remote: &Remote, node: &str, opts: PushOptions<'_>) -> Result<PushReport> {
    let PushOptions {
        only,
        cache,
        cancel,
        globals,
    } = opts;
    let started = Instant::now();
    let mut report = PushReport::default();
    let have: HashSet<String> = catalog::snapshots(remote, Some(node))?
        .into_iter()
        .map(|s| s.key)
        .collect();
    // Snapshots pushed before and since expired by the remote's retention
    // are not pushed again (unless asked for by name).
    let log = cache.map(PushedLog::new);
    let pushed_before = match (&log, only) {
        (Some(log), None) => log.load(),
        _ => HashSet::new(),
    };
    let mut todo: Vec<(SnapId, SnapshotRecord)> = Vec::new();
    for (id, rec) in tree.snapshots()? {
        if only.is_some_and(|o| o != rec.name.as_slice()) {
            continue;
        }
        if have.contains(&layout::snapshot_key(node, &rec.name)) {
            report.already += 1;
            if let Some(log) = log.as_ref().filter(|_| only.is_none()) {
                if !pushed_before.contains(&PushedLog::line(&rec)) {
                    log.add(&rec);
                }
            }
        } else if pushed_before.contains(&PushedLog::line(&rec)) {
            report.expired_remotely += 1;
        } else {
            todo.push((id, rec));
        }
    }
    if only.is_some() && todo.is_empty() && report.already == 0 {
        return Err(super::RemoteError::Config(format!(
            "no snapshot named {}",
            String::from_utf8_lossy(only.unwrap_or_default())
        )));
    }
    if todo.is_empty() {
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    // Condemned packs and manifests count as absent: a GC may delete them
    // once their condemnation is older than its grace period.
    let condemned = super::gc::condemned(remote)?;
    let mut manifests = catalog::manifests(remote)?;
    manifests.retain(|m| !condemned.contains(&format!("manifests/{m}")));
    let nonce = format!(
        "{node}/{:?}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)
    );
    let catalog = super::gc::without_condemned(ChunkCatalog::load(remote, cache)?, &condemned);
    let mut up = Uploader {
        remote,
        nonce,
        condemned,
        catalog,
        manifests,
        pack: Vec::new(),
        index: Vec::new(),
        queued: HashSet::new(),
        present: HashSet::new(),
        in_flight: VecDeque::new(),
        cancel,
        report: &mut report,
    };
    let mut done_manifests: HashMap<ManifestId, String> = HashMap::new();
    let chunker = tree.store().chunker().map_err(TreeError::from)?;
    for (id, rec) in todo {
        let name = layout::text(&rec.name);
        log::info!("push {name} to {}: started", remote.url());
        let mut items = walk(tree, id, &rec)?;
        let mut new_manifests = Vec::new();
        for (item, manifest) in items.iter_mut() {
            let Some(m) = *manifest else { continue };
            if let Some(hash) = done_manifests.get(&m) {
                item.manifest = Some(hash.clone());
                continue;
            }
            let mut entries = Vec::new();
            tree.manifest_entries(m, |_, e| {
                entries.push(e);
                true
            })?;
            let ids: Vec<ChunkId> = entries
                .iter()
                .filter_map(|e| match *e {
                    Entry::Chunk { id, .. } => Some(id),
                    Entry::Hole { .. } => None,
                })
                .collect();
            up.add_chunks(tree, &ids)?;
            let bytes = layout::encode_manifest(&entries);
            let hash = layout::content_name(&bytes);
            if up.manifests.insert(hash.clone()) {
                new_manifests.push((layout::manifest_key(&hash), bytes));
            }
            item.manifest = Some(hash.clone());
            done_manifests.insert(m, hash);
        }
        // Every chunk first, then the manifests naming them, then the
        // snapshot naming the manifests.
        up.finish_packs()?;
        up.put_manifests(new_manifests)?;
        let snap = RemoteSnapshot {
            node: node.to_string(),
            name: name.clone(),
            seq: rec.seq,
            created_secs: rec.created.secs,
            created_nanos: rec.created.nanos,
            trigger: layout::text(&rec.trigger),
            pinned: rec.pinned,
            logical_bytes: rec.logical_bytes,
            global: globals.contains(&name),
            chunker: Some(chunker.to_string()),
            items: items.into_iter().map(|(item, _)| item).collect(),
        };
        let bytes = layout::encode_snapshot(&snap)?;
        let len = bytes.len() as u64;
        if remote.put_new(&layout::snapshot_key(node, &rec.name), bytes)? {
            up.report.bytes_uploaded += len;
        }
        up.report.logical_bytes += rec.logical_bytes;
        up.report.snapshots.push(name.clone());
        if let Some(log) = &log {
            log.add(&rec);
        }
        log::info!(
            "push {name} to {}: done ({} chunks uploaded so far, {} present)",
            remote.url(),
            up.report.chunks_uploaded,
            up.report.chunks_present
        );
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The snapshots pushed to one remote, kept beside its index cache: one
/// line each, its creation time and its name in hex.
struct PushedLog {
    path: std::path::PathBuf,
}

impl PushedLog {
    fn new(cache: &Path) -> Self {
        PushedLog {
            path: cache.join("pushed"),
        }
    }

    fn line(rec: &SnapshotRecord) -> String {
        format!(
            "{}.{:09} {}",
            rec.created.secs,
            rec.created.nanos,
            layout::hex(&rec.name)
        )
    }

    fn load(&self) -> HashSet<String> {
        std::fs::read_to_string(&self.path)
            .map(|t| t.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// Best effort: a lost line only means a snapshot the remote expired
    /// may be pushed again.
    fn add(&self, rec: &SnapshotRecord) {
        use std::io::Write;
        let add = || -> std::io::Result<()> {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            writeln!(f, "{}", Self::line(rec))
        };
        if let Err(e) = add() {
            log::warn!("{}: {e}", self.path.display());
        }
    }
}

/// Packs chunks and uploads them, a few packs at a time.
struct Uploader<'a> {
    remote: &'a Remote,
    /// Mixed into pack names: a pack this push writes never has the name
    /// of an existing (maybe condemned) one.
    nonce: String,
    /// Condemned packs and manifests (`packs/ID`, `manifests/HASH`).
    condemned: HashSet<String>,
    catalog: ChunkCatalog,
    manifests: HashSet<String>,
    pack: Vec<u8>,
    index: Vec<IndexEntry>,
    /// Chunks in the current pack or in packs still uploading.
    queued: HashSet<ChunkId>,
    /// Chunks found on the remote already (counted once each).
    present: HashSet<ChunkId>,
    in_flight: VecDeque<(String, Vec<IndexEntry>, tokio::task::JoinHandle<Result<()>>)>,
    cancel: Option<&'a AtomicBool>,
    report: &'a mut PushReport,
}

impl Uploader<'_> {
    /// Queues the chunks of `ids` the remote lacks, in order; their
    /// stored forms are read (and checked) [`READ_BATCH`] at a time on all
    /// cores.
    fn add_chunks(&mut self, tree: &Tree, ids: &[ChunkId]) -> Result<()> {
        let mut new = Vec::new();
        for &id in ids {
            if self.catalog.contains(id) {
                if self.present.insert(id) {
                    self.report.chunks_present += 1;
                }
            } else if self.queued.insert(id) {
                new.push(id);
            }
        }
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        for batch in new.chunks(READ_BATCH) {
            if self.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                return Err(super::RemoteError::Cancelled);
            }
            let per = batch.len().div_ceil(threads);
            let read: Vec<Result<Vec<Vec<u8>>>> = std::thread::scope(|scope| {
                let workers: Vec<_> = batch
                    .chunks(per)
                    .map(|part| {
                        scope.spawn(move || {
                            part.iter()
                                .map(|&id| Ok(tree.read_stored_chunk(id)?))
                                .collect::<Result<Vec<_>>>()
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|w| {
                        w.join().unwrap_or_else(|_| {
                            Err(super::RemoteError::Config("a chunk reader panicked".into()))
                        })
                    })
                    .collect()
            });
            let mut ids = batch.iter();
            for part in read {
                for stored in part? {
                    if let Some(&id) = ids.next() {
                        self.add_stored(id, &stored)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn add_stored(&mut self, id: ChunkId, stored: &[u8]) -> Result<()> {
        let offset = self.pack.len() as u64;
        layout::push_record(&mut self.pack, id, stored);
        self.index.push(IndexEntry {
            id,
            offset,
            len: (layout::RECORD_HEADER + stored.len()) as u32,
        });
        self.report.chunks_uploaded += 1;
        self.report.chunk_bytes_uploaded += stored.len() as u64;
        if self.pack.len() >= PACK_TARGET {
            self.send_pack()?;
        }
        Ok(())
    }

    /// Starts uploading the current pack and then its index.
    fn send_pack(&mut self) -> Result<()> {
        if self.index.is_empty() {
            return Ok(());
        }
        while self.in_flight.len() >= PACKS_IN_FLIGHT {
            self.wait_oldest()?;
        }
        let pack = std::mem::take(&mut self.pack);
        let index = std::mem::take(&mut self.index);
        let mut named = self.nonce.as_bytes().to_vec();
        named.extend_from_slice(&xxhash_rust::xxh3::xxh3_128(&pack).to_le_bytes());
        let name = layout::content_name(&named);
        let index_bytes = layout::encode_index(&index);
        self.report.bytes_uploaded += (pack.len() + index_bytes.len()) as u64;
        self.report.packs += 1;
        let task = self.remote.spawn_puts(vec![
            (layout::pack_key(&name), pack),
            (layout::index_key(&name), index_bytes),
        ]);
        self.in_flight.push_back((name, index, task));
        Ok(())
    }

    fn wait_oldest(&mut self) -> Result<()> {
        if let Some((name, index, task)) = self.in_flight.pop_front() {
            self.remote.wait(task)?;
            for e in &index {
                self.queued.remove(&e.id);
            }
            self.catalog.add_pack(&name, &index);
        }
        Ok(())
    }

    /// Uploads what is left and waits until every pack and index is written.
    fn finish_packs(&mut self) -> Result<()> {
        self.send_pack()?;
        while !self.in_flight.is_empty() {
            self.wait_oldest()?;
        }
        Ok(())
    }

    fn put_manifests(&mut self, manifests: Vec<(String, Vec<u8>)>) -> Result<()> {
        let mut tasks = VecDeque::new();
        for (key, bytes) in manifests {
            if self.condemned.contains(&key) {
                // Needed again: rescue it before relying on it.
                self.remote
                    .delete(&format!("{}/{key}", super::gc::CONDEMNED))?;
            }
            if tasks.len() >= MANIFESTS_IN_FLIGHT {
                if let Some(t) = tasks.pop_front() {
                    self.remote.wait(t)?;
                }
            }
            self.report.bytes_uploaded += bytes.len() as u64;
            self.report.manifests += 1;
            tasks.push_back(self.remote.spawn_puts(vec![(key, bytes)]));
        }
        for t in tasks {
            self.remote.wait(t)?;
        }
        Ok(())
    }
}

fn kind_name(kind: FileKind) -> &'static str {
    match kind {
        FileKind::File => "file",
        FileKind::Dir => "dir",
        FileKind::Symlink => "symlink",
        FileKind::Fifo => "fifo",
        FileKind::Socket => "socket",
        FileKind::CharDev => "chardev",
        FileKind::BlockDev => "blockdev",
    }
}

fn item(path: &[u8], ino: Ino, rec: &InodeRecord) -> (RemoteItem, Option<ManifestId>) {
    let file = rec.kind == FileKind::File;
    let manifest =
        (file && rec.size > 0 && rec.content != ManifestId::EMPTY).then_some(rec.content);
    let item = RemoteItem {
        path: layout::text(path),
        kind: kind_name(rec.kind).to_string(),
        perm: rec.perm as u32 & 0o7777,
        uid: rec.uid,
        gid: rec.gid,
        mtime_secs: rec.mtime.secs,
        mtime_nanos: rec.mtime.nanos,
        size: if file { rec.size } else { 0 },
        link: (file && rec.nlink > 1).then_some(ino.0),
        manifest: None,
        target: (rec.kind == FileKind::Symlink).then(|| layout::text(&rec.target)),
    };
    (item, manifest)
}

/// Every item of a snapshot, directories before their contents, with the
/// manifest of each non-empty regular file.
fn walk(
    tree: &Tree,
    id: SnapId,
    snap: &SnapshotRecord,
) -> Result<Vec<(RemoteItem, Option<ManifestId>)>> {
    let scope = Scope::Snapshot(id);
    let mut root = tree.inode_in(scope, Ino::ROOT)?;
    root.mtime = snap.created;
    let mut items = vec![item(b"", Ino::ROOT, &root)];
    let mut stack = vec![(Ino::ROOT, Vec::<u8>::new())];
    while let Some((dir, path)) = stack.pop() {
        let mut children = Vec::new();
        tree.readdir_in(scope, dir, 2, |entry| {
            children.push((entry.ino, entry.name.to_vec()));
            true
        })?;
        for (child, name) in children {
            let rec = tree.inode_in(scope, child)?;
            let mut child_path = path.clone();
            if !child_path.is_empty() {
                child_path.push(b'/');
            }
            child_path.extend_from_slice(&name);
            if rec.kind == FileKind::Dir {
                stack.push((child, child_path.clone()));
            }
            items.push(item(&child_path, child, &rec));
        }
    }
    Ok(items)
}
