//! Real tools through the mount: cp, dd, tar, rsync and numpy.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::common::{noise, run_python, sh, Mount};

const MIB: usize = 1 << 20;

/// Single-quotes a path for sh.
fn q(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

/// A small checkpoint-like tree: big and small files, an empty one, odd
/// names, modes, a deep directory and a symlink.
fn make_tree(dir: &Path) {
    fs::create_dir_all(dir.join("a/b/c/d/e")).unwrap();
    fs::create_dir_all(dir.join("empty-dir")).unwrap();
    fs::write(dir.join("model.bin"), noise(12 * MIB + 3, 0x70_0001)).unwrap();
    fs::write(dir.join("a/optimizer.bin"), noise(3 * MIB, 0x70_0002)).unwrap();
    fs::write(
        dir.join("a/b/config.json"),
        br#"{"lr": 0.001, "steps": 1000}"#,
    )
    .unwrap();
    fs::write(dir.join("a/b/c/d/e/deep.bin"), noise(70_000, 0x70_0003)).unwrap();
    fs::write(dir.join("empty.txt"), b"").unwrap();
    fs::write(dir.join("ünï cødé name.txt"), "ünïcødé\n").unwrap();
    fs::write(dir.join("run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(dir.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(dir.join("a/secret.key"), noise(256, 0x70_0004)).unwrap();
    fs::set_permissions(dir.join("a/secret.key"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("a/b/config.json", dir.join("config-link")).unwrap();
}

#[test]
fn cp_copies_files_and_trees_in_and_out_byte_for_byte() {
    let mut m = Mount::new("tools-cp");
    let src = m.root.join("src");
    make_tree(&src);
    let out = m.root.join("out");
    fs::create_dir(&out).unwrap();
    sh(&format!(
        "cp {} {}",
        q(&src.join("model.bin")),
        q(&m.path("model.bin"))
    ));
    sh(&format!("cp -rp {} {}", q(&src), q(&m.path("tree"))));
    // Overwrite an existing file with cp (O_TRUNC and rewrite).
    sh(&format!(
        "cp {} {}",
        q(&src.join("a/optimizer.bin")),
        q(&m.path("model.bin"))
    ));
    m.remount();
    sh(&format!(
        "cmp {} {}",
        q(&src.join("a/optimizer.bin")),
        q(&m.path("model.bin"))
    ));
    sh(&format!("diff -r {} {}", q(&src), q(&m.path("tree"))));
    sh(&format!(
        "cp -rp {} {}",
        q(&m.path("tree")),
        q(&out.join("tree"))
    ));
    sh(&format!("diff -r {} {}", q(&src), q(&out.join("tree"))));
    // cp -p kept modes and mtimes through the mount.
    for rel in ["model.bin", "run.sh", "a/secret.key", "a/b/c/d/e/deep.bin"] {
        let a = fs::metadata(src.join(rel)).unwrap();
        let b = fs::metadata(m.path("tree").join(rel)).unwrap();
        assert_eq!(b.mode() & 0o7777, a.mode() & 0o7777, "{rel}: mode");
        assert_eq!(
            (b.mtime(), b.mtime_nsec()),
            (a.mtime(), a.mtime_nsec()),
            "{rel}: mtime after cp -p"
        );
    }
}

#[test]
fn dd_writes_and_reads_with_several_block_sizes() {
    let mut m = Mount::new("tools-dd");
    let src = m.root.join("src.bin");
    fs::write(&src, noise(9 * MIB + 1234, 0x70_0010)).unwrap();
    for bs in ["1M", "4k", "65537"] {
        let dst = m.path(&format!("dd-{bs}.bin"));
        sh(&format!(
            "dd if={} of={} bs={bs} status=none",
            q(&src),
            q(&dst)
        ));
    }
    // A sparse file: dd seeks past the end before writing.
    sh(&format!(
        "dd if={} of={} bs=1M seek=64 count=1 status=none",
        q(&src),
        q(&m.path("sparse.bin"))
    ));
    m.remount();
    for bs in ["1M", "4k", "65537"] {
        let dst = m.path(&format!("dd-{bs}.bin"));
        sh(&format!("cmp {} {}", q(&src), q(&dst)));
        // Read back through dd with an odd block size, too.
        let back = m.root.join(format!("back-{bs}.bin"));
        sh(&format!(
            "dd if={} of={} bs=77777 status=none",
            q(&dst),
            q(&back)
        ));
        sh(&format!("cmp {} {}", q(&src), q(&back)));
    }
    let sparse = m.path("sparse.bin");
    assert_eq!(fs::metadata(&sparse).unwrap().len(), 65 * MIB as u64);
    sh(&format!("cmp -n {} {} /dev/zero", 64 * MIB, q(&sparse)));
    sh(&format!(
        "cmp -n {} {} {} {} 0",
        MIB,
        q(&sparse),
        q(&src),
        64 * MIB
    ));
}

#[test]
fn dd_conv_notrunc_patches_a_block_in_place() {
    let mut m = Mount::new("tools-dd-notrunc");
    let mut data = noise(4 * MIB, 0x70_0020);
    fs::write(m.path("ckpt.bin"), &data).unwrap();
    let patch = noise(4096, 0x70_0021);
    let patch_file = m.root.join("patch.bin");
    fs::write(&patch_file, &patch).unwrap();
    // Overwrite block 300 (of 4 KiB) in place, size unchanged.
    sh(&format!(
        "dd if={} of={} bs=4k seek=300 conv=notrunc status=none",
        q(&patch_file),
        q(&m.path("ckpt.bin"))
    ));
    data[300 * 4096..301 * 4096].copy_from_slice(&patch);
    assert_eq!(
        fs::metadata(m.path("ckpt.bin")).unwrap().len(),
        data.len() as u64
    );
    assert!(
        fs::read(m.path("ckpt.bin")).unwrap() == data,
        "content after dd conv=notrunc"
    );
    m.remount();
    assert!(
        fs::read(m.path("ckpt.bin")).unwrap() == data,
        "content after dd conv=notrunc and remount"
    );
}

#[test]
fn tar_of_a_tree_in_the_mount_extracts_elsewhere_identically() {
    let mut m = Mount::new("tools-tar");
    make_tree(&m.path("tree"));
    // The archive is written into the mount, too.
    sh(&format!(
        "tar -C {} -cf {} tree",
        q(&m.mnt),
        q(&m.path("tree.tar"))
    ));
    m.remount();
    let out = m.root.join("extract");
    fs::create_dir(&out).unwrap();
    sh(&format!(
        "tar -C {} -xpf {}",
        q(&out),
        q(&m.path("tree.tar"))
    ));
    sh(&format!(
        "diff -r --no-dereference {} {}",
        q(&m.path("tree")),
        q(&out.join("tree"))
    ));
    // And the other way: extract that archive into the mount (tar sets
    // modes and mtimes on files it has just written).
    fs::create_dir(m.path("again")).unwrap();
    sh(&format!(
        "tar -C {} -xpf {}",
        q(&m.path("again")),
        q(&m.path("tree.tar"))
    ));
    m.remount();
    sh(&format!(
        "diff -r --no-dereference {} {}",
        q(&out.join("tree")),
        q(&m.path("again/tree"))
    ));
    // tar's own comparison: contents, sizes, modes, mtimes, link targets.
    sh(&format!(
        "tar -C {} -df {}",
        q(&m.path("again")),
        q(&m.path("tree.tar"))
    ));
}

#[test]
fn rsync_a_tree_in_and_back_out_is_identical_and_then_a_no_op() {
    let mut m = Mount::new("tools-rsync");
    let src = m.root.join("src");
    make_tree(&src);
    sh(&format!("rsync -a {}/ {}/", q(&src), q(&m.path("tree"))));
    m.remount();
    // Nothing left to transfer: sizes, mtimes, modes and links all match.
    let changes = sh(&format!(
        "rsync -a --dry-run --itemize-changes {}/ {}/",
        q(&src),
        q(&m.path("tree"))
    ));
    assert!(
        changes.trim().is_empty(),
        "rsync still sees differences after remount:\n{changes}"
    );
    let back = m.root.join("back");
    sh(&format!("rsync -a {}/ {}/", q(&m.path("tree")), q(&back)));
    sh(&format!(
        "diff -r --no-dereference {} {}",
        q(&src),
        q(&back)
    ));
    // An update: rsync rewrites a changed file through a temp file + rename.
    // (A new size, so that rsync's quick check, size + mtime in whole
    // seconds, sees the change even within the same second.)
    fs::write(
        src.join("a/optimizer.bin"),
        noise(3 * MIB + 4321, 0x70_0030),
    )
    .unwrap();
    sh(&format!("rsync -a {}/ {}/", q(&src), q(&m.path("tree"))));
    m.remount();
    sh(&format!(
        "diff -r --no-dereference {} {}",
        q(&src),
        q(&m.path("tree"))
    ));
}

const NUMPY_SAVE: &str = r#"
import hashlib, sys
import numpy as np
d = sys.argv[1]
rng = np.random.default_rng(1234)
arrays = {
    "weights_f32": rng.standard_normal((2048, 3000), dtype=np.float32),
    "bias_f16": rng.standard_normal(4097).astype(np.float16),
    "steps_i64": np.arange(-50000, 1000000, 7, dtype=np.int64),
    "mask_bool": rng.random((333, 777)) > 0.5,
    "scalar": np.float64(3.25),
    "fortran": np.asfortranarray(rng.standard_normal((123, 456))),
    "zeros": np.zeros((1024, 1024), dtype=np.float32),
}
for name, a in arrays.items():
    np.save(f"{d}/{name}.npy", a)
for name in arrays:
    with open(f"{d}/{name}.npy", "rb") as f:
        print(name, hashlib.sha256(f.read()).hexdigest())
"#;

const NUMPY_LOAD: &str = r#"
import hashlib, sys
import numpy as np
d = sys.argv[1]
rng = np.random.default_rng(1234)
expected = {
    "weights_f32": rng.standard_normal((2048, 3000), dtype=np.float32),
    "bias_f16": rng.standard_normal(4097).astype(np.float16),
    "steps_i64": np.arange(-50000, 1000000, 7, dtype=np.int64),
    "mask_bool": rng.random((333, 777)) > 0.5,
    "scalar": np.float64(3.25),
    "fortran": np.asfortranarray(rng.standard_normal((123, 456))),
    "zeros": np.zeros((1024, 1024), dtype=np.float32),
}
bad = 0
for name, want in expected.items():
    path = f"{d}/{name}.npy"
    a = np.load(path)
    mm = np.load(path, mmap_mode="r")
    ok = (a.dtype == want.dtype and a.shape == np.shape(want) and np.array_equal(a, want)
          and mm.dtype == want.dtype and mm.shape == np.shape(want) and np.array_equal(mm, want)
          and float(np.asarray(mm, dtype=np.float64).sum()) == float(np.asarray(want, dtype=np.float64).sum()))
    if not ok:
        bad += 1
        print("MISMATCH", name, file=sys.stderr)
    del mm
    with open(path, "rb") as f:
        print(name, hashlib.sha256(f.read()).hexdigest())
print("loaded-ok" if bad == 0 else f"loaded-bad {bad}", file=sys.stderr)
sys.exit(1 if bad else 0)
"#;

#[test]
fn numpy_arrays_saved_through_the_mount_load_and_mmap_identically_after_remount() {
    let mut m = Mount::new("tools-numpy");
    fs::create_dir(m.path("ckpt")).unwrap();
    let saved = run_python(NUMPY_SAVE, &[m.path("ckpt")]);
    assert_eq!(saved.lines().count(), 7, "save output:\n{saved}");
    m.remount();
    let loaded = run_python(NUMPY_LOAD, &[m.path("ckpt")]);
    assert_eq!(
        loaded, saved,
        "sha256 of the .npy files changed across the remount"
    );
    // The big array really is big: a 24 MB file, not something truncated.
    assert_eq!(
        fs::metadata(m.path("ckpt/weights_f32.npy")).unwrap().len(),
        2048 * 3000 * 4 + 128
    );
}
