//! The LVM provider: a shadow copy of a logical volume is an LVM snapshot
//! of it, thick (old-style, with its own copy-on-write area) for ordinary
//! LVs and thin for thin volumes. What raw LVM lacks, it adds:
//!
//! - shadow storage for thick snapshots: `vssadmin add shadowstorage
//!   /for=VOLUME /on=VG /maxsize=SIZE` bounds the sum of a volume's
//!   snapshot areas (recorded as a tag on the origin LV);
//! - a watcher that extends a filling snapshot within that maximum, or
//!   deletes the volume's oldest shadow, before LVM would invalidate it;
//!   and that deletes the oldest shadows of a thin pool's volumes before
//!   the pool reaches its limit (90 % by default), so no live write ever
//!   stalls on a full pool;
//! - one instant for several volumes: the service freezes every filesystem
//!   of the set (FIFREEZE), then `commit` makes each snapshot inside the
//!   hold.
//!
//! Only LVs this provider made (named `vss-{shadow id}` and tagged
//! `vss_shadow`) are ever deleted, extended or merged.

pub mod dm;
pub mod lvm;
pub mod policy;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use vss_provider::{Committed, Health, HoldMethod, Provider, ProviderShadow};
use vss_types::{
    attr, provider, Guid, MaxSize, ProviderInfo, ProviderType, ShadowStorageInfo, Volume, VssCode,
    VssError, VssResult,
};

use crate::lvm::{
    Lv, Lvm, LvmError, Vg, CREATED_TAG_PREFIX, MAXSIZE_TAG_PREFIX, SHADOW_LV_PREFIX, SHADOW_TAG,
};
use crate::policy::{Action, Settings};

/// The LVM provider's id, `{4c5e9d2a-7b1f-4e3c-8a6d-2f9b0c1e5d47}`: made up
/// for this project and fixed forever (stored with every shadow).
pub const LVM_PROVIDER_ID: Guid = Guid::from_u128(0x4c5e_9d2a_7b1f_4e3c_8a6d_2f9b_0c1e_5d47);

/// Below btrfs (whose own snapshots are better for btrfs on an LV) and
/// above the simulated provider.
pub const LVM_PREFERENCE: u32 = 90;

/// Recorded in the catalog with each shadow.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShadowData {
    pub vg: String,
    pub lv: String,
    pub origin: String,
    pub thin: bool,
    pub fs_type: String,
}

/// Tuning of the provider (`[providers]` in vss.toml).
#[derive(Clone, Debug)]
pub struct LvmConfig {
    pub settings: Settings,
    /// How often the watcher reads fill levels.
    pub poll_interval: Duration,
}

impl Default for LvmConfig {
    fn default() -> Self {
        LvmConfig {
            settings: Settings::default(),
            poll_interval: Duration::from_millis(250),
        }
    }
}

/// What `prepare` worked out for `commit`.
#[derive(Clone, Debug)]
struct Planned {
    origin: Lv,
    thick_size: u64,
}

/// LVM's view, kept between watcher ticks: `lvs` and `vgs` cost far more
/// than `dmsetup status`, and the layout changes only when snapshots come
/// or go or are extended.
struct Layout {
    lvs: Vec<Lv>,
    vgs: Vec<Vg>,
    read_at: Instant,
    watched: Vec<String>,
}

/// How long a layout is trusted when device-mapper shows no change.
const LAYOUT_MAX_AGE: Duration = Duration::from_secs(5);

pub struct LvmProvider {
    lvm: Lvm,
    config: LvmConfig,
    layout: Mutex<Option<Layout>>,
    planned: Mutex<BTreeMap<Guid, Planned>>,
    /// The set's origins, suspended from the first commit to the last.
    hold: Mutex<Option<Hold>>,
    /// Set while origins are suspended: the watcher then leaves LVM alone.
    holding: std::sync::atomic::AtomicBool,
    /// Whether the watcher already said device-mapper is missing.
    dm_absent_logged: std::sync::atomic::AtomicBool,
    evicted: Mutex<Vec<(Guid, String)>>,
    /// One watcher pass at a time (the thread, `evicted`, `prepare`).
    pass: Mutex<()>,
}

fn lvm_error(e: LvmError) -> VssError {
    if e.no_space {
        VssError::new(VssCode::InsufficientStorage, e.to_string()).with_hint(
            "Free extents in the volume group (vgextend, or delete old shadows with \
             `vssadmin delete shadows /for=VOLUME /oldest`), or lower the shadow storage \
             maximum with `vssadmin resize shadowstorage`.",
        )
    } else {
        VssError::new(VssCode::UnexpectedProviderError, e.to_string())
            .with_hint("See the LVM message above; `lvs -a` shows the volume group's state.")
    }
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// `(major, minor)` of a block device file.
fn device_numbers(path: &Path) -> Option<(u32, u32)> {
    let rdev = std::fs::metadata(path).ok()?.rdev();
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    Some((major as u32, minor as u32))
}

/// The longest the origins stay suspended whatever happens to vssd (the
/// VSS hold limit): the guard resumes them then.
const HOLD_LIMIT_SECS: u32 = 10;

/// The origins of a set held by device-mapper suspend. Suspending with
/// lockfs flushes and freezes each filesystem the kernel's way; all are
/// suspended before the first snapshot is made, so the snapshots share one
/// instant. (FIFREEZE around lvcreate is not used: on Linux 6.12 a
/// device-mapper suspend nested in a userspace freeze leaves the block
/// device counted frozen, and the filesystem can then not be mounted
/// again.)
struct Hold {
    /// Device-mapper names of the suspended origins.
    devices: Vec<String>,
    /// Shadows of the set not committed yet.
    remaining: std::collections::BTreeSet<Guid>,
    /// A process that resumes the devices when vssd dies (its stdin, our
    /// pipe, closes) or the hold limit passes.
    guard: Option<std::process::Child>,
}

fn dmsetup(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("dmsetup")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run dmsetup: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "dmsetup {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn spawn_resume_guard(devices: &[String]) -> Option<std::process::Child> {
    // Deaf to the signals a service stop sends the whole unit: it must
    // outlive vssd to do its job.
    let script = "trap '' TERM INT HUP; timeout \"$0\" cat >/dev/null; \
                  for d in \"$@\"; do dmsetup resume \"$d\"; done";
    std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(HOLD_LIMIT_SECS.to_string())
        .args(devices)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| tracing::error!("cannot start the resume guard: {e}"))
        .ok()
}

impl Hold {
    fn release(mut self) {
        for d in &self.devices {
            if let Err(e) = dmsetup(&["resume", d]) {
                tracing::error!("cannot resume {d}: {e}");
            }
        }
        // Resumed here first, then the guard is stopped without running
        // its own resume, which could otherwise land in a later set's hold.
        if let Some(mut g) = self.guard.take() {
            let _ = g.kill();
            // Reaped off the hold path.
            std::thread::spawn(move || g.wait());
        }
    }
}

/// `vss-{uuid}` ↔ shadow id.
pub fn shadow_lv_name(shadow_id: Guid) -> String {
    format!("{SHADOW_LV_PREFIX}{}", shadow_id.as_uuid().hyphenated())
}

pub fn shadow_id_of(lv: &Lv) -> Option<Guid> {
    let rest = lv.name.strip_prefix(SHADOW_LV_PREFIX)?;
    Guid::parse(rest).ok()
}

impl LvmProvider {
    pub fn new(config: LvmConfig) -> Self {
        LvmProvider {
            lvm: Lvm::default(),
            config,
            layout: Mutex::new(None),
            planned: Mutex::new(BTreeMap::new()),
            hold: Mutex::new(None),
            holding: std::sync::atomic::AtomicBool::new(false),
            dm_absent_logged: std::sync::atomic::AtomicBool::new(false),
            evicted: Mutex::new(Vec::new()),
            pass: Mutex::new(()),
        }
    }

    /// Starts the watcher thread; it ends when the provider is dropped.
    pub fn start_watcher(self: &Arc<Self>) {
        let weak: Weak<Self> = Arc::downgrade(self);
        let interval = self.config.poll_interval;
        std::thread::Builder::new()
            .name("lvm-watch".into())
            .spawn(move || loop {
                std::thread::sleep(interval);
                let Some(p) = weak.upgrade() else { return };
                p.watch_once();
            })
            .expect("spawn the LVM watcher");
    }

    /// Reads fill levels once and acts on them. Cheap when there is
    /// nothing to watch: one `dmsetup status`, no LVM scan.
    pub fn watch_once(&self) -> Vec<Action> {
        if self.holding.load(std::sync::atomic::Ordering::SeqCst) {
            return Vec::new();
        }
        // Without device-mapper there is nothing to watch: say so once
        // instead of running dmsetup four times a second for nothing.
        if !dm::available() {
            if !self
                .dm_absent_logged
                .swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                tracing::info!("device-mapper is not available ({} cannot be opened); the LVM provider stays idle until it is", dm::CONTROL);
            }
            return Vec::new();
        }
        self.dm_absent_logged
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let _pass = self.pass.lock().unwrap_or_else(|p| p.into_inner());
        let status = match dm::status_all() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("lvm watcher: {e}");
                return Vec::new();
            }
        };
        let watched: Vec<String> = status
            .iter()
            .filter(|(_, s)| !matches!(s, dm::DmStatus::Other))
            .map(|(n, _)| n.clone())
            .collect();
        let mut cache = self.layout.lock().unwrap_or_else(|p| p.into_inner());
        if watched.is_empty() {
            *cache = None;
            return Vec::new();
        }
        let stale = cache
            .as_ref()
            .is_none_or(|l| l.watched != watched || l.read_at.elapsed() > LAYOUT_MAX_AGE);
        if stale {
            match (self.lvm.lvs(None), self.lvm.vgs()) {
                (Ok(lvs), Ok(vgs)) => {
                    *cache = Some(Layout {
                        lvs,
                        vgs,
                        read_at: Instant::now(),
                        watched,
                    })
                }
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!("lvm watcher cannot read LVM: {e}");
                    return Vec::new();
                }
            }
        }
        let layout = cache.as_ref().expect("read above");
        // Fill levels are fresh (device-mapper); sizes come from the
        // layout, which is read again after any change made here.
        let actions = policy::plan(&layout.lvs, &layout.vgs, &status, &self.config.settings);
        for a in &actions {
            self.apply(a, &layout.lvs);
        }
        if !actions.is_empty() {
            *cache = None;
        }
        actions
    }

    fn apply(&self, action: &Action, lvs: &[Lv]) {
        match action {
            Action::Extend { vg, lv, add } => match self.lvm.extend(vg, lv, *add) {
                Ok(()) => {
                    tracing::info!(lv = %format!("{vg}/{lv}"), add, "shadow storage: snapshot extended")
                }
                Err(e) => tracing::warn!("cannot extend {vg}/{lv}: {e}"),
            },
            Action::Evict { vg, lv, reason } => {
                let Some(l) = lvs.iter().find(|l| &l.vg == vg && &l.name == lv) else {
                    return;
                };
                let Some(id) = shadow_id_of(l) else { return };
                match self.lvm.remove(vg, lv) {
                    Ok(()) => {
                        tracing::warn!(shadow = %id, lv = %format!("{vg}/{lv}"), "shadow copy deleted: {reason}");
                        self.evicted
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((id, reason.clone()));
                    }
                    Err(e) => tracing::error!("cannot delete {vg}/{lv} ({reason}): {e}"),
                }
            }
        }
    }

    /// The LV holding `volume`'s filesystem.
    pub fn origin_of(&self, volume: &Volume) -> VssResult<Lv> {
        let numbers = device_numbers(Path::new(&volume.device)).ok_or_else(|| {
            VssError::new(
                VssCode::VolumeNotSupported,
                format!("{} is not a block device", volume.device),
            )
        })?;
        self.lvm
            .lvs(None)
            .map_err(lvm_error)?
            .into_iter()
            .find(|l| l.kernel == Some(numbers))
            .ok_or_else(|| {
                VssError::new(
                    VssCode::VolumeNotSupported,
                    format!(
                        "{} on {} is not a logical volume",
                        volume.fs_type, volume.device
                    ),
                )
            })
    }

    fn our_lv(&self, data: &ShadowData) -> VssResult<Option<Lv>> {
        Ok(self
            .lvm
            .lvs(Some(&data.vg))
            .map_err(lvm_error)?
            .into_iter()
            .find(|l| l.name == data.lv && l.is_ours()))
    }

    fn shadow_data(shadow: &ProviderShadow) -> VssResult<ShadowData> {
        let data: ShadowData = serde_json::from_str(&shadow.provider_data).map_err(|e| {
            VssError::new(
                VssCode::UnexpectedProviderError,
                format!("shadow {}: bad provider data: {e}", shadow.shadow_id),
            )
            .with_hint("The catalog entry is damaged; check /var/lib/vss and the journal.")
        })?;
        // A damaged catalog must not make the provider touch another LV.
        if data.lv != shadow_lv_name(shadow.shadow_id) {
            return Err(VssError::new(
                VssCode::UnexpectedProviderError,
                format!(
                    "shadow {} is recorded as LV {}/{}, which is not its snapshot name",
                    shadow.shadow_id, data.vg, data.lv
                ),
            ));
        }
        Ok(data)
    }

    /// The shadows of `origin` (our snapshots of it), oldest first.
    fn shadows_of(lvs: &[Lv], origin: &Lv) -> Vec<Lv> {
        let mut v: Vec<Lv> = lvs
            .iter()
            .filter(|l| l.is_ours() && l.vg == origin.vg && l.origin == origin.name)
            .cloned()
            .collect();
        v.sort_by_key(|l| (l.created_ns(), l.name.clone()));
        v
    }

    fn evict(&self, lv: &Lv, reason: String) -> VssResult<()> {
        self.lvm.remove(&lv.vg, &lv.name).map_err(lvm_error)?;
        if let Some(id) = shadow_id_of(lv) {
            tracing::warn!(shadow = %id, lv = %lv.full_name(), "shadow copy deleted: {reason}");
            self.evicted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((id, reason));
        }
        Ok(())
    }

    fn prepare_thin(&self, origin: &Lv) -> VssResult<()> {
        let limit = self.config.settings.thin_pool_limit_percent;
        loop {
            let lvs = self.lvm.lvs(Some(&origin.vg)).map_err(lvm_error)?;
            let pool = lvs
                .iter()
                .find(|l| l.name == origin.pool && l.is_thin_pool());
            let used = pool.and_then(|p| match (p.data_percent, p.metadata_percent) {
                (Some(d), Some(m)) => Some(d.max(m)),
                (d, m) => d.or(m),
            });
            let Some(used) = used.filter(|u| *u >= limit) else {
                return Ok(());
            };
            // Make room as the watcher would; the set's new shadow is
            // worth more than the oldest one.
            let in_pool: Vec<Lv> = {
                let mut v: Vec<Lv> = lvs
                    .iter()
                    .filter(|l| l.is_ours() && l.pool == origin.pool)
                    .cloned()
                    .collect();
                v.sort_by_key(|l| (l.created_ns(), l.name.clone()));
                v
            };
            let Some(oldest) = in_pool.first() else {
                return Err(VssError::new(
                    VssCode::InsufficientStorage,
                    format!(
                        "thin pool {}/{} is {used:.1}% full, at or above the {limit:.0}% limit for shadow copies",
                        origin.vg, origin.pool
                    ),
                )
                .with_hint("Extend the pool (lvextend) or free space in it; the limit is lvm-thin-pool-limit in /etc/vss/vss.toml."));
            };
            self.evict(
                oldest,
                format!(
                    "thin pool {}/{} is {used:.1}% full (limit {limit:.0}%)",
                    origin.vg, origin.pool
                ),
            )?;
        }
    }

    fn prepare_thick(&self, origin: &Lv) -> VssResult<u64> {
        loop {
            let lvs = self.lvm.lvs(Some(&origin.vg)).map_err(lvm_error)?;
            let vg = self.lvm.vg(&origin.vg).map_err(lvm_error)?;
            let origin = lvs
                .iter()
                .find(|l| l.name == origin.name)
                .cloned()
                .unwrap_or_else(|| origin.clone());
            let shadows = Self::shadows_of(&lvs, &origin);
            let used: u64 = shadows.iter().map(|l| l.size).sum();
            let max = policy::max_bytes(&origin);
            let room = policy::thick_room(&origin, used, &vg);
            let want = policy::step(&origin, max);
            // A new snapshot starts with a full step when it can, and never
            // with less than 4 extents: the watcher needs time to extend it.
            let floor = 4 * vg.extent_size;
            if room >= want || (room >= floor && shadows.is_empty()) {
                return Ok(want.min(room));
            }
            let Some(oldest) = shadows.first() else {
                let hint = match max {
                    Some(m) if m.saturating_sub(used) < floor => format!(
                        "Raise the maximum: `vssadmin resize shadowstorage /for=VOLUME /on={} /maxsize=SIZE`.",
                        origin.vg
                    ),
                    _ => format!("Free extents in volume group {} (vgextend, or remove LVs).", origin.vg),
                };
                return Err(VssError::new(
                    VssCode::InsufficientStorage,
                    format!(
                        "no room for a snapshot of {}: {} bytes free under its shadow storage maximum and in volume group {}",
                        origin.full_name(),
                        room,
                        origin.vg
                    ),
                )
                .with_hint(hint));
            };
            let reason = if max.is_some_and(|m| used + want > m) {
                format!(
                    "the shadow storage of {} is at its maximum size; the oldest shadow makes room for a new one",
                    origin.full_name()
                )
            } else {
                format!(
                    "volume group {} has no free extents for a new shadow; the oldest makes room",
                    origin.vg
                )
            };
            self.evict(oldest, reason)?;
        }
    }

    /// At the set's first commit: suspends the origins of every shadow
    /// prepared (this one and those still to commit), so all are cut at
    /// one instant; later commits find their origin held already.
    fn hold_set(&self, shadow_id: Guid, origin: &Lv) -> VssResult<()> {
        let mut hold = self.hold.lock().unwrap_or_else(|p| p.into_inner());
        if hold.is_some() {
            return Ok(());
        }
        // Thin origins are left to lvcreate's own suspend: a thin volume
        // suspended beforehand keeps the pool from committing the new
        // snapshot's transaction, and lvcreate fails.
        let planned = self.planned.lock().unwrap_or_else(|p| p.into_inner());
        let mut devices = Vec::new();
        let mut remaining: std::collections::BTreeSet<Guid> = planned.keys().copied().collect();
        remaining.insert(shadow_id);
        for o in planned.values().map(|p| &p.origin).chain([origin]) {
            let d = o.dm_name();
            if !o.is_thin() && !devices.contains(&d) {
                devices.push(d);
            }
        }
        drop(planned);
        if devices.is_empty() {
            return Ok(());
        }
        // No guard, no hold: without it a vssd dying here would leave the
        // volumes suspended.
        let Some(guard) = spawn_resume_guard(&devices) else {
            return Err(VssError::new(
                VssCode::UnexpectedProviderError,
                "cannot start the process that guards the hold (sh, timeout, dmsetup)",
            )
            .with_hint("Check that coreutils and dmsetup are installed, then retry."));
        };
        let guard = Some(guard);
        self.holding
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let mut suspended = Vec::new();
        for d in &devices {
            if let Err(e) = dmsetup(&["suspend", d]) {
                Hold {
                    devices: suspended,
                    remaining,
                    guard,
                }
                .release();
                self.holding
                    .store(false, std::sync::atomic::Ordering::SeqCst);
                return Err(VssError::new(VssCode::FlushWritesTimeout, e)
                    .with_hint("See `dmsetup info` for the volume's state; retry the set."));
            }
            suspended.push(d.clone());
        }
        *hold = Some(Hold {
            devices: suspended,
            remaining,
            guard,
        });
        Ok(())
    }

    /// After a commit (or an abort): once no shadow of the set is left to
    /// commit, or on failure, the held origins are resumed.
    fn done_with(&self, shadow_id: Guid, failed: bool) {
        let mut hold = self.hold.lock().unwrap_or_else(|p| p.into_inner());
        let finished = match hold.as_mut() {
            Some(h) => {
                h.remaining.remove(&shadow_id);
                failed || h.remaining.is_empty()
            }
            None => false,
        };
        if finished {
            if let Some(h) = hold.take() {
                h.release();
            }
            self.holding
                .store(false, std::sync::atomic::Ordering::SeqCst);
        }
    }

    // ---- shadow storage (the `vssadmin … shadowstorage` verbs) -------

    /// Whether `for_volume` (a mount point or device) is a logical volume.
    pub fn owns_volume(&self, for_volume: &str) -> bool {
        self.lv_for(for_volume).is_ok()
    }

    fn lv_for(&self, for_volume: &str) -> VssResult<Lv> {
        let path = Path::new(for_volume);
        let device = if path.is_dir() {
            let v = vss_sys::mounts::volume_of(path).map_err(|e| {
                VssError::new(
                    VssCode::ObjectNotFound,
                    format!("cannot find the volume of {for_volume}: {e}"),
                )
            })?;
            if v.mount_point != for_volume.trim_end_matches('/') && for_volume != "/" {
                return Err(VssError::new(
                    VssCode::ObjectNotFound,
                    format!("{for_volume} is not a mount point"),
                ));
            }
            v
        } else {
            Volume {
                mount_point: String::new(),
                device: for_volume.to_string(),
                fs_type: String::new(),
                fs_uuid: None,
                subvolume: None,
                read_only: false,
                volume_guid: Guid::from_u128(0),
            }
        };
        self.origin_of(&device)
    }

    /// The volume group `on_volume` names: `VG`, `/dev/VG`, or a mount
    /// point or device of an LV in it.
    fn vg_named(&self, on_volume: &str) -> Option<String> {
        let plain = on_volume.trim_start_matches("/dev/").trim_end_matches('/');
        if let Ok(vgs) = self.lvm.vgs() {
            if let Some(v) = vgs.iter().find(|v| v.name == plain) {
                return Some(v.name.clone());
            }
        }
        self.lv_for(on_volume).ok().map(|l| l.vg)
    }

    fn check_on(&self, origin: &Lv, on_volume: &str) -> VssResult<()> {
        if origin.is_thin() {
            return Err(VssError::new(
                VssCode::VolumeNotSupported,
                format!(
                    "{} is a thin volume: its shadows use the free space of pool {}/{}, not an association",
                    origin.full_name(),
                    origin.vg,
                    origin.pool
                ),
            )
            .with_hint("Extend the pool (lvextend) for more room; the fill level at which the oldest shadows go is lvm-thin-pool-limit in /etc/vss/vss.toml."));
        }
        match self.vg_named(on_volume) {
            Some(vg) if vg == origin.vg => Ok(()),
            other => Err(VssError::new(
                VssCode::VolumeNotSupported,
                format!(
                    "/on={on_volume} is {}; snapshots of {} live in its own volume group {}",
                    other.map_or("not a volume group".to_string(), |v| format!(
                        "volume group {v}"
                    )),
                    origin.full_name(),
                    origin.vg
                ),
            )
            .with_hint(format!("Use /on={}.", origin.vg))),
        }
    }

    /// Removes the maximum-size tags of `origin`.
    fn clear_max_tags(&self, origin: &Lv) -> VssResult<()> {
        for t in origin
            .tags
            .iter()
            .filter(|t| t.starts_with(MAXSIZE_TAG_PREFIX))
        {
            self.lvm
                .del_tag(&origin.vg, &origin.name, t)
                .map_err(lvm_error)?;
        }
        Ok(())
    }

    fn set_max_tag(&self, origin: &Lv, max: Option<u64>) -> VssResult<()> {
        self.clear_max_tags(origin)?;
        let tag = format!(
            "{MAXSIZE_TAG_PREFIX}{}",
            max.map_or("unbounded".to_string(), |m| m.to_string())
        );
        self.lvm
            .add_tag(&origin.vg, &origin.name, &tag)
            .map_err(lvm_error)
    }

    pub fn add_storage(&self, for_volume: &str, on_volume: &str, max: MaxSize) -> VssResult<()> {
        let origin = self.lv_for(for_volume)?;
        self.check_on(&origin, on_volume)?;
        if origin.tag_value(MAXSIZE_TAG_PREFIX).is_some() {
            return Err(VssError::new(
                VssCode::ObjectAlreadyExists,
                format!(
                    "{for_volume} already has shadow storage in volume group {}",
                    origin.vg
                ),
            )
            .with_hint("Change its size with `vssadmin resize shadowstorage`."));
        }
        let bytes = max.resolve_checked(for_volume, origin.size)?;
        self.set_max_tag(&origin, bytes)
    }

    pub fn resize_storage(&self, for_volume: &str, on_volume: &str, max: MaxSize) -> VssResult<()> {
        let origin = self.lv_for(for_volume)?;
        self.check_on(&origin, on_volume)?;
        let bytes = max.resolve_checked(for_volume, origin.size)?;
        self.set_max_tag(&origin, bytes)?;
        // Shrunk below what the snapshots hold: the oldest go, as Windows
        // does when a diff area is made smaller than its use.
        if let Some(limit) = bytes {
            let _pass = self.pass.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                let lvs = self.lvm.lvs(Some(&origin.vg)).map_err(lvm_error)?;
                let shadows = Self::shadows_of(&lvs, &origin);
                let used: u64 = shadows.iter().map(|l| l.size).sum();
                match shadows.first() {
                    Some(oldest) if used > limit => self.evict(
                        oldest,
                        format!(
                            "the shadow storage of {} was made smaller than its shadows use",
                            origin.full_name()
                        ),
                    )?,
                    _ => break,
                }
            }
        }
        Ok(())
    }

    /// Deletes the association and every shadow of the volume with it.
    pub fn delete_storage(&self, for_volume: &str, on_volume: Option<&str>) -> VssResult<()> {
        let origin = self.lv_for(for_volume)?;
        if let Some(on) = on_volume {
            self.check_on(&origin, on)?;
        }
        if origin.tag_value(MAXSIZE_TAG_PREFIX).is_none() {
            return Err(VssError::new(
                VssCode::ObjectNotFound,
                format!("{for_volume} has no shadow storage association"),
            ));
        }
        let lvs = self.lvm.lvs(Some(&origin.vg)).map_err(lvm_error)?;
        for s in Self::shadows_of(&lvs, &origin) {
            self.lvm.remove(&s.vg, &s.name).map_err(lvm_error)?;
        }
        self.clear_max_tags(&origin)
    }

    /// Associations: every LV with a maximum set or with shadows.
    pub fn list_storage(
        &self,
        for_volume: Option<&str>,
        on_volume: Option<&str>,
    ) -> VssResult<Vec<ShadowStorageInfo>> {
        let lvs = match self.lvm.lvs(None) {
            Ok(l) => l,
            // No LVM on this machine: no associations of ours.
            Err(_) => return Ok(Vec::new()),
        };
        let mounts = vss_sys::mounts::mountinfo().unwrap_or_default();
        let mount_of = |l: &Lv| {
            mounts
                .iter()
                .find(|m| Some(m.major_minor) == l.kernel && m.root == Path::new("/"))
        };
        let wanted_for = for_volume.and_then(|f| self.lv_for(f).ok());
        if for_volume.is_some() && wanted_for.is_none() {
            return Ok(Vec::new());
        }
        let wanted_on = on_volume.map(|o| self.vg_named(o));
        let mut out = Vec::new();
        for origin in lvs.iter().filter(|l| !l.is_ours() && !l.is_thin_pool()) {
            let shadows = Self::shadows_of(&lvs, origin);
            if origin.tag_value(MAXSIZE_TAG_PREFIX).is_none() && shadows.is_empty() {
                continue;
            }
            if wanted_for.as_ref().is_some_and(|w| w.uuid != origin.uuid) {
                continue;
            }
            if wanted_on
                .as_ref()
                .is_some_and(|w| w.as_deref() != Some(origin.vg.as_str()))
            {
                continue;
            }
            let derived = |s: &str| {
                provider::volume_name(Guid::derived(provider::VOLUME_GUID_NAMESPACE, s.as_bytes()))
            };
            let (for_mount, for_name) = match mount_of(origin) {
                Some(m) => (
                    m.mount_point.display().to_string(),
                    vss_sys::mounts::volume_from_entry(m).volume_name(),
                ),
                None => (origin.path().display().to_string(), derived(&origin.uuid)),
            };
            let (on, used, allocated, max) = if origin.is_thin() {
                let pool = lvs
                    .iter()
                    .find(|l| l.vg == origin.vg && l.name == origin.pool);
                let size = pool.map_or(0, |p| p.size);
                let pct = pool.and_then(|p| p.data_percent).unwrap_or(0.0);
                let limit = self.config.settings.thin_pool_limit_percent;
                (
                    format!("{}/{}", origin.vg, origin.pool),
                    (size as f64 * pct / 100.0) as u64,
                    size,
                    Some((size as f64 * limit / 100.0) as u64),
                )
            } else {
                let allocated: u64 = shadows.iter().map(|l| l.size).sum();
                let used: u64 = shadows
                    .iter()
                    .map(|l| (l.size as f64 * l.data_percent.unwrap_or(0.0) / 100.0) as u64)
                    .sum();
                (
                    origin.vg.clone(),
                    used,
                    allocated,
                    policy::max_bytes(origin),
                )
            };
            out.push(ShadowStorageInfo {
                for_volume_name: for_name,
                for_volume: for_mount,
                on_volume_name: derived(&on),
                on_volume: on,
                used_bytes: used,
                allocated_bytes: allocated,
                max_bytes: max,
                volume_size_bytes: origin.size,
            });
        }
        Ok(out)
    }

    /// Whether a recorded shadow is one of this provider's.
    pub fn is_lvm_shadow(shadow: &ProviderShadow) -> bool {
        Self::shadow_data(shadow).is_ok()
    }

    /// The shadow `shadow_id`, if it is one of this provider's snapshots.
    pub fn find_shadow(&self, shadow_id: Guid) -> Option<Lv> {
        let name = shadow_lv_name(shadow_id);
        self.lvm
            .lvs(None)
            .ok()?
            .into_iter()
            .find(|l| l.name == name && l.is_ours())
    }

    /// `vssadmin revert shadow`: merges the snapshot into its origin. The
    /// origin's filesystem must be unmounted for the merge to start; with
    /// `force_dismount` it is unmounted here and mounted again, with the
    /// same options, once the merge is done. The shadow is consumed (the
    /// service forgets it, as after an eviction); other shadows of the
    /// volume stay.
    pub fn revert(&self, shadow_id: Guid, force_dismount: bool) -> VssResult<()> {
        let lv = self.find_shadow(shadow_id).ok_or_else(|| {
            VssError::new(
                VssCode::ObjectNotFound,
                format!("shadow {shadow_id} is not an LVM snapshot of this provider"),
            )
        })?;
        let data = ShadowData {
            vg: lv.vg.clone(),
            lv: lv.name.clone(),
            origin: lv.origin.clone(),
            thin: lv.is_thin(),
            fs_type: String::new(),
        };
        if lv.is_invalid() {
            return Err(VssError::new(
                VssCode::ObjectNotFound,
                format!("shadow {shadow_id} was invalidated by LVM and cannot be reverted to"),
            ));
        }
        let mounts = vss_sys::mounts::mountinfo().map_err(|e| {
            VssError::new(
                VssCode::UnexpectedProviderError,
                format!("cannot read mounts: {e}"),
            )
        })?;
        let origin_numbers = self
            .lvm
            .lvs(Some(&data.vg))
            .map_err(lvm_error)?
            .into_iter()
            .find(|l| l.name == data.origin)
            .and_then(|l| l.kernel);
        let mounted: Vec<_> = mounts
            .iter()
            .filter(|m| origin_numbers.is_some() && Some(m.major_minor) == origin_numbers)
            .cloned()
            .collect();
        if !mounted.is_empty() && !force_dismount {
            return Err(VssError::new(
                VssCode::VolumeInUse,
                format!(
                    "{}/{} is mounted at {}: a revert needs it unmounted",
                    data.vg,
                    data.origin,
                    mounted[0].mount_point.display()
                ),
            )
            .with_hint(
                "Unmount it, or add /forcedismount to have vss unmount and mount it again.",
            ));
        }
        for m in mounted.iter().rev() {
            vss_sys::unmount(&m.mount_point).map_err(|e| {
                VssError::new(
                    VssCode::VolumeInUse,
                    format!("cannot unmount {}: {e}", m.mount_point.display()),
                )
                .with_hint("Stop what uses the volume (fuser -vm MOUNT), then retry.")
            })?;
        }
        let merged = self.lvm.merge(&data.vg, &data.lv).map_err(lvm_error);
        if merged.is_ok() {
            // The snapshot turns into a hidden `[name]` LV and the origin's
            // attr into `O` while the merge runs; both end with it.
            let hidden = format!("[{}]", data.lv);
            let deadline = Instant::now() + Duration::from_secs(600);
            while Instant::now() < deadline {
                let merging = self.lvm.lvs_hidden(&data.vg).map(|lvs| {
                    lvs.iter().any(|l| {
                        l.name == data.lv
                            || l.name == hidden
                            || (l.name == data.origin && l.attr.starts_with('O'))
                    })
                });
                if let Ok(false) = merging {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        for m in &mounted {
            if m.root != Path::new("/") {
                continue;
            }
            let dev = PathBuf::from(format!("/dev/{}/{}", data.vg, data.origin));
            let flags = vss_sys::MountFlags {
                read_only: m.read_only(),
                ..Default::default()
            };
            // The device may stay busy for a moment after the merge.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match vss_sys::mount_fs(&dev, &m.mount_point, &m.fs_type, flags, "") {
                    Ok(()) => break,
                    Err(e) if e.raw_os_error() == Some(16) && Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    Err(e) => {
                        tracing::error!(
                            "cannot mount {} at {} again after the revert: {e}",
                            dev.display(),
                            m.mount_point.display()
                        );
                        break;
                    }
                }
            }
        }
        merged?;
        self.evicted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((
                shadow_id,
                format!("merged into {}/{} by a revert", data.vg, data.origin),
            ));
        Ok(())
    }
}

impl Provider for LvmProvider {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            provider_id: LVM_PROVIDER_ID,
            name: "vss LVM provider".into(),
            provider_type: ProviderType::Software,
            version: env!("CARGO_PKG_VERSION").into(),
            supports: "ext4 and xfs on LVM logical volumes (thick and thin snapshots)".into(),
        }
    }

    fn supports(&self, volume: &Volume) -> Result<(), String> {
        // Cheap checks first: this runs for every volume listed. Without
        // udev the /dev/mapper nodes are plain device files, so the device
        // is identified by its numbers, not by a link to dm-N.
        let not_lv = || {
            format!(
                "{} on {} is not a logical volume",
                volume.fs_type, volume.device
            )
        };
        let (major, minor) = device_numbers(Path::new(&volume.device)).ok_or_else(not_lv)?;
        let uuid = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/dm/uuid"))
            .unwrap_or_default();
        if !uuid.starts_with("LVM-") {
            return Err(not_lv());
        }
        if !matches!(volume.fs_type.as_str(), "ext4" | "ext3" | "ext2" | "xfs") {
            return Err(format!(
                "{} on {}: the LVM provider makes shadows of ext4 and xfs",
                volume.fs_type, volume.device
            ));
        }
        let origin = self.origin_of(volume).map_err(|e| e.message)?;
        if origin.is_ours() || origin.is_thick_snapshot() || origin.is_thin_pool() {
            return Err(format!(
                "{} is a snapshot or pool, not a volume",
                origin.full_name()
            ));
        }
        Ok(())
    }

    fn preference(&self) -> u32 {
        LVM_PREFERENCE
    }

    fn hold_method(&self, _volume: &Volume) -> HoldMethod {
        // The provider holds writes itself, by device-mapper suspend of
        // every origin of the set (see `Hold`).
        HoldMethod::ProviderCut
    }

    fn prepare(&self, volume: &Volume, shadow_id: Guid) -> VssResult<()> {
        let _pass = self.pass.lock().unwrap_or_else(|p| p.into_inner());
        let origin = self.origin_of(volume)?;
        let thick_size = if origin.is_thin() {
            self.prepare_thin(&origin)?;
            0
        } else {
            self.prepare_thick(&origin)?
        };
        self.planned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(shadow_id, Planned { origin, thick_size });
        Ok(())
    }

    fn commit(&self, volume: &Volume, shadow_id: Guid) -> VssResult<Committed> {
        let planned = self
            .planned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&shadow_id)
            .ok_or_else(|| {
                VssError::new(
                    VssCode::UnexpectedProviderError,
                    format!("shadow {shadow_id} was not prepared"),
                )
            })?;
        let origin = planned.origin;
        self.hold_set(shadow_id, &origin)?;
        let name = shadow_lv_name(shadow_id);
        let tags = vec![
            SHADOW_TAG.to_string(),
            format!("{CREATED_TAG_PREFIX}{}", now_ns()),
        ];
        let made = if origin.is_thin() {
            self.lvm.create_thin(&origin.vg, &origin.name, &name, &tags)
        } else {
            self.lvm
                .create_thick(&origin.vg, &origin.name, &name, planned.thick_size, &tags)
        };
        self.done_with(shadow_id, made.is_err());
        made.map_err(lvm_error)?;
        let data = ShadowData {
            vg: origin.vg.clone(),
            lv: name.clone(),
            origin: origin.name.clone(),
            thin: origin.is_thin(),
            fs_type: volume.fs_type.clone(),
        };
        Ok(Committed {
            device_object: format!("/dev/{}/{}", origin.vg, name),
            attributes: attr::DIFFERENTIAL,
            provider_data: serde_json::to_string(&data).expect("plain struct"),
        })
    }

    fn abort(&self, volume: &Volume, shadow_id: Guid) {
        self.planned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&shadow_id);
        self.done_with(shadow_id, true);
        let Ok(origin) = self.origin_of(volume) else {
            return;
        };
        let name = shadow_lv_name(shadow_id);
        let exists = self
            .lvm
            .lvs(Some(&origin.vg))
            .map(|l| l.iter().any(|l| l.name == name && l.is_ours()))
            .unwrap_or(false);
        if exists {
            if let Err(e) = self.lvm.remove(&origin.vg, &name) {
                tracing::error!(
                    "cannot remove the aborted snapshot {}/{name}: {e}",
                    origin.vg
                );
            }
        }
    }

    fn delete(&self, shadow: &ProviderShadow) -> VssResult<()> {
        let data = Self::shadow_data(shadow)?;
        match self.our_lv(&data)? {
            None => Ok(()),
            Some(lv) => self.lvm.remove(&lv.vg, &lv.name).map_err(lvm_error),
        }
    }

    fn health(&self, shadow: &ProviderShadow) -> Health {
        let data = match Self::shadow_data(shadow) {
            Ok(d) => d,
            Err(e) => return Health::Lost(e.message),
        };
        match self.our_lv(&data) {
            Ok(None) => Health::Lost(format!(
                "its snapshot {}/{} no longer exists",
                data.vg, data.lv
            )),
            Ok(Some(lv)) if lv.is_invalid() => Health::Lost(format!(
                "LVM invalidated its snapshot {}/{} (the copy-on-write area overflowed)",
                data.vg, data.lv
            )),
            Ok(Some(_)) => Health::Present,
            // LVM unreadable for a moment: not proof of loss.
            Err(_) => Health::Present,
        }
    }

    fn expose(&self, shadow: &ProviderShadow, target: &Path) -> VssResult<()> {
        let data = Self::shadow_data(shadow)?;
        let lv = self.our_lv(&data)?.ok_or_else(|| {
            VssError::new(
                VssCode::ObjectNotFound,
                format!(
                    "shadow {}: its snapshot {}/{} is gone",
                    shadow.shadow_id, data.vg, data.lv
                ),
            )
        })?;
        if lv.is_invalid() {
            return Err(VssError::new(
                VssCode::ObjectNotFound,
                format!("shadow {} was invalidated by LVM", shadow.shadow_id),
            ));
        }
        if lv.kernel.is_none() {
            self.lvm.activate(&data.vg, &data.lv).map_err(lvm_error)?;
        }
        let dev = lv.path();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !dev.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        // Replay nothing (the device is read-only): ext4 without its
        // journal, xfs without log recovery and tolerating the uuid the
        // live filesystem also has.
        let options = match data.fs_type.as_str() {
            "ext4" | "ext3" => "noload",
            "xfs" => "norecovery,nouuid",
            _ => "",
        };
        vss_sys::mount_fs(
            &dev,
            target,
            &data.fs_type,
            vss_sys::MountFlags {
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
                    "cannot mount {} at {}: {e}",
                    dev.display(),
                    target.display()
                ),
            )
        })
    }

    fn unexpose(&self, shadow: &ProviderShadow, target: &Path) -> VssResult<()> {
        vss_sys::unmount(target).map_err(|e| vss_provider::unexpose_error(shadow, target, e))
    }

    fn evicted(&self) -> Vec<(Guid, String)> {
        // A reading now, so that a list never shows a shadow LVM has
        // invalidated since the last tick.
        self.watch_once();
        std::mem::take(&mut *self.evicted.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_names_round_trip() {
        let id = Guid::from_u128(0x0b8f_6f4e_2c47_4f2a_9a59_1d0c_bb0e_3a11);
        let name = shadow_lv_name(id);
        assert_eq!(name, "vss-0b8f6f4e-2c47-4f2a-9a59-1d0cbb0e3a11");
        let lv = Lv {
            name,
            tags: vec![SHADOW_TAG.into()],
            ..Lv::default()
        };
        assert_eq!(shadow_id_of(&lv), Some(id));
    }

    #[test]
    fn provider_data_must_name_the_shadows_own_lv() {
        let id = Guid::from_u128(7);
        let good = ShadowData {
            vg: "vg0".into(),
            lv: shadow_lv_name(id),
            origin: "data".into(),
            thin: false,
            fs_type: "xfs".into(),
        };
        let shadow = |d: &ShadowData| ProviderShadow {
            shadow_id: id,
            volume: Volume {
                mount_point: "/mnt".into(),
                device: "/dev/vg0/data".into(),
                fs_type: "xfs".into(),
                fs_uuid: None,
                subvolume: None,
                read_only: false,
                volume_guid: Guid::from_u128(1),
            },
            device_object: String::new(),
            provider_data: serde_json::to_string(d).unwrap(),
        };
        assert!(LvmProvider::is_lvm_shadow(&shadow(&good)));
        let evil = ShadowData {
            lv: "data".into(),
            ..good
        };
        assert!(!LvmProvider::is_lvm_shadow(&shadow(&evil)));
    }
}
