//! History through the real mount: the `.ckpt/` control directory, one
//! theme per file. This module holds the helpers they share.
//!
//! - `control`: hidden but reachable, `--show-control-dir`,
//!   `--control-dir`, the name taken (EEXIST).
//! - `readonly`: every other write under `.ckpt/` refused with its exact
//!   errno, and nothing changed.
//! - `versions`: `.ckpt/versions/<path>/`: naming, attributes, exact bytes,
//!   deleted and renamed files, atomic save, HF directory rename, remount,
//!   a file with 1,000 versions.
//! - `snapshots`: `mkdir .ckpt/snapshots/NAME`: exact content, frozen,
//!   rmdir, pin, mv, `latest`, `best`, xattrs, remount.
//! - `snapshot_load`: 10,000 files, waiting for writers.
//! - `commits`: when a version is committed: each close, also while a
//!   forked child holds an old descriptor; a file closed unwritten.
//! - `writer`: a writer process for tests that depend on when commits
//!   happen.
//! - `auto`: automatic snapshots: each trigger and switch, staging names,
//!   the quiet period, a DCP-like save.

#![allow(unsafe_code)]

mod auto;
mod commits;
mod control;
mod readonly;
mod snapshot_load;
mod snapshots;
mod versions;
mod writer;

use writer::{put, Writer};

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::{hash_file, Mount};

/// How long an automatic snapshot may take to appear.
pub(super) const AUTO_DEADLINE: Duration = Duration::from_secs(10);

// ------------------------------------------------------------ syscalls

pub(super) fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

pub(super) fn cstr(s: &str) -> CString {
    CString::new(s).expect("string without NUL")
}

pub(super) fn cvt(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Asserts that `r` failed with errno `want`.
#[track_caller]
pub(super) fn expect_errno<T: std::fmt::Debug>(r: io::Result<T>, want: i32, what: &str) {
    let wanted = io::Error::from_raw_os_error(want);
    match r {
        Ok(v) => panic!("{what}: expected `{wanted}`, got Ok({v:?})"),
        Err(e) => assert_eq!(
            e.raw_os_error(),
            Some(want),
            "{what}: expected `{wanted}`, got `{e}`"
        ),
    }
}

pub(super) fn errno_name(e: i32) -> String {
    io::Error::from_raw_os_error(e).to_string()
}

/// `setxattr(2)` (follows symlinks).
pub(super) fn setx(p: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let (c, n) = (cpath(p), cstr(name));
    // SAFETY: valid path, name and value buffer.
    cvt(unsafe {
        libc::setxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

/// `removexattr(2)`.
pub(super) fn removex(p: &Path, name: &str) -> io::Result<()> {
    let (c, n) = (cpath(p), cstr(name));
    // SAFETY: valid path and name.
    cvt(unsafe { libc::removexattr(c.as_ptr(), n.as_ptr()) })
}

/// `lgetxattr(2)`.
pub(super) fn getx(p: &Path, name: &str) -> io::Result<Vec<u8>> {
    let (c, n) = (cpath(p), cstr(name));
    // SAFETY: a size query with a null buffer.
    let size = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
    if size < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; size as usize + 64];
    // SAFETY: the buffer is buf.len() bytes.
    let got =
        unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(got as usize);
    Ok(buf)
}

/// An xattr as text; panics when it is missing.
#[track_caller]
pub(super) fn getx_str(p: &Path, name: &str) -> String {
    let v = getx(p, name).unwrap_or_else(|e| panic!("getxattr {name} of {}: {e}", p.display()));
    String::from_utf8(v).expect("utf-8 xattr value")
}

/// `llistxattr(2)`.
pub(super) fn listx(p: &Path) -> io::Result<BTreeSet<String>> {
    let c = cpath(p);
    // SAFETY: a size query with a null buffer.
    let size = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    if size < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; size as usize + 64];
    // SAFETY: the buffer is buf.len() bytes.
    let got = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(got as usize);
    Ok(buf
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect())
}

/// `utimensat(2)` with explicit times; `nofollow` sets a symlink's own.
pub(super) fn set_times(p: &Path, mtime: (i64, i64), nofollow: bool) -> io::Result<()> {
    let ts = |(s, n): (i64, i64)| {
        // SAFETY: timespec is plain old data; zero is a valid value.
        let mut t: libc::timespec = unsafe { std::mem::zeroed() };
        t.tv_sec = s as libc::time_t;
        t.tv_nsec = n as _;
        t
    };
    let times = [ts(mtime), ts(mtime)];
    let c = cpath(p);
    let flags = if nofollow {
        libc::AT_SYMLINK_NOFOLLOW
    } else {
        0
    };
    // SAFETY: valid path and a two-element array.
    cvt(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), flags) })
}

pub(super) fn mtime_of(p: &Path) -> (i64, i64) {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
    (m.mtime(), m.mtime_nsec())
}

// ------------------------------------------------------------ listings

/// Names in a directory (without . and ..), asserting none is listed twice.
pub(super) fn names(dir: &Path) -> BTreeSet<String> {
    let all = listed(dir);
    let n = all.len();
    let set: BTreeSet<String> = all.into_iter().collect();
    assert_eq!(set.len(), n, "a name was listed twice in {}", dir.display());
    set
}

/// Names in a directory in readdir order.
pub(super) fn listed(dir: &Path) -> Vec<String> {
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

pub(super) fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

pub(super) fn readlink(p: &Path) -> String {
    fs::read_link(p)
        .unwrap_or_else(|e| panic!("readlink {}: {e}", p.display()))
        .into_os_string()
        .into_string()
        .expect("utf-8 link target")
}

/// `.ckpt/versions/<rel>` of a mount.
pub(super) fn vdir(m: &Mount, rel: &str) -> PathBuf {
    m.path(".ckpt/versions").join(rel)
}

/// `.ckpt/snapshots/<rel>` of a mount.
pub(super) fn sdir(m: &Mount, rel: &str) -> PathBuf {
    m.path(".ckpt/snapshots").join(rel)
}

/// The version files of a history directory, oldest first, checking that
/// every other name is `latest` or a child directory and that sequence
/// numbers run 1, 2, 3, ...
pub(super) fn versions(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for name in names(dir) {
        if name == "latest" {
            continue;
        }
        if fs::symlink_metadata(dir.join(&name))
            .map(|m| m.is_dir())
            .unwrap_or(false)
        {
            continue;
        }
        assert!(
            parse_version(&name).is_some(),
            "{}: `{name}` is not NNNNNN-YYYYMMDDTHHMMSSZ",
            dir.display()
        );
        out.push(name);
    }
    out.sort();
    for (i, name) in out.iter().enumerate() {
        assert_eq!(
            parse_version(name).map(|(seq, _)| seq),
            Some(i as u64 + 1),
            "{}: versions {out:?} do not run 1, 2, 3, ...",
            dir.display()
        );
    }
    out
}

/// `NNNNNN-YYYYMMDDTHHMMSSZ` → (seq, stamp).
pub(super) fn parse_version(name: &str) -> Option<(u64, String)> {
    let (seq, stamp) = name.split_once('-')?;
    if seq.len() != 6 || !seq.bytes().all(|b| b.is_ascii_digit()) || !is_stamp(stamp) {
        return None;
    }
    Some((seq.parse().ok()?, stamp.to_string()))
}

/// `auto-NNNNNN-YYYYMMDDTHHMMSSZ` → (seq, stamp).
pub(super) fn parse_auto(name: &str) -> Option<(u64, String)> {
    parse_version(name.strip_prefix("auto-")?)
}

/// `YYYYMMDDTHHMMSSZ`.
pub(super) fn is_stamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 16
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z'
}

/// `YYYYMMDDTHHMMSSZ` of a time, in UTC.
pub(super) fn compact_utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).expect("after 1970").as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!(
        "{y:04}{mo:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// RFC 3339 UTC (`2026-01-02T03:04:05.123Z`) → `20260102T030405Z`.
pub(super) fn rfc3339_to_compact(s: &str) -> String {
    let head = s
        .get(..19)
        .unwrap_or_else(|| panic!("not an RFC 3339 time: {s}"));
    assert!(s.ends_with('Z'), "not a UTC RFC 3339 time: {s}");
    let compact: String = head.chars().filter(|c| *c != '-' && *c != ':').collect();
    format!("{compact}Z")
}

/// RFC 3339 UTC (`2026-01-02T03:04:05.123Z`) → seconds since 1970.
pub(super) fn rfc3339_unix(s: &str) -> f64 {
    let num = |r: std::ops::Range<usize>| -> i64 {
        s.get(r)
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("not an RFC 3339 time: {s}"))
    };
    let (y, mo, d) = (num(0..4), num(5..7), num(8..10));
    let (h, mi, sec) = (num(11..13), num(14..16), num(17..19));
    // Howard Hinnant's days_from_civil.
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let frac: f64 = match s.get(19..) {
        Some(rest) if rest.starts_with('.') => format!("0{}", rest.trim_end_matches('Z'))
            .parse()
            .unwrap_or(0.0),
        _ => 0.0,
    };
    (days * 86_400 + h * 3600 + mi * 60 + sec) as f64 + frac
}

/// Seconds since 1970 of a time.
pub(super) fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// Asserts that a `YYYYMMDDTHHMMSSZ` stamp lies within [before, after].
#[track_caller]
pub(super) fn assert_stamp_within(stamp: &str, before: SystemTime, after: SystemTime, what: &str) {
    let (lo, hi) = (compact_utc(before), compact_utc(after));
    assert!(
        lo.as_str() <= stamp && stamp <= hi.as_str(),
        "{what}: time {stamp} not within [{lo}, {hi}]"
    );
}

// ------------------------------------------------------------ snapshots

/// Snapshot names (not `latest`/`best`) in listing order.
pub(super) fn snapshot_list(m: &Mount) -> Vec<String> {
    listed(&m.path(".ckpt/snapshots"))
        .into_iter()
        .filter(|n| n != "latest" && n != "best")
        .collect()
}

/// Automatic snapshots, oldest first.
pub(super) fn auto_snapshots(m: &Mount) -> Vec<String> {
    let mut autos: Vec<String> = snapshot_list(m)
        .into_iter()
        .filter(|n| n.starts_with("auto-"))
        .collect();
    autos.sort();
    for a in &autos {
        assert!(
            parse_auto(a).is_some(),
            "`{a}` is not auto-NNNNNN-YYYYMMDDTHHMMSSZ"
        );
    }
    autos
}

/// Polls `f` every 20 ms until it gives a value; panics after `timeout`.
#[track_caller]
pub(super) fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until there are at least `n` automatic snapshots; returns them
/// (oldest first).
#[track_caller]
pub(super) fn wait_autos(m: &Mount, n: usize, what: &str) -> Vec<String> {
    let found = wait_for(
        &format!("automatic snapshot #{n} ({what})"),
        AUTO_DEADLINE,
        || {
            let autos = auto_snapshots(m);
            (autos.len() >= n).then_some(autos)
        },
    );
    assert_eq!(
        found.len(),
        n,
        "{what}: more automatic snapshots than expected: {found:?}"
    );
    found
}

// ------------------------------------------------------------ tree walks

/// What a walk records of one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    pub kind: char,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u64,
    pub size: u64,
    pub mtime: (i64, i64),
    pub content: Option<u128>,
    pub target: Option<String>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// Every entry under `root` (not `root` itself) by relative path, without
/// following symlinks.
pub(super) fn walk(root: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    walk_into(root, "", &mut out);
    out
}

fn walk_into(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Entry>) {
    for name in names(dir) {
        let p = dir.join(&name);
        let rel = format!("{prefix}{name}");
        let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            'd'
        } else if ft.is_file() {
            'f'
        } else if ft.is_symlink() {
            'l'
        } else {
            'o'
        };
        let mut xattrs = BTreeMap::new();
        if kind != 'l' {
            for x in listx(&p).unwrap_or_else(|e| panic!("listxattr {}: {e}", p.display())) {
                let v =
                    getx(&p, &x).unwrap_or_else(|e| panic!("getxattr {x} of {}: {e}", p.display()));
                xattrs.insert(x, v);
            }
        }
        out.insert(
            rel.clone(),
            Entry {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                nlink: md.nlink(),
                size: if kind == 'd' { 0 } else { md.size() },
                mtime: (md.mtime(), md.mtime_nsec()),
                content: (kind == 'f').then(|| hash_file(&p)),
                target: (kind == 'l').then(|| readlink(&p)),
                xattrs,
            },
        );
        if kind == 'd' {
            walk_into(&p, &format!("{rel}/"), out);
        }
    }
}

/// Asserts two walks are equal, naming the differences.
#[track_caller]
pub(super) fn assert_same_tree(
    got: &BTreeMap<String, Entry>,
    want: &BTreeMap<String, Entry>,
    what: &str,
) {
    let mut diffs = Vec::new();
    for (k, w) in want {
        match got.get(k) {
            None => diffs.push(format!("missing {k}")),
            Some(g) if g != w => diffs.push(format!("{k}: got {g:?}\n    want {w:?}")),
            Some(_) => {}
        }
    }
    for k in got.keys().filter(|k| !want.contains_key(*k)) {
        diffs.push(format!("unexpected {k}"));
    }
    assert!(
        diffs.is_empty(),
        "{what}: {} difference(s):\n  {}",
        diffs.len(),
        diffs
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  ")
    );
}
