//! A full disk: the store on a 320 MB loop-mounted ext4. A checkpoint
//! save (`py/fill.py`, a separate process, so no fork of this one flushes
//! it early) that does not fit gets ENOSPC; the previous version of that
//! file is intact, in history and (when the close failed) live; the
//! daemon keeps serving reads, listings and history. After deleting older
//! checkpoints, a policy that lets their history go (`keep-last = 1`,
//! `file-versions-keep = 0`) and a GC, a save of the size that did not
//! fit goes through, and everything reads back after a remount.

use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::support::{
    ctl, expired_of, run_gc, script, set, set_policy, snapshot_names, version_files, xxh, MIB,
};
use crate::common::{hash_file, heavy, noise, python, Mount, SmallDisk};

/// (total, available) bytes of the filesystem holding `p`.
fn space(p: &Path) -> (u64, u64) {
    let s = nix::sys::statvfs::statvfs(p).unwrap();
    let f = s.fragment_size() as u64;
    (s.blocks() as u64 * f, s.blocks_available() as u64 * f)
}

/// Bytes available on the store's disk (ckptfs keeps a reserve of them).
fn available(p: &Path) -> u64 {
    space(p).1
}

/// Runs `fill.py PATH SIZE REF`: its JSON report.
fn fill(m: &Mount, rel: &str, size: u64, keep: &Path) -> Value {
    let out = Command::new(python())
        .arg(script("fill.py"))
        .arg(m.path(rel))
        .arg(size.to_string())
        .arg(keep)
        .output()
        .expect("run fill.py");
    assert!(
        out.status.success(),
        "fill.py: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        m.log()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_save_that_does_not_fit_gets_enospc_keeps_the_old_version_and_fits_after_gc() {
    let _heavy = heavy();
    // Declared first, dropped last: the daemon is gone before the unmount.
    let disk = SmallDisk::new("fw-full-disk", "320M");
    let store = disk.mnt.join("store");
    let mut m = Mount::with_store("fw-full", &store, &[]);
    let keep = noise(2 * MIB, 0xf0_0001);
    fs::write(m.path("keep.bin"), &keep).unwrap();
    // Older checkpoints fill half the disk: after the failed save (whose
    // accepted part stays live) GC must free more than the save needs.
    let olds: Vec<Vec<u8>> = (0..9).map(|i| noise(16 * MIB, 0xf0_0100 + i)).collect();
    for (i, d) in olds.iter().enumerate() {
        fs::write(m.path(&format!("old-{i}.bin")), d).unwrap();
    }
    // Settled: the WAL's copy of the files' first chunks is gone.
    m.remount();
    let v1 = noise(4 * MIB, 0xf0_0002);
    fs::write(m.path("model.bin"), &v1).unwrap();
    fs::create_dir(ctl(&m, "snapshots/s1")).unwrap();
    // Settled (the WAL flushed and gone): a save larger than all the free
    // space cannot fit, whatever the reserve.
    m.remount();
    let room = available(&disk.mnt);
    let size = room + 4 * MIB as u64;
    eprintln!(
        "full disk: {} MiB available, saving {} MiB",
        room >> 20,
        size >> 20
    );
    let accepted = m.root.join("accepted");
    let r = fill(&m, "model.bin", size, &accepted);
    eprintln!("full disk: first save: {r}");
    let enospc = Some(libc::ENOSPC as u64);
    assert!(
        r["write_errno"].as_u64() == enospc || r["close_errno"].as_u64() == enospc,
        "a save of {size} bytes with {room} available did not get ENOSPC: {r}\n{}",
        m.log()
    );
    for e in ["write_errno", "close_errno"] {
        assert!(
            r[e].is_null() || r[e].as_u64() == enospc,
            "{e} is not ENOSPC: {r}"
        );
    }
    // The previous version is intact in history; live, it is what the
    // failed save left: the old version when close() failed, else exactly
    // the bytes the writes accepted.
    let check_model = |m: &Mount| {
        let versions = version_files(m, "model.bin");
        assert!(
            versions.iter().any(|v| hash_file(v) == xxh(&v1)),
            "no version of model.bin is the previous content after ENOSPC: {versions:?}"
        );
        let live = hash_file(&m.path("model.bin"));
        let want = if r["close_errno"].is_null() {
            hash_file(&accepted)
        } else {
            xxh(&v1)
        };
        assert_eq!(live, want, "model.bin after the failed save ({r})");
    };
    check_model(&m);
    // Still serving.
    assert!(
        fs::read(m.path("keep.bin")).unwrap() == keep,
        "keep.bin on a full disk"
    );
    assert!(fs::read(ctl(&m, "snapshots/s1/old-3.bin")).unwrap() == olds[3]);
    assert_eq!(fs::read_dir(&m.mnt).unwrap().count(), 2 + olds.len());
    m.remount();
    check_model(&m);
    assert!(
        fs::read(m.path("keep.bin")).unwrap() == keep,
        "keep.bin after a remount on a full disk"
    );

    // Let the old checkpoints go: deleted, a newer snapshot, a policy
    // that keeps only that one and no free versions, GC.
    for i in 0..olds.len() {
        fs::remove_file(m.path(&format!("old-{i}.bin")))
            .unwrap_or_else(|e| panic!("unlink old-{i}.bin on a full disk: {e}\n{}", m.log()));
    }
    fs::create_dir(ctl(&m, "snapshots/s2"))
        .unwrap_or_else(|e| panic!("mkdir snapshot s2 on a full disk: {e}\n{}", m.log()));
    set_policy(&m, "keep-last = 1\nfile-versions-keep = 0\n");
    let report = run_gc(&m);
    assert_eq!(expired_of(&report), set(&["s1"]), "{report}");
    assert_eq!(snapshot_names(&m), set(&["s2"]));
    let after = available(&disk.mnt);
    eprintln!("full disk: GC {report}; {} MiB available now", after >> 20);
    assert!(
        after > size,
        "GC freed too little: {after} bytes available, the save needs {size}"
    );

    let r2 = fill(&m, "model.bin", size, &accepted);
    assert!(
        r2["write_errno"].is_null()
            && r2["close_errno"].is_null()
            && r2["written"].as_u64() == Some(size),
        "the save that did not fit before failed after GC: {r2}\n{}",
        m.log()
    );
    let want = hash_file(&accepted);
    assert_eq!(hash_file(&m.path("model.bin")), want);
    m.remount();
    assert_eq!(
        hash_file(&m.path("model.bin")),
        want,
        "model.bin after a remount"
    );
    assert_eq!(hash_file(&ctl(&m, "versions/model.bin/latest")), want);
    assert!(fs::read(m.path("keep.bin")).unwrap() == keep);
    assert!(fs::read(ctl(&m, "snapshots/s2/keep.bin")).unwrap() == keep);
    drop(m);
    drop(disk);
}
