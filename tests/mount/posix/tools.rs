//! The tools people move checkpoints with, run against the real mount:
//! cp -a, dd conv=notrunc, tar, rsync -a and numpy save/load/mmap.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use super::{assert_bytes, names, q, set, write_model};
use crate::common::{noise, sh, Mount};

// ---------------------------------------------------------------- helpers

/// A small tree with the things copy tools must preserve: nested dirs,
/// a multi-MB file, an empty file, a symlink, a hard link, modes and times.
fn make_tree(dir: &Path) {
    fs::create_dir_all(dir.join("sub/deeper")).expect("mkdir tree");
    fs::create_dir_all(dir.join("emptydir")).expect("mkdir emptydir");
    fs::write(dir.join("big.bin"), noise(3_000_000, 5)).expect("write big");
    fs::write(dir.join("small.txt"), b"small file\n").expect("write small");
    fs::write(dir.join("empty"), b"").expect("write empty");
    fs::write(dir.join("sub/a.txt"), b"alpha\nbeta\n").expect("write a");
    fs::write(dir.join("sub/deeper/b.bin"), noise(200_000, 6)).expect("write b");
    std::os::unix::fs::symlink("../small.txt", dir.join("sub/link")).expect("symlink");
    fs::hard_link(dir.join("small.txt"), dir.join("sub/hard")).expect("hard link");
    fs::set_permissions(dir.join("big.bin"), fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::set_permissions(dir.join("sub/a.txt"), fs::Permissions::from_mode(0o640)).expect("chmod");
    fs::set_permissions(dir.join("sub/deeper"), fs::Permissions::from_mode(0o750)).expect("chmod");
    let d = q(dir);
    // Leaves first, directories last (creating entries changes dir mtimes).
    sh(&format!(
        "cd {d} && find . ! -type d -exec touch -h -d '2021-03-04 05:06:07.123456789' {{}} + \
         && find . -depth -type d -exec touch -d '2020-01-02 03:04:05.5' {{}} +"
    ));
}

/// What a faithful copy keeps: type, mode, owner, size (not for dirs),
/// mtime to the nanosecond, symlink target, and optionally link counts.
fn listing(dir: &Path, with_nlink: bool) -> String {
    let d = q(dir);
    let n = if with_nlink { " %n" } else { "" };
    sh(&format!(
        "cd {d} && {{ find . ! -type d -printf '%p %y %m %U %G %s %T@ [%l]{n}\\n'; \
         find . -type d -printf '%p %y %m %U %G - %T@{n}\\n'; }} | LC_ALL=C sort"
    ))
}

// ------------------------------------------------------------- real tools

#[test]
fn cp_a_copies_a_tree_in_and_out_unchanged() {
    let mut m = Mount::new("posix-cp-a");
    let src = m.root.join("src");
    make_tree(&src);
    let copy = m.path("copy");
    let back = m.root.join("back");
    sh(&format!("cp -a {} {}", q(&src), q(&copy)));
    sh(&format!(
        "diff -r --no-dereference {} {}",
        q(&src),
        q(&copy)
    ));
    let want = listing(&src, true);
    assert_eq!(
        listing(&copy, true),
        want,
        "metadata of the copy in the mount"
    );
    assert_eq!(
        fs::metadata(copy.join("small.txt")).unwrap().ino(),
        fs::metadata(copy.join("sub/hard")).unwrap().ino(),
        "cp -a keeps hard links"
    );
    sh(&format!("cp -a {} {}", q(&copy), q(&back)));
    sh(&format!(
        "diff -r --no-dereference {} {}",
        q(&src),
        q(&back)
    ));
    assert_eq!(listing(&back, true), want, "metadata of the copy back out");
    m.remount();
    sh(&format!(
        "diff -r --no-dereference {} {}",
        q(&src),
        q(&copy)
    ));
    assert_eq!(listing(&copy, true), want, "metadata after remount");
}

#[test]
fn dd_with_conv_notrunc_overwrites_the_middle_of_a_file() {
    let mut m = Mount::new("posix-dd");
    let f = m.path("f");
    let orig = noise(4 << 20, 151);
    fs::write(&f, &orig).unwrap();
    let patch_path = m.root.join("patch");
    let patch = noise(1_500_000, 152);
    fs::write(&patch_path, &patch).unwrap();
    let (qf, qpatch) = (q(&f), q(&patch_path));

    sh(&format!(
        "dd if={qpatch} of={qf} bs=1M seek=1 conv=notrunc status=none"
    ));
    let mut want = orig.clone();
    write_model(&mut want, 1 << 20, &patch);
    assert_eq!(
        fs::metadata(&f).unwrap().len(),
        4 << 20,
        "conv=notrunc keeps the size"
    );
    assert_bytes(&fs::read(&f).unwrap(), &want, "after dd conv=notrunc");

    // Without notrunc, dd truncates at the seek point.
    let g = m.path("g");
    fs::write(&g, &orig).unwrap();
    sh(&format!(
        "dd if={qpatch} of={} bs=1M seek=2 status=none",
        q(&g)
    ));
    let mut want_g = orig[..2 << 20].to_vec();
    want_g.extend_from_slice(&patch);
    assert_bytes(&fs::read(&g).unwrap(), &want_g, "after dd without notrunc");

    // Into a new file past its start: a hole first.
    let h = m.path("h");
    sh(&format!(
        "dd if={qpatch} of={} bs=1M seek=3 status=none",
        q(&h)
    ));
    let got = fs::read(&h).unwrap();
    assert_eq!(got.len(), (3 << 20) + patch.len());
    assert!(
        got[..3 << 20].iter().all(|b| *b == 0),
        "dd seek hole not zeros"
    );
    assert_bytes(&got[3 << 20..], &patch, "dd seek tail");

    // Reading out with skip/count.
    let out = m.root.join("out");
    sh(&format!(
        "dd if={qf} of={} bs=1M skip=1 count=2 status=none",
        q(&out)
    ));
    assert_bytes(
        &fs::read(&out).unwrap(),
        &want[1 << 20..3 << 20],
        "dd read with skip/count",
    );

    m.remount();
    assert_bytes(&fs::read(&f).unwrap(), &want, "f after remount");
    assert_bytes(&fs::read(&g).unwrap(), &want_g, "g after remount");
    assert_bytes(&fs::read(&h).unwrap(), &got, "h after remount");
}

#[test]
fn tar_creates_from_and_extracts_into_the_mount() {
    let mut m = Mount::new("posix-tar");
    let tree = m.path("tree");
    make_tree(&tree);
    let want = listing(&tree, true);
    let archive = m.root.join("a.tar");
    let out = m.root.join("out");
    fs::create_dir(&out).unwrap();
    sh(&format!(
        "tar --format=posix -C {} -cf {} tree",
        q(&m.mnt),
        q(&archive)
    ));
    sh(&format!("tar -C {} -xf {}", q(&out), q(&archive)));
    sh(&format!(
        "diff -r --no-dereference {} {}",
        q(&tree),
        q(&out.join("tree"))
    ));
    assert_eq!(listing(&out.join("tree"), true), want, "extracted outside");

    // Into the mount.
    let inside = m.path("extracted");
    fs::create_dir(&inside).unwrap();
    sh(&format!("tar -C {} -xf {}", q(&inside), q(&archive)));
    sh(&format!(
        "diff -r --no-dereference {} {}",
        q(&tree),
        q(&inside.join("tree"))
    ));
    assert_eq!(
        listing(&inside.join("tree"), true),
        want,
        "extracted into the mount"
    );

    // An archive written into the mount, then listed and extracted from it.
    let in_mount_tar = m.path("b.tar");
    sh(&format!(
        "tar --format=posix -C {} -cf {} tree",
        q(&out),
        q(&in_mount_tar)
    ));
    let listed = sh(&format!("tar -tf {} | LC_ALL=C sort", q(&in_mount_tar)));
    assert!(
        listed.contains("tree/big.bin") && listed.contains("tree/sub/deeper/b.bin"),
        "{listed}"
    );

    m.remount();
    assert_eq!(listing(&inside.join("tree"), true), want, "after remount");
    sh(&format!(
        "diff -r --no-dereference {} {}",
        q(&out.join("tree")),
        q(&inside.join("tree"))
    ));
    let out2 = m.root.join("out2");
    fs::create_dir(&out2).unwrap();
    sh(&format!("tar -C {} -xf {}", q(&out2), q(&in_mount_tar)));
    assert_eq!(
        listing(&out2.join("tree"), true),
        want,
        "from an archive stored in the mount"
    );
}

#[test]
fn rsync_a_into_the_mount_and_back_is_identical() {
    let mut m = Mount::new("posix-rsync");
    let src = m.root.join("src");
    make_tree(&src);
    let dst = m.path("dst");
    let back = m.root.join("back");
    let want = listing(&src, false);
    // --modify-window=-1: compare times to the nanosecond, not the second.
    sh(&format!(
        "rsync -a --modify-window=-1 {}/ {}/",
        q(&src),
        q(&dst)
    ));
    sh(&format!("diff -r --no-dereference {} {}", q(&src), q(&dst)));
    assert_eq!(listing(&dst, false), want, "rsync -a into the mount");

    // Change the source and sync again (rsync writes a temp file and renames it).
    let mut big = fs::read(src.join("big.bin")).unwrap();
    big[1_000_000..1_000_100].copy_from_slice(&[0x55; 100]);
    fs::write(src.join("big.bin"), &big).unwrap();
    fs::write(src.join("sub/new.txt"), b"new file\n").unwrap();
    fs::remove_file(src.join("empty")).unwrap();
    sh(&format!(
        "rsync -a --modify-window=-1 --delete --no-whole-file {}/ {}/",
        q(&src),
        q(&dst)
    ));
    sh(&format!("diff -r --no-dereference {} {}", q(&src), q(&dst)));
    let want = listing(&src, false);
    assert_eq!(listing(&dst, false), want, "second rsync");
    // Only the synced names remain (no rsync temp files).
    assert_eq!(
        names(&dst),
        set(&["big.bin", "emptydir", "small.txt", "sub"])
    );

    sh(&format!(
        "rsync -a --modify-window=-1 {}/ {}/",
        q(&dst),
        q(&back)
    ));
    sh(&format!(
        "diff -r --no-dereference {} {}",
        q(&src),
        q(&back)
    ));
    assert_eq!(listing(&back, false), want, "rsync -a back out");
    m.remount();
    sh(&format!("diff -r --no-dereference {} {}", q(&src), q(&dst)));
    assert_eq!(listing(&dst, false), want, "after remount");
}

#[test]
fn numpy_save_load_and_mmap_load_round_trip() {
    let mut m = Mount::new("posix-numpy");
    let p = m.path("arr.npy");
    let script = r#"
import sys
import numpy as np
p, phase = sys.argv[1], sys.argv[2]
a = (np.arange(3_000_000, dtype=np.float32) * 0.5 - 7.0).reshape(1000, 3000)
if phase == "write":
    np.save(p, a)
    b = np.load(p)
    assert b.dtype == a.dtype and b.shape == a.shape, (b.dtype, b.shape)
    assert np.array_equal(a, b), "np.load differs"
    c = np.load(p, mmap_mode="r")
    assert isinstance(c, np.memmap)
    assert c.shape == a.shape and np.array_equal(a, c), "np.load(mmap_mode='r') differs"
    del c
    # Change a row through a shared writable mapping.
    w = np.load(p, mmap_mode="r+")
    w[5, :] = -1.0
    w.flush()
    del w
a[5, :] = -1.0
b = np.load(p)
assert np.array_equal(a, b), "after r+ change: np.load differs"
c = np.load(p, mmap_mode="r")
assert np.array_equal(a, c), "after r+ change: mmap load differs"
print("ok", float(b.sum()))
"#;
    let run = |phase: &str| {
        let out = Command::new(crate::common::python())
            .arg("-c")
            .arg(script)
            .arg(&p)
            .arg(phase)
            .output()
            .expect("run python");
        assert!(
            out.status.success(),
            "python {phase}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = run("write");
    assert!(first.starts_with("ok "), "{first}");
    assert_eq!(
        fs::metadata(&p).unwrap().len(),
        128 + 3_000_000 * 4,
        "npy size (header + data)"
    );
    m.remount();
    let second = run("read");
    assert_eq!(first, second, "numpy view differs after remount");
}
