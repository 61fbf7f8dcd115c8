//! Writeback while the backup is written: a helper thread syncs now and
//! then (every 128 MiB written), so the disk works during the copy and
//! the final sync in `finish` has little left to do. Without it all the
//! data waits for that final sync, which then takes as long again as a
//! fast copy.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::mpsc::SyncSender;
use std::thread::JoinHandle;

/// Bytes written between two background syncs.
const SYNC_EVERY: u64 = 128 << 20;

pub struct BackgroundSync {
    kick: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
    since: u64,
}

impl BackgroundSync {
    /// `whole_fs`: syncfs of `target`'s filesystem (a directory backup,
    /// many files); else fdatasync of `target` (the tar.zst file).
    pub fn new(target: File, whole_fs: bool) -> Self {
        let (kick, kicked) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("backup-sync".into())
            .spawn(move || {
                for () in kicked {
                    // Best effort: finish() syncs again and reports errors.
                    let _ = if whole_fs {
                        nix::unistd::syncfs(target.as_raw_fd())
                    } else {
                        nix::unistd::fdatasync(target.as_raw_fd())
                    };
                }
            })
            .ok();
        BackgroundSync {
            kick: thread.is_some().then_some(kick),
            thread,
            since: 0,
        }
    }

    /// Counts `n` bytes written; starts a sync when enough have been.
    pub fn wrote(&mut self, n: u64) {
        self.since += n;
        if self.since >= SYNC_EVERY {
            self.since = 0;
            if let Some(k) = &self.kick {
                // Skipped when the helper is still busy with the last one.
                let _ = k.try_send(());
            }
        }
    }
}

impl Drop for BackgroundSync {
    fn drop(&mut self) {
        self.kick = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
