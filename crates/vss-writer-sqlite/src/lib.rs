//! The SQLite writer: application-consistent shadow copies of SQLite
//! databases, in the part the SQL Server writer plays on Windows.
//!
//! `vss-writer-sqlite --config /etc/vss/sqlite-writer.toml` registers one
//! writer with vssd (through the `vss-writer` SDK) for the databases listed
//! in its configuration (docs/WRITERS.md). For each database it
//!
//! * **Identify**: answers one selectable database component whose files
//!   are the database (data) and its `-wal` and `-journal` files (logs),
//!   with `-shm` excluded; restore method "restore if can replace", and the
//!   writer takes part in every restore. A database that does not exist or
//!   cannot be opened fails Identify with `VSS_E_WRITERERROR_RETRYABLE`
//!   naming the file;
//! * **PrepareForSnapshot**: checkpoints WAL databases on the set's volumes
//!   (a passive checkpoint, then `PRAGMA wal_checkpoint(TRUNCATE)` waiting
//!   at most 250 ms), so the shadow's database file is as complete as the
//!   load allows;
//! * **Freeze**: takes the database's write lock (`BEGIN IMMEDIATE` on a
//!   connection of its own, waiting at most `lock-timeout-ms`) and holds
//!   it until **Thaw**, **Abort** or BackupShutdown (`ROLLBACK`). With the
//!   lock held no transaction can commit, so the database and its WAL or
//!   journal on the shadow hold exactly the transactions committed before
//!   the lock was granted. A lock not granted in time fails Freeze with
//!   `VSS_E_WRITERERROR_RETRYABLE`, naming the database and the process
//!   holding the lock when `/proc/locks` tells;
//! * **PreRestore**: refuses while another process has a database selected
//!   for restore open;
//! * **PostRestore**: runs `PRAGMA integrity_check` on each restored
//!   database (at its path or its alternate location) and fails, naming the
//!   database and its first problems, when it is not `ok`.
//!
//! The lock's grant and release are logged with their Unix time in
//! microseconds (`granted_unix_us=…`, `released_unix_us=…`), one line per
//! database, so the frozen window can be checked against the
//! application's own commits.
//!
//! ```no_run
//! # async fn f() -> Result<(), vss_types::VssError> {
//! use std::sync::Arc;
//! let path = std::path::Path::new("/etc/vss/sqlite-writer.toml");
//! let cfg = vss_writer_sqlite::config::load(path).map_err(vss_types::VssError::from)?;
//! let writer = Arc::new(vss_writer_sqlite::SqliteWriter::new(cfg));
//! // Serves until SIGINT/SIGTERM; releases the locks if vssd goes away.
//! vss_writer::process::serve(writer, vss_writer::RunOptions::default()).await
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod config;
pub mod lock;
pub mod metadata;
pub mod procinfo;
pub mod restore;
mod writer;

pub use config::{ConfigError, DatabaseConfig, SqliteWriterConfig, DEFAULT_CONFIG};
pub use writer::{RestoreOutcome, SqliteWriter};
