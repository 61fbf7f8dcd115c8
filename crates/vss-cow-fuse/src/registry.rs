//! The published images and their open handles, shared between the admin
//! calls of [`FuseFrontend`](crate::FuseFrontend) and the FUSE request
//! threads.
//!
//! Kept free of FUSE machinery (only errno values leak in) so that the rules
//! — who may open what, when withdrawing is refused, how I/O is clamped and
//! cut off — are tested without a mount.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use fuser::Errno;

use crate::{validate_name, BlockImage, FrontendError};

/// Inode number of the mount's root directory (fixed by the FUSE protocol).
pub(crate) const ROOT_INO: u64 = 1;

/// One publication of an image. Withdrawing and publishing the same name
/// again makes a new node with a new inode number, so nothing the kernel
/// cached about the old one applies to the new one.
pub(crate) struct Node {
    pub(crate) name: String,
    pub(crate) ino: u64,
    pub(crate) size: u64,
    pub(crate) read_only: bool,
    pub(crate) published_at: SystemTime,
    image: Arc<dyn BlockImage>,
    open_handles: AtomicUsize,
    /// `true` while published. Engine calls hold it shared; withdrawing
    /// takes it exclusively, so it waits for calls in flight and no call
    /// starts after it.
    live: RwLock<bool>,
}

impl Node {
    /// Reads up to `len` bytes at `offset` into `buf` (grown as needed and
    /// reused across calls); returns how many bytes are valid: fewer than
    /// `len` at the end of the image, 0 past it.
    pub(crate) fn read(&self, offset: u64, len: u32, buf: &mut Vec<u8>) -> Result<usize, Errno> {
        let n = clamp(offset, len as usize, self.size);
        if n == 0 {
            return Ok(0);
        }
        if buf.len() < n {
            buf.resize(n, 0);
        }
        self.with_image("read", offset, n, |image| {
            image.read_at(&mut buf[..n], offset)
        })?;
        Ok(n)
    }

    /// Writes `data` at `offset`, cut short at the end of the image; returns
    /// how many bytes were written. `EFBIG` at or past the end, `EROFS` on a
    /// read-only image.
    #[cfg(test)]
    pub(crate) fn write(&self, offset: u64, data: &[u8]) -> Result<usize, Errno> {
        self.write_then(offset, data, &mut |_| {})
    }

    /// [`write`](Self::write) that calls `accepted` with the byte count as
    /// soon as the image accepts the write (see
    /// [`BlockImage::write_at_then`]); if it never does, the result is the
    /// write's.
    pub(crate) fn write_then(
        &self,
        offset: u64,
        data: &[u8],
        accepted: &mut dyn FnMut(usize),
    ) -> Result<usize, Errno> {
        if self.read_only {
            return Err(Errno::EROFS);
        }
        if data.is_empty() {
            return Ok(0);
        }
        let n = clamp(offset, data.len(), self.size);
        if n == 0 {
            return Err(Errno::EFBIG);
        }
        self.with_image("write", offset, n, |image| {
            image.write_at_then(&data[..n], offset, &mut || accepted(n))
        })?;
        Ok(n)
    }

    /// Makes acknowledged writes durable (nothing to do for read-only
    /// images).
    pub(crate) fn flush(&self) -> Result<(), Errno> {
        if self.read_only {
            return self.with_image("flush", 0, 0, |_| Ok(()));
        }
        self.with_image("flush", 0, 0, |image| image.flush())
    }

    pub(crate) fn open_handles(&self) -> usize {
        self.open_handles.load(Ordering::SeqCst)
    }

    /// Runs one engine call unless the node was withdrawn; engine errors
    /// are logged and become `EIO` (the kernel gets no detail anyway).
    fn with_image(
        &self,
        op: &str,
        offset: u64,
        len: usize,
        call: impl FnOnce(&dyn BlockImage) -> std::io::Result<()>,
    ) -> Result<(), Errno> {
        let live = self.live.read().unwrap_or_else(PoisonError::into_inner);
        if !*live {
            return Err(Errno::EIO);
        }
        call(&*self.image).map_err(|error| {
            tracing::error!(image = %self.name, op, offset, len, %error, "image I/O failed");
            Errno::EIO
        })
    }

    /// Waits for engine calls in flight, then refuses all further ones.
    fn cut_off(&self) {
        *self.live.write().unwrap_or_else(PoisonError::into_inner) = false;
    }
}

/// How many of `len` bytes at `offset` lie inside an image of `size` bytes.
fn clamp(offset: u64, len: usize, size: u64) -> usize {
    let left = size.saturating_sub(offset);
    usize::try_from(left).map_or(len, |left| len.min(left))
}

/// An open file: the node it refers to (kept even if the node is
/// force-withdrawn, so its I/O fails cleanly) and whether it may write.
#[derive(Clone)]
pub(crate) struct Handle {
    pub(crate) node: Arc<Node>,
    pub(crate) writable: bool,
}

#[derive(Default)]
struct State {
    by_name: BTreeMap<String, Arc<Node>>,
    by_ino: HashMap<u64, Arc<Node>>,
    /// Set while shutting down: no publishing and no opening.
    closed: bool,
}

pub(crate) struct Registry {
    state: RwLock<State>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_ino: AtomicU64,
    next_fh: AtomicU64,
}

impl Registry {
    pub(crate) fn new() -> Registry {
        Registry {
            state: RwLock::default(),
            handles: Mutex::default(),
            next_ino: AtomicU64::new(ROOT_INO + 1),
            next_fh: AtomicU64::new(1),
        }
    }

    // ---- admin side -------------------------------------------------------

    pub(crate) fn publish(
        &self,
        name: &str,
        image: Arc<dyn BlockImage>,
    ) -> Result<(), FrontendError> {
        validate_name(name)?;
        let mut state = self.write_state();
        if state.closed {
            return Err(FrontendError::ShutDown);
        }
        if state.by_name.contains_key(name) {
            return Err(FrontendError::AlreadyPublished(name.to_string()));
        }
        let node = Arc::new(Node {
            name: name.to_string(),
            ino: self.next_ino.fetch_add(1, Ordering::SeqCst),
            size: image.size(),
            read_only: image.read_only(),
            published_at: SystemTime::now(),
            image,
            open_handles: AtomicUsize::new(0),
            live: RwLock::new(true),
        });
        state.by_ino.insert(node.ino, node.clone());
        state.by_name.insert(node.name.clone(), node);
        Ok(())
    }

    /// Withdraws `name`; unless `force`, only while nothing has it open.
    pub(crate) fn withdraw(&self, name: &str, force: bool) -> Result<(), FrontendError> {
        let node = {
            let mut state = self.write_state();
            let node = state
                .by_name
                .get(name)
                .ok_or_else(|| FrontendError::NotPublished(name.to_string()))?;
            if !force && node.open_handles() > 0 {
                return Err(busy(node));
            }
            let node = state.by_name.remove(name).expect("looked up above");
            state.by_ino.remove(&node.ino);
            node
        };
        node.cut_off();
        Ok(())
    }

    pub(crate) fn names(&self) -> Vec<String> {
        self.read_state().by_name.keys().cloned().collect()
    }

    /// First step of a graceful shutdown: refuses with `Busy` while any
    /// image is open, else stops publishing and opening until
    /// [`reopen`](Self::reopen) or [`clear`](Self::clear).
    pub(crate) fn close_if_idle(&self) -> Result<(), FrontendError> {
        let mut state = self.write_state();
        if let Some(node) = state.by_name.values().find(|n| n.open_handles() > 0) {
            return Err(busy(node));
        }
        state.closed = true;
        Ok(())
    }

    /// Undoes [`close_if_idle`](Self::close_if_idle) when the shutdown
    /// could not be completed.
    pub(crate) fn reopen(&self) {
        self.write_state().closed = false;
    }

    /// Closes for good and withdraws everything, open or not.
    pub(crate) fn clear(&self) {
        let nodes = {
            let mut state = self.write_state();
            state.closed = true;
            state.by_ino.clear();
            std::mem::take(&mut state.by_name)
        };
        for node in nodes.values() {
            node.cut_off();
        }
    }

    // ---- FUSE side --------------------------------------------------------

    pub(crate) fn lookup(&self, name: &OsStr) -> Option<Arc<Node>> {
        let name = name.to_str()?;
        self.read_state().by_name.get(name).cloned()
    }

    pub(crate) fn node(&self, ino: u64) -> Option<Arc<Node>> {
        self.read_state().by_ino.get(&ino).cloned()
    }

    /// Published nodes in name order.
    pub(crate) fn list(&self) -> Vec<Arc<Node>> {
        self.read_state().by_name.values().cloned().collect()
    }

    /// Opens inode `ino`; returns the file handle number. Opening for
    /// writing is refused with `EROFS` on read-only images.
    pub(crate) fn open(&self, ino: u64, writable: bool) -> Result<u64, Errno> {
        // Held across the count update so that a concurrent withdraw either
        // sees this handle or has already removed the node.
        let state = self.read_state();
        if state.closed {
            return Err(Errno::ENOENT);
        }
        let node = state.by_ino.get(&ino).ok_or(Errno::ENOENT)?;
        if writable && node.read_only {
            return Err(Errno::EROFS);
        }
        node.open_handles.fetch_add(1, Ordering::SeqCst);
        let fh = self.next_fh.fetch_add(1, Ordering::SeqCst);
        let handle = Handle {
            node: node.clone(),
            writable,
        };
        self.lock_handles().insert(fh, handle);
        Ok(fh)
    }

    pub(crate) fn handle(&self, fh: u64) -> Option<Handle> {
        self.lock_handles().get(&fh).cloned()
    }

    pub(crate) fn release(&self, fh: u64) {
        if let Some(handle) = self.lock_handles().remove(&fh) {
            handle.node.open_handles.fetch_sub(1, Ordering::SeqCst);
        }
    }

    // A panic on a request thread must not take the whole front end down
    // with poisoned locks: the data behind them stays consistent because
    // every critical section is a few map operations.
    fn read_state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_handles(&self) -> MutexGuard<'_, HashMap<u64, Handle>> {
        self.handles.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn busy(node: &Node) -> FrontendError {
    let n = node.open_handles();
    FrontendError::Busy {
        what: format!("image {:?}", node.name),
        detail: format!(
            "{n} open handle{} (is a loop device still attached?)",
            if n == 1 { "" } else { "s" }
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::atomic::AtomicBool;

    use super::*;

    /// A small in-memory image that can be told to fail.
    struct Mem {
        data: Mutex<Vec<u8>>,
        read_only: bool,
        fail: AtomicBool,
        flushes: AtomicUsize,
    }

    impl Mem {
        fn new(size: usize, read_only: bool) -> Arc<Mem> {
            Arc::new(Mem {
                data: Mutex::new((0..size).map(|i| i as u8).collect()),
                read_only,
                fail: AtomicBool::new(false),
                flushes: AtomicUsize::new(0),
            })
        }

        fn check(&self) -> io::Result<()> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(io::Error::other("engine says no"));
            }
            Ok(())
        }
    }

    impl BlockImage for Mem {
        fn size(&self) -> u64 {
            self.data.lock().unwrap().len() as u64
        }
        fn read_only(&self) -> bool {
            self.read_only
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            self.check()?;
            let o = offset as usize;
            buf.copy_from_slice(&self.data.lock().unwrap()[o..o + buf.len()]);
            Ok(())
        }
        fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
            self.check()?;
            let o = offset as usize;
            self.data.lock().unwrap()[o..o + buf.len()].copy_from_slice(buf);
            Ok(())
        }
        fn flush(&self) -> io::Result<()> {
            self.check()?;
            self.flushes.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    /// Errno has no PartialEq; compare the numbers.
    fn code<T>(result: Result<T, Errno>) -> Result<T, i32> {
        result.map_err(Errno::code)
    }

    fn registry_with(name: &str, image: Arc<Mem>) -> (Registry, Arc<Node>) {
        let reg = Registry::new();
        reg.publish(name, image).unwrap();
        let node = reg.lookup(OsStr::new(name)).unwrap();
        (reg, node)
    }

    #[test]
    fn clamp_stops_at_the_end() {
        assert_eq!(clamp(0, 10, 100), 10);
        assert_eq!(clamp(95, 10, 100), 5);
        assert_eq!(clamp(100, 10, 100), 0);
        assert_eq!(clamp(u64::MAX, 10, 100), 0);
        assert_eq!(clamp(0, 10, u64::MAX), 10);
    }

    #[test]
    fn publish_refuses_bad_and_duplicate_names() {
        let reg = Registry::new();
        reg.publish("live", Mem::new(8, false)).unwrap();
        assert!(matches!(
            reg.publish("live", Mem::new(8, false)),
            Err(FrontendError::AlreadyPublished(_))
        ));
        assert!(matches!(
            reg.publish("../x", Mem::new(8, false)),
            Err(FrontendError::InvalidName { .. })
        ));
        assert_eq!(reg.names(), ["live"]);
    }

    #[test]
    fn republishing_gives_a_new_inode() {
        let (reg, first) = registry_with("live", Mem::new(8, false));
        reg.withdraw("live", false).unwrap();
        assert!(reg.node(first.ino).is_none());
        reg.publish("live", Mem::new(16, false)).unwrap();
        let second = reg.lookup(OsStr::new("live")).unwrap();
        assert_ne!(first.ino, second.ino);
        assert_ne!(second.ino, ROOT_INO);
        assert_eq!(second.size, 16);
    }

    #[test]
    fn reads_and_writes_are_clamped_at_the_end() {
        let image = Mem::new(10, false);
        let (_reg, node) = registry_with("live", image.clone());
        let mut buf = Vec::new();
        assert_eq!(code(node.read(6, 8, &mut buf)), Ok(4));
        assert_eq!(&buf[..4], &[6, 7, 8, 9]);
        assert_eq!(code(node.read(10, 8, &mut buf)), Ok(0));
        assert_eq!(code(node.write(8, &[0xaa; 4])), Ok(2));
        assert_eq!(&image.data.lock().unwrap()[8..], &[0xaa, 0xaa]);
        assert_eq!(code(node.write(10, &[1])), Err(libc::EFBIG));
        assert_eq!(code(node.write(10, &[])), Ok(0));
    }

    #[test]
    fn read_only_images_refuse_writing() {
        let image = Mem::new(10, true);
        let (reg, node) = registry_with("{ro}", image.clone());
        assert_eq!(code(reg.open(node.ino, true)), Err(libc::EROFS));
        let fh = reg.open(node.ino, false).unwrap();
        assert!(!reg.handle(fh).unwrap().writable);
        assert_eq!(code(node.write(0, &[1])), Err(libc::EROFS));
        assert_eq!(code(node.flush()), Ok(()));
        assert_eq!(image.flushes.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn engine_errors_become_eio() {
        let image = Mem::new(10, false);
        let (_reg, node) = registry_with("live", image.clone());
        image.fail.store(true, Ordering::SeqCst);
        assert_eq!(code(node.read(0, 4, &mut Vec::new())), Err(libc::EIO));
        assert_eq!(code(node.write(0, &[1])), Err(libc::EIO));
        assert_eq!(code(node.flush()), Err(libc::EIO));
    }

    #[test]
    fn withdraw_is_refused_while_open() {
        let (reg, node) = registry_with("live", Mem::new(10, false));
        let fh = reg.open(node.ino, true).unwrap();
        let err = reg.withdraw("live", false).unwrap_err();
        assert!(err.is_busy(), "{err}");
        assert!(err.to_string().contains("1 open handle "), "{err}");
        reg.release(fh);
        assert_eq!(node.open_handles(), 0);
        reg.withdraw("live", false).unwrap();
        assert!(reg.names().is_empty());
        assert!(matches!(
            reg.withdraw("live", false),
            Err(FrontendError::NotPublished(_))
        ));
    }

    #[test]
    fn force_withdraw_cuts_open_handles_off() {
        let image = Mem::new(10, false);
        let (reg, node) = registry_with("live", image.clone());
        let fh = reg.open(node.ino, true).unwrap();
        reg.withdraw("live", true).unwrap();
        let handle = reg.handle(fh).expect("handle outlives the withdraw");
        assert_eq!(code(handle.node.write(0, &[1])), Err(libc::EIO));
        assert_eq!(
            code(handle.node.read(0, 1, &mut Vec::new())),
            Err(libc::EIO)
        );
        assert_eq!(code(handle.node.flush()), Err(libc::EIO));
        assert_eq!(image.data.lock().unwrap()[0], 0, "no write got through");
        assert_eq!(code(reg.open(node.ino, false)), Err(libc::ENOENT));
        reg.release(fh);
        assert!(reg.handle(fh).is_none());
    }

    #[test]
    fn graceful_close_waits_for_idle_and_can_be_undone() {
        let (reg, node) = registry_with("live", Mem::new(10, false));
        let fh = reg.open(node.ino, false).unwrap();
        assert!(reg.close_if_idle().unwrap_err().is_busy());
        reg.publish("other", Mem::new(1, false)).unwrap();
        reg.release(fh);
        reg.close_if_idle().unwrap();
        assert_eq!(code(reg.open(node.ino, false)), Err(libc::ENOENT));
        assert!(matches!(
            reg.publish("x", Mem::new(1, false)),
            Err(FrontendError::ShutDown)
        ));
        reg.reopen();
        reg.open(node.ino, false).unwrap();
        reg.clear();
        assert!(reg.names().is_empty());
        assert_eq!(code(node.read(0, 1, &mut Vec::new())), Err(libc::EIO));
        assert!(matches!(
            reg.publish("x", Mem::new(1, false)),
            Err(FrontendError::ShutDown)
        ));
    }

    #[test]
    fn withdraw_waits_for_engine_calls_in_flight() {
        /// An image whose write blocks until told to go on.
        struct Slow {
            entered: std::sync::Barrier,
            go_on: std::sync::Barrier,
        }
        impl BlockImage for Slow {
            fn size(&self) -> u64 {
                10
            }
            fn read_only(&self) -> bool {
                false
            }
            fn read_at(&self, _: &mut [u8], _: u64) -> io::Result<()> {
                Ok(())
            }
            fn write_at(&self, _: &[u8], _: u64) -> io::Result<()> {
                self.entered.wait();
                self.go_on.wait();
                Ok(())
            }
            fn flush(&self) -> io::Result<()> {
                Ok(())
            }
        }
        let slow = Arc::new(Slow {
            entered: std::sync::Barrier::new(2),
            go_on: std::sync::Barrier::new(2),
        });
        let reg = Arc::new(Registry::new());
        reg.publish("live", slow.clone()).unwrap();
        let node = reg.lookup(OsStr::new("live")).unwrap();
        let writer = std::thread::spawn(move || node.write(0, &[1]));
        slow.entered.wait();
        let withdrawn = Arc::new(AtomicBool::new(false));
        let withdrawer = {
            let (reg, withdrawn) = (reg.clone(), withdrawn.clone());
            std::thread::spawn(move || {
                reg.withdraw("live", true).unwrap();
                withdrawn.store(true, Ordering::SeqCst);
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(!withdrawn.load(Ordering::SeqCst), "withdraw did not wait");
        slow.go_on.wait();
        assert_eq!(code(writer.join().unwrap()), Ok(1));
        withdrawer.join().unwrap();
        assert!(withdrawn.load(Ordering::SeqCst));
    }
}
