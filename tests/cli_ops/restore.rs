//! `restore`: a whole snapshot, a directory or file inside one, and single
//! versions (by number, by name, `latest`), through a mount and from the
//! unmounted store. Bytes (xxh3), modes, mtimes, symlinks and hard links
//! are kept; an existing DEST is refused without `--force` and replaced
//! with it.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::common::cli::{node, state, Node};
use crate::common::{noise, sh, Mount};
use crate::{args, json, ok, refused};

/// `state` without the root's own entry (a snapshot root shows the
/// snapshot's time).
fn below(root: &Path) -> BTreeMap<String, Node> {
    let mut s = state(root);
    s.remove("");
    s
}

fn touch(p: &Path, stamp: &str) {
    sh(&format!("touch -h -d '@{stamp}' '{}'", p.display()));
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// No staging leftovers next to restored paths.
fn no_leftovers(dir: &Path) {
    for e in fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(!name.contains("ckptfs-restore"), "leftover {name}");
    }
}

/// Builds the tree under `m/proj`, with modes, mtimes, a symlink and a
/// hard link; returns v1 of model.bin.
fn build(m: &Mount) -> Vec<u8> {
    let proj = m.path("proj");
    fs::create_dir_all(proj.join("sub/deeper")).unwrap();
    let v1 = noise(3_000_000, 0x7e57_0001);
    fs::write(proj.join("model.bin"), &v1).unwrap();
    fs::write(proj.join("conf.json"), b"{\"lr\": 0.1}\n").unwrap();
    fs::write(proj.join("run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::write(proj.join("empty"), b"").unwrap();
    fs::write(proj.join("sub/deep.txt"), b"deep\n").unwrap();
    fs::write(proj.join("sub/deeper/z.bin"), noise(200_000, 0x7e57_0002)).unwrap();
    fs::hard_link(proj.join("sub/deeper/z.bin"), proj.join("z-link.bin")).unwrap();
    std::os::unix::fs::symlink("model.bin", proj.join("latest")).unwrap();
    chmod(&proj.join("model.bin"), 0o600);
    chmod(&proj.join("run.sh"), 0o755);
    chmod(&proj.join("empty"), 0o640);
    chmod(&proj.join("sub/deep.txt"), 0o444);
    chmod(&proj.join("sub"), 0o750);
    chmod(&proj.join("sub/deeper"), 0o500);
    let stamps = [
        ("model.bin", "1600000000.123456789"),
        ("conf.json", "1600000100.5"),
        ("run.sh", "1600000200"),
        ("empty", "1600000300.25"),
        ("sub/deep.txt", "1600000400.75"),
        ("sub/deeper/z.bin", "1600000450"),
        ("latest", "1600000500"),
        ("sub/deeper", "1600000600"),
        ("sub", "1600000700.5"),
        ("", "1600000800"),
    ];
    for (rel, stamp) in stamps {
        touch(&proj.join(rel), stamp);
    }
    v1
}

/// Restores from `target` (a mount or the store) into `out` and checks
/// everything against the live tree's state `expect` taken at the
/// snapshot, and v1/v2 of model.bin.
fn check_restores(
    target: &Path,
    out: &Path,
    expect: &BTreeMap<String, Node>,
    v1: &[u8],
    v2: &[u8],
) {
    let xxh = |d: &[u8]| format!("{:032x}", xxhash_rust::xxh3::xxh3_128(d));
    fs::create_dir(out).unwrap();

    // A whole snapshot.
    let whole = out.join("whole");
    let said = ok(args!["restore", target, "snap", whole]);
    assert!(said.contains("restored snap to"), "{said}");
    let proj = whole.join("proj");
    let got = below(&proj);
    let mut want = expect.clone();
    want.remove("");
    assert_eq!(got, want, "the restored snapshot differs");
    assert_eq!(node(&proj), expect[""], "proj itself differs");
    let a = fs::metadata(proj.join("sub/deeper/z.bin")).unwrap();
    let b = fs::metadata(proj.join("z-link.bin")).unwrap();
    assert_eq!(a.ino(), b.ino(), "the hard link became two files");
    assert_eq!(a.nlink(), 2);

    // An existing DEST: refused, untouched; --force replaces it.
    fs::write(proj.join("extra"), b"not from the snapshot").unwrap();
    let before = state(&whole);
    refused(
        args!["restore", target, "snap", whole],
        &["exists", "--force"],
    );
    assert_eq!(state(&whole), before, "a refused restore changed DEST");
    no_leftovers(out);
    ok(args!["restore", target, "snap", whole, "--force"]);
    assert!(!proj.join("extra").exists(), "--force kept an old file");
    assert_eq!(below(&proj), want);
    no_leftovers(out);

    // A directory inside the snapshot: itself with its mode and mtime.
    let sub = out.join("sub");
    ok(args!["restore", target, "snap/proj/sub", sub]);
    let got = state(&sub);
    let want_sub: BTreeMap<String, Node> = expect
        .iter()
        .filter_map(|(k, v)| {
            if k == "sub" {
                Some((String::new(), v.clone()))
            } else {
                k.strip_prefix("sub/").map(|r| (r.to_string(), v.clone()))
            }
        })
        .collect();
    assert_eq!(got, want_sub);

    // A file inside the snapshot.
    let file = out.join("model-from-snap.bin");
    ok(args!["restore", target, "snap/proj/model.bin", file]);
    assert_eq!(node(&file), expect["model.bin"]);
    assert_eq!(node(&file).content, xxh(v1));
    // A symlink inside the snapshot stays a symlink.
    let link = out.join("link");
    ok(args!["restore", target, "snap/proj/latest", link]);
    assert_eq!(node(&link), expect["latest"]);

    // Versions: by number, by name, latest. (A fork by another test
    // thread can flush a writer's fd early: an extra partial version, so
    // v1 is the last one of v1's size.)
    let versions = json(args!["versions", target, "proj/model.bin", "--json"]);
    let rows = versions.as_array().unwrap();
    let row1 = rows
        .iter()
        .rfind(|r| r["size"] == v1.len())
        .unwrap_or_else(|| panic!("no version of v1's size: {versions}"));
    let (v1_seq, v1_name) = (
        row1["seq"].as_u64().unwrap(),
        row1["name"].as_str().unwrap(),
    );
    let v2_seq = rows.last().unwrap()["seq"].as_u64().unwrap();
    assert_eq!(rows.last().unwrap()["size"], v2.len());
    let f1 = out.join("v1.bin");
    ok(args![
        "restore",
        target,
        format!("proj/model.bin@{v1_seq}"),
        f1
    ]);
    assert_eq!(node(&f1).content, xxh(v1));
    // A version keeps the mode it was committed with (chmod came later).
    assert_eq!(row1["mode"], "0644");
    assert_eq!(node(&f1).mode, 0o644);
    let f2 = out.join("v1-by-name.bin");
    ok(args![
        "restore",
        target,
        format!("proj/model.bin@{v1_name}"),
        f2
    ]);
    assert_eq!(node(&f2), node(&f1));
    let f3 = out.join("latest.bin");
    ok(args!["restore", target, "/proj/model.bin@latest", f3]);
    assert_eq!(node(&f3).content, xxh(v2));
    refused(
        args!["restore", target, "proj/model.bin@latest", f1],
        &["exists", "--force"],
    );
    assert_eq!(node(&f1).content, xxh(v1), "a refused restore changed DEST");
    ok(args![
        "restore",
        target,
        format!("proj/model.bin@{v2_seq}"),
        f1,
        "--force"
    ]);
    assert_eq!(node(&f1).content, xxh(v2));
    // A directory over an existing file, with --force.
    ok(args!["restore", target, "snap/proj/sub", f1, "--force"]);
    assert_eq!(state(&f1), want_sub);
    no_leftovers(out);

    // Mistakes are named and write nothing.
    let nothing = out.join("nothing");
    refused(
        args!["restore", target, "nosnap", nothing],
        &["no snapshot named nosnap", "PATH@VERSION"],
    );
    refused(
        args!["restore", target, "snap/proj/nope", nothing],
        &["snapshot snap has no /proj/nope"],
    );
    refused(
        args!["restore", target, "proj/model.bin@999", nothing],
        &["has no version 999"],
    );
    refused(
        args!["restore", target, "proj/model.bin@soon", nothing],
        &["not a version"],
    );
    refused(
        args!["restore", target, "proj/gone.bin@1", nothing],
        &["no versions"],
    );
    refused(
        args!["restore", target, "snap", out.join("no/such/dir")],
        &["does not exist"],
    );
    assert!(!nothing.exists());
    no_leftovers(out);
}

#[test]
fn restore_keeps_bytes_modes_mtimes_and_links_on_a_mount_and_on_the_store() {
    let mut m = Mount::new("ops-restore");
    let v1 = build(&m);
    let expect = state(&m.path("proj"));
    ok(args!["snapshot", m.mnt, "snap"]);
    // The live tree moves on: restores must read the snapshot.
    let v2 = noise(2_500_000, 0x7e57_0003);
    fs::write(m.path("proj/model.bin"), &v2).unwrap();
    fs::remove_file(m.path("proj/conf.json")).unwrap();

    let out = m.root.join("from-mount");
    check_restores(&m.mnt, &out, &expect, &v1, &v2);

    assert!(m.stop().success());
    let out2 = m.root.join("from-store");
    check_restores(&m.store, &out2, &expect, &v1, &v2);
    // Both ways give the same tree, the snapshot root included.
    assert_eq!(state(&out.join("whole")), state(&out2.join("whole")));
}

#[test]
fn restore_latest_names_the_newest_snapshot_and_progress_is_plain_without_a_terminal() {
    let m = Mount::new("ops-restore-latest");
    fs::write(m.path("a.bin"), noise(1_000_000, 1)).unwrap();
    ok(args!["snapshot", m.mnt, "one"]);
    fs::write(m.path("a.bin"), noise(1_000_000, 2)).unwrap();
    ok(args!["snapshot", m.mnt, "two"]);
    let dest: PathBuf = m.root.join("latest-out");
    let out = crate::cli(args!["restore", m.mnt, "latest/a.bin", dest]);
    assert!(out.status.success(), "{}", crate::text(&out.stderr));
    assert_eq!(fs::read(&dest).unwrap(), noise(1_000_000, 2));
    let stderr = crate::text(&out.stderr);
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("restore: ") && l.contains("/")),
        "no plain progress lines:\n{stderr}"
    );
    assert!(
        !stderr.contains('\r') && !stderr.contains('\u{1b}'),
        "{stderr:?}"
    );
}
