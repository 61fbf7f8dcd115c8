//! The VSS error codes (HRESULTs of `vsserror.h`) as one error type.
//!
//! Error policy: every failure a user can see carries a [`VssCode`] (hex
//! value and symbol, so it can be searched for), a message saying what went
//! wrong in this instance, and a hint saying what to do. Library crates
//! convert their own errors into [`VssError`] at their public boundary;
//! binaries print `Error: 0x… SYMBOL: message` followed by `Hint: …`.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! vss_codes {
    ($( $variant:ident = $hex:literal, $sym:literal, $msg:literal, $hint:literal; )*) => {
        /// A VSS result code. Values and symbols are those of `vsserror.h`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum VssCode {
            $( $variant, )*
        }

        impl VssCode {
            /// Every code, in table order.
            pub const ALL: &'static [VssCode] = &[ $( VssCode::$variant, )* ];

            /// The 32-bit HRESULT.
            pub const fn hresult(self) -> u32 {
                match self { $( VssCode::$variant => $hex, )* }
            }

            /// The symbolic name, e.g. `VSS_E_INSUFFICIENT_STORAGE`.
            pub const fn symbol(self) -> &'static str {
                match self { $( VssCode::$variant => $sym, )* }
            }

            /// What the code means in general.
            pub const fn message(self) -> &'static str {
                match self { $( VssCode::$variant => $msg, )* }
            }

            /// What an admin should do about it, in general. Errors may
            /// carry a more specific hint.
            pub const fn default_hint(self) -> &'static str {
                match self { $( VssCode::$variant => $hint, )* }
            }

            pub fn from_hresult(hr: u32) -> Option<VssCode> {
                match hr { $( $hex => Some(VssCode::$variant), )* _ => None }
            }

            pub fn from_symbol(sym: &str) -> Option<VssCode> {
                match sym { $( $sym => Some(VssCode::$variant), )* _ => None }
            }
        }
    };
}

vss_codes! {
    Ok = 0x0000_0000, "S_OK", "No error", "";
    BadState = 0x8004_2301, "VSS_E_BAD_STATE", "The call was made in the wrong state or sequence", "Follow the documented order: gather metadata, prepare for backup, start the set, add volumes, do the snapshot set, complete the backup.";
    Unexpected = 0x8004_2302, "VSS_E_UNEXPECTED", "Unexpected error in the shadow copy service", "See the service's journal (`journalctl -u vssd`) for the cause, then retry.";
    ProviderAlreadyRegistered = 0x8004_2303, "VSS_E_PROVIDER_ALREADY_REGISTERED", "The provider is already registered", "Nothing to do; `vssadmin list providers` shows it.";
    ProviderNotRegistered = 0x8004_2304, "VSS_E_PROVIDER_NOT_REGISTERED", "The provider is not registered", "Use a provider id from `vssadmin list providers`, or omit it to let the service choose.";
    ProviderVeto = 0x8004_2306, "VSS_E_PROVIDER_VETO", "The provider refused or failed the operation", "See the journal for the provider's reason; this is often transient: wait ten minutes and try again, up to three times.";
    ProviderInUse = 0x8004_2307, "VSS_E_PROVIDER_IN_USE", "The provider is in use", "Wait until its shadow copy operations finish.";
    ObjectNotFound = 0x8004_2308, "VSS_E_OBJECT_NOT_FOUND", "The object (volume, shadow copy, writer) was not found", "Check the name or id with `vssadmin list volumes` or `vssadmin list shadows`.";
    AsyncPending = 0x0004_2309, "VSS_S_ASYNC_PENDING", "The asynchronous operation is pending", "";
    AsyncFinished = 0x0004_230A, "VSS_S_ASYNC_FINISHED", "The asynchronous operation has finished", "";
    AsyncCancelled = 0x0004_230B, "VSS_S_ASYNC_CANCELLED", "The asynchronous operation was cancelled", "";
    VolumeNotSupported = 0x8004_230C, "VSS_E_VOLUME_NOT_SUPPORTED", "No provider can make shadow copies of this volume", "Put the data on a filesystem a provider supports (`vssadmin list providers`), e.g. btrfs.";
    ObjectAlreadyExists = 0x8004_230D, "VSS_E_OBJECT_ALREADY_EXISTS", "The object already exists", "Use the existing object, or delete it first.";
    VolumeNotSupportedByProvider = 0x8004_230E, "VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER", "The requested provider does not support this volume", "Omit the provider to let the service choose one that supports the volume.";
    UnexpectedProviderError = 0x8004_230F, "VSS_E_UNEXPECTED_PROVIDER_ERROR", "The provider returned an unexpected error", "See the journal for the provider's error; wait ten minutes and try again, up to three times.";
    CorruptXmlDocument = 0x8004_2310, "VSS_E_CORRUPT_XML_DOCUMENT", "The XML document is corrupt", "Use the document exactly as the service or writer produced it.";
    InvalidXmlDocument = 0x8004_2311, "VSS_E_INVALID_XML_DOCUMENT", "The XML document is malformed or does not match the schema", "Use the document exactly as the service or writer produced it; see docs/DOCUMENTS.md for the schema.";
    MaximumNumberOfVolumesReached = 0x8004_2312, "VSS_E_MAXIMUM_NUMBER_OF_VOLUMES_REACHED", "The snapshot set already holds the maximum of 64 volumes", "Split the volumes over several snapshot sets.";
    FlushWritesTimeout = 0x8004_2313, "VSS_E_FLUSH_WRITES_TIMEOUT", "Flushing writes timed out (the volume is too busy)", "Reduce the write load on the volume and try again; wait ten minutes and retry up to three times.";
    HoldWritesTimeout = 0x8004_2314, "VSS_E_HOLD_WRITES_TIMEOUT", "Holding writes timed out: the provider did not commit within the 10 s hold limit", "The volumes were released and the set discarded; reduce the load and try again.";
    UnexpectedWriterError = 0x8004_2315, "VSS_E_UNEXPECTED_WRITER_ERROR", "Sending events to writers failed", "Check the writers with `vssadmin list writers` and restart the failed ones.";
    SnapshotSetInProgress = 0x8004_2316, "VSS_E_SNAPSHOT_SET_IN_PROGRESS", "Another shadow copy creation is already in progress", "Wait for it to finish, or use `/autoretry=MINUTES` to keep trying.";
    MaximumNumberOfSnapshotsReached = 0x8004_2317, "VSS_E_MAXIMUM_NUMBER_OF_SNAPSHOTS_REACHED", "The volume already has the maximum of 64 shadow copies", "Delete old shadow copies: `vssadmin delete shadows /for=VOLUME /oldest`.";
    WriterInfrastructure = 0x8004_2318, "VSS_E_WRITER_INFRASTRUCTURE", "Error contacting the writers", "Check that vssd and the D-Bus system bus are running.";
    WriterNotResponding = 0x8004_2319, "VSS_E_WRITER_NOT_RESPONDING", "A writer did not respond", "Restart the writer's service; `vssadmin list writers` shows its state.";
    WriterAlreadySubscribed = 0x8004_231A, "VSS_E_WRITER_ALREADY_SUBSCRIBED", "The writer is already registered", "Register each writer instance once.";
    UnsupportedContext = 0x8004_231B, "VSS_E_UNSUPPORTED_CONTEXT", "The provider does not support this context", "Use a context the provider supports (see docs).";
    VolumeInUse = 0x8004_231D, "VSS_E_VOLUME_IN_USE", "The volume or shadow storage association is in use", "Unexpose the shadow copies or stop the users of the volume, then retry.";
    MaximumDiffareaAssociationsReached = 0x8004_231E, "VSS_E_MAXIMUM_DIFFAREA_ASSOCIATIONS_REACHED", "Too many shadow storage associations", "Delete an association with `vssadmin delete shadowstorage`.";
    InsufficientStorage = 0x8004_231F, "VSS_E_INSUFFICIENT_STORAGE", "Not enough storage for the shadow copy", "Free space on the volume or delete old shadow copies (`vssadmin delete shadows /for=VOLUME /oldest`); for copy-on-write volumes add or enlarge shadow storage: `vssadmin add shadowstorage /for=VOLUME /on=OTHER /maxsize=SIZE` or `vssadmin resize shadowstorage`.";
    NoSnapshotsImported = 0x8004_2320, "VSS_E_NO_SNAPSHOTS_IMPORTED", "No shadow copies were imported", "";
    SomeSnapshotsNotImported = 0x8004_2321, "VSS_E_SOME_SNAPSHOTS_NOT_IMPORTED", "Some shadow copies were not imported", "";
    MaximumNumberOfRemoteMachinesReached = 0x8004_2322, "VSS_E_MAXIMUM_NUMBER_OF_REMOTE_MACHINES_REACHED", "Too many remote machines", "";
    RemoteServerUnavailable = 0x8004_2323, "VSS_E_REMOTE_SERVER_UNAVAILABLE", "The remote server is unavailable", "";
    RemoteServerUnsupported = 0x8004_2324, "VSS_E_REMOTE_SERVER_UNSUPPORTED", "The remote server is not supported", "";
    RevertInProgress = 0x8004_2325, "VSS_E_REVERT_IN_PROGRESS", "A revert is already running on the volume", "Wait for it: `vssadmin query reverts`.";
    RevertVolumeLost = 0x8004_2326, "VSS_E_REVERT_VOLUME_LOST", "The volume was lost during a revert", "";
    RebootRequired = 0x8004_2327, "VSS_E_REBOOT_REQUIRED", "A reboot is required", "";
    TransactionFreezeTimeout = 0x8004_2328, "VSS_E_TRANSACTION_FREEZE_TIMEOUT", "Freezing the transaction manager timed out", "";
    TransactionThawTimeout = 0x8004_2329, "VSS_E_TRANSACTION_THAW_TIMEOUT", "Too long between freezing and thawing the transaction manager", "";
    UnselectedVolume = 0x8004_232A, "VSS_E_UNSELECTED_VOLUME", "The operation would overwrite a volume that was not selected", "";
    SnapshotNotInSet = 0x8004_232B, "VSS_E_SNAPSHOT_NOT_IN_SET", "The shadow copy is not in the set", "";
    NestedVolumeLimit = 0x8004_232C, "VSS_E_NESTED_VOLUME_LIMIT", "The volume is nested too deeply", "";
    VolumeNotLocal = 0x8004_232D, "VSS_E_VOLUME_NOT_LOCAL", "The volume is not local", "Shadow copies can only be made of local filesystems.";
    ClusterTimeout = 0x8004_232E, "VSS_E_CLUSTER_TIMEOUT", "Cluster preparation timed out", "";
    NotSupported = 0x8004_232F, "VSS_E_NOT_SUPPORTED", "The operation is not supported", "";
    WriterErrorPartialFailure = 0x8004_2336, "VSS_E_WRITERERROR_PARTIAL_FAILURE", "Partial writer failure", "See the component-level errors in the backup components document.";
    WriterErrorInconsistentSnapshot = 0x8004_23F0, "VSS_E_WRITERERROR_INCONSISTENTSNAPSHOT", "The set holds only some of the volumes the writer's components need", "Add the missing volumes to the snapshot set.";
    WriterErrorOutOfResources = 0x8004_23F1, "VSS_E_WRITERERROR_OUTOFRESOURCES", "A writer ran out of resources", "Reduce the system load, then retry.";
    WriterErrorTimeout = 0x8004_23F2, "VSS_E_WRITERERROR_TIMEOUT", "A writer's timeout expired between Freeze and Thaw", "Reduce the load or raise the writer's timeout: `timeout-secs` in its `[writers.NAME]` section of /etc/vss/vss.toml, or `writer-timeout-secs` for all.";
    WriterErrorRetryable = 0x8004_23F3, "VSS_E_WRITERERROR_RETRYABLE", "A writer failed with a transient error; a retry may succeed", "Retry; if it keeps failing, restart the writer's service.";
    WriterErrorNonRetryable = 0x8004_23F4, "VSS_E_WRITERERROR_NONRETRYABLE", "A writer failed with an error that will probably recur", "Fix the writer's application (see its log); do not rely on shadow copies of its data until then.";
    WriterErrorRecoveryFailed = 0x8004_23F5, "VSS_E_WRITERERROR_RECOVERY_FAILED", "A writer failed to auto-recover the shadow copy", "";
    BreakRevertIdFailed = 0x8004_23F6, "VSS_E_BREAK_REVERT_ID_FAILED", "Break failed: the disk identity could not be reverted", "";
    LegacyProvider = 0x8004_23F7, "VSS_E_LEGACY_PROVIDER", "The provider version does not support the operation", "";
    MissingDisk = 0x8004_23F8, "VSS_E_MISSING_DISK", "A disk is missing", "";
    MissingHiddenVolume = 0x8004_23F9, "VSS_E_MISSING_HIDDEN_VOLUME", "A hidden volume is missing", "";
    MissingVolume = 0x8004_23FA, "VSS_E_MISSING_VOLUME", "A volume is missing", "";
    AutorecoveryFailed = 0x8004_23FB, "VSS_E_AUTORECOVERY_FAILED", "Auto-recovery failed", "";
    DynamicDiskError = 0x8004_23FC, "VSS_E_DYNAMIC_DISK_ERROR", "Dynamic disk error", "";
    NontransportableBcd = 0x8004_23FD, "VSS_E_NONTRANSPORTABLE_BCD", "The backup components document is for a non-transportable set", "";
    CannotRevertDiskid = 0x8004_23FE, "VSS_E_CANNOT_REVERT_DISKID", "The disk id cannot be reverted", "";
    ResyncInProgress = 0x8004_23FF, "VSS_E_RESYNC_IN_PROGRESS", "A resync is in progress", "";
    ClusterError = 0x8004_2400, "VSS_E_CLUSTER_ERROR", "Cluster error", "";
    WriterStatusNotAvailable = 0x8004_2409, "VSS_E_WRITER_STATUS_NOT_AVAILABLE", "Writer status is not available (session limit reached)", "Retry later.";
    FssTimeout = 0x8004_2417, "VSS_E_FSS_TIMEOUT", "File-share shadow copy timeout", "";
    AccessDenied = 0x8007_0005, "E_ACCESSDENIED", "Access is denied", "Run as root or as a member of the operators group set in /etc/vss/vss.toml (`operators-group`).";
    InvalidArg = 0x8007_0057, "E_INVALIDARG", "An argument is invalid", "See `vssadmin --help` for the syntax.";
}

impl VssCode {
    /// A writer failed the event (one of the writer failure codes), as
    /// opposed to the call being refused or the service failing.
    pub const fn is_writer_failure(self) -> bool {
        matches!(
            self,
            VssCode::WriterErrorInconsistentSnapshot
                | VssCode::WriterErrorOutOfResources
                | VssCode::WriterErrorTimeout
                | VssCode::WriterErrorRetryable
                | VssCode::WriterErrorNonRetryable
                | VssCode::WriterErrorPartialFailure
                | VssCode::WriterNotResponding
        )
    }
}

impl fmt::Display for VssCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:08X} {}", self.hresult(), self.symbol())
    }
}

impl Serialize for VssCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.symbol())
    }
}

impl<'de> Deserialize<'de> for VssCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        VssCode::from_symbol(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown VSS code {s}")))
    }
}

/// A failure carrying its VSS code, what happened, and what to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct VssError {
    pub code: VssCode,
    /// What went wrong in this instance (names the volume, writer, file…).
    pub message: String,
    /// What to do about it; defaults to the code's general hint.
    pub hint: Option<String>,
}

impl VssError {
    pub fn new(code: VssCode, message: impl Into<String>) -> Self {
        VssError {
            code,
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The specific hint, or the code's general one.
    pub fn hint(&self) -> &str {
        self.hint
            .as_deref()
            .unwrap_or_else(|| self.code.default_hint())
    }

    /// The writer failed to get from Freeze to Thaw within its timeout.
    pub fn writer_timeout(writer: &str, timeout_secs: u64) -> Self {
        VssError::new(
            VssCode::WriterErrorTimeout,
            format!("writer '{writer}' did not get from Freeze to Thaw within its timeout of {timeout_secs} s"),
        )
        .with_hint(format!(
            "Find out why '{writer}' is slow (its log, the system load), or raise its timeout: \
             set `timeout-secs` under `[writers.\"{writer}\"]` in /etc/vss/vss.toml \
             (or `writer-timeout-secs` for every writer) and restart vssd."
        ))
    }

    /// Shadow storage cannot hold what is asked of it.
    pub fn insufficient_storage(volume: &str, detail: impl fmt::Display) -> Self {
        VssError::new(
            VssCode::InsufficientStorage,
            format!("not enough shadow storage for {volume}: {detail}"),
        )
        .with_hint(format!(
            "Free space or delete old shadow copies (`vssadmin delete shadows /for={volume} /oldest`), \
             or add or enlarge shadow storage: `vssadmin add shadowstorage /for={volume} /on=OTHER_VOLUME /maxsize=10GB` \
             or `vssadmin resize shadowstorage /for={volume} /on=OTHER_VOLUME /maxsize=20%`."
        ))
    }

    pub fn invalid_xml(detail: impl fmt::Display) -> Self {
        VssError::new(
            VssCode::InvalidXmlDocument,
            format!("invalid XML document: {detail}"),
        )
    }

    pub fn invalid_arg(detail: impl Into<String>) -> Self {
        VssError::new(VssCode::InvalidArg, detail)
    }
}

impl fmt::Display for VssError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

pub type VssResult<T> = Result<T, VssError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for c in VssCode::ALL {
            assert_eq!(VssCode::from_hresult(c.hresult()), Some(*c));
            assert_eq!(VssCode::from_symbol(c.symbol()), Some(*c));
        }
    }

    #[test]
    fn display_names_code() {
        let e = VssError::insufficient_storage("/mnt/data", "320 MB needed");
        let s = e.to_string();
        assert!(
            s.starts_with("0x8004231F VSS_E_INSUFFICIENT_STORAGE"),
            "{s}"
        );
        assert!(e.hint().contains("add shadowstorage"));
        let t = VssError::writer_timeout("sqlite", 60);
        assert!(t.to_string().contains("0x800423F2"));
        assert!(t.hint().contains("timeout-secs"));
    }
}
