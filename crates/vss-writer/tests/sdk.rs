//! The SDK against a private bus and a fake vssd, all in this process.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Notify;

use common::{dbus_error, FakeHost, HostEvent, TestBus};
use vss_writer::{
    EventContext, Guid, RegistrationState, RunOptions, SdkError, Veto, VetoKind, Writer,
    WriterResult, WriterService,
};

const WAIT: Duration = Duration::from_secs(5);

/// How the test writer's Freeze behaves.
#[derive(Clone, Copy)]
enum FreezeMode {
    Quick,
    /// Waits (async) until Abort arrives; vetoes if it never does.
    UntilAbort,
    /// Blocks its thread for this long.
    BlockThread(Duration),
}

/// Records every event with its arguments; vetoes or panics on request.
struct TestWriter {
    name: String,
    id: Guid,
    events: Mutex<Vec<String>>,
    vetoes: Mutex<HashMap<&'static str, Veto>>,
    panic_at: Mutex<Option<&'static str>>,
    freeze: FreezeMode,
    aborted: Notify,
    freeze_started: Notify,
}

impl TestWriter {
    fn new(name: &str, freeze: FreezeMode) -> Arc<TestWriter> {
        Arc::new(TestWriter {
            name: name.to_string(),
            id: Guid::new_random(),
            events: Mutex::default(),
            vetoes: Mutex::default(),
            panic_at: Mutex::default(),
            freeze,
            aborted: Notify::new(),
            freeze_started: Notify::new(),
        })
    }

    fn event(&self, event: &'static str, detail: String) -> WriterResult<()> {
        self.events
            .lock()
            .unwrap()
            .push(format!("{event} {detail}"));
        if *self.panic_at.lock().unwrap() == Some(event) {
            panic!("test writer told to panic at {event}");
        }
        match self.vetoes.lock().unwrap().get(event) {
            Some(v) => Err(v.clone()),
            None => Ok(()),
        }
    }

    fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }

    fn wmd(&self) -> String {
        format!(
            r#"<WRITER_METADATA xmlns="x-schema:#VssWriterMetadataInfo" version="1.0"><IDENTIFICATION writerId="{}" friendlyName="{}"/></WRITER_METADATA>"#,
            self.id, self.name
        )
    }
}

#[async_trait]
impl Writer for TestWriter {
    fn name(&self) -> &str {
        &self.name
    }

    fn writer_id(&self) -> Guid {
        self.id
    }

    async fn on_identify(&self) -> WriterResult<String> {
        self.event("Identify", String::new())?;
        Ok(self.wmd())
    }

    async fn on_prepare_backup(&self, ctx: &EventContext, bcd: String) -> WriterResult<String> {
        self.event("PrepareForBackup", format!("{} {bcd}", ctx.set_id))?;
        Ok(format!("{bcd}<!-- {} -->", self.name))
    }

    async fn on_prepare_snapshot(
        &self,
        ctx: &EventContext,
        volumes: Vec<String>,
    ) -> WriterResult<()> {
        self.event(
            "PrepareForSnapshot",
            format!("{} {}", ctx.set_id, volumes.join(",")),
        )
    }

    async fn on_freeze(&self, ctx: &EventContext) -> WriterResult<()> {
        self.event("Freeze", ctx.set_id.to_string())?;
        self.freeze_started.notify_one();
        match self.freeze {
            FreezeMode::Quick => Ok(()),
            FreezeMode::UntilAbort => {
                match tokio::time::timeout(Duration::from_secs(10), self.aborted.notified()).await {
                    Ok(()) => Ok(()),
                    Err(_) => Err(Veto::timeout(
                        "Abort never reached the writer during Freeze",
                    )),
                }
            }
            FreezeMode::BlockThread(d) => {
                std::thread::sleep(d);
                Ok(())
            }
        }
    }

    async fn on_thaw(&self, ctx: &EventContext) -> WriterResult<()> {
        self.event("Thaw", ctx.set_id.to_string())
    }

    async fn on_post_snapshot(&self, ctx: &EventContext, bcd: String) -> WriterResult<String> {
        self.event("PostSnapshot", format!("{} {bcd}", ctx.set_id))?;
        Ok(bcd)
    }

    async fn on_abort(&self, ctx: &EventContext) -> WriterResult<()> {
        self.event("Abort", ctx.set_id.to_string())?;
        self.aborted.notify_one();
        Ok(())
    }

    async fn on_backup_complete(&self, ctx: &EventContext, bcd: String) -> WriterResult<String> {
        self.event("BackupComplete", format!("{} {bcd}", ctx.set_id))?;
        Ok(bcd)
    }

    async fn on_backup_shutdown(&self, ctx: &EventContext) -> WriterResult<()> {
        self.event("BackupShutdown", ctx.set_id.to_string())
    }

    async fn on_pre_restore(&self, bcd: String) -> WriterResult<String> {
        self.event("PreRestore", bcd.clone())?;
        Ok(format!("{bcd}+pre"))
    }

    async fn on_post_restore(&self, bcd: String) -> WriterResult<String> {
        self.event("PostRestore", bcd.clone())?;
        Ok(format!("{bcd}+post"))
    }
}

/// A writer implementing only what is required: the defaults do the rest.
struct MinimalWriter;

#[async_trait]
impl Writer for MinimalWriter {
    fn name(&self) -> &str {
        "minimal"
    }

    fn writer_id(&self) -> Guid {
        Guid::from_u128(0x1234)
    }

    async fn on_identify(&self) -> WriterResult<String> {
        Ok("<WRITER_METADATA/>".to_string())
    }
}

fn opts(bus: &TestBus) -> RunOptions {
    RunOptions {
        bus_address: Some(bus.address.clone()),
        ..RunOptions::default()
    }
}

async fn start(writer: Arc<dyn Writer>, bus: &TestBus) -> WriterService {
    WriterService::start(writer, opts(bus))
        .await
        .expect("start the writer service")
}

async fn wait_state(
    svc: &WriterService,
    pred: impl Fn(&RegistrationState) -> bool,
) -> RegistrationState {
    let mut rx = svc.watch_state();
    let r = tokio::time::timeout(WAIT, rx.wait_for(|s| pred(s))).await;
    match r {
        Ok(Ok(s)) => s.clone(),
        _ => panic!("state not reached; now {:?}", svc.state()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registers_with_name_id_and_path() {
    let bus = TestBus::start();
    let mut host = FakeHost::start(&bus).await;
    let writer = TestWriter::new("reg-test", FreezeMode::Quick);
    let svc = start(writer.clone(), &bus).await;

    let reg = host.next_registration(WAIT).await;
    assert_eq!(reg.name, "reg-test");
    assert_eq!(reg.writer_id, writer.id.to_string());
    assert_eq!(reg.path, vss_dbus::DEFAULT_WRITER_PATH);
    assert_eq!(
        reg.sender,
        svc.connection().unique_name().unwrap().to_string()
    );
    let id = tokio::time::timeout(WAIT, svc.registered())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(id, reg.instance_id);
    assert_eq!(svc.instance_id().as_deref(), Some(reg.instance_id.as_str()));
    match svc.state() {
        RegistrationState::Registered { vssd, .. } => {
            assert_eq!(vssd, host.conn.unique_name().unwrap().to_string())
        }
        s => panic!("not registered: {s:?}"),
    }
    // Registered once, not again for the same vssd.
    host.expect_quiet(Duration::from_millis(300)).await;
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waits_for_vssd_when_it_is_not_running() {
    let bus = TestBus::start();
    let writer = TestWriter::new("early-bird", FreezeMode::Quick);
    let svc = start(writer.clone(), &bus).await;
    assert_eq!(svc.state(), RegistrationState::WaitingForVssd);

    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut host = FakeHost::start(&bus).await;
    let reg = host.next_registration(WAIT).await;
    assert_eq!(reg.name, "early-bird");
    let wmd = host.writer(&reg).await.identify().await.unwrap();
    assert_eq!(wmd, writer.wmd());
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_reach_the_handlers_with_their_arguments() {
    let bus = TestBus::start();
    let mut host = FakeHost::start(&bus).await;
    let writer = TestWriter::new("events", FreezeMode::Quick);
    let svc = start(writer.clone(), &bus).await;
    let reg = host.next_registration(WAIT).await;
    let w = host.writer(&reg).await;
    let set = Guid::new_random().to_string();

    assert_eq!(w.identify().await.unwrap(), writer.wmd());
    assert_eq!(
        w.prepare_for_backup(&set, "<BCD/>").await.unwrap(),
        "<BCD/><!-- events -->"
    );
    w.prepare_for_snapshot(&set, &["/mnt/a", "/mnt/b"])
        .await
        .unwrap();
    w.freeze(&set).await.unwrap();
    w.thaw(&set).await.unwrap();
    assert_eq!(w.post_snapshot(&set, "<B2/>").await.unwrap(), "<B2/>");
    assert_eq!(w.backup_complete(&set, "<B3/>").await.unwrap(), "<B3/>");
    w.backup_shutdown(&set).await.unwrap();
    assert_eq!(w.pre_restore("<R/>").await.unwrap(), "<R/>+pre");
    assert_eq!(w.post_restore("<R/>").await.unwrap(), "<R/>+post");
    // An empty or malformed set id reaches the handler as the null id.
    w.abort("").await.unwrap();

    let null = Guid::NULL.to_string();
    assert_eq!(
        writer.events(),
        vec![
            "Identify ".to_string(),
            format!("PrepareForBackup {set} <BCD/>"),
            format!("PrepareForSnapshot {set} /mnt/a,/mnt/b"),
            format!("Freeze {set}"),
            format!("Thaw {set}"),
            format!("PostSnapshot {set} <B2/>"),
            format!("BackupComplete {set} <B3/>"),
            format!("BackupShutdown {set}"),
            "PreRestore <R/>".to_string(),
            "PostRestore <R/>".to_string(),
            format!("Abort {null}"),
        ]
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn default_handlers_succeed_and_return_documents_unchanged() {
    let bus = TestBus::start();
    let mut host = FakeHost::start(&bus).await;
    let svc = start(Arc::new(MinimalWriter), &bus).await;
    let reg = host.next_registration(WAIT).await;
    assert_eq!(reg.writer_id, Guid::from_u128(0x1234).to_string());
    let w = host.writer(&reg).await;
    let set = Guid::new_random().to_string();
    assert_eq!(w.identify().await.unwrap(), "<WRITER_METADATA/>");
    assert_eq!(w.prepare_for_backup(&set, "<B/>").await.unwrap(), "<B/>");
    w.prepare_for_snapshot(&set, &["/"]).await.unwrap();
    w.freeze(&set).await.unwrap();
    w.thaw(&set).await.unwrap();
    assert_eq!(w.post_snapshot(&set, "<B/>").await.unwrap(), "<B/>");
    w.abort(&set).await.unwrap();
    assert_eq!(w.backup_complete(&set, "<B/>").await.unwrap(), "<B/>");
    w.backup_shutdown(&set).await.unwrap();
    assert_eq!(w.pre_restore("<B/>").await.unwrap(), "<B/>");
    assert_eq!(w.post_restore("<B/>").await.unwrap(), "<B/>");
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn vetoes_arrive_as_vss_error_names_with_the_message() {
    let bus = TestBus::start();
    let mut host = FakeHost::start(&bus).await;
    let writer = TestWriter::new("vetoer", FreezeMode::Quick);
    let svc = start(writer.clone(), &bus).await;
    let reg = host.next_registration(WAIT).await;
    let w = host.writer(&reg).await;
    let set = Guid::new_random().to_string();

    for kind in VetoKind::ALL {
        let msg = format!("freeze refused ({kind:?})");
        writer
            .vetoes
            .lock()
            .unwrap()
            .insert("Freeze", Veto::new(kind, msg.clone()));
        let err = w.freeze(&set).await.expect_err("Freeze must fail");
        let (name, message) = dbus_error(&err);
        assert_eq!(name, format!("org.vss.Error.{}", kind.code().symbol()));
        assert_eq!(message, msg);
    }
    assert_eq!(
        dbus_error(&w.freeze(&set).await.unwrap_err()).0,
        "org.vss.Error.VSS_E_WRITERERROR_TIMEOUT"
    );

    // The first kind by its own name, and a hint on its own line.
    writer.vetoes.lock().unwrap().insert(
        "PrepareForBackup",
        Veto::retryable("database is busy").with_hint("try again later"),
    );
    let err = w.prepare_for_backup(&set, "").await.unwrap_err();
    assert_eq!(
        dbus_error(&err),
        (
            "org.vss.Error.VSS_E_WRITERERROR_RETRYABLE".to_string(),
            "database is busy\nHint: try again later".to_string()
        )
    );
    // Clients turn it back into the VSS code.
    let back = vss_dbus::vss_error_from_zbus(&err, vss_types::VssCode::Unexpected);
    assert_eq!(back.code, vss_types::VssCode::WriterErrorRetryable);
    assert_eq!(back.hint.as_deref(), Some("try again later"));

    // A veto fails only that call: the writer goes on serving.
    w.thaw(&set).await.unwrap();
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panicking_handler_fails_its_call_as_non_retryable() {
    let bus = TestBus::start();
    let mut host = FakeHost::start(&bus).await;
    let writer = TestWriter::new("panicky", FreezeMode::Quick);
    let svc = start(writer.clone(), &bus).await;
    let reg = host.next_registration(WAIT).await;
    let w = host.writer(&reg).await;
    *writer.panic_at.lock().unwrap() = Some("Thaw");

    let err = tokio::time::timeout(WAIT, w.thaw(""))
        .await
        .unwrap()
        .unwrap_err();
    let (name, message) = dbus_error(&err);
    assert_eq!(name, "org.vss.Error.VSS_E_WRITERERROR_NONRETRYABLE");
    assert!(message.contains("panicked"), "{message}");
    w.abort("").await.unwrap();
    svc.stop().await;
}

/// Freeze runs until Abort arrives (or blocks its thread for a while): the
/// Abort must be answered meanwhile.
async fn abort_during_freeze(mode: FreezeMode) {
    let bus = TestBus::start();
    let mut host = FakeHost::start(&bus).await;
    let writer = TestWriter::new("slow-freeze", mode);
    let svc = start(writer.clone(), &bus).await;
    let reg = host.next_registration(WAIT).await;
    let w = host.writer(&reg).await;
    let set = Guid::new_random().to_string();

    let started = writer.freeze_started.notified();
    let t0 = Instant::now();
    let freeze = tokio::spawn({
        let w = w.clone();
        let set = set.clone();
        async move { w.freeze(&set).await }
    });
    tokio::time::timeout(WAIT, started)
        .await
        .expect("Freeze reached the writer");
    assert!(!freeze.is_finished(), "Freeze must still be running");

    tokio::time::timeout(WAIT, w.abort(&set))
        .await
        .expect("Abort answered while Freeze runs")
        .unwrap();
    if let FreezeMode::BlockThread(block) = mode {
        assert!(
            t0.elapsed() < block,
            "Abort waited for the blocking Freeze ({:?})",
            t0.elapsed()
        );
    }
    // UntilAbort: Freeze only returns Ok once Abort has reached the writer.
    tokio::time::timeout(Duration::from_secs(15), freeze)
        .await
        .expect("Freeze finished after Abort")
        .unwrap()
        .expect("Freeze succeeded");
    assert_eq!(
        writer.events(),
        vec![format!("Freeze {set}"), format!("Abort {set}")]
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abort_is_delivered_while_freeze_is_running() {
    abort_during_freeze(FreezeMode::UntilAbort).await;
}

#[tokio::test(flavor = "current_thread")]
async fn abort_is_delivered_while_freeze_is_running_on_a_current_thread_runtime() {
    abort_during_freeze(FreezeMode::UntilAbort).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn abort_gets_through_a_freeze_that_blocks_its_thread() {
    abort_during_freeze(FreezeMode::BlockThread(Duration::from_secs(3))).await;
}

#[tokio::test(flavor = "current_thread")]
async fn abort_gets_through_a_blocking_freeze_on_a_current_thread_runtime() {
    abort_during_freeze(FreezeMode::BlockThread(Duration::from_secs(3))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registers_again_when_vssd_restarts() {
    let bus = TestBus::start();
    let mut host = FakeHost::start(&bus).await;
    let writer = TestWriter::new("phoenix", FreezeMode::Quick);
    let svc = start(writer.clone(), &bus).await;
    let first = host.next_registration(WAIT).await;
    wait_state(&svc, |s| matches!(s, RegistrationState::Registered { .. })).await;

    host.stop().await;
    wait_state(&svc, |s| *s == RegistrationState::WaitingForVssd).await;
    assert_eq!(svc.instance_id(), None);

    let mut host = FakeHost::start(&bus).await;
    let second = host.next_registration(Duration::from_secs(3)).await;
    assert_eq!(second.name, first.name);
    assert_eq!(second.writer_id, first.writer_id);
    assert_eq!(second.path, first.path);
    assert_eq!(second.sender, first.sender);
    assert_ne!(second.instance_id, first.instance_id);
    let id = tokio::time::timeout(WAIT, svc.registered())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(id, second.instance_id);
    // The new vssd can drive the writer.
    host.writer(&second).await.freeze("").await.unwrap();
    assert_eq!(writer.events(), vec![format!("Freeze {}", Guid::NULL)]);

    // And once more, to be sure it keeps watching.
    host.stop().await;
    let mut host = FakeHost::start(&bus).await;
    let third = host.next_registration(Duration::from_secs(3)).await;
    assert_eq!(third.writer_id, first.writer_id);
    svc.stop().await;
    assert_eq!(
        host.next_event(WAIT).await,
        HostEvent::Unregistered(third.instance_id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stop_unregisters_and_stops_serving() {
    let bus = TestBus::start();
    let mut host = FakeHost::start(&bus).await;
    // A connection of the test's own, so that it stays open after stop()
    // and the removal of the object can be seen.
    let conn = bus.connect().await;
    let svc = WriterService::start(
        TestWriter::new("stopper", FreezeMode::Quick),
        RunOptions {
            connection: Some(conn.clone()),
            ..RunOptions::default()
        },
    )
    .await
    .unwrap();
    let reg = host.next_registration(WAIT).await;
    let mut state = svc.watch_state();
    svc.stop().await;
    assert_eq!(
        host.next_event(WAIT).await,
        HostEvent::Unregistered(reg.instance_id.clone())
    );
    assert_eq!(*state.borrow_and_update(), RegistrationState::Stopped);
    let err = host.writer(&reg).await.identify().await.unwrap_err();
    assert_eq!(
        dbus_error(&err).0,
        "org.freedesktop.DBus.Error.UnknownObject"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropping_the_service_unregisters_too() {
    let bus = TestBus::start();
    let mut host = FakeHost::start(&bus).await;
    let svc = start(TestWriter::new("dropped", FreezeMode::Quick), &bus).await;
    let reg = host.next_registration(WAIT).await;
    drop(svc);
    assert_eq!(
        host.next_event(WAIT).await,
        HostEvent::Unregistered(reg.instance_id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_writers_share_one_connection_at_distinct_paths() {
    let bus = TestBus::start();
    let mut host = FakeHost::start(&bus).await;
    let conn = bus.connect().await;
    let a = TestWriter::new("writer-a", FreezeMode::Quick);
    let b = TestWriter::new("writer-b", FreezeMode::Quick);
    let on = |path: &str| RunOptions {
        object_path: path.to_string(),
        connection: Some(conn.clone()),
        ..RunOptions::default()
    };
    let svc_a = WriterService::start(a.clone(), on("/org/vss/Writer/a"))
        .await
        .unwrap();
    let svc_b = WriterService::start(b.clone(), on("/org/vss/Writer/b"))
        .await
        .unwrap();
    // The same path twice on one connection is refused.
    let err = WriterService::start(
        TestWriter::new("writer-c", FreezeMode::Quick),
        on("/org/vss/Writer/a"),
    )
    .await
    .err()
    .expect("a second writer at the same path");
    assert!(matches!(err, SdkError::PathInUse { .. }), "{err}");

    let mut regs = [
        host.next_registration(WAIT).await,
        host.next_registration(WAIT).await,
    ];
    regs.sort_by(|x, y| x.name.cmp(&y.name));
    assert_eq!(regs[0].name, "writer-a");
    assert_eq!(regs[0].path, "/org/vss/Writer/a");
    assert_eq!(regs[1].name, "writer-b");
    assert_eq!(regs[1].path, "/org/vss/Writer/b");
    assert_eq!(regs[0].sender, regs[1].sender);
    assert_eq!(
        host.writer(&regs[0]).await.identify().await.unwrap(),
        a.wmd()
    );
    assert_eq!(
        host.writer(&regs[1]).await.identify().await.unwrap(),
        b.wmd()
    );

    // Stopping one leaves the other served.
    svc_a.stop().await;
    assert_eq!(
        host.next_event(WAIT).await,
        HostEvent::Unregistered(regs[0].instance_id.clone())
    );
    assert_eq!(
        host.writer(&regs[1]).await.identify().await.unwrap(),
        b.wmd()
    );
    svc_b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_options_are_reported() {
    let err = WriterService::start(
        Arc::new(MinimalWriter),
        RunOptions {
            object_path: "not/a/path".into(),
            ..RunOptions::default()
        },
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(err, SdkError::InvalidObjectPath { .. }), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let missing = format!("unix:path={}", dir.path().join("no-bus").display());
    let err = WriterService::start(
        Arc::new(MinimalWriter),
        RunOptions {
            bus_address: Some(missing.clone()),
            ..RunOptions::default()
        },
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(err, SdkError::Connect { .. }), "{err}");
    assert!(err.to_string().contains(&missing), "{err}");
    let vss = vss_types::VssError::from(err);
    assert_eq!(vss.code, vss_types::VssCode::WriterInfrastructure);
    assert!(vss.hint().contains("DBUS_SYSTEM_BUS_ADDRESS"));
}
