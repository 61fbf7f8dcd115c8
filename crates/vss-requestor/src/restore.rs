//! `vssbackup restore`: puts a backup's components back with the writers'
//! cooperation. Loads the saved documents, selects components for restore,
//! PreRestore, restores each component's files by its writer's restore
//! method, records the file restore status, PostRestore, and reports the
//! writers' state. Every restored file is checked against the manifest
//! before it replaces anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use vss_client::Client;
use vss_types::documents::{
    AlternateLocationMapping, BackupComponents, FileRestoreStatus, RestoreMethod, RestoreTarget,
    WriterMetadata,
};
use vss_types::{Guid, VssCode, VssError, VssResult};

use crate::archive::{self, ArchiveReader, EntryKind, ManifestEntry};
use crate::backup::{BackupSummary, ComponentSummary, BCD_DOCUMENT, SUMMARY_DOCUMENT};
use crate::files::{filespec_matches, normalize};
use crate::progress::{Event, Progress};

/// Where staged restores wait for the next boot (restore-at-reboot).
pub const DEFAULT_PENDING_FILE: &str = "/var/lib/vss/pending-restores.json";

#[derive(Clone, Debug)]
pub struct RestoreOptions {
    pub from: PathBuf,
    /// `--component` selectors (`[WRITER:]logical/path/name`); empty: every
    /// component that was backed up successfully, and the include paths.
    pub components: Vec<String>,
    /// Restore under this directory instead of the original locations.
    pub to: Option<PathBuf>,
    /// How services are stopped and started for the stop/start restore
    /// methods: the command is run as `CMD... stop SERVICE` and
    /// `CMD... start SERVICE` (default `systemctl`).
    pub service_control: Vec<String>,
    /// Where restore-at-reboot stages its list.
    pub pending_file: PathBuf,
}

/// Loaded documents of a backup.
pub struct LoadedBackup {
    pub reader: Box<dyn ArchiveReader>,
    pub summary: BackupSummary,
    pub bcd_xml: String,
    pub bcd: BackupComponents,
    /// Writer metadata by writer name.
    pub writers: BTreeMap<String, WriterMetadata>,
}

fn corrupt(what: &str, detail: impl std::fmt::Display) -> VssError {
    VssError::new(
        VssCode::CorruptXmlDocument,
        format!("the backup's {what} is damaged: {detail}"),
    )
    .with_hint("Run `vssbackup verify` on the backup; restore from another copy if it fails.")
}

/// Opens a backup and parses its documents.
pub fn load(from: &Path) -> VssResult<LoadedBackup> {
    let reader = archive::open(from).map_err(VssError::from)?;
    let summary_bytes = reader
        .document(SUMMARY_DOCUMENT)
        .ok_or_else(|| corrupt("summary", format!("{SUMMARY_DOCUMENT} is missing")))?;
    let summary: BackupSummary =
        serde_json::from_slice(&summary_bytes).map_err(|e| corrupt(SUMMARY_DOCUMENT, e))?;
    let bcd_xml = String::from_utf8(reader.document(BCD_DOCUMENT).ok_or_else(|| {
        corrupt(
            "backup components document",
            format!("{BCD_DOCUMENT} is missing"),
        )
    })?)
    .map_err(|e| corrupt(BCD_DOCUMENT, e))?;
    let bcd = BackupComponents::from_xml(&bcd_xml)?;
    let mut writers = BTreeMap::new();
    for w in &summary.writers {
        let bytes = reader
            .document(&w.document)
            .ok_or_else(|| corrupt("writer metadata", format!("{} is missing", w.document)))?;
        let text = String::from_utf8(bytes).map_err(|e| corrupt(&w.document, e))?;
        writers.insert(w.name.clone(), WriterMetadata::from_xml(&text)?);
    }
    Ok(LoadedBackup {
        reader,
        summary,
        bcd_xml,
        bcd,
        writers,
    })
}

/// What happened to one component.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentRestore {
    pub key: String,
    pub method: String,
    pub status: String,
    pub files: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RestoreReport {
    pub components: Vec<ComponentRestore>,
    pub includes_restored: u64,
    pub problems: Vec<String>,
    pub succeeded: bool,
}

/// A component chosen for restore: the BCD-level owner and the keys of
/// every component whose files go back with it.
struct Chosen<'a> {
    owner: &'a ComponentSummary,
    keys: BTreeSet<String>,
    subcomponents: Vec<&'a ComponentSummary>,
}

fn matches(selector: &str, c: &ComponentSummary) -> bool {
    let norm = |s: &str| s.replace('/', "\\").trim_matches('\\').to_owned();
    let full = vss_types::documents::full_path(&c.logical_path, &c.name);
    match selector.split_once(':') {
        Some((w, p)) => w == c.writer && norm(p) == full,
        None => norm(selector) == full,
    }
}

fn choose<'a>(summary: &'a BackupSummary, selectors: &[String]) -> VssResult<Vec<Chosen<'a>>> {
    let owners: Vec<&ComponentSummary> = summary.components.iter().filter(|c| c.in_bcd).collect();
    let mut chosen: Vec<Chosen> = Vec::new();
    let mut add = |owner: &'a ComponentSummary, only: Option<&'a ComponentSummary>| {
        let i = match chosen.iter().position(|c| c.owner.key == owner.key) {
            Some(i) => i,
            None => {
                chosen.push(Chosen {
                    owner,
                    keys: BTreeSet::new(),
                    subcomponents: Vec::new(),
                });
                chosen.len() - 1
            }
        };
        match only {
            None => {
                chosen[i].keys.extend(
                    summary
                        .components
                        .iter()
                        .filter(|c| c.owner == owner.key)
                        .map(|c| c.key.clone()),
                );
                chosen[i].keys.insert(owner.key.clone());
            }
            Some(sub) => {
                chosen[i].keys.insert(sub.key.clone());
                chosen[i].subcomponents.push(sub);
            }
        }
    };
    if selectors.is_empty() {
        for o in owners.iter().filter(|o| o.succeeded) {
            add(o, None);
        }
        return Ok(chosen);
    }
    for s in selectors {
        let hits: Vec<&ComponentSummary> = summary
            .components
            .iter()
            .filter(|c| matches(s, c))
            .collect();
        let c = match hits.as_slice() {
            [one] => *one,
            [] => {
                return Err(VssError::new(
                    VssCode::ObjectNotFound,
                    format!("the backup holds no component '{s}'"),
                )
                .with_hint("`vssbackup list BACKUP` shows its components."))
            }
            _ => {
                return Err(VssError::invalid_arg(format!(
                    "several components of the backup match '{s}'"
                ))
                .with_hint("Name the writer: --component WRITER:LOGICAL/PATH/NAME."))
            }
        };
        if !c.succeeded {
            return Err(VssError::new(
                VssCode::ObjectNotFound,
                format!(
                    "component {} was not backed up successfully{}",
                    c.key,
                    c.failure
                        .as_deref()
                        .map(|f| format!(" ({f})"))
                        .unwrap_or_default()
                ),
            )
            .with_hint("Restore it from another backup."));
        }
        let owner = owners
            .iter()
            .find(|o| o.key == c.owner)
            .copied()
            .unwrap_or(c);
        if owner.key == c.key {
            add(owner, None);
        } else {
            add(owner, Some(c));
        }
    }
    Ok(chosen)
}

/// Where `live` goes for a component restored to an alternate location by
/// the writer's mappings, if one matches.
fn mapped(maps: &[AlternateLocationMapping], live: &Path) -> Option<PathBuf> {
    maps.iter().find_map(|m| {
        let base = normalize(Path::new(&m.path));
        let rel = live.strip_prefix(&base).ok()?;
        let name = live.file_name()?.to_string_lossy();
        let dir_ok = m.recursive || rel.parent().is_none_or(|p| p.as_os_str().is_empty());
        (dir_ok && filespec_matches(&m.filespec, &name))
            .then(|| normalize(Path::new(&m.alternate_path)).join(rel))
    })
}

fn under(root: &Path, live: &Path) -> PathBuf {
    root.join(live.strip_prefix("/").unwrap_or(live))
}

fn service_cmd(ctl: &[String], verb: &str, service: &str) -> VssResult<()> {
    let (prog, args) = ctl
        .split_first()
        .ok_or_else(|| VssError::invalid_arg("empty service control command"))?;
    let st = Command::new(prog)
        .args(args)
        .arg(verb)
        .arg(service)
        .status()
        .map_err(|e| {
            VssError::new(
                VssCode::Unexpected,
                format!("cannot run `{prog} {verb} {service}`: {e}"),
            )
        })?;
    if st.success() {
        Ok(())
    } else {
        Err(VssError::new(
            VssCode::Unexpected,
            format!("`{prog} {verb} {service}` failed ({st})"),
        )
        .with_hint(format!("Check the service: `systemctl status {service}`.")))
    }
}

/// A staged restore waiting for the next boot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRestore {
    pub staged: PathBuf,
    pub target: PathBuf,
}

fn read_pending(file: &Path) -> Vec<PendingRestore> {
    std::fs::read(file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn write_pending(file: &Path, list: &[PendingRestore]) -> VssResult<()> {
    if let Some(d) = file.parent() {
        std::fs::create_dir_all(d).map_err(|e| io_err(&d.display().to_string(), e))?;
    }
    let tmp = file.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(list)
        .map_err(|e| VssError::new(VssCode::Unexpected, e.to_string()))?;
    std::fs::write(&tmp, bytes).map_err(|e| io_err(&tmp.display().to_string(), e))?;
    std::fs::rename(&tmp, file).map_err(|e| io_err(&file.display().to_string(), e))
}

fn io_err(what: &str, e: std::io::Error) -> VssError {
    VssError::new(VssCode::Unexpected, format!("{what}: {e}"))
}

/// Applies restores staged for the next boot (run early at boot, before
/// the services start: `vssbackup restore --complete-pending`). Returns
/// how many files were put in place.
pub fn complete_pending(file: &Path) -> VssResult<usize> {
    let list = read_pending(file);
    let mut left = Vec::new();
    let mut done = 0;
    for p in list {
        match std::fs::rename(&p.staged, &p.target) {
            Ok(()) => done += 1,
            Err(e) => {
                tracing::error!(staged = %p.staged.display(), target = %p.target.display(), error = %e, "cannot complete a staged restore");
                left.push(p);
            }
        }
    }
    write_pending(file, &left)?;
    Ok(done)
}

/// Runs the restore.
pub async fn restore(
    client: &Client,
    opts: &RestoreOptions,
    progress: &mut dyn Progress,
) -> VssResult<RestoreReport> {
    let mut b = load(&opts.from)?;
    let chosen = choose(&b.summary, &opts.components)?;
    let restore_includes = opts.components.is_empty();
    let mut report = RestoreReport::default();

    // The BCD as the writers will see it: components selected for restore,
    // their target, mappings.
    let mut bcd = b.bcd.clone();
    let writer_ids: BTreeMap<String, (Guid, Guid)> = b
        .writers
        .iter()
        .map(|(n, w)| (n.clone(), (w.writer_id, w.instance_id)))
        .collect();
    for c in &chosen {
        let Some(&(wid, iid)) = writer_ids.get(&c.owner.writer) else {
            continue;
        };
        let wmd = &b.writers[&c.owner.writer];
        let method = wmd
            .restore_method
            .as_ref()
            .map(|r| r.method)
            .unwrap_or_default();
        if let Some(bc) = bcd.find_component_mut(wid, iid, &c.owner.logical_path, &c.owner.name) {
            bc.selected_for_restore = true;
            bc.restore_target =
                if opts.to.is_some() || method == RestoreMethod::RestoreToAlternateLocation {
                    RestoreTarget::Alternate
                } else {
                    RestoreTarget::Original
                };
            if let Some(to) = &opts.to {
                let comp = wmd.component(&c.owner.logical_path, &c.owner.name);
                for f in comp.into_iter().flat_map(|x| {
                    x.files
                        .iter()
                        .chain(&x.database_files)
                        .chain(&x.database_logfiles)
                }) {
                    bc.alternate_location_mappings
                        .push(AlternateLocationMapping {
                            path: f.path.clone(),
                            filespec: f.filespec.clone(),
                            recursive: f.recursive,
                            alternate_path: under(to, Path::new(&f.path)).display().to_string(),
                        });
                }
            } else if method == RestoreMethod::RestoreToAlternateLocation {
                bc.alternate_location_mappings
                    .extend(wmd.alternate_location_mappings.iter().cloned());
            }
            for s in &c.subcomponents {
                bc.restore_subcomponents
                    .push(vss_types::documents::RestoreSubcomponent {
                        logical_path: s.logical_path.clone(),
                        name: s.name.clone(),
                    });
            }
        }
    }

    let has_components = !chosen.is_empty();
    let mut session = if has_components {
        let mut rc = client.restore_components(&bcd.to_xml()).await?;
        progress.event(Event::Phase {
            phase: "gather-writer-metadata".into(),
        });
        let live = rc.gather_writer_metadata().await?;
        for name in chosen
            .iter()
            .map(|c| &c.owner.writer)
            .collect::<BTreeSet<_>>()
        {
            if !live.iter().any(|e| &e.status.name == name) {
                progress.event(Event::Warning {
                    message: format!(
                        "writer '{name}' is not running; its components are restored without it (no PreRestore/PostRestore)"
                    ),
                });
            }
        }
        progress.event(Event::Phase {
            phase: "pre-restore".into(),
        });
        if let Err(e) = rc.pre_restore().await {
            progress.event(Event::Warning {
                message: format!("PreRestore failed: {e}"),
            });
            report.problems.push(format!("PreRestore: {e}"));
        }
        Some(rc)
    } else {
        None
    };
    // Writers may have refused components in PreRestore.
    let after_pre = match &session {
        Some(rc) => BackupComponents::from_xml(&rc.bcd).unwrap_or(bcd.clone()),
        None => bcd.clone(),
    };
    let failed_writers: BTreeSet<String> = match &session {
        Some(rc) => rc
            .gather_writer_status()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|w| w.state == vss_types::WriterState::FailedAtPreRestore)
            .map(|w| w.name)
            .collect(),
        None => BTreeSet::new(),
    };

    progress.event(Event::Phase {
        phase: "restore".into(),
    });
    let mut status: BTreeMap<String, FileRestoreStatus> = BTreeMap::new();
    // Services stopped for their components, started again after
    // PostRestore: a writer may have to finish the restored files (e.g.
    // write PostgreSQL's backup_label) before its service reads them.
    let mut to_start: Vec<String> = Vec::new();
    let manifest: Vec<ManifestEntry> = b.reader.manifest().to_vec();
    for c in &chosen {
        let wmd = &b.writers[&c.owner.writer];
        let rm = wmd.restore_method.clone().unwrap_or_default();
        let (wid, iid) = writer_ids[&c.owner.writer];
        let pre_msg = after_pre
            .find_component(wid, iid, &c.owner.logical_path, &c.owner.name)
            .and_then(|x| x.pre_restore_failure_message.clone());
        let mut result = ComponentRestore {
            key: c.owner.key.clone(),
            method: rm.method.symbol().to_owned(),
            status: String::new(),
            files: 0,
            message: None,
        };
        if failed_writers.contains(&c.owner.writer) || pre_msg.is_some() {
            result.status = FileRestoreStatus::None.symbol().into();
            result.message = Some(format!(
                "the writer refused it in PreRestore{}",
                pre_msg.map(|m| format!(": {m}")).unwrap_or_default()
            ));
            status.insert(c.owner.key.clone(), FileRestoreStatus::None);
            report.components.push(result);
            continue;
        }
        let maps = match rm.method {
            RestoreMethod::RestoreToAlternateLocation => wmd.alternate_location_mappings.clone(),
            _ => Vec::new(),
        };
        let target_of = |e: &ManifestEntry| -> PathBuf {
            let live = Path::new(&e.path);
            if let Some(to) = &opts.to {
                under(to, live)
            } else if let Some(p) = mapped(&maps, live) {
                p
            } else {
                live.to_path_buf()
            }
        };
        let entries: Vec<&ManifestEntry> = manifest
            .iter()
            .filter(|e| e.component.as_deref().is_some_and(|k| c.keys.contains(k)))
            .collect();
        // Restore if not there: nothing is restored if any file exists.
        if rm.method == RestoreMethod::RestoreIfNotThere {
            if let Some(e) = entries
                .iter()
                .find(|e| e.kind != EntryKind::Dir && target_of(e).symlink_metadata().is_ok())
            {
                result.status = FileRestoreStatus::None.symbol().into();
                result.message = Some(format!(
                    "{} exists; the restore method is restore-if-not-there",
                    target_of(e).display()
                ));
                status.insert(c.owner.key.clone(), FileRestoreStatus::None);
                report.components.push(result);
                continue;
            }
        }
        let service = rm.service.clone().filter(|s| !s.is_empty());
        let stop_first = rm.method == RestoreMethod::StopRestoreStart && opts.to.is_none();
        let stop_after = rm.method == RestoreMethod::RestoreStopStart && opts.to.is_none();
        if stop_first {
            if let Some(s) = &service {
                progress.event(Event::Phase {
                    phase: format!("stop {s}"),
                });
                if let Err(e) = service_cmd(&opts.service_control, "stop", s) {
                    result.status = FileRestoreStatus::None.symbol().into();
                    result.message = Some(e.to_string());
                    status.insert(c.owner.key.clone(), FileRestoreStatus::None);
                    report.components.push(result);
                    continue;
                }
            }
        }
        let at_reboot = rm.method == RestoreMethod::RestoreAtReboot && opts.to.is_none();
        let (ok, failed, first_failure) = extract(
            b.reader.as_mut(),
            &c.keys,
            &target_of,
            at_reboot,
            &opts.pending_file,
            progress,
        )?;
        if stop_first || stop_after {
            if let Some(s) = &service {
                if stop_after {
                    progress.event(Event::Phase {
                        phase: format!("stop {s}"),
                    });
                    if let Err(e) = service_cmd(&opts.service_control, "stop", s) {
                        report.problems.push(e.to_string());
                    }
                }
                if !to_start.contains(s) {
                    to_start.push(s.clone());
                }
            }
        }
        let st = match (ok, failed) {
            (_, 0) => FileRestoreStatus::All,
            (0, _) => FileRestoreStatus::None,
            _ => FileRestoreStatus::Failed,
        };
        result.status = st.symbol().into();
        result.files = ok;
        result.message = first_failure.or(if at_reboot {
            Some("files staged; they replace the live ones at the next boot (vss-restore-pending.service)".into())
        } else if rm.method == RestoreMethod::Custom {
            rm.user_procedure.clone().map(|p| format!("custom restore method: {p}"))
        } else {
            None
        });
        status.insert(c.owner.key.clone(), st);
        report.components.push(result);
    }

    // Crash-consistent paths.
    if restore_includes {
        let targets: BTreeSet<String> = b.summary.includes.iter().map(|i| i.path.clone()).collect();
        if !targets.is_empty() {
            let to = opts.to.clone();
            let target_of = |e: &ManifestEntry| -> PathBuf {
                let live = Path::new(&e.path);
                match &to {
                    Some(t) => under(t, live),
                    None => live.to_path_buf(),
                }
            };
            let none = BTreeSet::new();
            let (ok, failed, first) = extract(
                b.reader.as_mut(),
                &none,
                &target_of,
                false,
                &opts.pending_file,
                progress,
            )?;
            report.includes_restored = ok;
            if failed > 0 {
                report
                    .problems
                    .push(first.unwrap_or_else(|| format!("{failed} include files failed")));
            }
        }
    }

    // File restore status, PostRestore, writer status.
    if let Some(rc) = session.as_mut() {
        let mut doc = BackupComponents::from_xml(&rc.bcd).unwrap_or(after_pre);
        for c in &chosen {
            let (wid, iid) = writer_ids[&c.owner.writer];
            if let Some(x) = doc.find_component_mut(wid, iid, &c.owner.logical_path, &c.owner.name)
            {
                x.file_restore_status = status.get(&c.owner.key).copied().unwrap_or_default();
            }
        }
        rc.bcd = doc.to_xml();
        progress.event(Event::Phase {
            phase: "post-restore".into(),
        });
        if let Err(e) = rc.post_restore().await {
            report.problems.push(format!("PostRestore: {e}"));
        }
        if let Ok(done) = BackupComponents::from_xml(&rc.bcd) {
            for r in &mut report.components {
                let Some(c) = chosen.iter().find(|c| c.owner.key == r.key) else {
                    continue;
                };
                let (wid, iid) = writer_ids[&c.owner.writer];
                if let Some(m) = done
                    .find_component(wid, iid, &c.owner.logical_path, &c.owner.name)
                    .and_then(|x| x.post_restore_failure_message.clone())
                {
                    r.message = Some(format!("PostRestore: {m}"));
                    r.status = FileRestoreStatus::Failed.symbol().into();
                }
            }
        }
        for w in rc.gather_writer_status().await.unwrap_or_default() {
            progress.event(Event::Writer {
                name: w.name.clone(),
                state: w.state.to_string(),
                last_error: vss_types::last_error_text(w.last_error).to_owned(),
            });
        }
    }
    if let Some(rc) = session {
        let _ = rc.end().await;
    }
    for s in &to_start {
        progress.event(Event::Phase {
            phase: format!("start {s}"),
        });
        if let Err(e) = service_cmd(&opts.service_control, "start", s) {
            report.problems.push(e.to_string());
        }
    }
    for r in &report.components {
        progress.event(Event::ComponentResult {
            key: r.key.clone(),
            succeeded: r.status == FileRestoreStatus::All.symbol(),
            message: r.message.clone(),
        });
    }
    report.succeeded = report.problems.is_empty()
        && report.components.iter().all(|r| {
            r.status == FileRestoreStatus::All.symbol()
                && !r
                    .message
                    .as_deref()
                    .is_some_and(|m| m.starts_with("PostRestore"))
        });
    progress.event(Event::Done {
        succeeded: report.succeeded,
        summary: format!(
            "{} of {} components restored, {} include entries",
            report
                .components
                .iter()
                .filter(|r| r.status == FileRestoreStatus::All.symbol())
                .count(),
            report.components.len(),
            report.includes_restored
        ),
    });
    Ok(report)
}

/// Extracts the entries of components `keys` (or, with `keys` empty, the
/// crash-consistent entries). Returns (restored, failed, first failure).
fn extract(
    reader: &mut dyn ArchiveReader,
    keys: &BTreeSet<String>,
    target_of: &dyn Fn(&ManifestEntry) -> PathBuf,
    stage_for_reboot: bool,
    pending_file: &Path,
    progress: &mut dyn Progress,
) -> VssResult<(u64, u64, Option<String>)> {
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut first: Option<String> = None;
    let mut staged: Vec<PendingRestore> = Vec::new();
    let mut select = |e: &ManifestEntry| -> Option<PathBuf> {
        let mine = match &e.component {
            Some(k) => keys.contains(k),
            None => keys.is_empty(),
        };
        if !mine {
            return None;
        }
        let t = target_of(e);
        if stage_for_reboot && e.kind != EntryKind::Dir {
            let name = t.file_name()?.to_string_lossy().into_owned();
            let s = t.with_file_name(format!(".{name}.vss-pending"));
            staged.push(PendingRestore {
                staged: s.clone(),
                target: t,
            });
            Some(s)
        } else {
            Some(t)
        }
    };
    let mut done = |e: &ManifestEntry, at: &Path, r: Result<(), archive::FileError>| match r {
        Ok(()) => {
            ok += 1;
            progress.event(Event::File {
                path: at.display().to_string(),
                bytes: e.size,
                component: e.component.clone(),
                done_bytes: 0,
                total_bytes: 0,
            });
        }
        Err(err) => {
            failed += 1;
            first.get_or_insert_with(|| format!("{}: {}", err.path, err.reason));
            progress.event(Event::FileFailed {
                path: err.path.clone(),
                component: e.component.clone(),
                reason: err.reason.clone(),
            });
        }
    };
    reader
        .extract(&mut select, &mut done)
        .map_err(VssError::from)?;
    if !staged.is_empty() {
        let mut list = read_pending(pending_file);
        list.extend(staged);
        write_pending(pending_file, &list)?;
    }
    Ok((ok, failed, first))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comp(
        key_w: &str,
        lp: &str,
        name: &str,
        in_bcd: bool,
        owner: &str,
        ok: bool,
    ) -> ComponentSummary {
        ComponentSummary {
            key: crate::select::component_key(key_w, lp, name),
            writer: key_w.into(),
            logical_path: lp.into(),
            name: name.into(),
            in_bcd,
            owner: owner.into(),
            reason: "selected".into(),
            succeeded: ok,
            failure: (!ok).then(|| "x: permission denied".into()),
            files: 1,
            bytes: 1,
        }
    }

    fn summary() -> BackupSummary {
        BackupSummary {
            format: 1,
            created_unix_ms: 0,
            host: String::new(),
            backup_type: "full".into(),
            snapshot_set_id: String::new(),
            shadows: vec![],
            writers: vec![],
            components: vec![
                comp("W", "", "db", true, "W:db", true),
                comp("W", "db", "log", false, "W:db", true),
                comp("W", "", "bad", true, "W:bad", false),
            ],
            includes: vec![],
            succeeded: false,
        }
    }

    #[test]
    fn default_takes_successful_sets_with_their_subcomponents() {
        let s = summary();
        let c = choose(&s, &[]).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(
            c[0].keys.iter().cloned().collect::<Vec<_>>(),
            vec!["W:db", "W:db\\log"]
        );
    }

    #[test]
    fn selectors() {
        let s = summary();
        let c = choose(&s, &["W:db/log".into()]).unwrap();
        assert_eq!(c[0].owner.key, "W:db");
        assert_eq!(c[0].keys.len(), 1);
        assert_eq!(c[0].subcomponents.len(), 1);
        let e = choose(&s, &["bad".into()]).err().unwrap();
        assert!(e.to_string().contains("permission denied"));
        let e = choose(&s, &["nope".into()]).err().unwrap();
        assert_eq!(e.code, VssCode::ObjectNotFound);
    }

    #[test]
    fn mappings() {
        let m = vec![AlternateLocationMapping {
            path: "/srv/db".into(),
            filespec: "*.db".into(),
            recursive: false,
            alternate_path: "/restore/db".into(),
        }];
        assert_eq!(
            mapped(&m, Path::new("/srv/db/a.db")),
            Some(PathBuf::from("/restore/db/a.db"))
        );
        assert_eq!(mapped(&m, Path::new("/srv/db/sub/a.db")), None);
        assert_eq!(mapped(&m, Path::new("/srv/db/a.txt")), None);
        assert_eq!(
            under(Path::new("/alt"), Path::new("/srv/x")),
            PathBuf::from("/alt/srv/x")
        );
    }

    #[test]
    fn pending_restores_complete() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("pending.json");
        let staged = t.path().join(".a.vss-pending");
        std::fs::write(&staged, "new").unwrap();
        std::fs::write(t.path().join("a"), "old").unwrap();
        write_pending(
            &f,
            &[PendingRestore {
                staged,
                target: t.path().join("a"),
            }],
        )
        .unwrap();
        assert_eq!(complete_pending(&f).unwrap(), 1);
        assert_eq!(std::fs::read_to_string(t.path().join("a")).unwrap(), "new");
        assert!(read_pending(&f).is_empty());
    }
}
