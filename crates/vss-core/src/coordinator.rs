//! The coordinator runs the VSS sequence:
//!
//! GatherWriterMetadata (Identify) → PrepareForBackup → StartSnapshotSet /
//! AddToSnapshotSet → DoSnapshotSet (PrepareForSnapshot → Freeze, all writers
//! in parallel → provider prepare → flush-and-hold → commit → release → Thaw
//! → PostSnapshot) → BackupComplete → GatherWriterStatus, with AbortBackup
//! possible at every step and BackupShutdown when the requestor goes away.
//!
//! A restore session ([`restore`]) runs GatherWriterMetadata → PreRestore →
//! (the requestor restores files) → PostRestore → GatherWriterStatus.
//!
//! It is transport-neutral: vssd's D-Bus adapter calls it with the caller's
//! connection name as the session owner.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use vss_catalog::{AbortedSet, Catalog, InflightSet, InflightVolume, ShadowRecord};
use vss_provider::{Health, HoldMethod, Provider, ProviderShadow, Registry};
use vss_types::{
    limits, Guid, MaxSize, ProviderInfo, RevertStatus, ShadowProp, ShadowState, ShadowStorageInfo,
    SoftwareVolumeInfo, Volume, VolumeInfo, VssCode, VssError, VssResult, WriterState,
    WriterStatus,
};

use crate::events::EventId;
use crate::hold::WriteHold;
use crate::session::{Phase, Session, SessionKind, SessionOptions, SetMember};
use crate::storage::SoftwareVolumes;
use crate::writers::{NewWriter, WriterInstance, WriterTable};

mod restore;

/// Settings the coordinator needs (vssd reads them from vss.toml).
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// Default Freeze→Thaw window of a writer (VSS: 60 s).
    pub writer_timeout: Duration,
    /// Per-writer windows, by writer name.
    pub writer_timeouts: HashMap<String, Duration>,
    /// Longest time writes may be held (VSS: 10 s; may be set lower).
    pub hold_limit: Duration,
    /// This machine's name (originating and service machine).
    pub machine: String,
    /// The service's state directory: never frozen by the service itself.
    pub state_dir: PathBuf,
}

/// Finds volumes; the real one reads mountinfo.
pub trait VolumeResolver: Send + Sync {
    fn volume_of(&self, path: &str) -> VssResult<Volume>;
    fn list(&self) -> VssResult<Vec<Volume>>;
}

type SessionRef = Arc<tokio::sync::Mutex<Session>>;

pub struct Coordinator {
    cfg: CoreConfig,
    providers: Registry,
    catalog: Arc<Catalog>,
    writers: WriterTable,
    hold: Arc<dyn WriteHold>,
    volumes: Arc<dyn VolumeResolver>,
    /// The copy-on-write provider's volumes, shadow storage and reverts
    /// (`org.vss.Storage1`).
    software: Arc<dyn SoftwareVolumes>,
    sessions: Mutex<HashMap<Guid, SessionRef>>,
    /// The session whose snapshot set is in flight (one at a time).
    in_flight: Mutex<Option<Guid>>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn bad_state(what: &str, phase: Phase) -> VssError {
    VssError::new(
        VssCode::BadState,
        format!("{what} is not allowed now (the session is at {phase:?})"),
    )
}

/// Refuses a backup step in a session initialized for a restore.
fn backup_only(s: &Session, what: &str) -> VssResult<()> {
    if s.kind == SessionKind::Restore {
        return Err(VssError::new(
            VssCode::BadState,
            format!("{what} is a backup step; session {} was started for a restore", s.id),
        )
        .with_hint("Start a backup session with StartSession; a restore session takes GatherWriterMetadata, PreRestore, PostRestore, GatherWriterStatus and EndSession."));
    }
    Ok(())
}

fn provider_shadow(r: &ShadowRecord, volume: Volume) -> ProviderShadow {
    ProviderShadow {
        shadow_id: r.prop.shadow_id,
        volume,
        device_object: r.prop.device_object.clone(),
        provider_data: r.provider_data.clone(),
    }
}

fn record_volume(r: &ShadowRecord) -> Volume {
    Volume {
        mount_point: r.prop.original_volume.clone(),
        device: r.device.clone(),
        fs_type: r.fs_type.clone(),
        fs_uuid: None,
        subvolume: None,
        read_only: false,
        volume_guid: r.volume_guid,
    }
}

/// Runs a blocking provider call off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> VssResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| VssError::new(VssCode::Unexpected, format!("provider task failed: {e}")))
}

impl Coordinator {
    pub fn new(
        cfg: CoreConfig,
        providers: Registry,
        catalog: Arc<Catalog>,
        hold: Arc<dyn WriteHold>,
        volumes: Arc<dyn VolumeResolver>,
        software: Arc<dyn SoftwareVolumes>,
    ) -> Arc<Self> {
        Arc::new(Coordinator {
            cfg,
            providers,
            catalog,
            writers: WriterTable::default(),
            hold,
            volumes,
            software,
            sessions: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(None),
        })
    }

    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }

    // ----- writers -----

    fn timeout_for(&self, name: &str) -> Duration {
        self.cfg
            .writer_timeouts
            .get(name)
            .copied()
            .unwrap_or(self.cfg.writer_timeout)
    }

    pub fn register_writer(&self, w: NewWriter) -> VssResult<Arc<WriterInstance>> {
        self.register_writer_with_timeout(w, None)
    }

    /// Registers a writer whose own declaration sets its Freeze→Thaw
    /// window; that wins over vss.toml's per-writer and default windows.
    pub fn register_writer_with_timeout(
        &self,
        w: NewWriter,
        own_timeout: Option<Duration>,
    ) -> VssResult<Arc<WriterInstance>> {
        let t = own_timeout.unwrap_or_else(|| self.timeout_for(&w.name));
        self.writers.add(w, t)
    }

    pub fn unregister_writer(&self, owner: &str, instance_id: Guid) -> VssResult<()> {
        self.writers.remove_instance(owner, instance_id)
    }

    pub fn list_writers(&self) -> Vec<WriterStatus> {
        self.writers.all().iter().map(|w| w.status()).collect()
    }

    pub fn list_providers(&self) -> Vec<ProviderInfo> {
        self.providers.list()
    }

    pub fn list_volumes(&self) -> VssResult<Vec<VolumeInfo>> {
        Ok(self
            .volumes
            .list()?
            .into_iter()
            .map(|v| {
                let provider = self
                    .providers
                    .choose(&v, Guid::NULL)
                    .ok()
                    .map(|p| p.info().name);
                VolumeInfo {
                    volume_name: v.volume_name(),
                    volume_guid: v.volume_guid,
                    mount_point: v.mount_point,
                    fs_type: v.fs_type,
                    device: v.device,
                    provider,
                }
            })
            .collect())
    }

    /// A bus connection closed: drop its writers, end its sessions.
    pub async fn connection_closed(self: &Arc<Self>, owner: &str) {
        self.writers.remove_owner(owner);
        let ids: Vec<Guid> = {
            let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            let mut v = Vec::new();
            for (id, s) in sessions.iter() {
                if let Ok(s) = s.try_lock() {
                    if s.owner == owner {
                        v.push(*id);
                    }
                } else {
                    // Busy in a call; check after it finishes.
                    v.push(*id);
                }
            }
            v
        };
        for id in ids {
            let Some(s) = self.session_ref(id) else {
                continue;
            };
            let is_owner = s.lock().await.owner == owner;
            if is_owner {
                let _ = self.end_session(owner, id).await;
            }
        }
        // Non-persistent shadows of the connection not tied to a live
        // session (e.g. the session already ended) are released too.
        self.release_owned_shadows(owner).await;
    }

    // ----- sessions -----

    fn session_ref(&self, id: Guid) -> Option<SessionRef> {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    async fn session(&self, owner: &str, id: Guid) -> VssResult<SessionRef> {
        let s = self.session_ref(id).ok_or_else(|| {
            VssError::new(VssCode::ObjectNotFound, format!("session {id} not found"))
        })?;
        if s.lock().await.owner != owner {
            return Err(VssError::new(
                VssCode::ObjectNotFound,
                format!("session {id} belongs to another connection"),
            ));
        }
        Ok(s)
    }

    pub fn start_session(&self, owner: &str, options: SessionOptions) -> Guid {
        let s = Session::new(owner.to_string(), options);
        let id = s.id;
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::new(tokio::sync::Mutex::new(s)));
        id
    }

    /// Identify to every writer. Writers that fail are absent from the
    /// result and show `Failed at identify`.
    pub async fn gather_writer_metadata(
        &self,
        owner: &str,
        id: Guid,
    ) -> VssResult<Vec<(WriterStatus, String)>> {
        let s = self.session(owner, id).await?;
        let mut s = s.lock().await;
        if !matches!(s.phase, Phase::Initialized | Phase::MetadataGathered) {
            return Err(bad_state("GatherWriterMetadata", s.phase));
        }
        let writers = self.writers.all();
        let calls = writers.iter().map(|w| async move {
            w.reset();
            let deadline = tokio::time::Instant::now() + w.timeout;
            let r = w.call("Identify", deadline, w.endpoint.identify()).await;
            match r {
                Ok(wmd) => Some((w.clone(), wmd)),
                Err(e) => {
                    let e = e.into_vss(w, "Identify");
                    w.fail(WriterState::FailedAtIdentify, &e);
                    None
                }
            }
        });
        s.metadata = join_all(calls).await.into_iter().flatten().collect();
        s.phase = Phase::MetadataGathered;
        Ok(s.metadata
            .iter()
            .map(|(w, wmd)| (w.status(), wmd.clone()))
            .collect())
    }

    pub async fn prepare_for_backup(
        &self,
        owner: &str,
        id: Guid,
        bcd: String,
    ) -> VssResult<String> {
        let s = self.session(owner, id).await?;
        let mut s = s.lock().await;
        backup_only(&s, "PrepareForBackup")?;
        let allowed = if s.options.context.uses_writers() {
            s.phase == Phase::MetadataGathered
        } else {
            matches!(s.phase, Phase::Initialized | Phase::MetadataGathered)
        };
        if !allowed {
            return Err(bad_state("PrepareForBackup", s.phase)
                .with_hint("Call GatherWriterMetadata first, once per session."));
        }
        s.bcd = bcd;
        s.participants =
            crate::documents::participants(&s.bcd, &s.metadata, s.options.select_components)?;
        let parts = s.participants.clone();
        let set_hint = Guid::NULL;
        let bcd_now = s.bcd.clone();
        let results = join_all(parts.iter().map(|w| {
            let bcd = bcd_now.clone();
            async move {
                let deadline = tokio::time::Instant::now() + w.timeout;
                let r = w
                    .call(
                        "PrepareForBackup",
                        deadline,
                        w.endpoint.prepare_for_backup(set_hint, bcd),
                    )
                    .await;
                (w.clone(), r)
            }
        }))
        .await;
        let mut first_err = None;
        for (w, r) in results {
            match r {
                Ok(returned) => {
                    s.bcd = crate::documents::merge_writer_section(
                        &s.bcd,
                        &returned,
                        w.writer_id,
                        w.instance_id,
                    )?;
                }
                Err(e) => {
                    let e = e.into_vss(&w, "PrepareForBackup");
                    w.fail(WriterState::FailedAtPrepareBackup, &e);
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        s.phase = Phase::PreparedForBackup;
        Ok(s.bcd.clone())
    }

    pub async fn start_snapshot_set(&self, owner: &str, id: Guid) -> VssResult<Guid> {
        let s = self.session(owner, id).await?;
        let mut s = s.lock().await;
        backup_only(&s, "StartSnapshotSet")?;
        let ok_phase = matches!(s.phase, Phase::PreparedForBackup)
            || (!s.options.context.uses_writers()
                && matches!(s.phase, Phase::Initialized | Phase::MetadataGathered));
        if !ok_phase {
            return Err(bad_state("StartSnapshotSet", s.phase)
                .with_hint("Call GatherWriterMetadata and PrepareForBackup first."));
        }
        {
            let mut slot = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            match *slot {
                Some(other) if other != id => {
                    return Err(VssError::new(
                        VssCode::SnapshotSetInProgress,
                        "another shadow copy creation is already in progress",
                    ))
                }
                _ => *slot = Some(id),
            }
        }
        let set_id = Guid::new_random();
        s.set_id = Some(set_id);
        s.phase = Phase::SetStarted;
        tracing::info!(event_id = EventId::SetStarted.id(), set = %set_id, session = %id, "snapshot set started");
        Ok(set_id)
    }

    pub async fn add_to_snapshot_set(
        &self,
        owner: &str,
        id: Guid,
        path: &str,
        provider_id: Guid,
    ) -> VssResult<Guid> {
        let s = self.session(owner, id).await?;
        let mut s = s.lock().await;
        backup_only(&s, "AddToSnapshotSet")?;
        if s.phase != Phase::SetStarted {
            return Err(bad_state("AddToSnapshotSet", s.phase));
        }
        if s.members.len() >= limits::MAX_VOLUMES_PER_SET {
            return Err(VssError::new(
                VssCode::MaximumNumberOfVolumesReached,
                format!(
                    "the snapshot set already holds {} volumes",
                    limits::MAX_VOLUMES_PER_SET
                ),
            ));
        }
        let volume = self.volumes.volume_of(path)?;
        if s.by_mount.contains_key(&volume.mount_point) {
            return Err(VssError::new(
                VssCode::ObjectAlreadyExists,
                format!(
                    "volume {} is already in the snapshot set",
                    volume.mount_point
                ),
            ));
        }
        let provider = self.providers.choose(&volume, provider_id)?;
        let existing = self.catalog.shadows_of_volume(&volume.mount_point)?.len();
        let (limit, deletes_oldest) = provider
            .shadow_limit(&volume)
            .map_or((limits::MAX_SHADOWS_PER_VOLUME, false), |(n, d)| {
                (n as usize, d)
            });
        if existing >= limit && !deletes_oldest {
            return Err(VssError::new(
                VssCode::MaximumNumberOfSnapshotsReached,
                format!(
                    "{} already has {existing} shadow copies (the maximum is {limit})",
                    volume.mount_point,
                ),
            )
            .with_hint(format!(
                "Delete old shadow copies: `vssadmin delete shadows /for={} /oldest`.",
                volume.mount_point
            )));
        }
        if provider.hold_method(&volume) == HoldMethod::Freeze && self.holds_state_dir(&volume) {
            return Err(VssError::new(
                VssCode::VolumeNotSupported,
                format!(
                    "{} holds the service's state directory {}; freezing it would stop the service itself",
                    volume.mount_point,
                    self.cfg.state_dir.display()
                ),
            )
            .with_hint("Move state-dir in /etc/vss/vss.toml to another filesystem."));
        }
        let shadow_id = Guid::new_random();
        s.by_mount.insert(volume.mount_point.clone(), shadow_id);
        s.members.push(SetMember {
            volume,
            provider,
            shadow_id,
        });
        Ok(shadow_id)
    }

    fn holds_state_dir(&self, volume: &Volume) -> bool {
        match self
            .volumes
            .volume_of(&self.cfg.state_dir.to_string_lossy())
        {
            Ok(v) => v.mount_point == volume.mount_point,
            Err(_) => false,
        }
    }

    /// DoSnapshotSet. On any failure the writers get Abort, partial shadows
    /// are removed and the set slot is freed; the error names the cause.
    pub async fn do_snapshot_set(&self, owner: &str, id: Guid) -> VssResult<Vec<ShadowProp>> {
        let sref = self.session(owner, id).await?;
        let mut s = sref.lock().await;
        backup_only(&s, "DoSnapshotSet")?;
        if s.phase != Phase::SetStarted {
            return Err(bad_state("DoSnapshotSet", s.phase));
        }
        if s.members.is_empty() {
            return Err(
                VssError::new(VssCode::BadState, "the snapshot set holds no volume")
                    .with_hint("Add a volume with AddToSnapshotSet first."),
            );
        }
        let result = self.run_snapshot_set(&mut s).await;
        self.free_slot(id);
        match result {
            Ok(props) => {
                s.shadows = props.clone();
                s.phase = Phase::SnapshotsDone;
                Ok(props)
            }
            Err(e) => {
                let set_id = s.set_id.unwrap_or(Guid::NULL);
                // Nothing of a failed set may remain: shadows already in
                // the catalog are deleted, committed ones not yet recorded
                // are undone by their provider.
                if let Ok(recorded) = self.catalog.shadows() {
                    for r in recorded.iter().filter(|r| r.prop.set_id == set_id) {
                        let _ = self.delete_one(r.prop.shadow_id).await;
                    }
                }
                let members: Vec<(Volume, Arc<dyn Provider>, Guid)> = s
                    .members
                    .iter()
                    .map(|m| (m.volume.clone(), m.provider.clone(), m.shadow_id))
                    .collect();
                self.abort_providers(&members).await;
                let _ = self.catalog.end_inflight(set_id);
                tracing::error!(event_id = EventId::SetFailed.id(), set = %set_id, code = %e.code, "snapshot set failed: {}", e.message);
                s.phase = Phase::Aborted;
                Err(e)
            }
        }
    }

    fn free_slot(&self, id: Guid) {
        let mut slot = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if *slot == Some(id) {
            *slot = None;
        }
    }

    async fn abort_writers(&self, writers: &[Arc<WriterInstance>], set_id: Guid) {
        join_all(writers.iter().map(|w| async move {
            // Abort gets a short window of its own: a writer stuck in Freeze
            // must not hold up the others' Abort.
            let deadline = tokio::time::Instant::now() + w.timeout.min(Duration::from_secs(10));
            if let Err(e) = w.call("Abort", deadline, w.endpoint.abort(set_id)).await {
                tracing::warn!(writer = %w.name, "Abort not acknowledged: {:?}", e);
            }
        }))
        .await;
    }

    async fn abort_providers(&self, members: &[(Volume, Arc<dyn Provider>, Guid)]) {
        for (v, p, sid) in members {
            let (v, p, sid) = (v.clone(), p.clone(), *sid);
            let _ = blocking(move || p.abort(&v, sid)).await;
        }
    }

    async fn run_snapshot_set(&self, s: &mut Session) -> VssResult<Vec<ShadowProp>> {
        let set_id = s.set_id.unwrap_or(Guid::NULL);
        let writers: Vec<Arc<WriterInstance>> = if s.options.context.uses_writers() {
            s.participants.clone()
        } else {
            Vec::new()
        };
        let members: Vec<(Volume, Arc<dyn Provider>, Guid)> = s
            .members
            .iter()
            .map(|m| (m.volume.clone(), m.provider.clone(), m.shadow_id))
            .collect();
        let mounts: Vec<String> = members.iter().map(|m| m.0.mount_point.clone()).collect();

        // PrepareForSnapshot, all writers in parallel.
        let results = join_all(writers.iter().map(|w| {
            let mounts = mounts.clone();
            async move {
                w.set_state(WriterState::WaitingForFreeze);
                let deadline = tokio::time::Instant::now() + w.timeout;
                let r = w
                    .call(
                        "PrepareForSnapshot",
                        deadline,
                        w.endpoint.prepare_for_snapshot(set_id, mounts),
                    )
                    .await;
                (w.clone(), r)
            }
        }))
        .await;
        if let Some(e) = self.first_failure(
            results,
            WriterState::FailedAtPrepareSnapshot,
            "PrepareForSnapshot",
        ) {
            self.abort_writers(&writers, set_id).await;
            return Err(e);
        }

        // Providers prepare (BeginPrepareSnapshot / EndPrepareSnapshots).
        for (v, p, sid) in &members {
            let (v2, p2, sid2) = (v.clone(), p.clone(), *sid);
            if let Err(e) = blocking(move || p2.prepare(&v2, sid2))
                .await
                .and_then(|r| r)
            {
                self.abort_providers(&members).await;
                self.abort_writers(&writers, set_id).await;
                return Err(e);
            }
        }

        // Freeze, all writers in parallel; each writer's Freeze→Thaw window
        // starts now.
        let freeze_start = tokio::time::Instant::now();
        let results = join_all(writers.iter().map(|w| async move {
            let deadline = freeze_start + w.timeout;
            let r = w.call("Freeze", deadline, w.endpoint.freeze(set_id)).await;
            if r.is_ok() {
                w.set_state(WriterState::WaitingForThaw);
            }
            (w.clone(), r)
        }))
        .await;
        if let Some(e) = self.first_failure(results, WriterState::FailedAtFreeze, "Freeze") {
            self.abort_providers(&members).await;
            self.abort_writers(&writers, set_id).await;
            return Err(e);
        }

        // Flush-and-hold, commit, release.
        let cut = self.cut(set_id, &members).await;
        let committed = match cut {
            Ok(c) => c,
            Err(e) => {
                self.abort_providers(&members).await;
                self.abort_writers(&writers, set_id).await;
                return Err(e);
            }
        };

        // Thaw, all writers in parallel, within their windows.
        let results = join_all(writers.iter().map(|w| async move {
            let deadline = freeze_start + w.timeout;
            let r = w.call("Thaw", deadline, w.endpoint.thaw(set_id)).await;
            if r.is_ok() {
                w.set_state(WriterState::WaitingForPostSnapshot);
            }
            (w.clone(), r)
        }))
        .await;
        if let Some(e) = self.first_failure(results, WriterState::FailedAtThaw, "Thaw") {
            // A writer that cannot vouch for its data fails the set: the
            // shadows are not reported.
            self.abort_providers(&members).await;
            self.abort_writers(&writers, set_id).await;
            return Err(e);
        }

        // Record the shadows (the filesystems are thawed, the catalog can be
        // written), then PostSnapshot.
        let created = now_ms();
        let count = members.len() as u32;
        let mut props = Vec::new();
        for ((v, p, sid), (c, hold_micros)) in members.iter().zip(committed) {
            let attributes = s.options.context.attributes() | c.attributes;
            let prop = ShadowProp {
                shadow_id: *sid,
                set_id,
                count,
                device_object: c.device_object.clone(),
                original_volume: v.mount_point.clone(),
                original_volume_name: v.volume_name(),
                originating_machine: self.cfg.machine.clone(),
                service_machine: self.cfg.machine.clone(),
                exposed_name: None,
                exposed_path: None,
                provider_id: p.info().provider_id,
                context: s.options.context,
                attributes,
                created_unix_ms: created,
                state: ShadowState::Created,
                hold_micros,
                lost_reason: None,
            };
            let rec = ShadowRecord {
                prop: prop.clone(),
                provider_data: c.provider_data.clone(),
                fs_type: v.fs_type.clone(),
                device: v.device.clone(),
                volume_guid: v.volume_guid,
                owner: (!s.options.context.is_persistent()).then(|| s.owner.clone()),
            };
            self.catalog.insert_shadow(&rec)?;
            tracing::info!(event_id = EventId::ShadowCreated.id(), shadow = %sid, set = %set_id, volume = %v.mount_point, hold_us = hold_micros, "shadow copy created");
            props.push(prop);
        }
        self.catalog.end_inflight(set_id)?;
        tracing::info!(event_id = EventId::SetCreated.id(), set = %set_id, volumes = count, "snapshot set created");

        let bcd_now = s.bcd.clone();
        let results = join_all(writers.iter().map(|w| {
            let bcd = bcd_now.clone();
            async move {
                let deadline = tokio::time::Instant::now() + w.timeout;
                let r = w
                    .call(
                        "PostSnapshot",
                        deadline,
                        w.endpoint.post_snapshot(set_id, bcd),
                    )
                    .await;
                (w.clone(), r)
            }
        }))
        .await;
        for (w, r) in results {
            match r {
                Ok(returned) => {
                    w.set_state(WriterState::WaitingForBackupComplete);
                    s.bcd = crate::documents::merge_writer_section(
                        &s.bcd,
                        &returned,
                        w.writer_id,
                        w.instance_id,
                    )?;
                }
                // A PostSnapshot failure does not fail the set (VSS).
                Err(e) => {
                    let e = e.into_vss(&w, "PostSnapshot");
                    w.fail(WriterState::FailedAtPostSnapshot, &e);
                }
            }
        }
        s.bcd = crate::documents::describe_set(
            &s.bcd,
            &s.options.backup_type,
            set_id,
            s.options.context.value(),
            &props,
        )?;
        Ok(props)
    }

    /// Records each failed writer's state; returns the first failure.
    fn first_failure<T>(
        &self,
        results: Vec<(Arc<WriterInstance>, Result<T, crate::writers::CallError>)>,
        failed_state: WriterState,
        event: &str,
    ) -> Option<VssError> {
        let mut first: Option<VssError> = None;
        for (w, r) in results {
            if let Err(e) = r {
                let e = e.into_vss(&w, event);
                w.fail(failed_state, &e);
                // A timeout is the most telling cause; report it first.
                match &first {
                    Some(f) if f.code == VssCode::WriterErrorTimeout => {}
                    _ if e.code == VssCode::WriterErrorTimeout || first.is_none() => {
                        first = Some(e)
                    }
                    _ => {}
                }
            }
        }
        first
    }

    /// The cut: arm the watchdog, freeze what needs freezing, commit every
    /// provider, thaw, disarm. Returns each member's commit and hold time.
    async fn cut(
        &self,
        set_id: Guid,
        members: &[(Volume, Arc<dyn Provider>, Guid)],
    ) -> VssResult<Vec<(vss_provider::Committed, u64)>> {
        let freeze_mounts: Vec<String> = members
            .iter()
            .filter(|(v, p, _)| p.hold_method(v) == HoldMethod::Freeze)
            .map(|(v, _, _)| v.mount_point.clone())
            .collect();
        // A provider that writes shadow storage during its commit must not
        // find it frozen by this very set.
        for (v, p, _) in members {
            for path in p.writable_during_cut(v) {
                if let Ok(on) = self.volumes.volume_of(&path.to_string_lossy()) {
                    if freeze_mounts.contains(&on.mount_point) {
                        return Err(VssError::new(
                            VssCode::VolumeNotSupported,
                            format!(
                                "the shadow storage of {} ({}) is on {}, which this snapshot set freezes",
                                v.mount_point,
                                path.display(),
                                on.mount_point
                            ),
                        )
                        .with_hint(format!(
                            "Move it off the set: `vssadmin delete shadowstorage /for={}` then \
                             `vssadmin add shadowstorage /for={} /on=OTHER`, or shadow the volumes in separate sets.",
                            v.mount_point, v.mount_point
                        )));
                    }
                }
            }
        }
        self.catalog.begin_inflight(&InflightSet {
            set_id,
            started_unix_ms: now_ms(),
            volumes: members
                .iter()
                .map(|(v, p, sid)| InflightVolume {
                    mount_point: v.mount_point.clone(),
                    shadow_id: *sid,
                    provider_id: p.info().provider_id,
                    frozen_by_service: freeze_mounts.contains(&v.mount_point),
                })
                .collect(),
        })?;
        let limit = self.cfg.hold_limit;
        // The watchdog's clock starts at arming; the commit deadline must
        // not be later than the watchdog's, so it is measured from here too.
        let arm_start = Instant::now();
        let armed = self.hold.arm(set_id, &freeze_mounts, limit)?;
        let hold_start = Instant::now();
        tracing::info!(event_id = EventId::HoldStarted.id(), set = %set_id, volumes = ?freeze_mounts, "holding writes");

        // Freeze, commit and thaw run on one blocking thread, so nothing on
        // the async side can stall while filesystems are frozen.
        let hold = self.hold.clone();
        let members_owned: Vec<(Volume, Arc<dyn Provider>, Guid)> = members.to_vec();
        let fm = freeze_mounts.clone();
        let deadline = arm_start + limit;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("vss-hold".into())
            .spawn(move || {
                let r = hold_and_commit(&*hold, &fm, &members_owned, deadline);
                let _ = tx.send(r);
            })
            .map_err(|e| {
                VssError::new(
                    VssCode::Unexpected,
                    format!("cannot start the hold thread: {e}"),
                )
            })?;
        // The blocking side enforces the limit between commits; the watchdog
        // process enforces it even if this process is stuck.
        let outcome = tokio::time::timeout(limit + Duration::from_secs(2), rx).await;
        let result = match outcome {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(VssError::new(VssCode::Unexpected, "the hold thread died")),
            Err(_) => {
                // The commit is stuck in the kernel or a provider; the
                // watchdog has thawed. Thaw again from here to be sure.
                for m in &freeze_mounts {
                    let _ = self.hold.thaw(m);
                }
                Err(VssError::new(
                    VssCode::HoldWritesTimeout,
                    format!(
                        "the provider did not commit within the hold limit of {} ms",
                        limit.as_millis()
                    ),
                ))
            }
        };
        let held = hold_start.elapsed();
        if result.is_ok() {
            armed.disarm();
            tracing::info!(event_id = EventId::HoldReleased.id(), set = %set_id, held_us = held.as_micros() as u64, "writes released");
        } else {
            // Leave the watchdog armed until its deadline passes is not
            // needed: everything was thawed; disarm after thawing.
            for m in &freeze_mounts {
                let _ = self.hold.thaw(m);
            }
            armed.disarm();
            let _ = self.catalog.end_inflight(set_id);
            if let Err(e) = &result {
                if e.code == VssCode::HoldWritesTimeout {
                    tracing::error!(event_id = EventId::HoldTimedOut.id(), set = %set_id, "hold limit passed; writes released, set discarded");
                }
            }
        }
        // On success the in-flight record stays until the shadows are in
        // the catalog, so a crash in between still undoes them at start.
        result
    }

    pub async fn get_backup_components(&self, owner: &str, id: Guid) -> VssResult<String> {
        let s = self.session(owner, id).await?;
        let s = s.lock().await;
        Ok(s.bcd.clone())
    }

    pub async fn backup_complete(&self, owner: &str, id: Guid, bcd: String) -> VssResult<String> {
        let s = self.session(owner, id).await?;
        let mut s = s.lock().await;
        backup_only(&s, "BackupComplete")?;
        if s.phase != Phase::SnapshotsDone {
            return Err(bad_state("BackupComplete", s.phase));
        }
        if !bcd.is_empty() {
            s.bcd = bcd;
        }
        let set_id = s.set_id.unwrap_or(Guid::NULL);
        let parts = s.participants.clone();
        let bcd_now = s.bcd.clone();
        let results = join_all(parts.iter().map(|w| {
            let bcd = bcd_now.clone();
            async move {
                let deadline = tokio::time::Instant::now() + w.timeout;
                let r = w
                    .call(
                        "BackupComplete",
                        deadline,
                        w.endpoint.backup_complete(set_id, bcd),
                    )
                    .await;
                (w.clone(), r)
            }
        }))
        .await;
        for (w, r) in results {
            match r {
                Ok(returned) => {
                    if !w.state().is_failed() {
                        w.set_state(WriterState::Stable);
                    }
                    s.bcd = crate::documents::merge_writer_section(
                        &s.bcd,
                        &returned,
                        w.writer_id,
                        w.instance_id,
                    )?;
                }
                Err(e) => {
                    let e = e.into_vss(&w, "BackupComplete");
                    w.fail(WriterState::FailedAtBackupComplete, &e);
                }
            }
        }
        s.phase = Phase::BackupCompleted;
        Ok(s.bcd.clone())
    }

    pub async fn gather_writer_status(
        &self,
        owner: &str,
        id: Guid,
    ) -> VssResult<Vec<WriterStatus>> {
        let s = self.session(owner, id).await?;
        let s = s.lock().await;
        let parts: Vec<Arc<WriterInstance>> = if s.participants.is_empty() {
            s.metadata.iter().map(|(w, _)| w.clone()).collect()
        } else {
            s.participants.clone()
        };
        Ok(parts.iter().map(|w| w.status()).collect())
    }

    /// AbortBackup: writers get Abort (unless PostSnapshot already ran),
    /// and the set's shadows are deleted.
    pub async fn abort_backup(&self, owner: &str, id: Guid) -> VssResult<()> {
        let s = self.session(owner, id).await?;
        let mut s = s.lock().await;
        backup_only(&s, "AbortBackup")?;
        self.abort_locked(&mut s).await;
        Ok(())
    }

    async fn abort_locked(&self, s: &mut Session) {
        let set_id = s.set_id.unwrap_or(Guid::NULL);
        if matches!(s.phase, Phase::PreparedForBackup | Phase::SetStarted) {
            self.abort_writers(&s.participants, set_id).await;
        }
        if matches!(s.phase, Phase::SnapshotsDone | Phase::BackupCompleted) {
            let ids: Vec<Guid> = s.shadows.iter().map(|p| p.shadow_id).collect();
            for sid in ids {
                if let Err(e) = self.delete_one(sid).await {
                    tracing::warn!(shadow = %sid, "could not delete shadow on abort: {e}");
                }
            }
        }
        if s.phase != Phase::Ended {
            s.phase = Phase::Aborted;
        }
        self.free_slot(s.id);
        tracing::info!(event_id = EventId::SetAborted.id(), session = %s.id, set = %set_id, "backup aborted");
    }

    /// EndSession / the requestor went away: BackupShutdown to the writers,
    /// abort what is unfinished, release non-persistent shadows. A restore
    /// session has no set and no shadows: its writers got their last event
    /// at PostRestore, so it just ends.
    pub async fn end_session(&self, owner: &str, id: Guid) -> VssResult<()> {
        let sref = self.session(owner, id).await?;
        let mut s = sref.lock().await;
        if s.kind == SessionKind::Restore {
            s.phase = Phase::Ended;
            drop(s);
            self.sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            tracing::info!(event_id = EventId::SessionEnded.id(), session = %id, "restore session ended");
            return Ok(());
        }
        let set_id = s.set_id.unwrap_or(Guid::NULL);
        if matches!(s.phase, Phase::PreparedForBackup | Phase::SetStarted) {
            self.abort_locked(&mut s).await;
        }
        let parts = s.participants.clone();
        join_all(parts.iter().map(|w| async move {
            let deadline = tokio::time::Instant::now() + w.timeout;
            match w
                .call(
                    "BackupShutdown",
                    deadline,
                    w.endpoint.backup_shutdown(set_id),
                )
                .await
            {
                Ok(()) => {}
                Err(e) => {
                    let e = e.into_vss(w, "BackupShutdown");
                    w.fail(WriterState::FailedAtBackupShutdown, &e);
                }
            }
        }))
        .await;
        if !s.options.context.is_persistent() {
            let ids: Vec<Guid> = s.shadows.iter().map(|p| p.shadow_id).collect();
            for sid in ids {
                if self.catalog.shadow(sid).is_ok() {
                    match self.delete_one(sid).await {
                        Ok(()) => {
                            tracing::info!(event_id = EventId::ShadowReleased.id(), shadow = %sid, "non-persistent shadow released")
                        }
                        Err(e) => tracing::warn!(shadow = %sid, "could not release shadow: {e}"),
                    }
                }
            }
        }
        s.phase = Phase::Ended;
        self.free_slot(id);
        drop(s);
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        tracing::info!(event_id = EventId::SessionEnded.id(), session = %id, "requestor session ended");
        Ok(())
    }

    async fn release_owned_shadows(&self, owner: &str) {
        if let Ok(recs) = self.catalog.shadows_owned_by(owner) {
            for r in recs {
                if let Err(e) = self.delete_one(r.prop.shadow_id).await {
                    tracing::warn!(shadow = %r.prop.shadow_id, "could not release shadow: {e}");
                } else {
                    tracing::info!(event_id = EventId::ShadowReleased.id(), shadow = %r.prop.shadow_id, "non-persistent shadow released");
                }
            }
        }
    }

    // ----- shadows -----

    /// Shadows matching a filter: `for` (a path on the volume), `shadow`,
    /// `set`.
    pub fn list_shadows(&self, filter: &HashMap<String, String>) -> VssResult<Vec<ShadowProp>> {
        let mut recs = self.catalog.shadows()?;
        if let Some(p) = filter.get("for") {
            let v = self.volumes.volume_of(p)?;
            recs.retain(|r| r.prop.original_volume == v.mount_point);
        }
        if let Some(id) = filter.get("shadow") {
            let id = Guid::parse(id)?;
            recs.retain(|r| r.prop.shadow_id == id);
        }
        if let Some(id) = filter.get("set") {
            let id = Guid::parse(id)?;
            recs.retain(|r| r.prop.set_id == id);
        }
        Ok(recs.into_iter().map(|r| r.prop).collect())
    }

    fn provider_of(&self, r: &ShadowRecord) -> VssResult<Arc<dyn Provider>> {
        self.providers.get(r.prop.provider_id).ok_or_else(|| {
            VssError::new(
                VssCode::ProviderNotRegistered,
                format!(
                    "shadow {} was made by provider {}, which is not registered now",
                    r.prop.shadow_id, r.prop.provider_id
                ),
            )
            .with_hint("Enable that provider in /etc/vss/vss.toml and restart vssd.")
        })
    }

    async fn delete_one(&self, id: Guid) -> VssResult<()> {
        let r = self.catalog.shadow(id)?;
        let p = self.provider_of(&r)?;
        let ps = provider_shadow(&r, record_volume(&r));
        if let Some(exposed) = r.prop.exposed_name.clone() {
            let (p2, ps2) = (p.clone(), ps.clone());
            blocking(move || p2.unexpose(&ps2, Path::new(&exposed))).await??;
        }
        if r.prop.state == ShadowState::Created {
            blocking(move || p.delete(&ps)).await??;
        }
        self.catalog.remove_shadow(id)?;
        tracing::info!(event_id = EventId::ShadowDeleted.id(), shadow = %id, volume = %r.prop.original_volume, "shadow copy deleted");
        Ok(())
    }

    /// Forgets shadows their provider deleted by itself (evicted, oldest
    /// first, when its shadow storage ran out), so that lists never show
    /// them. Each gets a journal event naming it.
    pub async fn forget_evicted_shadows(&self) -> VssResult<()> {
        for info in self.providers.list() {
            let Some(p) = self.providers.get(info.provider_id) else {
                continue;
            };
            let p2 = p.clone();
            let gone = blocking(move || p2.evicted()).await?;
            for (id, reason) in gone {
                let Ok(r) = self.catalog.shadow(id) else {
                    continue;
                };
                if let Some(exposed) = r.prop.exposed_name.clone() {
                    // Its image is gone; the mount only returns errors.
                    let (p3, ps) = (p.clone(), provider_shadow(&r, record_volume(&r)));
                    let _ = blocking(move || p3.unexpose(&ps, Path::new(&exposed))).await;
                }
                self.catalog.remove_shadow(id)?;
                tracing::warn!(
                    event_id = EventId::ShadowEvicted.id(),
                    shadow = %id,
                    volume = %r.prop.original_volume,
                    "shadow copy deleted by its provider: {reason}"
                );
            }
        }
        Ok(())
    }

    /// After the software provider deleted a volume's shadow storage (and
    /// with it every shadow of the volume): drop their records.
    fn forget_shadows_of(&self, mount: Option<&str>) -> VssResult<()> {
        let Some(mount) = mount else { return Ok(()) };
        for r in self.catalog.shadows()? {
            if r.prop.original_volume == mount {
                self.catalog.remove_shadow(r.prop.shadow_id)?;
                tracing::info!(event_id = EventId::ShadowDeleted.id(), shadow = %r.prop.shadow_id, volume = %mount, "shadow copy deleted with its shadow storage");
            }
        }
        Ok(())
    }

    /// `delete shadows`: filter keys `for`, `shadow`, `set`, `oldest`, `all`.
    pub async fn delete_shadows(&self, filter: &HashMap<String, String>) -> VssResult<Vec<Guid>> {
        let oldest = filter.get("oldest").is_some_and(|v| v == "true");
        let all = filter.get("all").is_some_and(|v| v == "true");
        let mut sel = HashMap::new();
        for k in ["for", "shadow", "set"] {
            if let Some(v) = filter.get(k) {
                sel.insert(k.to_string(), v.clone());
            }
        }
        if sel.is_empty() && !all {
            return Err(VssError::invalid_arg(
                "say which shadow copies to delete: /for=, /shadow=, /set=, /oldest or /all",
            ));
        }
        let mut props = self.list_shadows(&sel)?;
        if oldest {
            props.truncate(1);
        }
        if props.is_empty() && sel.contains_key("shadow") {
            return Err(VssError::new(
                VssCode::ObjectNotFound,
                format!("shadow copy {} not found", sel["shadow"]),
            ));
        }
        let mut deleted = Vec::new();
        for p in props {
            self.delete_one(p.shadow_id).await?;
            deleted.push(p.shadow_id);
        }
        Ok(deleted)
    }

    pub async fn expose_shadow(
        &self,
        id: Guid,
        target: &str,
        allow_users: bool,
    ) -> VssResult<String> {
        let mut r = self.catalog.shadow(id)?;
        if r.prop.state != ShadowState::Created {
            return Err(VssError::new(
                VssCode::ObjectNotFound,
                format!("shadow copy {id} is lost and cannot be exposed"),
            ));
        }
        if let Some(e) = &r.prop.exposed_name {
            return Err(VssError::new(
                VssCode::ObjectAlreadyExists,
                format!("shadow copy {id} is already exposed at {e}"),
            )
            .with_hint(format!(
                "Unexpose it first: `vssadmin unexpose shadow /shadow={id}`."
            )));
        }
        let target_path = PathBuf::from(target);
        if !target_path.is_absolute() {
            return Err(VssError::invalid_arg(format!(
                "/to={target} must be an absolute path"
            )));
        }
        crate::expose::prepare_target(&target_path, allow_users)?;
        let p = self.provider_of(&r)?;
        let ps = provider_shadow(&r, record_volume(&r));
        let t2 = target_path.clone();
        blocking(move || p.expose(&ps, &t2)).await??;
        r.prop.exposed_name = Some(target.to_string());
        r.prop.attributes |= vss_types::attr::EXPOSED_LOCALLY;
        self.catalog.update_shadow(&r)?;
        tracing::info!(event_id = EventId::ShadowExposed.id(), shadow = %id, at = target, allow_users, "shadow copy exposed");
        Ok(target.to_string())
    }

    pub async fn unexpose_shadow(&self, id: Guid) -> VssResult<()> {
        let mut r = self.catalog.shadow(id)?;
        let Some(at) = r.prop.exposed_name.clone() else {
            return Err(VssError::new(
                VssCode::ObjectNotFound,
                format!("shadow copy {id} is not exposed"),
            ));
        };
        let p = self.provider_of(&r)?;
        let ps = provider_shadow(&r, record_volume(&r));
        let at2 = at.clone();
        blocking(move || p.unexpose(&ps, Path::new(&at2))).await??;
        r.prop.exposed_name = None;
        r.prop.attributes &= !vss_types::attr::EXPOSED_LOCALLY;
        self.catalog.update_shadow(&r)?;
        tracing::info!(event_id = EventId::ShadowUnexposed.id(), shadow = %id, at = %at, "shadow copy unexposed");
        Ok(())
    }

    // ----- software volumes, shadow storage, reverts -----

    /// Runs one call of the copy-on-write provider off the async threads.
    async fn software<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn SoftwareVolumes) -> VssResult<T> + Send + 'static,
    ) -> VssResult<T> {
        let sv = self.software.clone();
        blocking(move || f(sv.as_ref())).await?
    }

    /// `vssadmin add volume`: `device` and `mount` must be absolute paths.
    pub async fn add_software_volume(
        &self,
        device: &str,
        mount: &str,
    ) -> VssResult<SoftwareVolumeInfo> {
        let device = absolute_arg("/device=", device)?;
        let mount = absolute_arg("/mount=", mount)?;
        let info = self
            .software(move |s| s.add_volume(&device, &mount))
            .await?;
        tracing::info!(event_id = EventId::SoftwareVolumeAdded.id(), device = %info.device, mount = %info.mount_point, fs = %info.fs_type, "software volume added");
        Ok(info)
    }

    /// `vssadmin delete volume`.
    pub async fn delete_software_volume(&self, for_volume: &str) -> VssResult<()> {
        let v = required_arg("/for=", for_volume)?;
        let mount = self.volumes.volume_of(&v).map(|x| x.mount_point).ok();
        let v2 = v.clone();
        self.software(move |s| s.delete_volume(&v2)).await?;
        self.forget_shadows_of(mount.as_deref())?;
        tracing::info!(event_id = EventId::SoftwareVolumeDeleted.id(), volume = %v, "software volume deleted");
        Ok(())
    }

    pub async fn list_software_volumes(&self) -> VssResult<Vec<SoftwareVolumeInfo>> {
        self.software(|s| s.list_volumes()).await
    }

    /// `vssadmin list shadowstorage`; a filter may be empty (none).
    pub async fn list_shadow_storage(
        &self,
        for_volume: Option<&str>,
        on_volume: Option<&str>,
    ) -> VssResult<Vec<ShadowStorageInfo>> {
        let f = optional_arg(for_volume);
        let o = optional_arg(on_volume);
        self.software(move |s| s.list_storage(f.as_deref(), o.as_deref()))
            .await
    }

    /// `vssadmin add shadowstorage`.
    pub async fn add_shadow_storage(
        &self,
        for_volume: &str,
        on_volume: &str,
        max: MaxSize,
    ) -> VssResult<()> {
        let f = required_arg("/for=", for_volume)?;
        let o = required_arg("/on=", on_volume)?;
        let (f2, o2) = (f.clone(), o.clone());
        self.software(move |s| s.add_storage(&f2, &o2, max)).await?;
        tracing::info!(event_id = EventId::ShadowStorageAdded.id(), for_volume = %f, on_volume = %o, max = %max, "shadow storage association added");
        Ok(())
    }

    /// `vssadmin resize shadowstorage`.
    pub async fn resize_shadow_storage(
        &self,
        for_volume: &str,
        on_volume: &str,
        max: MaxSize,
    ) -> VssResult<()> {
        let f = required_arg("/for=", for_volume)?;
        let o = required_arg("/on=", on_volume)?;
        let (f2, o2) = (f.clone(), o.clone());
        self.software(move |s| s.resize_storage(&f2, &o2, max))
            .await?;
        tracing::info!(event_id = EventId::ShadowStorageResized.id(), for_volume = %f, on_volume = %o, max = %max, "shadow storage association resized");
        Ok(())
    }

    /// `vssadmin delete shadowstorage`; `on_volume` empty or `None`: on any
    /// volume.
    pub async fn delete_shadow_storage(
        &self,
        for_volume: &str,
        on_volume: Option<&str>,
    ) -> VssResult<()> {
        let f = required_arg("/for=", for_volume)?;
        let o = optional_arg(on_volume);
        let mount = self.volumes.volume_of(&f).map(|x| x.mount_point).ok();
        let (f2, o2) = (f.clone(), o.clone());
        self.software(move |s| s.delete_storage(&f2, o2.as_deref()))
            .await?;
        self.forget_shadows_of(mount.as_deref())?;
        tracing::info!(event_id = EventId::ShadowStorageDeleted.id(), for_volume = %f, on_volume = o.as_deref().unwrap_or("(any)"), "shadow storage association deleted");
        Ok(())
    }

    /// `vssadmin revert shadow`: checks the shadow is in the catalog, not
    /// lost and persistent, then has the provider start the revert.
    pub async fn revert_shadow(&self, id: Guid, force_dismount: bool) -> VssResult<()> {
        let r = self.catalog.shadow(id)?;
        if r.prop.state != ShadowState::Created {
            return Err(VssError::new(
                VssCode::ObjectNotFound,
                format!("shadow copy {id} is lost and cannot be reverted to"),
            )
            .with_hint(
                "`vssadmin list shadows` shows why it was lost; pick another shadow copy.",
            ));
        }
        if !r.prop.context.is_persistent() {
            return Err(VssError::new(
                VssCode::UnsupportedContext,
                format!(
                    "shadow copy {id} is not persistent (type {}); only persistent shadow copies can be reverted to",
                    r.prop.context.type_label()
                ),
            )
            .with_hint("Revert to a persistent shadow copy, such as those `vssadmin create shadow` makes."));
        }
        self.software(move |s| s.revert(id, force_dismount)).await?;
        tracing::warn!(event_id = EventId::RevertStarted.id(), shadow = %id, volume = %r.prop.original_volume, force_dismount, "revert to shadow copy started");
        Ok(())
    }

    /// `vssadmin query reverts`; `for_volume` empty or `None`: all.
    pub async fn query_reverts(&self, for_volume: Option<&str>) -> VssResult<Vec<RevertStatus>> {
        let f = optional_arg(for_volume);
        self.software(move |s| s.query_reverts(f.as_deref())).await
    }

    pub fn aborted_sets(&self) -> VssResult<Vec<AbortedSet>> {
        self.catalog.aborted_sets()
    }

    /// At start: thaw and undo sets a crashed vssd left in flight, mark
    /// shadows whose storage vanished as lost, release non-persistent
    /// shadows (their requestors' sessions died with the old process).
    pub async fn recover(&self) -> VssResult<()> {
        for set in self.catalog.inflight()? {
            let mut vols = Vec::new();
            for v in &set.volumes {
                vols.push(v.mount_point.clone());
                if v.frozen_by_service {
                    match self.hold.thaw(&v.mount_point) {
                        Ok(true) => {
                            tracing::warn!(event_id = EventId::ThawedAtStart.id(), volume = %v.mount_point, set = %set.set_id, "thawed a filesystem a previous vssd left frozen")
                        }
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(volume = %v.mount_point, "could not thaw at start: {e}")
                        }
                    }
                }
                if self.catalog.shadow(v.shadow_id).is_err() {
                    if let Some(p) = self.providers.get(v.provider_id) {
                        if let Ok(vol) = self.volumes.volume_of(&v.mount_point) {
                            let sid = v.shadow_id;
                            let _ = blocking(move || p.abort(&vol, sid)).await;
                        }
                    }
                }
            }
            let a = AbortedSet {
                set_id: set.set_id,
                reason: "vssd stopped while the set was being created; its filesystems were thawed and partial shadows removed".into(),
                when_unix_ms: now_ms(),
                volumes: vols,
            };
            self.catalog.record_aborted(&a)?;
            self.catalog.end_inflight(set.set_id)?;
            tracing::error!(event_id = EventId::RecoveredAbortedSet.id(), set = %set.set_id, volumes = ?a.volumes, "aborted snapshot set found at start and cleaned up");
        }
        for mut r in self.catalog.shadows()? {
            if r.owner.is_some() {
                let id = r.prop.shadow_id;
                if self.delete_one(id).await.is_ok() {
                    tracing::info!(event_id = EventId::ShadowReleased.id(), shadow = %id, "non-persistent shadow released at start");
                }
                continue;
            }
            if r.prop.state != ShadowState::Created {
                continue;
            }
            let Ok(p) = self.provider_of(&r) else {
                continue;
            };
            let ps = provider_shadow(&r, record_volume(&r));
            if let Health::Lost(reason) = blocking(move || p.health(&ps)).await? {
                r.prop.state = ShadowState::Lost;
                r.prop.lost_reason = Some(reason.clone());
                self.catalog.update_shadow(&r)?;
                tracing::error!(event_id = EventId::ShadowLostAtStart.id(), shadow = %r.prop.shadow_id, volume = %r.prop.original_volume, "shadow copy lost: {reason}");
            }
        }
        Ok(())
    }
}

/// A volume argument that must be given: `E_INVALIDARG` when empty.
fn required_arg(switch: &str, value: &str) -> VssResult<String> {
    let v = value.trim();
    if v.is_empty() {
        return Err(VssError::invalid_arg(format!("{switch} needs a volume")));
    }
    Ok(v.to_string())
}

/// An optional volume argument: absent or empty means none.
fn optional_arg(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// A path argument that must be absolute: vssd's working directory is not
/// the caller's.
fn absolute_arg(switch: &str, value: &str) -> VssResult<String> {
    let v = required_arg(switch, value)?;
    if !Path::new(&v).is_absolute() {
        return Err(
            VssError::invalid_arg(format!("{switch}{v} must be an absolute path"))
                .with_hint("Give the full path, e.g. /dev/sdb1 or /srv/data."),
        );
    }
    Ok(v)
}

/// Freeze, commit each provider, thaw: the whole hold, on one thread.
/// Returns each member's commit and its hold time in microseconds.
fn hold_and_commit(
    hold: &dyn WriteHold,
    freeze_mounts: &[String],
    members: &[(Volume, Arc<dyn Provider>, Guid)],
    deadline: Instant,
) -> VssResult<Vec<(vss_provider::Committed, u64)>> {
    let start = Instant::now();
    let mut frozen = Vec::new();
    let mut result: VssResult<()> = Ok(());
    for m in freeze_mounts {
        match hold.freeze(m) {
            Ok(()) => frozen.push(m.clone()),
            Err(e) => {
                result = Err(VssError::new(
                    VssCode::FlushWritesTimeout,
                    format!("could not flush and hold writes on {m}: {e}"),
                ));
                break;
            }
        }
    }
    let mut commits = Vec::new();
    if result.is_ok() {
        for (v, p, sid) in members {
            if Instant::now() >= deadline {
                result = Err(VssError::new(
                    VssCode::HoldWritesTimeout,
                    "the providers did not commit within the hold limit",
                ));
                break;
            }
            let t = Instant::now();
            match p.commit(v, *sid) {
                Ok(c) => {
                    let own = t.elapsed();
                    commits.push((c, own, p.hold_method(v)));
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
    }
    for m in frozen.iter().rev() {
        let _ = hold.thaw(m);
    }
    let held = start.elapsed();
    // Past the deadline the watchdog may already have thawed during the
    // commit, so the cut cannot be trusted: discard it.
    if result.is_ok() && Instant::now() > deadline {
        result = Err(VssError::new(
            VssCode::HoldWritesTimeout,
            format!(
                "writes were held for {} ms, past the hold limit",
                held.as_millis()
            ),
        ));
    }
    result?;
    Ok(commits
        .into_iter()
        .map(|(c, own, how)| {
            let micros = match how {
                HoldMethod::Freeze => held.as_micros() as u64,
                HoldMethod::ProviderCut => own.as_micros() as u64,
            };
            (c, micros)
        })
        .collect())
}
