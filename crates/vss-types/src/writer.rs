//! Writer states and status as `vssadmin list writers` shows them.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::VssCode;
use crate::guid::Guid;

/// `VSS_WRITER_STATE`, values 0–15.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WriterState {
    Unknown = 0,
    Stable = 1,
    WaitingForFreeze = 2,
    WaitingForThaw = 3,
    WaitingForPostSnapshot = 4,
    WaitingForBackupComplete = 5,
    FailedAtIdentify = 6,
    FailedAtPrepareBackup = 7,
    FailedAtPrepareSnapshot = 8,
    FailedAtFreeze = 9,
    FailedAtThaw = 10,
    FailedAtPostSnapshot = 11,
    FailedAtBackupComplete = 12,
    FailedAtPreRestore = 13,
    FailedAtPostRestore = 14,
    FailedAtBackupShutdown = 15,
}

impl WriterState {
    pub const ALL: [WriterState; 16] = [
        WriterState::Unknown,
        WriterState::Stable,
        WriterState::WaitingForFreeze,
        WriterState::WaitingForThaw,
        WriterState::WaitingForPostSnapshot,
        WriterState::WaitingForBackupComplete,
        WriterState::FailedAtIdentify,
        WriterState::FailedAtPrepareBackup,
        WriterState::FailedAtPrepareSnapshot,
        WriterState::FailedAtFreeze,
        WriterState::FailedAtThaw,
        WriterState::FailedAtPostSnapshot,
        WriterState::FailedAtBackupComplete,
        WriterState::FailedAtPreRestore,
        WriterState::FailedAtPostRestore,
        WriterState::FailedAtBackupShutdown,
    ];

    pub fn value(self) -> u32 {
        self as u32
    }

    pub fn from_value(v: u32) -> Option<Self> {
        Self::ALL.get(v as usize).copied()
    }

    /// The `VSS_WS_*` symbol.
    pub fn symbol(self) -> &'static str {
        match self {
            WriterState::Unknown => "VSS_WS_UNKNOWN",
            WriterState::Stable => "VSS_WS_STABLE",
            WriterState::WaitingForFreeze => "VSS_WS_WAITING_FOR_FREEZE",
            WriterState::WaitingForThaw => "VSS_WS_WAITING_FOR_THAW",
            WriterState::WaitingForPostSnapshot => "VSS_WS_WAITING_FOR_POST_SNAPSHOT",
            WriterState::WaitingForBackupComplete => "VSS_WS_WAITING_FOR_BACKUP_COMPLETE",
            WriterState::FailedAtIdentify => "VSS_WS_FAILED_AT_IDENTIFY",
            WriterState::FailedAtPrepareBackup => "VSS_WS_FAILED_AT_PREPARE_BACKUP",
            WriterState::FailedAtPrepareSnapshot => "VSS_WS_FAILED_AT_PREPARE_SNAPSHOT",
            WriterState::FailedAtFreeze => "VSS_WS_FAILED_AT_FREEZE",
            WriterState::FailedAtThaw => "VSS_WS_FAILED_AT_THAW",
            WriterState::FailedAtPostSnapshot => "VSS_WS_FAILED_AT_POST_SNAPSHOT",
            WriterState::FailedAtBackupComplete => "VSS_WS_FAILED_AT_BACKUP_COMPLETE",
            WriterState::FailedAtPreRestore => "VSS_WS_FAILED_AT_PRE_RESTORE",
            WriterState::FailedAtPostRestore => "VSS_WS_FAILED_AT_POST_RESTORE",
            WriterState::FailedAtBackupShutdown => "VSS_WS_FAILED_AT_BACKUPSHUTDOWN",
        }
    }

    /// The label vssadmin prints after `State: [n] `. Every failure state
    /// prints `Failed`, as on Windows.
    pub fn label(self) -> &'static str {
        match self {
            WriterState::Unknown => "Unknown",
            WriterState::Stable => "Stable",
            WriterState::WaitingForFreeze => "Waiting for freeze",
            WriterState::WaitingForThaw => "Frozen",
            WriterState::WaitingForPostSnapshot | WriterState::WaitingForBackupComplete => {
                "Waiting for completion"
            }
            _ => "Failed",
        }
    }

    pub fn is_failed(self) -> bool {
        self.value() >= 6
    }
}

impl fmt::Display for WriterState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.value(), self.label())
    }
}

/// The `Last error:` text for a writer failure code, as vssadmin prints it.
pub fn last_error_text(code: VssCode) -> &'static str {
    match code {
        VssCode::Ok => "No error",
        VssCode::WriterErrorInconsistentSnapshot => "Inconsistent shadow copy",
        VssCode::WriterErrorOutOfResources => "Out of resources",
        VssCode::WriterErrorTimeout => "Timed out",
        VssCode::WriterErrorRetryable => "Retryable error",
        VssCode::WriterErrorNonRetryable => "Non-retryable error",
        _ => "Unexpected error",
    }
}

/// How a writer is hosted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WriterKind {
    /// A process of its own, speaking the D-Bus writer protocol.
    Bus,
    /// Declared in writers.d and run as hook commands by vssd.
    ExecHook,
}

/// One writer instance's status (`GetWriterStatus`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterStatus {
    pub name: String,
    pub writer_id: Guid,
    pub instance_id: Guid,
    pub state: WriterState,
    /// The failure code (`hrFailure`); `Ok` when none.
    pub last_error: VssCode,
    /// The writer's own words about the last failure, if any.
    pub last_error_message: Option<String>,
    pub kind: WriterKind,
    /// Process id of a bus writer, when known.
    pub pid: Option<u32>,
    pub uid: Option<u32>,
    pub timeout_secs: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(WriterState::Stable.to_string(), "[1] Stable");
        assert_eq!(WriterState::FailedAtFreeze.to_string(), "[9] Failed");
        assert_eq!(
            WriterState::WaitingForBackupComplete.to_string(),
            "[5] Waiting for completion"
        );
        for (i, s) in WriterState::ALL.iter().enumerate() {
            assert_eq!(s.value() as usize, i);
            assert_eq!(WriterState::from_value(i as u32), Some(*s));
        }
        assert_eq!(last_error_text(VssCode::WriterErrorTimeout), "Timed out");
    }
}
