//! The Writer Metadata Document the writer answers Identify with.

use std::path::Path;

use vss_types::{
    BackupSchema, ComponentType, FileSpecBackupType, Guid, RestoreMethod, SourceType, UsageType,
    VssResult, WmComponent, WmFileDesc, WriterMetadata, WriterRestore,
};

use crate::config::MariadbWriterConfig;
use crate::layout::Layout;

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// One file-group component for the instance:
///
/// * the data directory, recursively (`*`): every database directory, the
///   system tablespace, the InnoDB redo log (`ib_logfile0`) and undo
///   tablespaces, Aria's logs and control file; InnoDB crash recovery at
///   the first start of a restored copy needs all of them;
/// * the redo log (`ib_logfile*`) and undo tablespaces (`undo*`) in their
///   own directories when the server keeps them outside the data
///   directory;
/// * excluded, as mariabackup leaves them out: the pid file and the socket
///   (`*.pid`, the server's socket, `mysql.sock`), the InnoDB temporary
///   tablespace (`ibtmp*`, recreated at every start), and the contents of
///   the server's tmpdir when it lies inside the data directory;
/// * restore method "stop, restore, start" with the configured service;
///   the writer takes part in every restore (`writerRestore="always"`) to
///   clear stale pid and socket files.
pub fn writer_metadata(
    cfg: &MariadbWriterConfig,
    instance_id: Guid,
    layout: &Layout,
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
    let datadir = s(&layout.datadir);
    let caption = cfg
        .caption
        .clone()
        .unwrap_or_else(|| format!("MariaDB instance ({datadir})"));
    m.add_component(
        WmComponent::new(
            ComponentType::FileGroup,
            cfg.logical_path.clone(),
            cfg.component.clone(),
        )
        .caption(caption)
        .selectable(true),
    )?;
    let lp = cfg.logical_path.clone();
    let name = cfg.component.clone();
    m.add_files_to_file_group(
        &lp,
        &name,
        WmFileDesc::new(datadir.clone(), "*")
            .recursive(true)
            .backup_type_mask(FileSpecBackupType::DEFAULT),
    )?;
    let mut extra = Vec::new();
    if !layout.redo_dir.starts_with(&layout.datadir) {
        extra.push((s(&layout.redo_dir), "ib_logfile*"));
    }
    if !layout.undo_dir.starts_with(&layout.datadir) {
        extra.push((s(&layout.undo_dir), "undo*"));
    }
    for (dir, spec) in extra {
        m.add_files_to_file_group(
            &lp,
            &name,
            WmFileDesc::new(dir, spec).backup_type_mask(FileSpecBackupType::DEFAULT),
        )?;
    }
    m.add_exclude_files(&datadir, "*.pid", false)?;
    m.add_exclude_files(&datadir, "mysql.sock", false)?;
    m.add_exclude_files(&datadir, "ibtmp*", false)?;
    for f in [&layout.socket, &layout.pid_file].into_iter().flatten() {
        if f.starts_with(&layout.datadir) {
            if let (Some(dir), Some(file)) = (f.parent(), f.file_name()) {
                m.add_exclude_files(&s(dir), &file.to_string_lossy(), false)?;
            }
        }
    }
    for t in &layout.tmpdirs {
        if t.starts_with(&layout.datadir) && *t != layout.datadir {
            m.add_exclude_files(&s(t), "*", true)?;
        }
    }
    Ok(m)
}
