//! `ckptfs snapshot`, `snapshots`, `pin` and `unpin`: take, list and
//! (un)pin snapshots, on a mount through `.ckpt/snapshots/` (mkdir and
//! the `user.ckpt.*` xattrs) or on a store through the tree.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::show;
use super::target::{self, open_store, Ctl, Opened, Target, TargetArgs};
use crate::ids::SnapId;
use crate::tree::{SnapshotRequest, TreeError, NAME_MAX, RESERVED_SNAPSHOT_NAMES};

/// Options of `ckptfs snapshot`.
#[derive(Debug, Clone, Args)]
pub struct SnapshotArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// The new snapshot's name.
    name: OsString,
    /// This node's part of a global snapshot: pushed marked as such, it
    /// shows merged with the other nodes' parts of the same name under
    /// `.ckpt/remotes/NAME/global/` once every node listed for the remote
    /// has pushed its part.
    #[arg(long)]
    global: bool,
}

/// Options of `ckptfs snapshots`.
#[derive(Debug, Clone, Args)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

/// Options of `ckptfs pin` and `ckptfs unpin`.
#[derive(Debug, Clone, Args)]
pub struct PinArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// The snapshot's name.
    snapshot: OsString,
}

/// One snapshot as the commands show it.
#[derive(Debug, Clone)]
struct SnapInfo {
    name: String,
    created: String,
    files: u64,
    logical_bytes: u64,
    stored_bytes: u64,
    metric_name: Option<String>,
    metric: Option<f64>,
    pinned: bool,
    trigger: String,
    rules: String,
}

impl SnapInfo {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "created": self.created,
            "files": self.files,
            "logical_bytes": self.logical_bytes,
            "stored_bytes": self.stored_bytes,
            "metric_name": self.metric_name,
            "metric": self.metric,
            "pinned": self.pinned,
            "trigger": self.trigger,
            "rules": self.rules,
        })
    }
}

fn check_name(name: &OsStr) -> Result<()> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.len() > NAME_MAX {
        bail!(
            "'{}' is not a usable snapshot name (1 to {NAME_MAX} bytes, no '/')",
            name.to_string_lossy()
        );
    }
    if RESERVED_SNAPSHOT_NAMES.contains(&b) {
        bail!(
            "'{}' is reserved (a link to a snapshot); choose another name",
            name.to_string_lossy()
        );
    }
    Ok(())
}

/// `ckptfs snapshot TARGET NAME`.
pub fn snapshot(args: &SnapshotArgs) -> Result<()> {
    check_name(&args.name)?;
    let shown = args.name.to_string_lossy();
    if args.global {
        // Recorded before the snapshot exists: the daemon pushes a new
        // snapshot at once, and a pushed record never changes.
        super::remote::mark_global(&args.target, &shown)?;
    }
    let info = match target::resolve(&args.target)? {
        Target::Mount(ctl) => {
            let dir = ctl.path("snapshots").join(&args.name);
            if let Err(e) = std::fs::create_dir(&dir) {
                return Err(match e.raw_os_error() {
                    Some(libc::EEXIST) => {
                        anyhow::anyhow!("a snapshot named {shown} already exists")
                    }
                    Some(libc::EROFS) => {
                        anyhow::anyhow!("{} is mounted read-only", ctl.mnt.display())
                    }
                    _ => target::io_context(e, format!("taking snapshot {shown}")),
                });
            }
            mount_info(&ctl, &args.name)?
        }
        Target::Store(root) => {
            let opened = open_store(&root, true)?;
            let req = SnapshotRequest {
                name: Some(args.name.as_bytes().to_vec()),
                trigger: "cli".into(),
                auto: false,
            };
            let (id, _) = match opened.tree.take_snapshot(&req) {
                Ok(s) => s,
                Err(TreeError::Exists) => bail!("a snapshot named {shown} already exists"),
                Err(e) => return Err(e).with_context(|| format!("taking snapshot {shown}")),
            };
            let info = store_infos(&opened, Some(id))?.into_iter().next();
            opened.finish()?;
            info.context("the new snapshot vanished")?
        }
    };
    println!(
        "snapshot {} taken: {} files, {} logical, {} stored",
        info.name,
        info.files,
        show::bytes(info.logical_bytes),
        show::bytes(info.stored_bytes)
    );
    Ok(())
}

/// `ckptfs snapshots TARGET [--json]`.
pub fn snapshots(args: &SnapshotsArgs) -> Result<()> {
    let infos = match target::resolve(&args.target)? {
        Target::Mount(ctl) => mount_infos(&ctl)?,
        Target::Store(root) => store_infos(&open_store(&root, false)?, None)?,
    };
    if args.json {
        return show::json(&serde_json::Value::Array(
            infos.iter().map(SnapInfo::to_json).collect(),
        ));
    }
    if infos.is_empty() {
        println!("no snapshots");
        return Ok(());
    }
    let metric = infos.iter().find_map(|i| i.metric_name.clone());
    let metric_header = metric
        .as_ref()
        .map(|m| format!("METRIC({m})"))
        .unwrap_or_else(|| "METRIC".into());
    let rows: Vec<Vec<String>> = infos
        .iter()
        .map(|i| {
            vec![
                i.name.clone(),
                show::short_time(&i.created),
                i.files.to_string(),
                show::bytes(i.logical_bytes),
                show::bytes(i.stored_bytes),
                i.metric
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "-".into()),
                if i.pinned { "yes" } else { "no" }.into(),
                i.rules.clone(),
            ]
        })
        .collect();
    show::table(
        &[
            "NAME",
            "CREATED",
            "FILES",
            "LOGICAL",
            "STORED",
            &metric_header,
            "PINNED",
            "KEPT BY",
        ],
        &rows,
    );
    Ok(())
}

/// `ckptfs pin` (`pinned` true) and `ckptfs unpin`.
pub fn pin(args: &PinArgs, pinned: bool) -> Result<()> {
    let shown = args.snapshot.to_string_lossy().into_owned();
    let verb = if pinned { "pinned" } else { "unpinned" };
    let was = match target::resolve(&args.target)? {
        Target::Mount(ctl) => {
            let dir = snapshot_dir(&ctl, &args.snapshot)?;
            let before = xattr_str(&dir, "pinned")?.as_deref() == Some("1");
            xattr::set(&dir, "user.ckpt.pinned", if pinned { b"1" } else { b"0" }).map_err(
                |e| match e.raw_os_error() {
                    Some(libc::EROFS) => {
                        anyhow::anyhow!("{} is mounted read-only", ctl.mnt.display())
                    }
                    _ => target::io_context(e, format!("{verb} snapshot {shown}")),
                },
            )?;
            before
        }
        Target::Store(root) => {
            let opened = open_store(&root, true)?;
            let (id, rec) = match opened.tree.snapshot_named(args.snapshot.as_bytes()) {
                Ok(s) => s,
                Err(TreeError::NotFound) => bail!("no snapshot named {shown}"),
                Err(e) => return Err(e.into()),
            };
            if rec.pinned != pinned {
                opened.tree.set_pinned(id, pinned)?;
            }
            opened.finish()?;
            rec.pinned
        }
    };
    if was == pinned {
        println!("snapshot {shown} was already {verb}");
    } else {
        println!("snapshot {shown} {verb}");
    }
    Ok(())
}

/// `.ckpt/snapshots/NAME`, which must be a snapshot (not `latest`).
fn snapshot_dir(ctl: &Ctl, name: &OsStr) -> Result<std::path::PathBuf> {
    let dir = ctl.path("snapshots").join(name);
    match std::fs::symlink_metadata(&dir) {
        Ok(m) if m.is_dir() => Ok(dir),
        Ok(_) => bail!(
            "{} is a link, not a snapshot; name the snapshot itself",
            name.to_string_lossy()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            bail!("no snapshot named {}", name.to_string_lossy())
        }
        Err(e) => Err(target::io_context(e, dir.display())),
    }
}

/// A `user.ckpt.KEY` xattr of a snapshot directory, as text.
fn xattr_str(dir: &std::path::Path, key: &str) -> Result<Option<String>> {
    let v = xattr::get(dir, format!("user.ckpt.{key}"))
        .map_err(|e| target::io_context(e, format!("{} (xattr {key})", dir.display())))?;
    Ok(v.map(|b| String::from_utf8_lossy(&b).into_owned()))
}

fn num(dir: &std::path::Path, key: &str) -> Result<u64> {
    Ok(xattr_str(dir, key)?
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0))
}

/// A snapshot's numbers from the xattrs of its directory on a mount.
fn mount_info(ctl: &Ctl, name: &OsStr) -> Result<SnapInfo> {
    let dir = snapshot_dir(ctl, name)?;
    let names: Vec<OsString> = xattr::list(&dir)
        .map_err(|e| target::io_context(e, dir.display()))?
        .collect();
    let metric_key = names.iter().find_map(|n| {
        n.as_bytes()
            .strip_prefix(b"user.ckpt.metric.")
            .map(|m| String::from_utf8_lossy(m).into_owned())
    });
    let metric = match &metric_key {
        Some(m) => xattr_str(&dir, &format!("metric.{m}"))?.and_then(|v| v.trim().parse().ok()),
        None => None,
    };
    Ok(SnapInfo {
        name: name.to_string_lossy().into_owned(),
        created: xattr_str(&dir, "created")?.unwrap_or_default(),
        files: num(&dir, "files")?,
        logical_bytes: num(&dir, "logical_bytes")?,
        stored_bytes: num(&dir, "stored_bytes")?,
        metric_name: metric_key,
        metric,
        pinned: xattr_str(&dir, "pinned")?.as_deref().map(str::trim) == Some("1"),
        trigger: xattr_str(&dir, "trigger")?.unwrap_or_default(),
        rules: xattr_str(&dir, "rules")?.unwrap_or_default(),
    })
}

/// Every snapshot on a mount, oldest first (the listing's order).
fn mount_infos(ctl: &Ctl) -> Result<Vec<SnapInfo>> {
    let dir = ctl.path("snapshots");
    // The policy's metric, also for snapshots that have no value.
    let metric_name = std::fs::read(ctl.path("retention/status"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|s| s["metric"].as_str().map(str::to_string));
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| target::io_context(e, dir.display()))? {
        let entry = entry.map_err(|e| target::io_context(e, dir.display()))?;
        let kind = entry
            .file_type()
            .map_err(|e| target::io_context(e, entry.path().display()))?;
        if kind.is_dir() {
            let mut info = mount_info(ctl, &entry.file_name())?;
            if info.metric_name.is_none() {
                info.metric_name.clone_from(&metric_name);
            }
            out.push(info);
        }
    }
    Ok(out)
}

/// Every snapshot of an opened store (or only `only`), oldest first.
fn store_infos(opened: &Opened, only: Option<SnapId>) -> Result<Vec<SnapInfo>> {
    let tree = &opened.tree;
    let retention = &opened.retention;
    let plan = retention.plan()?;
    let kept: HashMap<u64, String> = plan
        .kept
        .iter()
        .map(|(id, reasons)| {
            (
                *id,
                reasons
                    .iter()
                    .map(|r| r.label())
                    .collect::<Vec<_>>()
                    .join(","),
            )
        })
        .collect();
    let metric_name = retention.metric_name();
    let mut out = Vec::new();
    for (id, rec) in tree.snapshots()? {
        if only.is_some_and(|o| o != id) {
            continue;
        }
        out.push(SnapInfo {
            name: String::from_utf8_lossy(&rec.name).into_owned(),
            created: show::time(rec.created),
            files: rec.files,
            logical_bytes: rec.logical_bytes,
            stored_bytes: tree.snapshot_stored_bytes(id)?,
            metric_name: metric_name.clone(),
            metric: metric_name.as_ref().and_then(|_| retention.metric_of(id)),
            pinned: rec.pinned,
            trigger: String::from_utf8_lossy(&rec.trigger).into_owned(),
            rules: kept
                .get(&id.0)
                .cloned()
                .unwrap_or_else(|| "expiring".into()),
        });
    }
    Ok(out)
}
