//! Hooks run with the documented environment, and their exits, signals and
//! timeouts become the documented writer errors.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vss_core::WriterEndpoint;
use vss_exec_writer::{parse, ExecWriter};
use vss_types::{Guid, VssCode, WriterKind};

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a /bin/sh script and returns its path.
    fn script(&self, name: &str, body: &str) -> String {
        let p = self.path(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p.to_string_lossy().into_owned()
    }

    fn writer(&self, hooks: &str) -> ExecWriter {
        let text = format!("name = \"test writer\"\n[hooks]\n{hooks}\n");
        ExecWriter::new(parse(&text, &self.path("test.toml")).unwrap())
    }
}

fn read_env(p: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[tokio::test]
async fn hooks_get_the_documented_environment() {
    let f = Fixture::new();
    let out = f.path("out");
    std::fs::create_dir(&out).unwrap();
    let s = f.script(
        "hook.sh",
        r#"env > "$1/$VSS_EVENT.env"
printf '%s' "$VSS_VOLUMES" > "$1/$VSS_EVENT.volumes"
pwd > "$1/$VSS_EVENT.pwd"
cat > "$1/$VSS_EVENT.stdin""#,
    );
    let o = out.to_string_lossy();
    let hook = format!("[\"/bin/sh\", \"{s}\", \"{o}\"]");
    let w = f.writer(&format!(
        "prepare-backup = {hook}\nprepare = {hook}\nfreeze = {hook}\nthaw = {hook}\npost-snapshot = {hook}\n\
         abort = {hook}\nbackup-complete = {hook}\nbackup-shutdown = {hook}\npre-restore = {hook}\npost-restore = {hook}"
    ));
    let set = Guid::new_random();
    let vols = vec!["/".to_owned(), "/mnt/data disk".to_owned()];

    assert_eq!(
        w.prepare_for_backup(Guid::NULL, "<bcd/>".into())
            .await
            .unwrap(),
        "<bcd/>"
    );
    w.prepare_for_snapshot(set, vols.clone()).await.unwrap();
    w.freeze(set).await.unwrap();
    w.thaw(set).await.unwrap();
    assert_eq!(w.post_snapshot(set, "<b/>".into()).await.unwrap(), "<b/>");
    w.abort(set).await.unwrap();
    assert_eq!(w.backup_complete(set, "<c/>".into()).await.unwrap(), "<c/>");
    w.backup_shutdown(set).await.unwrap();
    assert_eq!(w.pre_restore("<r/>".into()).await.unwrap(), "<r/>");
    assert_eq!(w.post_restore("<p/>".into()).await.unwrap(), "<p/>");

    let allowed_extra = ["PWD", "OLDPWD", "SHLVL", "_"];
    for event in [
        "prepare-backup",
        "prepare-snapshot",
        "freeze",
        "thaw",
        "post-snapshot",
        "abort",
        "backup-complete",
        "backup-shutdown",
        "pre-restore",
        "post-restore",
    ] {
        let env = read_env(&out.join(format!("{event}.env")));
        assert_eq!(env["VSS_EVENT"], event);
        assert_eq!(env["VSS_WRITER_NAME"], "test writer");
        assert_eq!(env["VSS_WRITER_ID"], w.writer_id().to_string());
        assert_eq!(env["PATH"], "/usr/sbin:/usr/bin:/sbin:/bin");
        assert_eq!(env["LANG"], "C.UTF-8");
        // Nothing of the service's (here: the test's) environment leaks.
        for k in env.keys() {
            assert!(
                k.starts_with("VSS_")
                    || k == "PATH"
                    || k == "LANG"
                    || allowed_extra.contains(&k.as_str()),
                "{event}: unexpected variable {k}"
            );
        }
        let with_set = !matches!(event, "prepare-backup" | "pre-restore" | "post-restore");
        if with_set {
            assert_eq!(env["VSS_SNAPSHOT_SET_ID"], set.to_string(), "{event}");
            assert_eq!(env["VSS_VOLUME_COUNT"], "2", "{event}");
            assert_eq!(env["VSS_VOLUME_1"], "/", "{event}");
            assert_eq!(env["VSS_VOLUME_2"], "/mnt/data disk", "{event}");
            assert!(!env.contains_key("VSS_VOLUME_3"));
            let v = std::fs::read_to_string(out.join(format!("{event}.volumes"))).unwrap();
            assert_eq!(v, "/\n/mnt/data disk", "{event}");
        } else {
            assert!(!env.contains_key("VSS_SNAPSHOT_SET_ID"), "{event}");
            assert_eq!(env["VSS_VOLUME_COUNT"], "0", "{event}");
            assert!(!env.contains_key("VSS_VOLUME_1"));
        }
        let pwd = std::fs::read_to_string(out.join(format!("{event}.pwd"))).unwrap();
        assert_eq!(pwd.trim(), "/");
        // stdin is /dev/null: `cat` got EOF at once.
        assert_eq!(
            std::fs::read(out.join(format!("{event}.stdin"))).unwrap(),
            b""
        );
    }
}

#[tokio::test]
async fn no_hook_succeeds_and_returns_the_bcd() {
    let f = Fixture::new();
    let w = f.writer("");
    let set = Guid::new_random();
    assert_eq!(w.prepare_for_backup(set, "x".into()).await.unwrap(), "x");
    w.prepare_for_snapshot(set, vec!["/".into()]).await.unwrap();
    w.freeze(set).await.unwrap();
    w.thaw(set).await.unwrap();
    assert_eq!(w.post_snapshot(set, "y".into()).await.unwrap(), "y");
    w.abort(set).await.unwrap();
    assert_eq!(w.backup_complete(set, "z".into()).await.unwrap(), "z");
    w.backup_shutdown(set).await.unwrap();
    assert_eq!(w.pre_restore("r".into()).await.unwrap(), "r");
    assert_eq!(w.post_restore("p".into()).await.unwrap(), "p");
}

#[tokio::test]
async fn restore_hook_failures_are_writer_errors() {
    let f = Fixture::new();
    let busy = f.script("busy.sh", "echo 'service still running' >&2\nexit 75");
    let broken = f.script("broken.sh", "echo 'cannot start service' >&2\nexit 1");
    let w = f.writer(&format!(
        "pre-restore = [\"{busy}\"]\npost-restore = [\"{broken}\"]"
    ));
    let e = w.pre_restore("<bcd/>".into()).await.unwrap_err();
    assert_eq!(e.code, VssCode::WriterErrorRetryable, "{e}");
    assert!(e.message.contains("pre-restore hook"), "{}", e.message);
    assert!(e.message.contains("service still running"), "{}", e.message);
    let e = w.post_restore("<bcd/>".into()).await.unwrap_err();
    assert_eq!(e.code, VssCode::WriterErrorNonRetryable, "{e}");
    assert!(e.message.contains("post-restore hook"), "{}", e.message);
    assert!(e.hint().contains("hooks.post-restore"), "{}", e.hint());
}

#[tokio::test]
async fn exit_75_is_retryable() {
    let f = Fixture::new();
    let s = f.script("h.sh", "echo 'database is busy, try later' >&2\nexit 75");
    let w = f.writer(&format!("freeze = [\"{s}\"]"));
    let e = w.freeze(Guid::new_random()).await.unwrap_err();
    assert_eq!(e.code, VssCode::WriterErrorRetryable);
    assert!(e.message.contains("status 75"), "{}", e.message);
    assert!(
        e.message.contains("database is busy, try later"),
        "{}",
        e.message
    );
    assert!(e.message.contains("freeze hook"), "{}", e.message);
}

#[tokio::test]
async fn exit_1_is_non_retryable_and_quotes_stderr() {
    let f = Fixture::new();
    let s = f.script(
        "h.sh",
        "echo 'progress output' \necho 'starting' >&2\necho '  pg: cannot connect: no such socket  ' >&2\nexit 1",
    );
    let w = f.writer(&format!("thaw = [\"{s}\"]"));
    let e = w.thaw(Guid::new_random()).await.unwrap_err();
    assert_eq!(e.code, VssCode::WriterErrorNonRetryable);
    assert!(e.message.contains("status 1"), "{}", e.message);
    assert!(
        e.message
            .ends_with("starting | pg: cannot connect: no such socket"),
        "{}",
        e.message
    );
    assert!(
        !e.message.contains("progress output"),
        "stdout is not quoted"
    );
    assert!(
        e.hint().contains("hooks.thaw") && e.hint().contains("test.toml"),
        "{}",
        e.hint()
    );

    // Without any stderr.
    let s = f.script("q.sh", "exit 3");
    let w = f.writer(&format!("thaw = [\"{s}\"]"));
    let e = w.thaw(Guid::new_random()).await.unwrap_err();
    assert!(
        e.message.ends_with("status 3 (no error output)"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn long_and_large_stderr_is_capped() {
    let f = Fixture::new();
    // 200 KiB of output, then a long last line.
    let s = f.script(
        "h.sh",
        "i=0; while [ $i -lt 3200 ]; do echo 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' >&2; i=$((i+1)); done\n\
         printf 'E%.0s' $(seq 1 500) >&2\nexit 2",
    );
    let w = f.writer(&format!("freeze = [\"{s}\"]"));
    let e = w.freeze(Guid::new_random()).await.unwrap_err();
    let quote = e.message.split_once(": ").unwrap().1;
    assert!(
        quote.chars().count() <= 300,
        "{} chars",
        quote.chars().count()
    );
    assert!(quote.ends_with("EEEE"), "{quote}");
}

#[tokio::test]
async fn a_signal_is_non_retryable() {
    let f = Fixture::new();
    let s = f.script("h.sh", "echo dying >&2\nkill -TERM $$");
    let w = f.writer(&format!("freeze = [\"{s}\"]"));
    let e = w.freeze(Guid::new_random()).await.unwrap_err();
    assert_eq!(e.code, VssCode::WriterErrorNonRetryable);
    assert!(e.message.contains("signal 15 (SIGTERM)"), "{}", e.message);
    assert!(e.message.contains("dying"), "{}", e.message);
}

#[tokio::test]
async fn a_missing_program_is_non_retryable_and_named() {
    let f = Fixture::new();
    let w = f.writer("prepare = [\"/nonexistent/vss-hook\", \"arg\"]");
    let e = w
        .prepare_for_snapshot(Guid::new_random(), vec![])
        .await
        .unwrap_err();
    assert_eq!(e.code, VssCode::WriterErrorNonRetryable);
    assert!(e.message.contains("/nonexistent/vss-hook"), "{}", e.message);
    assert!(e.message.contains("no such program"), "{}", e.message);

    // Not executable.
    let p = f.path("noexec.sh");
    std::fs::write(&p, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let w = f.writer(&format!("prepare = [\"{}\"]", p.display()));
    let e = w
        .prepare_for_snapshot(Guid::new_random(), vec![])
        .await
        .unwrap_err();
    assert_eq!(e.code, VssCode::WriterErrorNonRetryable);
    assert!(e.message.contains("noexec.sh"), "{}", e.message);
}

/// True once the process is gone (or a zombie nobody has reaped yet,
/// which runs no more).
fn dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
            .unwrap_or(false),
    }
}

async fn wait_dead(pid: i32) -> bool {
    for _ in 0..100 {
        if dead(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn wait_for_pid_file(p: &Path) {
    loop {
        if std::fs::read_to_string(p).is_ok_and(|t| t.ends_with('\n')) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn read_pid(p: &Path) -> i32 {
    std::fs::read_to_string(p).unwrap().trim().parse().unwrap()
}

#[tokio::test]
async fn a_timeout_kills_the_hook_and_its_children() {
    let f = Fixture::new();
    let pidfile = f.path("child.pid");
    let s = f.script(
        "h.sh",
        &format!(
            "echo freezing >&2\nsleep 100 &\necho $! > {}\necho $$ > {}.sh\nwait",
            pidfile.display(),
            pidfile.display()
        ),
    );
    let w = f.writer(&format!(
        "freeze = {{ command = [\"{s}\"], timeout-secs = 2 }}"
    ));
    let t0 = Instant::now();
    let e = w.freeze(Guid::new_random()).await.unwrap_err();
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t0.elapsed()
    );
    assert_eq!(e.code, VssCode::WriterErrorTimeout);
    assert!(e.message.contains("timeout of 2 s"), "{}", e.message);
    assert!(e.message.contains("freezing"), "{}", e.message);
    assert!(e.hint().contains("timeout-secs"), "{}", e.hint());
    let child = read_pid(&pidfile);
    let shell = read_pid(&f.path("child.pid.sh"));
    assert!(
        wait_dead(child).await,
        "the hook's child {child} survived the timeout"
    );
    assert!(
        wait_dead(shell).await,
        "the hook {shell} survived the timeout"
    );
}

#[tokio::test]
async fn an_abandoned_hook_is_killed() {
    // The coordinator drops the call at its deadline; the hook must not
    // outlive it.
    let f = Fixture::new();
    let pidfile = f.path("child.pid");
    let s = f.script(
        "h.sh",
        &format!("sleep 100 &\necho $! > {}\nwait", pidfile.display()),
    );
    let w = f.writer(&format!(
        "thaw = {{ command = [\"{s}\"], timeout-secs = 60 }}"
    ));
    // async_trait futures are boxed: dropping `call` drops the hook run.
    let mut call = w.thaw(Guid::new_random());
    // Let the hook start its child, then drop the call as a deadline would.
    tokio::select! {
        r = &mut call => panic!("the hook should still be running: {r:?}"),
        _ = wait_for_pid_file(&pidfile) => {}
    }
    drop(call);
    let child = read_pid(&pidfile);
    assert!(
        wait_dead(child).await,
        "the abandoned hook's child {child} survived"
    );
}

#[tokio::test]
async fn a_leftover_background_process_does_not_block() {
    // A hook that exits but leaves a process holding its stdout open.
    let f = Fixture::new();
    let pidfile = f.path("bg.pid");
    let s = f.script(
        "h.sh",
        &format!("sleep 30 &\necho $! > {}\nexit 0", pidfile.display()),
    );
    let w = f.writer(&format!("post-snapshot = [\"{s}\"]"));
    let t0 = Instant::now();
    w.post_snapshot(Guid::new_random(), String::new())
        .await
        .unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
    let bg = read_pid(&pidfile);
    // Left running (a hook may start daemons); clean up.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(bg),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[tokio::test]
async fn hooks_of_one_writer_run_one_at_a_time() {
    let f = Fixture::new();
    let log = f.path("log");
    let s = f.script(
        "h.sh",
        &format!(
            "echo start >> {l}\nsleep 0.3\necho end >> {l}",
            l = log.display()
        ),
    );
    let w = Arc::new(f.writer(&format!("freeze = [\"{s}\"]\nthaw = [\"{s}\"]")));
    let set = Guid::new_random();
    let (a, b) = tokio::join!(w.freeze(set), w.thaw(set));
    a.unwrap();
    b.unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text, "start\nend\nstart\nend\n");
}

#[tokio::test]
async fn priv_runs_as_the_configured_user() {
    // Needs root to switch users: fails loudly elsewhere unless
    // VSS_ALLOW_SKIP=1.
    if !vss_testkit::privileged("priv_runs_as_the_configured_user") {
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody")
        .ok()
        .flatten()
        .expect("the system has a user 'nobody'");
    let f = Fixture::new();
    let out = f.path("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(f.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let s = f.script(
        "h.sh",
        &format!(
            "id -u > {o}/uid\nid -g > {o}/gid\necho \"$HOME $USER\" > {o}/home",
            o = out.display()
        ),
    );
    let w = f.writer(&format!(
        "freeze = {{ command = [\"{s}\"], user = \"nobody\" }}"
    ));
    w.freeze(Guid::new_random()).await.unwrap();
    let uid = std::fs::read_to_string(out.join("uid")).unwrap();
    assert_eq!(uid.trim(), nobody.uid.to_string());
    let gid = std::fs::read_to_string(out.join("gid")).unwrap();
    assert_eq!(gid.trim(), nobody.gid.to_string());
    let home = std::fs::read_to_string(out.join("home")).unwrap();
    assert_eq!(home.trim(), format!("{} nobody", nobody.dir.display()));

    let w = f.writer(&format!(
        "freeze = {{ command = [\"{s}\"], user = \"no-such-user-vss\" }}"
    ));
    let e = w.freeze(Guid::new_random()).await.unwrap_err();
    assert_eq!(e.code, VssCode::WriterErrorNonRetryable);
    assert!(e.message.contains("no-such-user-vss"), "{}", e.message);
}

#[test]
fn registration() {
    let f = Fixture::new();
    let w = Arc::new(f.writer(""));
    let id = w.writer_id();
    let n = w.clone().to_new_writer();
    assert_eq!(n.name, "test writer");
    assert_eq!(n.writer_id, id);
    assert_eq!(n.kind, WriterKind::ExecHook);
    assert_eq!(n.owner, "exec:test writer");
    assert_eq!(n.pid, None);
    assert_eq!(n.uid, None);
}
