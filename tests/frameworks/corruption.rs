//! A flipped byte in a stored chunk (found in `STORE/packs/*.pack` by a
//! 64-byte window of the file's content, with the daemon stopped): reads
//! of the damaged range fail with EIO through the live tree, the file's
//! version under `.ckpt/versions/` and its copy in a snapshot; every read
//! that succeeds returns the original bytes; other files, and the rest of
//! the damaged one, stay readable byte-exact; the daemon keeps serving
//! and names the file in its log.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::support::{ctl, version_files, MIB};
use crate::common::{flip_byte_in_stored_chunk, noise, Mount};

const SIZE: usize = 12 * MIB;
/// Where the flipped byte is: past the first MiB (whose chunks go
/// through the WAL), in a chunk stored raw in a pack file.
const DAMAGE: usize = 10 * MIB;
const BLOCK: usize = 64 << 10;

/// Reads `path` with 64 KiB preads from start to end: each either fails
/// with EIO (the scan goes on at the next 64 KiB boundary) or returns
/// bytes that are exactly the file's at that offset (the kernel may
/// return the good part of a range before a bad page: a short read).
/// Returns the byte ranges whose reads failed.
fn scan(path: &Path, data: &[u8]) -> Vec<std::ops::Range<usize>> {
    let f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut failed = Vec::new();
    let mut buf = vec![0u8; BLOCK];
    let mut off = 0;
    while off < data.len() {
        let want = &data[off..(off + BLOCK).min(data.len())];
        match f.read_at(&mut buf, off as u64) {
            Ok(n) => {
                assert!(
                    n > 0 && buf[..n] == want[..n],
                    "{}: a read at {off} returned {n} bytes that are not the file's",
                    path.display()
                );
                off += n;
            }
            Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                let next = (off / BLOCK + 1) * BLOCK;
                failed.push(off..next);
                off = next;
            }
            Err(e) => panic!(
                "{}: a read at {off} failed with {e}, not EIO",
                path.display()
            ),
        }
    }
    failed
}

#[test]
fn a_flipped_byte_in_a_chunk_gives_eio_for_that_range_everywhere_and_nothing_else_changes() {
    let mut m = Mount::new("fw-corrupt");
    let big = noise(SIZE, 0xbad_0001);
    let other = noise(SIZE, 0xbad_0002);
    let small = b"{\"global_step\": 700}\n".to_vec();
    fs::create_dir(m.path("ckpt")).unwrap();
    fs::write(m.path("ckpt/big.bin"), &big).unwrap();
    fs::write(m.path("ckpt/other.bin"), &other).unwrap();
    fs::write(m.path("ckpt/state.json"), &small).unwrap();
    fs::create_dir(ctl(&m, "snapshots/s1")).unwrap();
    assert!(m.stop().success());
    flip_byte_in_stored_chunk(&m.store, &big[DAMAGE..DAMAGE + 64]);
    m.start();

    // The last version (a fork by another test thread can flush an early,
    // partial one).
    let copies = |rel: &str| {
        let v = version_files(&m, rel);
        [
            m.path(rel),
            v.last()
                .unwrap_or_else(|| panic!("{rel} has no versions"))
                .clone(),
            ctl(&m, &format!("versions/{rel}/latest")),
            ctl(&m, &format!("snapshots/s1/{rel}")),
        ]
    };
    for path in copies("ckpt/big.bin") {
        for pass in 0..2 {
            let failed = scan(&path, &big);
            assert!(
                failed.iter().any(|r| r.contains(&(DAMAGE + 32))),
                "{} (pass {pass}): the damaged byte at {} was read without EIO; failed: {failed:?}\n{}",
                path.display(),
                DAMAGE + 32,
                m.log()
            );
            // Only reads near the damaged chunk (at most 64 KiB, plus the
            // kernel's page alignment) fail.
            assert!(
                failed.iter().all(|r| r.start.abs_diff(DAMAGE) <= 256 << 10),
                "{} (pass {pass}): reads far from the damage failed: {failed:?}",
                path.display()
            );
        }
        let whole = fs::read(&path);
        assert_eq!(
            whole.as_ref().map(Vec::len).map_err(|e| e.raw_os_error()),
            Err(Some(libc::EIO)),
            "{}: reading it whole",
            path.display()
        );
    }
    for (rel, data) in [("ckpt/other.bin", &other), ("ckpt/state.json", &small)] {
        for path in copies(rel) {
            let got =
                fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}\n{}", path.display(), m.log()));
            assert!(
                got == **data,
                "{}: not byte-exact next to a damaged file",
                path.display()
            );
        }
    }
    // Still serving: writes, commits and snapshots work.
    fs::write(m.path("ckpt/after.bin"), noise(MIB, 3)).unwrap();
    fs::create_dir(ctl(&m, "snapshots/s2")).unwrap();
    assert_eq!(
        fs::read(ctl(&m, "snapshots/s2/ckpt/after.bin")).unwrap(),
        noise(MIB, 3)
    );
    let log = m.log();
    assert!(
        log.contains("big.bin"),
        "the daemon log does not name the damaged file:\n{log}"
    );
    m.remount();
    let failed = scan(&m.path("ckpt/big.bin"), &big);
    assert!(
        failed.iter().any(|r| r.contains(&(DAMAGE + 32))),
        "after a remount: {failed:?}"
    );
    assert!(fs::read(m.path("ckpt/other.bin")).unwrap() == other);
}
