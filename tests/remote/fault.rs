//! radosgw dies in the middle of a ~200 MiB push: the push is frozen
//! (SIGSTOP) once the first pack and its index are on the remote, radosgw
//! is SIGKILLed, and the push resumes against a dead endpoint. It must
//! fail within a minute with one line naming the remote; after radosgw
//! restarts, the remote lists no snapshot; the next push completes,
//! reusing the packs the first one finished, and restore is byte-exact.

use std::fs;
use std::time::{Duration, Instant};

use super::ceph::Ceph;
use crate::common::{hash_file, noise, Mount};
use crate::{
    args, assert_refused, command, num, ok, push_report, pushed, remote_snapshots, show, text,
};

/// Four files of 50 MiB.
const FILES: usize = 4;
const FILE: usize = 50 << 20;

/// Sends `sig` (a kill(1) name: STOP, CONT) to `pid`.
fn signal(pid: u32, sig: &str) -> bool {
    std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_push_cut_off_by_a_radosgw_crash_fails_naming_the_remote_and_the_next_push_completes_it() {
    let ceph = Ceph::start("remote-fault");
    ceph.mb("ckpt");
    let env = ceph.env();
    let url = "s3://ckpt/run";

    let mut m = Mount::new("remote-fault");
    let mut hashes = Vec::new();
    for i in 0..FILES {
        let data = noise(FILE, 0xfa17_0000 + i as u64);
        hashes.push(xxhash_rust::xxh3::xxh3_128(&data));
        fs::write(m.path(&format!("shard-{i}.bin")), &data).unwrap();
    }
    ok(args!["snapshot", m.mnt, "big"], &[]);
    let status = m.stop();
    assert!(
        status.success(),
        "daemon exited with {status}:\n{}",
        m.log()
    );
    ceph.add_remote(&m.store, url, "trainer");

    // The push, as a child with its output in files.
    let push_args = args!["push", m.store, "ceph", "--json"];
    let out_path = m.root.join("push.out");
    let err_path = m.root.join("push.err");
    let child = command(&push_args, &env)
        .stdout(fs::File::create(&out_path).unwrap())
        .stderr(fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("spawn ckptfs push");
    let pid = child.id();
    // A guard: the child is killed (and continued first) if the test
    // fails before it exits.
    struct Reap(Option<std::process::Child>);
    impl Drop for Reap {
        fn drop(&mut self) {
            if let Some(mut c) = self.0.take() {
                signal(c.id(), "CONT");
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let mut guard = Reap(Some(child));
    let child = guard.0.as_mut().unwrap();

    // Wait for the first pack's index (written after its pack).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if !ceph.keys("ckpt", "run/index/").is_empty() {
            break;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!(
                "the push ended ({st}) before any pack was on the remote:\n{}",
                fs::read_to_string(&err_path).unwrap()
            );
        }
        assert!(Instant::now() < deadline, "no pack index after 60 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(signal(pid, "STOP"), "cannot stop the push");
    let packs_before = ceph.keys("ckpt", "run/packs/").len();
    assert!(
        ceph.keys("ckpt", "run/snapshots/").is_empty(),
        "the snapshot record is on the remote already: the push was not cut off midway"
    );
    ceph.kill_rgw();
    let cut = Instant::now();
    assert!(signal(pid, "CONT"), "cannot continue the push");
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            cut.elapsed() < Duration::from_secs(60),
            "the push kept going for 60 s against a dead radosgw"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let failed_after = cut.elapsed();
    guard.0 = None;
    let out = std::process::Output {
        status,
        stdout: fs::read(&out_path).unwrap(),
        stderr: fs::read(&err_path).unwrap(),
    };
    let line = assert_refused(
        &format!("ckptfs {}", show(&push_args)),
        &out,
        &["pushing to ceph (s3://ckpt/run)"],
    );
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    println!(
        "push cut off after {packs_before} packs; failed {:.1} s later: {line}",
        failed_after.as_secs_f64()
    );

    // radosgw back: nothing is listed as pushed.
    ceph.start_rgw();
    assert_eq!(remote_snapshots(&m.store, "ceph", &env), []);
    assert!(ceph.keys("ckpt", "run/snapshots/").is_empty());

    // The next push completes it, reusing the packs already indexed.
    let r = push_report(push_args.clone(), &env, "ceph");
    println!("push after the crash: {r}");
    assert_eq!(pushed(&r), ["big"], "{r:#}");
    let logical = (FILES * FILE) as u64;
    assert_eq!(num(&r, "logical_bytes"), logical, "{r:#}");
    let present = num(&r, "chunks_present");
    let uploaded = num(&r, "bytes_uploaded");
    assert!(
        present > 0,
        "the packs of the first push were not reused\n{r:#}"
    );
    assert!(uploaded < logical, "{r:#}");
    assert_eq!(
        remote_snapshots(&m.store, "ceph", &env),
        [("trainer".to_string(), "big".to_string())]
    );
    println!(
        "resumed push: {present} chunks already there, {} uploaded, {uploaded} bytes for {logical}",
        num(&r, "chunks_uploaded")
    );

    let dest = m.root.join("restored");
    ok(
        args!["restore", url, "big", dest, "--endpoint", ceph.endpoint],
        &env,
    );
    let mut got = crate::names(&dest);
    got.sort();
    let want: Vec<String> = (0..FILES).map(|i| format!("shard-{i}.bin")).collect();
    assert_eq!(got, want);
    for (i, h) in hashes.iter().enumerate() {
        let p = dest.join(format!("shard-{i}.bin"));
        assert_eq!(fs::metadata(&p).unwrap().len(), FILE as u64);
        assert_eq!(hash_file(&p), *h, "{} differs", p.display());
    }
}
