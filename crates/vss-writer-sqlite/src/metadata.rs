//! The Writer Metadata Document the writer answers Identify with.

use vss_types::{
    BackupSchema, ComponentType, FileSpecBackupType, Guid, RestoreMethod, SourceType, UsageType,
    VssResult, WmComponent, WriterMetadata, WriterRestore,
};

use crate::config::SqliteWriterConfig;

/// One database component per configured database:
///
/// * the database file as its database file set, and its `-wal` and
///   `-journal` files as log file sets (exact names in the database's
///   directory, not recursive): whichever the journal mode leaves on disk
///   must be copied with the database;
/// * the `-shm` file excluded: it is a memory map SQLite rebuilds from the
///   WAL when the database is opened, and a copy of it is worse than none;
/// * restore method "restore if can replace", and the writer takes part in
///   every restore (`writerRestore="always"`) to check the restored
///   databases in PostRestore.
pub fn writer_metadata(cfg: &SqliteWriterConfig, instance_id: Guid) -> VssResult<WriterMetadata> {
    let mut m = WriterMetadata::new(
        cfg.name.clone(),
        cfg.writer_id(),
        instance_id,
        UsageType::UserData,
        SourceType::TransactedDb,
    );
    m.set_restore_method(
        RestoreMethod::RestoreIfCanReplace,
        None,
        None,
        WriterRestore::Always,
        false,
    )?;
    // No backup history is kept, so a copy backup is as good as a full one.
    m.set_backup_schema(BackupSchema::COPY);
    for db in &cfg.databases {
        let dir = db.dir().to_string_lossy().into_owned();
        let name = db.file_name();
        let caption = db
            .caption
            .clone()
            .unwrap_or_else(|| db.path.display().to_string());
        m.add_component(
            WmComponent::new(
                ComponentType::Database,
                db.logical_path.clone(),
                db.component.clone(),
            )
            .caption(caption)
            .selectable(true),
        )?;
        m.add_database_files(
            &db.logical_path,
            &db.component,
            &dir,
            &name,
            FileSpecBackupType::DEFAULT,
        )?;
        for suffix in ["-wal", "-journal"] {
            m.add_database_log_files(
                &db.logical_path,
                &db.component,
                &dir,
                &format!("{name}{suffix}"),
                FileSpecBackupType::DEFAULT,
            )?;
        }
        m.add_exclude_files(&dir, &format!("{name}-shm"), false)?;
    }
    Ok(m)
}
