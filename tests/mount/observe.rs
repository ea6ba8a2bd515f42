//! Observability: the `.ckpt/events` log (commits, snapshots, retention
//! decisions, GC runs; followable like `tail -f`), the live numbers in
//! `.ckpt/stats`, and the MLflow example that follows the log.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{python, run_python, Mount};

fn events(m: &Mount) -> Vec<serde_json::Value> {
    fs::read_to_string(m.path(".ckpt/events"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad event line {l:?}: {e}")))
        .collect()
}

fn of_kind<'a>(all: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    all.iter().filter(|e| e["event"] == kind).collect()
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_event_log_records_commits_snapshots_retention_and_gc_and_grows_for_followers() {
    let m = Mount::new("observe-events");
    fs::write(m.path("a.bin"), vec![7u8; 100_000]).unwrap();
    fs::write(m.path("a.bin"), vec![8u8; 50_000]).unwrap();
    // A follower that opened the log and read to its end sees what comes next.
    let mut follower = fs::File::open(m.path(".ckpt/events")).unwrap();
    let mut seen = String::new();
    follower.read_to_string(&mut seen).unwrap();
    let offset = follower.stream_position().unwrap();
    fs::create_dir(m.path(".ckpt/snapshots/first")).unwrap();
    fs::write(m.path(".ckpt/retention/policy"), "keep-last = 1\n").unwrap();
    fs::write(m.path("b.bin"), b"second").unwrap();
    fs::create_dir(m.path(".ckpt/snapshots/second")).unwrap();
    fs::write(m.path(".ckpt/retention/gc"), "run\n").unwrap();
    follower.seek(SeekFrom::Start(offset)).unwrap();
    let mut more = String::new();
    follower.read_to_string(&mut more).unwrap();
    assert!(
        more.contains("\"event\":\"snapshot\"") && more.contains("\"event\":\"gc\""),
        "follower read {more:?}"
    );
    assert_eq!(
        fs::metadata(m.path(".ckpt/events")).unwrap().len(),
        offset + more.len() as u64,
        "the log's size is what a follower can read"
    );

    let all = events(&m);
    let commits: Vec<_> = of_kind(&all, "commit")
        .into_iter()
        .filter(|e| e["path"] == "/a.bin")
        .collect();
    assert_eq!(commits.len(), 2, "{all:#?}");
    assert_eq!(commits[0]["version"], 1);
    assert_eq!(commits[1]["version"], 2);
    assert_eq!(commits[1]["size"], 50_000);
    let snaps = of_kind(&all, "snapshot");
    assert_eq!(
        snaps
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["first", "second"]
    );
    assert_eq!(snaps[0]["trigger"], "mkdir");
    assert_eq!(snaps[1]["files"], 2);
    let retention = of_kind(&all, "retention");
    assert_eq!(retention.len(), 1);
    assert_eq!(retention[0]["expiring"], serde_json::json!(["first"]));
    assert_eq!(retention[0]["kept"][0]["snapshot"], "second");
    let gc = of_kind(&all, "gc");
    assert_eq!(gc.len(), 1);
    assert_eq!(gc[0]["snapshots_deleted"], 1);
    for e in &all {
        assert!(
            e["at"].as_str().is_some_and(|t| t.ends_with('Z')),
            "every event is timestamped: {e}"
        );
    }
}

#[test]
fn stats_show_the_last_minute_and_the_last_gc() {
    let m = Mount::new("observe-stats");
    for i in 0..3 {
        fs::write(m.path(&format!("f{i}")), vec![i as u8 + 1; 1 << 20]).unwrap();
    }
    let stats: serde_json::Value =
        serde_json::from_slice(&fs::read(m.path(".ckpt/stats")).unwrap()).unwrap();
    assert_eq!(stats["last_minute"]["commits"], 3, "{stats:#}");
    assert_eq!(stats["last_minute"]["committed_bytes"], 3 << 20);
    assert!(stats["last_gc"].is_null());
    assert_eq!(stats["live"]["files"], 3);
    fs::write(m.path(".ckpt/retention/gc"), "run\n").unwrap();
    let stats: serde_json::Value =
        serde_json::from_slice(&fs::read(m.path(".ckpt/stats")).unwrap()).unwrap();
    assert!(stats["last_gc"]["at"].is_string(), "{stats:#}");
    assert!(stats["stored_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn the_mlflow_example_logs_every_snapshot_with_its_metric() {
    let m = Mount::new("observe-mlflow");
    fs::write(
        m.path(".ckpt/retention/policy"),
        "keep-best = 1\nmetric = eval_loss\nmetric-file = trainer_state.json\nmetric-key = best_metric\n",
    )
    .unwrap();
    let db = m.root.join("mlflow.db");
    let uri = format!("sqlite:///{}", db.display());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/mlflow_follow.py");
    let mut follower = Command::new(python())
        .arg(script)
        .arg(&m.mnt)
        .args([
            "--tracking-uri",
            &uri,
            "--experiment",
            "run1",
            "--exit-after",
            "3",
            "--from-start",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the follower");
    let losses = [(100, 0.9), (200, 0.55), (300, 0.61)];
    fs::create_dir(m.path("out")).unwrap();
    for (step, loss) in losses {
        let tmp = m.path(&format!("out/tmp-checkpoint-{step}"));
        fs::create_dir(&tmp).unwrap();
        fs::write(tmp.join("model.bin"), vec![step as u8; 300_000]).unwrap();
        fs::write(
            tmp.join("trainer_state.json"),
            format!("{{\"best_metric\": {loss}}}"),
        )
        .unwrap();
        let before = fs::read_dir(m.path(".ckpt/snapshots")).unwrap().count();
        fs::rename(&tmp, m.path(&format!("out/checkpoint-{step}"))).unwrap();
        wait_for("the checkpoint's snapshot", || {
            fs::read_dir(m.path(".ckpt/snapshots")).unwrap().count() > before
        });
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = follower.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = follower.kill();
            let out = follower.wait_with_output().unwrap();
            panic!(
                "the MLflow follower did not log 3 snapshots:\n{}\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                m.log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = follower.wait_with_output().unwrap();
    assert!(
        status.success(),
        "follower failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let query = format!(
        "import mlflow, json\n\
         c = mlflow.tracking.MlflowClient(tracking_uri='{uri}')\n\
         e = c.get_experiment_by_name('run1')\n\
         runs = c.search_runs([e.experiment_id])\n\
         print(json.dumps(sorted([[r.data.tags['ckptfs.snapshot'], r.data.metrics.get('eval_loss'), r.data.metrics.get('files')] for r in runs])))\n"
    );
    let text = run_python(&query, &[] as &[&str]);
    let runs: Vec<(String, Option<f64>, Option<f64>)> =
        serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(runs.len(), 3, "{runs:?}");
    let mut got: Vec<f64> = runs
        .iter()
        .map(|r| r.1.expect("eval_loss logged"))
        .collect();
    got.sort_by(f64::total_cmp);
    assert_eq!(got, [0.55, 0.61, 0.9]);
    assert!(
        runs.iter()
            .all(|r| r.0.starts_with("auto-") && r.2.is_some()),
        "{runs:?}"
    );
}
