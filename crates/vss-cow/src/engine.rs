//! The copy-on-write engine over one live volume and its shadow storage.
//!
//! Ordering that makes a crash safe (see `docs/COW-FORMAT.md`):
//! 1. a write that needs copies reads the old chunks, writes them to free
//!    slots and appends one `Preserved` record per chunk, unsynced;
//! 2. the write is held in memory (`pending`; live reads see it);
//! 3. a barrier (flush, cut, or 64 MiB held) syncs the data file and the
//!    journal, and only then writes the held chunks to the live volume.
//!
//! So a live chunk is never overwritten before its preserved copy and the
//! record naming it are durable; a crash before the barrier loses only
//! writes no flush had reported durable. A cut appends `ShadowCreated` and syncs it (after syncing
//! the live volume) before the shadow is reported created. A deletion's
//! record is durable before its slots are reused, so a replay never sees a
//! slot holding another chunk than its record says; each record also carries
//! the crc32c of its data, checked on replay and on every read, so anything
//! that still goes wrong makes a shadow *lost*, never silently wrong.
//!
//! Locks, always taken in this order: `cut` (writes share it, the cut
//! takes it alone, so no write straddles a cut), `cow` (one batch of
//! copies at a time; also barriers, deletions and compaction), `pending`,
//! `journal`, `state`. Reads of the live volume take `pending` (shared);
//! reads of a shadow take `state` briefly and validate afterwards (see
//! [`CowVolume::read_shadow`]).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use crate::error::{CowError, CowResult};
use crate::extents::ChunkRanges;
use crate::format::{
    self, decode_frame, decode_lost_marker, encode_lost_marker, DeleteReason, Frame, LostReason,
    Record, Superblock, LOST_MARKER_OFFSET, SUPERBLOCK_SIZE,
};
use crate::io::{AlignedBuf, Backing, StorageFiles};
use crate::state::{Preserved, ScatteredRun, Shadow, Source, State};

/// Something that happened to shadows without being asked for: the
/// provider turns these into journal events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A shadow was deleted to make room (oldest first).
    ShadowEvicted {
        shadow_id: u128,
        reason: DeleteReason,
        used_bytes: u64,
        max_bytes: Option<u64>,
    },
    /// A shadow can no longer be read back exactly.
    ShadowLost { shadow_id: u128, reason: LostReason },
}

pub type EventSink = Arc<dyn Fn(&Event) + Send + Sync>;

/// What the owner may tune; the format fixes only the chunk size.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// The data file grows by this much at a time ("allocated" space).
    pub grow_step: u64,
    /// Most shadows at once; `evict_at_limit` decides what a cut beyond
    /// it does: fail, or delete the oldest first (Windows' MaxShadowCopies).
    pub max_shadows: u32,
    pub evict_at_limit: bool,
    /// Compact the journal once it is this large and four times what a
    /// compacted one would be.
    pub compact_after_bytes: u64,
    /// How far [`CowVolume::prepare_storage`] keeps the data file written
    /// and synced beyond the slots in use (within the maximum size).
    pub prepare_ahead: u64,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            grow_step: 16 << 20,
            max_shadows: 64,
            evict_at_limit: false,
            compact_after_bytes: 8 << 20,
            prepare_ahead: 64 << 20,
        }
    }
}

/// Parameters of new shadow storage.
#[derive(Clone, Debug)]
pub struct CreateOptions {
    pub storage_id: u128,
    pub volume_id: u128,
    pub chunk_size: u32,
    pub max_bytes: Option<u64>,
    pub created_unix: i64,
}

/// A shadow as the engine reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShadowInfo {
    pub shadow_id: u128,
    pub epoch: u64,
    pub created_unix_ns: i64,
    pub lost: Option<LostReason>,
    /// Chunks that were free at the cut (read as zeros).
    pub free_chunks: u64,
}

/// Space of the shadow storage, as `vssadmin list shadowstorage` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Preserved copies in use plus the journal.
    pub used_bytes: u64,
    /// The data file plus the journal.
    pub allocated_bytes: u64,
    pub max_bytes: Option<u64>,
    pub shadow_count: u32,
}

/// What opening found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Bytes after the last whole record (a torn append), cut off.
    pub journal_bytes_dropped: u64,
    /// Shadows found lost while opening.
    pub lost: Vec<(u128, LostReason)>,
    pub records_checked: u64,
}

pub struct CowVolume {
    sb: Superblock,
    origin: Arc<dyn Backing>,
    storage: Arc<dyn StorageFiles>,
    tuning: Tuning,
    sink: Option<EventSink>,
    cut: RwLock<()>,
    cow: Mutex<()>,
    journal: Mutex<JournalTail>,
    state: Mutex<State>,
    /// Chunks written through the copy path (for benchmarks and tests).
    copies_made: AtomicU64,
    /// `(max_shadows, evict_at_limit)`, changeable while open.
    shadow_limit: Mutex<(u32, bool)>,
    /// Live chunks whose copy is not durable yet, with their new content
    /// (and the epoch their copy is tagged with): they reach the device
    /// only after the next barrier. Live reads see them.
    pending: RwLock<HashMap<u64, (u64, Vec<u8>)>>,
    /// Held while the data file's length changes or zeros are written past
    /// it (`prepare_storage`), so no zeros land on a slot being handed out.
    /// Taken after `state` when both are held.
    grow: Mutex<()>,
    /// Bumped under `grow` whenever the maximum size changes, so that
    /// `prepare_storage` never writes zeros past a maximum lowered after it
    /// read it (a trim could have run already).
    max_changes: AtomicU64,
    /// Preserved copies whose bytes are still only in memory, by slot. The
    /// next barrier writes them to the data file before its sync (their
    /// live writes are held until then anyway), so a copy costs the writer
    /// no disk write; shadow reads take them from here meanwhile. An entry
    /// goes only once the very copy it names was written: a slot can be
    /// freed and taken by another copy in between.
    unwritten: RwLock<HashMap<u64, HeldCopy>>,
    /// Bytes at the start of the data file whose space is known to be
    /// taken (`Backing::allocated_len` at open, then `reserve_data`). Only
    /// copies to slots below it wait for the barrier: a copy above it may
    /// meet a full filesystem, which must show on the copy path, where it
    /// evicts the oldest shadow.
    allocated_end: AtomicU64,
    /// Buffers of copies the barrier has written, for the next copies: a
    /// fresh buffer costs a page fault on every page.
    batch_pool: Mutex<BatchPool>,
    /// One barrier at a time; holds the buffer runs of held chunks are
    /// gathered in, kept from one barrier to the next (a fresh buffer each
    /// time costs page faults on every byte).
    barrier_gate: Mutex<Vec<u8>>,
    /// Read-ahead of preserved copies for sequential shadow reads.
    read_ahead: Mutex<ReadAhead>,
    /// Where `reorder_copies` goes on: `(epoch, chunk)`.
    reorder_from: Mutex<(u64, u64)>,
    /// Live writes so far (a server reorders copies when this stands still).
    live_writes: AtomicU64,
}

/// Copies lie in the data file in the order they were made, so a shadow
/// read in chunk order can be a scattered read of the data file, one
/// chunk at a time. Once such a read had to wait for the disk, the copies
/// of the rest of the request and of a window ahead are prefetched (read
/// in the background, many at once) while the reads stay sequential.
#[derive(Default)]
struct ReadAhead {
    /// Offset where the last shadow read ended.
    next: u64,
    /// A copy read of the current sequential stretch had to wait.
    active: bool,
    /// Chunks below this were prefetched already.
    until: u64,
}

/// How far ahead of a sequential shadow read copies are prefetched:
/// this many requests of its size, within the bounds below.
const READ_AHEAD_REQUESTS: u64 = 4;
const READ_AHEAD_MIN_BYTES: u64 = 1 << 20;
const READ_AHEAD_MAX_BYTES: u64 = 16 << 20;
/// Runs of copies in neighbouring slots this long are not prefetched: the
/// kernel's own read-ahead of the data file serves a sequential read of
/// them, into large page-cache folios (a prefetch hint fills the cache
/// with single pages, which later reads copy out at half the speed).
const PREFETCH_LONG_RUN_BYTES: u64 = 256 << 10;
/// Copies `reorder_copies` looks at per hold of the state.
const REORDER_SCAN_COPIES: usize = 16 * 1024;

/// Live data held back for the barrier is bounded: past this, a write
/// waits for one.
const PENDING_LIMIT_BYTES: usize = 64 << 20;
/// Copy buffers kept for reuse, in bytes at most.
const BATCH_POOL_BYTES: usize = 96 << 20;

/// A preserved copy not yet in the data file: chunk `index` of `batch`
/// (the buffer one `copy_chunks` call read old contents into).
#[derive(Clone)]
struct HeldCopy {
    batch: Arc<AlignedBuf>,
    index: usize,
}

/// Copy buffers by size (powers of two), `bytes` in all.
#[derive(Default)]
struct BatchPool {
    by_size: HashMap<usize, Vec<AlignedBuf>>,
    bytes: usize,
}

impl HeldCopy {
    fn is(&self, other: &HeldCopy) -> bool {
        Arc::ptr_eq(&self.batch, &other.batch) && self.index == other.index
    }

    fn bytes(&self, cs: usize) -> &[u8] {
        &self.batch.as_slice()[self.index * cs..(self.index + 1) * cs]
    }
}
/// Largest single write at a barrier (of copies to the data file, of held
/// chunks to the live volume).
const BARRIER_WRITE_BYTES: usize = 4 << 20;
/// Largest run of held chunks a barrier writes to the live volume in one
/// hold of the held-chunk map (writers needing the map wait for it).
const LIVE_RUN_BYTES: usize = 1 << 20;

/// Maximal runs of `items`, as index ranges, in which every item `joins`
/// the one before it (neighbouring chunks, neighbouring slots).
fn runs<'a, T>(
    items: &'a [T],
    joins: impl Fn(&T, &T) -> bool + 'a,
) -> impl Iterator<Item = Range<usize>> + 'a {
    let mut i = 0;
    std::iter::from_fn(move || {
        if i >= items.len() {
            return None;
        }
        let start = i;
        i += 1;
        while i < items.len() && joins(&items[i - 1], &items[i]) {
            i += 1;
        }
        Some(start..i)
    })
}

fn write_lock<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

fn read_lock<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

struct JournalTail {
    next_seq: u64,
    end: u64,
    reserved: u64,
    /// A write or sync of the journal failed. Linux drops dirty pages
    /// whose writeback failed, so records before the tail may never reach
    /// the disk while later ones do, and replay would stop at the gap,
    /// losing those later ones too (a shadow reported created, say). The
    /// next append rewrites the journal from memory first.
    damaged: bool,
}

/// Journal space is reserved ahead in steps of this size, so that an append
/// rarely meets a full filesystem.
const JOURNAL_RESERVE_STEP: u64 = 64 << 10;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn is_enospc(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(28) | Some(122)) // ENOSPC, EDQUOT
}

/// Why a copy could not be placed.
enum Shortage {
    MaxSize,
    StorageFull,
}

impl CowVolume {
    /// Formats new shadow storage for `origin`.
    pub fn create(
        origin: Arc<dyn Backing>,
        storage: Arc<dyn StorageFiles>,
        opts: CreateOptions,
        tuning: Tuning,
        sink: Option<EventSink>,
    ) -> CowResult<CowVolume> {
        format::check_chunk_size(opts.chunk_size)?;
        let volume_size = origin
            .len()
            .map_err(|e| CowError::io("cannot size the live volume", e))?;
        if volume_size == 0 {
            return Err(CowError::Mismatch("the live volume is empty".into()));
        }
        let sb = Superblock {
            version: format::FORMAT_VERSION,
            storage_id: opts.storage_id,
            volume_id: opts.volume_id,
            volume_size,
            chunk_size: opts.chunk_size,
            created_unix: opts.created_unix,
        };
        let bytes = sb.encode();
        let sbf = storage.superblock();
        sbf.write_at(&bytes, 0)
            .and_then(|()| sbf.write_at(&bytes, SUPERBLOCK_SIZE as u64))
            .and_then(|()| sbf.write_at(&[0u8; SUPERBLOCK_SIZE], LOST_MARKER_OFFSET))
            .and_then(|()| sbf.sync())
            .map_err(|e| CowError::io("cannot write the superblock", e))?;
        let mut frames = Vec::new();
        Record::EpochFloor { next_epoch: 1 }.encode_frame(0, &mut frames);
        Record::SetMaxSize {
            max_bytes: opts.max_bytes,
        }
        .encode_frame(1, &mut frames);
        storage
            .replace_journal(&frames)
            .map_err(|e| CowError::io("cannot write the journal", e))?;
        let (vol, _) = Self::open(origin, storage, tuning, sink)?;
        Ok(vol)
    }

    /// Opens existing shadow storage, replaying its journal and checking
    /// every preserved copy.
    pub fn open(
        origin: Arc<dyn Backing>,
        storage: Arc<dyn StorageFiles>,
        tuning: Tuning,
        sink: Option<EventSink>,
    ) -> CowResult<(CowVolume, Recovery)> {
        let sb = read_superblock(storage.superblock())?;
        let live_size = origin
            .len()
            .map_err(|e| CowError::io("cannot size the live volume", e))?;
        if live_size != sb.volume_size {
            return Err(CowError::Mismatch(format!(
                "the live volume has {live_size} bytes, the shadow storage was made for {}",
                sb.volume_size
            )));
        }
        let cs = u64::from(sb.chunk_size);
        let mut state = State::new(sb.volume_size.div_ceil(cs));
        let journal = storage.journal();
        let jlen = journal
            .len()
            .map_err(|e| CowError::io("cannot size the journal", e))?;
        let mut bytes = vec![0u8; jlen as usize];
        journal
            .read_at(&mut bytes, 0)
            .map_err(|e| CowError::io("cannot read the journal", e))?;
        let mut at = 0usize;
        let mut next_seq = 0u64;
        while let Frame::Record { seq, record, len } = decode_frame(&bytes[at..]) {
            if seq != next_seq {
                break;
            }
            apply(&mut state, record)?;
            at += len;
            next_seq += 1;
        }
        if next_seq == 0 {
            return Err(CowError::Format(crate::error::FormatError::Invalid(
                "the journal holds no records".into(),
            )));
        }
        let end = at as u64;
        // Space reserved ahead reads as zeros; only other bytes are a torn
        // append.
        let torn = bytes[at..]
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |p| p + 1);
        let mut recovery = Recovery {
            journal_bytes_dropped: torn as u64,
            ..Recovery::default()
        };
        // Whatever follows the last whole record is a torn append or stale
        // preallocated space: cut it so that no old frame can ever line up
        // behind a new one.
        journal
            .truncate(end)
            .and_then(|()| journal.sync())
            .map_err(|e| CowError::io("cannot trim the journal", e))?;
        // Shadows marked lost while the journal could not say so.
        let marker = read_lost_marker(storage.superblock());
        let mut marked = Vec::new();
        if let Some(through) = marker {
            let epochs: Vec<u64> = state
                .shadows
                .iter()
                .filter(|(e, s)| **e <= through && s.lost.is_none())
                .map(|(e, _)| *e)
                .collect();
            for epoch in epochs {
                let reason = LostReason::PreserveFailed;
                apply(&mut state, Record::ShadowLost { epoch, reason })?;
                if let Some(s) = state.shadows.get(&epoch) {
                    recovery.lost.push((s.shadow_id, reason));
                }
                marked.push(Record::ShadowLost { epoch, reason });
            }
        }
        let data_len = storage
            .data()
            .len()
            .map_err(|e| CowError::io("cannot size the data file", e))?;
        // A record can name a slot past the data file's end: a power cut
        // that kept the journal's sync but not the data file's (nor its
        // new length). Such copies are repaired or lost below; their slots
        // count as allocated all the same, or accounting would find more
        // free slots than slots once they are freed.
        state.allocated_slots = (data_len / cs).max(state.used_slots_end());
        state.rebuild_free_slots();
        // Holes (space not taken) can be left by an older version, which
        // grew the file sparse. Without room to fill them, copies to those
        // slots are written at once, where a full filesystem evicts.
        let allocated_len = || {
            storage
                .data()
                .allocated_len()
                .map_err(|e| CowError::io("cannot size the data file", e))
        };
        let mut allocated_end = allocated_len()?;
        if allocated_end < data_len {
            match storage.data().fill_holes() {
                Ok(()) => allocated_end = allocated_len()?,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reserve the space of holes in the data file")
                }
            }
        }

        let vol = CowVolume {
            sb,
            origin,
            storage,
            tuning,
            sink,
            cut: RwLock::new(()),
            cow: Mutex::new(()),
            journal: Mutex::new(JournalTail {
                next_seq,
                end,
                reserved: end,
                damaged: false,
            }),
            state: Mutex::new(state),
            copies_made: AtomicU64::new(0),
            shadow_limit: Mutex::new((0, false)),
            pending: RwLock::new(HashMap::new()),
            grow: Mutex::new(()),
            max_changes: AtomicU64::new(0),
            unwritten: RwLock::new(HashMap::new()),
            allocated_end: AtomicU64::new(allocated_end),
            read_ahead: Mutex::new(ReadAhead::default()),
            reorder_from: Mutex::new((0, 0)),
            live_writes: AtomicU64::new(0),
            batch_pool: Mutex::new(BatchPool::default()),
            barrier_gate: Mutex::new(Vec::new()),
        };
        *lock(&vol.shadow_limit) = (vol.tuning.max_shadows, vol.tuning.evict_at_limit);
        if marker.is_some() {
            // Recorded in the journal now; the marker is cleared only once
            // that is durable, else it stays for the next open.
            let recorded = vol.append(&marked);
            if recorded.is_ok() {
                vol.clear_lost_marker();
            }
        }
        recovery.records_checked = vol.check_all_copies(&mut recovery.lost)?;
        lock(&vol.state).rebuild_protection();
        vol.compact_if_worthwhile()?;
        Ok((vol, recovery))
    }

    pub fn volume_size(&self) -> u64 {
        self.sb.volume_size
    }

    pub fn chunk_size(&self) -> u32 {
        self.sb.chunk_size
    }

    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    /// Changes the most shadows kept and what a cut beyond it does. A lower
    /// limit takes effect at the next cut.
    pub fn set_shadow_limit(&self, max_shadows: u32, evict_at_limit: bool) {
        *lock(&self.shadow_limit) = (max_shadows, evict_at_limit);
    }

    /// Live writes served so far.
    pub fn live_writes(&self) -> u64 {
        self.live_writes.load(Ordering::Relaxed)
    }

    pub fn copies_made(&self) -> u64 {
        self.copies_made.load(Ordering::Relaxed)
    }

    fn cs(&self) -> u64 {
        u64::from(self.sb.chunk_size)
    }

    fn check_range(&self, offset: u64, len: usize) -> CowResult<()> {
        let end = offset.checked_add(len as u64);
        if end.is_none_or(|e| e > self.sb.volume_size) {
            return Err(CowError::OutOfRange {
                offset,
                len: len as u64,
                size: self.sb.volume_size,
            });
        }
        Ok(())
    }

    /// Length of chunk `c` (the last one may be short).
    fn chunk_len(&self, c: u64) -> usize {
        let start = c * self.cs();
        (self.sb.volume_size - start).min(self.cs()) as usize
    }

    // ---- live volume -------------------------------------------------

    pub fn read_live(&self, buf: &mut [u8], offset: u64) -> CowResult<()> {
        self.check_range(offset, buf.len())?;
        // Held while reading, so a barrier cannot move a chunk from
        // `pending` to the device between the two reads below.
        let pending = read_lock(&self.pending);
        self.origin
            .read_at(buf, offset)
            .map_err(|e| CowError::io("cannot read the live volume", e))?;
        if !pending.is_empty() && !buf.is_empty() {
            let cs = self.cs();
            let end = offset + buf.len() as u64;
            for c in offset / cs..=(end - 1) / cs {
                if let Some((_, content)) = pending.get(&c) {
                    let (lo, hi) = (offset.max(c * cs), end.min((c + 1) * cs));
                    buf[(lo - offset) as usize..(hi - offset) as usize]
                        .copy_from_slice(&content[(lo - c * cs) as usize..(hi - c * cs) as usize]);
                }
            }
        }
        Ok(())
    }

    /// Writes the live volume, preserving first what shadows still need.
    /// Never fails for lack of shadow storage: the oldest shadows go.
    ///
    /// A write that needed copies is held in memory (`pending`) until a
    /// barrier has made the copies durable; the barrier comes with the next
    /// flush of the volume, the next cut, or when 64 MiB are held. So copies
    /// cost one sync per barrier instead of one per write, and a write is
    /// durable, as on any disk with a volatile cache, once a flush returned.
    pub fn write_live(&self, buf: &[u8], offset: u64) -> CowResult<()> {
        self.write_live_then(buf, offset, &mut || {})
    }

    /// [`write_live`](Self::write_live) that may accept the write early:
    /// when every chunk the write needs preserved is covered whole, the
    /// write is held (visible to reads, durable with the next flush) and
    /// `accepted` is called before the old contents are read and recorded,
    /// which this call then does before it returns. A front end answers the
    /// write in `accepted`, so the writer's next request overlaps the copy
    /// instead of waiting for it (a sequential writer keeps one request in
    /// flight). The old contents stay on the device meanwhile: a held chunk
    /// reaches it only through a barrier, which needs `cow`, held here until
    /// the copy is recorded. When `accepted` was not called, the result is
    /// the write's; after it, an error concerns the copy or the barrier
    /// (shadows are marked lost, held chunks stay held), not the write.
    pub fn write_live_then(
        &self,
        buf: &[u8],
        offset: u64,
        accepted: &mut dyn FnMut(),
    ) -> CowResult<()> {
        self.check_range(offset, buf.len())?;
        if buf.is_empty() {
            return Ok(());
        }
        self.live_writes.fetch_add(1, Ordering::Relaxed);
        let cs = self.cs();
        let first = offset / cs;
        let last = (offset + buf.len() as u64 - 1) / cs;
        let _cut = self.cut.read().unwrap_or_else(|p| p.into_inner());
        let fast = {
            let st = lock(&self.state);
            (first..=last).all(|c| st.is_protected(c))
        } && {
            let pending = read_lock(&self.pending);
            pending.is_empty() || (first..=last).all(|c| !pending.contains_key(&c))
        };
        if fast {
            return self.write_origin(buf, offset);
        }
        let _cow = lock(&self.cow);
        // Chunks just copied are held already, with this write's data in.
        let end = offset + buf.len() as u64;
        let whole_needs_copy = {
            let st = lock(&self.state);
            (first..=last).any(|c| self.covers_whole(c, offset, end) && st.needs_preserve(c))
        };
        let mut merged = Vec::new();
        let mut early = Vec::new();
        if whole_needs_copy {
            // The chunks the write covers in part (at most its first and
            // last) are copied first: their held contents need the old ones.
            let edges = if first == last {
                &[first][..]
            } else {
                &[first, last][..]
            };
            for &c in edges {
                if !self.covers_whole(c, offset, end) {
                    merged.extend(self.preserve(c, c, buf, offset, &[])?);
                }
            }
            early = self.hold_whole_chunks(first, last, buf, offset);
        }
        let held = if early.is_empty() {
            merged.extend(self.preserve(first, last, buf, offset, &[])?);
            merged.sort_unstable();
            merged.dedup();
            self.write_unheld(buf, offset, &merged)?
        } else {
            merged.extend_from_slice(&early);
            merged.sort_unstable();
            let written = self.write_unheld(buf, offset, &merged);
            if written.is_ok() {
                accepted();
            }
            // Copied even when the rest of the write failed: the held
            // chunks reach the device with the next barrier all the same.
            self.preserve(first, last, buf, offset, &early)?;
            written?
        };
        if held >= PENDING_LIMIT_BYTES {
            self.barrier_locked()?;
        }
        Ok(())
    }

    /// Holds the write's contents of the chunks that need preserving, when
    /// all of them are covered whole and none is held already (the copy
    /// then needs nothing from the write, and the old contents are still on
    /// the device); returns them, ascending, or nothing when it held none.
    /// Caller holds `cut` (shared) and `cow`.
    fn hold_whole_chunks(&self, first: u64, last: u64, buf: &[u8], offset: u64) -> Vec<u64> {
        let cs = self.cs();
        let end = offset + buf.len() as u64;
        // State first, then `pending`, never both (the barrier takes them
        // the other way round); `cow` keeps the need as it is meanwhile.
        let (need, tag) = {
            let st = lock(&self.state);
            let need: Vec<u64> = (first..=last).filter(|&c| st.needs_preserve(c)).collect();
            (need, st.latest_epoch())
        };
        let Some(tag) = tag.filter(|_| !need.is_empty()) else {
            return Vec::new();
        };
        let mut pending = write_lock(&self.pending);
        if !need
            .iter()
            .all(|&c| self.covers_whole(c, offset, end) && !pending.contains_key(&c))
        {
            return Vec::new();
        }
        for &c in &need {
            let from = (c * cs - offset) as usize;
            let mut content = buf[from..from + self.chunk_len(c)].to_vec();
            // Zero-padded like a copy of a short last chunk.
            content.resize(cs as usize, 0);
            pending.insert(c, (tag, content));
        }
        need
    }

    /// Whether a write of `offset..end` covers chunk `c` whole.
    fn covers_whole(&self, c: u64, offset: u64, end: u64) -> bool {
        let at = c * self.cs();
        at >= offset && at + self.chunk_len(c) as u64 <= end
    }

    /// Writes the parts of the write outside the chunks `held` (ascending,
    /// holding the write already): into chunks held from earlier writes,
    /// or, in runs, straight to the device. Returns the bytes now held.
    fn write_unheld(&self, buf: &[u8], offset: u64, held: &[u64]) -> CowResult<usize> {
        let cs = self.cs();
        let (first, end) = (offset / cs, offset + buf.len() as u64);
        let last = (end - 1) / cs;
        let mut pending = write_lock(&self.pending);
        let mut direct: Option<(u64, u64)> = None;
        let mut runs = Vec::new();
        let mut held = held.iter().peekable();
        for c in first..=last {
            let (lo, hi) = (offset.max(c * cs), end.min((c + 1) * cs));
            if held.next_if_eq(&&c).is_some() {
                if let Some(r) = direct.take() {
                    runs.push(r);
                }
            } else if let Some((_, content)) = pending.get_mut(&c) {
                content[(lo - c * cs) as usize..(hi - c * cs) as usize]
                    .copy_from_slice(&buf[(lo - offset) as usize..(hi - offset) as usize]);
                if let Some(r) = direct.take() {
                    runs.push(r);
                }
            } else {
                direct = Some(direct.map_or((lo, hi), |(s, _)| (s, hi)));
            }
        }
        runs.extend(direct);
        for (lo, hi) in runs {
            self.write_origin(&buf[(lo - offset) as usize..(hi - offset) as usize], lo)?;
        }
        Ok(pending.len() * cs as usize)
    }

    fn write_origin(&self, buf: &[u8], offset: u64) -> CowResult<()> {
        self.origin
            .write_at(buf, offset)
            .map_err(|e| CowError::io("cannot write the live volume", e))
    }

    /// Makes completed live writes durable.
    pub fn flush_live(&self) -> CowResult<()> {
        {
            let _cow = lock(&self.cow);
            self.barrier_locked()?;
        }
        self.origin
            .sync()
            .map_err(|e| CowError::io("cannot sync the live volume", e))
    }

    /// Makes every copy made so far and its record durable (data file and
    /// journal synced at once), then writes the live chunks held back for
    /// them. A record that reached the disk without its data, should the
    /// machine stop during the sync, is recognised by its crc at the next
    /// open and repaired from the live chunk, which was not written yet
    /// (`check_all_copies`). Caller holds `cow`.
    fn barrier_locked(&self) -> CowResult<()> {
        let (held, copies) = self.capture_for_barrier();
        self.barrier_of(held, copies)
    }

    /// What a barrier taken now covers: the held live chunks and the copies
    /// not yet written. Taken under `cow`, so that every held chunk's copy
    /// is among them (or written already).
    fn capture_for_barrier(&self) -> (Vec<u64>, Vec<(u64, HeldCopy)>) {
        let held = read_lock(&self.pending).keys().copied().collect();
        let copies = read_lock(&self.unwritten)
            .iter()
            .map(|(&slot, copy)| (slot, copy.clone()))
            .collect();
        (held, copies)
    }

    /// Bytes of live writes held for a barrier.
    pub fn held_bytes(&self) -> u64 {
        read_lock(&self.pending).len() as u64 * self.cs()
    }

    /// A barrier for the writes held so far, taken without stopping new
    /// copies while it syncs: meant for a background thread, so that
    /// writers rarely meet the 64 MiB limit.
    pub fn flush_held(&self) -> CowResult<()> {
        let (held, copies) = {
            let _cow = lock(&self.cow);
            self.capture_for_barrier()
        };
        self.barrier_of(held, copies)
    }

    /// Writes the copies `copies` (those not written yet) to the data file,
    /// syncs it and the journal, then writes the held chunks `held` (those
    /// still held) to the device. Every held chunk's record was written
    /// before the chunk was held, and its copy is among `copies` or written
    /// already, so the sync covers them; chunks held after the capture wait
    /// for the next barrier.
    fn barrier_of(&self, mut held: Vec<u64>, copies: Vec<(u64, HeldCopy)>) -> CowResult<()> {
        if held.is_empty() && copies.is_empty() {
            return Ok(());
        }
        let mut gate = lock(&self.barrier_gate);
        let copies_written = self.write_held_copies(copies);
        let data = self.storage.data();
        let journal = self.storage.journal();
        let (data_synced, journal_synced) = std::thread::scope(|s| {
            let j = s.spawn(|| journal.sync());
            let d = data.sync();
            let j = j
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("sync thread panicked")));
            (d, j)
        });
        if journal_synced.is_err() {
            lock(&self.journal).damaged = true;
        }
        let pending = write_lock(&self.pending);
        if let Err(e) = copies_written.and(data_synced).and(journal_synced) {
            // The live writes go ahead all the same (a live write never
            // fails because of a shadow); the shadows the copies serve
            // cannot be trusted any more.
            tracing::error!(error = %e, "cannot make preserved chunks durable; shadows needing them are lost");
            let epochs: Vec<u64> = {
                let st = lock(&self.state);
                let mut e: Vec<u64> = held
                    .iter()
                    .filter_map(|c| pending.get(c).map(|(tag, _)| (*c, *tag)))
                    .flat_map(|(c, tag)| st.shadows_served_by(c, tag))
                    .collect();
                e.sort_unstable();
                e.dedup();
                e
            };
            self.mark_lost(&epochs, LostReason::PreserveFailed);
        }
        drop(pending);
        held.sort_unstable();
        // Runs of consecutive chunks go to the device in one write each (a
        // 16 KiB write per chunk costs several times the bandwidth). A run
        // that cannot be written goes back to `pending`, so no live data is
        // dropped and the next barrier tries again. `pending` is held for
        // one run at a time: a writer waits for one run's write at most, not
        // for the whole barrier (a chunk still waiting for its run stays in
        // `pending`, where a new write to it merges).
        let run: &mut Vec<u8> = &mut gate;
        let mut run_chunks: Vec<(u64, (u64, Vec<u8>))> = Vec::new();
        let mut i = 0;
        while i < held.len() {
            let mut pending = write_lock(&self.pending);
            run.clear();
            run_chunks.clear();
            let mut run_start = 0;
            while let Some(&c) = held.get(i) {
                let at = c * self.cs();
                if !run.is_empty()
                    && (run_start + run.len() as u64 != at || run.len() >= LIVE_RUN_BYTES)
                {
                    break;
                }
                i += 1;
                let Some(entry) = pending.remove(&c) else {
                    continue;
                };
                if run.is_empty() {
                    run_start = at;
                }
                run.extend_from_slice(&entry.1[..self.chunk_len(c)]);
                run_chunks.push((c, entry));
            }
            if !run.is_empty() {
                let r = self.write_origin(run, run_start);
                if r.is_err() {
                    pending.extend(run_chunks.drain(..));
                }
                r?;
            }
        }
        Ok(())
    }

    /// Writes those of `copies` that the map of unwritten copies still
    /// names (an earlier barrier may have written one, or its slot gone to
    /// another copy) to their slots, in runs, and takes them off the map:
    /// the data file holds them now, or, if a write failed, the shadows they
    /// serve are marked lost by the caller.
    fn write_held_copies(&self, mut copies: Vec<(u64, HeldCopy)>) -> std::io::Result<()> {
        if copies.is_empty() {
            return Ok(());
        }
        let cs = self.cs() as usize;
        {
            let unwritten = read_lock(&self.unwritten);
            copies.retain(|(slot, copy)| unwritten.get(slot).is_some_and(|c| c.is(copy)));
        }
        copies.sort_unstable_by_key(|&(slot, _)| slot);
        let data = self.storage.data();
        let mut result = Ok(());
        let mut i = 0;
        while i < copies.len() {
            // Neighbouring slots go in one request of up to 4 MiB, from
            // their buffers as they are (one part per stretch of one
            // buffer).
            // `(buffer, first index, end index)` per stretch.
            let mut stretches: Vec<(&AlignedBuf, usize, usize)> = Vec::new();
            let mut j = i;
            while j < copies.len()
                && (j == i || copies[j].0 == copies[j - 1].0 + 1)
                && (j - i) * cs < BARRIER_WRITE_BYTES
            {
                let copy = &copies[j].1;
                match stretches.last_mut() {
                    Some((b, _, end)) if std::ptr::eq(*b, &*copy.batch) && *end == copy.index => {
                        *end += 1
                    }
                    _ => stretches.push((&copy.batch, copy.index, copy.index + 1)),
                }
                j += 1;
            }
            let parts: Vec<&[u8]> = stretches
                .iter()
                .map(|(b, from, to)| &b.as_slice()[from * cs..to * cs])
                .collect();
            if let Err(e) = data.write_parts_direct(&parts, copies[i].0 * cs as u64) {
                result = Err(e);
                break;
            }
            i = j;
        }
        {
            let mut unwritten = write_lock(&self.unwritten);
            for (slot, copy) in &copies {
                if unwritten.get(slot).is_some_and(|c| c.is(copy)) {
                    unwritten.remove(slot);
                }
            }
        }
        let mut batches: Vec<Arc<AlignedBuf>> = Vec::new();
        for (_, copy) in copies {
            if !batches.last().is_some_and(|b| Arc::ptr_eq(b, &copy.batch)) {
                batches.push(copy.batch);
            }
        }
        for batch in batches {
            self.recycle_batch(batch);
        }
        result
    }

    /// A buffer for `len` bytes of copies, from the pool when it has one.
    fn take_batch(&self, len: usize) -> AlignedBuf {
        let class = len.next_power_of_two();
        let mut pool = lock(&self.batch_pool);
        match pool.by_size.get_mut(&class).and_then(Vec::pop) {
            Some(batch) => {
                pool.bytes -= class;
                batch
            }
            None => AlignedBuf::zeroed(class),
        }
    }

    /// Gives a copy buffer back to the pool once nothing refers to it.
    fn recycle_batch(&self, batch: Arc<AlignedBuf>) {
        let Ok(batch) = Arc::try_unwrap(batch) else {
            return;
        };
        let mut pool = lock(&self.batch_pool);
        if pool.bytes + batch.len() <= BATCH_POOL_BYTES {
            pool.bytes += batch.len();
            pool.by_size.entry(batch.len()).or_default().push(batch);
        }
    }

    /// Preserves chunks `first..=last` where a shadow needs them, for the
    /// live write of `write` at `offset`. Returns the chunks it copied:
    /// they are held for the barrier already, with the write's data in.
    /// The chunks `early` (ascending) hold the write already, whole (see
    /// `hold_whole_chunks`). Caller holds `cut` (shared) and `cow`.
    fn preserve(
        &self,
        first: u64,
        last: u64,
        write: &[u8],
        offset: u64,
        early: &[u64],
    ) -> CowResult<Vec<u64>> {
        loop {
            let (need, tag) = {
                let mut st = lock(&self.state);
                let mut need = Vec::new();
                for c in first..=last {
                    if st.needs_preserve(c) {
                        need.push(c);
                    } else {
                        st.set_protected(c);
                    }
                }
                (need, st.latest_epoch())
            };
            let Some(tag) = tag.filter(|_| !need.is_empty()) else {
                return Ok(Vec::new());
            };
            let slots = match self.allocate_slots(need.len() as u64) {
                Err(err) => {
                    self.give_up(&need, &err);
                    return Ok(Vec::new());
                }
                Ok(Ok(slots)) => slots,
                Ok(Err(shortage)) => {
                    let reason = match shortage {
                        Shortage::MaxSize => DeleteReason::MaxSizeReached,
                        Shortage::StorageFull => DeleteReason::StorageFull,
                    };
                    // Room is made by the oldest shadow going; then the
                    // need is worked out again (fewer shadows may need
                    // fewer copies).
                    if let Err(err) = self.evict_oldest(reason) {
                        self.give_up(&need, &err);
                        return Ok(Vec::new());
                    }
                    continue;
                }
            };
            match self.copy_chunks(&need, &slots, tag, (write, offset), early) {
                Ok(()) => {
                    self.copies_made
                        .fetch_add(need.len() as u64, Ordering::Relaxed);
                    return Ok(need);
                }
                Err(CopyError::Full) => {
                    self.release_slots(&slots);
                    if let Err(err) = self.evict_oldest(DeleteReason::StorageFull) {
                        self.give_up(&need, &err);
                        return Ok(Vec::new());
                    }
                }
                Err(CopyError::Failed(err)) => {
                    self.release_slots(&slots);
                    self.give_up(&need, &err);
                    return Ok(Vec::new());
                }
            }
        }
    }

    /// The chunks `need` cannot be preserved (shadow storage unusable): the
    /// live write goes ahead all the same, and the shadows that needed them
    /// are marked lost, since they cannot be exact any more.
    fn give_up(&self, need: &[u64], err: &CowError) {
        tracing::error!(error = %err, "cannot preserve chunks; shadows needing them are lost");
        let epochs: Vec<u64> = {
            let st = lock(&self.state);
            let mut e: Vec<u64> = need.iter().flat_map(|&c| st.shadows_needing(c)).collect();
            e.sort_unstable();
            e.dedup();
            e
        };
        self.mark_lost(&epochs, LostReason::PreserveFailed);
        let mut st = lock(&self.state);
        for &c in need {
            st.set_protected(c);
        }
    }

    /// Reads the old contents of `chunks`, records them as preserved in
    /// `slots`, and holds the chunks with `write` (at `offset`) merged in
    /// for the barrier (those in `early` are held with it already, and
    /// their held contents are not the old ones). Copies to slots whose
    /// space is taken already wait in memory for the barrier too; the
    /// others are written now, so that a full filesystem shows here.
    fn copy_chunks(
        &self,
        chunks: &[u64],
        slots: &[u64],
        tag: u64,
        (write, offset): (&[u8], u64),
        early: &[u64],
    ) -> Result<(), CopyError> {
        let cs = self.cs() as usize;
        // Aligned, so the copies can go to the data file past the page cache.
        let mut batch = self.take_batch(cs * chunks.len());
        let bytes = &mut batch.as_mut_slice()[..cs * chunks.len()];
        {
            // Held while reading, like `read_live`: a chunk held for a
            // barrier (after a failed live write) has its content there.
            let pending = read_lock(&self.pending);
            // Consecutive chunks are read in one go.
            let mut i = 0;
            while i < chunks.len() {
                let mut j = i + 1;
                while j < chunks.len() && chunks[j] == chunks[j - 1] + 1 {
                    j += 1;
                }
                let start = chunks[i] * self.cs();
                let len: usize = (i..j).map(|k| self.chunk_len(chunks[k])).sum();
                self.origin
                    .read_at(&mut bytes[i * cs..i * cs + len], start)
                    .map_err(|e| {
                        CopyError::Failed(CowError::io("cannot read chunks to preserve", e))
                    })?;
                // A short last chunk is kept zero-padded (its crc covers
                // the padding).
                bytes[i * cs + len..j * cs].fill(0);
                i = j;
            }
            if !pending.is_empty() {
                for (i, c) in chunks.iter().enumerate() {
                    if early.binary_search(c).is_ok() {
                        continue;
                    }
                    if let Some((_, content)) = pending.get(c) {
                        bytes[i * cs..(i + 1) * cs].copy_from_slice(content);
                    }
                }
            }
        }
        let crcs: Vec<u32> = bytes.chunks(cs).map(crc32c::crc32c).collect();
        let deferrable = self.allocated_end.load(Ordering::SeqCst) / self.cs();
        // Consecutive slots are written in one go.
        let data = self.storage.data();
        let mut i = 0;
        while i < slots.len() {
            let mut j = i + 1;
            while j < slots.len() && slots[j] == slots[j - 1] + 1 {
                j += 1;
            }
            // The slots of a run at or past `deferrable`.
            let from = i
                + (slots[i]..slots[i] + (j - i) as u64)
                    .take_while(|&s| s < deferrable)
                    .count();
            if from < j {
                data.write_at_direct(&bytes[from * cs..j * cs], slots[from] * self.cs())
                    .map_err(|e| CopyError::from_io("cannot write preserved chunks", e))?;
            }
            i = j;
        }
        let records: Vec<Record> = chunks
            .iter()
            .zip(slots)
            .zip(&crcs)
            .map(|((&chunk, &slot), &data_crc)| Record::Preserved {
                chunk,
                epoch: tag,
                slot,
                data_crc,
            })
            .collect();
        let mut jt = lock(&self.journal);
        self.write_records_locked(&mut jt, &records)
            .map_err(|e| match e {
                CowError::Io { source, .. } if is_enospc(&source) => CopyError::Full,
                other => CopyError::Failed(other),
            })?;
        drop(jt);
        let batch = Arc::new(batch);
        {
            let mut unwritten = write_lock(&self.unwritten);
            for (index, &slot) in slots.iter().enumerate() {
                if slot < deferrable {
                    let copy = HeldCopy {
                        batch: batch.clone(),
                        index,
                    };
                    unwritten.insert(slot, copy);
                }
            }
        }
        // Pending first, protected second: a write on the fast path that
        // sees the chunk protected then also sees it pending.
        {
            let mut pending = write_lock(&self.pending);
            let end = offset + write.len() as u64;
            let c0 = self.cs();
            for (i, &chunk) in chunks.iter().enumerate() {
                if early.binary_search(&chunk).is_ok() {
                    continue;
                }
                let old = &batch.as_slice()[i * cs..(i + 1) * cs];
                let (lo, hi) = (offset.max(chunk * c0), end.min((chunk + 1) * c0));
                let (a, b) = ((lo - chunk * c0) as usize, (hi - chunk * c0) as usize);
                let mut content = Vec::with_capacity(cs);
                content.extend_from_slice(&old[..a]);
                content.extend_from_slice(&write[(lo - offset) as usize..(hi - offset) as usize]);
                content.extend_from_slice(&old[b..]);
                pending.insert(chunk, (tag, content));
            }
        }
        self.recycle_batch(batch);
        let mut st = lock(&self.state);
        for ((&chunk, &slot), &crc) in chunks.iter().zip(slots).zip(&crcs) {
            st.insert_record(chunk, tag, Preserved { slot, crc });
            st.set_protected(chunk);
        }
        Ok(())
    }

    /// Takes `n` free slots, growing the data file within the maximum size.
    fn allocate_slots(&self, n: u64) -> CowResult<Result<Vec<u64>, Shortage>> {
        let journal_bytes = lock(&self.journal).reserved;
        let mut st = lock(&self.state);
        let fresh = n - n.min(st.free_slots.len() as u64);
        if fresh > 0 {
            if let Err(shortage) = self.grow_slots(&mut st, fresh, journal_bytes)? {
                return Ok(Err(shortage));
            }
        }
        let slots: Vec<u64> = (0..n)
            .map(|_| st.pop_free_slot().expect("counted above"))
            .collect();
        Ok(Ok(slots))
    }

    /// Adds at least `fresh` slots at the end of the data file, within the
    /// maximum size (`journal_bytes` of which the journal takes).
    fn grow_slots(
        &self,
        st: &mut State,
        fresh: u64,
        journal_bytes: u64,
    ) -> CowResult<Result<(), Shortage>> {
        let cs = self.cs();
        let max_slots = st
            .max_bytes
            .map_or(u64::MAX, |m| m.saturating_sub(journal_bytes) / cs);
        if st.allocated_slots + fresh > max_slots {
            return Ok(Err(Shortage::MaxSize));
        }
        let step = (self.tuning.grow_step / cs).max(1);
        let target = (st.allocated_slots + fresh.max(step)).min(max_slots);
        // `prepare_storage` normally keeps space reserved ahead, so that
        // this is rare; a full filesystem shows here, and evicts.
        let _grow = lock(&self.grow);
        let end = match self.reserve_data(target * cs) {
            Ok(()) => target,
            Err(e) if !is_enospc(&e) => {
                return Err(CowError::io("cannot grow the shadow storage", e))
            }
            // A smaller step may still fit.
            Err(_) => {
                let exact = st.allocated_slots + fresh;
                match self.reserve_data(exact * cs) {
                    Ok(()) => exact,
                    Err(e) if is_enospc(&e) => return Ok(Err(Shortage::StorageFull)),
                    Err(e) => return Err(CowError::io("cannot grow the shadow storage", e)),
                }
            }
        };
        let old = st.allocated_slots;
        st.allocated_slots = end;
        st.free_slots.extend(old..end);
        Ok(Ok(()))
    }

    /// Keeps the data file's space reserved (`Backing::reserve`) and synced
    /// up to `prepare_ahead` beyond the slots allocated so far, within the
    /// maximum size. Meant for a background thread: the file's growth then
    /// costs the writers nothing. Stops quietly when the filesystem is full
    /// (the copy path handles that). Returns the bytes added.
    pub fn prepare_storage(&self) -> CowResult<u64> {
        const STEP: u64 = 1 << 20;
        let cs = self.cs();
        let data = self.storage.data();
        let mut added = 0;
        loop {
            let max_seen = self.max_changes.load(Ordering::SeqCst);
            let journal_bytes = lock(&self.journal).reserved;
            let (max_bytes, allocated) = {
                let st = lock(&self.state);
                (st.max_bytes, st.allocated_slots)
            };
            let limit = max_bytes.map_or(u64::MAX, |m| m.saturating_sub(journal_bytes) / cs * cs);
            let want = (allocated * cs)
                .saturating_add(self.tuning.prepare_ahead)
                .min(limit)
                / cs
                * cs;
            // Zeros go only past the file's end, and allocation grows the
            // file only under the same lock, so they never land on a slot
            // handed out. The state lock is not held: writers need it.
            let _grow = lock(&self.grow);
            if self.max_changes.load(Ordering::SeqCst) != max_seen {
                continue;
            }
            let cur = data
                .len()
                .map_err(|e| CowError::io("cannot read the data file's size", e))?;
            if cur >= want {
                break;
            }
            let end = (cur + STEP).min(want);
            if let Err(e) = self.reserve_data(end) {
                if is_enospc(&e) {
                    break;
                }
                return Err(CowError::io("cannot prepare shadow storage", e));
            }
            added += end - cur;
        }
        if added > 0 {
            data.sync()
                .map_err(|e| CowError::io("cannot sync prepared shadow storage", e))?;
        }
        Ok(added)
    }

    /// Grows the data file to `len` with its space taken. Caller holds
    /// `grow`.
    fn reserve_data(&self, len: u64) -> std::io::Result<()> {
        let data = self.storage.data();
        let cur = data.len()?;
        data.reserve(len)?;
        // Taken space reaches the new end if it reached the old one.
        let _ = self
            .allocated_end
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |a| {
                (a >= cur).then_some(len.max(cur))
            });
        Ok(())
    }

    /// Gives back the data file's space past its allocated slots (what
    /// `prepare_storage` reserved ahead). Returns the bytes given back.
    fn release_prepared(&self) -> std::io::Result<u64> {
        let st = lock(&self.state);
        let _grow = lock(&self.grow);
        let data = self.storage.data();
        let keep = st.allocated_slots * self.cs();
        let len = data.len()?;
        if len <= keep {
            return Ok(0);
        }
        data.truncate(keep)?;
        self.allocated_end.fetch_min(keep, Ordering::SeqCst);
        tracing::info!(
            bytes = len - keep,
            "shadow storage's filesystem is full: space reserved ahead given back"
        );
        Ok(len - keep)
    }

    fn release_slots(&self, slots: &[u64]) {
        lock(&self.state).free_slots.extend(slots.iter().copied());
    }

    fn append_locked(&self, jt: &mut JournalTail, records: &[Record]) -> CowResult<()> {
        self.write_records_locked(jt, records)?;
        self.storage.journal().sync().map_err(|e| {
            jt.damaged = true;
            CowError::io("cannot sync the journal", e)
        })
    }

    /// Appends records without syncing them; the caller syncs. The caller
    /// must not hold `state` (a damaged journal is rewritten from it).
    fn write_records_locked(&self, jt: &mut JournalTail, records: &[Record]) -> CowResult<()> {
        if jt.damaged {
            let st = lock(&self.state);
            self.rewrite_journal_locked(jt, &st)?;
            tracing::warn!("journal rewritten after a failed write or sync");
        }
        let mut frames = Vec::new();
        for (i, r) in records.iter().enumerate() {
            r.encode_frame(jt.next_seq + i as u64, &mut frames);
        }
        let journal = self.storage.journal();
        let end = jt.end + frames.len() as u64;
        if end > jt.reserved {
            let mut want = end.div_ceil(JOURNAL_RESERVE_STEP) * JOURNAL_RESERVE_STEP;
            {
                // Reserving ahead must not push the storage past its maximum.
                let st = lock(&self.state);
                if let Some(max) = st.max_bytes {
                    let room = max.saturating_sub(st.allocated_slots * self.cs());
                    want = want.min(room).max(end);
                }
            }
            // Without room to reserve ahead, the exact size may still fit;
            // failing that, the data file's space reserved ahead of its
            // slots is given back first (records come before speculation).
            let full = |r: &std::io::Result<()>| r.as_ref().is_err_and(is_enospc);
            let grow_err = |e| CowError::io("cannot grow the journal", e);
            let mut grown = journal.reserve(want);
            if full(&grown) {
                grown = journal.reserve(end);
            }
            if full(&grown) && self.release_prepared().map_err(grow_err)? > 0 {
                grown = journal.reserve(end);
            }
            grown.map_err(grow_err)?;
            jt.reserved = journal.len().unwrap_or(end).max(end);
        }
        journal.write_at(&frames, jt.end).map_err(|e| {
            jt.damaged = true;
            CowError::io("cannot append to the journal", e)
        })?;
        jt.end = end;
        jt.next_seq += records.len() as u64;
        Ok(())
    }

    fn append(&self, records: &[Record]) -> CowResult<()> {
        let mut jt = lock(&self.journal);
        self.append_locked(&mut jt, records)
    }

    // ---- shadows -----------------------------------------------------

    /// The cut. The caller holds the volume's filesystem frozen (or
    /// otherwise quiet); writes still in flight in this engine finish
    /// first. `free` lists byte ranges that are free space in the volume's
    /// filesystem right now (GETFSMAP), or is empty when unknown.
    pub fn create_shadow(
        &self,
        shadow_id: u128,
        free: &[(u64, u64)],
        created_unix_ns: i64,
    ) -> CowResult<ShadowInfo> {
        let _cut = self.cut.write().unwrap_or_else(|p| p.into_inner());
        let _cow = lock(&self.cow);
        {
            let st = lock(&self.state);
            if st.by_id.contains_key(&shadow_id) {
                return Err(CowError::ShadowExists(shadow_id));
            }
        }
        let (max_shadows, evict_at_limit) = *lock(&self.shadow_limit);
        loop {
            let count = lock(&self.state).shadows.len() as u32;
            if count < max_shadows.max(1) {
                break;
            }
            if !evict_at_limit {
                return Err(CowError::ShadowLimit { limit: max_shadows });
            }
            self.evict_oldest(DeleteReason::ShadowLimit)?;
        }
        // The shadow is the live volume as it is now, durably.
        self.barrier_locked()?;
        self.origin
            .sync()
            .map_err(|e| CowError::io("cannot sync the live volume", e))?;
        let free = ChunkRanges::from_byte_ranges(free, self.sb.chunk_size, self.sb.volume_size);
        let epoch = lock(&self.state).next_epoch;
        self.append(&[Record::ShadowCreated {
            epoch,
            shadow_id,
            created_unix_ns,
            free: free.ranges().to_vec(),
        }])?;
        let mut st = lock(&self.state);
        st.protect_after_cut(&free);
        let info = ShadowInfo {
            shadow_id,
            epoch,
            created_unix_ns,
            lost: None,
            free_chunks: free.chunk_count(),
        };
        st.add_shadow(Shadow {
            shadow_id,
            epoch,
            created_unix_ns,
            free,
            lost: None,
        });
        Ok(info)
    }

    pub fn shadows(&self) -> Vec<ShadowInfo> {
        lock(&self.state)
            .shadows
            .values()
            .map(|s| ShadowInfo {
                shadow_id: s.shadow_id,
                epoch: s.epoch,
                created_unix_ns: s.created_unix_ns,
                lost: s.lost,
                free_chunks: s.free.chunk_count(),
            })
            .collect()
    }

    pub fn shadow(&self, shadow_id: u128) -> Option<ShadowInfo> {
        self.shadows()
            .into_iter()
            .find(|s| s.shadow_id == shadow_id)
    }

    pub fn delete_shadow(&self, shadow_id: u128) -> CowResult<()> {
        {
            let _cow = lock(&self.cow);
            let epoch = *lock(&self.state)
                .by_id
                .get(&shadow_id)
                .ok_or(CowError::NoSuchShadow(shadow_id))?;
            self.delete_locked(epoch, DeleteReason::Requested)?;
        }
        self.compact_if_worthwhile()
    }

    /// Deletes the oldest shadow. Caller holds `cow`.
    fn evict_oldest(&self, reason: DeleteReason) -> CowResult<()> {
        let Some(epoch) = lock(&self.state).oldest_epoch() else {
            // Nothing left to evict: nothing needs a copy either, so the
            // caller's retry finds no work.
            return Ok(());
        };
        self.delete_locked(epoch, reason)
    }

    /// Caller holds `cow`.
    fn delete_locked(&self, epoch: u64, reason: DeleteReason) -> CowResult<()> {
        // Durable first: only then may the freed slots take other data.
        self.append(&[Record::ShadowDeleted { epoch, reason }])?;
        let (shadow_id, freed) = {
            let mut st = lock(&self.state);
            let id = st.shadows.get(&epoch).map(|s| s.shadow_id);
            let freed = st.remove_shadow(epoch);
            st.free_slots.extend(freed.iter().copied());
            (id, freed.len())
        };
        if let (Some(shadow_id), true) = (shadow_id, reason != DeleteReason::Requested) {
            let usage = self.usage();
            tracing::warn!(
                shadow = format!("{shadow_id:032x}"),
                ?reason,
                freed_chunks = freed,
                "shadow deleted to make room in shadow storage"
            );
            self.emit(&Event::ShadowEvicted {
                shadow_id,
                reason,
                used_bytes: usage.used_bytes,
                max_bytes: usage.max_bytes,
            });
        }
        Ok(())
    }

    /// Sets (or raises) the lost-shadow marker in the superblock file, in
    /// place: the fallback when the journal cannot record lost shadows, so
    /// that a restart cannot present them as exact.
    fn set_lost_marker(&self, through_epoch: u64) {
        let sbf = self.storage.superblock();
        let through = read_lost_marker(sbf).map_or(through_epoch, |t| t.max(through_epoch));
        let written = sbf
            .write_at(&encode_lost_marker(through), LOST_MARKER_OFFSET)
            .and_then(|()| sbf.sync());
        if let Err(e) = written {
            tracing::error!(error = %e, "cannot set the lost-shadow marker either; lost shadows are known in memory only");
        }
    }

    fn clear_lost_marker(&self) {
        let sbf = self.storage.superblock();
        let cleared = sbf
            .write_at(&[0u8; SUPERBLOCK_SIZE], LOST_MARKER_OFFSET)
            .and_then(|()| sbf.sync());
        if let Err(e) = cleared {
            tracing::warn!(error = %e, "cannot clear the lost-shadow marker (it will be applied again)");
        }
    }

    fn emit(&self, event: &Event) {
        if let Some(sink) = &self.sink {
            sink(event);
        }
    }

    /// Marks shadows lost, durably when the journal can still be written.
    fn mark_lost(&self, epochs: &[u64], reason: LostReason) {
        let mut jt = lock(&self.journal);
        let fresh: Vec<u64> = {
            let st = lock(&self.state);
            epochs
                .iter()
                .copied()
                .filter(|e| st.shadows.get(e).is_some_and(|s| s.lost.is_none()))
                .collect()
        };
        if fresh.is_empty() {
            return;
        }
        let records: Vec<Record> = fresh
            .iter()
            .map(|&epoch| Record::ShadowLost { epoch, reason })
            .collect();
        if let Err(e) = self.append_locked(&mut jt, &records) {
            tracing::error!(error = %e, "cannot record lost shadows in the journal; setting the lost-shadow marker");
            let through = fresh.iter().copied().max().unwrap_or(0);
            self.set_lost_marker(through);
        }
        let mut lost_ids = Vec::new();
        {
            let mut st = lock(&self.state);
            for e in fresh {
                if let Some(s) = st.shadows.get_mut(&e) {
                    s.lost = Some(reason);
                    lost_ids.push(s.shadow_id);
                }
            }
        }
        drop(jt);
        for shadow_id in lost_ids {
            self.emit(&Event::ShadowLost { shadow_id, reason });
        }
    }

    /// Reads a shadow. Copies are checked against their crc32c; a bad one
    /// makes every shadow it serves lost. Reads of chunks still live are
    /// validated after the fact: if a copy appeared meanwhile (a live write
    /// raced this read) the read is done again from the copy.
    pub fn read_shadow(&self, shadow_id: u128, buf: &mut [u8], offset: u64) -> CowResult<()> {
        self.check_range(offset, buf.len())?;
        if buf.is_empty() {
            return Ok(());
        }
        let cs = self.cs();
        let first = offset / cs;
        let last = (offset + buf.len() as u64 - 1) / cs;
        let sequential = self.read_ahead_starts(offset, offset + buf.len() as u64);
        loop {
            let (epoch, moves, sources, checked) = {
                let st = lock(&self.state);
                let epoch = readable_epoch(&st, shadow_id)?;
                let sources = st.sources(epoch, first, last).expect("shadow exists");
                // Copies a read has checked since their slot took them need
                // no crc again (a warm read would spend a fifth of its time
                // on it); a slot taken for other data meanwhile shows as a
                // move or a deleted shadow below, and the read starts over.
                let checked: Vec<bool> = sources
                    .iter()
                    .map(|s| matches!(s, Source::Copy { at, .. } if st.copy_verified(at.slot)))
                    .collect();
                (epoch, st.moves, sources, checked)
            };
            let mut moved = false;
            // Slots whose copies this read checked, read from the data file.
            let mut newly_checked = Vec::new();
            // Runs of neighbouring chunks with the same kind of source (and,
            // for copies, neighbouring slots) are read with one call each.
            let end = offset + buf.len() as u64;
            let piece = |c: u64| (offset.max(c * cs), end.min((c + 1) * cs));
            let mut copy_buf = Vec::new();
            let mut prefetched = false;
            let same_run = |a: &Source, b: &Source| match (a, b) {
                (Source::Zeros, Source::Zeros) | (Source::Live, Source::Live) => true,
                (Source::Copy { at: a, .. }, Source::Copy { at: b, .. }) => b.slot == a.slot + 1,
                _ => false,
            };
            'runs: for r in runs(&sources, same_run) {
                let (c_i, c_j) = (first + r.start as u64, first + r.end as u64 - 1);
                let (lo, _) = piece(c_i);
                let (_, hi) = piece(c_j);
                let out = &mut buf[(lo - offset) as usize..(hi - offset) as usize];
                match sources[r.start] {
                    Source::Zeros => out.fill(0),
                    Source::Live => self
                        .origin
                        .read_at(out, lo)
                        .map_err(|e| CowError::io("cannot read the live volume", e))?,
                    Source::Copy { at, .. } => {
                        // Whole chunks are read straight into `buf` (one
                        // memory copy less); parts of chunks through
                        // `copy_buf`, since a copy's crc covers it whole.
                        let whole = hi - lo == r.len() as u64 * cs;
                        if !whole {
                            copy_buf.resize(r.len() * cs as usize, 0);
                        }
                        let dest: &mut [u8] = if whole { out } else { &mut copy_buf };
                        let try_cached = !prefetched;
                        let mut before_wait = || {
                            prefetched = true;
                            self.prefetch_copies(&sources[r.start..]);
                            if sequential {
                                self.read_ahead(epoch, last + 1, (last + 1 - first) * cs, true);
                            }
                        };
                        let before_wait: Option<&mut dyn FnMut()> = if try_cached {
                            Some(&mut before_wait)
                        } else {
                            None
                        };
                        let from_file = self.read_copies(at.slot, dest, before_wait)?;
                        for (k, chunk) in r.clone().zip(dest.chunks(cs as usize)) {
                            let Source::Copy { epoch: tag, at } = sources[k] else {
                                unreachable!("a run of copies");
                            };
                            if checked[k] {
                                continue;
                            }
                            if from_file {
                                newly_checked.push(at.slot);
                            }
                            if crc32c::crc32c(chunk) != at.crc {
                                let st = lock(&self.state);
                                if st.moves != moves {
                                    // The copy went to another slot.
                                    moved = true;
                                    break 'runs;
                                }
                                if st.by_id.get(&shadow_id) != Some(&epoch) {
                                    // Deleted meanwhile (evicted): its slots
                                    // may hold other copies now; that is no
                                    // corruption.
                                    return Err(CowError::NoSuchShadow(shadow_id));
                                }
                                let served = st.shadows_served_by(first + k as u64, tag);
                                drop(st);
                                self.mark_lost(&served, LostReason::PreservedDataCorrupt);
                                return Err(CowError::ShadowLost {
                                    shadow_id,
                                    reason: LostReason::PreservedDataCorrupt,
                                });
                            }
                        }
                        if !whole {
                            for (k, chunk) in r.clone().zip(copy_buf.chunks(cs as usize)) {
                                let c = first + k as u64;
                                let (plo, phi) = piece(c);
                                let from = (plo - c * cs) as usize;
                                buf[(plo - offset) as usize..(phi - offset) as usize]
                                    .copy_from_slice(&chunk[from..from + (phi - plo) as usize]);
                            }
                        }
                    }
                }
            }
            if sequential && !prefetched {
                self.read_ahead(epoch, last + 1, (last + 1 - first) * cs, false);
            }
            // Validate: the shadow still exists and no copy moved (so no
            // slot it reads was reused) and every chunk read live still is.
            let mut st = lock(&self.state);
            if st.by_id.get(&shadow_id) != Some(&epoch) {
                return Err(CowError::NoSuchShadow(shadow_id));
            }
            if moved || st.moves != moves {
                continue;
            }
            // No copy moved and the shadow is still there: the slots read
            // still hold the copies checked.
            for &slot in &newly_checked {
                st.set_copy_verified(slot);
            }
            let unchanged = (first..=last)
                .zip(&sources)
                .all(|(c, s)| *s != Source::Live || st.source(epoch, c) == Some(Source::Live));
            if unchanged {
                return Ok(());
            }
        }
    }

    /// Reads the copies in neighbouring slots from `first_slot` into `out`
    /// (one chunk each): from memory those the barrier has not written yet,
    /// the rest from the data file, in one read when all are there. With
    /// `before_wait`, a read from the file is tried from the page cache
    /// first, and `before_wait` runs before a read that has to wait. True
    /// if all came from the file.
    fn read_copies(
        &self,
        first_slot: u64,
        out: &mut [u8],
        before_wait: Option<&mut dyn FnMut()>,
    ) -> CowResult<bool> {
        let cs = self.cs() as usize;
        let count = (out.len() / cs) as u64;
        let held: Vec<Option<HeldCopy>> = {
            let unwritten = read_lock(&self.unwritten);
            if unwritten.is_empty() {
                Vec::new()
            } else {
                (first_slot..first_slot + count)
                    .map(|slot| unwritten.get(&slot).cloned())
                    .collect()
            }
        };
        let data = self.storage.data();
        let err = |e| CowError::io("cannot read a preserved chunk", e);
        if held.iter().all(Option::is_none) {
            let at = first_slot * cs as u64;
            if let Some(before_wait) = before_wait {
                if data.read_cached(out, at).map_err(err)? {
                    return Ok(true);
                }
                before_wait();
            }
            data.read_at(out, at).map_err(err)?;
            return Ok(true);
        }
        for ((slot, copy), part) in (first_slot..).zip(&held).zip(out.chunks_mut(cs)) {
            match copy {
                Some(copy) => part.copy_from_slice(copy.bytes(cs)),
                None => data.read_at(part, slot * cs as u64).map_err(err)?,
            }
        }
        Ok(false)
    }

    /// Starts reading the copies among `sources` into the page cache, one
    /// request per run of neighbouring slots, without waiting for them.
    fn prefetch_copies(&self, sources: &[Source]) {
        let slots: Vec<u64> = sources
            .iter()
            .filter_map(|s| match s {
                Source::Copy { at, .. } => Some(at.slot),
                _ => None,
            })
            .collect();
        let data = self.storage.data();
        for r in runs(&slots, |a, b| *b == a + 1) {
            if r.len() as u64 * self.cs() >= PREFETCH_LONG_RUN_BYTES {
                continue;
            }
            data.prefetch(slots[r.start] * self.cs(), r.len() as u64 * self.cs());
        }
    }

    /// Notes a shadow read of `offset..end`; true if it continues the last
    /// one (a sequential reader), which keeps read-ahead going.
    fn read_ahead_starts(&self, offset: u64, end: u64) -> bool {
        let mut ra = lock(&self.read_ahead);
        let sequential = ra.next == offset;
        if !sequential {
            ra.active = false;
            ra.until = 0;
        }
        ra.next = end;
        sequential
    }

    /// Prefetches the copies of shadow `epoch` in a window from chunk
    /// `from` (where a sequential read of `request_bytes` ended), if an
    /// earlier read of this stretch waited for the disk (or `waited`), and
    /// as far as not done already.
    fn read_ahead(&self, epoch: u64, from: u64, request_bytes: u64, waited: bool) {
        let cs = self.cs();
        let window = (request_bytes * READ_AHEAD_REQUESTS)
            .clamp(READ_AHEAD_MIN_BYTES, READ_AHEAD_MAX_BYTES)
            .div_ceil(cs);
        let chunks = self.volume_size().div_ceil(cs);
        let range = {
            let mut ra = lock(&self.read_ahead);
            ra.active |= waited;
            let (lo, hi) = (ra.until.max(from), (from + window).min(chunks));
            // Only once a window's worth of it has been read.
            if !ra.active || hi <= lo || (ra.until > from && hi - lo < window / 2) {
                return;
            }
            ra.until = hi;
            lo..hi
        };
        let sources: Vec<Source> = {
            let st = lock(&self.state);
            st.sources(epoch, range.start, range.end - 1)
                .unwrap_or_default()
        };
        self.prefetch_copies(&sources);
    }

    /// Moves at most `max_chunks` preserved copies so that copies with one
    /// tag of neighbouring chunks lie in neighbouring slots: copies lie in
    /// the order they were made, so after random writes a shadow read in
    /// chunk order would be a scattered read of the data file. Meant for
    /// idle time, in small steps (it holds off copies meanwhile). Returns
    /// how many copies moved; 0 once every run is in order or there is no
    /// room for a step (the data file grows by a step at most beyond the
    /// slots it frees, within the maximum size). Crash-safe like a trim:
    /// the copies are durable in their new slots before the records naming
    /// them, and the old slots are free only after.
    pub fn reorder_copies(&self, max_chunks: usize) -> CowResult<u64> {
        let _cow = lock(&self.cow);
        self.barrier_locked()?;
        let cs = self.cs();
        // From where the last step ended to the last copy, then once from
        // the first; the state is let go between slices of the scan (live
        // writes need it).
        let mut wrapped = *lock(&self.reorder_from) == (0, 0);
        let plan = loop {
            let st = lock(&self.state);
            let mut from = lock(&self.reorder_from);
            match st.scattered_run(*from, max_chunks.max(2), REORDER_SCAN_COPIES) {
                ScatteredRun::Found(plan) => {
                    *from = plan.last().map_or((0, 0), |&(c, e, _)| (e, c + 1));
                    break plan;
                }
                ScatteredRun::GoOnFrom(next) => *from = next,
                ScatteredRun::End => {
                    *from = (0, 0);
                    if wrapped {
                        break Vec::new();
                    }
                    wrapped = true;
                }
            }
        };
        if plan.is_empty() {
            return Ok(0);
        }
        let n = plan.len() as u64;
        let journal_bytes = lock(&self.journal).reserved;
        let start = {
            let mut st = lock(&self.state);
            match st.take_free_run(n) {
                Some(start) => start,
                None => {
                    if self.grow_slots(&mut st, n, journal_bytes)?.is_err() {
                        return Ok(0);
                    }
                    let Some(start) = st.take_free_run(n) else {
                        return Ok(0);
                    };
                    start
                }
            }
        };
        let give_back = |e: CowError| {
            self.release_slots(&(start..start + n).collect::<Vec<_>>());
            e
        };
        let mut buf = self.take_batch(n as usize * cs as usize);
        let bytes = &mut buf.as_mut_slice()[..n as usize * cs as usize];
        let data = self.storage.data();
        for r in runs(&plan, |a, b| b.2.slot == a.2.slot + 1) {
            data.read_at(
                &mut bytes[r.start * cs as usize..r.end * cs as usize],
                plan[r.start].2.slot * cs,
            )
            .map_err(|e| give_back(CowError::io("cannot read a preserved chunk", e)))?;
        }
        for (k, &(chunk, epoch, at)) in plan.iter().enumerate() {
            if crc32c::crc32c(&bytes[k * cs as usize..(k + 1) * cs as usize]) != at.crc {
                let served = lock(&self.state).shadows_served_by(chunk, epoch);
                self.mark_lost(&served, LostReason::PreservedDataCorrupt);
                return Err(give_back(CowError::io(
                    "a preserved chunk fails its checksum (the shadows it serves are lost)",
                    std::io::ErrorKind::InvalidData.into(),
                )));
            }
        }
        data.write_at_direct(bytes, start * cs)
            .and_then(|()| data.sync())
            .map_err(|e| give_back(CowError::io("cannot move preserved chunks", e)))?;
        self.recycle_batch(Arc::new(buf));
        let records: Vec<Record> = plan
            .iter()
            .zip(start..)
            .map(|(&(chunk, epoch, at), slot)| Record::Preserved {
                chunk,
                epoch,
                slot,
                data_crc: at.crc,
            })
            .collect();
        // A failed append leaves the new slots taken until the next open:
        // some of the records may be durable.
        self.append(&records)?;
        let mut st = lock(&self.state);
        for (&(chunk, epoch, at), slot) in plan.iter().zip(start..) {
            st.insert_record(chunk, epoch, Preserved { slot, crc: at.crc });
            st.free_slots.insert(at.slot);
        }
        st.moves += 1;
        Ok(n)
    }

    /// Writes the content of a shadow back onto the live volume, through
    /// the copy-on-write path (so every other shadow, older or newer, stays
    /// exact). Chunks that were free space at the shadow's cut are left as
    /// they are: the shadow's filesystem does not use them. The caller
    /// keeps the live filesystem unmounted. `total` is set before the first
    /// write; `done` counts chunks written (for `vssadmin query reverts`).
    pub fn revert_to(&self, shadow_id: u128, total: &AtomicU64, done: &AtomicU64) -> CowResult<()> {
        let chunks: Vec<u64> = {
            let st = lock(&self.state);
            let epoch = readable_epoch(&st, shadow_id)?;
            let mut cs: Vec<u64> = st
                .records()
                .filter(|&(c, e, _)| e >= epoch && st.source(epoch, c) != Some(Source::Zeros))
                .map(|(c, _, _)| c)
                .collect();
            cs.dedup();
            cs
        };
        total.store(chunks.len() as u64, Ordering::Relaxed);
        let mut buf = Vec::new();
        for c in chunks {
            let len = self.chunk_len(c);
            buf.resize(len, 0);
            self.read_shadow(shadow_id, &mut buf, c * self.cs())?;
            self.write_live(&buf, c * self.cs())?;
            done.fetch_add(1, Ordering::Relaxed);
        }
        self.flush_live()
    }

    // ---- space -------------------------------------------------------

    pub fn usage(&self) -> Usage {
        let journal = lock(&self.journal).reserved;
        let st = lock(&self.state);
        // Space prepared ahead of allocation is taken on disk too.
        let data_len = self.storage.data().len().unwrap_or(0);
        Usage {
            used_bytes: st.used_slots() * self.cs() + journal,
            allocated_bytes: (st.allocated_slots * self.cs()).max(data_len) + journal,
            max_bytes: st.max_bytes,
            shadow_count: st.shadows.len() as u32,
        }
    }

    /// Changes the maximum size; a lower maximum deletes the oldest shadows
    /// until the space in use fits and gives back unused space at the end
    /// of the data file.
    pub fn set_max_bytes(&self, max_bytes: Option<u64>) -> CowResult<()> {
        {
            let _cow = lock(&self.cow);
            self.append(&[Record::SetMaxSize { max_bytes }])?;
            lock(&self.state).max_bytes = max_bytes;
            {
                let _grow = lock(&self.grow);
                self.max_changes.fetch_add(1, Ordering::SeqCst);
            }
            if let Some(max) = max_bytes {
                while self.usage().used_bytes > max && lock(&self.state).oldest_epoch().is_some() {
                    self.evict_oldest(DeleteReason::Resized)?;
                }
                self.trim_data_file()?;
                self.trim_journal_reserve()?;
            }
        }
        self.compact_if_worthwhile()
    }

    /// Shrinks the data file to fit the maximum size: copies at the end
    /// move into free slots lower down (each move durable before the old
    /// slot is given up), then the end is cut off. Caller holds `cow`.
    fn trim_data_file(&self) -> CowResult<()> {
        // Copies move and the file shrinks below: every copy must be in it.
        self.barrier_locked()?;
        let cs = self.cs();
        let target = {
            let journal = lock(&self.journal).end;
            let st = lock(&self.state);
            let fit = st
                .max_bytes
                .map_or(u64::MAX, |m| m.saturating_sub(journal) / cs)
                .max(st.used_slots());
            fit.min(st.allocated_slots)
        };
        let moves: Vec<(u64, u64, Preserved)> = lock(&self.state)
            .records()
            .filter(|&(_, _, p)| p.slot >= target)
            .collect();
        let data = self.storage.data();
        let mut buf = vec![0u8; cs as usize];
        for (chunk, epoch, old) in moves {
            let Some(new_slot) = lock(&self.state).free_slots.range(..target).next().copied()
            else {
                break;
            };
            data.read_at(&mut buf, old.slot * cs)
                .and_then(|()| data.write_at(&buf, new_slot * cs))
                .and_then(|()| data.sync())
                .map_err(|e| CowError::io("cannot move a preserved chunk", e))?;
            self.append(&[Record::Preserved {
                chunk,
                epoch,
                slot: new_slot,
                data_crc: old.crc,
            }])?;
            let mut st = lock(&self.state);
            st.take_free_slot(new_slot);
            st.insert_record(
                chunk,
                epoch,
                Preserved {
                    slot: new_slot,
                    crc: old.crc,
                },
            );
            st.free_slots.insert(old.slot);
            st.moves += 1;
        }
        let mut st = lock(&self.state);
        let mut end = st.allocated_slots;
        while end > 0 && st.free_slots.contains(&(end - 1)) {
            end -= 1;
        }
        // Space prepared past the allocated slots goes too.
        let _grow = lock(&self.grow);
        let len = data
            .len()
            .map_err(|e| CowError::io("cannot read the data file's size", e))?;
        if end == st.allocated_slots && len <= end * cs {
            return Ok(());
        }
        data.truncate(end * cs)
            .map_err(|e| CowError::io("cannot shrink the data file", e))?;
        self.allocated_end.fetch_min(end * cs, Ordering::SeqCst);
        let gone: Vec<u64> = st.free_slots.range(end..).copied().collect();
        for s in gone {
            st.free_slots.remove(&s);
        }
        st.allocated_slots = end;
        Ok(())
    }

    /// Gives back journal space reserved ahead. Caller holds `cow`.
    fn trim_journal_reserve(&self) -> CowResult<()> {
        let mut jt = lock(&self.journal);
        if jt.reserved > jt.end {
            self.storage
                .journal()
                .truncate(jt.end)
                .map_err(|e| CowError::io("cannot shrink the journal", e))?;
            jt.reserved = jt.end;
        }
        Ok(())
    }

    // ---- recovery and compaction -------------------------------------

    /// Checks every preserved copy against its crc; bad ones make the
    /// shadows they serve lost.
    fn check_all_copies(&self, lost: &mut Vec<(u128, LostReason)>) -> CowResult<u64> {
        let records: Vec<(u64, u64, Preserved)> = lock(&self.state).records().collect();
        let cs = self.cs();
        let data = self.storage.data();
        let mut buf = vec![0u8; cs as usize];
        let mut bad_epochs = Vec::new();
        let mut live = vec![0u8; cs as usize];
        for &(c, e, p) in &records {
            let ok = data.read_at(&mut buf, p.slot * cs).is_ok() && crc32c::crc32c(&buf) == p.crc;
            if ok {
                continue;
            }
            // A copy whose record reached the disk but whose data did not
            // (a crash during the sync of both): the live write it guarded
            // was never issued, so the live chunk still holds the data.
            live.fill(0);
            let len = self.chunk_len(c);
            let repaired = self.origin.read_at(&mut live[..len], c * cs).is_ok()
                && crc32c::crc32c(&live) == p.crc
                && data
                    .write_at(&live, p.slot * cs)
                    .and_then(|()| data.sync())
                    .is_ok();
            if repaired {
                tracing::warn!(
                    chunk = c,
                    slot = p.slot,
                    "preserved chunk repaired from the live volume"
                );
            } else {
                bad_epochs.extend(lock(&self.state).shadows_served_by(c, e));
            }
        }
        bad_epochs.sort_unstable();
        bad_epochs.dedup();
        let ids: Vec<u128> = {
            let st = lock(&self.state);
            bad_epochs
                .iter()
                .filter_map(|e| st.shadows.get(e))
                .filter(|s| s.lost.is_none())
                .map(|s| s.shadow_id)
                .collect()
        };
        self.mark_lost(&bad_epochs, LostReason::PreservedDataCorrupt);
        lost.extend(
            ids.into_iter()
                .map(|id| (id, LostReason::PreservedDataCorrupt)),
        );
        Ok(records.len() as u64)
    }

    /// Rewrites the journal as the minimal set of records for the current
    /// state once the old one has grown well past that.
    fn compact_if_worthwhile(&self) -> CowResult<()> {
        let _cow = lock(&self.cow);
        let mut jt = lock(&self.journal);
        let st = lock(&self.state);
        let estimate = 64
            + st.shadows
                .values()
                .map(|s| 64 + 16 * s.free.ranges().len() as u64)
                .sum::<u64>()
            + st.record_count() * 45;
        if jt.end < self.tuning.compact_after_bytes || jt.end < 4 * estimate {
            return Ok(());
        }
        self.rewrite_journal_locked(&mut jt, &st)
    }

    /// Replaces the journal with the minimal set of records for `st`,
    /// durably and atomically.
    fn rewrite_journal_locked(&self, jt: &mut JournalTail, st: &State) -> CowResult<()> {
        let mut records = vec![
            Record::EpochFloor {
                next_epoch: st.next_epoch,
            },
            Record::SetMaxSize {
                max_bytes: st.max_bytes,
            },
        ];
        for s in st.shadows.values() {
            records.push(Record::ShadowCreated {
                epoch: s.epoch,
                shadow_id: s.shadow_id,
                created_unix_ns: s.created_unix_ns,
                free: s.free.ranges().to_vec(),
            });
            if let Some(reason) = s.lost {
                records.push(Record::ShadowLost {
                    epoch: s.epoch,
                    reason,
                });
            }
        }
        for (chunk, epoch, p) in st.records() {
            records.push(Record::Preserved {
                chunk,
                epoch,
                slot: p.slot,
                data_crc: p.crc,
            });
        }
        let mut frames = Vec::new();
        for (i, r) in records.iter().enumerate() {
            r.encode_frame(i as u64, &mut frames);
        }
        self.storage
            .replace_journal(&frames)
            .map_err(|e| CowError::io("cannot compact the journal", e))?;
        jt.next_seq = records.len() as u64;
        jt.end = frames.len() as u64;
        jt.reserved = jt.end;
        jt.damaged = false;
        Ok(())
    }
}

impl Drop for CowVolume {
    /// Live writes still held for a barrier reach the device.
    fn drop(&mut self) {
        let _cow = lock(&self.cow);
        if let Err(e) = self.barrier_locked() {
            tracing::error!(error = %e, "cannot write back held live data on close");
        }
    }
}

enum CopyError {
    /// The filesystem holding the shadow storage is full.
    Full,
    Failed(CowError),
}

impl CopyError {
    fn from_io(context: &str, e: std::io::Error) -> Self {
        if is_enospc(&e) {
            CopyError::Full
        } else {
            CopyError::Failed(CowError::io(context, e))
        }
    }
}

/// The epoch of a shadow that exists and is not lost.
fn readable_epoch(st: &State, shadow_id: u128) -> CowResult<u64> {
    let epoch = *st
        .by_id
        .get(&shadow_id)
        .ok_or(CowError::NoSuchShadow(shadow_id))?;
    match st.shadows[&epoch].lost {
        Some(reason) => Err(CowError::ShadowLost { shadow_id, reason }),
        None => Ok(epoch),
    }
}

/// The lost-shadow marker's epoch, if one is set (storage made before the
/// marker existed has no block for it: none).
fn read_lost_marker(f: &dyn Backing) -> Option<u64> {
    let mut b = vec![0u8; SUPERBLOCK_SIZE];
    f.read_at(&mut b, LOST_MARKER_OFFSET).ok()?;
    decode_lost_marker(&b)
}

fn read_superblock(f: &dyn Backing) -> CowResult<Superblock> {
    let mut b = vec![0u8; 2 * SUPERBLOCK_SIZE];
    f.read_at(&mut b, 0)
        .map_err(|e| CowError::io("cannot read the superblock", e))?;
    match Superblock::decode(&b[..SUPERBLOCK_SIZE]) {
        Ok(sb) => Ok(sb),
        Err(first) => Superblock::decode(&b[SUPERBLOCK_SIZE..]).map_err(|_| first.into()),
    }
}

/// Applies one replayed record to the state.
fn apply(st: &mut State, record: Record) -> CowResult<()> {
    match record {
        Record::EpochFloor { next_epoch } => st.next_epoch = st.next_epoch.max(next_epoch),
        Record::SetMaxSize { max_bytes } => st.max_bytes = max_bytes,
        Record::ShadowCreated {
            epoch,
            shadow_id,
            created_unix_ns,
            free,
        } => st.add_shadow(Shadow {
            shadow_id,
            epoch,
            created_unix_ns,
            free: ChunkRanges::from_ranges(free),
            lost: None,
        }),
        Record::ShadowDeleted { epoch, .. } => {
            st.remove_shadow(epoch);
        }
        Record::ShadowLost { epoch, reason } => {
            if let Some(s) = st.shadows.get_mut(&epoch) {
                s.lost = Some(reason);
            }
        }
        Record::Preserved {
            chunk,
            epoch,
            slot,
            data_crc,
        } => {
            if chunk >= st.chunk_count {
                return Err(CowError::Format(crate::error::FormatError::Invalid(
                    format!("preserved chunk {chunk} is outside the volume"),
                )));
            }
            st.insert_record(
                chunk,
                epoch,
                Preserved {
                    slot,
                    crc: data_crc,
                },
            );
        }
    }
    Ok(())
}
