//! SIGKILL of the daemon.
//!
//! - At random moments of a save loop (`py/killwriter.py`: files rewritten
//!   in place and files saved atomically through a rename), 60 rounds:
//!   between the kill and the restart `ckptfs verify STORE` exits 0; after
//!   the restart every file whose `close()` (or `rename()`) had returned
//!   holds exactly that content, one in flight holds its old or its new
//!   content (a new name may also be the empty file its create made), a
//!   rename is all or nothing, no other name appears, and each file's
//!   `latest` version is its live content.
//! - Right after fsync (`py/fsynchold.py`, files left open, a directory
//!   fsynced after a rename): every fsynced content survives.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::support::{ctl, hash_file_opt, names, script, xxh, Rng};
use crate::common::{hash_file, python, Mount, BIN};

const ROUNDS: u64 = 60;

/// (length, xxh3) of a file, or None when it does not exist.
type State = Option<(u64, u128)>;

fn state_of(p: &Path) -> State {
    let md = match fs::symlink_metadata(p) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("lstat {}: {e}", p.display()),
    };
    Some((md.len(), hash_file(p)))
}

/// Waits (bounded) for a child to exit, killing it after `secs`.
fn reap(child: &mut Child, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `ckptfs verify STORE` on the unmounted store must exit 0.
#[track_caller]
fn verify_store(m: &Mount, what: &str) {
    let out = Command::new(BIN)
        .arg("verify")
        .arg(&m.store)
        .output()
        .expect("run ckptfs verify");
    assert!(
        out.status.success(),
        "{what}: `ckptfs verify` on the store exited {}:\n{}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        m.log()
    );
}

#[test]
fn sigkill_at_random_moments_of_a_save_loop_never_loses_a_closed_file() {
    let mut m = Mount::new("fw-kill-loop");
    let dir = m.path("d");
    fs::create_dir(&dir).unwrap();
    let refd = m.root.join("contents");
    fs::create_dir(&refd).unwrap();
    let content = |id: u64| -> (u64, u128) {
        let p = refd.join(id.to_string());
        let data = fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        (data.len() as u64, xxh(&data))
    };
    let empty = Some((0, xxh(b"")));
    let mut universe: Vec<String> = (0..6).map(|i| format!("p{i}")).collect();
    for i in 0..3 {
        universe.push(format!("a{i}"));
        universe.push(format!("a{i}.tmp"));
    }
    let mut expected: BTreeMap<String, State> = BTreeMap::new();
    let (mut writes_in_flight, mut renames_in_flight, mut new_after_kill, mut commits) =
        (0, 0, 0, 0);
    let started = Instant::now();
    for round in 0..ROUNDS {
        let mut rng = Rng(0x6b11_0000 + round * 7919);
        let log = m.root.join(format!("round-{round}.log"));
        let mut child = Command::new(python())
            .arg(script("killwriter.py"))
            .arg(&dir)
            .arg(&refd)
            .arg(&log)
            .arg(rng.next().to_string())
            .arg((round * 1_000_000).to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start killwriter.py");
        // Kill once it has closed a round-dependent number of files, a
        // random few milliseconds later.
        let need = rng.below(5) as usize;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = fs::read_to_string(&log).unwrap_or_default();
            let done = text.lines().filter(|l| l.starts_with("D ")).count();
            if done >= need && text.lines().any(|l| l.starts_with("A ")) {
                break;
            }
            if let Some(st) = child.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
                panic!(
                    "round {round}: the writer exited with {st} before the kill:\n{err}\n{}",
                    m.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: no progress\n{}",
                m.log()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_micros(rng.below(30_000)));
        m.kill();
        reap(&mut child, 20);
        verify_store(&m, &format!("round {round}"));
        m.start();

        // Replay the log: what was committed, what was in flight.
        let mut committed = expected.clone();
        let mut in_flight: BTreeMap<String, u64> = BTreeMap::new();
        let mut renaming: BTreeMap<String, u64> = BTreeMap::new();
        for line in fs::read_to_string(&log).unwrap().lines() {
            let f: Vec<&str> = line.split(' ').collect();
            let (id, name) = (f[1].parse::<u64>().unwrap(), f[2].to_string());
            match f[0] {
                "A" => {
                    in_flight.insert(name, id);
                }
                "D" => {
                    in_flight.remove(&name);
                    committed.insert(name, Some(content(id)));
                    commits += 1;
                }
                "R" => {
                    renaming.insert(name, id);
                }
                "RD" => {
                    renaming.remove(&name);
                    committed.insert(format!("{name}.tmp"), None);
                    committed.insert(name, Some(content(id)));
                }
                other => panic!("round {round}: bad log line {other}"),
            }
        }
        writes_in_flight += in_flight.len();
        renames_in_flight += renaming.len();
        let mut seen = BTreeMap::new();
        for name in &universe {
            let before = committed.get(name).copied().flatten();
            let mut allowed = vec![before];
            if let Some(id) = in_flight.get(name) {
                allowed.push(Some(content(*id)));
                if before.is_none() {
                    allowed.push(empty);
                }
            }
            if let Some(id) = renaming.get(name) {
                allowed.push(Some(content(*id)));
            }
            if let Some(id) = name.strip_suffix(".tmp").and_then(|a| renaming.get(a)) {
                assert_eq!(before, Some(content(*id)));
                allowed.push(None);
            }
            let got = state_of(&dir.join(name));
            assert!(
                allowed.contains(&got),
                "round {round}: {name} is {got:x?} after SIGKILL; allowed {allowed:x?} \
                 (committed: {before:x?}, in flight: {:?}, renaming: {:?})\n{}",
                in_flight.get(name),
                renaming.get(name),
                m.log()
            );
            if got != before && got != empty {
                new_after_kill += 1;
            }
            seen.insert(name.clone(), got);
        }
        // A rename is all or nothing.
        for (a, id) in &renaming {
            let new = Some(content(*id));
            if new.is_some_and(|(len, _)| len > 0) {
                let at_final = seen[a] == new;
                let at_tmp = seen[&format!("{a}.tmp")] == new;
                assert!(at_final != at_tmp, "round {round}: rename of {a}.tmp over {a}: final has it {at_final}, tmp {at_tmp}");
            }
        }
        let listed = names(&dir);
        let present: std::collections::BTreeSet<String> = seen
            .iter()
            .filter(|(_, s)| s.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        assert_eq!(listed, present, "round {round}: the directory listing");
        for (name, st) in &seen {
            if let Some((len, h)) = st {
                if *len > 0 && !name.ends_with(".tmp") {
                    let latest = ctl(&m, &format!("versions/d/{name}/latest"));
                    assert_eq!(
                        hash_file_opt(&latest),
                        Some(*h),
                        "round {round}: {}",
                        latest.display()
                    );
                }
            }
        }
        expected = seen;
    }
    eprintln!(
        "kill loop: {ROUNDS} rounds in {:.1?}, {commits} closes logged; killed with a write in flight {writes_in_flight} times, \
         a rename in flight {renames_in_flight} times; {new_after_kill} in-flight contents survived",
        started.elapsed()
    );
    assert!(
        writes_in_flight >= ROUNDS as usize / 4,
        "the kills rarely hit a write in flight"
    );
}

#[test]
fn fsynced_files_left_open_survive_sigkill_right_after_fsync() {
    let mut m = Mount::new("fw-kill-fsync");
    let dir = m.path("d");
    fs::create_dir(&dir).unwrap();
    let refd = m.root.join("promised");
    fs::create_dir(&refd).unwrap();
    let v1 = super::support::MIB * 3;
    fs::write(dir.join("prev.bin"), crate::common::noise(v1, 1)).unwrap();
    fs::write(dir.join("model.bin"), crate::common::noise(v1, 2)).unwrap();
    let mut child = Command::new(python())
        .arg(script("fsynchold.py"))
        .arg(&dir)
        .arg(&refd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start fsynchold.py");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    if line.trim() != "synced" {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "fsynchold.py: {line:?}\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            m.log()
        );
    }
    m.kill();
    let _ = child.kill();
    let _ = child.wait();
    verify_store(&m, "after SIGKILL right after fsync");
    m.start();
    let promised = |name: &str| fs::read(refd.join(name)).unwrap();
    let check = |m: &Mount, rel: &str, want: &[u8], or: Option<&[u8]>| {
        let got = fs::read(dir.join(rel))
            .unwrap_or_else(|e| panic!("{rel} after SIGKILL: {e}\n{}", m.log()));
        let ok = got == want || or.is_some_and(|o| got == o);
        assert!(
            ok,
            "{rel}: {} bytes after SIGKILL, not the {} fsynced ones",
            got.len(),
            want.len()
        );
    };
    let synced = promised("new.bin");
    let mut full = synced.clone();
    full.extend_from_slice(&promised("new.bin.more"));
    // Bytes written after the fsync may be lost, or kept whole.
    check(&m, "new.bin", &synced, Some(&full));
    check(&m, "prev.bin", &promised("prev.bin"), None);
    check(&m, "big.bin", &promised("big.bin"), None);
    check(&m, "sub/small.txt", &promised("sub-small.txt"), None);
    check(&m, "model.bin", &promised("model.bin"), None);
    assert!(
        !dir.join("model.tmp").exists(),
        "model.tmp is back after its rename was fsynced"
    );
    m.remount();
    check(&m, "big.bin", &promised("big.bin"), None);
    check(&m, "model.bin", &promised("model.bin"), None);
    for (rel, name) in [
        ("big.bin", "big.bin"),
        ("prev.bin", "prev.bin"),
        ("model.bin", "model.bin"),
    ] {
        let latest = ctl(&m, &format!("versions/d/{rel}/latest"));
        assert_eq!(
            hash_file_opt(&latest),
            Some(xxh(&promised(name))),
            "{}",
            latest.display()
        );
    }
}
