//! Everything under `.ckpt/` is read-only except the snapshot, policy,
//! gc and pin controls: each other write (open for writing, create, mkdir,
//! symlink, mknod, unlink, rmdir, truncate, chmod, chown, utimensat,
//! setxattr, removexattr, rename, link) is refused with its exact errno
//! (EROFS; EPERM for xattrs of snapshot entries; EXDEV across the `.ckpt`
//! boundary), and afterwards nothing has changed.

#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{
    cpath, cvt, errno_name, readlink, removex, sdir, set_times, setx, vdir, versions, walk, Entry,
};
use crate::common::Mount;

fn mkfifo(p: &Path) -> io::Result<()> {
    let c = cpath(p);
    // SAFETY: a valid path.
    cvt(unsafe { libc::mkfifo(c.as_ptr(), 0o644) })
}

fn truncate(p: &Path, len: i64) -> io::Result<()> {
    let c = cpath(p);
    // SAFETY: a valid path.
    cvt(unsafe { libc::truncate(c.as_ptr(), len as libc::off_t) })
}

/// `touch`: utimensat with both times now.
fn touch_now(p: &Path) -> io::Result<()> {
    let c = cpath(p);
    // SAFETY: a valid path; a null times pointer means "now".
    cvt(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), std::ptr::null(), 0) })
}

fn open_with(p: &Path, o: &mut OpenOptions) -> io::Result<()> {
    o.open(p).map(drop)
}

/// A tree walked into path -> entry.
type Listing = BTreeMap<String, Entry>;

/// Everything a refused write could have changed: the live tree, the
/// versions, the snapshots and the policy text.
fn fingerprint(m: &Mount) -> (Listing, Listing, Listing, String) {
    (
        walk(&m.mnt),
        walk(&m.path(".ckpt/versions")),
        walk(&m.path(".ckpt/snapshots")),
        fs::read_to_string(m.path(".ckpt/retention/policy")).unwrap(),
    )
}

#[test]
fn every_write_under_the_control_dir_is_refused_and_changes_nothing() {
    let m = Mount::new("hist-ctl-readonly");
    fs::write(m.path("a.bin"), b"version one").unwrap();
    fs::write(m.path("a.bin"), b"version two").unwrap();
    setx(&m.path("a.bin"), "user.tag", b"t").unwrap();
    fs::create_dir(m.path("d")).unwrap();
    fs::write(m.path("d/f.txt"), b"f").unwrap();
    std::os::unix::fs::symlink("a.bin", m.path("link")).unwrap();
    fs::create_dir(sdir(&m, "s1")).unwrap();
    let before = fingerprint(&m);

    let v1: PathBuf = vdir(&m, "a.bin").join(&versions(&vdir(&m, "a.bin"))[0]);
    let vlatest = vdir(&m, "a.bin/latest");
    let (vd, vdd) = (vdir(&m, "a.bin"), vdir(&m, "d"));
    let s1 = sdir(&m, "s1");
    let (sf, sd, sl) = (s1.join("a.bin"), s1.join("d"), s1.join("link"));
    let c = |r: &str| m.path(&format!(".ckpt/{r}"));
    let live = |r: &str| m.path(r);
    let (rofs, perm, xdev) = (libc::EROFS, libc::EPERM, libc::EXDEV);

    let o = OpenOptions::new;
    let checks: Vec<(&str, i32, io::Result<()>)> = vec![
        // Opening for writing.
        (
            "open O_WRONLY version",
            rofs,
            open_with(&v1, o().write(true)),
        ),
        (
            "open O_RDWR version",
            rofs,
            open_with(&v1, o().read(true).write(true)),
        ),
        (
            "open O_TRUNC version",
            rofs,
            open_with(&v1, o().write(true).truncate(true)),
        ),
        (
            "open O_APPEND version",
            rofs,
            open_with(&v1, o().append(true)),
        ),
        (
            "open O_CREAT existing version",
            rofs,
            open_with(&v1, o().write(true).create(true)),
        ),
        (
            "open O_RDWR through latest",
            rofs,
            open_with(&vlatest, o().read(true).write(true)),
        ),
        (
            "open O_WRONLY snapshot file",
            rofs,
            open_with(&sf, o().write(true)),
        ),
        (
            "open O_TRUNC snapshots/latest/a.bin",
            rofs,
            open_with(&sdir(&m, "latest/a.bin"), o().write(true).truncate(true)),
        ),
        (
            "open O_WRONLY stats",
            rofs,
            open_with(&c("stats"), o().write(true)),
        ),
        (
            "open O_WRONLY retention/status",
            rofs,
            open_with(&c("retention/status"), o().write(true)),
        ),
        // Creating.
        (
            "create in a history dir",
            rofs,
            open_with(&vd.join("new"), o().write(true).create(true)),
        ),
        (
            "create in versions/",
            rofs,
            open_with(&c("versions/new"), o().write(true).create(true)),
        ),
        (
            "create in .ckpt/",
            rofs,
            open_with(&c("new"), o().write(true).create(true)),
        ),
        (
            "create in snapshots/",
            rofs,
            open_with(&c("snapshots/new"), o().write(true).create(true)),
        ),
        (
            "create in a snapshot",
            rofs,
            open_with(&s1.join("new"), o().write(true).create(true)),
        ),
        (
            "create_new in a snapshot subdir",
            rofs,
            open_with(
                &sd.join("new"),
                o().write(true).create_new(true).mode(0o600),
            ),
        ),
        (
            "create in retention/",
            rofs,
            open_with(&c("retention/new"), o().write(true).create(true)),
        ),
        (
            "mkdir in versions/",
            rofs,
            fs::create_dir(c("versions/newdir")),
        ),
        (
            "mkdir in a history dir",
            rofs,
            fs::create_dir(vd.join("newdir")),
        ),
        (
            "mkdir in a snapshot",
            rofs,
            fs::create_dir(s1.join("newdir")),
        ),
        (
            "mkdir in a snapshot subdir",
            rofs,
            fs::create_dir(sd.join("newdir")),
        ),
        ("mkdir in .ckpt/", rofs, fs::create_dir(c("newdir"))),
        (
            "mkdir in retention/",
            rofs,
            fs::create_dir(c("retention/newdir")),
        ),
        (
            "symlink in a history dir",
            rofs,
            std::os::unix::fs::symlink("x", vd.join("sl")),
        ),
        (
            "symlink in snapshots/",
            rofs,
            std::os::unix::fs::symlink("s1", c("snapshots/sl")),
        ),
        (
            "symlink in a snapshot",
            rofs,
            std::os::unix::fs::symlink("x", s1.join("sl")),
        ),
        ("mkfifo in versions/", rofs, mkfifo(&c("versions/fifo"))),
        (
            "mkfifo in a snapshot subdir",
            rofs,
            mkfifo(&sd.join("fifo")),
        ),
        // Deleting.
        ("unlink version", rofs, fs::remove_file(&v1)),
        ("unlink versions latest", rofs, fs::remove_file(&vlatest)),
        ("unlink snapshot file", rofs, fs::remove_file(&sf)),
        ("unlink snapshot symlink", rofs, fs::remove_file(&sl)),
        (
            "unlink snapshots/latest",
            rofs,
            fs::remove_file(sdir(&m, "latest")),
        ),
        ("unlink stats", rofs, fs::remove_file(c("stats"))),
        (
            "unlink retention/policy",
            rofs,
            fs::remove_file(c("retention/policy")),
        ),
        (
            "unlink retention/gc",
            rofs,
            fs::remove_file(c("retention/gc")),
        ),
        ("rmdir history dir", rofs, fs::remove_dir(&vd)),
        ("rmdir history dir of a dir", rofs, fs::remove_dir(&vdd)),
        ("rmdir snapshot subdir", rofs, fs::remove_dir(&sd)),
        ("rmdir .ckpt/versions", rofs, fs::remove_dir(c("versions"))),
        (
            "rmdir .ckpt/snapshots",
            rofs,
            fs::remove_dir(c("snapshots")),
        ),
        (
            "rmdir retention/kept",
            rofs,
            fs::remove_dir(c("retention/kept")),
        ),
        // Attributes.
        ("truncate version", rofs, truncate(&v1, 0)),
        ("truncate snapshot file", rofs, truncate(&sf, 3)),
        ("truncate stats", rofs, truncate(&c("stats"), 0)),
        (
            "chmod version",
            rofs,
            fs::set_permissions(&v1, fs::Permissions::from_mode(0o777)),
        ),
        (
            "chmod history dir",
            rofs,
            fs::set_permissions(&vd, fs::Permissions::from_mode(0o700)),
        ),
        (
            "chmod snapshot file",
            rofs,
            fs::set_permissions(&sf, fs::Permissions::from_mode(0o777)),
        ),
        (
            "chmod snapshot root",
            rofs,
            fs::set_permissions(&s1, fs::Permissions::from_mode(0o700)),
        ),
        (
            "chmod snapshots/",
            rofs,
            fs::set_permissions(c("snapshots"), fs::Permissions::from_mode(0o700)),
        ),
        (
            "chmod .ckpt",
            rofs,
            fs::set_permissions(c(""), fs::Permissions::from_mode(0o777)),
        ),
        (
            "chown version",
            rofs,
            std::os::unix::fs::chown(&v1, Some(7), Some(7)),
        ),
        (
            "chown snapshot file",
            rofs,
            std::os::unix::fs::chown(&sf, Some(7), None),
        ),
        (
            "lchown snapshot symlink",
            rofs,
            std::os::unix::fs::lchown(&sl, Some(7), None),
        ),
        (
            "utimensat version",
            rofs,
            set_times(&v1, (1_000_000_000, 0), false),
        ),
        ("touch snapshot file", rofs, touch_now(&sf)),
        ("touch .ckpt", rofs, touch_now(&c(""))),
        // Extended attributes.
        ("setxattr version", rofs, setx(&v1, "user.x", b"1")),
        ("setxattr history dir", rofs, setx(&vd, "user.x", b"1")),
        ("setxattr .ckpt", rofs, setx(&c(""), "user.x", b"1")),
        (
            "setxattr snapshots/",
            rofs,
            setx(&c("snapshots"), "user.ckpt.pinned", b"1"),
        ),
        ("setxattr stats", rofs, setx(&c("stats"), "user.x", b"1")),
        ("removexattr version", rofs, removex(&v1, "user.x")),
        (
            "setxattr snapshot file",
            perm,
            setx(&sf, "user.tag", b"other"),
        ),
        ("setxattr snapshot root", perm, setx(&s1, "user.x", b"1")),
        (
            "setxattr snapshot root user.ckpt.files",
            perm,
            setx(&s1, "user.ckpt.files", b"9"),
        ),
        (
            "pin a snapshot subdir",
            perm,
            setx(&sd, "user.ckpt.pinned", b"1"),
        ),
        ("removexattr snapshot file", perm, removex(&sf, "user.tag")),
        (
            "removexattr snapshot root user.ckpt.created",
            perm,
            removex(&s1, "user.ckpt.created"),
        ),
        // Renames inside the control tree.
        ("rename version", rofs, fs::rename(&v1, vd.join("renamed"))),
        (
            "rename history dir",
            rofs,
            fs::rename(&vd, c("versions/renamed")),
        ),
        (
            "rename inside a snapshot",
            rofs,
            fs::rename(&sf, s1.join("renamed")),
        ),
        (
            "rename snapshot subdir to snapshots/",
            rofs,
            fs::rename(&sd, c("snapshots/d")),
        ),
        (
            "rename snapshot out of snapshots/",
            rofs,
            fs::rename(&s1, c("s1")),
        ),
        ("rename stats", rofs, fs::rename(c("stats"), c("stats2"))),
        (
            "rename .ckpt/versions",
            rofs,
            fs::rename(c("versions"), c("v2")),
        ),
        // Renames and links across the boundary.
        (
            "rename version to the live tree",
            xdev,
            fs::rename(&v1, live("stolen")),
        ),
        (
            "rename snapshot file to the live tree",
            xdev,
            fs::rename(&sf, live("stolen")),
        ),
        (
            "rename snapshot dir to the live tree",
            xdev,
            fs::rename(&s1, live("stolen")),
        ),
        (
            "rename live file into versions",
            xdev,
            fs::rename(live("a.bin"), vd.join("x")),
        ),
        (
            "rename live file into a snapshot",
            xdev,
            fs::rename(live("a.bin"), s1.join("x")),
        ),
        (
            "rename live dir into snapshots/",
            xdev,
            fs::rename(live("d"), c("snapshots/d")),
        ),
        (
            "link live file into versions",
            rofs,
            fs::hard_link(live("a.bin"), vd.join("x")),
        ),
        (
            "link live file into a snapshot",
            rofs,
            fs::hard_link(live("a.bin"), s1.join("x")),
        ),
        (
            "link version inside versions",
            rofs,
            fs::hard_link(&v1, vd.join("x")),
        ),
        (
            "link version into the live tree",
            xdev,
            fs::hard_link(&v1, live("stolen")),
        ),
        (
            "link snapshot file into the live tree",
            xdev,
            fs::hard_link(&sf, live("stolen")),
        ),
    ];
    let mut wrong = Vec::new();
    for (what, want, got) in &checks {
        match got {
            Err(e) if e.raw_os_error() == Some(*want) => {}
            Err(e) => wrong.push(format!(
                "{what}: expected `{}`, got `{e}`",
                errno_name(*want)
            )),
            Ok(()) => wrong.push(format!("{what}: expected `{}`, got Ok", errno_name(*want))),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} refused writes got another answer:\n  {}",
        wrong.len(),
        checks.len(),
        wrong.join("\n  ")
    );

    let after = fingerprint(&m);
    super::assert_same_tree(&after.0, &before.0, "the live tree after refused writes");
    super::assert_same_tree(&after.1, &before.1, ".ckpt/versions after refused writes");
    super::assert_same_tree(&after.2, &before.2, ".ckpt/snapshots after refused writes");
    assert_eq!(
        after.3, before.3,
        "the retention policy after refused writes"
    );
    assert_eq!(readlink(&sdir(&m, "latest")), "s1");
    assert_eq!(fs::read(&v1).unwrap(), b"version one");
    assert_eq!(fs::read(&sf).unwrap(), b"version two");
}
