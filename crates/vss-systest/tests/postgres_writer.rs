//! The PostgreSQL writer end to end: the real `vss-writer-postgres`
//! registered with vssd on a private bus, a cluster initdb'd on a
//! loop-mounted btrfs volume under pgbench and a numbered-row load,
//! `vssbackup backup` and a restore to a fresh location that a second
//! server starts from. All privileged (`priv_`); they need PostgreSQL 15's
//! binaries (Debian package postgresql-15) and its `postgres` user.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vss_testkit::system::{bin, wait_for, Bus, Daemon};
use vss_testkit::{privileged, LoopFs};

const WRITER: &str = "PostgresWriter";

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// PostgreSQL's binaries (15 preferred).
fn pg_bin(name: &str) -> PathBuf {
    for v in ["15", "16", "17", "14"] {
        let p = PathBuf::from(format!("/usr/lib/postgresql/{v}/bin/{name}"));
        if p.exists() {
            return p;
        }
    }
    panic!("{name} not found under /usr/lib/postgresql/*/bin: install postgresql-15 (scripts/install-deps.sh)")
}

/// Runs a command as the `postgres` user; panics with its output if it
/// fails.
fn as_postgres(args: &[&str]) -> String {
    let o = Command::new("runuser")
        .current_dir("/")
        .args(["-u", "postgres", "--"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run runuser");
    assert!(
        o.status.success(),
        "{args:?} failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn chown_postgres(p: &Path) {
    let st = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success(), "chown {}", p.display());
}

fn mkdir_postgres(p: &Path) {
    std::fs::create_dir_all(p).unwrap();
    chown_postgres(p);
}

/// A running server; stopped (immediately) when dropped.
struct Server {
    data: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    log: PathBuf,
}

impl Server {
    fn start(data: &Path, socket_dir: &Path, port: u16) -> Result<Server, String> {
        let log = data.with_extension("log");
        let _ = std::fs::remove_file(&log);
        mkdir_postgres(log.parent().unwrap());
        let opts = format!(
            "-c listen_addresses='' -c unix_socket_directories={} -p {port} \
             -c max_wal_size=96MB -c min_wal_size=32MB -c checkpoint_timeout=30s",
            socket_dir.display()
        );
        let o = Command::new("runuser")
            .current_dir("/")
            .args(["-u", "postgres", "--"])
            .arg(pg_bin("pg_ctl"))
            .arg("-D")
            .arg(data)
            .arg("-l")
            .arg(&log)
            .args(["-o", &opts, "-w", "-t", "30", "start"])
            .stdin(Stdio::null())
            .output()
            .expect("pg_ctl");
        let server = Server {
            data: data.to_owned(),
            socket_dir: socket_dir.to_owned(),
            port,
            log: log.clone(),
        };
        if !o.status.success() {
            return Err(format!(
                "pg_ctl start failed: {}\nserver log:\n{}",
                String::from_utf8_lossy(&o.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            ));
        }
        Ok(server)
    }

    fn connect(&self) -> postgres::Client {
        postgres::Config::new()
            .host_path(&self.socket_dir)
            .port(self.port)
            .user("postgres")
            .dbname("postgres")
            .connect(postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.socket_dir.display()))
    }

    fn args(&self) -> Vec<String> {
        vec![
            "-h".into(),
            self.socket_dir.display().to_string(),
            "-p".into(),
            self.port.to_string(),
            "-U".into(),
            "postgres".into(),
        ]
    }

    fn stop(&self) {
        let _ = Command::new("runuser")
            .current_dir("/")
            .args(["-u", "postgres", "--"])
            .arg(pg_bin("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "-t", "30", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .current_dir("/")
            .args(["-u", "postgres", "--"])
            .arg(pg_bin("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "-t", "30", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loop-mounted btrfs volume the `postgres` user can reach, with a
/// fresh cluster in `pg/data`.
fn volume_with_cluster() -> (LoopFs, PathBuf, PathBuf) {
    let fs = LoopFs::new("btrfs", 1024);
    // The mount point's parent is a private temporary directory.
    for p in [fs.mount_point.parent().unwrap(), fs.mount_point.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let data = fs.path("pg/data");
    let sock = fs.path("sock");
    mkdir_postgres(&data);
    mkdir_postgres(&sock);
    as_postgres(&[
        pg_bin("initdb").to_str().unwrap(),
        "-D",
        data.to_str().unwrap(),
        "--auth-local=trust",
        "-U",
        "postgres",
        "-N",
    ]);
    (fs, data, sock)
}

/// A port number for a private socket directory.
fn port(offset: u16) -> u16 {
    40000 + (std::process::id() % 10000) as u16 + offset
}

fn start_writer(d: &Daemon, dir: &Path, data: &Path, sock: &Path, port: u16) -> (Proc, PathBuf) {
    let cfg = dir.join("postgres-writer.toml");
    std::fs::write(
        &cfg,
        format!(
            "name = \"{WRITER}\"\ndata-directory = \"{}\"\nsocket-directory = \"{}\"\nport = {port}\n",
            data.display(),
            sock.display()
        ),
    )
    .unwrap();
    let log = dir.join("writer.log");
    let child = Command::new(bin("vss-writer-postgres"))
        .arg("--config")
        .arg(&cfg)
        .env("DBUS_SYSTEM_BUS_ADDRESS", &d.address)
        .env("VSS_LOG", "info")
        .env_remove("JOURNAL_STREAM")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start vss-writer-postgres");
    let p = Proc(child);
    assert!(
        wait_for(Duration::from_secs(20), || d
            .vssadmin(&["list", "writers"])
            .stdout
            .contains(&format!("Writer name: '{WRITER}'"))),
        "the PostgreSQL writer did not register; its log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    (p, log)
}

/// The lines of `vssadmin list writers` describing the writer.
fn writer_block(d: &Daemon) -> Vec<String> {
    let o = d.vssadmin(&["list", "writers"]);
    o.stdout
        .split(&format!("Writer name: '{WRITER}'"))
        .nth(1)
        .unwrap_or_else(|| panic!("{WRITER} not listed: {}", o.stdout))
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
        .collect()
}

/// The `KEY=N` values of the writer's log lines containing `what`.
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

/// One acknowledged row: its number and when its INSERT was sent and
/// acknowledged.
#[derive(Clone, Copy, Debug)]
struct Ack {
    n: i64,
    sent_us: u64,
    acked_us: u64,
}

/// Commits numbered rows back to back until stopped.
fn load(mut c: postgres::Client, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Ack>> {
    std::thread::spawn(move || {
        let mut done = Vec::new();
        let mut n = 1i64;
        while !stop.load(Ordering::Relaxed) {
            let sent_us = unix_us();
            c.execute("INSERT INTO acks(n) VALUES ($1)", &[&n]).unwrap();
            done.push(Ack {
                n,
                sent_us,
                acked_us: unix_us(),
            });
            n += 1;
        }
        done
    })
}

/// Backup under pgbench and a numbered-row load, restore to a fresh
/// location, a second server starts there: recovered, amcheck clean,
/// every row acknowledged before pg_backup_start present, none sent
/// after pg_backup_stop.
#[test]
fn priv_sys_postgres_writer_backup_restore_under_load() {
    if !privileged("priv_sys_postgres_writer_backup_restore_under_load") {
        return;
    }
    let (fs, data, sock) = volume_with_cluster();
    let server = Server::start(&data, &sock, port(0)).unwrap_or_else(|e| panic!("{e}"));
    let mut c = server.connect();
    c.batch_execute("CREATE TABLE acks(n bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())")
        .unwrap();
    let mut pgbench_args = server.args();
    pgbench_args.extend([
        "-i".into(),
        "-q".into(),
        "-s".into(),
        "1".into(),
        "postgres".into(),
    ]);
    let o = Command::new(pg_bin("pgbench"))
        .args(&pgbench_args)
        .output()
        .unwrap();
    assert!(o.status.success(), "pgbench -i: {o:?}");
    let mut bench_args = server.args();
    bench_args.extend(["-c", "2", "-T", "25", "-n", "postgres"].map(String::from));
    let bench = Proc(
        Command::new(pg_bin("pgbench"))
            .args(&bench_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let bus = Bus::start();
    let d = Daemon::start(&bus, "");
    let work = tempfile::tempdir().unwrap();
    let (_writer, log) = start_writer(&d, work.path(), &data, &sock, port(0));
    let block = writer_block(&d);
    assert!(
        block.contains(&"State: [1] Stable".to_string()),
        "{block:?}"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let loader = load(server.connect(), stop.clone());
    std::thread::sleep(Duration::from_millis(700));
    let dest = work.path().join("backup");
    let o = d.run(
        Command::new(bin("vssbackup"))
            .args(["--json", "backup", "--to"])
            .arg(&dest)
            .args(["--writer", WRITER]),
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let acks = loader.join().unwrap();
    drop(bench);
    let wlog = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(o.code, 0, "{o:#?}\nwriter log:\n{wlog}");
    let started = log_times(&log, "backup started", "started_unix_us");
    let stopped = log_times(&log, "backup stopped", "stopped_unix_us");
    assert_eq!((started.len(), stopped.len()), (1, 1), "{wlog}");
    let (started, stopped) = (started[0], stopped[0]);
    assert!(started < stopped);
    let bcd = std::fs::read_to_string(dest.join("backup-components.xml")).unwrap();
    assert!(
        bcd.contains("START WAL LOCATION"),
        "the backup label is recorded: {bcd}"
    );
    server.stop();
    drop(server);

    // Restore to a fresh location (no service is stopped for --to).
    let alt = fs.path("alt");
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
    let rdata = alt.join(data.strip_prefix("/").unwrap());
    assert!(!rdata.join("postmaster.pid").exists());
    assert!(rdata.join("pg_notify").is_dir() && rdata.join("pg_replslot").is_dir());
    // The writer gave the files their owner back; make sure of the
    // directories above.
    chown_postgres(&alt);
    let sock2 = fs.path("sock2");
    mkdir_postgres(&sock2);
    let second = Server::start(&rdata, &sock2, port(1)).unwrap_or_else(|e| panic!("{e}"));
    let slog = second.log_text();
    assert!(
        slog.contains("database system is ready to accept connections"),
        "{slog}"
    );

    let mut amcheck_args = second.args();
    amcheck_args.extend(["--all", "--install-missing", "--heapallindexed"].map(String::from));
    let o = Command::new(pg_bin("pg_amcheck"))
        .args(&amcheck_args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "pg_amcheck: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );

    let mut c = second.connect();
    let rows: Vec<i64> = c
        .query("SELECT n FROM acks ORDER BY n", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let last = rows.last().copied().unwrap_or(0);
    assert_eq!(
        rows,
        (1..=last).collect::<Vec<_>>(),
        "the rows form a prefix"
    );
    let before: Vec<&Ack> = acks.iter().filter(|a| a.acked_us < started).collect();
    let after: Vec<&Ack> = acks.iter().filter(|a| a.sent_us > stopped).collect();
    assert!(!before.is_empty(), "the load committed before the backup");
    assert!(!after.is_empty(), "the load went on after the backup");
    for a in before {
        assert!(
            a.n <= last,
            "{a:?} acknowledged before pg_backup_start ({started}) is missing (last {last})"
        );
    }
    for a in after {
        assert!(
            a.n > last,
            "{a:?} sent after pg_backup_stop ({stopped}) is in the backup"
        );
    }
    // pgbench's transactions are whole: each moved abalance and wrote one
    // history row.
    let r = c
        .query_one(
            "SELECT (SELECT coalesce(sum(abalance), 0) FROM pgbench_accounts)::bigint, \
                    (SELECT coalesce(sum(delta), 0) FROM pgbench_history)::bigint",
            &[],
        )
        .unwrap();
    let (balance, history): (i64, i64) = (r.get(0), r.get(1));
    assert_eq!(balance, history, "pgbench's accounts match its history");
    drop(c);
    drop(second);
}

/// A server that is down at backup time: the set fails with a retryable
/// error naming the socket, the writer shows it, no shadow is left.
#[test]
fn priv_sys_postgres_writer_server_down_fails_retryably() {
    if !privileged("priv_sys_postgres_writer_server_down_fails_retryably") {
        return;
    }
    let (fs, data, sock) = volume_with_cluster();
    let bus = Bus::start();
    let d = Daemon::start(&bus, "");
    let work = tempfile::tempdir().unwrap();
    let (_writer, log) = start_writer(&d, work.path(), &data, &sock, port(2));
    let socket = sock.join(format!(".s.PGSQL.{}", port(2)));
    let dest = work.path().join("backup");
    let o = d.run(
        Command::new(bin("vssbackup"))
            .args(["backup", "--to"])
            .arg(&dest)
            .args(["--writer", WRITER]),
    );
    let text = format!("{}\n{}", o.stdout, o.stderr);
    assert_ne!(o.code, 0, "{o:#?}");
    assert!(text.contains("VSS_E_WRITERERROR_RETRYABLE"), "{o:#?}");
    assert!(
        text.contains(&socket.display().to_string()),
        "the socket is named: {o:#?}\nwriter log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let block = writer_block(&d);
    assert!(
        block
            .iter()
            .any(|l| l.starts_with("State: [") && l.contains("Failed")),
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
    assert!(d
        .vssadmin(&["list", "shadows"])
        .stdout
        .contains("No items found"));

    // Once the server runs, the next backup works.
    let server = Server::start(&data, &sock, port(2)).unwrap_or_else(|e| panic!("{e}"));
    let o = d.run(
        Command::new(bin("vssbackup"))
            .args(["backup", "--to"])
            .arg(work.path().join("backup2"))
            .args(["--writer", WRITER]),
    );
    assert_eq!(o.code, 0, "{o:#?}");
    drop(server);
    drop(fs);
}
