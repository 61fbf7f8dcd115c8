//! Shadow copies, snapshot sets, contexts and attributes (`VSS_SNAPSHOT_PROP`).

use serde::{Deserialize, Serialize};

use crate::guid::Guid;

/// `VSS_VOLUME_SNAPSHOT_ATTRIBUTES` bits.
pub mod attr {
    pub const PERSISTENT: u32 = 0x1;
    pub const NO_AUTORECOVERY: u32 = 0x2;
    pub const CLIENT_ACCESSIBLE: u32 = 0x4;
    pub const NO_AUTO_RELEASE: u32 = 0x8;
    pub const NO_WRITERS: u32 = 0x10;
    pub const TRANSPORTABLE: u32 = 0x20;
    pub const NOT_SURFACED: u32 = 0x40;
    pub const NOT_TRANSACTED: u32 = 0x80;
    pub const HARDWARE_ASSISTED: u32 = 0x1_0000;
    pub const DIFFERENTIAL: u32 = 0x2_0000;
    pub const PLEX: u32 = 0x4_0000;
    pub const IMPORTED: u32 = 0x8_0000;
    pub const EXPOSED_LOCALLY: u32 = 0x10_0000;
    pub const EXPOSED_REMOTELY: u32 = 0x20_0000;
    pub const AUTORECOVER: u32 = 0x40_0000;
    pub const ROLLBACK_RECOVERY: u32 = 0x80_0000;
    pub const DELAYED_POSTSNAPSHOT: u32 = 0x100_0000;
    pub const TXF_RECOVERY: u32 = 0x200_0000;
    pub const FILE_SHARE: u32 = 0x400_0000;

    /// The words vssadmin prints on the `Attributes:` line, in its order.
    pub const WORDS: &[(u32, &str)] = &[
        (PERSISTENT, "Persistent"),
        (CLIENT_ACCESSIBLE, "Client-accessible"),
        (NO_AUTO_RELEASE, "No auto release"),
        (NO_WRITERS, "No writers"),
        (TRANSPORTABLE, "Transportable"),
        (NOT_SURFACED, "Not surfaced"),
        (NOT_TRANSACTED, "Not transacted"),
        (HARDWARE_ASSISTED, "Hardware assisted"),
        (DIFFERENTIAL, "Differential"),
        (PLEX, "Plex"),
        (IMPORTED, "Imported"),
        (EXPOSED_LOCALLY, "Exposed locally"),
        (EXPOSED_REMOTELY, "Exposed remotely"),
        (AUTORECOVER, "Auto recovered"),
    ];

    /// `Persistent, Client-accessible, …` for an attribute mask.
    pub fn describe(mask: u32) -> String {
        WORDS
            .iter()
            .filter(|(bit, _)| mask & bit != 0)
            .map(|(_, w)| *w)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `VSS_SNAPSHOT_CONTEXT`: what kind of shadow copy is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotContext {
    /// Non-persistent, with writers; released when the requestor goes away.
    Backup,
    FileShareBackup,
    NasRollback,
    AppRollback,
    ClientAccessible,
    ClientAccessibleWriters,
}

impl SnapshotContext {
    pub fn value(self) -> u32 {
        match self {
            SnapshotContext::Backup => 0x00,
            SnapshotContext::FileShareBackup => 0x10,
            SnapshotContext::NasRollback => 0x19,
            SnapshotContext::AppRollback => 0x09,
            SnapshotContext::ClientAccessible => 0x1D,
            SnapshotContext::ClientAccessibleWriters => 0x0D,
        }
    }

    pub fn from_value(v: u32) -> Option<Self> {
        [
            SnapshotContext::Backup,
            SnapshotContext::FileShareBackup,
            SnapshotContext::NasRollback,
            SnapshotContext::AppRollback,
            SnapshotContext::ClientAccessible,
            SnapshotContext::ClientAccessibleWriters,
        ]
        .into_iter()
        .find(|c| c.value() == v)
    }

    /// The attribute bits a context implies (the context value is itself a
    /// mask of PERSISTENT, CLIENT_ACCESSIBLE, NO_AUTO_RELEASE, NO_WRITERS).
    pub fn attributes(self) -> u32 {
        self.value()
    }

    pub fn is_persistent(self) -> bool {
        self.value() & attr::PERSISTENT != 0
    }

    pub fn uses_writers(self) -> bool {
        self.value() & attr::NO_WRITERS == 0
    }

    /// The `Type:` word of `vssadmin list shadows`.
    pub fn type_label(self) -> &'static str {
        match self {
            SnapshotContext::Backup => "Backup",
            SnapshotContext::FileShareBackup => "FileShareBackup",
            SnapshotContext::NasRollback => "DataVolumeRollback",
            SnapshotContext::AppRollback => "ApplicationRollback",
            SnapshotContext::ClientAccessible => "ClientAccessible",
            SnapshotContext::ClientAccessibleWriters => "ClientAccessibleWriters",
        }
    }
}

/// `VSS_SNAPSHOT_STATE`, as far as a finished shadow is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShadowState {
    Created,
    /// The provider lost the shadow (its storage vanished or was
    /// invalidated). Listed so it is never silently dropped.
    Lost,
}

/// `VSS_SNAPSHOT_PROP`: one shadow copy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowProp {
    pub shadow_id: Guid,
    pub set_id: Guid,
    /// Volumes in the set at creation time.
    pub count: u32,
    /// Where the shadow can be read by root: a directory (btrfs subvolume)
    /// or a block device.
    pub device_object: String,
    /// Mount point of the original volume.
    pub original_volume: String,
    /// Volume GUID path of the original volume.
    pub original_volume_name: String,
    pub originating_machine: String,
    pub service_machine: String,
    /// Where the shadow is exposed, if it is.
    pub exposed_name: Option<String>,
    pub exposed_path: Option<String>,
    pub provider_id: Guid,
    pub context: SnapshotContext,
    pub attributes: u32,
    /// Creation time, milliseconds since the Unix epoch, UTC.
    pub created_unix_ms: i64,
    pub state: ShadowState,
    /// How long writes were held for the cut, in microseconds.
    pub hold_micros: u64,
    /// Why the shadow is lost, when it is.
    pub lost_reason: Option<String>,
}

/// `VSS_TIMESTAMP`: 100 ns units since 1601-01-01 UTC.
pub fn filetime_from_unix_ms(ms: i64) -> i64 {
    const EPOCH_DIFF_100NS: i64 = 116_444_736_000_000_000;
    ms * 10_000 + EPOCH_DIFF_100NS
}

/// Hard limits from VSS.
pub mod limits {
    /// At most 64 volumes in one snapshot set (0x80042312).
    pub const MAX_VOLUMES_PER_SET: usize = 64;
    /// At most 64 shadows per volume (0x80042317).
    pub const MAX_SHADOWS_PER_VOLUME: usize = 64;
    /// Writes are never held longer than this (0x80042314).
    pub const HOLD_LIMIT_MS: u64 = 10_000;
    /// Default writer Freeze→Thaw window.
    pub const DEFAULT_WRITER_TIMEOUT_SECS: u64 = 60;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_attributes() {
        let c = SnapshotContext::ClientAccessibleWriters;
        assert!(c.is_persistent() && c.uses_writers());
        assert_eq!(
            attr::describe(c.attributes() | attr::DIFFERENTIAL),
            "Persistent, Client-accessible, No auto release, Differential"
        );
        assert!(!SnapshotContext::Backup.is_persistent());
        assert!(!SnapshotContext::ClientAccessible.uses_writers());
        for v in [0, 0x10, 0x19, 0x09, 0x1D, 0x0D] {
            assert_eq!(SnapshotContext::from_value(v).unwrap().value(), v);
        }
    }
}
