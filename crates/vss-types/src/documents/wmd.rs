//! The Writer Metadata Document (WMD): what a writer tells requestors in
//! answer to Identify — who it is, how its data is restored, and the
//! components and files it protects. Read-only once Identify returns.

use std::collections::HashSet;

use super::enums::{
    BackupSchema, ComponentFlags, ComponentType, FileSpecBackupType, RestoreMethod, SourceType,
    UsageType, WriterRestore,
};
use super::xml::{self, check_name, check_text, invalid, Attrs, Cx, Node, XmlWriter};
use crate::error::{VssCode, VssError, VssResult};
use crate::guid::Guid;

/// The default namespace of the WMD root element.
pub const WMD_NAMESPACE: &str = "x-schema:#VssWriterMetadataInfo";
const ROOT: &str = "WRITER_METADATA";

/// A writer's metadata (`IVssCreateWriterMetadata` /
/// `IVssExamineWriterMetadata`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct WriterMetadata {
    /// The writer's friendly name, as `vssadmin list writers` shows it.
    pub writer_name: String,
    /// The writer class id, the same for every instance of the writer.
    pub writer_id: Guid,
    pub instance_id: Guid,
    pub usage: UsageType,
    pub source: SourceType,
    /// Every writer should set one; `None` until it does.
    pub restore_method: Option<RestoreMethodInfo>,
    pub backup_schema: BackupSchema,
    /// Files never to back up, whatever the components say.
    pub excluded_files: Vec<ExcludeFiles>,
    /// Where files go when restored to an alternate location.
    pub alternate_location_mappings: Vec<AlternateLocationMapping>,
    pub components: Vec<WmComponent>,
}

/// The writer's restore method (`SetRestoreMethod`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RestoreMethodInfo {
    pub method: RestoreMethod,
    /// The service to stop and start, for the stop/start methods.
    pub service: Option<String>,
    /// Instructions for a manual restore.
    pub user_procedure: Option<String>,
    pub writer_restore: WriterRestore,
    pub reboot_required: bool,
}

/// A file set excluded from the backup (`AddExcludeFiles`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExcludeFiles {
    pub path: String,
    pub filespec: String,
    pub recursive: bool,
}

/// A restore-time destination for a file set (`AddAlternateLocationMapping`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlternateLocationMapping {
    pub path: String,
    pub filespec: String,
    pub recursive: bool,
    pub alternate_path: String,
}

/// A file set of a component (`IVssWMFiledesc`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WmFileDesc {
    /// The directory holding the files.
    pub path: String,
    /// A file name or wildcard pattern (`*.db`).
    pub filespec: String,
    /// Also match in subdirectories. File groups only.
    pub recursive: bool,
    /// Where to back the files up from instead of `path` (a backup-time
    /// source, unlike an alternate location mapping). File groups only.
    pub alternate_location: Option<String>,
    pub backup_type_mask: FileSpecBackupType,
}

impl WmFileDesc {
    /// A non-recursive file set with the default backup type mask.
    pub fn new(path: impl Into<String>, filespec: impl Into<String>) -> Self {
        WmFileDesc {
            path: path.into(),
            filespec: filespec.into(),
            recursive: false,
            alternate_location: None,
            backup_type_mask: FileSpecBackupType::DEFAULT,
        }
    }

    pub fn recursive(mut self, recursive: bool) -> Self {
        self.recursive = recursive;
        self
    }

    pub fn alternate_location(mut self, location: impl Into<String>) -> Self {
        self.alternate_location = Some(location.into());
        self
    }

    pub fn backup_type_mask(mut self, mask: FileSpecBackupType) -> Self {
        self.backup_type_mask = mask;
        self
    }
}

/// A dependency of a component on another writer's component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentDependency {
    pub writer_id: Guid,
    pub logical_path: String,
    pub component_name: String,
}

/// A component of the WMD (`IVssWMComponent`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WmComponent {
    pub component_type: ComponentType,
    /// Backslash-separated; empty for a component at the root.
    pub logical_path: String,
    pub name: String,
    pub caption: String,
    pub restore_metadata: bool,
    pub notify_on_backup_complete: bool,
    pub selectable: bool,
    pub selectable_for_restore: bool,
    pub flags: ComponentFlags,
    /// File-group components: their file sets.
    pub files: Vec<WmFileDesc>,
    /// Database components: data files.
    pub database_files: Vec<WmFileDesc>,
    /// Database components: log files.
    pub database_logfiles: Vec<WmFileDesc>,
    pub dependencies: Vec<ComponentDependency>,
}

impl WmComponent {
    /// A component with no caption, no files, flags clear and every yes/no
    /// property `no`.
    pub fn new(
        component_type: ComponentType,
        logical_path: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        WmComponent {
            component_type,
            logical_path: logical_path.into(),
            name: name.into(),
            caption: String::new(),
            restore_metadata: false,
            notify_on_backup_complete: false,
            selectable: false,
            selectable_for_restore: false,
            flags: ComponentFlags::empty(),
            files: Vec::new(),
            database_files: Vec::new(),
            database_logfiles: Vec::new(),
            dependencies: Vec::new(),
        }
    }

    pub fn caption(mut self, caption: impl Into<String>) -> Self {
        self.caption = caption.into();
        self
    }

    pub fn selectable(mut self, selectable: bool) -> Self {
        self.selectable = selectable;
        self
    }

    pub fn selectable_for_restore(mut self, selectable: bool) -> Self {
        self.selectable_for_restore = selectable;
        self
    }

    pub fn restore_metadata(mut self, restore_metadata: bool) -> Self {
        self.restore_metadata = restore_metadata;
        self
    }

    pub fn notify_on_backup_complete(mut self, notify: bool) -> Self {
        self.notify_on_backup_complete = notify;
        self
    }

    pub fn flags(mut self, flags: ComponentFlags) -> Self {
        self.flags = flags;
        self
    }

    /// `logical_path\name`, or `name` at the root: the component's full path.
    pub fn full_path(&self) -> String {
        full_path(&self.logical_path, &self.name)
    }

    /// Checks names, paths and the rules of the component's type.
    pub fn validate(&self) -> Result<(), String> {
        check_component_name(&self.logical_path, &self.name)?;
        let full = self.full_path();
        check_name(&format!("the caption of component '{full}'"), &self.caption)?;
        match self.component_type {
            ComponentType::FileGroup => {
                if !self.database_files.is_empty() || !self.database_logfiles.is_empty() {
                    return Err(format!(
                        "file group '{full}' lists database files; only database components may"
                    ));
                }
            }
            ComponentType::Database => {
                if !self.files.is_empty() {
                    return Err(format!(
                        "database '{full}' has a file list; databases list data and log files"
                    ));
                }
                for f in self.database_files.iter().chain(&self.database_logfiles) {
                    if f.recursive {
                        return Err(format!(
                            "database '{full}': file set {}/{} is recursive; database file sets cannot be",
                            f.path, f.filespec
                        ));
                    }
                    if f.alternate_location.is_some() {
                        return Err(format!(
                            "database '{full}': file set {}/{} has an alternate path; database file sets cannot",
                            f.path, f.filespec
                        ));
                    }
                }
            }
        }
        for f in self
            .files
            .iter()
            .chain(&self.database_files)
            .chain(&self.database_logfiles)
        {
            check_file_desc(&format!("a file set of component '{full}'"), f)?;
        }
        for d in &self.dependencies {
            let what = format!("a dependency of component '{full}'");
            check_logical_path(&what, &d.logical_path)?;
            check_nonempty_name(&format!("the component name of {what}"), &d.component_name)?;
        }
        Ok(())
    }
}

/// `logical_path\name`, or `name` at the root.
pub fn full_path(logical_path: &str, name: &str) -> String {
    if logical_path.is_empty() {
        name.to_owned()
    } else {
        format!("{logical_path}\\{name}")
    }
}

pub(crate) fn check_nonempty_name(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("{what} is empty"));
    }
    check_name(what, s)
}

/// A logical path is empty (the root) or backslash-separated non-empty
/// segments.
pub(crate) fn check_logical_path(what: &str, path: &str) -> Result<(), String> {
    check_name(&format!("the logical path of {what}"), path)?;
    if !path.is_empty() && path.split('\\').any(str::is_empty) {
        return Err(format!(
            "the logical path '{path}' of {what} has an empty segment (leading, trailing or doubled backslash)"
        ));
    }
    Ok(())
}

/// A component name is non-empty and has no backslash, so that
/// `path\name` names exactly one component.
pub(crate) fn check_component_name(logical_path: &str, name: &str) -> Result<(), String> {
    let what = format!("component '{}'", full_path(logical_path, name));
    check_logical_path(&what, logical_path)?;
    if name.is_empty() {
        return Err(format!(
            "a component at logical path '{logical_path}' has an empty name"
        ));
    }
    check_name(&format!("the name of {what}"), name)?;
    if name.contains('\\') {
        return Err(format!(
            "the name of {what} contains a backslash; backslashes separate logical path segments"
        ));
    }
    Ok(())
}

fn check_file_desc(what: &str, f: &WmFileDesc) -> Result<(), String> {
    check_file_set(what, &f.path, &f.filespec)?;
    if let Some(alt) = &f.alternate_location {
        check_nonempty_name(&format!("the alternate path of {what}"), alt)?;
    }
    Ok(())
}

fn check_file_set(what: &str, path: &str, filespec: &str) -> Result<(), String> {
    check_nonempty_name(&format!("the path of {what}"), path)?;
    check_nonempty_name(&format!("the filespec of {what}"), filespec)
}

fn arg(msg: String) -> VssError {
    VssError::invalid_arg(msg)
}

impl WriterMetadata {
    /// A document with no restore method, schema or components yet.
    pub fn new(
        writer_name: impl Into<String>,
        writer_id: Guid,
        instance_id: Guid,
        usage: UsageType,
        source: SourceType,
    ) -> Self {
        WriterMetadata {
            writer_name: writer_name.into(),
            writer_id,
            instance_id,
            usage,
            source,
            ..Default::default()
        }
    }

    /// `SetRestoreMethod`.
    pub fn set_restore_method(
        &mut self,
        method: RestoreMethod,
        service: Option<String>,
        user_procedure: Option<String>,
        writer_restore: WriterRestore,
        reboot_required: bool,
    ) -> VssResult<()> {
        if let Some(s) = &service {
            check_name("the restore service", s).map_err(arg)?;
        }
        if let Some(s) = &user_procedure {
            check_text("the restore user procedure", s).map_err(arg)?;
        }
        self.restore_method = Some(RestoreMethodInfo {
            method,
            service,
            user_procedure,
            writer_restore,
            reboot_required,
        });
        Ok(())
    }

    /// `SetBackupSchema`.
    pub fn set_backup_schema(&mut self, schema: BackupSchema) {
        self.backup_schema = schema;
    }

    /// `AddComponent`: `VSS_E_OBJECT_ALREADY_EXISTS` if the writer already
    /// has a component with this logical path and name.
    pub fn add_component(&mut self, component: WmComponent) -> VssResult<&mut WmComponent> {
        component.validate().map_err(arg)?;
        if self
            .component(&component.logical_path, &component.name)
            .is_some()
        {
            return Err(VssError::new(
                VssCode::ObjectAlreadyExists,
                format!(
                    "writer '{}' already has a component '{}'",
                    self.writer_name,
                    component.full_path()
                ),
            ));
        }
        self.components.push(component);
        Ok(self.components.last_mut().expect("just pushed"))
    }

    pub fn component(&self, logical_path: &str, name: &str) -> Option<&WmComponent> {
        self.components
            .iter()
            .find(|c| c.logical_path == logical_path && c.name == name)
    }

    pub fn component_mut(&mut self, logical_path: &str, name: &str) -> Option<&mut WmComponent> {
        self.components
            .iter_mut()
            .find(|c| c.logical_path == logical_path && c.name == name)
    }

    fn component_of_type(
        &mut self,
        logical_path: &str,
        name: &str,
        ct: ComponentType,
    ) -> VssResult<&mut WmComponent> {
        let writer = self.writer_name.clone();
        match self.component_mut(logical_path, name) {
            Some(c) if c.component_type == ct => Ok(c),
            Some(c) => Err(arg(format!(
                "component '{}' of writer '{writer}' is a {}, not a {ct}",
                c.full_path(),
                c.component_type
            ))),
            None => Err(VssError::new(
                VssCode::ObjectNotFound,
                format!(
                    "writer '{writer}' has no component '{}'",
                    full_path(logical_path, name)
                ),
            )),
        }
    }

    /// `AddFilesToFileGroup`: adds a file set to a file-group component.
    pub fn add_files_to_file_group(
        &mut self,
        logical_path: &str,
        group_name: &str,
        files: WmFileDesc,
    ) -> VssResult<()> {
        let c = self.component_of_type(logical_path, group_name, ComponentType::FileGroup)?;
        check_file_desc(
            &format!("a file set of component '{}'", c.full_path()),
            &files,
        )
        .map_err(arg)?;
        c.files.push(files);
        Ok(())
    }

    /// `AddDatabaseFiles`: adds a data-file set to a database component.
    pub fn add_database_files(
        &mut self,
        logical_path: &str,
        database_name: &str,
        path: &str,
        filespec: &str,
        mask: FileSpecBackupType,
    ) -> VssResult<()> {
        self.add_db_files(logical_path, database_name, path, filespec, mask, false)
    }

    /// `AddDatabaseLogFiles`: adds a log-file set to a database component.
    pub fn add_database_log_files(
        &mut self,
        logical_path: &str,
        database_name: &str,
        path: &str,
        filespec: &str,
        mask: FileSpecBackupType,
    ) -> VssResult<()> {
        self.add_db_files(logical_path, database_name, path, filespec, mask, true)
    }

    fn add_db_files(
        &mut self,
        logical_path: &str,
        database_name: &str,
        path: &str,
        filespec: &str,
        mask: FileSpecBackupType,
        log: bool,
    ) -> VssResult<()> {
        let c = self.component_of_type(logical_path, database_name, ComponentType::Database)?;
        check_file_set(
            &format!("a file set of database '{}'", c.full_path()),
            path,
            filespec,
        )
        .map_err(arg)?;
        let f = WmFileDesc::new(path, filespec).backup_type_mask(mask);
        if log {
            c.database_logfiles.push(f);
        } else {
            c.database_files.push(f);
        }
        Ok(())
    }

    /// `AddExcludeFiles`.
    pub fn add_exclude_files(
        &mut self,
        path: &str,
        filespec: &str,
        recursive: bool,
    ) -> VssResult<()> {
        check_file_set("an excluded file set", path, filespec).map_err(arg)?;
        self.excluded_files.push(ExcludeFiles {
            path: path.to_owned(),
            filespec: filespec.to_owned(),
            recursive,
        });
        Ok(())
    }

    /// `AddAlternateLocationMapping`. The file set must be one a component
    /// already lists (`VSS_E_OBJECT_NOT_FOUND` otherwise).
    pub fn add_alternate_location_mapping(
        &mut self,
        path: &str,
        filespec: &str,
        recursive: bool,
        destination: &str,
    ) -> VssResult<()> {
        check_file_set("an alternate location mapping", path, filespec).map_err(arg)?;
        check_nonempty_name(
            "the destination of an alternate location mapping",
            destination,
        )
        .map_err(arg)?;
        let known = self.components.iter().any(|c| {
            c.files
                .iter()
                .chain(&c.database_files)
                .chain(&c.database_logfiles)
                .any(|f| f.path == path && f.filespec == filespec && f.recursive == recursive)
        });
        if !known {
            return Err(VssError::new(
                VssCode::ObjectNotFound,
                format!(
                    "no component of writer '{}' lists the file set {path} {filespec} (recursive: {recursive})",
                    self.writer_name
                ),
            )
            .with_hint("Add the file set to a component before mapping it."));
        }
        self.alternate_location_mappings
            .push(AlternateLocationMapping {
                path: path.to_owned(),
                filespec: filespec.to_owned(),
                recursive,
                alternate_path: destination.to_owned(),
            });
        Ok(())
    }

    /// `AddComponentDependency`: the component depends on another writer's
    /// component.
    pub fn add_component_dependency(
        &mut self,
        logical_path: &str,
        name: &str,
        on_writer_id: Guid,
        on_logical_path: &str,
        on_component_name: &str,
    ) -> VssResult<()> {
        let writer = self.writer_name.clone();
        let c = self.component_mut(logical_path, name).ok_or_else(|| {
            VssError::new(
                VssCode::ObjectNotFound,
                format!(
                    "writer '{writer}' has no component '{}'",
                    full_path(logical_path, name)
                ),
            )
        })?;
        let what = "a component dependency";
        check_logical_path(what, on_logical_path).map_err(arg)?;
        check_nonempty_name("the component name of a dependency", on_component_name)
            .map_err(arg)?;
        c.dependencies.push(ComponentDependency {
            writer_id: on_writer_id,
            logical_path: on_logical_path.to_owned(),
            component_name: on_component_name.to_owned(),
        });
        Ok(())
    }

    /// Checks everything `from_xml` checks beyond well-formedness: names,
    /// characters, unique components, the rules of database components.
    /// Errors are `VSS_E_INVALID_XML_DOCUMENT`.
    pub fn validate(&self) -> VssResult<()> {
        self.check().map_err(invalid)
    }

    fn check(&self) -> Result<(), String> {
        check_nonempty_name("the writer name", &self.writer_name)?;
        let w = &self.writer_name;
        if let Some(r) = &self.restore_method {
            if let Some(s) = &r.service {
                check_name(&format!("the restore service of writer '{w}'"), s)?;
            }
            if let Some(s) = &r.user_procedure {
                check_text(&format!("the restore user procedure of writer '{w}'"), s)?;
            }
        }
        for e in &self.excluded_files {
            check_file_set(
                &format!("an excluded file set of writer '{w}'"),
                &e.path,
                &e.filespec,
            )?;
        }
        for m in &self.alternate_location_mappings {
            let what = format!("an alternate location mapping of writer '{w}'");
            check_file_set(&what, &m.path, &m.filespec)?;
            check_nonempty_name(&format!("the alternate path of {what}"), &m.alternate_path)?;
        }
        let mut seen = HashSet::new();
        for c in &self.components {
            c.validate().map_err(|e| format!("writer '{w}': {e}"))?;
            if !seen.insert((c.logical_path.as_str(), c.name.as_str())) {
                return Err(format!(
                    "writer '{w}' lists component '{}' twice",
                    c.full_path()
                ));
            }
        }
        Ok(())
    }

    /// Reads a WMD. Anything malformed, oversized, hostile or invalid is
    /// `VSS_E_INVALID_XML_DOCUMENT` saying what was wrong.
    pub fn from_xml(text: &str) -> VssResult<Self> {
        let (root, cx) = xml::parse(text, ROOT, WMD_NAMESPACE)?;
        let wmd = decode(&root, cx)?;
        wmd.validate()?;
        Ok(wmd)
    }

    /// Writes the document. Only a document that passes [`validate`]
    /// reads back equal.
    ///
    /// [`validate`]: WriterMetadata::validate
    pub fn to_xml(&self) -> String {
        let mut w = XmlWriter::new();
        w.open(
            ROOT,
            Attrs::new()
                .s("xmlns", WMD_NAMESPACE)
                .s("version", xml::FORMAT_VERSION)
                .num("backupSchema", self.backup_schema.bits()),
        );
        w.empty(
            "IDENTIFICATION",
            Attrs::new()
                .guid("writerId", self.writer_id)
                .guid("instanceId", self.instance_id)
                .s("friendlyName", &self.writer_name)
                .s("usage", self.usage.word())
                .s("dataSource", self.source.word()),
        );
        if let Some(r) = &self.restore_method {
            w.empty(
                "RESTORE_METHOD",
                Attrs::new()
                    .s("method", r.method.word())
                    .opt("service", r.service.as_deref())
                    .opt("userProcedure", r.user_procedure.as_deref())
                    .s("writerRestore", r.writer_restore.word())
                    .yes_no("rebootRequired", r.reboot_required),
            );
        }
        if self.components.is_empty() {
            w.empty("BACKUP_LOCATIONS", Attrs::new());
        } else {
            w.open("BACKUP_LOCATIONS", Attrs::new());
            for c in &self.components {
                write_component(&mut w, c);
            }
            w.close("BACKUP_LOCATIONS");
        }
        for e in &self.excluded_files {
            w.empty(
                "EXCLUDE_FILES",
                Attrs::new()
                    .s("path", &e.path)
                    .s("filespec", &e.filespec)
                    .yes_no("recursive", e.recursive),
            );
        }
        for m in &self.alternate_location_mappings {
            w.empty("ALTERNATE_LOCATION_MAPPING", mapping_attrs(m));
        }
        w.close(ROOT);
        w.finish()
    }
}

pub(crate) fn mapping_attrs(m: &AlternateLocationMapping) -> Attrs {
    Attrs::new()
        .s("path", &m.path)
        .s("filespec", &m.filespec)
        .yes_no("recursive", m.recursive)
        .s("alternatePath", &m.alternate_path)
}

fn write_component(w: &mut XmlWriter, c: &WmComponent) {
    let name = match c.component_type {
        ComponentType::Database => "DATABASE",
        ComponentType::FileGroup => "FILE_GROUP",
    };
    let attrs = Attrs::new()
        .s("logicalPath", &c.logical_path)
        .s("componentName", &c.name)
        .s("caption", &c.caption)
        .yes_no("restoreMetadata", c.restore_metadata)
        .yes_no("notifyOnBackupComplete", c.notify_on_backup_complete)
        .yes_no("selectable", c.selectable)
        .yes_no("selectableForRestore", c.selectable_for_restore)
        .num("componentFlags", c.flags.bits());
    let empty = c.files.is_empty()
        && c.database_files.is_empty()
        && c.database_logfiles.is_empty()
        && c.dependencies.is_empty();
    if empty {
        w.empty(name, attrs);
        return;
    }
    w.open(name, attrs);
    for f in &c.files {
        w.empty(
            "FILE_LIST",
            Attrs::new()
                .s("path", &f.path)
                .s("filespec", &f.filespec)
                .yes_no("recursive", f.recursive)
                .opt("alternatePath", f.alternate_location.as_deref())
                .num("filespecBackupType", f.backup_type_mask.bits()),
        );
    }
    for (elem, list) in [
        ("DATABASE_FILES", &c.database_files),
        ("DATABASE_LOGFILES", &c.database_logfiles),
    ] {
        for f in list {
            // recursive/alternatePath are written only if (wrongly) set, so
            // an invalid document stays visibly invalid.
            let mut a = Attrs::new().s("path", &f.path).s("filespec", &f.filespec);
            if f.recursive {
                a = a.yes_no("recursive", true);
            }
            let a = a
                .opt("alternatePath", f.alternate_location.as_deref())
                .num("filespecBackupType", f.backup_type_mask.bits());
            w.empty(elem, a);
        }
    }
    for d in &c.dependencies {
        w.empty(
            "DEPENDENCY",
            Attrs::new()
                .guid("writerId", d.writer_id)
                .s("logicalPath", &d.logical_path)
                .s("componentName", &d.component_name),
        );
    }
    w.close(name);
}

/// Refuses any child element (unless reading a newer minor version).
pub(crate) fn leaf(node: &Node, cx: Cx, known: &[&str]) -> VssResult<()> {
    node.expect(cx, known)?;
    for c in &node.children {
        node.unknown_child(cx, c)?;
    }
    Ok(())
}

pub(crate) fn decode_mapping(n: &Node, cx: Cx) -> VssResult<AlternateLocationMapping> {
    leaf(n, cx, &["path", "filespec", "recursive", "alternatePath"])?;
    Ok(AlternateLocationMapping {
        path: n.req("path")?,
        filespec: n.req("filespec")?,
        recursive: n.yes_no("recursive", false)?,
        alternate_path: n.req("alternatePath")?,
    })
}

fn decode(root: &Node, cx: Cx) -> VssResult<WriterMetadata> {
    root.expect(cx, &["backupSchema"])?;
    let mut wmd = WriterMetadata {
        backup_schema: root.mask_or("backupSchema", BackupSchema::empty())?,
        ..Default::default()
    };
    let mut identified = false;
    let mut locations = false;
    for n in &root.children {
        match n.name.as_str() {
            "IDENTIFICATION" => {
                if identified {
                    return Err(invalid("<IDENTIFICATION> appears twice"));
                }
                identified = true;
                leaf(
                    n,
                    cx,
                    &[
                        "writerId",
                        "instanceId",
                        "friendlyName",
                        "usage",
                        "dataSource",
                    ],
                )?;
                wmd.writer_id = n.guid("writerId")?;
                wmd.instance_id = n.guid("instanceId")?;
                wmd.writer_name = n.req("friendlyName")?;
                wmd.usage = n.enum_or("usage", UsageType::Undefined)?;
                wmd.source = n.enum_or("dataSource", SourceType::Undefined)?;
            }
            "RESTORE_METHOD" => {
                if wmd.restore_method.is_some() {
                    return Err(invalid("<RESTORE_METHOD> appears twice"));
                }
                leaf(
                    n,
                    cx,
                    &[
                        "method",
                        "service",
                        "userProcedure",
                        "writerRestore",
                        "rebootRequired",
                    ],
                )?;
                wmd.restore_method = Some(RestoreMethodInfo {
                    method: n.enum_req("method")?,
                    service: n.opt("service"),
                    user_procedure: n.opt("userProcedure"),
                    writer_restore: n.enum_or("writerRestore", WriterRestore::Undefined)?,
                    reboot_required: n.yes_no("rebootRequired", false)?,
                });
            }
            "BACKUP_LOCATIONS" => {
                if locations {
                    return Err(invalid("<BACKUP_LOCATIONS> appears twice"));
                }
                locations = true;
                n.expect(cx, &[])?;
                for c in &n.children {
                    let ct = match c.name.as_str() {
                        "DATABASE" => ComponentType::Database,
                        "FILE_GROUP" => ComponentType::FileGroup,
                        _ => {
                            n.unknown_child(cx, c)?;
                            continue;
                        }
                    };
                    wmd.components.push(decode_component(c, cx, ct)?);
                }
            }
            "EXCLUDE_FILES" => {
                leaf(n, cx, &["path", "filespec", "recursive"])?;
                wmd.excluded_files.push(ExcludeFiles {
                    path: n.req("path")?,
                    filespec: n.req("filespec")?,
                    recursive: n.yes_no("recursive", false)?,
                });
            }
            "ALTERNATE_LOCATION_MAPPING" => {
                wmd.alternate_location_mappings.push(decode_mapping(n, cx)?);
            }
            _ => root.unknown_child(cx, n)?,
        }
    }
    if !identified {
        return Err(invalid("<WRITER_METADATA> lacks <IDENTIFICATION>"));
    }
    Ok(wmd)
}

fn decode_component(n: &Node, cx: Cx, ct: ComponentType) -> VssResult<WmComponent> {
    n.expect(
        cx,
        &[
            "logicalPath",
            "componentName",
            "caption",
            "restoreMetadata",
            "notifyOnBackupComplete",
            "selectable",
            "selectableForRestore",
            "componentFlags",
        ],
    )?;
    let mut c = WmComponent {
        component_type: ct,
        logical_path: n.opt("logicalPath").unwrap_or_default(),
        name: n.req("componentName")?,
        caption: n.opt("caption").unwrap_or_default(),
        restore_metadata: n.yes_no("restoreMetadata", false)?,
        notify_on_backup_complete: n.yes_no("notifyOnBackupComplete", false)?,
        selectable: n.yes_no("selectable", false)?,
        selectable_for_restore: n.yes_no("selectableForRestore", false)?,
        flags: n.mask_or("componentFlags", ComponentFlags::empty())?,
        files: Vec::new(),
        database_files: Vec::new(),
        database_logfiles: Vec::new(),
        dependencies: Vec::new(),
    };
    for f in &n.children {
        let list = match f.name.as_str() {
            "FILE_LIST" => &mut c.files,
            "DATABASE_FILES" => &mut c.database_files,
            "DATABASE_LOGFILES" => &mut c.database_logfiles,
            "DEPENDENCY" => {
                leaf(f, cx, &["writerId", "logicalPath", "componentName"])?;
                c.dependencies.push(ComponentDependency {
                    writer_id: f.guid("writerId")?,
                    logical_path: f.opt("logicalPath").unwrap_or_default(),
                    component_name: f.req("componentName")?,
                });
                continue;
            }
            _ => {
                n.unknown_child(cx, f)?;
                continue;
            }
        };
        leaf(
            f,
            cx,
            &[
                "path",
                "filespec",
                "recursive",
                "alternatePath",
                "filespecBackupType",
            ],
        )?;
        list.push(WmFileDesc {
            path: f.req("path")?,
            filespec: f.req("filespec")?,
            recursive: f.yes_no("recursive", false)?,
            alternate_location: f.opt("alternatePath"),
            backup_type_mask: f.mask_or("filespecBackupType", FileSpecBackupType::DEFAULT)?,
        });
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> WriterMetadata {
        let mut m = WriterMetadata::new(
            "SQLite <&\"'> Writer",
            Guid::from_u128(0x1111_2222_3333_4444_5555_6666_7777_8888),
            Guid::from_u128(0x9999),
            UsageType::UserData,
            SourceType::TransactedDb,
        );
        m.set_restore_method(
            RestoreMethod::RestoreIfCanReplace,
            None,
            Some("stop the app,\nthen copy".into()),
            WriterRestore::Never,
            false,
        )
        .unwrap();
        m.set_backup_schema(BackupSchema::DIFFERENTIAL | BackupSchema::COPY);
        m.add_component(
            WmComponent::new(ComponentType::Database, "Databases", "main")
                .caption("Main DB")
                .selectable(true)
                .flags(ComponentFlags::BACKUP_RECOVERY),
        )
        .unwrap();
        m.add_database_files(
            "Databases",
            "main",
            "/var/lib/app",
            "main.db",
            FileSpecBackupType::DEFAULT,
        )
        .unwrap();
        m.add_database_log_files(
            "Databases",
            "main",
            "/var/lib/app",
            "main.db-wal",
            FileSpecBackupType::DEFAULT,
        )
        .unwrap();
        m.add_component(WmComponent::new(ComponentType::FileGroup, "", "config"))
            .unwrap();
        m.add_files_to_file_group(
            "",
            "config",
            WmFileDesc::new("/etc/app", "*")
                .recursive(true)
                .alternate_location("/var/tmp/app-etc"),
        )
        .unwrap();
        m.add_exclude_files("/var/lib/app", "*.tmp", false).unwrap();
        m.add_alternate_location_mapping("/etc/app", "*", true, "/srv/restore/etc")
            .unwrap();
        m.add_component_dependency("", "config", Guid::from_u128(5), "Disks", "sda")
            .unwrap();
        m
    }

    #[test]
    fn round_trip() {
        let m = sample();
        let x = m.to_xml();
        assert!(x.starts_with(
            "<WRITER_METADATA xmlns=\"x-schema:#VssWriterMetadataInfo\" version=\"1.0\""
        ));
        assert!(
            x.contains("friendlyName=\"SQLite &lt;&amp;&quot;&apos;&gt; Writer\""),
            "{x}"
        );
        assert!(x.contains("<DATABASE_FILES path=\"/var/lib/app\" filespec=\"main.db\" filespecBackupType=\"3855\"/>"), "{x}");
        assert_eq!(WriterMetadata::from_xml(&x).unwrap(), m);
    }

    #[test]
    fn builder_errors() {
        let mut m = sample();
        let e = m
            .add_component(WmComponent::new(
                ComponentType::FileGroup,
                "Databases",
                "main",
            ))
            .unwrap_err();
        assert_eq!(e.code, VssCode::ObjectAlreadyExists);
        let e = m
            .add_files_to_file_group("Databases", "main", WmFileDesc::new("/x", "*"))
            .unwrap_err();
        assert_eq!(e.code, VssCode::InvalidArg);
        let e = m
            .add_database_files("", "nope", "/x", "*", FileSpecBackupType::DEFAULT)
            .unwrap_err();
        assert_eq!(e.code, VssCode::ObjectNotFound);
        let e = m
            .add_component(WmComponent::new(ComponentType::FileGroup, "a\\", "b"))
            .unwrap_err();
        assert_eq!(e.code, VssCode::InvalidArg);
        let e = m
            .add_alternate_location_mapping("/nowhere", "*", false, "/x")
            .unwrap_err();
        assert_eq!(e.code, VssCode::ObjectNotFound);
    }

    #[test]
    fn database_rules() {
        let mut m = sample();
        m.components[0].database_files[0].recursive = true;
        let e = WriterMetadata::from_xml(&m.to_xml()).unwrap_err();
        assert_eq!(e.code, VssCode::InvalidXmlDocument);
        assert!(e.message.contains("recursive"), "{}", e.message);

        let mut m = sample();
        m.components[0].database_logfiles[0].alternate_location = Some("/alt".into());
        let e = WriterMetadata::from_xml(&m.to_xml()).unwrap_err();
        assert!(e.message.contains("alternate path"), "{}", e.message);

        let mut m = sample();
        m.components[1].component_type = ComponentType::Database;
        let e = WriterMetadata::from_xml(&m.to_xml()).unwrap_err();
        assert!(e.message.contains("file list"), "{}", e.message);
    }
}
