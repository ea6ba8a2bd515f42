//! `ckptfs clone URL STORE`: a new local store whose remote `origin` is
//! URL. Mounted, it shows every snapshot the remote holds under
//! `.ckpt/remotes/origin/NODE/NAME/`, and a file's chunks are fetched on
//! its first read (kept in a bounded cache), so a new machine loads one
//! checkpoint without downloading the history. New snapshots taken there
//! are pushed back to `origin` under this store's own node id.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::remote::{host_name, RemoteOptions};
use crate::chunk::CutSearch;
use crate::remote::{spec, Remote, RemoteView, Remotes};
use crate::store::Store;

/// Options of `ckptfs clone`.
#[derive(Debug, Clone, Args)]
pub struct CloneArgs {
    /// s3://bucket/prefix or file:///path.
    url: String,
    /// The store directory to create (absent or empty).
    store: PathBuf,
    /// The remote's name in the new store.
    #[arg(long, default_value = "origin")]
    name: String,
    /// The new store's node id (default: the host name).
    #[arg(long, value_name = "ID")]
    node: Option<String>,
    #[command(flatten)]
    options: RemoteOptions,
}

/// `ckptfs clone`.
pub fn clone(a: &CloneArgs) -> Result<()> {
    let node = a.node.clone().unwrap_or_else(host_name);
    spec::check_name(&node, "node")?;
    if let Ok(mut entries) = std::fs::read_dir(&a.store) {
        if entries.next().is_some() {
            bail!(
                "{} exists and is not empty; clone makes a new store",
                a.store.display()
            );
        }
    }
    let spec = a.options.spec(&a.name, &a.url)?;
    let mut remotes = Remotes {
        node: node.clone(),
        ..Remotes::default()
    };
    remotes.add(spec.clone())?;
    // Read the remote first: a wrong URL or key leaves nothing behind.
    let remote = Remote::open(&spec)?;
    let snaps = RemoteView::new(remote, 0, Vec::new())
        .list()
        .with_context(|| format!("reading {}", a.url))?;
    if snaps.iter().any(|s| s.node == node) {
        eprintln!(
            "clone: the remote already holds snapshots of node {node}; this store will push \
             under the same id (pass --node to use another)"
        );
    }
    // Saves here deduplicate against the remote's chunks only if they are
    // cut alike: take over the cut search of its newest snapshot.
    let chunker = snaps
        .iter()
        .max_by_key(|s| (s.created_secs, s.created_nanos))
        .map(|newest| remote_chunker(newest.chunker.as_deref()))
        .transpose()?;
    let created = !a.store.exists();
    let made = (|| -> Result<()> {
        let store = Store::open(&a.store)
            .with_context(|| format!("creating store {}", a.store.display()))?;
        store.settle_chunker(chunker)?;
        drop(store);
        remotes.save(&a.store)?;
        Ok(())
    })();
    if let Err(e) = made {
        if created {
            let _ = std::fs::remove_dir_all(&a.store);
        }
        return Err(e);
    }
    let mut nodes: Vec<&str> = snaps.iter().map(|s| s.node.as_str()).collect();
    nodes.sort_unstable();
    nodes.dedup();
    let bytes: u64 = snaps.iter().map(|s| s.logical_bytes).sum();
    println!(
        "cloned {} into {}: {} snapshots ({} of files) from {} node(s) ({}); this store is node {node}",
        a.url,
        a.store.display(),
        snaps.len(),
        super::show::bytes(bytes),
        nodes.len(),
        nodes.join(", "),
    );
    println!(
        "mount it (ckptfs mount {} MNT) and read MNT/.ckpt/remotes/{}/NODE/SNAPSHOT/...: \
         chunks are fetched on first read",
        a.store.display(),
        a.name
    );
    Ok(())
}

/// The cut search a remote snapshot names (absent: FastCDC, which every
/// store used before stores recorded their search).
fn remote_chunker(name: Option<&str>) -> Result<CutSearch> {
    match name {
        None => Ok(CutSearch::UNRECORDED),
        Some(name) => name
            .parse()
            .map_err(|e: String| anyhow::anyhow!("the remote's newest snapshot: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_names_its_search_or_was_cut_by_fastcdc() {
        assert_eq!(remote_chunker(None).unwrap(), CutSearch::FastCdc);
        for search in CutSearch::ALL {
            assert_eq!(remote_chunker(Some(&search.to_string())).unwrap(), search);
        }
        let err = remote_chunker(Some("gear")).unwrap_err().to_string();
        assert!(
            err.contains("newest snapshot") && err.contains("gear"),
            "{err}"
        );
    }
}
