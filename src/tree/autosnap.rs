//! Automatic snapshots at the points where frameworks mark a checkpoint
//! complete, and after a quiet period.
//!
//! | framework | commit point | trigger |
//! |---|---|---|
//! | HF Trainer | `tmp-checkpoint-N` renamed to `checkpoint-N` | directory rename out of a staging name |
//! | Orbax | `*.orbax-checkpoint-tmp*` renamed to the step directory; `commit_success.txt` | rename; close of the marker |
//! | PyTorch DCP | `.metadata.tmp` renamed to `.metadata` | file rename |
//! | DeepSpeed | `latest` written | close of the marker |
//! | TensorFlow | `checkpoint` written | close of the marker |
//! | any | `--snapshot-on-close GLOB` | close of a matching file |
//!
//! Staging names (`*.tmp`, `tmp-checkpoint-*`, `*.orbax-checkpoint-tmp*`)
//! never trigger. Triggers that arrive while a snapshot is pending are
//! folded into it; the snapshot itself waits for files being written (see
//! `take_snapshot`), so the shards of all ranks land together.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use parking_lot::Mutex;

use super::{SnapshotRequest, Tree};

/// Which automatic snapshots are taken.
#[derive(Clone, Debug)]
pub struct AutoSnapshotOptions {
    /// Directory and `.metadata` renames out of staging names.
    pub on_rename: bool,
    /// Closes of `latest`, `commit_success.txt` and `checkpoint`.
    pub on_marker: bool,
    /// Closes of files matching these globs (a glob without `/` matches
    /// file names at any depth).
    pub on_close: Vec<String>,
    /// A snapshot once nothing was written for this long, if anything
    /// changed since the last one.
    pub quiet: Option<Duration>,
}

impl Default for AutoSnapshotOptions {
    fn default() -> Self {
        AutoSnapshotOptions {
            on_rename: true,
            on_marker: true,
            on_close: Vec::new(),
            quiet: None,
        }
    }
}

/// Something the tree did that may mark a checkpoint complete.
#[derive(Clone, Debug)]
pub enum Event<'a> {
    /// A file was committed; its path from the root.
    Committed(&'a str),
    /// `from` (a name) was renamed to `to` (a path from the root).
    Renamed {
        /// The old name.
        from: &'a [u8],
        /// The new path.
        to: &'a str,
        /// A directory was moved.
        dir: bool,
    },
}

const MARKERS: [&str; 3] = ["latest", "commit_success.txt", "checkpoint"];

/// True for names that frameworks write before the real one.
pub fn is_staging(name: &str) -> bool {
    name.ends_with(".tmp")
        || name.starts_with("tmp-checkpoint-")
        || name.contains(".orbax-checkpoint-tmp")
}

/// Decides whether an event is a commit point.
pub struct Classifier {
    opts: AutoSnapshotOptions,
    by_name: GlobSet,
    by_path: GlobSet,
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

impl Classifier {
    /// Builds the classifier; a bad glob is an error naming it.
    pub fn new(opts: AutoSnapshotOptions) -> Result<Self, String> {
        let (mut by_name, mut by_path) = (GlobSetBuilder::new(), GlobSetBuilder::new());
        for g in &opts.on_close {
            // `*` stops at `/`, as in a shell.
            let glob = GlobBuilder::new(g)
                .literal_separator(true)
                .build()
                .map_err(|e| format!("--snapshot-on-close {g}: {e}"))?;
            if g.contains('/') {
                by_path.add(glob);
            } else {
                by_name.add(glob);
            }
        }
        Ok(Classifier {
            by_name: by_name.build().map_err(|e| e.to_string())?,
            by_path: by_path.build().map_err(|e| e.to_string())?,
            opts,
        })
    }

    /// Why the event takes a snapshot, if it does.
    pub fn classify(&self, event: &Event<'_>) -> Option<String> {
        match *event {
            Event::Committed(path) => {
                let name = basename(path);
                if is_staging(name) {
                    return None;
                }
                if self.opts.on_marker && MARKERS.contains(&name) {
                    return Some(format!("marker {path}"));
                }
                let rel = path.trim_start_matches('/');
                if self.by_name.is_match(name) || self.by_path.is_match(rel) {
                    return Some(format!("close {path}"));
                }
                None
            }
            Event::Renamed { from, to, dir } => {
                if !self.opts.on_rename {
                    return None;
                }
                let from = String::from_utf8_lossy(from);
                let name = basename(to);
                let staged = if dir {
                    from.starts_with("tmp-checkpoint-") || from.contains(".orbax-checkpoint-tmp")
                } else {
                    from == ".metadata.tmp" && name == ".metadata"
                };
                (staged && !is_staging(name)).then(|| format!("rename {from} -> {to}"))
            }
        }
    }
}

/// The running automatic-snapshot machinery of a tree.
pub struct AutoSnapshots {
    classifier: Classifier,
    requests: Sender<String>,
    /// Raised by every change; compared with `at_last_snapshot`.
    changes: AtomicU64,
    at_last_snapshot: AtomicU64,
    last_activity: Mutex<Instant>,
}

impl AutoSnapshots {
    /// Reports an event; queues a snapshot when it is a commit point.
    pub fn observe(&self, event: Event<'_>) {
        self.changes.fetch_add(1, Ordering::Relaxed);
        *self.last_activity.lock() = Instant::now();
        if let Some(reason) = self.classifier.classify(&event) {
            match self.requests.try_send(reason) {
                Ok(()) | Err(TrySendError::Full(_)) => {}
                Err(TrySendError::Disconnected(_)) => log::warn!("automatic snapshots stopped"),
            }
        }
    }

    /// Notes a write (for the quiet period) without classifying.
    pub fn touch(&self) {
        self.changes.fetch_add(1, Ordering::Relaxed);
        *self.last_activity.lock() = Instant::now();
    }
}

impl Tree {
    /// Starts automatic snapshots for this tree: a worker thread that
    /// takes them (it holds only a weak reference, so it ends with the
    /// tree).
    pub fn start_auto_snapshots(self: &Arc<Self>, opts: AutoSnapshotOptions) -> Result<(), String> {
        let quiet = opts.quiet;
        let classifier = Classifier::new(opts)?;
        let (tx, rx) = bounded::<String>(64);
        let auto = Arc::new(AutoSnapshots {
            classifier,
            requests: tx,
            changes: AtomicU64::new(0),
            at_last_snapshot: AtomicU64::new(0),
            last_activity: Mutex::new(Instant::now()),
        });
        *self.auto.lock() = Some(auto.clone());
        let weak = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("ckptfs-autosnap".into())
            .spawn(move || worker(weak, auto, rx, quiet))
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    pub(crate) fn observe(&self, event: Event<'_>) {
        let auto = self.auto.lock().clone();
        if let Some(auto) = auto {
            auto.observe(event);
        }
    }

    pub(crate) fn touch_activity(&self) {
        if let Some(auto) = self.auto.lock().as_ref() {
            auto.touch();
        }
    }
}

fn worker(
    tree: Weak<Tree>,
    auto: Arc<AutoSnapshots>,
    rx: Receiver<String>,
    quiet: Option<Duration>,
) {
    let tick = quiet.map(|q| (q / 4).clamp(Duration::from_millis(100), Duration::from_secs(5)));
    loop {
        let reason = match rx.recv_timeout(tick.unwrap_or(Duration::from_secs(3600))) {
            Ok(reason) => Some(reason),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let Some(tree) = tree.upgrade() else { return };
        let reason = match (reason, quiet) {
            (Some(r), _) => {
                // Fold in whatever else is queued: one snapshot for all.
                let mut reasons = vec![r];
                reasons.extend(rx.try_iter());
                Some(reasons.join("; "))
            }
            (None, Some(q)) => {
                let changed = auto.changes.load(Ordering::Relaxed)
                    != auto.at_last_snapshot.load(Ordering::Relaxed);
                let idle = auto.last_activity.lock().elapsed() >= q;
                let writing = tree.open.lock().values().any(|f| f.has_unsaved_writes());
                (changed && idle && !writing).then(|| format!("quiet for {q:?}"))
            }
            (None, None) => None,
        };
        let Some(reason) = reason else { continue };
        let seen = auto.changes.load(Ordering::Relaxed);
        let req = SnapshotRequest {
            name: None,
            trigger: reason,
            auto: true,
        };
        match tree.take_snapshot(&req) {
            Ok(_) => auto.at_last_snapshot.store(seen, Ordering::Relaxed),
            Err(e) => log::error!("automatic snapshot ({}) failed: {e}", req.trigger),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classifier(on_close: &[&str]) -> Classifier {
        Classifier::new(AutoSnapshotOptions {
            on_close: on_close.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn framework_commit_points_trigger_and_staging_names_do_not() {
        let c = classifier(&["*.safetensors", "runs/*/final.pt"]);
        let renamed = |from: &str, to: &str, dir| {
            c.classify(&Event::Renamed {
                from: from.as_bytes(),
                to,
                dir,
            })
        };
        assert!(renamed("tmp-checkpoint-500", "/out/checkpoint-500", true).is_some());
        assert!(renamed(
            "step_100.orbax-checkpoint-tmp-1700000000",
            "/ckpt/100",
            true
        )
        .is_some());
        assert!(renamed(".metadata.tmp", "/dcp/step1/.metadata", false).is_some());
        assert!(
            renamed("a.tmp", "/a", false).is_none(),
            "plain file renames are not commit points"
        );
        assert!(renamed("checkpoint-500", "/out/tmp-checkpoint-9", true).is_none());
        let closed = |p: &str| c.classify(&Event::Committed(p));
        assert!(closed("/ds/latest").is_some());
        assert!(closed("/orbax/7/commit_success.txt").is_some());
        assert!(closed("/tf/checkpoint").is_some());
        assert!(closed("/m/model.safetensors").is_some());
        assert!(closed("/runs/a/final.pt").is_some());
        assert!(closed("/runs/a/b/final.pt").is_none());
        assert!(closed("/m/model.safetensors.tmp").is_none());
        assert!(closed("/tmp-checkpoint-5/latest.tmp").is_none());
        assert!(closed("/data/weights.pt").is_none());
    }

    #[test]
    fn switches_turn_triggers_off_and_bad_globs_are_named() {
        let c = Classifier::new(AutoSnapshotOptions {
            on_rename: false,
            on_marker: false,
            ..Default::default()
        })
        .unwrap();
        assert!(c.classify(&Event::Committed("/latest")).is_none());
        assert!(c
            .classify(&Event::Renamed {
                from: b"tmp-checkpoint-1",
                to: "/checkpoint-1",
                dir: true
            })
            .is_none());
        let bad = Classifier::new(AutoSnapshotOptions {
            on_close: vec!["a[".into()],
            ..Default::default()
        });
        assert!(bad.err().unwrap().contains("a["));
    }
}
