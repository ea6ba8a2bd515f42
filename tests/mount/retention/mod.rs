//! Retention and garbage collection through the real mount, one theme per
//! file. This module holds the helpers they share.
//!
//! - `policy`: the policy file (default text, write, append, overwrite,
//!   EINVAL at write and at close, status, remount).
//! - `kept`: the `kept/` and `expiring/` listings for keep-last and
//!   keep-every, their `user.ckpt.rules` xattrs, pins and the newest
//!   snapshot.
//! - `metric`: keep-best with each metric source (an HF-like
//!   `trainer_state.json`, Lightning-like file names, a root xattr),
//!   `snapshots/best` and `user.ckpt.metric.NAME`.
//! - `gc`: what GC frees (`du` of the store), what it must keep, the timer,
//!   read-only mounts.
//! - `gc_race`: GC while writers deduplicate against the chunks it sweeps.
//! - `gc_crash`: SIGKILL in the middle of GC.
//! - `model`: a randomized model test of the live tree, snapshots,
//!   policy, GC and remounts.

mod gc;
mod gc_crash;
mod gc_race;
mod kept;
mod metric;
mod model;
mod policy;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use serde_json::Value;

use crate::common::{hash_file, sh, Mount};

pub(super) const MIB: usize = 1 << 20;

pub(super) fn xxh(data: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(data)
}

/// A path under the control directory.
pub(super) fn ctl(m: &Mount, rel: &str) -> PathBuf {
    m.path(&format!(".ckpt/{rel}"))
}

/// Single-quotes a path for `sh`.
pub(super) fn q(p: &Path) -> String {
    let s = p.to_str().expect("utf-8 path");
    assert!(!s.contains('\''), "path with a quote: {s}");
    format!("'{s}'")
}

/// close(2) with its result (std's drop ignores it; ckptfs commits there
/// and applies a written policy there).
pub(super) fn close(f: File) -> Result<(), Errno> {
    nix::unistd::close(f)
}

/// Creates or truncates `path`, writes `data` and closes, all checked.
pub(super) fn write_file(path: &Path, data: &[u8]) {
    let mut f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    for block in data.chunks(MIB) {
        f.write_all(block)
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
    close(f).unwrap_or_else(|e| panic!("close {}: {e}", path.display()));
}

/// Asserts that `r` failed with errno `want`.
#[track_caller]
pub(super) fn expect_errno<T: std::fmt::Debug>(r: io::Result<T>, want: Errno, what: &str) {
    match r {
        Ok(v) => panic!("{what}: expected {want}, got Ok({v:?})"),
        Err(e) => assert_eq!(
            e.raw_os_error(),
            Some(want as i32),
            "{what}: expected {want}, got `{e}`"
        ),
    }
}

/// `mkdir .ckpt/snapshots/NAME`.
pub(super) fn snapshot(m: &Mount, name: &str) {
    let p = ctl(m, &format!("snapshots/{name}"));
    fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
}

/// `printf TEXT > .ckpt/retention/policy`, asserting success.
pub(super) fn set_policy(m: &Mount, text: &str) {
    let p = ctl(m, "retention/policy");
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&p)
        .unwrap_or_else(|e| panic!("open policy for writing: {e}"));
    f.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("write policy {text:?}: {e}"));
    close(f).unwrap_or_else(|e| panic!("close policy {text:?}: {e}"));
}

/// `echo LINE >> .ckpt/retention/policy` through the shell.
pub(super) fn append_policy(m: &Mount, line: &str) {
    assert!(!line.contains('\''));
    sh(&format!(
        "echo '{line}' >> {}",
        q(&ctl(m, "retention/policy"))
    ));
}

/// `cat .ckpt/retention/policy`.
pub(super) fn policy_text(m: &Mount) -> String {
    sh(&format!("cat {}", q(&ctl(m, "retention/policy"))))
}

fn json(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON ({e}):\n{text}", path.display()))
}

/// `.ckpt/retention/status` as JSON.
pub(super) fn status(m: &Mount) -> Value {
    json(&ctl(m, "retention/status"))
}

/// Reading `.ckpt/retention/gc`: the last run as JSON.
pub(super) fn last_gc(m: &Mount) -> Value {
    json(&ctl(m, "retention/gc"))
}

/// `echo run > .ckpt/retention/gc` (returns when GC is done), then the
/// report read back from the same file.
pub(super) fn run_gc(m: &Mount) -> Value {
    sh(&format!("echo run > {}", q(&ctl(m, "retention/gc"))));
    let report = last_gc(m);
    assert!(
        report.get("at").is_some_and(Value::is_string),
        "retention/gc shows no run after `echo run`: {report}"
    );
    report
}

/// The names a GC report lists as expired.
pub(super) fn expired_of(report: &Value) -> BTreeSet<String> {
    report["snapshots_expired"]
        .as_array()
        .unwrap_or_else(|| panic!("no snapshots_expired list in {report}"))
        .iter()
        .map(|v| v.as_str().expect("name").to_string())
        .collect()
}

/// A counter of a GC report.
pub(super) fn gc_count(report: &Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no number {key} in {report}"))
}

/// Names in a directory (without `.` and `..`).
pub(super) fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .into_string()
                .expect("utf-8 name")
        })
        .collect()
}

/// The snapshot names under `.ckpt/snapshots/` (without the `latest` and
/// `best` links).
pub(super) fn snapshot_names(m: &Mount) -> BTreeSet<String> {
    let mut all = names(&ctl(m, "snapshots"));
    all.remove("latest");
    all.remove("best");
    all
}

/// The names listed in `.ckpt/retention/{kept,expiring}/`, each checked to
/// be a symlink to `../../snapshots/NAME`.
pub(super) fn listing(m: &Mount, which: &str) -> BTreeSet<String> {
    let dir = ctl(m, &format!("retention/{which}"));
    let all = names(&dir);
    for name in &all {
        let link = dir.join(name);
        let md =
            fs::symlink_metadata(&link).unwrap_or_else(|e| panic!("lstat {}: {e}", link.display()));
        assert!(
            md.file_type().is_symlink(),
            "{} is not a symlink",
            link.display()
        );
        let target =
            fs::read_link(&link).unwrap_or_else(|e| panic!("readlink {}: {e}", link.display()));
        assert_eq!(
            target,
            Path::new(&format!("../../snapshots/{name}")),
            "target of {}",
            link.display()
        );
        assert!(
            fs::metadata(&link).is_ok_and(|m| m.is_dir()),
            "{} does not lead to a snapshot",
            link.display()
        );
    }
    all
}

/// What `retention/status` says is kept (name -> rules) and expiring.
pub(super) fn status_plan(m: &Mount) -> (BTreeMap<String, Vec<String>>, BTreeSet<String>) {
    let st = status(m);
    let kept = st["kept"]
        .as_array()
        .unwrap_or_else(|| panic!("no kept list in {st}"))
        .iter()
        .map(|k| {
            let rules = k["rules"].as_array().expect("rules").iter();
            let rules = rules
                .map(|r| r.as_str().expect("rule").to_string())
                .collect();
            (k["snapshot"].as_str().expect("snapshot").to_string(), rules)
        })
        .collect();
    let expiring = st["expiring"]
        .as_array()
        .unwrap_or_else(|| panic!("no expiring list in {st}"))
        .iter()
        .map(|v| v.as_str().expect("name").to_string())
        .collect();
    (kept, expiring)
}

pub(super) fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// An xattr's value through `getfattr` (`-h`: of a symlink itself), or
/// the error getfattr printed.
pub(super) fn xattr(path: &Path, name: &str, no_follow: bool) -> Result<String, String> {
    let mut cmd = Command::new("getfattr");
    if no_follow {
        cmd.arg("-h");
    }
    let out = cmd
        .args(["--only-values", "-n", name])
        .arg(path)
        .output()
        .expect("run getfattr");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Every regular file under `dir` (relative path -> xxh3), recursively.
pub(super) fn tree(dir: &Path) -> BTreeMap<String, u128> {
    let mut out = BTreeMap::new();
    let mut todo = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, prefix)) = todo.pop() {
        for e in fs::read_dir(&d).unwrap_or_else(|e| panic!("read_dir {}: {e}", d.display())) {
            let e = e.expect("dir entry");
            let name = e.file_name().into_string().expect("utf-8 name");
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let ft = e.file_type().expect("file type");
            if ft.is_dir() {
                todo.push((e.path(), rel));
            } else if ft.is_file() {
                out.insert(rel, hash_file(&e.path()));
            }
        }
    }
    out
}

/// Polls `f` every 50 ms until it returns Some, or panics after `secs`.
pub(super) fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A tiny deterministic PRNG (xorshift64).
pub(super) struct Rng(pub u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `0..n`.
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `percent`/100.
    pub(super) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}
