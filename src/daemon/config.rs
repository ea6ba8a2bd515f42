//! The TOML config file of `ckptfs mount --config FILE`: its keys (the
//! flag names without `--`, plus a `[retention]` table), their values
//! (the same syntax as the flags), and errors as `FILE:LINE: reason`.
//! `systemd/ckptfs.example.toml` documents every key.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;

use super::values::{
    check_threads, parse_control_dir, parse_interval, parse_log_level, parse_size,
};
use crate::retention::{Policy, PolicyError};

/// A config file that cannot be used; the message names the file and,
/// when known, the line.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// Something at a known line is wrong.
    #[error("{}:{line}: {reason}", path.display())]
    At {
        /// The file.
        path: PathBuf,
        /// The line at fault, counted from 1.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// Something is wrong and no line can be named.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The options a config file gives; `None` where it says nothing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigFile {
    /// `store`: the store directory (relative: to the file's directory).
    pub store: Option<PathBuf>,
    /// `mountpoint`: where to mount (relative: to the file's directory).
    pub mountpoint: Option<PathBuf>,
    /// `allow-other`.
    pub allow_other: Option<bool>,
    /// `read-only`.
    pub read_only: Option<bool>,
    /// `chunk-size`: "16K" or bytes.
    #[serde(default, deserialize_with = "size")]
    pub chunk_size: Option<u64>,
    /// `log-level`.
    #[serde(default, deserialize_with = "level")]
    pub log_level: Option<log::LevelFilter>,
    /// `fuse-threads`.
    #[serde(default, deserialize_with = "threads")]
    pub fuse_threads: Option<u16>,
    /// `workers`.
    #[serde(default, deserialize_with = "threads")]
    pub workers: Option<u16>,
    /// `cache-size`: "64M" or bytes.
    #[serde(default, deserialize_with = "size")]
    pub cache_size: Option<u64>,
    /// `relocate-below`: "128K" or bytes; 0 turns relocation off.
    #[serde(default, deserialize_with = "size")]
    pub relocate_below: Option<u64>,
    /// `compression`: "auto", "lz4" or "none".
    #[serde(default, deserialize_with = "compression")]
    pub compression: Option<crate::chunk::Compression>,
    /// `chunker`: "rollsum", "fastcdc" or "window" (for a new store).
    #[serde(default, deserialize_with = "chunker")]
    pub chunker: Option<crate::chunk::CutSearch>,
    /// `control-dir`.
    #[serde(default, deserialize_with = "control_dir")]
    pub control_dir: Option<String>,
    /// `show-control-dir`.
    pub show_control_dir: Option<bool>,
    /// `snapshot-wait`, seconds.
    pub snapshot_wait: Option<u64>,
    /// `snapshot-on-close`: a list of globs (or one glob).
    #[serde(default, deserialize_with = "globs")]
    pub snapshot_on_close: Option<Vec<String>>,
    /// `snapshot-quiet`, seconds.
    pub snapshot_quiet: Option<u64>,
    /// `no-snapshot-on-rename`.
    pub no_snapshot_on_rename: Option<bool>,
    /// `no-snapshot-on-marker`.
    pub no_snapshot_on_marker: Option<bool>,
    /// `gc-interval`: "10m", or 0 for off.
    #[serde(default, deserialize_with = "interval")]
    pub gc_interval: Option<Duration>,
    /// `sync-interval`: "5s", or 0 for a durable close.
    #[serde(default, deserialize_with = "interval")]
    pub sync_interval: Option<Duration>,
    /// `[retention]`: `policy = """..."""` or the policy's keys.
    #[serde(default)]
    retention: Option<BTreeMap<Spanned<String>, Spanned<toml::Value>>>,
    /// The retention policy text, checked, once [`load`] has built it.
    #[serde(skip)]
    pub retention_policy: Option<String>,
    /// `[s3]`: keys and default endpoint and region for S3 remotes.
    #[serde(default)]
    pub s3: Option<S3Table>,
}

/// The `[s3]` table: what the `AWS_*` variables would otherwise give.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct S3Table {
    /// `access-key-id`.
    pub access_key_id: Option<String>,
    /// `secret-access-key`.
    pub secret_access_key: Option<String>,
    /// `endpoint`: used when a remote names none.
    pub endpoint: Option<String>,
    /// `region`: used when a remote names none.
    pub region: Option<String>,
}

/// Reads and checks a config file. Relative paths in it are taken from
/// the file's directory; the retention policy is parsed here, so a bad
/// one is refused before anything is mounted.
pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    parse(path, &text)
}

/// [`load`] on text already read.
pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, ConfigError> {
    let mut file: ConfigFile = toml::from_str(text).map_err(|e| {
        let reason = one_line(e.message());
        match e.span() {
            Some(span) => at(path, text, span, reason),
            None => ConfigError::File {
                path: path.to_path_buf(),
                reason,
            },
        }
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    for p in [&mut file.store, &mut file.mountpoint]
        .into_iter()
        .flatten()
    {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    }
    if let Some(table) = file.retention.take() {
        file.retention_policy = retention_policy(path, text, table)?;
    }
    Ok(file)
}

fn at(path: &Path, text: &str, span: Range<usize>, reason: String) -> ConfigError {
    ConfigError::At {
        path: path.to_path_buf(),
        line: line_of(text, span.start),
        reason,
    }
}

/// The 1-based line holding byte `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// toml's messages can span lines ("expected ..." on the next one).
fn one_line(message: &str) -> String {
    let parts: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    parts.join("; ")
}

/// The `[retention]` table as policy text: `policy = "..."` as written,
/// or one `key = value` line per key (in file order). Checked with the
/// policy parser; its line numbers are mapped back to the file.
fn retention_policy(
    path: &Path,
    text: &str,
    table: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
) -> Result<Option<String>, ConfigError> {
    let mut entries: Vec<(Spanned<String>, Spanned<toml::Value>)> = table.into_iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    let fail = |span: Range<usize>, reason: String| at(path, text, span, reason);
    let Some(pos) = entries.iter().position(|(k, _)| k.get_ref() == "policy") else {
        return policy_from_keys(entries, &fail);
    };
    if let Some((other, _)) = entries.iter().find(|(k, _)| k.get_ref() != "policy") {
        return Err(fail(
            other.span(),
            format!(
                "[retention] takes either `policy = \"\"\"...\"\"\"` or the policy's keys, \
                 not both (found `policy` and `{}`)",
                other.get_ref()
            ),
        ));
    }
    let (_, value) = entries.swap_remove(pos);
    let span = value.span();
    let toml::Value::String(policy) = value.into_inner() else {
        return Err(fail(span, "`policy` must be a string".into()));
    };
    if let Err(e) = Policy::parse(&policy) {
        // A multi-line string starting with a newline drops it.
        let raw = text.get(span.start..).unwrap_or("");
        let skip = usize::from(
            (raw.starts_with("\"\"\"") || raw.starts_with("'''"))
                && (raw[3..].starts_with('\n') || raw[3..].starts_with("\r\n")),
        );
        let (line, reason) = policy_error(&e);
        return Err(ConfigError::At {
            path: path.to_path_buf(),
            line: line_of(text, span.start) + skip + line.saturating_sub(1),
            reason: format!("retention policy: {reason}"),
        });
    }
    Ok(Some(policy))
}

/// Builds policy text from `[retention]` keys, one line each.
fn policy_from_keys(
    entries: Vec<(Spanned<String>, Spanned<toml::Value>)>,
    fail: &dyn Fn(Range<usize>, String) -> ConfigError,
) -> Result<Option<String>, ConfigError> {
    if entries.is_empty() {
        return Ok(None);
    }
    let mut lines = Vec::with_capacity(entries.len());
    for (key, value) in &entries {
        let v = match value.get_ref() {
            toml::Value::String(s) if !s.contains('\n') => format!("\"{s}\""),
            toml::Value::Integer(n) => n.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => {
                return Err(fail(
                    value.span(),
                    format!(
                        "retention `{}` must be a one-line string, a number or a boolean",
                        key.get_ref()
                    ),
                ))
            }
        };
        lines.push(format!("{} = {v}", key.get_ref()));
    }
    let policy = lines.join("\n") + "\n";
    if let Err(e) = Policy::parse(&policy) {
        let (line, reason) = policy_error(&e);
        let key = entries
            .get(line.saturating_sub(1))
            .or(entries.first())
            .map(|(k, _)| k.span())
            .unwrap_or(0..0);
        return Err(fail(key, format!("retention policy: {reason}")));
    }
    Ok(Some(policy))
}

fn policy_error(e: &PolicyError) -> (usize, String) {
    match e {
        PolicyError::Parse { line, reason } => (*line, reason.clone()),
        #[allow(unreachable_patterns)]
        other => (0, other.to_string()),
    }
}

/// A value written as a string or a bare number, as text.
fn text_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string or a number")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    d.deserialize_any(V)
}

fn size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let t = text_or_number(d)?;
    parse_size(&t).map(Some).map_err(de::Error::custom)
}

fn interval<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let t = text_or_number(d)?;
    parse_interval(&t).map(Some).map_err(de::Error::custom)
}

fn compression<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<crate::chunk::Compression>, D::Error> {
    let t = String::deserialize(d)?;
    t.parse().map(Some).map_err(de::Error::custom)
}

fn chunker<'de, D: Deserializer<'de>>(d: D) -> Result<Option<crate::chunk::CutSearch>, D::Error> {
    let t = String::deserialize(d)?;
    t.parse().map(Some).map_err(de::Error::custom)
}

fn level<'de, D: Deserializer<'de>>(d: D) -> Result<Option<log::LevelFilter>, D::Error> {
    let t = String::deserialize(d)?;
    parse_log_level(&t).map(Some).map_err(de::Error::custom)
}

fn control_dir<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let t = String::deserialize(d)?;
    parse_control_dir(&t).map(Some).map_err(de::Error::custom)
}

fn threads<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    let n = i64::deserialize(d)?;
    check_threads(n).map(Some).map_err(de::Error::custom)
}

fn globs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    match OneOrMany::deserialize(d) {
        Ok(OneOrMany::One(g)) => Ok(Some(vec![g])),
        Ok(OneOrMany::Many(v)) => Ok(Some(v)),
        Err(_) => Err(de::Error::custom(
            "expected a glob or a list of globs, e.g. [\"*.safetensors\"]",
        )),
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
