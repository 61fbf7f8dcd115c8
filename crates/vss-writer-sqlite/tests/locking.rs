//! The write lock with real databases: held from Freeze to Thaw, released
//! by Abort, refused in time when another connection holds it, released by
//! itself at max-hold-secs; and the checkpoint of PrepareForSnapshot.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use vss_types::Guid;
use vss_writer::{EventContext, VetoKind, Writer};
use vss_writer_sqlite::{DatabaseConfig, SqliteWriter, SqliteWriterConfig};

#[derive(Clone, Copy, Debug)]
enum Mode {
    Wal,
    Rollback,
}

fn make_db(path: &Path, mode: Mode) {
    let c = Connection::open(path).unwrap();
    let jm = match mode {
        Mode::Wal => "WAL",
        Mode::Rollback => "DELETE",
    };
    let got: String = c
        .query_row(&format!("PRAGMA journal_mode={jm}"), [], |r| r.get(0))
        .unwrap();
    assert!(got.eq_ignore_ascii_case(jm), "{got}");
    c.execute_batch(
        "CREATE TABLE t(n INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('first');",
    )
    .unwrap();
}

fn writer(path: &Path, lock_timeout_ms: u64) -> SqliteWriter {
    let mut db = DatabaseConfig::new("db", path);
    db.lock_timeout_ms = lock_timeout_ms;
    SqliteWriter::new(SqliteWriterConfig::new(vec![db]))
}

/// Inserts a row on a fresh connection in a thread of its own, waiting for
/// the lock up to 20 s; the receiver gets how long the insert took.
fn insert_in_background(path: &Path) -> mpsc::Receiver<Result<Duration, String>> {
    let path = path.to_path_buf();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = (|| {
            let c = Connection::open(&path)?;
            c.busy_timeout(Duration::from_secs(20))?;
            let t = Instant::now();
            c.execute("INSERT INTO t(v) VALUES ('during')", [])?;
            Ok::<_, rusqlite::Error>(t.elapsed())
        })();
        let _ = tx.send(r.map_err(|e| e.to_string()));
    });
    rx
}

fn count(path: &Path) -> i64 {
    let c = Connection::open(path).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap()
}

fn ctx() -> EventContext {
    EventContext::new(Guid::new_random())
}

async fn writes_wait_from_freeze_to_thaw(mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    make_db(&path, mode);
    let w = writer(&path, 5000);
    let c = ctx();
    w.on_prepare_snapshot(&c, vec![]).await.unwrap();
    w.on_freeze(&c).await.unwrap();
    assert_eq!(w.held_databases(), vec![path.clone()]);

    let rx = insert_in_background(&path);
    // Readers are not blocked while frozen.
    assert_eq!(count(&path), 1);
    assert!(
        rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "an insert went through while the database was frozen ({mode:?})"
    );
    let thawed = Instant::now();
    w.on_thaw(&c).await.unwrap();
    let took = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the insert never finished after Thaw")
        .unwrap();
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert!(thawed.elapsed() < Duration::from_secs(5));
    assert_eq!(count(&path), 2);
    assert!(w.held_databases().is_empty());
    // Thaw again, BackupShutdown: nothing left to do, no error.
    w.on_thaw(&c).await.unwrap();
    w.on_backup_shutdown(&c).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_writes_wait_from_freeze_to_thaw() {
    writes_wait_from_freeze_to_thaw(Mode::Wal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_journal_writes_wait_from_freeze_to_thaw() {
    writes_wait_from_freeze_to_thaw(Mode::Rollback).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_releases_and_abort_without_freeze_is_fine() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    make_db(&path, Mode::Wal);
    let w = writer(&path, 5000);
    let c = ctx();
    w.on_abort(&c).await.unwrap();
    w.on_abort(&EventContext::new(Guid::NULL)).await.unwrap();

    w.on_freeze(&c).await.unwrap();
    let rx = insert_in_background(&path);
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    // The Abort of another requestor's set keeps the locks.
    w.on_abort(&ctx()).await.unwrap();
    w.on_abort(&EventContext::new(Guid::NULL)).await.unwrap();
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    assert_eq!(w.held_databases().len(), 1);
    // This set's Abort releases them.
    w.on_abort(&c).await.unwrap();
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the insert never finished after Abort")
        .unwrap();
    w.on_abort(&c).await.unwrap();
    w.on_thaw(&c).await.unwrap();
    assert_eq!(count(&path), 2);
}

async fn lock_not_granted_in_time(mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.db");
    make_db(&path, mode);
    let holder = Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();

    let w = writer(&path, 300);
    let c = ctx();
    let t = Instant::now();
    let v = w.on_freeze(&c).await.unwrap_err();
    let took = t.elapsed();
    assert!(
        (Duration::from_millis(300)..Duration::from_secs(5)).contains(&took),
        "{took:?}"
    );
    assert_eq!(v.kind(), VetoKind::Retryable, "{v}");
    let shown = v.to_string();
    assert!(
        shown.starts_with("0x800423F3 VSS_E_WRITERERROR_RETRYABLE: "),
        "{shown}"
    );
    assert!(v.message().contains(&path.display().to_string()), "{v}");
    assert!(v.message().contains("not granted within"), "{v}");
    assert!(v.message().contains("another connection holds it"), "{v}");
    // The holder is this very process: /proc/locks names it.
    assert!(
        v.message()
            .contains(&format!("(pid {}: ", std::process::id())),
        "{mode:?}: {v}"
    );
    assert!(v.hint().unwrap().contains("lock-timeout-ms"), "{v:?}");
    assert!(w.held_databases().is_empty());

    // Once the holder commits, the database serves writes and Freeze works.
    holder
        .execute("INSERT INTO t(v) VALUES ('holder')", [])
        .unwrap();
    holder.execute_batch("COMMIT").unwrap();
    w.on_freeze(&c).await.unwrap();
    w.on_thaw(&c).await.unwrap();
    holder
        .execute("INSERT INTO t(v) VALUES ('after')", [])
        .unwrap();
    assert_eq!(count(&path), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_lock_not_granted_in_time_is_retryable_and_names_the_holder() {
    lock_not_granted_in_time(Mode::Wal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_lock_not_granted_in_time_is_retryable_and_names_the_holder() {
    lock_not_granted_in_time(Mode::Rollback).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_cancels_a_lock_wait_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.db");
    make_db(&path, Mode::Wal);
    let holder = Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();

    let w = std::sync::Arc::new(writer(&path, 30_000));
    let c = ctx();
    let w2 = w.clone();
    let c2 = c.clone();
    let t = Instant::now();
    let freeze = tokio::spawn(async move { w2.on_freeze(&c2).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    w.on_abort(&c).await.unwrap();
    let v = tokio::time::timeout(Duration::from_secs(5), freeze)
        .await
        .expect("Freeze kept waiting after Abort")
        .unwrap()
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(v.message().contains("cancelled"), "{v}");
    assert!(w.held_databases().is_empty());
    holder.execute_batch("COMMIT").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.db");
    make_db(&good, Mode::Wal);
    let missing = dir.path().join("missing.db");
    let mut dbs = vec![
        DatabaseConfig::new("good", &good),
        DatabaseConfig::new("missing", &missing),
    ];
    dbs[1].lock_timeout_ms = 200;
    let w = SqliteWriter::new(SqliteWriterConfig::new(dbs));
    let v = w.on_freeze(&ctx()).await.unwrap_err();
    assert_eq!(v.kind(), VetoKind::Retryable, "{v}");
    assert!(v.message().contains("missing.db"), "{v}");
    assert!(v.message().contains("unreachable"), "{v}");
    assert!(!v.message().contains("good.db"), "{v}");
    // The good database's lock was given back.
    assert!(w.held_databases().is_empty());
    let c = Connection::open(&good).unwrap();
    c.execute("INSERT INTO t(v) VALUES ('x')", []).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_left_alone_is_released_at_max_hold_and_thaw_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    make_db(&path, Mode::Wal);
    let mut cfg = SqliteWriterConfig::new(vec![DatabaseConfig::new("db", &path)]);
    cfg.max_hold_secs = 1;
    let w = SqliteWriter::new(cfg);
    let c = ctx();
    w.on_freeze(&c).await.unwrap();
    let rx = insert_in_background(&path);
    let took = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the lock was never released by itself")
        .unwrap();
    assert!(took >= Duration::from_millis(700), "{took:?}");
    let v = w.on_thaw(&c).await.unwrap_err();
    assert_eq!(v.kind(), VetoKind::Timeout, "{v}");
    assert!(v.message().contains("max-hold-secs"), "{v}");
    assert!(v.message().contains(&path.display().to_string()), "{v}");
}

fn wal_size(path: &Path) -> u64 {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(PathBuf::from(wal))
        .map(|m| m.len())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_checkpoints_wal_databases() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    make_db(&path, Mode::Wal);
    // An application connection that stays open keeps the WAL in place.
    let app = Connection::open(&path).unwrap();
    app.execute_batch("PRAGMA wal_autocheckpoint=0;").unwrap();
    for i in 0..200 {
        app.execute("INSERT INTO t(v) VALUES (?1)", [format!("row {i}")])
            .unwrap();
    }
    assert!(wal_size(&path) > 0);
    let w = writer(&path, 5000);
    w.on_prepare_snapshot(&ctx(), vec![]).await.unwrap();
    assert_eq!(wal_size(&path), 0, "TRUNCATE empties the WAL");
    assert_eq!(count(&path), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_databases_on_the_sets_volumes_are_frozen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    make_db(&path, Mode::Wal);
    let w = writer(&path, 5000);
    let c = ctx();
    // A set of some other volume (no real mount point is named so).
    w.on_prepare_snapshot(&c, vec!["/nonexistent-volume".into()])
        .await
        .unwrap();
    w.on_freeze(&c).await.unwrap();
    assert!(w.held_databases().is_empty());
    w.on_thaw(&c).await.unwrap();
    // The set of the database's own volume.
    let mount = vss_sys::mounts::volume_of(&path).unwrap().mount_point;
    let c = ctx();
    w.on_prepare_snapshot(&c, vec![mount]).await.unwrap();
    w.on_freeze(&c).await.unwrap();
    assert_eq!(w.held_databases(), vec![path.clone()]);
    w.on_thaw(&c).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_fails_retryable_for_a_missing_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.db");
    let w = writer(&path, 5000);
    let v = w.on_prepare_snapshot(&ctx(), vec![]).await.unwrap_err();
    assert_eq!(v.kind(), VetoKind::Retryable);
    assert!(v.message().contains("missing.db"), "{v}");
}
