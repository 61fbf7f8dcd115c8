//! The SQLite writer end to end: the real `vss-writer-sqlite` registered
//! with vssd on a private bus, a database on a loop-mounted btrfs volume
//! under continuous load, shadow copies made through vss-client and
//! vssadmin. All privileged (`priv_`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::Connection;
use vss_testkit::system::{bin, wait_for, Bus, Daemon};
use vss_testkit::{privileged, LoopFs};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// A WAL database with the table the load writes.
fn make_db(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let c = Connection::open(path).unwrap();
    let mode: String = c
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    c.execute_batch("CREATE TABLE rows(n INTEGER PRIMARY KEY, started_us INTEGER NOT NULL);")
        .unwrap();
}

/// Writes the writer's configuration and starts it on the daemon's bus;
/// its log (stderr) goes to `dir/writer.log`.
fn start_writer(d: &Daemon, dir: &Path, db: &Path, lock_timeout_ms: u64) -> (Proc, PathBuf) {
    let cfg = dir.join("sqlite-writer.toml");
    std::fs::write(
        &cfg,
        format!(
            "name = \"SqliteWriter\"\n\n[[database]]\ncomponent = \"app\"\nlogical-path = \"Apps\"\npath = \"{}\"\nlock-timeout-ms = {lock_timeout_ms}\n",
            db.display()
        ),
    )
    .unwrap();
    let log = dir.join("writer.log");
    let child = Command::new(bin("vss-writer-sqlite"))
        .arg("--config")
        .arg(&cfg)
        .env("DBUS_SYSTEM_BUS_ADDRESS", &d.address)
        .env("VSS_LOG", "info")
        .env_remove("JOURNAL_STREAM")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start vss-writer-sqlite");
    let p = Proc(child);
    assert!(
        wait_for(Duration::from_secs(20), || d
            .vssadmin(&["list", "writers"])
            .stdout
            .contains("Writer name: 'SqliteWriter'")),
        "the SQLite writer did not register; its log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    (p, log)
}

/// The lines of `vssadmin list writers` describing the writer.
fn writer_block(d: &Daemon) -> Vec<String> {
    let o = d.vssadmin(&["list", "writers"]);
    o.stdout
        .split("Writer name: 'SqliteWriter'")
        .nth(1)
        .unwrap_or_else(|| panic!("SqliteWriter not listed: {}", o.stdout))
        .lines()
        // The rest of the name line, then the writer's lines up to the
        // blank line before the next writer.
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
        .collect()
}

/// The `KEY=N` values of the writer's log lines saying `what` about `db`.
fn log_times(log: &Path, what: &str, key: &str, db: &Path) -> Vec<u64> {
    let db = db.display().to_string();
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(what) && l.contains(&db))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{key}=")))
                .and_then(|v| v.parse().ok())
        })
        .collect()
}

/// One committed row: its number and when its INSERT started and returned.
#[derive(Clone, Copy, Debug)]
struct Commit {
    n: i64,
    started_us: u64,
    returned_us: u64,
}

/// Commits numbered rows back to back until stopped, so that one is
/// always about to commit; each waits for the lock as long as it takes
/// (the freeze).
fn load(db: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Commit>> {
    std::thread::spawn(move || {
        let c = Connection::open(&db).unwrap();
        c.busy_timeout(Duration::from_secs(30)).unwrap();
        let mut done = Vec::new();
        let mut n = 1i64;
        while !stop.load(Ordering::Relaxed) {
            let started_us = unix_us();
            c.execute(
                "INSERT INTO rows(n, started_us) VALUES (?1, ?2)",
                rusqlite::params![n, started_us as i64],
            )
            .unwrap();
            done.push(Commit {
                n,
                started_us,
                returned_us: unix_us(),
            });
            n += 1;
        }
        done
    })
}

async fn client(d: &Daemon) -> vss_client::Client {
    let conn = zbus::connection::Builder::address(d.address.as_str())
        .unwrap()
        .build()
        .await
        .unwrap();
    vss_client::Client::with_connection(&conn).await.unwrap()
}

#[test]
fn priv_sys_sqlite_writer_shadow_holds_exactly_what_committed_before_freeze() {
    if !privileged("priv_sys_sqlite_writer_shadow_holds_exactly_what_committed_before_freeze") {
        return;
    }
    let bus = Bus::start();
    let d = Daemon::start(&bus, "");
    let fs = LoopFs::new("btrfs", 256);
    let work = tempfile::tempdir().unwrap();
    let db = fs.path("app/data.db");
    make_db(&db);
    let (_writer, log) = start_writer(&d, work.path(), &db, 5000);
    let block = writer_block(&d);
    assert!(
        block.contains(&"State: [1] Stable".to_string()),
        "{block:?}"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let loader = load(db.clone(), stop.clone());
    std::thread::sleep(Duration::from_millis(500));
    let mp = fs.mount_point.display().to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let props = rt.block_on(async {
        let c = client(&d).await;
        c.create_shadow(std::slice::from_ref(&mp)).await
    });
    let props = props.unwrap_or_else(|e| {
        panic!(
            "create_shadow failed: {e}\nwriter log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let commits = loader.join().unwrap();
    assert_eq!(props.len(), 1);

    let granted = log_times(&log, "write lock granted", "granted_unix_us", &db);
    let released = log_times(&log, "write lock released", "released_unix_us", &db);
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(granted.len(), 1, "one grant logged:\n{text}");
    assert_eq!(released.len(), 1, "one release logged:\n{text}");
    let (granted, released) = (granted[0], released[0]);
    assert!(granted < released, "{granted} < {released}");

    // The shadow's copy of the database: the database and its WAL, as a
    // backup tool copies them (the -shm is excluded by the writer).
    let shadow = PathBuf::from(&props[0].device_object).join("app");
    let copy = work.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    std::fs::copy(shadow.join("data.db"), copy.join("data.db")).unwrap();
    if shadow.join("data.db-wal").exists() {
        std::fs::copy(shadow.join("data.db-wal"), copy.join("data.db-wal")).unwrap();
    }
    let c = Connection::open(copy.join("data.db")).unwrap();
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let in_shadow: Vec<i64> = c
        .prepare("SELECT n FROM rows ORDER BY n")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let last = in_shadow.last().copied().unwrap_or(0);
    assert_eq!(
        in_shadow,
        (1..=last).collect::<Vec<_>>(),
        "the shadow holds a prefix of the commits"
    );

    let before: Vec<&Commit> = commits.iter().filter(|c| c.returned_us < granted).collect();
    let after: Vec<&Commit> = commits.iter().filter(|c| c.started_us > released).collect();
    assert!(!before.is_empty(), "the load committed before the freeze");
    assert!(!after.is_empty(), "the load committed after the thaw");
    for c in &before {
        assert!(c.n <= last, "{c:?} returned before the lock was granted ({granted}) but is not in the shadow (last {last})");
    }
    for c in &after {
        assert!(
            c.n > last,
            "{c:?} started after the lock was released ({released}) but is in the shadow"
        );
    }
    // Nothing committed while the lock was held: a commit that started
    // after the grant returned only after the release.
    for c in commits.iter().filter(|c| c.started_us > granted) {
        assert!(
            c.returned_us >= released,
            "{c:?} committed inside the frozen window {granted}..{released}"
        );
    }
    // And every row in the shadow returned before the release.
    for c in commits.iter().filter(|c| c.n <= last) {
        assert!(
            c.started_us <= granted,
            "{c:?} in the shadow started after the grant"
        );
    }

    let block = writer_block(&d);
    assert!(
        block.contains(&"State: [1] Stable".to_string()),
        "{block:?}"
    );
    assert!(
        block.contains(&"Last error: No error".to_string()),
        "{block:?}"
    );
    // The database serves writes.
    let live = Connection::open(&db).unwrap();
    live.busy_timeout(Duration::from_secs(2)).unwrap();
    live.execute("INSERT INTO rows(n, started_us) VALUES (1000000, 0)", [])
        .unwrap();
}

#[test]
fn priv_sys_sqlite_writer_locked_database_fails_the_set_retryably() {
    if !privileged("priv_sys_sqlite_writer_locked_database_fails_the_set_retryably") {
        return;
    }
    let bus = Bus::start();
    let d = Daemon::start(&bus, "");
    let fs = LoopFs::new("btrfs", 256);
    let work = tempfile::tempdir().unwrap();
    let db = fs.path("app/data.db");
    make_db(&db);
    let (_writer, log) = start_writer(&d, work.path(), &db, 1000);

    // Another process holds the write lock until its stdin closes.
    let mut holder = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)\n\
             c.execute('BEGIN IMMEDIATE')\n\
             c.execute('INSERT INTO rows(n, started_us) VALUES (-1, 0)')\n\
             print('locked', flush=True)\n\
             sys.stdin.read()\n\
             c.execute('COMMIT')\n",
        ])
        .arg(&db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start /usr/bin/python3 (Debian package python3)");
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");
    let holder_pid = holder.id();

    let mp = fs.mount_point.display().to_string();
    let t = Instant::now();
    let o = d.vssadmin(&["create", "shadow", &format!("/for={mp}")]);
    assert_eq!(o.code, 1, "{o:#?}");
    assert!(
        o.stderr.contains("0x800423F3 VSS_E_WRITERERROR_RETRYABLE"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains(&db.display().to_string()), "{}", o.stderr);
    assert!(
        o.stderr.contains("another connection holds it"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr
            .contains(&format!("pid {holder_pid}: /usr/bin/python3")),
        "the holder is named: {}",
        o.stderr
    );
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());

    let block = writer_block(&d);
    assert!(
        block.contains(&"State: [9] Failed".to_string()),
        "{block:?}"
    );
    assert!(
        block.contains(&"Last error: Retryable error".to_string()),
        "{block:?}"
    );
    let msg = block
        .iter()
        .find(|l| l.starts_with("Last error message: "))
        .unwrap_or_else(|| panic!("no last error message: {block:?}"));
    assert!(msg.contains(&db.display().to_string()), "{msg}");
    assert!(d
        .vssadmin(&["list", "shadows"])
        .stdout
        .contains("No items found"));
    assert!(
        log_times(&log, "write lock granted", "granted_unix_us", &db).is_empty(),
        "the lock was never granted"
    );

    // The holder commits and goes; the writer kept nothing locked, so the
    // database serves writes at once.
    drop(holder.stdin.take());
    assert!(holder.wait().unwrap().success());
    let live = Connection::open(&db).unwrap();
    live.busy_timeout(Duration::from_secs(2)).unwrap();
    let t = Instant::now();
    live.execute("INSERT INTO rows(n, started_us) VALUES (1, 0)", [])
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    let n: i64 = live
        .query_row("SELECT count(*) FROM rows", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2);

    // And the next shadow copy works.
    d.vssadmin(&["create", "shadow", &format!("/for={mp}")])
        .ok();
    let block = writer_block(&d);
    assert!(
        block.contains(&"State: [1] Stable".to_string()),
        "{block:?}"
    );
}

/// Rewrites files f0..f9 of `dir` in order, each round with the next
/// generation number, until stopped. Any one instant shows a run of
/// generation g+1 followed by generation g; a copy read over time would
/// show a later file newer than an earlier one.
fn churn(dir: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut g = 1u64;
        while !stop.load(Ordering::Relaxed) {
            for i in 0..10 {
                // Whole files only (write and rename): an instant never
                // shows a half-written one.
                let tmp = dir.join(format!(".f{i}.tmp"));
                std::fs::write(&tmp, g.to_string()).unwrap();
                std::fs::rename(&tmp, dir.join(format!("f{i}"))).unwrap();
            }
            g += 1;
        }
        g
    })
}

/// vssbackup with the SQLite writer while the database and a plain
/// directory keep changing, then a restore to a fresh location: the
/// database is sound and holds exactly what committed before Freeze, the
/// directory shows one instant.
#[test]
fn priv_sys_vssbackup_sqlite_under_load_and_a_changing_directory() {
    if !privileged("priv_sys_vssbackup_sqlite_under_load_and_a_changing_directory") {
        return;
    }
    let fs = LoopFs::new("btrfs", 512);
    let db = fs.path("db/app.db");
    make_db(&db);
    let plain = fs.path("plain");
    std::fs::create_dir_all(&plain).unwrap();
    for i in 0..10 {
        std::fs::write(plain.join(format!("f{i}")), "0").unwrap();
    }
    let bus = Bus::start();
    let d = Daemon::start(&bus, "");
    let work = tempfile::tempdir().unwrap();
    let (_writer, log) = start_writer(&d, work.path(), &db, 5000);
    let stop = Arc::new(AtomicBool::new(false));
    let loader = load(db.clone(), stop.clone());
    let churner = churn(plain.clone(), stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    let dest = work.path().join("backup");
    let o = d.run(
        Command::new(bin("vssbackup"))
            .args(["--json", "backup", "--to"])
            .arg(&dest)
            .args(["--writer", "SqliteWriter", "--include"])
            .arg(&plain),
    );
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let commits = loader.join().unwrap();
    let generations = churner.join().unwrap();
    assert_eq!(
        o.code,
        0,
        "{o:#?}\nwriter log:\n{}",
        std::fs::read_to_string(&log).unwrap()
    );
    let granted = log_times(&log, "write lock granted", "granted_unix_us", &db);
    let released = log_times(&log, "write lock released", "released_unix_us", &db);
    assert_eq!((granted.len(), released.len()), (1, 1));
    let (granted, released) = (granted[0], released[0]);

    // Restore to a fresh location; the writer checks the database there.
    let alt = work.path().join("restored");
    let o = d.run(
        Command::new(bin("vssbackup"))
            .args(["--json", "restore"])
            .arg(&dest)
            .arg("--to")
            .arg(&alt),
    );
    assert_eq!(o.code, 0, "{o:#?}");
    assert!(
        o.stdout.contains("\"event\":\"writer\"") && !o.stdout.contains("Failed"),
        "{o:#?}"
    );
    let rdb = alt.join(db.strip_prefix("/").unwrap());
    let c = Connection::open(&rdb).unwrap();
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let rows: Vec<i64> = c
        .prepare("SELECT n FROM rows ORDER BY n")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let last = rows.last().copied().unwrap_or(0);
    assert_eq!(
        rows,
        (1..=last).collect::<Vec<_>>(),
        "committed rows form a prefix"
    );
    for cm in &commits {
        if cm.returned_us < granted {
            assert!(cm.n <= last, "{cm:?} acknowledged before Freeze is missing");
        }
        if cm.started_us > released {
            assert!(
                cm.n > last,
                "{cm:?} acknowledged after Thaw is in the backup"
            );
        }
    }
    assert!(
        commits.iter().any(|c| c.n > last),
        "the load went on after the backup"
    );

    // The directory: one instant.
    let rplain = alt.join(plain.strip_prefix("/").unwrap());
    let gens: Vec<u64> = (0..10)
        .map(|i| {
            std::fs::read_to_string(rplain.join(format!("f{i}")))
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    let (hi, lo) = (gens[0], gens[9]);
    assert!(hi == lo || hi == lo + 1, "{gens:?}");
    assert!(
        gens.windows(2).all(|w| w[0] >= w[1]),
        "not one instant: {gens:?}"
    );
    assert!(
        generations > hi + 1,
        "the directory kept changing after the shadow"
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dest.join("backup.json")).unwrap()).unwrap();
    assert_eq!(summary["includes"][0]["consistency"], "crash-consistent");
    assert_eq!(summary["components"][0]["key"], "SqliteWriter:Apps\\app");
    assert_eq!(summary["components"][0]["succeeded"], true);
}
