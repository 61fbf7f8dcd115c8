//! The LVM command line, as the provider uses it: reports in JSON
//! (`--reportformat json --units b --nosuffix`) and the few changes it
//! makes. Parsing is separate from running so it can be tested without
//! LVM.

use std::path::PathBuf;
use std::process::Command;

use serde::Deserialize;

/// Tag on every snapshot LV the provider made: nothing else is ever
/// deleted, extended or merged by it.
pub const SHADOW_TAG: &str = "vss_shadow";
/// Tag prefix recording a shadow's creation time (Unix nanoseconds), which
/// orders shadows oldest first.
pub const CREATED_TAG_PREFIX: &str = "vss_t_";
/// Tag prefix on an origin LV recording its shadow storage maximum in
/// bytes, or `unbounded`.
pub const MAXSIZE_TAG_PREFIX: &str = "vss_maxsize_";
/// Prefix of a shadow's LV name; the rest is the shadow id.
pub const SHADOW_LV_PREFIX: &str = "vss-";

/// One logical volume from `lvs`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Lv {
    pub vg: String,
    pub name: String,
    pub uuid: String,
    /// `lv_attr`, ten characters (`owi-aos---`, `swi-a-s---`, `Vwi-a-tz--`).
    pub attr: String,
    pub size: u64,
    /// For a snapshot, the LV it is a snapshot of.
    pub origin: String,
    /// For a thin volume, its pool.
    pub pool: String,
    pub segtype: String,
    /// Usage of a snapshot's copy-on-write area or a thin pool's data.
    pub data_percent: Option<f64>,
    pub metadata_percent: Option<f64>,
    pub tags: Vec<String>,
    /// Kernel device numbers; `None` when not active.
    pub kernel: Option<(u32, u32)>,
}

impl Lv {
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.vg, self.name)
    }

    /// `/dev/VG/LV`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/dev/{}/{}", self.vg, self.name))
    }

    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    pub fn tag_value(&self, prefix: &str) -> Option<&str> {
        self.tags.iter().find_map(|t| t.strip_prefix(prefix))
    }

    /// A thin volume (its snapshots take no size and share the pool).
    pub fn is_thin(&self) -> bool {
        self.segtype == "thin"
    }

    pub fn is_thin_pool(&self) -> bool {
        self.segtype == "thin-pool"
    }

    /// A thick (old-style) snapshot.
    pub fn is_thick_snapshot(&self) -> bool {
        self.attr.starts_with('s') || self.attr.starts_with('S')
    }

    /// LVM gave up on the snapshot (its copy-on-write area overflowed, or a
    /// merge failed): its content cannot be trusted.
    pub fn is_invalid(&self) -> bool {
        let b = self.attr.as_bytes();
        b.first() == Some(&b'S') || matches!(b.get(4), Some(b'I' | b'S' | b'm'))
    }

    /// Marked to be skipped at activation (thin snapshots are).
    pub fn activation_skipped(&self) -> bool {
        self.attr.as_bytes().get(9) == Some(&b'k')
    }

    pub fn is_ours(&self) -> bool {
        self.has_tag(SHADOW_TAG) && self.name.starts_with(SHADOW_LV_PREFIX)
    }

    /// Creation time of a shadow LV, from its tag.
    pub fn created_ns(&self) -> u128 {
        self.tag_value(CREATED_TAG_PREFIX)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// The device-mapper name LVM gives the LV (`-` doubled inside names).
    pub fn dm_name(&self) -> String {
        dm_name(&self.vg, &self.name)
    }
}

pub fn dm_name(vg: &str, lv: &str) -> String {
    format!("{}-{}", vg.replace('-', "--"), lv.replace('-', "--"))
}

/// One volume group from `vgs`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Vg {
    pub name: String,
    pub size: u64,
    pub free: u64,
    pub extent_size: u64,
}

/// Fields asked of `lvs`, in the order [`parse_lvs`] knows.
pub const LV_FIELDS: &str = "lv_name,vg_name,lv_uuid,lv_attr,lv_size,origin,pool_lv,segtype,\
data_percent,metadata_percent,lv_tags,lv_kernel_major,lv_kernel_minor";
pub const VG_FIELDS: &str = "vg_name,vg_size,vg_free,vg_extent_size";

#[derive(Deserialize)]
struct Report {
    report: Vec<ReportPart>,
}

#[derive(Deserialize)]
struct ReportPart {
    #[serde(default)]
    lv: Vec<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    vg: Vec<std::collections::BTreeMap<String, String>>,
}

fn field<'a>(row: &'a std::collections::BTreeMap<String, String>, name: &str) -> &'a str {
    row.get(name).map(|s| s.trim()).unwrap_or("")
}

fn number(text: &str) -> u64 {
    text.parse::<f64>().map(|v| v as u64).unwrap_or(0)
}

fn percent(text: &str) -> Option<f64> {
    if text.is_empty() {
        None
    } else {
        text.parse().ok()
    }
}

/// Parses `lvs --reportformat json --units b --nosuffix -o LV_FIELDS`.
pub fn parse_lvs(json: &str) -> Result<Vec<Lv>, String> {
    let r: Report = serde_json::from_str(json).map_err(|e| format!("bad lvs report: {e}"))?;
    let mut out = Vec::new();
    for part in r.report {
        for row in part.lv {
            let major = field(&row, "lv_kernel_major").parse::<i64>().unwrap_or(-1);
            let minor = field(&row, "lv_kernel_minor").parse::<i64>().unwrap_or(-1);
            out.push(Lv {
                vg: field(&row, "vg_name").into(),
                name: field(&row, "lv_name").into(),
                uuid: field(&row, "lv_uuid").into(),
                attr: field(&row, "lv_attr").into(),
                size: number(field(&row, "lv_size")),
                origin: field(&row, "origin").into(),
                pool: field(&row, "pool_lv").into(),
                segtype: field(&row, "segtype").into(),
                data_percent: percent(field(&row, "data_percent")),
                metadata_percent: percent(field(&row, "metadata_percent")),
                tags: field(&row, "lv_tags")
                    .split(',')
                    .filter(|t| !t.is_empty())
                    .map(String::from)
                    .collect(),
                kernel: (major >= 0 && minor >= 0).then_some((major as u32, minor as u32)),
            });
        }
    }
    Ok(out)
}

/// Parses `vgs --reportformat json --units b --nosuffix -o VG_FIELDS`.
pub fn parse_vgs(json: &str) -> Result<Vec<Vg>, String> {
    let r: Report = serde_json::from_str(json).map_err(|e| format!("bad vgs report: {e}"))?;
    Ok(r.report
        .into_iter()
        .flat_map(|p| p.vg)
        .map(|row| Vg {
            name: field(&row, "vg_name").into(),
            size: number(field(&row, "vg_size")),
            free: number(field(&row, "vg_free")),
            extent_size: number(field(&row, "vg_extent_size")).max(512),
        })
        .collect())
}

/// Why an LVM command failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LvmError {
    pub command: String,
    pub message: String,
    /// LVM said there is not enough free space.
    pub no_space: bool,
}

impl std::fmt::Display for LvmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` failed: {}", self.command, self.message)
    }
}

/// Runs the `lvm` tool. Every change is made with metadata backups and
/// archives off: those are files under /etc/lvm, and a command run inside
/// the hold must not write to a filesystem the same set froze.
#[derive(Clone, Debug)]
pub struct Lvm {
    binary: PathBuf,
}

impl Default for Lvm {
    fn default() -> Self {
        Lvm {
            binary: PathBuf::from("lvm"),
        }
    }
}

const NO_BACKUP: &str = "backup { backup = 0 archive = 0 }";

/// A JSON report of `fields` in bytes without suffixes (`lvs`, `vgs`).
fn report_args<'a>(command: &'a str, fields: &'a str) -> Vec<&'a str> {
    vec![
        command,
        "--reportformat",
        "json",
        "--units",
        "b",
        "--nosuffix",
        "-o",
        fields,
    ]
}

impl Lvm {
    pub fn run(&self, args: &[&str]) -> Result<String, LvmError> {
        let out = Command::new(&self.binary)
            .args(args)
            // LVM complains about every inherited descriptor otherwise.
            .env("LVM_SUPPRESS_FD_WARNINGS", "1")
            .output()
            .map_err(|e| LvmError {
                command: format!("lvm {}", args.join(" ")),
                message: format!("cannot run lvm: {e} (install lvm2)"),
                no_space: false,
            })?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let message = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(LvmError {
            command: format!("lvm {}", args.join(" ")),
            no_space: message.contains("Insufficient free space")
                || message.contains("insufficient free space")
                || message.contains("Insufficient suitable"),
            message,
        })
    }

    fn change(&self, args: &[&str]) -> Result<String, LvmError> {
        let mut all = vec![args[0], "--config", NO_BACKUP];
        all.extend_from_slice(&args[1..]);
        self.run(&all)
    }

    /// Every LV (of one VG when given).
    pub fn lvs(&self, vg: Option<&str>) -> Result<Vec<Lv>, LvmError> {
        self.lvs_of(vg, false)
    }

    /// Every LV of `vg`, also hidden ones (`[name]`: a merging snapshot,
    /// pool internals).
    pub fn lvs_hidden(&self, vg: &str) -> Result<Vec<Lv>, LvmError> {
        self.lvs_of(Some(vg), true)
    }

    fn lvs_of(&self, vg: Option<&str>, all: bool) -> Result<Vec<Lv>, LvmError> {
        let mut args = report_args("lvs", LV_FIELDS);
        if all {
            args.push("--all");
        }
        args.extend(vg);
        let text = self.run(&args)?;
        parse_lvs(&text).map_err(|message| LvmError {
            command: "lvm lvs".into(),
            message,
            no_space: false,
        })
    }

    pub fn vgs(&self) -> Result<Vec<Vg>, LvmError> {
        let text = self.run(&report_args("vgs", VG_FIELDS))?;
        parse_vgs(&text).map_err(|message| LvmError {
            command: "lvm vgs".into(),
            message,
            no_space: false,
        })
    }

    pub fn vg(&self, name: &str) -> Result<Vg, LvmError> {
        self.vgs()?
            .into_iter()
            .find(|v| v.name == name)
            .ok_or_else(|| LvmError {
                command: "lvm vgs".into(),
                message: format!("volume group {name} not found"),
                no_space: false,
            })
    }

    /// A read-only thick snapshot of `vg/origin` with `size` bytes of
    /// copy-on-write space.
    pub fn create_thick(
        &self,
        vg: &str,
        origin: &str,
        name: &str,
        size: u64,
        tags: &[String],
    ) -> Result<(), LvmError> {
        self.create_snapshot(vg, origin, name, Some(size), tags)
    }

    /// A read-only thin snapshot of the thin volume `vg/origin`.
    pub fn create_thin(
        &self,
        vg: &str,
        origin: &str,
        name: &str,
        tags: &[String],
    ) -> Result<(), LvmError> {
        self.create_snapshot(vg, origin, name, None, tags)
    }

    /// `lvcreate --snapshot`: thick with a copy-on-write size, thin without.
    fn create_snapshot(
        &self,
        vg: &str,
        origin: &str,
        name: &str,
        size: Option<u64>,
        tags: &[String],
    ) -> Result<(), LvmError> {
        let size = size.map(|s| format!("{s}b"));
        let origin = format!("{vg}/{origin}");
        let mut args = vec!["lvcreate", "--snapshot", "--permission", "r"];
        if let Some(size) = &size {
            args.extend(["--size", size.as_str()]);
        }
        args.extend(["--name", name]);
        for t in tags {
            args.push("--addtag");
            args.push(t);
        }
        args.push(&origin);
        self.change(&args).map(drop)
    }

    /// Activates an LV even if it is flagged to be skipped (thin snapshots).
    pub fn activate(&self, vg: &str, name: &str) -> Result<(), LvmError> {
        let lv = format!("{vg}/{name}");
        self.change(&["lvchange", "--activate", "y", "--ignoreactivationskip", &lv])
            .map(drop)
    }

    pub fn remove(&self, vg: &str, name: &str) -> Result<(), LvmError> {
        let lv = format!("{vg}/{name}");
        self.change(&["lvremove", "--yes", "--force", &lv])
            .map(drop)
    }

    pub fn extend(&self, vg: &str, name: &str, add: u64) -> Result<(), LvmError> {
        let (lv, size) = (format!("{vg}/{name}"), format!("+{add}b"));
        self.change(&["lvextend", "--size", &size, &lv]).map(drop)
    }

    pub fn add_tag(&self, vg: &str, name: &str, tag: &str) -> Result<(), LvmError> {
        let lv = format!("{vg}/{name}");
        self.change(&["lvchange", "--addtag", tag, &lv]).map(drop)
    }

    pub fn del_tag(&self, vg: &str, name: &str, tag: &str) -> Result<(), LvmError> {
        let lv = format!("{vg}/{name}");
        self.change(&["lvchange", "--deltag", tag, &lv]).map(drop)
    }

    /// Merges a snapshot back into its origin (`lvconvert --merge`); with
    /// the origin closed the merge starts at once.
    pub fn merge(&self, vg: &str, name: &str) -> Result<(), LvmError> {
        let lv = format!("{vg}/{name}");
        self.change(&["lvconvert", "--merge", "--yes", &lv])
            .map(drop)
    }

    pub fn deactivate(&self, vg: &str, name: &str) -> Result<(), LvmError> {
        let lv = format!("{vg}/{name}");
        self.change(&["lvchange", "--activate", "n", &lv]).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LVS: &str = r#"{
      "report": [
          {
              "lv": [
                  {"lv_name":"data", "vg_name":"vg-a", "lv_uuid":"u1", "lv_attr":"owi-aos---", "lv_size":"1073741824", "origin":"", "pool_lv":"", "segtype":"linear", "data_percent":"", "metadata_percent":"", "lv_tags":"vss_maxsize_402653184", "lv_kernel_major":"253", "lv_kernel_minor":"0"},
                  {"lv_name":"vss-0b8f6f4e-2c47-4f2a-9a59-1d0cbb0e3a11", "vg_name":"vg-a", "lv_uuid":"u2", "lv_attr":"sri-a-s---", "lv_size":"67108864", "origin":"data", "pool_lv":"", "segtype":"linear", "data_percent":"12.50", "metadata_percent":"", "lv_tags":"vss_shadow,vss_t_1700000000000000000", "lv_kernel_major":"253", "lv_kernel_minor":"3"},
                  {"lv_name":"old", "vg_name":"vg-a", "lv_uuid":"u3", "lv_attr":"Swi-I-s---", "lv_size":"8388608", "origin":"data", "pool_lv":"", "segtype":"linear", "data_percent":"100.00", "metadata_percent":"", "lv_tags":"", "lv_kernel_major":"-1", "lv_kernel_minor":"-1"},
                  {"lv_name":"tsnap", "vg_name":"vg-a", "lv_uuid":"u4", "lv_attr":"Vri---tz-k", "lv_size":"1073741824", "origin":"thin", "pool_lv":"pool", "segtype":"thin", "data_percent":"", "metadata_percent":"", "lv_tags":"", "lv_kernel_major":"-1", "lv_kernel_minor":"-1"}
              ]
          }
      ]
    }"#;

    #[test]
    fn lvs_report_parses() {
        let lvs = parse_lvs(LVS).unwrap();
        assert_eq!(lvs.len(), 4);
        assert_eq!(lvs[0].kernel, Some((253, 0)));
        assert_eq!(lvs[0].tag_value(MAXSIZE_TAG_PREFIX), Some("402653184"));
        assert!(!lvs[0].is_thick_snapshot());
        let s = &lvs[1];
        assert!(s.is_ours() && s.is_thick_snapshot() && !s.is_invalid());
        assert_eq!(s.created_ns(), 1_700_000_000_000_000_000);
        assert_eq!(s.data_percent, Some(12.5));
        assert_eq!(
            s.dm_name(),
            "vg--a-vss--0b8f6f4e--2c47--4f2a--9a59--1d0cbb0e3a11"
        );
        assert!(lvs[2].is_invalid() && !lvs[2].is_ours());
        assert_eq!(lvs[2].kernel, None);
        assert!(lvs[3].is_thin() && lvs[3].activation_skipped());
    }

    #[test]
    fn vgs_report_parses_and_garbage_is_an_error() {
        let vgs = parse_vgs(
            r#"{"report":[{"vg":[{"vg_name":"vg0","vg_size":"8585740288","vg_free":"4290772992","vg_extent_size":"4194304"}]}]}"#,
        )
        .unwrap();
        assert_eq!(
            vgs,
            vec![Vg {
                name: "vg0".into(),
                size: 8_585_740_288,
                free: 4_290_772_992,
                extent_size: 4_194_304
            }]
        );
        assert!(parse_lvs("not json").is_err());
        assert!(parse_vgs("{}").is_err());
    }
}
