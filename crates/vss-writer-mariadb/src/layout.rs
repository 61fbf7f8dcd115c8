//! Where a running server keeps its files, as it reports them.

use std::path::{Component, Path, PathBuf};

/// The server's directories and files, from its system variables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// `@@datadir`, without a trailing slash.
    pub datadir: PathBuf,
    /// `@@innodb_log_group_home_dir`, made absolute (relative to datadir).
    pub redo_dir: PathBuf,
    /// `@@innodb_undo_directory`, made absolute.
    pub undo_dir: PathBuf,
    /// `@@tmpdir` (colon-separated list), made absolute.
    pub tmpdirs: Vec<PathBuf>,
    /// `@@socket`.
    pub socket: Option<PathBuf>,
    /// `@@pid_file`.
    pub pid_file: Option<PathBuf>,
    /// `@@version`.
    pub version: String,
}

impl Layout {
    /// A layout as Debian's default server has it (for validation and
    /// tests).
    pub fn example() -> Layout {
        Layout::from_vars(
            "/var/lib/mysql/",
            Some("./"),
            Some("./"),
            Some("/tmp"),
            Some("/run/mysqld/mysqld.sock"),
            Some("/run/mysqld/mysqld.pid"),
            "10.11.6-MariaDB-0+deb12u1",
        )
    }

    /// Builds the layout from the variables' values.
    pub fn from_vars(
        datadir: &str,
        redo: Option<&str>,
        undo: Option<&str>,
        tmpdir: Option<&str>,
        socket: Option<&str>,
        pid_file: Option<&str>,
        version: &str,
    ) -> Layout {
        let datadir = clean(Path::new(datadir));
        let under = |v: Option<&str>| match v.map(str::trim).filter(|s| !s.is_empty()) {
            None => datadir.clone(),
            Some(s) => clean(&datadir.join(s)),
        };
        Layout {
            redo_dir: under(redo),
            undo_dir: under(undo),
            tmpdirs: tmpdir
                .unwrap_or("")
                .split(':')
                .filter(|s| !s.is_empty())
                .map(|s| clean(&datadir.join(s)))
                .collect(),
            socket: socket
                .filter(|s| !s.is_empty())
                .map(|s| clean(&datadir.join(s))),
            pid_file: pid_file
                .filter(|s| !s.is_empty())
                .map(|s| clean(&datadir.join(s))),
            datadir,
            version: version.to_owned(),
        }
    }

    /// Every directory the instance's files are in: datadir, and the redo
    /// and undo directories when they lie outside it.
    pub fn dirs(&self) -> Vec<PathBuf> {
        let mut v = vec![self.datadir.clone()];
        for d in [&self.redo_dir, &self.undo_dir] {
            if !d.starts_with(&self.datadir) && !v.contains(d) {
                v.push(d.clone());
            }
        }
        v
    }
}

/// Lexically normalised: `.` dropped, `..` applied, no trailing slash.
pub fn clean(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        PathBuf::from("/")
    } else {
        out
    }
}
