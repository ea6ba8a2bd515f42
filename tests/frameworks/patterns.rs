//! Save patterns of training frameworks (`py/patterns.py`), each checked
//! against the client's reference copy after a remount: the live tree,
//! every snapshot and every version hash as recorded, and the client's
//! loader reads every copy as the right version.
//!
//! - The atomic save: `x.tmp` written and fsynced, `os.replace`d over
//!   `x`, the directory fsynced; both names keep one version per save.
//! - DeepSpeed: writing `latest` after a `global_stepN/` directory takes
//!   an automatic snapshot holding that step and `latest` naming it.
//! - Lightning: `last.ckpt` is a symlink re-pointed (atomically) at each
//!   new epoch file while top-k deletes worse epochs; each snapshot shows
//!   the link pointing at that epoch's file, which reads back exact.

use std::fs;
use std::path::Path;

use super::support::{ctl, hash_file_opt, history, load_everywhere, py, set, Ref};
use crate::common::Mount;

/// Mounts a fresh store and runs `patterns.py save KIND`.
fn saved(kind: &str) -> (Mount, Ref) {
    let m = Mount::new(&format!("fw-{kind}"));
    let r = Ref::of(&m);
    py(
        &m,
        "patterns.py",
        &[
            "save".as_ref(),
            kind.as_ref(),
            m.mnt.as_os_str(),
            r.dir.as_os_str(),
        ],
    );
    (m, r)
}

#[test]
fn atomic_save_with_fsync_and_replace_keeps_every_version_under_both_names() {
    let (mut m, r) = saved("atomic");
    let snaps = r.states();
    assert_eq!(snaps, set(&["atomic-2", "atomic-5"]));
    r.check(&m, &snaps, "atomic save before the remount");
    m.remount();
    r.check(&m, &snaps, "atomic save after a remount");
    let h = history(&m);
    for file in [
        "run/model.npy",
        "run/model.npy.tmp",
        "run/state.pkl",
        "run/state.pkl.tmp",
    ] {
        assert_eq!(h[file].len(), 5, "{file}: one version per save");
    }
    let files = [
        "run/model.npy",
        "run/model.npy.tmp",
        "run/state.pkl",
        "run/state.pkl.tmp",
    ];
    let loads = load_everywhere(&m, &r, "patterns.py", "atomic", &files);
    eprintln!("atomic save: {loads} loads checked");
}

#[test]
fn deepspeed_latest_file_takes_a_snapshot_holding_that_step() {
    let (mut m, r) = saved("deepspeed");
    let snaps = r.states();
    let autos: Vec<&String> = snaps.iter().collect();
    assert_eq!(
        autos.len(),
        3,
        "one automatic snapshot per `latest`: {snaps:?}"
    );
    for (k, s) in autos.iter().enumerate() {
        assert!(s.starts_with("auto-"), "{s}");
        let trigger = xattr::get(ctl(&m, &format!("snapshots/{s}")), "user.ckpt.trigger")
            .unwrap()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default();
        assert!(trigger.contains("latest"), "{s} has trigger `{trigger}`");
        let step = 10 * (k + 1);
        let latest = fs::read_to_string(ctl(&m, &format!("snapshots/{s}/ds/latest"))).unwrap();
        assert_eq!(latest, format!("global_step{step}"), "ds/latest in {s}");
        let steps: Vec<String> = (1..=k + 1)
            .map(|i| format!("global_step{}", 10 * i))
            .collect();
        let mut want: Vec<&str> = steps.iter().map(String::as_str).collect();
        want.push("latest");
        assert_eq!(
            super::support::names(&ctl(&m, &format!("snapshots/{s}/ds"))),
            set(&want),
            "{s}"
        );
    }
    r.check_trees(&m, &snaps, "deepspeed before the remount");
    m.remount();
    r.check_trees(&m, &snaps, "deepspeed after a remount");
    let files = [
        "ds/global_step10/mp_rank_00_model_states.pt",
        "ds/global_step30/zero_pp_rank_0_mp_rank_00_optim_states.pt",
    ];
    load_everywhere(&m, &r, "patterns.py", "deepspeed", &files);
    // Last: the history of the file named `latest` itself, under
    // `.ckpt/versions/ds/latest/`, where the name meets the `latest` link
    // every history directory has.
    r.check_versions(&m, &r.versions(), "deepspeed after a remount");
    load_everywhere(&m, &r, "patterns.py", "deepspeed", &["ds/latest"]);
}

#[test]
fn lightning_last_ckpt_symlink_in_each_snapshot_points_at_that_epochs_file() {
    let (mut m, r) = saved("lightning");
    let snaps = r.states();
    assert_eq!(snaps.len(), 5, "{snaps:?}");
    let ck = "lightning_logs/version_0/checkpoints";
    let check_links = |m: &Mount| {
        for epoch in 0..5 {
            let file = format!("epoch={epoch}-step={}.ckpt", (epoch + 1) * 50);
            let dir = ctl(m, &format!("snapshots/epoch{epoch}/{ck}"));
            let link = dir.join("last.ckpt");
            let target =
                fs::read_link(&link).unwrap_or_else(|e| panic!("readlink {}: {e}", link.display()));
            assert_eq!(target, Path::new(&file), "{}", link.display());
            // Through the link, inside the snapshot: that epoch's bytes.
            let want = r.dir.join(format!("states/epoch{epoch}/{ck}/{file}"));
            assert_eq!(
                hash_file_opt(&link),
                hash_file_opt(&want),
                "{} followed",
                link.display()
            );
            assert!(hash_file_opt(&want).is_some(), "the reference lacks {file}");
        }
        let live = fs::read_link(m.path(&format!("{ck}/last.ckpt"))).unwrap();
        assert_eq!(live, Path::new("epoch=4-step=250.ckpt"));
        // Symlinks have no versions; the temporary link names left none.
        let h = history(m);
        assert!(
            h.keys()
                .all(|k| k.ends_with(".ckpt") && !k.ends_with("last.ckpt")),
            "{h:?}"
        );
    };
    check_links(&m);
    r.check(&m, &snaps, "lightning before the remount");
    m.remount();
    check_links(&m);
    r.check(&m, &snaps, "lightning after a remount");
    // Top-k deleted epochs 0 and 2 from the live tree; history has them.
    let h = history(&m);
    assert_eq!(h.len(), 5, "{h:?}");
    let files = [
        "lightning_logs/version_0/checkpoints/epoch=0-step=50.ckpt",
        "lightning_logs/version_0/checkpoints/epoch=3-step=200.ckpt",
    ];
    load_everywhere(&m, &r, "patterns.py", "lightning", &files);
}
