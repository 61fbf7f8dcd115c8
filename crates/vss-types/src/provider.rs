//! Providers and volumes as the service describes them.

use serde::{Deserialize, Serialize};

use crate::guid::Guid;

/// `VSS_PROVIDER_TYPE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderType {
    Unknown,
    System,
    Software,
    Hardware,
    FileShare,
}

impl ProviderType {
    pub fn value(self) -> u32 {
        match self {
            ProviderType::Unknown => 0,
            ProviderType::System => 1,
            ProviderType::Software => 2,
            ProviderType::Hardware => 3,
            ProviderType::FileShare => 4,
        }
    }

    /// The word `vssadmin list providers` prints after `Provider type:`.
    pub fn label(self) -> &'static str {
        match self {
            ProviderType::Unknown => "Unknown",
            ProviderType::System => "System",
            ProviderType::Software => "Software",
            ProviderType::Hardware => "Hardware",
            ProviderType::FileShare => "FileShare",
        }
    }
}

/// A registered provider (`vssadmin list providers`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderInfo {
    pub name: String,
    pub provider_type: ProviderType,
    pub provider_id: Guid,
    pub version: String,
    /// Filesystems or device kinds it can snapshot, for the admin's eye.
    pub supports: String,
}

/// A mounted filesystem as the service sees it when choosing a provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// Mount point (the root of the filesystem), e.g. `/mnt/data`.
    pub mount_point: String,
    /// The mounted source, e.g. `/dev/loop3`.
    pub device: String,
    /// Filesystem type as in /proc/self/mountinfo: `btrfs`, `xfs`, `ext4`…
    pub fs_type: String,
    /// Filesystem UUID, when it could be read.
    pub fs_uuid: Option<String>,
    /// For btrfs: the mounted subvolume path (`/`, `/@home`…).
    pub subvolume: Option<String>,
    pub read_only: bool,
    /// Derived from `fs_uuid` (or the device when there is none).
    pub volume_guid: Guid,
}

impl Volume {
    /// `\\?\Volume{GUID}\`.
    pub fn volume_name(&self) -> String {
        volume_name(self.volume_guid)
    }
}

/// A volume that shadow copies could be made of (`vssadmin list volumes`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfo {
    /// Mount point, e.g. `/mnt/data`.
    pub mount_point: String,
    /// `\\?\Volume{GUID}\`, stable across mounts (derived from the
    /// filesystem UUID).
    pub volume_name: String,
    pub volume_guid: Guid,
    pub fs_type: String,
    pub device: String,
    /// Which provider would be chosen, if any.
    pub provider: Option<String>,
}

/// Namespace for volume GUIDs derived from filesystem UUIDs.
pub const VOLUME_GUID_NAMESPACE: Guid = Guid::from_u128(0x6a1f_3c2e_8b4d_4e57_9c1a_52d0_e7b3_a914);

/// The stable volume GUID of a filesystem, from its UUID (or, lacking one,
/// its device path).
pub fn volume_guid(fs_uuid_or_device: &str) -> Guid {
    Guid::derived(VOLUME_GUID_NAMESPACE, fs_uuid_or_device.as_bytes())
}

/// `\\?\Volume{GUID}\` for a volume GUID.
pub fn volume_name(guid: Guid) -> String {
    format!("\\\\?\\Volume{guid}\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_guid_is_stable() {
        let a = volume_guid("0b5e7d1c-1111-2222-3333-444455556666");
        assert_eq!(a, volume_guid("0b5e7d1c-1111-2222-3333-444455556666"));
        assert_ne!(a, volume_guid("other"));
        assert!(volume_name(a).starts_with("\\\\?\\Volume{"));
        assert!(volume_name(a).ends_with("}\\"));
    }
}
