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

use clap::Parser;
use vss_types::VssError;
use vss_writer::{process, RunOptions};
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

fn main() -> ExitCode {
    let args = Args::parse();
    process::init_logging();
    process::main_with("vss-writer-mariadb", run(args))
}

async fn run(args: Args) -> Result<(), VssError> {
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

    let writer = Arc::new(MariadbWriter::new(cfg));
    tracing::info!(
        writer = %writer.config().name,
        writer_id = %writer.config().writer_id(),
        socket = %writer.config().socket.display(),
        config = %args.config.display(),
        "starting"
    );
    process::serve(writer, RunOptions::default()).await
}
