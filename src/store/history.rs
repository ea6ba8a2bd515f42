//! Reading the history: paths and their versions, snapshots, the stored
//! retention policy; and copying the live namespace into a snapshot.

use super::records::{FileKind, InodeRecord, PathRecord, SnapshotRecord, VersionRecord};
use super::schema::*;
use super::{Result, Store, StoreError, Txn};
use crate::ids::{PathId, SnapId};

/// What a snapshot copy held.
#[derive(Clone, Copy, Debug, Default)]
pub struct CopyStats {
    /// Regular files.
    pub files: u64,
    /// Their total size.
    pub logical_bytes: u64,
}

impl Store {
    /// The child `name` of a history path.
    pub fn path_child(&self, parent: PathId, name: &[u8]) -> Result<Option<PathId>> {
        match self
            .db
            .get_pinned_cf(self.cf(CF_PATHS), path_child_key(parent, name))?
        {
            Some(v) => Ok(Some(PathId(decode_be(&v)?))),
            None => Ok(None),
        }
    }

    /// A history path's record.
    pub fn path_record(&self, id: PathId) -> Result<Option<PathRecord>> {
        match self
            .db
            .get_pinned_cf(self.cf(CF_PATH_INFO), id.0.to_be_bytes())?
        {
            Some(v) => Ok(Some(PathRecord::decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Calls `f(child, name)` for the children of a history path in name
    /// order, starting after `after` (a name), until `f` returns false.
    pub fn path_children(
        &self,
        parent: PathId,
        after: Option<&[u8]>,
        mut f: impl FnMut(PathId, &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let prefix = parent.0.to_be_bytes();
        let mut it = self.db.raw_iterator_cf(self.cf(CF_PATHS));
        match after {
            Some(name) => {
                let mut k = path_child_key(parent, name);
                k.push(0);
                it.seek(k);
            }
            None => it.seek(prefix),
        }
        while let (Some(key), Some(value)) = (it.key(), it.value()) {
            if !key.starts_with(&prefix) || !f(PathId(decode_be(value)?), &key[8..])? {
                break;
            }
            it.next();
        }
        it.status().map_err(StoreError::from)
    }

    /// One version of a path.
    pub fn version(&self, path: PathId, seq: u64) -> Result<Option<VersionRecord>> {
        match self
            .db
            .get_pinned_cf(self.cf(CF_VERSIONS), version_key(path, seq))?
        {
            Some(v) => Ok(Some(VersionRecord::decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Calls `f(seq, version)` for a path's versions with seq > `after`, in
    /// order, until `f` returns false.
    pub fn versions_of(
        &self,
        path: PathId,
        after: u64,
        mut f: impl FnMut(u64, VersionRecord) -> Result<bool>,
    ) -> Result<()> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_VERSIONS));
        it.seek(version_key(path, after.saturating_add(1)));
        while let (Some(key), Some(value)) = (it.key(), it.value()) {
            match split_pair_key(key) {
                Some((p, seq)) if p == path.0 => {
                    if !f(seq, VersionRecord::decode(value)?)? {
                        break;
                    }
                }
                _ => break,
            }
            it.next();
        }
        it.status().map_err(StoreError::from)
    }

    /// Calls `f(path, seq, version)` for every version of every path.
    pub fn for_each_version(
        &self,
        mut f: impl FnMut(PathId, u64, VersionRecord) -> Result<()>,
    ) -> Result<()> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_VERSIONS));
        it.seek_to_first();
        while let (Some(key), Some(value)) = (it.key(), it.value()) {
            let (p, seq) =
                split_pair_key(key).ok_or_else(|| StoreError::Corrupt("version key".into()))?;
            f(PathId(p), seq, VersionRecord::decode(value)?)?;
            it.next();
        }
        it.status().map_err(StoreError::from)
    }

    /// Every snapshot, by id.
    pub fn snapshots(&self) -> Result<Vec<(SnapId, SnapshotRecord)>> {
        let mut out = Vec::new();
        let mut it = self.db.raw_iterator_cf(self.cf(CF_SNAPSHOTS));
        it.seek_to_first();
        while let (Some(key), Some(value)) = (it.key(), it.value()) {
            out.push((SnapId(decode_be(key)?), SnapshotRecord::decode(value)?));
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// One snapshot's record.
    pub fn snapshot(&self, id: SnapId) -> Result<Option<SnapshotRecord>> {
        match self
            .db
            .get_pinned_cf(self.cf(CF_SNAPSHOTS), id.0.to_be_bytes())?
        {
            Some(v) => Ok(Some(SnapshotRecord::decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Adds to `txn` a copy of every live namespace record under `snap`.
    /// The caller holds the namespace still (no change between the scan
    /// and the commit). Inodes without a name (unlinked, open) are left out.
    pub fn copy_live_into_snapshot(&self, txn: &mut Txn<'_>, snap: SnapId) -> Result<CopyStats> {
        let mut stats = CopyStats::default();
        for tag in Tag::ALL {
            let prefix = snap_prefix(snap, tag);
            let mut it = self.db.raw_iterator_cf(self.cf(tag.live_cf()));
            it.seek_to_first();
            while let (Some(key), Some(value)) = (it.key(), it.value()) {
                if tag == Tag::Inode {
                    let rec = InodeRecord::decode(value)?;
                    if rec.nlink == 0 {
                        it.next();
                        continue;
                    }
                    if rec.kind == FileKind::File {
                        stats.files += 1;
                        stats.logical_bytes += rec.size;
                    }
                }
                let mut k = Vec::with_capacity(prefix.len() + key.len());
                k.extend_from_slice(&prefix);
                k.extend_from_slice(key);
                txn.batch.put_cf(self.cf(CF_SNAP_TREE), k, value);
                it.next();
            }
            it.status()?;
        }
        Ok(stats)
    }

    /// The stored retention policy text, if one was ever written.
    pub fn policy_text(&self) -> Result<Option<String>> {
        match self.db.get_cf(self.cf(CF_META), META_POLICY)? {
            Some(v) => Ok(Some(String::from_utf8_lossy(&v).into_owned())),
            None => Ok(None),
        }
    }
}

fn decode_be(v: &[u8]) -> Result<u64> {
    let arr: [u8; 8] = v
        .try_into()
        .map_err(|_| StoreError::Corrupt("id is not 8 bytes".into()))?;
    Ok(u64::from_be_bytes(arr))
}
