//! The Writer Metadata Document and the restore preparation, without a
//! server.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use vss_types::{
    AlternateLocationMapping, BcdComponent, ComponentType, Guid, RestoreMethod, RestoreTarget,
    WriterMetadata, WriterRestore,
};
use vss_writer_postgres::metadata::{writer_metadata, ClusterLayout};
use vss_writer_postgres::restore::{
    prepare_data_directory, restored_dir, BackupRecord, RECORD_FORMAT,
};
use vss_writer_postgres::PostgresWriterConfig;

/// A directory that looks like a data directory.
fn fake_cluster(root: &Path) -> PathBuf {
    let dd = root.join("data");
    for d in ["global", "base/1", "pg_wal", "pg_tblspc"] {
        std::fs::create_dir_all(dd.join(d)).unwrap();
    }
    std::fs::write(dd.join("PG_VERSION"), "15\n").unwrap();
    std::fs::write(dd.join("global/pg_control"), "x").unwrap();
    std::fs::write(dd.join("postmaster.pid"), "1\n").unwrap();
    dd
}

fn wmd(cfg: &PostgresWriterConfig, layout: &ClusterLayout) -> WriterMetadata {
    let m = writer_metadata(cfg, Guid::NULL, layout).unwrap();
    // Survives the XML round trip.
    WriterMetadata::from_xml(&m.to_xml()).unwrap()
}

#[test]
fn one_file_group_with_the_data_directory_and_the_exclusions() {
    let tmp = tempfile::tempdir().unwrap();
    let dd = fake_cluster(tmp.path());
    let cfg = PostgresWriterConfig::new(&dd);
    let layout = ClusterLayout::read(&dd).unwrap();
    assert_eq!(layout.wal_directory, None);
    assert!(layout.tablespaces.is_empty());
    let m = wmd(&cfg, &layout);
    assert_eq!(m.writer_name, "PostgresWriter");
    let rm = m.restore_method.as_ref().unwrap();
    assert_eq!(rm.method, RestoreMethod::StopRestoreStart);
    assert_eq!(rm.service.as_deref(), Some("postgresql"));
    assert_eq!(rm.writer_restore, WriterRestore::Always);
    assert_eq!(m.components.len(), 1);
    let c = &m.components[0];
    assert_eq!(c.component_type, ComponentType::FileGroup);
    assert_eq!(c.name, "cluster");
    assert!(c.selectable);
    assert_eq!(c.files.len(), 1);
    assert_eq!(c.files[0].path, dd.display().to_string());
    assert_eq!(c.files[0].filespec, "*");
    assert!(c.files[0].recursive);
    let ex = |rel: &str, spec: &str, rec: bool| {
        let path = if rel.is_empty() {
            dd.clone()
        } else {
            dd.join(rel)
        };
        assert!(
            m.excluded_files
                .iter()
                .any(|e| Path::new(&e.path) == path && e.filespec == spec && e.recursive == rec),
            "{rel}/{spec} excluded: {:#?}",
            m.excluded_files
        );
    };
    ex("", "postmaster.pid", false);
    ex("", "postmaster.opts", false);
    ex("pg_replslot", "*", true);
    ex("pg_stat_tmp", "*", true);
    ex("pg_subtrans", "*", true);
    ex("pg_notify", "*", true);
    ex("pg_dynshmem", "*", true);
    ex("pg_serial", "*", true);
    ex("pg_snapshots", "*", true);
    ex("pg_tblspc", "*", false);
    ex("", "pgsql_tmp*", true);
    ex("", "pg_internal.init", true);
    // The WAL is part of the backup: crash recovery replays it.
    assert!(!m
        .excluded_files
        .iter()
        .any(|e| e.path.contains("pg_wal") || e.filespec == "pg_wal"));
}

#[test]
fn tablespaces_and_a_linked_wal_directory_are_file_sets() {
    let tmp = tempfile::tempdir().unwrap();
    let dd = fake_cluster(tmp.path());
    let wal = tmp.path().join("wal");
    let ts = tmp.path().join("ts1");
    std::fs::create_dir_all(&wal).unwrap();
    std::fs::create_dir_all(&ts).unwrap();
    std::fs::remove_dir(dd.join("pg_wal")).unwrap();
    std::os::unix::fs::symlink(&wal, dd.join("pg_wal")).unwrap();
    std::os::unix::fs::symlink(&ts, dd.join("pg_tblspc/16384")).unwrap();
    let layout = ClusterLayout::read(&dd).unwrap();
    assert_eq!(layout.wal_directory.as_deref(), Some(wal.as_path()));
    assert_eq!(layout.tablespaces, vec![("16384".to_string(), ts.clone())]);
    let m = wmd(&PostgresWriterConfig::new(&dd), &layout);
    let paths: Vec<&str> = m.components[0]
        .files
        .iter()
        .map(|f| f.path.as_str())
        .collect();
    assert_eq!(
        paths,
        [
            dd.to_str().unwrap(),
            wal.to_str().unwrap(),
            ts.to_str().unwrap()
        ]
    );
    assert!(m
        .excluded_files
        .iter()
        .any(|e| Path::new(&e.path) == dd && e.filespec == "pg_wal" && !e.recursive));
}

#[test]
fn not_a_data_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let e = ClusterLayout::read(tmp.path()).unwrap_err();
    assert!(e.contains("PG_VERSION"), "{e}");
}

fn record(dd: &Path, ts: Vec<(String, PathBuf)>) -> BackupRecord {
    let (uid, gid) = {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(dd).unwrap();
        (m.uid(), m.gid())
    };
    BackupRecord {
        format: RECORD_FORMAT.into(),
        data_directory: dd.to_owned(),
        wal_directory: None,
        tablespaces: ts,
        uid,
        gid,
        start_lsn: "0/2000028".into(),
        stop_lsn: "0/2000100".into(),
        started_unix_us: 1,
        stopped_unix_us: 2,
        backup_label: "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n".into(),
        tablespace_map: String::new(),
    }
}

fn component(target: RestoreTarget, maps: Vec<(&Path, &Path)>) -> BcdComponent {
    let mut c = BcdComponent::new(ComponentType::FileGroup, "", "cluster");
    c.selected_for_restore = true;
    c.restore_target = target;
    c.alternate_location_mappings = maps
        .into_iter()
        .map(|(p, a)| AlternateLocationMapping {
            path: p.display().to_string(),
            filespec: "*".into(),
            recursive: true,
            alternate_path: a.display().to_string(),
        })
        .collect();
    c
}

#[test]
fn record_round_trip() {
    let r = record(Path::new("/"), vec![("1".into(), "/ts".into())]);
    assert_eq!(BackupRecord::from_text(&r.to_text()).unwrap(), r);
    assert!(BackupRecord::from_text("lsn=1").is_err());
    let mut other = r.clone();
    other.format = "x".into();
    assert!(BackupRecord::from_text(&other.to_text())
        .unwrap_err()
        .contains("format"));
}

#[test]
fn restored_dir_follows_the_mappings() {
    let orig = Path::new("/var/lib/pg/data");
    let c = component(
        RestoreTarget::Alternate,
        vec![(orig, Path::new("/r/var/lib/pg/data"))],
    );
    assert_eq!(
        restored_dir(&c, orig).unwrap(),
        Path::new("/r/var/lib/pg/data")
    );
    let c = component(
        RestoreTarget::Alternate,
        vec![(Path::new("/var/lib"), Path::new("/r"))],
    );
    assert_eq!(restored_dir(&c, orig).unwrap(), Path::new("/r/pg/data"));
    let c = component(RestoreTarget::Original, vec![(orig, Path::new("/r"))]);
    assert_eq!(restored_dir(&c, orig).unwrap(), orig);
    let c = component(RestoreTarget::Alternate, vec![]);
    assert!(restored_dir(&c, orig)
        .unwrap_err()
        .contains("no alternate location mapping"));
}

#[test]
fn prepare_makes_a_startable_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dd = fake_cluster(tmp.path());
    let ts = tmp.path().join("ts");
    std::fs::create_dir_all(&ts).unwrap();
    // Restored elsewhere: the mappings say where.
    let alt = tmp.path().join("alt");
    let alt_dd = alt.join("data");
    let alt_ts = alt.join("ts");
    std::fs::create_dir_all(&alt).unwrap();
    let o = std::process::Command::new("cp")
        .arg("-a")
        .arg(&dd)
        .arg(&alt_dd)
        .status()
        .unwrap();
    assert!(o.success());
    std::fs::create_dir_all(&alt_ts).unwrap();
    let rec = record(&dd, vec![("16385".into(), ts.clone())]);
    let c = component(
        RestoreTarget::Alternate,
        vec![
            (dd.as_path(), alt_dd.as_path()),
            (ts.as_path(), alt_ts.as_path()),
        ],
    );
    let p = prepare_data_directory(&rec, &c).unwrap();
    assert_eq!(p.data_directory, alt_dd);
    assert!(!alt_dd.join("postmaster.pid").exists());
    assert!(
        !alt_dd.join("backup_label").exists(),
        "crash recovery, no label"
    );
    for d in [
        "pg_notify",
        "pg_replslot",
        "pg_subtrans",
        "pg_logical/snapshots",
        "pg_wal/archive_status",
    ] {
        assert!(alt_dd.join(d).is_dir(), "{d}");
    }
    assert_eq!(
        std::fs::read_link(alt_dd.join("pg_tblspc/16385")).unwrap(),
        alt_ts
    );
    assert_eq!(
        std::fs::metadata(&alt_dd).unwrap().permissions().mode() & 0o777,
        0o700
    );
    // The original is untouched.
    assert!(dd.join("postmaster.pid").exists());
    // Twice is fine.
    prepare_data_directory(&rec, &c).unwrap();
}

#[test]
fn prepare_refuses_a_directory_without_the_cluster() {
    let tmp = tempfile::tempdir().unwrap();
    let rec = record(tmp.path(), vec![]);
    let c = component(RestoreTarget::Original, vec![]);
    let e = prepare_data_directory(&rec, &c).unwrap_err();
    assert!(e.contains("PG_VERSION"), "{e}");
}
