//! The coordinator of the shadow copy service: writer instances and their
//! states, requestor sessions, the VSS sequence with its timeouts, the
//! flush-and-hold step, the restore events (PreRestore, PostRestore),
//! catalog reconciliation at start, and the hand-off
//! of software volumes, shadow storage and reverts to the copy-on-write
//! provider ([`SoftwareVolumes`]). Transport-neutral: vssd adapts it to
//! D-Bus.

pub mod coordinator;
pub mod documents;
pub mod events;
pub mod expose;
pub mod hold;
pub mod restore;
pub mod session;
pub mod storage;
pub mod writers;

pub use coordinator::{Coordinator, CoreConfig, VolumeResolver};
pub use events::EventId;
pub use hold::{Armed, WriteHold};
pub use restore::{MissingWriter, RestoreOutcome};
pub use session::{Phase, RestoreOptions, SessionKind, SessionOptions};
pub use storage::{NoSoftwareVolumes, SoftwareVolumes};
pub use writers::{NewWriter, WriterEndpoint, WriterInstance};
