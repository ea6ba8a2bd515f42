//! The `ckptfs` binary: parse arguments, run, exit with a status.

use std::process::ExitCode;

fn main() -> ExitCode {
    ckptfs::cli::run()
}
