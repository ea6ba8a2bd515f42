//! Open files: handles, reads, writes, truncation and version commits.
//!
//! A version is committed when the last writable handle of a file is
//! flushed (`close()`), fsynced or released (late writes through a shared
//! mmap arrive after `close()`), and by `truncate(2)` on a file that no one
//! has open for writing.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

use super::reader::ReadHint;
use super::write_order::WriteOrder;
use super::writer::WriteState;
use super::{Result, Tree, TreeError};
use crate::ids::{Ino, ManifestId};
use crate::store::records::{FileKind, InodeRecord, Time};

/// How a file is opened.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenMode {
    /// Opened for writing.
    pub write: bool,
    /// Every write goes to the end (O_APPEND).
    pub append: bool,
    /// Truncate to zero on open (O_TRUNC).
    pub truncate: bool,
}

#[derive(Default)]
struct Counts {
    handles: u32,
    writers: u32,
}

pub(super) struct FileState {
    pub(super) committed: (ManifestId, u64),
    pub(super) write: Option<WriteState>,
    /// Why an answered write was lost with no write state to poison:
    /// the next write, fsync or close reports it.
    pub(super) deferred: Option<TreeError>,
}

/// A file with at least one open handle (or a truncate in progress).
pub struct OpenFile {
    ino: Ino,
    counts: Mutex<Counts>,
    pub(super) state: Mutex<FileState>,
    /// Size and mtime of unsaved writes, readable without `state`.
    pub(super) live: Mutex<Option<(u64, Time)>>,
    /// Streaming writes answered before they take `state`.
    pub(super) order: WriteOrder,
}

impl OpenFile {
    /// The file's inode.
    pub fn ino(&self) -> Ino {
        self.ino
    }

    /// Takes the file's state once every write its writers were answered
    /// for is in it, with claims closed while it is held (see
    /// `write_order.rs`).
    pub(super) fn lock(&self) -> MutexGuard<'_, FileState> {
        loop {
            self.order.settle();
            let st = self.state.lock();
            if self.order.close_if_idle() {
                return st;
            }
        }
    }

    /// What the file's unsaved writes reference (for GC); waits for any
    /// commit in flight.
    pub(crate) fn referenced(
        &self,
        d: &super::Data,
    ) -> Result<(Vec<ManifestId>, Vec<crate::ids::ChunkId>)> {
        let mut st = self.state.lock();
        match st.write.as_mut() {
            Some(ws) => ws.referenced(d),
            None => Ok((Vec::new(), Vec::new())),
        }
    }

    /// Drops a handle from the counts: (was the last writer, was the last
    /// handle).
    fn count_down(&self, write: bool) -> (bool, bool) {
        let mut c = self.counts.lock();
        c.handles = c.handles.saturating_sub(1);
        if write {
            c.writers = c.writers.saturating_sub(1);
        }
        (write && c.writers == 0, c.handles == 0)
    }

    /// True while the file has writes that no commit has taken yet.
    pub fn has_unsaved_writes(&self) -> bool {
        self.live.lock().is_some()
    }
}

/// Counts a file being created while it lives.
struct Creating<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Creating<'a> {
    fn count(creating: &'a std::sync::atomic::AtomicUsize) -> Self {
        creating.fetch_add(1, Ordering::SeqCst);
        Creating(creating)
    }
}

impl Drop for Creating<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An open file handle.
pub struct FileHandle {
    file: Arc<OpenFile>,
    mode: OpenMode,
    hint: Arc<Mutex<ReadHint>>,
    /// Who changed the file through this handle since its last flush
    /// ([`NOBODY`], [`ANYONE`], or the writing task's id): the writer's
    /// next `close()` commits, whatever other handles are open (a forked
    /// child may hold an old descriptor of the file for a long time).
    wrote: Arc<AtomicU32>,
}

/// No change through a handle since its last flush.
const NOBODY: u32 = 0;
/// A change whose task is not known: any close of the handle commits it.
pub const ANYONE: u32 = u32::MAX;

/// What a request needs of a handle.
pub(super) struct HandleView {
    pub(super) file: Arc<OpenFile>,
    pub(super) mode: OpenMode,
    hint: Arc<Mutex<ReadHint>>,
    pub(super) wrote: Arc<AtomicU32>,
}

impl Tree {
    pub(crate) fn is_open(&self, ino: Ino) -> bool {
        self.open.lock().contains_key(&ino)
    }

    /// True while an inode is open or the kernel still holds it from a
    /// lookup: a file that loses its last name stays usable until then, as
    /// on a local filesystem (a reader that looked `x` up just before an
    /// atomic replace still opens the old file).
    pub(crate) fn is_referenced(&self, ino: Ino) -> bool {
        self.is_open(ino) || self.lookups.lock().get(&ino).is_some_and(|n| *n > 0)
    }

    /// The kernel learned of `ino` (a lookup, create, mkdir, link reply).
    pub fn note_lookup(&self, ino: Ino) {
        *self.lookups.lock().entry(ino).or_insert(0) += 1;
    }

    /// The kernel dropped `n` references to `ino`; a nameless inode goes
    /// once nothing refers to it any more.
    pub fn forget(&self, ino: Ino, n: u64) {
        let gone = {
            let mut lookups = self.lookups.lock();
            match lookups.get_mut(&ino) {
                Some(count) => {
                    *count = count.saturating_sub(n);
                    if *count == 0 {
                        lookups.remove(&ino);
                        true
                    } else {
                        false
                    }
                }
                None => false,
            }
        };
        if gone && !self.opts.read_only {
            if let Err(e) = self.forget_if_unlinked(ino) {
                log::warn!("forgetting inode {}: {e}", ino.0);
            }
        }
    }

    /// Replaces size and mtime with those of unsaved writes, if any.
    pub(crate) fn overlay_live(&self, ino: Ino, rec: &mut InodeRecord) {
        let file = self.open.lock().get(&ino).cloned();
        if let Some(live) = file.and_then(|f| *f.live.lock()) {
            rec.size = live.0;
            rec.mtime = live.1;
        }
    }

    pub(super) fn acquire(&self, ino: Ino, write: bool) -> Result<Arc<OpenFile>> {
        let mut map = self.open.lock();
        let file = match map.get(&ino) {
            Some(f) => f.clone(),
            None => {
                let rec = self.inode(ino)?;
                match rec.kind {
                    FileKind::File => {}
                    FileKind::Dir => return Err(TreeError::IsDir),
                    _ => return Err(TreeError::Invalid("not a regular file")),
                }
                let f = Arc::new(OpenFile {
                    ino,
                    counts: Mutex::new(Counts::default()),
                    state: Mutex::new(FileState {
                        committed: (rec.content, rec.size),
                        write: None,
                        deferred: None,
                    }),
                    live: Mutex::new(None),
                    order: WriteOrder::default(),
                });
                map.insert(ino, f.clone());
                f
            }
        };
        let mut c = file.counts.lock();
        c.handles += 1;
        if write {
            c.writers += 1;
        }
        drop(c);
        Ok(file)
    }

    pub(super) fn relinquish(&self, file: &Arc<OpenFile>, write: bool) -> Result<()> {
        let mut result = Ok(());
        let last = if write {
            // Counted down and committed under the file's state: an open
            // that truncates (under the state too) either counted up first,
            // so this is not the last writer, or truncates after this
            // commit. Counted down first and committed after, a release
            // racing the next `open(O_TRUNC)` took the emptied file as a
            // version.
            let mut st = file.lock();
            let (last_writer, last) = file.count_down(true);
            if last_writer {
                result = self.commit_locked(file, &mut st, false);
            }
            last
        } else {
            file.count_down(false).1
        };
        if last {
            let removed = {
                let mut map = self.open.lock();
                let idle = file.counts.lock().handles == 0;
                idle && map.remove(&file.ino).is_some()
            };
            if removed {
                self.forget_if_unlinked(file.ino)?;
            }
        }
        result
    }

    /// Deletes the inode record of a file that lost its last name while open.
    fn forget_if_unlinked(&self, ino: Ino) -> Result<()> {
        let store = &self.data.store;
        let _ns = self.ns.lock();
        match store.inode(ino)? {
            Some(rec) if rec.nlink == 0 && !self.is_referenced(ino) => {
                let mut txn = store.txn();
                txn.delete_inode(ino)?;
                store.commit(txn, false)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Opens a regular file; returns the handle number.
    pub fn open(&self, ino: Ino, mode: OpenMode) -> Result<u64> {
        if mode.write {
            self.writable()?;
        }
        let file = self.acquire(ino, mode.write)?;
        if mode.write && mode.truncate {
            let mut st = file.lock();
            if let Err(e) = self.truncate_locked(&file, &mut st, 0) {
                drop(st);
                let _ = self.relinquish(&file, mode.write);
                return Err(e);
            }
            // Like a new file: `echo x > f` truncates at open and closes a
            // dup before writing; the empty state is not a version yet.
            if let Some(ws) = st.write.as_mut() {
                ws.pristine = true;
            }
        }
        Ok(self.add_handle(file, mode))
    }

    fn add_handle(&self, file: Arc<OpenFile>, mode: OpenMode) -> u64 {
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        let handle = FileHandle {
            file,
            mode,
            hint: Arc::new(Mutex::new(ReadHint::default())),
            wrote: Arc::new(AtomicU32::new(NOBODY)),
        };
        self.handles.write().insert(fh, handle);
        fh
    }

    /// Creates and opens a new regular file.
    pub fn create(
        &self,
        parent: Ino,
        name: &[u8],
        perm: u16,
        uid: u32,
        gid: u32,
        mode: OpenMode,
    ) -> Result<(Ino, InodeRecord, u64)> {
        // From its entry until its write state exists, a new file is being
        // written but not yet open: a snapshot waits for this count too.
        let _creating = Creating::count(&self.creating);
        let (ino, rec) = self.new_node(parent, name, FileKind::File, perm, 0, uid, gid, b"")?;
        let file = self.acquire(ino, true)?;
        {
            // A new file is a change by itself: closing it commits an empty
            // first version even if nothing is written.
            let mut st = file.lock();
            let mut fresh = WriteState::stream(&self.data, ino, None)?;
            // Until a write, the file keeps the time `create` reported.
            fresh.mtime = rec.mtime;
            *file.live.lock() = Some((0, fresh.mtime));
            st.write = Some(fresh);
        }
        let fh = self.add_handle(
            file,
            OpenMode {
                write: true,
                ..mode
            },
        );
        Ok((ino, rec, fh))
    }

    pub(super) fn handle(&self, fh: u64) -> Result<HandleView> {
        let handles = self.handles.read();
        let h = handles.get(&fh).ok_or(TreeError::BadHandle)?;
        Ok(HandleView {
            file: h.file.clone(),
            mode: h.mode,
            hint: h.hint.clone(),
            wrote: h.wrote.clone(),
        })
    }

    /// Reads up to `size` bytes at `offset`.
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        let HandleView { file, hint, .. } = self.handle(fh)?;
        let mut st = file.lock();
        if let Some(ws) = st.write.as_mut() {
            let mut buf = vec![0u8; size as usize];
            let n = ws.read(&self.data, offset, &mut buf)?;
            buf.truncate(n);
            return Ok(buf);
        }
        let (manifest, len) = st.committed;
        drop(st);
        if offset >= len {
            return Ok(Vec::new());
        }
        let n = (size as u64).min(len - offset) as usize;
        let mut hint = hint.lock();
        Ok(self.data.reader.read_vec(manifest, offset, n, &mut hint)?)
    }

    /// Writes `data` at `offset` (at the end for O_APPEND handles) for the
    /// task `writer` (the FUSE request's pid; [`ANYONE`] if unknown), and
    /// calls `acknowledge` with the count written once the writer may go
    /// on: for a write that continues a stream, as soon as it has claimed
    /// its place, before it waits for the file (`write_order.rs`); for the
    /// first write of a stream, before its bytes are chunked (see
    /// [`WriteState::write`]); for any other, once it landed. `Err` means
    /// it was not called.
    pub fn write(
        &self,
        fh: u64,
        offset: u64,
        data: &[u8],
        writer: u32,
        acknowledge: impl FnOnce(usize),
    ) -> Result<()> {
        self.writable()?;
        let HandleView {
            file, mode, wrote, ..
        } = self.handle(fh)?;
        if !mode.write {
            return Err(TreeError::BadHandle);
        }
        self.space.check(&self.data.store, data.len())?;
        // Writes the kernel sends on its own (mmap writeback, pid 0) may
        // be any process's: any close commits them.
        let writer = if writer == 0 { ANYONE } else { writer };
        let claimed = match mode.append {
            true => None,
            false => file.order.claim(offset, data.len()),
        };
        if let Some(ticket) = claimed {
            // Continues the stream: answered now, applied in turn.
            let end = offset + data.len() as u64;
            {
                let mut live = file.live.lock();
                let size = live.map_or(end, |(size, _)| size.max(end));
                *live = Some((size, Time::now()));
            }
            wrote.store(writer, Ordering::Release);
            acknowledge(data.len());
            ticket.wait_turn();
            self.apply_claimed(&file, offset, data);
            drop(ticket);
            self.touch_activity();
            return Ok(());
        }
        let mut st = file.lock();
        if let Some(e) = st.deferred.take() {
            return Err(e);
        }
        let ws = self.write_state(&file, &mut st, Some(offset))?;
        let offset = if mode.append { ws.size } else { offset };
        ws.write(&self.data, offset, data, |ws| {
            // What the writer may rely on once answered: the size a stat
            // shows, and that its close commits.
            *file.live.lock() = Some((ws.size, ws.mtime));
            wrote.store(writer, Ordering::Release);
            // Claims open before the answer: whatever the writer does
            // next that takes the file closes them again first.
            file.order.reopen(ws.stream_end());
            acknowledge(data.len());
        })?;
        if ws.stream_end().is_none() {
            file.order.close();
        }
        drop(st);
        self.touch_activity();
        Ok(())
    }

    /// Applies a write answered before it took the file (its turn has
    /// come). A failure cannot be reported to its writer any more: it
    /// poisons the write state, so the next write, `fsync` or `close`
    /// reports it, as with the chunking of any answered write.
    fn apply_claimed(&self, file: &OpenFile, offset: u64, data: &[u8]) {
        let mut st = file.state.lock();
        // Claims open only while a write state exists, and nothing takes
        // it while one is pending (`OpenFile::lock`). Were it gone, the
        // write starts a new one rather than being lost.
        let fresh = st.write.is_none();
        let result = self
            .write_state(file, &mut st, Some(offset))
            .and_then(|ws| ws.write(&self.data, offset, data, |_| {}));
        if let Err(e) = result {
            log::warn!(
                "{}: write of {} bytes at {offset}, already answered, failed: {e}; \
                 the next write, fsync or close reports it",
                self.path_of(file.ino),
                data.len()
            );
            match st.write.as_mut() {
                Some(ws) => ws.poison_with(e),
                None => st.deferred = Some(e),
            }
        }
        let streams = st.write.as_ref().and_then(|ws| ws.stream_end());
        if let (true, Some(ws)) = (fresh, &st.write) {
            file.live.lock().get_or_insert((ws.size, ws.mtime));
        }
        if streams != Some(offset + data.len() as u64) {
            file.order.close();
        }
    }

    /// The file's write state, created over the committed content if
    /// needed. `first_write` picks streaming when it continues the file.
    fn write_state<'s>(
        &self,
        file: &OpenFile,
        st: &'s mut FileState,
        first_write: Option<u64>,
    ) -> Result<&'s mut WriteState> {
        if st.write.is_none() {
            let (manifest, size) = st.committed;
            let ws = match first_write {
                Some(offset) if offset == size => {
                    let prefix = (size > 0).then_some((manifest, size));
                    WriteState::stream(&self.data, file.ino, prefix)?
                }
                _ => WriteState::staged(&self.data, file.ino, manifest, size)?,
            };
            st.write = Some(ws);
        }
        st.write
            .as_mut()
            .ok_or(TreeError::Invalid("no write state"))
    }

    pub(super) fn truncate_locked(
        &self,
        file: &OpenFile,
        st: &mut FileState,
        size: u64,
    ) -> Result<()> {
        if st.write.is_none() && st.committed.1 == size {
            return Ok(());
        }
        if st.write.is_none() && size == 0 {
            st.write = Some(WriteState::stream(&self.data, file.ino, None)?);
        }
        let ws = self.write_state(file, st, None)?;
        ws.truncate(&self.data, size)?;
        *file.live.lock() = Some((ws.size, ws.mtime));
        Ok(())
    }

    /// `close()` of a handle: commits when it is the file's last writer.
    pub fn flush(
        &self,
        fh: u64,
        closer: u32,
        same_process: impl Fn(u32, u32) -> bool,
    ) -> Result<()> {
        let h = self.handle(fh)?;
        // A close commits what its handle wrote. A handle that changed
        // nothing (a reader opened O_RDWR, a dup already flushed) commits
        // nothing, even if another writer left unsaved data.
        let writer = h.wrote.load(Ordering::Acquire);
        if !h.mode.write || writer == NOBODY {
            return Ok(());
        }
        // Another process closing its inherited copy of the descriptor (a
        // fork's child at exec or exit) while the writer goes on: the
        // writer's own close commits, so no half-written version appears.
        if writer != ANYONE && writer != closer && !same_process(writer, closer) {
            log::debug!(
                "{}: close by task {closer}, which did not write: not a version yet",
                self.path_of(h.file.ino)
            );
            return Ok(());
        }
        h.wrote.store(NOBODY, Ordering::Release);
        let file = h.file;
        let mut st = file.lock();
        if st.write.as_ref().is_some_and(|ws| ws.pristine) {
            // A file created and not written yet: shells create a file and
            // close a dup of it before writing. Its first version is taken
            // at the next flush with data, or at release.
            return Ok(());
        }
        self.commit_locked(&file, &mut st, false)
    }

    /// fsync/fdatasync: commits unsaved writes and makes the store durable.
    pub fn fsync(&self, fh: u64) -> Result<()> {
        let HandleView { file, .. } = self.handle(fh)?;
        let mut st = file.lock();
        self.commit_locked(&file, &mut st, true)
    }

    /// The kernel's last reference to a handle is gone.
    pub fn release(&self, fh: u64) -> Result<()> {
        let handle = self
            .handles
            .write()
            .remove(&fh)
            .ok_or(TreeError::BadHandle)?;
        self.relinquish(&handle.file, handle.mode.write)
    }
}

#[cfg(test)]
#[path = "files_tests.rs"]
mod tests;
