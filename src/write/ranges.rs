//! A set of byte ranges: which parts of a file were written locally.

use std::collections::BTreeMap;
use std::ops::Range;

/// Disjoint, non-adjacent ranges, kept merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// start -> end
    ranges: BTreeMap<u64, u64>,
}

impl RangeSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn insert(&mut self, range: Range<u64>) {
        if range.start >= range.end {
            return;
        }
        let (mut start, mut end) = (range.start, range.end);
        // Merge with every range that overlaps or touches.
        let touching: Vec<u64> = self
            .ranges
            .range(..=end)
            .filter(|(_, e)| **e >= start)
            .map(|(s, _)| *s)
            .collect();
        for s in touching {
            if let Some(e) = self.ranges.remove(&s) {
                start = start.min(s);
                end = end.max(e);
            }
        }
        self.ranges.insert(start, end);
    }

    /// Drop everything at or beyond `len`.
    pub fn truncate(&mut self, len: u64) {
        let beyond: Vec<u64> = self.ranges.range(len..).map(|(s, _)| *s).collect();
        for s in beyond {
            self.ranges.remove(&s);
        }
        if let Some((_, end)) = self.ranges.range_mut(..len).next_back() {
            if *end > len {
                *end = len;
            }
        }
    }

    /// Whether any byte of `range` is in the set.
    pub fn overlaps(&self, range: &Range<u64>) -> bool {
        self.ranges
            .range(..range.end)
            .next_back()
            .is_some_and(|(_, e)| *e > range.start)
    }

    /// The pieces of `range`, each marked as in the set or not, in order.
    pub fn split(&self, range: Range<u64>) -> Vec<(Range<u64>, bool)> {
        let mut out = Vec::new();
        let mut at = range.start;
        let first = self
            .ranges
            .range(..=range.start)
            .next_back()
            .map(|(s, _)| *s)
            .unwrap_or(range.start);
        for (s, e) in self.ranges.range(first..range.end) {
            let (s, e) = ((*s).max(range.start), (*e).min(range.end));
            if e <= at {
                continue;
            }
            if s > at {
                out.push((at..s, false));
            }
            out.push((s.max(at)..e, true));
            at = e;
        }
        if at < range.end {
            out.push((at..range.end, false));
        }
        out
    }

    /// From the first to the last byte of `range` in the set, if any is.
    pub fn extent(&self, range: Range<u64>) -> Option<Range<u64>> {
        let inside: Vec<Range<u64>> = self
            .split(range)
            .into_iter()
            .filter_map(|(r, set)| set.then_some(r))
            .collect();
        Some(inside.first()?.start..inside.last()?.end)
    }

    /// Whether the set covers `range` entirely.
    pub fn covers(&self, range: &Range<u64>) -> bool {
        range.start >= range.end
            || self
                .ranges
                .range(..=range.start)
                .next_back()
                .is_some_and(|(_, e)| *e >= range.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extent_spans_the_first_to_the_last_byte_in_the_set() {
        let mut r = RangeSet::new();
        r.insert(10..20);
        r.insert(30..40);
        assert_eq!(r.extent(0..50), Some(10..40));
        assert_eq!(r.extent(15..35), Some(15..35));
        assert_eq!(r.extent(20..30), None);
        assert_eq!(r.extent(0..5), None);
    }

    #[test]
    fn merge_split_truncate() {
        let mut r = RangeSet::new();
        r.insert(10..20);
        r.insert(30..40);
        r.insert(20..25);
        assert_eq!(
            r.split(0..50),
            vec![
                (0..10, false),
                (10..25, true),
                (25..30, false),
                (30..40, true),
                (40..50, false)
            ]
        );
        assert!(r.overlaps(&(24..26)));
        assert!(!r.overlaps(&(25..30)));
        assert!(r.covers(&(11..24)));
        assert!(!r.covers(&(11..26)));
        r.insert(5..35);
        assert_eq!(
            r.split(0..50),
            vec![(0..5, false), (5..40, true), (40..50, false)]
        );
        r.truncate(12);
        assert_eq!(
            r.split(0..20),
            vec![(0..5, false), (5..12, true), (12..20, false)]
        );
        assert_eq!(r.split(7..9), vec![(7..9, true)]);
    }
}
