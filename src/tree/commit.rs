//! Commits: an open file's unsaved writes become a version (its manifest,
//! inode record and history entry, in one transaction), at close, fsync,
//! release, truncation and clean shutdown.

use std::sync::Arc;

use super::files::{FileState, OpenFile};
use super::version::HistoryBatch;
use super::writer::WriteState;
use super::{Result, Tree};
use crate::store::records::Time;
use crate::store::PendingCommit;

impl Tree {
    /// Commits every file with unsaved writes (clean shutdown).
    pub fn commit_all(&self) -> Result<()> {
        let files: Vec<Arc<OpenFile>> = self.open.lock().values().cloned().collect();
        let mut first_err = Ok(());
        for file in files {
            let mut st = file.lock();
            if let Err(e) = self.commit_locked(&file, &mut st, false) {
                log::error!(
                    "{}: commit at shutdown failed: {e}",
                    self.path_of(file.ino())
                );
                if first_err.is_ok() {
                    first_err = Err(e);
                }
            }
        }
        self.data.store.sync()?;
        first_err
    }

    /// Turns the unsaved writes into a committed version.
    pub(super) fn commit_locked(
        &self,
        file: &OpenFile,
        st: &mut FileState,
        sync: bool,
    ) -> Result<()> {
        if let Some(e) = st.deferred.take() {
            return Err(e);
        }
        let Some(ws) = st.write.take() else {
            if sync {
                self.data.store.sync()?;
            }
            return Ok(());
        };
        // `live` keeps answering stat with the new size until the new inode
        // record is stored (cleared below, on success and on failure).
        let result = self.commit_state(file, st, ws, sync);
        *file.live.lock() = None;
        result
    }

    fn commit_state(
        &self,
        file: &OpenFile,
        st: &mut FileState,
        ws: WriteState,
        sync: bool,
    ) -> Result<()> {
        let store = &self.data.store;
        let mtime = ws.mtime;
        let mut txn = store.txn();
        let (manifest, size) = match ws.finish(&self.data, &mut txn) {
            Ok(built) => built,
            Err(e) => {
                log::error!(
                    "{}: version not committed, previous version kept: {e}",
                    self.path_of(file.ino())
                );
                return Err(e);
            }
        };
        // With lazy durability, a close does not wait for its chunks to
        // reach the disk: the store's next sync makes them durable, and a
        // power loss before it rolls the version back (`store/pending.rs`).
        let lazy = !sync && store.lazy_durability();
        if !lazy {
            // Outside `ns`: a flush can take a while and must not stall renames.
            store.persist_chunks()?;
        }
        let _ns = self.ns.lock();
        let Some(mut rec) = store.inode(file.ino())? else {
            return Ok(());
        };
        let pending = lazy.then(|| PendingCommit::new(file.ino(), &rec, manifest));
        rec.content = manifest;
        rec.size = size;
        rec.mtime = mtime;
        rec.ctime = Time::now();
        rec.versions += 1;
        txn.put_inode(file.ino(), &rec);
        let mut hist = HistoryBatch::new(self);
        let recorded = match self.live_components(file.ino(), &rec)? {
            Some(path) => Some(hist.add_version(&mut txn, &path, file.ino(), &rec, rec.ctime)?),
            None => None,
        };
        hist.write(&mut txn);
        if let Some(mut pending) = pending {
            pending.version = recorded;
            txn.put_pending(&pending);
        }
        store.commit(txn, sync)?;
        st.committed = (manifest, size);
        drop(_ns);
        let path = self.path_of(file.ino());
        self.observe(super::autosnap::Event::Committed(&path));
        self.note_change();
        self.note_commit(size);
        self.emit_event(
            "commit",
            serde_json::json!({ "path": path, "version": recorded.map(|(_, s)| s), "size": size, "sync": sync }),
        );
        match recorded {
            Some((_, seq)) => log::debug!("{path}: committed version {seq} ({size} bytes)"),
            None => log::warn!(
                "{path}: committed ({size} bytes), but its directory is gone: no history entry"
            ),
        }
        Ok(())
    }
}
