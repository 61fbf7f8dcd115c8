//! vssbackup: the requestor's command line. Backups of writers' components
//! and paths from shadow copies, restores with the writers' cooperation,
//! and any other backup tool run against a consistent shadow.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use vss_client::Client;
use vss_requestor::backup::{BackupOptions, SUMMARY_FORMAT};
use vss_requestor::exec::ExecOptions;
use vss_requestor::progress::{Event, Progress};
use vss_requestor::restore::{RestoreOptions, DEFAULT_PENDING_FILE};
use vss_requestor::select::Selector;
use vss_requestor::shadows::DEFAULT_EXPOSE_BASE;
use vss_types::documents::BackupType;
use vss_types::{VssCode, VssError, VssResult};

/// Exit codes (documented in `vssbackup --help`).
mod exit {
    pub const SUCCESS: u8 = 0;
    /// The backup or restore was made, but some component (or path) failed.
    pub const PARTIAL: u8 = 1;
    /// Bad arguments.
    pub const BAD_ARGS: u8 = 2;
    /// vssd cannot be reached.
    pub const NO_SERVICE: u8 = 3;
    /// The job failed with a VSS error (nothing usable was made).
    pub const VSS_ERROR: u8 = 4;
}

#[derive(Parser)]
#[command(
    name = "vssbackup",
    version,
    about = "Application-consistent backups from shadow copies, restores with the writers, and exec of any backup tool against a shadow.",
    after_help = "Exit codes: 0 everything succeeded; 1 made, but a component or path failed; \
                  2 bad arguments; 3 vssd unreachable; 4 failed with a VSS error.\n\
                  With the command `exec`, the exit code is the command's."
)]
struct Cli {
    /// Progress and results as JSON lines on stdout (the output of a command
    /// run by `exec` then goes to stderr).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum TypeArg {
    Full,
    Copy,
}

impl From<TypeArg> for BackupType {
    fn from(t: TypeArg) -> Self {
        match t {
            TypeArg::Full => BackupType::Full,
            TypeArg::Copy => BackupType::Copy,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Back up writers' components and paths from shadow copies.
    Backup {
        /// A new or empty directory, or a new FILE.tar.zst.
        #[arg(long)]
        to: PathBuf,
        /// Every component of this writer (repeatable).
        #[arg(long = "writer", value_name = "NAME")]
        writers: Vec<String>,
        /// One component (set): [WRITER:]LOGICAL/PATH/NAME (repeatable).
        #[arg(long = "component", value_name = "COMPONENT")]
        components: Vec<String>,
        /// Also back up this path, crash-consistent (repeatable).
        #[arg(long = "include", value_name = "PATH")]
        includes: Vec<PathBuf>,
        /// `full` updates the writers' backup history; `copy` does not.
        #[arg(long = "type", value_enum, default_value = "full")]
        backup_type: TypeArg,
    },
    /// Restore a backup with the writers' cooperation.
    Restore {
        /// The backup (directory or .tar.zst).
        from: Option<PathBuf>,
        /// Only this component: [WRITER:]LOGICAL/PATH/NAME (repeatable).
        #[arg(long = "component", value_name = "COMPONENT")]
        components: Vec<String>,
        /// Restore under this directory instead of the original places.
        #[arg(long)]
        to: Option<PathBuf>,
        /// Command that stops and starts services for the stop/start
        /// restore methods, run as `CMD stop SERVICE` / `CMD start SERVICE`.
        #[arg(long, default_value = "systemctl", value_name = "CMD")]
        service_control: String,
        /// Put files staged by a restore-at-reboot in place (run at boot).
        #[arg(long, conflicts_with_all = ["from", "components", "to"])]
        complete_pending: bool,
        /// Where restore-at-reboot keeps its list of staged files.
        #[arg(long, hide = true, default_value = DEFAULT_PENDING_FILE)]
        pending_file: PathBuf,
    },
    /// Run a command against consistent shadow copies ({} = the shadow path
    /// of the first --for, {N} of the N-th).
    Exec {
        /// A path whose volume goes into the set (repeatable).
        #[arg(long = "for", value_name = "PATH")]
        for_paths: Vec<PathBuf>,
        /// Take part with this writer's components (repeatable; default:
        /// the writers with data on the --for volumes).
        #[arg(long = "writer", value_name = "NAME")]
        writers: Vec<String>,
        #[arg(long = "component", value_name = "COMPONENT")]
        components: Vec<String>,
        /// Keep the shadow copies afterwards (persistent).
        #[arg(long)]
        keep: bool,
        #[arg(long = "type", value_enum, default_value = "full")]
        backup_type: TypeArg,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Check a backup against its manifest and documents.
    Verify { backup: PathBuf },
    /// Show what a backup holds.
    List { backup: PathBuf },
    /// List the components the running writers offer.
    Components,
}

/// Renders progress: a status line on a terminal, JSON lines with --json,
/// the important lines otherwise.
struct Out {
    json: bool,
    tty: bool,
    line_open: bool,
}

impl Out {
    fn clear(&mut self) {
        if self.line_open {
            eprint!("\r\x1b[K");
            self.line_open = false;
        }
    }

    fn say(&mut self, s: &str) {
        self.clear();
        eprintln!("{s}");
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

impl Progress for Out {
    fn event(&mut self, e: Event) {
        if self.json {
            if let Ok(s) = serde_json::to_string(&e) {
                println!("{s}");
            }
            return;
        }
        match e {
            Event::Phase { phase } => self.say(&format!("== {phase}")),
            Event::Component { key, reason, .. } => {
                self.say(&format!("   component {key} ({reason})"))
            }
            Event::Shadow {
                volume,
                shadow_id,
                read_at,
            } => self.say(&format!(
                "   shadow {shadow_id} of {volume}, read at {read_at}"
            )),
            Event::Planned { entries, bytes } => {
                self.say(&format!("   {entries} entries, {:.1} MiB", mib(bytes)))
            }
            Event::File {
                path,
                done_bytes,
                total_bytes,
                ..
            } => {
                if self.tty && total_bytes > 0 {
                    let pct = (done_bytes * 100 / total_bytes.max(1)).min(100);
                    let bar = "#".repeat((pct / 5) as usize);
                    let name: String = path
                        .chars()
                        .rev()
                        .take(40)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    eprint!(
                        "\r\x1b[K[{bar:<20}] {pct:>3}% {:.1}/{:.1} MiB {name}",
                        mib(done_bytes),
                        mib(total_bytes)
                    );
                    let _ = std::io::stderr().flush();
                    self.line_open = true;
                }
            }
            Event::FileFailed { path, reason, .. } => {
                self.say(&format!("   FAILED {path}: {reason}"))
            }
            Event::Skipped { path, reason } => self.say(&format!("   skipped {path}: {reason}")),
            Event::ComponentResult {
                key,
                succeeded,
                message,
            } => self.say(&format!(
                "   {} {key}{}",
                if succeeded { "ok    " } else { "FAILED" },
                message.map(|m| format!(": {m}")).unwrap_or_default()
            )),
            Event::Writer {
                name,
                state,
                last_error,
            } => self.say(&format!(
                "   writer {name}: {state}, last error: {last_error}"
            )),
            Event::Warning { message } => self.say(&format!("Warning: {message}")),
            Event::Done { succeeded, summary } => self.say(&format!(
                "{} {summary}",
                if succeeded {
                    "Done:"
                } else {
                    "Done with failures:"
                }
            )),
        }
    }
}

fn print_error(e: &VssError, json: bool) {
    if json {
        let v = serde_json::json!({
            "event": "error",
            "hresult": format!("0x{:08X}", e.code.hresult()),
            "code": e.code.symbol(),
            "message": e.message,
            "hint": e.hint(),
        });
        println!("{v}");
    } else {
        eprintln!("Error: {e}");
        let hint = e.hint();
        if !hint.is_empty() {
            eprintln!("Hint: {hint}");
        }
    }
}

fn selectors(writers: &[String], components: &[String]) -> VssResult<Vec<Selector>> {
    let mut out: Vec<Selector> = writers
        .iter()
        .map(|w| Selector::Writer(w.clone()))
        .collect();
    for c in components {
        out.push(Selector::component(c)?);
    }
    Ok(out)
}

fn absolute(p: &std::path::Path) -> VssResult<PathBuf> {
    std::path::absolute(p).map_err(|e| VssError::invalid_arg(format!("{}: {e}", p.display())))
}

async fn run(cli: Cli, out: &mut Out) -> VssResult<u8> {
    match cli.command {
        Cmd::Backup {
            to,
            writers,
            components,
            includes,
            backup_type,
        } => {
            let opts = BackupOptions {
                dest: absolute(&to)?,
                selectors: selectors(&writers, &components)?,
                includes: includes
                    .iter()
                    .map(|p| absolute(p))
                    .collect::<VssResult<_>>()?,
                backup_type: backup_type.into(),
                expose_base: PathBuf::from(DEFAULT_EXPOSE_BASE),
            };
            let client = Client::connect().await?;
            let r = vss_requestor::backup::backup(&client, &opts, out).await?;
            debug_assert_eq!(r.summary.format, SUMMARY_FORMAT);
            Ok(if r.summary.succeeded {
                exit::SUCCESS
            } else {
                exit::PARTIAL
            })
        }
        Cmd::Restore {
            complete_pending: true,
            pending_file,
            ..
        } => {
            let n = vss_requestor::restore::complete_pending(&pending_file)?;
            out.say(&format!("{n} staged files put in place"));
            Ok(exit::SUCCESS)
        }
        Cmd::Restore {
            from,
            components,
            to,
            service_control,
            pending_file,
            ..
        } => {
            let Some(from) = from else {
                return Err(VssError::invalid_arg("no backup given")
                    .with_hint("vssbackup restore BACKUP [--component C] [--to DIR]"));
            };
            let opts = RestoreOptions {
                from,
                components,
                to: to.as_deref().map(absolute).transpose()?,
                service_control: service_control.split_whitespace().map(Into::into).collect(),
                pending_file,
            };
            let client = Client::connect().await?;
            let r = vss_requestor::restore::restore(&client, &opts, out).await?;
            for p in &r.problems {
                out.event(Event::Warning { message: p.clone() });
            }
            Ok(if r.succeeded {
                exit::SUCCESS
            } else {
                exit::PARTIAL
            })
        }
        Cmd::Exec {
            for_paths,
            writers,
            components,
            keep,
            backup_type,
            command,
        } => {
            let opts = ExecOptions {
                for_paths: for_paths
                    .iter()
                    .map(|p| absolute(p))
                    .collect::<VssResult<_>>()?,
                selectors: selectors(&writers, &components)?,
                keep,
                backup_type: backup_type.into(),
                command,
                expose_base: PathBuf::from(DEFAULT_EXPOSE_BASE),
                stdout_to_stderr: out.json,
            };
            let client = Client::connect().await?;
            let r = vss_requestor::exec::exec(&client, &opts, out).await?;
            Ok(u8::try_from(r.exit_code).unwrap_or(255))
        }
        Cmd::Verify { backup } => {
            let v = vss_requestor::inspect::verify(&backup)?;
            if out.json {
                println!("{}", serde_json::to_string(&v).unwrap_or_default());
            } else {
                for p in &v.problems {
                    println!("PROBLEM {}: {}", p.path, p.problem);
                }
                println!(
                    "{}: {} files ({:.1} MiB) and {} documents checked, {} problems",
                    if v.is_ok() { "OK" } else { "DAMAGED" },
                    v.files_checked,
                    mib(v.bytes_checked),
                    v.documents_checked,
                    v.problems.len()
                );
            }
            Ok(if v.is_ok() {
                exit::SUCCESS
            } else {
                exit::PARTIAL
            })
        }
        Cmd::List { backup } => {
            let l = vss_requestor::inspect::list(&backup)?;
            if out.json {
                println!("{}", serde_json::to_string(&l).unwrap_or_default());
            } else {
                print!("{}", vss_requestor::inspect::render_listing(&l));
            }
            Ok(exit::SUCCESS)
        }
        Cmd::Components => {
            let client = Client::connect().await?;
            let mut bc = client.backup_components(Default::default()).await?;
            let r = vss_requestor::backup::gather_writers(&mut bc, out).await;
            let _ = bc.end().await;
            let writers = r?;
            if out.json {
                let v: Vec<_> = writers
                    .iter()
                    .map(|w| {
                        serde_json::json!({
                            "writer": w.wmd.writer_name,
                            "components": w.wmd.components.iter().map(|c| serde_json::json!({
                                "path": c.full_path().replace('\\', "/"),
                                "type": c.component_type.word(),
                                "selectable": c.selectable,
                                "caption": c.caption,
                            })).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                for w in &writers {
                    println!("Writer '{}' ({})", w.wmd.writer_name, w.status.state);
                    for c in &w.wmd.components {
                        println!(
                            "  {}:{}{}",
                            w.wmd.writer_name,
                            c.full_path().replace('\\', "/"),
                            if c.selectable {
                                ""
                            } else {
                                "  (not selectable: always included)"
                            }
                        );
                    }
                }
            }
            Ok(exit::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::BAD_ARGS
            } else {
                exit::SUCCESS
            });
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VSS_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let json = cli.json;
    let mut out = Out {
        json,
        tty: std::io::stderr().is_terminal(),
        line_open: false,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            print_error(
                &VssError::new(VssCode::Unexpected, format!("cannot start: {e}")),
                json,
            );
            return ExitCode::from(exit::VSS_ERROR);
        }
    };
    match rt.block_on(run(cli, &mut out)) {
        Ok(code) => {
            out.clear();
            ExitCode::from(code)
        }
        Err(e) => {
            out.clear();
            print_error(&e, json);
            ExitCode::from(if vss_client::is_unreachable(&e) {
                exit::NO_SERVICE
            } else if e.code == VssCode::InvalidArg {
                exit::BAD_ARGS
            } else {
                exit::VSS_ERROR
            })
        }
    }
}
