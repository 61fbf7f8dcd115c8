//! The MariaDB writer: application-consistent shadow copies of a MariaDB
//! instance, as the SQL Server writer does for SQL Server on Windows.
//!
//! `vss-writer-mariadb --config /etc/vss/mariadb-writer.toml` registers one
//! writer with vssd (through the `vss-writer` SDK) for one server, reached
//! over its Unix socket (docs/WRITERS.md):
//!
//! * **Identify**: reads the server's layout (`@@datadir`, the InnoDB redo
//!   and undo directories, tmpdir, socket, pid file) and answers one
//!   selectable file-group component with the data directory (recursive)
//!   and the redo/undo directories outside it, excluding what mariabackup
//!   leaves out (pid file, socket, `ibtmp*`, tmpdir inside the data
//!   directory). A server that cannot be reached fails Identify with
//!   `VSS_E_WRITERERROR_RETRYABLE` naming the socket;
//! * **PrepareForSnapshot**: on one connection held on a thread of its own
//!   for the whole sequence: `BACKUP STAGE START`, `FLUSH`, `BLOCK_DDL`;
//! * **Freeze**: `BACKUP STAGE BLOCK_COMMIT`: no transaction commits until
//!   **Thaw** (or Abort, BackupShutdown, `max-hold-secs`) runs `BACKUP
//!   STAGE END`. A stage not granted within `lock-wait-timeout-secs` fails
//!   the event with `VSS_E_WRITERERROR_RETRYABLE` naming the statement that
//!   blocked it;
//! * **PostRestore**: removes stale pid and socket files from the restored
//!   data directory; InnoDB crash recovery at the next start does the rest.
//!
//! BLOCK_COMMIT and END are logged with their Unix time in microseconds
//! (`blocked_unix_us=…`, `released_unix_us=…`).

#![forbid(unsafe_code)]

pub mod config;
pub mod layout;
pub mod metadata;
pub mod session;
mod writer;

pub use config::{ConfigError, MariadbWriterConfig, DEFAULT_CONFIG};
pub use layout::Layout;
pub use writer::{probe, remove_stale, restored_datadirs, MariadbWriter};
