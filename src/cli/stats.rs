//! `ckptfs stats TARGET [--json]`: the store's numbers (`.ckpt/stats` on
//! a mount, `Tree::stats` on a store): logical against stored bytes, the
//! dedup and compression ratios, versions, snapshots, open writers, the
//! last minute's commits and the last GC. Human-readable by default.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::Value;

use super::show;
use super::target::{self, open_store, Target, TargetArgs};

/// Options of `ckptfs stats`.
#[derive(Debug, Clone, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Print the JSON of `.ckpt/stats` instead.
    #[arg(long)]
    json: bool,
}

/// How much of the end of the event log is searched for the last GC.
const EVENTS_TAIL: u64 = 4 << 20;

/// The last `gc` event in an event log (`STORE/events.jsonl` or
/// `.ckpt/events`), for when no GC ran since the mount.
fn last_gc_event(path: &Path) -> Option<Value> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    // `.ckpt/events` reports its size; a plain read to the end works on both.
    let start = len.saturating_sub(EVENTS_TAIL);
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut text = Vec::new();
    f.take(EVENTS_TAIL).read_to_end(&mut text).ok()?;
    String::from_utf8_lossy(&text)
        .lines()
        .rev()
        .filter(|l| l.contains("\"gc\""))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "gc")
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// Prints the numbers for people.
fn print_human(s: &Value, mounted: bool, events: &Path) {
    let row = |k: &str, v: String| println!("{k:<14}{v}");
    row(
        "logical",
        format!(
            "{} in {} versions (live: {} files, {})",
            show::bytes(n(&s["logical_bytes"])),
            n(&s["versions"]),
            n(&s["live"]["files"]),
            show::bytes(n(&s["live"]["bytes"]))
        ),
    );
    row(
        "stored",
        format!(
            "{} ({} unique in {} chunks; store on disk {})",
            show::bytes(n(&s["stored_bytes"])),
            show::bytes(n(&s["unique_bytes"])),
            n(&s["chunks"]),
            show::bytes(n(&s["store_disk_bytes"]))
        ),
    );
    if let Some(chunker) = s["chunker"].as_str() {
        row("chunker", chunker.to_string());
    }
    row(
        "dedup ratio",
        format!("{:.2}x", s["dedup_ratio"].as_f64().unwrap_or(1.0)),
    );
    row(
        "compression",
        format!("{:.2}x", s["compression_ratio"].as_f64().unwrap_or(1.0)),
    );
    row("versions", n(&s["versions"]).to_string());
    row(
        "snapshots",
        format!(
            "{} ({} logical)",
            n(&s["snapshots"]),
            show::bytes(n(&s["snapshot_logical_bytes"]))
        ),
    );
    if mounted {
        row("open writers", n(&s["files_open_for_writing"]).to_string());
        let lm = &s["last_minute"];
        row(
            "last minute",
            format!(
                "{} commits, {} ({:.1} MB/s)",
                n(&lm["commits"]),
                show::bytes(n(&lm["committed_bytes"])),
                lm["mb_per_s"].as_f64().unwrap_or(0.0)
            ),
        );
    } else {
        row("open writers", "- (not mounted)".into());
        row("last minute", "- (not mounted)".into());
    }
    let (gc, from_log) = match &s["last_gc"] {
        Value::Null => (last_gc_event(events), true),
        v => (Some(v.clone()), false),
    };
    row(
        "last GC",
        match gc {
            Some(g) => format!(
                "{}: {} snapshots, {} versions, {} chunks deleted, {} freed ({} ms){}",
                show::short_time(g["at"].as_str().unwrap_or("?")),
                n(&g["snapshots_deleted"]),
                n(&g["versions_deleted"]),
                n(&g["chunks_deleted"]),
                show::bytes(n(&g["bytes_freed"])),
                n(&g["millis"]),
                if from_log {
                    " (from the event log)"
                } else {
                    ""
                }
            ),
            None => "never".into(),
        },
    );
}

/// `ckptfs stats`.
pub fn stats(args: &StatsArgs) -> Result<()> {
    let (value, mounted, events) = match target::resolve(&args.target)? {
        Target::Mount(ctl) => {
            let path = ctl.path("stats");
            let text = std::fs::read(&path).map_err(|e| target::io_context(e, path.display()))?;
            let v: Value = serde_json::from_slice(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            (v, true, ctl.path("events"))
        }
        Target::Store(root) => {
            let opened = open_store(&root, false)?;
            (opened.tree.stats()?, false, root.join("events.jsonl"))
        }
    };
    if let Some(err) = value.get("error").and_then(Value::as_str) {
        anyhow::bail!("the daemon could not compute stats: {err}");
    }
    if args.json {
        return show::json(&value);
    }
    print_human(&value, mounted, &events);
    Ok(())
}
