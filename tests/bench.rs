//! `scripts/bench` at a tiny size (one round, 0.05 GiB): the harness runs
//! end to end against plain, ckptfs, restic and borg, writes a JSON report
//! with every sequence and target measured, and leaves no mount, daemon or
//! work directory behind. The numbers themselves are not judged here
//! (timings on these machines are noisy; BENCHMARKS.md has the real run),
//! except those that do not depend on timing: the bytes read back, and the
//! store sizes, where dedup must show on the frozen and copies sequences,
//! and that the report names the machine (CPU, disk speed, what FUSE alone
//! moves through `examples/null_fs`, and how that compares with plain on
//! the saves' own copy, passthrough included where the kernel has it,
//! what `tar | lz4 -1` costs in CPU, what ckptfs's own stages cost on one
//! core through `examples/stage_costs`) it ran on. The copy comparison's
//! failures are driven through a stand-in for `null_fs`: a kernel without
//! passthrough is reported, not fatal, and a server that keeps nothing
//! stops the harness; either way no mount or file is left.

use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn fuse_mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_str().expect("a UTF-8 temp path");
    fs::read_to_string("/proc/mounts")
        .expect("read /proc/mounts")
        .lines()
        .filter(|l| l.split(' ').nth(1).is_some_and(|m| m.starts_with(dir)))
        .map(str::to_string)
        .collect()
}

/// A work directory under /var/tmp (the disk the benchmarks use), removed
/// when dropped.
fn work_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/var/tmp")
        .expect("make a work directory under /var/tmp")
}

/// Runs a harness script; its stdout, once it has exited 0.
fn run_script(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("run {command:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{command:?} failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}

#[test]
fn the_benchmark_harness_measures_every_sequence_and_target_and_cleans_up() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = work_dir("ckptfs-bench-test-");
    let json = work.path().join("result.json");
    let stdout = run_script(
        Command::new(root.join("scripts/bench"))
            .args(["--gib", "0.05", "--rounds", "1", "--no-build", "--dir"])
            .arg(work.path())
            .arg("--json")
            .arg(&json),
    );
    assert!(stdout.contains("ckptfs/plain"), "no table:\n{stdout}");
    assert!(
        stdout.contains("\nmachine: ") && stdout.contains("MB/s (16 MiB, then fdatasync)"),
        "no machine line (CPU, disk speed) in the table:\n{stdout}"
    );
    assert!(
        fuse_mounts_under(work.path()).is_empty(),
        "mounts left behind: {:?}",
        fuse_mounts_under(work.path())
    );
    let leftovers: Vec<_> = fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "result.json")
        .collect();
    assert!(
        leftovers.is_empty(),
        "work files left behind: {leftovers:?}"
    );

    let report: Value = serde_json::from_slice(&fs::read(&json).unwrap()).unwrap();
    let machine = &report["env"]["machine"];
    assert!(
        machine["disk_write_mbs"].as_f64().is_some_and(|v| v > 0.0)
            && machine["cpu_model"].as_str().is_some_and(|m| !m.is_empty()),
        "no machine figures in the report: {machine}"
    );
    // `cargo test` built examples/null_fs: FUSE's own ceiling is measured.
    let null = &machine["fuse_null"];
    assert!(
        [
            "read_mbs",
            "write_mbs",
            "write_kept_mbs",
            "write_kept_cpu_s_per_gb"
        ]
        .iter()
        .all(|k| null[k].as_f64().is_some_and(|v| v > 0.0))
            && null["bytes"].as_u64() == Some(512 << 20),
        "no null-filesystem figures in the report: {machine}"
    );
    assert!(
        stdout.contains("\nFUSE alone (examples/null_fs, no storage): reads "),
        "no FUSE ceiling line in the table:\n{stdout}"
    );
    // FUSE against plain on the saves' own copy of full's first save:
    // plain, and null_fs with writes dropped and kept, in each of 3
    // rounds; passthrough measured, or why not said.
    let copy = &machine["fuse_copy"];
    let positive = |k: &str| copy[k].as_f64().is_some_and(|v| v > 0.0);
    let three_runs = |k: &str| copy[format!("{k}_runs_mbs")].as_array().map(Vec::len) == Some(3);
    assert!(
        ["plain", "dropped", "kept"]
            .iter()
            .all(|k| positive(&format!("{k}_mbs")) && three_runs(k))
            && positive("dropped_vs_plain")
            && positive("kept_vs_plain")
            && copy["rounds"].as_u64() == Some(3)
            && copy["source"]
                .as_str()
                .is_some_and(|s| s.starts_with("full/")),
        "no copy-ceiling figures in the report: {copy}"
    );
    let passthrough_measured = positive("passthrough_mbs")
        && positive("passthrough_vs_plain")
        && three_runs("passthrough")
        && copy["passthrough_missing"].is_null();
    let passthrough_explained = copy["passthrough_mbs"].is_null()
        && copy["passthrough_missing"]
            .as_str()
            .is_some_and(|why| why.contains("passthrough"));
    assert!(
        passthrough_measured || passthrough_explained,
        "passthrough neither measured nor explained: {copy}"
    );
    assert!(
        stdout.contains("\nFUSE against plain, copying full/")
            && stdout.contains("writes dropped ")
            && stdout.contains("kept by the kernel in passthrough mode "),
        "no FUSE-against-plain line in the table:\n{stdout}"
    );
    // The CPU reference: `tar | lz4 -1` of full's first save, measured
    // here, and ckptfs's CPU per GB over it for every sequence.
    let reference = &machine["tar_lz4"];
    assert!(
        reference["cpu_s_per_gb"].as_f64().is_some_and(|v| v > 0.0)
            && reference["bytes"].as_u64().is_some_and(|b| b > 0)
            && reference["source"]
                .as_str()
                .is_some_and(|s| s.starts_with("full/")),
        "no tar | lz4 reference in the report: {machine}"
    );
    assert!(
        stdout.contains("\ntar | lz4 -1 of full/")
            && stdout.contains("\nckptfs CPU s/GB written over tar | lz4 -1's: full "),
        "no CPU reference lines in the table:\n{stdout}"
    );
    // ckptfs's own stages on one core (examples/stage_costs), and with the
    // kept-in-file FUSE server's CPU, the least a fresh save can cost.
    let costs = &machine["stage_costs"];
    let stage = |k: &str| costs[k].as_f64().filter(|v| *v > 0.0);
    let stages = ["cut_and_id_s_per_gb", "coding_s_per_gb", "copy_s_per_gb"];
    assert!(
        stages.iter().all(|k| stage(k).is_some())
            && costs["chunks"].as_u64().is_some_and(|c| c > 0)
            && stage("coded_ratio").is_some_and(|r| r < 1.0)
            && stage("other_cut_and_id_s_per_gb").is_some()
            && costs["cut_search"] == ckptfs::chunk::CutSearch::NEW_STORES.to_string().as_str(),
        "no stage costs in the report: {machine}"
    );
    let work: f64 = stages.iter().filter_map(|k| stage(k)).sum();
    let server = null["write_kept_cpu_s_per_gb"].as_f64().unwrap_or(0.0);
    let floor = stage("floor_s_per_gb").unwrap_or(0.0);
    assert!(
        (floor - work - server).abs() < 1e-9,
        "the floor is not the stages' work ({work}) plus the FUSE server's ({server}): {costs}"
    );
    assert!(
        stdout.contains("\nckptfs's own work on one core (examples/stage_costs over full/")
            && stdout.contains(&format!(
                " ({}; {}'s ",
                costs["cut_search"].as_str().unwrap_or("?"),
                costs["other_search"].as_str().unwrap_or("?")
            ))
            && stdout.contains(
                "\nckptfs CPU s/GB written over the least a fresh save costs here: full "
            ),
        "no stage-cost lines in the table:\n{stdout}"
    );
    let summary = &report["summary"];
    for seq in ["full", "frozen", "copies", "sparse", "ranks"] {
        for target in ["plain", "ckptfs", "restic", "borg"] {
            let stored = summary[seq]["stored"][target]["median"].as_f64();
            assert!(
                stored.is_some_and(|s| s > 0.0),
                "{seq}/{target}: no stored bytes in {}",
                summary[seq]
            );
            let read = summary[seq]["read"][target]["median"].as_f64();
            assert!(
                read.is_some_and(|r| r > 0.0),
                "{seq}/{target}: no read speed"
            );
        }
        for target in ["plain", "ckptfs"] {
            for row in ["save", "save_fsync"] {
                let v = summary[seq][row][target]["median"].as_f64();
                assert!(v.is_some_and(|v| v > 0.0), "{seq}/{target}: no {row}");
            }
        }
        let cpu = summary[seq]["cpu"]["ckptfs"]["median"].as_f64();
        assert!(cpu.is_some(), "{seq}: no CPU figure for the daemon");
        let vs_reference = summary[seq]["cpu"]["vs_tar_lz4"].as_f64();
        let reference = machine["tar_lz4"]["cpu_s_per_gb"].as_f64();
        assert!(
            vs_reference
                .zip(cpu.zip(reference))
                .is_some_and(|(v, (c, r))| (v - c / r).abs() < 1e-9),
            "{seq}: no CPU ratio to tar | lz4: {}",
            summary[seq]["cpu"]
        );
        let vs_floor = summary[seq]["cpu"]["vs_floor"].as_f64();
        assert!(
            vs_floor
                .zip(cpu)
                .is_some_and(|(v, c)| (v - c / floor).abs() < 1e-9),
            "{seq}: no CPU ratio to the floor: {}",
            summary[seq]["cpu"]
        );
        // The daemon writes at least what it stores (the store's fixed
        // files aside, which weigh more at this tiny size).
        let wamp = summary[seq]["wamp"]["ckptfs"]["median"].as_f64();
        assert!(
            wamp.is_some_and(|w| w > 0.3 && w < 5.0),
            "{seq}: disk writes / stored {wamp:?}"
        );
    }
    // Sizes do not depend on timing: dedup must show where data repeats
    // (at this tiny size the store's fixed files weigh a few percent: the
    // 4 GiB figures are in BENCHMARKS.md).
    let stored = |seq: &str, t: &str| summary[seq]["stored"][t]["median"].as_f64().unwrap();
    for (seq, most) in [("frozen", 0.6), ("copies", 0.9), ("full", 1.1)] {
        let got = stored(seq, "ckptfs");
        assert!(
            got < most,
            "{seq}: ckptfs stored/logical {got}, expected under {most}"
        );
    }
    let verified = report["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["target"] == "ckptfs" && r["verified"] == true)
        .count();
    assert_eq!(
        verified, 5,
        "ckptfs read-back was compared for every sequence"
    );
}

#[test]
fn the_ab_harness_runs_both_builds_in_rotated_order_and_cleans_up() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = work_dir("ckptfs-bench-ab-test-");
    let binary = env!("CARGO_BIN_EXE_ckptfs");
    for (bad, says) in [
        (
            ["/nonexistent/ckptfs", binary, "--rounds", "2"],
            "not an executable",
        ),
        ([binary, binary, "--rounds", "1"], "at least 2"),
    ] {
        let out = Command::new(root.join("scripts/bench-ab"))
            .args(bad)
            .output()
            .expect("run scripts/bench-ab");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(says),
            "{bad:?}: {stderr}"
        );
    }
    let stdout = run_script(
        Command::new(root.join("scripts/bench-ab"))
            .args([binary, binary])
            .args(["--scale", "0.02", "--saves", "2", "--rounds", "2", "--dir"])
            .arg(work.path()),
    );
    // Round 1 runs A first, round 2 runs B first.
    let order: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("round "))
        .filter_map(|l| l.split(':').next())
        .collect();
    assert_eq!(order, ["1 A", "1 B", "2 B", "2 A"], "{stdout}");
    for line in ["B/A: save MB/s ", "by position: run first "] {
        assert!(stdout.contains(line), "no {line:?} line:\n{stdout}");
    }
    assert!(
        fuse_mounts_under(work.path()).is_empty(),
        "mounts left behind: {:?}",
        fuse_mounts_under(work.path())
    );
    let left: Vec<_> = fs::read_dir(work.path()).unwrap().collect();
    assert!(left.is_empty(), "work directory left behind: {left:?}");
}

/// Runs `fuse_copy_ceiling` over one 3 MiB file with `null_fs` replaced by
/// a stand-in that refuses passthrough and, when `keeps_nothing`, drops
/// the sink argument; what it printed (the report as JSON, or `error: `
/// and the error), once no mount and no file but the source is left.
fn copy_ceiling_through_a_stand_in(keeps_nothing: bool) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let null_fs = root.join("target/release/examples/null_fs");
    assert!(null_fs.exists(), "examples/null_fs is not built");
    let work = work_dir("ckptfs-bench-copy-test-");
    let src = work.path().join("src");
    fs::create_dir(&src).expect("make the source directory");
    let bytes: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(src.join("model.pt"), &bytes).expect("write the source file");
    let stand_in = work.path().join("null_fs");
    let forward = if keeps_nothing {
        r#""$1" "$2""#
    } else {
        r#""$@""#
    };
    fs::write(
        &stand_in,
        format!(
            "#!/bin/sh\n[ \"$4\" = passthrough ] && {{ echo 'no FUSE passthrough here' >&2; exit 1; }}\nexec {} {forward}\n",
            null_fs.display()
        ),
    )
    .expect("write the stand-in");
    fs::set_permissions(
        &stand_in,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("make the stand-in executable");
    let inner = work.path().join("work");
    fs::create_dir(&inner).expect("make the inner work directory");
    let program = format!(
        "import json, sys\n\
         sys.path.insert(0, {scripts:?})\n\
         from bench_lib import targets as t\n\
         t.NULL_FS = {stand_in:?}\n\
         try:\n    print(json.dumps(t.fuse_copy_ceiling({inner:?}, {src:?}, rounds=2)))\n\
         except RuntimeError as e:\n    print('error:', e)\n",
        scripts = root.join("scripts").display().to_string(),
        stand_in = stand_in.display().to_string(),
        inner = inner.display().to_string(),
        src = src.display().to_string(),
    );
    let python = std::env::var("CKPTFS_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let stdout = run_script(Command::new(python).arg("-c").arg(program));
    assert!(
        fuse_mounts_under(work.path()).is_empty(),
        "mounts left behind: {:?}",
        fuse_mounts_under(work.path())
    );
    let left: Vec<_> = fs::read_dir(&inner)
        .expect("list the inner work directory")
        .collect();
    assert!(left.is_empty(), "work files left behind: {left:?}");
    stdout
}

#[test]
fn the_copy_ceiling_reports_a_kernel_without_passthrough_and_measures_the_rest() {
    let stdout = copy_ceiling_through_a_stand_in(false);
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("no report ({e}):\n{stdout}"));
    assert!(
        report["passthrough_mbs"].is_null()
            && report["passthrough_missing"]
                .as_str()
                .is_some_and(|why| why.contains("passthrough mode")),
        "a refused passthrough is not explained: {report}"
    );
    for kind in ["plain", "dropped", "kept"] {
        assert!(
            report[format!("{kind}_mbs")]
                .as_f64()
                .is_some_and(|v| v > 0.0)
                && report[format!("{kind}_runs_mbs")].as_array().map(Vec::len) == Some(2),
            "{kind} not measured in both rounds: {report}"
        );
    }
}

#[test]
fn a_null_server_that_keeps_nothing_stops_the_copy_ceiling() {
    let stdout = copy_ceiling_through_a_stand_in(true);
    assert!(
        stdout.starts_with("error: null_fs pwrite kept 0 bytes of 3145728"),
        "a sink left empty went unnoticed:\n{stdout}"
    );
}
