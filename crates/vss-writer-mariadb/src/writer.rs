//! The MariaDB writer: what it does at each event.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use mysql::prelude::Queryable;
use vss_types::{BackupComponents, Guid, RestoreTarget, WriterMetadata};
use vss_writer::{EventContext, Veto, VetoKind, Writer, WriterResult};

use crate::config::MariadbWriterConfig;
use crate::layout::Layout;
use crate::session::{classify, connect, Session, SessionError, Stage};

/// The MariaDB writer (see the crate documentation).
pub struct MariadbWriter {
    cfg: MariadbWriterConfig,
    writer_id: Guid,
    instance_id: Mutex<Guid>,
    /// The server's layout as the last Identify found it.
    layout: Mutex<Option<Layout>>,
    /// The connection holding the backup stages, and its snapshot set.
    session: Mutex<Option<(Guid, Arc<Session>)>>,
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
        .map_err(|e| Veto::non_retryable(format!("MariaDB writer: {what} failed: {e}")))
}

/// Reads the server's layout over a connection of its own.
pub fn probe(cfg: &MariadbWriterConfig) -> Result<Layout, SessionError> {
    let socket = cfg.socket.display().to_string();
    let mut conn = connect(cfg, Duration::from_secs(10))?;
    type Vars = (
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        String,
    );
    let row: Option<Vars> = conn
        .query_first(
            "SELECT @@datadir, @@innodb_log_group_home_dir, @@innodb_undo_directory, \
             @@tmpdir, @@socket, @@pid_file, @@version",
        )
        .map_err(|e| classify(&socket, "SELECT @@datadir", e))?;
    let Some((datadir, redo, undo, tmp, sock, pid, version)) = row else {
        return Err(SessionError::Sql {
            stage: "SELECT @@datadir",
            why: "no row".into(),
        });
    };
    Ok(Layout::from_vars(
        &datadir,
        redo.as_deref(),
        undo.as_deref(),
        tmp.as_deref(),
        sock.as_deref(),
        pid.as_deref(),
        &version,
    ))
}

impl MariadbWriter {
    pub fn new(cfg: MariadbWriterConfig) -> Self {
        MariadbWriter {
            writer_id: cfg.writer_id(),
            cfg,
            instance_id: Mutex::new(Guid::new_random()),
            layout: Mutex::new(None),
            session: Mutex::new(None),
        }
    }

    pub fn config(&self) -> &MariadbWriterConfig {
        &self.cfg
    }

    /// The instance id put into the metadata; set it to the one vssd gave
    /// at registration so requestors see one id.
    pub fn set_instance_id(&self, id: Guid) {
        *lock(&self.instance_id) = id;
    }

    pub fn instance_id(&self) -> Guid {
        *lock(&self.instance_id)
    }

    /// The layout the last Identify found.
    pub fn layout(&self) -> Option<Layout> {
        lock(&self.layout).clone()
    }

    fn config_file(&self) -> String {
        self.cfg.source_path().display().to_string()
    }

    /// The veto for a failure talking to the server, with a hint.
    fn veto(&self, e: SessionError) -> Veto {
        let kind = if e.is_retryable() {
            VetoKind::Retryable
        } else {
            VetoKind::NonRetryable
        };
        let hint = match &e {
            SessionError::Unreachable { .. } => format!(
                "Start the server (`systemctl start {}`), or fix `socket` in {}; the writer \
                 tries again at every backup.",
                self.cfg.service,
                self.config_file()
            ),
            SessionError::Denied { .. } => format!(
                "The writer logs in as '{}' over the socket with the password in \
                 `password-file` (unix_socket authentication is not supported). Create it: \
                 CREATE USER '{}'@'localhost' IDENTIFIED BY '...'; GRANT RELOAD, PROCESS ON \
                 *.* TO '{}'@'localhost'; and fix {}.",
                self.cfg.user,
                self.cfg.user,
                self.cfg.user,
                self.config_file()
            ),
            SessionError::LockWait { .. } => format!(
                "A long statement kept the backup lock from being granted within \
                 lock-wait-timeout-secs ({} s). Retry the backup (`vssadmin create shadow … \
                 /autoretry=`); if it keeps failing, let the named statement finish, or raise \
                 `lock-wait-timeout-secs` in {} (keep it well below the writer timeout).",
                self.cfg.lock_wait_timeout_secs,
                self.config_file()
            ),
            _ => "Retry the backup; the server's error log tells more.".to_string(),
        };
        Veto::new(
            kind,
            format!("MariaDB instance '{}': {e}", self.cfg.full_path()),
        )
        .with_hint(hint)
    }

    /// Identify: reads the server's layout and answers the metadata.
    pub async fn identify(&self) -> WriterResult<WriterMetadata> {
        let cfg = self.cfg.clone();
        let layout = blocking("reading the server's layout", move || probe(&cfg))
            .await?
            .map_err(|e| self.veto(e))?;
        *lock(&self.layout) = Some(layout.clone());
        crate::metadata::writer_metadata(&self.cfg, self.instance_id(), &layout)
            .map_err(|e| Veto::non_retryable(format!("cannot build the writer metadata: {e}")))
    }

    /// PrepareForSnapshot: when the instance lies on the set's volumes,
    /// opens the connection that holds the stages and runs `BACKUP STAGE
    /// START`, `FLUSH` and `BLOCK_DDL`.
    pub async fn prepare_snapshot(&self, set_id: Guid, volumes: Vec<String>) -> WriterResult<()> {
        self.release_all("a new snapshot set").await;
        let layout = self.layout();
        let dirs = layout.as_ref().map(Layout::dirs).unwrap_or_default();
        let on = blocking("finding the instance's volumes", move || {
            on_volumes(&dirs, &volumes)
        })
        .await?;
        if !on {
            tracing::info!(set = %set_id, "PrepareForSnapshot: the instance is not on the set's volumes; nothing to do");
            return Ok(());
        }
        tracing::info!(set = %set_id, "PrepareForSnapshot: BACKUP STAGE START, FLUSH, BLOCK_DDL");
        let session = Arc::new(
            Session::open(self.cfg.clone())
                .await
                .map_err(|e| self.veto(e))?,
        );
        *lock(&self.session) = Some((set_id, session.clone()));
        for stage in [Stage::Start, Stage::Flush, Stage::BlockDdl] {
            if let Err(e) = session.stage(stage).await {
                self.release_all("PrepareForSnapshot failed").await;
                return Err(self.veto(e));
            }
        }
        Ok(())
    }

    /// Freeze: `BACKUP STAGE BLOCK_COMMIT` on the held connection.
    pub async fn freeze(&self, set_id: Guid) -> WriterResult<()> {
        let session = match &*lock(&self.session) {
            Some((id, s)) if *id == set_id || set_id.is_null() => Some(s.clone()),
            _ => None,
        };
        let Some(session) = session else {
            tracing::info!(set = %set_id, "Freeze: the instance is not in this set; nothing to do");
            return Ok(());
        };
        match session.stage(Stage::BlockCommit).await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.release_all("Freeze failed").await;
                Err(self.veto(e))
            }
        }
    }

    /// Ends the stages of whatever set holds them. Idempotent.
    pub async fn release_all(&self, why: &'static str) -> Option<crate::session::Ended> {
        let s = lock(&self.session).take();
        match s {
            Some((_, s)) => Some(s.end(why).await),
            None => None,
        }
    }

    /// Abort or BackupShutdown: ends the stages if they were taken for that
    /// set (or the event names none).
    pub async fn release_for(&self, set_id: Guid, why: &'static str) {
        let held = lock(&self.session).as_ref().map(|(id, _)| *id);
        match held {
            Some(h) if !set_id.is_null() && h != set_id => {
                tracing::info!(event = why, set = %set_id, held_for = %h, "the backup stages belong to another snapshot set; kept");
            }
            Some(_) => {
                self.release_all(why).await;
            }
            None => {}
        }
    }

    /// Thaw: `BACKUP STAGE END`. Stages ended by themselves at
    /// max-hold-secs before Thaw came fail it.
    pub async fn thaw(&self) -> WriterResult<()> {
        match self.release_all("Thaw").await {
            Some(e) if e.released_early => Err(Veto::timeout(format!(
                "MariaDB instance '{}': commits were unblocked after max-hold-secs ({} s) \
                 before Thaw came; the shadow copy may not be consistent",
                self.cfg.full_path(),
                self.cfg.max_hold_secs
            ))
            .with_hint(format!(
                "Raise `max-hold-secs` in {} to at least the writer timeout vssd gives this writer.",
                self.config_file()
            ))),
            _ => Ok(()),
        }
    }

    /// PostRestore: in each restored data directory of this writer's
    /// selected components, removes the pid and socket files a server left
    /// (unless a server runs there). InnoDB crash recovery at the next
    /// start does the rest. Returns the files removed.
    pub async fn post_restore(&self, bcd: String) -> WriterResult<Vec<PathBuf>> {
        if bcd.trim().is_empty() {
            return Ok(Vec::new());
        }
        let doc = BackupComponents::from_xml(&bcd).map_err(|e| {
            Veto::non_retryable(format!(
                "the Backup Components Document cannot be read: {e}"
            ))
            .with_hint(e.hint().to_string())
        })?;
        let dirs = restored_datadirs(&doc, self.writer_id, &self.cfg, self.layout());
        let removed = blocking("clearing stale files", move || {
            let mut out = Vec::new();
            for d in dirs {
                out.extend(remove_stale(&d));
            }
            out
        })
        .await?;
        Ok(removed)
    }
}

/// The data directories a restore wrote: for each selected component of
/// this writer, the alternate locations of its file sets, or the data
/// directory the last Identify found for a restore in place.
pub fn restored_datadirs(
    doc: &BackupComponents,
    writer_id: Guid,
    cfg: &MariadbWriterConfig,
    layout: Option<Layout>,
) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for w in doc.writers.iter().filter(|w| w.writer_id == writer_id) {
        for c in w.components.iter().filter(|c| c.selected_for_restore) {
            if c.logical_path != cfg.logical_path || c.name != cfg.component {
                continue;
            }
            let original = matches!(
                c.restore_target,
                RestoreTarget::Original | RestoreTarget::OriginalLocation
            );
            let mapped: Vec<PathBuf> = c
                .alternate_location_mappings
                .iter()
                .filter(|m| m.filespec == "*")
                .map(|m| PathBuf::from(&m.alternate_path))
                .collect();
            if !original && !mapped.is_empty() {
                out.extend(mapped);
            } else if let Some(l) = &layout {
                out.push(l.datadir.clone());
            } else {
                tracing::info!(component = %c.full_path(), "the data directory is not known (no Identify yet); no stale files cleared");
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Removes `*.pid` files whose process is not a running server, and
/// sockets, directly in `dir`.
pub fn remove_stale(dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return removed;
    };
    for e in rd.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(ft) = e.file_type() else { continue };
        let stale = if name.ends_with(".pid") && ft.is_file() {
            !pid_file_is_live(&p)
        } else {
            use std::os::unix::fs::FileTypeExt;
            ft.is_socket() && std::os::unix::net::UnixStream::connect(&p).is_err()
        };
        if stale {
            match std::fs::remove_file(&p) {
                Ok(()) => {
                    tracing::info!(file = %p.display(), "removed a stale file from the restored data directory");
                    removed.push(p);
                }
                Err(err) => {
                    tracing::warn!(file = %p.display(), error = %err, "cannot remove a stale file")
                }
            }
        }
    }
    removed
}

/// The pid file names a running mariadbd or mysqld.
fn pid_file_is_live(p: &Path) -> bool {
    let Some(pid) = std::fs::read_to_string(p)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
    else {
        return false;
    };
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| matches!(c.trim(), "mariadbd" | "mysqld"))
        .unwrap_or(false)
}

/// Whether any of the instance's directories lies on one of the volumes.
/// When it cannot be told, it counts.
fn on_volumes(dirs: &[PathBuf], volumes: &[String]) -> bool {
    if volumes.is_empty() || dirs.is_empty() {
        return true;
    }
    let Ok(entries) = vss_sys::mounts::mountinfo() else {
        return true;
    };
    dirs.iter().any(|d| {
        let Ok(canonical) = std::fs::canonicalize(d) else {
            return true;
        };
        match vss_sys::mounts::mount_containing(&entries, &canonical) {
            Some(m) => {
                let mp = m.mount_point.to_string_lossy();
                volumes.iter().any(|v| v.as_str() == mp)
            }
            None => true,
        }
    })
}

#[async_trait]
impl vss_writer::process::WriterProcess for MariadbWriter {
    fn registered_as(&self, instance_id: Guid) {
        MariadbWriter::set_instance_id(self, instance_id);
    }

    async fn release_for(&self, why: &'static str) {
        MariadbWriter::release_all(self, why).await;
    }
}

#[async_trait]
impl Writer for MariadbWriter {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn writer_id(&self) -> Guid {
        self.writer_id
    }

    async fn on_identify(&self) -> WriterResult<String> {
        Ok(self.identify().await?.to_xml())
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

    async fn on_thaw(&self, _ctx: &EventContext) -> WriterResult<()> {
        self.thaw().await
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
        self.post_restore(bcd.clone()).await?;
        Ok(bcd)
    }
}
