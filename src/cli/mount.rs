//! `ckptfs mount`: its options. Every option can also come from the TOML
//! file named by `--config`; a flag given here overrides the file, and the
//! defaults apply only after both were read (`daemon::MountOptions`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

pub use crate::daemon::values::parse_size;
use crate::daemon::values::{parse_control_dir, parse_interval, parse_log_level, MAX_THREADS};

/// Options of `ckptfs mount`. Optional here so that the config file can
/// fill what the command line leaves out.
#[derive(Debug, Clone, Default, Args)]
pub struct MountArgs {
    /// Read the mount options from this TOML file (see
    /// systemd/ckptfs.example.toml); flags given on the command line
    /// override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The store directory (created on first use). May come from the
    /// config file's `store`; then a lone positional is the MOUNTPOINT.
    #[arg(value_name = "STORE")]
    pub store: Option<PathBuf>,
    /// An existing empty directory to mount on (or the config file's
    /// `mountpoint`).
    #[arg(value_name = "MOUNTPOINT")]
    pub mountpoint: Option<PathBuf>,
    /// Let users other than the one who mounted access the filesystem
    /// (permissions are still checked against file modes).
    #[arg(long)]
    pub allow_other: bool,
    /// Serve the store read-only: every change fails with EROFS.
    #[arg(long)]
    pub read_only: bool,
    /// Average content-defined chunk size, e.g. 16K, 64KiB, 1M (min is a
    /// quarter, max four times this) [default: 16K].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub chunk_size: Option<u64>,
    /// How a new store finds chunk boundaries: rollsum (a rolling sum over
    /// 64 bytes, FastCDC's search where it is blind: half the CPU of
    /// fastcdc), fastcdc (FastCDC v2020) or window (a hash of 8 bytes: few
    /// cuts on small integers or text). A store keeps the one it was made
    /// with; asking an existing store for another is an error [default: the
    /// store's; new stores: rollsum].
    #[arg(long, value_name = "SEARCH")]
    pub chunker: Option<crate::chunk::CutSearch>,
    /// Log level: error, warn, info, debug or trace (RUST_LOG overrides)
    /// [default: info].
    #[arg(long, value_name = "LEVEL", value_parser = parse_log_level)]
    pub log_level: Option<log::LevelFilter>,
    /// FUSE request threads [default: 4].
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_THREADS)))]
    pub fuse_threads: Option<u16>,
    /// Threads that hash, compress and store chunks [default: CPU count].
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_THREADS)))]
    pub workers: Option<u16>,
    /// How new chunks are compressed: auto (lz4 where it pays, else the
    /// exponent lanes of float tensors), lz4 (float data stays raw: about
    /// 0.12 more disk, faster restores) or none [default: auto].
    #[arg(long, value_name = "MODE")]
    pub compression: Option<crate::chunk::Compression>,
    /// Decoded-chunk cache for reads, e.g. 64M [default: 64M].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub cache_size: Option<u64>,
    /// Unchanged chunks of a save that sit in stretches of an older pack
    /// smaller than SIZE, between changed chunks, are written again next to
    /// the save's new chunks and their old copies freed, so the newest
    /// version reads back in long runs; 0 turns it off [default: 128K].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub relocate_below: Option<u64>,
    /// Name of the control directory at the mount root [default: .ckpt].
    #[arg(long, value_name = "NAME", value_parser = parse_control_dir)]
    pub control_dir: Option<String>,
    /// List the control directory in the root's directory listing (it is
    /// hidden by default, but always reachable by path).
    #[arg(long)]
    pub show_control_dir: bool,
    /// How long a snapshot waits for files being written to be closed,
    /// in seconds [default: 60].
    #[arg(long, value_name = "SECS")]
    pub snapshot_wait: Option<u64>,
    /// Take a snapshot when a file matching GLOB is closed after writing
    /// (repeatable; a glob without '/' matches names at any depth; given
    /// here, replaces the config file's list).
    #[arg(long, value_name = "GLOB")]
    pub snapshot_on_close: Vec<String>,
    /// Take a snapshot once nothing was written for SECONDS (and
    /// something changed since the last one).
    #[arg(long, value_name = "SECONDS")]
    pub snapshot_quiet: Option<u64>,
    /// Do not snapshot when a checkpoint directory leaves its staging name
    /// (HF tmp-checkpoint-N, Orbax *.orbax-checkpoint-tmp) or DCP renames
    /// .metadata.tmp to .metadata.
    #[arg(long)]
    pub no_snapshot_on_rename: bool,
    /// Do not snapshot when `latest` (DeepSpeed), `commit_success.txt`
    /// (Orbax) or `checkpoint` (TensorFlow) is written.
    #[arg(long)]
    pub no_snapshot_on_marker: bool,
    /// How often retention and garbage collection run, e.g. 10m, 1h; 0
    /// turns the timer off (GC then runs on `echo run > .ckpt/retention/gc`).
    /// The policy's gc-interval, when set, wins [default: 10m].
    #[arg(long, value_name = "DURATION", value_parser = parse_interval)]
    pub gc_interval: Option<Duration>,
    /// How often versions closed since the last sync are synced to the
    /// disk, e.g. 5s, 1m. A close makes its version survive a crash of the
    /// daemon at once; this bounds what a power loss can take back (those
    /// versions roll back to the one before). 0 syncs at every close, which
    /// then waits for the disk [default: 5s].
    #[arg(long, value_name = "DURATION", value_parser = parse_interval)]
    pub sync_interval: Option<Duration>,
}
