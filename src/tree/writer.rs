//! The uncommitted state of a file being written, and its commit.
//!
//! Two modes (see DESIGN.md, "memory is bounded whatever the file size"):
//!
//! * **Stream**: the file was truncated (or is new, or is being appended to)
//!   and every write continues where the last one ended, the normal way a
//!   checkpoint is saved. Bytes are chunked as they arrive and the chunks go
//!   to the pipeline; `close()` only waits for the tail.
//! * **Staged**: some write landed elsewhere. Written ranges go to a sparse
//!   staging file in the store; the committed content (the *base*) shows
//!   through everywhere else. At commit, base chunks that no write touched
//!   are reused as they are and only the touched regions are re-chunked.
//!
//! A stream that sees an out-of-order write or a read is *demoted*: what it
//! chunked so far becomes the base of a staged state.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use super::builder::ManifestBuilder;
use super::extents::Extents;
use super::{Data, TreeError};
use crate::chunk::Chunker;
use crate::ids::{ChunkId, Ino, ManifestId};
use crate::store::manifest::Entry;
use crate::store::records::Time;
use crate::store::{StoreError, Txn};

/// Read and written in pieces of this size when re-chunking staged data.
const PIECE: usize = 1 << 20;

// One per file open for writing: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Mode {
    Stream {
        chunker: Chunker,
        builder: ManifestBuilder,
    },
    Staged(Staged),
}

struct Staged {
    /// The content that shows through where nothing was written.
    base: ManifestId,
    /// Base bytes at or beyond this offset were truncated away (zeros).
    base_limit: u64,
    dirty: Extents,
    file: Option<File>,
    path: PathBuf,
}

/// An open file's changes since its last commit.
pub struct WriteState {
    ino: Ino,
    mode: Mode,
    /// The logical size.
    pub size: u64,
    /// The mtime the next commit records.
    pub mtime: Time,
    /// Set once a store write failed: the changes cannot be committed.
    poisoned: Option<TreeError>,
    /// True until the first write or truncate: a just-created empty file.
    pub pristine: bool,
}

impl WriteState {
    /// A state that streams from the start, after `prefix` (the committed
    /// content being appended to), if any.
    pub fn stream(
        d: &Data,
        ino: Ino,
        prefix: Option<(ManifestId, u64)>,
    ) -> Result<Self, TreeError> {
        let mut builder = ManifestBuilder::new(ManifestId(d.store.alloc_id()?));
        let mut chunker = d.chunker();
        let mut size = 0;
        if let Some((base, len)) = prefix {
            let mut entries = Vec::new();
            d.reader.for_each_entry(base, |_, e| {
                entries.push(e);
                Ok(true)
            })?;
            // The last chunk ended where the previous writer stopped, not
            // necessarily at a content-defined cut: chunk it again with what
            // follows, so an append (or a write resumed after a flush from
            // a forked child's close) cuts where an uninterrupted write
            // would have, and deduplicates the same way.
            let reopen = match entries.last() {
                Some(Entry::Chunk { id, .. }) => Some(d.reader.chunk(*id)?),
                _ => None,
            };
            if reopen.is_some() {
                entries.pop();
            }
            for e in entries {
                builder.push_ready(&d.pipeline, e);
            }
            if let Some(tail) = reopen {
                chunker.push(&tail, |c| builder.submit(&d.pipeline, c));
            }
            size = len;
            if builder.len() + chunker.buffered() as u64 != len {
                return Err(StoreError::Corrupt(format!(
                    "manifest {} covers {} bytes, inode says {len}",
                    base.0,
                    builder.len() + chunker.buffered() as u64
                ))
                .into());
            }
        }
        Ok(WriteState {
            ino,
            mode: Mode::Stream { chunker, builder },
            size,
            mtime: Time::now(),
            poisoned: None,
            pristine: true,
        })
    }

    /// A state over committed content `base` of `size` bytes.
    pub fn staged(d: &Data, ino: Ino, base: ManifestId, size: u64) -> Result<Self, TreeError> {
        let path = d
            .store
            .staging_dir()
            .join(format!("{}-{}", ino.0, d.store.alloc_id()?));
        Ok(WriteState {
            ino,
            mode: Mode::Staged(Staged {
                base,
                base_limit: size,
                dirty: Extents::default(),
                file: None,
                path,
            }),
            size,
            mtime: Time::now(),
            poisoned: None,
            pristine: true,
        })
    }

    fn check(&self) -> Result<(), TreeError> {
        match &self.poisoned {
            Some(e) => Err(e.clone_kind()),
            None => Ok(()),
        }
    }

    /// Marks the state failed with `e` (see [`WriteState::write`]).
    pub fn poison_with(&mut self, e: TreeError) {
        if self.poisoned.is_none() {
            self.poisoned = Some(e);
        }
    }

    /// Where a write continues the stream: the end, while the state
    /// streams and has not failed.
    pub fn stream_end(&self) -> Option<u64> {
        let streams = matches!(self.mode, Mode::Stream { .. }) && self.poisoned.is_none();
        streams.then_some(self.size)
    }

    fn poison<T>(&mut self, r: Result<T, TreeError>) -> Result<T, TreeError> {
        if let Err(e) = &r {
            self.poison_with(e.clone_kind());
        }
        r
    }

    /// Writes `bytes` at `offset`, then calls `acknowledge` with the state
    /// as the writer may now see it (size and mtime).
    ///
    /// A write that continues a stream is acknowledged *before* its bytes
    /// are chunked: the caller can then answer the writer, whose next
    /// request (its read of the source, the kernel's copy of it) overlaps
    /// the hashing of this one, while the caller still holds the file, so
    /// the file's writes are chunked in order. Chunking can only fail on
    /// the store's side, and such a failure is reported the way errors of
    /// chunks already handed to the pipeline are: the state is poisoned and
    /// the next write, `fsync` or `close` fails. Every other write is
    /// acknowledged once it is done; an `Err` means it was not.
    pub fn write(
        &mut self,
        d: &Data,
        offset: u64,
        bytes: &[u8],
        acknowledge: impl FnOnce(&Self),
    ) -> Result<(), TreeError> {
        self.check()?;
        self.pristine = false;
        let end = offset + bytes.len() as u64;
        if matches!(self.mode, Mode::Stream { .. }) && offset == self.size {
            self.size = end;
            self.mtime = Time::now();
            acknowledge(self);
            if let Mode::Stream { chunker, builder } = &mut self.mode {
                chunker.push(bytes, |c| builder.submit(&d.pipeline, c));
                let drained = builder
                    .drain(&d.pipeline, &d.store, false)
                    .map_err(TreeError::from);
                if let Err(e) = self.poison(drained) {
                    log::warn!(
                        "inode {}: write of {} bytes at {offset}, already acknowledged, \
                         failed: {e}; the next write, fsync or close reports it",
                        self.ino.0,
                        bytes.len()
                    );
                }
            }
            return Ok(());
        }
        let r = self.write_inner(d, offset, bytes);
        self.poison(r)?;
        self.size = self.size.max(end);
        self.mtime = Time::now();
        acknowledge(self);
        Ok(())
    }

    /// Writes anywhere but the end of a stream: into the staging file.
    fn write_inner(&mut self, d: &Data, offset: u64, bytes: &[u8]) -> Result<(), TreeError> {
        self.demote(d)?;
        let Mode::Staged(st) = &mut self.mode else {
            return Err(TreeError::Invalid("write state not staged after demotion"));
        };
        if st.file.is_none() {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&st.path)
                .map_err(|e| StoreError::io(&st.path, e))?;
            st.file = Some(f);
        }
        if let Some(f) = &st.file {
            f.write_all_at(bytes, offset)
                .map_err(|e| StoreError::io(&st.path, e))?;
        }
        st.dirty.insert(offset, offset + bytes.len() as u64);
        Ok(())
    }

    /// Turns a stream into a staged state whose base is what it chunked.
    fn demote(&mut self, d: &Data) -> Result<(), TreeError> {
        if !matches!(self.mode, Mode::Stream { .. }) {
            return Ok(());
        }
        let placeholder = Mode::Staged(Staged {
            base: ManifestId::EMPTY,
            base_limit: 0,
            dirty: Extents::default(),
            file: None,
            path: PathBuf::new(),
        });
        let Mode::Stream {
            mut chunker,
            mut builder,
        } = std::mem::replace(&mut self.mode, placeholder)
        else {
            return Ok(());
        };
        chunker.finish(|c| builder.submit(&d.pipeline, c));
        let (base, len) = builder.finish_stored(&d.pipeline, &d.store)?;
        let path = d
            .store
            .staging_dir()
            .join(format!("{}-{}", self.ino.0, d.store.alloc_id()?));
        self.mode = Mode::Staged(Staged {
            base,
            base_limit: len,
            dirty: Extents::default(),
            file: None,
            path,
        });
        Ok(())
    }

    /// Sets the size, dropping or zero-extending content.
    pub fn truncate(&mut self, d: &Data, size: u64) -> Result<(), TreeError> {
        self.check()?;
        self.pristine = false;
        if size == self.size {
            return Ok(());
        }
        self.mtime = Time::now();
        if size == 0 {
            // Starting over: the cheapest state, and the common O_TRUNC case.
            // Replacing the mode drops a staged state's file (Staged::drop).
            self.mode = Mode::Stream {
                chunker: d.chunker(),
                builder: ManifestBuilder::new(ManifestId(d.store.alloc_id()?)),
            };
            self.size = 0;
            self.poisoned = None;
            return Ok(());
        }
        let r = self.demote(d);
        self.poison(r)?;
        if let Mode::Staged(st) = &mut self.mode {
            st.base_limit = st.base_limit.min(size);
            st.dirty.truncate(size);
        }
        self.size = size;
        Ok(())
    }

    /// Reads up to `buf.len()` bytes at `offset`; returns how many.
    pub fn read(&mut self, d: &Data, offset: u64, buf: &mut [u8]) -> Result<usize, TreeError> {
        self.check()?;
        if offset >= self.size {
            return Ok(0);
        }
        let n = buf.len().min((self.size - offset) as usize);
        let buf = &mut buf[..n];
        let r = self.demote(d);
        self.poison(r)?;
        let Mode::Staged(st) = &self.mode else {
            return Err(TreeError::Invalid("write state not staged after demotion"));
        };
        st.fill(d, offset, buf)?;
        Ok(n)
    }

    /// The manifests and in-memory chunks this state still needs (for GC).
    pub fn referenced(&mut self, d: &Data) -> Result<(Vec<ManifestId>, Vec<ChunkId>), TreeError> {
        if self.poisoned.is_some() {
            return Ok((Vec::new(), Vec::new()));
        }
        match &mut self.mode {
            Mode::Stream { builder, .. } => {
                let (id, chunks) = builder.referenced(&d.pipeline, &d.store)?;
                Ok((vec![id], chunks))
            }
            Mode::Staged(st) => Ok((vec![st.base], Vec::new())),
        }
    }

    /// Builds the committed manifest; its last segment goes into `txn`.
    pub fn finish(mut self, d: &Data, txn: &mut Txn<'_>) -> Result<(ManifestId, u64), TreeError> {
        self.check()?;
        let size = self.size;
        let mode = std::mem::replace(
            &mut self.mode,
            Mode::Staged(Staged {
                base: ManifestId::EMPTY,
                base_limit: 0,
                dirty: Extents::default(),
                file: None,
                path: PathBuf::new(),
            }),
        );
        let (id, len) = match mode {
            Mode::Stream {
                mut chunker,
                mut builder,
            } => {
                chunker.finish(|c| builder.submit(&d.pipeline, c));
                builder.finish_into(&d.pipeline, &d.store, txn)?
            }
            Mode::Staged(st) => {
                let builder = ManifestBuilder::new(ManifestId(d.store.alloc_id()?));
                // The staging file goes when `st` is dropped, whatever happens.
                st.rebuild(d, size, builder)
                    .and_then(|b| b.finish_into(&d.pipeline, &d.store, txn))?
            }
        };
        if len != size {
            return Err(
                StoreError::Corrupt(format!("built {len} bytes for a file of {size}")).into(),
            );
        }
        Ok((id, len))
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        self.remove_file();
    }
}

impl Staged {
    fn remove_file(&self) {
        if self.file.is_some() {
            if let Err(e) = std::fs::remove_file(&self.path) {
                log::warn!("could not remove staging file {}: {e}", self.path.display());
            }
        }
    }

    fn read_staging(&self, offset: u64, buf: &mut [u8]) -> Result<(), StoreError> {
        match &self.file {
            Some(f) => f
                .read_exact_at(buf, offset)
                .map_err(|e| StoreError::io(&self.path, e)),
            None => {
                buf.fill(0);
                Ok(())
            }
        }
    }

    /// The current content of `[offset, offset + buf.len())`.
    fn fill(&self, d: &Data, offset: u64, buf: &mut [u8]) -> Result<(), StoreError> {
        let end = offset + buf.len() as u64;
        let base_end = self.base_limit.min(end);
        if offset < base_end {
            let n = (base_end - offset) as usize;
            d.reader
                .read(self.base, offset, &mut buf[..n], &mut Default::default())?;
            buf[n..].fill(0);
        } else {
            buf.fill(0);
        }
        for (s, e) in self.dirty.ranges_within(offset, end) {
            self.read_staging(s, &mut buf[(s - offset) as usize..(e - offset) as usize])?;
        }
        Ok(())
    }

    /// Produces the new manifest: clean base entries are reused, touched
    /// regions re-chunked, long zero runs become holes.
    fn rebuild(
        &self,
        d: &Data,
        size: u64,
        mut out: ManifestBuilder,
    ) -> Result<ManifestBuilder, StoreError> {
        let mut chunker = d.chunker();
        let visible = self.base_limit.min(size);
        let mut failure = None;
        d.reader.for_each_entry(self.base, |start, entry| {
            if start >= visible {
                return Ok(false);
            }
            let end = start + entry.len();
            if end <= visible && !self.dirty.overlaps(start, end) {
                chunker.finish(|c| out.submit(&d.pipeline, c));
                out.push_ready(&d.pipeline, entry);
            } else {
                let stop = end.min(visible);
                let base = match entry {
                    Entry::Chunk { id, .. } => Some(d.reader.chunk(id)?),
                    Entry::Hole { .. } => None,
                };
                let base = base.as_ref().map(|b| &b[..(stop - start) as usize]);
                if let Err(e) = self.emit(d, &mut chunker, &mut out, start, stop, base) {
                    failure = Some(e);
                    return Ok(false);
                }
            }
            out.drain(&d.pipeline, &d.store, false)?;
            Ok(true)
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        // Base entries cover [0, visible); what follows is written data or zeros.
        self.emit(d, &mut chunker, &mut out, visible, size, None)?;
        chunker.finish(|c| out.submit(&d.pipeline, c));
        Ok(out)
    }

    /// Feeds `[from, to)` of the new content to the chunker: dirty ranges
    /// from the staging file, the rest from `base` (bytes of `[from, to)`)
    /// or zeros.
    fn emit(
        &self,
        d: &Data,
        chunker: &mut Chunker,
        out: &mut ManifestBuilder,
        from: u64,
        to: u64,
        base: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let mut at = from;
        let mut piece = vec![0u8; PIECE];
        let dirty: Vec<(u64, u64)> = self.dirty.ranges_within(from, to).collect();
        let clean = |at: u64, until: u64, chunker: &mut Chunker, out: &mut ManifestBuilder| {
            if at >= until {
                return;
            }
            match base {
                Some(b) => chunker.push(&b[(at - from) as usize..(until - from) as usize], |c| {
                    out.submit(&d.pipeline, c)
                }),
                None if until - at >= 2 * d.params.max as u64 => {
                    chunker.finish(|c| out.submit(&d.pipeline, c));
                    out.push_ready(&d.pipeline, Entry::Hole { len: until - at });
                }
                None => {
                    let zeros = vec![0u8; (until - at) as usize];
                    chunker.push(&zeros, |c| out.submit(&d.pipeline, c));
                }
            }
        };
        for (s, e) in dirty {
            clean(at, s, chunker, out);
            let mut p = s;
            while p < e {
                let n = ((e - p) as usize).min(PIECE);
                self.read_staging(p, &mut piece[..n])?;
                chunker.push(&piece[..n], |c| out.submit(&d.pipeline, c));
                out.drain(&d.pipeline, &d.store, false)?;
                p += n as u64;
            }
            at = e;
        }
        clean(at, to, chunker, out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::testdata::noise;

    /// Bytes the stream's chunker holds, or `None` once staged.
    fn chunker_holds(ws: &WriteState) -> Option<usize> {
        match &ws.mode {
            Mode::Stream { chunker, .. } => Some(chunker.buffered()),
            Mode::Staged(_) => None,
        }
    }

    #[test]
    fn an_append_is_acknowledged_before_it_is_chunked_and_others_after_they_land() {
        let (_dir, tree) = crate::tree::test_tree();
        let d = &tree.data;
        let bytes = noise(1 << 20, 0xac_0001);
        let mut ws = WriteState::stream(d, Ino(77), None).unwrap();

        // An append: acknowledged with its size already counted, before
        // any of it reached the chunker; chunked by the time write returns.
        let mut seen = None;
        ws.write(d, 0, &bytes, |ws| seen = Some((ws.size, chunker_holds(ws))))
            .unwrap();
        assert_eq!(
            seen,
            Some((1 << 20, Some(0))),
            "size and chunker at the ack"
        );
        let held = chunker_holds(&ws).unwrap();
        assert!(
            held > 0 && held < 1 << 20,
            "the tail waits in the chunker: {held}"
        );

        // A write elsewhere is acknowledged only once it is in the
        // staging file.
        let mut seen = None;
        ws.write(d, 4096, &bytes[..4096], |ws| {
            seen = Some((ws.size, chunker_holds(ws)))
        })
        .unwrap();
        assert_eq!(seen, Some((1 << 20, None)), "staged before the ack");
        let mut back = vec![0u8; 8192];
        assert_eq!(ws.read(d, 0, &mut back).unwrap(), 8192);
        assert!(back[..4096] == bytes[..4096] && back[4096..] == bytes[..4096]);
    }

    #[test]
    fn a_store_error_after_an_append_was_acknowledged_fails_the_commit() {
        let (_dir, tree) = crate::tree::test_tree();
        let d = &tree.data;
        let mut ws = WriteState::stream(d, Ino(78), None).unwrap();
        // The first MiB goes through the WAL; the chunks after it go to a
        // pack, which can no longer be created.
        std::fs::remove_dir_all(tree.store().packs_dir()).unwrap();
        let bytes = noise(4 << 20, 0xac_0002);
        let (mut acknowledged, mut accepted) = (0, 0);
        for (i, piece) in bytes.chunks(1 << 20).enumerate() {
            let at = (i as u64) << 20;
            if ws.write(d, at, piece, |_| acknowledged += 1).is_ok() {
                accepted += 1;
            }
        }
        assert_eq!(acknowledged, accepted, "an Err is never acknowledged");
        assert!(acknowledged >= 1, "the WAL part is taken");
        let mut txn = tree.store().txn();
        assert!(
            ws.finish(d, &mut txn).is_err(),
            "the failure after the acknowledgement reaches the commit"
        );
    }
}
