//! `ckptfs mount`: its options.

use std::path::PathBuf;

use clap::Args;

/// Options of `ckptfs mount`.
#[derive(Debug, Clone, Args)]
pub struct MountArgs {
    /// The store directory (created on first use).
    pub store: PathBuf,
    /// An existing empty directory to mount on.
    pub mountpoint: PathBuf,
    /// Let users other than the one who mounted access the filesystem
    /// (permissions are still checked against file modes).
    #[arg(long)]
    pub allow_other: bool,
    /// Serve the store read-only: every change fails with EROFS.
    #[arg(long)]
    pub read_only: bool,
    /// Average content-defined chunk size, e.g. 16K, 64KiB, 1M (min is a
    /// quarter, max four times this).
    #[arg(long, default_value = "16K", value_parser = parse_size)]
    pub chunk_size: u64,
    /// Log level: error, warn, info, debug or trace (RUST_LOG overrides).
    #[arg(long, default_value = "info")]
    pub log_level: log::LevelFilter,
    /// FUSE request threads.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub fuse_threads: u16,
    /// Threads that hash, compress and store chunks (default: CPU count).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: Option<u16>,
    /// Decoded-chunk cache for reads, e.g. 64M.
    #[arg(long, default_value = "64M", value_parser = parse_size)]
    pub cache_size: u64,
    /// Name of the control directory at the mount root.
    #[arg(long, default_value = ".ckpt", value_parser = parse_control_dir)]
    pub control_dir: String,
    /// List the control directory in the root's directory listing (it is
    /// hidden by default, but always reachable by path).
    #[arg(long)]
    pub show_control_dir: bool,
    /// How long a snapshot waits for files being written to be closed,
    /// in seconds.
    #[arg(long, default_value_t = 60)]
    pub snapshot_wait: u64,
    /// Take a snapshot when a file matching GLOB is closed after writing
    /// (repeatable; a glob without '/' matches names at any depth).
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
    /// The policy's gc-interval, when set, wins.
    #[arg(long, default_value = "10m", value_parser = parse_interval)]
    pub gc_interval: std::time::Duration,
}

fn parse_control_dir(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > 255 || text.contains('/') || text == "." || text == ".." {
        return Err(format!("'{text}' is not a usable directory name"));
    }
    Ok(text.to_string())
}

fn parse_interval(text: &str) -> Result<std::time::Duration, String> {
    if text.trim() == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    crate::retention::parse_duration(text).map_err(|e| e.to_string())
}

/// Parses "16384", "16K", "16KiB", "1M", "2G".
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{text}' is not a size (try 16K or 1M)"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit '{other}' in '{text}'")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("'{text}' is too large"))
}
