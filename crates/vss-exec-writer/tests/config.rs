//! Writer files: parsing, defaults, every validation error, load_dir.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use vss_exec_writer::{
    load_dir, parse, ComponentKind, ConfigError, HookEvent, RestoreMethodConfig, Usage,
    DEFAULT_HOOK_TIMEOUT_SECS, WRITER_ID_NAMESPACE,
};
use vss_types::{Guid, VssCode, VssError};

const FULL: &str = r#"
name = "PostgreSQL"
writer-id = "{0b2d6a57-1c61-4a0e-9f7a-6d1b2f0c9e11}"
usage = "system-service"
timeout-secs = 120
restore-method = "stop-restore-start"
service = "postgresql.service"

[[component]]
name = "cluster"
logical-path = "PostgreSQL\\16"
caption = "Main cluster"
type = "database"
selectable = false
database-files = [{ path = "/var/lib/postgresql/16/main", filespec = "*" }]
log-files = [{ path = "/var/lib/postgresql/16/main/pg_wal" }]

[[component]]
name = "config"
files = [
  { path = "/etc/postgresql" },
  { path = "/etc/postgresql-common", filespec = "*.conf", recursive = false, alternate-location = "/var/backups/pg-common" },
]

[[exclude]]
path = "/var/lib/postgresql/16/main"
filespec = "postmaster.pid"
recursive = false

[hooks]
prepare = ["/usr/bin/psql", "-c", "CHECKPOINT"]
freeze = { command = ["/usr/local/sbin/pg-freeze"], timeout-secs = 10, user = "postgres" }
thaw = ["/usr/local/sbin/pg-thaw"]

[hooks.abort]
command = ["/usr/local/sbin/pg-thaw", "--abort"]
timeout-secs = 5
"#;

fn p(name: &str) -> &Path {
    Path::new(name)
}

fn err(text: &str) -> ConfigError {
    parse(text, p("/etc/vss/writers.d/test.toml")).expect_err("should be refused")
}

/// Asserts the error names the file and this key, and says `needle`.
#[track_caller]
fn assert_err(text: &str, field: &str, needle: &str) {
    let e = err(text);
    assert_eq!(e.file, p("/etc/vss/writers.d/test.toml"), "{e}");
    assert_eq!(e.field, field, "{e}");
    assert!(
        e.message.contains(needle),
        "message {:?} lacks {needle:?}",
        e.message
    );
    let shown = e.to_string();
    assert!(
        shown.contains("test.toml") && shown.contains(field),
        "{shown}"
    );
    let v: VssError = e.into();
    assert_eq!(v.code, VssCode::InvalidArg);
    assert!(v.message.contains("test.toml"), "{}", v.message);
    assert!(v.hint().contains("test.toml"), "{}", v.hint());
}

#[test]
fn full_file() {
    let c = parse(FULL, p("/x/pg.toml")).unwrap();
    assert_eq!(c.name, "PostgreSQL");
    assert_eq!(
        c.writer_id(),
        Guid::parse("{0b2d6a57-1c61-4a0e-9f7a-6d1b2f0c9e11}").unwrap()
    );
    assert_eq!(c.usage, Usage::SystemService);
    assert_eq!(c.timeout_secs, Some(120));
    assert_eq!(c.timeout(), Some(std::time::Duration::from_secs(120)));
    assert_eq!(c.restore_method, RestoreMethodConfig::StopRestoreStart);
    assert_eq!(c.service.as_deref(), Some("postgresql.service"));
    assert_eq!(c.source.as_deref(), Some(p("/x/pg.toml")));

    assert_eq!(c.components.len(), 2);
    let db = &c.components[0];
    assert_eq!(db.kind, ComponentKind::Database);
    assert_eq!(db.logical_path, "PostgreSQL\\16");
    assert!(!db.selectable);
    assert_eq!(db.log_files[0].filespec, "*");
    assert_eq!(db.log_files[0].recursive, None);
    let cfg = &c.components[1];
    assert_eq!(cfg.kind, ComponentKind::Filegroup);
    assert!(cfg.selectable);
    assert_eq!(cfg.logical_path, "");
    assert_eq!(cfg.files[0].filespec, "*");
    assert_eq!(cfg.files[1].recursive, Some(false));
    assert_eq!(
        cfg.files[1].alternate_location.as_deref(),
        Some("/var/backups/pg-common")
    );

    assert_eq!(c.excludes.len(), 1);
    assert!(!c.excludes[0].recursive);

    let prep = c.hooks.get(HookEvent::PrepareSnapshot).unwrap();
    assert_eq!(prep.command, ["/usr/bin/psql", "-c", "CHECKPOINT"]);
    assert_eq!(prep.timeout_secs, DEFAULT_HOOK_TIMEOUT_SECS);
    assert_eq!(prep.user, None);
    let fr = c.hooks.get(HookEvent::Freeze).unwrap();
    assert_eq!(fr.timeout_secs, 10);
    assert_eq!(fr.user.as_deref(), Some("postgres"));
    assert_eq!(c.hooks.get(HookEvent::Abort).unwrap().command[1], "--abort");
    assert!(c.hooks.get(HookEvent::PostSnapshot).is_none());
}

#[test]
fn minimal_file_and_defaults() {
    let c = parse("name = \"app\"\n", p("a.toml")).unwrap();
    assert_eq!(c.usage, Usage::UserData);
    assert_eq!(c.timeout_secs, None);
    assert_eq!(c.restore_method, RestoreMethodConfig::RestoreIfCanReplace);
    assert!(c.components.is_empty() && c.excludes.is_empty());
    for e in HookEvent::ALL {
        assert!(c.hooks.get(*e).is_none());
    }
    // The hook key alias and the short form.
    let c = parse(
        "name = \"a\"\n[hooks]\nprepare-snapshot = [\"/bin/true\"]\npost-snapshot = [\"/bin/true\", \"x\"]\n",
        p("a.toml"),
    )
    .unwrap();
    assert_eq!(c.hooks.prepare.as_ref().unwrap().command, ["/bin/true"]);
    assert_eq!(c.hooks.post_snapshot.as_ref().unwrap().timeout_secs, 30);
}

#[test]
fn derived_writer_id_is_stable() {
    let a = parse("name = \"app\"\n", p("a.toml")).unwrap();
    let b = parse("name = \"app\"\nusage = \"other\"\n", p("b.toml")).unwrap();
    let c = parse("name = \"app2\"\n", p("c.toml")).unwrap();
    assert_eq!(a.writer_id(), b.writer_id());
    assert_ne!(a.writer_id(), c.writer_id());
    assert_eq!(a.writer_id(), Guid::derived(WRITER_ID_NAMESPACE, b"app"));
    // Pinned: a changed namespace would silently rename every writer.
    assert_eq!(
        a.writer_id().to_string(),
        Guid::derived(
            Guid::parse("{19a42b8b-44d8-49ef-a478-e4443bb408ab}").unwrap(),
            b"app"
        )
        .to_string()
    );
}

#[test]
fn syntax_and_type_errors_name_the_key() {
    assert_err(
        "name = \"a\"\nbogus = 1\n",
        "bogus",
        "unknown field `bogus`",
    );
    assert_err(
        "name = \"a\"\nusage = \"daily\"\n",
        "usage",
        "unknown variant `daily`",
    );
    assert_err(
        "name = \"a\"\ntimeout-secs = \"ten\"\n",
        "timeout-secs",
        "invalid type",
    );
    assert_err(
        "name = \"a\"\nwriter-id = \"nope\"\n",
        "writer-id",
        "not a valid id",
    );
    assert_err("usage = \"other\"\n", "", "missing field `name`");
    assert_err("name = \"a\"\nname = \"b\"\n", "", "duplicate key");
    assert_err(
        "name = \"a\"\n[hooks]\nfreeze = { command = [\"/bin/x\"], timeot-secs = 3 }\n",
        "hooks.freeze.timeot-secs",
        "unknown field `timeot-secs`",
    );
    assert_err(
        "name = \"a\"\n[hooks]\nfreeze = \"/bin/x\"\n",
        "hooks.freeze",
        "command array",
    );
    assert_err(
        "name = \"a\"\n[hooks]\nfrezee = [\"/bin/x\"]\n",
        "hooks.frezee",
        "unknown field",
    );
    assert_err(
        "name = \"a\"\n[[component]]\nname = \"c\"\nfiles = [{ path = \"/x\", recurse = true }]\n",
        "component[0].files[0].recurse",
        "unknown field",
    );
    assert_err(
        "name = \"a\"\n[[component]]\nname = \"c\"\ntype = \"table\"\n",
        "component[0].type",
        "unknown variant",
    );
    // The position is given too.
    let e = err("name = \"a\"\n\nbogus = 1\n");
    assert!(e.message.contains("line 3, column 1"), "{}", e.message);
}

#[test]
fn validation_errors() {
    assert_err("name = \"\"\n", "name", "empty");
    assert_err("name = \"  \"\n", "name", "empty");
    assert_err("name = \" app\"\n", "name", "blanks");
    assert_err("name = \"a\\u0007b\"\n", "name", "control characters");
    assert_err(
        "name = \"a\"\nwriter-id = \"{00000000-0000-0000-0000-000000000000}\"\n",
        "writer-id",
        "null id",
    );
    assert_err(
        "name = \"a\"\ntimeout-secs = 0\n",
        "timeout-secs",
        "out of range",
    );
    assert_err(
        "name = \"a\"\ntimeout-secs = 3601\n",
        "timeout-secs",
        "1..=3600",
    );
    assert_err(
        "name = \"a\"\nrestore-method = \"stop-restore-start\"\n",
        "service",
        "name it with `service`",
    );
    assert_err(
        "name = \"a\"\nservice = \"x.service\"\n",
        "service",
        "only used by",
    );

    // Hooks.
    assert_err(
        "name = \"a\"\n[hooks]\nfreeze = [\"fsfreeze\", \"-f\", \"/\"]\n",
        "hooks.freeze.command",
        "not an absolute path",
    );
    assert_err(
        "name = \"a\"\n[hooks]\nthaw = []\n",
        "hooks.thaw.command",
        "empty",
    );
    assert_err(
        "name = \"a\"\n[hooks]\nthaw = { command = [\"/bin/x\"], timeout-secs = 0 }\n",
        "hooks.thaw.timeout-secs",
        "out of range",
    );
    assert_err(
        "name = \"a\"\n[hooks]\nprepare = { command = [\"/bin/x\"], timeout-secs = 4000 }\n",
        "hooks.prepare.timeout-secs",
        "out of range",
    );
    assert_err(
        "name = \"a\"\n[hooks]\nabort = { command = [\"/bin/x\"], user = \"a:b\" }\n",
        "hooks.abort.user",
        "not a user name",
    );
    assert_err(
        "name = \"a\"\n[hooks]\nabort = { command = [\"/bin/x\", \"a\\u0000\"] }\n",
        "hooks.abort.command",
        "NUL",
    );

    // Components and excludes.
    assert_err(
        "name = \"a\"\n[[component]]\nname = \"\"\n",
        "component[0].name",
        "empty",
    );
    assert_err(
        "name = \"a\"\n[[component]]\nname = \"a\\\\b\"\n",
        "component[0].name",
        "backslash",
    );
    assert_err(
        "name = \"a\"\n[[component]]\nname = \"c\"\nfiles = [{ path = \"var/lib\" }]\n",
        "component[0].files[0].path",
        "not an absolute path",
    );
    assert_err(
        "name = \"a\"\n[[component]]\nname = \"c\"\nfiles = [{ path = \"/x\", filespec = \"\" }]\n",
        "component[0].files[0].filespec",
        "empty",
    );
    assert_err(
        "name = \"a\"\n[[component]]\nname = \"c\"\nfiles = [{ path = \"/x\", filespec = \"a/b\" }]\n",
        "component[0].files[0].filespec",
        "contains '/'",
    );
    assert_err(
        "name = \"a\"\n[[component]]\nname = \"c\"\nfiles = [{ path = \"/x\", alternate-location = \"alt\" }]\n",
        "component[0].files[0].alternate-location",
        "not an absolute path",
    );
    assert_err(
        "name = \"a\"\n[[component]]\nname = \"c\"\ntype = \"database\"\nfiles = [{ path = \"/x\" }]\n",
        "component[0].files",
        "is a database",
    );
    assert_err(
        "name = \"a\"\n[[component]]\nname = \"c\"\ndatabase-files = [{ path = \"/x\" }]\n",
        "component[0].database-files",
        "is a file group",
    );
    assert_err(
        "name = \"a\"\n[[component]]\nname = \"c\"\ntype = \"database\"\nlog-files = [{ path = \"/x\", recursive = true }]\n",
        "component[0].log-files[0].recursive",
        "cannot be recursive",
    );
    assert_err(
        "name = \"a\"\n[[component]]\nname = \"c\"\ntype = \"database\"\ndatabase-files = [{ path = \"/x\", alternate-location = \"/y\" }]\n",
        "component[0].database-files[0].alternate-location",
        "alternate location",
    );
    assert_err(
        "name = \"a\"\n[[component]]\nname = \"c\"\n[[component]]\nname = \"c\"\n",
        "component",
        "already has a component 'c'",
    );
    assert_err(
        "name = \"a\"\n[[component]]\nname = \"c\"\nlogical-path = \"a\\\\\"\n",
        "component",
        "empty segment",
    );
    assert_err(
        "name = \"a\"\n[[exclude]]\npath = \"tmp\"\n",
        "exclude[0].path",
        "not an absolute path",
    );
    assert_err(
        "name = \"a\"\n[[exclude]]\npath = \"/tmp\"\nfilespec = \"\"\n",
        "exclude[0].filespec",
        "empty",
    );
}

fn write(dir: &Path, name: &str, text: &str) {
    let f = dir.join(name);
    std::fs::write(&f, text).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
}

#[test]
fn a_bad_file_does_not_stop_the_others() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "10-db.toml",
        "name = \"db\"\n[hooks]\nfreeze = [\"/bin/true\"]\n",
    );
    write(
        d.path(),
        "20-broken.toml",
        "name = \"broken\"\ntimeout-secs = 0\n",
    );
    write(d.path(), "30-garbage.toml", "this is [not toml\n");
    write(d.path(), "40-app.toml", "name = \"app\"\n");
    write(d.path(), "50-dup.toml", "name = \"db\"\n");
    write(
        d.path(),
        "60-dup-id.toml",
        &format!(
            "name = \"other\"\nwriter-id = \"{}\"\n",
            Guid::derived(WRITER_ID_NAMESPACE, b"app")
        ),
    );
    write(d.path(), "70-open.toml", "name = \"open\"\n");
    std::fs::set_permissions(
        d.path().join("70-open.toml"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    // Not writer files.
    write(d.path(), "README", "name = \"readme\"\n");
    write(d.path(), ".hidden.toml", "name = \"hidden\"\n");
    write(d.path(), "db.toml~", "name = \"backup\"\n");
    std::fs::create_dir(d.path().join("sub.toml")).unwrap();

    let loaded = load_dir(d.path()).unwrap();
    let names: Vec<&str> = loaded.configs.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["db", "app"]);
    assert_eq!(
        loaded.configs[0].source.as_deref(),
        Some(d.path().join("10-db.toml").as_path())
    );

    let errs: Vec<(String, &str)> = loaded
        .errors
        .iter()
        .map(|e| {
            (
                e.file.file_name().unwrap().to_string_lossy().into_owned(),
                e.field.as_str(),
            )
        })
        .collect();
    assert_eq!(
        errs,
        [
            ("20-broken.toml".to_owned(), "timeout-secs"),
            ("30-garbage.toml".to_owned(), ""),
            ("50-dup.toml".to_owned(), "name"),
            ("60-dup-id.toml".to_owned(), "writer-id"),
            ("70-open.toml".to_owned(), ""),
            ("sub.toml".to_owned(), ""),
        ],
        "{:#?}",
        loaded.errors
    );
    assert!(
        loaded.errors[2].message.contains("10-db.toml"),
        "{}",
        loaded.errors[2]
    );
    assert!(
        loaded.errors[4]
            .message
            .contains("writable by group or others"),
        "{}",
        loaded.errors[4]
    );
    assert!(loaded.errors[4].hint.contains("chmod go-w"));
}

#[test]
fn missing_dir_is_no_writers() {
    let d = tempfile::tempdir().unwrap();
    let loaded = load_dir(&d.path().join("writers.d")).unwrap();
    assert!(loaded.configs.is_empty() && loaded.errors.is_empty());
    // A file where the directory should be is an error.
    write(d.path(), "notadir", "");
    let e = load_dir(&d.path().join("notadir")).unwrap_err();
    assert!(e.message.contains("cannot read the directory"), "{e}");
}

#[test]
fn the_examples_of_the_doc_parse() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/EXEC-WRITERS.md"
    ))
    .unwrap();
    let mut n = 0;
    for block in doc.split("```toml\n").skip(1) {
        let text = block.split("```").next().unwrap();
        let c = parse(text, p("EXEC-WRITERS.md")).unwrap_or_else(|e| panic!("{e}\n{text}"));
        c.writer_metadata(Guid::new_random()).unwrap();
        n += 1;
    }
    assert!(n >= 2, "found {n} examples");
}

#[test]
fn alternate_location_mappings() {
    let ok = r#"
name = "App"
restore-method = "restore-to-alternate-location"
[[component]]
name = "data"
files = [{ path = "/srv/app" }]
[[alternate-location-mapping]]
path = "/srv/app"
destination = "/srv/app-restored"
"#;
    let cfg = parse(ok, p("/etc/vss/writers.d/test.toml")).unwrap();
    let m = cfg.writer_metadata(vss_types::Guid::NULL).unwrap();
    assert_eq!(m.alternate_location_mappings.len(), 1);
    assert_eq!(
        m.alternate_location_mappings[0].alternate_path,
        "/srv/app-restored"
    );
    assert!(m.alternate_location_mappings[0].recursive);
    let unknown_set = ok.replace(
        "path = \"/srv/app\"\ndestination",
        "path = \"/srv/other\"\ndestination",
    );
    assert_err(&unknown_set, "alternate-location-mapping", "/srv/other");
    let relative = ok.replace("\"/srv/app-restored\"", "\"restored\"");
    assert_err(
        &relative,
        "alternate-location-mapping[0].destination",
        "absolute",
    );
}
