//! The MariaDB writer end to end: the real `vss-writer-mariadb` registered
//! with vssd on a private bus, a MariaDB server (Debian's `mariadbd`) whose
//! data directory lies on a loop-mounted btrfs volume, backups and restores
//! with `vssbackup`. All privileged (`priv_`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mysql::prelude::Queryable;
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

/// A MariaDB program: from PATH, else from /usr/sbin or /usr/bin (where
/// Debian's mariadb-server puts them; PATH may lack sbin).
fn prog(name: &str) -> PathBuf {
    let in_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|f| f.is_file())
        })
        .unwrap_or_default();
    in_path
        .or_else(|| {
            ["/usr/sbin", "/usr/bin"]
                .iter()
                .map(|d| Path::new(d).join(name))
                .find(|f| f.is_file())
        })
        .unwrap_or_else(|| PathBuf::from(name))
}

const WRITER_PW: &str = "vss-test-pw";
const APP_PW: &str = "app-test-pw";

/// A mariadbd on a data directory, with its socket, pid file and error log
/// in a run directory; killed (and waited for) when dropped, so no server
/// outlives the test or keeps its volume busy.
struct Maria {
    datadir: PathBuf,
    socket: PathBuf,
    errlog: PathBuf,
    child: Option<Child>,
}

impl Maria {
    /// `mariadb-install-db` into `datadir`.
    fn install(datadir: &Path) {
        std::fs::create_dir_all(datadir).unwrap();
        // Two bootstraps at once fail (tests run in parallel): one at a
        // time, under a lock file (flock from util-linux). Its own tmpdir
        // too: a mariadbd starting in another test deletes every `#sql*`
        // file in its tmpdir, which took the bootstrap's temporary tables.
        let tmp = tempfile::tempdir().unwrap();
        let o = Command::new("flock")
            .arg("/tmp/vss-systest-mariadb-install.lock")
            .arg(prog("mariadb-install-db"))
            .arg("--no-defaults")
            .arg(format!("--datadir={}", datadir.display()))
            .arg(format!("--tmpdir={}", tmp.path().display()))
            .args(["--user=root", "--skip-test-db"])
            .stdin(Stdio::null())
            .output()
            .expect("run mariadb-install-db (Debian package mariadb-server)");
        assert!(
            o.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// Starts `mariadbd` on `datadir` with its socket, pid file and log in
    /// `run`, and waits until it answers.
    fn start(datadir: &Path, run: &Path) -> Maria {
        std::fs::create_dir_all(run).unwrap();
        let socket = run.join("sock");
        let errlog = run.join("mariadbd.err");
        // A private tmpdir: mariadbd clears `#sql*` files in its tmpdir at
        // start, which would hit the other tests' servers.
        let tmpdir = run.join("tmp");
        std::fs::create_dir_all(&tmpdir).unwrap();
        let child = Command::new(prog("mariadbd"))
            .arg("--no-defaults")
            .arg(format!("--datadir={}", datadir.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", run.join("mariadbd.pid").display()))
            .arg(format!("--log-error={}", errlog.display()))
            .arg(format!("--tmpdir={}", tmpdir.display()))
            .args([
                "--skip-networking",
                "--user=root",
                "--innodb-buffer-pool-size=32M",
                "--innodb-log-file-size=16M",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mariadbd (Debian package mariadb-server)");
        let mut m = Maria {
            datadir: datadir.to_owned(),
            socket,
            errlog,
            child: Some(child),
        };
        let up = wait_for(Duration::from_secs(30), || {
            if let Some(c) = m.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    return true;
                }
            }
            m.socket.exists() && m.sql_root("SELECT 1").is_ok()
        });
        let running = m
            .child
            .as_mut()
            .map(|c| matches!(c.try_wait(), Ok(None)))
            .unwrap_or(false);
        assert!(
            up && running,
            "mariadbd on {} did not start; its log:\n{}",
            datadir.display(),
            m.log()
        );
        m
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.errlog).unwrap_or_default()
    }

    /// Runs SQL as root with the `mariadb` client (unix_socket login).
    fn sql_root(&self, sql: &str) -> Result<String, String> {
        let o = Command::new(prog("mariadb"))
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["-uroot", "--batch", "--skip-column-names", "-e", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run mariadb: {e}"))?;
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).into_owned())
        }
    }

    /// The writer's account, the application's account and its tables.
    fn setup(&self) {
        self.sql_root(&format!(
            "CREATE USER 'vss'@'localhost' IDENTIFIED BY '{WRITER_PW}';\
             GRANT RELOAD, PROCESS ON *.* TO 'vss'@'localhost';\
             CREATE DATABASE app;\
             CREATE USER 'app'@'localhost' IDENTIFIED BY '{APP_PW}';\
             GRANT ALL ON app.* TO 'app'@'localhost';\
             CREATE TABLE app.acked(n BIGINT PRIMARY KEY, started_us BIGINT NOT NULL) ENGINE=InnoDB;\
             CREATE TABLE app.archive(v INT) ENGINE=MyISAM;"
        ))
        .unwrap_or_else(|e| panic!("setup failed: {e}\n{}", self.log()));
    }

    /// A connection as the application.
    fn app(&self) -> mysql::Conn {
        let opts = mysql::OptsBuilder::new()
            .socket(Some(self.socket.display().to_string()))
            .user(Some("app"))
            .pass(Some(APP_PW))
            .db_name(Some("app"));
        mysql::Conn::new(opts).expect("connect as app")
    }

    /// Stops the server (SIGKILL: the tests never need a clean shutdown,
    /// and InnoDB recovers from this as from a crash).
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Maria {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- mariadbd log ({}) ----\n{}",
                self.datadir.display(),
                self.log()
            );
        }
        self.stop();
    }
}

/// Writes the writer's configuration and starts it on the daemon's bus;
/// its log (stderr) goes to `dir/writer.log`. Waits until it is listed.
fn start_writer(d: &Daemon, dir: &Path, socket: &Path, lock_wait_secs: u64) -> (Proc, PathBuf) {
    let pw = dir.join("writer.password");
    std::fs::write(&pw, format!("{WRITER_PW}\n")).unwrap();
    let cfg = dir.join("mariadb-writer.toml");
    std::fs::write(
        &cfg,
        format!(
            "socket = \"{}\"\nuser = \"vss\"\npassword-file = \"{}\"\nlock-wait-timeout-secs = {lock_wait_secs}\n",
            socket.display(),
            pw.display()
        ),
    )
    .unwrap();
    let log = dir.join("writer.log");
    let child = Command::new(bin("vss-writer-mariadb"))
        .arg("--config")
        .arg(&cfg)
        .env("DBUS_SYSTEM_BUS_ADDRESS", &d.address)
        .env("VSS_LOG", "info")
        .env_remove("JOURNAL_STREAM")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start vss-writer-mariadb");
    let p = Proc(child);
    assert!(
        wait_for(Duration::from_secs(20), || d
            .vssadmin(&["list", "writers"])
            .stdout
            .contains("Writer name: 'MariadbWriter'")),
        "the MariaDB writer did not register; its log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    (p, log)
}

/// The lines of `vssadmin list writers` describing the writer.
fn writer_block(d: &Daemon) -> Vec<String> {
    let o = d.vssadmin(&["list", "writers"]);
    o.stdout
        .split("Writer name: 'MariadbWriter'")
        .nth(1)
        .unwrap_or_else(|| panic!("MariadbWriter not listed: {}", o.stdout))
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
        .collect()
}

/// The `KEY=N` values of the writer's log lines saying `what`.
fn log_times(log: &Path, what: &str, key: &str) -> Vec<u64> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(what))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{key}=")))
                .and_then(|v| v.parse().ok())
        })
        .collect()
}

/// One acknowledged commit: its number, and when its INSERT was sent and
/// acknowledged.
#[derive(Clone, Copy, Debug)]
struct Commit {
    n: i64,
    started_us: u64,
    returned_us: u64,
}

/// Commits numbered rows (autocommit InnoDB INSERTs) back to back until
/// stopped; each waits as long as the freeze lasts.
fn load(mut conn: mysql::Conn, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Commit>> {
    std::thread::spawn(move || {
        let mut done = Vec::new();
        let mut n = 1i64;
        while !stop.load(Ordering::Relaxed) {
            let started_us = unix_us();
            conn.exec_drop(
                "INSERT INTO acked(n, started_us) VALUES (?, ?)",
                (n, started_us as i64),
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

/// vssbackup under an insert load, then a restore to a fresh location and
/// a second server on the restored data directory: it starts, its tables
/// check, and it holds every row acknowledged before BLOCK_COMMIT and none
/// sent after it.
#[test]
fn priv_sys_mariadb_writer_backup_under_load_and_restore() {
    if !privileged("priv_sys_mariadb_writer_backup_under_load_and_restore") {
        return;
    }
    let t0 = Instant::now();
    let fs = LoopFs::new("btrfs", 512);
    let work = tempfile::tempdir().unwrap();
    let datadir = fs.path("maria/data");
    Maria::install(&datadir);
    let maria = Maria::start(&datadir, &work.path().join("run"));
    maria.setup();
    let bus = Bus::start();
    let d = Daemon::start(&bus, "");
    let (_writer, log) = start_writer(&d, work.path(), &maria.socket, 5);
    let block = writer_block(&d);
    assert!(
        block.contains(&"State: [1] Stable".to_string()),
        "{block:?}"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let loader = load(maria.app(), stop.clone());
    std::thread::sleep(Duration::from_millis(500));
    let dest = work.path().join("backup");
    let o = d.run(
        Command::new(bin("vssbackup"))
            .args(["--json", "backup", "--to"])
            .arg(&dest)
            .args(["--writer", "MariadbWriter"]),
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let commits = loader.join().unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(o.code, 0, "{o:#?}\nwriter log:\n{text}");
    let blocked = log_times(&log, "commits blocked", "blocked_unix_us");
    let released = log_times(&log, "commits unblocked", "released_unix_us");
    assert_eq!(
        (blocked.len(), released.len()),
        (1, 1),
        "one BLOCK_COMMIT and one END logged:\n{text}"
    );
    let (blocked, released) = (blocked[0], released[0]);
    assert!(blocked < released, "{blocked} < {released}");

    let alt = work.path().join("restored");
    let o = d.run(
        Command::new(bin("vssbackup"))
            .args(["--json", "restore"])
            .arg(&dest)
            .arg("--to")
            .arg(&alt),
    );
    assert_eq!(
        o.code,
        0,
        "{o:#?}\nwriter log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(!o.stdout.contains("Failed"), "{o:#?}");
    let rdata = alt.join(datadir.strip_prefix("/").unwrap());
    assert!(rdata.join("ibdata1").is_file(), "{}", rdata.display());
    assert!(rdata.join("aria_log_control").is_file());
    assert!(rdata.join("app").is_dir());

    // A second server on the restored copy: InnoDB crash recovery brings it
    // to the BLOCK_COMMIT cut.
    let copy = Maria::start(&rdata, &work.path().join("run2"));
    let chk = Command::new(prog("mariadb-check"))
        .arg("--no-defaults")
        .arg(format!("--socket={}", copy.socket.display()))
        .args(["-uroot", "--extended", "--all-databases"])
        .output()
        .expect("run mariadb-check");
    let chk_out =
        String::from_utf8_lossy(&chk.stdout).into_owned() + &String::from_utf8_lossy(&chk.stderr);
    assert!(chk.status.success(), "mariadb-check failed:\n{chk_out}");
    assert!(chk_out.contains("app.acked"), "{chk_out}");
    assert!(
        !chk_out.to_lowercase().contains("error") && !chk_out.contains("corrupt"),
        "{chk_out}"
    );
    let rows: Vec<i64> = copy
        .sql_root("SELECT n FROM app.acked ORDER BY n")
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    let last = rows.last().copied().unwrap_or(0);
    assert_eq!(
        rows,
        (1..=last).collect::<Vec<_>>(),
        "committed rows form a prefix"
    );
    let before: Vec<&Commit> = commits.iter().filter(|c| c.returned_us < blocked).collect();
    assert!(!before.is_empty(), "the load committed before the freeze");
    for c in &before {
        assert!(
            c.n <= last,
            "{c:?} acknowledged before BLOCK_COMMIT ({blocked}) is missing (last {last})"
        );
    }
    // A commit sent after BLOCK_COMMIT returned waited for END: not in the
    // copy, and not acknowledged before END.
    for c in commits.iter().filter(|c| c.started_us > blocked) {
        assert!(
            c.n > last,
            "{c:?} sent after BLOCK_COMMIT ({blocked}) is in the copy (last {last})"
        );
        assert!(
            c.returned_us >= released,
            "{c:?} committed inside the frozen window {blocked}..{released}"
        );
    }
    assert!(
        commits.iter().any(|c| c.started_us > released),
        "the load went on after the thaw"
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dest.join("backup.json")).unwrap()).unwrap();
    assert_eq!(
        summary["components"][0]["key"], "MariadbWriter:instance",
        "{summary}"
    );
    assert_eq!(summary["components"][0]["succeeded"], true);
    let block = writer_block(&d);
    assert!(
        block.contains(&"Last error: No error".to_string()),
        "{block:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(60), "{:?}", t0.elapsed());
}

/// The server down at backup time: Identify fails retryably naming the
/// socket, `vssadmin list writers` shows it, the backup leaves nothing
/// behind; once the server is up the next backup works.
#[test]
fn priv_sys_mariadb_writer_server_down_is_retryable() {
    if !privileged("priv_sys_mariadb_writer_server_down_is_retryable") {
        return;
    }
    let fs = LoopFs::new("btrfs", 512);
    let work = tempfile::tempdir().unwrap();
    let datadir = fs.path("maria/data");
    Maria::install(&datadir);
    let run = work.path().join("run");
    let socket = run.join("sock");
    let bus = Bus::start();
    let d = Daemon::start(&bus, "");
    let (_writer, log) = start_writer(&d, work.path(), &socket, 5);

    let dest = work.path().join("backup");
    let o = d.run(
        Command::new(bin("vssbackup"))
            .args(["backup", "--to"])
            .arg(&dest)
            .args(["--writer", "MariadbWriter"]),
    );
    assert_ne!(o.code, 0, "{o:#?}");
    let block = writer_block(&d);
    assert!(
        block
            .iter()
            .any(|l| l.starts_with("State: [") && l.ends_with("] Failed")),
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
    assert!(msg.contains(&socket.display().to_string()), "{msg}");
    assert!(msg.contains("unreachable"), "{msg}");
    assert!(d
        .vssadmin(&["list", "shadows"])
        .stdout
        .contains("No items found"));

    let maria = Maria::start(&datadir, &run);
    maria.setup();
    let dest2 = work.path().join("backup2");
    let o = d.run(
        Command::new(bin("vssbackup"))
            .args(["backup", "--to"])
            .arg(&dest2)
            .args(["--writer", "MariadbWriter"]),
    );
    assert_eq!(
        o.code,
        0,
        "{o:#?}\nwriter log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(writer_block(&d).contains(&"State: [1] Stable".to_string()));
}

/// A long write to a non-transactional table keeps BACKUP STAGE BLOCK_DDL
/// from being granted: the set fails retryably naming that statement, the
/// writer ends its stages, and the database keeps serving.
#[test]
fn priv_sys_mariadb_writer_blocking_statement_is_named() {
    if !privileged("priv_sys_mariadb_writer_blocking_statement_is_named") {
        return;
    }
    let fs = LoopFs::new("btrfs", 512);
    let work = tempfile::tempdir().unwrap();
    let datadir = fs.path("maria/data");
    Maria::install(&datadir);
    let maria = Maria::start(&datadir, &work.path().join("run"));
    maria.setup();
    let bus = Bus::start();
    let d = Daemon::start(&bus, "");
    let (_writer, log) = start_writer(&d, work.path(), &maria.socket, 2);

    // The blocker: a 20 s INSERT … SELECT into a MyISAM table.
    let blocker = Proc(
        Command::new(prog("mariadb"))
            .arg("--no-defaults")
            .arg(format!("--socket={}", maria.socket.display()))
            .args(["-uroot", "-e", "INSERT INTO app.archive SELECT SLEEP(20)"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run mariadb"),
    );
    assert!(wait_for(Duration::from_secs(10), || {
        maria
        .sql_root("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'INSERT INTO app.archive%'")
        .map(|s| s.trim() == "1")
        .unwrap_or(false)
    }));
    std::thread::sleep(Duration::from_millis(500));

    let t = Instant::now();
    let dest = work.path().join("backup");
    let o = d.run(
        Command::new(bin("vssbackup"))
            .args(["backup", "--to"])
            .arg(&dest)
            .args(["--writer", "MariadbWriter"]),
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_ne!(o.code, 0, "{o:#?}\nwriter log:\n{text}");
    let all = format!("{}{}", o.stdout, o.stderr);
    assert!(
        all.contains("0x800423F3") || all.contains("VSS_E_WRITERERROR_RETRYABLE"),
        "{all}"
    );
    // The writer's own hint reaches the requestor.
    assert!(
        all.contains("Hint: A long statement kept the backup lock"),
        "{all}"
    );
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    let block = writer_block(&d);
    assert!(
        block.contains(&"Last error: Retryable error".to_string()),
        "{block:?}"
    );
    let msg = block
        .iter()
        .find(|l| l.starts_with("Last error message: "))
        .unwrap_or_else(|| panic!("no last error message: {block:?}"));
    assert!(msg.contains("BACKUP STAGE BLOCK_DDL"), "{msg}");
    assert!(
        msg.contains("INSERT INTO app.archive SELECT SLEEP(20)"),
        "the blocking statement is named: {msg}"
    );
    assert!(d
        .vssadmin(&["list", "shadows"])
        .stdout
        .contains("No items found"));

    // The stages were ended: DDL and commits go through at once.
    let mut app = maria.app();
    let t = Instant::now();
    app.query_drop("CREATE TABLE t2(v INT) ENGINE=InnoDB")
        .unwrap();
    app.query_drop("INSERT INTO acked VALUES (1, 0)").unwrap();
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    drop(blocker);
}
