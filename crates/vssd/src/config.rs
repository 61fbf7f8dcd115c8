//! `/etc/vss/vss.toml`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use vss_types::{limits, VssCode, VssError};

pub const DEFAULT_CONFIG: &str = "/etc/vss/vss.toml";

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Catalog and other state. Must not be on a volume the service freezes.
    pub state_dir: PathBuf,
    /// Exec-hook writer declarations (`*.toml`).
    pub writers_dir: PathBuf,
    /// Default Freeze→Thaw window of every writer (VSS: 60 s).
    pub writer_timeout_secs: u64,
    /// Longest write hold; at most 10 000 ms.
    pub hold_limit_ms: u64,
    /// Members of this group may create, delete and expose shadows, like
    /// Windows' Backup Operators. Root always may.
    pub operators_group: Option<String>,
    /// When set, only these uids may register writers (VssAccessControl).
    pub allowed_writer_uids: Option<Vec<u32>>,
    /// Per-writer settings by writer name.
    pub writers: HashMap<String, WriterSettings>,
    pub providers: ProviderSettings,
    /// Where volume servers of the software provider keep their control
    /// sockets and image directories (root only).
    pub volume_run_dir: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct WriterSettings {
    pub timeout_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ProviderSettings {
    pub btrfs: bool,
    /// The simulated provider (no data), for tests and demos of the
    /// sequence on filesystems no real provider supports yet.
    pub simulated: bool,
    pub simulated_commit_delay_ms: u64,
    /// The copy-on-write software provider (volumes enabled with
    /// `vssadmin add volume`).
    pub software: bool,
    /// Most shadow copies per software volume (1–512; VSS: 64).
    pub software_max_shadow_copies: u32,
    /// At that limit, delete the oldest shadow copy for the new one
    /// (Windows' MaxShadowCopies) instead of failing with 0x80042317.
    pub software_delete_oldest_at_limit: bool,
    /// The LVM provider (ext4 and xfs on logical volumes).
    pub lvm: bool,
    /// Percent full (data or metadata) at which a thin pool's oldest
    /// shadows are deleted, so live writes never meet a full pool.
    pub lvm_thin_pool_limit: u8,
    /// Percent of a thick snapshot's copy-on-write area in use at which it
    /// is extended (within the shadow storage maximum).
    pub lvm_extend_at: u8,
    /// How often fill levels are read, in milliseconds.
    pub lvm_poll_ms: u64,
}

impl Default for ProviderSettings {
    fn default() -> Self {
        ProviderSettings {
            btrfs: true,
            simulated: false,
            simulated_commit_delay_ms: 0,
            software: true,
            software_max_shadow_copies: 64,
            software_delete_oldest_at_limit: false,
            lvm: true,
            lvm_thin_pool_limit: 90,
            lvm_extend_at: 50,
            lvm_poll_ms: 250,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            state_dir: PathBuf::from("/var/lib/vss"),
            writers_dir: PathBuf::from("/etc/vss/writers.d"),
            writer_timeout_secs: limits::DEFAULT_WRITER_TIMEOUT_SECS,
            hold_limit_ms: limits::HOLD_LIMIT_MS,
            operators_group: None,
            allowed_writer_uids: None,
            writers: HashMap::new(),
            providers: ProviderSettings::default(),
            volume_run_dir: PathBuf::from("/run/vss/volumes"),
        }
    }
}

fn config_error(path: &Path, detail: impl std::fmt::Display) -> VssError {
    VssError::new(
        VssCode::InvalidArg,
        format!("configuration {}: {detail}", path.display()),
    )
    .with_hint("Fix the file (see docs/CONFIG.md for every setting) and start vssd again.")
}

impl Config {
    /// Reads the config; a missing default file means all defaults, a
    /// missing explicit file is an error.
    pub fn load(path: Option<&Path>) -> Result<Config, VssError> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(Config::default())
            }
            Err(e) => return Err(config_error(&path, e)),
        };
        let cfg: Config = toml::from_str(&text).map_err(|e| config_error(&path, e))?;
        cfg.validate(&path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<(), VssError> {
        if self.hold_limit_ms == 0 || self.hold_limit_ms > limits::HOLD_LIMIT_MS {
            return Err(config_error(
                path,
                format!(
                    "hold-limit-ms must be 1..={} (got {})",
                    limits::HOLD_LIMIT_MS,
                    self.hold_limit_ms
                ),
            ));
        }
        if self.writer_timeout_secs == 0 || self.writer_timeout_secs > 3600 {
            return Err(config_error(path, "writer-timeout-secs must be 1..=3600"));
        }
        for (name, w) in &self.writers {
            if let Some(t) = w.timeout_secs {
                if t == 0 || t > 3600 {
                    return Err(config_error(
                        path,
                        format!("writers.\"{name}\".timeout-secs must be 1..=3600"),
                    ));
                }
            }
        }
        if !self.state_dir.is_absolute() {
            return Err(config_error(path, "state-dir must be an absolute path"));
        }
        if !self.volume_run_dir.is_absolute() {
            return Err(config_error(
                path,
                "volume-run-dir must be an absolute path",
            ));
        }
        if !(1..=512).contains(&self.providers.software_max_shadow_copies) {
            return Err(config_error(
                path,
                format!(
                    "providers.software-max-shadow-copies must be 1..=512 (got {})",
                    self.providers.software_max_shadow_copies
                ),
            ));
        }
        let p = &self.providers;
        let percent_ok = |v: u8| (10..=99).contains(&v);
        if !percent_ok(p.lvm_thin_pool_limit) || !percent_ok(p.lvm_extend_at) {
            return Err(config_error(
                path,
                format!(
                    "providers.lvm-thin-pool-limit and providers.lvm-extend-at must be 10..=99 percent (got {} and {})",
                    p.lvm_thin_pool_limit, p.lvm_extend_at
                ),
            ));
        }
        if !(20..=10_000).contains(&p.lvm_poll_ms) {
            return Err(config_error(
                path,
                format!(
                    "providers.lvm-poll-ms must be 20..=10000 (got {})",
                    p.lvm_poll_ms
                ),
            ));
        }
        Ok(())
    }

    pub fn writer_timeouts(&self) -> HashMap<String, Duration> {
        self.writers
            .iter()
            .filter_map(|(n, w)| w.timeout_secs.map(|t| (n.clone(), Duration::from_secs(t))))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates() {
        let c: Config = toml::from_str(
            "state-dir = \"/tmp/x\"\nwriter-timeout-secs = 5\n[writers.\"pg\"]\ntimeout-secs = 20\n[providers]\nsimulated = true\n",
        )
        .unwrap();
        c.validate(Path::new("t")).unwrap();
        assert_eq!(c.writer_timeouts()["pg"], Duration::from_secs(20));
        assert!(toml::from_str::<Config>("bogus = 1").is_err());
        let bad: Config = toml::from_str("hold-limit-ms = 20000").unwrap();
        let e = bad.validate(Path::new("t")).unwrap_err();
        assert!(e.message.contains("hold-limit-ms"));
    }
}
