//! Automatic snapshots (`auto-NNNNNN-YYYYMMDDTHHMMSSZ`), taken by a worker
//! thread shortly after a trigger, so every check polls with a deadline:
//! HF and Orbax directory renames, DCP's `.metadata` rename (four shards
//! written concurrently; one still open in a separate writer process, see
//! `Writer`), the `latest`, `checkpoint` and
//! `commit_success.txt` markers, `--snapshot-on-close` globs, the
//! `--no-snapshot-on-rename`/`--no-snapshot-on-marker` switches, staging
//! names, and `--snapshot-quiet`.
//!
//! That something did *not* trigger is shown with a barrier: the mount
//! also snapshots when a file named `barrier` is closed; the next snapshot
//! must then be that one alone (its `user.ckpt.trigger` names only the
//! barrier), since the worker takes requests in order and folds queued
//! ones into one snapshot.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime};

use super::{
    assert_stamp_within, auto_snapshots, getx_str, names, parse_auto, readlink, rfc3339_unix, sdir,
    set, unix, wait_autos, walk, Writer,
};
use crate::common::{hash_file, noise, Mount};

fn trigger(m: &Mount, snap: &str) -> String {
    getx_str(&sdir(m, snap), "user.ckpt.trigger")
}

/// Closes the barrier file and waits for its snapshot, which must be the
/// only one since `autos_before` and triggered by the barrier alone.
#[track_caller]
fn barrier(m: &Mount, autos_before: usize, what: &str) -> String {
    fs::write(m.path("barrier"), format!("{autos_before}\n")).unwrap();
    let autos = wait_autos(m, autos_before + 1, &format!("the barrier after {what}"));
    let last = autos[autos.len() - 1].clone();
    let t = trigger(m, &last);
    assert!(
        t.contains("barrier") && !t.contains(';'),
        "{what} triggered a snapshot: {last} has trigger `{t}`"
    );
    last
}

fn write(m: &Mount, rel: &str, data: &[u8]) {
    if let Some((dir, _)) = rel.rsplit_once('/') {
        fs::create_dir_all(m.path(dir)).unwrap();
    }
    fs::write(m.path(rel), data).unwrap();
}

#[test]
fn hf_checkpoint_rename_takes_a_snapshot_of_the_final_directory() {
    let m = Mount::with_args("hist-auto-hf", &["--snapshot-on-close", "barrier"]);
    let before = SystemTime::now();
    let files: [(&str, Vec<u8>); 3] = [
        ("model.safetensors", noise(1 << 20, 1)),
        ("optimizer.pt", noise(300_000, 2)),
        ("trainer_state.json", br#"{"global_step": 100}"#.to_vec()),
    ];
    for (name, data) in &files {
        write(&m, &format!("out/tmp-checkpoint-100/{name}"), data);
    }
    barrier(&m, 0, "writing into tmp-checkpoint-100");
    fs::rename(
        m.path("out/tmp-checkpoint-100"),
        m.path("out/checkpoint-100"),
    )
    .unwrap();
    let autos = wait_autos(&m, 2, "rename tmp-checkpoint-100 -> checkpoint-100");
    let after = SystemTime::now();
    let snap = &autos[1];
    let (_, stamp) = parse_auto(snap).unwrap();
    assert_stamp_within(&stamp, before, after, snap);
    assert!(
        trigger(&m, snap).contains("checkpoint-100"),
        "{}",
        trigger(&m, snap)
    );
    assert_eq!(
        names(&sdir(&m, &format!("{snap}/out"))),
        set(&["checkpoint-100"])
    );
    for (name, data) in &files {
        let p = sdir(&m, &format!("{snap}/out/checkpoint-100/{name}"));
        assert!(fs::read(&p).unwrap() == *data, "{}", p.display());
    }
    assert_eq!(
        getx_str(&sdir(&m, snap), "user.ckpt.files"),
        "4",
        "three files and the barrier"
    );

    // The next save: a second snapshot holding both checkpoints.
    for (name, data) in &files {
        write(&m, &format!("out/tmp-checkpoint-200/{name}"), data);
    }
    fs::rename(
        m.path("out/tmp-checkpoint-200"),
        m.path("out/checkpoint-200"),
    )
    .unwrap();
    let autos = wait_autos(&m, 3, "rename tmp-checkpoint-200 -> checkpoint-200");
    assert_eq!(
        names(&sdir(&m, &format!("{}/out", autos[2]))),
        set(&["checkpoint-100", "checkpoint-200"])
    );
    assert_eq!(readlink(&sdir(&m, "latest")), autos[2]);
    let seqs: Vec<u64> = autos.iter().map(|a| parse_auto(a).unwrap().0).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "sequence numbers rise: {autos:?}"
    );
}

#[test]
fn orbax_rename_and_commit_success_take_snapshots() {
    let m = Mount::new("hist-auto-orbax");
    write(
        &m,
        "ckpt/100.orbax-checkpoint-tmp-1700000000/state/array.bin",
        &noise(500_000, 3),
    );
    write(
        &m,
        "ckpt/100.orbax-checkpoint-tmp-1700000000/_METADATA",
        b"{}",
    );
    fs::rename(
        m.path("ckpt/100.orbax-checkpoint-tmp-1700000000"),
        m.path("ckpt/100"),
    )
    .unwrap();
    let autos = wait_autos(&m, 1, "orbax rename");
    let s = sdir(&m, &autos[0]);
    assert_eq!(names(&s.join("ckpt")), set(&["100"]));
    assert_eq!(
        fs::read(s.join("ckpt/100/state/array.bin")).unwrap(),
        noise(500_000, 3)
    );

    write(&m, "ckpt/200/state/array.bin", &noise(500_000, 4));
    write(
        &m,
        "ckpt/200/commit_success.txt",
        b"Checkpoint commit was successful.",
    );
    let autos = wait_autos(&m, 2, "orbax commit_success.txt");
    let s = sdir(&m, &autos[1]);
    assert_eq!(
        fs::read(s.join("ckpt/200/state/array.bin")).unwrap(),
        noise(500_000, 4)
    );
    assert!(s.join("ckpt/200/commit_success.txt").is_file());
}

/// Four ranks write their shards at once, each in 256 KiB pieces.
fn write_shards(m: &Mount, dir: &str, shards: &[Vec<u8>]) {
    let start = Arc::new(Barrier::new(shards.len()));
    let threads: Vec<_> = shards
        .iter()
        .enumerate()
        .map(|(i, data)| {
            let (path, data, start) = (
                m.path(&format!("{dir}/__{i}_0.distcp")),
                data.clone(),
                start.clone(),
            );
            std::thread::spawn(move || {
                let mut w = File::create(path).unwrap();
                start.wait();
                for piece in data.chunks(256 << 10) {
                    w.write_all(piece).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn dcp_save_with_four_concurrent_writers_is_snapshot_whole() {
    let m = Mount::with_args("hist-auto-dcp", &["--snapshot-on-close", "barrier"]);
    fs::create_dir(m.path("step_10")).unwrap();
    let shards: Vec<Vec<u8>> = (0..4)
        .map(|i| noise((4 << 20) + i * 1000, 40 + i as u64))
        .collect();
    write_shards(&m, "step_10", &shards);
    barrier(&m, 0, "closing the shards");
    fs::write(m.path("step_10/.metadata.tmp"), b"dcp metadata v1").unwrap();
    fs::rename(m.path("step_10/.metadata.tmp"), m.path("step_10/.metadata")).unwrap();
    let autos = wait_autos(&m, 2, ".metadata.tmp -> .metadata");
    let s = sdir(&m, &format!("{}/step_10", autos[1]));
    assert!(
        trigger(&m, &autos[1]).contains(".metadata"),
        "{}",
        trigger(&m, &autos[1])
    );
    assert_eq!(
        names(&s),
        set(&[
            ".metadata",
            "__0_0.distcp",
            "__1_0.distcp",
            "__2_0.distcp",
            "__3_0.distcp"
        ])
    );
    for (i, data) in shards.iter().enumerate() {
        let got = fs::read(s.join(format!("__{i}_0.distcp"))).unwrap();
        assert!(
            got == *data,
            "shard {i} in the snapshot: {} bytes, want {}",
            got.len(),
            data.len()
        );
    }
    assert_eq!(fs::read(s.join(".metadata")).unwrap(), b"dcp metadata v1");
}

#[test]
fn dcp_snapshot_waits_for_a_shard_still_being_written() {
    let m = Mount::new("hist-auto-dcp-slow");
    fs::create_dir(m.path("step_20")).unwrap();
    let shards: Vec<Vec<u8>> = (0..3).map(|i| noise(1 << 20, 50 + i)).collect();
    write_shards(&m, "step_20", &shards);
    let last = noise(2 << 20, 53);
    let mut w = Writer::open(&m, &m.path("step_20/__3_0.distcp"), true);
    w.write_at(0, &last[..1 << 20]);
    fs::write(m.path("step_20/.metadata.tmp"), b"meta").unwrap();
    fs::rename(m.path("step_20/.metadata.tmp"), m.path("step_20/.metadata")).unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        auto_snapshots(&m).is_empty(),
        "a snapshot was taken while a shard was being written"
    );
    w.write_at(1 << 20, &last[1 << 20..]);
    w.close();
    let autos = wait_autos(&m, 1, ".metadata rename with a shard open");
    let s = sdir(&m, &format!("{}/step_20", autos[0]));
    for (i, data) in shards.iter().chain([&last]).enumerate() {
        let got = fs::read(s.join(format!("__{i}_0.distcp"))).unwrap();
        assert!(
            got == *data,
            "shard {i} in the snapshot: {} bytes, want {}",
            got.len(),
            data.len()
        );
    }
}

#[test]
fn marker_files_take_snapshots_when_written() {
    let m = Mount::with_args("hist-auto-markers", &["--snapshot-on-close", "barrier"]);
    // DeepSpeed: the step directory, then `latest` naming it.
    write(
        &m,
        "ds/global_step10/mp_rank_00_model_states.pt",
        &noise(400_000, 5),
    );
    write(&m, "ds/latest", b"global_step10");
    let autos = wait_autos(&m, 1, "DeepSpeed latest");
    assert!(trigger(&m, &autos[0]).contains("latest"));
    let s = sdir(&m, &autos[0]);
    assert_eq!(fs::read(s.join("ds/latest")).unwrap(), b"global_step10");
    assert_eq!(
        hash_file(&s.join("ds/global_step10/mp_rank_00_model_states.pt")),
        hash_file(&m.path("ds/global_step10/mp_rank_00_model_states.pt"))
    );
    // TensorFlow: `checkpoint` after the data and index files.
    write(&m, "tf/ckpt-1.data-00000-of-00001", &noise(100_000, 6));
    write(&m, "tf/ckpt-1.index", b"index");
    write(&m, "tf/checkpoint", b"model_checkpoint_path: \"ckpt-1\"\n");
    let autos = wait_autos(&m, 2, "TensorFlow checkpoint");
    assert!(sdir(&m, &format!("{}/tf/ckpt-1.index", autos[1])).is_file());
    // Orbax's marker at any depth.
    write(&m, "orbax/7/default/data", b"d");
    write(&m, "orbax/7/commit_success.txt", b"ok");
    let autos = wait_autos(&m, 3, "commit_success.txt");
    assert!(sdir(&m, &format!("{}/orbax/7/commit_success.txt", autos[2])).is_file());

    // Not written: read, or opened for writing and closed untouched.
    let mut text = String::new();
    File::open(m.path("ds/latest"))
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    drop(
        OpenOptions::new()
            .write(true)
            .open(m.path("tf/checkpoint"))
            .unwrap(),
    );
    // Other names.
    for rel in [
        "latest.tmp",
        "checkpoint.tmp",
        "commit_success.txt.tmp",
        "latest_model.pt",
        "my-checkpoint",
        "ckpts/checkpoint.json",
        "Latest",
    ] {
        write(&m, rel, b"x");
    }
    barrier(&m, 3, "reading markers and writing other names");
}

#[test]
fn snapshot_on_close_globs_match_names_at_any_depth_and_paths_from_the_root() {
    let m = Mount::with_args(
        "hist-auto-glob",
        &[
            "--snapshot-on-close",
            "*.safetensors",
            "--snapshot-on-close",
            "runs/*/final.pt",
            "--snapshot-on-close",
            "weights*",
            "--snapshot-on-close",
            "barrier",
        ],
    );
    let positives = [
        "a/b/model.safetensors",
        "runs/x/final.pt",
        "weights.bin",
        "model.safetensors",
    ];
    for (i, rel) in positives.iter().enumerate() {
        write(&m, rel, rel.as_bytes());
        let autos = wait_autos(&m, i + 1, rel);
        let t = trigger(&m, &autos[i]);
        assert!(t.contains(rel), "snapshot for {rel} has trigger `{t}`");
        assert_eq!(
            fs::read(sdir(&m, &format!("{}/{rel}", autos[i]))).unwrap(),
            rel.as_bytes()
        );
    }
    // `*` does not cross `/`, path globs are anchored at the root, and
    // staging names never match.
    let negatives = [
        "runs/x/y/final.pt",
        "final.pt",
        "other/runs/x/final.pt",
        "model.safetensors.tmp",
        "a/b/model.safetensors.bak",
        "weights.tmp",
        "weights-dir/x",
        "notes.txt",
    ];
    for rel in negatives {
        write(&m, rel, b"x");
    }
    let _ = fs::read(m.path("model.safetensors")).unwrap();
    barrier(&m, positives.len(), "files no glob matches");
}

#[test]
fn no_snapshot_on_rename_turns_rename_triggers_off() {
    let m = Mount::with_args(
        "hist-auto-no-rename",
        &["--no-snapshot-on-rename", "--snapshot-on-close", "barrier"],
    );
    write(&m, "out/tmp-checkpoint-1/model.bin", b"m");
    fs::rename(m.path("out/tmp-checkpoint-1"), m.path("out/checkpoint-1")).unwrap();
    write(&m, "o/1.orbax-checkpoint-tmp-9/x", b"x");
    fs::rename(m.path("o/1.orbax-checkpoint-tmp-9"), m.path("o/1")).unwrap();
    write(&m, "dcp/.metadata.tmp", b"meta");
    fs::rename(m.path("dcp/.metadata.tmp"), m.path("dcp/.metadata")).unwrap();
    barrier(&m, 0, "renames with --no-snapshot-on-rename");
    // Markers still work.
    write(&m, "ds/latest", b"global_step1");
    let autos = wait_autos(&m, 2, "latest with --no-snapshot-on-rename");
    assert!(trigger(&m, &autos[1]).contains("latest"));
}

#[test]
fn no_snapshot_on_marker_turns_marker_triggers_off() {
    let m = Mount::with_args(
        "hist-auto-no-marker",
        &["--no-snapshot-on-marker", "--snapshot-on-close", "barrier"],
    );
    write(&m, "ds/latest", b"global_step1");
    write(&m, "tf/checkpoint", b"ckpt");
    write(&m, "orbax/1/commit_success.txt", b"ok");
    barrier(&m, 0, "markers with --no-snapshot-on-marker");
    // Renames still work.
    write(&m, "out/tmp-checkpoint-1/model.bin", b"m");
    fs::rename(m.path("out/tmp-checkpoint-1"), m.path("out/checkpoint-1")).unwrap();
    let autos = wait_autos(&m, 2, "HF rename with --no-snapshot-on-marker");
    assert!(trigger(&m, &autos[1]).contains("checkpoint-1"));
}

#[test]
fn staging_names_never_trigger() {
    let m = Mount::with_args(
        "hist-auto-staging",
        &[
            "--snapshot-on-close",
            "ckpt*",
            "--snapshot-on-close",
            "*.tmp",
            "--snapshot-on-close",
            "barrier",
        ],
    );
    // Closes of staging names, even where a glob or a marker name matches.
    for rel in [
        "ckpt.tmp",
        "model.tmp",
        "latest.tmp",
        "checkpoint.tmp",
        "commit_success.txt.tmp",
        "d/.metadata.tmp",
        "ckpt.orbax-checkpoint-tmp-1",
        "tmp-checkpoint-9",
        "w.tmp",
    ] {
        write(&m, rel, b"x");
    }
    // Renames from staging names to staging names.
    write(&m, "tmp-checkpoint-1/w.bin", b"w");
    fs::rename(m.path("tmp-checkpoint-1"), m.path("tmp-checkpoint-2")).unwrap();
    write(&m, "s.orbax-checkpoint-tmp-5/w.bin", b"w");
    fs::rename(
        m.path("s.orbax-checkpoint-tmp-5"),
        m.path("tmp-checkpoint-3"),
    )
    .unwrap();
    write(&m, "tmp-checkpoint-4/w.bin", b"w");
    fs::rename(m.path("tmp-checkpoint-4"), m.path("ckpt-4.tmp")).unwrap();
    // Renames that do not leave a staging name, or not the DCP one.
    write(&m, "plain-a/w.bin", b"w");
    fs::rename(m.path("plain-a"), m.path("plain-b")).unwrap();
    fs::rename(m.path("w.tmp"), m.path("w.bin")).unwrap();
    fs::rename(m.path("d/.metadata.tmp"), m.path("d/.metadata.old")).unwrap();
    barrier(&m, 0, "staging names");
    // The same mount does snapshot the real names.
    write(&m, "ckpt.bin", b"x");
    let autos = wait_autos(&m, 2, "ckpt.bin");
    assert!(trigger(&m, &autos[1]).contains("ckpt.bin"));
    fs::rename(m.path("tmp-checkpoint-2"), m.path("checkpoint-2")).unwrap();
    let autos = wait_autos(&m, 3, "tmp-checkpoint-2 -> checkpoint-2");
    assert!(trigger(&m, &autos[2]).contains("checkpoint-2"));
    assert!(!walk(&sdir(&m, &autos[2])).contains_key("tmp-checkpoint-2"));
}

#[test]
fn quiet_period_takes_one_snapshot_once_writes_stop() {
    let m = Mount::with_args("hist-auto-quiet", &["--snapshot-quiet", "2"]);
    let log = m.path("log.txt");
    let append = |line: &str| {
        let mut w = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        w.write_all(line.as_bytes()).unwrap();
    };
    // Writes every 250 ms for 4 s: never quiet for 2 s.
    let start = Instant::now();
    let mut i = 0;
    let mut last_write = SystemTime::now();
    while start.elapsed() < Duration::from_secs(4) {
        append(&format!("line {i}\n"));
        last_write = SystemTime::now();
        i += 1;
        assert!(
            auto_snapshots(&m).is_empty(),
            "a quiet snapshot while writing every 250 ms"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let autos = wait_autos(&m, 1, "the quiet period after the last write");
    let created = rfc3339_unix(&getx_str(&sdir(&m, &autos[0]), "user.ckpt.created"));
    let quiet = created - unix(last_write);
    eprintln!("quiet snapshot {:.2} s after the last write", quiet);
    assert!(
        quiet >= 1.9,
        "the quiet snapshot came {quiet:.2} s after the last write"
    );
    let content = fs::read(&log).unwrap();
    assert_eq!(
        fs::read(sdir(&m, &format!("{}/log.txt", autos[0]))).unwrap(),
        content
    );
    assert!(trigger(&m, &autos[0]).contains("quiet"));

    // Nothing changes: no second snapshot (2.5 quiet periods).
    std::thread::sleep(Duration::from_millis(5000));
    assert_eq!(
        auto_snapshots(&m).len(),
        1,
        "a snapshot although nothing changed"
    );

    // A file open with unsaved writes is still being written.
    let mut w = Writer::open(&m, &log, false);
    w.write_at(content.len() as u64, b"held open\n");
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(
        auto_snapshots(&m).len(),
        1,
        "a quiet snapshot while a file had unsaved writes"
    );
    w.close();
    let autos = wait_autos(&m, 2, "the quiet period after the close");
    let got = fs::read(sdir(&m, &format!("{}/log.txt", autos[1]))).unwrap();
    assert!(
        got.ends_with(b"held open\n") && got.len() == content.len() + 10,
        "second quiet snapshot content"
    );
}
