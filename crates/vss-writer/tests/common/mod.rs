//! Test helpers: a private `dbus-daemon` and a fake vssd serving
//! `org.vss.WriterHost1`.
//!
//! Tests run in parallel threads of one process, so nothing here touches
//! the process environment: in-process writers get the bus address through
//! `RunOptions::bus_address`, child processes through their own
//! `DBUS_SYSTEM_BUS_ADDRESS`.

// Each test crate uses a different part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;
use tokio::sync::mpsc;
use zbus::message::Header;
use zbus::proxy::CacheProperties;
use zbus::zvariant::OwnedObjectPath;
use zbus::Connection;

use vss_dbus::proxies::WriterProxy;
use vss_dbus::{SERVICE_NAME, SERVICE_PATH};
use vss_types::Guid;

pub const DBUS_DAEMON: &str = "/usr/bin/dbus-daemon";

/// A private system bus: a `dbus-daemon` on a socket in a temp dir, killed
/// when dropped.
pub struct TestBus {
    child: Child,
    /// Kept open so the daemon never writes to a closed pipe.
    _stdout: BufReader<ChildStdout>,
    pub address: String,
    pub dir: TempDir,
}

impl TestBus {
    pub fn start() -> TestBus {
        let dir = tempfile::tempdir().expect("temp dir for the test bus");
        let socket = dir.path().join("bus");
        let config = dir.path().join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow receive_type="*"/>
    <allow send_type="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )
        .expect("write the test bus config");
        let stderr_path = dir.path().join("dbus-daemon.log");
        let stderr = std::fs::File::create(&stderr_path).expect("dbus-daemon log file");
        let mut child = Command::new(DBUS_DAEMON)
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {DBUS_DAEMON}: {e}. Install Debian's `dbus-daemon` package.")
            });
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap_or(0) == 0 {
            let _ = child.kill();
            let status = child.wait();
            let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            panic!("{DBUS_DAEMON} printed no address (exit: {status:?}): {log}");
        }
        TestBus {
            child,
            _stdout: stdout,
            address: line.trim().to_string(),
            dir,
        }
    }

    /// A new connection to the bus.
    pub async fn connect(&self) -> Connection {
        zbus::connection::Builder::address(self.address.as_str())
            .expect("bus address")
            .build()
            .await
            .expect("connect to the test bus")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for TestBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the fake vssd saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostEvent {
    Registered(Registration),
    Unregistered(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    pub name: String,
    pub writer_id: String,
    pub path: String,
    /// The writer connection's unique name.
    pub sender: String,
    /// The id the fake host answered with.
    pub instance_id: String,
}

struct HostIface {
    events: mpsc::UnboundedSender<HostEvent>,
}

#[zbus::interface(name = "org.vss.WriterHost1")]
impl HostIface {
    async fn register_writer(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        name: String,
        writer_id: String,
        object_path: OwnedObjectPath,
    ) -> String {
        let instance_id = Guid::new_random().to_string();
        let _ = self.events.send(HostEvent::Registered(Registration {
            name,
            writer_id,
            path: object_path.to_string(),
            sender: hdr.sender().map(|s| s.to_string()).unwrap_or_default(),
            instance_id: instance_id.clone(),
        }));
        instance_id
    }

    async fn unregister_writer(&self, instance_id: String) {
        let _ = self.events.send(HostEvent::Unregistered(instance_id));
    }
}

/// A stand-in for vssd: owns `org.vss.Vssd`, serves `org.vss.WriterHost1`
/// at `/org/vss/Vssd`, records what writers do and calls them back.
pub struct FakeHost {
    pub conn: Connection,
    events: mpsc::UnboundedReceiver<HostEvent>,
}

impl FakeHost {
    pub async fn start(bus: &TestBus) -> FakeHost {
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = zbus::connection::Builder::address(bus.address.as_str())
            .expect("bus address")
            .serve_at(SERVICE_PATH, HostIface { events: tx })
            .expect("serve the fake host")
            .name(SERVICE_NAME)
            .expect("name")
            .build()
            .await
            .expect("start the fake vssd");
        FakeHost { conn, events: rx }
    }

    /// The next thing a writer did, waiting at most `within`.
    pub async fn next_event(&mut self, within: Duration) -> HostEvent {
        tokio::time::timeout(within, self.events.recv())
            .await
            .unwrap_or_else(|_| panic!("no writer registered or unregistered within {within:?}"))
            .expect("host event channel")
    }

    pub async fn next_registration(&mut self, within: Duration) -> Registration {
        match self.next_event(within).await {
            HostEvent::Registered(r) => r,
            other => panic!("expected a registration, got {other:?}"),
        }
    }

    /// Fails if anything arrives within `within`.
    pub async fn expect_quiet(&mut self, within: Duration) {
        if let Ok(Some(e)) = tokio::time::timeout(within, self.events.recv()).await {
            panic!("unexpected host event {e:?}");
        }
    }

    /// A proxy for calling a registered writer, as vssd does.
    pub async fn writer(&self, reg: &Registration) -> WriterProxy<'static> {
        WriterProxy::builder(&self.conn)
            .destination(reg.sender.clone())
            .expect("sender name")
            .path(reg.path.clone())
            .expect("object path")
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .expect("writer proxy")
    }

    /// Gives up `org.vss.Vssd` and closes the connection, like vssd exiting.
    pub async fn stop(self) {
        let _ = self.conn.release_name(SERVICE_NAME).await;
        let _ = self.conn.close().await;
    }
}

/// The D-Bus error name and message of a failed call.
pub fn dbus_error(e: &zbus::Error) -> (String, String) {
    match e {
        zbus::Error::MethodError(name, msg, _) => {
            (name.to_string(), msg.clone().unwrap_or_default())
        }
        other => panic!("expected a D-Bus method error, got {other:?}"),
    }
}

/// Waits until the file holds at least `n` lines, returns them.
pub async fn wait_for_lines(path: &Path, n: usize, within: Duration) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let lines: Vec<String> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        if lines.len() >= n {
            return lines;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "{} has {} lines after {within:?}, expected {n}: {lines:?}",
                path.display(),
                lines.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A child process killed when dropped (tests may panic half-way).
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// Sends SIGTERM and waits (up to `within`) for the exit status.
    pub async fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let pid = self.0.id().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "cannot send SIGTERM to {pid}");
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = self.0.try_wait().expect("wait for child") {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "process {pid} did not exit within {within:?} of SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An example program of this crate, built by `cargo test` next to the
/// test executables (`target/<profile>/examples/`).
pub fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/examples/<name>
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|p| p.join("examples").join(name))
        .expect("target directory layout");
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test -p vss-writer` (which builds the \
         examples), or build it first with `cargo build -p vss-writer --example {name}`",
        path.display()
    );
    path
}

/// The workspace root (for files outside this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("workspace root")
        .to_path_buf()
}

/// The namespace the example writers (Rust `noop_writer` and the Python
/// writer) derive their writer id from: UUIDv5 of the name.
pub const EXAMPLE_WRITER_ID_NAMESPACE: Guid =
    Guid::from_u128(0x6d1f_43a8_0c1e_4c4b_9b7e_5a3f_2c10_e7d2);

/// Drives an example writer process (`noop_writer` or the Python writer:
/// both take `--name --log --freeze-sleep-ms --fail-at`) through a backup
/// against a fake vssd on a private bus: it must wait for vssd, register,
/// answer every event, let an Abort through while Freeze sleeps, veto Thaw
/// (`fail_at` is `Thaw` or `Thaw:KIND`) with `expected_error`, register
/// again when vssd restarts, and unregister on SIGTERM.
pub async fn exercise_writer_process(
    program: &Path,
    pre_args: &[&str],
    name: &str,
    fail_at: &str,
    expected_error: &str,
) {
    const FREEZE_MS: u64 = 2000;
    let bus = TestBus::start();
    let log = bus.path("events.log");
    let mut child = ChildGuard(
        Command::new(program)
            .args(pre_args)
            .args(["--name", name, "--freeze-sleep-ms", &FREEZE_MS.to_string()])
            .args(["--fail-at", fail_at])
            .arg("--log")
            .arg(&log)
            // Only the child sees the private bus as its system bus.
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display())),
    );

    // vssd is not there yet: the writer must wait for it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "the writer exited while vssd was missing"
    );
    let mut host = FakeHost::start(&bus).await;
    let reg = host.next_registration(Duration::from_secs(15)).await;
    assert_eq!(reg.name, name);
    let writer_id = Guid::derived(EXAMPLE_WRITER_ID_NAMESPACE, name.as_bytes()).to_string();
    assert_eq!(reg.writer_id, writer_id);
    assert_eq!(reg.path, vss_dbus::DEFAULT_WRITER_PATH);

    let w = host.writer(&reg).await;
    let set = Guid::new_random().to_string();
    let wmd = w.identify().await.expect("Identify");
    assert!(wmd.contains(&format!(r#"friendlyName="{name}""#)), "{wmd}");
    assert!(wmd.contains(&format!(r#"writerId="{writer_id}""#)), "{wmd}");
    assert_eq!(
        w.prepare_for_backup(&set, "<BCD/>").await.unwrap(),
        "<BCD/>"
    );
    w.prepare_for_snapshot(&set, &["/mnt/a", "/mnt/b"])
        .await
        .expect("PrepareForSnapshot");

    // Freeze sleeps; Abort must be answered meanwhile.
    let freeze = tokio::spawn({
        let w = w.clone();
        let set = set.clone();
        async move { w.freeze(&set).await }
    });
    let lines = wait_for_lines(&log, 4, Duration::from_secs(5)).await;
    assert_eq!(lines[3], "Freeze");
    let t0 = std::time::Instant::now();
    tokio::time::timeout(Duration::from_millis(FREEZE_MS / 2), w.abort(&set))
        .await
        .expect("Abort answered while Freeze sleeps")
        .expect("Abort");
    assert!(
        !freeze.is_finished(),
        "Freeze returned early ({:?})",
        t0.elapsed()
    );
    tokio::time::timeout(Duration::from_secs(10), freeze)
        .await
        .expect("Freeze finished")
        .unwrap()
        .expect("Freeze");

    let err = w.thaw(&set).await.expect_err("Thaw must be vetoed");
    let (error_name, message) = dbus_error(&err);
    assert_eq!(error_name, expected_error);
    assert!(message.contains(name), "{message}");

    assert_eq!(w.post_snapshot(&set, "<B2/>").await.unwrap(), "<B2/>");
    assert_eq!(w.backup_complete(&set, "<B3/>").await.unwrap(), "<B3/>");
    w.backup_shutdown(&set).await.expect("BackupShutdown");

    // vssd restarts: the writer registers again by itself.
    host.stop().await;
    let mut host = FakeHost::start(&bus).await;
    let again = host.next_registration(Duration::from_secs(5)).await;
    assert_eq!(again.writer_id, writer_id);
    assert_ne!(again.instance_id, reg.instance_id);
    host.writer(&again)
        .await
        .identify()
        .await
        .expect("Identify after restart");

    // SIGTERM: unregister, then exit cleanly.
    let status = child.terminate(Duration::from_secs(10)).await;
    assert_eq!(
        host.next_event(Duration::from_secs(5)).await,
        HostEvent::Unregistered(again.instance_id)
    );
    assert!(status.success(), "writer exit status {status}");

    let lines = wait_for_lines(&log, 10, Duration::from_secs(1)).await;
    assert_eq!(
        lines,
        [
            "Identify",
            "PrepareForBackup",
            "PrepareForSnapshot",
            "Freeze",
            "Abort",
            "Thaw",
            "PostSnapshot",
            "BackupComplete",
            "BackupShutdown",
            "Identify",
        ]
    );
}
