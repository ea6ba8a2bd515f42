use super::*;
use crate::chunk::chunk_id;
use crate::store::records::{FileKind, VersionRecord};

fn version_of(ino: Ino, manifest: ManifestId, size: u64) -> VersionRecord {
    VersionRecord {
        manifest,
        size,
        perm: 0o644,
        uid: 0,
        gid: 0,
        mtime: Time { secs: 1, nanos: 0 },
        committed: Time { secs: 1, nanos: 0 },
        ino,
    }
}

/// A file at inode 100 whose content went from manifest 10 (durable) to
/// 11 and then 12 in two lazy commits (versions 1..3 at path 5); manifest
/// `n` holds one chunk, `chunk(n)`.
fn three_versions(store: &Store) -> InodeRecord {
    let (ino, path) = (Ino(100), PathId(5));
    let mut rec = InodeRecord::new(FileKind::File, 0o644, 0, 0);
    let mut txn = store.txn();
    for n in 10..13u64 {
        let id = chunk_id(&n.to_le_bytes());
        txn.put_segment(ManifestId(n), 0, &[Entry::Chunk { id, len: 8 }]);
    }
    for (seq, n) in [(1, 10u64), (2, 11), (3, 12)] {
        let manifest = ManifestId(n);
        if n > 10 {
            let mut pending = PendingCommit::new(ino, &rec, manifest);
            pending.version = Some((path, seq));
            txn.put_pending(&pending);
        }
        rec.content = manifest;
        rec.size = n;
        rec.mtime = Time {
            secs: n as i64,
            nanos: 0,
        };
        txn.put_version(path, seq, &version_of(ino, manifest, n));
    }
    txn.put_inode(ino, &rec);
    store.commit(txn, false).unwrap();
    rec
}

/// A new store holding [`three_versions`].
fn store_with_three_versions() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    three_versions(&store);
    (dir, store)
}

/// What the open does with the pending commits on record.
fn recover(store: &Store, lost: &HashSet<ChunkId>) -> Result<usize> {
    store.recover_pending(&store.pending_commits()?, lost)
}

fn chunk(n: u64) -> ChunkId {
    chunk_id(&n.to_le_bytes())
}

#[test]
fn pending_commits_round_trip() {
    let mut rec = InodeRecord::new(FileKind::File, 0o600, 1, 2);
    rec.content = ManifestId(77);
    rec.size = 1234;
    rec.mtime = Time { secs: -5, nanos: 9 };
    let mut p = PendingCommit::new(Ino(42), &rec, ManifestId(78));
    assert_eq!(PendingCommit::decode(&p.encode()).unwrap(), p);
    p.version = Some((PathId(3), 9));
    assert_eq!(PendingCommit::decode(&p.encode()).unwrap(), p);
    assert!(PendingCommit::decode(&p.encode()[..20]).is_err());
}

#[test]
fn only_commits_naming_a_lost_chunk_roll_back_newest_first() {
    let (_dir, store) = store_with_three_versions();
    // The middle commit's chunk is lost, the newest one's is not: the
    // newest stays the content, the middle version's record goes.
    let lost: HashSet<ChunkId> = [chunk(11)].into();
    assert_eq!(recover(&store, &lost).unwrap(), 1);
    let rec = store.inode(Ino(100)).unwrap().unwrap();
    assert_eq!((rec.content, rec.size), (ManifestId(12), 12));
    assert!(store.version(PathId(5), 2).unwrap().is_none());
    assert!(store.version(PathId(5), 3).unwrap().is_some());
    assert!(
        store.pending_commits().unwrap().is_empty(),
        "keys forgotten"
    );
}

#[test]
fn a_file_whose_last_two_commits_were_lost_gets_its_durable_content_back() {
    let (_dir, store) = store_with_three_versions();
    assert_eq!(
        store.pending_prev_manifests().unwrap(),
        [ManifestId(10), ManifestId(11)]
    );
    let lost: HashSet<ChunkId> = [chunk(11), chunk(12)].into();
    assert_eq!(recover(&store, &lost).unwrap(), 2);
    let rec = store.inode(Ino(100)).unwrap().unwrap();
    assert_eq!(
        (rec.content, rec.size, rec.mtime.secs),
        (ManifestId(10), 10, 10)
    );
    assert!(store.version(PathId(5), 1).unwrap().is_some());
    assert!(store.version(PathId(5), 2).unwrap().is_none());
    assert!(store.version(PathId(5), 3).unwrap().is_none());
    // Nothing lost (a crash of the daemon alone): nothing rolls back.
    three_versions(&store);
    assert_eq!(recover(&store, &HashSet::new()).unwrap(), 0);
    assert_eq!(
        store.inode(Ino(100)).unwrap().unwrap().content,
        ManifestId(12)
    );
}

#[test]
fn a_sync_forgets_the_pending_commits_made_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(!store.has_pending());
    three_versions(&store);
    assert!(store.has_pending());
    assert_eq!(store.pending_commits().unwrap().len(), 2);
    assert!(store.has_pending_for(Ino(100)));
    assert!(!store.has_pending_for(Ino(101)), "another file");
    store.sync().unwrap();
    assert!(!store.has_pending());
    assert!(!store.has_pending_for(Ino(100)));
    assert!(store.pending_commits().unwrap().is_empty());
    three_versions(&store);
    assert!(store.has_pending_for(Ino(100)));
    assert_eq!(
        store.pending_commits().unwrap().len(),
        2,
        "new ones are kept"
    );
}

#[test]
fn a_lost_version_goes_from_every_path_a_rename_carried_it_to() {
    let (_dir, store) = store_with_three_versions();
    // Renamed after its lazy commit: the newest content arrived at path 6.
    let mut txn = store.txn();
    txn.put_version(PathId(6), 1, &version_of(Ino(100), ManifestId(12), 12));
    txn.put_version(PathId(6), 2, &version_of(Ino(100), ManifestId(10), 10));
    store.commit(txn, false).unwrap();
    assert_eq!(recover(&store, &[chunk(12)].into()).unwrap(), 1);
    assert!(store.version(PathId(6), 1).unwrap().is_none());
    assert!(
        store.version(PathId(6), 2).unwrap().is_some(),
        "an intact one stays"
    );
    assert!(store.version(PathId(5), 2).unwrap().is_some());
    assert!(store.version(PathId(5), 3).unwrap().is_none());
}

#[test]
fn a_damaged_pending_key_refuses_the_open_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let mut txn = store.txn();
        txn.batch
            .put_cf(store.cf(CF_META), pending_key(0), b"not a commit");
        store.commit(txn, true).unwrap();
    }
    for _ in 0..2 {
        match Store::open(dir.path()) {
            Err(StoreError::Corrupt(why)) => assert!(why.contains("pending"), "{why}"),
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("opened over a damaged pending commit"),
        }
    }
}

#[test]
fn appends_write_back_eagerly_only_once_durability_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.set_lazy_durability(true);
    assert!(!store.packs.eager_writeback(), "a lazy store starts lazy");
    store.background_sync().unwrap();
    assert!(
        !store.packs.eager_writeback(),
        "the periodic sync asks for nothing"
    );
    store.sync().unwrap();
    assert!(store.packs.eager_writeback(), "an fsync or a rename asked");

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.persist_chunks().unwrap();
    assert!(store.packs.eager_writeback(), "a commit that syncs asked");

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.set_lazy_durability(false);
    assert!(
        store.packs.eager_writeback(),
        "every close syncs with --sync-interval 0"
    );
}
