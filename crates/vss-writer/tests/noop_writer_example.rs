//! The `noop_writer` example as a separate process, as vssd tests use it.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noop_writer_runs_a_backup_and_vetoes_on_request() {
    let program = common::example_binary("noop_writer");
    common::exercise_writer_process(
        &program,
        &[],
        "noop-test",
        "Thaw:nonretryable",
        "org.vss.Error.VSS_E_WRITERERROR_NONRETRYABLE",
    )
    .await;
}

#[test]
fn noop_writer_rejects_bad_arguments() {
    let program = common::example_binary("noop_writer");
    for args in [
        &[][..],
        &["--name"][..],
        &["--name", "x", "--fail-at", "Nope"][..],
        &["--name", "x", "--fail-at", "Freeze:sometimes"][..],
        &["--name", "x", "--freeze-sleep-ms", "soon"][..],
    ] {
        let out = std::process::Command::new(&program)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("usage:"),
            "{args:?}"
        );
    }
}
