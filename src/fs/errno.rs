//! The one place where errors become errno values for the kernel.
//!
//! Exhaustive on purpose: a new error variant must be given its errno here.
//! EIO is logged with the path it concerns, since the application sees only
//! the number.

use fuser::Errno;

use crate::tree::{StoreError, TreeError};

/// The errno for a tree error.
pub fn errno(e: &TreeError) -> Errno {
    match e {
        TreeError::NotFound => Errno::ENOENT,
        TreeError::Exists => Errno::EEXIST,
        TreeError::NotEmpty => Errno::ENOTEMPTY,
        TreeError::NotDir => Errno::ENOTDIR,
        TreeError::IsDir => Errno::EISDIR,
        TreeError::NameTooLong => Errno::ENAMETOOLONG,
        TreeError::Invalid(_) => Errno::EINVAL,
        TreeError::NoAttr => Errno::ENODATA,
        TreeError::Range => Errno::ERANGE,
        TreeError::NotSupported => Errno::EOPNOTSUPP,
        TreeError::ReadOnly => Errno::EROFS,
        TreeError::NotPermitted => Errno::EPERM,
        TreeError::BadHandle => Errno::EBADF,
        TreeError::Busy => Errno::EBUSY,
        TreeError::Poisoned(_) => Errno::EIO,
        TreeError::Store(s) => store_errno(s),
    }
}

fn store_errno(e: &StoreError) -> Errno {
    match e {
        StoreError::NoSpace => Errno::ENOSPC,
        StoreError::Io { source, .. } => source
            .raw_os_error()
            .map(Errno::from_i32)
            .unwrap_or(Errno::EIO),
        StoreError::Db(_)
        | StoreError::Corrupt(_)
        | StoreError::ChunkMissing(_)
        | StoreError::ChunkCorrupt(_)
        | StoreError::InUse { .. }
        | StoreError::NotAStore { .. }
        | StoreError::NewerFormat { .. }
        | StoreError::ChunkerMismatch { .. }
        | StoreError::SyncFailed { .. } => Errno::EIO,
        StoreError::Exhausted(_) => Errno::ENOSPC,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn representative_errors_map_to_their_errno() {
        assert_eq!(errno(&TreeError::NameTooLong), Errno::ENAMETOOLONG);
        assert_eq!(errno(&TreeError::Store(StoreError::NoSpace)), Errno::ENOSPC);
        assert_eq!(
            errno(&TreeError::Store(StoreError::ChunkCorrupt(
                crate::ids::ChunkId(1)
            ))),
            Errno::EIO
        );
        assert_eq!(errno(&TreeError::ReadOnly), Errno::EROFS);
    }
}
