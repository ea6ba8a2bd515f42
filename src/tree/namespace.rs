//! Namespace operations: lookup, create, link, unlink, rename, readdir,
//! extended attributes. Each change is one store transaction under `ns`.

use std::collections::HashMap;

use super::version::{Component, HistoryBatch};
use super::{check_name, Result, Tree, TreeError};
use crate::ids::Ino;
use crate::store::records::{DirEntry, FileKind, InodeRecord, Time};
use crate::store::Txn;

/// Largest extended attribute value (as on ext4 and in the VFS).
pub const XATTR_SIZE_MAX: usize = 65536;
const XATTR_CREATE: i32 = 1;
const XATTR_REPLACE: i32 = 2;
const S_ISGID: u16 = 0o2000;

/// How `rename` treats an existing target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenameMode {
    /// Replace it (POSIX rename).
    Replace,
    /// Fail with EEXIST (RENAME_NOREPLACE).
    NoReplace,
    /// Swap the two (RENAME_EXCHANGE).
    Exchange,
}

/// Inode records touched by one namespace change, written once at the end.
struct Touched<'t> {
    tree: &'t Tree,
    recs: HashMap<Ino, InodeRecord>,
    deleted: Vec<Ino>,
}

impl<'t> Touched<'t> {
    fn new(tree: &'t Tree) -> Self {
        Touched {
            tree,
            recs: HashMap::new(),
            deleted: Vec::new(),
        }
    }

    fn get(&mut self, ino: Ino) -> Result<&mut InodeRecord> {
        if !self.recs.contains_key(&ino) {
            let rec = self.tree.inode(ino)?;
            self.recs.insert(ino, rec);
        }
        self.recs.get_mut(&ino).ok_or(TreeError::NotFound)
    }

    fn delete(&mut self, ino: Ino) {
        self.recs.remove(&ino);
        self.deleted.push(ino);
    }

    fn write(self, txn: &mut Txn<'_>) -> Result<()> {
        for ino in &self.deleted {
            txn.delete_inode(*ino)?;
        }
        for (ino, rec) in &self.recs {
            txn.put_inode(*ino, rec);
        }
        Ok(())
    }
}

impl Tree {
    /// Creates a node of any kind; the caller has checked writability.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new_node(
        &self,
        parent: Ino,
        name: &[u8],
        kind: FileKind,
        perm: u16,
        rdev: u32,
        uid: u32,
        gid: u32,
        target: &[u8],
    ) -> Result<(Ino, InodeRecord)> {
        self.writable()?;
        check_name(name)?;
        let store = &self.data.store;
        let _ns = self.ns.lock();
        let mut touched = Touched::new(self);
        let dir = touched.get(parent)?;
        if dir.kind != FileKind::Dir {
            return Err(TreeError::NotDir);
        }
        if dir.nlink == 0 {
            return Err(TreeError::NotFound);
        }
        if store.dentry(parent, name)?.is_some() {
            return Err(TreeError::Exists);
        }
        let (gid, perm) = if dir.perm & S_ISGID != 0 {
            let perm = if kind == FileKind::Dir {
                perm | S_ISGID
            } else {
                perm
            };
            (dir.gid, perm)
        } else {
            (gid, perm)
        };
        let now = Time::now();
        dir.mtime = now;
        dir.ctime = now;
        if kind == FileKind::Dir {
            dir.nlink += 1;
        }
        let ino = store.alloc_ino()?;
        let mut rec = InodeRecord::new(kind, perm, uid, gid);
        rec.rdev = rdev;
        rec.parent = parent;
        rec.name = name.to_vec();
        if kind == FileKind::Symlink {
            rec.target = target.to_vec();
            rec.size = target.len() as u64;
        }
        let mut txn = store.txn();
        let entry = DirEntry {
            ino,
            kind,
            cookie: store.alloc_id()?,
        };
        txn.put_dentry(parent, name, &entry);
        txn.put_inode(ino, &rec);
        touched.write(&mut txn)?;
        store.commit(txn, false)?;
        Ok((ino, rec))
    }

    /// Adds a hard link `newname` in `newparent` to `ino`.
    pub fn link(&self, ino: Ino, newparent: Ino, newname: &[u8]) -> Result<(Ino, InodeRecord)> {
        self.writable()?;
        check_name(newname)?;
        let store = &self.data.store;
        {
            let _ns = self.ns.lock();
            let mut touched = Touched::new(self);
            let dir = touched.get(newparent)?;
            if dir.kind != FileKind::Dir {
                return Err(TreeError::NotDir);
            }
            let now = Time::now();
            dir.mtime = now;
            dir.ctime = now;
            if store.dentry(newparent, newname)?.is_some() {
                return Err(TreeError::Exists);
            }
            let rec = touched.get(ino)?;
            if rec.kind == FileKind::Dir {
                return Err(TreeError::NotPermitted);
            }
            // The file keeps its primary name (where its versions are
            // recorded): a new link is an extra name, not a move.
            rec.nlink += 1;
            rec.ctime = now;
            let entry = DirEntry {
                ino,
                kind: rec.kind,
                cookie: store.alloc_id()?,
            };
            let mut txn = store.txn();
            txn.put_dentry(newparent, newname, &entry);
            touched.write(&mut txn)?;
            store.commit(txn, false)?;
        }
        Ok((ino, self.getattr(ino)?))
    }

    /// Removes a non-directory name. The file's history stays in the store;
    /// an open file stays readable until its last handle is released.
    pub fn unlink(&self, parent: Ino, name: &[u8]) -> Result<()> {
        self.writable()?;
        let store = &self.data.store;
        let _ns = self.ns.lock();
        let entry = store.dentry(parent, name)?.ok_or(TreeError::NotFound)?;
        if entry.kind == FileKind::Dir {
            return Err(TreeError::IsDir);
        }
        let mut touched = Touched::new(self);
        let now = Time::now();
        let dir = touched.get(parent)?;
        dir.mtime = now;
        dir.ctime = now;
        self.drop_link(&mut touched, entry.ino, parent, name, now)?;
        let mut txn = store.txn();
        txn.delete_dentry(parent, name, &entry);
        touched.write(&mut txn)?;
        store.commit(txn, false)?;
        Ok(())
    }

    /// One name fewer for a non-directory; deletes the inode record once no
    /// name and no open handle is left.
    fn drop_link(
        &self,
        touched: &mut Touched<'_>,
        ino: Ino,
        parent: Ino,
        name: &[u8],
        now: Time,
    ) -> Result<()> {
        let rec = touched.get(ino)?;
        rec.nlink = rec.nlink.saturating_sub(1);
        rec.ctime = now;
        if rec.nlink == 0 {
            if !self.is_referenced(ino) {
                touched.delete(ino);
            }
        } else if rec.parent == parent && rec.name == name {
            // The primary name goes but other links stay: the file is now
            // known (and versioned) under one of them.
            if let Some((p, n)) = self.data.store.other_name_of(ino, parent, name)? {
                let rec = touched.get(ino)?;
                rec.parent = p;
                rec.name = n;
            }
        }
        Ok(())
    }

    /// Removes an empty directory.
    pub fn rmdir(&self, parent: Ino, name: &[u8]) -> Result<()> {
        self.writable()?;
        let store = &self.data.store;
        let _ns = self.ns.lock();
        let entry = store.dentry(parent, name)?.ok_or(TreeError::NotFound)?;
        if entry.kind != FileKind::Dir {
            return Err(TreeError::NotDir);
        }
        if store.dir_has_entries(entry.ino)? {
            return Err(TreeError::NotEmpty);
        }
        let mut touched = Touched::new(self);
        let now = Time::now();
        let dir = touched.get(parent)?;
        dir.nlink = dir.nlink.saturating_sub(1);
        dir.mtime = now;
        dir.ctime = now;
        touched.delete(entry.ino);
        let mut txn = store.txn();
        txn.delete_dentry(parent, name, &entry);
        touched.write(&mut txn)?;
        store.commit(txn, false)?;
        Ok(())
    }

    /// True when `ino` is `dir` or inside it.
    fn is_within(&self, ino: Ino, dir: Ino) -> Result<bool> {
        let mut at = ino;
        for _ in 0..65536 {
            if at == dir {
                return Ok(true);
            }
            if at == Ino::ROOT {
                return Ok(false);
            }
            at = self.inode(at)?.parent;
        }
        Err(TreeError::Invalid("directory tree too deep"))
    }

    /// Renames `parent/name` to `newparent/newname`.
    pub fn rename(
        &self,
        parent: Ino,
        name: &[u8],
        newparent: Ino,
        newname: &[u8],
        mode: RenameMode,
    ) -> Result<()> {
        self.writable()?;
        check_name(newname)?;
        let store = &self.data.store;
        // A rename is how a save is published (write a temporary, close,
        // rename over the old file): renaming a file with a version closed
        // since the last sync (or a directory, while any file has one)
        // makes the closed versions durable first, so a power loss never
        // leaves the new name on a version it rolls back (as ext4 does for
        // a rename over a file). An exchange moves the target too. Other
        // renames do not wait for the disk.
        if store.has_pending() {
            let moved = |d: Option<DirEntry>| {
                d.is_some_and(|d| d.kind == FileKind::Dir || store.has_pending_for(d.ino))
            };
            let publishes = moved(store.dentry(parent, name)?)
                || (mode == RenameMode::Exchange && moved(store.dentry(newparent, newname)?));
            if publishes {
                store.sync()?;
            }
        }
        let _ns = self.ns.lock();
        let src = store.dentry(parent, name)?.ok_or(TreeError::NotFound)?;
        let dst = store.dentry(newparent, newname)?;
        if newparent != parent && self.inode(newparent)?.kind != FileKind::Dir {
            return Err(TreeError::NotDir);
        }
        if parent == newparent && name == newname {
            return match (mode, dst) {
                (RenameMode::NoReplace, _) => Err(TreeError::Exists),
                _ => Ok(()),
            };
        }
        if src.kind == FileKind::Dir && newparent != parent && self.is_within(newparent, src.ino)? {
            return Err(TreeError::Invalid("cannot move a directory into itself"));
        }
        let now = Time::now();
        let mut touched = Touched::new(self);
        for dir in [parent, newparent] {
            let d = touched.get(dir)?;
            d.mtime = now;
            d.ctime = now;
        }
        let mut txn = store.txn();
        let mut moves = vec![(src.ino, newparent, newname.to_vec())];
        match (mode, dst) {
            (RenameMode::NoReplace, Some(_)) => return Err(TreeError::Exists),
            (RenameMode::Exchange, None) => return Err(TreeError::NotFound),
            (RenameMode::Exchange, Some(dst)) => {
                if dst.kind == FileKind::Dir
                    && newparent != parent
                    && self.is_within(parent, dst.ino)?
                {
                    return Err(TreeError::Invalid("cannot move a directory into itself"));
                }
                txn.put_dentry(
                    parent,
                    name,
                    &DirEntry {
                        cookie: src.cookie,
                        ..dst
                    },
                );
                txn.put_dentry(
                    newparent,
                    newname,
                    &DirEntry {
                        cookie: dst.cookie,
                        ..src
                    },
                );
                self.move_inode(&mut touched, src, parent, newparent, newname, now)?;
                self.move_inode(&mut touched, dst, newparent, parent, name, now)?;
                moves.push((dst.ino, parent, name.to_vec()));
            }
            (_, dst) => {
                if let Some(dst) = dst {
                    if dst.ino == src.ino {
                        return Ok(());
                    }
                    match (src.kind == FileKind::Dir, dst.kind == FileKind::Dir) {
                        (true, false) => return Err(TreeError::NotDir),
                        (false, true) => return Err(TreeError::IsDir),
                        (true, true) => {
                            if store.dir_has_entries(dst.ino)? {
                                return Err(TreeError::NotEmpty);
                            }
                            touched.delete(dst.ino);
                            let np = touched.get(newparent)?;
                            np.nlink = np.nlink.saturating_sub(1);
                        }
                        (false, false) => {
                            self.drop_link(&mut touched, dst.ino, newparent, newname, now)?
                        }
                    }
                    txn.delete_dentry(newparent, newname, &dst);
                }
                txn.delete_dentry(parent, name, &src);
                let moved = DirEntry {
                    cookie: store.alloc_id()?,
                    ..src
                };
                txn.put_dentry(newparent, newname, &moved);
                self.move_inode(&mut touched, src, parent, newparent, newname, now)?;
            }
        }
        // Path history: committed files arrive at their new paths.
        let mut hist = HistoryBatch::new(self);
        for (ino, dir, name) in moves {
            if let Some(mut dest) = self.dir_components(dir)? {
                dest.push(Component {
                    name,
                    perm: 0,
                    uid: 0,
                    gid: 0,
                });
                self.record_moved(&mut hist, &mut txn, ino, dest, now)?;
            }
        }
        hist.write(&mut txn);
        touched.write(&mut txn)?;
        store.commit(txn, false)?;
        drop(_ns);
        let to = format!(
            "{}/{}",
            self.path_of(newparent).trim_end_matches('/'),
            String::from_utf8_lossy(newname)
        );
        self.observe(super::autosnap::Event::Renamed {
            from: name,
            to: &to,
            dir: src.kind == FileKind::Dir,
        });
        Ok(())
    }

    /// Records an inode's new name and fixes directory link counts.
    fn move_inode(
        &self,
        touched: &mut Touched<'_>,
        entry: DirEntry,
        from: Ino,
        to: Ino,
        name: &[u8],
        now: Time,
    ) -> Result<()> {
        let rec = touched.get(entry.ino)?;
        rec.parent = to;
        rec.name = name.to_vec();
        rec.ctime = now;
        if entry.kind == FileKind::Dir && from != to {
            let f = touched.get(from)?;
            f.nlink = f.nlink.saturating_sub(1);
            touched.get(to)?.nlink += 1;
        }
        Ok(())
    }

    /// Sets an extended attribute (`flags`: XATTR_CREATE / XATTR_REPLACE).
    pub fn setxattr(&self, ino: Ino, name: &[u8], value: &[u8], flags: i32) -> Result<()> {
        self.writable()?;
        check_xattr_name(name)?;
        if value.len() > XATTR_SIZE_MAX {
            return Err(TreeError::Range);
        }
        let store = &self.data.store;
        let _ns = self.ns.lock();
        let mut touched = Touched::new(self);
        touched.get(ino)?.ctime = Time::now();
        let exists = store.xattr(ino, name)?.is_some();
        if flags & XATTR_CREATE != 0 && exists {
            return Err(TreeError::Exists);
        }
        if flags & XATTR_REPLACE != 0 && !exists {
            return Err(TreeError::NoAttr);
        }
        let mut txn = store.txn();
        txn.put_xattr(ino, name, value);
        touched.write(&mut txn)?;
        store.commit(txn, false)?;
        Ok(())
    }

    /// Removes an extended attribute.
    pub fn removexattr(&self, ino: Ino, name: &[u8]) -> Result<()> {
        self.writable()?;
        let store = &self.data.store;
        let _ns = self.ns.lock();
        let mut touched = Touched::new(self);
        touched.get(ino)?.ctime = Time::now();
        if store.xattr(ino, name)?.is_none() {
            return Err(TreeError::NoAttr);
        }
        let mut txn = store.txn();
        txn.delete_xattr(ino, name);
        touched.write(&mut txn)?;
        store.commit(txn, false)?;
        Ok(())
    }

    /// Deletes file inodes that no name refers to: files unlinked while
    /// open when the daemon stopped. Their versions stay.
    pub(crate) fn remove_orphans(&self) -> Result<()> {
        let store = &self.data.store;
        let mut orphans = Vec::new();
        store.for_each_inode(|ino, rec| {
            if rec.nlink == 0 && ino != Ino::ROOT {
                orphans.push(ino);
            }
            Ok(())
        })?;
        if orphans.is_empty() {
            return Ok(());
        }
        let mut txn = store.txn();
        for ino in &orphans {
            txn.delete_inode(*ino)?;
        }
        store.commit(txn, false)?;
        log::info!(
            "removed {} unlinked inode(s) left open at the last stop",
            orphans.len()
        );
        Ok(())
    }
}

fn check_xattr_name(name: &[u8]) -> Result<()> {
    if name.is_empty() || name.len() > 255 {
        return Err(TreeError::Range);
    }
    let allowed: [&[u8]; 3] = [b"user.", b"trusted.", b"security."];
    if allowed
        .iter()
        .any(|p| name.starts_with(p) && name.len() > p.len())
    {
        Ok(())
    } else {
        Err(TreeError::NotSupported)
    }
}
