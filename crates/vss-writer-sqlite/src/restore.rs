//! Restores: where a component's database was restored to, and whether the
//! restored database is sound.

use std::path::{Path, PathBuf};

use vss_types::{BackupComponents, BcdComponent, Guid, RestoreTarget};

use crate::config::{DatabaseConfig, SqliteWriterConfig};
use crate::lock::open_existing;

/// How many `integrity_check` rows are read; the first few name the
/// problem, the rest would only lengthen the message.
const INTEGRITY_ROWS: u32 = 10;

/// The longest problem text put into messages.
const PROBLEM_CHARS: usize = 400;

/// A component of this writer selected for restore, with its database.
#[derive(Clone, Debug)]
pub struct RestoreItem {
    pub db: DatabaseConfig,
    /// Where the database file was restored to: its own path, or where an
    /// alternate location mapping sent it.
    pub target: Result<PathBuf, String>,
}

/// The components of this writer (any instance: a restore runs in a later
/// process than the backup) that the BCD selects for restore, each with
/// its configured database. Components no longer configured are logged and
/// left out: there is nothing to check them against.
pub fn selected_for_restore(
    cfg: &SqliteWriterConfig,
    writer_id: Guid,
    doc: &BackupComponents,
) -> Vec<(usize, usize, RestoreItem)> {
    let mut out = Vec::new();
    for (wi, section) in doc.writers.iter().enumerate() {
        if section.writer_id != writer_id {
            continue;
        }
        for (ci, comp) in section.components.iter().enumerate() {
            if !comp.selected_for_restore {
                continue;
            }
            let Some(db) = cfg
                .databases
                .iter()
                .find(|d| d.logical_path == comp.logical_path && d.component == comp.name)
            else {
                tracing::warn!(
                    component = %comp.full_path(),
                    "a component selected for restore is not configured any more; not checked"
                );
                continue;
            };
            out.push((
                wi,
                ci,
                RestoreItem {
                    db: db.clone(),
                    target: restore_path(db, comp),
                },
            ));
        }
    }
    out
}

/// Where the component's database file is after the restore. Alternate
/// location mappings of the component count unless the requestor chose the
/// original location; a restore to an alternate location without a mapping
/// for the database file is an error.
pub fn restore_path(db: &DatabaseConfig, comp: &BcdComponent) -> Result<PathBuf, String> {
    let name = db.file_name();
    let original = matches!(
        comp.restore_target,
        RestoreTarget::Original | RestoreTarget::OriginalLocation
    );
    if !original {
        let mapped = comp
            .alternate_location_mappings
            .iter()
            .find(|m| Path::new(&m.path) == db.dir() && filespec_matches(&m.filespec, &name));
        if let Some(m) = mapped {
            return Ok(Path::new(&m.alternate_path).join(&name));
        }
        if comp.restore_target == RestoreTarget::Alternate {
            return Err(format!(
                "the restore target is an alternate location, but no alternate location mapping covers {}",
                db.path.display()
            ));
        }
    }
    Ok(db.path.clone())
}

/// Windows filespec matching: `*` any run of characters, `?` one.
pub fn filespec_matches(spec: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some(('*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
            Some(('?', rest)) => !n.is_empty() && go(rest, &n[1..]),
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    let p: Vec<char> = spec.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

/// Opens the restored database (recovering its WAL or hot journal, as
/// any first user would) and runs `PRAGMA integrity_check`. `Err` carries
/// the first problems reported, or why the check could not run.
pub fn integrity_check(path: &Path, busy_timeout: std::time::Duration) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(format!("{} is not a regular file", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "the restored file {} does not exist",
                path.display()
            ))
        }
        Err(e) => return Err(format!("cannot reach {}: {e}", path.display())),
    }
    let conn = open_existing(path).map_err(|e| format!("cannot open it: {e}"))?;
    conn.busy_timeout(busy_timeout)
        .map_err(|e| format!("cannot set a busy timeout: {e}"))?;
    let rows: Vec<String> = conn
        .prepare(&format!("PRAGMA integrity_check({INTEGRITY_ROWS})"))
        .and_then(|mut st| {
            st.query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<String>>>()
        })
        .map_err(|e| format!("integrity_check could not run: {e}"))?;
    if rows.len() == 1 && rows[0] == "ok" {
        return Ok(());
    }
    let mut text = rows.join("; ");
    if text.chars().count() > PROBLEM_CHARS {
        text = text.chars().take(PROBLEM_CHARS - 3).collect::<String>() + "...";
    }
    if text.is_empty() {
        text = "integrity_check returned nothing".into();
    }
    Err(format!("integrity_check: {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filespecs() {
        assert!(filespec_matches("*", "a.db"));
        assert!(filespec_matches("a.db", "a.db"));
        assert!(filespec_matches("*.db", "a.db"));
        assert!(filespec_matches("a.d?", "a.db"));
        assert!(!filespec_matches("*.db", "a.db-wal"));
        assert!(!filespec_matches("b.db", "a.db"));
        assert!(filespec_matches("a*", "a.db-wal"));
    }
}
