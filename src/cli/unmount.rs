//! `ckptfs unmount MOUNTPOINT [--lazy]`: unmounts a ckptfs mount; the
//! daemon then commits what is still open and exits by itself, and this
//! waits (bounded) until the mount is gone and the daemon has exited. A
//! busy mount is refused with a hint; `--lazy` detaches it at once.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use clap::Args;
use nix::errno::Errno;
use nix::mount::{umount2, MntFlags};

use super::target::{mounts, MountEntry};

/// Options of `ckptfs unmount`.
#[derive(Debug, Clone, Args)]
pub struct UnmountArgs {
    /// The mount point of a running ckptfs.
    pub mountpoint: PathBuf,
    /// Detach the mount now even if files on it are open; the daemon
    /// exits once they are closed.
    #[arg(long)]
    pub lazy: bool,
    /// How long to wait for the mount to go and the daemon to exit, in
    /// seconds.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub timeout: u64,
}

fn is_mounted(at: &Path) -> bool {
    mounts().iter().any(|m| m.mountpoint == at)
}

/// True while process `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the parenthesized command name.
            let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
            !matches!(state.and_then(|s| s.chars().next()), Some('Z' | 'X'))
        }
        Err(_) => false,
    }
}

/// The pid of the daemon serving `entry`: a `ckptfs` process whose store
/// lock file holds its pid.
fn daemon_of(entry: &MountEntry) -> Option<u32> {
    let me = std::process::id();
    let procs = std::fs::read_dir("/proc").ok()?;
    procs
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "ckptfs")
        })
        .find(|pid| {
            let pid_text = pid.to_string();
            entry
                .store_path(Some(&pid_text))
                .and_then(|store| std::fs::read_to_string(store.join("lock")).ok())
                .is_some_and(|holder| holder.trim() == pid_text)
        })
}

/// Waits until `done()` or the deadline.
fn wait_until(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `ckptfs unmount`.
pub fn unmount(args: &UnmountArgs) -> Result<()> {
    let given = &args.mountpoint;
    // A dead daemon's mount cannot be resolved (ENOTCONN): use the path.
    let at = std::fs::canonicalize(given)
        .or_else(|_| std::path::absolute(given))
        .map_err(|e| anyhow!("{}: {e}", given.display()))?;
    let all = mounts();
    let Some(entry) = all.iter().rev().find(|m| m.mountpoint == at) else {
        bail!("{} is not mounted", given.display());
    };
    if !entry.is_ckptfs() {
        bail!(
            "{} is not a ckptfs mount (it is {})",
            given.display(),
            entry.fstype
        );
    }
    let daemon = daemon_of(entry);
    let flags = if args.lazy {
        MntFlags::MNT_DETACH
    } else {
        MntFlags::empty()
    };
    match umount2(&at, flags) {
        Ok(()) => {}
        Err(Errno::EBUSY) => bail!(
            "{} is busy: files or directories on it are in use (see `fuser -vm {}`); close them, or pass --lazy to detach it now (the daemon then exits once they are closed)",
            given.display(),
            at.display()
        ),
        Err(e) => bail!("unmounting {}: {e}", given.display()),
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    if !wait_until(deadline, || !is_mounted(&at)) {
        bail!(
            "{} is still mounted after {} s",
            given.display(),
            args.timeout
        );
    }
    match daemon {
        Some(pid) if args.lazy && alive(pid) => println!(
            "detached {}; ckptfs pid {pid} commits and exits once the files still open on it are closed",
            given.display()
        ),
        Some(pid) => {
            if !wait_until(deadline, || !alive(pid)) {
                bail!(
                    "unmounted {}, but ckptfs pid {pid} is still running after {} s",
                    given.display(),
                    args.timeout
                );
            }
            println!("unmounted {}; ckptfs pid {pid} exited", given.display());
        }
        None => println!("unmounted {}", given.display()),
    }
    Ok(())
}
