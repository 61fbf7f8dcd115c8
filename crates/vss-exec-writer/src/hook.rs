//! Running one hook command: a clean environment, its own process group,
//! captured (bounded) output, a time limit that kills the whole group, and
//! the exit status turned into a VSS writer error.

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinHandle;
use vss_types::{VssCode, VssError, VssResult};

use crate::config::{HookConfig, HookEvent};

/// The `PATH` hooks get (the service's own environment is not passed on).
pub const HOOK_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// Exit status by which a hook asks for a retry (`EX_TEMPFAIL`).
pub const EXIT_RETRYABLE: i32 = 75;

/// How much of each of stdout and stderr is kept (the end of it).
pub const OUTPUT_CAP: usize = 64 * 1024;

/// Longest stderr quote in an error message.
const QUOTE_CHARS: usize = 300;

/// After the hook exits, how long to wait for its output pipes to close;
/// a process it left running may hold them open forever.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// Everything a hook run needs besides the command.
#[derive(Clone, Debug)]
pub(crate) struct HookContext<'a> {
    pub writer: &'a str,
    pub source: &'a str,
    pub event: HookEvent,
    /// `VSS_*` variables.
    pub env: Vec<(String, String)>,
}

/// The end of a stream, at most [`OUTPUT_CAP`] bytes of it.
#[derive(Default)]
struct Tail {
    buf: Vec<u8>,
    dropped: usize,
}

impl Tail {
    fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        // Trim in batches so a chatty hook costs amortised O(1) per byte.
        if self.buf.len() > 2 * OUTPUT_CAP {
            self.trim();
        }
    }

    fn trim(&mut self) {
        if self.buf.len() > OUTPUT_CAP {
            let cut = self.buf.len() - OUTPUT_CAP;
            self.buf.drain(..cut);
            self.dropped += cut;
        }
    }

    fn text(&mut self) -> String {
        self.trim();
        String::from_utf8_lossy(&self.buf).into_owned()
    }
}

/// Reads a pipe into a shared tail until EOF; shared so what was read
/// survives the reader being abandoned.
fn pump(mut r: impl AsyncRead + Unpin + Send + 'static, tail: Arc<Mutex<Tail>>) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        let mut chunk = vec![0u8; 8192];
        loop {
            match r.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => tail
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(&chunk[..n]),
            }
        }
    }))
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Kills the hook's process group unless disarmed: if the caller stops
/// waiting (the coordinator's deadline dropped the future), nothing the
/// hook started is left running.
struct GroupGuard {
    pgid: Option<Pid>,
}

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pg) = self.pgid.take() {
            // ESRCH (already gone) is fine.
            let _ = killpg(pg, Signal::SIGKILL);
        }
    }

    fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pg) = self.pgid {
            tracing::warn!(
                pgid = pg.as_raw(),
                "hook abandoned before it finished; killing its process group"
            );
        }
        self.kill();
    }
}

/// The passwd entry of a hook's `user`, looked up off the async threads
/// (NSS may be slow).
async fn lookup_user(name: &str) -> VssResult<nix::unistd::User> {
    let n = name.to_owned();
    let r = tokio::task::spawn_blocking(move || nix::unistd::User::from_name(&n))
        .await
        .map_err(|e| VssError::new(VssCode::Unexpected, format!("user lookup task failed: {e}")))?;
    match r {
        Ok(Some(u)) => Ok(u),
        Ok(None) => Err(VssError::new(
            VssCode::WriterErrorNonRetryable,
            format!("the hook's user '{name}' does not exist"),
        )),
        Err(e) => Err(VssError::new(
            VssCode::WriterErrorNonRetryable,
            format!("cannot look up the hook's user '{name}': {e}"),
        )),
    }
}

/// Runs the hook; `Ok` on exit status 0.
pub(crate) async fn run(hook: &HookConfig, cx: &HookContext<'_>) -> VssResult<()> {
    let prog = hook.program();
    let event = cx.event;
    let hint_file = format!(
        "See the hook's output in the journal (`journalctl -u vssd`); the hook is `hooks.{}` in {}.",
        event.config_key(),
        cx.source
    );
    let Some((program, args)) = hook.command.split_first() else {
        return Err(VssError::new(
            VssCode::WriterErrorNonRetryable,
            format!("{event} hook has an empty command"),
        )
        .with_hint(hint_file));
    };

    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", HOOK_PATH)
        .env("LANG", "C.UTF-8")
        .envs(cx.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so a timeout kills whatever the hook started.
        .process_group(0)
        .kill_on_drop(true);
    if let Some(user) = &hook.user {
        let u = lookup_user(user)
            .await
            .map_err(|e| e.with_hint(hint_file.clone()))?;
        // std drops supplementary groups when it changes the uid as root;
        // setting the user's own would need pre_exec (unsafe), so the hook
        // runs with its uid and primary gid only.
        cmd.uid(u.uid.as_raw())
            .gid(u.gid.as_raw())
            .env("HOME", &u.dir)
            .env("USER", &u.name)
            .env("LOGNAME", &u.name);
    }

    let mut child = cmd.spawn().map_err(|e| {
        let what = if e.kind() == std::io::ErrorKind::NotFound {
            format!("{event} hook: cannot run `{prog}`: no such program")
        } else {
            format!("{event} hook: cannot run `{prog}`: {e}")
        };
        tracing::warn!(writer = cx.writer, event = %event, program = prog, "{what}");
        VssError::new(VssCode::WriterErrorNonRetryable, what).with_hint(format!(
            "Check that `{prog}` exists and is executable (and that the service may switch to the hook's user, if one is set). {hint_file}"
        ))
    })?;
    let pid = child.id();
    let mut guard = GroupGuard {
        pgid: pid.map(|p| Pid::from_raw(p as i32)),
    };
    tracing::debug!(writer = cx.writer, event = %event, program = prog, pid, "hook started");

    let out = Arc::new(Mutex::new(Tail::default()));
    let err = Arc::new(Mutex::new(Tail::default()));
    let out_reader = child.stdout.take().map(|s| pump(s, out.clone()));
    let err_reader = child.stderr.take().map(|s| pump(s, err.clone()));

    let limit = hook.timeout();
    let waited = tokio::time::timeout(limit, child.wait()).await;
    let status: Option<std::io::Result<ExitStatus>> = match waited {
        Ok(s) => {
            // Processes the hook left behind are its business (e.g. a
            // daemon it restarted); only a timeout kills the group.
            guard.disarm();
            Some(s)
        }
        Err(_) => {
            guard.kill();
            // In case the hook left its group (setsid): the child itself.
            let _ = child.start_kill();
            let _ = child.wait().await;
            None
        }
    };

    // Collect the output; give up on pipes something still holds open.
    for reader in [out_reader, err_reader].into_iter().flatten() {
        let mut reader = reader;
        if tokio::time::timeout(OUTPUT_GRACE, &mut reader.0)
            .await
            .is_err()
        {
            tracing::warn!(writer = cx.writer, event = %event, program = prog,
                "a process started by the hook still holds its output open; no longer reading it");
        }
    }
    let (stdout, out_dropped) = take(&out);
    let (stderr, err_dropped) = take(&err);
    log_output(cx, prog, "stdout", &stdout, out_dropped);
    log_output(cx, prog, "stderr", &stderr, err_dropped);

    let quote = quote_stderr(&stderr);
    let Some(status) = status else {
        let e = VssError::new(
            VssCode::WriterErrorTimeout,
            format!(
                "{event} hook `{prog}` did not finish within its timeout of {} s and was killed with its process group{}",
                limit.as_secs(),
                with_quote(&quote)
            ),
        )
        .with_hint(format!(
            "Find out why the hook is slow, or raise `timeout-secs` of `hooks.{}` in {}, then restart vssd.",
            event.config_key(),
            cx.source
        ));
        tracing::warn!(writer = cx.writer, event = %event, program = prog, "{}", e.message);
        return Err(e);
    };
    let status = status.map_err(|e| {
        VssError::new(
            VssCode::WriterErrorNonRetryable,
            format!("{event} hook `{prog}`: waiting for it failed: {e}"),
        )
    })?;
    let e = match (status.code(), status.signal()) {
        (Some(0), _) => {
            tracing::info!(writer = cx.writer, event = %event, program = prog, "hook succeeded");
            return Ok(());
        }
        (Some(EXIT_RETRYABLE), _) => VssError::new(
            VssCode::WriterErrorRetryable,
            format!(
                "{event} hook `{prog}` exited with status {EXIT_RETRYABLE} (temporary failure){}",
                with_quote(&quote)
            ),
        )
        .with_hint(format!(
            "The hook reports a transient problem: retry the backup later. {hint_file}"
        )),
        (Some(code), _) => VssError::new(
            VssCode::WriterErrorNonRetryable,
            format!(
                "{event} hook `{prog}` exited with status {code}{}",
                with_quote(&quote)
            ),
        )
        .with_hint(format!(
            "Fix what the hook reports, then retry. {hint_file}"
        )),
        (None, Some(sig)) => {
            let name = Signal::try_from(sig)
                .map(|s| s.as_str())
                .unwrap_or("unknown signal");
            VssError::new(
                VssCode::WriterErrorNonRetryable,
                format!(
                    "{event} hook `{prog}` was killed by signal {sig} ({name}){}",
                    with_quote(&quote)
                ),
            )
            .with_hint(format!(
                "Something killed the hook; find out what, then retry. {hint_file}"
            ))
        }
        (None, None) => VssError::new(
            VssCode::WriterErrorNonRetryable,
            format!(
                "{event} hook `{prog}` ended with {status}{}",
                with_quote(&quote)
            ),
        )
        .with_hint(hint_file),
    };
    tracing::warn!(writer = cx.writer, event = %event, program = prog, code = %e.code, "{}", e.message);
    Err(e)
}

fn take(t: &Mutex<Tail>) -> (String, usize) {
    let mut t = t.lock().unwrap_or_else(|e| e.into_inner());
    let s = t.text();
    (s, t.dropped)
}

fn log_output(cx: &HookContext<'_>, prog: &str, stream: &str, text: &str, dropped: usize) {
    let text = text.trim_end();
    if text.is_empty() {
        return;
    }
    tracing::info!(
        writer = cx.writer,
        event = %cx.event,
        program = prog,
        stream,
        dropped_bytes = dropped,
        "hook {stream}:\n{text}"
    );
}

fn with_quote(q: &str) -> String {
    if q.is_empty() {
        " (no error output)".to_owned()
    } else {
        format!(": {q}")
    }
}

/// The last line(s) of stderr on one line, at most [`QUOTE_CHARS`]
/// characters, control characters replaced: error messages are shown in
/// one-line contexts (vssadmin, the journal, D-Bus error texts).
pub(crate) fn quote_stderr(stderr: &str) -> String {
    let lines: Vec<String> = stderr
        .lines()
        .map(|l| {
            l.trim()
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect::<String>()
        })
        .filter(|l| !l.is_empty())
        .collect();
    let mut picked: Vec<&str> = Vec::new();
    let mut len = 0;
    for l in lines.iter().rev().take(3) {
        let n = l.chars().count() + if picked.is_empty() { 0 } else { 3 };
        if len + n > QUOTE_CHARS {
            break;
        }
        len += n;
        picked.push(l);
    }
    if picked.is_empty() {
        // The last line alone is too long: keep its end.
        return match lines.last() {
            Some(l) => {
                let n = l.chars().count();
                let tail: String = l.chars().skip(n.saturating_sub(QUOTE_CHARS - 1)).collect();
                format!("…{tail}")
            }
            None => String::new(),
        };
    }
    picked.reverse();
    picked.join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_last_lines() {
        assert_eq!(quote_stderr(""), "");
        assert_eq!(quote_stderr("  \n\n"), "");
        assert_eq!(quote_stderr("a\nb\n  c  \n"), "a | b | c");
        assert_eq!(quote_stderr("1\n2\n3\n4\n"), "2 | 3 | 4");
        assert_eq!(quote_stderr("bell\x07here"), "bell here");
        let long = "x".repeat(1000);
        let q = quote_stderr(&format!("first\n{long}"));
        assert_eq!(q.chars().count(), QUOTE_CHARS);
        assert!(q.starts_with('…'));
        let mid = "y".repeat(200);
        let q = quote_stderr(&format!("{mid}\n{mid}\nlast"));
        assert_eq!(q, format!("{mid} | last"));
    }

    #[test]
    fn tail_keeps_the_end() {
        let mut t = Tail::default();
        for _ in 0..10 {
            t.push(&[b'a'; 30_000]);
        }
        t.push(b"END");
        let s = t.text();
        assert_eq!(s.len(), OUTPUT_CAP);
        assert!(s.ends_with("END"));
        assert_eq!(t.dropped, 300_003 - OUTPUT_CAP);
    }
}
