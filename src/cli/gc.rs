//! `ckptfs gc TARGET [--dry-run]`: what the retention policy keeps (and
//! by which rules) and what expires; without `--dry-run`, applies it and
//! collects garbage, then reports what was deleted and freed. On a mount
//! through `.ckpt/retention/status` and `.ckpt/retention/gc`; on a store
//! through the retention service.

use std::io::Write;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::Value;

use super::progress::{Progress, Unit};
use super::show;
use super::target::{self, open_store, Target, TargetArgs};

/// Options of `ckptfs gc`.
#[derive(Debug, Clone, Args)]
pub struct GcArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Only show what the policy keeps and what would expire; change
    /// nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the JSON (the policy status, or the GC report) instead.
    #[arg(long)]
    json: bool,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn count(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

/// Prints `retention/status`: validity, kept (with rules), expiring.
fn print_plan(status: &Value) {
    match status["error"].as_str() {
        Some(err) => println!("policy: INVALID, the previous one is in force: {err}"),
        None => println!("policy: ok"),
    }
    if status["rules"].as_bool() == Some(false) {
        println!("the policy has no keep rules: every snapshot is kept");
    }
    let kept = status["kept"].as_array().cloned().unwrap_or_default();
    let expiring = strings(&status["expiring"]);
    let mut rows: Vec<Vec<String>> = kept
        .iter()
        .map(|k| {
            vec![
                "keep".into(),
                k["snapshot"].as_str().unwrap_or_default().to_string(),
                strings(&k["rules"]).join(", "),
            ]
        })
        .collect();
    rows.extend(
        expiring
            .iter()
            .map(|n| vec!["expire".into(), n.clone(), String::new()]),
    );
    if !rows.is_empty() {
        show::table(&["ACTION", "SNAPSHOT", "KEPT BY"], &rows);
    }
    println!(
        "{} kept, {} would expire",
        show::count(kept.len() as u64, "snapshot", "snapshots"),
        expiring.len()
    );
}

/// Prints a GC report (`retention/gc`).
fn print_report(r: &Value) {
    let expired = strings(&r["snapshots_expired"]);
    let list = if expired.is_empty() {
        String::new()
    } else {
        format!(" ({})", expired.join(", "))
    };
    println!(
        "gc: expired {}{list} and {}",
        show::count(expired.len() as u64, "snapshot", "snapshots"),
        show::count(
            count(r, "versions_expired"),
            "file version",
            "file versions"
        )
    );
    println!(
        "gc: deleted {} and {}, freed {}; kept {} ({}); took {} ms",
        show::count(count(r, "manifests_deleted"), "manifest", "manifests"),
        show::count(count(r, "chunks_deleted"), "chunk", "chunks"),
        show::bytes(count(r, "bytes_freed")),
        show::count(count(r, "chunks_kept"), "chunk", "chunks"),
        show::bytes(count(r, "bytes_kept")),
        count(r, "millis")
    );
}

/// `ckptfs gc`.
pub fn gc(args: &GcArgs) -> Result<()> {
    let target = target::resolve(&args.target)?;
    if args.dry_run {
        let status = match &target {
            Target::Mount(ctl) => {
                let path = ctl.path("retention/status");
                let text =
                    std::fs::read(&path).map_err(|e| target::io_context(e, path.display()))?;
                serde_json::from_slice(&text)
                    .with_context(|| format!("{} is not JSON", path.display()))?
            }
            Target::Store(root) => open_store(root, false)?.retention.status_json(),
        };
        if args.json {
            return show::json(&status);
        }
        print_plan(&status);
        println!("dry run: nothing was changed");
        return Ok(());
    }
    let progress = Progress::new("gc", Unit::Count);
    progress.spin("applying the retention policy and collecting garbage");
    let report = match &target {
        Target::Mount(ctl) => {
            let path = ctl.path("retention/gc");
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| match e.raw_os_error() {
                    Some(libc::EROFS) => {
                        anyhow::anyhow!("{} is mounted read-only", ctl.mnt.display())
                    }
                    _ => target::io_context(e, path.display()),
                })?;
            file.write_all(b"run\n")
                .map_err(|e| target::io_context(e, "garbage collection failed"))?;
            // The handle now reads this run's report.
            let text = target::read_back(&file, &path)?;
            serde_json::from_slice::<Value>(&text)
                .with_context(|| format!("{} did not return a JSON report", path.display()))?
        }
        Target::Store(root) => {
            let opened = open_store(root, true)?;
            let report = opened.retention.run_gc()?.to_json();
            opened.finish()?;
            report
        }
    };
    progress.finish();
    if report.get("chunks_deleted").is_none() {
        bail!("unexpected GC report: {report}");
    }
    if args.json {
        return show::json(&report);
    }
    print_report(&report);
    Ok(())
}
