//! The requestor (the `IVssBackupComponents` analogue on the client side):
//! what `vssbackup` and other backup programs use to make application-
//! consistent backups from shadow copies and restore them with the writers'
//! cooperation.
//!
//! - [`select`]: which components a backup takes (selectability, component
//!   sets, dependencies) and the Backup Components Document for them;
//! - [`shadows`]: the snapshot set and where each shadow is read;
//! - [`files`]: the file list, built from the shadows, with the writers'
//!   exclusions, alternate locations and mount points;
//! - [`archive`]: the backup's on-disk format (directory or `.tar.zst`);
//! - [`backup`], [`restore`], [`exec`]: the three requestor jobs.

pub mod archive;
pub mod backup;
pub mod exec;
pub mod files;
pub mod inspect;
pub mod progress;
pub mod restore;
pub mod select;
pub mod shadows;
