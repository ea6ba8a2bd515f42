//! POSIX semantics through the real mount, one theme per file. This
//! module holds the helpers several of them share.
//!
//! - `files`: open flags, writes at any offset, holes, truncation, unlink.
//! - `names`: rename and renameat2, symlinks, hard links, special files.
//! - `attrs`: modes, owners, times, times racing a commit, xattrs.
//! - `dirs`: directory link counts, another user's access, statfs,
//!   readdir, long names and paths.
//! - `mmap_sync`: mmap, fsync, a file over 4 GiB.
//! - `tools`: cp, dd, tar, rsync, numpy.

#![allow(unsafe_code)]

mod attrs;
mod dirs;
mod files;
mod mmap_sync;
pub(crate) mod names;
mod tools;

use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;

// ---------------------------------------------------------------- helpers

pub(super) fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
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

/// Names in a directory (without . and ..), asserting none is listed twice.
pub(super) fn names(dir: &Path) -> BTreeSet<String> {
    let mut all: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .into_string()
                .expect("utf-8 name")
        })
        .collect();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "a name was listed twice in {}", dir.display());
    all.into_iter().collect()
}

pub(super) fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

pub(super) fn read_at(p: &Path, offset: u64, len: usize) -> Vec<u8> {
    let f = File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, offset)
        .unwrap_or_else(|e| panic!("pread {} at {offset}: {e}", p.display()));
    buf
}

/// Panics with the first differing offset instead of dumping megabytes.
#[track_caller]
pub(super) fn assert_bytes(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let first = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: content differs (got {} bytes, want {}; first difference at {first:?})",
            got.len(),
            want.len()
        );
    }
}

pub(super) fn write_model(model: &mut Vec<u8>, offset: usize, data: &[u8]) {
    if model.len() < offset + data.len() {
        model.resize(offset + data.len(), 0);
    }
    model[offset..offset + data.len()].copy_from_slice(data);
}

pub(super) fn q(p: &Path) -> String {
    let s = p.to_str().expect("utf-8 path");
    assert!(!s.contains('\''), "path with a quote: {s}");
    format!("'{s}'")
}
