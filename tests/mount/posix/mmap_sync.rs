//! Mappings, durability and size through the real mount: read-only and
//! shared writable mmap, fsync/fdatasync surviving a daemon kill, and a
//! file over 4 GiB read back across the boundary.

#![allow(unsafe_code)]

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::process::Command;

use super::{assert_bytes, q};
use crate::common::{noise, sh, Mount};

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
