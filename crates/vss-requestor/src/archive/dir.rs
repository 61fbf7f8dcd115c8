//! The directory backup: `DEST/data/<live path>`, documents under their
//! names, `DEST/manifest.jsonl` written last (by rename) at finish.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::error::{ArchiveError, FileError};
use super::manifest::{
    check_document_name, DocumentInfo, EntryKind, Manifest, ManifestEntry, ManifestHeader,
    FORMAT_VERSION,
};
use super::restore::{self, Restorer};
use super::source::{self, hex, Common, Source, BUF_SIZE};
use super::{
    Added, ArchiveReader, ArchiveWriter, VerifyProblem, VerifyReport, DATA_DIR, MANIFEST_FILE,
};

pub struct DirWriter {
    root: PathBuf,
    data: PathBuf,
    /// Whether `create` made `root` (then its parent is synced at finish).
    created_root: bool,
    common: Common,
    documents: Vec<DocumentInfo>,
    /// The process umask, to know when a created file needs an fchmod.
    umask: u32,
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
    Ok(DirWriter {
        root: dest.to_path_buf(),
        data,
        created_root,
        common: Common::new(),
        documents: Vec::new(),
        umask: current_umask(),
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

impl DirWriter {
    fn store_file(
        &mut self,
        entry: &mut ManifestEntry,
        mut file: File,
        dst: &Path,
    ) -> Result<(), FileError> {
        let lp = entry.path.clone();
        let limit = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
        source::advise_sequential(&file, limit);
        // Permission bits only (no setuid/setgid/sticky in the data area),
        // owner-readable so that verify works without root; the real mode
        // is in the manifest.
        let mode = (entry.mode & 0o777) | 0o600;
        let mut out = with_parent(dst, || {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(dst)
        })
        .map_err(|e| FileError::io(&lp, &format!("cannot create {}", dst.display()), e))?;
        if mode & self.umask != 0 {
            out.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(|e| FileError::io(&lp, &format!("cannot chmod {}", dst.display()), e))?;
        }
        let res = copy_hashed(&mut file, &mut out, &mut self.common.buf, limit, &lp);
        match res {
            Ok((size, hash)) => {
                entry.size = size;
                entry.blake3 = Some(hash);
                Ok(())
            }
            Err(e) => {
                drop(out);
                let _ = std::fs::remove_file(dst);
                Err(e)
            }
        }
    }

    fn store_dir(&mut self, entry: &ManifestEntry, rel: &str, dst: &Path) -> Result<(), FileError> {
        if rel.is_empty() {
            // "/" is the data directory itself: its metadata lives in the manifest.
            return Ok(());
        }
        let mode = (entry.mode & 0o777) | 0o700;
        let res = with_parent(dst, || std::fs::DirBuilder::new().mode(mode).create(dst));
        match res {
            Ok(()) => {}
            // Created before as the parent of an earlier entry.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dst.is_dir() => {}
            Err(e) => {
                return Err(FileError::io(
                    &entry.path,
                    &format!("cannot create {}", dst.display()),
                    e,
                ))
            }
        }
        if mode & self.umask != 0 {
            std::fs::set_permissions(dst, std::fs::Permissions::from_mode(mode)).map_err(|e| {
                FileError::io(&entry.path, &format!("cannot chmod {}", dst.display()), e)
            })?;
        }
        Ok(())
    }
}

/// Copies at most `limit` bytes (the size when opened: a file that grows
/// while read is stored as it was; one that shrinks, as read), hashing in
/// the same pass.
fn copy_hashed(
    src: &mut File,
    dst: &mut File,
    buf: &mut [u8],
    limit: u64,
    lp: &str,
) -> Result<(u64, String), FileError> {
    let mut hasher = blake3::Hasher::new();
    let mut total = 0u64;
    while total < limit {
        let want = (limit - total).min(buf.len() as u64) as usize;
        let n = source::read_full(src, &mut buf[..want]).map_err(|e| FileError::io(lp, "", e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n])
            .map_err(|e| FileError::io(lp, "cannot write to the backup", e))?;
        total += n as u64;
    }
    Ok((total, hex(&hasher.finalize())))
}

impl ArchiveWriter for DirWriter {
    fn add(
        &mut self,
        live_path: &str,
        source: &Path,
        component: Option<&str>,
    ) -> Result<Added, FileError> {
        let rel = self.common.claim(live_path)?;
        let dst = if rel.is_empty() {
            self.data.clone()
        } else {
            self.data.join(rel)
        };
        let (mut entry, file) = match source::open_source(live_path, source, component)? {
            Source::Skipped(reason) => {
                return Ok(Added::Skipped {
                    path: live_path.to_string(),
                    reason,
                })
            }
            Source::Entry { entry, file } => (entry, file),
        };
        match entry.kind {
            EntryKind::File => {
                let file = file.ok_or_else(|| FileError::new(live_path, "not opened"))?;
                self.store_file(&mut entry, file, &dst)?;
            }
            EntryKind::Dir => self.store_dir(&entry, rel, &dst)?,
            EntryKind::Symlink => {
                let target = entry.target.clone().unwrap_or_default();
                with_parent(&dst, || std::os::unix::fs::symlink(&target, &dst)).map_err(|e| {
                    FileError::io(live_path, &format!("cannot create {}", dst.display()), e)
                })?;
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
        let me = *self;
        let manifest = Manifest {
            header: ManifestHeader {
                format: FORMAT_VERSION,
                created_by: super::created_by(),
                created_unix_ms: super::now_ms(),
                entries: me.common.entries.len() as u64,
                file_bytes: me.common.bytes,
                documents: me.documents,
                void_members: Vec::new(),
            },
            entries: me.common.entries,
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
