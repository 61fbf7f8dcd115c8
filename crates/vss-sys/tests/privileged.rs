//! Tests on real filesystems over loop devices. They need root; see
//! `vss_testkit::privileged` for what happens without it.

use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use vss_sys::{btrfs, mounts};
use vss_testkit::{privileged, run, write_file, LoopFs, MountGuard};
use vss_types::provider::volume_guid;

const FS_TYPES: [&str; 3] = ["ext4", "xfs", "btrfs"];

/// Freezing blocks a write from another thread until the thaw; a second
/// freeze is EBUSY; thawing a thawed filesystem is `Ok(false)`.
fn freeze_blocks_writes(fs_type: &str) {
    let fs = LoopFs::new(fs_type, 0);
    write_file(&fs.path("before"), b"1");
    vss_sys::freeze(&fs.mount_point).unwrap();
    let again = vss_sys::freeze(&fs.mount_point).unwrap_err();
    assert_eq!(again.raw_os_error(), Some(libc::EBUSY), "{again}");

    let (tx, rx) = mpsc::channel();
    let target = fs.path("during");
    let writer = thread::spawn(move || {
        std::fs::write(&target, b"written while frozen").unwrap();
        tx.send(()).unwrap();
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(700)).is_err(),
        "a write completed on a frozen {fs_type}"
    );
    assert!(vss_sys::thaw(&fs.mount_point).unwrap());
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the write did not complete after the thaw");
    writer.join().unwrap();
    assert_eq!(
        std::fs::read(fs.path("during")).unwrap(),
        b"written while frozen"
    );
    assert!(!vss_sys::thaw(&fs.mount_point).unwrap());
}

#[test]
fn priv_freeze_blocks_writes_ext4() {
    if privileged("priv_freeze_blocks_writes_ext4") {
        freeze_blocks_writes("ext4");
    }
}

#[test]
fn priv_freeze_blocks_writes_xfs() {
    if privileged("priv_freeze_blocks_writes_xfs") {
        freeze_blocks_writes("xfs");
    }
}

#[test]
fn priv_freeze_blocks_writes_btrfs() {
    if privileged("priv_freeze_blocks_writes_btrfs") {
        freeze_blocks_writes("btrfs");
    }
}

#[test]
fn priv_thaw_when_not_frozen_is_false() {
    if !privileged("priv_thaw_when_not_frozen_is_false") {
        return;
    }
    let fs = LoopFs::new("ext4", 32);
    assert!(!vss_sys::thaw(&fs.mount_point).unwrap());
    assert!(!vss_sys::thaw(&fs.mount_point).unwrap());
}

/// mountinfo, volume_of, fs_uuid and fs_magic agree with what mount and
/// blkid say about a fresh filesystem.
#[test]
fn priv_volume_of_matches_blkid() {
    if !privileged("priv_volume_of_matches_blkid") {
        return;
    }
    for fs_type in FS_TYPES {
        let fs = LoopFs::new(fs_type, 0);
        write_file(&fs.path("dir/sub/file"), b"x");
        let blkid = fs.blkid_uuid();
        assert_eq!(blkid.len(), 36, "{fs_type}: blkid said {blkid:?}");

        let uuid = vss_sys::fs_uuid(&fs.mount_point, fs_type, &fs.device);
        assert_eq!(uuid.as_deref(), Some(blkid.as_str()), "{fs_type}");

        let v = vss_sys::mounts::volume_of(&fs.path("dir/sub/file")).unwrap();
        assert_eq!(Path::new(&v.mount_point), fs.mount_point, "{fs_type}");
        assert_eq!(v.device, fs.device);
        assert_eq!(v.fs_type, fs_type);
        assert_eq!(v.fs_uuid.as_deref(), Some(blkid.as_str()));
        assert_eq!(v.volume_guid, volume_guid(&blkid));
        assert!(!v.read_only);
        let expected_subvol = (fs_type == "btrfs").then(|| "/".to_string());
        assert_eq!(v.subvolume, expected_subvol);

        let magic = vss_sys::fs_magic(&fs.mount_point).unwrap();
        let expected_magic = match fs_type {
            "ext4" => vss_sys::magic::EXT4,
            "xfs" => vss_sys::magic::XFS,
            _ => vss_sys::magic::BTRFS,
        };
        assert_eq!(magic, expected_magic, "{fs_type}");

        let entry = mounts::mountinfo()
            .unwrap()
            .into_iter()
            .find(|m| m.mount_point == fs.mount_point)
            .unwrap();
        assert_eq!(entry.source, fs.device);
        assert_eq!(entry.fs_type, fs_type);

        let listed = mounts::list_volumes().unwrap();
        assert!(
            listed
                .iter()
                .any(|l| Path::new(&l.mount_point) == fs.mount_point && l.fs_uuid == v.fs_uuid),
            "{fs_type} missing from list_volumes"
        );
        assert!(vss_sys::is_mount_point(&fs.mount_point).unwrap());
        assert!(!vss_sys::is_mount_point(&fs.path("dir")).unwrap());
    }
}

/// A read-only mount is flagged (and its UUID still read from the device);
/// mount points with spaces and tabs come back unescaped.
#[test]
fn priv_read_only_mount_with_space_in_path() {
    if !privileged("priv_read_only_mount_with_space_in_path") {
        return;
    }
    let fs = LoopFs::with_mount_options("ext4", 32, "ro");
    let v = mounts::volume_of(&fs.mount_point).unwrap();
    assert!(v.read_only);
    assert_eq!(v.fs_uuid.as_deref(), Some(fs.blkid_uuid().as_str()));

    let dir = tempfile::tempdir().unwrap();
    let mp = dir.path().join("a dir\twith spaces");
    std::fs::create_dir(&mp).unwrap();
    run(
        "mount",
        &[
            "--bind",
            fs.mount_point.to_str().unwrap(),
            mp.to_str().unwrap(),
        ],
    );
    let _guard = MountGuard::new(&mp);
    let v = mounts::volume_of(&mp.join("lost+found")).unwrap();
    assert_eq!(Path::new(&v.mount_point), mp);
    assert!(v.read_only);
    assert_eq!(v.device, fs.device);
}

/// A read-only bind mount on a real filesystem: readable, writes fail with
/// EROFS, and the live filesystem stays writable.
#[test]
fn priv_bind_mount_readonly_on_xfs() {
    if !privileged("priv_bind_mount_readonly_on_xfs") {
        return;
    }
    let fs = LoopFs::new("xfs", 0);
    write_file(&fs.path("data/f"), b"content");
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("view");
    std::fs::create_dir(&target).unwrap();
    vss_sys::bind_mount_readonly(&fs.path("data"), &target).unwrap();
    let guard = MountGuard::new(&target);
    assert!(vss_sys::is_mount_point(&target).unwrap());
    assert_eq!(std::fs::read(target.join("f")).unwrap(), b"content");
    let e = std::fs::write(target.join("g"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    let e = std::fs::remove_file(target.join("f")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    write_file(&fs.path("data/g"), b"live");
    assert_eq!(std::fs::read(target.join("g")).unwrap(), b"live");

    // A busy mount is not detached lazily: the error comes back.
    let open = std::fs::File::open(target.join("f")).unwrap();
    let e = vss_sys::unmount(&target).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EBUSY), "{e}");
    drop(open);
    vss_sys::unmount(&target).unwrap();
    guard.disarm();
    assert!(!vss_sys::is_mount_point(&target).unwrap());
}

#[test]
fn priv_btrfs_snapshot_and_delete() {
    if !privileged("priv_btrfs_snapshot_and_delete") {
        return;
    }
    let fs = LoopFs::new("btrfs", 0);
    let mp = &fs.mount_point;
    write_file(&fs.path("docs/a.txt"), b"version 1");
    let snaps = fs.path("snaps");
    std::fs::create_dir(&snaps).unwrap();
    assert!(btrfs::is_subvolume(mp).unwrap());
    assert!(!btrfs::is_subvolume(&snaps).unwrap());
    assert!(!btrfs::subvolume_is_readonly(mp).unwrap());

    btrfs::snapshot_readonly(mp, &snaps, "s1").unwrap();
    let s1 = snaps.join("s1");
    assert!(btrfs::is_subvolume(&s1).unwrap());
    assert!(btrfs::subvolume_is_readonly(&s1).unwrap());
    // Listed by btrfs-progs as a read-only subvolume.
    let show = run("btrfs", &["subvolume", "show", s1.to_str().unwrap()]);
    assert!(show.contains("readonly"), "{show}");

    write_file(&fs.path("docs/a.txt"), b"version 2");
    write_file(&fs.path("docs/new.txt"), b"new");
    assert_eq!(std::fs::read(s1.join("docs/a.txt")).unwrap(), b"version 1");
    assert!(!s1.join("docs/new.txt").exists());
    let e = std::fs::write(s1.join("docs/a.txt"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");

    // Same name again: EEXIST.
    let e = btrfs::snapshot_readonly(mp, &snaps, "s1").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EEXIST), "{e}");
    // A bad name never reaches the kernel.
    let e = btrfs::snapshot_readonly(mp, &snaps, "a/b").unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);

    // A read-only snapshot can be deleted by root.
    btrfs::delete_subvolume(&snaps, "s1").unwrap();
    assert!(!s1.exists());
    let e = btrfs::delete_subvolume(&snaps, "s1").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
    // A plain directory is not a subvolume and is left alone.
    std::fs::create_dir(snaps.join("plain")).unwrap();
    assert!(btrfs::delete_subvolume(&snaps, "plain").is_err());
    assert!(snaps.join("plain").is_dir());

    // The fsid ioctl agrees with blkid.
    let fsid = btrfs::fsid(mp).unwrap();
    assert_eq!(
        vss_sys::fs_uuid(mp, "btrfs", "ignored").unwrap(),
        fs.blkid_uuid()
    );
    assert_ne!(fsid, [0; 16]);
}

#[test]
fn priv_btrfs_ioctls_on_ext4_fail_cleanly() {
    if !privileged("priv_btrfs_ioctls_on_ext4_fail_cleanly") {
        return;
    }
    let fs = LoopFs::new("ext4", 32);
    std::fs::create_dir(fs.path("snaps")).unwrap();
    let e = btrfs::snapshot_readonly(&fs.mount_point, &fs.path("snaps"), "s").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTTY), "{e}");
    assert!(!btrfs::is_subvolume(&fs.mount_point).unwrap());
    assert!(btrfs::subvolume_is_readonly(&fs.mount_point).is_err());
}

/// A btrfs subvolume mounted with `subvol=`: the volume names the subvolume,
/// the exposed snapshot mount is not listed as a volume.
#[test]
fn priv_btrfs_subvolume_mount_and_shadow_exposure() {
    if !privileged("priv_btrfs_subvolume_mount_and_shadow_exposure") {
        return;
    }
    let fs = LoopFs::new("btrfs", 0);
    run(
        "btrfs",
        &["subvolume", "create", fs.path("@data").to_str().unwrap()],
    );
    let dir = tempfile::tempdir().unwrap();
    let sub_mp = dir.path().join("data");
    std::fs::create_dir(&sub_mp).unwrap();
    run(
        "mount",
        &["-o", "subvol=@data", &fs.device, sub_mp.to_str().unwrap()],
    );
    let _sub_guard = MountGuard::new(&sub_mp);
    let v = mounts::volume_of(&sub_mp).unwrap();
    assert_eq!(v.subvolume.as_deref(), Some("/@data"));
    assert_eq!(v.fs_uuid.as_deref(), Some(fs.blkid_uuid().as_str()));

    let shadows = sub_mp.join(vss_sys::SHADOWS_DIR_NAME);
    std::fs::create_dir(&shadows).unwrap();
    btrfs::snapshot_readonly(&sub_mp, &shadows, "snap").unwrap();
    let view = dir.path().join("view");
    std::fs::create_dir(&view).unwrap();
    vss_sys::bind_mount_readonly(&shadows.join("snap"), &view).unwrap();
    let view_guard = MountGuard::new(&view);
    let entries = mounts::mountinfo().unwrap();
    let exposed = entries.iter().find(|m| m.mount_point == view).unwrap();
    assert!(exposed.is_shadow_exposure(), "{exposed:?}");
    let listed = mounts::list_volumes().unwrap();
    assert!(listed.iter().any(|l| Path::new(&l.mount_point) == sub_mp));
    assert!(!listed.iter().any(|l| Path::new(&l.mount_point) == view));
    vss_sys::unmount(&view).unwrap();
    view_guard.disarm();
    btrfs::delete_subvolume(&shadows, "snap").unwrap();
}
