//! The writer files of `/etc/vss/writers.d/*.toml`: one exec-hook writer
//! per file. Parsing is strict (unknown keys are errors, not typos silently
//! ignored) and every error names the file and the key, so an admin can fix
//! it from the journal line alone.

use std::collections::HashMap;
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use vss_types::{
    ComponentType, FileSpecBackupType, Guid, RestoreMethod, SourceType, UsageType, VssCode,
    VssError, VssResult, WmComponent, WmFileDesc, WriterMetadata, WriterRestore,
};

/// Namespace of the writer ids derived from writer names (UUIDv5), so a
/// writer keeps its id across restarts and machines without an admin
/// having to invent one.
pub const WRITER_ID_NAMESPACE: Guid = Guid::from_u128(0x19a4_2b8b_44d8_49ef_a478_e444_3bb4_08ab);

/// A hook's time limit when its table gives none.
pub const DEFAULT_HOOK_TIMEOUT_SECS: u64 = 30;

/// Bounds of every `timeout-secs`: a hook or freeze window longer than an
/// hour is a mistake, and 0 would fail every time.
pub const TIMEOUT_RANGE_SECS: std::ops::RangeInclusive<u64> = 1..=3600;

/// Writer files larger than this are refused (a writer file is a few KiB).
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Where production writer files live.
pub const DEFAULT_DIR: &str = "/etc/vss/writers.d";

/// One writer file, as written.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ExecWriterConfig {
    /// The writer's name, as `vssadmin list writers` shows it; unique
    /// across writers.d.
    pub name: String,
    /// The writer class id; see [`ExecWriterConfig::writer_id`].
    #[serde(default)]
    pub writer_id: Option<Guid>,
    #[serde(default)]
    pub usage: Usage,
    /// The writer's Freeze→Thaw window. `None`: the service default.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    #[serde(default)]
    pub restore_method: RestoreMethodConfig,
    /// The service to stop and start, for the stop/start restore methods.
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default, rename = "component")]
    pub components: Vec<ComponentConfig>,
    #[serde(default, rename = "exclude")]
    pub excludes: Vec<ExcludeConfig>,
    /// Where file sets go when restored to an alternate location.
    #[serde(default, rename = "alternate-location-mapping")]
    pub alternate_mappings: Vec<AlternateMappingConfig>,
    #[serde(default)]
    pub hooks: HooksConfig,
    /// The file this came from (set by the loaders), for messages.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// `usage`: what the writer's data is for (`VSS_USAGE_TYPE`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Usage {
    #[default]
    UserData,
    SystemService,
    BootableSystemState,
    Other,
}

impl Usage {
    pub fn usage_type(self) -> UsageType {
        match self {
            Usage::UserData => UsageType::UserData,
            Usage::SystemService => UsageType::SystemService,
            Usage::BootableSystemState => UsageType::BootableSystemState,
            Usage::Other => UsageType::Other,
        }
    }
}

/// `restore-method` (`VSS_RESTOREMETHOD_ENUM`, kebab-case).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestoreMethodConfig {
    #[default]
    RestoreIfCanReplace,
    RestoreIfNotThere,
    StopRestoreStart,
    RestoreStopStart,
    RestoreToAlternateLocation,
    RestoreAtReboot,
    RestoreAtRebootIfCannotReplace,
    Custom,
}

impl RestoreMethodConfig {
    pub fn method(self) -> RestoreMethod {
        match self {
            Self::RestoreIfCanReplace => RestoreMethod::RestoreIfCanReplace,
            Self::RestoreIfNotThere => RestoreMethod::RestoreIfNotThere,
            Self::StopRestoreStart => RestoreMethod::StopRestoreStart,
            Self::RestoreStopStart => RestoreMethod::RestoreStopStart,
            Self::RestoreToAlternateLocation => RestoreMethod::RestoreToAlternateLocation,
            Self::RestoreAtReboot => RestoreMethod::RestoreAtReboot,
            Self::RestoreAtRebootIfCannotReplace => RestoreMethod::RestoreAtRebootIfCannotReplace,
            Self::Custom => RestoreMethod::Custom,
        }
    }

    /// The methods that stop and start a service, and so need `service`.
    pub fn needs_service(self) -> bool {
        matches!(self, Self::StopRestoreStart | Self::RestoreStopStart)
    }
}

/// `[[component]]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ComponentConfig {
    pub name: String,
    /// Backslash-separated; empty (the default) for the root.
    #[serde(default)]
    pub logical_path: String,
    #[serde(default)]
    pub caption: String,
    #[serde(default, rename = "type")]
    pub kind: ComponentKind,
    #[serde(default = "yes")]
    pub selectable: bool,
    /// File groups: their file sets.
    #[serde(default)]
    pub files: Vec<FileSetConfig>,
    /// Databases: data files.
    #[serde(default)]
    pub database_files: Vec<FileSetConfig>,
    /// Databases: log files.
    #[serde(default)]
    pub log_files: Vec<FileSetConfig>,
}

/// A component's `type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ComponentKind {
    #[default]
    Filegroup,
    Database,
}

/// A file set of a component.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileSetConfig {
    /// The directory holding the files (absolute).
    pub path: String,
    #[serde(default = "star")]
    pub filespec: String,
    /// `None`: recursive for file groups, not for database files (which
    /// cannot be recursive).
    #[serde(default)]
    pub recursive: Option<bool>,
    /// Back the files up from here instead of `path`. File groups only.
    #[serde(default)]
    pub alternate_location: Option<String>,
}

/// `[[exclude]]`: files never to back up.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ExcludeConfig {
    pub path: String,
    #[serde(default = "star")]
    pub filespec: String,
    #[serde(default = "yes")]
    pub recursive: bool,
}

/// `[[alternate-location-mapping]]`: where a component's file set is put
/// when restored to an alternate location (`AddAlternateLocationMapping`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AlternateMappingConfig {
    pub path: String,
    #[serde(default = "star")]
    pub filespec: String,
    #[serde(default = "yes")]
    pub recursive: bool,
    pub destination: String,
}

/// `[hooks]`: the command run for each event. An event with no hook
/// succeeds at once.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HooksConfig {
    /// PrepareForBackup (before the set exists): a chance to veto early.
    #[serde(default)]
    pub prepare_backup: Option<HookConfig>,
    /// PrepareForSnapshot: heavy preparation (flush, checkpoint).
    #[serde(default, alias = "prepare-snapshot")]
    pub prepare: Option<HookConfig>,
    #[serde(default)]
    pub freeze: Option<HookConfig>,
    #[serde(default)]
    pub thaw: Option<HookConfig>,
    #[serde(default)]
    pub post_snapshot: Option<HookConfig>,
    #[serde(default)]
    pub abort: Option<HookConfig>,
    #[serde(default)]
    pub backup_complete: Option<HookConfig>,
    #[serde(default)]
    pub backup_shutdown: Option<HookConfig>,
    #[serde(default)]
    pub pre_restore: Option<HookConfig>,
    #[serde(default)]
    pub post_restore: Option<HookConfig>,
}

/// The events a hook can be attached to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HookEvent {
    PrepareBackup,
    PrepareSnapshot,
    Freeze,
    Thaw,
    PostSnapshot,
    Abort,
    BackupComplete,
    BackupShutdown,
    PreRestore,
    PostRestore,
}

impl HookEvent {
    pub const ALL: &'static [HookEvent] = &[
        HookEvent::PrepareBackup,
        HookEvent::PrepareSnapshot,
        HookEvent::Freeze,
        HookEvent::Thaw,
        HookEvent::PostSnapshot,
        HookEvent::Abort,
        HookEvent::BackupComplete,
        HookEvent::BackupShutdown,
        HookEvent::PreRestore,
        HookEvent::PostRestore,
    ];

    /// The value of `VSS_EVENT`.
    pub const fn env_name(self) -> &'static str {
        match self {
            HookEvent::PrepareBackup => "prepare-backup",
            HookEvent::PrepareSnapshot => "prepare-snapshot",
            HookEvent::Freeze => "freeze",
            HookEvent::Thaw => "thaw",
            HookEvent::PostSnapshot => "post-snapshot",
            HookEvent::Abort => "abort",
            HookEvent::BackupComplete => "backup-complete",
            HookEvent::BackupShutdown => "backup-shutdown",
            HookEvent::PreRestore => "pre-restore",
            HookEvent::PostRestore => "post-restore",
        }
    }

    /// The key under `[hooks]`.
    pub const fn config_key(self) -> &'static str {
        match self {
            HookEvent::PrepareSnapshot => "prepare",
            other => other.env_name(),
        }
    }
}

impl fmt::Display for HookEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.env_name())
    }
}

impl HooksConfig {
    pub fn get(&self, event: HookEvent) -> Option<&HookConfig> {
        match event {
            HookEvent::PrepareBackup => self.prepare_backup.as_ref(),
            HookEvent::PrepareSnapshot => self.prepare.as_ref(),
            HookEvent::Freeze => self.freeze.as_ref(),
            HookEvent::Thaw => self.thaw.as_ref(),
            HookEvent::PostSnapshot => self.post_snapshot.as_ref(),
            HookEvent::Abort => self.abort.as_ref(),
            HookEvent::BackupComplete => self.backup_complete.as_ref(),
            HookEvent::BackupShutdown => self.backup_shutdown.as_ref(),
            HookEvent::PreRestore => self.pre_restore.as_ref(),
            HookEvent::PostRestore => self.post_restore.as_ref(),
        }
    }
}

/// One hook: `{ command = [...], timeout-secs = 30, user = "name" }`, or
/// the short form `["/path/prog", "arg"]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookConfig {
    /// Program (absolute path) and arguments; run directly, no shell.
    pub command: Vec<String>,
    pub timeout_secs: u64,
    /// Run as this user (its uid and primary gid) instead of root.
    pub user: Option<String>,
}

impl HookConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    /// The program, for messages.
    pub fn program(&self) -> &str {
        self.command.first().map(String::as_str).unwrap_or("")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct HookTable {
    command: Vec<String>,
    #[serde(default = "default_hook_timeout")]
    timeout_secs: u64,
    #[serde(default)]
    user: Option<String>,
}

// Hand-written so both forms keep serde's precise messages (an untagged
// enum would say only "did not match any variant").
impl<'de> Deserialize<'de> for HookConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HookConfig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a command array like [\"/usr/bin/prog\", \"arg\"] or a table \
                     { command = [...], timeout-secs = 30, user = \"name\" }",
                )
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<HookConfig, A::Error> {
                let command =
                    Vec::<String>::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
                Ok(HookConfig {
                    command,
                    timeout_secs: DEFAULT_HOOK_TIMEOUT_SECS,
                    user: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<HookConfig, A::Error> {
                let t = HookTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(HookConfig {
                    command: t.command,
                    timeout_secs: t.timeout_secs,
                    user: t.user,
                })
            }
        }
        d.deserialize_any(V)
    }
}

fn yes() -> bool {
    true
}

fn star() -> String {
    "*".to_owned()
}

fn default_hook_timeout() -> u64 {
    DEFAULT_HOOK_TIMEOUT_SECS
}

/// A writer file that cannot be used: which file, which key, what is
/// wrong and what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: `{field}`: {message}", file.display())]
pub struct ConfigError {
    pub file: PathBuf,
    /// The key, dotted as in TOML (`hooks.freeze.timeout-secs`,
    /// `component[0].files[1].path`); empty for the file as a whole.
    pub field: String,
    pub message: String,
    pub hint: String,
}

impl ConfigError {
    fn new(file: &Path, field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_owned(),
            field: field.into(),
            message: message.into(),
            hint: format!(
                "Fix {} (format: docs/EXEC-WRITERS.md), then restart vssd; the other writer files are used meanwhile.",
                file.display()
            ),
        }
    }

    fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = hint.into();
        self
    }
}

impl From<ConfigError> for VssError {
    fn from(e: ConfigError) -> VssError {
        let field = if e.field.is_empty() {
            String::new()
        } else {
            format!(" `{}`", e.field)
        };
        VssError::new(
            VssCode::InvalidArg,
            format!("writer file {}{field}: {}", e.file.display(), e.message),
        )
        .with_hint(e.hint)
    }
}

/// What [`load_dir`] found: the usable writers, and an error for each file
/// that could not be used.
#[derive(Clone, Debug, Default)]
pub struct LoadedWriters {
    /// In file-name order.
    pub configs: Vec<ExecWriterConfig>,
    pub errors: Vec<ConfigError>,
}

/// Reads every `*.toml` of `dir` (sorted by file name; hidden files
/// skipped). A bad file is reported in `errors` and does not stop the
/// others; of two files with the same writer name (or id) the later one is
/// refused. A missing directory means no exec writers. Only an unreadable
/// directory is an error.
pub fn load_dir(dir: &Path) -> Result<LoadedWriters, ConfigError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LoadedWriters::default()),
        Err(e) => {
            return Err(
                ConfigError::new(dir, "", format!("cannot read the directory: {e}")).with_hint(
                    format!("Check that {} is a readable directory.", dir.display()),
                ),
            )
        }
    };
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| {
            ConfigError::new(dir, "", format!("cannot read the directory: {e}")).with_hint(format!(
                "Check that {} is a readable directory.",
                dir.display()
            ))
        })?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || !name.ends_with(".toml") {
            continue;
        }
        files.push(entry.path());
    }
    files.sort();

    let mut out = LoadedWriters::default();
    // name / id → the file that claimed it first.
    let mut names: HashMap<String, PathBuf> = HashMap::new();
    let mut ids: HashMap<Guid, PathBuf> = HashMap::new();
    for file in files {
        let cfg = match load_file(&file) {
            Ok(c) => c,
            Err(e) => {
                out.errors.push(e);
                continue;
            }
        };
        if let Some(first) = names.get(&cfg.name) {
            out.errors.push(
                ConfigError::new(
                    &file,
                    "name",
                    format!(
                        "writer name '{}' is already used by {}; this file is ignored",
                        cfg.name,
                        first.display()
                    ),
                )
                .with_hint(format!(
                    "Give {} its own `name`, or remove the duplicate file, then restart vssd.",
                    file.display()
                )),
            );
            continue;
        }
        let id = cfg.writer_id();
        if let Some(first) = ids.get(&id) {
            out.errors.push(
                ConfigError::new(
                    &file,
                    "writer-id",
                    format!(
                        "writer id {id} is already used by {}; this file is ignored",
                        first.display()
                    ),
                )
                .with_hint(format!(
                    "Give {} its own `writer-id`, or leave it out to derive one from the name.",
                    file.display()
                )),
            );
            continue;
        }
        names.insert(cfg.name.clone(), file.clone());
        ids.insert(id, file.clone());
        out.configs.push(cfg);
    }
    Ok(out)
}

/// Reads and validates one writer file. The file must be a regular file
/// owned by root (or by the service's user) and writable by its owner only:
/// its hooks run with the service's privileges.
pub fn load_file(path: &Path) -> Result<ExecWriterConfig, ConfigError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| ConfigError::new(path, "", format!("cannot read the file: {e}")))?;
    if !meta.is_file() {
        return Err(ConfigError::new(path, "", "not a regular file"));
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(ConfigError::new(
            path,
            "",
            format!("the file is owned by uid {}, not by root: its hooks would run with the service's privileges", meta.uid()),
        )
        .with_hint(format!("chown root:root {} (and check who wrote it).", path.display())));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(ConfigError::new(
            path,
            "",
            format!(
                "the file is writable by group or others (mode {:o}): its hooks would run with the service's privileges",
                meta.mode() & 0o7777
            ),
        )
        .with_hint(format!("chmod go-w {} (and check who wrote it).", path.display())));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(ConfigError::new(
            path,
            "",
            format!(
                "the file is {} bytes; writer files are limited to {MAX_FILE_BYTES}",
                meta.len()
            ),
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(path, "", format!("cannot read the file: {e}")))?;
    parse(&text, path)
}

/// Parses and validates a writer file's text; `file` names it in errors.
pub fn parse(text: &str, file: &Path) -> Result<ExecWriterConfig, ConfigError> {
    let mut cfg: ExecWriterConfig = vss_writer::config::parse_toml(text)
        .map_err(|(field, message)| ConfigError::new(file, field, message))?;
    cfg.source = Some(file.to_owned());
    cfg.validate()?;
    Ok(cfg)
}

fn check_timeout(file: &Path, field: &str, secs: u64) -> Result<(), ConfigError> {
    if TIMEOUT_RANGE_SECS.contains(&secs) {
        Ok(())
    } else {
        Err(ConfigError::new(
            file,
            field,
            format!(
                "{secs} is out of range: timeouts are {}..={} seconds",
                TIMEOUT_RANGE_SECS.start(),
                TIMEOUT_RANGE_SECS.end()
            ),
        ))
    }
}

fn check_absolute(file: &Path, field: &str, what: &str, p: &str) -> Result<(), ConfigError> {
    if p.starts_with('/') {
        Ok(())
    } else {
        Err(ConfigError::new(
            file,
            field,
            format!("{what} '{p}' is not an absolute path (it must start with /)"),
        ))
    }
}

fn check_text(file: &Path, field: &str, what: &str, s: &str) -> Result<(), ConfigError> {
    if s.chars().any(char::is_control) {
        return Err(ConfigError::new(
            file,
            field,
            format!("{what} {s:?} contains control characters"),
        ));
    }
    Ok(())
}

impl ExecWriterConfig {
    /// Parses and validates a writer file's text (see [`parse`]).
    pub fn parse(text: &str, file: &Path) -> Result<Self, ConfigError> {
        parse(text, file)
    }

    /// The configured id, or one derived from the name (stable: the same
    /// name always gives the same id).
    pub fn writer_id(&self) -> Guid {
        self.writer_id
            .unwrap_or_else(|| Guid::derived(WRITER_ID_NAMESPACE, self.name.as_bytes()))
    }

    /// The Freeze→Thaw window, if the file sets one; otherwise the caller
    /// applies the service default.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout_secs.map(Duration::from_secs)
    }

    /// The file name for messages (`<memory>` if not loaded from a file).
    pub fn source_display(&self) -> String {
        self.source
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<memory>".to_owned())
    }

    /// Checks everything the serde types cannot. The file name comes from
    /// `source`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let owned;
        let file = match &self.source {
            Some(p) => p.as_path(),
            None => {
                owned = PathBuf::from("<memory>");
                owned.as_path()
            }
        };
        if self.name.trim().is_empty() {
            return Err(ConfigError::new(file, "name", "the writer name is empty"));
        }
        if self.name.trim() != self.name {
            return Err(ConfigError::new(
                file,
                "name",
                format!(
                    "the writer name {:?} has leading or trailing blanks",
                    self.name
                ),
            ));
        }
        if self.name.chars().count() > 256 {
            return Err(ConfigError::new(
                file,
                "name",
                "the writer name is longer than 256 characters",
            ));
        }
        check_text(file, "name", "the writer name", &self.name)?;
        if self.writer_id.is_some_and(|g| g.is_null()) {
            return Err(ConfigError::new(
                file,
                "writer-id",
                "the null id is not a writer id",
            )
            .with_hint(format!(
                "In {}, use a fresh id (`uuidgen`), or leave `writer-id` out to derive one from the name.",
                file.display()
            )));
        }
        if let Some(t) = self.timeout_secs {
            check_timeout(file, "timeout-secs", t)?;
        }
        match (&self.service, self.restore_method.needs_service()) {
            (None, true) => {
                return Err(ConfigError::new(
                    file,
                    "service",
                    "this restore-method stops and starts a service: name it with `service`",
                ))
            }
            (Some(_), false) => return Err(ConfigError::new(
                file,
                "service",
                "`service` is only used by restore-method stop-restore-start or restore-stop-start",
            )),
            (Some(s), true) => {
                if s.trim().is_empty() {
                    return Err(ConfigError::new(
                        file,
                        "service",
                        "the service name is empty",
                    ));
                }
                check_text(file, "service", "the service name", s)?;
            }
            (None, false) => {}
        }
        for (i, c) in self.components.iter().enumerate() {
            validate_component(file, i, c)?;
        }
        for (i, e) in self.excludes.iter().enumerate() {
            let f = format!("exclude[{i}]");
            check_absolute(file, &format!("{f}.path"), "the excluded path", &e.path)?;
            check_filespec(file, &format!("{f}.filespec"), &e.filespec)?;
        }
        for (i, a) in self.alternate_mappings.iter().enumerate() {
            let f = format!("alternate-location-mapping[{i}]");
            check_absolute(file, &format!("{f}.path"), "the mapped path", &a.path)?;
            check_filespec(file, &format!("{f}.filespec"), &a.filespec)?;
            check_absolute(
                file,
                &format!("{f}.destination"),
                "the destination",
                &a.destination,
            )?;
        }
        for ev in HookEvent::ALL {
            if let Some(h) = self.hooks.get(*ev) {
                validate_hook(file, &format!("hooks.{}", ev.config_key()), h)?;
            }
        }
        // Whatever else the document rules refuse (logical path syntax,
        // duplicate components…) is caught by building it.
        self.writer_metadata(Guid::NULL).map_err(|e| {
            let field = if e.message.contains("excluded") {
                "exclude"
            } else if e.message.contains("alternate location mapping")
                || e.message.contains("file set") && e.code == vss_types::VssCode::ObjectNotFound
            {
                "alternate-location-mapping"
            } else {
                "component"
            };
            ConfigError::new(file, field, e.message)
        })?;
        Ok(())
    }

    /// The Writer Metadata Document this writer answers Identify with.
    pub fn writer_metadata(&self, instance_id: Guid) -> VssResult<WriterMetadata> {
        let has_db = self
            .components
            .iter()
            .any(|c| c.kind == ComponentKind::Database);
        let source = if has_db {
            SourceType::TransactedDb
        } else {
            SourceType::Other
        };
        let mut m = WriterMetadata::new(
            self.name.clone(),
            self.writer_id(),
            instance_id,
            self.usage.usage_type(),
            source,
        );
        // Restore hooks mean the writer wants the restore events.
        let writer_restore =
            if self.hooks.pre_restore.is_some() || self.hooks.post_restore.is_some() {
                WriterRestore::Always
            } else {
                WriterRestore::Never
            };
        m.set_restore_method(
            self.restore_method.method(),
            self.service.clone(),
            None,
            writer_restore,
            false,
        )?;
        // Hooks do not track backup history, so copy backups are as good
        // as full ones.
        m.set_backup_schema(vss_types::BackupSchema::COPY);
        let notify = self.hooks.backup_complete.is_some();
        for c in &self.components {
            let ct = match c.kind {
                ComponentKind::Filegroup => ComponentType::FileGroup,
                ComponentKind::Database => ComponentType::Database,
            };
            m.add_component(
                WmComponent::new(ct, c.logical_path.clone(), c.name.clone())
                    .caption(c.caption.clone())
                    .selectable(c.selectable)
                    .notify_on_backup_complete(notify),
            )?;
            for f in &c.files {
                let mut d = WmFileDesc::new(f.path.clone(), f.filespec.clone())
                    .recursive(f.recursive.unwrap_or(true));
                if let Some(a) = &f.alternate_location {
                    d = d.alternate_location(a.clone());
                }
                m.add_files_to_file_group(&c.logical_path, &c.name, d)?;
            }
            for f in &c.database_files {
                m.add_database_files(
                    &c.logical_path,
                    &c.name,
                    &f.path,
                    &f.filespec,
                    FileSpecBackupType::DEFAULT,
                )?;
            }
            for f in &c.log_files {
                m.add_database_log_files(
                    &c.logical_path,
                    &c.name,
                    &f.path,
                    &f.filespec,
                    FileSpecBackupType::DEFAULT,
                )?;
            }
        }
        for e in &self.excludes {
            m.add_exclude_files(&e.path, &e.filespec, e.recursive)?;
        }
        for a in &self.alternate_mappings {
            m.add_alternate_location_mapping(&a.path, &a.filespec, a.recursive, &a.destination)?;
        }
        Ok(m)
    }
}

fn check_filespec(file: &Path, field: &str, spec: &str) -> Result<(), ConfigError> {
    if spec.is_empty() {
        return Err(ConfigError::new(
            file,
            field,
            "the filespec is empty (use \"*\" for every file)",
        ));
    }
    if spec.contains('/') {
        return Err(ConfigError::new(
            file,
            field,
            format!("the filespec '{spec}' contains '/': it is a file name or pattern; put directories in `path`"),
        ));
    }
    Ok(())
}

fn validate_component(file: &Path, i: usize, c: &ComponentConfig) -> Result<(), ConfigError> {
    let f = format!("component[{i}]");
    if c.name.trim().is_empty() {
        return Err(ConfigError::new(
            file,
            format!("{f}.name"),
            "the component name is empty",
        ));
    }
    if c.name.contains('\\') {
        return Err(ConfigError::new(
            file,
            format!("{f}.name"),
            format!(
                "component name '{}' contains a backslash; put the path in `logical-path`",
                c.name
            ),
        ));
    }
    match c.kind {
        ComponentKind::Filegroup => {
            for (key, list) in [
                ("database-files", &c.database_files),
                ("log-files", &c.log_files),
            ] {
                if !list.is_empty() {
                    return Err(ConfigError::new(
                        file,
                        format!("{f}.{key}"),
                        format!("component '{}' is a file group; only `type = \"database\"` components have {key}", c.name),
                    ));
                }
            }
        }
        ComponentKind::Database => {
            if !c.files.is_empty() {
                return Err(ConfigError::new(
                    file,
                    format!("{f}.files"),
                    format!("component '{}' is a database: list its files in `database-files` and `log-files`", c.name),
                ));
            }
            for (key, list) in [
                ("database-files", &c.database_files),
                ("log-files", &c.log_files),
            ] {
                for (j, s) in list.iter().enumerate() {
                    if s.recursive == Some(true) {
                        return Err(ConfigError::new(
                            file,
                            format!("{f}.{key}[{j}].recursive"),
                            "database file sets cannot be recursive",
                        ));
                    }
                    if s.alternate_location.is_some() {
                        return Err(ConfigError::new(
                            file,
                            format!("{f}.{key}[{j}].alternate-location"),
                            "database file sets cannot have an alternate location",
                        ));
                    }
                }
            }
        }
    }
    for (key, list) in [
        ("files", &c.files),
        ("database-files", &c.database_files),
        ("log-files", &c.log_files),
    ] {
        for (j, s) in list.iter().enumerate() {
            let g = format!("{f}.{key}[{j}]");
            check_absolute(file, &format!("{g}.path"), "the path", &s.path)?;
            check_filespec(file, &format!("{g}.filespec"), &s.filespec)?;
            if let Some(a) = &s.alternate_location {
                check_absolute(
                    file,
                    &format!("{g}.alternate-location"),
                    "the alternate location",
                    a,
                )?;
            }
        }
    }
    Ok(())
}

fn validate_hook(file: &Path, field: &str, h: &HookConfig) -> Result<(), ConfigError> {
    let Some(prog) = h.command.first() else {
        return Err(ConfigError::new(
            file,
            format!("{field}.command"),
            "the command is empty: give the program's absolute path and its arguments",
        ));
    };
    check_absolute(file, &format!("{field}.command"), "the program", prog)?;
    if h.command.iter().any(|a| a.contains('\0')) {
        return Err(ConfigError::new(
            file,
            format!("{field}.command"),
            "an argument contains a NUL character",
        ));
    }
    check_timeout(file, &format!("{field}.timeout-secs"), h.timeout_secs)?;
    if let Some(u) = &h.user {
        if u.trim().is_empty() || u.contains(['/', ':']) || u.chars().any(char::is_control) {
            return Err(ConfigError::new(
                file,
                format!("{field}.user"),
                format!("{u:?} is not a user name"),
            ));
        }
    }
    Ok(())
}
