//! The configuration file: defaults, every rule, and errors that name the
//! file and the key.

use std::path::Path;

use vss_types::VssError;
use vss_writer_mariadb::config::{self, MariadbWriterConfig};

fn parse(text: &str) -> Result<MariadbWriterConfig, config::ConfigError> {
    config::parse(text, Path::new("/etc/vss/mariadb-writer.toml"))
}

fn err(text: &str) -> config::ConfigError {
    parse(text).expect_err("should be refused")
}

#[test]
fn empty_file_gives_the_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c.name, "MariadbWriter");
    assert_eq!(c.socket, Path::new("/run/mysqld/mysqld.sock"));
    assert_eq!(c.user, "vss");
    assert_eq!(c.password_file, None);
    assert_eq!(c.component, "instance");
    assert_eq!(c.logical_path, "");
    assert_eq!(c.service, "mariadb");
    assert_eq!(c.lock_wait_timeout_secs, 5);
    assert_eq!(c.max_hold_secs, 60);
    assert_eq!(c.full_path(), "instance");
    // The id is derived from the name, and stable.
    assert_eq!(c.writer_id(), parse("").unwrap().writer_id());
    assert_ne!(
        c.writer_id(),
        parse("name = \"Other\"").unwrap().writer_id()
    );
}

#[test]
fn every_key() {
    let c = parse(
        r#"
name = "Maria"
writer-id = "{0b2d6a57-1c61-4a0e-9f7a-6d1b2f0c9e11}"
max-hold-secs = 90
socket = "/srv/db/mysqld.sock"
user = "backup"
password-file = "/etc/vss/mariadb.password"
component = "main"
logical-path = "Databases\\MariaDB"
caption = "The main instance"
service = "mariadb@main"
lock-wait-timeout-secs = 10
"#,
    )
    .unwrap();
    assert_eq!(c.name, "Maria");
    assert_eq!(
        c.writer_id().to_string().to_lowercase(),
        "{0b2d6a57-1c61-4a0e-9f7a-6d1b2f0c9e11}"
    );
    assert_eq!(c.full_path(), "Databases\\MariaDB\\main");
    assert_eq!(c.lock_wait_timeout_secs, 10);
    assert_eq!(c.service, "mariadb@main");
}

#[test]
fn errors_name_the_key_and_convert_to_invalid_arg() {
    for (text, field, words) in [
        ("sockt = \"/x\"", "sockt", "unknown field"),
        ("socket = \"run/x.sock\"", "socket", "not an absolute path"),
        ("socket = \"/run/../x.sock\"", "socket", "plain file path"),
        (
            "password-file = \"pw\"",
            "password-file",
            "not an absolute path",
        ),
        (
            "lock-wait-timeout-secs = 0",
            "lock-wait-timeout-secs",
            "out of range",
        ),
        (
            "lock-wait-timeout-secs = 60",
            "lock-wait-timeout-secs",
            "does not fit",
        ),
        ("max-hold-secs = 0", "max-hold-secs", "out of range"),
        ("name = \"\"", "name", "empty"),
        ("name = \" x\"", "name", "blanks"),
        ("user = \"\"", "user", "empty"),
        ("component = \"a\\\\b\"", "component", "backslash"),
        ("component = \"\"", "component", "empty"),
        ("service = \"a b\"", "service", "not a systemd unit"),
        (
            "writer-id = \"{00000000-0000-0000-0000-000000000000}\"",
            "writer-id",
            "null",
        ),
        (
            "lock-wait-timeout-secs = \"5\"",
            "lock-wait-timeout-secs",
            "invalid type",
        ),
    ] {
        let e = err(text);
        assert_eq!(e.field, field, "{text}: {e}");
        assert!(e.to_string().contains(words), "{text}: {e}");
        let v = VssError::from(e);
        let shown = v.to_string();
        assert!(shown.contains("0x80070057 E_INVALIDARG"), "{shown}");
        assert!(shown.contains("/etc/vss/mariadb-writer.toml"), "{shown}");
        assert!(v.hint().contains("--check"), "{}", v.hint());
    }
}

#[test]
fn load_missing_file_says_how_to_create_it() {
    let e = config::load(Path::new("/nonexistent/mariadb-writer.toml")).unwrap_err();
    assert!(e.to_string().contains("cannot read the file"), "{e}");
    assert!(
        e.hint.contains("dist/vss/mariadb-writer.toml"),
        "{}",
        e.hint
    );
}

#[test]
fn load_reads_a_file_and_the_password() {
    let d = tempfile::tempdir().unwrap();
    let pw = d.path().join("pw");
    std::fs::write(&pw, "s3cret\nignored\n").unwrap();
    let f = d.path().join("w.toml");
    std::fs::write(
        &f,
        format!("user = \"vss\"\npassword-file = \"{}\"\n", pw.display()),
    )
    .unwrap();
    let c = config::load(&f).unwrap();
    assert_eq!(c.source.as_deref(), Some(f.as_path()));
    assert_eq!(c.password().unwrap().as_deref(), Some("s3cret"));
    std::fs::remove_file(&pw).unwrap();
    assert!(c
        .password()
        .unwrap_err()
        .contains("cannot read the password file"));
}

#[test]
fn the_shipped_example_is_valid() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/vss/mariadb-writer.toml");
    let c = config::load(&p).unwrap();
    assert_eq!(c.name, "MariadbWriter");
}
