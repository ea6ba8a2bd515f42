//! `.ckpt/snapshots/`: `mkdir` takes a snapshot holding exactly the
//! committed tree (files, dirs, symlinks, a FIFO, hard links, modes,
//! owners, mtimes, xattrs) that later changes do not alter; `rmdir`,
//! pinning (EBUSY), `mv`, `latest` and `best`, the `user.ckpt.*` xattrs,
//! and remount. Large trees and busy writers are in `snapshot_load.rs`.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::time::{Duration, SystemTime};

use super::{
    assert_same_tree, assert_stamp_within, cpath, cvt, expect_errno, getx, getx_str, listx, names,
    readlink, removex, rfc3339_to_compact, sdir, set, set_times, setx, snapshot_list, walk, Entry,
};
use crate::common::{noise, sh, Mount};

/// A tree with every kind of entry and attribute a snapshot must keep.
fn build_tree(m: &Mount) {
    let p = |r: &str| m.path(r);
    let chmod =
        |r: &str, mode: u32| fs::set_permissions(p(r), fs::Permissions::from_mode(mode)).unwrap();
    fs::write(p("a.bin"), noise(300_000, 1)).unwrap();
    fs::write(p("exec.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    chmod("exec.sh", 0o755);
    fs::write(p("secret"), b"s3cret").unwrap();
    chmod("secret", 0o600);
    std::os::unix::fs::chown(p("secret"), Some(1234), Some(5678)).unwrap();
    fs::write(p("empty"), b"").unwrap();
    fs::create_dir_all(p("d/sub")).unwrap();
    fs::write(p("d/sub/deep.txt"), b"deep").unwrap();
    fs::write(p("d/notes.txt"), noise(70_000, 2)).unwrap();
    chmod("d", 0o750);
    chmod("d/sub", 0o700);
    fs::create_dir(p("emptydir")).unwrap();
    chmod("emptydir", 0o1777);
    std::os::unix::fs::symlink("a.bin", p("link-to-a")).unwrap();
    std::os::unix::fs::symlink("../nowhere", p("d/dangling")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", p("abs")).unwrap();
    fs::hard_link(p("a.bin"), p("a-hard")).unwrap();
    let fifo = cpath(&p("pipe"));
    // SAFETY: a valid path.
    cvt(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }).unwrap();
    setx(&p("a.bin"), "user.step", b"100").unwrap();
    setx(&p("d"), "user.kind", b"dir").unwrap();
    setx(&p("exec.sh"), "user.bin", &[0, 1, 2, 255]).unwrap();
    set_times(&p("a.bin"), (1_600_000_000, 123_456_789), false).unwrap();
    set_times(&p("d/sub"), (1_500_000_000, 5), false).unwrap();
    set_times(&p("link-to-a"), (1_400_000_000, 7), true).unwrap();
    set_times(&p("d"), (1_450_000_000, 0), false).unwrap();
}

/// The live tree as the filesystem holds it: walked once the kernel's
/// attribute cache (1 s) has expired. A file created and closed without a
/// write is the one case where the two differ (see `commits.rs`).
fn settled_walk(m: &Mount) -> BTreeMap<String, Entry> {
    std::thread::sleep(Duration::from_millis(1100));
    walk(&m.mnt)
}

#[test]
fn mkdir_takes_a_snapshot_of_exactly_the_committed_tree() {
    let m = Mount::new("hist-snap-exact");
    build_tree(&m);
    let want = settled_walk(&m);
    assert_eq!(want.len(), 14, "{:?}", want.keys());
    assert!(
        !want.contains_key(".ckpt"),
        "the control dir is not part of the tree"
    );
    assert_eq!(want["a-hard"].nlink, 2);
    assert_eq!(want["link-to-a"].mtime, (1_400_000_000, 7));
    assert!(snapshot_list(&m).is_empty());
    fs::create_dir(sdir(&m, "s1")).unwrap();
    let snap = sdir(&m, "s1");
    assert!(fs::metadata(&snap).unwrap().is_dir());
    assert_same_tree(&walk(&snap), &want, "snapshot s1 vs the live tree");
    assert_eq!(names(&m.path(".ckpt/snapshots")), set(&["latest", "s1"]));
    assert_eq!(readlink(&sdir(&m, "latest")), "s1");
    assert_eq!(
        fs::read(snap.join("link-to-a")).unwrap(),
        noise(300_000, 1),
        "symlinks resolve inside the snapshot"
    );
    // Reading the snapshot does not add anything to the live tree.
    assert_same_tree(
        &walk(&m.mnt),
        &want,
        "the live tree after reading the snapshot",
    );
}

#[test]
fn later_changes_do_not_alter_a_snapshot() {
    let m = Mount::new("hist-snap-frozen");
    build_tree(&m);
    fs::create_dir(sdir(&m, "s1")).unwrap();
    let frozen = walk(&sdir(&m, "s1"));
    assert_same_tree(&frozen, &settled_walk(&m), "s1 right after mkdir");

    let p = |r: &str| m.path(r);
    OpenOptions::new()
        .write(true)
        .open(p("a.bin"))
        .unwrap()
        .write_all_at(b"CHANGED", 1000)
        .unwrap();
    OpenOptions::new()
        .append(true)
        .open(p("exec.sh"))
        .unwrap()
        .write_all(b"echo more\n")
        .unwrap();
    OpenOptions::new()
        .write(true)
        .open(p("secret"))
        .unwrap()
        .set_len(2)
        .unwrap();
    fs::write(p("empty"), b"now full").unwrap();
    fs::remove_file(p("a-hard")).unwrap();
    fs::rename(p("d/sub"), p("d/sub2")).unwrap();
    fs::set_permissions(p("d"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(p("exec.sh"), Some(42), Some(42)).unwrap();
    setx(&p("a.bin"), "user.step", b"200").unwrap();
    removex(&p("d"), "user.kind").unwrap();
    fs::remove_file(p("link-to-a")).unwrap();
    std::os::unix::fs::symlink("exec.sh", p("link-to-a")).unwrap();
    set_times(&p("a.bin"), (1_700_000_000, 1), false).unwrap();
    fs::remove_dir(p("emptydir")).unwrap();
    fs::remove_file(p("pipe")).unwrap();
    fs::create_dir(p("new")).unwrap();
    fs::write(p("new/file.txt"), b"new").unwrap();
    fs::write(p("d/notes.txt"), b"rewritten").unwrap();

    assert_same_tree(
        &walk(&sdir(&m, "s1")),
        &frozen,
        "s1 after the live tree changed",
    );
    assert_eq!(
        walk(&sdir(&m, "s1"))["a.bin"].nlink,
        2,
        "a removed hard link is still in s1"
    );
    fs::create_dir(sdir(&m, "s2")).unwrap();
    assert_same_tree(
        &walk(&sdir(&m, "s2")),
        &walk(&m.mnt),
        "s2 vs the changed live tree",
    );
    assert_same_tree(&walk(&sdir(&m, "s1")), &frozen, "s1 after s2 was taken");
    // Deleting everything live leaves both intact.
    for e in fs::read_dir(&m.mnt).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            fs::remove_dir_all(e.path()).unwrap();
        } else {
            fs::remove_file(e.path()).unwrap();
        }
    }
    assert!(names(&m.mnt).is_empty());
    assert_same_tree(
        &walk(&sdir(&m, "s1")),
        &frozen,
        "s1 after the live tree was emptied",
    );
    assert_eq!(fs::read(sdir(&m, "s2/new/file.txt")).unwrap(), b"new");
}

#[test]
fn rmdir_deletes_a_snapshot_and_a_pinned_one_is_busy_until_unpinned() {
    let m = Mount::new("hist-snap-pin");
    fs::write(m.path("f"), b"one").unwrap();
    fs::create_dir(sdir(&m, "s1")).unwrap();
    fs::write(m.path("f"), b"two").unwrap();
    fs::create_dir(sdir(&m, "s2")).unwrap();
    fs::remove_dir(sdir(&m, "s1")).unwrap();
    assert_eq!(names(&m.path(".ckpt/snapshots")), set(&["latest", "s2"]));
    expect_errno(
        fs::metadata(sdir(&m, "s1")),
        libc::ENOENT,
        "a deleted snapshot",
    );

    let s2 = sdir(&m, "s2");
    assert_eq!(getx_str(&s2, "user.ckpt.pinned"), "0");
    sh(&format!(
        "setfattr -n user.ckpt.pinned -v 1 '{}'",
        s2.display()
    ));
    assert_eq!(getx_str(&s2, "user.ckpt.pinned"), "1");
    expect_errno(
        fs::remove_dir(&s2),
        libc::EBUSY,
        "rmdir of a pinned snapshot",
    );
    expect_errno(
        setx(&s2, "user.ckpt.pinned", b"maybe"),
        libc::EINVAL,
        "pin value that is no boolean",
    );
    assert_eq!(getx_str(&s2, "user.ckpt.pinned"), "1");
    assert_eq!(
        fs::read(s2.join("f")).unwrap(),
        b"two",
        "a refused rmdir leaves the snapshot intact"
    );
    sh(&format!(
        "setfattr -n user.ckpt.pinned -v 0 '{}'",
        s2.display()
    ));
    assert_eq!(getx_str(&s2, "user.ckpt.pinned"), "0");
    fs::remove_dir(&s2).unwrap();

    // setfattr -x unpins as well; a snapshot with content goes in one rmdir.
    fs::create_dir_all(m.path("deep/er")).unwrap();
    fs::write(m.path("deep/er/x"), b"x").unwrap();
    fs::create_dir(sdir(&m, "s3")).unwrap();
    let s3 = sdir(&m, "s3");
    setx(&s3, "user.ckpt.pinned", b"1").unwrap();
    expect_errno(
        fs::remove_dir(&s3),
        libc::EBUSY,
        "rmdir of a pinned snapshot",
    );
    sh(&format!("setfattr -x user.ckpt.pinned '{}'", s3.display()));
    assert_eq!(getx_str(&s3, "user.ckpt.pinned"), "0");
    fs::remove_dir(&s3).unwrap();
    assert!(snapshot_list(&m).is_empty());
    expect_errno(
        fs::symlink_metadata(sdir(&m, "latest")),
        libc::ENOENT,
        "latest without snapshots",
    );

    // A deleted name can be taken again, by a snapshot of the tree as it is now.
    fs::create_dir(sdir(&m, "s1")).unwrap();
    assert_eq!(fs::read(sdir(&m, "s1/f")).unwrap(), b"two");
    assert_eq!(fs::read(sdir(&m, "s1/deep/er/x")).unwrap(), b"x");
    expect_errno(
        fs::remove_dir(sdir(&m, "latest")),
        libc::ENOTDIR,
        "rmdir of the latest link",
    );
    assert_eq!(snapshot_list(&m), vec!["s1"]);
}

#[test]
fn mv_renames_a_snapshot_and_latest_follows() {
    let m = Mount::new("hist-snap-mv");
    expect_errno(
        fs::symlink_metadata(sdir(&m, "latest")),
        libc::ENOENT,
        "latest without snapshots",
    );
    expect_errno(
        fs::create_dir(sdir(&m, "latest")),
        libc::EEXIST,
        "mkdir latest",
    );
    expect_errno(fs::create_dir(sdir(&m, "best")), libc::EEXIST, "mkdir best");
    assert!(names(&m.path(".ckpt/snapshots")).is_empty());

    fs::write(m.path("f"), b"one").unwrap();
    fs::create_dir(sdir(&m, "s1")).unwrap();
    fs::write(m.path("f"), b"two").unwrap();
    fs::create_dir(sdir(&m, "s2")).unwrap();
    expect_errno(
        fs::create_dir(sdir(&m, "s1")),
        libc::EEXIST,
        "mkdir of an existing snapshot",
    );
    assert_eq!(readlink(&sdir(&m, "latest")), "s2");

    fs::rename(sdir(&m, "s2"), sdir(&m, "renamed")).unwrap();
    assert_eq!(
        names(&m.path(".ckpt/snapshots")),
        set(&["latest", "renamed", "s1"])
    );
    assert_eq!(readlink(&sdir(&m, "latest")), "renamed");
    assert_eq!(fs::read(sdir(&m, "latest/f")).unwrap(), b"two");
    assert_eq!(fs::read(sdir(&m, "renamed/f")).unwrap(), b"two");
    expect_errno(fs::metadata(sdir(&m, "s2")), libc::ENOENT, "the old name");
    let created = getx_str(&sdir(&m, "renamed"), "user.ckpt.created");

    // Refused renames change nothing.
    let r = fs::rename(sdir(&m, "s1"), sdir(&m, "renamed"));
    let e = r.expect_err("mv over another snapshot").raw_os_error();
    assert!(
        e == Some(libc::EEXIST) || e == Some(libc::ENOTEMPTY),
        "mv over another snapshot: {e:?}"
    );
    expect_errno(
        fs::rename(sdir(&m, "s1"), sdir(&m, "best")),
        libc::EEXIST,
        "mv to best",
    );
    assert!(
        fs::rename(sdir(&m, "s1"), sdir(&m, "latest")).is_err(),
        "mv over latest"
    );
    expect_errno(
        fs::rename(sdir(&m, "s1"), m.path(".ckpt/s1")),
        libc::EROFS,
        "mv out of snapshots/",
    );
    assert_eq!(fs::read(sdir(&m, "s1/f")).unwrap(), b"one");
    assert_eq!(fs::read(sdir(&m, "renamed/f")).unwrap(), b"two");
    assert_eq!(
        getx_str(&sdir(&m, "renamed"), "user.ckpt.created"),
        created,
        "mv keeps the snapshot's metadata"
    );
    assert_eq!(
        names(&m.path(".ckpt/snapshots")),
        set(&["latest", "renamed", "s1"])
    );
    fs::rename(sdir(&m, "s1"), sdir(&m, "s1")).unwrap();

    // Any name a directory may have.
    fs::rename(sdir(&m, "s1"), sdir(&m, "first snap ✓")).unwrap();
    assert_eq!(fs::read(sdir(&m, "first snap ✓/f")).unwrap(), b"one");
    assert_eq!(
        readlink(&sdir(&m, "latest")),
        "renamed",
        "latest is the newest, not the last renamed"
    );
    fs::remove_dir(sdir(&m, "renamed")).unwrap();
    assert_eq!(readlink(&sdir(&m, "latest")), "first snap ✓");
    fs::remove_dir(sdir(&m, "first snap ✓")).unwrap();
    expect_errno(
        fs::symlink_metadata(sdir(&m, "latest")),
        libc::ENOENT,
        "latest after the last rmdir",
    );
}

#[test]
fn snapshot_xattrs_describe_it_and_best_follows_the_metric() {
    let m = Mount::new("hist-snap-xattrs");
    fs::write(m.path("one"), noise(100, 1)).unwrap();
    fs::write(m.path("two"), noise(2000, 2)).unwrap();
    fs::create_dir_all(m.path("d/e")).unwrap();
    fs::write(m.path("d/three"), noise(30_000, 3)).unwrap();
    std::os::unix::fs::symlink("one", m.path("ln")).unwrap();
    let before = SystemTime::now();
    fs::create_dir(sdir(&m, "s0")).unwrap();
    let after = SystemTime::now();
    let s0 = sdir(&m, "s0");
    let listed = listx(&s0).unwrap();
    for x in [
        "user.ckpt.created",
        "user.ckpt.files",
        "user.ckpt.logical_bytes",
        "user.ckpt.pinned",
    ] {
        assert!(listed.contains(x), "{x} not listed: {listed:?}");
    }
    let created = getx_str(&s0, "user.ckpt.created");
    assert_stamp_within(
        &rfc3339_to_compact(&created),
        before,
        after,
        "user.ckpt.created",
    );
    assert_eq!(getx_str(&s0, "user.ckpt.files"), "3");
    assert_eq!(getx_str(&s0, "user.ckpt.logical_bytes"), "32100");
    assert_eq!(getx_str(&s0, "user.ckpt.pinned"), "0");
    // The snapshot directory's mtime is its creation time.
    let mtime = fs::metadata(&s0).unwrap().mtime();
    let mtime = super::compact_utc(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime as u64));
    assert_eq!(
        mtime,
        rfc3339_to_compact(&created),
        "mtime of the snapshot dir"
    );
    // No metric configured: no metric xattr, no best link.
    assert!(
        !listed.iter().any(|x| x.starts_with("user.ckpt.metric")),
        "{listed:?}"
    );
    expect_errno(
        fs::symlink_metadata(sdir(&m, "best")),
        libc::ENOENT,
        "best without a metric",
    );

    let policy = "metric = eval_loss\nmetric-mode = min\nmetric-file = trainer_state.json\nmetric-key = best_metric\n";
    let mut w = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.path(".ckpt/retention/policy"))
        .unwrap();
    w.write_all(policy.as_bytes()).unwrap();
    drop(w);
    for (name, value) in [("m1", "0.5"), ("m2", "0.25"), ("m3", "0.75")] {
        fs::write(
            m.path("trainer_state.json"),
            format!("{{\"global_step\": 1, \"best_metric\": {value}}}"),
        )
        .unwrap();
        fs::create_dir(sdir(&m, name)).unwrap();
    }
    // The live file changes after the last snapshot: no snapshot sees it.
    fs::write(m.path("trainer_state.json"), r#"{"best_metric": 0.0625}"#).unwrap();
    for (name, value) in [("m1", "0.5"), ("m2", "0.25"), ("m3", "0.75")] {
        let s = sdir(&m, name);
        assert_eq!(getx_str(&s, "user.ckpt.metric.eval_loss"), value, "{name}");
        assert!(
            listx(&s).unwrap().contains("user.ckpt.metric.eval_loss"),
            "{name}: metric xattr listed"
        );
        assert_eq!(getx_str(&s, "user.ckpt.files"), "4", "{name}");
    }
    expect_errno(
        getx(&s0, "user.ckpt.metric.eval_loss"),
        libc::ENODATA,
        "metric of a snapshot without the file",
    );
    assert_eq!(readlink(&sdir(&m, "best")), "m2");
    assert!(names(&m.path(".ckpt/snapshots")).contains("best"));
    assert_eq!(
        fs::read_to_string(sdir(&m, "best/trainer_state.json")).unwrap(),
        r#"{"global_step": 1, "best_metric": 0.25}"#
    );
    assert_eq!(readlink(&sdir(&m, "latest")), "m3");
}

#[test]
fn snapshots_survive_a_remount() {
    let mut m = Mount::new("hist-snap-remount");
    build_tree(&m);
    fs::create_dir(sdir(&m, "s1")).unwrap();
    setx(&sdir(&m, "s1"), "user.ckpt.pinned", b"1").unwrap();
    fs::write(m.path("a.bin"), b"changed").unwrap();
    fs::remove_dir_all(m.path("d")).unwrap();
    fs::create_dir(sdir(&m, "s2")).unwrap();
    let keys = [
        "user.ckpt.created",
        "user.ckpt.files",
        "user.ckpt.logical_bytes",
        "user.ckpt.pinned",
    ];
    let record = |m: &Mount| {
        let mut out = Vec::new();
        for s in ["s1", "s2"] {
            out.push((walk(&sdir(m, s)), keys.map(|k| getx_str(&sdir(m, s), k))));
        }
        (out, snapshot_list(m), readlink(&sdir(m, "latest")))
    };
    let before = record(&m);
    assert_eq!(before.0[0].1[3], "1");
    m.remount();
    let after = record(&m);
    for i in 0..2 {
        assert_same_tree(
            &after.0[i].0,
            &before.0[i].0,
            &format!("s{} after remount", i + 1),
        );
        assert_eq!(
            after.0[i].1,
            before.0[i].1,
            "s{} xattrs after remount",
            i + 1
        );
    }
    assert_eq!((after.1, after.2), (before.1, before.2));
    expect_errno(
        fs::remove_dir(sdir(&m, "s1")),
        libc::EBUSY,
        "the pin survives a remount",
    );
    fs::rename(sdir(&m, "s2"), sdir(&m, "s3")).unwrap();
    assert_eq!(readlink(&sdir(&m, "latest")), "s3");
    m.remount();
    assert_eq!(snapshot_list(&m), vec!["s1", "s3"]);
    assert_same_tree(
        &walk(&sdir(&m, "s3")),
        &before.0[1].0,
        "renamed s3 after another remount",
    );
}
