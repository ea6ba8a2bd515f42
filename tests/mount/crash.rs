//! Crash safety: what close() and fsync() promise survives SIGKILL of the
//! daemon; SIGTERM commits open files; a full disk gives ENOSPC and loses
//! nothing that was committed; a disk that fails writes back fails the
//! fsync and every later one, and loses nothing that was synced.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;

use super::retention::{run_gc, set_policy};
use crate::common::{hash_file, heavy, is_mounted, noise, Mount, SmallDisk, ThinDisk};

const MIB: usize = 1 << 20;

pub(super) fn xxh(data: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(data)
}

/// close(2) with its result (std's drop ignores it; ckptfs commits there).
fn close(f: File) -> Result<(), Errno> {
    nix::unistd::close(f)
}

/// Creates or truncates `path`, writes `data` and closes, all checked.
pub(super) fn write_closed(path: &Path, data: &[u8]) {
    let mut f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(data)
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    close(f).unwrap_or_else(|e| panic!("close {}: {e}", path.display()));
}

/// (length, xxh3) of a file, or None when it does not exist.
fn state_of(path: &Path) -> Option<(u64, u128)> {
    match fs::metadata(path) {
        Ok(md) => {
            let h = hash_file(path);
            Some((md.len(), h))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => panic!("stat {}: {e}", path.display()),
    }
}

fn state(data: &[u8]) -> Option<(u64, u128)> {
    Some((data.len() as u64, xxh(data)))
}

fn names_in(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

#[test]
fn files_closed_before_sigkill_have_exactly_their_content_after_restart() {
    let mut m = Mount::new("crash-kill-after-close");
    let mut want: BTreeMap<&str, Vec<u8>> = BTreeMap::new();

    let big = noise(8 * MIB, 0xc0_0001);
    write_closed(&m.path("big.bin"), &big);
    want.insert("big.bin", big);
    let medium = noise(3_000_001, 0xc0_0002);
    write_closed(&m.path("medium.bin"), &medium);
    want.insert("medium.bin", medium);
    write_closed(&m.path("tiny.txt"), b"hello");
    want.insert("tiny.txt", b"hello".to_vec());
    write_closed(&m.path("empty.txt"), b"");
    want.insert("empty.txt", Vec::new());
    fs::create_dir_all(m.path("sub/dir")).unwrap();
    let nested = noise(300_000, 0xc0_0003);
    write_closed(&m.path("sub/dir/nested.bin"), &nested);
    want.insert("sub/dir/nested.bin", nested);

    // Overwritten twice through O_TRUNC: shrink, then grow.
    write_closed(&m.path("over.bin"), &noise(4 * MIB, 0xc0_0004));
    write_closed(&m.path("over.bin"), &noise(MIB, 0xc0_0005));
    let over = noise(2_500_000, 0xc0_0006);
    write_closed(&m.path("over.bin"), &over);
    want.insert("over.bin", over);

    // Overwritten twice in place: a write in the middle (the staged path),
    // then an append.
    let mut patched = noise(2 * MIB, 0xc0_0007);
    write_closed(&m.path("patched.bin"), &patched);
    let patch = noise(100_000, 0xc0_0008);
    let f = OpenOptions::new()
        .write(true)
        .open(m.path("patched.bin"))
        .unwrap();
    f.write_all_at(&patch, MIB as u64 + 7).unwrap();
    close(f).unwrap();
    patched[MIB + 7..MIB + 7 + patch.len()].copy_from_slice(&patch);
    let tail = noise(50_000, 0xc0_0009);
    let mut f = OpenOptions::new()
        .append(true)
        .open(m.path("patched.bin"))
        .unwrap();
    f.write_all(&tail).unwrap();
    close(f).unwrap();
    patched.extend_from_slice(&tail);
    want.insert("patched.bin", patched);

    // Written, closed, then renamed.
    let moved = noise(700_000, 0xc0_000a);
    write_closed(&m.path("before-rename.bin"), &moved);
    fs::rename(m.path("before-rename.bin"), m.path("renamed.bin")).unwrap();
    want.insert("renamed.bin", moved);

    for (name, data) in &want {
        assert_eq!(
            fs::read(m.path(name)).unwrap(),
            *data,
            "{name} before the kill"
        );
    }
    m.kill();
    m.start();
    for (name, data) in &want {
        let got = fs::read(m.path(name)).unwrap_or_else(|e| panic!("{name} after SIGKILL: {e}"));
        assert_eq!(got.len(), data.len(), "{name}: size after SIGKILL");
        assert!(got == *data, "{name}: content differs after SIGKILL");
    }
    assert_eq!(
        names_in(&m.path("")),
        [
            "big.bin",
            "empty.txt",
            "medium.bin",
            "over.bin",
            "patched.bin",
            "renamed.bin",
            "sub",
            "tiny.txt"
        ]
        .iter()
        .map(|s| s.to_string())
        .collect::<BTreeSet<_>>()
    );
    assert_eq!(
        names_in(&m.path("sub/dir")),
        BTreeSet::from(["nested.bin".to_string()])
    );
}

/// What the background committer did: `Attempt` before it opens a file,
/// `Done` after close() returned success.
#[derive(Clone, Copy, Debug)]
enum Event {
    Attempt { name: usize, len: u64, hash: u128 },
    Done { name: usize },
}

/// A tiny deterministic PRNG for sizes and timings.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const COMMITTER_NAMES: usize = 6;

#[test]
fn sigkill_in_the_middle_of_writes_and_commits_never_loses_a_closed_file_or_shows_garbage() {
    // A few hundred MB in all (the never-closed writers run until the kill).
    let _heavy = heavy();
    let mut m = Mount::new("crash-kill-loop");
    // Everything lives in a subdirectory: once the mount is gone, a thread
    // that tries to create a file gets ENOENT instead of writing into the
    // bare mount point directory.
    fs::create_dir(m.path("d")).unwrap();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    // name -> (len, hash) of what must be there.
    let mut expected: BTreeMap<String, (u64, u128)> = BTreeMap::new();
    let rounds = 24;
    // How the kills fell: C mid-commit, and which version the file it was
    // writing showed afterwards (older, the new one, or none yet).
    let (mut mid_commit, mut showed_new, mut showed_old) = (0, 0, 0);
    let mut a_bytes = Vec::new();
    for r in 0..rounds {
        let dir = m.path("d");
        // Closed files of this round.
        for k in 0..3 {
            let len = match k {
                0 => rng.below(200) as usize,
                1 => 10_000 + rng.below(300_000) as usize,
                _ => MIB + rng.below(2 * MIB as u64) as usize,
            };
            let data = noise(len, (r * 10 + k) as u64 + 1);
            let name = format!("r{r:02}-{k}.bin");
            write_closed(&dir.join(&name), &data);
            expected.insert(name, state(&data).unwrap());
        }
        let shared = noise(500_000 + rng.below(MIB as u64) as usize, 1000 + r as u64);
        write_closed(&dir.join("shared.bin"), &shared);
        expected.insert("shared.bin".into(), state(&shared).unwrap());
        if r % 3 == 0 {
            let extra = noise(MIB + rng.below(MIB as u64) as usize, 2000 + r as u64);
            write_closed(&dir.join("extra.bin"), &extra);
            expected.insert("extra.bin".into(), state(&extra).unwrap());
        }

        let stop = Arc::new(AtomicBool::new(false));
        // A: rewrites extra.bin (O_TRUNC) and never closes it; on odd rounds
        // it writes backwards (out of order: the staged path).
        let a_progress = Arc::new(AtomicU64::new(0));
        let a = {
            let path = dir.join("extra.bin");
            let progress = a_progress.clone();
            let stop = stop.clone();
            let backwards = r % 2 == 1;
            let block = noise(256 * 1024, 3000 + r as u64);
            std::thread::spawn(move || {
                let Ok(f) = OpenOptions::new().write(true).truncate(true).open(&path) else {
                    return;
                };
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let off = if backwards {
                        (200 - (i % 200)) * block.len() as u64
                    } else {
                        i * block.len() as u64
                    };
                    if f.write_all_at(&block, off).is_err() {
                        break;
                    }
                    i += 1;
                    progress.fetch_add(block.len() as u64, Ordering::Relaxed);
                }
                // Not closed while the daemon runs: `f` is dropped only
                // after the kill (or when a write failed).
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                drop(f);
            })
        };
        // B: creates fresh-r.bin and keeps writing it, never closed.
        let fresh = format!("fresh-{r:02}.bin");
        let b = {
            let path = dir.join(&fresh);
            let stop = stop.clone();
            let block = noise(128 * 1024, 4000 + r as u64);
            std::thread::spawn(move || {
                let Ok(mut f) = File::create(&path) else {
                    return;
                };
                while !stop.load(Ordering::Relaxed) {
                    if f.write_all(&block).is_err() {
                        break;
                    }
                }
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                drop(f);
            })
        };
        // C: commits new versions of c-0..c-5 one after the other, so that
        // the kill may land in the middle of a commit.
        let log: Arc<Mutex<Vec<Event>>> = Arc::new(Mutex::new(Vec::new()));
        let c = {
            let dir = dir.clone();
            let stop = stop.clone();
            let log = log.clone();
            let seed0 = 10_000 + r as u64 * 1000;
            std::thread::spawn(move || {
                let mut rng = Rng(seed0 | 1);
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let name = i % COMMITTER_NAMES;
                    let data = noise(1 + rng.below(600_000) as usize, seed0 + i as u64);
                    log.lock().unwrap().push(Event::Attempt {
                        name,
                        len: data.len() as u64,
                        hash: xxh(&data),
                    });
                    let path = dir.join(format!("c-{name}.bin"));
                    let Ok(mut f) = File::create(&path) else {
                        break;
                    };
                    if f.write_all(&data).is_err() {
                        break;
                    }
                    if close(f).is_err() {
                        break;
                    }
                    log.lock().unwrap().push(Event::Done { name });
                    i += 1;
                }
            })
        };

        // Kill once A has written a round-dependent amount (0 to ~6 MiB)
        // and C has committed a round-dependent number of files.
        let target = rng.below(6 * MIB as u64);
        let commits = rng.below(4) as usize;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let done = log
                .lock()
                .unwrap()
                .iter()
                .filter(|e| matches!(e, Event::Done { .. }))
                .count();
            if a_progress.load(Ordering::Relaxed) >= target && done >= commits {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {r}: writers made no progress (A wrote {} bytes, C committed {done})\n{}",
                a_progress.load(Ordering::Relaxed),
                m.log()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let before_kill = log.lock().unwrap().len();
        a_bytes.push(a_progress.load(Ordering::Relaxed) >> 10);
        m.kill();
        stop.store(true, Ordering::Relaxed);
        a.join().unwrap();
        b.join().unwrap();
        c.join().unwrap();
        let events = log.lock().unwrap().clone();

        m.start();
        let dir = m.path("d");
        // C's files: the last version whose close returned before the kill
        // (or what earlier rounds left) must be there, or a version C was
        // writing after it; nothing else.
        for name in 0..COMMITTER_NAMES {
            let file = format!("c-{name}.bin");
            let mut floor = expected.get(&file).copied();
            let mut floor_at = None;
            let mut last_attempt: Option<(usize, (u64, u128))> = None;
            for (i, e) in events.iter().enumerate() {
                match *e {
                    Event::Attempt { name: n, len, hash } if n == name => {
                        last_attempt = Some((i, (len, hash)))
                    }
                    Event::Done { name: n } if n == name && i < before_kill => {
                        let (at, st) = last_attempt.expect("Done without Attempt");
                        floor = Some(st);
                        floor_at = Some(at);
                    }
                    _ => {}
                }
            }
            let mut allowed: Vec<Option<(u64, u128)>> = vec![floor];
            if floor.is_none() {
                // Never committed: absent, or the empty file create() made.
                allowed.push(Some((0, xxh(b""))));
            }
            for (i, e) in events.iter().enumerate() {
                if let Event::Attempt { name: n, len, hash } = *e {
                    if n == name && floor_at.is_none_or(|at| i > at) {
                        allowed.push(Some((len, hash)));
                    }
                }
            }
            let got = state_of(&dir.join(&file));
            if let Some(Event::Attempt { name: n, len, hash }) =
                events[..before_kill].last().copied()
            {
                if n == name {
                    mid_commit += 1;
                    if got == Some((len, hash)) {
                        showed_new += 1;
                    } else {
                        showed_old += 1;
                    }
                }
            }
            assert!(
                allowed.contains(&got),
                "round {r}: {file} is {got:?} after SIGKILL; allowed: {allowed:?} (must-have: {floor:?})"
            );
            match got {
                Some(st) => expected.insert(file, st),
                None => expected.remove(&file),
            };
        }
        // The never-closed fresh file: absent, or a prefix of what was
        // written. A close of an inherited copy of its fd (any fork+exec in
        // this multi-threaded test process) is a FUSE flush, and a flush
        // commits what was written so far; never other bytes.
        let got = state_of(&dir.join(&fresh));
        if let Some((len, hash)) = got {
            let block = noise(128 * 1024, 4000 + r as u64);
            let prefix: Vec<u8> = block.iter().cycle().take(len as usize).copied().collect();
            assert_eq!(
                xxh(&prefix),
                hash,
                "round {r}: {fresh}, written but never closed, holds {len} bytes that are not a prefix of what was written"
            );
        }
        if let Some(st) = got {
            expected.insert(fresh, st);
        }
        // Every closed file, from this round and all earlier ones, and
        // extra.bin (open with O_TRUNC and rewritten, never closed) has its
        // last committed content.
        let a_block = noise(256 * 1024, 3000 + r as u64);
        for (name, want) in expected.iter_mut() {
            let got = state_of(&dir.join(name));
            if name == "extra.bin" && got != Some(*want) {
                // A flush from an inherited fd (see above) may have
                // committed extra.bin mid-rewrite: then it is whole blocks,
                // each either A's block or a hole A had not reached yet.
                let bytes = fs::read(dir.join(name)).unwrap();
                let whole_blocks = bytes.len().is_multiple_of(a_block.len());
                let each_ok = bytes
                    .chunks(a_block.len())
                    .all(|b| b == &a_block[..] || b.iter().all(|&x| x == 0));
                assert!(
                    whole_blocks && each_ok,
                    "round {r}: extra.bin is {got:?}: neither its last committed version {want:?} nor a state of its rewrite"
                );
                *want = (bytes.len() as u64, xxh(&bytes));
                continue;
            }
            assert_eq!(
                got,
                Some(*want),
                "round {r}: {name} after SIGKILL (expected {want:?})\n{}",
                m.log()
            );
        }
        let names = names_in(&dir);
        let want_names: BTreeSet<String> = expected.keys().cloned().collect();
        assert_eq!(
            names, want_names,
            "round {r}: directory listing after SIGKILL"
        );
    }
    eprintln!(
        "kill loop: {rounds} rounds; killed with a commit in flight in {mid_commit} (new version survived {showed_new}, older {showed_old}); \
         KiB written to the open extra.bin at the kill: {a_bytes:?}"
    );
}

#[test]
fn fsync_makes_data_durable_while_the_file_stays_open() {
    let mut m = Mount::new("crash-fsync");
    let first = noise(3 * MIB + 17, 0xf5_0001);
    let mut f = File::create(m.path("synced.bin")).unwrap();
    f.write_all(&first).unwrap();
    f.sync_all().unwrap();
    // More bytes after the fsync, never synced nor closed: not promised.
    f.write_all(&noise(MIB, 0xf5_0002)).unwrap();

    // fdatasync over an older committed version, rewritten in place.
    write_closed(&m.path("datasync.bin"), &noise(2 * MIB, 0xf5_0003));
    let second = noise(MIB + 5, 0xf5_0004);
    let mut g = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.path("datasync.bin"))
        .unwrap();
    g.write_all(&second).unwrap();
    g.sync_data().unwrap();

    m.kill();
    drop(f);
    drop(g);
    m.start();
    let got = fs::read(m.path("synced.bin")).unwrap();
    assert_eq!(got.len(), first.len(), "synced.bin: size after SIGKILL");
    assert!(
        got == first,
        "synced.bin: not the fsynced content after SIGKILL"
    );
    let got = fs::read(m.path("datasync.bin")).unwrap();
    assert_eq!(got.len(), second.len(), "datasync.bin: size after SIGKILL");
    assert!(
        got == second,
        "datasync.bin: not the fdatasynced content after SIGKILL"
    );
}

#[test]
fn sigterm_commits_files_still_open_for_writing_unmounts_and_exits_0() {
    let mut m = Mount::new("crash-sigterm-open");
    let data = noise(5 * MIB + 3, 0x7e_0001);
    let mut f = File::create(m.path("open.bin")).unwrap();
    f.write_all(&data).unwrap();
    // An existing file reopened with O_TRUNC and rewritten, still open.
    write_closed(&m.path("old.bin"), &noise(MIB, 0x7e_0002));
    let newer = noise(700_000, 0x7e_0003);
    let mut g = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.path("old.bin"))
        .unwrap();
    g.write_all(&newer).unwrap();

    let status = m.signal(15);
    assert!(
        status.success(),
        "daemon exited with {status} on SIGTERM:\n{}",
        m.log()
    );
    assert!(
        !is_mounted(&m.mnt),
        "mount still listed in /proc/mounts after SIGTERM"
    );
    // The connection is gone: close may fail, either is fine.
    let _ = close(f);
    let _ = close(g);

    m.start();
    let got = fs::read(m.path("open.bin")).unwrap();
    assert_eq!(got.len(), data.len(), "open.bin: size after SIGTERM");
    assert!(got == data, "open.bin: content after SIGTERM");
    let got = fs::read(m.path("old.bin")).unwrap();
    assert_eq!(got.len(), newer.len(), "old.bin: size after SIGTERM");
    assert!(got == newer, "old.bin: content after SIGTERM");
}

fn avail_bytes(path: &Path) -> u64 {
    let s = nix::sys::statvfs::statvfs(path).unwrap();
    s.blocks_available() as u64 * s.fragment_size() as u64
}

#[test]
fn a_full_disk_gives_enospc_keeps_serving_and_loses_nothing_committed() {
    let _heavy = heavy();
    // Declared first, dropped last: the daemon is gone before the unmount.
    let disk = SmallDisk::new("crash-enospc-disk", "300M");
    let store = disk.mnt.join("store");
    let mut m = Mount::with_store("crash-enospc", &store, &[]);

    let a = noise(10 * MIB, 0xe0_0001);
    write_closed(&m.path("a"), &a);

    // 400 MiB into a 300 MB disk.
    let mut f = File::create(m.path("big")).unwrap();
    let base = noise(MIB, 0xe0_0002);
    let mut block = vec![0u8; MIB];
    let mut write_err = None;
    // Exactly the bytes the daemon accepted (a write may be short).
    let mut written = 0u64;
    let mut accepted = xxhash_rust::xxh3::Xxh3::new();
    'blocks: for i in 0..400u64 {
        for (o, b) in block.chunks_exact_mut(8).zip(base.chunks_exact(8)) {
            let w = u64::from_le_bytes(b.try_into().unwrap())
                ^ (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            o.copy_from_slice(&w.to_le_bytes());
        }
        let mut off = 0;
        while off < block.len() {
            match f.write(&block[off..]) {
                Ok(0) => panic!("write returned 0 at {written}"),
                Ok(n) => {
                    accepted.update(&block[off..off + n]);
                    off += n;
                    written += n as u64;
                }
                Err(e) => {
                    write_err = Some(e);
                    break 'blocks;
                }
            }
        }
    }
    let close_result = close(f);
    eprintln!(
        "enospc: wrote {} MiB before {:?}; close: {:?}; disk avail now {:.1} MiB",
        written >> 20,
        write_err,
        close_result,
        avail_bytes(&disk.mnt) as f64 / MIB as f64
    );
    match &write_err {
        Some(e) => assert_eq!(
            e.raw_os_error(),
            Some(libc::ENOSPC),
            "write failed with {e}, not ENOSPC\n{}",
            m.log()
        ),
        None => assert_eq!(
            close_result,
            Err(Errno::ENOSPC),
            "400 MiB fit on a 300 MB disk?\n{}",
            m.log()
        ),
    }

    // Still serving: `a` reads back, statfs works, new names can be looked up.
    assert!(
        fs::read(m.path("a")).unwrap() == a,
        "a differs while the disk is full"
    );
    assert!(nix::sys::statvfs::statvfs(&m.mnt).is_ok());
    assert_eq!(
        names_in(&m.mnt),
        BTreeSet::from(["a".to_string(), "big".to_string()])
    );
    // `big` is what its close committed (every accepted byte), or, when
    // that close failed, its previous version: the empty file create made.
    let big_want = match close_result {
        Ok(()) => Some((written, accepted.digest128())),
        Err(_) => Some((0, xxh(b""))),
    };
    assert_eq!(
        state_of(&m.path("big")),
        big_want,
        "big after close returned {close_result:?}"
    );

    m.remount();
    assert!(
        fs::read(m.path("a")).unwrap() == a,
        "a differs after remount on a full disk\n{}",
        m.log()
    );
    assert_eq!(state_of(&m.path("big")), big_want, "big after remount");

    // df on the mount is honest: what it calls available is what writes may
    // still take, so the reserve kept for RocksDB is left out of it.
    let full_avail = avail_bytes(&m.mnt);
    let disk_avail = avail_bytes(&disk.mnt);
    eprintln!(
        "enospc: full: statfs on the mount says {:.1} MiB free, the disk {:.1} MiB",
        full_avail as f64 / MIB as f64,
        disk_avail as f64 / MIB as f64
    );
    assert!(
        full_avail + 16 * MIB as u64 <= disk_avail,
        "statfs on the full mount reports {full_avail} bytes available, the disk {disk_avail}: \
         the write reserve is not left out"
    );

    // What a user does on a full disk: delete, let retention drop the
    // deleted file's history, and collect. The space comes back at once.
    fs::remove_file(m.path("big"))
        .unwrap_or_else(|e| panic!("unlink big on a full disk: {e}\n{}", m.log()));
    set_policy(&m, "file-versions-keep = 0\n");
    let report = run_gc(&m);
    let free = avail_bytes(&m.mnt);
    eprintln!(
        "enospc: after unlink and gc, statfs on the mount says {:.1} MiB free; gc: {report}",
        free as f64 / MIB as f64
    );
    assert!(
        free >= full_avail + written / 2,
        "gc after unlinking the {written}-byte big file on a full disk left {free} bytes \
         available (was {full_avail}): {report}\n{}",
        m.log()
    );
    let small_len = 32 * MIB;
    let small = noise(small_len, 0xe0_0003);
    let mut f = File::create(m.path("small"))
        .unwrap_or_else(|e| panic!("create small after ENOSPC: {e}\n{}", m.log()));
    f.write_all(&small).unwrap_or_else(|e| {
        panic!(
            "write of {small_len} bytes after gc with {free} bytes free: {e}\n{}",
            m.log()
        )
    });
    close(f).unwrap_or_else(|e| panic!("close of small after ENOSPC: {e}\n{}", m.log()));
    m.remount();
    assert!(
        fs::read(m.path("small")).unwrap() == small,
        "small differs after remount"
    );
    assert!(
        fs::read(m.path("a")).unwrap() == a,
        "a differs after the last remount"
    );
    drop(m);
    drop(disk);
}

/// Writes `data` to a new file at `path` and fsyncs it; the fsync's
/// result (the file is closed either way).
pub(super) fn write_and_fsync(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(data)
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    f.sync_all()
}

#[test]
fn a_disk_that_fails_writeback_fails_that_fsync_and_every_later_one_and_loses_nothing_synced() {
    let _heavy = heavy();
    // Declared first, dropped last: the daemon is gone before the unmount.
    let disk = ThinDisk::new("crash-thin-disk", "512M", "64M");
    let store = disk.mnt.join("store");
    let mut m = Mount::with_store("crash-thin", &store, &[]);
    let keep = noise(4 * MIB, 0x7417_0001);
    write_and_fsync(&m.path("keep.bin"), &keep).expect("an fsync while the disk has room");

    // More than the disk has room for, closed without an fsync: the
    // version is committed, its bytes wait in the page cache.
    let big = noise(96 * MIB, 0x7417_0002);
    write_closed(&m.path("big.bin"), &big);
    // The next sync writes them back, and the disk fails it.
    let small: &[u8] = b"a small file, fsynced";
    let failed = write_and_fsync(&m.path("small.bin"), small)
        .expect_err("an fsync whose writeback failed succeeded");
    assert!(
        matches!(failed.raw_os_error(), Some(libc::EIO | libc::ENOSPC)),
        "fsync failed with {failed}\n{}",
        m.log()
    );

    // Still serving; but nothing can be made durable any more, not even
    // once the disk has room again: the kernel dropped the pages it could
    // not write, and would report a retried sync as a success.
    assert!(fs::read(m.path("keep.bin")).unwrap() == keep);
    disk.grow("1G");
    let after: &[u8] = b"written after the failure";
    let later = write_and_fsync(&m.path("after.bin"), after)
        .expect_err("an fsync after a failed one succeeded");
    assert_eq!(
        later.raw_os_error(),
        Some(libc::EIO),
        "{later}\n{}",
        m.log()
    );
    let status = m.stop();
    assert!(
        !status.success(),
        "the daemon exited 0 though its last sync failed:\n{}",
        m.log()
    );
    assert!(
        m.log().contains("an earlier sync failed"),
        "the later fsync's error is not in the log:\n{}",
        m.log()
    );

    // The next mount checks what reached the disk: what was synced is
    // there, and what was not is rolled back whole, never unreadable.
    disk.recover("1G");
    m.start();
    assert!(
        fs::read(m.path("keep.bin")).unwrap() == keep,
        "keep.bin after the failed sync and a remount\n{}",
        m.log()
    );
    for (name, content) in [
        ("big.bin", &big[..]),
        ("small.bin", small),
        ("after.bin", after),
    ] {
        match fs::read(m.path(name)) {
            Ok(got) => assert!(
                got.is_empty() || got == content,
                "{name} after the remount: {} bytes that are neither empty nor what was written\n{}",
                got.len(),
                m.log()
            ),
            Err(e) => assert_eq!(
                e.kind(),
                ErrorKind::NotFound,
                "{name} after the remount: {e}\n{}",
                m.log()
            ),
        }
    }
    // And the store takes saves again.
    write_and_fsync(&m.path("big.bin"), &big).expect("an fsync once the disk has room again");
    m.remount();
    assert!(fs::read(m.path("big.bin")).unwrap() == big);
    assert!(fs::read(m.path("keep.bin")).unwrap() == keep);
    drop(m);
    drop(disk);
}
