//! How a restore session addresses writers with the Backup Components
//! Document (BCD) a backup saved: which writer instance gets PreRestore and
//! PostRestore, the part of the document each one sees, and how its answer
//! is taken back.
//!
//! A writer gets an event only for a section of the document with at least
//! one component selected for restore (VSS: writers whose components are
//! not being restored are left alone). The section names the instance that
//! was backed up; a writer restarted since has a new instance id, so a
//! section without an exact match goes to a live instance of the same
//! writer class (the BCD records no writer names). The writer sees only
//! its own section, addressed to its current instance id, as a Windows
//! writer sees only its own components; what it changes is taken back into
//! the section under the id the document had.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vss_types::documents::{BackupComponents, WriterComponents};
use vss_types::{Guid, VssCode, VssError, VssResult, WriterState};

use crate::writers::WriterInstance;

/// The two restore events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreEvent {
    PreRestore,
    PostRestore,
}

impl RestoreEvent {
    /// The event's name, as the writer interface names it.
    pub fn name(self) -> &'static str {
        match self {
            RestoreEvent::PreRestore => "PreRestore",
            RestoreEvent::PostRestore => "PostRestore",
        }
    }

    /// The state of a writer that failed the event.
    pub fn failed_state(self) -> WriterState {
        match self {
            RestoreEvent::PreRestore => WriterState::FailedAtPreRestore,
            RestoreEvent::PostRestore => WriterState::FailedAtPostRestore,
        }
    }
}

/// A writer instance a restore event goes to.
#[derive(Clone)]
pub struct RestoreTarget {
    pub writer: Arc<WriterInstance>,
    /// The instance id of the writer's section in the document: the
    /// instance that was backed up, which differs from
    /// `writer.instance_id` once the writer has restarted.
    pub section_instance: Guid,
}

/// A section of the document with components selected for restore that no
/// writer matches: not registered, or it did not answer Identify in this
/// session. The event was not sent for it and its section is left as it
/// was (an absent writer has refused nothing); the requestor decides
/// whether to restore those components anyway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingWriter {
    pub writer_id: Guid,
    /// The instance id the document names.
    pub instance_id: Guid,
    /// The components selected for restore (`logical\path\name`).
    pub components: Vec<String>,
}

/// What a PreRestore or PostRestore left: the merged document, and the
/// writers it could not reach.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreOutcome {
    pub bcd: String,
    pub missing: Vec<MissingWriter>,
}

const SAVED_BCD_HINT: &str = "Pass the Backup Components Document saved with the backup (the \
     BCD GetBackupComponents returned after DoSnapshotSet), changed only in the restore fields: \
     selectedForRestore, restoreTarget, fileRestoreStatus, restore subcomponents and alternate \
     location mappings. The schema is in docs/DOCUMENTS.md.";

/// Reads a document given for a restore. An empty or unreadable document
/// is `VSS_E_INVALID_XML_DOCUMENT`, with a hint saying which document is
/// wanted.
pub fn parse_restore_bcd(bcd: &str) -> VssResult<BackupComponents> {
    if bcd.trim().is_empty() {
        return Err(VssError::invalid_xml(
            "a restore needs the Backup Components Document of the backup; the document given is empty",
        )
        .with_hint(SAVED_BCD_HINT));
    }
    BackupComponents::from_xml(bcd).map_err(|e| {
        if e.hint.is_some() {
            e
        } else {
            e.with_hint(SAVED_BCD_HINT)
        }
    })
}

fn has_selected(section: &WriterComponents) -> bool {
    section.components.iter().any(|c| c.selected_for_restore)
}

/// The writers a restore event goes to, in document order, and the
/// sections no writer matches. `available` are the writers that answered
/// Identify, in registration order. Exact (writer id, instance id) matches
/// are taken first, so a restarted writer cannot take the section of
/// another live instance of its class; each instance gets one section.
pub fn restore_targets(
    doc: &BackupComponents,
    available: &[Arc<WriterInstance>],
) -> (Vec<RestoreTarget>, Vec<MissingWriter>) {
    let sections: Vec<&WriterComponents> = doc.writers.iter().filter(|s| has_selected(s)).collect();
    let mut used = vec![false; available.len()];
    let mut matched: Vec<Option<usize>> = vec![None; sections.len()];
    for (i, s) in sections.iter().enumerate() {
        if let Some(j) = available
            .iter()
            .position(|w| w.writer_id == s.writer_id && w.instance_id == s.instance_id)
        {
            if !used[j] {
                used[j] = true;
                matched[i] = Some(j);
            }
        }
    }
    for (i, s) in sections.iter().enumerate() {
        if matched[i].is_some() {
            continue;
        }
        if let Some(j) =
            (0..available.len()).find(|&j| !used[j] && available[j].writer_id == s.writer_id)
        {
            used[j] = true;
            matched[i] = Some(j);
        }
    }
    let mut targets = Vec::new();
    let mut missing = Vec::new();
    for (s, m) in sections.iter().zip(matched) {
        match m {
            Some(j) => targets.push(RestoreTarget {
                writer: available[j].clone(),
                section_instance: s.instance_id,
            }),
            None => missing.push(MissingWriter {
                writer_id: s.writer_id,
                instance_id: s.instance_id,
                components: s
                    .components
                    .iter()
                    .filter(|c| c.selected_for_restore)
                    .map(|c| c.full_path())
                    .collect(),
            }),
        }
    }
    (targets, missing)
}

/// The document one writer gets: the backup's header and snapshot set, and
/// only its own section, addressed to its current instance id.
pub fn writer_document(doc: &BackupComponents, t: &RestoreTarget) -> String {
    let mut section = doc
        .writer_section(t.writer.writer_id, t.section_instance)
        .cloned()
        .unwrap_or_else(|| WriterComponents {
            writer_id: t.writer.writer_id,
            instance_id: t.section_instance,
            components: Vec::new(),
        });
    section.instance_id = t.writer.instance_id;
    BackupComponents {
        backup_type: doc.backup_type,
        select_components: doc.select_components,
        bootable_system_state: doc.bootable_system_state,
        partial_file_support: doc.partial_file_support,
        writers: vec![section],
        snapshot_set: doc.snapshot_set.clone(),
    }
    .to_xml()
}

/// Takes what the writer changed in its section of the document it
/// returned (`""`: nothing) into `doc`, under the section's recorded
/// instance id. The writer may address its section by its current or its
/// recorded instance id; it may change only what a writer may
/// ([`BackupComponents::merge_writer_section`]), else
/// `VSS_E_INVALID_XML_DOCUMENT` and `doc` is unchanged.
pub fn merge_returned(
    doc: &mut BackupComponents,
    returned: &str,
    t: &RestoreTarget,
) -> VssResult<()> {
    if returned.trim().is_empty() {
        return Ok(());
    }
    let theirs = BackupComponents::from_xml(returned)?;
    let wid = t.writer.writer_id;
    let section = theirs
        .writer_section(wid, t.writer.instance_id)
        .or_else(|| theirs.writer_section(wid, t.section_instance))
        .cloned()
        .map(|mut s| {
            s.instance_id = t.section_instance;
            s
        });
    let theirs = BackupComponents {
        writers: section.into_iter().collect(),
        ..BackupComponents::default()
    };
    doc.merge_writer_section(&theirs, wid, t.section_instance)
}

/// Characters a BCD cannot carry in free text become `?`, so that a
/// message from a writer or a hook never makes the document unreadable.
fn document_text(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => c,
            c if c.is_control() || c == '\u{FFFE}' || c == '\u{FFFF}' => '?',
            c => c,
        })
        .collect()
}

/// Records why a writer failed the event as the failure message of each
/// component of its section selected for restore, as the writer itself
/// would (SetPreRestoreFailureMsg), so the requestor sees which components
/// it concerns.
pub fn note_failure(
    doc: &mut BackupComponents,
    writer_id: Guid,
    section_instance: Guid,
    event: RestoreEvent,
    message: &str,
) {
    let text = document_text(message);
    let Some(section) = doc.writer_section_mut(writer_id, section_instance) else {
        return;
    };
    for c in section
        .components
        .iter_mut()
        .filter(|c| c.selected_for_restore)
    {
        let slot = match event {
            RestoreEvent::PreRestore => &mut c.pre_restore_failure_message,
            RestoreEvent::PostRestore => &mut c.post_restore_failure_message,
        };
        *slot = Some(text.clone());
    }
}

/// What the journal says about a section no writer matches.
pub fn missing_message(m: &MissingWriter, event: RestoreEvent) -> String {
    format!(
        "vssd did not send {} to writer {} (instance {} in the backup): no writer of that class \
         is registered, or it did not answer Identify in this session",
        event.name(),
        m.writer_id,
        m.instance_id
    )
}

/// A writer that did not answer a restore event within its timeout.
pub fn restore_timeout(w: &WriterInstance, event: RestoreEvent) -> VssError {
    let name = &w.name;
    VssError::new(
        VssCode::WriterErrorTimeout,
        format!(
            "writer '{name}' did not answer {} within its timeout of {} s",
            event.name(),
            w.timeout.as_secs()
        ),
    )
    .with_hint(format!(
        "Find out why '{name}' is slow (its log, the system load), or raise its timeout: \
         set `timeout-secs` under `[writers.\"{name}\"]` in /etc/vss/vss.toml \
         (or `writer-timeout-secs` for every writer) and restart vssd."
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vss_types::documents::{BackupType, ComponentType};

    /// A writer section: writer id, instance id, components (name, selected
    /// for restore).
    type Section<'a> = (Guid, Guid, &'a [(&'a str, bool)]);

    fn doc_with(sections: &[Section]) -> BackupComponents {
        let mut d = BackupComponents::new(BackupType::Full, true);
        for (wid, iid, comps) in sections {
            for (name, selected) in comps.iter() {
                d.add_component(*wid, *iid, ComponentType::FileGroup, "Data", name)
                    .unwrap()
                    .selected_for_restore = *selected;
            }
        }
        d
    }

    #[test]
    fn bad_documents_are_invalid_xml_with_a_hint() {
        for bad in [
            "",
            "   ",
            "<BACKUP_COMPONENTS/>",
            "not xml",
            "<!DOCTYPE x><x/>",
        ] {
            let e = parse_restore_bcd(bad).unwrap_err();
            assert_eq!(e.code, VssCode::InvalidXmlDocument, "{bad:?}: {e}");
            assert!(e.hint.is_some(), "{bad:?}: no hint");
            assert!(
                e.to_string()
                    .starts_with("0x80042311 VSS_E_INVALID_XML_DOCUMENT"),
                "{e}"
            );
        }
        let good = doc_with(&[]).to_xml();
        parse_restore_bcd(&good).unwrap();
    }

    #[test]
    fn messages_are_made_safe_for_the_document() {
        let (w, i) = (Guid::from_u128(1), Guid::from_u128(2));
        let mut d = doc_with(&[(w, i, &[("a", true), ("b", false)])]);
        note_failure(
            &mut d,
            w,
            i,
            RestoreEvent::PreRestore,
            "bad\u{1b}[31m\tline\nnext\u{FFFF}",
        );
        let back = BackupComponents::from_xml(&d.to_xml()).unwrap();
        let a = back.find_component(w, i, "Data", "a").unwrap();
        assert_eq!(
            a.pre_restore_failure_message.as_deref(),
            Some("bad?[31m\tline\nnext?")
        );
        assert!(back
            .find_component(w, i, "Data", "b")
            .unwrap()
            .pre_restore_failure_message
            .is_none());
        // A section that is not there is left alone.
        note_failure(
            &mut d,
            w,
            Guid::from_u128(9),
            RestoreEvent::PostRestore,
            "x",
        );
        assert_eq!(d, BackupComponents::from_xml(&d.to_xml()).unwrap());
    }
}
