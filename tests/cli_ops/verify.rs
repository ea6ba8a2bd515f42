//! `verify`: clean on a healthy store; after a byte of a chunk is flipped
//! in a pack file, the damaged file, its version and the snapshot holding
//! it are named and the exit code is 1, on the unmounted store and through
//! a mount.

use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::common::{flip_byte_in_stored_chunk, noise, Mount};
use crate::{args, cli, json, ok, text};

const SIZE: usize = 12 << 20;

/// The (kind, path, which) triples of a report.
fn damaged(r: &Value) -> Vec<(String, String, Option<String>)> {
    r["damaged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap().to_string(),
                d["path"].as_str().unwrap().to_string(),
                d["which"].as_str().map(str::to_string),
            )
        })
        .collect()
}

/// Runs `verify --json` expecting damage; returns the report.
fn verify_damaged(target: &Path) -> Value {
    let out = cli(args!["verify", target, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("ckptfs: verify found damage"),
        "{}",
        text(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["clean"], false);
    assert_eq!(r["bad_chunks"].as_array().unwrap().len(), 1, "{r}");
    r
}

#[test]
fn verify_is_clean_on_a_healthy_store_and_names_a_corrupted_chunk_with_exit_1() {
    let mut m = Mount::new("ops-verify");
    let data = noise(SIZE, 0x7e71_00f1);
    fs::write(m.path("big.bin"), &data).unwrap();
    fs::write(m.path("small.txt"), b"fine").unwrap();
    ok(args!["snapshot", m.mnt, "s1"]);
    // The last version (a fork by another test thread can add an early,
    // partial one).
    let versions = json(args!["versions", m.mnt, "big.bin", "--json"]);
    let version = versions.as_array().unwrap().last().unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();

    let out = ok(args!["verify", m.mnt]);
    assert!(out.contains("clean"), "{out}");
    let r = json(args!["verify", m.mnt, "--json"]);
    assert_eq!(r["clean"], true);
    assert!(r["chunks_checked"].as_u64().unwrap() > 100, "{r}");

    assert!(m.stop().success());
    let out = cli(args!["verify", m.store]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("clean"));
    assert!(
        text(&out.stderr).contains("verify: chunks "),
        "no plain progress:\n{}",
        text(&out.stderr)
    );

    // Chunks past the first MiB live in pack files, stored raw.
    flip_byte_in_stored_chunk(&m.store, &data[10 << 20..(10 << 20) + 64]);
    let want = [
        ("live".to_string(), "/big.bin".to_string(), None),
        ("snapshot".into(), "/big.bin".into(), Some("s1".to_string())),
        ("version".into(), "/big.bin".into(), Some(version.clone())),
    ];
    let on_store = verify_damaged(&m.store);
    let found = damaged(&on_store);
    for w in &want {
        assert!(found.contains(w), "{w:?} is not named: {found:?}");
    }
    assert!(found.iter().all(|(_, p, _)| p == "/big.bin"), "{found:?}");
    let out = cli(args!["verify", m.store]);
    assert_eq!(out.status.code(), Some(1));
    let human = text(&out.stdout);
    assert!(
        human.contains("DAMAGED") && human.contains("/big.bin") && human.contains(&version),
        "{human}"
    );
    assert!(!human.contains("small.txt"), "{human}");

    m.start();
    let on_mount = verify_damaged(&m.mnt);
    assert_eq!(damaged(&on_mount), found);
    assert_eq!(on_mount["bad_chunks"], on_store["bad_chunks"]);
    let out = cli(args!["verify", m.mnt]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains(&version),
        "{}",
        text(&out.stdout)
    );
}
