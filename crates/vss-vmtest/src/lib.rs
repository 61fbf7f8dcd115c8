//! Tests that run only inside the VM lane, and helpers for them.
//!
//! The VM lane (`tests/vm/lane.sh`, see docs/VM-LANE.md) boots a stock
//! Debian kernel under QEMU and runs test binaries built on the host as root
//! inside it, for kernel features the host may lack: device-mapper, LVM
//! thick and thin snapshots. Its `/init` sets `VSS_VM_LANE=1` and puts the
//! path of a fresh, empty test disk in `VSS_VM_DISK`.
//!
//! The integration tests of this crate start with
//! `if !vss_vmtest::in_lane("name") { return; }`. Outside the lane that call
//! panics, unless `VSS_ALLOW_SKIP=1` is set, in which case it prints
//! `SKIPPED: …` and the test returns: like the privileged tests, lane tests
//! never pass silently without having run. On the host, `scripts/test.sh`
//! leaves this crate out of the normal run and `scripts/vm-test.sh` runs its
//! test binaries in the guest.
//!
//! [`lvm::LaneVg`] makes a volume group on the test disk; the tests using
//! the disk take turns through [`lock_disk`].

use std::io::Write;
use std::sync::{Mutex, MutexGuard};

pub mod lvm;

/// Set to `1` by the lane's guest `/init`.
pub const LANE_ENV: &str = "VSS_VM_LANE";
/// The test disk's device path (`/dev/vdX`), set by the lane's guest `/init`.
pub const DISK_ENV: &str = "VSS_VM_DISK";

/// Why lane tests cannot run here, or `None` if they can.
pub fn lane_problem() -> Option<String> {
    if std::env::var(LANE_ENV).as_deref() != Ok("1") {
        return Some(format!(
            "not inside the VM lane ({LANE_ENV} is not 1); run it with scripts/vm-test.sh"
        ));
    }
    match std::env::var(DISK_ENV) {
        Ok(d) if std::path::Path::new(&d).exists() => {}
        Ok(d) => return Some(format!("{DISK_ENV}={d} does not exist")),
        Err(_) => return Some(format!("{DISK_ENV} is not set")),
    }
    vss_testkit::privilege_problem()
}

/// `true`: go ahead with the lane test `test`. Outside the lane this panics
/// with the reason, or, with `VSS_ALLOW_SKIP=1`, prints
/// `SKIPPED: <test>: <reason>` to stderr and returns `false`.
pub fn in_lane(test: &str) -> bool {
    let Some(reason) = lane_problem() else {
        return true;
    };
    if std::env::var(vss_testkit::ALLOW_SKIP_ENV).as_deref() == Ok("1") {
        // Straight to the stderr handle: eprintln! is captured by the harness.
        let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {reason}");
        false
    } else {
        panic!(
            "{test} is a VM lane test and cannot run here: {reason}. Set {}=1 to skip it \
             explicitly.",
            vss_testkit::ALLOW_SKIP_ENV
        )
    }
}

/// The lane's test disk (`VSS_VM_DISK`); panics outside the lane.
pub fn lane_disk() -> String {
    std::env::var(DISK_ENV).unwrap_or_else(|_| panic!("{DISK_ENV} is not set (not in the VM lane)"))
}

static DISK: Mutex<()> = Mutex::new(());

/// Holds the lane's test disk for one test: tests of a binary run on
/// parallel threads, and only one of them may use the disk at a time. A test
/// that panicked while holding it does not block the others.
pub fn lock_disk() -> MutexGuard<'static, ()> {
    DISK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
