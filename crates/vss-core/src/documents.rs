//! How the coordinator reads and edits the Backup Components Document.
//! An empty BCD means the requestor selected nothing (vssadmin create
//! shadow): every writer takes part and there is nothing to merge.

use std::sync::Arc;

use vss_types::documents::{
    BackupComponents, BackupType, SnapshotDescription, SnapshotSetDescription,
};
use vss_types::{Guid, ShadowProp, VssResult};

use crate::writers::WriterInstance;

/// The writers that take part after PrepareForBackup: every writer that
/// answered Identify, unless the requestor selects components, in which
/// case only writers with a component in the BCD (VSS: writers with no
/// component selected get no further events).
pub fn participants(
    bcd: &str,
    metadata: &[(Arc<WriterInstance>, String)],
    select_components: bool,
) -> VssResult<Vec<Arc<WriterInstance>>> {
    let all = metadata.iter().map(|(w, _)| w.clone());
    if bcd.trim().is_empty() {
        return Ok(all.collect());
    }
    let doc = BackupComponents::from_xml(bcd)?;
    if !(select_components || doc.select_components) {
        return Ok(all.collect());
    }
    Ok(all
        .filter(|w| {
            doc.writers.iter().any(|s| {
                s.writer_id == w.writer_id
                    && (s.instance_id == w.instance_id || s.instance_id.is_null())
                    && !s.components.is_empty()
            })
        })
        .collect())
}

/// Takes one writer's section from the copy of the BCD it returned; a
/// writer may change only its own components' metadata and messages.
pub fn merge_writer_section(
    current: &str,
    returned: &str,
    writer_id: Guid,
    instance_id: Guid,
) -> VssResult<String> {
    if returned.trim().is_empty() || current.trim().is_empty() || returned == current {
        return Ok(current.to_string());
    }
    let mut doc = BackupComponents::from_xml(current)?;
    let theirs = BackupComponents::from_xml(returned)?;
    doc.merge_writer_section(&theirs, writer_id, instance_id)?;
    Ok(doc.to_xml())
}

/// Records the snapshot set in the BCD (creating a minimal BCD when the
/// requestor gave none).
pub fn describe_set(
    bcd: &str,
    backup_type: &str,
    set_id: Guid,
    context: u32,
    props: &[ShadowProp],
) -> VssResult<String> {
    let mut doc = if bcd.trim().is_empty() {
        let bt = BackupType::from_word(backup_type).unwrap_or(BackupType::Full);
        BackupComponents::new(bt, false)
    } else {
        BackupComponents::from_xml(bcd)?
    };
    doc.snapshot_set = Some(SnapshotSetDescription {
        snapshot_set_id: set_id,
        context,
        snapshots: props
            .iter()
            .map(|p| SnapshotDescription {
                snapshot_id: p.shadow_id,
                original_volume_name: p.original_volume_name.clone(),
                device_object: p.device_object.clone(),
            })
            .collect(),
    });
    Ok(doc.to_xml())
}
