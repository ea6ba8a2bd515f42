//! Lazy durability (`--sync-interval`): a close makes its version survive
//! a crash of the daemon at once; the background sync makes it survive a
//! power loss, and a power loss before that sync takes back whole versions
//! only, never leaving one that names bytes the disk does not hold.
//!
//! A power loss is simulated after SIGKILL by cutting every pack file back
//! to the length the daemon last made durable (from its debug log: the
//! bytes the kernel may not have written yet), while RocksDB's WAL keeps
//! the commits that name them.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::path::Path;
use std::time::{Duration, Instant};

use super::crash::{write_closed, xxh};
use crate::common::{hash_file, noise, Mount};

const MIB: usize = 1 << 20;
/// The line a store logs at open when versions were closed after its last
/// sync and their chunks had to be checked.
const CHECKED: &str = "checked the chunks written after the last sync";
/// The line the background sync logs when it made closed versions durable.
const SYNCED: &str = "background sync: the versions closed since the last sync are durable";

fn fsync(path: &Path) {
    File::open(path).unwrap().sync_all().unwrap();
}

/// The power loss: every pack goes back to the length the daemon last
/// logged it durable at (debug log), the bytes the kernel may not have
/// written yet. Returns how many bytes went.
fn lose_unsynced_pack_bytes(m: &Mount) -> u64 {
    let mut durable: BTreeMap<String, u64> = BTreeMap::new();
    for line in m.log().lines() {
        if let Some((_, rest)) = line.split_once(": pack ") {
            if let Some((pack, len)) = rest.split_once(" durable up to ") {
                let len = len.trim_end_matches(" bytes").parse().unwrap();
                durable.insert(format!("{pack}.pack"), len);
            }
        }
    }
    let mut lost = 0;
    for entry in fs::read_dir(m.store.join("packs")).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        let len = entry.metadata().unwrap().len();
        let keep = durable.get(&name).copied().unwrap_or(0).min(len);
        lost += len - keep;
        OpenOptions::new()
            .write(true)
            .open(entry.path())
            .unwrap()
            .set_len(keep)
            .unwrap();
    }
    lost
}

fn versions(m: &Mount, rel: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(m.path(&format!(".ckpt/versions/{rel}")))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "latest")
        .collect();
    names.sort();
    names
}

#[test]
fn a_power_loss_before_the_sync_rolls_closed_versions_back_whole_and_a_crash_loses_none() {
    let mut m = Mount::with_args(
        "power-loss-rollback",
        &["--sync-interval", "1h", "--log-level", "debug"],
    );
    let (v1, v2, v3) = (
        noise(6 * MIB, 0x9_0001),
        noise(6 * MIB, 0x9_0002),
        noise(6 * MIB, 0x9_0003),
    );
    let other = noise(5 * MIB, 0x9_0004);
    let a = m.path("a.bin");
    write_closed(&a, &v1);
    fsync(&a);

    // A crash of the daemon alone: the closed version is kept whole.
    write_closed(&a, &v2);
    m.kill();
    m.start();
    assert_eq!(hash_file(&a), xxh(&v2), "a crash lost a closed version");
    assert_eq!(versions(&m, "a.bin").len(), 2);
    let log = m.log();
    assert!(
        log.contains(&format!("{CHECKED}: ")),
        "no check at open:\n{log}"
    );
    assert!(!log.contains("lost in a power failure"), "{log}");

    // A save published by a rename (temporary, close, rename over the old
    // file) is made durable by the rename.
    let (old_save, new_save) = (noise(3 * MIB, 0x9_0005), noise(3 * MIB, 0x9_0006));
    write_closed(&m.path("save.pt"), &old_save);
    fsync(&m.path("save.pt"));
    write_closed(&m.path("save.pt.tmp"), &new_save);
    fs::rename(m.path("save.pt.tmp"), m.path("save.pt")).unwrap();

    // A power loss: what was closed after the last sync goes, whole. A
    // rename of a file with nothing pending (a log rotated meanwhile) does
    // not sync them.
    let log_text = noise(64 * 1024, 0x9_0007);
    write_closed(&m.path("train.log"), &log_text);
    fsync(&m.path("train.log"));
    write_closed(&a, &v3);
    write_closed(&m.path("new.bin"), &other);
    fs::rename(m.path("train.log"), m.path("train.log.1")).unwrap();
    assert_eq!(hash_file(&a), xxh(&v3));
    m.kill();
    let cut = lose_unsynced_pack_bytes(&m);
    assert!(cut >= (8 * MIB) as u64, "only {cut} pack bytes to lose");
    m.start();
    assert_eq!(
        hash_file(&a),
        xxh(&v2),
        "not back to the last synced version"
    );
    assert_eq!(versions(&m, "a.bin").len(), 2, "the lost version is listed");
    let latest = m.path(".ckpt/versions/a.bin/latest");
    assert_eq!(hash_file(&latest), xxh(&v2));
    assert_eq!(
        fs::metadata(m.path("new.bin")).unwrap().len(),
        0,
        "a new file comes back empty"
    );
    assert_eq!(
        hash_file(&m.path("save.pt")),
        xxh(&new_save),
        "the renamed save"
    );
    assert_eq!(hash_file(&m.path("train.log.1")), xxh(&log_text));
    assert!(!m.path("train.log").exists());
    let log = m.log();
    assert!(
        log.contains("lost in a power failure"),
        "no log line:\n{log}"
    );
    assert!(!log.contains("save.pt version"), "{log}");

    // The lost chunks are not deduplicated against: written again, they are
    // stored again and survive a clean stop.
    write_closed(&a, &v3);
    write_closed(&m.path("new.bin"), &other);
    m.remount();
    assert_eq!(hash_file(&a), xxh(&v3));
    assert_eq!(hash_file(&m.path("new.bin")), xxh(&other));
    assert_eq!(versions(&m, "a.bin").len(), 3);
    m.stop();
}

#[test]
fn the_background_sync_makes_closed_versions_durable_within_its_interval() {
    let mut m = Mount::with_args("power-loss-sync", &["--sync-interval", "1s"]);
    let data = noise(4 * MIB, 0x9_0101);
    let a = m.path("a.bin");
    write_closed(&a, &data);
    // Once the sync ran, the packs' recorded lengths cover everything, so
    // the next open after a crash has nothing to check.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !m.log().contains(SYNCED) {
        assert!(
            Instant::now() < deadline,
            "no background sync:\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    m.kill();
    m.start();
    assert_eq!(hash_file(&a), xxh(&data));
    let log = m.log();
    assert!(
        !log.contains(CHECKED),
        "closed versions were not synced:\n{log}"
    );
    m.stop();

    // The control: without a sync, the same crash leaves them to check.
    let store = m.store.clone();
    let mut control = Mount::with_store(
        "power-loss-sync-control",
        &store,
        &["--sync-interval", "1h"],
    );
    write_closed(&control.path("b.bin"), &noise(4 * MIB, 0x9_0102));
    control.kill();
    control.start();
    let log = control.log();
    assert!(
        log.contains(CHECKED),
        "no check after an unsynced close:\n{log}"
    );
    assert!(!log.contains(SYNCED), "{log}");
    control.stop();
}

#[test]
fn an_exchange_that_moves_an_unsynced_version_makes_it_durable_first() {
    let mut m = Mount::with_args(
        "power-loss-exchange",
        &["--sync-interval", "1h", "--log-level", "debug"],
    );
    let (kept, fresh) = (noise(3 * MIB, 0x9_0201), noise(3 * MIB, 0x9_0202));
    write_closed(&m.path("current.pt"), &kept);
    fsync(&m.path("current.pt"));
    // The new save is closed, not synced: it moves by being the target of
    // an exchange, whose source has nothing pending.
    write_closed(&m.path("next.pt"), &fresh);
    super::posix::names::renameat2(
        &m.path("current.pt"),
        &m.path("next.pt"),
        libc::RENAME_EXCHANGE,
    )
    .unwrap();
    m.kill();
    lose_unsynced_pack_bytes(&m);
    m.start();
    assert_eq!(
        hash_file(&m.path("current.pt")),
        xxh(&fresh),
        "the exchanged-in save"
    );
    assert_eq!(hash_file(&m.path("next.pt")), xxh(&kept));
    assert!(!m.log().contains("lost in a power failure"), "{}", m.log());
    m.stop();
}
