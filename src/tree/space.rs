//! The free-space guard: writes fail with ENOSPC before RocksDB itself
//! could run out of space mid-commit, and statfs reports the same room.

use std::sync::atomic::{AtomicI64, Ordering};

use super::Result;
use crate::store::{DiskSpace, Store, StoreError, WAL_PREALLOC_BYTES};

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

/// The store's disk as writers through the mount see it.
struct Room {
    /// What `statvfs` reports for the store's disk.
    disk: DiskSpace,
    /// Bytes that new file data may still take: free space less unflushed
    /// chunk data and the reserve. Zero when the guard refuses writes.
    writable: u64,
}

impl SpaceGuard {
    pub(crate) fn new(reserve: u64) -> Self {
        SpaceGuard {
            reserve,
            budget: AtomicI64::new(0),
        }
    }

    fn room(&self, store: &Store) -> Result<Room> {
        let disk = store.disk_space()?;
        let total = disk.blocks * disk.block_size;
        let unflushed = store.unflushed_chunk_bytes()?;
        let avail = (disk.available * disk.block_size).saturating_sub(unflushed);
        // Small disks keep 5% back, but never less than a restart needs for
        // its first WAL file.
        let reserve = self
            .reserve
            .min(total / 20)
            .max(WAL_PREALLOC_BYTES + (4 << 20));
        Ok(Room {
            disk,
            writable: avail.saturating_sub(reserve),
        })
    }

    pub(crate) fn check(&self, store: &Store, len: usize) -> Result<()> {
        let len = len as i64;
        if self.budget.fetch_sub(len, Ordering::Relaxed) > len {
            return Ok(());
        }
        let writable = self.room(store)?.writable;
        if writable < len as u64 {
            self.budget.store(0, Ordering::Relaxed);
            return Err(StoreError::NoSpace.into());
        }
        let headroom = (writable / 4).min(SPACE_CHECK_BYTES);
        self.budget.store(headroom as i64, Ordering::Relaxed);
        Ok(())
    }

    /// The store's disk for statfs: available blocks are those a write
    /// through the mount may still take (as ext4 leaves its root reserve
    /// out of `f_bavail`), so `df` on the mount never promises room that
    /// writes would be refused.
    pub(crate) fn statfs(&self, store: &Store) -> Result<DiskSpace> {
        let Room { mut disk, writable } = self.room(store)?;
        disk.available = disk.available.min(writable / disk.block_size.max(1));
        Ok(disk)
    }
}
