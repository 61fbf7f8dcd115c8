//! Loop devices (linux/loop.h): a file, or another block device, exposed
//! as a block device, so that a filesystem image (or a copy-on-write view
//! of a volume served by a FUSE file) can be mounted or probed like a disk.
//!
//! A device is taken with `LOOP_CTL_GET_FREE` on `/dev/loop-control` and
//! set up in one step with `LOOP_CONFIGURE` (Linux ≥ 5.8): backing file,
//! flags and block size are applied atomically, so no other process ever
//! sees the device bound but not yet read-only. Another process may take
//! the same free device between the two calls; `LOOP_CONFIGURE` then fails
//! with `EBUSY` and the next free device is tried.
//!
//! What the kernel knows about a bound device is read from sysfs
//! (`/sys/dev/block/7:N/loop/…`), which needs no privilege and opens no
//! device.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::check;

// linux/loop.h; libc does not export these.
const LOOP_CLR_FD: libc::Ioctl = 0x4C01;
const LOOP_CONFIGURE: libc::Ioctl = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::Ioctl = 0x4C82;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_FLAGS_DIRECT_IO: u32 = 16;
const LO_NAME_SIZE: usize = 64;
/// The block major of loop devices (`LOOP_MAJOR`).
const LOOP_MAJOR: u32 = 7;

/// How often a lost race for a free device (or a transient `EBUSY` on
/// detach) is retried.
const ATTEMPTS: u32 = 8;

/// `struct loop_info64` (232 bytes).
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` (304 bytes), the argument of `LOOP_CONFIGURE`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const _: () = assert!(std::mem::size_of::<LoopInfo64>() == 232);
const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);

/// How [`attach`] sets up the device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoopOptions {
    /// The device is read-only (`LO_FLAGS_READ_ONLY`) and the backing file
    /// is opened read-only, so it needs no write permission.
    pub read_only: bool,
    /// The loop driver reads and writes the backing file with direct I/O
    /// (`LO_FLAGS_DIRECT_IO`), bypassing the page cache of the backing
    /// file so data is not cached twice. [`attach`] fails rather than
    /// silently falling back to buffered I/O as the kernel would.
    pub direct_io: bool,
    /// The kernel detaches the device by itself on its last close
    /// (`LO_FLAGS_AUTOCLEAR`), e.g. when the filesystem mounted from it is
    /// unmounted and the [`LoopDevice`] is dropped.
    pub autoclear: bool,
    /// Logical block size of the device (512, 1024, 2048 or 4096; at most
    /// the page size). `None`: the kernel's default (512, or the backing
    /// device's logical block size with direct I/O).
    pub block_size: Option<u32>,
}

/// A loop device set up by [`attach`].
///
/// It keeps the device open: with [`LoopOptions::autoclear`] that is what
/// keeps the device bound until it is used (mounted) elsewhere. Dropping it
/// only closes that descriptor; without autoclear the device stays bound
/// until [`detach`] (or [`LoopDevice::detach`]).
#[derive(Debug)]
pub struct LoopDevice {
    number: u32,
    path: PathBuf,
    file: File,
}

impl LoopDevice {
    /// `/dev/loopN`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `N` of `/dev/loopN` (the device's minor number).
    pub fn number(&self) -> u32 {
        self.number
    }

    /// Whether the loop driver really does direct I/O on the backing file
    /// (`/sys/block/loopN/loop/dio`).
    pub fn direct_io_active(&self) -> io::Result<bool> {
        sys_flag(self.number, "loop/dio")
    }

    /// Closes this handle's descriptor, then detaches the device (see
    /// [`detach`]). With autoclear the close alone may already have
    /// released it.
    pub fn detach(self) -> io::Result<()> {
        let LoopDevice { path, file, .. } = self;
        drop(file);
        detach(&path)
    }
}

impl AsFd for LoopDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Binds `backing` (a regular file or a block device) to a free loop device
/// with `opts`, all in one `LOOP_CONFIGURE`. Needs `CAP_SYS_ADMIN`.
///
/// With [`LoopOptions::direct_io`] the backing file is opened `O_DIRECT`,
/// so a filesystem without direct I/O fails at once (`EINVAL`), and after
/// the setup `/sys/block/loopN/loop/dio` is checked: if the kernel fell
/// back to buffered I/O (e.g. a block size smaller than the backing
/// device's sectors) the device is detached again and an
/// [`io::ErrorKind::Unsupported`] error returned.
pub fn attach(backing: &Path, opts: &LoopOptions) -> io::Result<LoopDevice> {
    let mut open = OpenOptions::new();
    open.read(true).write(!opts.read_only);
    if opts.direct_io {
        open.custom_flags(libc::O_DIRECT);
    }
    let file = open.open(backing).map_err(|e| {
        if opts.direct_io && e.raw_os_error() == Some(libc::EINVAL) {
            io::Error::new(
                io::ErrorKind::Unsupported,
                format!("the backing file refuses O_DIRECT: {e}"),
            )
        } else {
            e
        }
    })?;
    let config = loop_config(&file, backing, opts)?;
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")?;

    let mut last_err = None;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(10 << attempt.min(4)));
        }
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device
        // number (creating the device if needed); `control` is open.
        let n = check(unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) })?;
        let number = u32::try_from(n).map_err(|_| io::Error::other("bad loop device number"))?;
        let path = PathBuf::from(format!("/dev/loop{number}"));
        let dev = match OpenOptions::new()
            .read(true)
            .write(!opts.read_only)
            .open(&path)
        {
            Ok(dev) => dev,
            // Removed (LOOP_CTL_REMOVE) since GET_FREE: ask again.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENXIO)) => {
                last_err = Some(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        // SAFETY: LOOP_CONFIGURE reads one `struct loop_config` through the
        // pointer, which points to a live, exactly laid out `LoopConfig`;
        // `dev` and the backing `file` (whose descriptor is in it) stay
        // open across the call.
        match check(unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &config) }) {
            Ok(_) => {
                let device = LoopDevice {
                    number,
                    path,
                    file: dev,
                };
                if opts.direct_io && !device.direct_io_active()? {
                    let _ = device.detach();
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        "the loop driver cannot do direct I/O on this backing file \
                         (it would have fallen back to buffered I/O)",
                    ));
                }
                return Ok(device);
            }
            // Another process bound this device since GET_FREE: next one.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EBUSY)))
}

/// The `LOOP_CONFIGURE` argument for `file` (opened from `backing`).
fn loop_config(file: &File, backing: &Path, opts: &LoopOptions) -> io::Result<LoopConfig> {
    let mut flags = 0;
    if opts.read_only {
        flags |= LO_FLAGS_READ_ONLY;
    }
    if opts.autoclear {
        flags |= LO_FLAGS_AUTOCLEAR;
    }
    if opts.direct_io {
        flags |= LO_FLAGS_DIRECT_IO;
    }
    // Informational only (LOOP_GET_STATUS shows it; sysfs shows the real
    // path): the path, truncated, NUL-terminated.
    let mut lo_file_name = [0u8; LO_NAME_SIZE];
    let name = backing.as_os_str().as_bytes();
    let len = name.len().min(LO_NAME_SIZE - 1);
    lo_file_name[..len].copy_from_slice(&name[..len]);
    let fd = u32::try_from(file.as_raw_fd()).map_err(|_| io::Error::other("bad descriptor"))?;
    Ok(LoopConfig {
        fd,
        block_size: opts.block_size.unwrap_or(0),
        info: LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: flags,
            lo_file_name,
            lo_crypt_name: [0; LO_NAME_SIZE],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        },
        reserved: [0; 8],
    })
}

/// Detaches the loop device `dev` from its backing file (`LOOP_CLR_FD`).
///
/// - Not bound (`ENXIO`: never attached, already detached, or a detach
///   already pending): `Ok(())`, so cleanup paths can call it blindly.
/// - Still open elsewhere (e.g. mounted): the kernel accepts the request,
///   marks the device autoclear and releases it on its last close, so this
///   returns `Ok(())` while the device is still bound for a while.
/// - `EBUSY` (the device is being set up or torn down concurrently): retried
///   a few times, then returned.
pub fn detach(dev: &Path) -> io::Result<()> {
    let file = OpenOptions::new().read(true).open(dev)?;
    if !file.metadata()?.file_type().is_block_device() {
        return Err(not_a_loop_device());
    }
    let mut result = Ok(());
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(10 << attempt.min(4)));
        }
        // SAFETY: LOOP_CLR_FD takes no argument; `file` is open across the
        // call.
        result = match check(unsafe { libc::ioctl(file.as_raw_fd(), LOOP_CLR_FD, 0) }) {
            Ok(_) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Err(e),
            Err(e) => return Err(e),
        };
    }
    result
}

/// The file (or block device) the loop device `dev` is bound to, as the
/// kernel names it (`/sys/dev/block/7:N/loop/backing_file`: the path at
/// attach time in the attaching process's view, with ` (deleted)` appended
/// if it was since removed), or `None` if the device is not bound.
/// `InvalidInput` if `dev` is not a loop device.
pub fn backing_file(dev: &Path) -> io::Result<Option<PathBuf>> {
    let md = fs::metadata(dev)?;
    if !md.file_type().is_block_device() || libc::major(md.rdev()) != LOOP_MAJOR {
        return Err(not_a_loop_device());
    }
    let minor = libc::minor(md.rdev());
    read_backing_file(&PathBuf::from(format!(
        "/sys/dev/block/{LOOP_MAJOR}:{minor}/loop/backing_file"
    )))
}

/// The loop devices (`/dev/loopN`, by number) bound to `path`: those whose
/// backing file is `path` once symlinks are resolved, or is the same file
/// (same device and inode, e.g. through another bind mount).
pub fn find_by_backing_file(path: &Path) -> io::Result<Vec<PathBuf>> {
    let wanted = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let wanted_id = fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    let mut found = Vec::new();
    for entry in fs::read_dir("/sys/block")? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(number) = name
            .to_str()
            .and_then(|n| n.strip_prefix("loop"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Some(backing) = read_backing_file(&entry.path().join("loop/backing_file"))? else {
            continue;
        };
        let same = backing == wanted
            || (wanted_id.is_some()
                && fs::metadata(&backing).ok().map(|m| (m.dev(), m.ino())) == wanted_id);
        if same {
            found.push(number);
        }
    }
    found.sort_unstable();
    Ok(found
        .into_iter()
        .map(|n| PathBuf::from(format!("/dev/loop{n}")))
        .collect())
}

/// Reads a sysfs `backing_file` attribute; `None` if it does not exist
/// (the device is unbound, or went away meanwhile).
fn read_backing_file(attr: &Path) -> io::Result<Option<PathBuf>> {
    match fs::read(attr) {
        Ok(mut bytes) => {
            if bytes.last() == Some(&b'\n') {
                bytes.pop();
            }
            if bytes.is_empty() {
                return Ok(None);
            }
            Ok(Some(PathBuf::from(OsString::from_vec(bytes))))
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENXIO)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A `0`/`1` attribute under `/sys/block/loopN/`.
fn sys_flag(number: u32, attr: &str) -> io::Result<bool> {
    let text = fs::read_to_string(format!("/sys/block/loop{number}/{attr}"))?;
    parse_flag(&text)
}

fn parse_flag(text: &str) -> io::Result<bool> {
    match text.trim() {
        "0" => Ok(false),
        "1" => Ok(true),
        other => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected sysfs flag value {other:?}"),
        )),
    }
}

fn not_a_loop_device() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "not a loop device")
}

#[cfg(test)]
mod tests {
    use std::mem::offset_of;

    use super::*;

    #[test]
    fn struct_layouts_match_loop_h() {
        assert_eq!(offset_of!(LoopInfo64, lo_number), 40);
        assert_eq!(offset_of!(LoopInfo64, lo_flags), 52);
        assert_eq!(offset_of!(LoopInfo64, lo_file_name), 56);
        assert_eq!(offset_of!(LoopInfo64, lo_init), 216);
        assert_eq!(offset_of!(LoopConfig, info), 8);
        assert_eq!(offset_of!(LoopConfig, reserved), 240);
    }

    #[test]
    fn options_default_to_a_plain_writable_device() {
        let o = LoopOptions::default();
        assert!(!o.read_only && !o.direct_io && !o.autoclear);
        assert_eq!(o.block_size, None);
    }

    #[test]
    fn config_carries_flags_and_a_truncated_name() {
        let f = File::open("/proc/self/status").unwrap();
        let long = PathBuf::from("/".to_string() + &"x".repeat(100));
        let opts = LoopOptions {
            read_only: true,
            direct_io: true,
            autoclear: true,
            block_size: Some(4096),
        };
        let c = loop_config(&f, &long, &opts).unwrap();
        assert_eq!(c.info.lo_flags, 1 | 4 | 16);
        assert_eq!(c.block_size, 4096);
        assert_eq!(c.fd, f.as_raw_fd() as u32);
        assert_eq!(c.info.lo_file_name[62], b'x');
        assert_eq!(c.info.lo_file_name[63], 0);
        let c = loop_config(&f, Path::new("/img"), &LoopOptions::default()).unwrap();
        assert_eq!(c.info.lo_flags, 0);
        assert_eq!(c.block_size, 0);
        assert_eq!(&c.info.lo_file_name[..5], b"/img\0");
    }

    #[test]
    fn sysfs_flags_parse() {
        assert!(parse_flag("1\n").unwrap());
        assert!(!parse_flag("0\n").unwrap());
        assert!(parse_flag("yes").is_err());
    }

    #[test]
    fn non_loop_paths_are_rejected() {
        let e = backing_file(Path::new("/dev/null")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        let e = backing_file(Path::new("/proc/self/status")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        let e = detach(Path::new("/dev/null")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        let e = backing_file(Path::new("/nonexistent/loop0")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    }

    #[test]
    fn nothing_is_backed_by_a_fresh_file() {
        let f = tempfile::NamedTempFile::new().unwrap();
        assert!(find_by_backing_file(f.path()).unwrap().is_empty());
    }

    /// A sparse image of `mb` MiB in a fresh temporary directory.
    fn image(mb: u64) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("img");
        File::create(&img)
            .unwrap()
            .set_len(mb * 1024 * 1024)
            .unwrap();
        (dir, img)
    }

    /// Detaches a device when dropped, in case the test panics.
    struct Detach(PathBuf);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = detach(&self.0);
        }
    }

    /// Waits until the device is unbound (a deferred detach completes on
    /// the last close).
    fn wait_unbound(dev: &Path) {
        for _ in 0..100 {
            if backing_file(dev).unwrap().is_none() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{} is still bound", dev.display());
    }

    fn attach_and_check(read_only: bool) {
        let (_dir, img) = image(8);
        let dev = attach(
            &img,
            &LoopOptions {
                read_only,
                ..Default::default()
            },
        )
        .unwrap();
        let path = dev.path().to_path_buf();
        let _guard = Detach(path.clone());
        assert_eq!(path, PathBuf::from(format!("/dev/loop{}", dev.number())));
        assert_eq!(backing_file(&path).unwrap(), Some(img.clone()));
        assert_eq!(find_by_backing_file(&img).unwrap(), vec![path.clone()]);
        // Through a symlink, and through another name of the same file.
        let link = img.with_file_name("link");
        std::os::unix::fs::symlink(&img, &link).unwrap();
        assert_eq!(find_by_backing_file(&link).unwrap(), vec![path.clone()]);
        let hard = img.with_file_name("hard");
        fs::hard_link(&img, &hard).unwrap();
        assert_eq!(find_by_backing_file(&hard).unwrap(), vec![path.clone()]);
        assert_eq!(sys_flag(dev.number(), "ro").unwrap(), read_only);
        assert!(!sys_flag(dev.number(), "loop/autoclear").unwrap());
        assert!(!dev.direct_io_active().unwrap());
        assert_eq!(
            crate::block_device_size(&path).unwrap(),
            8 * 1024 * 1024,
            "device size"
        );
        // Writes through the device reach the image, or are refused (the
        // open for writing succeeds; the write fails with EPERM).
        {
            use std::os::unix::fs::FileExt;
            let w = OpenOptions::new().write(true).open(&path).unwrap();
            let r = w.write_all_at(b"through the loop", 4096);
            if read_only {
                let e = r.unwrap_err();
                assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
            } else {
                r.unwrap();
                w.sync_all().unwrap();
                drop(w);
                let back = fs::read(&img).unwrap();
                assert_eq!(&back[4096..4096 + 16], b"through the loop");
            }
        }
        // Dropping the handle does not detach a device without autoclear.
        let number = dev.number();
        drop(dev);
        assert!(backing_file(&path).unwrap().is_some());
        detach(&path).unwrap();
        wait_unbound(&path);
        assert!(find_by_backing_file(&img).unwrap().is_empty());
        assert!(!Path::new(&format!("/sys/block/loop{number}/loop")).exists());
        // A second detach is a no-op.
        detach(&path).unwrap();
    }

    #[test]
    fn priv_loop_attach_read_write() {
        if vss_testkit::privileged("priv_loop_attach_read_write") {
            attach_and_check(false);
        }
    }

    #[test]
    fn priv_loop_attach_read_only() {
        if vss_testkit::privileged("priv_loop_attach_read_only") {
            attach_and_check(true);
        }
    }

    #[test]
    fn priv_loop_direct_io_and_block_size() {
        if !vss_testkit::privileged("priv_loop_direct_io_and_block_size") {
            return;
        }
        let (_dir, img) = image(8);
        let dev = attach(
            &img,
            &LoopOptions {
                direct_io: true,
                block_size: Some(4096),
                ..Default::default()
            },
        )
        .unwrap();
        let _guard = Detach(dev.path().to_path_buf());
        assert!(dev.direct_io_active().unwrap());
        let lbs = fs::read_to_string(format!(
            "/sys/block/loop{}/queue/logical_block_size",
            dev.number()
        ))
        .unwrap();
        assert_eq!(lbs.trim(), "4096");
        dev.detach().unwrap();
        wait_unbound(&_guard.0);
    }

    #[test]
    fn direct_io_refused_by_the_backing_file() {
        // /proc files refuse O_DIRECT: the error comes before any device
        // is taken (so this needs no privilege).
        let e = attach(
            Path::new("/proc/self/status"),
            &LoopOptions {
                direct_io: true,
                read_only: true,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Unsupported, "{e}");
    }

    #[test]
    fn priv_loop_autoclear_releases_on_last_close() {
        if !vss_testkit::privileged("priv_loop_autoclear_releases_on_last_close") {
            return;
        }
        let (_dir, img) = image(8);
        let dev = attach(
            &img,
            &LoopOptions {
                autoclear: true,
                ..Default::default()
            },
        )
        .unwrap();
        let path = dev.path().to_path_buf();
        let _guard = Detach(path.clone());
        assert!(sys_flag(dev.number(), "loop/autoclear").unwrap());
        assert_eq!(backing_file(&path).unwrap(), Some(img.clone()));
        drop(dev);
        wait_unbound(&path);
    }

    #[test]
    fn priv_loop_detach_while_open_is_deferred() {
        if !vss_testkit::privileged("priv_loop_detach_while_open_is_deferred") {
            return;
        }
        let (_dir, img) = image(8);
        let dev = attach(&img, &LoopOptions::default()).unwrap();
        let path = dev.path().to_path_buf();
        let _guard = Detach(path.clone());
        // `dev` holds the device open: the detach is accepted but waits
        // for the last close.
        detach(&path).unwrap();
        assert!(backing_file(&path).unwrap().is_some());
        drop(dev);
        wait_unbound(&path);
    }

    #[test]
    fn priv_loop_parallel_attaches_get_distinct_devices() {
        if !vss_testkit::privileged("priv_loop_parallel_attaches_get_distinct_devices") {
            return;
        }
        let (_dir, img) = image(8);
        let devices: Vec<LoopDevice> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        attach(
                            &img,
                            &LoopOptions {
                                read_only: true,
                                ..Default::default()
                            },
                        )
                        .unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let guards: Vec<Detach> = devices
            .iter()
            .map(|d| Detach(d.path().to_path_buf()))
            .collect();
        let mut numbers: Vec<u32> = devices.iter().map(LoopDevice::number).collect();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), 4);
        let found = find_by_backing_file(&img).unwrap();
        assert_eq!(found.len(), 4, "{found:?}");
        for d in devices {
            d.detach().unwrap();
        }
        for g in &guards {
            wait_unbound(&g.0);
        }
    }
}
