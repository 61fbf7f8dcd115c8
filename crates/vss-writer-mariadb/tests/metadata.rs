//! The Writer Metadata Document for an instance layout, and where
//! PostRestore looks for stale files.

use std::path::{Path, PathBuf};

use vss_types::{ComponentType, Guid, RestoreMethod, WriterMetadata, WriterRestore};
use vss_writer_mariadb::{metadata, Layout, MariadbWriterConfig};

fn wmd(layout: &Layout) -> WriterMetadata {
    let cfg = MariadbWriterConfig::default();
    let m = metadata::writer_metadata(&cfg, Guid::new_random(), layout).unwrap();
    // It survives the XML round trip.
    WriterMetadata::from_xml(&m.to_xml()).unwrap()
}

fn excluded(m: &WriterMetadata) -> Vec<(String, String, bool)> {
    m.excluded_files
        .iter()
        .map(|e| (e.path.clone(), e.filespec.clone(), e.recursive))
        .collect()
}

#[test]
fn default_layout_is_one_recursive_file_group() {
    let l = Layout::example();
    assert_eq!(l.datadir, Path::new("/var/lib/mysql"));
    assert_eq!(l.redo_dir, Path::new("/var/lib/mysql"));
    assert_eq!(l.undo_dir, Path::new("/var/lib/mysql"));
    let m = wmd(&l);
    assert_eq!(m.components.len(), 1);
    let c = &m.components[0];
    assert_eq!(c.component_type, ComponentType::FileGroup);
    assert_eq!(c.name, "instance");
    assert!(c.selectable);
    assert_eq!(c.files.len(), 1);
    assert_eq!(c.files[0].path, "/var/lib/mysql");
    assert_eq!(c.files[0].filespec, "*");
    assert!(c.files[0].recursive);
    let rm = m.restore_method.as_ref().unwrap();
    assert_eq!(rm.method, RestoreMethod::StopRestoreStart);
    assert_eq!(rm.service.as_deref(), Some("mariadb"));
    assert_eq!(rm.writer_restore, WriterRestore::Always);
    let ex = excluded(&m);
    for (p, f) in [
        ("/var/lib/mysql", "*.pid"),
        ("/var/lib/mysql", "mysql.sock"),
        ("/var/lib/mysql", "ibtmp*"),
    ] {
        assert!(ex.contains(&(p.into(), f.into(), false)), "{p} {f}: {ex:?}");
    }
    // The socket and pid file are in /run: nothing more is excluded, and
    // /tmp is not in the data directory.
    assert_eq!(ex.len(), 3, "{ex:?}");
}

#[test]
fn redo_and_undo_outside_datadir_and_tmpdir_and_socket_inside() {
    let l = Layout::from_vars(
        "/srv/maria/data/",
        Some("/srv/maria/redo"),
        Some("../undo/"),
        Some("/srv/maria/data/tmp:/tmp"),
        Some("/srv/maria/data/server.sock"),
        Some("host.pid"),
        "10.11.6-MariaDB",
    );
    assert_eq!(l.undo_dir, Path::new("/srv/maria/undo"));
    assert_eq!(l.pid_file, Some(PathBuf::from("/srv/maria/data/host.pid")));
    assert_eq!(
        l.dirs(),
        vec![
            PathBuf::from("/srv/maria/data"),
            PathBuf::from("/srv/maria/redo"),
            PathBuf::from("/srv/maria/undo")
        ]
    );
    let m = wmd(&l);
    let files: Vec<(String, String, bool)> = m.components[0]
        .files
        .iter()
        .map(|f| (f.path.clone(), f.filespec.clone(), f.recursive))
        .collect();
    assert_eq!(
        files,
        vec![
            ("/srv/maria/data".into(), "*".into(), true),
            ("/srv/maria/redo".into(), "ib_logfile*".into(), false),
            ("/srv/maria/undo".into(), "undo*".into(), false),
        ]
    );
    let ex = excluded(&m);
    assert!(ex.contains(&("/srv/maria/data".into(), "server.sock".into(), false)));
    assert!(ex.contains(&("/srv/maria/data".into(), "host.pid".into(), false)));
    assert!(ex.contains(&("/srv/maria/data/tmp".into(), "*".into(), true)));
    assert!(!ex.iter().any(|e| e.0 == "/tmp"), "{ex:?}");
}

#[test]
fn remove_stale_keeps_live_pid_files() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("host.pid"), "999999999\n").unwrap();
    std::fs::write(d.path().join("garbage.pid"), "x").unwrap();
    std::fs::write(d.path().join("ibdata1"), "data").unwrap();
    let removed = vss_writer_mariadb::remove_stale(d.path());
    assert_eq!(removed.len(), 2, "{removed:?}");
    assert!(d.path().join("ibdata1").exists());
    // A missing directory is not an error.
    assert!(vss_writer_mariadb::remove_stale(&d.path().join("none")).is_empty());
}
