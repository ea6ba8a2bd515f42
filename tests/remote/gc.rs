//! `ckptfs remote gc` on a `file://` remote: retention expires snapshots
//! per node; an unreferenced pack is first condemned, deleted only by a
//! later run, never while younger than the grace period; a push that
//! needs a condemned pack's chunks uploads them again; what is kept
//! restores byte-exact.

use std::fs;
use std::path::Path;

use crate::common::{noise, Mount};
use crate::{args, assert_bytes, json, num, ok, push_report, remote_snapshots, NO_ENV};

fn count(dir: &Path) -> usize {
    fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

fn gc(store: &Path, extra: &[&str]) -> serde_json::Value {
    let mut a = args!["remote", "gc", store, "backup", "--json"];
    a.extend(extra.iter().map(std::ffi::OsString::from));
    json(a, NO_ENV)
}

#[test]
fn remote_gc_expires_by_policy_condemns_then_deletes_and_keeps_what_is_used() {
    let mut m = Mount::new("remote-gc");
    let dir = m.root.join("remote");
    let old = noise(6 << 20, 0x6c_0001);
    let kept = noise(6 << 20, 0x6c_0002);
    fs::write(m.path("old.bin"), &old).unwrap();
    ok(args!["snapshot", m.mnt, "s1"], NO_ENV);
    fs::remove_file(m.path("old.bin")).unwrap();
    fs::write(m.path("kept.bin"), &kept).unwrap();
    ok(args!["snapshot", m.mnt, "s2"], NO_ENV);
    assert!(m.stop().success(), "{}", m.log());
    let store = m.store.clone();
    let url = format!("file://{}", dir.display());
    ok(
        args!["remote", "add", store, "backup", url, "--node", "n1"],
        NO_ENV,
    );
    ok(args!["push", store, "backup"], NO_ENV);
    // One pack per snapshot's new chunks.
    assert_eq!(count(&dir.join("packs")), 2);
    let bytes_before: u64 = fs::read_dir(dir.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();

    // With the default grace (6h), expiring s1 leaves its pack alone: its
    // manifest is recent, so a node might be about to reference it again.
    let r = gc(&store, &["--policy", "keep-last = 1"]);
    assert_eq!(
        r["snapshots_expired"],
        serde_json::json!(["n1/s1"]),
        "{r:#}"
    );
    assert_eq!(num(&r, "packs_live") + num(&r, "packs_young"), 2, "{r:#}");
    assert_eq!(
        num(&r, "packs_condemned") + num(&r, "packs_deleted"),
        0,
        "{r:#}"
    );
    assert_eq!(
        remote_snapshots(&store, "backup", NO_ENV),
        [("n1".to_string(), "s2".to_string())]
    );
    // The node does not push the expired s1 again.
    let p = push_report(args!["push", store, "backup", "--json"], NO_ENV, "backup");
    assert_eq!(num(&p, "expired_remotely"), 1, "{p:#}");
    assert_eq!(num(&p, "bytes_uploaded"), 0, "{p:#}");

    // Past the grace period: condemned first, not deleted.
    let r = gc(&store, &["--policy", "keep-last = 1", "--grace", "0s"]);
    assert_eq!(num(&r, "packs_condemned"), 1, "{r:#}");
    assert_eq!(num(&r, "packs_deleted"), 0, "{r:#}");
    assert_eq!(count(&dir.join("packs")), 2);
    assert_eq!(count(&dir.join("condemned/packs")), 1);

    // A dry run changes nothing.
    let r = gc(&store, &["--grace", "0s", "--dry-run"]);
    assert_eq!(num(&r, "packs_deleted"), 1, "{r:#}");
    assert_eq!(count(&dir.join("packs")), 2);

    // The next run deletes it and frees its bytes.
    let r = gc(&store, &["--grace", "0s"]);
    assert_eq!(num(&r, "packs_deleted"), 1, "{r:#}");
    assert!(num(&r, "bytes_freed") >= 6 << 20, "{r:#}");
    assert_eq!(count(&dir.join("packs")), 1);
    let bytes_after: u64 = fs::read_dir(dir.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(bytes_after + (6 << 20) <= bytes_before);

    // s2 restores byte-exact from what is left.
    let out = m.root.join("restored");
    ok(
        args!["restore", format!("file://{}", dir.display()), "s2", out],
        NO_ENV,
    );
    assert_bytes(&out.join("kept.bin"), &kept);
    assert!(!out.join("old.bin").exists());
}

#[test]
fn a_push_never_relies_on_a_condemned_pack() {
    let mut m = Mount::new("remote-gc-rescue");
    let dir = m.root.join("remote");
    let model = noise(6 << 20, 0x6c_0011);
    fs::write(m.path("model.pt"), &model).unwrap();
    ok(args!["snapshot", m.mnt, "s1"], NO_ENV);
    fs::remove_file(m.path("model.pt")).unwrap();
    fs::write(m.path("other.bin"), b"small").unwrap();
    ok(args!["snapshot", m.mnt, "s2"], NO_ENV);
    assert!(m.stop().success(), "{}", m.log());
    let store = m.store.clone();
    let url = format!("file://{}", dir.display());
    ok(
        args![
            "remote",
            "add",
            store,
            "backup",
            url.as_str(),
            "--node",
            "n1"
        ],
        NO_ENV,
    );
    ok(args!["push", store, "backup"], NO_ENV);
    // s1 expires; its pack (the model's chunks) is condemned.
    gc(&store, &["--policy", "keep-last = 1", "--grace", "0s"]);
    assert_eq!(count(&dir.join("condemned/packs")), 1);

    // The same model is saved again (the daemon pushes it by itself): the
    // push must not count on the condemned pack, and uploads the chunks
    // anew, into a pack of another name.
    m.start();
    fs::write(m.path("model.pt"), &model).unwrap();
    ok(args!["snapshot", m.mnt, "s3"], NO_ENV);
    ok(args!["push", m.mnt, "backup"], NO_ENV);
    assert!(m.stop().success(), "{}", m.log());
    let r = push_report(args!["push", store, "backup", "--json"], NO_ENV, "backup");
    assert_eq!(r["already"], 2, "{r:#}");
    assert_eq!(r["expired_remotely"], 1, "s1 was pushed again: {r:#}");
    assert_eq!(
        count(&dir.join("packs")),
        3,
        "the model's chunks were not uploaded again"
    );
    // The condemned pack goes (its chunks are served by the new one); s2
    // and s3 stay whole.
    let r = gc(&store, &["--policy", "keep-last = 2", "--grace", "0s"]);
    assert_eq!(num(&r, "packs_deleted"), 1, "{r:#}");
    let out = m.root.join("restored");
    ok(args!["restore", url.as_str(), "s3", out], NO_ENV);
    assert_bytes(&out.join("model.pt"), &model);
}
