//! Fsyncs answered off the FUSE threads. An fsync waits until the file's
//! chunks and its version are on the disk: a second or more for a large
//! shard. Run on a FUSE thread, it kept that thread from every other
//! request, so four ranks' fsyncs (ckptfs serves with four FUSE threads)
//! stopped the other ranks' writes until they were done. Here the FUSE
//! thread hands the fsync, with its reply, to a small pool and takes the
//! next request; the pool answers when the sync is done.

use std::thread::JoinHandle;

use crossbeam_channel::{unbounded, Sender};

/// An fsync and its answer.
type Job = Box<dyn FnOnce() + Send>;

/// Threads that run fsyncs (concurrent syncs share the store's work: one
/// that waited for another usually finds little left to write).
const THREADS: usize = 4;

/// The pool. Dropping it runs the fsyncs still queued, then joins.
pub struct Syncer {
    jobs: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl Syncer {
    pub fn new() -> Self {
        let (tx, rx) = unbounded::<Job>();
        let threads: Vec<JoinHandle<()>> = (0..THREADS)
            .filter_map(|i| {
                let rx = rx.clone();
                std::thread::Builder::new()
                    .name(format!("ckptfs-fsync-{i}"))
                    .spawn(move || {
                        for job in rx.iter() {
                            job();
                        }
                    })
                    .map_err(|e| log::warn!("no fsync thread: {e}"))
                    .ok()
            })
            .collect();
        Syncer {
            jobs: (!threads.is_empty()).then_some(tx),
            threads,
        }
    }

    /// Runs `job` on a pool thread, or here if the pool has none.
    pub fn run(&self, job: impl FnOnce() + Send + 'static) {
        let job: Job = Box::new(job);
        match &self.jobs {
            Some(tx) => {
                if let Err(refused) = tx.send(job) {
                    (refused.into_inner())();
                }
            }
            None => job(),
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.jobs.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;
    use std::time::Duration;

    #[test]
    fn a_slow_job_does_not_hold_up_the_next_and_all_run_before_the_drop_returns() {
        let syncer = Syncer::new();
        let (slow_done, slow_rx) = channel();
        let (release, gate) = channel::<()>();
        syncer.run(move || {
            let _ = gate.recv_timeout(Duration::from_secs(10));
            let _ = slow_done.send(());
        });
        let (quick_done, quick_rx) = channel();
        syncer.run(move || {
            let _ = quick_done.send(());
        });
        quick_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the second job ran while the first waited");
        assert!(slow_rx.try_recv().is_err(), "the first is still waiting");
        let (late_done, late_rx) = channel();
        syncer.run(move || {
            std::thread::sleep(Duration::from_millis(50));
            let _ = late_done.send(());
        });
        release.send(()).unwrap();
        drop(syncer);
        assert!(slow_rx.try_recv().is_ok());
        assert!(
            late_rx.try_recv().is_ok(),
            "queued jobs run before the drop returns"
        );
    }
}
