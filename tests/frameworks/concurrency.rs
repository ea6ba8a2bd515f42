//! Eight writer threads and eight reader threads on overlapping files for
//! 60 seconds. Every version is self-describing: a header with the file,
//! a sequence number, the body's length and its xxh3; bodies are built
//! from a shared pool of blocks, so dedup keeps the store small.
//!
//! - In place: four writers rewrite `inplace-0..3` (O_TRUNC, writes of
//!   random sizes, close), one at a time per file; four readers read a
//!   file between two saves (a per-file lock) and must get exactly the
//!   last closed version, complete.
//! - Atomic: four writers each write a private `shared-K.tmp-W`, close it
//!   and rename it over `shared-0..1`; four readers open and read the
//!   targets at any moment (while they are replaced under them) and must
//!   get a complete version that some writer closed; ENOENT, the only
//!   error allowed, is counted.
//!
//! At the end, after a remount, every file holds its last closed (or
//! renamed) version, and so does its `latest` version.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::support::{close, ctl, names, xxh, Rng};
use crate::common::{heavy, noise, Mount};

const RUN: Duration = Duration::from_secs(60);
const INPLACE: usize = 4;
const SHARED: usize = 2;
const POOL: usize = 32;
const BLOCK: usize = 64 << 10;
const HEADER: usize = 48;
const MAGIC: &[u8; 8] = b"CKPTVER1";

/// A version of file `file` with sequence number `seq` and `len` bytes of
/// body: header (magic, file, seq, len, xxh3 of the body), then the body.
fn version(pool: &[Vec<u8>], file: u64, seq: u64, len: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(len + BLOCK);
    let mut i = 0;
    while body.len() < len {
        body.extend_from_slice(&pool[((seq * 7 + i * 13) % POOL as u64) as usize]);
        i += 1;
    }
    body.truncate(len);
    for (b, s) in body.iter_mut().zip(seq.to_le_bytes()) {
        *b = s;
    }
    let mut out = Vec::with_capacity(HEADER + len);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&file.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(len as u64).to_le_bytes());
    out.extend_from_slice(&xxh(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// (file, seq) of a complete, self-consistent version; else what is wrong.
fn parse(bytes: &[u8]) -> Result<(u64, u64), String> {
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err(format!("{} bytes without a header", bytes.len()));
    }
    let word = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap());
    let (file, seq, len) = (word(8), word(16), word(24) as usize);
    let hash = u128::from_le_bytes(bytes[32..48].try_into().unwrap());
    let body = &bytes[HEADER..];
    if body.len() != len {
        return Err(format!(
            "file {file} seq {seq}: body of {} bytes, header says {len} (torn)",
            body.len()
        ));
    }
    if xxh(body) != hash {
        return Err(format!(
            "file {file} seq {seq}: body does not match its hash (torn)"
        ));
    }
    Ok((file, seq))
}

/// Writes `data` in pieces of random sizes and closes, all checked.
fn write_pieces(path: &Path, data: &[u8], rng: &mut Rng) -> Result<(), String> {
    let mut f = File::create(path).map_err(|e| format!("create {}: {e}", path.display()))?;
    let mut off = 0;
    while off < data.len() {
        let n = (1024 + rng.below(256 << 10) as usize).min(data.len() - off);
        f.write_all(&data[off..off + n])
            .map_err(|e| format!("write {}: {e}", path.display()))?;
        off += n;
    }
    close(f).map_err(|e| format!("close {}: {e}", path.display()))
}

/// Reads a whole file with reads of a random size.
fn read_all(f: &mut File, rng: &mut Rng) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 4096 + rng.below(1 << 20) as usize];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

struct Shared {
    pool: Vec<Vec<u8>>,
    dir: PathBuf,
    stop: AtomicBool,
    seq: AtomicU64,
    /// In place: the last closed seq of each file, locked across a save.
    inplace: Vec<RwLock<u64>>,
    /// Atomic: every seq closed under a tmp name for each target, and the
    /// last one renamed in (the lock is held across the rename).
    closed: Vec<Mutex<HashSet<u64>>>,
    renamed: Vec<Mutex<u64>>,
}

#[derive(Default, Debug)]
struct Count {
    saves: u64,
    reads: u64,
    bytes: u64,
    enoent: u64,
}

type Job = Box<dyn FnOnce(&Shared) -> Result<Count, String> + Send>;

fn inplace_writer(w: u64) -> Job {
    Box::new(move |s: &Shared| {
        let mut rng = Rng(0xa11c_e000 + w);
        let mut c = Count::default();
        while !s.stop.load(Ordering::Relaxed) {
            let k = rng.below(INPLACE as u64) as usize;
            let seq = s.seq.fetch_add(1, Ordering::Relaxed);
            let data = version(&s.pool, k as u64, seq, rng.below(2 << 20) as usize);
            let mut last = s.inplace[k].write().unwrap();
            write_pieces(&s.dir.join(format!("inplace-{k}")), &data, &mut rng)?;
            *last = seq;
            c.saves += 1;
            c.bytes += data.len() as u64;
        }
        Ok(c)
    })
}

fn inplace_reader(r: u64) -> Job {
    Box::new(move |s: &Shared| {
        let mut rng = Rng(0x4ead_0000 + r);
        let mut c = Count::default();
        while !s.stop.load(Ordering::Relaxed) {
            let k = rng.below(INPLACE as u64) as usize;
            let last = s.inplace[k].read().unwrap();
            let path = s.dir.join(format!("inplace-{k}"));
            let mut f = File::open(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
            let bytes =
                read_all(&mut f, &mut rng).map_err(|e| format!("read {}: {e}", path.display()))?;
            let (file, seq) = parse(&bytes).map_err(|e| format!("inplace-{k}: {e}"))?;
            if (file, seq) != (k as u64, *last) {
                return Err(format!(
                    "inplace-{k}: read file {file} seq {seq}, the last closed is seq {}",
                    *last
                ));
            }
            c.reads += 1;
            c.bytes += bytes.len() as u64;
        }
        Ok(c)
    })
}

fn atomic_writer(w: u64) -> Job {
    Box::new(move |s: &Shared| {
        let mut rng = Rng(0xa70e_0000 + w);
        let mut c = Count::default();
        while !s.stop.load(Ordering::Relaxed) {
            let k = rng.below(SHARED as u64) as usize;
            let seq = s.seq.fetch_add(1, Ordering::Relaxed);
            let data = version(&s.pool, 100 + k as u64, seq, rng.below(2 << 20) as usize);
            let tmp = s.dir.join(format!("shared-{k}.tmp-{w}"));
            write_pieces(&tmp, &data, &mut rng)?;
            s.closed[k].lock().unwrap().insert(seq);
            let mut last = s.renamed[k].lock().unwrap();
            fs::rename(&tmp, s.dir.join(format!("shared-{k}")))
                .map_err(|e| format!("rename {} over shared-{k}: {e}", tmp.display()))?;
            *last = seq;
            c.saves += 1;
            c.bytes += data.len() as u64;
        }
        Ok(c)
    })
}

fn atomic_reader(r: u64) -> Job {
    Box::new(move |s: &Shared| {
        let mut rng = Rng(0x4eaa_0000 + r);
        let mut c = Count::default();
        while !s.stop.load(Ordering::Relaxed) {
            let k = rng.below(SHARED as u64) as usize;
            let path = s.dir.join(format!("shared-{k}"));
            let mut f = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    c.enoent += 1;
                    continue;
                }
                Err(e) => return Err(format!("open {}: {e}", path.display())),
            };
            let bytes =
                read_all(&mut f, &mut rng).map_err(|e| format!("read {}: {e}", path.display()))?;
            let (file, seq) = parse(&bytes).map_err(|e| format!("shared-{k}: {e}"))?;
            if file != 100 + k as u64 || !s.closed[k].lock().unwrap().contains(&seq) {
                return Err(format!(
                    "shared-{k}: read file {file} seq {seq}, which no writer closed for it"
                ));
            }
            c.reads += 1;
            c.bytes += bytes.len() as u64;
        }
        Ok(c)
    })
}

#[test]
fn eight_writers_and_eight_readers_for_a_minute_see_only_whole_versions_and_keep_the_last() {
    let _heavy = heavy();
    let mut m = Mount::new("fw-concurrency");
    let dir = m.path("d");
    fs::create_dir(&dir).unwrap();
    let pool: Vec<Vec<u8>> = (0..POOL as u64).map(|i| noise(BLOCK, 0xc0c0 + i)).collect();
    // Every file exists with a first version before the threads start.
    let mut seq0 = 0;
    for k in 0..INPLACE {
        fs::write(
            dir.join(format!("inplace-{k}")),
            version(&pool, k as u64, seq0, 1000),
        )
        .unwrap();
        seq0 += 1;
    }
    for k in 0..SHARED {
        fs::write(
            dir.join(format!("shared-{k}")),
            version(&pool, 100 + k as u64, seq0, 1000),
        )
        .unwrap();
        seq0 += 1;
    }
    let shared = Arc::new(Shared {
        pool,
        dir: dir.clone(),
        stop: AtomicBool::new(false),
        seq: AtomicU64::new(seq0),
        inplace: (0..INPLACE as u64).map(RwLock::new).collect(),
        closed: (0..SHARED as u64)
            .map(|k| Mutex::new(HashSet::from([INPLACE as u64 + k])))
            .collect(),
        renamed: (0..SHARED as u64)
            .map(|k| Mutex::new(INPLACE as u64 + k))
            .collect(),
    });
    let mut jobs: Vec<(String, Job)> = Vec::new();
    for i in 0..4 {
        jobs.push((format!("in-place writer {i}"), inplace_writer(i)));
        jobs.push((format!("in-place reader {i}"), inplace_reader(i)));
        jobs.push((format!("atomic writer {i}"), atomic_writer(i)));
        jobs.push((format!("atomic reader {i}"), atomic_reader(i)));
    }
    let started = Instant::now();
    let threads: Vec<_> = jobs
        .into_iter()
        .map(|(name, job)| {
            let s = shared.clone();
            let t = std::thread::spawn(move || {
                let r = job(&s);
                if r.is_err() {
                    s.stop.store(true, Ordering::Relaxed);
                }
                r
            });
            (name, t)
        })
        .collect();
    while started.elapsed() < RUN && !shared.stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    shared.stop.store(true, Ordering::Relaxed);
    let mut totals: BTreeMap<&str, Count> = BTreeMap::new();
    let mut errors = Vec::new();
    for (name, t) in threads {
        match t.join() {
            Ok(Ok(c)) => {
                let kind = if name.contains("writer") {
                    "writers"
                } else {
                    "readers"
                };
                let e = totals.entry(kind).or_default();
                e.saves += c.saves;
                e.reads += c.reads;
                e.bytes += c.bytes;
                e.enoent += c.enoent;
            }
            Ok(Err(e)) => errors.push(format!("{name}: {e}")),
            Err(_) => errors.push(format!("{name} panicked")),
        }
    }
    assert!(
        errors.is_empty(),
        "after {:.1?}:\n{}\n{}",
        started.elapsed(),
        errors.join("\n"),
        m.log()
    );
    eprintln!("concurrency: {:.1?}: {totals:?}", started.elapsed());
    assert!(
        totals["writers"].saves >= 100 && totals["readers"].reads >= 100,
        "{totals:?}"
    );

    let want: BTreeMap<String, (u64, u64)> = (0..INPLACE)
        .map(|k| {
            (
                format!("inplace-{k}"),
                (k as u64, *shared.inplace[k].read().unwrap()),
            )
        })
        .chain((0..SHARED).map(|k| {
            (
                format!("shared-{k}"),
                (100 + k as u64, *shared.renamed[k].lock().unwrap()),
            )
        }))
        .collect();
    m.remount();
    assert_eq!(
        names(&dir),
        want.keys().cloned().collect(),
        "names after the run"
    );
    for (name, id) in &want {
        for p in [
            dir.join(name),
            ctl(&m, &format!("versions/d/{name}/latest")),
        ] {
            let bytes = fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let got =
                parse(&bytes).unwrap_or_else(|e| panic!("{} after a remount: {e}", p.display()));
            assert_eq!(got, *id, "{} after a remount: (file, seq)", p.display());
        }
    }
}
