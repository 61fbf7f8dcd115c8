//! The btrfs provider on real btrfs (and ext4) filesystems over loop
//! devices. Needs root; see `vss_testkit::privileged`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use vss_provider::{Health, HoldMethod, Provider, ProviderShadow};
use vss_provider_btrfs::{BtrfsProvider, BTRFS_PROVIDER_ID};
use vss_sys::mounts::volume_of;
use vss_testkit::{privileged, write_file, LoopFs, MountGuard};
use vss_types::{Guid, Volume, VssCode};

fn erofs(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::EROFS)
}

/// Prepares and commits a shadow of `volume`.
fn make_shadow(p: &BtrfsProvider, volume: &Volume) -> ProviderShadow {
    let id = Guid::new_random();
    p.prepare(volume, id).unwrap();
    let c = p.commit(volume, id).unwrap();
    assert_eq!(c.attributes, 0);
    ProviderShadow {
        shadow_id: id,
        volume: volume.clone(),
        device_object: c.device_object,
        provider_data: c.provider_data,
    }
}

#[test]
fn priv_shadow_lifecycle() {
    if !privileged("priv_shadow_lifecycle") {
        return;
    }
    let fs = LoopFs::new("btrfs", 0);
    write_file(&fs.path("docs/a.txt"), b"version 1");
    write_file(&fs.path("docs/gone.txt"), b"deleted later");
    let volume = volume_of(&fs.mount_point).unwrap();
    let p = BtrfsProvider::new();
    assert_eq!(p.info().provider_id, BTRFS_PROVIDER_ID);
    p.supports(&volume).unwrap();
    assert_eq!(p.hold_method(&volume), HoldMethod::ProviderCut);

    let shadow = make_shadow(&p, &volume);
    let snap = PathBuf::from(&shadow.device_object);
    assert_eq!(snap, fs.path(&format!(".vss-shadows/{}", shadow.shadow_id)));
    assert_eq!(shadow.provider_data, shadow.device_object);

    // .vss-shadows is root's alone.
    let md = std::fs::symlink_metadata(fs.path(".vss-shadows")).unwrap();
    assert!(md.is_dir());
    assert_eq!(md.permissions().mode() & 0o7777, 0o700);
    assert_eq!((md.uid(), md.gid()), (0, 0));

    // The live volume moves on; the shadow does not.
    write_file(&fs.path("docs/a.txt"), b"version 2");
    std::fs::remove_file(fs.path("docs/gone.txt")).unwrap();
    write_file(&fs.path("docs/new.txt"), b"new");
    assert_eq!(
        std::fs::read(snap.join("docs/a.txt")).unwrap(),
        b"version 1"
    );
    assert_eq!(
        std::fs::read(snap.join("docs/gone.txt")).unwrap(),
        b"deleted later"
    );
    assert!(!snap.join("docs/new.txt").exists());
    let e = std::fs::write(snap.join("docs/a.txt"), b"x").unwrap_err();
    assert!(erofs(&e), "{e}");
    let e = std::fs::write(snap.join("docs/other.txt"), b"x").unwrap_err();
    assert!(erofs(&e), "{e}");

    // The provider keeps nothing in memory: a fresh instance (vssd
    // restarted) finds the shadow.
    assert_eq!(BtrfsProvider::new().health(&shadow), Health::Present);

    // Expose read-only and read through it.
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("view");
    std::fs::create_dir(&target).unwrap();
    p.expose(&shadow, &target).unwrap();
    let guard = MountGuard::new(&target);
    assert!(vss_sys::is_mount_point(&target).unwrap());
    assert_eq!(
        std::fs::read(target.join("docs/a.txt")).unwrap(),
        b"version 1"
    );
    let e = std::fs::write(target.join("docs/a.txt"), b"x").unwrap_err();
    assert!(erofs(&e), "{e}");

    // Exposing again on the same (now non-empty) directory is refused.
    let e = p.expose(&shadow, &target).unwrap_err();
    assert_eq!(e.code, VssCode::ObjectAlreadyExists, "{e}");
    // So is deleting while exposed.
    let e = p.delete(&shadow).unwrap_err();
    assert_eq!(e.code, VssCode::VolumeInUse, "{e}");
    assert!(e.hint().contains("Unexpose"), "{}", e.hint());
    assert_eq!(p.health(&shadow), Health::Present);

    // A busy exposure is not torn down behind the user's back.
    let open = std::fs::File::open(target.join("docs/a.txt")).unwrap();
    let e = p.unexpose(&shadow, &target).unwrap_err();
    assert_eq!(e.code, VssCode::VolumeInUse, "{e}");
    drop(open);

    p.unexpose(&shadow, &target).unwrap();
    guard.disarm();
    assert!(!vss_sys::is_mount_point(&target).unwrap());
    let e = p.unexpose(&shadow, &target).unwrap_err();
    assert_eq!(e.code, VssCode::ObjectNotFound, "{e}");

    p.delete(&shadow).unwrap();
    assert!(!snap.exists());
    match p.health(&shadow) {
        Health::Lost(reason) => assert!(reason.contains("no longer exists"), "{reason}"),
        Health::Present => panic!("deleted shadow reported present"),
    }
    // Deleting again is fine: it is gone.
    p.delete(&shadow).unwrap();
    let e = p.expose(&shadow, &target).unwrap_err();
    assert_eq!(e.code, VssCode::ObjectNotFound, "{e}");
}

#[test]
fn priv_shadows_are_independent() {
    if !privileged("priv_shadows_are_independent") {
        return;
    }
    let fs = LoopFs::new("btrfs", 0);
    let volume = volume_of(&fs.mount_point).unwrap();
    let p = BtrfsProvider::new();
    write_file(&fs.path("f"), b"1");
    let s1 = make_shadow(&p, &volume);
    write_file(&fs.path("f"), b"2");
    let s2 = make_shadow(&p, &volume);
    write_file(&fs.path("f"), b"3");
    let read = |s: &ProviderShadow| std::fs::read(Path::new(&s.device_object).join("f")).unwrap();
    assert_eq!(read(&s1), b"1");
    assert_eq!(read(&s2), b"2");
    p.delete(&s1).unwrap();
    assert_eq!(p.health(&s2), Health::Present);
    assert_eq!(read(&s2), b"2");
    p.delete(&s2).unwrap();
}

#[test]
fn priv_abort_removes_the_snapshot() {
    if !privileged("priv_abort_removes_the_snapshot") {
        return;
    }
    let fs = LoopFs::new("btrfs", 0);
    let volume = volume_of(&fs.mount_point).unwrap();
    let p = BtrfsProvider::new();

    // Abort after prepare only: nothing to undo.
    let id = Guid::new_random();
    p.prepare(&volume, id).unwrap();
    p.abort(&volume, id);

    // Abort after commit: the snapshot goes.
    let id = Guid::new_random();
    p.prepare(&volume, id).unwrap();
    let c = p.commit(&volume, id).unwrap();
    assert!(Path::new(&c.device_object).exists());
    p.abort(&volume, id);
    assert!(!Path::new(&c.device_object).exists());

    // Preparing an id that already has a snapshot is refused.
    let s = make_shadow(&p, &volume);
    let e = p.prepare(&volume, s.shadow_id).unwrap_err();
    assert_eq!(e.code, VssCode::ObjectAlreadyExists, "{e}");
    p.delete(&s).unwrap();
}

#[test]
fn priv_prepare_narrows_the_shadows_dir() {
    if !privileged("priv_prepare_narrows_the_shadows_dir") {
        return;
    }
    let fs = LoopFs::new("btrfs", 0);
    let volume = volume_of(&fs.mount_point).unwrap();
    let p = BtrfsProvider::new();
    let dir = fs.path(".vss-shadows");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    p.prepare(&volume, Guid::new_random()).unwrap();
    let md = std::fs::symlink_metadata(&dir).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o700);
    assert_eq!((md.uid(), md.gid()), (0, 0));

    // A symlink planted in its place is refused, and what it points to is
    // left untouched.
    std::fs::remove_dir(&dir).unwrap();
    let elsewhere = fs.path("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &dir).unwrap();
    let e = p.prepare(&volume, Guid::new_random()).unwrap_err();
    assert_eq!(e.code, VssCode::ProviderVeto, "{e}");
    let md = std::fs::metadata(&elsewhere).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o755);
}

/// The promise: a user who can read a file on the live volume may still be
/// unable to reach it through `.vss-shadows` — shadows expose nothing to
/// users of the live volume.
#[test]
fn priv_users_cannot_reach_shadows_through_the_volume() {
    if !privileged("priv_users_cannot_reach_shadows_through_the_volume") {
        return;
    }
    let fs = LoopFs::new("btrfs", 0);
    // Let "nobody" reach the mount point (the temporary directory is 0700).
    let parent = fs.mount_point.parent().unwrap();
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&fs.mount_point, std::fs::Permissions::from_mode(0o755)).unwrap();
    write_file(&fs.path("pub.txt"), b"public");
    std::fs::set_permissions(fs.path("pub.txt"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let volume = volume_of(&fs.mount_point).unwrap();
    let p = BtrfsProvider::new();
    let s = make_shadow(&p, &volume);

    let cat_as_nobody = |path: &Path| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
            .arg(path)
            .output()
            .unwrap()
    };
    let live = cat_as_nobody(&fs.path("pub.txt"));
    assert!(live.status.success(), "{live:?}");
    assert_eq!(live.stdout, b"public");
    let through_shadow = cat_as_nobody(&Path::new(&s.device_object).join("pub.txt"));
    assert!(!through_shadow.status.success(), "{through_shadow:?}");
    assert!(
        String::from_utf8_lossy(&through_shadow.stderr).contains("Permission denied"),
        "{through_shadow:?}"
    );
    p.delete(&s).unwrap();
}

#[test]
fn priv_supports_rejects_ext4_and_read_only_btrfs() {
    if !privileged("priv_supports_rejects_ext4_and_read_only_btrfs") {
        return;
    }
    let p = BtrfsProvider::new();
    let ext4 = LoopFs::new("ext4", 32);
    let v = volume_of(&ext4.mount_point).unwrap();
    let reason = p.supports(&v).unwrap_err();
    assert!(reason.contains("ext4"), "{reason}");
    let e = p.prepare(&v, Guid::new_random()).unwrap_err();
    assert_eq!(e.code, VssCode::VolumeNotSupportedByProvider, "{e}");
    assert!(!ext4.path(".vss-shadows").exists());

    let ro = LoopFs::with_mount_options("btrfs", 0, "ro");
    let v = volume_of(&ro.mount_point).unwrap();
    assert!(v.read_only);
    let reason = p.supports(&v).unwrap_err();
    assert!(reason.contains("read-only"), "{reason}");

    // A directory of a btrfs volume bind-mounted elsewhere is not a
    // subvolume root: the snapshot would not be of what was asked.
    let fs = LoopFs::new("btrfs", 0);
    std::fs::create_dir(fs.path("sub")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mp = dir.path().join("bind");
    std::fs::create_dir(&mp).unwrap();
    vss_testkit::run(
        "mount",
        &[
            "--bind",
            fs.path("sub").to_str().unwrap(),
            mp.to_str().unwrap(),
        ],
    );
    let _guard = MountGuard::new(&mp);
    let v = volume_of(&mp).unwrap();
    let reason = p.supports(&v).unwrap_err();
    assert!(
        reason.contains("not the root of a btrfs subvolume"),
        "{reason}"
    );
}
