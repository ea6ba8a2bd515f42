//! The operator commands (`snapshot`, `snapshots`, `versions`, `restore`,
//! `pin`, `unpin`, `gc`, `stats`, `verify`, `unmount`) run as the real
//! binary, each on a live mount and on the unmounted store (the fixture's
//! daemon stopped). This file holds the helpers; one theme per file:
//!
//! - `listing`: snapshot, snapshots, pin/unpin, versions, stats, help, and
//!   refusing a store that a daemon serves.
//! - `restore`: whole snapshots, paths inside them, single versions;
//!   bytes, modes, mtimes, symlinks, hard links; DEST and `--force`.
//! - `gc`: `--dry-run` changes nothing; `gc` expires per policy and the
//!   store shrinks.
//! - `relocation`: a sparse save's unchanged chunks move next to its new
//!   ones: it reads back as one stretch, the store does not grow, and a GC
//!   of the save they moved from keeps every kept version intact; a disk
//!   that fills during such saves gives ENOSPC and loses no committed save.
//! - `verify`: clean on a healthy store; a flipped byte in a pack file is
//!   found and named, with exit code 1.
//! - `unmount`: the daemon exits 0 and the mount is gone; busy and
//!   `--lazy`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod cli_ops {
    mod gc;
    mod listing;
    mod relocation;
    mod restore;
    mod unmount;
    mod verify;
}

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::Output;

pub use common::cli::{show, text};

/// Arguments of mixed types (`&str`, `PathBuf`, ...) as `OsString`s.
#[macro_export]
macro_rules! args {
    ($($x:expr),* $(,)?) => {
        vec![$(AsRef::<std::ffi::OsStr>::as_ref(&$x).to_os_string()),*]
    };
}

/// Runs `ckptfs ARGS` (killed after 120 s).
pub fn cli(args: Vec<OsString>) -> Output {
    common::cli::run_cli(&args, &[])
}

/// Runs a command that must succeed (exit 0); returns its stdout.
#[track_caller]
pub fn ok(args: Vec<OsString>) -> String {
    common::cli::run_ok(&args, &[])
}

/// Runs a command that must fail with exit code 1 and a `ckptfs:` message
/// on stderr holding every one of `needles`; returns stderr.
#[track_caller]
pub fn refused(args: Vec<OsString>, needles: &[&str]) -> String {
    let out = cli(args.clone());
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "`ckptfs {}` should have failed:\nstdout:\n{}\nstderr:\n{stderr}",
        show(&args),
        text(&out.stdout)
    );
    assert!(
        stderr.contains("ckptfs: "),
        "no `ckptfs:` message:\n{stderr}"
    );
    for n in needles {
        assert!(
            stderr.contains(n),
            "`ckptfs {}`: stderr does not mention {n:?}:\n{stderr}",
            show(&args)
        );
    }
    stderr
}

/// Runs a command that must succeed and print JSON.
#[track_caller]
pub fn json(args: Vec<OsString>) -> serde_json::Value {
    common::cli::run_json(&args, &[])
}

/// True when `path` is a mount point in `/proc/mounts`.
pub fn is_mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    mounts.lines().any(|l| l.split(' ').nth(1) == path.to_str())
}

/// The names of the snapshots `ckptfs snapshots --json` lists.
pub fn snapshot_names(target: &Path) -> Vec<String> {
    let list = json(args!["snapshots", target, "--json"]);
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

/// `OsStr` of a `str`, for comparisons.
pub fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}
