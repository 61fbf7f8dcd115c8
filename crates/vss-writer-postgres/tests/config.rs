//! The configuration file: defaults, every rule, and errors that name the
//! file and the key.

use std::path::Path;

use vss_types::{VssCode, VssError};
use vss_writer_postgres::config::{self, parse};

fn file() -> &'static Path {
    Path::new("/etc/vss/postgres-writer.toml")
}

fn err(text: &str) -> vss_writer_postgres::ConfigError {
    parse(text, file()).expect_err("must be refused")
}

#[test]
fn minimal_file_gets_the_defaults() {
    let c = parse("data-directory = \"/var/lib/postgresql/15/main\"\n", file()).unwrap();
    assert_eq!(c.name, "PostgresWriter");
    assert_eq!(c.component, "cluster");
    assert_eq!(c.logical_path, "");
    assert_eq!(c.socket_directory, Path::new("/var/run/postgresql"));
    assert_eq!(c.port, 5432);
    assert_eq!(c.user, "postgres");
    assert_eq!(c.dbname, "postgres");
    assert_eq!(c.service, "postgresql");
    assert_eq!(c.start_timeout_secs, 30);
    assert_eq!(c.max_hold_secs, 600);
    assert_eq!(c.full_path(), "cluster");
    assert_eq!(
        c.socket_path(),
        Path::new("/var/run/postgresql/.s.PGSQL.5432")
    );
    assert_eq!(
        c.caption(),
        "PostgreSQL cluster /var/lib/postgresql/15/main"
    );
    // The id is derived from the name, and stable.
    let again = parse("data-directory = \"/x\"\n", file()).unwrap();
    assert_eq!(c.writer_id(), again.writer_id());
    assert!(!c.writer_id().is_null());
}

#[test]
fn the_example_file_is_valid() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/vss/postgres-writer.toml");
    let c = config::load(&p).unwrap();
    assert_eq!(c.data_directory, Path::new("/var/lib/postgresql/15/main"));
}

#[test]
fn every_key() {
    let c = parse(
        r#"
name = "Main"
writer-id = "{0b2d6a57-1c61-4a0e-9f7a-6d1b2f0c9e12}"
component = "main"
logical-path = "PostgreSQL\\15"
caption = "Main cluster"
data-directory = "/srv/pg"
socket-directory = "/run/pg"
port = 6543
user = "backup"
dbname = "template1"
service = "postgresql@15-main"
start-timeout-secs = 5
max-hold-secs = 120
"#,
        file(),
    )
    .unwrap();
    assert_eq!(c.full_path(), "PostgreSQL\\15\\main");
    assert_eq!(c.socket_path(), Path::new("/run/pg/.s.PGSQL.6543"));
    assert_eq!(c.service, "postgresql@15-main");
    assert_eq!(
        c.writer_id().to_string().to_lowercase(),
        "{0b2d6a57-1c61-4a0e-9f7a-6d1b2f0c9e12}"
    );
}

#[test]
fn errors_name_the_key() {
    let cases: &[(&str, &str, &str)] = &[
        ("", "", "missing field `data-directory`"),
        (
            "data-directory = \"rel/dir\"\n",
            "data-directory",
            "not an absolute path",
        ),
        (
            "data-directory = \"/a/../b\"\n",
            "data-directory",
            "not a plain directory path",
        ),
        (
            "data-directory = \"/\"\n",
            "data-directory",
            "cannot be used",
        ),
        (
            "data-directory = \"/d\"\nsocket-directory = \"run\"\n",
            "socket-directory",
            "not an absolute path",
        ),
        ("data-directory = \"/d\"\nport = 0\n", "port", "not a port"),
        ("data-directory = \"/d\"\nport = 70000\n", "port", ""),
        ("data-directory = \"/d\"\nuser = \"\"\n", "user", "empty"),
        (
            "data-directory = \"/d\"\nservice = \"a b\"\n",
            "service",
            "blanks",
        ),
        (
            "data-directory = \"/d\"\ncomponent = \"a\\\\b\"\n",
            "component",
            "backslash",
        ),
        ("data-directory = \"/d\"\nname = \" x\"\n", "name", "blanks"),
        (
            "data-directory = \"/d\"\nstart-timeout-secs = 0\n",
            "start-timeout-secs",
            "out of range",
        ),
        (
            "data-directory = \"/d\"\nmax-hold-secs = 0\n",
            "max-hold-secs",
            "out of range",
        ),
        (
            "data-directory = \"/d\"\nwriter-id = \"{00000000-0000-0000-0000-000000000000}\"\n",
            "writer-id",
            "null",
        ),
        (
            "data-directory = \"/d\"\ndatadir = \"/x\"\n",
            "",
            "unknown field",
        ),
        (
            "data-directory = \"/d\"\nlogical-path = \"a\\\\\\\\b\"\n",
            "logical-path",
            "",
        ),
        ("data-directory = 5\n", "data-directory", ""),
        ("not toml at all", "", ""),
    ];
    for (text, key, what) in cases {
        let e = err(text);
        if !key.is_empty() {
            assert_eq!(e.field, *key, "{text:?}: {e}");
        }
        assert!(e.message.contains(what), "{text:?}: {e}");
        let shown = e.to_string();
        assert!(
            shown.starts_with("/etc/vss/postgres-writer.toml: "),
            "{shown}"
        );
        let v = VssError::from(e);
        assert_eq!(v.code, VssCode::InvalidArg);
        assert!(v.to_string().contains("0x80070057"), "{v}");
        assert!(!v.hint().is_empty());
    }
}

#[test]
fn missing_file_hints_at_the_example() {
    let e = config::load(Path::new("/nonexistent/postgres-writer.toml")).unwrap_err();
    assert!(e.message.contains("cannot read the file"), "{e}");
    assert!(
        e.hint.contains("dist/vss/postgres-writer.toml"),
        "{}",
        e.hint
    );
}
