//! One volume served: the engine over the device, the live image and the
//! shadow images in the block front end, the loop device and the mount of
//! the live filesystem, and the control socket vssd talks to.
//!
//! The server is its own process so that a restart of vssd never takes the
//! device from under a mounted filesystem.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use vss_cow::{
    Backing, CowError, CowVolume, CreateOptions, DirStorage, Event, FileBacking, Tuning,
};
use vss_cow_fuse::{BlockFrontend, BlockImage, FuseFrontend};
use vss_sys::loopdev::{self, LoopDevice, LoopOptions};
use vss_sys::MountFlags;

use crate::config::{StorageConfig, VolumeConfig};
use crate::protocol::{
    id_text, parse_id, ErrorKind, ErrorReply, Evicted, Reply, Request, RevertProgress, ShadowEntry,
    Status, StorageStatus,
};

const LIVE: &str = "live";
/// How long a withdrawal waits for the kernel to let go of an image.
const RELEASE_WAIT: Duration = Duration::from_secs(10);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Name of a shadow's image: its braced GUID.
pub fn image_name(id: u128) -> String {
    uuid::Uuid::from_u128(id).braced().to_string()
}

/// The live volume as the front end sees it: through the engine when the
/// volume has shadow storage, straight to the device when it has none.
struct LiveImage {
    device: Arc<FileBacking>,
    size: u64,
    engine: RwLock<Option<Arc<CowVolume>>>,
}

fn to_io(e: CowError) -> std::io::Error {
    std::io::Error::from_raw_os_error(e.errno())
}

impl BlockImage for LiveImage {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_only(&self) -> bool {
        false
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        // Through the engine: it may hold live writes back until their
        // copies are durable, and reads must see them.
        let engine = self.engine.read().unwrap_or_else(|p| p.into_inner());
        match engine.as_ref() {
            Some(e) => e.read_live(buf, offset).map_err(to_io),
            None => self.device.read_at(buf, offset),
        }
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.write_at_then(buf, offset, &mut || {})
    }
    /// The engine may accept a write before preserving what it overwrites.
    fn write_at_then(
        &self,
        buf: &[u8],
        offset: u64,
        accepted: &mut dyn FnMut(),
    ) -> std::io::Result<()> {
        let engine = self.engine.read().unwrap_or_else(|p| p.into_inner());
        match engine.as_ref() {
            Some(e) => e.write_live_then(buf, offset, accepted).map_err(to_io),
            None => self.device.write_at(buf, offset),
        }
    }
    /// The volume's flush: the engine's barrier, then the device's sync.
    fn flush(&self) -> std::io::Result<()> {
        let engine = self.engine.read().unwrap_or_else(|p| p.into_inner());
        match engine.as_ref() {
            Some(e) => e.flush_live().map_err(to_io),
            None => self.device.sync(),
        }
    }
}

struct ShadowImage {
    engine: Arc<CowVolume>,
    shadow_id: u128,
}

impl BlockImage for ShadowImage {
    fn size(&self) -> u64 {
        self.engine.volume_size()
    }
    fn read_only(&self) -> bool {
        true
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.engine
            .read_shadow(self.shadow_id, buf, offset)
            .map_err(|e| {
                tracing::error!(shadow = %image_name(self.shadow_id), error = %e, "shadow read failed");
                to_io(e)
            })
    }
    fn write_at(&self, _buf: &[u8], _offset: u64) -> std::io::Result<()> {
        Err(std::io::Error::from_raw_os_error(libc::EROFS))
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
}

struct RevertState {
    shadow_id: u128,
    total: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
    started_unix: i64,
    outcome: Arc<Mutex<Option<Result<(), String>>>>,
}

pub struct VolumeServer {
    config_path: PathBuf,
    config: Mutex<VolumeConfig>,
    live: Arc<LiveImage>,
    frontend: FuseFrontend,
    loop_device: Mutex<Option<LoopDevice>>,
    evicted: Arc<Mutex<Vec<Evicted>>>,
    events: Mutex<Option<mpsc::Sender<Event>>>,
    revert: Mutex<Option<RevertState>>,
    stopping: AtomicBool,
    /// Set by the reorder thread: see `StorageStatus::copies_in_order`.
    copies_in_order: Arc<AtomicBool>,
}

/// Live writes of at least this size (the engine's writes of held chunks
/// at a barrier too, in runs of up to 1 MiB) go to the device past the
/// page cache (see `FileBacking::with_large_writes_direct`); smaller ones
/// go through it.
const LIVE_DIRECT_WRITE_BYTES: usize = 64 << 10;

/// Copies moved into chunk order per step of the reorder: each step holds
/// off new copies for its few milliseconds.
const REORDER_STEP_BYTES: usize = 4 << 20;
/// Longest run of reorder steps in a row (see `reorder_burst`).
const REORDER_BURST: Duration = Duration::from_millis(100);

/// Moves copies into chunk order in steps of `REORDER_STEP_BYTES` for at
/// most `REORDER_BURST`, or until `stop` says so after a step. True when
/// none is left out of order.
fn reorder_burst(engine: &CowVolume, stop: impl Fn() -> bool) -> vss_cow::CowResult<bool> {
    let step = (REORDER_STEP_BYTES / engine.chunk_size() as usize).max(2);
    let started = std::time::Instant::now();
    loop {
        if engine.reorder_copies(step)? == 0 {
            return Ok(true);
        }
        if stop() || started.elapsed() >= REORDER_BURST {
            return Ok(false);
        }
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn tuning(config: &VolumeConfig) -> Tuning {
    Tuning {
        // VSS keeps 64 per volume; beyond the limit the cut fails with
        // 0x80042317 unless the admin chose to delete the oldest.
        max_shadows: config.max_shadows,
        evict_at_limit: config.delete_oldest_at_limit,
        ..Tuning::default()
    }
}

impl VolumeServer {
    /// Opens everything and mounts the live filesystem.
    pub fn start(config_path: &Path) -> anyhow::Result<Arc<VolumeServer>> {
        let config = VolumeConfig::load(config_path)?;
        if let Err(e) = vss_sys::set_io_flusher() {
            // Without it, memory reclaim may wait on writes that only this
            // process can complete; needs CAP_SYS_RESOURCE.
            tracing::warn!(error = %e, "cannot mark the volume server as an I/O flusher");
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.run_dir)
            .with_context(|| format!("cannot create {}", config.run_dir.display()))?;
        std::fs::set_permissions(&config.run_dir, std::fs::Permissions::from_mode(0o700))?;
        let device = Arc::new(
            FileBacking::open(&config.device, true)
                .with_context(|| format!("cannot open {}", config.device.display()))?
                .with_large_writes_direct(&config.device, LIVE_DIRECT_WRITE_BYTES),
        );
        let size = device.len()?;
        let live = Arc::new(LiveImage {
            device: device.clone(),
            size,
            engine: RwLock::new(None),
        });
        let frontend = FuseFrontend::mount(&config.images_dir())
            .map_err(|e| anyhow!("cannot start the block front end: {e}"))?;
        let server = Arc::new(VolumeServer {
            config_path: config_path.to_owned(),
            config: Mutex::new(config.clone()),
            live,
            frontend,
            loop_device: Mutex::new(None),
            evicted: Arc::new(Mutex::new(Vec::new())),
            events: Mutex::new(None),
            revert: Mutex::new(None),
            stopping: AtomicBool::new(false),
            copies_in_order: Arc::new(AtomicBool::new(false)),
        });
        server.start_event_thread();
        server.start_flusher_thread();
        server.start_preparer_thread();
        if config.reorder_copies_when_idle {
            server.start_reorder_thread();
        } else {
            server.copies_in_order.store(true, Ordering::SeqCst);
        }
        if let Some(storage) = &config.storage {
            server.open_storage(&storage.dir)?;
        }
        server
            .frontend
            .publish(LIVE, server.live.clone())
            .map_err(|e| anyhow!("cannot publish the live image: {e}"))?;
        server.publish_shadows()?;
        if let Some(pending) = config.revert_pending.as_deref() {
            let id = parse_id(pending).ok_or_else(|| anyhow!("bad revert-pending id {pending}"))?;
            tracing::warn!(shadow = %image_name(id), "finishing a revert interrupted by a restart");
            server.run_revert(id)?;
            if let Some(r) = lock(&server.revert).as_ref() {
                *lock(&r.outcome) = Some(Ok(()));
            }
        }
        server.attach_and_mount()?;
        Ok(server)
    }

    fn engine(&self) -> Option<Arc<CowVolume>> {
        self.live
            .engine
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn start_event_thread(self: &Arc<Self>) {
        let (tx, rx) = mpsc::channel::<Event>();
        *lock(&self.events) = Some(tx);
        let weak = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("volume-events".into())
            .spawn(move || {
                for event in rx {
                    let Some(server) = weak.upgrade() else { break };
                    server.on_event(event);
                }
            })
            .expect("spawn the event thread");
    }

    /// Copied writes are held by the engine until a barrier; this thread
    /// takes one in the background whenever 8 MiB are held, or after a
    /// second, so writers seldom wait for one and held data stays young.
    /// While writes come faster than barriers finish, the next barrier
    /// follows at once (a pause would let writers reach the engine's limit
    /// and wait for a barrier themselves); a bounded number, so that the
    /// thread still sees the server stop.
    fn start_flusher_thread(self: &Arc<Self>) {
        const SOON: u64 = 8 << 20;
        const BACK_TO_BACK: usize = 64;
        let mut last = std::time::Instant::now();
        self.spawn_engine_task("volume-flusher", Duration::from_millis(5), move |engine| {
            for _ in 0..BACK_TO_BACK {
                let held = engine.held_bytes();
                if held < SOON && (held == 0 || last.elapsed() < Duration::from_secs(1)) {
                    break;
                }
                if let Err(e) = engine.flush_held() {
                    tracing::error!(error = %e, "background barrier failed");
                    break;
                }
                last = std::time::Instant::now();
            }
        });
    }

    /// Keeps shadow storage's data file reserved and synced ahead of the
    /// copies (`CowVolume::prepare_storage`), so that growing it is not
    /// paid inside a writer's request.
    fn start_preparer_thread(self: &Arc<Self>) {
        let mut failing = false;
        self.spawn_engine_task(
            "volume-preparer",
            Duration::from_millis(20),
            move |engine| {
                match engine.prepare_storage() {
                    Ok(_) => failing = false,
                    // Once per failure streak: the copy path reports what it
                    // cannot do itself.
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "cannot prepare shadow storage ahead");
                    }
                    Err(_) => {}
                }
            },
        );
    }

    /// Once no write came for two seconds, moves preserved copies into
    /// chunk order (`reorder_burst` every 200 ms), until none is left out
    /// of order or a write comes (each step holds off copies for its few
    /// milliseconds only). Copies made by random writes lie in the order of the
    /// writes; a backup reading the shadow in order would otherwise read
    /// shadow storage scattered, one chunk per request.
    fn start_reorder_thread(self: &Arc<Self>) {
        const IDLE: Duration = Duration::from_secs(2);
        let in_order = self.copies_in_order.clone();
        let mut seen = u64::MAX;
        let mut quiet_since = std::time::Instant::now();
        self.spawn_engine_task(
            "volume-reorder",
            Duration::from_millis(200),
            move |engine| {
                let writes = engine.live_writes();
                if writes != seen {
                    seen = writes;
                    quiet_since = std::time::Instant::now();
                    in_order.store(false, Ordering::SeqCst);
                    return;
                }
                if quiet_since.elapsed() < IDLE || in_order.load(Ordering::SeqCst) {
                    return;
                }
                match reorder_burst(engine, || engine.live_writes() != seen) {
                    Ok(true) => in_order.store(engine.live_writes() == seen, Ordering::SeqCst),
                    Ok(false) => {}
                    Err(e) => {
                        // Until the next write: no retry loop on a failing
                        // storage.
                        tracing::warn!(error = %e, "cannot reorder preserved copies");
                        in_order.store(true, Ordering::SeqCst);
                    }
                }
            },
        );
    }

    /// A background thread that runs `task` on the engine (while there is
    /// shadow storage) every `period`, until the server stops or goes.
    fn spawn_engine_task(
        self: &Arc<Self>,
        name: &str,
        period: Duration,
        mut task: impl FnMut(&CowVolume) + Send + 'static,
    ) {
        let weak = Arc::downgrade(self);
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || loop {
                std::thread::sleep(period);
                let Some(server) = weak.upgrade() else { break };
                if server.is_stopping() {
                    break;
                }
                if let Some(engine) = server.engine() {
                    task(&engine);
                }
            })
            .unwrap_or_else(|e| panic!("spawn the {name} thread: {e}"));
    }

    /// Engine events arrive here, off the engine's locks.
    fn on_event(&self, event: Event) {
        match event {
            Event::ShadowEvicted {
                shadow_id,
                reason,
                used_bytes,
                max_bytes,
            } => {
                let reason_text = match reason {
                    vss_cow::DeleteReason::MaxSizeReached => {
                        "the shadow storage reached its maximum size"
                    }
                    vss_cow::DeleteReason::StorageFull => {
                        "the filesystem holding the shadow storage is full"
                    }
                    vss_cow::DeleteReason::ShadowLimit => {
                        "the volume reached its shadow copy limit"
                    }
                    vss_cow::DeleteReason::Resized => {
                        "the shadow storage was resized below its use"
                    }
                    vss_cow::DeleteReason::Requested => "deleted on request",
                };
                tracing::warn!(
                    VSS_EVENT = "shadow-evicted",
                    shadow = %image_name(shadow_id),
                    used_bytes,
                    max_bytes = max_bytes.map_or(-1, |m| m as i64),
                    "shadow copy {} deleted, oldest first, because {reason_text}; the live write went through",
                    image_name(shadow_id)
                );
                lock(&self.evicted).push(Evicted {
                    shadow_id: id_text(shadow_id),
                    reason: reason_text.to_owned(),
                    unix_time: now_unix(),
                });
                // Its data is gone: cut off any reader at once.
                let _ = self.frontend.force_withdraw(&image_name(shadow_id));
            }
            Event::ShadowLost { shadow_id, reason } => {
                tracing::error!(
                    VSS_EVENT = "shadow-lost",
                    shadow = %image_name(shadow_id),
                    ?reason,
                    "shadow copy {} can no longer be read back exactly and is reported lost",
                    image_name(shadow_id)
                );
            }
        }
    }

    fn sink(&self) -> vss_cow::EventSink {
        let tx = Mutex::new(lock(&self.events).clone());
        Arc::new(move |e: &Event| {
            if let Some(tx) = lock(&tx).as_ref() {
                let _ = tx.send(e.clone());
            }
        })
    }

    fn open_storage(&self, dir: &Path) -> anyhow::Result<()> {
        let storage = Arc::new(
            DirStorage::open(dir)
                .with_context(|| format!("cannot open shadow storage {}", dir.display()))?,
        );
        let (engine, recovery) = CowVolume::open(
            self.live.device.clone(),
            storage,
            tuning(&lock(&self.config)),
            Some(self.sink()),
        )
        .map_err(|e| anyhow!("cannot open shadow storage {}: {e}", dir.display()))?;
        for (id, reason) in &recovery.lost {
            tracing::error!(shadow = %image_name(*id), ?reason, "shadow found lost while opening shadow storage");
        }
        if recovery.journal_bytes_dropped > 0 {
            tracing::warn!(
                bytes = recovery.journal_bytes_dropped,
                "a torn journal append was cut off (crash while writing)"
            );
        }
        *self.live.engine.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(engine));
        Ok(())
    }

    fn publish_shadows(&self) -> anyhow::Result<()> {
        let Some(engine) = self.engine() else {
            return Ok(());
        };
        let published = self.frontend.published();
        for s in engine.shadows() {
            let name = image_name(s.shadow_id);
            if !published.contains(&name) {
                self.frontend
                    .publish(
                        &name,
                        Arc::new(ShadowImage {
                            engine: engine.clone(),
                            shadow_id: s.shadow_id,
                        }),
                    )
                    .map_err(|e| anyhow!("cannot publish shadow {name}: {e}"))?;
            }
        }
        Ok(())
    }

    fn live_image_path(&self) -> PathBuf {
        lock(&self.config).images_dir().join(LIVE)
    }

    /// Attaches a loop device to the live image and mounts the filesystem.
    fn attach_and_mount(&self) -> anyhow::Result<()> {
        let config = lock(&self.config).clone();
        // A mount left by an earlier life of this server sits on a loop
        // device whose image is gone: detach it first.
        if vss_sys::is_mount_point(&config.mount_point).unwrap_or(false) {
            let entries = vss_sys::mounts::mountinfo()?;
            let ours_stale = entries
                .iter()
                .filter(|m| m.mount_point == config.mount_point)
                .any(|m| {
                    loopdev::backing_file(Path::new(&m.source))
                        .ok()
                        .flatten()
                        .is_some_and(|b| b.starts_with(&config.run_dir))
                });
            if !ours_stale {
                bail!(
                    "{} is already a mount point; unmount it first",
                    config.mount_point.display()
                );
            }
            tracing::warn!(mount = %config.mount_point.display(), "detaching a stale mount of this volume");
            vss_sys::unmount_with(&config.mount_point, true)?;
        }
        let dev = loopdev::attach(
            &self.live_image_path(),
            &LoopOptions {
                direct_io: true,
                ..LoopOptions::default()
            },
        )
        .context("cannot attach a loop device to the live image")?;
        std::fs::create_dir_all(&config.mount_point)?;
        if let Err(e) = vss_sys::mount_fs(
            dev.path(),
            &config.mount_point,
            &config.fs_type,
            MountFlags::default(),
            "",
        ) {
            let _ = dev.detach();
            return Err(anyhow!(
                "cannot mount {} ({}) at {}: {e}",
                config.device.display(),
                config.fs_type,
                config.mount_point.display()
            ));
        }
        tracing::info!(device = %dev.path().display(), mount = %config.mount_point.display(), "live filesystem mounted");
        *lock(&self.loop_device) = Some(dev);
        Ok(())
    }

    /// Unmounts the live filesystem and lets go of its loop device.
    /// `force`: a busy filesystem is cut off (its users get I/O errors).
    fn unmount_and_detach(&self, force: bool) -> Result<(), ErrorReply> {
        let mount_point = lock(&self.config).mount_point.clone();
        if vss_sys::is_mount_point(&mount_point).unwrap_or(false) {
            if let Err(e) = vss_sys::unmount(&mount_point) {
                if !force || e.raw_os_error() != Some(libc::EBUSY) {
                    return Err(err(
                        ErrorKind::VolumeInUse,
                        format!("cannot unmount {}: {e}", mount_point.display()),
                    ));
                }
                tracing::warn!(mount = %mount_point.display(), "forcing the dismount of a busy filesystem");
                let _ = self.frontend.force_withdraw(LIVE);
                vss_sys::unmount_with(&mount_point, true)
                    .map_err(|e| err(ErrorKind::Internal, format!("lazy unmount failed: {e}")))?;
            }
        }
        if let Some(dev) = lock(&self.loop_device).take() {
            if let Err(e) = dev.detach() {
                tracing::warn!(error = %e, "cannot detach the live loop device");
            }
        }
        // The kernel lets go of the image a little after the detach.
        match self.frontend.withdraw_when_idle(LIVE, RELEASE_WAIT) {
            Ok(()) | Err(vss_cow_fuse::FrontendError::NotPublished(_)) => Ok(()),
            Err(e) => Err(err(
                ErrorKind::VolumeInUse,
                format!("the live image is still open: {e}"),
            )),
        }
    }

    fn save_config(&self, c: &VolumeConfig) -> Result<(), ErrorReply> {
        c.save(&self.config_path).map_err(|e| {
            err(
                ErrorKind::Internal,
                format!("cannot save {}: {e}", self.config_path.display()),
            )
        })
    }

    pub fn status(&self) -> Status {
        let config = lock(&self.config).clone();
        let engine = self.engine();
        let images = config.images_dir();
        Status {
            volume_id: config.volume_id.clone(),
            device: config.device.clone(),
            mount_point: config.mount_point.clone(),
            fs_type: config.fs_type.clone(),
            size_bytes: self.live.size,
            live_image: images.join(LIVE),
            loop_device: lock(&self.loop_device)
                .as_ref()
                .map(|d| d.path().to_owned()),
            mounted: vss_sys::is_mount_point(&config.mount_point).unwrap_or(false),
            storage: engine.as_ref().zip(config.storage.as_ref()).map(|(e, s)| {
                let u = e.usage();
                StorageStatus {
                    dir: s.dir.clone(),
                    chunk_size: e.chunk_size(),
                    used_bytes: u.used_bytes,
                    allocated_bytes: u.allocated_bytes,
                    max_bytes: u.max_bytes,
                    copies_in_order: self.copies_in_order.load(Ordering::SeqCst),
                }
            }),
            shadows: engine
                .map(|e| {
                    e.shadows()
                        .into_iter()
                        .map(|s| ShadowEntry {
                            shadow_id: id_text(s.shadow_id),
                            created_unix_ns: s.created_unix_ns,
                            image: images.join(image_name(s.shadow_id)),
                            lost: s.lost.map(|r| format!("{r:?}")),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            evicted: lock(&self.evicted).clone(),
            revert: lock(&self.revert).as_ref().map(|r| RevertProgress {
                shadow_id: id_text(r.shadow_id),
                total_chunks: r.total.load(Ordering::Relaxed),
                done_chunks: r.done.load(Ordering::Relaxed),
                started_unix: r.started_unix,
                outcome: lock(&r.outcome).clone(),
            }),
        }
    }

    fn shadow_id(text: &str) -> Result<u128, ErrorReply> {
        parse_id(text).ok_or_else(|| {
            err(
                ErrorKind::BadRequest,
                format!("'{text}' is not a shadow id"),
            )
        })
    }

    fn need_engine(&self) -> Result<Arc<CowVolume>, ErrorReply> {
        self.engine().ok_or_else(|| {
            err(
                ErrorKind::NoStorage,
                "the volume has no shadow storage".to_owned(),
            )
        })
    }

    fn reverting(&self) -> bool {
        lock(&self.revert)
            .as_ref()
            .is_some_and(|r| lock(&r.outcome).is_none())
    }

    pub fn handle(self: &Arc<Self>, request: Request) -> Result<Reply, ErrorReply> {
        if self.reverting() && !matches!(request, Request::Status) {
            return Err(err(
                ErrorKind::RevertInProgress,
                "a revert is running on this volume".into(),
            ));
        }
        match request {
            Request::Status => Ok(Reply::Status(Box::new(self.status()))),
            Request::Cut {
                shadow_id,
                free,
                created_unix_ns,
            } => {
                let id = Self::shadow_id(&shadow_id)?;
                let engine = self.need_engine()?;
                let info = engine
                    .create_shadow(id, &free, created_unix_ns)
                    .map_err(cow_err)?;
                let name = image_name(id);
                let image = self
                    .frontend
                    .publish(
                        &name,
                        Arc::new(ShadowImage {
                            engine,
                            shadow_id: id,
                        }),
                    )
                    .map_err(|e| err(ErrorKind::Internal, format!("cannot publish {name}: {e}")))?;
                Ok(Reply::Shadow(ShadowEntry {
                    shadow_id: id_text(id),
                    created_unix_ns: info.created_unix_ns,
                    image,
                    lost: None,
                }))
            }
            Request::Delete { shadow_id } => {
                let id = Self::shadow_id(&shadow_id)?;
                let engine = self.need_engine()?;
                if engine.shadow(id).is_none() {
                    return Err(err(
                        ErrorKind::NoSuchShadow,
                        format!("no shadow {}", image_name(id)),
                    ));
                }
                match self
                    .frontend
                    .withdraw_when_idle(&image_name(id), RELEASE_WAIT)
                {
                    Ok(()) | Err(vss_cow_fuse::FrontendError::NotPublished(_)) => {}
                    Err(e) => {
                        return Err(err(
                            ErrorKind::VolumeInUse,
                            format!("shadow {} is in use (exposed?): {e}", image_name(id)),
                        ))
                    }
                }
                engine.delete_shadow(id).map_err(cow_err)?;
                Ok(Reply::Ok)
            }
            Request::AddStorage {
                dir,
                max_bytes,
                chunk_size,
            } => self.add_storage(dir, max_bytes, chunk_size),
            Request::ResizeStorage { max_bytes } => {
                let engine = self.need_engine()?;
                engine.set_max_bytes(max_bytes).map_err(cow_err)?;
                Ok(Reply::Ok)
            }
            Request::DeleteStorage => self.delete_storage(),
            Request::Revert { shadow_id, force } => {
                let id = Self::shadow_id(&shadow_id)?;
                self.start_revert(id, force)?;
                Ok(Reply::Ok)
            }
            Request::Retire => self.retire(),
            Request::SetShadowLimit {
                max_shadows,
                delete_oldest_at_limit,
            } => {
                if !(1..=512).contains(&max_shadows) {
                    return Err(err(
                        ErrorKind::BadRequest,
                        format!("a shadow limit of {max_shadows} is outside 1–512"),
                    ));
                }
                let mut config = lock(&self.config).clone();
                config.max_shadows = max_shadows;
                config.delete_oldest_at_limit = delete_oldest_at_limit;
                self.save_config(&config)?;
                *lock(&self.config) = config;
                if let Some(e) = self.engine() {
                    e.set_shadow_limit(max_shadows, delete_oldest_at_limit);
                }
                Ok(Reply::Ok)
            }
            Request::Stop => {
                self.stop()?;
                Ok(Reply::Ok)
            }
            Request::ReorderCopies => {
                let engine = self.need_engine()?;
                let done = reorder_burst(&engine, || false).map_err(cow_err)?;
                Ok(Reply::Reordered { done })
            }
        }
    }

    fn add_storage(
        &self,
        dir: PathBuf,
        max_bytes: Option<u64>,
        chunk_size: u32,
    ) -> Result<Reply, ErrorReply> {
        if self.engine().is_some() {
            return Err(err(
                ErrorKind::StorageExists,
                "the volume already has shadow storage".into(),
            ));
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| {
                err(
                    ErrorKind::BadRequest,
                    format!("cannot create {}: {e}", dir.display()),
                )
            })?;
        let created = (|| -> Result<(), ErrorReply> {
            let storage = Arc::new(DirStorage::create(&dir).map_err(|e| {
                err(
                    ErrorKind::Internal,
                    format!("cannot create shadow storage: {e}"),
                )
            })?);
            let volume_id = parse_id(&lock(&self.config).volume_id).unwrap_or(0);
            let engine = CowVolume::create(
                self.live.device.clone(),
                storage,
                CreateOptions {
                    storage_id: uuid::Uuid::new_v4().as_u128(),
                    volume_id,
                    chunk_size,
                    max_bytes,
                    created_unix: now_unix(),
                },
                tuning(&lock(&self.config)),
                Some(self.sink()),
            )
            .map_err(cow_err)?;
            let mut config = lock(&self.config).clone();
            config.storage = Some(StorageConfig { dir: dir.clone() });
            self.save_config(&config)?;
            *lock(&self.config) = config;
            // Writes wait here for the switch from the device to the
            // engine; none is lost or doubled.
            *self.live.engine.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(engine));
            Ok(())
        })();
        if let Err(e) = created {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        tracing::info!(dir = %dir.display(), ?max_bytes, "shadow storage added");
        Ok(Reply::Ok)
    }

    fn delete_storage(&self) -> Result<Reply, ErrorReply> {
        let engine = self.need_engine()?;
        for s in engine.shadows() {
            match self
                .frontend
                .withdraw_when_idle(&image_name(s.shadow_id), RELEASE_WAIT)
            {
                Ok(()) | Err(vss_cow_fuse::FrontendError::NotPublished(_)) => {}
                Err(e) => {
                    return Err(err(
                        ErrorKind::VolumeInUse,
                        format!(
                            "shadow {} is in use (exposed?): {e}",
                            image_name(s.shadow_id)
                        ),
                    ))
                }
            }
        }
        {
            // Writes held for a barrier reach the device before it is used
            // without the engine; writes wait meanwhile.
            let mut slot = self.live.engine.write().unwrap_or_else(|p| p.into_inner());
            engine
                .flush_live()
                .map_err(|e| err(ErrorKind::Internal, format!("cannot flush the volume: {e}")))?;
            *slot = None;
        }
        let mut config = lock(&self.config).clone();
        let dir = config.storage.take().map(|s| s.dir);
        self.save_config(&config)?;
        *lock(&self.config) = config;
        drop(engine);
        if let Some(dir) = dir {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove shadow storage");
            }
        }
        tracing::info!("shadow storage and all its shadows deleted");
        Ok(Reply::Ok)
    }

    fn start_revert(self: &Arc<Self>, id: u128, force: bool) -> Result<(), ErrorReply> {
        let engine = self.need_engine()?;
        match engine.shadow(id) {
            None => {
                return Err(err(
                    ErrorKind::NoSuchShadow,
                    format!("no shadow {}", image_name(id)),
                ))
            }
            Some(s) if s.lost.is_some() => {
                return Err(err(
                    ErrorKind::BadRequest,
                    format!("shadow {} is lost", image_name(id)),
                ))
            }
            Some(_) => {}
        }
        self.unmount_and_detach(force)?;
        let mut config = lock(&self.config).clone();
        config.revert_pending = Some(id_text(id));
        self.save_config(&config)?;
        *lock(&self.config) = config;
        // Reported from now on, before the thread runs.
        self.new_revert_state(id);
        let server = self.clone();
        std::thread::Builder::new()
            .name("revert".into())
            .spawn(move || {
                let result = server
                    .run_revert(id)
                    .and_then(|()| server.republish_live())
                    .and_then(|()| server.attach_and_mount());
                if let Err(e) = &result {
                    tracing::error!(error = %e, "revert failed; the volume stays unmounted");
                }
                if let Some(r) = lock(&server.revert).as_ref() {
                    *lock(&r.outcome) = Some(result.map_err(|e| e.to_string()));
                }
            })
            .map_err(|e| err(ErrorKind::Internal, format!("cannot start the revert: {e}")))?;
        Ok(())
    }

    fn republish_live(&self) -> anyhow::Result<()> {
        if !self.frontend.published().iter().any(|n| n == LIVE) {
            self.frontend
                .publish(LIVE, self.live.clone())
                .map_err(|e| anyhow!("cannot publish the live image: {e}"))?;
        }
        Ok(())
    }

    fn new_revert_state(&self, id: u128) {
        *lock(&self.revert) = Some(RevertState {
            shadow_id: id,
            total: Arc::new(AtomicU64::new(0)),
            done: Arc::new(AtomicU64::new(0)),
            started_unix: now_unix(),
            outcome: Arc::new(Mutex::new(None)),
        });
    }

    /// Writes shadow `id` back; the filesystem is not mounted.
    fn run_revert(&self, id: u128) -> anyhow::Result<()> {
        let engine = self
            .engine()
            .ok_or_else(|| anyhow!("revert pending but the volume has no shadow storage"))?;
        let (total, done) = {
            let mut current = lock(&self.revert);
            if current.as_ref().is_none_or(|r| r.shadow_id != id) {
                drop(current);
                self.new_revert_state(id);
                current = lock(&self.revert);
            }
            let r = current.as_ref().expect("set above");
            (r.total.clone(), r.done.clone())
        };
        tracing::warn!(VSS_EVENT = "revert-started", shadow = %image_name(id), "reverting the volume to shadow {}", image_name(id));
        engine
            .revert_to(id, &total, &done)
            .map_err(|e| anyhow!("revert to {} failed: {e}", image_name(id)))?;
        let mut config = lock(&self.config).clone();
        config.revert_pending = None;
        config.save(&self.config_path)?;
        *lock(&self.config) = config;
        tracing::warn!(VSS_EVENT = "revert-completed", shadow = %image_name(id), "volume reverted to shadow {}", image_name(id));
        Ok(())
    }

    fn retire(&self) -> Result<Reply, ErrorReply> {
        if self.engine().is_some() {
            self.delete_storage()?;
        }
        self.unmount_and_detach(false)?;
        let config = lock(&self.config).clone();
        // The device keeps the live filesystem; mount it where it was. An
        // image file needs a loop device of its own (released with the
        // mount).
        let is_file = std::fs::metadata(&config.device).is_ok_and(|m| m.is_file());
        let plain_loop = if is_file {
            Some(
                loopdev::attach(
                    &config.device,
                    &LoopOptions {
                        autoclear: true,
                        ..LoopOptions::default()
                    },
                )
                .map_err(|e| {
                    err(
                        ErrorKind::Internal,
                        format!("cannot attach {}: {e}", config.device.display()),
                    )
                })?,
            )
        } else {
            None
        };
        let source = plain_loop
            .as_ref()
            .map_or(config.device.clone(), |d| d.path().to_owned());
        vss_sys::mount_fs(
            &source,
            &config.mount_point,
            &config.fs_type,
            MountFlags::default(),
            "",
        )
        .map_err(|e| {
            err(
                ErrorKind::Internal,
                format!(
                    "cannot mount {} at {}: {e}",
                    config.device.display(),
                    config.mount_point.display()
                ),
            )
        })?;
        let _ = std::fs::remove_file(&self.config_path);
        self.stopping.store(true, Ordering::SeqCst);
        Ok(Reply::Ok)
    }

    /// Stops serving: unmounts (refused while busy), detaches, unmounts the
    /// front end.
    pub fn stop(&self) -> Result<(), ErrorReply> {
        self.unmount_and_detach(false)?;
        self.stopping.store(true, Ordering::SeqCst);
        Ok(())
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Serves the control socket until a `Retire` (or `stop`) ends it.
    pub fn serve(self: &Arc<Self>) -> anyhow::Result<()> {
        let socket = lock(&self.config).socket_path();
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket)
            .with_context(|| format!("cannot listen on {}", socket.display()))?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        for stream in listener.incoming() {
            match stream {
                Ok(s) => {
                    if let Err(e) = self.answer(s) {
                        tracing::warn!(error = %e, "control connection failed");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "control socket accept failed"),
            }
            if self.is_stopping() {
                break;
            }
        }
        let _ = std::fs::remove_file(&socket);
        let _ = self.frontend.shutdown();
        Ok(())
    }

    fn answer(self: &Arc<Self>, stream: UnixStream) -> std::io::Result<()> {
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line)?;
        let reply = if line.len() > 1 << 20 {
            Reply::Error(err(ErrorKind::BadRequest, "request too large".into()))
        } else {
            match serde_json::from_str::<Request>(&line) {
                Ok(request) => {
                    if !matches!(request, Request::Status) {
                        tracing::info!(?request, "control request");
                    }
                    self.handle(request).unwrap_or_else(Reply::Error)
                }
                Err(e) => Reply::Error(err(ErrorKind::BadRequest, format!("not a request: {e}"))),
            }
        };
        let mut text = serde_json::to_string(&reply).map_err(std::io::Error::other)?;
        text.push('\n');
        (&stream).write_all(text.as_bytes())
    }
}

fn err(kind: ErrorKind, message: String) -> ErrorReply {
    ErrorReply { kind, message }
}

fn cow_err(e: CowError) -> ErrorReply {
    let kind = match &e {
        CowError::NoSuchShadow(_) => ErrorKind::NoSuchShadow,
        CowError::ShadowLimit { .. } => ErrorKind::ShadowLimit,
        CowError::ShadowExists(_) | CowError::OutOfRange { .. } => ErrorKind::BadRequest,
        CowError::Io { source, .. } if matches!(source.raw_os_error(), Some(libc::ENOSPC)) => {
            ErrorKind::InsufficientStorage
        }
        _ => ErrorKind::Internal,
    };
    err(kind, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The engine holds writes that needed copies until a barrier: the live
    /// image must read them back through the engine, and its flush must be
    /// the engine's barrier.
    #[test]
    fn live_image_reads_held_writes_and_flushes_them() {
        let dir = tempfile::tempdir().unwrap();
        let dev_path = dir.path().join("dev.img");
        std::fs::File::create(&dev_path)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let device = Arc::new(FileBacking::open(&dev_path, true).unwrap());
        std::fs::create_dir(dir.path().join("storage")).unwrap();
        let storage = Arc::new(DirStorage::create(&dir.path().join("storage")).unwrap());
        let engine = CowVolume::create(
            device.clone(),
            storage,
            CreateOptions {
                storage_id: 1,
                volume_id: 2,
                chunk_size: 16 * 1024,
                max_bytes: None,
                created_unix: 0,
            },
            Tuning::default(),
            None,
        )
        .unwrap();
        engine.create_shadow(7, &[], 0).unwrap();
        let live = LiveImage {
            device: device.clone(),
            size: 1 << 20,
            engine: RwLock::new(Some(Arc::new(engine))),
        };
        live.write_at(&[0xAB; 4096], 8192).unwrap();
        let mut buf = [0u8; 4096];
        live.read_at(&mut buf, 8192).unwrap();
        assert_eq!(buf, [0xAB; 4096], "a held write reads back");
        device.read_at(&mut buf, 8192).unwrap();
        assert_eq!(buf, [0; 4096], "not on the device before the barrier");
        live.flush().unwrap();
        device.read_at(&mut buf, 8192).unwrap();
        assert_eq!(buf, [0xAB; 4096], "on the device after the flush");
    }
}
