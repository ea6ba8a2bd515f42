//! `gc`: `--dry-run` shows what the policy keeps (with its rules) and what
//! would expire, and changes nothing; `gc` expires per the policy, reports
//! what it deleted and freed, and the store shrinks. On a mount, then on
//! the unmounted store.

use std::fs;

use serde_json::Value;

use crate::common::{du_bytes, noise, Mount};
use crate::{args, json, ok, snapshot_names};

const SIZE: usize = 3 << 20;

fn names(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            x.as_str()
                .or_else(|| x["snapshot"].as_str())
                .unwrap()
                .to_string()
        })
        .collect();
    out.sort();
    out
}

fn stat(target: &std::path::Path, key: &str) -> u64 {
    json(args!["stats", target, "--json"])[key]
        .as_u64()
        .unwrap()
}

#[test]
fn gc_dry_run_changes_nothing_and_gc_expires_per_policy_on_a_mount_and_on_the_store() {
    let mut m = Mount::new("ops-gc");
    for k in 1..=4u64 {
        fs::write(m.path("w.bin"), noise(SIZE, 0x6c_0000 + k)).unwrap();
        ok(args!["snapshot", m.mnt, format!("s{k}")]);
    }
    fs::write(
        m.path(".ckpt/retention/policy"),
        "keep-last = 3\nfile-versions-keep = 0\n",
    )
    .unwrap();

    // Dry run on the mount.
    // (A fork by another test thread can hold a copy of the writer's fd
    // and flush it: an extra, partial version. Counts are compared.)
    let versions = stat(&m.mnt, "versions");
    let stored = stat(&m.mnt, "stored_bytes");
    let plan = json(args!["gc", m.mnt, "--dry-run", "--json"]);
    assert_eq!(names(&plan["expiring"]), ["s1"], "{plan}");
    assert_eq!(names(&plan["kept"]), ["s2", "s3", "s4"], "{plan}");
    let human = ok(args!["gc", m.mnt, "--dry-run"]);
    assert!(
        human.contains("keep-last") && human.contains("expire  s1") && human.contains("dry run"),
        "{human}"
    );
    assert_eq!(snapshot_names(&m.mnt), ["s1", "s2", "s3", "s4"]);
    assert_eq!(stat(&m.mnt, "versions"), versions);
    assert_eq!(stat(&m.mnt, "stored_bytes"), stored);

    // GC on the mount: s1 and its version go.
    let out = ok(args!["gc", m.mnt]);
    assert!(out.contains("expired 1 snapshot (s1) and "), "{out}");
    assert!(out.contains("freed"), "{out}");
    assert_eq!(snapshot_names(&m.mnt), ["s2", "s3", "s4"]);
    assert!(stat(&m.mnt, "versions") < versions);
    let after = stat(&m.mnt, "stored_bytes");
    assert!(
        after + SIZE as u64 * 9 / 10 <= stored,
        "stored bytes went from {stored} to {after} only"
    );
    // Nothing left to do: the JSON report says so.
    let again = json(args!["gc", m.mnt, "--json"]);
    assert_eq!(
        again["snapshots_expired"].as_array().unwrap().len(),
        0,
        "{again}"
    );
    assert_eq!(again["chunks_deleted"], 0, "{again}");

    // A stricter policy, applied on the unmounted store.
    fs::write(
        m.path(".ckpt/retention/policy"),
        "keep-last = 1\nfile-versions-keep = 0\n",
    )
    .unwrap();
    assert!(m.stop().success());
    let plan = json(args!["gc", m.store, "--dry-run", "--json"]);
    assert_eq!(names(&plan["expiring"]), ["s2", "s3"], "{plan}");
    assert_eq!(names(&plan["kept"]), ["s4"], "{plan}");
    let human = ok(args!["gc", m.store, "--dry-run"]);
    assert!(
        human.contains("expire  s2") && human.contains("newest"),
        "{human}"
    );
    assert_eq!(snapshot_names(&m.store), ["s2", "s3", "s4"]);
    let versions = stat(&m.store, "versions");

    let du_before = du_bytes(&m.store);
    let stored = stat(&m.store, "stored_bytes");
    let out = ok(args!["gc", m.store]);
    assert!(out.contains("expired 2 snapshots (s2, s3) and "), "{out}");
    assert_eq!(snapshot_names(&m.store), ["s4"]);
    assert_eq!(
        stat(&m.store, "versions"),
        1,
        "only the live file's version stays"
    );
    assert!(versions > 1);
    let after = stat(&m.store, "stored_bytes");
    assert!(
        after + 2 * SIZE as u64 * 9 / 10 <= stored,
        "stored bytes went from {stored} to {after} only"
    );
    let du_after = du_bytes(&m.store);
    assert!(
        du_after + SIZE as u64 <= du_before,
        "the store did not shrink on disk: {du_before} -> {du_after} bytes"
    );
    let stats = ok(args!["stats", m.store]);
    assert!(stats.contains("2 snapshots"), "last GC not shown:\n{stats}");

    // The daemon serves what is left, byte-exact.
    m.start();
    assert_eq!(snapshot_names(&m.mnt), ["s4"]);
    assert!(fs::read(m.path("w.bin")).unwrap() == noise(SIZE, 0x6c_0004));
    assert!(fs::read(m.path(".ckpt/snapshots/s4/w.bin")).unwrap() == noise(SIZE, 0x6c_0004));
}
