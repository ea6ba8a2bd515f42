//! Opening a store directory: the format marker, the single-owner lock and
//! the RocksDB options (BlobDB for chunk values, bloom filters for lookups).
//!
//! ```text
//! STORE/CKPTFS     "ckptfs store format N": refuses foreign and newer stores
//! STORE/lock       flock'ed by the daemon that owns the store; holds its pid
//! STORE/db/        the RocksDB database
//! STORE/packs/     pack files: the chunks of large files (see packs.rs)
//! STORE/staging/   files of out-of-order writes, chunked at commit
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use rocksdb::{BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBCompressionType, Options, DB};

use super::schema::{
    ALL_CFS, CF_CHUNKS, CF_CHUNKS_1, CF_CHUNK_INDEX, CF_META, META_PACK_LEN_PREFIX,
};
use super::StoreError;

/// The store format this build writes. It reads every earlier one.
///
/// - 1: chunks stored raw or as lz4 blocks.
/// - 2: chunks may also be lane-coded (`chunk::lanes`). A format-1 store is
///   marked 2 when this build opens it, so that older builds refuse it
///   instead of failing on the first lane-coded chunk.
/// - 3: chunks indexed before their pack was synced are also listed in
///   `unsynced` (`unsynced.rs`), so the open after a crash checks those
///   alone. Older builds would index chunks without listing them: they
///   refuse a format-3 store.
pub const FORMAT_VERSION: u32 = 3;
const MARKER: &str = "CKPTFS";
const MARKER_PREFIX: &str = "ckptfs store format ";

/// The directory layout of a store, and the lock that keeps it ours.
pub struct StoreDir {
    /// The store directory.
    pub root: PathBuf,
    /// Holds the flock for as long as the store is open.
    _lock: Flock<File>,
}

impl StoreDir {
    /// Where RocksDB lives.
    pub fn db_path(&self) -> PathBuf {
        self.root.join("db")
    }

    /// Where pack files live.
    pub fn packs_path(&self) -> PathBuf {
        self.root.join("packs")
    }

    /// Where staging files of out-of-order writes live.
    pub fn staging_path(&self) -> PathBuf {
        self.root.join("staging")
    }
}

/// Checks the marker (creating the store when the directory is new or
/// empty) and takes the lock.
pub fn claim(root: &Path) -> Result<StoreDir, StoreError> {
    let root = root.to_path_buf();
    if !root.exists() {
        fs::create_dir_all(&root).map_err(|e| StoreError::io(&root, e))?;
    }
    if !root.is_dir() {
        return Err(StoreError::NotAStore {
            path: root,
            why: "it is not a directory".into(),
        });
    }
    let marker = root.join(MARKER);
    let mut found = FORMAT_VERSION;
    match fs::read_to_string(&marker) {
        Ok(text) => found = check_marker(&root, &text)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A marker left half-written by a crash does not count.
            let mut entries = fs::read_dir(&root)
                .map_err(|e| StoreError::io(&root, e))?
                .filter(|e| !e.as_ref().is_ok_and(|e| e.file_name() == "CKPTFS.new"));
            if entries.next().is_some() {
                return Err(StoreError::NotAStore {
                    path: root,
                    why: format!("the directory is not empty and has no {MARKER} file"),
                });
            }
            write_marker(&marker)?;
        }
        Err(e) => return Err(StoreError::io(&marker, e)),
    }
    let lock = lock(&root)?;
    if found < FORMAT_VERSION {
        write_marker(&marker)?;
        log::info!(
            "{}: store format {found} upgraded to {FORMAT_VERSION} (older ckptfs builds will refuse it)",
            root.display()
        );
    }
    let dir = StoreDir { root, _lock: lock };
    let staging = dir.staging_path();
    // Staging files only matter while their writer's handle is open: after
    // a restart every one of them is garbage.
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(|e| StoreError::io(&staging, e))?;
    }
    fs::create_dir_all(&staging).map_err(|e| StoreError::io(&staging, e))?;
    Ok(dir)
}

/// The format version the marker names, if this build can open it.
fn check_marker(root: &Path, text: &str) -> Result<u32, StoreError> {
    let version = text
        .trim()
        .strip_prefix(MARKER_PREFIX)
        .and_then(|v| v.parse::<u32>().ok())
        .ok_or_else(|| StoreError::NotAStore {
            path: root.to_path_buf(),
            why: format!("{MARKER} does not hold a ckptfs format line"),
        })?;
    if version > FORMAT_VERSION {
        return Err(StoreError::NewerFormat {
            path: root.to_path_buf(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    Ok(version)
}

/// Writes the marker atomically (a temp file renamed over it, then the
/// directory synced): a crash leaves the old marker or the new one.
fn write_marker(marker: &Path) -> Result<(), StoreError> {
    let temp = marker.with_extension("new");
    let mut f = File::create(&temp).map_err(|e| StoreError::io(&temp, e))?;
    f.write_all(format!("{MARKER_PREFIX}{FORMAT_VERSION}\n").as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| StoreError::io(&temp, e))?;
    fs::rename(&temp, marker).map_err(|e| StoreError::io(marker, e))?;
    let dir = marker.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

fn lock(root: &Path) -> Result<Flock<File>, StoreError> {
    let path = root.join("lock");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| StoreError::io(&path, e))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut locked) => {
            let pid = std::process::id().to_string();
            locked
                .set_len(0)
                .and_then(|_| locked.rewind())
                .and_then(|_| locked.write_all(pid.as_bytes()))
                .map_err(|e| StoreError::io(&path, e))?;
            Ok(locked)
        }
        Err((mut file, errno)) if errno == nix::errno::Errno::EWOULDBLOCK => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            Err(StoreError::InUse {
                path: root.to_path_buf(),
                holder: holder.trim().to_string(),
            })
        }
        Err((_, errno)) => Err(StoreError::io(&path, std::io::Error::from(errno))),
    }
}

/// Memtable size of the chunk column families, the largest of any CF.
const CHUNK_WRITE_BUFFER: usize = 16 << 20;

/// Disk space a new WAL file takes at once (RocksDB preallocates 1.1x the
/// largest write buffer): the space guard never lets free space fall below.
pub const WAL_PREALLOC_BYTES: u64 = CHUNK_WRITE_BUFFER as u64 * 11 / 10;

/// Opens (or creates) the RocksDB database with ckptfs's options.
pub fn open_db(path: &Path) -> Result<DB, StoreError> {
    let cache = Cache::new_lru_cache(32 << 20);
    let mut db_opts = Options::default();
    db_opts.create_if_missing(true);
    db_opts.create_missing_column_families(true);
    // Flushes of the chunk shards run in parallel (see schema::CHUNK_SHARDS).
    // RocksDB gives a quarter of the jobs to flushes: 2 flush threads.
    db_opts.set_max_background_jobs(8);
    db_opts.set_keep_log_file_num(2);
    db_opts.set_max_log_file_size(1 << 20);
    db_opts.set_log_level(rocksdb::LogLevel::Warn);
    db_opts.set_max_total_wal_size(256 << 20);
    db_opts.set_compression_type(DBCompressionType::None);
    // Chunks of a small file sit next to each other in blob files, so reads
    // are sequential: let the kernel read ahead (the default FADV_RANDOM
    // made every 16 KiB chunk its own disk round trip: 180 MB/s cold).
    db_opts.set_advise_random_on_open(false);
    // The chunk index's hash memtable takes one writer at a time.
    db_opts.set_allow_concurrent_memtable_write(false);

    let cfs = ALL_CFS.iter().map(|name| {
        let mut o = Options::default();
        o.set_compression_type(DBCompressionType::None);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_bloom_filter(10.0, false);
        o.set_block_based_table_factory(&table);
        match *name {
            CF_CHUNKS | CF_CHUNKS_1 => {
                // Chunk values go to blob files: written once at flush, never
                // rewritten by compaction (the LSM only moves small blob refs).
                o.set_enable_blob_files(true);
                o.set_min_blob_size(256);
                o.set_blob_file_size(256 << 20);
                // Blob GC relocates live blobs during compaction: only worth
                // it once chunks are deleted, so GC turns it on when needed.
                o.set_enable_blob_gc(false);
                o.set_write_buffer_size(CHUNK_WRITE_BUFFER);
                o.set_max_write_buffer_number(4);
            }
            CF_CHUNK_INDEX => {
                o.set_write_buffer_size(CHUNK_WRITE_BUFFER);
                // Most dedup checks of fresh data miss: a bloom filter on
                // the memtable answers them without a skiplist search.
                o.set_memtable_whole_key_filtering(true);
                o.set_memtable_prefix_bloom_ratio(0.1);
                // Ids are uniform hashes: a hash table of short lists by id
                // prefix inserts and finds in one probe, where the default
                // skiplist took a cache miss per level (5% of a fresh
                // save's CPU). 2 MiB of buckets per memtable; listing the
                // index whole asks for total order (`for_each_chunk`).
                o.set_prefix_extractor(rocksdb::SliceTransform::create_fixed_prefix(8));
                o.set_memtable_factory(rocksdb::MemtableFactory::HashLinkList {
                    bucket_count: 1 << 18,
                });
            }
            _ => {
                o.set_write_buffer_size(8 << 20);
            }
        }
        ColumnFamilyDescriptor::new(*name, o)
    });
    // RocksDB preallocates each WAL file with 1.1x the largest write buffer
    // of any column family. The unused `default` CF would otherwise come in
    // with rust-rocksdb's defaults (64 MiB, so a 70 MiB WAL file); small
    // buffers keep it near 18 MiB (see WAL_PREALLOC_BYTES): the space a
    // restart needs on a full disk.
    let mut default_cf = Options::default();
    default_cf.set_write_buffer_size(1 << 20);
    let cfs = cfs.chain([ColumnFamilyDescriptor::new(
        rocksdb::DEFAULT_COLUMN_FAMILY_NAME,
        default_cf,
    )]);
    DB::open_cf_descriptors(&db_opts, path, cfs).map_err(StoreError::from)
}

/// Calls `f` with the rest of every `meta` key under `prefix`, and its
/// value, in key order.
pub(super) fn for_each_meta(
    db: &DB,
    prefix: &[u8],
    mut f: impl FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut it = db.raw_iterator_cf(super::cf(db, CF_META));
    it.seek(prefix);
    while let (Some(key), Some(value)) = (it.key(), it.value()) {
        let Some(rest) = key.strip_prefix(prefix) else {
            break;
        };
        f(rest, value)?;
        it.next();
    }
    Ok(it.status()?)
}

/// The durable length of every pack, as the last commits recorded them.
pub fn sealed_pack_lengths(db: &DB) -> Result<std::collections::HashMap<u32, u64>, StoreError> {
    let mut out = std::collections::HashMap::new();
    for_each_meta(db, META_PACK_LEN_PREFIX, |id, value| {
        let id: [u8; 4] = id
            .try_into()
            .map_err(|_| StoreError::Corrupt("pack length key".into()))?;
        out.insert(u32::from_be_bytes(id), super::decode_u64(value)?);
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_format_one_store_is_marked_with_this_format_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        drop(crate::store::Store::open(dir.path()).unwrap());
        let marker = dir.path().join(MARKER);
        fs::write(&marker, format!("{MARKER_PREFIX}1\n")).unwrap();
        drop(crate::store::Store::open(dir.path()).unwrap());
        assert_eq!(
            fs::read_to_string(&marker).unwrap(),
            format!("{MARKER_PREFIX}{FORMAT_VERSION}\n")
        );
        assert!(!dir.path().join("CKPTFS.new").exists());
    }

    #[test]
    fn a_marker_left_half_written_does_not_make_an_empty_dir_foreign() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("CKPTFS.new"), "ckptfs sto").unwrap();
        drop(crate::store::Store::open(dir.path()).unwrap());
        let text = fs::read_to_string(dir.path().join(MARKER)).unwrap();
        assert_eq!(text, format!("{MARKER_PREFIX}{FORMAT_VERSION}\n"));
    }
}
