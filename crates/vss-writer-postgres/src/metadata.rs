//! The cluster's layout on disk and the Writer Metadata Document built
//! from it.

use std::path::{Path, PathBuf};

use vss_types::{
    BackupSchema, ComponentType, FileSpecBackupType, Guid, RestoreMethod, SourceType, UsageType,
    VssResult, WmComponent, WmFileDesc, WriterMetadata, WriterRestore,
};

use crate::config::PostgresWriterConfig;

/// What of the data directory is left out of the backup, after
/// "Making a Base Backup Using the Low Level API" of the PostgreSQL
/// documentation: `(path below the data directory, filespec, recursive)`.
/// The directories themselves are recreated empty by PostRestore.
///
/// `pg_wal` is *not* excluded: the shadow copy is one atomic image of the
/// whole cluster, and the WAL in it is what crash recovery replays.
pub const EXCLUDED: &[(&str, &str, bool)] = &[
    ("", "postmaster.pid", false),
    ("", "postmaster.opts", false),
    ("", "backup_label.old", false),
    ("", "tablespace_map.old", false),
    ("pg_replslot", "*", true),
    ("pg_dynshmem", "*", true),
    ("pg_notify", "*", true),
    ("pg_serial", "*", true),
    ("pg_snapshots", "*", true),
    ("pg_stat_tmp", "*", true),
    ("pg_subtrans", "*", true),
    // The tablespace links: their targets are file sets of their own, and
    // PostRestore makes the links again (to the restored locations).
    ("pg_tblspc", "*", false),
    ("", "pgsql_tmp*", true),
    ("", "pg_internal.init", true),
];

/// Directories a data directory must have; the backup may hold them empty
/// or not at all (excluded contents), so PostRestore creates the missing
/// ones.
pub const REQUIRED_DIRS: &[&str] = &[
    "base",
    "global",
    "pg_commit_ts",
    "pg_dynshmem",
    "pg_logical",
    "pg_logical/mappings",
    "pg_logical/snapshots",
    "pg_multixact",
    "pg_multixact/members",
    "pg_multixact/offsets",
    "pg_notify",
    "pg_replslot",
    "pg_serial",
    "pg_snapshots",
    "pg_stat",
    "pg_stat_tmp",
    "pg_subtrans",
    "pg_tblspc",
    "pg_twophase",
    "pg_xact",
];

/// Where the cluster's files are: the data directory, the WAL directory
/// when `pg_wal` is a link to another place, and each tablespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterLayout {
    pub data_directory: PathBuf,
    /// The target of `pg_wal` when it is a symbolic link.
    pub wal_directory: Option<PathBuf>,
    /// `(oid, location)` from the links in `pg_tblspc`.
    pub tablespaces: Vec<(String, PathBuf)>,
}

impl ClusterLayout {
    /// The data directory alone (for checking a configuration).
    pub fn configured(data_directory: &Path) -> Self {
        ClusterLayout {
            data_directory: data_directory.to_owned(),
            ..Default::default()
        }
    }

    /// Reads the layout from the data directory: `pg_wal` and the links in
    /// `pg_tblspc`. The data directory must hold `PG_VERSION`.
    pub fn read(data_directory: &Path) -> Result<Self, String> {
        let version = data_directory.join("PG_VERSION");
        match std::fs::metadata(&version) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err(format!("{} is not a file", version.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!(
                    "{} holds no PG_VERSION: it is not a PostgreSQL data directory (or not mounted yet)",
                    data_directory.display()
                ))
            }
            Err(e) => return Err(format!("cannot reach {}: {e}", version.display())),
        }
        let mut layout = ClusterLayout::configured(data_directory);
        let wal = data_directory.join("pg_wal");
        if let Ok(target) = std::fs::read_link(&wal) {
            layout.wal_directory = Some(absolute_target(&wal, &target));
        }
        let tblspc = data_directory.join("pg_tblspc");
        match std::fs::read_dir(&tblspc) {
            Ok(rd) => {
                for ent in rd.flatten() {
                    let link = ent.path();
                    if let Ok(target) = std::fs::read_link(&link) {
                        layout.tablespaces.push((
                            ent.file_name().to_string_lossy().into_owned(),
                            absolute_target(&link, &target),
                        ));
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot list {}: {e}", tblspc.display())),
        }
        layout.tablespaces.sort();
        Ok(layout)
    }
}

fn absolute_target(link: &Path, target: &Path) -> PathBuf {
    if target.is_absolute() {
        target.to_owned()
    } else {
        link.parent().unwrap_or(Path::new("/")).join(target)
    }
}

fn text(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// One file-group component for the cluster (a database component's file
/// sets cannot be recursive): the data directory, the WAL directory when
/// `pg_wal` links elsewhere, and each tablespace location, all recursive;
/// the exclusions of [`EXCLUDED`]; restore method stop-restore-start with
/// the configured service, and the writer takes part in every restore.
pub fn writer_metadata(
    cfg: &PostgresWriterConfig,
    instance_id: Guid,
    layout: &ClusterLayout,
) -> VssResult<WriterMetadata> {
    let mut m = WriterMetadata::new(
        cfg.name.clone(),
        cfg.writer_id(),
        instance_id,
        UsageType::UserData,
        SourceType::TransactedDb,
    );
    m.set_restore_method(
        RestoreMethod::StopRestoreStart,
        Some(cfg.service.clone()),
        None,
        WriterRestore::Always,
        false,
    )?;
    m.set_backup_schema(BackupSchema::COPY);
    m.add_component(
        WmComponent::new(
            ComponentType::FileGroup,
            cfg.logical_path.clone(),
            cfg.component.clone(),
        )
        .caption(cfg.caption())
        .selectable(true),
    )?;
    let mut sets = vec![layout.data_directory.clone()];
    sets.extend(layout.wal_directory.clone());
    sets.extend(layout.tablespaces.iter().map(|(_, p)| p.clone()));
    for dir in &sets {
        m.add_files_to_file_group(
            &cfg.logical_path,
            &cfg.component,
            WmFileDesc::new(text(dir), "*")
                .recursive(true)
                .backup_type_mask(FileSpecBackupType::DEFAULT),
        )?;
    }
    let dd = &layout.data_directory;
    for (rel, spec, recursive) in EXCLUDED {
        let dir = if rel.is_empty() {
            dd.clone()
        } else {
            dd.join(rel)
        };
        m.add_exclude_files(&text(&dir), spec, *recursive)?;
    }
    if layout.wal_directory.is_some() {
        // The link itself; its target is a file set above.
        m.add_exclude_files(&text(dd), "pg_wal", false)?;
    }
    Ok(m)
}
