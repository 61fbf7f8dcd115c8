//! PreRestore and PostRestore: restored databases are checked with
//! `PRAGMA integrity_check` where they were restored to; failures are put
//! in the BCD and fail the event.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use rusqlite::Connection;
use vss_types::{
    AlternateLocationMapping, BackupComponents, BackupType, ComponentType, Guid, RestoreTarget,
};
use vss_writer::{VetoKind, Writer};
use vss_writer_sqlite::{DatabaseConfig, SqliteWriter, SqliteWriterConfig};

fn make_db(path: &Path, rows: usize) {
    let c = Connection::open(path).unwrap();
    c.execute_batch("CREATE TABLE t(n INTEGER PRIMARY KEY, v BLOB); CREATE INDEX t_v ON t(v);")
        .unwrap();
    let tx = c.unchecked_transaction().unwrap();
    for i in 0..rows {
        tx.execute(
            "INSERT INTO t(v) VALUES (?1)",
            [format!("{i:08}-{}", "x".repeat(200))],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

/// Overwrites a page in the middle of the file with garbage.
fn corrupt(path: &Path) {
    let len = std::fs::metadata(path).unwrap().len();
    assert!(len > 16 * 4096, "{len}");
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(len / 2 / 4096 * 4096)).unwrap();
    f.write_all(&[0xa5; 4096]).unwrap();
    f.sync_all().unwrap();
}

struct Setup {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    writer: SqliteWriter,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let mut inv = DatabaseConfig::new("inventory", d.join("inventory.db"));
    inv.logical_path = "Apps".into();
    let cfg = SqliteWriterConfig::new(vec![inv, DatabaseConfig::new("other", d.join("other.db"))]);
    Setup {
        _dir: dir,
        dir: d,
        writer: SqliteWriter::new(cfg),
    }
}

/// A restore BCD selecting `inventory` (from a backup by an earlier
/// instance of the writer).
fn bcd(w: &SqliteWriter, f: impl FnOnce(&mut vss_types::BcdComponent)) -> BackupComponents {
    let mut doc = BackupComponents::new(BackupType::Full, true);
    let c = doc
        .add_component(
            w.writer_id(),
            Guid::new_random(),
            ComponentType::Database,
            "Apps",
            "inventory",
        )
        .unwrap();
    c.selected_for_restore = true;
    f(c);
    doc
}

#[tokio::test]
async fn a_sound_restored_database_passes() {
    let s = setup();
    make_db(&s.dir.join("inventory.db"), 100);
    let doc = bcd(&s.writer, |_| {});
    let xml = doc.to_xml();
    let out = s.writer.check_restored(xml.clone()).await.unwrap();
    assert!(out.failure.is_none(), "{:?}", out.failure);
    assert_eq!(out.passed, vec![s.dir.join("inventory.db")]);
    assert_eq!(out.bcd, xml, "returned unchanged");
    assert_eq!(s.writer.on_post_restore(xml.clone()).await.unwrap(), xml);
    // Nothing selected, nothing to do; an empty BCD is fine too.
    let none = bcd(&s.writer, |c| c.selected_for_restore = false).to_xml();
    assert!(s
        .writer
        .check_restored(none)
        .await
        .unwrap()
        .passed
        .is_empty());
    assert_eq!(s.writer.on_post_restore(String::new()).await.unwrap(), "");
}

#[tokio::test]
async fn a_damaged_restored_database_fails_with_its_problems() {
    let s = setup();
    let db = s.dir.join("inventory.db");
    make_db(&db, 2000);
    corrupt(&db);
    let doc = bcd(&s.writer, |_| {});
    let out = s.writer.check_restored(doc.to_xml()).await.unwrap();
    let v = out.failure.expect("the damaged database passed");
    assert_eq!(v.kind(), VetoKind::NonRetryable);
    assert!(v.message().contains("Apps\\inventory"), "{v}");
    assert!(v.message().contains(&db.display().to_string()), "{v}");
    assert!(v.hint().unwrap().contains("good backup"), "{v:?}");
    // The component carries the failure in the BCD.
    let back = BackupComponents::from_xml(&out.bcd).unwrap();
    let c = &back.writers[0].components[0];
    let msg = c.post_restore_failure_message.as_deref().unwrap();
    assert!(msg.contains(&db.display().to_string()), "{msg}");
    assert!(msg.len() < 1000, "{msg}");
    // Through the writer interface PostRestore fails with the same text.
    let e = s.writer.on_post_restore(doc.to_xml()).await.unwrap_err();
    assert_eq!(e.message(), v.message());
}

#[tokio::test]
async fn a_missing_restored_database_fails() {
    let s = setup();
    let out = s
        .writer
        .check_restored(bcd(&s.writer, |_| {}).to_xml())
        .await
        .unwrap();
    let v = out.failure.unwrap();
    assert!(v.message().contains("does not exist"), "{v}");
}

#[tokio::test]
async fn alternate_locations_are_checked_where_the_files_went() {
    let s = setup();
    let alt = s.dir.join("restored-here");
    std::fs::create_dir(&alt).unwrap();
    make_db(&alt.join("inventory.db"), 50);
    // The original is damaged; only the alternate copy is looked at.
    make_db(&s.dir.join("inventory.db"), 2000);
    corrupt(&s.dir.join("inventory.db"));
    let dir = s.dir.display().to_string();
    let mapped = |c: &mut vss_types::BcdComponent| {
        c.restore_target = RestoreTarget::Alternate;
        c.alternate_location_mappings
            .push(AlternateLocationMapping {
                path: dir.clone(),
                filespec: "*".into(),
                recursive: false,
                alternate_path: alt.display().to_string(),
            });
    };
    let out = s
        .writer
        .check_restored(bcd(&s.writer, mapped).to_xml())
        .await
        .unwrap();
    assert!(out.failure.is_none(), "{:?}", out.failure);
    assert_eq!(out.passed, vec![alt.join("inventory.db")]);

    // Original target: the mapping is ignored and the damaged file found.
    let original = |c: &mut vss_types::BcdComponent| {
        mapped(c);
        c.restore_target = RestoreTarget::Original;
    };
    let out = s
        .writer
        .check_restored(bcd(&s.writer, original).to_xml())
        .await
        .unwrap();
    assert!(out.failure.is_some());

    // Alternate without a mapping for the file: said so.
    let unmapped = |c: &mut vss_types::BcdComponent| c.restore_target = RestoreTarget::Alternate;
    let out = s
        .writer
        .check_restored(bcd(&s.writer, unmapped).to_xml())
        .await
        .unwrap();
    let v = out.failure.unwrap();
    assert!(v.message().contains("no alternate location mapping"), "{v}");
}

#[tokio::test]
async fn other_writers_sections_are_left_alone() {
    let s = setup();
    let mut doc = BackupComponents::new(BackupType::Full, true);
    let c = doc
        .add_component(
            Guid::new_random(),
            Guid::new_random(),
            ComponentType::Database,
            "Apps",
            "inventory",
        )
        .unwrap();
    c.selected_for_restore = true;
    let out = s.writer.check_restored(doc.to_xml()).await.unwrap();
    assert!(out.failure.is_none());
    assert!(out.passed.is_empty());
}

#[tokio::test]
async fn pre_restore_refuses_while_another_process_has_the_database_open() {
    let s = setup();
    let db = s.dir.join("inventory.db");
    make_db(&db, 10);
    let xml = bcd(&s.writer, |_| {}).to_xml();
    assert_eq!(s.writer.on_pre_restore(xml.clone()).await.unwrap(), xml);

    // A process with the database as its standard input.
    let mut child = Command::new("sleep")
        .arg("30")
        .stdin(Stdio::from(std::fs::File::open(&db).unwrap()))
        .spawn()
        .unwrap();
    let r = s.writer.on_pre_restore(xml.clone()).await;
    let _ = child.kill();
    let _ = child.wait();
    let v = r.unwrap_err();
    assert_eq!(v.kind(), VetoKind::Retryable, "{v}");
    assert!(v.message().contains(&db.display().to_string()), "{v}");
    assert!(v.message().contains(&format!("pid {}", child.id())), "{v}");
    assert!(v.hint().unwrap().contains("Stop"), "{v:?}");
    assert_eq!(s.writer.on_pre_restore(xml.clone()).await.unwrap(), xml);
}
