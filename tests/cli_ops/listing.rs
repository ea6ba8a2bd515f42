//! `snapshot`, `snapshots`, `pin`, `unpin`, `versions` and `stats` on a
//! mount and on the unmounted store; help; a store that a daemon serves
//! is refused with the daemon's pid; `--control-dir`.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use serde_json::Value;

use crate::common::{noise, Mount};
use crate::{args, json, ok, refused, snapshot_names};

fn pinned_xattr(m: &Mount, name: &str) -> String {
    let v = xattr::get(
        m.path(&format!(".ckpt/snapshots/{name}")),
        "user.ckpt.pinned",
    )
    .unwrap()
    .unwrap();
    String::from_utf8(v).unwrap()
}

/// The fields of `snapshots --json` that do not depend on the policy.
fn core(list: &Value) -> Vec<(String, String, u64, u64, u64, bool)> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["created"].as_str().unwrap().to_string(),
                s["files"].as_u64().unwrap(),
                s["logical_bytes"].as_u64().unwrap(),
                s["stored_bytes"].as_u64().unwrap(),
                s["pinned"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn snapshot_snapshots_pin_and_unpin_work_on_a_mount_and_on_the_unmounted_store() {
    let mut m = Mount::new("ops-snapshots");
    fs::create_dir(m.path("exp")).unwrap();
    fs::write(m.path("exp/a.bin"), noise(300_000, 0x0a51)).unwrap();
    fs::write(m.path("exp/b.txt"), b"hello").unwrap();

    let out = ok(args!["snapshot", m.mnt, "first"]);
    assert!(out.contains("snapshot first taken: 2 files"), "{out}");
    assert!(m.path(".ckpt/snapshots/first").is_dir());
    refused(args!["snapshot", m.mnt, "first"], &["already exists"]);
    refused(args!["snapshot", m.mnt, "latest"], &["reserved"]);
    refused(
        args!["snapshot", m.mnt, "a/b"],
        &["not a usable snapshot name"],
    );
    refused(args!["pin", m.mnt, "nosuch"], &["no snapshot named nosuch"]);

    let out = ok(args!["pin", m.mnt, "first"]);
    assert!(out.contains("snapshot first pinned"), "{out}");
    assert_eq!(pinned_xattr(&m, "first"), "1");
    let out = ok(args!["pin", m.mnt, "first"]);
    assert!(out.contains("already pinned"), "{out}");

    let list = json(args!["snapshots", m.mnt, "--json"]);
    let s = &list[0];
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(s["name"], "first");
    assert!(s["created"].as_str().unwrap().ends_with('Z'), "{s}");
    assert_eq!(s["files"], 2);
    assert_eq!(s["logical_bytes"], 300_005);
    assert!(s["stored_bytes"].as_u64().unwrap() >= 300_000, "{s}");
    assert_eq!(s["pinned"], true);
    assert!(s.get("metric").is_some() && s["metric"].is_null(), "{s}");
    assert!(s["rules"].as_str().unwrap().contains("pinned"), "{s}");
    let table = ok(args!["snapshots", m.mnt]);
    assert!(
        table.contains("NAME") && table.contains("STORED") && table.contains("first"),
        "{table}"
    );
    let on_mount = core(&list);

    // The same on the store, then changes made there.
    assert!(m.stop().success());
    let list = json(args!["snapshots", m.store, "--json"]);
    assert_eq!(core(&list), on_mount, "store and mount disagree");
    let out = ok(args!["snapshot", m.store, "second"]);
    assert!(out.contains("snapshot second taken: 2 files"), "{out}");
    refused(args!["snapshot", m.store, "second"], &["already exists"]);
    refused(
        args!["unpin", m.store, "nosuch"],
        &["no snapshot named nosuch"],
    );
    let out = ok(args!["unpin", m.store, "first"]);
    assert!(out.contains("snapshot first unpinned"), "{out}");
    let list = json(args!["snapshots", m.store, "--json"]);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["first", "second"]);
    assert_eq!(list[0]["pinned"], false);
    assert_eq!(list[1]["files"], 2);
    assert_eq!(list[1]["trigger"], "cli");
    let table = ok(args!["snapshots", m.store]);
    assert!(table.contains("second"), "{table}");

    // The daemon sees what was done on the store.
    m.start();
    assert!(m.path(".ckpt/snapshots/second").is_dir());
    assert_eq!(pinned_xattr(&m, "first"), "0");
    assert_eq!(snapshot_names(&m.mnt), ["first", "second"]);
    ok(args!["pin", m.mnt, "second"]);
    assert_eq!(pinned_xattr(&m, "second"), "1");
    ok(args!["unpin", m.mnt, "second"]);
    assert_eq!(pinned_xattr(&m, "second"), "0");
}

#[test]
fn a_store_that_a_daemon_serves_is_refused_with_its_pid_and_nothing_changes() {
    let m = Mount::new("ops-in-use");
    fs::write(m.path("f.bin"), noise(100_000, 0x0b52)).unwrap();
    ok(args!["snapshot", m.mnt, "s"]);
    let pid = m.pid().to_string();
    let dest = m.root.join("restored");
    for cmd in [
        args!["snapshot", m.store, "other"],
        args!["snapshots", m.store],
        args!["versions", m.store, "f.bin"],
        args!["restore", m.store, "s", dest],
        args!["pin", m.store, "s"],
        args!["unpin", m.store, "s"],
        args!["gc", m.store],
        args!["gc", m.store, "--dry-run"],
        args!["stats", m.store],
        args!["verify", m.store],
    ] {
        let err = refused(
            cmd,
            &[
                &format!("is served by ckptfs pid {pid}"),
                "run this on its mount point",
            ],
        );
        assert!(
            err.contains(m.mnt.to_str().unwrap()),
            "the message does not name the mount point:\n{err}"
        );
    }
    assert!(!dest.exists());
    assert_eq!(snapshot_names(&m.mnt), ["s"]);
    assert_eq!(pinned_xattr(&m, "s"), "0");
    assert_eq!(fs::read(m.path("f.bin")).unwrap(), noise(100_000, 0x0b52));

    // Neither a store nor a mount.
    let plain = m.root.join("plain");
    fs::create_dir(&plain).unwrap();
    refused(
        args!["snapshots", plain],
        &["neither a ckptfs mount point", "nor a ckptfs store"],
    );
    refused(args!["stats", m.root.join("missing")], &["missing"]);
}

#[test]
fn a_renamed_control_directory_is_found_with_control_dir() {
    let m = Mount::with_args("ops-control-dir", &["--control-dir", "_hist"]);
    fs::write(m.path("f.txt"), b"x").unwrap();
    refused(args!["snapshot", m.mnt, "s"], &["--control-dir"]);
    ok(args!["snapshot", "--control-dir", "_hist", m.mnt, "s"]);
    assert!(m.path("_hist/snapshots/s").is_dir());
    let list = json(args![
        "snapshots",
        m.mnt,
        "--control-dir",
        "_hist",
        "--json"
    ]);
    assert_eq!(list[0]["name"], "s");
}

#[test]
fn versions_lists_what_ckpt_versions_shows_on_a_mount_and_on_the_store() {
    let mut m = Mount::new("ops-versions");
    fs::create_dir(m.path("runs")).unwrap();
    let file = m.path("runs/w.bin");
    for (k, len) in [(1u64, 50_000usize), (2, 70_000), (3, 0)] {
        fs::write(&file, noise(len, k)).unwrap();
        if k == 2 {
            fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
    fs::write(m.path("runs/other.txt"), b"other").unwrap();

    let list = json(args!["versions", m.mnt, "runs/w.bin", "--json"]);
    let rows = list.as_array().unwrap();
    let mut names: Vec<String> = fs::read_dir(m.path(".ckpt/versions/runs/w.bin"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "latest")
        .collect();
    names.sort();
    let listed: Vec<String> = rows
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, names, "versions and .ckpt/versions/ disagree");
    // Each write is one version (a fork by another test thread could
    // flush an fd early and add one, so the sizes are checked in order).
    let seqs: Vec<u64> = rows.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let sizes: Vec<u64> = rows.iter().map(|r| r["size"].as_u64().unwrap()).collect();
    let mut want = [50_000u64, 70_000, 0].into_iter().peekable();
    for s in &sizes {
        if want.peek() == Some(s) {
            want.next();
        }
    }
    assert!(want.next().is_none(), "sizes {sizes:?}");
    for r in rows {
        let meta = fs::metadata(
            m.path(".ckpt/versions/runs/w.bin")
                .join(r["name"].as_str().unwrap()),
        )
        .unwrap();
        assert_eq!(r["size"].as_u64().unwrap(), meta.len(), "{r}");
    }
    let last = rows.last().unwrap();
    assert_eq!(rows[0]["mode"], "0644");
    assert_eq!(last["size"], 0);
    assert_eq!(last["mode"], "0600");
    assert!(rows[0]["mtime"].as_str().unwrap().ends_with('Z'));
    assert!(rows[0]["committed"].as_str().unwrap().ends_with('Z'));

    // An absolute path inside the mount names the same file.
    let abs = json(args!["versions", m.mnt, m.path("runs/w.bin"), "--json"]);
    assert_eq!(abs, list);
    let table = ok(args!["versions", m.mnt, "/runs/w.bin"]);
    for n in &names {
        assert!(table.contains(n.as_str()), "{table}");
    }
    refused(
        args!["versions", m.mnt, "runs/nope.bin"],
        &["/runs/nope.bin", "no versions"],
    );
    refused(args!["versions", m.mnt, "runs"], &["no versions"]);

    assert!(m.stop().success());
    let on_store = json(args!["versions", m.store, "runs/w.bin", "--json"]);
    assert_eq!(on_store, list, "store and mount disagree");
    refused(
        args!["versions", m.store, "runs/nope.bin"],
        &["no versions"],
    );
}

#[test]
fn stats_shows_logical_and_stored_bytes_on_a_mount_and_on_the_store() {
    let mut m = Mount::new("ops-stats");
    let data = noise(2_000_000, 0x05_7a75);
    fs::write(m.path("a.bin"), &data).unwrap();
    fs::write(m.path("b.bin"), &data).unwrap();
    ok(args!["snapshot", m.mnt, "s"]);

    let s = json(args!["stats", m.mnt, "--json"]);
    assert!(s["logical_bytes"].as_u64().unwrap() >= 4_000_000, "{s}");
    assert!(s["dedup_ratio"].as_f64().unwrap() > 1.9, "{s}");
    assert!(s["stored_bytes"].as_u64().unwrap() < 2_200_000, "{s}");
    assert!(s["versions"].as_u64().unwrap() >= 2, "{s}");
    assert_eq!(s["snapshots"], 1);
    let human = ok(args!["stats", m.mnt]);
    for k in [
        "logical",
        "stored",
        "dedup ratio",
        "compression",
        "versions",
        "snapshots",
        "open writers",
        "last minute",
        "last GC",
    ] {
        assert!(human.contains(k), "stats does not show {k}:\n{human}");
    }
    assert!(human.contains("2.00x"), "{human}");

    assert!(m.stop().success());
    let t = json(args!["stats", m.store, "--json"]);
    for k in [
        "logical_bytes",
        "stored_bytes",
        "unique_bytes",
        "chunks",
        "versions",
        "snapshots",
    ] {
        assert_eq!(t[k], s[k], "{k} differs between mount and store");
    }
    let human = ok(args!["stats", m.store]);
    assert!(
        human.contains("dedup ratio") && human.contains("not mounted"),
        "{human}"
    );
}

#[test]
fn help_lists_every_operator_command_and_their_options() {
    let top = ok(args!["--help"]);
    for c in [
        "snapshot",
        "snapshots",
        "versions",
        "restore",
        "pin",
        "unpin",
        "gc",
        "stats",
        "verify",
        "unmount",
    ] {
        assert!(top.contains(&format!("  {c} ")), "--help lacks {c}:\n{top}");
    }
    for (cmd, flags) in [
        (
            "restore",
            &["--force", "PATH@VERSION", "--control-dir", "<DEST>"][..],
        ),
        ("gc", &["--dry-run", "--json"][..]),
        ("snapshots", &["--json", "<TARGET>"][..]),
        ("verify", &["--json"][..]),
        ("unmount", &["--lazy", "<MOUNTPOINT>"][..]),
    ] {
        let help = ok(args![cmd, "--help"]);
        for f in flags {
            assert!(help.contains(f), "{cmd} --help lacks {f}:\n{help}");
        }
    }
}
