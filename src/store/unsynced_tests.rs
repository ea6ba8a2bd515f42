//! Crash recovery of pack records indexed before their pack was synced.

use crate::chunk::chunk_id;
use crate::store::Store;

/// Records a commit made without a sync, as a lazy close does.
fn put_pending_commit(store: &Store) {
    let rec =
        crate::store::records::InodeRecord::new(crate::store::records::FileKind::File, 0o644, 0, 0);
    let mut txn = store.txn();
    txn.put_pending(&crate::store::PendingCommit::new(
        crate::ids::Ino(99),
        &rec,
        crate::ids::ManifestId(99),
    ));
    store.commit(txn, false).unwrap();
}

/// Each pack file's length.
fn pack_lengths(store: &std::path::Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut out: Vec<_> = std::fs::read_dir(store.join("packs"))
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.path(), e.metadata().unwrap().len()))
        .collect();
    out.sort();
    out
}

#[test]
fn packed_chunks_written_after_the_last_persist_survive_a_crash_of_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let first: Vec<u8> = (0..40000u32).map(|i| (i * 7 % 251) as u8).collect();
    let after: Vec<u8> = (0..40000u32).map(|i| (i * 11 % 253) as u8).collect();
    {
        let store = Store::open(dir.path()).unwrap();
        store.put_chunk(chunk_id(&first), &first, Some(1)).unwrap();
        store.persist_chunks().unwrap();
        store.put_chunk(chunk_id(&after), &after, Some(1)).unwrap();
        put_pending_commit(&store);
    }
    // The process died; its page cache did not: every record is checked
    // against its id, kept, and made durable.
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(&*store.read_chunk(chunk_id(&first)).unwrap(), &first[..]);
    assert_eq!(&*store.read_chunk(chunk_id(&after)).unwrap(), &after[..]);
    drop(store);
    let lengths = pack_lengths(dir.path());
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(&*store.read_chunk(chunk_id(&after)).unwrap(), &after[..]);
    assert_eq!(
        pack_lengths(dir.path()),
        lengths,
        "nothing cut at the next open"
    );
}

#[test]
fn packed_chunks_no_commit_names_are_cut_after_a_crash_without_being_read() {
    let dir = tempfile::tempdir().unwrap();
    let kept: Vec<u8> = (0..40000u32).map(|i| (i * 7 % 251) as u8).collect();
    let orphan: Vec<u8> = (0..40000u32).map(|i| (i * 13 % 241) as u8).collect();
    let synced;
    {
        let store = Store::open(dir.path()).unwrap();
        store.put_chunk(chunk_id(&kept), &kept, Some(1)).unwrap();
        store.persist_chunks().unwrap();
        synced = pack_lengths(dir.path());
        // A stream still being written when the daemon died.
        store
            .put_chunk(chunk_id(&orphan), &orphan, Some(1))
            .unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert!(!store.has_chunk(chunk_id(&orphan)).unwrap());
    assert_eq!(pack_lengths(dir.path()), synced, "cut back");
    assert_eq!(&*store.read_chunk(chunk_id(&kept)).unwrap(), &kept[..]);
}

#[test]
fn packed_chunks_a_power_loss_took_are_gone_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let kept: Vec<u8> = (0..40000u32).map(|i| (i * 7 % 251) as u8).collect();
    let lost: Vec<u8> = (0..40000u32).map(|i| (i * 11 % 253) as u8).collect();
    let (kept_id, lost_id) = (chunk_id(&kept), chunk_id(&lost));
    let synced;
    {
        let store = Store::open(dir.path()).unwrap();
        store.put_chunk(kept_id, &kept, Some(1)).unwrap();
        store.persist_chunks().unwrap();
        synced = pack_lengths(dir.path());
        // Written after the last persist: a power loss may lose its
        // bytes. A commit naming it without a sync leaves a pending key.
        store.put_chunk(lost_id, &lost, Some(1)).unwrap();
        assert!(store.has_chunk(lost_id).unwrap());
        put_pending_commit(&store);
    }
    // The power loss: what was not synced never reached the disk, but
    // the index entry, in the WAL, did.
    for (path, len) in &synced {
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.set_len(*len).unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(&*store.read_chunk(kept_id).unwrap(), &kept[..]);
    assert!(!store.has_chunk(lost_id).unwrap(), "dedup must not hit it");
    let mut indexed = Vec::new();
    store
        .for_each_chunk(|c| {
            indexed.push(c.id);
            Ok(())
        })
        .unwrap();
    assert_eq!(indexed, [kept_id], "its index entry is purged");
    // Stored again, it reads back.
    store.put_chunk(lost_id, &lost, Some(2)).unwrap();
    assert_eq!(&*store.read_chunk(lost_id).unwrap(), &lost[..]);
}

/// The `unsynced` list: (pack, offset, chunk id), in list order.
fn list(store: &Store) -> Vec<(u32, u64, crate::ids::ChunkId)> {
    let cf = store.cf(crate::store::schema::CF_UNSYNCED);
    let mut out = Vec::new();
    for kv in store.db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
        let (k, v) = kv.unwrap();
        let pack = u32::from_be_bytes(k[..4].try_into().unwrap());
        let offset = u64::from_be_bytes(k[4..].try_into().unwrap());
        for id in v.chunks_exact(16) {
            out.push((pack, offset, crate::ids::ChunkId::from_slice(id).unwrap()));
        }
    }
    out
}

/// The chunk ids the `unsynced` list holds, in list order.
fn listed(store: &Store) -> Vec<crate::ids::ChunkId> {
    list(store).into_iter().map(|(_, _, id)| id).collect()
}

/// `n` bytes that differ for every `seed`.
fn bytes(n: u32, seed: u32) -> Vec<u8> {
    (0..n).map(|i| (i * seed % 251) as u8).collect()
}

#[test]
fn each_packed_chunk_is_listed_until_a_sync_makes_it_durable() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (a, b, c) = (bytes(40000, 7), bytes(40000, 11), bytes(40000, 13));
    store.put_chunk(chunk_id(&a), &a, Some(1)).unwrap();
    store.put_chunk(chunk_id(&b), &b, Some(2)).unwrap();
    // A chunk kept in RocksDB (a small file's) is durable with the WAL.
    store.put_chunk(chunk_id(&c), &c, None).unwrap();
    let mut both = listed(&store);
    both.sort();
    let mut want = vec![chunk_id(&a), chunk_id(&b)];
    want.sort();
    assert_eq!(both, want);
    store.persist_chunks().unwrap();
    assert!(listed(&store).is_empty(), "the sync unlisted them");
    store.put_chunk(chunk_id(&c), &c, Some(1)).unwrap();
    assert_eq!(listed(&store), [chunk_id(&c)], "written after the sync");
}

#[test]
fn the_open_after_a_crash_checks_the_listed_records_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (kept, unlisted) = (bytes(40000, 7), bytes(40000, 11));
    {
        let store = Store::open(dir.path()).unwrap();
        store.put_chunk(chunk_id(&kept), &kept, Some(1)).unwrap();
        store
            .put_chunk(chunk_id(&unlisted), &unlisted, Some(1))
            .unwrap();
        put_pending_commit(&store);
        // Take one record off the list: the open must not find it by
        // walking the index.
        let (pack, offset, _) = list(&store)
            .into_iter()
            .find(|&(_, _, id)| id == chunk_id(&unlisted))
            .unwrap();
        store
            .db
            .delete_cf(
                store.cf(crate::store::schema::CF_UNSYNCED),
                crate::store::schema::unsynced_key(pack, offset),
            )
            .unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(&*store.read_chunk(chunk_id(&kept)).unwrap(), &kept[..]);
    assert!(
        !store.has_chunk(chunk_id(&unlisted)).unwrap(),
        "not checked, so not made durable"
    );
    assert!(listed(&store).is_empty(), "the list is reset");
}

#[test]
fn a_store_made_before_the_list_is_walked_once_then_listed() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (bytes(40000, 7), bytes(40000, 11));
    {
        let store = Store::open(dir.path()).unwrap();
        store.put_chunk(chunk_id(&first), &first, Some(1)).unwrap();
        put_pending_commit(&store);
        // What a format-2 build leaves: the same index entry, no list.
        store
            .db
            .put_cf(
                store.cf(crate::store::schema::CF_META),
                crate::store::schema::META_FORMAT,
                2u32.to_le_bytes(),
            )
            .unwrap();
        let mut batch = rocksdb::WriteBatch::default();
        store.reset_unsynced(&mut batch);
        batch.put_cf(
            store.cf(crate::store::schema::CF_META),
            crate::store::schema::META_FORMAT,
            2u32.to_le_bytes(),
        );
        store.db.write(batch).unwrap();
        assert!(!store.unsynced_are_listed().unwrap());
        assert!(listed(&store).is_empty());
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        &*store.read_chunk(chunk_id(&first)).unwrap(),
        &first[..],
        "found by walking the index and made durable"
    );
    assert!(store.unsynced_are_listed().unwrap());
    store
        .put_chunk(chunk_id(&second), &second, Some(1))
        .unwrap();
    assert_eq!(listed(&store), [chunk_id(&second)]);
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert!(store.unsynced_are_listed().unwrap(), "stays listed");
    assert!(
        !store.has_chunk(chunk_id(&second)).unwrap(),
        "no commit named it: dropped"
    );
}

#[test]
fn a_batch_of_records_is_listed_under_one_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let parts = [bytes(30000, 7), bytes(30000, 11), bytes(30000, 13)];
    let data = parts.concat();
    let mut coder = crate::chunk::Coder::default();
    let encoded: Vec<_> = parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            store.encode_chunk(chunk_id(p), &data, i * 30000..(i + 1) * 30000, &mut coder)
        })
        .collect();
    store.put_packed(5, &data, &encoded).unwrap();
    let found = list(&store);
    let ids: Vec<_> = found.iter().map(|&(_, _, id)| id).collect();
    assert_eq!(ids, parts.iter().map(|p| chunk_id(p)).collect::<Vec<_>>());
    assert!(found
        .iter()
        .all(|&(pack, offset, _)| (pack, offset) == (found[0].0, found[0].1)));
    assert_eq!(
        store
            .db
            .iterator_cf(
                store.cf(crate::store::schema::CF_UNSYNCED),
                rocksdb::IteratorMode::Start
            )
            .count(),
        1
    );
}

#[test]
fn a_damaged_list_entry_refuses_the_open_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let cf = store.cf(crate::store::schema::CF_UNSYNCED);
        // Not a whole number of 16-byte ids.
        store
            .db
            .put_cf(cf, crate::store::schema::unsynced_key(1, 0), [7u8; 20])
            .unwrap();
    }
    for _ in 0..2 {
        match Store::open(dir.path()) {
            Err(crate::store::StoreError::Corrupt(what)) => {
                assert!(what.contains("unsynced record list"), "{what}")
            }
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("a damaged list was accepted"),
        }
    }
}
