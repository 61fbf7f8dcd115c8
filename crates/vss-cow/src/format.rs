//! The on-disk format of shadow storage, as bytes: no I/O here.
//!
//! A volume's shadow storage is a directory with three files:
//!
//! - `superblock`: two identical 4 KiB copies of [`Superblock`] (the second
//!   is read when the first fails its checksum). Written once, when the
//!   storage is created; everything that changes later is in the journal.
//! - `journal`: an append-only sequence of [`Record`]s, each framed by its
//!   length, a crc32c and a sequence number. Replaying it rebuilds the whole
//!   state; the first frame that is short, fails its crc or breaks the
//!   sequence ends it (a torn tail from a crash) and is cut off.
//! - `data`: chunk-sized slots holding preserved copies of live chunks,
//!   addressed by slot number (`offset = slot * chunk_size`).
//!
//! All integers are little-endian. `docs/COW-FORMAT.md` describes the same
//! layout for readers who do not read Rust.

use crate::error::FormatError;

/// First bytes of the superblock.
pub const SUPERBLOCK_MAGIC: [u8; 8] = *b"VSSCOW\0\x01";
/// Format version written by this code; readers refuse a newer major.
pub const FORMAT_VERSION: u32 = 1;
/// Size of one superblock copy; the file holds two.
pub const SUPERBLOCK_SIZE: usize = 4096;

/// Offset, in the superblock file, of the lost-shadow marker block: written
/// (zeros) at creation so that setting it later needs no new space.
pub const LOST_MARKER_OFFSET: u64 = 2 * SUPERBLOCK_SIZE as u64;
pub const LOST_MARKER_MAGIC: [u8; 8] = *b"VSSLOST\x01";

/// The lost-shadow marker: set when shadows had to be marked lost but the
/// journal could not record it. Every shadow with an epoch up to
/// `through_epoch` counts as lost at the next open (more than needed is
/// safe; fewer would not be). A zero block is no marker; a block with the
/// magic and a bad checksum (a torn write of the marker) means every shadow.
pub fn encode_lost_marker(through_epoch: u64) -> [u8; SUPERBLOCK_SIZE] {
    let mut b = [0u8; SUPERBLOCK_SIZE];
    b[..8].copy_from_slice(&LOST_MARKER_MAGIC);
    b[8..16].copy_from_slice(&through_epoch.to_le_bytes());
    let crc = crc32c::crc32c(&b[..SUPERBLOCK_SIZE - 4]);
    b[SUPERBLOCK_SIZE - 4..].copy_from_slice(&crc.to_le_bytes());
    b
}

/// `Some(through_epoch)` when `b` holds a marker (see [`encode_lost_marker`]).
pub fn decode_lost_marker(b: &[u8]) -> Option<u64> {
    if b.len() < SUPERBLOCK_SIZE || b[..8] != LOST_MARKER_MAGIC {
        return None;
    }
    let stored = u32::from_le_bytes(b[SUPERBLOCK_SIZE - 4..SUPERBLOCK_SIZE].try_into().ok()?);
    if crc32c::crc32c(&b[..SUPERBLOCK_SIZE - 4]) != stored {
        return Some(u64::MAX);
    }
    Some(u64::from_le_bytes(b[8..16].try_into().ok()?))
}

/// Chunk sizes the engine accepts: powers of two from 4 KiB to 1 MiB.
pub const MIN_CHUNK_SIZE: u32 = 4096;
pub const MAX_CHUNK_SIZE: u32 = 1 << 20;
/// The default, as the Windows system provider's copy-on-write unit.
pub const DEFAULT_CHUNK_SIZE: u32 = 16 * 1024;

/// Upper bound for one journal frame's payload; bigger lengths are torn or
/// hostile data, not records.
pub const MAX_RECORD_PAYLOAD: usize = 64 << 20;

/// Frame header: length (u32), crc32c (u32), sequence (u64), type (u8).
pub const FRAME_HEADER: usize = 4 + 4 + 8 + 1;

/// Static description of a volume's shadow storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superblock {
    pub version: u32,
    /// Random id of this shadow storage, repeated nowhere else; lets a
    /// caller check that `data` and `journal` belong to it.
    pub storage_id: u128,
    /// Identity of the live volume (the provider's volume id).
    pub volume_id: u128,
    pub volume_size: u64,
    pub chunk_size: u32,
    /// Seconds since the epoch at creation.
    pub created_unix: i64,
}

impl Superblock {
    pub fn encode(&self) -> [u8; SUPERBLOCK_SIZE] {
        let mut b = [0u8; SUPERBLOCK_SIZE];
        let mut w = Writer::new();
        w.bytes(&SUPERBLOCK_MAGIC);
        w.u32(self.version);
        w.u128(self.storage_id);
        w.u128(self.volume_id);
        w.u64(self.volume_size);
        w.u32(self.chunk_size);
        w.i64(self.created_unix);
        let body = w.finish();
        b[..body.len()].copy_from_slice(&body);
        let crc = crc32c::crc32c(&b[..SUPERBLOCK_SIZE - 4]);
        b[SUPERBLOCK_SIZE - 4..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, FormatError> {
        if b.len() < SUPERBLOCK_SIZE {
            return Err(FormatError::Truncated("superblock"));
        }
        let b = &b[..SUPERBLOCK_SIZE];
        if b[..8] != SUPERBLOCK_MAGIC {
            return Err(FormatError::BadMagic);
        }
        let stored = u32::from_le_bytes(b[SUPERBLOCK_SIZE - 4..].try_into().expect("4 bytes"));
        if crc32c::crc32c(&b[..SUPERBLOCK_SIZE - 4]) != stored {
            return Err(FormatError::BadChecksum("superblock"));
        }
        let mut r = Reader::new(&b[8..]);
        let sb = Superblock {
            version: r.u32()?,
            storage_id: r.u128()?,
            volume_id: r.u128()?,
            volume_size: r.u64()?,
            chunk_size: r.u32()?,
            created_unix: r.i64()?,
        };
        if sb.version > FORMAT_VERSION {
            return Err(FormatError::UnsupportedVersion(sb.version));
        }
        check_chunk_size(sb.chunk_size)?;
        if sb.volume_size == 0 {
            return Err(FormatError::Invalid("volume size 0".into()));
        }
        Ok(sb)
    }
}

pub fn check_chunk_size(cs: u32) -> Result<(), FormatError> {
    if cs.is_power_of_two() && (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&cs) {
        Ok(())
    } else {
        Err(FormatError::Invalid(format!(
            "chunk size {cs} is not a power of two between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE}"
        )))
    }
}

/// Why a shadow left shadow storage; kept in the journal and reported in
/// events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeleteReason {
    /// Deleted on request (`vssadmin delete shadows`, auto-release).
    Requested = 1,
    /// Evicted, oldest first, so a copy-on-write fits within the maximum
    /// size of the shadow storage.
    MaxSizeReached = 2,
    /// Evicted because the filesystem holding the shadow storage is full.
    StorageFull = 3,
    /// Evicted to make room under the configured shadow count limit.
    ShadowLimit = 4,
    /// Evicted because the maximum size was lowered below the space in use.
    Resized = 5,
}

impl DeleteReason {
    fn from_u8(v: u8) -> Result<Self, FormatError> {
        Ok(match v {
            1 => Self::Requested,
            2 => Self::MaxSizeReached,
            3 => Self::StorageFull,
            4 => Self::ShadowLimit,
            5 => Self::Resized,
            _ => return Err(FormatError::Invalid(format!("delete reason {v}"))),
        })
    }
}

/// Why a shadow was found unreadable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LostReason {
    /// A preserved chunk it needs failed its checksum.
    PreservedDataCorrupt = 1,
    /// The shadow storage could not be written while a copy it needed was
    /// being preserved; the live write went ahead (a live write never
    /// fails because of a shadow).
    PreserveFailed = 2,
}

impl LostReason {
    fn from_u8(v: u8) -> Result<Self, FormatError> {
        Ok(match v {
            1 => Self::PreservedDataCorrupt,
            2 => Self::PreserveFailed,
            _ => return Err(FormatError::Invalid(format!("lost reason {v}"))),
        })
    }
}

/// One journal entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// Epochs are never reused: a compacted journal starts with the next
    /// free one, since its shadow may be gone while its chunks remain.
    EpochFloor {
        next_epoch: u64,
    },
    /// Maximum bytes the shadow storage may occupy; `None`: unbounded.
    SetMaxSize {
        max_bytes: Option<u64>,
    },
    /// A shadow was cut. `free` lists chunk ranges `(first, count)` that
    /// were free space in the volume's filesystem at the cut: the shadow
    /// reads zeros there and they are never preserved for it.
    ShadowCreated {
        epoch: u64,
        shadow_id: u128,
        created_unix_ns: i64,
        free: Vec<(u64, u64)>,
    },
    ShadowDeleted {
        epoch: u64,
        reason: DeleteReason,
    },
    ShadowLost {
        epoch: u64,
        reason: LostReason,
    },
    /// The content chunk `chunk` had before its first write after the cut
    /// of shadow `epoch` is in slot `slot`, with crc32c `data_crc`.
    Preserved {
        chunk: u64,
        epoch: u64,
        slot: u64,
        data_crc: u32,
    },
}

const T_EPOCH_FLOOR: u8 = 1;
const T_SET_MAX: u8 = 2;
const T_SHADOW_CREATED: u8 = 3;
const T_SHADOW_DELETED: u8 = 4;
const T_SHADOW_LOST: u8 = 5;
const T_PRESERVED: u8 = 6;

impl Record {
    fn kind(&self) -> u8 {
        match self {
            Record::EpochFloor { .. } => T_EPOCH_FLOOR,
            Record::SetMaxSize { .. } => T_SET_MAX,
            Record::ShadowCreated { .. } => T_SHADOW_CREATED,
            Record::ShadowDeleted { .. } => T_SHADOW_DELETED,
            Record::ShadowLost { .. } => T_SHADOW_LOST,
            Record::Preserved { .. } => T_PRESERVED,
        }
    }

    fn payload(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Record::EpochFloor { next_epoch } => w.u64(*next_epoch),
            Record::SetMaxSize { max_bytes } => w.u64(max_bytes.unwrap_or(u64::MAX)),
            Record::ShadowCreated {
                epoch,
                shadow_id,
                created_unix_ns,
                free,
            } => {
                w.u64(*epoch);
                w.u128(*shadow_id);
                w.i64(*created_unix_ns);
                w.u64(free.len() as u64);
                for (first, count) in free {
                    w.u64(*first);
                    w.u64(*count);
                }
            }
            Record::ShadowDeleted { epoch, reason } => {
                w.u64(*epoch);
                w.bytes(&[*reason as u8]);
            }
            Record::ShadowLost { epoch, reason } => {
                w.u64(*epoch);
                w.bytes(&[*reason as u8]);
            }
            Record::Preserved {
                chunk,
                epoch,
                slot,
                data_crc,
            } => {
                w.u64(*chunk);
                w.u64(*epoch);
                w.u64(*slot);
                w.u32(*data_crc);
            }
        }
        w.finish()
    }

    fn from_payload(kind: u8, p: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(p);
        let rec = match kind {
            T_EPOCH_FLOOR => Record::EpochFloor {
                next_epoch: r.u64()?,
            },
            T_SET_MAX => {
                let v = r.u64()?;
                Record::SetMaxSize {
                    max_bytes: (v != u64::MAX).then_some(v),
                }
            }
            T_SHADOW_CREATED => {
                let epoch = r.u64()?;
                let shadow_id = r.u128()?;
                let created_unix_ns = r.i64()?;
                let n = r.u64()?;
                if n > (p.len() / 16) as u64 {
                    return Err(FormatError::Invalid(format!("{n} free ranges")));
                }
                let mut free = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    free.push((r.u64()?, r.u64()?));
                }
                Record::ShadowCreated {
                    epoch,
                    shadow_id,
                    created_unix_ns,
                    free,
                }
            }
            T_SHADOW_DELETED => Record::ShadowDeleted {
                epoch: r.u64()?,
                reason: DeleteReason::from_u8(r.u8()?)?,
            },
            T_SHADOW_LOST => Record::ShadowLost {
                epoch: r.u64()?,
                reason: LostReason::from_u8(r.u8()?)?,
            },
            T_PRESERVED => Record::Preserved {
                chunk: r.u64()?,
                epoch: r.u64()?,
                slot: r.u64()?,
                data_crc: r.u32()?,
            },
            other => return Err(FormatError::Invalid(format!("record type {other}"))),
        };
        if !r.is_empty() {
            return Err(FormatError::Invalid("trailing bytes in record".into()));
        }
        Ok(rec)
    }

    /// Appends the framed record with sequence number `seq` to `out`.
    pub fn encode_frame(&self, seq: u64, out: &mut Vec<u8>) {
        let payload = self.payload();
        let kind = self.kind();
        let len = payload.len() as u32;
        let mut covered = Vec::with_capacity(8 + 1 + payload.len());
        covered.extend_from_slice(&seq.to_le_bytes());
        covered.push(kind);
        covered.extend_from_slice(&payload);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&len.to_le_bytes()), &covered);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&covered);
    }
}

/// Result of reading one frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A good record and the frame's total length.
    Record {
        seq: u64,
        record: Record,
        len: usize,
    },
    /// The bytes end, or do not form a valid frame: the journal ends here.
    End,
}

/// Decodes the frame at the start of `b`. A frame that fails its checksum
/// or is cut short is the journal's end, not an error: that is what a crash
/// in the middle of an append leaves.
pub fn decode_frame(b: &[u8]) -> Frame {
    if b.len() < FRAME_HEADER {
        return Frame::End;
    }
    let len = u32::from_le_bytes(b[0..4].try_into().expect("4 bytes")) as usize;
    if len > MAX_RECORD_PAYLOAD || b.len() < FRAME_HEADER + len {
        return Frame::End;
    }
    let stored = u32::from_le_bytes(b[4..8].try_into().expect("4 bytes"));
    let covered = &b[8..FRAME_HEADER + len];
    let crc = crc32c::crc32c_append(crc32c::crc32c(&b[0..4]), covered);
    if crc != stored {
        return Frame::End;
    }
    let seq = u64::from_le_bytes(covered[0..8].try_into().expect("8 bytes"));
    match Record::from_payload(covered[8], &covered[9..]) {
        Ok(record) => Frame::Record {
            seq,
            record,
            len: FRAME_HEADER + len,
        },
        // A frame with a valid crc but a payload this version cannot read
        // is not a torn write; treat it as the end all the same, the caller
        // reports how much of the journal it could not read.
        Err(_) => Frame::End,
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn new() -> Self {
        Writer(Vec::with_capacity(64))
    }
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.bytes(&v.to_le_bytes());
    }
    fn u128(&mut self, v: u128) {
        self.bytes(&v.to_le_bytes());
    }
    fn finish(self) -> Vec<u8> {
        self.0
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn new(b: &'a [u8]) -> Self {
        Reader(b)
    }
    fn take<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        if self.0.len() < N {
            return Err(FormatError::Truncated("record"));
        }
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        Ok(head.try_into().expect("N bytes"))
    }
    fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.take()?))
    }
    fn i64(&mut self) -> Result<i64, FormatError> {
        Ok(i64::from_le_bytes(self.take()?))
    }
    fn u128(&mut self) -> Result<u128, FormatError> {
        Ok(u128::from_le_bytes(self.take()?))
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sb() -> Superblock {
        Superblock {
            version: FORMAT_VERSION,
            storage_id: 7,
            volume_id: 9,
            volume_size: 1 << 30,
            chunk_size: DEFAULT_CHUNK_SIZE,
            created_unix: 1_700_000_000,
        }
    }

    #[test]
    fn superblock_round_trips_and_detects_damage() {
        let b = sb().encode();
        assert_eq!(Superblock::decode(&b).unwrap(), sb());
        let mut bad = b;
        bad[40] ^= 1;
        assert_eq!(
            Superblock::decode(&bad),
            Err(FormatError::BadChecksum("superblock"))
        );
        let mut other = b;
        other[0] = b'X';
        assert_eq!(Superblock::decode(&other), Err(FormatError::BadMagic));
    }

    #[test]
    fn newer_versions_and_odd_chunk_sizes_are_refused() {
        let mut s = sb();
        s.version = FORMAT_VERSION + 1;
        assert!(matches!(
            Superblock::decode(&s.encode()),
            Err(FormatError::UnsupportedVersion(_))
        ));
        let mut s = sb();
        s.chunk_size = 3000;
        assert!(Superblock::decode(&s.encode()).is_err());
    }

    fn any_record() -> impl Strategy<Value = Record> {
        prop_oneof![
            any::<u64>().prop_map(|next_epoch| Record::EpochFloor { next_epoch }),
            proptest::option::of(0..u64::MAX)
                .prop_map(|max_bytes| Record::SetMaxSize { max_bytes }),
            (
                any::<u64>(),
                any::<u128>(),
                any::<i64>(),
                proptest::collection::vec((any::<u64>(), any::<u64>()), 0..8)
            )
                .prop_map(|(epoch, shadow_id, created_unix_ns, free)| {
                    Record::ShadowCreated {
                        epoch,
                        shadow_id,
                        created_unix_ns,
                        free,
                    }
                }),
            (any::<u64>(), 1u8..=5).prop_map(|(epoch, r)| Record::ShadowDeleted {
                epoch,
                reason: DeleteReason::from_u8(r).unwrap()
            }),
            (any::<u64>(), 1u8..=2).prop_map(|(epoch, r)| Record::ShadowLost {
                epoch,
                reason: LostReason::from_u8(r).unwrap()
            }),
            (any::<u64>(), any::<u64>(), any::<u64>(), any::<u32>()).prop_map(
                |(chunk, epoch, slot, data_crc)| Record::Preserved {
                    chunk,
                    epoch,
                    slot,
                    data_crc
                }
            ),
        ]
    }

    proptest! {
        #[test]
        fn frames_round_trip(records in proptest::collection::vec(any_record(), 1..20)) {
            let mut buf = Vec::new();
            for (i, r) in records.iter().enumerate() {
                r.encode_frame(i as u64, &mut buf);
            }
            let mut at = 0;
            for (i, r) in records.iter().enumerate() {
                match decode_frame(&buf[at..]) {
                    Frame::Record { seq, record, len } => {
                        prop_assert_eq!(seq, i as u64);
                        prop_assert_eq!(&record, r);
                        at += len;
                    }
                    Frame::End => prop_assert!(false, "frame {} did not decode", i),
                }
            }
            prop_assert_eq!(decode_frame(&buf[at..]), Frame::End);
        }

        #[test]
        fn a_cut_or_damaged_frame_ends_the_journal(r in any_record(), cut in 0usize..200, flip in 0usize..200) {
            let mut buf = Vec::new();
            r.encode_frame(1, &mut buf);
            if cut < buf.len() {
                prop_assert_eq!(decode_frame(&buf[..cut]), Frame::End);
            }
            let at = flip % buf.len();
            buf[at] ^= 0x40;
            // Any single-bit change fails the crc (or the length check).
            prop_assert_eq!(decode_frame(&buf), Frame::End);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_frame(&bytes);
            let _ = Superblock::decode(&bytes);
        }
    }
}
