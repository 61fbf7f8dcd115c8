//! Identify answers a Writer Metadata Document built from the writer file.

use std::path::Path;

use vss_core::WriterEndpoint;
use vss_exec_writer::{parse, ExecWriter};
use vss_types::{
    ComponentType, FileSpecBackupType, Guid, RestoreMethod, SourceType, UsageType, WriterMetadata,
    WriterRestore,
};

const FILE: &str = r#"
name = "PostgreSQL"
usage = "system-service"
restore-method = "stop-restore-start"
service = "postgresql.service"

[[component]]
name = "cluster"
logical-path = "PostgreSQL\\16"
caption = "Main cluster"
type = "database"
database-files = [{ path = "/var/lib/postgresql/16/main", filespec = "*" }]
log-files = [{ path = "/var/lib/postgresql/16/main/pg_wal" }]

[[component]]
name = "config"
selectable = false
files = [
  { path = "/etc/postgresql" },
  { path = "/etc/postgresql-common", filespec = "*.conf", recursive = false, alternate-location = "/var/backups/pg-common" },
]

[[exclude]]
path = "/var/lib/postgresql/16/main"
filespec = "postmaster.pid"
recursive = false

[[exclude]]
path = "/var/lib/postgresql"

[hooks]
freeze = ["/usr/local/sbin/pg-freeze"]
backup-complete = ["/usr/local/sbin/pg-done"]
post-restore = ["/usr/local/sbin/pg-restored"]
"#;

#[tokio::test]
async fn identify_builds_the_wmd() {
    let cfg = parse(FILE, Path::new("/etc/vss/writers.d/pg.toml")).unwrap();
    let w = ExecWriter::new(cfg);
    let inst = Guid::new_random();
    w.set_instance_id(inst);
    let xml = w.identify().await.unwrap();
    let m = WriterMetadata::from_xml(&xml).unwrap();

    assert_eq!(m.writer_name, "PostgreSQL");
    assert_eq!(m.writer_id, w.writer_id());
    assert_eq!(m.instance_id, inst);
    assert_eq!(m.usage, UsageType::SystemService);
    assert_eq!(m.source, SourceType::TransactedDb);
    let r = m.restore_method.as_ref().unwrap();
    assert_eq!(r.method, RestoreMethod::StopRestoreStart);
    assert_eq!(r.service.as_deref(), Some("postgresql.service"));
    // A restore hook means the writer takes part in restores.
    assert_eq!(r.writer_restore, WriterRestore::Always);

    assert_eq!(m.components.len(), 2);
    let db = m.component("PostgreSQL\\16", "cluster").unwrap();
    assert_eq!(db.component_type, ComponentType::Database);
    assert_eq!(db.caption, "Main cluster");
    assert!(db.selectable);
    assert!(
        db.notify_on_backup_complete,
        "a backup-complete hook wants the event"
    );
    assert_eq!(db.database_files.len(), 1);
    assert_eq!(db.database_files[0].path, "/var/lib/postgresql/16/main");
    assert!(!db.database_files[0].recursive);
    assert_eq!(
        db.database_logfiles[0].path,
        "/var/lib/postgresql/16/main/pg_wal"
    );
    assert_eq!(db.database_logfiles[0].filespec, "*");
    assert_eq!(
        db.database_logfiles[0].backup_type_mask,
        FileSpecBackupType::DEFAULT
    );

    let fg = m.component("", "config").unwrap();
    assert_eq!(fg.component_type, ComponentType::FileGroup);
    assert!(!fg.selectable);
    assert_eq!(fg.files.len(), 2);
    assert_eq!(fg.files[0].path, "/etc/postgresql");
    assert_eq!(fg.files[0].filespec, "*");
    assert!(
        fg.files[0].recursive,
        "file groups are recursive by default"
    );
    assert_eq!(fg.files[1].filespec, "*.conf");
    assert!(!fg.files[1].recursive);
    assert_eq!(
        fg.files[1].alternate_location.as_deref(),
        Some("/var/backups/pg-common")
    );

    assert_eq!(m.excluded_files.len(), 2);
    assert_eq!(m.excluded_files[0].filespec, "postmaster.pid");
    assert!(!m.excluded_files[0].recursive);
    assert_eq!(m.excluded_files[1].path, "/var/lib/postgresql");
    assert_eq!(m.excluded_files[1].filespec, "*");
    assert!(m.excluded_files[1].recursive);
}

#[tokio::test]
async fn minimal_writer_identifies() {
    let cfg = parse("name = \"fsfreeze\"\n", Path::new("f.toml")).unwrap();
    let w = ExecWriter::new(cfg);
    let m = WriterMetadata::from_xml(&w.identify().await.unwrap()).unwrap();
    assert_eq!(m.writer_name, "fsfreeze");
    assert_eq!(m.usage, UsageType::UserData);
    assert_eq!(m.source, SourceType::Other);
    assert!(m.components.is_empty());
    let r = m.restore_method.unwrap();
    assert_eq!(r.method, RestoreMethod::RestoreIfCanReplace);
    assert_eq!(r.writer_restore, WriterRestore::Never);
    // The random instance id until set.
    assert_eq!(m.instance_id, w.instance_id());
    assert!(!m.instance_id.is_null());
}
