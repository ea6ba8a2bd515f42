//! `MountOptions`: the final options of one mount, merged from the
//! command line and the `--config` file (a flag given wins over the file)
//! with the defaults applied last.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};

use super::config::{self, ConfigFile};
use crate::cli::MountArgs;

/// Default average chunk size.
pub const DEFAULT_CHUNK_SIZE: u64 = 16 << 10;
/// Default decoded-chunk cache.
pub const DEFAULT_CACHE_SIZE: u64 = 64 << 20;
/// Default limit below which scattered unchanged chunks are moved.
pub const DEFAULT_RELOCATE_BELOW: u64 = 128 << 10;
/// Default FUSE request threads.
pub const DEFAULT_FUSE_THREADS: u16 = 4;
/// Default snapshot wait for writers, seconds.
pub const DEFAULT_SNAPSHOT_WAIT: u64 = 60;
/// Default GC interval.
pub const DEFAULT_GC_INTERVAL: Duration = Duration::from_secs(600);
/// Default interval of the background sync that makes closed versions
/// survive a power loss (a close makes them survive a crash at once).
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(5);
/// Default control directory name.
pub const DEFAULT_CONTROL_DIR: &str = ".ckpt";

/// Everything `daemon::serve` needs to run one mount.
#[derive(Debug, Clone, PartialEq)]
pub struct MountOptions {
    /// The store directory.
    pub store: PathBuf,
    /// The mount point.
    pub mountpoint: PathBuf,
    /// Let other users in (`allow_other`).
    pub allow_other: bool,
    /// Serve read-only.
    pub read_only: bool,
    /// Average chunk size in bytes.
    pub chunk_size: u64,
    /// Log level (RUST_LOG overrides).
    pub log_level: log::LevelFilter,
    /// FUSE request threads.
    pub fuse_threads: u16,
    /// Chunk worker threads (None: by CPU count).
    pub workers: Option<u16>,
    /// Decoded-chunk cache in bytes.
    pub cache_size: u64,
    /// How new chunks are compressed.
    pub compression: crate::chunk::Compression,
    /// The cut search asked for; `None`: the store's own.
    pub chunker: Option<crate::chunk::CutSearch>,
    /// Stretches of stored chunks smaller than this are moved next to a
    /// save's new chunks (0: never).
    pub relocate_below: u64,
    /// Name of the control directory.
    pub control_dir: String,
    /// List the control directory in the root.
    pub show_control_dir: bool,
    /// Seconds a snapshot waits for writers.
    pub snapshot_wait: u64,
    /// Globs whose close triggers a snapshot.
    pub snapshot_on_close: Vec<String>,
    /// Snapshot after this many quiet seconds.
    pub snapshot_quiet: Option<u64>,
    /// No snapshots on framework renames.
    pub no_snapshot_on_rename: bool,
    /// No snapshots on framework marker files.
    pub no_snapshot_on_marker: bool,
    /// Retention/GC timer (0: off).
    pub gc_interval: Duration,
    /// How often closed versions are synced to the disk (0: at every close).
    pub sync_interval: Duration,
    /// A retention policy to store at start (from the config file).
    pub retention_policy: Option<String>,
    /// S3 keys and defaults (the config file's `[s3]`).
    pub s3: crate::remote::S3Settings,
}

impl MountOptions {
    /// Reads `--config` (if given) and merges it under the flags.
    pub fn resolve(args: &MountArgs) -> Result<MountOptions> {
        let file = match &args.config {
            Some(path) => config::load(path)?,
            None => ConfigFile::default(),
        };
        Self::merge(args, file)
    }

    /// Merges a parsed file under the flags and applies the defaults.
    /// A lone positional is the MOUNTPOINT when the file names the store,
    /// else the STORE.
    pub fn merge(args: &MountArgs, file: ConfigFile) -> Result<MountOptions> {
        let (store, mountpoint) = match (&args.store, &args.mountpoint) {
            (Some(s), Some(m)) => (Some(s.clone()), Some(m.clone())),
            (Some(lone), None) if file.store.is_some() => (file.store, Some(lone.clone())),
            (Some(lone), None) => (Some(lone.clone()), file.mountpoint),
            (None, m) => (file.store, m.clone().or(file.mountpoint)),
        };
        let whence = if args.config.is_some() {
            "in the config file"
        } else {
            "with --config FILE"
        };
        let Some(store) = store else {
            bail!("missing STORE: give it on the command line or as `store` {whence}");
        };
        let Some(mountpoint) = mountpoint else {
            bail!("missing MOUNTPOINT: give it on the command line or as `mountpoint` {whence}");
        };
        Ok(MountOptions {
            store,
            mountpoint,
            allow_other: args.allow_other || file.allow_other.unwrap_or(false),
            read_only: args.read_only || file.read_only.unwrap_or(false),
            chunk_size: args
                .chunk_size
                .or(file.chunk_size)
                .unwrap_or(DEFAULT_CHUNK_SIZE),
            log_level: args
                .log_level
                .or(file.log_level)
                .unwrap_or(log::LevelFilter::Info),
            fuse_threads: args
                .fuse_threads
                .or(file.fuse_threads)
                .unwrap_or(DEFAULT_FUSE_THREADS),
            workers: args.workers.or(file.workers),
            cache_size: args
                .cache_size
                .or(file.cache_size)
                .unwrap_or(DEFAULT_CACHE_SIZE),
            compression: args.compression.or(file.compression).unwrap_or_default(),
            chunker: args.chunker.or(file.chunker),
            relocate_below: args
                .relocate_below
                .or(file.relocate_below)
                .unwrap_or(DEFAULT_RELOCATE_BELOW),
            control_dir: args
                .control_dir
                .clone()
                .or(file.control_dir)
                .unwrap_or_else(|| DEFAULT_CONTROL_DIR.to_string()),
            show_control_dir: args.show_control_dir || file.show_control_dir.unwrap_or(false),
            snapshot_wait: args
                .snapshot_wait
                .or(file.snapshot_wait)
                .unwrap_or(DEFAULT_SNAPSHOT_WAIT),
            snapshot_on_close: if args.snapshot_on_close.is_empty() {
                file.snapshot_on_close.unwrap_or_default()
            } else {
                args.snapshot_on_close.clone()
            },
            snapshot_quiet: args.snapshot_quiet.or(file.snapshot_quiet),
            no_snapshot_on_rename: args.no_snapshot_on_rename
                || file.no_snapshot_on_rename.unwrap_or(false),
            no_snapshot_on_marker: args.no_snapshot_on_marker
                || file.no_snapshot_on_marker.unwrap_or(false),
            gc_interval: args
                .gc_interval
                .or(file.gc_interval)
                .unwrap_or(DEFAULT_GC_INTERVAL),
            sync_interval: args
                .sync_interval
                .or(file.sync_interval)
                .unwrap_or(DEFAULT_SYNC_INTERVAL),
            retention_policy: file.retention_policy,
            s3: file
                .s3
                .map(|t| crate::remote::S3Settings {
                    access_key_id: t.access_key_id,
                    secret_access_key: t.secret_access_key,
                    endpoint: t.endpoint,
                    region: t.region,
                })
                .unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn args(positional: &[&str]) -> MountArgs {
        MountArgs {
            store: positional.first().map(PathBuf::from),
            mountpoint: positional.get(1).map(PathBuf::from),
            ..MountArgs::default()
        }
    }

    fn file(text: &str) -> ConfigFile {
        config::parse(Path::new("/etc/ckptfs/t.toml"), text).unwrap()
    }

    #[test]
    fn without_a_file_the_defaults_are_the_old_flag_defaults() {
        let o = MountOptions::merge(&args(&["s", "m"]), ConfigFile::default()).unwrap();
        assert_eq!(o.store, PathBuf::from("s"));
        assert_eq!(o.mountpoint, PathBuf::from("m"));
        assert_eq!(o.chunk_size, 16384);
        assert_eq!(o.cache_size, 64 << 20);
        assert_eq!(o.relocate_below, 128 << 10);
        assert_eq!(o.log_level, log::LevelFilter::Info);
        assert_eq!(o.fuse_threads, 4);
        assert_eq!(o.control_dir, ".ckpt");
        assert_eq!(o.snapshot_wait, 60);
        assert_eq!(o.gc_interval, Duration::from_secs(600));
        assert_eq!(o.sync_interval, Duration::from_secs(5));
        assert!(!o.read_only && !o.allow_other && o.workers.is_none());
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_the_defaults() {
        let f = file(
            "store = \"/srv/store\"\nchunk-size = \"64K\"\ncache-size = 1048576\n\
             control-dir = \".snap\"\nsnapshot-on-close = [\"*.pt\"]\nworkers = 3\n\
             relocate-below = \"1M\"\nsync-interval = \"30s\"\ngc-interval = \"1h\"\n",
        );
        let mut a = args(&["/srv/runs"]);
        a.relocate_below = Some(0);
        a.sync_interval = Some(Duration::ZERO);
        a.chunk_size = Some(32 << 10);
        a.snapshot_on_close = vec!["*.bin".into()];
        let o = MountOptions::merge(&a, f).unwrap();
        assert_eq!(o.store, PathBuf::from("/srv/store"));
        assert_eq!(o.mountpoint, PathBuf::from("/srv/runs"), "lone positional");
        assert_eq!(o.chunk_size, 32 << 10);
        assert_eq!(o.cache_size, 1 << 20);
        assert_eq!(o.control_dir, ".snap");
        assert_eq!(o.snapshot_on_close, vec!["*.bin".to_string()]);
        assert_eq!(o.workers, Some(3));
        assert_eq!(o.relocate_below, 0, "0 from the flag turns it off");
        assert_eq!(o.sync_interval, Duration::ZERO, "every close durable");
        assert_eq!(o.gc_interval, Duration::from_secs(3600), "from the file");
    }

    #[test]
    fn a_lone_positional_is_the_store_when_the_file_names_only_the_mountpoint() {
        let f = file("mountpoint = \"mnt\"\n");
        let o = MountOptions::merge(&args(&["/data/store"]), f).unwrap();
        assert_eq!(o.store, PathBuf::from("/data/store"));
        assert_eq!(
            o.mountpoint,
            PathBuf::from("/etc/ckptfs/mnt"),
            "relative to the file"
        );
    }

    #[test]
    fn missing_store_or_mountpoint_is_named() {
        let e = MountOptions::merge(&args(&[]), ConfigFile::default()).unwrap_err();
        assert!(e.to_string().contains("missing STORE"), "{e}");
        let e = MountOptions::merge(&args(&["s"]), ConfigFile::default()).unwrap_err();
        assert!(e.to_string().contains("missing MOUNTPOINT"), "{e}");
    }
}
