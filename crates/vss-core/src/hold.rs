//! Flush-and-hold: what the coordinator needs from the system to hold
//! writes, behind a trait so the sequence can be tested without root.
//!
//! The real implementation (in vssd) freezes with FIFREEZE and arms a
//! watchdog in a separate process that thaws the filesystems when the hold
//! limit passes or when vssd dies, so no filesystem stays frozen even if the
//! coordinator is stuck or killed.

use std::time::Duration;

use vss_types::{Guid, VssResult};

pub trait WriteHold: Send + Sync {
    /// Arms the watchdog for `mounts` before any of them is frozen.
    fn arm(&self, set_id: Guid, mounts: &[String], limit: Duration) -> VssResult<Box<dyn Armed>>;

    /// Flushes and freezes one filesystem (blocking).
    fn freeze(&self, mount: &str) -> std::io::Result<()>;

    /// Thaws one filesystem; `Ok(false)` if it was not frozen (blocking).
    fn thaw(&self, mount: &str) -> std::io::Result<bool>;
}

/// An armed watchdog. Dropping it without `disarm` leaves it armed, which
/// is the safe direction: it will thaw at the deadline.
pub trait Armed: Send {
    /// The hold is over and every filesystem was thawed by the service.
    fn disarm(self: Box<Self>);
}
