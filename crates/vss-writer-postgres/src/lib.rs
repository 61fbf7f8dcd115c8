//! The PostgreSQL writer: application-consistent shadow copies of a
//! PostgreSQL cluster.
//!
//! `vss-writer-postgres --config /etc/vss/postgres-writer.toml` registers
//! one writer with vssd for one cluster (docs/WRITERS.md):
//!
//! * **Identify**: one selectable file-group component holding the data
//!   directory, the WAL directory when `pg_wal` links elsewhere and each
//!   tablespace (all recursive), without what PostgreSQL's base-backup
//!   rules leave out (`postmaster.pid`, the contents of `pg_replslot`,
//!   `pg_stat_tmp`, `pg_subtrans`…); restore method stop-restore-start
//!   with the configured service, and the writer takes part in every
//!   restore. Read from the data directory, so a restore works with the
//!   server stopped; a data directory that cannot be read is
//!   `VSS_E_WRITERERROR_RETRYABLE`;
//! * **PrepareForSnapshot**: `pg_backup_start(label, fast => true)` on a
//!   session of its own, kept open (a server that cannot be reached, or a
//!   start that fails or times out, is `VSS_E_WRITERERROR_RETRYABLE`
//!   naming the socket, or the oldest active query);
//! * **Thaw**: `pg_backup_stop(wait_for_archive => false)` on the same
//!   session: the shadow copy was cut between start and stop;
//! * **PostSnapshot**: the backup's record (layout, LSNs, `backup_label`,
//!   `tablespace_map`) goes into the component's backup metadata in the
//!   Backup Components Document;
//! * **Abort**, **BackupShutdown**: the session is closed, which aborts
//!   the backup; idempotent;
//! * **PostRestore**: prepares each restored data directory for crash
//!   recovery (removes `postmaster.pid`, recreates the directories whose
//!   contents are not backed up, re-links `pg_wal` and the tablespaces to
//!   their restored places, restores ownership).

#![forbid(unsafe_code)]

pub mod config;
pub mod metadata;
pub mod restore;
pub mod session;
mod writer;

pub use config::{ConfigError, PostgresWriterConfig, DEFAULT_CONFIG};
pub use writer::PostgresWriter;
