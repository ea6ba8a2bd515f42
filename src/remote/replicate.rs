//! Background replication for a mounted store: after each snapshot (and
//! on request, and every retry interval while something is pending) the
//! snapshots each remote lacks are pushed from one thread. Local commits
//! never wait for it: a remote that is down only grows the lag, which
//! [`Replicator::status`] shows with the last error.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::{
    push, PushOptions, PushReport, Remote, RemoteError, RemoteSpec, RemoteView, Remotes, S3Settings,
};
use crate::tree::{rfc3339, Time, Tree};

/// How a remote is doing, as `.ckpt/stats` shows it.
#[derive(Debug, Clone, Default)]
pub struct RemoteStatus {
    /// Its URL.
    pub url: String,
    /// Local snapshots it does not hold yet.
    pub snapshots_pending: u64,
    /// Their logical size (what is uploaded is less: only missing chunks).
    pub bytes_pending: u64,
    /// Snapshots pushed to it (by this node, as far as known).
    pub snapshots_pushed: u64,
    /// When the last push finished without error.
    pub last_push: Option<Time>,
    /// What the last successful push did.
    pub last_report: Option<PushReport>,
    /// The error of the last attempt, if it failed.
    pub last_error: Option<String>,
    /// When it was last tried.
    pub last_attempt: Option<Time>,
}

#[derive(Default)]
struct State {
    /// A push was asked for since the last cycle started.
    requested: bool,
    stop: bool,
    status: BTreeMap<String, RemoteStatus>,
    /// Snapshot names each remote is known to hold.
    pushed: BTreeMap<String, HashSet<Vec<u8>>>,
}

struct Shared {
    tree: Arc<Tree>,
    store_dir: PathBuf,
    retry: Duration,
    state: Mutex<State>,
    wake: Condvar,
    /// Serializes pushes (the background cycle and `push_now`).
    pushing: Mutex<()>,
    /// Set at stop: a running push ends at its next chunk.
    cancel: AtomicBool,
    /// Pushes happen (false on a read-only mount, which only browses).
    pushes: bool,
    /// Browsable views of the remotes, by name.
    views: Mutex<BTreeMap<String, Arc<RemoteView>>>,
    /// Bytes of fetched chunks each view keeps.
    cache_bytes: u64,
    /// Keys and defaults from the config file.
    s3: S3Settings,
    /// `remotes.json` as last read, with the mtime it had then: FUSE
    /// requests and the thread ask for it often, the file changes rarely.
    remotes: Mutex<(Option<std::time::SystemTime>, Arc<Remotes>)>,
}

/// The replication thread of one mounted store.
pub struct Replicator {
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Replicator {
    /// Starts replicating the snapshots of `tree` (whose store directory
    /// is `store_dir`) to the remotes in its `remotes.json`; failed or
    /// pending pushes are retried every `retry`.
    /// `pushes` is false on a read-only mount: the remotes can then only be
    /// browsed. Each remote's view keeps `cache_bytes` of fetched chunks.
    pub fn start(
        tree: Arc<Tree>,
        store_dir: PathBuf,
        retry: Duration,
        pushes: bool,
        cache_bytes: u64,
        s3: S3Settings,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            tree: tree.clone(),
            store_dir,
            retry,
            state: Mutex::new(State {
                requested: pushes,
                ..State::default()
            }),
            wake: Condvar::new(),
            pushing: Mutex::new(()),
            cancel: AtomicBool::new(false),
            pushes,
            views: Mutex::new(BTreeMap::new()),
            cache_bytes,
            s3,
            remotes: Mutex::new((None, Arc::new(Remotes::default()))),
        });
        let weak = Arc::downgrade(&shared);
        if pushes {
            tree.on_snapshot(Box::new(move |_| {
                if let Some(s) = weak.upgrade() {
                    s.state.lock().requested = true;
                    s.wake.notify_all();
                }
            }));
        }
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("ckptfs-replicate".into())
            .spawn(move || worker.run())?;
        Ok(Replicator {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Pushes now, to one remote or to all, and waits for the result.
    pub fn push_now(&self, only: Option<&str>) -> Result<Vec<(String, PushReport)>, RemoteError> {
        if !self.shared.pushes {
            return Err(RemoteError::Config(
                "the mount is read-only: nothing is pushed".into(),
            ));
        }
        self.shared.cycle(only, true)
    }

    /// The names of the store's remotes, in the order they were added.
    pub fn remote_names(&self) -> Vec<String> {
        self.shared
            .remotes()
            .map(|r| r.remotes.iter().map(|s| s.name.clone()).collect())
            .unwrap_or_default()
    }

    /// The browsable view of a remote (opened on first use).
    pub fn view(&self, name: &str) -> Result<Arc<RemoteView>, RemoteError> {
        // Read first: a changed remotes.json clears the views.
        let remotes = self.shared.remotes()?;
        let mut views = self.shared.views.lock();
        if let Some(v) = views.get(name) {
            return Ok(v.clone());
        }
        let spec = remotes.get(name)?;
        let view = Arc::new(RemoteView::new(
            Remote::open_with(spec, &self.shared.s3)?,
            self.shared.cache_bytes,
            spec.nodes.clone(),
        ));
        views.insert(name.to_string(), view.clone());
        Ok(view)
    }

    /// Every remote's status, as JSON.
    pub fn status(&self) -> serde_json::Value {
        self.shared.refresh_pending();
        let state = self.shared.state.lock();
        let map: serde_json::Map<String, serde_json::Value> = state
            .status
            .iter()
            .map(|(name, s)| (name.clone(), status_json(s)))
            .collect();
        serde_json::Value::Object(map)
    }
}

impl Replicator {
    /// Stops the thread: a push under way ends at its next chunk, leaving
    /// only objects that no snapshot names yet (the next push reuses them).
    pub fn stop(&self) {
        self.shared.cancel.store(true, Ordering::Relaxed);
        self.shared.state.lock().stop = true;
        self.shared.wake.notify_all();
        let thread = self.thread.lock().take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        self.stop();
    }
}

fn time_json(t: Option<Time>) -> serde_json::Value {
    t.map(|t| serde_json::Value::String(rfc3339(t)))
        .unwrap_or(serde_json::Value::Null)
}

fn status_json(s: &RemoteStatus) -> serde_json::Value {
    serde_json::json!({
        "url": s.url,
        "snapshots_pending": s.snapshots_pending,
        "bytes_pending": s.bytes_pending,
        "snapshots_pushed": s.snapshots_pushed,
        "last_push": time_json(s.last_push),
        "last_attempt": time_json(s.last_attempt),
        "last_error": s.last_error,
        "last_push_bytes_uploaded": s.last_report.as_ref().map(|r| r.bytes_uploaded),
        "last_push_logical_bytes": s.last_report.as_ref().map(|r| r.logical_bytes),
    })
}

impl Shared {
    /// The store's remotes, read again only when `remotes.json` changed
    /// (`ckptfs remote add|remove` or `snapshot --global` meanwhile): then
    /// the views are reopened and a push is due, so that a new remote gets
    /// the snapshots taken before it was added.
    fn remotes(&self) -> Result<Arc<Remotes>, RemoteError> {
        let path = self.store_dir.join(super::spec::REMOTES_FILE);
        let mtime = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        let mut cached = self.remotes.lock();
        if cached.0 == mtime && mtime.is_some() {
            return Ok(cached.1.clone());
        }
        let fresh = Arc::new(Remotes::load(&self.store_dir)?);
        if *fresh != *cached.1 {
            self.views.lock().clear();
            if self.pushes {
                self.state.lock().requested = true;
                self.wake.notify_all();
            }
        }
        *cached = (mtime, fresh.clone());
        Ok(fresh)
    }

    fn run(&self) {
        let mut last = Instant::now();
        loop {
            {
                let mut state = self.state.lock();
                loop {
                    if state.stop {
                        return;
                    }
                    let pending = state
                        .status
                        .values()
                        .any(|s| s.snapshots_pending > 0 || s.last_error.is_some());
                    if state.requested || (pending && last.elapsed() >= self.retry) {
                        break;
                    }
                    self.wake.wait_for(&mut state, Duration::from_secs(1));
                    // A remote added meanwhile raises `requested`.
                    drop(state);
                    let _ = self.remotes();
                    state = self.state.lock();
                }
                state.requested = false;
            }
            last = Instant::now();
            // Errors are kept in the status and logged; the loop goes on.
            let _ = self.cycle(None, false);
        }
    }

    /// Pushes to every remote (or `only`). With `strict`, the first
    /// failure is returned; otherwise failures are only recorded.
    fn cycle(
        &self,
        only: Option<&str>,
        strict: bool,
    ) -> Result<Vec<(String, PushReport)>, RemoteError> {
        let _one_at_a_time = self.pushing.lock();
        let remotes = self.remotes()?;
        if let Some(name) = only {
            remotes.get(name)?;
        }
        let mut reports = Vec::new();
        let mut first_error = None;
        for spec in &remotes.remotes {
            if only.is_some_and(|o| o != spec.name) {
                continue;
            }
            match self.push_one(&remotes, spec) {
                Ok(r) => reports.push((spec.name.clone(), r)),
                Err(e) => {
                    if first_error.is_none() {
                        first_error = Some(e);
                    }
                }
            }
        }
        {
            let mut state = self.state.lock();
            let names: HashSet<&str> = remotes.remotes.iter().map(|r| r.name.as_str()).collect();
            state.status.retain(|n, _| names.contains(n.as_str()));
        }
        self.refresh_pending();
        match first_error {
            Some(e) if strict => Err(e),
            _ => Ok(reports),
        }
    }

    fn push_one(&self, remotes: &Remotes, spec: &RemoteSpec) -> Result<PushReport, RemoteError> {
        let node = remotes.node.as_str();
        let attempt = Time::now();
        let cache = self.store_dir.join("remote-cache").join(&spec.name);
        let local: Vec<Vec<u8>> = self
            .tree
            .snapshots()?
            .into_iter()
            .map(|(_, r)| r.name)
            .collect();
        let result = Remote::open_with(spec, &self.s3).and_then(|remote| {
            let opts = PushOptions {
                only: None,
                cache: Some(&cache),
                cancel: Some(&self.cancel),
                globals: &remotes.globals,
            };
            push(&self.tree, &remote, node, opts)
        });
        let mut state = self.state.lock();
        let status = state.status.entry(spec.name.clone()).or_default();
        status.url = spec.url.clone();
        status.last_attempt = Some(attempt);
        match &result {
            Ok(report) => {
                status.last_push = Some(Time::now());
                status.last_error = None;
                status.last_report = Some(report.clone());
                if !report.snapshots.is_empty() {
                    log::info!(
                        "replicated {} snapshots to {} ({}): {} bytes uploaded for {} logical",
                        report.snapshots.len(),
                        spec.name,
                        spec.url,
                        report.bytes_uploaded,
                        report.logical_bytes
                    );
                }
                state
                    .pushed
                    .insert(spec.name.clone(), local.into_iter().collect());
            }
            Err(e) => {
                status.last_error = Some(e.to_string());
                log::error!("replication to {} ({}) failed: {e}", spec.name, spec.url);
            }
        }
        result
    }

    /// Recounts what each remote lacks from the local snapshot list.
    fn refresh_pending(&self) {
        let Ok(local) = self.tree.snapshots() else {
            return;
        };
        let Ok(remotes) = self.remotes() else {
            return;
        };
        let mut state = self.state.lock();
        for spec in &remotes.remotes {
            let (mut n, mut bytes, mut done) = (0, 0, 0);
            let pushed = state.pushed.get(&spec.name);
            for (_, r) in &local {
                if pushed.is_some_and(|p| p.contains(&r.name)) {
                    done += 1;
                } else {
                    n += 1;
                    bytes += r.logical_bytes;
                }
            }
            let status = state.status.entry(spec.name.clone()).or_default();
            status.url = spec.url.clone();
            status.snapshots_pending = n;
            status.bytes_pending = bytes;
            status.snapshots_pushed = done;
        }
    }
}
