//! `ckptfs mount --config FILE`: a file alone mounts with its options
//! (store and mount point relative to it, control dir, snapshot-on-close,
//! retention policy); flags and a positional override it; bad files are
//! refused with `FILE:LINE: reason`, a non-zero exit and nothing mounted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{detach, is_mounted, scratch, BIN};

/// A daemon serving `mnt`; unmounted and killed on drop.
struct Daemon {
    child: Option<Child>,
    mnt: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Runs `ckptfs mount ARGS` from `/` (so relative paths can only come
    /// from the config file) and waits until `mnt` answers.
    fn start(args: &[&str], mnt: &Path, log: PathBuf) -> Daemon {
        let out = fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .arg("mount")
            .args(args)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut d = Daemon {
            child: Some(child),
            mnt: mnt.to_path_buf(),
            log,
        };
        let parent = fs::metadata(mnt.parent().unwrap()).unwrap().dev();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(m) = fs::metadata(mnt) {
                if m.ino() == 1 && m.dev() != parent {
                    return d;
                }
            }
            if let Some(st) = d.child.as_mut().unwrap().try_wait().unwrap() {
                d.child = None;
                panic!("ckptfs exited with {st} before mounting:\n{}", d.log());
            }
            assert!(Instant::now() < deadline, "no mount:\n{}", d.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Unmounts and checks the daemon exits 0.
    fn stop(mut self) {
        let out = Command::new("umount").arg(&self.mnt).output().unwrap();
        assert!(out.status.success(), "umount: {out:?}");
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("daemon did not exit:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(0), "{}", self.log());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        detach(&self.mnt);
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        detach(&self.mnt);
    }
}

const POLICY: &str = "keep-last = 2\nfile-versions-keep = 1\n";

/// A config naming everything relative to its own directory.
fn good_config(dir: &Path) -> PathBuf {
    fs::create_dir(dir.join("mnt")).unwrap();
    let path = dir.join("ckptfs.toml");
    fs::write(
        &path,
        format!(
            "store = \"store\"\nmountpoint = \"mnt\"\ncontrol-dir = \".history\"\n\
             show-control-dir = true\nsnapshot-on-close = [\"*.done\"]\n\
             [retention]\npolicy = \"\"\"\n{POLICY}\"\"\"\n"
        ),
    )
    .unwrap();
    path
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn wait_for_snapshot(snapshots: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = names(snapshots)
            .into_iter()
            .find(|n| n.starts_with("auto-"))
        {
            return s;
        }
        assert!(Instant::now() < deadline, "no automatic snapshot");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_config_file_alone_mounts_with_its_options() {
    let dir = scratch("config-good");
    let config = good_config(dir.path());
    let mnt = dir.path().join("mnt");
    let d = Daemon::start(
        &["--config", config.to_str().unwrap()],
        &mnt,
        dir.path().join("daemon.log"),
    );
    assert!(dir.path().join("store/CKPTFS").exists(), "store not made");
    assert!(names(&mnt).contains(&".history".to_string()), "control dir");
    assert!(!mnt.join(".ckpt").exists());
    assert_eq!(
        fs::read_to_string(mnt.join(".history/retention/policy")).unwrap(),
        POLICY
    );
    fs::write(mnt.join("step-1.done"), b"weights").unwrap();
    wait_for_snapshot(&mnt.join(".history/snapshots"));
    d.stop();
    assert!(!is_mounted(&mnt));
}

#[test]
fn flags_and_a_positional_override_the_config_file() {
    let dir = scratch("config-override");
    let config = good_config(dir.path());
    let other = dir.path().join("other-mnt");
    fs::create_dir(&other).unwrap();
    // The file names the store, so the lone positional is the mount point.
    let d = Daemon::start(
        &[
            "--config",
            config.to_str().unwrap(),
            "--control-dir",
            ".cli",
            "--snapshot-on-close",
            "*.fin",
            other.to_str().unwrap(),
        ],
        &other,
        dir.path().join("daemon.log"),
    );
    assert!(!is_mounted(&dir.path().join("mnt")));
    assert!(other.join(".cli/snapshots").is_dir());
    assert!(!other.join(".history").exists());
    assert!(
        names(&other).contains(&".cli".to_string()),
        "file's show-control-dir"
    );
    fs::write(other.join("a.done"), b"no trigger").unwrap();
    fs::write(other.join("b.fin"), b"trigger").unwrap();
    wait_for_snapshot(&other.join(".cli/snapshots"));
    d.stop();
}

/// Runs a command that must be refused; detaches anything it mounted.
fn refused(args: &[&str], mnt: &Path) -> String {
    let out: Output = Command::new(BIN)
        .arg("mount")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let mounted = is_mounted(mnt);
    detach(mnt);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "accepted {args:?}: {stderr}");
    assert!(!mounted, "{args:?} mounted");
    stderr
}

#[test]
fn bad_config_files_are_refused_with_file_line_and_reason() {
    let dir = scratch("config-bad");
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let head = "store = \"store\"\nmountpoint = \"mnt\"\n";
    for (i, (body, line, reason)) in [
        ("chunk-size = \n", 3, "string values must be quoted"),
        ("\nchunk-sise = \"16K\"\n", 4, "unknown field `chunk-sise`"),
        (
            "chunk-size = \"16Q\"\n",
            3,
            "unknown size unit 'q' in '16Q'",
        ),
        ("fuse-threads = 0\n", 3, "0 is not in 1..=64"),
        ("[retention]\npolicy = \"keep-lots = 1\"\n", 4, "keep-lots"),
    ]
    .into_iter()
    .enumerate()
    {
        let file = dir.path().join(format!("bad-{i}.toml"));
        fs::write(&file, format!("{head}{body}")).unwrap();
        let stderr = refused(&["--config", file.to_str().unwrap()], &mnt);
        let at = format!("{}:{line}: ", file.display());
        assert!(stderr.contains(&at), "{body:?}: wanted {at}\n{stderr}");
        assert!(
            stderr.contains(reason),
            "{body:?}: wanted {reason}\n{stderr}"
        );
    }
    assert!(
        !dir.path().join("store").exists(),
        "a refused file made the store"
    );
}

#[test]
fn a_missing_store_or_mountpoint_or_file_is_named() {
    let dir = scratch("config-missing");
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let file = dir.path().join("no-store.toml");
    fs::write(&file, "chunk-size = \"32K\"\n").unwrap();
    let stderr = refused(&["--config", file.to_str().unwrap()], &mnt);
    assert!(stderr.contains("missing STORE"), "{stderr}");
    let stderr = refused(&["--config", file.to_str().unwrap(), "store-only"], &mnt);
    assert!(stderr.contains("missing MOUNTPOINT"), "{stderr}");
    let gone = dir.path().join("gone.toml");
    let stderr = refused(&["--config", gone.to_str().unwrap()], &mnt);
    assert!(stderr.contains("gone.toml"), "{stderr}");
    let out = Command::new(BIN)
        .args(["mount", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("--config <FILE>"));
}

#[test]
fn the_example_config_parses_with_every_setting_uncommented() {
    let dir = scratch("config-example");
    let example = include_str!("../systemd/ckptfs.example.toml");
    // `#key = value` lines (no space after '#') are settings; uncomment
    // them all, point store and mountpoint here, and mount.
    let mut text = String::new();
    for l in example.lines() {
        let setting = l.len() > 1 && l.starts_with('#') && !l.starts_with("# ") && l != "#";
        let l = if setting { &l[1..] } else { l };
        let l = match l.split_once(" = ") {
            Some(("store", _)) => "store = \"store\"",
            Some(("mountpoint", _)) => "mountpoint = \"mnt\"",
            Some(("allow-other", _)) => "allow-other = false",
            _ => l,
        };
        text.push_str(l);
        text.push('\n');
    }
    assert!(text.contains("\n[retention]\npolicy = \"\"\"\n"), "{text}");
    let file = dir.path().join("example.toml");
    fs::write(&file, &text).unwrap();
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let d = Daemon::start(
        &["--config", file.to_str().unwrap()],
        &mnt,
        dir.path().join("daemon.log"),
    );
    assert!(mnt.join(".ckpt/snapshots").is_dir());
    d.stop();
}
