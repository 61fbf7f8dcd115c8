//! Fill levels straight from device-mapper (`dmsetup status`): one cheap
//! command per watch tick, where `lvs` would scan every device.

use std::collections::BTreeMap;
use std::process::Command;

/// The device-mapper control node; absent when the kernel has no dm.
pub const CONTROL: &str = "/dev/mapper/control";

/// Whether the kernel has device-mapper. The control node can exist
/// without the driver (a container's /dev, a kernel without dm): opening
/// it then fails with ENODEV, which costs far less than a failing dmsetup.
pub fn available() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(CONTROL)
        .is_ok()
}

/// What device-mapper says about one device.
#[derive(Clone, Debug, PartialEq)]
pub enum DmStatus {
    /// A thick snapshot: copy-on-write sectors used of those it has.
    Snapshot {
        used: u64,
        total: u64,
    },
    /// The snapshot is no longer valid (overflowed, or a merge failed).
    SnapshotInvalid(String),
    /// A thin pool: data and metadata blocks used of those it has.
    ThinPool {
        data_used: u64,
        data_total: u64,
        meta_used: u64,
        meta_total: u64,
    },
    Other,
}

impl DmStatus {
    /// Percent full (data for a pool, the larger of data and metadata).
    pub fn percent(&self) -> Option<f64> {
        let pct = |u: u64, t: u64| {
            if t == 0 {
                0.0
            } else {
                u as f64 * 100.0 / t as f64
            }
        };
        match *self {
            DmStatus::Snapshot { used, total } => Some(pct(used, total)),
            DmStatus::SnapshotInvalid(_) => Some(100.0),
            DmStatus::ThinPool {
                data_used,
                data_total,
                meta_used,
                meta_total,
            } => Some(pct(data_used, data_total).max(pct(meta_used, meta_total))),
            DmStatus::Other => None,
        }
    }
}

fn fraction(text: &str) -> Option<(u64, u64)> {
    let (a, b) = text.split_once('/')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Parses `dmsetup status` output (`NAME: START LEN TARGET ARGS…`, one
/// line per target; a device of several targets keeps the first).
pub fn parse_status(text: &str) -> BTreeMap<String, DmStatus> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some((name, rest)) = line.split_once(": ") else {
            continue;
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        let status = match (words.get(2).copied(), &words[words.len().min(3)..]) {
            (Some("snapshot"), args) => match args.first().and_then(|a| fraction(a)) {
                Some((used, total)) => DmStatus::Snapshot { used, total },
                None => DmStatus::SnapshotInvalid(args.join(" ")),
            },
            (Some("thin-pool"), args) => {
                match (
                    args.get(1).and_then(|a| fraction(a)),
                    args.get(2).and_then(|a| fraction(a)),
                ) {
                    (Some((meta_used, meta_total)), Some((data_used, data_total))) => {
                        DmStatus::ThinPool {
                            data_used,
                            data_total,
                            meta_used,
                            meta_total,
                        }
                    }
                    // "Fail" or "Error": treat as full so nothing adds to it.
                    _ => DmStatus::ThinPool {
                        data_used: 1,
                        data_total: 1,
                        meta_used: 1,
                        meta_total: 1,
                    },
                }
            }
            _ => DmStatus::Other,
        };
        out.entry(name.to_string()).or_insert(status);
    }
    out
}

/// `dmsetup status` of every device.
pub fn status_all() -> Result<BTreeMap<String, DmStatus>, String> {
    let out = Command::new("dmsetup")
        .arg("status")
        .output()
        .map_err(|e| format!("cannot run dmsetup: {e} (install dmsetup)"))?;
    if !out.status.success() {
        return Err(format!(
            "dmsetup status failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(parse_status(&String::from_utf8_lossy(&out.stdout)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse() {
        let text = "vg0-data: 0 2097152 snapshot-origin \n\
                    vg0-vss--a: 0 2097152 snapshot 4096/131072 16\n\
                    vg0-vss--b: 0 2097152 snapshot Invalid\n\
                    vg0-vss--c: 0 2097152 snapshot Overflow\n\
                    vg0-pool-tpool: 0 409600 thin-pool 3 20/1024 900/1000 - rw discard_passdown queue_if_no_space - 1024\n\
                    vg0-data-real: 0 2097152 linear \n\
                    No devices found\n";
        let s = parse_status(text);
        assert_eq!(
            s["vg0-vss--a"],
            DmStatus::Snapshot {
                used: 4096,
                total: 131072
            }
        );
        assert_eq!(s["vg0-vss--a"].percent(), Some(3.125));
        assert_eq!(s["vg0-vss--b"], DmStatus::SnapshotInvalid("Invalid".into()));
        assert_eq!(
            s["vg0-vss--c"],
            DmStatus::SnapshotInvalid("Overflow".into())
        );
        assert_eq!(s["vg0-pool-tpool"].percent(), Some(90.0));
        assert_eq!(s["vg0-data"], DmStatus::Other);
        assert_eq!(s.len(), 6);
    }
}
