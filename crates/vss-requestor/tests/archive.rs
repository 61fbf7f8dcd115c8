//! The backup archive: round trips through both kinds, damage detection,
//! refusals. Runs unprivileged; as root it also checks owners (and tests
//! an unreadable file from a child process running as nobody).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use vss_requestor::archive::{
    self, Added, ArchiveWriter, EntryKind, ManifestEntry, DATA_DIR, MANIFEST_FILE,
};
use vss_types::{VssCode, VssError};

const LIVE: &str = "/srv/app";

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn set_mtime(p: &Path, sec: i64, nsec: i64) {
    utimensat(
        None,
        p,
        &TimeSpec::UTIME_OMIT,
        &TimeSpec::new(sec, nsec),
        UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// A tree with what a backup must keep: empty, multi-MiB and small files,
/// modes with setgid, xattrs, nanosecond mtimes, symlinks (short and
/// long targets), names with newlines and longer than tar's 100 bytes,
/// a fifo, and owners when root.
fn make_tree(root: &Path) {
    let app = root;
    fs::create_dir_all(app.join("sub/deep")).unwrap();
    fs::write(app.join("empty"), b"").unwrap();
    fs::write(app.join("big.bin"), noise(5 * 1024 * 1024 + 123, 7)).unwrap();
    fs::write(app.join("exact.bin"), noise(1 << 20, 8)).unwrap();
    fs::write(app.join("small.txt"), b"hello backup\n").unwrap();
    fs::write(app.join("sub/deep/file"), noise(4097, 9)).unwrap();
    fs::write(app.join("name with\nnewline"), b"nl").unwrap();
    let long = "l".repeat(120);
    fs::create_dir(app.join(&long)).unwrap();
    fs::write(app.join(&long).join("x".repeat(150)), b"long name").unwrap();
    std::os::unix::fs::symlink("small.txt", app.join("link")).unwrap();
    std::os::unix::fs::symlink(format!("/{}", "t".repeat(200)), app.join("longlink")).unwrap();
    nix::unistd::mkfifo(
        &app.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();

    chmod(&app.join("small.txt"), 0o640);
    chmod(&app.join("big.bin"), 0o2755);
    chmod(&app.join("sub"), 0o2775);
    chmod(&app.join("sub/deep/file"), 0o400);
    xattr::set(
        app.join("small.txt"),
        "user.comment",
        b"a \0 binary\xff value",
    )
    .unwrap();
    xattr::set(app.join("sub"), "user.dir", b"d").unwrap();
    if is_root() {
        std::os::unix::fs::lchown(app.join("small.txt"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(app.join("link"), Some(4321), Some(8765)).unwrap();
        std::os::unix::fs::lchown(app.join("sub"), Some(1234), Some(5678)).unwrap();
        // chown cleared setgid on the directory.
        chmod(&app.join("sub"), 0o2775);
    }
    // mtimes last, deepest first, so that creating children does not move them.
    let mut all = walk(app);
    all.reverse();
    for (i, (p, _)) in all.iter().enumerate() {
        set_mtime(p, 1_600_000_000 + i as i64, 123_456_789 + i as i64);
    }
    set_mtime(app, 1_500_000_000, 999_999_999);
}

/// Every path under `root`, parents before children, sorted.
fn walk(root: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let mut names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names.into_iter().rev() {
            let p = dir.join(&n);
            let r = format!("{rel}/{}", n.to_string_lossy());
            let is_dir = fs::symlink_metadata(&p).unwrap().is_dir();
            if is_dir {
                stack.push((p.clone(), r.clone()));
            }
            out.push((p, r));
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out
}

/// Adds `src` and everything under it as LIVE/..., parents first.
fn backup_tree(w: &mut dyn ArchiveWriter, src: &Path) -> Vec<Added> {
    let mut out = vec![w.add(LIVE, src, Some("comp-root")).unwrap()];
    for (p, rel) in walk(src) {
        out.push(w.add(&format!("{LIVE}{rel}"), &p, Some("comp-a")).unwrap());
    }
    out
}

fn to_target(root: &Path) -> impl FnMut(&ManifestEntry) -> Option<PathBuf> + '_ {
    move |e: &ManifestEntry| {
        let rel = e.path.strip_prefix(LIVE)?;
        Some(if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel.trim_start_matches('/'))
        })
    }
}

/// Restores everything under `root`; returns the failures.
fn extract_all(r: &mut dyn archive::ArchiveReader, root: &Path) -> Vec<(String, String)> {
    let mut failures = Vec::new();
    let mut count = 0;
    r.extract(&mut to_target(root), &mut |e, _t, res| {
        count += 1;
        if let Err(err) = res {
            failures.push((e.path.clone(), err.to_string()));
        }
    })
    .unwrap();
    assert_eq!(count, r.manifest().len(), "done once per selected entry");
    failures
}

fn user_xattrs(p: &Path) -> BTreeMap<String, Vec<u8>> {
    xattr::list(p)
        .unwrap()
        .filter(|n| n.to_string_lossy().starts_with("user."))
        .map(|n| {
            let v = xattr::get(p, &n).unwrap().unwrap();
            (n.to_string_lossy().into_owned(), v)
        })
        .collect()
}

/// `b` holds what `a` held (fifos excepted): kinds, content, modes,
/// mtimes, user xattrs, owners when root.
fn assert_same_tree(a: &Path, b: &Path) {
    let mut pairs = vec![(a.to_path_buf(), b.to_path_buf())];
    for (p, rel) in walk(a) {
        pairs.push((p, b.join(rel.trim_start_matches('/'))));
    }
    for (p, q) in pairs {
        let m = fs::symlink_metadata(&p).unwrap();
        if m.file_type().is_fifo() {
            assert!(fs::symlink_metadata(&q).is_err(), "{q:?} restored a fifo");
            continue;
        }
        let n = fs::symlink_metadata(&q).unwrap_or_else(|e| panic!("{q:?}: {e}"));
        assert_eq!(m.file_type(), n.file_type(), "{q:?}");
        if m.is_file() {
            assert_eq!(fs::read(&p).unwrap(), fs::read(&q).unwrap(), "{q:?}");
        }
        if m.file_type().is_symlink() {
            assert_eq!(fs::read_link(&p).unwrap(), fs::read_link(&q).unwrap());
        } else {
            assert_eq!(m.mode() & 0o7777, n.mode() & 0o7777, "mode of {q:?}");
            assert_eq!(user_xattrs(&p), user_xattrs(&q), "xattrs of {q:?}");
        }
        assert_eq!(
            (m.mtime(), m.mtime_nsec()),
            (n.mtime(), n.mtime_nsec()),
            "mtime of {q:?}"
        );
        if is_root() {
            assert_eq!((m.uid(), m.gid()), (n.uid(), n.gid()), "owner of {q:?}");
        }
    }
}

use std::os::unix::fs::FileTypeExt;

fn round_trip(dest_name: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    make_tree(&src);
    let dest = tmp.path().join(dest_name);

    let mut w = archive::create(&dest).unwrap();
    let added = backup_tree(w.as_mut(), &src);
    let skipped: Vec<_> = added
        .iter()
        .filter_map(|a| match a {
            Added::Skipped { path, reason } => Some((path.clone(), reason.clone())),
            Added::Stored(_) => None,
        })
        .collect();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0].0, format!("{LIVE}/fifo"));
    assert!(skipped[0].1.contains("fifo"));
    let stored_bytes: u64 = added
        .iter()
        .filter_map(|a| match a {
            Added::Stored(e) => Some(e.size),
            Added::Skipped { .. } => None,
        })
        .sum();
    assert_eq!(w.bytes_stored(), stored_bytes);
    assert!(stored_bytes > 6 << 20);
    w.add_document("backup-components.xml", b"<BackupComponents/>")
        .unwrap();
    w.add_document("writers/SqliteWriter.{abc}.xml", b"<WriterMetadata/>")
        .unwrap();
    w.add_document("backup.json", b"{}").unwrap();
    w.finish().unwrap();

    let mut r = archive::open(&dest).unwrap();
    let m = r.manifest().to_vec();
    assert_eq!(m.len(), added.len() - 1);
    let by_path: BTreeMap<_, _> = m.iter().map(|e| (e.path.as_str(), e)).collect();
    let small = by_path[&*format!("{LIVE}/small.txt")];
    assert_eq!(small.kind, EntryKind::File);
    assert_eq!(small.size, 13);
    assert_eq!(small.mode, 0o640);
    assert_eq!(
        small.blake3.as_deref(),
        Some(blake3::hash(b"hello backup\n").to_hex().as_str())
    );
    assert_eq!(small.component.as_deref(), Some("comp-a"));
    assert!(small.xattrs.contains_key("user.comment"));
    let link = by_path[&*format!("{LIVE}/link")];
    assert_eq!(link.kind, EntryKind::Symlink);
    assert_eq!(link.target.as_deref(), Some("small.txt"));
    assert_eq!(by_path[LIVE].component.as_deref(), Some("comp-root"));
    assert_eq!(by_path[&*format!("{LIVE}/sub")].mode, 0o2775);
    assert_eq!(
        r.document_names(),
        vec![
            "backup-components.xml",
            "writers/SqliteWriter.{abc}.xml",
            "backup.json"
        ]
    );
    assert_eq!(
        r.document("writers/SqliteWriter.{abc}.xml").unwrap(),
        b"<WriterMetadata/>"
    );
    assert_eq!(r.document("nope"), None);

    let report = r.verify().unwrap();
    assert!(report.is_ok(), "{report:?}");
    let files = m.iter().filter(|e| e.kind == EntryKind::File).count() as u64;
    assert_eq!(report.files_checked, files);
    assert_eq!(report.bytes_checked, stored_bytes);

    // Extract to another root.
    let out = tmp.path().join("restored");
    let failures = extract_all(r.as_mut(), &out);
    assert!(failures.is_empty(), "{failures:?}");
    assert_same_tree(&src, &out);
    // No temporary names left behind.
    assert!(walk(&out).iter().all(|(_, r)| !r.contains(".vss-restore")));

    // Restoring again over the restored tree replaces files in place.
    fs::write(out.join("small.txt"), b"changed").unwrap();
    let failures = extract_all(r.as_mut(), &out);
    assert!(failures.is_empty(), "{failures:?}");
    assert_same_tree(&src, &out);
}

#[test]
fn round_trip_directory() {
    round_trip("backup");
}

#[test]
fn round_trip_tar_zst() {
    round_trip("backup.tar.zst");
}

#[test]
fn directory_layout_and_manifest_header() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    chmod(&src.join("f"), 0o4750);
    let dest = tmp.path().join("b");
    let mut w = archive::create(&dest).unwrap();
    w.add("/", &src, None).unwrap();
    w.add("/srv/deep/f", &src.join("f"), None).unwrap();
    w.finish().unwrap();
    assert_eq!(fs::metadata(&dest).unwrap().mode() & 0o7777, 0o700);
    let data_file = dest.join(DATA_DIR).join("srv/deep/f");
    assert_eq!(fs::read(&data_file).unwrap(), b"x");
    // Permission bits kept (owner may always read), setuid not.
    assert_eq!(
        fs::metadata(&data_file).unwrap().mode() & 0o7777,
        0o750 | 0o600
    );
    let text = fs::read_to_string(dest.join(MANIFEST_FILE)).unwrap();
    let mut lines = text.lines();
    let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["format"], 1);
    assert_eq!(header["entries"], 2);
    let e: ManifestEntry = serde_json::from_str(lines.nth(1).unwrap()).unwrap();
    assert_eq!(e.mode, 0o4750);
    assert!(!dest.join(format!("{MANIFEST_FILE}.tmp")).exists());
    // "/" maps to the data directory itself.
    let mut r = archive::open(&dest).unwrap();
    assert_eq!(r.manifest()[0].path, "/");
    assert!(r.verify().unwrap().is_ok());

    // Content before its directories (any order works): the directory's
    // copy gets its mode when it comes.
    let dest2 = tmp.path().join("b2");
    let mut w = archive::create(&dest2).unwrap();
    fs::create_dir(src.join("d")).unwrap();
    chmod(&src.join("d"), 0o750);
    w.add("/x/y/f", &src.join("f"), None).unwrap();
    w.add("/x/y", &src.join("d"), None).unwrap();
    w.add("/x", &src.join("d"), None).unwrap();
    w.finish().unwrap();
    let y = dest2.join(DATA_DIR).join("x/y");
    assert_eq!(fs::metadata(&y).unwrap().mode() & 0o7777, 0o750);
    assert_eq!(fs::read(y.join("f")).unwrap(), b"x");
    assert!(archive::open(&dest2).unwrap().verify().unwrap().is_ok());
}

#[test]
fn tar_zst_is_plain_tar_inside() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    make_tree(&src);
    let dest = tmp.path().join("b.tar.zst");
    let mut w = archive::create(&dest).unwrap();
    backup_tree(w.as_mut(), &src);
    w.add_document("backup.json", b"{}").unwrap();
    w.finish().unwrap();
    assert_eq!(fs::metadata(&dest).unwrap().mode() & 0o777, 0o600);

    let tar = zstd::decode_all(fs::File::open(&dest).unwrap()).unwrap();
    let mut ar = tar::Archive::new(&tar[..]);
    let mut names = Vec::new();
    for m in ar.entries().unwrap() {
        let mut m = m.unwrap();
        let name = String::from_utf8(m.path_bytes().to_vec()).unwrap();
        if name == "data/srv/app/small.txt" {
            let x = m.pax_extensions().unwrap().unwrap();
            let recs: Vec<_> = x.map(|r| r.unwrap().key().unwrap().to_string()).collect();
            assert_eq!(recs, vec!["SCHILY.xattr.user.comment"]);
            let mut s = String::new();
            std::io::Read::read_to_string(&mut m, &mut s).unwrap();
            assert_eq!(s, "hello backup\n");
        }
        names.push(name);
    }
    assert_eq!(names.last().unwrap(), MANIFEST_FILE);
    assert!(names.contains(&"data/srv/app/".to_string()));
    assert!(names.contains(&format!(
        "data/srv/app/{}/{}",
        "l".repeat(120),
        "x".repeat(150)
    )));
    assert!(names.contains(&"backup.json".to_string()));

    // GNU tar can read it too, and restores user xattrs from the PAX records.
    if std::process::Command::new("zstd")
        .arg("--version")
        .output()
        .is_ok()
    {
        let out = tmp.path().join("gnutar");
        fs::create_dir(&out).unwrap();
        let st = std::process::Command::new("tar")
            .args(["--zstd", "--xattrs", "--xattrs-include=user.*", "-xf"])
            .arg(&dest)
            .arg("-C")
            .arg(&out)
            .status()
            .unwrap();
        assert!(st.success());
        let f = out.join("data/srv/app/small.txt");
        assert_eq!(fs::read(&f).unwrap(), b"hello backup\n");
        assert_eq!(
            xattr::get(&f, "user.comment").unwrap().unwrap(),
            b"a \0 binary\xff value"
        );
        assert_eq!(
            fs::read(out.join("data/srv/app/big.bin")).unwrap(),
            fs::read(src.join("big.bin")).unwrap()
        );
    } else {
        eprintln!("zstd command missing: GNU tar interoperability not checked");
    }
}

#[test]
fn refusals_on_add() {
    for name in ["b", "b.tar.zst"] {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = archive::create(&tmp.path().join(name)).unwrap();
        // Non-UTF-8 name.
        let bad = tmp.path().join(OsStr::from_bytes(b"bad\xffname"));
        fs::write(&bad, b"x").unwrap();
        let e = w.add("/srv/bad?name", &bad, None).unwrap_err();
        assert!(e.reason.contains("not valid UTF-8"), "{e}");
        // Symlink with a non-UTF-8 target.
        let l = tmp.path().join("l");
        std::os::unix::fs::symlink(OsStr::from_bytes(b"t\xfe"), &l).unwrap();
        let e = w.add("/srv/l", &l, None).unwrap_err();
        assert!(e.reason.contains("not valid UTF-8"), "{e}");
        // Vanished source.
        let e = w
            .add("/srv/gone", &tmp.path().join("gone"), None)
            .unwrap_err();
        assert_eq!(e.reason, "no such file or directory");
        assert_eq!(e.path, "/srv/gone");
        assert!(e.source.is_some());
        // Bad live paths, duplicates.
        let f = tmp.path().join("f");
        fs::write(&f, b"f").unwrap();
        for lp in ["relative", "/a/../b", "/a//b", "/a/"] {
            assert!(w.add(lp, &f, None).is_err(), "{lp}");
        }
        w.add("/srv/f", &f, None).unwrap();
        assert!(w.add("/srv/f", &f, None).is_err());
        // Documents.
        for bad in ["", "/abs", "../x", "data/x", MANIFEST_FILE, "a//b"] {
            let e = w.add_document(bad, b"").unwrap_err();
            assert_eq!(e.code(), VssCode::InvalidArg, "{bad}");
        }
        w.add_document("d", b"1").unwrap();
        assert_eq!(
            w.add_document("d", b"2").unwrap_err().code(),
            VssCode::ObjectAlreadyExists
        );
        w.finish().unwrap();
        let r = archive::open(&tmp.path().join(name)).unwrap();
        assert_eq!(r.manifest().len(), 1);
        assert_eq!(r.document("d").unwrap(), b"1");
    }
}

/// Runs `child_unreadable_as_nobody` as uid 65534 when root (root reads
/// anything), else checks directly.
#[test]
fn unreadable_file_is_a_file_error() {
    if !is_root() {
        check_unreadable();
        return;
    }
    use std::os::unix::process::CommandExt;
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_unreadable_as_nobody", "--nocapture"])
        .env("VSS_ARCHIVE_TEST_CHILD", "1")
        .current_dir("/")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The unprivileged half of `unreadable_file_is_a_file_error`; does
/// nothing unless started by it.
#[test]
fn child_unreadable_as_nobody() {
    if std::env::var_os("VSS_ARCHIVE_TEST_CHILD").is_some() {
        assert!(!is_root());
        check_unreadable();
    }
}

fn check_unreadable() {
    for name in ["b", "b.tar.zst"] {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("secret");
        fs::write(&f, b"s").unwrap();
        chmod(&f, 0o000);
        let dest = tmp.path().join(name);
        let mut w = archive::create(&dest).unwrap();
        let e = w.add("/srv/secret", &f, Some("c")).unwrap_err();
        assert_eq!(e.reason, "permission denied", "{e}");
        assert_eq!(e.to_string(), "/srv/secret: permission denied");
        // The backup goes on and stays valid.
        let ok = tmp.path().join("ok");
        fs::write(&ok, b"ok").unwrap();
        w.add("/srv/ok", &ok, None).unwrap();
        w.finish().unwrap();
        let mut r = archive::open(&dest).unwrap();
        assert_eq!(r.manifest().len(), 1);
        assert!(r.verify().unwrap().is_ok());
    }
}

/// Builds a small backup; returns (tempdir, backup path).
fn small_backup(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a.db"), b"AAAAAAAAAA-original-content").unwrap();
    fs::write(src.join("b.db"), noise(300_000, 3)).unwrap();
    fs::write(src.join("c.db"), b"ccc").unwrap();
    let dest = tmp.path().join(name);
    let mut w = archive::create(&dest).unwrap();
    backup_tree(w.as_mut(), &src);
    w.add_document("backup.json", b"{\"ok\":true}").unwrap();
    w.finish().unwrap();
    (tmp, dest)
}

fn problems(dest: &Path) -> Vec<(String, String)> {
    let mut r = archive::open(dest).unwrap();
    let rep = r.verify().unwrap();
    rep.problems
        .into_iter()
        .map(|p| (p.path, p.problem))
        .collect()
}

#[test]
fn verify_directory_finds_damage() {
    let (_tmp, dest) = small_backup("b");
    assert!(problems(&dest).is_empty());
    let data = dest.join(DATA_DIR).join("srv/app");
    // Flipped byte.
    let mut a = fs::read(data.join("a.db")).unwrap();
    a[3] ^= 0x20;
    fs::write(data.join("a.db"), &a).unwrap();
    // Truncated.
    let b = fs::read(data.join("b.db")).unwrap();
    fs::write(data.join("b.db"), &b[..1000]).unwrap();
    // Missing, and a stray.
    fs::remove_file(data.join("c.db")).unwrap();
    fs::write(data.join("stray"), b"?").unwrap();
    fs::write(dest.join("backup.json"), b"{}").unwrap();
    let p = problems(&dest);
    let find = |path: &str, what: &str| {
        assert!(
            p.iter().any(|(q, m)| q == path && m.contains(what)),
            "{path}: {what} not in {p:?}"
        )
    };
    find("/srv/app/a.db", "BLAKE3");
    find("/srv/app/b.db", "size is 1000 bytes");
    find("/srv/app/c.db", "missing");
    find("/srv/app/stray", "not in the manifest");
    find("backup.json", "document does not match");
    assert_eq!(p.len(), 5, "{p:?}");
}

/// Rewrites a tar.zst with `edit` applied to the decompressed tar.
fn edit_tar_zst(path: &Path, edit: impl FnOnce(&mut Vec<u8>)) {
    let mut tar = zstd::decode_all(fs::File::open(path).unwrap()).unwrap();
    edit(&mut tar);
    fs::write(path, zstd::encode_all(&tar[..], 3).unwrap()).unwrap();
}

fn find_bytes(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("needle in tar")
}

#[test]
fn verify_tar_zst_finds_damage() {
    let (_tmp, dest) = small_backup("b.tar.zst");
    assert!(problems(&dest).is_empty());
    edit_tar_zst(&dest, |tar| {
        let i = find_bytes(tar, b"original-content");
        tar[i] ^= 0x20;
        // Rename c.db's member so that it is missing and a stray appears.
        let j = find_bytes(tar, b"data/srv/app/c.db");
        tar[j + 13] = b'x';
        // Fix the renamed header's checksum so only the content is odd.
        let start = j - j % 512;
        let mut h = tar::Header::new_old();
        h.as_mut_bytes().copy_from_slice(&tar[start..start + 512]);
        h.set_cksum();
        tar[start..start + 512].copy_from_slice(h.as_bytes());
    });
    let p = problems(&dest);
    let find = |path: &str, what: &str| {
        assert!(
            p.iter().any(|(q, m)| q == path && m.contains(what)),
            "{path}: {what} not in {p:?}"
        )
    };
    find("/srv/app/a.db", "BLAKE3");
    find("/srv/app/c.db", "missing");
    find("/srv/app/x.db", "not in the manifest");
    assert_eq!(p.len(), 3, "{p:?}");

    // Damage to the compressed stream itself: the zstd checksum or the
    // decoder catches it; verify reports it rather than failing.
    let mut z = fs::read(&dest).unwrap();
    let n = z.len();
    z[n / 2] ^= 0xff;
    fs::write(&dest, &z).unwrap();
    match archive::open(&dest) {
        Err(e) => assert_eq!(e.code(), VssCode::Unexpected, "{e}"),
        Ok(mut r) => {
            let rep = r.verify().unwrap();
            assert!(!rep.is_ok());
        }
    }
}

fn extract_refuses_damaged(name: &str, damage: impl FnOnce(&Path)) {
    let (tmp, dest) = small_backup(name);
    damage(&dest);
    let out = tmp.path().join("restore");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("a.db"), b"old content").unwrap();
    let mut r = archive::open(&dest).unwrap();
    let failures = extract_all(r.as_mut(), &out);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, "/srv/app/a.db");
    assert!(failures[0].1.contains("damaged"), "{failures:?}");
    assert_eq!(fs::read(out.join("a.db")).unwrap(), b"old content");
    assert_eq!(fs::read(out.join("c.db")).unwrap(), b"ccc");
    let names: Vec<_> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.contains(".vss-restore")),
        "{names:?}"
    );
}

#[test]
fn extract_refuses_a_damaged_file_directory() {
    extract_refuses_damaged("b", |dest| {
        let p = dest.join(DATA_DIR).join("srv/app/a.db");
        let mut a = fs::read(&p).unwrap();
        a[0] ^= 1;
        fs::write(&p, &a).unwrap();
    });
}

#[test]
fn extract_refuses_a_damaged_file_tar_zst() {
    extract_refuses_damaged("b.tar.zst", |dest| {
        edit_tar_zst(dest, |tar| {
            let i = find_bytes(tar, b"original-content");
            tar[i] ^= 1;
        })
    });
}

#[test]
fn extract_selects_and_reports_per_entry() {
    let (tmp, dest) = small_backup("b.tar.zst");
    let out = tmp.path().join("one");
    let mut r = archive::open(&dest).unwrap();
    let mut done = Vec::new();
    r.extract(
        &mut |e| (e.path == "/srv/app/b.db").then(|| out.join("b.db")),
        &mut |e, t, res| done.push((e.path.clone(), t.to_path_buf(), res.is_ok())),
    )
    .unwrap();
    assert_eq!(done, vec![("/srv/app/b.db".into(), out.join("b.db"), true)]);
    assert_eq!(fs::read(out.join("b.db")).unwrap(), noise(300_000, 3));
    // A directory in the way is not replaced.
    let out2 = tmp.path().join("two");
    fs::create_dir_all(out2.join("b.db")).unwrap();
    let mut res = None;
    r.extract(
        &mut |e| (e.path == "/srv/app/b.db").then(|| out2.join("b.db")),
        &mut |_, _, r| res = Some(r),
    )
    .unwrap();
    assert!(res.unwrap().unwrap_err().reason.contains("directory"));
    assert!(out2.join("b.db").is_dir());
}

#[test]
fn open_refuses_what_is_not_a_backup() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let code = |p: &Path| -> (VssCode, String) {
        let e = archive::open(p).err().expect("must fail");
        let v: VssError = e.into();
        assert!(!v.hint().is_empty());
        (v.code, v.message)
    };
    assert_eq!(code(&t.join("missing")).0, VssCode::ObjectNotFound);
    fs::create_dir(t.join("empty")).unwrap();
    assert_eq!(code(&t.join("empty")).0, VssCode::ObjectNotFound);
    fs::write(t.join("garbage.tar.zst"), noise(10_000, 5)).unwrap();
    let (c, m) = code(&t.join("garbage.tar.zst"));
    assert_eq!(c, VssCode::ObjectNotFound);
    assert!(m.contains("not a backup"), "{m}");
    fs::write(t.join("short.tar.zst"), b"\x28").unwrap();
    assert_eq!(code(&t.join("short.tar.zst")).0, VssCode::ObjectNotFound);
    // Valid zstd, not a tar.
    fs::write(
        t.join("z.tar.zst"),
        zstd::encode_all(&noise(5000, 6)[..], 3).unwrap(),
    )
    .unwrap();
    assert_eq!(code(&t.join("z.tar.zst")).0, VssCode::Unexpected);
    // zstd magic then garbage.
    let mut g = vec![0x28, 0xB5, 0x2F, 0xFD];
    g.extend(noise(3000, 11));
    fs::write(t.join("g.tar.zst"), &g).unwrap();
    assert_eq!(code(&t.join("g.tar.zst")).0, VssCode::Unexpected);
    // A tar without a manifest.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    b.append_data(&mut h, "data/x", &b"x"[..]).unwrap();
    let plain = b.into_inner().unwrap();
    fs::write(
        t.join("nm.tar.zst"),
        zstd::encode_all(&plain[..], 3).unwrap(),
    )
    .unwrap();
    let (c, m) = code(&t.join("nm.tar.zst"));
    assert_eq!(c, VssCode::ObjectNotFound);
    assert!(m.contains("unfinished"), "{m}");
    // A damaged manifest in a directory backup.
    let (_k, dest) = small_backup("b");
    let mp = dest.join(MANIFEST_FILE);
    let text = fs::read_to_string(&mp).unwrap();
    fs::write(&mp, &text[..text.len() / 2]).unwrap();
    let (c, m) = code(&dest);
    assert_eq!(c, VssCode::Unexpected);
    assert!(m.contains("damaged"), "{m}");
    // A newer format.
    fs::write(&mp, "{\"format\":99}\n").unwrap();
    assert_eq!(code(&dest).0, VssCode::NotSupported);
    // Truncated tar.zst.
    let (_k2, tz) = small_backup("c.tar.zst");
    let bytes = fs::read(&tz).unwrap();
    for cut in [bytes.len() - 7, bytes.len() / 2, 100] {
        fs::write(&tz, &bytes[..cut]).unwrap();
        assert!(archive::open(&tz).is_err(), "cut at {cut}");
    }
}

#[test]
fn unfinished_backups_cannot_be_opened() {
    for name in ["b", "b.tar.zst"] {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        fs::write(&f, noise(2 << 20, 1)).unwrap();
        let dest = tmp.path().join(name);
        let mut w = archive::create(&dest).unwrap();
        w.add("/f", &f, None).unwrap();
        drop(w);
        let e = archive::open(&dest).err().unwrap();
        assert_eq!(e.code(), VssCode::ObjectNotFound, "{e}");
    }
}

#[test]
fn create_refuses_bad_destinations() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    fs::create_dir(t.join("full")).unwrap();
    fs::write(t.join("full/x"), b"").unwrap();
    fs::write(t.join("old.tar.zst"), b"").unwrap();
    fs::write(t.join("file"), b"").unwrap();
    let code = |p: PathBuf| archive::create(&p).err().expect("must fail").code();
    assert_eq!(code(t.join("full")), VssCode::ObjectAlreadyExists);
    assert_eq!(code(t.join("old.tar.zst")), VssCode::ObjectAlreadyExists);
    assert_eq!(code(t.join("file")), VssCode::ObjectAlreadyExists);
    assert_eq!(code(t.join("no/such/dir")), VssCode::InvalidArg);
    assert_eq!(code(t.join("no/such.tar.zst")), VssCode::InvalidArg);
    assert_eq!(code(PathBuf::new()), VssCode::InvalidArg);
    // An empty directory is fine, and becomes 0700.
    fs::create_dir(t.join("empty")).unwrap();
    chmod(&t.join("empty"), 0o755);
    archive::create(&t.join("empty")).unwrap().finish().unwrap();
    assert_eq!(fs::metadata(t.join("empty")).unwrap().mode() & 0o777, 0o700);
    assert!(archive::open(&t.join("empty"))
        .unwrap()
        .manifest()
        .is_empty());
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Node {
        File(Vec<u8>, u32),
        Dir(u32),
        Link(String),
    }

    fn node() -> impl Strategy<Value = Node> {
        prop_oneof![
            (
                proptest::collection::vec(any::<u8>(), 0..3000),
                0o400u32..0o1000
            )
                .prop_map(|(c, m)| Node::File(c, m)),
            (0o700u32..0o1000).prop_map(Node::Dir),
            "[a-z]{1,8}".prop_map(Node::Link),
        ]
    }

    fn tree() -> impl Strategy<Value = Vec<(Vec<String>, Node)>> {
        proptest::collection::vec(
            (proptest::collection::vec("[a-c]{1,2}", 1..4), node()),
            0..12,
        )
    }

    fn build(root: &Path, spec: &[(Vec<String>, Node)]) {
        for (path, node) in spec {
            let mut p = root.to_path_buf();
            let mut blocked = false;
            for c in &path[..path.len() - 1] {
                p.push(c);
                match fs::symlink_metadata(&p) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => blocked = true,
                    Err(_) => fs::create_dir(&p).unwrap(),
                }
                if blocked {
                    break;
                }
            }
            p = root.join(path.join("/"));
            if blocked || fs::symlink_metadata(&p).is_ok() {
                continue;
            }
            match node {
                Node::File(c, m) => {
                    fs::write(&p, c).unwrap();
                    chmod(&p, *m);
                }
                Node::Dir(m) => {
                    fs::create_dir(&p).unwrap();
                    chmod(&p, *m);
                }
                Node::Link(t) => std::os::unix::fs::symlink(t, &p).unwrap(),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]
        #[test]
        fn random_trees_round_trip(spec in tree(), tar in any::<bool>()) {
            let tmp = tempfile::tempdir().unwrap();
            let src = tmp.path().join("src");
            fs::create_dir(&src).unwrap();
            build(&src, &spec);
            let dest = tmp.path().join(if tar { "b.tar.zst" } else { "b" });
            let mut w = archive::create(&dest).unwrap();
            backup_tree(w.as_mut(), &src);
            w.finish().unwrap();
            let mut r = archive::open(&dest).unwrap();
            prop_assert!(r.verify().unwrap().is_ok());
            let out = tmp.path().join("out");
            let failures = extract_all(r.as_mut(), &out);
            prop_assert!(failures.is_empty(), "{:?}", failures);
            assert_same_tree(&src, &out);
        }
    }
}
