//! The writer SDK: write a VSS writer in Rust (the `CVssWriter` analogue).
//!
//! A writer is an application (a database, a mail server…) that brings its
//! data to a consistent state on disk while a shadow copy is taken. vssd
//! drives it through the events of a backup — Identify, PrepareForBackup,
//! PrepareForSnapshot, Freeze, Thaw, PostSnapshot, BackupComplete,
//! BackupShutdown, and Abort when something goes wrong — by calling the
//! `org.vss.Writer1` D-Bus interface the writer serves (docs/DBUS.md).
//!
//! This crate does the D-Bus part:
//!
//! * it serves `org.vss.Writer1` for your [`Writer`] on the system bus,
//! * registers it with vssd (`org.vss.WriterHost1.RegisterWriter`),
//! * waits for vssd if it is not running yet, and registers again by itself
//!   whenever vssd restarts,
//! * runs each event's handler on a thread of its own, so an Abort reaches the
//!   writer even while its Freeze handler is still busy,
//! * turns a handler's [`Veto`] into the D-Bus error vssd expects
//!   (`org.vss.Error.VSS_E_WRITERERROR_RETRYABLE` and so on).
//!
//! # Writing a writer
//!
//! Implement [`Writer`]: a name, a stable writer class id, the Writer
//! Metadata Document (WMD, XML, see docs/DOCUMENTS.md) from
//! [`on_identify`](Writer::on_identify), and the handlers for the events you
//! care about — typically [`on_freeze`](Writer::on_freeze),
//! [`on_thaw`](Writer::on_thaw) and [`on_abort`](Writer::on_abort). Every
//! handler you leave out succeeds. Refuse an event by returning a [`Veto`].
//! Then hand the writer to [`run`], which serves it until SIGINT or SIGTERM.
//!
//! ```no_run
//! use std::sync::Arc;
//! use async_trait::async_trait;
//! use vss_types::Guid;
//! use vss_writer::{EventContext, RunOptions, Veto, Writer, WriterResult};
//!
//! struct MyDb;
//!
//! #[async_trait]
//! impl Writer for MyDb {
//!     fn name(&self) -> &str {
//!         "mydb"
//!     }
//!
//!     fn writer_id(&self) -> Guid {
//!         // Hard-coded: the class id must not change between runs.
//!         Guid::parse("{0e3b1c4e-8a4f-4f36-9c38-1d0f6a4b7e21}").unwrap()
//!     }
//!
//!     async fn on_identify(&self) -> WriterResult<String> {
//!         Ok(r#"<WRITER_METADATA xmlns="x-schema:#VssWriterMetadataInfo" version="1.0">
//!   <IDENTIFICATION writerId="{0e3b1c4e-8a4f-4f36-9c38-1d0f6a4b7e21}"
//!     instanceId="{00000000-0000-0000-0000-000000000000}" friendlyName="mydb"
//!     usage="USER_DATA" dataSource="OTHER"/>
//!   <RESTORE_METHOD method="RESTORE_IF_CAN_REPLACE" writerRestore="NEVER" rebootRequired="no"/>
//!   <BACKUP_LOCATIONS/>
//! </WRITER_METADATA>"#
//!             .to_string())
//!     }
//!
//!     async fn on_freeze(&self, ctx: &EventContext) -> WriterResult<()> {
//!         // Flush and stop writing; keep it short.
//!         let flushed = true;
//!         if !flushed {
//!             return Err(Veto::retryable(format!("checkpoint for set {} failed", ctx.set_id)));
//!         }
//!         Ok(())
//!     }
//!
//!     async fn on_thaw(&self, _ctx: &EventContext) -> WriterResult<()> {
//!         // Resume writing.
//!         Ok(())
//!     }
//!
//!     async fn on_abort(&self, _ctx: &EventContext) -> WriterResult<()> {
//!         // Resume writing if frozen; may come while on_freeze still runs.
//!         Ok(())
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() {
//!     if let Err(e) = vss_writer::run(Arc::new(MyDb), RunOptions::default()).await {
//!         eprintln!("Error: {e}\nHint: {}", e.hint());
//!         std::process::exit(1);
//!     }
//! }
//! ```
//!
//! To handle signals yourself, or to run several writers in one process,
//! use [`WriterService::start`] and [`WriterService::stop`]. Writers sharing
//! one connection ([`RunOptions::connection`]) need distinct
//! [`RunOptions::object_path`]s; writers on connections of their own may
//! all use the default path.
//!
//! # A writer process
//!
//! With the feature `process`, [`process`] has what a writer that is a
//! program of its own needs around that: logging to the journal or stderr
//! (`init_logging`), exit status and `Error:`/`Hint:` output (`main_with`),
//! and `serve`, which also tells the writer vssd's instance id and has it
//! release whatever it holds when vssd goes away (vssd sends no Thaw or
//! Abort then). The built-in SQLite, PostgreSQL and MariaDB writers use it.
//!
//! # Concurrency
//!
//! Handlers take `&self` and may run at the same time (Abort during Freeze,
//! an Identify from a second requestor…). Keep state behind locks and do
//! not hold a lock while waiting for something another handler does.
//!
//! Each handler runs on a thread of its own (from tokio's blocking pool,
//! driving the handler's future with the runtime's handle), so a handler may
//! call blocking APIs (fsync, a database's synchronous checkpoint) without
//! holding up other events. This works on multi-thread and current-thread
//! runtimes alike. Dropping the runtime waits for handlers still running.
//!
//! The crate treats the WMD and BCD as opaque XML strings: build the WMD
//! yourself and return BCDs unchanged unless you add writer metadata.

#[cfg(feature = "config")]
pub mod config;
mod error;
#[cfg(feature = "process")]
pub mod process;
mod service;
mod veto;
mod writer;

pub use error::SdkError;
pub use service::{run, RegistrationState, RunOptions, WriterService};
pub use veto::{Veto, VetoKind, WriterResult};
pub use writer::{EventContext, Writer};

/// Re-exported so writers need not depend on it for their id.
pub use vss_types::Guid;
