//! `/etc/vss/sqlite-writer.toml`: the writer's name and the databases it
//! protects. Parsing is strict (unknown keys are errors, not typos silently
//! ignored) and every error names the file and the key, so an admin can fix
//! it from the one line the writer prints.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use vss_types::Guid;
pub use vss_writer::config::ConfigError;
use vss_writer::config::ConfigFile;

/// Where the writer reads its configuration when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/vss/sqlite-writer.toml";

/// The writer name when the file gives none.
pub const DEFAULT_NAME: &str = "SqliteWriter";

/// How long Freeze waits for a database's write lock when the file says
/// nothing.
pub const DEFAULT_LOCK_TIMEOUT_MS: u64 = 5000;

/// Bounds of `lock-timeout-ms`: 0 would fail at the first busy moment, and
/// more than ten minutes cannot fit in any writer window.
pub const LOCK_TIMEOUT_RANGE_MS: std::ops::RangeInclusive<u64> = 1..=600_000;

/// How long a lock is held at most when no Thaw or Abort comes: vssd's
/// default writer window, after which vssd aborts the set anyway.
pub const DEFAULT_MAX_HOLD_SECS: u64 = 60;

/// Bounds of `max-hold-secs` (those of every writer timeout).
pub const MAX_HOLD_RANGE_SECS: std::ops::RangeInclusive<u64> = 1..=3600;

/// Namespace of the writer ids derived from writer names (UUIDv5), so the
/// writer keeps its id across restarts and machines.
pub const WRITER_ID_NAMESPACE: Guid = Guid::from_u128(0x5b0e_6c1d_2f3a_4e8b_9c7d_41a2_e6f0_3b95);

/// The configuration file, as written.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SqliteWriterConfig {
    /// The writer's name, as `vssadmin list writers` shows it.
    #[serde(default = "default_name")]
    pub name: String,
    /// The writer class id; default derived from the name.
    #[serde(default)]
    pub writer_id: Option<Guid>,
    /// Longest time a write lock is held without Thaw or Abort; then the
    /// writer releases it by itself and fails the Thaw that comes late.
    #[serde(default = "default_max_hold")]
    pub max_hold_secs: u64,
    /// `[[database]]`: one component each.
    #[serde(default, rename = "database")]
    pub databases: Vec<DatabaseConfig>,
    /// The file this came from (set by the loaders), for messages.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// `[[database]]`: one SQLite database, one component.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DatabaseConfig {
    /// The component name (unique with its logical path).
    pub component: String,
    /// The database file, absolute.
    pub path: PathBuf,
    /// Backslash-separated; empty (the default) for the root.
    #[serde(default)]
    pub logical_path: String,
    /// Shown to users of backup tools; default: the database path.
    #[serde(default)]
    pub caption: Option<String>,
    /// How long Freeze waits for the write lock.
    #[serde(default = "default_lock_timeout")]
    pub lock_timeout_ms: u64,
}

fn default_name() -> String {
    DEFAULT_NAME.to_owned()
}

fn default_lock_timeout() -> u64 {
    DEFAULT_LOCK_TIMEOUT_MS
}

fn default_max_hold() -> u64 {
    DEFAULT_MAX_HOLD_SECS
}

impl DatabaseConfig {
    /// A database with the defaults (for tests and programs that build the
    /// configuration in code).
    pub fn new(component: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        DatabaseConfig {
            component: component.into(),
            path: path.into(),
            logical_path: String::new(),
            caption: None,
            lock_timeout_ms: DEFAULT_LOCK_TIMEOUT_MS,
        }
    }

    pub fn lock_timeout(&self) -> Duration {
        Duration::from_millis(self.lock_timeout_ms)
    }

    /// `logical_path\component`, or the component at the root.
    pub fn full_path(&self) -> String {
        vss_types::documents::wmd::full_path(&self.logical_path, &self.component)
    }

    /// The directory holding the database and its journal files.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("/"))
    }

    /// The database's file name (validated to exist).
    pub fn file_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The companion file SQLite keeps beside the database: `-wal`,
    /// `-journal` or `-shm`.
    pub fn companion(&self, suffix: &str) -> PathBuf {
        let mut s = self.path.clone().into_os_string();
        s.push(suffix);
        PathBuf::from(s)
    }
}

impl SqliteWriterConfig {
    /// A configuration with the defaults and these databases.
    pub fn new(databases: Vec<DatabaseConfig>) -> Self {
        SqliteWriterConfig {
            name: default_name(),
            writer_id: None,
            max_hold_secs: DEFAULT_MAX_HOLD_SECS,
            databases,
            source: None,
        }
    }

    /// The configured id, or one derived from the name (the same name
    /// always gives the same id).
    pub fn writer_id(&self) -> Guid {
        self.writer_id
            .unwrap_or_else(|| Guid::derived(WRITER_ID_NAMESPACE, self.name.as_bytes()))
    }

    pub fn max_hold(&self) -> Duration {
        Duration::from_secs(self.max_hold_secs)
    }

    /// The file name for messages (`<memory>` if not loaded from a file).
    pub fn source_path(&self) -> PathBuf {
        self.source
            .clone()
            .unwrap_or_else(|| PathBuf::from("<memory>"))
    }

    /// Checks everything the serde types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let file = self.source_path();
        let file = file.as_path();
        if self.name.trim().is_empty() {
            return Err(FILE.error(file, "name", "the writer name is empty"));
        }
        if self.name.trim() != self.name {
            return Err(FILE.error(
                file,
                "name",
                format!(
                    "the writer name {:?} has leading or trailing blanks",
                    self.name
                ),
            ));
        }
        if self.name.chars().count() > 256 {
            return Err(FILE.error(
                file,
                "name",
                "the writer name is longer than 256 characters",
            ));
        }
        check_text(file, "name", "the writer name", &self.name)?;
        if self.writer_id.is_some_and(|g| g.is_null()) {
            return Err(FILE.error(
                file,
                "writer-id",
                "the null id is not a writer id",
            )
            .with_hint(format!(
                "In {}, use a fresh id (`uuidgen`), or leave `writer-id` out to derive one from the name.",
                file.display()
            )));
        }
        if !MAX_HOLD_RANGE_SECS.contains(&self.max_hold_secs) {
            return Err(FILE.error(
                file,
                "max-hold-secs",
                format!(
                    "{} is out of range: {}..={} seconds",
                    self.max_hold_secs,
                    MAX_HOLD_RANGE_SECS.start(),
                    MAX_HOLD_RANGE_SECS.end()
                ),
            ));
        }
        if self.databases.is_empty() {
            return Err(FILE.error(
                file,
                "database",
                "no database is configured: the writer would have nothing to protect",
            )
            .with_hint(format!(
                "Add a [[database]] table with `component` and `path` to {} (format: docs/WRITERS.md).",
                file.display()
            )));
        }
        let mut paths = HashSet::new();
        let mut names = HashSet::new();
        for (i, db) in self.databases.iter().enumerate() {
            validate_database(file, i, db)?;
            if !paths.insert(db.path.clone()) {
                return Err(FILE.error(
                    file,
                    format!("database[{i}].path"),
                    format!(
                        "{} is listed twice: one database is one component (a second lock on the same file would wait for the first)",
                        db.path.display()
                    ),
                ));
            }
            if !names.insert((db.logical_path.clone(), db.component.clone())) {
                return Err(FILE.error(
                    file,
                    format!("database[{i}].component"),
                    format!(
                        "component '{}' is listed twice; give each database its own component name",
                        db.full_path()
                    ),
                ));
            }
        }
        // Whatever else the document rules refuse (logical path syntax,
        // characters) is caught by building it.
        crate::metadata::writer_metadata(self, Guid::NULL)
            .map_err(|e| FILE.error(file, "database", e.message))?;
        Ok(())
    }
}

fn validate_database(file: &Path, i: usize, db: &DatabaseConfig) -> Result<(), ConfigError> {
    let f = format!("database[{i}]");
    if db.component.trim().is_empty() {
        return Err(FILE.error(
            file,
            format!("{f}.component"),
            "the component name is empty",
        ));
    }
    if db.component.contains('\\') {
        return Err(FILE.error(
            file,
            format!("{f}.component"),
            format!(
                "component name '{}' contains a backslash; put the path in `logical-path`",
                db.component
            ),
        ));
    }
    check_text(
        file,
        &format!("{f}.component"),
        "the component name",
        &db.component,
    )?;
    if let Some(c) = &db.caption {
        check_text(file, &format!("{f}.caption"), "the caption", c)?;
    }
    let field = format!("{f}.path");
    let shown = db.path.display().to_string();
    check_text(file, &field, "the path", &shown)?;
    if !db.path.is_absolute() {
        return Err(FILE.error(
            file,
            &field,
            format!("'{shown}' is not an absolute path (it must start with /)"),
        ));
    }
    if db
        .path
        .components()
        .any(|c| matches!(c, Component::CurDir | Component::ParentDir))
        || shown.ends_with('/')
    {
        return Err(FILE.error(
            file,
            &field,
            format!("'{shown}' is not a plain file path (no `.` or `..` segments, no trailing /)"),
        ));
    }
    let name = db.file_name();
    if name.is_empty() {
        return Err(FILE.error(file, &field, format!("'{shown}' names no file")));
    }
    if name.contains(['*', '?']) {
        // The file name becomes a filespec in the metadata, where these are
        // wildcards: the backup would match other files.
        return Err(FILE
            .error(
                file,
                &field,
                format!("the file name '{name}' contains a wildcard character (* or ?)"),
            )
            .with_hint(
                "Rename the database file (or link it under a plain name) and configure that path.",
            ));
    }
    for suffix in ["-wal", "-journal", "-shm"] {
        if name.ends_with(suffix) {
            return Err(FILE.error(
                file,
                &field,
                format!("'{shown}' is SQLite's {suffix} file, not the database"),
            )
            .with_hint(format!(
                "Configure the database file itself (without {suffix}); its {suffix} file is handled with it."
            )));
        }
    }
    if !LOCK_TIMEOUT_RANGE_MS.contains(&db.lock_timeout_ms) {
        return Err(FILE.error(
            file,
            format!("{f}.lock-timeout-ms"),
            format!(
                "{} is out of range: {}..={} ms",
                db.lock_timeout_ms,
                LOCK_TIMEOUT_RANGE_MS.start(),
                LOCK_TIMEOUT_RANGE_MS.end()
            ),
        ));
    }
    Ok(())
}

fn check_text(file: &Path, field: &str, what: &str, s: &str) -> Result<(), ConfigError> {
    if s.chars().any(char::is_control) {
        return Err(FILE.error(
            file,
            field,
            format!("{what} {s:?} contains control characters"),
        ));
    }
    Ok(())
}

/// This configuration in errors and hints.
pub const FILE: ConfigFile = ConfigFile {
    writer: "SQLite writer",
    program: "vss-writer-sqlite",
    create_hint: "with the databases to protect (example: dist/vss/sqlite-writer.toml)",
};

/// Reads and validates the configuration file.
pub fn load(path: &Path) -> Result<SqliteWriterConfig, ConfigError> {
    parse(&FILE.read(path)?, path)
}

/// Parses and validates the configuration's text; `file` names it in
/// errors.
pub fn parse(text: &str, file: &Path) -> Result<SqliteWriterConfig, ConfigError> {
    let mut cfg: SqliteWriterConfig = FILE.parse(text, file)?;
    cfg.source = Some(file.to_owned());
    cfg.validate()?;
    Ok(cfg)
}
