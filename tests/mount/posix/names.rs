//! Names and links through the real mount: rename within and across
//! directories, atomic save by rename, renameat2 (RENAME_NOREPLACE,
//! RENAME_EXCHANGE), moving a directory into itself, symlinks, hard links,
//! and FIFO/socket/device nodes made with mknod.

#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::{assert_bytes, cpath, cvt, expect_errno, names, set, write_model};
use crate::common::{noise, Mount};

// ---------------------------------------------------------------- helpers

pub(crate) fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> io::Result<()> {
    let (a, b) = (cpath(from), cpath(to));
    // SAFETY: two valid NUL-terminated paths.
    cvt(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    })
}

fn mknod(p: &Path, mode: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
    let c = cpath(p);
    // SAFETY: valid path.
    cvt(unsafe { libc::mknod(c.as_ptr(), mode, dev) })
}

/// This process's umask (from /proc; reading it with umask(2) would change it).
fn umask() -> u32 {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .expect("Umask line");
    u32::from_str_radix(line.trim(), 8).expect("octal umask")
}

// ------------------------------------------------------------------ rename

#[test]
fn rename_moves_files_and_directories_within_and_across_directories() {
    let mut m = Mount::new("posix-rename");
    fs::create_dir(m.path("d1")).unwrap();
    fs::create_dir(m.path("d2")).unwrap();
    let data = noise(1_500_000, 41);
    fs::write(m.path("a"), &data).unwrap();
    let ino = fs::metadata(m.path("a")).unwrap().ino();

    // Within a directory.
    fs::rename(m.path("a"), m.path("b")).unwrap();
    expect_errno(
        fs::metadata(m.path("a")),
        libc::ENOENT,
        "old name after rename",
    );
    assert_eq!(
        fs::metadata(m.path("b")).unwrap().ino(),
        ino,
        "rename keeps the inode"
    );
    assert_bytes(
        &fs::read(m.path("b")).unwrap(),
        &data,
        "content after rename",
    );

    // Across directories.
    fs::rename(m.path("b"), m.path("d1/c")).unwrap();
    fs::rename(m.path("d1/c"), m.path("d2/e")).unwrap();
    assert!(names(&m.path("d1")).is_empty());
    assert_eq!(names(&m.path("d2")), set(&["e"]));
    assert_bytes(
        &fs::read(m.path("d2/e")).unwrap(),
        &data,
        "content after moves",
    );

    // A directory with content, across directories.
    fs::create_dir_all(m.path("d1/tree/inner")).unwrap();
    fs::write(m.path("d1/tree/inner/leaf"), b"leaf").unwrap();
    fs::rename(m.path("d1/tree"), m.path("d2/moved")).unwrap();
    assert_eq!(fs::read(m.path("d2/moved/inner/leaf")).unwrap(), b"leaf");
    expect_errno(
        fs::metadata(m.path("d1/tree")),
        libc::ENOENT,
        "old dir name",
    );

    // Over an empty directory: allowed; over a non-empty one: ENOTEMPTY.
    fs::create_dir(m.path("d1/empty")).unwrap();
    fs::rename(m.path("d2/moved"), m.path("d1/empty")).unwrap();
    assert_eq!(fs::read(m.path("d1/empty/inner/leaf")).unwrap(), b"leaf");
    fs::create_dir(m.path("d2/src")).unwrap();
    expect_errno(
        fs::rename(m.path("d2/src"), m.path("d1/empty")),
        libc::ENOTEMPTY,
        "rename over a non-empty dir",
    );
    // Kind mismatches.
    expect_errno(
        fs::rename(m.path("d2/src"), m.path("d2/e")),
        libc::ENOTDIR,
        "rename dir over file",
    );
    expect_errno(
        fs::rename(m.path("d2/e"), m.path("d2/src")),
        libc::EISDIR,
        "rename file over dir",
    );
    expect_errno(
        fs::rename(m.path("missing"), m.path("x")),
        libc::ENOENT,
        "rename of a missing name",
    );
    // Rename to itself is a no-op.
    fs::rename(m.path("d2/e"), m.path("d2/e")).unwrap();
    assert_bytes(
        &fs::read(m.path("d2/e")).unwrap(),
        &data,
        "after self-rename",
    );

    m.remount();
    assert_eq!(names(&m.mnt), set(&["d1", "d2"]));
    assert_eq!(names(&m.path("d1")), set(&["empty"]));
    assert_eq!(names(&m.path("d2")), set(&["e", "src"]));
    assert_eq!(fs::metadata(m.path("d2/e")).unwrap().ino(), ino);
    assert_bytes(&fs::read(m.path("d2/e")).unwrap(), &data, "after remount");
    assert_eq!(fs::read(m.path("d1/empty/inner/leaf")).unwrap(), b"leaf");
}

#[test]
fn atomic_save_by_rename_over_an_existing_file_replaces_its_content() {
    let mut m = Mount::new("posix-atomic-save");
    fs::create_dir(m.path("ckpt")).unwrap();
    let x = m.path("ckpt/x");
    let tmp = m.path("ckpt/x.tmp");
    let old = noise(2_000_000, 51);
    let new = noise(2_500_000, 52);
    fs::write(&x, &old).unwrap();
    // A reader that has the old file open keeps seeing it.
    let old_reader = File::open(&x).unwrap();

    {
        let mut t = File::create(&tmp).unwrap();
        t.write_all(&new).unwrap();
        t.sync_all().unwrap();
    }
    let tmp_ino = fs::metadata(&tmp).unwrap().ino();
    fs::rename(&tmp, &x).unwrap();
    File::open(m.path("ckpt")).unwrap().sync_all().unwrap();

    assert_eq!(names(&m.path("ckpt")), set(&["x"]));
    assert_eq!(fs::metadata(&x).unwrap().ino(), tmp_ino);
    assert_eq!(fs::metadata(&x).unwrap().nlink(), 1);
    assert_bytes(&fs::read(&x).unwrap(), &new, "x after the atomic save");
    let mut buf = vec![0u8; old.len()];
    old_reader.read_exact_at(&mut buf, 0).unwrap();
    assert_bytes(&buf, &old, "the replaced file through a fd opened before");
    drop(old_reader);

    // Do it again, the common checkpoint loop.
    let newer = noise(1_000_000, 53);
    {
        let mut t = File::create(&tmp).unwrap();
        t.write_all(&newer).unwrap();
        t.sync_data().unwrap();
    }
    fs::rename(&tmp, &x).unwrap();
    File::open(m.path("ckpt")).unwrap().sync_all().unwrap();

    m.remount();
    assert_eq!(names(&m.path("ckpt")), set(&["x"]));
    assert_bytes(&fs::read(&x).unwrap(), &newer, "x after remount");
}

#[test]
fn renameat2_noreplace_refuses_an_existing_target_with_eexist() {
    let mut m = Mount::new("posix-noreplace");
    fs::write(m.path("a"), b"A").unwrap();
    fs::write(m.path("b"), b"B").unwrap();
    expect_errno(
        renameat2(&m.path("a"), &m.path("b"), libc::RENAME_NOREPLACE),
        libc::EEXIST,
        "RENAME_NOREPLACE over b",
    );
    assert_eq!(fs::read(m.path("a")).unwrap(), b"A");
    assert_eq!(fs::read(m.path("b")).unwrap(), b"B");
    // Onto a free name it renames.
    renameat2(&m.path("a"), &m.path("c"), libc::RENAME_NOREPLACE).unwrap();
    assert_eq!(names(&m.mnt), set(&["b", "c"]));
    // Also for directories.
    fs::create_dir(m.path("d")).unwrap();
    fs::create_dir(m.path("e")).unwrap();
    expect_errno(
        renameat2(&m.path("d"), &m.path("e"), libc::RENAME_NOREPLACE),
        libc::EEXIST,
        "RENAME_NOREPLACE dir over dir",
    );
    m.remount();
    assert_eq!(names(&m.mnt), set(&["b", "c", "d", "e"]));
    assert_eq!(fs::read(m.path("c")).unwrap(), b"A");
    assert_eq!(fs::read(m.path("b")).unwrap(), b"B");
}

#[test]
fn renameat2_exchange_swaps_two_names_atomically() {
    let mut m = Mount::new("posix-exchange");
    let a_data = noise(700_000, 61);
    let b_data = noise(300_000, 62);
    fs::write(m.path("a"), &a_data).unwrap();
    fs::write(m.path("b"), &b_data).unwrap();
    let (ia, ib) = (
        fs::metadata(m.path("a")).unwrap().ino(),
        fs::metadata(m.path("b")).unwrap().ino(),
    );
    renameat2(&m.path("a"), &m.path("b"), libc::RENAME_EXCHANGE).unwrap();
    assert_bytes(&fs::read(m.path("a")).unwrap(), &b_data, "a after exchange");
    assert_bytes(&fs::read(m.path("b")).unwrap(), &a_data, "b after exchange");
    assert_eq!(fs::metadata(m.path("a")).unwrap().ino(), ib);
    assert_eq!(fs::metadata(m.path("b")).unwrap().ino(), ia);

    // A file and a directory in different parents.
    fs::create_dir_all(m.path("p1/dir/inner")).unwrap();
    fs::write(m.path("p1/dir/inner/f"), b"in dir").unwrap();
    fs::create_dir(m.path("p2")).unwrap();
    fs::write(m.path("p2/file"), b"plain").unwrap();
    renameat2(&m.path("p1/dir"), &m.path("p2/file"), libc::RENAME_EXCHANGE).unwrap();
    assert!(fs::metadata(m.path("p1/dir")).unwrap().is_file());
    assert_eq!(fs::read(m.path("p1/dir")).unwrap(), b"plain");
    assert!(fs::metadata(m.path("p2/file")).unwrap().is_dir());
    assert_eq!(fs::read(m.path("p2/file/inner/f")).unwrap(), b"in dir");
    // Link counts follow the directory: p1 lost a subdir, p2 gained one.
    assert_eq!(fs::metadata(m.path("p1")).unwrap().nlink(), 2);
    assert_eq!(fs::metadata(m.path("p2")).unwrap().nlink(), 3);

    // Exchange with a missing name fails and changes nothing.
    expect_errno(
        renameat2(&m.path("a"), &m.path("nothing"), libc::RENAME_EXCHANGE),
        libc::ENOENT,
        "exchange with a missing name",
    );
    assert_bytes(
        &fs::read(m.path("a")).unwrap(),
        &b_data,
        "a after failed exchange",
    );
    // Both flags at once is invalid.
    expect_errno(
        renameat2(
            &m.path("a"),
            &m.path("b"),
            libc::RENAME_EXCHANGE | libc::RENAME_NOREPLACE,
        ),
        libc::EINVAL,
        "EXCHANGE|NOREPLACE",
    );

    m.remount();
    assert_bytes(&fs::read(m.path("a")).unwrap(), &b_data, "a after remount");
    assert_bytes(&fs::read(m.path("b")).unwrap(), &a_data, "b after remount");
    assert_eq!(fs::read(m.path("p1/dir")).unwrap(), b"plain");
    assert_eq!(fs::read(m.path("p2/file/inner/f")).unwrap(), b"in dir");
    assert_eq!(fs::metadata(m.path("p1")).unwrap().nlink(), 2);
    assert_eq!(fs::metadata(m.path("p2")).unwrap().nlink(), 3);
}

#[test]
fn moving_a_directory_into_its_own_subdirectory_fails_with_einval() {
    let mut m = Mount::new("posix-rename-loop");
    fs::create_dir_all(m.path("a/b/c")).unwrap();
    fs::write(m.path("a/b/c/f"), b"f").unwrap();
    expect_errno(
        fs::rename(m.path("a"), m.path("a/b/c/a")),
        libc::EINVAL,
        "a -> a/b/c/a",
    );
    expect_errno(
        fs::rename(m.path("a"), m.path("a/x")),
        libc::EINVAL,
        "a -> a/x",
    );
    expect_errno(
        fs::rename(m.path("a/b"), m.path("a/b/c/b")),
        libc::EINVAL,
        "a/b -> a/b/c/b",
    );
    expect_errno(
        renameat2(&m.path("a"), &m.path("a/b/c"), libc::RENAME_EXCHANGE),
        libc::EINVAL,
        "exchange a with its descendant",
    );
    m.remount();
    assert_eq!(names(&m.mnt), set(&["a"]));
    assert_eq!(fs::read(m.path("a/b/c/f")).unwrap(), b"f");
    // Moving the other way (up) is fine.
    fs::rename(m.path("a/b/c"), m.path("c")).unwrap();
    assert_eq!(fs::read(m.path("c/f")).unwrap(), b"f");
}

// ---------------------------------------------------------- links and nodes

#[test]
fn symlinks_read_back_resolve_and_survive_remount() {
    let mut m = Mount::new("posix-symlink");
    fs::create_dir(m.path("dir")).unwrap();
    fs::write(m.path("dir/target.txt"), b"through the link").unwrap();
    std::os::unix::fs::symlink("dir/target.txt", m.path("rel")).unwrap();
    std::os::unix::fs::symlink(m.path("dir"), m.path("abs")).unwrap();
    std::os::unix::fs::symlink("nowhere/at/all", m.path("dangling")).unwrap();
    let long_target = "t/".repeat(1000) + "end";
    std::os::unix::fs::symlink(&long_target, m.path("long")).unwrap();

    let check = |m: &Mount| {
        assert_eq!(
            fs::read_link(m.path("rel")).unwrap(),
            PathBuf::from("dir/target.txt")
        );
        assert_eq!(fs::read_link(m.path("abs")).unwrap(), m.path("dir"));
        assert_eq!(
            fs::read_link(m.path("dangling")).unwrap(),
            PathBuf::from("nowhere/at/all")
        );
        assert_eq!(
            fs::read_link(m.path("long")).unwrap(),
            PathBuf::from(&long_target)
        );
        let md = fs::symlink_metadata(m.path("rel")).unwrap();
        assert!(md.file_type().is_symlink());
        assert_eq!(
            md.len(),
            "dir/target.txt".len() as u64,
            "symlink size is its target length"
        );
        assert_eq!(fs::read(m.path("rel")).unwrap(), b"through the link");
        assert_eq!(
            fs::read(m.path("abs/target.txt")).unwrap(),
            b"through the link"
        );
        expect_errno(
            fs::read(m.path("dangling")),
            libc::ENOENT,
            "read through a dangling link",
        );
        expect_errno(
            fs::read_link(m.path("dir/target.txt")),
            libc::EINVAL,
            "readlink of a regular file",
        );
        let kinds: BTreeMap<String, bool> = fs::read_dir(&m.mnt)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().into_string().unwrap(),
                    e.file_type().unwrap().is_symlink(),
                )
            })
            .collect();
        assert_eq!(kinds.get("rel"), Some(&true), "readdir type of a symlink");
        assert_eq!(kinds.get("dir"), Some(&false));
    };
    check(&m);
    expect_errno(
        std::os::unix::fs::symlink("x", m.path("rel")),
        libc::EEXIST,
        "symlink over an existing name",
    );
    m.remount();
    check(&m);
    // Removing a link leaves the target.
    fs::remove_file(m.path("rel")).unwrap();
    assert_eq!(
        fs::read(m.path("dir/target.txt")).unwrap(),
        b"through the link"
    );
}

#[test]
fn hard_links_share_inode_and_content_and_counts_survive_remount() {
    let mut m = Mount::new("posix-hardlink");
    fs::create_dir(m.path("d")).unwrap();
    let data = noise(1_200_000, 71);
    fs::write(m.path("a"), &data).unwrap();
    fs::hard_link(m.path("a"), m.path("d/b")).unwrap();
    let (ma, mb) = (
        fs::metadata(m.path("a")).unwrap(),
        fs::metadata(m.path("d/b")).unwrap(),
    );
    assert_eq!(ma.ino(), mb.ino());
    assert_eq!((ma.nlink(), mb.nlink()), (2, 2));
    assert_bytes(
        &fs::read(m.path("d/b")).unwrap(),
        &data,
        "content through the second name",
    );

    // A write through one name shows through the other.
    {
        let f = OpenOptions::new().write(true).open(m.path("d/b")).unwrap();
        f.write_all_at(b"shared", 500_000).unwrap();
    }
    let mut want = data.clone();
    write_model(&mut want, 500_000, b"shared");
    assert_bytes(
        &fs::read(m.path("a")).unwrap(),
        &want,
        "content through the first name",
    );

    expect_errno(
        fs::hard_link(m.path("a"), m.path("d/b")),
        libc::EEXIST,
        "link onto an existing name",
    );
    expect_errno(
        fs::hard_link(m.path("d"), m.path("dlink")),
        libc::EPERM,
        "hard link to a directory",
    );
    expect_errno(
        fs::hard_link(m.path("missing"), m.path("x")),
        libc::ENOENT,
        "link of a missing file",
    );

    m.remount();
    let (ma, mb) = (
        fs::metadata(m.path("a")).unwrap(),
        fs::metadata(m.path("d/b")).unwrap(),
    );
    assert_eq!(ma.ino(), mb.ino());
    assert_eq!((ma.nlink(), mb.nlink()), (2, 2));
    assert_bytes(
        &fs::read(m.path("d/b")).unwrap(),
        &want,
        "second name after remount",
    );

    fs::remove_file(m.path("a")).unwrap();
    assert_eq!(fs::metadata(m.path("d/b")).unwrap().nlink(), 1);
    assert_bytes(
        &fs::read(m.path("d/b")).unwrap(),
        &want,
        "survivor after unlink",
    );
    // A third name and then back to two.
    fs::hard_link(m.path("d/b"), m.path("c")).unwrap();
    assert_eq!(fs::metadata(m.path("c")).unwrap().nlink(), 2);
    m.remount();
    assert_eq!(names(&m.mnt), set(&["c", "d"]));
    assert_eq!(fs::metadata(m.path("d/b")).unwrap().nlink(), 2);
    assert_eq!(
        fs::metadata(m.path("c")).unwrap().ino(),
        fs::metadata(m.path("d/b")).unwrap().ino()
    );
    assert_bytes(
        &fs::read(m.path("c")).unwrap(),
        &want,
        "third name after remount",
    );
    fs::remove_file(m.path("d/b")).unwrap();
    m.remount();
    assert_eq!(fs::metadata(m.path("c")).unwrap().nlink(), 1);
    assert_bytes(
        &fs::read(m.path("c")).unwrap(),
        &want,
        "last name after remount",
    );
}

#[test]
fn fifo_socket_and_device_nodes_keep_kind_mode_and_rdev_after_remount() {
    let mut m = Mount::new("posix-mknod");
    let fifo = cpath(&m.path("fifo"));
    // SAFETY: valid path.
    cvt(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }).unwrap();
    mknod(&m.path("sock"), libc::S_IFSOCK | 0o600, 0).unwrap();
    let chr = libc::makedev(1, 3);
    let blk = libc::makedev(7, 42);
    mknod(&m.path("chr"), libc::S_IFCHR | 0o620, chr).unwrap();
    mknod(&m.path("blk"), libc::S_IFBLK | 0o600, blk).unwrap();
    expect_errno(
        mknod(&m.path("chr"), libc::S_IFCHR | 0o600, chr),
        libc::EEXIST,
        "mknod over an existing name",
    );

    let um = umask();
    let check = |m: &Mount| {
        let md = |n: &str| fs::symlink_metadata(m.path(n)).unwrap();
        assert!(md("fifo").file_type().is_fifo(), "fifo kind");
        assert_eq!(
            md("fifo").mode() & 0o7777,
            0o640 & !um,
            "fifo mode (umask {um:o})"
        );
        assert!(md("sock").file_type().is_socket(), "socket kind");
        assert_eq!(md("sock").mode() & 0o7777, 0o600 & !um, "socket mode");
        assert!(md("chr").file_type().is_char_device(), "char device kind");
        assert_eq!(md("chr").rdev(), chr, "char device rdev");
        assert_eq!(
            md("chr").mode() & 0o7777,
            0o620 & !um,
            "char device mode (umask {um:o})"
        );
        assert!(md("blk").file_type().is_block_device(), "block device kind");
        assert_eq!(md("blk").rdev(), blk, "block device rdev");
        assert_eq!(md("fifo").len(), 0);
        let kinds: BTreeMap<String, fs::FileType> = fs::read_dir(&m.mnt)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name().into_string().unwrap(), e.file_type().unwrap())
            })
            .collect();
        assert!(
            kinds["fifo"].is_fifo() && kinds["sock"].is_socket(),
            "readdir types"
        );
        assert!(
            kinds["chr"].is_char_device() && kinds["blk"].is_block_device(),
            "readdir types"
        );
    };
    check(&m);
    m.remount();
    check(&m);
    // They can be renamed and removed like files.
    fs::rename(m.path("chr"), m.path("null")).unwrap();
    fs::remove_file(m.path("sock")).unwrap();
    m.remount();
    assert_eq!(names(&m.mnt), set(&["blk", "fifo", "null"]));
    assert_eq!(fs::symlink_metadata(m.path("null")).unwrap().rdev(), chr);
}
