//! Serving a [`Writer`] on the bus and keeping it registered with vssd.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use zbus::fdo::{DBusProxy, NameOwnerChangedStream};
use zbus::names::{BusName, WellKnownName};
use zbus::proxy::CacheProperties;
use zbus::zvariant::{ObjectPath, OwnedObjectPath};
use zbus::Connection;

use vss_dbus::proxies::WriterHostProxy;
use vss_dbus::{vss_error_from_zbus, DbusVssError, DEFAULT_WRITER_PATH, SERVICE_NAME};
use vss_types::{VssCode, VssError};

use crate::error::{bus_label, SdkError};
use crate::veto::WriterResult;
use crate::writer::{EventContext, Writer};

/// How to serve a writer.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Where `org.vss.Writer1` is served. Writers sharing a connection need
    /// distinct paths. Default: [`DEFAULT_WRITER_PATH`].
    pub object_path: String,
    /// Connect to this bus address instead of the system bus. `None`: the
    /// system bus (`DBUS_SYSTEM_BUS_ADDRESS`, else the standard socket).
    pub bus_address: Option<String>,
    /// Serve on this existing connection instead of opening one (to run
    /// several writers over one connection). Overrides `bus_address`.
    pub connection: Option<Connection>,
    /// How long to wait for vssd to answer RegisterWriter/UnregisterWriter.
    pub call_timeout: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            object_path: DEFAULT_WRITER_PATH.to_string(),
            bus_address: None,
            connection: None,
            call_timeout: Duration::from_secs(25),
        }
    }
}

/// Where the writer stands with vssd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistrationState {
    /// `org.vss.Vssd` has no owner; the writer registers as soon as it
    /// appears.
    WaitingForVssd,
    /// vssd is there and the writer is registering; after a failure it
    /// retries with growing delays (up to 30 s).
    Registering {
        attempt: u32,
        last_error: Option<String>,
    },
    /// Registered with the vssd owning the unique name `vssd`.
    Registered { instance_id: String, vssd: String },
    /// [`WriterService::stop`] ran (or the service was dropped).
    Stopped,
    /// The bus connection closed; the writer cannot be reached any more.
    Disconnected,
}

/// A writer being served and kept registered. Dropping it stops the writer
/// in the background (unregister, stop serving); [`stop`](Self::stop) does
/// the same and waits for it.
pub struct WriterService {
    conn: Connection,
    path: OwnedObjectPath,
    state: watch::Receiver<RegistrationState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl WriterService {
    /// Serves `writer` and starts registering it with vssd, now or whenever
    /// vssd appears (and again each time vssd restarts). Fails only if the
    /// bus cannot be reached or the object cannot be served; a missing vssd
    /// is not an error.
    pub async fn start(writer: Arc<dyn Writer>, opts: RunOptions) -> Result<Self, SdkError> {
        let path: OwnedObjectPath = ObjectPath::try_from(opts.object_path.as_str())
            .map_err(|_| SdkError::InvalidObjectPath {
                path: opts.object_path.clone(),
            })?
            .into();
        let conn = match opts.connection {
            Some(c) => c,
            None => connect(opts.bus_address.as_deref()).await?,
        };

        let iface = WriterIface {
            writer: writer.clone(),
        };
        if !conn.object_server().at(&path, iface).await? {
            return Err(SdkError::PathInUse {
                path: path.to_string(),
            });
        }

        let watch = async {
            let dbus = DBusProxy::new(&conn).await?;
            // Subscribe before asking for the owner, so that no change of
            // owner can fall between the two.
            let owners = dbus
                .receive_name_owner_changed_with_args(&[(0, SERVICE_NAME)])
                .await?;
            let owner = match dbus
                .get_name_owner(BusName::from(WellKnownName::from_static_str_unchecked(
                    SERVICE_NAME,
                )))
                .await
            {
                Ok(o) => Some(o.to_string()),
                Err(zbus::fdo::Error::NameHasNoOwner(_)) => None,
                Err(e) => return Err(SdkError::from(e)),
            };
            Ok::<_, SdkError>((owners, owner))
        };
        let (owners, owner) = match watch.await {
            Ok(v) => v,
            Err(e) => {
                let _ = conn.object_server().remove::<WriterIface, _>(&path).await;
                return Err(e);
            }
        };

        let (state_tx, state_rx) = watch::channel(RegistrationState::WaitingForVssd);
        let (stop_tx, stop_rx) = oneshot::channel();
        let registrar = Registrar {
            conn: conn.clone(),
            name: writer.name().to_string(),
            writer_id: writer.writer_id().to_string(),
            path: path.clone(),
            call_timeout: opts.call_timeout,
            state: state_tx,
        };
        let task = tokio::spawn(registrar.run(owners, owner, stop_rx));
        Ok(WriterService {
            conn,
            path,
            state: state_rx,
            stop: Some(stop_tx),
            task: Some(task),
        })
    }

    /// The bus connection the writer is served on.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The object path the writer is served at.
    pub fn object_path(&self) -> &str {
        self.path.as_str()
    }

    /// The current registration state.
    pub fn state(&self) -> RegistrationState {
        self.state.borrow().clone()
    }

    /// Follows the registration state as it changes.
    pub fn watch_state(&self) -> watch::Receiver<RegistrationState> {
        self.state.clone()
    }

    /// The instance id vssd gave, while registered.
    pub fn instance_id(&self) -> Option<String> {
        match &*self.state.borrow() {
            RegistrationState::Registered { instance_id, .. } => Some(instance_id.clone()),
            _ => None,
        }
    }

    /// Waits until the writer is registered and returns the instance id.
    /// Fails if the connection closes or the service stops first.
    pub async fn registered(&self) -> Result<String, SdkError> {
        let mut rx = self.state.clone();
        let state = rx
            .wait_for(|s| {
                matches!(
                    s,
                    RegistrationState::Registered { .. }
                        | RegistrationState::Stopped
                        | RegistrationState::Disconnected
                )
            })
            .await
            .map_err(|_| SdkError::Stopped)?
            .clone();
        match state {
            RegistrationState::Registered { instance_id, .. } => Ok(instance_id),
            RegistrationState::Disconnected => Err(SdkError::Disconnected),
            _ => Err(SdkError::Stopped),
        }
    }

    /// Unregisters from vssd (if registered), stops serving the object and
    /// waits until that is done. Failures are logged, not returned: vssd
    /// forgets the writer anyway when its connection closes.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "writer registration task failed");
            }
        }
    }
}

impl Drop for WriterService {
    fn drop(&mut self) {
        // Dropping the sender tells the task to unregister and stop serving;
        // it finishes on its own.
        self.stop.take();
    }
}

/// Serves `writer` until SIGINT or SIGTERM, then unregisters and returns.
/// Re-registers by itself whenever vssd restarts, and waits for vssd if it
/// is not running yet. Returns [`SdkError::Disconnected`] if the bus
/// connection closes (let the service manager restart the writer).
///
/// Installs tokio signal handlers for SIGINT and SIGTERM; use
/// [`WriterService`] directly to handle signals yourself.
pub async fn run(writer: Arc<dyn Writer>, opts: RunOptions) -> Result<(), SdkError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(SdkError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(SdkError::Signals)?;

    let service = WriterService::start(writer, opts).await?;
    let mut state = service.watch_state();
    let result = tokio::select! {
        _ = term.recv() => Ok(()),
        _ = int.recv() => Ok(()),
        _ = state.wait_for(|s| *s == RegistrationState::Disconnected) => Err(SdkError::Disconnected),
    };
    service.stop().await;
    result
}

async fn connect(address: Option<&str>) -> Result<Connection, SdkError> {
    let result = match address {
        Some(a) => match zbus::connection::Builder::address(a) {
            Ok(b) => b.build().await,
            Err(e) => Err(e),
        },
        None => Connection::system().await,
    };
    result.map_err(|source| SdkError::Connect {
        address: bus_label(address),
        source,
    })
}

/// `org.vss.Writer1`, forwarding each call to the [`Writer`].
///
/// zbus runs each call of an interface with `&self` methods in a task of
/// its own, so calls are handled concurrently (an Abort gets through while
/// a Freeze handler is still running). Each handler additionally runs on a
/// thread of its own (see `dispatch`), which also turns a panicking handler
/// into an error reply instead of leaving vssd without an answer.
struct WriterIface {
    writer: Arc<dyn Writer>,
}

impl WriterIface {
    async fn dispatch<T, F, Fut>(&self, event: &'static str, f: F) -> Result<T, DbusVssError>
    where
        F: FnOnce(Arc<dyn Writer>) -> Fut,
        Fut: Future<Output = WriterResult<T>> + Send + 'static,
        T: Send + 'static,
    {
        let name = self.writer.name().to_string();
        tracing::debug!(writer = %name, event, "event");
        // The handler runs on a thread of its own from tokio's blocking pool
        // rather than on a runtime worker: writers often call blocking APIs
        // (fsync, a database's synchronous checkpoint), and a worker blocked
        // by one can hold up the bus connection's own tasks, and with them
        // the Abort vssd sends meanwhile. Events are few, so a thread each
        // costs nothing worth saving.
        let handler = f(self.writer.clone());
        let runtime = tokio::runtime::Handle::current();
        match tokio::task::spawn_blocking(move || runtime.block_on(handler)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(veto)) => {
                tracing::info!(writer = %name, event, %veto, "writer vetoed");
                Err(veto.into())
            }
            Err(e) => {
                tracing::error!(writer = %name, event, error = %e, "writer handler failed");
                Err(DbusVssError(VssError::new(
                    VssCode::WriterErrorNonRetryable,
                    format!("writer '{name}' failed in {event}: its handler panicked"),
                )))
            }
        }
    }
}

#[zbus::interface(name = "org.vss.Writer1")]
impl WriterIface {
    async fn identify(&self) -> Result<String, DbusVssError> {
        self.dispatch("Identify", |w| async move { w.on_identify().await })
            .await
    }

    async fn prepare_for_backup(
        &self,
        set_id: String,
        bcd: String,
    ) -> Result<String, DbusVssError> {
        let ctx = EventContext::from_wire(&set_id);
        self.dispatch("PrepareForBackup", move |w| async move {
            w.on_prepare_backup(&ctx, bcd).await
        })
        .await
    }

    async fn prepare_for_snapshot(
        &self,
        set_id: String,
        volumes: Vec<String>,
    ) -> Result<(), DbusVssError> {
        let ctx = EventContext::from_wire(&set_id);
        self.dispatch("PrepareForSnapshot", move |w| async move {
            w.on_prepare_snapshot(&ctx, volumes).await
        })
        .await
    }

    async fn freeze(&self, set_id: String) -> Result<(), DbusVssError> {
        let ctx = EventContext::from_wire(&set_id);
        self.dispatch("Freeze", move |w| async move { w.on_freeze(&ctx).await })
            .await
    }

    async fn thaw(&self, set_id: String) -> Result<(), DbusVssError> {
        let ctx = EventContext::from_wire(&set_id);
        self.dispatch("Thaw", move |w| async move { w.on_thaw(&ctx).await })
            .await
    }

    async fn post_snapshot(&self, set_id: String, bcd: String) -> Result<String, DbusVssError> {
        let ctx = EventContext::from_wire(&set_id);
        self.dispatch("PostSnapshot", move |w| async move {
            w.on_post_snapshot(&ctx, bcd).await
        })
        .await
    }

    async fn abort(&self, set_id: String) -> Result<(), DbusVssError> {
        let ctx = EventContext::from_wire(&set_id);
        self.dispatch("Abort", move |w| async move { w.on_abort(&ctx).await })
            .await
    }

    async fn backup_complete(&self, set_id: String, bcd: String) -> Result<String, DbusVssError> {
        let ctx = EventContext::from_wire(&set_id);
        self.dispatch("BackupComplete", move |w| async move {
            w.on_backup_complete(&ctx, bcd).await
        })
        .await
    }

    async fn backup_shutdown(&self, set_id: String) -> Result<(), DbusVssError> {
        let ctx = EventContext::from_wire(&set_id);
        self.dispatch("BackupShutdown", move |w| async move {
            w.on_backup_shutdown(&ctx).await
        })
        .await
    }

    async fn pre_restore(&self, bcd: String) -> Result<String, DbusVssError> {
        self.dispatch(
            "PreRestore",
            move |w| async move { w.on_pre_restore(bcd).await },
        )
        .await
    }

    async fn post_restore(&self, bcd: String) -> Result<String, DbusVssError> {
        self.dispatch("PostRestore", move |w| async move {
            w.on_post_restore(bcd).await
        })
        .await
    }
}

/// An in-flight RegisterWriter: resolves to the vssd it was sent to and
/// the instance id or the failure.
type PendingRegistration =
    Pin<Box<dyn Future<Output = (String, Result<String, VssError>)> + Send + 'static>>;

/// The task keeping one writer registered with whichever vssd is running.
struct Registrar {
    conn: Connection,
    name: String,
    writer_id: String,
    path: OwnedObjectPath,
    call_timeout: Duration,
    state: watch::Sender<RegistrationState>,
}

/// The longest wait between two registration attempts.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

impl Registrar {
    fn set_state(&self, s: RegistrationState) {
        self.state.send_replace(s);
    }

    fn register(&self, vssd: String) -> PendingRegistration {
        let conn = self.conn.clone();
        let name = self.name.clone();
        let writer_id = self.writer_id.clone();
        let path = self.path.clone();
        let timeout = self.call_timeout;
        Box::pin(async move {
            let call = async {
                host_proxy(&conn, &vssd)
                    .await?
                    .register_writer(&name, &writer_id, path.as_ref())
                    .await
            };
            let result = match tokio::time::timeout(timeout, call).await {
                Ok(Ok(id)) => Ok(id),
                Ok(Err(e)) => Err(vss_error_from_zbus(&e, VssCode::WriterInfrastructure)),
                Err(_) => Err(VssError::new(
                    VssCode::WriterInfrastructure,
                    format!("vssd did not answer RegisterWriter within {timeout:?}"),
                )),
            };
            (vssd, result)
        })
    }

    async fn unregister(&self, vssd: &str, instance_id: &str) {
        let call = async {
            host_proxy(&self.conn, vssd)
                .await?
                .unregister_writer(instance_id)
                .await
        };
        match tokio::time::timeout(self.call_timeout, call).await {
            Ok(Ok(())) => tracing::info!(writer = %self.name, instance_id, "unregistered"),
            Ok(Err(e)) => {
                tracing::warn!(writer = %self.name, instance_id, error = %e, "UnregisterWriter failed")
            }
            Err(_) => {
                tracing::warn!(writer = %self.name, instance_id, "UnregisterWriter timed out")
            }
        }
    }

    async fn run(
        self,
        mut owners: NameOwnerChangedStream,
        initial_owner: Option<String>,
        mut stop: oneshot::Receiver<()>,
    ) {
        // The unique name of the running vssd, if any.
        let mut owner = initial_owner;
        let mut pending: Option<PendingRegistration> = None;
        let mut retry_at: Option<Instant> = None;
        let mut attempt: u32 = 0;
        // The instance id given by `owner`.
        let mut instance: Option<String> = None;

        if let Some(o) = &owner {
            attempt = 1;
            pending = Some(self.register(o.clone()));
            self.set_state(RegistrationState::Registering {
                attempt,
                last_error: None,
            });
        } else {
            tracing::info!(writer = %self.name, "vssd is not running; waiting for it");
        }

        let closed = self.conn.closed();
        tokio::pin!(closed);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = &mut closed => {
                    tracing::warn!(writer = %self.name, "bus connection closed");
                    self.set_state(RegistrationState::Disconnected);
                    return;
                }
                signal = owners.next() => {
                    let Some(signal) = signal else {
                        self.set_state(RegistrationState::Disconnected);
                        return;
                    };
                    let new_owner = match signal.args() {
                        Ok(args) => args.new_owner().as_ref().map(|n| n.to_string()),
                        Err(e) => {
                            tracing::warn!(error = %e, "malformed NameOwnerChanged");
                            continue;
                        }
                    };
                    // The owner found at start may also arrive as a signal.
                    if new_owner == owner {
                        continue;
                    }
                    owner = new_owner;
                    instance = None;
                    pending = None;
                    retry_at = None;
                    match &owner {
                        Some(o) => {
                            tracing::info!(writer = %self.name, vssd = %o, "vssd appeared; registering");
                            attempt = 1;
                            pending = Some(self.register(o.clone()));
                            self.set_state(RegistrationState::Registering { attempt, last_error: None });
                        }
                        None => {
                            tracing::info!(writer = %self.name, "vssd went away; waiting for it");
                            self.set_state(RegistrationState::WaitingForVssd);
                        }
                    }
                }
                (vssd, result) = async { pending.as_mut().expect("guarded by is_some").await },
                    if pending.is_some() =>
                {
                    pending = None;
                    if owner.as_deref() != Some(vssd.as_str()) {
                        continue;
                    }
                    match result {
                        Ok(id) => {
                            tracing::info!(writer = %self.name, instance_id = %id, "registered with vssd");
                            instance = Some(id.clone());
                            self.set_state(RegistrationState::Registered { instance_id: id, vssd });
                        }
                        Err(e) if e.code == VssCode::WriterAlreadySubscribed => {
                            // Retrying would give the same answer.
                            tracing::error!(writer = %self.name, error = %e, "vssd refused the registration");
                            self.set_state(RegistrationState::Registering {
                                attempt,
                                last_error: Some(e.to_string()),
                            });
                        }
                        Err(e) => {
                            let delay = retry_delay(attempt);
                            tracing::warn!(writer = %self.name, error = %e, ?delay, "registration failed; retrying");
                            retry_at = Some(Instant::now() + delay);
                            self.set_state(RegistrationState::Registering {
                                attempt,
                                last_error: Some(e.to_string()),
                            });
                        }
                    }
                }
                _ = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)),
                    if retry_at.is_some() =>
                {
                    retry_at = None;
                    if let Some(o) = &owner {
                        attempt += 1;
                        pending = Some(self.register(o.clone()));
                    }
                }
            }
        }

        // Stopping: a registration under way is let finish so that it can
        // be undone rather than leave vssd with a writer that is gone.
        if let Some(p) = pending.take() {
            let (vssd, result) = p.await;
            if let Ok(id) = result {
                owner = Some(vssd);
                instance = Some(id);
            }
        }
        if let (Some(vssd), Some(id)) = (&owner, &instance) {
            self.unregister(vssd, id).await;
        }
        if let Err(e) = self
            .conn
            .object_server()
            .remove::<WriterIface, _>(&self.path)
            .await
        {
            tracing::warn!(writer = %self.name, error = %e, "cannot stop serving the writer object");
        }
        self.set_state(RegistrationState::Stopped);
    }
}

/// A proxy for the WriterHost of one vssd instance. Calls go to its unique
/// name rather than `org.vss.Vssd`, so that a call made while vssd restarts
/// cannot land on the new instance unnoticed and leave a registration the
/// writer does not know about.
async fn host_proxy(conn: &Connection, vssd: &str) -> zbus::Result<WriterHostProxy<'static>> {
    WriterHostProxy::builder(conn)
        .destination(vssd.to_string())?
        .cache_properties(CacheProperties::No)
        .build()
        .await
}

/// 1 s, 2 s, 4 s … up to [`MAX_RETRY_DELAY`].
fn retry_delay(attempt: u32) -> Duration {
    let secs = 1u64 << attempt.saturating_sub(1).min(5);
    Duration::from_secs(secs).min(MAX_RETRY_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_and_cap() {
        assert_eq!(retry_delay(1), Duration::from_secs(1));
        assert_eq!(retry_delay(2), Duration::from_secs(2));
        assert_eq!(retry_delay(5), Duration::from_secs(16));
        assert_eq!(retry_delay(6), MAX_RETRY_DELAY);
        assert_eq!(retry_delay(100), MAX_RETRY_DELAY);
    }

    #[test]
    fn set_ids_from_the_wire() {
        let g = vss_types::Guid::new_random();
        assert_eq!(EventContext::from_wire(&g.to_string()).set_id, g);
        assert!(EventContext::from_wire("").set_id.is_null());
        assert!(EventContext::from_wire("junk").set_id.is_null());
    }
}
