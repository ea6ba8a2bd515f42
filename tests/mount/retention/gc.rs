//! Garbage collection: what it frees on disk (`du -s -B1` of the store,
//! measured settled, i.e. right after a remount; see `storage.rs` for why),
//! what it must keep byte-exact (kept and pinned snapshots, live files,
//! their latest versions), `file-versions-keep`, the GC timer (`--gc-interval`, the policy's
//! `gc-interval`), and a read-only mount refusing GC and policy writes.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::time::Instant;

use nix::errno::Errno;

use super::{
    append_policy, ctl, expect_errno, expired_of, gc_count, last_gc, listing, policy_text, q,
    run_gc, set, set_policy, snapshot, snapshot_names, tree, wait_for, write_file, xxh, MIB,
};
use crate::common::{du_bytes, hash_file, heavy, noise, sh, Mount};

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

/// The store's size once settled: remount, then `du -s -B1`.
fn settled_du(m: &mut Mount) -> u64 {
    m.remount();
    du_bytes(&m.store)
}

#[test]
fn gc_with_keep_last_1_frees_expired_checkpoints_on_disk_and_keeps_the_rest_exact() {
    let _heavy = heavy();
    let mut m = Mount::new("ret-gc-shrink");
    set_policy(&m, "keep-last = 1\nfile-versions-keep = 0\n");
    let out = m.path("out");
    fs::create_dir(&out).unwrap();
    let size = 50 * MIB;
    let steps = 5;
    let mut weights: BTreeMap<usize, u128> = BTreeMap::new();
    let started = Instant::now();
    // HF Trainer: save into tmp-checkpoint-N, rename it to checkpoint-N
    // (ckptfs snapshots there), then save_total_limit = 1 deletes the
    // older checkpoints.
    for k in 1..=steps {
        let step = k * 100;
        let tmp = out.join(format!("tmp-checkpoint-{step}"));
        fs::create_dir(&tmp).unwrap();
        let w = noise(size, 0x6c00 + k as u64);
        write_file(&tmp.join("model.safetensors"), &w);
        weights.insert(step, xxh(&w));
        write_file(
            &tmp.join("trainer_state.json"),
            format!("{{\"global_step\": {step}}}\n").as_bytes(),
        );
        fs::rename(&tmp, out.join(format!("checkpoint-{step}"))).unwrap();
        wait_for(
            &format!("the automatic snapshot of checkpoint-{step}"),
            60,
            || (snapshot_names(&m).len() == k).then_some(()),
        );
        if k > 1 {
            fs::remove_dir_all(out.join(format!("checkpoint-{}", step - 100))).unwrap();
        }
    }
    let wrote = started.elapsed();
    let snaps: Vec<String> = snapshot_names(&m).into_iter().collect();
    assert_eq!(snaps.len(), steps);
    assert!(snaps.iter().all(|s| s.starts_with("auto-")), "{snaps:?}");
    let newest = snaps.last().unwrap().clone();
    let older: Vec<&str> = snaps[..steps - 1].iter().map(String::as_str).collect();
    assert_eq!(listing(&m, "expiring"), set(&older));

    let live_before = du_bytes(&m.store);
    let before = settled_du(&mut m);
    assert!(
        before >= (steps * size) as u64 * 95 / 100,
        "the store holds only {:.1} MiB of {steps} x 50 MiB of noise",
        mib(before)
    );
    let t = Instant::now();
    let report = run_gc(&m);
    let gc_wall = t.elapsed();
    let live_after = du_bytes(&m.store);
    let after = settled_du(&mut m);
    eprintln!(
        "gc shrink: {steps} x 50 MiB written in {wrote:.1?}; store {before} bytes ({:.1} MiB) before GC, \
         {after} bytes ({:.1} MiB) after (live mount: {:.1} -> {:.1} MiB); GC took {gc_wall:.1?} \
         (reported {} ms): {report}",
        mib(before),
        mib(after),
        mib(live_before),
        mib(live_after),
        report["millis"]
    );
    assert_eq!(expired_of(&report), set(&older));
    assert!(gc_count(&report, "versions_expired") > 0, "{report}");
    assert!(gc_count(&report, "chunks_deleted") > 0, "{report}");
    // checkpoint-100..300 are in no kept snapshot, version or live file;
    // the kept snapshot holds checkpoint-400 and -500 (taken before the
    // rotation deleted 400).
    let freed = 3 * size as u64;
    assert!(
        gc_count(&report, "bytes_freed") >= freed * 95 / 100,
        "{report}"
    );
    assert!(
        before.saturating_sub(after) >= freed * 85 / 100,
        "du of the store went from {before} to {after} bytes: less than 85% of the {freed} bytes freed"
    );
    assert!(
        after <= 2 * size as u64 * 125 / 100,
        "{after} bytes left for 2 x 50 MiB of kept checkpoints"
    );

    // Kept: the newest snapshot, the live files, their latest versions.
    for _ in 0..2 {
        assert_eq!(snapshot_names(&m), set(&[&newest]));
        for gone in &older {
            expect_errno(
                fs::metadata(ctl(&m, &format!("snapshots/{gone}"))),
                Errno::ENOENT,
                gone,
            );
        }
        let snap = ctl(&m, &format!("snapshots/{newest}/out"));
        assert_eq!(
            hash_file(&snap.join("checkpoint-400/model.safetensors")),
            weights[&400]
        );
        assert_eq!(
            hash_file(&snap.join("checkpoint-500/model.safetensors")),
            weights[&500]
        );
        assert_eq!(
            hash_file(&out.join("checkpoint-500/model.safetensors")),
            weights[&500]
        );
        assert_eq!(super::names(&out), set(&["checkpoint-500"]));
        let latest = ctl(&m, "versions/out/checkpoint-500/model.safetensors/latest");
        assert_eq!(hash_file(&latest), weights[&500]);
        // file-versions-keep = 0 dropped the versions of deleted paths.
        for gone in ["checkpoint-100", "checkpoint-300", "tmp-checkpoint-200"] {
            let p = ctl(&m, &format!("versions/out/{gone}"));
            expect_errno(fs::metadata(&p), Errno::ENOENT, &p.display().to_string());
        }
        m.remount();
    }
}

/// Writes one step: a new `model.bin` (a shared backbone plus a new
/// head), the same `optimizer.bin` as always, and `step-N.bin`; the step
/// file two steps back is deleted. Updates `live`.
fn train_step(m: &Mount, i: u64, live: &mut BTreeMap<String, u128>) {
    let mut model = noise(2 * MIB, 0xb0b);
    model.extend_from_slice(&noise(MIB, 0xbe00 + i));
    write_file(&m.path("model.bin"), &model);
    live.insert("model.bin".into(), xxh(&model));
    let opt = noise(MIB, 0x0b7);
    write_file(&m.path("optimizer.bin"), &opt);
    live.insert("optimizer.bin".into(), xxh(&opt));
    let step = noise(700_000, 0x57e9 + i);
    write_file(&m.path(&format!("steps/step-{i}.bin")), &step);
    live.insert(format!("steps/step-{i}.bin"), xxh(&step));
    if i >= 3 {
        let old = format!("steps/step-{}.bin", i - 2);
        fs::remove_file(m.path(&old)).unwrap();
        live.remove(&old);
    }
}

/// Asserts that exactly `names` are listed and hold exactly what they held
/// when taken, and that the live tree and its latest versions are `live`.
#[track_caller]
fn check(
    m: &Mount,
    held: &BTreeMap<String, BTreeMap<String, u128>>,
    live: &BTreeMap<String, u128>,
    names: &[&str],
) {
    assert_eq!(snapshot_names(m), set(names));
    for name in names {
        let got = tree(&ctl(m, &format!("snapshots/{name}")));
        assert_eq!(got, held[*name], "content of snapshot {name}");
    }
    assert_eq!(&tree(&m.mnt), live, "the live tree");
    for (path, hash) in live {
        let latest = ctl(m, &format!("versions/{path}/latest"));
        assert_eq!(hash_file(&latest), *hash, "{}", latest.display());
    }
}

#[test]
fn pinned_and_kept_snapshots_and_live_files_survive_gc_byte_exact() {
    let mut m = Mount::new("ret-gc-keeps");
    fs::create_dir(m.path("steps")).unwrap();
    let mut live = BTreeMap::new();
    let mut held: BTreeMap<String, BTreeMap<String, u128>> = BTreeMap::new();
    for i in 1..=6 {
        train_step(&m, i, &mut live);
        snapshot(&m, &format!("s{i}"));
        held.insert(format!("s{i}"), live.clone());
    }
    sh(&format!(
        "setfattr -n user.ckpt.pinned -v 1 {}",
        q(&ctl(&m, "snapshots/s2"))
    ));
    set_policy(&m, "keep-last = 2\nfile-versions-keep = 0\n");
    let report = run_gc(&m);
    assert_eq!(expired_of(&report), set(&["s1", "s3", "s4"]));
    assert!(gc_count(&report, "chunks_deleted") > 0, "{report}");
    check(&m, &held, &live, &["s2", "s5", "s6"]);
    // Nothing more to expire; a second run leaves everything as it is.
    let report = run_gc(&m);
    assert!(expired_of(&report).is_empty(), "{report}");
    check(&m, &held, &live, &["s2", "s5", "s6"]);
    m.remount();
    check(&m, &held, &live, &["s2", "s5", "s6"]);

    // More steps: the pinned one still stays, keep-last moves on.
    for i in 7..=8 {
        train_step(&m, i, &mut live);
        snapshot(&m, &format!("s{i}"));
        held.insert(format!("s{i}"), live.clone());
    }
    let report = run_gc(&m);
    assert_eq!(expired_of(&report), set(&["s5", "s6"]));
    check(&m, &held, &live, &["s2", "s7", "s8"]);
    m.remount();
    check(&m, &held, &live, &["s2", "s7", "s8"]);
    // Unpinned, s2 goes; the rest is untouched.
    sh(&format!(
        "setfattr -n user.ckpt.pinned -v 0 {}",
        q(&ctl(&m, "snapshots/s2"))
    ));
    let report = run_gc(&m);
    assert_eq!(expired_of(&report), set(&["s2"]));
    check(&m, &held, &live, &["s7", "s8"]);
}

/// The contents of a path's versions (`.ckpt/versions/PATH/NNNNNN-...`),
/// oldest first.
fn versions(m: &Mount, path: &str) -> Vec<u128> {
    let dir = ctl(m, &format!("versions/{path}"));
    let mut names: Vec<String> = super::names(&dir)
        .into_iter()
        .filter(|n| n != "latest")
        .collect();
    names.sort();
    names.iter().map(|n| hash_file(&dir.join(n))).collect()
}

#[test]
fn file_versions_keep_bounds_free_versions_and_0_drops_deleted_paths() {
    let mut m = Mount::new("ret-gc-file-versions");
    set_policy(&m, "keep-last = 1\nfile-versions-keep = 2\n");
    let v = |name: &str, i: u64| noise(30_000 + i as usize, xxh(name.as_bytes()) as u64 + i);
    for i in 1..=5 {
        write_file(&m.path("a.bin"), &v("a", i));
    }
    for i in 1..=3 {
        write_file(&m.path("b.bin"), &v("b", i));
    }
    fs::remove_file(m.path("b.bin")).unwrap();
    snapshot(&m, "s1"); // holds a.bin v5 only
    let hashes = |name: &str, range: std::ops::RangeInclusive<u64>| -> Vec<u128> {
        range.map(|i| xxh(&v(name, i))).collect()
    };
    assert_eq!(versions(&m, "a.bin"), hashes("a", 1..=5));
    assert_eq!(versions(&m, "b.bin"), hashes("b", 1..=3));

    // a.bin: v5 is held by s1 (and is the newest); of the others the 2
    // newest stay. b.bin is deleted; its 2 newest stay.
    let report = run_gc(&m);
    assert_eq!(gc_count(&report, "versions_expired"), 3, "{report}");
    assert_eq!(versions(&m, "a.bin"), hashes("a", 3..=5));
    assert_eq!(versions(&m, "b.bin"), hashes("b", 2..=3));
    assert_eq!(
        hash_file(&ctl(&m, "versions/a.bin/latest")),
        xxh(&v("a", 5))
    );
    assert_eq!(
        hash_file(&ctl(&m, "versions/b.bin/latest")),
        xxh(&v("b", 3))
    );

    // 0: only what a kept snapshot holds or a live file is stays; the
    // deleted b.bin loses its whole history.
    set_policy(&m, "keep-last = 1\nfile-versions-keep = 0\n");
    let report = run_gc(&m);
    assert_eq!(gc_count(&report, "versions_expired"), 4, "{report}");
    assert_eq!(versions(&m, "a.bin"), hashes("a", 5..=5));
    let listed = super::names(&ctl(&m, "versions"));
    assert!(
        !listed.contains("b.bin"),
        "versions/ still lists b.bin: {listed:?}"
    );
    assert!(listed.contains("a.bin"));

    // Saved again right away, b.bin has a history again at once.
    write_file(&m.path("b.bin"), &v("b", 9));
    let latest = ctl(&m, "versions/b.bin/latest");
    let got = fs::metadata(&latest).map(|_| hash_file(&latest));
    assert_eq!(
        got.ok(),
        Some(xxh(&v("b", 9))),
        "{} right after b.bin was saved again",
        latest.display()
    );
    assert_eq!(versions(&m, "b.bin"), vec![xxh(&v("b", 9))]);
    m.remount();
    assert_eq!(versions(&m, "a.bin"), hashes("a", 5..=5));
    assert_eq!(versions(&m, "b.bin"), vec![xxh(&v("b", 9))]);
    assert_eq!(hash_file(&ctl(&m, "snapshots/s1/a.bin")), xxh(&v("a", 5)));
}

#[test]
fn gc_interval_runs_gc_by_itself() {
    let m = Mount::with_args("ret-gc-timer", &["--gc-interval", "2s"]);
    for i in 1..=3 {
        write_file(&m.path("w.bin"), &noise(200_000, 0x7100 + i));
        snapshot(&m, &format!("s{i}"));
    }
    set_policy(&m, "keep-last = 1\n");
    let t = Instant::now();
    // The snapshots go first; the report is shown once the run is over.
    wait_for("the GC timer to expire s1 and s2 and report", 30, || {
        (snapshot_names(&m) == set(&["s3"]) && last_gc(&m)["at"].is_string()).then_some(())
    });
    let report = last_gc(&m);
    eprintln!(
        "gc timer (2s): expired s1, s2 after {:.1?}: {report}",
        t.elapsed()
    );
    assert!(
        report["at"].is_string(),
        "retention/gc shows no run: {report}"
    );
    assert!(
        m.log().contains("gc: "),
        "no GC in the daemon log:\n{}",
        m.log()
    );
    // It keeps running.
    write_file(&m.path("w.bin"), &noise(200_000, 0x7104));
    snapshot(&m, "s4");
    wait_for("the GC timer to expire s3", 30, || {
        (snapshot_names(&m) == set(&["s4"])).then_some(())
    });
    assert_eq!(
        hash_file(&ctl(&m, "snapshots/s4/w.bin")),
        xxh(&noise(200_000, 0x7104))
    );
}

#[test]
fn gc_interval_0_turns_the_timer_off_and_the_policy_gc_interval_wins() {
    let m = Mount::with_args("ret-gc-timer-off", &["--gc-interval", "0"]);
    for i in 1..=3 {
        write_file(&m.path("w.bin"), &noise(100_000, 0x7200 + i));
        snapshot(&m, &format!("s{i}"));
    }
    set_policy(&m, "keep-last = 1\n");
    std::thread::sleep(std::time::Duration::from_millis(3500));
    assert_eq!(
        snapshot_names(&m),
        set(&["s1", "s2", "s3"]),
        "GC ran with --gc-interval 0"
    );
    let report = last_gc(&m);
    assert!(
        report["last_gc"].is_null() && report.get("at").is_none(),
        "{report}"
    );
    append_policy(&m, "gc-interval = 1s");
    let t = Instant::now();
    wait_for("the policy's gc-interval to run GC", 20, || {
        (snapshot_names(&m) == set(&["s3"]) && last_gc(&m)["at"].is_string()).then_some(())
    });
    eprintln!("policy gc-interval = 1s: GC ran after {:.1?}", t.elapsed());
    assert!(last_gc(&m)["at"].is_string());
}

#[test]
fn a_read_only_mount_refuses_gc_and_policy_writes_with_erofs() {
    let mut src = Mount::new("ret-gc-ro-src");
    for i in 1..=3 {
        write_file(&src.path("w.bin"), &noise(100_000, 0x7300 + i));
        snapshot(&src, &format!("s{i}"));
    }
    set_policy(&src, "keep-last = 1\n");
    let status = src.stop();
    assert!(status.success(), "{status}");
    let store = src.store.clone();
    let ro = Mount::with_store("ret-gc-ro", &store, &["--read-only"]);
    let gc = ctl(&ro, "retention/gc");
    let policy = ctl(&ro, "retention/policy");
    let open_w = |p: &std::path::Path, trunc: bool| {
        OpenOptions::new()
            .write(true)
            .truncate(trunc)
            .append(!trunc)
            .open(p)
            .and_then(|mut f| f.write_all(b"run\n"))
    };
    expect_errno(open_w(&gc, true), Errno::EROFS, "echo run > gc");
    expect_errno(open_w(&policy, true), Errno::EROFS, "> policy");
    expect_errno(open_w(&policy, false), Errno::EROFS, ">> policy");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("echo run > {}", q(&gc)))
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "`echo run > gc` succeeded on a read-only mount"
    );
    expect_errno(
        fs::create_dir(ctl(&ro, "snapshots/s4")),
        Errno::EROFS,
        "mkdir of a snapshot",
    );
    // Reading works, and nothing was collected.
    assert_eq!(policy_text(&ro), "keep-last = 1\n");
    let report = last_gc(&ro);
    assert!(report.get("at").is_none(), "{report}");
    assert_eq!(snapshot_names(&ro), set(&["s1", "s2", "s3"]));
    assert_eq!(listing(&ro, "expiring"), set(&["s1", "s2"]));
    for i in 1..=3 {
        let p = ctl(&ro, &format!("snapshots/s{i}/w.bin"));
        assert_eq!(hash_file(&p), xxh(&noise(100_000, 0x7300 + i)));
    }
    drop(ro);
}
