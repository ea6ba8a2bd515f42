//! Open, read and write through the real mount: O_CREAT/O_EXCL/O_TRUNC/
//! O_APPEND, sequential and random-offset writes, reads while a writer
//! streams, holes past EOF, pwrite into the middle of a large file,
//! truncation (ftruncate and by path), an unlinked file that stays open,
//! and rmdir/unlink error codes.

#![allow(unsafe_code)]

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use super::{assert_bytes, cpath, cvt, expect_errno, names, read_at, set, write_model};
use crate::common::{noise, Mount};

// ---------------------------------------------------------------- helpers

fn truncate_path(p: &Path, size: i64) -> io::Result<()> {
    let c = cpath(p);
    // SAFETY: valid path.
    cvt(unsafe { libc::truncate(c.as_ptr(), size) })
}

/// A deterministic stream of pseudo-random numbers.
fn numbers(count: usize, seed: u64) -> Vec<u64> {
    noise(count * 8, seed)
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect()
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
fn a_reader_sees_every_byte_a_streaming_writer_was_answered_for() {
    // Writes that continue a file are answered before they are applied;
    // anything that reads the file waits until they are in place.
    let mut m = Mount::new("posix-answered");
    let p = m.path("stream.bin");
    let src = noise(40 << 20, 31);
    let piece = 3 << 20; // three 1 MiB requests and a bit per write
    let (first, second) = src.split_at(24 << 20);
    let mut w = File::create(&p).unwrap();
    let mut written = 0;
    for part in first.chunks(piece) {
        w.write_all(part).unwrap();
        written += part.len();
        assert_eq!(
            fs::metadata(&p).unwrap().len(),
            written as u64,
            "stat right after a write"
        );
    }
    // Another handle, at once: every byte written so far, in order.
    assert_bytes(
        &fs::read(&p).unwrap(),
        first,
        "read while the writer goes on",
    );
    for part in second.chunks(piece) {
        w.write_all(part).unwrap();
    }
    let r = File::open(&p).unwrap();
    let mut tail = vec![0u8; 1 << 20];
    let tail_at = (src.len() - tail.len()) as u64;
    r.read_exact_at(&mut tail, tail_at).unwrap();
    assert_bytes(
        &tail,
        &src[tail_at as usize..],
        "the last MiB, before close",
    );
    drop((w, r));
    assert_bytes(&fs::read(&p).unwrap(), &src, "after close");
    m.remount();
    assert_bytes(&fs::read(&p).unwrap(), &src, "after remount");
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
