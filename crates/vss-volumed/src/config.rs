//! The volume server's own file: what vssd registered (`add volume`) plus
//! what changed since (shadow storage placement, a revert in progress).
//! Rewritten atomically by the server; read at every start, so the volume
//! comes back the same after a restart or a reboot.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct VolumeConfig {
    /// 32 hex digits.
    pub volume_id: String,
    /// Block device or image file holding the live filesystem.
    pub device: PathBuf,
    pub mount_point: PathBuf,
    pub fs_type: String,
    /// Control socket and the image directory live here (root only).
    pub run_dir: PathBuf,
    #[serde(default)]
    pub storage: Option<StorageConfig>,
    /// Shadow being reverted to; a restart finishes the revert before the
    /// filesystem is mounted again.
    #[serde(default)]
    pub revert_pending: Option<String>,
    /// Most shadows kept (1–512; VSS: 64).
    #[serde(default = "default_max_shadows")]
    pub max_shadows: u32,
    /// At the limit, delete the oldest shadow for a new one instead of
    /// refusing it (`0x80042317`), like Windows' MaxShadowCopies.
    #[serde(default)]
    pub delete_oldest_at_limit: bool,
    /// When no write came for a while, move preserved copies into chunk
    /// order (`CowVolume::reorder_copies`), so shadows read sequentially
    /// read shadow storage sequentially.
    #[serde(default = "default_true")]
    pub reorder_copies_when_idle: bool,
}

fn default_true() -> bool {
    true
}

pub const DEFAULT_MAX_SHADOWS: u32 = 64;

fn default_max_shadows() -> u32 {
    DEFAULT_MAX_SHADOWS
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct StorageConfig {
    pub dir: PathBuf,
}

impl VolumeConfig {
    pub fn load(path: &Path) -> anyhow::Result<VolumeConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Writes to a temporary file, syncs it and renames it over `path`.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let text = toml::to_string(self).map_err(std::io::Error::other)?;
        let tmp = path.with_extension("toml.new");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    pub fn socket_path(&self) -> PathBuf {
        self.run_dir.join("control.sock")
    }

    pub fn images_dir(&self) -> PathBuf {
        self.run_dir.join("images")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_unknown_keys() {
        let c = VolumeConfig {
            volume_id: "0".repeat(32),
            device: "/dev/vdb".into(),
            mount_point: "/srv".into(),
            fs_type: "xfs".into(),
            run_dir: "/run/vss/volumes/x".into(),
            storage: Some(StorageConfig {
                dir: "/var/lib/vss/storage/x".into(),
            }),
            revert_pending: None,
            max_shadows: 64,
            delete_oldest_at_limit: false,
            reorder_copies_when_idle: false,
        };
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.toml");
        c.save(&p).unwrap();
        assert_eq!(VolumeConfig::load(&p).unwrap(), c);
        // A file written before the setting existed: reordering is on.
        std::fs::write(
            &p,
            "volume-id = 'x'\ndevice = '/d'\nmount-point = '/m'\nfs-type = 'xfs'\nrun-dir = '/r'\n",
        )
        .unwrap();
        assert!(VolumeConfig::load(&p).unwrap().reorder_copies_when_idle);
        std::fs::write(&p, "volume-id = 'x'\nbogus = 1\n").unwrap();
        assert!(VolumeConfig::load(&p).is_err());
    }
}
