//! keep-best with each metric source, on files laid out the way training
//! frameworks write them: an HF Trainer-like `trainer_state.json`
//! (metric-file + metric-key), Lightning-like `epoch=3-val_loss=0.123.ckpt`
//! names (metric-regex), and an xattr of the mount root at snapshot time
//! (metric-xattr). `snapshots/best` follows the metric, and each
//! snapshot's `user.ckpt.metric.NAME` shows its value.

use std::fs;
use std::path::Path;

use nix::errno::Errno;

use super::{
    append_policy, ctl, expect_errno, expired_of, listing, q, run_gc, set, set_policy, snapshot,
    snapshot_names, status, status_plan, write_file, xattr, xxh,
};
use crate::common::{hash_file, noise, sh, Mount};

/// Where `snapshots/best` points, if it exists.
fn best(m: &Mount) -> Option<String> {
    let link = ctl(m, "snapshots/best");
    match fs::read_link(&link) {
        Ok(t) => Some(t.into_os_string().into_string().expect("utf-8 target")),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => None,
        Err(e) => panic!("readlink {}: {e}", link.display()),
    }
}

/// `user.ckpt.metric.NAME` of a snapshot.
fn metric_xattr(m: &Mount, snap: &str, name: &str) -> Result<String, String> {
    xattr(
        &ctl(m, &format!("snapshots/{snap}")),
        &format!("user.ckpt.metric.{name}"),
        false,
    )
}

/// The trainer_state.json an HF Trainer writes at `step` with the eval
/// losses so far (`log_history` grows; the last entry is this step's eval).
fn trainer_state(step: usize, losses: &[f64]) -> String {
    let mut history = Vec::new();
    for (i, loss) in losses.iter().enumerate() {
        let s = (i + 1) * 100;
        history.push(format!(
            r#"{{"loss": {}, "learning_rate": 5e-05, "step": {s}}}"#,
            loss + 0.1
        ));
        history.push(format!(
            r#"{{"eval_loss": {loss}, "eval_runtime": 1.5, "step": {s}}}"#
        ));
    }
    let best = losses.iter().cloned().fold(f64::INFINITY, f64::min);
    format!(
        "{{\n  \"best_metric\": {best},\n  \"epoch\": {}.0,\n  \"global_step\": {step},\n  \
         \"grad_norm\": NaN,\n  \"log_history\": [\n    {}\n  ]\n}}\n",
        losses.len(),
        history.join(",\n    ")
    )
}

#[test]
fn keep_best_reads_an_hf_trainer_state_json_in_each_snapshot() {
    let mut m = Mount::new("ret-metric-hf");
    set_policy(&m, "keep-last = 1\n");
    assert_eq!(best(&m), None, "no metric configured: no best link");
    let out = m.path("out");
    fs::create_dir(&out).unwrap();
    let losses = [0.9, 0.5, 0.7, 0.6, 0.8];
    let mut weights = Vec::new();
    for (i, _) in losses.iter().enumerate() {
        let step = (i + 1) * 100;
        let dir = out.join(format!("checkpoint-{step}"));
        fs::create_dir(&dir).unwrap();
        let w = noise(300_000, 0x4e7 + i as u64);
        write_file(&dir.join("model.safetensors"), &w);
        weights.push(xxh(&w));
        // The older checkpoints' states stay: the newest file counts.
        std::thread::sleep(std::time::Duration::from_millis(20));
        write_file(
            &dir.join("trainer_state.json"),
            trainer_state(step, &losses[..=i]).as_bytes(),
        );
        snapshot(&m, &format!("s{}", i + 1));
    }
    let policy =
        "keep-last = 1\nkeep-best = 2\nmetric = eval_loss\nmetric-file = trainer_state.json\n\
                  metric-key = log_history.-1.eval_loss\n";
    set_policy(&m, policy);
    assert_eq!(status(&m)["metric"], "eval_loss");
    assert_eq!(listing(&m, "kept"), set(&["s2", "s4", "s5"]));
    assert_eq!(listing(&m, "expiring"), set(&["s1", "s3"]));
    let (kept, _) = status_plan(&m);
    assert_eq!(kept["s2"], ["keep-best"]);
    assert_eq!(kept["s4"], ["keep-best"]);
    assert_eq!(kept["s5"], ["newest", "keep-last"]);
    assert_eq!(best(&m).as_deref(), Some("s2"));
    for (i, loss) in losses.iter().enumerate() {
        let got = metric_xattr(&m, &format!("s{}", i + 1), "eval_loss");
        assert_eq!(
            got,
            Ok(loss.to_string()),
            "user.ckpt.metric.eval_loss of s{}",
            i + 1
        );
    }
    assert_eq!(
        hash_file(&ctl(
            &m,
            "snapshots/best/out/checkpoint-200/model.safetensors"
        )),
        weights[1]
    );

    // A pattern with a directory part, and HF's best_metric key: the best
    // so far, so the later snapshots tie with s2 and the newest tie wins.
    set_policy(
        &m,
        "keep-best = 1\nmetric-file = out/*/trainer_state.json\nmetric-key = best_metric\n",
    );
    assert_eq!(status(&m)["metric"], "best_metric");
    assert_eq!(best(&m).as_deref(), Some("s5"));
    assert_eq!(metric_xattr(&m, "s1", "best_metric"), Ok("0.9".into()));
    assert_eq!(metric_xattr(&m, "s3", "best_metric"), Ok("0.5".into()));
    assert_eq!(listing(&m, "kept"), set(&["s5"]));

    // Back to the eval loss; GC keeps the best and the newest.
    set_policy(&m, policy);
    let report = run_gc(&m);
    assert_eq!(expired_of(&report), set(&["s1", "s3"]));
    assert_eq!(snapshot_names(&m), set(&["s2", "s4", "s5"]));
    m.remount();
    assert_eq!(best(&m).as_deref(), Some("s2"));
    assert_eq!(metric_xattr(&m, "s4", "eval_loss"), Ok("0.6".into()));
    for (snap, upto) in [("s2", 2), ("s4", 4), ("s5", 5)] {
        for (i, w) in weights.iter().enumerate().take(upto) {
            let p = ctl(
                &m,
                &format!(
                    "snapshots/{snap}/out/checkpoint-{}/model.safetensors",
                    (i + 1) * 100
                ),
            );
            assert_eq!(hash_file(&p), *w, "{}", p.display());
        }
    }
}

#[test]
fn keep_best_reads_lightning_checkpoint_names_with_metric_regex() {
    let m = Mount::new("ret-metric-lightning");
    let dir = m.path("lightning_logs/version_0/checkpoints");
    fs::create_dir_all(&dir).unwrap();
    let losses = ["0.500", "0.123", "0.400", "0.300", "0.350"];
    let mut prev: Option<String> = None;
    let mut held = Vec::new();
    for (epoch, loss) in losses.iter().enumerate() {
        let name = format!("epoch={epoch}-val_loss={loss}.ckpt");
        let data = noise(200_000, 0x11 + epoch as u64);
        write_file(&dir.join(&name), &data);
        write_file(&dir.join("last.ckpt"), &data);
        // save_top_k = 1 by recency: the previous epoch's file goes.
        if let Some(p) = prev.replace(name.clone()) {
            fs::remove_file(dir.join(p)).unwrap();
        }
        held.push((name, xxh(&data)));
        snapshot(&m, &format!("epoch{epoch}"));
    }
    set_policy(
        &m,
        "keep-best = 2\nmetric = val_loss\nmetric-regex = val_loss=([0-9.]+)\n",
    );
    assert_eq!(listing(&m, "kept"), set(&["epoch1", "epoch3", "epoch4"]));
    assert_eq!(listing(&m, "expiring"), set(&["epoch0", "epoch2"]));
    let (kept, _) = status_plan(&m);
    assert_eq!(kept["epoch1"], ["keep-best"]);
    assert_eq!(kept["epoch3"], ["keep-best"]);
    assert_eq!(kept["epoch4"], ["newest"]);
    assert_eq!(best(&m).as_deref(), Some("epoch1"));
    // The capture `0.123.` (the dot before `ckpt`) reads as 0.123.
    assert_eq!(metric_xattr(&m, "epoch1", "val_loss"), Ok("0.123".into()));
    assert_eq!(metric_xattr(&m, "epoch4", "val_loss"), Ok("0.35".into()));

    // max mode: the largest value is best.
    append_policy(&m, "metric-mode = max");
    assert_eq!(best(&m).as_deref(), Some("epoch0"));
    assert_eq!(listing(&m, "kept"), set(&["epoch0", "epoch2", "epoch4"]));
    append_policy(&m, "metric-mode = min");

    let report = run_gc(&m);
    assert_eq!(expired_of(&report), set(&["epoch0", "epoch2"]));
    assert_eq!(snapshot_names(&m), set(&["epoch1", "epoch3", "epoch4"]));
    for (epoch, (name, hash)) in held.iter().enumerate() {
        if [1, 3, 4].contains(&epoch) {
            let base = format!("snapshots/epoch{epoch}/lightning_logs/version_0/checkpoints");
            assert_eq!(hash_file(&ctl(&m, &format!("{base}/{name}"))), *hash);
            assert_eq!(hash_file(&ctl(&m, &format!("{base}/last.ckpt"))), *hash);
        }
    }
    let best_file = ctl(
        &m,
        "snapshots/best/lightning_logs/version_0/checkpoints/epoch=1-val_loss=0.123.ckpt",
    );
    assert_eq!(hash_file(&best_file), held[1].1);
}

/// `setfattr -n NAME -v VALUE` (or `-x NAME` for None) on `path`.
fn set_xattr(path: &Path, name: &str, value: Option<&str>) {
    match value {
        Some(v) => sh(&format!("setfattr -n {name} -v {v} {}", q(path))),
        None => sh(&format!("setfattr -x {name} {}", q(path))),
    };
}

#[test]
fn keep_best_reads_the_root_xattr_each_snapshot_was_taken_with() {
    let m = Mount::new("ret-metric-xattr");
    let root = m.path("");
    // s4 is taken without the xattr: its metric is unknown.
    let values = [Some("0.7"), Some("0.3"), Some("0.5"), None, Some("0.6")];
    for (i, v) in values.iter().enumerate() {
        write_file(&m.path("model.bin"), &noise(100_000, 0x77 + i as u64));
        set_xattr(&root, "user.val_loss", *v);
        snapshot(&m, &format!("s{}", i + 1));
    }
    // The live root keeps changing afterwards; the snapshots do not.
    set_xattr(&root, "user.val_loss", Some("0.01"));
    assert_eq!(
        xattr(&ctl(&m, "snapshots/s2"), "user.val_loss", false),
        Ok("0.3".into())
    );

    set_policy(
        &m,
        "keep-best = 1\nmetric = val_loss\nmetric-xattr = user.val_loss\n",
    );
    let (kept, expiring) = status_plan(&m);
    assert_eq!(kept["s2"], ["keep-best"]);
    assert_eq!(kept["s4"], ["keep-without-metric"]);
    assert_eq!(kept["s5"], ["newest"]);
    assert_eq!(expiring, set(&["s1", "s3"]));
    assert_eq!(listing(&m, "kept"), set(&["s2", "s4", "s5"]));
    assert_eq!(best(&m).as_deref(), Some("s2"));
    assert_eq!(metric_xattr(&m, "s2", "val_loss"), Ok("0.3".into()));
    assert!(
        metric_xattr(&m, "s4", "val_loss").is_err(),
        "s4 has no metric"
    );

    append_policy(&m, "metric-mode = max");
    assert_eq!(best(&m).as_deref(), Some("s1"));
    assert_eq!(listing(&m, "kept"), set(&["s1", "s4", "s5"]));
    append_policy(&m, "keep-without-metric = false");
    assert_eq!(listing(&m, "kept"), set(&["s1", "s5"]));
    assert_eq!(listing(&m, "expiring"), set(&["s2", "s3", "s4"]));

    let report = run_gc(&m);
    assert_eq!(expired_of(&report), set(&["s2", "s3", "s4"]));
    assert_eq!(snapshot_names(&m), set(&["s1", "s5"]));
    assert_eq!(best(&m).as_deref(), Some("s1"));
    assert_eq!(metric_xattr(&m, "s1", "val_loss"), Ok("0.7".into()));
    assert_eq!(
        hash_file(&ctl(&m, "snapshots/best/model.bin")),
        xxh(&noise(100_000, 0x77))
    );
    // Without a metric in the policy there is no best link.
    set_policy(&m, "keep-last = 5\n");
    assert_eq!(best(&m), None);
    expect_errno(
        fs::symlink_metadata(ctl(&m, "snapshots/best")),
        Errno::ENOENT,
        "snapshots/best",
    );
    assert!(!super::names(&ctl(&m, "snapshots")).contains("best"));
}
