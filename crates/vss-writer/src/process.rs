//! What every writer process does around [`WriterService`]: logging to
//! the journal or stderr, a runtime, printing a failure with its VSS code
//! and hint, and serving until SIGINT/SIGTERM while releasing whatever the
//! writer holds when vssd goes away (feature `process`).

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::signal::unix::{signal, SignalKind};
use vss_types::{Guid, VssCode, VssError};

use crate::{RegistrationState, RunOptions, SdkError, Writer, WriterService};

/// A writer that runs as a process of its own.
#[async_trait]
pub trait WriterProcess: Writer {
    /// vssd's instance id for this writer, once registered: requestors see
    /// that one, so the writer's metadata should carry it too.
    fn registered_as(&self, instance_id: Guid);

    /// Ends everything the writer holds for a backup (locks, backup
    /// stages): vssd went away, which sends no Thaw or Abort, or the
    /// process stops. `why` goes to the log.
    async fn release_for(&self, why: &'static str);
}

/// Logs to the journal's structured fields under systemd (stderr goes
/// there already), else to stderr. `VSS_LOG` filters (default `info`).
pub fn init_logging() {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("VSS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(j) = tracing_journald::layer() {
            tracing_subscriber::registry().with(filter).with(j).init();
            return;
        }
    }
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
}

/// Runs `run` on a multi-thread runtime: exit status 0 when it succeeds,
/// 1 when it fails (logged, and printed as `Error: …` and `Hint: …`).
pub fn main_with<F>(program: &str, run: F) -> ExitCode
where
    F: Future<Output = Result<(), VssError>>,
{
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{program}: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(v) => {
            tracing::error!("{v}");
            eprintln!("Error: {v}\nHint: {}", v.hint());
            ExitCode::from(1)
        }
    }
}

/// Registers `writer` with vssd and serves it until SIGINT or SIGTERM (Ok)
/// or until the bus connection is lost for good (Err); whatever the writer
/// holds is released when vssd goes away and before returning.
pub async fn serve<W: WriterProcess>(writer: Arc<W>, opts: RunOptions) -> Result<(), VssError> {
    let mut term = signal(SignalKind::terminate()).map_err(signal_error)?;
    let mut int = signal(SignalKind::interrupt()).map_err(signal_error)?;
    let service = WriterService::start(writer.clone(), opts)
        .await
        .map_err(VssError::from)?;
    let mut state = service.watch_state();
    let result = loop {
        tokio::select! {
            _ = term.recv() => break Ok(()),
            _ = int.recv() => break Ok(()),
            changed = state.changed() => {
                if changed.is_err() {
                    break Ok(());
                }
                let s = state.borrow_and_update().clone();
                match s {
                    RegistrationState::Registered { instance_id, .. } => {
                        if let Ok(id) = Guid::parse(&instance_id) {
                            writer.registered_as(id);
                        }
                    }
                    RegistrationState::WaitingForVssd | RegistrationState::Registering { .. } => {
                        writer.release_for("vssd went away").await;
                    }
                    RegistrationState::Disconnected => {
                        break Err(VssError::from(SdkError::Disconnected));
                    }
                    RegistrationState::Stopped => break Ok(()),
                }
            }
        }
    };
    writer.release_for("the writer stops").await;
    service.stop().await;
    result
}

fn signal_error(e: std::io::Error) -> VssError {
    VssError::new(
        VssCode::WriterInfrastructure,
        format!("cannot handle SIGINT/SIGTERM: {e}"),
    )
    .with_hint("Run the writer as a normal process.")
}
