//! `ckptfs versions TARGET PATH`: the committed versions of one path, as
//! `.ckpt/versions/PATH/` lists them (on a mount) or as the history
//! records hold them (on a store). Also the path and version-name helpers
//! `restore` shares.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;

use super::show;
use super::target::{self, open_store, Ctl, Target, TargetArgs};
use crate::fs::version_name;
use crate::ids::PathId;
use crate::tree::{Time, Tree, TreeError, VersionRecord};

/// Options of `ckptfs versions`.
#[derive(Debug, Clone, Args)]
pub struct VersionsArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// The file's path from the mount root (an absolute path inside the
    /// mount works too).
    path: OsString,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

/// One version of a path.
#[derive(Debug, Clone)]
pub struct VersionRow {
    /// Its number (per path, from 1).
    pub seq: u64,
    /// Its file name under `.ckpt/versions/PATH/`.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its permission bits.
    pub mode: u32,
    /// Its mtime.
    pub mtime: Time,
    /// When it was committed.
    pub committed: Time,
}

impl VersionRow {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "seq": self.seq,
            "name": self.name,
            "size": self.size,
            "mode": show::mode(self.mode),
            "mtime": show::time(self.mtime),
            "committed": show::time(self.committed),
        })
    }
}

/// The components of PATH, relative to the mount root. An absolute path
/// under `mnt` is made relative to it; `..` is refused.
pub fn components(path: &OsStr, mnt: Option<&Path>) -> Result<Vec<Vec<u8>>> {
    let p = Path::new(path);
    let mut rel = p;
    if let Some(mnt) = mnt.filter(|_| p.is_absolute()) {
        let canonical = std::fs::canonicalize(mnt).unwrap_or_else(|_| mnt.to_path_buf());
        if let Ok(r) = p.strip_prefix(mnt).or_else(|_| p.strip_prefix(&canonical)) {
            rel = r;
        }
    }
    let mut out = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => out.push(n.as_bytes().to_vec()),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                bail!("{}: '..' is not allowed here", p.display())
            }
        }
    }
    Ok(out)
}

/// Joins components onto `base`.
pub fn join(base: &Path, comps: &[Vec<u8>]) -> PathBuf {
    let mut p = base.to_path_buf();
    for c in comps {
        p.push(OsStr::from_bytes(c));
    }
    p
}

/// Components as `/a/b`, for messages.
pub fn display(comps: &[Vec<u8>]) -> String {
    let parts: Vec<String> = comps
        .iter()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    format!("/{}", parts.join("/"))
}

/// The number of a version file name (`NNNNNN-YYYYMMDDTHHMMSSZ`).
pub fn parse_version_name(name: &str) -> Option<u64> {
    let (seq, stamp) = name.split_once('-')?;
    if stamp.len() != 16 || !stamp.ends_with('Z') || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    seq.parse().ok()
}

/// The versions under `.ckpt/versions/PATH/` on a mount, oldest first.
pub fn mount_versions(ctl: &Ctl, comps: &[Vec<u8>]) -> Result<Vec<VersionRow>> {
    let dir = join(&ctl.path("versions"), comps);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
            bail!(
                "{} has no versions (it is not in the history)",
                display(comps)
            )
        }
        Err(e) => return Err(target::io_context(e, dir.display())),
    };
    let mut rows = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| target::io_context(e, dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(seq) = parse_version_name(&name) else {
            continue;
        };
        let m = match std::fs::symlink_metadata(entry.path()) {
            Ok(m) => m,
            // Expired by a GC since the listing.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(target::io_context(e, entry.path().display())),
        };
        if !m.is_file() {
            continue;
        }
        rows.push(VersionRow {
            seq,
            name,
            size: m.size(),
            mode: m.mode() & 0o7777,
            mtime: Time {
                secs: m.mtime(),
                nanos: m.mtime_nsec().clamp(0, 999_999_999) as u32,
            },
            committed: Time {
                secs: m.ctime(),
                nanos: m.ctime_nsec().clamp(0, 999_999_999) as u32,
            },
        });
    }
    rows.sort_by_key(|r| r.seq);
    if rows.is_empty() {
        bail!(
            "{} has no versions (a directory in the history?)",
            display(comps)
        );
    }
    Ok(rows)
}

/// The versions of a history path in an opened store, oldest first, with
/// their records.
pub fn store_versions(
    tree: &Tree,
    comps: &[Vec<u8>],
) -> Result<(PathId, Vec<(VersionRow, VersionRecord)>)> {
    let mut p = PathId::ROOT;
    for c in comps {
        p = match tree.history_child(p, c) {
            Ok(child) => child,
            Err(TreeError::NotFound) => {
                bail!(
                    "{} has no versions (it is not in the history)",
                    display(comps)
                )
            }
            Err(e) => return Err(e.into()),
        };
    }
    let mut out = Vec::new();
    tree.versions_of(p, 0, |seq, v| {
        out.push((
            VersionRow {
                seq,
                name: version_name(seq, v.committed),
                size: v.size,
                mode: v.perm as u32 & 0o7777,
                mtime: v.mtime,
                committed: v.committed,
            },
            v,
        ));
        true
    })?;
    if out.is_empty() {
        bail!(
            "{} has no versions (a directory in the history?)",
            display(comps)
        );
    }
    Ok((p, out))
}

/// Picks VERSION among `rows`: a number, a full version name, or `latest`.
pub fn pick<'a, T>(
    rows: &'a [T],
    row: impl Fn(&T) -> &VersionRow,
    spec: &str,
    path: &str,
) -> Result<&'a T> {
    let found = if spec == "latest" {
        rows.iter().max_by_key(|r| row(r).seq)
    } else if !spec.is_empty() && spec.bytes().all(|b| b.is_ascii_digit()) {
        let seq: u64 = spec.parse()?;
        rows.iter().find(|r| row(r).seq == seq)
    } else if parse_version_name(spec).is_some() {
        rows.iter().find(|r| row(r).name == spec)
    } else {
        bail!("'{spec}' is not a version: use a number, a version name (NNNNNN-YYYYMMDDTHHMMSSZ) or latest")
    };
    match found {
        Some(r) => Ok(r),
        None => {
            let have: Vec<String> = rows.iter().map(|r| row(r).seq.to_string()).collect();
            bail!("{path} has no version {spec} (it has {})", have.join(", "))
        }
    }
}

/// `ckptfs versions TARGET PATH [--json]`.
pub fn versions(args: &VersionsArgs) -> Result<()> {
    let rows = match target::resolve(&args.target)? {
        Target::Mount(ctl) => {
            let comps = components(&args.path, Some(&ctl.mnt))?;
            mount_versions(&ctl, &comps)?
        }
        Target::Store(root) => {
            let comps = components(&args.path, None)?;
            let opened = open_store(&root, false)?;
            let (_, rows) = store_versions(&opened.tree, &comps)?;
            rows.into_iter().map(|(r, _)| r).collect()
        }
    };
    if args.json {
        return show::json(&serde_json::Value::Array(
            rows.iter().map(VersionRow::to_json).collect(),
        ));
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.seq.to_string(),
                r.name.clone(),
                show::bytes(r.size),
                show::mode(r.mode),
                show::short_time(&show::time(r.mtime)),
                show::short_time(&show::time(r.committed)),
            ]
        })
        .collect();
    show::table(
        &["SEQ", "VERSION", "SIZE", "MODE", "MTIME", "COMMITTED"],
        &table,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_names_and_paths_parse() {
        assert_eq!(parse_version_name("000012-20261126T031604Z"), Some(12));
        assert_eq!(parse_version_name("latest"), None);
        assert_eq!(parse_version_name("12-x"), None);
        let c = components(OsStr::new("/a/./b/c.pt"), None).unwrap();
        assert_eq!(c, vec![b"a".to_vec(), b"b".to_vec(), b"c.pt".to_vec()]);
        assert!(components(OsStr::new("a/../b"), None).is_err());
        let c = components(OsStr::new("/mnt/x/a.pt"), Some(Path::new("/mnt/x"))).unwrap();
        assert_eq!(c, vec![b"a.pt".to_vec()]);
    }
}
