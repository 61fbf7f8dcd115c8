//! The binary: a bad configuration is a clear error with its VSS code and
//! a hint, and a non-zero exit; `--check` validates without serving.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_vss-writer-sqlite"))
        .args(args)
        // Never reach a real bus, whatever the machine has.
        .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus")
        .env_remove("JOURNAL_STREAM")
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn bad_configuration_exits_non_zero_with_code_and_hint() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sqlite-writer.toml");
    std::fs::write(
        &cfg,
        "[[database]]\ncomponent = \"app\"\npath = \"relative/app.db\"\n",
    )
    .unwrap();
    let (code, _, err) = run(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("Error: 0x80070057 E_INVALIDARG: "), "{err}");
    assert!(err.contains(cfg.to_str().unwrap()), "{err}");
    assert!(err.contains("database[0].path"), "{err}");
    assert!(err.contains("\nHint: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    std::fs::write(&cfg, "this is = not [toml").unwrap();
    let (code, _, err) = run(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("E_INVALIDARG"), "{err}");
    assert!(err.contains("line 1"), "{err}");

    let (code, _, err) = run(&["--config", "/nonexistent/sqlite-writer.toml"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot read the file"), "{err}");
    assert!(err.contains("Hint: "), "{err}");

    let (code, _, err) = run(&["--frobnicate"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn check_validates_and_lists_the_databases() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sqlite-writer.toml");
    std::fs::write(
        &cfg,
        "name = \"Apps\"\n[[database]]\ncomponent = \"app\"\npath = \"/srv/app/app.db\"\nlock-timeout-ms = 1500\n",
    )
    .unwrap();
    let (code, out, err) = run(&["--config", cfg.to_str().unwrap(), "--check"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("writer 'Apps'"), "{out}");
    assert!(
        out.contains("component 'app': /srv/app/app.db (lock timeout 1500 ms)"),
        "{out}"
    );
}

#[test]
fn no_bus_is_an_error_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sqlite-writer.toml");
    std::fs::write(
        &cfg,
        "[[database]]\ncomponent = \"app\"\npath = \"/srv/app.db\"\n",
    )
    .unwrap();
    let (code, _, err) = run(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("0x80042318 VSS_E_WRITER_INFRASTRUCTURE"),
        "{err}"
    );
    assert!(err.contains("Hint: "), "{err}");
}
