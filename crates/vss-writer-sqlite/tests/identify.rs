//! Identify: the Writer Metadata Document (one database component per
//! database, its files, the -shm exclusion, the restore method), and
//! unreachable databases.

use std::path::Path;

use vss_types::{
    ComponentType, FileSpecBackupType, Guid, RestoreMethod, SourceType, UsageType, WriterMetadata,
    WriterRestore,
};
use vss_writer::{VetoKind, Writer};
use vss_writer_sqlite::config::parse;
use vss_writer_sqlite::{DatabaseConfig, SqliteWriter, SqliteWriterConfig};

fn make_db(path: &Path) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
}

#[test]
fn metadata_lists_components_files_and_exclusions() {
    let cfg = parse(
        r#"
name = "Apps"
[[database]]
component = "inventory"
path = "/var/lib/inventory/inventory.db"
logical-path = "Apps\\Inventory"
caption = "Inventory"

[[database]]
component = "sessions"
path = "/srv/web/sessions.sqlite3"
"#,
        Path::new("/etc/vss/sqlite-writer.toml"),
    )
    .unwrap();
    let inst = Guid::new_random();
    let m = vss_writer_sqlite::metadata::writer_metadata(&cfg, inst).unwrap();
    // What goes on the wire reads back the same.
    let m2 = WriterMetadata::from_xml(&m.to_xml()).unwrap();
    assert_eq!(m, m2);

    assert_eq!(m.writer_name, "Apps");
    assert_eq!(m.writer_id, cfg.writer_id());
    assert_eq!(m.instance_id, inst);
    assert_eq!(m.usage, UsageType::UserData);
    assert_eq!(m.source, SourceType::TransactedDb);
    let r = m.restore_method.as_ref().unwrap();
    assert_eq!(r.method, RestoreMethod::RestoreIfCanReplace);
    assert_eq!(r.writer_restore, WriterRestore::Always);
    assert!(!r.reboot_required);
    assert_eq!(r.service, None);

    assert_eq!(m.components.len(), 2);
    let c = m.component("Apps\\Inventory", "inventory").unwrap();
    assert_eq!(c.component_type, ComponentType::Database);
    assert!(c.selectable);
    assert_eq!(c.caption, "Inventory");
    assert!(c.files.is_empty());
    assert_eq!(c.database_files.len(), 1);
    let f = &c.database_files[0];
    assert_eq!(
        (f.path.as_str(), f.filespec.as_str(), f.recursive),
        ("/var/lib/inventory", "inventory.db", false)
    );
    assert_eq!(f.backup_type_mask, FileSpecBackupType::DEFAULT);
    let logs: Vec<(&str, &str, bool)> = c
        .database_logfiles
        .iter()
        .map(|f| (f.path.as_str(), f.filespec.as_str(), f.recursive))
        .collect();
    assert_eq!(
        logs,
        [
            ("/var/lib/inventory", "inventory.db-wal", false),
            ("/var/lib/inventory", "inventory.db-journal", false),
        ]
    );

    let s = m.component("", "sessions").unwrap();
    assert_eq!(
        s.caption, "/srv/web/sessions.sqlite3",
        "caption defaults to the path"
    );
    assert_eq!(s.database_files[0].filespec, "sessions.sqlite3");
    assert_eq!(s.database_logfiles[0].filespec, "sessions.sqlite3-wal");

    let ex: Vec<(&str, &str, bool)> = m
        .excluded_files
        .iter()
        .map(|e| (e.path.as_str(), e.filespec.as_str(), e.recursive))
        .collect();
    assert_eq!(
        ex,
        [
            ("/var/lib/inventory", "inventory.db-shm", false),
            ("/srv/web", "sessions.sqlite3-shm", false),
        ]
    );
}

#[tokio::test]
async fn identify_answers_the_wmd_for_reachable_databases() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.db");
    let b = dir.path().join("b.db");
    make_db(&a);
    make_db(&b);
    let w = SqliteWriter::new(SqliteWriterConfig::new(vec![
        DatabaseConfig::new("a", &a),
        DatabaseConfig::new("b", &b),
    ]));
    let inst = Guid::new_random();
    w.set_instance_id(inst);
    let xml = w.on_identify().await.unwrap();
    let m = WriterMetadata::from_xml(&xml).unwrap();
    assert_eq!(m.writer_name, "SqliteWriter");
    assert_eq!(m.writer_id, w.writer_id());
    assert_eq!(m.instance_id, inst);
    assert_eq!(m.components.len(), 2);
}

#[tokio::test]
async fn identify_fails_retryable_for_a_missing_database() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.db");
    make_db(&a);
    let missing = dir.path().join("gone.db");
    let w = SqliteWriter::new(SqliteWriterConfig::new(vec![
        DatabaseConfig::new("a", &a),
        DatabaseConfig::new("gone", &missing),
    ]));
    let v = w.on_identify().await.unwrap_err();
    assert_eq!(v.kind(), VetoKind::Retryable, "{v}");
    assert!(v.to_string().contains("0x800423F3"), "{v}");
    assert!(v.message().contains(&missing.display().to_string()), "{v}");
    assert!(v.message().contains("unreachable"), "{v}");
    assert!(v.message().contains("does not exist"), "{v}");
    assert!(
        !v.message().contains("a.db"),
        "only the bad one is named: {v}"
    );
    assert!(v.hint().is_some());
    // A directory where the database should be cannot be opened either.
    std::fs::create_dir(&missing).unwrap();
    let v = w.on_identify().await.unwrap_err();
    assert_eq!(v.kind(), VetoKind::Retryable, "{v}");
}

#[tokio::test]
async fn identify_refuses_a_file_that_is_not_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![0x5a; 8192]).unwrap();
    let w = SqliteWriter::new(SqliteWriterConfig::new(vec![DatabaseConfig::new(
        "junk", &junk,
    )]));
    let v = w.on_identify().await.unwrap_err();
    assert_eq!(v.kind(), VetoKind::NonRetryable, "{v}");
    assert!(v.message().contains("junk.db"), "{v}");
}
