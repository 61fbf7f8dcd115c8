//! The FUSE filesystem: one flat root directory whose regular files are the
//! published images.
//!
//! fuser runs these methods on several threads at once (one per cloned
//! `/dev/fuse` descriptor), so every method works on shared state through
//! the [`Registry`] and replies before returning. Each request is small
//! (lookups, attributes) or one engine call of at most `max_write` bytes.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    WriteFlags,
};

use crate::registry::{Node, Registry, ROOT_INO};
use crate::MAX_NAME_LEN;

/// Names are never cached: a withdrawn image disappears, and one published
/// again under the same name (a new inode) appears, at once.
const ENTRY_TTL: Duration = Duration::ZERO;
/// Attributes of one inode never change (an image's size is fixed while it
/// is published; republishing makes a new inode), so they may be cached
/// briefly; kept short anyway.
const ATTR_TTL: Duration = Duration::from_secs(1);

/// Open flags for image files. `FOPEN_DIRECT_IO` bypasses the page cache
/// for every opener, not only `O_DIRECT` ones: the filesystem on the loop
/// device caches already, a second copy here would only cost memory and
/// could go stale across republishing. `FOPEN_PARALLEL_DIRECT_WRITES` lets
/// the kernel send writes to one file concurrently (it takes the inode lock
/// shared instead of exclusive).
const IMAGE_OPEN_FLAGS: FopenFlags =
    FopenFlags::FOPEN_DIRECT_IO.union(FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES);

/// Connection settings negotiated at FUSE init.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnectionSettings {
    pub(crate) max_write: u32,
    pub(crate) max_background: u16,
}

pub(crate) struct ImageFs {
    registry: Arc<Registry>,
    settings: ConnectionSettings,
    mounted_at: SystemTime,
}

impl ImageFs {
    pub(crate) fn new(registry: Arc<Registry>, settings: ConnectionSettings) -> ImageFs {
        ImageFs {
            registry,
            settings,
            mounted_at: SystemTime::now(),
        }
    }

    fn root_attr(&self) -> FileAttr {
        FileAttr {
            ino: INodeNo(ROOT_INO),
            size: 0,
            blocks: 0,
            atime: self.mounted_at,
            mtime: self.mounted_at,
            ctime: self.mounted_at,
            crtime: self.mounted_at,
            kind: FileType::Directory,
            perm: 0o700,
            nlink: 2,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn attr_of(&self, ino: INodeNo) -> Result<FileAttr, Errno> {
        if ino.0 == ROOT_INO {
            return Ok(self.root_attr());
        }
        self.registry
            .node(ino.0)
            .map(|node| file_attr(&node))
            .ok_or(Errno::ENOENT)
    }

    /// The node behind an open file handle.
    fn open_node(&self, fh: FileHandle) -> Result<(Arc<Node>, bool), Errno> {
        let handle = self.registry.handle(fh.0).ok_or(Errno::EBADF)?;
        Ok((handle.node, handle.writable))
    }

    fn negotiate(&self, config: &mut KernelConfig) {
        let wanted = self.settings.max_write;
        let max_write = match config.set_max_write(wanted) {
            Ok(_) => wanted,
            Err(max) => {
                tracing::warn!(wanted, max, "FUSE max_write capped");
                let _ = config.set_max_write(max);
                max
            }
        };
        let _ = config.set_max_background(self.settings.max_background);
        // Without it the kernel turns loop's asynchronous direct I/O into
        // synchronous requests, one at a time per loop worker.
        let async_dio = config.add_capabilities(InitFlags::FUSE_ASYNC_DIO).is_ok();
        if !async_dio {
            tracing::warn!("kernel lacks FUSE_ASYNC_DIO; loop direct I/O will be synchronous");
        }
        tracing::info!(
            max_write,
            async_dio,
            max_background = self.settings.max_background,
            kernel_abi = %config.kernel_abi(),
            "FUSE connection initialised"
        );
    }
}

fn file_attr(node: &Node) -> FileAttr {
    FileAttr {
        ino: INodeNo(node.ino),
        size: node.size,
        blocks: node.size.div_ceil(512),
        atime: node.published_at,
        mtime: node.published_at,
        ctime: node.published_at,
        crtime: node.published_at,
        kind: FileType::RegularFile,
        perm: if node.read_only { 0o400 } else { 0o600 },
        nlink: 1,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

thread_local! {
    /// Read buffer of each request thread, kept between requests so that a
    /// 1 MiB read does not allocate (and fault in) fresh memory every time.
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn reply_empty(reply: ReplyEmpty, result: Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for ImageFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        self.negotiate(config);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent.0 != ROOT_INO {
            return reply.error(Errno::ENOENT);
        }
        match self.registry.lookup(name) {
            Some(node) => reply.entry(&ENTRY_TTL, &file_attr(&node), Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr_of(ino) {
            Ok(attr) => reply.attr(&ATTR_TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    /// Only time updates (`touch`) are accepted, and ignored; modes, owners
    /// and sizes are the front end's to decide.
    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let attr = match self.attr_of(ino) {
            Ok(attr) => attr,
            Err(e) => return reply.error(e),
        };
        let changes_size = size.is_some_and(|s| s != attr.size);
        if mode.is_some() || uid.is_some() || gid.is_some() || changes_size {
            return reply.error(Errno::EPERM);
        }
        reply.attr(&ATTR_TTL, &attr);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let writable = flags.acc_mode() != OpenAccMode::O_RDONLY;
        match self.registry.open(ino.0, writable) {
            Ok(fh) => reply.opened(FileHandle(fh), IMAGE_OPEN_FLAGS),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let node = match self.open_node(fh) {
            Ok((node, _)) => node,
            Err(e) => return reply.error(e),
        };
        READ_BUF.with_borrow_mut(|buf| match node.read(offset, size, buf) {
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => reply.error(e),
        });
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        // The kernel sends writes only for descriptors opened for writing,
        // which read-only images never have; Node::write checks again.
        // n <= data.len(), which the kernel bounds by max_write (u32).
        let written = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        // Answered as soon as the image accepts the write, which may be
        // before the call returns (see BlockImage::write_at_then).
        let mut reply = Some(reply);
        let result = self.open_node(fh).and_then(|(node, _)| {
            node.write_then(offset, data, &mut |n| {
                if let Some(r) = reply.take() {
                    r.written(written(n));
                }
            })
        });
        if let Some(r) = reply.take() {
            match result {
                Ok(n) => r.written(written(n)),
                Err(e) => r.error(e),
            }
        }
    }

    /// Called on every `close` of a descriptor. Written data is made
    /// durable here too, so that closing an image (e.g. detaching its loop
    /// device) is a durability point without an explicit fsync.
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let result = self.open_node(fh).and_then(
            |(node, writable)| {
                if writable {
                    node.flush()
                } else {
                    Ok(())
                }
            },
        );
        reply_empty(reply, result);
    }

    /// The durability point: the loop driver turns the mounted filesystem's
    /// cache flushes (`sync`, journal commits, FUA writes) into an fsync of
    /// the image file.
    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let result = self.open_node(fh).and_then(|(node, _)| node.flush());
        reply_empty(reply, result);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.registry.release(fh.0);
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino.0 != ROOT_INO {
            return reply.error(Errno::ENOTDIR);
        }
        let dots = [(ROOT_INO, ".".to_string()), (ROOT_INO, "..".to_string())];
        let files = self
            .registry
            .list()
            .into_iter()
            .map(|node| (node.ino, node.name.clone()));
        for (i, (ino, name)) in dots
            .into_iter()
            .chain(files)
            .enumerate()
            .skip(offset as usize)
        {
            let kind = if ino == ROOT_INO {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            // The offset of an entry is where the next readdir resumes.
            if reply.add(INodeNo(ino), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let files = self.registry.list().len() as u64;
        reply.statfs(0, 0, 0, files, 0, 4096, MAX_NAME_LEN as u32, 4096);
    }

    /// Discard and preallocation are the engine's business, not passed on.
    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EOPNOTSUPP);
    }

    // Images come and go only through the front end's API.

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(Errno::EPERM);
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM);
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM);
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EPERM);
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EPERM);
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EPERM);
    }
}
