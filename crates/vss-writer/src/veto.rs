//! How a writer says no: the five writer failure codes of VSS.

use std::fmt;

use vss_dbus::DbusVssError;
use vss_types::{VssCode, VssError};

/// What a handler returns: a value, or a veto that fails the event.
pub type WriterResult<T> = Result<T, Veto>;

/// The kind of a veto; each is one `VSS_E_WRITERERROR_*` code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VetoKind {
    /// Transient: the requestor may retry the whole backup and it may work.
    Retryable,
    /// Will probably happen again; the writer's application needs fixing.
    NonRetryable,
    /// The snapshot set lacks volumes the writer's components need.
    InconsistentSnapshot,
    /// Memory, disk, handles… ran out.
    OutOfResources,
    /// The writer could not keep its Freeze–Thaw window.
    Timeout,
}

impl VetoKind {
    /// Every kind.
    pub const ALL: [VetoKind; 5] = [
        VetoKind::Retryable,
        VetoKind::NonRetryable,
        VetoKind::InconsistentSnapshot,
        VetoKind::OutOfResources,
        VetoKind::Timeout,
    ];

    /// The VSS code this kind travels as.
    pub const fn code(self) -> VssCode {
        match self {
            VetoKind::Retryable => VssCode::WriterErrorRetryable,
            VetoKind::NonRetryable => VssCode::WriterErrorNonRetryable,
            VetoKind::InconsistentSnapshot => VssCode::WriterErrorInconsistentSnapshot,
            VetoKind::OutOfResources => VssCode::WriterErrorOutOfResources,
            VetoKind::Timeout => VssCode::WriterErrorTimeout,
        }
    }

    /// The kind for a writer failure code; `None` for any other code.
    pub fn from_code(code: VssCode) -> Option<VetoKind> {
        VetoKind::ALL.into_iter().find(|k| k.code() == code)
    }
}

/// A handler's refusal: fails the event with a writer error code and a
/// message that vssd shows as the writer's last error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Veto {
    kind: VetoKind,
    message: String,
    hint: Option<String>,
}

impl Veto {
    pub fn new(kind: VetoKind, message: impl Into<String>) -> Self {
        Veto {
            kind,
            message: message.into(),
            hint: None,
        }
    }

    /// `VSS_E_WRITERERROR_RETRYABLE`.
    pub fn retryable(message: impl Into<String>) -> Self {
        Veto::new(VetoKind::Retryable, message)
    }

    /// `VSS_E_WRITERERROR_NONRETRYABLE`.
    pub fn non_retryable(message: impl Into<String>) -> Self {
        Veto::new(VetoKind::NonRetryable, message)
    }

    /// `VSS_E_WRITERERROR_INCONSISTENTSNAPSHOT`.
    pub fn inconsistent_snapshot(message: impl Into<String>) -> Self {
        Veto::new(VetoKind::InconsistentSnapshot, message)
    }

    /// `VSS_E_WRITERERROR_OUTOFRESOURCES`.
    pub fn out_of_resources(message: impl Into<String>) -> Self {
        Veto::new(VetoKind::OutOfResources, message)
    }

    /// `VSS_E_WRITERERROR_TIMEOUT`.
    pub fn timeout(message: impl Into<String>) -> Self {
        Veto::new(VetoKind::Timeout, message)
    }

    /// Adds what an admin should do about it (sent as a `Hint:` line).
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn kind(&self) -> VetoKind {
        self.kind
    }

    pub fn code(&self) -> VssCode {
        self.kind.code()
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }
}

impl fmt::Display for Veto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.message)
    }
}

impl std::error::Error for Veto {}

impl From<Veto> for VssError {
    fn from(v: Veto) -> Self {
        let e = VssError::new(v.kind.code(), v.message);
        match v.hint {
            Some(h) => e.with_hint(h),
            None => e,
        }
    }
}

impl From<Veto> for DbusVssError {
    fn from(v: Veto) -> Self {
        DbusVssError(v.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_writer_error_codes() {
        let cases = [
            (Veto::retryable("a"), "VSS_E_WRITERERROR_RETRYABLE"),
            (Veto::non_retryable("a"), "VSS_E_WRITERERROR_NONRETRYABLE"),
            (
                Veto::inconsistent_snapshot("a"),
                "VSS_E_WRITERERROR_INCONSISTENTSNAPSHOT",
            ),
            (
                Veto::out_of_resources("a"),
                "VSS_E_WRITERERROR_OUTOFRESOURCES",
            ),
            (Veto::timeout("a"), "VSS_E_WRITERERROR_TIMEOUT"),
        ];
        for (veto, symbol) in cases {
            assert_eq!(veto.code().symbol(), symbol);
            assert_eq!(VetoKind::from_code(veto.code()), Some(veto.kind()));
            assert_eq!(
                vss_dbus::error_name(VssError::from(veto).code),
                format!("org.vss.Error.{symbol}")
            );
        }
        assert_eq!(VetoKind::from_code(VssCode::BadState), None);
    }

    #[test]
    fn hint_travels_in_the_message() {
        let e = VssError::from(Veto::retryable("db busy").with_hint("wait"));
        assert_eq!(vss_dbus::error_message(&e), "db busy\nHint: wait");
        assert!(Veto::timeout("slow").to_string().contains("0x800423F2"));
    }
}
