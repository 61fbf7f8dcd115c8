//! Where the engine's bytes live. The engine only sees [`Backing`] (a
//! random-access file or device) and [`StorageFiles`] (the three files of one
//! shadow storage), so the same code runs on real files and, in the property
//! tests, in memory.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// A random-access byte store: the live volume, or one file of shadow
/// storage.
pub trait Backing: Send + Sync {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Reads like `read_at` if that needs no wait for a device (the page
    /// cache holds it all) and returns true; returns false, with `buf` in
    /// any state, if it would wait. By default every read counts as cached.
    fn read_cached(&self, buf: &mut [u8], offset: u64) -> io::Result<bool> {
        self.read_at(buf, offset).map(|()| true)
    }
    /// Hints that `len` bytes at `offset` are read soon: the store may start
    /// reading them now, without waiting. By default nothing.
    fn prefetch(&self, _offset: u64, _len: u64) {}
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Like `write_at`, but past the page cache where the store allows it
    /// and `buf`, `offset` and the length are aligned to [`DIRECT_ALIGN`].
    /// Durable, like any write, only after `sync`.
    fn write_at_direct(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_at(buf, offset)
    }
    /// Writes `parts` one after the other from `offset`, as
    /// `write_at_direct` does, in one request where the store allows.
    fn write_parts_direct(&self, parts: &[&[u8]], offset: u64) -> io::Result<()> {
        let mut at = offset;
        for part in parts {
            self.write_at_direct(part, at)?;
            at += part.len() as u64;
        }
        Ok(())
    }
    /// Returns when every completed write is durable.
    fn sync(&self) -> io::Result<()>;
    fn len(&self) -> io::Result<u64>;
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Reserves space so that writes below `len` cannot fail for lack of
    /// space; grows the store if needed. `ENOSPC` when the filesystem is full.
    fn reserve(&self, len: u64) -> io::Result<()>;
    fn truncate(&self, len: u64) -> io::Result<()>;
    /// Takes the space of holes below the end, where the store can do so
    /// without writing (so `allocated_len` then covers the whole store).
    fn fill_holes(&self) -> io::Result<()> {
        Ok(())
    }
    /// How many bytes from the start are known to have their space taken
    /// (written or reserved), so that overwriting them cannot fail with
    /// `ENOSPC` on a filesystem that overwrites in place. May understate,
    /// never overstate. By default the whole store.
    fn allocated_len(&self) -> io::Result<u64> {
        self.len()
    }
}

/// Alignment of buffers, offsets and lengths for direct I/O.
pub const DIRECT_ALIGN: usize = 4096;

/// A zeroed byte buffer whose start is aligned to [`DIRECT_ALIGN`], so it
/// can be written with direct I/O.
pub struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    pub fn zeroed(len: usize) -> AlignedBuf {
        let raw = vec![0u8; len + DIRECT_ALIGN];
        let start = raw.as_ptr().align_offset(DIRECT_ALIGN).min(DIRECT_ALIGN);
        AlignedBuf { raw, start, len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

fn is_aligned(buf: &[u8], offset: u64) -> bool {
    buf.as_ptr().align_offset(DIRECT_ALIGN) == 0 && is_aligned_range(buf.len(), offset)
}

fn is_aligned_range(len: usize, offset: u64) -> bool {
    len.is_multiple_of(DIRECT_ALIGN) && offset.is_multiple_of(DIRECT_ALIGN as u64)
}

/// A file or block device.
pub struct FileBacking {
    file: File,
    /// The same file opened with `O_DIRECT`, for [`Backing::write_at_direct`];
    /// None where the filesystem refuses direct I/O (tmpfs).
    direct: Option<File>,
    /// `reserve` allocates (`fallocate`) instead of writing zeros.
    allocate: bool,
    /// Writes of at least this many bytes whose offset and length are
    /// aligned go past the page cache, through an aligned copy where the
    /// caller's memory is not aligned (`with_large_writes_direct`).
    direct_from: Option<usize>,
    is_block_device: bool,
}

impl FileBacking {
    pub fn open(path: &Path, writable: bool) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(writable).open(path)?;
        Self::from_file(file)
    }

    /// Also opens `path` for direct writes, where the filesystem allows.
    /// Shadow storage's data file uses them for copies: they need no page
    /// cache (whose fresh pages cost more than the disk write on some
    /// machines), and a later sync flushes only the device cache.
    pub fn with_direct_writes(mut self, path: &Path) -> Self {
        self.direct = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok();
        self
    }

    /// Opens `path` again with `O_DIRECT` and sends every aligned write of
    /// at least `min_len` bytes through it (memory the caller gives
    /// unaligned is copied through an aligned buffer). For the live volume:
    /// on machines where fresh page-cache pages are slow to get, a large
    /// write through the page cache costs several times the disk write,
    /// while small writes gain from the cache (rewrites of the same blocks
    /// before a flush reach the disk once). Reads stay in the page cache
    /// (the kernel writes back a cached range before a direct write over
    /// it and drops it after, so reads see every write).
    pub fn with_large_writes_direct(mut self, path: &Path, min_len: usize) -> Self {
        self = self.with_direct_writes(path);
        self.direct_from = self.direct.as_ref().map(|_| min_len.max(DIRECT_ALIGN));
        self
    }

    /// `reserve` then takes space with `fallocate`, where the filesystem
    /// can, instead of writing zeros: shadow storage's data file grows by
    /// the copies written into it, so zeros first would double its writes.
    /// (Overwriting blocks allocated this way changes extent metadata once;
    /// the barrier's sync commits that along with the copies.)
    pub fn with_allocating_reserve(mut self) -> Self {
        self.allocate = true;
        self
    }

    fn fallocate(&self, offset: u64, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let to_off = |v: u64| {
            libc::off_t::try_from(v).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
        };
        nix::fcntl::fallocate(
            self.file.as_raw_fd(),
            nix::fcntl::FallocateFlags::empty(),
            to_off(offset)?,
            to_off(len)?,
        )
        .map_err(|e| io::Error::from_raw_os_error(e as i32))
    }

    /// A direct write, through the page cache where the device refuses it
    /// (`EINVAL`: an alignment this file's device does not take): a live
    /// write or a copy must not fail for the way it was sent.
    fn write_direct_or_cached(&self, direct: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        match direct.write_all_at(buf, offset) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.file.write_all_at(buf, offset),
            r => r,
        }
    }

    /// The direct file, when a write of `len` bytes at `offset` goes
    /// through it whatever its memory's alignment.
    fn large_direct_for(&self, len: usize, offset: u64) -> Option<&File> {
        self.direct.as_ref().filter(|_| {
            self.direct_from.is_some_and(|min| len >= min) && is_aligned_range(len, offset)
        })
    }

    pub fn create_new(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        // On btrfs an overwrite of space the file holds would take new
        // space (and fail with ENOSPC when the filesystem is full): the
        // shadow storage overwrites slots, journal and superblock in place,
        // and its chunks carry their own crc32c.
        if let Err(e) = vss_sys::set_nocow_if_btrfs(&file) {
            tracing::warn!(path = %path.display(), error = %e, "cannot mark a shadow storage file no-copy-on-write; a full filesystem may then cost shadows instead of evicting the oldest");
        }
        Self::from_file(file)
    }

    pub fn from_file(file: File) -> io::Result<Self> {
        use std::os::unix::fs::FileTypeExt;
        let is_block_device = file.metadata()?.file_type().is_block_device();
        Ok(FileBacking {
            file,
            direct: None,
            allocate: false,
            direct_from: None,
            is_block_device,
        })
    }
}

/// Largest piece one aligned copy carries for a direct write of unaligned
/// memory; longer writes go in pieces.
const BOUNCE_BYTES: usize = 1 << 20;

thread_local! {
    /// Per thread: the aligned copy of `FileBacking::with_large_writes_direct`.
    static BOUNCE: std::cell::RefCell<AlignedBuf> =
        std::cell::RefCell::new(AlignedBuf::zeroed(0));
}

/// Runs `f` on an aligned buffer of `len` bytes (at most `BOUNCE_BYTES`).
fn with_bounce<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    BOUNCE.with(|b| {
        let mut b = b.borrow_mut();
        if b.len() < len {
            *b = AlignedBuf::zeroed(len.max(BOUNCE_BYTES));
        }
        f(&mut b.as_mut_slice()[..len])
    })
}

impl Backing for FileBacking {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn read_cached(&self, buf: &mut [u8], offset: u64) -> io::Result<bool> {
        let mut done = 0;
        while done < buf.len() {
            match vss_sys::pread_cached(&self.file, &mut buf[done..], offset + done as u64) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => done += n,
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return Ok(false),
                // No RWF_NOWAIT here: an ordinary read.
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                    self.read_at(&mut buf[done..], offset + done as u64)?;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// `POSIX_FADV_WILLNEED`: the kernel starts reading into the page cache
    /// and returns, so many scattered reads can be in flight at once.
    fn prefetch(&self, offset: u64, len: u64) {
        let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len))
        else {
            return;
        };
        // Only a hint: a failure changes nothing but speed.
        use std::os::fd::AsRawFd;
        let _ = nix::fcntl::posix_fadvise(
            self.file.as_raw_fd(),
            offset,
            len,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED,
        );
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if let Some(d) = self.large_direct_for(buf.len(), offset) {
            if !is_aligned(buf, offset) {
                for (i, piece) in buf.chunks(BOUNCE_BYTES).enumerate() {
                    let at = offset + (i * BOUNCE_BYTES) as u64;
                    with_bounce(piece.len(), |b| {
                        b.copy_from_slice(piece);
                        self.write_direct_or_cached(d, b, at)
                    })?;
                }
                return Ok(());
            }
        }
        match &self.direct {
            Some(d) if is_aligned(buf, offset) => self.write_direct_or_cached(d, buf, offset),
            _ => self.file.write_all_at(buf, offset),
        }
    }

    /// One `pwritev` when every part is aligned: one large request costs
    /// the filesystem less than many (one extent update per request).
    fn write_parts_direct(&self, parts: &[&[u8]], offset: u64) -> io::Result<()> {
        let mut at = offset;
        let mut rest = parts;
        if let Some(d) = &self.direct {
            let aligned = parts.iter().all(|p| is_aligned(p, at)) && parts.len() <= 1024;
            if aligned {
                let slices: Vec<io::IoSlice<'_>> =
                    parts.iter().map(|p| io::IoSlice::new(p)).collect();
                let off = libc::off_t::try_from(offset)
                    .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
                // Refused (EINVAL): part by part, where each write falls
                // back to the page cache.
                let mut written = match nix::sys::uio::pwritev(d, &slices, off) {
                    Err(nix::errno::Errno::EINVAL) => 0,
                    r => r.map_err(|e| io::Error::from_raw_os_error(e as i32))?,
                };
                // A short write: the rest part by part.
                while let Some((first, tail)) = rest.split_first() {
                    if written < first.len() {
                        let left = &first[written..];
                        self.write_at_direct(left, at + written as u64)?;
                        at += first.len() as u64;
                        rest = tail;
                        break;
                    }
                    written -= first.len();
                    at += first.len() as u64;
                    rest = tail;
                }
            }
        }
        for part in rest {
            self.write_at_direct(part, at)?;
            at += part.len() as u64;
        }
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        if self.is_block_device {
            use std::io::{Seek, SeekFrom};
            // Seeking to the end of a block device yields its size, without
            // an ioctl.
            let mut f = &self.file;
            f.seek(SeekFrom::End(0))
        } else {
            Ok(self.file.metadata()?.len())
        }
    }

    /// Allocates with `fallocate` when set up to (the data file), else,
    /// or where the filesystem cannot, writes zeros: a later overwrite of
    /// written blocks changes no file metadata, so a sync of a small file
    /// (the journal) flushes data only instead of committing the
    /// filesystem's journal.
    fn reserve(&self, len: u64) -> io::Result<()> {
        const STEP: usize = 1 << 20;
        let cur = self.len()?;
        if len <= cur {
            return Ok(());
        }
        if self.allocate && !self.is_block_device {
            match self.fallocate(cur, len - cur) {
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
                done => return done,
            }
        }
        // Direct writes where possible: dirty zero pages in the cache would
        // have to reach the disk before a direct write of a copy over them.
        let zeros = AlignedBuf::zeroed(STEP);
        let mut off = cur;
        while off < len {
            let n = (len - off).min(STEP as u64) as usize;
            self.write_at_direct(&zeros.as_slice()[..n], off)?;
            off += n as u64;
        }
        Ok(())
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn fill_holes(&self) -> io::Result<()> {
        let len = self.len()?;
        if !self.allocate || self.is_block_device || len == 0 {
            return Ok(());
        }
        match self.fallocate(0, len) {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(()),
            done => done,
        }
    }

    /// A file without holes is allocated to its end; one with holes counts
    /// as not allocated at all (finding the first hole needs `SEEK_HOLE`,
    /// and understating only costs speed).
    fn allocated_len(&self) -> io::Result<u64> {
        use std::os::unix::fs::MetadataExt;
        let len = self.len()?;
        if self.is_block_device {
            return Ok(len);
        }
        let taken = self.file.metadata()?.blocks().saturating_mul(512);
        Ok(if taken >= len { len } else { 0 })
    }
}

/// Bytes in memory, with an optional capacity past which `reserve` fails
/// with `ENOSPC` (to test the storage-full path).
#[derive(Clone, Default)]
pub struct MemBacking {
    inner: Arc<Mutex<MemInner>>,
}

#[derive(Default)]
struct MemInner {
    bytes: Vec<u8>,
    capacity: Option<u64>,
    /// Every write, reserve and sync fails with EIO (a dying disk).
    failing: bool,
}

impl MemBacking {
    pub fn new(len: u64) -> Self {
        let m = MemBacking::default();
        m.lock().bytes = vec![0; len as usize];
        m
    }

    pub fn with_capacity_limit(self, capacity: u64) -> Self {
        self.lock().capacity = Some(capacity);
        self
    }

    /// From now on, writes, reserves and syncs fail with EIO (or work
    /// again): for tests of the failure paths.
    pub fn set_failing(&self, failing: bool) {
        self.lock().failing = failing;
    }

    fn check_failing(&self) -> io::Result<()> {
        if self.lock().failing {
            Err(io::Error::from_raw_os_error(5)) // EIO
        } else {
            Ok(())
        }
    }

    pub fn snapshot(&self) -> Vec<u8> {
        self.lock().bytes.clone()
    }

    fn lock(&self) -> MutexGuard<'_, MemInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Backing for MemBacking {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let g = self.lock();
        let start = offset as usize;
        let end = start
            .checked_add(buf.len())
            .filter(|&e| e <= g.bytes.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(&g.bytes[start..end]);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check_failing()?;
        let mut g = self.lock();
        let start = offset as usize;
        let end = start + buf.len();
        if end > g.bytes.len() {
            if g.capacity.is_some_and(|c| end as u64 > c) {
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
            g.bytes.resize(end, 0);
        }
        g.bytes[start..end].copy_from_slice(buf);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        self.check_failing()
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.lock().bytes.len() as u64)
    }

    fn reserve(&self, len: u64) -> io::Result<()> {
        self.check_failing()?;
        let mut g = self.lock();
        if len as usize > g.bytes.len() {
            if g.capacity.is_some_and(|c| len > c) {
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
            g.bytes.resize(len as usize, 0);
        }
        Ok(())
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.lock().bytes.resize(len as usize, 0);
        Ok(())
    }
}

/// The three files of one volume's shadow storage.
pub trait StorageFiles: Send + Sync {
    fn superblock(&self) -> &dyn Backing;
    fn data(&self) -> &dyn Backing;
    fn journal(&self) -> Arc<dyn Backing>;
    /// Atomically replaces the journal with `contents` (durable on return):
    /// a crash leaves either the old journal or the new one.
    fn replace_journal(&self, contents: &[u8]) -> io::Result<()>;
}

/// Shadow storage in a directory: `superblock`, `journal`, `data`.
pub struct DirStorage {
    dir: PathBuf,
    superblock: FileBacking,
    data: FileBacking,
    journal: Mutex<Arc<dyn Backing>>,
}

pub const SUPERBLOCK_FILE: &str = "superblock";
pub const JOURNAL_FILE: &str = "journal";
pub const DATA_FILE: &str = "data";

impl DirStorage {
    /// Creates the files in `dir`, which must exist and hold none of them.
    pub fn create(dir: &Path) -> io::Result<Self> {
        let superblock = FileBacking::create_new(&dir.join(SUPERBLOCK_FILE))?;
        let data = FileBacking::create_new(&dir.join(DATA_FILE))?
            .with_direct_writes(&dir.join(DATA_FILE))
            .with_allocating_reserve();
        let journal = FileBacking::create_new(&dir.join(JOURNAL_FILE))?;
        sync_dir(dir)?;
        Ok(DirStorage {
            dir: dir.to_owned(),
            superblock,
            data,
            journal: Mutex::new(Arc::new(journal)),
        })
    }

    pub fn open(dir: &Path) -> io::Result<Self> {
        Ok(DirStorage {
            dir: dir.to_owned(),
            superblock: FileBacking::open(&dir.join(SUPERBLOCK_FILE), true)?,
            data: FileBacking::open(&dir.join(DATA_FILE), true)?
                .with_direct_writes(&dir.join(DATA_FILE))
                .with_allocating_reserve(),
            journal: Mutex::new(Arc::new(FileBacking::open(&dir.join(JOURNAL_FILE), true)?)),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl StorageFiles for DirStorage {
    fn superblock(&self) -> &dyn Backing {
        &self.superblock
    }

    fn data(&self) -> &dyn Backing {
        &self.data
    }

    fn journal(&self) -> Arc<dyn Backing> {
        self.journal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn replace_journal(&self, contents: &[u8]) -> io::Result<()> {
        let tmp = self.dir.join("journal.new");
        let _ = std::fs::remove_file(&tmp);
        let f = FileBacking::create_new(&tmp)?;
        f.write_at(contents, 0)?;
        f.sync()?;
        std::fs::rename(&tmp, self.dir.join(JOURNAL_FILE))?;
        sync_dir(&self.dir)?;
        *self.journal.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(f);
        Ok(())
    }
}

/// Shadow storage in memory, for tests.
#[derive(Clone)]
pub struct MemStorage {
    pub superblock: MemBacking,
    pub data: MemBacking,
    journal: Arc<Mutex<MemBacking>>,
}

impl MemStorage {
    /// `capacity`: bytes the data file may reach before `ENOSPC`.
    pub fn new(capacity: Option<u64>) -> Self {
        let data = MemBacking::new(0);
        let data = match capacity {
            Some(c) => data.with_capacity_limit(c),
            None => data,
        };
        MemStorage {
            superblock: MemBacking::new(0),
            data,
            journal: Arc::new(Mutex::new(MemBacking::new(0))),
        }
    }
}

impl MemStorage {
    /// The journal as it is now (shares its bytes and failure switch).
    pub fn journal_backing(&self) -> MemBacking {
        self.journal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl StorageFiles for MemStorage {
    fn superblock(&self) -> &dyn Backing {
        &self.superblock
    }

    fn data(&self) -> &dyn Backing {
        &self.data
    }

    fn journal(&self) -> Arc<dyn Backing> {
        Arc::new(
            self.journal
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }

    fn replace_journal(&self, contents: &[u8]) -> io::Result<()> {
        let fresh = MemBacking::new(0);
        fresh.write_at(contents, 0)?;
        *self.journal.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_file(dir: &Path) -> FileBacking {
        let path = dir.join("data");
        FileBacking::create_new(&path)
            .unwrap()
            .with_direct_writes(&path)
            .with_allocating_reserve()
    }

    #[test]
    fn large_writes_go_direct_from_any_memory_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live");
        std::fs::write(&path, vec![0u8; 8 << 20]).unwrap();
        let live = FileBacking::open(&path, true)
            .unwrap()
            .with_large_writes_direct(&path, 64 << 10);
        let mut model = vec![0u8; 8 << 20];
        let pattern = |len: usize, seed: u8| -> Vec<u8> {
            (0..len)
                .map(|i| (i as u8).wrapping_mul(31) ^ seed)
                .collect()
        };
        // (memory misaligned by, length, offset): large and aligned in the
        // file (direct, through the aligned copy, in pieces past its size),
        // small, and unaligned in the file (page cache).
        for (k, &(skew, len, offset)) in [
            (1usize, 1usize << 20, 64u64 << 10),
            (0, 256 << 10, 2 << 20),
            (3, (2 << 20) + (512 << 10), 3 << 20),
            (5, 4096, 4096),
            (7, 100, 5),
            (0, (128 << 10) + 7, 6 << 20),
        ]
        .iter()
        .enumerate()
        {
            let mut mem = vec![0u8; len + skew];
            mem[skew..].copy_from_slice(&pattern(len, k as u8));
            live.write_at(&mem[skew..], offset).unwrap();
            model[offset as usize..offset as usize + len].copy_from_slice(&mem[skew..]);
            // Reads through the page cache see every write at once.
            let mut back = vec![0u8; len];
            live.read_at(&mut back, offset).unwrap();
            assert!(back == mem[skew..], "write {k} reads back");
        }
        live.sync().unwrap();
        assert!(std::fs::read(&path).unwrap() == model);
    }

    #[test]
    fn reserve_takes_space_and_holes_are_filled() {
        let dir = tempfile::tempdir().unwrap();
        let data = data_file(dir.path());
        data.reserve(1 << 20).unwrap();
        assert_eq!(data.len().unwrap(), 1 << 20);
        assert_eq!(data.allocated_len().unwrap(), 1 << 20);
        // A sparse tail, as an older version left it: not counted as taken
        // until filled.
        data.file.set_len(4 << 20).unwrap();
        assert_eq!(data.allocated_len().unwrap(), 0);
        data.fill_holes().unwrap();
        assert_eq!(data.allocated_len().unwrap(), 4 << 20);
        assert_eq!(data.len().unwrap(), 4 << 20);
    }

    #[test]
    fn parts_land_one_after_the_other() {
        let dir = tempfile::tempdir().unwrap();
        let data = data_file(dir.path());
        data.reserve(64 << 10).unwrap();
        let mut a = AlignedBuf::zeroed(8192);
        a.as_mut_slice().fill(0xaa);
        let mut b = AlignedBuf::zeroed(4096);
        b.as_mut_slice().fill(0xbb);
        // Aligned parts (one vectored request) and an unaligned one
        // (written part by part through the page cache).
        data.write_parts_direct(&[a.as_slice(), b.as_slice()], 4096)
            .unwrap();
        data.write_parts_direct(&[&[0xcc; 100], &[0xdd; 28]], 20000)
            .unwrap();
        let mut back = vec![0u8; 64 << 10];
        data.read_at(&mut back, 0).unwrap();
        assert!(back[..4096].iter().all(|&x| x == 0));
        assert!(back[4096..12288].iter().all(|&x| x == 0xaa));
        assert!(back[12288..16384].iter().all(|&x| x == 0xbb));
        assert!(back[20000..20100].iter().all(|&x| x == 0xcc));
        assert!(back[20100..20128].iter().all(|&x| x == 0xdd));
        assert!(back[16384..20000].iter().all(|&x| x == 0));
    }
}
