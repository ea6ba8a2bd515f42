//! Garbage collection mechanics: delete the snapshots and versions the
//! retention layer expired, then every manifest and chunk that nothing
//! references any more, then compact so the space returns to the disk.
//!
//! Safety against concurrent writers (the order matters):
//! 1. The pipeline's [`GcGuard`](super::pipeline::GcGuard) starts noting every chunk it hands out.
//! 2. Each open file's write state is asked what it references; this
//!    drains its pending chunks, so a chunk produced before step 1 is in
//!    the answer and one produced after is noted.
//! 3. Only then live inodes, versions and snapshots are scanned, so a
//!    commit that finished during step 2 is seen.
//! 4. Manifests newer than the watermark taken before step 1 are never
//!    deleted (a writer may be building them).
//! 5. The sweep deletes under the guard's exclusive gate and skips noted
//!    chunks, so no writer can deduplicate against a chunk being deleted.
//!
//! A crash at any point leaves a consistent store: every deletion removes
//! only garbage, and the next GC finishes the job.
//!
//! Recommended reading: restic's `prune` and kopia's maintenance, which
//! solve the same race with a grace period instead of an in-process guard.

use std::collections::HashSet;
use std::time::Instant;

use super::bloom::ChunkBloom;
use super::{Result, Tree};
use crate::ids::{ChunkId, ManifestId, PathId, SnapId};
use crate::store::records::FileKind;
use crate::store::{IndexedChunk, Scope};

/// Chunks deleted per batch (the gate is held for one batch).
const SWEEP_BATCH: usize = 4096;
/// Relocate live blobs when at least this share of stored bytes was freed.
const RELOCATE_RATIO: f64 = 0.2;

/// What one collection did.
#[derive(Clone, Debug, Default)]
pub struct GcStats {
    /// Snapshots deleted.
    pub snapshots_deleted: u64,
    /// Versions deleted.
    pub versions_deleted: u64,
    /// Manifests deleted.
    pub manifests_deleted: u64,
    /// Chunks deleted.
    pub chunks_deleted: u64,
    /// Their stored bytes.
    pub bytes_freed: u64,
    /// Chunks left.
    pub chunks_kept: u64,
    /// Stored bytes left.
    pub bytes_kept: u64,
    /// Live blobs were moved out of partly dead blob files.
    pub relocated: bool,
    /// Pack files deleted because no live chunk was left in them.
    pub packs_removed: u64,
    /// Wall time in milliseconds.
    pub millis: u64,
}

impl Tree {
    /// The manifests a snapshot's files use.
    pub fn snapshot_manifests(&self, id: SnapId) -> Result<HashSet<ManifestId>> {
        let mut out = HashSet::new();
        self.data
            .store
            .for_each_inode_in(Scope::Snapshot(id), |_, rec| {
                if rec.kind == FileKind::File && rec.content != ManifestId::EMPTY {
                    out.insert(rec.content);
                }
                Ok(())
            })?;
        Ok(out)
    }

    /// Every version: (path, seq, manifest).
    pub fn all_versions(&self) -> Result<Vec<(PathId, u64, ManifestId)>> {
        let mut out = Vec::new();
        self.data.store.for_each_version(|p, seq, v| {
            out.push((p, seq, v.manifest));
            Ok(())
        })?;
        Ok(out)
    }

    /// Deletes `snapshots` (unless pinned meanwhile) and `versions`, then
    /// every unreferenced manifest and chunk. One collection at a time.
    pub fn collect_garbage(
        &self,
        snapshots: &[SnapId],
        versions: &[(PathId, u64)],
    ) -> Result<GcStats> {
        self.writable()?;
        let _one = self.gc_lock.lock();
        let started = Instant::now();
        let store = &self.data.store;
        let mut stats = GcStats::default();
        // The versions that made these expire must outlive a power loss:
        // they are made durable before the expiry is stored (outside `ns`,
        // so commits go on meanwhile).
        store.sync()?;
        {
            let _ns = self.ns.lock();
            let mut txn = store.txn();
            for id in snapshots {
                match store.snapshot(*id)? {
                    Some(rec) if !rec.pinned => {
                        txn.delete_snapshot(*id);
                        stats.snapshots_deleted += 1;
                        log::info!(
                            "gc: snapshot {} expired",
                            String::from_utf8_lossy(&rec.name)
                        );
                    }
                    _ => {}
                }
            }
            for (path, seq) in versions {
                txn.delete_version(*path, *seq);
                stats.versions_deleted += 1;
            }
            store.commit(txn, false)?;
            let touched: HashSet<PathId> = versions.iter().map(|(p, _)| *p).collect();
            self.prune_empty_paths(touched)?;
        }
        // A GC killed after its sweep left garbage on disk: finish its job.
        let unfinished = store.compaction_pending()?;
        let watermark = store.id_watermark()?;
        self.gc_guard.begin();
        let result = self.mark_and_sweep(watermark, &mut stats);
        self.gc_guard.end();
        result?;
        let total = stats.bytes_freed + stats.bytes_kept;
        if unfinished || stats.chunks_deleted > 0 || stats.snapshots_deleted > 0 {
            stats.relocated = unfinished
                || (total > 0 && stats.bytes_freed as f64 / total as f64 >= RELOCATE_RATIO);
            store.compact_chunks(stats.relocated)?;
            (stats.packs_removed, _) = store.remove_dead_packs()?;
            store.set_compaction_pending(false)?;
        }
        stats.millis = started.elapsed().as_millis() as u64;
        self.note_change();
        self.note_gc(&stats);
        self.emit_event(
            "gc",
            serde_json::json!({
                "millis": stats.millis,
                "snapshots_deleted": stats.snapshots_deleted,
                "versions_deleted": stats.versions_deleted,
                "manifests_deleted": stats.manifests_deleted,
                "chunks_deleted": stats.chunks_deleted,
                "bytes_freed": stats.bytes_freed,
                "chunks_kept": stats.chunks_kept,
                "bytes_kept": stats.bytes_kept,
                "packs_removed": stats.packs_removed,
            }),
        );
        log::info!(
            "gc: {} snapshots, {} versions, {} manifests and {} chunks ({} bytes) deleted in {} ms; {} chunks ({} bytes) kept",
            stats.snapshots_deleted,
            stats.versions_deleted,
            stats.manifests_deleted,
            stats.chunks_deleted,
            stats.bytes_freed,
            stats.millis,
            stats.chunks_kept,
            stats.bytes_kept
        );
        Ok(stats)
    }

    /// Removes history paths left with no version and no child, walking up
    /// from `start` (the caller holds `ns`).
    fn prune_empty_paths(&self, start: HashSet<PathId>) -> Result<()> {
        let store = &self.data.store;
        let mut todo: Vec<PathId> = start.into_iter().collect();
        while let Some(id) = todo.pop() {
            if id == PathId::ROOT {
                continue;
            }
            let Some(rec) = store.path_record(id)? else {
                continue;
            };
            let mut busy = false;
            store.versions_of(id, 0, |_, _| {
                busy = true;
                Ok(false)
            })?;
            store.path_children(id, None, |_, _| {
                busy = true;
                Ok(false)
            })?;
            if busy {
                continue;
            }
            let mut txn = store.txn();
            txn.delete_path(id, &rec);
            store.commit(txn, false)?;
            todo.push(rec.parent);
        }
        Ok(())
    }

    fn mark_and_sweep(&self, watermark: u64, stats: &mut GcStats) -> Result<()> {
        let store = &self.data.store;
        let mut refs: HashSet<ManifestId> = HashSet::new();
        let mut pending_chunks: Vec<ChunkId> = Vec::new();
        let files: Vec<_> = self.open.lock().values().cloned().collect();
        for file in files {
            let (manifests, chunks) = file.referenced(&self.data)?;
            refs.extend(manifests);
            pending_chunks.extend(chunks);
        }
        store.for_each_inode(|_, rec| {
            if rec.kind == FileKind::File {
                refs.insert(rec.content);
            }
            Ok(())
        })?;
        store.for_each_version(|_, _, v| {
            refs.insert(v.manifest);
            Ok(())
        })?;
        for (id, _) in store.snapshots()? {
            refs.extend(self.snapshot_manifests(id)?);
        }
        // What a power loss may bring back (`store/pending.rs`).
        refs.extend(store.pending_prev_manifests()?);
        refs.remove(&ManifestId::EMPTY);

        let mut dead = Vec::new();
        store.for_each_manifest_id(|id| {
            if id.0 < watermark && !refs.contains(&id) {
                dead.push(id);
            }
            Ok(())
        })?;
        for batch in dead.chunks(1024) {
            store.delete_manifests(batch)?;
        }
        stats.manifests_deleted = dead.len() as u64;

        let mut bloom = ChunkBloom::with_capacity(store.chunk_count_estimate()?);
        for id in &pending_chunks {
            bloom.insert(id);
        }
        for manifest in &refs {
            self.data.reader.for_each_entry(*manifest, |_, entry| {
                if let crate::store::manifest::Entry::Chunk { id, .. } = entry {
                    bloom.insert(&id);
                }
                Ok(true)
            })?;
        }
        let mut candidates: Vec<IndexedChunk> = Vec::new();
        store.for_each_chunk(|chunk| {
            if bloom.may_contain(&chunk.id) {
                stats.chunks_kept += 1;
                stats.bytes_kept += chunk.stored_len as u64;
            } else {
                candidates.push(chunk);
            }
            Ok(())
        })?;
        if !candidates.is_empty() {
            // Durably, before the first deletion: if this GC dies now, the
            // next one compacts what it deleted.
            store.set_compaction_pending(true)?;
        }
        for batch in candidates.chunks(SWEEP_BATCH) {
            let _gate = self.gc_guard.exclusive();
            let mut dead = Vec::with_capacity(batch.len());
            for c in batch {
                if self.gc_guard.is_protected(&c.id) {
                    stats.chunks_kept += 1;
                    stats.bytes_kept += c.stored_len as u64;
                } else {
                    dead.push(*c);
                    stats.bytes_freed += c.stored_len as u64;
                }
            }
            store.delete_chunks(&dead)?;
            stats.chunks_deleted += dead.len() as u64;
        }
        Ok(())
    }
}
