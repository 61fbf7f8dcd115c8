//! The control protocol between vssd and a volume server: one JSON request
//! per line on a Unix socket, one JSON reply per line. Root only (the
//! socket is in a 0700 directory).
//!
//! Ids travel as 32 hex digits (`u128`), sizes in bytes.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    Status,
    /// The cut. The caller holds the live filesystem frozen; `free` is its
    /// free space right now as byte ranges (GETFSMAP), or empty.
    Cut {
        shadow_id: String,
        free: Vec<(u64, u64)>,
        created_unix_ns: i64,
    },
    Delete {
        shadow_id: String,
    },
    /// Puts shadow storage in `dir` (created; must not exist yet). Refused
    /// while the volume has shadow storage.
    AddStorage {
        dir: PathBuf,
        max_bytes: Option<u64>,
        chunk_size: u32,
    },
    ResizeStorage {
        max_bytes: Option<u64>,
    },
    /// Deletes every shadow and the shadow storage.
    DeleteStorage,
    /// Reverts the volume to a shadow: unmounts the live filesystem
    /// (`force`: even when busy), writes the shadow back, mounts again.
    Revert {
        shadow_id: String,
        force: bool,
    },
    /// Unmounts the live filesystem, deletes shadow storage and stops the
    /// server, leaving the device holding the live filesystem.
    Retire,
    /// Changes the shadow count limit (saved for the next start too).
    SetShadowLimit {
        max_shadows: u32,
        delete_oldest_at_limit: bool,
    },
    /// Unmounts the live filesystem (refused while busy) and stops the
    /// server; shadows and shadow storage stay for its next start.
    Stop,
    /// Moves preserved copies into chunk order now, as the server does by
    /// itself after two seconds without writes when
    /// `reorder-copies-when-idle` is on, for at most 100 ms (the control
    /// socket answers one request at a time, and a cut must not wait
    /// behind a long reorder); replies `reordered`, with `done` once none
    /// is left out of order. Live writes go on meanwhile.
    ReorderCopies,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Reply {
    Ok,
    Status(Box<Status>),
    Shadow(ShadowEntry),
    /// To `ReorderCopies`: whether every copy is in chunk order now.
    Reordered {
        done: bool,
    },
    Error(ErrorReply),
}

/// Errors by kind, so that vssd can give the right VSS code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    BadRequest,
    NoSuchShadow,
    ShadowLimit,
    NoStorage,
    StorageExists,
    InsufficientStorage,
    VolumeInUse,
    RevertInProgress,
    Internal,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub volume_id: String,
    pub device: PathBuf,
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub size_bytes: u64,
    pub live_image: PathBuf,
    pub loop_device: Option<PathBuf>,
    pub mounted: bool,
    pub storage: Option<StorageStatus>,
    pub shadows: Vec<ShadowEntry>,
    /// Shadows deleted to make room since the server started, oldest first.
    pub evicted: Vec<Evicted>,
    pub revert: Option<RevertProgress>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageStatus {
    pub dir: PathBuf,
    pub chunk_size: u32,
    pub used_bytes: u64,
    pub allocated_bytes: u64,
    pub max_bytes: Option<u64>,
    /// No preserved copy waits for the idle-time reorder (none was made
    /// since it last finished, or it is switched off or gave up).
    #[serde(default)]
    pub copies_in_order: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowEntry {
    pub shadow_id: String,
    pub created_unix_ns: i64,
    /// Read-only image of the shadow (the device object).
    pub image: PathBuf,
    /// Why the shadow cannot be read back, if it cannot.
    pub lost: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evicted {
    pub shadow_id: String,
    pub reason: String,
    pub unix_time: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevertProgress {
    pub shadow_id: String,
    pub total_chunks: u64,
    pub done_chunks: u64,
    pub started_unix: i64,
    /// `None` while running; `Some(Ok)`/`Some(Err(message))` when ended.
    pub outcome: Option<Result<(), String>>,
}

pub fn id_text(id: u128) -> String {
    format!("{id:032x}")
}

pub fn parse_id(s: &str) -> Option<u128> {
    let hex: String = s
        .chars()
        .filter(|c| !matches!(c, '{' | '}' | '-'))
        .collect();
    (hex.len() == 32)
        .then(|| u128::from_str_radix(&hex, 16).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_json_line() {
        let r = Request::Cut {
            shadow_id: id_text(5),
            free: vec![(0, 4096)],
            created_unix_ns: 1,
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(!text.contains('\n'));
        assert!(text.contains("\"op\":\"cut\""));
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), r);
    }

    #[test]
    fn ids_accept_braced_guids_and_plain_hex() {
        assert_eq!(parse_id(&id_text(0xabc)), Some(0xabc));
        assert_eq!(
            parse_id("{00000000-0000-0000-0000-000000000abc}"),
            Some(0xabc)
        );
        assert_eq!(parse_id("xyz"), None);
        assert_eq!(parse_id(""), None);
    }
}
