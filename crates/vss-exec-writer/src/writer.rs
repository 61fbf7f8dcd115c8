//! [`ExecWriter`]: a writer hosted by the service whose events run the
//! commands of its writers.d file.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use vss_core::{NewWriter, WriterEndpoint};
use vss_types::{Guid, VssCode, VssError, VssResult, WriterKind};

use crate::config::{ExecWriterConfig, HookEvent};
use crate::hook::{self, HookContext};

/// How many snapshot sets' volume lists are remembered (a set's volumes
/// arrive with PrepareForSnapshot; later events only carry its id).
const REMEMBERED_SETS: usize = 8;

/// An exec-hook writer: answers Identify from its config, and runs the
/// configured command for each event (an event without one succeeds).
pub struct ExecWriter {
    cfg: ExecWriterConfig,
    writer_id: Guid,
    /// The instance id written into the WMD.
    instance_id: Mutex<Guid>,
    /// Volumes (mount points) of the recent snapshot sets, newest last.
    volumes: Mutex<VecDeque<(Guid, Vec<String>)>>,
    /// One hook at a time per writer: admin scripts are rarely reentrant.
    running: tokio::sync::Mutex<()>,
}

impl ExecWriter {
    pub fn new(cfg: ExecWriterConfig) -> ExecWriter {
        ExecWriter {
            writer_id: cfg.writer_id(),
            cfg,
            instance_id: Mutex::new(Guid::new_random()),
            volumes: Mutex::new(VecDeque::new()),
            running: tokio::sync::Mutex::new(()),
        }
    }

    pub fn config(&self) -> &ExecWriterConfig {
        &self.cfg
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    pub fn writer_id(&self) -> Guid {
        self.writer_id
    }

    /// The instance id the WMD carries: random at creation; set it to the
    /// id the writer table assigned once registered.
    pub fn instance_id(&self) -> Guid {
        *self.instance_id.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_instance_id(&self, id: Guid) {
        *self.instance_id.lock().unwrap_or_else(|e| e.into_inner()) = id;
    }

    /// The registration for the coordinator's writer table.
    pub fn to_new_writer(self: Arc<Self>) -> NewWriter {
        NewWriter {
            name: self.cfg.name.clone(),
            writer_id: self.writer_id,
            kind: WriterKind::ExecHook,
            pid: None,
            uid: None,
            owner: format!("exec:{}", self.cfg.name),
            endpoint: self,
        }
    }

    fn remember(&self, set_id: Guid, volumes: Vec<String>) {
        let mut v = self.volumes.lock().unwrap_or_else(|e| e.into_inner());
        v.retain(|(id, _)| *id != set_id);
        v.push_back((set_id, volumes));
        while v.len() > REMEMBERED_SETS {
            v.pop_front();
        }
    }

    fn forget(&self, set_id: Guid) {
        self.volumes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(id, _)| *id != set_id);
    }

    fn volumes_of(&self, set_id: Guid) -> Vec<String> {
        self.volumes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(id, _)| *id == set_id)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    /// The `VSS_*` environment of a hook. `set_id` is `None` for events
    /// that have no snapshot set (restores).
    pub fn hook_env(&self, event: HookEvent, set_id: Option<Guid>) -> Vec<(String, String)> {
        let mut env = vec![
            ("VSS_EVENT".to_owned(), event.env_name().to_owned()),
            ("VSS_WRITER_NAME".to_owned(), self.cfg.name.clone()),
            ("VSS_WRITER_ID".to_owned(), self.writer_id.to_string()),
        ];
        let vols = match set_id {
            Some(id) if !id.is_null() => {
                env.push(("VSS_SNAPSHOT_SET_ID".to_owned(), id.to_string()));
                self.volumes_of(id)
            }
            _ => Vec::new(),
        };
        env.push(("VSS_VOLUMES".to_owned(), vols.join("\n")));
        env.push(("VSS_VOLUME_COUNT".to_owned(), vols.len().to_string()));
        for (i, v) in vols.iter().enumerate() {
            env.push((format!("VSS_VOLUME_{}", i + 1), v.clone()));
        }
        env
    }

    async fn run(&self, event: HookEvent, set_id: Option<Guid>) -> VssResult<()> {
        let Some(hook) = self.cfg.hooks.get(event) else {
            return Ok(());
        };
        let _one = self.running.lock().await;
        let source = self.cfg.source_display();
        let cx = HookContext {
            writer: &self.cfg.name,
            source: &source,
            event,
            env: self.hook_env(event, set_id),
        };
        hook::run(hook, &cx).await
    }

    fn metadata_xml(&self) -> VssResult<String> {
        let m = self.cfg.writer_metadata(self.instance_id()).map_err(|e| {
            VssError::new(
                VssCode::WriterErrorNonRetryable,
                format!(
                    "cannot build the writer metadata from {}: {}",
                    self.cfg.source_display(),
                    e.message
                ),
            )
            .with_hint(format!(
                "Fix {} (see docs/EXEC-WRITERS.md), then restart vssd.",
                self.cfg.source_display()
            ))
        })?;
        Ok(m.to_xml())
    }
}

#[async_trait]
impl WriterEndpoint for ExecWriter {
    async fn identify(&self) -> VssResult<String> {
        self.metadata_xml()
    }

    async fn prepare_for_backup(&self, set_id: Guid, bcd: String) -> VssResult<String> {
        self.run(HookEvent::PrepareBackup, Some(set_id)).await?;
        Ok(bcd)
    }

    async fn prepare_for_snapshot(&self, set_id: Guid, volumes: Vec<String>) -> VssResult<()> {
        self.remember(set_id, volumes);
        self.run(HookEvent::PrepareSnapshot, Some(set_id)).await
    }

    async fn freeze(&self, set_id: Guid) -> VssResult<()> {
        self.run(HookEvent::Freeze, Some(set_id)).await
    }

    async fn thaw(&self, set_id: Guid) -> VssResult<()> {
        self.run(HookEvent::Thaw, Some(set_id)).await
    }

    async fn post_snapshot(&self, set_id: Guid, bcd: String) -> VssResult<String> {
        self.run(HookEvent::PostSnapshot, Some(set_id)).await?;
        Ok(bcd)
    }

    async fn abort(&self, set_id: Guid) -> VssResult<()> {
        // The volumes stay known: Abort may come more than once, and
        // BackupShutdown follows.
        self.run(HookEvent::Abort, Some(set_id)).await
    }

    async fn backup_complete(&self, set_id: Guid, bcd: String) -> VssResult<String> {
        self.run(HookEvent::BackupComplete, Some(set_id)).await?;
        Ok(bcd)
    }

    async fn backup_shutdown(&self, set_id: Guid) -> VssResult<()> {
        let r = self.run(HookEvent::BackupShutdown, Some(set_id)).await;
        self.forget(set_id);
        r
    }

    /// Runs the `pre-restore` hook; the document comes back unchanged (a
    /// hook cannot edit it).
    async fn pre_restore(&self, bcd: String) -> VssResult<String> {
        self.run(HookEvent::PreRestore, None).await?;
        Ok(bcd)
    }

    /// Runs the `post-restore` hook; the document comes back unchanged.
    async fn post_restore(&self, bcd: String) -> VssResult<String> {
        self.run(HookEvent::PostRestore, None).await?;
        Ok(bcd)
    }
}
