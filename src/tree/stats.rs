//! `.ckpt/stats`: what the store holds, logical against stored bytes.
//! Computed by scanning the index tables (cached for a moment), so it is
//! exact rather than estimated.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::{Result, Tree};
use crate::store::records::FileKind;

/// How long a computed answer is reused.
const CACHE_FOR: Duration = Duration::from_secs(2);

/// The window of "recent" commit numbers.
const RECENT: Duration = Duration::from_secs(60);

impl Tree {
    /// Notes a commit of `bytes` for the last-minute numbers.
    pub(crate) fn note_commit(&self, bytes: u64) {
        let mut recent = self.recent_commits.lock();
        let now = Instant::now();
        recent.push_back((now, bytes));
        while recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > RECENT)
        {
            recent.pop_front();
        }
    }

    /// Notes what a GC did.
    pub(crate) fn note_gc(&self, stats: &super::GcStats) {
        *self.last_gc.lock() = Some((crate::store::records::Time::now(), stats.clone()));
    }

    /// The store's numbers as JSON.
    pub fn stats(&self) -> Result<serde_json::Value> {
        let generation = self.generation.load(std::sync::atomic::Ordering::Relaxed);
        let mut cache = self.stats_cache.lock();
        if let Some((seen, at, value)) = cache.as_ref() {
            if *seen == generation && at.elapsed() < CACHE_FOR {
                return Ok(value.clone());
            }
        }
        let value = self.compute_stats()?;
        *cache = Some((generation, Instant::now(), value.clone()));
        Ok(value)
    }

    fn compute_stats(&self) -> Result<serde_json::Value> {
        let store = &self.data.store;
        let (mut live_files, mut live_bytes) = (0u64, 0u64);
        store.for_each_inode(|_, rec| {
            if rec.kind == FileKind::File && rec.nlink > 0 {
                live_files += 1;
                live_bytes += rec.size;
            }
            Ok(())
        })?;
        let (mut versions, mut version_bytes) = (0u64, 0u64);
        store.for_each_version(|_, _, v| {
            versions += 1;
            version_bytes += v.size;
            Ok(())
        })?;
        let snaps = store.snapshots()?;
        let (mut chunks, mut unique, mut stored) = (0u64, 0u64, 0u64);
        store.for_each_chunk(|c| {
            chunks += 1;
            unique += c.raw_len as u64;
            stored += c.stored_len as u64;
            Ok(())
        })?;
        let open_for_writing = self
            .open
            .lock()
            .values()
            .filter(|f| f.has_unsaved_writes())
            .count();
        let ratio = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
        let c = &self.data.pipeline.counters;
        let guessed = self.data.successors.counts();
        let (commits, committed_bytes) = {
            let recent = self.recent_commits.lock();
            let now = Instant::now();
            recent
                .iter()
                .filter(|(t, _)| now.duration_since(*t) <= RECENT)
                .fold((0u64, 0u64), |(n, b), (_, bytes)| (n + 1, b + bytes))
        };
        let last_gc = self.last_gc.lock().clone().map(|(at, s)| {
            serde_json::json!({
                "at": super::rfc3339(at),
                "millis": s.millis,
                "snapshots_deleted": s.snapshots_deleted,
                "versions_deleted": s.versions_deleted,
                "chunks_deleted": s.chunks_deleted,
                "bytes_freed": s.bytes_freed,
            })
        });
        Ok(serde_json::json!({
            "last_minute": {
                "commits": commits,
                "committed_bytes": committed_bytes,
                "mb_per_s": committed_bytes as f64 / 1e6 / RECENT.as_secs_f64(),
            },
            "last_gc": last_gc,
            "logical_bytes": version_bytes,
            "stored_bytes": stored,
            "unique_bytes": unique,
            "chunks": chunks,
            "chunker": store.chunker()?.to_string(),
            "dedup_ratio": ratio(version_bytes, unique),
            "compression_ratio": ratio(unique, stored),
            "live": { "files": live_files, "bytes": live_bytes },
            "versions": versions,
            "snapshots": snaps.len(),
            "snapshot_logical_bytes": snaps.iter().map(|(_, s)| s.logical_bytes).sum::<u64>(),
            "files_open_for_writing": open_for_writing,
            "since_mount": {
                "new_chunks": c.stored_chunks.load(Relaxed),
                "new_chunk_bytes": c.stored_raw_bytes.load(Relaxed),
                "deduplicated_chunks": c.dedup_chunks.load(Relaxed),
                "zero_chunks": c.zero_chunks.load(Relaxed),
                "moved_chunks": c.moved_chunks.load(Relaxed),
                "moved_bytes": c.moved_bytes.load(Relaxed),
                "guessed_cuts": guessed.0,
                "rejected_guesses": guessed.1,
                "read_chunks_not_prefetched": self.data.reader.chunks_not_prefetched(),
            },
            "store_disk_bytes": store.disk_usage()?,
        }))
    }
}
