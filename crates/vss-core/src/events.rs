//! Journal events. Every state change and failure is one event with a stable
//! id (`EVENT_ID` in the journal), so admins can filter and alert on them:
//! `journalctl -u vssd EVENT_ID=3003`.

/// Stable event ids. Never renumber; add new ones at the end of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum EventId {
    ServiceStarted = 1000,
    ServiceStopping = 1001,
    ConfigLoaded = 1002,
    RecoveredAbortedSet = 1003,
    ThawedAtStart = 1004,
    ShadowLostAtStart = 1005,

    WriterRegistered = 2000,
    WriterGone = 2001,
    WriterStateChanged = 2002,
    WriterFailed = 2003,
    WriterTimedOut = 2004,
    WriterRejected = 2005,
    /// A restore event was not sent for a writer the document names.
    RestoreWriterMissing = 2006,

    SetStarted = 3000,
    SetCreated = 3001,
    SetFailed = 3002,
    SetAborted = 3003,
    HoldStarted = 3004,
    HoldReleased = 3005,
    HoldTimedOut = 3006,
    SessionEnded = 3007,
    RestoreStarted = 3008,
    RestoreEventDone = 3009,
    RestoreEventFailed = 3010,

    ShadowCreated = 4000,
    ShadowDeleted = 4001,
    ShadowLost = 4002,
    ShadowExposed = 4003,
    ShadowUnexposed = 4004,
    ShadowReleased = 4005,

    AccessDenied = 5000,

    SoftwareVolumeAdded = 6000,
    SoftwareVolumeDeleted = 6001,
    ShadowStorageAdded = 6002,
    ShadowStorageResized = 6003,
    ShadowStorageDeleted = 6004,
    RevertStarted = 6005,
    ShadowEvicted = 6006,
}

impl EventId {
    pub fn id(self) -> u32 {
        self as u32
    }
}

/// Logs an event at info level with its id.
#[macro_export]
macro_rules! event_info {
    ($id:expr, $($arg:tt)+) => {
        tracing::info!(event_id = $id.id(), $($arg)+)
    };
}

/// Logs an event at warn level with its id.
#[macro_export]
macro_rules! event_warn {
    ($id:expr, $($arg:tt)+) => {
        tracing::warn!(event_id = $id.id(), $($arg)+)
    };
}

/// Logs an event at error level with its id.
#[macro_export]
macro_rules! event_error {
    ($id:expr, $($arg:tt)+) => {
        tracing::error!(event_id = $id.id(), $($arg)+)
    };
}
