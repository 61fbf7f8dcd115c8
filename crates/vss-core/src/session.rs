//! Requestor sessions: the IVssBackupComponents analogue held by the service,
//! initialized for a backup (`StartSession`) or for a restore
//! (`StartRestoreSession`, from the Backup Components Document the backup
//! saved).

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vss_provider::Provider;
use vss_types::{Guid, ShadowProp, SnapshotContext, Volume};

use crate::writers::WriterInstance;

/// Options a requestor gives at `StartSession`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionOptions {
    pub context: SnapshotContext,
    /// `full`, `copy`, `incremental`, `differential`, `log`.
    pub backup_type: String,
    /// Whether the requestor selects components (else every writer takes part).
    pub select_components: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            context: SnapshotContext::Backup,
            backup_type: "full".into(),
            select_components: false,
        }
    }
}

/// Options a requestor gives at `StartRestoreSession`. None yet: the
/// document carries what the restore needs. Unknown keys are refused, so
/// an option of a newer client is never silently ignored.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestoreOptions {}

/// What a session was initialized for (InitializeForBackup or
/// InitializeForRestore); each refuses the other's steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionKind {
    Backup,
    Restore,
}

/// Where a session is in the VSS sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Initialized,
    MetadataGathered,
    PreparedForBackup,
    SetStarted,
    SnapshotsDone,
    BackupCompleted,
    Aborted,
    Ended,
    /// PreRestore was sent (whether or not every writer succeeded).
    PreRestored,
    /// PostRestore was sent.
    PostRestored,
}

/// A volume added to the set.
pub struct SetMember {
    pub volume: Volume,
    pub provider: Arc<dyn Provider>,
    pub shadow_id: Guid,
}

pub struct Session {
    pub id: Guid,
    /// Bus name of the requestor's connection.
    pub owner: String,
    pub kind: SessionKind,
    /// Backup options; a restore session keeps the defaults (it makes no
    /// shadow copies, so its context never matters).
    pub options: SessionOptions,
    pub phase: Phase,
    /// Writers that answered Identify, with their metadata documents.
    pub metadata: Vec<(Arc<WriterInstance>, String)>,
    /// Writers taking part after PrepareForBackup, or the writers the last
    /// PreRestore or PostRestore was sent to.
    pub participants: Vec<Arc<WriterInstance>>,
    pub bcd: String,
    pub set_id: Option<Guid>,
    pub members: Vec<SetMember>,
    pub shadows: Vec<ShadowProp>,
    /// Shadow ids per volume mount point, to refuse adding a volume twice.
    pub by_mount: HashMap<String, Guid>,
}

impl Session {
    pub fn new(owner: String, options: SessionOptions) -> Self {
        Session {
            id: Guid::new_random(),
            owner,
            kind: SessionKind::Backup,
            options,
            phase: Phase::Initialized,
            metadata: Vec::new(),
            participants: Vec::new(),
            bcd: String::new(),
            set_id: None,
            members: Vec::new(),
            shadows: Vec::new(),
            by_mount: HashMap::new(),
        }
    }

    /// A restore session holding the backup's Backup Components Document.
    pub fn new_restore(owner: String, bcd: String) -> Self {
        Session {
            kind: SessionKind::Restore,
            bcd,
            ..Session::new(owner, SessionOptions::default())
        }
    }
}
