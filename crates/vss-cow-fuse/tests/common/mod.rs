//! Shared by the end-to-end tests: an in-memory image that counts what
//! reaches it, and a loop device that detaches itself.

#![allow(dead_code)] // each test file uses a different part

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::Duration;

use vss_cow_fuse::BlockImage;
use vss_testkit::run;

pub const MIB: u64 = 1 << 20;
const CHUNK: u64 = 64 * 1024;

/// A sparse in-memory image (64 KiB chunks, allocated on first write) that
/// counts the engine calls made on it.
#[derive(Default)]
pub struct MemImage {
    size: u64,
    read_only: bool,
    chunks: Mutex<HashMap<u64, Box<[u8]>>>,
    pub bytes_written: AtomicU64,
    pub writes: AtomicU64,
    pub largest_write: AtomicU64,
    pub reads: AtomicU64,
    pub flushes: AtomicU64,
    /// Threads that served writes.
    pub writer_threads: Mutex<HashSet<ThreadId>>,
    in_flight: AtomicU64,
    /// Most `write_at` calls running at the same time.
    pub most_in_flight: AtomicU64,
}

impl MemImage {
    pub fn new(size: u64) -> Arc<MemImage> {
        Arc::new(MemImage {
            size,
            ..MemImage::default()
        })
    }

    /// A read-only image holding `data`.
    pub fn read_only_from(data: &[u8]) -> Arc<MemImage> {
        let image = MemImage {
            size: data.len() as u64,
            ..MemImage::default()
        };
        image.store(data, 0);
        Arc::new(MemImage {
            read_only: true,
            ..image
        })
    }

    pub fn stat(&self, counter: &AtomicU64) -> u64 {
        counter.load(Ordering::SeqCst)
    }

    fn store(&self, buf: &[u8], offset: u64) {
        let mut chunks = self.chunks.lock().unwrap();
        for_chunks(buf.len(), offset, |chunk, at, range| {
            let data = chunks
                .entry(chunk)
                .or_insert_with(|| vec![0; CHUNK as usize].into_boxed_slice());
            data[at..at + range.len()].copy_from_slice(&buf[range]);
        });
    }
}

/// Calls `f(chunk index, offset in chunk, range in buffer)` for each chunk
/// that `len` bytes at `offset` touch.
fn for_chunks(len: usize, offset: u64, mut f: impl FnMut(u64, usize, std::ops::Range<usize>)) {
    let mut done = 0;
    while done < len {
        let pos = offset + done as u64;
        let at = (pos % CHUNK) as usize;
        let n = (CHUNK as usize - at).min(len - done);
        f(pos / CHUNK, at, done..done + n);
        done += n;
    }
}

impl BlockImage for MemImage {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        assert!(offset + buf.len() as u64 <= self.size, "read past the end");
        self.reads.fetch_add(1, Ordering::SeqCst);
        let chunks = self.chunks.lock().unwrap();
        for_chunks(buf.len(), offset, |chunk, at, range| {
            match chunks.get(&chunk) {
                Some(data) => buf[range.clone()].copy_from_slice(&data[at..at + range.len()]),
                None => buf[range].fill(0),
            }
        });
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        assert!(!self.read_only, "write_at on a read-only image");
        assert!(offset + buf.len() as u64 <= self.size, "write past the end");
        self.writer_threads
            .lock()
            .unwrap()
            .insert(std::thread::current().id());
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        // Give parallel requests a chance to overlap, as a real engine
        // waiting on storage would.
        std::thread::sleep(Duration::from_micros(200));
        self.store(buf, offset);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.bytes_written
            .fetch_add(buf.len() as u64, Ordering::SeqCst);
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.largest_write
            .fetch_max(buf.len() as u64, Ordering::SeqCst);
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// A loop device over `file`, detached when dropped.
pub struct Loop {
    pub device: String,
    attached: bool,
}

impl Loop {
    /// `losetup --direct-io=on [extra…] -f --show file`.
    pub fn attach(file: &Path, extra: &[&str]) -> Loop {
        let file = file.to_str().unwrap();
        let mut args = vec!["--direct-io=on"];
        args.extend_from_slice(extra);
        args.extend(["--find", "--show", file]);
        let device = run("losetup", &args).trim().to_string();
        assert!(
            device.starts_with("/dev/loop"),
            "losetup printed {device:?}"
        );
        Loop {
            device,
            attached: true,
        }
    }

    /// `/sys/block/loopN/loop/<name>`, trimmed.
    pub fn sysfs(&self, name: &str) -> String {
        let dev = self.device.trim_start_matches("/dev/");
        std::fs::read_to_string(format!("/sys/block/{dev}/loop/{name}"))
            .unwrap()
            .trim()
            .to_string()
    }

    pub fn detach(mut self) {
        run("losetup", &["--detach", &self.device]);
        self.attached = false;
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        if self.attached {
            let _ = std::process::Command::new("losetup")
                .args(["--detach", &self.device])
                .status();
        }
    }
}

/// A scratch directory with `mnt` (for the front end) and `fs` (for the
/// filesystem on the loop device) below it.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::Builder::new()
                .prefix("vss-cow-fuse-")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn images(&self) -> PathBuf {
        self.dir.path().join("images")
    }

    /// `fs`, created.
    pub fn fs_mount(&self) -> PathBuf {
        let p = self.dir.path().join("fs");
        std::fs::create_dir_all(&p).unwrap();
        p
    }
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Whether something is mounted at `dir` (an absolute path without
/// characters that mountinfo escapes).
pub fn is_mounted(dir: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(path_str(dir)))
}

/// [`vss_testkit::privileged`], and also `/dev/fuse` (the fuse kernel
/// module), with the same rule: fail loudly, or skip saying so under
/// `VSS_ALLOW_SKIP=1`.
pub fn fuse_ready(test: &str) -> bool {
    if !vss_testkit::privileged(test) {
        return false;
    }
    if Path::new("/dev/fuse").exists() {
        return true;
    }
    let reason = "/dev/fuse is missing (modprobe fuse)";
    if std::env::var(vss_testkit::ALLOW_SKIP_ENV).as_deref() == Ok("1") {
        let _ = writeln!(io::stderr(), "SKIPPED: {test}: {reason}");
        return false;
    }
    panic!(
        "{test} cannot run: {reason}; set {}=1 to skip",
        vss_testkit::ALLOW_SKIP_ENV
    );
}
