//! The free-space guard: writes fail with ENOSPC before RocksDB itself
//! could run out of space mid-commit.

use std::sync::atomic::{AtomicI64, Ordering};

use super::Result;
use crate::store::{Store, StoreError, WAL_PREALLOC_BYTES};

/// Refuses writes when the store's disk is nearly full, so that RocksDB
/// itself never runs out of space mid-commit. Free space is what `statvfs`
/// reports minus chunk data still in memtables (it reaches the disk at the
/// next flush). Asked again after a quarter of the headroom (at most
/// [`SPACE_CHECK_BYTES`]) was written.
pub struct SpaceGuard {
    reserve: u64,
    budget: AtomicI64,
}

/// Most bytes written between two free-space checks.
const SPACE_CHECK_BYTES: u64 = 32 << 20;

impl SpaceGuard {
    pub(crate) fn new(reserve: u64) -> Self {
        SpaceGuard {
            reserve,
            budget: AtomicI64::new(0),
        }
    }

    pub(crate) fn check(&self, store: &Store, len: usize) -> Result<()> {
        let len = len as i64;
        if self.budget.fetch_sub(len, Ordering::Relaxed) > len {
            return Ok(());
        }
        let space = store.disk_space()?;
        let total = space.blocks * space.block_size;
        let unflushed = store.unflushed_chunk_bytes()?;
        let avail = (space.available * space.block_size).saturating_sub(unflushed);
        // Small disks keep 5% back, but never less than a restart needs for
        // its first WAL file.
        let reserve = self
            .reserve
            .min(total / 20)
            .max(WAL_PREALLOC_BYTES + (4 << 20));
        if avail < reserve + len as u64 {
            self.budget.store(0, Ordering::Relaxed);
            return Err(StoreError::NoSpace.into());
        }
        let headroom = ((avail - reserve) / 4).min(SPACE_CHECK_BYTES);
        self.budget.store(headroom as i64, Ordering::Relaxed);
        Ok(())
    }
}
