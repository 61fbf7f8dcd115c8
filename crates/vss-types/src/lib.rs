//! Domain types of the shadow copy service. No I/O happens here: this crate
//! is shared by the service, the writer SDK, the requestor library and the
//! command-line tools, and every one of them can trust it to be pure.

pub mod documents;
pub mod error;
pub mod guid;
pub mod provider;
pub mod snapshot;
pub mod storage;
pub mod writer;

pub use documents::{
    AlternateLocationMapping, BackupComponents, BackupSchema, BackupType, BcdComponent,
    ComponentDependency, ComponentFlags, ComponentType, ExcludeFiles, FileRestoreStatus,
    FileSpecBackupType, RestoreMethod, RestoreMethodInfo, RestoreSubcomponent, RestoreTarget,
    SnapshotDescription, SnapshotSetDescription, SourceType, UsageType, WmComponent, WmFileDesc,
    WriterComponents, WriterMetadata, WriterRestore,
};
pub use error::{VssCode, VssError, VssResult};
pub use guid::Guid;
pub use provider::{ProviderInfo, ProviderType, Volume, VolumeInfo};
pub use snapshot::{attr, limits, ShadowProp, ShadowState, SnapshotContext};
pub use storage::{
    min_shadow_storage, MaxSize, RevertState, RevertStatus, ShadowStorageInfo, SoftwareVolumeInfo,
};
pub use writer::{last_error_text, WriterKind, WriterState, WriterStatus};
