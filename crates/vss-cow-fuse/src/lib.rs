//! Block front end of the copy-on-write software provider.
//!
//! The copy-on-write engine (crate `vss-cow`) keeps a volume's live image
//! and its shadow copies; the kernel must see them as block devices so that
//! the volume's filesystem can be mounted on the live image, with every one
//! of its writes passing through the engine, and the shadows mounted
//! read-only for backups. This crate is the glue: a [`BlockFrontend`] takes a
//! [`BlockImage`] (what the engine offers) and *publishes* it as something a
//! block device can be made of.
//!
//! The one front end today, [`FuseFrontend`], serves the images as regular
//! files in a small FUSE filesystem. The kernel loop driver is attached to
//! such a file (`losetup --direct-io=on`), and the filesystem on the loop
//! device is mounted. The trait exists so that a ublk front end can follow
//! without touching the engine.
//!
//! Why the FUSE front end looks the way it does (loop over a FUSE file with
//! buffered I/O, small requests and one serving thread measured many times
//! slower than loop over a plain file):
//!
//! - the files accept `O_DIRECT` opens, so loop runs in direct-I/O mode, and
//!   are opened with `FOPEN_DIRECT_IO`, so no page cache sits between the
//!   volume's filesystem and the engine for any opener;
//! - up to 1 MiB per write request (`max_write`), with asynchronous direct
//!   I/O, so loop keeps many large requests in flight;
//! - several threads read `/dev/fuse` (fuser's multi-threaded session loop
//!   with cloned device descriptors), so engine calls run in parallel;
//! - nothing is cached by name (entry TTL 0) and every publication gets a
//!   fresh inode, so a withdrawn and republished image never shows stale
//!   sizes.
//!
//! Everything is root-only: the mount is not `allow_other`, the directory is
//! 0700, writable images 0600 and read-only images 0400, all owned by root.

// System calls without a safe wrapper are made through command-line tools
// (umount(8)); only vss-sys may use unsafe code.
#![forbid(unsafe_code)]

mod fs;
mod fuse_frontend;
mod mount;
mod registry;

mod frontend;
mod image;

pub use frontend::{validate_name, BlockFrontend, FrontendError, MAX_NAME_LEN};
pub use fuse_frontend::{FuseFrontend, FuseOptions};
pub use image::BlockImage;
