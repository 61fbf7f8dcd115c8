//! Filesystem UUIDs: what makes a volume's GUID stable across mounts and
//! device renames.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::{check, open_dir};

/// `struct fsuuid2` (linux/fs.h).
#[repr(C)]
struct FsUuid2 {
    len: u8,
    uuid: [u8; 16],
}

/// `FS_IOC_GETFSUUID`: `_IOR(0x15, 0, struct fsuuid2)` (Linux ≥ 6.5).
const FS_IOC_GETFSUUID: libc::Ioctl = libc::_IOR::<FsUuid2>(0x15, 0);

/// The UUID of the filesystem mounted at `mount_point`, lower-case and
/// hyphenated as blkid prints it, or `None` when it cannot be read or is
/// all zeros.
///
/// btrfs: the fsid from `BTRFS_IOC_FS_INFO` on the mount point. ext2/3/4
/// and xfs: read from the superblock on `device` (ext: `s_uuid` at 0x68 of
/// the superblock at byte 1024; xfs: `sb_uuid` at byte 32). Otherwise, or
/// when the device cannot be read, `FS_IOC_GETFSUUID` on the mount point
/// for block-device filesystems (Linux ≥ 6.5). Nothing is written.
pub fn fs_uuid(mount_point: &Path, fs_type: &str, device: &str) -> Option<String> {
    let from_sb = match fs_type {
        "btrfs" => crate::btrfs::fsid(mount_point).ok(),
        "ext2" | "ext3" | "ext4" => ext_uuid(Path::new(device)).ok().flatten(),
        "xfs" => xfs_uuid(Path::new(device)).ok().flatten(),
        _ => None,
    };
    let raw = match from_sb {
        Some(u) => u,
        None if device.starts_with("/dev/") => getfsuuid(mount_point).ok().flatten()?,
        None => return None,
    };
    (raw != [0; 16]).then(|| format_uuid(&raw))
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, lower case.
pub fn format_uuid(b: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{byte:02x}"));
    }
    s
}

/// ext2/3/4: superblock at byte 1024, magic 0xEF53 (LE u16) at 0x38,
/// `s_uuid` at 0x68.
fn ext_uuid(device: &Path) -> io::Result<Option<[u8; 16]>> {
    let mut sb = [0u8; 1024];
    File::open(device)?.read_exact_at(&mut sb, 1024)?;
    if u16::from_le_bytes([sb[0x38], sb[0x39]]) != 0xEF53 {
        return Ok(None);
    }
    Ok(Some(uuid_at(&sb, 0x68)))
}

/// xfs: superblock at byte 0, magic `XFSB`, `sb_uuid` at byte 32.
fn xfs_uuid(device: &Path) -> io::Result<Option<[u8; 16]>> {
    let mut sb = [0u8; 512];
    File::open(device)?.read_exact_at(&mut sb, 0)?;
    if &sb[..4] != b"XFSB" {
        return Ok(None);
    }
    Ok(Some(uuid_at(&sb, 32)))
}

fn uuid_at(buf: &[u8], offset: usize) -> [u8; 16] {
    let mut u = [0u8; 16];
    u.copy_from_slice(&buf[offset..offset + 16]);
    u
}

/// The generic ioctl; `None` if the filesystem has no 16-byte UUID.
fn getfsuuid(mount_point: &Path) -> io::Result<Option<[u8; 16]>> {
    let dir = open_dir(mount_point)?;
    let mut arg = FsUuid2 {
        len: 0,
        uuid: [0; 16],
    };
    // SAFETY: FS_IOC_GETFSUUID writes one `struct fsuuid2` through the
    // pointer, which points to a live, properly sized `FsUuid2`; `dir` is
    // open across the call.
    check(unsafe { libc::ioctl(dir.as_raw_fd(), FS_IOC_GETFSUUID, &mut arg as *mut FsUuid2) })?;
    Ok((arg.len == 16).then_some(arg.uuid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_blkid() {
        let b = [
            0x0b, 0x5e, 0x7d, 0x1c, 0x11, 0x11, 0x22, 0x22, 0x33, 0x33, 0x44, 0x44, 0x55, 0x55,
            0x66, 0x66,
        ];
        assert_eq!(format_uuid(&b), "0b5e7d1c-1111-2222-3333-444455556666");
    }

    #[test]
    fn fsuuid2_layout() {
        assert_eq!(std::mem::size_of::<FsUuid2>(), 17);
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        assert_eq!(FS_IOC_GETFSUUID, 0x8011_1500);
    }

    #[test]
    fn pseudo_filesystems_have_none() {
        assert_eq!(fs_uuid(Path::new("/proc"), "proc", "proc"), None);
    }

    #[test]
    fn superblock_parsers_check_the_magic() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("img");
        let mut data = vec![0u8; 4096];
        // An ext4-looking superblock.
        data[1024 + 0x38] = 0x53;
        data[1024 + 0x39] = 0xEF;
        data[1024 + 0x68..1024 + 0x78].copy_from_slice(&[7; 16]);
        std::fs::write(&img, &data).unwrap();
        assert_eq!(ext_uuid(&img).unwrap(), Some([7; 16]));
        assert_eq!(xfs_uuid(&img).unwrap(), None);
        data[..4].copy_from_slice(b"XFSB");
        data[32..48].copy_from_slice(&[9; 16]);
        std::fs::write(&img, &data).unwrap();
        assert_eq!(xfs_uuid(&img).unwrap(), Some([9; 16]));
        assert!(ext_uuid(&dir.path().join("missing")).is_err());
    }
}
