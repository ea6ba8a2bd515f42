//! Unit tests of the chunk pipeline: pack order, moves, chunks sent
//! without their bytes.

use super::*;
use crate::chunk::chunk_id;
use crate::chunk::testdata::noise;

fn cut(data: &[u8]) -> Cut<'_> {
    Cut {
        data,
        id: chunk_id(data),
        guessed: false,
    }
}

#[test]
fn a_streams_batches_land_in_its_pack_in_submission_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let pipeline = Pipeline::start(store.clone(), Arc::default(), 4, 8).unwrap();
    let order = Arc::new(JobOrder::default());
    let mut replies = Vec::new();
    for batch_no in 0..24u64 {
        let mut batch = ChunkBatch::default();
        // Batches of different sizes finish out of order on 4 workers.
        for k in 0..1 + batch_no % 5 {
            let data = noise(9000 + 100 * k as usize, 2 * (batch_no * 8 + k) + 1);
            batch.push(cut(&data), Some(7));
        }
        replies.push(pipeline.submit(batch, &order));
    }
    let mut last_end = 0;
    let mut pack = None;
    for reply in replies {
        for result in reply.recv().unwrap() {
            let Entry::Chunk { id, .. } = result.unwrap() else {
                panic!("noise is not a hole");
            };
            let loc = store.index_entry(id).unwrap().unwrap().packed.unwrap();
            assert_eq!(*pack.get_or_insert(loc.pack), loc.pack, "one pack");
            assert_eq!(loc.offset, last_end, "records side by side, in order");
            last_end = loc.end();
        }
    }
    assert_eq!(pipeline.counters.stored_chunks.load(Ordering::Relaxed), 70);
}

#[test]
fn a_stored_chunk_between_new_ones_moves_into_place_between_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    store.set_relocate_below(64 << 10);
    let pipeline = Pipeline::start(store.clone(), Arc::default(), 2, 4).unwrap();
    let chunks: Vec<Vec<u8>> = (0..5).map(|k| noise(10_000, 2 * k + 1)).collect();
    let ids: Vec<ChunkId> = chunks.iter().map(|c| chunk_id(c)).collect();
    let store_batch = |stream: u64, which: &[usize]| {
        let mut batch = ChunkBatch::default();
        for &k in which {
            batch.push(cut(&chunks[k]), Some(stream));
        }
        let order = Arc::new(JobOrder::default());
        for result in pipeline.submit(batch, &order).recv().unwrap() {
            result.unwrap();
        }
        store.persist_chunks().unwrap();
    };
    let at = |k: usize| store.index_entry(ids[k]).unwrap().unwrap().packed.unwrap();
    store_batch(1, &[1, 3]);
    let (was, neighbour) = (at(1), at(3));
    // Chunk 1 is stored; 0, 2 and 4 are new. Chunk 3 follows chunk 1
    // in the old pack, but not in this batch: it is a stretch of its own.
    store_batch(2, &[0, 1, 2, 3, 4]);
    assert_ne!(at(1), was, "moved");
    assert_eq!(at(1).offset, at(0).end(), "right after chunk 0");
    assert_eq!(at(2).offset, at(1).end(), "right before chunk 2");
    assert_eq!(at(3).offset, at(2).end());
    assert_eq!(at(4).offset, at(3).end());
    assert_ne!(at(3), neighbour);
    assert_eq!(pipeline.counters.moved_chunks.load(Ordering::Relaxed), 2);
    for (k, chunk) in chunks.iter().enumerate() {
        assert_eq!(&*store.read_chunk(ids[k]).unwrap(), &chunk[..]);
    }
}

#[test]
fn chunks_sent_without_their_bytes_count_as_stored_and_pin_their_stretch() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    store.set_relocate_below(64 << 10);
    let pipeline = Pipeline::start(store.clone(), Arc::default(), 2, 4).unwrap();
    let chunks: Vec<Vec<u8>> = (0..5).map(|k| noise(10_000, 3 * k + 2)).collect();
    let ids: Vec<ChunkId> = chunks.iter().map(|c| chunk_id(c)).collect();
    let run = |batch: ChunkBatch| {
        let order = Arc::new(JobOrder::default());
        let results = pipeline.submit(batch, &order).recv().unwrap();
        store.persist_chunks().unwrap();
        results.into_iter().map(|r| r.unwrap()).collect::<Vec<_>>()
    };
    let at = |k: usize| store.index_entry(ids[k]).unwrap().unwrap().packed.unwrap();
    let mut first = ChunkBatch::default();
    for k in [1, 3] {
        first.push(cut(&chunks[k]), Some(1));
    }
    run(first);
    assert!(pipeline.find_stored(ids[0]).is_none(), "not stored yet");
    let (was_1, was_3) = (at(1), at(3));
    // Between new chunks, chunk 3 alone would move (as in the test
    // above); sent without its bytes, like chunk 1, it stays.
    let mut batch = ChunkBatch::default();
    for (k, chunk) in chunks.iter().enumerate() {
        match pipeline.find_stored(ids[k]) {
            Some(placement) => batch.push_stored(cut(chunk), Some(2), placement),
            None => batch.push(cut(chunk), Some(2)),
        }
    }
    assert_eq!(batch.data.len(), 3 * 10_000, "only the new chunks' bytes");
    let entries = run(batch);
    let want: Vec<Entry> = ids
        .iter()
        .map(|&id| Entry::Chunk { id, len: 10_000 })
        .collect();
    assert_eq!(entries, want);
    assert_eq!((at(1), at(3)), (was_1, was_3), "pinned: not moved");
    let counters = &pipeline.counters;
    assert_eq!(counters.moved_chunks.load(Ordering::Relaxed), 0);
    assert_eq!(counters.dedup_chunks.load(Ordering::Relaxed), 2);
    for (k, chunk) in chunks.iter().enumerate() {
        assert_eq!(&*store.read_chunk(ids[k]).unwrap(), &chunk[..]);
    }
}
