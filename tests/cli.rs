//! The command line: bad input gets a clear error and loses nothing; help
//! and usage; the ways a daemon ends (umount, SIGINT, SIGTERM) exit 0.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{detach, noise, Mount, BIN};

fn base_dir() -> PathBuf {
    let base = std::env::var_os("CKPTFS_TEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("ckptfs-tests"));
    fs::create_dir_all(&base).unwrap();
    base
}

/// A scratch directory under the test base, removed on drop.
fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("{name}-"))
        .tempdir_in(base_dir())
        .unwrap()
}

fn is_mounted(path: &Path) -> bool {
    let mounts = fs::read_to_string("/proc/mounts").unwrap();
    mounts.lines().any(|l| l.split(' ').nth(1) == path.to_str())
}

/// Runs `ckptfs` with `args`; a command expected to fail must not start
/// serving, so it gets 30 s, then it is killed and whatever it mounted on
/// `mountpoint` is detached (also when it did exit).
fn run(args: &[&OsStr], mountpoint: Option<&Path>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ckptfs");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut timed_out = false;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            timed_out = true;
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    if let Some(mnt) = mountpoint {
        detach(mnt);
    }
    assert!(
        !timed_out,
        "`ckptfs {args:?}` kept running (it should have refused):\n{}",
        text(&out.stderr)
    );
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts a non-zero exit and that stderr holds every one of `needles`.
fn assert_refused(out: &Output, needles: &[&str]) -> String {
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got {}; stderr:\n{stderr}",
        out.status
    );
    for n in needles {
        assert!(
            stderr.contains(n),
            "stderr does not mention {n:?}:\n{stderr}"
        );
    }
    stderr
}

/// Every file under `dir` with its bytes (directories as None).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().to_path_buf();
            if p.is_dir() {
                todo.push(p);
                out.insert(rel, None);
            } else {
                out.insert(rel, Some(fs::read(&p).unwrap()));
            }
        }
    }
    out
}

#[test]
fn a_store_served_by_another_daemon_is_refused_as_in_use_and_the_first_mount_keeps_working() {
    let m = Mount::new("cli-store-in-use");
    fs::write(m.path("before.txt"), b"written before").unwrap();
    let other = m.root.join("other-mnt");
    fs::create_dir(&other).unwrap();
    let out = run(
        &["mount".as_ref(), m.store.as_os_str(), other.as_os_str()],
        Some(&other),
    );
    let stderr = assert_refused(&out, &["in use"]);
    assert!(
        stderr.contains(&m.pid().to_string()),
        "the message does not name the holder's pid {}:\n{stderr}",
        m.pid()
    );
    assert!(!is_mounted(&other), "the second daemon left a mount behind");
    assert_eq!(fs::read_dir(&other).unwrap().count(), 0);

    // The first daemon is unaffected.
    let data = noise(2_000_000, 0xc1_0001);
    fs::write(m.path("after.bin"), &data).unwrap();
    assert!(fs::read(m.path("after.bin")).unwrap() == data);
    assert_eq!(fs::read(m.path("before.txt")).unwrap(), b"written before");
}

/// A store with content, not mounted, for the bad-mountpoint tests.
fn stopped_store(name: &str) -> (Mount, Vec<u8>) {
    let mut m = Mount::new(name);
    let data = noise(1_500_000, 0xc1_0002);
    fs::write(m.path("keep.bin"), &data).unwrap();
    let st = m.stop();
    assert!(st.success());
    (m, data)
}

#[test]
fn a_missing_mountpoint_is_refused_with_does_not_exist() {
    let (mut m, data) = stopped_store("cli-missing-mountpoint");
    let missing = m.root.join("no-such-dir");
    let out = run(
        &["mount".as_ref(), m.store.as_os_str(), missing.as_os_str()],
        None,
    );
    assert_refused(&out, &["does not exist", "no-such-dir"]);
    assert!(!missing.exists(), "the mount point was created");
    m.start();
    assert!(
        fs::read(m.path("keep.bin")).unwrap() == data,
        "the store lost data"
    );
}

#[test]
fn a_mountpoint_that_is_a_regular_file_is_refused_with_not_a_directory() {
    let (mut m, data) = stopped_store("cli-file-mountpoint");
    let file = m.root.join("a-file");
    fs::write(&file, b"not a directory").unwrap();
    let out = run(
        &["mount".as_ref(), m.store.as_os_str(), file.as_os_str()],
        Some(&file),
    );
    assert_refused(&out, &["not a directory", "a-file"]);
    assert_eq!(fs::read(&file).unwrap(), b"not a directory");
    m.start();
    assert!(
        fs::read(m.path("keep.bin")).unwrap() == data,
        "the store lost data"
    );
}

#[test]
fn a_directory_that_is_not_a_store_is_refused_and_left_untouched() {
    let dir = scratch("cli-foreign-store");
    let store = dir.path().join("store");
    fs::create_dir_all(store.join("sub")).unwrap();
    fs::write(store.join("notes.txt"), b"my notes").unwrap();
    fs::write(store.join("sub/data.bin"), noise(100_000, 0xc1_0003)).unwrap();
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let before = snapshot(&store);
    let out = run(
        &["mount".as_ref(), store.as_os_str(), mnt.as_os_str()],
        Some(&mnt),
    );
    assert_refused(&out, &["not a ckptfs store"]);
    assert_eq!(
        snapshot(&store),
        before,
        "the foreign directory was changed"
    );
    assert!(!is_mounted(&mnt));
}

#[test]
fn a_store_of_a_newer_format_is_refused_and_left_untouched() {
    let dir = scratch("cli-newer-store");
    let store = dir.path().join("store");
    fs::create_dir(&store).unwrap();
    fs::write(store.join("CKPTFS"), b"ckptfs store format 99\n").unwrap();
    fs::write(store.join("future-data"), b"from a newer ckptfs").unwrap();
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let before = snapshot(&store);
    let out = run(
        &["mount".as_ref(), store.as_os_str(), mnt.as_os_str()],
        Some(&mnt),
    );
    assert_refused(&out, &["format 99"]);
    assert_eq!(snapshot(&store), before, "the newer store was changed");
    assert!(!is_mounted(&mnt));
}

#[test]
fn an_unknown_flag_prints_usage_and_fails() {
    let dir = scratch("cli-unknown-flag");
    let store = dir.path().join("store");
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let out = run(
        &[
            "mount".as_ref(),
            "--bogus".as_ref(),
            store.as_os_str(),
            mnt.as_os_str(),
        ],
        Some(&mnt),
    );
    assert_refused(&out, &["Usage", "--bogus"]);
    let out = run(&["--bogus".as_ref()], None);
    assert_refused(&out, &["Usage"]);
    let out = run(&["frobnicate".as_ref()], None);
    assert_refused(&out, &["Usage"]);
    // A bad value is named, too.
    let out = run(
        &[
            "mount".as_ref(),
            "--chunk-size".as_ref(),
            "lots".as_ref(),
            store.as_os_str(),
            mnt.as_os_str(),
        ],
        Some(&mnt),
    );
    assert_refused(&out, &["lots"]);
    let out = run(
        &[
            "mount".as_ref(),
            "--compression".as_ref(),
            "zstd".as_ref(),
            store.as_os_str(),
            mnt.as_os_str(),
        ],
        Some(&mnt),
    );
    assert_refused(&out, &["zstd", "auto, lz4 or none"]);
    assert!(!store.exists(), "a refused command created the store");
}

#[test]
fn help_succeeds_and_lists_the_mount_options() {
    let out = run(&["--help".as_ref()], None);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "ckptfs --help: {}\n{}",
        out.status,
        text(&out.stderr)
    );
    assert!(
        stdout.contains("Usage") && stdout.contains("mount"),
        "ckptfs --help:\n{stdout}"
    );

    let out = run(&["mount".as_ref(), "--help".as_ref()], None);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "ckptfs mount --help: {}\n{}",
        out.status,
        text(&out.stderr)
    );
    for flag in [
        "--allow-other",
        "--read-only",
        "--chunk-size",
        "--compression",
        "--log-level",
        "STORE",
        "MOUNTPOINT",
    ] {
        assert!(
            stdout.contains(flag),
            "ckptfs mount --help does not mention {flag}:\n{stdout}"
        );
    }
}

/// Mounts, writes a file, ends the daemon with `end`, checks exit 0 and no
/// mount left, then mounts again and finds the file.
fn ends_cleanly(name: &str, end: impl FnOnce(&mut Mount) -> std::process::ExitStatus) {
    let mut m = Mount::new(name);
    let data = noise(3_000_000, 0xc1_0004);
    fs::write(m.path("data.bin"), &data).unwrap();
    let status = end(&mut m);
    assert_eq!(
        status.code(),
        Some(0),
        "daemon ended with {status}:\n{}",
        m.log()
    );
    assert!(!is_mounted(&m.mnt), "a mount is left in /proc/mounts");
    m.start();
    assert!(fs::read(m.path("data.bin")).unwrap() == data);
}

#[test]
fn umount_ends_the_daemon_with_exit_code_0() {
    ends_cleanly("cli-end-umount", |m| m.stop());
}

#[test]
fn sigint_ends_the_daemon_with_exit_code_0_and_no_mount_left() {
    ends_cleanly("cli-end-sigint", |m| m.signal(2));
}

#[test]
fn sigterm_ends_the_daemon_with_exit_code_0_and_no_mount_left() {
    ends_cleanly("cli-end-sigterm", |m| m.signal(15));
}

fn stats_json(m: &Mount) -> serde_json::Value {
    serde_json::from_slice(&fs::read(m.path(".ckpt/stats")).unwrap()).unwrap()
}

#[test]
fn a_store_keeps_the_chunker_it_was_made_with_and_refuses_the_other() {
    let dir = scratch("cli-chunker");
    let store = dir.path().join("store");
    let data = noise(3_000_000, 0xc1_0c0c);
    let mut first = Mount::with_store("cli-chunker-first", &store, &["--chunker", "window"]);
    fs::write(first.path("a.bin"), &data).unwrap();
    assert_eq!(stats_json(&first)["chunker"], "window");
    assert!(first.stop().success());

    let out = Command::new(BIN).arg("stats").arg(&store).output().unwrap();
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("chunker") && l.ends_with("window")),
        "{shown}"
    );

    // Asking for the other search is refused before anything is served.
    let other = dir.path().join("other-mnt");
    fs::create_dir(&other).unwrap();
    let out = run(
        &[
            "mount".as_ref(),
            store.as_os_str(),
            other.as_os_str(),
            "--chunker".as_ref(),
            "fastcdc".as_ref(),
        ],
        Some(&other),
    );
    assert_refused(&out, &["--chunker window", "--chunker fastcdc"]);
    assert!(!is_mounted(&other));

    // Without the flag the store's own search is used: the same bytes
    // again are cut alike and store no new chunk.
    let second = Mount::with_store("cli-chunker-second", &store, &[]);
    assert!(fs::read(second.path("a.bin")).unwrap() == data);
    fs::write(second.path("b.bin"), &data).unwrap();
    let stats = stats_json(&second);
    assert_eq!(stats["chunker"], "window");
    assert_eq!(stats["since_mount"]["new_chunks"], 0, "{stats}");
    assert!(
        stats["since_mount"]["deduplicated_chunks"]
            .as_u64()
            .unwrap()
            > 0
    );
    drop(second);

    // A store made without the flag gets the new stores' search.
    let fresh = Mount::new("cli-chunker-fresh");
    let new_stores = ckptfs::chunk::CutSearch::NEW_STORES.to_string();
    assert_eq!(stats_json(&fresh)["chunker"], new_stores.as_str());
    fs::write(fresh.path("a.bin"), &data).unwrap();
    assert!(fs::read(fresh.path("a.bin")).unwrap() == data);
}
