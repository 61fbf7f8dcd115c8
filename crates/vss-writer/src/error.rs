//! Failures of the SDK itself (as opposed to a writer's vetoes).

use vss_types::{VssCode, VssError};

/// Why a writer could not be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SdkError {
    #[error("cannot connect to the D-Bus system bus at {address}: {source}")]
    Connect {
        /// The address tried, or how it was chosen.
        address: String,
        #[source]
        source: zbus::Error,
    },
    #[error("'{path}' is not a valid D-Bus object path")]
    InvalidObjectPath { path: String },
    #[error("a writer is already served at {path} on this connection")]
    PathInUse { path: String },
    #[error("D-Bus error: {0}")]
    Bus(#[from] zbus::Error),
    #[error("the connection to the D-Bus system bus closed")]
    Disconnected,
    #[error("the writer service was stopped")]
    Stopped,
    #[error("cannot handle SIGINT/SIGTERM: {0}")]
    Signals(#[source] std::io::Error),
}

impl From<zbus::fdo::Error> for SdkError {
    fn from(e: zbus::fdo::Error) -> Self {
        SdkError::Bus(e.into())
    }
}

impl SdkError {
    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            SdkError::Connect { .. } => {
                "Check that the D-Bus system bus runs (`systemctl status dbus`), or point \
                 DBUS_SYSTEM_BUS_ADDRESS (or RunOptions::bus_address) at the right bus."
            }
            SdkError::InvalidObjectPath { .. } => {
                "Object paths look like /org/vss/Writer: '/'-separated elements of [A-Za-z0-9_]."
            }
            SdkError::PathInUse { .. } => {
                "Give each writer sharing a connection its own RunOptions::object_path."
            }
            SdkError::Bus(_) => "See the D-Bus error; check that the bus policy lets this user talk to org.vss.Vssd.",
            SdkError::Disconnected => {
                "The system bus went away (restarted?); restart the writer, e.g. with systemd's Restart=on-failure."
            }
            SdkError::Stopped => "The service was stopped on purpose; start it again if needed.",
            SdkError::Signals(_) => "Run the writer in a normal process (signal handlers could not be installed).",
        }
    }
}

impl From<SdkError> for VssError {
    fn from(e: SdkError) -> Self {
        let hint = e.hint();
        VssError::new(VssCode::WriterInfrastructure, e.to_string()).with_hint(hint)
    }
}

/// How the system bus address was chosen, for error messages.
pub(crate) fn bus_label(explicit: Option<&str>) -> String {
    if let Some(a) = explicit {
        return a.to_string();
    }
    match std::env::var("DBUS_SYSTEM_BUS_ADDRESS") {
        Ok(a) if !a.is_empty() => format!("{a} (from DBUS_SYSTEM_BUS_ADDRESS)"),
        _ => "unix:path=/run/dbus/system_bus_socket (the default)".to_string(),
    }
}
