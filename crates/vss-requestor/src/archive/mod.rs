//! The backup archive: what `vssbackup backup --to DEST` writes and
//! `restore`/`verify` read. A directory, or one `.tar.zst` file when DEST
//! ends so; both hold the files (under their live paths), a manifest, and
//! named documents (the BCD, writer metadata, a summary).
//!
//! The format is described in docs/BACKUP-FORMAT.md.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod bgsync;
mod dir;
mod error;
mod manifest;
mod restore;
mod source;
mod tarzst;

pub use error::{ArchiveError, FileError};
pub use manifest::{DocumentInfo, EntryKind, ManifestEntry, ManifestHeader, FORMAT_VERSION};

/// One [`ManifestEntry`] JSON object per line, after a header line
/// ([`ManifestHeader`], carrying `"format": 1`).
pub const MANIFEST_FILE: &str = "manifest.jsonl";
/// Directory layout: DEST/data/<live path without leading '/'>.
pub const DATA_DIR: &str = "data";
/// How a destination name must end to get a single `.tar.zst` file.
pub const TAR_ZST_SUFFIX: &str = ".tar.zst";

/// What `add` did with a source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Added {
    Stored(ManifestEntry),
    /// Fifo, socket, device node: nothing a backup can hold.
    Skipped {
        path: String,
        reason: String,
    },
}

/// Writes one backup. Obtained from [`create`].
pub trait ArchiveWriter: Send {
    /// Stores the file, directory or symlink at `source` (lstat, never
    /// followed) under the live path `live_path`. Reads metadata itself
    /// (mode, uid, gid, mtime, all xattrs), copies a regular file's bytes
    /// while hashing them with BLAKE3; size/blake3 are of what was read.
    fn add(
        &mut self,
        live_path: &str,
        source: &Path,
        component: Option<&str>,
    ) -> Result<Added, FileError>;
    /// Stores a named document (relative path, '/'-separated, no "..", not
    /// under data/).
    fn add_document(&mut self, name: &str, bytes: &[u8]) -> Result<(), ArchiveError>;
    /// Writes the manifest, syncs everything, closes. Only a finished
    /// backup can be opened.
    fn finish(self: Box<Self>) -> Result<(), ArchiveError>;
    /// Bytes of file content stored so far (for progress).
    fn bytes_stored(&self) -> u64;
}

/// Reads one finished backup. Obtained from [`open`].
pub trait ArchiveReader: Send {
    fn manifest(&self) -> &[ManifestEntry];
    fn document_names(&self) -> Vec<String>;
    fn document(&self, name: &str) -> Option<Vec<u8>>;
    /// Restores the entries for which `select` returns a target path
    /// (None = skip). `select` is called once per entry, in manifest
    /// order, before anything is written. A file's content is written to
    /// a temporary name beside the target and checked against size and
    /// BLAKE3 before it is renamed over the target; then owner (root
    /// only), mode, xattrs and mtime are applied; directories get their
    /// metadata after their content. `done` is called once per selected
    /// entry. Returns Err only for whole-archive failures.
    #[allow(clippy::type_complexity)] // the signature the callers were given
    fn extract(
        &mut self,
        select: &mut dyn FnMut(&ManifestEntry) -> Option<PathBuf>,
        done: &mut dyn FnMut(&ManifestEntry, &Path, Result<(), FileError>),
    ) -> Result<(), ArchiveError>;
    /// Reads every stored file and compares size and BLAKE3 with the
    /// manifest; also reports data missing from the manifest or vice versa.
    fn verify(&mut self) -> Result<VerifyReport, ArchiveError>;
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub files_checked: u64,
    pub bytes_checked: u64,
    pub problems: Vec<VerifyProblem>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyProblem {
    pub path: String,
    pub problem: String,
}

/// Whether `dest` names a single-file backup.
pub fn is_tar_zst(dest: &Path) -> bool {
    dest.file_name()
        .is_some_and(|n| n.as_encoded_bytes().ends_with(TAR_ZST_SUFFIX.as_bytes()))
}

/// Creates a backup at `dest`: a `.tar.zst` file if the name ends so
/// (must not exist), else a directory (must not exist, or be empty;
/// created 0700).
pub fn create(dest: &Path) -> Result<Box<dyn ArchiveWriter>, ArchiveError> {
    if dest.as_os_str().is_empty() {
        return Err(ArchiveError::InvalidDestination {
            path: dest.to_path_buf(),
            reason: "empty path".into(),
        });
    }
    if is_tar_zst(dest) {
        Ok(Box::new(tarzst::create(dest)?))
    } else {
        Ok(Box::new(dir::create(dest)?))
    }
}

/// Opens a finished backup (directory or .tar.zst; a file is taken as a
/// .tar.zst whatever its name).
pub fn open(src: &Path) -> Result<Box<dyn ArchiveReader>, ArchiveError> {
    match std::fs::metadata(src) {
        Ok(m) if m.is_dir() => Ok(Box::new(dir::open(src)?)),
        Ok(m) if m.is_file() => Ok(Box::new(tarzst::open(src)?)),
        Ok(_) => Err(ArchiveError::NotABackup {
            path: src.to_path_buf(),
            reason: "neither a directory nor a regular file".into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ArchiveError::NotFound {
            path: src.to_path_buf(),
            reason: "no such file or directory".into(),
        }),
        Err(e) => Err(ArchiveError::io("cannot open", src, e)),
    }
}

fn created_by() -> String {
    format!("vss-requestor {}", env!("CARGO_PKG_VERSION"))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
