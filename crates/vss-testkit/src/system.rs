//! System-test harness: a private `dbus-daemon` standing in for the system
//! bus, and vssd started on it with a config of the test's own.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Directory holding the workspace's built binaries (`target/debug`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/debug/deps/test-binary → target/debug
    let dir = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("test binary is in target/<profile>/deps")
        .to_path_buf();
    dir
}

/// Path of a workspace binary or example; panics with what to run when it
/// has not been built.
pub fn bin(name: &str) -> PathBuf {
    for cand in [bin_dir().join(name), bin_dir().join("examples").join(name)] {
        if cand.exists() {
            return cand;
        }
    }
    panic!(
        "{name} is not built in {}: run `cargo build --workspace --bins --examples` before the system tests",
        bin_dir().display()
    )
}

/// The workspace root (for examples/ and scripts).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(|p| p.parent())
        .expect("workspace root")
        .to_path_buf()
}

/// A private bus daemon configured like a system bus that lets every local
/// user connect (the service does its own authorization).
pub struct Bus {
    pub dir: TempDir,
    pub address: String,
    child: Child,
}

impl Bus {
    pub fn start() -> Bus {
        let dir = tempfile::Builder::new()
            .prefix("vss-bus-")
            .tempdir()
            .expect("tempdir");
        // Reachable by the unprivileged users some tests run as.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let sock = dir.path().join("system_bus_socket");
        let conf = dir.path().join("bus.conf");
        std::fs::write(
            &conf,
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
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_type="*"/>
  </policy>
</busconfig>
"#,
                sock.display()
            ),
        )
        .unwrap();
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .arg("--nofork")
            .arg("--print-address")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("dbus-daemon must be installed (Debian package dbus-daemon)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line.trim().to_string();
        assert!(!address.is_empty(), "dbus-daemon printed no address");
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777)).ok();
        Bus {
            dir,
            address,
            child,
        }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// vssd running on a private bus with its own state and config.
pub struct Daemon {
    pub state: TempDir,
    pub config: PathBuf,
    pub address: String,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    /// Starts vssd with `extra_config` appended to a config that puts state
    /// and writers.d in a temp dir, and waits until it owns its bus name.
    pub fn start(bus: &Bus, extra_config: &str) -> Daemon {
        Self::start_with_writers(bus, extra_config, Path::new(""))
    }

    /// Like [`Daemon::start`], copying the `*.toml` writer declarations of
    /// `writers_from` (if not empty) into its writers.d first.
    pub fn start_with_writers(bus: &Bus, extra_config: &str, writers_from: &Path) -> Daemon {
        let state = tempfile::Builder::new()
            .prefix("vssd-state-")
            .tempdir()
            .unwrap();
        let writers = state.path().join("writers.d");
        std::fs::create_dir_all(&writers).unwrap();
        if !writers_from.as_os_str().is_empty() {
            for e in std::fs::read_dir(writers_from).unwrap() {
                let p = e.unwrap().path();
                if p.extension().is_some_and(|x| x == "toml") {
                    std::fs::copy(&p, writers.join(p.file_name().unwrap())).unwrap();
                }
            }
        }
        let config = state.path().join("vss.toml");
        std::fs::write(
            &config,
            format!(
                "state-dir = \"{}\"\nwriters-dir = \"{}\"\n{extra_config}\n",
                state.path().join("state").display(),
                writers.display()
            ),
        )
        .unwrap();
        let mut d = Daemon {
            log: state.path().join("vssd.log"),
            state,
            config,
            address: bus.address.clone(),
            child: None,
        };
        d.spawn();
        d
    }

    pub fn writers_dir(&self) -> PathBuf {
        self.state.path().join("writers.d")
    }

    /// (Re)starts the vssd process with the same state and config.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(bin("vssd"))
            .arg("--config")
            .arg(&self.config)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .env_remove("JOURNAL_STREAM")
            .env("VSS_LOG", "debug")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start vssd");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("vssd exited early ({st}); log:\n{}", self.log_text());
                }
            }
            // NameHasOwner rather than `busctl status`, which also reads the
            // owner's cgroup and fails where there is none (the VM lane).
            let out = Command::new("busctl")
                .args([
                    "--address",
                    &self.address,
                    "call",
                    "org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus",
                    "NameHasOwner",
                    "s",
                    "org.vss.Vssd",
                ])
                .stderr(Stdio::null())
                .output();
            if out.is_ok_and(|o| o.status.success() && o.stdout.starts_with(b"b true")) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "vssd did not come up within 20 s; log:\n{}",
            self.log_text()
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Runs vssadmin against this daemon.
    pub fn vssadmin(&self, args: &[&str]) -> Output {
        self.run(Command::new(bin("vssadmin")).args(args))
    }

    /// `busctl call` of an `org.vss.Requestor1` method: `args` are the
    /// method name, its signature and its arguments.
    pub fn call_requestor(&self, args: &[&str]) -> Output {
        self.run(
            Command::new("busctl")
                .args([
                    "--address",
                    &self.address,
                    "call",
                    "org.vss.Vssd",
                    "/org/vss/Vssd",
                    "org.vss.Requestor1",
                ])
                .args(args),
        )
    }

    /// Runs any command with this daemon's bus in its environment.
    pub fn run(&self, cmd: &mut Command) -> Output {
        let o = cmd
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .env("TZ", "UTC")
            .stdin(Stdio::null())
            .output()
            .expect("run command");
        Output {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- vssd log ----\n{}", self.log_text());
        }
    }
}

/// What a command printed and how it exited.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "command failed: {self:#?}");
        self
    }

    /// The `Shadow Copy ID: {…}` printed by `create shadow`.
    pub fn shadow_id(&self) -> String {
        self.stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix("Shadow Copy ID: "))
            .unwrap_or_else(|| panic!("no shadow id in {self:#?}"))
            .to_string()
    }
}

/// Waits until `f` is true or `timeout` passes.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    f()
}
