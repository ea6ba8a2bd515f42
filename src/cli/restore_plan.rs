//! What `ckptfs restore` copies out: SOURCE parsed against the target's
//! snapshots (`SNAPSHOT[/PATH]` or `PATH@VERSION`), then turned into a
//! list of items (directories before their contents) read either through
//! the mount's `.ckpt/` tree, from an opened store, or from a remote.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::target::{self, Ctl, Opened};
use super::versions::{self, components, display};
use crate::ids::{Ino, ManifestId, SnapId};
use crate::remote::layout::{self, RemoteSnapshot};
use crate::tree::{FileKind, InodeRecord, Scope, Time, Tree, TreeError};

/// What an item is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link to this target.
    Symlink(Vec<u8>),
    /// A FIFO, socket or device node (ckptfs keeps them as metadata only).
    Special(&'static str),
}

/// Where a file's bytes come from.
#[derive(Debug, Clone)]
pub enum Data {
    /// Nothing to read (not a file, or empty).
    None,
    /// A file under the mount's `.ckpt/`.
    Path(PathBuf),
    /// Content in the opened store.
    Manifest(ManifestId),
    /// Content on a remote: a `manifests/` hash.
    Remote(String),
}

/// One thing to create under DEST.
#[derive(Debug, Clone)]
pub struct Item {
    /// Its path below DEST (empty: DEST itself).
    pub rel: Vec<Vec<u8>>,
    /// What it is.
    pub kind: Kind,
    /// Permission bits.
    pub perm: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time.
    pub mtime: Time,
    /// Size in bytes (files).
    pub size: u64,
    /// Identifies the inode of a file with several links, so that its
    /// names are restored as hard links.
    pub link: Option<u64>,
    /// Its content.
    pub data: Data,
}

/// What SOURCE names.
#[derive(Debug, Clone)]
pub enum Source {
    /// A snapshot (its real name), and a path inside it (empty: all of it).
    Snapshot(Vec<u8>, Vec<Vec<u8>>),
    /// One version of a file.
    Version(Vec<Vec<u8>>, String),
}

/// Parses SOURCE. `snapshot(first)` says whether the first component is
/// a snapshot (and its real name: `latest` and `best` are followed): then
/// it is a snapshot restore; otherwise `@` makes it a version restore.
pub fn parse_source(
    src: &OsStr,
    mnt: Option<&Path>,
    snapshot: impl Fn(&[u8]) -> Result<Option<Vec<u8>>>,
) -> Result<Source> {
    let bytes = src.as_bytes();
    let trimmed = bytes
        .iter()
        .position(|&b| b != b'/')
        .map_or(&bytes[..0], |i| &bytes[i..]);
    let first = trimmed.split(|&b| b == b'/').next().unwrap_or_default();
    if !first.is_empty() && first != b"." && first != b".." {
        if let Some(name) = snapshot(first)? {
            let rest = OsStr::from_bytes(&trimmed[first.len()..]);
            return Ok(Source::Snapshot(name, components(rest, None)?));
        }
    }
    if let Some(at) = bytes.iter().rposition(|&b| b == b'@') {
        let path = components(OsStr::from_bytes(&bytes[..at]), mnt)?;
        let version = String::from_utf8_lossy(&bytes[at + 1..]).into_owned();
        if path.is_empty() {
            bail!("'{}': the path before @ is empty", src.to_string_lossy());
        }
        return Ok(Source::Version(path, version));
    }
    bail!(
        "no snapshot named {}; to restore one version of a file write PATH@VERSION (VERSION: a number, a version name or latest)",
        String::from_utf8_lossy(first)
    )
}

fn time_of(secs: i64, nsec: i64) -> Time {
    Time {
        secs,
        nanos: nsec.clamp(0, 999_999_999) as u32,
    }
}

/// An item from `lstat` of a path under the mount's `.ckpt/`.
fn mount_item(path: &Path, rel: Vec<Vec<u8>>, m: &std::fs::Metadata) -> Result<Item> {
    use std::os::unix::fs::FileTypeExt;
    let ft = m.file_type();
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else if ft.is_symlink() {
        let target = std::fs::read_link(path).map_err(|e| target::io_context(e, path.display()))?;
        Kind::Symlink(target.as_os_str().as_bytes().to_vec())
    } else if ft.is_fifo() {
        Kind::Special("FIFO")
    } else if ft.is_socket() {
        Kind::Special("socket")
    } else {
        Kind::Special("device node")
    };
    let file = kind == Kind::File;
    Ok(Item {
        rel,
        perm: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime: time_of(m.mtime(), m.mtime_nsec()),
        size: if file { m.size() } else { 0 },
        link: (file && m.nlink() > 1).then_some(m.ino()),
        data: if file && m.size() > 0 {
            Data::Path(path.to_path_buf())
        } else {
            Data::None
        },
        kind,
    })
}

/// Every item under a path of the mount's `.ckpt/`, itself first.
fn walk_mount(root: &Path) -> Result<Vec<Item>> {
    let meta =
        std::fs::symlink_metadata(root).map_err(|e| target::io_context(e, root.display()))?;
    let mut items = vec![mount_item(root, Vec::new(), &meta)?];
    if !meta.is_dir() {
        return Ok(items);
    }
    let mut stack = vec![(root.to_path_buf(), Vec::<Vec<u8>>::new())];
    while let Some((dir, rel)) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| target::io_context(e, dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| target::io_context(e, dir.display()))?;
            let path = entry.path();
            let m = std::fs::symlink_metadata(&path)
                .map_err(|e| target::io_context(e, path.display()))?;
            let mut child = rel.clone();
            child.push(entry.file_name().as_bytes().to_vec());
            let item = mount_item(&path, child.clone(), &m)?;
            if item.kind == Kind::Dir {
                stack.push((path, child));
            }
            items.push(item);
        }
    }
    Ok(items)
}

/// The items of a restore through a mount.
pub fn mount_items(ctl: &Ctl, source: &Source) -> Result<Vec<Item>> {
    match source {
        Source::Snapshot(name, path) => {
            let base = ctl.path("snapshots").join(OsStr::from_bytes(name));
            let root = versions::join(&base, path);
            match std::fs::symlink_metadata(&root) {
                Ok(_) => walk_mount(&root),
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => bail!(
                    "snapshot {} has no {}",
                    String::from_utf8_lossy(name),
                    display(path)
                ),
                Err(e) => Err(target::io_context(e, root.display())),
            }
        }
        Source::Version(path, spec) => {
            let rows = versions::mount_versions(ctl, path)?;
            let row = versions::pick(&rows, |r| r, spec, &display(path))?;
            let file = versions::join(&ctl.path("versions"), path).join(&row.name);
            let m = std::fs::symlink_metadata(&file)
                .map_err(|e| target::io_context(e, file.display()))?;
            let mut item = mount_item(&file, Vec::new(), &m)?;
            item.link = None;
            Ok(vec![item])
        }
    }
}

/// Resolves a snapshot name on a mount (following `latest` and `best`).
pub fn mount_snapshot(ctl: &Ctl, name: &[u8]) -> Result<Option<Vec<u8>>> {
    let path = ctl.path("snapshots").join(OsStr::from_bytes(name));
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_dir() => Ok(Some(name.to_vec())),
        Ok(m) if m.file_type().is_symlink() => {
            let t = std::fs::read_link(&path).map_err(|e| target::io_context(e, path.display()))?;
            Ok(Some(t.as_os_str().as_bytes().to_vec()))
        }
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(target::io_context(e, path.display())),
    }
}

/// Resolves a snapshot name in a store (following `latest` and `best`).
pub fn store_snapshot(opened: &Opened, name: &[u8]) -> Result<Option<Vec<u8>>> {
    let tree = &opened.tree;
    let id = match name {
        b"latest" => tree.snapshots()?.last().map(|(id, _)| *id),
        b"best" => opened.retention.best()?,
        _ => match tree.snapshot_named(name) {
            Ok((id, _)) => Some(id),
            Err(TreeError::NotFound) => None,
            Err(e) => return Err(e.into()),
        },
    };
    Ok(match id {
        Some(id) => Some(tree.snapshot(id)?.name),
        None => None,
    })
}

fn store_item(rel: Vec<Vec<u8>>, ino: Ino, rec: &InodeRecord) -> Item {
    let kind = match rec.kind {
        FileKind::Dir => Kind::Dir,
        FileKind::File => Kind::File,
        FileKind::Symlink => Kind::Symlink(rec.target.clone()),
        FileKind::Fifo => Kind::Special("FIFO"),
        FileKind::Socket => Kind::Special("socket"),
        FileKind::CharDev | FileKind::BlockDev => Kind::Special("device node"),
    };
    let file = kind == Kind::File;
    Item {
        rel,
        perm: rec.perm as u32 & 0o7777,
        uid: rec.uid,
        gid: rec.gid,
        mtime: rec.mtime,
        size: if file { rec.size } else { 0 },
        link: (file && rec.nlink > 1).then_some(ino.0),
        data: if file && rec.content != ManifestId::EMPTY && rec.size > 0 {
            Data::Manifest(rec.content)
        } else {
            Data::None
        },
        kind,
    }
}

/// Every item under an inode of a snapshot, itself first.
fn walk_store(tree: &Tree, scope: Scope, ino: Ino, rec: &InodeRecord) -> Result<Vec<Item>> {
    let mut items = vec![store_item(Vec::new(), ino, rec)];
    if rec.kind != FileKind::Dir {
        return Ok(items);
    }
    let mut stack = vec![(ino, Vec::<Vec<u8>>::new())];
    while let Some((dir, rel)) = stack.pop() {
        let mut children = Vec::new();
        tree.readdir_in(scope, dir, 2, |item| {
            children.push((item.ino, item.name.to_vec()));
            true
        })?;
        for (child, name) in children {
            let crec = tree.inode_in(scope, child)?;
            let mut path = rel.clone();
            path.push(name);
            if crec.kind == FileKind::Dir {
                stack.push((child, path.clone()));
            }
            items.push(store_item(path, child, &crec));
        }
    }
    Ok(items)
}

/// The items of a restore from an opened store.
pub fn store_items(opened: &Opened, source: &Source) -> Result<Vec<Item>> {
    let tree = &opened.tree;
    match source {
        Source::Snapshot(name, path) => {
            let (id, snap): (SnapId, _) = tree.snapshot_named(name)?;
            let scope = Scope::Snapshot(id);
            let mut ino = Ino::ROOT;
            let mut rec = tree.inode_in(scope, ino)?;
            for c in path {
                (ino, rec) = match tree.lookup_in(scope, ino, c) {
                    Ok(found) => found,
                    Err(TreeError::NotFound | TreeError::NotDir) => bail!(
                        "snapshot {} has no {}",
                        String::from_utf8_lossy(name),
                        display(path)
                    ),
                    Err(e) => return Err(e.into()),
                };
            }
            if ino == Ino::ROOT {
                // As `.ckpt/snapshots/NAME` shows it.
                rec.mtime = snap.created;
            }
            walk_store(tree, scope, ino, &rec)
        }
        Source::Version(path, spec) => {
            let (_, rows) = versions::store_versions(tree, path)?;
            let (_, v) = versions::pick(&rows, |(r, _)| r, spec, &display(path))?;
            Ok(vec![Item {
                rel: Vec::new(),
                kind: Kind::File,
                perm: v.perm as u32 & 0o7777,
                uid: v.uid,
                gid: v.gid,
                mtime: v.mtime,
                size: v.size,
                link: None,
                data: if v.manifest == ManifestId::EMPTY || v.size == 0 {
                    Data::None
                } else {
                    Data::Manifest(v.manifest)
                },
            }])
        }
    }
}

/// The items of a restore from a remote snapshot: the item at `path`
/// (empty: the whole snapshot) and everything below it, in the snapshot's
/// order (directories before their contents).
pub fn remote_items(snap: &RemoteSnapshot, path: &[Vec<u8>]) -> Result<Vec<Item>> {
    let want = path.join(&b'/');
    let mut items = Vec::new();
    for ri in &snap.items {
        let Some(full) = layout::from_text(&ri.path) else {
            bail!(
                "snapshot {} holds a malformed path {:?}",
                snap.name,
                ri.path
            );
        };
        let rel: Vec<Vec<u8>> = if want.is_empty() {
            full.split(|&b| b == b'/')
                .filter(|c| !c.is_empty())
                .map(<[u8]>::to_vec)
                .collect()
        } else if full == want {
            Vec::new()
        } else if full.starts_with(&want) && full.get(want.len()) == Some(&b'/') {
            full[want.len() + 1..]
                .split(|&b| b == b'/')
                .map(<[u8]>::to_vec)
                .collect()
        } else {
            continue;
        };
        let kind = match ri.kind.as_str() {
            "dir" => Kind::Dir,
            "file" => Kind::File,
            "symlink" => Kind::Symlink(
                ri.target
                    .as_deref()
                    .and_then(layout::from_text)
                    .unwrap_or_default(),
            ),
            "fifo" => Kind::Special("FIFO"),
            "socket" => Kind::Special("socket"),
            _ => Kind::Special("device node"),
        };
        let top = rel.is_empty();
        items.push(Item {
            rel,
            perm: ri.perm & 0o7777,
            uid: ri.uid,
            gid: ri.gid,
            mtime: Time {
                secs: ri.mtime_secs,
                nanos: ri.mtime_nanos.min(999_999_999),
            },
            size: ri.size,
            link: ri.link,
            data: match &ri.manifest {
                Some(h) if kind == Kind::File && ri.size > 0 => Data::Remote(h.clone()),
                _ => Data::None,
            },
            kind,
        });
        if top {
            // The item itself comes first, whatever the walk order.
            let last = items.len() - 1;
            items.swap(0, last);
        }
    }
    if items.is_empty() {
        bail!("snapshot {} has no {}", snap.name, display(path));
    }
    Ok(items)
}

/// Picks a remote snapshot by name (`latest`: the newest), optionally of
/// one node; a name several nodes use needs `--node`.
pub fn pick_remote<'s>(
    snaps: &'s [std::sync::Arc<RemoteSnapshot>],
    name: &[u8],
    node: Option<&str>,
) -> Result<Option<&'s RemoteSnapshot>> {
    let of_node = |s: &&RemoteSnapshot| node.is_none_or(|n| s.node == n);
    let snaps = snaps.iter().map(|s| &**s);
    if name == b"latest" {
        return Ok(snaps.rev().find(of_node));
    }
    let found: Vec<&RemoteSnapshot> = snaps
        .filter(of_node)
        .filter(|s| layout::from_text(&s.name).as_deref() == Some(name))
        .collect();
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        many => bail!(
            "snapshot {} exists on nodes {}; pass --node NODE",
            String::from_utf8_lossy(name),
            many.iter()
                .map(|s| s.node.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
