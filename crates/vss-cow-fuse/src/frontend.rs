//! The front-end contract, independent of how images reach the kernel, so
//! that the engine and the provider above it work with any front end (FUSE
//! plus loop today, ublk later).

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::BlockImage;

/// Longest image name accepted, in bytes. A braced GUID takes 38.
pub const MAX_NAME_LEN: usize = 64;

/// Why a front-end call failed.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    #[error("invalid image name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("an image named {0:?} is already published")]
    AlreadyPublished(String),
    #[error("no image named {0:?} is published")]
    NotPublished(String),
    /// An image is still open (typically a loop device is still attached to
    /// it), or the mount is still in use.
    #[error("{what} is busy: {detail}")]
    Busy { what: String, detail: String },
    /// The front end was shut down, or its serving threads ended.
    #[error("the block front end is shut down")]
    ShutDown,
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl FrontendError {
    pub fn is_busy(&self) -> bool {
        matches!(self, FrontendError::Busy { .. })
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> FrontendError {
        FrontendError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Publishes [`BlockImage`]s so that block devices can be made of them.
///
/// Names are `live` or braced shadow GUIDs and follow [`validate_name`].
///
/// Withdrawing and shutting down come in two strengths. The plain calls
/// refuse with [`FrontendError::Busy`] while an image is open, so a mounted
/// volume never loses its device underneath. The `force_` calls cut open
/// images off: from their return on no engine call is running or will start
/// for those images, and the kernel gets `EIO` for any further I/O on them.
pub trait BlockFrontend: Send + Sync {
    /// Publishes `image` as `name`; returns the path to attach a block
    /// device to (for FUSE: the file for `losetup`).
    fn publish(&self, name: &str, image: Arc<dyn BlockImage>) -> Result<PathBuf, FrontendError>;

    /// Withdraws `name`; [`FrontendError::Busy`] while it is open.
    fn withdraw(&self, name: &str) -> Result<(), FrontendError>;

    /// Withdraws `name` even while it is open (see the trait docs).
    fn force_withdraw(&self, name: &str) -> Result<(), FrontendError>;

    /// Names of the published images, sorted.
    fn published(&self) -> Vec<String>;

    /// Withdraws everything and stops serving; [`FrontendError::Busy`] (and
    /// nothing changed) while any image is open. Calling it again after it
    /// succeeded does nothing.
    fn shutdown(&self) -> Result<(), FrontendError>;

    /// Force-withdraws everything and stops serving. Never blocks on open
    /// images.
    fn force_shutdown(&self) -> Result<(), FrontendError>;

    /// [`withdraw`](Self::withdraw), retried while busy for up to `timeout`.
    ///
    /// Closing an image is asynchronous in some front ends: with FUSE the
    /// kernel sends the release of a file only after `losetup --detach` has
    /// returned, so an immediate withdraw may still see it open.
    fn withdraw_when_idle(&self, name: &str, timeout: Duration) -> Result<(), FrontendError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.withdraw(name) {
                Err(e) if e.is_busy() && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }
}

/// Checks an image name: 1 to [`MAX_NAME_LEN`] bytes of ASCII letters,
/// digits and `-_.{}`, not starting with a dot and without `..`. That covers
/// `live` and braced GUIDs, and keeps names safe as file names and in paths
/// and logs.
pub fn validate_name(name: &str) -> Result<(), FrontendError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("longer than 64 bytes")
    } else if name.contains('/') {
        Some("contains '/'")
    } else if name.starts_with('.') {
        Some("starts with '.'")
    } else if name.contains("..") {
        Some("contains '..'")
    } else if !name.bytes().all(is_name_byte) {
        Some("only ASCII letters, digits and -_.{} are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(FrontendError::InvalidName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'{' | b'}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(name: &str) -> &'static str {
        match validate_name(name) {
            Err(FrontendError::InvalidName { reason, .. }) => reason,
            other => panic!("{name:?} was accepted: {other:?}"),
        }
    }

    #[test]
    fn live_and_braced_guids_are_valid() {
        for name in [
            "live",
            "{8f0c2a4e-5b1d-4c3e-9a7f-0123456789ab}",
            "{8F0C2A4E-5B1D-4C3E-9A7F-0123456789AB}",
            "shadow_1.img",
            "a",
        ] {
            validate_name(name).unwrap_or_else(|e| panic!("{name:?}: {e}"));
        }
    }

    #[test]
    fn length_is_bounded() {
        validate_name(&"a".repeat(MAX_NAME_LEN)).unwrap();
        assert_eq!(
            reason(&"a".repeat(MAX_NAME_LEN + 1)),
            "longer than 64 bytes"
        );
        assert_eq!(reason(""), "empty");
    }

    #[test]
    fn path_tricks_are_refused() {
        assert_eq!(reason("a/b"), "contains '/'");
        assert_eq!(reason("/live"), "contains '/'");
        assert_eq!(reason("."), "starts with '.'");
        assert_eq!(reason(".."), "starts with '.'");
        assert_eq!(reason(".hidden"), "starts with '.'");
        assert_eq!(reason("a..b"), "contains '..'");
    }

    #[test]
    fn odd_bytes_are_refused() {
        for name in ["a b", "a\0b", "a\nb", "ü", "a*", "a\\b", "a:b"] {
            assert_eq!(
                reason(name),
                "only ASCII letters, digits and -_.{} are allowed",
                "{name:?}"
            );
        }
    }

    #[test]
    fn busy_is_recognised() {
        let busy = FrontendError::Busy {
            what: "image \"live\"".into(),
            detail: "1 open handle".into(),
        };
        assert!(busy.is_busy());
        assert!(!FrontendError::ShutDown.is_busy());
        assert_eq!(busy.to_string(), "image \"live\" is busy: 1 open handle");
    }
}
