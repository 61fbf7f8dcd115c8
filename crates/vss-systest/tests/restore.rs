//! The restore sequence end to end: a backup through vssd saves its Backup
//! Components Document, then a restore session started from it brings
//! PreRestore and PostRestore to the real writer processes (Rust SDK
//! writers, an exec-hook writer) whose components are selected, through
//! vss-client. All privileged (`priv_`): the backup needs a loop-mounted
//! btrfs volume.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use vss_client::{Client, SessionOptions};
use vss_testkit::system::{bin, wait_for, Bus, Daemon};
use vss_testkit::{privileged, LoopFs};
use vss_types::documents::{
    BackupComponents, BackupType, ComponentType, FileRestoreStatus, RestoreTarget,
};
use vss_types::{Guid, VssCode, WriterState};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn writer(d: &Daemon, name: &str, log: &Path, extra: &[&str]) -> Proc {
    let c = Command::new(bin("noop_writer"))
        .args(["--name", name, "--log"])
        .arg(log)
        .args(extra)
        .env("DBUS_SYSTEM_BUS_ADDRESS", &d.address)
        .stdout(Stdio::null())
        .spawn()
        .expect("start noop_writer");
    Proc(c)
}

/// The `vssadmin list writers` block of one writer.
fn writer_block(d: &Daemon, name: &str) -> Vec<String> {
    let o = d.vssadmin(&["list", "writers"]);
    o.ok();
    o.stdout
        .split(&format!("Writer name: '{name}'"))
        .nth(1)
        .unwrap_or_else(|| panic!("'{name}' is not listed:\n{}", o.stdout))
        .lines()
        .take(6)
        .map(|l| l.trim().to_string())
        .take_while(|l| !l.starts_with("Writer name:"))
        .collect()
}

fn writers_listed(d: &Daemon, names: &[&str]) -> bool {
    let o = d.vssadmin(&["list", "writers"]);
    names
        .iter()
        .all(|n| o.stdout.contains(&format!("Writer name: '{n}'")))
}

fn events(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

fn scratch_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let p = std::env::temp_dir().join(format!("vss-restore-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// A requestor connected to this test's vssd (not through the environment:
/// tests of this binary run in parallel, each with its own bus).
async fn client(d: &Daemon) -> Client {
    let conn = zbus::connection::Builder::address(d.address.as_str())
        .unwrap()
        .build()
        .await
        .unwrap();
    Client::with_connection(&conn).await.unwrap()
}

#[test]
fn priv_sys_restore_reaches_the_selected_writers() {
    if !privileged("priv_sys_restore_reaches_the_selected_writers") {
        return;
    }
    let bus = Bus::start();
    let logs = scratch_dir();
    let hook_log = logs.join("hooks.log");
    let hook = logs.join("hook.sh");
    std::fs::write(
        &hook,
        format!("#!/bin/sh\necho \"$VSS_EVENT\" >> {}\n", hook_log.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let staging = scratch_dir();
    std::fs::write(
        staging.join("hooked-app.toml"),
        format!(
            "name = \"hooked-app\"\n\n[[component]]\nname = \"data\"\nfiles = [{{ path = \"/srv/app\" }}]\n\n\
             [hooks]\npre-restore = [\"{h}\"]\npost-restore = [\"{h}\"]\n",
            h = hook.display()
        ),
    )
    .unwrap();
    let d = Daemon::start_with_writers(&bus, "", &staging);
    let fs = LoopFs::new("btrfs", 256);
    let mp = fs.mount_point.display().to_string();

    let (good_log, bad_log, idle_log, gone_log) = (
        logs.join("good.log"),
        logs.join("bad.log"),
        logs.join("idle.log"),
        logs.join("gone.log"),
    );
    let good = writer(&d, "restore-good", &good_log, &[]);
    let _bad = writer(
        &d,
        "restore-bad",
        &bad_log,
        &[
            "--fail-at",
            "PreRestore:retryable",
            "--fail-at",
            "PostRestore:nonretryable",
        ],
    );
    let _idle = writer(&d, "restore-idle", &idle_log, &[]);
    let gone = writer(&d, "restore-gone", &gone_log, &[]);
    let all = [
        "restore-good",
        "restore-bad",
        "restore-idle",
        "restore-gone",
        "hooked-app",
    ];
    assert!(
        wait_for(Duration::from_secs(20), || writers_listed(&d, &all)),
        "writers did not register: {}",
        d.vssadmin(&["list", "writers"]).stdout
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let c = rt.block_on(client(&d));

    // The backup: one component per writer, the BCD saved at the end.
    let saved = rt.block_on(async {
        let mut bc = c
            .backup_components(SessionOptions {
                select_components: true,
                ..Default::default()
            })
            .await
            .unwrap();
        let md = bc.gather_writer_metadata().await.unwrap();
        let mut doc = BackupComponents::new(BackupType::Full, true);
        for name in all {
            let st = &md
                .iter()
                .find(|e| e.status.name == name)
                .unwrap_or_else(|| panic!("{name} did not answer Identify"))
                .status;
            doc.add_component(
                st.writer_id,
                st.instance_id,
                ComponentType::FileGroup,
                "Data",
                name,
            )
            .unwrap();
        }
        bc.bcd = doc.to_xml();
        bc.prepare_for_backup().await.unwrap();
        bc.start_snapshot_set().await.unwrap();
        bc.add_to_snapshot_set(&mp, Guid::NULL).await.unwrap();
        bc.do_snapshot_set().await.unwrap();
        bc.backup_complete().await.unwrap();
        let saved = bc.bcd.clone();
        bc.end().await.unwrap();
        saved
    });
    assert!(saved.contains("SNAPSHOT_SET_DESCRIPTION"), "{saved}");
    let saved_doc = BackupComponents::from_xml(&saved).unwrap();
    assert_eq!(saved_doc.writers.len(), 5);
    // One writer is not running at restore time.
    drop(gone);
    assert!(wait_for(Duration::from_secs(10), || !writers_listed(
        &d,
        &["restore-gone"]
    )));

    // The good writer restarts: the restore must find it by its class.
    let old_instance = rt
        .block_on(c.list_writers())
        .unwrap()
        .into_iter()
        .find(|w| w.name == "restore-good")
        .unwrap()
        .instance_id;
    drop(good);
    let _good = writer(&d, "restore-good", &good_log, &[]);
    assert!(
        wait_for(Duration::from_secs(20), || rt
            .block_on(c.list_writers())
            .unwrap()
            .iter()
            .any(
                |w| w.name == "restore-good" && w.instance_id != old_instance
            )),
        "the restarted writer did not register"
    );
    let before_restore = events(&good_log).len();

    rt.block_on(async {
        let mut rc = c.restore_components(&saved).await.unwrap();
        assert!(!rc.session_id().is_empty());
        assert_eq!(rc.bcd, saved);
        let md = rc.gather_writer_metadata().await.unwrap();
        assert_eq!(md.len(), 4, "restore-gone is not running");
        let idle_id = md
            .iter()
            .find(|e| e.status.name == "restore-idle")
            .unwrap()
            .status
            .writer_id;
        let bad_id = md
            .iter()
            .find(|e| e.status.name == "restore-bad")
            .unwrap()
            .status
            .writer_id;
        // The absent writer's section is the one no live writer matches.
        let gone_id = saved_doc
            .writers
            .iter()
            .map(|s| s.writer_id)
            .find(|w| !md.iter().any(|e| e.status.writer_id == *w))
            .unwrap();

        // Everything but the idle writer's component is restored.
        let mut doc = BackupComponents::from_xml(&rc.bcd).unwrap();
        for s in doc.writers.iter_mut().filter(|s| s.writer_id != idle_id) {
            for comp in &mut s.components {
                comp.selected_for_restore = true;
                comp.restore_target = RestoreTarget::Original;
            }
        }
        rc.bcd = doc.to_xml();
        let e = rc.pre_restore().await.unwrap_err();
        assert_eq!(e.code, VssCode::WriterErrorRetryable, "{e}");
        assert!(e.message.contains("restore-bad"), "{e}");
        assert!(e.message.contains("PreRestore"), "{e}");
        // The document came back even so, the failure on the bad
        // writer's component.
        let doc = BackupComponents::from_xml(&rc.bcd).unwrap();
        let bad_section = doc.writers.iter().find(|s| s.writer_id == bad_id).unwrap();
        assert!(
            bad_section.components[0]
                .pre_restore_failure_message
                .as_deref()
                .unwrap_or("")
                .contains("VSS_E_WRITERERROR_RETRYABLE"),
            "{}",
            rc.bcd
        );
        assert!(doc
            .writers
            .iter()
            .all(|s| s.components[0].selected_for_restore == (s.writer_id != idle_id)));
        // The absent writer refused nothing: no failure message, the
        // requestor decides.
        let gone_section = doc.writers.iter().find(|s| s.writer_id == gone_id).unwrap();
        assert!(gone_section.components[0]
            .pre_restore_failure_message
            .is_none());

        let block = writer_block(&d, "restore-bad");
        assert!(block.contains(&"State: [13] Failed".into()), "{block:?}");
        assert!(
            block.contains(&"Last error: Retryable error".into()),
            "{block:?}"
        );
        assert!(
            block.iter().any(|l| l.starts_with("Last error message:")
                && l.contains("told to fail at PreRestore")),
            "{block:?}"
        );
        let good_block = writer_block(&d, "restore-good");
        assert!(
            good_block.contains(&"State: [1] Stable".into()),
            "{good_block:?}"
        );

        let st = rc.gather_writer_status().await.unwrap();
        let state = |name: &str| st.iter().find(|w| w.name == name).unwrap().state;
        assert_eq!(st.len(), 3, "{st:?}");
        assert_eq!(state("restore-bad"), WriterState::FailedAtPreRestore);
        assert_eq!(state("restore-good"), WriterState::Stable);
        assert_eq!(state("hooked-app"), WriterState::Stable);

        // The files are restored (or not); the requestor says so.
        let mut doc = BackupComponents::from_xml(&rc.bcd).unwrap();
        for s in doc.writers.iter_mut().filter(|s| s.writer_id != idle_id) {
            s.components[0].file_restore_status = if s.writer_id == bad_id {
                FileRestoreStatus::None
            } else {
                FileRestoreStatus::All
            };
        }
        rc.bcd = doc.to_xml();
        let e = rc.post_restore().await.unwrap_err();
        assert_eq!(e.code, VssCode::WriterErrorNonRetryable, "{e}");
        assert!(e.message.contains("PostRestore"), "{e}");
        let block = writer_block(&d, "restore-bad");
        assert!(block.contains(&"State: [14] Failed".into()), "{block:?}");
        assert!(
            block.contains(&"Last error: Non-retryable error".into()),
            "{block:?}"
        );
        let st = rc.gather_writer_status().await.unwrap();
        assert_eq!(
            st.iter().find(|w| w.name == "restore-bad").unwrap().state,
            WriterState::FailedAtPostRestore
        );
        rc.end().await.unwrap();
    });

    // The restarted writer got exactly Identify, PreRestore, PostRestore.
    assert_eq!(
        events(&good_log)[before_restore..],
        ["Identify", "PreRestore", "PostRestore"]
    );
    let bad = events(&bad_log);
    assert!(bad.contains(&"PreRestore".to_string()), "{bad:?}");
    assert!(bad.contains(&"PostRestore".to_string()), "{bad:?}");
    let idle = events(&idle_log);
    assert!(
        !idle.iter().any(|e| e.contains("Restore")),
        "the idle writer's component was not selected: {idle:?}"
    );
    assert_eq!(idle.last().map(String::as_str), Some("Identify"));
    assert_eq!(events(&hook_log), ["pre-restore", "post-restore"]);
    let gone = events(&gone_log);
    assert!(!gone.iter().any(|e| e.contains("Restore")), "{gone:?}");
    assert!(d.log_text().contains("did not send PreRestore"));
    assert!(!d.log_text().contains("panicked"));
    let _ = std::fs::remove_dir_all(&logs);
    let _ = std::fs::remove_dir_all(&staging);
}

#[test]
fn priv_sys_restore_refuses_bad_documents_and_strangers() {
    if !privileged("priv_sys_restore_refuses_bad_documents_and_strangers") {
        return;
    }
    let bus = Bus::start();
    let d = Daemon::start(&bus, "");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = client(&d).await;
        for bad in [
            "",
            "<BACKUP_COMPONENTS",
            "<!DOCTYPE x [<!ENTITY a \"b\">]><BACKUP_COMPONENTS/>",
        ] {
            let e = match c.restore_components(bad).await {
                Ok(_) => panic!("{bad:?} was accepted"),
                Err(e) => e,
            };
            assert_eq!(e.code, VssCode::InvalidXmlDocument, "{bad:?}: {e}");
            assert!(e.hint.is_some(), "{bad:?}: no hint in {e:?}");
            assert!(e.hint().contains("Backup Components Document"), "{e:?}");
        }
        // A restore session takes no backup steps.
        let saved = BackupComponents::new(BackupType::Full, true).to_xml();
        let mut rc = c.restore_components(&saved).await.unwrap();
        let e = rc.post_restore().await.unwrap_err();
        assert_eq!(e.code, VssCode::BadState, "{e}");
        // A refused call leaves the requestor's document alone.
        assert_eq!(rc.bcd, saved);
        rc.gather_writer_metadata().await.unwrap();
        rc.pre_restore().await.unwrap();
        rc.post_restore().await.unwrap();
        assert!(rc.gather_writer_status().await.unwrap().is_empty());
        rc.end().await.unwrap();
    });

    let busctl = |prefix: &[&str], args: &[&str]| {
        let mut cmd = Command::new(prefix.first().copied().unwrap_or("busctl"));
        let mut full: Vec<&str> = prefix.iter().skip(1).copied().collect();
        if !prefix.is_empty() {
            full.push("busctl");
        }
        full.extend_from_slice(&[
            "--address",
            &d.address,
            "call",
            "org.vss.Vssd",
            "/org/vss/Vssd",
            "org.vss.Requestor1",
        ]);
        full.extend_from_slice(args);
        cmd.args(&full);
        d.run(&mut cmd)
    };
    let doc = BackupComponents::new(BackupType::Full, false).to_xml();
    // Not anyone may start a restore.
    let o = busctl(
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ],
        &["StartRestoreSession", "ss", "", &doc],
    );
    assert_ne!(o.code, 0, "{o:#?}");
    assert!(o.stderr.contains("may not restore components"), "{o:#?}");
    // Unknown options are refused, not ignored.
    let o = busctl(
        &[],
        &[
            "StartRestoreSession",
            "ss",
            "{\"restore_type\":\"by-copy\"}",
            &doc,
        ],
    );
    assert_ne!(o.code, 0, "{o:#?}");
    assert!(o.stderr.contains("bad restore session options"), "{o:#?}");
    // Sessions are checked like any other.
    let o = busctl(
        &[],
        &["PreRestore", "ss", &Guid::new_random().to_string(), ""],
    );
    assert_ne!(o.code, 0, "{o:#?}");
    assert!(o.stderr.contains("not found"), "{o:#?}");
    d.vssadmin(&["list", "writers"]).ok();
}
