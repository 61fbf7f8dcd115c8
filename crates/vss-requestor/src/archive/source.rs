//! Reading what `add` stores: metadata (lstat, never followed), extended
//! attributes, and the content of a regular file, hashed as it is copied.

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use base64::Engine as _;

use super::error::FileError;
use super::manifest::{data_rel, EntryKind, ManifestEntry};

/// Copy buffer: large reads and writes keep per-byte costs down.
pub const BUF_SIZE: usize = 1 << 20;

/// A source ready to be stored.
pub enum Source {
    /// Entry filled in except `size` and `blake3` (files: set after the
    /// copy); `len` is the file's size when opened (fstat).
    Entry {
        entry: ManifestEntry,
        file: Option<File>,
        len: u64,
    },
    Skipped(String),
}

/// State shared by both writers: entries so far, and the checks on `add`.
pub struct Common {
    pub entries: Vec<ManifestEntry>,
    paths: HashSet<String>,
    pub bytes: u64,
    pub buf: Vec<u8>,
}

impl Common {
    pub fn new() -> Self {
        Common {
            entries: Vec::new(),
            paths: HashSet::new(),
            bytes: 0,
            buf: vec![0; BUF_SIZE],
        }
    }

    /// Checks the live path (clean, absolute, not stored yet) and returns
    /// its path relative to the data area.
    pub fn claim<'a>(&self, live_path: &'a str) -> Result<&'a str, FileError> {
        let rel = data_rel(live_path)
            .map_err(|r| FileError::new(live_path, format!("invalid live path: {r}")))?;
        if self.paths.contains(live_path) {
            return Err(FileError::new(live_path, "already stored in this backup"));
        }
        Ok(rel)
    }

    pub fn record(&mut self, entry: ManifestEntry) {
        self.bytes += entry.size;
        self.paths.insert(entry.path.clone());
        self.entries.push(entry);
    }
}

/// lstat `source`, open it if it is a regular file, read its xattrs.
pub fn open_source(
    live_path: &str,
    source: &Path,
    component: Option<&str>,
) -> Result<Source, FileError> {
    if source.to_str().is_none() {
        // A name that is not UTF-8 cannot be recorded as a string; the
        // caller's live path is then a lossy copy of it, so refuse.
        return Err(FileError::new(
            live_path,
            format!(
                "file name is not valid UTF-8 ({}); it cannot be recorded",
                source.to_string_lossy()
            ),
        ));
    }
    let meta = std::fs::symlink_metadata(source).map_err(|e| FileError::io(live_path, "", e))?;
    let ft = meta.file_type();
    let (kind, file, meta) = if ft.is_file() {
        let file = std::fs::OpenOptions::new()
            .read(true)
            // O_NOFOLLOW and O_NONBLOCK: if the file was swapped for a
            // symlink or a fifo since the lstat, fail instead of following
            // or hanging.
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(source)
            .map_err(|e| FileError::io(live_path, "", e))?;
        let meta = file
            .metadata()
            .map_err(|e| FileError::io(live_path, "", e))?;
        if !meta.is_file() {
            return Err(FileError::new(
                live_path,
                "changed into something else than a regular file while being read",
            ));
        }
        (EntryKind::File, Some(file), meta)
    } else if ft.is_dir() {
        (EntryKind::Dir, None, meta)
    } else if ft.is_symlink() {
        (EntryKind::Symlink, None, meta)
    } else {
        let what = if ft.is_fifo() {
            "fifo"
        } else if ft.is_socket() {
            "socket"
        } else if ft.is_char_device() {
            "character device"
        } else if ft.is_block_device() {
            "block device"
        } else {
            "unknown file type"
        };
        return Ok(Source::Skipped(format!("{what}: not stored")));
    };

    let target = if kind == EntryKind::Symlink {
        let t = std::fs::read_link(source).map_err(|e| FileError::io(live_path, "", e))?;
        Some(t.into_os_string().into_string().map_err(|t| {
            FileError::new(
                live_path,
                format!(
                    "symlink target is not valid UTF-8 ({}); it cannot be recorded",
                    t.to_string_lossy()
                ),
            )
        })?)
    } else {
        None
    };
    let xattrs = read_xattrs(live_path, source, file.as_ref())?;
    let entry = entry_from(live_path, kind, target, &meta, xattrs, component);
    Ok(Source::Entry {
        entry,
        file,
        len: meta.len(),
    })
}

fn entry_from(
    live_path: &str,
    kind: EntryKind,
    target: Option<String>,
    meta: &Metadata,
    xattrs: BTreeMap<String, String>,
    component: Option<&str>,
) -> ManifestEntry {
    ManifestEntry {
        path: live_path.to_string(),
        kind,
        target,
        size: 0,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        mtime_sec: meta.mtime(),
        mtime_nsec: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
        xattrs,
        blake3: None,
        component: component.map(str::to_string),
    }
}

/// All xattrs (user.*, security.*, trusted.* when root,
/// system.posix_acl_*), through the open file when there is one (no second
/// path lookup), else with the l* calls (never following a symlink).
fn read_xattrs(
    live_path: &str,
    source: &Path,
    file: Option<&File>,
) -> Result<BTreeMap<String, String>, FileError> {
    use xattr::FileExt as _;
    let names = match file {
        Some(f) => f.list_xattr(),
        None => xattr::list(source),
    };
    let names = match names {
        Ok(n) => n,
        // No xattr support on the filesystem: nothing to store.
        Err(e) if is_unsupported(&e) => return Ok(BTreeMap::new()),
        Err(e) => {
            return Err(FileError::io(
                live_path,
                "cannot list extended attributes",
                e,
            ))
        }
    };
    let mut out = BTreeMap::new();
    for name in names {
        let value = match file {
            Some(f) => f.get_xattr(&name),
            None => xattr::get(source, &name),
        };
        let Some(name) = name.to_str() else {
            return Err(FileError::new(
                live_path,
                format!(
                    "extended attribute name is not valid UTF-8 ({})",
                    name.to_string_lossy()
                ),
            ));
        };
        let value = match value {
            Ok(Some(v)) => v,
            // Removed between list and get.
            Ok(None) => continue,
            Err(e) => {
                return Err(FileError::io(
                    live_path,
                    &format!("cannot read extended attribute {name}"),
                    e,
                ))
            }
        };
        out.insert(
            name.to_string(),
            base64::engine::general_purpose::STANDARD.encode(value),
        );
    }
    Ok(out)
}

pub fn is_unsupported(e: &io::Error) -> bool {
    e.raw_os_error() == Some(nix::libc::EOPNOTSUPP)
}

/// Reads until `buf` is full or EOF; returns the bytes read. Retries EINTR.
pub fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Tells the kernel a large file is read once from start to end (more
/// readahead). Advice only: failures are ignored.
pub fn advise_sequential(file: &File, size: u64) {
    use std::os::fd::AsRawFd;
    if size > BUF_SIZE as u64 {
        let _ = nix::fcntl::posix_fadvise(
            file.as_raw_fd(),
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL,
        );
    }
}

pub fn hex(hash: &blake3::Hash) -> String {
    hash.to_hex().to_string()
}
