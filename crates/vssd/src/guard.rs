//! The hold watchdog: a separate process that thaws the set's filesystems
//! when the hold limit passes or when vssd dies, whichever comes first.
//! Being a process of its own, it works even when vssd is stuck in a
//! provider call or killed with SIGKILL.
//!
//! Protocol on its stdin/stdout: vssd writes one JSON line
//! `{"set":…, "mounts":[…], "limit_ms":N}`; the watchdog answers `ARMED`;
//! vssd writes `DONE` when it has thawed everything itself. EOF on stdin
//! before `DONE` (vssd died) or the deadline passing makes the watchdog thaw
//! every mount at once.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vss_core::{Armed, WriteHold};
use vss_types::{Guid, VssCode, VssError, VssResult};

#[derive(Serialize, Deserialize)]
struct ArmRequest {
    set: String,
    mounts: Vec<String>,
    limit_ms: u64,
}

/// The real flush-and-hold: FIFREEZE/FITHAW and the watchdog process.
pub struct SystemHold;

impl WriteHold for SystemHold {
    fn arm(&self, set_id: Guid, mounts: &[String], limit: Duration) -> VssResult<Box<dyn Armed>> {
        let fail = |e: &dyn std::fmt::Display| {
            VssError::new(
                VssCode::Unexpected,
                format!("cannot start the hold watchdog: {e}"),
            )
        };
        let exe = std::env::current_exe().map_err(|e| fail(&e))?;
        let mut child = Command::new(exe)
            .arg("--hold-watchdog")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| fail(&e))?;
        let mut stdin = child.stdin.take().ok_or_else(|| fail(&"no stdin"))?;
        let stdout = child.stdout.take().ok_or_else(|| fail(&"no stdout"))?;
        let req = ArmRequest {
            set: set_id.to_string(),
            mounts: mounts.to_vec(),
            limit_ms: limit.as_millis() as u64,
        };
        let line = serde_json::to_string(&req).map_err(|e| fail(&e))?;
        writeln!(stdin, "{line}").map_err(|e| fail(&e))?;
        stdin.flush().map_err(|e| fail(&e))?;
        let mut ack = String::new();
        BufReader::new(stdout)
            .read_line(&mut ack)
            .map_err(|e| fail(&e))?;
        if ack.trim() != "ARMED" {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(&format!("unexpected answer {ack:?}")));
        }
        Ok(Box::new(ArmedWatchdog {
            child,
            stdin: Some(stdin),
        }))
    }

    fn freeze(&self, mount: &str) -> std::io::Result<()> {
        vss_sys::freeze(Path::new(mount))
    }

    fn thaw(&self, mount: &str) -> std::io::Result<bool> {
        vss_sys::thaw(Path::new(mount))
    }
}

struct ArmedWatchdog {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Armed for ArmedWatchdog {
    fn disarm(mut self: Box<Self>) {
        if let Some(mut s) = self.stdin.take() {
            let _ = writeln!(s, "DONE");
            let _ = s.flush();
        }
        let _ = self.child.wait();
    }
}

impl Drop for ArmedWatchdog {
    fn drop(&mut self) {
        // Closing stdin without DONE makes the watchdog thaw: the safe way.
        self.stdin.take();
        let _ = self.child.try_wait();
    }
}

/// The watchdog process's main (`vssd --hold-watchdog`).
pub fn watchdog_main() -> i32 {
    vss_sys::ignore_termination_signals();
    let mut lines = BufReader::new(std::io::stdin());
    let mut first = String::new();
    if lines.read_line(&mut first).unwrap_or(0) == 0 {
        return 2;
    }
    let req: ArmRequest = match serde_json::from_str(first.trim()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vssd hold watchdog: bad request: {e}");
            return 2;
        }
    };
    let deadline = Instant::now() + Duration::from_millis(req.limit_ms);
    let (tx, rx) = mpsc::channel::<bool>();
    std::thread::spawn(move || {
        let mut line = String::new();
        loop {
            line.clear();
            match lines.read_line(&mut line) {
                Ok(0) | Err(_) => {
                    let _ = tx.send(false);
                    return;
                }
                Ok(_) if line.trim() == "DONE" => {
                    let _ = tx.send(true);
                    return;
                }
                Ok(_) => {}
            }
        }
    });
    println!("ARMED");
    let _ = std::io::stdout().flush();
    let wait = deadline.saturating_duration_since(Instant::now());
    let reason = match rx.recv_timeout(wait) {
        Ok(true) => return 0,
        Ok(false) | Err(mpsc::RecvTimeoutError::Disconnected) => {
            "vssd went away while holding writes"
        }
        Err(mpsc::RecvTimeoutError::Timeout) => "the hold limit passed",
    };
    for m in &req.mounts {
        match vss_sys::thaw(Path::new(m)) {
            Ok(true) => eprintln!(
                "vssd hold watchdog: set {}: {reason}; thawed {m} (VSS_E_HOLD_WRITES_TIMEOUT 0x80042314)",
                req.set
            ),
            Ok(false) => {}
            Err(e) => eprintln!("vssd hold watchdog: set {}: cannot thaw {m}: {e}", req.set),
        }
    }
    1
}
