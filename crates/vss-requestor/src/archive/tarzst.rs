//! The single-file backup: a tar stream (GNU headers, PAX xattr records)
//! through a zstd encoder. Data members under `data/`, documents under
//! their names, `manifest.jsonl` last. Written by hand with
//! `tar::Header` rather than `tar::Builder` so that content goes from the
//! 1 MiB copy buffer straight into the encoder (the builder copies through
//! 8 KiB reads) and so that the header can be written before the content
//! is fully read.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use tar::{EntryType, Header};

use super::bgsync::BackgroundSync;
use super::error::{plain_reason, ArchiveError, FileError};
use super::manifest::{
    check_document_name, data_member, DocumentInfo, EntryKind, Manifest, ManifestEntry,
    ManifestHeader, FORMAT_VERSION,
};
use super::restore::{self, Restorer};
use super::source::{self, hex, Common, Source, BUF_SIZE};
use super::{
    Added, ArchiveReader, ArchiveWriter, VerifyProblem, VerifyReport, DATA_DIR, MANIFEST_FILE,
};

/// zstd level (the zstd command's default: fast, decent ratio).
const ZSTD_LEVEL: i32 = 3;
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
/// Largest document or manifest loaded into memory at open; a bigger one
/// means a damaged or foreign archive.
const MAX_DOCUMENT: u64 = 256 << 20;
const MAX_MANIFEST: u64 = 4 << 30;

type Encoder = zstd::stream::write::Encoder<'static, BufWriter<File>>;

pub struct TarWriter {
    path: PathBuf,
    out: Option<Encoder>,
    common: Common,
    documents: Vec<DocumentInfo>,
    /// Members written so far, counted as the tar reader yields them.
    ordinal: u64,
    void_members: Vec<u64>,
    /// Set once writing to the archive failed: the stream is broken, so
    /// every later call fails too.
    broken: Option<String>,
    bg: Option<BackgroundSync>,
}

pub fn create(dest: &Path) -> Result<TarWriter, ArchiveError> {
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if std::fs::symlink_metadata(dest).is_ok() {
        return Err(ArchiveError::DestinationExists {
            path: dest.to_path_buf(),
            not_empty: false,
        });
    }
    if !parent.is_dir() {
        return Err(ArchiveError::InvalidDestination {
            path: dest.to_path_buf(),
            reason: format!("its parent directory {} does not exist", parent.display()),
        });
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => ArchiveError::DestinationExists {
                path: dest.to_path_buf(),
                not_empty: false,
            },
            _ => ArchiveError::io("cannot create", dest, e),
        })?;
    let bg = file.try_clone().ok().map(|f| BackgroundSync::new(f, false));
    let enc_err = |e| ArchiveError::io("cannot start zstd compression for", dest, e);
    let mut enc =
        zstd::stream::write::Encoder::new(BufWriter::with_capacity(BUF_SIZE, file), ZSTD_LEVEL)
            .map_err(enc_err)?;
    enc.include_checksum(true).map_err(enc_err)?;
    // Compression runs on worker threads while this one reads and hashes.
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8) as u32;
    if workers > 1 {
        enc.multithread(workers).map_err(enc_err)?;
    }
    Ok(TarWriter {
        path: dest.to_path_buf(),
        out: Some(enc),
        common: Common::new(),
        documents: Vec::new(),
        ordinal: 0,
        void_members: Vec::new(),
        broken: None,
        bg,
    })
}

/// Metadata of one member's main header.
struct Member<'a> {
    name: &'a [u8],
    kind: EntryType,
    link: Option<&'a [u8]>,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    size: u64,
    xattrs: Option<&'a BTreeMap<String, String>>,
}

fn pad(out: &mut dyn Write, size: u64) -> io::Result<()> {
    let rem = (512 - size % 512) % 512;
    out.write_all(&[0u8; 512][..rem as usize])
}

/// A GNU long-name ('L') or long-link ('K') pseudo member.
fn write_long(out: &mut dyn Write, kind: EntryType, value: &[u8]) -> io::Result<()> {
    let mut h = Header::new_gnu();
    h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(value.len() as u64 + 1);
    h.set_cksum();
    out.write_all(h.as_bytes())?;
    out.write_all(value)?;
    out.write_all(&[0])?;
    pad(out, value.len() as u64 + 1)
}

/// One PAX record: "<len> <key>=<value>\n", len counting itself.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Writes the headers of a member (PAX xattrs, GNU long names, the main
/// header); the caller writes `size` bytes of content and the padding.
fn write_headers(out: &mut dyn Write, m: &Member<'_>) -> io::Result<()> {
    if let Some(x) = m.xattrs.filter(|x| !x.is_empty()) {
        let mut body = Vec::new();
        for (k, v) in x {
            // Values were encoded by us; a bad one only loses the PAX copy.
            if let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(v) {
                pax_record(&mut body, &format!("SCHILY.xattr.{k}"), &raw);
            }
        }
        let mut h = Header::new_ustar();
        h.set_path("././@PaxHeader")?;
        h.set_entry_type(EntryType::XHeader);
        h.set_mode(0o644);
        h.set_size(body.len() as u64);
        h.set_cksum();
        out.write_all(h.as_bytes())?;
        out.write_all(&body)?;
        pad(out, body.len() as u64)?;
    }
    let mut h = Header::new_gnu();
    let name_field = &mut h.as_old_mut().name;
    if m.name.len() > name_field.len() {
        write_long(out, EntryType::GNULongName, m.name)?;
    }
    let n = m.name.len().min(name_field.len());
    name_field[..n].copy_from_slice(&m.name[..n]);
    if let Some(link) = m.link {
        let link_field = &mut h.as_old_mut().linkname;
        if link.len() > link_field.len() {
            write_long(out, EntryType::GNULongLink, link)?;
        }
        let n = link.len().min(link_field.len());
        link_field[..n].copy_from_slice(&link[..n]);
    }
    h.set_entry_type(m.kind);
    h.set_mode(m.mode);
    h.set_uid(u64::from(m.uid));
    h.set_gid(u64::from(m.gid));
    // The manifest has the exact time (negative, nanoseconds); the header
    // only what tar can hold.
    h.set_mtime(m.mtime.max(0) as u64);
    h.set_size(m.size);
    h.set_cksum();
    out.write_all(h.as_bytes())
}

impl TarWriter {
    fn out(&mut self) -> io::Result<&mut Encoder> {
        if let Some(b) = &self.broken {
            return Err(io::Error::other(format!(
                "the backup stream failed earlier: {b}"
            )));
        }
        self.out
            .as_mut()
            .ok_or_else(|| io::Error::other("the backup is closed"))
    }

    fn wrote(&mut self, n: usize) {
        if let Some(bg) = self.bg.as_mut() {
            bg.wrote(n as u64);
        }
    }

    fn write_err(&mut self, e: &io::Error) -> String {
        let msg = plain_reason(e);
        self.broken.get_or_insert_with(|| msg.clone());
        format!("cannot write to the backup: {msg}")
    }

    /// Writes a member whose content is all in memory.
    fn member_bytes(&mut self, m: &Member<'_>, content: &[u8]) -> io::Result<()> {
        let out = self.out()?;
        write_headers(out, m)?;
        out.write_all(content)?;
        pad(out, content.len() as u64)?;
        self.ordinal += 1;
        self.wrote(content.len());
        Ok(())
    }

    /// Stores a regular file: small ones are read whole first (exact size
    /// in the header), large ones streamed under the size fstat gave when
    /// opened. A large file that shrinks is padded with zeros (the manifest
    /// size says what is real); a read error after the header is out makes
    /// the member void (listed in the manifest header, skipped by readers).
    fn store_file(
        &mut self,
        entry: &mut ManifestEntry,
        mut file: File,
        limit: u64,
        name: &[u8],
    ) -> Result<(), FileError> {
        source::advise_sequential(&file, limit);
        let mut buf = std::mem::take(&mut self.common.buf);
        let res = self.store_file_with(entry, &mut file, name, limit, &mut buf);
        self.common.buf = buf;
        res
    }

    fn store_file_with(
        &mut self,
        entry: &mut ManifestEntry,
        file: &mut File,
        name: &[u8],
        limit: u64,
        buf: &mut [u8],
    ) -> Result<(), FileError> {
        let lp = entry.path.clone();
        let first_len = limit.min(buf.len() as u64) as usize;
        let first = source::read_full(file, &mut buf[..first_len])
            .map_err(|e| FileError::io(&lp, "", e))?;
        let mut hasher = blake3::Hasher::new();
        hasher.update(&buf[..first]);
        // Whole file read (or it shrank below the buffer): exact size.
        let header_size = if first < first_len || limit <= buf.len() as u64 {
            first as u64
        } else {
            limit
        };
        let member = Member {
            name,
            kind: EntryType::Regular,
            link: None,
            mode: entry.mode,
            uid: entry.uid,
            gid: entry.gid,
            mtime: entry.mtime_sec,
            size: header_size,
            xattrs: Some(&entry.xattrs),
        };
        let head = (|| -> io::Result<()> {
            let out = self.out()?;
            write_headers(out, &member)?;
            out.write_all(&buf[..first])
        })();
        if let Err(e) = head {
            let r = self.write_err(&e);
            return Err(FileError::io(&lp, &r, e));
        }
        self.wrote(first);
        let mut total = first as u64;
        let mut read_error = None;
        while total < header_size {
            let want = (header_size - total).min(buf.len() as u64) as usize;
            let n = match source::read_full(file, &mut buf[..want]) {
                Ok(n) => n,
                Err(e) => {
                    read_error = Some(e);
                    break;
                }
            };
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            if let Err(e) = self.out().and_then(|o| o.write_all(&buf[..n])) {
                let r = self.write_err(&e);
                return Err(FileError::io(&lp, &r, e));
            }
            self.wrote(n);
            total += n as u64;
        }
        // Fill the member to the size its header promised.
        let tail = (|| -> io::Result<()> {
            let out = self.out()?;
            io::copy(&mut io::repeat(0).take(header_size - total), out)?;
            pad(out, header_size)
        })();
        if let Err(e) = tail {
            let r = self.write_err(&e);
            return Err(FileError::io(&lp, &r, e));
        }
        let ordinal = self.ordinal;
        self.ordinal += 1;
        if let Some(e) = read_error {
            self.void_members.push(ordinal);
            return Err(FileError::io(&lp, "", e));
        }
        entry.size = total;
        entry.blake3 = Some(hex(&hasher.finalize()));
        Ok(())
    }
}

impl ArchiveWriter for TarWriter {
    fn add(
        &mut self,
        live_path: &str,
        source: &Path,
        component: Option<&str>,
    ) -> Result<Added, FileError> {
        if let Some(b) = &self.broken {
            return Err(FileError::new(
                live_path,
                format!("the backup stream failed earlier: {b}"),
            ));
        }
        let rel = self.common.claim(live_path)?;
        let (mut entry, file, len) = match source::open_source(live_path, source, component)? {
            Source::Skipped(reason) => {
                return Ok(Added::Skipped {
                    path: live_path.to_string(),
                    reason,
                })
            }
            Source::Entry { entry, file, len } => (entry, file, len),
        };
        let mut name = data_member(rel);
        match entry.kind {
            EntryKind::File => {
                let file = file.ok_or_else(|| FileError::new(live_path, "not opened"))?;
                self.store_file(&mut entry, file, len, name.as_bytes())?;
            }
            EntryKind::Dir | EntryKind::Symlink => {
                let (kind, link) = if entry.kind == EntryKind::Dir {
                    name.push('/');
                    (EntryType::Directory, None)
                } else {
                    (
                        EntryType::Symlink,
                        entry.target.as_deref().map(str::as_bytes),
                    )
                };
                let m = Member {
                    name: name.as_bytes(),
                    kind,
                    link,
                    mode: entry.mode,
                    uid: entry.uid,
                    gid: entry.gid,
                    mtime: entry.mtime_sec,
                    size: 0,
                    xattrs: Some(&entry.xattrs),
                };
                if let Err(e) = self.member_bytes(&m, &[]) {
                    let r = self.write_err(&e);
                    return Err(FileError::io(live_path, &r, e));
                }
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
        let m = Member {
            name: name.as_bytes(),
            kind: EntryType::Regular,
            link: None,
            mode: 0o600,
            uid: 0,
            gid: 0,
            mtime: (super::now_ms() / 1000) as i64,
            size: bytes.len() as u64,
            xattrs: None,
        };
        if let Err(e) = self.member_bytes(&m, bytes) {
            self.write_err(&e);
            return Err(ArchiveError::io("cannot write", &self.path, e));
        }
        self.documents.push(DocumentInfo {
            name: name.to_string(),
            size: bytes.len() as u64,
            blake3: hex(&blake3::hash(bytes)),
        });
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), ArchiveError> {
        let mut me = *self;
        let manifest = Manifest {
            header: ManifestHeader {
                format: FORMAT_VERSION,
                created_by: super::created_by(),
                created_unix_ms: super::now_ms(),
                entries: me.common.entries.len() as u64,
                file_bytes: me.common.bytes,
                documents: std::mem::take(&mut me.documents),
                void_members: std::mem::take(&mut me.void_members),
            },
            entries: std::mem::take(&mut me.common.entries),
        };
        let bytes = manifest.encode();
        let m = Member {
            name: MANIFEST_FILE.as_bytes(),
            kind: EntryType::Regular,
            link: None,
            mode: 0o600,
            uid: 0,
            gid: 0,
            mtime: (manifest.header.created_unix_ms / 1000) as i64,
            size: bytes.len() as u64,
            xattrs: None,
        };
        let path = me.path.clone();
        let werr = |e| ArchiveError::io("cannot write", &path, e);
        me.member_bytes(&m, &bytes).map_err(werr)?;
        let mut enc = me
            .out
            .take()
            .ok_or_else(|| werr(io::Error::other("the backup is closed")))?;
        // End of archive: two zero blocks.
        enc.write_all(&[0u8; 1024]).map_err(werr)?;
        let file = enc
            .finish()
            .and_then(|bw| bw.into_inner().map_err(|e| e.into_error()))
            .map_err(werr)?;
        me.bg = None;
        file.sync_all()
            .map_err(|e| ArchiveError::io("cannot sync", &path, e))?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        File::open(&parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| ArchiveError::io("cannot sync", &parent, e))?;
        Ok(())
    }

    fn bytes_stored(&self) -> u64 {
        self.common.bytes
    }
}

pub struct TarReader {
    path: PathBuf,
    manifest: Manifest,
    documents: HashMap<String, Vec<u8>>,
}

type Archive = tar::Archive<zstd::stream::read::Decoder<'static, BufReader<File>>>;

/// Opens the file as a zstd stream of tar members.
fn stream(path: &Path) -> Result<Archive, ArchiveError> {
    let mut file = File::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ArchiveError::NotFound {
            path: path.to_path_buf(),
            reason: "no such file".into(),
        },
        _ => ArchiveError::io("cannot open", path, e),
    })?;
    let mut magic = [0u8; 4];
    let n = source::read_full(&mut file, &mut magic)
        .map_err(|e| ArchiveError::io("cannot read", path, e))?;
    if n < 4 || magic != ZSTD_MAGIC {
        return Err(ArchiveError::NotABackup {
            path: path.to_path_buf(),
            reason: "not a zstd-compressed tar (.tar.zst) file".into(),
        });
    }
    let file = File::open(path).map_err(|e| ArchiveError::io("cannot open", path, e))?;
    let dec = zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(BUF_SIZE, file))
        .map_err(|e| ArchiveError::io("cannot start zstd decompression for", path, e))?;
    Ok(tar::Archive::new(dec))
}

/// A failure while walking the stream: the disk (errno) or the content.
fn stream_err(path: &Path, e: io::Error) -> ArchiveError {
    if e.raw_os_error().is_some() {
        ArchiveError::io("cannot read", path, e)
    } else {
        ArchiveError::corrupt(path, format!("cannot decode the tar.zst stream: {e}"))
    }
}

/// A member's name as text, without a directory's trailing '/'.
fn member_name<R: Read>(e: &tar::Entry<'_, R>) -> Option<String> {
    let b = e.path_bytes();
    let s = std::str::from_utf8(&b).ok()?;
    Some(s.strip_suffix('/').unwrap_or(s).to_string())
}

/// The live path of a data member name ("data/srv" -> "/srv", "data" -> "/").
fn live_of(name: &str) -> Option<String> {
    if name == DATA_DIR {
        return Some("/".into());
    }
    name.strip_prefix(DATA_DIR)
        .filter(|r| r.starts_with('/'))
        .map(str::to_string)
}

fn read_limited<R: Read>(
    path: &Path,
    e: &mut tar::Entry<'_, R>,
    max: u64,
    what: &str,
) -> Result<Vec<u8>, ArchiveError> {
    let size = e.size();
    if size > max {
        return Err(ArchiveError::corrupt(
            path,
            format!("{what} is {size} bytes, more than any backup writes"),
        ));
    }
    let mut v = Vec::with_capacity(size as usize);
    e.read_to_end(&mut v).map_err(|err| stream_err(path, err))?;
    Ok(v)
}

pub fn open(src: &Path) -> Result<TarReader, ArchiveError> {
    let mut ar = stream(src)?;
    let mut manifest = None;
    let mut documents = HashMap::new();
    let entries = ar.entries().map_err(|e| stream_err(src, e))?;
    // A stream that simply stops is what an interrupted backup leaves.
    let early_end = |e: io::Error| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            ArchiveError::Unfinished {
                path: src.to_path_buf(),
                reason:
                    "the archive ends early (the backup was interrupted, or the file was cut short)"
                        .into(),
            }
        } else {
            stream_err(src, e)
        }
    };
    for member in entries {
        let mut member = member.map_err(early_end)?;
        let Some(name) = member_name(&member) else {
            return Err(ArchiveError::corrupt(src, "a member's name is not UTF-8"));
        };
        if live_of(&name).is_some() {
            // Data is read by extract and verify; skipping it still
            // decompresses it (a stream cannot seek).
            continue;
        }
        if name == MANIFEST_FILE {
            manifest = Some(read_limited(src, &mut member, MAX_MANIFEST, MANIFEST_FILE)?);
        } else {
            let v = read_limited(src, &mut member, MAX_DOCUMENT, &name)?;
            documents.insert(name, v);
        }
    }
    let Some(bytes) = manifest else {
        return Err(ArchiveError::Unfinished {
            path: src.to_path_buf(),
            reason: format!("the archive has no {MANIFEST_FILE} (it is written last)"),
        });
    };
    let manifest = Manifest::decode(src, &bytes)?;
    documents.retain(|n, _| manifest.header.documents.iter().any(|d| &d.name == n));
    Ok(TarReader {
        path: src.to_path_buf(),
        manifest,
        documents,
    })
}

impl ArchiveReader for TarReader {
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
        self.documents.get(name).cloned()
    }

    fn extract(
        &mut self,
        select: &mut dyn FnMut(&ManifestEntry) -> Option<PathBuf>,
        done: &mut dyn FnMut(&ManifestEntry, &Path, Result<(), FileError>),
    ) -> Result<(), ArchiveError> {
        let entries = &self.manifest.entries;
        let targets = restore::select_all(entries, select);
        let index: HashMap<&str, usize> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.path.as_str(), i))
            .collect();
        let void: std::collections::HashSet<u64> =
            self.manifest.header.void_members.iter().copied().collect();
        let mut r = Restorer::new();
        let created = restore::make_dirs(&mut r, entries, &targets, done);
        let mut reported = vec![false; entries.len()];
        let walk = (|| -> Result<(), ArchiveError> {
            let mut ar = stream(&self.path)?;
            let members = ar.entries().map_err(|e| stream_err(&self.path, e))?;
            for (ordinal, member) in members.enumerate() {
                let mut member = member.map_err(|e| stream_err(&self.path, e))?;
                if void.contains(&(ordinal as u64)) {
                    continue;
                }
                let Some(live) = member_name(&member).as_deref().and_then(live_of) else {
                    continue;
                };
                let Some(&i) = index.get(live.as_str()) else {
                    continue;
                };
                let (e, Some(t)) = (&entries[i], &targets[i]) else {
                    continue;
                };
                if e.kind != EntryKind::File || reported[i] {
                    continue;
                }
                reported[i] = true;
                let res = if member.header().entry_type() != EntryType::Regular {
                    Err(FileError::new(
                        t.to_string_lossy(),
                        "the backup's copy is not a regular file (damaged backup); not restored",
                    ))
                } else {
                    r.restore_file(e, t, &mut (&mut member).take(e.size))
                };
                done(e, t, res);
            }
            Ok(())
        })();
        for (i, (e, t)) in entries.iter().zip(&targets).enumerate() {
            if let (EntryKind::File, Some(t), false) = (e.kind, t, reported[i]) {
                let why = match &walk {
                    Ok(()) => "missing from the backup; not restored".to_string(),
                    Err(err) => format!("not restored: {err}"),
                };
                done(e, t, Err(FileError::new(t.to_string_lossy(), why)));
            }
        }
        restore::make_symlinks(&mut r, entries, &targets, done);
        restore::finish_dirs(&mut r, entries, &targets, &created, done);
        r.sync();
        walk
    }

    fn verify(&mut self) -> Result<VerifyReport, ArchiveError> {
        let entries = &self.manifest.entries;
        let index: HashMap<&str, usize> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.path.as_str(), i))
            .collect();
        let docs: HashMap<&str, &DocumentInfo> = self
            .manifest
            .header
            .documents
            .iter()
            .map(|d| (d.name.as_str(), d))
            .collect();
        let void: std::collections::HashSet<u64> =
            self.manifest.header.void_members.iter().copied().collect();
        let mut seen = vec![false; entries.len()];
        let mut docs_seen = std::collections::HashSet::new();
        let mut report = VerifyReport::default();
        let mut buf = vec![0u8; BUF_SIZE];
        let mut ar = stream(&self.path)?;
        // Outside the walk so that they count up to a damaged point too.
        let mut files_checked = 0;
        let mut bytes_checked = 0;
        let walk = (|| -> io::Result<()> {
            let mut problem = |path: &str, p: String| {
                report.problems.push(VerifyProblem {
                    path: path.to_string(),
                    problem: p,
                })
            };
            for (ordinal, member) in ar.entries()?.enumerate() {
                let mut member = member?;
                if void.contains(&(ordinal as u64)) {
                    continue;
                }
                let Some(name) = member_name(&member) else {
                    problem(
                        &String::from_utf8_lossy(&member.path_bytes()),
                        "member name is not UTF-8".into(),
                    );
                    continue;
                };
                let Some(live) = live_of(&name) else {
                    if name == MANIFEST_FILE {
                        continue;
                    }
                    match docs.get(name.as_str()) {
                        Some(d) if docs_seen.insert(name.clone()) => {
                            let (size, hash) = hash_reader(&mut member, u64::MAX, &mut buf)?;
                            if size != d.size || hash != d.blake3 {
                                problem(
                                    &name,
                                    "document does not match its BLAKE3 in the manifest".into(),
                                );
                            }
                        }
                        Some(_) => problem(&name, "document stored twice".into()),
                        None => problem(
                            &name,
                            "in the backup but neither data nor a listed document".into(),
                        ),
                    }
                    continue;
                };
                let Some(&i) = index.get(live.as_str()) else {
                    problem(&live, "in the data area but not in the manifest".into());
                    continue;
                };
                let e = &entries[i];
                if std::mem::replace(&mut seen[i], true) {
                    problem(&live, "stored twice".into());
                    continue;
                }
                let ty = member.header().entry_type();
                match e.kind {
                    EntryKind::File if ty == EntryType::Regular => {
                        let (size, hash) = hash_reader(&mut member, e.size, &mut buf)?;
                        files_checked += 1;
                        bytes_checked += size;
                        if size != e.size {
                            problem(
                                &live,
                                format!("truncated: {size} of {} bytes stored", e.size),
                            );
                        } else if Some(&hash) != e.blake3.as_ref() {
                            problem(
                                &live,
                                "content does not match its BLAKE3 in the manifest".into(),
                            );
                        }
                    }
                    EntryKind::Dir if ty == EntryType::Directory => {}
                    EntryKind::Symlink if ty == EntryType::Symlink => {
                        let link = member.link_name_bytes();
                        if link.as_deref() != e.target.as_deref().map(str::as_bytes) {
                            problem(&live, "symlink target differs from the manifest".into());
                        }
                    }
                    _ => problem(
                        &live,
                        format!("stored as {ty:?}, the manifest says {:?}", e.kind),
                    ),
                }
            }
            Ok(())
        })();
        report.files_checked = files_checked;
        report.bytes_checked = bytes_checked;
        if let Err(err) = walk {
            let unchecked = seen.iter().filter(|s| !**s).count();
            report.problems.push(VerifyProblem {
                path: self.path.to_string_lossy().into_owned(),
                problem: format!(
                    "the archive is damaged ({}); {unchecked} manifest entries after that point could not be checked",
                    if err.raw_os_error().is_some() { plain_reason(&err) } else { err.to_string() }
                ),
            });
            return Ok(report);
        }
        for (e, s) in entries.iter().zip(&seen) {
            if !s {
                report.problems.push(VerifyProblem {
                    path: e.path.clone(),
                    problem: "missing from the backup".into(),
                });
            }
        }
        for d in &self.manifest.header.documents {
            if !docs_seen.contains(&d.name) {
                report.problems.push(VerifyProblem {
                    path: d.name.clone(),
                    problem: "document missing from the backup".into(),
                });
            }
        }
        Ok(report)
    }
}

/// Hashes at most `limit` bytes of `r`.
fn hash_reader(r: &mut dyn Read, limit: u64, buf: &mut [u8]) -> io::Result<(u64, String)> {
    let mut hasher = blake3::Hasher::new();
    let mut total = 0u64;
    while total < limit {
        let want = (limit - total).min(buf.len() as u64) as usize;
        let n = match r.read(&mut buf[..want]) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths_count_themselves() {
        // Around the points where the length gains a digit.
        for n in 0..1200 {
            let mut out = Vec::new();
            pax_record(&mut out, "SCHILY.xattr.user.a", &vec![b'v'; n]);
            let sp = out.iter().position(|&b| b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&out[..sp]).unwrap().parse().unwrap();
            assert_eq!(len, out.len(), "value of {n} bytes");
            assert_eq!(out.last(), Some(&b'\n'));
        }
    }

    #[test]
    fn member_names() {
        assert_eq!(live_of("data").as_deref(), Some("/"));
        assert_eq!(live_of("data/srv/a").as_deref(), Some("/srv/a"));
        assert_eq!(live_of("database"), None);
        assert_eq!(live_of("manifest.jsonl"), None);
    }
}
