//! An HF-Trainer-like run (`py/trainer.py`): eight saves into
//! `tmp-checkpoint-N`, each renamed to `checkpoint-N` (an automatic
//! snapshot), with the trainer's own `save_total_limit = 2` deleting older
//! checkpoint directories. ckptfs keeps what the trainer deleted: every
//! version stays under `.ckpt/versions/` and every snapshot holds its
//! checkpoints, byte-exact after a remount, until the retention policy
//! lets them go. With `keep-last = 2` and `keep-best = 1` by the eval loss
//! in `trainer_state.json`, GC keeps the best checkpoint's snapshot and
//! the last two and expires the others; `file-versions-keep = 0` then
//! drops exactly the versions whose content no kept snapshot or live file
//! holds.

use std::collections::{BTreeMap, BTreeSet};

use super::support::{
    ctl, expired_of, history, load_everywhere, names, py, run_gc, set, set_policy, tree, Entry, Ref,
};
use crate::common::{hash_file, Mount};

const POLICY: &str = "keep-last = 2\nkeep-best = 1\nmetric = eval_loss\nmetric-mode = min\n\
                      metric-file = trainer_state.json\nmetric-key = log_history.-1.eval_loss\n";

/// The files whose loads are checked in the kept snapshots and history.
const FILES: [&str; 6] = [
    "run/checkpoint-100/model.safetensors",
    "run/checkpoint-200/model.safetensors",
    "run/checkpoint-200/optimizer.npz",
    "run/checkpoint-200/trainer_state.json",
    "run/checkpoint-800/model.safetensors",
    "run/checkpoint-700/trainer_state.json",
];

fn xattr_str(p: &std::path::Path, name: &str) -> Option<String> {
    xattr::get(p, name)
        .unwrap_or_else(|e| panic!("getxattr {name} of {}: {e}", p.display()))
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

#[test]
fn hf_trainer_checkpoints_deleted_by_the_trainer_stay_until_the_policy_drops_them() {
    let mut m = Mount::new("fw-hf-trainer");
    let r = Ref::of(&m);
    py(
        &m,
        "trainer.py",
        &["save".as_ref(), m.mnt.as_os_str(), r.dir.as_os_str()],
    );
    let autos: Vec<String> = r.done()["autos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(autos.len(), 8, "{autos:?}");
    let all: BTreeSet<String> = autos.iter().cloned().collect();
    for (k, s) in autos.iter().enumerate() {
        let t =
            xattr_str(&ctl(&m, &format!("snapshots/{s}")), "user.ckpt.trigger").unwrap_or_default();
        assert!(
            t.contains(&format!("checkpoint-{}", 100 * (k + 1))),
            "{s}: trigger `{t}`"
        );
    }
    r.check(&m, &all, "before the remount");
    m.remount();
    r.check(&m, &all, "after a remount");
    assert_eq!(
        names(&m.path("run")),
        set(&["checkpoint-700", "checkpoint-800"])
    );
    // The trainer deleted checkpoint-100..600; history has every file.
    let h = history(&m);
    for step in (100..=800).step_by(100) {
        for f in [
            "model.safetensors",
            "optimizer.npz",
            "scheduler.pkl",
            "trainer_state.json",
        ] {
            for dir in ["checkpoint", "tmp-checkpoint"] {
                let p = format!("run/{dir}-{step}/{f}");
                assert_eq!(h.get(&p).map(Vec::len), Some(1), "versions of {p}");
            }
        }
    }
    load_everywhere(&m, &r, "trainer.py", "hf", &FILES);

    // The policy: the best by eval loss (step 200) and the last two.
    set_policy(&m, POLICY);
    let best = std::fs::read_link(ctl(&m, "snapshots/best")).expect("snapshots/best");
    assert_eq!(best.to_str(), Some(autos[1].as_str()), "snapshots/best");
    assert_eq!(
        xattr_str(
            &ctl(&m, &format!("snapshots/{}", autos[1])),
            "user.ckpt.metric.eval_loss"
        )
        .as_deref(),
        Some("0.42")
    );
    let report = run_gc(&m);
    let expired: BTreeSet<String> = [0, 2, 3, 4, 5].iter().map(|&i| autos[i].clone()).collect();
    assert_eq!(expired_of(&report), expired, "{report}");
    let kept: BTreeSet<String> = [1, 6, 7].iter().map(|&i| autos[i].clone()).collect();
    // No file-versions-keep: every version stays.
    r.check(&m, &kept, "after GC with keep-last = 2, keep-best = 1");

    // file-versions-keep = 0: only versions whose content a kept snapshot
    // holds (a `tmp-checkpoint-N` version shares it with the
    // `checkpoint-N` version its rename made), and the newest of each live
    // file, stay. No content repeats across steps, so hashes tell.
    set_policy(&m, &format!("{POLICY}file-versions-keep = 0\n"));
    let report = run_gc(&m);
    assert!(expired_of(&report).is_empty(), "{report}");
    let held: BTreeSet<u128> = kept
        .iter()
        .flat_map(|s| tree(&r.dir.join("states").join(s)).into_values())
        .filter_map(|e| match e {
            Entry::File(h, _) => Some(h),
            _ => None,
        })
        .collect();
    let live = tree(&r.tree());
    let mut want = BTreeMap::new();
    for (path, hashes) in r.versions() {
        let keep: Vec<u128> = hashes
            .iter()
            .enumerate()
            .filter(|(i, h)| {
                held.contains(h)
                    || (*i + 1 == hashes.len()
                        && matches!(live.get(&path), Some(Entry::File(x, _)) if x == *h))
            })
            .map(|(_, h)| *h)
            .collect();
        if !keep.is_empty() {
            want.insert(path, keep);
        }
    }
    let dirs: BTreeSet<String> = want
        .keys()
        .map(|p| p.rsplit_once('/').unwrap().0.to_string())
        .collect();
    let steps = [100, 200, 500, 600, 700, 800];
    let mut want_dirs = BTreeSet::new();
    for step in steps {
        want_dirs.insert(format!("run/checkpoint-{step}"));
        want_dirs.insert(format!("run/tmp-checkpoint-{step}"));
    }
    assert_eq!(dirs, want_dirs, "the checkpoints some kept snapshot holds");
    for _ in 0..2 {
        r.check_trees(&m, &kept, "after GC with file-versions-keep = 0");
        r.check_versions(&m, &want, "after GC with file-versions-keep = 0");
        assert_eq!(
            names(&ctl(&m, "versions/run")),
            dirs.iter()
                .map(|d| d.trim_start_matches("run/").to_string())
                .collect::<BTreeSet<_>>(),
            "versions/run after GC"
        );
        let best = ctl(&m, "snapshots/best/run/checkpoint-200/model.safetensors");
        assert_eq!(
            hash_file(&best),
            hash_file(&r.dir.join(format!(
                "states/{}/run/checkpoint-200/model.safetensors",
                autos[1]
            )))
        );
        m.remount();
    }
    load_everywhere(&m, &r, "trainer.py", "hf", &FILES);
}
