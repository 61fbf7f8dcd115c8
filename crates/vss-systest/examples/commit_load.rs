//! A commit-latency load for `bench/commit_latency.sh`: a few connections
//! to one database (SQLite, PostgreSQL or MariaDB), each committing small
//! single-row transactions (autocommit `INSERT`s) back to back, recording
//! for every commit the Unix time it was sent and how long it took.
//!
//! ```text
//! commit_load setup sqlite DB_PATH
//! commit_load run KIND TARGET --conns N --out FILE --stop-file FILE [--ready-file FILE]
//!             [--user U] [--password P]
//! ```
//!
//! KIND is `sqlite` (TARGET: the database file; WAL mode, `synchronous =
//! FULL`, busy timeout 60 s), `postgres` (TARGET: a libpq-style connection
//! string, e.g. `host=/run/x port=5432 user=postgres dbname=postgres`) or
//! `mariadb` (TARGET: the server's Unix socket; `--user`/`--password`, the
//! database `app`). The table `bench(id, conn, v)` must exist (`setup`
//! creates it for SQLite; the script creates it for the servers).
//!
//! `setup` prints the SQLite library's version.
//!
//! The load runs until the stop file appears, then writes one CSV line per
//! commit to the output file — `start_unix_us,latency_us,conn,ok` — and
//! exits. `--ready-file` is created once every connection has committed
//! once. A commit that fails is recorded with `ok` 0 and counted on
//! standard error; the load goes on.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mysql::prelude::Queryable;

/// One commit as the client saw it.
struct Commit {
    start_unix_us: u64,
    latency_us: u64,
    ok: bool,
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// An open connection that can commit one row.
enum Conn {
    Sqlite(rusqlite::Connection),
    Postgres(postgres::Client),
    Mariadb(mysql::Conn),
}

impl Conn {
    fn open(kind: &str, target: &str, user: &str, password: &str) -> Result<Conn, String> {
        match kind {
            "sqlite" => {
                let c = rusqlite::Connection::open(target).map_err(|e| e.to_string())?;
                c.busy_timeout(Duration::from_secs(60))
                    .map_err(|e| e.to_string())?;
                c.execute_batch("PRAGMA synchronous = FULL;")
                    .map_err(|e| e.to_string())?;
                Ok(Conn::Sqlite(c))
            }
            "postgres" => postgres::Client::connect(target, postgres::NoTls)
                .map(Conn::Postgres)
                .map_err(|e| e.to_string()),
            "mariadb" => {
                let opts = mysql::OptsBuilder::new()
                    .socket(Some(target))
                    .user(Some(user))
                    .pass(Some(password))
                    .db_name(Some("app"));
                mysql::Conn::new(opts)
                    .map(Conn::Mariadb)
                    .map_err(|e| e.to_string())
            }
            other => Err(format!(
                "unknown kind '{other}' (sqlite, postgres or mariadb)"
            )),
        }
    }

    /// One autocommit single-row INSERT.
    fn commit(&mut self, conn: i64, v: i64) -> Result<(), String> {
        match self {
            Conn::Sqlite(c) => c
                .execute("INSERT INTO bench(conn, v) VALUES (?1, ?2)", (conn, v))
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Conn::Postgres(c) => c
                .execute("INSERT INTO bench(conn, v) VALUES ($1, $2)", &[&conn, &v])
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Conn::Mariadb(c) => c
                .exec_drop("INSERT INTO bench(conn, v) VALUES (?, ?)", (conn, v))
                .map_err(|e| e.to_string()),
        }
    }
}

fn setup_sqlite(path: &str) -> Result<(), String> {
    if let Some(dir) = Path::new(path).parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    let c = rusqlite::Connection::open(path).map_err(|e| e.to_string())?;
    let mode: String = c
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if mode != "wal" {
        return Err(format!("journal_mode is {mode}, not wal"));
    }
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS bench(id INTEGER PRIMARY KEY, conn INTEGER NOT NULL, v INTEGER NOT NULL);",
    )
    .map_err(|e| e.to_string())?;
    println!("{}", rusqlite::version());
    Ok(())
}

struct RunArgs {
    kind: String,
    target: String,
    conns: usize,
    out: PathBuf,
    stop_file: PathBuf,
    ready_file: Option<PathBuf>,
    user: String,
    password: String,
}

fn parse_run(args: &[String]) -> Result<RunArgs, String> {
    let [kind, target, rest @ ..] = args else {
        return Err("run needs KIND and TARGET".into());
    };
    let mut r = RunArgs {
        kind: kind.clone(),
        target: target.clone(),
        conns: 1,
        out: PathBuf::new(),
        stop_file: PathBuf::new(),
        ready_file: None,
        user: String::new(),
        password: String::new(),
    };
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?
            .clone();
        match flag.as_str() {
            "--conns" => {
                r.conns = value
                    .parse()
                    .map_err(|_| format!("--conns: not a number: {value}"))?
            }
            "--out" => r.out = value.into(),
            "--stop-file" => r.stop_file = value.into(),
            "--ready-file" => r.ready_file = Some(value.into()),
            "--user" => r.user = value,
            "--password" => r.password = value,
            other => return Err(format!("unknown option {other}")),
        }
    }
    if r.out.as_os_str().is_empty() || r.stop_file.as_os_str().is_empty() || r.conns == 0 {
        return Err("--out, --stop-file and --conns (≥ 1) are required".into());
    }
    Ok(r)
}

fn run(a: RunArgs) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let mut conns = Vec::new();
    for i in 0..a.conns {
        let c = Conn::open(&a.kind, &a.target, &a.user, &a.password)
            .map_err(|e| format!("connection {i} to {}: {e}", a.target))?;
        conns.push(c);
    }
    let mut threads = Vec::new();
    for (i, mut c) in conns.into_iter().enumerate() {
        let (stop, started, errors) = (stop.clone(), started.clone(), errors.clone());
        threads.push(std::thread::spawn(move || {
            let mut done: Vec<Commit> = Vec::with_capacity(1 << 16);
            let mut v = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let start_unix_us = unix_us();
                let t = Instant::now();
                let r = c.commit(i as i64, v);
                let latency_us = t.elapsed().as_micros() as u64;
                if let Err(e) = &r {
                    if errors.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("commit_load: connection {i}: commit failed: {e}");
                    }
                }
                if v == 0 {
                    started.fetch_add(1, Ordering::Relaxed);
                }
                done.push(Commit {
                    start_unix_us,
                    latency_us,
                    ok: r.is_ok(),
                });
                v += 1;
            }
            done
        }));
    }
    let mut ready_written = false;
    while !a.stop_file.exists() {
        if !ready_written && started.load(Ordering::Relaxed) == a.conns {
            if let Some(f) = &a.ready_file {
                std::fs::write(f, "ready\n").map_err(|e| format!("{}: {e}", f.display()))?;
            }
            ready_written = true;
        }
        if threads.iter().all(|t| t.is_finished()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&a.out).map_err(|e| format!("{}: {e}", a.out.display()))?,
    );
    let mut total = 0usize;
    for (i, t) in threads.into_iter().enumerate() {
        let done = t
            .join()
            .map_err(|_| format!("connection {i}: thread panicked"))?;
        total += done.len();
        for c in done {
            writeln!(
                out,
                "{},{},{},{}",
                c.start_unix_us, c.latency_us, i, c.ok as u8
            )
            .map_err(|e| e.to_string())?;
        }
    }
    out.flush().map_err(|e| e.to_string())?;
    let errors = errors.load(Ordering::Relaxed);
    eprintln!(
        "commit_load: {} commits on {} connection(s), {errors} failed",
        total, a.conns
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("setup") if args.len() == 3 && args[1] == "sqlite" => setup_sqlite(&args[2]),
        Some("run") => parse_run(&args[1..]).and_then(run),
        _ => Err(
            "usage: commit_load setup sqlite DB | commit_load run KIND TARGET --conns N --out FILE --stop-file FILE [--ready-file FILE] [--user U] [--password P]"
                .into(),
        ),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("commit_load: {e}");
            ExitCode::FAILURE
        }
    }
}
