//! File versions by path: every commit records a version at the file's
//! path, and a rename records one at the destination for every committed
//! file it moves (so the atomic-save pattern and HF Trainer's directory
//! rename show up under the final names). History paths are created on
//! first use and never removed by the live tree: deleting a file keeps
//! its versions.

use std::collections::HashMap;

use super::{Result, Tree, TreeError};
use crate::ids::{Ino, PathId};
use crate::store::records::{FileKind, InodeRecord, PathRecord, Time, VersionRecord};
use crate::store::{Scope, Txn};

/// One live path component with the attributes the history mirrors.
#[derive(Clone, Debug)]
pub(crate) struct Component {
    pub name: Vec<u8>,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
}

/// History changes of one transaction: paths created or updated so far, so
/// that several versions in one batch see each other's paths.
pub(crate) struct HistoryBatch<'t> {
    tree: &'t Tree,
    children: HashMap<(PathId, Vec<u8>), PathId>,
    records: HashMap<PathId, PathRecord>,
}

impl<'t> HistoryBatch<'t> {
    pub(crate) fn new(tree: &'t Tree) -> Self {
        HistoryBatch {
            tree,
            children: HashMap::new(),
            records: HashMap::new(),
        }
    }

    fn record(&mut self, id: PathId) -> Result<&mut PathRecord> {
        if !self.records.contains_key(&id) {
            let rec = self
                .tree
                .data
                .store
                .path_record(id)?
                .unwrap_or_else(PathRecord::root);
            self.records.insert(id, rec);
        }
        self.records.get_mut(&id).ok_or(TreeError::NotFound)
    }

    /// The history path of `components` (from the root), created as needed;
    /// each node takes the permissions of the live object it mirrors.
    fn path(&mut self, components: &[Component]) -> Result<PathId> {
        let store = &self.tree.data.store;
        let mut at = PathId::ROOT;
        for c in components {
            let key = (at, c.name.clone());
            let child = match self.children.get(&key) {
                Some(id) => *id,
                None => match store.path_child(at, &c.name)? {
                    Some(id) => id,
                    None => {
                        let id = store.alloc_path()?;
                        self.records.insert(
                            id,
                            PathRecord {
                                parent: at,
                                name: c.name.clone(),
                                last_seq: 0,
                                perm: 0,
                                uid: 0,
                                gid: 0,
                            },
                        );
                        id
                    }
                },
            };
            self.children.insert(key, child);
            let rec = self.record(child)?;
            rec.perm = c.perm;
            rec.uid = c.uid;
            rec.gid = c.gid;
            at = child;
        }
        Ok(at)
    }

    /// Records `file`'s committed content as the next version at `path`.
    pub(crate) fn add_version(
        &mut self,
        txn: &mut Txn<'_>,
        path: &[Component],
        ino: Ino,
        file: &InodeRecord,
        when: Time,
    ) -> Result<(PathId, u64)> {
        let id = self.path(path)?;
        let rec = self.record(id)?;
        rec.last_seq += 1;
        let seq = rec.last_seq;
        txn.put_version(
            id,
            seq,
            &VersionRecord {
                manifest: file.content,
                size: file.size,
                perm: file.perm,
                uid: file.uid,
                gid: file.gid,
                mtime: file.mtime,
                committed: when,
                ino,
            },
        );
        Ok((id, seq))
    }

    /// Puts every created or changed path into `txn`.
    pub(crate) fn write(self, txn: &mut Txn<'_>) {
        for (id, rec) in &self.records {
            txn.put_path(*id, rec);
        }
    }
}

/// A directory's history node lists its versions, so it needs the x bits
/// wherever the file has r bits.
fn listable(perm: u16) -> u16 {
    perm | ((perm & 0o444) >> 2)
}

impl Tree {
    /// The live path of `ino` as components from the root, read from the
    /// parent chain; `None` when a parent is gone (a deleted directory).
    pub(crate) fn live_components(
        &self,
        ino: Ino,
        rec: &InodeRecord,
    ) -> Result<Option<Vec<Component>>> {
        let mut out = vec![Component {
            name: rec.name.clone(),
            perm: listable(rec.perm),
            uid: rec.uid,
            gid: rec.gid,
        }];
        let mut at = rec.parent;
        let mut guard = 0;
        while at != Ino::ROOT {
            guard += 1;
            let Some(dir) = self.data.store.inode(at)? else {
                return Ok(None);
            };
            if guard > 4096 || (at == ino) {
                return Err(TreeError::Invalid("cycle in the directory tree"));
            }
            out.push(Component {
                name: dir.name.clone(),
                perm: dir.perm,
                uid: dir.uid,
                gid: dir.gid,
            });
            at = dir.parent;
        }
        out.reverse();
        Ok(Some(out))
    }

    /// The history paths of the live regular files (their newest version
    /// is their current content).
    pub fn live_history_paths(&self) -> Result<std::collections::HashSet<PathId>> {
        let mut files = Vec::new();
        self.data.store.for_each_inode(|ino, rec| {
            if rec.kind == FileKind::File && rec.nlink > 0 {
                files.push((ino, rec));
            }
            Ok(())
        })?;
        let mut out = std::collections::HashSet::new();
        for (ino, rec) in files {
            let Some(components) = self.live_components(ino, &rec)? else {
                continue;
            };
            let mut at = Some(PathId::ROOT);
            for c in &components {
                at = match at {
                    Some(p) => self.data.store.path_child(p, &c.name)?,
                    None => None,
                };
            }
            if let Some(p) = at {
                out.insert(p);
            }
        }
        Ok(out)
    }

    /// The live path of a directory (empty for the root).
    pub(crate) fn dir_components(&self, dir: Ino) -> Result<Option<Vec<Component>>> {
        if dir == Ino::ROOT {
            return Ok(Some(Vec::new()));
        }
        match self.data.store.inode(dir)? {
            Some(rec) => self.live_components(dir, &rec),
            None => Ok(None),
        }
    }

    /// Records a version for every committed regular file at or under
    /// `entry` (moved to `dest`): the rename half of path history.
    pub(crate) fn record_moved(
        &self,
        hist: &mut HistoryBatch<'_>,
        txn: &mut Txn<'_>,
        ino: Ino,
        dest: Vec<Component>,
        now: Time,
    ) -> Result<()> {
        let Some(rec) = self.data.store.inode(ino)? else {
            return Ok(());
        };
        match rec.kind {
            FileKind::File if rec.versions > 0 => {
                let mut dest = dest;
                if let Some(last) = dest.last_mut() {
                    last.perm = listable(rec.perm);
                    last.uid = rec.uid;
                    last.gid = rec.gid;
                }
                hist.add_version(txn, &dest, ino, &rec, now)?;
            }
            FileKind::Dir => {
                let mut children = Vec::new();
                self.data
                    .store
                    .dir_entries_in(Scope::Live, ino, 0, |entry, name| {
                        children.push((entry.ino, name.to_vec()));
                        Ok(true)
                    })?;
                for (child, name) in children {
                    let mut path = dest.clone();
                    path.push(Component {
                        name,
                        perm: 0,
                        uid: 0,
                        gid: 0,
                    });
                    if let Some(crec) = self.data.store.inode(child)? {
                        if let Some(last) = path.last_mut() {
                            last.perm = crec.perm;
                            last.uid = crec.uid;
                            last.gid = crec.gid;
                        }
                    }
                    self.record_moved(hist, txn, child, path, now)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}
