//! `vssbackup backup`: an application-consistent backup of the selected
//! components (and crash-consistent `--include` paths), read from shadow
//! copies, with per-component success and the documents a restore needs.
//!
//! Order, as the VSS backup sequence has it: gather writer metadata,
//! select, PrepareForBackup, the snapshot set (writers freeze and thaw),
//! then — only now — the file list, built from the shadows; the copy;
//! SetBackupSucceeded per component; BackupComplete; and the documents
//! saved last, since writers may change the BCD after the snapshot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vss_client::{Client, SessionOptions};
use vss_types::documents::{BackupComponents, BackupType, WmComponent};
use vss_types::{Guid, SnapshotContext, VssCode, VssError, VssResult};

use crate::archive::{self, Added, ArchiveWriter};
use crate::files::{Exclusions, Plan};
use crate::progress::{Event, Progress};
use crate::select::{self, component_key, Selection, Selector, WriterInfo};
use crate::shadows::{self, ExposedSet};

/// Names of the documents in a backup.
pub const BCD_DOCUMENT: &str = "backup-components.xml";
pub const SUMMARY_DOCUMENT: &str = "backup.json";
pub const WRITERS_DIR: &str = "writers";

/// The document name of a writer's metadata in a backup.
pub fn writer_document(name: &str, instance_id: Guid) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "{WRITERS_DIR}/{safe}.{}.xml",
        instance_id.to_string().trim_matches(['{', '}'])
    )
}

#[derive(Clone, Debug)]
pub struct BackupOptions {
    /// A directory (new or empty) or a `.tar.zst` file (new).
    pub dest: PathBuf,
    pub selectors: Vec<Selector>,
    /// Paths backed up crash-consistent, from the shadows too.
    pub includes: Vec<PathBuf>,
    pub backup_type: BackupType,
    /// Where the shadows are exposed while read.
    pub expose_base: PathBuf,
}

/// `backup.json`: what the backup holds, for `list`, `verify` and
/// `restore`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSummary {
    pub format: u32,
    pub created_unix_ms: i64,
    pub host: String,
    pub backup_type: String,
    pub snapshot_set_id: String,
    pub shadows: Vec<ShadowSummary>,
    pub writers: Vec<WriterSummary>,
    pub components: Vec<ComponentSummary>,
    pub includes: Vec<IncludeSummary>,
    /// Every selected component succeeded and every include was read.
    pub succeeded: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowSummary {
    pub shadow_id: String,
    pub volume: String,
    pub volume_name: String,
    pub provider_id: String,
    pub created_unix_ms: i64,
    pub hold_micros: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterSummary {
    pub name: String,
    pub writer_id: String,
    pub instance_id: String,
    /// The writer's metadata document in this backup.
    pub document: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentSummary {
    /// `WRITER:logical\path\name`, as in the manifest.
    pub key: String,
    pub writer: String,
    pub logical_path: String,
    pub name: String,
    /// In the BCD (set tops and selected components); others are
    /// subcomponents recorded under their set's top.
    pub in_bcd: bool,
    /// The BCD component this one's success is recorded on.
    pub owner: String,
    pub reason: String,
    pub succeeded: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    pub files: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncludeSummary {
    pub path: String,
    /// Always `crash-consistent`: no writer vouched for the data.
    pub consistency: String,
    pub files: u64,
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

pub const SUMMARY_FORMAT: u32 = 1;

/// Asks each writer for its metadata and parses it. A writer whose
/// document does not parse is left out with a warning.
pub async fn gather_writers(
    bc: &mut vss_client::BackupComponents,
    progress: &mut dyn Progress,
) -> VssResult<Vec<WriterInfo>> {
    progress.event(Event::Phase {
        phase: "gather-writer-metadata".into(),
    });
    let entries = bc.gather_writer_metadata().await?;
    let mut out = Vec::new();
    for e in entries {
        match vss_types::documents::WriterMetadata::from_xml(&e.wmd) {
            Ok(wmd) => out.push(WriterInfo {
                status: e.status,
                wmd,
                wmd_xml: e.wmd,
            }),
            Err(err) => progress.event(Event::Warning {
                message: format!(
                    "writer '{}' sent metadata that does not parse and is left out: {err}",
                    e.status.name
                ),
            }),
        }
    }
    Ok(out)
}

fn component_of<'a>(writers: &'a [WriterInfo], s: &select::SelectedComponent) -> &'a WmComponent {
    writers[s.writer]
        .wmd
        .component(&s.logical_path, &s.name)
        .expect("selected from these writers")
}

/// Every live path a selection and the includes read under, for choosing
/// the volumes of the set.
fn paths_needed(writers: &[WriterInfo], sel: &Selection, includes: &[PathBuf]) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    for s in &sel.components {
        let c = component_of(writers, s);
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
    paths.extend(includes.iter().cloned());
    shadows::distinct(paths)
}

/// Checks the destination before any shadow is made.
fn check_dest(dest: &Path) -> VssResult<()> {
    let is_tar = dest.to_string_lossy().ends_with(".tar.zst");
    match std::fs::symlink_metadata(dest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(VssError::invalid_arg(format!("{}: {e}", dest.display()))),
        Ok(m) if !is_tar && m.is_dir() => {
            let empty = std::fs::read_dir(dest)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if empty {
                Ok(())
            } else {
                Err(VssError::new(
                    VssCode::ObjectAlreadyExists,
                    format!("{} exists and is not empty", dest.display()),
                )
                .with_hint("Back up into a new or empty directory, or a new .tar.zst file."))
            }
        }
        Ok(_) => Err(VssError::new(
            VssCode::ObjectAlreadyExists,
            format!("{} already exists", dest.display()),
        )
        .with_hint("Back up into a new or empty directory, or a new .tar.zst file.")),
    }
}

/// The result of a backup: its summary (also saved in it).
#[derive(Clone, Debug)]
pub struct BackupReport {
    pub summary: BackupSummary,
    pub dest: PathBuf,
}

/// Runs the whole backup. Returns the report also when components failed
/// (see `summary.succeeded`); an `Err` means no usable backup was made.
pub async fn backup(
    client: &Client,
    opts: &BackupOptions,
    progress: &mut dyn Progress,
) -> VssResult<BackupReport> {
    check_dest(&opts.dest)?;
    let mut bc = client
        .backup_components(SessionOptions {
            context: SnapshotContext::Backup,
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
    // Ending the session releases the (non-persistent) shadows.
    let _ = bc.end().await;
    r
}

async fn run(
    client: &Client,
    bc: &mut vss_client::BackupComponents,
    opts: &BackupOptions,
    progress: &mut dyn Progress,
    exposed_out: &mut Option<ExposedSet>,
) -> VssResult<BackupReport> {
    let writers = gather_writers(bc, progress).await?;
    // Only includes: a crash-consistent backup with no writer components.
    let sel = if opts.selectors.is_empty() && !opts.includes.is_empty() {
        Selection::default()
    } else {
        select::select(&writers, &opts.selectors)?
    };
    for s in &sel.components {
        progress.event(Event::Component {
            key: key_of(&writers, s),
            reason: format!("{:?}", s.reason).to_lowercase(),
            in_bcd: s.in_bcd,
        });
    }
    let bcd = sel.to_bcd(&writers, opts.backup_type)?;
    bc.bcd = bcd.to_xml();
    progress.event(Event::Phase {
        phase: "prepare-for-backup".into(),
    });
    bc.prepare_for_backup().await?;
    let paths = paths_needed(&writers, &sel, &opts.includes);
    progress.event(Event::Phase {
        phase: "do-snapshot-set".into(),
    });
    let (set_id, shadow_props) = shadows::create_set(client, bc, &paths).await?;
    let exposed = ExposedSet::expose(client, &opts.expose_base, set_id, &shadow_props).await?;
    for r in &exposed.roots {
        progress.event(Event::Shadow {
            volume: r.volume.clone(),
            shadow_id: r.shadow.shadow_id.to_string(),
            read_at: r.root.display().to_string(),
        });
    }
    let map = exposed.map();
    *exposed_out = Some(exposed);

    // The file list, from the shadows.
    let excl = Exclusions::new(
        writers
            .iter()
            .flat_map(|w| w.wmd.excluded_files.iter().cloned()),
    );
    let mut comp_plans: Vec<Plan> = Vec::new();
    for s in &sel.components {
        let c = component_of(&writers, s);
        let mut plan = Plan::default();
        for f in c
            .files
            .iter()
            .chain(&c.database_files)
            .chain(&c.database_logfiles)
        {
            plan.add_file_set(f, &map, &excl);
        }
        comp_plans.push(plan);
    }
    let mut inc_plans: Vec<Plan> = Vec::new();
    for p in &opts.includes {
        let mut plan = Plan::default();
        plan.add_include(p, &map, &excl);
        inc_plans.push(plan);
    }
    let total_bytes: u64 = comp_plans
        .iter()
        .chain(&inc_plans)
        .flat_map(|p| &p.entries)
        .filter(|e| !e.is_dir)
        .filter_map(|e| std::fs::symlink_metadata(&e.source).ok())
        .map(|m| m.len())
        .sum();
    let total_entries: usize = comp_plans
        .iter()
        .chain(&inc_plans)
        .map(|p| p.entries.len())
        .sum();
    progress.event(Event::Planned {
        entries: total_entries as u64,
        bytes: total_bytes,
    });
    for p in comp_plans.iter().chain(&inc_plans) {
        for m in &p.mount_points_skipped {
            progress.event(Event::Skipped {
                path: m.display().to_string(),
                reason: "another filesystem is mounted here; mount points are not entered".into(),
            });
        }
    }

    // The copy.
    progress.event(Event::Phase {
        phase: "copy".into(),
    });
    let mut writer = archive::create(&opts.dest).map_err(VssError::from)?;
    let keys: Vec<String> = sel.components.iter().map(|s| key_of(&writers, s)).collect();
    let mut copy = Copier {
        writer: writer.as_mut(),
        progress,
        done: 0,
        total: total_bytes,
        seen: BTreeMap::new(),
    };
    let mut comp_results: Vec<(bool, Option<String>, u64, u64)> = Vec::new();
    for (i, plan) in comp_plans.iter().enumerate() {
        comp_results.push(copy.component(plan, Some(&keys[i])));
    }
    let mut includes = Vec::new();
    for (p, plan) in opts.includes.iter().zip(&inc_plans) {
        let (ok, failure, files, bytes) = copy.component(plan, None);
        let mut problems: Vec<String> = plan
            .problems
            .iter()
            .map(|x| format!("{}: {}", x.path, x.reason))
            .collect();
        if let (false, Some(f)) = (ok, failure) {
            if !problems.contains(&f) {
                problems.push(f);
            }
        }
        includes.push(IncludeSummary {
            path: p.display().to_string(),
            consistency: "crash-consistent".into(),
            files,
            bytes,
            problems,
        });
    }
    drop(copy);

    // SetBackupSucceeded, on the BCD components (a subcomponent's failure
    // fails its set's top).
    let mut bcd = BackupComponents::from_xml(&bc.bcd)?;
    let mut owner_failure: BTreeMap<String, String> = BTreeMap::new();
    for (i, s) in sel.components.iter().enumerate() {
        if let (false, Some(f)) = (&comp_results[i].0, &comp_results[i].1) {
            let owner = key_of(&writers, sel.bcd_owner(s));
            owner_failure.entry(owner).or_insert_with(|| {
                if sel.bcd_owner(s) == s {
                    f.clone()
                } else {
                    format!("subcomponent {}: {f}", keys[i])
                }
            });
        }
    }
    for s in sel.components.iter().filter(|s| s.in_bcd) {
        let (wid, iid) = select::writer_ids(&writers, s.writer);
        let failure = owner_failure.get(&key_of(&writers, s)).cloned();
        bcd.set_backup_succeeded(wid, iid, &s.logical_path, &s.name, failure.is_none())?;
        if let Some(c) = bcd.find_component_mut(wid, iid, &s.logical_path, &s.name) {
            c.backup_failure_message = failure;
        }
    }
    bc.bcd = bcd.to_xml();
    progress.event(Event::Phase {
        phase: "backup-complete".into(),
    });
    bc.backup_complete().await?;
    // GatherWriterStatus: how each writer came out of the sequence.
    for w in bc.gather_writer_status().await.unwrap_or_default() {
        progress.event(Event::Writer {
            name: w.name.clone(),
            state: w.state.to_string(),
            last_error: vss_types::last_error_text(w.last_error).to_owned(),
        });
    }

    // The summary and the documents, last.
    let mut components = Vec::new();
    for (i, s) in sel.components.iter().enumerate() {
        let owner = key_of(&writers, sel.bcd_owner(s));
        let owner_failed = owner_failure.get(&owner).cloned();
        let (ok, failure, files, bytes) = comp_results[i].clone();
        let succeeded = ok && owner_failed.is_none();
        let failure = failure.or(owner_failed);
        progress.event(Event::ComponentResult {
            key: keys[i].clone(),
            succeeded,
            message: failure.clone(),
        });
        components.push(ComponentSummary {
            key: keys[i].clone(),
            writer: writers[s.writer].wmd.writer_name.clone(),
            logical_path: s.logical_path.clone(),
            name: s.name.clone(),
            in_bcd: s.in_bcd,
            owner,
            reason: format!("{:?}", s.reason).to_lowercase(),
            succeeded,
            failure,
            files,
            bytes,
        });
    }
    let mut writer_summaries = Vec::new();
    for wi in sel.writers() {
        let w = &writers[wi];
        let doc = writer_document(&w.wmd.writer_name, w.wmd.instance_id);
        writer
            .add_document(&doc, w.wmd_xml.as_bytes())
            .map_err(VssError::from)?;
        writer_summaries.push(WriterSummary {
            name: w.wmd.writer_name.clone(),
            writer_id: w.wmd.writer_id.to_string(),
            instance_id: w.wmd.instance_id.to_string(),
            document: doc,
        });
    }
    let exposed = exposed_out.as_ref().expect("exposed above");
    let summary = BackupSummary {
        format: SUMMARY_FORMAT,
        created_unix_ms: exposed
            .roots
            .first()
            .map(|r| r.shadow.created_unix_ms)
            .unwrap_or_default(),
        host: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default(),
        backup_type: opts.backup_type.word().to_owned(),
        snapshot_set_id: set_id.to_string(),
        shadows: exposed
            .roots
            .iter()
            .map(|r| ShadowSummary {
                shadow_id: r.shadow.shadow_id.to_string(),
                volume: r.volume.clone(),
                volume_name: r.shadow.original_volume_name.clone(),
                provider_id: r.shadow.provider_id.to_string(),
                created_unix_ms: r.shadow.created_unix_ms,
                hold_micros: r.shadow.hold_micros,
            })
            .collect(),
        writers: writer_summaries,
        succeeded: components.iter().all(|c| c.succeeded)
            && includes.iter().all(|i| i.problems.is_empty()),
        components,
        includes,
    };
    writer
        .add_document(BCD_DOCUMENT, bc.bcd.as_bytes())
        .map_err(VssError::from)?;
    let json = serde_json::to_vec_pretty(&summary)
        .map_err(|e| VssError::new(VssCode::Unexpected, e.to_string()))?;
    writer
        .add_document(SUMMARY_DOCUMENT, &json)
        .map_err(VssError::from)?;
    writer.finish().map_err(VssError::from)?;
    progress.event(Event::Done {
        succeeded: summary.succeeded,
        summary: format!(
            "{} of {} components backed up, {} include paths",
            summary.components.iter().filter(|c| c.succeeded).count(),
            summary.components.len(),
            summary.includes.len()
        ),
    });
    Ok(BackupReport {
        summary,
        dest: opts.dest.clone(),
    })
}

fn key_of(writers: &[WriterInfo], s: &select::SelectedComponent) -> String {
    component_key(&writers[s.writer].wmd.writer_name, &s.logical_path, &s.name)
}

struct Copier<'a> {
    writer: &'a mut dyn ArchiveWriter,
    progress: &'a mut dyn Progress,
    done: u64,
    total: u64,
    /// Live paths already stored (a file in two components or in a
    /// component and an include is stored once, under the first).
    seen: BTreeMap<PathBuf, Option<String>>,
}

impl Copier<'_> {
    /// Copies one plan. Returns (all ok, first failure "path: reason",
    /// files, bytes).
    fn component(&mut self, plan: &Plan, key: Option<&str>) -> (bool, Option<String>, u64, u64) {
        let mut failure: Option<String> = plan
            .problems
            .first()
            .map(|p| format!("{}: {}", p.path, p.reason));
        for p in &plan.problems {
            self.progress.event(Event::FileFailed {
                path: p.path.clone(),
                component: key.map(Into::into),
                reason: p.reason.clone(),
            });
        }
        let (mut files, mut bytes) = (0u64, 0u64);
        // Directories after their content would also do; the archive
        // applies directory metadata after extraction either way.
        for e in &plan.entries {
            if self.seen.contains_key(&e.live) {
                continue;
            }
            let live = e.live.to_string_lossy();
            match self.writer.add(&live, &e.source, key) {
                Ok(Added::Stored(m)) => {
                    self.seen.insert(e.live.clone(), key.map(Into::into));
                    if !e.is_dir {
                        files += 1;
                        bytes += m.size;
                        self.done += m.size;
                    }
                    self.progress.event(Event::File {
                        path: m.path,
                        bytes: m.size,
                        component: key.map(Into::into),
                        done_bytes: self.done,
                        total_bytes: self.total.max(self.done),
                    });
                }
                Ok(Added::Skipped { path, reason }) => {
                    self.progress.event(Event::Skipped { path, reason });
                }
                Err(err) => {
                    self.progress.event(Event::FileFailed {
                        path: err.path.clone(),
                        component: key.map(Into::into),
                        reason: err.reason.clone(),
                    });
                    failure.get_or_insert_with(|| format!("{}: {}", err.path, err.reason));
                }
            }
        }
        (failure.is_none(), failure, files, bytes)
    }
}
