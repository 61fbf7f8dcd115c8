//! Who holds a database: the process owning its write lock (from
//! `/proc/locks`), and the processes having its files open (from
//! `/proc/PID/fd`). Both are best effort, for error messages: a process
//! we cannot see (another user's, without root) is simply not named.
//!
//! Nothing here opens a database file. SQLite's locks are POSIX record
//! locks, which the kernel drops for the whole process when *any* file
//! descriptor of the file is closed; opening and closing the database with
//! `std::fs::File` while a lock is held would silently release it. Only
//! `stat`, `readlink` and reads of `/proc` are used.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::config::DatabaseConfig;

/// SQLite's lock bytes in the database file (rollback journal mode):
/// PENDING, RESERVED, then the 510 SHARED bytes.
const PENDING_BYTE: u64 = 0x4000_0000;
const LOCK_BYTES_END: u64 = PENDING_BYTE + 2 + 510;
/// The WAL write lock: the first lock byte of the `-shm` file
/// (`WALINDEX_LOCK_OFFSET`).
const WAL_WRITE_LOCK_BYTE: u64 = 120;

/// A process, as messages show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    /// The command line (arguments separated by spaces, shortened), or the
    /// command name when the command line cannot be read.
    pub command: String,
}

impl std::fmt::Display for ProcessInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.command.is_empty() {
            write!(f, "pid {}", self.pid)
        } else {
            write!(f, "pid {}: {}", self.pid, self.command)
        }
    }
}

/// The command line of `pid`, at most 200 characters.
pub fn process_info(pid: u32) -> ProcessInfo {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut command = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        // Newlines of `sh -c` scripts would break the one-line message.
        .map(|a| String::from_utf8_lossy(a).replace(char::is_control, " "))
        .collect::<Vec<_>>()
        .join(" ");
    if command.is_empty() {
        command = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
    }
    if command.chars().count() > 200 {
        command = command.chars().take(197).collect::<String>() + "...";
    }
    ProcessInfo { pid, command }
}

/// One line of `/proc/locks`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LockLine {
    pub pid: u32,
    pub write: bool,
    pub major: u64,
    pub minor: u64,
    pub inode: u64,
    pub start: u64,
    /// Inclusive; `None` for "to the end of the file" (`EOF`).
    pub end: Option<u64>,
}

/// Parses `/proc/locks`; lines of waiters (`->`) and of lock kinds SQLite
/// does not use are skipped.
pub(crate) fn parse_locks(text: &str) -> Vec<LockLine> {
    text.lines()
        .filter(|l| !l.contains("->"))
        .filter_map(|l| {
            // 1: POSIX  ADVISORY  WRITE 1234 08:01:5678 1073741825 1073741825
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 8 || !matches!(f[1], "POSIX" | "OFDLCK") {
                return None;
            }
            let pid: i64 = f[4].parse().ok()?;
            let mut dev = f[5].split(':');
            let major = u64::from_str_radix(dev.next()?, 16).ok()?;
            let minor = u64::from_str_radix(dev.next()?, 16).ok()?;
            let inode = dev.next()?.parse().ok()?;
            Some(LockLine {
                pid: u32::try_from(pid).ok()?,
                write: f[3] == "WRITE",
                major,
                minor,
                inode,
                start: f[6].parse().ok()?,
                end: if f[7] == "EOF" {
                    None
                } else {
                    Some(f[7].parse().ok()?)
                },
            })
        })
        .collect()
}

impl LockLine {
    fn overlaps(&self, from: u64, to_exclusive: u64) -> bool {
        self.start < to_exclusive && self.end.is_none_or(|e| e >= from)
    }
}

/// Linux's encoding of `dev_t` (glibc's `major()` and `minor()`).
fn major_minor(dev: u64) -> (u64, u64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major, minor)
}

/// The process holding the database's write lock: a WRITE lock on the WAL
/// write-lock byte of `-shm` (WAL mode) or on the lock bytes of the database
/// file (rollback journal mode). `None` if it cannot be told.
pub fn write_lock_holder(db: &DatabaseConfig) -> Option<ProcessInfo> {
    let text = std::fs::read_to_string("/proc/locks").ok()?;
    let locks = parse_locks(&text);
    let targets = [
        (
            db.companion("-shm"),
            WAL_WRITE_LOCK_BYTE,
            WAL_WRITE_LOCK_BYTE + 1,
        ),
        (db.path.clone(), PENDING_BYTE, LOCK_BYTES_END),
    ];
    for (file, from, to) in targets {
        let Ok(meta) = std::fs::metadata(&file) else {
            continue;
        };
        let (major, minor) = major_minor(meta.dev());
        let candidates: Vec<&LockLine> = locks
            .iter()
            .filter(|l| l.write && l.inode == meta.ino() && l.overlaps(from, to))
            .collect();
        // btrfs reports a subvolume's own device number to stat but the
        // filesystem's in /proc/locks: when the numbers differ, the process
        // must have the file open to count.
        let found = candidates
            .iter()
            .find(|l| (l.major, l.minor) == (major, minor))
            .or_else(|| {
                candidates
                    .iter()
                    .find(|l| !open_files_of(l.pid, std::slice::from_ref(&file)).is_empty())
            });
        if let Some(l) = found {
            return Some(process_info(l.pid));
        }
    }
    None
}

/// The files among `paths` (canonical) that process `pid` has open.
fn open_files_of(pid: u32, paths: &[PathBuf]) -> Vec<PathBuf> {
    let wanted: Vec<PathBuf> = paths
        .iter()
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for fd in fds.flatten() {
        if let Ok(target) = std::fs::read_link(fd.path()) {
            if wanted.contains(&target) && !found.contains(&target) {
                found.push(target);
            }
        }
    }
    found
}

/// The processes other than this one that have the database, its `-wal`
/// or its `-journal` open, with the files each has open. Processes whose
/// descriptors cannot be read (other users', without root) are not seen.
pub fn processes_with_open(db_path: &Path) -> Vec<(ProcessInfo, Vec<PathBuf>)> {
    let mut files = vec![db_path.to_path_buf()];
    for suffix in ["-wal", "-journal"] {
        let mut s = db_path.as_os_str().to_owned();
        s.push(suffix);
        files.push(PathBuf::from(s));
    }
    let files: Vec<PathBuf> = files.into_iter().filter(|f| f.exists()).collect();
    if files.is_empty() {
        return Vec::new();
    }
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let open = open_files_of(pid, &files);
        if !open.is_empty() {
            out.push((process_info(pid), open));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_locks() {
        let text = "1: POSIX  ADVISORY  WRITE 4242 00:2e:1234 1073741825 1073741825\n\
                    2: POSIX  ADVISORY  READ 17 fd:01:99 128 128\n\
                    2: -> POSIX  ADVISORY  WRITE 18 fd:01:99 128 128\n\
                    3: FLOCK  ADVISORY  WRITE 5 00:15:7 0 EOF\n\
                    4: OFDLCK ADVISORY  WRITE -1 00:2e:1234 0 EOF\n";
        let l = parse_locks(text);
        assert_eq!(l.len(), 2, "{l:?}");
        assert_eq!(
            l[0],
            LockLine {
                pid: 4242,
                write: true,
                major: 0,
                minor: 0x2e,
                inode: 1234,
                start: PENDING_BYTE + 1,
                end: Some(PENDING_BYTE + 1),
            }
        );
        assert!(!l[1].write);
        assert_eq!((l[1].major, l[1].minor), (0xfd, 1));
        assert!(l[0].overlaps(PENDING_BYTE, LOCK_BYTES_END));
        assert!(!l[0].overlaps(0, PENDING_BYTE));
    }

    #[test]
    fn device_numbers_split_like_glibc() {
        assert_eq!(major_minor(0x0801), (8, 1));
        assert_eq!(major_minor((259 << 8) | 3), (259, 3));
        // Large minors spill into the upper bits.
        assert_eq!(
            major_minor(0x0010_0000 | (0xfd << 8) | 0x23),
            (0xfd, 0x100 | 0x23)
        );
    }

    #[test]
    fn this_process_is_described() {
        let p = process_info(std::process::id());
        assert!(!p.command.is_empty());
        assert!(p
            .to_string()
            .starts_with(&format!("pid {}: ", std::process::id())));
    }
}
