//! The trait a writer implements, and what each event tells it.

use async_trait::async_trait;
use vss_types::Guid;

use crate::veto::WriterResult;

/// What an event of a backup carries besides its documents.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventContext {
    /// The snapshot set the event belongs to. [`Guid::NULL`] when vssd sent
    /// no usable id (e.g. BackupShutdown of a session that never started a
    /// set).
    pub set_id: Guid,
}

impl EventContext {
    pub fn new(set_id: Guid) -> Self {
        EventContext { set_id }
    }

    /// The context for the id as it arrived on the bus: an empty or
    /// malformed id becomes [`Guid::NULL`] rather than failing the event,
    /// because Abort and BackupShutdown must always reach the writer.
    pub(crate) fn from_wire(set_id: &str) -> Self {
        let set_id = if set_id.is_empty() {
            Guid::NULL
        } else {
            Guid::parse(set_id).unwrap_or_else(|_| {
                tracing::warn!(set_id, "vssd sent a malformed snapshot set id");
                Guid::NULL
            })
        };
        EventContext { set_id }
    }
}

/// A VSS writer: an application that brings its data to a consistent state
/// on disk when a shadow copy is taken (the `CVssWriter` analogue).
///
/// Only [`name`](Writer::name), [`writer_id`](Writer::writer_id) and
/// [`on_identify`](Writer::on_identify) are required; every other handler
/// succeeds by default and returns documents unchanged.
///
/// Handlers run concurrently: an [`on_abort`](Writer::on_abort) can arrive
/// while [`on_freeze`](Writer::on_freeze) is still running, so keep shared
/// state behind locks you do not hold across long waits. A handler that
/// panics fails its event with `VSS_E_WRITERERROR_NONRETRYABLE`.
#[async_trait]
pub trait Writer: Send + Sync + 'static {
    /// The writer's name as `vssadmin list writers` shows it.
    fn name(&self) -> &str;

    /// The writer class id: the same for every instance of this writer, and
    /// stable across restarts (derive it with [`Guid::derived`] or hard-code
    /// it).
    fn writer_id(&self) -> Guid;

    /// Identify: returns the Writer Metadata Document (WMD) as XML.
    async fn on_identify(&self) -> WriterResult<String>;

    /// PrepareForBackup: may add writer-private metadata to its components
    /// in the Backup Components Document. Returns the BCD (`""` means
    /// unchanged).
    async fn on_prepare_backup(&self, _ctx: &EventContext, bcd: String) -> WriterResult<String> {
        Ok(bcd)
    }

    /// PrepareForSnapshot: heavy preparation before the short Freeze.
    /// `volumes` are the mount points of the set.
    async fn on_prepare_snapshot(
        &self,
        _ctx: &EventContext,
        _volumes: Vec<String>,
    ) -> WriterResult<()> {
        Ok(())
    }

    /// Freeze: stop writing and flush. Must be quick: the writer has to get
    /// from Freeze to the end of Thaw within its timeout.
    async fn on_freeze(&self, _ctx: &EventContext) -> WriterResult<()> {
        Ok(())
    }

    /// Thaw: resume writing.
    async fn on_thaw(&self, _ctx: &EventContext) -> WriterResult<()> {
        Ok(())
    }

    /// PostSnapshot: the shadow copies exist. Returns the BCD.
    async fn on_post_snapshot(&self, _ctx: &EventContext, bcd: String) -> WriterResult<String> {
        Ok(bcd)
    }

    /// Abort: return to normal operation (thaw if frozen). May come more
    /// than once, and while another handler is still running.
    async fn on_abort(&self, _ctx: &EventContext) -> WriterResult<()> {
        Ok(())
    }

    /// BackupComplete: the requestor has copied the data. Returns the BCD.
    async fn on_backup_complete(&self, _ctx: &EventContext, bcd: String) -> WriterResult<String> {
        Ok(bcd)
    }

    /// BackupShutdown: the backup session ended (successfully or not).
    async fn on_backup_shutdown(&self, _ctx: &EventContext) -> WriterResult<()> {
        Ok(())
    }

    /// PreRestore: before files are restored. Returns the BCD.
    async fn on_pre_restore(&self, bcd: String) -> WriterResult<String> {
        Ok(bcd)
    }

    /// PostRestore: after files are restored. Returns the BCD.
    async fn on_post_restore(&self, bcd: String) -> WriterResult<String> {
        Ok(bcd)
    }
}
