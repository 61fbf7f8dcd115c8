//! `vss-volumed`: serves one volume of the software provider.
//!
//! - `vss-volumed serve --config FILE`: open the engine, mount the live
//!   filesystem, answer vssd until retired or stopped.
//! - `vss-volumed stop --config FILE`: ask a running server to unmount and
//!   stop (refused while the filesystem is busy); for systemd's ExecStop.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use vss_volumed::protocol::Request;
use vss_volumed::{VolumeConfig, VolumeServer};

#[derive(Parser)]
#[command(
    name = "vss-volumed",
    version,
    about = "Serves one volume of the vss software provider"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    Stop {
        #[arg(long)]
        config: PathBuf,
    },
}

fn init_logging() {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("VSS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(journald) = tracing_journald::layer() {
            registry
                .with(journald.with_syslog_identifier("vss-volumed".into()))
                .init();
            return;
        }
    }
    registry
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Cmd::Serve { config } => {
            // The volume must outlive a terminal hangup or an accidental
            // SIGTERM: a mounted filesystem would lose its device. It
            // stops through `stop` or vssd's retire request.
            vss_sys::ignore_termination_signals();
            let server = VolumeServer::start(&config)?;
            server.serve()
        }
        Cmd::Stop { config } => {
            let c = VolumeConfig::load(&config)?;
            let socket = c.socket_path();
            vss_volumed::client::call(&socket, &Request::Stop, Duration::from_secs(60))
                .with_context(|| {
                    format!("cannot stop the server of {}", c.mount_point.display())
                })?;
            Ok(())
        }
    }
}
