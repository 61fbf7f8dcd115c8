//! vss-writer-mariadb: the MariaDB writer process.
//!
//! `vss-writer-mariadb [--config FILE] [--check]` reads its configuration
//! (default /etc/vss/mariadb-writer.toml, docs/WRITERS.md), registers with
//! vssd on the system bus (`DBUS_SYSTEM_BUS_ADDRESS` is honoured) and serves
//! until SIGINT or SIGTERM. Exit status: 0 after a signal or a successful
//! `--check`, 1 on any error (printed with its VSS code and a hint), 2 for
//! bad arguments.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use vss_types::{Guid, VssCode, VssError};
use vss_writer::{RegistrationState, RunOptions, WriterService};
use vss_writer_mariadb::{config, MariadbWriter};

#[derive(Parser)]
#[command(
    name = "vss-writer-mariadb",
    version,
    about = "The VSS writer for MariaDB"
)]
struct Args {
    /// Configuration file.
    #[arg(long, value_name = "FILE", default_value = config::DEFAULT_CONFIG)]
    config: PathBuf,
    /// Check the configuration, print what it declares, and exit.
    #[arg(long)]
    check: bool,
}

fn init_logging() {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("VSS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Under systemd stderr goes to the journal already; use its structured
    // fields there, plain stderr elsewhere (as vssd does).
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

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vss-writer-mariadb: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<VssError>() {
                Some(v) => {
                    tracing::error!("{v}");
                    eprintln!("Error: {v}\nHint: {}", v.hint());
                }
                None => {
                    tracing::error!("{e:#}");
                    eprintln!("Error: {e:#}");
                }
            }
            ExitCode::from(1)
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let cfg = config::load(&args.config).map_err(VssError::from)?;
    if args.check {
        println!(
            "{}: writer '{}' (id {}), component '{}', socket {}, user '{}', service '{}', lock wait {} s",
            args.config.display(),
            cfg.name,
            cfg.writer_id(),
            cfg.full_path(),
            cfg.socket.display(),
            cfg.user,
            cfg.service,
            cfg.lock_wait_timeout_secs
        );
        return Ok(());
    }

    let mut term = signal(SignalKind::terminate()).map_err(signal_error)?;
    let mut int = signal(SignalKind::interrupt()).map_err(signal_error)?;
    let writer = Arc::new(MariadbWriter::new(cfg));
    tracing::info!(
        writer = %writer.config().name,
        writer_id = %writer.config().writer_id(),
        socket = %writer.config().socket.display(),
        config = %args.config.display(),
        "starting"
    );
    let service = WriterService::start(writer.clone(), RunOptions::default())
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
                        // Requestors see vssd's instance id; the metadata
                        // carries the same one.
                        if let Ok(id) = Guid::parse(&instance_id) {
                            writer.set_instance_id(id);
                        }
                    }
                    RegistrationState::WaitingForVssd | RegistrationState::Registering { .. } => {
                        // A vssd that went away sends no Thaw or Abort:
                        // no backup stage may stay held for it.
                        writer.release_all("vssd went away").await;
                    }
                    RegistrationState::Disconnected => {
                        break Err(VssError::from(vss_writer::SdkError::Disconnected).into());
                    }
                    RegistrationState::Stopped => break Ok(()),
                }
            }
        }
    };
    writer.release_all("the writer stops").await;
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
