//! vss-writer-postgres: the PostgreSQL writer process.
//!
//! `vss-writer-postgres [--config FILE] [--check]` reads its configuration
//! (default /etc/vss/postgres-writer.toml, docs/WRITERS.md), registers with
//! vssd on the system bus (`DBUS_SYSTEM_BUS_ADDRESS` is honoured) and serves
//! until SIGINT or SIGTERM. Exit status: 0 after a signal or a successful
//! `--check`, 1 on any error (printed with its VSS code and a hint), 2 for
//! bad arguments.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use vss_types::{VssCode, VssError};
use vss_writer::{process, RunOptions};
use vss_writer_postgres::{config, PostgresWriter};

#[derive(Parser)]
#[command(
    name = "vss-writer-postgres",
    version,
    about = "The VSS writer for PostgreSQL clusters"
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
    process::main_with("vss-writer-postgres", run(args))
}

async fn run(args: Args) -> Result<(), VssError> {
    let cfg = config::load(&args.config).map_err(VssError::from)?;
    if args.check {
        println!(
            "{}: writer '{}' (id {}), component '{}' ({}):",
            args.config.display(),
            cfg.name,
            cfg.writer_id(),
            cfg.full_path(),
            cfg.caption()
        );
        let writer = PostgresWriter::new(cfg.clone());
        let layout = writer.layout().await.map_err(|v| {
            VssError::new(VssCode::WriterErrorRetryable, v.message().to_string())
                .with_hint(v.hint().unwrap_or_default().to_string())
        })?;
        println!("  data directory {}", layout.data_directory.display());
        if let Some(w) = &layout.wal_directory {
            println!("  WAL directory {}", w.display());
        }
        for (oid, loc) in &layout.tablespaces {
            println!("  tablespace {oid}: {}", loc.display());
        }
        let conn = vss_writer_postgres::session::ConnParams::from_config(&cfg);
        match tokio::task::spawn_blocking(move || vss_writer_postgres::session::ping(&conn)).await {
            Ok(Ok(())) => println!("  server reachable through {}", cfg.socket_path().display()),
            Ok(Err(e)) => println!("  {e} (a backup would fail until it is reachable)"),
            Err(e) => println!("  the server check failed: {e}"),
        }
        return Ok(());
    }

    let writer = Arc::new(PostgresWriter::new(cfg));
    tracing::info!(
        writer = %writer.config().name,
        writer_id = %writer.config().writer_id(),
        data_directory = %writer.config().data_directory.display(),
        socket = %writer.config().socket_path().display(),
        config = %args.config.display(),
        "starting"
    );
    process::serve(writer, RunOptions::default()).await
}
