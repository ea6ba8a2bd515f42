//! Deciding which snapshots and per-file versions are kept and which
//! expire, from plain descriptions of them and a [`Policy`].
//!
//! Snapshots are ordered newest first by creation time, then sequence
//! number, then id. The newest snapshot and pinned ones are always kept;
//! otherwise a snapshot is kept when any rule keeps it, and every reason
//! that applies is recorded. With no rule at all everything is kept.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use super::policy::Policy;

/// What the planner needs to know of a snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotInfo {
    /// The snapshot's id (unique).
    pub id: u64,
    /// Its sequence number (`keep-every` uses it).
    pub seq: u64,
    /// Its name, for display.
    pub name: String,
    /// When it was taken.
    pub created: SystemTime,
    /// Pinned by the user: never expires.
    pub pinned: bool,
    /// The policy's metric for it, if it could be read.
    pub metric: Option<f64>,
}

/// Why a snapshot is kept. The order is the order reasons are listed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The user pinned it.
    Pinned,
    /// It is the newest snapshot.
    Newest,
    /// `keep-last`.
    Last,
    /// `keep-within`.
    Within,
    /// `keep-hourly`.
    Hourly,
    /// `keep-daily`.
    Daily,
    /// `keep-every`.
    Every,
    /// `keep-best`.
    Best,
    /// `keep-best` with `keep-without-metric`: its metric is unknown.
    WithoutMetric,
    /// The policy has no rules, so everything is kept.
    NoPolicy,
}

impl Reason {
    /// The word shown to users (the policy key, where there is one).
    pub fn label(&self) -> &'static str {
        match self {
            Reason::Pinned => "pinned",
            Reason::Newest => "newest",
            Reason::Last => "keep-last",
            Reason::Within => "keep-within",
            Reason::Hourly => "keep-hourly",
            Reason::Daily => "keep-daily",
            Reason::Every => "keep-every",
            Reason::Best => "keep-best",
            Reason::WithoutMetric => "keep-without-metric",
            Reason::NoPolicy => "no-policy",
        }
    }
}

/// The outcome: every input snapshot is in exactly one of the lists, each
/// newest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Kept snapshot ids, each with its reasons (sorted, never empty).
    pub kept: Vec<(u64, Vec<Reason>)>,
    /// Ids of the snapshots to expire.
    pub expiring: Vec<u64>,
}

impl Plan {
    /// The reasons a snapshot is kept, or `None` if it expires (or is
    /// unknown).
    pub fn reasons(&self, id: u64) -> Option<&[Reason]> {
        self.kept
            .iter()
            .find(|(k, _)| *k == id)
            .map(|(_, r)| r.as_slice())
    }
}

/// Seconds since the epoch, floored (negative before 1970).
fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let d = e.duration();
            let whole = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            -whole - i64::from(d.subsec_nanos() > 0)
        }
    }
}

/// A count from the policy as a usize (0 when unset).
fn n(v: Option<u64>) -> usize {
    v.map_or(0, |v| usize::try_from(v).unwrap_or(usize::MAX))
}

/// Keeps, walking newest first, the first snapshot of each new bucket
/// until `count` buckets are used (restic's keep-hourly/keep-daily).
fn keep_buckets(order: &[&SnapshotInfo], width: i64, count: usize, mut keep: impl FnMut(usize)) {
    let mut last = None;
    let mut used = 0;
    for (pos, s) in order.iter().enumerate() {
        if used == count {
            break;
        }
        let bucket = unix_secs(s.created).div_euclid(width);
        if last != Some(bucket) {
            keep(pos);
            last = Some(bucket);
            used += 1;
        }
    }
}

/// Decides which snapshots `policy` keeps at time `now`.
pub fn plan(snapshots: &[SnapshotInfo], policy: &Policy, now: SystemTime) -> Plan {
    let mut order: Vec<&SnapshotInfo> = snapshots.iter().collect();
    order.sort_by_key(|s| Reverse((s.created, s.seq, s.id)));
    let mut reasons: Vec<Vec<Reason>> = vec![Vec::new(); order.len()];
    // Rules run in `Reason` order, so each list comes out sorted.
    for (pos, s) in order.iter().enumerate() {
        if s.pinned {
            reasons[pos].push(Reason::Pinned);
        }
    }
    if let Some(r) = reasons.first_mut() {
        r.push(Reason::Newest);
    }
    for r in reasons.iter_mut().take(n(policy.keep_last)) {
        r.push(Reason::Last);
    }
    if let Some(within) = policy.keep_within.filter(|d| !d.is_zero()) {
        for (pos, s) in order.iter().enumerate() {
            // A snapshot from the future (clock skew) is within too.
            let young = now
                .duration_since(s.created)
                .map_or(true, |age| age <= within);
            if young {
                reasons[pos].push(Reason::Within);
            }
        }
    }
    keep_buckets(&order, 3_600, n(policy.keep_hourly), |pos| {
        reasons[pos].push(Reason::Hourly)
    });
    keep_buckets(&order, 86_400, n(policy.keep_daily), |pos| {
        reasons[pos].push(Reason::Daily)
    });
    if let Some(every) = policy.keep_every.filter(|e| *e > 0) {
        for (pos, s) in order.iter().enumerate() {
            if s.seq % every == 0 {
                reasons[pos].push(Reason::Every);
            }
        }
    }
    if let Some(best) = policy.keep_best.filter(|k| *k > 0) {
        let mode = policy.metric.as_ref().map(|m| m.mode).unwrap_or_default();
        let finite = |s: &SnapshotInfo| s.metric.filter(|m| m.is_finite());
        let mut scored: Vec<(usize, f64)> = order
            .iter()
            .enumerate()
            .filter_map(|(pos, s)| finite(s).map(|m| (pos, m)))
            .collect();
        // Best first; on a tie the newer snapshot (smaller pos) wins.
        scored.sort_by(|a, b| mode.best_first(a.1, b.1).then(a.0.cmp(&b.0)));
        let mut best_pos: Vec<usize> = scored.iter().take(n(Some(best))).map(|p| p.0).collect();
        best_pos.sort_unstable();
        for pos in best_pos {
            reasons[pos].push(Reason::Best);
        }
        if policy.keep_without_metric {
            for (pos, s) in order.iter().enumerate() {
                if finite(s).is_none() {
                    reasons[pos].push(Reason::WithoutMetric);
                }
            }
        }
    }
    if !policy.has_rules() {
        for r in &mut reasons {
            r.push(Reason::NoPolicy);
        }
    }
    let mut out = Plan::default();
    for (s, r) in order.iter().zip(reasons) {
        if r.is_empty() {
            out.expiring.push(s.id);
        } else {
            out.kept.push((s.id, r));
        }
    }
    out
}

/// What the planner needs to know of one committed version of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VersionInfo {
    /// The version's id.
    pub id: u64,
    /// The file (path) it is a version of.
    pub path_id: u64,
    /// Its sequence number among the file's versions (higher is newer).
    pub seq: u64,
}

/// The ids (ascending) of per-file versions to expire. Versions in `held`
/// (held by a kept snapshot) never expire, nor does the newest version of
/// each path; of the others, each path keeps its `file-versions-keep`
/// newest by `seq`. With `file-versions-keep` unset nothing expires.
pub fn plan_file_versions(
    versions: &[VersionInfo],
    policy: &Policy,
    held: &HashSet<u64>,
) -> Vec<u64> {
    let Some(keep) = policy.file_versions_keep else {
        return Vec::new();
    };
    let keep = n(Some(keep));
    let mut by_path: HashMap<u64, Vec<&VersionInfo>> = HashMap::new();
    for v in versions {
        by_path.entry(v.path_id).or_default().push(v);
    }
    let mut expiring = Vec::new();
    for mut list in by_path.into_values() {
        list.sort_by_key(|v| Reverse((v.seq, v.id)));
        let newest = list.first().map(|v| v.id);
        let free = list.iter().filter(|v| !held.contains(&v.id));
        for v in free.skip(keep) {
            if Some(v.id) != newest {
                expiring.push(v.id);
            }
        }
    }
    expiring.sort_unstable();
    expiring
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::retention::metric::MetricMode;

    /// 2024-01-01T00:00:00Z, a day boundary.
    const DAY0: u64 = 1_704_067_200;
    const H: u64 = 3_600;
    const D: u64 = 86_400;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// Snapshot `id` with seq = id, taken `secs` after DAY0.
    fn snap(id: u64, secs: u64) -> SnapshotInfo {
        SnapshotInfo {
            id,
            seq: id,
            name: format!("snap-{id}"),
            created: at(DAY0 + secs),
            pinned: false,
            metric: None,
        }
    }

    /// Snapshots 1..=count, one an hour.
    fn hourly(count: u64) -> Vec<SnapshotInfo> {
        (1..=count).map(|i| snap(i, i * H)).collect()
    }

    fn policy(text: &str) -> Policy {
        Policy::parse(text).unwrap()
    }

    fn kept_ids(p: &Plan) -> Vec<u64> {
        p.kept.iter().map(|(id, _)| *id).collect()
    }

    fn with_metrics(metrics: &[Option<f64>]) -> Vec<SnapshotInfo> {
        (1..=metrics.len() as u64)
            .map(|i| SnapshotInfo {
                metric: metrics[i as usize - 1],
                ..snap(i, i * H)
            })
            .collect()
    }

    const BEST: &str = "keep-best = 2\nmetric-regex = loss=([0-9.]+)\n";

    #[test]
    fn empty_policy_keeps_everything() {
        let snaps = hourly(5);
        let p = plan(&snaps, &Policy::default(), at(DAY0 + 10 * D));
        assert_eq!(kept_ids(&p), vec![5, 4, 3, 2, 1]);
        assert!(p.expiring.is_empty());
        assert_eq!(p.reasons(5), Some(&[Reason::Newest, Reason::NoPolicy][..]));
        assert_eq!(p.reasons(1), Some(&[Reason::NoPolicy][..]));
        // A policy with only non-rule keys has no rules either.
        let p2 = plan(
            &snaps,
            &policy("file-versions-keep = 2\ngc-interval = 1h\n"),
            at(DAY0),
        );
        assert_eq!(p2.kept.len(), 5);
        assert!(plan(&[], &Policy::default(), at(DAY0)).kept.is_empty());
    }

    #[test]
    fn keep_last_alone_and_newest_always() {
        let snaps = hourly(5);
        let p = plan(&snaps, &policy("keep-last = 2"), at(DAY0));
        assert_eq!(kept_ids(&p), vec![5, 4]);
        assert_eq!(p.expiring, vec![3, 2, 1]);
        assert_eq!(p.reasons(5), Some(&[Reason::Newest, Reason::Last][..]));
        assert_eq!(p.reasons(4), Some(&[Reason::Last][..]));
        assert_eq!(p.reasons(3), None);
        // A rule that keeps nothing still leaves the newest.
        let p = plan(&snaps, &policy("keep-every = 100"), at(DAY0));
        assert_eq!(p.kept, vec![(5, vec![Reason::Newest])]);
    }

    #[test]
    fn newest_is_by_time_not_input_order() {
        let mut snaps = hourly(3);
        snaps.reverse();
        snaps.push(SnapshotInfo {
            seq: 9,
            ..snap(7, 3 * H)
        }); // same time as 3, later seq
        let p = plan(&snaps, &policy("keep-last = 1"), at(DAY0));
        assert_eq!(kept_ids(&p), vec![7]);
        assert_eq!(p.expiring, vec![3, 2, 1]);
    }

    #[test]
    fn pinned_is_always_kept() {
        let mut snaps = hourly(5);
        snaps[0].pinned = true;
        snaps[4].pinned = true;
        let p = plan(&snaps, &policy("keep-last = 1"), at(DAY0));
        assert_eq!(p.reasons(1), Some(&[Reason::Pinned][..]));
        assert_eq!(
            p.reasons(5),
            Some(&[Reason::Pinned, Reason::Newest, Reason::Last][..])
        );
        assert_eq!(p.expiring, vec![4, 3, 2]);
    }

    #[test]
    fn keep_within_is_inclusive_at_the_edge() {
        let snaps = hourly(5); // at 1h..5h
        let p = plan(&snaps, &policy("keep-within = 2h"), at(DAY0 + 5 * H));
        // Ages 0h, 1h, 2h are within; 3h and 4h are not.
        assert_eq!(kept_ids(&p), vec![5, 4, 3]);
        let p = plan(&snaps, &policy("keep-within = 2h"), at(DAY0 + 5 * H + 1));
        assert_eq!(kept_ids(&p), vec![5, 4]);
        // Snapshots from the future (clock skew) count as within.
        let p = plan(&snaps, &policy("keep-within = 1h"), at(DAY0));
        assert_eq!(p.kept.len(), 5);
        assert!(p.expiring.is_empty());
        // Long ago: only the newest stays.
        let p = plan(&snaps, &policy("keep-within = 1d"), at(DAY0 + 30 * D));
        assert_eq!(p.kept, vec![(5, vec![Reason::Newest])]);
    }

    #[test]
    fn keep_hourly_takes_the_newest_of_each_hour() {
        let snaps = vec![
            snap(1, 10 * 60),
            snap(2, 50 * 60),
            snap(3, H + 5 * 60),
            snap(4, H + 59 * 60 + 59),
            snap(5, 3 * H), // 2h has none; 3h starts here
            snap(6, 3 * H + 1),
        ];
        let p = plan(&snaps, &policy("keep-hourly = 3"), at(DAY0 + D));
        assert_eq!(kept_ids(&p), vec![6, 4, 2]);
        assert_eq!(p.reasons(4), Some(&[Reason::Hourly][..]));
        let p = plan(&snaps, &policy("keep-hourly = 10"), at(DAY0 + D));
        assert_eq!(kept_ids(&p), vec![6, 4, 2]);
        let p = plan(&snaps, &policy("keep-hourly = 1"), at(DAY0 + D));
        assert_eq!(p.kept, vec![(6, vec![Reason::Newest, Reason::Hourly])]);
    }

    #[test]
    fn keep_daily_buckets_by_utc_day_across_boundaries() {
        let snaps = vec![
            snap(1, 12 * H),         // day 0
            snap(2, D - 60),         // day 0, 23:59
            snap(3, D - 1),          // day 0, 23:59:59
            snap(4, D),              // day 1, 00:00:00
            snap(5, D + 6 * H),      // day 1
            snap(6, 3 * D + 23 * H), // day 3 (day 2 empty)
        ];
        let p = plan(&snaps, &policy("keep-daily = 2"), at(DAY0 + 4 * D));
        assert_eq!(kept_ids(&p), vec![6, 5]);
        let p = plan(&snaps, &policy("keep-daily = 3"), at(DAY0 + 4 * D));
        assert_eq!(kept_ids(&p), vec![6, 5, 3]);
        assert_eq!(p.reasons(3), Some(&[Reason::Daily][..]));
        assert_eq!(p.expiring, vec![4, 2, 1]);
    }

    #[test]
    fn buckets_work_before_the_epoch() {
        let before = |id, secs_before: u64| SnapshotInfo {
            created: UNIX_EPOCH - Duration::from_secs(secs_before),
            ..snap(id, 0)
        };
        // 1969-12-31 23:30 and 23:59:59.5 are one day; 1970-01-01 another.
        let mut s2 = before(2, 0);
        s2.created = UNIX_EPOCH - Duration::from_millis(500);
        let snaps = vec![before(1, 1_800), s2, snap(3, 0)];
        let mut p = policy("keep-daily = 2");
        let out = plan(&snaps, &p, at(DAY0));
        assert_eq!(kept_ids(&out), vec![3, 2]);
        p.keep_daily = None;
        p.keep_hourly = Some(5);
        assert_eq!(kept_ids(&plan(&snaps, &p, at(DAY0))), vec![3, 2]);
    }

    #[test]
    fn keep_every_uses_seq() {
        let snaps = hourly(10);
        let p = plan(&snaps, &policy("keep-every = 3"), at(DAY0));
        assert_eq!(kept_ids(&p), vec![10, 9, 6, 3]);
        assert_eq!(p.reasons(10), Some(&[Reason::Newest][..]));
        assert_eq!(p.reasons(6), Some(&[Reason::Every][..]));
        let zero = vec![
            SnapshotInfo {
                seq: 0,
                ..snap(1, 0)
            },
            snap(2, H),
        ];
        let p = plan(&zero, &policy("keep-every = 5"), at(DAY0));
        assert_eq!(p.reasons(1), Some(&[Reason::Every][..]));
    }

    #[test]
    fn keep_best_min_and_max() {
        let snaps = with_metrics(&[Some(0.9), Some(0.3), Some(0.5), Some(0.1), Some(0.7)]);
        let p = plan(&snaps, &policy(BEST), at(DAY0));
        assert_eq!(kept_ids(&p), vec![5, 4, 2]);
        assert_eq!(p.reasons(4), Some(&[Reason::Best][..]));
        assert_eq!(p.reasons(5), Some(&[Reason::Newest][..]));
        let max = policy(&format!("{BEST}metric-mode = max\n"));
        assert_eq!(max.metric.as_ref().unwrap().mode, MetricMode::Max);
        let p = plan(&snaps, &max, at(DAY0));
        assert_eq!(kept_ids(&p), vec![5, 1]);
        assert_eq!(p.reasons(5), Some(&[Reason::Newest, Reason::Best][..]));
    }

    #[test]
    fn keep_best_ties_go_to_the_newer_snapshot() {
        let snaps = with_metrics(&[Some(0.2), Some(0.2), Some(0.2), Some(0.9)]);
        let p = plan(&snaps, &policy(BEST), at(DAY0));
        // 3 and 2 tie with 1; the newer two win, exactly two are kept.
        assert_eq!(kept_ids(&p), vec![4, 3, 2]);
        assert_eq!(p.expiring, vec![1]);
    }

    #[test]
    fn keep_best_with_missing_metrics() {
        let nan = Some(f64::NAN);
        let inf = Some(f64::INFINITY);
        let snaps = with_metrics(&[Some(0.5), None, nan, Some(0.4), inf, Some(0.6), Some(0.1)]);
        let p = plan(&snaps, &policy(BEST), at(DAY0));
        // Best two are 7 (0.1) and 4 (0.4); 2, 3, 5 have no usable metric.
        assert_eq!(kept_ids(&p), vec![7, 5, 4, 3, 2]);
        assert_eq!(p.reasons(5), Some(&[Reason::WithoutMetric][..]));
        assert_eq!(p.reasons(7), Some(&[Reason::Newest, Reason::Best][..]));
        let strict = policy(&format!("{BEST}keep-without-metric = false\n"));
        let p = plan(&snaps, &strict, at(DAY0));
        assert_eq!(kept_ids(&p), vec![7, 4]);
        assert_eq!(p.expiring, vec![6, 5, 3, 2, 1]);
        // The newest is kept even without a metric.
        let snaps = with_metrics(&[Some(0.5), None]);
        let p = plan(&snaps, &strict, at(DAY0));
        assert_eq!(
            p.kept,
            vec![(2, vec![Reason::Newest]), (1, vec![Reason::Best])]
        );
    }

    #[test]
    fn rules_combine_as_a_union_with_every_reason() {
        let mut snaps = with_metrics(&[
            Some(0.1),
            Some(0.9),
            Some(0.8),
            Some(0.7),
            Some(0.6),
            Some(0.5),
        ]);
        snaps[1].pinned = true;
        let text = format!("keep-last = 2\nkeep-every = 3\nkeep-within = 1h\n{BEST}");
        let mut pol = policy(&text);
        pol.keep_best = Some(1);
        let p = plan(&snaps, &pol, at(DAY0 + 6 * H));
        assert_eq!(kept_ids(&p), vec![6, 5, 3, 2, 1]);
        assert_eq!(
            p.reasons(6),
            Some(&[Reason::Newest, Reason::Last, Reason::Within, Reason::Every][..])
        );
        assert_eq!(p.reasons(5), Some(&[Reason::Last, Reason::Within][..]));
        assert_eq!(p.reasons(3), Some(&[Reason::Every][..]));
        assert_eq!(p.reasons(2), Some(&[Reason::Pinned][..]));
        assert_eq!(p.reasons(1), Some(&[Reason::Best][..]));
        assert_eq!(p.expiring, vec![4]);
        let total = p.kept.len() + p.expiring.len();
        assert_eq!(total, snaps.len());
    }

    #[test]
    fn reason_labels() {
        let all = [
            (Reason::Pinned, "pinned"),
            (Reason::Newest, "newest"),
            (Reason::Last, "keep-last"),
            (Reason::Within, "keep-within"),
            (Reason::Hourly, "keep-hourly"),
            (Reason::Daily, "keep-daily"),
            (Reason::Every, "keep-every"),
            (Reason::Best, "keep-best"),
            (Reason::WithoutMetric, "keep-without-metric"),
            (Reason::NoPolicy, "no-policy"),
        ];
        for (r, label) in all {
            assert_eq!(r.label(), label);
        }
    }

    fn v(id: u64, path_id: u64, seq: u64) -> VersionInfo {
        VersionInfo { id, path_id, seq }
    }

    #[test]
    fn file_versions_unset_keeps_all() {
        let versions: Vec<_> = (1..=5).map(|i| v(i, 1, i)).collect();
        let none = plan_file_versions(&versions, &Policy::default(), &HashSet::new());
        assert!(none.is_empty());
    }

    #[test]
    fn file_versions_keep_the_newest_per_path() {
        // Path 1: seq 1..=5 (ids 11..=15); path 2: seq 1..=2 (ids 21, 22).
        let mut versions: Vec<_> = (1..=5).map(|i| v(10 + i, 1, i)).collect();
        versions.extend([v(22, 2, 2), v(21, 2, 1)]);
        let two = policy("file-versions-keep = 2");
        assert_eq!(
            plan_file_versions(&versions, &two, &HashSet::new()),
            vec![11, 12, 13]
        );
        // Held versions never expire and do not use up the count.
        let held: HashSet<u64> = [15, 12].into_iter().collect();
        assert_eq!(plan_file_versions(&versions, &two, &held), vec![11]);
        // 0 still keeps the newest of each path.
        let zero = policy("file-versions-keep = 0");
        assert_eq!(zero.file_versions_keep, Some(0));
        assert_eq!(
            plan_file_versions(&versions, &zero, &HashSet::new()),
            vec![11, 12, 13, 14, 21]
        );
        // Even when the newest is held, it is not counted against the rest.
        let held: HashSet<u64> = [15].into_iter().collect();
        let one = policy("file-versions-keep = 1");
        assert_eq!(
            plan_file_versions(&versions, &one, &held),
            vec![11, 12, 13, 21]
        );
        assert!(plan_file_versions(&[], &one, &held).is_empty());
    }
}
