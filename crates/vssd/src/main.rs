//! vssd: the shadow copy service.
//!
//! `vssd [--config FILE]` runs in the foreground on the D-Bus system bus
//! (`DBUS_SYSTEM_BUS_ADDRESS` is honoured), as a systemd `Type=notify`
//! service in production.

mod auth;
mod bus;
mod config;
mod guard;
mod software;

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use vss_catalog::Catalog;
use vss_core::{
    Coordinator, CoreConfig, EventId, NoSoftwareVolumes, SoftwareVolumes, VolumeResolver,
};
use vss_provider::Registry;
use vss_provider_cow::{CowManager, CowProvider};
use vss_provider_lvm::{LvmConfig, LvmProvider};
use vss_types::{Volume, VssCode, VssError, VssResult};
use zbus::fdo::{DBusProxy, RequestNameFlags, RequestNameReply};

#[derive(Parser)]
#[command(name = "vssd", version, about = "The shadow copy service")]
struct Args {
    /// Configuration file (default /etc/vss/vss.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Internal: run as the hold watchdog (started by vssd itself).
    #[arg(long, hide = true)]
    hold_watchdog: bool,
}

struct MountinfoResolver;

impl VolumeResolver for MountinfoResolver {
    fn volume_of(&self, path: &str) -> VssResult<Volume> {
        vss_sys::mounts::volume_of(std::path::Path::new(path)).map_err(|e| {
            VssError::new(
                VssCode::ObjectNotFound,
                format!("no mounted volume found for '{path}': {e}"),
            )
            .with_hint("Give a path on a mounted filesystem; `vssadmin list volumes` lists them.")
        })
    }

    fn list(&self) -> VssResult<Vec<Volume>> {
        vss_sys::mounts::list_volumes().map_err(|e| {
            VssError::new(
                VssCode::Unexpected,
                format!("cannot read the mount table: {e}"),
            )
        })
    }
}

fn init_logging() {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("VSS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Under systemd, stderr already goes to the journal; use the journal's
    // structured fields (EVENT_ID…) there, plain stderr elsewhere.
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

/// Takes the exclusive lock on `state_dir/vssd.lock`; the kernel drops it when
/// this process ends, however it ends.
fn lock_state_dir(state_dir: &std::path::Path) -> Result<std::fs::File> {
    let path = state_dir.join("vssd.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(VssError::new(
            VssCode::ObjectAlreadyExists,
            format!(
                "another vssd is running on the state directory {}",
                state_dir.display()
            ),
        )
        .with_hint("Stop the other vssd first (`systemctl stop vssd`).")
        .into()),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(anyhow::Error::new(e).context(format!("locking {}", path.display())))
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.hold_watchdog {
        return std::process::ExitCode::from(guard::watchdog_main() as u8);
    }
    init_logging();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vssd: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
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
            std::process::ExitCode::from(1)
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let cfg = config::Config::load(args.config.as_deref())?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&cfg.state_dir)
        .with_context(|| format!("creating state directory {}", cfg.state_dir.display()))?;
    // The state directory is the lock: a second vssd started by mistake must
    // stop here, before it thaws or undoes the running one's work.
    let _state_lock = lock_state_dir(&cfg.state_dir)?;
    let catalog = Arc::new(Catalog::open(&cfg.state_dir.join("catalog.db"))?);

    let mut providers = Registry::new();
    if cfg.providers.btrfs {
        providers.register(Arc::new(vss_provider_btrfs::BtrfsProvider::new()))?;
    }
    if cfg.providers.simulated {
        providers.register(Arc::new(vss_provider::sim::SimProvider::new(
            Duration::from_millis(cfg.providers.simulated_commit_delay_ms),
        )))?;
    }

    let software: Arc<dyn SoftwareVolumes> = if cfg.providers.software {
        let manager = Arc::new(
            CowManager::new(
                &cfg.state_dir,
                &cfg.volume_run_dir,
                software::volumed_binary(),
            )
            .with_shadow_limit(
                cfg.providers.software_max_shadow_copies,
                cfg.providers.software_delete_oldest_at_limit,
            ),
        );
        // Volume servers outlive vssd; after a reboot (or if one died) the
        // registered volumes get theirs again here, before recovery asks
        // them about their shadows.
        let m = manager.clone();
        tokio::task::spawn_blocking(move || m.ensure_running()).await?;
        providers.register(Arc::new(CowProvider::new(manager.clone())))?;
        Arc::new(software::CowVolumes { manager })
    } else {
        Arc::new(NoSoftwareVolumes)
    };

    let lvm = if cfg.providers.lvm {
        let p = Arc::new(LvmProvider::new(LvmConfig {
            settings: vss_provider_lvm::policy::Settings {
                extend_at_percent: f64::from(cfg.providers.lvm_extend_at),
                thin_pool_limit_percent: f64::from(cfg.providers.lvm_thin_pool_limit),
            },
            poll_interval: Duration::from_millis(cfg.providers.lvm_poll_ms),
        }));
        p.start_watcher();
        providers.register(p.clone())?;
        Some(p)
    } else {
        None
    };
    let software: Arc<dyn SoftwareVolumes> =
        Arc::new(software::StorageRouter { cow: software, lvm });

    let core = Coordinator::new(
        CoreConfig {
            writer_timeout: Duration::from_secs(cfg.writer_timeout_secs),
            writer_timeouts: cfg.writer_timeouts(),
            hold_limit: Duration::from_millis(cfg.hold_limit_ms),
            machine: hostname(),
            state_dir: cfg.state_dir.clone(),
        },
        providers,
        catalog,
        Arc::new(guard::SystemHold),
        Arc::new(MountinfoResolver),
        software,
    );

    let operators_gid = match &cfg.operators_group {
        Some(g) => Some(read_group_gid(g).ok_or_else(|| {
            VssError::new(
                VssCode::InvalidArg,
                format!("operators-group '{g}' does not exist"),
            )
            .with_hint("Create the group (groupadd) or fix operators-group in /etc/vss/vss.toml.")
        })?),
        None => None,
    };
    let policy = Arc::new(auth::Policy {
        operators_gid,
        operators_group: cfg.operators_group.clone(),
        allowed_writer_uids: cfg.allowed_writer_uids.clone(),
    });

    // Thaw and undo whatever a crashed vssd left behind before serving, so
    // a frozen filesystem is released as early as possible.
    core.recover().await?;
    let conn = zbus::Connection::system().await.map_err(|e| {
        VssError::new(
            VssCode::WriterInfrastructure,
            format!("cannot connect to the system bus: {e}"),
        )
        .with_hint("Start the D-Bus system bus (dbus.service), or set DBUS_SYSTEM_BUS_ADDRESS.")
    })?;
    let dbus = DBusProxy::new(&conn).await?;
    conn.object_server()
        .at(
            vss_dbus::SERVICE_PATH,
            bus::Requestor {
                core: core.clone(),
                policy: policy.clone(),
                dbus: dbus.clone(),
            },
        )
        .await?;
    conn.object_server()
        .at(
            vss_dbus::SERVICE_PATH,
            bus::Storage {
                core: core.clone(),
                policy: policy.clone(),
                dbus: dbus.clone(),
            },
        )
        .await?;
    conn.object_server()
        .at(
            vss_dbus::SERVICE_PATH,
            bus::WriterHost {
                core: core.clone(),
                policy: policy.clone(),
                dbus: dbus.clone(),
                conn: conn.clone(),
            },
        )
        .await?;
    tokio::spawn(bus::watch_disconnects(core.clone(), dbus.clone()));

    load_exec_writers(&core, &cfg.writers_dir);
    // The name is owned last: clients see the service only once every
    // interface answers (a call that arrives earlier would get no reply).
    let reply = dbus
        .request_name(
            vss_dbus::SERVICE_NAME.try_into()?,
            RequestNameFlags::DoNotQueue.into(),
        )
        .await
        .map_err(|e| {
            VssError::new(
                VssCode::AccessDenied,
                format!("cannot own {} on the system bus: {e}", vss_dbus::SERVICE_NAME),
            )
            .with_hint("Install dist/dbus/org.vss.Vssd.conf in /etc/dbus-1/system.d/ and run vssd as root.")
        })?;
    if reply != RequestNameReply::PrimaryOwner {
        return Err(VssError::new(
            VssCode::ObjectAlreadyExists,
            format!(
                "{} is already owned on this bus: another vssd is running",
                vss_dbus::SERVICE_NAME
            ),
        )
        .with_hint("Stop the other vssd first (`systemctl stop vssd`).")
        .into());
    }

    tracing::info!(event_id = EventId::ServiceStarted.id(), state_dir = %cfg.state_dir.display(), "vssd started");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    tracing::info!(event_id = EventId::ServiceStopping.id(), "vssd stopping");
    Ok(())
}

fn read_group_gid(name: &str) -> Option<u32> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then_some(())?;
        f.next()?;
        f.next()?.parse().ok()
    })
}

/// Hosts the exec-hook writers of writers.d. A bad file is reported and
/// skipped; the others load.
fn load_exec_writers(core: &Arc<Coordinator>, dir: &std::path::Path) {
    let loaded = match vss_exec_writer::config::load_dir(dir) {
        Ok(l) => l,
        Err(e) => {
            let e: VssError = e.into();
            tracing::error!(
                event_id = EventId::ConfigLoaded.id(),
                "exec-hook writers not loaded: {e}"
            );
            return;
        }
    };
    for e in loaded.errors {
        let e: VssError = e.into();
        tracing::error!(
            event_id = EventId::ConfigLoaded.id(),
            "exec-hook writer skipped: {e} ({})",
            e.hint()
        );
    }
    for cfg in loaded.configs {
        let own = cfg.timeout();
        let w = Arc::new(vss_exec_writer::ExecWriter::new(cfg));
        match core.register_writer_with_timeout(w.clone().to_new_writer(), own) {
            Ok(inst) => w.set_instance_id(inst.instance_id),
            Err(e) => tracing::error!("exec-hook writer '{}' not registered: {e}", w.name()),
        }
    }
}
