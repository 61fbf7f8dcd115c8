//! The copy-on-write engine of the software provider: block-level shadow
//! copies of a volume, whatever its filesystem, with their preserved chunks
//! in one shadow storage area per volume.
//!
//! - [`format`]: the on-disk format as bytes (superblock, journal records),
//!   versioned and checksummed with crc32c; no I/O.
//! - [`io`]: the files and devices the engine reads and writes, as traits,
//!   with file and in-memory implementations.
//! - [`engine`]: [`CowVolume`], the engine: live reads and writes, cuts,
//!   shadow reads, deletion, space accounting, eviction, revert.
//!
//! The engine knows nothing of FUSE, loop devices or VSS; a block front end
//! and the provider sit on top of it.

pub mod engine;
pub mod error;
pub mod extents;
pub mod format;
pub mod io;
mod state;

pub use engine::{CowVolume, CreateOptions, Event, EventSink, Recovery, ShadowInfo, Tuning, Usage};
pub use error::{CowError, CowResult, FormatError};
pub use format::{DeleteReason, LostReason, DEFAULT_CHUNK_SIZE};
pub use io::{Backing, DirStorage, FileBacking, MemBacking, MemStorage, StorageFiles};
