//! The software provider end to end: vssd on a private bus, vssadmin, and
//! volume servers over image files holding ext4, xfs or btrfs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use vss_testkit::system::{wait_for, Bus, Daemon};
use vss_testkit::{privileged, run, LoopFs};

/// An image file with a filesystem, and a directory to mount it on; the
/// directory is cleaned up on drop whatever the test left mounted there.
struct Image {
    dir: tempfile::TempDir,
}

impl Image {
    fn new(fs: &str, size_mb: u64) -> Image {
        let dir = tempfile::Builder::new()
            .prefix("vss-cow-")
            .tempdir()
            .unwrap();
        let img = dir.path().join("volume.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(size_mb << 20)
            .unwrap();
        let force = if fs == "xfs" { "-f" } else { "-F" };
        let force = if fs == "btrfs" { "-f" } else { force };
        run(&format!("mkfs.{fs}"), &["-q", force, img.to_str().unwrap()]);
        std::fs::create_dir(dir.path().join("mnt")).unwrap();
        Image { dir }
    }

    fn device(&self) -> String {
        self.dir.path().join("volume.img").display().to_string()
    }

    fn mnt(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    fn m(&self) -> String {
        self.mnt().display().to_string()
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        for _ in 0..3 {
            let _ = Command::new("umount").arg("-l").arg(self.mnt()).status();
        }
    }
}

/// Volume servers outlive vssd by design; a test that fails half-way must
/// not leave its servers, their FUSE mounts and loop devices behind.
struct ServerReaper(PathBuf, PathBuf);

impl Drop for ServerReaper {
    fn drop(&mut self) {
        let pattern = format!("vss-volumed serve --config {}", self.0.display());
        let _ = Command::new("pkill").args(["-9", "-f", &pattern]).status();
        if let Ok(rd) = std::fs::read_dir(&self.1) {
            for e in rd.flatten() {
                let images = e.path().join("images");
                let _ = Command::new("umount").arg("-l").arg(&images).status();
            }
        }
    }
}

fn reaper(d: &Daemon, run_dir: &Path) -> ServerReaper {
    ServerReaper(d.state.path().to_owned(), run_dir.to_owned())
}

fn daemon(bus: &Bus, run_dir: &Path) -> Daemon {
    Daemon::start(
        bus,
        &format!("volume-run-dir = \"{}\"\n", run_dir.display()),
    )
}

fn add_volume(d: &Daemon, img: &Image) {
    d.vssadmin(&[
        "add",
        "volume",
        &format!("/device={}", img.device()),
        &format!("/mount={}", img.m()),
    ])
    .ok();
}

fn read(p: PathBuf) -> String {
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn priv_sys_cow_volume_lifecycle() {
    if !privileged("priv_sys_cow_volume_lifecycle") {
        return;
    }
    let bus = Bus::start();
    let runs = tempfile::tempdir().unwrap();
    let d = daemon(&bus, runs.path());
    let _reaper = reaper(&d, runs.path());
    let img = Image::new("ext4", 300);
    let m = img.m();

    add_volume(&d, &img);
    std::fs::write(img.mnt().join("a.txt"), "before\n").unwrap();
    run("sync", &[]);

    let none = d.vssadmin(&["list", "shadowstorage"]);
    none.ok();
    assert!(none.stdout.contains("No items found"), "{none:?}");

    let created = d.vssadmin(&["create", "shadow", &format!("/for={m}")]);
    created.ok();
    let id = created.shadow_id();
    std::fs::write(img.mnt().join("a.txt"), "after\n").unwrap();
    std::fs::write(img.mnt().join("new.txt"), "new\n").unwrap();
    run("sync", &[]);

    // The first shadow got the default association.
    let list = d.vssadmin(&["list", "shadowstorage", &format!("/for={m}")]);
    list.ok();
    assert!(
        list.stdout.contains("Shadow Copy Storage association"),
        "{list:?}"
    );
    assert!(list.stdout.contains("UNBOUNDED (100%)"), "{list:?}");

    // One association per volume.
    let again = d.vssadmin(&["add", "shadowstorage", &format!("/for={m}"), "/on=/tmp"]);
    assert_ne!(again.code, 0);
    assert!(again.stderr.contains("0x8004230D"), "{again:?}");

    // Expose: the shadow holds the instant.
    let base = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        base.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let target = base.path().join("exposed");
    std::fs::create_dir(&target).unwrap();
    d.vssadmin(&[
        "expose",
        "shadow",
        &format!("/shadow={id}"),
        &format!("/to={}", target.display()),
    ])
    .ok();
    assert_eq!(read(target.join("a.txt")), "before\n");
    assert!(!target.join("new.txt").exists());
    d.vssadmin(&["unexpose", "shadow", &format!("/shadow={id}")])
        .ok();

    // Sizes below the minimum (32 MB for a volume under 500 MB) are refused.
    let small = d.vssadmin(&[
        "resize",
        "shadowstorage",
        &format!("/for={m}"),
        "/on=/var",
        "/maxsize=10MB",
    ]);
    assert_ne!(small.code, 0);
    assert!(small.stderr.contains("0x8004231F"), "{small:?}");

    // Revert to the shadow: the live volume is back at its instant.
    d.vssadmin(&["revert", "shadow", &format!("/shadow={id}")])
        .ok();
    assert!(wait_for(Duration::from_secs(60), || {
        let q = d.vssadmin(&["query", "reverts"]);
        q.code == 0 && q.stdout.contains("100%")
    }));
    assert!(wait_for(Duration::from_secs(10), || img
        .mnt()
        .join("a.txt")
        .exists()));
    assert_eq!(read(img.mnt().join("a.txt")), "before\n");
    assert!(!img.mnt().join("new.txt").exists());

    // Take the volume back: shadows and storage go, the data stays.
    d.vssadmin(&["delete", "volume", &format!("/for={m}"), "/quiet"])
        .ok();
    assert_eq!(read(img.mnt().join("a.txt")), "before\n");
    let src = run("findmnt", &["-n", "-o", "SOURCE", &m]);
    let backing = run("losetup", &["-n", "-O", "BACK-FILE", src.trim()]);
    assert_eq!(backing.trim(), img.device());
    let shadows = d.vssadmin(&["list", "shadows"]);
    assert!(!shadows.stdout.contains(&id), "{shadows:?}");
    run("umount", &[&m]);
}

#[test]
fn priv_sys_cow_and_btrfs_volumes_cut_in_one_hold() {
    if !privileged("priv_sys_cow_and_btrfs_volumes_cut_in_one_hold") {
        return;
    }
    let bus = Bus::start();
    let runs = tempfile::tempdir().unwrap();
    let d = daemon(&bus, runs.path());
    let _reaper = reaper(&d, runs.path());
    let img = Image::new("xfs", 320);
    let m = img.m();
    add_volume(&d, &img);
    let b = LoopFs::new("btrfs", 256);
    let bm = b.mount_point.display().to_string();
    std::fs::write(img.mnt().join("x.txt"), "x1\n").unwrap();
    std::fs::write(b.path("y.txt"), "y1\n").unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let props = rt.block_on(async {
        std::env::set_var("DBUS_SYSTEM_BUS_ADDRESS", &d.address);
        let c = vss_client::Client::connect().await.unwrap();
        c.create_shadow(&[m.clone(), bm.clone()]).await.unwrap()
    });
    assert_eq!(props.len(), 2);
    let set = props[0].set_id;
    assert!(props.iter().all(|p| p.set_id == set));
    // Each records the hold; the cow volume was frozen, so its hold covers
    // the btrfs provider's own cut too.
    let list = d.vssadmin(&["list", "shadows", "--json"]);
    list.ok();
    let v: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let shadows = v["shadows"].as_array().unwrap();
    assert_eq!(shadows.len(), 2);
    // One hold: the software volume was frozen around both commits, so its
    // recorded hold covers the btrfs provider's own (shorter) cut.
    let hold = |mp: &str| {
        shadows
            .iter()
            .find(|s| s["original_volume"] == mp)
            .and_then(|s| s["hold_micros"].as_u64())
            .unwrap_or_else(|| panic!("no hold time for {mp}: {shadows:?}"))
    };
    let (cow_hold, btrfs_hold) = (hold(&m), hold(&bm));
    assert!(cow_hold > 0 && btrfs_hold > 0);
    assert!(
        btrfs_hold <= cow_hold,
        "btrfs {btrfs_hold} µs > cow {cow_hold} µs"
    );
    // The shadows hold the instant.
    std::fs::write(img.mnt().join("x.txt"), "x2\n").unwrap();
    std::fs::write(b.path("y.txt"), "y2\n").unwrap();
    let btrfs_snap = shadows
        .iter()
        .find(|s| s["original_volume"] == bm.as_str())
        .unwrap()["device_object"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(read(PathBuf::from(&btrfs_snap).join("y.txt")), "y1\n");
    for v in [&m, &bm] {
        d.vssadmin(&["delete", "shadows", &format!("/for={v}"), "/all", "/quiet"])
            .ok();
    }
    d.vssadmin(&["delete", "volume", &format!("/for={m}"), "/quiet"])
        .ok();
    run("umount", &[&m]);
}

#[test]
fn priv_sys_cow_shadow_limit_refuses_or_deletes_the_oldest() {
    if !privileged("priv_sys_cow_shadow_limit_refuses_or_deletes_the_oldest") {
        return;
    }
    let bus = Bus::start();
    let runs = tempfile::tempdir().unwrap();
    let extra = |delete_oldest: bool| {
        format!(
            "volume-run-dir = \"{}\"\n[providers]\nsoftware-max-shadow-copies = 2\nsoftware-delete-oldest-at-limit = {delete_oldest}\n",
            runs.path().display()
        )
    };
    let mut d = Daemon::start(&bus, &extra(false));
    let _reaper = reaper(&d, runs.path());
    let img = Image::new("ext4", 200);
    let m = img.m();
    add_volume(&d, &img);
    let first = d.vssadmin(&["create", "shadow", &format!("/for={m}")]);
    first.ok();
    d.vssadmin(&["create", "shadow", &format!("/for={m}")]).ok();
    let third = d.vssadmin(&["create", "shadow", &format!("/for={m}")]);
    assert_ne!(third.code, 0);
    assert!(third.stderr.contains("0x80042317"), "{third:?}");

    // Same state, now configured like MaxShadowCopies: the oldest goes.
    std::fs::write(&d.config, {
        let text = std::fs::read_to_string(&d.config).unwrap();
        text.replace(
            "software-delete-oldest-at-limit = false",
            "software-delete-oldest-at-limit = true",
        )
    })
    .unwrap();
    d.kill9();
    d.spawn();
    let third = d.vssadmin(&["create", "shadow", &format!("/for={m}")]);
    third.ok();
    let list = d.vssadmin(&["list", "shadows", &format!("/for={m}")]);
    list.ok();
    assert!(!list.stdout.contains(&first.shadow_id()), "{list:?}");
    assert!(list.stdout.contains(&third.shadow_id()), "{list:?}");
    assert_eq!(
        list.stdout.matches("Shadow Copy ID:").count(),
        2,
        "{list:?}"
    );
    assert!(d.log_text().contains("shadow copy deleted by its provider"));
    d.vssadmin(&["delete", "volume", &format!("/for={m}"), "/quiet"])
        .ok();
    run("umount", &[&m]);
}
