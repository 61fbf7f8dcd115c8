//! The volume server of the software provider, and the protocol vssd uses
//! to drive it.
//!
//! One `vss-volumed` process serves one volume: it runs the copy-on-write
//! engine (`vss-cow`) over the volume's device, publishes the live image and
//! every shadow's read-only image through the block front end
//! (`vss-cow-fuse`), attaches a loop device to the live image and mounts
//! the filesystem where the admin asked. Every write of that filesystem
//! therefore passes the engine. vssd drives it over a Unix socket
//! ([`protocol`], [`client`]): cuts during its hold, deletions, shadow
//! storage changes, reverts.

pub mod client;
pub mod config;
pub mod protocol;
pub mod server;

pub use config::{StorageConfig, VolumeConfig, DEFAULT_MAX_SHADOWS};
pub use server::{image_name, VolumeServer};
