//! The Backup Components Document (BCD): the requestor's record of a backup
//! or restore — its type, the components it selected per writer instance,
//! what the writers noted about them, and the snapshot set taken.
//!
//! Writers may change their own section (metadata, stamps, failure
//! messages, restore target) during PrepareForBackup, PostSnapshot,
//! PreRestore and PostRestore; [`BackupComponents::merge_writer_section`]
//! takes exactly those changes from the copy a writer returns.

use std::collections::{HashMap, HashSet};

use super::enums::{BackupType, ComponentType, FileRestoreStatus, RestoreTarget};
use super::wmd::{
    check_component_name, check_nonempty_name, decode_mapping, full_path, leaf, mapping_attrs,
    AlternateLocationMapping,
};
use super::xml::{self, check_name, check_text, invalid, Attrs, Cx, Node, XmlWriter};
use crate::error::{VssCode, VssError, VssResult};
use crate::guid::Guid;
use crate::snapshot::limits::MAX_VOLUMES_PER_SET;

/// The default namespace of the BCD root element.
pub const BCD_NAMESPACE: &str = "x-schema:#VssComponentMetadata";
const ROOT: &str = "BACKUP_COMPONENTS";

/// The Backup Components Document (`IVssBackupComponents` state).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct BackupComponents {
    pub backup_type: BackupType,
    /// Components are selected explicitly (component mode) rather than
    /// whole volumes being backed up.
    pub select_components: bool,
    pub bootable_system_state: bool,
    pub partial_file_support: bool,
    /// One section per writer instance taking part.
    pub writers: Vec<WriterComponents>,
    /// The snapshot set of the backup, once there is one.
    pub snapshot_set: Option<SnapshotSetDescription>,
}

/// One writer instance's section of the BCD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriterComponents {
    pub writer_id: Guid,
    pub instance_id: Guid,
    pub components: Vec<BcdComponent>,
}

/// A selected component and what requestor and writer noted about it
/// (`IVssComponent`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BcdComponent {
    pub component_type: ComponentType,
    pub logical_path: String,
    pub name: String,
    /// Set by the requestor after the backup (`SetBackupSucceeded`).
    pub backup_succeeded: Option<bool>,
    /// Set by the requestor with `backup_succeeded = false`: which file
    /// failed and why (no VSS counterpart; a requestor's note).
    pub backup_failure_message: Option<String>,
    /// Writer-set failure messages, one per event that can fail.
    pub prepare_for_backup_failure_message: Option<String>,
    pub post_snapshot_failure_message: Option<String>,
    pub pre_restore_failure_message: Option<String>,
    pub post_restore_failure_message: Option<String>,
    /// Writer-private data saved with the backup (`SetBackupMetadata`).
    pub backup_metadata: Option<String>,
    /// Writer-private data for the restore (`SetRestoreMetadata`).
    pub restore_metadata: Option<String>,
    /// Writer-set stamp of this backup, for later incremental backups.
    pub backup_stamp: Option<String>,
    /// Requestor-set stamp of the backup this one builds on.
    pub previous_backup_stamp: Option<String>,
    pub restore_target: RestoreTarget,
    pub selected_for_restore: bool,
    pub file_restore_status: FileRestoreStatus,
    /// Subcomponents restored on their own (`AddRestoreSubcomponent`).
    pub restore_subcomponents: Vec<RestoreSubcomponent>,
    /// Restore destinations (`AddAlternativeLocationMapping`).
    pub alternate_location_mappings: Vec<AlternateLocationMapping>,
}

/// A subcomponent selected for restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreSubcomponent {
    pub logical_path: String,
    pub name: String,
}

/// The snapshot set the backup was taken from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotSetDescription {
    pub snapshot_set_id: Guid,
    /// The `VSS_SNAPSHOT_CONTEXT` value (with any attribute bits).
    pub context: u32,
    pub snapshots: Vec<SnapshotDescription>,
}

/// One shadow copy of the set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotDescription {
    pub snapshot_id: Guid,
    /// `\\?\Volume{GUID}\` of the original volume.
    pub original_volume_name: String,
    /// Where the shadow can be read; empty before it is committed.
    pub device_object: String,
}

impl BcdComponent {
    /// A selected component with nothing noted about it yet.
    pub fn new(
        component_type: ComponentType,
        logical_path: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        BcdComponent {
            component_type,
            logical_path: logical_path.into(),
            name: name.into(),
            backup_succeeded: None,
            backup_failure_message: None,
            prepare_for_backup_failure_message: None,
            post_snapshot_failure_message: None,
            pre_restore_failure_message: None,
            post_restore_failure_message: None,
            backup_metadata: None,
            restore_metadata: None,
            backup_stamp: None,
            previous_backup_stamp: None,
            restore_target: RestoreTarget::Undefined,
            selected_for_restore: false,
            file_restore_status: FileRestoreStatus::Undefined,
            restore_subcomponents: Vec::new(),
            alternate_location_mappings: Vec::new(),
        }
    }

    /// `logical_path\name`, or `name` at the root.
    pub fn full_path(&self) -> String {
        full_path(&self.logical_path, &self.name)
    }

    fn texts(&self) -> [(&'static str, &Option<String>); 9] {
        [
            ("the backup failure message", &self.backup_failure_message),
            (
                "the prepare-for-backup failure message",
                &self.prepare_for_backup_failure_message,
            ),
            (
                "the post-snapshot failure message",
                &self.post_snapshot_failure_message,
            ),
            (
                "the pre-restore failure message",
                &self.pre_restore_failure_message,
            ),
            (
                "the post-restore failure message",
                &self.post_restore_failure_message,
            ),
            ("the backup metadata", &self.backup_metadata),
            ("the restore metadata", &self.restore_metadata),
            ("the backup stamp", &self.backup_stamp),
            ("the previous backup stamp", &self.previous_backup_stamp),
        ]
    }

    fn check(&self) -> Result<(), String> {
        check_component_name(&self.logical_path, &self.name)?;
        let full = self.full_path();
        for (what, t) in self.texts() {
            if let Some(t) = t {
                check_text(&format!("{what} of component '{full}'"), t)?;
            }
        }
        for s in &self.restore_subcomponents {
            check_component_name(&s.logical_path, &s.name)
                .map_err(|e| format!("a restore subcomponent of '{full}': {e}"))?;
        }
        for m in &self.alternate_location_mappings {
            let what = format!("an alternate location mapping of component '{full}'");
            check_nonempty_name(&format!("the path of {what}"), &m.path)?;
            check_nonempty_name(&format!("the filespec of {what}"), &m.filespec)?;
            check_nonempty_name(&format!("the alternate path of {what}"), &m.alternate_path)?;
        }
        Ok(())
    }

    /// Copies what a writer may set from `theirs`.
    fn take_writer_fields(&mut self, theirs: &BcdComponent) {
        self.prepare_for_backup_failure_message = theirs.prepare_for_backup_failure_message.clone();
        self.post_snapshot_failure_message = theirs.post_snapshot_failure_message.clone();
        self.pre_restore_failure_message = theirs.pre_restore_failure_message.clone();
        self.post_restore_failure_message = theirs.post_restore_failure_message.clone();
        self.backup_metadata = theirs.backup_metadata.clone();
        self.restore_metadata = theirs.restore_metadata.clone();
        self.backup_stamp = theirs.backup_stamp.clone();
        self.restore_target = theirs.restore_target;
    }
}

fn not_found(writer_id: Guid, instance_id: Guid, logical_path: &str, name: &str) -> VssError {
    VssError::new(
        VssCode::ObjectNotFound,
        format!(
            "component '{}' of writer {writer_id} (instance {instance_id}) is not in the backup components document",
            full_path(logical_path, name)
        ),
    )
    .with_hint("Add the component first (AddComponent) with the writer's logical path and name.")
}

impl BackupComponents {
    /// An empty document for a backup of `backup_type`.
    pub fn new(backup_type: BackupType, select_components: bool) -> Self {
        BackupComponents {
            backup_type,
            select_components,
            ..Default::default()
        }
    }

    pub fn writer_section(&self, writer_id: Guid, instance_id: Guid) -> Option<&WriterComponents> {
        self.writers
            .iter()
            .find(|w| w.writer_id == writer_id && w.instance_id == instance_id)
    }

    pub fn writer_section_mut(
        &mut self,
        writer_id: Guid,
        instance_id: Guid,
    ) -> Option<&mut WriterComponents> {
        self.writers
            .iter_mut()
            .find(|w| w.writer_id == writer_id && w.instance_id == instance_id)
    }

    /// `AddComponent`: selects a component of a writer instance, creating
    /// the instance's section if needed. `VSS_E_OBJECT_ALREADY_EXISTS` if it
    /// is already selected.
    pub fn add_component(
        &mut self,
        writer_id: Guid,
        instance_id: Guid,
        component_type: ComponentType,
        logical_path: &str,
        name: &str,
    ) -> VssResult<&mut BcdComponent> {
        check_component_name(logical_path, name).map_err(VssError::invalid_arg)?;
        if self
            .find_component(writer_id, instance_id, logical_path, name)
            .is_some()
        {
            return Err(VssError::new(
                VssCode::ObjectAlreadyExists,
                format!(
                    "component '{}' of writer {writer_id} is already selected",
                    full_path(logical_path, name)
                ),
            ));
        }
        let i = match self
            .writers
            .iter()
            .position(|w| w.writer_id == writer_id && w.instance_id == instance_id)
        {
            Some(i) => i,
            None => {
                self.writers.push(WriterComponents {
                    writer_id,
                    instance_id,
                    components: Vec::new(),
                });
                self.writers.len() - 1
            }
        };
        let list = &mut self.writers[i].components;
        list.push(BcdComponent::new(component_type, logical_path, name));
        Ok(list.last_mut().expect("just pushed"))
    }

    pub fn find_component(
        &self,
        writer_id: Guid,
        instance_id: Guid,
        logical_path: &str,
        name: &str,
    ) -> Option<&BcdComponent> {
        self.writer_section(writer_id, instance_id)?
            .components
            .iter()
            .find(|c| c.logical_path == logical_path && c.name == name)
    }

    pub fn find_component_mut(
        &mut self,
        writer_id: Guid,
        instance_id: Guid,
        logical_path: &str,
        name: &str,
    ) -> Option<&mut BcdComponent> {
        self.writer_section_mut(writer_id, instance_id)?
            .components
            .iter_mut()
            .find(|c| c.logical_path == logical_path && c.name == name)
    }

    /// `SetBackupSucceeded`.
    pub fn set_backup_succeeded(
        &mut self,
        writer_id: Guid,
        instance_id: Guid,
        logical_path: &str,
        name: &str,
        succeeded: bool,
    ) -> VssResult<()> {
        let c = self
            .find_component_mut(writer_id, instance_id, logical_path, name)
            .ok_or_else(|| not_found(writer_id, instance_id, logical_path, name))?;
        c.backup_succeeded = Some(succeeded);
        Ok(())
    }

    /// `IVssComponent::SetBackupMetadata`: the writer's private note about
    /// this backup of the component.
    pub fn set_backup_metadata(
        &mut self,
        writer_id: Guid,
        instance_id: Guid,
        logical_path: &str,
        name: &str,
        metadata: &str,
    ) -> VssResult<()> {
        check_text("the backup metadata", metadata).map_err(VssError::invalid_arg)?;
        let c = self
            .find_component_mut(writer_id, instance_id, logical_path, name)
            .ok_or_else(|| not_found(writer_id, instance_id, logical_path, name))?;
        c.backup_metadata = Some(metadata.to_owned());
        Ok(())
    }

    /// Takes a writer instance's changes from the copy of the document it
    /// returned. Only that instance's section is read, and in it only what a
    /// writer may set (failure messages, backup and restore metadata, backup
    /// stamp, restore target); everything else stays as the requestor left
    /// it. A writer cannot add components: a component in its copy that is
    /// not selected here, or a missing section, is
    /// `VSS_E_INVALID_XML_DOCUMENT`, and nothing is changed.
    pub fn merge_writer_section(
        &mut self,
        other: &BackupComponents,
        writer_id: Guid,
        instance_id: Guid,
    ) -> VssResult<()> {
        let hint = "The writer may only change its own components' metadata, stamps, \
                    failure messages and restore target.";
        let theirs = other.writer_section(writer_id, instance_id);
        let Some(ours) = self.writer_section_mut(writer_id, instance_id) else {
            return match theirs {
                Some(t) if !t.components.is_empty() => Err(invalid(format!(
                    "writer {writer_id} (instance {instance_id}) returned components, but none of its components were selected"
                ))
                .with_hint(hint)),
                _ => Ok(()),
            };
        };
        let Some(theirs) = theirs else {
            return Err(invalid(format!(
                "the document writer {writer_id} (instance {instance_id}) returned lacks its own section"
            ))
            .with_hint(hint));
        };
        let selected: HashSet<(&str, &str)> = ours
            .components
            .iter()
            .map(|c| (c.logical_path.as_str(), c.name.as_str()))
            .collect();
        let mut returned = HashMap::new();
        for t in &theirs.components {
            t.check()
                .map_err(|e| invalid(format!("writer {writer_id}: {e}")))?;
            let key = (t.logical_path.as_str(), t.name.as_str());
            returned.entry(key).or_insert(t);
            if !selected.contains(&key) {
                return Err(invalid(format!(
                    "writer {writer_id} (instance {instance_id}) returned component '{}', which was not selected",
                    t.full_path()
                ))
                .with_hint(hint));
            }
        }
        for c in &mut ours.components {
            if let Some(t) = returned.get(&(c.logical_path.as_str(), c.name.as_str())) {
                c.take_writer_fields(t);
            }
        }
        Ok(())
    }

    /// Checks everything `from_xml` checks beyond well-formedness. Errors
    /// are `VSS_E_INVALID_XML_DOCUMENT`.
    pub fn validate(&self) -> VssResult<()> {
        self.check().map_err(invalid)
    }

    fn check(&self) -> Result<(), String> {
        let mut sections = HashSet::new();
        for w in &self.writers {
            if !sections.insert((w.writer_id, w.instance_id)) {
                return Err(format!(
                    "writer {} (instance {}) has two sections",
                    w.writer_id, w.instance_id
                ));
            }
            let mut seen = HashSet::new();
            for c in &w.components {
                c.check()
                    .map_err(|e| format!("writer {}: {e}", w.writer_id))?;
                if !seen.insert((c.logical_path.as_str(), c.name.as_str())) {
                    return Err(format!(
                        "writer {} lists component '{}' twice",
                        w.writer_id,
                        c.full_path()
                    ));
                }
            }
        }
        if let Some(set) = &self.snapshot_set {
            if set.snapshots.len() > MAX_VOLUMES_PER_SET {
                return Err(format!(
                    "snapshot set {} has {} shadow copies; a set holds at most {MAX_VOLUMES_PER_SET}",
                    set.snapshot_set_id,
                    set.snapshots.len()
                ));
            }
            let mut ids = HashSet::new();
            for s in &set.snapshots {
                if !ids.insert(s.snapshot_id) {
                    return Err(format!("shadow copy {} is listed twice", s.snapshot_id));
                }
                let what = format!("shadow copy {}", s.snapshot_id);
                check_nonempty_name(
                    &format!("the original volume name of {what}"),
                    &s.original_volume_name,
                )?;
                check_name(&format!("the device object of {what}"), &s.device_object)?;
            }
        }
        Ok(())
    }

    /// Reads a BCD. Anything malformed, oversized, hostile or invalid is
    /// `VSS_E_INVALID_XML_DOCUMENT` saying what was wrong.
    pub fn from_xml(text: &str) -> VssResult<Self> {
        let (root, cx) = xml::parse(text, ROOT, BCD_NAMESPACE)?;
        let bcd = decode(&root, cx)?;
        bcd.validate()?;
        Ok(bcd)
    }

    /// Writes the document. Only a document that passes [`validate`] reads
    /// back equal.
    ///
    /// [`validate`]: BackupComponents::validate
    pub fn to_xml(&self) -> String {
        let mut w = XmlWriter::new();
        let attrs = Attrs::new()
            .s("xmlns", BCD_NAMESPACE)
            .s("version", xml::FORMAT_VERSION)
            .s("backupType", self.backup_type.word())
            .yes_no("selectComponents", self.select_components)
            .yes_no("bootableSystemState", self.bootable_system_state)
            .yes_no("partialFileSupport", self.partial_file_support);
        if self.writers.is_empty() && self.snapshot_set.is_none() {
            w.empty(ROOT, attrs);
            return w.finish();
        }
        w.open(ROOT, attrs);
        for section in &self.writers {
            let attrs = Attrs::new()
                .guid("writerId", section.writer_id)
                .guid("instanceId", section.instance_id);
            if section.components.is_empty() {
                w.empty("WRITER_COMPONENTS", attrs);
                continue;
            }
            w.open("WRITER_COMPONENTS", attrs);
            for c in &section.components {
                write_component(&mut w, c);
            }
            w.close("WRITER_COMPONENTS");
        }
        if let Some(set) = &self.snapshot_set {
            let attrs = Attrs::new()
                .guid("snapshotSetId", set.snapshot_set_id)
                .num("context", set.context);
            if set.snapshots.is_empty() {
                w.empty("SNAPSHOT_SET_DESCRIPTION", attrs);
            } else {
                w.open("SNAPSHOT_SET_DESCRIPTION", attrs);
                for s in &set.snapshots {
                    w.empty(
                        "SNAPSHOT_DESCRIPTION",
                        Attrs::new()
                            .guid("snapshotId", s.snapshot_id)
                            .s("originalVolumeName", &s.original_volume_name)
                            .s("deviceObject", &s.device_object),
                    );
                }
                w.close("SNAPSHOT_SET_DESCRIPTION");
            }
        }
        w.close(ROOT);
        w.finish()
    }
}

/// Text children of `<COMPONENT>`, in the order written; `text_fields`
/// and `write_component` list the fields in the same order.
const TEXT_ELEMENTS: [&str; 7] = [
    "BACKUP_FAILURE_MSG",
    "BACKUP_METADATA",
    "RESTORE_METADATA",
    "PREPARE_FOR_BACKUP_FAILURE_MSG",
    "POST_SNAPSHOT_FAILURE_MSG",
    "PRE_RESTORE_FAILURE_MSG",
    "POST_RESTORE_FAILURE_MSG",
];

fn text_fields(c: &mut BcdComponent) -> [&mut Option<String>; 7] {
    [
        &mut c.backup_failure_message,
        &mut c.backup_metadata,
        &mut c.restore_metadata,
        &mut c.prepare_for_backup_failure_message,
        &mut c.post_snapshot_failure_message,
        &mut c.pre_restore_failure_message,
        &mut c.post_restore_failure_message,
    ]
}

fn write_component(w: &mut XmlWriter, c: &BcdComponent) {
    let mut attrs = Attrs::new()
        .s("logicalPath", &c.logical_path)
        .s("componentName", &c.name)
        .s("componentType", c.component_type.word());
    if let Some(ok) = c.backup_succeeded {
        attrs = attrs.yes_no("backupSucceeded", ok);
    }
    attrs = attrs
        .opt("backupStamp", c.backup_stamp.as_deref())
        .opt("previousBackupStamp", c.previous_backup_stamp.as_deref());
    if c.selected_for_restore {
        attrs = attrs.yes_no("selectedForRestore", true);
    }
    if c.restore_target != RestoreTarget::Undefined {
        attrs = attrs.s("restoreTarget", c.restore_target.word());
    }
    if c.file_restore_status != FileRestoreStatus::Undefined {
        attrs = attrs.s("fileRestoreStatus", c.file_restore_status.word());
    }
    let values = [
        &c.backup_failure_message,
        &c.backup_metadata,
        &c.restore_metadata,
        &c.prepare_for_backup_failure_message,
        &c.post_snapshot_failure_message,
        &c.pre_restore_failure_message,
        &c.post_restore_failure_message,
    ];
    let texts: Vec<(&str, &String)> = TEXT_ELEMENTS
        .iter()
        .zip(values)
        .filter_map(|(n, t)| t.as_ref().map(|t| (*n, t)))
        .collect();
    if texts.is_empty()
        && c.restore_subcomponents.is_empty()
        && c.alternate_location_mappings.is_empty()
    {
        w.empty("COMPONENT", attrs);
        return;
    }
    w.open("COMPONENT", attrs);
    for (name, text) in &texts {
        w.text(name, text);
    }
    for s in &c.restore_subcomponents {
        w.empty(
            "RESTORE_SUBCOMPONENT",
            Attrs::new()
                .s("logicalPath", &s.logical_path)
                .s("componentName", &s.name),
        );
    }
    for m in &c.alternate_location_mappings {
        w.empty("ALTERNATE_LOCATION_MAPPING", mapping_attrs(m));
    }
    w.close("COMPONENT");
}

fn decode(root: &Node, cx: Cx) -> VssResult<BackupComponents> {
    root.expect(
        cx,
        &[
            "backupType",
            "selectComponents",
            "bootableSystemState",
            "partialFileSupport",
        ],
    )?;
    let mut bcd = BackupComponents {
        backup_type: root.enum_req("backupType")?,
        select_components: root.yes_no("selectComponents", false)?,
        bootable_system_state: root.yes_no("bootableSystemState", false)?,
        partial_file_support: root.yes_no("partialFileSupport", false)?,
        writers: Vec::new(),
        snapshot_set: None,
    };
    for n in &root.children {
        match n.name.as_str() {
            "WRITER_COMPONENTS" => {
                n.expect(cx, &["writerId", "instanceId"])?;
                let mut section = WriterComponents {
                    writer_id: n.guid("writerId")?,
                    instance_id: n.guid("instanceId")?,
                    components: Vec::new(),
                };
                for c in &n.children {
                    if c.name == "COMPONENT" {
                        section.components.push(decode_component(c, cx)?);
                    } else {
                        n.unknown_child(cx, c)?;
                    }
                }
                bcd.writers.push(section);
            }
            "SNAPSHOT_SET_DESCRIPTION" => {
                if bcd.snapshot_set.is_some() {
                    return Err(invalid("<SNAPSHOT_SET_DESCRIPTION> appears twice"));
                }
                n.expect(cx, &["snapshotSetId", "context"])?;
                let mut set = SnapshotSetDescription {
                    snapshot_set_id: n.guid("snapshotSetId")?,
                    context: n.u32_or("context", 0)?,
                    snapshots: Vec::new(),
                };
                for s in &n.children {
                    if s.name != "SNAPSHOT_DESCRIPTION" {
                        n.unknown_child(cx, s)?;
                        continue;
                    }
                    leaf(s, cx, &["snapshotId", "originalVolumeName", "deviceObject"])?;
                    set.snapshots.push(SnapshotDescription {
                        snapshot_id: s.guid("snapshotId")?,
                        original_volume_name: s.req("originalVolumeName")?,
                        device_object: s.opt("deviceObject").unwrap_or_default(),
                    });
                }
                bcd.snapshot_set = Some(set);
            }
            _ => root.unknown_child(cx, n)?,
        }
    }
    Ok(bcd)
}

fn decode_component(n: &Node, cx: Cx) -> VssResult<BcdComponent> {
    n.expect(
        cx,
        &[
            "logicalPath",
            "componentName",
            "componentType",
            "backupSucceeded",
            "backupStamp",
            "previousBackupStamp",
            "selectedForRestore",
            "restoreTarget",
            "fileRestoreStatus",
        ],
    )?;
    let mut c = BcdComponent::new(
        n.enum_req("componentType")?,
        n.opt("logicalPath").unwrap_or_default(),
        n.req("componentName")?,
    );
    c.backup_succeeded = n.opt_yes_no("backupSucceeded")?;
    c.backup_stamp = n.opt("backupStamp");
    c.previous_backup_stamp = n.opt("previousBackupStamp");
    c.selected_for_restore = n.yes_no("selectedForRestore", false)?;
    c.restore_target = n.enum_or("restoreTarget", RestoreTarget::Undefined)?;
    c.file_restore_status = n.enum_or("fileRestoreStatus", FileRestoreStatus::Undefined)?;
    for child in &n.children {
        if let Some(i) = TEXT_ELEMENTS.iter().position(|t| *t == child.name) {
            let text = child.text_only(cx)?;
            let slot = text_fields(&mut c).into_iter().nth(i).expect("same length");
            if slot.is_some() {
                return Err(invalid(format!(
                    "<{}> appears twice in component '{}'",
                    child.name,
                    full_path(
                        n.attr("logicalPath").unwrap_or_default(),
                        n.attr("componentName").unwrap_or_default()
                    )
                )));
            }
            *slot = Some(text);
            continue;
        }
        match child.name.as_str() {
            "RESTORE_SUBCOMPONENT" => {
                leaf(child, cx, &["logicalPath", "componentName"])?;
                c.restore_subcomponents.push(RestoreSubcomponent {
                    logical_path: child.opt("logicalPath").unwrap_or_default(),
                    name: child.req("componentName")?,
                });
            }
            "ALTERNATE_LOCATION_MAPPING" => {
                c.alternate_location_mappings
                    .push(decode_mapping(child, cx)?);
            }
            _ => n.unknown_child(cx, child)?,
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Guid = Guid::from_u128(0xAAAA);
    const I: Guid = Guid::from_u128(0xBBBB);

    fn sample() -> BackupComponents {
        let mut b = BackupComponents::new(BackupType::Full, true);
        b.add_component(W, I, ComponentType::Database, "Databases", "main")
            .unwrap();
        b.add_component(W, I, ComponentType::FileGroup, "", "config <&>")
            .unwrap();
        b.set_backup_metadata(W, I, "Databases", "main", "lsn=42\r\n<x/>")
            .unwrap();
        b.set_backup_succeeded(W, I, "", "config <&>", false)
            .unwrap();
        let c = b.find_component_mut(W, I, "", "config <&>").unwrap();
        c.post_snapshot_failure_message = Some("disk \"full\"".into());
        c.backup_stamp = Some("2024-01-01T00:00:00Z".into());
        c.restore_subcomponents.push(RestoreSubcomponent {
            logical_path: "config <&>".into(),
            name: "sub".into(),
        });
        b.snapshot_set = Some(SnapshotSetDescription {
            snapshot_set_id: Guid::from_u128(1),
            context: 0x1D,
            snapshots: vec![SnapshotDescription {
                snapshot_id: Guid::from_u128(2),
                original_volume_name: "\\\\?\\Volume{00000000-0000-0000-0000-000000000003}\\"
                    .into(),
                device_object: "/run/vss/shadows/2".into(),
            }],
        });
        b
    }

    #[test]
    fn round_trip() {
        let b = sample();
        let x = b.to_xml();
        assert!(x.starts_with(
            "<BACKUP_COMPONENTS xmlns=\"x-schema:#VssComponentMetadata\" version=\"1.0\" backupType=\"full\" selectComponents=\"yes\""
        ), "{x}");
        assert!(
            x.contains("<BACKUP_METADATA>lsn=42&#13;\n&lt;x/&gt;</BACKUP_METADATA>"),
            "{x}"
        );
        assert_eq!(BackupComponents::from_xml(&x).unwrap(), b);
        let empty = BackupComponents::new(BackupType::Copy, false);
        assert_eq!(BackupComponents::from_xml(&empty.to_xml()).unwrap(), empty);
    }

    #[test]
    fn helpers() {
        let mut b = sample();
        let e = b
            .add_component(W, I, ComponentType::Database, "Databases", "main")
            .unwrap_err();
        assert_eq!(e.code, VssCode::ObjectAlreadyExists);
        let e = b.set_backup_succeeded(W, I, "", "nope", true).unwrap_err();
        assert_eq!(e.code, VssCode::ObjectNotFound);
        let e = b
            .add_component(W, I, ComponentType::Database, "", "")
            .unwrap_err();
        assert_eq!(e.code, VssCode::InvalidArg);
        let e = b
            .set_backup_metadata(W, I, "Databases", "main", "\u{1}")
            .unwrap_err();
        assert_eq!(e.code, VssCode::InvalidArg);
    }

    #[test]
    fn merge_takes_only_writer_fields_of_own_section() {
        let mut ours = sample();
        ours.add_component(Guid::from_u128(7), I, ComponentType::FileGroup, "", "other")
            .unwrap();
        let mut theirs = ours.clone();
        theirs.backup_type = BackupType::Copy;
        let c = theirs
            .find_component_mut(W, I, "Databases", "main")
            .unwrap();
        c.backup_metadata = Some("new".into());
        c.backup_succeeded = Some(true); // requestor-only: ignored
        c.restore_target = RestoreTarget::Alternate;
        theirs
            .find_component_mut(Guid::from_u128(7), I, "", "other")
            .unwrap()
            .backup_metadata = Some("not mine".into()); // other writer: ignored
        ours.merge_writer_section(&theirs, W, I).unwrap();
        let c = ours.find_component(W, I, "Databases", "main").unwrap();
        assert_eq!(c.backup_metadata.as_deref(), Some("new"));
        assert_eq!(c.backup_succeeded, None);
        assert_eq!(c.restore_target, RestoreTarget::Alternate);
        assert_eq!(ours.backup_type, BackupType::Full);
        assert_eq!(
            ours.find_component(Guid::from_u128(7), I, "", "other")
                .unwrap()
                .backup_metadata,
            None
        );

        let before = ours.clone();
        theirs
            .add_component(W, I, ComponentType::FileGroup, "", "added")
            .unwrap();
        let e = ours.merge_writer_section(&theirs, W, I).unwrap_err();
        assert_eq!(e.code, VssCode::InvalidXmlDocument);
        assert_eq!(ours, before, "nothing changed on error");

        let e = ours
            .merge_writer_section(&BackupComponents::default(), W, I)
            .unwrap_err();
        assert!(e.message.contains("lacks its own section"));
        ours.merge_writer_section(&BackupComponents::default(), Guid::from_u128(99), I)
            .unwrap();
    }

    #[test]
    fn validation() {
        let mut b = sample();
        b.writers[0].components[1].name = "main".into();
        b.writers[0].components[1].logical_path = "Databases".into();
        let e = BackupComponents::from_xml(&b.to_xml()).unwrap_err();
        assert!(e.message.contains("twice"), "{}", e.message);

        let mut b = sample();
        b.writers.push(b.writers[0].clone());
        assert!(b.validate().is_err());

        let x = sample()
            .to_xml()
            .replace("componentType=\"database\"", "componentType=\"table\"");
        let e = BackupComponents::from_xml(&x).unwrap_err();
        assert!(e.message.contains("database|filegroup"), "{}", e.message);

        let x = sample()
            .to_xml()
            .replace("selectComponents=\"yes\"", "selectComponents=\"true\"");
        let e = BackupComponents::from_xml(&x).unwrap_err();
        assert!(e.message.contains("yes or no"), "{}", e.message);
    }
}
