//! `verify`: a scrub of the whole store. Every chunk is read, decoded and
//! checked against its id; every manifest that something references is
//! decoded and checked for chunks that are missing or damaged; and each
//! damaged manifest is named by the live files, versions and snapshot files
//! that use it.

use std::collections::{HashMap, HashSet};

use super::{Result, Tree};
use crate::ids::{ChunkId, Ino, ManifestId, SnapId};
use crate::store::manifest::Entry;
use crate::store::records::FileKind;
use crate::store::{Scope, StoreError};

/// One damaged file, version or snapshot file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damaged {
    /// `live`, `version` or `snapshot`.
    pub kind: &'static str,
    /// Its path (from the mount root; for a snapshot, inside it).
    pub path: String,
    /// The version's file name, or the snapshot's name.
    pub which: Option<String>,
}

/// What a scrub found.
#[derive(Clone, Debug, Default)]
pub struct VerifyReport {
    /// Chunks read and checked.
    pub chunks_checked: u64,
    /// Their raw bytes.
    pub bytes_checked: u64,
    /// Manifests decoded and checked.
    pub manifests_checked: u64,
    /// Chunks that failed (corrupt, missing or undecodable).
    pub bad_chunks: Vec<ChunkId>,
    /// Manifests that do not decode or name a bad or missing chunk.
    pub bad_manifests: Vec<ManifestId>,
    /// Everything that uses a bad manifest.
    pub damaged: Vec<Damaged>,
}

impl VerifyReport {
    /// True when nothing is damaged.
    pub fn is_clean(&self) -> bool {
        self.bad_chunks.is_empty() && self.bad_manifests.is_empty()
    }

    /// The report as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "clean": self.is_clean(),
            "chunks_checked": self.chunks_checked,
            "bytes_checked": self.bytes_checked,
            "manifests_checked": self.manifests_checked,
            "bad_chunks": self.bad_chunks.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            "bad_manifests": self.bad_manifests.iter().map(|m| m.0).collect::<Vec<_>>(),
            "damaged": self.damaged.iter().map(|d| serde_json::json!({
                "kind": d.kind, "path": d.path, "which": d.which,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Progress callbacks: (phase, done, total).
pub type Progress<'a> = &'a dyn Fn(&str, u64, u64);

impl Tree {
    /// Scrubs the store. Damage is reported, not returned as an error.
    pub fn verify(&self, progress: Progress<'_>) -> Result<VerifyReport> {
        let store = &self.data.store;
        let mut report = VerifyReport::default();
        let total = store.chunk_count_estimate()?;
        let mut ids = Vec::new();
        store.for_each_chunk(|c| {
            ids.push(c.id);
            Ok(())
        })?;
        let mut bad: HashSet<ChunkId> = HashSet::new();
        for (i, id) in ids.iter().enumerate() {
            match store.read_chunk(*id) {
                Ok(raw) => report.bytes_checked += raw.len() as u64,
                Err(StoreError::ChunkCorrupt(_) | StoreError::ChunkMissing(_)) => {
                    log::error!("verify: chunk {id} is damaged");
                    bad.insert(*id);
                }
                Err(e) => return Err(e.into()),
            }
            report.chunks_checked += 1;
            if i % 256 == 0 {
                progress("chunks", i as u64, total.max(ids.len() as u64));
            }
        }
        progress("chunks", ids.len() as u64, ids.len() as u64);
        let known: HashSet<ChunkId> = ids.into_iter().collect();

        // Who uses which manifest.
        let mut users: HashMap<ManifestId, Vec<Damaged>> = HashMap::new();
        let mut live = Vec::new();
        store.for_each_inode(|ino, rec| {
            if rec.kind == FileKind::File && rec.nlink > 0 && rec.content != ManifestId::EMPTY {
                live.push((ino, rec.content));
            }
            Ok(())
        })?;
        for (ino, m) in live {
            users.entry(m).or_default().push(Damaged {
                kind: "live",
                path: self.path_of(ino),
                which: None,
            });
        }
        let mut versions = Vec::new();
        store.for_each_version(|p, seq, v| {
            versions.push((p, seq, v));
            Ok(())
        })?;
        for (p, seq, v) in versions {
            if v.manifest == ManifestId::EMPTY {
                continue;
            }
            users.entry(v.manifest).or_default().push(Damaged {
                kind: "version",
                path: self.history_path_string(p),
                which: Some(format!("{seq:06}-{}", super::compact_utc(v.committed))),
            });
        }
        for (id, rec) in store.snapshots()? {
            let name = String::from_utf8_lossy(&rec.name).into_owned();
            for (path, m) in self.snapshot_files(id)? {
                users.entry(m).or_default().push(Damaged {
                    kind: "snapshot",
                    path,
                    which: Some(name.clone()),
                });
            }
        }
        let manifests: Vec<ManifestId> = users.keys().copied().collect();
        let count = manifests.len() as u64;
        for (i, m) in manifests.into_iter().enumerate() {
            let mut broken = false;
            let scan = self.data.reader.for_each_entry(m, |_, e| {
                if let Entry::Chunk { id, .. } = e {
                    if bad.contains(&id) || !known.contains(&id) {
                        broken = true;
                        return Ok(false);
                    }
                }
                Ok(true)
            });
            if scan.is_err() {
                broken = true;
            }
            report.manifests_checked += 1;
            if broken {
                report.bad_manifests.push(m);
                for d in users.remove(&m).unwrap_or_default() {
                    log::error!(
                        "verify: {} {}{} is damaged",
                        d.kind,
                        d.path,
                        d.which
                            .as_ref()
                            .map(|w| format!(" ({w})"))
                            .unwrap_or_default()
                    );
                    report.damaged.push(d);
                }
            }
            if i % 64 == 0 {
                progress("manifests", i as u64, count);
            }
        }
        progress("manifests", count, count);
        report.bad_chunks = bad.into_iter().collect();
        report.bad_chunks.sort();
        report
            .damaged
            .sort_by(|a, b| (a.kind, &a.path, &a.which).cmp(&(b.kind, &b.path, &b.which)));
        Ok(report)
    }

    /// The history path of `id` as a string from the mount root.
    pub fn history_path_string(&self, id: crate::ids::PathId) -> String {
        let mut parts = Vec::new();
        let mut at = id;
        for _ in 0..4096 {
            if at == crate::ids::PathId::ROOT {
                break;
            }
            match self.data.store.path_record(at) {
                Ok(Some(rec)) => {
                    parts.push(String::from_utf8_lossy(&rec.name).into_owned());
                    at = rec.parent;
                }
                _ => break,
            }
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }

    /// Every regular file of a snapshot: (path inside it, manifest).
    pub fn snapshot_files(&self, id: SnapId) -> Result<Vec<(String, ManifestId)>> {
        let scope = Scope::Snapshot(id);
        let mut out = Vec::new();
        let mut stack = vec![(Ino::ROOT, String::new())];
        while let Some((dir, prefix)) = stack.pop() {
            let mut children = Vec::new();
            self.readdir_in(scope, dir, 2, |item| {
                children.push((
                    item.ino,
                    item.kind,
                    String::from_utf8_lossy(item.name).into_owned(),
                ));
                true
            })?;
            for (ino, kind, name) in children {
                let path = format!("{prefix}/{name}");
                match kind {
                    FileKind::Dir => stack.push((ino, path)),
                    FileKind::File => {
                        let rec = self.inode_in(scope, ino)?;
                        if rec.content != ManifestId::EMPTY {
                            out.push((path, rec.content));
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    /// Stored bytes of the distinct chunks a snapshot's files use.
    pub fn snapshot_stored_bytes(&self, id: SnapId) -> Result<u64> {
        let mut seen = HashSet::new();
        let mut total = 0;
        for m in self.snapshot_manifests(id)? {
            self.data.reader.for_each_entry(m, |_, e| {
                if let Entry::Chunk { id, .. } = e {
                    if seen.insert(id) {
                        total += self.data.store.chunk_stored_len(id)?.unwrap_or(0) as u64;
                    }
                }
                Ok(true)
            })?;
        }
        Ok(total)
    }
}
