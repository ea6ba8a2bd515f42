//! [`Txn`]: a group of changes applied atomically (one RocksDB WriteBatch).

use rocksdb::WriteBatch;

use super::manifest::{self, Entry};
use super::records::{DirEntry, InodeRecord, PathRecord, SnapshotRecord, VersionRecord};
use super::schema::*;
use super::{Result, Store};
use crate::ids::{Ino, ManifestId, PathId, SnapId};

/// A group of changes applied atomically by [`Store::commit`].
pub struct Txn<'a> {
    pub(crate) store: &'a Store,
    pub(crate) batch: WriteBatch,
}

impl Txn<'_> {
    fn put(&mut self, cf: &str, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.batch.put_cf(self.store.cf(cf), key, value);
    }

    fn delete(&mut self, cf: &str, key: impl AsRef<[u8]>) {
        self.batch.delete_cf(self.store.cf(cf), key);
    }

    /// Writes an inode.
    pub fn put_inode(&mut self, ino: Ino, rec: &InodeRecord) {
        self.put(CF_INODES, inode_key(ino), rec.encode());
    }

    /// Deletes an inode and its extended attributes.
    pub fn delete_inode(&mut self, ino: Ino) -> Result<()> {
        self.delete(CF_INODES, inode_key(ino));
        for name in self.store.xattr_names(ino)? {
            self.delete_xattr(ino, &name);
        }
        Ok(())
    }

    /// Adds or replaces a directory entry.
    pub fn put_dentry(&mut self, parent: Ino, name: &[u8], entry: &DirEntry) {
        self.put(CF_DENTRIES, dentry_key(parent, name), entry.encode());
        self.put(
            CF_DIRORDER,
            dirorder_key(parent, entry.cookie),
            entry.encode_with_name(name),
        );
    }

    /// Removes a directory entry.
    pub fn delete_dentry(&mut self, parent: Ino, name: &[u8], entry: &DirEntry) {
        self.delete(CF_DENTRIES, dentry_key(parent, name));
        self.delete(CF_DIRORDER, dirorder_key(parent, entry.cookie));
    }

    /// Sets an extended attribute.
    pub fn put_xattr(&mut self, ino: Ino, name: &[u8], value: &[u8]) {
        self.put(CF_XATTRS, xattr_key(ino, name), value);
    }

    /// Removes an extended attribute.
    pub fn delete_xattr(&mut self, ino: Ino, name: &[u8]) {
        self.delete(CF_XATTRS, xattr_key(ino, name));
    }

    /// Adds a manifest segment.
    pub fn put_segment(&mut self, id: ManifestId, start: u64, entries: &[Entry]) {
        self.put(
            CF_MANIFESTS,
            manifest_key(id, start),
            manifest::encode_segment(entries),
        );
    }

    /// Deletes every segment of a manifest.
    pub fn delete_manifest(&mut self, id: ManifestId) {
        self.batch.delete_range_cf(
            self.store.cf(CF_MANIFESTS),
            manifest_key(id, 0),
            manifest_key(ManifestId(id.0 + 1), 0),
        );
    }

    /// Adds a history path.
    pub fn put_path(&mut self, id: PathId, rec: &PathRecord) {
        self.put(
            CF_PATHS,
            path_child_key(rec.parent, &rec.name),
            id.0.to_be_bytes(),
        );
        self.put(CF_PATH_INFO, id.0.to_be_bytes(), rec.encode());
    }

    /// Removes a history path (it must have no versions and no children).
    pub fn delete_path(&mut self, id: PathId, rec: &PathRecord) {
        self.delete(CF_PATHS, path_child_key(rec.parent, &rec.name));
        self.delete(CF_PATH_INFO, id.0.to_be_bytes());
    }

    /// Records a committed version.
    pub fn put_version(&mut self, path: PathId, seq: u64, rec: &VersionRecord) {
        self.put(CF_VERSIONS, version_key(path, seq), rec.encode());
    }

    /// Forgets a version (retention).
    pub fn delete_version(&mut self, path: PathId, seq: u64) {
        self.delete(CF_VERSIONS, version_key(path, seq));
    }

    /// Writes a snapshot's record.
    pub fn put_snapshot(&mut self, id: SnapId, rec: &SnapshotRecord) {
        self.put(CF_SNAPSHOTS, id.0.to_be_bytes(), rec.encode());
    }

    /// Deletes a snapshot: its record and its whole namespace copy.
    pub fn delete_snapshot(&mut self, id: SnapId) {
        self.delete(CF_SNAPSHOTS, id.0.to_be_bytes());
        self.batch.delete_range_cf(
            self.store.cf(CF_SNAP_TREE),
            id.0.to_be_bytes(),
            (id.0 + 1).to_be_bytes(),
        );
    }

    /// Stores the retention policy text.
    pub fn put_policy(&mut self, text: &str) {
        self.put(CF_META, META_POLICY, text.as_bytes());
    }
}
