//! `/etc/vss/mariadb-writer.toml`: the writer's name and how it reaches the
//! MariaDB server. Parsing is strict (unknown keys are errors, not typos
//! silently ignored) and every error names the file and the key.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use vss_types::Guid;
pub use vss_writer::config::ConfigError;
use vss_writer::config::ConfigFile;

/// Where the writer reads its configuration when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/vss/mariadb-writer.toml";
/// The writer name when the file gives none.
pub const DEFAULT_NAME: &str = "MariadbWriter";
/// Debian's server socket.
pub const DEFAULT_SOCKET: &str = "/run/mysqld/mysqld.sock";
/// The account the writer logs in with when the file names none.
pub const DEFAULT_USER: &str = "vss";
/// The component name of the instance.
pub const DEFAULT_COMPONENT: &str = "instance";
/// The systemd unit stopped and started around a restore.
pub const DEFAULT_SERVICE: &str = "mariadb";
/// How long each `BACKUP STAGE` waits for its lock (`lock_wait_timeout`).
pub const DEFAULT_LOCK_WAIT_TIMEOUT_SECS: u64 = 5;
/// Bounds of `lock-wait-timeout-secs`.
pub const LOCK_WAIT_RANGE_SECS: std::ops::RangeInclusive<u64> = 1..=600;
/// How long the backup stages are held at most when no Thaw or Abort comes.
pub const DEFAULT_MAX_HOLD_SECS: u64 = 60;
/// Bounds of `max-hold-secs`.
pub const MAX_HOLD_RANGE_SECS: std::ops::RangeInclusive<u64> = 1..=3600;
/// Namespace of the writer ids derived from writer names (UUIDv5).
pub const WRITER_ID_NAMESPACE: Guid = Guid::from_u128(0x7d3c_2a91_5e4f_4b0a_8c6e_93f1_a2d4_0c57);

/// The configuration file, as written.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MariadbWriterConfig {
    /// The writer's name, as `vssadmin list writers` shows it.
    #[serde(default = "default_name")]
    pub name: String,
    /// The writer class id; default derived from the name.
    #[serde(default)]
    pub writer_id: Option<Guid>,
    /// Longest time the backup stages are held without Thaw or Abort.
    #[serde(default = "default_max_hold")]
    pub max_hold_secs: u64,
    /// The server's Unix socket.
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// The account the writer logs in with.
    #[serde(default = "default_user")]
    pub user: String,
    /// A file holding the account's password (first line); none: no
    /// password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The component name of the instance.
    #[serde(default = "default_component")]
    pub component: String,
    /// Backslash-separated; empty (the default) for the root.
    #[serde(default)]
    pub logical_path: String,
    /// Shown to users of backup tools; default: "MariaDB instance (DATADIR)".
    #[serde(default)]
    pub caption: Option<String>,
    /// The systemd unit stopped and started around a restore.
    #[serde(default = "default_service")]
    pub service: String,
    /// How long each `BACKUP STAGE` statement waits for its lock.
    #[serde(default = "default_lock_wait")]
    pub lock_wait_timeout_secs: u64,
    /// The file this came from (set by the loaders), for messages.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

fn default_name() -> String {
    DEFAULT_NAME.to_owned()
}
fn default_max_hold() -> u64 {
    DEFAULT_MAX_HOLD_SECS
}
fn default_socket() -> PathBuf {
    PathBuf::from(DEFAULT_SOCKET)
}
fn default_user() -> String {
    DEFAULT_USER.to_owned()
}
fn default_component() -> String {
    DEFAULT_COMPONENT.to_owned()
}
fn default_service() -> String {
    DEFAULT_SERVICE.to_owned()
}
fn default_lock_wait() -> u64 {
    DEFAULT_LOCK_WAIT_TIMEOUT_SECS
}

impl Default for MariadbWriterConfig {
    fn default() -> Self {
        MariadbWriterConfig {
            name: default_name(),
            writer_id: None,
            max_hold_secs: DEFAULT_MAX_HOLD_SECS,
            socket: default_socket(),
            user: default_user(),
            password_file: None,
            component: default_component(),
            logical_path: String::new(),
            caption: None,
            service: default_service(),
            lock_wait_timeout_secs: DEFAULT_LOCK_WAIT_TIMEOUT_SECS,
            source: None,
        }
    }
}

impl MariadbWriterConfig {
    /// The configured id, or one derived from the name.
    pub fn writer_id(&self) -> Guid {
        self.writer_id
            .unwrap_or_else(|| Guid::derived(WRITER_ID_NAMESPACE, self.name.as_bytes()))
    }

    pub fn max_hold(&self) -> Duration {
        Duration::from_secs(self.max_hold_secs)
    }

    pub fn lock_wait_timeout(&self) -> Duration {
        Duration::from_secs(self.lock_wait_timeout_secs)
    }

    /// `logical_path\component`, or the component at the root.
    pub fn full_path(&self) -> String {
        vss_types::documents::wmd::full_path(&self.logical_path, &self.component)
    }

    /// The file name for messages (`<memory>` if not loaded from a file).
    pub fn source_path(&self) -> PathBuf {
        self.source
            .clone()
            .unwrap_or_else(|| PathBuf::from("<memory>"))
    }

    /// The password from `password-file` (its first line), or none.
    pub fn password(&self) -> Result<Option<String>, String> {
        let Some(p) = &self.password_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(p)
            .map_err(|e| format!("cannot read the password file {}: {e}", p.display()))?;
        Ok(Some(text.lines().next().unwrap_or("").to_owned()))
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
            return Err(FILE.error(file, "writer-id", "the null id is not a writer id"));
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
        if !LOCK_WAIT_RANGE_SECS.contains(&self.lock_wait_timeout_secs) {
            return Err(FILE.error(
                file,
                "lock-wait-timeout-secs",
                format!(
                    "{} is out of range: {}..={} seconds",
                    self.lock_wait_timeout_secs,
                    LOCK_WAIT_RANGE_SECS.start(),
                    LOCK_WAIT_RANGE_SECS.end()
                ),
            ));
        }
        if self.lock_wait_timeout_secs >= self.max_hold_secs {
            return Err(FILE.error(
                file,
                "lock-wait-timeout-secs",
                format!(
                    "{} s does not fit in max-hold-secs ({} s)",
                    self.lock_wait_timeout_secs, self.max_hold_secs
                ),
            ));
        }
        check_path(file, "socket", &self.socket)?;
        if let Some(p) = &self.password_file {
            check_path(file, "password-file", p)?;
        }
        if self.user.trim().is_empty() {
            return Err(FILE.error(file, "user", "the user name is empty"));
        }
        check_text(file, "user", "the user name", &self.user)?;
        if self.component.trim().is_empty() {
            return Err(FILE.error(file, "component", "the component name is empty"));
        }
        if self.component.contains('\\') {
            return Err(FILE.error(
                file,
                "component",
                format!(
                    "component name '{}' contains a backslash; put the path in `logical-path`",
                    self.component
                ),
            ));
        }
        check_text(file, "component", "the component name", &self.component)?;
        if let Some(c) = &self.caption {
            check_text(file, "caption", "the caption", c)?;
        }
        if self.service.trim().is_empty() || self.service.contains(['/', ' ']) {
            return Err(FILE.error(
                file,
                "service",
                format!("{:?} is not a systemd unit name", self.service),
            ));
        }
        check_text(file, "service", "the service name", &self.service)?;
        // Whatever else the document rules refuse (logical path syntax,
        // characters) is caught by building it.
        crate::metadata::writer_metadata(self, Guid::NULL, &crate::Layout::example())
            .map_err(|e| FILE.error(file, "", e.message))?;
        Ok(())
    }
}

fn check_path(file: &Path, field: &str, p: &Path) -> Result<(), ConfigError> {
    let shown = p.display().to_string();
    check_text(file, field, "the path", &shown)?;
    if !p.is_absolute() {
        return Err(FILE.error(
            file,
            field,
            format!("'{shown}' is not an absolute path (it must start with /)"),
        ));
    }
    if p.components()
        .any(|c| matches!(c, Component::CurDir | Component::ParentDir))
        || shown.ends_with('/')
    {
        return Err(FILE.error(
            file,
            field,
            format!("'{shown}' is not a plain file path (no `.` or `..` segments, no trailing /)"),
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
    writer: "MariaDB writer",
    program: "vss-writer-mariadb",
    create_hint:
        "with the server's socket and the writer's account (example: dist/vss/mariadb-writer.toml)",
};

/// Reads and validates the configuration file.
pub fn load(path: &Path) -> Result<MariadbWriterConfig, ConfigError> {
    parse(&FILE.read(path)?, path)
}

/// Parses and validates the configuration's text; `file` names it in
/// errors.
pub fn parse(text: &str, file: &Path) -> Result<MariadbWriterConfig, ConfigError> {
    let mut cfg: MariadbWriterConfig = FILE.parse(text, file)?;
    cfg.source = Some(file.to_owned());
    cfg.validate()?;
    Ok(cfg)
}
