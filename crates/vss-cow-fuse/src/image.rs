//! What a front end serves: a fixed-size image with positioned I/O.

use std::io;

/// A volume image as the copy-on-write engine offers it: the live image
/// (read-write) or a shadow copy (read-only).
///
/// Front ends call these methods from several threads at once; an
/// implementation must be safe for concurrent calls on disjoint and
/// overlapping ranges (overlapping writes may land in any order, as on a
/// disk).
pub trait BlockImage: Send + Sync {
    /// Size in bytes. Must not change while the image is published.
    fn size(&self) -> u64;

    /// `true` for shadow copies: the front end refuses writes with `EROFS`
    /// and never calls [`write_at`](Self::write_at).
    fn read_only(&self) -> bool;

    /// Fills all of `buf` from `offset`. The front end never asks for bytes
    /// past [`size`](Self::size).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// Writes all of `buf` at `offset`. The front end never writes past
    /// [`size`](Self::size). A write acknowledged here need not be durable
    /// until [`flush`](Self::flush) returns.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;

    /// [`write_at`](Self::write_at) that may accept the write before it
    /// returns: `accepted`, called at most once, means the write is visible
    /// to reads and durable by the next flush, and the front end answers it
    /// then, while this call finishes work that follows the write (a
    /// copy-on-write engine preserving the old contents). Not called: the
    /// result is the write's. Called: an error returned concerns that later
    /// work, and the write stays accepted.
    fn write_at_then(
        &self,
        buf: &[u8],
        offset: u64,
        _accepted: &mut dyn FnMut(),
    ) -> io::Result<()> {
        self.write_at(buf, offset)
    }

    /// The durability point: returns only when every write acknowledged so
    /// far is durable. Called when the kernel flushes or fsyncs the image
    /// (a loop device forwards the mounted filesystem's cache flushes here).
    fn flush(&self) -> io::Result<()>;
}
