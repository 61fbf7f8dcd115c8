//! Writer instances: how the coordinator reaches them and tracks their state
//! the way `vssadmin list writers` shows it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use vss_types::{Guid, VssCode, VssError, VssResult, WriterKind, WriterState, WriterStatus};

use crate::events::EventId;

/// A writer as the coordinator talks to it: a bus writer (D-Bus calls) or an
/// exec-hook writer hosted by the service. Errors carry the writer's VSS
/// code (`VSS_E_WRITERERROR_*`). The backup events carry the snapshot set
/// id; the restore events (PreRestore, PostRestore) have no set and carry
/// only the writer's part of the Backup Components Document, which they
/// return, possibly changed (`""`: unchanged).
#[async_trait]
pub trait WriterEndpoint: Send + Sync {
    async fn identify(&self) -> VssResult<String>;
    async fn prepare_for_backup(&self, set_id: Guid, bcd: String) -> VssResult<String>;
    async fn prepare_for_snapshot(&self, set_id: Guid, volumes: Vec<String>) -> VssResult<()>;
    async fn freeze(&self, set_id: Guid) -> VssResult<()>;
    async fn thaw(&self, set_id: Guid) -> VssResult<()>;
    async fn post_snapshot(&self, set_id: Guid, bcd: String) -> VssResult<String>;
    async fn abort(&self, set_id: Guid) -> VssResult<()>;
    async fn backup_complete(&self, set_id: Guid, bcd: String) -> VssResult<String>;
    async fn backup_shutdown(&self, set_id: Guid) -> VssResult<()>;
    async fn pre_restore(&self, bcd: String) -> VssResult<String>;
    async fn post_restore(&self, bcd: String) -> VssResult<String>;
}

/// Registration data for a new writer instance.
pub struct NewWriter {
    pub name: String,
    pub writer_id: Guid,
    pub kind: WriterKind,
    pub pid: Option<u32>,
    pub uid: Option<u32>,
    /// The connection (bus unique name) or other owner key, so all of an
    /// owner's instances can be dropped when it goes away.
    pub owner: String,
    pub endpoint: Arc<dyn WriterEndpoint>,
}

/// One registered writer instance.
pub struct WriterInstance {
    pub name: String,
    pub writer_id: Guid,
    pub instance_id: Guid,
    pub kind: WriterKind,
    pub pid: Option<u32>,
    pub uid: Option<u32>,
    pub owner: String,
    pub timeout: Duration,
    pub endpoint: Arc<dyn WriterEndpoint>,
    state: Mutex<(WriterState, VssCode, Option<String>)>,
    /// Flips to true when the writer's process is gone.
    gone_tx: watch::Sender<bool>,
}

impl WriterInstance {
    pub fn status(&self) -> WriterStatus {
        let (state, code, msg) = self.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
        WriterStatus {
            name: self.name.clone(),
            writer_id: self.writer_id,
            instance_id: self.instance_id,
            state,
            last_error: code,
            last_error_message: msg,
            kind: self.kind,
            pid: self.pid,
            uid: self.uid,
            timeout_secs: self.timeout.as_secs(),
        }
    }

    pub fn state(&self) -> WriterState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    pub fn set_state(&self, state: WriterState) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.0 != state {
            tracing::debug!(event_id = EventId::WriterStateChanged.id(), writer = %self.name, from = %s.0, to = %state, "writer state changed");
        }
        s.0 = state;
        if !state.is_failed() && state == WriterState::Stable {
            // A new sequence starts clean, as after GatherWriterStatus.
        }
    }

    /// Resets to Stable / No error at the start of a new sequence.
    pub fn reset(&self) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) =
            (WriterState::Stable, VssCode::Ok, None);
    }

    pub fn fail(&self, state: WriterState, err: &VssError) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) =
            (state, err.code, Some(err.message.clone()));
        let id = if err.code == VssCode::WriterErrorTimeout {
            EventId::WriterTimedOut
        } else {
            EventId::WriterFailed
        };
        tracing::warn!(event_id = id.id(), writer = %self.name, instance = %self.instance_id, state = %state, code = %err.code, "writer failed: {}", err.message);
    }

    pub fn is_gone(&self) -> bool {
        *self.gone_tx.borrow()
    }

    pub fn mark_gone(&self) {
        self.gone_tx.send_replace(true);
    }

    /// Resolves when the writer's process is gone.
    pub async fn gone(&self) {
        let mut rx = self.gone_tx.subscribe();
        let _ = rx.wait_for(|g| *g).await;
    }

    /// Runs one event call with a deadline; a writer that dies meanwhile
    /// fails the call at once instead of at the deadline.
    pub async fn call<T>(
        &self,
        event: &str,
        deadline: tokio::time::Instant,
        fut: impl std::future::Future<Output = VssResult<T>>,
    ) -> Result<T, CallError> {
        if self.is_gone() {
            return Err(CallError::Gone);
        }
        tokio::select! {
            r = fut => r.map_err(CallError::Vetoed),
            _ = self.gone() => Err(CallError::Gone),
            _ = tokio::time::sleep_until(deadline) => {
                tracing::debug!(writer = %self.name, event, "writer call passed its deadline");
                Err(CallError::TimedOut)
            }
        }
    }
}

/// Why an event call to a writer failed.
#[derive(Debug)]
pub enum CallError {
    Vetoed(VssError),
    TimedOut,
    Gone,
}

impl CallError {
    /// The error as the writer's last error and the set's failure.
    pub fn into_vss(self, w: &WriterInstance, event: &str) -> VssError {
        match self {
            CallError::Vetoed(e) => vetoed(e, &w.name, event),
            CallError::TimedOut => VssError::writer_timeout(&w.name, w.timeout.as_secs()),
            CallError::Gone => VssError::new(
                VssCode::WriterNotResponding,
                format!(
                    "writer '{}'{} went away during {event}",
                    w.name,
                    w.pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
                ),
            )
            .with_hint("The writer's process exited or lost its bus connection; see its log, restart it, then retry."),
        }
    }
}

/// A writer's veto as the set's failure: the writer's own code when it is
/// a writer error (else non-retryable), its text after the writer's name,
/// and its hint, or a general one when it gave none.
fn vetoed(e: VssError, writer: &str, event: &str) -> VssError {
    let code = if e.code.is_writer_failure() {
        e.code
    } else {
        VssCode::WriterErrorNonRetryable
    };
    let hint = e.hint.unwrap_or_else(|| {
        if code == VssCode::WriterErrorRetryable {
            format!("The writer '{writer}' expects the cause to pass: see its log, then retry the backup.")
        } else {
            format!("See the log of the writer '{writer}' and `vssadmin list writers`; fix the cause before retrying.")
        }
    });
    VssError::new(
        code,
        format!("writer '{writer}' vetoed {event}: {}", e.message),
    )
    .with_hint(hint)
}

/// The registered writer instances, in registration order.
#[derive(Default)]
pub struct WriterTable {
    instances: Mutex<BTreeMap<u64, Arc<WriterInstance>>>,
    next: std::sync::atomic::AtomicU64,
}

impl WriterTable {
    pub fn add(&self, w: NewWriter, timeout: Duration) -> VssResult<Arc<WriterInstance>> {
        let mut map = self.instances.lock().unwrap_or_else(|e| e.into_inner());
        if map
            .values()
            .any(|x| x.owner == w.owner && x.writer_id == w.writer_id)
        {
            return Err(VssError::new(
                VssCode::WriterAlreadySubscribed,
                format!(
                    "writer '{}' {} is already registered by this connection",
                    w.name, w.writer_id
                ),
            ));
        }
        let (gone_tx, _) = watch::channel(false);
        let inst = Arc::new(WriterInstance {
            name: w.name,
            writer_id: w.writer_id,
            instance_id: Guid::new_random(),
            kind: w.kind,
            pid: w.pid,
            uid: w.uid,
            owner: w.owner,
            timeout,
            endpoint: w.endpoint,
            state: Mutex::new((WriterState::Stable, VssCode::Ok, None)),
            gone_tx,
        });
        let key = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        map.insert(key, inst.clone());
        tracing::info!(event_id = EventId::WriterRegistered.id(), writer = %inst.name, writer_id = %inst.writer_id, instance = %inst.instance_id, pid = ?inst.pid, uid = ?inst.uid, "writer registered");
        Ok(inst)
    }

    /// Removes every instance of an owner (its connection closed).
    pub fn remove_owner(&self, owner: &str) -> Vec<Arc<WriterInstance>> {
        let mut map = self.instances.lock().unwrap_or_else(|e| e.into_inner());
        let keys: Vec<u64> = map
            .iter()
            .filter(|(_, w)| w.owner == owner)
            .map(|(k, _)| *k)
            .collect();
        let mut out = Vec::new();
        for k in keys {
            if let Some(w) = map.remove(&k) {
                w.mark_gone();
                tracing::warn!(event_id = EventId::WriterGone.id(), writer = %w.name, instance = %w.instance_id, "writer went away");
                out.push(w);
            }
        }
        out
    }

    pub fn remove_instance(&self, owner: &str, instance_id: Guid) -> VssResult<()> {
        let mut map = self.instances.lock().unwrap_or_else(|e| e.into_inner());
        let key = map
            .iter()
            .find(|(_, w)| w.instance_id == instance_id && w.owner == owner)
            .map(|(k, _)| *k)
            .ok_or_else(|| {
                VssError::new(
                    VssCode::ObjectNotFound,
                    format!("writer instance {instance_id} is not registered by this connection"),
                )
            })?;
        if let Some(w) = map.remove(&key) {
            w.mark_gone();
            tracing::info!(event_id = EventId::WriterGone.id(), writer = %w.name, instance = %w.instance_id, "writer unregistered");
        }
        Ok(())
    }

    pub fn all(&self) -> Vec<Arc<WriterInstance>> {
        self.instances
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn get(&self, instance_id: Guid) -> Option<Arc<WriterInstance>> {
        self.all()
            .into_iter()
            .find(|w| w.instance_id == instance_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_veto_keeps_the_writers_code_and_hint() {
        let e = VssError::new(VssCode::WriterErrorRetryable, "database is busy")
            .with_hint("wait for the nightly vacuum to end");
        let v = vetoed(e, "sqlite", "Freeze");
        assert_eq!(v.code, VssCode::WriterErrorRetryable);
        assert_eq!(v.message, "writer 'sqlite' vetoed Freeze: database is busy");
        assert_eq!(
            v.hint.as_deref(),
            Some("wait for the nightly vacuum to end")
        );
    }

    #[test]
    fn a_veto_without_a_hint_gets_one_and_foreign_codes_turn_non_retryable() {
        let v = vetoed(
            VssError::new(VssCode::WriterErrorRetryable, "busy"),
            "pg",
            "PrepareForSnapshot",
        );
        assert!(v.hint.as_deref().unwrap().contains("retry"), "{v:?}");
        let v = vetoed(VssError::new(VssCode::BadState, "odd"), "pg", "Thaw");
        assert_eq!(v.code, VssCode::WriterErrorNonRetryable);
        assert!(v.hint.as_deref().unwrap().contains("list writers"), "{v:?}");
    }
}
