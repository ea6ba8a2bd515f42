//! Persistent counters for ids: handed out from memory, with a ceiling
//! persisted (synced) before any id at or above the previous one is used.
//! A crash skips at most one block of ids; none is ever handed out twice.

use parking_lot::Mutex;
use rocksdb::WriteOptions;

use super::schema::CF_META;
use super::{decode_u64, Result, Store, StoreError};
use crate::ids::{Ino, PathId, SnapId};

/// One named counter.
pub(crate) struct Counter {
    key: &'static [u8],
    what: &'static str,
    block: u64,
    max: u64,
    state: Mutex<(u64, u64)>,
}

impl Counter {
    /// A counter whose ceiling lives under `key` in `meta`.
    pub(crate) fn load(
        db: &rocksdb::DB,
        key: &'static [u8],
        what: &'static str,
        start: u64,
        block: u64,
        max: u64,
    ) -> Result<Counter> {
        let ceiling = match db.get_cf(super::cf(db, CF_META), key)? {
            Some(v) => decode_u64(&v)?,
            None => start,
        };
        Ok(Counter {
            key,
            what,
            block,
            max,
            state: Mutex::new((ceiling, ceiling)),
        })
    }

    fn next(&self, store: &Store) -> Result<u64> {
        let mut st = self.state.lock();
        if st.0 >= self.max {
            return Err(StoreError::Exhausted(self.what));
        }
        if st.0 >= st.1 {
            let ceiling = (st.0 + self.block).min(self.max);
            let mut wo = WriteOptions::default();
            wo.set_sync(true);
            store
                .db
                .put_cf_opt(store.cf(CF_META), self.key, ceiling.to_le_bytes(), &wo)?;
            st.1 = ceiling;
        }
        let id = st.0;
        st.0 += 1;
        Ok(id)
    }
}

/// Largest live inode number + 1: virtual inodes keep 36 bits for it.
pub const MAX_INO: u64 = 1 << 36;
/// Largest path id + 1 (32 bits in `.ckpt/versions/` inode numbers).
pub const MAX_PATH_ID: u64 = 1 << 32;
/// Largest snapshot index + 1 (24 bits in `.ckpt/snapshots/` inode numbers).
pub const MAX_SNAP_ID: u64 = 1 << 24;

impl Store {
    /// A fresh id for a manifest or a directory cookie.
    pub fn alloc_id(&self) -> Result<u64> {
        self.ids.next(self)
    }

    /// A fresh live inode number.
    pub fn alloc_ino(&self) -> Result<Ino> {
        Ok(Ino(self.inos.next(self)?))
    }

    /// A fresh history path id.
    pub fn alloc_path(&self) -> Result<PathId> {
        Ok(PathId(self.paths.next(self)?))
    }

    /// A fresh snapshot index.
    pub fn alloc_snapshot(&self) -> Result<SnapId> {
        Ok(SnapId(self.snaps.next(self)?))
    }
}
