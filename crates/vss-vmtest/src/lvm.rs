//! LVM on the lane's test disk: a volume group, thick and thin logical
//! volumes and their snapshots, filesystems and mounts that clean up after
//! themselves when dropped (also when the test panics).
//!
//! ```no_run
//! use vss_vmtest::lvm::{mkfs, LaneVg, Mount};
//! let vg = LaneVg::create("vsstest");
//! let lv = vg.create_thick("data", 256);
//! mkfs("ext4", &lv);
//! let m = Mount::new(&lv, "");
//! // ... m.path() is the mounted filesystem; m drops before vg.
//! ```
//!
//! The guest has no udev: LVM is configured (lvmlocal.conf in the lane's
//! recipe) to create the device nodes itself, so `/dev/VG/LV` exists as soon
//! as an lvcreate or lvchange returns.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::MutexGuard;

use tempfile::TempDir;

pub use vss_testkit::run;

/// Runs a command for cleanup; reports a failure on stderr instead of
/// panicking (a panic in Drop during a panic aborts the test binary).
fn try_run(program: &str, args: &[&str]) -> bool {
    match Command::new(program).args(args).output() {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            eprintln!(
                "cleanup: {program} {} failed ({}): {}{}",
                args.join(" "),
                o.status,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            false
        }
        Err(e) => {
            eprintln!("cleanup: cannot run {program}: {e}");
            false
        }
    }
}

/// Removes every volume group on `disk` and wipes its signatures, so that a
/// test starts from an empty disk even if an earlier one did not clean up.
fn reset_disk(disk: &str) {
    let vgs = Command::new("pvs")
        .args(["--noheadings", "-o", "vg_name", disk])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for vg in vgs.split_whitespace() {
        try_run("vgchange", &["-an", vg]);
        try_run("vgremove", &["-ff", "-y", vg]);
    }
    let _ = Command::new("pvremove").args(["-ff", "-y", disk]).output();
    run("wipefs", &["-a", disk]);
}

/// A volume group over the whole lane test disk. Holds the disk (see
/// [`crate::lock_disk`]) until dropped; dropping it deactivates and removes
/// the group and wipes the disk. Drop mounts of its volumes first (declare
/// them after the `LaneVg`).
pub struct LaneVg {
    pub name: String,
    /// The physical volume: the lane test disk.
    pub disk: String,
    _disk_lock: MutexGuard<'static, ()>,
}

impl LaneVg {
    /// Makes volume group `name` on the lane test disk (waiting for the
    /// disk if another test of this binary holds it). Panics outside the
    /// lane.
    pub fn create(name: &str) -> LaneVg {
        let lock = crate::lock_disk();
        let disk = crate::lane_disk();
        reset_disk(&disk);
        run("pvcreate", &["-ff", "-y", &disk]);
        run("vgcreate", &["-y", name, &disk]);
        LaneVg {
            name: name.to_string(),
            disk,
            _disk_lock: lock,
        }
    }

    /// `VG/LV`, as LVM commands take it.
    pub fn full_name(&self, lv: &str) -> String {
        format!("{}/{lv}", self.name)
    }

    /// `/dev/VG/LV`.
    pub fn device(&self, lv: &str) -> String {
        format!("/dev/{}/{lv}", self.name)
    }

    /// A thick (linear) volume of `size_mib` MiB; returns its device.
    pub fn create_thick(&self, lv: &str, size_mib: u64) -> String {
        run(
            "lvcreate",
            &[
                "-y",
                "-W",
                "y",
                "-n",
                lv,
                "-L",
                &format!("{size_mib}m"),
                &self.name,
            ],
        );
        self.device(lv)
    }

    /// A thick (copy-on-write) snapshot of `origin` with `cow_mib` MiB of
    /// exception store, active; returns its device.
    pub fn create_thick_snapshot(&self, origin: &str, snap: &str, cow_mib: u64) -> String {
        run(
            "lvcreate",
            &[
                "-y",
                "-s",
                "-n",
                snap,
                "-L",
                &format!("{cow_mib}m"),
                &self.full_name(origin),
            ],
        );
        self.device(snap)
    }

    /// A thin pool of `size_mib` MiB.
    pub fn create_thin_pool(&self, pool: &str, size_mib: u64) {
        run(
            "lvcreate",
            &[
                "-y",
                "--type",
                "thin-pool",
                "-n",
                pool,
                "-L",
                &format!("{size_mib}m"),
                &self.name,
            ],
        );
    }

    /// A thin volume of `virtual_mib` MiB in `pool`; returns its device.
    pub fn create_thin(&self, pool: &str, lv: &str, virtual_mib: u64) -> String {
        run(
            "lvcreate",
            &[
                "-y",
                "-W",
                "y",
                "--type",
                "thin",
                "-n",
                lv,
                "-V",
                &format!("{virtual_mib}m"),
                "--thinpool",
                &self.full_name(pool),
            ],
        );
        self.device(lv)
    }

    /// A thin snapshot of the thin volume `origin`, activated (LVM creates
    /// thin snapshots with the activation-skip flag; `-K` overrides it);
    /// returns its device.
    pub fn create_thin_snapshot(&self, origin: &str, snap: &str) -> String {
        run(
            "lvcreate",
            &["-y", "-s", "-n", snap, &self.full_name(origin)],
        );
        run("lvchange", &["-ay", "-K", &self.full_name(snap)]);
        self.device(snap)
    }

    /// Removes a logical volume (it must not be mounted).
    pub fn remove(&self, lv: &str) {
        run("lvremove", &["-y", &self.full_name(lv)]);
    }

    /// `lvs` fields (`-o FIELDS`) of one volume, trimmed.
    pub fn lv_field(&self, lv: &str, field: &str) -> String {
        run("lvs", &["--noheadings", "-o", field, &self.full_name(lv)])
            .trim()
            .to_string()
    }
}

impl Drop for LaneVg {
    fn drop(&mut self) {
        try_run("vgchange", &["-an", &self.name]);
        try_run("vgremove", &["-ff", "-y", &self.name]);
        try_run("pvremove", &["-ff", "-y", &self.disk]);
        try_run("wipefs", &["-a", &self.disk]);
    }
}

/// Makes a `fs_type` filesystem on `device` (`ext4`, `xfs`, `btrfs`, or
/// anything with a `mkfs.TYPE`), overwriting what is there.
pub fn mkfs(fs_type: &str, device: &str) {
    let force = match fs_type {
        "xfs" | "btrfs" => "-f",
        _ => "-F",
    };
    run(&format!("mkfs.{fs_type}"), &["-q", force, device]);
}

/// `device` mounted on a fresh temporary directory; unmounted when dropped.
pub struct Mount {
    pub device: String,
    dir: TempDir,
    mounted: bool,
}

impl Mount {
    /// Mounts `device` with `-o options` if not empty (`ro`, or
    /// `ro,nouuid` for an XFS snapshot next to its mounted origin).
    pub fn new(device: &str, options: &str) -> Mount {
        let dir = tempfile::Builder::new()
            .prefix("vss-lane-mnt-")
            .tempdir()
            .expect("cannot create a mount point");
        let target = dir.path().to_str().expect("UTF-8 temp path").to_string();
        if options.is_empty() {
            run("mount", &[device, &target]);
        } else {
            run("mount", &["-o", options, device, &target]);
        }
        Mount {
            device: device.to_string(),
            dir,
            mounted: true,
        }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the mounted filesystem.
    pub fn join(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Unmounts now (panics if that fails).
    pub fn unmount(mut self) {
        run("umount", &[self.dir.path().to_str().unwrap()]);
        self.mounted = false;
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.mounted {
            let p = self.dir.path().to_str().unwrap().to_string();
            if !try_run("umount", &[&p]) {
                try_run("umount", &["-l", &p]);
            }
        }
    }
}
