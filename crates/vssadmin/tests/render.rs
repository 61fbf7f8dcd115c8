//! Snapshot tests pinning every renderer's exact output.

use insta::assert_snapshot;
use jiff::tz::{self, TimeZone};
use vss_types::provider::volume_name;
use vss_types::{
    attr, Guid, ProviderInfo, ProviderType, RevertState, RevertStatus, ShadowProp, ShadowState,
    SnapshotContext, SoftwareVolumeInfo, VolumeInfo, VssCode, VssError, WriterKind, WriterState,
    WriterStatus,
};
use vssadmin::render::{self, json};
use vssadmin::{CommandKind, ShadowStorageInfo};

const BTRFS: Guid = Guid::from_u128(0xb5946137_7b9f_4925_af80_51abd60b20d5);
const SIM: Guid = Guid::from_u128(0x11111111_2222_4333_8444_555555555555);
const UNKNOWN_PROVIDER: Guid = Guid::from_u128(0x99999999_9999_4999_8999_999999999999);
const VOL_DATA: Guid = Guid::from_u128(0x67a44989_8413_4a7c_a616_79385dae8605);
const VOL_HOME: Guid = Guid::from_u128(0x0c3d2e1f_0000_4000_8000_000000000001);
const SET_A: Guid = Guid::from_u128(0x43dd2d4b_3a58_487a_842d_564143d0501f);
const SET_B: Guid = Guid::from_u128(0x5e7e7e7e_1111_4222_8333_444444444444);

/// 2021-09-10 17:49:26 UTC.
const T0: i64 = 1_631_296_166_000;

fn writers() -> Vec<WriterStatus> {
    vec![
        WriterStatus {
            name: "PostgreSQL Writer".into(),
            writer_id: Guid::from_u128(0x76fe1ac4_15f7_4bcd_987e_8e1acb462fb7),
            instance_id: Guid::from_u128(0xe0ad4b68_8938_4be5_9b88_4c74df2b2d65),
            state: WriterState::Stable,
            last_error: VssCode::Ok,
            last_error_message: None,
            kind: WriterKind::Bus,
            pid: Some(1234),
            uid: Some(0),
            timeout_secs: 60,
        },
        WriterStatus {
            name: "sqlite".into(),
            writer_id: Guid::from_u128(0x66841cd4_6ded_4f4b_8f17_fd23f8ddc3de),
            instance_id: Guid::from_u128(0x6162e336_7448_4371_93a7_29581512b103),
            state: WriterState::FailedAtFreeze,
            last_error: VssCode::WriterErrorTimeout,
            last_error_message: Some("did not reach Thaw within 60 s".into()),
            kind: WriterKind::ExecHook,
            pid: None,
            uid: None,
            timeout_secs: 60,
        },
        WriterStatus {
            name: "redis".into(),
            writer_id: Guid::from_u128(0x0a0a0a0a_0b0b_4c0c_8d0d_0e0e0e0e0e0e),
            instance_id: Guid::from_u128(0x1a1a1a1a_1b1b_4c1c_8d1d_1e1e1e1e1e1e),
            state: WriterState::WaitingForBackupComplete,
            last_error: VssCode::Ok,
            last_error_message: None,
            kind: WriterKind::Bus,
            pid: Some(99),
            uid: Some(1000),
            timeout_secs: 30,
        },
    ]
}

fn providers() -> Vec<ProviderInfo> {
    vec![
        ProviderInfo {
            name: "vss btrfs provider".into(),
            provider_type: ProviderType::System,
            provider_id: BTRFS,
            version: "1.0.0".into(),
            supports: "btrfs".into(),
        },
        ProviderInfo {
            name: "vss simulated provider".into(),
            provider_type: ProviderType::Software,
            provider_id: SIM,
            version: "0.1.0".into(),
            supports: String::new(),
        },
    ]
}

fn shadow(
    n: u128,
    set: Guid,
    count: u32,
    vol: (&str, Guid),
    provider: Guid,
    at: i64,
) -> ShadowProp {
    let ctx = SnapshotContext::ClientAccessibleWriters;
    ShadowProp {
        shadow_id: Guid::from_u128(0xeef18c41_c6bc_40bb_9863_549124900000 + n),
        set_id: set,
        count,
        device_object: format!("/var/lib/vss/snapshots/{}", 100 + n),
        original_volume: vol.0.into(),
        original_volume_name: volume_name(vol.1),
        originating_machine: "host.example.com".into(),
        service_machine: "host.example.com".into(),
        exposed_name: None,
        exposed_path: None,
        provider_id: provider,
        context: ctx,
        attributes: ctx.attributes() | attr::DIFFERENTIAL | attr::AUTORECOVER,
        created_unix_ms: at,
        state: ShadowState::Created,
        hold_micros: 12_345,
        lost_reason: None,
    }
}

/// Two sets given out of creation order: set B (newer, one copy, exposed,
/// unknown provider) first, then set A's two copies, one of them lost.
fn shadows() -> Vec<ShadowProp> {
    let mut b = shadow(
        3,
        SET_B,
        1,
        ("/home", VOL_HOME),
        UNKNOWN_PROVIDER,
        T0 + 3_600_000,
    );
    b.exposed_name = Some("/mnt/snap".into());
    b.attributes |= attr::EXPOSED_LOCALLY;
    b.hold_micros = 999;
    let a1 = shadow(1, SET_A, 2, ("/mnt/data", VOL_DATA), BTRFS, T0);
    let mut a2 = shadow(2, SET_A, 2, ("", VOL_HOME), SIM, T0 + 1);
    a2.state = ShadowState::Lost;
    a2.lost_reason = Some("subvolume deleted outside vss".into());
    a2.hold_micros = 0;
    vec![b, a1, a2]
}

fn volumes() -> Vec<VolumeInfo> {
    vec![
        VolumeInfo {
            mount_point: "/mnt/data".into(),
            volume_name: volume_name(VOL_DATA),
            volume_guid: VOL_DATA,
            fs_type: "btrfs".into(),
            device: "/dev/loop3".into(),
            provider: Some("vss btrfs provider".into()),
        },
        VolumeInfo {
            mount_point: "/boot".into(),
            volume_name: volume_name(VOL_HOME),
            volume_guid: VOL_HOME,
            fs_type: "ext4".into(),
            device: "/dev/sda1".into(),
            provider: None,
        },
    ]
}

fn storage() -> Vec<ShadowStorageInfo> {
    vec![
        ShadowStorageInfo {
            for_volume: "/mnt/data".into(),
            for_volume_name: volume_name(VOL_DATA),
            on_volume: "/mnt/data".into(),
            on_volume_name: volume_name(VOL_DATA),
            used_bytes: 23_729_694_310,
            allocated_bytes: 24_159_191_040,
            max_bytes: Some(25_447_809_024),
            volume_size_bytes: 508_956_180_480,
        },
        ShadowStorageInfo {
            for_volume: "/home".into(),
            for_volume_name: volume_name(VOL_HOME),
            on_volume: "/mnt/data".into(),
            on_volume_name: volume_name(VOL_DATA),
            used_bytes: 0,
            allocated_bytes: 671_088_640,
            max_bytes: None,
            volume_size_bytes: 508_956_180_480,
        },
    ]
}

fn software_volumes() -> Vec<SoftwareVolumeInfo> {
    vec![
        SoftwareVolumeInfo {
            volume_id: VOL_DATA,
            device: "/dev/sdb1".into(),
            mount_point: "/srv/data".into(),
            fs_type: "ext4".into(),
            size_bytes: 10_737_418_240,
            serving: true,
            loop_device: Some("/dev/loop7".into()),
        },
        SoftwareVolumeInfo {
            volume_id: VOL_HOME,
            device: "/var/lib/images/home.img".into(),
            mount_point: "/home".into(),
            fs_type: "xfs".into(),
            size_bytes: 524_288_000,
            serving: false,
            loop_device: None,
        },
    ]
}

/// Given newest first: the renderers list them oldest first.
fn reverts() -> Vec<RevertStatus> {
    let secs = T0 / 1000;
    vec![
        RevertStatus {
            shadow_id: Guid::from_u128(0xeef18c41_c6bc_40bb_9863_549124900003),
            for_volume: "/home".into(),
            state: RevertState::Failed {
                message: "I/O error reading shadow storage on /srv/data".into(),
            },
            total_chunks: 2048,
            done_chunks: 17,
            started_unix: secs + 7200,
        },
        RevertStatus {
            shadow_id: Guid::from_u128(0xeef18c41_c6bc_40bb_9863_549124900002),
            for_volume: "/srv/data".into(),
            state: RevertState::Completed,
            total_chunks: 0,
            done_chunks: 0,
            started_unix: secs + 3600,
        },
        RevertStatus {
            shadow_id: Guid::from_u128(0xeef18c41_c6bc_40bb_9863_549124900001),
            for_volume: "/srv/data".into(),
            state: RevertState::Running,
            total_chunks: 163_840,
            done_chunks: 69_632,
            started_unix: secs,
        },
    ]
}

fn utc() -> TimeZone {
    TimeZone::UTC
}

#[test]
fn header() {
    assert_snapshot!(render::with_header(&render::list_writers(&writers()[..1])));
}

#[test]
fn list_writers() {
    assert_snapshot!(render::list_writers(&writers()));
}

#[test]
fn list_providers() {
    assert_snapshot!(render::list_providers(&providers()));
}

#[test]
fn list_shadows() {
    let names = render::provider_lookup(&providers());
    assert_snapshot!(render::list_shadows(&shadows(), &utc(), &names));
}

#[test]
fn list_shadows_other_zone() {
    let names = render::provider_lookup(&providers());
    let tz = TimeZone::fixed(tz::offset(-7));
    assert_snapshot!(render::list_shadows(&shadows()[1..2], &tz, &names));
}

#[test]
fn format_time() {
    assert_eq!(render::format_time(T0, &utc()), "9/10/2021 5:49:26 PM");
    assert_eq!(render::format_time(0, &utc()), "1/1/1970 12:00:00 AM");
    assert_eq!(
        render::format_time(1_700_000_000_000, &utc()),
        "11/14/2023 10:13:20 PM"
    );
}

#[test]
fn empty_lists() {
    let names = render::provider_lookup(&[]);
    for out in [
        render::list_writers(&[]),
        render::list_providers(&[]),
        render::list_shadows(&[], &utc(), &names),
        render::list_volumes(&[]),
        render::list_shadow_storage(&[]),
        render::delete_shadows(0),
        render::shadow_storage_deleted(0),
        render::query_reverts(&[], &utc()),
    ] {
        assert_eq!(out, "No items found that satisfy the query.\n");
    }
}

#[test]
fn create_shadow() {
    assert_snapshot!(render::create_shadow("/mnt/data", &shadows()[1]));
}

#[test]
fn list_volumes() {
    assert_snapshot!(render::list_volumes(&volumes()));
}

#[test]
fn list_shadow_storage() {
    assert_snapshot!(render::list_shadow_storage(&storage()));
}

/// One association of a small volume whose maximum was given as 20%:
/// sizes and percentages are of the FOR volume (500 MB here).
#[test]
fn list_shadow_storage_single() {
    let small = ShadowStorageInfo {
        for_volume: "/boot".into(),
        for_volume_name: volume_name(VOL_HOME),
        on_volume: "/srv/data".into(),
        on_volume_name: volume_name(VOL_DATA),
        used_bytes: 1_572_864,
        allocated_bytes: 33_554_432,
        max_bytes: vss_types::MaxSize::Percent(20).resolve(524_288_000),
        volume_size_bytes: 524_288_000,
    };
    assert_snapshot!(render::list_shadow_storage(&[small]));
}

#[test]
fn storage_messages() {
    let id = shadows()[1].shadow_id;
    let out = [
        render::shadow_storage_added(),
        render::shadow_storage_resized(),
        render::delete_shadow_storage_prompt(1),
        "\n".into(),
        render::delete_shadow_storage_prompt(2),
        render::not_deleted(CommandKind::DeleteShadowStorage),
        render::shadow_storage_deleted(1),
        render::shadow_storage_deleted(2),
        render::revert_started(id, Some("/srv/data")),
        render::revert_started(id, None),
    ]
    .concat();
    assert_snapshot!(out);
}

#[test]
fn volume_messages() {
    let v = software_volumes();
    let out = [
        render::volume_added(&v[0]),
        render::volume_added(&v[1]),
        render::delete_volume_prompt("/srv/data"),
        render::not_deleted(CommandKind::DeleteVolume),
        render::volume_deleted("/srv/data"),
        render::delete_shadows_prompt(2),
        render::not_deleted(CommandKind::DeleteShadows),
    ]
    .concat();
    assert_snapshot!(out);
}

#[test]
fn query_reverts() {
    assert_snapshot!(render::query_reverts(&reverts(), &utc()));
}

#[test]
fn json_storage() {
    let out = [
        json::volume_added(&software_volumes()[0]),
        json::revert_started(shadows()[1].shadow_id),
        json::reverts(&reverts()),
        json::shadow_storage(&[]),
        json::reverts(&[]),
    ]
    .concat();
    assert_snapshot!(out);
}

#[test]
fn format_size() {
    let cases = [
        (0, "0 B"),
        (512, "512 B"),
        (1023, "1023 B"),
        (1024, "1.00 KB"),
        (1536, "1.50 KB"),
        (10 * 1024 + 1023, "10.9 KB"),
        (640 << 20, "640 MB"),
        (1023 << 20, "1023 MB"),
        (23_729_694_310, "22.0 GB"),
        (3 << 40, "3.00 TB"),
        (u64::MAX, "15.9 EB"),
    ];
    for (b, want) in cases {
        assert_eq!(render::format_size(b), want, "{b}");
    }
}

#[test]
fn small_messages() {
    let id = shadows()[0].shadow_id;
    let out = [
        render::delete_shadows(1),
        render::delete_shadows(3),
        render::delete_shadows_prompt(3),
        "\n".into(),
        render::delete_shadows_prompt(1),
        "\n".into(),
        render::exposed(id, "/mnt/snap"),
        render::unexposed(id),
        render::shadow_storage_added(),
        render::shadow_storage_resized(),
        render::shadow_storage_deleted(1),
        render::shadow_storage_deleted(2),
    ]
    .concat();
    assert_snapshot!(out);
}

#[test]
fn errors() {
    let parse_err = vssadmin::parse(["create", "shadow", "/fro=/x"]).unwrap_err();
    let invalid = vssadmin::parse(["frob"]).unwrap_err();
    let out = [
        render::error(&VssError::insufficient_storage(
            "/mnt/data",
            "320 MB needed",
        )),
        render::error(&parse_err),
        render::error(&invalid),
        render::error(&VssError::new(
            VssCode::NoSnapshotsImported,
            "nothing to import",
        )),
    ]
    .concat();
    assert_snapshot!(out);
}

#[test]
fn help() {
    let mut out = render::help(None);
    for k in CommandKind::ALL {
        out += "----\n";
        out += &render::help(Some(k));
    }
    assert_snapshot!(out);
}

#[test]
fn json_lists() {
    assert_snapshot!("json_writers", json::writers(&writers()));
    assert_snapshot!("json_providers", json::providers(&providers()));
    assert_snapshot!("json_shadows", json::shadows(&shadows()));
    assert_snapshot!("json_volumes", json::volumes(&volumes()));
    assert_snapshot!("json_shadow_storage", json::shadow_storage(&storage()));
}

#[test]
fn json_results() {
    let s = &shadows()[1];
    let out = [
        json::created("/mnt/data", s),
        json::deleted(&[s.shadow_id, shadows()[2].shadow_id]),
        json::exposed(s.shadow_id, "/mnt/snap"),
        json::ok(),
        json::error(&VssError::insufficient_storage(
            "/mnt/data",
            "320 MB needed",
        )),
        json::error(&VssError::new(VssCode::NoSnapshotsImported, "nothing")),
    ]
    .concat();
    assert_snapshot!(out);
}

#[test]
fn exit_codes() {
    use vssadmin::exit;
    assert_eq!(exit::for_error(&VssError::invalid_arg("x")), exit::BAD_ARGS);
    assert_eq!(
        exit::for_error(&VssError::new(VssCode::AccessDenied, "x")),
        exit::ACCESS_DENIED
    );
    assert_eq!(
        exit::for_error(&VssError::new(VssCode::ProviderVeto, "x")),
        exit::VSS_ERROR
    );
    assert_eq!(
        [
            exit::SUCCESS,
            exit::VSS_ERROR,
            exit::BAD_ARGS,
            exit::NO_SERVICE,
            exit::ACCESS_DENIED
        ],
        [0, 1, 2, 3, 4]
    );
}
