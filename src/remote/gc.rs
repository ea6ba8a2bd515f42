//! Remote retention and garbage collection, safe while other nodes push.
//!
//! 1. Retention: the policy (the remote's own, or the store's) is applied
//!    to each node's snapshots; expired snapshot records are deleted first,
//!    so no reader starts on them.
//! 2. Mark: every chunk and manifest the remaining snapshots use is live,
//!    and so is every manifest younger than the grace period (a push
//!    writes manifests before its snapshot record).
//! 3. Sweep in two phases, as kopia and restic's prune do: an unreferenced
//!    pack or manifest older than the grace period is first *condemned*
//!    (a `condemned/` marker); pushes treat condemned objects as absent
//!    and upload those chunks again. Only a later run, once the marker
//!    itself is older than the grace period and the object is still
//!    unreferenced, deletes it. A pack referenced again meanwhile is
//!    rescued (its marker removed). So a chunk that a node uploaded but
//!    has not referenced yet, or deduplicated against just before the
//!    condemnation, is never deleted, as long as a push takes less than
//!    the grace period.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::catalog::{self, ChunkCatalog};
use super::layout::{self, RemoteSnapshot};
use super::{Remote, Result};
use crate::ids::ChunkId;
use crate::retention::{plan, Policy, SnapshotInfo};
use crate::tree::Entry;

/// Where condemnation markers live: `condemned/packs/ID`,
/// `condemned/manifests/HASH`.
pub const CONDEMNED: &str = "condemned";

/// What a remote GC run is asked to do.
pub struct RemoteGcOptions<'a> {
    /// The retention policy (None: no snapshot expires, only garbage goes).
    pub policy: Option<&'a Policy>,
    /// How old an unreferenced object must be before it is condemned, and
    /// a condemnation before the object is deleted.
    pub grace: Duration,
    /// Decide and report only.
    pub dry_run: bool,
}

/// What a remote GC run did (or, dry, would do).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RemoteGcReport {
    /// Snapshots expired by the policy (`NODE/NAME`).
    pub snapshots_expired: Vec<String>,
    /// Snapshots kept.
    pub snapshots_kept: u64,
    /// Packs that hold live chunks.
    pub packs_live: u64,
    /// Unreferenced packs younger than the grace period (a push may still
    /// reference them).
    pub packs_young: u64,
    /// Packs condemned by this run.
    pub packs_condemned: u64,
    /// Condemned packs referenced again, and rescued.
    pub packs_rescued: u64,
    /// Packs deleted (condemned longer than the grace period).
    pub packs_deleted: u64,
    /// Their bytes.
    pub bytes_freed: u64,
    /// Manifests condemned, and deleted.
    pub manifests_condemned: u64,
    /// Manifests deleted.
    pub manifests_deleted: u64,
}

fn age(now: i64, modified: i64) -> Duration {
    Duration::from_secs(now.saturating_sub(modified).max(0) as u64)
}

/// Runs retention and GC on a remote.
pub fn gc(remote: &Remote, opts: &RemoteGcOptions<'_>) -> Result<RemoteGcReport> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut report = RemoteGcReport::default();

    // 1. Retention, per node.
    let mut by_node: BTreeMap<String, Vec<(String, RemoteSnapshot)>> = BTreeMap::new();
    for entry in catalog::snapshots(remote, None)? {
        let snap = catalog::read_snapshot(remote, &entry.key)?;
        by_node
            .entry(entry.node)
            .or_default()
            .push((entry.key, snap));
    }
    let mut kept: Vec<RemoteSnapshot> = Vec::new();
    for (node, snaps) in by_node {
        let expired: HashSet<u64> = match opts.policy {
            Some(policy) => {
                let infos: Vec<SnapshotInfo> = snaps
                    .iter()
                    .enumerate()
                    .map(|(i, (_, s))| SnapshotInfo {
                        id: i as u64,
                        seq: s.seq,
                        name: s.name.clone(),
                        created: UNIX_EPOCH
                            + Duration::new(s.created_secs.max(0) as u64, s.created_nanos),
                        pinned: s.pinned,
                        metric: None,
                    })
                    .collect();
                plan(&infos, policy, SystemTime::now())
                    .expiring
                    .into_iter()
                    .collect()
            }
            None => HashSet::new(),
        };
        for (i, (key, snap)) in snaps.into_iter().enumerate() {
            if expired.contains(&(i as u64)) {
                report
                    .snapshots_expired
                    .push(format!("{node}/{}", snap.name));
                if !opts.dry_run {
                    remote.delete(&key)?;
                    log::info!(
                        "remote gc {}: expired snapshot {node}/{}",
                        remote.url(),
                        snap.name
                    );
                }
            } else {
                kept.push(snap);
            }
        }
    }
    report.snapshots_kept = kept.len() as u64;

    // 2. Mark.
    let manifests = remote.list("manifests")?;
    let mut live_manifests: HashSet<String> = HashSet::new();
    for snap in &kept {
        live_manifests.extend(snap.items.iter().filter_map(|i| i.manifest.clone()));
    }
    for m in &manifests {
        if age(now, m.modified) < opts.grace {
            if let Some(hash) = m.key.strip_prefix("manifests/") {
                live_manifests.insert(hash.to_string());
            }
        }
    }
    let mut live_chunks: HashSet<ChunkId> = HashSet::new();
    for hash in &live_manifests {
        let key = layout::manifest_key(hash);
        let Some(bytes) = remote.get(&key)? else {
            continue;
        };
        for e in layout::decode_manifest(&key, hash, &bytes)? {
            if let Entry::Chunk { id, .. } = e {
                live_chunks.insert(id);
            }
        }
    }

    // 3. Sweep: packs, then manifests.
    let condemned: HashMap<String, i64> = remote
        .list(CONDEMNED)?
        .into_iter()
        .filter_map(|l| {
            let rest = l.key.strip_prefix(&format!("{CONDEMNED}/"))?;
            Some((rest.to_string(), l.modified))
        })
        .collect();
    let sizes: HashMap<String, u64> = remote
        .list("packs")?
        .into_iter()
        .map(|l| (l.key, l.size))
        .collect();
    // Every pack's index, and for each live chunk the one pack that keeps
    // it: a pack not condemned if there is one (a push re-uploads chunks
    // of condemned packs), so a condemned duplicate is not kept alive.
    let mut packs: Vec<(String, i64, u64, Vec<ChunkId>)> = Vec::new();
    for idx in remote.list("index")? {
        let Some(pack) = idx.key.strip_prefix("index/") else {
            continue;
        };
        let key = layout::index_key(pack);
        let Some(bytes) = remote.get(&key)? else {
            continue;
        };
        let ids = layout::decode_index(&key, &bytes)?
            .into_iter()
            .map(|e| e.id)
            .collect();
        packs.push((pack.to_string(), idx.modified, bytes.len() as u64, ids));
    }
    let is_condemned = |pack: &str| condemned.contains_key(&format!("packs/{pack}"));
    packs.sort_by_key(|(pack, ..)| is_condemned(pack));
    let mut keeper: HashMap<ChunkId, usize> = HashMap::new();
    for (i, (_, _, _, ids)) in packs.iter().enumerate() {
        for id in ids {
            if live_chunks.contains(id) {
                keeper.entry(*id).or_insert(i);
            }
        }
    }
    let needed: HashSet<usize> = keeper.into_values().collect();
    for (i, (pack, modified, index_len, _)) in packs.iter().enumerate() {
        let mark = format!("packs/{pack}");
        let verdict = sweep(
            remote,
            opts,
            now,
            &mark,
            needed.contains(&i),
            *modified,
            condemned.get(&mark).copied(),
            &[layout::index_key(pack), layout::pack_key(pack)],
        )?;
        match verdict {
            Verdict::Live => report.packs_live += 1,
            Verdict::Rescued => {
                report.packs_live += 1;
                report.packs_rescued += 1;
            }
            Verdict::Young => report.packs_young += 1,
            Verdict::Condemned => report.packs_condemned += 1,
            Verdict::Deleted => {
                report.packs_deleted += 1;
                report.bytes_freed +=
                    sizes.get(&layout::pack_key(pack)).copied().unwrap_or(0) + index_len;
            }
        }
    }
    for m in &manifests {
        let Some(hash) = m.key.strip_prefix("manifests/") else {
            continue;
        };
        let mark = format!("manifests/{hash}");
        let verdict = sweep(
            remote,
            opts,
            now,
            &mark,
            live_manifests.contains(hash),
            m.modified,
            condemned.get(&mark).copied(),
            std::slice::from_ref(&m.key),
        )?;
        match verdict {
            Verdict::Condemned => report.manifests_condemned += 1,
            Verdict::Deleted => report.manifests_deleted += 1,
            _ => {}
        }
    }
    log::info!(
        "remote gc {}: {} snapshots expired, {} packs deleted ({} bytes), {} condemned, {} young",
        remote.url(),
        report.snapshots_expired.len(),
        report.packs_deleted,
        report.bytes_freed,
        report.packs_condemned,
        report.packs_young
    );
    Ok(report)
}

enum Verdict {
    Live,
    Rescued,
    Young,
    Condemned,
    Deleted,
}

/// Decides (and, unless dry, carries out) one object's fate; `keys` are
/// deleted in order (an index before its pack).
#[allow(clippy::too_many_arguments)]
fn sweep(
    remote: &Remote,
    opts: &RemoteGcOptions<'_>,
    now: i64,
    mark: &str,
    live: bool,
    modified: i64,
    condemned_at: Option<i64>,
    keys: &[String],
) -> Result<Verdict> {
    let marker = format!("{CONDEMNED}/{mark}");
    if live {
        if condemned_at.is_some() {
            if !opts.dry_run {
                remote.delete(&marker)?;
            }
            return Ok(Verdict::Rescued);
        }
        return Ok(Verdict::Live);
    }
    match condemned_at {
        Some(at) if age(now, at) >= opts.grace => {
            // A push may have rescued it since the listing.
            if !opts.dry_run && remote.get(&marker)?.is_none() {
                return Ok(Verdict::Live);
            }
            if !opts.dry_run {
                for k in keys {
                    remote.delete(k)?;
                }
                remote.delete(&marker)?;
            }
            Ok(Verdict::Deleted)
        }
        Some(_) => Ok(Verdict::Condemned),
        None if age(now, modified) < opts.grace => Ok(Verdict::Young),
        None => {
            if !opts.dry_run {
                remote.put_new(&marker, Vec::new())?;
            }
            Ok(Verdict::Condemned)
        }
    }
}

/// The packs and manifests condemned on a remote (pushes treat them as
/// absent).
pub fn condemned(remote: &Remote) -> Result<HashSet<String>> {
    Ok(remote
        .list(CONDEMNED)?
        .into_iter()
        .filter_map(|l| {
            l.key
                .strip_prefix(&format!("{CONDEMNED}/"))
                .map(str::to_string)
        })
        .collect())
}

/// Leaves out of a catalog the chunks only condemned packs hold.
pub fn without_condemned(catalog: ChunkCatalog, condemned: &HashSet<String>) -> ChunkCatalog {
    catalog.without_packs(|pack| condemned.contains(&format!("packs/{pack}")))
}
