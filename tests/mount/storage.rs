//! What the store costs on disk (dedup, zero runs, float compression),
//! read-only mounts, and the daemon's memory on a file far larger than RAM
//! budgets.
//!
//! Store sizes are measured with `du -s -B1` (allocated blocks) on the
//! store directory. Every
//! measurement is taken right after a remount. Why: a chunk first lands in
//! RocksDB's WAL and only moves into a blob file when its memtable is
//! flushed (64 MiB memtables, WAL capped at 256 MiB), and the old WAL file is
//! deleted only after that. Measured on a live mount, the same data can be
//! counted zero times (still in the page cache being written), once (WAL or
//! blob) or twice (blob written, WAL not yet deleted), depending on when the
//! last flush happened, so "after − before" can be off by up to the WAL
//! size in either direction. A clean unmount and reopen replays and flushes
//! the WAL into blob files and deletes it, so both measurements see the
//! store in the same settled state and the difference is what the second
//! write really added. The remount also proves that the data survives it.
//! (Checked by hand: right after `cp` of 512 MiB the live store was 549.5 MB
//! with an 8.5 MB WAL beside the blob files; after the second copy 550.0 MB;
//! after unmount 541.6 MB. Mixing a live and a settled measurement would
//! have shown the second copy as "shrinking" the store by 8 MB.)
//! We additionally check that the first measurement did count the first
//! file (a store that never wrote its data would otherwise pass).

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::Path;
use std::time::Instant;

use super::crash::write_and_fsync;
use crate::common::{du_bytes, hash_file, heavy, noise, Mount};

const MIB: u64 = 1 << 20;

/// Writes `data` to a new (or truncated) file and closes it, checking the
/// result of close(2) (that is where ckptfs commits).
fn write_closed(path: &Path, data: &[u8]) {
    let mut f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    for block in data.chunks(MIB as usize) {
        f.write_all(block)
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
    nix::unistd::close(f).unwrap_or_else(|e| panic!("close {}: {e}", path.display()));
}

fn xxh(data: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(data)
}

/// The settled size of the store (see the module comment).
fn settled_du(m: &mut Mount) -> u64 {
    m.remount();
    du_bytes(&m.store)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

#[test]
fn a_second_copy_of_512_mib_of_noise_grows_the_store_by_under_1_percent() {
    let _heavy = heavy();
    let mut m = Mount::new("storage-dedup-copy");
    let len = 512 * MIB;
    let data = noise(len as usize, 0x5eed_0001);
    let empty = du_bytes(&m.store);
    write_closed(&m.path("first.bin"), &data);
    let before = settled_du(&mut m);
    // Noise does not compress: the first copy must really be in the store.
    assert!(
        before - empty >= len * 95 / 100,
        "the first 512 MiB copy took only {:.1} MiB in the store",
        mib(before - empty)
    );
    write_closed(&m.path("second.bin"), &data);
    let after = settled_du(&mut m);
    let growth = after.saturating_sub(before);
    eprintln!(
        "dedup copy: first copy {:.1} MiB, second copy grew the store by {:.3} MiB ({} bytes; limit {:.2} MiB)",
        mib(before - empty),
        mib(growth),
        growth,
        mib(len / 100)
    );
    assert!(
        growth < len / 100,
        "second copy grew the store by {:.2} MiB",
        mib(growth)
    );
    let want = xxh(&data);
    assert_eq!(hash_file(&m.path("first.bin")), want);
    assert_eq!(hash_file(&m.path("second.bin")), want);
}

/// `data` with 1 MiB of noise (from `seed`) inserted a little past its
/// middle.
fn with_mib_inserted(data: &[u8], seed: u64) -> Vec<u8> {
    let at = data.len() / 2 + 12_345;
    let mut out = Vec::with_capacity(data.len() + MIB as usize);
    out.extend_from_slice(&data[..at]);
    out.extend_from_slice(&noise(MIB as usize, seed));
    out.extend_from_slice(&data[at..]);
    out
}

#[test]
fn rewriting_512_mib_with_1_mib_inserted_in_the_middle_grows_the_store_by_under_4_mib() {
    let _heavy = heavy();
    let mut m = Mount::new("storage-dedup-insert");
    let len = 512 * MIB as usize;
    let v1 = noise(len, 0x5eed_0002);
    write_closed(&m.path("model.ckpt"), &v1);
    let before = settled_du(&mut m);
    assert!(
        before >= (len as u64) * 95 / 100,
        "the first version took only {:.1} MiB",
        mib(before)
    );

    // The second version: 1 MiB of new bytes inserted at 256 MiB (not at a
    // 1 MiB boundary of the writes, so nothing lines up by accident).
    let v2 = with_mib_inserted(&v1, 0x5eed_0003);
    drop(v1);
    // Overwrite the same name (open with O_TRUNC and write it all again),
    // as a training loop re-saves its checkpoint.
    write_closed(&m.path("model.ckpt"), &v2);
    let after = settled_du(&mut m);
    let growth = after.saturating_sub(before);
    eprintln!("dedup insert: rewrite with 1 MiB inserted grew the store by {:.3} MiB ({growth} bytes; limit 4 MiB)", mib(growth));
    assert!(
        growth < 4 * MIB,
        "rewrite grew the store by {:.2} MiB",
        mib(growth)
    );
    assert_eq!(
        fs::metadata(m.path("model.ckpt")).unwrap().len(),
        v2.len() as u64
    );
    assert_eq!(hash_file(&m.path("model.ckpt")), xxh(&v2));
}

/// `.ckpt/stats` `since_mount`.
fn since_mount(m: &Mount) -> serde_json::Value {
    let stats: serde_json::Value =
        serde_json::from_slice(&fs::read(m.path(".ckpt/stats")).unwrap()).unwrap();
    stats["since_mount"].clone()
}

fn count(v: &serde_json::Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

#[test]
fn repeated_data_is_cut_by_guess_where_the_search_would_cut() {
    // Within one mount, a copy (best.pt = last.pt) and a re-save with 1 MiB
    // inserted reuse the cuts learned from the first file instead of
    // searching for them; the store must grow exactly as little as with
    // searched cuts (see the insert test above), and every file read back
    // whole after a remount.
    let _heavy = heavy();
    let mut m = Mount::new("storage-guessed-cuts");
    let len = 128 * MIB as usize;
    let v1 = noise(len, 0x5eed_0007);
    write_closed(&m.path("last.pt"), &v1);
    let first = since_mount(&m);
    assert_eq!(count(&first, "guessed_cuts"), 0, "nothing seen before");
    let chunks = count(&first, "new_chunks");
    assert!(chunks > 4000, "{chunks} chunks for 128 MiB");

    write_closed(&m.path("best.pt"), &v1);
    let copy = since_mount(&m);
    let guessed = count(&copy, "guessed_cuts");
    eprintln!("guessed cuts: {guessed} of {chunks} chunks of the copy; {copy}");
    // Not guessed: a cut where `rollsum` found no position in a whole
    // 64 KiB window (about 1 chunk in 350 of noise) is FastCDC's, which
    // depends on bytes past the cut, so it is not learned.
    assert!(
        guessed * 100 + 2 >= chunks * 99,
        "{guessed} of {chunks} cuts guessed"
    );
    assert_eq!(count(&copy, "rejected_guesses"), 0);
    assert_eq!(
        count(&copy, "new_chunks"),
        chunks,
        "the copy stored nothing"
    );

    let v2 = with_mib_inserted(&v1, 0x5eed_0008);
    let before = du_bytes(&m.store);
    write_closed(&m.path("last.pt"), &v2);
    let edited = since_mount(&m);
    let rejected = count(&edited, "rejected_guesses");
    let new_chunks = count(&edited, "new_chunks") - chunks;
    eprintln!("insert: {new_chunks} new chunks, {rejected} guesses rejected; {edited}");
    assert!((1..=3).contains(&rejected), "{rejected} guesses rejected");
    assert!(
        new_chunks <= 64 + 4,
        "1 MiB inserted gave {new_chunks} new chunks"
    );
    let after = settled_du(&mut m);
    assert!(
        after.saturating_sub(before) < 4 * MIB,
        "the insert grew the store by {:.2} MiB",
        mib(after.saturating_sub(before))
    );
    assert_eq!(hash_file(&m.path("best.pt")), xxh(&v1));
    assert_eq!(hash_file(&m.path("last.pt")), xxh(&v2));
}

#[test]
fn a_gib_of_zeros_takes_under_1_mib_in_the_store() {
    let _heavy = heavy();
    let mut m = Mount::new("storage-zeros");
    let before = settled_du(&mut m);
    let zeros = vec![0u8; MIB as usize];
    let mut f = File::create(m.path("zeros.bin")).unwrap();
    for _ in 0..1024 {
        f.write_all(&zeros).unwrap();
    }
    nix::unistd::close(f).unwrap();
    let after = settled_du(&mut m);
    let growth = after.saturating_sub(before);
    eprintln!(
        "zeros: 1 GiB of zeros grew the store by {:.3} MiB ({growth} bytes; limit 1 MiB)",
        mib(growth)
    );
    assert!(
        growth < MIB,
        "1 GiB of zeros grew the store by {:.2} MiB",
        mib(growth)
    );

    // And they read back as a GiB of zeros.
    assert_eq!(fs::metadata(m.path("zeros.bin")).unwrap().len(), 1 << 30);
    let mut f = File::open(m.path("zeros.bin")).unwrap();
    let mut buf = vec![0u8; MIB as usize];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert!(
            buf[..n].iter().all(|&b| b == 0),
            "non-zero byte near offset {total}"
        );
        total += n as u64;
    }
    assert_eq!(total, 1 << 30);
}

fn assert_erofs<T: std::fmt::Debug>(what: &str, r: std::io::Result<T>) {
    match r {
        Err(e) if e.raw_os_error() == Some(libc::EROFS) => {}
        other => panic!("{what} on a read-only mount: expected EROFS, got {other:?}"),
    }
}

#[test]
fn a_read_only_mount_serves_reads_and_refuses_every_change_with_erofs() {
    let _heavy = heavy();
    // Fill a store through a normal mount, then serve it read-only.
    let mut src = Mount::new("storage-readonly-src");
    let data = noise(3_000_000, 0x5eed_0004);
    write_closed(&src.path("weights.bin"), &data);
    fs::create_dir(src.path("dir")).unwrap();
    write_closed(&src.path("dir/note.txt"), b"hello");
    let st = src.stop();
    assert!(st.success(), "daemon exited with {st}");

    let ro = Mount::with_store("storage-readonly", &src.store, &["--read-only"]);
    assert_eq!(fs::read(ro.path("weights.bin")).unwrap(), data);
    assert_eq!(fs::read(ro.path("dir/note.txt")).unwrap(), b"hello");
    let mut names: Vec<String> = fs::read_dir(ro.path(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["dir", "weights.bin"]);

    assert_erofs(
        "open for writing",
        OpenOptions::new().write(true).open(ro.path("weights.bin")),
    );
    assert_erofs(
        "open with O_TRUNC",
        OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(ro.path("weights.bin")),
    );
    assert_erofs(
        "append",
        OpenOptions::new()
            .append(true)
            .open(ro.path("dir/note.txt")),
    );
    assert_erofs("create", File::create(ro.path("new.bin")));
    assert_erofs("write", fs::write(ro.path("dir/new.txt"), b"x"));
    assert_erofs("unlink", fs::remove_file(ro.path("weights.bin")));
    assert_erofs("mkdir", fs::create_dir(ro.path("newdir")));
    assert_erofs("rmdir", fs::remove_dir(ro.path("dir")));
    assert_erofs(
        "rename",
        fs::rename(ro.path("weights.bin"), ro.path("w2.bin")),
    );
    assert_erofs(
        "symlink",
        std::os::unix::fs::symlink("weights.bin", ro.path("link")),
    );
    assert_erofs(
        "truncate",
        OpenOptions::new()
            .write(true)
            .open(ro.path("weights.bin"))
            .and_then(|f| f.set_len(0)),
    );
    let mut perms = fs::metadata(ro.path("weights.bin")).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    assert_erofs("chmod", fs::set_permissions(ro.path("weights.bin"), perms));

    // Nothing changed.
    assert_eq!(fs::read(ro.path("weights.bin")).unwrap(), data);
    assert_eq!(fs::read(ro.path("dir/note.txt")).unwrap(), b"hello");
    assert!(matches!(fs::metadata(ro.path("new.bin")), Err(e) if e.kind() == ErrorKind::NotFound));
    assert!(matches!(fs::metadata(ro.path("newdir")), Err(e) if e.kind() == ErrorKind::NotFound));
    drop(ro);
    drop(src);
}

/// Block `i` of the 10 GiB file: a 1 MiB noise block with every 64-bit
/// word xored with a per-block key, so that no chunk of one block equals a
/// chunk of another (xoring only a few bytes per block would leave all but
/// the first content-defined chunk of each block identical, and dedup
/// would make the test meaningless).
/// Reads a file through `buf` sequentially; its length and xxh3-128.
fn read_hashed(path: &Path, buf: &mut [u8]) -> (u64, u128) {
    let mut f = File::open(path).unwrap();
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut total = 0u64;
    loop {
        let n = f.read(buf).unwrap();
        if n == 0 {
            return (total, h.digest128());
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
}

fn block(base: &[u8], i: u64, out: &mut [u8]) {
    let mut k = i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    k ^= k >> 31;
    for (o, b) in out.chunks_exact_mut(8).zip(base.chunks_exact(8)) {
        let w = u64::from_le_bytes(b.try_into().unwrap()) ^ k;
        o.copy_from_slice(&w.to_le_bytes());
    }
}

#[test]
fn writing_and_reading_10_gib_keeps_the_daemon_under_512_mib_of_rss() {
    let _heavy = heavy();
    let m = Mount::new("storage-memory-10g");
    const BLOCKS: u64 = 10 * 1024;
    let base = noise(MIB as usize, 0x5eed_0005);
    let mut buf = vec![0u8; MIB as usize];

    let path = m.path("big.bin");
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let t = Instant::now();
    let mut f = File::create(&path).unwrap();
    for i in 0..BLOCKS {
        block(&base, i, &mut buf);
        hasher.update(&buf);
        f.write_all(&buf)
            .unwrap_or_else(|e| panic!("write of block {i}: {e}"));
    }
    nix::unistd::close(f).expect("close of the 10 GiB file");
    let write_secs = t.elapsed().as_secs_f64();
    let written = hasher.digest128();
    let rss_after_write = m.peak_rss_kib();

    let t = Instant::now();
    let (total, read) = read_hashed(&path, &mut buf);
    let read_secs = t.elapsed().as_secs_f64();
    let peak = m.peak_rss_kib();
    let bytes = BLOCKS * MIB;
    eprintln!(
        "10 GiB: write {write_secs:.1} s ({:.0} MB/s), read {read_secs:.1} s ({:.0} MB/s); daemon peak RSS {:.1} MiB after write, {:.1} MiB after read",
        bytes as f64 / 1e6 / write_secs,
        bytes as f64 / 1e6 / read_secs,
        rss_after_write as f64 / 1024.0,
        peak as f64 / 1024.0,
    );
    assert_eq!(total, bytes);
    assert_eq!(
        read, written,
        "the 10 GiB file read back differs from what was written"
    );
    assert!(
        peak < 512 * 1024,
        "daemon peak RSS {} KiB is over 512 MiB",
        peak
    );
}

/// `n` float32 values as trained weights are: N(0, 0.02), little-endian.
fn float_weights(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut uniform = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .flat_map(|_| {
            let (u, v) = (uniform(), uniform());
            let normal = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
            ((0.02 * normal) as f32).to_le_bytes()
        })
        .collect()
}

#[test]
fn float_weights_store_at_under_nine_tenths_by_default_and_raw_with_lz4() {
    let weights = float_weights(16 << 20, 0x5eed_0004); // 64 MiB
    let mut stored = Vec::new();
    for (name, args) in [("auto", &[][..]), ("lz4", &["--compression", "lz4"][..])] {
        let mut m = Mount::with_args(&format!("storage-floats-{name}"), args);
        let empty = settled_du(&mut m);
        write_closed(&m.path("weights.bin"), &weights);
        let used = settled_du(&mut m) - empty;
        assert_eq!(hash_file(&m.path("weights.bin")), xxh(&weights), "{name}");
        eprintln!(
            "float weights, compression {name}: {:.1} MiB stored for 64 MiB",
            mib(used)
        );
        stored.push(used as f64 / weights.len() as f64);
    }
    assert!(
        stored[0] < 0.9,
        "default compression stored {:.3} of raw",
        stored[0]
    );
    assert!(
        stored[1] > 0.98,
        "--compression lz4 stored {:.3} of raw",
        stored[1]
    );
}

#[test]
fn a_sequential_read_reads_each_stored_byte_about_once() {
    // Chunks fetched ahead must still be there when the reader gets to
    // them: once they were evicted first and a cold read read the store
    // twice over. 160 MiB is well past the read cache and the read-ahead.
    let _heavy = heavy();
    let mut m = Mount::new("storage-read-once");
    const MIBS: u64 = 160;
    let base = noise(MIB as usize, 0x5eed_0006);
    let mut buf = vec![0u8; MIB as usize];
    let mut written = xxhash_rust::xxh3::Xxh3::new();
    let mut f = File::create(m.path("model.bin")).unwrap();
    for i in 0..MIBS {
        block(&base, i, &mut buf);
        written.update(&buf);
        f.write_all(&buf).unwrap();
    }
    drop(f);
    m.remount();

    let before = m.read_bytes();
    let (total, read) = read_hashed(&m.path("model.bin"), &mut buf);
    let daemon_read = m.read_bytes() - before;
    assert_eq!(total, MIBS * MIB);
    assert_eq!(read, written.digest128(), "read back differs");
    let ratio = daemon_read as f64 / total as f64;
    eprintln!("read {total} bytes; the daemon read {daemon_read} ({ratio:.3}x)");
    // Noise is stored raw, so the store holds about what was written; the
    // rest is record headers and index and manifest reads.
    assert!(
        ratio < 1.1,
        "the daemon read {daemon_read} bytes for a {total}-byte file ({ratio:.2}x)"
    );
}

#[test]
fn an_fsync_waiting_for_the_disk_leaves_the_fuse_threads_to_other_requests() {
    // One FUSE thread: an fsync that waited on it held up every other
    // request (with the default four, four ranks' fsyncs stopped the
    // other ranks' writes until the disk was done).
    let mut m = Mount::with_args("store-fsync-aside", &["--fuse-threads", "1"]);
    fs::write(m.path("other.bin"), b"a small file").unwrap();
    let mut big = File::create(m.path("big.bin")).unwrap();
    let data = noise(64 << 20, 0xf5_0001);
    for _ in 0..12 {
        big.write_all(&data).unwrap();
    }
    let started = Instant::now();
    let syncing = std::thread::spawn(move || {
        big.sync_all().unwrap();
        started.elapsed()
    });
    // Time for the fsync to reach the daemon; it then takes tens of ms
    // (768 MiB to the disk) or more.
    std::thread::sleep(std::time::Duration::from_millis(5));
    let stat = Instant::now();
    assert_eq!(fs::metadata(m.path("other.bin")).unwrap().len(), 12);
    let stat_done = started.elapsed();
    let stat_took = stat.elapsed();
    let synced = syncing.join().unwrap();
    eprintln!("stat took {stat_took:?}, done at {stat_done:?}; fsync done at {synced:?}");
    assert!(
        stat_done < synced,
        "the stat waited for the fsync ({stat_done:?} against {synced:?})"
    );
    m.remount();
    let mut expected = Vec::with_capacity(12 * data.len());
    for _ in 0..12 {
        expected.extend_from_slice(&data);
    }
    assert_eq!(hash_file(&m.path("big.bin")), xxh(&expected));
}

/// (length, allocated bytes) of every pack file of the store at `store`.
fn pack_sizes(store: &Path) -> Vec<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut sizes: Vec<(u64, u64)> = fs::read_dir(store.join("packs"))
        .expect("the store has a packs directory")
        .map(|e| e.unwrap().metadata().unwrap())
        .map(|md| (md.len(), md.blocks() * 512))
        .collect();
    sizes.sort();
    sizes
}

/// Asserts that no pack holds more blocks than its length (rounded to a
/// block, plus what ext4's extent tree may take), `after` something.
fn assert_packs_hold_only_their_records(store: &Path, after: &str) {
    let sizes = pack_sizes(store);
    assert!(
        sizes
            .iter()
            .all(|&(len, allocated)| allocated <= len.next_multiple_of(4096) + 64 * 1024),
        "blocks past the records after {after}: {sizes:?}"
    );
}

#[test]
fn packs_reserve_blocks_ahead_of_appends_and_give_them_back_at_unmount_and_after_a_kill() {
    let mut m = Mount::new("pack-reserve");
    let first = noise(20 * MIB as usize + 12_345, 0x7e5e_0001);
    write_closed(&m.path("first.bin"), &first);
    let live = pack_sizes(&m.store);
    assert!(
        live.iter()
            .any(|&(len, allocated)| len > 0 && allocated >= len.next_multiple_of(8 * MIB)),
        "no pack has its blocks reserved ahead of its records: {live:?}"
    );
    m.remount();
    assert_packs_hold_only_their_records(&m.store, "an unmount");
    assert_eq!(hash_file(&m.path("first.bin")), xxh(&first));

    // A daemon killed with a pack open leaves its reserve behind; the
    // next mount gives it back.
    let second = noise(20 * MIB as usize + 999, 0x7e5e_0002);
    write_and_fsync(&m.path("second.bin"), &second).expect("fsync second.bin");
    m.kill();
    let killed = pack_sizes(&m.store);
    assert!(
        killed.iter().any(|&(len, allocated)| allocated > len + MIB),
        "the kill left no reserve to give back: {killed:?}"
    );
    m.start();
    assert_packs_hold_only_their_records(&m.store, "a kill and a mount");
    assert_eq!(hash_file(&m.path("first.bin")), xxh(&first));
    assert_eq!(hash_file(&m.path("second.bin")), xxh(&second));
}
