//! Command-line parsing (clap) and dispatch to the subcommands. Each
//! subcommand's arguments live in their own file; the operator commands
//! (snapshot, snapshots, versions, restore, pin, unpin, gc, stats, verify,
//! unmount, remote, push, clone) work on a mount point through its `.ckpt/` tree or on a store
//! that no daemon serves (`target.rs`).

mod clone;
mod gc;
mod mount;
mod progress;
mod remote;
mod restore;
mod restore_plan;
mod show;
mod snapshot;
mod stats;
mod target;
mod unmount;
mod verify;
mod versions;

pub use clone::CloneArgs;
pub use gc::GcArgs;
pub use mount::{parse_size, MountArgs};
pub use remote::{PushArgs, RemoteArgs};
pub use restore::RestoreArgs;
pub use snapshot::{PinArgs, SnapshotArgs, SnapshotsArgs};
pub use stats::StatsArgs;
pub use target::TargetArgs;
pub use unmount::UnmountArgs;
pub use verify::VerifyArgs;
pub use versions::VersionsArgs;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::daemon;

/// ckptfs: a FUSE filesystem for ML checkpoints. Every file version is
/// chunked by content, deduplicated, lz4-compressed and checksummed into an
/// embedded RocksDB store.
#[derive(Debug, Parser)]
#[command(name = "ckptfs", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mount STORE at MOUNTPOINT and serve it in the foreground until it is
    /// unmounted or gets SIGTERM/SIGINT (then open files are committed).
    Mount(MountArgs),
    /// Take a snapshot named NAME of the whole live tree now.
    Snapshot(SnapshotArgs),
    /// List the snapshots: created, files, logical and stored bytes,
    /// metric, pinned, the retention rules that keep them.
    Snapshots(SnapshotsArgs),
    /// List the committed versions of a file.
    Versions(VersionsArgs),
    /// Copy a snapshot, a path inside one, or one version of a file out to
    /// DEST (modes and mtimes kept).
    Restore(RestoreArgs),
    /// Pin a snapshot: retention and rmdir leave it alone.
    Pin(PinArgs),
    /// Unpin a snapshot.
    Unpin(PinArgs),
    /// Apply the retention policy and collect garbage (or, with
    /// --dry-run, show what it keeps and what would expire).
    Gc(GcArgs),
    /// Show logical and stored bytes, dedup and compression ratios,
    /// versions, snapshots, the last GC.
    Stats(StatsArgs),
    /// Read and check every chunk and manifest; name each damaged file and
    /// version; exit 1 if any.
    Verify(VerifyArgs),
    /// Unmount a ckptfs mount and wait for its daemon to commit and exit.
    Unmount(UnmountArgs),
    /// Add, list or remove the remotes (S3 or a directory) snapshots are
    /// replicated to, or list what a remote holds.
    Remote(RemoteArgs),
    /// Upload the snapshots a remote lacks (only the chunks it lacks).
    Push(PushArgs),
    /// Make a new store from a remote: its snapshots show under
    /// .ckpt/remotes/origin/ and are fetched on first read.
    Clone(CloneArgs),
}

/// Parses the arguments and runs the command.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Mount(_)) && std::env::var_os("RUST_LOG").is_some() {
        // The operator commands log only when asked (store mode).
        let _ = env_logger::Builder::from_default_env().try_init();
    }
    let result = match cli.command {
        Command::Mount(args) => daemon::mount(&args),
        Command::Snapshot(args) => snapshot::snapshot(&args),
        Command::Snapshots(args) => snapshot::snapshots(&args),
        Command::Versions(args) => versions::versions(&args),
        Command::Restore(args) => restore::restore(&args),
        Command::Pin(args) => snapshot::pin(&args, true),
        Command::Unpin(args) => snapshot::pin(&args, false),
        Command::Gc(args) => gc::gc(&args),
        Command::Stats(args) => stats::stats(&args),
        Command::Verify(args) => verify::verify(&args),
        Command::Unmount(args) => unmount::unmount(&args),
        Command::Remote(args) => remote::remote(&args),
        Command::Push(args) => remote::push(&args),
        Command::Clone(args) => clone::clone(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ckptfs: {e:#}");
            log::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units_and_reject_garbage() {
        assert_eq!(parse_size("16384"), Ok(16384));
        assert_eq!(parse_size("16K"), Ok(16384));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5Q").is_err());
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
