//! Software volumes as vssd keeps them: one `volumes/<id>.toml` per volume
//! in the state directory, one `vss-volumed` process serving each.
//!
//! The volume servers are started by vssd (at `add volume`, and at every
//! start of vssd for registered volumes whose server is not answering),
//! in their own process group so that a restart of vssd leaves them, and
//! the mounted filesystems they serve, running.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vss_types::{
    min_shadow_storage, Guid, MaxSize, ShadowStorageInfo, SoftwareVolumeInfo, VssCode, VssError,
    VssResult,
};
use vss_volumed::client::{call, ClientError};
use vss_volumed::protocol::{id_text, ErrorKind, Reply, Request, Status};
use vss_volumed::VolumeConfig;

/// How long a starting volume server may take to mount its filesystem.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);
/// Storage changes and retirement may wait for the kernel to let go of
/// images.
const LONG_TIMEOUT: Duration = Duration::from_secs(120);

/// The directory under the state directory where software shadow storage
/// goes when the admin did not choose one.
pub const DEFAULT_STORAGE_DIR: &str = "shadowstorage";

#[derive(Clone, Debug)]
pub struct VolumeEntry {
    pub config_path: PathBuf,
    pub config: VolumeConfig,
}

pub struct CowManager {
    volumes_dir: PathBuf,
    run_root: PathBuf,
    default_storage_root: PathBuf,
    volumed_bin: PathBuf,
    /// `(max shadows, delete the oldest at the limit)` for every volume.
    shadow_limit: (u32, bool),
}

fn io_err(context: &str, e: &std::io::Error) -> VssError {
    VssError::new(VssCode::UnexpectedProviderError, format!("{context}: {e}"))
}

/// Maps a volume server's refusal to the VSS code the admin sees.
fn server_err(e: ClientError) -> VssError {
    match e {
        ClientError::Server(r) => {
            let code = match r.kind {
                ErrorKind::BadRequest => VssCode::InvalidArg,
                ErrorKind::NoSuchShadow => VssCode::ObjectNotFound,
                ErrorKind::ShadowLimit => VssCode::MaximumNumberOfSnapshotsReached,
                ErrorKind::NoStorage => VssCode::ObjectNotFound,
                ErrorKind::StorageExists => VssCode::ObjectAlreadyExists,
                ErrorKind::InsufficientStorage => VssCode::InsufficientStorage,
                ErrorKind::VolumeInUse => VssCode::VolumeInUse,
                ErrorKind::RevertInProgress => VssCode::RevertInProgress,
                ErrorKind::Internal => VssCode::UnexpectedProviderError,
            };
            VssError::new(code, r.message)
        }
        other => VssError::new(VssCode::ProviderVeto, other.to_string()).with_hint(
            "The volume's server (vss-volumed) is not answering; see the journal. \
             Restarting vssd starts it again.",
        ),
    }
}

impl CowManager {
    /// `state_dir`: vssd's state directory; `run_root`: where volume
    /// servers keep sockets and images (e.g. `/run/vss/volumes`).
    pub fn new(state_dir: &Path, run_root: &Path, volumed_bin: PathBuf) -> CowManager {
        CowManager {
            volumes_dir: state_dir.join("volumes"),
            run_root: run_root.to_owned(),
            default_storage_root: state_dir.join(DEFAULT_STORAGE_DIR),
            volumed_bin,
            shadow_limit: (vss_volumed::DEFAULT_MAX_SHADOWS, false),
        }
    }

    /// Most shadows per volume (1–512) and whether a cut at the limit
    /// deletes the oldest (Windows' MaxShadowCopies) or fails with
    /// `0x80042317`.
    pub fn with_shadow_limit(mut self, max_shadows: u32, delete_oldest: bool) -> Self {
        self.shadow_limit = (max_shadows, delete_oldest);
        self
    }

    pub fn shadow_limit(&self) -> (u32, bool) {
        self.shadow_limit
    }

    pub fn entries(&self) -> Vec<VolumeEntry> {
        let Ok(rd) = std::fs::read_dir(&self.volumes_dir) else {
            return Vec::new();
        };
        let mut out: Vec<VolumeEntry> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .filter_map(|p| match VolumeConfig::load(&p) {
                Ok(config) => Some(VolumeEntry {
                    config_path: p,
                    config,
                }),
                Err(e) => {
                    tracing::error!(file = %p.display(), error = %e, "unreadable software volume file");
                    None
                }
            })
            .collect();
        out.sort_by(|a, b| a.config.mount_point.cmp(&b.config.mount_point));
        out
    }

    /// The volume mounted at `mount` (or containing the path `mount`).
    pub fn entry_for(&self, mount: &str) -> Option<VolumeEntry> {
        let wanted = std::fs::canonicalize(mount).unwrap_or_else(|_| PathBuf::from(mount));
        self.entries()
            .into_iter()
            .find(|e| e.config.mount_point == wanted || Path::new(mount) == e.config.mount_point)
    }

    pub fn entry_by_id(&self, volume_id: &str) -> Option<VolumeEntry> {
        self.entries()
            .into_iter()
            .find(|e| e.config.volume_id == volume_id)
    }

    pub fn call(&self, entry: &VolumeEntry, req: &Request, timeout: Duration) -> VssResult<Reply> {
        call(&entry.config.socket_path(), req, timeout).map_err(server_err)
    }

    pub fn status(&self, entry: &VolumeEntry) -> VssResult<Status> {
        match self.call(entry, &Request::Status, STATUS_TIMEOUT)? {
            Reply::Status(s) => Ok(*s),
            other => Err(VssError::new(
                VssCode::UnexpectedProviderError,
                format!("volume server answered status with {other:?}"),
            )),
        }
    }

    fn answering(&self, entry: &VolumeEntry) -> bool {
        self.status(entry)
            .is_ok_and(|s| s.mounted || s.revert.is_some())
    }

    /// Starts the volume server of `entry` and waits for its filesystem to
    /// be mounted.
    fn start_server(&self, entry: &VolumeEntry) -> VssResult<()> {
        std::fs::create_dir_all(&entry.config.run_dir)
            .map_err(|e| io_err("cannot create the run directory", &e))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(entry.config.run_dir.with_extension("log"))
            .map_err(|e| io_err("cannot open the volume server log", &e))?;
        let log2 = log.try_clone().map_err(|e| io_err("log", &e))?;
        let mut child = Command::new(&self.volumed_bin)
            .args(["serve", "--config"])
            .arg(&entry.config_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            // Its own process group: signals meant for vssd (a terminal's
            // ^C, a service stop) must not reach the server of a mounted
            // filesystem.
            .process_group(0)
            .spawn()
            .map_err(|e| io_err(&format!("cannot start {}", self.volumed_bin.display()), &e))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.answering(entry) {
                // Reap it whenever it ends, so it never lingers as a zombie.
                std::thread::spawn(move || {
                    let _ = child.wait();
                });
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(entry.config.run_dir.with_extension("log"))
                    .unwrap_or_default();
                let last: Vec<&str> = log.lines().rev().take(3).collect();
                return Err(VssError::new(
                    VssCode::UnexpectedProviderError,
                    format!(
                        "the volume server for {} exited ({status}): {}",
                        entry.config.mount_point.display(),
                        last.into_iter().rev().collect::<Vec<_>>().join(" | ")
                    ),
                ));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(VssError::new(
                    VssCode::UnexpectedProviderError,
                    format!(
                        "the volume server for {} did not mount it within {} s",
                        entry.config.mount_point.display(),
                        START_TIMEOUT.as_secs()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// At vssd's start: every registered volume whose server is not
    /// answering gets one.
    pub fn ensure_running(&self) {
        for mut entry in self.entries() {
            let (max, oldest) = self.shadow_limit;
            if (
                entry.config.max_shadows,
                entry.config.delete_oldest_at_limit,
            ) != (max, oldest)
            {
                entry.config.max_shadows = max;
                entry.config.delete_oldest_at_limit = oldest;
                if let Err(e) = entry.config.save(&entry.config_path) {
                    tracing::error!(file = %entry.config_path.display(), error = %e, "cannot update the shadow limit");
                }
                // A running server takes it at once; a stopped one reads it
                // when it starts below.
                let _ = self.call(
                    &entry,
                    &Request::SetShadowLimit {
                        max_shadows: max,
                        delete_oldest_at_limit: oldest,
                    },
                    STATUS_TIMEOUT,
                );
            }
            if self.status(&entry).is_ok() {
                continue;
            }
            match self.start_server(&entry) {
                Ok(()) => {
                    tracing::info!(volume = %entry.config.mount_point.display(), "volume server started")
                }
                Err(e) => {
                    tracing::error!(volume = %entry.config.mount_point.display(), error = %e, "cannot start the volume server")
                }
            }
        }
    }

    /// `vssadmin add volume`: puts the filesystem on `device` under the
    /// software provider, mounted at `mount`.
    pub fn add_volume(&self, device: &str, mount: &str) -> VssResult<SoftwareVolumeInfo> {
        let device = Path::new(device);
        let mount = Path::new(mount);
        if !device.is_absolute() || !mount.is_absolute() {
            return Err(VssError::invalid_arg(
                "/device and /mount must be absolute paths",
            ));
        }
        let md = std::fs::metadata(device).map_err(|e| {
            VssError::new(
                VssCode::ObjectNotFound,
                format!("{}: {e}", device.display()),
            )
        })?;
        use std::os::unix::fs::FileTypeExt;
        if !md.is_file() && !md.file_type().is_block_device() {
            return Err(VssError::invalid_arg(format!(
                "{} is neither a block device nor an image file",
                device.display()
            )));
        }
        let device = std::fs::canonicalize(device).map_err(|e| io_err("canonicalize", &e))?;
        if self.entries().iter().any(|e| e.config.device == device) {
            return Err(VssError::new(
                VssCode::ObjectAlreadyExists,
                format!("{} already has software shadow copies", device.display()),
            ));
        }
        if self.entries().iter().any(|e| e.config.mount_point == mount) {
            return Err(VssError::new(
                VssCode::ObjectAlreadyExists,
                format!(
                    "{} is already a software volume's mount point",
                    mount.display()
                ),
            ));
        }
        self.check_not_in_use(&device, mount)?;
        let fs_type = vss_sys::probe::filesystem_type(&device)
            .map_err(|e| io_err(&format!("cannot read {}", device.display()), &e))?
            .ok_or_else(|| {
                VssError::new(
                    VssCode::VolumeNotSupported,
                    format!(
                        "{} holds no ext4, xfs or btrfs filesystem",
                        device.display()
                    ),
                )
                .with_hint("Make a filesystem on it first (mkfs.ext4, mkfs.xfs, mkfs.btrfs).")
            })?;
        if !matches!(fs_type, "ext4" | "ext3" | "ext2" | "xfs" | "btrfs") {
            return Err(VssError::new(
                VssCode::VolumeNotSupported,
                format!("{fs_type} on {} is not supported", device.display()),
            ));
        }
        let id = id_text(Guid::new_random().as_uuid().as_u128());
        let config = VolumeConfig {
            volume_id: id.clone(),
            device: device.clone(),
            mount_point: mount.to_owned(),
            fs_type: fs_type.to_owned(),
            run_dir: self.run_root.join(&id),
            storage: None,
            revert_pending: None,
            max_shadows: self.shadow_limit.0,
            delete_oldest_at_limit: self.shadow_limit.1,
            reorder_copies_when_idle: true,
        };
        std::fs::create_dir_all(&self.volumes_dir)
            .map_err(|e| io_err("cannot create the volumes directory", &e))?;
        let config_path = self.volumes_dir.join(format!("{id}.toml"));
        config
            .save(&config_path)
            .map_err(|e| io_err("cannot save the volume", &e))?;
        let entry = VolumeEntry {
            config_path: config_path.clone(),
            config,
        };
        if let Err(e) = self.start_server(&entry) {
            let _ = std::fs::remove_file(&config_path);
            return Err(e);
        }
        tracing::info!(device = %device.display(), mount = %mount.display(), fs = fs_type, "volume put under the software provider");
        self.info(&entry)
    }

    /// The device must not be mounted or attached anywhere, and the mount
    /// point must be free: the volume server is to be the device's only
    /// user from now on.
    fn check_not_in_use(&self, device: &Path, mount: &Path) -> VssResult<()> {
        let mounts = vss_sys::mounts::mountinfo().map_err(|e| io_err("mountinfo", &e))?;
        let mut users: Vec<String> = mounts
            .iter()
            .filter(|m| Path::new(&m.source) == device)
            .map(|m| m.mount_point.display().to_string())
            .collect();
        if let Ok(loops) = vss_sys::loopdev::find_by_backing_file(device) {
            users.extend(loops.iter().map(|l| format!("loop device {}", l.display())));
        }
        if !users.is_empty() {
            return Err(VssError::new(
                VssCode::VolumeInUse,
                format!("{} is in use: {}", device.display(), users.join(", ")),
            )
            .with_hint(
                "Unmount it (and detach its loop devices) first; vss mounts it again through \
                 the copy-on-write engine at /mount.",
            ));
        }
        if vss_sys::is_mount_point(mount).unwrap_or(false) {
            return Err(VssError::new(
                VssCode::VolumeInUse,
                format!("{} is already a mount point", mount.display()),
            ));
        }
        Ok(())
    }

    fn info(&self, entry: &VolumeEntry) -> VssResult<SoftwareVolumeInfo> {
        let status = self.status(entry).ok();
        Ok(SoftwareVolumeInfo {
            volume_id: Guid::from_u128(
                vss_volumed::protocol::parse_id(&entry.config.volume_id).unwrap_or(0),
            ),
            device: entry.config.device.display().to_string(),
            mount_point: entry.config.mount_point.display().to_string(),
            fs_type: entry.config.fs_type.clone(),
            size_bytes: status.as_ref().map_or_else(
                || vss_sys::block_device_size(&entry.config.device).unwrap_or(0),
                |s| s.size_bytes,
            ),
            serving: status.as_ref().is_some_and(|s| s.mounted),
            loop_device: status
                .and_then(|s| s.loop_device)
                .map(|p| p.display().to_string()),
        })
    }

    pub fn list_volumes(&self) -> VssResult<Vec<SoftwareVolumeInfo>> {
        self.entries().iter().map(|e| self.info(e)).collect()
    }

    fn need_entry(&self, for_volume: &str) -> VssResult<VolumeEntry> {
        self.entry_for(for_volume).ok_or_else(|| {
            VssError::new(
                VssCode::ObjectNotFound,
                format!("{for_volume} is not a software shadow copy volume"),
            )
            .with_hint(
                "`vssadmin list volumes` shows volumes; enable one with `vssadmin add volume`.",
            )
        })
    }

    /// `vssadmin delete volume`: deletes its shadows and shadow storage and
    /// leaves the device, mounted directly, holding the live filesystem.
    pub fn delete_volume(&self, for_volume: &str) -> VssResult<()> {
        let entry = self.need_entry(for_volume)?;
        self.call(&entry, &Request::Retire, LONG_TIMEOUT)?;
        // The server removes its file; make sure, in case it died.
        let _ = std::fs::remove_file(&entry.config_path);
        Ok(())
    }

    /// Creates the default association: under the state directory, no
    /// maximum (bounded by that filesystem's free space).
    pub fn add_default_storage(&self, entry: &VolumeEntry, volume_size: u64) -> VssResult<()> {
        std::fs::create_dir_all(&self.default_storage_root)
            .map_err(|e| io_err("cannot create the default shadow storage directory", &e))?;
        let dir = self.default_storage_root.join(&entry.config.volume_id);
        self.check_room(&self.default_storage_root, volume_size)?;
        self.call(
            entry,
            &Request::AddStorage {
                dir,
                max_bytes: None,
                chunk_size: vss_cow_chunk_size(),
            },
            LONG_TIMEOUT,
        )?;
        Ok(())
    }

    /// The filesystem at `on` must have room for the minimum shadow
    /// storage of a volume of `volume_size` bytes.
    fn check_room(&self, on: &Path, volume_size: u64) -> VssResult<()> {
        let min = min_shadow_storage(volume_size);
        let free =
            vss_sys::free_bytes(on).map_err(|e| io_err(&format!("statfs {}", on.display()), &e))?;
        if free < min {
            return Err(VssError::new(
                VssCode::InsufficientStorage,
                format!(
                    "{} has {} MiB free; shadow storage needs at least {} MiB",
                    on.display(),
                    free >> 20,
                    min >> 20
                ),
            )
            .with_hint("Put the shadow storage on a filesystem with more free space: `vssadmin add shadowstorage /for=VOLUME /on=OTHER`."));
        }
        Ok(())
    }

    /// `add shadowstorage /for= /on= [/maxsize=]`.
    pub fn add_storage(&self, for_volume: &str, on_volume: &str, max: MaxSize) -> VssResult<()> {
        let entry = self.need_entry(for_volume)?;
        let status = self.status(&entry)?;
        if status.storage.is_some() {
            return Err(VssError::new(
                VssCode::ObjectAlreadyExists,
                format!("{for_volume} already has a shadow storage association"),
            )
            .with_hint("Change its size with `vssadmin resize shadowstorage`, or delete it (and its shadow copies) with `vssadmin delete shadowstorage` first."));
        }
        let on = self.on_dir(&entry, on_volume)?;
        let max_bytes = max.resolve_checked(for_volume, status.size_bytes)?;
        self.check_room(&on, status.size_bytes)?;
        let dir = on.join(".vss-shadowstorage").join(&entry.config.volume_id);
        if let Some(parent) = dir.parent() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| io_err(&format!("cannot create {}", parent.display()), &e))?;
        }
        self.call(
            &entry,
            &Request::AddStorage {
                dir,
                max_bytes,
                chunk_size: vss_cow_chunk_size(),
            },
            LONG_TIMEOUT,
        )?;
        Ok(())
    }

    /// The mount point of the filesystem `on_volume` names; never the
    /// volume itself (its own copies would have to be copied first).
    fn on_dir(&self, entry: &VolumeEntry, on_volume: &str) -> VssResult<PathBuf> {
        let v = vss_sys::mounts::volume_of(Path::new(on_volume)).map_err(|e| {
            VssError::new(VssCode::ObjectNotFound, format!("{on_volume}: {e}"))
                .with_hint("Name a mounted filesystem by its mount point, e.g. /on=/srv/backup.")
        })?;
        let mp = PathBuf::from(&v.mount_point);
        if mp == entry.config.mount_point || self.entry_for(&v.mount_point).is_some() {
            return Err(VssError::new(
                VssCode::VolumeNotSupported,
                format!(
                    "shadow storage cannot be on {} itself or on another software volume",
                    v.mount_point
                ),
            )
            .with_hint(
                "Choose a filesystem that is not under the software provider, e.g. /on=/var.",
            ));
        }
        Ok(mp)
    }

    pub fn resize_storage(&self, for_volume: &str, on_volume: &str, max: MaxSize) -> VssResult<()> {
        let entry = self.need_entry(for_volume)?;
        let status = self.status(&entry)?;
        let Some(storage) = status.storage else {
            return Err(VssError::new(
                VssCode::ObjectNotFound,
                format!("{for_volume} has no shadow storage association"),
            )
            .with_hint("Create one with `vssadmin add shadowstorage`."));
        };
        let on = self.on_dir(&entry, on_volume)?;
        if !storage.dir.starts_with(&on) {
            return Err(VssError::new(
                VssCode::ObjectNotFound,
                format!("{for_volume} has no shadow storage on {on_volume}"),
            ));
        }
        let max_bytes = max.resolve_checked(for_volume, status.size_bytes)?;
        self.call(&entry, &Request::ResizeStorage { max_bytes }, LONG_TIMEOUT)?;
        Ok(())
    }

    pub fn delete_storage(&self, for_volume: &str, on_volume: Option<&str>) -> VssResult<()> {
        let entry = self.need_entry(for_volume)?;
        if let Some(on) = on_volume {
            let status = self.status(&entry)?;
            let on = self.on_dir(&entry, on)?;
            if !status.storage.is_some_and(|s| s.dir.starts_with(&on)) {
                return Err(VssError::new(
                    VssCode::ObjectNotFound,
                    format!("{for_volume} has no shadow storage on {}", on.display()),
                ));
            }
        }
        self.call(&entry, &Request::DeleteStorage, LONG_TIMEOUT)?;
        Ok(())
    }

    pub fn list_storage(
        &self,
        for_volume: Option<&str>,
        on_volume: Option<&str>,
    ) -> VssResult<Vec<ShadowStorageInfo>> {
        let for_filter = for_volume.map(|f| self.need_entry(f)).transpose()?;
        let on_filter = on_volume
            .map(|o| {
                vss_sys::mounts::volume_of(Path::new(o))
                    .map(|v| PathBuf::from(v.mount_point))
                    .map_err(|e| VssError::new(VssCode::ObjectNotFound, format!("{o}: {e}")))
            })
            .transpose()?;
        let mut out = Vec::new();
        for entry in self.entries() {
            if for_filter
                .as_ref()
                .is_some_and(|f| f.config.volume_id != entry.config.volume_id)
            {
                continue;
            }
            let Ok(status) = self.status(&entry) else {
                continue;
            };
            let Some(storage) = status.storage else {
                continue;
            };
            let on = vss_sys::mounts::volume_of(&storage.dir)
                .map(|v| v.mount_point)
                .unwrap_or_else(|_| storage.dir.display().to_string());
            if on_filter.as_ref().is_some_and(|o| Path::new(&on) != o) {
                continue;
            }
            let for_name = volume_name(&entry.config.mount_point);
            let on_name = volume_name(Path::new(&on));
            out.push(ShadowStorageInfo {
                for_volume: entry.config.mount_point.display().to_string(),
                for_volume_name: for_name,
                on_volume: on,
                on_volume_name: on_name,
                used_bytes: storage.used_bytes,
                allocated_bytes: storage.allocated_bytes,
                max_bytes: storage.max_bytes,
                volume_size_bytes: status.size_bytes,
            });
        }
        Ok(out)
    }

    pub fn revert(&self, entry: &VolumeEntry, shadow_id: Guid, force: bool) -> VssResult<()> {
        self.call(
            entry,
            &Request::Revert {
                shadow_id: id_text(shadow_id.as_uuid().as_u128()),
                force,
            },
            LONG_TIMEOUT,
        )?;
        Ok(())
    }
}

/// `\\?\Volume{…}\` of a mounted filesystem, as the rest of vssadmin shows
/// volumes.
fn volume_name(mount: &Path) -> String {
    vss_sys::mounts::volume_of(mount)
        .map(|v| format!("\\\\?\\Volume{}\\", v.volume_guid))
        .unwrap_or_default()
}

fn vss_cow_chunk_size() -> u32 {
    16 * 1024
}
