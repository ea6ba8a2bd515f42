//! systemd integration: the template unit passes `systemd-analyze verify`;
//! its ExecStart line, run as systemd would run it (NOTIFY_SOCKET,
//! WATCHDOG_USEC), sends READY=1 once the mount answers, STATUS= with
//! bytes, watchdog pings, STOPPING=1 on SIGTERM, and commits a file still
//! open for writing; its ExecStartPre detaches only a dead ckptfs mount;
//! `scripts/install.sh` stages the three files under DESTDIR.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{detach, is_mounted, noise, scratch, Mount, BIN};

const UNIT: &str = include_str!("../systemd/ckptfs@.service");
const UNIT_BIN: &str = "/usr/local/bin/ckptfs";

fn systemd_analyze_verify(unit: &Path) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
        .expect("systemd-analyze is missing: install the systemd package (.ci/run does)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify {}: {}\n{stderr}",
        unit.display(),
        out.status
    );
}

#[test]
fn the_unit_passes_systemd_analyze_verify_as_template_and_instance() {
    let dir = scratch("systemd-verify");
    // systemd-analyze checks that ExecStart's binary exists: point it at
    // the binary under test, change nothing else.
    assert!(UNIT.contains(UNIT_BIN));
    let unit = UNIT.replace(UNIT_BIN, BIN);
    for name in ["ckptfs@.service", "ckptfs@srv-runs.service"] {
        let path = dir.path().join(name);
        fs::write(&path, &unit).unwrap();
        systemd_analyze_verify(&path);
    }
    for needle in [
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=30s",
        "TimeoutStopSec=300",
        "Restart=on-failure",
        "DeviceAllow=/dev/fuse rw",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=CAP_SYS_ADMIN",
    ] {
        assert!(
            UNIT.lines().any(|l| l.starts_with(needle)),
            "unit lacks {needle}"
        );
    }
    // Settings that put the service in its own mount namespace would
    // hide the FUSE mount from the host.
    for bad in [
        "ProtectSystem=",
        "ProtectHome=",
        "PrivateTmp=",
        "PrivateDevices=",
    ] {
        assert!(!UNIT.lines().any(|l| l.starts_with(bad)), "unit sets {bad}");
    }
}

/// The datagram socket the test plays systemd's NOTIFY_SOCKET on.
struct NotifySocket {
    sock: UnixDatagram,
    path: PathBuf,
    /// Every assignment received so far, in order.
    seen: Vec<String>,
    /// How many of `seen` the waits have consumed.
    read: usize,
}

impl NotifySocket {
    fn bind(path: PathBuf) -> NotifySocket {
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        NotifySocket {
            sock,
            path,
            seen: Vec::new(),
            read: 0,
        }
    }

    fn pump(&mut self) {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = self.sock.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            self.seen.extend(text.lines().map(str::to_string));
        }
    }

    /// Waits for the next assignment matching `pred`, after those already
    /// consumed; returns it.
    fn wait_for(&mut self, what: &str, pred: impl Fn(&str) -> bool, d: &mut Daemon) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.pump();
            if let Some(i) = self.seen[self.read..].iter().position(|l| pred(l)) {
                self.read += i + 1;
                return self.seen[self.read - 1].clone();
            }
            if let Some(status) = d.exited() {
                panic!(
                    "daemon exited ({status}) before {what}; got {:?}\n{}",
                    self.seen,
                    d.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within 60 s; got {:?}\n{}",
                self.seen,
                d.log()
            );
        }
    }
}

/// A daemon started from the unit's ExecStart; killed and its mount
/// detached on drop.
struct Daemon {
    child: Option<Child>,
    mnt: PathBuf,
    log: PathBuf,
}

impl Daemon {
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().unwrap())
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn sigterm(&self) {
        let pid = self.child.as_ref().unwrap().id();
        let st = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(st.success());
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.exited() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
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

/// `systemd-escape --path`, i.e. what `%i` is for this mount point.
fn escape_path(path: &Path) -> String {
    let out = Command::new("systemd-escape")
        .arg("--path")
        .arg(path)
        .output()
        .expect("systemd-escape is missing: install the systemd package (.ci/run does)");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The unit's ExecStart, as systemd would run it for the instance of
/// `mnt`, with /etc/ckptfs/ at `etc` and the binary under test.
fn exec_start(etc: &Path, mnt: &Path) -> Command {
    let line = UNIT
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the unit has ExecStart=");
    let instance = escape_path(mnt);
    let mut words = line.split_whitespace().map(|w| {
        let w = w
            .replace("/etc/ckptfs/", &format!("{}/", etc.display()))
            .replace("%i", &instance)
            .replace("%f", mnt.to_str().unwrap());
        assert!(!w.contains('%'), "unhandled specifier in {line}");
        w
    });
    assert_eq!(words.next().as_deref(), Some(UNIT_BIN));
    let mut cmd = Command::new(BIN);
    cmd.args(words);
    cmd
}

fn start(cmd: &mut Command, notify: &NotifySocket, mnt: &Path, log: PathBuf) -> Daemon {
    let out = fs::File::create(&log).unwrap();
    let child = cmd
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "500000")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    Daemon {
        child: Some(child),
        mnt: mnt.to_path_buf(),
        log,
    }
}

/// READY=1 once the mount answers; returns the logical bytes of the first
/// STATUS= after it.
fn ready_and_status(notify: &mut NotifySocket, d: &mut Daemon, parent_dev: u64) -> u64 {
    notify.wait_for("READY=1", |l| l == "READY=1", d);
    let st = fs::metadata(&d.mnt).unwrap();
    assert_eq!(st.ino(), 1, "READY=1 before the mount root answered");
    assert_ne!(st.dev(), parent_dev, "READY=1 before the mount");
    let status = notify.wait_for("STATUS=", |l| l.starts_with("STATUS="), d);
    let bytes = |word: &str| -> u64 {
        let tail = status.split(&format!("{word} (")).nth(1).unwrap_or("");
        tail.split(" B)")
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {word} bytes in {status}"))
    };
    let _stored = bytes("stored");
    bytes("logical")
}

#[test]
fn the_units_exec_start_notifies_ready_status_watchdog_and_stopping() {
    let dir = scratch("systemd-notify");
    let (etc, store, mnt) = (
        dir.path().join("etc"),
        dir.path().join("store"),
        dir.path().join("mnt"),
    );
    fs::create_dir_all(&etc).unwrap();
    fs::create_dir(&mnt).unwrap();
    let config = etc.join(format!("{}.toml", escape_path(&mnt)));
    fs::write(&config, format!("store = {:?}\n", store.to_str().unwrap())).unwrap();
    let parent_dev = fs::metadata(dir.path()).unwrap().dev();
    let mut notify = NotifySocket::bind(dir.path().join("notify.sock"));

    let mut d = start(
        &mut exec_start(&etc, &mnt),
        &notify,
        &mnt,
        dir.path().join("daemon-0.log"),
    );
    assert_eq!(ready_and_status(&mut notify, &mut d, parent_dev), 0);
    // WATCHDOG_USEC=500000: a ping every 250 ms while the mount answers.
    let t0 = Instant::now();
    for _ in 0..4 {
        notify.wait_for("WATCHDOG=1", |l| l == "WATCHDOG=1", &mut d);
    }
    assert!(t0.elapsed() < Duration::from_secs(5), "pings too slow");

    // A file open for writing, data written, not closed: SIGTERM commits
    // it, STOPPING=1 is sent, the daemon exits 0 and the mount is gone.
    let data = noise(3_000_000, 0x5d_0001);
    let mut f = fs::File::create(mnt.join("open.bin")).unwrap();
    std::io::Write::write_all(&mut f, &data).unwrap();
    d.sigterm();
    notify.wait_for("STOPPING=1", |l| l == "STOPPING=1", &mut d);
    let status = d.wait_exit();
    assert_eq!(status.code(), Some(0), "exit {status}:\n{}", d.log());
    assert!(!is_mounted(&mnt), "a mount is left:\n{}", d.log());
    drop(f);

    // Started again the same way, the file is there with its bytes, and
    // the first STATUS= counts them.
    let mut d = start(
        &mut exec_start(&etc, &mnt),
        &notify,
        &mnt,
        dir.path().join("daemon-1.log"),
    );
    let logical = ready_and_status(&mut notify, &mut d, parent_dev);
    assert!(
        logical >= data.len() as u64,
        "STATUS= logical bytes {logical}"
    );
    assert!(fs::read(mnt.join("open.bin")).unwrap() == data, "data lost");
    d.sigterm();
    notify.wait_for("STOPPING=1", |l| l == "STOPPING=1", &mut d);
    assert_eq!(d.wait_exit().code(), Some(0), "{}", d.log());
    assert!(!is_mounted(&mnt));
}

/// Splits a unit's command line into words as systemd does for this
/// unit's lines: whitespace outside quotes, quotes removed.
fn unit_words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quote) = (Vec::new(), String::new(), None);
    for c in line.chars() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            _ => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// Runs the unit's ExecStartPre for the instance of `mnt`.
fn exec_start_pre(mnt: &Path) {
    let line = UNIT
        .lines()
        .find_map(|l| l.strip_prefix("ExecStartPre="))
        .expect("the unit has ExecStartPre=");
    let line = line.strip_prefix('-').unwrap_or(line);
    let words: Vec<String> = unit_words(line)
        .into_iter()
        .map(|w| w.replace("$$", "$").replace("%f", mnt.to_str().unwrap()))
        .collect();
    let out = Command::new(&words[0]).args(&words[1..]).output().unwrap();
    assert!(out.status.success(), "ExecStartPre: {out:?}");
}

#[test]
fn the_units_exec_start_pre_detaches_only_a_dead_ckptfs_mount() {
    let dir = scratch("systemd-pre");
    exec_start_pre(dir.path());
    let mut m = Mount::new("systemd-pre");
    fs::write(m.path("kept.txt"), b"kept").unwrap();
    exec_start_pre(&m.mnt);
    assert!(is_mounted(&m.mnt), "a serving mount was detached");
    assert_eq!(fs::read(m.path("kept.txt")).unwrap(), b"kept");
    // SIGKILL leaves a dead mount that fails every access.
    let st = Command::new("kill")
        .args(["-KILL", &m.pid().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    assert!(!m.wait_exit().success());
    let statfs = Command::new("stat").arg("-f").arg(&m.mnt).output().unwrap();
    assert!(!statfs.status.success(), "the dead mount answers");
    assert!(is_mounted(&m.mnt));
    exec_start_pre(&m.mnt);
    assert!(!is_mounted(&m.mnt), "the dead mount was not detached");
    assert!(fs::metadata(&m.mnt).unwrap().is_dir());
    m.start();
    assert_eq!(fs::read(m.path("kept.txt")).unwrap(), b"kept");
}

#[test]
fn install_sh_stages_the_binary_the_unit_and_the_example_config_under_destdir() {
    let dir = scratch("systemd-install");
    let root = dir.path().join("root");
    let run = |args: &[&str]| {
        let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install.sh"))
            .args(args)
            .env("DESTDIR", &root)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "install.sh {args:?}: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let stdout = run(&["--binary", BIN]);
    assert!(
        stdout.contains("systemctl enable --now ckptfs@"),
        "{stdout}"
    );
    let bin = root.join("usr/local/bin/ckptfs");
    assert_eq!(fs::read(&bin).unwrap(), fs::read(BIN).unwrap());
    assert_eq!(
        fs::metadata(&bin).unwrap().permissions().mode() & 0o777,
        0o755
    );
    let unit = fs::read_to_string(root.join("etc/systemd/system/ckptfs@.service")).unwrap();
    assert_eq!(unit, UNIT);
    let example = fs::read_to_string(root.join("etc/ckptfs/example.toml")).unwrap();
    assert_eq!(
        example,
        include_str!("../systemd/ckptfs.example.toml"),
        "example config"
    );
    // The installed binary runs, and the installed unit verifies once its
    // binary path exists.
    let out = Command::new(&bin).arg("--version").output().unwrap();
    assert!(out.status.success());
    let check = dir.path().join("ckptfs@srv-runs.service");
    fs::write(&check, unit.replace(UNIT_BIN, bin.to_str().unwrap())).unwrap();
    systemd_analyze_verify(&check);

    // --prefix moves the binary, and the unit follows it.
    run(&["--binary", BIN, "--prefix", "/opt/ckptfs"]);
    assert!(root.join("opt/ckptfs/bin/ckptfs").is_file());
    let unit = fs::read_to_string(root.join("etc/systemd/system/ckptfs@.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/opt/ckptfs/bin/ckptfs mount --config /etc/ckptfs/%i.toml %f"),
        "{unit}"
    );
}
