//! `vssbackup exec`: any backup tool run against a consistent shadow (the
//! diskshadow `exec` model). The set is made with the writers, the shadows
//! exposed read-only, the command run with their paths, the components
//! marked succeeded exactly when it exits 0, BackupComplete sent, and the
//! shadows deleted unless kept.

use std::path::{Path, PathBuf};

use vss_client::{Client, SessionOptions};
use vss_types::documents::{BackupComponents, BackupType};
use vss_types::{SnapshotContext, VssError, VssResult};

use crate::backup::gather_writers;
use crate::files::normalize;
use crate::progress::{Event, Progress};
use crate::select::{self, Selection, Selector, WriterInfo};
use crate::shadows::{self, ExposedSet};

#[derive(Clone, Debug)]
pub struct ExecOptions {
    /// Paths whose volumes go into the set; `{}` / `{N}` in the command
    /// become their paths in the shadows.
    pub for_paths: Vec<PathBuf>,
    pub selectors: Vec<Selector>,
    /// Keep the shadows after the command (persistent, listed by
    /// `vssadmin list shadows`).
    pub keep: bool,
    pub backup_type: BackupType,
    pub command: Vec<String>,
    pub expose_base: PathBuf,
    /// Send the command's standard output to our standard error, so that
    /// ours stays machine-readable (`--json`).
    pub stdout_to_stderr: bool,
}

/// How the command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecReport {
    /// The command's exit code (128+signal when killed).
    pub exit_code: i32,
    pub snapshot_set_id: String,
    pub kept: bool,
}

/// Components on the volumes of `for_paths` (so that the applications
/// whose data lies there are consistent too).
fn components_on(writers: &[WriterInfo], volumes: &[String]) -> Vec<Selector> {
    let mut out = Vec::new();
    for w in writers {
        for c in &w.wmd.components {
            let on = c
                .files
                .iter()
                .chain(&c.database_files)
                .chain(&c.database_logfiles)
                .any(|f| {
                    let p = normalize(Path::new(
                        f.alternate_location.as_deref().unwrap_or(&f.path),
                    ));
                    volumes.iter().any(|v| p.starts_with(v))
                });
            if on && c.selectable {
                out.push(Selector::Component {
                    writer: Some(w.wmd.writer_name.clone()),
                    path: c.full_path(),
                });
            }
        }
    }
    out
}

/// Replaces `{}` with the first path and `{N}` with the N-th (1-based).
pub fn substitute(arg: &str, paths: &[String]) -> String {
    let mut out = arg.to_owned();
    for (i, p) in paths.iter().enumerate().rev() {
        out = out.replace(&format!("{{{}}}", i + 1), p);
    }
    if let Some(first) = paths.first() {
        out = out.replace("{}", first);
    }
    out
}

pub async fn exec(
    client: &Client,
    opts: &ExecOptions,
    progress: &mut dyn Progress,
) -> VssResult<ExecReport> {
    if opts.command.is_empty() {
        return Err(VssError::invalid_arg("no command to run").with_hint(
            "Write the command after `--`: vssbackup exec --for /srv -- restic backup {}",
        ));
    }
    if opts.for_paths.is_empty() && opts.selectors.is_empty() {
        return Err(VssError::invalid_arg("nothing to make shadow copies of")
            .with_hint("Name paths with --for PATH and/or writers with --writer NAME."));
    }
    let context = if opts.keep {
        SnapshotContext::ClientAccessibleWriters
    } else {
        SnapshotContext::Backup
    };
    let mut bc = client
        .backup_components(SessionOptions {
            context,
            backup_type: opts.backup_type.word().to_owned(),
            select_components: true,
        })
        .await?;
    let mut exposed: Option<ExposedSet> = None;
    let r = run(client, &mut bc, opts, progress, &mut exposed).await;
    if let Some(mut e) = exposed {
        e.release(client).await;
    }
    if r.is_err() {
        let _ = bc.abort_backup().await;
    }
    let _ = bc.end().await;
    r
}

async fn run(
    client: &Client,
    bc: &mut vss_client::BackupComponents,
    opts: &ExecOptions,
    progress: &mut dyn Progress,
    exposed_out: &mut Option<ExposedSet>,
) -> VssResult<ExecReport> {
    let writers = gather_writers(bc, progress).await?;
    let volumes_info = client.list_volumes().await?;
    let for_volumes: Vec<String> = shadows::volumes_for(&volumes_info, &opts.for_paths)?
        .into_iter()
        .map(|v| v.mount_point.clone())
        .collect();
    let selectors = if opts.selectors.is_empty() {
        components_on(&writers, &for_volumes)
    } else {
        opts.selectors.clone()
    };
    let sel = if selectors.is_empty() {
        Selection::default()
    } else {
        select::select(&writers, &selectors)?
    };
    for s in &sel.components {
        progress.event(Event::Component {
            key: select::component_key(
                &writers[s.writer].wmd.writer_name,
                &s.logical_path,
                &s.name,
            ),
            reason: format!("{:?}", s.reason).to_lowercase(),
            in_bcd: s.in_bcd,
        });
    }
    bc.bcd = sel.to_bcd(&writers, opts.backup_type)?.to_xml();
    progress.event(Event::Phase {
        phase: "prepare-for-backup".into(),
    });
    bc.prepare_for_backup().await?;
    let mut paths: Vec<PathBuf> = opts.for_paths.clone();
    for s in &sel.components {
        if let Some(c) = writers[s.writer].wmd.component(&s.logical_path, &s.name) {
            for f in c
                .files
                .iter()
                .chain(&c.database_files)
                .chain(&c.database_logfiles)
            {
                paths.push(PathBuf::from(
                    f.alternate_location.as_deref().unwrap_or(&f.path),
                ));
            }
        }
    }
    progress.event(Event::Phase {
        phase: "do-snapshot-set".into(),
    });
    let (set_id, props) = shadows::create_set(client, bc, &shadows::distinct(paths)).await?;
    let exposed = ExposedSet::expose(client, &opts.expose_base, set_id, &props).await?;
    let map = exposed.map();
    let mut env: Vec<(String, String)> = vec![("VSS_SHADOW_SET".into(), set_id.to_string())];
    for (i, r) in exposed.roots.iter().enumerate() {
        let n = i + 1;
        env.push((format!("VSS_SHADOW_{n}"), r.shadow.shadow_id.to_string()));
        env.push((format!("VSS_SHADOW_{n}_PATH"), r.root.display().to_string()));
        env.push((format!("VSS_SHADOW_{n}_VOLUME"), r.volume.clone()));
        progress.event(Event::Shadow {
            volume: r.volume.clone(),
            shadow_id: r.shadow.shadow_id.to_string(),
            read_at: r.root.display().to_string(),
        });
    }
    env.push(("VSS_SHADOW_COUNT".into(), exposed.roots.len().to_string()));
    *exposed_out = Some(exposed);
    let for_shadow: Vec<String> = opts
        .for_paths
        .iter()
        .filter_map(|p| {
            map.to_shadow(&normalize(p))
                .map(|(_, s)| s.display().to_string())
        })
        .collect();
    for (i, p) in for_shadow.iter().enumerate() {
        env.push((format!("VSS_PATH_{}", i + 1), p.clone()));
    }
    let argv: Vec<String> = opts
        .command
        .iter()
        .map(|a| substitute(a, &for_shadow))
        .collect();
    progress.event(Event::Phase {
        phase: format!("exec {}", argv.join(" ")),
    });
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]).envs(env);
    if opts.stdout_to_stderr {
        let fd = std::os::fd::AsFd::as_fd(&std::io::stderr())
            .try_clone_to_owned()
            .map_err(|e| VssError::new(vss_types::VssCode::Unexpected, e.to_string()))?;
        cmd.stdout(std::process::Stdio::from(fd));
    }
    let status = cmd.status().await.map_err(|e| {
        VssError::invalid_arg(format!("cannot run {}: {e}", argv[0]))
            .with_hint("Check the command name and that it is on PATH.")
    })?;
    let exit_code = status.code().unwrap_or_else(|| {
        128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
    });
    let ok = exit_code == 0;

    let mut bcd = BackupComponents::from_xml(&bc.bcd)?;
    for s in sel.components.iter().filter(|s| s.in_bcd) {
        let (wid, iid) = select::writer_ids(&writers, s.writer);
        bcd.set_backup_succeeded(wid, iid, &s.logical_path, &s.name, ok)?;
        if !ok {
            if let Some(c) = bcd.find_component_mut(wid, iid, &s.logical_path, &s.name) {
                c.backup_failure_message =
                    Some(format!("{} exited with status {exit_code}", argv[0]));
            }
        }
        progress.event(Event::ComponentResult {
            key: select::component_key(
                &writers[s.writer].wmd.writer_name,
                &s.logical_path,
                &s.name,
            ),
            succeeded: ok,
            message: (!ok).then(|| format!("{} exited with status {exit_code}", argv[0])),
        });
    }
    bc.bcd = bcd.to_xml();
    progress.event(Event::Phase {
        phase: "backup-complete".into(),
    });
    bc.backup_complete().await?;
    progress.event(Event::Done {
        succeeded: ok,
        summary: format!(
            "{} exited with status {exit_code}; shadow copies {}",
            argv[0],
            if opts.keep { "kept" } else { "deleted" }
        ),
    });
    Ok(ExecReport {
        exit_code,
        snapshot_set_id: set_id.to_string(),
        kept: opts.keep,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders() {
        let p = vec!["/s/0/data".to_string(), "/s/1/logs".to_string()];
        assert_eq!(substitute("{}", &p), "/s/0/data");
        assert_eq!(substitute("--x={2}", &p), "--x=/s/1/logs");
        assert_eq!(substitute("{1}:{}", &p), "/s/0/data:/s/0/data");
        assert_eq!(substitute("{}", &[]), "{}");
    }
}
