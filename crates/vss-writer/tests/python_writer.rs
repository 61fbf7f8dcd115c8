//! The Python example writer (examples/python-writer) speaks the protocol
//! over plain D-Bus: it registers, answers events and vetoes like an SDK
//! writer.

mod common;

use std::process::Command;

const PYTHON: &str = "/usr/bin/python3";

/// `true` if the system python has dbus-python and GObject introspection.
/// Otherwise this fails the test naming the Debian packages, unless
/// `VSS_ALLOW_SKIP=1`, which skips it loudly.
fn python_ready(test: &str) -> bool {
    let out = Command::new(PYTHON)
        .args([
            "-c",
            "import dbus, dbus.service, dbus.mainloop.glib; from gi.repository import GLib",
        ])
        .output();
    let reason = match out {
        Ok(o) if o.status.success() => return true,
        Ok(o) => format!(
            "{PYTHON} cannot import dbus/gi: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => format!("cannot run {PYTHON}: {e}"),
    };
    let reason = format!(
        "{reason}. Install Debian's python3-dbus and python3-gi \
         (apt-get install python3 python3-dbus python3-gi)"
    );
    if std::env::var("VSS_ALLOW_SKIP").as_deref() == Ok("1") {
        eprintln!("SKIPPED: {test}: {reason}");
        false
    } else {
        panic!("{test}: {reason}, or set VSS_ALLOW_SKIP=1 to skip this test explicitly.")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_writer_registers_answers_and_vetoes() {
    if !python_ready("python_writer_registers_answers_and_vetoes") {
        return;
    }
    let script = common::workspace_root().join("examples/python-writer/vss_writer_example.py");
    assert!(script.exists(), "{} is missing", script.display());
    let script = script.to_string_lossy().into_owned();
    common::exercise_writer_process(
        std::path::Path::new(PYTHON),
        &[&script],
        "python-test",
        "Thaw",
        "org.vss.Error.VSS_E_WRITERERROR_RETRYABLE",
    )
    .await;
}
