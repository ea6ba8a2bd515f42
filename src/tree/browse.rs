//! Read-only access to a namespace: the live tree or a snapshot (a
//! [`Scope`]). Lookup, stat, readdir, readlink and xattrs work the same on
//! both; only the live tree overlays the size of unsaved writes.

use super::{Result, Tree, TreeError, NAME_MAX};
use crate::ids::Ino;
use crate::store::records::{FileKind, InodeRecord};
use crate::store::Scope;

/// One readdir result.
pub struct DirItem<'a> {
    /// The offset to resume after this entry.
    pub offset: u64,
    /// The entry's inode.
    pub ino: Ino,
    /// Its kind.
    pub kind: FileKind,
    /// Its name.
    pub name: &'a [u8],
}

impl Tree {
    /// Reads a live inode; NotFound when it is gone.
    pub(crate) fn inode(&self, ino: Ino) -> Result<InodeRecord> {
        self.inode_in(Scope::Live, ino)
    }

    /// Reads an inode of `scope`; NotFound when it is not there.
    pub fn inode_in(&self, scope: Scope, ino: Ino) -> Result<InodeRecord> {
        self.data
            .store
            .inode_in(scope, ino)?
            .ok_or(TreeError::NotFound)
    }

    /// `stat` of a live inode, including the size of unsaved writes.
    pub fn getattr(&self, ino: Ino) -> Result<InodeRecord> {
        let mut rec = self.inode(ino)?;
        self.overlay_live(ino, &mut rec);
        Ok(rec)
    }

    /// Resolves `name` in a live directory.
    pub fn lookup(&self, parent: Ino, name: &[u8]) -> Result<(Ino, InodeRecord)> {
        let (ino, _) = self.lookup_in(Scope::Live, parent, name)?;
        Ok((ino, self.getattr(ino)?))
    }

    /// Resolves `name` in a directory of `scope`.
    pub fn lookup_in(&self, scope: Scope, parent: Ino, name: &[u8]) -> Result<(Ino, InodeRecord)> {
        if name.len() > NAME_MAX {
            return Err(TreeError::NameTooLong);
        }
        let dir = self.inode_in(scope, parent)?;
        if dir.kind != FileKind::Dir {
            return Err(TreeError::NotDir);
        }
        let entry = self
            .data
            .store
            .dentry_in(scope, parent, name)?
            .ok_or(TreeError::NotFound)?;
        Ok((entry.ino, self.inode_in(scope, entry.ino)?))
    }

    /// A live symlink's target.
    pub fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        self.readlink_in(Scope::Live, ino)
    }

    /// A symlink's target.
    pub fn readlink_in(&self, scope: Scope, ino: Ino) -> Result<Vec<u8>> {
        let rec = self.inode_in(scope, ino)?;
        if rec.kind != FileKind::Symlink {
            return Err(TreeError::Invalid("not a symlink"));
        }
        Ok(rec.target)
    }

    /// The path of a live inode from the mount root, for logs.
    pub fn path_of(&self, ino: Ino) -> String {
        let mut parts = Vec::new();
        let mut at = ino;
        for _ in 0..4096 {
            if at == Ino::ROOT {
                break;
            }
            match self.data.store.inode(at) {
                Ok(Some(rec)) => {
                    if rec.nlink == 0 {
                        parts.push(format!("{} (deleted)", String::from_utf8_lossy(&rec.name)));
                    } else {
                        parts.push(String::from_utf8_lossy(&rec.name).into_owned());
                    }
                    at = rec.parent;
                }
                _ => {
                    parts.push(format!("<inode {}>", at.0));
                    break;
                }
            }
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }

    /// Lists a live directory; see [`Tree::readdir_in`].
    pub fn readdir(&self, ino: Ino, offset: u64, f: impl FnMut(DirItem<'_>) -> bool) -> Result<()> {
        self.readdir_in(Scope::Live, ino, offset, f)
    }

    /// Lists a directory from `offset` (0 = start; then the `offset` of
    /// the last item seen) until `f` returns false. Offsets are stable
    /// while entries are added and removed. A snapshot's root lists `..` as
    /// itself; the caller replaces it where the snapshot hangs.
    pub fn readdir_in(
        &self,
        scope: Scope,
        ino: Ino,
        offset: u64,
        mut f: impl FnMut(DirItem<'_>) -> bool,
    ) -> Result<()> {
        let rec = self.inode_in(scope, ino)?;
        if rec.kind != FileKind::Dir {
            return Err(TreeError::NotDir);
        }
        let dotdot = if ino == Ino::ROOT { ino } else { rec.parent };
        let dots: [(u64, Ino, &[u8]); 2] = [(1, ino, b"."), (2, dotdot, b"..")];
        for (off, target, name) in dots {
            let item = DirItem {
                offset: off,
                ino: target,
                kind: FileKind::Dir,
                name,
            };
            if offset < off && !f(item) {
                return Ok(());
            }
        }
        self.data
            .store
            .dir_entries_in(scope, ino, offset.max(2), |entry, name| {
                Ok(f(DirItem {
                    offset: entry.cookie,
                    ino: entry.ino,
                    kind: entry.kind,
                    name,
                }))
            })?;
        Ok(())
    }

    /// Reads a live extended attribute.
    pub fn getxattr(&self, ino: Ino, name: &[u8]) -> Result<Vec<u8>> {
        self.getxattr_in(Scope::Live, ino, name)
    }

    /// Reads an extended attribute.
    pub fn getxattr_in(&self, scope: Scope, ino: Ino, name: &[u8]) -> Result<Vec<u8>> {
        self.inode_in(scope, ino)?;
        self.data
            .store
            .xattr_in(scope, ino, name)?
            .ok_or(TreeError::NoAttr)
    }

    /// The names of a live inode's extended attributes.
    pub fn listxattr(&self, ino: Ino) -> Result<Vec<Vec<u8>>> {
        self.listxattr_in(Scope::Live, ino)
    }

    /// The names of an inode's extended attributes.
    pub fn listxattr_in(&self, scope: Scope, ino: Ino) -> Result<Vec<Vec<u8>>> {
        self.inode_in(scope, ino)?;
        Ok(self.data.store.xattr_names_in(scope, ino)?)
    }
}
