//! Attribute changes on live files (chmod, chown, utimens, truncate),
//! serialized with an open file's writes and commits.

use std::sync::atomic::Ordering;

use super::files::{HandleView, ANYONE};
use super::{Result, Tree, TreeError};
use crate::ids::Ino;
use crate::store::records::{FileKind, InodeRecord, Time};

/// Attribute changes requested by setattr; `None` leaves a field alone.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetAttr {
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size (truncate).
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<Time>,
    /// New modification time.
    pub mtime: Option<Time>,
}

impl Tree {
    /// chmod, chown, utimens and truncate.
    pub fn setattr(&self, ino: Ino, attr: SetAttr, fh: Option<u64>) -> Result<InodeRecord> {
        self.writable()?;
        if let Some(size) = attr.size {
            self.set_size(ino, size, fh)?;
        }
        // Hold an open file's state while changing its inode: a commit in
        // flight (which holds it too) would otherwise overwrite the new
        // mtime with the one its writes stamped.
        let file = self.open.lock().get(&ino).cloned();
        let mut st = file.as_ref().map(|f| f.lock());
        if attr.mode.is_some()
            || attr.uid.is_some()
            || attr.gid.is_some()
            || attr.atime.is_some()
            || attr.mtime.is_some()
        {
            let store = &self.data.store;
            let _ns = self.ns.lock();
            let mut rec = self.inode(ino)?;
            if let Some(mode) = attr.mode {
                rec.perm = (mode & 0o7777) as u16;
            }
            if let Some(uid) = attr.uid {
                rec.uid = uid;
            }
            if let Some(gid) = attr.gid {
                rec.gid = gid;
            }
            if let Some(atime) = attr.atime {
                rec.atime = atime;
            }
            if let Some(mtime) = attr.mtime {
                rec.mtime = mtime;
            }
            rec.ctime = Time::now();
            let mut txn = store.txn();
            txn.put_inode(ino, &rec);
            store.commit(txn, false)?;
        }
        if let (Some(mtime), Some(file), Some(st)) = (attr.mtime, file.as_ref(), st.as_mut()) {
            // Unsaved writes would otherwise stamp their own time at commit
            // (tar and cp -p set mtime before they close).
            if let Some(ws) = st.write.as_mut() {
                ws.mtime = mtime;
                *file.live.lock() = Some((ws.size, mtime));
            }
        }
        drop(st);
        self.getattr(ino)
    }

    fn set_size(&self, ino: Ino, size: u64, fh: Option<u64>) -> Result<()> {
        let rec = self.inode(ino)?;
        match rec.kind {
            FileKind::File => {}
            FileKind::Dir => return Err(TreeError::IsDir),
            _ => return Err(TreeError::Invalid("truncate of a special file")),
        }
        if let Some(fh) = fh {
            if let Ok(HandleView {
                file, mode, wrote, ..
            }) = self.handle(fh)
            {
                if mode.write {
                    let mut st = file.lock();
                    self.truncate_locked(&file, &mut st, size)?;
                    wrote.store(ANYONE, Ordering::Release);
                    return Ok(());
                }
            }
        }
        // truncate(2) by path: one complete change, committed now unless
        // someone has the file open for writing (their close commits it).
        let file = self.acquire(ino, true)?;
        let result = {
            let mut st = file.lock();
            self.truncate_locked(&file, &mut st, size)
        };
        let released = self.relinquish(&file, true);
        result.and(released)
    }
}
