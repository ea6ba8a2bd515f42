//! Reading namespace records (inodes, entries, readdir order, xattrs) of
//! the live tree or of a snapshot: a [`Scope`] picks the key space.

use super::records::{DirEntry, InodeRecord};
use super::schema::{snap_prefix, split_pair_key, Tag, CF_SNAP_TREE};
use super::{Result, Store, StoreError};
use crate::ids::{Ino, SnapId};

/// Which namespace to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The live tree.
    Live,
    /// A snapshot's frozen copy.
    Snapshot(SnapId),
}

impl Scope {
    /// The column family and key of a record: `key` is the live key.
    pub(crate) fn key(self, tag: Tag, key: &[u8]) -> (&'static str, Vec<u8>) {
        match self {
            Scope::Live => (tag.live_cf(), key.to_vec()),
            Scope::Snapshot(s) => {
                let mut k = snap_prefix(s, tag).to_vec();
                k.extend_from_slice(key);
                (CF_SNAP_TREE, k)
            }
        }
    }

    fn prefix_len(self) -> usize {
        match self {
            Scope::Live => 0,
            Scope::Snapshot(_) => 9,
        }
    }
}

impl Store {
    fn get_in(&self, scope: Scope, tag: Tag, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let (cf, k) = scope.key(tag, key);
        Ok(self.db.get_cf(self.cf(cf), k)?)
    }

    /// Calls `f(live key, value)` for the records of `tag` whose live key
    /// starts with `prefix`, from `prefix ++ from` on, until `f` says stop.
    pub(crate) fn scan_in(
        &self,
        scope: Scope,
        tag: Tag,
        prefix: &[u8],
        from: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let (cf, full_prefix) = scope.key(tag, prefix);
        let mut start = full_prefix.clone();
        start.extend_from_slice(from);
        let cut = scope.prefix_len();
        let mut it = self.db.raw_iterator_cf(self.cf(cf));
        it.seek(&start);
        while let (Some(key), Some(value)) = (it.key(), it.value()) {
            if !key.starts_with(&full_prefix) || !f(&key[cut..], value)? {
                return Ok(());
            }
            it.next();
        }
        it.status().map_err(StoreError::from)
    }

    /// Reads an inode of the live tree.
    pub fn inode(&self, ino: Ino) -> Result<Option<InodeRecord>> {
        self.inode_in(Scope::Live, ino)
    }

    /// Reads an inode.
    pub fn inode_in(&self, scope: Scope, ino: Ino) -> Result<Option<InodeRecord>> {
        match self.get_in(scope, Tag::Inode, &ino.0.to_be_bytes())? {
            Some(v) => Ok(Some(InodeRecord::decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Looks a name up in a live directory.
    pub fn dentry(&self, parent: Ino, name: &[u8]) -> Result<Option<DirEntry>> {
        self.dentry_in(Scope::Live, parent, name)
    }

    /// Looks a name up in a directory.
    pub fn dentry_in(&self, scope: Scope, parent: Ino, name: &[u8]) -> Result<Option<DirEntry>> {
        let key = super::schema::dentry_key(parent, name);
        match self.get_in(scope, Tag::Dentry, &key)? {
            Some(v) => Ok(Some(DirEntry::decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Calls `f(entry, name)` for the live entries of `parent` whose cookie
    /// is greater than `after`, in cookie order, until `f` returns false.
    pub fn dir_entries(
        &self,
        parent: Ino,
        after: u64,
        f: impl FnMut(DirEntry, &[u8]) -> Result<bool>,
    ) -> Result<()> {
        self.dir_entries_in(Scope::Live, parent, after, f)
    }

    /// Like [`Store::dir_entries`], in any scope.
    pub fn dir_entries_in(
        &self,
        scope: Scope,
        parent: Ino,
        after: u64,
        mut f: impl FnMut(DirEntry, &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let from = after.saturating_add(1).to_be_bytes();
        self.scan_in(
            scope,
            Tag::Order,
            &parent.0.to_be_bytes(),
            &from,
            |key, value| {
                if split_pair_key(key).is_none() {
                    return Err(StoreError::Corrupt("directory order key".into()));
                }
                let (entry, name) = DirEntry::decode_with_name(value)?;
                f(entry, name)
            },
        )
    }

    /// True when the live directory has at least one entry.
    pub fn dir_has_entries(&self, parent: Ino) -> Result<bool> {
        let mut any = false;
        self.dir_entries(parent, 0, |_, _| {
            any = true;
            Ok(false)
        })?;
        Ok(any)
    }

    /// A live name of `ino` other than `parent/name` (a scan of every
    /// entry: only needed when the primary name of a hard-linked file goes).
    pub fn other_name_of(
        &self,
        ino: Ino,
        parent: Ino,
        name: &[u8],
    ) -> Result<Option<(Ino, Vec<u8>)>> {
        let mut found = None;
        self.scan_in(Scope::Live, Tag::Dentry, &[], &[], |key, value| {
            let entry = DirEntry::decode(value)?;
            if entry.ino == ino && key.len() >= 8 {
                let p = Ino(u64::from_be_bytes(key[..8].try_into().unwrap_or_default()));
                if !(p == parent && &key[8..] == name) {
                    found = Some((p, key[8..].to_vec()));
                    return Ok(false);
                }
            }
            Ok(true)
        })?;
        Ok(found)
    }

    /// Calls `f(ino, record)` for every inode in `scope`.
    pub fn for_each_inode_in(
        &self,
        scope: Scope,
        mut f: impl FnMut(Ino, InodeRecord) -> Result<()>,
    ) -> Result<()> {
        self.scan_in(scope, Tag::Inode, &[], &[], |key, value| {
            let arr: [u8; 8] = key
                .try_into()
                .map_err(|_| StoreError::Corrupt("inode key is not 8 bytes".into()))?;
            f(Ino(u64::from_be_bytes(arr)), InodeRecord::decode(value)?)?;
            Ok(true)
        })
    }

    /// Calls `f(ino, record)` for every live inode.
    pub fn for_each_inode(&self, f: impl FnMut(Ino, InodeRecord) -> Result<()>) -> Result<()> {
        self.for_each_inode_in(Scope::Live, f)
    }

    /// Reads a live extended attribute.
    pub fn xattr(&self, ino: Ino, name: &[u8]) -> Result<Option<Vec<u8>>> {
        self.xattr_in(Scope::Live, ino, name)
    }

    /// Reads an extended attribute.
    pub fn xattr_in(&self, scope: Scope, ino: Ino, name: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get_in(scope, Tag::Xattr, &super::schema::xattr_key(ino, name))
    }

    /// The names of a live inode's extended attributes.
    pub fn xattr_names(&self, ino: Ino) -> Result<Vec<Vec<u8>>> {
        self.xattr_names_in(Scope::Live, ino)
    }

    /// The names of an inode's extended attributes.
    pub fn xattr_names_in(&self, scope: Scope, ino: Ino) -> Result<Vec<Vec<u8>>> {
        let mut names = Vec::new();
        self.scan_in(scope, Tag::Xattr, &ino.0.to_be_bytes(), &[], |key, _| {
            names.push(key[8..].to_vec());
            Ok(true)
        })?;
        Ok(names)
    }
}
