//! Running a mount: resolve its options (flags over `--config`), open
//! the store, mount, serve, tell systemd (READY/STATUS/WATCHDOG/STOPPING)
//! and stop cleanly on unmount or SIGTERM/SIGINT (commit open files,
//! unmount, exit 0).

pub mod config;
mod logging;
mod notify;
mod options;
mod replication;
pub mod values;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use crossbeam_channel::{bounded, RecvTimeoutError};
use fuser::{Config, MountOption, Session, SessionACL};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::chunk::ChunkParams;
use crate::cli::MountArgs;
use crate::fs::{CkptFs, ControlOptions};
use crate::remote::Replicator;
use crate::retention::Retention;
use crate::store::Store;
use crate::tree::{AutoSnapshotOptions, Tree, TreeOptions};

pub use config::{ConfigError, ConfigFile};
pub use logging::init as init_logging;
pub use options::MountOptions;

/// How long a failed or pending push waits before it is tried again.
const PUSH_RETRY: Duration = Duration::from_secs(30);

/// Why the serving loop ended.
enum Stop {
    Unmounted(std::io::Result<()>),
    Signal(i32),
}

/// `ckptfs mount`: merges the flags over `--config`, then serves until
/// unmounted or signalled.
pub fn mount(args: &MountArgs) -> Result<()> {
    serve(&MountOptions::resolve(args)?)
}

/// Serves one mount until it is unmounted or the process is signalled.
pub fn serve(args: &MountOptions) -> Result<()> {
    init_logging(args.log_level);
    check_mountpoint(&args.mountpoint)?;
    let store = Arc::new(Store::open(&args.store)?);
    // Absolute, so that `/proc/mounts` names the store whatever the cwd.
    let store_dir = std::fs::canonicalize(&args.store).unwrap_or_else(|_| args.store.clone());
    store.set_compression(args.compression);
    store.set_relocate_below(args.relocate_below);
    store.set_lazy_durability(!args.sync_interval.is_zero());
    if !args.read_only {
        // Before any save streams its packs (see store/counters.rs).
        store.top_up_ids_ahead();
    }
    let chunker = store.settle_chunker(args.chunker)?;
    let mut opts = TreeOptions {
        chunk: ChunkParams::with_average(args.chunk_size as usize).searched_by(chunker),
        read_only: args.read_only,
        cache_bytes: args.cache_size,
        ..TreeOptions::default()
    };
    if let Some(w) = args.workers {
        opts.workers = w as usize;
    }
    opts.snapshot_wait = Duration::from_secs(args.snapshot_wait);
    let tree = Arc::new(Tree::new(store.clone(), opts)?);
    let retention = Arc::new(Retention::new(tree.clone())?);
    if let Some(text) = &args.retention_policy {
        apply_policy(&retention, text, args.read_only);
    }
    if !args.read_only {
        tree.start_auto_snapshots(AutoSnapshotOptions {
            on_rename: !args.no_snapshot_on_rename,
            on_marker: !args.no_snapshot_on_marker,
            on_close: args.snapshot_on_close.clone(),
            quiet: args.snapshot_quiet.map(Duration::from_secs),
        })
        .map_err(anyhow::Error::msg)?;
        start_gc_timer(&retention, args.gc_interval);
        start_syncer(&tree, args.sync_interval);
    }
    // Replication pushes each new snapshot to the store's remotes in the
    // background (not on a read-only mount, which takes no snapshots) and
    // shows what they hold under .ckpt/remotes/.
    let replicator = Some(Arc::new(Replicator::start(
        tree.clone(),
        store_dir.clone(),
        PUSH_RETRY,
        !args.read_only,
        args.cache_size,
        args.s3.clone(),
    )?));
    let control = ControlOptions {
        name: args.control_dir.clone().into_bytes(),
        show: args.show_control_dir,
        replication: replicator
            .clone()
            .map(|r| r as Arc<dyn crate::fs::Replication>),
    };

    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(format!("ckptfs:{}", store_dir.display())),
        MountOption::Subtype("ckptfs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
        if args.read_only {
            MountOption::RO
        } else {
            MountOption::RW
        },
    ];
    config.acl = if args.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(args.fuse_threads as usize);
    config.clone_fd = true;

    let mut session = Session::new(
        CkptFs::new(tree.clone(), retention.clone(), control),
        &args.mountpoint,
        &config,
    )
    .with_context(|| format!("cannot mount on {}", args.mountpoint.display()))?;
    let mut unmounter = session.unmount_callable();
    log::info!(
        "serving store {} on {} (chunks avg {} KiB cut by {}, compression {}{})",
        args.store.display(),
        args.mountpoint.display(),
        args.chunk_size / 1024,
        chunker,
        args.compression,
        if args.read_only { ", read-only" } else { "" }
    );

    let notifier = Arc::new(notify::Notifier::from_env());
    let stopping = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = bounded::<Stop>(4);
    let session_tx = stop_tx.clone();
    let serving = std::thread::Builder::new()
        .name("ckptfs-session".into())
        .spawn(move || {
            let r = session.run();
            let _ = session_tx.send(Stop::Unmounted(r));
        })?;
    notify::start(
        args.mountpoint.clone(),
        Arc::downgrade(&tree),
        notifier.clone(),
        stopping.clone(),
        raise_readahead,
    );
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    let signal_handle = signals.handle();
    std::thread::Builder::new()
        .name("ckptfs-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if stop_tx.send(Stop::Signal(sig)).is_err() {
                    break;
                }
            }
        })?;

    let outcome = match stop_rx.recv() {
        Ok(Stop::Unmounted(r)) => {
            begin_stop(&notifier, &stopping);
            log::info!("{} was unmounted", args.mountpoint.display());
            session_end(r)
        }
        Ok(Stop::Signal(sig)) => {
            begin_stop(&notifier, &stopping);
            log::info!(
                "signal {sig}: committing open files and unmounting {}",
                args.mountpoint.display()
            );
            if let Err(e) = tree.commit_all() {
                log::error!("commit at shutdown: {e}");
            }
            unmount(&mut unmounter, &args.mountpoint);
            match stop_rx.recv_timeout(Duration::from_secs(10)) {
                Ok(Stop::Unmounted(r)) => session_end(r),
                Ok(Stop::Signal(_))
                | Err(RecvTimeoutError::Timeout)
                | Err(RecvTimeoutError::Disconnected) => {
                    log::warn!(
                        "the kernel still holds files open on {}; exiting",
                        args.mountpoint.display()
                    );
                    Ok(())
                }
            }
        }
        Err(_) => {
            begin_stop(&notifier, &stopping);
            bail!("serving thread vanished")
        }
    };
    signal_handle.close();
    if serving.is_finished() {
        let _ = serving.join();
    }
    if let Some(r) = &replicator {
        // A push under way stops at its next chunk; the next mount resumes.
        r.stop();
    }
    tree.sync()?;
    // A settled store restarts without replaying the WAL and shows its
    // real size; bounded, so a stop never hangs on compaction.
    if let Err(e) = tree.settle(Duration::from_secs(60)) {
        log::warn!("store not settled at stop: {e}");
    }
    tree.log_summary();
    log::info!("stopped");
    outcome
}

/// How the FUSE session ended. A torn-down connection normally ends it
/// with ENODEV, which fuser reports as success; but a request that a FUSE
/// thread was taking from the kernel just as the mount went away (a lazy
/// unmount's last close, say) is answered with ECONNABORTED instead, and
/// fuser passes that on. Either way the mount is gone and `destroy` has
/// committed open files: a clean end.
fn session_end(r: std::io::Result<()>) -> Result<()> {
    match r {
        Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {
            log::info!("the kernel closed the FUSE connection while a request was being read");
            Ok(())
        }
        r => r.context("FUSE session failed"),
    }
}

/// Tells systemd (STOPPING=1) and the notify threads that a stop began.
fn begin_stop(notifier: &notify::Notifier, stopping: &AtomicBool) {
    stopping.store(true, Ordering::Relaxed);
    notifier.send("STOPPING=1\nSTATUS=stopping: committing open files and unmounting");
}

/// Stores the config file's retention policy unless the store already
/// has exactly that text. A read-only mount changes nothing, so there it
/// is only reported.
fn apply_policy(retention: &Retention, text: &str, read_only: bool) {
    if retention.policy_text() == text {
        return;
    }
    if read_only {
        log::warn!("read-only mount: the config file's retention policy is not stored");
        return;
    }
    match retention.set_policy_text(text) {
        Ok(()) => log::info!("retention policy set from the config file"),
        Err(e) => log::error!("the config file's retention policy was refused: {e}"),
    }
}

/// Unmounts; when files are still open (EBUSY), detaches lazily so the
/// mount point is free at once.
fn unmount(unmounter: &mut fuser::SessionUnmounter, mountpoint: &Path) {
    if let Err(e) = unmounter.unmount() {
        log::warn!(
            "unmount of {} failed ({e}); detaching lazily",
            mountpoint.display()
        );
        if let Err(e) = nix::mount::umount2(mountpoint, nix::mount::MntFlags::MNT_DETACH) {
            log::error!("lazy unmount of {} failed: {e}", mountpoint.display());
        }
    }
}

/// Runs retention and GC every `interval` (the policy's `gc-interval`
/// wins), on a thread that holds only a weak reference.
fn start_gc_timer(retention: &Arc<Retention>, interval: Duration) {
    let weak = Arc::downgrade(retention);
    let spawned = std::thread::Builder::new()
        .name("ckptfs-gc".into())
        .spawn(move || {
            let mut last = std::time::Instant::now();
            loop {
                std::thread::sleep(Duration::from_secs(1));
                let Some(retention) = weak.upgrade() else {
                    return;
                };
                let every = retention.policy().gc_interval.unwrap_or(interval);
                if every.is_zero() || last.elapsed() < every {
                    continue;
                }
                last = std::time::Instant::now();
                if let Err(e) = retention.run_gc() {
                    log::error!("scheduled gc failed: {e}");
                }
            }
        });
    if let Err(e) = spawned {
        log::error!("no GC timer: {e}");
    }
}

/// Every `interval`, makes the versions closed since the last sync durable
/// (`store/pending.rs`), on a thread that holds only a weak reference.
fn start_syncer(tree: &Arc<Tree>, interval: Duration) {
    if interval.is_zero() {
        return;
    }
    let weak = Arc::downgrade(tree);
    let spawned = std::thread::Builder::new()
        .name("ckptfs-sync".into())
        .spawn(move || loop {
            std::thread::sleep(interval);
            let Some(tree) = weak.upgrade() else {
                return;
            };
            if let Err(e) = tree.sync_closed() {
                log::error!("background sync failed (retried in {interval:?}): {e}");
            }
        });
    if let Err(e) = spawned {
        log::error!("no background sync: closes will not be synced until fsync or stop: {e}");
    }
}

/// Kernel readahead for this mount, in KiB. The default (128 KiB) makes
/// the kernel send small read requests; 1 MiB matches `max_readahead`.
const READ_AHEAD_KB: u32 = 1024;

/// Raises the mount's readahead (its BDI is named after the FUSE device
/// number). Runs once the session serves: the `stat` is a FUSE request.
/// Failing is harmless (reads are just smaller), so it only logs.
fn raise_readahead(mountpoint: &Path) {
    let dev = match nix::sys::stat::stat(mountpoint) {
        Ok(st) => st.st_dev,
        Err(e) => {
            log::debug!("stat {}: {e}", mountpoint.display());
            return;
        }
    };
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let knob = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    match std::fs::write(&knob, READ_AHEAD_KB.to_string()) {
        Ok(()) => log::debug!("{knob} = {READ_AHEAD_KB}"),
        Err(e) => log::debug!("could not raise readahead ({knob}): {e}"),
    }
}

fn check_mountpoint(mountpoint: &Path) -> Result<()> {
    match std::fs::metadata(mountpoint) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => bail!("mount point {} is not a directory", mountpoint.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("mount point {} does not exist", mountpoint.display())
        }
        Err(e) => Err(e).with_context(|| format!("mount point {}", mountpoint.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::session_end;
    use std::io::Error;

    #[test]
    fn a_session_ended_by_a_torn_down_connection_is_a_clean_stop_and_other_failures_are_not() {
        assert!(session_end(Ok(())).is_ok());
        assert!(
            session_end(Err(Error::from_raw_os_error(libc::ECONNABORTED))).is_ok(),
            "ECONNABORTED: the mount went away while a request was read"
        );
        for failure in [
            Error::from_raw_os_error(libc::EIO),
            Error::other("lost /dev/fuse"),
        ] {
            let e = session_end(Err(failure)).expect_err("a real failure");
            assert!(format!("{e:#}").starts_with("FUSE session failed"), "{e:#}");
        }
    }
}
