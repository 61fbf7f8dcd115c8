//! Read-only bind mounts (how shadows are exposed), mounting a filesystem
//! from a device (a shadow's loop device), and unmounting.

use std::ffi::{CStr, CString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::ptr;

use crate::{check, cstring, mounts};

// linux/mount.h; libc does not export these.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;

/// `struct mount_attr` (linux/mount.h, `MOUNT_ATTR_SIZE_VER0` = 32).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const EMPTY: &CStr = c"";

/// Bind-mounts `source` (a directory) on `target` (an existing directory),
/// read-only, `nosuid` and `nodev`, not recursively (mounts below `source`
/// are not carried along).
///
/// With the new mount API (Linux ≥ 5.12) the mount is made read-only while
/// still detached and then attached, so it is never writable, not even for
/// an instant, and copies propagated to peer mount namespaces are read-only
/// too. On older kernels it falls back to `MS_BIND` followed by a read-only
/// remount; if that remount fails the bind mount is removed again, so a
/// writable bind mount is never left behind.
pub fn bind_mount_readonly(source: &Path, target: &Path) -> io::Result<()> {
    match bind_readonly_detached(source, target) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EPERM)) => {
            // ENOSYS: kernel too old. EPERM: a seccomp filter that does not
            // know the new calls; the classic calls will say if we truly
            // lack the privilege.
            bind_readonly_classic(source, target)
        }
        other => other,
    }
}

fn bind_readonly_detached(source: &Path, target: &Path) -> io::Result<()> {
    let src = cstring(source)?;
    let tgt = cstring(target)?;
    // SAFETY: open_tree(2) with a NUL-terminated path that outlives the
    // call and plain integer flags; it returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            src.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(fd).map_err(|_| io::Error::other("open_tree: bad fd"))?;
    // SAFETY: open_tree succeeded, so `fd` is a fresh descriptor nobody
    // else owns; OwnedFd closes it (and so drops the detached mount if it
    // is never attached).
    let tree = unsafe { OwnedFd::from_raw_fd(fd) };

    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr(2) on a descriptor we own, an empty
    // NUL-terminated path with AT_EMPTY_PATH, and a pointer to a live
    // `struct mount_attr` whose size is passed alongside.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            EMPTY.as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: move_mount(2) of the detached tree we own onto a
    // NUL-terminated target path that outlives the call. Without
    // MOVE_MOUNT_T_SYMLINKS a symlink at `target` is not followed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            EMPTY.as_ptr(),
            libc::AT_FDCWD,
            tgt.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The pre-5.12 way: bind, then remount the bind read-only.
pub(crate) fn bind_readonly_classic(source: &Path, target: &Path) -> io::Result<()> {
    let src = cstring(source)?;
    let tgt = cstring(target)?;
    // SAFETY: mount(2) with NUL-terminated paths that outlive the call;
    // fstype and data may be NULL for a bind mount.
    check(unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            ptr::null(),
            libc::MS_BIND,
            ptr::null(),
        )
    })?;
    let flags =
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
    // SAFETY: as above; a remount needs no source, fstype or data.
    let remount =
        check(unsafe { libc::mount(ptr::null(), tgt.as_ptr(), ptr::null(), flags, ptr::null()) });
    if let Err(e) = remount {
        // Never leave a writable view of a shadow behind.
        let _ = unmount(target);
        return Err(e);
    }
    Ok(())
}

/// Unmounts `target` (`umount2` with `UMOUNT_NOFOLLOW`). A busy mount is an
/// error (`EBUSY`), never lazily detached: the caller decides (see
/// [`unmount_with`]).
pub fn unmount(target: &Path) -> io::Result<()> {
    unmount_with(target, false)
}

/// Unmounts `target` (`umount2` with `UMOUNT_NOFOLLOW`); with `lazy`,
/// `MNT_DETACH`: the mount disappears from the namespace at once even if it
/// is busy, and the filesystem is shut down when its last user goes away
/// (so a loop device under it stays in use until then).
pub fn unmount_with(target: &Path, lazy: bool) -> io::Result<()> {
    let tgt = cstring(target)?;
    let mut flags = libc::UMOUNT_NOFOLLOW;
    if lazy {
        flags |= libc::MNT_DETACH;
    }
    // SAFETY: umount2(2) with a NUL-terminated path that outlives the call.
    check(unsafe { libc::umount2(tgt.as_ptr(), flags) })?;
    Ok(())
}

/// Per-mount flags for [`mount_fs`]; all off by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MountFlags {
    /// `MS_RDONLY`. The filesystem is mounted read-only; for ext4 and xfs
    /// that still replays a dirty journal unless `data` says `noload` /
    /// `norecovery`.
    pub read_only: bool,
    /// `MS_NOSUID`.
    pub nosuid: bool,
    /// `MS_NODEV`.
    pub nodev: bool,
    /// `MS_NOEXEC`.
    pub noexec: bool,
}

impl MountFlags {
    /// The `mountflags` argument of mount(2).
    fn bits(self) -> libc::c_ulong {
        let mut bits = 0;
        for (on, bit) in [
            (self.read_only, libc::MS_RDONLY),
            (self.nosuid, libc::MS_NOSUID),
            (self.nodev, libc::MS_NODEV),
            (self.noexec, libc::MS_NOEXEC),
        ] {
            if on {
                bits |= bit;
            }
        }
        bits
    }
}

/// Mounts the `fstype` filesystem on `source` (a block device) at `target`
/// (an existing directory) with `flags` and the filesystem-specific options
/// `data` (comma-separated, as after `-o`; may be empty). Needs
/// `CAP_SYS_ADMIN`. Errors are mount(2)'s: `EBUSY` if `source` is already
/// mounted or in use, `EINVAL` for a bad superblock or option, `ENODEV` for
/// an unknown `fstype`…
pub fn mount_fs(
    source: &Path,
    target: &Path,
    fstype: &str,
    flags: MountFlags,
    data: &str,
) -> io::Result<()> {
    let src = cstring(source)?;
    let tgt = cstring(target)?;
    let fstype = CString::new(fstype)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "fstype contains a NUL byte"))?;
    let data = if data.is_empty() {
        None
    } else {
        Some(CString::new(data).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "mount data contains a NUL byte",
            )
        })?)
    };
    let data_ptr = data
        .as_ref()
        .map_or(ptr::null(), |d| d.as_ptr().cast::<libc::c_void>());
    // SAFETY: mount(2) with NUL-terminated source, target and fstype strings
    // and a NUL-terminated data string (or NULL), all of which outlive the
    // call.
    check(unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fstype.as_ptr(),
            flags.bits(),
            data_ptr,
        )
    })?;
    Ok(())
}

/// Whether `path` is the root of a mount (a symlink never is: it is not
/// followed). Uses `statx`'s `STATX_ATTR_MOUNT_ROOT` (Linux ≥ 5.8), else
/// the mount table; unlike comparing `st_dev` with the parent, both see
/// bind mounts within one filesystem.
pub fn is_mount_point(path: &Path) -> io::Result<bool> {
    let c = cstring(path)?;
    let mut stx = MaybeUninit::<libc::statx>::uninit();
    // SAFETY: statx(2) with a NUL-terminated path that outlives the call and
    // `stx` writable memory of the size statx fills.
    check(unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW | libc::AT_NO_AUTOMOUNT,
            libc::STATX_TYPE,
            stx.as_mut_ptr(),
        )
    })?;
    // SAFETY: statx returned 0, so it filled `stx`.
    let stx = unsafe { stx.assume_init() };
    let bit = libc::STATX_ATTR_MOUNT_ROOT as u64;
    if stx.stx_attributes_mask & bit != 0 {
        return Ok(stx.stx_attributes & bit != 0);
    }
    if u32::from(stx.stx_mode) & libc::S_IFMT == libc::S_IFLNK {
        return Ok(false);
    }
    let canonical = std::fs::canonicalize(path)?;
    Ok(mounts::mountinfo()?
        .iter()
        .any(|m| m.mount_point == canonical))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_attr_is_ver0_size() {
        assert_eq!(std::mem::size_of::<MountAttr>(), 32);
    }

    #[test]
    fn proc_is_a_mount_point_and_its_subdir_is_not() {
        assert!(is_mount_point(Path::new("/proc")).unwrap());
        assert!(is_mount_point(Path::new("/")).unwrap());
        assert!(!is_mount_point(Path::new("/proc/self/fd")).unwrap_or(false));
    }

    /// Bind-mounts a directory of the root filesystem with each method and
    /// checks the view is read-only while the source stays writable.
    fn bind_is_readonly(test: &str, classic: bool) {
        if !vss_testkit::privileged(test) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let tgt = dir.path().join("tgt");
        std::fs::create_dir(&src).unwrap();
        std::fs::create_dir(&tgt).unwrap();
        std::fs::write(src.join("f"), b"data").unwrap();
        if classic {
            bind_readonly_classic(&src, &tgt).unwrap();
        } else {
            bind_readonly_detached(&src, &tgt).unwrap();
        }
        let guard = vss_testkit::MountGuard::new(&tgt);
        assert!(is_mount_point(&tgt).unwrap());
        assert!(!is_mount_point(&src).unwrap());
        assert_eq!(std::fs::read(tgt.join("f")).unwrap(), b"data");
        let e = std::fs::write(tgt.join("g"), b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
        std::fs::write(src.join("g"), b"x").unwrap();
        let m = mounts::mountinfo()
            .unwrap()
            .into_iter()
            .find(|m| m.mount_point == tgt)
            .unwrap();
        for opt in ["ro", "nosuid", "nodev"] {
            assert!(
                m.options.split(',').any(|o| o == opt),
                "{opt} in {}",
                m.options
            );
        }
        unmount(&tgt).unwrap();
        guard.disarm();
        assert!(!is_mount_point(&tgt).unwrap());
        let e = unmount(&tgt).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    }

    #[test]
    fn mount_flags_bits() {
        assert_eq!(MountFlags::default().bits(), 0);
        let all = MountFlags {
            read_only: true,
            nosuid: true,
            nodev: true,
            noexec: true,
        };
        assert_eq!(
            all.bits(),
            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC
        );
        let ro = MountFlags {
            read_only: true,
            ..Default::default()
        };
        assert_eq!(ro.bits(), libc::MS_RDONLY);
    }

    #[test]
    fn mount_fs_rejects_nul_bytes() {
        let d = Path::new("/nonexistent");
        for (fstype, data) in [("e\0xt4", ""), ("ext4", "a\0b")] {
            let e = mount_fs(d, d, fstype, MountFlags::default(), data).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        }
    }

    /// Mounts an ext4 image through a loop device with every flag and an
    /// option, checks the mount table, then shows that a busy mount needs
    /// a lazy unmount.
    #[test]
    fn priv_mount_fs_and_lazy_unmount() {
        if !vss_testkit::privileged("priv_mount_fs_and_lazy_unmount") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        std::fs::File::create(&img)
            .unwrap()
            .set_len(32 << 20)
            .unwrap();
        vss_testkit::run("mkfs.ext4", &["-F", "-q", img.to_str().unwrap()]);
        let dev = crate::loopdev::attach(&img, &crate::loopdev::LoopOptions::default()).unwrap();
        let dev_path = dev.path().to_path_buf();
        drop(dev);
        struct Detach(std::path::PathBuf);
        impl Drop for Detach {
            fn drop(&mut self) {
                let _ = crate::loopdev::detach(&self.0);
            }
        }
        let _detach = Detach(dev_path.clone());

        let flags = MountFlags {
            read_only: true,
            nosuid: true,
            nodev: true,
            noexec: true,
        };
        mount_fs(&dev_path, &mnt, "ext4", flags, "noload").unwrap();
        let guard = vss_testkit::MountGuard::new(&mnt);
        let m = mounts::mountinfo()
            .unwrap()
            .into_iter()
            .find(|m| m.mount_point == mnt)
            .expect("the mount is in the table");
        assert_eq!(m.fs_type, "ext4");
        assert_eq!(Path::new(&m.source), dev_path);
        for opt in ["ro", "nosuid", "nodev", "noexec"] {
            assert!(
                m.options.split(',').any(|o| o == opt),
                "{opt} in {}",
                m.options
            );
        }
        assert!(
            m.super_options.split(',').any(|o| o == "norecovery"),
            "noload in {}",
            m.super_options
        );
        // An unknown fstype is ENODEV.
        let e = mount_fs(&dev_path, &mnt, "nosuchfs", flags, "").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENODEV), "{e}");

        // Busy: a plain unmount refuses, a lazy one detaches it at once.
        let busy = std::fs::File::open(mnt.join("lost+found")).unwrap();
        let e = unmount_with(&mnt, false).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBUSY), "{e}");
        unmount_with(&mnt, true).unwrap();
        guard.disarm();
        assert!(!is_mount_point(&mnt).unwrap());
        drop(busy);
    }

    #[test]
    fn priv_bind_readonly_detached() {
        bind_is_readonly("priv_bind_readonly_detached", false);
    }

    #[test]
    fn priv_bind_readonly_classic() {
        bind_is_readonly("priv_bind_readonly_classic", true);
    }
}
