//! The LVM provider through vssd, in the VM lane (device-mapper and LVM):
//! shadows of thick and thin logical volumes under a live workload, one
//! instant across two volume groups with a writer, thick snapshots that
//! never overflow, thin pools that never fill, revert by merging.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vss_testkit::system::{Bus, Daemon};
use vss_vmtest::in_lane;
use vss_vmtest::lvm::{mkfs, run, LaneVg, Mount};

/// vssd with the LVM provider watching often (the lane's emulated CPU is
/// slow, and the tests write fast relative to small snapshots).
fn daemon(bus: &Bus, extra: &str) -> Daemon {
    Daemon::start(
        bus,
        &format!("[providers]\nsoftware = false\nlvm = true\nlvm-poll-ms = 100\n{extra}"),
    )
}

fn shadows_json(d: &Daemon) -> Vec<serde_json::Value> {
    let out = d.vssadmin(&["list", "shadows", "--json"]);
    out.ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    v["shadows"].as_array().cloned().unwrap_or_default()
}

/// One shadow set of `volumes` through the client API, as a requestor
/// makes it.
fn create_set(d: &Daemon, volumes: &[&Path]) -> Vec<vss_types::ShadowProp> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let vols: Vec<String> = volumes.iter().map(|p| p.display().to_string()).collect();
    rt.block_on(async {
        std::env::set_var("DBUS_SYSTEM_BUS_ADDRESS", &d.address);
        let c = vss_client::Client::connect().await.unwrap();
        c.create_shadow(&vols).await.unwrap()
    })
}

fn hash_tree(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        if e.path().is_file() {
            let data = std::fs::read(e.path()).unwrap();
            out.insert(
                e.file_name().to_string_lossy().into_owned(),
                blake3::hash(&data).to_hex().to_string(),
            );
        }
    }
    out
}

/// Writes new files (fsynced) into `dir` until stopped, recording each
/// completed file's hash, and the one in flight.
struct Workload {
    stop: Arc<AtomicBool>,
    record: Arc<Mutex<Record>>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

#[derive(Clone, Default)]
struct Record {
    done: BTreeMap<String, String>,
    inflight: Option<String>,
}

impl Workload {
    fn start(dir: PathBuf) -> Workload {
        std::fs::create_dir_all(&dir).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let record = Arc::new(Mutex::new(Record::default()));
        let (s, r) = (stop.clone(), record.clone());
        let thread = std::thread::spawn(move || {
            let mut n = 0u64;
            while !s.load(Ordering::Relaxed) {
                let name = format!("f{n:05}");
                let size = 4096 + (n as usize * 7331) % (96 << 10);
                let data: Vec<u8> = (0..size).map(|i| (i as u64 ^ (n * 31)) as u8).collect();
                r.lock().unwrap().inflight = Some(name.clone());
                let path = dir.join(&name);
                std::fs::write(&path, &data).unwrap();
                std::fs::File::open(&path).unwrap().sync_all().unwrap();
                let mut rec = r.lock().unwrap();
                rec.done
                    .insert(name, blake3::hash(&data).to_hex().to_string());
                rec.inflight = None;
                drop(rec);
                n += 1;
            }
            n
        });
        Workload {
            stop,
            record,
            thread: Some(thread),
        }
    }

    fn snapshot(&self) -> Record {
        self.record.lock().unwrap().clone()
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// Files complete before the cut are in the shadow as written; files begun
/// after it are not (the one in flight at the cut is undecided).
fn assert_instant(what: &str, shadow: &BTreeMap<String, String>, before: &Record, after: &Record) {
    for (name, hash) in &before.done {
        match shadow.get(name) {
            Some(h) if h == hash => {}
            Some(_) => panic!("{what}: {name} differs in the shadow"),
            None => panic!("{what}: {name} is missing in the shadow"),
        }
    }
    let later: Vec<&String> = shadow
        .keys()
        .filter(|k| !after.done.contains_key(*k) && after.inflight.as_ref() != Some(*k))
        .collect();
    assert!(
        later.is_empty(),
        "{what}: files written after the cut are in the shadow: {later:?}"
    );
    assert!(
        !before.done.is_empty(),
        "{what}: the workload had written nothing"
    );
}

/// Exposes a shadow read-only through vssd, returns what its `work`
/// directory holds, unexposes it.
fn exposed_files(d: &Daemon, id: &str) -> BTreeMap<String, String> {
    let at = tempfile::tempdir().unwrap();
    d.vssadmin(&[
        "expose",
        "shadow",
        &format!("/shadow={id}"),
        &format!("/to={}", at.path().display()),
        "/allowusers",
    ])
    .ok();
    let files = hash_tree(&at.path().join("work"));
    d.vssadmin(&["unexpose", "shadow", &format!("/shadow={id}")])
        .ok();
    files
}

/// The filesystem checker on a shadow's device, which must not be changed:
/// ext4 read-only as it is; xfs on a log-recovered scratch copy (a frozen
/// xfs keeps its last superblock update in the log).
fn check_fs(fs: &str, device: &str) {
    match fs {
        "ext4" => {
            run("e2fsck", &["-fn", device]);
        }
        "xfs" => {
            let copy = tempfile::Builder::new().suffix(".img").tempfile().unwrap();
            let copy = copy.path().to_str().unwrap().to_string();
            run("cp", &["--sparse=always", device, &copy]);
            let m = tempfile::tempdir().unwrap();
            run(
                "mount",
                &["-o", "nouuid", &copy, m.path().to_str().unwrap()],
            );
            run("umount", &[m.path().to_str().unwrap()]);
            run("xfs_repair", &["-n", &copy]);
        }
        other => panic!("no checker for {other}"),
    }
}

fn shadow_field<'a>(
    shadows: &'a [serde_json::Value],
    id: &str,
    field: &str,
) -> &'a serde_json::Value {
    let s = shadows
        .iter()
        .find(|s| {
            s["shadow_id"]
                .as_str()
                .is_some_and(|x| plain_id(x) == plain_id(id))
        })
        .unwrap_or_else(|| panic!("shadow {id} is not listed: {shadows:?}"));
    &s[field]
}

/// A shadow id without braces, lower case, whatever way it was printed.
fn plain_id(id: &str) -> String {
    id.trim()
        .trim_matches(|c| c == '{' || c == '}')
        .to_ascii_lowercase()
}

fn dmesg() -> String {
    run("dmesg", &[])
}

#[test]
fn lane_lvm_shadows_of_thick_and_thin_volumes_hold_their_instant() {
    if !in_lane("lane_lvm_shadows_of_thick_and_thin_volumes_hold_their_instant") {
        return;
    }
    let vg = LaneVg::create("vsslane");
    vg.create_thin_pool("pool", 1536);
    let volumes = [
        ("thick-ext4", vg.create_thick("te", 256), "ext4"),
        ("thick-xfs", vg.create_thick("tx", 320), "xfs"),
        ("thin-ext4", vg.create_thin("pool", "ne", 256), "ext4"),
        ("thin-xfs", vg.create_thin("pool", "nx", 320), "xfs"),
    ];
    let mounts: Vec<Mount> = volumes
        .iter()
        .map(|(_, dev, fs)| {
            mkfs(fs, dev);
            Mount::new(dev, "")
        })
        .collect();
    let bus = Bus::start();
    let d = daemon(&bus, "");
    let providers = d.vssadmin(&["list", "providers"]);
    assert!(providers.stdout.contains("LVM"), "{providers:?}");
    let work: Vec<Workload> = mounts
        .iter()
        .map(|m| Workload::start(m.join("work")))
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let paths: Vec<&Path> = mounts.iter().map(|m| m.path()).collect();
    let before: Vec<Record> = work.iter().map(Workload::snapshot).collect();
    let props = create_set(&d, &paths);
    let after: Vec<Record> = work.iter().map(Workload::snapshot).collect();
    std::thread::sleep(Duration::from_millis(1000));
    for w in work {
        assert!(w.finish() > 0);
    }
    assert_eq!(props.len(), 4);
    let shadows = shadows_json(&d);
    for (i, (what, _, fs)) in volumes.iter().enumerate() {
        let mount = mounts[i].path().display().to_string();
        let p = props
            .iter()
            .find(|p| p.original_volume == mount)
            .unwrap_or_else(|| panic!("no shadow of {mount}: {props:?}"));
        let id = p.shadow_id.to_string();
        // Listed with its LVM name, with the set's hold recorded.
        let device = shadow_field(&shadows, &id, "device_object")
            .as_str()
            .unwrap()
            .to_string();
        assert!(device.starts_with("/dev/vsslane/vss-"), "{what}: {device}");
        assert!(shadow_field(&shadows, &id, "hold_micros").as_u64().unwrap() > 0);
        let files = exposed_files(&d, &id);
        assert_instant(what, &files, &before[i], &after[i]);
        check_fs(fs, &device);
    }
    for m in &mounts {
        d.vssadmin(&[
            "delete",
            "shadows",
            &format!("/for={}", m.path().display()),
            "/all",
            "/quiet",
        ])
        .ok();
    }
    let left = run("lvs", &["--noheadings", "-o", "lv_name", "vsslane"]);
    assert!(
        !left.contains("vss-"),
        "snapshots left after delete shadows: {left}"
    );
    drop(mounts);
}

#[test]
fn lane_lvm_two_volume_groups_with_a_writer_are_cut_at_one_instant() {
    if !in_lane("lane_lvm_two_volume_groups_with_a_writer_are_cut_at_one_instant") {
        return;
    }
    let vg1 = LaneVg::create("vsslane");
    // The second group on a loop device over a file in the guest's RAM.
    let img = tempfile::Builder::new().suffix(".pv").tempfile().unwrap();
    img.as_file().set_len(400 << 20).unwrap();
    let loopdev = run("losetup", &["-f", "--show", img.path().to_str().unwrap()])
        .trim()
        .to_string();
    run("pvcreate", &["-ff", "-y", &loopdev]);
    run("vgcreate", &["-y", "vsslane2", &loopdev]);
    struct Vg2(String);
    impl Drop for Vg2 {
        fn drop(&mut self) {
            let _ = std::process::Command::new("vgremove")
                .args(["-ff", "-y", "vsslane2"])
                .status();
            let _ = std::process::Command::new("losetup")
                .args(["-d", &self.0])
                .status();
        }
    }
    let _vg2 = Vg2(loopdev);
    let a = vg1.create_thick("a", 128);
    run(
        "lvcreate",
        &["-y", "-W", "y", "-n", "b", "-L", "320m", "vsslane2"],
    );
    let b = "/dev/vsslane2/b".to_string();
    mkfs("ext4", &a);
    mkfs("xfs", &b);
    let (ma, mb) = (Mount::new(&a, ""), Mount::new(&b, ""));
    // An exec-hook writer covering both volumes, logging its events.
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("hooks.log");
    let hook = logs.path().join("hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho \"$VSS_EVENT $VSS_VOLUME_COUNT\" >> {}\n",
            log.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let staging = tempfile::tempdir().unwrap();
    std::fs::write(
        staging.path().join("counter.toml"),
        format!(
            "name = \"counter\"\n\n[[component]]\nname = \"counters\"\nfiles = [{{ path = \"{}\" }}, {{ path = \"{}\" }}]\n\n[hooks]\nfreeze = [\"{h}\"]\nthaw = [\"{h}\"]\n",
            ma.path().display(),
            mb.path().display(),
            h = hook.display()
        ),
    )
    .unwrap();
    let bus = Bus::start();
    let d = Daemon::start_with_writers(
        &bus,
        "[providers]\nsoftware = false\nlvm = true\nlvm-poll-ms = 100\n",
        staging.path(),
    );
    // Counters: A is written first, then B, so at any one instant B is A
    // or one behind. Two separate cuts would let B run far ahead.
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let (fa, fb) = (
        std::fs::File::create(ma.join("counter")).unwrap(),
        std::fs::File::create(mb.join("counter")).unwrap(),
    );
    let (s, c) = (stop.clone(), count.clone());
    let writer = std::thread::spawn(move || {
        let mut n = 0u64;
        while !s.load(Ordering::Relaxed) {
            n += 1;
            fa.write_all_at(format!("{n:020}").as_bytes(), 0).unwrap();
            fb.write_all_at(format!("{n:020}").as_bytes(), 0).unwrap();
            c.store(n, Ordering::Relaxed);
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let props = create_set(&d, &[ma.path(), mb.path()]);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(count.load(Ordering::Relaxed) > 1000);
    assert_eq!(props.len(), 2);
    let read_counter = |p: &vss_types::ShadowProp| -> u64 {
        let at = tempfile::tempdir().unwrap();
        d.vssadmin(&[
            "expose",
            "shadow",
            &format!("/shadow={}", p.shadow_id),
            &format!("/to={}", at.path().display()),
            "/allowusers",
        ])
        .ok();
        let v = std::fs::read_to_string(at.path().join("counter")).unwrap();
        d.vssadmin(&["unexpose", "shadow", &format!("/shadow={}", p.shadow_id)])
            .ok();
        v.trim().parse().unwrap()
    };
    let by_mount = |m: &Mount| {
        props
            .iter()
            .find(|p| p.original_volume == m.path().display().to_string())
            .unwrap()
    };
    let (ca, cb) = (read_counter(by_mount(&ma)), read_counter(by_mount(&mb)));
    assert!(ca > 0, "the counter had not started");
    assert!(cb == ca || cb + 1 == ca, "not one instant: A={ca} B={cb}");
    let events = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        events.lines().collect::<Vec<_>>(),
        ["freeze 2", "thaw 2"],
        "{events}"
    );
    let shadows = shadows_json(&d);
    for p in &props {
        assert!(
            shadow_field(&shadows, &p.shadow_id.to_string(), "hold_micros")
                .as_u64()
                .unwrap()
                > 0
        );
        assert_eq!(p.set_id, props[0].set_id);
    }
    for m in [&ma, &mb] {
        d.vssadmin(&[
            "delete",
            "shadows",
            &format!("/for={}", m.path().display()),
            "/all",
            "/quiet",
        ])
        .ok();
    }
    drop((ma, mb));
}

/// Writes `mib` MiB of new data into `dir` in 4 MiB files, each synced.
fn write_mib(dir: &Path, tag: &str, mib: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let block: Vec<u8> = (0..4 << 20)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8 ^ tag.len() as u8)
        .collect();
    for i in 0..mib.div_ceil(4) {
        let p = dir.join(format!("{tag}-{i:04}"));
        std::fs::write(&p, &block).unwrap();
        std::fs::File::open(&p).unwrap().sync_all().unwrap();
        // A steady load of about 20 MB/s, not a burst: the watcher reads
        // fill levels every 100 ms, and lvextend under emulation takes a
        // good part of a second (docs/LVM-PROVIDER.md, the margin).
        std::thread::sleep(Duration::from_millis(150));
    }
}

#[test]
fn lane_lvm_thick_snapshots_are_extended_or_evicted_never_invalidated() {
    if !in_lane("lane_lvm_thick_snapshots_are_extended_or_evicted_never_invalidated") {
        return;
    }
    let vg = LaneVg::create("vsslane");
    let dev = vg.create_thick("data", 448);
    mkfs("ext4", &dev);
    let m = Mount::new(&dev, "");
    let mp = m.path().display().to_string();
    let bus = Bus::start();
    let d = daemon(&bus, "");
    // 96 MB of shadow storage: steps of 32 MiB.
    d.vssadmin(&[
        "add",
        "shadowstorage",
        &format!("/for={mp}"),
        "/on=vsslane",
        "/maxsize=96MB",
    ])
    .ok();
    let listed = d.vssadmin(&["list", "shadowstorage", &format!("/for={mp}")]);
    listed.ok();
    assert!(listed.stdout.contains("96"), "{listed:?}");
    write_mib(&m.join("base"), "base", 160);
    let first = d.vssadmin(&["create", "shadow", &format!("/for={mp}")]);
    first.ok();
    let first = first.shadow_id();
    // Overwrite more than the maximum, in rounds, with a second shadow in
    // between; every write must go through.
    for round in 0..3 {
        std::fs::remove_dir_all(m.join("base")).unwrap();
        write_mib(&m.join("base"), &format!("r{round}"), 120);
        if round == 0 {
            d.vssadmin(&["create", "shadow", &format!("/for={mp}")])
                .ok();
        }
        // No shadow LVM invalidated is ever listed.
        for s in shadows_json(&d) {
            let dev = s["device_object"].as_str().unwrap();
            let lv = dev.trim_start_matches("/dev/");
            let attr = run("lvs", &["--noheadings", "-o", "lv_attr", lv]);
            assert!(
                !attr.trim().starts_with('S'),
                "listed but invalid: {lv} {attr}"
            );
        }
    }
    let log = d.log_text();
    assert!(
        !dmesg().contains("Invalidating snapshot"),
        "LVM invalidated a snapshot; vssd log:\n{log}"
    );
    let listed: Vec<String> = shadows_json(&d)
        .iter()
        .map(|s| plain_id(s["shadow_id"].as_str().unwrap()))
        .collect();
    assert!(
        !listed.contains(&plain_id(&first)),
        "the oldest shadow was not deleted: {listed:?}"
    );
    assert!(
        log.contains("maximum size"),
        "no eviction event naming the maximum:\n{log}"
    );
    // The sum of the snapshots stays within the maximum.
    let sizes = run(
        "lvs",
        &[
            "--noheadings",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            "lv_size",
            "-S",
            "lv_tags=vss_shadow",
            "vsslane",
        ],
    );
    let total: u64 = sizes
        .split_whitespace()
        .map(|s| s.parse::<u64>().unwrap())
        .sum();
    assert!(total <= (96 + 4) << 20, "snapshots use {total} bytes");
    d.vssadmin(&["delete", "shadows", &format!("/for={mp}"), "/all", "/quiet"])
        .ok();
    drop(m);
}

#[test]
fn lane_lvm_thin_pool_is_never_allowed_to_fill() {
    if !in_lane("lane_lvm_thin_pool_is_never_allowed_to_fill") {
        return;
    }
    let vg = LaneVg::create("vsslane");
    vg.create_thin_pool("pool", 384);
    let dev = vg.create_thin("pool", "data", 1024);
    mkfs("ext4", &dev);
    let m = Mount::new(&dev, "");
    let mp = m.path().display().to_string();
    let bus = Bus::start();
    let d = daemon(&bus, "lvm-thin-pool-limit = 75\n");
    // Watch the pool's fill level the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let highest = Arc::new(Mutex::new(0f64));
    let (s, h) = (stop.clone(), highest.clone());
    let watcher = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            let out = run(
                "lvs",
                &["--noheadings", "-o", "data_percent", "vsslane/pool"],
            );
            if let Ok(p) = out.trim().parse::<f64>() {
                let mut h = h.lock().unwrap();
                *h = h.max(p);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    // Each round: a shadow pins what is there, then new data replaces it.
    let started = Instant::now();
    let mut made = 0;
    for round in 0..6 {
        d.vssadmin(&["create", "shadow", &format!("/for={mp}")])
            .ok();
        made += 1;
        let _ = std::fs::remove_dir_all(m.join("data"));
        write_mib(&m.join("data"), &format!("t{round}"), 100);
    }
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let highest = *highest.lock().unwrap();
    let log = d.log_text();
    assert!(highest < 100.0, "the pool filled ({highest}%)");
    assert!(
        !dmesg().contains("out-of-data-space"),
        "the pool ran out of space"
    );
    let shadows = shadows_json(&d);
    assert!(
        shadows.len() < made,
        "no shadow was deleted ({} of {made} left)",
        shadows.len()
    );
    assert!(
        log.contains("thin pool vsslane/pool"),
        "no eviction event:\n{log}"
    );
    // What is listed is what LVM has.
    let lvs = run(
        "lvs",
        &[
            "--noheadings",
            "-o",
            "lv_name",
            "-S",
            "lv_tags=vss_shadow",
            "vsslane",
        ],
    );
    assert_eq!(
        lvs.split_whitespace().count(),
        shadows.len(),
        "{lvs} vs {shadows:?}"
    );
    eprintln!(
        "thin pool peak {highest:.1}%, {} of {made} shadows kept, {:?}",
        shadows.len(),
        started.elapsed()
    );
    d.vssadmin(&["delete", "shadows", &format!("/for={mp}"), "/all", "/quiet"])
        .ok();
    drop(m);
}

#[test]
fn lane_lvm_revert_merges_the_shadow_into_its_volume() {
    if !in_lane("lane_lvm_revert_merges_the_shadow_into_its_volume") {
        return;
    }
    let vg = LaneVg::create("vsslane");
    let dev = vg.create_thick("data", 128);
    mkfs("ext4", &dev);
    let m = Mount::new(&dev, "");
    let mp = m.path().display().to_string();
    let bus = Bus::start();
    let d = daemon(&bus, "");
    std::fs::write(m.join("doc.txt"), "version 1\n").unwrap();
    let id = d.vssadmin(&["create", "shadow", &format!("/for={mp}")]);
    id.ok();
    let id = id.shadow_id();
    std::fs::write(m.join("doc.txt"), "version 2\n").unwrap();
    std::fs::write(m.join("new.txt"), "later\n").unwrap();
    // Mounted: refused without /forcedismount.
    let refused = d.vssadmin(&["revert", "shadow", &format!("/shadow={id}")]);
    assert_ne!(refused.code, 0, "{refused:?}");
    assert!(refused.stderr.contains("0x"), "{refused:?}");
    d.vssadmin(&[
        "revert",
        "shadow",
        &format!("/shadow={id}"),
        "/forcedismount",
    ])
    .ok();
    assert_eq!(
        std::fs::read_to_string(m.join("doc.txt")).unwrap(),
        "version 1\n"
    );
    assert!(!m.join("new.txt").exists());
    // The shadow was consumed by the merge.
    assert!(shadows_json(&d).is_empty());
    drop(m);
}

/// Restores `PATH` when dropped (also when the test panics): vssd inherits
/// the test's environment.
struct PathGuard(std::ffi::OsString);

impl Drop for PathGuard {
    fn drop(&mut self) {
        std::env::set_var("PATH", &self.0);
    }
}

fn suspended(dm_name: &str) -> bool {
    run(
        "dmsetup",
        &["info", "-c", "--noheadings", "-o", "suspended", dm_name],
    )
    .trim()
        == "Suspended"
}

#[test]
fn lane_lvm_origins_are_resumed_when_vssd_dies_in_the_hold() {
    if !in_lane("lane_lvm_origins_are_resumed_when_vssd_dies_in_the_hold") {
        return;
    }
    let vg = LaneVg::create("vsslane");
    let dev = vg.create_thick("data", 128);
    mkfs("ext4", &dev);
    let m = Mount::new(&dev, "");
    let mp = m.path().display().to_string();
    // An lvm that hangs in lvcreate: vssd dies while the origin is held.
    let bin = tempfile::tempdir().unwrap();
    let wrapper = bin.path().join("lvm");
    std::fs::write(
        &wrapper,
        "#!/bin/sh\ncase \" $* \" in *\" lvcreate \"*) sleep 60; exit 1;; esac\nexec /usr/sbin/lvm \"$@\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let old = std::env::var_os("PATH").unwrap_or_default();
    let _path = PathGuard(old.clone());
    let mut path = std::ffi::OsString::from(bin.path());
    path.push(":");
    path.push(&old);
    std::env::set_var("PATH", &path);
    let bus = Bus::start();
    let mut d = daemon(&bus, "");
    let create = std::process::Command::new(vss_testkit::system::bin("vssadmin"))
        .args(["create", "shadow", &format!("/for={mp}")])
        .env("DBUS_SYSTEM_BUS_ADDRESS", &d.address)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let origin = "vsslane-data";
    let held = vss_testkit::system::wait_for(Duration::from_secs(60), || suspended(origin));
    assert!(
        held,
        "the origin was never suspended; vssd log:\n{}",
        d.log_text()
    );
    d.kill9();
    let killed = Instant::now();
    let resumed = vss_testkit::system::wait_for(Duration::from_secs(15), || !suspended(origin));
    assert!(resumed, "the origin stayed suspended after vssd died");
    let waited = killed.elapsed();
    assert!(
        waited < Duration::from_secs(12),
        "resumed only after {waited:?}"
    );
    // Writable again, and mountable again after an unmount.
    std::fs::write(m.join("after.txt"), "written\n").unwrap();
    run("sync", &[]);
    let mut create = create;
    let _ = create.kill();
    let _ = create.wait();
    drop(m);
    let again = Mount::new(&dev, "");
    assert_eq!(
        std::fs::read_to_string(again.join("after.txt")).unwrap(),
        "written\n"
    );
    drop(again);
    // The hung lvcreate of the dead vssd must not outlive the test's group.
    let _ = std::process::Command::new("pkill")
        .args(["-f", "sleep 60"])
        .status();
}
