//! Directories and access through the real mount: directory link counts,
//! what another user may do (file modes, sticky directories), statfs,
//! readdir (ten thousand entries, stable offsets under change), 255-byte
//! names and paths close to PATH_MAX.

#![allow(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CStr;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

use super::{assert_bytes, cpath, cvt, expect_errno, names, q, set};
use crate::common::{noise, sh, Mount};

// ---------------------------------------------------------------- helpers

fn statvfs(p: &Path) -> libc::statvfs {
    let c = cpath(p);
    // SAFETY: statvfs is plain old data, filled by the call.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and a buffer of the right type.
    cvt(unsafe { libc::statvfs(c.as_ptr(), &mut s) })
        .unwrap_or_else(|e| panic!("statvfs {}: {e}", p.display()));
    s
}

/// Runs a shell command as uid/gid 65534 with no supplementary groups.
fn as_nobody(script: &str) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .current_dir("/")
        .output()
        .expect("run setpriv")
}

// ---------------------------------------------------- directory link counts

#[test]
fn directory_link_counts_follow_mkdir_rmdir_and_rename() {
    let mut m = Mount::new("posix-nlink");
    let nl = |p: &Path| fs::metadata(p).unwrap().nlink();
    let root0 = nl(&m.mnt);
    assert_eq!(root0, 2, "empty root");
    fs::create_dir(m.path("top")).unwrap();
    fs::create_dir(m.path("other")).unwrap();
    assert_eq!(nl(&m.mnt), 4);
    assert_eq!(nl(&m.path("top")), 2);
    for d in ["a", "b", "c"] {
        fs::create_dir(m.path("top").join(d)).unwrap();
    }
    fs::write(m.path("top/file"), b"files do not count").unwrap();
    assert_eq!(nl(&m.path("top")), 5);
    fs::remove_dir(m.path("top/a")).unwrap();
    assert_eq!(nl(&m.path("top")), 4);
    // Rename within: unchanged; across: moves one count.
    fs::rename(m.path("top/b"), m.path("top/bb")).unwrap();
    assert_eq!(nl(&m.path("top")), 4);
    fs::rename(m.path("top/bb"), m.path("other/b")).unwrap();
    assert_eq!(nl(&m.path("top")), 3);
    assert_eq!(nl(&m.path("other")), 3);
    // Rename a dir over an empty dir: the target's count goes.
    fs::create_dir(m.path("other/target")).unwrap();
    assert_eq!(nl(&m.path("other")), 4);
    fs::rename(m.path("top/c"), m.path("other/target")).unwrap();
    assert_eq!(nl(&m.path("top")), 2);
    assert_eq!(nl(&m.path("other")), 4);
    // Renaming a file does not change counts.
    fs::rename(m.path("top/file"), m.path("other/file")).unwrap();
    assert_eq!(nl(&m.path("top")), 2);
    assert_eq!(nl(&m.path("other")), 4);
    // A directory's own count after it moved: 2 + its subdirs.
    fs::create_dir(m.path("other/b/x")).unwrap();
    assert_eq!(nl(&m.path("other/b")), 3);
    assert_eq!(nl(&m.mnt), 4);

    m.remount();
    assert_eq!(nl(&m.mnt), 4);
    assert_eq!(nl(&m.path("top")), 2);
    assert_eq!(nl(&m.path("other")), 4);
    assert_eq!(nl(&m.path("other/b")), 3);
    assert_eq!(nl(&m.path("other/target")), 2);
    assert_eq!(names(&m.path("other")), set(&["b", "file", "target"]));
    fs::remove_dir(m.path("other/b/x")).unwrap();
    fs::remove_dir(m.path("other/b")).unwrap();
    assert_eq!(nl(&m.path("other")), 3);
}

// ------------------------------------------------------------- permissions

#[test]
fn another_user_is_refused_by_file_modes() {
    let m = Mount::with_args("posix-perms", &["--allow-other"]);
    let secret = m.path("secret");
    let public = m.path("public");
    fs::write(&secret, b"top secret\n").unwrap();
    fs::write(&public, b"for everyone\n").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(&public, fs::Permissions::from_mode(0o644)).unwrap();
    fs::create_dir(m.path("private")).unwrap();
    fs::set_permissions(m.path("private"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(m.path("private/inside"), b"hidden\n").unwrap();
    fs::set_permissions(m.path("private/inside"), fs::Permissions::from_mode(0o644)).unwrap();

    let out = as_nobody(&format!("cat {}", q(&secret)));
    assert!(
        !out.status.success(),
        "uid 65534 read a 0600 root file: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = as_nobody(&format!("cat {}", q(&public)));
    assert!(
        out.status.success(),
        "reading a 0644 file failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"for everyone\n");

    let out = as_nobody(&format!("echo more >> {}", q(&public)));
    assert!(!out.status.success(), "uid 65534 wrote to a 0644 root file");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = as_nobody(&format!("truncate -s 0 {}", q(&public)));
    assert!(
        !out.status.success(),
        "uid 65534 truncated a 0644 root file"
    );
    assert_eq!(fs::read(&public).unwrap(), b"for everyone\n");

    // The mount root is 0755 root: no new names for others; a 0700 dir is closed.
    let out = as_nobody(&format!("touch {}", q(&m.path("intruder"))));
    assert!(
        !out.status.success(),
        "uid 65534 created a file in a 0755 root dir"
    );
    let out = as_nobody(&format!("rm -f {}", q(&public)));
    assert!(
        !out.status.success(),
        "uid 65534 removed a file from a 0755 root dir"
    );
    let out = as_nobody(&format!("cat {}", q(&m.path("private/inside"))));
    assert!(!out.status.success(), "uid 65534 went through a 0700 dir");
    let out = as_nobody(&format!("chmod 666 {}", q(&secret)));
    assert!(!out.status.success(), "uid 65534 chmodded a root file");
    let out = as_nobody(&format!("ls {}", q(&m.mnt)));
    assert!(
        out.status.success(),
        "listing a 0755 dir failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .collect::<BTreeSet<_>>(),
        ["private", "public", "secret"].into_iter().collect()
    );

    assert_eq!(names(&m.mnt), set(&["private", "public", "secret"]));
    assert_eq!(fs::metadata(&secret).unwrap().mode() & 0o7777, 0o600);
}

#[test]
fn sticky_directory_lets_users_delete_only_their_own_files() {
    let m = Mount::with_args("posix-sticky", &["--allow-other"]);
    let shared = m.path("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
    assert_eq!(fs::metadata(&shared).unwrap().mode() & 0o7777, 0o1777);
    let rootfile = shared.join("rootfile");
    fs::write(&rootfile, b"root's").unwrap();
    fs::set_permissions(&rootfile, fs::Permissions::from_mode(0o666)).unwrap();

    let out = as_nobody(&format!("rm -f {}", q(&rootfile)));
    assert!(
        !out.status.success(),
        "uid 65534 deleted root's file in a sticky dir"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = as_nobody(&format!(
        "mv {} {}",
        q(&rootfile),
        q(&shared.join("stolen"))
    ));
    assert!(
        !out.status.success(),
        "uid 65534 renamed root's file in a sticky dir"
    );
    assert_eq!(fs::read(&rootfile).unwrap(), b"root's");

    let mine = shared.join("mine");
    let out = as_nobody(&format!("echo mine > {}", q(&mine)));
    assert!(
        out.status.success(),
        "creating in a 1777 dir failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = fs::metadata(&mine).unwrap();
    assert_eq!(
        (md.uid(), md.gid()),
        (65534, 65534),
        "owner of a file created by uid 65534"
    );
    assert_eq!(fs::read(&mine).unwrap(), b"mine\n");
    // The world-writable root file can still be written (sticky is about names).
    let out = as_nobody(&format!("echo appended >> {}", q(&rootfile)));
    assert!(
        out.status.success(),
        "writing a 0666 file failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = as_nobody(&format!("rm {}", q(&mine)));
    assert!(
        out.status.success(),
        "uid 65534 could not delete its own file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(names(&shared), set(&["rootfile"]));
    assert_eq!(fs::read(&rootfile).unwrap(), b"root'sappended\n");
}

// ------------------------------------------------------------------ statfs

#[test]
fn statfs_reports_the_backing_disk_size() {
    let m = Mount::new("posix-statfs");
    let mnt = statvfs(&m.mnt);
    let disk = statvfs(&m.root);
    let mnt_size = mnt.f_blocks as f64 * mnt.f_frsize as f64;
    let disk_size = disk.f_blocks as f64 * disk.f_frsize as f64;
    assert!(disk_size > 0.0);
    assert!(
        (mnt_size - disk_size).abs() <= disk_size * 0.01,
        "statfs size {mnt_size} vs backing disk {disk_size}"
    );
    let mnt_avail = mnt.f_bavail as f64 * mnt.f_frsize as f64;
    assert!(
        mnt_avail > 0.0 && mnt_avail <= mnt_size,
        "available {mnt_avail} of {mnt_size}"
    );
    assert_eq!(mnt.f_namemax, 255, "f_namemax");
    // df agrees.
    let df = sh(&format!("df -B1 --output=size {}", q(&m.mnt)));
    let df_size: f64 = df
        .lines()
        .nth(1)
        .expect("df line")
        .trim()
        .parse()
        .expect("df number");
    assert!(
        (df_size - disk_size).abs() <= disk_size * 0.01,
        "df size {df_size} vs {disk_size}"
    );
}

// ----------------------------------------------------------------- readdir

#[test]
fn readdir_of_ten_thousand_entries_lists_each_exactly_once() {
    let mut m = Mount::new("posix-readdir-10k");
    let dir = m.path("many");
    fs::create_dir(&dir).unwrap();
    let expected: BTreeSet<String> = (0..10_000)
        .map(|i| format!("entry-{i:05}-{}", "x".repeat(i % 40)))
        .collect();
    for name in &expected {
        File::create(dir.join(name)).unwrap();
    }
    assert_eq!(names(&dir), expected);
    // `ls -f` includes . and .. once each.
    let ls = sh(&format!("ls -f {}", q(&dir)));
    let mut lines: Vec<&str> = ls.lines().collect();
    assert_eq!(lines.len(), 10_002, "ls -f line count");
    lines.sort();
    lines.dedup();
    assert_eq!(lines.len(), 10_002, "ls -f listed a name twice");
    m.remount();
    assert_eq!(names(&dir), expected);
}

#[test]
fn readdir_offsets_stay_stable_while_entries_are_added_and_removed() {
    let m = Mount::new("posix-readdir-stable");
    let dir = m.path("d");
    fs::create_dir(&dir).unwrap();
    let stable: BTreeSet<String> = (0..3000).map(|i| format!("stable-{i:04}")).collect();
    let doomed: Vec<String> = (0..1500).map(|i| format!("doomed-{i:04}")).collect();
    // Interleave creation so doomed entries sit among the stable ones.
    for i in 0..3000 {
        fs::write(dir.join(format!("stable-{i:04}")), b"").unwrap();
        if i % 2 == 0 {
            fs::write(dir.join(&doomed[i / 2]), b"").unwrap();
        }
    }

    let c = cpath(&dir);
    // SAFETY: valid path; the DIR is closed below.
    let d = unsafe { libc::opendir(c.as_ptr()) };
    assert!(!d.is_null(), "opendir: {}", io::Error::last_os_error());
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    let read_one = || -> Option<String> {
        // SAFETY: errno is thread-local; `d` is an open DIR; the entry is
        // valid until the next readdir, and we copy its name at once.
        unsafe {
            *libc::__errno_location() = 0;
            let e = libc::readdir(d);
            if e.is_null() {
                let err = *libc::__errno_location();
                assert_eq!(
                    err,
                    0,
                    "readdir failed: {}",
                    io::Error::from_raw_os_error(err)
                );
                return None;
            }
            Some(
                CStr::from_ptr((*e).d_name.as_ptr())
                    .to_string_lossy()
                    .into_owned(),
            )
        }
    };
    let total = 3000 + 1500 + 2;
    for _ in 0..total / 2 {
        let name = read_one().expect("directory ended early");
        *seen.entry(name).or_default() += 1;
    }
    // Change the directory under the open stream.
    for name in &doomed {
        fs::remove_file(dir.join(name)).unwrap();
    }
    for i in 0..1500 {
        fs::write(dir.join(format!("added-{i:04}")), b"").unwrap();
    }
    while let Some(name) = read_one() {
        *seen.entry(name).or_default() += 1;
    }
    // SAFETY: `d` is open and not used afterwards.
    unsafe { libc::closedir(d) };

    let twice: Vec<_> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, n)| format!("{k}x{n}"))
        .collect();
    assert!(
        twice.is_empty(),
        "entries returned more than once: {twice:?}"
    );
    let missing: Vec<_> = stable.iter().filter(|s| !seen.contains_key(*s)).collect();
    assert!(
        missing.is_empty(),
        "{} stable entries never returned, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(seen.get("."), Some(&1));
    assert_eq!(seen.get(".."), Some(&1));
    for name in seen.keys() {
        assert!(
            name == "."
                || name == ".."
                || name.starts_with("stable-")
                || name.starts_with("doomed-")
                || name.starts_with("added-"),
            "unexpected name {name:?}"
        );
    }
    // A fresh listing shows exactly the new state.
    let now = names(&dir);
    assert_eq!(now.len(), 4500);
    assert!(now
        .iter()
        .all(|n| n.starts_with("stable-") || n.starts_with("added-")));
}

// ----------------------------------------------------- long names and paths

#[test]
fn names_of_255_bytes_work_and_256_bytes_give_enametoolong() {
    let mut m = Mount::new("posix-namemax");
    let n255 = "a".repeat(250) + "-255b";
    let n256 = "b".repeat(251) + "-256b";
    assert_eq!((n255.len(), n256.len()), (255, 256));
    // Multi-byte characters: 255 bytes is the limit, not 255 characters.
    let utf = "é".repeat(127) + "z"; // 255 bytes
    assert_eq!(utf.len(), 255);

    fs::write(m.path(&n255), b"long name").unwrap();
    fs::create_dir(m.path(&("d".repeat(255)))).unwrap();
    fs::write(m.path(&utf), b"utf").unwrap();
    assert_eq!(fs::read(m.path(&n255)).unwrap(), b"long name");

    expect_errno(
        File::create(m.path(&n256)),
        libc::ENAMETOOLONG,
        "create with a 256-byte name",
    );
    expect_errno(
        fs::metadata(m.path(&n256)),
        libc::ENAMETOOLONG,
        "lookup of a 256-byte name",
    );
    expect_errno(
        fs::create_dir(m.path(&n256)),
        libc::ENAMETOOLONG,
        "mkdir with a 256-byte name",
    );
    expect_errno(
        std::os::unix::fs::symlink("x", m.path(&n256)),
        libc::ENAMETOOLONG,
        "symlink with a 256-byte name",
    );
    expect_errno(
        fs::rename(m.path(&n255), m.path(&n256)),
        libc::ENAMETOOLONG,
        "rename to a 256-byte name",
    );
    expect_errno(
        fs::hard_link(m.path(&n255), m.path(&n256)),
        libc::ENAMETOOLONG,
        "link to a 256-byte name",
    );
    let utf256 = utf.clone() + "z";
    expect_errno(
        fs::write(m.path(&utf256), b"x"),
        libc::ENAMETOOLONG,
        "create with 256 bytes of UTF-8",
    );

    m.remount();
    assert_eq!(
        names(&m.mnt),
        [n255.clone(), "d".repeat(255), utf.clone()]
            .into_iter()
            .collect()
    );
    assert_eq!(fs::read(m.path(&n255)).unwrap(), b"long name");
    assert_eq!(fs::read(m.path(&utf)).unwrap(), b"utf");
    // Renames between 255-byte names.
    let other = "c".repeat(255);
    fs::rename(m.path(&n255), m.path(&other)).unwrap();
    assert_eq!(fs::read(m.path(&other)).unwrap(), b"long name");
}

#[test]
fn a_path_close_to_path_max_can_be_created_and_read() {
    let mut m = Mount::new("posix-pathmax");
    let leaf = "leaf.txt";
    let mut path = m.mnt.clone();
    let mut level = 0;
    // Nested directories with long names until the file's path is ~4000 bytes.
    loop {
        let used = path.as_os_str().len() + 1 + leaf.len();
        let room = 4000usize.saturating_sub(used + 1);
        if room < 10 {
            break;
        }
        let len = room.min(250);
        let comp = format!("{level:02}{}", "p".repeat(len - 2));
        path.push(comp);
        fs::create_dir(&path).unwrap_or_else(|e| {
            panic!(
                "mkdir at depth {level} ({} bytes): {e}",
                path.as_os_str().len()
            )
        });
        level += 1;
    }
    let file = path.join(leaf);
    let len = file.as_os_str().len();
    assert!((3950..4096).contains(&len), "path is {len} bytes");
    let data = noise(100_000, 101);
    fs::write(&file, &data).unwrap();
    assert_bytes(&fs::read(&file).unwrap(), &data, "deep file");
    assert_eq!(names(&path), set(&[leaf]));
    // One more long component pushes it over PATH_MAX.
    let too_long = path.join("x".repeat(200));
    expect_errno(
        fs::write(&too_long, b"x"),
        libc::ENAMETOOLONG,
        "path over PATH_MAX",
    );
    // The shell tools manage too.
    let found = sh(&format!("find {} -name {leaf} | wc -l", q(&m.mnt)));
    assert_eq!(found.trim(), "1");

    m.remount();
    assert_bytes(&fs::read(&file).unwrap(), &data, "deep file after remount");
    assert_eq!(fs::metadata(&file).unwrap().len(), 100_000);
}
