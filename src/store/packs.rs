//! Pack files: ckptfs's own append-only files for the chunks of large
//! files, indexed by `chunk_index` (pack number, offset, length).
//!
//! ```text
//! STORE/packs/0000002a.pack   [record][record]...
//! record = [chunk id: 16 bytes][stored len: u32 LE][codec value]
//! ```
//!
//! A batch of a stream's chunks is written with one `pwritev`, and read
//! back with one `pread`; a sequential reader reads runs of neighbouring
//! records with one `pread` per run. Several packs are open for appending
//! at a time; each stream (the chunks of one file version) keeps one of
//! them while it writes, so a file's records sit side by side, in file
//! order (the chunk pipeline appends a stream's batches in order), even
//! when several files are written at once (8 ranks writing shards). A
//! pack's length only covers completed writes.
//!
//! Durability: a commit that names packed chunks first calls
//! [`Packs::sync`], which `fdatasync`s every pack written since the last
//! sync and returns the synced lengths; the store records them (`pack_len`
//! keys in `meta`) in the WAL before the commit (with lazy durability, the
//! store's next sync does). At the next open, the records past a pack's
//! recorded length are checked against their ids, and the pack is cut back
//! past the last good one; index entries that point past its durable length
//! are treated as absent ([`Packs::is_durable`]), so a power loss cannot
//! leave a dedup hit on a chunk whose bytes never reached the disk. Packs of
//! earlier sessions are never appended to. Once a sync fails, every later
//! sync of the session fails too ([`Packs::sync_file`]).
//!
//! Writeback: appends go to the page cache. With eager writeback on,
//! every 8 MiB a pack grows starts that stretch's writeback and drops the
//! stretch before it ([`start_writeback`]), so a sync soon after (an
//! fsync, a rename that publishes a version, every close with
//! `--sync-interval 0`) finds little left to write. The store turns it on
//! once durability is asked for ([`crate::store::Store::sync`]); until
//! then a save leaves the writing to the next background sync, which runs
//! while the job computes (on 2 cores, writeback during a save took a
//! fifth of its speed), and every sync drops the pages it cleaned.
//!
//! Blocks: a pack taking appends has its blocks reserved a step ahead of
//! them ([`OpenPack::reserve_for`]); the reserve is given back when the
//! pack stops taking appends (full, or the store closed), and by the next
//! open after a crash.
//!
//! Space: garbage collection punches holes over dead records
//! ([`Packs::punch`]), so the disk gets space back without rewriting packs,
//! and deletes packs left without a live record ([`Packs::remove_dead`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::IoSlice;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use nix::fcntl::{fallocate, posix_fadvise, FallocateFlags, PosixFadviseAdvice};
use nix::sys::uio::pwritev;
use parking_lot::{Mutex, RwLock};

use super::buffers::ReadBuf;
use super::{Result, StoreError};

/// Bytes in front of every record: chunk id and stored length.
pub const RECORD_HEADER: usize = 20;
/// A pack is closed for appending once it holds this much.
const PACK_TARGET: u64 = 512 << 20;
/// Packs open for appending at once: streams (files) are spread over
/// them, so concurrent writers rarely share one.
const APPENDERS: usize = 8;
/// Every this many bytes appended to a pack, writeback of the last such
/// stretch is started, and the one before is dropped from the page cache.
const WRITEBACK_STEP: u64 = 8 << 20;
/// A pack taking appends has its disk blocks reserved this far ahead
/// ([`OpenPack::reserve_for`]).
const RESERVE_STEP: u64 = 8 << 20;
/// Blocks past a pack's end that open leaves alone (ext4 counts the
/// blocks of a file's extent tree too).
const RESERVE_SLACK: u64 = 64 << 10;
const SUFFIX: &str = "pack";

/// Where a packed chunk's record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackLocation {
    /// Pack number.
    pub pack: u32,
    /// Offset of the record (its header) in the pack.
    pub offset: u64,
    /// Length of the whole record, header included.
    pub len: u32,
}

impl PackLocation {
    pub(crate) fn end(&self) -> u64 {
        self.offset + self.len as u64
    }
}

/// What [`Packs::appending`] saw: packs that may hold records not yet
/// indexed.
pub struct Appending {
    open: HashSet<u32>,
    from: u32,
}

struct OpenPack {
    id: u32,
    file: Arc<File>,
    len: u64,
    dirty: bool,
    /// Blocks are reserved up to here (at least `len`).
    reserved: u64,
}

impl OpenPack {
    /// Reserves the pack's blocks up to `end`, a [`RESERVE_STEP`] at a
    /// time, before an append writes there (`fallocate` with
    /// `FALLOC_FL_KEEP_SIZE`: the length stays that of the records). ext4
    /// then writes into blocks it already has, instead of accounting a
    /// delayed allocation for every page written: a fresh save's daemon
    /// spent about a fourteenth of its CPU on that. A reservation that
    /// fails (a full disk, a filesystem without `fallocate`) only leaves
    /// the write to allocate its blocks as before: its error is returned
    /// for the log, and the next step is tried when an append reaches it.
    fn reserve_for(&mut self, end: u64) -> nix::Result<()> {
        if end <= self.reserved {
            return Ok(());
        }
        let to = end.div_ceil(RESERVE_STEP) * RESERVE_STEP;
        let from = std::mem::replace(&mut self.reserved, to);
        fallocate(
            self.file.as_ref(),
            FallocateFlags::FALLOC_FL_KEEP_SIZE,
            from as libc::off_t,
            (to - from) as libc::off_t,
        )
    }

    /// Gives back the blocks reserved past the records, once the pack
    /// takes no more appends (a truncate to its own length frees them).
    fn release_reserve(&self, path: &Path) {
        if self.reserved > self.len {
            release_past_end(&self.file, self.len, path);
        }
    }
}

/// Frees the blocks of `file` past `len`, its length.
fn release_past_end(file: &File, len: u64, path: &Path) {
    if let Err(e) = file.set_len(len) {
        log::warn!("{}: freeing blocks past its end: {e}", path.display());
    }
}

/// The set of pack files of one store.
pub struct Packs {
    dir: PathBuf,
    /// Packs numbered below this are from earlier sessions.
    first_of_session: u32,
    /// Durable length of each pack of an earlier session.
    sealed: HashMap<u32, u64>,
    next_id: AtomicU32,
    appenders: Vec<Mutex<Option<OpenPack>>>,
    /// Which stream each appender serves.
    owners: Mutex<Owners>,
    /// Packs closed for appending that still need a sync.
    retired: Mutex<Vec<OpenPack>>,
    files: RwLock<HashMap<u32, Arc<File>>>,
    sync_lock: Mutex<()>,
    dir_dirty: AtomicBool,
    /// Whether appends start their writeback at once ([`start_writeback`]);
    /// otherwise the next sync writes them.
    eager_writeback: AtomicBool,
    /// The pack and the error of a sync that failed in this session: every
    /// sync after it fails too (see [`Packs::sync_file`]).
    sync_failed: Mutex<Option<(PathBuf, String)>>,
    /// Packs longer than their durable length at open: path, length,
    /// durable length.
    leftovers: Vec<(PathBuf, u64, u64)>,
}

/// The stream each appender served last, and when.
#[derive(Default)]
struct Owners {
    tick: u64,
    slots: [(Option<u64>, u64); APPENDERS],
}

impl Owners {
    /// The appender for `stream`: the one it used last, else the one idle
    /// longest, so that up to [`APPENDERS`] files written at once each get
    /// a pack of their own and their records do not interleave.
    fn slot_for(&mut self, stream: u64) -> usize {
        self.tick += 1;
        let slots = &mut self.slots;
        let i = match slots.iter().position(|&(owner, _)| owner == Some(stream)) {
            Some(i) => i,
            None => (0..APPENDERS).min_by_key(|&i| slots[i].1).unwrap_or(0),
        };
        slots[i] = (Some(stream), self.tick);
        i
    }
}

fn pack_name(id: u32) -> String {
    format!("{id:08x}.{SUFFIX}")
}

fn pack_id(path: &Path) -> Option<u32> {
    if path.extension()? != SUFFIX {
        return None;
    }
    u32::from_str_radix(path.file_stem()?.to_str()?, 16).ok()
}

impl Packs {
    /// Opens `dir` (creating it). Packs longer than their recorded durable
    /// length (`sealed`; none recorded means 0) are noted; the store purges
    /// the index entries past those lengths, then calls
    /// [`Packs::cut_leftovers`].
    pub fn open(dir: PathBuf, sealed: HashMap<u32, u64>) -> Result<Packs> {
        fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        let mut highest = sealed.keys().copied().max().unwrap_or(0);
        let mut leftovers = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| StoreError::io(&dir, e))? {
            let path = entry.map_err(|e| StoreError::io(&dir, e))?.path();
            let Some(id) = pack_id(&path) else { continue };
            highest = highest.max(id);
            let meta = fs::metadata(&path).map_err(|e| StoreError::io(&path, e))?;
            let len = meta.len();
            let durable = sealed.get(&id).copied().unwrap_or(0);
            if len > durable || durable == 0 {
                leftovers.push((path, len, durable));
            } else if meta.blocks() * 512 > len.next_multiple_of(4096) + RESERVE_SLACK {
                // Blocks reserved past the end by a session that did not
                // close it (a crash): give them back.
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| StoreError::io(&path, e))?;
                release_past_end(&file, len, &path);
            }
        }
        let first = highest.saturating_add(1);
        Ok(Packs {
            dir,
            first_of_session: first,
            sealed,
            next_id: AtomicU32::new(first),
            appenders: (0..APPENDERS).map(|_| Mutex::new(None)).collect(),
            owners: Mutex::new(Owners::default()),
            retired: Mutex::new(Vec::new()),
            files: RwLock::new(HashMap::new()),
            sync_lock: Mutex::new(()),
            dir_dirty: AtomicBool::new(false),
            eager_writeback: AtomicBool::new(false),
            sync_failed: Mutex::new(None),
            leftovers,
        })
    }

    /// True when a crash left bytes past a pack's durable length: index
    /// entries may point there and must be purged before
    /// [`Packs::cut_leftovers`].
    pub fn has_leftovers(&self) -> bool {
        !self.leftovers.is_empty()
    }

    /// Cuts every pack back to its durable length (removes packs that no
    /// commit names): what is past it did not survive the crash whole.
    pub fn cut_leftovers(&self) -> Result<()> {
        for (path, len, durable) in &self.leftovers {
            if *durable == 0 {
                log::info!("{}: no commit names it; removed", path.display());
                fs::remove_file(path).map_err(|e| StoreError::io(path, e))?;
                continue;
            }
            log::info!(
                "{}: dropping {} bytes that did not survive the crash whole",
                path.display(),
                len - durable
            );
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| StoreError::io(path, e))?;
            f.set_len(*durable)
                .and_then(|_| f.sync_all())
                .map_err(|e| StoreError::io(path, e))?;
        }
        Ok(())
    }

    /// Makes the records up to `end` of an earlier session's pack durable
    /// (checked at open by `Store::recover_packs`): the cut keeps them.
    pub fn extend_durable(&mut self, id: u32, end: u64) {
        let path = self.path(id);
        let durable = self.sealed.entry(id).or_default();
        *durable = (*durable).max(end);
        for (p, _, d) in &mut self.leftovers {
            if *p == path {
                *d = (*d).max(end);
            }
        }
        self.leftovers.retain(|(_, len, d)| d < len);
    }

    /// Fails with [`StoreError::SyncFailed`] once a sync has failed.
    fn no_failed_sync(&self) -> Result<()> {
        match self.sync_failed.lock().clone() {
            Some((path, cause)) => Err(StoreError::SyncFailed { path, cause }),
            None => Ok(()),
        }
    }

    /// `fdatasync`s one pack.
    pub fn sync_pack(&self, id: u32) -> Result<()> {
        self.sync_file(id, self.file(id)?.as_ref())
    }

    /// `fdatasync`s pack `id`, open as `file`. Once a sync has failed,
    /// this and every later sync fail: the kernel may have dropped the
    /// pages it could not write (marking them clean), and would report a
    /// retry as a success, so a retry could record as durable bytes that
    /// never reached the disk. The pending commits stay pending, and the
    /// next open checks the records past each pack's durable length and
    /// rolls back what names a lost one.
    fn sync_file(&self, id: u32, file: &File) -> Result<()> {
        self.no_failed_sync()?;
        file.sync_data().map_err(|e| {
            let path = self.path(id);
            log::error!(
                "{}: sync failed: {e}; no later sync of this session can make anything durable",
                path.display()
            );
            *self.sync_failed.lock() = Some((path.clone(), e.to_string()));
            StoreError::io(&path, e)
        })
    }

    fn path(&self, id: u32) -> PathBuf {
        self.dir.join(pack_name(id))
    }

    /// True when the record's bytes are known to be on disk or were written
    /// by this process (index entries past a pack's durable length are
    /// leftovers of a crash).
    pub fn is_durable(&self, loc: PackLocation) -> bool {
        loc.pack >= self.first_of_session
            || self
                .sealed
                .get(&loc.pack)
                .is_some_and(|&len| loc.end() <= len)
    }

    fn new_pack(&self) -> Result<OpenPack> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let path = self.path(id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        let file = Arc::new(file);
        self.files.write().insert(id, file.clone());
        self.dir_dirty.store(true, Ordering::SeqCst);
        log::debug!("{}: new pack", path.display());
        Ok(OpenPack {
            id,
            file,
            len: 0,
            dirty: false,
            reserved: 0,
        })
    }

    /// Appends one record, given as consecutive parts, then calls `index`
    /// with its location while the pack is still held: once a pack stops
    /// taking appends, every record in it is indexed (see
    /// [`Packs::appending`]). Returns the location.
    #[cfg(test)]
    pub fn append(
        &self,
        stream: u64,
        parts: &[&[u8]],
        index: impl FnOnce(PackLocation) -> Result<()>,
    ) -> Result<PackLocation> {
        let mut found = None;
        self.append_records(stream, &[parts], |locations| {
            found = locations.first().copied();
            match found {
                Some(loc) => index(loc),
                None => Ok(()),
            }
        })?;
        found.ok_or_else(|| StoreError::Db("no record appended".into()))
    }

    /// Appends records side by side, in order, with one write (each record
    /// given as consecutive parts), then calls `index` with their locations
    /// while the pack is still held, as [`Packs::append`] does.
    pub fn append_records<'a, P: AsRef<[&'a [u8]]>>(
        &self,
        stream: u64,
        records: &[P],
        index: impl FnOnce(&[PackLocation]) -> Result<()>,
    ) -> Result<()> {
        let record_lens: Vec<u64> = records
            .iter()
            .map(|parts| parts.as_ref().iter().map(|p| p.len() as u64).sum())
            .collect();
        let total: u64 = record_lens.iter().sum();
        // One appender per stream: a file's records end up side by side.
        let mut slot = self.appenders[self.owners.lock().slot_for(stream)].lock();
        let full = slot
            .as_ref()
            .is_some_and(|p| p.len > 0 && p.len + total > PACK_TARGET);
        if full {
            if let Some(old) = slot.take() {
                old.release_reserve(&self.path(old.id));
                if old.dirty {
                    self.retired.lock().push(old);
                }
            }
        }
        if slot.is_none() {
            *slot = Some(self.new_pack()?);
        }
        let Some(pack) = slot.as_mut() else {
            return Err(StoreError::Db("no pack to append to".into()));
        };
        let parts: Vec<&[u8]> = records
            .iter()
            .flat_map(|parts| parts.as_ref().iter().copied())
            .collect();
        let start = pack.len;
        if let Err(e) = pack.reserve_for(start + total) {
            let path = self.path(pack.id);
            log::debug!("{}: reserving blocks past {start}: {e}", path.display());
        }
        write_all_at(&pack.file, &parts, start)
            .map_err(|e| StoreError::io(&self.path(pack.id), e))?;
        let mut at = start;
        let locations: Vec<PackLocation> = record_lens
            .iter()
            .map(|&len| {
                let loc = PackLocation {
                    pack: pack.id,
                    offset: at,
                    len: len as u32,
                };
                at += len;
                loc
            })
            .collect();
        pack.len += total;
        pack.dirty = true;
        index(&locations)?;
        let boundary = pack.len / WRITEBACK_STEP * WRITEBACK_STEP;
        let eager = self.eager_writeback.load(Ordering::Relaxed);
        let file = (eager && boundary > start).then(|| pack.file.clone());
        drop(slot);
        if let Some(file) = file {
            start_writeback(&file, boundary);
        }
        Ok(())
    }

    /// Whether appends start writing back to the disk at once, so that a
    /// sync soon after finds little left to write (see the module docs).
    pub fn set_eager_writeback(&self, on: bool) {
        self.eager_writeback.store(on, Ordering::Relaxed);
    }

    /// True when appends start their writeback at once.
    #[cfg(test)]
    pub fn eager_writeback(&self) -> bool {
        self.eager_writeback.load(Ordering::Relaxed)
    }

    /// `fdatasync`s every pack appended to since the last sync; returns
    /// each one's number and synced length. Concurrent callers share the
    /// work: one that waited for another's sync usually finds nothing left.
    pub fn sync(&self) -> Result<Vec<(u32, u64)>> {
        let _one_at_a_time = self.sync_lock.lock();
        self.no_failed_sync()?;
        let mut todo: Vec<(u32, Arc<File>, u64)> = self
            .retired
            .lock()
            .drain(..)
            .map(|p| (p.id, p.file, p.len))
            .collect();
        for m in &self.appenders {
            if let Some(p) = m.lock().as_mut().filter(|p| p.dirty) {
                p.dirty = false;
                todo.push((p.id, p.file.clone(), p.len));
            }
        }
        for (id, file, len) in &todo {
            self.sync_file(*id, file)?;
            drop_cached(file, *len);
        }
        if !todo.is_empty() && self.dir_dirty.swap(false, Ordering::SeqCst) {
            if let Err(e) = File::open(&self.dir).and_then(|d| d.sync_all()) {
                self.dir_dirty.store(true, Ordering::SeqCst);
                return Err(StoreError::io(&self.dir, e));
            }
        }
        Ok(todo.into_iter().map(|(id, _, len)| (id, len)).collect())
    }

    /// The packs taking appends now, and every number a pack created from
    /// now on may get. Any other pack has every record indexed: a scan of
    /// the index started after this call sees them all.
    pub fn appending(&self) -> Appending {
        // The watermark first: a pack created after it is excluded by it.
        let from = self.next_id.load(Ordering::SeqCst);
        let open = self
            .appenders
            .iter()
            .filter_map(|m| m.lock().as_ref().map(|p| p.id))
            .collect();
        Appending { open, from }
    }

    /// Deletes every pack file that is neither in `live` (holds an indexed
    /// record) nor in `appending`; returns the numbers and sizes of those
    /// deleted. Readers that still hold one keep reading it until they let
    /// go (the file is only unlinked).
    pub fn remove_dead(
        &self,
        live: &HashSet<u32>,
        appending: &Appending,
    ) -> Result<Vec<(u32, u64)>> {
        let mut removed = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| StoreError::io(&self.dir, e))? {
            let path = entry.map_err(|e| StoreError::io(&self.dir, e))?.path();
            let Some(id) = pack_id(&path) else { continue };
            if live.contains(&id) || appending.open.contains(&id) || id >= appending.from {
                continue;
            }
            let blocks = fs::metadata(&path)
                .map(|m| {
                    use std::os::unix::fs::MetadataExt;
                    m.blocks() * 512
                })
                .unwrap_or(0);
            fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
            self.files.write().remove(&id);
            log::info!("{}: every record is dead; removed", path.display());
            removed.push((id, blocks));
        }
        Ok(removed)
    }

    fn file(&self, id: u32) -> Result<Arc<File>> {
        if let Some(f) = self.files.read().get(&id) {
            return Ok(f.clone());
        }
        let path = self.path(id);
        // Writable, for `punch`.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        let file = Arc::new(file);
        Ok(self.files.write().entry(id).or_insert(file).clone())
    }

    /// Reads `len` bytes of pack `id` from `offset` into a pooled buffer
    /// (see `buffers.rs`, which makes long reads cheap). A read past the
    /// end of the pack is an error of kind `UnexpectedEof`.
    pub fn read(&self, id: u32, offset: u64, len: usize) -> Result<ReadBuf> {
        let mut buf = ReadBuf::take(len);
        self.file(id)?
            .read_exact_at(&mut buf, offset)
            .map_err(|e| StoreError::io(&self.path(id), e))?;
        Ok(buf)
    }

    /// Tells the kernel that a stretch of a pack will be read soon, so
    /// that the reads of several stretches are in flight at once. Advice
    /// only: a failure changes nothing.
    pub fn will_need(&self, id: u32, offset: u64, len: u64) {
        if let Ok(file) = self.file(id) {
            let _ = posix_fadvise(
                &*file,
                offset as libc::off_t,
                len as libc::off_t,
                PosixFadviseAdvice::POSIX_FADV_WILLNEED,
            );
        }
    }

    /// Gives the disk the space of dead records back: neighbouring records
    /// are merged so that whole blocks between them are freed.
    pub fn punch(&self, dead: &[PackLocation]) -> Result<()> {
        for stretches in self.dead_stretches(dead)? {
            stretches.punch()?;
        }
        Ok(())
    }

    /// Dead records by pack, neighbours merged, with each pack's file, to
    /// be punched now or by another thread. Packs already removed are left
    /// out.
    pub fn dead_stretches(&self, dead: &[PackLocation]) -> Result<Vec<DeadStretches>> {
        let mut by_pack: BTreeMap<u32, Vec<(u64, u64)>> = BTreeMap::new();
        for loc in dead {
            by_pack
                .entry(loc.pack)
                .or_default()
                .push((loc.offset, loc.end()));
        }
        let mut out = Vec::with_capacity(by_pack.len());
        for (id, mut ranges) in by_pack {
            ranges.sort_unstable();
            let mut merged: Vec<(u64, u64)> = Vec::new();
            for (start, end) in ranges {
                match merged.last_mut() {
                    Some(last) if start <= last.1 => last.1 = last.1.max(end),
                    _ => merged.push((start, end)),
                }
            }
            let file = match self.file(id) {
                Ok(f) => f,
                Err(StoreError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    continue
                }
                Err(e) => return Err(e),
            };
            out.push(DeadStretches {
                path: self.path(id),
                file,
                ranges: merged,
            });
        }
        Ok(out)
    }
}

/// Stretches of one pack whose records are dead.
pub struct DeadStretches {
    path: PathBuf,
    file: Arc<File>,
    ranges: Vec<(u64, u64)>,
}

impl Drop for Packs {
    /// The packs still taking appends give back their reserved blocks, so
    /// that a store's size on disk is that of its records.
    fn drop(&mut self) {
        for slot in &self.appenders {
            if let Some(pack) = slot.lock().as_ref() {
                pack.release_reserve(&self.path(pack.id));
            }
        }
    }
}

impl DeadStretches {
    /// Punches them (`FALLOC_FL_PUNCH_HOLE`): the blocks they cover go back
    /// to the disk, and they read as zeros.
    pub fn punch(&self) -> Result<()> {
        for &(start, end) in &self.ranges {
            fallocate(
                self.file.as_ref(),
                FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
                start as libc::off_t,
                (end - start) as libc::off_t,
            )
            .map_err(|e| StoreError::io(&self.path, e.into()))?;
        }
        Ok(())
    }
}

/// Streams a pack to the disk while it is written, so that the sync at
/// commit finds little left to do, and checkpoint data does not crowd the
/// page cache: `POSIX_FADV_DONTNEED` over the stretch that just filled up
/// (`end - WRITEBACK_STEP .. end`) starts its writeback (dirty pages are
/// written, not dropped), and over the stretch before it drops pages that
/// writeback has cleaned. Advice only: a failure changes nothing.
fn start_writeback(file: &File, end: u64) {
    let start = end.saturating_sub(2 * WRITEBACK_STEP);
    let _ = posix_fadvise(
        file,
        start as libc::off_t,
        (end - start) as libc::off_t,
        PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
}

/// Drops the pages of `file`'s first `len` bytes from the page cache,
/// once a sync has cleaned them: checkpoint data read back later comes
/// from the disk and does not crowd out what the job reads (its dataset).
/// Advice only: a failure changes nothing.
fn drop_cached(file: &File, len: u64) {
    let _ = posix_fadvise(
        file,
        0,
        len as libc::off_t,
        PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
}

/// Writes all of `parts` at `offset` with `pwritev`.
fn write_all_at(file: &File, parts: &[&[u8]], mut offset: u64) -> std::io::Result<()> {
    let mut left: Vec<&[u8]> = parts.iter().copied().filter(|p| !p.is_empty()).collect();
    while !left.is_empty() {
        // At most IOV_MAX (1024 on Linux) slices per call.
        let iov: Vec<IoSlice<'_>> = left.iter().take(1024).map(|p| IoSlice::new(p)).collect();
        let mut n = match pwritev(file, &iov, offset as libc::off_t) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        offset += n as u64;
        while let Some(first) = left.first_mut() {
            if n < first.len() {
                *first = &first[n..];
                break;
            }
            n -= first.len();
            left.remove(0);
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "packs_tests.rs"]
mod tests;
