//! The D-Bus protocol of vssd (see docs/DBUS.md): bus names, object paths,
//! how `VssError` travels as a D-Bus error, and typed client proxies.

pub mod proxies;

use vss_types::{VssCode, VssError};

/// The well-known name vssd owns.
pub const SERVICE_NAME: &str = "org.vss.Vssd";
/// The one object vssd serves.
pub const SERVICE_PATH: &str = "/org/vss/Vssd";
/// Requestor and admin interface, revision 1.
pub const REQUESTOR_INTERFACE: &str = "org.vss.Requestor1";
/// Writer registration interface, revision 1.
pub const WRITER_HOST_INTERFACE: &str = "org.vss.WriterHost1";
/// Software volumes, shadow storage and reverts (the copy-on-write
/// provider), revision 1.
pub const STORAGE_INTERFACE: &str = "org.vss.Storage1";
/// The interface each writer serves.
pub const WRITER_INTERFACE: &str = "org.vss.Writer1";
/// Where writers built on the SDK serve `org.vss.Writer1`.
pub const DEFAULT_WRITER_PATH: &str = "/org/vss/Writer";
/// Prefix of every error name: `org.vss.Error.VSS_E_…`.
pub const ERROR_PREFIX: &str = "org.vss.Error.";

/// The D-Bus error name for a code.
pub fn error_name(code: VssCode) -> String {
    format!("{ERROR_PREFIX}{}", code.symbol())
}

/// The D-Bus error message: the text, then `Hint: …` on its own line.
pub fn error_message(e: &VssError) -> String {
    match &e.hint {
        Some(h) => format!("{}\nHint: {h}", e.message),
        None => e.message.clone(),
    }
}

/// Turns a D-Bus error (name, message) back into a `VssError`. Errors that
/// are not ours map to `fallback`, keeping the bus's text.
pub fn vss_error_from_dbus(name: &str, message: Option<&str>, fallback: VssCode) -> VssError {
    let msg = message.unwrap_or("");
    let (text, hint) = match msg.split_once("\nHint: ") {
        Some((t, h)) => (t.to_string(), Some(h.to_string())),
        None => (msg.to_string(), None),
    };
    match name
        .strip_prefix(ERROR_PREFIX)
        .and_then(VssCode::from_symbol)
    {
        Some(code) => VssError {
            code,
            message: text,
            hint,
        },
        None if name == "org.freedesktop.DBus.Error.AccessDenied" => {
            VssError::new(VssCode::AccessDenied, format!("the bus refused the call: {text}"))
                .with_hint("Install the D-Bus policy dist/dbus/org.vss.Vssd.conf in /etc/dbus-1/system.d/ and reload the bus, or run as root.")
        }
        // A vssd older than the client lacks the interface or method.
        None if name == "org.freedesktop.DBus.Error.UnknownInterface"
            || name == "org.freedesktop.DBus.Error.UnknownMethod" =>
        {
            VssError::new(
                VssCode::NotSupported,
                format!("the running vssd does not offer this call: {name}: {text}"),
            )
            .with_hint("vssd is older than this client: install the same version of both and restart vssd.")
        }
        None => VssError::new(fallback, format!("{name}: {text}")),
    }
}

/// Converts any zbus error from a call into a `VssError`.
pub fn vss_error_from_zbus(e: &zbus::Error, fallback: VssCode) -> VssError {
    match e {
        zbus::Error::MethodError(name, msg, _) => {
            vss_error_from_dbus(name.as_str(), msg.as_deref(), fallback)
        }
        zbus::Error::FDO(fdo) => {
            let s = fdo.to_string();
            if matches!(**fdo, zbus::fdo::Error::AccessDenied(_)) {
                VssError::new(VssCode::AccessDenied, s)
            } else {
                VssError::new(fallback, s)
            }
        }
        other => VssError::new(fallback, other.to_string()),
    }
}

/// A `VssError` as a zbus error a service method can return.
#[derive(Debug)]
pub struct DbusVssError(pub VssError);

impl From<VssError> for DbusVssError {
    fn from(e: VssError) -> Self {
        DbusVssError(e)
    }
}

impl zbus::DBusError for DbusVssError {
    fn create_reply(
        &self,
        call: &zbus::message::Header<'_>,
    ) -> zbus::Result<zbus::message::Message> {
        let name = error_name(self.0.code);
        let name = zbus::names::ErrorName::try_from(name.as_str())?;
        zbus::message::Message::error(call, name)?.build(&(error_message(&self.0),))
    }

    fn name(&self) -> zbus::names::ErrorName<'_> {
        // Symbols are valid D-Bus name elements, so this cannot fail; fall
        // back to a generic name rather than panic.
        zbus::names::ErrorName::try_from(error_name(self.0.code)).unwrap_or_else(|_| {
            zbus::names::ErrorName::from_static_str_unchecked("org.vss.Error.VSS_E_UNEXPECTED")
        })
    }

    fn description(&self) -> Option<&str> {
        Some(&self.0.message)
    }
}

impl std::fmt::Display for DbusVssError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for DbusVssError {}

impl From<zbus::Error> for DbusVssError {
    fn from(e: zbus::Error) -> Self {
        DbusVssError(vss_error_from_zbus(&e, VssCode::Unexpected))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_round_trip() {
        let e = VssError::new(VssCode::SnapshotSetInProgress, "busy").with_hint("wait");
        let back = vss_error_from_dbus(
            &error_name(e.code),
            Some(&error_message(&e)),
            VssCode::Unexpected,
        );
        assert_eq!(back, e);
        let other = vss_error_from_dbus(
            "org.freedesktop.DBus.Error.NoReply",
            Some("gone"),
            VssCode::WriterNotResponding,
        );
        assert_eq!(other.code, VssCode::WriterNotResponding);
        let old = vss_error_from_dbus(
            "org.freedesktop.DBus.Error.UnknownInterface",
            Some("Unknown interface 'org.vss.Storage1'"),
            VssCode::Unexpected,
        );
        assert_eq!(old.code, VssCode::NotSupported);
        assert!(old.message.contains("org.vss.Storage1"), "{}", old.message);
        assert!(old.hint().contains("older"), "{}", old.hint());
    }
}
