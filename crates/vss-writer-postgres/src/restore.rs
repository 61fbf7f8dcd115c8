//! The writer's record of a backup (kept in the Backup Components
//! Document), and PostRestore: making a restored data directory one the
//! server starts from.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vss_types::{BcdComponent, RestoreTarget};

use crate::metadata::{ClusterLayout, REQUIRED_DIRS};

/// The first line of the record, so other text in the field is told apart.
pub const RECORD_FORMAT: &str = "vss-writer-postgres/1";

/// The writer-private backup metadata of the cluster component
/// (`IVssComponent::SetBackupMetadata`): where the cluster was, and what
/// `pg_backup_start`/`pg_backup_stop` answered. vssbackup keeps it in
/// `backup-components.xml` beside the files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRecord {
    pub format: String,
    pub data_directory: PathBuf,
    #[serde(default)]
    pub wal_directory: Option<PathBuf>,
    /// `(oid, location)`.
    #[serde(default)]
    pub tablespaces: Vec<(String, PathBuf)>,
    /// Owner of the data directory at backup time.
    pub uid: u32,
    pub gid: u32,
    pub start_lsn: String,
    pub stop_lsn: String,
    pub started_unix_us: u64,
    pub stopped_unix_us: u64,
    /// The `backup_label` `pg_backup_stop` returned. Kept as a record: it
    /// is *not* written into a restored data directory (see
    /// [`prepare_data_directory`]).
    pub backup_label: String,
    /// The `tablespace_map` `pg_backup_stop` returned.
    pub tablespace_map: String,
}

impl BackupRecord {
    pub fn to_text(&self) -> String {
        // serde_json cannot fail on this type.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn from_text(s: &str) -> Result<Self, String> {
        let r: BackupRecord = serde_json::from_str(s)
            .map_err(|e| format!("the writer's backup metadata cannot be read: {e}"))?;
        if r.format != RECORD_FORMAT {
            return Err(format!(
                "the writer's backup metadata has format '{}', not '{RECORD_FORMAT}'",
                r.format
            ));
        }
        Ok(r)
    }

    pub fn layout(&self) -> ClusterLayout {
        ClusterLayout {
            data_directory: self.data_directory.clone(),
            wal_directory: self.wal_directory.clone(),
            tablespaces: self.tablespaces.clone(),
        }
    }
}

/// Where `original` (a directory of the component) was restored to: the
/// component's alternate location mapping for it unless the requestor
/// chose the original location. A restore to an alternate location
/// without a mapping for it is an error.
pub fn restored_dir(comp: &BcdComponent, original: &Path) -> Result<PathBuf, String> {
    let keep = matches!(
        comp.restore_target,
        RestoreTarget::Original | RestoreTarget::OriginalLocation
    );
    if !keep {
        for m in &comp.alternate_location_mappings {
            let base = Path::new(&m.path);
            if base == original {
                return Ok(PathBuf::from(&m.alternate_path));
            }
            if m.recursive {
                if let Ok(rel) = original.strip_prefix(base) {
                    return Ok(Path::new(&m.alternate_path).join(rel));
                }
            }
        }
        if comp.restore_target == RestoreTarget::Alternate {
            return Err(format!(
                "the restore target is an alternate location, but no alternate location mapping covers {}",
                original.display()
            ));
        }
    }
    Ok(original.to_owned())
}

/// What PostRestore did to one data directory.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Prepared {
    pub data_directory: PathBuf,
    pub removed: Vec<PathBuf>,
    pub created: Vec<PathBuf>,
    pub linked: Vec<(PathBuf, PathBuf)>,
}

fn io(what: &Path, e: std::io::Error) -> String {
    format!("{}: {e}", what.display())
}

/// Makes a restored cluster startable, for crash recovery from the atomic
/// image the shadow copy holds:
///
/// * removes `postmaster.pid` (a restored one would make the server think
///   another runs) and a stale `backup_label`/`tablespace_map`;
/// * creates the directories whose contents the backup leaves out
///   ([`REQUIRED_DIRS`]), mode 0700;
/// * makes the `pg_wal` link and the tablespace links in `pg_tblspc`
///   again, pointing at where those directories were restored;
/// * when allowed (root, CAP_CHOWN), gives the restored files the data directory's
///   owner at backup time, and the data directory mode 0700.
///
/// `backup_label` is deliberately not written: the shadow copy is cut
/// before `pg_backup_stop` writes its end-of-backup WAL record, and a
/// server started with that label stops with "WAL ends before end of
/// online backup". Without it the server does ordinary crash recovery
/// from the checkpoint in `pg_control` — correct because the snapshot set
/// is one atomic image of the data directory, the WAL and every
/// tablespace.
pub fn prepare_data_directory(rec: &BackupRecord, comp: &BcdComponent) -> Result<Prepared, String> {
    let dd = restored_dir(comp, &rec.data_directory)?;
    let mut out = Prepared {
        data_directory: dd.clone(),
        ..Default::default()
    };
    let version = dd.join("PG_VERSION");
    if !version.is_file() {
        return Err(format!(
            "the restored data directory {} holds no PG_VERSION: the files were not restored there",
            dd.display()
        ));
    }
    if !dd.join("global/pg_control").is_file() {
        return Err(format!(
            "the restored data directory {} holds no global/pg_control",
            dd.display()
        ));
    }
    for name in ["postmaster.pid", "backup_label", "tablespace_map"] {
        let p = dd.join(name);
        match std::fs::remove_file(&p) {
            Ok(()) => out.removed.push(p),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&p, e)),
        }
    }
    for rel in REQUIRED_DIRS {
        let p = dd.join(rel);
        if std::fs::symlink_metadata(&p).is_err() {
            std::fs::create_dir_all(&p).map_err(|e| io(&p, e))?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| io(&p, e))?;
            out.created.push(p);
        }
    }
    let mut extra_roots = Vec::new();
    let wal_link = dd.join("pg_wal");
    match &rec.wal_directory {
        Some(w) => {
            let target = restored_dir(comp, w)?;
            std::fs::create_dir_all(&target).map_err(|e| io(&target, e))?;
            relink(&wal_link, &target)?;
            out.linked.push((wal_link.clone(), target.clone()));
            extra_roots.push(target.clone());
            ensure_dir(&target.join("archive_status"), &mut out)?;
        }
        None => {
            ensure_dir(&wal_link, &mut out)?;
            ensure_dir(&wal_link.join("archive_status"), &mut out)?;
        }
    }
    for (oid, loc) in &rec.tablespaces {
        if oid.is_empty() || !oid.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!(
                "tablespace oid {oid:?} in the backup metadata is not a number"
            ));
        }
        let target = restored_dir(comp, loc)?;
        std::fs::create_dir_all(&target).map_err(|e| io(&target, e))?;
        let link = dd.join("pg_tblspc").join(oid);
        relink(&link, &target)?;
        out.linked.push((link, target.clone()));
        extra_roots.push(target);
    }
    let mut roots = vec![dd.clone()];
    roots.extend(extra_roots);
    for r in &roots {
        match chown_tree(r, rec.uid, rec.gid) {
            Ok(()) => {}
            // Without CAP_CHOWN the files keep the owner the restore gave
            // them; the server's user must own them before it starts.
            Err(e) if !running_as_root() => {
                tracing::warn!(error = %e, uid = rec.uid, "cannot give the restored files their owner back");
            }
            Err(e) => return Err(e),
        }
    }
    std::fs::set_permissions(&dd, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| io(&dd, e))?;
    Ok(out)
}

fn ensure_dir(p: &Path, out: &mut Prepared) -> Result<(), String> {
    if std::fs::symlink_metadata(p).is_err() {
        std::fs::create_dir_all(p).map_err(|e| io(p, e))?;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io(p, e))?;
        out.created.push(p.to_owned());
    }
    Ok(())
}

/// Makes `link` a symbolic link to `target`, replacing a link or an empty
/// directory there.
fn relink(link: &Path, target: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(link) {
        Ok(m) if m.file_type().is_symlink() => {
            if std::fs::read_link(link).ok().as_deref() == Some(target) {
                return Ok(());
            }
            std::fs::remove_file(link).map_err(|e| io(link, e))?;
        }
        Ok(m) if m.is_dir() => {
            std::fs::remove_dir(link).map_err(|e| {
                format!(
                    "{} should become a link to {}, but is a directory that is not empty: {e}",
                    link.display(),
                    target.display()
                )
            })?;
        }
        Ok(_) => std::fs::remove_file(link).map_err(|e| io(link, e))?,
        Err(_) => {}
    }
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    }
    std::os::unix::fs::symlink(target, link).map_err(|e| io(link, e))
}

/// Whether this process runs as root (the owner of `/proc/self`).
pub fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `chown -R` without following links.
fn chown_tree(root: &Path, uid: u32, gid: u32) -> Result<(), String> {
    let mut stack = vec![root.to_owned()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).map_err(|e| io(&p, e))?;
        if m.uid() != uid || m.gid() != gid {
            std::os::unix::fs::lchown(&p, Some(uid), Some(gid)).map_err(|e| io(&p, e))?;
        }
        if m.is_dir() {
            for ent in std::fs::read_dir(&p).map_err(|e| io(&p, e))? {
                let ent = ent.map_err(|e| io(&p, e))?;
                stack.push(ent.path());
            }
        }
    }
    Ok(())
}
