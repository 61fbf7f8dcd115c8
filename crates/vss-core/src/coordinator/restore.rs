//! The restore side of a requestor session (IVssBackupComponents
//! initialized with InitializeForRestore):
//!
//! StartRestoreSession (the BCD the backup saved) → GatherWriterMetadata
//! (Identify, as for a backup) → PreRestore → the requestor restores files
//! → PostRestore → GatherWriterStatus → EndSession.
//!
//! Restore sessions make no snapshot set, so they never take the
//! one-set-in-flight slot. Which writer gets which part of the document is
//! decided in [`crate::restore`].

use std::sync::Arc;

use futures_util::future::join_all;
use vss_types::{Guid, VssCode, VssError, VssResult};

use super::{bad_state, Coordinator};
use crate::events::EventId;
use crate::restore::{
    merge_returned, missing_message, note_failure, parse_restore_bcd, restore_targets,
    restore_timeout, writer_document, RestoreEvent, RestoreOutcome,
};
use crate::session::{Phase, RestoreOptions, Session, SessionKind};
use crate::writers::{CallError, WriterInstance};

impl Coordinator {
    /// StartRestoreSession (InitializeForRestore): a session holding the
    /// Backup Components Document a backup saved. A document that cannot
    /// be read is `VSS_E_INVALID_XML_DOCUMENT` and no session is made.
    pub fn start_restore_session(
        &self,
        owner: &str,
        _options: RestoreOptions,
        bcd: &str,
    ) -> VssResult<Guid> {
        let doc = parse_restore_bcd(bcd)?;
        let s = Session::new_restore(owner.to_string(), bcd.to_string());
        let id = s.id;
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::new(tokio::sync::Mutex::new(s)));
        let selected = doc
            .writers
            .iter()
            .flat_map(|w| &w.components)
            .filter(|c| c.selected_for_restore)
            .count();
        tracing::info!(
            event_id = EventId::RestoreStarted.id(),
            session = %id,
            writers = doc.writers.len(),
            selected,
            set = ?doc.snapshot_set.as_ref().map(|s| s.snapshot_set_id.to_string()),
            "restore session started"
        );
        Ok(id)
    }

    /// PreRestore: each writer with a component selected for restore in
    /// `bcd` (`""`: the session's document as it stands) gets its own
    /// section and may change it (restore metadata, restore target,
    /// failure messages). Returns the merged document and the writers the
    /// document names that could not be reached (their sections are left
    /// as they were). A writer that fails is
    /// `[13] Failed` with its error, and the call fails with the first
    /// error (a timeout before other causes); the session's document still
    /// holds what the other writers returned (GetBackupComponents), and the
    /// session goes on (PostRestore, GatherWriterStatus, EndSession).
    pub async fn pre_restore(
        &self,
        owner: &str,
        id: Guid,
        bcd: String,
    ) -> VssResult<RestoreOutcome> {
        self.restore_event(owner, id, bcd, RestoreEvent::PreRestore)
            .await
    }

    /// PostRestore: as PreRestore, after the files are restored; the
    /// requestor has set each component's file restore status. A writer
    /// that fails is `[14] Failed`.
    pub async fn post_restore(
        &self,
        owner: &str,
        id: Guid,
        bcd: String,
    ) -> VssResult<RestoreOutcome> {
        self.restore_event(owner, id, bcd, RestoreEvent::PostRestore)
            .await
    }

    async fn restore_event(
        &self,
        owner: &str,
        id: Guid,
        bcd: String,
        event: RestoreEvent,
    ) -> VssResult<RestoreOutcome> {
        let sref = self.session(owner, id).await?;
        let mut s = sref.lock().await;
        let name = event.name();
        if s.kind != SessionKind::Restore {
            return Err(VssError::new(
                VssCode::BadState,
                format!("{name} is a restore step; session {id} was started for a backup"),
            )
            .with_hint(
                "Start a restore session with StartRestoreSession and the saved Backup Components Document.",
            ));
        }
        let (ready, hint) = match event {
            RestoreEvent::PreRestore => (
                s.phase == Phase::MetadataGathered,
                "Call GatherWriterMetadata first, then PreRestore once per restore session.",
            ),
            RestoreEvent::PostRestore => (
                s.phase == Phase::PreRestored,
                "Call PreRestore first, restore the files, then PostRestore once per restore session.",
            ),
        };
        if !ready {
            return Err(bad_state(name, s.phase).with_hint(hint));
        }
        if !bcd.trim().is_empty() {
            parse_restore_bcd(&bcd)?;
            s.bcd = bcd;
        }
        let mut doc = parse_restore_bcd(&s.bcd)?;
        let answered: Vec<Arc<WriterInstance>> =
            s.metadata.iter().map(|(w, _)| w.clone()).collect();
        let (targets, missing) = restore_targets(&doc, &answered);
        // An absent writer has refused nothing: its section stays as it
        // is (no failure message), as on Windows, and the requestor, told
        // in the result, decides whether to restore its components.
        for m in &missing {
            let msg = missing_message(m, event);
            tracing::warn!(event_id = EventId::RestoreWriterMissing.id(), session = %id, writer_id = %m.writer_id, instance = %m.instance_id, components = ?m.components, "{msg}");
        }

        let results = join_all(targets.iter().map(|t| {
            let part = writer_document(&doc, t);
            async move {
                let w = &t.writer;
                let deadline = tokio::time::Instant::now() + w.timeout;
                let call = match event {
                    RestoreEvent::PreRestore => w.endpoint.pre_restore(part),
                    RestoreEvent::PostRestore => w.endpoint.post_restore(part),
                };
                w.call(name, deadline, call).await
            }
        }))
        .await;

        let mut first: Option<VssError> = None;
        for (t, r) in targets.iter().zip(results) {
            let w = &t.writer;
            let outcome = match r {
                // A writer that returns a document it may not is a writer
                // failure like any other; the document's own error is in
                // the message.
                Ok(returned) => merge_returned(&mut doc, &returned, t).map_err(|e| {
                    VssError::new(
                        VssCode::WriterErrorNonRetryable,
                        format!(
                            "writer '{}' returned a document vssd cannot take at {name}: {e}",
                            w.name
                        ),
                    )
                    .with_hint("The writer may change only its own components' restore metadata, restore target and failure messages; fix the writer.")
                }),
                Err(CallError::TimedOut) => Err(restore_timeout(w, event)),
                Err(e) => Err(e.into_vss(w, name)),
            };
            let Err(e) = outcome else { continue };
            let e = if e.hint.is_some() {
                e
            } else {
                e.with_hint(format!(
                    "See the writer's log. GatherWriterStatus shows each writer's state, and the session's \
                     document (GetBackupComponents) holds this error as the failure message of each \
                     component it concerns; decide whether to restore the components of '{}' anyway.",
                    w.name
                ))
            };
            w.fail(event.failed_state(), &e);
            note_failure(
                &mut doc,
                w.writer_id,
                t.section_instance,
                event,
                &e.to_string(),
            );
            // A timeout is the most telling cause; report it first.
            let replace = match &first {
                None => true,
                Some(f) => {
                    f.code != VssCode::WriterErrorTimeout && e.code == VssCode::WriterErrorTimeout
                }
            };
            if replace {
                first = Some(e);
            }
        }

        s.participants = targets.iter().map(|t| t.writer.clone()).collect();
        s.bcd = doc.to_xml();
        s.phase = match event {
            RestoreEvent::PreRestore => Phase::PreRestored,
            RestoreEvent::PostRestore => Phase::PostRestored,
        };
        match first {
            Some(e) => {
                tracing::error!(event_id = EventId::RestoreEventFailed.id(), session = %id, event = name, code = %e.code, "{name} failed: {}", e.message);
                Err(e)
            }
            None => {
                tracing::info!(event_id = EventId::RestoreEventDone.id(), session = %id, event = name, writers = targets.len(), missing = missing.len(), "{name} done");
                Ok(RestoreOutcome {
                    bcd: s.bcd.clone(),
                    missing,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use async_trait::async_trait;
    use vss_catalog::Catalog;
    use vss_provider::Registry;
    use vss_types::documents::{
        BackupComponents, BackupType, ComponentType, FileRestoreStatus, RestoreTarget,
    };
    use vss_types::{Volume, WriterKind, WriterState};

    use super::*;
    use crate::hold::{Armed, WriteHold};
    use crate::{
        CoreConfig, NewWriter, NoSoftwareVolumes, SessionOptions, VolumeResolver, WriterEndpoint,
    };

    /// What a fake writer does with a restore event.
    #[derive(Clone, Copy, Debug)]
    enum Act {
        /// Notes `EVENT by NAME` as restore metadata of each of its
        /// components and sets the restore target to alternate.
        Edit,
        Veto(VssCode),
        /// Never answers.
        Hang,
        /// Returns its section with a component that was not selected.
        AddComponent,
    }

    /// A writer endpoint that records every event and the document it got.
    struct Fake {
        name: &'static str,
        pre: Act,
        post: Act,
        got: Mutex<Vec<(String, String)>>,
    }

    impl Fake {
        fn new(name: &'static str, pre: Act, post: Act) -> Arc<Fake> {
            Arc::new(Fake {
                name,
                pre,
                post,
                got: Mutex::new(Vec::new()),
            })
        }

        fn log(&self, event: &str, doc: &str) {
            self.got
                .lock()
                .unwrap()
                .push((event.to_string(), doc.to_string()));
        }

        fn events(&self) -> Vec<String> {
            self.got
                .lock()
                .unwrap()
                .iter()
                .map(|e| e.0.clone())
                .collect()
        }

        /// The documents the restore events brought.
        fn docs(&self, event: &str) -> Vec<BackupComponents> {
            self.got
                .lock()
                .unwrap()
                .iter()
                .filter(|e| e.0 == event)
                .map(|e| BackupComponents::from_xml(&e.1).unwrap())
                .collect()
        }

        async fn restore(&self, event: &str, act: Act, bcd: String) -> VssResult<String> {
            self.log(event, &bcd);
            match act {
                Act::Edit => {
                    let mut d = BackupComponents::from_xml(&bcd)?;
                    for s in &mut d.writers {
                        for c in &mut s.components {
                            c.restore_metadata = Some(format!("{event} by {}", self.name));
                            c.restore_target = RestoreTarget::Alternate;
                        }
                    }
                    Ok(d.to_xml())
                }
                Act::Veto(code) => Err(VssError::new(
                    code,
                    format!("{} refuses {event}", self.name),
                )),
                Act::Hang => std::future::pending().await,
                Act::AddComponent => {
                    let mut d = BackupComponents::from_xml(&bcd)?;
                    let (w, i) = (d.writers[0].writer_id, d.writers[0].instance_id);
                    d.add_component(w, i, ComponentType::FileGroup, "", "sneaked-in")?;
                    Ok(d.to_xml())
                }
            }
        }
    }

    #[async_trait]
    impl WriterEndpoint for Fake {
        async fn identify(&self) -> VssResult<String> {
            self.log("Identify", "");
            Ok("<wmd/>".into())
        }
        async fn prepare_for_backup(&self, _: Guid, bcd: String) -> VssResult<String> {
            self.log("PrepareForBackup", &bcd);
            Ok(bcd)
        }
        async fn prepare_for_snapshot(&self, _: Guid, _: Vec<String>) -> VssResult<()> {
            self.log("PrepareForSnapshot", "");
            Ok(())
        }
        async fn freeze(&self, _: Guid) -> VssResult<()> {
            self.log("Freeze", "");
            Ok(())
        }
        async fn thaw(&self, _: Guid) -> VssResult<()> {
            self.log("Thaw", "");
            Ok(())
        }
        async fn post_snapshot(&self, _: Guid, bcd: String) -> VssResult<String> {
            self.log("PostSnapshot", &bcd);
            Ok(bcd)
        }
        async fn abort(&self, _: Guid) -> VssResult<()> {
            self.log("Abort", "");
            Ok(())
        }
        async fn backup_complete(&self, _: Guid, bcd: String) -> VssResult<String> {
            self.log("BackupComplete", &bcd);
            Ok(bcd)
        }
        async fn backup_shutdown(&self, _: Guid) -> VssResult<()> {
            self.log("BackupShutdown", "");
            Ok(())
        }
        async fn pre_restore(&self, bcd: String) -> VssResult<String> {
            self.restore("PreRestore", self.pre, bcd).await
        }
        async fn post_restore(&self, bcd: String) -> VssResult<String> {
            self.restore("PostRestore", self.post, bcd).await
        }
    }

    struct NoHold;
    impl WriteHold for NoHold {
        fn arm(&self, _: Guid, _: &[String], _: Duration) -> VssResult<Box<dyn Armed>> {
            Err(VssError::new(VssCode::Unexpected, "not in these tests"))
        }
        fn freeze(&self, _: &str) -> std::io::Result<()> {
            Ok(())
        }
        fn thaw(&self, _: &str) -> std::io::Result<bool> {
            Ok(false)
        }
    }

    struct NoVolumes;
    impl VolumeResolver for NoVolumes {
        fn volume_of(&self, path: &str) -> VssResult<Volume> {
            Err(VssError::new(VssCode::ObjectNotFound, path.to_string()))
        }
        fn list(&self) -> VssResult<Vec<Volume>> {
            Ok(Vec::new())
        }
    }

    fn coordinator() -> Arc<Coordinator> {
        Coordinator::new(
            CoreConfig {
                writer_timeout: Duration::from_secs(60),
                writer_timeouts: Default::default(),
                hold_limit: Duration::from_secs(10),
                machine: "host".into(),
                state_dir: "/nonexistent/vss-state".into(),
            },
            Registry::new(),
            Arc::new(Catalog::open_in_memory().unwrap()),
            Arc::new(NoHold),
            Arc::new(NoVolumes),
            Arc::new(NoSoftwareVolumes),
        )
    }

    const REQ: &str = ":1.42";

    fn class(name: &str) -> Guid {
        Guid::derived(Guid::from_u128(0x5157), name.as_bytes())
    }

    /// Registers a fake writer of class `class(name)` owned by `owner`.
    fn register(
        core: &Coordinator,
        fake: &Arc<Fake>,
        owner: &str,
        timeout_secs: u64,
    ) -> Arc<WriterInstance> {
        core.register_writer_with_timeout(
            NewWriter {
                name: fake.name.to_string(),
                writer_id: class(fake.name),
                kind: WriterKind::Bus,
                pid: None,
                uid: Some(0),
                owner: owner.to_string(),
                endpoint: fake.clone(),
            },
            Some(Duration::from_secs(timeout_secs)),
        )
        .unwrap()
    }

    /// A saved BCD: one section per (writer id, instance id) with
    /// components in `Data`, each selected for restore or not.
    /// A writer section: writer id, instance id, components (name, selected
    /// for restore).
    type Section<'a> = (Guid, Guid, &'a [(&'a str, bool)]);

    fn saved_bcd(sections: &[Section]) -> BackupComponents {
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

    fn parse(bcd: &str) -> BackupComponents {
        BackupComponents::from_xml(bcd).unwrap()
    }

    fn status_of(core: &Coordinator, w: &WriterInstance) -> vss_types::WriterStatus {
        core.list_writers()
            .into_iter()
            .find(|s| s.instance_id == w.instance_id)
            .unwrap()
    }

    #[tokio::test]
    async fn restore_events_reach_exactly_the_writers_with_selected_components() {
        let core = coordinator();
        let a = Fake::new("a", Act::Edit, Act::Edit);
        let b = Fake::new("b", Act::Edit, Act::Edit);
        let c = Fake::new("c", Act::Edit, Act::Edit);
        let wa = register(&core, &a, ":1.1", 5);
        let wb = register(&core, &b, ":1.2", 5);
        register(&core, &c, ":1.3", 5);
        let gone = class("gone");
        let gone_instance = Guid::new_random();
        let saved = saved_bcd(&[
            (wa.writer_id, wa.instance_id, &[("a1", true), ("a2", false)]),
            // A section with nothing selected for restore gets no event.
            (wb.writer_id, wb.instance_id, &[("b1", false)]),
            // A writer that is not registered: reported, not sent.
            (gone, gone_instance, &[("g1", true), ("g2", false)]),
        ]);
        let id = core
            .start_restore_session(REQ, RestoreOptions::default(), &saved.to_xml())
            .unwrap();
        assert_eq!(core.gather_writer_metadata(REQ, id).await.unwrap().len(), 3);

        let out = core.pre_restore(REQ, id, String::new()).await.unwrap();
        assert_eq!(a.events(), ["Identify", "PreRestore"]);
        assert_eq!(b.events(), ["Identify"]);
        assert_eq!(c.events(), ["Identify"]);
        // The writer saw only its own section, both of its components.
        let seen = &a.docs("PreRestore")[0];
        assert_eq!(seen.writers.len(), 1);
        assert_eq!(seen.writers[0].writer_id, wa.writer_id);
        assert_eq!(seen.writers[0].instance_id, wa.instance_id);
        assert_eq!(seen.writers[0].components.len(), 2);
        assert_eq!(seen.backup_type, BackupType::Full);
        assert_eq!(
            out.missing,
            [crate::MissingWriter {
                writer_id: gone,
                instance_id: gone_instance,
                components: vec!["Data\\g1".into()],
            }]
        );
        let merged = parse(&out.bcd);
        let a1 = merged
            .find_component(wa.writer_id, wa.instance_id, "Data", "a1")
            .unwrap();
        assert_eq!(a1.restore_metadata.as_deref(), Some("PreRestore by a"));
        assert_eq!(a1.restore_target, RestoreTarget::Alternate);
        assert_eq!(
            merged.writer_section(wb.writer_id, wb.instance_id),
            saved.writer_section(wb.writer_id, wb.instance_id)
        );
        // The absent writer's section is left as it was: it refused
        // nothing, the requestor decides.
        assert_eq!(
            merged.writer_section(gone, gone_instance),
            saved.writer_section(gone, gone_instance)
        );
        assert_eq!(core.get_backup_components(REQ, id).await.unwrap(), out.bcd);

        // The requestor restores the files and says how it went.
        let mut doc = merged;
        doc.find_component_mut(wa.writer_id, wa.instance_id, "Data", "a1")
            .unwrap()
            .file_restore_status = FileRestoreStatus::All;
        let out = core.post_restore(REQ, id, doc.to_xml()).await.unwrap();
        assert_eq!(a.events(), ["Identify", "PreRestore", "PostRestore"]);
        assert_eq!(b.events(), ["Identify"]);
        let seen = &a.docs("PostRestore")[0];
        let a1 = &seen.writers[0].components[0];
        assert_eq!(a1.file_restore_status, FileRestoreStatus::All);
        assert_eq!(a1.restore_metadata.as_deref(), Some("PreRestore by a"));
        let merged = parse(&out.bcd);
        let a1 = merged
            .find_component(wa.writer_id, wa.instance_id, "Data", "a1")
            .unwrap();
        assert_eq!(a1.restore_metadata.as_deref(), Some("PostRestore by a"));
        assert_eq!(a1.file_restore_status, FileRestoreStatus::All);
        assert!(merged
            .find_component(gone, gone_instance, "Data", "g1")
            .unwrap()
            .post_restore_failure_message
            .is_none());
        assert_eq!(out.missing.len(), 1);

        let st = core.gather_writer_status(REQ, id).await.unwrap();
        assert_eq!(st.len(), 1);
        assert_eq!(st[0].state, WriterState::Stable);
        assert_eq!(st[0].last_error, VssCode::Ok);

        // Ending a restore session sends nothing more.
        core.end_session(REQ, id).await.unwrap();
        assert_eq!(a.events(), ["Identify", "PreRestore", "PostRestore"]);
        let e = core.gather_writer_status(REQ, id).await.unwrap_err();
        assert_eq!(e.code, VssCode::ObjectNotFound);
    }

    #[tokio::test]
    async fn a_restarted_writer_gets_the_section_of_its_class() {
        let core = coordinator();
        let one = Fake::new("app", Act::Edit, Act::Edit);
        let two = Fake::new("app", Act::Edit, Act::Edit);
        let w1 = register(&core, &one, ":1.1", 5);
        let w2 = register(&core, &two, ":1.2", 5);
        let wid = w1.writer_id;
        let old = Guid::new_random();
        // The backed-up instance `old` is gone; w2 still runs. The exact
        // match goes first, so w1 (first registered) takes `old`.
        let saved = saved_bcd(&[
            (wid, old, &[("x", true)]),
            (wid, w2.instance_id, &[("y", true)]),
        ]);
        let id = core
            .start_restore_session(REQ, RestoreOptions::default(), &saved.to_xml())
            .unwrap();
        core.gather_writer_metadata(REQ, id).await.unwrap();
        let out = core.pre_restore(REQ, id, String::new()).await.unwrap();
        assert!(out.missing.is_empty());

        let seen1 = &one.docs("PreRestore")[0];
        assert_eq!(seen1.writers.len(), 1);
        assert_eq!(seen1.writers[0].instance_id, w1.instance_id);
        assert_eq!(seen1.writers[0].components[0].name, "x");
        let seen2 = &two.docs("PreRestore")[0];
        assert_eq!(seen2.writers[0].instance_id, w2.instance_id);
        assert_eq!(seen2.writers[0].components[0].name, "y");

        // Answers go back under the ids the document had.
        let merged = parse(&out.bcd);
        assert_eq!(merged.writers.len(), 2);
        assert_eq!(
            merged
                .find_component(wid, old, "Data", "x")
                .unwrap()
                .restore_metadata
                .as_deref(),
            Some("PreRestore by app")
        );
        assert!(merged
            .find_component(wid, w2.instance_id, "Data", "y")
            .unwrap()
            .restore_metadata
            .is_some());
        assert!(merged.writer_section(wid, w1.instance_id).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn failures_and_timeouts_mark_the_writer_and_keep_the_session() {
        let core = coordinator();
        let vetoer = Fake::new(
            "vetoer",
            Act::Veto(VssCode::WriterErrorRetryable),
            Act::Edit,
        );
        let slow = Fake::new("slow", Act::Hang, Act::Edit);
        let late = Fake::new(
            "late",
            Act::Edit,
            Act::Veto(VssCode::WriterErrorNonRetryable),
        );
        let wv = register(&core, &vetoer, ":1.1", 5);
        let ws = register(&core, &slow, ":1.2", 2);
        let wl = register(&core, &late, ":1.3", 5);
        let saved = saved_bcd(&[
            (wv.writer_id, wv.instance_id, &[("v", true)]),
            (ws.writer_id, ws.instance_id, &[("s", true)]),
            (wl.writer_id, wl.instance_id, &[("l", true)]),
        ]);
        let id = core
            .start_restore_session(REQ, RestoreOptions::default(), &saved.to_xml())
            .unwrap();
        core.gather_writer_metadata(REQ, id).await.unwrap();

        let e = core.pre_restore(REQ, id, String::new()).await.unwrap_err();
        // The timeout is reported before the veto.
        assert_eq!(e.code, VssCode::WriterErrorTimeout, "{e}");
        assert!(
            e.message
                .contains("'slow' did not answer PreRestore within its timeout of 2 s"),
            "{e}"
        );
        assert!(e.hint().contains("timeout-secs"), "{}", e.hint());

        let v = status_of(&core, &wv);
        assert_eq!(v.state, WriterState::FailedAtPreRestore);
        assert_eq!(v.state.to_string(), "[13] Failed");
        assert_eq!(v.last_error, VssCode::WriterErrorRetryable);
        assert!(
            v.last_error_message
                .as_deref()
                .unwrap()
                .contains("vetoer refuses PreRestore"),
            "{v:?}"
        );
        let s = status_of(&core, &ws);
        assert_eq!(s.state, WriterState::FailedAtPreRestore);
        assert_eq!(s.last_error, VssCode::WriterErrorTimeout);
        assert_eq!(status_of(&core, &wl).state, WriterState::Stable);

        // The session kept what the writer that succeeded returned, and
        // names the failures on the components they concern.
        let doc = parse(&core.get_backup_components(REQ, id).await.unwrap());
        assert_eq!(
            doc.find_component(wl.writer_id, wl.instance_id, "Data", "l")
                .unwrap()
                .restore_metadata
                .as_deref(),
            Some("PreRestore by late")
        );
        let vmsg = doc
            .find_component(wv.writer_id, wv.instance_id, "Data", "v")
            .unwrap()
            .pre_restore_failure_message
            .clone()
            .unwrap();
        assert!(
            vmsg.starts_with("0x800423F3 VSS_E_WRITERERROR_RETRYABLE"),
            "{vmsg}"
        );

        // Still usable: status, PostRestore, end.
        let st = core.gather_writer_status(REQ, id).await.unwrap();
        let states: Vec<u32> = st.iter().map(|s| s.state.value()).collect();
        assert_eq!(states, [13, 13, 1]);

        let e = core.post_restore(REQ, id, String::new()).await.unwrap_err();
        assert_eq!(e.code, VssCode::WriterErrorNonRetryable, "{e}");
        assert!(e.message.contains("'late' vetoed PostRestore"), "{e}");
        assert!(!e.hint().is_empty());
        let l = status_of(&core, &wl);
        assert_eq!(l.state, WriterState::FailedAtPostRestore);
        assert_eq!(l.state.to_string(), "[14] Failed");
        assert_eq!(l.last_error, VssCode::WriterErrorNonRetryable);
        // A later success does not hide an earlier failure.
        assert_eq!(status_of(&core, &wv).state, WriterState::FailedAtPreRestore);
        assert_eq!(slow.events(), ["Identify", "PreRestore", "PostRestore"]);
        core.end_session(REQ, id).await.unwrap();
        assert_eq!(
            status_of(&core, &wl).state,
            WriterState::FailedAtPostRestore
        );
    }

    #[tokio::test]
    async fn a_writer_may_not_add_components() {
        let core = coordinator();
        let f = Fake::new("sneaky", Act::AddComponent, Act::Edit);
        let w = register(&core, &f, ":1.1", 5);
        let saved = saved_bcd(&[(w.writer_id, w.instance_id, &[("c", true)])]);
        let id = core
            .start_restore_session(REQ, RestoreOptions::default(), &saved.to_xml())
            .unwrap();
        core.gather_writer_metadata(REQ, id).await.unwrap();
        let e = core.pre_restore(REQ, id, String::new()).await.unwrap_err();
        assert_eq!(e.code, VssCode::WriterErrorNonRetryable, "{e}");
        assert!(e.message.contains("0x80042311"), "{e}");
        assert!(e.message.contains("sneaked-in"), "{e}");
        assert_eq!(status_of(&core, &w).state, WriterState::FailedAtPreRestore);
        let doc = parse(&core.get_backup_components(REQ, id).await.unwrap());
        assert_eq!(doc.writers[0].components.len(), 1);
    }

    #[tokio::test]
    async fn steps_out_of_order_or_of_the_other_kind_are_refused() {
        let core = coordinator();
        let f = Fake::new("w", Act::Edit, Act::Edit);
        let w = register(&core, &f, ":1.1", 5);

        for bad in ["", "<BACKUP_COMPONENTS/>", "<x><!DOCTYPE y></x>"] {
            let e = core
                .start_restore_session(REQ, RestoreOptions::default(), bad)
                .unwrap_err();
            assert_eq!(e.code, VssCode::InvalidXmlDocument, "{bad:?}: {e}");
            assert!(e.hint.is_some(), "{bad:?}");
        }

        let saved = saved_bcd(&[(w.writer_id, w.instance_id, &[("c", true)])]).to_xml();
        let id = core
            .start_restore_session(REQ, RestoreOptions::default(), &saved)
            .unwrap();
        let bad_state = |e: VssError| assert_eq!(e.code, VssCode::BadState, "{e}");
        bad_state(core.pre_restore(REQ, id, String::new()).await.unwrap_err());
        bad_state(core.post_restore(REQ, id, String::new()).await.unwrap_err());
        core.gather_writer_metadata(REQ, id).await.unwrap();
        bad_state(core.post_restore(REQ, id, String::new()).await.unwrap_err());
        let e = core
            .prepare_for_backup(REQ, id, String::new())
            .await
            .unwrap_err();
        assert!(e.message.contains("started for a restore"), "{e}");
        bad_state(e);
        bad_state(core.start_snapshot_set(REQ, id).await.unwrap_err());
        bad_state(core.abort_backup(REQ, id).await.unwrap_err());
        // Another connection cannot use the session.
        let e = core
            .pre_restore(":1.99", id, String::new())
            .await
            .unwrap_err();
        assert_eq!(e.code, VssCode::ObjectNotFound);
        // A bad document from the requestor changes nothing.
        let e = core.pre_restore(REQ, id, "<oops".into()).await.unwrap_err();
        assert_eq!(e.code, VssCode::InvalidXmlDocument);
        assert_eq!(f.events(), ["Identify"]);
        core.pre_restore(REQ, id, String::new()).await.unwrap();
        bad_state(core.pre_restore(REQ, id, String::new()).await.unwrap_err());
        core.post_restore(REQ, id, String::new()).await.unwrap();
        bad_state(core.post_restore(REQ, id, String::new()).await.unwrap_err());
        assert_eq!(f.events(), ["Identify", "PreRestore", "PostRestore"]);

        // Restore steps in a backup session.
        let b = core.start_session(REQ, SessionOptions::default());
        core.gather_writer_metadata(REQ, b).await.unwrap();
        let e = core.pre_restore(REQ, b, saved.clone()).await.unwrap_err();
        assert!(e.message.contains("started for a backup"), "{e}");
        bad_state(e);

        // A restore session of a connection that closes just ends.
        core.connection_closed(REQ).await;
        assert_eq!(
            core.gather_writer_status(REQ, id).await.unwrap_err().code,
            VssCode::ObjectNotFound
        );
        assert!(!f.events().contains(&"PrepareForBackup".to_string()));
    }
}
