//! `ckptfs restore TARGET SOURCE DEST`: copies a whole snapshot, a path
//! inside one, or one version of a file out to DEST, keeping modes, mtimes
//! (and owners, when run as root), symlinks and hard links.
//!
//! Everything is written to a hidden staging name next to DEST first and
//! renamed into place at the end, so a failure leaves DEST as it was. An
//! existing DEST is refused unless `--force` (then it is replaced whole).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions, Permissions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;

use super::progress::{Progress, Unit};
use super::restore_plan::{self, Data, Item, Kind};
use super::show;
use super::target::{self, open_store, Target, TargetArgs};
use super::versions::join;
use std::sync::Arc;

use crate::remote::{Remote, RemoteView};
use crate::tree::{ReadHint, Tree};

/// Fetched chunks kept while restoring from a remote (the prefetch
/// window and the read in hand).
const REMOTE_CACHE: u64 = 128 << 20;

/// Bytes copied per read.
const BUF: usize = 1 << 20;

/// Options of `ckptfs restore`.
#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// What to restore: SNAPSHOT (all of it), SNAPSHOT/PATH (a file or
    /// directory in it; `latest` and `best` name those snapshots), or
    /// PATH@VERSION (one version of a file; VERSION is a number, a version
    /// name NNNNNN-YYYYMMDDTHHMMSSZ, or latest).
    source: OsString,
    /// The path to create (not a directory to copy into).
    dest: PathBuf,
    /// Replace DEST if it exists.
    #[arg(long)]
    force: bool,
    /// With a remote URL as TARGET: the node whose snapshot to restore,
    /// when several nodes pushed one of that name.
    #[arg(long, value_name = "ID")]
    node: Option<String>,
    /// With an s3:// URL as TARGET: the S3 endpoint (else
    /// AWS_ENDPOINT_URL).
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    /// With an s3:// URL as TARGET: the region (else AWS_REGION).
    #[arg(long)]
    region: Option<String>,
}

/// Where file content is read from.
#[derive(Clone, Copy)]
enum Content<'a> {
    /// Through the mount (`Data::Path`).
    Mount,
    /// An opened store.
    Store(&'a Tree),
    /// A remote.
    Remote(&'a Arc<RemoteView>),
}

/// What a restore wrote.
#[derive(Default)]
struct Counts {
    files: u64,
    dirs: u64,
    symlinks: u64,
    hardlinks: u64,
    skipped: u64,
    bytes: u64,
}

/// Removes the staging copy unless the restore got to the end.
struct Staging {
    path: PathBuf,
    armed: bool,
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.armed {
            remove_any(&self.path);
        }
    }
}

fn remove_any(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            let _ = std::fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(path);
        }
        Err(_) => {}
    }
}

/// `ckptfs restore`.
pub fn restore(args: &RestoreArgs) -> Result<()> {
    let dest = &args.dest;
    let name = dest
        .file_name()
        .filter(|n| *n != OsStr::new(".") && *n != OsStr::new(".."))
        .ok_or_else(|| anyhow!("{}: DEST must name a file or directory", dest.display()))?;
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        bail!(
            "{}: its directory {} does not exist",
            dest.display(),
            parent.display()
        );
    }
    let exists = std::fs::symlink_metadata(dest).is_ok();
    if exists && !args.force {
        bail!(
            "{} exists; pass --force to replace it (nothing was written)",
            dest.display()
        );
    }
    let mut staging_name = OsString::from(".");
    staging_name.push(name);
    staging_name.push(format!(".ckptfs-restore-{}", std::process::id()));
    let staging = parent.join(staging_name);
    remove_any(&staging);

    let progress = Progress::new("restore", Unit::Bytes);
    let shown = args.source.to_string_lossy().into_owned();
    let url = args.target.target.to_string_lossy().into_owned();
    let is_url = url.starts_with("s3://") || url.starts_with("file://");
    let counts = match if is_url {
        None
    } else {
        Some(target::resolve(&args.target)?)
    } {
        None => {
            let remote = Remote::open_url(&url, args.endpoint.as_deref(), args.region.as_deref())?;
            let view = Arc::new(RemoteView::new(remote, REMOTE_CACHE, Vec::new()));
            let snaps = view.list()?;
            let node = args.node.as_deref();
            let source = restore_plan::parse_source(&args.source, None, |first| {
                Ok(restore_plan::pick_remote(&snaps, first, node)?
                    .map(|s| crate::remote::layout::from_text(&s.name).unwrap_or_default()))
            })?;
            let (name, path) = match &source {
                restore_plan::Source::Snapshot(name, path) => (name, path),
                restore_plan::Source::Version(..) => {
                    bail!("a remote holds snapshots only; restore SNAPSHOT[/PATH] from it")
                }
            };
            let snap = restore_plan::pick_remote(&snaps, name, node)?.with_context(|| {
                format!("{url} has no snapshot {}", String::from_utf8_lossy(name))
            })?;
            let items = restore_plan::remote_items(snap, path)?;
            write_items(&items, (&staging, dest), Content::Remote(&view), &progress)
        }
        Some(Target::Mount(ctl)) => {
            let source = restore_plan::parse_source(&args.source, Some(&ctl.mnt), |first| {
                restore_plan::mount_snapshot(&ctl, first)
            })?;
            let items = restore_plan::mount_items(&ctl, &source)?;
            write_items(&items, (&staging, dest), Content::Mount, &progress)
        }
        Some(Target::Store(root)) => {
            let opened = open_store(&root, false)?;
            let source = restore_plan::parse_source(&args.source, None, |first| {
                restore_plan::store_snapshot(&opened, first)
            })?;
            let items = restore_plan::store_items(&opened, &source)?;
            write_items(
                &items,
                (&staging, dest),
                Content::Store(&opened.tree),
                &progress,
            )
        }
    }
    .with_context(|| format!("restoring {shown}"))?;
    progress.finish();
    let replaced = place(&staging, dest, args.force)?;
    let mut what = vec![format!(
        "{} ({})",
        show::count(counts.files, "file", "files"),
        show::bytes(counts.bytes)
    )];
    for (n, one, many) in [
        (counts.dirs, "directory", "directories"),
        (counts.symlinks, "symlink", "symlinks"),
        (counts.hardlinks, "hard link", "hard links"),
        (
            counts.skipped,
            "special file skipped",
            "special files skipped",
        ),
    ] {
        if n > 0 {
            what.push(show::count(n, one, many));
        }
    }
    println!(
        "restored {shown} to {}{}: {}",
        dest.display(),
        if replaced { " (replaced)" } else { "" },
        what.join(", ")
    );
    Ok(())
}

/// Moves the finished staging copy to DEST; true when it replaced one.
fn place(staging: &Path, dest: &Path, force: bool) -> Result<bool> {
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    let mut guard = Staging {
        path: staging.to_path_buf(),
        armed: true,
    };
    let old = match std::fs::symlink_metadata(dest) {
        Err(_) => {
            match renameat2(
                AT_FDCWD,
                staging,
                AT_FDCWD,
                dest,
                RenameFlags::RENAME_NOREPLACE,
            ) {
                Ok(()) => {
                    guard.armed = false;
                    return Ok(false);
                }
                Err(nix::errno::Errno::EEXIST) => {
                    bail!("{} appeared meanwhile; nothing was written", dest.display())
                }
                Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS) => {
                    std::fs::rename(staging, dest).with_context(|| {
                        format!("moving the restored copy to {}", dest.display())
                    })?;
                    guard.armed = false;
                    return Ok(false);
                }
                Err(e) => {
                    return Err(anyhow!(
                        "moving the restored copy to {}: {e}",
                        dest.display()
                    ))
                }
            }
        }
        Ok(_) if !force => bail!("{} exists; pass --force to replace it", dest.display()),
        Ok(m) => m,
    };
    let new_is_dir = std::fs::symlink_metadata(staging)
        .map(|m| m.is_dir())
        .unwrap_or(false);
    if !old.is_dir() && !new_is_dir {
        std::fs::rename(staging, dest).with_context(|| format!("replacing {}", dest.display()))?;
        guard.armed = false;
        return Ok(true);
    }
    // Move the old one aside, the new one in, then delete the old one.
    let mut aside = staging.as_os_str().to_owned();
    aside.push("-old");
    let aside = PathBuf::from(aside);
    remove_any(&aside);
    std::fs::rename(dest, &aside).with_context(|| format!("moving {} aside", dest.display()))?;
    if let Err(e) = std::fs::rename(staging, dest) {
        let _ = std::fs::rename(&aside, dest);
        return Err(e).with_context(|| format!("replacing {}", dest.display()));
    }
    guard.armed = false;
    remove_any(&aside);
    Ok(true)
}

/// Writes every item under `staging` (the first item is `staging`
/// itself), reading file content from `content`; errors name the path
/// under `dest`, where the item was to end up.
fn write_items(
    items: &[Item],
    (staging, dest): (&Path, &Path),
    content: Content<'_>,
    progress: &Progress,
) -> Result<Counts> {
    let mut guard = Staging {
        path: staging.to_path_buf(),
        armed: true,
    };
    if let Some(Kind::Special(what)) = items.first().map(|i| &i.kind) {
        bail!("it is a {what}, which ckptfs keeps as metadata only");
    }
    let root = nix::unistd::geteuid().is_root();
    let total: u64 = {
        let mut seen = std::collections::HashSet::new();
        items
            .iter()
            .filter(|i| i.kind == Kind::File && i.link.is_none_or(|l| seen.insert(l)))
            .map(|i| i.size)
            .sum()
    };
    let mut counts = Counts::default();
    let mut links: HashMap<u64, PathBuf> = HashMap::new();
    let mut dirs: Vec<(&Item, PathBuf)> = Vec::new();
    progress.update("", 0, total);
    for item in items {
        let path = join(staging, &item.rel);
        match &item.kind {
            Kind::Dir => {
                std::fs::create_dir(&path)
                    .with_context(|| format!("creating {}", join(dest, &item.rel).display()))?;
                counts.dirs += 1;
                dirs.push((item, path));
                continue;
            }
            Kind::Symlink(to) => {
                std::os::unix::fs::symlink(OsStr::from_bytes(to), &path)
                    .with_context(|| format!("creating {}", join(dest, &item.rel).display()))?;
                counts.symlinks += 1;
            }
            Kind::Special(what) => {
                eprintln!(
                    "restore: skipped {} (a {what}: ckptfs keeps them as metadata only)",
                    path.display()
                );
                counts.skipped += 1;
                continue;
            }
            Kind::File => {
                if let Some(first) = item.link.and_then(|l| links.get(&l)) {
                    std::fs::hard_link(first, &path)
                        .with_context(|| format!("linking {}", path.display()))?;
                    counts.hardlinks += 1;
                    continue;
                }
                write_file(item, &path, content, &mut |n| {
                    counts.bytes += n;
                    progress.update("", counts.bytes, total);
                })
                .with_context(|| format!("writing {}", join(dest, &item.rel).display()))?;
                counts.files += 1;
                if let Some(l) = item.link {
                    links.insert(l, path.clone());
                }
            }
        }
        set_meta(item, &path, root)?;
    }
    // Directories last, deepest first: writing into them changed their
    // mtimes, and a read-only mode would have stopped the writes.
    for (item, path) in dirs.iter().rev() {
        set_meta(item, path, root)?;
    }
    progress.update("", total, total);
    guard.armed = false;
    Ok(counts)
}

/// Owner (as root), mode (not for symlinks) and mtime of a created item.
fn set_meta(item: &Item, path: &Path, root: bool) -> Result<()> {
    if root {
        std::os::unix::fs::lchown(path, Some(item.uid), Some(item.gid))
            .with_context(|| format!("chown {}", path.display()))?;
    }
    if !matches!(item.kind, Kind::Symlink(_)) {
        std::fs::set_permissions(path, Permissions::from_mode(item.perm))
            .with_context(|| format!("chmod {}", path.display()))?;
    }
    let mtime = TimeSpec::new(item.mtime.secs, item.mtime.nanos as _);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &TimeSpec::UTIME_OMIT,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| anyhow!("setting the mtime of {}: {e}", path.display()))?;
    Ok(())
}

/// Writes one file's content, leaving runs of zeros as holes.
fn write_file(
    item: &Item,
    path: &Path,
    content: Content<'_>,
    done: &mut dyn FnMut(u64),
) -> Result<()> {
    let mut out = OpenOptions::new().write(true).create_new(true).open(path)?;
    let mut put = |out: &mut File, buf: &[u8]| -> Result<()> {
        if buf.iter().all(|&b| b == 0) {
            out.seek(SeekFrom::Current(buf.len() as i64))?;
        } else {
            out.write_all(buf)?;
        }
        done(buf.len() as u64);
        Ok(())
    };
    let mut written = 0u64;
    match &item.data {
        Data::None => {}
        Data::Path(src) => {
            let mut input = File::open(src).with_context(|| format!("{}", src.display()))?;
            let mut buf = vec![0u8; BUF];
            loop {
                let n = match input.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e).with_context(|| format!("reading {}", src.display())),
                };
                put(&mut out, &buf[..n])?;
                written += n as u64;
            }
        }
        Data::Manifest(m) => {
            let Content::Store(tree) = content else {
                bail!("no store to read from");
            };
            let mut hint = ReadHint::default();
            while written < item.size {
                let buf = tree.read_content(*m, item.size, written, BUF as u32, &mut hint)?;
                if buf.is_empty() {
                    break;
                }
                put(&mut out, &buf)?;
                written += buf.len() as u64;
            }
        }
        Data::Remote(hash) => {
            let Content::Remote(view) = content else {
                bail!("no remote to read from");
            };
            view.read_file(hash, item.size, |buf| {
                put(&mut out, buf).map_err(|e| {
                    crate::remote::RemoteError::Local(path.to_path_buf(), std::io::Error::other(e))
                })?;
                written += buf.len() as u64;
                Ok(())
            })?;
        }
    }
    if written != item.size {
        bail!("read {written} bytes of {}", item.size);
    }
    out.set_len(written)?;
    Ok(())
}
