//! A set of byte ranges: which parts of a file were written since its last
//! commit (and live in the staging file rather than the base manifest).

use std::collections::BTreeMap;

/// Disjoint, non-adjacent half-open ranges `[start, end)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extents {
    map: BTreeMap<u64, u64>,
}

impl Extents {
    /// Adds `[start, end)`, merging with neighbours.
    pub fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut start, mut end) = (start, end);
        // The range before may overlap or touch.
        if let Some((&s, &e)) = self.map.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
                self.map.remove(&s);
            }
        }
        // Ranges starting inside [start, end] are swallowed.
        let inside: Vec<(u64, u64)> = self.map.range(start..=end).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in inside {
            end = end.max(e);
            self.map.remove(&s);
        }
        self.map.insert(start, end);
    }

    /// Drops everything at or beyond `len`.
    pub fn truncate(&mut self, len: u64) {
        let beyond: Vec<u64> = self.map.range(len..).map(|(&s, _)| s).collect();
        for s in beyond {
            self.map.remove(&s);
        }
        if let Some((&s, e)) = self.map.range_mut(..len).next_back() {
            if *e > len {
                *e = len;
            }
            if s >= *e {
                self.map.remove(&s);
            }
        }
    }

    /// True when some range intersects `[start, end)`.
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        self.ranges_within(start, end).next().is_some()
    }

    /// The parts of the set inside `[start, end)`, in order.
    pub fn ranges_within(&self, start: u64, end: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        // An empty query must not build an inverted BTreeMap range.
        let end = end.max(start);
        let first = self
            .map
            .range(..=start)
            .next_back()
            .filter(|(_, &e)| e > start)
            .map(|(&s, &e)| (s, e));
        let rest = self
            .map
            .range(start.saturating_add(1)..end.max(start.saturating_add(1)))
            .map(|(&s, &e)| (s, e));
        first
            .into_iter()
            .chain(rest.filter(move |&(s, _)| s > start))
            .map(move |(s, e)| (s.max(start), e.min(end)))
            .filter(|(s, e)| s < e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_overlapping_and_touching_ranges() {
        let mut x = Extents::default();
        x.insert(10, 20);
        x.insert(30, 40);
        x.insert(20, 25);
        assert_eq!(
            x.ranges_within(0, 100).collect::<Vec<_>>(),
            vec![(10, 25), (30, 40)]
        );
        x.insert(5, 35);
        assert_eq!(x.ranges_within(0, 100).collect::<Vec<_>>(), vec![(5, 40)]);
    }

    #[test]
    fn clips_to_the_query_and_truncates() {
        let mut x = Extents::default();
        x.insert(0, 10);
        x.insert(20, 30);
        assert_eq!(
            x.ranges_within(5, 25).collect::<Vec<_>>(),
            vec![(5, 10), (20, 25)]
        );
        assert!(!x.overlaps(10, 20));
        assert!(x.overlaps(29, 31));
        x.truncate(25);
        assert_eq!(
            x.ranges_within(0, 100).collect::<Vec<_>>(),
            vec![(0, 10), (20, 25)]
        );
        x.truncate(20);
        assert_eq!(x.ranges_within(0, 100).collect::<Vec<_>>(), vec![(0, 10)]);
        assert_eq!(x.ranges_within(7, 7).next(), None, "empty query");
        assert_eq!(x.ranges_within(9, 3).next(), None, "inverted query");
        assert!(!x.overlaps(10, 10));
        x.truncate(0);
        assert_eq!(x.ranges_within(0, u64::MAX).next(), None);
    }
}
