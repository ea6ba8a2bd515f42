//! `ckptfs verify TARGET [--json]`: a scrub of the whole store. Every
//! chunk is read and checked against its id, every referenced manifest is
//! checked; each damaged live file, version and snapshot file is named.
//! Exits 1 when anything is damaged (after printing the report). On a
//! mount it reads `.ckpt/verify` (opening it runs the scrub in the
//! daemon); on a store it runs `Tree::verify` here, with progress.

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::Value;

use super::progress::{Progress, Unit};
use super::show;
use super::target::{self, open_store, Target, TargetArgs};

/// Options of `ckptfs verify`.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Print the JSON report instead.
    #[arg(long)]
    json: bool,
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// Prints the report for people.
fn print_human(r: &Value) {
    println!(
        "checked {} chunks ({}) and {} manifests",
        n(&r["chunks_checked"]),
        show::bytes(n(&r["bytes_checked"])),
        n(&r["manifests_checked"])
    );
    if r["clean"].as_bool() == Some(true) {
        println!("clean: no damage found");
        return;
    }
    let bad_chunks = r["bad_chunks"].as_array().map_or(0, Vec::len);
    let bad_manifests = r["bad_manifests"].as_array().map_or(0, Vec::len);
    println!(
        "DAMAGED: {}, {}",
        show::count(bad_chunks as u64, "chunk", "chunks"),
        show::count(bad_manifests as u64, "manifest", "manifests")
    );
    let rows: Vec<Vec<String>> = r["damaged"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| {
                    let which = d["which"].as_str().unwrap_or("");
                    let kind = d["kind"].as_str().unwrap_or("?");
                    vec![
                        kind.to_string(),
                        d["path"].as_str().unwrap_or("?").to_string(),
                        match kind {
                            "version" => format!("version {which}"),
                            "snapshot" => format!("in snapshot {which}"),
                            _ => which.to_string(),
                        },
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    if !rows.is_empty() {
        show::table(&["KIND", "PATH", "WHICH"], &rows);
    }
}

/// `ckptfs verify`.
pub fn verify(args: &VerifyArgs) -> Result<()> {
    let progress = Progress::new("verify", Unit::Count);
    let report = match target::resolve(&args.target)? {
        Target::Mount(ctl) => {
            progress.spin("scrubbing every chunk and manifest in the daemon");
            let path = ctl.path("verify");
            let text = std::fs::read(&path).map_err(|e| target::io_context(e, path.display()))?;
            serde_json::from_slice::<Value>(&text)
                .with_context(|| format!("{} did not return a JSON report", path.display()))?
        }
        Target::Store(root) => {
            let opened = open_store(&root, false)?;
            let report = opened
                .tree
                .verify(&|phase, done, total| progress.update(phase, done, total))?;
            report.to_json()
        }
    };
    progress.finish();
    if args.json {
        show::json(&report)?;
    } else {
        print_human(&report);
    }
    match report["clean"].as_bool() {
        Some(true) => Ok(()),
        Some(false) => {
            let files = report["damaged"].as_array().map_or(0, Vec::len);
            let chunks = report["bad_chunks"].as_array().map_or(0, Vec::len);
            bail!(
                "verify found damage: {}; {} damaged (files, versions, snapshot files)",
                show::count(chunks as u64, "bad chunk", "bad chunks"),
                files
            )
        }
        None => bail!("unexpected verify report: {report}"),
    }
}
