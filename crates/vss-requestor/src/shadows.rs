//! The shadow copy set of a backup: which volumes it needs, and where each
//! shadow is read (exposed read-only under a root-only directory for the
//! time of the copy).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use vss_client::{BackupComponents, Client};
use vss_types::{Guid, ShadowProp, VolumeInfo, VssCode, VssError, VssResult};

use crate::files::{normalize, system_mount_points, ShadowMap};

/// Where shadows are exposed while a requestor reads them: root-only.
pub const DEFAULT_EXPOSE_BASE: &str = "/run/vss/requestor";

/// The volume (of those vssd offers) holding each path: the longest mount
/// point that is a prefix. A path on no such volume is an error naming it.
pub fn volumes_for<'a>(
    volumes: &'a [VolumeInfo],
    paths: &[PathBuf],
) -> VssResult<Vec<&'a VolumeInfo>> {
    let mut out: Vec<&VolumeInfo> = Vec::new();
    for p in paths {
        let p = normalize(p);
        let v = volumes
            .iter()
            .filter(|v| p.starts_with(Path::new(&v.mount_point)))
            .max_by_key(|v| v.mount_point.len())
            .ok_or_else(|| {
                VssError::new(
                    VssCode::VolumeNotSupported,
                    format!(
                        "{} is on no volume that vssd can make shadow copies of",
                        p.display()
                    ),
                )
                .with_hint("`vssadmin list volumes` shows the volumes and their providers.")
            })?;
        if v.provider.is_none() {
            return Err(VssError::new(
                VssCode::VolumeNotSupported,
                format!(
                    "{} is on {} ({} on {}), which no provider supports",
                    p.display(),
                    v.mount_point,
                    v.fs_type,
                    v.device
                ),
            )
            .with_hint(
                "Use btrfs, or enable the software provider for the volume: \
                 `vssadmin add volume /device=DEV /mount=DIR`.",
            ));
        }
        if !out.iter().any(|o| o.mount_point == v.mount_point) {
            out.push(v);
        }
    }
    out.sort_by(|a, b| a.mount_point.cmp(&b.mount_point));
    Ok(out)
}

/// A shadow of the set as the requestor reads it.
#[derive(Clone, Debug)]
pub struct ReadRoot {
    pub volume: String,
    pub shadow: ShadowProp,
    /// Where the shadow's root directory is (exposed by this requestor).
    pub root: PathBuf,
}

/// The exposed shadows of one set; [`ExposedSet::release`] unexposes them.
pub struct ExposedSet {
    pub roots: Vec<ReadRoot>,
    base: PathBuf,
}

impl ExposedSet {
    /// Exposes every shadow read-only under `base/<set id>/<n>`.
    pub async fn expose(
        client: &Client,
        base: &Path,
        set_id: Guid,
        shadows: &[ShadowProp],
    ) -> VssResult<ExposedSet> {
        let dir = base.join(set_id.to_string().trim_matches(['{', '}']));
        let mut set = ExposedSet {
            roots: Vec::new(),
            base: dir.clone(),
        };
        for (i, s) in shadows.iter().enumerate() {
            let at = dir.join(i.to_string());
            match client
                .expose_shadow(s.shadow_id, &at.to_string_lossy(), false)
                .await
            {
                Ok(_) => set.roots.push(ReadRoot {
                    volume: s.original_volume.clone(),
                    shadow: s.clone(),
                    root: at,
                }),
                Err(e) => {
                    set.release(client).await;
                    return Err(e);
                }
            }
        }
        Ok(set)
    }

    /// The live-to-shadow path map for the file list.
    pub fn map(&self) -> ShadowMap {
        ShadowMap::new(
            self.roots
                .iter()
                .map(|r| (PathBuf::from(&r.volume), r.root.clone()))
                .collect(),
            system_mount_points(),
        )
    }

    /// Unexposes every shadow (best effort: a failure is logged, the
    /// shadows go with the session anyway).
    pub async fn release(&mut self, client: &Client) {
        for r in self.roots.drain(..) {
            if let Err(e) = client.unexpose_shadow(r.shadow.shadow_id).await {
                tracing::warn!(shadow = %r.shadow.shadow_id, error = %e, "cannot unexpose shadow copy");
            }
            let _ = std::fs::remove_dir(&r.root);
        }
        let _ = std::fs::remove_dir(&self.base);
    }
}

/// Starts the set, adds the volumes holding `paths`, and cuts it (the
/// writers freeze and thaw in DoSnapshotSet).
pub async fn create_set(
    client: &Client,
    bc: &mut BackupComponents,
    paths: &[PathBuf],
) -> VssResult<(Guid, Vec<ShadowProp>)> {
    let volumes = client.list_volumes().await?;
    let needed = volumes_for(&volumes, paths)?;
    if needed.is_empty() {
        return Err(VssError::invalid_arg(
            "nothing to back up: no component files and no --include paths",
        )
        .with_hint("Name a writer (--writer), a component (--component) or a path (--include)."));
    }
    let set_id = bc.start_snapshot_set().await?;
    for v in needed {
        bc.add_to_snapshot_set(&v.mount_point, Guid::NULL).await?;
    }
    let shadows = bc.do_snapshot_set().await?;
    Ok((set_id, shadows))
}

/// Every path a backup may read under, for choosing volumes.
pub fn distinct(paths: impl IntoIterator<Item = PathBuf>) -> Vec<PathBuf> {
    let set: BTreeSet<PathBuf> = paths.into_iter().map(|p| normalize(&p)).collect();
    set.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(mount: &str, provider: Option<&str>) -> VolumeInfo {
        VolumeInfo {
            mount_point: mount.into(),
            volume_name: String::new(),
            volume_guid: Guid::NULL,
            fs_type: "btrfs".into(),
            device: "/dev/loop0".into(),
            provider: provider.map(Into::into),
        }
    }

    #[test]
    fn longest_mount_point_wins() {
        let v = vec![
            vol("/", None),
            vol("/srv", Some("p")),
            vol("/srv/db", Some("p")),
        ];
        let got = volumes_for(&v, &[PathBuf::from("/srv/db/x"), PathBuf::from("/srv/a")]).unwrap();
        let m: Vec<&str> = got.iter().map(|v| v.mount_point.as_str()).collect();
        assert_eq!(m, vec!["/srv", "/srv/db"]);
        let e = volumes_for(&v, &[PathBuf::from("/home/x")]).unwrap_err();
        assert_eq!(e.code, VssCode::VolumeNotSupported);
        assert!(e.to_string().contains("/home/x"));
    }
}
