//! LVM in the VM lane: thick and thin snapshots of mounted filesystems.
//! Runs only in the guest of tests/vm/lane.sh (scripts/vm-test.sh).

use vss_vmtest::lvm::{mkfs, LaneVg, Mount};

/// The snapshot `snap` (mounted read-only) shows the origin as it was when
/// the snapshot was taken: `before` with its old content, no `after`.
fn check_point_in_time(origin: &Mount, snap: &Mount) {
    assert_eq!(
        std::fs::read_to_string(snap.join("before.txt")).unwrap(),
        "written before the snapshot\n"
    );
    assert!(
        !snap.join("after.txt").exists(),
        "a file written after the snapshot is in it"
    );
    assert_eq!(
        std::fs::read_to_string(origin.join("before.txt")).unwrap(),
        "changed after the snapshot\n"
    );
    assert!(origin.join("after.txt").exists());
    // Read-only: writing into the snapshot's mount fails.
    assert!(std::fs::write(snap.join("new.txt"), "x").is_err());
}

fn write_before(m: &Mount) {
    std::fs::write(m.join("before.txt"), "written before the snapshot\n").unwrap();
    vss_vmtest::lvm::run("sync", &[]);
}

fn write_after(m: &Mount) {
    std::fs::write(m.join("before.txt"), "changed after the snapshot\n").unwrap();
    std::fs::write(m.join("after.txt"), "written after the snapshot\n").unwrap();
    vss_vmtest::lvm::run("sync", &[]);
}

#[test]
fn lvm_smoke() {
    if !vss_vmtest::in_lane("lvm_smoke") {
        return;
    }
    let vg = LaneVg::create("vsssmoke");

    // Thick volume, ext4, thick (copy-on-write) snapshot.
    let thick = vg.create_thick("thick", 256);
    mkfs("ext4", &thick);
    let origin = Mount::new(&thick, "");
    write_before(&origin);
    let snap_dev = vg.create_thick_snapshot("thick", "thicksnap", 64);
    write_after(&origin);
    let snap = Mount::new(&snap_dev, "ro");
    check_point_in_time(&origin, &snap);
    assert!(vg.lv_field("thicksnap", "lv_attr").starts_with('s'));
    snap.unmount();
    origin.unmount();
    vg.remove("thicksnap");
    vg.remove("thick");

    // Thin pool, thin volume with xfs, thin snapshot.
    vg.create_thin_pool("pool", 1024);
    let thin = vg.create_thin("pool", "thin", 2048);
    mkfs("xfs", &thin);
    let origin = Mount::new(&thin, "");
    write_before(&origin);
    let snap_dev = vg.create_thin_snapshot("thin", "thinsnap");
    write_after(&origin);
    // Same XFS UUID as the mounted origin: nouuid.
    let snap = Mount::new(&snap_dev, "ro,nouuid");
    check_point_in_time(&origin, &snap);
    assert_eq!(vg.lv_field("thinsnap", "pool_lv"), "pool");
    snap.unmount();
    origin.unmount();
    vg.remove("thinsnap");
    vg.remove("thin");
    vg.remove("pool");
}
