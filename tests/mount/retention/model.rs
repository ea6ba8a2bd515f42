//! A randomized model test of the live tree, snapshots, retention and GC.
//!
//! A deterministic PRNG (seed printed; `CKPTFS_MODEL_SEED` and
//! `CKPTFS_MODEL_OPS` override) drives writes of new content and of
//! content copied from another file (dedup), whole and in-place
//! overwrites, renames (also over existing files, and of directories),
//! deletes, mkdir/rmdir, manual snapshots, pins, policy changes (random
//! `keep-last` in 1..=4, sometimes `file-versions-keep`; written whole or
//! appended), GC runs and remounts. The model holds the live tree (path ->
//! content hash), the directories, and the tree of every snapshot the
//! policy must still keep: with only `keep-last = K` set, the K newest
//! snapshots plus the pinned ones; before any policy, all of them. A
//! snapshot may only disappear in a GC, and a GC must expire exactly the
//! others. After every GC and remount the mount must match the model:
//! every live file and every file of every kept snapshot reads back with
//! the expected hash, and `.ckpt/versions/<path>/latest` of every live
//! file has the live content.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Instant;

use super::{
    append_policy, close, ctl, expired_of, q, run_gc, set_policy, snapshot, snapshot_names, tree,
    xxh, Rng,
};
use crate::common::{hash_file, noise, sh, Mount};

const DIRS: [&str; 5] = ["d0", "d1", "d2", "d3", "d4"];
const FILES: usize = 6;

struct Snap {
    name: String,
    files: BTreeMap<String, u128>,
    dirs: BTreeSet<String>,
    pinned: bool,
}

struct Model {
    live: BTreeMap<String, u128>,
    dirs: BTreeSet<String>,
    snaps: Vec<Snap>,
    keep_last: Option<usize>,
    content: HashMap<u128, Arc<Vec<u8>>>,
    next_snap: usize,
}

impl Model {
    /// Snapshot names the next GC must expire.
    fn expiring(&self) -> BTreeSet<String> {
        let Some(k) = self.keep_last else {
            return BTreeSet::new();
        };
        let n = self.snaps.len();
        let cut = n.saturating_sub(k.max(1));
        self.snaps[..cut]
            .iter()
            .filter(|s| !s.pinned)
            .map(|s| s.name.clone())
            .collect()
    }

    fn store(&mut self, data: Vec<u8>) -> u128 {
        let h = xxh(&data);
        self.content.entry(h).or_insert_with(|| Arc::new(data));
        h
    }
}

struct Run {
    m: Mount,
    model: Model,
    rng: Rng,
    seed: u64,
    log: Vec<String>,
}

impl Run {
    fn fail(&self, what: String) -> ! {
        let from = self.log.len().saturating_sub(25);
        panic!(
            "model test, seed {:#x}, op {}: {what}\nlast ops:\n  {}",
            self.seed,
            self.log.len(),
            self.log[from..].join("\n  ")
        );
    }

    fn note(&mut self, op: String) {
        if std::env::var_os("CKPTFS_MODEL_VERBOSE").is_some() {
            eprintln!("op {}: {op}", self.log.len());
        }
        self.log.push(op);
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> Option<T> {
        (!items.is_empty()).then(|| items[self.rng.below(items.len() as u64) as usize].clone())
    }

    /// A file path in the root or an existing directory.
    fn any_path(&mut self) -> String {
        let mut dirs: Vec<String> = self.model.dirs.iter().cloned().collect();
        dirs.push(String::new());
        let dir = self.pick(&dirs).unwrap();
        let f = self.rng.below(FILES as u64);
        if dir.is_empty() {
            format!("f{f}.bin")
        } else {
            format!("{dir}/f{f}.bin")
        }
    }

    fn live_file(&mut self) -> Option<String> {
        let files: Vec<String> = self.model.live.keys().cloned().collect();
        self.pick(&files)
    }

    fn new_content(&mut self) -> Vec<u8> {
        let r = self.rng.below(100);
        let len = match r {
            0..=1 => 0,
            2..=71 => 1 + self.rng.below(64 << 10),
            72..=95 => (64 << 10) + self.rng.below(336 << 10),
            _ => (400 << 10) + self.rng.below(1100 << 10),
        };
        noise(len as usize, self.rng.next())
    }

    fn write(&mut self, path: &str, data: Vec<u8>, how: &str) {
        self.note(format!("{how} {path} ({} bytes)", data.len()));
        let p = self.m.path(path);
        let r = fs::File::create(&p).and_then(|mut f| {
            std::io::Write::write_all(&mut f, &data)?;
            close(f).map_err(std::io::Error::from)
        });
        if let Err(e) = r {
            self.fail(format!("{how} {path}: {e}"));
        }
        let h = self.model.store(data);
        self.model.live.insert(path.to_string(), h);
    }

    fn step(&mut self) {
        match self.rng.below(100) {
            0..=24 => {
                let (path, data) = (self.any_path(), self.new_content());
                self.write(&path, data, "write new");
            }
            25..=36 => {
                let Some(src) = self.live_file() else { return };
                let data = self.model.content[&self.model.live[&src]].to_vec();
                let path = self.any_path();
                self.write(&path, data, &format!("copy {src} to"));
            }
            37..=44 => self.patch(),
            45..=54 => self.rename_file(),
            55..=57 => self.rename_dir(),
            58..=67 => {
                let Some(path) = self.live_file() else { return };
                self.note(format!("unlink {path}"));
                if let Err(e) = fs::remove_file(self.m.path(&path)) {
                    self.fail(format!("unlink {path}: {e}"));
                }
                self.model.live.remove(&path);
            }
            68..=72 => {
                let free: Vec<&str> = DIRS
                    .iter()
                    .copied()
                    .filter(|d| !self.model.dirs.contains(*d))
                    .collect();
                let Some(d) = self.pick(&free) else { return };
                self.note(format!("mkdir {d}"));
                if let Err(e) = fs::create_dir(self.m.path(d)) {
                    self.fail(format!("mkdir {d}: {e}"));
                }
                self.model.dirs.insert(d.to_string());
            }
            73..=74 => {
                let live = &self.model.live;
                let empty: Vec<String> = self
                    .model
                    .dirs
                    .iter()
                    .filter(|d| !live.keys().any(|k| k.starts_with(&format!("{d}/"))))
                    .cloned()
                    .collect();
                let Some(d) = self.pick(&empty) else { return };
                self.note(format!("rmdir {d}"));
                if let Err(e) = fs::remove_dir(self.m.path(&d)) {
                    self.fail(format!("rmdir {d}: {e}"));
                }
                self.model.dirs.remove(&d);
            }
            75..=84 => {
                let name = format!("s{}", self.model.next_snap);
                self.model.next_snap += 1;
                self.note(format!("snapshot {name}"));
                snapshot(&self.m, &name);
                let (files, dirs) = (self.model.live.clone(), self.model.dirs.clone());
                self.model.snaps.push(Snap {
                    name,
                    files,
                    dirs,
                    pinned: false,
                });
            }
            85..=87 => {
                let n = self.model.snaps.len();
                if n == 0 {
                    return;
                }
                let i = self.rng.below(n as u64) as usize;
                let s = &mut self.model.snaps[i];
                s.pinned = !s.pinned;
                let (name, v) = (s.name.clone(), u8::from(s.pinned));
                self.note(format!("pin {name} = {v}"));
                sh(&format!(
                    "setfattr -n user.ckpt.pinned -v {v} {}",
                    q(&ctl(&self.m, &format!("snapshots/{name}")))
                ));
            }
            88..=92 => self.policy(),
            93..=97 => self.gc(),
            _ => {
                self.note("remount".into());
                self.m.remount();
                self.check("after a remount");
            }
        }
    }

    /// An in-place write into an existing file (no truncation).
    fn patch(&mut self) {
        let Some(path) = self.live_file() else { return };
        let mut data = self.model.content[&self.model.live[&path]].to_vec();
        let off = self.rng.below(data.len() as u64 + 1) as usize;
        let patch = noise(1 + self.rng.below(20_000) as usize, self.rng.next());
        self.note(format!("patch {path} at {off} ({} bytes)", patch.len()));
        let r = OpenOptions::new()
            .write(true)
            .open(self.m.path(&path))
            .and_then(|f| {
                f.write_all_at(&patch, off as u64)?;
                close(f).map_err(std::io::Error::from)
            });
        if let Err(e) = r {
            self.fail(format!("patch {path}: {e}"));
        }
        if data.len() < off + patch.len() {
            data.resize(off + patch.len(), 0);
        }
        data[off..off + patch.len()].copy_from_slice(&patch);
        let h = self.model.store(data);
        self.model.live.insert(path, h);
    }

    fn rename_file(&mut self) {
        let Some(src) = self.live_file() else { return };
        let dst = self.any_path();
        if src == dst {
            return;
        }
        let over = self.model.live.contains_key(&dst);
        self.note(format!(
            "rename {src} -> {dst}{}",
            if over { " (over)" } else { "" }
        ));
        if let Err(e) = fs::rename(self.m.path(&src), self.m.path(&dst)) {
            self.fail(format!("rename {src} -> {dst}: {e}"));
        }
        let h = self.model.live.remove(&src).unwrap();
        self.model.live.insert(dst, h);
    }

    fn rename_dir(&mut self) {
        let dirs: Vec<String> = self.model.dirs.iter().cloned().collect();
        let Some(src) = self.pick(&dirs) else { return };
        let free: Vec<&str> = DIRS
            .iter()
            .copied()
            .filter(|d| !self.model.dirs.contains(*d))
            .collect();
        let Some(dst) = self.pick(&free) else { return };
        self.note(format!("rename dir {src} -> {dst}"));
        if let Err(e) = fs::rename(self.m.path(&src), self.m.path(dst)) {
            self.fail(format!("rename {src} -> {dst}: {e}"));
        }
        let prefix = format!("{src}/");
        let moved: Vec<String> = self
            .model
            .live
            .keys()
            .filter(|k| k.starts_with(&prefix))
            .cloned()
            .collect();
        for k in moved {
            let h = self.model.live.remove(&k).unwrap();
            self.model
                .live
                .insert(format!("{dst}/{}", &k[prefix.len()..]), h);
        }
        self.model.dirs.remove(&src);
        self.model.dirs.insert(dst.to_string());
    }

    fn policy(&mut self) {
        let k = 1 + self.rng.below(4) as usize;
        if self.rng.chance(50) {
            let mut text = format!("# model\nkeep-last = {k}\n");
            if self.rng.chance(40) {
                text.push_str(&format!("file-versions-keep = {}\n", self.rng.below(3)));
            }
            self.note(format!("policy {text:?}"));
            set_policy(&self.m, &text);
        } else {
            self.note(format!("policy += keep-last = {k}"));
            append_policy(&self.m, &format!("keep-last = {k}"));
        }
        self.model.keep_last = Some(k);
    }

    fn gc(&mut self) {
        let want = self.model.expiring();
        self.note(format!("gc (expect {want:?})"));
        let report = run_gc(&self.m);
        let got = expired_of(&report);
        if got != want {
            self.fail(format!(
                "GC expired {got:?}, the model expected {want:?}: {report}"
            ));
        }
        self.model.snaps.retain(|s| !want.contains(&s.name));
        self.check("after a GC");
    }

    /// Compares the whole mount with the model.
    fn check(&self, when: &str) {
        let live = tree(&self.m.mnt);
        if live != self.model.live {
            self.fail(format!(
                "{when}: live tree\n got  {live:?}\n want {:?}",
                self.model.live
            ));
        }
        let dirs: BTreeSet<String> = super::names(&self.m.mnt)
            .into_iter()
            .filter(|n| self.m.path(n).is_dir())
            .collect();
        if dirs != self.model.dirs {
            self.fail(format!(
                "{when}: directories {dirs:?}, want {:?}",
                self.model.dirs
            ));
        }
        for (path, h) in &self.model.live {
            let latest = ctl(&self.m, &format!("versions/{path}/latest"));
            let got = fs::metadata(&latest).map(|_| hash_file(&latest));
            if got.as_ref().ok() != Some(h) {
                self.fail(format!(
                    "{when}: {} is {got:?}, want the live content {h:#x}",
                    latest.display()
                ));
            }
        }
        let names = snapshot_names(&self.m);
        let want: BTreeSet<String> = self.model.snaps.iter().map(|s| s.name.clone()).collect();
        if names != want {
            self.fail(format!("{when}: snapshots {names:?}, want {want:?}"));
        }
        for s in &self.model.snaps {
            let root = ctl(&self.m, &format!("snapshots/{}", s.name));
            let files = tree(&root);
            if files != s.files {
                self.fail(format!(
                    "{when}: snapshot {}\n got  {files:?}\n want {:?}",
                    s.name, s.files
                ));
            }
            let dirs: BTreeSet<String> = super::names(&root)
                .into_iter()
                .filter(|n| root.join(n).is_dir())
                .collect();
            if dirs != s.dirs {
                self.fail(format!(
                    "{when}: directories of snapshot {}: {dirs:?}, want {:?}",
                    s.name, s.dirs
                ));
            }
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

#[test]
fn random_operations_policies_gc_and_remounts_match_the_model() {
    let seed = env_u64("CKPTFS_MODEL_SEED").unwrap_or(0x5eed_c4f5_0001);
    let ops = env_u64("CKPTFS_MODEL_OPS").unwrap_or(1500) as usize;
    eprintln!(
        "model test: seed {seed:#x}, {ops} operations (CKPTFS_MODEL_SEED / CKPTFS_MODEL_OPS)"
    );
    let mut run = Run {
        m: Mount::new("ret-model"),
        model: Model {
            live: BTreeMap::new(),
            dirs: BTreeSet::new(),
            snaps: Vec::new(),
            keep_last: None,
            content: HashMap::new(),
            next_snap: 1,
        },
        rng: Rng((seed ^ 0x2545_f491_4f6c_dd1d).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1),
        seed,
        log: Vec::new(),
    };
    let started = Instant::now();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..ops {
        let before = run.log.len();
        run.step();
        if run.log.len() == before {
            continue; // nothing to do (e.g. no file to rename yet)
        }
        let op = run
            .log
            .last()
            .map(|l| l.split_whitespace().next().unwrap_or(""))
            .unwrap_or("");
        let key = match op {
            "write" | "copy" | "patch" | "rename" | "unlink" | "mkdir" | "rmdir" | "snapshot"
            | "pin" | "policy" | "gc" | "remount" => op,
            _ => "other",
        };
        *counts.entry(key.to_string()).or_default() += 1;
    }
    // A last GC and remount, so that every run ends with both checks.
    run.gc();
    run.m.remount();
    run.check("at the end, after a remount");
    eprintln!(
        "model test: {} operations in {:.1?}: {counts:?}; {} live files, {} snapshots kept",
        run.log.len(),
        started.elapsed(),
        run.model.live.len(),
        run.model.snaps.len()
    );
    assert!(
        counts.get("gc").copied().unwrap_or(0) >= 5,
        "too few GC runs: {counts:?}"
    );
    assert!(
        counts.get("snapshot").copied().unwrap_or(0) >= 10,
        "too few snapshots: {counts:?}"
    );
}
