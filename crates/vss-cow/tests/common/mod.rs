//! What the engine's test binaries share.

use std::sync::Arc;

use vss_cow::{Backing, CowVolume, CreateOptions, StorageFiles, Tuning};

/// Options for a test volume's shadow storage: fixed ids, created at the
/// epoch, with `max_bytes` as its maximum size.
pub fn options(chunk_size: u32, max_bytes: Option<u64>) -> CreateOptions {
    CreateOptions {
        storage_id: 1,
        volume_id: 2,
        chunk_size,
        max_bytes,
        created_unix: 0,
    }
}

/// Tiny deterministic generator (xorshift): the tests' randomness need not
/// be good, only repeatable. Seed it with a non-zero value.
#[allow(dead_code)] // not every test binary draws numbers
pub struct Rng(pub u64);

#[allow(dead_code)]
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A number from the environment variable `name`, or `default`.
#[allow(dead_code)] // not every test binary is tuned this way
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Formats shadow storage for `origin` with [`options`].
#[allow(dead_code)] // not every test binary formats this way
pub fn create(
    origin: Arc<dyn Backing>,
    storage: Arc<dyn StorageFiles>,
    chunk_size: u32,
    max_bytes: Option<u64>,
    tuning: Tuning,
) -> CowVolume {
    CowVolume::create(
        origin,
        storage,
        options(chunk_size, max_bytes),
        tuning,
        None,
    )
    .expect("create shadow storage")
}
