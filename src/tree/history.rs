//! Read access to the version history and stored content for the `.ckpt/`
//! views, and the stored retention policy text.

use super::reader::ReadHint;
use super::{Result, Tree, TreeError};
use crate::ids::{ManifestId, PathId};
use crate::store::records::{PathRecord, VersionRecord};

impl Tree {
    /// The child `name` of a history path.
    pub fn history_child(&self, parent: PathId, name: &[u8]) -> Result<PathId> {
        self.data
            .store
            .path_child(parent, name)?
            .ok_or(TreeError::NotFound)
    }

    /// A history path's record (the root's is implied).
    pub fn history_path(&self, id: PathId) -> Result<PathRecord> {
        match self.data.store.path_record(id)? {
            Some(rec) => Ok(rec),
            None if id == PathId::ROOT => Ok(PathRecord::root()),
            None => Err(TreeError::NotFound),
        }
    }

    /// Calls `f(child, name)` for a history path's children in name order
    /// after `after`, until `f` returns false.
    pub fn history_children(
        &self,
        parent: PathId,
        after: Option<&[u8]>,
        mut f: impl FnMut(PathId, &[u8]) -> bool,
    ) -> Result<()> {
        self.data
            .store
            .path_children(parent, after, |id, name| Ok(f(id, name)))?;
        Ok(())
    }

    /// Calls `f(seq, version)` for a path's versions after `after`, oldest
    /// first, until `f` returns false.
    pub fn versions_of(
        &self,
        path: PathId,
        after: u64,
        mut f: impl FnMut(u64, VersionRecord) -> bool,
    ) -> Result<()> {
        self.data
            .store
            .versions_of(path, after, |seq, v| Ok(f(seq, v)))?;
        Ok(())
    }

    /// One version.
    pub fn version(&self, path: PathId, seq: u64) -> Result<VersionRecord> {
        self.data
            .store
            .version(path, seq)?
            .ok_or(TreeError::NotFound)
    }

    /// Reads up to `len` bytes at `offset` of committed content of `size`
    /// bytes (a snapshot's or a version's file).
    pub fn read_content(
        &self,
        manifest: ManifestId,
        size: u64,
        offset: u64,
        len: u32,
        hint: &mut ReadHint,
    ) -> Result<Vec<u8>> {
        if offset >= size {
            return Ok(Vec::new());
        }
        let n = (len as u64).min(size - offset) as usize;
        Ok(self.data.reader.read_vec(manifest, offset, n, hint)?)
    }

    /// The retention policy text last stored, if any.
    pub fn policy_text(&self) -> Result<Option<String>> {
        Ok(self.data.store.policy_text()?)
    }

    /// Stores a (validated) retention policy text durably.
    pub fn store_policy_text(&self, text: &str) -> Result<()> {
        let mut txn = self.data.store.txn();
        txn.put_policy(text);
        self.data.store.commit(txn, true)?;
        Ok(())
    }
}
