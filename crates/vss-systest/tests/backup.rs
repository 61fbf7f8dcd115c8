//! vssbackup end to end: vssd on a private bus, exec-hook writers from
//! writers.d, loop-mounted btrfs volumes, the real vssbackup binary.
//! All privileged (`priv_`).

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use vss_testkit::system::{bin, Bus, Daemon, Output};
use vss_testkit::{privileged, write_file, LoopFs, MountGuard};

fn writers_dir(decls: &[(&str, String)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (name, text) in decls {
        std::fs::write(d.path().join(format!("{name}.toml")), text).unwrap();
    }
    d
}

fn vssbackup(d: &Daemon, args: &[&str]) -> Output {
    d.run(Command::new(bin("vssbackup")).args(args))
}

fn json_events(o: &Output) -> Vec<serde_json::Value> {
    o.stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn summary(dest: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dest.join("backup.json")).unwrap()).unwrap()
}

fn component<'a>(s: &'a serde_json::Value, key: &str) -> &'a serde_json::Value {
    s["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["key"] == key)
        .unwrap_or_else(|| panic!("no component {key} in {s:#}"))
}

/// Live path -> manifest entry.
fn manifest(dest: &Path) -> BTreeMap<String, serde_json::Value> {
    std::fs::read_to_string(dest.join("manifest.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v["path"].as_str()?.to_owned(), v)))
        .collect()
}

#[test]
fn priv_backup_exclusions_alternate_locations_and_a_failed_component() {
    if !privileged("priv_backup_exclusions_alternate_locations_and_a_failed_component") {
        return;
    }
    let fs = LoopFs::new("btrfs", 256);
    let v = fs.mount_point.display().to_string();
    write_file(&fs.path("app/data/a.db"), b"a-live");
    write_file(&fs.path("app/data/b.db"), b"b-excluded");
    write_file(&fs.path("app/data/notes.txt"), b"not a db");
    write_file(&fs.path("app/data/sub/c.db"), b"c-live");
    write_file(&fs.path("app/dump/a.db"), b"a-from-dump");
    write_file(&fs.path("plain/x.txt"), b"x");
    write_file(&fs.path("plain/cache.tmp"), b"excluded by a writer");
    write_file(&fs.path("secret/s.db"), b"unreadable");
    write_file(&fs.path("secret/t.db"), b"readable");
    // The secret file belongs to someone else and no one may read it; the
    // backup runs without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH below.
    std::os::unix::fs::chown(fs.path("secret/s.db"), Some(4321), Some(4321)).unwrap();
    std::fs::set_permissions(
        fs.path("secret/s.db"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    // Another filesystem mounted inside the volume is not entered.
    std::fs::create_dir_all(fs.path("app/data/mnt")).unwrap();
    Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(fs.path("app/data/mnt"))
        .status()
        .unwrap();
    let _m = MountGuard::new(&fs.path("app/data/mnt"));
    write_file(&fs.path("app/data/mnt/inner.db"), b"other fs");

    let app = format!(
        r#"name = "AppWriter"
[[component]]
name = "data"
files = [{{ path = "{v}/app/data", filespec = "*.db" }}]
[[component]]
name = "dumped"
files = [{{ path = "{v}/app/restored", filespec = "*.db", alternate-location = "{v}/app/dump" }}]
[[exclude]]
path = "{v}/app/data"
filespec = "b.db"
recursive = false
[[exclude]]
path = "{v}"
filespec = "*.tmp"
"#
    );
    let secret = format!(
        r#"name = "SecretWriter"
[[component]]
name = "secret"
files = [{{ path = "{v}/secret" }}]
"#
    );
    let wd = writers_dir(&[("10-app", app), ("20-secret", secret)]);
    let bus = Bus::start();
    let d = Daemon::start_with_writers(&bus, "", wd.path());
    let out_dir = tempfile::tempdir().unwrap();
    let dest = out_dir.path().join("backup");
    let o = d.run(
        Command::new("setpriv")
            .args([
                "--bounding-set",
                "-dac_override,-dac_read_search",
                "--inh-caps",
                "-all",
                "--",
            ])
            .arg(bin("vssbackup"))
            .args(["--json", "backup", "--to"])
            .arg(&dest)
            .args([
                "--writer",
                "AppWriter",
                "--writer",
                "SecretWriter",
                "--include",
            ])
            .arg(fs.path("plain")),
    );
    assert_eq!(o.code, 1, "one component fails, so exit 1: {o:#?}");
    let ev = json_events(&o);
    assert!(ev
        .iter()
        .any(|e| e["event"] == "done" && e["succeeded"] == false));

    let s = summary(&dest);
    assert_eq!(component(&s, "AppWriter:data")["succeeded"], true);
    assert_eq!(component(&s, "AppWriter:dumped")["succeeded"], true);
    let sec = component(&s, "SecretWriter:secret");
    assert_eq!(sec["succeeded"], false);
    let why = sec["failure"].as_str().unwrap();
    assert!(
        why.contains("s.db") && why.to_lowercase().contains("permission denied"),
        "{why}"
    );
    assert_eq!(s["includes"][0]["consistency"], "crash-consistent");

    let m = manifest(&dest);
    let has = |p: &str| m.contains_key(&format!("{v}/{p}"));
    assert!(has("app/data/a.db") && has("app/data/sub/c.db"));
    assert!(!has("app/data/b.db"), "writer exclusion");
    assert!(!has("app/data/notes.txt"), "filespec *.db");
    assert!(!has("app/data/mnt/inner.db"), "mount point entered");
    assert!(has("plain/x.txt"));
    assert!(!has("plain/cache.tmp"), "exclusions apply to --include too");
    // Read from the alternate location, recorded under the normal path.
    assert!(has("app/restored/a.db") && !has("app/dump/a.db"));
    let alt = &m[&format!("{v}/app/restored/a.db")];
    assert_eq!(
        alt["blake3"].as_str().unwrap(),
        blake3::hash(b"a-from-dump").to_hex().as_str()
    );
    assert_eq!(
        m[&format!("{v}/app/data/a.db")]["component"],
        "AppWriter:data"
    );
    assert!(m[&format!("{v}/plain/x.txt")].get("component").is_none());

    // The BCD says which component failed, which file and why.
    let bcd = std::fs::read_to_string(dest.join("backup-components.xml")).unwrap();
    let doc = vss_types::documents::BackupComponents::from_xml(&bcd).unwrap();
    let comps: Vec<_> = doc.writers.iter().flat_map(|w| &w.components).collect();
    let secret_c = comps.iter().find(|c| c.name == "secret").unwrap();
    assert_eq!(secret_c.backup_succeeded, Some(false));
    assert!(secret_c
        .backup_failure_message
        .as_deref()
        .unwrap()
        .contains("s.db"));
    let data_c = comps.iter().find(|c| c.name == "data").unwrap();
    assert_eq!(data_c.backup_succeeded, Some(true));
    // One writer metadata document per writer.
    let wmds: Vec<_> = std::fs::read_dir(dest.join("writers")).unwrap().collect();
    assert_eq!(wmds.len(), 2);
    // Files in the shadow, not the live volume: a change after the backup
    // is not in it, and the shadow is gone with the session.
    assert!(vssbackup(&d, &["verify", dest.to_str().unwrap()])
        .stdout
        .starts_with("OK"));
    let l = vssbackup(&d, &["list", dest.to_str().unwrap()]);
    assert!(
        l.stdout.contains("SecretWriter:secret") && l.stdout.contains("FAILED"),
        "{l:#?}"
    );
    let shadows = d.vssadmin(&["list", "shadows"]);
    assert!(!shadows.stdout.contains("Shadow Copy ID"), "{shadows:#?}");
}

#[test]
fn priv_backup_tar_zst_and_verify_catches_corruption() {
    if !privileged("priv_backup_tar_zst_and_verify_catches_corruption") {
        return;
    }
    let fs = LoopFs::new("btrfs", 256);
    let v = fs.mount_point.display().to_string();
    for i in 0..20 {
        write_file(
            &fs.path(&format!("data/f{i}")),
            format!("file {i}").repeat(1000).as_bytes(),
        );
    }
    let app = format!(
        "name = \"App\"\n[[component]]\nname = \"data\"\nfiles = [{{ path = \"{v}/data\" }}]\n"
    );
    let wd = writers_dir(&[("app", app)]);
    let bus = Bus::start();
    let d = Daemon::start_with_writers(&bus, "", wd.path());
    let out = tempfile::tempdir().unwrap();
    let tar = out.path().join("b.tar.zst");
    vssbackup(&d, &["backup", "--to", tar.to_str().unwrap()]).ok();
    assert!(vssbackup(&d, &["verify", tar.to_str().unwrap()])
        .ok()
        .stdout
        .starts_with("OK"));
    // Restore to another place.
    let alt = out.path().join("alt");
    vssbackup(
        &d,
        &[
            "restore",
            tar.to_str().unwrap(),
            "--to",
            alt.to_str().unwrap(),
        ],
    )
    .ok();
    let restored = alt.join(fs.path("data/f3").strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read(restored).unwrap(),
        "file 3".repeat(1000).as_bytes()
    );

    // A directory backup with one flipped byte: verify and restore catch it.
    let dir = out.path().join("dir");
    vssbackup(&d, &["backup", "--to", dir.to_str().unwrap()]).ok();
    let stored = dir
        .join("data")
        .join(fs.path("data/f5").strip_prefix("/").unwrap());
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[10] ^= 0x40;
    std::fs::write(&stored, &bytes).unwrap();
    let o = vssbackup(&d, &["verify", dir.to_str().unwrap()]);
    assert_eq!(o.code, 1, "{o:#?}");
    assert!(
        o.stdout.contains("f5") && o.stdout.contains("DAMAGED"),
        "{o:#?}"
    );
    std::fs::write(fs.path("data/f5"), b"live now").unwrap();
    let o = vssbackup(&d, &["restore", dir.to_str().unwrap()]);
    assert_eq!(o.code, 1, "{o:#?}");
    assert!(o.stderr.contains("f5"), "{o:#?}");
    assert_eq!(
        std::fs::read(fs.path("data/f5")).unwrap(),
        b"live now",
        "corrupt copy replaced a live file"
    );
    assert_eq!(
        std::fs::read(fs.path("data/f4")).unwrap(),
        "file 4".repeat(1000).as_bytes()
    );
}

/// Owner and mode survive the round trip (data written as root here).
#[test]
fn priv_backup_keeps_owner_mode_and_mtime() {
    if !privileged("priv_backup_keeps_owner_mode_and_mtime") {
        return;
    }
    let fs = LoopFs::new("btrfs", 256);
    write_file(&fs.path("d/f"), b"x");
    std::os::unix::fs::chown(fs.path("d/f"), Some(1234), Some(99)).unwrap();
    std::fs::set_permissions(fs.path("d/f"), std::fs::Permissions::from_mode(0o640)).unwrap();
    let before = std::fs::metadata(fs.path("d/f")).unwrap();
    let bus = Bus::start();
    let d = Daemon::start(&bus, "");
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("b");
    vssbackup(
        &d,
        &[
            "backup",
            "--to",
            dest.to_str().unwrap(),
            "--include",
            fs.path("d").to_str().unwrap(),
        ],
    )
    .ok();
    std::fs::remove_dir_all(fs.path("d")).unwrap();
    vssbackup(&d, &["restore", dest.to_str().unwrap()]).ok();
    let after = std::fs::metadata(fs.path("d/f")).unwrap();
    assert_eq!(
        (after.uid(), after.gid(), after.mode() & 0o7777),
        (1234, 99, 0o640)
    );
    assert_eq!(after.mtime(), before.mtime());
    assert_eq!(after.mtime_nsec(), before.mtime_nsec());
}

/// Every file under `root` (relative path -> content).
fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(
                    p.strip_prefix(root).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Rewrites and adds files under `dir` until dropped.
struct Churn {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Churn {
    fn start(dir: PathBuf) -> Churn {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut n = 0u64;
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let _ = std::fs::write(
                    dir.join(format!("f{}", n % 40)),
                    format!("round {n}\n").repeat(50),
                );
                let _ = std::fs::write(dir.join(format!("new{n}")), b"n");
                std::thread::sleep(std::time::Duration::from_millis(3));
            }
            n
        });
        Churn {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Exposes the only shadow of `d` read-only at a new dir and returns it.
fn expose_only_shadow(d: &Daemon, at: &Path) -> String {
    let l = d.vssadmin(&["list", "shadows"]);
    let id = l
        .stdout
        .lines()
        .find_map(|x| x.trim().strip_prefix("Shadow Copy ID: "))
        .unwrap_or_else(|| panic!("no kept shadow: {l:#?}"))
        .to_string();
    d.vssadmin(&[
        "expose",
        "shadow",
        &format!("/shadow={id}"),
        &format!("/to={}", at.display()),
        "/allowusers",
    ])
    .ok();
    id
}

fn exec_tool_case(tool: &str) {
    let fs = LoopFs::new("btrfs", 512);
    let data = fs.path("data");
    for i in 0..40 {
        write_file(
            &data.join(format!("f{i}")),
            format!("initial {i}\n").repeat(100).as_bytes(),
        );
    }
    let bus = Bus::start();
    let d = Daemon::start(&bus, "");
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    let env_log = work.path().join("env.txt");
    let script = match tool {
        "restic" => format!(
            "set -e; env | grep ^VSS_ > {env}; restic -q -r {repo} init; restic -q -r {repo} backup --no-cache {{}}",
            env = env_log.display(),
            repo = repo.display()
        ),
        _ => format!(
            "set -e; env | grep ^VSS_ > {env}; borg init -e none {repo}; borg create {repo}::one {{}}",
            env = env_log.display(),
            repo = repo.display()
        ),
    };
    let churn = Churn::start(data.clone());
    std::thread::sleep(std::time::Duration::from_millis(100));
    let o = d.run(
        Command::new(bin("vssbackup"))
            .args(["exec", "--keep", "--for"])
            .arg(&data)
            .args(["--", "sh", "-c", &script])
            .env("RESTIC_PASSWORD", "test")
            .env("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "yes")
            .env("BORG_BASE_DIR", work.path()),
    );
    // The live data keeps changing while the tool runs and after.
    std::thread::sleep(std::time::Duration::from_millis(100));
    drop(churn);
    assert_eq!(o.code, 0, "{o:#?}");
    let env = std::fs::read_to_string(&env_log).unwrap();
    assert!(
        env.contains("VSS_SHADOW_SET={") && env.contains("VSS_SHADOW_1={"),
        "{env}"
    );
    let shadow_data = env
        .lines()
        .find_map(|l| l.strip_prefix("VSS_PATH_1="))
        .unwrap()
        .to_string();

    // Restore with the tool.
    let target = work.path().join("restored");
    std::fs::create_dir(&target).unwrap();
    let r = match tool {
        "restic" => Command::new("restic")
            .args(["-q", "-r"])
            .arg(&repo)
            .args(["restore", "latest", "--target"])
            .arg(&target)
            .env("RESTIC_PASSWORD", "test")
            .env("RESTIC_CACHE_DIR", work.path().join("cache"))
            .output()
            .unwrap(),
        _ => Command::new("borg")
            .arg("extract")
            .arg(format!("{}::one", repo.display()))
            .current_dir(&target)
            .env("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "yes")
            .env("BORG_BASE_DIR", work.path())
            .output()
            .unwrap(),
    };
    assert!(r.status.success(), "{tool} restore: {r:?}");
    let restored = tree(&target.join(shadow_data.trim_start_matches('/')));

    // The kept shadow, exposed again: the tool's restore equals it.
    let at = work.path().join("shadow");
    expose_only_shadow(&d, &at);
    let _g = MountGuard::new(&at);
    let shadow = tree(&at.join("data"));
    assert_eq!(restored.len(), shadow.len());
    assert!(
        restored == shadow,
        "{tool}'s restore differs from the shadow copy"
    );
    let live = tree(&data);
    assert!(
        live != shadow,
        "the live data did not change during the run"
    );
    assert!(shadow.keys().any(|k| k.starts_with("new")) || shadow.len() == 40);
    d.vssadmin(&[
        "unexpose",
        "shadow",
        &format!("/shadow={}", expose_only_shadow_id(&d)),
    ]);
}

fn expose_only_shadow_id(d: &Daemon) -> String {
    d.vssadmin(&["list", "shadows"])
        .stdout
        .lines()
        .find_map(|x| x.trim().strip_prefix("Shadow Copy ID: "))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn priv_exec_restic_restore_equals_the_shadow() {
    if !privileged("priv_exec_restic_restore_equals_the_shadow") {
        return;
    }
    exec_tool_case("restic");
}

#[test]
fn priv_exec_borg_restore_equals_the_shadow() {
    if !privileged("priv_exec_borg_restore_equals_the_shadow") {
        return;
    }
    exec_tool_case("borg");
}

#[test]
fn priv_exec_marks_components_by_exit_code_and_deletes_shadows() {
    if !privileged("priv_exec_marks_components_by_exit_code_and_deletes_shadows") {
        return;
    }
    let fs = LoopFs::new("btrfs", 256);
    let v = fs.mount_point.display().to_string();
    write_file(&fs.path("data/a"), b"a");
    let log = tempfile::tempdir().unwrap();
    let events = log.path().join("events");
    let app = format!(
        "name = \"App\"\n[[component]]\nname = \"data\"\nfiles = [{{ path = \"{v}/data\" }}]\n\
         [hooks]\nbackup-complete = [\"/bin/sh\", \"-c\", \"echo complete >> {ev}\"]\n",
        ev = events.display()
    );
    let wd = writers_dir(&[("app", app)]);
    let bus = Bus::start();
    let d = Daemon::start_with_writers(&bus, "", wd.path());
    let o = d.run(
        Command::new(bin("vssbackup"))
            .args(["--json", "exec", "--for"])
            .arg(fs.path("data"))
            .args(["--", "sh", "-c", "test -f {}/a && exit 7"]),
    );
    assert_eq!(o.code, 7, "the command's exit code: {o:#?}");
    let ev = json_events(&o);
    assert!(ev.iter().any(|e| e["event"] == "component-result"
        && e["key"] == "App:data"
        && e["succeeded"] == false));
    assert!(std::fs::read_to_string(&events)
        .unwrap()
        .contains("complete"));
    assert!(!d
        .vssadmin(&["list", "shadows"])
        .stdout
        .contains("Shadow Copy ID"));
    let o = d.run(
        Command::new(bin("vssbackup"))
            .args(["--json", "exec", "--for"])
            .arg(fs.path("data"))
            .args(["--", "cat", "{}/a"]),
    );
    assert_eq!(o.code, 0, "{o:#?}");
    assert!(
        json_events(&o)
            .iter()
            .any(|e| e["event"] == "component-result"
                && e["key"] == "App:data"
                && e["succeeded"] == true),
        "{o:#?}"
    );
}

/// One writer per restore method, each with one component; a backup, the
/// live files changed, and a restore of everything.
#[test]
fn priv_restore_round_trip_for_every_restore_method() {
    if !privileged("priv_restore_round_trip_for_every_restore_method") {
        return;
    }
    let fs = LoopFs::new("btrfs", 256);
    let v = fs.mount_point.display().to_string();
    let work = tempfile::tempdir().unwrap();
    let events = work.path().join("events");
    let svc_log = work.path().join("services");
    // A service control command that really stops and starts a process,
    // and notes what the service's file held at that moment.
    let ctl = work.path().join("svcctl");
    std::fs::write(
        &ctl,
        format!(
            "#!/bin/sh\nverb=$1; svc=$2; f={v}/$svc/f; pid={w}/$svc.pid\n\
             echo \"$verb $svc $(cat $f 2>/dev/null)\" >> {log}\n\
             case $verb in\n  stop) [ -f $pid ] && kill $(cat $pid) && rm -f $pid ;;\n  \
             start) sleep 600 >/dev/null 2>&1 & echo $! > $pid ;;\nesac\n",
            w = work.path().display(),
            log = svc_log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let methods = [
        ("replace", "restore-if-can-replace", ""),
        ("notthere", "restore-if-not-there", ""),
        (
            "stopfirst",
            "stop-restore-start",
            "service = \"stopfirst\"\n",
        ),
        (
            "stopafter",
            "restore-stop-start",
            "service = \"stopafter\"\n",
        ),
        ("alternate", "restore-to-alternate-location", ""),
        ("reboot", "restore-at-reboot", ""),
        ("rebootifcannot", "restore-at-reboot-if-cannot-replace", ""),
        ("custom", "custom", ""),
    ];
    let mut decls = Vec::new();
    for (w, method, extra) in methods {
        write_file(&fs.path(&format!("{w}/f")), format!("orig {w}").as_bytes());
        let mut t = format!(
            "name = \"{w}\"\nrestore-method = \"{method}\"\n{extra}\
             [[component]]\nname = \"data\"\nfiles = [{{ path = \"{v}/{w}\" }}]\n"
        );
        if w == "alternate" {
            t += &format!(
                "[[alternate-location-mapping]]\npath = \"{v}/{w}\"\ndestination = \"{v}/alt-dest\"\n"
            );
        }
        t += &format!(
            "[hooks]\npre-restore = [\"/bin/sh\", \"-c\", \"echo pre {w} >> {ev}\"]\n\
             post-restore = [\"/bin/sh\", \"-c\", \"echo post {w} $(cat {v}/{w}/f 2>/dev/null) >> {ev}\"]\n",
            ev = events.display()
        );
        decls.push((w, t));
    }
    let decls: Vec<(&str, String)> = decls;
    let wd = writers_dir(&decls);
    let bus = Bus::start();
    let d = Daemon::start_with_writers(&bus, "", wd.path());
    // The services run before the restore.
    for s in ["stopfirst", "stopafter"] {
        Command::new(&ctl).args(["start", s]).status().unwrap();
    }
    let dest = work.path().join("backup");
    vssbackup(&d, &["backup", "--to", dest.to_str().unwrap()]).ok();
    for (w, _, _) in methods {
        std::fs::write(fs.path(&format!("{w}/f")), format!("changed {w}")).unwrap();
    }
    let pending = work.path().join("pending.json");
    let o = vssbackup(
        &d,
        &[
            "--json",
            "restore",
            dest.to_str().unwrap(),
            "--service-control",
            ctl.to_str().unwrap(),
            "--pending-file",
            pending.to_str().unwrap(),
        ],
    );
    assert_eq!(
        o.code, 1,
        "restore-if-not-there fails, the rest succeed: {o:#?}"
    );
    let results: BTreeMap<String, bool> = json_events(&o)
        .iter()
        .filter(|e| e["event"] == "component-result")
        .map(|e| {
            (
                e["key"].as_str().unwrap().to_owned(),
                e["succeeded"].as_bool().unwrap(),
            )
        })
        .collect();
    for (w, _, _) in methods {
        assert_eq!(
            results.get(&format!("{w}:data")),
            Some(&(w != "notthere")),
            "{w}: {o:#?}"
        );
    }
    let live = |w: &str| std::fs::read_to_string(fs.path(&format!("{w}/f"))).unwrap();
    assert_eq!(live("replace"), "orig replace");
    assert_eq!(
        live("notthere"),
        "changed notthere",
        "must not replace an existing file"
    );
    assert_eq!(live("stopfirst"), "orig stopfirst");
    assert_eq!(live("stopafter"), "orig stopafter");
    assert_eq!(live("alternate"), "changed alternate");
    assert_eq!(
        std::fs::read_to_string(fs.path("alt-dest/f")).unwrap(),
        "orig alternate"
    );
    assert_eq!(live("reboot"), "changed reboot", "staged for the next boot");
    assert_eq!(live("rebootifcannot"), "orig rebootifcannot");
    assert_eq!(live("custom"), "orig custom");
    // Stop before the files for stop-restore-start, after for
    // restore-stop-start; started again after both.
    let services = std::fs::read_to_string(&svc_log).unwrap();
    let lines: Vec<&str> = services.lines().collect();
    assert!(
        lines.contains(&"stop stopfirst changed stopfirst"),
        "{services}"
    );
    assert!(
        lines.contains(&"start stopfirst orig stopfirst"),
        "{services}"
    );
    assert!(
        lines.contains(&"stop stopafter orig stopafter"),
        "{services}"
    );
    assert!(
        lines.contains(&"start stopafter orig stopafter"),
        "{services}"
    );
    // PreRestore and PostRestore reached the writers; PostRestore saw the
    // restored file.
    let ev = std::fs::read_to_string(&events).unwrap();
    assert!(
        ev.contains("pre replace") && ev.contains("post replace orig replace"),
        "{ev}"
    );
    // The boot step puts the staged file in place.
    let o = vssbackup(
        &d,
        &[
            "restore",
            "--complete-pending",
            "--pending-file",
            pending.to_str().unwrap(),
        ],
    );
    o.ok();
    assert_eq!(
        live("reboot"),
        "orig reboot",
        "{o:#?} {:?} {:?}",
        std::fs::read_to_string(&pending),
        std::fs::read_dir(fs.path("reboot"))
            .unwrap()
            .collect::<Vec<_>>()
    );
    // Restore if not there works once the file is gone.
    std::fs::remove_file(fs.path("notthere/f")).unwrap();
    vssbackup(
        &d,
        &[
            "restore",
            dest.to_str().unwrap(),
            "--component",
            "notthere:data",
        ],
    )
    .ok();
    assert_eq!(live("notthere"), "orig notthere");
    // Any component to a directory of the user's choice.
    let alt = work.path().join("elsewhere");
    vssbackup(
        &d,
        &[
            "restore",
            dest.to_str().unwrap(),
            "--component",
            "replace:data",
            "--to",
            alt.to_str().unwrap(),
        ],
    )
    .ok();
    let moved = alt.join(fs.path("replace/f").strip_prefix("/").unwrap());
    assert_eq!(std::fs::read_to_string(moved).unwrap(), "orig replace");
    for s in ["stopfirst", "stopafter"] {
        Command::new(&ctl).args(["stop", s]).status().unwrap();
    }
}
