//! What ckptfs's own per-byte work costs on one core of this machine, with
//! no FUSE, threads or disk around it. `scripts/bench` runs it over the
//! full sequence's first save and adds what a FUSE server that only keeps
//! the bytes costs (`examples/null_fs`): the least CPU a fresh save can
//! take here, which the daemon's CPU is compared with.
//!
//! ```text
//! stage_costs FILE...
//! ```
//!
//! Reads the files into memory, then, [`ROUNDS`] times:
//! - cuts them into chunks fed in 1 MiB pieces, as a FUSE thread does
//!   (`Chunker::push`: the cut search of new stores and every chunk's
//!   xxh3-128), and once more with FastCDC's search (stores made before
//!   stores recorded theirs), for reference;
//! - codes every chunk as a worker does (`Coder`, compression `auto`, a
//!   fresh coder per [`BATCH_BYTES`] of chunks, as per pipeline batch);
//! - copies every byte once, as a request's bytes are copied into a batch.
//!
//! Prints one JSON object: the median seconds per GB of each stage, the
//! chunk count and the coded size over the raw size. Stages are timed by
//! this one thread's wall clock: run it on an otherwise idle machine.

use std::process::ExitCode;
use std::time::Instant;

use ckptfs::chunk::{ChunkParams, Chunker, Coder, Compression, CutSearch};
use ckptfs::tree::BATCH_BYTES;

const ROUNDS: usize = 3;
/// The kernel's largest write request, as ckptfs's FUSE threads get them.
const PIECE: usize = 1 << 20;

/// One round's seconds per stage, and what the chunking and coding made.
struct Round {
    cut_and_id: f64,
    /// With FastCDC's search (stores without a record).
    other_cut_and_id: f64,
    coding: f64,
    copy: f64,
    chunks: usize,
    coded: usize,
}

/// Chunk lengths of `data` cut with `search`, and the seconds it took.
fn cut(data: &[u8], search: CutSearch) -> (Vec<usize>, f64) {
    let started = Instant::now();
    let mut chunker = Chunker::new(ChunkParams::default().searched_by(search));
    let mut lens = Vec::new();
    for piece in data.chunks(PIECE) {
        chunker.push(piece, |cut| lens.push(cut.data.len()));
    }
    chunker.finish(|cut| lens.push(cut.data.len()));
    (lens, started.elapsed().as_secs_f64())
}

fn round(data: &[u8]) -> Round {
    let (_, other_cut_and_id) = cut(data, CutSearch::UNRECORDED);
    let (lens, cut_and_id) = cut(data, CutSearch::NEW_STORES);

    let started = Instant::now();
    let (mut at, mut coded, mut batch) = (0, 0, 0);
    let mut coder = Coder::default();
    for &len in &lens {
        if batch >= BATCH_BYTES {
            (coder, batch) = (Coder::default(), 0);
        }
        let (header, body) = coder.encode_parts(&data[at..at + len], Compression::Auto);
        coded += header.len() + body.len();
        at += len;
        batch += len;
    }
    let coding = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut batch_buf = vec![0u8; PIECE];
    for piece in data.chunks(PIECE) {
        batch_buf[..piece.len()].copy_from_slice(piece);
        std::hint::black_box(&batch_buf);
    }
    let copy = started.elapsed().as_secs_f64();
    Round {
        cut_and_id,
        other_cut_and_id,
        coding,
        copy,
        chunks: lens.len(),
        coded,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() -> ExitCode {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() {
        eprintln!("usage: stage_costs FILE...");
        return ExitCode::from(2);
    }
    let mut data = Vec::new();
    for path in &paths {
        match std::fs::read(path) {
            Ok(bytes) => data.extend_from_slice(&bytes),
            Err(e) => {
                eprintln!("stage_costs: {path}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if data.is_empty() {
        eprintln!("stage_costs: the files are empty");
        return ExitCode::FAILURE;
    }
    let rounds: Vec<Round> = (0..ROUNDS).map(|_| round(&data)).collect();
    let gb = data.len() as f64 / 1e9;
    let per_gb = |stage: fn(&Round) -> f64| median(rounds.iter().map(|r| stage(r) / gb).collect());
    let report = serde_json::json!({
        "bytes": data.len(),
        "rounds": ROUNDS,
        "cut_search": CutSearch::NEW_STORES.to_string(),
        "cut_and_id_s_per_gb": per_gb(|r| r.cut_and_id),
        "other_search": CutSearch::UNRECORDED.to_string(),
        "other_cut_and_id_s_per_gb": per_gb(|r| r.other_cut_and_id),
        "coding_s_per_gb": per_gb(|r| r.coding),
        "copy_s_per_gb": per_gb(|r| r.copy),
        "chunks": rounds[0].chunks,
        "coded_ratio": rounds[0].coded as f64 / data.len() as f64,
    });
    println!("{report}");
    ExitCode::SUCCESS
}
