//! What the watcher does about fill levels, worked out from one reading of
//! LVM and device-mapper without touching either, so it can be tested as a
//! table of cases.
//!
//! - A thick snapshot's copy-on-write area is extended by a step once it is
//!   `extend_at` full, as long as its volume's snapshots stay within the
//!   volume's shadow storage maximum and the volume group has the extents;
//!   otherwise the volume's oldest shadow goes, which frees its extents.
//! - A thin pool at `thin_pool_limit` percent (data or metadata) loses the
//!   oldest shadow of its volumes, one per reading, until it is below.
//! - A snapshot LVM already invalidated is deleted at once: it is lost, and
//!   must not stay listed.

use std::collections::BTreeMap;

use crate::dm::DmStatus;
use crate::lvm::{Lv, Vg, MAXSIZE_TAG_PREFIX};

/// The watcher's thresholds.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Percent of a thick snapshot's area in use at which it is extended.
    pub extend_at_percent: f64,
    /// Percent of a thin pool's data or metadata at which shadows go.
    pub thin_pool_limit_percent: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            extend_at_percent: 50.0,
            thin_pool_limit_percent: 90.0,
        }
    }
}

/// One change the watcher makes.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Extend {
        vg: String,
        lv: String,
        add: u64,
    },
    Evict {
        vg: String,
        lv: String,
        reason: String,
    },
}

/// The shadow storage maximum of an origin: its tag, else the default
/// (10 % of the volume, at least the VSS minimum for its size).
pub fn max_bytes(origin: &Lv) -> Option<u64> {
    match origin.tag_value(MAXSIZE_TAG_PREFIX) {
        Some("unbounded") => None,
        Some(v) => v.parse().ok().or(Some(default_max(origin.size))),
        None => Some(default_max(origin.size)),
    }
}

pub fn default_max(volume_size: u64) -> u64 {
    (volume_size / 10).max(vss_types::min_shadow_storage(volume_size))
}

/// Copy-on-write space a thick snapshot gets at creation and at each
/// extension: a quarter of the maximum (a tenth of the volume when
/// unbounded), at least 32 MiB.
pub fn step(origin: &Lv, max: Option<u64>) -> u64 {
    let base = max.map_or(origin.size / 10, |m| m / 4);
    base.max(32 << 20)
}

fn round_down(bytes: u64, extent: u64) -> u64 {
    bytes / extent * extent
}

/// Room left for `origin`'s thick snapshots: within its maximum and the
/// volume group's free extents.
pub fn thick_room(origin: &Lv, snapshots_size: u64, vg: &Vg) -> u64 {
    let by_max = max_bytes(origin).map_or(u64::MAX, |m| m.saturating_sub(snapshots_size));
    round_down(by_max.min(vg.free), vg.extent_size)
}

/// Usage of a snapshot or pool: device-mapper's reading when there is
/// one, else the `lvs` figure.
fn usage(lv: &Lv, status: &BTreeMap<String, DmStatus>) -> Option<f64> {
    status
        .get(&lv.dm_name())
        .and_then(DmStatus::percent)
        .or(lv.data_percent)
}

fn pool_usage(
    vg: &str,
    pool: &str,
    lvs: &[Lv],
    status: &BTreeMap<String, DmStatus>,
) -> Option<f64> {
    let dm = crate::lvm::dm_name(vg, pool);
    status
        .get(&format!("{dm}-tpool"))
        .or_else(|| status.get(&dm))
        .and_then(DmStatus::percent)
        .or_else(|| {
            lvs.iter()
                .find(|l| l.vg == vg && l.name == pool)
                .and_then(|l| match (l.data_percent, l.metadata_percent) {
                    (Some(d), Some(m)) => Some(d.max(m)),
                    (d, m) => d.or(m),
                })
        })
}

/// The shadows (our snapshot LVs) of one origin or pool, oldest first.
fn oldest_first(mut v: Vec<&Lv>) -> Vec<&Lv> {
    v.sort_by_key(|l| (l.created_ns(), l.name.clone()));
    v
}

/// What to do now, given one reading.
pub fn plan(
    lvs: &[Lv],
    vgs: &[Vg],
    status: &BTreeMap<String, DmStatus>,
    settings: &Settings,
) -> Vec<Action> {
    let mut actions = Vec::new();
    let ours: Vec<&Lv> = lvs.iter().filter(|l| l.is_ours()).collect();
    let evict = |l: &Lv, reason: String| Action::Evict {
        vg: l.vg.clone(),
        lv: l.name.clone(),
        reason,
    };
    // Invalid first: whatever else happens, these are lost.
    let mut gone = std::collections::BTreeSet::new();
    for l in &ours {
        let dm_invalid = matches!(status.get(&l.dm_name()), Some(DmStatus::SnapshotInvalid(_)));
        if l.is_thick_snapshot() && (l.is_invalid() || dm_invalid) {
            actions.push(evict(
                l,
                format!(
                    "LVM invalidated snapshot {} (its copy-on-write area overflowed)",
                    l.full_name()
                ),
            ));
            gone.insert(l.full_name());
        }
    }
    let mut vg_free: BTreeMap<&str, Vg> =
        vgs.iter().map(|v| (v.name.as_str(), v.clone())).collect();
    // Thick: per origin.
    let mut origins: BTreeMap<(String, String), Vec<&Lv>> = BTreeMap::new();
    for l in &ours {
        if l.is_thick_snapshot() && !gone.contains(&l.full_name()) {
            origins
                .entry((l.vg.clone(), l.origin.clone()))
                .or_default()
                .push(l);
        }
    }
    for ((vg_name, origin_name), snaps) in origins {
        let Some(origin) = lvs
            .iter()
            .find(|l| l.vg == vg_name && l.name == origin_name)
        else {
            continue;
        };
        let Some(vg) = vg_free.get_mut(vg_name.as_str()) else {
            continue;
        };
        let snaps = oldest_first(snaps);
        let mut total: u64 = snaps.iter().map(|l| l.size).sum();
        let max = max_bytes(origin);
        for s in &snaps {
            if usage(s, status).unwrap_or(0.0) < settings.extend_at_percent {
                continue;
            }
            let room = thick_room(origin, total, vg);
            // At least double: a busy volume needs fewer, larger steps.
            let add = step(origin, max).max(s.size).min(room);
            if add >= vg.extent_size {
                actions.push(Action::Extend {
                    vg: vg_name.clone(),
                    lv: s.name.clone(),
                    add,
                });
                total += add;
                vg.free -= add;
            } else {
                let why = if max.is_some_and(|m| total + vg.extent_size > m) {
                    format!(
                        "the shadow storage of {} reached its maximum size ({} bytes)",
                        origin.full_name(),
                        max.unwrap_or_default()
                    )
                } else {
                    format!("volume group {vg_name} has no free extents left")
                };
                actions.push(evict(snaps[0], why));
                break;
            }
        }
    }
    // Thin: per pool.
    let mut pools: BTreeMap<(String, String), Vec<&Lv>> = BTreeMap::new();
    for l in &ours {
        if l.is_thin() && !l.pool.is_empty() {
            pools
                .entry((l.vg.clone(), l.pool.clone()))
                .or_default()
                .push(l);
        }
    }
    for ((vg_name, pool), snaps) in pools {
        let Some(used) = pool_usage(&vg_name, &pool, lvs, status) else {
            continue;
        };
        if used >= settings.thin_pool_limit_percent {
            let snaps = oldest_first(snaps);
            actions.push(evict(
                snaps[0],
                format!(
                    "thin pool {vg_name}/{pool} is {used:.1}% full (limit {:.0}%)",
                    settings.thin_pool_limit_percent
                ),
            ));
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lvm::{CREATED_TAG_PREFIX, SHADOW_TAG};

    const MIB: u64 = 1 << 20;

    fn origin(max: Option<&str>) -> Lv {
        Lv {
            vg: "vg0".into(),
            name: "data".into(),
            attr: "owi-aos---".into(),
            size: 1024 * MIB,
            segtype: "linear".into(),
            tags: max
                .map(|m| vec![format!("{MAXSIZE_TAG_PREFIX}{m}")])
                .unwrap_or_default(),
            ..Lv::default()
        }
    }

    fn thick(n: u128, size: u64, pct: f64) -> Lv {
        Lv {
            vg: "vg0".into(),
            name: format!("vss-{n}"),
            attr: "sri-a-s---".into(),
            size,
            origin: "data".into(),
            segtype: "linear".into(),
            data_percent: Some(pct),
            tags: vec![SHADOW_TAG.into(), format!("{CREATED_TAG_PREFIX}{n}")],
            ..Lv::default()
        }
    }

    fn vg(free: u64) -> Vec<Vg> {
        vec![Vg {
            name: "vg0".into(),
            size: 8192 * MIB,
            free,
            extent_size: 4 * MIB,
        }]
    }

    fn run(lvs: &[Lv], free: u64) -> Vec<Action> {
        plan(lvs, &vg(free), &BTreeMap::new(), &Settings::default())
    }

    #[test]
    fn quiet_snapshots_need_nothing() {
        let lvs = [origin(Some("402653184")), thick(1, 100 * MIB, 10.0)];
        assert!(run(&lvs, 4096 * MIB).is_empty());
    }

    #[test]
    fn a_filling_snapshot_is_extended_within_the_maximum() {
        // Max 384 MiB: step 96 MiB.
        let lvs = [origin(Some("402653184")), thick(1, 96 * MIB, 60.0)];
        assert_eq!(
            run(&lvs, 4096 * MIB),
            vec![Action::Extend {
                vg: "vg0".into(),
                lv: "vss-1".into(),
                add: 96 * MIB
            }]
        );
        // Only 40 MiB left under the maximum: extended by what is left.
        let lvs = [
            origin(Some("402653184")),
            thick(1, 248 * MIB, 10.0),
            thick(2, 96 * MIB, 70.0),
        ];
        assert_eq!(
            run(&lvs, 4096 * MIB),
            vec![Action::Extend {
                vg: "vg0".into(),
                lv: "vss-2".into(),
                add: 40 * MIB
            }]
        );
    }

    #[test]
    fn at_the_maximum_the_oldest_shadow_goes() {
        let lvs = [
            origin(Some("402653184")),
            thick(2, 96 * MIB, 10.0),
            thick(1, 288 * MIB, 80.0),
        ];
        let a = run(&lvs, 4096 * MIB);
        assert_eq!(a.len(), 1);
        match &a[0] {
            Action::Evict { lv, reason, .. } => {
                assert_eq!(lv, "vss-1");
                assert!(reason.contains("maximum size"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_full_volume_group_also_evicts() {
        let lvs = [origin(Some("unbounded")), thick(1, 96 * MIB, 90.0)];
        match &run(&lvs, 2 * MIB)[0] {
            Action::Evict { reason, .. } => assert!(reason.contains("no free extents"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn invalid_snapshots_are_evicted_first() {
        let mut bad = thick(1, 96 * MIB, 100.0);
        bad.attr = "Sri-I-s---".into();
        let lvs = [origin(None), bad, thick(2, 96 * MIB, 5.0)];
        let a = run(&lvs, 4096 * MIB);
        assert_eq!(a.len(), 1);
        assert!(
            matches!(&a[0], Action::Evict { lv, reason, .. } if lv == "vss-1" && reason.contains("invalidated"))
        );
        // Device-mapper may know before lvs does.
        let lvs = [origin(None), thick(3, 96 * MIB, 1.0)];
        let mut status = BTreeMap::new();
        status.insert(
            lvs[1].dm_name(),
            DmStatus::SnapshotInvalid("Overflow".into()),
        );
        let a = plan(&lvs, &vg(4096 * MIB), &status, &Settings::default());
        assert!(matches!(&a[0], Action::Evict { lv, .. } if lv == "vss-3"));
    }

    #[test]
    fn device_mapper_reading_wins_over_lvs() {
        let lvs = [origin(None), thick(1, 96 * MIB, 1.0)];
        let mut status = BTreeMap::new();
        status.insert(
            lvs[1].dm_name(),
            DmStatus::Snapshot {
                used: 60,
                total: 100,
            },
        );
        let a = plan(&lvs, &vg(4096 * MIB), &status, &Settings::default());
        assert!(matches!(&a[0], Action::Extend { lv, .. } if lv == "vss-1"));
    }

    #[test]
    fn a_thin_pool_at_its_limit_loses_its_oldest_shadow() {
        let thin = |n: u128| Lv {
            vg: "vg0".into(),
            name: format!("vss-{n}"),
            attr: "Vri---tz-k".into(),
            size: 1024 * MIB,
            origin: "thinvol".into(),
            pool: "pool".into(),
            segtype: "thin".into(),
            tags: vec![SHADOW_TAG.into(), format!("{CREATED_TAG_PREFIX}{n}")],
            ..Lv::default()
        };
        let lvs = [thin(7), thin(5)];
        let mut status = BTreeMap::new();
        let pool = |d: u64| DmStatus::ThinPool {
            data_used: d,
            data_total: 100,
            meta_used: 1,
            meta_total: 100,
        };
        status.insert("vg0-pool-tpool".to_string(), pool(89));
        assert!(plan(&lvs, &vg(0), &status, &Settings::default()).is_empty());
        status.insert("vg0-pool-tpool".to_string(), pool(91));
        let a = plan(&lvs, &vg(0), &status, &Settings::default());
        assert!(
            matches!(&a[0], Action::Evict { lv, reason, .. } if lv == "vss-5" && reason.contains("91.0% full"))
        );
    }

    #[test]
    fn default_maximum_is_a_tenth_with_the_vss_floor() {
        assert_eq!(default_max(100 * MIB), 32 * MIB);
        assert_eq!(default_max(10_000 * MIB), 1000 * MIB);
        assert_eq!(max_bytes(&origin(Some("unbounded"))), None);
        assert_eq!(max_bytes(&origin(Some("402653184"))), Some(384 * MIB));
    }
}
