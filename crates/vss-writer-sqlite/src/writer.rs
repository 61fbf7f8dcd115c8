//! The SQLite writer: what it does at each event.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures_util::future::join_all;
use rusqlite::ErrorCode;
use vss_types::{BackupComponents, Guid, VssResult, WriterMetadata};
use vss_writer::{EventContext, Veto, VetoKind, Writer, WriterResult};

use crate::config::{DatabaseConfig, SqliteWriterConfig};
use crate::lock::{is_busy, open_existing, Hold, LockError, Released};
use crate::procinfo;
use crate::restore;

/// The SQLite writer (see the crate documentation).
pub struct SqliteWriter {
    cfg: SqliteWriterConfig,
    writer_id: Guid,
    instance_id: Mutex<Guid>,
    /// The databases PrepareForSnapshot chose for a set: those on the set's
    /// volumes.
    prepared: Mutex<Option<(Guid, Vec<DatabaseConfig>)>>,
    /// The locks held (or being requested) since Freeze, and the set they
    /// were taken for.
    holds: Mutex<(Guid, Vec<Arc<Hold>>)>,
}

/// What PostRestore found: the BCD with a failure message on each failed
/// component, and the error to fail PostRestore with, if any.
#[derive(Debug)]
pub struct RestoreOutcome {
    /// The BCD as the writer returns it (unchanged when all passed).
    pub bcd: String,
    /// Databases that passed the check.
    pub passed: Vec<PathBuf>,
    pub failure: Option<Veto>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs blocking work (SQLite, /proc) off the runtime's workers.
async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> WriterResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Veto::non_retryable(format!("SQLite writer: {what} failed: {e}")))
}

fn describe(db: &DatabaseConfig) -> String {
    format!("database '{}' ({})", db.full_path(), db.path.display())
}

impl SqliteWriter {
    pub fn new(cfg: SqliteWriterConfig) -> Self {
        SqliteWriter {
            writer_id: cfg.writer_id(),
            cfg,
            instance_id: Mutex::new(Guid::new_random()),
            prepared: Mutex::new(None),
            holds: Mutex::new((Guid::NULL, Vec::new())),
        }
    }

    pub fn config(&self) -> &SqliteWriterConfig {
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

    /// The Writer Metadata Document.
    pub fn metadata(&self) -> VssResult<WriterMetadata> {
        crate::metadata::writer_metadata(&self.cfg, self.instance_id())
    }

    /// The databases whose locks are held (or being requested) now.
    pub fn held_databases(&self) -> Vec<PathBuf> {
        lock(&self.holds)
            .1
            .iter()
            .map(|h| h.db.path.clone())
            .collect()
    }

    fn config_file(&self) -> String {
        self.cfg.source_path().display().to_string()
    }

    /// Every configured database can be opened and read. A missing file or
    /// one that cannot be opened is retryable (the database is unreachable
    /// for now: a filesystem not mounted yet, a restore in progress); a file
    /// that is not a database is not.
    pub async fn check_reachable(&self) -> WriterResult<()> {
        let probes = self.cfg.databases.iter().cloned().map(|db| async move {
            let d = db.clone();
            let r = blocking("the database check", move || probe(&d)).await?;
            Ok::<_, Veto>((db, r))
        });
        let mut failures = Vec::new();
        let mut kind = VetoKind::Retryable;
        for r in join_all(probes).await {
            let (db, r) = r?;
            if let Err((k, why)) = r {
                let state = if k == VetoKind::NonRetryable {
                    kind = k;
                    "cannot be used"
                } else {
                    "is unreachable"
                };
                failures.push(format!("{} {state}: {why}", describe(&db)));
            }
        }
        if failures.is_empty() {
            return Ok(());
        }
        Err(Veto::new(kind, failures.join("; ")).with_hint(format!(
            "Check the database paths in {} and that the writer's user can read and write each \
             database and its directory (SQLite creates -wal, -shm and -journal files there); \
             a database on a filesystem not mounted yet is reachable once it is.",
            self.config_file()
        )))
    }

    /// The databases to quiesce for a set: those on its volumes, as
    /// PrepareForSnapshot found them; all when unknown.
    fn targets(&self, set_id: Guid) -> Vec<DatabaseConfig> {
        match &*lock(&self.prepared) {
            Some((id, dbs)) if *id == set_id => dbs.clone(),
            _ => self.cfg.databases.clone(),
        }
    }

    /// PrepareForSnapshot: picks the databases on the set's volumes and
    /// checkpoints those in WAL mode with `wal_checkpoint(TRUNCATE)`, so the
    /// shadow's database file is complete and its WAL short. A checkpoint
    /// that cannot finish (long readers) is not an error: the WAL is part
    /// of the component.
    pub async fn prepare_snapshot(&self, set_id: Guid, volumes: Vec<String>) -> WriterResult<()> {
        let all = self.cfg.databases.clone();
        let targets = blocking("finding the databases' volumes", move || {
            all.into_iter()
                .filter(|db| on_volumes(db, &volumes))
                .collect::<Vec<_>>()
        })
        .await?;
        tracing::info!(
            set = %set_id,
            databases = targets.len(),
            "PrepareForSnapshot: checkpointing the databases on the set's volumes"
        );
        *lock(&self.prepared) = Some((set_id, targets.clone()));
        let runs = targets.into_iter().map(|db| async move {
            let d = db.clone();
            let r = blocking("the checkpoint", move || checkpoint(&d)).await?;
            Ok::<_, Veto>((db, r))
        });
        let mut failures = Vec::new();
        for r in join_all(runs).await {
            let (db, r) = r?;
            if let Err(why) = r {
                failures.push(format!("{} is unreachable: {why}", describe(&db)));
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Veto::retryable(failures.join("; ")).with_hint(format!(
                "Check the database paths in {} and that the writer's user can read and write them.",
                self.config_file()
            )))
        }
    }

    /// Freeze: takes the write lock of each database of the set and holds
    /// it until Thaw or Abort. A lock not granted within the database's
    /// `lock-timeout-ms` fails Freeze with a retryable error naming the
    /// database and, when it can be told, the process holding the lock.
    pub async fn freeze(&self, set_id: Guid) -> WriterResult<()> {
        // Locks of an earlier set that got no Thaw or Abort (vssd died):
        // released first, or the new lock would wait for our own.
        let stale = std::mem::take(&mut lock(&self.holds).1);
        if !stale.is_empty() {
            tracing::warn!(
                count = stale.len(),
                "Freeze while locks of an earlier set are still held; releasing them first"
            );
            for h in stale {
                h.release().await;
            }
        }
        let targets = self.targets(set_id);
        tracing::info!(set = %set_id, databases = targets.len(), "Freeze: taking the write locks");
        let max_hold = self.cfg.max_hold();
        let mut pending = Vec::new();
        {
            let mut holds = lock(&self.holds);
            holds.0 = set_id;
            for db in targets {
                let (hold, granted) = Hold::start(db, max_hold);
                holds.1.push(hold.clone());
                pending.push((hold, granted));
            }
        }
        let results = join_all(pending.iter_mut().map(|(h, rx)| {
            let db = h.db.clone();
            async move {
                let r = match rx.await {
                    Ok(r) => r,
                    Err(_) => Err(LockError::Cancelled),
                };
                (db, r)
            }
        }))
        .await;

        let mut failures = Vec::new();
        let mut kind = VetoKind::Retryable;
        let mut busy_hint = None;
        for (db, r) in results {
            let Err(e) = r else { continue };
            let text = match &e {
                LockError::Busy { .. } => {
                    let limit = db.lock_timeout_ms;
                    let d = db.clone();
                    let holder = blocking("finding the lock holder", move || {
                        procinfo::write_lock_holder(&d)
                    })
                    .await
                    .ok()
                    .flatten();
                    let who = match holder {
                        Some(p) => format!("another connection holds it ({p})"),
                        None => {
                            "another connection holds it (which process cannot be told)".to_string()
                        }
                    };
                    busy_hint = Some(format!(
                        "The application kept a write transaction open for longer than {} ms. \
                         Retry the backup; if it keeps failing, find the long transaction, or \
                         raise `lock-timeout-ms` of this database in {} (keep it well below the \
                         writer timeout).",
                        limit,
                        self.config_file()
                    ));
                    format!(
                        "{}: the write lock was not granted within {limit} ms: {who}",
                        describe(&db)
                    )
                }
                LockError::Cancelled => {
                    format!("{}: the lock request was cancelled by Abort", describe(&db))
                }
                LockError::Sqlite(se) if se.sqlite_error_code() == Some(ErrorCode::ReadOnly) => {
                    kind = VetoKind::NonRetryable;
                    format!(
                        "{}: the writer may not write to it ({e}); it cannot take the write lock",
                        describe(&db)
                    )
                }
                LockError::Thread(_) => {
                    if kind == VetoKind::Retryable {
                        kind = VetoKind::OutOfResources;
                    }
                    format!("{}: {e}", describe(&db))
                }
                LockError::Missing | LockError::Open(_) => {
                    format!("{} is unreachable: {e}", describe(&db))
                }
                LockError::Sqlite(_) => format!("{}: {e}", describe(&db)),
            };
            failures.push(text);
        }
        if failures.is_empty() {
            return Ok(());
        }
        // All or nothing: the locks that were granted are released.
        let mine: Vec<Arc<Hold>> = pending.into_iter().map(|(h, _)| h).collect();
        lock(&self.holds)
            .1
            .retain(|h| !mine.iter().any(|m| Arc::ptr_eq(h, m)));
        for h in &mine {
            h.release().await;
        }
        let hint = busy_hint.unwrap_or_else(|| {
            format!(
                "Check the database paths in {} and that the writer's user can read and write \
                 each database and its directory.",
                self.config_file()
            )
        });
        Err(Veto::new(kind, failures.join("; ")).with_hint(hint))
    }

    /// Releases every lock held or being requested (ROLLBACK) and waits
    /// until it is. Idempotent.
    pub async fn release_all(&self, why: &str) -> Vec<(DatabaseConfig, Released)> {
        let holds = {
            let mut g = lock(&self.holds);
            g.0 = Guid::NULL;
            std::mem::take(&mut g.1)
        };
        if !holds.is_empty() {
            tracing::info!(
                count = holds.len(),
                reason = why,
                "releasing the write locks"
            );
        }
        let released = join_all(holds.iter().map(|h| h.release())).await;
        holds.iter().map(|h| h.db.clone()).zip(released).collect()
    }

    /// Abort or BackupShutdown of a set: releases the locks if they were
    /// taken for that set. The events of another requestor's session (one
    /// that failed to start its own set while this one is frozen) must not
    /// release them; with no set id on either side they are released.
    pub async fn release_for(&self, set_id: Guid, why: &str) {
        let held = lock(&self.holds).0;
        if !held.is_null() && !set_id.is_null() && held != set_id {
            tracing::info!(
                event = why,
                set = %set_id,
                held_for = %held,
                "the locks belong to another snapshot set; kept"
            );
            return;
        }
        if set_id.is_null() && !held.is_null() && !lock(&self.holds).1.is_empty() {
            tracing::info!(event = why, held_for = %held, "event without a set id while a set is frozen; locks kept");
            return;
        }
        self.release_all(why).await;
    }

    /// Thaw: releases the locks. A lock that had to be released by itself
    /// at `max-hold-secs` before Thaw came fails Thaw: the shadow copy may
    /// have been cut without it.
    pub async fn thaw(&self) -> WriterResult<()> {
        let released = self.release_all("Thaw").await;
        let early: Vec<String> = released
            .iter()
            .filter(|(_, r)| r.released_early)
            .map(|(db, _)| describe(db))
            .collect();
        if early.is_empty() {
            return Ok(());
        }
        Err(Veto::timeout(format!(
            "the write lock of {} was released after max-hold-secs ({} s) before Thaw came; \
             the shadow copy may not be consistent for it",
            early.join(", "),
            self.cfg.max_hold_secs
        ))
        .with_hint(format!(
            "Raise `max-hold-secs` in {} to at least the writer timeout vssd gives this writer.",
            self.config_file()
        )))
    }

    /// PreRestore: refuses (retryable) when another process has a database
    /// selected for restore open: replacing its files under it would
    /// corrupt what it sees.
    pub async fn pre_restore(&self, bcd: String) -> WriterResult<String> {
        if bcd.trim().is_empty() {
            return Ok(bcd);
        }
        let doc = parse_bcd(&bcd)?;
        let items = restore::selected_for_restore(&self.cfg, self.writer_id, &doc);
        let mut busy = Vec::new();
        for (_, _, item) in items {
            let Ok(target) = item.target else { continue };
            let t = target.clone();
            let users = blocking("looking for open files", move || {
                procinfo::processes_with_open(&t)
            })
            .await?;
            for (p, _) in users {
                busy.push(format!(
                    "{} ({}) is open in {p}",
                    item.db.full_path(),
                    target.display()
                ));
            }
        }
        if busy.is_empty() {
            return Ok(bcd);
        }
        Err(Veto::retryable(format!(
            "cannot restore over databases in use: {}",
            busy.join("; ")
        ))
        .with_hint("Stop the applications using these databases (or close their connections), then restore again."))
    }

    /// PostRestore's check: each database selected for restore, at its
    /// original path or where an alternate location mapping put it, must
    /// pass `PRAGMA integrity_check`. A component that fails gets its
    /// `post_restore_failure_message` set in the BCD.
    pub async fn check_restored(&self, bcd: String) -> WriterResult<RestoreOutcome> {
        if bcd.trim().is_empty() {
            return Ok(RestoreOutcome {
                bcd,
                passed: Vec::new(),
                failure: None,
            });
        }
        let mut doc = parse_bcd(&bcd)?;
        let items = restore::selected_for_restore(&self.cfg, self.writer_id, &doc);
        let checks = items.into_iter().map(|(wi, ci, item)| async move {
            let r = match item.target.clone() {
                Ok(target) => {
                    let timeout = item.db.lock_timeout();
                    let t = target.clone();
                    blocking("the integrity check", move || {
                        restore::integrity_check(&t, timeout)
                    })
                    .await
                    .map(|r| r.map(|_| target))
                    .unwrap_or_else(|v| Err(v.message().to_string()))
                }
                Err(e) => Err(e),
            };
            (wi, ci, item, r)
        });
        let mut passed = Vec::new();
        let mut failures = Vec::new();
        for (wi, ci, item, r) in join_all(checks).await {
            match r {
                Ok(p) => {
                    tracing::info!(database = %p.display(), component = %item.db.full_path(), "restored database passed integrity_check");
                    passed.push(p);
                }
                Err(why) => {
                    let shown = item
                        .target
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|_| item.db.path.display().to_string());
                    let msg = format!(
                        "restored database '{}' ({shown}) failed the check: {why}",
                        item.db.full_path()
                    );
                    tracing::error!("{msg}");
                    doc.writers[wi].components[ci].post_restore_failure_message = Some(msg.clone());
                    failures.push(msg);
                }
            }
        }
        if failures.is_empty() {
            return Ok(RestoreOutcome {
                bcd,
                passed,
                failure: None,
            });
        }
        Ok(RestoreOutcome {
            bcd: doc.to_xml(),
            passed,
            failure: Some(Veto::non_retryable(failures.join("; ")).with_hint(
                "The restored copy is damaged or incomplete: restore the database and its -wal \
                     and -journal files together from a good backup, and keep the application \
                     stopped until PostRestore succeeds.",
            )),
        })
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

/// Whether the database lies on one of the volumes (mount points). When it
/// cannot be told (no volumes given, the file missing, the mount table
/// unreadable) the database counts, so that Freeze reports the problem
/// rather than skipping it silently.
fn on_volumes(db: &DatabaseConfig, volumes: &[String]) -> bool {
    if volumes.is_empty() {
        return true;
    }
    let Ok(canonical) = std::fs::canonicalize(&db.path) else {
        return true;
    };
    let Ok(entries) = vss_sys::mounts::mountinfo() else {
        return true;
    };
    match vss_sys::mounts::mount_containing(&entries, &canonical) {
        Some(m) => {
            let mp = m.mount_point.to_string_lossy();
            volumes.iter().any(|v| v.as_str() == mp)
        }
        None => true,
    }
}

/// The database exists, opens, and its header can be read. `Err` has the
/// kind of veto and the reason.
fn probe(db: &DatabaseConfig) -> Result<(), (VetoKind, String)> {
    match std::fs::metadata(&db.path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err((VetoKind::Retryable, "it is not a regular file".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err((
                VetoKind::Retryable,
                "the database file does not exist".into(),
            ))
        }
        Err(e) => return Err((VetoKind::Retryable, format!("cannot reach the file: {e}"))),
    }
    let conn = open_existing(&db.path)
        .map_err(|e| (VetoKind::Retryable, format!("cannot open it: {e}")))?;
    conn.busy_timeout(db.lock_timeout()).map_err(|e| {
        (
            VetoKind::Retryable,
            format!("cannot set a busy timeout: {e}"),
        )
    })?;
    match conn.query_row("PRAGMA schema_version", [], |r| r.get::<_, i64>(0)) {
        Ok(_) => Ok(()),
        // Locked by a writer right now: there, and readable once it commits.
        Err(e) if is_busy(&e) => Ok(()),
        Err(e)
            if matches!(
                e.sqlite_error_code(),
                Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
            ) =>
        {
            Err((
                VetoKind::NonRetryable,
                format!("it is not a sound SQLite database: {e}"),
            ))
        }
        Err(e) => Err((VetoKind::Retryable, format!("cannot read it: {e}"))),
    }
}

/// How long the truncating checkpoint waits for the application's writers.
const TRUNCATE_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// `wal_checkpoint(TRUNCATE)` for a database in WAL mode; nothing for a
/// rollback-journal one (its database file is always complete).
fn checkpoint(db: &DatabaseConfig) -> Result<(), String> {
    if !db.path.is_file() {
        return Err("the database file does not exist".into());
    }
    let conn = open_existing(&db.path).map_err(|e| format!("cannot open it: {e}"))?;
    conn.busy_timeout(db.lock_timeout())
        .map_err(|e| format!("cannot set a busy timeout: {e}"))?;
    let mode: String = match conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)) {
        Ok(m) => m,
        Err(e) if is_busy(&e) => {
            tracing::warn!(database = %db.path.display(), "busy; checkpoint skipped");
            return Ok(());
        }
        Err(e) => return Err(format!("cannot read its journal mode: {e}")),
    };
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::debug!(database = %db.path.display(), journal_mode = %mode, "not in WAL mode; no checkpoint");
        return Ok(());
    }
    // A PASSIVE checkpoint copies what it can without waiting; TRUNCATE
    // then waits for the application's writers, but only briefly: under a
    // steady write load it would otherwise hold the whole snapshot set
    // for the full lock timeout, and the WAL is in the shadow anyway.
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        tracing::debug!(database = %db.path.display(), error = %e, "passive checkpoint");
    }
    conn.busy_timeout(db.lock_timeout().min(TRUNCATE_WAIT))
        .map_err(|e| format!("cannot set a busy timeout: {e}"))?;
    match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    }) {
        Ok((0, _, _)) => {
            tracing::info!(database = %db.path.display(), "WAL checkpointed and truncated");
        }
        Ok((_, log, done)) => {
            tracing::info!(
                database = %db.path.display(),
                wal_frames = log,
                checkpointed = done,
                "the checkpoint could not finish (busy); the WAL is backed up with the database"
            );
        }
        Err(e) if is_busy(&e) => {
            tracing::info!(database = %db.path.display(), "the checkpoint could not run (busy); the WAL is backed up with the database");
        }
        Err(e) => tracing::warn!(database = %db.path.display(), error = %e, "checkpoint failed"),
    }
    Ok(())
}

#[async_trait]
impl vss_writer::process::WriterProcess for SqliteWriter {
    fn registered_as(&self, instance_id: Guid) {
        SqliteWriter::set_instance_id(self, instance_id);
    }

    async fn release_for(&self, why: &'static str) {
        SqliteWriter::release_all(self, why).await;
    }
}

#[async_trait]
impl Writer for SqliteWriter {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn writer_id(&self) -> Guid {
        self.writer_id
    }

    async fn on_identify(&self) -> WriterResult<String> {
        self.check_reachable().await?;
        let m = self
            .metadata()
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

    async fn on_pre_restore(&self, bcd: String) -> WriterResult<String> {
        self.pre_restore(bcd).await
    }

    /// The failure messages set in the BCD cannot travel with the error
    /// (the writer protocol returns either a document or an error); the
    /// error names the databases and their problems instead.
    async fn on_post_restore(&self, bcd: String) -> WriterResult<String> {
        let out = self.check_restored(bcd).await?;
        match out.failure {
            Some(v) => Err(v),
            None => Ok(out.bcd),
        }
    }
}
