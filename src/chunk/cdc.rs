//! Push-based content-defined chunking, with one of three cut-point
//! searches ([`CutSearch`]): `rollsum` (new stores' default: a rolling sum
//! and a hash over the 64 bytes up to each position, with FastCDC's search
//! where no position of a window passes), FastCDC v2020's (searched by
//! `gear`, two lanes at a time; every store made before `rollsum`), or
//! `window`'s (opt-in, fast but blind on low-entropy data). A store keeps
//! the one it was made with (`store::chunker`): cuts elsewhere would
//! deduplicate nothing.
//!
//! `write()` hands us data in whatever pieces the kernel chose; the chunk
//! boundaries must not depend on those pieces. FastCDC's cut point depends on
//! how many bytes it may look at when fewer than the average are available,
//! so a cut is only taken once `max` bytes are buffered (or at `finish`):
//! then the result is the same as chunking the whole stream at once.
//!
//! Each chunk is handed on with its id. Given [`Successors`], the chunker
//! first tries where the chunk that followed the previous one last time
//! ended: if the bytes there hash to that chunk, the cut is taken without
//! searching (see `successors` for why that cut is the one the search would
//! find).

use std::sync::Arc;

use fastcdc::v2020::{select_masks, Normalization};

use super::gear;
use super::hash::chunk_id;
use super::rollsum;
use super::successors::{Guess, Successors};
use crate::ids::ChunkId;

/// How cut points are searched (`ckptfs mount --chunker`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutSearch {
    /// FastCDC v2020's gear hash, as the `fastcdc` crate cuts.
    FastCdc,
    /// A hash of the 8 bytes up to each position (`window.rs`), for stores
    /// made with `--chunker window`.
    Window,
    /// A rolling sum and a hash of the 64 bytes up to each position
    /// (`rollsum.rs`); FastCDC's search where no position passes.
    Rollsum,
}

impl CutSearch {
    /// The search a new store gets unless its first mount asks otherwise:
    /// `rollsum`. On float tensors it finds FastCDC's dedup at half its
    /// CPU; on data with few distinct byte values, where its sum stays
    /// blind, it cuts as FastCDC does. (`window` is as fast, but on data
    /// with few distinct 4-byte patterns, such as int64 values below 1000
    /// or JSON lines, it finds few cuts.)
    pub const NEW_STORES: CutSearch = CutSearch::Rollsum;

    /// The search of a store that records none: every store made before
    /// stores recorded theirs.
    pub const UNRECORDED: CutSearch = CutSearch::FastCdc;

    /// Every search, by name.
    pub const ALL: [CutSearch; 3] = [CutSearch::FastCdc, CutSearch::Window, CutSearch::Rollsum];
}

impl std::str::FromStr for CutSearch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fastcdc" => Ok(CutSearch::FastCdc),
            "window" => Ok(CutSearch::Window),
            "rollsum" => Ok(CutSearch::Rollsum),
            _ => Err(format!(
                "unknown chunker {s:?} (rollsum, fastcdc or window)"
            )),
        }
    }
}

impl std::fmt::Display for CutSearch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CutSearch::FastCdc => "fastcdc",
            CutSearch::Window => "window",
            CutSearch::Rollsum => "rollsum",
        })
    }
}

/// Minimum, average and maximum chunk sizes, and the cut search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkParams {
    /// No cut before this many bytes.
    pub min: usize,
    /// The target average.
    pub avg: usize,
    /// A cut is forced here.
    pub max: usize,
    /// How cut points are found.
    pub search: CutSearch,
}

impl ChunkParams {
    /// The usual FastCDC spread around an average: min avg/4, max avg*4.
    /// `avg` is clamped to fastcdc's limits and rounded to an even number.
    /// Cuts are FastCDC's; see [`ChunkParams::searched_by`].
    pub fn with_average(avg: usize) -> Self {
        let avg = avg.clamp(1024, 4 * 1024 * 1024) & !1;
        ChunkParams {
            min: (avg / 4).max(256),
            avg,
            max: (avg * 4).min(16 * 1024 * 1024),
            search: CutSearch::FastCdc,
        }
    }

    /// The same sizes, with cuts found by `search`.
    pub fn searched_by(self, search: CutSearch) -> Self {
        ChunkParams { search, ..self }
    }
}

impl Default for ChunkParams {
    fn default() -> Self {
        ChunkParams::with_average(16 * 1024)
    }
}

/// A chunk as it is cut: its bytes and its id.
#[derive(Clone, Copy, Debug)]
pub struct Cut<'a> {
    /// The chunk's bytes.
    pub data: &'a [u8],
    /// `chunk_id(data)`.
    pub id: ChunkId,
    /// True when the cut was a guess that held: the chunk repeats data the
    /// chunker's successor map saw, so it is likely stored already.
    pub guessed: bool,
}

/// What the chunker may learn from a cut (`Successors`).
#[derive(Clone, Copy)]
enum Learn {
    /// The cut depends on the chunk's bytes alone: a chunk with these
    /// bytes is cut here wherever it appears, so it may be guessed after
    /// the chunk before it.
    Successor,
    /// The cut depends on bytes past it too (`rollsum`'s fallback): the
    /// chunk is not learned as a successor, but the next chunk starts
    /// here by content and may be guessed after it.
    NextOnly,
    /// The stream ended here: nothing follows from it.
    Nothing,
}

/// Buffers pushed bytes and yields complete chunks.
pub struct Chunker {
    cutter: Cutter,
    buf: Vec<u8>,
    /// Bytes of `buf` before this offset were already returned as chunks.
    start: usize,
}

/// Finds where the chunk starting a window ends: by the guess from the
/// chunk before, else by searching.
struct Cutter {
    params: ChunkParams,
    mask_s: u64,
    mask_l: u64,
    successors: Option<Arc<Successors>>,
    /// The last chunk, if it was cut by content.
    last: Option<ChunkId>,
    /// Where the next chunk is expected to end.
    guess: Option<Guess>,
    /// `rollsum`: positions of the next window before this one are known
    /// not to pass (`rollsum::find`).
    quiet: usize,
}

impl Chunker {
    /// A chunker with the given sizes.
    pub fn new(params: ChunkParams) -> Self {
        let (mask_s, mask_l) = select_masks(params.avg, Normalization::Level1);
        Chunker {
            cutter: Cutter {
                params,
                mask_s,
                mask_l,
                successors: None,
                last: None,
                guess: None,
                quiet: 0,
            },
            buf: Vec::new(),
            start: 0,
        }
    }

    /// A chunker that learns from and guesses with `successors`.
    pub fn guided(params: ChunkParams, successors: Arc<Successors>) -> Self {
        let mut chunker = Chunker::new(params);
        chunker.cutter.successors = Some(successors);
        chunker
    }

    /// The sizes this chunker cuts with.
    pub fn params(&self) -> ChunkParams {
        self.cutter.params
    }

    /// Bytes pushed but not yet returned in a chunk.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Appends `data`; calls `emit` with every chunk that became complete.
    /// Chunks that lie wholly inside `data` are cut from it in place; only
    /// the bytes around a call's boundaries are copied into the buffer.
    pub fn push(&mut self, data: &[u8], mut emit: impl FnMut(Cut<'_>)) {
        let max = self.cutter.params.max;
        let mut data = data;
        if self.buffered() == 0 {
            self.buf.clear();
            self.start = 0;
        }
        // Finish the chunk that started in an earlier call, from the buffer.
        while self.buffered() > 0 && !data.is_empty() {
            self.buf.drain(..self.start);
            self.start = 0;
            let old = self.buf.len();
            let take = max.saturating_sub(old).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            if self.buf.len() < max {
                return; // all of `data` is buffered; wait for more
            }
            let (cut, id, guessed) = self.next_cut(0, max);
            emit(Cut {
                data: &self.buf[..cut],
                id,
                guessed,
            });
            if cut >= old {
                // The next chunk starts inside `data`: cut it from there.
                self.buf.clear();
                data = &data[cut - old..];
            } else {
                // It starts inside the old bytes: the appended ones are
                // appended again on the next turn.
                self.buf.truncate(old);
                self.start = cut;
            }
        }
        let mut at = 0;
        while data.len() - at >= max {
            let (cut, id, guessed) = self.cutter.cut(&data[at..at + max]);
            emit(Cut {
                data: &data[at..at + cut],
                id,
                guessed,
            });
            at += cut;
        }
        self.buf.extend_from_slice(&data[at..]);
    }

    /// Cuts everything still buffered into chunks and resets the chunker.
    pub fn finish(&mut self, mut emit: impl FnMut(Cut<'_>)) {
        while self.buffered() > 0 {
            let (len, id, guessed) = self.next_cut(self.start, self.buffered());
            let end = self.start + len;
            emit(Cut {
                data: &self.buf[self.start..end],
                id,
                guessed,
            });
            self.start = end;
        }
        self.buf.clear();
        self.start = 0;
        // What follows starts a stream of its own.
        self.cutter.last = None;
        self.cutter.guess = None;
        self.cutter.quiet = 0;
    }

    fn next_cut(&mut self, from: usize, len: usize) -> (usize, ChunkId, bool) {
        let window = from..from + len.min(self.cutter.params.max);
        self.cutter.cut(&self.buf[window])
    }
}

impl Cutter {
    /// Where the first chunk of `window` ends, its id, and whether the cut
    /// was a guess. `window` holds `max` bytes, or all that is left of the
    /// stream.
    fn cut(&mut self, window: &[u8]) -> (usize, ChunkId, bool) {
        if let Some(guess) = self.guess.take() {
            let len = guess.len as usize;
            if len <= window.len() {
                let id = chunk_id(&window[..len]);
                let taken = guess.names(id);
                if let Some(s) = &self.successors {
                    s.count(taken);
                }
                if taken {
                    self.quiet = 0;
                    self.learn(id, len, Learn::Successor);
                    return (len, id, true);
                }
            }
        }
        let (len, learn) = self.search(window);
        let len = len.max(1);
        let id = chunk_id(&window[..len]);
        self.learn(id, len, learn);
        (len, id, false)
    }

    /// Where the search cuts `window`, and what the chunker may learn
    /// from the cut.
    fn search(&mut self, window: &[u8]) -> (usize, Learn) {
        let p = self.params;
        let (mask_s, mask_l) = (self.mask_s, self.mask_l);
        let fastcdc = || gear::cut(window, p.min, p.avg, p.max, mask_s, mask_l);
        // A cut at the end of a short window is where the stream ended,
        // not where the content says; a cut at `max` is by content.
        let by_content = |len: usize| {
            if len < window.len() || len == p.max {
                Learn::Successor
            } else {
                Learn::Nothing
            }
        };
        match p.search {
            CutSearch::FastCdc => {
                let len = fastcdc();
                (len, by_content(len))
            }
            CutSearch::Window => {
                let len = super::window::cut(window, p.min, p.avg, p.max);
                (len, by_content(len))
            }
            CutSearch::Rollsum => match rollsum::find(window, p.min, p.avg, p.max, self.quiet) {
                rollsum::Found::Cut(len) => {
                    self.quiet = 0;
                    (len, Learn::Successor)
                }
                // FastCDC's cut here depends on every byte of the window
                // (none passed), not only on the chunk's.
                rollsum::Found::Quiet(end) => {
                    let len = fastcdc();
                    self.quiet = end.saturating_sub(len);
                    (len, Learn::NextOnly)
                }
            },
        }
    }

    fn learn(&mut self, id: ChunkId, len: usize, learn: Learn) {
        let Some(s) = &self.successors else {
            return;
        };
        match learn {
            Learn::Successor => {
                self.guess = s.follow(self.last, id, len);
                self.last = Some(id);
            }
            Learn::NextOnly => {
                self.guess = s.follow(None, id, len);
                self.last = Some(id);
            }
            Learn::Nothing => self.last = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testdata::noise;
    use super::*;
    use fastcdc::v2020::{select_masks, Normalization};

    /// The default sizes with each cut search.
    fn every() -> [ChunkParams; 3] {
        CutSearch::ALL.map(|s| ChunkParams::default().searched_by(s))
    }

    fn chunk_all(p: ChunkParams, data: &[u8], piece: usize) -> Vec<Vec<u8>> {
        let mut c = Chunker::new(p);
        let mut out = Vec::new();
        for part in data.chunks(piece) {
            c.push(part, |ch| out.push(ch.data.to_vec()));
        }
        c.finish(|ch| out.push(ch.data.to_vec()));
        out
    }

    /// Chunks `data` with `c`; checks every id on the way.
    fn chunk_with(c: &mut Chunker, data: &[u8], piece: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut keep = |ch: Cut<'_>| {
            assert_eq!(ch.id, chunk_id(ch.data));
            out.push(ch.data.to_vec());
        };
        for part in data.chunks(piece) {
            c.push(part, &mut keep);
        }
        c.finish(&mut keep);
        out
    }

    #[test]
    fn guided_cuts_are_the_searched_cuts_and_repeats_skip_the_search() {
        for p in every() {
            guided_cuts_with(p);
        }
    }

    fn guided_cuts_with(p: ChunkParams) {
        let successors = Arc::new(Successors::new(1 << 16));
        let mut c = Chunker::guided(p, successors.clone());
        let data = noise(3_000_000, 11);
        assert_eq!(
            chunk_with(&mut c, &data, 1 << 20),
            chunk_all(p, &data, 1 << 20)
        );
        assert_eq!(successors.counts(), (0, 0), "nothing to guess from yet");

        // The same bytes again, in other pieces: nearly every cut is a guess.
        let again = chunk_with(&mut c, &data, 777);
        assert_eq!(again, chunk_all(p, &data, 1 << 20));
        let (taken, rejected) = successors.counts();
        assert!(
            taken + 3 >= again.len() as u64,
            "{taken} of {}",
            again.len()
        );
        assert_eq!(rejected, 0);

        // Edited bytes: every guess that no longer holds is rejected, and
        // the cuts stay exactly those of a plain search.
        let mut edited = data.clone();
        for at in [5_000, 700_000, 1_400_000, 2_999_000] {
            edited[at] ^= 0x55;
        }
        edited.splice(2_000_000..2_000_000, b"inserted".iter().copied());
        edited.drain(2_500_000..2_500_100);
        let guided = chunk_with(&mut c, &edited, 1 << 20);
        assert_eq!(guided, chunk_all(p, &edited, 1 << 20));
        let (_, rejected) = successors.counts();
        assert!(rejected > 0 && rejected < 20, "{rejected} rejected");
    }

    #[test]
    fn a_file_end_is_never_learned_as_a_cut() {
        // "a" ends inside what "b" continues: a guess from "a"'s last chunk
        // would cut "b" where no content-defined cut is.
        for p in every() {
            let successors = Arc::new(Successors::new(1 << 16));
            let mut c = Chunker::guided(p, successors);
            let b = noise(1_000_000, 5);
            let a = &b[..500_000];
            chunk_with(&mut c, a, 1 << 20);
            assert_eq!(chunk_with(&mut c, &b, 1 << 20), chunk_all(p, &b, 1 << 20));
        }
    }

    #[test]
    fn boundaries_do_not_depend_on_write_sizes() {
        let data = noise(3_000_000, 42);
        for p in every() {
            let a = chunk_all(p, &data, 1 << 20);
            for piece in [
                1,
                777,
                4096,
                p.min - 1,
                p.max - 1,
                p.max,
                p.max + 1,
                3 * p.max + 7,
            ] {
                assert_eq!(
                    a,
                    chunk_all(p, &data, piece),
                    "{p:?}: pieces of {piece} bytes"
                );
            }
            assert_eq!(a.concat(), data);
            assert!(a[..a.len() - 1]
                .iter()
                .all(|ch| ch.len() >= p.min && ch.len() <= p.max));
            let avg = data.len() / a.len();
            assert!(avg > 8 * 1024 && avg < 32 * 1024, "{p:?}: average {avg}");
        }
    }

    #[test]
    fn the_searches_cut_apart_and_default_params_cut_by_fastcdc() {
        let data = noise(1_000_000, 3);
        let [fastcdc, window, rollsum] = every().map(|p| chunk_all(p, &data, 1 << 20));
        assert_ne!(fastcdc, window);
        assert_ne!(fastcdc, rollsum);
        assert_ne!(window, rollsum);
        assert_eq!(chunk_all(ChunkParams::default(), &data, 1 << 20), fastcdc);
        for search in CutSearch::ALL {
            assert_eq!(search.to_string().parse::<CutSearch>(), Ok(search));
        }
        assert!("gear".parse::<CutSearch>().is_err());
    }

    /// `rollsum`'s cuts by their definition: the scalar search of each
    /// window, else FastCDC's.
    fn rollsum_by_definition(p: ChunkParams, data: &[u8]) -> Vec<Vec<u8>> {
        let (mask_s, mask_l) = select_masks(p.avg, Normalization::Level1);
        let mut out = Vec::new();
        let mut at = 0;
        while at < data.len() {
            let window = &data[at..data.len().min(at + p.max)];
            let len = rollsum::find_scalar(window, p.min, p.avg, p.max)
                .unwrap_or_else(|| gear::cut(window, p.min, p.avg, p.max, mask_s, mask_l));
            out.push(window[..len].to_vec());
            at += len;
        }
        out
    }

    #[test]
    fn rollsum_cuts_what_its_sum_cannot_see_as_fastcdc_does() {
        // Random bits: every window's sum is a function of how many ones
        // it holds, and may never pass; FastCDC's search cuts instead.
        let bits: Vec<u8> = noise(1_000_000, 8).iter().map(|b| b & 1).collect();
        let [fastcdc, _, rollsum] = every().map(|p| chunk_all(p, &bits, 1 << 20));
        let sizes: Vec<usize> = rollsum.iter().map(Vec::len).collect();
        let mean = bits.len() / sizes.len();
        assert!((8_000..32_000).contains(&mean), "mean chunk {mean} B");
        let shared = rollsum.iter().filter(|ch| fastcdc.contains(ch)).count();
        assert!(
            shared * 10 >= rollsum.len() * 9,
            "{shared} of {} chunks as FastCDC cut them",
            rollsum.len()
        );

        // Between stretches it cannot see and ones it can, and with the
        // windows it skips as known quiet, the chunker cuts exactly where
        // the definition does, in any pieces, and when it guesses.
        let ternary: Vec<u8> = noise(300_000, 2).iter().map(|b| b % 3).collect();
        let mixed = [
            bits.clone(),
            noise(100_000, 3),
            vec![0; 200_000],
            ternary,
            noise(50_000, 4),
            bits[..70_000].to_vec(),
        ]
        .concat();
        let p = ChunkParams::default().searched_by(CutSearch::Rollsum);
        let expected = rollsum_by_definition(p, &mixed);
        for piece in [777, 65536, 1 << 20] {
            assert_eq!(chunk_all(p, &mixed, piece), expected, "pieces of {piece}");
        }
        let mut guided = Chunker::guided(p, Arc::new(Successors::new(1 << 16)));
        for _ in 0..3 {
            assert_eq!(chunk_with(&mut guided, &mixed, 100_000), expected);
        }
    }

    #[test]
    fn rollsum_learns_the_chunk_after_a_fallback_cut_but_not_the_cut() {
        // Stretches of noise, which the sum cuts, between stretches of
        // random bits, which FastCDC's search cuts.
        let data: Vec<u8> = (0..6u64)
            .flat_map(|k| {
                let bits = noise(200_000, 41 + 2 * k).into_iter().map(|b| b & 1);
                noise(150_000, 21 + 2 * k).into_iter().chain(bits)
            })
            .collect();
        let p = ChunkParams::default().searched_by(CutSearch::Rollsum);
        let expected = rollsum_by_definition(p, &data);
        // Cuts by the sum alone, each after a chunk that started where
        // the content says: every one of them but the first can be
        // guessed the second time.
        let mut at = 0;
        let by_sum = expected
            .iter()
            .filter(|ch| {
                let window = &data[at..data.len().min(at + p.max)];
                at += ch.len();
                rollsum::find_scalar(window, p.min, p.avg, p.max).is_some()
            })
            .count();
        assert!(
            by_sum + 20 < expected.len(),
            "{by_sum} of {}",
            expected.len()
        );

        let successors = Arc::new(Successors::new(1 << 16));
        let mut guided = Chunker::guided(p, successors.clone());
        assert_eq!(chunk_with(&mut guided, &data, 1 << 20), expected);
        assert_eq!(chunk_with(&mut guided, &data, 1 << 20), expected);
        let (taken, rejected) = successors.counts();
        assert_eq!(rejected, 0);
        assert!(
            taken + 1 >= by_sum as u64 && taken <= by_sum as u64,
            "{taken} guesses taken, {by_sum} chunks cut by the sum"
        );
    }

    #[test]
    fn an_insertion_changes_only_nearby_chunks() {
        let data = noise(2_000_000, 7);
        let mut edited = data[..1_000_000].to_vec();
        edited.extend_from_slice(b"inserted bytes");
        edited.extend_from_slice(&data[1_000_000..]);
        for p in every() {
            let a = chunk_all(p, &data, 1 << 20);
            let b = chunk_all(p, &edited, 1 << 20);
            let shared = b.iter().filter(|ch| a.contains(ch)).count();
            assert!(
                shared + 4 >= a.len(),
                "{p:?}: {shared} of {} chunks shared",
                a.len()
            );
        }
    }

    #[test]
    fn zeros_cut_at_max_and_empty_input_gives_nothing() {
        for p in every() {
            let out = chunk_all(p, &vec![0u8; 300_000], 65536);
            assert!(
                out[..out.len() - 1].iter().all(|c| c.len() == 65536),
                "{p:?}"
            );
            assert!(chunk_all(p, &[], 10).is_empty());
        }
    }
}
