//! What an operator command works on: a mount point of a running ckptfs
//! (its `.ckpt/` control tree, through ordinary file I/O) or a store
//! directory no daemon serves (opened in this process). Also the
//! `/proc/mounts` reading shared with `unmount`.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;

use crate::retention::Retention;
use crate::store::{Store, StoreError};
use crate::tree::{Tree, TreeOptions};

/// Bit 63 marks the inode numbers of the virtual control tree.
const VIRTUAL_INO: u64 = 1 << 63;

/// The file that marks a store directory.
const MARKER: &str = "CKPTFS";

/// The TARGET argument every operator command takes.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// A ckptfs mount point, or a store directory that no daemon serves.
    pub target: PathBuf,
    /// Name of the mount's control directory, when it was mounted with
    /// `--control-dir NAME`.
    #[arg(long, value_name = "NAME", default_value = ".ckpt")]
    pub control_dir: String,
}

/// A mount point and its control directory.
#[derive(Debug, Clone)]
pub struct Ctl {
    /// The mount point.
    pub mnt: PathBuf,
    /// Its control directory (`MNT/.ckpt`).
    pub dir: PathBuf,
}

impl Ctl {
    /// A path under the control directory.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.dir.join(rel)
    }
}

/// What TARGET turned out to be.
#[derive(Debug, Clone)]
pub enum Target {
    /// A mount point of a running daemon.
    Mount(Ctl),
    /// A store directory (not yet opened).
    Store(PathBuf),
}

/// A store opened by this process.
pub struct Opened {
    /// The tree over it (no automatic snapshots, no GC timer).
    pub tree: Arc<Tree>,
    /// Its retention service.
    pub retention: Arc<Retention>,
}

impl Opened {
    /// Makes what this process changed durable.
    pub fn finish(self) -> Result<()> {
        self.tree.sync().context("syncing the store")?;
        Ok(())
    }
}

/// Decides whether TARGET is a mount point or a store.
pub fn resolve(args: &TargetArgs) -> Result<Target> {
    let t = &args.target;
    let meta = match std::fs::metadata(t) {
        Ok(m) => m,
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => bail!(
            "{}: the ckptfs daemon that served it is gone (transport endpoint is not connected); run `umount {}`",
            t.display(),
            t.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("{}", t.display())),
    };
    if !meta.is_dir() {
        bail!(
            "{} is not a directory (expected a ckptfs mount point or store)",
            t.display()
        );
    }
    let dir = t.join(&args.control_dir);
    if let Ok(m) = std::fs::symlink_metadata(&dir) {
        if m.is_dir() && m.ino() & VIRTUAL_INO != 0 {
            return Ok(Target::Mount(Ctl {
                mnt: t.clone(),
                dir,
            }));
        }
    }
    if t.join(MARKER).is_file() {
        return Ok(Target::Store(t.clone()));
    }
    let canonical = std::fs::canonicalize(t).unwrap_or_else(|_| t.clone());
    if mounts()
        .iter()
        .any(|m| m.is_ckptfs() && m.mountpoint == canonical)
    {
        bail!(
            "{} is a ckptfs mount without a control directory named {}; pass --control-dir NAME if it was mounted with one",
            t.display(),
            args.control_dir
        );
    }
    bail!(
        "{} is neither a ckptfs mount point (no {} control directory) nor a ckptfs store (no {MARKER} file)",
        t.display(),
        args.control_dir
    )
}

/// Opens a store no daemon serves. `writable` is false for commands that
/// only read. A store held by a daemon is refused with its pid.
pub fn open_store(root: &Path, writable: bool) -> Result<Opened> {
    let store = match Store::open(root) {
        Ok(s) => Arc::new(s),
        Err(StoreError::InUse { holder, .. }) => return Err(in_use(root, &holder)),
        Err(e) => return Err(e).with_context(|| format!("opening store {}", root.display())),
    };
    let opts = TreeOptions {
        read_only: !writable,
        workers: 2,
        ..TreeOptions::default()
    };
    let tree = Arc::new(Tree::new(store, opts)?);
    let retention = Arc::new(Retention::new(tree.clone())?);
    Ok(Opened { tree, retention })
}

/// "store X is served by ckptfs pid N; run this on its mount point".
fn in_use(root: &Path, holder: &str) -> anyhow::Error {
    let pid = if holder.is_empty() { "?" } else { holder };
    let at = served_at(root, holder)
        .map(|m| format!(" ({})", m.display()))
        .unwrap_or_default();
    anyhow!(
        "store {} is served by ckptfs pid {pid}; run this on its mount point{at}",
        root.display()
    )
}

/// Where the daemon `pid` mounted the store at `root`, if it can be told.
fn served_at(root: &Path, pid: &str) -> Option<PathBuf> {
    let want = std::fs::canonicalize(root).ok()?;
    mounts()
        .into_iter()
        .filter(|m| m.is_ckptfs())
        .find(|m| m.store_path(Some(pid)).as_deref() == Some(want.as_path()))
        .map(|m| m.mountpoint)
}

/// One line of `/proc/mounts`.
#[derive(Debug, Clone)]
pub struct MountEntry {
    /// The source (`ckptfs:STORE` for ckptfs).
    pub source: PathBuf,
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// The filesystem type (`fuse`, or `fuse.ckptfs` when the subtype
    /// is shown).
    pub fstype: String,
}

impl MountEntry {
    /// True for a ckptfs mount.
    pub fn is_ckptfs(&self) -> bool {
        self.fstype == "fuse.ckptfs"
            || (self.fstype == "fuse" && self.source.as_os_str().as_bytes().starts_with(b"ckptfs:"))
    }

    /// The store it serves, canonical; a relative store path is resolved
    /// against the working directory of the daemon `pid`.
    pub fn store_path(&self, pid: Option<&str>) -> Option<PathBuf> {
        let raw = self
            .source
            .as_os_str()
            .as_bytes()
            .strip_prefix(b"ckptfs:")?;
        let path = PathBuf::from(OsStr::from_bytes(raw));
        let full = if path.is_absolute() {
            path
        } else {
            PathBuf::from(format!("/proc/{}/cwd", pid?)).join(path)
        };
        std::fs::canonicalize(full).ok()
    }
}

/// Undoes the octal escapes of `/proc/mounts` (`\040` for a space).
fn unescape(field: &str) -> PathBuf {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = (oct[0] - b'0') as u32 * 64
                    + (oct[1] - b'0') as u32 * 8
                    + (oct[2] - b'0') as u32;
                if let Ok(byte) = u8::try_from(v) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    PathBuf::from(OsStr::from_bytes(&out))
}

/// The current mounts (empty when `/proc/mounts` cannot be read).
pub fn mounts() -> Vec<MountEntry> {
    let Ok(text) = std::fs::read_to_string("/proc/mounts") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let mut f = line.split(' ');
            let source = unescape(f.next()?);
            let mountpoint = unescape(f.next()?);
            let fstype = f.next()?.to_string();
            Some(MountEntry {
                source,
                mountpoint,
                fstype,
            })
        })
        .collect()
}

/// Everything a control file's open handle reads from its start: after a
/// write to `retention/gc` or `remotes/push`, that run's report.
pub fn read_back(file: &std::fs::File, path: &Path) -> Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut text = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = file
            .read_at(&mut buf, text.len() as u64)
            .map_err(|e| io_context(e, path.display()))?;
        if n == 0 {
            return Ok(text);
        }
        text.extend_from_slice(&buf[..n]);
    }
}

/// An I/O error on a control-tree path, as one message.
pub fn io_context(e: io::Error, what: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{what}: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_mounts_escapes_are_undone() {
        assert_eq!(unescape("/mnt/a\\040b"), PathBuf::from("/mnt/a b"));
        assert_eq!(unescape("/plain"), PathBuf::from("/plain"));
        assert_eq!(unescape("/x\\134y"), PathBuf::from("/x\\y"));
        assert_eq!(unescape("/end\\04"), PathBuf::from("/end\\04"));
    }
}
