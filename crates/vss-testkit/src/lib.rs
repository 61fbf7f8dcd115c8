//! Test helpers shared by the crates' tests.
//!
//! Privileged tests (named `priv_…` so they can be run or filtered as a
//! group) need root and loop devices. They start with
//! `if !vss_testkit::privileged("priv_name") { return; }`: where the
//! privileges are missing that call panics with the reason, unless
//! `VSS_ALLOW_SKIP=1` is set, in which case it prints `SKIPPED: …` to stderr
//! and the test returns. A privileged test never passes silently without
//! having run.
//!
//! [`LoopFs`] makes a scratch filesystem on a loop device and takes it down
//! again when dropped, even when the test panics.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

pub mod system;

/// Env var that lets privileged tests skip (loudly) instead of failing.
pub const ALLOW_SKIP_ENV: &str = "VSS_ALLOW_SKIP";

/// Why privileged tests cannot run here, or `None` if they can.
pub fn privilege_problem() -> Option<String> {
    match effective_uid() {
        Some(0) => {}
        Some(uid) => return Some(format!("not running as root (effective uid {uid})")),
        None => return Some("cannot read the effective uid from /proc/self/status".into()),
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("/dev/loop-control is missing (no loop device support)".into());
    }
    None
}

/// `true`: go ahead with the privileged test `test`. Without the privileges
/// this panics with the reason, or, with `VSS_ALLOW_SKIP=1`, prints
/// `SKIPPED: <test>: <reason>` to stderr and returns `false` (the test then
/// returns early).
pub fn privileged(test: &str) -> bool {
    let Some(reason) = privilege_problem() else {
        return true;
    };
    if std::env::var(ALLOW_SKIP_ENV).as_deref() == Ok("1") {
        // Written to the stderr handle rather than with eprintln!, which the
        // test harness captures and hides for passing tests.
        let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {reason}");
        false
    } else {
        panic!(
            "{test} is a privileged test and cannot run: {reason}. Run it as root on a machine \
             with loop devices, or set {ALLOW_SKIP_ENV}=1 to skip privileged tests explicitly."
        )
    }
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    // Uid: real effective saved fs
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Runs a command, panicking with its output if it cannot start or fails;
/// returns its stdout.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} (is it installed?)"));
    assert!(
        out.status.success(),
        "{program} {} failed ({}): {}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command and reports only whether it succeeded (for cleanup).
fn try_run(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// A fresh filesystem on a loop device over a sparse image in a temporary
/// directory, mounted at `mount_point`. Dropping it thaws the filesystem
/// (in case a test left it frozen), unmounts it, detaches the loop device
/// and removes the image.
pub struct LoopFs {
    pub image: PathBuf,
    /// `/dev/loopN`.
    pub device: String,
    pub mount_point: PathBuf,
    pub fs_type: String,
    mounted: bool,
    // Holds the image and the mount point; removed last.
    _dir: TempDir,
}

impl LoopFs {
    /// Makes and mounts a `fs_type` filesystem (`btrfs`, `xfs`, `ext4`, or
    /// anything with a `mkfs.TYPE`) of `size_mb` MiB (raised to what the
    /// mkfs requires: 300 for xfs, 128 for btrfs). Panics on any failure,
    /// after undoing what it had done.
    pub fn new(fs_type: &str, size_mb: u64) -> LoopFs {
        Self::with_mount_options(fs_type, size_mb, "")
    }

    /// Like [`LoopFs::new`], mounting with `-o options` if not empty.
    pub fn with_mount_options(fs_type: &str, size_mb: u64, options: &str) -> LoopFs {
        let min_mb = match fs_type {
            "xfs" => 300,
            "btrfs" => 128,
            _ => 16,
        };
        let size = size_mb.max(min_mb) * 1024 * 1024;
        let dir = tempfile::Builder::new()
            .prefix("vss-loopfs-")
            .tempdir()
            .expect("cannot create a temporary directory");
        let image = dir.path().join("image");
        let mount_point = dir.path().join("mnt");
        std::fs::create_dir(&mount_point).expect("cannot create the mount point");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(size))
            .expect("cannot create the sparse image");
        let device = run("losetup", &["--find", "--show", path_str(&image)])
            .trim()
            .to_string();
        assert!(
            device.starts_with("/dev/loop"),
            "losetup printed {device:?}"
        );
        // From here on Drop undoes the work, also if mkfs or mount panics.
        let mut fs = LoopFs {
            image,
            device,
            mount_point,
            fs_type: fs_type.to_string(),
            mounted: false,
            _dir: dir,
        };
        let mkfs = format!("mkfs.{fs_type}");
        match fs_type {
            "btrfs" | "xfs" => run(&mkfs, &["-f", "-q", &fs.device]),
            "ext2" | "ext3" | "ext4" => run(&mkfs, &["-F", "-q", &fs.device]),
            _ => run(&mkfs, &[&fs.device]),
        };
        let mut args = vec!["-t", fs_type];
        if !options.is_empty() {
            args.extend(["-o", options]);
        }
        args.extend([fs.device.as_str(), path_str(&fs.mount_point)]);
        run("mount", &args);
        fs.mounted = true;
        fs
    }

    /// `mount_point/rel`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.mount_point.join(rel)
    }

    /// The filesystem UUID as blkid reads it from the device (no cache).
    pub fn blkid_uuid(&self) -> String {
        run(
            "blkid",
            &["-c", "/dev/null", "-s", "UUID", "-o", "value", &self.device],
        )
        .trim()
        .to_string()
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let mp = path_str(&self.mount_point).to_string();
        if self.mounted {
            // A test that panicked while the filesystem was frozen would
            // otherwise hang the unmount.
            let _ = try_run("fsfreeze", &["--unfreeze", &mp]);
            let mut unmounted = false;
            for _ in 0..20 {
                if try_run("umount", &[&mp]) {
                    unmounted = true;
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            if !unmounted {
                // Busy (a test leaked a mount below it or an open file):
                // detach lazily rather than leak the loop device.
                eprintln!("LoopFs: {mp} still busy; detaching lazily");
                let _ = try_run("umount", &["--recursive", "--lazy", &mp]);
            }
        }
        if !try_run("losetup", &["--detach", &self.device]) {
            eprintln!("LoopFs: could not detach {}", self.device);
        }
    }
}

/// Unmounts `path` when dropped unless disarmed: a test that mounts
/// something and then panics does not leave the mount behind.
pub struct MountGuard {
    path: Option<PathBuf>,
}

impl MountGuard {
    pub fn new(path: &Path) -> MountGuard {
        MountGuard {
            path: Some(path.to_path_buf()),
        }
    }

    /// The test unmounted it itself.
    pub fn disarm(mut self) {
        self.path = None;
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = try_run("umount", &[path_str(&p)]);
        }
    }
}

/// Creates `path`'s parent directories and writes `data` to it.
pub fn write_file(path: &Path, data: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_is_readable() {
        assert!(effective_uid().is_some());
    }

    #[test]
    fn priv_loopfs_mounts_and_cleans_up() {
        if !privileged("priv_loopfs_mounts_and_cleans_up") {
            return;
        }
        let fs = LoopFs::new("ext4", 32);
        let image = fs.image.clone();
        let mp = fs.mount_point.clone();
        write_file(&fs.path("a/b"), b"x");
        assert_eq!(fs.blkid_uuid().len(), 36);
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        assert!(mounts.contains(path_str(&mp)));
        drop(fs);
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        assert!(!mounts.contains(path_str(&mp)));
        assert!(!mp.exists());
        // The device number may be reused at once by a parallel test; the
        // image (in a fresh temporary directory) may not.
        let list = run(
            "losetup",
            &["--list", "--noheadings", "--output", "BACK-FILE"],
        );
        assert!(!list.contains(path_str(&image)), "{list}");
    }
}
