//! Sets of chunks as sorted ranges: a shadow's free-at-the-cut map is a few
//! thousand ranges where a bitmap would be megabytes per shadow.

/// Sorted, non-overlapping, non-adjacent `(first, count)` chunk ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChunkRanges(Vec<(u64, u64)>);

impl ChunkRanges {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds the set from ranges in any order, merging overlaps; empty
    /// ranges are dropped.
    pub fn from_ranges(mut ranges: Vec<(u64, u64)>) -> Self {
        ranges.retain(|&(_, n)| n > 0);
        ranges.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for (first, count) in ranges {
            let end = first.saturating_add(count);
            match out.last_mut() {
                Some((f, n)) if *f + *n >= first => {
                    let e = (*f + *n).max(end);
                    *n = e - *f;
                }
                _ => out.push((first, end - first)),
            }
        }
        ChunkRanges(out)
    }

    /// The chunks lying wholly inside byte ranges `(offset, length)` of a
    /// volume of `volume_size` bytes cut into `chunk_size` chunks. A chunk
    /// only partly free is not free: its other part holds data.
    pub fn from_byte_ranges(bytes: &[(u64, u64)], chunk_size: u32, volume_size: u64) -> Self {
        let cs = u64::from(chunk_size);
        let ranges = bytes
            .iter()
            .filter_map(|&(off, len)| {
                let end = off.saturating_add(len).min(volume_size);
                let first = off.div_ceil(cs);
                // The volume's last chunk may be short; it is whole when the
                // range reaches the volume's end.
                let last_end = if end == volume_size {
                    end.div_ceil(cs)
                } else {
                    end / cs
                };
                (last_end > first).then(|| (first, last_end - first))
            })
            .collect();
        Self::from_ranges(ranges)
    }

    pub fn contains(&self, chunk: u64) -> bool {
        let i = self.0.partition_point(|&(f, _)| f <= chunk);
        i > 0 && {
            let (f, n) = self.0[i - 1];
            chunk < f + n
        }
    }

    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.0
    }

    pub fn chunk_count(&self) -> u64 {
        self.0.iter().map(|&(_, n)| n).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn merges_and_looks_up() {
        let r = ChunkRanges::from_ranges(vec![(10, 5), (0, 2), (12, 10), (2, 1), (40, 0)]);
        assert_eq!(r.ranges(), &[(0, 3), (10, 12)]);
        assert!(r.contains(0) && r.contains(2) && !r.contains(3));
        assert!(r.contains(10) && r.contains(21) && !r.contains(22));
        assert_eq!(r.chunk_count(), 15);
    }

    #[test]
    fn only_whole_chunks_are_free() {
        // chunk 4096; bytes 1000..20480 cover chunks 1..4 wholly.
        let r = ChunkRanges::from_byte_ranges(&[(1000, 19480)], 4096, 1 << 20);
        assert_eq!(r.ranges(), &[(1, 4)]);
        // the short last chunk of a 10000-byte volume counts when reached.
        let r = ChunkRanges::from_byte_ranges(&[(8192, 1808)], 4096, 10000);
        assert_eq!(r.ranges(), &[(2, 1)]);
    }

    proptest! {
        #[test]
        fn contains_matches_a_naive_set(ranges in proptest::collection::vec((0u64..200, 0u64..20), 0..20)) {
            let set = ChunkRanges::from_ranges(ranges.clone());
            for c in 0..230u64 {
                let naive = ranges.iter().any(|&(f, n)| c >= f && c < f + n);
                prop_assert_eq!(set.contains(c), naive);
            }
        }
    }
}
