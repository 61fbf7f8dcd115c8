//! The two failure types of the archive: one file ([`FileError`], the
//! component fails, the backup goes on) and the whole archive
//! ([`ArchiveError`], carries a VSS code and a hint).

use std::io;
use std::path::{Path, PathBuf};

use vss_types::{VssCode, VssError};

/// Why one file could not be stored or restored (the backup records it in
/// the BCD; the component fails as a whole).
///
/// `path` is the live path when storing, the target path when restoring.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct FileError {
    pub path: String,
    pub reason: String,
    #[source]
    pub source: Option<io::Error>,
}

impl FileError {
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        FileError {
            path: path.into(),
            reason: reason.into(),
            source: None,
        }
    }

    /// `reason` is the plain errno text ("permission denied"), prefixed by
    /// `context` when the failing step is not obvious from the path alone.
    pub(crate) fn io(path: impl Into<String>, context: &str, err: io::Error) -> Self {
        let plain = plain_reason(&err);
        FileError {
            path: path.into(),
            reason: if context.is_empty() {
                plain
            } else {
                format!("{context}: {plain}")
            },
            source: Some(err),
        }
    }
}

/// "permission denied" rather than "Permission denied (os error 13)": the
/// reason ends up in the BCD and in messages next to a path.
pub(crate) fn plain_reason(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_lowercase(),
        None => err.to_string(),
    }
}

/// Whole-archive failures (destination not creatable, not a backup,
/// corrupt manifest, ...). Each maps to a VSS code (see
/// docs/BACKUP-FORMAT.md, "Errors").
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The destination already exists (a `.tar.zst` file, or a non-empty
    /// directory).
    #[error("backup destination {path} already exists{}", if *.not_empty { " and is not empty" } else { "" })]
    DestinationExists { path: PathBuf, not_empty: bool },

    /// The destination cannot be used (no parent directory, not a
    /// directory, ...).
    #[error("cannot use {path} as a backup destination: {reason}")]
    InvalidDestination { path: PathBuf, reason: String },

    /// Nothing at the path given to `open`.
    #[error("no backup at {path}: {reason}")]
    NotFound { path: PathBuf, reason: String },

    /// Something is there but it is not a backup of ours.
    #[error("{path} is not a backup: {reason}")]
    NotABackup { path: PathBuf, reason: String },

    /// A backup whose writing never finished (no manifest).
    #[error("backup {path} is unfinished: {reason}")]
    Unfinished { path: PathBuf, reason: String },

    /// A backup written by a newer version of the format.
    #[error("backup {path} has format version {version}; this program reads version {supported}")]
    UnsupportedFormat {
        path: PathBuf,
        version: u64,
        supported: u32,
    },

    /// The manifest or the archive structure is damaged.
    #[error("backup {path} is damaged: {reason}")]
    Corrupt { path: PathBuf, reason: String },

    /// A document name that is not a plain relative path.
    #[error("invalid backup document name {name:?}: {reason}")]
    InvalidDocumentName { name: String, reason: String },

    /// The document was stored before.
    #[error("backup document {name} was already stored")]
    DuplicateDocument { name: String },

    /// Reading or writing the archive itself failed.
    #[error("{what} {path}: {}", plain_reason(source))]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ArchiveError {
    pub(crate) fn io(what: &'static str, path: &Path, source: io::Error) -> Self {
        ArchiveError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn corrupt(path: &Path, reason: impl Into<String>) -> Self {
        ArchiveError::Corrupt {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    pub fn code(&self) -> VssCode {
        match self {
            ArchiveError::DestinationExists { .. } => VssCode::ObjectAlreadyExists,
            ArchiveError::InvalidDestination { .. } | ArchiveError::InvalidDocumentName { .. } => {
                VssCode::InvalidArg
            }
            ArchiveError::NotFound { .. }
            | ArchiveError::NotABackup { .. }
            | ArchiveError::Unfinished { .. } => VssCode::ObjectNotFound,
            ArchiveError::UnsupportedFormat { .. } => VssCode::NotSupported,
            ArchiveError::DuplicateDocument { .. } => VssCode::ObjectAlreadyExists,
            ArchiveError::Corrupt { .. } => VssCode::Unexpected,
            ArchiveError::Io { source, .. } => match source.kind() {
                io::ErrorKind::PermissionDenied => VssCode::AccessDenied,
                io::ErrorKind::NotFound => VssCode::ObjectNotFound,
                _ => VssCode::Unexpected,
            },
        }
    }

    pub fn hint(&self) -> String {
        match self {
            ArchiveError::DestinationExists { .. } => {
                "Back up to a new name (a directory that does not exist or is empty, or a new `.tar.zst` file); never over an older backup.".into()
            }
            ArchiveError::InvalidDestination { .. } => {
                "Give a path whose parent directory exists and is writable, e.g. `--to /backups/NAME` or `--to /backups/NAME.tar.zst`.".into()
            }
            ArchiveError::NotFound { .. } | ArchiveError::NotABackup { .. } => {
                "Give the directory or `.tar.zst` file that `vssbackup backup --to` created.".into()
            }
            ArchiveError::Unfinished { .. } => {
                "The backup that wrote it failed or was interrupted; use another backup and delete this one.".into()
            }
            ArchiveError::UnsupportedFormat { .. } => {
                "Use the vssbackup version that wrote the backup, or a newer one.".into()
            }
            ArchiveError::Corrupt { .. } => {
                "The backup is damaged: run `vssbackup verify` on it, and restore from another copy.".into()
            }
            ArchiveError::InvalidDocumentName { .. } | ArchiveError::DuplicateDocument { .. } => {
                VssCode::Unexpected.default_hint().into()
            }
            ArchiveError::Io { source, path, .. } => match source.kind() {
                io::ErrorKind::PermissionDenied => format!(
                    "Run as root, or as a user who may read and write {}.",
                    path.display()
                ),
                io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => format!(
                    "Free space where {} lies, or back up to another filesystem.",
                    path.display()
                ),
                io::ErrorKind::NotFound => format!("Check that {} exists.", path.display()),
                _ => format!(
                    "Check the disk and filesystem holding {} (`dmesg` shows I/O errors), then retry.",
                    path.display()
                ),
            },
        }
    }
}

impl From<ArchiveError> for VssError {
    fn from(e: ArchiveError) -> Self {
        VssError::new(e.code(), e.to_string()).with_hint(e.hint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_reasons() {
        let e = io::Error::from_raw_os_error(nix::libc::EACCES);
        assert_eq!(plain_reason(&e), "permission denied");
        let f = FileError::io("/a", "", e);
        assert_eq!(f.to_string(), "/a: permission denied");
    }

    #[test]
    fn codes_and_hints() {
        let e = ArchiveError::DestinationExists {
            path: "/b".into(),
            not_empty: true,
        };
        assert_eq!(e.code(), VssCode::ObjectAlreadyExists);
        assert!(e.to_string().contains("not empty"));
        let v: VssError = e.into();
        assert!(v.hint().contains("new name"));
        let io = ArchiveError::io(
            "cannot write",
            Path::new("/b"),
            io::Error::from_raw_os_error(nix::libc::EACCES),
        );
        assert_eq!(io.code(), VssCode::AccessDenied);
        assert_eq!(io.to_string(), "cannot write /b: permission denied");
    }
}
