//! The D-Bus front end: `org.vss.Requestor1`, `org.vss.Storage1` and
//! `org.vss.WriterHost1` on `/org/vss/Vssd`, bus writers as coordinator
//! endpoints, and the watch on connections closing (writers gone,
//! requestors gone).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::StreamExt;
use vss_core::{Coordinator, NewWriter, RestoreOptions, SessionOptions, WriterEndpoint};
use vss_dbus::proxies::WriterProxy;
use vss_dbus::{vss_error_from_zbus, DbusVssError};
use vss_types::{Guid, MaxSize, VssCode, VssError, VssResult, WriterKind};
use zbus::fdo::DBusProxy;
use zbus::zvariant::ObjectPath;
use zbus::{interface, Connection};

use crate::auth::{caller, Policy};

type R<T> = Result<T, DbusVssError>;

fn json<T: serde::Serialize>(v: &T) -> Result<String, DbusVssError> {
    serde_json::to_string(v).map_err(|e| VssError::new(VssCode::Unexpected, e.to_string()).into())
}

fn guid(s: &str) -> R<Guid> {
    Guid::parse(s).map_err(Into::into)
}

pub struct Requestor {
    pub core: Arc<Coordinator>,
    pub policy: Arc<Policy>,
    pub dbus: DBusProxy<'static>,
}

#[interface(name = "org.vss.Requestor1")]
impl Requestor {
    async fn list_writers(&self) -> Result<String, DbusVssError> {
        json(&self.core.list_writers())
    }

    async fn list_providers(&self) -> Result<String, DbusVssError> {
        json(&self.core.list_providers())
    }

    async fn list_shadows(&self, filter: HashMap<String, String>) -> Result<String, DbusVssError> {
        if let Err(e) = self.core.forget_evicted_shadows().await {
            tracing::warn!("cannot reconcile evicted shadows: {e}");
        }
        json(&self.core.list_shadows(&filter)?)
    }

    async fn list_volumes(&self) -> Result<String, DbusVssError> {
        json(&self.core.list_volumes()?)
    }

    async fn list_aborted_sets(&self) -> Result<String, DbusVssError> {
        json(&self.core.aborted_sets()?)
    }

    async fn start_session(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        options_json: &str,
    ) -> Result<String, DbusVssError> {
        let c = caller(&self.dbus, &hdr).await?;
        self.policy.check_operator(&c, "create shadow copies")?;
        let options: SessionOptions = if options_json.trim().is_empty() {
            SessionOptions::default()
        } else {
            serde_json::from_str(options_json)
                .map_err(|e| VssError::invalid_arg(format!("bad session options: {e}")))?
        };
        Ok(self.core.start_session(&c.bus_name, options).to_string())
    }

    /// InitializeForRestore: a restore session from the Backup Components
    /// Document a backup saved. Same callers as StartSession.
    async fn start_restore_session(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        options_json: &str,
        bcd: String,
    ) -> Result<String, DbusVssError> {
        let c = caller(&self.dbus, &hdr).await?;
        self.policy.check_operator(&c, "restore components")?;
        let options: RestoreOptions = if options_json.trim().is_empty() {
            RestoreOptions::default()
        } else {
            serde_json::from_str(options_json).map_err(|e| {
                VssError::invalid_arg(format!("bad restore session options: {e}"))
                    .with_hint("Pass \"\" or \"{}\": a restore session takes no options yet.")
            })?
        };
        Ok(self
            .core
            .start_restore_session(&c.bus_name, options, &bcd)?
            .to_string())
    }

    /// PreRestore to the writers with components selected for restore;
    /// returns the document as the writers left it.
    async fn pre_restore(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        session: &str,
        bcd: String,
    ) -> Result<String, DbusVssError> {
        let c = caller(&self.dbus, &hdr).await?;
        Ok(self
            .core
            .pre_restore(&c.bus_name, guid(session)?, bcd)
            .await?
            .bcd)
    }

    /// PostRestore, as PreRestore.
    async fn post_restore(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        session: &str,
        bcd: String,
    ) -> Result<String, DbusVssError> {
        let c = caller(&self.dbus, &hdr).await?;
        Ok(self
            .core
            .post_restore(&c.bus_name, guid(session)?, bcd)
            .await?
            .bcd)
    }

    async fn gather_writer_metadata(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        session: &str,
    ) -> Result<String, DbusVssError> {
        let c = caller(&self.dbus, &hdr).await?;
        let list = self
            .core
            .gather_writer_metadata(&c.bus_name, guid(session)?)
            .await?;
        let v: Vec<serde_json::Value> = list
            .into_iter()
            .map(|(st, wmd)| serde_json::json!({"status": st, "wmd": wmd}))
            .collect();
        json(&v)
    }

    async fn prepare_for_backup(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        session: &str,
        bcd: String,
    ) -> Result<String, DbusVssError> {
        let c = caller(&self.dbus, &hdr).await?;
        Ok(self
            .core
            .prepare_for_backup(&c.bus_name, guid(session)?, bcd)
            .await?)
    }

    async fn start_snapshot_set(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        session: &str,
    ) -> Result<String, DbusVssError> {
        let c = caller(&self.dbus, &hdr).await?;
        Ok(self
            .core
            .start_snapshot_set(&c.bus_name, guid(session)?)
            .await?
            .to_string())
    }

    async fn add_to_snapshot_set(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        session: &str,
        volume: &str,
        provider_id: &str,
    ) -> Result<String, DbusVssError> {
        let c = caller(&self.dbus, &hdr).await?;
        let pid = if provider_id.is_empty() {
            Guid::NULL
        } else {
            guid(provider_id)?
        };
        Ok(self
            .core
            .add_to_snapshot_set(&c.bus_name, guid(session)?, volume, pid)
            .await?
            .to_string())
    }

    async fn do_snapshot_set(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        session: &str,
    ) -> Result<String, DbusVssError> {
        let c = caller(&self.dbus, &hdr).await?;
        json(
            &self
                .core
                .do_snapshot_set(&c.bus_name, guid(session)?)
                .await?,
        )
    }

    async fn get_backup_components(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        session: &str,
    ) -> Result<String, DbusVssError> {
        let c = caller(&self.dbus, &hdr).await?;
        Ok(self
            .core
            .get_backup_components(&c.bus_name, guid(session)?)
            .await?)
    }

    async fn backup_complete(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        session: &str,
        bcd: String,
    ) -> Result<String, DbusVssError> {
        let c = caller(&self.dbus, &hdr).await?;
        Ok(self
            .core
            .backup_complete(&c.bus_name, guid(session)?, bcd)
            .await?)
    }

    async fn gather_writer_status(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        session: &str,
    ) -> Result<String, DbusVssError> {
        let c = caller(&self.dbus, &hdr).await?;
        json(
            &self
                .core
                .gather_writer_status(&c.bus_name, guid(session)?)
                .await?,
        )
    }

    async fn abort_backup(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        session: &str,
    ) -> Result<(), DbusVssError> {
        let c = caller(&self.dbus, &hdr).await?;
        Ok(self.core.abort_backup(&c.bus_name, guid(session)?).await?)
    }

    async fn end_session(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        session: &str,
    ) -> Result<(), DbusVssError> {
        let c = caller(&self.dbus, &hdr).await?;
        Ok(self.core.end_session(&c.bus_name, guid(session)?).await?)
    }

    async fn delete_shadows(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        filter: HashMap<String, String>,
    ) -> Result<String, DbusVssError> {
        let c = caller(&self.dbus, &hdr).await?;
        self.policy.check_operator(&c, "delete shadow copies")?;
        if let Err(e) = self.core.forget_evicted_shadows().await {
            tracing::warn!("cannot reconcile evicted shadows: {e}");
        }
        let ids = self.core.delete_shadows(&filter).await?;
        json(&ids)
    }

    async fn expose_shadow(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        shadow_id: &str,
        target: &str,
        allow_users: bool,
    ) -> Result<String, DbusVssError> {
        let c = caller(&self.dbus, &hdr).await?;
        self.policy.check_operator(&c, "expose shadow copies")?;
        Ok(self
            .core
            .expose_shadow(guid(shadow_id)?, target, allow_users)
            .await?)
    }

    async fn unexpose_shadow(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        shadow_id: &str,
    ) -> Result<(), DbusVssError> {
        let c = caller(&self.dbus, &hdr).await?;
        self.policy.check_operator(&c, "unexpose shadow copies")?;
        Ok(self.core.unexpose_shadow(guid(shadow_id)?).await?)
    }
}

/// `org.vss.Storage1`: the copy-on-write provider's software volumes,
/// shadow storage and reverts. Lists are open to anyone, like those of
/// `org.vss.Requestor1`; changes need root or the operators group.
pub struct Storage {
    pub core: Arc<Coordinator>,
    pub policy: Arc<Policy>,
    pub dbus: DBusProxy<'static>,
}

impl Storage {
    async fn operator(&self, hdr: &zbus::message::Header<'_>, action: &str) -> R<()> {
        let c = caller(&self.dbus, hdr).await?;
        self.policy.check_operator(&c, action)?;
        Ok(())
    }
}

/// `""` means "not given".
fn non_empty(s: &str) -> Option<&str> {
    Some(s).filter(|s| !s.trim().is_empty())
}

#[interface(name = "org.vss.Storage1")]
impl Storage {
    async fn add_volume(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        device: &str,
        mount: &str,
    ) -> Result<String, DbusVssError> {
        self.operator(&hdr, "add software volumes").await?;
        json(&self.core.add_software_volume(device, mount).await?)
    }

    async fn delete_volume(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        for_volume: &str,
    ) -> Result<(), DbusVssError> {
        self.operator(&hdr, "delete software volumes").await?;
        Ok(self.core.delete_software_volume(for_volume).await?)
    }

    async fn list_software_volumes(&self) -> Result<String, DbusVssError> {
        json(&self.core.list_software_volumes().await?)
    }

    /// Filter keys `for` and `on`; any other key is refused.
    async fn list_shadow_storage(
        &self,
        filter: HashMap<String, String>,
    ) -> Result<String, DbusVssError> {
        if let Some(k) = filter.keys().find(|k| !matches!(k.as_str(), "for" | "on")) {
            return Err(VssError::invalid_arg(format!(
                "unknown ListShadowStorage filter key '{k}': the keys are 'for' and 'on'"
            ))
            .into());
        }
        let f = filter.get("for").map(String::as_str);
        let o = filter.get("on").map(String::as_str);
        json(&self.core.list_shadow_storage(f, o).await?)
    }

    async fn add_shadow_storage(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        for_volume: &str,
        on_volume: &str,
        max_size: &str,
    ) -> Result<(), DbusVssError> {
        self.operator(&hdr, "add shadow storage").await?;
        let max = MaxSize::from_wire(max_size)?;
        Ok(self
            .core
            .add_shadow_storage(for_volume, on_volume, max)
            .await?)
    }

    async fn resize_shadow_storage(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        for_volume: &str,
        on_volume: &str,
        max_size: &str,
    ) -> Result<(), DbusVssError> {
        self.operator(&hdr, "resize shadow storage").await?;
        let max = MaxSize::from_wire(max_size)?;
        Ok(self
            .core
            .resize_shadow_storage(for_volume, on_volume, max)
            .await?)
    }

    async fn delete_shadow_storage(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        for_volume: &str,
        on_volume: &str,
    ) -> Result<(), DbusVssError> {
        self.operator(&hdr, "delete shadow storage").await?;
        Ok(self
            .core
            .delete_shadow_storage(for_volume, non_empty(on_volume))
            .await?)
    }

    async fn revert_shadow(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        shadow_id: &str,
        force_dismount: bool,
    ) -> Result<(), DbusVssError> {
        self.operator(&hdr, "revert volumes to shadow copies")
            .await?;
        Ok(self
            .core
            .revert_shadow(guid(shadow_id)?, force_dismount)
            .await?)
    }

    async fn query_reverts(&self, for_volume: &str) -> Result<String, DbusVssError> {
        json(&self.core.query_reverts(non_empty(for_volume)).await?)
    }
}

pub struct WriterHost {
    pub core: Arc<Coordinator>,
    pub policy: Arc<Policy>,
    pub dbus: DBusProxy<'static>,
    pub conn: Connection,
}

#[interface(name = "org.vss.WriterHost1")]
impl WriterHost {
    async fn register_writer(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        name: &str,
        writer_id: &str,
        object_path: ObjectPath<'_>,
    ) -> Result<String, DbusVssError> {
        let c = caller(&self.dbus, &hdr).await?;
        self.policy.check_writer(&c)?;
        if name.trim().is_empty() || name.len() > 256 {
            return Err(VssError::invalid_arg("writer name must be 1..256 characters").into());
        }
        let writer_id = guid(writer_id)?;
        let proxy = WriterProxy::builder(&self.conn)
            .destination(c.bus_name.clone())
            .map_err(DbusVssError::from)?
            .path(object_path.to_owned())
            .map_err(DbusVssError::from)?
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await?;
        let endpoint = Arc::new(BusWriter { proxy });
        let inst = self.core.register_writer(NewWriter {
            name: name.to_string(),
            writer_id,
            kind: WriterKind::Bus,
            pid: c.pid,
            uid: Some(c.uid),
            owner: c.bus_name.clone(),
            endpoint,
        })?;
        Ok(inst.instance_id.to_string())
    }

    async fn unregister_writer(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        instance_id: &str,
    ) -> Result<(), DbusVssError> {
        let c = caller(&self.dbus, &hdr).await?;
        Ok(self
            .core
            .unregister_writer(&c.bus_name, guid(instance_id)?)?)
    }
}

/// A writer reached over the bus.
struct BusWriter {
    proxy: WriterProxy<'static>,
}

fn writer_err(e: zbus::Error) -> VssError {
    if let zbus::Error::MethodError(name, _, _) = &e {
        let n = name.as_str();
        if n == "org.freedesktop.DBus.Error.NoReply"
            || n == "org.freedesktop.DBus.Error.ServiceUnknown"
            || n == "org.freedesktop.DBus.Error.Disconnected"
        {
            return VssError::new(
                VssCode::WriterNotResponding,
                format!("the writer did not answer ({n})"),
            );
        }
    }
    vss_error_from_zbus(&e, VssCode::WriterErrorNonRetryable)
}

#[async_trait]
impl WriterEndpoint for BusWriter {
    async fn identify(&self) -> VssResult<String> {
        self.proxy.identify().await.map_err(writer_err)
    }
    async fn prepare_for_backup(&self, set_id: Guid, bcd: String) -> VssResult<String> {
        self.proxy
            .prepare_for_backup(&set_id.to_string(), &bcd)
            .await
            .map_err(writer_err)
    }
    async fn prepare_for_snapshot(&self, set_id: Guid, volumes: Vec<String>) -> VssResult<()> {
        let v: Vec<&str> = volumes.iter().map(String::as_str).collect();
        self.proxy
            .prepare_for_snapshot(&set_id.to_string(), &v)
            .await
            .map_err(writer_err)
    }
    async fn freeze(&self, set_id: Guid) -> VssResult<()> {
        self.proxy
            .freeze(&set_id.to_string())
            .await
            .map_err(writer_err)
    }
    async fn thaw(&self, set_id: Guid) -> VssResult<()> {
        self.proxy
            .thaw(&set_id.to_string())
            .await
            .map_err(writer_err)
    }
    async fn post_snapshot(&self, set_id: Guid, bcd: String) -> VssResult<String> {
        self.proxy
            .post_snapshot(&set_id.to_string(), &bcd)
            .await
            .map_err(writer_err)
    }
    async fn abort(&self, set_id: Guid) -> VssResult<()> {
        self.proxy
            .abort(&set_id.to_string())
            .await
            .map_err(writer_err)
    }
    async fn backup_complete(&self, set_id: Guid, bcd: String) -> VssResult<String> {
        self.proxy
            .backup_complete(&set_id.to_string(), &bcd)
            .await
            .map_err(writer_err)
    }
    async fn backup_shutdown(&self, set_id: Guid) -> VssResult<()> {
        self.proxy
            .backup_shutdown(&set_id.to_string())
            .await
            .map_err(writer_err)
    }
    async fn pre_restore(&self, bcd: String) -> VssResult<String> {
        self.proxy.pre_restore(&bcd).await.map_err(writer_err)
    }
    async fn post_restore(&self, bcd: String) -> VssResult<String> {
        self.proxy.post_restore(&bcd).await.map_err(writer_err)
    }
}

/// Watches connections closing: their writers disappear at once, their
/// sessions end (BackupShutdown) and their non-persistent shadows go.
pub async fn watch_disconnects(
    core: Arc<Coordinator>,
    dbus: DBusProxy<'static>,
) -> zbus::Result<()> {
    let mut stream = dbus.receive_name_owner_changed().await?;
    while let Some(sig) = stream.next().await {
        let Ok(args) = sig.args() else { continue };
        let name = args.name().to_string();
        if name.starts_with(':') && args.new_owner().is_none() {
            let core = core.clone();
            tokio::spawn(async move { core.connection_closed(&name).await });
        }
    }
    Ok(())
}
