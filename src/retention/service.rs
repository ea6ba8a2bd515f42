//! The retention service of a mounted store: the current policy (stored
//! in the store, editable through `.ckpt/retention/policy`), the metric of
//! each snapshot (read from inside it, cached), the plan, the best
//! snapshot, and garbage collection runs. It glues the pure engine
//! ([`super::plan`], [`super::metric`]) to the tree.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use globset::{GlobBuilder, GlobMatcher};
use parking_lot::Mutex;

use super::metric::{metric_from_json, metric_from_names, metric_from_xattr, MetricSource};
use super::plan::{plan, plan_file_versions, Plan, SnapshotInfo, VersionInfo};
use super::policy::{Policy, PolicyError};
use crate::ids::{Ino, PathId, SnapId};
use crate::tree::{FileKind, GcStats, InodeRecord, Result, Scope, Time, Tree};

/// Bytes of a metric file read at most.
const METRIC_FILE_MAX: u64 = 16 << 20;

/// What a GC run did, for `retention/status` and `retention/gc`.
#[derive(Clone, Debug)]
pub struct GcReport {
    /// When it ran.
    pub at: Time,
    /// What it deleted and kept.
    pub stats: GcStats,
    /// Names of the snapshots it expired.
    pub expired: Vec<String>,
}

impl GcReport {
    /// The report as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let s = &self.stats;
        serde_json::json!({
            "at": crate::tree::rfc3339(self.at),
            "millis": s.millis,
            "snapshots_expired": self.expired,
            "versions_expired": s.versions_deleted,
            "manifests_deleted": s.manifests_deleted,
            "chunks_deleted": s.chunks_deleted,
            "bytes_freed": s.bytes_freed,
            "chunks_kept": s.chunks_kept,
            "bytes_kept": s.bytes_kept,
            "blobs_relocated": s.relocated,
            "packs_removed": s.packs_removed,
        })
    }
}

struct State {
    text: String,
    policy: Policy,
    last_error: Option<String>,
    metrics: HashMap<SnapId, Option<f64>>,
    last_gc: Option<GcReport>,
}

/// Retention for one mounted store.
pub struct Retention {
    tree: Arc<Tree>,
    state: Mutex<State>,
    gc_running: Mutex<()>,
}

/// Encodes a version as one id for the planner.
fn version_id(path: PathId, seq: u64) -> u64 {
    (path.0 << 28) | (seq & ((1 << 28) - 1))
}

impl Retention {
    /// Loads the stored policy (the default text when none was written).
    /// A stored policy that no longer parses keeps everything, and says so.
    pub fn new(tree: Arc<Tree>) -> Result<Retention> {
        let text = tree
            .policy_text()?
            .unwrap_or_else(|| Policy::default_text().to_string());
        let (policy, last_error) = match Policy::parse(&text) {
            Ok(p) => (p, None),
            Err(e) => {
                log::error!("stored retention policy is invalid ({e}); keeping every snapshot");
                (Policy::default(), Some(e.to_string()))
            }
        };
        Ok(Retention {
            tree,
            state: Mutex::new(State {
                text,
                policy,
                last_error,
                metrics: HashMap::new(),
                last_gc: None,
            }),
            gc_running: Mutex::new(()),
        })
    }

    /// The policy text as the user wrote it.
    pub fn policy_text(&self) -> String {
        self.state.lock().text.clone()
    }

    /// The policy in force.
    pub fn policy(&self) -> Policy {
        self.state.lock().policy.clone()
    }

    /// Replaces the policy. An invalid text is refused: the old policy
    /// stays, and the reason is logged and shown in `retention/status`.
    pub fn set_policy_text(&self, text: &str) -> std::result::Result<(), PolicyError> {
        match Policy::parse(text) {
            Ok(policy) => {
                if let Err(e) = self.tree.store_policy_text(text) {
                    log::error!("retention policy not stored: {e}");
                    return Err(PolicyError::Parse {
                        line: 0,
                        reason: format!("the store refused the write: {e}"),
                    });
                }
                let mut st = self.state.lock();
                st.text = text.to_string();
                st.policy = policy;
                st.last_error = None;
                st.metrics.clear();
                log::info!("retention policy updated");
                Ok(())
            }
            Err(e) => {
                self.note_refused(&e);
                Err(e)
            }
        }
    }

    /// Records a refused policy text (a failed write): the old policy stays.
    pub fn note_refused(&self, e: &PolicyError) {
        log::warn!("retention policy refused, the previous one stays: {e}");
        self.state.lock().last_error = Some(e.to_string());
    }

    /// The name of the configured metric, if any.
    pub fn metric_name(&self) -> Option<String> {
        self.state
            .lock()
            .policy
            .metric
            .as_ref()
            .map(|m| m.display_name().to_string())
    }

    /// A snapshot's metric under the current policy (cached).
    pub fn metric_of(&self, id: SnapId) -> Option<f64> {
        let spec = {
            let st = self.state.lock();
            if let Some(v) = st.metrics.get(&id) {
                return *v;
            }
            st.policy.metric.clone()?
        };
        let value = match self.read_metric(id, &spec.source, spec.mode) {
            Ok(v) => v,
            Err(e) => {
                log::warn!("metric of snapshot {}: {e}", id.0);
                None
            }
        };
        self.state.lock().metrics.insert(id, value);
        value
    }

    fn read_metric(
        &self,
        id: SnapId,
        source: &MetricSource,
        mode: super::MetricMode,
    ) -> Result<Option<f64>> {
        let scope = Scope::Snapshot(id);
        match source {
            MetricSource::Xattr(name) => Ok(self
                .tree
                .getxattr_in(scope, Ino::ROOT, name.as_bytes())
                .ok()
                .and_then(|v| metric_from_xattr(&v))),
            MetricSource::Regex(re) => {
                let mut names = Vec::new();
                self.walk(scope, |_, name, _| names.push(name.to_string()))?;
                Ok(metric_from_names(
                    names.iter().map(String::as_str),
                    re,
                    mode,
                ))
            }
            MetricSource::File { path, key } => {
                let Some(matcher) = PathPattern::new(path) else {
                    return Ok(None);
                };
                // The newest matching file: the checkpoint saved last.
                let mut best: Option<(Time, InodeRecord)> = None;
                self.walk(scope, |rel, _, rec| {
                    if rec.kind == FileKind::File
                        && matcher.matches(rel)
                        && best.as_ref().is_none_or(|(t, _)| rec.mtime > *t)
                    {
                        best = Some((rec.mtime, rec.clone()));
                    }
                })?;
                let Some((_, rec)) = best else {
                    return Ok(None);
                };
                let len = rec.size.min(METRIC_FILE_MAX) as u32;
                let bytes = self.tree.read_content(
                    rec.content,
                    rec.size,
                    0,
                    len,
                    &mut Default::default(),
                )?;
                Ok(metric_from_json(&String::from_utf8_lossy(&bytes), key))
            }
        }
    }

    /// Calls `f(relative path, name, record)` for every entry of a scope.
    fn walk(&self, scope: Scope, mut f: impl FnMut(&str, &str, &InodeRecord)) -> Result<()> {
        let mut stack = vec![(Ino::ROOT, String::new())];
        while let Some((dir, prefix)) = stack.pop() {
            let mut children = Vec::new();
            self.tree.readdir_in(scope, dir, 2, |item| {
                children.push((item.ino, String::from_utf8_lossy(item.name).into_owned()));
                true
            })?;
            for (ino, name) in children {
                let rec = self.tree.inode_in(scope, ino)?;
                let rel = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}/{name}")
                };
                f(&rel, &name, &rec);
                if rec.kind == FileKind::Dir {
                    stack.push((ino, rel));
                }
            }
        }
        Ok(())
    }

    /// The snapshots as the planner sees them.
    pub fn infos(&self) -> Result<Vec<SnapshotInfo>> {
        let snaps = self.tree.snapshots()?;
        Ok(snaps
            .into_iter()
            .map(|(id, rec)| SnapshotInfo {
                id: id.0,
                seq: rec.seq,
                name: String::from_utf8_lossy(&rec.name).into_owned(),
                created: rec.created.into(),
                pinned: rec.pinned,
                metric: self.metric_of(id),
            })
            .collect())
    }

    /// What the policy keeps and what the next GC removes, as of now.
    pub fn plan(&self) -> Result<Plan> {
        let infos = self.infos()?;
        Ok(plan(&infos, &self.policy(), SystemTime::now()))
    }

    /// The best snapshot by the configured metric, if a metric is set and
    /// some snapshot has a value.
    pub fn best(&self) -> Result<Option<SnapId>> {
        let Some(spec) = self.policy().metric else {
            return Ok(None);
        };
        let mut best: Option<(f64, u64)> = None;
        for info in self.infos()? {
            if let Some(m) = info.metric {
                let better = match best {
                    None => true,
                    Some((b, seq)) => match spec.mode.best_first(m, b) {
                        std::cmp::Ordering::Less => true,
                        std::cmp::Ordering::Equal => info.seq > seq,
                        std::cmp::Ordering::Greater => false,
                    },
                };
                if better {
                    best = Some((m, info.seq));
                }
            }
        }
        Ok(best.map(|(_, seq)| SnapId(seq)))
    }

    /// Applies the policy: deletes expired snapshots and file versions,
    /// then collects garbage. One run at a time.
    pub fn run_gc(&self) -> Result<GcReport> {
        let _one = self.gc_running.lock();
        let plan = self.plan()?;
        let infos = self.infos()?;
        let expired: Vec<String> = infos
            .iter()
            .filter(|i| plan.expiring.contains(&i.id))
            .map(|i| i.name.clone())
            .collect();
        let mut held = HashSet::new();
        for (id, _) in &plan.kept {
            held.extend(self.tree.snapshot_manifests(SnapId(*id))?);
        }
        let versions = self.tree.all_versions()?;
        let held_ids: HashSet<u64> = versions
            .iter()
            .filter(|(_, _, m)| held.contains(m))
            .map(|(p, s, _)| version_id(*p, *s))
            .collect();
        let infos_v: Vec<VersionInfo> = versions
            .iter()
            .map(|(p, s, _)| VersionInfo {
                id: version_id(*p, *s),
                path_id: p.0,
                seq: *s,
            })
            .collect();
        let policy = self.policy();
        let mut expire_versions: HashSet<u64> = plan_file_versions(&infos_v, &policy, &held_ids)
            .into_iter()
            .collect();
        if policy.file_versions_keep == Some(0) {
            // The planner keeps each path's newest version: right for live
            // files (it is their content), not for deleted ones.
            let live = self.tree.live_history_paths()?;
            let mut newest: HashMap<PathId, u64> = HashMap::new();
            for (p, s, _) in &versions {
                let e = newest.entry(*p).or_insert(*s);
                *e = (*e).max(*s);
            }
            for (p, s) in newest {
                let id = version_id(p, s);
                if !live.contains(&p) && !held_ids.contains(&id) {
                    expire_versions.insert(id);
                }
            }
        }
        let versions_to_delete: Vec<(PathId, u64)> = versions
            .iter()
            .filter(|(p, s, _)| expire_versions.contains(&version_id(*p, *s)))
            .map(|(p, s, _)| (*p, *s))
            .collect();
        let snapshots: Vec<SnapId> = plan.expiring.iter().map(|id| SnapId(*id)).collect();
        let names: HashMap<u64, &str> = infos.iter().map(|i| (i.id, i.name.as_str())).collect();
        self.tree.emit_event(
            "retention",
            serde_json::json!({
                "kept": plan.kept.iter().map(|(id, r)| serde_json::json!({
                    "snapshot": names.get(id).copied().unwrap_or_default(),
                    "rules": r.iter().map(|x| x.label()).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "expiring": expired,
                "versions_expiring": versions_to_delete.len(),
            }),
        );
        let stats = self.tree.collect_garbage(&snapshots, &versions_to_delete)?;
        let report = GcReport {
            at: Time::now(),
            stats,
            expired,
        };
        let mut st = self.state.lock();
        for id in &snapshots {
            st.metrics.remove(id);
        }
        st.last_gc = Some(report.clone());
        Ok(report)
    }

    /// The last GC run, if any since the mount.
    pub fn last_gc(&self) -> Option<GcReport> {
        self.state.lock().last_gc.clone()
    }

    /// `retention/status`: whether the policy is valid (and why not), what
    /// it keeps and expires, and the last GC.
    pub fn status_json(&self) -> serde_json::Value {
        let (error, has_rules) = {
            let st = self.state.lock();
            (st.last_error.clone(), st.policy.has_rules())
        };
        let plan = self.plan();
        let names: HashMap<u64, String> = self
            .infos()
            .map(|v| v.into_iter().map(|i| (i.id, i.name)).collect())
            .unwrap_or_default();
        let name = |id: &u64| names.get(id).cloned().unwrap_or_default();
        serde_json::json!({
            "policy": if error.is_some() { "invalid: the previous policy is in force" } else { "ok" },
            "error": error,
            "rules": has_rules,
            "metric": self.metric_name(),
            "kept": plan.as_ref().map(|p| p.kept.iter().map(|(id, r)| serde_json::json!({
                "snapshot": name(id),
                "rules": r.iter().map(|x| x.label()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>()).unwrap_or_default(),
            "expiring": plan.as_ref().map(|p| p.expiring.iter().map(name).collect::<Vec<_>>()).unwrap_or_default(),
            "last_gc": self.last_gc().map(|r| r.to_json()),
        })
    }
}

/// A `metric-file` pattern: a glob over paths relative to the snapshot
/// root; without a `/` it matches file names at any depth.
struct PathPattern {
    matcher: GlobMatcher,
    basename_only: bool,
}

impl PathPattern {
    fn new(pattern: &str) -> Option<PathPattern> {
        let glob = GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .ok()?;
        Some(PathPattern {
            matcher: glob.compile_matcher(),
            basename_only: !pattern.contains('/'),
        })
    }

    fn matches(&self, rel: &str) -> bool {
        if self.basename_only {
            let base = rel.rsplit('/').next().unwrap_or(rel);
            self.matcher.is_match(base)
        } else {
            self.matcher.is_match(rel)
        }
    }
}
