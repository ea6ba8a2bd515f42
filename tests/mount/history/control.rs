//! The control directory itself: hidden from the root's listing but
//! reachable by path, `--show-control-dir`, `--control-dir NAME`, and its
//! name refused to live entries (EEXIST, EBUSY). The read-only rules under
//! it are in `readonly.rs`.

#![allow(unsafe_code)]

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};

use super::{cpath, cvt, expect_errno, names, set, vdir, versions};
use crate::common::{sh, Mount, BIN};

fn mkfifo(p: &Path) -> io::Result<()> {
    let c = cpath(p);
    // SAFETY: a valid path.
    cvt(unsafe { libc::mkfifo(c.as_ptr(), 0o644) })
}

#[test]
fn the_control_dir_is_hidden_from_listings_but_reachable_by_path() {
    let m = Mount::new("hist-ctl-hidden");
    fs::write(m.path("a"), b"a").unwrap();
    fs::write(m.path("b"), b"b").unwrap();
    fs::create_dir(m.path("d")).unwrap();
    fs::write(m.path("d/c"), b"c").unwrap();
    assert_eq!(names(&m.mnt), set(&["a", "b", "d"]));
    let ls = sh(&format!("ls -a '{}'", m.mnt.display()));
    assert!(
        !ls.lines().any(|l| l == ".ckpt"),
        "ls -a lists .ckpt:\n{ls}"
    );
    let found = sh(&format!("cd '{}' && find . | sort", m.mnt.display()));
    assert_eq!(
        found, ".\n./a\n./b\n./d\n./d/c\n",
        "find does not descend into .ckpt"
    );
    let tar = sh(&format!(
        "tar -cf - -C '{}' . | tar -tf - | sort",
        m.mnt.display()
    ));
    assert!(
        !tar.contains("ckpt"),
        "tar of the mount picks up .ckpt:\n{tar}"
    );

    let md = fs::metadata(m.path(".ckpt")).unwrap();
    assert!(md.is_dir());
    assert_ne!(md.ino(), 1);
    assert_eq!(
        names(&m.path(".ckpt")),
        set(&[
            "events",
            "remotes",
            "retention",
            "snapshots",
            "stats",
            "verify",
            "versions"
        ])
    );
    assert_eq!(
        fs::metadata(m.path(".ckpt/..")).unwrap().ino(),
        1,
        ".ckpt/.. is the mount root"
    );
    assert_eq!(names(&m.path(".ckpt/versions")), set(&["a", "b", "d"]));
    assert_eq!(names(&vdir(&m, "d")), set(&["c"]));
    assert_eq!(
        sh(&format!(
            "cd '{}/.ckpt/versions/d/c' && cat latest",
            m.mnt.display()
        )),
        "c"
    );
    assert!(fs::metadata(m.path(".ckpt/snapshots")).unwrap().is_dir());
    assert!(fs::metadata(m.path(".ckpt/stats")).unwrap().is_file());
    let stats = fs::read_to_string(m.path(".ckpt/stats")).unwrap();
    assert!(
        stats.trim_start().starts_with('{'),
        "stats is JSON: {stats}"
    );
    // A name that is only the control dir's at the root.
    fs::create_dir(m.path("d/.ckpt")).unwrap();
    fs::write(m.path("d/.ckpt/inner"), b"live").unwrap();
    assert_eq!(names(&m.path("d")), set(&[".ckpt", "c"]));
    assert_eq!(fs::read(m.path("d/.ckpt/inner")).unwrap(), b"live");
    assert_eq!(versions(&vdir(&m, "d/.ckpt/inner")).len(), 1);
}

#[test]
fn show_control_dir_lists_it_exactly_once() {
    let m = Mount::with_args("hist-ctl-show", &["--show-control-dir"]);
    assert_eq!(
        names(&m.mnt),
        set(&[".ckpt"]),
        "an empty root lists only .ckpt"
    );
    let is_dir = fs::read_dir(&m.mnt)
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.file_name() == ".ckpt")
        .map(|e| e.file_type().unwrap().is_dir());
    assert_eq!(is_dir, Some(true), ".ckpt is listed as a directory");
    // Enough entries for several readdir requests.
    for i in 0..500 {
        fs::write(m.path(&format!("file-with-a-long-name-{i:04}")), b"x").unwrap();
    }
    let all = names(&m.mnt);
    assert_eq!(all.len(), 501, "500 files and .ckpt");
    assert!(all.contains(".ckpt"));
    let ls = sh(&format!("ls -a '{}'", m.mnt.display()));
    assert_eq!(
        ls.lines().filter(|l| *l == ".ckpt").count(),
        1,
        "ls -a lists .ckpt once"
    );
    for i in (0..500).step_by(3) {
        fs::remove_file(m.path(&format!("file-with-a-long-name-{i:04}"))).unwrap();
    }
    let all = names(&m.mnt);
    assert_eq!(all.len(), 500 - 167 + 1);
    assert!(all.contains(".ckpt"));
    assert_eq!(
        names(&m.path(".ckpt")),
        set(&[
            "events",
            "remotes",
            "retention",
            "snapshots",
            "stats",
            "verify",
            "versions"
        ])
    );
    // find descends into it when it is shown.
    let found = sh(&format!(
        "find '{}' -name latest -path '*versions*' | wc -l",
        m.mnt.display()
    ));
    assert_eq!(
        found.trim(),
        "500",
        "one latest per file's history, deleted ones too"
    );
}

#[test]
fn control_dir_can_be_given_another_name() {
    let m = Mount::with_args(
        "hist-ctl-rename",
        &["--control-dir", ".history", "--show-control-dir"],
    );
    fs::write(m.path("f"), b"one").unwrap();
    assert_eq!(
        fs::read(m.path(".history/versions/f/latest")).unwrap(),
        b"one"
    );
    expect_errno(
        fs::metadata(m.path(".ckpt")),
        libc::ENOENT,
        ".ckpt with --control-dir .history",
    );
    // .ckpt is an ordinary name now: a live directory with history of its own.
    fs::create_dir(m.path(".ckpt")).unwrap();
    fs::write(m.path(".ckpt/x"), b"live x").unwrap();
    assert_eq!(names(&m.mnt), set(&[".ckpt", ".history", "f"]));
    assert_eq!(
        fs::read(m.path(".history/versions/.ckpt/x/latest")).unwrap(),
        b"live x"
    );
    fs::create_dir(m.path(".history/snapshots/s")).unwrap();
    assert_eq!(
        fs::read(m.path(".history/snapshots/s/.ckpt/x")).unwrap(),
        b"live x"
    );
    assert_eq!(names(&m.path(".history/snapshots/s")), set(&[".ckpt", "f"]));
    expect_errno(
        fs::create_dir(m.path(".history")),
        libc::EEXIST,
        "mkdir .history",
    );
    expect_errno(
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(m.path(".history")),
        libc::EEXIST,
        "create .history",
    );
    expect_errno(
        fs::write(m.path(".history/new"), b"x"),
        libc::EROFS,
        "create in .history",
    );

    // A name with a slash is refused before anything is mounted.
    let bad = m.root.join("bad-mnt");
    fs::create_dir(&bad).unwrap();
    let out = Command::new(BIN)
        .arg("mount")
        .arg(m.root.join("bad-store"))
        .arg(&bad)
        .args(["--control-dir", "a/b"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "--control-dir a/b was accepted");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("a/b"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mounts = fs::read_to_string("/proc/mounts").unwrap();
    assert!(
        !mounts.contains(bad.to_str().unwrap()),
        "something was mounted"
    );
}

#[test]
fn the_control_dir_name_cannot_be_taken_by_a_live_entry() {
    let m = Mount::new("hist-ctl-eexist");
    fs::write(m.path("a"), b"a").unwrap();
    fs::create_dir(m.path("d")).unwrap();
    let ctl = m.path(".ckpt");
    expect_errno(fs::create_dir(&ctl), libc::EEXIST, "mkdir .ckpt");
    expect_errno(
        OpenOptions::new().write(true).create_new(true).open(&ctl),
        libc::EEXIST,
        "create .ckpt",
    );
    expect_errno(
        std::os::unix::fs::symlink("a", &ctl),
        libc::EEXIST,
        "symlink .ckpt",
    );
    expect_errno(mkfifo(&ctl), libc::EEXIST, "mkfifo .ckpt");
    expect_errno(
        fs::hard_link(m.path("a"), &ctl),
        libc::EEXIST,
        "link a .ckpt",
    );
    expect_errno(
        fs::rename(m.path("a"), &ctl),
        libc::EISDIR,
        "rename a file over .ckpt",
    );
    expect_errno(
        fs::rename(m.path("d"), &ctl),
        libc::EBUSY,
        "rename a dir over .ckpt",
    );
    expect_errno(
        fs::rename(&ctl, m.path("moved")),
        libc::EBUSY,
        "rename .ckpt",
    );
    expect_errno(fs::remove_dir(&ctl), libc::EBUSY, "rmdir .ckpt");
    expect_errno(fs::remove_file(&ctl), libc::EISDIR, "unlink .ckpt");
    // Nothing changed: the same live tree, the same control dir.
    assert_eq!(names(&m.mnt), set(&["a", "d"]));
    assert_eq!(fs::read(m.path("a")).unwrap(), b"a");
    assert_eq!(
        names(&ctl),
        set(&[
            "events",
            "remotes",
            "retention",
            "snapshots",
            "stats",
            "verify",
            "versions"
        ])
    );
    assert_eq!(names(&m.path(".ckpt/versions")), set(&["a"]));
}
