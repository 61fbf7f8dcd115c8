//! Requestor sessions: the IVssBackupComponents analogue held by the service.

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
    pub options: SessionOptions,
    pub phase: Phase,
    /// Writers that answered Identify, with their metadata documents.
    pub metadata: Vec<(Arc<WriterInstance>, String)>,
    /// Writers taking part after PrepareForBackup.
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
}
