//! The directory backup: `DEST/data/<live path>`, documents under their
//! names, `DEST/manifest.jsonl` written last (by rename) at finish.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};

use super::bgsync::BackgroundSync;
use super::error::{plain_reason, ArchiveError, FileError};
use super::manifest::{
    check_document_name, DocumentInfo, EntryKind, Manifest, ManifestEntry, ManifestHeader,
    FORMAT_VERSION,
};
use super::restore::{self, Restorer};
use super::source::{self, hex, Common, Source, BUF_SIZE};
use super::{
    Added, ArchiveReader, ArchiveWriter, VerifyProblem, VerifyReport, DATA_DIR, MANIFEST_FILE,
};

/// Writes the data area on writer threads ("lanes"), so that creating and
/// writing the copies (the costly part on most filesystems: one inode per
/// file) overlaps with reading and hashing the sources on the caller's
/// thread, and runs in parallel in different directories. Everything
/// whose parent is the same directory goes to the same lane, in order; a
/// lane that gets a file before another lane made its directory creates
/// the directory itself (0700) and the directory's own operation then
/// only sets its mode.
enum Op {
    Dir {
        path: PathBuf,
        mode: u32,
    },
    Symlink {
        path: PathBuf,
        target: String,
    },
    /// Opens a new file and writes its first `len` bytes of `buf`.
    File {
        path: PathBuf,
        mode: u32,
        buf: Vec<u8>,
        len: usize,
        end: bool,
    },
    Chunk {
        buf: Vec<u8>,
        len: usize,
        end: bool,
    },
    /// The source failed mid-way: remove the partial copy.
    Abort,
}

/// The first failure of the data writer thread: the archive is broken.
type Failure = Arc<Mutex<Option<(PathBuf, io::Error)>>>;

/// Messages in flight per lane; with 1 MiB chunks this bounds the memory
/// used.
const QUEUE: usize = 8;
/// Most lanes used (one per CPU up to this).
const MAX_LANES: usize = 4;

pub struct DirWriter {
    root: PathBuf,
    data: PathBuf,
    /// Whether `create` made `root` (then its parent is synced at finish).
    created_root: bool,
    common: Common,
    documents: Vec<DocumentInfo>,
    lanes: Vec<SyncSender<Op>>,
    /// Buffers the writer threads are done with.
    spare: Receiver<Vec<u8>>,
    failure: Failure,
    threads: Vec<std::thread::JoinHandle<()>>,
    bg: Option<BackgroundSync>,
}

/// The umask without changing it (it is process-wide, other threads may
/// create files): read from /proc; unknown means "assume the worst".
fn current_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o777)
}

pub fn create(dest: &Path) -> Result<DirWriter, ArchiveError> {
    let invalid = |reason: String| ArchiveError::InvalidDestination {
        path: dest.to_path_buf(),
        reason,
    };
    let mut created_root = false;
    match std::fs::symlink_metadata(dest) {
        Ok(m) if m.is_dir() => {
            let mut it =
                std::fs::read_dir(dest).map_err(|e| ArchiveError::io("cannot read", dest, e))?;
            if it.next().is_some() {
                return Err(ArchiveError::DestinationExists {
                    path: dest.to_path_buf(),
                    not_empty: true,
                });
            }
            std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| ArchiveError::io("cannot set mode 0700 on", dest, e))?;
        }
        Ok(_) => {
            return Err(ArchiveError::DestinationExists {
                path: dest.to_path_buf(),
                not_empty: false,
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let parent = parent_of(dest);
            if !parent.is_dir() {
                return Err(invalid(format!(
                    "its parent directory {} does not exist",
                    parent.display()
                )));
            }
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dest)
                .map_err(|e| ArchiveError::io("cannot create", dest, e))?;
            created_root = true;
        }
        Err(e) => return Err(ArchiveError::io("cannot reach", dest, e)),
    }
    let data = dest.join(DATA_DIR);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&data)
        .map_err(|e| ArchiveError::io("cannot create", &data, e))?;
    let (spare_tx, spare) = std::sync::mpsc::channel();
    let failure = Failure::default();
    let umask = current_umask();
    let n = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_LANES);
    let mut lanes = Vec::with_capacity(n);
    let mut threads = Vec::with_capacity(n);
    for i in 0..n {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let (spare_tx, f) = (spare_tx.clone(), failure.clone());
        let t = std::thread::Builder::new()
            .name(format!("backup-writer-{i}"))
            .spawn(move || write_loop(rx, spare_tx, f, umask))
            .map_err(|e| ArchiveError::io("cannot start a writer thread for", dest, e))?;
        lanes.push(tx);
        threads.push(t);
    }
    let bg = File::open(&data).ok().map(|d| BackgroundSync::new(d, true));
    Ok(DirWriter {
        root: dest.to_path_buf(),
        data,
        created_root,
        common: Common::new(),
        documents: Vec::new(),
        lanes,
        spare,
        failure,
        threads,
        bg,
    })
}

fn parent_of(p: &Path) -> PathBuf {
    match p.parent() {
        Some(q) if !q.as_os_str().is_empty() => q.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Retries `op` once after creating the parent of `path` (0700; inside the
/// 0700 top directory anyway), for entries whose parents were not added.
fn with_parent<T>(path: &Path, mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    match op() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(parent)?;
            }
            op()
        }
        r => r,
    }
}

/// The copy being written.
struct Current {
    path: PathBuf,
    file: File,
    written: u64,
}

/// The data writer thread. After its first failure it only hands buffers
/// back (the failure is reported by the next `add` and by `finish`).
fn write_loop(rx: Receiver<Op>, spare: Sender<Vec<u8>>, failure: Failure, umask: u32) {
    let mut current: Option<Current> = None;
    let mut failed = false;
    for op in rx {
        let mut path_of_op = current.as_ref().map(|c| c.path.clone());
        let (res, buf) = if failed {
            match op {
                Op::File { buf, .. } | Op::Chunk { buf, .. } => (Ok(()), Some(buf)),
                _ => (Ok(()), None),
            }
        } else {
            match op {
                Op::Dir { path, mode } => {
                    let r = make_data_dir(&path, mode, umask);
                    path_of_op = Some(path);
                    (r, None)
                }
                Op::Symlink { path, target } => {
                    let r = with_parent(&path, || std::os::unix::fs::symlink(&target, &path));
                    path_of_op = Some(path);
                    (r, None)
                }
                Op::File {
                    path,
                    mode,
                    buf,
                    len,
                    end,
                } => {
                    path_of_op = Some(path.clone());
                    let r = open_data_file(&path, mode, umask).and_then(|mut file| {
                        file.write_all(&buf[..len])?;
                        let c = Current {
                            path,
                            file,
                            written: len as u64,
                        };
                        if end {
                            close_data_file(c);
                        } else {
                            current = Some(c);
                        }
                        Ok(())
                    });
                    (r, Some(buf))
                }
                Op::Chunk { buf, len, end } => {
                    let r = match current.as_mut() {
                        Some(c) => {
                            c.written += len as u64;
                            c.file.write_all(&buf[..len])
                        }
                        None => Err(io::Error::other("chunk without a file")),
                    };
                    if end || r.is_err() {
                        if let Some(c) = current.take() {
                            close_data_file(c);
                        }
                    }
                    (r, Some(buf))
                }
                Op::Abort => {
                    if let Some(c) = current.take() {
                        drop(c.file);
                        let _ = std::fs::remove_file(c.path);
                    }
                    (Ok(()), None)
                }
            }
        };
        if let Some(b) = buf.filter(|b| b.len() == BUF_SIZE) {
            let _ = spare.send(b);
        }
        if let Err(e) = res {
            failed = true;
            current = None;
            if let Ok(mut slot) = failure.lock() {
                slot.get_or_insert((path_of_op.unwrap_or_default(), e));
            }
        }
    }
}

fn make_data_dir(path: &Path, mode: u32, umask: u32) -> io::Result<()> {
    let made = match with_parent(path, || std::fs::DirBuilder::new().mode(mode).create(path)) {
        Ok(()) => true,
        // Created before as the parent of an entry (0700).
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => false,
        Err(e) => return Err(e),
    };
    if !made || mode & umask != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

fn open_data_file(path: &Path, mode: u32, umask: u32) -> io::Result<File> {
    let f = with_parent(path, || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)
    })?;
    if mode & umask != 0 {
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    Ok(f)
}

/// Starts writeback of a large copy now (DONTNEED writes dirty pages
/// back asynchronously, then drops the clean ones), so the disk works
/// while the copy goes on; it also keeps the backup from crowding the
/// page cache. Not for small files: one writeback per file costs more
/// than it saves.
fn close_data_file(c: Current) {
    if c.written >= 4 << 20 {
        let _ = nix::fcntl::posix_fadvise(
            c.file.as_raw_fd(),
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        );
    }
}

impl DirWriter {
    /// The lane for an entry: by its parent directory.
    fn lane(&self, dst: &Path) -> usize {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        dst.parent().hash(&mut h);
        (h.finish() % self.lanes.len().max(1) as u64) as usize
    }

    fn send(&mut self, lane: usize, op: Op) -> Result<(), String> {
        if let (Op::File { len, .. } | Op::Chunk { len, .. }, Some(bg)) = (&op, self.bg.as_mut()) {
            bg.wrote(*len as u64);
        }
        let sent = match self.lanes.get(lane) {
            Some(tx) => tx.send(op).is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            Err(self
                .failed()
                .unwrap_or_else(|| "the backup writer stopped".into()))
        }
    }

    /// The writer thread's failure, as text.
    fn failed(&self) -> Option<String> {
        let slot = self.failure.lock().ok()?;
        slot.as_ref()
            .map(|(p, e)| format!("cannot write {}: {}", p.display(), plain_reason(e)))
    }

    fn buffer(&mut self) -> Vec<u8> {
        self.spare.try_recv().unwrap_or_else(|_| vec![0; BUF_SIZE])
    }

    /// Reads the file (at most `limit` bytes, the size when opened: a file
    /// that grows while read is stored as it was; one that shrinks, as
    /// read) in chunks, hashing each and handing it to the writer thread.
    fn store_file(
        &mut self,
        entry: &mut ManifestEntry,
        mut file: File,
        limit: u64,
        dst: PathBuf,
    ) -> Result<(), FileError> {
        let lp = entry.path.clone();
        source::advise_sequential(&file, limit);
        // Permission bits only (no setuid/setgid/sticky in the data area),
        // owner-readable so that verify works without root; the real mode
        // is in the manifest.
        let mode = (entry.mode & 0o777) | 0o600;
        let lane = self.lane(&dst);
        let mut hasher = blake3::Hasher::new();
        let mut total = 0u64;
        let mut started = false;
        loop {
            let mut buf = self.buffer();
            let want = (limit - total).min(BUF_SIZE as u64) as usize;
            let n = match source::read_full(&mut file, &mut buf[..want]) {
                Ok(n) => n,
                Err(e) => {
                    if started {
                        let _ = self.send(lane, Op::Abort);
                    }
                    return Err(FileError::io(&lp, "", e));
                }
            };
            hasher.update(&buf[..n]);
            total += n as u64;
            let end = n < want || total >= limit;
            let op = if started {
                Op::Chunk { buf, len: n, end }
            } else {
                started = true;
                Op::File {
                    path: dst.clone(),
                    mode,
                    buf,
                    len: n,
                    end,
                }
            };
            self.send(lane, op).map_err(|r| FileError::new(&lp, r))?;
            if end {
                break;
            }
        }
        entry.size = total;
        entry.blake3 = Some(hex(&hasher.finalize()));
        Ok(())
    }
}

impl ArchiveWriter for DirWriter {
    fn add(
        &mut self,
        live_path: &str,
        source: &Path,
        component: Option<&str>,
    ) -> Result<Added, FileError> {
        if let Some(f) = self.failed() {
            return Err(FileError::new(live_path, f));
        }
        let rel = self.common.claim(live_path)?;
        let dst = if rel.is_empty() {
            self.data.clone()
        } else {
            self.data.join(rel)
        };
        let (mut entry, file, len) = match source::open_source(live_path, source, component)? {
            Source::Skipped(reason) => {
                return Ok(Added::Skipped {
                    path: live_path.to_string(),
                    reason,
                })
            }
            Source::Entry { entry, file, len } => (entry, file, len),
        };
        match entry.kind {
            EntryKind::File => {
                let file = file.ok_or_else(|| FileError::new(live_path, "not opened"))?;
                self.store_file(&mut entry, file, len, dst)?;
            }
            // "/" is the data directory itself: its metadata lives in the manifest.
            EntryKind::Dir if rel.is_empty() => {}
            EntryKind::Dir => {
                // Owner-writable so the backup can be filled and removed.
                let mode = (entry.mode & 0o777) | 0o700;
                self.send(self.lane(&dst), Op::Dir { path: dst, mode })
                    .map_err(|r| FileError::new(live_path, r))?;
            }
            EntryKind::Symlink => {
                let target = entry.target.clone().unwrap_or_default();
                self.send(self.lane(&dst), Op::Symlink { path: dst, target })
                    .map_err(|r| FileError::new(live_path, r))?;
            }
        }
        self.common.record(entry.clone());
        Ok(Added::Stored(entry))
    }

    fn add_document(&mut self, name: &str, bytes: &[u8]) -> Result<(), ArchiveError> {
        check_document_name(name)?;
        if self.documents.iter().any(|d| d.name == name) {
            return Err(ArchiveError::DuplicateDocument {
                name: name.to_string(),
            });
        }
        // Outside data/: the writer thread never touches these paths.
        let path = self.root.join(name);
        let mut f = with_parent(&path, || {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
        })
        .map_err(|e| ArchiveError::io("cannot create", &path, e))?;
        f.write_all(bytes)
            .map_err(|e| ArchiveError::io("cannot write", &path, e))?;
        self.documents.push(DocumentInfo {
            name: name.to_string(),
            size: bytes.len() as u64,
            blake3: hex(&blake3::hash(bytes)),
        });
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), ArchiveError> {
        let mut me = *self;
        // Let the writer threads drain their queues and stop.
        me.lanes.clear();
        me.bg = None;
        for t in std::mem::take(&mut me.threads) {
            if t.join().is_err() {
                return Err(ArchiveError::io(
                    "a writer thread failed for",
                    &me.root,
                    io::Error::other("panic"),
                ));
            }
        }
        if let Some((p, e)) = me.failure.lock().ok().and_then(|mut s| s.take()) {
            return Err(ArchiveError::io("cannot write", &p, e));
        }
        let manifest = Manifest {
            header: ManifestHeader {
                format: FORMAT_VERSION,
                created_by: super::created_by(),
                created_unix_ms: super::now_ms(),
                entries: me.common.entries.len() as u64,
                file_bytes: me.common.bytes,
                documents: std::mem::take(&mut me.documents),
                void_members: Vec::new(),
            },
            entries: std::mem::take(&mut me.common.entries),
        };
        let tmp = me.root.join(format!("{MANIFEST_FILE}.tmp"));
        let fin = me.root.join(MANIFEST_FILE);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| ArchiveError::io("cannot create", &tmp, e))?;
        let mut w = BufWriter::with_capacity(BUF_SIZE, f);
        w.write_all(&manifest.encode())
            .and_then(|()| w.flush())
            .map_err(|e| ArchiveError::io("cannot write", &tmp, e))?;
        drop(w);
        // One syncfs for every file and directory written (fsync per file
        // would cost more than the copy for small files), then the
        // manifest is renamed into place: only a complete backup has one.
        let root_dir =
            File::open(&me.root).map_err(|e| ArchiveError::io("cannot open", &me.root, e))?;
        nix::unistd::syncfs(root_dir.as_raw_fd())
            .map_err(|e| ArchiveError::io("cannot sync", &me.root, e.into()))?;
        std::fs::rename(&tmp, &fin).map_err(|e| ArchiveError::io("cannot rename", &tmp, e))?;
        root_dir
            .sync_all()
            .map_err(|e| ArchiveError::io("cannot sync", &me.root, e))?;
        if me.created_root {
            let parent = parent_of(&me.root);
            File::open(&parent)
                .and_then(|d| d.sync_all())
                .map_err(|e| ArchiveError::io("cannot sync", &parent, e))?;
        }
        Ok(())
    }

    fn bytes_stored(&self) -> u64 {
        self.common.bytes
    }
}

pub struct DirReader {
    root: PathBuf,
    manifest: Manifest,
}

pub fn open(src: &Path) -> Result<DirReader, ArchiveError> {
    let path = src.join(MANIFEST_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(if src.join(DATA_DIR).is_dir() {
                ArchiveError::Unfinished {
                    path: src.to_path_buf(),
                    reason: format!("it has a {DATA_DIR}/ directory but no {MANIFEST_FILE}"),
                }
            } else {
                ArchiveError::NotABackup {
                    path: src.to_path_buf(),
                    reason: format!("no {MANIFEST_FILE} in it"),
                }
            })
        }
        Err(e) => return Err(ArchiveError::io("cannot read", &path, e)),
    };
    let manifest = Manifest::decode(src, &bytes)?;
    Ok(DirReader {
        root: src.to_path_buf(),
        manifest,
    })
}

impl DirReader {
    fn data_path(&self, live: &str) -> PathBuf {
        let rel = live.trim_start_matches('/');
        if rel.is_empty() {
            self.root.join(DATA_DIR)
        } else {
            self.root.join(DATA_DIR).join(rel)
        }
    }
}

fn hash_file(path: &Path, buf: &mut [u8]) -> io::Result<(u64, String)> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut total = 0u64;
    loop {
        let n = match f.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, hex(&hasher.finalize())))
}

impl ArchiveReader for DirReader {
    fn manifest(&self) -> &[ManifestEntry] {
        &self.manifest.entries
    }

    fn document_names(&self) -> Vec<String> {
        self.manifest
            .header
            .documents
            .iter()
            .map(|d| d.name.clone())
            .collect()
    }

    fn document(&self, name: &str) -> Option<Vec<u8>> {
        // Only listed names: they were checked at open, so the path stays
        // inside the backup.
        self.manifest
            .header
            .documents
            .iter()
            .find(|d| d.name == name)?;
        std::fs::read(self.root.join(name)).ok()
    }

    fn extract(
        &mut self,
        select: &mut dyn FnMut(&ManifestEntry) -> Option<PathBuf>,
        done: &mut dyn FnMut(&ManifestEntry, &Path, Result<(), FileError>),
    ) -> Result<(), ArchiveError> {
        let entries = &self.manifest.entries;
        let targets = restore::select_all(entries, select);
        let mut r = Restorer::new();
        let created = restore::make_dirs(&mut r, entries, &targets, done);
        for (e, t) in entries.iter().zip(&targets) {
            if let (EntryKind::File, Some(t)) = (e.kind, t) {
                let src = self.data_path(&e.path);
                let res = match std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(nix::libc::O_NOFOLLOW)
                    .open(&src)
                {
                    Ok(mut f) => {
                        source::advise_sequential(&f, e.size);
                        r.restore_file(e, t, &mut f)
                    }
                    Err(err) => Err(FileError::io(
                        t.to_string_lossy(),
                        "missing from the backup",
                        err,
                    )),
                };
                done(e, t, res);
            }
        }
        restore::make_symlinks(&mut r, entries, &targets, done);
        restore::finish_dirs(&mut r, entries, &targets, &created, done);
        r.sync();
        Ok(())
    }

    fn verify(&mut self) -> Result<VerifyReport, ArchiveError> {
        let mut report = VerifyReport::default();
        let mut buf = vec![0u8; BUF_SIZE];
        let problem = |report: &mut VerifyReport, path: &str, p: String| {
            report.problems.push(VerifyProblem {
                path: path.to_string(),
                problem: p,
            })
        };
        for e in &self.manifest.entries {
            let p = self.data_path(&e.path);
            match e.kind {
                EntryKind::File => match hash_file(&p, &mut buf) {
                    Ok((size, hash)) => {
                        report.files_checked += 1;
                        report.bytes_checked += size;
                        if size != e.size {
                            problem(
                                &mut report,
                                &e.path,
                                format!("size is {size} bytes, the manifest says {}", e.size),
                            );
                        } else if Some(&hash) != e.blake3.as_ref() {
                            problem(
                                &mut report,
                                &e.path,
                                "content does not match its BLAKE3 in the manifest".into(),
                            );
                        }
                    }
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {
                        problem(&mut report, &e.path, "missing from the backup".into())
                    }
                    Err(err) => problem(
                        &mut report,
                        &e.path,
                        format!("cannot read: {}", super::error::plain_reason(&err)),
                    ),
                },
                EntryKind::Dir => {
                    if !std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                        problem(
                            &mut report,
                            &e.path,
                            "directory missing from the backup".into(),
                        );
                    }
                }
                EntryKind::Symlink => match std::fs::read_link(&p) {
                    Ok(t)
                        if t.as_os_str().as_encoded_bytes()
                            == e.target.as_deref().unwrap_or_default().as_bytes() => {}
                    Ok(_) => problem(
                        &mut report,
                        &e.path,
                        "symlink target differs from the manifest".into(),
                    ),
                    Err(_) => problem(
                        &mut report,
                        &e.path,
                        "symlink missing from the backup".into(),
                    ),
                },
            }
        }
        for d in &self.manifest.header.documents {
            match std::fs::read(self.root.join(&d.name)) {
                Ok(b) if b.len() as u64 == d.size && hex(&blake3::hash(&b)) == d.blake3 => {}
                Ok(_) => problem(
                    &mut report,
                    &d.name,
                    "document does not match its BLAKE3 in the manifest".into(),
                ),
                Err(_) => problem(
                    &mut report,
                    &d.name,
                    "document missing from the backup".into(),
                ),
            }
        }
        self.find_strays(&mut report)?;
        Ok(report)
    }
}

impl DirReader {
    /// Reports what is in the backup directory but not in the manifest:
    /// anything in data/ that no entry names (directories that are only
    /// parents of entries are fine), and unknown files outside data/.
    fn find_strays(&self, report: &mut VerifyReport) -> Result<(), ArchiveError> {
        let listed: HashSet<&str> = self
            .manifest
            .entries
            .iter()
            .map(|e| e.path.as_str())
            .collect();
        let mut parents: HashSet<&str> = HashSet::new();
        for e in &self.manifest.entries {
            let mut p = e.path.as_str();
            while let Some(i) = p.rfind('/') {
                p = &p[..i];
                if !parents.insert(if p.is_empty() { "/" } else { p }) {
                    break;
                }
            }
        }
        let docs: HashMap<&str, ()> = self
            .manifest
            .header
            .documents
            .iter()
            .map(|d| (d.name.as_str(), ()))
            .collect();
        let mut stack = vec![(self.root.clone(), String::new())];
        while let Some((dir, rel)) = stack.pop() {
            let rd =
                std::fs::read_dir(&dir).map_err(|e| ArchiveError::io("cannot read", &dir, e))?;
            for ent in rd {
                let ent = ent.map_err(|e| ArchiveError::io("cannot read", &dir, e))?;
                let name = ent.file_name();
                let name = name.to_string_lossy();
                let child_rel = if rel.is_empty() {
                    name.to_string()
                } else {
                    format!("{rel}/{name}")
                };
                let is_dir = ent.file_type().is_ok_and(|t| t.is_dir());
                if let Some(live) = child_rel
                    .strip_prefix(DATA_DIR)
                    .filter(|l| l.is_empty() || l.starts_with('/'))
                {
                    let live = if live.is_empty() { "/" } else { live };
                    let known = listed.contains(live)
                        || (is_dir && (live == "/" || parents.contains(live)));
                    if !known {
                        report.problems.push(VerifyProblem {
                            path: live.to_string(),
                            problem: "in the data area but not in the manifest".into(),
                        });
                    } else if is_dir {
                        stack.push((ent.path(), child_rel));
                    }
                    continue;
                }
                if child_rel == MANIFEST_FILE || docs.contains_key(child_rel.as_str()) {
                    continue;
                }
                if is_dir && docs.keys().any(|d| d.starts_with(&format!("{child_rel}/"))) {
                    stack.push((ent.path(), child_rel));
                    continue;
                }
                report.problems.push(VerifyProblem {
                    path: child_rel,
                    problem: "in the backup but neither data nor a listed document".into(),
                });
            }
        }
        Ok(())
    }
}
