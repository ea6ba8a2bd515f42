//! Which lane codes a run of neighbouring chunks gets (a batch of one
//! file's chunks): [`LanePlans`] plans a chunk's lanes and reuses that plan
//! for the next ones while they stay alike. The format and the coding
//! itself are `lanes.rs`'s.

use super::lanes::{code, plan_lane, too_spread, LaneCode, SAMPLE};

/// Chunks coded with a reused plan before one is planned afresh.
const REPLAN_AFTER: usize = 4;
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
/// look like noise. A chunk that fails either (a new tensor, another
/// alignment, a constant run) is planned afresh, as is every fifth.
#[derive(Default)]
pub struct LanePlans {
    last: Option<[Option<LaneCode>; 4]>,
    reused: usize,
}

impl LanePlans {
    /// The lane-coded payload of `raw`, or `None` when no lane pays,
    /// planned afresh; the plan is kept for the next chunks.
    pub fn plan(&mut self, raw: &[u8]) -> Option<Vec<u8>> {
        let (groups, tail) = raw.as_chunks::<4>();
        if groups.len() < SAMPLE {
            return None;
        }
        let plans: [Option<LaneCode>; 4] = std::array::from_fn(|lane| plan_lane(groups, lane));
        let out = code(&plans, groups, tail, false);
        self.last = Some(plans);
        self.reused = 0;
        out
    }

    /// `raw` coded with the last plan, if there is one to reuse and the
    /// chunk passes its checks: then it is like the last chunk.
    pub fn reuse(&mut self, raw: &[u8]) -> Option<Vec<u8>> {
        let plans = self.last.as_ref()?;
        let (groups, tail) = raw.as_chunks::<4>();
        if self.reused >= REPLAN_AFTER || groups.len() < SAMPLE {
            return None;
        }
        self.reused += 1;
        let noise_still = plans
            .iter()
            .enumerate()
            .filter(|(_, plan)| plan.is_none())
            .all(|(lane, _)| {
                let sample = groups.iter().step_by(groups.len() / RECHECK_SAMPLE);
                too_spread(sample.map(|group| group[lane]), MAX_RECHECK_DISTINCT)
            });
        if !noise_still {
            return None;
        }
        code(plans, groups, tail, true)
    }
}

#[cfg(test)]
mod tests {
    use super::super::lanes::decode;
    use super::super::testdata::weights;
    use super::*;

    const CHUNK: usize = 16384;

    #[test]
    fn a_plan_is_reused_for_alike_chunks_and_made_afresh_every_fifth() {
        let fp32 = weights(12 * CHUNK / 4, 0x1a_0001);
        let mut plans = LanePlans::default();
        let mut reused = Vec::new();
        for chunk in fp32.chunks_exact(CHUNK) {
            let coded = match plans.reuse(chunk) {
                Some(coded) => {
                    reused.push(true);
                    coded
                }
                None => {
                    reused.push(false);
                    plans.plan(chunk).expect("weights are lane coded")
                }
            };
            assert_eq!(decode(&coded, chunk.len()).unwrap(), chunk);
        }
        let planned: Vec<usize> = (0..reused.len()).filter(|&i| !reused[i]).collect();
        assert_eq!(planned, [0, 5, 10], "{reused:?}");
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
