//! The documents' XML form: round trips, the examples of docs/DOCUMENTS.md,
//! and refusal of malformed, hostile and invalid input.

use std::collections::HashSet;

use proptest::prelude::*;
use vss_types::documents::{MAX_DEPTH, MAX_DOCUMENT_BYTES};
use vss_types::*;

const DOCS: &str = include_str!("../../../docs/DOCUMENTS.md");

fn xml_blocks() -> Vec<&'static str> {
    DOCS.split("```xml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect()
}

fn assert_invalid<T: std::fmt::Debug>(r: VssResult<T>, needle: &str) {
    let e = r.expect_err("document must be refused");
    assert_eq!(e.code, VssCode::InvalidXmlDocument, "{e}");
    assert_eq!(e.code.hresult(), 0x8004_2311);
    assert!(
        e.message.to_lowercase().contains(&needle.to_lowercase()),
        "message {:?} lacks {needle:?}",
        e.message
    );
}

#[test]
fn documented_examples_parse() {
    let blocks = xml_blocks();
    assert_eq!(blocks.len(), 2);
    let wmd = WriterMetadata::from_xml(blocks[0]).unwrap();
    assert_eq!(wmd.writer_name, "SQLite Writer");
    assert_eq!(wmd.components.len(), 2);
    assert_eq!(wmd.components[0].caption, "Inventory & stock");
    assert_eq!(
        wmd.backup_schema,
        BackupSchema::DIFFERENTIAL | BackupSchema::COPY
    );
    assert_eq!(WriterMetadata::from_xml(&wmd.to_xml()).unwrap(), wmd);

    let bcd = BackupComponents::from_xml(blocks[1]).unwrap();
    assert_eq!(bcd.writers[0].components.len(), 2);
    let set = bcd.snapshot_set.as_ref().unwrap();
    assert!(set.snapshots[0]
        .original_volume_name
        .starts_with("\\\\?\\Volume{"));
    assert_eq!(BackupComponents::from_xml(&bcd.to_xml()).unwrap(), bcd);
}

/// The fragment of a Windows NTDS writer document the reference quotes,
/// wrapped in our root, reads as written.
#[test]
fn windows_style_database_fragment() {
    let x = r#"<WRITER_METADATA xmlns="x-schema:#VssWriterMetadataInfo" version="1.0">
<IDENTIFICATION writerId="{b2014c9e-8711-4c5c-a5a9-3cf384484757}" instanceId="{00000000-0000-0000-0000-000000000001}" friendlyName="NTDS"/>
<BACKUP_LOCATIONS>
    <DATABASE logicalPath="C:_Windows_NTDS" componentName="ntds" caption=""
              restoreMetadata="no" notifyOnBackupComplete="no" selectable="no"
              selectableForRestore="no" componentFlags="3">
    <DATABASE_FILES    path="C:\Windows\NTDS" filespec="ntds.dit" filespecBackupType="3855"/>
    <DATABASE_LOGFILES path="C:\Windows\NTDS" filespec="edb*.log" filespecBackupType="3855"/>
    <DATABASE_LOGFILES path="C:\Windows\NTDS" filespec="edb.chk"  filespecBackupType="3855"/>
    </DATABASE>
</BACKUP_LOCATIONS>
</WRITER_METADATA>"#;
    let m = WriterMetadata::from_xml(x).unwrap();
    let c = &m.components[0];
    assert_eq!(c.component_type, ComponentType::Database);
    assert_eq!(
        c.flags,
        ComponentFlags::BACKUP_RECOVERY | ComponentFlags::APP_ROLLBACK_RECOVERY
    );
    assert_eq!(c.database_logfiles.len(), 2);
    assert_eq!(c.database_files[0].path, "C:\\Windows\\NTDS");
}

fn wmd_header(body: &str) -> String {
    format!(
        "<WRITER_METADATA xmlns=\"x-schema:#VssWriterMetadataInfo\" version=\"1.0\">\
         <IDENTIFICATION writerId=\"{{5e1c3a0d-2b7f-4c55-9a0e-3d1f8e6b2a41}}\" \
         instanceId=\"{{0f9d7c6b-5a4e-4d3c-8b2a-1e0f9d8c7b6a}}\" friendlyName=\"w\"/>{body}</WRITER_METADATA>"
    )
}

#[test]
fn hostile_documents_are_refused() {
    let laughs = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<WRITER_METADATA xmlns="x-schema:#VssWriterMetadataInfo" version="1.0">&lol9;</WRITER_METADATA>"#;
    assert_invalid(WriterMetadata::from_xml(laughs), "DOCTYPE");
    assert_invalid(
        BackupComponents::from_xml(&laughs.replace("WRITER_METADATA", "BACKUP_COMPONENTS")),
        "DOCTYPE",
    );
    let xxe = "<!DOCTYPE r SYSTEM \"file:///etc/shadow\"><BACKUP_COMPONENTS/>";
    assert_invalid(BackupComponents::from_xml(xxe), "DOCTYPE");
    // An undeclared entity without a DTD is refused too.
    let x = wmd_header("").replace("friendlyName=\"w\"", "friendlyName=\"&lol9;\"");
    assert_invalid(WriterMetadata::from_xml(&x), "friendlyName");

    // Oversize: a valid document padded past the limit.
    let mut big = wmd_header("");
    big.push_str(&" ".repeat(MAX_DOCUMENT_BYTES));
    assert_invalid(WriterMetadata::from_xml(&big), "limit");

    // Deep nesting is caught while reading, long before the end tags.
    let deep = wmd_header(&"<BACKUP_LOCATIONS>".repeat(100_000));
    assert_invalid(WriterMetadata::from_xml(&deep), "nested");
    let ok_depth = wmd_header(&format!(
        "{}{}",
        "<X>".repeat(MAX_DEPTH - 1),
        "</X>".repeat(MAX_DEPTH - 1)
    ));
    // Within the depth limit the document is refused for the unknown
    // element instead.
    assert_invalid(WriterMetadata::from_xml(&ok_depth), "may not hold <X>");
}

#[test]
fn invalid_documents_say_what_is_wrong() {
    let good = wmd_header("");
    WriterMetadata::from_xml(&good).unwrap();
    let cases: &[(&str, &str, &str)] = &[
        ("<WRITER_METADATA ", "<WRITER_METADATA2 ", "root element"),
        ("version=\"1.0\"", "version=\"2.0\"", "not supported"),
        ("version=\"1.0\"", "version=\"one\"", "MAJOR.MINOR"),
        ("version=\"1.0\"", "", "version"),
        ("xmlns=\"x-schema:#VssWriterMetadataInfo\"", "", "xmlns"),
        (
            "{5e1c3a0d-2b7f-4c55-9a0e-3d1f8e6b2a41}",
            "{not-a-guid}",
            "not a GUID",
        ),
        (
            "friendlyName=\"w\"",
            "friendlyName=\"\"",
            "writer name is empty",
        ),
        ("friendlyName=\"w\"", "friendlyName=\"a&#1;\"", "U+0001"),
        (
            "friendlyName=\"w\"",
            "friendlyName=\"a&#10;b\"",
            "control character",
        ),
        (
            "friendlyName=\"w\"",
            "friendlyName=\"w\" usage=\"sometimes\"",
            "usage",
        ),
        (
            "friendlyName=\"w\"",
            "friendlyName=\"w\" colour=\"red\"",
            "unknown attribute colour",
        ),
        ("<IDENTIFICATION ", "<IDENTIFICATION2 ", "may not hold"),
        ("\"/>", "\">text</IDENTIFICATION>", "may only hold elements"),
        ("</WRITER_METADATA>", "", "truncated"),
    ];
    for (from, to, needle) in cases {
        assert!(good.contains(from), "{from}");
        assert_invalid(
            WriterMetadata::from_xml(&good.replacen(from, to, 1)),
            needle,
        );
    }
    let two_ids = good.replace("/></WRITER", "/><IDENTIFICATION writerId=\"{5e1c3a0d-2b7f-4c55-9a0e-3d1f8e6b2a41}\" instanceId=\"{5e1c3a0d-2b7f-4c55-9a0e-3d1f8e6b2a41}\" friendlyName=\"x\"/></WRITER");
    assert_invalid(WriterMetadata::from_xml(&two_ids), "twice");

    let comp = |attrs: &str, body: &str| {
        wmd_header(&format!(
            "<BACKUP_LOCATIONS><{attrs}>{body}</{}></BACKUP_LOCATIONS>",
            attrs.split(' ').next().unwrap()
        ))
    };
    let fg = "FILE_GROUP logicalPath=\"a\\b\" componentName=\"c\"";
    let db = "DATABASE componentName=\"d\"";
    WriterMetadata::from_xml(&comp(fg, "<FILE_LIST path=\"/x\" filespec=\"*\"/>")).unwrap();
    let bad: &[(&str, &str, &str)] = &[
        (
            db,
            "<DATABASE_FILES path=\"/x\" filespec=\"*\" recursive=\"yes\"/>",
            "recursive",
        ),
        (
            db,
            "<DATABASE_LOGFILES path=\"/x\" filespec=\"*\" alternatePath=\"/y\"/>",
            "alternate path",
        ),
        (db, "<FILE_LIST path=\"/x\" filespec=\"*\"/>", "file list"),
        (
            fg,
            "<DATABASE_FILES path=\"/x\" filespec=\"*\"/>",
            "database files",
        ),
        (
            fg,
            "<FILE_LIST path=\"/x\" filespec=\"*\" recursive=\"maybe\"/>",
            "yes or no",
        ),
        (fg, "<FILE_LIST path=\"\" filespec=\"*\"/>", "path"),
        (
            fg,
            "<FILE_LIST path=\"/x\" filespec=\"*\" filespecBackupType=\"65536000\"/>",
            "bits",
        ),
        (
            fg,
            "<FILE_LIST path=\"/x\" filespec=\"*\" filespecBackupType=\"-1\"/>",
            "decimal",
        ),
        ("FILE_GROUP componentName=\"\"", "", "empty name"),
        ("FILE_GROUP componentName=\"a\\b\"", "", "backslash"),
        (
            "FILE_GROUP logicalPath=\"\\a\" componentName=\"b\"",
            "",
            "empty segment",
        ),
        (
            "FILE_GROUP componentName=\"b\" componentFlags=\"8\"",
            "",
            "bits",
        ),
        ("FILE_GROUP logicalPath=\"a\"", "", "componentName"),
    ];
    for (attrs, body, needle) in bad {
        assert_invalid(WriterMetadata::from_xml(&comp(attrs, body)), needle);
    }
    let dup = wmd_header(
        "<BACKUP_LOCATIONS><FILE_GROUP componentName=\"c\"/><DATABASE componentName=\"c\"/></BACKUP_LOCATIONS>",
    );
    assert_invalid(WriterMetadata::from_xml(&dup), "twice");
}

#[test]
fn newer_minor_versions_are_read_leniently() {
    let x = wmd_header("<FUTURE_THING a=\"b\"/>")
        .replace("version=\"1.0\"", "version=\"1.3\" futureAttr=\"x\"")
        .replace("friendlyName=\"w\"", "friendlyName=\"w\" newAttr=\"y\"");
    let m = WriterMetadata::from_xml(&x).unwrap();
    assert_eq!(m.writer_name, "w");
    // Known attributes are still checked.
    assert_invalid(
        WriterMetadata::from_xml(&x.replace("{5e1c3a0d", "{zzzzzzzz")),
        "GUID",
    );
}

#[test]
fn bcd_refusals() {
    let good = xml_blocks()[1].to_owned();
    let cases: &[(&str, &str, &str)] = &[
        ("backupType=\"full\" ", "", "backupType"),
        ("backupType=\"full\"", "backupType=\"weekly\"", "full|"),
        (
            "componentType=\"database\"",
            "componentType=\"undefined\"",
            "database|filegroup",
        ),
        (
            "backupSucceeded=\"yes\"",
            "backupSucceeded=\"1\"",
            "yes or no",
        ),
        (
            "componentName=\"config\"",
            "componentName=\"inventory\" logicalPath2=\"\"",
            "unknown attribute",
        ),
        (
            "logicalPath=\"\" componentName=\"config\"",
            "logicalPath=\"Databases\" componentName=\"inventory\"",
            "twice",
        ),
        (
            "<BACKUP_METADATA>",
            "<BACKUP_METADATA><x/>",
            "may only hold text",
        ),
        ("context=\"0\"", "context=\"0x1d\"", "decimal"),
        ("snapshotId=\"{1b2c", "snapshotId=\"{xb2c", "GUID"),
        (
            "originalVolumeName=\"\\\\?\\Volume{6f1d2e3c-4b5a-5968-8776-a5b4c3d2e1f0}\\\"",
            "originalVolumeName=\"\"",
            "original volume name",
        ),
        ("checkpointed", "\u{7}", "U+0007"),
        ("checkpointed", "&#x85;", "control character"),
    ];
    for (from, to, needle) in cases {
        assert!(good.contains(from), "{from}");
        assert_invalid(
            BackupComponents::from_xml(&good.replacen(from, to, 1)),
            needle,
        );
    }
}

#[test]
fn every_truncation_is_refused() {
    for x in xml_blocks() {
        let end = x.trim_end().len();
        for cut in (0..end).filter(|i| x.is_char_boundary(*i)) {
            let t = &x[..cut];
            let e = WriterMetadata::from_xml(t).unwrap_err();
            assert_eq!(e.code, VssCode::InvalidXmlDocument, "cut at {cut}");
            let e = BackupComponents::from_xml(t).unwrap_err();
            assert_eq!(e.code, VssCode::InvalidXmlDocument, "cut at {cut}");
        }
    }
}

// ---- property tests -------------------------------------------------------

/// Names: any non-control Unicode, XML's special characters often.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[<>&\"' a-zA-Z0-9\\\\]{1,10}",
        "\\PC{1,10}",
        "[<>&\"'\\PC]{1,6}",
    ]
}

fn component_name() -> impl Strategy<Value = String> {
    name().prop_map(|s| s.replace('\\', "/"))
}

fn logical_path() -> impl Strategy<Value = String> {
    prop::collection::vec(component_name(), 0..3).prop_map(|v| v.join("\\"))
}

fn opt_name() -> impl Strategy<Value = Option<String>> {
    prop::option::of(name())
}

/// Free text: names plus tab, LF and CR, possibly empty or blank.
fn text() -> impl Strategy<Value = String> {
    prop_oneof!["[\\PC\t\n\r<>&]{0,20}", "[ \t\r\n]{0,4}"]
}

fn guid() -> impl Strategy<Value = Guid> {
    any::<u128>().prop_map(Guid::from_u128)
}

fn file_desc() -> impl Strategy<Value = WmFileDesc> {
    (name(), name(), any::<bool>(), opt_name(), any::<u32>()).prop_map(|(p, f, r, alt, mask)| {
        WmFileDesc {
            path: p,
            filespec: f,
            recursive: r,
            alternate_location: alt,
            backup_type_mask: FileSpecBackupType::from_bits_truncate(mask),
        }
    })
}

fn dependency() -> impl Strategy<Value = ComponentDependency> {
    (guid(), logical_path(), component_name()).prop_map(|(w, p, n)| ComponentDependency {
        writer_id: w,
        logical_path: p,
        component_name: n,
    })
}

fn wm_component() -> impl Strategy<Value = WmComponent> {
    (
        prop::sample::select(ComponentType::ALL),
        logical_path(),
        component_name(),
        prop::option::of(name()),
        any::<[bool; 4]>(),
        any::<u32>(),
        prop::collection::vec(file_desc(), 0..3),
        prop::collection::vec(file_desc(), 0..3),
        prop::collection::vec(dependency(), 0..2),
    )
        .prop_map(|(ct, lp, n, cap, b, flags, files, logs, deps)| {
            let mut c = WmComponent::new(ct, lp, n)
                .caption(cap.unwrap_or_default())
                .restore_metadata(b[0])
                .notify_on_backup_complete(b[1])
                .selectable(b[2])
                .selectable_for_restore(b[3])
                .flags(ComponentFlags::from_bits_truncate(flags));
            c.dependencies = deps;
            match ct {
                ComponentType::FileGroup => c.files = files,
                ComponentType::Database => {
                    let plain = |mut f: WmFileDesc| {
                        f.recursive = false;
                        f.alternate_location = None;
                        f
                    };
                    c.database_files = files.into_iter().map(plain).collect();
                    c.database_logfiles = logs.into_iter().map(plain).collect();
                }
            }
            c
        })
}

fn mapping() -> impl Strategy<Value = AlternateLocationMapping> {
    (name(), name(), any::<bool>(), name()).prop_map(|(p, f, r, a)| AlternateLocationMapping {
        path: p,
        filespec: f,
        recursive: r,
        alternate_path: a,
    })
}

fn restore_method() -> impl Strategy<Value = RestoreMethodInfo> {
    (
        prop::sample::select(RestoreMethod::ALL),
        opt_name(),
        prop::option::of(text()),
        prop::sample::select(WriterRestore::ALL),
        any::<bool>(),
    )
        .prop_map(|(m, s, u, w, r)| RestoreMethodInfo {
            method: m,
            service: s,
            user_procedure: u,
            writer_restore: w,
            reboot_required: r,
        })
}

fn wmd() -> impl Strategy<Value = WriterMetadata> {
    (
        name(),
        guid(),
        guid(),
        prop::sample::select(UsageType::ALL),
        prop::sample::select(SourceType::ALL),
        prop::option::of(restore_method()),
        any::<u32>(),
        prop::collection::vec((name(), name(), any::<bool>()), 0..3),
        prop::collection::vec(mapping(), 0..3),
        prop::collection::vec(wm_component(), 0..5),
    )
        .prop_map(|(n, w, i, u, s, r, schema, ex, maps, comps)| {
            let mut seen = HashSet::new();
            let components = comps
                .into_iter()
                .filter(|c| seen.insert((c.logical_path.clone(), c.name.clone())))
                .collect();
            WriterMetadata {
                writer_name: n,
                writer_id: w,
                instance_id: i,
                usage: u,
                source: s,
                restore_method: r,
                backup_schema: BackupSchema::from_bits_truncate(schema),
                excluded_files: ex
                    .into_iter()
                    .map(|(path, filespec, recursive)| ExcludeFiles {
                        path,
                        filespec,
                        recursive,
                    })
                    .collect(),
                alternate_location_mappings: maps,
                components,
            }
        })
}

fn bcd_component() -> impl Strategy<Value = BcdComponent> {
    (
        (
            prop::sample::select(ComponentType::ALL),
            logical_path(),
            component_name(),
            prop::option::of(any::<bool>()),
        ),
        prop::collection::vec(prop::option::of(text()), 8),
        (
            prop::sample::select(RestoreTarget::ALL),
            any::<bool>(),
            prop::sample::select(FileRestoreStatus::ALL),
        ),
        prop::collection::vec((logical_path(), component_name()), 0..2),
        prop::collection::vec(mapping(), 0..2),
    )
        .prop_map(|((ct, lp, n, ok), t, (rt, sel, frs), subs, maps)| {
            let mut c = BcdComponent::new(ct, lp, n);
            c.backup_succeeded = ok;
            c.prepare_for_backup_failure_message = t[0].clone();
            c.post_snapshot_failure_message = t[1].clone();
            c.pre_restore_failure_message = t[2].clone();
            c.post_restore_failure_message = t[3].clone();
            c.backup_metadata = t[4].clone();
            c.restore_metadata = t[5].clone();
            c.backup_stamp = t[6].clone();
            c.previous_backup_stamp = t[7].clone();
            c.restore_target = rt;
            c.selected_for_restore = sel;
            c.file_restore_status = frs;
            c.restore_subcomponents = subs
                .into_iter()
                .map(|(logical_path, name)| RestoreSubcomponent { logical_path, name })
                .collect();
            c.alternate_location_mappings = maps;
            c
        })
}

fn snapshot_set() -> impl Strategy<Value = SnapshotSetDescription> {
    (
        guid(),
        any::<u32>(),
        prop::collection::vec((guid(), name(), prop::option::of(name())), 0..4),
    )
        .prop_map(|(id, ctx, shots)| SnapshotSetDescription {
            snapshot_set_id: id,
            context: ctx,
            snapshots: shots
                .into_iter()
                .map(|(s, v, d)| SnapshotDescription {
                    snapshot_id: s,
                    original_volume_name: v,
                    device_object: d.unwrap_or_default(),
                })
                .collect(),
        })
}

fn bcd() -> impl Strategy<Value = BackupComponents> {
    (
        prop::sample::select(BackupType::ALL),
        any::<[bool; 3]>(),
        prop::collection::vec(
            (guid(), guid(), prop::collection::vec(bcd_component(), 0..4)),
            0..3,
        ),
        prop::option::of(snapshot_set()),
    )
        .prop_map(|(bt, b, ws, set)| BackupComponents {
            backup_type: bt,
            select_components: b[0],
            bootable_system_state: b[1],
            partial_file_support: b[2],
            writers: ws
                .into_iter()
                .map(|(w, i, comps)| {
                    let mut seen = HashSet::new();
                    WriterComponents {
                        writer_id: w,
                        instance_id: i,
                        components: comps
                            .into_iter()
                            .filter(|c| seen.insert((c.logical_path.clone(), c.name.clone())))
                            .collect(),
                    }
                })
                .collect(),
            snapshot_set: set,
        })
}

fn check_refused_or_ok<T>(r: VssResult<T>) {
    if let Err(e) = r {
        assert_eq!(e.code, VssCode::InvalidXmlDocument, "{e}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn wmd_round_trips(m in wmd()) {
        m.validate().unwrap();
        let x = m.to_xml();
        prop_assert_eq!(WriterMetadata::from_xml(&x).unwrap(), m);
    }

    #[test]
    fn bcd_round_trips(b in bcd()) {
        b.validate().unwrap();
        let x = b.to_xml();
        prop_assert_eq!(BackupComponents::from_xml(&x).unwrap(), b);
    }

    #[test]
    fn random_bytes_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let s = String::from_utf8_lossy(&bytes);
        assert_invalid(WriterMetadata::from_xml(&s), "");
        assert_invalid(BackupComponents::from_xml(&s), "");
    }

    #[test]
    fn random_markup_is_refused(s in "[<>/=\"'&;!?a-zA-Z_ \\[\\]-]{0,200}") {
        assert_invalid(WriterMetadata::from_xml(&s), "");
        assert_invalid(BackupComponents::from_xml(&s), "");
    }

    #[test]
    fn truncated_documents_are_refused(m in wmd(), b in bcd(), cut in any::<prop::sample::Index>()) {
        let x = m.to_xml();
        let end = x.trim_end().len();
        let mut at = cut.index(end);
        while !x.is_char_boundary(at) { at -= 1; }
        assert_invalid(WriterMetadata::from_xml(&x[..at]), "");
        let x = b.to_xml();
        let end = x.trim_end().len();
        let mut at = cut.index(end);
        while !x.is_char_boundary(at) { at -= 1; }
        assert_invalid(BackupComponents::from_xml(&x[..at]), "");
    }

    #[test]
    fn garbled_documents_never_panic(
        m in wmd(),
        b in bcd(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        for x in [m.to_xml(), b.to_xml()] {
            let mut bytes = x.into_bytes();
            for (i, v) in &edits {
                let at = i.index(bytes.len());
                bytes[at] = *v;
            }
            let s = String::from_utf8_lossy(&bytes);
            check_refused_or_ok(WriterMetadata::from_xml(&s));
            check_refused_or_ok(BackupComponents::from_xml(&s));
        }
    }
}
