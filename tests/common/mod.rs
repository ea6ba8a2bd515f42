//! The `Mount` fixture: a store and a mount point in a per-test directory,
//! the real `ckptfs` binary serving them, and cleanup that always unmounts
//! and kills the daemon, also when the test panics.

#![allow(dead_code)]

pub mod cli;

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_ckptfs");

static HEAVY: Mutex<()> = Mutex::new(());

/// Serializes the tests that move gigabytes, so that they do not compete
/// for the two cores and the disk with each other.
pub fn heavy() -> MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// A mounted ckptfs.
pub struct Mount {
    /// The per-test directory, removed on drop.
    pub root: PathBuf,
    /// The store directory.
    pub store: PathBuf,
    /// The mount point.
    pub mnt: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    starts: u32,
}

impl Mount {
    /// Mounts a fresh store with default options.
    pub fn new(name: &str) -> Mount {
        Mount::with_args(name, &[])
    }

    /// Mounts a fresh store with extra `ckptfs mount` arguments.
    pub fn with_args(name: &str, args: &[&str]) -> Mount {
        let root = test_dir(name);
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("mnt")).expect("create mount point");
        let mut m = Mount {
            store: root.join("store"),
            mnt: root.join("mnt"),
            root,
            args: args.iter().map(|s| s.to_string()).collect(),
            child: None,
            starts: 0,
        };
        m.start();
        m
    }

    /// Mounts the store at `store` (existing or not, anywhere) with extra
    /// `ckptfs mount` arguments. The per-test directory holds only the
    /// mount point and the logs; the store is not removed on drop.
    pub fn with_store(name: &str, store: &Path, args: &[&str]) -> Mount {
        let root = test_dir(name);
        assert!(
            !store.starts_with(&root),
            "the store must live outside the fixture's directory"
        );
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("mnt")).expect("create mount point");
        let mut m = Mount {
            store: store.to_path_buf(),
            mnt: root.join("mnt"),
            root,
            args: args.iter().map(|s| s.to_string()).collect(),
            child: None,
            starts: 0,
        };
        m.start();
        m
    }

    /// A path inside the mount.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// The daemon's log so far (all starts).
    pub fn log(&self) -> String {
        let mut out = String::new();
        for i in 0..self.starts {
            if let Ok(mut f) = fs::File::open(self.root.join(format!("daemon-{i}.log"))) {
                let _ = f.read_to_string(&mut out);
            }
        }
        out
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).expect("daemon running")
    }

    /// Starts the daemon and waits until the mount answers.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "daemon already running");
        let log = fs::File::create(self.root.join(format!("daemon-{}.log", self.starts)))
            .expect("log file");
        self.starts += 1;
        let child = Command::new(BIN)
            .arg("mount")
            .arg(&self.store)
            .arg(&self.mnt)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn ckptfs");
        self.child = Some(child);
        self.wait_mounted();
    }

    fn wait_mounted(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let parent_dev = fs::metadata(&self.root).map(|m| m.dev()).unwrap_or(0);
        loop {
            if let Ok(m) = fs::metadata(&self.mnt) {
                if m.ino() == 1 && m.dev() != parent_dev {
                    return;
                }
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    panic!(
                        "ckptfs exited with {status} before mounting:\n{}",
                        self.log()
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "mount did not come up:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Unmounts with `umount` and waits for the daemon to exit. Retries a
    /// busy mount for a few seconds: a child process that another test
    /// thread forks inherits copies of every open fd for a moment.
    pub fn stop(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = Command::new("umount")
                .arg(&self.mnt)
                .output()
                .expect("run umount");
            if out.status.success() {
                break;
            }
            let busy = String::from_utf8_lossy(&out.stderr).contains("busy");
            assert!(
                busy && Instant::now() < deadline,
                "umount failed: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.wait_exit()
    }

    /// Sends a signal to the daemon and waits for it to exit.
    pub fn signal(&mut self, sig: i32) -> ExitStatus {
        let pid = self.pid() as i32;
        // SAFETY-free: the kill(1) command, not libc.
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .expect("kill");
        assert!(st.success());
        self.wait_exit()
    }

    /// Waits (bounded) for the daemon to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("daemon did not exit:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs the daemon and clears the dead mount it leaves.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        detach(&self.mnt);
    }

    /// Unmounts and mounts again (same options).
    pub fn remount(&mut self) {
        let status = self.stop();
        assert!(
            status.success(),
            "daemon exited with {status}:\n{}",
            self.log()
        );
        self.start();
    }

    /// Bytes the daemon has read with read syscalls (`rchar` of
    /// `/proc/PID/io`), page cache hits included.
    pub fn read_bytes(&self) -> u64 {
        self.proc_io("rchar:")
    }

    /// Read syscalls the daemon has made (`syscr` of `/proc/PID/io`): its
    /// reads of FUSE requests and of the store alike.
    pub fn read_calls(&self) -> u64 {
        self.proc_io("syscr:")
    }

    fn proc_io(&self, field: &str) -> u64 {
        let io = fs::read_to_string(format!("/proc/{}/io", self.pid())).expect("proc io");
        io.lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/PID/io"))
    }

    /// Peak RSS of the daemon in KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> u64 {
        let status =
            fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM")
    }
}

/// The per-test directory `name-PID` under `$CKPTFS_TEST_DIR` (default
/// `/tmp/ckptfs-tests`), whose parent exists.
pub fn test_dir(name: &str) -> PathBuf {
    test_base().join(format!("{name}-{}", std::process::id()))
}

/// `$CKPTFS_TEST_DIR` (default `/tmp/ckptfs-tests`), created.
fn test_base() -> PathBuf {
    let base = std::env::var_os("CKPTFS_TEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("ckptfs-tests"));
    fs::create_dir_all(&base).expect("create test base dir");
    base
}

/// A fresh directory `name-XXXXXX` under the test base, removed on drop.
pub fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("{name}-"))
        .tempdir_in(test_base())
        .expect("create a scratch directory")
}

/// True when something is mounted at `mnt` (as /proc/mounts lists it).
pub fn is_mounted(mnt: &Path) -> bool {
    fs::read_to_string("/proc/mounts")
        .map(|m| {
            m.lines()
                .any(|l| l.split(' ').nth(1) == Some(mnt.to_str().unwrap_or("")))
        })
        .unwrap_or(false)
}

/// Runs a command, asserting success.
pub fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A small ext4 filesystem on a loop device (for full-disk tests),
/// unmounted with its loop device and removed on drop, also when the test
/// panics.
pub struct SmallDisk {
    dir: PathBuf,
    /// Where it is mounted.
    pub mnt: PathBuf,
}

impl SmallDisk {
    /// Makes and mounts a `size` (as `truncate -s` takes it) filesystem.
    pub fn new(name: &str, size: &str) -> SmallDisk {
        let dir = test_dir(name);
        let disk = SmallDisk {
            mnt: dir.join("disk"),
            dir,
        };
        disk.cleanup();
        fs::create_dir_all(&disk.mnt).expect("create the disk's mount point");
        let img = disk.dir.join("img");
        run(Command::new("truncate").arg("-s").arg(size).arg(&img));
        run(Command::new("mkfs.ext4").arg("-q").arg(&img));
        mount_loop(&img, &disk.mnt);
        disk
    }

    fn cleanup(&self) {
        unmount(&self.mnt, &["-d"]);
        if !is_mounted(&self.mnt) {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// A thin-provisioned disk: an ext4 filesystem of `size` on a loop device
/// whose image lives in a tmpfs of `backing` bytes. ext4 counts `size` as
/// its space, but once the tmpfs is full, every write of a block not
/// written before fails at writeback (the loop device gets ENOSPC): the
/// disk errors that only an fsync reports. Unmounted, with its loop
/// device and tmpfs, and removed on drop, also when the test panics.
pub struct ThinDisk {
    dir: PathBuf,
    backing: PathBuf,
    /// Where the ext4 filesystem is mounted.
    pub mnt: PathBuf,
}

impl ThinDisk {
    /// Makes and mounts it (inode tables and journal written at once, so
    /// that only data blocks need room in the tmpfs).
    pub fn new(name: &str, size: &str, backing: &str) -> ThinDisk {
        let dir = test_dir(name);
        let disk = ThinDisk {
            mnt: dir.join("disk"),
            backing: dir.join("backing"),
            dir,
        };
        disk.cleanup();
        fs::create_dir_all(&disk.mnt).expect("create the disk's mount point");
        fs::create_dir_all(&disk.backing).expect("create the backing's mount point");
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={backing}"))
            .arg("tmpfs")
            .arg(&disk.backing));
        let img = disk.image();
        run(Command::new("truncate").arg("-s").arg(size).arg(&img));
        run(Command::new("mkfs.ext4")
            .args(["-q", "-E", "lazy_itable_init=0,lazy_journal_init=0"])
            .arg(&img));
        disk.mount();
        disk
    }

    fn image(&self) -> PathBuf {
        self.backing.join("img")
    }

    fn mount(&self) {
        mount_loop(&self.image(), &self.mnt);
    }

    /// Gives the disk `backing` bytes of room, while mounted.
    pub fn grow(&self, backing: &str) {
        run(Command::new("mount")
            .arg("-o")
            .arg(format!("remount,size={backing}"))
            .arg(&self.backing));
    }

    /// Gives the disk `backing` bytes of room, and mounts the filesystem
    /// again after `e2fsck` (ext4 may have gone read-only on the errors).
    pub fn recover(&self, backing: &str) {
        run(Command::new("umount").arg("-d").arg(&self.mnt));
        self.grow(backing);
        // 0: clean, 1: errors corrected; anything else is a failure.
        let fsck = Command::new("e2fsck")
            .arg("-fy")
            .arg(self.image())
            .output()
            .expect("run e2fsck");
        assert!(
            matches!(fsck.status.code(), Some(0 | 1)),
            "e2fsck: {}\n{}",
            fsck.status,
            String::from_utf8_lossy(&fsck.stdout)
        );
        self.mount();
    }

    fn cleanup(&self) {
        unmount(&self.mnt, &["-d"]);
        unmount(&self.backing, &[]);
        if !is_mounted(&self.mnt) && !is_mounted(&self.backing) {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for ThinDisk {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Mounts the filesystem image `img` at `mnt` through a loop device.
fn mount_loop(img: &Path, mnt: &Path) {
    run(Command::new("mount")
        .arg("-o")
        .arg("loop")
        .arg(img)
        .arg(mnt));
}

/// Unmounts whatever is mounted at `mnt`, lazily if needed.
pub fn detach(mnt: &Path) {
    unmount(mnt, &[]);
}

/// `umount` with `flags` (`-d`: free the loop device too) of whatever is
/// mounted at `mnt`, lazily if it is busy.
fn unmount(mnt: &Path, flags: &[&str]) {
    if is_mounted(mnt) {
        let ok = Command::new("umount")
            .args(flags)
            .arg(mnt)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount")
                .arg("-l")
                .args(flags)
                .arg(mnt)
                .status();
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        detach(&self.mnt);
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        detach(&self.mnt);
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.root);
        } else {
            eprintln!(
                "test directory kept for inspection: {}",
                self.root.display()
            );
        }
    }
}

/// xxh3-128 of a file's content, read through ordinary I/O.
pub fn hash_file(path: &Path) -> u128 {
    let mut f = fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.digest128()
}

/// Deterministic pseudo-random bytes (xorshift), incompressible.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Flips one byte (in the middle) of the 64-byte `window` where it occurs
/// in the store's chunk files (`packs/*.pack`, `db/*.blob`), with the
/// daemon stopped; panics unless it occurs exactly once.
pub fn flip_byte_in_stored_chunk(store: &Path, window: &[u8]) {
    let mut hits = 0;
    let files = ["db", "packs"]
        .iter()
        .flat_map(|d| fs::read_dir(store.join(d)).expect("read the store"))
        .map(|e| e.expect("a store entry").path());
    for p in files {
        if p.extension().is_none_or(|x| x != "blob" && x != "pack") {
            continue;
        }
        let mut bytes = fs::read(&p).expect("read a chunk file");
        let found: Vec<usize> = bytes
            .windows(window.len())
            .enumerate()
            .filter(|(_, w)| *w == window)
            .map(|(i, _)| i)
            .collect();
        for at in &found {
            bytes[at + window.len() / 2] ^= 0x5a;
        }
        if !found.is_empty() {
            fs::write(&p, &bytes).expect("write a chunk file");
        }
        hits += found.len();
    }
    assert_eq!(
        hits, 1,
        "the window was found {hits} times in the pack and blob files"
    );
}

/// Bytes the store directory takes on disk: allocated blocks, as
/// `du -s -B1` counts them (pack files have holes where GC freed space,
/// so their apparent size says nothing of the disk).
pub fn du_bytes(path: &Path) -> u64 {
    let out = Command::new("du")
        .arg("-s")
        .arg("-B1")
        .arg(path)
        .output()
        .expect("du");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("du output")
}

/// Runs a shell command, asserting success; returns stdout.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `python -c script args...`, asserting success; returns stdout.
pub fn run_python<S: AsRef<std::ffi::OsStr>>(script: &str, args: &[S]) -> String {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", python()));
    assert!(
        out.status.success(),
        "python failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The python interpreter with numpy (CKPTFS_TEST_PYTHON or python3).
pub fn python() -> String {
    std::env::var("CKPTFS_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}
