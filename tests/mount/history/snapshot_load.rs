//! Snapshots under load: a tree of 10,000 files (the time `mkdir` takes,
//! what it costs the store, `ls -lR` of it), and the wait for files still
//! open for writing, bounded by `--snapshot-wait` (the writers are
//! separate processes, see `Writer`).

use std::fs;
use std::time::{Duration, Instant};

use super::{getx_str, sdir, vdir, Writer};
use crate::common::{du_bytes, hash_file, heavy, noise, sh, Mount};

#[test]
fn a_snapshot_of_ten_thousand_files_is_instant_and_stores_no_file_data() {
    let _heavy = heavy();
    let mut m = Mount::new("hist-snap-10k");
    const FILE: usize = 4096;
    let t = Instant::now();
    for d in 0..100 {
        fs::create_dir(m.path(&format!("d{d:02}"))).unwrap();
        for f in 0..100 {
            fs::write(
                m.path(&format!("d{d:02}/f{f:02}")),
                noise(FILE, (d * 100 + f) as u64),
            )
            .unwrap();
        }
    }
    eprintln!("10,000 files of {FILE} bytes written in {:?}", t.elapsed());
    let data = (10_000 * FILE) as u64;
    // Let the store settle (memtables flushed at close) before measuring.
    m.remount();
    let du0 = du_bytes(&m.store);
    let t = Instant::now();
    fs::create_dir(sdir(&m, "x")).unwrap();
    let took = t.elapsed();
    // Settled again: a live WAL file counts its preallocated blocks.
    m.remount();
    let grew = du_bytes(&m.store).saturating_sub(du0);
    eprintln!("mkdir .ckpt/snapshots/x over 10,000 files: {took:?}; store grew by {grew} bytes ({data} bytes of file data)");
    assert!(
        took < Duration::from_secs(5),
        "snapshot of 10,000 files took {took:?}"
    );
    assert!(
        grew < data / 4,
        "the snapshot stored {grew} bytes for {data} bytes of file data"
    );
    let x = sdir(&m, "x");
    assert_eq!(getx_str(&x, "user.ckpt.files"), "10000");
    assert_eq!(getx_str(&x, "user.ckpt.logical_bytes"), data.to_string());

    let t = Instant::now();
    let out = sh(&format!("ls -lR '{}'", x.display()));
    eprintln!("ls -lR of the 10,000-file snapshot: {:?}", t.elapsed());
    let files = out.lines().filter(|l| l.starts_with('-')).count();
    let dirs = out.lines().filter(|l| l.starts_with('d')).count();
    assert_eq!((files, dirs), (10_000, 100), "ls -lR counts");
    assert!(out
        .lines()
        .filter(|l| l.starts_with('-'))
        .all(|l| l.contains(&format!(" {FILE} "))));
    for i in (0..10_000).step_by(97) {
        let (d, f) = (i / 100, i % 100);
        let p = x.join(format!("d{d:02}/f{f:02}"));
        assert_eq!(
            fs::read(&p).unwrap(),
            noise(FILE, i as u64),
            "{}",
            p.display()
        );
    }
    // Changing the live tree afterwards does not touch it.
    fs::write(m.path("d00/f00"), b"changed").unwrap();
    assert_eq!(fs::read(x.join("d00/f00")).unwrap(), noise(FILE, 0));
}

#[test]
fn a_snapshot_waits_for_a_file_being_written_to_be_closed() {
    let m = Mount::new("hist-snap-waits");
    let path = m.path("f.bin");
    fs::write(&path, b"old content").unwrap();
    fs::write(m.path("other"), b"other").unwrap();
    let (part1, part2) = (noise(300_000, 1), noise(200_000, 2));
    let mut w = Writer::open(&m, &path, true);
    w.write_at(0, &part1);
    // The writer finishes 1 s from now while mkdir runs.
    let second = w.write_cmd(part1.len() as u64, &part2);
    w.send("sleep 1.0");
    w.send(&second);
    w.send("close");
    let t = Instant::now();
    fs::create_dir(sdir(&m, "w")).unwrap();
    let took = t.elapsed();
    w.wait_ok("sleep");
    w.wait_ok("w");
    w.wait_ok("close");
    w.wait_exit();
    eprintln!("mkdir waited {took:?} for the writer");
    assert!(
        took >= Duration::from_millis(500),
        "the snapshot did not wait for the writer ({took:?})"
    );
    let got = fs::read(sdir(&m, "w/f.bin")).unwrap();
    assert_eq!(
        got.len(),
        part1.len() + part2.len(),
        "the snapshot holds the final size"
    );
    assert!(
        got[..part1.len()] == part1[..] && got[part1.len()..] == part2[..],
        "the snapshot holds the final content"
    );
    assert_eq!(fs::read(sdir(&m, "w/other")).unwrap(), b"other");
}

#[test]
fn snapshot_wait_gives_up_on_a_writer_that_never_closes() {
    let m = Mount::with_args("hist-snap-wait-limit", &["--snapshot-wait", "1"]);
    let path = m.path("f.bin");
    fs::write(&path, b"committed").unwrap();
    let mut w = Writer::open(&m, &path, false);
    w.write_at(0, b"UNSAVED!!");
    let t = Instant::now();
    fs::create_dir(sdir(&m, "x")).unwrap();
    let took = t.elapsed();
    eprintln!("mkdir with --snapshot-wait 1 and a writer that does not close: {took:?}");
    assert!(
        took >= Duration::from_millis(900),
        "the snapshot did not wait ({took:?})"
    );
    assert!(
        took < Duration::from_secs(10),
        "the snapshot waited {took:?} with --snapshot-wait 1"
    );
    assert_eq!(
        fs::read(sdir(&m, "x/f.bin")).unwrap(),
        b"committed",
        "the last committed version"
    );
    assert_eq!(
        fs::read(&path).unwrap(),
        b"UNSAVED!!",
        "the live file shows the unsaved writes"
    );
    w.close();
    assert_eq!(
        fs::read(sdir(&m, "x/f.bin")).unwrap(),
        b"committed",
        "a later close does not change it"
    );
    assert_eq!(hash_file(&vdir(&m, "f.bin/latest")), hash_file(&path));
    assert_eq!(fs::read(&path).unwrap(), b"UNSAVED!!");
}
