//! [`FuseFrontend`]: images as files in a FUSE filesystem, for the loop
//! driver.
//!
//! Threading: fuser 0.17 can run its session loop on several threads
//! (`Config::n_threads`), and with `Config::clone_fd` each thread reads
//! requests through its own clone of the `/dev/fuse` descriptor
//! (`FUSE_DEV_IOC_CLONE`). Every request is handled to the end on the thread
//! that read it: no hand-off, no copy of write payloads, and lookups are
//! never stuck behind a long engine call because other threads keep
//! reading. With `FUSE_ASYNC_DIO` the kernel keeps up to `max_background`
//! requests in flight, so a loop device gets as many parallel engine calls
//! as there are threads.
//!
//! Shutting down: a graceful shutdown unmounts with umount(8), after which
//! the kernel ends the connection and the session threads return. A forced
//! one withdraws everything (the kernel gets `EIO` from then on), detaches
//! the mount lazily and does not wait for loop devices still attached: the
//! connection, and with it the session threads, ends when the last of them
//! lets go of its file.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use fuser::{BackgroundSession, Config, MountOption, SessionACL};

use crate::fs::{ConnectionSettings, ImageFs};
use crate::mount;
use crate::registry::Registry;
use crate::{BlockFrontend, BlockImage, FrontendError};

/// How long a forced shutdown waits for the session threads to end.
const REAP_WAIT: Duration = Duration::from_secs(2);

/// Tuning of a [`FuseFrontend`]; the defaults are what was measured to
/// work.
#[derive(Clone, Copy, Debug)]
pub struct FuseOptions {
    /// Threads serving requests. Engine calls may block on storage, so
    /// more threads than cores pays off.
    pub threads: usize,
    /// Largest write request the kernel sends, in bytes (1 MiB; fuser
    /// allows up to 16 MiB, kernels cap it at their `max_pages` limit).
    pub max_write: u32,
    /// Requests the kernel keeps in flight for asynchronous direct I/O.
    pub max_background: u16,
}

impl Default for FuseOptions {
    fn default() -> FuseOptions {
        FuseOptions {
            threads: 4,
            max_write: 1 << 20,
            max_background: 64,
        }
    }
}

/// Serves published images as regular files in a FUSE filesystem mounted
/// on a root-only directory. Attach a loop device to a published file with
/// `losetup --direct-io=on`. Dropping it is a
/// [`force_shutdown`](BlockFrontend::force_shutdown).
pub struct FuseFrontend {
    dir: PathBuf,
    registry: Arc<Registry>,
    session: Mutex<Option<BackgroundSession>>,
}

impl FuseFrontend {
    /// Mounts an empty image directory at `dir` with the default options.
    /// Needs root.
    pub fn mount(dir: &Path) -> Result<FuseFrontend, FrontendError> {
        Self::mount_with(dir, FuseOptions::default())
    }

    /// Mounts an empty image directory at `dir`, created if missing and
    /// made root-only (0700). A stale mount left there by a crashed front
    /// end is detached first; a live one is refused as busy.
    pub fn mount_with(dir: &Path, options: FuseOptions) -> Result<FuseFrontend, FrontendError> {
        let dir = mount::prepare(dir)?;
        let registry = Arc::new(Registry::new());
        let settings = ConnectionSettings {
            max_write: options.max_write,
            max_background: options.max_background,
        };
        let fs = ImageFs::new(registry.clone(), settings);
        let session = fuser::spawn_mount2(fs, &dir, &session_config(&options))
            .map_err(|e| FrontendError::io(format!("mounting FUSE at {}", dir.display()), e))?;
        tracing::info!(dir = %dir.display(), threads = options.threads, "FUSE image directory mounted");
        Ok(FuseFrontend {
            dir,
            registry,
            session: Mutex::new(Some(session)),
        })
    }

    /// The directory the images appear in.
    pub fn mount_dir(&self) -> &Path {
        &self.dir
    }

    fn lock_session(&self) -> MutexGuard<'_, Option<BackgroundSession>> {
        self.session.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Refuses when shut down, or when the session ended behind our back
    /// (someone unmounted the directory).
    fn ensure_serving(&self) -> Result<(), FrontendError> {
        match &*self.lock_session() {
            Some(session) if !session.guard.is_finished() => Ok(()),
            Some(_) => {
                tracing::error!(dir = %self.dir.display(), "FUSE session ended unexpectedly");
                Err(FrontendError::ShutDown)
            }
            None => Err(FrontendError::ShutDown),
        }
    }

    /// Whether the kernel still has our filesystem mounted at `dir`.
    fn still_mounted(&self, session: &BackgroundSession) -> bool {
        !session.guard.is_finished() && mount::is_mount_point(&self.dir).unwrap_or(true)
    }
}

fn session_config(options: &FuseOptions) -> Config {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("vss-cow".into()),
        MountOption::Subtype("vss-cow".into()),
        // The kernel checks our modes (0700/0600/0400, root) itself.
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoExec,
        MountOption::NoAtime,
    ];
    // Only the mounting user (root) may use the filesystem: no allow_other.
    config.acl = SessionACL::Owner;
    config.n_threads = Some(options.threads.max(1));
    config.clone_fd = true;
    config
}

/// Joins the session threads, giving up after `wait` (they keep running
/// until the kernel ends the connection; the join then happens in the
/// background).
fn reap(session: BackgroundSession, wait: Duration) {
    let (done_tx, done_rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("vss-fuse-reaper".into())
        .spawn(move || {
            if let Err(error) = session.join() {
                tracing::warn!(%error, "FUSE session ended with an error");
            }
            let _ = done_tx.send(());
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start a thread to reap the FUSE session");
        return;
    }
    if done_rx.recv_timeout(wait).is_err() {
        tracing::warn!(
            "FUSE connection stays up until its last open image is closed \
             (loop device still attached?); its I/O fails with EIO"
        );
    }
}

impl BlockFrontend for FuseFrontend {
    fn publish(&self, name: &str, image: Arc<dyn BlockImage>) -> Result<PathBuf, FrontendError> {
        self.ensure_serving()?;
        self.registry.publish(name, image)?;
        tracing::info!(name, dir = %self.dir.display(), "image published");
        Ok(self.dir.join(name))
    }

    fn withdraw(&self, name: &str) -> Result<(), FrontendError> {
        self.registry.withdraw(name, false)?;
        tracing::info!(name, "image withdrawn");
        Ok(())
    }

    fn force_withdraw(&self, name: &str) -> Result<(), FrontendError> {
        self.registry.withdraw(name, true)?;
        tracing::warn!(name, "image withdrawn by force");
        Ok(())
    }

    fn published(&self) -> Vec<String> {
        self.registry.names()
    }

    fn shutdown(&self) -> Result<(), FrontendError> {
        let mut guard = self.lock_session();
        let Some(session) = guard.as_ref() else {
            return Ok(());
        };
        self.registry.close_if_idle()?;
        if self.still_mounted(session) {
            if let Err(e) = mount::unmount(&self.dir) {
                self.registry.reopen();
                return Err(e);
            }
        }
        self.registry.clear();
        let session = guard.take().expect("checked above");
        // Unmounted: the kernel has ended the connection, so this is quick.
        if let Err(error) = session.join() {
            tracing::warn!(%error, "FUSE session ended with an error");
        }
        tracing::info!(dir = %self.dir.display(), "FUSE image directory unmounted");
        Ok(())
    }

    fn force_shutdown(&self) -> Result<(), FrontendError> {
        let mut guard = self.lock_session();
        let Some(session) = guard.take() else {
            return Ok(());
        };
        self.registry.clear();
        let unmounted = if self.still_mounted(&session) {
            mount::unmount_lazy(&self.dir)
        } else {
            Ok(())
        };
        reap(session, REAP_WAIT);
        tracing::warn!(dir = %self.dir.display(), "FUSE image directory shut down by force");
        unmounted.map_err(|e| FrontendError::io(format!("detaching {}", self.dir.display()), e))
    }
}

impl Drop for FuseFrontend {
    fn drop(&mut self) {
        if let Err(error) = self.force_shutdown() {
            tracing::error!(%error, "FUSE front end not shut down cleanly");
        }
    }
}
