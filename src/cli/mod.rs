//! Command-line parsing (clap) and dispatch to the subcommands. Each
//! subcommand's arguments live in their own file.

mod mount;

pub use mount::{parse_size, MountArgs};

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
}

/// Parses the arguments and runs the command.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Mount(args) => daemon::mount(&args),
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
