//! Preparing an exposure target. A shadow keeps the permissions its files
//! had at its instant, so by default it is exposed where only root can
//! reach it: a user must not read through a shadow what the live volume
//! now denies them.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use vss_types::{VssCode, VssError, VssResult};

/// Creates `target` (and missing parents: mode 0700 unless `allow_users`),
/// checks it is an empty directory and, unless `allow_users`, that users
/// other than root cannot reach it.
pub fn prepare_target(target: &Path, allow_users: bool) -> VssResult<()> {
    let mode = if allow_users { 0o755 } else { 0o700 };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(target)
        .map_err(|e| {
            VssError::new(
                VssCode::InvalidArg,
                format!("cannot create {}: {e}", target.display()),
            )
        })?;
    let meta = std::fs::metadata(target)
        .map_err(|e| VssError::new(VssCode::InvalidArg, format!("{}: {e}", target.display())))?;
    if !meta.is_dir() {
        return Err(VssError::invalid_arg(format!(
            "{} is not a directory",
            target.display()
        )));
    }
    let non_empty = std::fs::read_dir(target)
        .map(|mut d| d.next().is_some())
        .unwrap_or(true);
    if non_empty {
        return Err(VssError::invalid_arg(format!(
            "{} is not empty; a shadow copy is exposed on an empty directory",
            target.display()
        )));
    }
    if !allow_users && reachable_by_others(target) {
        return Err(VssError::new(
            VssCode::AccessDenied,
            format!(
                "{} can be reached by users other than root; a shadow exposed there would show \
                 files with the permissions they had at the shadow's instant",
                target.display()
            ),
        )
        .with_hint(
            "Expose under a directory only root can enter (e.g. /run/vss/exposed/NAME, created \
             0700 when missing), or pass /allowusers if exposing the old permissions is intended.",
        ));
    }
    if !allow_users {
        // The target itself is covered by the mount; keep it private anyway.
        let _ = std::fs::set_permissions(target, std::fs::Permissions::from_mode(0o700));
    }
    Ok(())
}

/// True when some non-root user can traverse every directory down to
/// `path`'s parent chain: i.e. no ancestor is a root-owned directory that
/// shuts out group and others.
fn reachable_by_others(path: &Path) -> bool {
    let mut cur = path.parent();
    while let Some(dir) = cur {
        if let Ok(m) = std::fs::metadata(dir) {
            let mode = m.mode();
            let others_x = mode & 0o001 != 0;
            let group_x = mode & 0o010 != 0 && m.gid() != 0;
            if m.uid() == 0 && !others_x && !group_x {
                return false;
            }
        }
        cur = dir.parent();
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_private_parents() {
        let base = std::env::temp_dir().join(format!("vss-expose-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
        let t = base.join("private/exposed");
        if nix_is_root() {
            prepare_target(&t, false).unwrap();
            let m = std::fs::metadata(base.join("private")).unwrap();
            assert_eq!(m.mode() & 0o777, 0o700);
            // Reachable path is refused without allow_users.
            let open = base.join("open");
            std::fs::create_dir_all(&open).unwrap();
            std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
            // base is 0755 and its parents (/tmp) are reachable.
            let e = prepare_target(&open.join("x"), true);
            assert!(e.is_ok());
        }
        let _ = std::fs::remove_dir_all(&base);
    }

    fn nix_is_root() -> bool {
        std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false)
    }
}
