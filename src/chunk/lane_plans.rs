//! Which lane codes a run of neighbouring chunks gets (a batch of one
//! file's chunks): [`LanePlans`] plans a chunk's lanes and reuses that plan
//! for the next ones while they stay alike. The format and the coding
//! itself are `lanes.rs`'s.

use super::lanes::{code, plan_lane, too_spread, LaneCode, SAMPLE};

/// Chunks coded with a reused plan before one is planned afresh: a
/// batch's worth (about 16 chunks of 16 KiB), so a batch is planned once
/// unless a chunk fails the checks. Planning every fifth chunk instead
/// cost 9% more coding time and stored the same bytes on fp32 weights.
const REPLAN_AFTER: usize = 16;
/// Groups of a lane left uncoded that a reused plan quick-samples: if any
/// such lane looks concentrated, the chunk is not like the last one.
const RECHECK_SAMPLE: usize = 64;
/// 64 random bytes hold about 57 distinct values, exponent bytes about 15.
const MAX_RECHECK_DISTINCT: usize = 40;

/// How a run of neighbouring chunks (a batch of one file's) was coded:
/// the chunks of one tensor have the same exponent bytes, and planning
/// them took 40% of coding's time. The plan of one chunk is reused for up
/// to [`REPLAN_AFTER`] next ones, and checked on each: a coded lane must
/// escape no more than planning allows, and an uncoded lane must still
/// look like noise. A chunk that fails either (a new tensor, a constant
/// run) is planned afresh, as is the one after [`REPLAN_AFTER`] reuses.
///
/// Lanes are counted from each chunk's first byte, and content-defined
/// chunks start anywhere: the exponents of one tensor fall in lane 3 of
/// one chunk and lane 1 of the next. Plans are therefore kept by *run*
/// lane (the byte's position in the run, mod 4), and each chunk says
/// where in the run it starts ([`LanePlans::seek`]).
#[derive(Default)]
pub struct LanePlans {
    /// The last plan, by run lane.
    last: Option<[Option<LaneCode>; 4]>,
    reused: usize,
    /// Where the next chunk starts in the run.
    position: u64,
}

impl LanePlans {
    /// The next chunk starts `position` bytes into the run.
    pub fn seek(&mut self, position: u64) {
        self.position = position;
    }

    /// The chunk just coded was `len` bytes long.
    pub fn advance(&mut self, len: usize) {
        self.position += len as u64;
    }

    /// The run lane of the next chunk's lane `lane`.
    fn run_lane(&self, lane: usize) -> usize {
        (self.position as usize + lane) % 4
    }

    /// The lane-coded payload of `raw` (the next chunk), or `None` when
    /// no lane pays, planned afresh; the plan is kept for the next chunks.
    pub fn plan(&mut self, raw: &[u8]) -> Option<Vec<u8>> {
        let (groups, tail) = raw.as_chunks::<4>();
        if groups.len() < SAMPLE {
            return None;
        }
        let plans: [Option<LaneCode>; 4] = std::array::from_fn(|lane| plan_lane(groups, lane));
        let out = code(
            std::array::from_fn(|lane| plans[lane].as_ref()),
            groups,
            tail,
            false,
        );
        let mut by_run: [Option<LaneCode>; 4] = Default::default();
        for (lane, plan) in plans.into_iter().enumerate() {
            by_run[self.run_lane(lane)] = plan;
        }
        self.last = Some(by_run);
        self.reused = 0;
        out
    }

    /// `raw` (the next chunk) coded with the last plan, if there is one to
    /// reuse and the chunk passes its checks: then it is like the last one.
    pub fn reuse(&mut self, raw: &[u8]) -> Option<Vec<u8>> {
        let by_run = self.last.as_ref()?;
        let (groups, tail) = raw.as_chunks::<4>();
        if self.reused >= REPLAN_AFTER || groups.len() < SAMPLE {
            return None;
        }
        self.reused += 1;
        let plans: [Option<&LaneCode>; 4] =
            std::array::from_fn(|lane| by_run[self.run_lane(lane)].as_ref());
        // Coded first: the coding's pass over the chunk brings it into
        // the cache, and the samples below then hit it (taken first, each
        // of them missed).
        let coded = code(plans, groups, tail, true)?;
        let noise_still = plans
            .iter()
            .enumerate()
            .filter(|(_, plan)| plan.is_none())
            .all(|(lane, _)| {
                let sample = groups.iter().step_by(groups.len() / RECHECK_SAMPLE);
                too_spread(sample.map(|group| group[lane]), MAX_RECHECK_DISTINCT)
            });
        noise_still.then_some(coded)
    }
}

#[cfg(test)]
mod tests {
    use super::super::lanes::decode;
    use super::super::testdata::weights;
    use super::*;

    const CHUNK: usize = 16384;

    /// `chunk` coded as the next of the run, and whether that reused
    /// the last plan.
    fn code_next(plans: &mut LanePlans, chunk: &[u8]) -> (Vec<u8>, bool) {
        match plans.reuse(chunk) {
            Some(coded) => (coded, true),
            None => (plans.plan(chunk).expect("weights are lane coded"), false),
        }
    }

    #[test]
    fn a_plan_is_reused_for_alike_chunks_then_made_afresh() {
        let fp32 = weights((2 * REPLAN_AFTER + 4) * CHUNK / 4, 0x1a_0001);
        let mut plans = LanePlans::default();
        let mut reused = Vec::new();
        for chunk in fp32.chunks_exact(CHUNK) {
            let (coded, was_reused) = code_next(&mut plans, chunk);
            reused.push(was_reused);
            assert_eq!(decode(&coded, chunk.len()).unwrap(), chunk);
        }
        let planned: Vec<usize> = (0..reused.len()).filter(|&i| !reused[i]).collect();
        let every = REPLAN_AFTER + 1;
        assert_eq!(planned, [0, every, 2 * every], "{reused:?}");
    }

    #[test]
    fn chunks_that_start_anywhere_in_the_run_reuse_its_plan() {
        // Content-defined chunks of one tensor, of odd lengths: each starts
        // at another lane, and still reuses the plan of the first.
        let fp32 = weights(5 * CHUNK / 4, 0x1a_0003);
        let mut plans = LanePlans::default();
        let mut at = 0;
        let mut reused = Vec::new();
        for len in [CHUNK - 1, CHUNK + 1, CHUNK - 2, CHUNK + 3] {
            let chunk = &fp32[at..at + len];
            let (coded, was_reused) = code_next(&mut plans, chunk);
            reused.push(was_reused);
            assert_eq!(decode(&coded, len).unwrap(), chunk, "at {at}");
            plans.advance(len);
            at += len;
        }
        assert_eq!(reused, [false, true, true, true]);
        // Told the wrong start, the next chunk's exponents fall in another
        // lane than the plan's: planned afresh.
        plans.seek(at as u64 + 1);
        assert!(plans.reuse(&fp32[at..at + CHUNK / 2]).is_none());
    }

    #[test]
    fn a_chunk_unlike_the_last_is_planned_afresh() {
        let fp32 = weights(2 * CHUNK / 4 + 1, 0x1a_0002);
        let bf16: Vec<u8> = fp32.chunks_exact(4).flat_map(|f| [f[2], f[3]]).collect();
        let ones: Vec<u8> = std::iter::repeat_n(1.0f32.to_le_bytes(), CHUNK / 4)
            .flatten()
            .collect();
        for (what, unlike) in [
            ("another alignment", &fp32[CHUNK + 1..2 * CHUNK + 1]),
            ("bf16", &bf16[..CHUNK]),
            ("a constant", &ones[..]),
        ] {
            let mut plans = LanePlans::default();
            plans.plan(&fp32[..CHUNK]).expect("weights are lane coded");
            assert!(plans.reuse(&fp32[CHUNK..2 * CHUNK]).is_some(), "{what}");
            assert!(plans.reuse(unlike).is_none(), "{what} reused the fp32 plan");
        }
    }
}
