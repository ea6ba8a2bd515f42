//! Helpers the framework tests share: running the Python clients in
//! `tests/frameworks/py/`, comparing the mount with the reference tree
//! they leave (`py/mirror.py`: the live tree, every snapshot, every
//! version), the control files, and small I/O utilities.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::errno::Errno;
use serde_json::Value;

use crate::common::{hash_file, python, sh, Mount};

pub const MIB: usize = 1 << 20;

pub fn xxh(data: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(data)
}

/// A script of `tests/frameworks/py/`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/frameworks/py")
        .join(name)
}

/// Runs `python py/SCRIPT ARGS...`, asserting exit 0; returns stdout.
/// On failure the message holds the client's stderr and the daemon log.
#[track_caller]
pub fn py<S: AsRef<OsStr>>(m: &Mount, name: &str, args: &[S]) -> String {
    let out = Command::new(python())
        .arg(script(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {} {name}: {e}", python()));
    assert!(
        out.status.success(),
        "{name} {:?} failed ({}):\nstdout:\n{}\nstderr:\n{}\ndaemon log:\n{}",
        args.iter().map(|a| a.as_ref()).collect::<Vec<_>>(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        m.log()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A path under the control directory.
pub fn ctl(m: &Mount, rel: &str) -> PathBuf {
    m.path(&format!(".ckpt/{rel}"))
}

/// Names in a directory (without `.` and `..`).
pub fn names(dir: &Path) -> BTreeSet<String> {
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

pub fn set<S: AsRef<str>>(items: &[S]) -> BTreeSet<String> {
    items.iter().map(|s| s.as_ref().to_string()).collect()
}

/// The snapshots listed under `.ckpt/snapshots/` (without `latest`, `best`).
pub fn snapshot_names(m: &Mount) -> BTreeSet<String> {
    let mut all = names(&ctl(m, "snapshots"));
    all.remove("latest");
    all.remove("best");
    all
}

/// close(2) with its result (std's drop ignores it; ckptfs commits there).
pub fn close(f: File) -> Result<(), Errno> {
    nix::unistd::close(f)
}

/// Writes the retention policy (the close applies it).
#[track_caller]
pub fn set_policy(m: &Mount, text: &str) {
    let p = ctl(m, "retention/policy");
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&p)
        .unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    f.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("write policy {text:?}: {e}"));
    close(f).unwrap_or_else(|e| panic!("close policy {text:?}: {e}\n{}", m.log()));
}

/// `echo run > .ckpt/retention/gc` (returns when GC is done); the report.
#[track_caller]
pub fn run_gc(m: &Mount) -> Value {
    let gc = ctl(m, "retention/gc");
    sh(&format!("echo run > '{}'", gc.display()));
    let text = fs::read_to_string(&gc).expect("read retention/gc");
    let report: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("retention/gc is not JSON ({e}): {text}"));
    assert!(report["at"].is_string(), "no GC run reported: {report}");
    report
}

/// The snapshot names a GC report lists as expired.
pub fn expired_of(report: &Value) -> BTreeSet<String> {
    report["snapshots_expired"]
        .as_array()
        .unwrap_or_else(|| panic!("no snapshots_expired in {report}"))
        .iter()
        .map(|v| v.as_str().expect("name").to_string())
        .collect()
}

/// A tiny deterministic PRNG (xorshift64).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// ------------------------------------------------------------ trees

/// One entry of a tree: a file (xxh3, permission bits), a directory
/// (permission bits) or a symlink (its target).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    File(u128, u32),
    Dir(u32),
    Link(String),
}

/// Every entry under `dir` by relative path, recursively, symlinks not
/// followed.
pub fn tree(dir: &Path) -> BTreeMap<String, Entry> {
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
            let p = e.path();
            let md =
                fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
            let perm = md.permissions().mode() & 0o7777;
            let entry = if md.file_type().is_symlink() {
                let t =
                    fs::read_link(&p).unwrap_or_else(|e| panic!("readlink {}: {e}", p.display()));
                Entry::Link(t.into_os_string().into_string().expect("utf-8 target"))
            } else if md.is_dir() {
                todo.push((p, rel.clone()));
                Entry::Dir(perm)
            } else {
                Entry::File(hash_file(&p), perm)
            };
            out.insert(rel, entry);
        }
    }
    out
}

/// Asserts that two trees hold the same entries, naming the differences.
#[track_caller]
pub fn assert_same_tree(actual: &Path, expected: &Path, what: &str) {
    let (a, e) = (tree(actual), tree(expected));
    if a == e {
        return;
    }
    let mut diff = Vec::new();
    for k in a.keys().chain(e.keys()).collect::<BTreeSet<_>>() {
        match (a.get(k), e.get(k)) {
            (Some(x), Some(y)) if x == y => {}
            (x, y) => diff.push(format!("  {k}: got {x:?}, want {y:?}")),
        }
    }
    panic!(
        "{what} ({}) differs from the reference:\n{}",
        actual.display(),
        diff.join("\n")
    );
}

/// `NNNNNN-YYYYMMDDTHHMMSSZ`.
pub fn is_version_name(n: &str) -> bool {
    let b = n.as_bytes();
    b.len() == 23
        && b[..6].iter().all(u8::is_ascii_digit)
        && b[6] == b'-'
        && b[7..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'T'
        && b[16..22].iter().all(u8::is_ascii_digit)
        && b[22] == b'Z'
}

/// The version files of `.ckpt/versions/REL/`, oldest first.
pub fn version_files(m: &Mount, rel: &str) -> Vec<PathBuf> {
    let dir = ctl(m, &format!("versions/{rel}"));
    let mut v: Vec<String> = names(&dir)
        .into_iter()
        .filter(|n| is_version_name(n))
        .collect();
    v.sort();
    v.into_iter().map(|n| dir.join(n)).collect()
}

/// Every path with versions under `.ckpt/versions/`, with the xxh3 of each
/// version, oldest first; checks that `latest` names the last one.
pub fn history(m: &Mount) -> BTreeMap<String, Vec<u128>> {
    let root = ctl(m, "versions");
    let mut out = BTreeMap::new();
    let mut todo = vec![(root, String::new())];
    while let Some((d, rel)) = todo.pop() {
        let mut versions = Vec::new();
        for name in names(&d) {
            let p = d.join(&name);
            let md = fs::symlink_metadata(&p).unwrap_or_else(|e| {
                panic!("{}: listed by readdir, but lstat fails: {e}", p.display())
            });
            if md.is_dir() {
                todo.push((
                    p,
                    if rel.is_empty() {
                        name
                    } else {
                        format!("{rel}/{name}")
                    },
                ));
            } else if is_version_name(&name) {
                versions.push(name);
            } else {
                assert_eq!(name, "latest", "unexpected entry {}", p.display());
            }
        }
        if versions.is_empty() {
            continue;
        }
        versions.sort();
        let latest = fs::read_link(d.join("latest"))
            .unwrap_or_else(|e| panic!("readlink {}/latest: {e}", d.display()));
        assert_eq!(
            latest,
            Path::new(versions.last().unwrap()),
            "{}/latest",
            d.display()
        );
        out.insert(
            rel,
            versions.iter().map(|n| hash_file(&d.join(n))).collect(),
        );
    }
    out
}

/// What a client's reference directory (`py/mirror.py`) says ckptfs must
/// show.
pub struct Ref {
    pub dir: PathBuf,
}

impl Ref {
    /// The reference directory of a mount's test (`ROOT/ref`).
    pub fn of(m: &Mount) -> Ref {
        Ref {
            dir: m.root.join("ref"),
        }
    }

    pub fn tree(&self) -> PathBuf {
        self.dir.join("tree")
    }

    /// The snapshots the client recorded.
    pub fn states(&self) -> BTreeSet<String> {
        names(&self.dir.join("states"))
    }

    /// Every recorded path's versions (xxh3, oldest first).
    pub fn versions(&self) -> BTreeMap<String, Vec<u128>> {
        let mut out = BTreeMap::new();
        let root = self.dir.join("versions");
        let mut todo = vec![(root, String::new())];
        while let Some((d, rel)) = todo.pop() {
            let mut files = Vec::new();
            for name in names(&d) {
                let p = d.join(&name);
                if p.is_dir() {
                    todo.push((
                        p,
                        if rel.is_empty() {
                            name
                        } else {
                            format!("{rel}/{name}")
                        },
                    ));
                } else {
                    files.push(name);
                }
            }
            if !files.is_empty() {
                files.sort();
                out.insert(rel, files.iter().map(|n| hash_file(&d.join(n))).collect());
            }
        }
        out
    }

    /// `done.json`, written by the client when it finished.
    pub fn done(&self) -> Value {
        let p = self.dir.join("done.json");
        let text = fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
        serde_json::from_str(&text).expect("done.json")
    }

    /// The live tree, the snapshots `snaps` (exactly those listed) and
    /// every version must be what the client recorded.
    #[track_caller]
    pub fn check(&self, m: &Mount, snaps: &BTreeSet<String>, what: &str) {
        self.check_trees(m, snaps, what);
        self.check_versions(m, &self.versions(), what);
    }

    /// The live tree and the snapshots `snaps` (exactly those listed) must
    /// be what the client recorded.
    #[track_caller]
    pub fn check_trees(&self, m: &Mount, snaps: &BTreeSet<String>, what: &str) {
        assert_same_tree(&m.mnt, &self.tree(), &format!("{what}: the live tree"));
        assert_eq!(&snapshot_names(m), snaps, "{what}: snapshots listed");
        for s in snaps {
            assert_same_tree(
                &ctl(m, &format!("snapshots/{s}")),
                &self.dir.join("states").join(s),
                &format!("{what}: snapshot {s}"),
            );
        }
    }

    /// `.ckpt/versions/` lists exactly the paths of `want`, each with
    /// exactly those versions.
    #[track_caller]
    pub fn check_versions(&self, m: &Mount, want: &BTreeMap<String, Vec<u128>>, what: &str) {
        let got = history(m);
        if &got == want {
            return;
        }
        let mut diff = Vec::new();
        for k in got.keys().chain(want.keys()).collect::<BTreeSet<_>>() {
            match (got.get(k), want.get(k)) {
                (Some(x), Some(y)) if x == y => {}
                (x, y) => diff.push(format!(
                    "  {k}: {} versions listed, {} recorded; listed {x:x?}, recorded {y:x?}",
                    x.map_or(0, Vec::len),
                    y.map_or(0, Vec::len)
                )),
            }
        }
        panic!(
            "{what}: .ckpt/versions differs from the recorded versions:\n{}",
            diff.join("\n")
        );
    }
}

/// xxh3 of a file, or None when it does not exist.
pub fn hash_file_opt(p: &Path) -> Option<u128> {
    match fs::symlink_metadata(p) {
        Ok(_) => Some(hash_file(p)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => panic!("lstat {}: {e}", p.display()),
    }
}

/// Has `py/SCRIPT check` load, with the client's own library, every copy
/// of each of `files`: each version under `.ckpt/versions/`, `latest`,
/// the live file and the file in each snapshot that holds it, each as the
/// recorded version whose hash it has. Returns how many loads passed.
#[track_caller]
pub fn load_everywhere(m: &Mount, r: &Ref, script_name: &str, kind: &str, files: &[&str]) -> usize {
    let recorded = r.versions();
    let snaps = snapshot_names(m);
    let mut checks = Vec::new();
    for file in files {
        let hashes = recorded
            .get(*file)
            .unwrap_or_else(|| panic!("{file} has no recorded versions"));
        let version_of = |p: &Path| -> Option<usize> {
            let h = hash_file_opt(p)?;
            let i = hashes
                .iter()
                .position(|x| *x == h)
                .unwrap_or_else(|| panic!("{}: not a recorded version of {file}", p.display()));
            Some(i + 1)
        };
        let mut paths: Vec<PathBuf> = version_files(m, file);
        paths.push(ctl(m, &format!("versions/{file}/latest")));
        paths.push(m.path(file));
        paths.extend(
            snaps
                .iter()
                .map(|s| ctl(m, &format!("snapshots/{s}/{file}"))),
        );
        for p in paths {
            if let Some(v) = version_of(&p) {
                checks.push(serde_json::json!({"kind": kind, "file": file, "v": v, "path": p}));
            }
        }
    }
    let list = m.root.join(format!("checks-{kind}.json"));
    fs::write(&list, serde_json::to_vec(&checks).unwrap()).unwrap();
    let out = py(m, script_name, &["check".as_ref(), list.as_os_str()]);
    let passed = out.lines().filter(|l| l.starts_with("ok ")).count();
    assert_eq!(passed, checks.len(), "{script_name} {kind}: {out}");
    passed
}
