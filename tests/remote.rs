//! The remote tier end to end: stores filled through a real mount, then
//! `ckptfs remote add|list|snapshots`, `ckptfs push` and `ckptfs restore
//! URL` run as the real binary on the unmounted stores, against a
//! directory (`file://`) and against a real single-node Ceph RADOS Gateway
//! (`s3://`, started by `scripts/s3-cluster`; the Ceph tests fail, never
//! skip, when Ceph is not installed). This file holds the helpers; one
//! theme per file:
//!
//! - `file_remote`: the first push uploads one full copy, the next one
//!   only the changed chunks, a third nothing; both snapshots restore
//!   byte-exact (modes, mtimes, symlinks) from the URL.
//! - `corruption`: a flipped byte in a pack object fails the restore with
//!   a message naming the pack, and leaves no DEST.
//! - `ceph`: the `Ceph` fixture (a cluster stopped on drop, also when the
//!   test panics).
//! - `two_nodes`: two stores holding the same model push to one bucket;
//!   the second uploads only its own shard; each restores by `--node`.
//! - `fault`: radosgw dies in the middle of a push: the push fails naming
//!   the remote, the remote lists no snapshot, and the next push completes
//!   it, reusing the packs already there.
//! - `add_errors`: a missing bucket, wrong keys and a dead endpoint are
//!   refused by `remote add` with one clear line, and nothing is added.
//! - `daemon`: a mounted store pushes each snapshot in the background,
//!   shows a failing remote's error while local work goes on, browses
//!   remotes under `.ckpt/remotes/` (EIO on a damaged object), reads a
//!   clone's checkpoint on demand, and merges global snapshots.
//! - `gc`: remote retention, condemn-then-delete with a grace period, and
//!   pushes that never rely on a condemned pack.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod remote {
    mod add_errors;
    mod ceph;
    mod corruption;
    mod daemon;
    mod fault;
    mod file_remote;
    mod gc;
    mod two_nodes;
}

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

pub use common::cli::{command, node, show, state, text};
use serde_json::Value;

/// Arguments of mixed types (`&str`, `PathBuf`, ...) as `OsString`s.
#[macro_export]
macro_rules! args {
    ($($x:expr),* $(,)?) => {
        vec![$(AsRef::<std::ffi::OsStr>::as_ref(&$x).to_os_string()),*]
    };
}

/// Extra environment variables of a command (the S3 keys).
pub type Env<'a> = &'a [(&'a str, &'a str)];

/// No extra environment.
pub const NO_ENV: Env<'static> = &[];

/// Runs `ckptfs ARGS` (killed after 120 s).
pub fn cli(args: &[OsString], env: Env) -> Output {
    common::cli::run_cli(args, env)
}

/// Runs a command that must succeed (exit 0); returns its stdout.
#[track_caller]
pub fn ok(args: Vec<OsString>, env: Env) -> String {
    common::cli::run_ok(&args, env)
}

/// Runs a command that must succeed and print JSON.
#[track_caller]
pub fn json(args: Vec<OsString>, env: Env) -> Value {
    common::cli::run_json(&args, env)
}

/// Asserts that a finished command failed with exit code 1 and that its
/// error is one `ckptfs: ` line, the last on stderr (progress lines may
/// come before it), holding every one of `needles`; returns that line.
#[track_caller]
pub fn assert_refused(what: &str, out: &Output, needles: &[&str]) -> String {
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "`{what}` should have failed with exit code 1:\nstdout:\n{}\nstderr:\n{stderr}",
        text(&out.stdout)
    );
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("ckptfs: "))
        .collect();
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        errors.len() == 1 && errors[0] == last,
        "`{what}`: the error is not one `ckptfs:` line at the end of stderr:\n{stderr}"
    );
    for n in needles {
        assert!(
            last.contains(n),
            "`{what}`: the error does not mention {n:?}:\n{stderr}"
        );
    }
    last.to_string()
}

/// Runs a command that must fail (see [`assert_refused`]).
#[track_caller]
pub fn refused(args: Vec<OsString>, env: Env, needles: &[&str]) -> String {
    let out = cli(&args, env);
    assert_refused(&format!("ckptfs {}", show(&args)), &out, needles)
}

/// The one report `push --json` printed for one remote, checked to be
/// about `remote`.
#[track_caller]
pub fn push_report(args: Vec<OsString>, env: Env, remote: &str) -> Value {
    let list = json(args, env);
    let reports = list.as_array().expect("push --json prints a list");
    assert_eq!(reports.len(), 1, "one remote, one report: {list:#}");
    assert_eq!(reports[0]["remote"], remote, "{list:#}");
    reports[0].clone()
}

/// A number field of a JSON object.
#[track_caller]
pub fn num(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no number {key:?} in {v:#}"))
}

/// The names in `snapshots` of a push report.
#[track_caller]
pub fn pushed(v: &Value) -> Vec<String> {
    v["snapshots"]
        .as_array()
        .unwrap_or_else(|| panic!("no snapshots list in {v:#}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// `(node, name)` of every snapshot `remote snapshots --json` lists, sorted.
#[track_caller]
pub fn remote_snapshots(store: &Path, remote: &str, env: Env) -> Vec<(String, String)> {
    let list = json(args!["remote", "snapshots", store, remote, "--json"], env);
    let mut out: Vec<(String, String)> = list
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list:#}"))
        .iter()
        .map(|s| {
            (
                s["node"].as_str().unwrap().to_string(),
                s["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// The names in a directory, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// Asserts that the file at `path` holds exactly `want`, naming the first
/// differing byte (and not printing megabytes) when it does not.
#[track_caller]
pub fn assert_bytes(path: &Path, want: &[u8]) {
    let got = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    if got != want {
        let at = got
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "{}: {} bytes, want {}; first difference at byte {at}",
            path.display(),
            got.len(),
            want.len()
        );
    }
}

/// Sets a path's permission bits.
pub fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}
