//! The file list of a backup, built from the shadows (never from the live
//! volumes): each component's file sets expanded in the shadow of their
//! volume, the writers' exclusions applied to everything, alternate
//! locations read from and recorded under the normal path, mount points
//! inside a volume not entered.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use vss_types::documents::{ExcludeFiles, WmFileDesc};

/// Live mount point of each volume in the set, and where its shadow can
/// be read.
#[derive(Clone, Debug, Default)]
pub struct ShadowMap {
    /// (live mount point, shadow root), longest mount point first.
    roots: Vec<(PathBuf, PathBuf)>,
    /// Every mount point of the system: a directory that is one is another
    /// volume (or a bind mount) and is not entered.
    mount_points: BTreeSet<PathBuf>,
}

impl ShadowMap {
    pub fn new(roots: Vec<(PathBuf, PathBuf)>, mount_points: BTreeSet<PathBuf>) -> Self {
        let mut roots = roots;
        roots.sort_by_key(|(live, _)| std::cmp::Reverse(live.as_os_str().len()));
        ShadowMap {
            roots,
            mount_points,
        }
    }

    /// The volume (live mount point) holding `live`, and the path of
    /// `live` in that volume's shadow.
    pub fn to_shadow(&self, live: &Path) -> Option<(&Path, PathBuf)> {
        self.roots.iter().find_map(|(mount, shadow)| {
            let rel = live.strip_prefix(mount).ok()?;
            Some((mount.as_path(), shadow.join(rel)))
        })
    }

    /// Whether `live` is the mount point of another filesystem than the
    /// volume `volume` (so its shadow shows only the directory beneath).
    fn is_foreign_mount(&self, live: &Path, volume: &Path) -> bool {
        live != volume && self.mount_points.contains(live)
    }
}

/// Every mount point of this system, from /proc/self/mountinfo.
pub fn system_mount_points() -> BTreeSet<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A Windows-style filespec against a file name: `*` any run, `?` one
/// character, `*.*` everything (as on Windows, also names without a dot).
/// Case-sensitive, as Linux names are.
pub fn filespec_matches(spec: &str, name: &str) -> bool {
    if spec == "*.*" || spec == "*" {
        return true;
    }
    let p: Vec<char> = spec.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative wildcard match with backtracking to the last star.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Lexically normalised absolute path (no `.`, `..`, doubled slashes).
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// The writers' exclusions, applied to every file of the backup.
#[derive(Clone, Debug, Default)]
pub struct Exclusions {
    rules: Vec<ExcludeFiles>,
}

impl Exclusions {
    pub fn new(rules: impl IntoIterator<Item = ExcludeFiles>) -> Self {
        Exclusions {
            rules: rules
                .into_iter()
                .map(|mut r| {
                    r.path = normalize(Path::new(&r.path)).to_string_lossy().into_owned();
                    r
                })
                .collect(),
        }
    }

    /// Whether the file at live path `live` is excluded.
    pub fn excludes(&self, live: &Path) -> bool {
        let (Some(dir), Some(name)) = (live.parent(), live.file_name()) else {
            return false;
        };
        let name = name.to_string_lossy();
        self.rules.iter().any(|r| {
            let rp = Path::new(&r.path);
            let dir_ok = if r.recursive {
                dir.starts_with(rp)
            } else {
                dir == rp
            };
            dir_ok && filespec_matches(&r.filespec, &name)
        })
    }

    /// Whether a whole directory is excluded (a recursive `*` rule at or
    /// above it), so the walk need not enter it.
    fn excludes_tree(&self, live_dir: &Path) -> bool {
        self.rules.iter().any(|r| {
            r.recursive
                && (r.filespec == "*" || r.filespec == "*.*")
                && live_dir.starts_with(Path::new(&r.path))
        })
    }
}

/// One entry to copy: read from `source` (in a shadow), recorded under
/// `live`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PlannedEntry {
    pub live: PathBuf,
    pub source: PathBuf,
    pub is_dir: bool,
}

/// A file set that could not be listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListProblem {
    pub path: String,
    pub reason: String,
}

/// Collected entries of one component or include path.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub entries: BTreeSet<PlannedEntry>,
    pub problems: Vec<ListProblem>,
    /// Directories not entered because another filesystem is mounted
    /// there (reported, not an error).
    pub mount_points_skipped: BTreeSet<PathBuf>,
}

impl Plan {
    /// Expands a component's file set in the shadows.
    pub fn add_file_set(&mut self, desc: &WmFileDesc, map: &ShadowMap, excl: &Exclusions) {
        let recorded_root = normalize(Path::new(&desc.path));
        // Files with an alternate location are read from there and
        // recorded under their normal path.
        let read_root = desc
            .alternate_location
            .as_deref()
            .map(|a| normalize(Path::new(a)))
            .unwrap_or_else(|| recorded_root.clone());
        let Some((volume, shadow_root)) = map.to_shadow(&read_root) else {
            self.problems.push(ListProblem {
                path: read_root.display().to_string(),
                reason: "no volume of the shadow copy set holds this path".into(),
            });
            return;
        };
        let volume = volume.to_path_buf();
        let meta = match std::fs::symlink_metadata(&shadow_root) {
            Ok(m) => m,
            // A file set whose directory does not exist holds no files.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                self.problems.push(ListProblem {
                    path: recorded_root.display().to_string(),
                    reason: e.to_string(),
                });
                return;
            }
        };
        if !meta.is_dir() {
            return;
        }
        let walk = Walk {
            map,
            excl,
            volume: &volume,
            dev: meta.dev(),
            spec: Some(&desc.filespec),
            recursive: desc.recursive,
            read_root: &read_root,
            recorded_root: &recorded_root,
        };
        walk.dir(self, &shadow_root, &read_root);
    }

    /// Adds a user's `--include` path: a file, or a directory with
    /// everything beneath it. Missing paths are problems here.
    pub fn add_include(&mut self, live: &Path, map: &ShadowMap, excl: &Exclusions) {
        let live = normalize(live);
        let Some((volume, shadow)) = map.to_shadow(&live) else {
            self.problems.push(ListProblem {
                path: live.display().to_string(),
                reason: "no volume of the shadow copy set holds this path".into(),
            });
            return;
        };
        let volume = volume.to_path_buf();
        let meta = match std::fs::symlink_metadata(&shadow) {
            Ok(m) => m,
            Err(e) => {
                self.problems.push(ListProblem {
                    path: live.display().to_string(),
                    reason: format!("{e} (in the shadow copy)"),
                });
                return;
            }
        };
        if !meta.is_dir() {
            if !excl.excludes(&live) {
                self.entries.insert(PlannedEntry {
                    live,
                    source: shadow,
                    is_dir: false,
                });
            }
            return;
        }
        let walk = Walk {
            map,
            excl,
            volume: &volume,
            dev: meta.dev(),
            spec: None,
            recursive: true,
            read_root: &live,
            recorded_root: &live,
        };
        walk.dir(self, &shadow, &live);
    }
}

struct Walk<'a> {
    map: &'a ShadowMap,
    excl: &'a Exclusions,
    volume: &'a Path,
    dev: u64,
    /// None: every entry (include paths).
    spec: Option<&'a str>,
    recursive: bool,
    read_root: &'a Path,
    recorded_root: &'a Path,
}

impl Walk<'_> {
    fn recorded(&self, live_read: &Path) -> PathBuf {
        let rel = live_read
            .strip_prefix(self.read_root)
            .unwrap_or(Path::new(""));
        if rel.as_os_str().is_empty() {
            self.recorded_root.to_path_buf()
        } else {
            self.recorded_root.join(rel)
        }
    }

    /// Lists directory `shadow_dir` (live path `live_dir`). Returns whether
    /// anything beneath was taken, so that directories are recorded only
    /// on the way to taken files.
    fn dir(&self, plan: &mut Plan, shadow_dir: &Path, live_dir: &Path) -> bool {
        let rd = match std::fs::read_dir(shadow_dir) {
            Ok(rd) => rd,
            Err(e) => {
                plan.problems.push(ListProblem {
                    path: self.recorded(live_dir).display().to_string(),
                    reason: format!("cannot list the directory: {e}"),
                });
                return false;
            }
        };
        let mut names: Vec<_> = Vec::new();
        for ent in rd {
            match ent {
                Ok(e) => names.push(e.file_name()),
                Err(e) => plan.problems.push(ListProblem {
                    path: self.recorded(live_dir).display().to_string(),
                    reason: format!("cannot list the directory: {e}"),
                }),
            }
        }
        names.sort();
        let mut took = false;
        for name in names {
            let src = shadow_dir.join(&name);
            let live = live_dir.join(&name);
            let meta = match std::fs::symlink_metadata(&src) {
                Ok(m) => m,
                Err(e) => {
                    plan.problems.push(ListProblem {
                        path: self.recorded(&live).display().to_string(),
                        reason: e.to_string(),
                    });
                    continue;
                }
            };
            if meta.is_dir() {
                if !self.recursive {
                    continue;
                }
                if self.map.is_foreign_mount(&live, self.volume) || meta.dev() != self.dev {
                    plan.mount_points_skipped.insert(live);
                    continue;
                }
                if self.excl.excludes_tree(&live) {
                    continue;
                }
                let before = plan.entries.len();
                let below = self.dir(plan, &src, &live);
                if below || (self.spec.is_none() && plan.entries.len() == before) {
                    // Empty directories of an include are kept too.
                    plan.entries.insert(PlannedEntry {
                        live: self.recorded(&live),
                        source: src,
                        is_dir: true,
                    });
                    took = true;
                }
                continue;
            }
            let name_s = name.to_string_lossy();
            if let Some(spec) = self.spec {
                if !filespec_matches(spec, &name_s) {
                    continue;
                }
            }
            let recorded = self.recorded(&live);
            if self.excl.excludes(&recorded) || self.excl.excludes(&live) {
                continue;
            }
            plan.entries.insert(PlannedEntry {
                live: recorded,
                source: src,
                is_dir: false,
            });
            took = true;
        }
        if took || self.spec.is_none() {
            plan.entries.insert(PlannedEntry {
                live: self.recorded(live_dir),
                source: shadow_dir.to_path_buf(),
                is_dir: true,
            });
        }
        took
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filespecs() {
        assert!(filespec_matches("*", "a"));
        assert!(filespec_matches("*.*", "noext"));
        assert!(filespec_matches("*.db", "x.db"));
        assert!(!filespec_matches("*.db", "x.db-wal"));
        assert!(filespec_matches("x.db-*", "x.db-wal"));
        assert!(filespec_matches("a?c", "abc"));
        assert!(!filespec_matches("a?c", "ac"));
        assert!(filespec_matches("*a*b*", "xxaYYbZZ"));
        assert!(!filespec_matches("*a*b", "xxaYYbZZ"));
        assert!(!filespec_matches("X.db", "x.db"));
        assert!(filespec_matches("pg_*", "pg_wal"));
    }

    #[test]
    fn mountinfo_unescape() {
        assert_eq!(unescape_mountinfo("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/x\\"), "/x\\");
    }

    #[test]
    fn exclusions() {
        let e = Exclusions::new([
            ExcludeFiles {
                path: "/data/pg".into(),
                filespec: "postmaster.pid".into(),
                recursive: false,
            },
            ExcludeFiles {
                path: "/data/pg/".into(),
                filespec: "*.tmp".into(),
                recursive: true,
            },
        ]);
        assert!(e.excludes(Path::new("/data/pg/postmaster.pid")));
        assert!(!e.excludes(Path::new("/data/pg/base/postmaster.pid")));
        assert!(e.excludes(Path::new("/data/pg/base/1/x.tmp")));
        assert!(!e.excludes(Path::new("/data/other/x.tmp")));
    }

    fn tree() -> (tempfile::TempDir, ShadowMap) {
        let t = tempfile::tempdir().unwrap();
        let shadow = t.path().join("shadow");
        for d in ["srv/app/sub", "srv/app/mnt", "srv/alt/sub", "srv/empty"] {
            std::fs::create_dir_all(shadow.join(d)).unwrap();
        }
        for f in [
            "srv/app/a.db",
            "srv/app/a.db-wal",
            "srv/app/a.db-shm",
            "srv/app/sub/b.db",
            "srv/app/sub/notes.txt",
            "srv/app/mnt/hidden.db",
            "srv/alt/a.db",
            "srv/alt/sub/c.db",
        ] {
            std::fs::write(shadow.join(f), f).unwrap();
        }
        let mounts: BTreeSet<PathBuf> = [PathBuf::from("/vol"), PathBuf::from("/vol/srv/app/mnt")]
            .into_iter()
            .collect();
        let map = ShadowMap::new(vec![(PathBuf::from("/vol"), shadow)], mounts);
        (t, map)
    }

    fn lives(p: &Plan) -> Vec<String> {
        p.entries
            .iter()
            .map(|e| format!("{}{}", e.live.display(), if e.is_dir { "/" } else { "" }))
            .collect()
    }

    #[test]
    fn file_sets_expand_in_the_shadow() {
        let (_t, map) = tree();
        let excl = Exclusions::new([ExcludeFiles {
            path: "/vol/srv/app".into(),
            filespec: "*-shm".into(),
            recursive: true,
        }]);
        let mut p = Plan::default();
        p.add_file_set(&WmFileDesc::new("/vol/srv/app", "a.db*"), &map, &excl);
        assert_eq!(
            lives(&p),
            vec![
                "/vol/srv/app/",
                "/vol/srv/app/a.db",
                "/vol/srv/app/a.db-wal"
            ]
        );
        let mut p = Plan::default();
        p.add_file_set(
            &WmFileDesc::new("/vol/srv/app", "*.db").recursive(true),
            &map,
            &excl,
        );
        assert_eq!(
            lives(&p),
            vec![
                "/vol/srv/app/",
                "/vol/srv/app/a.db",
                "/vol/srv/app/sub/",
                "/vol/srv/app/sub/b.db"
            ]
        );
        assert!(p
            .mount_points_skipped
            .contains(Path::new("/vol/srv/app/mnt")));
        // Missing directory: no files, no problem.
        let mut p = Plan::default();
        p.add_file_set(&WmFileDesc::new("/vol/nope", "*"), &map, &excl);
        assert!(p.entries.is_empty() && p.problems.is_empty());
        // Outside the set: a problem.
        p.add_file_set(&WmFileDesc::new("/elsewhere", "*"), &map, &excl);
        assert_eq!(p.problems.len(), 1);
    }

    #[test]
    fn alternate_location_is_read_and_recorded_under_the_normal_path() {
        let (_t, map) = tree();
        let mut p = Plan::default();
        p.add_file_set(
            &WmFileDesc::new("/vol/srv/app", "*.db")
                .recursive(true)
                .alternate_location("/vol/srv/alt"),
            &map,
            &Exclusions::default(),
        );
        let e: Vec<_> = p.entries.iter().filter(|e| !e.is_dir).collect();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].live, Path::new("/vol/srv/app/a.db"));
        assert!(e[0].source.ends_with("srv/alt/a.db"));
        assert_eq!(e[1].live, Path::new("/vol/srv/app/sub/c.db"));
    }

    #[test]
    fn includes_take_everything_but_exclusions() {
        let (_t, map) = tree();
        let excl = Exclusions::new([ExcludeFiles {
            path: "/vol/srv".into(),
            filespec: "*.db".into(),
            recursive: true,
        }]);
        let mut p = Plan::default();
        p.add_include(Path::new("/vol/srv/app/"), &map, &excl);
        assert_eq!(
            lives(&p),
            vec![
                "/vol/srv/app/",
                "/vol/srv/app/a.db-shm",
                "/vol/srv/app/a.db-wal",
                "/vol/srv/app/sub/",
                "/vol/srv/app/sub/notes.txt"
            ]
        );
        let mut p = Plan::default();
        p.add_include(Path::new("/vol/srv/empty"), &map, &excl);
        assert_eq!(lives(&p), vec!["/vol/srv/empty/"]);
        p.add_include(Path::new("/vol/srv/missing"), &map, &excl);
        assert_eq!(p.problems.len(), 1);
    }
}
