//! Serves one image through the FUSE front end until stdin closes, for
//! trying it by hand and measuring it:
//!
//! ```sh
//! serve MOUNT_DIR SIZE_MIB [BACKING_FILE]
//! ```
//!
//! Publishes `live`, backed by `BACKING_FILE` (pread/pwrite, fdatasync on
//! flush) or by memory, prints its path, and at end of input prints what
//! reached the image and shuts down. Then, for example:
//!
//! ```sh
//! losetup --direct-io=on -f --show MOUNT_DIR/live
//! ```

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use vss_cow_fuse::{BlockFrontend, BlockImage, FuseFrontend};

enum Store {
    File(File),
    /// Zeroed on allocation, so untouched pages cost nothing.
    Memory(Mutex<Vec<u8>>),
}

struct Image {
    size: u64,
    store: Store,
    bytes_written: AtomicU64,
    writes: AtomicU64,
    largest_write: AtomicU64,
    flushes: AtomicU64,
}

impl BlockImage for Image {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        false
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match &self.store {
            Store::File(f) => f.read_exact_at(buf, offset),
            Store::Memory(mem) => {
                let at = offset as usize;
                buf.copy_from_slice(&mem.lock().unwrap()[at..at + buf.len()]);
                Ok(())
            }
        }
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let len = buf.len() as u64;
        self.bytes_written.fetch_add(len, Ordering::Relaxed);
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.largest_write.fetch_max(len, Ordering::Relaxed);
        match &self.store {
            Store::File(f) => f.write_all_at(buf, offset),
            Store::Memory(mem) => {
                let at = offset as usize;
                mem.lock().unwrap()[at..at + buf.len()].copy_from_slice(buf);
                Ok(())
            }
        }
    }

    fn flush(&self) -> io::Result<()> {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        match &self.store {
            Store::File(f) => f.sync_data(),
            Store::Memory(_) => Ok(()),
        }
    }
}

fn open_store(size: u64, backing: Option<&String>) -> io::Result<Store> {
    let Some(path) = backing else {
        return Ok(Store::Memory(Mutex::new(vec![0; size as usize])));
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    file.set_len(size)?;
    Ok(Store::File(file))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dir, size_mib, backing) = match args.as_slice() {
        [dir, size] => (dir, size, None),
        [dir, size, file] => (dir, size, Some(file)),
        _ => return Err("usage: serve MOUNT_DIR SIZE_MIB [BACKING_FILE]".into()),
    };
    let size = size_mib.parse::<u64>()? << 20;
    let image = Arc::new(Image {
        size,
        store: open_store(size, backing)?,
        bytes_written: AtomicU64::new(0),
        writes: AtomicU64::new(0),
        largest_write: AtomicU64::new(0),
        flushes: AtomicU64::new(0),
    });
    let frontend = FuseFrontend::mount(Path::new(dir))?;
    let path = frontend.publish("live", image.clone())?;
    println!("{}", path.display());
    for line in io::stdin().lock().lines() {
        line?;
    }
    println!(
        "bytes written {}, write calls {}, largest write {}, flushes {}",
        image.bytes_written.load(Ordering::Relaxed),
        image.writes.load(Ordering::Relaxed),
        image.largest_write.load(Ordering::Relaxed),
        image.flushes.load(Ordering::Relaxed)
    );
    frontend.shutdown()?;
    Ok(())
}
