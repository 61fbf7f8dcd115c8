//! A configurable test writer: it does nothing but record the events it gets.
//!
//! ```text
//! noop_writer --name NAME [--freeze-sleep-ms N] [--fail-at EVENT[:KIND]]...
//!             [--log FILE] [--object-path PATH] [--bus-address ADDRESS]
//! ```
//!
//! * Each event received is appended to the `--log` file as its D-Bus
//!   method name (`Identify`, `PrepareForBackup`, `Freeze`, …), one per line
//!   and flushed at once, so tests can check the order.
//! * `--freeze-sleep-ms N` makes Freeze take N ms (an Abort still gets
//!   through meanwhile).
//! * `--fail-at EVENT:KIND` vetoes EVENT (a method name, any case); KIND is
//!   `retryable` (default), `nonretryable`, `inconsistentsnapshot`,
//!   `outofresources` or `timeout`. May be given several times.
//! * The writer id is derived from the name, so it is stable across runs.
//!
//! Connects to the system bus (`DBUS_SYSTEM_BUS_ADDRESS` is honoured) unless
//! `--bus-address` is given, and runs until SIGINT or SIGTERM.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use vss_writer::{EventContext, Guid, RunOptions, Veto, VetoKind, Writer, WriterResult};

/// Namespace for writer ids derived from names (fixed, arbitrary).
const NOOP_WRITER_NAMESPACE: Guid = Guid::from_u128(0x6d1f_43a8_0c1e_4c4b_9b7e_5a3f_2c10_e7d2);

struct NoopWriter {
    name: String,
    writer_id: Guid,
    instance_id: Guid,
    freeze_sleep: Duration,
    fail_at: HashMap<String, VetoKind>,
    log: Option<Mutex<File>>,
}

impl NoopWriter {
    /// Logs the event, then vetoes it if asked to.
    fn event(&self, event: &str) -> WriterResult<()> {
        if let Some(log) = &self.log {
            let mut f = log.lock().unwrap_or_else(|p| p.into_inner());
            // A failed log write must not fail the event; the test will
            // notice the missing line.
            let _ = writeln!(f, "{event}").and_then(|_| f.flush());
        }
        match self.fail_at.get(&event.to_ascii_lowercase()) {
            Some(kind) => Err(Veto::new(
                *kind,
                format!("{} was told to fail at {event}", self.name),
            )),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl Writer for NoopWriter {
    fn name(&self) -> &str {
        &self.name
    }

    fn writer_id(&self) -> Guid {
        self.writer_id
    }

    async fn on_identify(&self) -> WriterResult<String> {
        self.event("Identify")?;
        Ok(format!(
            r#"<WRITER_METADATA xmlns="x-schema:#VssWriterMetadataInfo" version="1.0"><IDENTIFICATION writerId="{}" instanceId="{}" friendlyName="{}" usage="USER_DATA" dataSource="OTHER"/><RESTORE_METHOD method="RESTORE_IF_CAN_REPLACE" writerRestore="NEVER" rebootRequired="no"/><BACKUP_LOCATIONS/></WRITER_METADATA>"#,
            self.writer_id,
            self.instance_id,
            xml_escape(&self.name)
        ))
    }

    async fn on_prepare_backup(&self, _ctx: &EventContext, bcd: String) -> WriterResult<String> {
        self.event("PrepareForBackup")?;
        Ok(bcd)
    }

    async fn on_prepare_snapshot(
        &self,
        _ctx: &EventContext,
        _volumes: Vec<String>,
    ) -> WriterResult<()> {
        self.event("PrepareForSnapshot")
    }

    async fn on_freeze(&self, _ctx: &EventContext) -> WriterResult<()> {
        self.event("Freeze")?;
        if !self.freeze_sleep.is_zero() {
            tokio::time::sleep(self.freeze_sleep).await;
        }
        Ok(())
    }

    async fn on_thaw(&self, _ctx: &EventContext) -> WriterResult<()> {
        self.event("Thaw")
    }

    async fn on_post_snapshot(&self, _ctx: &EventContext, bcd: String) -> WriterResult<String> {
        self.event("PostSnapshot")?;
        Ok(bcd)
    }

    async fn on_abort(&self, _ctx: &EventContext) -> WriterResult<()> {
        self.event("Abort")
    }

    async fn on_backup_complete(&self, _ctx: &EventContext, bcd: String) -> WriterResult<String> {
        self.event("BackupComplete")?;
        Ok(bcd)
    }

    async fn on_backup_shutdown(&self, _ctx: &EventContext) -> WriterResult<()> {
        self.event("BackupShutdown")
    }

    async fn on_pre_restore(&self, bcd: String) -> WriterResult<String> {
        self.event("PreRestore")?;
        Ok(bcd)
    }

    async fn on_post_restore(&self, bcd: String) -> WriterResult<String> {
        self.event("PostRestore")?;
        Ok(bcd)
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const USAGE: &str = "usage: noop_writer --name NAME [--freeze-sleep-ms N] \
[--fail-at EVENT[:retryable|nonretryable|inconsistentsnapshot|outofresources|timeout]]... \
[--log FILE] [--object-path PATH] [--bus-address ADDRESS]";

const EVENTS: &[&str] = &[
    "Identify",
    "PrepareForBackup",
    "PrepareForSnapshot",
    "Freeze",
    "Thaw",
    "PostSnapshot",
    "Abort",
    "BackupComplete",
    "BackupShutdown",
    "PreRestore",
    "PostRestore",
];

fn parse_kind(kind: &str) -> Result<VetoKind, String> {
    Ok(match kind.to_ascii_lowercase().as_str() {
        "retryable" => VetoKind::Retryable,
        "nonretryable" => VetoKind::NonRetryable,
        "inconsistentsnapshot" => VetoKind::InconsistentSnapshot,
        "outofresources" => VetoKind::OutOfResources,
        "timeout" => VetoKind::Timeout,
        other => return Err(format!("unknown failure kind '{other}'")),
    })
}

fn parse_args() -> Result<(NoopWriter, RunOptions), String> {
    let mut name = None;
    let mut freeze_sleep = Duration::ZERO;
    let mut fail_at = HashMap::new();
    let mut log_path = None;
    let mut opts = RunOptions::default();

    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().ok_or_else(|| format!("{flag} needs a value"));
        match arg.as_str() {
            "--name" => name = Some(value("--name")?),
            "--freeze-sleep-ms" => {
                let v = value("--freeze-sleep-ms")?;
                let ms: u64 = v
                    .parse()
                    .map_err(|_| format!("--freeze-sleep-ms: '{v}' is not a number"))?;
                freeze_sleep = Duration::from_millis(ms);
            }
            "--fail-at" => {
                let v = value("--fail-at")?;
                let (event, kind) = v.split_once(':').unwrap_or((v.as_str(), "retryable"));
                if !EVENTS.iter().any(|e| e.eq_ignore_ascii_case(event)) {
                    return Err(format!(
                        "--fail-at: unknown event '{event}' (one of {})",
                        EVENTS.join(", ")
                    ));
                }
                fail_at.insert(event.to_ascii_lowercase(), parse_kind(kind)?);
            }
            "--log" => log_path = Some(value("--log")?),
            "--object-path" => opts.object_path = value("--object-path")?,
            "--bus-address" => opts.bus_address = Some(value("--bus-address")?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument '{other}'")),
        }
    }

    let name = name.ok_or("--name is required")?;
    let log = match log_path {
        Some(p) => Some(Mutex::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
                .map_err(|e| format!("cannot open log file {p}: {e}"))?,
        )),
        None => None,
    };
    let writer = NoopWriter {
        writer_id: Guid::derived(NOOP_WRITER_NAMESPACE, name.as_bytes()),
        instance_id: Guid::new_random(),
        name,
        freeze_sleep,
        fail_at,
        log,
    };
    Ok((writer, opts))
}

#[tokio::main]
async fn main() {
    let (writer, opts) = match parse_args() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("noop_writer: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    eprintln!(
        "noop_writer: serving '{}' (writer id {}) at {}",
        writer.name, writer.writer_id, opts.object_path
    );
    if let Err(e) = vss_writer::run(Arc::new(writer), opts).await {
        eprintln!("Error: {e}\nHint: {}", e.hint());
        std::process::exit(1);
    }
}
