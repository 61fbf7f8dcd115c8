//! Output text: pure functions giving exactly what vssadmin prints, in the
//! Windows layout (same labels and indentation), and JSON for `--json`
//! ([`json`]). Every result ends with a newline; none includes the header,
//! which [`with_header`] puts in front.
//!
//! Linux-only lines are only ever added after a block's Windows lines, so
//! scripts reading the Windows labels keep working.

use std::collections::HashMap;

use jiff::tz::TimeZone;
use jiff::Timestamp;
use vss_types::{
    attr, last_error_text, Guid, ProviderInfo, RevertState, RevertStatus, ShadowProp, ShadowState,
    SoftwareVolumeInfo, VolumeInfo, VssError, WriterStatus,
};

/// One shadow storage association; defined in vss-types, shared with vssd.
pub use vss_types::ShadowStorageInfo;

use crate::args::CommandKind;

/// First line of every command's output (followed by a blank line).
pub const HEADER: &str =
    "vssadmin 1.1 - Volume Shadow Copy Service administrative command-line tool (vss for Linux)";

/// What a list prints when it is empty.
pub const NO_ITEMS: &str = "No items found that satisfy the query.";

/// The header, a blank line, then `body`.
pub fn with_header(body: &str) -> String {
    format!("{HEADER}\n\n{body}")
}

fn no_items() -> String {
    format!("{NO_ITEMS}\n")
}

/// `list writers`: one block per writer, a blank line between blocks.
pub fn list_writers(writers: &[WriterStatus]) -> String {
    if writers.is_empty() {
        return no_items();
    }
    let blocks: Vec<String> = writers
        .iter()
        .map(|w| {
            let mut s = format!(
                "Writer name: '{}'\n   Writer Id: {}\n   Writer Instance Id: {}\n   State: [{}] {}\n   Last error: {}\n",
                w.name,
                w.writer_id,
                w.instance_id,
                w.state.value(),
                w.state.label(),
                last_error_text(w.last_error),
            );
            if let Some(m) = &w.last_error_message {
                s += &format!("   Last error message: {m}\n");
            }
            s
        })
        .collect();
    blocks.join("\n")
}

/// `list providers`.
pub fn list_providers(providers: &[ProviderInfo]) -> String {
    if providers.is_empty() {
        return no_items();
    }
    let blocks: Vec<String> = providers
        .iter()
        .map(|p| {
            let mut s = format!(
                "Provider name: '{}'\n   Provider type: {}\n   Provider Id: {}\n   Version: {}\n",
                p.name,
                p.provider_type.label(),
                p.provider_id,
                p.version
            );
            if !p.supports.is_empty() {
                s += &format!("   Supports: {}\n", p.supports);
            }
            s
        })
        .collect();
    blocks.join("\n")
}

/// Provider names by id for [`list_shadows`]; an unknown id shows as itself.
pub fn provider_lookup(providers: &[ProviderInfo]) -> impl Fn(Guid) -> String {
    let names: HashMap<Guid, String> = providers
        .iter()
        .map(|p| (p.provider_id, p.name.clone()))
        .collect();
    move |id| names.get(&id).cloned().unwrap_or_else(|| id.to_string())
}

/// Local time as vssadmin shows it: `9/10/2021 5:49:26 PM`.
pub fn format_time(unix_ms: i64, tz: &TimeZone) -> String {
    match Timestamp::from_millisecond(unix_ms) {
        Ok(ts) => ts
            .to_zoned(tz.clone())
            .strftime("%-m/%-d/%Y %-I:%M:%S %p")
            .to_string(),
        Err(_) => format!("{unix_ms} ms after the Unix epoch"),
    }
}

/// `(MOUNTPOINT)\\?\Volume{…}\`; `(?)` when the mount point is unknown.
fn volume_spec(mount_point: &str, volume_name: &str) -> String {
    let mp = if mount_point.is_empty() {
        "?"
    } else {
        mount_point
    };
    format!("({mp}){volume_name}")
}

/// Shadows in creation order (ties keep the given order).
fn by_creation(shadows: &[ShadowProp]) -> Vec<&ShadowProp> {
    let mut v: Vec<&ShadowProp> = shadows.iter().collect();
    v.sort_by_key(|s| s.created_unix_ms);
    v
}

/// `list shadows`: grouped by shadow copy set, sets and copies in creation
/// order, times in `tz`. `provider_name` names a provider id (see
/// [`provider_lookup`]).
pub fn list_shadows(
    shadows: &[ShadowProp],
    tz: &TimeZone,
    provider_name: &dyn Fn(Guid) -> String,
) -> String {
    if shadows.is_empty() {
        return no_items();
    }
    let ordered = by_creation(shadows);
    let mut sets: Vec<(Guid, Vec<&ShadowProp>)> = Vec::new();
    for s in ordered {
        match sets.iter_mut().find(|(id, _)| *id == s.set_id) {
            Some((_, members)) => members.push(s),
            None => sets.push((s.set_id, vec![s])),
        }
    }
    let blocks: Vec<String> = sets
        .iter()
        .map(|(set_id, members)| {
            let first = members[0];
            let mut out = format!(
                "Contents of shadow copy set ID: {set_id}\n   Contained {} shadow copies at creation time: {}\n",
                first.count,
                format_time(first.created_unix_ms, tz)
            );
            for s in members {
                out += &shadow_block(s, provider_name);
            }
            out
        })
        .collect();
    blocks.join("\n")
}

fn shadow_block(s: &ShadowProp, provider_name: &dyn Fn(Guid) -> String) -> String {
    let mut out = format!(
        "      Shadow Copy ID: {}\n\
         \x20        Original Volume: {}\n\
         \x20        Shadow Copy Volume: {}\n\
         \x20        Originating Machine: {}\n\
         \x20        Service Machine: {}\n\
         \x20        Provider: '{}'\n\
         \x20        Type: {}\n\
         \x20        Attributes: {}\n",
        s.shadow_id,
        volume_spec(&s.original_volume, &s.original_volume_name),
        s.device_object,
        s.originating_machine,
        s.service_machine,
        provider_name(s.provider_id),
        s.context.type_label(),
        attr::describe(s.attributes),
    );
    if let Some(at) = s.exposed_name.as_ref().or(s.exposed_path.as_ref()) {
        out += &format!("         Exposed At: {at}\n");
    }
    // 0 means unknown (e.g. recovered from an older catalogue).
    if s.hold_micros > 0 {
        out += &format!("         Hold Time: {}\n", format_hold(s.hold_micros));
    }
    if s.state == ShadowState::Lost {
        match &s.lost_reason {
            Some(r) => out += &format!("         State: Lost ({r})\n"),
            None => out += "         State: Lost\n",
        }
    }
    out
}

/// Microseconds as milliseconds with one decimal: `12.3 ms`.
fn format_hold(micros: u64) -> String {
    let tenths = (micros + 50) / 100;
    format!("{}.{} ms", tenths / 10, tenths % 10)
}

/// `create shadow` success.
pub fn create_shadow(volume: &str, shadow: &ShadowProp) -> String {
    format!(
        "Successfully created shadow copy for '{volume}'\n    Shadow Copy ID: {}\n    Shadow Copy Volume Name: {}\n",
        shadow.shadow_id, shadow.device_object
    )
}

/// `list volumes`: no blank line between volumes, as on Windows.
pub fn list_volumes(volumes: &[VolumeInfo]) -> String {
    if volumes.is_empty() {
        return no_items();
    }
    volumes
        .iter()
        .map(|v| {
            format!(
                "Volume path: {}\n    Volume name: {}\n    Filesystem: {} on {}\n    Provider: {}\n",
                v.mount_point,
                v.volume_name,
                v.fs_type,
                v.device,
                v.provider.as_deref().unwrap_or("(none)")
            )
        })
        .collect()
}

/// `list shadowstorage`.
pub fn list_shadow_storage(assocs: &[ShadowStorageInfo]) -> String {
    if assocs.is_empty() {
        return no_items();
    }
    let blocks: Vec<String> = assocs
        .iter()
        .map(|a| {
            let pct = |b: u64| percent(b, a.volume_size_bytes);
            let max = match a.max_bytes {
                Some(m) => format!("{} ({}%)", format_size(m), pct(m)),
                None => "UNBOUNDED (100%)".to_owned(),
            };
            format!(
                "Shadow Copy Storage association\n\
                 \x20  For volume: {}\n\
                 \x20  Shadow Copy Storage volume: {}\n\
                 \x20  Used Shadow Copy Storage space: {} ({}%)\n\
                 \x20  Allocated Shadow Copy Storage space: {} ({}%)\n\
                 \x20  Maximum Shadow Copy Storage space: {max}\n",
                volume_spec(&a.for_volume, &a.for_volume_name),
                volume_spec(&a.on_volume, &a.on_volume_name),
                format_size(a.used_bytes),
                pct(a.used_bytes),
                format_size(a.allocated_bytes),
                pct(a.allocated_bytes),
            )
        })
        .collect();
    blocks.join("\n")
}

/// Whole percent of `part` in `whole`, rounded to nearest; 0 for an empty whole.
fn percent(part: u64, whole: u64) -> u64 {
    if whole == 0 {
        return 0;
    }
    ((part as u128 * 100 + whole as u128 / 2) / whole as u128) as u64
}

/// Bytes with binary units and three significant digits, rounded down:
/// `0 B`, `512 B`, `1.50 KB`, `22.1 GB`, `640 MB`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KB", "MB", "GB", "TB", "PB", "EB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut k = 0;
    while k + 1 < UNITS.len() && bytes >> (10 * (k + 1)) > 0 {
        k += 1;
    }
    let unit = 1u128 << (10 * k);
    let b = bytes as u128;
    let whole = b / unit;
    let decimals = match whole {
        0..=9 => 2,
        10..=99 => 1,
        _ => 0,
    };
    if decimals == 0 {
        return format!("{whole} {}", UNITS[k]);
    }
    let scale = 10u128.pow(decimals);
    let frac = (b % unit) * scale / unit;
    format!(
        "{whole}.{frac:0width$} {}",
        UNITS[k],
        width = decimals as usize
    )
}

/// `delete shadows` result.
pub fn delete_shadows(n_deleted: usize) -> String {
    match n_deleted {
        0 => no_items(),
        1 => "Successfully deleted 1 shadow copy.\n".to_owned(),
        n => format!("Successfully deleted {n} shadow copies.\n"),
    }
}

/// The confirmation question `delete shadows` asks without `/quiet` (no
/// newline: the answer follows on the same line).
pub fn delete_shadows_prompt(n: usize) -> String {
    let what = if n == 1 {
        "shadow copy"
    } else {
        "shadow copies"
    };
    format!("Do you really want to delete {n} {what} (Y/N): [N]? ")
}

/// `expose shadow` success.
pub fn exposed(shadow: Guid, path: &str) -> String {
    format!("Successfully exposed shadow copy {shadow}\n    Exposed At: {path}\n")
}

/// `unexpose shadow` success.
pub fn unexposed(shadow: Guid) -> String {
    format!("Successfully unexposed shadow copy {shadow}\n")
}

/// `add shadowstorage` success.
pub fn shadow_storage_added() -> String {
    "Successfully added the shadow copy storage association.\n".to_owned()
}

/// `resize shadowstorage` success.
pub fn shadow_storage_resized() -> String {
    "Successfully resized the shadow copy storage association.\n".to_owned()
}

/// `delete shadowstorage` success.
pub fn shadow_storage_deleted(n: usize) -> String {
    match n {
        0 => no_items(),
        1 => "Successfully deleted 1 shadow copy storage association.\n".to_owned(),
        n => format!("Successfully deleted {n} shadow copy storage associations.\n"),
    }
}

/// The confirmation question `delete shadowstorage` asks without `/quiet`.
pub fn delete_shadow_storage_prompt(n: usize) -> String {
    let what = if n == 1 {
        "shadow copy storage association"
    } else {
        "shadow copy storage associations"
    };
    format!("Do you really want to delete {n} {what} (Y/N): [N]? ")
}

/// What a `delete …` command prints when the question is answered No.
pub fn not_deleted(kind: CommandKind) -> String {
    let what = match kind {
        CommandKind::DeleteShadowStorage => "No shadow copy storage associations were deleted.",
        CommandKind::DeleteVolume => "The volume was not deleted.",
        _ => "No shadow copies were deleted.",
    };
    // The answer may not have ended its line (stdin not a terminal).
    format!("\n{what}\n")
}

/// `add volume` success (a Linux extension; laid out like `create shadow`).
pub fn volume_added(v: &SoftwareVolumeInfo) -> String {
    let serving = match (v.serving, &v.loop_device) {
        (true, Some(dev)) => format!("Yes, from {dev}"),
        (true, None) => "Yes".to_owned(),
        (false, _) => "No".to_owned(),
    };
    format!(
        "Successfully added volume '{}'\n    Volume name: {}\n    Device: {}\n    Filesystem: {}, {}\n    Serving: {serving}\n",
        v.mount_point,
        v.volume_name(),
        v.device,
        v.fs_type,
        format_size(v.size_bytes),
    )
}

/// The confirmation question `delete volume` asks without `/quiet`.
pub fn delete_volume_prompt(volume: &str) -> String {
    format!(
        "Do you really want to stop serving '{volume}' and delete its shadow copies and shadow copy storage (Y/N): [N]? "
    )
}

/// `delete volume` success.
pub fn volume_deleted(volume: &str) -> String {
    format!("Successfully deleted volume '{volume}' from the copy-on-write provider.\n")
}

/// `revert shadow` success: the revert runs on in vssd. `volume` is the
/// shadow's original volume when known.
pub fn revert_started(shadow: Guid, volume: Option<&str>) -> String {
    match volume {
        Some(v) => format!(
            "Successfully started reverting '{v}' to shadow copy {shadow}\n    Follow its progress with: vssadmin query reverts /for={v}\n"
        ),
        None => format!(
            "Successfully started reverting to shadow copy {shadow}\n    Follow its progress with: vssadmin query reverts\n"
        ),
    }
}

/// `query reverts`: one block per revert, oldest first, times in `tz`.
pub fn query_reverts(reverts: &[RevertStatus], tz: &TimeZone) -> String {
    if reverts.is_empty() {
        return no_items();
    }
    let mut ordered: Vec<&RevertStatus> = reverts.iter().collect();
    ordered.sort_by_key(|r| r.started_unix);
    let blocks: Vec<String> = ordered
        .iter()
        .map(|r| {
            let state = match &r.state {
                RevertState::Failed { message } => format!("Failed ({message})"),
                other => other.label().to_owned(),
            };
            format!(
                "Revert to shadow copy ID: {}\n   Volume: {}\n   State: {state}\n   Progress: {}% ({} of {} chunks)\n   Started: {}\n",
                r.shadow_id,
                r.for_volume,
                r.percent(),
                r.done_chunks,
                r.total_chunks,
                format_time(r.started_unix.saturating_mul(1000), tz),
            )
        })
        .collect();
    blocks.join("\n")
}

/// `Error: 0x… SYMBOL: message`, then `Hint: …` when there is a hint.
pub fn error(e: &VssError) -> String {
    let hint = e.hint();
    if hint.is_empty() {
        format!("Error: {e}\n")
    } else {
        format!("Error: {e}\nHint: {hint}\n")
    }
}

/// Help: the command list, or one command's syntax.
pub fn help(topic: Option<CommandKind>) -> String {
    if let Some(k) = topic {
        let mut s = format!("Usage: {}\n\n{}.\n", k.syntax(), k.summary());
        if let Some(n) = help_notes(k) {
            s += &format!("\n{n}\n");
        }
        return s;
    }
    let mut s = String::from("Usage: vssadmin COMMAND [SWITCHES] [--json]\n\nCommands:\n");
    for k in CommandKind::ALL {
        let mark = if k.is_linux_extension() {
            "(Linux) "
        } else {
            ""
        };
        s += &format!("   {:<22}{mark}{}\n", k.name(), k.summary());
    }
    s += "\n\
Commands marked (Linux) are extensions of vss for Linux, not in Windows.\n\
\n\
Switches are written /key=value and /flag, or --key=value, --key value and\n\
--flag. Commands and switch names are case-insensitive. --json prints the\n\
result as JSON. `vssadmin help COMMAND` shows the syntax of one command.\n\
\n\
Exit codes: 0 success, 1 the service reported an error, 2 invalid command\n\
line, 3 the service cannot be reached, 4 access denied.\n";
    s
}

fn help_notes(k: CommandKind) -> Option<&'static str> {
    Some(match k {
        CommandKind::ListShadows => "PATH is any path on the volume. Without switches every shadow copy is listed.",
        CommandKind::CreateShadow => "PATH is any path on the volume. /autoretry keeps trying for up to MINUTES\nwhile another shadow copy creation is in progress.",
        CommandKind::DeleteShadows => "/oldest deletes the oldest shadow copy of the volume, /all every shadow copy\nof the volume, /shadow the one given. Without /quiet you are asked to confirm.",
        CommandKind::ExposeShadow => "DIR is created if missing. Unless /allowusers is given, directories created\nfor it are accessible to root only.",
        CommandKind::AddShadowStorage | CommandKind::ResizeShadowStorage => "SIZE is a number with an optional unit B, KB, MB, GB, TB, PB or EB\n(or K, M, G, T, P, E; 1 KB = 1024 B), N% of the volume, or UNBOUNDED.\nThe minimum is 1 MB; without /maxsize there is no limit.",
        CommandKind::RevertShadow => "A revert cannot be cancelled. /forcedismount unmounts the volume if it is in use.\n`vssadmin query reverts` shows its progress.",
        CommandKind::DeleteShadowStorage => "Without /on every association of the volume is deleted. Without /quiet you\nare asked to confirm.",
        CommandKind::AddVolume => "A Linux extension. The copy-on-write provider takes over the block device\nPATH (e.g. /dev/sdb1) and mounts its filesystem at DIR through its volume\nserver, which sees every write. Its shadow copies then need shadow storage:\nsee `vssadmin add shadowstorage`.",
        CommandKind::DeleteVolume => "A Linux extension. Stops serving the volume mounted at DIR; its shadow copies\nand shadow copy storage are deleted. Without /quiet you are asked to confirm.",
        _ => return None,
    })
}

/// `--json` renderers: pretty JSON with the `vss-types` serde field names,
/// one top-level object per command, ending with a newline.
pub mod json {
    use serde::Serialize;
    use vss_types::{
        Guid, ProviderInfo, RevertStatus, ShadowProp, SoftwareVolumeInfo, VolumeInfo, VssError,
        WriterStatus,
    };

    use super::{by_creation, ShadowStorageInfo};

    fn pretty<T: Serialize>(v: &T) -> String {
        let mut s = serde_json::to_string_pretty(v).expect("plain data serializes");
        s.push('\n');
        s
    }

    /// `{"writers": [WriterStatus…]}`.
    pub fn writers(writers: &[WriterStatus]) -> String {
        #[derive(Serialize)]
        struct J<'a> {
            writers: &'a [WriterStatus],
        }
        pretty(&J { writers })
    }

    /// `{"providers": [ProviderInfo…]}`.
    pub fn providers(providers: &[ProviderInfo]) -> String {
        #[derive(Serialize)]
        struct J<'a> {
            providers: &'a [ProviderInfo],
        }
        pretty(&J { providers })
    }

    /// `{"shadows": [ShadowProp…]}`, in creation order.
    pub fn shadows(shadows: &[ShadowProp]) -> String {
        #[derive(Serialize)]
        struct J<'a> {
            shadows: Vec<&'a ShadowProp>,
        }
        pretty(&J {
            shadows: by_creation(shadows),
        })
    }

    /// `{"volumes": [VolumeInfo…]}`.
    pub fn volumes(volumes: &[VolumeInfo]) -> String {
        #[derive(Serialize)]
        struct J<'a> {
            volumes: &'a [VolumeInfo],
        }
        pretty(&J { volumes })
    }

    /// `{"shadow_storage": [ShadowStorageInfo…]}`.
    pub fn shadow_storage(assocs: &[ShadowStorageInfo]) -> String {
        #[derive(Serialize)]
        struct J<'a> {
            shadow_storage: &'a [ShadowStorageInfo],
        }
        pretty(&J {
            shadow_storage: assocs,
        })
    }

    /// `{"volume": "…", "shadow": ShadowProp}`.
    pub fn created(volume: &str, shadow: &ShadowProp) -> String {
        #[derive(Serialize)]
        struct J<'a> {
            volume: &'a str,
            shadow: &'a ShadowProp,
        }
        pretty(&J { volume, shadow })
    }

    /// `{"deleted": ["{…}"…]}`.
    pub fn deleted(ids: &[Guid]) -> String {
        #[derive(Serialize)]
        struct J<'a> {
            deleted: &'a [Guid],
        }
        pretty(&J { deleted: ids })
    }

    /// `{"shadow": "{…}", "exposed_at": "…"}`.
    pub fn exposed(shadow: Guid, path: &str) -> String {
        #[derive(Serialize)]
        struct J<'a> {
            shadow: Guid,
            exposed_at: &'a str,
        }
        pretty(&J {
            shadow,
            exposed_at: path,
        })
    }

    /// `{"volume": SoftwareVolumeInfo}` (`add volume`).
    pub fn volume_added(volume: &SoftwareVolumeInfo) -> String {
        #[derive(Serialize)]
        struct J<'a> {
            volume: &'a SoftwareVolumeInfo,
        }
        pretty(&J { volume })
    }

    /// `{"shadow": "{…}", "revert": "started"}`.
    pub fn revert_started(shadow: Guid) -> String {
        #[derive(Serialize)]
        struct J {
            shadow: Guid,
            revert: &'static str,
        }
        pretty(&J {
            shadow,
            revert: "started",
        })
    }

    /// `{"reverts": [RevertStatus…]}`, oldest first.
    pub fn reverts(reverts: &[RevertStatus]) -> String {
        #[derive(Serialize)]
        struct J<'a> {
            reverts: Vec<&'a RevertStatus>,
        }
        let mut v: Vec<&RevertStatus> = reverts.iter().collect();
        v.sort_by_key(|r| r.started_unix);
        pretty(&J { reverts: v })
    }

    /// `{"ok": true}` for commands with nothing else to say.
    pub fn ok() -> String {
        #[derive(Serialize)]
        struct J {
            ok: bool,
        }
        pretty(&J { ok: true })
    }

    /// `{"error": {"hresult": "0x…", "code": "SYMBOL", "message": …, "hint": …}}`;
    /// `hint` is null when there is none.
    pub fn error(e: &VssError) -> String {
        #[derive(Serialize)]
        struct Inner<'a> {
            hresult: String,
            code: &'static str,
            message: &'a str,
            hint: Option<&'a str>,
        }
        #[derive(Serialize)]
        struct J<'a> {
            error: Inner<'a>,
        }
        let hint = e.hint();
        pretty(&J {
            error: Inner {
                hresult: format!("0x{:08X}", e.code.hresult()),
                code: e.code.symbol(),
                message: &e.message,
                hint: (!hint.is_empty()).then_some(hint),
            },
        })
    }
}
