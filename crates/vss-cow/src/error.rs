//! Errors of the engine. The provider maps them to VSS codes; the engine
//! itself knows nothing of VSS.

use std::io;

use crate::format::LostReason;

/// The bytes of shadow storage are not what this version writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("not shadow storage of this engine (bad magic)")]
    BadMagic,
    #[error("{0} fails its checksum")]
    BadChecksum(&'static str),
    #[error("{0} is cut short")]
    Truncated(&'static str),
    #[error("format version {0} is newer than this engine reads")]
    UnsupportedVersion(u32),
    #[error("invalid shadow storage: {0}")]
    Invalid(String),
}

#[derive(Debug, thiserror::Error)]
pub enum CowError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("no shadow {0:032x} in this shadow storage")]
    NoSuchShadow(u128),
    #[error("shadow {0:032x} already exists")]
    ShadowExists(u128),
    #[error("shadow {shadow_id:032x} is lost: {reason:?}")]
    ShadowLost { shadow_id: u128, reason: LostReason },
    #[error("the volume already has {limit} shadows, the most allowed")]
    ShadowLimit { limit: u32 },
    #[error("range {offset}+{len} is outside the volume ({size} bytes)")]
    OutOfRange { offset: u64, len: u64, size: u64 },
    #[error("shadow storage does not match: {0}")]
    Mismatch(String),
}

impl CowError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        CowError::Io {
            context: context.into(),
            source,
        }
    }

    /// The errno to hand a block front end for this error.
    pub fn errno(&self) -> i32 {
        match self {
            CowError::Io { source, .. } => source.raw_os_error().unwrap_or(libc_eio()),
            CowError::OutOfRange { .. } => 22, // EINVAL
            CowError::NoSuchShadow(_) => 2,    // ENOENT
            _ => libc_eio(),
        }
    }
}

fn libc_eio() -> i32 {
    5
}

pub type CowResult<T> = Result<T, CowError>;
