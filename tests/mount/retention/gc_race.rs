//! GC while writers store the same data concurrently: the guarantee that
//! GC never deletes a chunk a concurrent writer deduplicated against.
//!
//! Four writer threads keep saving files (atomic-save pattern: `NAME.tmp`,
//! close, rename to `NAME`) whose content comes mostly from a small shared
//! pool, so they deduplicate against each other and against chunks that
//! only deleted files held; each thread keeps only its two newest files.
//! Meanwhile the main thread takes a snapshot and runs GC in a loop with
//! `keep-last = 1` and `file-versions-keep = 0`, so every round the pool
//! contents nothing holds any more are garbage, while writers may be
//! saving exactly those bytes again. Afterwards every file whose close()
//! succeeded and that was not deleted reads back byte-exact, as does every
//! file in the kept snapshot, also after a remount.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::{self, File};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    close, ctl, expired_of, gc_count, run_gc, set_policy, snapshot, snapshot_names, tree, xxh, Rng,
};
use crate::common::{hash_file, heavy, noise, Mount};

const WRITERS: usize = 4;
const POOL: usize = 16;
const KEEP_PER_WRITER: usize = 2;
const GC_ROUNDS: usize = 10;
/// Pool entries are about a MiB each, of slightly different lengths.
const MIB_ISH: usize = 1 << 20;

/// What one writer did.
#[derive(Default)]
struct Written {
    /// Every final name whose save (close and rename) succeeded -> hash.
    all: BTreeMap<String, u128>,
    /// The names it did not delete.
    live: BTreeSet<String>,
    /// The first error, if any (the daemon stays up: every error is a bug).
    error: Option<String>,
    /// Saves of pool content.
    pooled: u64,
}

fn save(path: &std::path::Path, data: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("bin.tmp");
    let mut f = File::create(&tmp).map_err(|e| format!("create {}: {e}", tmp.display()))?;
    f.write_all(data)
        .map_err(|e| format!("write {}: {e}", tmp.display()))?;
    close(f).map_err(|e| format!("close {}: {e}", tmp.display()))?;
    fs::rename(&tmp, path).map_err(|e| format!("rename {}: {e}", tmp.display()))
}

fn writer(
    mnt: std::path::PathBuf,
    t: usize,
    pool: Arc<Vec<Vec<u8>>>,
    stop: Arc<AtomicBool>,
) -> Written {
    let mut w = Written::default();
    let mut rng = Rng(0x9a_ce00 + t as u64);
    let mut order = VecDeque::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let fresh;
        let data: &[u8] = if rng.chance(80) {
            w.pooled += 1;
            &pool[rng.below(POOL as u64) as usize]
        } else {
            fresh = noise(
                200_000 + rng.below(400_000) as usize,
                ((t as u64) << 32) | n,
            );
            &fresh
        };
        let rel = format!("w{t}/f{n:05}.bin");
        if let Err(e) = save(&mnt.join(&rel), data) {
            w.error = Some(e);
            break;
        }
        w.all.insert(rel.clone(), xxh(data));
        w.live.insert(rel.clone());
        order.push_back(rel);
        while order.len() > KEEP_PER_WRITER {
            let old = order.pop_front().unwrap();
            if let Err(e) = fs::remove_file(mnt.join(&old)) {
                w.error = Some(format!("unlink {old}: {e}"));
                return w;
            }
            w.live.remove(&old);
        }
        n += 1;
    }
    w
}

/// Checks the live files and the newest snapshot against what was saved.
fn check(m: &Mount, all: &BTreeMap<String, u128>, live: &BTreeSet<String>, snap: &str, when: &str) {
    let got = tree(&m.mnt);
    let names: BTreeSet<String> = got.keys().cloned().collect();
    assert_eq!(&names, live, "{when}: the live files");
    for (name, hash) in &got {
        assert_eq!(hash, &all[name], "{when}: content of {name}");
        let latest = ctl(m, &format!("versions/{name}/latest"));
        assert_eq!(
            hash_file(&latest),
            all[name],
            "{when}: {}",
            latest.display()
        );
    }
    let in_snap = tree(&ctl(m, &format!("snapshots/{snap}")));
    let mut saved = 0;
    for (name, hash) in &in_snap {
        if name.ends_with(".tmp") {
            // A save in progress: its committed content may be anything
            // the writer had closed so far (nothing, or the whole file).
            continue;
        }
        let want = all
            .get(name)
            .unwrap_or_else(|| panic!("{when}: snapshot {snap} has unknown file {name}"));
        assert_eq!(hash, want, "{when}: content of {name} in snapshot {snap}");
        saved += 1;
    }
    assert!(saved > 0, "{when}: snapshot {snap} holds no saved file");
}

#[test]
fn gc_never_deletes_a_chunk_that_concurrent_writers_deduplicate_against() {
    let _heavy = heavy();
    // Writers never pause, so snapshots must not wait for them.
    let mut m = Mount::with_args("ret-gc-race", &["--snapshot-wait", "0"]);
    set_policy(&m, "keep-last = 1\nfile-versions-keep = 0\n");
    for t in 0..WRITERS {
        fs::create_dir(m.path(&format!("w{t}"))).unwrap();
    }
    let pool: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..POOL)
            .map(|i| noise(MIB_ISH + i * 37_000, 0xd00d_0000 + i as u64))
            .collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let threads: Vec<_> = (0..WRITERS)
        .map(|t| {
            let (mnt, pool, stop) = (m.mnt.clone(), pool.clone(), stop.clone());
            std::thread::spawn(move || writer(mnt, t, pool, stop))
        })
        .collect();

    let (mut expired, mut chunks, mut freed, mut gc_ms) = (0, 0, 0, Vec::new());
    let mut last_snap = String::new();
    for r in 0..GC_ROUNDS {
        std::thread::sleep(Duration::from_millis(300));
        last_snap = format!("g{r}");
        snapshot(&m, &last_snap);
        let report = run_gc(&m);
        expired += expired_of(&report).len();
        chunks += gc_count(&report, "chunks_deleted");
        freed += gc_count(&report, "bytes_freed");
        gc_ms.push(gc_count(&report, "millis"));
        if threads.iter().any(|t| t.is_finished()) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut all = BTreeMap::new();
    let mut live = BTreeSet::new();
    let mut errors = Vec::new();
    let mut pooled = 0;
    for t in threads {
        let w = t.join().expect("writer thread panicked");
        all.extend(w.all);
        live.extend(w.live);
        pooled += w.pooled;
        errors.extend(w.error);
    }
    eprintln!(
        "gc race: {} saves ({pooled} of pool content) by {WRITERS} writers in {:.1?}; {} GC runs took {gc_ms:?} ms, \
         expired {expired} snapshots, deleted {chunks} chunks ({freed} bytes)",
        all.len(),
        started.elapsed(),
        gc_ms.len()
    );
    assert!(
        errors.is_empty(),
        "writers failed while GC ran: {errors:?}\n{}",
        m.log()
    );
    assert_eq!(gc_ms.len(), GC_ROUNDS);
    assert!(
        all.len() >= 40,
        "only {} saves: the race was hardly exercised",
        all.len()
    );
    assert!(
        chunks > 0,
        "GC deleted nothing while the writers ran: the race was not exercised"
    );
    assert_eq!(snapshot_names(&m), super::set(&[&last_snap]));

    check(&m, &all, &live, &last_snap, "after the GC loop");
    let report = run_gc(&m);
    assert!(expired_of(&report).is_empty(), "{report}");
    check(&m, &all, &live, &last_snap, "after a quiet GC");
    m.remount();
    check(&m, &all, &live, &last_snap, "after a remount");
}
