//! SIGKILL of the daemon in the middle of GC. Each round builds a store
//! with expiring snapshots and deleted files (about 80 MiB of new data),
//! triggers GC (`echo run > .ckpt/retention/gc` from a thread) and kills
//! the daemon a little later, a different delay each round. After the
//! restart the store opens, every live file and every snapshot still
//! listed reads back exactly (the kept ones must all be listed), and a
//! second GC completes and finishes the job.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::time::{Duration, Instant};

use super::{
    close, ctl, expired_of, q, run_gc, set_policy, snapshot, snapshot_names, tree, write_file, xxh,
    MIB,
};
use crate::common::{du_bytes, hash_file, heavy, noise, sh, Mount};

/// Kill delays after the GC request is sent, one per round.
const DELAYS_MS: [u64; 5] = [5, 40, 120, 300, 700];

/// What must be in the store.
#[derive(Default)]
struct Model {
    live: BTreeMap<String, u128>,
    /// Snapshots in creation order with their trees.
    snaps: Vec<(String, BTreeMap<String, u128>)>,
    pinned: BTreeSet<String>,
}

impl Model {
    /// The snapshots `keep-last = 2` keeps (plus the pinned ones).
    fn kept(&self) -> BTreeSet<String> {
        let n = self.snaps.len();
        let newest = self.snaps[n.saturating_sub(2)..]
            .iter()
            .map(|(s, _)| s.clone());
        newest.chain(self.pinned.iter().cloned()).collect()
    }
}

/// Checks the store against the model after a restart: the live tree,
/// every kept snapshot, and every expiring one that is still listed.
fn check(m: &Mount, model: &Model, when: &str) {
    assert_eq!(tree(&m.mnt), model.live, "{when}: the live tree");
    for (path, hash) in &model.live {
        let latest = ctl(m, &format!("versions/{path}/latest"));
        assert_eq!(hash_file(&latest), *hash, "{when}: {}", latest.display());
    }
    let listed = snapshot_names(m);
    let known: BTreeSet<String> = model.snaps.iter().map(|(s, _)| s.clone()).collect();
    assert!(
        listed.is_subset(&known),
        "{when}: unknown snapshots in {listed:?}"
    );
    let kept = model.kept();
    assert!(
        kept.is_subset(&listed),
        "{when}: kept snapshots {kept:?}, listed {listed:?}"
    );
    for (name, want) in &model.snaps {
        if listed.contains(name) {
            let got = tree(&ctl(m, &format!("snapshots/{name}")));
            assert_eq!(&got, want, "{when}: content of snapshot {name}");
        }
    }
}

/// The lines of one daemon start's log.
fn start_log(m: &Mount, start: usize) -> String {
    fs::read_to_string(m.root.join(format!("daemon-{start}.log"))).unwrap_or_default()
}

#[test]
fn sigkill_during_gc_leaves_a_store_that_opens_keeps_every_kept_file_and_finishes_the_next_gc() {
    let _heavy = heavy();
    let mut m = Mount::new("ret-gc-crash");
    set_policy(&m, "keep-last = 2\nfile-versions-keep = 0\n");
    fs::create_dir(m.path("ckpt")).unwrap();
    let mut model = Model::default();
    let backbone = noise(4 * MIB, 0xbac0);
    let mut starts = 0; // daemon-{starts}.log is the current daemon's log
    let mut mid_gc = 0;
    let mut lines = Vec::new();
    let mut not_shrunk = Vec::new();
    for (r, delay) in DELAYS_MS.iter().enumerate() {
        // Four steps: a new 12 MiB step file (the previous one deleted
        // after the snapshot) and model.bin (a shared backbone + 8 MiB new).
        for i in 0..4u64 {
            let seed = 0xc4a5_0000 + (r as u64) * 16 + i;
            let step = noise(12 * MIB, seed);
            let name = format!("ckpt/r{r}-s{i}.bin");
            write_file(&m.path(&name), &step);
            model.live.insert(name.clone(), xxh(&step));
            let mut weights = backbone.clone();
            weights.extend_from_slice(&noise(8 * MIB, seed ^ 0xffff));
            write_file(&m.path("model.bin"), &weights);
            model.live.insert("model.bin".into(), xxh(&weights));
            let snap = format!("r{r}-s{i}");
            snapshot(&m, &snap);
            model.snaps.push((snap.clone(), model.live.clone()));
            if r == 0 && i == 0 {
                sh(&format!(
                    "setfattr -n user.ckpt.pinned -v 1 {}",
                    q(&ctl(&m, "snapshots/r0-s0"))
                ));
                model.pinned.insert(snap);
            }
            let old: Vec<String> = model
                .live
                .keys()
                .filter(|k| k.starts_with("ckpt/") && **k != name)
                .cloned()
                .collect();
            for o in old {
                fs::remove_file(m.path(&o)).unwrap();
                model.live.remove(&o);
            }
        }
        let kept = model.kept();
        let expiring: BTreeSet<String> = snapshot_names(&m).difference(&kept).cloned().collect();
        assert!(!expiring.is_empty());
        m.remount();
        starts += 1;
        let du_before = du_bytes(&m.store);

        // GC from a thread; the kill lands `delay` ms after the request.
        let gc = ctl(&m, "retention/gc");
        let sent = Instant::now();
        let thread = std::thread::spawn(move || {
            let mut f = OpenOptions::new().write(true).truncate(true).open(&gc)?;
            f.write_all(b"run\n")?;
            close(f).map_err(std::io::Error::from)?;
            Ok::<Duration, std::io::Error>(sent.elapsed())
        });
        std::thread::sleep(Duration::from_millis(*delay));
        let finished = thread.is_finished();
        m.kill();
        let outcome = thread.join().expect("gc thread");
        let log = start_log(&m, starts);
        // collect_garbage logs each expired snapshot first, a summary last.
        let began = log.contains("gc: snapshot");
        let ended = log.contains("deleted in");
        if began && !ended {
            mid_gc += 1;
        }
        let line = format!(
            "round {r}: kill {delay} ms after `echo run`: gc request {} ({outcome:?}); log: started {began}, \
             finished {ended}; store {du_before} bytes before (settled)",
            if finished { "had returned" } else { "in flight" }
        );
        eprintln!("{line}");
        lines.push(line);

        m.start();
        starts += 1;
        check(&m, &model, &format!("round {r}, after the kill"));
        // The next GC completes and expires what is left of the plan.
        let t = Instant::now();
        let report = run_gc(&m);
        assert!(
            expired_of(&report).is_subset(&expiring),
            "round {r}: {report}"
        );
        model.snaps.retain(|(s, _)| kept.contains(s));
        assert_eq!(snapshot_names(&m), kept, "round {r}: after the second GC");
        check(&m, &model, &format!("round {r}, after the second GC"));
        eprintln!("round {r}: second GC in {:.1?}: {report}", t.elapsed());
        // And then there is nothing left to expire.
        let again = run_gc(&m);
        assert!(expired_of(&again).is_empty(), "round {r}: {again}");
        m.remount();
        starts += 1;
        let du_after = du_bytes(&m.store);
        let shrink = format!(
            "round {r}: store {du_before} bytes before GC, {du_after} after the second GC (settled)"
        );
        eprintln!("{shrink}");
        // Each expiring snapshot alone holds 8 MiB of model.bin that no
        // kept one has: once GC is done, that space is off the disk.
        if du_after + 4 * MIB as u64 > du_before {
            not_shrunk.push(shrink);
        }
        check(&m, &model, &format!("round {r}, after a remount"));
    }
    eprintln!(
        "gc crash: {mid_gc} of {} kills landed in the middle of a GC",
        DELAYS_MS.len()
    );
    assert!(
        mid_gc > 0,
        "no kill landed between the start and the end of a GC, the test proved nothing:\n{}",
        lines.join("\n")
    );
    assert!(
        not_shrunk.is_empty(),
        "the GC after a crash did not return the space to the disk:\n{}\n(kills:\n{})",
        not_shrunk.join("\n"),
        lines.join("\n")
    );
}
