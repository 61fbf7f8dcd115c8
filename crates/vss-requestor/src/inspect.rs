//! `vssbackup verify` and `vssbackup list`: what a backup holds, and
//! whether it is intact (every file against the manifest, every document
//! parses and agrees with the manifest).

use std::collections::BTreeSet;
use std::path::Path;

use serde::Serialize;
use vss_types::VssResult;

use crate::archive::{EntryKind, VerifyProblem};
use crate::backup::BackupSummary;
use crate::restore::load;

#[derive(Clone, Debug, Serialize)]
pub struct VerifyOutcome {
    pub files_checked: u64,
    pub bytes_checked: u64,
    pub documents_checked: usize,
    pub problems: Vec<Problem>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub problem: String,
}

impl VerifyOutcome {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl From<VerifyProblem> for Problem {
    fn from(p: VerifyProblem) -> Self {
        Problem {
            path: p.path,
            problem: p.problem,
        }
    }
}

/// Checks a backup. Documents that do not load are an `Err` (the backup
/// cannot be restored); damaged files are problems in the outcome.
pub fn verify(from: &Path) -> VssResult<VerifyOutcome> {
    let mut b = load(from)?;
    let report = b.reader.verify().map_err(vss_types::VssError::from)?;
    let mut problems: Vec<Problem> = report.problems.into_iter().map(Into::into).collect();
    // The manifest and the summary agree on the components.
    let known: BTreeSet<&str> = b
        .summary
        .components
        .iter()
        .map(|c| c.key.as_str())
        .collect();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for e in b.reader.manifest() {
        if let Some(k) = &e.component {
            if !known.contains(k.as_str()) {
                problems.push(Problem {
                    path: e.path.clone(),
                    problem: format!("belongs to component {k}, which the summary does not list"),
                });
            }
            if e.kind == EntryKind::File {
                seen.insert(k.clone());
            }
        }
    }
    for c in &b.summary.components {
        if c.files > 0 && !seen.contains(&c.key) {
            problems.push(Problem {
                path: c.key.clone(),
                problem: format!("the summary lists {} files, the manifest none", c.files),
            });
        }
    }
    // The BCD names the components the summary calls BCD components.
    for c in b.summary.components.iter().filter(|c| c.in_bcd) {
        let in_doc = b.bcd.writers.iter().any(|w| {
            w.components
                .iter()
                .any(|x| x.logical_path == c.logical_path && x.name == c.name)
        });
        if !in_doc {
            problems.push(Problem {
                path: c.key.clone(),
                problem: "missing from backup-components.xml".into(),
            });
        }
    }
    Ok(VerifyOutcome {
        files_checked: report.files_checked,
        bytes_checked: report.bytes_checked,
        documents_checked: 2 + b.writers.len(),
        problems,
    })
}

/// What `list` shows: the summary plus entry counts.
#[derive(Clone, Debug, Serialize)]
pub struct Listing {
    pub summary: BackupSummary,
    pub entries: usize,
    pub files: usize,
    pub bytes: u64,
    pub documents: Vec<String>,
}

pub fn list(from: &Path) -> VssResult<Listing> {
    let b = load(from)?;
    let m = b.reader.manifest();
    Ok(Listing {
        entries: m.len(),
        files: m.iter().filter(|e| e.kind == EntryKind::File).count(),
        bytes: m.iter().map(|e| e.size).sum(),
        documents: b.reader.document_names(),
        summary: b.summary,
    })
}

/// `list` as text.
pub fn render_listing(l: &Listing) -> String {
    let s = &l.summary;
    let mut out = String::new();
    out += &format!(
        "Backup of {} ({} backup), snapshot set {}\n",
        if s.host.is_empty() { "?" } else { &s.host },
        s.backup_type,
        s.snapshot_set_id
    );
    out += &format!(
        "Created: {} (unix ms)   Files: {}   Bytes: {}   Outcome: {}\n",
        s.created_unix_ms,
        l.files,
        l.bytes,
        if s.succeeded {
            "succeeded"
        } else {
            "FAILED (see below)"
        }
    );
    for sh in &s.shadows {
        out += &format!(
            "  Shadow {} of {} (held {:.1} ms)\n",
            sh.shadow_id,
            sh.volume,
            sh.hold_micros as f64 / 1000.0
        );
    }
    if !s.components.is_empty() {
        out += "Components (application-consistent):\n";
        for c in &s.components {
            out += &format!(
                "  {:<50} {:>6} files {:>12} bytes  {}{}\n",
                c.key,
                c.files,
                c.bytes,
                if c.succeeded { "ok" } else { "FAILED" },
                c.failure
                    .as_deref()
                    .map(|f| format!(": {f}"))
                    .unwrap_or_default()
            );
        }
    }
    if !s.includes.is_empty() {
        out += "Paths (crash-consistent):\n";
        for i in &s.includes {
            out += &format!(
                "  {:<50} {:>6} files {:>12} bytes  {}\n",
                i.path,
                i.files,
                i.bytes,
                if i.problems.is_empty() {
                    "ok".to_owned()
                } else {
                    format!("PROBLEMS: {}", i.problems.join("; "))
                }
            );
        }
    }
    out
}
