//! Real serialization libraries writing through the mount
//! (`py/formats.py`): numpy `save`/`savez`, read back with `np.load` and
//! `np.load(mmap_mode='r')`; safetensors `save_file`, read back with
//! `safe_open` (memory-mapped); h5py, an HDF5 file created, then reopened
//! and grown and rewritten in place at scattered offsets several times.
//!
//! After a remount the live tree, every snapshot and every version must
//! hash like the reference copy the client wrote to the local disk, and
//! the library must load each of them (live, snapshot and version paths)
//! as the exact arrays of that version.

use std::collections::BTreeMap;

use super::support::{load_everywhere, py, Ref};
use crate::common::Mount;

/// Saves with `kind` (`numpy`, `safetensors`, `h5py`), checks hashes
/// before and after a remount, then has the library load every copy of
/// `files`.
fn run(kind: &str, files: &[&str], versions: &[usize]) {
    let mut m = Mount::new(&format!("fw-{kind}"));
    let r = Ref::of(&m);
    py(
        &m,
        "formats.py",
        &[
            "save".as_ref(),
            kind.as_ref(),
            m.mnt.as_os_str(),
            r.dir.as_os_str(),
        ],
    );
    let snaps = r.states();
    assert!(snaps.len() >= 2, "{kind}: the client took {snaps:?}");
    let recorded = r.versions();
    let per_file: Vec<usize> = files.iter().map(|f| recorded[*f].len()).collect();
    assert_eq!(
        per_file, versions,
        "{kind}: versions the client recorded per file"
    );
    r.check(&m, &snaps, &format!("{kind} before the remount"));
    m.remount();
    r.check(&m, &snaps, &format!("{kind} after a remount"));
    let loads = load_everywhere(&m, &r, "formats.py", kind, files);
    let per_file: BTreeMap<&str, usize> = files
        .iter()
        .copied()
        .zip(versions.iter().copied())
        .collect();
    eprintln!("{kind}: {loads} library loads; versions {per_file:?}; snapshots {snaps:?}");
}

#[test]
fn numpy_save_and_savez_read_back_with_load_and_mmap_from_live_snapshots_and_versions() {
    run(
        "numpy",
        &["np/weights.npy", "np/emb.npy", "np/opt.npz"],
        &[3, 1, 2],
    );
}

#[test]
fn safetensors_save_file_reads_back_with_safe_open_from_live_snapshots_and_versions() {
    run("safetensors", &["st/model.safetensors"], &[3]);
}

#[test]
fn h5py_file_grown_and_rewritten_in_place_reads_back_from_live_snapshots_and_versions() {
    run("h5py", &["h5/train.h5"], &[5]);
}
