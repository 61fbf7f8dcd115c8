//! The mount table (/proc/self/mountinfo) and the volumes it shows.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use vss_types::provider::volume_guid;
use vss_types::Volume;

use crate::SHADOWS_DIR_NAME;

/// One line of /proc/self/mountinfo (see proc(5)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_id: u32,
    pub parent_id: u32,
    /// `st_dev` of files on this filesystem.
    pub major_minor: (u32, u32),
    /// The directory of the filesystem mounted here (`/` unless this is a
    /// bind mount or, on btrfs, a subvolume mount such as `/@home`).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    /// Per-mount options (`rw,nosuid,relatime`).
    pub options: String,
    /// `shared:N`, `master:N`… (propagation).
    pub optional_fields: Vec<String>,
    pub fs_type: String,
    /// The mounted device, e.g. `/dev/loop3`, or a word such as `proc`.
    pub source: String,
    /// Per-superblock options (`rw,subvolid=5,subvol=/`).
    pub super_options: String,
}

impl MountEntry {
    /// Mounted read-only (this mount or the whole filesystem).
    pub fn read_only(&self) -> bool {
        has_opt(&self.options, "ro") || has_opt(&self.super_options, "ro")
    }

    /// Backed by a block device (the only mounts that can be volumes).
    pub fn is_block_device(&self) -> bool {
        self.source.starts_with("/dev/") && !PSEUDO_FS.contains(&self.fs_type.as_str())
    }

    /// A mount of something inside a shadow directory: an exposed shadow.
    pub fn is_shadow_exposure(&self) -> bool {
        self.root
            .components()
            .any(|c| c.as_os_str() == OsStr::new(SHADOWS_DIR_NAME))
    }
}

fn has_opt(opts: &str, name: &str) -> bool {
    opts.split(',').any(|o| o == name)
}

/// Filesystem types that never are volumes, even if their source looks like
/// a device.
const PSEUDO_FS: &[&str] = &[
    "proc",
    "sysfs",
    "tmpfs",
    "devtmpfs",
    "devpts",
    "overlay",
    "cgroup",
    "cgroup2",
    "mqueue",
    "debugfs",
    "tracefs",
    "securityfs",
    "pstore",
    "bpf",
    "configfs",
    "fusectl",
    "hugetlbfs",
    "autofs",
    "binfmt_misc",
    "ramfs",
    "nsfs",
    "efivarfs",
    "rpc_pipefs",
    "nfsd",
    "fuse",
];

/// The mount table of this process's mount namespace.
pub fn mountinfo() -> io::Result<Vec<MountEntry>> {
    let text = std::fs::read("/proc/self/mountinfo")?;
    parse_mountinfo(&text)
}

/// Parses the text of /proc/PID/mountinfo. A line that does not parse is an
/// error (`InvalidData`) naming it: a mount table read wrong would make the
/// service snapshot the wrong filesystem.
pub fn parse_mountinfo(text: &[u8]) -> io::Result<Vec<MountEntry>> {
    text.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            parse_line(l).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unparsable mountinfo line: {}", String::from_utf8_lossy(l)),
                )
            })
        })
        .collect()
}

/// `36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
fn parse_line(line: &[u8]) -> Option<MountEntry> {
    let mut fields = line.split(|b| *b == b' ');
    let mount_id = num(fields.next()?)?;
    let parent_id = num(fields.next()?)?;
    let mm = fields.next()?;
    let colon = mm.iter().position(|b| *b == b':')?;
    let major_minor = (num(&mm[..colon])?, num(&mm[colon + 1..])?);
    let root = path(fields.next()?);
    let mount_point = path(fields.next()?);
    let options = text(fields.next()?);
    let mut optional_fields = Vec::new();
    loop {
        let f = fields.next()?;
        if f == b"-" {
            break;
        }
        optional_fields.push(text(f));
    }
    let fs_type = text(fields.next()?);
    let source = text(fields.next()?);
    // Missing on some old kernels' odd mounts; an empty string then.
    let super_options = fields.next().map(text).unwrap_or_default();
    Some(MountEntry {
        mount_id,
        parent_id,
        major_minor,
        root,
        mount_point,
        options,
        optional_fields,
        fs_type,
        source,
        super_options,
    })
}

fn num(b: &[u8]) -> Option<u32> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn path(b: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(&unescape(b)))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(&unescape(b)).into_owned()
}

/// The kernel writes space, tab, newline and backslash in paths as `\040`,
/// `\011`, `\012` and `\134` (three octal digits).
pub fn unescape(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let d = &b[i + 1..i + 4];
            if d.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = u32::from(d[0] - b'0') * 64
                    + u32::from(d[1] - b'0') * 8
                    + u32::from(d[2] - b'0');
                if let Ok(byte) = u8::try_from(v) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The mount `path` lies on: the longest mount point containing it, and of
/// several mounts stacked on that mount point the top one. `path` must be
/// canonical (absolute, no symlinks), as [`volume_of`] makes it.
pub fn mount_containing<'a>(entries: &'a [MountEntry], path: &Path) -> Option<&'a MountEntry> {
    let best_len = entries
        .iter()
        .filter(|m| path.starts_with(&m.mount_point))
        .map(|m| m.mount_point.components().count())
        .max()?;
    let stack: Vec<&MountEntry> = entries
        .iter()
        .filter(|m| {
            path.starts_with(&m.mount_point) && m.mount_point.components().count() == best_len
        })
        .collect();
    // The top of the stack is the mount no other one is mounted on.
    stack
        .iter()
        .copied()
        .find(|m| !stack.iter().any(|o| o.parent_id == m.mount_id))
        .or_else(|| stack.last().copied())
}

/// The volume holding `path`: its mount, filesystem, UUID and volume GUID.
pub fn volume_of(path: &Path) -> io::Result<Volume> {
    let canonical = std::fs::canonicalize(path)?;
    let entries = mountinfo()?;
    let m = mount_containing(&entries, &canonical).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no mount contains {}", canonical.display()),
        )
    })?;
    Ok(volume_from_entry(m))
}

/// The [`Volume`] a mount is (reads the filesystem UUID).
pub fn volume_from_entry(m: &MountEntry) -> Volume {
    let fs_uuid = crate::fs_uuid(&m.mount_point, &m.fs_type, &m.source);
    let volume_guid = volume_guid(fs_uuid.as_deref().unwrap_or(&m.source));
    Volume {
        mount_point: m.mount_point.to_string_lossy().into_owned(),
        device: m.source.clone(),
        fs_type: m.fs_type.clone(),
        fs_uuid,
        subvolume: (m.fs_type == "btrfs").then(|| m.root.to_string_lossy().into_owned()),
        read_only: m.read_only(),
        volume_guid,
    }
}

/// The block-device-backed filesystems mounted in this namespace that could
/// be volumes, in mount-table order. Left out: pseudo and network
/// filesystems, mounts hidden under another mount on the same mount point,
/// exposed shadows, and bind mounts of a directory or file (its root is not
/// `/`; on btrfs a subvolume mount's root is the subvolume and is kept).
pub fn list_volumes() -> io::Result<Vec<Volume>> {
    let entries = mountinfo()?;
    Ok(candidate_volumes(&entries)
        .into_iter()
        .map(volume_from_entry)
        .collect())
}

/// The mounts [`list_volumes`] turns into volumes.
pub fn candidate_volumes(entries: &[MountEntry]) -> Vec<&MountEntry> {
    entries
        .iter()
        .filter(|m| m.is_block_device() && !m.is_shadow_exposure())
        .filter(|m| {
            !entries
                .iter()
                .any(|o| o.parent_id == m.mount_id && o.mount_point == m.mount_point)
        })
        .filter(|m| {
            m.root == Path::new("/")
                || (m.fs_type == "btrfs"
                    && crate::btrfs::is_subvolume(&m.mount_point).unwrap_or(false))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
36 27 0:40 / /mnt/my\\040disk rw,relatime shared:5 master:2 - btrfs /dev/loop3 rw,space_cache=v2,subvolid=5,subvol=/
37 27 0:40 /@home /home rw,relatime - btrfs /dev/loop3 rw,subvolid=256,subvol=/@home
38 36 0:40 /.vss-shadows/{x} /mnt/snap ro,nosuid,nodev - btrfs /dev/loop3 rw
39 27 254:0 /etc/hostname /etc/hostname rw - ext4 /dev/vda rw
40 27 7:1 / /srv ro,relatime - xfs /dev/loop1 ro,attr2
41 40 0:50 / /srv rw - ext4 /dev/loop2 rw
42 27 0:51 / /run rw - tmpfs tmpfs rw
";

    #[test]
    fn parses_fields_and_escapes() {
        let e = parse_mountinfo(SAMPLE.as_bytes()).unwrap();
        assert_eq!(e.len(), 9);
        let d = &e[2];
        assert_eq!(d.mount_id, 36);
        assert_eq!(d.parent_id, 27);
        assert_eq!(d.major_minor, (0, 40));
        assert_eq!(d.mount_point, Path::new("/mnt/my disk"));
        assert_eq!(d.optional_fields, vec!["shared:5", "master:2"]);
        assert_eq!(d.fs_type, "btrfs");
        assert_eq!(d.source, "/dev/loop3");
        assert_eq!(d.super_options, "rw,space_cache=v2,subvolid=5,subvol=/");
        assert!(!d.read_only());
        assert!(e[6].read_only());
        assert_eq!(e[3].root, Path::new("/@home"));
        assert!(e[4].is_shadow_exposure());
        assert!(!e[0].is_block_device());
        assert!(!e[8].is_block_device());
    }

    #[test]
    fn unescape_octal() {
        assert_eq!(unescape(br"a\040b\011c\012d\134e"), b"a b\tc\nd\\e");
        // Not an escape: left as is.
        assert_eq!(unescape(br"a\09b\"), br"a\09b\");
        assert_eq!(unescape(br"\04"), br"\04");
    }

    #[test]
    fn bad_line_is_invalid_data() {
        let e = parse_mountinfo(b"22 27 0:21 / /proc rw,relatime proc proc rw\n").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(parse_mountinfo(b"x 27 0:21 / /p rw - proc proc rw").is_err());
    }

    #[test]
    fn containing_mount_is_longest_then_topmost() {
        let e = parse_mountinfo(SAMPLE.as_bytes()).unwrap();
        let at = |p: &str| mount_containing(&e, Path::new(p)).unwrap().mount_id;
        assert_eq!(at("/"), 27);
        assert_eq!(at("/mnt/my disk/a/b"), 36);
        assert_eq!(at("/mnt/my diskette"), 27);
        assert_eq!(at("/home/u"), 37);
        // /srv has xfs with ext4 mounted over it: the ext4 one is visible.
        assert_eq!(at("/srv/x"), 41);
    }

    #[test]
    fn candidates_skip_pseudo_binds_shadows_and_hidden() {
        let e = parse_mountinfo(SAMPLE.as_bytes()).unwrap();
        let ids: Vec<u32> = candidate_volumes(&e).iter().map(|m| m.mount_id).collect();
        // 37 (/home, root /@home) is kept only if /home is a btrfs
        // subvolume on this machine, which it is not.
        assert_eq!(ids, vec![27, 36, 41]);
    }

    #[test]
    fn real_mountinfo_parses() {
        let e = mountinfo().unwrap();
        assert!(e.iter().any(|m| m.mount_point == Path::new("/")));
        let v = volume_of(Path::new("/proc/self")).unwrap();
        assert_eq!(v.fs_type, "proc");
        assert_eq!(v.mount_point, "/proc");
        assert_eq!(v.subvolume, None);
        assert_eq!(v.volume_guid, volume_guid("proc"));
    }
}
