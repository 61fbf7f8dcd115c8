//! btrfs subvolume ioctls (linux/btrfs.h): read-only snapshots, deletion,
//! flags and the filesystem id. The argument structs are declared here with
//! the header's exact layout; tests assert their sizes.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::{check, open_dir};

const BTRFS_IOCTL_MAGIC: u32 = 0x94;
/// `BTRFS_SUBVOL_RDONLY`: the subvolume (snapshot) is read-only.
pub const SUBVOL_RDONLY: u64 = 1 << 1;
/// `BTRFS_FIRST_FREE_OBJECTID`: the inode number of every subvolume's root
/// directory.
pub const FIRST_FREE_OBJECTID: u64 = 256;
/// `BTRFS_PATH_NAME_MAX`.
const PATH_NAME_MAX: usize = 4087;
/// `BTRFS_SUBVOL_NAME_MAX`.
const SUBVOL_NAME_MAX: usize = 4039;

/// `struct btrfs_ioctl_vol_args` (4096 bytes).
#[repr(C)]
pub(crate) struct VolArgs {
    fd: i64,
    name: [u8; PATH_NAME_MAX + 1],
}

/// `struct btrfs_ioctl_vol_args_v2` (4096 bytes). The first union
/// (`{ __u64 size; struct btrfs_qgroup_inherit *qgroup_inherit; }` /
/// `__u64 unused[4]`) is kept as its 32-byte `unused` arm, all zero: no
/// qgroup inheritance. The second union (`name` / `devid` / `subvolid`) is
/// used as `name`.
#[repr(C)]
pub(crate) struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; SUBVOL_NAME_MAX + 1],
}

/// `struct btrfs_ioctl_fs_info_args` (1024 bytes).
#[repr(C)]
pub(crate) struct FsInfoArgs {
    max_id: u64,
    num_devices: u64,
    fsid: [u8; 16],
    nodesize: u32,
    sectorsize: u32,
    clone_alignment: u32,
    csum_type: u16,
    csum_size: u16,
    flags: u64,
    generation: u64,
    metadata_uuid: [u8; 16],
    reserved: [u8; 944],
}

const SNAP_DESTROY: libc::Ioctl = libc::_IOW::<VolArgs>(BTRFS_IOCTL_MAGIC, 15);
const SNAP_CREATE_V2: libc::Ioctl = libc::_IOW::<VolArgsV2>(BTRFS_IOCTL_MAGIC, 23);
const SUBVOL_GETFLAGS: libc::Ioctl = libc::_IOR::<u64>(BTRFS_IOCTL_MAGIC, 25);
const FS_INFO: libc::Ioctl = libc::_IOR::<FsInfoArgs>(BTRFS_IOCTL_MAGIC, 31);

/// A subvolume name as the ioctls take it: one path component, NUL-padded
/// into `N` bytes (so at most `N - 1` long).
fn name_field<const N: usize>(name: &str) -> io::Result<[u8; N]> {
    let b = name.as_bytes();
    if b.is_empty() || name == "." || name == ".." || b.contains(&b'/') || b.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("'{name}' is not a valid subvolume name"),
        ));
    }
    if b.len() >= N {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("subvolume name longer than {} bytes", N - 1),
        ));
    }
    let mut field = [0u8; N];
    field[..b.len()].copy_from_slice(b);
    Ok(field)
}

/// Snapshots the subvolume `source_subvol` (the root of a subvolume, e.g. a
/// btrfs mount point) as the read-only subvolume `dest_dir/name`
/// (`BTRFS_IOC_SNAP_CREATE_V2` with `BTRFS_SUBVOL_RDONLY`). The snapshot is
/// atomic: it is the state of the subvolume at one transaction, so no freeze
/// is needed (and a FIFREEZE would make this ioctl wait for the thaw).
/// `dest_dir` must be on the same filesystem. Nested subvolumes appear in
/// the snapshot as empty directories.
pub fn snapshot_readonly(source_subvol: &Path, dest_dir: &Path, name: &str) -> io::Result<()> {
    let name = name_field::<{ SUBVOL_NAME_MAX + 1 }>(name)?;
    let src = open_dir(source_subvol)?;
    let dst = open_dir(dest_dir)?;
    let args = Box::new(VolArgsV2 {
        fd: i64::from(src.as_raw_fd()),
        transid: 0,
        flags: SUBVOL_RDONLY,
        unused: [0; 4],
        name,
    });
    // SAFETY: SNAP_CREATE_V2 reads one `struct btrfs_ioctl_vol_args_v2`
    // through the pointer (and may write `transid` back), which points to a
    // live, exactly laid out `VolArgsV2`; `src` and `dst` stay open across
    // the call.
    check(unsafe { libc::ioctl(dst.as_raw_fd(), SNAP_CREATE_V2, &*args as *const VolArgsV2) })?;
    Ok(())
}

/// Deletes the subvolume `parent_dir/name` (`BTRFS_IOC_SNAP_DESTROY`), even
/// a read-only one (root may; unprivileged users would need the
/// `user_subvol_rm_allowed` mount option). `ENOENT` if it does not exist,
/// `EINVAL` or `ENOTDIR` if it is not a subvolume. The space is reclaimed in
/// the background by the cleaner.
pub fn delete_subvolume(parent_dir: &Path, name: &str) -> io::Result<()> {
    let name = name_field::<{ PATH_NAME_MAX + 1 }>(name)?;
    let parent = open_dir(parent_dir)?;
    let args = Box::new(VolArgs { fd: 0, name });
    // SAFETY: SNAP_DESTROY reads one `struct btrfs_ioctl_vol_args` through
    // the pointer, which points to a live, exactly laid out `VolArgs`;
    // `parent` stays open across the call.
    check(unsafe { libc::ioctl(parent.as_raw_fd(), SNAP_DESTROY, &*args as *const VolArgs) })?;
    Ok(())
}

/// Whether `path` (symlinks followed) is the root directory of a btrfs
/// subvolume: inode 256 on a filesystem with the btrfs magic.
pub fn is_subvolume(path: &Path) -> io::Result<bool> {
    let md = std::fs::metadata(path)?;
    Ok(md.is_dir()
        && md.ino() == FIRST_FREE_OBJECTID
        && crate::fs_magic(path)? == crate::magic::BTRFS)
}

/// Whether the subvolume `path` lies in is read-only
/// (`BTRFS_IOC_SUBVOL_GETFLAGS`). `ENOTTY` if it is not on btrfs.
pub fn subvolume_is_readonly(path: &Path) -> io::Result<bool> {
    let dir = open_dir(path)?;
    let mut flags: u64 = 0;
    // SAFETY: SUBVOL_GETFLAGS writes one u64 through the pointer, which
    // points to a live u64; `dir` stays open across the call.
    check(unsafe { libc::ioctl(dir.as_raw_fd(), SUBVOL_GETFLAGS, &mut flags as *mut u64) })?;
    Ok(flags & SUBVOL_RDONLY != 0)
}

/// The filesystem id (the UUID `blkid` shows) of the btrfs filesystem
/// holding `path` (`BTRFS_IOC_FS_INFO`).
pub fn fsid(path: &Path) -> io::Result<[u8; 16]> {
    let dir = open_dir(path)?;
    let mut args = Box::new(FsInfoArgs {
        max_id: 0,
        num_devices: 0,
        fsid: [0; 16],
        nodesize: 0,
        sectorsize: 0,
        clone_alignment: 0,
        csum_type: 0,
        csum_size: 0,
        // In: which optional fields to fill; none.
        flags: 0,
        generation: 0,
        metadata_uuid: [0; 16],
        reserved: [0; 944],
    });
    // SAFETY: FS_INFO reads `flags` from and writes one
    // `struct btrfs_ioctl_fs_info_args` through the pointer, which points
    // to a live, exactly laid out `FsInfoArgs`; `dir` stays open across the
    // call.
    check(unsafe { libc::ioctl(dir.as_raw_fd(), FS_INFO, &mut *args as *mut FsInfoArgs) })?;
    Ok(args.fsid)
}

#[cfg(test)]
mod tests {
    use std::mem::{offset_of, size_of};

    use super::*;

    #[test]
    fn struct_layouts_match_btrfs_h() {
        assert_eq!(size_of::<VolArgs>(), 4096);
        assert_eq!(size_of::<VolArgsV2>(), 4096);
        assert_eq!(offset_of!(VolArgsV2, unused), 24);
        assert_eq!(offset_of!(VolArgsV2, name), 56);
        assert_eq!(size_of::<FsInfoArgs>(), 1024);
        assert_eq!(offset_of!(FsInfoArgs, fsid), 16);
        assert_eq!(offset_of!(FsInfoArgs, flags), 48);
        assert_eq!(offset_of!(FsInfoArgs, metadata_uuid), 64);
    }

    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn ioctl_numbers_match_btrfs_h() {
        assert_eq!(SNAP_DESTROY, 0x5000_940F);
        assert_eq!(SNAP_CREATE_V2, 0x5000_9417);
        assert_eq!(SUBVOL_GETFLAGS, 0x8008_9419);
        assert_eq!(FS_INFO, 0x8400_941F);
    }

    #[test]
    fn names_are_single_components() {
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            let e = name_field::<16>(bad).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
        assert!(name_field::<4>("abcd").is_err());
        assert_eq!(&name_field::<4>("abc").unwrap(), b"abc\0");
    }

    #[test]
    fn non_btrfs_paths() {
        assert!(!is_subvolume(Path::new("/proc")).unwrap());
        let e = subvolume_is_readonly(Path::new("/proc")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTTY), "{e}");
        assert!(fsid(Path::new("/proc")).is_err());
    }
}
