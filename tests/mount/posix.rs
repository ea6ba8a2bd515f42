//! POSIX semantics through the real mount: open flags, writes at any
//! offset, truncation, unlink/rename/link rules, special files, attributes
//! and times, permission checks for another user, xattrs, statfs, readdir,
//! long names and paths, mmap, fsync, a file over 4 GiB, and the tools
//! people move checkpoints with (cp, dd, tar, rsync, numpy).

#![allow(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CStr, CString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::{hash_file, noise, sh, Mount};

// ---------------------------------------------------------------- helpers

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("string without NUL")
}

fn cvt(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Asserts that `r` failed with errno `want`.
#[track_caller]
fn expect_errno<T: std::fmt::Debug>(r: io::Result<T>, want: i32, what: &str) {
    let wanted = io::Error::from_raw_os_error(want);
    match r {
        Ok(v) => panic!("{what}: expected `{wanted}`, got Ok({v:?})"),
        Err(e) => assert_eq!(
            e.raw_os_error(),
            Some(want),
            "{what}: expected `{wanted}`, got `{e}`"
        ),
    }
}

fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> io::Result<()> {
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

fn truncate_path(p: &Path, size: i64) -> io::Result<()> {
    let c = cpath(p);
    // SAFETY: valid path.
    cvt(unsafe { libc::truncate(c.as_ptr(), size) })
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

fn statvfs(p: &Path) -> libc::statvfs {
    let c = cpath(p);
    // SAFETY: statvfs is plain old data, filled by the call.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and a buffer of the right type.
    cvt(unsafe { libc::statvfs(c.as_ptr(), &mut s) })
        .unwrap_or_else(|e| panic!("statvfs {}: {e}", p.display()));
    s
}

/// Names in a directory (without . and ..), asserting none is listed twice.
fn names(dir: &Path) -> BTreeSet<String> {
    let mut all: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .into_string()
                .expect("utf-8 name")
        })
        .collect();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "a name was listed twice in {}", dir.display());
    all.into_iter().collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn read_at(p: &Path, offset: u64, len: usize) -> Vec<u8> {
    let f = File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, offset)
        .unwrap_or_else(|e| panic!("pread {} at {offset}: {e}", p.display()));
    buf
}

/// Panics with the first differing offset instead of dumping megabytes.
#[track_caller]
fn assert_bytes(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let first = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: content differs (got {} bytes, want {}; first difference at {first:?})",
            got.len(),
            want.len()
        );
    }
}

fn write_model(model: &mut Vec<u8>, offset: usize, data: &[u8]) {
    if model.len() < offset + data.len() {
        model.resize(offset + data.len(), 0);
    }
    model[offset..offset + data.len()].copy_from_slice(data);
}

/// A deterministic stream of pseudo-random numbers.
fn numbers(count: usize, seed: u64) -> Vec<u64> {
    noise(count * 8, seed)
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect()
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

/// This process's umask (from /proc; reading it with umask(2) would change it).
fn umask() -> u32 {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .expect("Umask line");
    u32::from_str_radix(line.trim(), 8).expect("octal umask")
}

fn q(p: &Path) -> String {
    let s = p.to_str().expect("utf-8 path");
    assert!(!s.contains('\''), "path with a quote: {s}");
    format!("'{s}'")
}

fn mtime_of(p: &Path) -> (i64, i64) {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
    (m.mtime(), m.mtime_nsec())
}

fn atime_of(p: &Path) -> (i64, i64) {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
    (m.atime(), m.atime_nsec())
}

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

// ------------------------------------------------------- open, read, write

#[test]
fn open_flags_creat_excl_trunc_and_append_behave_as_posix() {
    let mut m = Mount::new("posix-openflags");
    let p = m.path("f");

    // O_CREAT on a missing name creates it.
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&p)
            .unwrap();
        f.write_all(b"hello world").unwrap();
    }
    assert_eq!(fs::read(&p).unwrap(), b"hello world");

    // O_CREAT on an existing file opens it and keeps its content.
    drop(
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&p)
            .unwrap(),
    );
    assert_eq!(fs::read(&p).unwrap(), b"hello world");

    // O_CREAT|O_EXCL on an existing file: EEXIST, content untouched.
    expect_errno(
        OpenOptions::new().write(true).create_new(true).open(&p),
        libc::EEXIST,
        "O_EXCL on existing file",
    );
    assert_eq!(fs::read(&p).unwrap(), b"hello world");
    // ... and on a new name it creates.
    let mut fresh = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(m.path("fresh"))
        .unwrap();
    fresh.write_all(b"new").unwrap();
    drop(fresh);

    // O_APPEND: every write lands at the end, whatever the file offset.
    {
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.write_all(b", appended").unwrap();
        f.seek(SeekFrom::Start(3)).unwrap();
        f.write_all(b"!").unwrap();
    }
    assert_eq!(fs::read(&p).unwrap(), b"hello world, appended!");

    // O_TRUNC empties at open time, before any write.
    {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        assert_eq!(f.metadata().unwrap().len(), 0, "size right after O_TRUNC");
        let mut rest = Vec::new();
        f.read_to_end(&mut rest).unwrap();
        assert!(
            rest.is_empty(),
            "read after O_TRUNC returned {} bytes",
            rest.len()
        );
        f.write_all(b"replaced").unwrap();
    }
    assert_eq!(fs::read(&p).unwrap(), b"replaced");

    // O_TRUNC and close without writing leaves an empty file.
    fs::write(m.path("g"), noise(100_000, 3)).unwrap();
    drop(
        OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(m.path("g"))
            .unwrap(),
    );
    assert_eq!(fs::metadata(m.path("g")).unwrap().len(), 0);

    // A created file that is closed without a write exists and is empty.
    drop(File::create(m.path("empty")).unwrap());
    assert_eq!(fs::metadata(m.path("empty")).unwrap().len(), 0);

    // Reading a file opened read-only, and writing through it fails.
    let mut ro = File::open(&p).unwrap();
    let mut s = String::new();
    ro.read_to_string(&mut s).unwrap();
    assert_eq!(s, "replaced");
    expect_errno(ro.write(b"x"), libc::EBADF, "write to an O_RDONLY fd");
    drop(ro);

    m.remount();
    assert_eq!(fs::read(&p).unwrap(), b"replaced");
    assert_eq!(fs::read(m.path("fresh")).unwrap(), b"new");
    assert_eq!(fs::metadata(m.path("g")).unwrap().len(), 0);
    assert_eq!(fs::metadata(m.path("empty")).unwrap().len(), 0);
    assert_eq!(names(&m.mnt), set(&["empty", "f", "fresh", "g"]));
}

#[test]
fn sequential_then_random_offset_writes_read_back_exactly() {
    let mut m = Mount::new("posix-randwrite");
    let p = m.path("data.bin");
    let mut model = Vec::new();

    // Sequential writes of uneven sizes.
    {
        let src = noise(3_000_000, 2);
        let mut f = File::create(&p).unwrap();
        let sizes = [1usize, 7, 4096, 65_536, 100_003, 1 << 20, 333];
        let mut at = 0;
        let mut i = 0;
        while at < src.len() {
            let n = sizes[i % sizes.len()].min(src.len() - at);
            f.write_all(&src[at..at + n]).unwrap();
            at += n;
            i += 1;
        }
        model.extend_from_slice(&src);
    }
    assert_bytes(&fs::read(&p).unwrap(), &model, "after sequential writes");

    // Random overwrites into the existing file, some extending it.
    {
        let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
        let r = numbers(600, 7);
        for i in 0..300 {
            let len = 1 + (r[2 * i] % 20_000) as usize;
            let off = (r[2 * i + 1] % (model.len() as u64 + 10_000)) as usize;
            let data = noise(len, 1000 + i as u64);
            f.write_all_at(&data, off as u64).unwrap();
            write_model(&mut model, off, &data);
            if i % 50 == 49 {
                // Reads through the writing handle see the unsaved writes.
                let mut buf = vec![0u8; model.len()];
                f.read_exact_at(&mut buf, 0).unwrap();
                assert_bytes(
                    &buf,
                    &model,
                    &format!("read through the open fd after {} writes", i + 1),
                );
            }
        }
        assert_eq!(f.metadata().unwrap().len(), model.len() as u64);
    }
    assert_bytes(&fs::read(&p).unwrap(), &model, "after random writes");
    m.remount();
    assert_bytes(&fs::read(&p).unwrap(), &model, "after remount");
}

#[test]
fn a_write_past_eof_leaves_a_hole_that_reads_as_zeros() {
    let mut m = Mount::new("posix-hole");
    // A new file: a little data, then a write 10 MB further.
    let p = m.path("sparse");
    {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        f.write_all(b"head").unwrap();
        f.seek(SeekFrom::Start(10_000_000)).unwrap();
        f.write_all(b"tail").unwrap();
        // Through the writing fd, before close.
        let mut mid = vec![0xAAu8; 100_000];
        f.read_exact_at(&mut mid, 5_000_000).unwrap();
        assert!(
            mid.iter().all(|b| *b == 0),
            "hole read through the open fd is not zeros"
        );
    }
    let check = |p: &Path| {
        let all = fs::read(p).unwrap();
        assert_eq!(all.len(), 10_000_004);
        assert_eq!(&all[..4], b"head");
        assert_eq!(&all[10_000_000..], b"tail");
        assert!(
            all[4..10_000_000].iter().all(|b| *b == 0),
            "hole is not zeros"
        );
    };
    check(&p);

    // An existing file: a small write 4000 bytes past its end.
    let q_ = m.path("extended");
    let base = noise(50_000, 4);
    fs::write(&q_, &base).unwrap();
    {
        let f = OpenOptions::new().write(true).open(&q_).unwrap();
        f.write_all_at(b"XYZ", 54_000).unwrap();
    }
    let mut want = base.clone();
    write_model(&mut want, 54_000, b"XYZ");
    assert_bytes(
        &fs::read(&q_).unwrap(),
        &want,
        "existing file extended past EOF",
    );

    m.remount();
    check(&p);
    assert_bytes(
        &fs::read(&q_).unwrap(),
        &want,
        "extended file after remount",
    );
}

#[test]
fn pwrite_into_the_middle_of_a_multi_mb_file_reads_back_exact_bytes() {
    let mut m = Mount::new("posix-pwrite-mid");
    let p = m.path("big.bin");
    let mut model = noise(8_000_000, 11);
    fs::write(&p, &model).unwrap();
    let patch = noise(123_457, 12);
    let off = 3_333_333;
    {
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        f.write_all_at(&patch, off as u64).unwrap();
        f.write_all_at(b"Z", 7_999_999).unwrap();
    }
    write_model(&mut model, off, &patch);
    model[7_999_999] = b'Z';
    assert_bytes(&read_at(&p, off as u64, patch.len()), &patch, "the patch");
    assert_bytes(
        &read_at(&p, off as u64 - 10, 10),
        &model[off - 10..off],
        "before the patch",
    );
    assert_bytes(
        &read_at(&p, (off + patch.len()) as u64, 10),
        &model[off + patch.len()..off + patch.len() + 10],
        "after the patch",
    );
    assert_bytes(&fs::read(&p).unwrap(), &model, "whole file");
    m.remount();
    assert_eq!(fs::metadata(&p).unwrap().len(), 8_000_000);
    assert_bytes(&fs::read(&p).unwrap(), &model, "whole file after remount");
}

// ---------------------------------------------------------------- truncate

#[test]
fn ftruncate_down_then_up_zero_fills_what_was_cut() {
    let mut m = Mount::new("posix-ftruncate");
    let p = m.path("t.bin");
    let data = noise(1_000_000, 21);
    fs::write(&p, &data).unwrap();
    {
        let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
        f.set_len(300_000).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 300_000);
        f.set_len(900_000).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 900_000);
        let mut buf = vec![0xFFu8; 900_000];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_bytes(&buf[..300_000], &data[..300_000], "kept prefix (open fd)");
        assert!(
            buf[300_000..].iter().all(|b| *b == 0),
            "grown region not zeros (open fd)"
        );
        // Grow by writing beyond a truncated end, then cut in the middle of that write.
        f.write_all_at(&[7u8; 1000], 950_000).unwrap();
        f.set_len(950_500).unwrap();
    }
    let mut want = data[..300_000].to_vec();
    want.resize(950_000, 0);
    want.extend_from_slice(&[7u8; 500]);
    assert_bytes(&fs::read(&p).unwrap(), &want, "after close");

    // A new file grown with ftruncate only, then shrunk.
    {
        let f = File::create(m.path("grown")).unwrap();
        f.set_len(5_000_000).unwrap();
        f.set_len(4_000_000).unwrap();
    }
    let grown = fs::read(m.path("grown")).unwrap();
    assert_eq!(grown.len(), 4_000_000);
    assert!(grown.iter().all(|b| *b == 0));

    m.remount();
    assert_bytes(&fs::read(&p).unwrap(), &want, "after remount");
    let grown = fs::read(m.path("grown")).unwrap();
    assert_eq!(grown.len(), 4_000_000);
    assert!(grown.iter().all(|b| *b == 0));
}

#[test]
fn truncate_by_path_on_a_closed_file_shrinks_and_grows_with_zeros() {
    let mut m = Mount::new("posix-truncate-path");
    let p = m.path("t.bin");
    let data = noise(2_000_000, 22);
    fs::write(&p, &data).unwrap();

    truncate_path(&p, 100_000).unwrap();
    assert_eq!(fs::metadata(&p).unwrap().len(), 100_000);
    assert_bytes(&fs::read(&p).unwrap(), &data[..100_000], "after shrink");

    truncate_path(&p, 500_000).unwrap();
    let got = fs::read(&p).unwrap();
    assert_eq!(got.len(), 500_000);
    assert_bytes(&got[..100_000], &data[..100_000], "prefix after grow");
    assert!(
        got[100_000..].iter().all(|b| *b == 0),
        "old data came back after shrink + grow"
    );

    // To zero and back up.
    fs::write(m.path("z"), noise(300_000, 23)).unwrap();
    truncate_path(&m.path("z"), 0).unwrap();
    assert_eq!(fs::metadata(m.path("z")).unwrap().len(), 0);
    truncate_path(&m.path("z"), 4096).unwrap();
    assert_eq!(fs::read(m.path("z")).unwrap(), vec![0u8; 4096]);

    // Errors: a directory, a missing name, a negative size.
    fs::create_dir(m.path("d")).unwrap();
    expect_errno(
        truncate_path(&m.path("d"), 0),
        libc::EISDIR,
        "truncate a directory",
    );
    expect_errno(
        truncate_path(&m.path("missing"), 0),
        libc::ENOENT,
        "truncate a missing file",
    );
    expect_errno(
        truncate_path(&p, -1),
        libc::EINVAL,
        "truncate to a negative size",
    );

    m.remount();
    let got = fs::read(&p).unwrap();
    assert_eq!(got.len(), 500_000);
    assert_bytes(&got[..100_000], &data[..100_000], "prefix after remount");
    assert!(
        got[100_000..].iter().all(|b| *b == 0),
        "zeros after remount"
    );
    assert_eq!(fs::read(m.path("z")).unwrap(), vec![0u8; 4096]);
}

// ------------------------------------------------------------------ unlink

#[test]
fn an_unlinked_open_file_stays_usable_until_close_and_is_gone_after_remount() {
    let mut m = Mount::new("posix-unlink-open");
    let p = m.path("victim");
    let data = noise(2_000_000, 31);
    fs::write(&p, &data).unwrap();
    let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    let reader = File::open(&p).unwrap();
    fs::remove_file(&p).unwrap();

    expect_errno(
        fs::symlink_metadata(&p),
        libc::ENOENT,
        "stat of the unlinked name",
    );
    assert!(
        names(&m.mnt).is_empty(),
        "name still listed: {:?}",
        names(&m.mnt)
    );
    assert_eq!(
        f.metadata().unwrap().nlink(),
        0,
        "fstat nlink of an unlinked file"
    );

    // Readable through both fds, writable through the writer.
    let mut buf = vec![0u8; data.len()];
    reader.read_exact_at(&mut buf, 0).unwrap();
    assert_bytes(&buf, &data, "read through the reader after unlink");
    f.write_all_at(b"still writable", 1_000_000).unwrap();
    let mut want = data.clone();
    write_model(&mut want, 1_000_000, b"still writable");
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_bytes(&buf, &want, "read through the writer after a write");

    // A new file under the same name is a different file.
    fs::write(&p, b"newcomer").unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"newcomer");
    assert_ne!(fs::metadata(&p).unwrap().ino(), f.metadata().unwrap().ino());
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_bytes(&buf, &want, "old file after the name was reused");

    drop(f);
    drop(reader);
    assert_eq!(fs::read(&p).unwrap(), b"newcomer");
    m.remount();
    assert_eq!(names(&m.mnt), set(&["victim"]));
    assert_eq!(fs::read(&p).unwrap(), b"newcomer");

    // Unlinked while open, closed, remounted: gone.
    fs::write(m.path("second"), b"x").unwrap();
    let g = File::open(m.path("second")).unwrap();
    fs::remove_file(m.path("second")).unwrap();
    drop(g);
    m.remount();
    assert_eq!(names(&m.mnt), set(&["victim"]));
}

#[test]
fn rmdir_and_unlink_report_enotempty_enotdir_eisdir_and_enoent() {
    let mut m = Mount::new("posix-dir-errors");
    fs::create_dir(m.path("d")).unwrap();
    fs::write(m.path("d/f"), b"x").unwrap();
    fs::write(m.path("file"), b"y").unwrap();
    assert!(fs::metadata(m.path("d")).unwrap().is_dir());

    expect_errno(
        fs::create_dir(m.path("d")),
        libc::EEXIST,
        "mkdir over a dir",
    );
    expect_errno(
        fs::create_dir(m.path("file")),
        libc::EEXIST,
        "mkdir over a file",
    );
    expect_errno(
        fs::remove_dir(m.path("d")),
        libc::ENOTEMPTY,
        "rmdir of a non-empty dir",
    );
    expect_errno(
        fs::remove_dir(m.path("file")),
        libc::ENOTDIR,
        "rmdir of a file",
    );
    expect_errno(
        fs::remove_file(m.path("d")),
        libc::EISDIR,
        "unlink of a dir",
    );
    expect_errno(
        fs::remove_file(m.path("nothing")),
        libc::ENOENT,
        "unlink of a missing name",
    );
    expect_errno(
        fs::remove_dir(m.path("nothing")),
        libc::ENOENT,
        "rmdir of a missing name",
    );
    expect_errno(
        fs::create_dir(m.path("nothing/sub")),
        libc::ENOENT,
        "mkdir under a missing dir",
    );
    expect_errno(
        fs::write(m.path("file/sub"), b"z"),
        libc::ENOTDIR,
        "create under a file",
    );
    assert_eq!(fs::read(m.path("d/f")).unwrap(), b"x");

    fs::remove_file(m.path("d/f")).unwrap();
    fs::remove_dir(m.path("d")).unwrap();
    expect_errno(
        fs::metadata(m.path("d")),
        libc::ENOENT,
        "stat of a removed dir",
    );
    // An empty directory made and removed again is gone for good.
    fs::create_dir_all(m.path("a/b/c")).unwrap();
    fs::remove_dir(m.path("a/b/c")).unwrap();
    m.remount();
    assert_eq!(names(&m.mnt), set(&["a", "file"]));
    assert_eq!(names(&m.path("a")), set(&["b"]));
    assert!(names(&m.path("a/b")).is_empty());
    assert_eq!(fs::read(m.path("file")).unwrap(), b"y");
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

// -------------------------------------------------------------------- mmap

#[test]
fn a_read_only_mmap_sees_the_file_bytes() {
    let m = Mount::new("posix-mmap-ro");
    let p = m.path("mapped");
    let data = noise(3_000_123, 111);
    fs::write(&p, &data).unwrap();
    let f = File::open(&p).unwrap();
    // SAFETY: a fresh read-only shared mapping of an open fd; unmapped below.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            data.len(),
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(
        ptr,
        libc::MAP_FAILED,
        "mmap: {}",
        io::Error::last_os_error()
    );
    // SAFETY: the mapping is data.len() bytes and lives until munmap.
    let mapped = unsafe { std::slice::from_raw_parts(ptr as *const u8, data.len()) };
    assert_bytes(mapped, &data, "mapped bytes");
    // SAFETY: ptr/len come from the mmap above.
    assert_eq!(unsafe { libc::munmap(ptr, data.len()) }, 0);
    drop(f);

    // Python's mmap module over the same file.
    let out = Command::new(crate::common::python())
        .args([
            "-c",
            "import mmap,sys,hashlib\nf=open(sys.argv[1],'rb')\nm=mmap.mmap(f.fileno(),0,access=mmap.ACCESS_READ)\nprint(len(m), hashlib.sha256(m[:]).hexdigest())",
        ])
        .arg(&p)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python mmap: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file_sha = sh(&format!("sha256sum {}", q(&p)));
    let want = format!(
        "{} {}",
        data.len(),
        file_sha.split_whitespace().next().unwrap()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), want);
}

#[test]
fn shared_writable_mmap_changes_reach_the_file_and_survive_remount() {
    let mut m = Mount::new("posix-mmap-rw");
    let p = m.path("mapped");
    let mut model = noise(2_000_000, 121);
    fs::write(&p, &model).unwrap();
    {
        let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
        let len = model.len();
        // SAFETY: a fresh shared RW mapping of an fd opened RDWR; unmapped below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(
            ptr,
            libc::MAP_FAILED,
            "mmap: {}",
            io::Error::last_os_error()
        );
        // SAFETY: the mapping is `len` bytes, writable, and only used here.
        let mapped = unsafe { std::slice::from_raw_parts_mut(ptr as *mut u8, len) };
        assert_bytes(mapped, &model, "mapping before changes");
        let edits: [(usize, &[u8]); 4] = [
            (0, b"START"),
            (4090, b"across-a-page-boundary"),
            (1_000_000, b"middle"),
            (len - 3, b"END"),
        ];
        for (off, bytes) in edits {
            mapped[off..off + bytes.len()].copy_from_slice(bytes);
            model[off..off + bytes.len()].copy_from_slice(bytes);
        }
        // SAFETY: ptr/len come from the mmap above.
        assert_eq!(
            unsafe { libc::msync(ptr, len, libc::MS_SYNC) },
            0,
            "msync: {}",
            io::Error::last_os_error()
        );
        // A second change after msync, left to munmap/close to write back.
        mapped[1_500_000..1_500_010].copy_from_slice(b"late write");
        model[1_500_000..1_500_010].copy_from_slice(b"late write");
        // SAFETY: ptr/len come from the mmap above; `mapped` is not used after.
        assert_eq!(unsafe { libc::munmap(ptr, len) }, 0);
        // Visible through read() on the same fd before close.
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_bytes(&buf, &model, "read() on the mapping fd");
    }
    assert_eq!(fs::metadata(&p).unwrap().len(), model.len() as u64);
    assert_bytes(&fs::read(&p).unwrap(), &model, "read() after close");
    m.remount();
    assert_bytes(&fs::read(&p).unwrap(), &model, "after remount");
}

// ------------------------------------------------------------------- fsync

#[test]
fn fsync_and_fdatasync_succeed_and_fsynced_data_survives_a_daemon_kill() {
    let mut m = Mount::new("posix-fsync");
    let p = m.path("synced");
    let data = noise(2_000_000, 131);
    let mut f = File::create(&p).unwrap();
    f.write_all(&data[..1_000_000]).unwrap();
    f.sync_data().unwrap();
    f.write_all(&data[1_000_000..]).unwrap();
    f.sync_all().unwrap();
    // fsync of a read-only fd and of directories succeeds too.
    File::open(&p).unwrap().sync_all().unwrap();
    File::open(&m.mnt).unwrap().sync_all().unwrap();
    File::open(&m.mnt).unwrap().sync_data().unwrap();
    assert_bytes(
        &fs::read(&p).unwrap(),
        &data,
        "content while the writer is open",
    );

    // The writer is still open; the daemon dies without a clean unmount.
    m.kill();
    drop(f);
    m.start();
    assert_eq!(
        fs::metadata(&p).unwrap().len(),
        data.len() as u64,
        "size of the fsynced file after a kill"
    );
    assert_bytes(
        &fs::read(&p).unwrap(),
        &data,
        "fsynced content after a kill",
    );
}

// --------------------------------------------------------- over 4 GiB

#[test]
fn a_file_over_4_gib_reads_back_across_the_boundary_after_remount() {
    let _g = crate::common::heavy();
    let mut m = Mount::new("posix-over4g");
    const BLOCK: usize = 1 << 20;
    const BLOCKS: u64 = 4608; // 4.5 GiB
    const FOUR_G: u64 = 4 << 30;
    let total = BLOCKS * BLOCK as u64;
    let base = noise(BLOCK, 141);
    // Block i is `base` with its index at both ends, so every offset maps to known bytes.
    let byte_at = |off: u64| -> u8 {
        let i = off / BLOCK as u64;
        let within = (off % BLOCK as u64) as usize;
        if within < 8 {
            i.to_le_bytes()[within]
        } else if within >= BLOCK - 8 {
            (!i).to_le_bytes()[within - (BLOCK - 8)]
        } else {
            base[within]
        }
    };
    let expected =
        |off: u64, len: usize| -> Vec<u8> { (off..off + len as u64).map(byte_at).collect() };

    let p = m.path("huge.bin");
    {
        let mut f = File::create(&p).unwrap();
        let mut block = base.clone();
        for i in 0..BLOCKS {
            block[..8].copy_from_slice(&i.to_le_bytes());
            block[BLOCK - 8..].copy_from_slice(&(!i).to_le_bytes());
            f.write_all(&block).unwrap();
        }
    }
    assert_eq!(fs::metadata(&p).unwrap().len(), total);

    // Overwrite a piece just above 4 GiB in place.
    let patch = noise(10_000, 142);
    let patch_at = FOUR_G + 100;
    {
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        f.write_all_at(&patch, patch_at).unwrap();
    }
    m.remount();
    assert_eq!(fs::metadata(&p).unwrap().len(), total, "size after remount");

    let f = File::open(&p).unwrap();
    let pread = |off: u64, len: usize| {
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, off)
            .unwrap_or_else(|e| panic!("pread at {off}: {e}"));
        buf
    };
    for off in [
        0,
        FOUR_G - 4096,
        FOUR_G - 16,
        FOUR_G - 1,
        FOUR_G + 20_000,
        FOUR_G + 3 * BLOCK as u64 - 5,
        total - 4096,
    ] {
        let len = 64.min((total - off) as usize);
        assert_eq!(pread(off, len), expected(off, len), "bytes at {off}");
    }
    // Across the 4 GiB boundary in one read, into the patch.
    let around = pread(FOUR_G - 50, 10_200);
    let mut want = expected(FOUR_G - 50, 10_200);
    want[150..150 + patch.len()].copy_from_slice(&patch);
    assert_bytes(&around, &want, "read across 4 GiB into the patch");
    // The end.
    assert_eq!(
        pread(total - 100, 100),
        expected(total - 100, 100),
        "last 100 bytes"
    );
    let mut past = [0u8; 16];
    assert_eq!(f.read_at(&mut past, total).unwrap(), 0, "read at EOF");
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
