//! The system calls of the shadow copy service, and the only crate of the
//! project allowed to contain `unsafe`. Every unsafe block says why it is
//! sound (`// SAFETY:`); everything exported is safe to call.
//!
//! What is here:
//! - [`freeze`] / [`thaw`]: FIFREEZE and FITHAW, the hold step of providers
//!   whose snapshot is not atomic by itself;
//! - [`mounts`]: /proc/self/mountinfo, and the [`vss_types::Volume`] a path
//!   lies on;
//! - [`fs_uuid`], [`fs_magic`]: what filesystem a volume is;
//! - [`bind_mount_readonly`], [`unmount`], [`is_mount_point`]: exposing
//!   shadows;
//! - [`btrfs`]: read-only subvolume snapshots.
//!
//! Errors are `std::io::Error`s that keep the raw `errno` (callers map
//! `EBUSY`, `ENOENT`, `EROFS`… to VSS codes), so they carry no path: the
//! caller, which knows what it was doing, adds that.

pub mod btrfs;
mod mount;
pub mod mounts;
mod uuid;

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub use mount::{bind_mount_readonly, is_mount_point, unmount};
pub use uuid::fs_uuid;

/// Name of the directory, at the root of a volume, under which snapshot
/// providers keep their shadows (`<mount point>/.vss-shadows/{shadow id}`).
/// Mounts of anything below such a directory are exposed shadows, not
/// volumes, and [`mounts::list_volumes`] leaves them out.
pub const SHADOWS_DIR_NAME: &str = ".vss-shadows";

/// `statfs.f_type` values (`linux/magic.h`) of the filesystems the service
/// knows, as returned by [`fs_magic`].
pub mod magic {
    pub const BTRFS: i64 = 0x9123_683E;
    pub const EXT4: i64 = 0xEF53; // also ext2 and ext3
    pub const XFS: i64 = 0x5846_5342;
    pub const TMPFS: i64 = 0x0102_1994;
}

// `_IOWR('X', 119, int)` and `_IOWR('X', 120, int)` (linux/fs.h). libc does
// not export them, so they are built the way the kernel header builds them.
const FIFREEZE: libc::Ioctl = libc::_IOWR::<libc::c_int>(b'X' as u32, 119);
const FITHAW: libc::Ioctl = libc::_IOWR::<libc::c_int>(b'X' as u32, 120);

/// A path as the C string system calls take.
pub(crate) fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Opens a directory read-only (`O_RDONLY|O_DIRECTORY|O_CLOEXEC`): enough
/// for every ioctl here, and it cannot write to the filesystem.
pub(crate) fn open_dir(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOCTTY)
        .open(path)
}

/// `-1` → the `errno` as an error.
pub(crate) fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Freezes the filesystem mounted at `mount_point` (FIFREEZE): new writes
/// block, dirty data is flushed and the filesystem is made consistent on
/// disk until [`thaw`]. Needs `CAP_SYS_ADMIN`. A second freeze of the same
/// filesystem fails with `EBUSY`.
///
/// The mount point is opened read-only: freezing writes nothing but what
/// the filesystem itself flushes.
pub fn freeze(mount_point: &Path) -> io::Result<()> {
    let dir = open_dir(mount_point)?;
    // SAFETY: FIFREEZE takes no argument (the kernel ignores the third
    // parameter); `dir` is an open descriptor that outlives the call.
    check(unsafe { libc::ioctl(dir.as_raw_fd(), FIFREEZE, 0) })?;
    Ok(())
}

/// Thaws the filesystem mounted at `mount_point` (FITHAW). `Ok(true)` if it
/// was frozen, `Ok(false)` if it was not (the kernel answers `EINVAL`),
/// so callers can thaw unconditionally on every cleanup path.
pub fn thaw(mount_point: &Path) -> io::Result<bool> {
    let dir = open_dir(mount_point)?;
    // SAFETY: FITHAW takes no argument (the kernel ignores the third
    // parameter); `dir` is an open descriptor that outlives the call.
    match check(unsafe { libc::ioctl(dir.as_raw_fd(), FITHAW, 0) }) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The filesystem type magic of the filesystem holding `path`
/// (`statfs.f_type`, see [`magic`]), as an unsigned 32-bit value.
pub fn fs_magic(path: &Path) -> io::Result<i64> {
    let c = cstring(path)?;
    let mut st = MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `c` is a NUL-terminated string that lives across the call and
    // `st` is writable memory of the size statfs fills.
    check(unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) })?;
    // SAFETY: statfs returned 0, so it filled `st` completely.
    let st = unsafe { st.assume_init() };
    // f_type is signed on some ABIs (where btrfs's magic reads negative):
    // magics are 32-bit values, so keep the low 32 bits, unsigned.
    Ok(i64::from(st.f_type as u32))
}

/// Free bytes available to unprivileged users on the filesystem holding
/// `path` (`statvfs`: `f_bavail * f_frsize`).
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let c = cstring(path)?;
    let mut st = MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated string that lives across the call and
    // `st` is writable memory of the size statvfs fills.
    check(unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) })?;
    // SAFETY: statvfs returned 0, so it filled `st` completely.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between ABIs
    let bytes = (st.f_bavail as u64).saturating_mul(st.f_frsize as u64);
    Ok(bytes)
}

/// Makes SIGTERM, SIGINT and SIGHUP ignored by this process. The hold
/// watchdog uses it: when a service manager stops vssd's whole process
/// group, the watchdog must live long enough to thaw (it thaws as soon as
/// vssd's end of its pipe closes).
pub fn ignore_termination_signals() {
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: installing SIG_IGN has no handler code to run and touches
        // no memory of ours; the signal numbers are valid constants.
        unsafe {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_linux_fs_h() {
        // The values of the C macros on the asm-generic ioctl layout
        // (x86, arm, riscv…).
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        {
            assert_eq!(FIFREEZE, 0xC004_5877);
            assert_eq!(FITHAW, 0xC004_5878);
        }
    }

    #[test]
    fn fs_magic_of_proc() {
        // procfs: 0x9fa0.
        assert_eq!(fs_magic(Path::new("/proc")).unwrap(), 0x9fa0);
    }

    #[test]
    fn nul_in_path_is_invalid_input() {
        let e = fs_magic(Path::new("/a\0b")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn thaw_of_missing_path_is_not_found() {
        let e = thaw(Path::new("/nonexistent/vss-sys-test")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
