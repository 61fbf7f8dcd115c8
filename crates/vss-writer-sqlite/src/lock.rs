//! Holding a database's write lock from Freeze to Thaw.
//!
//! Each frozen database gets a thread of its own with a connection of its
//! own: the thread runs `BEGIN IMMEDIATE` (the write lock, waiting at most
//! the lock timeout), reports the grant, then blocks until it is told to
//! release, runs `ROLLBACK` and closes the connection. The async handlers
//! only exchange messages with it, so a lock wait never blocks the SDK's
//! runtime, and an Abort can cancel a wait still in progress.
//!
//! If the writer process dies, the kernel drops its locks with it and the
//! database is writable again: no lock can outlive the writer.

use std::cell::RefCell;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, ErrorCode, OpenFlags};
use tokio::sync::oneshot;

use crate::config::DatabaseConfig;

/// Microseconds since the Unix epoch (the writer's log lines use them).
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Opens an existing database read-write without creating it. Read-write
/// even for checks: opening a WAL database or one with a hot journal
/// recovers it, which needs write access.
pub fn open_existing(path: &Path) -> rusqlite::Result<Connection> {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
}

/// The error is SQLITE_BUSY (or SQLITE_LOCKED): someone else has the lock.
pub fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// The wait of the lock thread's `BEGIN IMMEDIATE`: until the deadline,
/// unless cancelled. SQLite's busy handler is a plain function, so its
/// state lives in a thread-local of the (dedicated) lock thread.
struct BusyWait {
    deadline: Instant,
    cancel: Arc<AtomicBool>,
}

thread_local! {
    static BUSY_WAIT: RefCell<Option<BusyWait>> = const { RefCell::new(None) };
}

/// Polls every 2 ms, so the lock is taken within 2 ms of being free.
fn busy_wait(_attempt: i32) -> bool {
    BUSY_WAIT.with(|b| {
        let b = b.borrow();
        let Some(w) = b.as_ref() else {
            return false;
        };
        if w.cancel.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        if now >= w.deadline {
            return false;
        }
        std::thread::sleep((w.deadline - now).min(Duration::from_millis(2)));
        true
    })
}

/// The lock was granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Granted {
    pub unix_us: u64,
}

/// The lock was released (or had never been taken).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Released {
    /// When the lock was released; `None` if it was never granted.
    pub unix_us: Option<u64>,
    /// The lock was released by itself at `max-hold-secs`, before anyone
    /// asked: the shadow copy may have been cut without it.
    pub released_early: bool,
}

/// Why the lock was not granted.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("the database file does not exist")]
    Missing,
    #[error("the database cannot be opened: {0}")]
    Open(#[source] rusqlite::Error),
    #[error("the write lock was not granted within {} ms", .waited.as_millis())]
    Busy { waited: Duration },
    #[error("the lock request was cancelled (Abort)")]
    Cancelled,
    #[error("BEGIN IMMEDIATE failed: {0}")]
    Sqlite(#[source] rusqlite::Error),
    #[error("cannot start the lock thread: {0}")]
    Thread(#[source] std::io::Error),
}

enum Cmd {
    Release(oneshot::Sender<Released>),
}

/// A database's lock thread, from the lock request to its release.
pub struct Hold {
    pub db: DatabaseConfig,
    cancel: Arc<AtomicBool>,
    cmd: Mutex<Option<mpsc::Sender<Cmd>>>,
}

impl Hold {
    /// Starts the lock thread; the receiver says whether and when the lock
    /// was granted.
    pub fn start(
        db: DatabaseConfig,
        max_hold: Duration,
    ) -> (Arc<Hold>, oneshot::Receiver<Result<Granted, LockError>>) {
        let (granted_tx, granted_rx) = oneshot::channel();
        let (cmd_tx, cmd_rx) = mpsc::channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let hold = Arc::new(Hold {
            db: db.clone(),
            cancel: cancel.clone(),
            cmd: Mutex::new(Some(cmd_tx)),
        });
        let granted = Arc::new(Mutex::new(Some(granted_tx)));
        let granted2 = granted.clone();
        let spawned = std::thread::Builder::new()
            .name("vss-sqlite-lock".into())
            .spawn(move || lock_thread(db, max_hold, cancel, granted2, cmd_rx));
        if let Err(e) = spawned {
            if let Some(tx) = take(&granted) {
                let _ = tx.send(Err(LockError::Thread(e)));
            }
        }
        (hold, granted_rx)
    }

    /// Releases the lock (ROLLBACK) or cancels the wait for it, and waits
    /// until the connection is closed. Idempotent: later calls return at
    /// once with nothing released.
    pub async fn release(&self) -> Released {
        self.cancel.store(true, Ordering::SeqCst);
        let cmd = self.cmd.lock().unwrap_or_else(|p| p.into_inner()).take();
        let nothing = Released {
            unix_us: None,
            released_early: false,
        };
        let Some(cmd) = cmd else {
            return nothing;
        };
        let (tx, rx) = oneshot::channel();
        if cmd.send(Cmd::Release(tx)).is_err() {
            // The thread is gone: it never got the lock, or released it.
            return nothing;
        }
        rx.await.unwrap_or(nothing)
    }
}

fn take<T>(m: &Mutex<Option<T>>) -> Option<T> {
    m.lock().unwrap_or_else(|p| p.into_inner()).take()
}

type GrantSlot = Arc<Mutex<Option<oneshot::Sender<Result<Granted, LockError>>>>>;

fn lock_thread(
    db: DatabaseConfig,
    max_hold: Duration,
    cancel: Arc<AtomicBool>,
    granted: GrantSlot,
    cmd_rx: mpsc::Receiver<Cmd>,
) {
    let report = |r: Result<Granted, LockError>| match take(&granted) {
        Some(tx) => tx.send(r).is_ok(),
        None => false,
    };
    let component = db.full_path();
    let shown = db.path.display().to_string();

    // stat, not open: see procinfo on POSIX locks.
    if !db.path.is_file() {
        report(Err(LockError::Missing));
        return;
    }
    let conn = match open_existing(&db.path) {
        Ok(c) => c,
        Err(e) => {
            report(Err(LockError::Open(e)));
            return;
        }
    };
    let started = Instant::now();
    BUSY_WAIT.with(|b| {
        *b.borrow_mut() = Some(BusyWait {
            deadline: started + db.lock_timeout(),
            cancel: cancel.clone(),
        })
    });
    let begun = conn
        .busy_handler(Some(busy_wait))
        .and_then(|_| conn.execute_batch("BEGIN IMMEDIATE"));
    BUSY_WAIT.with(|b| *b.borrow_mut() = None);
    if let Err(e) = begun {
        let err = if cancel.load(Ordering::SeqCst) {
            LockError::Cancelled
        } else if is_busy(&e) {
            LockError::Busy {
                waited: started.elapsed(),
            }
        } else {
            LockError::Sqlite(e)
        };
        report(Err(err));
        return;
    }
    let granted_us = unix_micros();
    tracing::info!(
        database = %shown,
        component = %component,
        granted_unix_us = granted_us,
        waited_ms = started.elapsed().as_millis() as u64,
        "write lock granted"
    );
    let held = Instant::now();
    let release = |why: &str| {
        // Taken before ROLLBACK: the last instant the lock is certainly
        // held, as the grant time is the first (a waiting writer may commit
        // the moment ROLLBACK returns).
        let us = unix_micros();
        if let Err(e) = conn.execute_batch("ROLLBACK") {
            // Closing the connection below ends the transaction anyway.
            tracing::warn!(database = %shown, error = %e, "ROLLBACK failed");
        }
        tracing::info!(
            database = %shown,
            component = %component,
            released_unix_us = us,
            held_ms = held.elapsed().as_millis() as u64,
            reason = why,
            "write lock released"
        );
        us
    };

    if !report(Ok(Granted {
        unix_us: granted_us,
    })) || cancel.load(Ordering::SeqCst)
    {
        // Nobody waits for this lock any more (Abort came first).
        let us = release("cancelled");
        answer_pending(&cmd_rx, Some(us), false);
        return;
    }

    match cmd_rx.recv_timeout(max_hold) {
        Ok(Cmd::Release(reply)) => {
            let us = release("asked");
            let _ = reply.send(Released {
                unix_us: Some(us),
                released_early: false,
            });
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            tracing::warn!(
                database = %shown,
                max_hold_secs = max_hold.as_secs(),
                "no Thaw or Abort came within max-hold-secs; releasing the write lock"
            );
            let us = release("max-hold-secs");
            // The Thaw that comes late must learn of it.
            if let Ok(Cmd::Release(reply)) = cmd_rx.recv() {
                let _ = reply.send(Released {
                    unix_us: Some(us),
                    released_early: true,
                });
            }
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            release("writer dropped the hold");
        }
    }
    drop(conn);
}

fn answer_pending(cmd_rx: &mpsc::Receiver<Cmd>, unix_us: Option<u64>, early: bool) {
    while let Ok(Cmd::Release(reply)) = cmd_rx.try_recv() {
        let _ = reply.send(Released {
            unix_us,
            released_early: early,
        });
    }
}
