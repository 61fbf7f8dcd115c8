//! The PostgreSQL writer: what it does at each event.

use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

use async_trait::async_trait;
use vss_types::{BackupComponents, Guid, VssResult, WriterMetadata};
use vss_writer::{EventContext, Veto, Writer, WriterResult};

use crate::config::PostgresWriterConfig;
use crate::metadata::{self, ClusterLayout};
use crate::restore::{self, BackupRecord, RECORD_FORMAT};
use crate::session::{BackupSession, ConnParams, SessionError, Started, Stopped};

/// The backup of one snapshot set, from PrepareForSnapshot to
/// PostSnapshot.
struct SetState {
    set_id: Guid,
    layout: ClusterLayout,
    uid: u32,
    gid: u32,
    started: Started,
    session: Option<BackupSession>,
    stopped: Option<Stopped>,
}

/// The PostgreSQL writer (see the crate documentation).
pub struct PostgresWriter {
    cfg: PostgresWriterConfig,
    writer_id: Guid,
    instance_id: Mutex<Guid>,
    state: Mutex<Option<SetState>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> WriterResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Veto::non_retryable(format!("PostgreSQL writer: {what} failed: {e}")))
}

impl PostgresWriter {
    pub fn new(cfg: PostgresWriterConfig) -> Self {
        PostgresWriter {
            writer_id: cfg.writer_id(),
            cfg,
            instance_id: Mutex::new(Guid::new_random()),
            state: Mutex::new(None),
        }
    }

    pub fn config(&self) -> &PostgresWriterConfig {
        &self.cfg
    }

    pub fn set_instance_id(&self, id: Guid) {
        *lock(&self.instance_id) = id;
    }

    pub fn instance_id(&self) -> Guid {
        *lock(&self.instance_id)
    }

    fn config_file(&self) -> String {
        self.cfg.source_path().display().to_string()
    }

    /// Whether a backup is started (between pg_backup_start and
    /// pg_backup_stop or its abort).
    pub fn backup_in_progress(&self) -> bool {
        lock(&self.state)
            .as_ref()
            .is_some_and(|s| s.session.as_ref().is_some_and(|x| x.is_alive()))
    }

    /// The cluster's layout, read from its data directory. A data
    /// directory that cannot be read is retryable (not mounted yet, a
    /// restore in progress).
    pub async fn layout(&self) -> WriterResult<ClusterLayout> {
        let dd = self.cfg.data_directory.clone();
        blocking("reading the data directory", move || {
            ClusterLayout::read(&dd)
        })
        .await?
        .map_err(|why| {
            Veto::retryable(format!(
                "the PostgreSQL cluster '{}' is unreachable: {why}",
                self.cfg.full_path()
            ))
            .with_hint(format!(
                "Check `data-directory` in {} (`SHOW data_directory` in psql tells it) and \
                     that the writer runs as root or the cluster's owner.",
                self.config_file()
            ))
        })
    }

    /// The Writer Metadata Document for this layout.
    pub fn metadata(&self, layout: &ClusterLayout) -> VssResult<WriterMetadata> {
        metadata::writer_metadata(&self.cfg, self.instance_id(), layout)
    }

    /// PrepareForSnapshot: when the cluster lies on the set's volumes,
    /// connects through the socket and starts a backup
    /// (`pg_backup_start(label, fast => true)`, a fast checkpoint) on a
    /// session kept open until Thaw.
    pub async fn prepare_snapshot(&self, set_id: Guid, volumes: Vec<String>) -> WriterResult<()> {
        self.close("a new snapshot set").await;
        let layout = self.layout().await?;
        let l = layout.clone();
        let involved = blocking("finding the cluster's volumes", move || {
            on_volumes(&l, &volumes)
        })
        .await?;
        if !involved {
            tracing::info!(set = %set_id, "the cluster is not on the set's volumes; no backup started");
            return Ok(());
        }
        let (uid, gid) = std::fs::metadata(&layout.data_directory)
            .map(|m| (m.uid(), m.gid()))
            .unwrap_or((0, 0));
        let label = format!("vss {set_id}");
        let conn = ConnParams::from_config(&self.cfg);
        tracing::info!(set = %set_id, socket = %conn.socket_path(), "PrepareForSnapshot: pg_backup_start");
        match BackupSession::start(conn, label, self.cfg.start_timeout(), self.cfg.max_hold()).await
        {
            Ok((session, started)) => {
                *lock(&self.state) = Some(SetState {
                    set_id,
                    layout,
                    uid,
                    gid,
                    started,
                    session: Some(session),
                    stopped: None,
                });
                Ok(())
            }
            Err(e) => Err(self.session_veto(e)),
        }
    }

    fn session_veto(&self, e: SessionError) -> Veto {
        let what = format!("PostgreSQL cluster '{}'", self.cfg.full_path());
        match &e {
            SessionError::Unreachable { .. } => {
                Veto::retryable(format!("{what}: {e}")).with_hint(format!(
                    "Start the server (`systemctl start {}`), or fix `socket-directory`, `port`, \
                     `user` and `dbname` in {}; the writer's user must be allowed to connect \
                     (peer authentication maps it to the database user) with the REPLICATION \
                     attribute or as a superuser, or be granted EXECUTE on pg_backup_start and \
                     pg_backup_stop.",
                    self.cfg.service,
                    self.config_file()
                ))
            }
            SessionError::StartRefused { .. } => {
                Veto::retryable(format!("{what}: {e}")).with_hint(format!(
                    "Retry the backup; if it keeps failing, look at the named query, or raise \
                     `start-timeout-secs` in {} (the fast checkpoint must finish within it).",
                    self.config_file()
                ))
            }
            SessionError::StopFailed(_) | SessionError::Gone(_) => {
                Veto::retryable(format!("{what}: {e}")).with_hint(format!(
                    "Retry the backup; keep `max-hold-secs` in {} above the writer timeout vssd \
                     gives this writer, and see the server log.",
                    self.config_file()
                ))
            }
        }
    }

    /// Freeze: the backup must still be running.
    pub async fn freeze(&self, set_id: Guid) -> WriterResult<()> {
        let g = lock(&self.state);
        match g.as_ref() {
            Some(s) if s.set_id == set_id => {
                if s.session.as_ref().is_some_and(|x| x.is_alive()) {
                    Ok(())
                } else {
                    Err(self.session_veto(SessionError::Gone(
                        "the connection closed before Freeze".into(),
                    )))
                }
            }
            _ => Ok(()),
        }
    }

    /// Thaw: `pg_backup_stop(wait_for_archive => false)` on the backup's
    /// session; its answer is kept for PostSnapshot.
    pub async fn thaw(&self, set_id: Guid) -> WriterResult<()> {
        let session = {
            let mut g = lock(&self.state);
            match g.as_mut() {
                Some(s) if s.set_id == set_id => s.session.take(),
                _ => None,
            }
        };
        let Some(mut session) = session else {
            return Ok(());
        };
        let r = session.stop().await;
        tokio::task::spawn_blocking(move || session.close());
        match r {
            Ok(stopped) => {
                if let Some(s) = lock(&self.state).as_mut().filter(|s| s.set_id == set_id) {
                    s.stopped = Some(stopped);
                }
                Ok(())
            }
            Err(e) => {
                *lock(&self.state) = None;
                Err(self.session_veto(e))
            }
        }
    }

    /// PostSnapshot: writes the backup record (layout, LSNs, backup_label,
    /// tablespace_map) into the cluster component's backup metadata.
    pub async fn post_snapshot(&self, set_id: Guid, bcd: String) -> WriterResult<String> {
        let rec = {
            let g = lock(&self.state);
            let Some(s) = g.as_ref().filter(|s| s.set_id == set_id) else {
                return Ok(bcd);
            };
            let Some(stopped) = &s.stopped else {
                return Ok(bcd);
            };
            BackupRecord {
                format: RECORD_FORMAT.into(),
                data_directory: s.layout.data_directory.clone(),
                wal_directory: s.layout.wal_directory.clone(),
                tablespaces: s.layout.tablespaces.clone(),
                uid: s.uid,
                gid: s.gid,
                start_lsn: s.started.start_lsn.clone(),
                stop_lsn: stopped.stop_lsn.clone(),
                started_unix_us: s.started.started_unix_us,
                stopped_unix_us: stopped.stopped_unix_us,
                backup_label: stopped.labelfile.clone(),
                tablespace_map: stopped.spcmapfile.clone(),
            }
        };
        if bcd.trim().is_empty() {
            return Ok(bcd);
        }
        let mut doc = parse_bcd(&bcd)?;
        let mut found = false;
        for section in doc
            .writers
            .iter_mut()
            .filter(|w| w.writer_id == self.writer_id)
        {
            for c in section
                .components
                .iter_mut()
                .filter(|c| c.logical_path == self.cfg.logical_path && c.name == self.cfg.component)
            {
                c.backup_metadata = Some(rec.to_text());
                found = true;
            }
        }
        if !found {
            return Ok(bcd);
        }
        doc.validate().map_err(|e| {
            Veto::non_retryable(format!("cannot record the backup in the BCD: {e}"))
                .with_hint(e.hint().to_string())
        })?;
        Ok(doc.to_xml())
    }

    /// Abort or BackupShutdown: closes the backup session (the server
    /// aborts a backup whose session ends). Idempotent; the events of
    /// another set leave this one alone.
    pub async fn release_for(&self, set_id: Guid, why: &str) {
        let mine = lock(&self.state)
            .as_ref()
            .is_some_and(|s| set_id.is_null() || s.set_id == set_id);
        if mine {
            self.close(why).await;
        }
    }

    /// Closes any backup session and forgets the set. Idempotent.
    pub async fn close(&self, why: &str) {
        let state = lock(&self.state).take();
        if let Some(mut s) = state {
            if let Some(mut session) = s.session.take() {
                tracing::info!(set = %s.set_id, reason = why, "closing the backup session");
                let _ = tokio::task::spawn_blocking(move || session.close()).await;
            }
        }
    }

    /// PostRestore: makes each restored cluster of this writer startable
    /// (see [`restore::prepare_data_directory`]).
    pub async fn post_restore(&self, bcd: String) -> WriterResult<String> {
        if bcd.trim().is_empty() {
            return Ok(bcd);
        }
        let mut doc = parse_bcd(&bcd)?;
        let mut failures = Vec::new();
        let mut changed = false;
        for section in doc
            .writers
            .iter_mut()
            .filter(|w| w.writer_id == self.writer_id)
        {
            for c in section
                .components
                .iter_mut()
                .filter(|c| c.selected_for_restore)
            {
                let full = c.full_path();
                let r = match c.backup_metadata.as_deref() {
                    Some(text) => BackupRecord::from_text(text),
                    None => {
                        Err("the backup holds no record of this writer (no backup metadata)".into())
                    }
                };
                let comp = c.clone();
                let r = match r {
                    Ok(rec) => blocking("preparing the data directory", move || {
                        restore::prepare_data_directory(&rec, &comp)
                    })
                    .await
                    .unwrap_or_else(|v| Err(v.message().to_string())),
                    Err(e) => Err(e),
                };
                match r {
                    Ok(p) => tracing::info!(
                        component = %full,
                        data_directory = %p.data_directory.display(),
                        created = p.created.len(),
                        removed = p.removed.len(),
                        links = p.linked.len(),
                        "restored cluster prepared for crash recovery"
                    ),
                    Err(why) => {
                        let msg = format!("restored PostgreSQL cluster '{full}': {why}");
                        tracing::error!("{msg}");
                        c.post_restore_failure_message = Some(msg.clone());
                        changed = true;
                        failures.push(msg);
                    }
                }
            }
        }
        if failures.is_empty() {
            return Ok(if changed { doc.to_xml() } else { bcd });
        }
        Err(Veto::non_retryable(failures.join("; ")).with_hint(
            "Restore the whole cluster component (data directory, WAL and tablespaces) from the \
             backup made by vssbackup, then run the restore again; keep the server stopped until \
             PostRestore succeeds.",
        ))
    }
}

fn parse_bcd(bcd: &str) -> WriterResult<BackupComponents> {
    BackupComponents::from_xml(bcd).map_err(|e| {
        Veto::non_retryable(format!(
            "the Backup Components Document cannot be read: {e}"
        ))
        .with_hint(e.hint().to_string())
    })
}

/// Whether any directory of the cluster lies on one of the volumes (mount
/// points). When it cannot be told, the cluster counts.
fn on_volumes(layout: &ClusterLayout, volumes: &[String]) -> bool {
    if volumes.is_empty() {
        return true;
    }
    let Ok(entries) = vss_sys::mounts::mountinfo() else {
        return true;
    };
    let mut dirs = vec![layout.data_directory.clone()];
    dirs.extend(layout.wal_directory.clone());
    dirs.extend(layout.tablespaces.iter().map(|(_, p)| p.clone()));
    dirs.iter().any(|d| {
        let Ok(c) = std::fs::canonicalize(d) else {
            return true;
        };
        match vss_sys::mounts::mount_containing(&entries, &c) {
            Some(m) => {
                let mp = m.mount_point.to_string_lossy();
                volumes.iter().any(|v| v.as_str() == mp)
            }
            None => true,
        }
    })
}

#[async_trait]
impl vss_writer::process::WriterProcess for PostgresWriter {
    fn registered_as(&self, instance_id: Guid) {
        PostgresWriter::set_instance_id(self, instance_id);
    }

    async fn release_for(&self, why: &'static str) {
        PostgresWriter::close(self, why).await;
    }
}

#[async_trait]
impl Writer for PostgresWriter {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn writer_id(&self) -> Guid {
        self.writer_id
    }

    /// The metadata comes from the data directory, not the server: a
    /// restore runs while the server is stopped. A server that cannot be
    /// reached fails the backup at PrepareForSnapshot.
    async fn on_identify(&self) -> WriterResult<String> {
        let layout = self.layout().await?;
        let m = self
            .metadata(&layout)
            .map_err(|e| Veto::non_retryable(format!("cannot build the writer metadata: {e}")))?;
        Ok(m.to_xml())
    }

    async fn on_prepare_snapshot(
        &self,
        ctx: &EventContext,
        volumes: Vec<String>,
    ) -> WriterResult<()> {
        self.prepare_snapshot(ctx.set_id, volumes).await
    }

    async fn on_freeze(&self, ctx: &EventContext) -> WriterResult<()> {
        self.freeze(ctx.set_id).await
    }

    async fn on_thaw(&self, ctx: &EventContext) -> WriterResult<()> {
        self.thaw(ctx.set_id).await
    }

    async fn on_post_snapshot(&self, ctx: &EventContext, bcd: String) -> WriterResult<String> {
        self.post_snapshot(ctx.set_id, bcd).await
    }

    async fn on_abort(&self, ctx: &EventContext) -> WriterResult<()> {
        self.release_for(ctx.set_id, "Abort").await;
        Ok(())
    }

    async fn on_backup_shutdown(&self, ctx: &EventContext) -> WriterResult<()> {
        self.release_for(ctx.set_id, "BackupShutdown").await;
        Ok(())
    }

    async fn on_post_restore(&self, bcd: String) -> WriterResult<String> {
        self.post_restore(bcd).await
    }
}
