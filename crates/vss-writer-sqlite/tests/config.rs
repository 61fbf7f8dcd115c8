//! The configuration file: defaults, every rule, and errors that name the
//! file, the key, the VSS code and what to do.

use std::path::{Path, PathBuf};

use vss_types::{Guid, VssCode, VssError};
use vss_writer_sqlite::config::{self, parse, DEFAULT_LOCK_TIMEOUT_MS, DEFAULT_NAME};

const FILE: &str = "/etc/vss/sqlite-writer.toml";

fn p(text: &str) -> Result<vss_writer_sqlite::SqliteWriterConfig, vss_writer_sqlite::ConfigError> {
    parse(text, Path::new(FILE))
}

fn err(text: &str) -> vss_writer_sqlite::ConfigError {
    p(text).expect_err("the configuration should be refused")
}

#[test]
fn minimal_file_gets_the_defaults() {
    let cfg = p("[[database]]\ncomponent = \"app\"\npath = \"/srv/app/data.db\"\n").unwrap();
    assert_eq!(cfg.name, DEFAULT_NAME);
    assert_eq!(cfg.name, "SqliteWriter");
    assert_eq!(cfg.max_hold_secs, 60);
    assert_eq!(cfg.databases.len(), 1);
    let db = &cfg.databases[0];
    assert_eq!(db.component, "app");
    assert_eq!(db.path, PathBuf::from("/srv/app/data.db"));
    assert_eq!(db.logical_path, "");
    assert_eq!(db.caption, None);
    assert_eq!(db.lock_timeout_ms, DEFAULT_LOCK_TIMEOUT_MS);
    assert_eq!(db.lock_timeout().as_secs(), 5);
    assert_eq!(db.dir(), Path::new("/srv/app"));
    assert_eq!(db.file_name(), "data.db");
    assert_eq!(db.companion("-wal"), PathBuf::from("/srv/app/data.db-wal"));
    assert_eq!(cfg.source.as_deref(), Some(Path::new(FILE)));
    // The id is derived from the name: stable across runs.
    assert_eq!(
        cfg.writer_id(),
        p("[[database]]\ncomponent = \"x\"\npath = \"/x.db\"\n")
            .unwrap()
            .writer_id()
    );
    assert!(!cfg.writer_id().is_null());
}

#[test]
fn full_file_is_read() {
    let cfg = p(r#"
name = "Inventory SQLite"
writer-id = "{0b2d6a57-1c61-4a0e-9f7a-6d1b2f0c9e11}"
max-hold-secs = 120

[[database]]
component = "inventory"
path = "/var/lib/inventory/inventory.db"
logical-path = "Apps\\Inventory"
caption = "Inventory & stock"
lock-timeout-ms = 2500

[[database]]
component = "sessions"
path = "/var/lib/webapp/sessions.sqlite3"
"#)
    .unwrap();
    assert_eq!(cfg.name, "Inventory SQLite");
    assert_eq!(
        cfg.writer_id(),
        Guid::parse("{0b2d6a57-1c61-4a0e-9f7a-6d1b2f0c9e11}").unwrap()
    );
    assert_eq!(cfg.max_hold().as_secs(), 120);
    assert_eq!(cfg.databases[0].logical_path, "Apps\\Inventory");
    assert_eq!(cfg.databases[0].full_path(), "Apps\\Inventory\\inventory");
    assert_eq!(
        cfg.databases[0].caption.as_deref(),
        Some("Inventory & stock")
    );
    assert_eq!(cfg.databases[0].lock_timeout_ms, 2500);
    assert_eq!(cfg.databases[1].full_path(), "sessions");
}

#[test]
fn the_shipped_example_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/vss/sqlite-writer.toml");
    let cfg = config::load(&path).unwrap();
    assert_eq!(cfg.name, "SqliteWriter");
    assert_eq!(cfg.databases.len(), 2);
}

#[test]
fn every_rule_names_its_key() {
    let cases: &[(&str, &str, &str)] = &[
        // (file, field, part of the message)
        ("", "database", "no database is configured"),
        (
            "nmae = \"x\"\n[[database]]\ncomponent = \"a\"\npath = \"/a.db\"\n",
            "nmae",
            "unknown field `nmae`",
        ),
        (
            "[[database]]\ncomponent = \"a\"\npath = \"/a.db\"\ntimeout = 3\n",
            "database[0].timeout",
            "unknown field `timeout`",
        ),
        (
            "[[database]]\ncomponent = \"a\"\n",
            "database[0]",
            "missing field `path`",
        ),
        (
            "[[database]]\ncomponent = \"a\"\npath = \"data/a.db\"\n",
            "database[0].path",
            "not an absolute path",
        ),
        (
            "[[database]]\ncomponent = \"a\"\npath = \"/srv/../a.db\"\n",
            "database[0].path",
            "not a plain file path",
        ),
        (
            "[[database]]\ncomponent = \"a\"\npath = \"/srv/a/\"\n",
            "database[0].path",
            "not a plain file path",
        ),
        (
            "[[database]]\ncomponent = \"a\"\npath = \"/srv/*.db\"\n",
            "database[0].path",
            "wildcard",
        ),
        (
            "[[database]]\ncomponent = \"a\"\npath = \"/srv/a.db-wal\"\n",
            "database[0].path",
            "-wal file",
        ),
        (
            "[[database]]\ncomponent = \"\"\npath = \"/a.db\"\n",
            "database[0].component",
            "empty",
        ),
        (
            "[[database]]\ncomponent = \"a\\\\b\"\npath = \"/a.db\"\n",
            "database[0].component",
            "backslash",
        ),
        (
            "[[database]]\ncomponent = \"a\"\npath = \"/a.db\"\nlock-timeout-ms = 0\n",
            "database[0].lock-timeout-ms",
            "out of range",
        ),
        (
            "[[database]]\ncomponent = \"a\"\npath = \"/a.db\"\nlock-timeout-ms = -5\n",
            "database[0].lock-timeout-ms",
            "",
        ),
        (
            "max-hold-secs = 0\n[[database]]\ncomponent = \"a\"\npath = \"/a.db\"\n",
            "max-hold-secs",
            "out of range",
        ),
        (
            "name = \" padded\"\n[[database]]\ncomponent = \"a\"\npath = \"/a.db\"\n",
            "name",
            "leading or trailing blanks",
        ),
        (
            "name = \"\"\n[[database]]\ncomponent = \"a\"\npath = \"/a.db\"\n",
            "name",
            "empty",
        ),
        (
            "writer-id = \"{00000000-0000-0000-0000-000000000000}\"\n[[database]]\ncomponent = \"a\"\npath = \"/a.db\"\n",
            "writer-id",
            "null id",
        ),
        (
            "[[database]]\ncomponent = \"a\"\npath = \"/a.db\"\n[[database]]\ncomponent = \"b\"\npath = \"/a.db\"\n",
            "database[1].path",
            "listed twice",
        ),
        (
            "[[database]]\ncomponent = \"a\"\npath = \"/a.db\"\n[[database]]\ncomponent = \"a\"\npath = \"/b.db\"\n",
            "database[1].component",
            "listed twice",
        ),
        (
            "[[database]]\ncomponent = \"a\"\npath = \"/a.db\"\nlogical-path = \"\\\\lead\"\n",
            "database",
            "empty segment",
        ),
        ("[[database]\n", "", "line 1"),
    ];
    for (text, field, part) in cases {
        let e = err(text);
        assert_eq!(&e.field, field, "{text:?} -> {e}");
        assert!(e.message.contains(part), "{text:?} -> {e}");
        assert_eq!(e.file, PathBuf::from(FILE));
        assert!(!e.hint.is_empty());
        let shown = e.to_string();
        assert!(shown.starts_with(FILE), "{shown}");
    }
}

#[test]
fn errors_carry_e_invalidarg_and_a_hint() {
    let e: VssError = err("[[database]]\ncomponent = \"a\"\npath = \"rel.db\"\n").into();
    assert_eq!(e.code, VssCode::InvalidArg);
    let shown = e.to_string();
    assert!(shown.starts_with("0x80070057 E_INVALIDARG: "), "{shown}");
    assert!(shown.contains(FILE), "{shown}");
    assert!(shown.contains("database[0].path"), "{shown}");
    assert!(e.hint().contains("docs/WRITERS.md"), "{}", e.hint());
}

#[test]
fn missing_or_odd_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let e = config::load(&missing).unwrap_err();
    assert!(e.message.contains("cannot read the file"), "{e}");
    assert!(e.hint.contains("--config"), "{}", e.hint);
    let e = config::load(dir.path()).unwrap_err();
    assert!(e.message.contains("not a regular file"), "{e}");
    let big = dir.path().join("big.toml");
    std::fs::write(&big, vec![b'#'; 2 << 20]).unwrap();
    let e = config::load(&big).unwrap_err();
    assert!(e.message.contains("limited"), "{e}");
}
