//! What filesystem a block device or image holds, read from its
//! superblock, without mounting it and without libblkid. Used on shadows'
//! devices and on images before mounting them, where the mount table (and
//! `statfs`) cannot answer.
//!
//! Only the filesystems the service snapshots are recognised; the checks
//! are those of libblkid's probers, reduced to what tells them apart:
//!
//! - btrfs: magic `_BHRfS_M` at byte 0x40 of the superblock at 64 KiB;
//! - xfs: magic `XFSB` at byte 0, and a power-of-two block size of
//!   512 B…64 KiB (big-endian `sb_blocksize` at byte 4);
//! - ext2/3/4: magic `0xEF53` (little-endian) at byte 0x38 of the
//!   superblock at 1 KiB, then, as blkid does, by feature flags: a
//!   filesystem using any feature ext3 lacks (extents, 64bit, flex_bg,
//!   huge files, metadata checksums…) is `"ext4"`; otherwise one with a
//!   journal is `"ext3"`, and one without is `"ext2"`. A formatted external
//!   journal (`journal_dev`) is not a filesystem: `None`. So a freshly
//!   made `mkfs.ext3` reads as `"ext3"` even though the ext4 driver mounts
//!   it; whoever mounts it can use `"ext4"` for the whole family.
//!
//! btrfs is checked first: `btrfs-convert` leaves the old ext superblock
//! in place at 1 KiB.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Bytes of the start of a device that [`identify`] looks at: up to the
/// end of the btrfs superblock (64 KiB + 4 KiB).
pub const PROBE_LEN: usize = BTRFS_SB_OFFSET + 4096;

const BTRFS_SB_OFFSET: usize = 0x1_0000;
const BTRFS_MAGIC_OFFSET: usize = BTRFS_SB_OFFSET + 0x40;
const BTRFS_MAGIC: &[u8; 8] = b"_BHRfS_M";

const XFS_MAGIC: &[u8; 4] = b"XFSB";

const EXT_SB_OFFSET: usize = 1024;
const EXT_MAGIC: u16 = 0xEF53;
const EXT_COMPAT_HAS_JOURNAL: u32 = 0x4;
const EXT_INCOMPAT_JOURNAL_DEV: u32 = 0x8;
/// What ext3 understands: `filetype | recover | meta_bg`.
const EXT3_INCOMPAT_SUPP: u32 = 0x2 | 0x4 | 0x10;
/// What ext3 understands: `sparse_super | large_file | btree_dir`.
const EXT3_RO_COMPAT_SUPP: u32 = 0x1 | 0x2 | 0x4;

/// The filesystem on the block device or image `path`: `"btrfs"`, `"xfs"`,
/// `"ext2"`, `"ext3"`, `"ext4"` (see the module docs for how the ext
/// family is told apart), or `None` if none of these. Reads the first
/// [`PROBE_LEN`] bytes (less if it is shorter); writes nothing.
pub fn filesystem_type(path: &Path) -> io::Result<Option<&'static str>> {
    let file = File::open(path)?;
    let mut buf = vec![0u8; PROBE_LEN];
    let mut len = 0;
    while len < buf.len() {
        match file.read_at(&mut buf[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(identify(&buf[..len]))
}

/// The filesystem whose superblock is in `start`, the first bytes of a
/// device (ideally [`PROBE_LEN`] of them; shorter buffers only match
/// what fits in them).
pub fn identify(start: &[u8]) -> Option<&'static str> {
    if start.get(BTRFS_MAGIC_OFFSET..BTRFS_MAGIC_OFFSET + 8) == Some(BTRFS_MAGIC) {
        return Some("btrfs");
    }
    if is_xfs(start) {
        return Some("xfs");
    }
    ext_type(start.get(EXT_SB_OFFSET..)?)
}

fn is_xfs(start: &[u8]) -> bool {
    if start.get(..4) != Some(XFS_MAGIC) {
        return false;
    }
    match be32(start, 4) {
        Some(bs) => bs.is_power_of_two() && (512..=65536).contains(&bs),
        None => false,
    }
}

/// ext2/3/4 from the superblock `sb` (starting at its byte 0).
fn ext_type(sb: &[u8]) -> Option<&'static str> {
    if le16(sb, 0x38)? != EXT_MAGIC {
        return None;
    }
    // s_log_block_size: block size 1 KiB << it, at most 64 KiB.
    if le32(sb, 0x18)? > 6 {
        return None;
    }
    let compat = le32(sb, 0x5C)?;
    let incompat = le32(sb, 0x60)?;
    let ro_compat = le32(sb, 0x64)?;
    if incompat & EXT_INCOMPAT_JOURNAL_DEV != 0 {
        return None;
    }
    if incompat & !EXT3_INCOMPAT_SUPP != 0 || ro_compat & !EXT3_RO_COMPAT_SUPP != 0 {
        Some("ext4")
    } else if compat & EXT_COMPAT_HAS_JOURNAL != 0 {
        Some("ext3")
    } else {
        Some("ext2")
    }
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A zeroed device start with an ext superblock of these features.
    fn ext(compat: u32, incompat: u32, ro_compat: u32) -> Vec<u8> {
        let mut b = vec![0u8; PROBE_LEN];
        let sb = &mut b[EXT_SB_OFFSET..];
        sb[0x38..0x3A].copy_from_slice(&EXT_MAGIC.to_le_bytes());
        sb[0x18..0x1C].copy_from_slice(&2u32.to_le_bytes()); // 4 KiB blocks
        sb[0x5C..0x60].copy_from_slice(&compat.to_le_bytes());
        sb[0x60..0x64].copy_from_slice(&incompat.to_le_bytes());
        sb[0x64..0x68].copy_from_slice(&ro_compat.to_le_bytes());
        b
    }

    #[test]
    fn ext_family_by_features() {
        // mkfs.ext2 defaults: ext_attr, resize_inode, dir_index | filetype
        // | sparse_super, large_file.
        assert_eq!(identify(&ext(0x38, 0x2, 0x3)), Some("ext2"));
        // mkfs.ext3: the same plus has_journal.
        assert_eq!(identify(&ext(0x3C, 0x2, 0x3)), Some("ext3"));
        // ext3 needing recovery is still ext3.
        assert_eq!(identify(&ext(0x3C, 0x6, 0x3)), Some("ext3"));
        // mkfs.ext4: extents, 64bit, flex_bg… | huge_file, metadata_csum…
        assert_eq!(identify(&ext(0x3C, 0x2C2, 0x46B)), Some("ext4"));
        // ext4 without a journal, and one with only an ro_compat feature
        // ext3 lacks (metadata_csum).
        assert_eq!(identify(&ext(0x38, 0x242, 0x3)), Some("ext4"));
        assert_eq!(identify(&ext(0x3C, 0x2, 0x403)), Some("ext4"));
        // An external journal device.
        assert_eq!(identify(&ext(0x0, 0x8, 0x0)), None);
    }

    #[test]
    fn ext_needs_magic_and_a_sane_block_size() {
        let mut b = ext(0x3C, 0x2, 0x3);
        b[EXT_SB_OFFSET + 0x38] = 0x54;
        assert_eq!(identify(&b), None);
        let mut b = ext(0x3C, 0x2, 0x3);
        b[EXT_SB_OFFSET + 0x18] = 7;
        assert_eq!(identify(&b), None);
        // Cut before the feature flags.
        assert_eq!(identify(&ext(0x3C, 0x2, 0x3)[..EXT_SB_OFFSET + 0x60]), None);
        // But the superblock alone is enough.
        assert_eq!(identify(&ext(0x3C, 0x2, 0x3)[..2048]), Some("ext3"));
    }

    #[test]
    fn xfs_by_magic_and_block_size() {
        let mut b = vec![0u8; 512];
        b[..4].copy_from_slice(b"XFSB");
        b[4..8].copy_from_slice(&4096u32.to_be_bytes());
        assert_eq!(identify(&b), Some("xfs"));
        b[4..8].copy_from_slice(&4095u32.to_be_bytes());
        assert_eq!(identify(&b), None);
        b[4..8].copy_from_slice(&(128u32 * 1024).to_be_bytes());
        assert_eq!(identify(&b), None);
        assert_eq!(identify(b"XFSB\0\0"), None);
    }

    #[test]
    fn btrfs_by_magic_and_before_ext() {
        let mut b = ext(0x3C, 0x2, 0x3);
        assert_eq!(identify(&b), Some("ext3"));
        b[BTRFS_MAGIC_OFFSET..BTRFS_MAGIC_OFFSET + 8].copy_from_slice(BTRFS_MAGIC);
        assert_eq!(identify(&b), Some("btrfs"));
        // A buffer ending inside the magic does not match.
        assert_eq!(identify(&b[..BTRFS_MAGIC_OFFSET + 4]), Some("ext3"));
    }

    #[test]
    fn nothing_in_zeros_or_short_buffers() {
        assert_eq!(identify(&[]), None);
        assert_eq!(identify(&[0u8; 100]), None);
        assert_eq!(identify(&vec![0u8; PROBE_LEN]), None);
    }

    #[test]
    fn filesystem_type_of_files() {
        let f = tempfile::NamedTempFile::new().unwrap();
        assert_eq!(filesystem_type(f.path()).unwrap(), None);
        std::fs::write(f.path(), ext(0x3C, 0x2C2, 0x46B)).unwrap();
        assert_eq!(filesystem_type(f.path()).unwrap(), Some("ext4"));
        assert!(filesystem_type(Path::new("/nonexistent/img")).is_err());
    }

    /// mkfs'd images, probed as files and through a loop device.
    #[test]
    fn priv_probe_real_filesystems() {
        if !vss_testkit::privileged("priv_probe_real_filesystems") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        for (mkfs, force, size_mb, expected) in [
            ("mkfs.ext2", "-F", 16, "ext2"),
            ("mkfs.ext3", "-F", 16, "ext3"),
            ("mkfs.ext4", "-F", 16, "ext4"),
            ("mkfs.xfs", "-f", 300, "xfs"),
            ("mkfs.btrfs", "-f", 128, "btrfs"),
        ] {
            let img = dir.path().join(expected);
            File::create(&img).unwrap().set_len(size_mb << 20).unwrap();
            vss_testkit::run(mkfs, &[force, "-q", img.to_str().unwrap()]);
            assert_eq!(
                filesystem_type(&img).unwrap(),
                Some(expected),
                "{mkfs} image"
            );
            let dev = crate::loopdev::attach(
                &img,
                &crate::loopdev::LoopOptions {
                    read_only: true,
                    ..Default::default()
                },
            )
            .unwrap();
            let found = filesystem_type(dev.path());
            dev.detach().unwrap();
            assert_eq!(found.unwrap(), Some(expected), "{mkfs} on a loop device");
        }
    }
}
