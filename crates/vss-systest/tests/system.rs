//! End-to-end tests: vssd on a private dbus-daemon, real writers, vssadmin,
//! loop-mounted btrfs, xfs and ext4 volumes. All privileged (`priv_`).

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vss_testkit::system::{bin, wait_for, workspace_root, Bus, Daemon};
use vss_testkit::{privileged, LoopFs};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn writer(d: &Daemon, name: &str, log: &std::path::Path, extra: &[&str]) -> Proc {
    let c = Command::new(bin("noop_writer"))
        .args(["--name", name, "--log"])
        .arg(log)
        .args(extra)
        .env("DBUS_SYSTEM_BUS_ADDRESS", &d.address)
        .stdout(Stdio::null())
        .spawn()
        .expect("start noop_writer");
    Proc(c)
}

fn python_writer(d: &Daemon, name: &str, log: &std::path::Path) -> Proc {
    let script = workspace_root().join("examples/python-writer/vss_writer_example.py");
    let c = Command::new("/usr/bin/python3")
        .arg(script)
        .args(["--name", name, "--log"])
        .arg(log)
        .env("DBUS_SYSTEM_BUS_ADDRESS", &d.address)
        .stdout(Stdio::null())
        .spawn()
        .expect("start the Python writer (/usr/bin/python3 with python3-dbus, python3-gi)");
    Proc(c)
}

fn writers_listed(d: &Daemon, names: &[&str]) -> bool {
    let o = d.vssadmin(&["list", "writers"]);
    names
        .iter()
        .all(|n| o.stdout.contains(&format!("Writer name: '{n}'")))
}

fn events(log: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

fn shadow_entries(fs: &LoopFs) -> usize {
    std::fs::read_dir(fs.path(".vss-shadows"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn is_writable(path: &std::path::Path, within: Duration) -> bool {
    let p = path.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = std::fs::write(p.join("probe"), b"x")
            .and_then(|_| std::fs::File::open(p.join("probe"))?.sync_all());
        let _ = tx.send(r.is_ok());
    });
    rx.recv_timeout(within).unwrap_or(false)
}

#[test]
fn priv_sys_btrfs_shadow_lifecycle() {
    if !privileged("priv_sys_btrfs_shadow_lifecycle") {
        return;
    }
    let bus = Bus::start();
    let d = Daemon::start(&bus, "");
    let fs = LoopFs::new("btrfs", 256);
    std::fs::write(fs.path("data.txt"), "before\n").unwrap();
    let mp = fs.mount_point.to_str().unwrap().to_string();

    let created = d.vssadmin(&["create", "shadow", &format!("/for={mp}")]);
    created.ok();
    assert!(created
        .stdout
        .contains(&format!("Successfully created shadow copy for '{mp}'")));
    assert!(created.stdout.contains("    Shadow Copy Volume Name: "));
    let id = created.shadow_id();
    // A write made after the shadow exists is not in the shadow.
    std::fs::write(fs.path("data.txt"), "after\n").unwrap();
    std::fs::write(fs.path("new.txt"), "new\n").unwrap();

    let list = d.vssadmin(&["list", "shadows", &format!("/for={mp}")]);
    list.ok();
    assert!(
        list.stdout.contains(&format!("      Shadow Copy ID: {id}")),
        "{}",
        list.stdout
    );
    assert!(list
        .stdout
        .contains("         Type: ClientAccessibleWriters"));
    assert!(list
        .stdout
        .contains("         Attributes: Persistent, Client-accessible, No auto release"));
    assert!(list.stdout.contains("Hold Time: "));

    let json = d.vssadmin(&["list", "shadows", "--json"]);
    json.ok();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let device = v["shadows"][0]["device_object"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        std::fs::read_to_string(format!("{device}/data.txt")).unwrap(),
        "before\n"
    );
    assert!(!std::path::Path::new(&format!("{device}/new.txt")).exists());

    // Expose read-only where only root can reach it.
    let base = tempfile_dir();
    let target = base.join("private/exposed");
    let t = target.to_str().unwrap();
    d.vssadmin(&[
        "expose",
        "shadow",
        &format!("/shadow={id}"),
        &format!("/to={t}"),
    ])
    .ok();
    assert_eq!(
        std::fs::read_to_string(target.join("data.txt")).unwrap(),
        "before\n"
    );
    assert!(
        std::fs::write(target.join("x"), "y").is_err(),
        "exposed shadow must be read-only"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(base.join("private"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "the exposure's parent is root-only");
    let listed = d.vssadmin(&["list", "shadows"]);
    assert!(
        listed.stdout.contains(&format!("Exposed At: {t}")),
        "{}",
        listed.stdout
    );
    d.vssadmin(&["unexpose", "shadow", &format!("/shadow={id}")])
        .ok();
    assert!(!target.join("data.txt").exists());

    // Survives a restart of vssd (persistent).
    let mut d = d;
    d.kill9();
    d.spawn();
    let after = d.vssadmin(&["list", "shadows"]);
    assert!(after.stdout.contains(&id), "{}", after.stdout);
    assert!(!after.stdout.contains("Lost"));

    d.vssadmin(&[
        "delete",
        "shadows",
        &format!("/for={mp}"),
        "/oldest",
        "/quiet",
    ])
    .ok();
    let none = d.vssadmin(&["list", "shadows"]);
    assert!(none
        .stdout
        .contains("No items found that satisfy the query."));
    assert_eq!(shadow_entries(&fs), 0);
    let _ = std::fs::remove_dir_all(&base);
}

fn tempfile_dir() -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!(
        "vss-systest-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[test]
fn priv_sys_writers_get_events_in_order() {
    if !privileged("priv_sys_writers_get_events_in_order") {
        return;
    }
    let bus = Bus::start();
    let d = Daemon::start(&bus, "");
    let fs = LoopFs::new("btrfs", 256);
    let logs = tempfile_dir();
    let rust_log = logs.join("rust.log");
    let py_log = logs.join("python.log");
    let _w1 = writer(&d, "rust-sdk-writer", &rust_log, &[]);
    let _w2 = python_writer(&d, "python-writer", &py_log);
    assert!(
        wait_for(Duration::from_secs(20), || writers_listed(
            &d,
            &["rust-sdk-writer", "python-writer"]
        )),
        "writers did not register: {}",
        d.vssadmin(&["list", "writers"]).stdout
    );
    let list = d.vssadmin(&["list", "writers"]);
    for name in ["rust-sdk-writer", "python-writer"] {
        let block = list
            .stdout
            .split(&format!("Writer name: '{name}'"))
            .nth(1)
            .unwrap();
        let block: Vec<&str> = block.lines().take(5).collect();
        assert!(
            block.iter().any(|l| l.trim() == "State: [1] Stable"),
            "{block:?}"
        );
        assert!(
            block.iter().any(|l| l.trim() == "Last error: No error"),
            "{block:?}"
        );
    }

    let mp = fs.mount_point.to_str().unwrap().to_string();
    d.vssadmin(&["create", "shadow", &format!("/for={mp}")])
        .ok();
    let expected = [
        "Identify",
        "PrepareForBackup",
        "PrepareForSnapshot",
        "Freeze",
        "Thaw",
        "PostSnapshot",
        "BackupComplete",
    ];
    for log in [&rust_log, &py_log] {
        assert!(wait_for(Duration::from_secs(5), || events(log)
            .contains(&"BackupShutdown".to_string())));
        let ev = events(log);
        let seq: Vec<&str> = ev
            .iter()
            .map(String::as_str)
            .filter(|e| expected.contains(e))
            .collect();
        assert_eq!(seq, expected, "events in {}: {ev:?}", log.display());
    }
    let list = d.vssadmin(&["list", "writers"]);
    assert!(!list.stdout.contains("Failed"), "{}", list.stdout);
    let _ = std::fs::remove_dir_all(&logs);
}

#[test]
fn priv_sys_writes_wait_for_the_hold() {
    if !privileged("priv_sys_writes_wait_for_the_hold") {
        return;
    }
    let bus = Bus::start();
    // The simulated provider takes 1.5 s to commit, so the hold is long
    // enough to see: xfs is frozen for real meanwhile.
    let d = Daemon::start(
        &bus,
        "[providers]\nbtrfs = true\nsimulated = true\nsimulated-commit-delay-ms = 1500\n",
    );
    let fs = LoopFs::new("xfs", 300);
    let mp = fs.mount_point.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let mp2 = mp.clone();
    let writer = std::thread::spawn(move || {
        let mut longest = Duration::ZERO;
        let mut n = 0u64;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let t = Instant::now();
            let mut f = std::fs::File::create(mp2.join("load")).unwrap();
            f.write_all(&n.to_le_bytes()).unwrap();
            f.sync_all().unwrap();
            longest = longest.max(t.elapsed());
            n += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
        longest
    });
    std::thread::sleep(Duration::from_millis(300));
    let o = d.vssadmin(&["create", "shadow", &format!("/for={}", mp.display())]);
    o.ok();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let longest = writer.join().unwrap();
    assert!(
        longest >= Duration::from_millis(1000),
        "a write during the 1.5 s hold should have waited for it; longest write took {longest:?}"
    );
    let json = d.vssadmin(&["list", "shadows", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let hold = v["shadows"][0]["hold_micros"].as_u64().unwrap();
    assert!(
        (1_400_000..10_000_000).contains(&hold),
        "hold time recorded: {hold} µs"
    );
    assert!(is_writable(&mp, Duration::from_secs(2)));
}

#[test]
fn priv_sys_writer_timeout_fails_the_set() {
    if !privileged("priv_sys_writer_timeout_fails_the_set") {
        return;
    }
    let bus = Bus::start();
    let d = Daemon::start(
        &bus,
        "[writers.\"slow-writer\"]\ntimeout-secs = 2\n[providers]\nsimulated = true\n",
    );
    let btrfs = LoopFs::new("btrfs", 256);
    let xfs = LoopFs::new("xfs", 300);
    let logs = tempfile_dir();
    let slow_log = logs.join("slow.log");
    let good_log = logs.join("good.log");
    let _slow = writer(
        &d,
        "slow-writer",
        &slow_log,
        &["--freeze-sleep-ms", "30000"],
    );
    let _good = writer(&d, "good-writer", &good_log, &[]);
    assert!(wait_for(Duration::from_secs(20), || writers_listed(
        &d,
        &["slow-writer", "good-writer"]
    )));

    // One set with both volumes, through the requestor interface.
    let started = Instant::now();
    let o = d.run(
        Command::new(bin("vssadmin"))
            .args(["create", "shadow"])
            .arg(format!("/for={}", btrfs.mount_point.display())),
    );
    let took = started.elapsed();
    assert_eq!(o.code, 1, "{o:#?}");
    assert!(
        o.stderr.contains("0x800423F2 VSS_E_WRITERERROR_TIMEOUT"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("slow-writer"), "{}", o.stderr);
    assert!(
        o.stderr.contains("timeout-secs"),
        "the hint says how to raise it: {}",
        o.stderr
    );
    assert!(
        took < Duration::from_secs(20),
        "failed at the 2 s timeout, not later: {took:?}"
    );

    let list = d.vssadmin(&["list", "writers"]);
    let block: Vec<&str> = list
        .stdout
        .split("Writer name: 'slow-writer'")
        .nth(1)
        .unwrap()
        .lines()
        .take(5)
        .collect();
    assert!(
        block.iter().any(|l| l.trim() == "State: [9] Failed"),
        "{block:?}"
    );
    assert!(
        block.iter().any(|l| l.trim() == "Last error: Timed out"),
        "{block:?}"
    );
    assert!(
        wait_for(Duration::from_secs(5), || events(&good_log)
            .contains(&"Abort".to_string())),
        "good writer got Abort: {:?}",
        events(&good_log)
    );
    let none = d.vssadmin(&["list", "shadows"]);
    assert!(
        none.stdout.contains("No items found"),
        "no partial shadow: {}",
        none.stdout
    );
    assert_eq!(shadow_entries(&btrfs), 0);
    assert!(is_writable(&btrfs.mount_point, Duration::from_secs(2)));
    assert!(is_writable(&xfs.mount_point, Duration::from_secs(2)));
    let _ = std::fs::remove_dir_all(&logs);
}

fn frozen(mp: &std::path::Path) -> bool {
    !is_writable(mp, Duration::from_millis(300))
}

#[test]
fn priv_sys_kill9_while_holding_thaws_and_reports() {
    if !privileged("priv_sys_kill9_while_holding_thaws_and_reports") {
        return;
    }
    let bus = Bus::start();
    // The simulated commit takes longer than any test waits, so vssd is
    // certainly holding writes when it is killed.
    let mut d = Daemon::start(
        &bus,
        "[providers]\nbtrfs = false\nsimulated = true\nsimulated-commit-delay-ms = 60000\n",
    );
    let fs = LoopFs::new("xfs", 300);
    let mp = fs.mount_point.clone();
    let mut create = Command::new(bin("vssadmin"))
        .args(["create", "shadow"])
        .arg(format!("/for={}", mp.display()))
        .env("DBUS_SYSTEM_BUS_ADDRESS", &d.address)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || frozen(&mp)),
        "the volume was never held"
    );
    d.kill9();
    let killed = Instant::now();
    assert!(
        wait_for(Duration::from_secs(10), || is_writable(
            &mp,
            Duration::from_millis(500)
        )),
        "the volume stayed frozen after vssd was killed"
    );
    assert!(killed.elapsed() < Duration::from_secs(10));
    let _ = create.wait();

    d.spawn();
    let o = d.call_requestor(&["ListAbortedSets"]);
    o.ok();
    assert!(
        o.stdout.contains(&mp.display().to_string()),
        "aborted set names the volume: {}",
        o.stdout
    );
    assert!(d.log_text().contains("aborted snapshot set found at start"));

    // A second vssd on the same state refuses before touching anything, and
    // the running one keeps serving.
    let second = Command::new(bin("vssd"))
        .arg("--config")
        .arg(&d.config)
        .env("DBUS_SYSTEM_BUS_ADDRESS", &d.address)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "second vssd ran: {err}");
    assert!(err.contains("0x8004230D"), "{err}");
    d.call_requestor(&["ListAbortedSets"]).ok();
}

#[test]
fn priv_sys_hold_limit_is_enforced() {
    if !privileged("priv_sys_hold_limit_is_enforced") {
        return;
    }
    let bus = Bus::start();
    let d = Daemon::start(
        &bus,
        "hold-limit-ms = 1500\n[providers]\nbtrfs = false\nsimulated = true\nsimulated-commit-delay-ms = 20000\n",
    );
    let fs = LoopFs::new("ext4", 128);
    let o = d.vssadmin(&[
        "create",
        "shadow",
        &format!("/for={}", fs.mount_point.display()),
    ]);
    assert_eq!(o.code, 1, "{o:#?}");
    assert!(
        o.stderr.contains("0x80042314 VSS_E_HOLD_WRITES_TIMEOUT"),
        "{}",
        o.stderr
    );
    assert!(is_writable(&fs.mount_point, Duration::from_secs(2)));
    assert!(d
        .vssadmin(&["list", "shadows"])
        .stdout
        .contains("No items found"));
    // The service keeps serving.
    d.vssadmin(&["list", "writers"]).ok();
}

#[test]
fn priv_sys_one_set_at_a_time() {
    if !privileged("priv_sys_one_set_at_a_time") {
        return;
    }
    let bus = Bus::start();
    let d = Daemon::start(
        &bus,
        "[providers]\nbtrfs = false\nsimulated = true\nsimulated-commit-delay-ms = 2000\n",
    );
    let fs = LoopFs::new("ext4", 128);
    let arg = format!("/for={}", fs.mount_point.display());
    let spawn = |extra: &[&str]| {
        Command::new(bin("vssadmin"))
            .args(["create", "shadow", &arg])
            .args(extra)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &d.address)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = spawn(&[]);
    std::thread::sleep(Duration::from_millis(500));
    let second = spawn(&[]).wait_with_output().unwrap();
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "{first:?}");
    assert_eq!(second.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&second.stderr)
        .contains("0x80042316 VSS_E_SNAPSHOT_SET_IN_PROGRESS"));

    // With /autoretry the second one waits its turn.
    let a = spawn(&[]);
    std::thread::sleep(Duration::from_millis(500));
    let b = spawn(&["/autoretry=1"]).wait_with_output().unwrap();
    let a = a.wait_with_output().unwrap();
    assert!(a.status.success() && b.status.success(), "{a:?} {b:?}");
    let json = d.vssadmin(&["list", "shadows", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["shadows"].as_array().unwrap().len(), 3);
    // The LVM watcher ticked all along: where the kernel has no
    // device-mapper it says so once and does not run a failing dmsetup.
    let log = d.log_text();
    assert!(!log.contains("dmsetup status failed"), "{log}");
}

#[test]
fn priv_sys_unsupported_volume_is_named() {
    if !privileged("priv_sys_unsupported_volume_is_named") {
        return;
    }
    let bus = Bus::start();
    let d = Daemon::start(&bus, "");
    let fs = LoopFs::new("ext4", 128);
    let o = d.vssadmin(&[
        "create",
        "shadow",
        &format!("/for={}", fs.mount_point.display()),
    ]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("0x8004230C VSS_E_VOLUME_NOT_SUPPORTED"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.contains(&format!("ext4 on {}", fs.device)),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("Hint: "), "{}", o.stderr);
}

#[test]
fn priv_sys_bad_input_gets_clear_errors() {
    if !privileged("priv_sys_bad_input_gets_clear_errors") {
        return;
    }
    let bus = Bus::start();
    let d = Daemon::start(&bus, "");
    // Bad arguments: exit 2, the syntax in the hint.
    let o = d.vssadmin(&["create", "shadow"]);
    assert_eq!(o.code, 2, "{o:#?}");
    assert!(o.stderr.contains("E_INVALIDARG"), "{}", o.stderr);
    let o = d.vssadmin(&["frobnicate"]);
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("Invalid command."));
    // Malformed XML through the requestor interface: 0x80042311.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    std::env::set_var("DBUS_SYSTEM_BUS_ADDRESS", &d.address);
    rt.block_on(async {
        let client = vss_client::Client::connect().await.unwrap();
        let mut bc = client.backup_components(Default::default()).await.unwrap();
        bc.gather_writer_metadata().await.unwrap();
        bc.bcd = "<BACKUP_COMPONENTS><!DOCTYPE x [<!ENTITY a \"b\">]>".into();
        let e = bc.prepare_for_backup().await.unwrap_err();
        assert_eq!(e.code, vss_types::VssCode::InvalidXmlDocument, "{e}");
        bc.bcd = "x".repeat(5 << 20);
        let e = bc.prepare_for_backup().await.unwrap_err();
        assert_eq!(e.code, vss_types::VssCode::InvalidXmlDocument, "{e}");
        // Out of order: DoSnapshotSet before StartSnapshotSet.
        let e = bc.do_snapshot_set().await.unwrap_err();
        assert_eq!(e.code, vss_types::VssCode::BadState, "{e}");
        bc.end().await.unwrap();
    });
    let bad = d.call_requestor(&["StartSession", "s", "{\"context\":\"nonsense\"}"]);
    assert!(
        bad.stderr.contains("E_INVALIDARG")
            || bad.stderr.contains("argument is invalid")
            || bad.stderr.contains("bad session options"),
        "{}",
        bad.stderr
    );
    let bad = d.call_requestor(&["AddToSnapshotSet", "sss", "not-a-guid", "/", ""]);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("not a valid id"), "{}", bad.stderr);
    // Still serving.
    d.vssadmin(&["list", "writers"]).ok();
    d.vssadmin(&["list", "providers"]).ok();
}

#[test]
fn priv_sys_unprivileged_callers_are_refused() {
    if !privileged("priv_sys_unprivileged_callers_are_refused") {
        return;
    }
    let bus = Bus::start();
    let group = format!("vsst{}", std::process::id() % 100000);
    let added = Command::new("groupadd").arg(&group).status().unwrap();
    assert!(added.success(), "groupadd {group}");
    struct DelGroup(String);
    impl Drop for DelGroup {
        fn drop(&mut self) {
            let _ = Command::new("groupdel").arg(&self.0).status();
        }
    }
    let _g = DelGroup(group.clone());
    let gid = std::fs::read_to_string("/etc/group")
        .unwrap()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f[0] == group).then(|| f[2].to_string())
        })
        .unwrap();
    let d = Daemon::start(
        &bus,
        &format!("operators-group = \"{group}\"\nallowed-writer-uids = [0]\n"),
    );
    let fs = LoopFs::new("btrfs", 256);
    let vssadmin = bin("vssadmin");
    let as_nobody = |groups: &str, args: &[&str]| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534"]);
        if groups.is_empty() {
            c.arg("--clear-groups");
        } else {
            c.arg(format!("--groups={groups}"));
        }
        c.arg(&vssadmin).args(args);
        d.run(&mut c)
    };
    // Anyone may list.
    as_nobody("", &["list", "writers"]).ok();
    as_nobody("", &["list", "shadows"]).ok();
    // Not anyone may create, delete or expose.
    let mp = format!("/for={}", fs.mount_point.display());
    let o = as_nobody("", &["create", "shadow", &mp]);
    assert_eq!(o.code, 4, "{o:#?}");
    assert!(o.stderr.contains("E_ACCESSDENIED"), "{}", o.stderr);
    assert!(
        o.stderr.contains(&group),
        "the hint names the group: {}",
        o.stderr
    );
    // A member of the operators group may.
    let o = as_nobody(&gid, &["create", "shadow", &mp]);
    o.ok();
    let id = o.shadow_id();
    let o = as_nobody(
        "",
        &["delete", "shadows", &format!("/shadow={id}"), "/quiet"],
    );
    assert_eq!(o.code, 4, "{o:#?}");
    // Writers from uids not allowed are refused.
    let logs = tempfile_dir();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&logs, std::fs::Permissions::from_mode(0o777)).unwrap();
    let c = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin("noop_writer"))
        .args(["--name", "intruder", "--log"])
        .arg(logs.join("i.log"))
        .env("DBUS_SYSTEM_BUS_ADDRESS", &d.address)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _p = Proc(c);
    std::thread::sleep(Duration::from_secs(2));
    assert!(!writers_listed(&d, &["intruder"]));
    assert!(d.log_text().contains("writer registration refused"));
    d.vssadmin(&["delete", "shadows", &format!("/shadow={id}"), "/quiet"])
        .ok();
    let _ = std::fs::remove_dir_all(&logs);
}

#[test]
fn priv_sys_exec_hook_writer_runs_its_hooks() {
    if !privileged("priv_sys_exec_hook_writer_runs_its_hooks") {
        return;
    }
    let bus = Bus::start();
    let logs = tempfile_dir();
    let log = logs.join("hooks.log");
    let hook = logs.join("hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho \"$VSS_EVENT $VSS_WRITER_NAME $VSS_VOLUME_COUNT\" >> {}\n",
            log.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Writers are declared before vssd starts, as in /etc/vss/writers.d.
    let staging = tempfile_dir();
    let decl = format!(
        "name = \"hooked-app\"\n\n[[component]]\nname = \"data\"\nfiles = [{{ path = \"/srv/app\" }}]\n\n[hooks]\nprepare = [\"{h}\"]\nfreeze = [\"{h}\"]\nthaw = [\"{h}\"]\npost-snapshot = [\"{h}\"]\n",
        h = hook.display()
    );
    std::fs::write(staging.join("hooked-app.toml"), &decl).unwrap();
    let d = Daemon::start_with_writers(&bus, "", &staging);
    assert!(
        writers_listed(&d, &["hooked-app"]),
        "{}",
        d.vssadmin(&["list", "writers"]).stdout
    );
    let fs = LoopFs::new("btrfs", 256);
    d.vssadmin(&[
        "create",
        "shadow",
        &format!("/for={}", fs.mount_point.display()),
    ])
    .ok();
    let got = std::fs::read_to_string(&log).unwrap();
    let events: Vec<&str> = got.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        events,
        ["prepare-snapshot", "freeze", "thaw", "post-snapshot"],
        "{got}"
    );
    assert!(got.lines().all(|l| l.ends_with("hooked-app 1")), "{got}");
    let _ = std::fs::remove_dir_all(&logs);
    let _ = std::fs::remove_dir_all(&staging);
}

#[test]
fn priv_sys_writer_dying_mid_sequence_is_noticed_at_once() {
    if !privileged("priv_sys_writer_dying_mid_sequence_is_noticed_at_once") {
        return;
    }
    let bus = Bus::start();
    // Default 60 s window: the failure must come from the death, not a timeout.
    let d = Daemon::start(&bus, "");
    let fs = LoopFs::new("btrfs", 256);
    let logs = tempfile_dir();
    let log = logs.join("dying.log");
    let mut w = writer(&d, "dying-writer", &log, &["--freeze-sleep-ms", "60000"]);
    assert!(wait_for(Duration::from_secs(20), || writers_listed(
        &d,
        &["dying-writer"]
    )));
    let create = Command::new(bin("vssadmin"))
        .args(["create", "shadow"])
        .arg(format!("/for={}", fs.mount_point.display()))
        .env("DBUS_SYSTEM_BUS_ADDRESS", &d.address)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_for(Duration::from_secs(10), || events(&log)
        .contains(&"Freeze".to_string())));
    let _ = w.0.kill();
    let killed = Instant::now();
    let out = create.wait_with_output().unwrap();
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "noticed after {:?}",
        killed.elapsed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("0x80042319 VSS_E_WRITER_NOT_RESPONDING"),
        "{stderr}"
    );
    assert!(stderr.contains("dying-writer"), "{stderr}");
    assert!(d
        .vssadmin(&["list", "shadows"])
        .stdout
        .contains("No items found"));
    assert!(!writers_listed(&d, &["dying-writer"]));
    let _ = std::fs::remove_dir_all(&logs);
}

#[test]
fn priv_sys_non_persistent_shadows_go_with_their_requestor() {
    if !privileged("priv_sys_non_persistent_shadows_go_with_their_requestor") {
        return;
    }
    let bus = Bus::start();
    let d = Daemon::start(&bus, "");
    let fs = LoopFs::new("btrfs", 256);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    std::env::set_var("DBUS_SYSTEM_BUS_ADDRESS", &d.address);
    let mp = fs.mount_point.display().to_string();
    rt.block_on(async {
        let client = vss_client::Client::connect().await.unwrap();
        let mut bc = client.backup_components(Default::default()).await.unwrap();
        bc.gather_writer_metadata().await.unwrap();
        bc.prepare_for_backup().await.unwrap();
        bc.start_snapshot_set().await.unwrap();
        bc.add_to_snapshot_set(&mp, vss_types::Guid::NULL)
            .await
            .unwrap();
        let props = bc.do_snapshot_set().await.unwrap();
        assert_eq!(props.len(), 1);
        assert!(bc.bcd.contains("SNAPSHOT_SET_DESCRIPTION"), "{}", bc.bcd);
        assert!(d
            .vssadmin(&["list", "shadows"])
            .stdout
            .contains(&props[0].shadow_id.to_string()));
        // The requestor goes away without ending its session.
        drop(bc);
        drop(client);
    });
    drop(rt);
    assert!(
        wait_for(Duration::from_secs(10), || d
            .vssadmin(&["list", "shadows"])
            .stdout
            .contains("No items found")),
        "non-persistent shadow outlived its requestor"
    );
    assert!(wait_for(Duration::from_secs(5), || shadow_entries(&fs) == 0));
}

#[test]
fn priv_sys_vanished_shadow_is_reported_lost() {
    if !privileged("priv_sys_vanished_shadow_is_reported_lost") {
        return;
    }
    let bus = Bus::start();
    let mut d = Daemon::start(&bus, "");
    let fs = LoopFs::new("btrfs", 256);
    let o = d.vssadmin(&[
        "create",
        "shadow",
        &format!("/for={}", fs.mount_point.display()),
    ]);
    o.ok();
    let id = o.shadow_id();
    d.kill9();
    // Someone deletes the snapshot behind the service's back.
    let snap = fs.path(&format!(".vss-shadows/{id}"));
    let st = Command::new("btrfs")
        .args(["-q", "subvolume", "delete"])
        .arg(&snap)
        .status()
        .unwrap();
    assert!(st.success());
    d.spawn();
    let list = d.vssadmin(&["list", "shadows"]);
    assert!(list.stdout.contains(&id), "still listed: {}", list.stdout);
    assert!(list.stdout.contains("State: Lost"), "{}", list.stdout);
    assert!(d.log_text().contains("shadow copy lost"));
}

/// The storage verbs reach vssd's `org.vss.Storage1` and come back with
/// the right code and exit status. No volume is needed: everything here is
/// refused or empty before any disk is touched.
#[test]
fn priv_sys_storage_verbs_reach_vssd() {
    if !privileged("priv_sys_storage_verbs_reach_vssd") {
        return;
    }
    let bus = Bus::start();
    // The software provider switched off: the verbs still reach vssd and
    // answer clearly (the provider itself is tested in tests/cow.rs).
    let d = Daemon::start(&bus, "[providers]\nsoftware = false\n");

    // Lists: nothing, exit 0, text and JSON.
    let o = d.vssadmin(&["list", "shadowstorage"]);
    o.ok();
    assert!(
        o.stdout
            .ends_with("\n\nNo items found that satisfy the query.\n"),
        "{o:#?}"
    );
    let o = d.vssadmin(&["list", "shadowstorage", "/for=/", "--json"]);
    o.ok();
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["shadow_storage"], serde_json::json!([]));
    let o = d.vssadmin(&["query", "reverts"]);
    o.ok();
    assert!(o.stdout.contains("No items found"), "{o:#?}");

    // Checked by vssd before any provider: an unknown shadow, a bad size
    // or filter sent over the bus directly.
    let o = d.vssadmin(&[
        "revert",
        "shadow",
        "/shadow={c5b5a1d4-4b3c-4a7e-9d2f-0123456789ab}",
    ]);
    assert_eq!(o.code, 1, "{o:#?}");
    assert!(
        o.stderr.contains("0x80042308 VSS_E_OBJECT_NOT_FOUND"),
        "{}",
        o.stderr
    );
    let busctl = |args: &[&str]| {
        let mut full = vec![
            "--address",
            &d.address,
            "call",
            "org.vss.Vssd",
            "/org/vss/Vssd",
            "org.vss.Storage1",
        ];
        full.extend_from_slice(args);
        d.run(Command::new("busctl").args(&full))
    };
    let bad = busctl(&["AddShadowStorage", "sss", "/", "/", "12XB"]);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("invalid size '12XB'"), "{}", bad.stderr);
    let bad = busctl(&["ListShadowStorage", "a{ss}", "1", "volume", "/"]);
    assert_ne!(bad.code, 0);
    assert!(
        bad.stderr.contains("unknown ListShadowStorage filter key"),
        "{}",
        bad.stderr
    );
    // A bad size never leaves vssadmin: exit 2, the code named.
    let o = d.vssadmin(&["add", "shadowstorage", "/for=/", "/on=/", "/maxsize=12XB"]);
    assert_eq!(o.code, 2, "{o:#?}");
    assert!(
        o.stderr
            .contains("0x80070057 E_INVALIDARG: invalid size '12XB'"),
        "{}",
        o.stderr
    );

    // Changes need root or the operators group; lists do not.
    let as_nobody = |args: &[&str]| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin("vssadmin"))
            .args(args);
        d.run(&mut c)
    };
    as_nobody(&["list", "shadowstorage"]).ok();
    as_nobody(&["query", "reverts"]).ok();
    for args in [
        &["add", "volume", "/device=/dev/null", "/mount=/mnt/vss-x"][..],
        &["delete", "volume", "/for=/mnt/vss-x", "/quiet"],
        &["add", "shadowstorage", "/for=/", "/on=/", "/maxsize=1GB"],
        &["delete", "shadowstorage", "/for=/", "/quiet"],
    ] {
        let o = as_nobody(args);
        assert_eq!(o.code, 4, "{args:?}: {o:#?}");
        assert!(o.stderr.contains("E_ACCESSDENIED"), "{}", o.stderr);
    }

    // Without the copy-on-write provider every change is 0x8004232F with a
    // hint.
    for (args, verb) in [
        (
            &["add", "volume", "/device=/dev/null", "/mount=/mnt/vss-x"][..],
            "add volume",
        ),
        (
            &["delete", "volume", "/for=/mnt/vss-x", "/quiet"],
            "delete volume",
        ),
        (
            &["add", "shadowstorage", "/for=/", "/on=/", "/maxsize=10%"],
            "add shadowstorage",
        ),
        (
            &["resize", "shadowstorage", "/for=/", "/on=/"],
            "resize shadowstorage",
        ),
        (
            &["delete", "shadowstorage", "/for=/", "/quiet"],
            "delete shadowstorage",
        ),
    ] {
        let o = d.vssadmin(args);
        assert_eq!(o.code, 1, "{args:?}: {o:#?}");
        assert!(
            o.stderr.contains("0x8004232F VSS_E_NOT_SUPPORTED"),
            "{}",
            o.stderr
        );
        assert!(o.stderr.contains(verb), "{}", o.stderr);
        assert!(o.stderr.contains("Hint: "), "{}", o.stderr);
    }
    let o = d.vssadmin(&[
        "add",
        "volume",
        "/device=/dev/null",
        "/mount=/mnt/vss-x",
        "--json",
    ]);
    assert_eq!(o.code, 1, "{o:#?}");
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["error"]["hresult"], "0x8004232F");
    // Without /quiet and without a terminal the answer is No: nothing sent.
    let o = d.vssadmin(&["delete", "volume", "/for=/mnt/vss-x"]);
    o.ok();
    assert!(o.stdout.contains("The volume was not deleted."), "{o:#?}");
    // Still serving.
    d.vssadmin(&["list", "writers"]).ok();
}
