//! Persistent counters for ids: handed out from memory, with a ceiling
//! persisted (synced) before any id at or above the previous one is used.
//! A crash skips at most one block of ids; none is ever handed out twice.
//!
//! A synced write while a save streams its packs costs that save: ext4
//! commits every block allocated by the writeback in flight before its
//! journal (measured: 0.2-0.35 s at the first commit after a mount, with
//! 230 MB of a 256 MB file in flight). So the daemon tops the counters a
//! save draws from up at mount and after every pack sync
//! ([`Store::top_up_ids`]), and a save rarely reaches a ceiling itself.

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
            self.raise_ceiling(&mut st, store)?;
        }
        let id = st.0;
        st.0 += 1;
        Ok(id)
    }

    /// Persists (synced) a ceiling a whole block above the next id when
    /// less than half a block is left; true if it did.
    fn top_up(&self, store: &Store) -> Result<bool> {
        let mut st = self.state.lock();
        if st.1 >= self.max || st.1 - st.0 >= self.block / 2 {
            return Ok(false);
        }
        self.raise_ceiling(&mut st, store)?;
        Ok(true)
    }

    /// Persists (synced) the ceiling a block above the next id, then
    /// hands out ids up to it. `st` is the locked (next, ceiling).
    fn raise_ceiling(&self, st: &mut (u64, u64), store: &Store) -> Result<()> {
        let ceiling = (st.0 + self.block).min(self.max);
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        store
            .db
            .put_cf_opt(store.cf(CF_META), self.key, ceiling.to_le_bytes(), &wo)?;
        st.1 = ceiling;
        Ok(())
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

    /// Tops up, with a synced write each, the counters that creating and
    /// saving files draw from (ids, inode numbers, history paths) when
    /// less than half a block of one is left, so that a save seldom has to
    /// (see the module docs). Snapshot indexes are left alone: taking a
    /// snapshot syncs anyway, and a top-up at every mount would use up
    /// their 24 bits. Returns how many counters were topped up.
    pub fn top_up_ids(&self) -> Result<usize> {
        let mut topped = 0;
        for counter in [&self.ids, &self.inos, &self.paths] {
            topped += usize::from(counter.top_up(self)?);
        }
        Ok(topped)
    }

    /// [`Store::top_up_ids`] as the head start it is: a failure is
    /// logged, and the save that reaches a ceiling persists its own (and
    /// fails there if the disk still refuses), as without a top-up.
    pub fn top_up_ids_ahead(&self) {
        if let Err(e) = self.top_up_ids() {
            log::warn!(
                "could not reserve ids ahead of the next save ({e}); saves reserve their own"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::schema::META_PATH_CEILING;
    use super::*;

    fn persisted_path_ceiling(store: &Store) -> u64 {
        let raw = store
            .db
            .get_cf(store.cf(CF_META), META_PATH_CEILING)
            .expect("read meta")
            .expect("a path ceiling");
        decode_u64(&raw).expect("a u64")
    }

    #[test]
    fn a_top_up_reserves_a_block_so_the_next_saves_persist_no_ceiling() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.top_up_ids().unwrap(),
            3,
            "a fresh store tops up all three"
        );
        let ceiling = persisted_path_ceiling(&store);
        assert_eq!(ceiling, 2 + (1 << 10));
        let first = store.alloc_path().unwrap();
        for _ in 0..100 {
            store.alloc_path().unwrap();
        }
        assert_eq!(first, PathId(2));
        assert_eq!(
            persisted_path_ceiling(&store),
            ceiling,
            "ids within the block wrote nothing"
        );
        assert_eq!(
            store.top_up_ids().unwrap(),
            0,
            "more than half a block left"
        );
    }

    #[test]
    fn below_half_a_block_a_top_up_moves_the_ceiling_and_no_id_repeats_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut handed_out = Vec::new();
        {
            let store = Store::open(dir.path()).unwrap();
            store.top_up_ids().unwrap();
            // 2 + 513 = 515 next, 1026 the ceiling: 511 left, under half.
            for _ in 0..513 {
                handed_out.push(store.alloc_path().unwrap().0);
            }
            assert_eq!(store.top_up_ids().unwrap(), 1, "only the paths ran low");
            assert_eq!(persisted_path_ceiling(&store), 515 + (1 << 10));
            // Past the ceiling without a top-up, `next` persists its own.
            for _ in 0..2000 {
                handed_out.push(store.alloc_path().unwrap().0);
            }
        }
        let store = Store::open(dir.path()).unwrap();
        let after = store.alloc_path().unwrap().0;
        let max = handed_out.iter().copied().max().unwrap();
        assert!(after > max, "{after} was handed out before (up to {max})");
        handed_out.sort_unstable();
        handed_out.dedup();
        assert_eq!(handed_out.len(), 2513, "an id was handed out twice");
    }
}
