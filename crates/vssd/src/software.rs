//! Shadow storage and software volumes behind the coordinator's
//! [`SoftwareVolumes`] trait: [`CowVolumes`], a thin adapter over
//! [`vss_provider_cow::CowManager`], and [`StorageRouter`], which sends the
//! storage verbs of logical volumes to the LVM provider instead.

use std::path::PathBuf;
use std::sync::Arc;

use vss_core::SoftwareVolumes;
use vss_provider_cow::CowManager;
use vss_provider_lvm::LvmProvider;
use vss_types::{
    Guid, MaxSize, RevertState, RevertStatus, ShadowStorageInfo, SoftwareVolumeInfo, VssCode,
    VssError, VssResult,
};
use vss_volumed::protocol::{id_text, parse_id};

pub struct CowVolumes {
    pub manager: Arc<CowManager>,
}

/// `vss-volumed`: `$VSS_VOLUMED`, else beside this executable, else the
/// packaged location.
pub fn volumed_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("VSS_VOLUMED") {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe() {
        let sibling = exe.with_file_name("vss-volumed");
        if sibling.exists() {
            return sibling;
        }
    }
    PathBuf::from("/usr/libexec/vss/vss-volumed")
}

impl SoftwareVolumes for CowVolumes {
    fn add_volume(&self, device: &str, mount: &str) -> VssResult<SoftwareVolumeInfo> {
        self.manager.add_volume(device, mount)
    }

    fn delete_volume(&self, for_volume: &str) -> VssResult<()> {
        self.manager.delete_volume(for_volume)
    }

    fn list_volumes(&self) -> VssResult<Vec<SoftwareVolumeInfo>> {
        self.manager.list_volumes()
    }

    fn list_storage(
        &self,
        for_volume: Option<&str>,
        on_volume: Option<&str>,
    ) -> VssResult<Vec<ShadowStorageInfo>> {
        self.manager.list_storage(for_volume, on_volume)
    }

    fn add_storage(&self, for_volume: &str, on_volume: &str, max: MaxSize) -> VssResult<()> {
        self.manager.add_storage(for_volume, on_volume, max)
    }

    fn resize_storage(&self, for_volume: &str, on_volume: &str, max: MaxSize) -> VssResult<()> {
        self.manager.resize_storage(for_volume, on_volume, max)
    }

    fn delete_storage(&self, for_volume: &str, on_volume: Option<&str>) -> VssResult<()> {
        self.manager.delete_storage(for_volume, on_volume)
    }

    fn revert(&self, shadow_id: Guid, force_dismount: bool) -> VssResult<()> {
        let wanted = id_text(shadow_id.as_uuid().as_u128());
        let entry = self
            .manager
            .entries()
            .into_iter()
            .find(|e| {
                self.manager
                    .status(e)
                    .is_ok_and(|s| s.shadows.iter().any(|sh| sh.shadow_id == wanted))
            })
            .ok_or_else(|| {
                VssError::new(
                    VssCode::VolumeNotSupported,
                    format!("shadow {shadow_id} is not a software provider shadow; only those can be reverted"),
                )
            })?;
        self.manager.revert(&entry, shadow_id, force_dismount)
    }

    fn query_reverts(&self, for_volume: Option<&str>) -> VssResult<Vec<RevertStatus>> {
        let wanted = for_volume.and_then(|f| self.manager.entry_for(f));
        if for_volume.is_some() && wanted.is_none() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for e in self.manager.entries() {
            if wanted
                .as_ref()
                .is_some_and(|w| w.config.volume_id != e.config.volume_id)
            {
                continue;
            }
            let Ok(status) = self.manager.status(&e) else {
                continue;
            };
            let Some(r) = status.revert else { continue };
            out.push(RevertStatus {
                shadow_id: Guid::from_u128(parse_id(&r.shadow_id).unwrap_or(0)),
                for_volume: e.config.mount_point.display().to_string(),
                state: match r.outcome {
                    None => RevertState::Running,
                    Some(Ok(())) => RevertState::Completed,
                    Some(Err(message)) => RevertState::Failed { message },
                },
                total_chunks: r.total_chunks,
                done_chunks: r.done_chunks,
                started_unix: r.started_unix,
            });
        }
        Ok(out)
    }
}

/// Storage verbs for a logical volume go to the LVM provider (its shadow
/// storage is the volume group's extents); everything else, and the
/// software volumes themselves, to the copy-on-write provider.
pub struct StorageRouter {
    pub cow: Arc<dyn SoftwareVolumes>,
    pub lvm: Option<Arc<LvmProvider>>,
}

impl StorageRouter {
    fn lvm_for(&self, for_volume: &str) -> Option<&LvmProvider> {
        self.lvm.as_deref().filter(|l| l.owns_volume(for_volume))
    }
}

impl SoftwareVolumes for StorageRouter {
    fn add_volume(&self, device: &str, mount: &str) -> VssResult<SoftwareVolumeInfo> {
        self.cow.add_volume(device, mount)
    }

    fn delete_volume(&self, for_volume: &str) -> VssResult<()> {
        self.cow.delete_volume(for_volume)
    }

    fn list_volumes(&self) -> VssResult<Vec<SoftwareVolumeInfo>> {
        self.cow.list_volumes()
    }

    fn list_storage(
        &self,
        for_volume: Option<&str>,
        on_volume: Option<&str>,
    ) -> VssResult<Vec<ShadowStorageInfo>> {
        let mut all = self.cow.list_storage(for_volume, on_volume).or_else(|e| {
            // Without the software provider the LVM associations still list.
            if e.code == VssCode::NotSupported {
                Ok(Vec::new())
            } else {
                Err(e)
            }
        })?;
        if let Some(l) = &self.lvm {
            all.extend(l.list_storage(for_volume, on_volume)?);
        }
        Ok(all)
    }

    fn add_storage(&self, for_volume: &str, on_volume: &str, max: MaxSize) -> VssResult<()> {
        match self.lvm_for(for_volume) {
            Some(l) => l.add_storage(for_volume, on_volume, max),
            None => self.cow.add_storage(for_volume, on_volume, max),
        }
    }

    fn resize_storage(&self, for_volume: &str, on_volume: &str, max: MaxSize) -> VssResult<()> {
        match self.lvm_for(for_volume) {
            Some(l) => l.resize_storage(for_volume, on_volume, max),
            None => self.cow.resize_storage(for_volume, on_volume, max),
        }
    }

    fn delete_storage(&self, for_volume: &str, on_volume: Option<&str>) -> VssResult<()> {
        match self.lvm_for(for_volume) {
            Some(l) => l.delete_storage(for_volume, on_volume),
            None => self.cow.delete_storage(for_volume, on_volume),
        }
    }

    fn revert(&self, shadow_id: Guid, force_dismount: bool) -> VssResult<()> {
        match self.lvm.as_deref() {
            Some(l) if l.find_shadow(shadow_id).is_some() => l.revert(shadow_id, force_dismount),
            _ => self.cow.revert(shadow_id, force_dismount),
        }
    }

    fn query_reverts(&self, for_volume: Option<&str>) -> VssResult<Vec<RevertStatus>> {
        // LVM reverts finish inside the revert call; only the software
        // provider's run in the background.
        self.cow.query_reverts(for_volume)
    }
}
