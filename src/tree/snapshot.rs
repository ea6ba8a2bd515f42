//! Snapshots: a frozen copy of the live namespace (inodes, entries, xattrs;
//! no file data: the copies name the same manifests), taken atomically
//! under the namespace lock after files being written were committed.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{check_name, Result, Tree, TreeError};
use crate::ids::SnapId;
use crate::store::records::{SnapshotRecord, Time};

/// Names under `.ckpt/snapshots/` that are links, not snapshots.
pub const RESERVED_SNAPSHOT_NAMES: [&[u8]; 2] = [b"latest", b"best"];

/// How a snapshot comes to be.
#[derive(Clone, Debug)]
pub struct SnapshotRequest {
    /// Its name; `None` gives `auto-NNNNNN-YYYYMMDDTHHMMSSZ`.
    pub name: Option<Vec<u8>>,
    /// What asked for it (kept in the record and logged).
    pub trigger: String,
    /// Taken by ckptfs itself rather than a user.
    pub auto: bool,
}

/// `YYYYMMDDTHHMMSSZ` of a time, in UTC.
pub fn compact_utc(t: Time) -> String {
    match jiff::Timestamp::from_second(t.secs) {
        Ok(ts) => ts.strftime("%Y%m%dT%H%M%SZ").to_string(),
        Err(_) => format!("{}", t.secs),
    }
}

/// RFC 3339 UTC of a time (`user.ckpt.created`, JSON).
pub fn rfc3339(t: Time) -> String {
    match jiff::Timestamp::new(t.secs, t.nanos as i32) {
        Ok(ts) => ts.strftime("%Y-%m-%dT%H:%M:%S%.fZ").to_string(),
        Err(_) => format!("{}", t.secs),
    }
}

impl Tree {
    /// Every snapshot, oldest first.
    pub fn snapshots(&self) -> Result<Vec<(SnapId, SnapshotRecord)>> {
        let mut all = self.data.store.snapshots()?;
        all.sort_by_key(|(_, rec)| rec.seq);
        Ok(all)
    }

    /// The snapshot called `name`.
    pub fn snapshot_named(&self, name: &[u8]) -> Result<(SnapId, SnapshotRecord)> {
        self.snapshots()?
            .into_iter()
            .find(|(_, rec)| rec.name == name)
            .ok_or(TreeError::NotFound)
    }

    /// A snapshot by id.
    pub fn snapshot(&self, id: SnapId) -> Result<SnapshotRecord> {
        self.data.store.snapshot(id)?.ok_or(TreeError::NotFound)
    }

    /// Files with unsaved writes, and whether a file is being created.
    fn writers(&self) -> (Vec<crate::ids::Ino>, bool) {
        let busy = self
            .open
            .lock()
            .values()
            .filter(|f| f.has_unsaved_writes())
            .map(|f| f.ino())
            .collect();
        (busy, self.creating.load(Ordering::SeqCst) > 0)
    }

    /// Waits, until `deadline`, until no file has unsaved writes or is
    /// being created, so that the shards several ranks write land in the
    /// same snapshot. Returns the paths still being written when the wait
    /// ran out.
    fn wait_for_writers(&self, deadline: Instant) -> Vec<String> {
        loop {
            let (busy, creating) = self.writers();
            if busy.is_empty() && !creating {
                return Vec::new();
            }
            if Instant::now() >= deadline {
                return busy.into_iter().map(|i| self.path_of(i)).collect();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Takes a snapshot of the committed state of the whole live tree.
    pub fn take_snapshot(&self, req: &SnapshotRequest) -> Result<(SnapId, SnapshotRecord)> {
        self.writable()?;
        if let Some(name) = &req.name {
            check_name(name)?;
            if RESERVED_SNAPSHOT_NAMES.contains(&name.as_slice()) {
                return Err(TreeError::Exists);
            }
            if self.snapshot_named(name).is_ok() {
                return Err(TreeError::Exists);
            }
        }
        let waited = Instant::now();
        let deadline = waited + self.opts.snapshot_wait;
        let (_ns, still_open) = loop {
            let still_open = self.wait_for_writers(deadline);
            // Most of the sync the snapshot needs (below), outside `ns`.
            self.data.store.sync()?;
            let ns = self.ns.lock();
            // A file created between the wait and the lock is being
            // written too: its empty entry is not a version to keep.
            let (busy, creating) = self.writers();
            if (busy.is_empty() && !creating) || Instant::now() >= deadline {
                break (ns, still_open);
            }
        };
        if !still_open.is_empty() {
            log::warn!(
                "snapshot ({}): files still being written after {:?}, their last committed versions are taken: {}",
                req.trigger,
                self.opts.snapshot_wait,
                still_open.join(", ")
            );
        }
        let store = &self.data.store;
        let id = store.alloc_snapshot()?;
        let created = Time::now();
        let name = match &req.name {
            Some(n) => {
                // Taken by another request while we waited?
                if store.snapshots()?.iter().any(|(_, r)| &r.name == n) {
                    return Err(TreeError::Exists);
                }
                n.clone()
            }
            None => format!("auto-{:06}-{}", id.0, compact_utc(created)).into_bytes(),
        };
        let mut txn = store.txn();
        let copied = store.copy_live_into_snapshot(&mut txn, id)?;
        let rec = SnapshotRecord {
            name,
            seq: id.0,
            created,
            files: copied.files,
            logical_bytes: copied.logical_bytes,
            pinned: false,
            auto: req.auto,
            trigger: req.trigger.clone().into_bytes(),
        };
        txn.put_snapshot(id, &rec);
        // A snapshot never names a version a power loss could roll back:
        // every version it copied is made durable first.
        store.sync()?;
        store.commit(txn, true)?;
        self.note_change();
        self.emit_event(
            "snapshot",
            serde_json::json!({
                "name": String::from_utf8_lossy(&rec.name),
                "trigger": req.trigger,
                "auto": req.auto,
                "files": rec.files,
                "logical_bytes": rec.logical_bytes,
                "created": rfc3339(rec.created),
            }),
        );
        log::info!(
            "snapshot {} taken ({}): {} files, {} bytes, waited {:?}",
            String::from_utf8_lossy(&rec.name),
            req.trigger,
            rec.files,
            rec.logical_bytes,
            waited.elapsed()
        );
        for hook in self.snapshot_hooks.lock().iter() {
            hook(&rec);
        }
        Ok((id, rec))
    }

    /// Runs `hook` after every snapshot taken from now on (it must not
    /// block: it runs on the thread that took the snapshot).
    pub fn on_snapshot(&self, hook: super::SnapshotHook) {
        self.snapshot_hooks.lock().push(hook);
    }

    /// Deletes a snapshot; pinned ones are refused (EBUSY).
    pub fn delete_snapshot(&self, name: &[u8]) -> Result<()> {
        self.writable()?;
        let _ns = self.ns.lock();
        let (id, rec) = self.snapshot_named(name)?;
        if rec.pinned {
            return Err(TreeError::Busy);
        }
        let mut txn = self.data.store.txn();
        txn.delete_snapshot(id);
        self.data.store.commit(txn, false)?;
        self.note_change();
        self.emit_event(
            "snapshot_deleted",
            serde_json::json!({ "name": String::from_utf8_lossy(name) }),
        );
        log::info!("snapshot {} deleted", String::from_utf8_lossy(name));
        Ok(())
    }

    /// Renames a snapshot.
    pub fn rename_snapshot(&self, from: &[u8], to: &[u8]) -> Result<()> {
        self.writable()?;
        check_name(to)?;
        if RESERVED_SNAPSHOT_NAMES.contains(&to) {
            return Err(TreeError::Exists);
        }
        let _ns = self.ns.lock();
        let (id, mut rec) = self.snapshot_named(from)?;
        if from == to {
            return Ok(());
        }
        if self.snapshot_named(to).is_ok() {
            return Err(TreeError::Exists);
        }
        rec.name = to.to_vec();
        let mut txn = self.data.store.txn();
        txn.put_snapshot(id, &rec);
        self.data.store.commit(txn, false)?;
        self.note_change();
        self.emit_event(
            "snapshot_renamed",
            serde_json::json!({ "from": String::from_utf8_lossy(from), "to": String::from_utf8_lossy(to) }),
        );
        Ok(())
    }

    /// Pins or unpins a snapshot.
    pub fn set_pinned(&self, id: SnapId, pinned: bool) -> Result<()> {
        self.writable()?;
        let _ns = self.ns.lock();
        let mut rec = self.snapshot(id)?;
        rec.pinned = pinned;
        let mut txn = self.data.store.txn();
        txn.put_snapshot(id, &rec);
        self.data.store.commit(txn, false)?;
        self.note_change();
        self.emit_event(
            if pinned {
                "snapshot_pinned"
            } else {
                "snapshot_unpinned"
            },
            serde_json::json!({ "name": String::from_utf8_lossy(&rec.name) }),
        );
        Ok(())
    }
}
