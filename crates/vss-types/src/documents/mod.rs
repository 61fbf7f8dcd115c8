//! The Writer Metadata Document (WMD) and the Backup Components Document
//! (BCD), with their XML form (schema in docs/DOCUMENTS.md).
//!
//! Reading is defensive: documents cross trust boundaries (a writer's WMD
//! reaches the service and requestors; a BCD comes back from writers), so
//! size, nesting and element count are bounded, DTDs and entities are
//! refused, and every failure is `VSS_E_INVALID_XML_DOCUMENT` (0x80042311)
//! saying what was wrong.

pub mod bcd;
pub mod enums;
pub mod wmd;
mod xml;

pub use bcd::{
    BackupComponents, BcdComponent, RestoreSubcomponent, SnapshotDescription,
    SnapshotSetDescription, WriterComponents, BCD_NAMESPACE,
};
pub use enums::{
    BackupSchema, BackupType, ComponentFlags, ComponentType, FileRestoreStatus, FileSpecBackupType,
    RestoreMethod, RestoreTarget, SourceType, UsageType, WriterRestore,
};
pub use wmd::{
    full_path, AlternateLocationMapping, ComponentDependency, ExcludeFiles, RestoreMethodInfo,
    WmComponent, WmFileDesc, WriterMetadata, WMD_NAMESPACE,
};
pub use xml::{
    FORMAT_MAJOR, FORMAT_MINOR, FORMAT_VERSION, MAX_ATTRIBUTES, MAX_DEPTH, MAX_DOCUMENT_BYTES,
    MAX_ELEMENTS,
};
