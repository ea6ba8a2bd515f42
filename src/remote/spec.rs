//! Which remotes a store replicates to: `STORE/remotes.json`, written by
//! `ckptfs remote add|remove` and read by every push, and the URLs they
//! name (`s3://bucket/prefix`, `file:///path`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{RemoteError, Result};

/// Names that `.ckpt/remotes/` uses for its own files.
pub const RESERVED_REMOTE_NAMES: &[&str] = &["status", "push"];

/// The node directory under `.ckpt/remotes/NAME/` that shows global
/// snapshots; no node may be called so.
pub const GLOBAL_NODE: &str = "global";

/// The file in a store directory that lists its remotes.
pub const REMOTES_FILE: &str = "remotes.json";

/// Where a remote's objects live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An S3 bucket (AWS, MinIO, Ceph RADOS Gateway) and a key prefix.
    S3 {
        /// The bucket.
        bucket: String,
        /// Keys start with this (no leading or trailing `/`; may be empty).
        prefix: String,
    },
    /// A directory, typically on another disk.
    Dir(PathBuf),
}

impl Location {
    /// Parses `s3://bucket[/prefix]` or `file:///absolute/path`.
    pub fn parse(url: &str) -> Result<Location> {
        let bad = |why: &str| RemoteError::BadUrl(url.to_string(), why.to_string());
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("no bucket after s3://"));
            }
            let prefix = prefix.trim_matches('/').to_string();
            if prefix.split('/').any(|p| p == "." || p == "..") {
                return Err(bad("the prefix may not contain . or .."));
            }
            return Ok(Location::S3 {
                bucket: bucket.to_string(),
                prefix,
            });
        }
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(bad("a file:// URL needs an absolute path (file:///dir)"));
            }
            return Ok(Location::Dir(PathBuf::from(path)));
        }
        Err(bad("expected s3://bucket/prefix or file:///path"))
    }
}

/// One remote as `remotes.json` keeps it. Credentials are not kept here:
/// they come from the `AWS_*` environment variables (or the daemon's
/// config file), so the store never holds secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteSpec {
    /// Its name (`ckptfs push TARGET NAME`, `.ckpt/remotes/NAME/`).
    pub name: String,
    /// `s3://bucket/prefix` or `file:///path`.
    pub url: String,
    /// S3 endpoint (`http://127.0.0.1:7480`); else `AWS_ENDPOINT_URL`, else AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// S3 region; else `AWS_REGION`, else `us-east-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The nodes whose parts make a global snapshot whole: one appears
    /// under `.ckpt/remotes/NAME/global/` once each of them pushed its part.
    /// Empty: as soon as any node pushed one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
}

/// S3 settings that do not belong in `remotes.json`: keys (secrets) and
/// defaults for the endpoint and region, from the daemon's config file.
/// The environment's `AWS_*` variables fill what is not set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Settings {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Option<String>,
    /// The endpoint when a remote names none.
    pub endpoint: Option<String>,
    /// The region when a remote names none.
    pub region: Option<String>,
}

/// A store's remotes and the node id it pushes under.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remotes {
    /// This store's node id: its snapshots live under `snapshots/NODE/` on
    /// every remote.
    #[serde(default)]
    pub node: String,
    /// The remotes, in the order they were added.
    #[serde(default)]
    pub remotes: Vec<RemoteSpec>,
    /// Names of this store's snapshots that are parts of global snapshots
    /// (`ckptfs snapshot --global`): pushed marked as such.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub globals: Vec<String>,
}

impl Remotes {
    /// Reads `STORE/remotes.json`; a store without one has no remotes.
    pub fn load(store: &Path) -> Result<Remotes> {
        let path = store.join(REMOTES_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| RemoteError::Config(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Remotes::default()),
            Err(e) => Err(RemoteError::Local(path, e)),
        }
    }

    /// Writes `STORE/remotes.json` atomically (temp file, fsync, rename,
    /// directory fsync).
    pub fn save(&self, store: &Path) -> Result<()> {
        let path = store.join(REMOTES_FILE);
        let tmp = store.join(format!("{REMOTES_FILE}.new"));
        let text = serde_json::to_vec_pretty(self)
            .map_err(|e| RemoteError::Config(format!("encoding {}: {e}", path.display())))?;
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&text)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(store)?.sync_all()
        };
        write().map_err(|e| RemoteError::Local(path.clone(), e))
    }

    /// The remote called `name`.
    pub fn get(&self, name: &str) -> Result<&RemoteSpec> {
        self.remotes
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| RemoteError::NoSuchRemote(name.to_string()))
    }

    /// Adds a remote; its name must be new and its URL must parse.
    pub fn add(&mut self, spec: RemoteSpec) -> Result<()> {
        check_name(&spec.name, "remote")?;
        if RESERVED_REMOTE_NAMES.contains(&spec.name.as_str()) {
            return Err(RemoteError::Config(format!(
                "{} is taken by .ckpt/remotes/{}; choose another remote name",
                spec.name, spec.name
            )));
        }
        Location::parse(&spec.url)?;
        if self.remotes.iter().any(|r| r.name == spec.name) {
            return Err(RemoteError::Config(format!(
                "a remote named {} exists; remove it first",
                spec.name
            )));
        }
        self.remotes.push(spec);
        Ok(())
    }

    /// Removes a remote (nothing on the remote itself is touched).
    pub fn remove(&mut self, name: &str) -> Result<RemoteSpec> {
        let at = self
            .remotes
            .iter()
            .position(|r| r.name == name)
            .ok_or_else(|| RemoteError::NoSuchRemote(name.to_string()))?;
        Ok(self.remotes.remove(at))
    }
}

/// Remote and node names: 1-64 of `[A-Za-z0-9._-]`, not starting with `.`
/// (they become object key and directory names); `global` is no node's.
pub fn check_name(name: &str, what: &str) -> Result<()> {
    if what == "node" && name == GLOBAL_NODE {
        return Err(RemoteError::Config(format!(
            "node name {GLOBAL_NODE} is taken by the global snapshots' directory"
        )));
    }
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(RemoteError::Config(format!(
            "{what} name {name:?}: use 1-64 of A-Z a-z 0-9 . _ - (not starting with .)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_bucket_prefix_or_directory_and_bad_ones_are_named() {
        assert_eq!(
            Location::parse("s3://ckpt/runs/a/").ok(),
            Some(Location::S3 {
                bucket: "ckpt".into(),
                prefix: "runs/a".into()
            })
        );
        assert_eq!(
            Location::parse("s3://ckpt").ok(),
            Some(Location::S3 {
                bucket: "ckpt".into(),
                prefix: String::new()
            })
        );
        assert_eq!(
            Location::parse("file:///mnt/backup").ok(),
            Some(Location::Dir("/mnt/backup".into()))
        );
        for bad in [
            "s3://",
            "file://rel/dir",
            "http://x/y",
            "s3://b/../x",
            "/plain",
        ] {
            let err = Location::parse(bad).err().map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains(bad)),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn remotes_round_trip_through_the_store_file_and_names_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(Remotes::load(dir.path()).ok(), Some(Remotes::default()));
        let mut r = Remotes {
            node: "node-a".into(),
            ..Remotes::default()
        };
        let spec = |name: &str, url: &str| RemoteSpec {
            name: name.into(),
            url: url.into(),
            endpoint: None,
            region: Some("us-east-1".into()),
            nodes: Vec::new(),
        };
        assert!(r.add(spec("backup", "file:///b")).is_ok());
        assert!(r.add(spec("backup", "file:///c")).is_err(), "duplicate");
        assert!(r.add(spec("../x", "file:///c")).is_err(), "bad name");
        assert!(r.add(spec("s3", "ftp://x")).is_err(), "bad url");
        for taken in RESERVED_REMOTE_NAMES {
            assert!(r.add(spec(taken, "file:///c")).is_err(), "{taken}");
        }
        assert!(check_name(GLOBAL_NODE, "node").is_err());
        assert!(check_name(GLOBAL_NODE, "remote").is_ok());
        assert!(r.save(dir.path()).is_ok());
        let back = Remotes::load(dir.path()).ok();
        assert_eq!(back.as_ref(), Some(&r));
        assert_eq!(
            r.remove("backup").ok().map(|s| s.url),
            Some("file:///b".into())
        );
        assert!(r.remove("backup").is_err());
    }
}
