//! The btrfs provider: a shadow copy of a btrfs volume is a read-only
//! snapshot of its mounted subvolume, kept at
//! `<mount point>/.vss-shadows/{shadow id}`.
//!
//! - The cut is the snapshot ioctl itself, which is atomic (one
//!   transaction); a FIFREEZE around it would make it wait for the thaw, so
//!   the hold method is [`HoldMethod::ProviderCut`].
//! - Shadows are plain subvolumes: they survive restarts of vssd and
//!   reboots, and the provider keeps nothing in memory. The path is recorded
//!   in the catalog as `device_object` and `provider_data`.
//! - `.vss-shadows` is root-owned with mode 0700, so users of the live
//!   volume cannot reach into shadows through it: a shadow exposes nothing a
//!   user could not read on the live volume, and is read only where an admin
//!   exposes it (a read-only, nosuid, nodev bind mount).

use std::fs::{File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use vss_provider::{Committed, Health, HoldMethod, Provider, ProviderShadow};
use vss_sys::{btrfs, SHADOWS_DIR_NAME};
use vss_types::{Guid, ProviderInfo, ProviderType, Volume, VssCode, VssError, VssResult};

/// The btrfs provider's id, `{b7f5a0c1-3e2d-4b8a-9f61-0d2c4e8a7b35}`: made
/// up for this project, fixed forever (it is stored with every shadow in the
/// catalog and passed by requestors that ask for this provider).
pub const BTRFS_PROVIDER_ID: Guid = Guid::from_u128(0xb7f5_a0c1_3e2d_4b8a_9f61_0d2c_4e8a_7b35);

/// Preference over the simulated provider (0): chosen for every btrfs
/// volume unless a requestor names another provider.
pub const BTRFS_PREFERENCE: u32 = 100;

/// Mode of `.vss-shadows`: root only.
const SHADOWS_DIR_MODE: u32 = 0o700;

/// Makes shadow copies of btrfs volumes as read-only snapshots. Stateless.
#[derive(Clone, Copy, Debug, Default)]
pub struct BtrfsProvider;

impl BtrfsProvider {
    pub fn new() -> Self {
        BtrfsProvider
    }

    /// `<mount point>/.vss-shadows`.
    pub fn shadows_dir(volume: &Volume) -> PathBuf {
        Path::new(&volume.mount_point).join(SHADOWS_DIR_NAME)
    }

    /// The snapshot's name: the shadow id, braced (`{…}`).
    pub fn shadow_name(shadow_id: Guid) -> String {
        shadow_id.to_string()
    }

    /// `<mount point>/.vss-shadows/{shadow id}`.
    pub fn shadow_path(volume: &Volume, shadow_id: Guid) -> PathBuf {
        Self::shadows_dir(volume).join(Self::shadow_name(shadow_id))
    }

    /// Where a recorded shadow is, checked to be a shadow of ours (a
    /// `{shadow id}` entry of a `.vss-shadows` directory), so that a
    /// damaged catalog cannot make the provider delete or expose anything
    /// else.
    fn recorded_path(shadow: &ProviderShadow) -> VssResult<PathBuf> {
        let recorded = if shadow.provider_data.is_empty() {
            &shadow.device_object
        } else {
            &shadow.provider_data
        };
        let path = PathBuf::from(recorded);
        let name = Self::shadow_name(shadow.shadow_id);
        let ours = path.is_absolute()
            && path.file_name().is_some_and(|n| n == name.as_str())
            && path
                .parent()
                .and_then(Path::file_name)
                .is_some_and(|n| n == SHADOWS_DIR_NAME);
        if ours {
            Ok(path)
        } else {
            Err(VssError::new(
                VssCode::UnexpectedProviderError,
                format!(
                    "shadow {} is recorded at '{recorded}', which is not a btrfs provider \
                     snapshot path (…/{SHADOWS_DIR_NAME}/{name})",
                    shadow.shadow_id
                ),
            )
            .with_hint("The catalog entry is damaged; check /var/lib/vss and the journal."))
        }
    }

    /// Creates `.vss-shadows` (root, 0700) or, if it exists, makes sure it
    /// is a real directory on the volume and narrows its owner and mode. Works
    /// on an `O_NOFOLLOW` descriptor so a symlink planted there cannot
    /// redirect the change.
    fn ensure_shadows_dir(volume: &Volume) -> VssResult<PathBuf> {
        let dir = Self::shadows_dir(volume);
        match std::fs::DirBuilder::new()
            .mode(SHADOWS_DIR_MODE)
            .create(&dir)
        {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error(&format!("cannot create {}", dir.display()), &e)),
        }
        let f = open_nofollow_dir(&dir).map_err(|e| {
            VssError::new(
                VssCode::ProviderVeto,
                format!("{} is not a directory the provider can use: {e}", dir.display()),
            )
            .with_hint(format!(
                "Remove or rename {} (it must be a plain directory, not a symlink or file), then retry.",
                dir.display()
            ))
        })?;
        let md = f
            .metadata()
            .map_err(|e| io_error(&format!("cannot stat {}", dir.display()), &e))?;
        let root_md = std::fs::metadata(&volume.mount_point)
            .map_err(|e| io_error(&format!("cannot stat {}", volume.mount_point), &e))?;
        if md.dev() != root_md.dev() {
            return Err(VssError::new(
                VssCode::ProviderVeto,
                format!(
                    "{} is not on the volume's subvolume (something is mounted there)",
                    dir.display()
                ),
            )
            .with_hint(format!(
                "Unmount what is mounted on {}, then retry.",
                dir.display()
            )));
        }
        if md.uid() != 0 || md.gid() != 0 {
            std::os::unix::fs::fchown(&f, Some(0), Some(0)).map_err(|e| {
                io_error(&format!("cannot make {} owned by root", dir.display()), &e)
            })?;
        }
        if md.mode() & 0o7777 != SHADOWS_DIR_MODE {
            f.set_permissions(Permissions::from_mode(SHADOWS_DIR_MODE))
                .map_err(|e| io_error(&format!("cannot set mode 0700 on {}", dir.display()), &e))?;
        }
        Ok(dir)
    }

    /// Whether the snapshot at `path` is mounted somewhere (exposed).
    fn exposures(path: &Path, volume: &Volume) -> Vec<PathBuf> {
        let Some(name) = path.file_name() else {
            return Vec::new();
        };
        let tail = Path::new(SHADOWS_DIR_NAME).join(name);
        vss_sys::mounts::mountinfo()
            .unwrap_or_default()
            .into_iter()
            .filter(|m| {
                m.fs_type == "btrfs" && m.source == volume.device && m.root.ends_with(&tail)
            })
            .map(|m| m.mount_point)
            .collect()
    }
}

fn open_nofollow_dir(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY)
        .open(path)
}

/// An I/O failure as a VSS error: busy → `VolumeInUse`, missing →
/// `ObjectNotFound`, full → `InsufficientStorage`, exists →
/// `ObjectAlreadyExists`, refused → `ProviderVeto`, else
/// `UnexpectedProviderError`; each with a hint.
fn io_error(what: &str, e: &io::Error) -> VssError {
    use io::ErrorKind as K;
    let message = format!("{what}: {e}");
    match e.kind() {
        K::ResourceBusy => VssError::new(VssCode::VolumeInUse, message).with_hint(
            "Something uses it: unexpose the shadow copy or stop the processes using it \
             (`fuser -vm PATH`), then retry.",
        ),
        K::NotFound => VssError::new(VssCode::ObjectNotFound, message)
            .with_hint("Check that the volume is mounted and the shadow copy still exists (`vssadmin list shadows`)."),
        K::StorageFull | K::QuotaExceeded => VssError::new(VssCode::InsufficientStorage, message)
            .with_hint("Free space on the volume or delete old shadow copies (`vssadmin delete shadows /for=VOLUME /oldest`)."),
        K::AlreadyExists => VssError::new(VssCode::ObjectAlreadyExists, message),
        K::PermissionDenied | K::ReadOnlyFilesystem => VssError::new(VssCode::ProviderVeto, message)
            .with_hint("vssd must run as root with CAP_SYS_ADMIN, and the volume must be mounted read-write."),
        _ => VssError::new(VssCode::UnexpectedProviderError, message),
    }
}

impl Provider for BtrfsProvider {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            name: "vss btrfs provider".into(),
            provider_type: ProviderType::Software,
            provider_id: BTRFS_PROVIDER_ID,
            version: env!("CARGO_PKG_VERSION").into(),
            supports: "btrfs subvolumes mounted read-write (read-only snapshots)".into(),
        }
    }

    fn supports(&self, volume: &Volume) -> Result<(), String> {
        if volume.fs_type != "btrfs" {
            return Err(format!(
                "{} is not btrfs; this provider snapshots btrfs subvolumes only",
                volume.fs_type
            ));
        }
        if volume.read_only {
            return Err(format!(
                "{} is mounted read-only; a snapshot must be created in it",
                volume.mount_point
            ));
        }
        match btrfs::is_subvolume(Path::new(&volume.mount_point)) {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!(
                "{} is not the root of a btrfs subvolume (a bind mount of a directory?)",
                volume.mount_point
            )),
            Err(e) => Err(format!("cannot inspect {}: {e}", volume.mount_point)),
        }
    }

    fn preference(&self) -> u32 {
        BTRFS_PREFERENCE
    }

    fn hold_method(&self, _volume: &Volume) -> HoldMethod {
        // The snapshot ioctl is atomic and would block on a frozen
        // filesystem.
        HoldMethod::ProviderCut
    }

    fn prepare(&self, volume: &Volume, shadow_id: Guid) -> VssResult<()> {
        self.supports(volume).map_err(|reason| {
            VssError::new(
                VssCode::VolumeNotSupportedByProvider,
                format!(
                    "btrfs provider cannot snapshot {}: {reason}",
                    volume.mount_point
                ),
            )
        })?;
        Self::ensure_shadows_dir(volume)?;
        let path = Self::shadow_path(volume, shadow_id);
        if path.symlink_metadata().is_ok() {
            return Err(VssError::new(
                VssCode::ObjectAlreadyExists,
                format!("{} already exists", path.display()),
            ));
        }
        let free = vss_sys::free_bytes(Path::new(&volume.mount_point)).map_err(|e| {
            io_error(
                &format!("cannot read free space of {}", volume.mount_point),
                &e,
            )
        })?;
        if free == 0 {
            return Err(VssError::insufficient_storage(
                &volume.mount_point,
                "the btrfs volume has no free space left for snapshot metadata",
            ));
        }
        Ok(())
    }

    fn commit(&self, volume: &Volume, shadow_id: Guid) -> VssResult<Committed> {
        let dir = Self::shadows_dir(volume);
        let name = Self::shadow_name(shadow_id);
        btrfs::snapshot_readonly(Path::new(&volume.mount_point), &dir, &name).map_err(|e| {
            io_error(
                &format!(
                    "btrfs snapshot of {} to {}/{name} failed",
                    volume.mount_point,
                    dir.display()
                ),
                &e,
            )
        })?;
        let path = dir.join(&name).to_string_lossy().into_owned();
        tracing::info!(shadow = %shadow_id, volume = %volume.mount_point, snapshot = %path, "btrfs snapshot created");
        Ok(Committed {
            device_object: path.clone(),
            attributes: 0,
            provider_data: path,
        })
    }

    fn abort(&self, volume: &Volume, shadow_id: Guid) {
        let path = Self::shadow_path(volume, shadow_id);
        if !btrfs::is_subvolume(&path).unwrap_or(false) {
            return;
        }
        let name = Self::shadow_name(shadow_id);
        match btrfs::delete_subvolume(&Self::shadows_dir(volume), &name) {
            Ok(()) => {
                tracing::info!(shadow = %shadow_id, snapshot = %path.display(), "aborted: snapshot deleted")
            }
            Err(e) => {
                tracing::warn!(shadow = %shadow_id, snapshot = %path.display(), error = %e, "aborted, but the snapshot could not be deleted")
            }
        }
    }

    fn delete(&self, shadow: &ProviderShadow) -> VssResult<()> {
        let path = Self::recorded_path(shadow)?;
        if path.symlink_metadata().is_err() {
            // Already gone: deleting is idempotent.
            return Ok(());
        }
        if !btrfs::is_subvolume(&path).unwrap_or(false) {
            return Err(VssError::new(
                VssCode::UnexpectedProviderError,
                format!(
                    "{} is not a btrfs subvolume; not deleting it",
                    path.display()
                ),
            )
            .with_hint("Something replaced the snapshot; inspect and remove it by hand."));
        }
        let exposed = Self::exposures(&path, &shadow.volume);
        if let Some(at) = exposed.first() {
            return Err(VssError::new(
                VssCode::VolumeInUse,
                format!("shadow {} is exposed at {}", shadow.shadow_id, at.display()),
            )
            .with_hint(format!(
                "Unexpose it (unmount {}) first, then delete it.",
                at.display()
            )));
        }
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            unreachable!("recorded_path checked the shape");
        };
        match btrfs::delete_subvolume(parent, &name.to_string_lossy()) {
            Ok(()) => {
                tracing::info!(shadow = %shadow.shadow_id, snapshot = %path.display(), "btrfs snapshot deleted");
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(
                &format!("cannot delete snapshot {}", path.display()),
                &e,
            )),
        }
    }

    fn health(&self, shadow: &ProviderShadow) -> Health {
        let path = match Self::recorded_path(shadow) {
            Ok(p) => p,
            Err(e) => return Health::Lost(e.message),
        };
        match btrfs::is_subvolume(&path) {
            Ok(true) => {}
            Ok(false) => {
                return Health::Lost(format!("{} is no longer a btrfs subvolume", path.display()))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Health::Lost(format!(
                    "snapshot {} no longer exists (deleted, or {} not mounted)",
                    path.display(),
                    shadow.volume.mount_point
                ))
            }
            Err(e) => return Health::Lost(format!("cannot inspect {}: {e}", path.display())),
        }
        match btrfs::subvolume_is_readonly(&path) {
            Ok(true) => Health::Present,
            Ok(false) => Health::Lost(format!(
                "snapshot {} was made writable, so it may no longer hold the state of the shadow copy",
                path.display()
            )),
            Err(e) => Health::Lost(format!("cannot read the flags of {}: {e}", path.display())),
        }
    }

    fn expose(&self, shadow: &ProviderShadow, target: &Path) -> VssResult<()> {
        let path = Self::recorded_path(shadow)?;
        if let Health::Lost(reason) = self.health(shadow) {
            return Err(VssError::new(
                VssCode::ObjectNotFound,
                format!("shadow {} cannot be exposed: {reason}", shadow.shadow_id),
            ));
        }
        let mut entries = std::fs::read_dir(target).map_err(|e| {
            io_error(&format!("cannot expose at {}", target.display()), &e)
                .with_hint("Expose at an existing, empty directory.")
        })?;
        if entries.next().is_some() || vss_sys::is_mount_point(target).unwrap_or(false) {
            return Err(VssError::new(
                VssCode::ObjectAlreadyExists,
                format!("{} is not an empty directory", target.display()),
            )
            .with_hint("Expose at an existing, empty directory that nothing is mounted on."));
        }
        vss_sys::bind_mount_readonly(&path, target).map_err(|e| {
            io_error(
                &format!(
                    "cannot bind-mount {} on {}",
                    path.display(),
                    target.display()
                ),
                &e,
            )
        })?;
        tracing::info!(shadow = %shadow.shadow_id, at = %target.display(), "shadow exposed read-only");
        Ok(())
    }

    fn unexpose(&self, shadow: &ProviderShadow, target: &Path) -> VssResult<()> {
        let path = Self::recorded_path(shadow)?;
        let canonical = std::fs::canonicalize(target)
            .map_err(|e| io_error(&format!("cannot unexpose {}", target.display()), &e))?;
        if !Self::exposures(&path, &shadow.volume).contains(&canonical) {
            return Err(VssError::new(
                VssCode::ObjectNotFound,
                format!(
                    "shadow {} is not exposed at {}",
                    shadow.shadow_id,
                    target.display()
                ),
            ));
        }
        vss_sys::unmount(&canonical)
            .map_err(|e| io_error(&format!("cannot unmount {}", canonical.display()), &e))?;
        tracing::info!(shadow = %shadow.shadow_id, at = %canonical.display(), "shadow unexposed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(fs_type: &str, read_only: bool) -> Volume {
        Volume {
            mount_point: "/nonexistent/vss-btrfs-test".into(),
            device: "/dev/loop9".into(),
            fs_type: fs_type.into(),
            fs_uuid: None,
            subvolume: None,
            read_only,
            volume_guid: vss_types::provider::volume_guid("/dev/loop9"),
        }
    }

    #[test]
    fn info_and_preference() {
        let p = BtrfsProvider::new();
        let i = p.info();
        assert_eq!(i.name, "vss btrfs provider");
        assert_eq!(i.provider_type, ProviderType::Software);
        assert_eq!(i.provider_id, BTRFS_PROVIDER_ID);
        assert_eq!(
            BTRFS_PROVIDER_ID.to_string(),
            "{b7f5a0c1-3e2d-4b8a-9f61-0d2c4e8a7b35}"
        );
        assert!(p.preference() > 0);
        assert_eq!(
            p.hold_method(&volume("btrfs", false)),
            HoldMethod::ProviderCut
        );
    }

    #[test]
    fn rejects_other_filesystems_and_read_only() {
        let p = BtrfsProvider::new();
        assert!(p
            .supports(&volume("ext4", false))
            .unwrap_err()
            .contains("ext4"));
        assert!(p
            .supports(&volume("btrfs", true))
            .unwrap_err()
            .contains("read-only"));
        assert!(p
            .supports(&volume("btrfs", false))
            .unwrap_err()
            .contains("cannot inspect"));
    }

    #[test]
    fn paths() {
        let v = volume("btrfs", false);
        let id = Guid::from_u128(1);
        assert_eq!(
            BtrfsProvider::shadow_path(&v, id),
            Path::new(
                "/nonexistent/vss-btrfs-test/.vss-shadows/{00000000-0000-0000-0000-000000000001}"
            )
        );
    }

    #[test]
    fn recorded_path_must_be_ours() {
        let v = volume("btrfs", false);
        let id = Guid::from_u128(1);
        let mut s = ProviderShadow {
            shadow_id: id,
            volume: v.clone(),
            device_object: String::new(),
            provider_data: BtrfsProvider::shadow_path(&v, id)
                .to_string_lossy()
                .into_owned(),
        };
        assert!(BtrfsProvider::recorded_path(&s).is_ok());
        for bad in [
            "/etc",
            "/mnt/.vss-shadows/{00000000-0000-0000-0000-000000000002}",
            "relative/.vss-shadows/{00000000-0000-0000-0000-000000000001}",
            "/mnt/other/{00000000-0000-0000-0000-000000000001}",
        ] {
            s.provider_data = bad.into();
            let e = BtrfsProvider::recorded_path(&s).unwrap_err();
            assert_eq!(e.code, VssCode::UnexpectedProviderError, "{bad}");
            assert!(matches!(BtrfsProvider.health(&s), Health::Lost(_)));
            assert_eq!(
                BtrfsProvider.delete(&s).unwrap_err().code,
                VssCode::UnexpectedProviderError
            );
        }
    }

    #[test]
    fn io_errors_map_to_codes() {
        let c = |k: io::ErrorKind| io_error("x", &io::Error::from(k)).code;
        assert_eq!(c(io::ErrorKind::ResourceBusy), VssCode::VolumeInUse);
        assert_eq!(c(io::ErrorKind::NotFound), VssCode::ObjectNotFound);
        assert_eq!(c(io::ErrorKind::StorageFull), VssCode::InsufficientStorage);
        assert_eq!(
            c(io::ErrorKind::AlreadyExists),
            VssCode::ObjectAlreadyExists
        );
        assert_eq!(c(io::ErrorKind::PermissionDenied), VssCode::ProviderVeto);
        assert_eq!(c(io::ErrorKind::Other), VssCode::UnexpectedProviderError);
    }
}
