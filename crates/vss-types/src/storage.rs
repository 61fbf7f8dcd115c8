//! Shadow storage ("diff area"), software volumes and reverts: what the
//! copy-on-write software provider (the volsnap counterpart) keeps, as
//! vssd, vss-client and vssadmin describe it to users.
//!
//! The size spec of `/maxsize=` lives here rather than in vssadmin so that
//! vssd checks exactly the text vssadmin accepted: the command line, the
//! D-Bus argument and the provider all agree on what `20%` or `10GB` mean.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{VssCode, VssError};
use crate::guid::Guid;
use crate::provider::volume_name;

/// One shadow storage association (`vssadmin list shadowstorage`,
/// `Win32_ShadowStorage`): shadow copies of the FOR volume keep their
/// copied-before-write data on the ON volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowStorageInfo {
    /// Mount point of the volume whose shadows use the storage.
    pub for_volume: String,
    /// `\\?\Volume{…}\` of that volume, as `list volumes` and
    /// `list shadows` print it ([`volume_name`]).
    pub for_volume_name: String,
    /// Mount point of the volume holding the storage.
    pub on_volume: String,
    /// `\\?\Volume{…}\` of the storage volume.
    pub on_volume_name: String,
    /// Bytes holding copied data now.
    pub used_bytes: u64,
    /// Bytes reserved on the storage volume (at least `used_bytes`).
    pub allocated_bytes: u64,
    /// The most the association may grow to; `None`: unbounded.
    pub max_bytes: Option<u64>,
    /// Size of the FOR volume: the percentages vssadmin prints are of it.
    pub volume_size_bytes: u64,
}

/// A block device the copy-on-write provider serves
/// (`vssadmin add volume /device=PATH /mount=DIR`): vss mounts the
/// filesystem through its own volume server so that it sees every write
/// before it reaches the device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SoftwareVolumeInfo {
    /// The volume GUID (`\\?\Volume{…}\` in listings, see
    /// [`SoftwareVolumeInfo::volume_name`]).
    pub volume_id: Guid,
    /// The underlying device or image, e.g. `/dev/sdb1`.
    pub device: String,
    /// Where the filesystem is mounted for users, e.g. `/srv/data`.
    pub mount_point: String,
    /// Filesystem type found on the device: `ext4`, `xfs`…
    pub fs_type: String,
    pub size_bytes: u64,
    /// The volume server is running and the filesystem mounted through it.
    pub serving: bool,
    /// The loop device the filesystem is mounted from, while serving.
    pub loop_device: Option<String>,
}

impl SoftwareVolumeInfo {
    /// `\\?\Volume{GUID}\`.
    pub fn volume_name(&self) -> String {
        volume_name(self.volume_id)
    }
}

/// Where a revert stands (`IVssAsync::QueryStatus` of `RevertToSnapshot`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RevertState {
    Running,
    Completed,
    Failed { message: String },
}

impl RevertState {
    /// The word `vssadmin query reverts` prints after `State:`.
    pub fn label(&self) -> &'static str {
        match self {
            RevertState::Running => "Running",
            RevertState::Completed => "Completed",
            RevertState::Failed { .. } => "Failed",
        }
    }
}

/// One revert of a volume to a shadow copy (`vssadmin query reverts`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevertStatus {
    pub shadow_id: Guid,
    /// Mount point of the volume being reverted.
    pub for_volume: String,
    pub state: RevertState,
    /// Chunks to copy back from the shadow, and those copied so far.
    pub total_chunks: u64,
    pub done_chunks: u64,
    /// Seconds since the Unix epoch.
    pub started_unix: i64,
}

impl RevertStatus {
    /// Whole percent done, rounded down (100 only when every chunk is
    /// back); a completed revert with nothing to copy is 100.
    pub fn percent(&self) -> u64 {
        if self.total_chunks == 0 {
            return if self.state == RevertState::Completed {
                100
            } else {
                0
            };
        }
        let done = self.done_chunks.min(self.total_chunks) as u128;
        (done * 100 / self.total_chunks as u128) as u64
    }
}

/// Windows' default minimum shadow storage (`MinDiffAreaFileSize` unset)
/// for volumes larger than 500 MB: 320 MB.
pub const MIN_SHADOW_STORAGE_BYTES: u64 = 320 << 20;

/// The same for volumes of 500 MB or less: 32 MB.
pub const MIN_SHADOW_STORAGE_BYTES_SMALL_VOLUME: u64 = 32 << 20;

/// Volumes up to this size count as small for [`min_shadow_storage`].
pub const SMALL_VOLUME_BYTES: u64 = 500 << 20;

/// The least shadow storage an association of a volume of `volume_size`
/// bytes may be limited to.
pub fn min_shadow_storage(volume_size: u64) -> u64 {
    if volume_size <= SMALL_VOLUME_BYTES {
        MIN_SHADOW_STORAGE_BYTES_SMALL_VOLUME
    } else {
        MIN_SHADOW_STORAGE_BYTES
    }
}

/// The `/maxsize=` of shadow storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MaxSize {
    Bytes(u64),
    /// Percentage (1–100) of the FOR volume's size.
    Percent(u8),
    Unbounded,
}

/// Smallest `/maxsize=` the syntax accepts (1 MB, as `vssadmin resize
/// shadowstorage` documents). The provider's floor is higher:
/// [`min_shadow_storage`], checked by [`MaxSize::resolve_checked`].
pub const MIN_MAX_SIZE: u64 = 1 << 20;

const UNITS: &[(&str, u32)] = &[
    ("", 0),
    ("B", 0),
    ("K", 10),
    ("KB", 10),
    ("M", 20),
    ("MB", 20),
    ("G", 30),
    ("GB", 30),
    ("T", 40),
    ("TB", 40),
    ("P", 50),
    ("PB", 50),
    ("E", 60),
    ("EB", 60),
];

impl MaxSize {
    /// Parses `N[unit]` (units B, KB…EB or K…E, 1 KB = 1024 B; no unit means
    /// bytes; a decimal fraction is allowed, rounded down to whole bytes),
    /// `N%` (1–100) or `UNBOUNDED` (any case). Sizes below 1 MB are refused.
    /// Errors are `E_INVALIDARG` naming the text and what is wrong with it.
    pub fn parse(text: &str) -> Result<MaxSize, VssError> {
        let bad = |why: &str| VssError::invalid_arg(format!("invalid size '{text}': {why}"));
        let t = text.trim();
        if t.eq_ignore_ascii_case("UNBOUNDED") {
            return Ok(MaxSize::Unbounded);
        }
        if let Some(n) = t.strip_suffix('%') {
            return match n.trim().parse::<u8>() {
                Ok(p @ 1..=100) => Ok(MaxSize::Percent(p)),
                _ => Err(bad("a percentage must be a whole number from 1 to 100")),
            };
        }
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        let unit = unit.trim();
        let shift = UNITS
            .iter()
            .find(|(u, _)| u.eq_ignore_ascii_case(unit))
            .map(|(_, s)| *s)
            .ok_or_else(|| {
                bad(&format!(
                    "unknown unit '{unit}'; use B, KB, MB, GB, TB, PB or EB \
                     (or K, M, G, T, P, E), N% or UNBOUNDED"
                ))
            })?;
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        if int.is_empty() && frac.is_empty() || frac.contains('.') {
            return Err(bad("expected a number followed by a unit, e.g. 10GB"));
        }
        let unit_bytes = 1u128 << shift;
        let int_val: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| bad("the number is too large"))?
        };
        // Exact fraction: at most 18 digits count.
        let frac = &frac[..frac.len().min(18)];
        let frac_val: u128 = if frac.is_empty() {
            0
        } else {
            frac.parse().map_err(|_| bad("the number is too large"))?
        };
        let bytes = int_val
            .checked_mul(unit_bytes)
            .map(|b| b + frac_val * unit_bytes / 10u128.pow(frac.len() as u32))
            .filter(|b| *b <= u64::MAX as u128)
            .ok_or_else(|| bad("the size is too large"))? as u64;
        if bytes < MIN_MAX_SIZE {
            return Err(bad("the maximum size must be at least 1 MB"));
        }
        Ok(MaxSize::Bytes(bytes))
    }

    /// The D-Bus form (`org.vss.Storage1`): `""` means unbounded, anything
    /// else is [`MaxSize::parse`]d.
    pub fn from_wire(text: &str) -> Result<MaxSize, VssError> {
        if text.trim().is_empty() {
            Ok(MaxSize::Unbounded)
        } else {
            MaxSize::parse(text)
        }
    }

    /// The limit in bytes for a FOR volume of `volume_size` bytes; `None`
    /// when unbounded. A percentage rounds down.
    pub fn resolve(self, volume_size: u64) -> Option<u64> {
        match self {
            MaxSize::Bytes(b) => Some(b),
            MaxSize::Percent(p) => Some((volume_size as u128 * p as u128 / 100) as u64),
            MaxSize::Unbounded => None,
        }
    }

    /// [`MaxSize::resolve`], refusing a limit below
    /// [`min_shadow_storage`] of the volume with
    /// `0x8004231F VSS_E_INSUFFICIENT_STORAGE` (`AddDiffArea` wants at
    /// least 320 MB). `for_volume` names the volume in the message.
    pub fn resolve_checked(
        self,
        for_volume: &str,
        volume_size: u64,
    ) -> Result<Option<u64>, VssError> {
        let Some(bytes) = self.resolve(volume_size) else {
            return Ok(None);
        };
        let min = min_shadow_storage(volume_size);
        if bytes < min {
            let mb = |b: u64| b >> 20;
            let asked = match self {
                MaxSize::Percent(p) => format!("{p}% of the volume ({} MB)", mb(bytes)),
                _ => format!("{} MB", mb(bytes)),
            };
            return Err(VssError::new(
                VssCode::InsufficientStorage,
                format!(
                    "a maximum shadow storage of {asked} for {for_volume} is below the minimum of {} MB",
                    mb(min)
                ),
            )
            .with_hint(format!(
                "Give /maxsize={}MB or more, a larger percentage, or UNBOUNDED. The minimum is \
                 {} MB for volumes over 500 MB and {} MB for smaller ones.",
                mb(min),
                mb(MIN_SHADOW_STORAGE_BYTES),
                mb(MIN_SHADOW_STORAGE_BYTES_SMALL_VOLUME)
            )));
        }
        Ok(Some(bytes))
    }
}

impl FromStr for MaxSize {
    type Err = VssError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MaxSize::parse(s)
    }
}

impl fmt::Display for MaxSize {
    /// `NB` (bytes), `N%` or `UNBOUNDED`, all accepted back by [`MaxSize::parse`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaxSize::Bytes(b) => write!(f, "{b}B"),
            MaxSize::Percent(p) => write!(f, "{p}%"),
            MaxSize::Unbounded => f.write_str("UNBOUNDED"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_size_units() {
        let b = |s: &str| MaxSize::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(b("1048576"), MaxSize::Bytes(1 << 20));
        assert_eq!(b("1048576B"), MaxSize::Bytes(1 << 20));
        assert_eq!(b("1024KB"), MaxSize::Bytes(1 << 20));
        assert_eq!(b("1024k"), MaxSize::Bytes(1 << 20));
        assert_eq!(b("300MB"), MaxSize::Bytes(300 << 20));
        assert_eq!(b("300m"), MaxSize::Bytes(300 << 20));
        assert_eq!(b("10GB"), MaxSize::Bytes(10 << 30));
        assert_eq!(b("10g"), MaxSize::Bytes(10 << 30));
        assert_eq!(b("1.5G"), MaxSize::Bytes(3 << 29));
        assert_eq!(b("2TB"), MaxSize::Bytes(2 << 40));
        assert_eq!(b("2T"), MaxSize::Bytes(2 << 40));
        assert_eq!(b("1PB"), MaxSize::Bytes(1 << 50));
        assert_eq!(b("1p"), MaxSize::Bytes(1 << 50));
        assert_eq!(b("15EB"), MaxSize::Bytes(15 << 60));
        assert_eq!(b("1E"), MaxSize::Bytes(1 << 60));
        assert_eq!(b(".5GB"), MaxSize::Bytes(1 << 29));
        assert_eq!(b(" 10 GB "), MaxSize::Bytes(10 << 30));
        assert_eq!(b("1%"), MaxSize::Percent(1));
        assert_eq!(b("100%"), MaxSize::Percent(100));
        assert_eq!(b("UNBOUNDED"), MaxSize::Unbounded);
        assert_eq!(b("Unbounded"), MaxSize::Unbounded);
        for m in [
            MaxSize::Bytes(5 << 30),
            MaxSize::Percent(20),
            MaxSize::Unbounded,
        ] {
            assert_eq!(b(&m.to_string()), m);
            assert_eq!(MaxSize::from_wire(&m.to_string()).unwrap(), m);
        }
        assert_eq!("20%".parse::<MaxSize>().unwrap(), MaxSize::Percent(20));
        assert_eq!(MaxSize::from_wire("").unwrap(), MaxSize::Unbounded);
        assert_eq!(MaxSize::from_wire("  ").unwrap(), MaxSize::Unbounded);
    }

    #[test]
    fn max_size_errors() {
        let m = |s: &str| {
            let e = MaxSize::parse(s).expect_err(s);
            assert_eq!(e.code, VssCode::InvalidArg);
            e.message
        };
        assert!(m("12XB").starts_with("invalid size '12XB': unknown unit 'XB';"));
        assert_eq!(
            m("0%"),
            "invalid size '0%': a percentage must be a whole number from 1 to 100"
        );
        assert_eq!(
            m("101%"),
            "invalid size '101%': a percentage must be a whole number from 1 to 100"
        );
        assert_eq!(
            m("x%"),
            "invalid size 'x%': a percentage must be a whole number from 1 to 100"
        );
        assert_eq!(
            m("GB"),
            "invalid size 'GB': expected a number followed by a unit, e.g. 10GB"
        );
        assert_eq!(
            m("1.2.3GB"),
            "invalid size '1.2.3GB': expected a number followed by a unit, e.g. 10GB"
        );
        assert_eq!(m("-5GB"), "invalid size '-5GB': unknown unit '-5GB'; use B, KB, MB, GB, TB, PB or EB (or K, M, G, T, P, E), N% or UNBOUNDED");
        assert_eq!(m("16EB"), "invalid size '16EB': the size is too large");
        assert_eq!(
            m("99999999999999999999999999999999999999999"),
            "invalid size '99999999999999999999999999999999999999999': the number is too large"
        );
        assert_eq!(
            m("1000"),
            "invalid size '1000': the maximum size must be at least 1 MB"
        );
        assert_eq!(
            m("1023KB"),
            "invalid size '1023KB': the maximum size must be at least 1 MB"
        );
        // The wire form refuses the same texts.
        assert_eq!(
            MaxSize::from_wire("12XB").unwrap_err().code,
            VssCode::InvalidArg
        );
    }

    #[test]
    fn resolve_sizes() {
        let gb = 1u64 << 30;
        assert_eq!(MaxSize::Bytes(5 * gb).resolve(100 * gb), Some(5 * gb));
        assert_eq!(MaxSize::Percent(20).resolve(100 * gb), Some(20 * gb));
        assert_eq!(MaxSize::Percent(100).resolve(u64::MAX), Some(u64::MAX));
        assert_eq!(MaxSize::Percent(33).resolve(10), Some(3));
        assert_eq!(MaxSize::Unbounded.resolve(100 * gb), None);
    }

    #[test]
    fn minimum_storage() {
        assert_eq!(MIN_SHADOW_STORAGE_BYTES, 335_544_320);
        assert_eq!(MIN_SHADOW_STORAGE_BYTES_SMALL_VOLUME, 33_554_432);
        assert_eq!(min_shadow_storage(0), MIN_SHADOW_STORAGE_BYTES_SMALL_VOLUME);
        assert_eq!(
            min_shadow_storage(500 << 20),
            MIN_SHADOW_STORAGE_BYTES_SMALL_VOLUME
        );
        assert_eq!(
            min_shadow_storage((500 << 20) + 1),
            MIN_SHADOW_STORAGE_BYTES
        );

        let gb = 1u64 << 30;
        assert_eq!(
            MaxSize::Bytes(320 << 20).resolve_checked("/v", 100 * gb),
            Ok(Some(320 << 20))
        );
        assert_eq!(MaxSize::Unbounded.resolve_checked("/v", 100 * gb), Ok(None));
        assert_eq!(
            MaxSize::Bytes(32 << 20).resolve_checked("/small", 400 << 20),
            Ok(Some(32 << 20))
        );
        let e = MaxSize::Bytes(300 << 20)
            .resolve_checked("/srv/data", 100 * gb)
            .unwrap_err();
        assert_eq!(e.code, VssCode::InsufficientStorage);
        assert_eq!(
            e.message,
            "a maximum shadow storage of 300 MB for /srv/data is below the minimum of 320 MB"
        );
        assert!(e.hint().contains("/maxsize=320MB"), "{}", e.hint());
        // 1% of 10 GB is about 102 MB: too little.
        let e = MaxSize::Percent(1)
            .resolve_checked("/srv/data", 10 * gb)
            .unwrap_err();
        assert!(
            e.message
                .starts_with("a maximum shadow storage of 1% of the volume (102 MB) "),
            "{}",
            e.message
        );
    }

    #[test]
    fn revert_percent() {
        let mut r = RevertStatus {
            shadow_id: Guid::NULL,
            for_volume: "/v".into(),
            state: RevertState::Running,
            total_chunks: 1000,
            done_chunks: 999,
            started_unix: 0,
        };
        assert_eq!(r.percent(), 99);
        r.done_chunks = 5000;
        assert_eq!(r.percent(), 100);
        r.total_chunks = 0;
        assert_eq!(r.percent(), 0);
        r.state = RevertState::Completed;
        assert_eq!(r.percent(), 100);
        assert_eq!(r.state.label(), "Completed");
        assert_eq!(
            RevertState::Failed {
                message: "x".into()
            }
            .label(),
            "Failed"
        );
    }

    #[test]
    fn serde_shapes() {
        let r = RevertStatus {
            shadow_id: Guid::from_u128(1),
            for_volume: "/v".into(),
            state: RevertState::Failed {
                message: "disk gone".into(),
            },
            total_chunks: 2,
            done_chunks: 1,
            started_unix: 1_700_000_000,
        };
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["state"]["failed"]["message"], "disk gone");
        assert_eq!(
            serde_json::to_value(RevertState::Running).unwrap(),
            "running"
        );
        let back: RevertStatus = serde_json::from_value(j).unwrap();
        assert_eq!(back, r);
        assert_eq!(
            serde_json::to_value(MaxSize::Percent(20)).unwrap(),
            serde_json::json!({"percent": 20})
        );
    }
}
