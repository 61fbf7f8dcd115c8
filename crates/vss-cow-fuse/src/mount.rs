//! The mount point: making it root-only, recovering it from a crashed
//! predecessor, and unmounting.
//!
//! A front end that died leaves its FUSE mount behind with no server: every
//! access to it fails with `ENOTCONN` ("Transport endpoint is not
//! connected"), and mounting on top of it would fail or stack. It is
//! detached lazily (loop devices may still hold files of it) before the new
//! mount is made.
//!
//! Unmounting runs umount(8): this crate has no `unsafe` code for
//! umount2(2), and fuser's own unmount gives up its handle on failure, so a
//! busy mount could not be retried.

use std::ffi::OsStr;
use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::FrontendError;

/// Makes `dir` ready to mount on: absolute, a real directory (created if
/// missing, parents 0700), not mounted on, root-owned, mode 0700. Detaches
/// a stale mount left by a crashed front end. Returns the absolute path.
pub(crate) fn prepare(dir: &Path) -> Result<PathBuf, FrontendError> {
    let dir = absolute(dir).map_err(|e| FrontendError::io(describe(dir), e))?;
    let context = || describe(&dir);
    detach_if_stale(&dir).map_err(|e| FrontendError::io(context(), e))?;
    make_dir(&dir).map_err(|e| FrontendError::io(context(), e))?;
    if is_mount_point(&dir).map_err(|e| FrontendError::io(context(), e))? {
        return Err(FrontendError::Busy {
            what: context(),
            detail: "something is already mounted there (another front end?)".into(),
        });
    }
    std::os::unix::fs::chown(&dir, Some(0), Some(0))
        .and_then(|()| fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)))
        .map_err(|e| FrontendError::io(context(), e))?;
    Ok(dir)
}

fn describe(dir: &Path) -> String {
    format!("mount directory {}", dir.display())
}

/// `dir` made absolute through its parent only: the directory itself may be
/// a stale mount that cannot be looked at.
fn absolute(dir: &Path) -> io::Result<PathBuf> {
    let name = dir
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "has no final name"))?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)?;
    Ok(parent.canonicalize()?.join(name))
}

fn detach_if_stale(dir: &Path) -> io::Result<()> {
    // Mounts can be stacked; a few rounds are plenty.
    for _ in 0..4 {
        match fs::symlink_metadata(dir) {
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
                tracing::warn!(dir = %dir.display(), "stale FUSE mount found; detaching it");
                unmount_lazy(dir)?;
            }
            _ => return Ok(()),
        }
    }
    Err(io::Error::other("still a stale mount after detaching it"))
}

fn make_dir(dir: &Path) -> io::Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(io::Error::other("exists and is not a directory")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => DirBuilder::new().mode(0o700).create(dir),
        Err(e) => Err(e),
    }
}

/// Whether something is mounted exactly at `dir` (an absolute path).
pub(crate) fn is_mount_point(dir: &Path) -> io::Result<bool> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    let mounted = mount_points(&mountinfo).any(|p| p == dir);
    Ok(mounted)
}

/// The mount points listed in a mountinfo text (the fifth field).
fn mount_points(mountinfo: &str) -> impl Iterator<Item = PathBuf> + '_ {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_octal)
}

/// Undoes the kernel's `\ooo` escapes of space, tab, newline and backslash.
fn unescape_octal(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let code = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match (bytes[i], code) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    PathBuf::from(OsStr::from_bytes(&out))
}

/// Unmounts `dir`; [`FrontendError::Busy`] when the kernel says it is.
pub(crate) fn unmount(dir: &Path) -> Result<(), FrontendError> {
    umount(&[], dir).map_err(|e| {
        if e.to_string().contains("busy") {
            FrontendError::Busy {
                what: describe(dir),
                detail: e.to_string(),
            }
        } else {
            FrontendError::io(format!("unmounting {}", dir.display()), e)
        }
    })
}

/// Detaches `dir` now; the kernel finishes unmounting when the last open
/// file of it is closed.
pub(crate) fn unmount_lazy(dir: &Path) -> io::Result<()> {
    umount(&["--lazy"], dir)
}

fn umount(options: &[&str], dir: &Path) -> io::Result<()> {
    // --internal-only: no umount.<type> helper; the kernel call is all
    // that is needed for FUSE.
    let out = Command::new("umount")
        .arg("--internal-only")
        .args(options)
        .arg(dir)
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run umount: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "umount failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
31 27 0:40 / /run/vss/with\\040space rw,nosuid - fuse vss-cow rw,user_id=0
32 27 0:41 / /tmp/back\\134slash rw - tmpfs tmpfs rw
";

    #[test]
    fn mount_points_are_unescaped() {
        let points: Vec<PathBuf> = mount_points(MOUNTINFO).collect();
        assert_eq!(
            points,
            [
                PathBuf::from("/proc"),
                PathBuf::from("/run/vss/with space"),
                PathBuf::from("/tmp/back\\slash"),
            ]
        );
    }

    #[test]
    fn unescape_leaves_plain_backslashes() {
        assert_eq!(unescape_octal("/a\\b"), PathBuf::from("/a\\b"));
        assert_eq!(unescape_octal("/a\\"), PathBuf::from("/a\\"));
        assert_eq!(unescape_octal("/a\\999"), PathBuf::from("/a\\999"));
        assert_eq!(unescape_octal("/a\\+12"), PathBuf::from("/a\\+12"));
        assert_eq!(unescape_octal("/a\\011b"), PathBuf::from("/a\tb"));
    }

    #[test]
    fn absolute_resolves_through_the_parent() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("x/y/mnt");
        let abs = absolute(&dir).unwrap();
        assert_eq!(abs, tmp.path().canonicalize().unwrap().join("x/y/mnt"));
        assert!(!abs.exists(), "only the parents are created");
        let mode = fs::metadata(tmp.path().join("x/y"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(absolute(Path::new("/")).is_err());
    }

    #[test]
    fn make_dir_refuses_files() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        fs::write(&file, b"").unwrap();
        assert!(make_dir(&file).is_err());
        make_dir(&tmp.path().join("d")).unwrap();
        make_dir(&tmp.path().join("d")).unwrap();
    }
}
