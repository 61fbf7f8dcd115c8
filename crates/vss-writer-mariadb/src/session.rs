//! The connection that holds the backup stages.
//!
//! `BACKUP STAGE` locks belong to the connection that took them, so one
//! connection runs the whole sequence, on a thread of its own: the async
//! handlers send it commands over a channel and wait for the answers, so a
//! lock wait never blocks the SDK's runtime. The thread ends the stages
//! (`BACKUP STAGE END`) when told, when nobody holds its handle any more,
//! or by itself at `max-hold-secs`; closing the connection (the writer
//! dying) ends them too, on the server's side.

use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mysql::prelude::Queryable;
use mysql::{Conn, OptsBuilder};
use tokio::sync::oneshot;

use crate::config::MariadbWriterConfig;

/// `ER_LOCK_WAIT_TIMEOUT`.
pub const ER_LOCK_WAIT_TIMEOUT: u16 = 1205;
/// `ER_ACCESS_DENIED_ERROR`, `ER_SPECIFIC_ACCESS_DENIED_ERROR`,
/// `ER_DBACCESS_DENIED_ERROR`.
pub const ACCESS_DENIED: [u16; 3] = [1045, 1227, 1044];

/// Microseconds since the Unix epoch (the writer's log lines use them).
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// One of the stages before END, in their order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Start,
    Flush,
    BlockDdl,
    BlockCommit,
}

impl Stage {
    pub fn sql(self) -> &'static str {
        match self {
            Stage::Start => "BACKUP STAGE START",
            Stage::Flush => "BACKUP STAGE FLUSH",
            Stage::BlockDdl => "BACKUP STAGE BLOCK_DDL",
            Stage::BlockCommit => "BACKUP STAGE BLOCK_COMMIT",
        }
    }
}

/// What went wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("the MariaDB server at {socket} is unreachable: {why}")]
    Unreachable { socket: String, why: String },
    #[error("the MariaDB server at {socket} refused the writer's login or statement: {why}")]
    Denied { socket: String, why: String },
    #[error("`{stage}` was not granted within {waited_ms} ms (lock_wait_timeout): {}", blockers_text(.blockers))]
    LockWait {
        stage: &'static str,
        waited_ms: u64,
        blockers: Vec<String>,
    },
    #[error("`{stage}` failed: {why}")]
    Sql { stage: &'static str, why: String },
    #[error("the backup stages were ended before this event (max-hold-secs or Abort)")]
    Ended,
    #[error("cannot start the connection thread: {0}")]
    Thread(String),
}

fn blockers_text(b: &[String]) -> String {
    if b.is_empty() {
        "the blocking statement cannot be told (it may have finished)".into()
    } else {
        format!("blocked by {}", b.join("; "))
    }
}

impl SessionError {
    /// Whether the error may go away by itself (retry the backup).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, SessionError::Denied { .. })
    }
}

/// Classifies a `mysql` error from connecting or a statement.
pub fn classify(socket: &str, stage: &'static str, e: mysql::Error) -> SessionError {
    match e {
        mysql::Error::MySqlError(me) if ACCESS_DENIED.contains(&me.code) => SessionError::Denied {
            socket: socket.to_owned(),
            why: format!("{} (error {})", me.message, me.code),
        },
        mysql::Error::MySqlError(me) => SessionError::Sql {
            stage,
            why: format!("{} (error {})", me.message, me.code),
        },
        mysql::Error::DriverError(de) => {
            let why = de.to_string();
            if why.contains("auth") || why.contains("Auth") {
                SessionError::Denied {
                    socket: socket.to_owned(),
                    why,
                }
            } else {
                SessionError::Unreachable {
                    socket: socket.to_owned(),
                    why,
                }
            }
        }
        other => SessionError::Unreachable {
            socket: socket.to_owned(),
            why: other.to_string(),
        },
    }
}

/// Connects over the configured socket, waiting at most `read_timeout` for
/// any answer.
pub fn connect(cfg: &MariadbWriterConfig, read_timeout: Duration) -> Result<Conn, SessionError> {
    let socket = cfg.socket.display().to_string();
    if !cfg.socket.exists() {
        return Err(SessionError::Unreachable {
            socket,
            why: "the socket does not exist (is the server running?)".into(),
        });
    }
    let pass = cfg.password().map_err(|why| SessionError::Denied {
        socket: socket.clone(),
        why,
    })?;
    let opts = OptsBuilder::new()
        .socket(Some(socket.clone()))
        .user(Some(cfg.user.clone()))
        .pass(pass)
        .prefer_socket(true)
        .read_timeout(Some(read_timeout))
        .write_timeout(Some(Duration::from_secs(10)));
    Conn::new(opts).map_err(|e| classify(&socket, "connect", e))
}

/// The statements running longest on other connections, most likely the
/// one a stage waited for: at least as old as the wait (when there are
/// such), at most three.
pub fn blockers(conn: &mut Conn, waited: Duration) -> Vec<String> {
    let q = "SELECT ID, USER, COALESCE(DB, ''), COMMAND, CAST(TIME_MS AS UNSIGNED), \
             COALESCE(STATE, ''), LEFT(COALESCE(INFO, ''), 300) \
             FROM information_schema.PROCESSLIST \
             WHERE ID <> CONNECTION_ID() AND INFO IS NOT NULL \
             AND COMMAND NOT IN ('Sleep', 'Daemon', 'Binlog Dump') \
             ORDER BY TIME_MS DESC LIMIT 10";
    type Row = (u64, String, String, String, u64, String, String);
    let rows: Vec<Row> = match conn.query(q) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the process list");
            return Vec::new();
        }
    };
    let old = rows
        .iter()
        .filter(|r| r.4 + 200 >= waited.as_millis() as u64 && !r.6.starts_with("BACKUP STAGE"))
        .count();
    rows.into_iter()
        .filter(|r| old == 0 || r.4 + 200 >= waited.as_millis() as u64)
        .filter(|r| !r.6.starts_with("BACKUP STAGE") || old == 0)
        .take(3)
        .map(|(id, user, db, _cmd, ms, state, info)| {
            let db = if db.is_empty() {
                String::new()
            } else {
                format!(", db {db}")
            };
            let state = if state.is_empty() {
                String::new()
            } else {
                format!(", state '{state}'")
            };
            format!(
                "connection {id} ({user}{db}, running {:.1} s{state}): {}",
                ms as f64 / 1000.0,
                info.split_whitespace().collect::<Vec<_>>().join(" ")
            )
        })
        .collect()
}

/// The stages were ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ended {
    /// The last instant commits were certainly blocked (taken just before
    /// `BACKUP STAGE END`); `None` if BLOCK_COMMIT was never reached.
    pub released_unix_us: Option<u64>,
    /// Ended by itself at max-hold-secs, before anyone asked.
    pub released_early: bool,
}

type Reply<T> = oneshot::Sender<T>;

enum Cmd {
    Stage(Stage, Reply<Result<u64, SessionError>>),
    End(&'static str, Reply<Ended>),
}

/// The handle of one connection thread.
pub struct Session {
    cmd: Mutex<Option<mpsc::Sender<Cmd>>>,
}

fn take<T>(m: &Mutex<Option<T>>) -> Option<T> {
    m.lock().unwrap_or_else(|p| p.into_inner()).take()
}

impl Session {
    /// Starts the thread and connects; answers once the connection is up
    /// (with `lock_wait_timeout` set) or could not be made.
    pub async fn open(cfg: MariadbWriterConfig) -> Result<Session, SessionError> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (cmd_tx, cmd_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("vss-mariadb-stage".into())
            .spawn(move || session_thread(cfg, ready_tx, cmd_rx))
            .map_err(|e| SessionError::Thread(e.to_string()))?;
        match ready_rx.await {
            Ok(Ok(())) => Ok(Session {
                cmd: Mutex::new(Some(cmd_tx)),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(SessionError::Thread("the thread ended".into())),
        }
    }

    /// Runs one stage; answers the Unix time (µs) when it returned.
    pub async fn stage(&self, stage: Stage) -> Result<u64, SessionError> {
        let sender = self
            .cmd
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(SessionError::Ended)?;
        let (tx, rx) = oneshot::channel();
        sender
            .send(Cmd::Stage(stage, tx))
            .map_err(|_| SessionError::Ended)?;
        rx.await.unwrap_or(Err(SessionError::Ended))
    }

    /// Ends the stages (`BACKUP STAGE END`) and closes the connection.
    /// Idempotent: later calls answer at once with nothing ended.
    pub async fn end(&self, why: &'static str) -> Ended {
        let nothing = Ended {
            released_unix_us: None,
            released_early: false,
        };
        let Some(sender) = take(&self.cmd) else {
            return nothing;
        };
        let (tx, rx) = oneshot::channel();
        if sender.send(Cmd::End(why, tx)).is_err() {
            return nothing;
        }
        rx.await.unwrap_or(nothing)
    }
}

fn session_thread(
    cfg: MariadbWriterConfig,
    ready: Reply<Result<(), SessionError>>,
    cmd_rx: mpsc::Receiver<Cmd>,
) {
    let socket = cfg.socket.display().to_string();
    let wait = cfg.lock_wait_timeout();
    // A stage waits at most lock_wait_timeout; the read timeout only
    // guards against a server that stops answering.
    let mut conn = match connect(&cfg, wait + Duration::from_secs(30)) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let set = format!(
        "SET SESSION lock_wait_timeout = {}",
        cfg.lock_wait_timeout_secs
    );
    if let Err(e) = conn.query_drop(&set) {
        let _ = ready.send(Err(classify(&socket, "SET lock_wait_timeout", e)));
        return;
    }
    if ready.send(Ok(())).is_err() {
        return;
    }
    let opened = Instant::now();
    let deadline = opened + cfg.max_hold();
    let mut started = false;
    let mut blocked: Option<Instant> = None;
    let end =
        |conn: &mut Conn, why: &str, blocked: Option<Instant>, started: bool| -> Option<u64> {
            let us = unix_micros();
            if started {
                if let Err(e) = conn.query_drop("BACKUP STAGE END") {
                    // Closing the connection below ends the stages anyway.
                    tracing::warn!(error = %e, "BACKUP STAGE END failed");
                }
            }
            match blocked {
                Some(at) => {
                    tracing::info!(
                        socket = %socket,
                        component = %cfg.full_path(),
                        released_unix_us = us,
                        held_ms = at.elapsed().as_millis() as u64,
                        reason = why,
                        "commits unblocked (BACKUP STAGE END)"
                    );
                    Some(us)
                }
                None => {
                    if started {
                        tracing::info!(reason = why, "backup stages ended");
                    }
                    None
                }
            }
        };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match cmd_rx.recv_timeout(left) {
            Ok(Cmd::Stage(stage, reply)) => {
                let t = Instant::now();
                let r = conn.query_drop(stage.sql());
                let done_us = unix_micros();
                match r {
                    Ok(()) => {
                        started = true;
                        if stage == Stage::BlockCommit {
                            blocked = Some(Instant::now());
                            tracing::info!(
                                socket = %socket,
                                component = %cfg.full_path(),
                                blocked_unix_us = done_us,
                                waited_ms = t.elapsed().as_millis() as u64,
                                "commits blocked (BACKUP STAGE BLOCK_COMMIT)"
                            );
                        } else {
                            tracing::info!(
                                stage = stage.sql(),
                                waited_ms = t.elapsed().as_millis() as u64,
                                "backup stage reached"
                            );
                        }
                        let _ = reply.send(Ok(done_us));
                    }
                    Err(mysql::Error::MySqlError(me)) if me.code == ER_LOCK_WAIT_TIMEOUT => {
                        started = true;
                        let waited = t.elapsed();
                        let b = blockers(&mut conn, waited);
                        let _ = reply.send(Err(SessionError::LockWait {
                            stage: stage.sql(),
                            waited_ms: waited.as_millis() as u64,
                            blockers: b,
                        }));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(classify(&socket, stage.sql(), e)));
                    }
                }
            }
            Ok(Cmd::End(why, reply)) => {
                let us = end(&mut conn, why, blocked, started);
                let _ = reply.send(Ended {
                    released_unix_us: us,
                    released_early: false,
                });
                return;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                tracing::warn!(
                    max_hold_secs = cfg.max_hold_secs,
                    "no Thaw or Abort came within max-hold-secs; ending the backup stages"
                );
                let us = end(&mut conn, "max-hold-secs", blocked, started);
                drop(conn);
                // Later stages fail; the Thaw that comes late must learn of it.
                while let Ok(cmd) = cmd_rx.recv() {
                    match cmd {
                        Cmd::Stage(_, reply) => {
                            let _ = reply.send(Err(SessionError::Ended));
                        }
                        Cmd::End(_, reply) => {
                            let _ = reply.send(Ended {
                                released_unix_us: us,
                                released_early: blocked.is_some(),
                            });
                            return;
                        }
                    }
                }
                return;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                end(&mut conn, "writer dropped the session", blocked, started);
                return;
            }
        }
    }
}
