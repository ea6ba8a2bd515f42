//! Lazy durability: version commits that did not wait for their chunks to
//! reach the disk, and how a power loss is undone at the next open.
//!
//! With lazy durability on (the daemon's `--sync-interval`, 5 s by
//! default), a close commits its version without `fdatasync`ing the packs
//! first. The commit is in RocksDB's WAL, so it survives the death of the
//! daemon, but a power loss may keep the WAL and lose pack bytes it names.
//! So each such commit also writes, in its own batch, a `pending/<seq>` key
//! in `meta` with what it replaced ([`PendingCommit`]).
//!
//! [`Store::sync`] (the daemon's syncer every interval, and every fsync,
//! snapshot, GC and clean stop) syncs the packs, records their lengths and
//! deletes the pending keys written before it began, in one synced batch.
//!
//! At open, the records past each pack's recorded length are checked
//! against their ids (`Store::recover_packs`): after a crash of the daemon
//! they are all there; after a power loss some may be missing, and their
//! index entries go. A pending commit whose manifest names a chunk that did
//! not survive is rolled back, newest first: its version record is deleted
//! and the inode gets back the content the commit replaced. The file is
//! then as it was before that close, as after a power loss on ext4 or ZFS,
//! and no version names bytes that are not on disk.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use rocksdb::{WriteBatch, WriteOptions};

use super::bytes::{Dec, Enc};
use super::manifest::Entry;
use super::open::for_each_meta;
use super::records::{InodeRecord, Time};
use super::schema::CF_META;
use super::{Result, Store, StoreError, Txn};
use crate::ids::{ChunkId, Ino, ManifestId, PathId};

/// Prefix of the `meta` keys of commits whose chunks may not be durable.
const PENDING_PREFIX: &[u8] = b"pending/";
/// The first key after every pending key (`'/' + 1`).
const PENDING_END: &[u8] = b"pending0";

fn pending_key(seq: u64) -> Vec<u8> {
    let mut k = PENDING_PREFIX.to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// What a version commit made without syncing its chunks replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingCommit {
    /// The file.
    pub ino: Ino,
    /// The content the commit gave it.
    pub manifest: ManifestId,
    /// The content before.
    pub prev_manifest: ManifestId,
    /// The size before.
    pub prev_size: u64,
    /// The mtime before.
    pub prev_mtime: Time,
    /// The history entry the commit added, if any.
    pub version: Option<(PathId, u64)>,
}

impl PendingCommit {
    /// Records what `commit` replaces in `before`.
    pub fn new(ino: Ino, before: &InodeRecord, manifest: ManifestId) -> Self {
        PendingCommit {
            ino,
            manifest,
            prev_manifest: before.content,
            prev_size: before.size,
            prev_mtime: before.mtime,
            version: None,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new();
        let (path, seq) = self.version.map_or((0, 0), |(p, s)| (p.0, s));
        e.u64(self.ino.0)
            .u64(self.manifest.0)
            .u64(self.prev_manifest.0)
            .u64(self.prev_size);
        self.prev_mtime.encode(&mut e);
        e.u64(path).u64(seq);
        e.finish()
    }

    fn decode(buf: &[u8]) -> Result<Self> {
        let mut d = Dec::new(buf, "pending commit");
        let ino = Ino(d.u64()?);
        let manifest = ManifestId(d.u64()?);
        let prev_manifest = ManifestId(d.u64()?);
        let prev_size = d.u64()?;
        let prev_mtime = Time::decode(&mut d)?;
        let (path, seq) = (d.u64()?, d.u64()?);
        Ok(PendingCommit {
            ino,
            manifest,
            prev_manifest,
            prev_size,
            prev_mtime,
            version: (path != 0).then_some((PathId(path), seq)),
        })
    }
}

/// The store's side of lazy durability.
#[derive(Default)]
pub(super) struct Pending {
    /// Version commits skip the pack sync and write a pending key.
    lazy: AtomicBool,
    /// The next pending key's number.
    next: AtomicU64,
    /// Every pending key below this number was deleted.
    cleared_below: AtomicU64,
    /// The file of each pending commit, by number, until a sync clears it.
    files: Mutex<Vec<(u64, Ino)>>,
}

impl Txn<'_> {
    /// Records, with a version commit made without [`Store::persist_chunks`],
    /// what it replaced, so that a power loss can undo it.
    pub fn put_pending(&mut self, commit: &PendingCommit) {
        let seq = self.store.pending.next.fetch_add(1, Ordering::SeqCst);
        self.store.pending.files.lock().push((seq, commit.ino));
        self.batch
            .put_cf(self.store.cf(CF_META), pending_key(seq), commit.encode());
    }
}

impl Store {
    /// Turns lazy durability on or off (see the module docs). Without it
    /// every commit syncs, so appends start their writeback at once.
    pub fn set_lazy_durability(&self, on: bool) {
        self.pending.lazy.store(on, Ordering::Relaxed);
        if !on {
            self.packs.set_eager_writeback(true);
        }
    }

    /// True when version commits do not wait for their chunks' sync.
    pub fn lazy_durability(&self) -> bool {
        self.pending.lazy.load(Ordering::Relaxed)
    }

    /// True when a version was committed since the last [`Store::sync`]
    /// without its chunks synced.
    pub fn has_pending(&self) -> bool {
        self.pending.next.load(Ordering::SeqCst) > self.pending.cleared_below.load(Ordering::SeqCst)
    }

    /// True when a version of `ino` was committed since the last
    /// [`Store::sync`] without its chunks synced.
    pub fn has_pending_for(&self, ino: Ino) -> bool {
        self.pending.files.lock().iter().any(|&(_, of)| of == ino)
    }

    /// Makes everything committed so far durable: syncs the packs, records
    /// their lengths, then deletes the pending keys and syncs the WAL.
    /// Someone asked for durability (an fsync, a publishing rename, a
    /// snapshot), so from now on appends start their writeback at once.
    pub fn sync(&self) -> Result<()> {
        self.packs.set_eager_writeback(true);
        self.background_sync()
    }

    /// [`Store::sync`] for the daemon's periodic sync, which nobody waits
    /// for: it leaves the writeback mode as it is.
    pub fn background_sync(&self) -> Result<()> {
        // Every commit that took a number below `below` wrote its chunks
        // before it took it, so the pack sync below covers them.
        let below = self.pending.next.load(Ordering::SeqCst);
        self.sync_packs()?;
        // The packs were just synced: a synced write is cheap now.
        self.top_up_ids_ahead();
        let from = self.pending.cleared_below.load(Ordering::SeqCst);
        if below <= from {
            self.db.flush_wal(true)?;
            return Ok(());
        }
        // Point deletions (one per commit since the last sync), not a range
        // tombstone per sync that every later read of `meta` would skip.
        let mut batch = WriteBatch::default();
        for seq in from..below {
            batch.delete_cf(self.cf(CF_META), pending_key(seq));
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo)?;
        self.pending
            .cleared_below
            .fetch_max(below, Ordering::SeqCst);
        self.pending.files.lock().retain(|&(seq, _)| seq >= below);
        Ok(())
    }

    /// The contents pending commits replaced: GC keeps them, a power loss
    /// may bring them back.
    pub fn pending_prev_manifests(&self) -> Result<Vec<ManifestId>> {
        Ok(self
            .pending_commits()?
            .into_iter()
            .map(|(_, p)| p.prev_manifest)
            .collect())
    }

    /// The version commits made without a sync that are on record, oldest
    /// first (at open: any means the last stop was not clean).
    pub(super) fn pending_commits(&self) -> Result<Vec<(u64, PendingCommit)>> {
        let mut out = Vec::new();
        for_each_meta(&self.db, PENDING_PREFIX, |rest, value| {
            let seq: [u8; 8] = rest
                .try_into()
                .map_err(|_| StoreError::Corrupt("pending commit key".into()))?;
            out.push((u64::from_be_bytes(seq), PendingCommit::decode(value)?));
            Ok(())
        })?;
        Ok(out)
    }

    /// At open: rolls back the `pending` commits (from
    /// [`Store::pending_commits`]) that name a chunk lost in a power loss
    /// (`lost`, from [`Store::recover_packs`]), then forgets every pending
    /// key, durably. Returns how many were rolled back.
    pub(super) fn recover_pending(
        &self,
        pending: &[(u64, PendingCommit)],
        lost: &HashSet<ChunkId>,
    ) -> Result<usize> {
        if pending.is_empty() {
            return Ok(0);
        }
        let mut txn = self.txn();
        let mut inodes: HashMap<Ino, InodeRecord> = HashMap::new();
        let mut dropped: HashSet<(PathId, u64)> = HashSet::new();
        let mut broken: HashSet<ManifestId> = HashSet::new();
        let mut rolled_back = 0;
        for (_, commit) in pending.iter().rev() {
            if lost.is_empty() || !self.manifest_names_any(commit.manifest, lost)? {
                continue;
            }
            rolled_back += 1;
            broken.insert(commit.manifest);
            if let Some((path, seq)) = commit.version {
                txn.delete_version(path, seq);
                dropped.insert((path, seq));
            }
            let rec = match inodes.remove(&commit.ino) {
                Some(rec) => Some(rec),
                None => self.inode(commit.ino)?,
            };
            let name = self.name_in_logs(commit);
            let Some(mut rec) = rec else {
                log::warn!("{name}: lost in a power failure; the file is gone");
                continue;
            };
            if rec.content == commit.manifest {
                rec.content = commit.prev_manifest;
                rec.size = commit.prev_size;
                rec.mtime = commit.prev_mtime;
            }
            log::warn!(
                "{name}: lost in a power failure (its data never reached the disk); \
                 the file is back to its previous content ({} bytes)",
                rec.size
            );
            inodes.insert(commit.ino, rec);
        }
        for (ino, rec) in &inodes {
            txn.put_inode(*ino, rec);
        }
        if !broken.is_empty() {
            // A rename made the version's content arrive at another path
            // too (renames sync first, but a commit can slip in between).
            self.for_each_version(|path, seq, v| {
                if broken.contains(&v.manifest) && dropped.insert((path, seq)) {
                    txn.delete_version(path, seq);
                }
                Ok(())
            })?;
        }
        self.renumber_latest(&mut txn, &dropped)?;
        txn.batch
            .delete_range_cf(self.cf(CF_META), PENDING_PREFIX, PENDING_END);
        self.commit(txn, true)?;
        Ok(rolled_back)
    }

    /// "`name` version `seq`" of a pending commit, or its inode number.
    fn name_in_logs(&self, commit: &PendingCommit) -> String {
        let ino = format!("inode {}", commit.ino.0);
        let Some((path, seq)) = commit.version else {
            return ino;
        };
        match self.path_record(path) {
            Ok(Some(rec)) => format!("{} version {seq}", String::from_utf8_lossy(&rec.name)),
            _ => format!("{ino} version {seq}"),
        }
    }

    /// Points each path whose newest versions were `dropped` at the newest
    /// one left (its `latest`; the next commit takes the number after it).
    fn renumber_latest(&self, txn: &mut Txn<'_>, dropped: &HashSet<(PathId, u64)>) -> Result<()> {
        let paths: HashSet<PathId> = dropped.iter().map(|(p, _)| *p).collect();
        for path in paths {
            let Some(mut rec) = self.path_record(path)? else {
                continue;
            };
            let mut newest = 0;
            self.versions_of(path, 0, |seq, _| {
                if !dropped.contains(&(path, seq)) {
                    newest = seq;
                }
                Ok(true)
            })?;
            if newest < rec.last_seq {
                rec.last_seq = newest;
                txn.put_path(path, &rec);
            }
        }
        Ok(())
    }

    /// True when a chunk of `lost` is in the manifest.
    fn manifest_names_any(&self, id: ManifestId, lost: &HashSet<ChunkId>) -> Result<bool> {
        let mut from = 0;
        while let Some((start, entries)) = self.segment_from(id, from)? {
            if entries
                .iter()
                .any(|e| matches!(e, Entry::Chunk { id, .. } if lost.contains(id)))
            {
                return Ok(true);
            }
            from = start + 1;
        }
        Ok(false)
    }
}

#[cfg(test)]
#[path = "pending_tests.rs"]
mod tests;
