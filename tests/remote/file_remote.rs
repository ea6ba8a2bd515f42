//! A `file://` remote: the first push uploads one full copy of the first
//! snapshot, the next one only the chunks a 2% change made, a third push
//! nothing; every byte a report counts is on the remote's disk; both
//! snapshots (and `latest`, and a path inside one) restore from the URL
//! byte-exact, with modes, mtimes and the symlink.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde_json::Value;

use crate::common::{noise, Mount};
use crate::{
    args, assert_bytes, chmod, json, names, num, ok, push_report, pushed, remote_snapshots, state,
    NO_ENV,
};

/// The checkpoint file.
const BIG: usize = 40 << 20;
/// The size of each overwritten range.
const RANGE: usize = 64 << 10;
/// 13 ranges of 64 KiB: 2% of 40 MiB.
const RANGES: usize = 13;

/// Apparent size of every file under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        total += if m.is_dir() {
            dir_bytes(&e.path())
        } else {
            m.len()
        };
    }
    total
}

/// The logical bytes `snapshots --json` gives the store's snapshot `name`.
fn logical(store: &Path, name: &str) -> u64 {
    let list = json(args!["snapshots", store, "--json"], NO_ENV);
    let snap = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no snapshot {name} in {list:#}"));
    num(snap, "logical_bytes")
}

fn count(dir: &Path) -> usize {
    fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn a_file_remote_gets_one_full_copy_then_only_the_changes_and_restores_both_snapshots_exactly() {
    let mut m = Mount::new("remote-file");
    let ckpt = m.path("ckpt");
    fs::create_dir_all(ckpt.join("meta")).unwrap();
    let v1 = noise(BIG, 0x4e11_0001);
    fs::write(ckpt.join("model.bin"), &v1).unwrap();
    fs::write(ckpt.join("meta/config.json"), b"{\"layers\": 24}\n").unwrap();
    fs::write(ckpt.join("meta/trainer_state.json"), b"{\"step\": 100}\n").unwrap();
    fs::write(ckpt.join("run.sh"), b"#!/bin/sh\nexec python train.py\n").unwrap();
    std::os::unix::fs::symlink("model.bin", ckpt.join("current")).unwrap();
    chmod(&ckpt.join("model.bin"), 0o640);
    chmod(&ckpt.join("meta/config.json"), 0o444);
    chmod(&ckpt.join("run.sh"), 0o755);
    chmod(&ckpt.join("meta"), 0o750);
    ok(args!["snapshot", m.mnt, "s1"], NO_ENV);
    let s1 = state(&ckpt);

    // 2% of the checkpoint changes: 13 scattered 64 KiB ranges.
    let mut v2 = v1.clone();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(ckpt.join("model.bin"))
        .unwrap();
    for i in 0..RANGES {
        let at = i * (BIG / RANGES) + 100_003;
        let patch = noise(RANGE, 0x4e11_1000 + i as u64);
        v2[at..at + RANGE].copy_from_slice(&patch);
        f.write_all_at(&patch, at as u64).unwrap();
    }
    drop(f);
    fs::write(ckpt.join("meta/trainer_state.json"), b"{\"step\": 200}\n").unwrap();
    ok(args!["snapshot", m.mnt, "s2"], NO_ENV);
    let s2 = state(&ckpt);
    assert_ne!(s1, s2);
    let status = m.stop();
    assert!(
        status.success(),
        "daemon exited with {status}:\n{}",
        m.log()
    );

    let store = m.store.clone();
    let dir = m.root.join("remote");
    let url = format!("file://{}", dir.display());
    let said = ok(
        args!["remote", "add", store, "backup", url, "--node", "trainer-1"],
        NO_ENV,
    );
    assert!(said.contains("added remote backup"), "{said}");
    let list = json(args!["remote", "list", store, "--json"], NO_ENV);
    assert_eq!(list["node"], "trainer-1", "{list:#}");
    assert_eq!(list["remotes"][0]["name"], "backup", "{list:#}");
    assert_eq!(list["remotes"][0]["url"], url.as_str(), "{list:#}");

    // s1 alone: about one full copy of it.
    let l1 = logical(&store, "s1");
    assert!(l1 >= BIG as u64, "s1 holds {l1} bytes");
    let r1 = push_report(
        args!["push", store, "backup", "--snapshot", "s1", "--json"],
        NO_ENV,
        "backup",
    );
    println!("push s1: {r1}");
    assert_eq!(pushed(&r1), ["s1"], "{r1:#}");
    assert_eq!(num(&r1, "already"), 0, "{r1:#}");
    assert_eq!(num(&r1, "logical_bytes"), l1, "{r1:#}");
    assert_eq!(num(&r1, "chunks_present"), 0, "{r1:#}");
    let up1 = num(&r1, "bytes_uploaded");
    assert!(
        up1 >= l1 * 98 / 100 && up1 <= l1 * 103 / 100,
        "the first push uploaded {up1} bytes for {l1} of noise: not one copy\n{r1:#}"
    );
    assert!(num(&r1, "chunk_bytes_uploaded") <= up1, "{r1:#}");
    assert!(num(&r1, "packs") >= 2, "{r1:#}");
    assert_eq!(count(&dir.join("packs")) as u64, num(&r1, "packs"));
    assert_eq!(count(&dir.join("index")) as u64, num(&r1, "packs"));
    assert_eq!(count(&dir.join("manifests")) as u64, num(&r1, "manifests"));
    assert_eq!(names(&dir.join("snapshots/trainer-1")), ["s1.json"]);
    assert_eq!(
        dir_bytes(&dir),
        up1,
        "the remote holds other than the bytes the push counted"
    );

    // Everything else: s2 costs its changed chunks only.
    let l2 = logical(&store, "s2");
    let r2 = push_report(args!["push", store, "--json"], NO_ENV, "backup");
    println!("push s2: {r2}");
    assert_eq!(pushed(&r2), ["s2"], "{r2:#}");
    assert_eq!(num(&r2, "already"), 1, "{r2:#}");
    assert_eq!(num(&r2, "logical_bytes"), l2, "{r2:#}");
    let up2 = num(&r2, "bytes_uploaded");
    assert!(
        up2 * 100 < l2 * 15,
        "the incremental push uploaded {up2} bytes for {l2} logical (>= 15%)\n{r2:#}"
    );
    assert!(
        up2 >= (RANGES * RANGE) as u64,
        "the push uploaded {up2} bytes: less than the {} bytes changed",
        RANGES * RANGE
    );
    // Most of s2's chunks were there already, from s1.
    let present = num(&r2, "chunks_present");
    let uploaded = num(&r2, "chunks_uploaded");
    assert!(present > 8 * uploaded, "{r2:#}");
    assert_eq!(dir_bytes(&dir), up1 + up2);
    println!(
        "incremental push: {up2} bytes uploaded for {l2} logical ({:.2}%), \
         {uploaded} chunks uploaded, {present} already there",
        up2 as f64 * 100.0 / l2 as f64
    );

    // Nothing left.
    let r3 = push_report(args!["push", store, "backup", "--json"], NO_ENV, "backup");
    assert!(pushed(&r3).is_empty(), "{r3:#}");
    assert_eq!(num(&r3, "already"), 2, "{r3:#}");
    assert_eq!(num(&r3, "bytes_uploaded"), 0, "{r3:#}");
    assert_eq!(num(&r3, "chunks_uploaded"), 0, "{r3:#}");
    assert_eq!(dir_bytes(&dir), up1 + up2);

    // What the remote lists.
    assert_eq!(
        remote_snapshots(&store, "backup", NO_ENV),
        [
            ("trainer-1".to_string(), "s1".to_string()),
            ("trainer-1".to_string(), "s2".to_string())
        ]
    );
    let listed = json(
        args!["remote", "snapshots", store, "backup", "--json"],
        NO_ENV,
    );
    for (name, l) in [("s1", l1), ("s2", l2)] {
        let s: &Value = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap();
        assert_eq!(num(s, "logical_bytes"), l, "{listed:#}");
        assert_eq!(num(s, "files"), 4, "{listed:#}");
    }

    // Both snapshots, straight from the URL.
    for (snap, want, model) in [("s1", &s1, &v1), ("s2", &s2, &v2)] {
        let dest = m.root.join(format!("restored-{snap}"));
        let said = ok(args!["restore", url, snap, dest], NO_ENV);
        assert!(said.contains("restored"), "{said}");
        assert_eq!(names(&dest), ["ckpt"], "{snap}");
        assert_eq!(&state(&dest.join("ckpt")), want, "{snap} restored differs");
        assert_bytes(&dest.join("ckpt/model.bin"), model);
        assert_eq!(
            fs::read_link(dest.join("ckpt/current")).unwrap(),
            Path::new("model.bin")
        );
    }
    // `latest` is s2; a path inside a snapshot is itself.
    let file = m.root.join("latest-model.bin");
    ok(args!["restore", url, "latest/ckpt/model.bin", file], NO_ENV);
    assert_bytes(&file, &v2);
    let meta = m.root.join("meta-s1");
    ok(args!["restore", url, "s1/ckpt/meta", meta], NO_ENV);
    assert_eq!(
        fs::read(meta.join("trainer_state.json")).unwrap(),
        b"{\"step\": 100}\n"
    );
    assert_eq!(crate::node(&meta), s1["meta"]);
}
