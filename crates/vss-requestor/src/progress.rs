//! Progress events of a backup, restore or exec: shown as a bar on a
//! terminal or written as JSON lines (`--json`) by the CLI.

use serde::Serialize;

/// One thing that happened. Serialized with an `event` tag, e.g.
/// `{"event":"file","path":"/srv/a.db","bytes":4096,...}`.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// A step of the VSS sequence started (`gather-writer-metadata`,
    /// `prepare-for-backup`, `do-snapshot-set`, `copy`, `backup-complete`,
    /// `pre-restore`, `restore`, `post-restore`, ...).
    Phase { phase: String },
    /// A component taken by the backup and why.
    Component {
        key: String,
        reason: String,
        in_bcd: bool,
    },
    /// A shadow copy of the set, and where it is read.
    Shadow {
        volume: String,
        shadow_id: String,
        read_at: String,
    },
    /// The file list, built from the shadows.
    Planned { entries: u64, bytes: u64 },
    /// An entry stored or restored.
    File {
        path: String,
        bytes: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        component: Option<String>,
        done_bytes: u64,
        total_bytes: u64,
    },
    /// An entry that could not be stored or restored.
    FileFailed {
        path: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        component: Option<String>,
        reason: String,
    },
    /// A special file (fifo, socket, device) or mount point left out.
    Skipped { path: String, reason: String },
    /// A component's outcome.
    ComponentResult {
        key: String,
        succeeded: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// A writer's state at the end (GatherWriterStatus).
    Writer {
        name: String,
        state: String,
        last_error: String,
    },
    /// A warning that does not fail anything.
    Warning { message: String },
    /// The end: overall outcome.
    Done { succeeded: bool, summary: String },
}

/// Receives events. The CLI renders them; tests collect them.
pub trait Progress: Send {
    fn event(&mut self, e: Event);
}

/// Drops every event.
pub struct Quiet;

impl Progress for Quiet {
    fn event(&mut self, _e: Event) {}
}

/// Collects events (for tests and callers that report at the end).
#[derive(Default)]
pub struct Collect(pub Vec<Event>);

impl Progress for Collect {
    fn event(&mut self, e: Event) {
        self.0.push(e);
    }
}
