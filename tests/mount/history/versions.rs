//! `.ckpt/versions/<path>/`: one version file per commit (close or fsync)
//! named `NNNNNN-YYYYMMDDTHHMMSSZ` with that version's size, mode, owner and
//! mtime, a `latest` link, exact bytes through cat, cp and mmap, history
//! kept for deleted and renamed files, the atomic-save pattern, HF
//! Trainer's directory rename, remount and SIGKILL, and a file with 1,000
//! versions.

use std::fs::{self, File};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use super::{
    assert_stamp_within, compact_utc, expect_errno, mtime_of, names, parse_version, put, readlink,
    set, vdir, versions, Writer,
};
use crate::common::{hash_file, noise, python, run_python, sh, Mount};

/// The content of every version of `dir`, oldest first.
fn contents(dir: &Path) -> Vec<Vec<u8>> {
    versions(dir)
        .iter()
        .map(|v| fs::read(dir.join(v)).unwrap_or_else(|e| panic!("read {v}: {e}")))
        .collect()
}

/// Asserts that `dir` holds exactly `want` as its versions and that
/// `latest` names the newest.
#[track_caller]
fn assert_versions(dir: &Path, want: &[&[u8]]) {
    let got = contents(dir);
    assert_eq!(
        got.len(),
        want.len(),
        "{}: number of versions",
        dir.display()
    );
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g == w,
            "{}: version {} has other bytes ({} vs {} bytes)",
            dir.display(),
            i + 1,
            g.len(),
            w.len()
        );
    }
    let vs = versions(dir);
    assert_eq!(
        readlink(&dir.join("latest")),
        vs[vs.len() - 1],
        "{}: latest",
        dir.display()
    );
}

/// `.ckpt/stats`.
fn stats(m: &Mount) -> serde_json::Value {
    serde_json::from_slice(&fs::read(m.path(".ckpt/stats")).unwrap()).expect("stats is JSON")
}

#[test]
fn versions_are_named_by_seq_and_commit_time_and_keep_size_mode_owner_mtime() {
    let m = Mount::new("hist-ver-naming");
    let before = SystemTime::now();
    let f = m.path("model.pt");

    // The writes run in a separate process (see `Writer`), so that each
    // close commits exactly the version the test means.
    // v1: created 0600.
    let mut w = Writer::open_mode(&m, &f, true, 0o600);
    w.write_at(0, &noise(1000, 1));
    w.close();
    let live1 = fs::metadata(&f).unwrap();
    // v2: chmod, chown, another size.
    fs::set_permissions(&f, fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&f, Some(1234), Some(5678)).unwrap();
    put(&m, &f, &noise(2500, 2));
    let live2 = fs::metadata(&f).unwrap();
    // v3: fsync commits without a close; v4: the close after more writes.
    let mut w = Writer::open(&m, &f, false);
    w.write_at(0, b"fsynced");
    w.cmd("s");
    let dir = vdir(&m, "model.pt");
    assert_eq!(
        versions(&dir).len(),
        3,
        "fsync commits a version while the file is open"
    );
    let live3 = fs::metadata(&f).unwrap();
    w.write_at(3000, b"closed");
    w.close();
    let live4 = fs::metadata(&f).unwrap();
    let after = SystemTime::now();

    let vs = versions(&dir);
    assert_eq!(vs.len(), 4, "{vs:?}");
    assert_eq!(
        names(&dir),
        vs.iter()
            .map(String::as_str)
            .chain(["latest"])
            .map(String::from)
            .collect()
    );
    for (i, (v, live)) in vs.iter().zip([&live1, &live2, &live3, &live4]).enumerate() {
        let (seq, stamp) = parse_version(v).unwrap();
        assert_eq!(seq, i as u64 + 1);
        assert_stamp_within(&stamp, before, after, v);
        let md = fs::metadata(dir.join(v)).unwrap();
        assert!(md.is_file(), "{v} is a regular file");
        assert_eq!(md.len(), live.len(), "{v}: size");
        assert_eq!(md.mode() & 0o7777, live.mode() & 0o7777, "{v}: mode");
        assert_eq!((md.uid(), md.gid()), (live.uid(), live.gid()), "{v}: owner");
        assert_eq!(
            (md.mtime(), md.mtime_nsec()),
            (live.mtime(), live.mtime_nsec()),
            "{v}: mtime"
        );
        // The commit time in the name is the version's ctime.
        let ctime = SystemTime::UNIX_EPOCH + Duration::from_secs(md.ctime() as u64);
        assert_eq!(compact_utc(ctime), stamp, "{v}: name vs ctime");
    }
    let md1 = fs::metadata(dir.join(&vs[0])).unwrap();
    assert_eq!(
        (md1.len(), md1.mode() & 0o7777, md1.uid()),
        (1000, 0o600, 0)
    );
    let md2 = fs::metadata(dir.join(&vs[1])).unwrap();
    assert_eq!(
        (md2.len(), md2.mode() & 0o7777, md2.uid(), md2.gid()),
        (2500, 0o640, 1234, 5678)
    );
    assert_eq!(fs::metadata(dir.join(&vs[3])).unwrap().len(), 3006);

    // latest is a symlink to the newest; following it reads that version.
    let latest = dir.join("latest");
    assert!(fs::symlink_metadata(&latest)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(readlink(&latest), vs[3]);
    assert_eq!(fs::read(&latest).unwrap(), fs::read(&f).unwrap());
    let mut want3 = noise(2500, 2);
    want3[..7].copy_from_slice(b"fsynced");
    assert_eq!(fs::read(dir.join(&vs[2])).unwrap(), want3);
    assert_eq!(fs::read(dir.join(&vs[0])).unwrap(), noise(1000, 1));

    // A version that never existed, and a mangled name of one that does.
    expect_errno(
        fs::metadata(dir.join(format!("000005-{}", &vs[0][7..]))),
        libc::ENOENT,
        "seq 5",
    );
    expect_errno(
        fs::metadata(dir.join(format!("000001-{}", compact_utc(SystemTime::UNIX_EPOCH)))),
        libc::ENOENT,
        "wrong time",
    );
    // Reading does not add versions; stat and reads of the live file neither.
    let _ = fs::read(&f).unwrap();
    let _ = File::open(&f).unwrap();
    assert_eq!(versions(&dir).len(), 4);
    // The mtime a later touch sets is the live file's, not the versions'.
    super::set_times(&f, (1_500_000_000, 0), false).unwrap();
    assert_eq!(
        mtime_of(&dir.join(&vs[3])),
        (live4.mtime(), live4.mtime_nsec())
    );
}

#[test]
fn versions_read_back_exactly_through_cat_cp_and_mmap() {
    let m = Mount::new("hist-ver-bytes");
    let f = m.path("w.bin");
    let v1 = noise(3 * 1024 * 1024 + 17, 1);
    put(&m, &f, &v1);
    // v2: 100 KiB rewritten in place in the middle.
    let mut v2 = v1.clone();
    let patch = noise(100 * 1024, 2);
    v2[1 << 20..(1 << 20) + patch.len()].copy_from_slice(&patch);
    let mut w = Writer::open(&m, &f, false);
    w.write_at(1 << 20, &patch);
    w.close();
    // v3: cut to 1 MiB and appended to.
    let tail = noise(500_000, 3);
    let mut v3 = v2[..1 << 20].to_vec();
    v3.extend_from_slice(&tail);
    let mut w = Writer::open(&m, &f, false);
    w.cmd(&format!("t {}", 1 << 20));
    w.write_at(1 << 20, &tail);
    w.close();
    // v4: a small rewrite of the whole file.
    let v4 = b"tiny".to_vec();
    put(&m, &f, &v4);

    let dir = vdir(&m, "w.bin");
    let vs = versions(&dir);
    assert_eq!(vs.len(), 4, "{vs:?}");
    let want = [&v1, &v2, &v3, &v4];
    let out = m.root.join("out");
    fs::create_dir(&out).unwrap();
    for (i, (v, w)) in vs.iter().zip(want).enumerate() {
        let p = dir.join(v);
        let expected = out.join(format!("want{i}"));
        fs::write(&expected, w).unwrap();
        assert!(fs::read(&p).unwrap() == *w, "{v}: read");
        let cat = Command::new("cat").arg(&p).output().unwrap();
        assert!(cat.status.success());
        assert!(
            cat.stdout == *w,
            "{v}: cat gives other bytes ({} vs {})",
            cat.stdout.len(),
            w.len()
        );
        let copy = out.join(format!("cp{i}"));
        sh(&format!("cp '{}' '{}'", p.display(), copy.display()));
        assert_eq!(hash_file(&copy), hash_file(&expected), "{v}: cp");
        // Random reads at odd offsets.
        let r = File::open(&p).unwrap();
        for off in [0usize, 1, 4095, 65_537, 1 << 20, w.len().saturating_sub(3)] {
            let off = off.min(w.len());
            let len = 9000.min(w.len() - off);
            let mut buf = vec![0u8; len];
            r.read_exact_at(&mut buf, off as u64).unwrap();
            assert!(buf == w[off..off + len], "{v}: pread at {off}");
        }
    }
    // mmap through python, each version against its expected bytes.
    let script = "import mmap, sys\n\
        for path, want in zip(sys.argv[1::2], sys.argv[2::2]):\n\
        \x20   with open(path, 'rb') as f, open(want, 'rb') as g:\n\
        \x20       exp = g.read()\n\
        \x20       mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)\n\
        \x20       got = mm[:]\n\
        \x20       mm.close()\n\
        \x20       assert got == exp, (path, len(got), len(exp))\n\
        print('mmap ok', len(sys.argv) // 2)\n";
    let mut args = Vec::new();
    for (i, v) in vs.iter().enumerate() {
        args.push(dir.join(v));
        args.push(out.join(format!("want{i}")));
    }
    assert_eq!(run_python(script, &args).trim(), "mmap ok 4");
    // latest reads the newest; the live file is unaffected by all this.
    assert_eq!(fs::read(dir.join("latest")).unwrap(), v4);
    assert_eq!(fs::read(&f).unwrap(), v4);
}

#[test]
fn deleted_and_renamed_files_keep_their_history() {
    let m = Mount::new("hist-ver-deleted-renamed");
    put(&m, &m.path("a.bin"), b"a one");
    put(&m, &m.path("a.bin"), b"a two");
    fs::remove_file(m.path("a.bin")).unwrap();
    assert!(
        names(&m.path(".ckpt/versions")).contains("a.bin"),
        "a deleted file's history is listed"
    );
    assert_versions(&vdir(&m, "a.bin"), &[b"a one", b"a two"]);
    // A new file at the same path continues its sequence.
    put(&m, &m.path("a.bin"), b"a three");
    assert_versions(&vdir(&m, "a.bin"), &[b"a one", b"a two", b"a three"]);
    assert!(versions(&vdir(&m, "a.bin"))[2].starts_with("000003-"));

    // A renamed file: a version at the destination, history at the source.
    put(&m, &m.path("b.bin"), b"b one");
    let b_mode = 0o604;
    fs::set_permissions(m.path("b.bin"), fs::Permissions::from_mode(b_mode)).unwrap();
    fs::rename(m.path("b.bin"), m.path("c.bin")).unwrap();
    assert_versions(&vdir(&m, "b.bin"), &[b"b one"]);
    assert_versions(&vdir(&m, "c.bin"), &[b"b one"]);
    let cv = vdir(&m, "c.bin").join(&versions(&vdir(&m, "c.bin"))[0]);
    assert_eq!(fs::metadata(&cv).unwrap().mode() & 0o7777, b_mode);
    put(&m, &m.path("c.bin"), b"c two");
    assert_versions(&vdir(&m, "c.bin"), &[b"b one", b"c two"]);
    assert_versions(&vdir(&m, "b.bin"), &[b"b one"]);

    // A renamed directory: every committed file under it, at any depth.
    fs::create_dir_all(m.path("dir/sub")).unwrap();
    put(&m, &m.path("dir/x"), b"x");
    put(&m, &m.path("dir/sub/y"), b"y");
    fs::rename(m.path("dir"), m.path("moved")).unwrap();
    assert_versions(&vdir(&m, "moved/x"), &[b"x"]);
    assert_versions(&vdir(&m, "moved/sub/y"), &[b"y"]);
    assert_versions(&vdir(&m, "dir/sub/y"), &[b"y"]);
    assert_eq!(names(&vdir(&m, "moved")), set(&["sub", "x"]));
    fs::remove_dir_all(m.path("moved")).unwrap();
    assert_versions(&vdir(&m, "moved/sub/y"), &[b"y"]);

    // A file renamed before its first commit: history only where it closed.
    let mut w = Writer::open(&m, &m.path("w.bin"), true);
    w.write_at(0, b"written while named w");
    w.cmd(&format!(
        "r {} {}",
        m.path("w.bin").display(),
        m.path("w2.bin").display()
    ));
    w.close();
    assert_versions(&vdir(&m, "w2.bin"), &[b"written while named w"]);
    expect_errno(
        fs::metadata(vdir(&m, "w.bin")),
        libc::ENOENT,
        "history of a name never committed",
    );
    assert_eq!(
        names(&m.path(".ckpt/versions")),
        set(&["a.bin", "b.bin", "c.bin", "dir", "moved", "w2.bin"])
    );
}

#[test]
fn the_atomic_save_pattern_gives_the_target_a_new_version_without_copying() {
    let m = Mount::new("hist-ver-atomic-save");
    let x = m.path("x.ckpt");
    let first = noise(8 << 20, 10);
    put(&m, &x, &first);
    let mut want: Vec<Vec<u8>> = vec![first];
    for round in 1..=3u64 {
        let data = noise(8 << 20, 10 + round);
        let tmp = m.path("x.ckpt.tmp");
        let mut w = Writer::open(&m, &tmp, true);
        w.write_at(0, &data);
        w.cmd("s");
        w.close();
        let before = stats(&m);
        fs::rename(&tmp, &x).unwrap();
        // `.ckpt/stats` is cached for a moment: wait until it counts the
        // rename's version, then compare what is stored.
        let after = super::wait_for("stats to count the rename", Duration::from_secs(10), || {
            let s = stats(&m);
            (s["versions"] != before["versions"]).then_some(s)
        });
        assert_eq!(
            after["versions"].as_u64(),
            before["versions"].as_u64().map(|v| v + 1),
            "round {round}: one version"
        );
        assert_eq!(
            after["logical_bytes"].as_u64(),
            before["logical_bytes"].as_u64().map(|v| v + (8 << 20)),
            "round {round}: logical bytes"
        );
        for key in ["chunks", "stored_bytes", "unique_bytes"] {
            assert_eq!(
                after[key], before[key],
                "round {round}: the rename stored data ({key})"
            );
        }
        want.push(data);
        let dir = vdir(&m, "x.ckpt");
        let vs = versions(&dir);
        assert_eq!(vs.len(), round as usize + 1, "round {round}: {vs:?}");
        assert_eq!(
            hash_file(&dir.join("latest")),
            hash_file(&x),
            "round {round}: latest is the new content"
        );
        assert_eq!(
            fs::metadata(dir.join(&vs[vs.len() - 1])).unwrap().len(),
            8 << 20
        );
    }
    let dir = vdir(&m, "x.ckpt");
    let got = contents(&dir);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(g == w, "version {} of x.ckpt has other bytes", i + 1);
    }
    // The staging name has its own history, one version per save.
    assert_eq!(versions(&vdir(&m, "x.ckpt.tmp")).len(), 3);
    assert!(
        fs::metadata(m.path("x.ckpt.tmp")).is_err(),
        "the staging file is gone from the live tree"
    );
}

#[test]
fn hf_trainer_directory_rename_records_versions_under_the_final_name() {
    let m = Mount::new("hist-ver-hf-rename");
    fs::create_dir(m.path("out")).unwrap();
    let files: [(&str, Vec<u8>); 4] = [
        ("model.safetensors", noise(1 << 20, 21)),
        ("optimizer.pt", noise(700_000, 22)),
        (
            "trainer_state.json",
            br#"{"global_step": 500, "best_metric": 0.5}"#.to_vec(),
        ),
        ("rng/rng_state_0.pth", noise(15_000, 23)),
    ];
    for step in [500, 1000] {
        let tmp = format!("out/tmp-checkpoint-{step}");
        fs::create_dir_all(m.path(&format!("{tmp}/rng"))).unwrap();
        for (name, data) in &files {
            put(&m, &m.path(&format!("{tmp}/{name}")), data);
        }
        fs::rename(m.path(&tmp), m.path(&format!("out/checkpoint-{step}"))).unwrap();
        for (name, data) in &files {
            assert_versions(&vdir(&m, &format!("out/checkpoint-{step}/{name}")), &[data]);
            assert_versions(&vdir(&m, &format!("{tmp}/{name}")), &[data]);
        }
        assert_eq!(
            names(&vdir(&m, &format!("out/checkpoint-{step}"))),
            set(&[
                "model.safetensors",
                "optimizer.pt",
                "trainer_state.json",
                "rng"
            ])
        );
    }
    // HF's rotation deletes old checkpoints; their versions stay.
    fs::remove_dir_all(m.path("out/checkpoint-500")).unwrap();
    assert_eq!(
        names(&vdir(&m, "out")),
        set(&[
            "checkpoint-500",
            "checkpoint-1000",
            "tmp-checkpoint-500",
            "tmp-checkpoint-1000"
        ])
    );
    let v = vdir(&m, "out/checkpoint-500/model.safetensors/latest");
    assert_eq!(
        hash_file(&v),
        hash_file(&m.path("out/checkpoint-1000/model.safetensors"))
    );
}

#[test]
fn versions_survive_a_remount_and_a_sigkill() {
    let mut m = Mount::new("hist-ver-remount");
    fs::create_dir(m.path("d")).unwrap();
    for i in 0..3u64 {
        put(&m, &m.path("d/f.bin"), &noise(200_000 + i as usize, 30 + i));
        put(&m, &m.path("g.txt"), format!("g {i}\n").as_bytes());
    }
    fs::remove_file(m.path("g.txt")).unwrap();
    // The history directories and `latest` links are virtual; their times
    // are not part of the history.
    let snapshot = |m: &Mount| {
        let mut all = super::walk(&m.path(".ckpt/versions"));
        for e in all.values_mut().filter(|e| e.kind != 'f') {
            e.mtime = (0, 0);
        }
        all
    };
    let before = snapshot(&m);
    assert_eq!(
        before.keys().filter(|k| k.ends_with('Z')).count(),
        6,
        "{:?}",
        before.keys()
    );
    m.remount();
    super::assert_same_tree(&snapshot(&m), &before, "versions after remount");
    // Committed by close, then SIGKILL: the version is there after restart.
    put(&m, &m.path("d/f.bin"), b"after remount");
    m.kill();
    m.start();
    let dir = vdir(&m, "d/f.bin");
    let vs = versions(&dir);
    assert_eq!(vs.len(), 4, "{vs:?}");
    assert_eq!(fs::read(dir.join(&vs[3])).unwrap(), b"after remount");
    assert_eq!(fs::read(dir.join(&vs[0])).unwrap(), noise(200_000, 30));
    assert_eq!(versions(&vdir(&m, "g.txt")).len(), 3);
}

#[test]
fn a_file_with_a_thousand_versions_lists_all_of_them() {
    let m = Mount::new("hist-ver-thousand");
    let f = m.path("step.txt");
    let started = Instant::now();
    // One process, open-write-close 1000 times (see `Writer` for why not
    // this one).
    let script = "import sys\nfor i in range(1, 1001):\n    with open(sys.argv[1], 'wb') as f:\n        f.write(b'version %d\\n' % i)\n";
    let st = Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(&f)
        .status()
        .unwrap();
    assert!(st.success());
    eprintln!("1000 versions written in {:?}", started.elapsed());
    let dir = vdir(&m, "step.txt");
    // Each close committed its version before it returned.
    let right_after = versions(&dir).len();
    if right_after != 1000 {
        std::thread::sleep(Duration::from_secs(2));
    }
    let vs = versions(&dir);
    let got: Vec<Vec<u8>> = vs.iter().map(|v| fs::read(dir.join(v)).unwrap()).collect();
    let missing: Vec<usize> = (1..=1000)
        .filter(|i| !got.contains(&format!("version {i}\n").into_bytes()))
        .collect();
    assert!(
        right_after == 1000 && missing.is_empty(),
        "1000 closes: {right_after} versions right after the last close, {} two seconds later; \
         contents never recorded: {missing:?}",
        vs.len()
    );
    for (i, g) in got.iter().enumerate() {
        assert_eq!(*g, format!("version {}\n", i + 1).into_bytes(), "{}", vs[i]);
    }

    let t = Instant::now();
    let out = sh(&format!("ls -l '{}'", dir.display()));
    let elapsed = t.elapsed();
    eprintln!("ls -l of a versions dir with 1000 versions: {elapsed:?}");
    let lines: Vec<&str> = out.lines().filter(|l| !l.starts_with("total")).collect();
    assert_eq!(lines.len(), 1001, "ls -l lines");
    assert_eq!(
        lines.iter().filter(|l| l.starts_with('-')).count(),
        1000,
        "version files"
    );
    let latest: Vec<&&str> = lines.iter().filter(|l| l.starts_with('l')).collect();
    assert_eq!(latest.len(), 1);
    assert!(latest[0].contains("latest -> 001000-"), "{}", latest[0]);
    assert_eq!(fs::read(dir.join("latest")).unwrap(), b"version 1000\n");
}
