//! Where things lie on a filesystem's device: its free space
//! (`FS_IOC_GETFSMAP`, linux/fsmap.h) and a file's data (`FS_IOC_FIEMAP`,
//! linux/fiemap.h).
//!
//! A copy-on-write snapshot of a block device only has to preserve blocks
//! that hold something: knowing the free space at snapshot time lets it
//! skip copying (and lets a reader of the shadow skip reading) blocks that
//! were free then. ext4 and xfs answer GETFSMAP; btrfs and most others do
//! not, and [`free_extents`] then says `None`.
//!
//! The ioctl structs are declared here with the headers' layout; const
//! assertions check their sizes.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::{check, open_dir};

/// `struct fsmap` (64 bytes): one mapping. Offsets and lengths in bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Fsmap {
    fmr_device: u32,
    fmr_flags: u32,
    fmr_physical: u64,
    fmr_owner: u64,
    fmr_offset: u64,
    fmr_length: u64,
    fmr_reserved: [u64; 3],
}

/// `struct fsmap_head` (192 bytes) without its flexible `fmh_recs[]`.
#[repr(C)]
struct FsmapHead {
    fmh_iflags: u32,
    fmh_oflags: u32,
    fmh_count: u32,
    fmh_entries: u32,
    fmh_reserved: [u64; 6],
    fmh_keys: [Fsmap; 2],
}

/// Records fetched per GETFSMAP call.
const FSMAP_RECS: usize = 128;

/// A `struct fsmap_head` followed by room for [`FSMAP_RECS`] records, as
/// the ioctl takes it (`fsmap_sizeof(FSMAP_RECS)` bytes, no padding).
#[repr(C)]
struct FsmapBuf {
    head: FsmapHead,
    recs: [Fsmap; FSMAP_RECS],
}

const _: () = assert!(std::mem::size_of::<Fsmap>() == 64);
const _: () = assert!(std::mem::size_of::<FsmapHead>() == 192);
const _: () = assert!(std::mem::size_of::<FsmapBuf>() == 192 + 64 * FSMAP_RECS);

/// `FS_IOC_GETFSMAP`: `_IOWR('X', 59, struct fsmap_head)`.
const FS_IOC_GETFSMAP: libc::Ioctl = libc::_IOWR::<FsmapHead>(b'X' as u32, 59);
/// `FMH_OF_DEV_T`: `fmr_device` values are `dev_t`s (kernel encoding).
const FMH_OF_DEV_T: u32 = 0x1;
/// `FMR_OF_SPECIAL_OWNER`: `fmr_owner` is one of the `FMR_OWN_*` codes,
/// not an inode number.
const FMR_OF_SPECIAL_OWNER: u32 = 0x10;
/// `FMR_OF_LAST`: the last record of the whole query.
const FMR_OF_LAST: u32 = 0x20;
/// `FMR_OWN_FREE`: `FMR_OWNER(0, 1)`, free space.
const FMR_OWN_FREE: u64 = 1;
/// The device cookie xfs uses for its data device when it does not report
/// `dev_t`s (`XFS_DEV_DATA`, filesystems with an internal RT section).
const XFS_DEV_DATA: u32 = 1;

/// The byte ranges `(offset, length)` of the device holding the filesystem
/// mounted at `mount_point` (any path in it will do) that are free right
/// now, sorted, adjacent ranges merged. Offsets are from the start of the
/// filesystem's data device (the block device it was mounted from), in
/// bytes. `Ok(None)` if the filesystem does not support `FS_IOC_GETFSMAP`
/// (btrfs, tmpfs, FUSE…).
///
/// Only the data device counts: records of an external log or realtime
/// device (xfs) or an external journal (ext4) are left out.
///
/// The answer is a snapshot of a moving target unless the filesystem is
/// frozen ([`crate::freeze`]; GETFSMAP works on a frozen filesystem). Even
/// after a sync it may lag: delayed allocation holds dirty data in no
/// block yet (ext4, xfs), and xfs frees the blocks of deleted files in
/// the background (inode inactivation), a few milliseconds later, which
/// sync does not wait for but a freeze does. Against
/// `statvfs` (`f_bfree * f_frsize`), after a sync: ext4 reports exactly
/// that; xfs reports more, by its reserve pool (5% of the data blocks, at
/// most 8192 blocks) plus its per-AG metadata reservations and set-aside
/// (about 1–2% more on small filesystems), which are free blocks that
/// statvfs does not count.
pub fn free_extents(mount_point: &Path) -> io::Result<Option<Vec<(u64, u64)>>> {
    let mut free = Vec::new();
    let found = for_each_mapping(mount_point, FSMAP_RECS as u32, |recs, data_device| {
        collect_free(recs, data_device, &mut free)
    })?;
    Ok(found.then(|| merge(free)))
}

/// Runs GETFSMAP over the whole filesystem at `mount_point`, `per_call`
/// (≤ [`FSMAP_RECS`]) records at a time, handing each batch and the id of
/// the data device to `each`. `Ok(false)` if GETFSMAP is not supported.
fn for_each_mapping(
    mount_point: &Path,
    per_call: u32,
    mut each: impl FnMut(&[Fsmap], u32),
) -> io::Result<bool> {
    let per_call = per_call.clamp(1, FSMAP_RECS as u32);
    let dir = open_dir(mount_point)?;
    let st_dev = dir.metadata()?.dev();
    let mut buf = Box::new(FsmapBuf {
        head: FsmapHead {
            fmh_iflags: 0,
            fmh_oflags: 0,
            fmh_count: per_call,
            fmh_entries: 0,
            fmh_reserved: [0; 6],
            // Low key: everything from the start (all zeros); high key: up
            // to the end of every device (all ones but the length, as
            // xfs_io sets it).
            fmh_keys: [
                Fsmap::default(),
                Fsmap {
                    fmr_device: u32::MAX,
                    fmr_flags: u32::MAX,
                    fmr_physical: u64::MAX,
                    fmr_owner: u64::MAX,
                    fmr_offset: u64::MAX,
                    fmr_length: 0,
                    fmr_reserved: [0; 3],
                },
            ],
        },
        recs: [Fsmap::default(); FSMAP_RECS],
    });
    let mut first = true;
    loop {
        buf.head.fmh_entries = 0;
        // SAFETY: GETFSMAP reads a `struct fsmap_head` and writes it back
        // with up to `fmh_count` records right after it; the pointer is to
        // a live `FsmapBuf`, laid out exactly so, with room for
        // `fmh_count` (= FSMAP_RECS) records. `dir` stays open.
        let r = check(unsafe {
            libc::ioctl(dir.as_raw_fd(), FS_IOC_GETFSMAP, &mut *buf as *mut FsmapBuf)
        });
        if let Err(e) = r {
            let unsupported = matches!(
                e.raw_os_error(),
                Some(libc::ENOTTY) | Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)
            ) || (first && e.raw_os_error() == Some(libc::EINVAL));
            if unsupported && first {
                return Ok(false);
            }
            return Err(e);
        }
        first = false;
        let n = buf.head.fmh_entries.min(per_call) as usize;
        let data_device = if buf.head.fmh_oflags & FMH_OF_DEV_T != 0 {
            encode_dev(st_dev)
        } else {
            XFS_DEV_DATA
        };
        let recs = &buf.recs[..n];
        each(recs, data_device);
        let Some(last) = recs.last().copied() else {
            break;
        };
        if last.fmr_flags & FMR_OF_LAST != 0 || n < per_call as usize {
            break;
        }
        // Continue after the last record: the kernel starts past a low key
        // with a non-zero length.
        if last == buf.head.fmh_keys[0] {
            return Err(io::Error::other("FS_IOC_GETFSMAP does not advance"));
        }
        buf.head.fmh_keys[0] = last;
    }
    Ok(true)
}

/// Appends the free-space records of `data_device` among `recs`.
fn collect_free(recs: &[Fsmap], data_device: u32, out: &mut Vec<(u64, u64)>) {
    out.extend(
        recs.iter()
            .filter(|r| {
                r.fmr_device == data_device
                    && r.fmr_flags & FMR_OF_SPECIAL_OWNER != 0
                    && r.fmr_owner == FMR_OWN_FREE
                    && r.fmr_length > 0
            })
            .map(|r| (r.fmr_physical, r.fmr_length)),
    );
}

/// Sorts `(offset, length)` ranges and merges those that touch or overlap.
fn merge(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (off, len) in ranges {
        if let Some((moff, mlen)) = merged.last_mut() {
            let end = *moff + *mlen;
            if off <= end {
                *mlen = end.max(off + len) - *moff;
                continue;
            }
        }
        merged.push((off, len));
    }
    merged
}

/// A `dev_t` as the kernel encodes it in `fmr_device` (`new_encode_dev`:
/// minor low byte, 12 bits of major, the rest of the minor above).
fn encode_dev(dev: u64) -> u32 {
    let major = libc::major(dev);
    let minor = libc::minor(dev);
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

/// `struct fiemap` (32 bytes) without its flexible `fm_extents[]`.
#[repr(C)]
struct Fiemap {
    fm_start: u64,
    fm_length: u64,
    fm_flags: u32,
    fm_mapped_extents: u32,
    fm_extent_count: u32,
    fm_reserved: u32,
}

/// `struct fiemap_extent` (56 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct FiemapExtent {
    fe_logical: u64,
    fe_physical: u64,
    fe_length: u64,
    fe_reserved64: [u64; 2],
    fe_flags: u32,
    fe_reserved: [u32; 3],
}

/// Extents fetched per FIEMAP call.
const FIEMAP_EXTENTS: usize = 128;

#[repr(C)]
struct FiemapBuf {
    head: Fiemap,
    extents: [FiemapExtent; FIEMAP_EXTENTS],
}

const _: () = assert!(std::mem::size_of::<Fiemap>() == 32);
const _: () = assert!(std::mem::size_of::<FiemapExtent>() == 56);
const _: () = assert!(std::mem::size_of::<FiemapBuf>() == 32 + 56 * FIEMAP_EXTENTS);

/// `FS_IOC_FIEMAP`: `_IOWR('f', 11, struct fiemap)`.
const FS_IOC_FIEMAP: libc::Ioctl = libc::_IOWR::<Fiemap>(b'f' as u32, 11);
/// `FIEMAP_FLAG_SYNC`: write dirty data back (and so allocate delayed
/// extents) before mapping.
const FIEMAP_FLAG_SYNC: u32 = 0x1;
/// `FIEMAP_EXTENT_LAST`.
const FIEMAP_EXTENT_LAST: u32 = 0x1;

/// `FIEMAP_EXTENT_*` flags of a [`FileExtent`] (linux/fiemap.h).
pub mod extent_flags {
    /// Location not known yet; `physical` is meaningless.
    pub const UNKNOWN: u32 = 0x2;
    /// Delayed allocation (also sets `UNKNOWN`).
    pub const DELALLOC: u32 = 0x4;
    /// Data stored in metadata, not in blocks of its own; `physical` is
    /// not block-aligned data of this file alone.
    pub const DATA_INLINE: u32 = 0x200;
    /// Allocated but not written: reads as zeros.
    pub const UNWRITTEN: u32 = 0x800;
    /// Shared with other files (reflinks, snapshots).
    pub const SHARED: u32 = 0x2000;
}

/// One extent of a file's data (`struct fiemap_extent`), in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileExtent {
    /// Offset in the file.
    pub logical: u64,
    /// Offset on the filesystem's device (for btrfs: its logical address
    /// space, not a device offset).
    pub physical: u64,
    pub length: u64,
    /// `FIEMAP_EXTENT_*`, see [`extent_flags`].
    pub flags: u32,
}

/// The extents of `file`'s data (`FS_IOC_FIEMAP` with `FIEMAP_FLAG_SYNC`,
/// so dirty data is written back and allocated first), in file order.
/// Holes have no extent. `EOPNOTSUPP` where the filesystem cannot map
/// files.
pub fn file_extents(file: &Path) -> io::Result<Vec<FileExtent>> {
    let f = File::open(file)?;
    let mut buf = Box::new(FiemapBuf {
        head: Fiemap {
            fm_start: 0,
            fm_length: u64::MAX,
            fm_flags: FIEMAP_FLAG_SYNC,
            fm_mapped_extents: 0,
            fm_extent_count: FIEMAP_EXTENTS as u32,
            fm_reserved: 0,
        },
        extents: [FiemapExtent::default(); FIEMAP_EXTENTS],
    });
    let mut out = Vec::new();
    loop {
        buf.head.fm_mapped_extents = 0;
        // SAFETY: FIEMAP reads a `struct fiemap` and writes it back with up
        // to `fm_extent_count` extents right after it; the pointer is to a
        // live `FiemapBuf`, laid out exactly so, with room for
        // `fm_extent_count` (= FIEMAP_EXTENTS) extents. `f` stays open.
        check(unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_FIEMAP, &mut *buf as *mut FiemapBuf) })?;
        let n = (buf.head.fm_mapped_extents as usize).min(FIEMAP_EXTENTS);
        let extents = &buf.extents[..n];
        out.extend(extents.iter().map(|e| FileExtent {
            logical: e.fe_logical,
            physical: e.fe_physical,
            length: e.fe_length,
            flags: e.fe_flags,
        }));
        let Some(last) = extents.last() else {
            break;
        };
        let next = last.fe_logical.saturating_add(last.fe_length);
        if last.fe_flags & FIEMAP_EXTENT_LAST != 0
            || n < FIEMAP_EXTENTS
            || next <= buf.head.fm_start
        {
            break;
        }
        buf.head.fm_start = next;
        buf.head.fm_length = u64::MAX - next;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::mem::offset_of;

    use super::*;

    #[test]
    fn struct_layouts_match_the_headers() {
        assert_eq!(offset_of!(Fsmap, fmr_physical), 8);
        assert_eq!(offset_of!(Fsmap, fmr_length), 32);
        assert_eq!(offset_of!(FsmapHead, fmh_keys), 64);
        assert_eq!(offset_of!(FsmapBuf, recs), 192);
        assert_eq!(offset_of!(FiemapExtent, fe_flags), 40);
        assert_eq!(offset_of!(FiemapBuf, extents), 32);
    }

    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn ioctl_numbers_match_the_headers() {
        assert_eq!(FS_IOC_GETFSMAP, 0xC0C0_583B);
        assert_eq!(FS_IOC_FIEMAP, 0xC020_660B);
    }

    #[test]
    fn dev_t_encoding() {
        assert_eq!(encode_dev(libc::makedev(7, 3)), 0x0703);
        assert_eq!(encode_dev(libc::makedev(259, 0x1234)), 0x0121_0334);
    }

    fn rec(device: u32, physical: u64, length: u64, owner: u64, special: bool) -> Fsmap {
        Fsmap {
            fmr_device: device,
            fmr_flags: if special { FMR_OF_SPECIAL_OWNER } else { 0 },
            fmr_physical: physical,
            fmr_owner: owner,
            fmr_length: length,
            ..Fsmap::default()
        }
    }

    #[test]
    fn only_free_records_of_the_data_device_count() {
        let recs = [
            rec(0x703, 0, 4096, 3, true), // metadata
            rec(0x703, 4096, 8192, FMR_OWN_FREE, true),
            rec(0x703, 12288, 4096, 1, false), // inode 1's data
            rec(0x704, 0, 65536, FMR_OWN_FREE, true), // log device
            rec(0x703, 16384, 0, FMR_OWN_FREE, true),
            rec(0x703, 20480, 4096, FMR_OWN_FREE, true),
        ];
        let mut out = Vec::new();
        collect_free(&recs, 0x703, &mut out);
        assert_eq!(out, vec![(4096, 8192), (20480, 4096)]);
    }

    #[test]
    fn ranges_merge_when_adjacent_or_overlapping() {
        assert_eq!(merge(vec![]), vec![]);
        assert_eq!(
            merge(vec![
                (100, 10),
                (0, 10),
                (10, 5),
                (50, 10),
                (55, 2),
                (58, 10)
            ]),
            vec![(0, 15), (50, 18), (100, 10)]
        );
    }

    #[test]
    fn unsupported_filesystems_say_none() {
        assert_eq!(free_extents(Path::new("/proc")).unwrap(), None);
        assert!(free_extents(Path::new("/nonexistent/vss")).is_err());
    }

    #[test]
    fn fiemap_of_an_empty_file_has_no_extents() {
        let f = tempfile::NamedTempFile::new().unwrap();
        // /tmp may be on a filesystem without FIEMAP (e.g. tmpfs before
        // 6.x answers EOPNOTSUPP); an empty file has nothing either way.
        match file_extents(f.path()) {
            Ok(v) => assert!(v.is_empty(), "{v:?}"),
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP), "{e}"),
        }
    }

    /// `statvfs` of `path`: (f_bfree, f_blocks, f_frsize).
    fn statvfs(path: &Path) -> (u64, u64, u64) {
        let c = crate::cstring(path).unwrap();
        let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: a NUL-terminated path that outlives the call and memory
        // of the size statvfs fills.
        crate::check(unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) }).unwrap();
        // SAFETY: statvfs returned 0, so it filled `st`.
        let st = unsafe { st.assume_init() };
        #[allow(clippy::unnecessary_cast)]
        (st.f_bfree as u64, st.f_blocks as u64, st.f_frsize as u64)
    }

    fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
        a.0 < b.0 + b.1 && b.0 < a.0 + a.1
    }

    fn contained(a: (u64, u64), ranges: &[(u64, u64)]) -> bool {
        ranges
            .iter()
            .any(|&(off, len)| off <= a.0 && a.0 + a.1 <= off + len)
    }

    fn sync_fs(mp: &Path) {
        let dir = open_dir(mp).unwrap();
        // SAFETY: syncfs(2) on a descriptor that is open across the call.
        crate::check(unsafe { libc::syncfs(dir.as_raw_fd()) }).unwrap();
    }

    /// A filesystem made with mkfs options of the test's choosing on a
    /// loop device of this crate, mounted with [`crate::mount_fs`]; taken
    /// down when dropped.
    struct Scratch {
        mount_point: std::path::PathBuf,
        device: std::path::PathBuf,
        _dir: tempfile::TempDir,
    }

    impl Scratch {
        fn new(fs_type: &str, size_mb: u64, mkfs_args: &[&str]) -> Scratch {
            let dir = tempfile::tempdir().unwrap();
            let img = dir.path().join("img");
            let mount_point = dir.path().join("mnt");
            std::fs::create_dir(&mount_point).unwrap();
            File::create(&img).unwrap().set_len(size_mb << 20).unwrap();
            let mut args = mkfs_args.to_vec();
            args.push(img.to_str().unwrap());
            vss_testkit::run(&format!("mkfs.{fs_type}"), &args);
            let dev = crate::loopdev::attach(&img, &Default::default()).unwrap();
            let device = dev.path().to_path_buf();
            drop(dev);
            let scratch = Scratch {
                mount_point,
                device,
                _dir: dir,
            };
            crate::mount_fs(
                &scratch.device,
                &scratch.mount_point,
                fs_type,
                Default::default(),
                "",
            )
            .unwrap();
            scratch
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = crate::thaw(&self.mount_point);
            if crate::unmount(&self.mount_point).is_err() {
                let _ = crate::unmount_with(&self.mount_point, true);
            }
            let _ = crate::loopdev::detach(&self.device);
        }
    }

    /// What [`free_extents`] says on a fresh `fs_type` filesystem at
    /// `mp` on `device`, checked against statvfs, FIEMAP and the device's
    /// bytes.
    fn free_space_of(fs_type: &str, mp: &Path, device: &Path) {
        use std::io::Write;
        use std::os::unix::fs::FileExt;

        let path = mp.join("data");
        let content: Vec<u8> = (0..4u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let mut f = File::create(&path).unwrap();
        f.write_all(&content).unwrap();
        f.sync_all().unwrap();
        drop(f);
        sync_fs(mp);

        let free = free_extents(mp).unwrap().expect("GETFSMAP is supported");
        assert!(!free.is_empty());
        assert!(
            free.windows(2).all(|w| w[0].0 + w[0].1 < w[1].0),
            "sorted and merged"
        );
        let device_size = crate::block_device_size(device).unwrap();
        assert!(free.iter().all(|&(o, l)| o + l <= device_size));
        let fsmap_free: u64 = free.iter().map(|r| r.1).sum();
        let (bfree, blocks, frsize) = statvfs(mp);
        let _ = writeln!(
            io::stderr(),
            "{fs_type}: GETFSMAP free {fsmap_free} B in {} extents; statvfs f_bfree {} B, \
             f_blocks {} B (f_frsize {frsize})",
            free.len(),
            bfree * frsize,
            blocks * frsize,
        );
        check_free_vs_statvfs(fs_type, mp, fsmap_free, bfree * frsize, blocks * frsize);

        // The file's data is where FIEMAP says, at those byte offsets of
        // the device, and none of it is free.
        let extents = file_extents(&path).unwrap();
        assert_eq!(extents.iter().map(|e| e.length).sum::<u64>(), 4 << 20);
        let dev = File::open(device).unwrap();
        for e in &extents {
            assert_eq!(
                e.flags & (extent_flags::UNKNOWN | extent_flags::DATA_INLINE),
                0
            );
            let r = (e.physical, e.length);
            assert!(
                !free.iter().any(|&f| overlaps(r, f)),
                "extent {e:?} overlaps free space"
            );
            let mut on_disk = vec![0u8; e.length as usize];
            dev.read_exact_at(&mut on_disk, e.physical).unwrap();
            let start = e.logical as usize;
            assert!(
                on_disk == content[start..start + on_disk.len()],
                "device bytes at {} differ from the file at {}",
                e.physical,
                e.logical
            );
        }

        // Once the file is gone its blocks are free, which on xfs is only
        // certain after a freeze (see free_extents): look while frozen.
        std::fs::remove_file(&path).unwrap();
        crate::freeze(mp).unwrap();
        let free = free_extents(mp);
        crate::thaw(mp).unwrap();
        let free = free.unwrap().unwrap();
        for e in &extents {
            assert!(
                contained((e.physical, e.length), &free),
                "extent {e:?} not free after deletion"
            );
        }
    }

    /// How GETFSMAP's free space relates to `statvfs` (after a sync, with
    /// no delayed allocation pending).
    ///
    /// ext4: equal. f_bfree is the free-cluster counter, GETFSMAP reports
    /// the free clusters of the block bitmaps.
    ///
    /// xfs: GETFSMAP reports the records of the free-space btrees (the
    /// AGFs' `freeblks`), f_bfree is the free-block counter less what xfs
    /// withholds: the reserve pool (`xfs_io -x -c resblks`: 5% of the data
    /// blocks, at most 8192 blocks), the per-AG metadata reservations
    /// (finobt, refcount and rmap btrees) and the allocation set-aside;
    /// while blocks on the AG free lists count in f_bfree but are not
    /// free records. So GETFSMAP is larger by the reserve pool plus a
    /// little: on a 300 MiB filesystem (4 AGs, 4 KiB blocks), 0.7% of the
    /// size without the rmap btree and 1.9% with it.
    fn check_free_vs_statvfs(fs_type: &str, mp: &Path, fsmap_free: u64, bfree: u64, size: u64) {
        if fs_type == "ext4" {
            assert_eq!(fsmap_free, bfree);
            return;
        }
        let out = vss_testkit::run("xfs_io", &["-x", "-c", "resblks", mp.to_str().unwrap()]);
        let resblks: u64 = out
            .lines()
            .find_map(|l| l.strip_prefix("reserved blocks = "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("xfs_io resblks said {out:?}"));
        let (_, _, bsize) = statvfs(mp);
        let pool = resblks * bsize;
        assert!(
            fsmap_free >= bfree + pool,
            "GETFSMAP {fsmap_free} < f_bfree {bfree} + reserve pool {pool}"
        );
        let rest = fsmap_free - bfree - pool;
        let _ = std::io::Write::write_fmt(
            &mut io::stderr(),
            format_args!("xfs: reserve pool {pool} B, other reservations {rest} B\n"),
        );
        assert!(
            rest <= size / 25,
            "{rest} bytes more than f_bfree + reserve pool"
        );
    }

    #[test]
    fn priv_free_extents_ext4() {
        if vss_testkit::privileged("priv_free_extents_ext4") {
            let fs = vss_testkit::LoopFs::new("ext4", 64);
            free_space_of("ext4", &fs.mount_point, Path::new(&fs.device));
        }
    }

    #[test]
    fn priv_free_extents_ext4_4k_bigalloc() {
        if vss_testkit::privileged("priv_free_extents_ext4_4k_bigalloc") {
            let fs = Scratch::new(
                "ext4",
                128,
                &["-F", "-q", "-b", "4096", "-O", "bigalloc", "-C", "16384"],
            );
            free_space_of("ext4", &fs.mount_point, &fs.device);
        }
    }

    #[test]
    fn priv_free_extents_xfs() {
        if vss_testkit::privileged("priv_free_extents_xfs") {
            let fs = vss_testkit::LoopFs::new("xfs", 300);
            free_space_of("xfs", &fs.mount_point, Path::new(&fs.device));
        }
    }

    /// With the reverse-mapping btree xfs names every block's owner; the
    /// file's records carry its inode number and its file offsets.
    #[test]
    fn priv_free_extents_xfs_rmapbt() {
        if !vss_testkit::privileged("priv_free_extents_xfs_rmapbt") {
            return;
        }
        let fs = Scratch::new("xfs", 300, &["-f", "-q", "-m", "rmapbt=1"]);
        let path = fs.mount_point.join("owned");
        vss_testkit::write_file(&path, &vec![7u8; 1 << 20]);
        File::open(&path).unwrap().sync_all().unwrap();
        let ino = std::fs::metadata(&path).unwrap().ino();
        let extents = file_extents(&path).unwrap();
        let mut owned = Vec::new();
        for_each_mapping(&fs.mount_point, FSMAP_RECS as u32, |recs, _| {
            owned.extend(
                recs.iter()
                    .filter(|r| r.fmr_flags & FMR_OF_SPECIAL_OWNER == 0 && r.fmr_owner == ino)
                    .map(|r| (r.fmr_offset, r.fmr_physical, r.fmr_length)),
            )
        })
        .unwrap();
        let fiemap: Vec<_> = extents
            .iter()
            .map(|e| (e.logical, e.physical, e.length))
            .collect();
        assert_eq!(owned, fiemap);
        std::fs::remove_file(&path).unwrap();
        free_space_of("xfs", &fs.mount_point, &fs.device);
    }

    /// Paging through the records a few at a time gives the same answer
    /// as large batches, on a filesystem whose free space is fragmented.
    #[test]
    fn priv_free_extents_paging() {
        if !vss_testkit::privileged("priv_free_extents_paging") {
            return;
        }
        for fs_type in ["ext4", "xfs"] {
            let fs = vss_testkit::LoopFs::new(fs_type, 0);
            for i in 0..200 {
                vss_testkit::write_file(&fs.path(&format!("f{i}")), &vec![1u8; 20_000]);
            }
            sync_fs(&fs.mount_point);
            for i in (0..200).step_by(2) {
                std::fs::remove_file(fs.path(&format!("f{i}"))).unwrap();
            }
            // Frozen, so nothing changes between the runs (xfs would
            // otherwise still be freeing the deleted files' blocks).
            crate::freeze(&fs.mount_point).unwrap();
            let all = free_extents(&fs.mount_point).unwrap().unwrap();
            assert!(all.len() > 50, "{fs_type}: only {} free extents", all.len());
            for per_call in [1, 2, 3, 7] {
                let mut free = Vec::new();
                let mut calls = 0;
                for_each_mapping(&fs.mount_point, per_call, |recs, d| {
                    calls += 1;
                    assert!(recs.len() <= per_call as usize);
                    collect_free(recs, d, &mut free);
                })
                .unwrap();
                assert!(
                    calls * per_call as usize >= all.len(),
                    "{fs_type}, {per_call} per call: {calls} calls"
                );
                assert_eq!(merge(free), all, "{fs_type}, {per_call} per call");
            }
            crate::thaw(&fs.mount_point).unwrap();
        }
    }

    #[test]
    fn priv_free_extents_btrfs_is_unsupported() {
        if !vss_testkit::privileged("priv_free_extents_btrfs_is_unsupported") {
            return;
        }
        let fs = vss_testkit::LoopFs::new("btrfs", 128);
        vss_testkit::write_file(&fs.path("f"), b"x");
        assert_eq!(free_extents(&fs.mount_point).unwrap(), None);
    }
}
