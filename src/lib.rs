//! ckptfs: a FUSE filesystem for machine-learning checkpoints.
//!
//! A training job writes checkpoint files into the mount with ordinary POSIX
//! calls. Every file version is cut into content-defined chunks
//! ([`chunk`]), deduplicated by their xxh3-128, compressed with lz4 when it
//! pays, and stored in an embedded RocksDB database ([`store`]). The live
//! namespace and the write path ([`tree`]) sit on the store, and the FUSE
//! edge ([`fs`]) maps kernel requests onto the tree.
//!
//! # One `write()` down to RocksDB
//!
//! 1. `fs::CkptFs::write` receives the kernel's request (up to 1 MiB) and
//!    calls `Tree::write` with the handle.
//! 2. The file's `WriteState` is streaming: the bytes go into a
//!    `chunk::Chunker`, which cuts complete chunks once it holds 4x the
//!    average size, so boundaries do not depend on write sizes, and hashes
//!    each one. Where the chunk that followed the previous one last time
//!    fits (`chunk::Successors`), the cut is taken without searching.
//! 3. Each chunk is queued to the pipeline (bounded; a writer faster than
//!    the disk blocks here). A worker skips it if
//!    `chunk_index` already has the id, else lz4-encodes it and writes the
//!    value (BlobDB) and index entry in one batch.
//! 4. Results return in file order into a `ManifestBuilder`, which writes
//!    full manifest segments as they fill.
//! 5. On `close()` (FUSE flush) the tail is chunked, the pipeline drained,
//!    and the last segment, the inode and a version record are written in
//!    one atomic batch: the version is committed.
//!
//! ```
//! use ckptfs::chunk::{Chunker, ChunkParams};
//! let mut chunker = Chunker::new(ChunkParams::default());
//! let mut sizes = Vec::new();
//! chunker.push(&vec![1u8; 200_000], |c| sizes.push(c.data.len()));
//! chunker.finish(|c| sizes.push(c.data.len()));
//! assert_eq!(sizes.iter().sum::<usize>(), 200_000);
//! ```

pub mod chunk;
pub mod cli;
pub mod daemon;
pub mod fs;
pub mod ids;
pub mod remote;
pub mod retention;
pub mod store;
pub mod tree;
