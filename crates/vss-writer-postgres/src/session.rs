//! The backup session: one connection of its own, kept open from
//! `pg_backup_start` to `pg_backup_stop` (a non-exclusive backup belongs to
//! its session; closing the session aborts it).
//!
//! The synchronous `postgres` client runs a runtime of its own, so the
//! session lives on a plain thread and is driven through a channel.

use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use postgres::{Client, Config, NoTls};
use tokio::sync::oneshot;

use crate::config::PostgresWriterConfig;

/// How the server is reached.
#[derive(Clone, Debug)]
pub struct ConnParams {
    pub socket_directory: std::path::PathBuf,
    pub port: u16,
    pub user: String,
    pub dbname: String,
}

impl ConnParams {
    pub fn from_config(cfg: &PostgresWriterConfig) -> Self {
        ConnParams {
            socket_directory: cfg.socket_directory.clone(),
            port: cfg.port,
            user: cfg.user.clone(),
            dbname: cfg.dbname.clone(),
        }
    }

    /// `DIR/.s.PGSQL.PORT`.
    pub fn socket_path(&self) -> String {
        self.socket_directory
            .join(format!(".s.PGSQL.{}", self.port))
            .display()
            .to_string()
    }

    /// Opens a connection through the Unix socket.
    pub fn connect(&self) -> Result<Client, postgres::Error> {
        Config::new()
            .host_path(&self.socket_directory)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name("vss-writer-postgres")
            .connect(NoTls)
    }
}

/// What `pg_backup_start` answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Started {
    pub start_lsn: String,
    /// When the backup started (Unix time, microseconds).
    pub started_unix_us: u64,
}

/// What `pg_backup_stop` answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stopped {
    pub stop_lsn: String,
    pub labelfile: String,
    pub spcmapfile: String,
    pub stopped_unix_us: u64,
}

/// Why the session failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The server could not be reached.
    #[error("the PostgreSQL server is unreachable through {socket}: {reason}")]
    Unreachable { socket: String, reason: String },
    /// `pg_backup_start` was refused or timed out.
    #[error("pg_backup_start was refused: {reason}{}", blocker.as_ref().map(|b| format!(" (the oldest active query: {b})")).unwrap_or_default())]
    StartRefused {
        reason: String,
        blocker: Option<String>,
    },
    /// `pg_backup_stop` failed.
    #[error("pg_backup_stop failed: {0}")]
    StopFailed(String),
    /// The session ended before it was asked to stop (the connection
    /// broke, or `max-hold-secs` passed).
    #[error("the backup session ended before pg_backup_stop: {0}")]
    Gone(String),
}

enum Cmd {
    Stop(oneshot::Sender<Result<Stopped, SessionError>>),
}

/// A started backup. Dropping it (or [`BackupSession::close`]) closes the
/// connection, which aborts the backup if it was not stopped.
pub struct BackupSession {
    tx: Option<mpsc::Sender<Cmd>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(x) = src {
                s.push_str(": ");
                s.push_str(&x.to_string());
                src = x.source();
            }
            s
        }
    }
}

/// The oldest active query of another session, to name what may hold up a
/// backup's checkpoint.
fn oldest_active(client: &mut Client) -> Option<String> {
    let row = client
        .query_opt(
            "SELECT pid, coalesce(usename, ''), coalesce(application_name, ''), \
                    coalesce(wait_event_type || ':' || wait_event, 'running'), \
                    left(regexp_replace(query, '\\s+', ' ', 'g'), 200), \
                    extract(epoch FROM now() - query_start)::float8 \
             FROM pg_stat_activity \
             WHERE pid <> pg_backend_pid() AND backend_type = 'client backend' \
               AND state <> 'idle' \
             ORDER BY query_start NULLS LAST LIMIT 1",
            &[],
        )
        .ok()??;
    let pid: i32 = row.get(0);
    let user: String = row.get(1);
    let app: String = row.get(2);
    let wait: String = row.get(3);
    let query: String = row.get(4);
    let secs: f64 = row.get(5);
    Some(format!(
        "pid {pid}, user '{user}', application '{app}', {wait}, for {secs:.1} s: {query}"
    ))
}

impl BackupSession {
    /// Connects and runs `pg_backup_start(label, fast => true)`, waiting at
    /// most `timeout` for it. The session then waits for
    /// [`stop`](Self::stop) at most `max_hold`; after that it closes the
    /// connection by itself (aborting the backup).
    pub async fn start(
        conn: ConnParams,
        label: String,
        timeout: Duration,
        max_hold: Duration,
    ) -> Result<(BackupSession, Started), SessionError> {
        let (tx, rx) = mpsc::channel::<Cmd>();
        let (started_tx, started_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("pg-backup-session".into())
            .spawn(move || session_thread(conn, label, timeout, max_hold, started_tx, rx))
            .map_err(|e| SessionError::Gone(format!("cannot start a thread: {e}")))?;
        let session = BackupSession {
            tx: Some(tx),
            thread: Some(thread),
        };
        match started_rx.await {
            Ok(Ok(s)) => Ok((session, s)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(SessionError::Gone("the session thread ended".into())),
        }
    }

    /// Whether the session still runs (the connection is open and the
    /// backup not aborted by `max-hold-secs`).
    pub fn is_alive(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// `pg_backup_stop(wait_for_archive => false)` on the session.
    pub async fn stop(&mut self) -> Result<Stopped, SessionError> {
        let Some(tx) = self.tx.take() else {
            return Err(SessionError::Gone("already stopped or closed".into()));
        };
        let (rtx, rrx) = oneshot::channel();
        if tx.send(Cmd::Stop(rtx)).is_err() {
            return Err(SessionError::Gone(
                "the connection was closed (max-hold-secs passed, or the server went away)".into(),
            ));
        }
        match rrx.await {
            Ok(r) => r,
            Err(_) => Err(SessionError::Gone(
                "the connection was closed (max-hold-secs passed, or the server went away)".into(),
            )),
        }
    }

    /// Closes the connection (aborting the backup if not stopped). Returns
    /// once the thread is gone. Idempotent.
    pub fn close(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for BackupSession {
    fn drop(&mut self) {
        // Not joined here: a drop in async code must not block; the
        // thread ends as soon as it sees the channel closed.
        self.tx = None;
    }
}

fn session_thread(
    conn: ConnParams,
    label: String,
    timeout: Duration,
    max_hold: Duration,
    started_tx: oneshot::Sender<Result<Started, SessionError>>,
    rx: mpsc::Receiver<Cmd>,
) {
    let mut client = match conn.connect() {
        Ok(c) => c,
        Err(e) => {
            let _ = started_tx.send(Err(SessionError::Unreachable {
                socket: conn.socket_path(),
                reason: describe(&e),
            }));
            return;
        }
    };
    // Bounded start; no server-side timeout may close the idle session
    // while the shadow copy is made.
    let setup = format!(
        "SET statement_timeout = {}; SET lock_timeout = {}; \
         SET idle_session_timeout = 0; SET idle_in_transaction_session_timeout = 0",
        timeout.as_millis().max(1),
        timeout.as_millis().max(1)
    );
    if let Err(e) = client.batch_execute(&setup) {
        let _ = started_tx.send(Err(SessionError::StartRefused {
            reason: describe(&e),
            blocker: None,
        }));
        return;
    }
    let started_unix_us = unix_us();
    let t = Instant::now();
    let r = client.query_one("SELECT pg_backup_start($1, fast => true)::text", &[&label]);
    let start_lsn: String = match r {
        Ok(row) => row.get(0),
        Err(e) => {
            let blocker = oldest_active(&mut client);
            let _ = started_tx.send(Err(SessionError::StartRefused {
                reason: describe(&e),
                blocker,
            }));
            return;
        }
    };
    tracing::info!(
        start_lsn = %start_lsn,
        started_unix_us,
        took_ms = t.elapsed().as_millis() as u64,
        "backup started (pg_backup_start)"
    );
    if started_tx
        .send(Ok(Started {
            start_lsn,
            started_unix_us,
        }))
        .is_err()
    {
        // Nobody waits for it (Abort came): closing aborts the backup.
        return;
    }
    match rx.recv_timeout(max_hold) {
        Ok(Cmd::Stop(reply)) => {
            let r = client
                .query_one(
                    "SELECT lsn::text, labelfile, coalesce(spcmapfile, '') \
                     FROM pg_backup_stop(wait_for_archive => false)",
                    &[],
                )
                .map_err(|e| SessionError::StopFailed(describe(&e)))
                .map(|row| Stopped {
                    stop_lsn: row.get(0),
                    labelfile: row.get(1),
                    spcmapfile: row.get(2),
                    stopped_unix_us: unix_us(),
                });
            if let Ok(s) = &r {
                tracing::info!(
                    stop_lsn = %s.stop_lsn,
                    stopped_unix_us = s.stopped_unix_us,
                    "backup stopped (pg_backup_stop)"
                );
            }
            let _ = reply.send(r);
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            tracing::warn!(
                max_hold_secs = max_hold.as_secs(),
                "no Thaw came within max-hold-secs; closing the backup session (the backup is aborted)"
            );
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            tracing::info!("backup session closed; the backup is aborted");
        }
    }
    // Dropping the client closes the session.
}

/// Whether the server answers (`SELECT 1`), for `--check` and PreRestore.
pub fn ping(conn: &ConnParams) -> Result<(), SessionError> {
    let mut c = conn.connect().map_err(|e| SessionError::Unreachable {
        socket: conn.socket_path(),
        reason: describe(&e),
    })?;
    c.simple_query("SELECT 1")
        .map(|_| ())
        .map_err(|e| SessionError::Unreachable {
            socket: conn.socket_path(),
            reason: describe(&e),
        })
}
