//! Answering a file's streaming writes before they take the file.
//!
//! The kernel sends a writer's next request only once the last one is
//! answered. A write that continues the file's stream is therefore
//! answered as soon as it is claimed here, before it waits for the file:
//! the writer's next requests (its read of the source, the kernel's copy)
//! then overlap the chunking of this one. Claimed writes are applied in
//! the order they were claimed (by offset; a stream only grows), one at a
//! time, each by the FUSE thread that holds its bytes, so at most one per
//! FUSE thread is in flight. Everything else that takes the file (reads,
//! truncation, commits, other writes) first stops further claims (until
//! a write reopens the stream), then waits until every claimed write was
//! applied, and holds the file only while claims are still closed and
//! none is pending (`OpenFile::lock`): what a writer was answered for is
//! always in place before anything can look at the file, nothing can
//! take the write state from under a claimed write, and a writer that
//! keeps streaming cannot hold a reader off.

use std::collections::VecDeque;

use parking_lot::{Condvar, Mutex};

/// The claimed writes of one open file.
#[derive(Default)]
pub(super) struct WriteOrder {
    inner: Mutex<Order>,
    turn: Condvar,
}

#[derive(Default)]
struct Order {
    /// Where a write continues the stream, while claims are open.
    next: Option<u64>,
    /// Offsets of claimed writes not yet applied, in claim order.
    pending: VecDeque<u64>,
}

/// A claimed write's place in line; leaving it (drop) lets the next go.
pub(super) struct Ticket<'a> {
    order: &'a WriteOrder,
    offset: u64,
}

impl WriteOrder {
    /// Claims a place for a write of `len` bytes at `offset` if it
    /// continues the stream; the caller may then answer the writer.
    pub fn claim(&self, offset: u64, len: usize) -> Option<Ticket<'_>> {
        let mut order = self.inner.lock();
        if len == 0 || order.next != Some(offset) {
            return None;
        }
        order.next = Some(offset + len as u64);
        order.pending.push_back(offset);
        Some(Ticket {
            order: self,
            offset,
        })
    }

    /// Closes claims, then waits until every claimed write was applied:
    /// the caller takes the file next. Closing first means a writer that
    /// keeps streaming cannot keep the caller waiting: its next write
    /// goes the long way, behind the caller.
    pub fn settle(&self) {
        let mut order = self.inner.lock();
        order.next = None;
        while !order.pending.is_empty() {
            self.turn.wait(&mut order);
        }
    }

    /// Opens claims for writes at `next` (the end of the stream), or
    /// keeps them closed (`None`: the file does not stream). Called with
    /// the file held, after a write that was not claimed.
    pub fn reopen(&self, next: Option<u64>) {
        let mut order = self.inner.lock();
        if order.pending.is_empty() {
            order.next = next;
        }
    }

    /// With the file held: closes claims and returns true if no claimed
    /// write is pending; false if some wait for the file (claims reopened
    /// by a write that held it before), and the caller must let go and
    /// settle again.
    pub fn close_if_idle(&self) -> bool {
        let mut order = self.inner.lock();
        let idle = order.pending.is_empty();
        if idle {
            order.next = None;
        }
        idle
    }

    /// Closes claims from a claimed write that found the file no longer
    /// streaming (an error, say): the next write goes the long way and
    /// reports it.
    pub fn close(&self) {
        self.inner.lock().next = None;
    }
}

impl Ticket<'_> {
    /// Waits until every write claimed before this one was applied.
    pub fn wait_turn(&self) {
        let mut order = self.order.inner.lock();
        while order.pending.front() != Some(&self.offset) {
            self.order.turn.wait(&mut order);
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut order = self.order.inner.lock();
        if let Some(at) = order.pending.iter().position(|&o| o == self.offset) {
            order.pending.remove(at);
        }
        self.order.turn.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::testdata::noise;
    use crate::ids::Ino;
    use crate::tree::OpenMode;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    /// A test tree with file `name` in its root, open for writing.
    fn new_file(name: &[u8]) -> (tempfile::TempDir, Arc<crate::tree::Tree>, Ino, u64) {
        let (dir, tree) = crate::tree::test_tree();
        let mode = OpenMode {
            write: true,
            ..OpenMode::default()
        };
        let (ino, _, fh) = tree.create(Ino::ROOT, name, 0o644, 0, 0, mode).unwrap();
        (dir, tree, ino, fh)
    }

    #[test]
    fn only_writes_that_continue_the_stream_are_claimed() {
        let order = WriteOrder::default();
        assert!(
            order.claim(0, 10).is_none(),
            "closed until a write opens it"
        );
        order.reopen(Some(100));
        assert!(order.claim(50, 10).is_none(), "not at the end");
        let first = order.claim(100, 10).expect("continues the stream");
        assert!(order.claim(100, 10).is_none(), "that place is taken");
        let second = order.claim(110, 5).expect("continues the claimed one");
        assert!(
            order.claim(115, 0).is_none(),
            "empty writes go the long way"
        );
        drop(first);
        drop(second);
        order.settle();
        assert!(order.claim(115, 1).is_none(), "settling closes claims");
    }

    #[test]
    fn settling_stops_claims_at_once_so_a_streaming_writer_cannot_hold_it_off() {
        let order = Arc::new(WriteOrder::default());
        order.reopen(Some(0));
        let first = order.claim(0, 10).expect("continues the stream");
        let settler = {
            let order = order.clone();
            std::thread::spawn(move || order.settle())
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while order.inner.lock().next.is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "settle never closed claims"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(order.claim(10, 10).is_none(), "no claim while settling");
        assert!(!settler.is_finished(), "the first write is still pending");
        drop(first);
        settler.join().unwrap();
    }

    #[test]
    fn the_file_is_held_only_with_claims_closed_and_none_pending() {
        let order = WriteOrder::default();
        // A write that held the file reopened claims, and one was taken.
        order.reopen(Some(0));
        let pending = order.claim(0, 10).expect("continues the stream");
        assert!(!order.close_if_idle(), "a claimed write waits: let go");
        drop(pending);
        order.reopen(Some(10));
        assert!(order.close_if_idle(), "none pending: held");
        assert!(order.claim(10, 10).is_none(), "claims closed while held");
    }

    #[test]
    fn claimed_writes_apply_in_claim_order_and_settle_waits_for_all() {
        let order = Arc::new(WriteOrder::default());
        order.reopen(Some(0));
        let applied = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicU64::new(0));
        // Claimed in order, then applied by threads started in reverse.
        let tickets: Vec<u64> = (0..4u64).map(|i| i * 10).collect();
        for &offset in &tickets {
            assert!(order.claim(offset, 10).map(std::mem::forget).is_some());
        }
        // The forgotten tickets are rebuilt by the threads that apply them.
        let threads: Vec<_> = tickets
            .iter()
            .rev()
            .map(|&offset| {
                let (order, applied, done) = (order.clone(), applied.clone(), done.clone());
                std::thread::spawn(move || {
                    let ticket = Ticket {
                        order: &order,
                        offset,
                    };
                    ticket.wait_turn();
                    applied.lock().push(offset);
                    done.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect();
        order.settle();
        assert_eq!(done.load(Ordering::SeqCst), 4, "settle waited for all");
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*applied.lock(), tickets);
    }

    #[test]
    fn a_write_that_continues_the_stream_is_answered_while_the_file_is_held() {
        use std::sync::mpsc;
        use std::time::Duration;

        let (_dir, tree, ino, fh) = new_file(b"w.bin");
        let bytes = noise(3 << 20, 0x03d3);
        let piece = 1 << 20;
        // The first write opens the stream for claims.
        tree.write(fh, 0, &bytes[..piece], 42, |_| {}).unwrap();
        let file = tree.open.lock().get(&ino).cloned().unwrap();

        // With the file held (a long chunking, say), the next two writes
        // are answered at once, and wait their turn to be applied.
        let held = file.state.lock();
        let (answered, answers) = mpsc::channel();
        let writers: Vec<_> = (1..3)
            .map(|i| {
                let (tree, bytes, answered) = (tree.clone(), bytes.clone(), answered.clone());
                let at = i * piece;
                let thread = std::thread::spawn(move || {
                    let data = &bytes[at..at + piece];
                    tree.write(fh, at as u64, data, 42, |n| answered.send(n).unwrap())
                });
                // One at a time, as the kernel sends them.
                assert_eq!(answers.recv_timeout(Duration::from_secs(10)), Ok(piece));
                thread
            })
            .collect();
        assert_eq!(
            tree.getattr(ino).unwrap().size,
            3 << 20,
            "stat shows what was answered"
        );
        // A read asked for now takes the file only once both are in place.
        let reader = {
            let tree = tree.clone();
            std::thread::spawn(move || tree.read(fh, 0, 3 << 20))
        };
        std::thread::sleep(Duration::from_millis(100));
        assert!(!reader.is_finished(), "the read waits for the file");
        drop(held);
        assert_eq!(reader.join().unwrap().unwrap(), bytes);
        for w in writers {
            w.join().unwrap().unwrap();
        }
        tree.fsync(fh).unwrap();
        tree.release(fh).unwrap();
        let fh = tree.open(ino, OpenMode::default()).unwrap();
        assert_eq!(tree.read(fh, 0, 3 << 20).unwrap(), bytes);
        tree.release(fh).unwrap();
    }

    #[test]
    fn a_write_claimed_before_a_commit_took_the_state_starts_a_new_one() {
        let (_dir, tree, ino, fh) = new_file(b"f.bin");
        let bytes = noise(2_000_000, 0x0c1a);
        tree.write(fh, 0, &bytes[..1_000_000], 7, |_| {}).unwrap();
        tree.fsync(fh).unwrap();
        // Claims reopened by hand after a commit took the write state
        // (what `OpenFile::lock` rules out, broken on purpose): the
        // claimed write finds no state, and starts one.
        let file = tree.open.lock().get(&ino).cloned().unwrap();
        file.order.reopen(Some(1_000_000));
        let mut answered = false;
        tree.write(fh, 1_000_000, &bytes[1_000_000..], 7, |_| answered = true)
            .unwrap();
        assert!(answered);
        assert_eq!(tree.getattr(ino).unwrap().size, 2_000_000);
        assert_eq!(tree.read(fh, 0, 2_000_000).unwrap(), bytes);
        tree.fsync(fh).unwrap();
        tree.release(fh).unwrap();
        let fh = tree.open(ino, OpenMode::default()).unwrap();
        assert_eq!(tree.read(fh, 0, 2_000_000).unwrap(), bytes, "committed");
        tree.release(fh).unwrap();
    }

    #[test]
    fn a_store_error_in_claimed_writes_is_reported_by_fsync() {
        let (_dir, tree, _, fh) = new_file(b"e.bin");
        let bytes = noise(4 << 20, 0x0e44);
        // The first MiB goes through the WAL; the chunks after it go to a
        // pack, which can no longer be created.
        tree.write(fh, 0, &bytes[..1 << 20], 7, |_| {}).unwrap();
        std::fs::remove_dir_all(tree.store().packs_dir()).unwrap();
        let mut answered = 0;
        for (i, piece) in bytes.chunks(1 << 20).enumerate().skip(1) {
            let at = (i as u64) << 20;
            // A write may report the failure once the workers have: when
            // is up to them, so either outcome is fine here.
            if tree.write(fh, at, piece, 7, |_| answered += 1).is_err() {
                break;
            }
        }
        assert!(answered >= 1, "claimed writes are answered at once");
        // fsync waits for every answered write and its chunks.
        assert!(tree.fsync(fh).is_err(), "fsync reports the failure");
        let _ = tree.release(fh);
    }
}
