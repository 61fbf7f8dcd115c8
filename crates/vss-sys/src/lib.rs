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
//! - [`btrfs`]: read-only subvolume snapshots;
//! - [`mount_fs`], [`unmount_with`]: mounting a filesystem (a shadow's
//!   block device) and lazy unmounts;
//! - [`loopdev`]: loop devices, to mount images and copy-on-write views;
//! - [`fsmap`]: where a filesystem's free space lies on its device
//!   (`FS_IOC_GETFSMAP`), and where a file's data lies (`FS_IOC_FIEMAP`);
//! - [`probe`]: what filesystem a device or image holds, from its
//!   superblock;
//! - [`block_device_size`], [`set_io_flusher`]: for the process that serves
//!   a loop device's backing file;
//! - [`pread_cached`]: a read that takes only what the page cache holds.
//!
//! Errors are `std::io::Error`s that keep the raw `errno` (callers map
//! `EBUSY`, `ENOENT`, `EROFS`… to VSS codes), so they carry no path: the
//! caller, which knows what it was doing, adds that.

pub mod btrfs;
pub mod fsmap;
pub mod loopdev;
mod mount;
pub mod mounts;
pub mod probe;
mod uuid;

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

pub use mount::{bind_mount_readonly, is_mount_point, mount_fs, unmount, unmount_with, MountFlags};
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
// `_IOR(0x12, 114, size_t)` (linux/fs.h).
const BLKGETSIZE64: libc::Ioctl = libc::_IOR::<libc::size_t>(0x12, 114);
// linux/prctl.h (Linux ≥ 5.6); libc exports it for Android only.
const PR_SET_IO_FLUSHER: libc::c_int = 57;

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
    Ok(magic_of(&unsafe { st.assume_init() }))
}

/// The filesystem type magic in `st`. f_type is signed on some ABIs (where
/// btrfs's magic reads negative): magics are 32-bit values, so keep the
/// low 32 bits, unsigned.
fn magic_of(st: &libc::statfs) -> i64 {
    i64::from(st.f_type as u32)
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

/// `FS_NOCOW_FL` (linux/fs.h): the file is overwritten in place.
const FS_NOCOW_FL: libc::c_int = 0x0080_0000;

/// Marks an empty file on btrfs "no copy-on-write" (`chattr +C`), so that
/// overwriting space it already holds needs no new space: btrfs otherwise
/// writes every overwrite elsewhere and can fail it with `ENOSPC` on a
/// full filesystem. `Ok(true)` if the flag is set now, `Ok(false)` on any
/// other filesystem (they overwrite in place anyway). btrfs takes the flag
/// only while the file is empty.
pub fn set_nocow_if_btrfs(file: &File) -> io::Result<bool> {
    let mut st = MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `file` is an open descriptor that outlives the call and `st`
    // is writable memory of the size fstatfs fills.
    check(unsafe { libc::fstatfs(file.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstatfs returned 0, so it filled `st` completely.
    if magic_of(&unsafe { st.assume_init() }) != magic::BTRFS {
        return Ok(false);
    }
    let mut flags = inode_flags(file)?;
    if flags & FS_NOCOW_FL == 0 {
        flags |= FS_NOCOW_FL;
        // SAFETY: FS_IOC_SETFLAGS reads one int through the pointer, which
        // points at `flags`, alive across the call.
        check(unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                libc::FS_IOC_SETFLAGS,
                &flags as *const libc::c_int,
            )
        })?;
    }
    Ok(true)
}

/// Whether `file` carries `FS_NOCOW_FL` (see [`set_nocow_if_btrfs`]).
pub fn is_nocow(file: &File) -> io::Result<bool> {
    Ok(inode_flags(file)? & FS_NOCOW_FL != 0)
}

/// The inode flags of `file` (`FS_IOC_GETFLAGS`, what `lsattr` shows).
fn inode_flags(file: &File) -> io::Result<libc::c_int> {
    // The kernel reads and writes an int, whatever the request number's
    // size says.
    let mut flags: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one int through the pointer, which
    // points at `flags`, alive across the call.
    check(unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            libc::FS_IOC_GETFLAGS,
            &mut flags as *mut libc::c_int,
        )
    })?;
    Ok(flags)
}

/// The size in bytes of `path`: of the device for a block device
/// (`BLKGETSIZE64`), the length for a regular file (symlinks followed).
/// Anything else is `InvalidInput`.
pub fn block_device_size(path: &Path) -> io::Result<u64> {
    let file = File::open(path)?;
    let md = file.metadata()?;
    if md.is_file() {
        return Ok(md.len());
    }
    if !md.file_type().is_block_device() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "neither a block device nor a regular file",
        ));
    }
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points
    // to a live u64; `file` stays open across the call.
    check(unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64, &mut size as *mut u64) })?;
    Ok(size)
}

/// Marks this process as an I/O flusher (`PR_SET_IO_FLUSHER`, Linux ≥ 5.6;
/// needs `CAP_SYS_RESOURCE`). The flag belongs to the calling thread and is
/// inherited by the threads and processes it creates afterwards, so call it
/// early, before the server starts its worker threads.
///
/// Why: a process that serves the backing file of a loop device (the FUSE
/// server of a copy-on-write view) is on the write-back path of that
/// device. Under memory pressure the kernel reclaims memory by writing
/// dirty pages back, possibly pages of the loop device; if the server,
/// while handling that very write, allocates memory and the allocation
/// enters reclaim that waits on the same write-back, neither can progress:
/// a deadlock. With the flag set, the server's allocations are made as
/// `GFP_NOIO` (reclaim never waits on I/O for it) and it is not throttled
/// as a dirtier, which is what the kernel's own flusher threads and the
/// loop driver get.
pub fn set_io_flusher() -> io::Result<()> {
    // SAFETY: prctl(2) with integer arguments only; PR_SET_IO_FLUSHER
    // reads the second one and requires the others to be zero.
    check(unsafe {
        libc::prctl(
            PR_SET_IO_FLUSHER,
            1 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    })?;
    Ok(())
}

/// Reads from `file` at `offset` only what the page cache already holds
/// (`preadv2` with `RWF_NOWAIT`), so a caller can learn that a read would
/// wait for the disk and start the reads it needs next before waiting.
/// Returns the bytes read: fewer than `buf.len()` when the rest is not
/// cached (0 at the end of the file); `EAGAIN` when nothing at `offset` is.
/// Filesystems without support answer `EOPNOTSUPP`.
pub fn pread_cached(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let offset =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: the one iovec points to `buf`, which is valid for writes of
    // `buf.len()` bytes and borrowed mutably for the whole call; the fd is
    // open for as long as `file` lives.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset, libc::RWF_NOWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
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
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn blkgetsize64_matches_linux_fs_h() {
        assert_eq!(BLKGETSIZE64, 0x8008_1272);
    }

    #[test]
    fn block_device_size_of_files() {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(12345).unwrap();
        assert_eq!(block_device_size(f.path()).unwrap(), 12345);
        let e = block_device_size(Path::new("/dev/null")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        let e = block_device_size(Path::new("/proc")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    }

    #[test]
    fn pread_cached_reads_what_the_page_cache_holds() {
        use std::io::Write;
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&[7u8; 8192]).unwrap();
        let file = f.as_file();
        // Just written: the pages are cached.
        let mut buf = [0u8; 4096];
        match pread_cached(file, &mut buf, 4096) {
            Ok(n) => {
                assert_eq!(n, 4096);
                assert_eq!(buf, [7u8; 4096]);
            }
            // A filesystem without RWF_NOWAIT for buffered reads.
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP), "{e}"),
        }
        // At the end of the file: nothing to read.
        assert_eq!(pread_cached(file, &mut buf, 8192).unwrap_or(0), 0);
        let e = pread_cached(file, &mut buf, u64::MAX).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    }

    #[test]
    fn nocow_is_left_alone_off_btrfs() {
        let f = tempfile::NamedTempFile::new().unwrap();
        if fs_magic(f.path()).unwrap() != magic::BTRFS {
            assert!(!set_nocow_if_btrfs(f.as_file()).unwrap());
        }
    }

    #[test]
    fn priv_nocow_is_set_on_btrfs() {
        if !vss_testkit::privileged("priv_nocow_is_set_on_btrfs") {
            return;
        }
        let fs = vss_testkit::LoopFs::new("btrfs", 128);
        let f = File::create_new(fs.mount_point.join("data")).unwrap();
        assert!(!is_nocow(&f).unwrap());
        assert!(set_nocow_if_btrfs(&f).unwrap());
        assert!(is_nocow(&f).unwrap());
        // Again: nothing changes.
        assert!(set_nocow_if_btrfs(&f).unwrap());
        assert!(is_nocow(&f).unwrap());
    }

    /// Whether this process has `CAP_SYS_RESOURCE` in its effective set.
    fn has_cap_sys_resource() -> bool {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let eff = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .map(|h| u64::from_str_radix(h.trim(), 16).unwrap())
            .unwrap();
        eff & (1 << 24) != 0 // CAP_SYS_RESOURCE (linux/capability.h)
    }

    #[test]
    fn priv_set_io_flusher() {
        if !vss_testkit::privileged("priv_set_io_flusher") {
            return;
        }
        // In a thread of its own: the flag is per thread, and this one
        // ends with the test.
        std::thread::spawn(|| {
            let r = set_io_flusher();
            if !has_cap_sys_resource() {
                // Root without CAP_SYS_RESOURCE (some containers).
                let e = r.unwrap_err();
                assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
                return;
            }
            r.unwrap();
            // PR_GET_IO_FLUSHER (58) reads it back.
            // SAFETY: prctl(2) with integer arguments only.
            let got = unsafe { libc::prctl(58, 0, 0, 0, 0) };
            assert_eq!(got, 1);
        })
        .join()
        .unwrap();
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
