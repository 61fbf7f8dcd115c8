//! The engine's in-memory index: which shadows exist, which preserved copy
//! serves which shadow, which slots are free. Pure data and rules; the I/O
//! is in `engine.rs`.
//!
//! Epochs. Every shadow gets the next epoch number at its cut; epochs never
//! repeat. A preserved copy of chunk `c` tagged with epoch `e` holds the
//! content `c` had from the cut of the shadow before it was last preserved
//! up to the first write after the cut of `e`. Shadow `j` therefore reads
//! chunk `c` from the preserved copy with the smallest epoch `e >= j`, or
//! from the live volume when there is none: no write reached `c` since
//! `j`'s cut. A write preserves `c` only when some shadow newer than `c`'s
//! newest copy needs it, and tags the copy with the newest shadow's epoch,
//! so a chunk is copied at most once between two cuts, however many shadows
//! there are.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::extents::ChunkRanges;
use crate::format::LostReason;

/// Where one preserved copy is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Preserved {
    pub slot: u64,
    pub crc: u32,
}

#[derive(Clone, Debug)]
pub struct Shadow {
    pub shadow_id: u128,
    pub epoch: u64,
    pub created_unix_ns: i64,
    /// Chunks that were free space at the cut: read as zeros, never
    /// preserved for this shadow.
    pub free: ChunkRanges,
    pub lost: Option<LostReason>,
}

/// How a shadow's chunk is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Zeros,
    Live,
    Copy { epoch: u64, at: Preserved },
}

/// What [`State::scattered_run`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum ScatteredRun {
    Found(Vec<(u64, u64, Preserved)>),
    /// None yet: scan again from this `(epoch, chunk)`.
    GoOnFrom((u64, u64)),
    /// None up to the last copy.
    End,
}

pub struct State {
    pub chunk_count: u64,
    pub shadows: BTreeMap<u64, Shadow>,
    pub by_id: HashMap<u128, u64>,
    pub next_epoch: u64,
    /// `(chunk, epoch)` → preserved copy.
    records: BTreeMap<(u64, u64), Preserved>,
    /// The same keys by epoch first, to find what a deletion may free.
    by_epoch: BTreeSet<(u64, u64)>,
    /// Bit set: a write to this chunk needs no copy (every shadow has what
    /// it needs). Only ever set conservatively: a clear bit just means "check".
    protected: Vec<u64>,
    pub max_bytes: Option<u64>,
    /// Slots the data file holds.
    pub allocated_slots: u64,
    pub free_slots: BTreeSet<u64>,
    /// Counts moves of copies to other slots: a shadow read that found a
    /// copy changed under it reads again if this moved meanwhile (the old
    /// slot may hold another copy by then).
    pub moves: u64,
    /// Bit set: a shadow read checked the crc of the copy in this slot
    /// (read from the data file) since the slot was last taken for new
    /// data, so later reads may skip it. Empty at open: every copy is
    /// checked once after a restart.
    verified: Vec<u64>,
}

impl State {
    pub fn new(chunk_count: u64) -> Self {
        State {
            chunk_count,
            shadows: BTreeMap::new(),
            by_id: HashMap::new(),
            next_epoch: 1,
            records: BTreeMap::new(),
            by_epoch: BTreeSet::new(),
            protected: vec![u64::MAX; chunk_count.div_ceil(64) as usize],
            max_bytes: None,
            allocated_slots: 0,
            free_slots: BTreeSet::new(),
            moves: 0,
            verified: Vec::new(),
        }
    }

    /// Whether a read has checked the copy now in `slot`.
    pub fn copy_verified(&self, slot: u64) -> bool {
        self.verified
            .get((slot / 64) as usize)
            .is_some_and(|w| w & (1 << (slot % 64)) != 0)
    }

    /// Notes that a read checked the copy now in `slot`.
    pub fn set_copy_verified(&mut self, slot: u64) {
        let i = (slot / 64) as usize;
        if i >= self.verified.len() {
            self.verified.resize(i + 1, 0);
        }
        self.verified[i] |= 1 << (slot % 64);
    }

    /// Takes free slot `slot` for new data (false if it was not free):
    /// what was checked of its old content no longer holds.
    pub fn take_free_slot(&mut self, slot: u64) -> bool {
        if let Some(w) = self.verified.get_mut((slot / 64) as usize) {
            *w &= !(1 << (slot % 64));
        }
        self.free_slots.remove(&slot)
    }

    /// Takes the lowest free slot for new data.
    pub fn pop_free_slot(&mut self) -> Option<u64> {
        let slot = *self.free_slots.first()?;
        self.take_free_slot(slot);
        Some(slot)
    }

    pub fn is_protected(&self, chunk: u64) -> bool {
        self.protected[(chunk / 64) as usize] & (1 << (chunk % 64)) != 0
    }

    pub fn set_protected(&mut self, chunk: u64) {
        self.protected[(chunk / 64) as usize] |= 1 << (chunk % 64);
    }

    /// Newest shadow, lost or not.
    pub fn latest_epoch(&self) -> Option<u64> {
        self.shadows.keys().next_back().copied()
    }

    pub fn oldest_epoch(&self) -> Option<u64> {
        self.shadows.keys().next().copied()
    }

    /// Epoch of the newest preserved copy of `chunk`.
    fn newest_copy(&self, chunk: u64) -> Option<u64> {
        self.records
            .range((chunk, 0)..=(chunk, u64::MAX))
            .next_back()
            .map(|(&(_, e), _)| e)
    }

    /// Whether a write to `chunk` must first preserve it: some readable
    /// shadow cut after the chunk's newest copy did not have it as free
    /// space.
    pub fn needs_preserve(&self, chunk: u64) -> bool {
        if self.is_protected(chunk) {
            return false;
        }
        let from = self.newest_copy(chunk).map_or(0, |e| e + 1);
        self.shadows
            .range(from..)
            .any(|(_, s)| s.lost.is_none() && !s.free.contains(chunk))
    }

    /// Which shadows a preserved copy of `chunk` made now would serve and
    /// need it (to mark them lost when the copy cannot be made).
    pub fn shadows_needing(&self, chunk: u64) -> Vec<u64> {
        let from = self.newest_copy(chunk).map_or(0, |e| e + 1);
        self.shadows
            .range(from..)
            .filter(|(_, s)| s.lost.is_none() && !s.free.contains(chunk))
            .map(|(&e, _)| e)
            .collect()
    }

    pub fn source(&self, epoch: u64, chunk: u64) -> Option<Source> {
        let shadow = self.shadows.get(&epoch)?;
        if shadow.free.contains(chunk) {
            return Some(Source::Zeros);
        }
        Some(
            match self
                .records
                .range((chunk, epoch)..=(chunk, u64::MAX))
                .next()
            {
                Some((&(_, e), &at)) => Source::Copy { epoch: e, at },
                None => Source::Live,
            },
        )
    }

    /// `source` of every chunk from `first` to `last`, with one walk of the
    /// index instead of a lookup per chunk.
    pub fn sources(&self, epoch: u64, first: u64, last: u64) -> Option<Vec<Source>> {
        let shadow = self.shadows.get(&epoch)?;
        let mut out = Vec::with_capacity((last - first + 1) as usize);
        let mut records = self
            .records
            .range((first, epoch)..=(last, u64::MAX))
            .peekable();
        for chunk in first..=last {
            // The first record of this chunk at or after the epoch; records
            // of this chunk before the epoch are skipped.
            let mut found = None;
            while let Some(&(&(c, e), &at)) = records.peek() {
                if c > chunk {
                    break;
                }
                records.next();
                if c == chunk && e >= epoch && found.is_none() {
                    found = Some(Source::Copy { epoch: e, at });
                }
            }
            out.push(if shadow.free.contains(chunk) {
                Source::Zeros
            } else {
                found.unwrap_or(Source::Live)
            });
        }
        Some(out)
    }

    pub fn insert_record(&mut self, chunk: u64, epoch: u64, at: Preserved) {
        self.records.insert((chunk, epoch), at);
        self.by_epoch.insert((epoch, chunk));
    }

    pub fn record_count(&self) -> u64 {
        self.records.len() as u64
    }

    pub fn records(&self) -> impl Iterator<Item = (u64, u64, Preserved)> + '_ {
        self.records.iter().map(|(&(c, e), &p)| (c, e, p))
    }

    /// Shadows a given copy serves: those cut after the chunk's previous
    /// copy, up to the copy's own epoch, that had the chunk in use.
    pub fn shadows_served_by(&self, chunk: u64, epoch: u64) -> Vec<u64> {
        let prev = self
            .records
            .range((chunk, 0)..(chunk, epoch))
            .next_back()
            .map_or(0, |(&(_, e), _)| e + 1);
        self.shadows
            .range(prev..=epoch)
            .filter(|(_, s)| !s.free.contains(chunk))
            .map(|(&e, _)| e)
            .collect()
    }

    pub fn add_shadow(&mut self, shadow: Shadow) {
        self.next_epoch = self.next_epoch.max(shadow.epoch + 1);
        self.by_id.insert(shadow.shadow_id, shadow.epoch);
        self.shadows.insert(shadow.epoch, shadow);
    }

    /// After a cut: a chunk stays protected only if it was and the new
    /// shadow had it as free space.
    pub fn protect_after_cut(&mut self, free: &ChunkRanges) {
        let mut next = vec![0u64; self.protected.len()];
        for &(first, count) in free.ranges() {
            for c in first..(first + count).min(self.chunk_count) {
                next[(c / 64) as usize] |= 1 << (c % 64);
            }
        }
        for (p, n) in self.protected.iter_mut().zip(next) {
            *p &= n;
        }
    }

    /// Recomputes the protected bits from scratch (after a replay).
    pub fn rebuild_protection(&mut self) {
        for w in self.protected.iter_mut() {
            *w = 0;
        }
        for c in 0..self.chunk_count {
            let from = self.newest_copy(c).map_or(0, |e| e + 1);
            let covered = self
                .shadows
                .range(from..)
                .all(|(_, s)| s.lost.is_some() || s.free.contains(c));
            if covered {
                self.set_protected(c);
            }
        }
    }

    /// Removes shadow `epoch` and every preserved copy no remaining shadow
    /// reads; returns the slots those copies held.
    pub fn remove_shadow(&mut self, epoch: u64) -> Vec<u64> {
        let Some(shadow) = self.shadows.remove(&epoch) else {
            return Vec::new();
        };
        self.by_id.remove(&shadow.shadow_id);
        // Only copies tagged from `epoch` up to the next remaining shadow
        // can have served this one alone; a copy tagged later also serves
        // that next shadow.
        let next = self
            .shadows
            .range(epoch + 1..)
            .next()
            .map_or(u64::MAX, |(&e, _)| e);
        let candidates: Vec<(u64, u64)> = self
            .by_epoch
            .range((epoch, 0)..(next, 0))
            .copied()
            .collect();
        let mut freed = Vec::new();
        for (e, c) in candidates {
            if self.shadows_served_by(c, e).is_empty() {
                if let Some(p) = self.records.remove(&(c, e)) {
                    self.by_epoch.remove(&(e, c));
                    freed.push(p.slot);
                }
            }
        }
        freed
    }

    /// The first run of copies, from `(epoch, chunk)` = `from` on in that
    /// order, with one tag and neighbouring chunks but not in neighbouring
    /// ascending slots, at most `max` long, as `(chunk, epoch, copy)`. A
    /// shadow read in chunk order reads such a run scattered over the data
    /// file; moved into neighbouring slots, with one request. Looks at
    /// about `scan` copies at most (so the caller's hold of the state stays
    /// short), then says where to go on.
    pub fn scattered_run(&self, from: (u64, u64), max: usize, scan: usize) -> ScatteredRun {
        let mut run: Vec<(u64, u64, Preserved)> = Vec::new();
        let mut in_order = true;
        for (seen, &(e, c)) in self.by_epoch.range(from..).enumerate() {
            let at = self.records[&(c, e)];
            let joins = run
                .last()
                .is_some_and(|&(pc, pe, _)| pe == e && pc + 1 == c && run.len() < max);
            if !joins {
                if run.len() >= 2 && !in_order {
                    return ScatteredRun::Found(run);
                }
                if seen >= scan.max(max + 1) {
                    return ScatteredRun::GoOnFrom((e, c));
                }
                run.clear();
                in_order = true;
            } else if let Some(&(_, _, prev)) = run.last() {
                in_order &= at.slot == prev.slot + 1;
            }
            run.push((c, e, at));
        }
        if run.len() >= 2 && !in_order {
            ScatteredRun::Found(run)
        } else {
            ScatteredRun::End
        }
    }

    /// Takes the lowest `n` neighbouring free slots, if there are.
    pub fn take_free_run(&mut self, n: u64) -> Option<u64> {
        let mut start = None;
        let mut len = 0;
        let mut prev = None;
        for &s in &self.free_slots {
            if prev.is_some_and(|p| p + 1 == s) {
                len += 1;
            } else {
                start = Some(s);
                len = 1;
            }
            prev = Some(s);
            if len == n {
                break;
            }
        }
        let start = start.filter(|_| len == n && n > 0)?;
        for s in start..start + n {
            self.take_free_slot(s);
        }
        Some(start)
    }

    /// Slots in use by preserved copies.
    pub fn used_slots(&self) -> u64 {
        self.allocated_slots - self.free_slots.len() as u64
    }

    /// One past the highest slot a copy uses (0 without copies).
    pub fn used_slots_end(&self) -> u64 {
        self.records.values().map(|p| p.slot + 1).max().unwrap_or(0)
    }

    /// After a replay: every allocated slot no copy uses is free.
    pub fn rebuild_free_slots(&mut self) {
        let used: BTreeSet<u64> = self.records.values().map(|p| p.slot).collect();
        self.free_slots = (0..self.allocated_slots)
            .filter(|s| !used.contains(s))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shadow(epoch: u64, free: &[(u64, u64)]) -> Shadow {
        Shadow {
            shadow_id: u128::from(epoch) + 1000,
            epoch,
            created_unix_ns: 0,
            free: ChunkRanges::from_ranges(free.to_vec()),
            lost: None,
        }
    }

    #[test]
    fn scattered_runs_are_found_in_tag_and_chunk_order() {
        let mut st = State::new(64);
        let p = |slot| Preserved { slot, crc: 0 };
        // Tag 1: chunks 0-2 in order, 5-7 scattered; tag 2: 3-4 scattered,
        // 9 alone.
        for (c, slot) in [(0, 0), (1, 1), (2, 2), (5, 9), (6, 3), (7, 8)] {
            st.insert_record(c, 1, p(slot));
        }
        for (c, slot) in [(3, 7), (4, 5), (9, 4)] {
            st.insert_record(c, 2, p(slot));
        }
        let chunks = |r: ScatteredRun| -> Vec<(u64, u64)> {
            match r {
                ScatteredRun::Found(r) => r.iter().map(|&(c, e, _)| (e, c)).collect(),
                other => panic!("no run: {other:?}"),
            }
        };
        assert_eq!(
            chunks(st.scattered_run((0, 0), 16, 100)),
            [(1, 5), (1, 6), (1, 7)]
        );
        assert_eq!(chunks(st.scattered_run((1, 6), 16, 100)), [(1, 6), (1, 7)]);
        assert_eq!(chunks(st.scattered_run((1, 8), 16, 100)), [(2, 3), (2, 4)]);
        assert_eq!(chunks(st.scattered_run((0, 0), 2, 100)), [(1, 5), (1, 6)]);
        assert_eq!(st.scattered_run((2, 4), 16, 100), ScatteredRun::End);
        // A short scan stops at a run's start and goes on from there.
        assert_eq!(
            st.scattered_run((0, 0), 2, 3),
            ScatteredRun::GoOnFrom((1, 5))
        );
        assert_eq!(chunks(st.scattered_run((1, 5), 2, 3)), [(1, 5), (1, 6)]);

        st.free_slots = [10, 12, 13, 14, 20].into_iter().collect();
        assert_eq!(st.take_free_run(2), Some(12));
        assert_eq!(st.take_free_run(2), None);
        assert_eq!(st.take_free_run(1), Some(10));
        assert_eq!(st.free_slots.iter().copied().collect::<Vec<_>>(), [14, 20]);
    }

    #[test]
    fn sources_of_a_range_match_the_lookup_of_each_chunk() {
        let mut st = State::new(40);
        for e in [2, 5, 9] {
            st.add_shadow(shadow(e, &[(30, 4)]));
        }
        // Records with a pseudo-random spread of chunks and epochs.
        for k in 0..60u64 {
            let (c, e) = ((k * 17 + 3) % 40, [1, 2, 4, 5, 7, 9][(k % 6) as usize]);
            st.insert_record(c, e, Preserved { slot: k, crc: 0 });
        }
        for e in [2, 5, 9] {
            for (first, last) in [(0, 39), (0, 0), (7, 31), (29, 35), (39, 39)] {
                let each: Vec<Source> = (first..=last).map(|c| st.source(e, c).unwrap()).collect();
                assert_eq!(
                    st.sources(e, first, last).unwrap(),
                    each,
                    "epoch {e}, {first}..={last}"
                );
            }
        }
        assert_eq!(st.sources(3, 0, 1), None);
    }

    #[test]
    fn checked_copies_are_forgotten_when_their_slot_is_taken_again() {
        let mut st = State::new(8);
        st.free_slots = [3, 4, 70].into_iter().collect();
        st.set_copy_verified(5);
        st.set_copy_verified(70);
        assert!(st.copy_verified(5) && st.copy_verified(70) && !st.copy_verified(3));
        assert!(st.take_free_slot(70));
        assert!(!st.copy_verified(70));
        st.set_copy_verified(3);
        st.set_copy_verified(4);
        assert_eq!(st.take_free_run(2), Some(3));
        assert!(!st.copy_verified(3) && !st.copy_verified(4) && st.copy_verified(5));
        assert_eq!(st.pop_free_slot(), None);
    }

    #[test]
    fn one_copy_serves_every_shadow_cut_since_the_last_write() {
        let mut st = State::new(8);
        for e in 1..=3 {
            st.add_shadow(shadow(e, &[]));
            st.protect_after_cut(&ChunkRanges::new());
        }
        assert!(st.needs_preserve(0));
        st.insert_record(0, 3, Preserved { slot: 0, crc: 0 });
        assert!(!st.needs_preserve(0));
        for e in 1..=3 {
            assert!(matches!(
                st.source(e, 0),
                Some(Source::Copy { epoch: 3, .. })
            ));
        }
        // Deleting the oldest two frees nothing; the copy still serves 3.
        assert!(st.remove_shadow(1).is_empty());
        assert!(st.remove_shadow(2).is_empty());
        assert_eq!(st.remove_shadow(3), vec![0]);
    }

    #[test]
    fn free_chunks_read_zeros_and_need_no_copy() {
        let mut st = State::new(8);
        let s = shadow(1, &[(2, 2)]);
        let free = s.free.clone();
        st.add_shadow(s);
        st.protect_after_cut(&free);
        assert_eq!(st.source(1, 2), Some(Source::Zeros));
        assert!(!st.needs_preserve(3));
        assert!(st.needs_preserve(1));
    }

    #[test]
    fn deleting_a_middle_shadow_keeps_copies_older_ones_read() {
        let mut st = State::new(4);
        st.add_shadow(shadow(1, &[]));
        st.add_shadow(shadow(2, &[]));
        st.insert_record(0, 2, Preserved { slot: 5, crc: 0 });
        st.add_shadow(shadow(3, &[]));
        // Shadow 2 goes; shadow 1 still reads chunk 0 from the copy at 2.
        assert!(st.remove_shadow(2).is_empty());
        assert!(matches!(
            st.source(1, 0),
            Some(Source::Copy { epoch: 2, .. })
        ));
        assert_eq!(st.source(3, 0), Some(Source::Live));
        assert_eq!(st.remove_shadow(1), vec![5]);
    }
}
