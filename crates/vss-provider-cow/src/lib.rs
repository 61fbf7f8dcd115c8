//! The software provider: block-level copy-on-write shadow copies of a
//! volume whatever its filesystem, the counterpart of the Windows system
//! provider.
//!
//! An admin enables it per volume (`vssadmin add volume`): [`CowManager`]
//! registers the volume and starts a `vss-volumed` for it, which from then
//! on serves the filesystem's device through the engine and mounts it where
//! the admin asked. [`CowProvider`] is what the coordinator sees: the hold is
//! FIFREEZE of that filesystem, the cut is the engine's (asked over the
//! volume server's control socket, with the free space GETFSMAP reports so
//! that free blocks are never copied), and a shadow is a read-only image
//! file that `expose` loop-attaches and mounts read-only.

mod manager;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use vss_provider::{Committed, Health, HoldMethod, Provider, ProviderShadow};
use vss_sys::loopdev::{self, LoopOptions};
use vss_sys::MountFlags;
use vss_types::{attr, Guid, ProviderInfo, ProviderType, Volume, VssCode, VssError, VssResult};
use vss_volumed::protocol::{Reply, Request};

pub use manager::{CowManager, VolumeEntry};

/// `{5f3c2a8e-9d41-4e07-b6a2-7c1d0e4f9a63}`: made up for this project and
/// fixed forever (stored with every shadow in the catalog).
pub const COW_PROVIDER_ID: Guid = Guid::from_u128(0x5f3c_2a8e_9d41_4e07_b6a2_7c1d_0e4f_9a63);

/// Above the btrfs provider (100): a volume the admin put under the
/// software provider is meant to be shadowed by it.
pub const COW_PREFERENCE: u32 = 150;

/// Time a cut may take over the control socket; the hold limit bounds it
/// anyway.
const CUT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct CowProvider {
    manager: Arc<CowManager>,
}

impl CowProvider {
    pub fn new(manager: Arc<CowManager>) -> Self {
        CowProvider { manager }
    }

    fn entry(&self, volume: &Volume) -> VssResult<VolumeEntry> {
        self.manager.entry_for(&volume.mount_point).ok_or_else(|| {
            VssError::new(
                VssCode::VolumeNotSupportedByProvider,
                format!(
                    "{} is not a software shadow copy volume",
                    volume.mount_point
                ),
            )
            .with_hint("Enable it first: `vssadmin add volume /device=DEVICE /mount=DIR`.")
        })
    }

    fn entry_of_shadow(&self, shadow: &ProviderShadow) -> VssResult<VolumeEntry> {
        let data: ShadowData = serde_json::from_str(&shadow.provider_data).map_err(|e| {
            VssError::new(
                VssCode::UnexpectedProviderError,
                format!(
                    "shadow {} has unreadable provider data: {e}",
                    shadow.shadow_id
                ),
            )
        })?;
        self.manager.entry_by_id(&data.volume_id).ok_or_else(|| {
            VssError::new(
                VssCode::ObjectNotFound,
                format!(
                    "the software volume of shadow {} ({}) is no longer registered",
                    shadow.shadow_id, shadow.volume.mount_point
                ),
            )
        })
    }
}

/// What the catalog keeps per shadow for this provider.
#[derive(serde::Serialize, serde::Deserialize)]
struct ShadowData {
    volume_id: String,
    image: String,
    fs_type: String,
}

fn hex(id: Guid) -> String {
    vss_volumed::protocol::id_text(id.as_uuid().as_u128())
}

impl Provider for CowProvider {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            provider_id: COW_PROVIDER_ID,
            name: "vss software copy-on-write provider".into(),
            provider_type: ProviderType::System,
            version: env!("CARGO_PKG_VERSION").into(),
            supports: "ext4, xfs and btrfs volumes enabled with `vssadmin add volume`".into(),
        }
    }

    fn supports(&self, volume: &Volume) -> Result<(), String> {
        let entry = self.entry(volume).map_err(|e| e.message)?;
        // The mounted device must be the loop device on this server's live
        // image, not something mounted over the mount point since.
        let backing = loopdev::backing_file(Path::new(&volume.device))
            .ok()
            .flatten();
        match backing {
            Some(b) if b == entry.config.images_dir().join("live") => Ok(()),
            _ => Err(format!(
                "{} is registered for software shadow copies but is not served by its volume server now",
                volume.mount_point
            )),
        }
    }

    fn preference(&self) -> u32 {
        COW_PREFERENCE
    }

    fn hold_method(&self, _volume: &Volume) -> HoldMethod {
        HoldMethod::Freeze
    }

    fn prepare(&self, volume: &Volume, _shadow_id: Guid) -> VssResult<()> {
        let entry = self.entry(volume)?;
        let status = self.manager.status(&entry)?;
        if status.revert.as_ref().is_some_and(|r| r.outcome.is_none()) {
            return Err(VssError::new(
                VssCode::RevertInProgress,
                format!("{} is being reverted", volume.mount_point),
            ));
        }
        if status.storage.is_none() {
            // Like Windows: the first shadow of a volume without an
            // association gets the default one.
            self.manager
                .add_default_storage(&entry, status.size_bytes)?;
        }
        Ok(())
    }

    fn commit(&self, volume: &Volume, shadow_id: Guid) -> VssResult<Committed> {
        let entry = self.entry(volume)?;
        // The filesystem is frozen: its free space is stable and is exactly
        // what needs no copy.
        let free = match vss_sys::fsmap::free_extents(Path::new(&volume.mount_point)) {
            Ok(Some(f)) => f,
            Ok(None) => Vec::new(),
            Err(e) => {
                tracing::warn!(volume = %volume.mount_point, error = %e, "GETFSMAP failed; every chunk will be preserved");
                Vec::new()
            }
        };
        let created_unix_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        let reply = self.manager.call(
            &entry,
            &Request::Cut {
                shadow_id: hex(shadow_id),
                free,
                created_unix_ns,
            },
            CUT_TIMEOUT,
        )?;
        let Reply::Shadow(s) = reply else {
            return Err(VssError::new(
                VssCode::UnexpectedProviderError,
                format!("volume server answered a cut with {reply:?}"),
            ));
        };
        let image = s.image.display().to_string();
        Ok(Committed {
            device_object: image.clone(),
            attributes: attr::DIFFERENTIAL,
            provider_data: serde_json::to_string(&ShadowData {
                volume_id: entry.config.volume_id.clone(),
                image,
                fs_type: entry.config.fs_type.clone(),
            })
            .expect("plain struct serializes"),
        })
    }

    fn abort(&self, volume: &Volume, shadow_id: Guid) {
        if let Ok(entry) = self.entry(volume) {
            let _ = self.manager.call(
                &entry,
                &Request::Delete {
                    shadow_id: hex(shadow_id),
                },
                CUT_TIMEOUT,
            );
        }
    }

    fn delete(&self, shadow: &ProviderShadow) -> VssResult<()> {
        let entry = match self.entry_of_shadow(shadow) {
            Ok(e) => e,
            // The whole volume is gone, and its shadows with it.
            Err(e) if e.code == VssCode::ObjectNotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        match self.manager.call(
            &entry,
            &Request::Delete {
                shadow_id: hex(shadow.shadow_id),
            },
            Duration::from_secs(30),
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.code == VssCode::ObjectNotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn health(&self, shadow: &ProviderShadow) -> Health {
        let entry = match self.entry_of_shadow(shadow) {
            Ok(e) => e,
            Err(e) => return Health::Lost(e.message),
        };
        let status = match self.manager.status(&entry) {
            Ok(s) => s,
            Err(e) => return Health::Lost(e.message),
        };
        let id = hex(shadow.shadow_id);
        match status.shadows.iter().find(|s| s.shadow_id == id) {
            Some(s) => match &s.lost {
                None => Health::Present,
                Some(reason) => Health::Lost(format!("shadow storage reports it lost: {reason}")),
            },
            None => {
                let why = status
                    .evicted
                    .iter()
                    .find(|e| e.shadow_id == id)
                    .map_or("it is no longer in its shadow storage".to_owned(), |e| {
                        format!("it was deleted to make room because {}", e.reason)
                    });
                Health::Lost(why)
            }
        }
    }

    fn expose(&self, shadow: &ProviderShadow, target: &Path) -> VssResult<()> {
        let data: ShadowData = serde_json::from_str(&shadow.provider_data).map_err(|e| {
            VssError::new(
                VssCode::UnexpectedProviderError,
                format!("bad provider data: {e}"),
            )
        })?;
        if let Health::Lost(reason) = self.health(shadow) {
            return Err(VssError::new(
                VssCode::ObjectNotFound,
                format!("shadow {} cannot be exposed: {reason}", shadow.shadow_id),
            ));
        }
        let dev = loopdev::attach(
            Path::new(&data.image),
            &LoopOptions {
                read_only: true,
                autoclear: true,
                ..LoopOptions::default()
            },
        )
        .map_err(|e| {
            VssError::new(
                VssCode::UnexpectedProviderError,
                format!("cannot attach a loop device to {}: {e}", data.image),
            )
        })?;
        // Replay nothing into the shadow: ext4 without its journal, xfs
        // without log recovery and with a new-uuid tolerance (the live
        // filesystem has the same uuid); btrfs gives the copy a temporary
        // fsid by itself.
        let options = match data.fs_type.as_str() {
            "ext4" | "ext3" => "noload",
            "xfs" => "norecovery,nouuid",
            _ => "",
        };
        vss_sys::mount_fs(
            dev.path(),
            target,
            &data.fs_type,
            MountFlags {
                read_only: true,
                nosuid: true,
                nodev: true,
                noexec: false,
            },
            options,
        )
        .map_err(|e| {
            VssError::new(
                VssCode::UnexpectedProviderError,
                format!(
                    "cannot mount shadow {} ({}) at {}: {e}",
                    shadow.shadow_id,
                    data.fs_type,
                    target.display()
                ),
            )
        })?;
        // The mount holds the loop device; autoclear frees it at unmount.
        drop(dev);
        tracing::info!(shadow = %shadow.shadow_id, at = %target.display(), "shadow exposed read-only");
        Ok(())
    }

    fn writable_during_cut(&self, volume: &Volume) -> Vec<std::path::PathBuf> {
        self.entry(volume)
            .ok()
            .and_then(|e| self.manager.status(&e).ok())
            .and_then(|s| s.storage)
            .map(|st| vec![st.dir])
            .unwrap_or_default()
    }

    fn shadow_limit(&self, volume: &Volume) -> Option<(u32, bool)> {
        self.entry(volume)
            .ok()
            .map(|e| (e.config.max_shadows, e.config.delete_oldest_at_limit))
    }

    fn evicted(&self) -> Vec<(Guid, String)> {
        self.manager
            .entries()
            .iter()
            .filter_map(|e| self.manager.status(e).ok())
            .flat_map(|s| s.evicted)
            .filter_map(|e| {
                vss_volumed::protocol::parse_id(&e.shadow_id)
                    .map(|id| (Guid::from_u128(id), format!("shadow storage: {}", e.reason)))
            })
            .collect()
    }

    fn unexpose(&self, shadow: &ProviderShadow, target: &Path) -> VssResult<()> {
        vss_sys::unmount(target).map_err(|e| vss_provider::unexpose_error(shadow, target, e))
    }
}
