//! What the engine's test binaries share.

use vss_cow::CreateOptions;

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
