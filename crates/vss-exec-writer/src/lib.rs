//! Exec-hook writers hosted by the service: the fsfreeze-hook /
//! pre-freeze-script model admins already use, with state, metadata and
//! errors. Each `/etc/vss/writers.d/*.toml` file declares one writer: its
//! identity, its components and files (answered to Identify as a Writer
//! Metadata Document) and a command per event. See docs/EXEC-WRITERS.md.
//!
//! ```no_run
//! # async fn f(coord: &vss_core::Coordinator) -> Result<(), vss_types::VssError> {
//! use std::sync::Arc;
//! let loaded = vss_exec_writer::load_dir(std::path::Path::new("/etc/vss/writers.d"))?;
//! for e in &loaded.errors {
//!     tracing::error!("{e}"); // the file is skipped, the others are used
//! }
//! for cfg in loaded.configs {
//!     let w = Arc::new(vss_exec_writer::ExecWriter::new(cfg));
//!     let inst = coord.register_writer(w.clone().to_new_writer())?;
//!     w.set_instance_id(inst.instance_id);
//! }
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod config;
mod hook;
mod writer;

pub use config::{
    load_dir, load_file, parse, ComponentConfig, ComponentKind, ConfigError, ExcludeConfig,
    ExecWriterConfig, FileSetConfig, HookConfig, HookEvent, HooksConfig, LoadedWriters,
    RestoreMethodConfig, Usage, DEFAULT_DIR, DEFAULT_HOOK_TIMEOUT_SECS, TIMEOUT_RANGE_SECS,
    WRITER_ID_NAMESPACE,
};
pub use hook::{EXIT_RETRYABLE, HOOK_PATH, OUTPUT_CAP};
pub use writer::ExecWriter;
