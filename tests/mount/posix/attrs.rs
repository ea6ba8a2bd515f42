//! Attributes through the real mount: chmod/chown, utimensat (explicit,
//! UTIME_NOW, UTIME_OMIT), touch -d, times and sizes set or read while a
//! close commits, and user xattrs.

#![allow(unsafe_code)]

use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{assert_bytes, cpath, cvt, expect_errno, q, read_at, set};
use crate::common::{hash_file, noise, sh, Mount};

// ---------------------------------------------------------------- helpers

fn cstr(s: &str) -> CString {
    CString::new(s).expect("string without NUL")
}

fn timespec(sec: i64, nsec: i64) -> libc::timespec {
    // SAFETY: timespec is plain old data; zero is a valid value.
    let mut t: libc::timespec = unsafe { std::mem::zeroed() };
    t.tv_sec = sec as libc::time_t;
    t.tv_nsec = nsec as _;
    t
}

fn utimens(p: &Path, atime: libc::timespec, mtime: libc::timespec) -> io::Result<()> {
    let c = cpath(p);
    let times = [atime, mtime];
    // SAFETY: valid path and a two-element array.
    cvt(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) })
}

fn setx(p: &Path, name: &str, value: &[u8], flags: libc::c_int) -> io::Result<()> {
    let (c, n) = (cpath(p), cstr(name));
    // SAFETY: valid path, name and value buffer.
    cvt(unsafe {
        libc::setxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
}

fn getx(p: &Path, name: &str) -> io::Result<Vec<u8>> {
    let (c, n) = (cpath(p), cstr(name));
    // SAFETY: a size query with a null buffer.
    let size = unsafe { libc::getxattr(c.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
    if size < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; size as usize + 16];
    // SAFETY: the buffer is buf.len() bytes.
    let got = unsafe { libc::getxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(got as usize);
    Ok(buf)
}

/// getxattr into a buffer of exactly `len` bytes.
fn getx_sized(p: &Path, name: &str, len: usize) -> io::Result<Vec<u8>> {
    let (c, n) = (cpath(p), cstr(name));
    let mut buf = vec![0u8; len.max(1)];
    // SAFETY: the buffer holds at least `len` bytes.
    let got = unsafe { libc::getxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), len) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(got as usize);
    Ok(buf)
}

fn listx(p: &Path) -> io::Result<BTreeSet<String>> {
    let c = cpath(p);
    // SAFETY: a size query with a null buffer.
    let size = unsafe { libc::listxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    if size < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; size as usize + 16];
    // SAFETY: the buffer is buf.len() bytes.
    let got = unsafe { libc::listxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(got as usize);
    assert!(
        buf.is_empty() || buf.last() == Some(&0),
        "xattr list not NUL-terminated: {buf:?}"
    );
    Ok(buf
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect())
}

fn removex(p: &Path, name: &str) -> io::Result<()> {
    let (c, n) = (cpath(p), cstr(name));
    // SAFETY: valid path and name.
    cvt(unsafe { libc::removexattr(c.as_ptr(), n.as_ptr()) })
}

fn mtime_of(p: &Path) -> (i64, i64) {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
    (m.mtime(), m.mtime_nsec())
}

fn atime_of(p: &Path) -> (i64, i64) {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
    (m.atime(), m.atime_nsec())
}

/// statx with AT_STATX_FORCE_SYNC: size and mtime straight from the
/// filesystem, never from the kernel's attribute cache.
fn statx_sync(p: &Path) -> (u64, i64, u32) {
    let c = cpath(p);
    // SAFETY: statx is plain old data, filled by the call.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and a buffer of the right type.
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_STATX_FORCE_SYNC,
            libc::STATX_SIZE | libc::STATX_MTIME,
            &mut st,
        )
    };
    cvt(rc).unwrap_or_else(|e| panic!("statx {}: {e}", p.display()));
    (st.stx_size, st.stx_mtime.tv_sec, st.stx_mtime.tv_nsec)
}

// ---------------------------------------------------- attributes and times

#[test]
fn chmod_and_chown_are_kept_after_remount() {
    let mut m = Mount::new("posix-chmod-chown");
    fs::write(m.path("f"), b"data").unwrap();
    fs::create_dir(m.path("d")).unwrap();
    std::os::unix::fs::symlink("f", m.path("l")).unwrap();

    fs::set_permissions(m.path("f"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::set_permissions(m.path("d"), fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::chown(m.path("f"), Some(1234), Some(5678)).unwrap();
    std::os::unix::fs::chown(m.path("d"), Some(1234), Some(5678)).unwrap();
    std::os::unix::fs::lchown(m.path("l"), Some(4321), Some(8765)).unwrap();
    // A setgid directory passes its group on, and setgid on to subdirs.
    fs::create_dir(m.path("g")).unwrap();
    std::os::unix::fs::chown(m.path("g"), None, Some(5678)).unwrap();
    fs::set_permissions(m.path("g"), fs::Permissions::from_mode(0o2775)).unwrap();
    fs::write(m.path("g/inherits"), b"x").unwrap();
    fs::create_dir(m.path("g/sub")).unwrap();
    fs::write(m.path("exec"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(m.path("exec"), fs::Permissions::from_mode(0o4755)).unwrap();

    let check = |m: &Mount| {
        let md = |n: &str| fs::symlink_metadata(m.path(n)).unwrap();
        assert_eq!(md("f").mode() & 0o7777, 0o640);
        assert_eq!((md("f").uid(), md("f").gid()), (1234, 5678));
        assert_eq!(md("d").mode() & 0o7777, 0o750);
        assert_eq!((md("d").uid(), md("d").gid()), (1234, 5678));
        assert_eq!(
            (md("l").uid(), md("l").gid()),
            (4321, 8765),
            "lchown of a symlink"
        );
        assert_eq!(
            (md("f").uid(), md("f").gid()),
            (1234, 5678),
            "lchown must not follow the link"
        );
        assert_eq!(md("g").mode() & 0o7777, 0o2775);
        assert_eq!(
            md("g/inherits").gid(),
            5678,
            "file in a setgid dir gets the dir's group"
        );
        assert_eq!(
            md("g/sub").gid(),
            5678,
            "subdir in a setgid dir gets the dir's group"
        );
        assert_eq!(
            md("g/sub").mode() & 0o2000,
            0o2000,
            "subdir of a setgid dir is setgid"
        );
        assert_eq!(md("exec").mode() & 0o7777, 0o4755);
        assert_eq!(fs::read(m.path("f")).unwrap(), b"data");
    };
    check(&m);
    m.remount();
    check(&m);
}

#[test]
fn utimensat_sets_explicit_times_and_honours_utime_now_and_utime_omit() {
    let mut m = Mount::new("posix-utimens");
    let p = m.path("f");
    fs::write(&p, b"times").unwrap();

    utimens(
        &p,
        timespec(1_000_000_000, 123_456_789),
        timespec(1_500_000_000, 987_654_321),
    )
    .unwrap();
    assert_eq!(atime_of(&p), (1_000_000_000, 123_456_789));
    assert_eq!(mtime_of(&p), (1_500_000_000, 987_654_321));

    // UTIME_OMIT leaves that time alone.
    utimens(
        &p,
        timespec(0, libc::UTIME_OMIT),
        timespec(1_600_000_000, 5),
    )
    .unwrap();
    assert_eq!(
        atime_of(&p),
        (1_000_000_000, 123_456_789),
        "atime with UTIME_OMIT"
    );
    assert_eq!(mtime_of(&p), (1_600_000_000, 5));

    // UTIME_NOW sets the current time.
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    utimens(
        &p,
        timespec(0, libc::UTIME_NOW),
        timespec(0, libc::UTIME_OMIT),
    )
    .unwrap();
    let after = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (asec, _) = atime_of(&p);
    assert!(
        before <= asec && asec <= after + 1,
        "atime {asec} not within [{before}, {after}]"
    );
    assert_eq!(mtime_of(&p), (1_600_000_000, 5), "mtime with UTIME_OMIT");
    let now_atime = atime_of(&p);

    // On a directory and (without following) on a symlink.
    fs::create_dir(m.path("d")).unwrap();
    utimens(&m.path("d"), timespec(111, 0), timespec(222, 333)).unwrap();
    std::os::unix::fs::symlink("f", m.path("l")).unwrap();
    let l = cpath(&m.path("l"));
    let times = [timespec(444, 0), timespec(555, 666)];
    // SAFETY: valid path and a two-element array.
    cvt(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            l.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .unwrap();
    assert_eq!(mtime_of(&m.path("l")), (555, 666));
    assert_eq!(
        mtime_of(&p),
        (1_600_000_000, 5),
        "AT_SYMLINK_NOFOLLOW must not touch the target"
    );
    assert_eq!(mtime_of(&m.path("d")), (222, 333));

    m.remount();
    assert_eq!(mtime_of(&p), (1_600_000_000, 5));
    assert_eq!(atime_of(&p), now_atime);
    assert_eq!(mtime_of(&m.path("d")), (222, 333));
    assert_eq!(atime_of(&m.path("d")), (111, 0));
    assert_eq!(mtime_of(&m.path("l")), (555, 666));
}

#[test]
fn touch_d_sets_both_times_and_creates_missing_files() {
    let mut m = Mount::new("posix-touch");
    let p = m.path("f");
    let qp = q(&p);
    fs::write(&p, b"x").unwrap();
    sh(&format!("touch -d '2001-02-03 04:05:06 UTC' {qp}"));
    assert_eq!(mtime_of(&p), (981_173_106, 0));
    assert_eq!(atime_of(&p), (981_173_106, 0));
    sh(&format!("touch -m -d '@1234567890.25' {qp}"));
    assert_eq!(mtime_of(&p), (1_234_567_890, 250_000_000));
    assert_eq!(atime_of(&p), (981_173_106, 0), "touch -m must leave atime");
    let created = m.path("created");
    sh(&format!("touch {}", q(&created)));
    assert_eq!(fs::metadata(&created).unwrap().len(), 0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (mtime_of(&created).0 - now).abs() <= 2,
        "new file's mtime is now"
    );
    assert_eq!(fs::read(&p).unwrap(), b"x", "touch must not change content");
    m.remount();
    assert_eq!(mtime_of(&p), (1_234_567_890, 250_000_000));
    assert_eq!(atime_of(&p), (981_173_106, 0));
    assert!(created.exists());
}

#[test]
fn mtime_set_with_futimens_before_close_is_kept() {
    let mut m = Mount::new("posix-futimens");
    let t = UNIX_EPOCH + Duration::new(1_234_567_890, 500);

    // New file, streamed: write, set mtime, close (cp -p / tar).
    let p = m.path("streamed");
    let data = noise(3_000_000, 81);
    {
        let mut f = File::create(&p).unwrap();
        f.write_all(&data).unwrap();
        f.set_modified(t).unwrap();
        assert_eq!(
            (
                f.metadata().unwrap().mtime(),
                f.metadata().unwrap().mtime_nsec()
            ),
            (1_234_567_890, 500)
        );
    }
    assert_eq!(mtime_of(&p), (1_234_567_890, 500), "mtime after close");
    assert_bytes(&fs::read(&p).unwrap(), &data, "content");

    // Existing file, written in the middle (staged), then futimens explicitly.
    let s = m.path("staged");
    fs::write(&s, noise(1_000_000, 82)).unwrap();
    {
        let f = OpenOptions::new().write(true).open(&s).unwrap();
        f.write_all_at(b"patch", 400_000).unwrap();
        let times = [timespec(0, libc::UTIME_OMIT), timespec(1_111_111_111, 42)];
        // SAFETY: a valid fd and a two-element array.
        cvt(unsafe { libc::futimens(f.as_raw_fd(), times.as_ptr()) }).unwrap();
    }
    assert_eq!(mtime_of(&s), (1_111_111_111, 42));
    assert_eq!(read_at(&s, 400_000, 5), b"patch");

    // A created file with no data: set mtime, close.
    let e = m.path("empty");
    {
        let f = File::create(&e).unwrap();
        f.set_modified(t).unwrap();
    }
    assert_eq!(mtime_of(&e), (1_234_567_890, 500));

    // The real tool.
    let src = m.root.join("src-file");
    fs::write(&src, noise(500_000, 83)).unwrap();
    sh(&format!(
        "touch -d '2019-05-06 07:08:09.987654321' {}",
        q(&src)
    ));
    let dst = m.path("copied");
    sh(&format!("cp -p {} {}", q(&src), q(&dst)));
    assert_eq!(mtime_of(&dst), mtime_of(&src), "cp -p keeps mtime");
    assert_eq!(hash_file(&dst), hash_file(&src));

    m.remount();
    assert_eq!(mtime_of(&p), (1_234_567_890, 500));
    assert_eq!(mtime_of(&s), (1_111_111_111, 42));
    assert_eq!(mtime_of(&e), (1_234_567_890, 500));
    assert_eq!(mtime_of(&dst), mtime_of(&src));
    assert_bytes(&fs::read(&p).unwrap(), &data, "content after remount");
}

#[test]
fn stat_while_a_close_commits_reports_the_written_size() {
    let mut m = Mount::new("posix-commit-stat");
    let p = m.path("f");
    fs::write(&p, noise(100 << 20, 161)).unwrap();
    let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    // 90 MB over the middle and past the end: a commit that takes a while.
    let patch = noise(90 << 20, 162);
    f.write_all_at(&patch, 50 << 20).unwrap();
    let want = 140u64 << 20;
    assert_eq!(statx_sync(&p).0, want, "size before the commit");
    // close() of a dup commits (this fd stays open); stat from here meanwhile.
    let dup = f.try_clone().unwrap();
    let closer = std::thread::spawn(move || drop(dup));
    let mut sizes = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !closer.is_finished() {
        sizes.insert(statx_sync(&p).0);
        assert!(Instant::now() < deadline, "close of the dup did not return");
    }
    closer.join().unwrap();
    sizes.insert(statx_sync(&p).0);
    // The writes had returned: no stat may show less, also while the commit runs.
    assert_eq!(
        sizes,
        [want].into_iter().collect(),
        "sizes seen while close() committed"
    );
    assert_eq!(f.metadata().unwrap().len(), want, "fstat after the commit");
    assert_eq!(
        fs::metadata(&p).unwrap().len(),
        want,
        "stat after the commit"
    );
    let mut tail = vec![0u8; 4096];
    f.read_exact_at(&mut tail, want - 4096).unwrap();
    assert_bytes(
        &tail,
        &patch[patch.len() - 4096..],
        "tail through the open fd",
    );
    drop(f);
    m.remount();
    assert_eq!(fs::metadata(&p).unwrap().len(), want, "size after remount");
    assert_bytes(
        &read_at(&p, want - 4096, 4096),
        &patch[patch.len() - 4096..],
        "tail after remount",
    );
}

#[test]
fn utimensat_while_a_close_commits_is_kept() {
    let mut m = Mount::new("posix-commit-utimens");
    let p = m.path("f");
    fs::write(&p, noise(100 << 20, 171)).unwrap();
    let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    f.write_all_at(&noise(90 << 20, 172), 50 << 20).unwrap();
    // close() of a dup commits the writes (a few hundred ms for 90 MB) ...
    let dup = f.try_clone().unwrap();
    let closer = std::thread::spawn(move || drop(dup));
    // ... and mtime is set meanwhile. The pause only lets the close reach the
    // daemon first; if it does not, the commit comes after and this passes.
    std::thread::sleep(Duration::from_millis(50));
    let times = [timespec(0, libc::UTIME_OMIT), timespec(1_234_567_890, 500)];
    // SAFETY: a valid fd and a two-element array.
    cvt(unsafe { libc::futimens(f.as_raw_fd(), times.as_ptr()) }).unwrap();
    closer.join().unwrap();
    // Set after every write: nothing may replace it.
    let (_, sec, nsec) = statx_sync(&p);
    assert_eq!((sec, nsec), (1_234_567_890, 500), "mtime after the commit");
    drop(f);
    assert_eq!(mtime_of(&p), (1_234_567_890, 500), "mtime after close");
    m.remount();
    assert_eq!(mtime_of(&p), (1_234_567_890, 500), "mtime after remount");
    assert_eq!(fs::metadata(&p).unwrap().len(), 140 << 20);
}

// ------------------------------------------------------------------ xattrs

#[test]
fn user_xattrs_set_get_list_remove_with_create_and_replace_flags() {
    let mut m = Mount::new("posix-xattr");
    let f = m.path("f");
    fs::write(&f, b"content").unwrap();
    fs::create_dir(m.path("d")).unwrap();
    let big = noise(4000, 91);

    setx(&f, "user.one", b"1", 0).unwrap();
    setx(&f, "user.binary", &big, 0).unwrap();
    setx(&f, "user.empty", b"", 0).unwrap();
    setx(&m.path("d"), "user.ondir", b"dir value", 0).unwrap();
    assert_eq!(getx(&f, "user.one").unwrap(), b"1");
    assert_eq!(getx(&f, "user.binary").unwrap(), big);
    assert_eq!(getx(&f, "user.empty").unwrap(), b"");
    assert_eq!(
        listx(&f).unwrap(),
        set(&["user.binary", "user.empty", "user.one"])
    );
    expect_errno(
        getx_sized(&f, "user.binary", 100),
        libc::ERANGE,
        "getxattr into a too small buffer",
    );

    // XATTR_CREATE on an existing name, XATTR_REPLACE on a missing one.
    expect_errno(
        setx(&f, "user.one", b"again", libc::XATTR_CREATE),
        libc::EEXIST,
        "XATTR_CREATE existing",
    );
    assert_eq!(getx(&f, "user.one").unwrap(), b"1");
    expect_errno(
        setx(&f, "user.missing", b"v", libc::XATTR_REPLACE),
        libc::ENODATA,
        "XATTR_REPLACE missing",
    );
    expect_errno(
        getx(&f, "user.missing"),
        libc::ENODATA,
        "getxattr of the name a failed replace used",
    );
    setx(&f, "user.one", b"one, replaced", libc::XATTR_REPLACE).unwrap();
    setx(&f, "user.two", b"2", libc::XATTR_CREATE).unwrap();
    assert_eq!(getx(&f, "user.one").unwrap(), b"one, replaced");

    removex(&f, "user.empty").unwrap();
    expect_errno(
        getx(&f, "user.empty"),
        libc::ENODATA,
        "getxattr after remove",
    );
    expect_errno(removex(&f, "user.empty"), libc::ENODATA, "remove twice");
    assert_eq!(
        listx(&f).unwrap(),
        set(&["user.binary", "user.one", "user.two"])
    );

    // The command-line tools.
    let qf = q(&f);
    sh(&format!("setfattr -n user.tool -v hello {qf}"));
    assert_eq!(
        sh(&format!("getfattr --only-values -n user.tool {qf}")),
        "hello"
    );
    assert_eq!(getx(&f, "user.tool").unwrap(), b"hello");

    // Content is untouched by xattrs; xattrs survive a rename.
    assert_eq!(fs::read(&f).unwrap(), b"content");
    fs::rename(&f, m.path("g")).unwrap();
    let g = m.path("g");
    m.remount();
    assert_eq!(
        listx(&g).unwrap(),
        set(&["user.binary", "user.one", "user.tool", "user.two"])
    );
    assert_eq!(getx(&g, "user.one").unwrap(), b"one, replaced");
    assert_eq!(getx(&g, "user.binary").unwrap(), big);
    assert_eq!(getx(&g, "user.two").unwrap(), b"2");
    assert_eq!(getx(&m.path("d"), "user.ondir").unwrap(), b"dir value");
    expect_errno(
        getx(&g, "user.empty"),
        libc::ENODATA,
        "removed xattr after remount",
    );
}
