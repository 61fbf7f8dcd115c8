//! The engine against a reference model: the model keeps the live volume as
//! bytes and every shadow as a full copy taken at its cut (free chunks
//! zeroed). Random writes, cuts, deletions, space limits and reopenings
//! (journal replay) are applied to both; every read of the live volume or
//! of a shadow must agree, and a shadow may only disappear by eviction,
//! oldest first, with an event.
//!
//! `VSS_COW_MODEL_CASES` sets the number of cases (default 200, of 500
//! operations each on average: 100,000 operations per run).

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use vss_cow::{Backing, CowError, CowVolume, Event, EventSink, MemBacking, MemStorage, Tuning};

const CHUNK: u32 = 4096;
/// Not a multiple of the chunk size, so the short last chunk is exercised.
const VOLUME: u64 = 48 * CHUNK as u64 + 1000;
const OPS_PER_CASE: usize = 500;
const JOURNAL_SLACK: u64 = 64 << 10;

#[derive(Clone, Debug)]
enum Op {
    Write {
        offset: u64,
        len: usize,
        seed: u8,
    },
    Cut {
        free: Vec<(u64, u64)>,
    },
    Delete {
        pick: usize,
    },
    ReadShadow {
        pick: usize,
        offset: u64,
        len: usize,
    },
    ReadLive {
        offset: u64,
        len: usize,
    },
    CheckAll,
    SetMax {
        max: Option<u64>,
    },
    Reopen,
    /// A background barrier (what the volume server's flusher runs).
    FlushHeld,
    /// Background preparation of the data file ahead of allocation.
    Prepare,
    /// Idle-time reordering of copies, `steps` steps of `max` chunks.
    Reorder {
        steps: u8,
        max: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let span = (0..VOLUME, 1usize..3 * CHUNK as usize).prop_map(|(o, l)| {
        let l = l.min((VOLUME - o) as usize).max(1);
        (o, l)
    });
    // Whole chunks, as a filesystem writes them mostly: the engine may
    // accept such a write before copying (`write_live_then`).
    let chunks = VOLUME.div_ceil(u64::from(CHUNK));
    let whole = (0..chunks, 1u64..4).prop_map(|(c, n)| {
        let offset = c * u64::from(CHUNK);
        (offset, (n * u64::from(CHUNK)).min(VOLUME - offset) as usize)
    });
    prop_oneof![
        30 => (span.clone(), any::<u8>()).prop_map(|((offset, len), seed)| Op::Write { offset, len, seed }),
        10 => (whole, any::<u8>()).prop_map(|((offset, len), seed)| Op::Write { offset, len, seed }),
        6 => proptest::collection::vec((0..VOLUME, 0..VOLUME / 4), 0..4).prop_map(|free| Op::Cut { free }),
        3 => any::<usize>().prop_map(|pick| Op::Delete { pick }),
        15 => (any::<usize>(), span.clone()).prop_map(|(pick, (offset, len))| Op::ReadShadow { pick, offset, len }),
        4 => span.prop_map(|(offset, len)| Op::ReadLive { offset, len }),
        1 => Just(Op::CheckAll),
        1 => proptest::option::of(0u64..64 * CHUNK as u64).prop_map(|max| Op::SetMax { max }),
        1 => Just(Op::Reopen),
        3 => Just(Op::FlushHeld),
        3 => Just(Op::Prepare),
        3 => (1u8..4, 1usize..12).prop_map(|(steps, max)| Op::Reorder { steps, max }),
    ]
}

struct ModelShadow {
    id: u128,
    image: Vec<u8>,
}

struct Harness {
    origin: MemBacking,
    storage: Arc<MemStorage>,
    vol: Option<CowVolume>,
    events: Arc<Mutex<Vec<Event>>>,
    live: Vec<u8>,
    shadows: VecDeque<ModelShadow>,
    next_id: u128,
    tuning: Tuning,
}

impl Harness {
    fn new(capacity: Option<u64>, tuning: Tuning) -> Self {
        let origin = MemBacking::new(VOLUME);
        let storage = Arc::new(MemStorage::new(capacity));
        let events = Arc::new(Mutex::new(Vec::new()));
        let vol = CowVolume::create(
            Arc::new(origin.clone()),
            storage.clone(),
            common::options(CHUNK, None),
            tuning.clone(),
            Some(sink(&events)),
        )
        .expect("create");
        Harness {
            origin,
            storage,
            vol: Some(vol),
            events,
            live: vec![0; VOLUME as usize],
            shadows: VecDeque::new(),
            next_id: 100,
            tuning,
        }
    }

    fn vol(&self) -> &CowVolume {
        self.vol.as_ref().expect("open")
    }

    /// Drops shadows the engine evicted; they must be the oldest ones, and
    /// each must come with an event.
    fn sync_evictions(&mut self) -> Result<(), TestCaseError> {
        self.drain_evictions()?;
        let engine_ids: Vec<u128> = self.vol().shadows().iter().map(|s| s.shadow_id).collect();
        let model_ids: Vec<u128> = self.shadows.iter().map(|s| s.id).collect();
        prop_assert_eq!(engine_ids, model_ids);
        Ok(())
    }

    fn drain_evictions(&mut self) -> Result<(), TestCaseError> {
        let evicted: Vec<u128> = self
            .events
            .lock()
            .unwrap()
            .drain(..)
            .map(|e| match e {
                Event::ShadowEvicted { shadow_id, .. } => shadow_id,
                Event::ShadowLost { shadow_id, .. } => {
                    panic!("shadow {shadow_id} lost without any fault injected")
                }
            })
            .collect();
        for id in evicted {
            let oldest = self.shadows.pop_front().map(|s| s.id);
            prop_assert_eq!(oldest, Some(id), "eviction must take the oldest shadow");
        }
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Write { offset, len, seed } => {
                let data: Vec<u8> = (0..*len)
                    .map(|i| seed.wrapping_add((i / 512) as u8).wrapping_mul(31) ^ (i as u8))
                    .collect();
                self.vol()
                    .write_live(&data, *offset)
                    .expect("live writes never fail");
                self.live[*offset as usize..*offset as usize + len].copy_from_slice(&data);
            }
            Op::Cut { free } => {
                let id = self.next_id;
                self.next_id += 1;
                match self.vol().create_shadow(id, free, id as i64) {
                    Ok(info) => {
                        let mut image = self.live.clone();
                        let free_set =
                            vss_cow::extents::ChunkRanges::from_byte_ranges(free, CHUNK, VOLUME);
                        for &(first, count) in free_set.ranges() {
                            let s = (first * CHUNK as u64) as usize;
                            let e = (((first + count) * CHUNK as u64).min(VOLUME)) as usize;
                            image[s..e].fill(0);
                        }
                        prop_assert_eq!(info.free_chunks, free_set.chunk_count());
                        self.drain_evictions()?;
                        self.shadows.push_back(ModelShadow { id, image });
                    }
                    Err(CowError::ShadowLimit { .. }) => {
                        prop_assert!(!self.tuning.evict_at_limit);
                        prop_assert_eq!(self.shadows.len() as u32, self.tuning.max_shadows);
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("cut failed: {e}"))),
                }
            }
            Op::Delete { pick } => {
                if !self.shadows.is_empty() {
                    let i = pick % self.shadows.len();
                    let s = self.shadows.remove(i).expect("index in range");
                    self.vol().delete_shadow(s.id).expect("delete");
                }
            }
            Op::ReadShadow { pick, offset, len } => {
                if !self.shadows.is_empty() {
                    let s = &self.shadows[pick % self.shadows.len()];
                    let mut buf = vec![0xAA; *len];
                    self.vol()
                        .read_shadow(s.id, &mut buf, *offset)
                        .expect("read shadow");
                    prop_assert!(
                        buf[..] == s.image[*offset as usize..*offset as usize + len],
                        "shadow {} differs at {}+{}",
                        s.id,
                        offset,
                        len
                    );
                }
            }
            Op::ReadLive { offset, len } => {
                let mut buf = vec![0; *len];
                self.vol().read_live(&mut buf, *offset).expect("read live");
                prop_assert!(buf[..] == self.live[*offset as usize..*offset as usize + len]);
            }
            Op::CheckAll => self.check_all()?,
            Op::Prepare => {
                self.vol().prepare_storage().expect("prepare storage");
            }
            Op::Reorder { steps, max } => {
                let before = self.vol().usage();
                for _ in 0..*steps {
                    if self.vol().reorder_copies(*max).expect("reorder copies") == 0 {
                        break;
                    }
                }
                // Moving copies drops no shadow.
                prop_assert_eq!(self.vol().usage().shadow_count, before.shadow_count);
            }
            Op::FlushHeld => {
                self.vol().flush_held().expect("flush held");
                prop_assert_eq!(self.vol().held_bytes(), 0);
                prop_assert!(
                    self.origin.snapshot() == self.live,
                    "the device holds the live data"
                );
            }
            Op::SetMax { max } => {
                self.vol().set_max_bytes(*max).expect("set max");
                if let Some(m) = max {
                    prop_assert!(
                        self.vol().usage().used_bytes <= *m || self.vol().shadows().is_empty()
                    );
                }
            }
            Op::Reopen => {
                self.vol = None;
                let (vol, recovery) = CowVolume::open(
                    Arc::new(self.origin.clone()),
                    self.storage.clone(),
                    self.tuning.clone(),
                    Some(sink(&self.events)),
                )
                .expect("reopen");
                prop_assert!(
                    recovery.lost.is_empty(),
                    "nothing may be lost on a clean reopen"
                );
                prop_assert_eq!(recovery.journal_bytes_dropped, 0);
                self.vol = Some(vol);
            }
        }
        self.sync_evictions()?;
        if let Some(max) = self.vol().usage().max_bytes {
            let u = self.vol().usage();
            // Copies never pass the maximum; the journal may creep past it
            // by what it appended since the last copy was placed.
            prop_assert!(
                u.allocated_bytes <= max.max(u.used_bytes) + JOURNAL_SLACK,
                "allocated {} > max {}",
                u.allocated_bytes,
                max
            );
        }
        Ok(())
    }

    fn check_all(&self) -> Result<(), TestCaseError> {
        let mut buf = vec![0; VOLUME as usize];
        self.vol().read_live(&mut buf, 0).expect("read live");
        prop_assert!(buf == self.live);
        for s in &self.shadows {
            self.vol()
                .read_shadow(s.id, &mut buf, 0)
                .expect("read shadow");
            prop_assert!(buf == s.image, "shadow {} differs", s.id);
        }
        Ok(())
    }
}

fn sink(events: &Arc<Mutex<Vec<Event>>>) -> EventSink {
    let events = events.clone();
    Arc::new(move |e: &Event| events.lock().unwrap().push(e.clone()))
}

fn run(ops: Vec<Op>, capacity: Option<u64>, tuning: Tuning) -> Result<(), TestCaseError> {
    let mut h = Harness::new(capacity, tuning);
    for (i, op) in ops.iter().enumerate() {
        h.apply(op)
            .map_err(|e| TestCaseError::fail(format!("at op {i} ({op:?}): {e}")))?;
    }
    h.check_all()
}

fn cases() -> u32 {
    common::env_u64("VSS_COW_MODEL_CASES", 200) as u32
}

fn small_tuning(evict_at_limit: bool) -> Tuning {
    Tuning {
        grow_step: 4 * u64::from(CHUNK),
        max_shadows: 6,
        evict_at_limit,
        compact_after_bytes: 2048,
        prepare_ahead: 3 * u64::from(CHUNK),
    }
}

#[test]
fn engine_matches_the_model() {
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        proptest::collection::vec(op(), 1..2 * OPS_PER_CASE),
        any::<bool>(),
        proptest::option::of(8u64..40),
    );
    runner
        .run(&strategy, |(ops, evict, capacity_chunks)| {
            // Some cases put the shadow storage on a "filesystem" that
            // fills up, so eviction for lack of space is exercised too.
            let capacity = capacity_chunks.map(|c| c * u64::from(CHUNK));
            run(ops, capacity, small_tuning(evict))
        })
        .unwrap();
}

#[test]
fn write_cost_is_one_copy_per_chunk_whatever_the_shadow_count() {
    let h = Harness::new(None, Tuning::default());
    for i in 0..8u128 {
        h.vol().create_shadow(i + 1, &[], 0).unwrap();
    }
    let data = vec![7u8; VOLUME as usize];
    h.vol().write_live(&data, 0).unwrap();
    let chunks = VOLUME.div_ceil(u64::from(CHUNK));
    assert_eq!(h.vol().copies_made(), chunks);
    h.vol().write_live(&data, 0).unwrap();
    assert_eq!(h.vol().copies_made(), chunks, "rewrites copy nothing");
}

#[test]
fn space_free_at_the_cut_is_never_copied() {
    let h = Harness::new(None, Tuning::default());
    let half = 24 * u64::from(CHUNK);
    h.vol().create_shadow(1, &[(0, half)], 0).unwrap();
    let data = vec![1u8; half as usize];
    h.vol().write_live(&data, 0).unwrap();
    assert_eq!(h.vol().copies_made(), 0);
}

/// A crash while a copy batch was being synced can leave its records on
/// disk without its data. The live write it guarded was not issued then,
/// so opening repairs the copy from the live chunk; if the live chunk does
/// not match either, the shadows that needed the copy are reported lost.
#[test]
fn a_record_without_its_data_is_repaired_from_the_live_chunk_or_reported_lost() {
    for live_overwritten in [false, true] {
        let h = Harness::new(None, Tuning::default());
        let old = vec![5u8; CHUNK as usize];
        h.vol().write_live(&old, 0).unwrap();
        h.vol().create_shadow(1, &[], 0).unwrap();
        h.vol().write_live(&[9u8; 100], 0).unwrap();
        h.vol().flush_live().unwrap();
        assert_eq!(h.vol().copies_made(), 1);
        // As after the crash: the slot never got its data, and (in the first
        // round) the live chunk still holds the old content.
        let slots = h.storage.data.snapshot().len();
        h.storage.data.write_at(&vec![0u8; slots], 0).unwrap();
        if !live_overwritten {
            h.origin.write_at(&old, 0).unwrap();
        }
        let mut h = h;
        h.vol = None;
        let (vol, recovery) = CowVolume::open(
            Arc::new(h.origin.clone()),
            h.storage.clone(),
            Tuning::default(),
            None,
        )
        .unwrap();
        let mut buf = vec![0u8; CHUNK as usize];
        if live_overwritten {
            assert_eq!(recovery.lost.len(), 1, "{recovery:?}");
            assert!(matches!(
                vol.read_shadow(1, &mut buf, 0),
                Err(CowError::ShadowLost { .. })
            ));
        } else {
            assert!(recovery.lost.is_empty(), "{recovery:?}");
            vol.read_shadow(1, &mut buf, 0).unwrap();
            assert_eq!(buf, old);
        }
    }
}

/// A write covering whole chunks is accepted before their old contents
/// are copied: at that moment live reads see the write and the shadow
/// still reads the old contents (from the device, which has not got the
/// write); afterwards the shadow reads them from its copy.
#[test]
fn whole_chunk_writes_are_accepted_before_the_copy() {
    let h = Harness::new(None, Tuning::default());
    let cs = CHUNK as usize;
    h.vol().write_live(&vec![1u8; 4 * cs], 0).unwrap();
    h.vol().create_shadow(1, &[], 0).unwrap();
    let vol = h.vol();
    let mut seen = None;
    vol.write_live_then(&vec![2u8; 2 * cs], cs as u64, &mut || {
        let (mut live, mut shadow) = (vec![0u8; 4 * cs], vec![0u8; 4 * cs]);
        vol.read_live(&mut live, 0).unwrap();
        vol.read_shadow(1, &mut shadow, 0).unwrap();
        seen = Some((live, shadow, vol.copies_made()));
    })
    .unwrap();
    let (live, shadow, copies) = seen.expect("accepted early");
    assert_eq!(copies, 0, "accepted before the copy");
    assert_eq!(&live[cs..3 * cs], &vec![2u8; 2 * cs][..]);
    assert_eq!(live[0], 1);
    assert_eq!(shadow, vec![1u8; 4 * cs]);
    assert_eq!(vol.copies_made(), 2);
    vol.flush_live().unwrap();
    let mut shadow = vec![0u8; 4 * cs];
    vol.read_shadow(1, &mut shadow, 0).unwrap();
    assert_eq!(shadow, vec![1u8; 4 * cs]);
    // A write that covers a chunk needing a copy only in part is answered
    // by the result, after the copy.
    let mut early = false;
    vol.write_live_then(&[3u8; 100], 3 * cs as u64 + 10, &mut || early = true)
        .unwrap();
    assert!(!early);
    assert_eq!(vol.copies_made(), 3);
}

/// A write that needed a copy is held until the next barrier: live reads
/// see it at once, the device gets it only after the copy is durable.
#[test]
fn copied_writes_reach_the_device_only_after_the_barrier() {
    let h = Harness::new(None, Tuning::default());
    h.vol().write_live(&[1u8; 8192], 0).unwrap();
    h.vol().create_shadow(1, &[], 0).unwrap();
    h.vol().write_live(&[2u8; 100], 10).unwrap();
    let mut buf = vec![0u8; 200];
    h.vol().read_live(&mut buf, 0).unwrap();
    assert_eq!(&buf[10..110], &[2u8; 100][..]);
    assert_eq!(buf[0], 1);
    assert_eq!(h.origin.snapshot()[10], 1, "held back until the barrier");
    h.vol().flush_live().unwrap();
    assert_eq!(h.origin.snapshot()[10], 2);
    let mut shadow = vec![0u8; 200];
    h.vol().read_shadow(1, &mut shadow, 0).unwrap();
    assert_eq!(shadow, vec![1u8; 200]);
}
