//! What the policy keeps, as users see it: the `retention/kept/` and
//! `retention/expiring/` listings (symlinks to `../../snapshots/NAME`),
//! the rules in `retention/status` and in `user.ckpt.rules` of the snapshot each link points to
//! xattrs, for keep-last and keep-every; pinned snapshots and the newest
//! one are always kept, also by GC.

use std::collections::BTreeMap;
use std::fs;

use nix::errno::Errno;

use super::{
    append_policy, ctl, expect_errno, expired_of, listing, q, run_gc, set, set_policy, snapshot,
    snapshot_names, status_plan, write_file, xattr, xxh,
};
use crate::common::{hash_file, sh, Mount};

/// Takes snapshots `s{from}..=s{to}`, each after writing `state.txt`;
/// returns the content hash each one holds.
fn snapshots(m: &Mount, from: usize, to: usize) -> BTreeMap<String, u128> {
    let mut held = BTreeMap::new();
    for i in from..=to {
        let data = format!("state {i}\n").repeat(i * 1000);
        write_file(&m.path("state.txt"), data.as_bytes());
        snapshot(m, &format!("s{i}"));
        held.insert(format!("s{i}"), xxh(data.as_bytes()));
    }
    held
}

/// Asserts each named snapshot still holds exactly its `state.txt`.
#[track_caller]
fn assert_held(m: &Mount, held: &BTreeMap<String, u128>, names: &[&str]) {
    for name in names {
        let p = ctl(m, &format!("snapshots/{name}/state.txt"));
        assert_eq!(hash_file(&p), held[*name], "content of {}", p.display());
    }
}

/// (listing, snapshot, rules) expected under one policy.
type Expect = (&'static str, &'static str, &'static str);

fn rules(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn keep_last_lists_the_newest_as_kept_links_and_the_rest_as_expiring() {
    let m = Mount::new("ret-kept-last");
    let held = snapshots(&m, 1, 5);
    set_policy(&m, "keep-last = 2\n");
    assert_eq!(listing(&m, "kept"), set(&["s4", "s5"]));
    assert_eq!(listing(&m, "expiring"), set(&["s1", "s2", "s3"]));
    let (kept, expiring) = status_plan(&m);
    assert_eq!(kept["s5"], rules(&["newest", "keep-last"]));
    assert_eq!(kept["s4"], rules(&["keep-last"]));
    assert_eq!(kept.len(), 2);
    assert_eq!(expiring, set(&["s1", "s2", "s3"]));
    // A name is only found in the listing it is in.
    expect_errno(
        fs::symlink_metadata(ctl(&m, "retention/kept/s1")),
        Errno::ENOENT,
        "kept/s1",
    );
    expect_errno(
        fs::symlink_metadata(ctl(&m, "retention/expiring/s5")),
        Errno::ENOENT,
        "expiring/s5",
    );
    expect_errno(
        fs::symlink_metadata(ctl(&m, "retention/kept/nope")),
        Errno::ENOENT,
        "kept/nope",
    );
    // The links lead to the snapshots' content.
    let via_link = hash_file(&ctl(&m, "retention/kept/s4/state.txt"));
    assert_eq!(via_link, held["s4"]);
    assert_eq!(
        hash_file(&ctl(&m, "retention/expiring/s2/state.txt")),
        held["s2"]
    );

    // A new snapshot moves the window at once.
    let held6 = snapshots(&m, 6, 6);
    assert_eq!(listing(&m, "kept"), set(&["s5", "s6"]));
    assert_eq!(listing(&m, "expiring"), set(&["s1", "s2", "s3", "s4"]));

    // GC removes exactly the expiring ones and nothing else changes.
    let report = run_gc(&m);
    assert_eq!(expired_of(&report), set(&["s1", "s2", "s3", "s4"]));
    assert_eq!(snapshot_names(&m), set(&["s5", "s6"]));
    assert!(listing(&m, "expiring").is_empty());
    assert_eq!(listing(&m, "kept"), set(&["s5", "s6"]));
    assert_eq!(
        fs::read_link(ctl(&m, "snapshots/latest")).unwrap(),
        std::path::Path::new("s6")
    );
    assert_held(&m, &held, &["s5"]);
    assert_eq!(hash_file(&ctl(&m, "snapshots/s6/state.txt")), held6["s6"]);
    assert_eq!(
        hash_file(&m.path("state.txt")),
        held6["s6"],
        "the live file"
    );
    // Looked up before (through the links above), an expired snapshot is
    // gone for a lookup right after `echo run > gc` returned, too.
    for gone in ["s1", "s2", "s4"] {
        let p = ctl(&m, &format!("snapshots/{gone}"));
        let what = format!("stat of expired {gone} right after GC");
        expect_errno(fs::metadata(&p), Errno::ENOENT, &what);
    }
}

#[test]
fn keep_every_keeps_sequence_multiples_and_the_newest() {
    let mut m = Mount::new("ret-kept-every");
    // A fresh store numbers its snapshots 1, 2, 3, ... in one mount.
    let held = snapshots(&m, 1, 7);
    set_policy(&m, "keep-every = 3\n");
    assert_eq!(listing(&m, "kept"), set(&["s3", "s6", "s7"]));
    assert_eq!(listing(&m, "expiring"), set(&["s1", "s2", "s4", "s5"]));
    let (kept, _) = status_plan(&m);
    assert_eq!(kept["s3"], rules(&["keep-every"]));
    assert_eq!(kept["s6"], rules(&["keep-every"]));
    assert_eq!(kept["s7"], rules(&["newest"]));

    // Rules add up: keep-last = 2 also keeps s6 for a second reason.
    append_policy(&m, "keep-last = 2");
    let (kept, expiring) = status_plan(&m);
    assert_eq!(kept["s6"], rules(&["keep-last", "keep-every"]));
    assert_eq!(kept["s7"], rules(&["newest", "keep-last"]));
    assert_eq!(expiring, set(&["s1", "s2", "s4", "s5"]));

    let report = run_gc(&m);
    assert_eq!(expired_of(&report), set(&["s1", "s2", "s4", "s5"]));
    assert_eq!(snapshot_names(&m), set(&["s3", "s6", "s7"]));
    assert_held(&m, &held, &["s3", "s6", "s7"]);
    m.remount();
    assert_eq!(snapshot_names(&m), set(&["s3", "s6", "s7"]));
    assert_held(&m, &held, &["s3", "s6", "s7"]);
    assert_eq!(listing(&m, "kept"), set(&["s3", "s6", "s7"]));
}

#[test]
fn pinned_snapshots_and_the_newest_are_always_kept() {
    let m = Mount::new("ret-kept-pinned");
    let mut held = snapshots(&m, 1, 4);
    // A rule that matches nothing still keeps the newest.
    set_policy(&m, "keep-every = 100\n");
    assert_eq!(listing(&m, "kept"), set(&["s4"]));
    assert_eq!(status_plan(&m).0["s4"], rules(&["newest"]));

    let s1 = ctl(&m, "snapshots/s1");
    sh(&format!("setfattr -n user.ckpt.pinned -v 1 {}", q(&s1)));
    assert_eq!(xattr(&s1, "user.ckpt.pinned", false).as_deref(), Ok("1"));
    assert_eq!(listing(&m, "kept"), set(&["s1", "s4"]));
    assert_eq!(listing(&m, "expiring"), set(&["s2", "s3"]));
    assert_eq!(status_plan(&m).0["s1"], rules(&["pinned"]));
    // A pinned snapshot cannot be removed by hand; others can.
    expect_errno(
        fs::remove_dir(&s1),
        Errno::EBUSY,
        "rmdir of a pinned snapshot",
    );
    fs::remove_dir(ctl(&m, "snapshots/s2")).expect("rmdir of an unpinned snapshot");
    assert_eq!(snapshot_names(&m), set(&["s1", "s3", "s4"]));

    let report = run_gc(&m);
    assert_eq!(expired_of(&report), set(&["s3"]));
    assert_eq!(snapshot_names(&m), set(&["s1", "s4"]));
    assert_held(&m, &held, &["s1", "s4"]);

    // The newest moves on: the old newest expires, the pinned one stays.
    held.extend(snapshots(&m, 5, 5));
    assert_eq!(listing(&m, "expiring"), set(&["s4"]));
    let report = run_gc(&m);
    assert_eq!(expired_of(&report), set(&["s4"]));
    assert_eq!(snapshot_names(&m), set(&["s1", "s5"]));
    assert_held(&m, &held, &["s1", "s5"]);

    // Unpinned, it is an ordinary snapshot again.
    sh(&format!("setfattr -x user.ckpt.pinned {}", q(&s1)));
    assert_eq!(xattr(&s1, "user.ckpt.pinned", false).as_deref(), Ok("0"));
    assert_eq!(listing(&m, "expiring"), set(&["s1"]));
    let report = run_gc(&m);
    assert_eq!(expired_of(&report), set(&["s1"]));
    assert_eq!(snapshot_names(&m), set(&["s5"]));
    assert_held(&m, &held, &["s5"]);
    // With a single snapshot left, it is kept whatever the rules say.
    set_policy(&m, "keep-within = 1s\n");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(listing(&m, "kept"), set(&["s5"]));
    assert!(expired_of(&run_gc(&m)).is_empty());
    assert_eq!(snapshot_names(&m), set(&["s5"]));
}

#[test]
fn kept_and_expiring_links_name_their_rules_in_user_ckpt_rules() {
    let m = Mount::new("ret-kept-rules-xattr");
    // Each snapshot holds one file whose name carries a loss.
    let losses = ["0.9", "0.2", "0.7", "0.4", "0.8", "0.6"];
    for (i, loss) in losses.iter().enumerate() {
        if i > 0 {
            fs::remove_file(m.path(&format!("loss={}.txt", losses[i - 1]))).unwrap();
        }
        write_file(&m.path(&format!("loss={loss}.txt")), loss.as_bytes());
        snapshot(&m, &format!("s{}", i + 1));
    }
    // Every (policy, listing, name, rules) to check; mismatches are
    // collected so that one run shows all of them.
    let cases: [(&str, &[Expect]); 3] = [
        (
            "keep-last = 2\n",
            &[
                ("kept", "s6", "newest,keep-last"),
                ("kept", "s5", "keep-last"),
                ("expiring", "s1", "expiring"),
                ("expiring", "s4", "expiring"),
            ],
        ),
        (
            "keep-every = 2\n",
            &[
                ("kept", "s2", "keep-every"),
                ("kept", "s4", "keep-every"),
                ("kept", "s6", "newest,keep-every"),
                ("expiring", "s3", "expiring"),
            ],
        ),
        (
            "keep-best = 2\nmetric-regex = loss=([0-9.]+)\n",
            &[
                ("kept", "s2", "keep-best"),
                ("kept", "s4", "keep-best"),
                ("kept", "s6", "newest"),
                ("expiring", "s1", "expiring"),
                ("expiring", "s5", "expiring"),
            ],
        ),
    ];
    let mut wrong = Vec::new();
    for (policy, expect) in cases {
        set_policy(&m, policy);
        let (kept, _) = status_plan(&m);
        for (which, name, want) in expect {
            let link = ctl(&m, &format!("retention/{which}/{name}"));
            assert!(
                listing(&m, which).contains(*name),
                "{policy:?}: {name} not in {which}/"
            );
            if *which == "kept" {
                assert_eq!(
                    kept[*name].join(","),
                    *want,
                    "{policy:?}: status rules of {name}"
                );
            }
            // Linux allows no user.* xattr on a symlink, so the rules sit on
            // the snapshot directory the link points to: listed there...
            let listed = sh(&format!("getfattr -m - {} 2>&1", q(&link)));
            if !listed.contains("user.ckpt.rules") {
                wrong.push(format!(
                    "{policy:?} {which}/{name}: listxattr shows {listed:?}"
                ));
            }
            // ... and readable through the link with the rules.
            match xattr(&link, "user.ckpt.rules", false) {
                Ok(v) if v == *want => {}
                other => wrong.push(format!(
                    "{policy:?} {which}/{name}: user.ckpt.rules = {other:?}, want {want:?}"
                )),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "user.ckpt.rules of the links:\n{}",
        wrong.join("\n")
    );
}
