//! `/etc/vss/postgres-writer.toml`: the cluster the writer protects and how
//! to reach its server. Parsing is strict (unknown keys are errors) and
//! every error names the file and the key.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use vss_types::Guid;
pub use vss_writer::config::ConfigError;
use vss_writer::config::ConfigFile;

/// Where the writer reads its configuration when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/vss/postgres-writer.toml";
/// The writer name when the file gives none.
pub const DEFAULT_NAME: &str = "PostgresWriter";
/// The component name when the file gives none.
pub const DEFAULT_COMPONENT: &str = "cluster";
/// Debian's socket directory.
pub const DEFAULT_SOCKET_DIRECTORY: &str = "/var/run/postgresql";
pub const DEFAULT_PORT: u16 = 5432;
pub const DEFAULT_USER: &str = "postgres";
pub const DEFAULT_DBNAME: &str = "postgres";
/// The service the requestor stops and starts around an in-place restore.
pub const DEFAULT_SERVICE: &str = "postgresql";
/// How long `pg_backup_start` (its fast checkpoint) may take.
pub const DEFAULT_START_TIMEOUT_SECS: u64 = 30;
pub const START_TIMEOUT_RANGE_SECS: std::ops::RangeInclusive<u64> = 1..=600;
/// The longest a backup stays started without Thaw or Abort.
pub const DEFAULT_MAX_HOLD_SECS: u64 = 600;
pub const MAX_HOLD_RANGE_SECS: std::ops::RangeInclusive<u64> = 1..=86_400;
/// Namespace of writer ids derived from writer names (UUIDv5).
pub const WRITER_ID_NAMESPACE: Guid = Guid::from_u128(0x8d2f_3a61_7c4e_4b0a_a5e9_0f6c_2d71_b834);

/// The configuration file, as written.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PostgresWriterConfig {
    #[serde(default = "default_name")]
    pub name: String,
    #[serde(default)]
    pub writer_id: Option<Guid>,
    #[serde(default = "default_component")]
    pub component: String,
    #[serde(default)]
    pub logical_path: String,
    #[serde(default)]
    pub caption: Option<String>,
    /// The cluster's data directory (`SHOW data_directory`), absolute.
    pub data_directory: PathBuf,
    #[serde(default = "default_socket_directory")]
    pub socket_directory: PathBuf,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default = "default_user")]
    pub user: String,
    #[serde(default = "default_dbname")]
    pub dbname: String,
    #[serde(default = "default_service")]
    pub service: String,
    #[serde(default = "default_start_timeout")]
    pub start_timeout_secs: u64,
    #[serde(default = "default_max_hold")]
    pub max_hold_secs: u64,
    /// The file this came from (set by the loaders), for messages.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

fn default_name() -> String {
    DEFAULT_NAME.into()
}
fn default_component() -> String {
    DEFAULT_COMPONENT.into()
}
fn default_socket_directory() -> PathBuf {
    DEFAULT_SOCKET_DIRECTORY.into()
}
fn default_port() -> u16 {
    DEFAULT_PORT
}
fn default_user() -> String {
    DEFAULT_USER.into()
}
fn default_dbname() -> String {
    DEFAULT_DBNAME.into()
}
fn default_service() -> String {
    DEFAULT_SERVICE.into()
}
fn default_start_timeout() -> u64 {
    DEFAULT_START_TIMEOUT_SECS
}
fn default_max_hold() -> u64 {
    DEFAULT_MAX_HOLD_SECS
}

impl PostgresWriterConfig {
    /// A configuration with the defaults for this data directory.
    pub fn new(data_directory: impl Into<PathBuf>) -> Self {
        PostgresWriterConfig {
            name: default_name(),
            writer_id: None,
            component: default_component(),
            logical_path: String::new(),
            caption: None,
            data_directory: data_directory.into(),
            socket_directory: default_socket_directory(),
            port: DEFAULT_PORT,
            user: default_user(),
            dbname: default_dbname(),
            service: default_service(),
            start_timeout_secs: DEFAULT_START_TIMEOUT_SECS,
            max_hold_secs: DEFAULT_MAX_HOLD_SECS,
            source: None,
        }
    }

    /// The configured id, or one derived from the name.
    pub fn writer_id(&self) -> Guid {
        self.writer_id
            .unwrap_or_else(|| Guid::derived(WRITER_ID_NAMESPACE, self.name.as_bytes()))
    }

    /// `logical_path\component`.
    pub fn full_path(&self) -> String {
        vss_types::documents::wmd::full_path(&self.logical_path, &self.component)
    }

    /// The caption shown to backup tools.
    pub fn caption(&self) -> String {
        self.caption
            .clone()
            .unwrap_or_else(|| format!("PostgreSQL cluster {}", self.data_directory.display()))
    }

    /// The server's Unix socket (`DIR/.s.PGSQL.PORT`), for messages.
    pub fn socket_path(&self) -> PathBuf {
        self.socket_directory
            .join(format!(".s.PGSQL.{}", self.port))
    }

    pub fn start_timeout(&self) -> Duration {
        Duration::from_secs(self.start_timeout_secs)
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
        if self.name.trim().is_empty() || self.name.trim() != self.name {
            return Err(FILE.error(
                file,
                "name",
                format!(
                    "the writer name {:?} is empty or has leading or trailing blanks",
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
        check_text(file, "name", &self.name)?;
        if self.writer_id.is_some_and(|g| g.is_null()) {
            return Err(FILE.error(file, "writer-id", "the null id is not a writer id"));
        }
        if self.component.trim().is_empty() || self.component.contains('\\') {
            return Err(FILE.error(
                file,
                "component",
                format!(
                    "component name {:?} is empty or contains a backslash (put the path in `logical-path`)",
                    self.component
                ),
            ));
        }
        check_text(file, "component", &self.component)?;
        if let Some(c) = &self.caption {
            check_text(file, "caption", c)?;
        }
        check_dir(file, "data-directory", &self.data_directory)?;
        check_dir(file, "socket-directory", &self.socket_directory)?;
        if self.port == 0 {
            return Err(FILE.error(file, "port", "port 0 is not a port"));
        }
        for (key, v) in [
            ("user", &self.user),
            ("dbname", &self.dbname),
            ("service", &self.service),
        ] {
            if v.trim().is_empty() {
                return Err(FILE.error(file, key, "the value is empty"));
            }
            check_text(file, key, v)?;
        }
        if self.service.contains(char::is_whitespace) {
            return Err(FILE.error(
                file,
                "service",
                format!("service name {:?} contains blanks", self.service),
            ));
        }
        if !START_TIMEOUT_RANGE_SECS.contains(&self.start_timeout_secs) {
            return Err(FILE.error(
                file,
                "start-timeout-secs",
                format!(
                    "{} is out of range: {}..={} seconds",
                    self.start_timeout_secs,
                    START_TIMEOUT_RANGE_SECS.start(),
                    START_TIMEOUT_RANGE_SECS.end()
                ),
            ));
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
        // Whatever else the document rules refuse (logical path syntax) is
        // caught by building the metadata.
        let layout = crate::metadata::ClusterLayout::configured(&self.data_directory);
        crate::metadata::writer_metadata(self, Guid::NULL, &layout)
            .map_err(|e| FILE.error(file, "logical-path", e.message))?;
        Ok(())
    }
}

fn check_dir(file: &Path, key: &str, p: &Path) -> Result<(), ConfigError> {
    let shown = p.display().to_string();
    check_text(file, key, &shown)?;
    if !p.is_absolute() {
        return Err(FILE.error(
            file,
            key,
            format!("'{shown}' is not an absolute path (it must start with /)"),
        ));
    }
    if p.components()
        .any(|c| matches!(c, Component::CurDir | Component::ParentDir))
        || shown.contains(['*', '?'])
        || (shown.len() > 1 && shown.ends_with('/'))
    {
        return Err(FILE.error(
            file,
            key,
            format!(
                "'{shown}' is not a plain directory path (no `.` or `..` segments, no wildcards, no trailing /)"
            ),
        ));
    }
    if p == Path::new("/") {
        return Err(FILE.error(file, key, "'/' cannot be used here"));
    }
    Ok(())
}

fn check_text(file: &Path, key: &str, s: &str) -> Result<(), ConfigError> {
    if s.chars().any(char::is_control) {
        return Err(FILE.error(file, key, format!("{s:?} contains control characters")));
    }
    Ok(())
}

/// This configuration in errors and hints.
pub const FILE: ConfigFile = ConfigFile {
    writer: "PostgreSQL writer",
    program: "vss-writer-postgres",
    create_hint: "with the cluster's data-directory (example: dist/vss/postgres-writer.toml)",
};

/// Reads and validates the configuration file.
pub fn load(path: &Path) -> Result<PostgresWriterConfig, ConfigError> {
    parse(&FILE.read(path)?, path)
}

/// Parses and validates the configuration's text; `file` names it in
/// errors.
pub fn parse(text: &str, file: &Path) -> Result<PostgresWriterConfig, ConfigError> {
    let mut cfg: PostgresWriterConfig = FILE.parse(text, file)?;
    cfg.source = Some(file.to_owned());
    cfg.validate()?;
    Ok(cfg)
}
