//! The seam between the service and the copy-on-write software provider
//! (the volsnap counterpart): software volumes, their shadow storage
//! associations ("diff areas") and reverts.
//!
//! vssd's `org.vss.Storage1` interface ends here, at [`SoftwareVolumes`].
//! The coordinator owns one implementation and calls it off the async
//! threads (every method may block on disk or on the volume server), after
//! checking what it can check without the provider: the caller's
//! arguments, and for a revert that the shadow exists, is not lost and was
//! made in a persistent context.
//!
//! Until the provider is plugged in, vssd uses [`NoSoftwareVolumes`]: the
//! lists are empty (nothing exists) and everything else fails with
//! `0x8004232F VSS_E_NOT_SUPPORTED`, saying why.

use vss_types::{
    Guid, MaxSize, RevertStatus, ShadowStorageInfo, SoftwareVolumeInfo, VssCode, VssError,
    VssResult,
};

/// What the copy-on-write provider does for vssd. Volume arguments are
/// paths as the admin gave them (vssadmin makes `/device=` and `/mount=`
/// absolute; `/for=` and `/on=` may be any path on the volume, or a
/// `\\?\Volume{…}\` name); resolving them is the implementation's job.
///
/// Errors follow `IVssDifferentialSoftwareSnapshotMgmt` and
/// `RevertToSnapshot` where Windows has an equivalent; the codes listed
/// per method are the expected ones, each with a message naming the volume
/// and a hint.
pub trait SoftwareVolumes: Send + Sync {
    /// Takes over `device` and mounts its filesystem at `mount` through the
    /// volume server (`vssadmin add volume`). `VSS_E_OBJECT_ALREADY_EXISTS`
    /// when the device or mount point is already a software volume;
    /// `VSS_E_VOLUME_IN_USE` when the device is mounted elsewhere;
    /// `VSS_E_VOLUME_NOT_SUPPORTED` when its filesystem cannot be served.
    fn add_volume(&self, device: &str, mount: &str) -> VssResult<SoftwareVolumeInfo>;

    /// Stops serving the volume mounted at `for_volume` and gives the
    /// device back (`vssadmin delete volume`); its shadow copies and shadow
    /// storage associations go with it. `VSS_E_OBJECT_NOT_FOUND` when it is
    /// not a software volume; `VSS_E_VOLUME_IN_USE` when a shadow of it is
    /// exposed or the filesystem is busy; `VSS_E_REVERT_IN_PROGRESS`.
    fn delete_volume(&self, for_volume: &str) -> VssResult<()>;

    /// Every software volume.
    fn list_volumes(&self) -> VssResult<Vec<SoftwareVolumeInfo>>;

    /// Shadow storage associations, all or those of one FOR or ON volume
    /// (both filters may be given).
    fn list_storage(
        &self,
        for_volume: Option<&str>,
        on_volume: Option<&str>,
    ) -> VssResult<Vec<ShadowStorageInfo>>;

    /// `vssadmin add shadowstorage` (`AddDiffArea`).
    /// `VSS_E_OBJECT_ALREADY_EXISTS` for an existing association;
    /// `VSS_E_MAXIMUM_DIFFAREA_ASSOCIATIONS_REACHED` when `for_volume`
    /// already has its storage elsewhere; `VSS_E_INSUFFICIENT_STORAGE` for
    /// a maximum below [`vss_types::min_shadow_storage`] (see
    /// [`MaxSize::resolve_checked`]) or an ON volume without the space;
    /// `VSS_E_OBJECT_NOT_FOUND` when `for_volume` is not a software volume.
    fn add_storage(&self, for_volume: &str, on_volume: &str, max: MaxSize) -> VssResult<()>;

    /// `vssadmin resize shadowstorage` (`ChangeDiffAreaMaximumSize`).
    /// `VSS_E_OBJECT_NOT_FOUND` without such an association;
    /// `VSS_E_INSUFFICIENT_STORAGE` below the minimum or when the ON
    /// volume lacks the space;
    /// `VSS_E_VOLUME_IN_USE` when shadows use more than the new maximum
    /// (unless the implementation deletes the oldest, as Windows may).
    fn resize_storage(&self, for_volume: &str, on_volume: &str, max: MaxSize) -> VssResult<()>;

    /// `vssadmin delete shadowstorage`: the association of `for_volume` on
    /// `on_volume`, or on any volume when `None`.
    /// `VSS_E_OBJECT_NOT_FOUND` when there is none; `VSS_E_VOLUME_IN_USE`
    /// while shadow copies use it.
    fn delete_storage(&self, for_volume: &str, on_volume: Option<&str>) -> VssResult<()>;

    /// Starts reverting the shadow's volume to the shadow
    /// (`RevertToSnapshot`) and returns once the revert is under way;
    /// [`SoftwareVolumes::query_reverts`] follows it. The coordinator has
    /// already checked that the shadow exists, is not lost and is
    /// persistent. `VSS_E_REVERT_IN_PROGRESS`; `VSS_E_VOLUME_IN_USE` when
    /// the volume cannot be taken offline and `force_dismount` is false;
    /// `VSS_E_VOLUME_NOT_SUPPORTED` when the shadow is not one of this
    /// provider's.
    fn revert(&self, shadow_id: Guid, force_dismount: bool) -> VssResult<()>;

    /// Running and finished reverts, all or those of one volume.
    fn query_reverts(&self, for_volume: Option<&str>) -> VssResult<Vec<RevertStatus>>;
}

/// The stand-in while vssd has no copy-on-write provider: nothing to list,
/// and `0x8004232F VSS_E_NOT_SUPPORTED` for every change.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoSoftwareVolumes;

impl NoSoftwareVolumes {
    /// The error every change answers with; `what` is the vssadmin verb.
    pub fn error(what: &str) -> VssError {
        VssError::new(
            VssCode::NotSupported,
            format!(
                "`{what}` needs the copy-on-write software provider, which this vssd does not have"
            ),
        )
        .with_hint(
            "Shadow copies of btrfs volumes need no shadow storage and no software volume: \
             their shadows share the filesystem's space (`vssadmin list volumes` shows which \
             provider serves each volume). Other filesystems need the copy-on-write provider, \
             which is not part of this build.",
        )
    }
}

impl SoftwareVolumes for NoSoftwareVolumes {
    fn add_volume(&self, _device: &str, _mount: &str) -> VssResult<SoftwareVolumeInfo> {
        Err(Self::error("add volume"))
    }

    fn delete_volume(&self, _for_volume: &str) -> VssResult<()> {
        Err(Self::error("delete volume"))
    }

    fn list_volumes(&self) -> VssResult<Vec<SoftwareVolumeInfo>> {
        Ok(Vec::new())
    }

    fn list_storage(
        &self,
        _for_volume: Option<&str>,
        _on_volume: Option<&str>,
    ) -> VssResult<Vec<ShadowStorageInfo>> {
        Ok(Vec::new())
    }

    fn add_storage(&self, _for_volume: &str, _on_volume: &str, _max: MaxSize) -> VssResult<()> {
        Err(Self::error("add shadowstorage"))
    }

    fn resize_storage(&self, _for_volume: &str, _on_volume: &str, _max: MaxSize) -> VssResult<()> {
        Err(Self::error("resize shadowstorage"))
    }

    fn delete_storage(&self, _for_volume: &str, _on_volume: Option<&str>) -> VssResult<()> {
        Err(Self::error("delete shadowstorage"))
    }

    fn revert(&self, _shadow_id: Guid, _force_dismount: bool) -> VssResult<()> {
        Err(Self::error("revert shadow"))
    }

    fn query_reverts(&self, _for_volume: Option<&str>) -> VssResult<Vec<RevertStatus>> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_software_volumes_lists_nothing_and_refuses_changes() {
        let n = NoSoftwareVolumes;
        assert!(n.list_volumes().unwrap().is_empty());
        assert!(n.list_storage(None, None).unwrap().is_empty());
        assert!(n.list_storage(Some("/a"), Some("/b")).unwrap().is_empty());
        assert!(n.query_reverts(None).unwrap().is_empty());
        let errors = [
            n.add_volume("/dev/sdb1", "/srv/data").unwrap_err(),
            n.delete_volume("/srv/data").unwrap_err(),
            n.add_storage("/a", "/b", MaxSize::Unbounded).unwrap_err(),
            n.resize_storage("/a", "/b", MaxSize::Percent(10))
                .unwrap_err(),
            n.delete_storage("/a", None).unwrap_err(),
            n.revert(Guid::new_random(), false).unwrap_err(),
        ];
        for (e, verb) in errors.iter().zip([
            "add volume",
            "delete volume",
            "add shadowstorage",
            "resize shadowstorage",
            "delete shadowstorage",
            "revert shadow",
        ]) {
            assert_eq!(e.code, VssCode::NotSupported);
            assert!(
                e.to_string()
                    .starts_with("0x8004232F VSS_E_NOT_SUPPORTED: `"),
                "{e}"
            );
            assert!(e.message.contains(verb), "{e}");
            assert!(e.hint().contains("btrfs"), "{}", e.hint());
        }
    }

    // ----- through the coordinator -----

    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use vss_catalog::{sample_record, Catalog};
    use vss_provider::Registry;
    use vss_types::{ShadowState, SnapshotContext, Volume};

    use crate::hold::{Armed, WriteHold};
    use crate::{Coordinator, CoreConfig, VolumeResolver};

    /// Records the calls that reach the provider.
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<String>>,
    }

    impl Recorder {
        fn log(&self, c: String) {
            self.calls.lock().unwrap().push(c);
        }
        fn take(&self) -> Vec<String> {
            std::mem::take(&mut self.calls.lock().unwrap())
        }
    }

    impl SoftwareVolumes for Recorder {
        fn add_volume(&self, device: &str, mount: &str) -> VssResult<SoftwareVolumeInfo> {
            self.log(format!("add_volume {device} {mount}"));
            Ok(SoftwareVolumeInfo {
                volume_id: Guid::from_u128(7),
                device: device.into(),
                mount_point: mount.into(),
                fs_type: "ext4".into(),
                size_bytes: 1 << 30,
                serving: true,
                loop_device: Some("/dev/loop9".into()),
            })
        }
        fn delete_volume(&self, for_volume: &str) -> VssResult<()> {
            self.log(format!("delete_volume {for_volume}"));
            Ok(())
        }
        fn list_volumes(&self) -> VssResult<Vec<SoftwareVolumeInfo>> {
            self.log("list_volumes".into());
            Ok(Vec::new())
        }
        fn list_storage(
            &self,
            for_volume: Option<&str>,
            on_volume: Option<&str>,
        ) -> VssResult<Vec<ShadowStorageInfo>> {
            self.log(format!("list_storage {for_volume:?} {on_volume:?}"));
            Ok(Vec::new())
        }
        fn add_storage(&self, for_volume: &str, on_volume: &str, max: MaxSize) -> VssResult<()> {
            self.log(format!("add_storage {for_volume} {on_volume} {max}"));
            Ok(())
        }
        fn resize_storage(&self, for_volume: &str, on_volume: &str, max: MaxSize) -> VssResult<()> {
            self.log(format!("resize_storage {for_volume} {on_volume} {max}"));
            Ok(())
        }
        fn delete_storage(&self, for_volume: &str, on_volume: Option<&str>) -> VssResult<()> {
            self.log(format!("delete_storage {for_volume} {on_volume:?}"));
            Ok(())
        }
        fn revert(&self, shadow_id: Guid, force_dismount: bool) -> VssResult<()> {
            self.log(format!("revert {shadow_id} {force_dismount}"));
            Ok(())
        }
        fn query_reverts(&self, for_volume: Option<&str>) -> VssResult<Vec<RevertStatus>> {
            self.log(format!("query_reverts {for_volume:?}"));
            Ok(Vec::new())
        }
    }

    struct NoHold;
    impl WriteHold for NoHold {
        fn arm(&self, _: Guid, _: &[String], _: Duration) -> VssResult<Box<dyn Armed>> {
            Err(VssError::new(VssCode::Unexpected, "not in these tests"))
        }
        fn freeze(&self, _: &str) -> std::io::Result<()> {
            Ok(())
        }
        fn thaw(&self, _: &str) -> std::io::Result<bool> {
            Ok(false)
        }
    }

    struct NoVolumes;
    impl VolumeResolver for NoVolumes {
        fn volume_of(&self, path: &str) -> VssResult<Volume> {
            Err(VssError::new(VssCode::ObjectNotFound, path.to_string()))
        }
        fn list(&self) -> VssResult<Vec<Volume>> {
            Ok(Vec::new())
        }
    }

    fn coordinator(software: Arc<dyn SoftwareVolumes>) -> (Arc<Coordinator>, Arc<Catalog>) {
        let catalog = Arc::new(Catalog::open_in_memory().unwrap());
        let core = Coordinator::new(
            CoreConfig {
                writer_timeout: Duration::from_secs(60),
                writer_timeouts: Default::default(),
                hold_limit: Duration::from_secs(10),
                machine: "host".into(),
                state_dir: "/nonexistent/vss-state".into(),
            },
            Registry::new(),
            catalog.clone(),
            Arc::new(NoHold),
            Arc::new(NoVolumes),
            software,
        );
        (core, catalog)
    }

    #[tokio::test]
    async fn coordinator_passes_checked_arguments_on() {
        let rec = Arc::new(Recorder::default());
        let (core, _) = coordinator(rec.clone());

        let info = core
            .add_software_volume(" /dev/sdb1 ", "/srv/data")
            .await
            .unwrap();
        assert_eq!(info.loop_device.as_deref(), Some("/dev/loop9"));
        core.delete_software_volume("/srv/data").await.unwrap();
        core.list_software_volumes().await.unwrap();
        core.list_shadow_storage(Some(""), Some("/b"))
            .await
            .unwrap();
        core.add_shadow_storage("/a", "/b", MaxSize::Percent(20))
            .await
            .unwrap();
        core.resize_shadow_storage("/a", "/b", MaxSize::Unbounded)
            .await
            .unwrap();
        core.delete_shadow_storage("/a", Some("")).await.unwrap();
        core.delete_shadow_storage("/a", Some("/b")).await.unwrap();
        core.query_reverts(None).await.unwrap();
        assert_eq!(
            rec.take(),
            [
                "add_volume /dev/sdb1 /srv/data",
                "delete_volume /srv/data",
                "list_volumes",
                "list_storage None Some(\"/b\")",
                "add_storage /a /b 20%",
                "resize_storage /a /b UNBOUNDED",
                "delete_storage /a None",
                "delete_storage /a Some(\"/b\")",
                "query_reverts None",
            ]
        );

        // Bad arguments never reach the provider.
        let bad = [
            core.add_software_volume("sdb1", "/srv/data")
                .await
                .unwrap_err(),
            core.add_software_volume("/dev/sdb1", "data")
                .await
                .unwrap_err(),
            core.add_software_volume("", "/srv/data").await.unwrap_err(),
            core.delete_software_volume(" ").await.unwrap_err(),
            core.add_shadow_storage("/a", "", MaxSize::Unbounded)
                .await
                .unwrap_err(),
            core.resize_shadow_storage("", "/b", MaxSize::Unbounded)
                .await
                .unwrap_err(),
            core.delete_shadow_storage("", None).await.unwrap_err(),
        ];
        for e in &bad {
            assert_eq!(e.code, VssCode::InvalidArg, "{e}");
        }
        assert_eq!(bad[0].message, "/device=sdb1 must be an absolute path");
        assert_eq!(bad[1].message, "/mount=data must be an absolute path");
        assert_eq!(bad[4].message, "/on= needs a volume");
        assert!(rec.take().is_empty());
    }

    #[tokio::test]
    async fn revert_is_checked_against_the_catalog() {
        let rec = Arc::new(Recorder::default());
        let (core, catalog) = coordinator(rec.clone());

        let e = core
            .revert_shadow(Guid::new_random(), false)
            .await
            .unwrap_err();
        assert_eq!(e.code, VssCode::ObjectNotFound, "{e}");

        let mut lost = sample_record("/srv/data", 1);
        lost.prop.state = ShadowState::Lost;
        catalog.insert_shadow(&lost).unwrap();
        let e = core
            .revert_shadow(lost.prop.shadow_id, false)
            .await
            .unwrap_err();
        assert_eq!(e.code, VssCode::ObjectNotFound, "{e}");
        assert!(e.message.contains("lost"), "{e}");

        let mut temp = sample_record("/srv/data", 2);
        temp.prop.context = SnapshotContext::Backup;
        catalog.insert_shadow(&temp).unwrap();
        let e = core
            .revert_shadow(temp.prop.shadow_id, false)
            .await
            .unwrap_err();
        assert_eq!(e.code, VssCode::UnsupportedContext, "{e}");
        assert!(e.message.contains("type Backup"), "{e}");
        assert!(rec.take().is_empty());

        let good = sample_record("/srv/data", 3);
        catalog.insert_shadow(&good).unwrap();
        core.revert_shadow(good.prop.shadow_id, true).await.unwrap();
        assert_eq!(rec.take(), [format!("revert {} true", good.prop.shadow_id)]);
    }

    #[tokio::test]
    async fn coordinator_without_the_provider() {
        let (core, catalog) = coordinator(Arc::new(NoSoftwareVolumes));
        assert!(core
            .list_shadow_storage(None, None)
            .await
            .unwrap()
            .is_empty());
        assert!(core.query_reverts(Some("/a")).await.unwrap().is_empty());
        let e = core
            .add_software_volume("/dev/sdb1", "/srv/data")
            .await
            .unwrap_err();
        assert_eq!(e.code, VssCode::NotSupported);
        let e = core
            .add_shadow_storage("/a", "/b", MaxSize::Unbounded)
            .await
            .unwrap_err();
        assert_eq!(e.code, VssCode::NotSupported);
        let good = sample_record("/srv/data", 3);
        catalog.insert_shadow(&good).unwrap();
        let e = core
            .revert_shadow(good.prop.shadow_id, false)
            .await
            .unwrap_err();
        assert_eq!(e.code, VssCode::NotSupported);
        assert!(e.message.contains("revert shadow"), "{e}");
    }
}
