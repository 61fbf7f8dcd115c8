//! Who may do what. Lists are open to everyone; creating, deleting and
//! exposing shadows, and changing software volumes, shadow storage or
//! reverting, needs root or membership of the operators group; writers
//! may be limited to some uids. Identities come from the bus (the
//! connection's uid and pid), never from what the caller says.

use vss_types::{VssCode, VssError, VssResult};
use zbus::fdo::DBusProxy;
use zbus::names::BusName;

use vss_core::EventId;

/// The caller of a method, as the bus daemon knows it.
#[derive(Clone, Debug)]
pub struct Caller {
    pub bus_name: String,
    pub uid: u32,
    pub pid: Option<u32>,
}

pub struct Policy {
    pub operators_gid: Option<u32>,
    pub operators_group: Option<String>,
    pub allowed_writer_uids: Option<Vec<u32>>,
}

pub async fn caller(dbus: &DBusProxy<'_>, hdr: &zbus::message::Header<'_>) -> VssResult<Caller> {
    let sender = hdr
        .sender()
        .ok_or_else(|| VssError::new(VssCode::AccessDenied, "the call has no sender"))?
        .to_owned();
    let name = BusName::Unique(sender.clone());
    let uid = dbus
        .get_connection_unix_user(name.clone())
        .await
        .map_err(|e| {
            VssError::new(
                VssCode::AccessDenied,
                format!("cannot identify the caller: {e}"),
            )
        })?;
    let pid = dbus.get_connection_unix_process_id(name).await.ok();
    Ok(Caller {
        bus_name: sender.to_string(),
        uid,
        pid,
    })
}

/// Supplementary and primary groups of a process, from /proc.
fn process_groups(pid: u32) -> Vec<u32> {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("Groups:") {
            out.extend(
                rest.split_whitespace()
                    .filter_map(|g| g.parse::<u32>().ok()),
            );
        } else if let Some(rest) = line.strip_prefix("Gid:") {
            // real, effective, saved, fs
            out.extend(
                rest.split_whitespace()
                    .take(2)
                    .filter_map(|g| g.parse::<u32>().ok()),
            );
        }
    }
    out
}

impl Policy {
    pub fn check_operator(&self, c: &Caller, action: &str) -> VssResult<()> {
        if c.uid == 0 {
            return Ok(());
        }
        if let (Some(gid), Some(pid)) = (self.operators_gid, c.pid) {
            if process_groups(pid).contains(&gid) {
                return Ok(());
            }
        }
        tracing::warn!(event_id = EventId::AccessDenied.id(), uid = c.uid, pid = ?c.pid, action, "access denied");
        Err(VssError::new(
            VssCode::AccessDenied,
            format!("uid {} may not {action}: only root{} may", c.uid,
                self.operators_group.as_ref().map(|g| format!(" and members of group '{g}'")).unwrap_or_default()),
        )
        .with_hint(match &self.operators_group {
            Some(g) => format!("Run as root, or add the user to group '{g}' (operators-group in /etc/vss/vss.toml) and log in again."),
            None => "Run as root, or set operators-group in /etc/vss/vss.toml and add the user to that group.".to_string(),
        }))
    }

    pub fn check_writer(&self, c: &Caller) -> VssResult<()> {
        match &self.allowed_writer_uids {
            Some(uids) if c.uid != 0 && !uids.contains(&c.uid) => {
                tracing::warn!(event_id = EventId::WriterRejected.id(), uid = c.uid, pid = ?c.pid, "writer registration refused");
                Err(VssError::new(
                    VssCode::AccessDenied,
                    format!("uid {} may not register writers", c.uid),
                )
                .with_hint(
                    "Add the uid to allowed-writer-uids in /etc/vss/vss.toml and restart vssd.",
                ))
            }
            _ => Ok(()),
        }
    }
}
