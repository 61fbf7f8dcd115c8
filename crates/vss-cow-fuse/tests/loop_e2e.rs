//! End to end: images published by the FUSE front end, loop devices in
//! direct-I/O mode on them, real filesystems on those. Privileged (root,
//! loop devices, /dev/fuse).

mod common;

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{fuse_ready, is_mounted, path_str, Loop, MemImage, Scratch, MIB};
use vss_cow_fuse::{BlockFrontend, FrontendError, FuseFrontend};
use vss_testkit::{run, write_file, MountGuard};

const GUID: &str = "{8f0c2a4e-5b1d-4c3e-9a7f-0123456789ab}";
const IDLE_WAIT: Duration = Duration::from_secs(10);

fn fill(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn priv_ext4_on_a_direct_io_loop_goes_through_write_at() {
    if !fuse_ready("priv_ext4_on_a_direct_io_loop_goes_through_write_at") {
        return;
    }
    let scratch = Scratch::new();
    let frontend = FuseFrontend::mount(&scratch.images()).unwrap();
    let image = MemImage::new(256 * MIB);
    let path = frontend.publish("live", image.clone()).unwrap();
    assert_eq!(path, scratch.images().join("live"));
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), 256 * MIB);
    assert_eq!(meta.mode(), 0o100600);
    assert_eq!((meta.uid(), meta.gid()), (0, 0));

    let lo = Loop::attach(&path, &[]);
    assert_eq!(lo.sysfs("dio"), "1", "loop is not in direct-I/O mode");
    run("mkfs.ext4", &["-q", "-F", &lo.device]);
    let mnt = scratch.fs_mount();
    run("mount", &[&lo.device, path_str(&mnt)]);
    let guard = MountGuard::new(&mnt);

    let written_before = image.stat(&image.bytes_written);
    let big = fill(32 * MIB as usize, 7);
    write_file(&mnt.join("big"), &big);
    for i in 0..50 {
        write_file(
            &mnt.join(format!("small/{i}")),
            format!("file {i}").as_bytes(),
        );
    }
    run("fsfreeze", &["--freeze", path_str(&mnt)]);
    run("fsfreeze", &["--unfreeze", path_str(&mnt)]);
    run("sync", &[]);
    let written = image.stat(&image.bytes_written) - written_before;
    assert!(
        written >= big.len() as u64,
        "only {written} bytes reached write_at after writing {} and syncing",
        big.len()
    );
    run("umount", &[path_str(&mnt)]);
    guard.disarm();
    run("e2fsck", &["-f", "-n", &lo.device]);

    // Read back through read_at: the filesystem's cache went with the
    // unmount, and loop in direct-I/O mode keeps none.
    let reads_before = image.stat(&image.reads);
    run("mount", &["-o", "ro", &lo.device, path_str(&mnt)]);
    let guard = MountGuard::new(&mnt);
    assert!(
        std::fs::read(mnt.join("big")).unwrap() == big,
        "big file differs"
    );
    assert_eq!(std::fs::read(mnt.join("small/49")).unwrap(), b"file 49");
    run("umount", &[path_str(&mnt)]);
    guard.disarm();
    assert!(image.stat(&image.reads) > reads_before);

    let largest = image.stat(&image.largest_write);
    let threads = image.writer_threads.lock().unwrap().len();
    let parallel = image.stat(&image.most_in_flight);
    eprintln!(
        "write_at: {} calls, {} bytes, largest {largest}, {threads} threads, \
         up to {parallel} at once; {} flushes",
        image.stat(&image.writes),
        image.stat(&image.bytes_written),
        image.stat(&image.flushes),
    );
    assert!(
        largest > 128 * 1024,
        "largest write was {largest} bytes: max_write was not raised"
    );
    assert!(
        largest <= MIB,
        "a write of {largest} bytes exceeds max_write"
    );
    assert!(threads > 1, "all writes were served by one thread");
    assert!(parallel > 1, "write_at calls never overlapped");

    lo.detach();
    frontend.withdraw_when_idle("live", IDLE_WAIT).unwrap();
    frontend.shutdown().unwrap();
    assert!(!is_mounted(&scratch.images()));
}

#[test]
fn priv_sync_in_the_mounted_filesystem_reaches_flush() {
    if !fuse_ready("priv_sync_in_the_mounted_filesystem_reaches_flush") {
        return;
    }
    let scratch = Scratch::new();
    let frontend = FuseFrontend::mount(&scratch.images()).unwrap();
    let image = MemImage::new(64 * MIB);
    let path = frontend.publish("live", image.clone()).unwrap();
    let lo = Loop::attach(&path, &[]);
    run("mkfs.ext4", &["-q", "-F", &lo.device]);
    let mnt = scratch.fs_mount();
    run("mount", &[&lo.device, path_str(&mnt)]);
    let guard = MountGuard::new(&mnt);

    write_file(&mnt.join("data"), &fill(MIB as usize, 1));
    let flushes = image.stat(&image.flushes);
    run("sync", &[]);
    assert!(
        image.stat(&image.flushes) > flushes,
        "sync did not reach BlockImage::flush"
    );

    run("umount", &[path_str(&mnt)]);
    guard.disarm();
    lo.detach();
    frontend.withdraw_when_idle("live", IDLE_WAIT).unwrap();
    frontend.shutdown().unwrap();
}

/// A small ext4 image holding `hello.txt`, made without mounting anything.
fn ext4_image_with_hello(scratch: &Scratch) -> Vec<u8> {
    let src = scratch.dir.path().join("src");
    write_file(&src.join("hello.txt"), b"hello from a shadow\n");
    let file = scratch.dir.path().join("ro.img");
    std::fs::File::create(&file)
        .unwrap()
        .set_len(16 * MIB)
        .unwrap();
    run(
        "mkfs.ext4",
        &["-q", "-F", "-d", path_str(&src), path_str(&file)],
    );
    std::fs::read(&file).unwrap()
}

#[test]
fn priv_read_only_image_refuses_writes_and_mounts_read_only() {
    if !fuse_ready("priv_read_only_image_refuses_writes_and_mounts_read_only") {
        return;
    }
    let scratch = Scratch::new();
    let data = ext4_image_with_hello(&scratch);
    let frontend = FuseFrontend::mount(&scratch.images()).unwrap();
    let image = MemImage::read_only_from(&data);
    let path = frontend.publish(GUID, image.clone()).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.mode(), 0o100400);
    assert_eq!(meta.len(), data.len() as u64);

    for direct in [false, true] {
        let flags = if direct { libc::O_DIRECT } else { 0 };
        let err = OpenOptions::new()
            .write(true)
            .custom_flags(flags)
            .open(&path)
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    }
    // Reading works, with and without O_DIRECT.
    let mut head = vec![0u8; 4096];
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .unwrap();
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut head, 0).unwrap();
    assert_eq!(head, data[..4096]);
    drop(file);

    let lo = Loop::attach(&path, &["--read-only"]);
    assert_eq!(lo.sysfs("dio"), "1");
    let mnt = scratch.fs_mount();
    run("mount", &["-o", "ro", &lo.device, path_str(&mnt)]);
    let guard = MountGuard::new(&mnt);
    assert_eq!(
        std::fs::read(mnt.join("hello.txt")).unwrap(),
        b"hello from a shadow\n"
    );
    run("umount", &[path_str(&mnt)]);
    guard.disarm();
    lo.detach();

    assert_eq!(image.stat(&image.writes), 0);
    frontend.withdraw_when_idle(GUID, IDLE_WAIT).unwrap();
}

#[test]
fn priv_withdraw_and_shutdown_are_busy_while_a_loop_device_is_attached() {
    if !fuse_ready("priv_withdraw_and_shutdown_are_busy_while_a_loop_device_is_attached") {
        return;
    }
    let scratch = Scratch::new();
    let frontend = FuseFrontend::mount(&scratch.images()).unwrap();
    let path = frontend.publish("live", MemImage::new(16 * MIB)).unwrap();
    let lo = Loop::attach(&path, &[]);

    let err = frontend.withdraw("live").unwrap_err();
    assert!(err.is_busy(), "{err}");
    let err = frontend.shutdown().unwrap_err();
    assert!(err.is_busy(), "{err}");
    assert_eq!(frontend.published(), ["live"]);
    assert!(is_mounted(&scratch.images()));
    // Still serving after the refused shutdown.
    run(
        "dd",
        &[
            &format!("if={}", lo.device),
            "of=/dev/null",
            "bs=4096",
            "count=1",
            "iflag=direct",
            "status=none",
        ],
    );

    lo.detach();
    frontend.withdraw_when_idle("live", IDLE_WAIT).unwrap();
    assert!(frontend.published().is_empty());
    let err = std::fs::metadata(&path).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    frontend.shutdown().unwrap();
    assert!(!is_mounted(&scratch.images()));
    assert!(matches!(
        frontend.publish("live", MemImage::new(MIB)),
        Err(FrontendError::ShutDown)
    ));
    frontend.shutdown().unwrap();
}

#[test]
fn priv_force_shutdown_cuts_off_an_attached_loop_device() {
    if !fuse_ready("priv_force_shutdown_cuts_off_an_attached_loop_device") {
        return;
    }
    let scratch = Scratch::new();
    let frontend = FuseFrontend::mount(&scratch.images()).unwrap();
    let image = MemImage::new(16 * MIB);
    let path = frontend.publish("live", image.clone()).unwrap();
    let lo = Loop::attach(&path, &[]);

    let started = Instant::now();
    frontend.force_shutdown().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!is_mounted(&scratch.images()));
    let reads = image.stat(&image.reads);
    let out = std::process::Command::new("dd")
        .args([
            &format!("if={}", lo.device),
            "of=/dev/null",
            "bs=4096",
            "count=1",
            "iflag=direct",
            "status=none",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "reading the cut-off device worked");
    assert_eq!(image.stat(&image.reads), reads, "read_at ran after the cut");
    lo.detach();
}

#[test]
fn priv_listing_follows_publish_and_withdraw() {
    if !fuse_ready("priv_listing_follows_publish_and_withdraw") {
        return;
    }
    let scratch = Scratch::new();
    let frontend = FuseFrontend::mount(&scratch.images()).unwrap();
    let dir = scratch.images();
    let meta = std::fs::metadata(&dir).unwrap();
    assert_eq!(meta.mode(), 0o40700);
    assert_eq!((meta.uid(), meta.gid()), (0, 0));

    frontend.publish("live", MemImage::new(4 * MIB)).unwrap();
    let shadow = MemImage::read_only_from(&[0; 4096]);
    frontend.publish(GUID, shadow).unwrap();
    let list = |dir: &std::path::Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    assert_eq!(list(&dir), ["live", GUID]);
    assert_eq!(frontend.published(), ["live", GUID]);
    assert_eq!(std::fs::metadata(dir.join(GUID)).unwrap().mode(), 0o100400);

    // Sizes follow at once when a name is withdrawn and published again.
    frontend.withdraw(GUID).unwrap();
    assert_eq!(list(&dir), ["live"]);
    let err = std::fs::metadata(dir.join(GUID)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    frontend.withdraw("live").unwrap();
    frontend.publish("live", MemImage::new(8 * MIB)).unwrap();
    assert_eq!(std::fs::metadata(dir.join("live")).unwrap().len(), 8 * MIB);

    // Images come only from the front end.
    let err = std::fs::write(dir.join("new"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    let err = std::fs::remove_file(dir.join("live")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    let err = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(dir.join("live"))
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");

    assert!(matches!(
        frontend.publish("live", MemImage::new(MIB)),
        Err(FrontendError::AlreadyPublished(_))
    ));
    assert!(matches!(
        frontend.publish("../escape", MemImage::new(MIB)),
        Err(FrontendError::InvalidName { .. })
    ));
    drop(frontend);
    assert!(!is_mounted(&dir));
}

#[test]
fn priv_mounting_twice_on_one_directory_is_refused() {
    if !fuse_ready("priv_mounting_twice_on_one_directory_is_refused") {
        return;
    }
    let scratch = Scratch::new();
    let _first = FuseFrontend::mount(&scratch.images()).unwrap();
    let err = FuseFrontend::mount(&scratch.images()).err().unwrap();
    assert!(err.is_busy(), "{err}");
}

#[test]
fn priv_stale_mount_of_a_crashed_front_end_is_detached() {
    if !fuse_ready("priv_stale_mount_of_a_crashed_front_end_is_detached") {
        return;
    }
    let scratch = Scratch::new();
    let dir = scratch.images();
    std::fs::create_dir(&dir).unwrap();
    // A FUSE mount whose server is gone: the shell opens /dev/fuse, mounts
    // with it and exits, which ends the connection.
    let script = format!(
        "exec 3<>/dev/fuse && mount -i -t fuse -o fd=3,rootmode=40000,user_id=0,group_id=0 \
         crashed '{}'",
        path_str(&dir)
    );
    run("sh", &["-c", &script]);
    let err = std::fs::metadata(&dir).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");

    let frontend = FuseFrontend::mount(&dir).unwrap();
    let path = frontend
        .publish("live", Arc::new(MemImage::default()) as Arc<_>)
        .unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    frontend.shutdown().unwrap();
    assert!(!is_mounted(&dir), "a mount is left at {}", dir.display());
}
