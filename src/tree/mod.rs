//! The tree layer: the live namespace and the content of its files.
//!
//! It maps POSIX operations (lookup, create, rename, write, commit, ...) onto
//! store records, and owns everything that lives only while the filesystem
//! is mounted: open files, their uncommitted write states, the chunk
//! pipeline and the chunk cache. It knows nothing of FUSE; `fs` calls it.
//!
//! Invariants:
//! * A namespace change (entries, link counts, inode attributes) is one
//!   store transaction, taken under `ns`, so concurrent renames and unlinks
//!   never see each other half done.
//! * Lock order: an open file's state lock, then `ns`, then the leaf maps
//!   (`open`, `handles`). No lock is taken while a leaf map is held.
//! * A file's content changes only by a commit, which writes the new
//!   manifest, the inode and a version record in one batch.

mod autosnap;
mod bloom;
mod browse;
mod builder;
mod commit;
mod events;
mod export;
mod extents;
mod files;
mod gc;
mod history;
mod namespace;
mod pipeline;
mod read_ahead;
mod reader;
mod setattr;
mod snapshot;
mod space;
mod stats;
mod stream_order;
mod verify;
mod version;
mod write_order;
mod writer;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use thiserror::Error;

use crate::chunk::{ChunkParams, Chunker, Successors};
use crate::store::Store;
pub use autosnap::{is_staging, AutoSnapshotOptions};
pub use browse::DirItem;
pub use files::OpenMode;
use files::{FileHandle, OpenFile};
pub use gc::GcStats;
pub use namespace::RenameMode;
pub use pipeline::BATCH_BYTES;
use pipeline::{GcGuard, Pipeline};
pub use read_ahead::ReadAhead;
use reader::ContentReader;
pub use setattr::SetAttr;
pub use snapshot::{compact_utc, rfc3339, SnapshotRequest, RESERVED_SNAPSHOT_NAMES};
pub use verify::{Damaged, VerifyReport};

pub use crate::store::records::{
    FileKind, InodeRecord, PathRecord, SnapshotRecord, Time, VersionRecord,
};
pub use crate::store::Scope;
pub use crate::store::{DiskSpace, Entry, StoreError};
pub use reader::ReadHint;

/// The longest name a directory entry may have.
pub const NAME_MAX: usize = 255;

/// What went wrong in a tree operation.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TreeError {
    /// No such file or directory.
    #[error("no such file or directory")]
    NotFound,
    /// The name is taken.
    #[error("file exists")]
    Exists,
    /// rmdir or rename over a directory that has entries.
    #[error("directory not empty")]
    NotEmpty,
    /// A directory was expected.
    #[error("not a directory")]
    NotDir,
    /// A non-directory was expected.
    #[error("is a directory")]
    IsDir,
    /// A name over [`NAME_MAX`] bytes.
    #[error("file name too long")]
    NameTooLong,
    /// A request that makes no sense.
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    /// No such extended attribute.
    #[error("no such attribute")]
    NoAttr,
    /// The caller's buffer is too small.
    #[error("result too large for the buffer")]
    Range,
    /// Not something ckptfs does.
    #[error("operation not supported")]
    NotSupported,
    /// The mount is read-only.
    #[error("read-only file system")]
    ReadOnly,
    /// Not allowed (hard link to a directory, ...).
    #[error("operation not permitted")]
    NotPermitted,
    /// A file handle that is not open.
    #[error("bad file handle")]
    BadHandle,
    /// The object is in use (a pinned snapshot).
    #[error("device or resource busy")]
    Busy,
    /// An earlier failure made this file's unsaved changes unusable.
    #[error("earlier write failed: {0}")]
    Poisoned(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl TreeError {
    /// A copy that keeps what errno it maps to (errors are not `Clone`).
    pub fn clone_kind(&self) -> TreeError {
        match self {
            TreeError::Store(StoreError::NoSpace) => TreeError::Store(StoreError::NoSpace),
            other => TreeError::Poisoned(other.to_string()),
        }
    }
}

/// Result of tree operations.
pub type Result<T> = std::result::Result<T, TreeError>;

/// How the tree behaves.
#[derive(Clone, Debug)]
pub struct TreeOptions {
    /// Content-defined chunk sizes.
    pub chunk: ChunkParams,
    /// Refuse every change with EROFS.
    pub read_only: bool,
    /// Threads in the chunk pipeline.
    pub workers: usize,
    /// Decoded chunks kept for reads, in bytes.
    pub cache_bytes: u64,
    /// Writes fail with ENOSPC once the store's disk has less free space.
    pub reserve_bytes: u64,
    /// How long a snapshot waits for files being written to be closed.
    pub snapshot_wait: std::time::Duration,
}

impl Default for TreeOptions {
    fn default() -> Self {
        TreeOptions {
            chunk: ChunkParams::default(),
            read_only: false,
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .clamp(2, 8),
            cache_bytes: 64 << 20,
            reserve_bytes: 64 << 20,
            snapshot_wait: std::time::Duration::from_secs(60),
        }
    }
}

/// What file content work needs: the store, the pipeline, the reader.
pub struct Data {
    store: Arc<Store>,
    pipeline: Pipeline,
    reader: ContentReader,
    params: ChunkParams,
    /// What followed each recent chunk, shared by every file's chunker.
    successors: Arc<Successors>,
}

impl Data {
    /// A chunker for one stream of new content.
    fn chunker(&self) -> Chunker {
        Chunker::guided(self.params, self.successors.clone())
    }
}

/// The live tree over an open store.
pub struct Tree {
    data: Data,
    opts: TreeOptions,
    /// Serializes namespace changes (see the module invariants).
    ns: Mutex<()>,
    open: Mutex<HashMap<crate::ids::Ino, Arc<OpenFile>>>,
    /// Kernel lookup counts of live inodes (FUSE `forget` lowers them).
    lookups: Mutex<HashMap<crate::ids::Ino, u64>>,
    handles: RwLock<HashMap<u64, FileHandle>>,
    next_handle: AtomicU64,
    /// Files being created: their entry may be in the namespace before
    /// they count as being written (see `Tree::create`).
    creating: std::sync::atomic::AtomicUsize,
    space: space::SpaceGuard,
    gc_guard: Arc<GcGuard>,
    gc_lock: Mutex<()>,
    stats_cache: Mutex<Option<(u64, std::time::Instant, serde_json::Value)>>,
    auto: Mutex<Option<Arc<autosnap::AutoSnapshots>>>,
    /// Raised by every commit, snapshot change and GC: cached answers
    /// computed at an older value are stale.
    generation: AtomicU64,
    events: events::EventLog,
    /// Commits of the last minute: (when, bytes).
    recent_commits: Mutex<std::collections::VecDeque<(std::time::Instant, u64)>>,
    /// The last GC: when, and what it did.
    last_gc: Mutex<Option<(Time, GcStats)>>,
    /// Called after each snapshot is committed (replication starts here).
    snapshot_hooks: Mutex<Vec<SnapshotHook>>,
}

/// A callback run after each snapshot is taken.
pub type SnapshotHook = Box<dyn Fn(&SnapshotRecord) + Send + Sync>;

impl Tree {
    /// Serves the tree of `store`.
    pub fn new(store: Arc<Store>, opts: TreeOptions) -> Result<Tree> {
        let store_root = store.root().to_path_buf();
        let gc_guard = Arc::new(GcGuard::default());
        let pipeline = Pipeline::start(
            store.clone(),
            gc_guard.clone(),
            opts.workers,
            opts.workers * 4,
        )
        .map_err(|e| StoreError::io(store.root(), e))?;
        let reader = ContentReader::new(store.clone(), opts.cache_bytes);
        let tree = Tree {
            data: Data {
                store,
                pipeline,
                reader,
                params: opts.chunk,
                successors: Arc::default(),
            },
            space: space::SpaceGuard::new(opts.reserve_bytes),
            opts,
            ns: Mutex::new(()),
            open: Mutex::new(HashMap::new()),
            lookups: Mutex::new(HashMap::new()),
            handles: RwLock::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            creating: std::sync::atomic::AtomicUsize::new(0),
            gc_guard,
            gc_lock: Mutex::new(()),
            stats_cache: Mutex::new(None),
            auto: Mutex::new(None),
            snapshot_hooks: Mutex::new(Vec::new()),
            generation: AtomicU64::new(0),
            events: events::EventLog::new(store_root.as_path()),
            recent_commits: Mutex::new(std::collections::VecDeque::new()),
            last_gc: Mutex::new(None),
        };
        if !tree.opts.read_only {
            tree.remove_orphans()?;
        }
        Ok(tree)
    }

    /// The store under the tree.
    pub fn store(&self) -> &Arc<Store> {
        &self.data.store
    }

    /// True when the tree refuses changes.
    pub fn read_only(&self) -> bool {
        self.opts.read_only
    }

    fn writable(&self) -> Result<()> {
        if self.opts.read_only {
            Err(TreeError::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// Logs what the chunk pipeline did since the mount.
    pub fn log_summary(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &self.data.pipeline.counters;
        let (guessed, rejected) = self.data.successors.counts();
        log::info!(
            "stored {} new chunks ({} MiB raw, {} MiB on disk), {} deduplicated, {} zero chunks as holes, {} cuts guessed ({} guesses rejected)",
            c.stored_chunks.load(Relaxed),
            c.stored_raw_bytes.load(Relaxed) >> 20,
            c.stored_bytes.load(Relaxed) >> 20,
            c.dedup_chunks.load(Relaxed),
            c.zero_chunks.load(Relaxed),
            guessed,
            rejected,
        );
    }

    /// Appends an event to the store's event log (`.ckpt/events`).
    pub fn emit_event(&self, kind: &str, fields: serde_json::Value) {
        self.events.emit(kind, fields);
    }

    /// Length of the event log.
    pub fn events_len(&self) -> u64 {
        self.events.size()
    }

    /// Reads the event log.
    pub fn read_events(&self, offset: u64, len: u32) -> Vec<u8> {
        self.events.read(offset, len)
    }

    /// Marks cached answers (stats) stale.
    pub(crate) fn note_change(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Flushes and finishes background work before a clean stop.
    pub fn settle(&self, timeout: std::time::Duration) -> Result<()> {
        Ok(self.data.store.settle(timeout)?)
    }

    /// Makes everything committed so far durable.
    pub fn sync(&self) -> Result<()> {
        Ok(self.data.store.sync()?)
    }

    /// Makes the versions closed since the last sync durable, if any
    /// (the daemon's background sync).
    pub fn sync_closed(&self) -> Result<()> {
        if self.data.store.has_pending() {
            let started = std::time::Instant::now();
            self.data.store.background_sync()?;
            log::info!(
                "background sync: the versions closed since the last sync are durable ({} ms)",
                started.elapsed().as_millis()
            );
        }
        Ok(())
    }

    /// Space on the store's disk, for statfs: available is what writes
    /// through the mount may still take before they get ENOSPC.
    pub fn disk_space(&self) -> Result<DiskSpace> {
        self.space.statfs(&self.data.store)
    }
}

fn check_name(name: &[u8]) -> Result<()> {
    if name.len() > NAME_MAX {
        return Err(TreeError::NameTooLong);
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(TreeError::Invalid("bad file name"));
    }
    Ok(())
}

/// A tree over a new store in a temporary directory, for unit tests; the
/// directory lives as long as the returned guard.
#[cfg(test)]
pub(crate) fn test_tree() -> (tempfile::TempDir, Arc<Tree>) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Arc::new(Store::open(dir.path()).expect("store"));
    let tree = Tree::new(store, TreeOptions::default()).expect("tree");
    (dir, Arc::new(tree))
}
