//! Client side of vssd: [`Client`] for the admin queries and commands
//! (`org.vss.Requestor1`, and `org.vss.Storage1` for software volumes,
//! shadow storage and reverts), [`BackupComponents`] for a backup session,
//! the IVssBackupComponents analogue, and [`RestoreComponents`] for a
//! restore session (IVssBackupComponents after InitializeForRestore). A
//! session belongs to this client's bus connection: if the process exits,
//! vssd ends the session (BackupShutdown for a backup) and releases its
//! non-persistent shadows.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use vss_dbus::proxies::{RequestorProxy, StorageProxy};
use vss_dbus::vss_error_from_zbus;
use vss_types::{
    Guid, MaxSize, ProviderInfo, RevertStatus, ShadowProp, ShadowStorageInfo, SnapshotContext,
    SoftwareVolumeInfo, VolumeInfo, VssCode, VssError, VssResult, WriterStatus,
};

/// A connection to vssd.
#[derive(Clone)]
pub struct Client {
    proxy: RequestorProxy<'static>,
    storage: StorageProxy<'static>,
}

fn call_err(e: zbus::Error) -> VssError {
    match &e {
        zbus::Error::MethodError(name, _, _)
            if name.as_str() == "org.freedesktop.DBus.Error.ServiceUnknown"
                || name.as_str() == "org.freedesktop.DBus.Error.NameHasNoOwner" =>
        {
            service_unreachable(&e)
        }
        _ => vss_error_from_zbus(&e, VssCode::Unexpected),
    }
}

fn service_unreachable(e: &dyn std::fmt::Display) -> VssError {
    VssError::new(
        VssCode::WriterInfrastructure,
        format!("cannot reach the shadow copy service (vssd): {e}"),
    )
    .with_hint("Start it with `systemctl start vssd` (or run `vssd`), and check DBUS_SYSTEM_BUS_ADDRESS if you use a private bus.")
}

/// True when the error means vssd could not be reached at all.
pub fn is_unreachable(e: &VssError) -> bool {
    e.code == VssCode::WriterInfrastructure && e.message.starts_with("cannot reach")
}

fn parse<T: DeserializeOwned>(s: &str) -> VssResult<T> {
    serde_json::from_str(s).map_err(|e| {
        VssError::new(
            VssCode::Unexpected,
            format!("unexpected answer from vssd: {e}"),
        )
    })
}

fn map(filter: &[(&str, String)]) -> HashMap<String, String> {
    filter
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// A set a crashed vssd left unfinished, found at start.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AbortedSet {
    pub set_id: Guid,
    pub reason: String,
    pub when_unix_ms: i64,
    pub volumes: Vec<String>,
}

impl Client {
    /// Connects to vssd on the system bus (honouring DBUS_SYSTEM_BUS_ADDRESS).
    pub async fn connect() -> VssResult<Client> {
        let conn = zbus::Connection::system()
            .await
            .map_err(|e| service_unreachable(&e))?;
        Self::with_connection(&conn).await
    }

    pub async fn with_connection(conn: &zbus::Connection) -> VssResult<Client> {
        let proxy = RequestorProxy::builder(conn)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(|e| service_unreachable(&e))?;
        let storage = StorageProxy::builder(conn)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(|e| service_unreachable(&e))?;
        Ok(Client { proxy, storage })
    }

    pub async fn list_writers(&self) -> VssResult<Vec<WriterStatus>> {
        parse(&self.proxy.list_writers().await.map_err(call_err)?)
    }

    pub async fn list_providers(&self) -> VssResult<Vec<ProviderInfo>> {
        parse(&self.proxy.list_providers().await.map_err(call_err)?)
    }

    pub async fn list_volumes(&self) -> VssResult<Vec<VolumeInfo>> {
        parse(&self.proxy.list_volumes().await.map_err(call_err)?)
    }

    /// Shadows; filter keys `for`, `shadow`, `set`.
    pub async fn list_shadows(&self, filter: &[(&str, String)]) -> VssResult<Vec<ShadowProp>> {
        let m = map(filter);
        let f: HashMap<&str, &str> = m.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        parse(&self.proxy.list_shadows(f).await.map_err(call_err)?)
    }

    pub async fn list_aborted_sets(&self) -> VssResult<Vec<AbortedSet>> {
        parse(&self.proxy.list_aborted_sets().await.map_err(call_err)?)
    }

    /// Deletes shadows; filter keys `for`, `shadow`, `set`, `oldest`, `all`.
    pub async fn delete_shadows(&self, filter: &[(&str, String)]) -> VssResult<Vec<Guid>> {
        let m = map(filter);
        let f: HashMap<&str, &str> = m.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        parse(&self.proxy.delete_shadows(f).await.map_err(call_err)?)
    }

    pub async fn expose_shadow(
        &self,
        id: Guid,
        target: &str,
        allow_users: bool,
    ) -> VssResult<String> {
        self.proxy
            .expose_shadow(&id.to_string(), target, allow_users)
            .await
            .map_err(call_err)
    }

    pub async fn unexpose_shadow(&self, id: Guid) -> VssResult<()> {
        self.proxy
            .unexpose_shadow(&id.to_string())
            .await
            .map_err(call_err)
    }

    // ----- org.vss.Storage1 -----

    /// `vssadmin add volume`: the copy-on-write provider takes over
    /// `device` and mounts it at `mount` (both absolute paths).
    pub async fn add_volume(&self, device: &str, mount: &str) -> VssResult<SoftwareVolumeInfo> {
        parse(
            &self
                .storage
                .add_volume(device, mount)
                .await
                .map_err(call_err)?,
        )
    }

    /// `vssadmin delete volume`.
    pub async fn delete_volume(&self, for_volume: &str) -> VssResult<()> {
        self.storage
            .delete_volume(for_volume)
            .await
            .map_err(call_err)
    }

    pub async fn list_software_volumes(&self) -> VssResult<Vec<SoftwareVolumeInfo>> {
        parse(
            &self
                .storage
                .list_software_volumes()
                .await
                .map_err(call_err)?,
        )
    }

    /// Shadow storage associations, all or those of a FOR or ON volume.
    pub async fn list_shadow_storage(
        &self,
        for_volume: Option<&str>,
        on_volume: Option<&str>,
    ) -> VssResult<Vec<ShadowStorageInfo>> {
        let mut f = HashMap::new();
        if let Some(v) = for_volume {
            f.insert("for", v);
        }
        if let Some(v) = on_volume {
            f.insert("on", v);
        }
        parse(
            &self
                .storage
                .list_shadow_storage(f)
                .await
                .map_err(call_err)?,
        )
    }

    pub async fn add_shadow_storage(
        &self,
        for_volume: &str,
        on_volume: &str,
        max: MaxSize,
    ) -> VssResult<()> {
        self.storage
            .add_shadow_storage(for_volume, on_volume, &max.to_string())
            .await
            .map_err(call_err)
    }

    pub async fn resize_shadow_storage(
        &self,
        for_volume: &str,
        on_volume: &str,
        max: MaxSize,
    ) -> VssResult<()> {
        self.storage
            .resize_shadow_storage(for_volume, on_volume, &max.to_string())
            .await
            .map_err(call_err)
    }

    /// Deletes the association of `for_volume` on `on_volume`, or on any
    /// volume.
    pub async fn delete_shadow_storage(
        &self,
        for_volume: &str,
        on_volume: Option<&str>,
    ) -> VssResult<()> {
        self.storage
            .delete_shadow_storage(for_volume, on_volume.unwrap_or(""))
            .await
            .map_err(call_err)
    }

    /// Starts reverting the shadow's volume to it; returns once started.
    pub async fn revert_shadow(&self, id: Guid, force_dismount: bool) -> VssResult<()> {
        self.storage
            .revert_shadow(&id.to_string(), force_dismount)
            .await
            .map_err(call_err)
    }

    /// Running and finished reverts, all or those of one volume.
    pub async fn query_reverts(&self, for_volume: Option<&str>) -> VssResult<Vec<RevertStatus>> {
        parse(
            &self
                .storage
                .query_reverts(for_volume.unwrap_or(""))
                .await
                .map_err(call_err)?,
        )
    }

    /// Starts a requestor session.
    pub async fn backup_components(&self, options: SessionOptions) -> VssResult<BackupComponents> {
        let json = serde_json::to_string(&options)
            .map_err(|e| VssError::new(VssCode::Unexpected, e.to_string()))?;
        let session = self.proxy.start_session(&json).await.map_err(call_err)?;
        Ok(BackupComponents {
            client: self.clone(),
            session,
            bcd: String::new(),
        })
    }

    /// Starts a restore session from a saved BCD (XML): the Backup
    /// Components Document the backup kept (`BackupComponents::bcd` after
    /// `do_snapshot_set` or `backup_complete`). An unreadable document is
    /// `VSS_E_INVALID_XML_DOCUMENT` (0x80042311).
    pub async fn restore_components(&self, bcd_xml: &str) -> VssResult<RestoreComponents> {
        let session = self
            .proxy
            .start_restore_session("", bcd_xml)
            .await
            .map_err(call_err)?;
        Ok(RestoreComponents {
            client: self.clone(),
            session,
            bcd: bcd_xml.to_string(),
        })
    }

    /// `vssadmin create shadow`: the whole sequence for one or more
    /// volumes, persistent and with writers (ClientAccessibleWriters).
    pub async fn create_shadow(&self, volumes: &[String]) -> VssResult<Vec<ShadowProp>> {
        let mut bc = self
            .backup_components(SessionOptions {
                context: SnapshotContext::ClientAccessibleWriters,
                backup_type: "copy".into(),
                select_components: false,
            })
            .await?;
        let r = async {
            bc.gather_writer_metadata().await?;
            bc.prepare_for_backup().await?;
            bc.start_snapshot_set().await?;
            for v in volumes {
                bc.add_to_snapshot_set(v, Guid::NULL).await?;
            }
            let props = bc.do_snapshot_set().await?;
            bc.backup_complete().await?;
            Ok(props)
        }
        .await;
        if r.is_err() {
            let _ = bc.abort_backup().await;
        }
        let _ = bc.end().await;
        r
    }
}

/// Options of a requestor session (mirrors the service's).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionOptions {
    pub context: SnapshotContext,
    pub backup_type: String,
    pub select_components: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            context: SnapshotContext::Backup,
            backup_type: "full".into(),
            select_components: false,
        }
    }
}

/// One writer's answer to Identify.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WriterMetadataEntry {
    pub status: WriterStatus,
    /// The Writer Metadata Document (XML).
    pub wmd: String,
}

/// A requestor session: the IVssBackupComponents analogue.
pub struct BackupComponents {
    client: Client,
    session: String,
    /// The Backup Components Document as it stands.
    pub bcd: String,
}

impl BackupComponents {
    pub fn session_id(&self) -> &str {
        &self.session
    }

    pub async fn gather_writer_metadata(&mut self) -> VssResult<Vec<WriterMetadataEntry>> {
        parse(
            &self
                .client
                .proxy
                .gather_writer_metadata(&self.session)
                .await
                .map_err(call_err)?,
        )
    }

    pub async fn prepare_for_backup(&mut self) -> VssResult<()> {
        self.bcd = self
            .client
            .proxy
            .prepare_for_backup(&self.session, &self.bcd)
            .await
            .map_err(call_err)?;
        Ok(())
    }

    pub async fn start_snapshot_set(&mut self) -> VssResult<Guid> {
        let s = self
            .client
            .proxy
            .start_snapshot_set(&self.session)
            .await
            .map_err(call_err)?;
        Guid::parse(&s)
    }

    pub async fn add_to_snapshot_set(&mut self, volume: &str, provider: Guid) -> VssResult<Guid> {
        let p = if provider.is_null() {
            String::new()
        } else {
            provider.to_string()
        };
        let s = self
            .client
            .proxy
            .add_to_snapshot_set(&self.session, volume, &p)
            .await
            .map_err(call_err)?;
        Guid::parse(&s)
    }

    pub async fn do_snapshot_set(&mut self) -> VssResult<Vec<ShadowProp>> {
        let props = parse(
            &self
                .client
                .proxy
                .do_snapshot_set(&self.session)
                .await
                .map_err(call_err)?,
        )?;
        // Writers may edit the BCD at PostSnapshot: fetch it only now.
        self.bcd = self
            .client
            .proxy
            .get_backup_components(&self.session)
            .await
            .map_err(call_err)?;
        Ok(props)
    }

    pub async fn backup_complete(&mut self) -> VssResult<()> {
        self.bcd = self
            .client
            .proxy
            .backup_complete(&self.session, &self.bcd)
            .await
            .map_err(call_err)?;
        Ok(())
    }

    pub async fn gather_writer_status(&self) -> VssResult<Vec<WriterStatus>> {
        parse(
            &self
                .client
                .proxy
                .gather_writer_status(&self.session)
                .await
                .map_err(call_err)?,
        )
    }

    pub async fn abort_backup(&self) -> VssResult<()> {
        self.client
            .proxy
            .abort_backup(&self.session)
            .await
            .map_err(call_err)
    }

    /// Ends the session (BackupShutdown); non-persistent shadows go.
    pub async fn end(self) -> VssResult<()> {
        self.client
            .proxy
            .end_session(&self.session)
            .await
            .map_err(call_err)
    }
}

/// A restore session: IVssBackupComponents initialized for a restore. The
/// sequence is [`gather_writer_metadata`](Self::gather_writer_metadata),
/// then the requestor selects what to restore in [`bcd`](Self::bcd)
/// (`selectedForRestore`, `restoreTarget`, alternate location mappings),
/// [`pre_restore`](Self::pre_restore), the requestor restores the files and
/// sets each component's `fileRestoreStatus`,
/// [`post_restore`](Self::post_restore), then [`end`](Self::end).
///
/// Writers get PreRestore and PostRestore only for sections with a
/// component selected for restore. A writer the document names but vssd
/// cannot reach (compare the document with
/// [`gather_writer_metadata`](Self::gather_writer_metadata)) gets no event
/// and its section stays as it was; the call still succeeds and the
/// requestor decides. A writer that fails leaves its error as the
/// `pre_restore_failure_message` / `post_restore_failure_message` of its
/// selected components.
pub struct RestoreComponents {
    client: Client,
    session: String,
    /// The Backup Components Document as it stands.
    pub bcd: String,
}

impl RestoreComponents {
    pub fn session_id(&self) -> &str {
        &self.session
    }

    /// Identify to every writer, as for a backup.
    pub async fn gather_writer_metadata(&mut self) -> VssResult<Vec<WriterMetadataEntry>> {
        parse(
            &self
                .client
                .proxy
                .gather_writer_metadata(&self.session)
                .await
                .map_err(call_err)?,
        )
    }

    /// Sends self.bcd (requestor may have edited it: selected_for_restore, restore_target, alternate location mappings) to the writers; self.bcd becomes the merged result.
    ///
    /// When a writer fails, the error is returned with its VSS code and
    /// self.bcd still becomes what the other writers returned, with the
    /// failure noted on the failed writer's components.
    pub async fn pre_restore(&mut self) -> VssResult<()> {
        let r = self
            .client
            .proxy
            .pre_restore(&self.session, &self.bcd)
            .await;
        self.take_result(r).await
    }

    /// Sends self.bcd (requestor sets file_restore_status per component) ; self.bcd becomes the merged result.
    ///
    /// Failures as for [`pre_restore`](Self::pre_restore).
    pub async fn post_restore(&mut self) -> VssResult<()> {
        let r = self
            .client
            .proxy
            .post_restore(&self.session, &self.bcd)
            .await;
        self.take_result(r).await
    }

    async fn take_result(&mut self, r: zbus::Result<String>) -> VssResult<()> {
        match r {
            Ok(bcd) => {
                self.bcd = bcd;
                Ok(())
            }
            Err(e) => {
                let e = call_err(e);
                // Only a writer failure means the event ran: the service
                // then kept what the other writers returned. Any other
                // error (wrong order, a bad document) leaves self.bcd as
                // the requestor made it.
                if !e.code.is_writer_failure() {
                    return Err(e);
                }
                if let Ok(bcd) = self.client.proxy.get_backup_components(&self.session).await {
                    if !bcd.is_empty() {
                        self.bcd = bcd;
                    }
                }
                Err(e)
            }
        }
    }

    pub async fn gather_writer_status(&self) -> VssResult<Vec<WriterStatus>> {
        parse(
            &self
                .client
                .proxy
                .gather_writer_status(&self.session)
                .await
                .map_err(call_err)?,
        )
    }

    /// Ends the session.
    pub async fn end(self) -> VssResult<()> {
        self.client
            .proxy
            .end_session(&self.session)
            .await
            .map_err(call_err)
    }
}
