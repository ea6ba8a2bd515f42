//! Several processes saving at once.
//!
//! - A PyTorch-DCP-like save (`py/dcp.py`): four rank processes write
//!   their `__R_0.distcp` shards at the same time, then `.metadata.tmp` is
//!   renamed to `.metadata`; the automatic snapshot holds all four shards
//!   with the bytes each rank wrote (checked by the client as soon as the
//!   snapshot appears, and against the reference after a remount).
//! - A hyperparameter search (`py/hpsearch.py`): four trial processes
//!   write `hp/trial_K/` concurrently, each overwriting `best.pt` when it
//!   improves, while the test takes snapshots in the middle of it all.
//!   Afterwards every trial's best and history are right, live, in the
//!   final snapshot and under `.ckpt/versions/`; every file of every
//!   mid-run snapshot is one of the versions its trial wrote.

use std::collections::BTreeSet;
use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::support::{
    assert_same_tree, ctl, history, py, script, snapshot_names, tree, Entry, Ref,
};
use crate::common::{python, Mount};

#[test]
fn dcp_save_by_four_processes_is_snapshot_whole_with_every_shards_bytes() {
    let mut m = Mount::new("fw-dcp");
    let r = Ref::of(&m);
    py(
        &m,
        "dcp.py",
        &["save".as_ref(), m.mnt.as_os_str(), r.dir.as_os_str()],
    );
    let autos = r.states();
    assert_eq!(autos.len(), 3, "one automatic snapshot per save: {autos:?}");
    for (k, s) in autos.iter().enumerate() {
        let trigger = xattr::get(ctl(&m, &format!("snapshots/{s}")), "user.ckpt.trigger")
            .unwrap()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default();
        assert!(trigger.contains(".metadata"), "{s}: trigger `{trigger}`");
        // Snapshot k holds steps 1..=k, each whole.
        let steps: BTreeSet<String> = (1..=k + 1).map(|i| format!("step_{}", 100 * i)).collect();
        assert_eq!(
            super::support::names(&ctl(&m, &format!("snapshots/{s}/ckpt"))),
            steps,
            "{s}"
        );
    }
    r.check(&m, &autos, "DCP before the remount");
    m.remount();
    r.check(&m, &autos, "DCP after a remount");
    let h = history(&m);
    for step in [100, 200, 300] {
        for rank in 0..4 {
            let p = format!("ckpt/step_{step}/__{rank}_0.distcp");
            assert_eq!(h.get(&p).map(Vec::len), Some(1), "versions of {p}");
        }
    }
}

#[test]
fn hyperparameter_search_with_four_concurrent_trials_keeps_each_trials_best_and_history() {
    let mut m = Mount::new("fw-hpsearch");
    let r = Ref::of(&m);
    let mut child = Command::new(python())
        .arg(script("hpsearch.py"))
        .args(["save".as_ref(), m.mnt.as_os_str(), r.dir.as_os_str()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hpsearch.py");
    // Snapshots in the middle of the search (each waits for a moment
    // when no file has unsaved writes).
    let mut mids = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "hpsearch.py ran for 120 s");
        if m.path("hp").exists() {
            let name = format!("mid-{}", mids.len());
            fs::create_dir(ctl(&m, &format!("snapshots/{name}")))
                .unwrap_or_else(|e| panic!("mkdir snapshot {name}: {e}\n{}", m.log()));
            mids.push(name);
        }
        std::thread::sleep(Duration::from_millis(30));
    };
    let out = child.wait_with_output().unwrap();
    assert!(
        status.success(),
        "hpsearch.py: {status}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        m.log()
    );
    assert!(
        mids.len() >= 2,
        "only {} snapshots during the search",
        mids.len()
    );

    let check = |m: &Mount| {
        assert_same_tree(&m.mnt, &r.tree(), "the live tree");
        assert_same_tree(
            &ctl(m, "snapshots/final"),
            &r.dir.join("states/final"),
            "snapshot final",
        );
        let mut all: BTreeSet<String> = mids.iter().cloned().collect();
        all.insert("final".into());
        assert_eq!(snapshot_names(m), all);
        let recorded = r.versions();
        r.check_versions(m, &recorded, "the search");
        // Each file of a mid-run snapshot is a version its trial wrote.
        let mut seen_files = 0;
        for s in &mids {
            for (rel, e) in tree(&ctl(m, &format!("snapshots/{s}"))) {
                let Entry::File(h, _) = e else { continue };
                let versions = recorded
                    .get(&rel)
                    .unwrap_or_else(|| panic!("snapshot {s} holds {rel}, which no trial wrote"));
                assert!(
                    versions.contains(&h),
                    "snapshot {s}: {rel} is none of its {} versions",
                    versions.len()
                );
                seen_files += 1;
            }
        }
        seen_files
    };
    let seen = check(&m);
    m.remount();
    assert_eq!(check(&m), seen);
    let out = py(&m, "hpsearch.py", &["check".as_ref(), m.mnt.as_os_str()]);
    assert!(out.contains("trials ok 4"), "{out}");
    eprintln!(
        "hpsearch: {} mid-run snapshots holding {seen} files; best.pt written at epochs {}",
        mids.len(),
        r.done()["bests"]
    );
}
