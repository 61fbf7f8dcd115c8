//! The manifest (`manifest.jsonl`): a header line, then one
//! [`ManifestEntry`] per line. Also the path rules shared by both
//! archive kinds: live paths, data paths, document names.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::ArchiveError;
use super::{DATA_DIR, MANIFEST_FILE};

/// The format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Absolute live path the entry belongs to (where it is restored by
    /// default), e.g. "/srv/app/db.sqlite".
    pub path: String,
    pub kind: EntryKind,
    /// Symlink target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Bytes actually stored (files), 0 otherwise.
    pub size: u64,
    /// st_mode & 0o7777.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
    /// Extended attributes; values base64 (standard alphabet, padded).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, String>,
    /// BLAKE3 of the stored content, lowercase hex; files only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
    /// Opaque key given by the caller; None = crash-consistent data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
}

/// A named document as the header lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentInfo {
    pub name: String,
    pub size: u64,
    pub blake3: String,
}

/// The first line of `manifest.jsonl`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestHeader {
    pub format: u32,
    /// "vss-requestor 0.1.0": which program wrote the backup.
    pub created_by: String,
    pub created_unix_ms: u64,
    /// Number of entry lines that follow; a shorter manifest is damaged.
    pub entries: u64,
    /// Sum of the `size` of the file entries.
    pub file_bytes: u64,
    #[serde(default)]
    pub documents: Vec<DocumentInfo>,
    /// tar.zst only: ordinals (0-based, counting the members the tar reader
    /// yields, i.e. not PAX or GNU long-name headers) of data members that
    /// must be ignored: their source failed after the member's header was
    /// written (see docs/BACKUP-FORMAT.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub void_members: Vec<u64>,
}

/// A parsed manifest.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub header: ManifestHeader,
    pub entries: Vec<ManifestEntry>,
}

impl Manifest {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.entries.len() * 200);
        // Serializing plain structs of strings and numbers into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, &self.header);
        out.push(b'\n');
        for e in &self.entries {
            let _ = serde_json::to_writer(&mut out, e);
            out.push(b'\n');
        }
        out
    }

    /// Parses and checks a manifest read from `backup` (for messages).
    pub fn decode(backup: &Path, bytes: &[u8]) -> Result<Manifest, ArchiveError> {
        let corrupt = |reason: String| ArchiveError::corrupt(backup, reason);
        let mut lines = bytes.split(|&b| b == b'\n');
        let first = lines.next().unwrap_or_default();
        // Look at `format` before anything else so that a newer format is
        // reported as such, not as a parse error.
        let value: serde_json::Value = serde_json::from_slice(first).map_err(|e| {
            corrupt(format!(
                "{MANIFEST_FILE} line 1 is not a manifest header: {e}"
            ))
        })?;
        let version = value
            .get("format")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| corrupt(format!("{MANIFEST_FILE} line 1 has no format version")))?;
        if version != u64::from(FORMAT_VERSION) {
            return Err(ArchiveError::UnsupportedFormat {
                path: backup.to_path_buf(),
                version,
                supported: FORMAT_VERSION,
            });
        }
        let header: ManifestHeader = serde_json::from_value(value)
            .map_err(|e| corrupt(format!("{MANIFEST_FILE} header: {e}")))?;

        let mut entries = Vec::with_capacity(header.entries.min(1 << 20) as usize);
        let mut seen = HashSet::new();
        for (i, line) in lines.enumerate() {
            if line.is_empty() {
                continue;
            }
            let lineno = i + 2;
            let entry: ManifestEntry = serde_json::from_slice(line)
                .map_err(|e| corrupt(format!("{MANIFEST_FILE} line {lineno}: {e}")))?;
            check_entry(&entry)
                .map_err(|r| corrupt(format!("{MANIFEST_FILE} line {lineno}: {r}")))?;
            if !seen.insert(entry.path.clone()) {
                return Err(corrupt(format!(
                    "{MANIFEST_FILE} line {lineno}: {} is listed twice",
                    entry.path
                )));
            }
            entries.push(entry);
        }
        if entries.len() as u64 != header.entries {
            return Err(corrupt(format!(
                "{MANIFEST_FILE} lists {} entries, its header says {}",
                entries.len(),
                header.entries
            )));
        }
        let mut names = HashSet::new();
        for d in &header.documents {
            check_document_name(&d.name).map_err(|e| corrupt(e.to_string()))?;
            if !is_hex_hash(&d.blake3) || !names.insert(d.name.as_str()) {
                return Err(corrupt(format!(
                    "{MANIFEST_FILE} header: bad document record {}",
                    d.name
                )));
            }
        }
        Ok(Manifest { header, entries })
    }
}

fn is_hex_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// What a reader relies on: a clean absolute path (it decides where data
/// goes, so no `..`), a target for symlinks, a hash for files.
fn check_entry(e: &ManifestEntry) -> Result<(), String> {
    data_rel(&e.path)?;
    if e.mode > 0o7777 {
        return Err(format!("{}: mode {:o} out of range", e.path, e.mode));
    }
    if e.mtime_nsec >= 1_000_000_000 {
        return Err(format!("{}: mtime_nsec out of range", e.path));
    }
    match e.kind {
        EntryKind::File => match &e.blake3 {
            Some(h) if is_hex_hash(h) => {}
            _ => return Err(format!("{}: file without a valid blake3", e.path)),
        },
        EntryKind::Symlink => match &e.target {
            Some(t) if !t.is_empty() && !t.contains('\0') => {}
            _ => return Err(format!("{}: symlink without a target", e.path)),
        },
        EntryKind::Dir => {}
    }
    if e.kind != EntryKind::File && e.size != 0 {
        return Err(format!("{}: only files have a size", e.path));
    }
    Ok(())
}

/// The live path relative to the data area: "/srv/app" -> "srv/app", "/" -> "".
/// Refuses anything but a clean absolute path, so that a data path can
/// never leave the data area.
pub fn data_rel(live_path: &str) -> Result<&str, String> {
    let rest = live_path
        .strip_prefix('/')
        .ok_or_else(|| format!("{live_path:?} is not an absolute path"))?;
    if rest.is_empty() {
        return Ok("");
    }
    if live_path.contains('\0') {
        return Err(format!("{live_path:?} contains a NUL byte"));
    }
    for c in rest.split('/') {
        if c.is_empty() || c == "." || c == ".." {
            return Err(format!(
                "{live_path:?} is not a clean path (empty, . or .. component)"
            ));
        }
    }
    Ok(rest)
}

/// Path of the entry's member in a tar: "data/srv/app", or "data" for "/".
pub fn data_member(rel: &str) -> String {
    if rel.is_empty() {
        DATA_DIR.to_string()
    } else {
        format!("{DATA_DIR}/{rel}")
    }
}

/// A document name: relative, '/'-separated, clean, not in the data area,
/// not the manifest.
pub fn check_document_name(name: &str) -> Result<(), ArchiveError> {
    let bad = |reason: &str| {
        Err(ArchiveError::InvalidDocumentName {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.starts_with('/') {
        return bad("must be relative");
    }
    if name.contains('\0') || name.contains('\\') {
        return bad("contains a NUL byte or a backslash");
    }
    if name
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return bad("has an empty, . or .. component");
    }
    let first = name.split('/').next().unwrap_or_default();
    if first == DATA_DIR {
        return bad("the data/ area holds the backed-up files");
    }
    if name == MANIFEST_FILE || first == format!("{MANIFEST_FILE}.tmp") {
        return bad("reserved for the manifest");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> ManifestEntry {
        ManifestEntry {
            path: path.into(),
            kind: EntryKind::Dir,
            target: None,
            size: 0,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime_sec: 1,
            mtime_nsec: 2,
            xattrs: BTreeMap::new(),
            blake3: None,
            component: None,
        }
    }

    fn manifest(entries: Vec<ManifestEntry>) -> Manifest {
        Manifest {
            header: ManifestHeader {
                format: FORMAT_VERSION,
                created_by: "test".into(),
                created_unix_ms: 0,
                entries: entries.len() as u64,
                file_bytes: 0,
                documents: vec![],
                void_members: vec![],
            },
            entries,
        }
    }

    #[test]
    fn live_paths() {
        assert_eq!(data_rel("/"), Ok(""));
        assert_eq!(data_rel("/srv/a b\nc"), Ok("srv/a b\nc"));
        for bad in ["", "srv", "/srv/", "//srv", "/srv/../etc", "/./a", "/a\0b"] {
            assert!(data_rel(bad).is_err(), "{bad:?}");
        }
        assert_eq!(data_member(""), "data");
        assert_eq!(data_member("x/y"), "data/x/y");
    }

    #[test]
    fn document_names() {
        assert!(check_document_name("backup.json").is_ok());
        assert!(check_document_name("writers/SqliteWriter.{x}.xml").is_ok());
        for bad in [
            "",
            "/abs",
            "a/../b",
            "a//b",
            "data/x",
            "data",
            "manifest.jsonl",
            "./x",
        ] {
            assert!(check_document_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_document_name("database/x").is_ok());
    }

    #[test]
    fn round_trip_and_damage() {
        let mut f = entry("/srv/f");
        f.kind = EntryKind::File;
        f.size = 3;
        f.blake3 = Some(blake3::hash(b"abc").to_hex().to_string());
        f.xattrs.insert("user.a".into(), "AAE=".into());
        let m = manifest(vec![entry("/"), entry("/srv"), f]);
        let bytes = m.encode();
        let p = Path::new("/b");
        let back = Manifest::decode(p, &bytes).unwrap();
        assert_eq!(back.entries, m.entries);
        assert_eq!(back.header, m.header);

        // Truncated: the count in the header no longer matches.
        let cut = &bytes[..bytes.len() - 10];
        assert!(matches!(
            Manifest::decode(p, cut),
            Err(ArchiveError::Corrupt { .. })
        ));
        // Newer format.
        let newer = br#"{"format":2}"#;
        assert!(matches!(
            Manifest::decode(p, newer),
            Err(ArchiveError::UnsupportedFormat { version: 2, .. })
        ));
        // Garbage and empty input never panic.
        for g in [
            &b""[..],
            b"\xff\xfe",
            b"{}",
            b"[1,2]\n{}",
            b"{\"format\":1}",
        ] {
            assert!(Manifest::decode(p, g).is_err());
        }
        // An entry escaping the data area.
        let evil = manifest(vec![entry("/srv/../../etc")]);
        assert!(Manifest::decode(p, &evil.encode()).is_err());
        // Duplicates.
        let dup = manifest(vec![entry("/a"), entry("/a")]);
        assert!(Manifest::decode(p, &dup.encode()).is_err());
    }
}
