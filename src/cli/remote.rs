//! `ckptfs remote add|list|remove|snapshots` and `ckptfs push`: which
//! remotes a store replicates to (kept in `STORE/remotes.json`), and an
//! upload of the snapshots a remote lacks. On a mount, push asks the
//! daemon through `.ckpt/remotes/push` (the daemon also pushes by itself
//! after every snapshot); on a store, this process pushes.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use super::show;
use super::target::{self, open_store, Target, TargetArgs};
use crate::remote::{self, spec, Remote, RemoteSpec, Remotes};

/// `ckptfs remote ...`.
#[derive(Debug, Clone, Args)]
pub struct RemoteArgs {
    /// What to do with the remotes.
    #[command(subcommand)]
    command: RemoteCommand,
}

/// The remote subcommands.
#[derive(Debug, Clone, Subcommand)]
enum RemoteCommand {
    /// Add a remote NAME at URL: s3://bucket/prefix (endpoint, region and
    /// keys from --endpoint/--region or the AWS_* variables) or
    /// file:///path (a directory, e.g. on another disk).
    Add(AddArgs),
    /// List the remotes and this store's node id.
    List(ListArgs),
    /// Forget a remote (what it holds is left as it is).
    Remove(RemoveArgs),
    /// List the snapshots a remote holds, from every node.
    Snapshots(RemoteSnapshotsArgs),
    /// Apply the retention policy to a remote and collect its garbage,
    /// safely while other nodes push (condemn, then delete after --grace).
    Gc(RemoteGcArgs),
}

#[derive(Debug, Clone, Args)]
struct RemoteGcArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// The remote's name.
    name: String,
    /// The remote's own retention rules (the policy file's syntax, lines
    /// separated by newlines or `;`); default: the store's policy.
    #[arg(long, value_name = "RULES")]
    policy: Option<String>,
    /// How long an unreferenced pack stays before it is condemned, and a
    /// condemned one before it is deleted; longer than any push takes.
    #[arg(long, value_name = "DURATION", default_value = "6h")]
    grace: String,
    /// Report what would happen; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Args)]
struct AddArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// The remote's name.
    name: String,
    /// s3://bucket/prefix or file:///path.
    url: String,
    /// This store's node id on every remote (default: the host name; set
    /// once, by the first `remote add`).
    #[arg(long, value_name = "ID")]
    node: Option<String>,
    #[command(flatten)]
    options: RemoteOptions,
}

/// How to reach an S3 remote, and which nodes make its global snapshots
/// (`remote add` and `clone`).
#[derive(Debug, Clone, Args)]
pub(super) struct RemoteOptions {
    /// S3 endpoint, e.g. http://127.0.0.1:7480 (else the config file's, else
    /// AWS_ENDPOINT_URL, else AWS itself).
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    /// S3 region (else the config file's, else AWS_REGION, else us-east-1).
    #[arg(long)]
    region: Option<String>,
    /// The nodes that each push a part of every global snapshot
    /// (comma-separated): a global snapshot shows once all of them have.
    #[arg(long, value_name = "ID,ID,...", value_delimiter = ',')]
    nodes: Vec<String>,
}

impl RemoteOptions {
    /// The remote `name` at `url` with these options; node names checked.
    pub(super) fn spec(&self, name: &str, url: &str) -> Result<RemoteSpec> {
        for n in &self.nodes {
            spec::check_name(n, "node")?;
        }
        Ok(RemoteSpec {
            name: name.to_string(),
            url: url.to_string(),
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            nodes: self.nodes.clone(),
        })
    }
}

#[derive(Debug, Clone, Args)]
struct ListArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Args)]
struct RemoveArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// The remote's name.
    name: String,
}

#[derive(Debug, Clone, Args)]
struct RemoteSnapshotsArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// The remote's name.
    name: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Options of `ckptfs push`.
#[derive(Debug, Clone, Args)]
pub struct PushArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// The remote to push to (default: every remote).
    name: Option<String>,
    /// Push only this snapshot.
    #[arg(long, value_name = "NAME")]
    snapshot: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Records that this store's snapshot `name` is its part of a global
/// snapshot (in `remotes.json`, which pushes read).
pub(super) fn mark_global(target: &TargetArgs, name: &str) -> Result<()> {
    let dir = store_dir(target)?;
    let mut remotes = Remotes::load(&dir)?;
    if remotes.node.is_empty() {
        bail!("a global snapshot needs a remote and a node id: run `ckptfs remote add TARGET NAME URL --node ID` first");
    }
    if !remotes.globals.iter().any(|g| g == name) {
        remotes.globals.push(name.to_string());
        remotes.save(&dir)?;
    }
    Ok(())
}

/// The store directory TARGET is or serves.
fn store_dir(args: &TargetArgs) -> Result<PathBuf> {
    match target::resolve(args)? {
        Target::Store(root) => Ok(root),
        Target::Mount(ctl) => {
            let mnt = std::fs::canonicalize(&ctl.mnt).unwrap_or(ctl.mnt.clone());
            target::mounts()
                .into_iter()
                .find(|m| m.is_ckptfs() && m.mountpoint == mnt)
                .and_then(|m| m.store_path(None))
                .with_context(|| format!("cannot tell which store {} serves", mnt.display()))
        }
    }
}

/// The host name, as a node id.
pub(super) fn host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let clean: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(64)
        .collect();
    if clean.is_empty() || clean.starts_with('.') {
        "node".to_string()
    } else {
        clean
    }
}

/// `ckptfs remote ...`.
pub fn remote(args: &RemoteArgs) -> Result<()> {
    match &args.command {
        RemoteCommand::Add(a) => add(a),
        RemoteCommand::List(a) => list(a),
        RemoteCommand::Remove(a) => {
            let dir = store_dir(&a.target)?;
            let mut remotes = Remotes::load(&dir)?;
            let gone = remotes.remove(&a.name)?;
            remotes.save(&dir)?;
            println!(
                "removed remote {} ({}); its objects are left as they are",
                gone.name, gone.url
            );
            Ok(())
        }
        RemoteCommand::Snapshots(a) => remote_snapshots(a),
        RemoteCommand::Gc(a) => remote_gc(a),
    }
}

fn add(a: &AddArgs) -> Result<()> {
    let dir = store_dir(&a.target)?;
    let mut remotes = Remotes::load(&dir)?;
    match (&a.node, remotes.node.is_empty()) {
        (Some(n), true) => remotes.node = n.clone(),
        (Some(n), false) if *n != remotes.node => bail!(
            "this store pushes as node {}; its node id cannot change once set",
            remotes.node
        ),
        (None, true) => remotes.node = host_name(),
        _ => {}
    }
    spec::check_name(&remotes.node, "node")?;
    let spec = a.options.spec(&a.name, &a.url)?;
    remotes.add(spec.clone())?;
    // Reachable and usable now, rather than at the first push.
    let r = Remote::open(&spec)?;
    r.list("snapshots")
        .with_context(|| format!("remote {} at {} does not answer a listing", a.name, a.url))?;
    remotes.save(&dir)?;
    println!(
        "added remote {} at {} (this store pushes as node {})",
        a.name, a.url, remotes.node
    );
    Ok(())
}

fn list(a: &ListArgs) -> Result<()> {
    let dir = store_dir(&a.target)?;
    let remotes = Remotes::load(&dir)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&remotes)?);
        return Ok(());
    }
    if remotes.remotes.is_empty() {
        println!("no remotes (add one with `ckptfs remote add TARGET NAME URL`)");
        return Ok(());
    }
    println!("node: {}", remotes.node);
    let rows: Vec<Vec<String>> = remotes
        .remotes
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.url.clone(),
                r.endpoint.clone().unwrap_or_default(),
                r.region.clone().unwrap_or_default(),
            ]
        })
        .collect();
    show::table(&["NAME", "URL", "ENDPOINT", "REGION"], &rows);
    Ok(())
}

fn remote_snapshots(a: &RemoteSnapshotsArgs) -> Result<()> {
    let dir = store_dir(&a.target)?;
    let remotes = Remotes::load(&dir)?;
    let spec = remotes.get(&a.name)?;
    let view = remote::RemoteView::new(Remote::open(spec)?, 0, spec.nodes.clone());
    let snaps = view.list()?;
    if a.json {
        let list: Vec<serde_json::Value> = snaps
            .iter()
            .map(|s| {
                serde_json::json!({
                    "node": s.node, "name": s.name, "seq": s.seq,
                    "created": crate::tree::rfc3339(crate::tree::Time {
                        secs: s.created_secs, nanos: s.created_nanos }),
                    "logical_bytes": s.logical_bytes,
                    "files": s.items.iter().filter(|i| i.kind == "file").count(),
                    "global": s.global,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = snaps
        .iter()
        .map(|s| {
            vec![
                s.node.clone(),
                s.name.clone(),
                crate::tree::rfc3339(crate::tree::Time {
                    secs: s.created_secs,
                    nanos: s.created_nanos,
                }),
                show::bytes(s.logical_bytes),
                if s.global { "part" } else { "" }.to_string(),
            ]
        })
        .collect();
    show::table(&["NODE", "NAME", "CREATED", "SIZE", "GLOBAL"], &rows);
    Ok(())
}

fn remote_gc(a: &RemoteGcArgs) -> Result<()> {
    let dir = store_dir(&a.target)?;
    let remotes = Remotes::load(&dir)?;
    let spec = remotes.get(&a.name)?;
    let grace = crate::retention::parse_duration(&a.grace)
        .map_err(|e| anyhow::anyhow!("--grace {}: {e}", a.grace))?;
    let text = match &a.policy {
        Some(rules) => rules.replace(';', "\n"),
        None => match target::resolve(&a.target)? {
            Target::Mount(ctl) => {
                let p = ctl.path("retention/policy");
                std::fs::read_to_string(&p).map_err(|e| target::io_context(e, p.display()))?
            }
            Target::Store(root) => open_store(&root, false)?.retention.policy_text(),
        },
    };
    let policy = crate::retention::Policy::parse(&text).context("the retention policy")?;
    let r = Remote::open(spec)?;
    let opts = remote::gc::RemoteGcOptions {
        policy: policy.has_rules().then_some(&policy),
        grace,
        dry_run: a.dry_run,
    };
    let report = remote::gc::gc(&r, &opts)
        .with_context(|| format!("collecting garbage on {} ({})", spec.name, spec.url))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{}{}: {} expired ({}), {} kept; packs: {} deleted ({}), {} condemned, {} rescued, {} younger than the grace period, {} live; manifests: {} deleted, {} condemned",
        if a.dry_run { "dry run, nothing changed: " } else { "" },
        spec.name,
        show::count(report.snapshots_expired.len() as u64, "snapshot", "snapshots"),
        report.snapshots_expired.join(", "),
        report.snapshots_kept,
        report.packs_deleted,
        show::bytes(report.bytes_freed),
        report.packs_condemned,
        report.packs_rescued,
        report.packs_young,
        report.packs_live,
        report.manifests_deleted,
        report.manifests_condemned,
    );
    Ok(())
}

/// `ckptfs push`.
pub fn push(a: &PushArgs) -> Result<()> {
    let dir = store_dir(&a.target)?;
    let remotes = Remotes::load(&dir)?;
    let chosen: Vec<&RemoteSpec> = match &a.name {
        Some(n) => vec![remotes.get(n)?],
        None => remotes.remotes.iter().collect(),
    };
    if chosen.is_empty() {
        bail!("this store has no remotes; add one with `ckptfs remote add TARGET NAME URL`");
    }
    let opened = match target::resolve(&a.target)? {
        Target::Store(root) => open_store(&root, false)?,
        Target::Mount(ctl) => return push_through_mount(&ctl, a),
    };
    let mut reports = Vec::new();
    for spec in chosen {
        let r = Remote::open(spec)?;
        let cache = dir.join("remote-cache").join(&spec.name);
        let opts = remote::PushOptions {
            only: a.snapshot.as_deref().map(str::as_bytes),
            cache: Some(&cache),
            cancel: None,
            globals: &remotes.globals,
        };
        let report = remote::push(&opened.tree, &r, &remotes.node, opts)
            .with_context(|| format!("pushing to {} ({})", spec.name, spec.url))?;
        reports.push((spec.name.clone(), report));
    }
    print_reports(&reports, a.json)
}

/// Asks the daemon to push now (`.ckpt/remotes/push`) and prints its
/// reports; a failure is explained from `.ckpt/remotes/status`.
fn push_through_mount(ctl: &target::Ctl, a: &PushArgs) -> Result<()> {
    use std::io::Write;
    if a.snapshot.is_some() {
        bail!("on a mount the daemon pushes every snapshot a remote lacks; --snapshot works on an unmounted store");
    }
    let path = ctl.path("remotes/push");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EROFS) => anyhow::anyhow!("{} is mounted read-only", ctl.mnt.display()),
            _ => target::io_context(e, path.display()),
        })?;
    let name = a.name.as_deref().unwrap_or("all");
    if let Err(e) = file.write_all(format!("{name}\n").as_bytes()) {
        let why = std::fs::read(ctl.path("remotes/status"))
            .ok()
            .and_then(|t| serde_json::from_slice::<serde_json::Value>(&t).ok())
            .and_then(|v| {
                let errors: Vec<String> = v
                    .as_object()?
                    .iter()
                    .filter(|(n, _)| a.name.as_deref().is_none_or(|w| w == n.as_str()))
                    .filter_map(|(n, s)| Some(format!("{n}: {}", s["last_error"].as_str()?)))
                    .collect();
                (!errors.is_empty()).then(|| errors.join("; "))
            });
        return match (e.raw_os_error(), why) {
            (Some(libc::ENOENT), _) => Err(remote::RemoteError::NoSuchRemote(name.into()).into()),
            (_, Some(why)) => bail!("push failed: {why}"),
            _ => Err(target::io_context(e, "push failed")),
        };
    }
    let text = target::read_back(&file, &path)?;
    let list: Vec<serde_json::Value> = serde_json::from_slice(&text)
        .with_context(|| format!("{} did not return a push report", path.display()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let reports: Vec<(String, remote::PushReport)> = list
        .iter()
        .map(|v| {
            let n = |k: &str| v[k].as_u64().unwrap_or(0);
            let report = remote::PushReport {
                snapshots: v["snapshots"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                already: n("already"),
                expired_remotely: n("expired_remotely"),
                logical_bytes: n("logical_bytes"),
                chunks_uploaded: n("chunks_uploaded"),
                chunk_bytes_uploaded: n("chunk_bytes_uploaded"),
                chunks_present: n("chunks_present"),
                packs: n("packs"),
                manifests: n("manifests"),
                bytes_uploaded: n("bytes_uploaded"),
                seconds: v["seconds"].as_f64().unwrap_or(0.0),
            };
            (v["remote"].as_str().unwrap_or("?").to_string(), report)
        })
        .collect();
    print_reports(&reports, false)
}

fn print_reports(reports: &[(String, remote::PushReport)], json: bool) -> Result<()> {
    if json {
        let list: Vec<serde_json::Value> = reports.iter().map(|(n, r)| r.to_json(n)).collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    for (name, r) in reports {
        println!(
            "pushed {} to {name} ({} already there): {} uploaded for {} of files \
             ({} new chunks in {} packs, {} chunks already on the remote), {:.1} s",
            show::count(r.snapshots.len() as u64, "snapshot", "snapshots"),
            r.already,
            show::bytes(r.bytes_uploaded),
            show::bytes(r.logical_bytes),
            r.chunks_uploaded,
            r.packs,
            r.chunks_present,
            r.seconds
        );
    }
    Ok(())
}
