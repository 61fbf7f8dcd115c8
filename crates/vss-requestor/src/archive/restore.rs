//! Writing entries back to a target path, shared by both archive kinds.
//!
//! Order (see `extract` in dir.rs and tarzst.rs): directories are created
//! first (owner-writable, so content can go in), then files, then
//! symlinks (last, so that no file is ever written through a symlink the
//! backup itself created), then the directories' metadata in reverse
//! order (after their content, so their mtimes stick).
//!
//! A file or symlink is restored atomically: written to a temporary name
//! beside the target, checked, given its metadata, renamed over the
//! target. Any failure removes the temporary and leaves the target as it
//! was.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;

use super::error::FileError;
use super::manifest::{EntryKind, ManifestEntry};
use super::source::{hex, BUF_SIZE};

/// The `done` callback of `extract`.
pub type Done<'a> = dyn FnMut(&ManifestEntry, &Path, Result<(), FileError>) + 'a;

pub struct Restorer {
    is_root: bool,
    counter: u64,
    buf: Vec<u8>,
    /// One open directory per target filesystem, for the final syncfs.
    filesystems: HashMap<u64, File>,
}

fn target_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// A removal guard for the temporary name: removed unless disarmed.
struct Temp<'a> {
    path: &'a Path,
    armed: bool,
}

impl Drop for Temp<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(self.path);
        }
    }
}

impl Restorer {
    pub fn new() -> Self {
        Restorer {
            is_root: nix::unistd::geteuid().is_root(),
            counter: 0,
            buf: vec![0; BUF_SIZE],
            filesystems: HashMap::new(),
        }
    }

    fn temp_name(&mut self, target: &Path) -> Result<PathBuf, FileError> {
        let parent = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .ok_or_else(|| FileError::new(target_str(target), "target has no parent directory"))?;
        self.counter += 1;
        Ok(parent.join(format!(
            ".vss-restore.{}.{}.tmp",
            std::process::id(),
            self.counter
        )))
    }

    /// Creates the target's parent directories if missing (mode 0755 less
    /// umask; entries of the backup get their own metadata later) and
    /// remembers the filesystem for the final sync.
    fn prepare_parent(&mut self, target: &Path) -> Result<(), FileError> {
        let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) else {
            return Ok(());
        };
        match std::fs::metadata(parent) {
            Ok(m) if m.is_dir() => {
                self.remember_fs(parent, m.dev());
                Ok(())
            }
            Ok(_) => Err(FileError::new(
                target_str(target),
                format!("{} is not a directory", parent.display()),
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(parent)
                    .map_err(|e| {
                        FileError::io(
                            target_str(target),
                            &format!("cannot create {}", parent.display()),
                            e,
                        )
                    })?;
                if let Ok(m) = std::fs::metadata(parent) {
                    self.remember_fs(parent, m.dev());
                }
                Ok(())
            }
            Err(e) => Err(FileError::io(
                target_str(target),
                &format!("cannot reach {}", parent.display()),
                e,
            )),
        }
    }

    fn remember_fs(&mut self, dir: &Path, dev: u64) {
        if let std::collections::hash_map::Entry::Vacant(v) = self.filesystems.entry(dev) {
            if let Ok(f) = File::open(dir) {
                v.insert(f);
            }
        }
    }

    /// Makes sure a directory exists at `target` (created 0700 so that its
    /// content can be written even if its final mode is read-only).
    pub fn make_dir(&mut self, target: &Path) -> Result<(), FileError> {
        match std::fs::symlink_metadata(target) {
            Ok(m) if m.is_dir() => return Ok(()),
            Ok(_) => {
                return Err(FileError::new(
                    target_str(target),
                    "exists and is not a directory; not replaced",
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(FileError::io(target_str(target), "", e)),
        }
        self.prepare_parent(target)?;
        match std::fs::DirBuilder::new().mode(0o700).create(target) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && target.is_dir() => Ok(()),
            Err(e) => Err(FileError::io(
                target_str(target),
                "cannot create directory",
                e,
            )),
        }
    }

    /// Applies a directory's metadata (after its content).
    pub fn finish_dir(&mut self, entry: &ManifestEntry, target: &Path) -> Result<(), FileError> {
        let t = target_str(target);
        if self.is_root {
            std::os::unix::fs::lchown(target, Some(entry.uid), Some(entry.gid))
                .map_err(|e| FileError::io(&t, "cannot set owner", e))?;
        }
        // Mode after owner: chown clears the setgid bit.
        std::fs::set_permissions(target, std::fs::Permissions::from_mode(entry.mode))
            .map_err(|e| FileError::io(&t, "cannot set mode", e))?;
        self.set_xattrs(entry, &t, |n, v| xattr::set(target, n, v))?;
        set_mtime_path(target, entry).map_err(|e| FileError::io(&t, "cannot set mtime", e))
    }

    /// Restores a file from `content`, which must yield exactly the stored
    /// bytes. Checked against size and BLAKE3 before it replaces anything.
    pub fn restore_file(
        &mut self,
        entry: &ManifestEntry,
        target: &Path,
        content: &mut dyn Read,
    ) -> Result<(), FileError> {
        let t = target_str(target);
        let replacing = refuse_dir(target, &t)?;
        self.prepare_parent(target)?;
        let tmp = self.temp_name(target)?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(|e| FileError::io(&t, "cannot create temporary file", e))?;
        let mut guard = Temp {
            path: &tmp,
            armed: true,
        };

        let mut hasher = blake3::Hasher::new();
        let mut total: u64 = 0;
        loop {
            let n = match content.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(FileError::io(&t, "cannot read from the backup", e)),
            };
            hasher.update(&self.buf[..n]);
            file.write_all(&self.buf[..n])
                .map_err(|e| FileError::io(&t, "cannot write", e))?;
            total += n as u64;
        }
        let hash = hex(&hasher.finalize());
        if total != entry.size || Some(&hash) != entry.blake3.as_ref() {
            return Err(FileError::new(
                &t,
                format!(
                    "the backup's copy is damaged ({} bytes, BLAKE3 {}; the manifest says {} bytes, {}); not restored",
                    total,
                    short(&hash),
                    entry.size,
                    short(entry.blake3.as_deref().unwrap_or("-"))
                ),
            ));
        }

        if self.is_root {
            std::os::unix::fs::fchown(&file, Some(entry.uid), Some(entry.gid))
                .map_err(|e| FileError::io(&t, "cannot set owner", e))?;
        }
        file.set_permissions(std::fs::Permissions::from_mode(entry.mode))
            .map_err(|e| FileError::io(&t, "cannot set mode", e))?;
        {
            use xattr::FileExt as _;
            self.set_xattrs(entry, &t, |n, v| file.set_xattr(n, v))?;
        }
        nix::sys::stat::futimens(file.as_raw_fd(), &TimeSpec::UTIME_OMIT, &mtime_of(entry))
            .map_err(|e| FileError::io(&t, "cannot set mtime", e.into()))?;
        if replacing {
            // The old content is lost at the rename: make the new content
            // durable first. New files are synced by the final syncfs.
            file.sync_all()
                .map_err(|e| FileError::io(&t, "cannot sync", e))?;
        }
        drop(file);
        std::fs::rename(&tmp, target)
            .map_err(|e| FileError::io(&t, "cannot rename into place", e))?;
        guard.armed = false;
        Ok(())
    }

    pub fn restore_symlink(
        &mut self,
        entry: &ManifestEntry,
        target: &Path,
    ) -> Result<(), FileError> {
        let t = target_str(target);
        let Some(link) = entry.target.as_deref() else {
            return Err(FileError::new(
                &t,
                "symlink without a target in the manifest",
            ));
        };
        refuse_dir(target, &t)?;
        self.prepare_parent(target)?;
        let tmp = self.temp_name(target)?;
        std::os::unix::fs::symlink(link, &tmp)
            .map_err(|e| FileError::io(&t, "cannot create symlink", e))?;
        let mut guard = Temp {
            path: &tmp,
            armed: true,
        };
        if self.is_root {
            std::os::unix::fs::lchown(&tmp, Some(entry.uid), Some(entry.gid))
                .map_err(|e| FileError::io(&t, "cannot set owner", e))?;
        }
        self.set_xattrs(entry, &t, |n, v| xattr::set(&tmp, n, v))?;
        set_mtime_path(&tmp, entry).map_err(|e| FileError::io(&t, "cannot set mtime", e))?;
        std::fs::rename(&tmp, target)
            .map_err(|e| FileError::io(&t, "cannot rename into place", e))?;
        guard.armed = false;
        Ok(())
    }

    /// Sets every xattr of the entry. Namespaces an unprivileged process
    /// may not write (trusted.*, security.*) are left out, with a log line,
    /// when not running as root; any other failure fails the entry.
    fn set_xattrs(
        &self,
        entry: &ManifestEntry,
        t: &str,
        mut set: impl FnMut(&str, &[u8]) -> io::Result<()>,
    ) -> Result<(), FileError> {
        for (name, value) in &entry.xattrs {
            let value = base64::engine::general_purpose::STANDARD
                .decode(value)
                .map_err(|_| {
                    FileError::new(
                        t,
                        format!("extended attribute {name}: value is not base64 in the manifest"),
                    )
                })?;
            if let Err(e) = set(name, &value) {
                let privileged = name.starts_with("trusted.") || name.starts_with("security.");
                if !self.is_root && privileged && e.raw_os_error() == Some(nix::libc::EPERM) {
                    tracing::warn!(target = t, xattr = %name, "not restored: needs root");
                    continue;
                }
                return Err(FileError::io(
                    t,
                    &format!("cannot set extended attribute {name}"),
                    e,
                ));
            }
        }
        Ok(())
    }

    /// Makes everything restored durable: one syncfs per target
    /// filesystem instead of an fsync per file.
    pub fn sync(&mut self) {
        for (_, dir) in self.filesystems.drain() {
            if let Err(e) = nix::unistd::syncfs(dir.as_raw_fd()) {
                tracing::warn!(error = %e, "syncfs after restore failed");
            }
        }
    }
}

/// Refuses to replace a directory by a file or symlink; returns whether
/// something (that is not a directory) is there.
fn refuse_dir(target: &Path, t: &str) -> Result<bool, FileError> {
    match std::fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() => Err(FileError::new(t, "a directory is in the way; not replaced")),
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(FileError::io(t, "", e)),
    }
}

fn short(h: &str) -> &str {
    h.get(..16).unwrap_or(h)
}

fn mtime_of(entry: &ManifestEntry) -> TimeSpec {
    TimeSpec::new(entry.mtime_sec, i64::from(entry.mtime_nsec))
}

fn set_mtime_path(path: &Path, entry: &ManifestEntry) -> io::Result<()> {
    utimensat(
        None,
        path,
        &TimeSpec::UTIME_OMIT,
        &mtime_of(entry),
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

/// Calls `select` for every entry, in manifest order, before anything is
/// written.
pub fn select_all(
    entries: &[ManifestEntry],
    select: &mut dyn FnMut(&ManifestEntry) -> Option<PathBuf>,
) -> Vec<Option<PathBuf>> {
    entries.iter().map(select).collect()
}

/// Phase 1: directories, in manifest order. Returns which were created
/// (their metadata is applied in `finish_dirs`); failures are reported
/// at once.
pub fn make_dirs(
    r: &mut Restorer,
    entries: &[ManifestEntry],
    targets: &[Option<PathBuf>],
    done: &mut Done<'_>,
) -> Vec<bool> {
    let mut ok = vec![false; entries.len()];
    for (i, (e, t)) in entries.iter().zip(targets).enumerate() {
        if let (EntryKind::Dir, Some(t)) = (e.kind, t) {
            match r.make_dir(t) {
                Ok(()) => ok[i] = true,
                Err(err) => done(e, t, Err(err)),
            }
        }
    }
    ok
}

/// Phase 3: symlinks.
pub fn make_symlinks(
    r: &mut Restorer,
    entries: &[ManifestEntry],
    targets: &[Option<PathBuf>],
    done: &mut Done<'_>,
) {
    for (e, t) in entries.iter().zip(targets) {
        if let (EntryKind::Symlink, Some(t)) = (e.kind, t) {
            let res = r.restore_symlink(e, t);
            done(e, t, res);
        }
    }
}

/// Phase 4: directory metadata, deepest (last listed) first.
pub fn finish_dirs(
    r: &mut Restorer,
    entries: &[ManifestEntry],
    targets: &[Option<PathBuf>],
    created: &[bool],
    done: &mut Done<'_>,
) {
    for i in (0..entries.len()).rev() {
        if let (true, Some(t)) = (created[i], &targets[i]) {
            let res = r.finish_dir(&entries[i], t);
            done(&entries[i], t, res);
        }
    }
}
