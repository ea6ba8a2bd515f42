//! systemd integration (`Type=notify`): the sd_notify datagrams to
//! `$NOTIFY_SOCKET` (a path, or an abstract socket when it starts with
//! `@`), and the thread that sends `READY=1` once the mount answers, then
//! `STATUS=` with the store's logical and stored bytes and, when
//! `$WATCHDOG_USEC` is set, `WATCHDOG=1` while the mount keeps answering.
//! Without `$NOTIFY_SOCKET` nothing is sent.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::tree::Tree;

/// How often STATUS= is refreshed, at least (see [`status_loop`]).
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// Where sd_notify messages go, if anywhere.
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET`; unset or unusable means a silent notifier.
    pub fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|raw| {
            let text = raw.to_string_lossy().into_owned();
            let addr = match text.strip_prefix('@') {
                Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
                None => SocketAddr::from_pathname(&text),
            };
            let made = addr.and_then(|a| UnixDatagram::unbound().map(|s| (s, a)));
            match made {
                Ok(t) => Some(t),
                Err(e) => {
                    log::warn!("NOTIFY_SOCKET={text} is not usable: {e}");
                    None
                }
            }
        });
        Notifier { target }
    }

    /// Whether messages go anywhere.
    pub fn active(&self) -> bool {
        self.target.is_some()
    }

    /// Sends newline-separated `KEY=value` assignments; a failure is
    /// only logged (systemd may be gone during shutdown).
    pub fn send(&self, state: &str) {
        if let Some((sock, addr)) = &self.target {
            if let Err(e) = sock.send_to_addr(state.as_bytes(), addr) {
                log::debug!("sd_notify {state:?}: {e}");
            }
        }
    }

    /// Half of `$WATCHDOG_USEC` when the watchdog is on for this process
    /// (`$WATCHDOG_PID`, when set, names it).
    pub fn watchdog_interval() -> Option<Duration> {
        if let Ok(pid) = std::env::var("WATCHDOG_PID") {
            if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
                return None;
            }
        }
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
        (usec > 0).then(|| Duration::from_micros(usec / 2))
    }
}

/// Whether `mountpoint` is a FUSE mount whose root answers (inode 1).
/// Both calls are FUSE requests: never call this on the session thread.
pub fn answering(mountpoint: &Path) -> bool {
    let fuse = nix::sys::statfs::statfs(mountpoint)
        .map(|s| s.filesystem_type() == nix::sys::statfs::FUSE_SUPER_MAGIC)
        .unwrap_or(false);
    fuse && nix::sys::stat::stat(mountpoint)
        .map(|st| st.st_ino == 1)
        .unwrap_or(false)
}

/// Starts the thread that waits for the mount to answer, then runs
/// `on_ready` (once), sends READY=1 and keeps STATUS= and the watchdog
/// going until `stopping` is set.
pub fn start(
    mountpoint: PathBuf,
    tree: Weak<Tree>,
    notifier: Arc<Notifier>,
    stopping: Arc<AtomicBool>,
    on_ready: impl FnOnce(&Path) + Send + 'static,
) {
    let spawned = std::thread::Builder::new()
        .name("ckptfs-ready".into())
        .spawn(move || {
            while !answering(&mountpoint) {
                if stopping.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            on_ready(&mountpoint);
            log::info!("{} answers", mountpoint.display());
            if !notifier.active() {
                return;
            }
            notifier.send("READY=1");
            let (n, s, m) = (notifier.clone(), stopping.clone(), mountpoint.clone());
            if let Err(e) = std::thread::Builder::new()
                .name("ckptfs-status".into())
                .spawn(move || status_loop(&m, &tree, &n, &s))
            {
                log::warn!("no STATUS= updates: {e}");
            }
            if let Some(every) = Notifier::watchdog_interval() {
                watchdog_loop(&mountpoint, every, &notifier, &stopping);
            }
        });
    if let Err(e) = spawned {
        log::error!("cannot start the readiness thread: {e}");
    }
}

/// Pings the watchdog every `every` while the mount answers. A hung
/// session blocks the probe itself, so the pings stop and systemd acts.
fn watchdog_loop(mountpoint: &Path, every: Duration, notifier: &Notifier, stopping: &AtomicBool) {
    log::debug!("watchdog ping every {every:?}");
    while !stopping.load(Ordering::Relaxed) {
        if answering(mountpoint) {
            if stopping.load(Ordering::Relaxed) {
                return;
            }
            notifier.send("WATCHDOG=1");
        } else if !stopping.load(Ordering::Relaxed) {
            log::warn!("{} does not answer; no watchdog ping", mountpoint.display());
        }
        sleep_unless(every, stopping);
    }
}

/// Sends STATUS= at once, then every 10 s; a slow stats scan (a huge
/// store) stretches the period to 20 times the scan, so that status
/// costs at most 5% of a core.
fn status_loop(mountpoint: &Path, tree: &Weak<Tree>, notifier: &Notifier, stopping: &AtomicBool) {
    while !stopping.load(Ordering::Relaxed) {
        let Some(tree) = tree.upgrade() else {
            return;
        };
        let started = Instant::now();
        let line = match tree.stats() {
            Ok(stats) => status_line(mountpoint, &stats),
            Err(e) => format!("serving {}; stats unavailable: {e}", mountpoint.display()),
        };
        drop(tree);
        if stopping.load(Ordering::Relaxed) {
            return;
        }
        notifier.send(&format!("STATUS={line}"));
        sleep_unless(STATUS_EVERY.max(started.elapsed() * 20), stopping);
    }
}

/// The STATUS= text for `tree.stats()` JSON.
pub fn status_line(mountpoint: &Path, stats: &serde_json::Value) -> String {
    let logical = stats["logical_bytes"].as_u64().unwrap_or(0);
    let stored = stats["stored_bytes"].as_u64().unwrap_or(0);
    format!(
        "serving {}: {} logical ({logical} B), {} stored ({stored} B)",
        mountpoint.display(),
        human(logical),
        human(stored)
    )
}

/// 1536 -> "1.5 KiB".
fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Sleeps `total`, waking early when `stopping` is set.
fn sleep_unless(total: Duration, stopping: &AtomicBool) {
    let end = Instant::now() + total;
    loop {
        let now = Instant::now();
        if now >= end || stopping.load(Ordering::Relaxed) {
            return;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(100)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_logical_and_stored_bytes() {
        let stats = serde_json::json!({"logical_bytes": 3u64 << 30, "stored_bytes": 1536});
        assert_eq!(
            status_line(Path::new("/srv/runs"), &stats),
            "serving /srv/runs: 3.0 GiB logical (3221225472 B), 1.5 KiB stored (1536 B)"
        );
    }

    #[test]
    fn messages_reach_an_abstract_socket() {
        let name = format!("ckptfs-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier {
            target: Some((UnixDatagram::unbound().unwrap(), addr)),
        };
        n.send("READY=1");
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
    }
}
