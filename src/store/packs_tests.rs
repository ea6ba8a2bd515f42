//! Unit tests of pack files: appends read back, survive a reopen up to
//! the last sync, dead packs are removed, punched records free blocks, and
//! blocks reserved ahead of appends are given back.

use super::*;

#[test]
fn records_append_read_back_and_survive_a_reopen_up_to_the_sync() {
    let dir = tempfile::tempdir().unwrap();
    let packs = Packs::open(dir.path().join("packs"), HashMap::new()).unwrap();
    let a = packs
        .append(0, &[b"first ", b"record"], |_| Ok(()))
        .unwrap();
    let b = packs.append(0, &[b"second"], |_| Ok(())).unwrap();
    assert_eq!(
        &packs.read(a.pack, a.offset, a.len as usize).unwrap()[..],
        b"first record"
    );
    assert_eq!(
        &packs.read(b.pack, b.offset, b.len as usize).unwrap()[..],
        b"second"
    );
    let synced = packs.sync().unwrap();
    assert!(
        packs.sync().unwrap().is_empty(),
        "a second sync has nothing to do"
    );
    let c = packs.append(0, &[b"after the sync"], |_| Ok(())).unwrap();
    assert!(packs.is_durable(c));
    drop(packs);

    let sealed: HashMap<u32, u64> = synced.into_iter().collect();
    let packs = Packs::open(dir.path().join("packs"), sealed).unwrap();
    assert!(packs.has_leftovers());
    packs.cut_leftovers().unwrap();
    assert!(packs.is_durable(a) && packs.is_durable(b));
    if c.pack == a.pack {
        assert!(
            !packs.is_durable(c),
            "bytes past the synced length are not durable"
        );
        assert!(packs.read(c.pack, c.offset, c.len as usize).is_err());
    }
    assert_eq!(
        &packs.read(a.pack, a.offset, a.len as usize).unwrap()[..],
        b"first record"
    );
    let d = packs.append(0, &[b"new session"], |_| Ok(())).unwrap();
    assert!(
        d.pack > a.pack.max(c.pack),
        "old packs are never appended to"
    );
}

#[test]
fn only_packs_without_live_records_that_take_no_appends_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let packs = Packs::open(dir.path().join("packs"), HashMap::new()).unwrap();
    let old = packs.append(0, &[b"old record"], |_| Ok(())).unwrap();
    let sealed: HashMap<u32, u64> = packs.sync().unwrap().into_iter().collect();
    drop(packs);
    let packs = Packs::open(dir.path().join("packs"), sealed).unwrap();
    let new = packs.append(0, &[b"new record"], |_| Ok(())).unwrap();
    let none = HashSet::new();
    let live_old: HashSet<u32> = [old.pack].into();
    assert!(packs
        .remove_dead(&live_old, &packs.appending())
        .unwrap()
        .is_empty());
    let removed = packs.remove_dead(&none, &packs.appending()).unwrap();
    assert_eq!(removed.iter().map(|r| r.0).collect::<Vec<_>>(), [old.pack]);
    assert!(packs.read(old.pack, old.offset, old.len as usize).is_err());
    assert_eq!(
        &packs.read(new.pack, new.offset, new.len as usize).unwrap()[..],
        b"new record"
    );
}

#[test]
fn punched_records_free_their_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let packs = Packs::open(dir.path().join("packs"), HashMap::new()).unwrap();
    let record = vec![7u8; 64 << 10];
    let locs: Vec<_> = (0..16)
        .map(|_| packs.append(0, &[&record], |_| Ok(())).unwrap())
        .collect();
    packs.sync().unwrap();
    let path = packs.path(locs[0].pack);
    let before = fs::metadata(&path).unwrap().blocks();
    packs.punch(&locs[..8]).unwrap();
    let after = fs::metadata(&path).unwrap().blocks();
    let punched = 8 * record.len() as u64 / 512;
    assert!(before - after + 16 >= punched, "blocks {before} -> {after}");
    assert_eq!(
        packs
            .read(locs[9].pack, locs[9].offset, record.len())
            .unwrap()
            .to_vec(),
        record
    );
}

#[test]
fn streams_written_at_once_get_appenders_of_their_own() {
    let mut owners = Owners::default();
    let streams: Vec<u64> = (0..APPENDERS as u64).map(|i| 100 + 8 * i).collect();
    let slots: Vec<usize> = streams.iter().map(|&s| owners.slot_for(s)).collect();
    let mut distinct = slots.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), APPENDERS, "{slots:?}");
    // A stream keeps its appender while it writes.
    for (&s, &slot) in streams.iter().zip(&slots).rev() {
        assert_eq!(owners.slot_for(s), slot);
    }
    // A new stream takes the appender idle longest: the last stream's, as
    // they were used again in reverse.
    assert_eq!(owners.slot_for(7), slots[APPENDERS - 1]);
}

/// Allocated bytes and length of the pack at `path`.
fn allocated_and_len(path: &Path) -> (u64, u64) {
    let md = fs::metadata(path).unwrap();
    (md.blocks() * 512, md.len())
}

#[test]
fn blocks_reserved_ahead_of_appends_are_given_back_at_drop_and_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let packs = Packs::open(dir.path().join("packs"), HashMap::new()).unwrap();
    let record = vec![3u8; 100_000];
    let a = packs.append(0, &[&record], |_| Ok(())).unwrap();
    let path = packs.path(a.pack);
    let (allocated, len) = allocated_and_len(&path);
    assert_eq!(len, 100_000, "the reserve is not part of the pack's length");
    assert!(allocated >= RESERVE_STEP, "reserved {allocated} bytes");
    drop(packs);
    let (allocated, _) = allocated_and_len(&path);
    assert!(
        allocated <= 100_000u64.next_multiple_of(4096),
        "{allocated} bytes after drop"
    );

    // A session that ends without dropping its packs (a crash).
    let sealed = HashMap::from([(a.pack, 100_000)]);
    let packs = Packs::open(dir.path().join("packs"), sealed.clone()).unwrap();
    let b = packs.append(0, &[&record], |_| Ok(())).unwrap();
    let new_path = packs.path(b.pack);
    let mut sealed = sealed;
    sealed.extend(packs.sync().unwrap());
    std::mem::forget(packs);
    assert!(allocated_and_len(&new_path).0 >= RESERVE_STEP);
    let packs = Packs::open(dir.path().join("packs"), sealed).unwrap();
    assert!(!packs.has_leftovers());
    let (allocated, len) = allocated_and_len(&new_path);
    assert!(
        allocated <= len.next_multiple_of(4096),
        "{allocated} bytes after reopen"
    );
    assert_eq!(
        &packs.read(b.pack, b.offset, record.len()).unwrap()[..],
        &record[..]
    );
    assert_eq!(
        &packs.read(a.pack, a.offset, record.len()).unwrap()[..],
        &record[..]
    );
}
