//! Unit tests of the config file: every key parses, and each kind of bad
//! file is refused with `FILE:LINE: reason`.

#![allow(clippy::unwrap_used)]

use super::*;

const FILE: &str = "/etc/ckptfs/srv-runs.toml";

fn ok(text: &str) -> ConfigFile {
    parse(Path::new(FILE), text).unwrap_or_else(|e| panic!("{e}"))
}

fn refused(text: &str) -> String {
    match parse(Path::new(FILE), text) {
        Ok(f) => panic!("accepted: {f:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_key_parses() {
    let f = ok(r#"
store = "/srv/ckptfs/runs"
mountpoint = "/srv/runs"
chunk-size = "64K"
control-dir = ".history"
show-control-dir = true
snapshot-wait = 120
snapshot-on-close = ["*.safetensors", "ckpt/*.pt"]
snapshot-quiet = 300
no-snapshot-on-rename = true
no-snapshot-on-marker = false
gc-interval = "1h"
sync-interval = "2s"
log-level = "debug"
allow-other = true
read-only = false
fuse-threads = 8
workers = 2
cache-size = "256M"
relocate-below = "64K"
compression = "lz4"
chunker = "fastcdc"

[retention]
policy = """
keep-last = 5
keep-daily = 7
"""

[s3]
access-key-id = "AKIAEXAMPLE"
secret-access-key = "secret"
endpoint = "http://127.0.0.1:7480"
region = "eu-west-1"
"#);
    let s3 = f.s3.clone().unwrap_or_default();
    assert_eq!(s3.access_key_id.as_deref(), Some("AKIAEXAMPLE"));
    assert_eq!(s3.secret_access_key.as_deref(), Some("secret"));
    assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:7480"));
    assert_eq!(s3.region.as_deref(), Some("eu-west-1"));
    assert_eq!(f.store, Some(PathBuf::from("/srv/ckptfs/runs")));
    assert_eq!(f.mountpoint, Some(PathBuf::from("/srv/runs")));
    assert_eq!(f.chunk_size, Some(64 << 10));
    assert_eq!(f.compression, Some(crate::chunk::Compression::Lz4));
    assert_eq!(f.chunker, Some(crate::chunk::CutSearch::FastCdc));
    assert_eq!(f.control_dir.as_deref(), Some(".history"));
    assert_eq!(f.show_control_dir, Some(true));
    assert_eq!(f.snapshot_wait, Some(120));
    assert_eq!(
        f.snapshot_on_close,
        Some(vec!["*.safetensors".to_string(), "ckpt/*.pt".to_string()])
    );
    assert_eq!(f.snapshot_quiet, Some(300));
    assert_eq!(f.no_snapshot_on_rename, Some(true));
    assert_eq!(f.no_snapshot_on_marker, Some(false));
    assert_eq!(f.gc_interval, Some(Duration::from_secs(3600)));
    assert_eq!(f.sync_interval, Some(Duration::from_secs(2)));
    assert_eq!(f.log_level, Some(log::LevelFilter::Debug));
    assert_eq!(f.allow_other, Some(true));
    assert_eq!(f.read_only, Some(false));
    assert_eq!(f.fuse_threads, Some(8));
    assert_eq!(f.workers, Some(2));
    assert_eq!(f.cache_size, Some(256 << 20));
    assert_eq!(f.relocate_below, Some(64 << 10));
    assert_eq!(
        f.retention_policy.as_deref(),
        Some("keep-last = 5\nkeep-daily = 7\n")
    );
}

#[test]
fn an_empty_file_gives_nothing() {
    let f = ok("# nothing here\n");
    assert!(f.store.is_none() && f.chunk_size.is_none() && f.retention_policy.is_none());
}

#[test]
fn numbers_and_single_globs_are_accepted_where_flags_take_text() {
    let f = ok(
        "chunk-size = 32768\ngc-interval = 0\nsync-interval = 0\nsnapshot-on-close = \"*.pt\"\n",
    );
    assert_eq!(f.chunk_size, Some(32768));
    assert_eq!(f.gc_interval, Some(Duration::ZERO));
    assert_eq!(f.sync_interval, Some(Duration::ZERO));
    assert_eq!(f.snapshot_on_close, Some(vec!["*.pt".to_string()]));
}

#[test]
fn relative_paths_are_taken_from_the_file_directory() {
    let f = ok("store = \"store\"\nmountpoint = \"/abs/mnt\"\n");
    assert_eq!(f.store, Some(PathBuf::from("/etc/ckptfs/store")));
    assert_eq!(f.mountpoint, Some(PathBuf::from("/abs/mnt")));
}

#[test]
fn a_syntax_error_names_the_line() {
    let e = refused("store = \"/s\"\nchunk-size = \n");
    assert!(e.starts_with(&format!("{FILE}:2: ")), "{e}");
}

#[test]
fn an_unknown_key_names_the_line_and_the_key() {
    let e = refused("store = \"/s\"\n\nchunk-sise = \"16K\"\n");
    assert!(e.starts_with(&format!("{FILE}:3: ")), "{e}");
    assert!(e.contains("chunk-sise"), "{e}");
    let e = refused("[retention]\npolicy = \"keep-last = 1\"\n[extra]\nx = 1\n");
    assert!(e.starts_with(&format!("{FILE}:3: ")), "{e}");
    assert!(e.contains("extra"), "{e}");
}

#[test]
fn bad_values_name_the_line_and_the_reason() {
    for (text, line, needle) in [
        ("\nchunk-size = \"16Q\"\n", 2, "16Q"),
        ("cache-size = \"lots\"\n", 1, "lots"),
        ("\ncompression = \"zstd\"\n", 2, "zstd"),
        ("chunker = \"gear\"\n", 1, "gear"),
        ("a = 1\n", 1, "unknown field"),
        ("log-level = \"loud\"\n", 1, "loud"),
        ("\n\nfuse-threads = 0\n", 3, "1..=64"),
        ("workers = 100\n", 1, "1..=64"),
        ("control-dir = \"a/b\"\n", 1, "a/b"),
        ("gc-interval = \"10\"\n", 1, "no unit"),
        ("snapshot-wait = -1\n", 1, "-1"),
        ("read-only = \"yes\"\n", 1, "bool"),
        ("snapshot-on-close = [1]\n", 1, "glob"),
    ] {
        let e = refused(text);
        assert!(
            e.starts_with(&format!("{FILE}:{line}: ")),
            "{text:?} gave {e}"
        );
        assert!(e.contains(needle), "{text:?} gave {e}");
    }
}

#[test]
fn a_bad_retention_policy_names_its_line_in_the_file() {
    let text =
        "store = \"/s\"\n[retention]\npolicy = \"\"\"\nkeep-last = 5\nkeep-lots = 3\n\"\"\"\n";
    let e = refused(text);
    assert!(e.starts_with(&format!("{FILE}:5: ")), "{e}");
    assert!(e.contains("keep-lots"), "{e}");
}

#[test]
fn retention_keys_become_policy_lines_in_file_order() {
    let f = ok(
        "[retention]\nkeep-last = 3\nmetric-file = \"trainer_state.json\"\n\
                metric-key = \"best_metric\"\nkeep-best = 2\nmetric-mode = \"min\"\n",
    );
    assert_eq!(
        f.retention_policy.as_deref(),
        Some(
            "keep-last = 3\nmetric-file = \"trainer_state.json\"\nmetric-key = \"best_metric\"\n\
             keep-best = 2\nmetric-mode = \"min\"\n"
        )
    );
    let e = refused("[retention]\nkeep-last = 3\nkeep-lots = 3\n");
    assert!(e.starts_with(&format!("{FILE}:3: ")), "{e}");
    assert!(e.contains("keep-lots"), "{e}");
    let e = refused("[retention]\npolicy = \"keep-last = 1\"\nkeep-last = 3\n");
    assert!(e.starts_with(&format!("{FILE}:3: ")), "{e}");
    assert!(e.contains("not both"), "{e}");
    let e = refused("[retention]\nkeep-last = [1]\n");
    assert!(e.starts_with(&format!("{FILE}:2: ")), "{e}");
}

#[test]
fn an_unreadable_file_is_named() {
    let e = load(Path::new("/nonexistent/ckptfs.toml")).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/ckptfs.toml"), "{e}");
}

#[test]
fn an_unknown_s3_key_is_refused_with_its_line() {
    let e = refused("store = \"/s\"\n[s3]\naccess-key = \"x\"\n");
    assert!(e.contains(":3:") && e.contains("access-key"), "{e}");
}
