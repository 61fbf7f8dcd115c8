//! End to end with the real kernel path: a volume server over an image file
//! holding ext4 or xfs, the live filesystem mounted through FUSE and a loop
//! device, a workload writing files while shadows are cut under FIFREEZE
//! with the free space learnt from GETFSMAP. Each shadow is then
//! loop-attached read-only, mounted with the options its filesystem needs,
//! must hold exactly the files of its instant, and must pass the
//! filesystem's own checker.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vss_testkit::{privileged, run};
use vss_volumed::client::call;
use vss_volumed::protocol::{id_text, Reply, Request, ShadowEntry, Status};
use vss_volumed::{StorageConfig, VolumeConfig};

struct Server {
    dir: tempfile::TempDir,
    config: VolumeConfig,
    config_path: PathBuf,
    child: Option<Child>,
}

impl Server {
    fn start(fs: &str, size_mb: u64) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("volume.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(size_mb << 20)
            .unwrap();
        let mkfs = format!("mkfs.{fs}");
        let force = if fs == "ext4" { "-F" } else { "-f" };
        run(&mkfs, &["-q", force, image.to_str().unwrap()]);
        let config = VolumeConfig {
            volume_id: id_text(0x5eed),
            device: image,
            mount_point: dir.path().join("mnt"),
            fs_type: fs.to_owned(),
            run_dir: dir.path().join("run"),
            storage: None::<StorageConfig>,
            revert_pending: None,
            max_shadows: 64,
            delete_oldest_at_limit: false,
            reorder_copies_when_idle: true,
        };
        let config_path = dir.path().join("volume.toml");
        config.save(&config_path).unwrap();
        let mut server = Server {
            dir,
            config,
            config_path,
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_vss-volumed"))
            .args(["serve", "--config", self.config_path.to_str().unwrap()])
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Reply::Status(s)) = self.try_call(&Request::Status) {
                if s.mounted {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("volume server did not come up");
    }

    fn try_call(&self, r: &Request) -> Result<Reply, vss_volumed::client::ClientError> {
        call(&self.config.socket_path(), r, Duration::from_secs(120))
    }

    fn call(&self, r: &Request) -> Reply {
        self.try_call(r).unwrap_or_else(|e| panic!("{r:?}: {e}"))
    }

    fn status(&self) -> Status {
        match self.call(&Request::Status) {
            Reply::Status(s) => *s,
            other => panic!("{other:?}"),
        }
    }

    fn mnt(&self) -> &Path {
        &self.config.mount_point
    }

    fn add_storage(&self, max_bytes: Option<u64>) {
        let r = self.call(&Request::AddStorage {
            dir: self.dir.path().join("storage"),
            max_bytes,
            chunk_size: 16 * 1024,
        });
        assert_eq!(r, Reply::Ok);
    }

    /// Freeze, learn free space, cut, thaw: what vssd does for this
    /// provider.
    fn cut(&self, id: u128) -> PathBuf {
        vss_sys::freeze(self.mnt()).unwrap();
        let free = vss_sys::fsmap::free_extents(self.mnt())
            .unwrap()
            .unwrap_or_default();
        let reply = self.try_call(&Request::Cut {
            shadow_id: id_text(id),
            free,
            created_unix_ns: 0,
        });
        vss_sys::thaw(self.mnt()).unwrap();
        match reply.unwrap() {
            Reply::Shadow(s) => s.image,
            other => panic!("{other:?}"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if self.config_path.exists() {
                let _ = self.try_call(&Request::Stop);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if c.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("umount").arg("-l").arg(self.mnt()).status();
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.config.images_dir())
            .status();
    }
}

/// A shadow attached read-only and mounted; detached on drop.
struct Exposed {
    loop_dev: String,
    dir: tempfile::TempDir,
}

impl Exposed {
    fn new(image: &Path, fs: &str) -> Exposed {
        let loop_dev = run("losetup", &["-r", "-f", "--show", image.to_str().unwrap()])
            .trim()
            .to_owned();
        let dir = tempfile::tempdir().unwrap();
        let options = match fs {
            "ext4" => "ro,noload",
            "xfs" => "ro,norecovery,nouuid",
            _ => "ro",
        };
        run(
            "mount",
            &["-o", options, &loop_dev, dir.path().to_str().unwrap()],
        );
        Exposed { loop_dev, dir }
    }

    fn files(&self) -> BTreeMap<String, String> {
        hash_tree(&self.dir.path().join("work"))
    }

    /// Unmounts and runs the filesystem checker on the read-only device.
    fn check(self, fs: &str) {
        run("umount", &[self.dir.path().to_str().unwrap()]);
        match fs {
            "ext4" => {
                run("e2fsck", &["-fn", &self.loop_dev]);
            }
            "xfs" => {
                // A frozen xfs leaves its last superblock update in the log
                // (freeze covers the log, it does not clean it), so the
                // shadow, like any snapshot of a frozen xfs, needs log
                // recovery before xfs_repair -n is meaningful. Recover a
                // scratch copy, never the shadow itself.
                let copy = self.dir.path().with_extension("copy.img");
                run(
                    "cp",
                    &["--sparse=always", &self.loop_dev, copy.to_str().unwrap()],
                );
                let m = tempfile::tempdir().unwrap();
                run(
                    "mount",
                    &[
                        "-o",
                        "nouuid",
                        copy.to_str().unwrap(),
                        m.path().to_str().unwrap(),
                    ],
                );
                run("umount", &[m.path().to_str().unwrap()]);
                run("xfs_repair", &["-n", copy.to_str().unwrap()]);
                let _ = std::fs::remove_file(&copy);
            }
            _ => {}
        }
    }
}

impl Drop for Exposed {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
        let _ = Command::new("losetup")
            .args(["-d", &self.loop_dev])
            .status();
    }
}

fn hash_tree(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let data = std::fs::read(e.path()).unwrap();
        out.insert(
            e.file_name().to_string_lossy().into_owned(),
            blake3::hash(&data).to_hex().to_string(),
        );
    }
    out
}

/// Writes files `f0000`, `f0001`… (each written, fsynced, then recorded)
/// and rewrites older ones, until stopped. Records every completed file's
/// hash, and the one file whose write is in flight.
struct Workload {
    stop: Arc<AtomicBool>,
    record: Arc<Mutex<Record>>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

/// What the workload has written at one moment.
#[derive(Clone, Default)]
struct Record {
    /// Hash of each file as last completely written and synced.
    done: BTreeMap<String, String>,
    /// The file being written (created or rewritten) right now: its entry
    /// in `done`, if any, no longer tells its content.
    inflight: Option<String>,
}

impl Record {
    /// The hash this record vouches for: a completed write not since
    /// begun again.
    fn settled(&self, name: &str) -> Option<&String> {
        match &self.inflight {
            Some(f) if f == name => None,
            _ => self.done.get(name),
        }
    }
}

impl Workload {
    fn start(dir: PathBuf) -> Workload {
        std::fs::create_dir_all(&dir).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let record = Arc::new(Mutex::new(Record::default()));
        let (s, r) = (stop.clone(), record.clone());
        let thread = std::thread::spawn(move || {
            let mut n = 0u64;
            while !s.load(Ordering::Relaxed) {
                // Every fourth step rewrites an earlier file in place.
                let (name, seed) = if n % 4 == 3 && n > 8 {
                    (format!("f{:05}", (n * 7919) % (n - 4)), n)
                } else {
                    (format!("f{n:05}"), n)
                };
                let size = 4096 + (seed as usize * 7331) % (192 << 10);
                let data: Vec<u8> = (0..size)
                    .map(|i| (i as u64 ^ seed.wrapping_mul(31)) as u8)
                    .collect();
                let path = dir.join(&name);
                // Marked in flight before the file is opened (a rewrite
                // truncates it) and settled only once synced: a write that
                // straddles a cut is undecided, never vouched for.
                r.lock().unwrap().inflight = Some(name.clone());
                std::fs::write(&path, &data).unwrap();
                std::fs::File::open(&path).unwrap().sync_all().unwrap();
                let mut rec = r.lock().unwrap();
                rec.done
                    .insert(name, blake3::hash(&data).to_hex().to_string());
                rec.inflight = None;
                drop(rec);
                n += 1;
            }
            n
        });
        Workload {
            stop,
            record,
            thread: Some(thread),
        }
    }

    fn snapshot(&self) -> Record {
        self.record.lock().unwrap().clone()
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// The instant of a cut lies between `before` (taken just before the
/// freeze) and `after` (just after the thaw). A file settled in `before`
/// with the same content still settled in `after` was not written across
/// the cut: the shadow must hold it as it was. A file the shadow holds
/// must have been known by `after` (completed, or the write in flight
/// then, which the freeze may have cut through).
fn assert_instant(shadow: &BTreeMap<String, String>, before: &Record, after: &Record) {
    let mut vouched = 0;
    for (name, hash) in &before.done {
        if before.settled(name) == Some(hash) && after.settled(name) == Some(hash) {
            vouched += 1;
            match shadow.get(name) {
                Some(h) if h == hash => {}
                Some(h) => panic!("{name} differs in the shadow: {h}, expected {hash}"),
                None => panic!("{name} is missing in the shadow (expected {hash})"),
            }
        }
    }
    assert!(
        vouched > 0 || before.done.is_empty(),
        "no file of the record could be checked"
    );
    let later: Vec<&String> = shadow
        .keys()
        .filter(|k| !after.done.contains_key(*k) && after.inflight.as_ref() != Some(*k))
        .collect();
    assert!(
        later.is_empty(),
        "files first written after the cut are in the shadow: {later:?}"
    );
}

fn live_shadows_hold_their_instant(fs: &str) {
    if !privileged(&format!("live_shadows_hold_their_instant({fs})")) {
        return;
    }
    let server = Server::start(fs, 512);
    server.add_storage(None);
    let work = Workload::start(server.mnt().join("work"));
    let mut shadows = Vec::new();
    for i in 0..3u128 {
        std::thread::sleep(Duration::from_millis(700));
        let before = work.snapshot();
        let image = server.cut(0x100 + i);
        let after = work.snapshot();
        shadows.push((image, before, after));
    }
    std::thread::sleep(Duration::from_millis(500));
    let files_written = work.finish();
    assert!(
        files_written > 20,
        "the workload wrote only {files_written} files"
    );
    let status = server.status();
    assert_eq!(status.shadows.len(), 3);
    for (image, before, after) in shadows {
        let exposed = Exposed::new(&image, fs);
        assert_instant(&exposed.files(), &before, &after);
        exposed.check(fs);
    }
    // Retire: the device keeps the live filesystem, mounted where it was.
    let live_before = hash_tree(&server.mnt().join("work"));
    assert_eq!(server.call(&Request::Retire), Reply::Ok);
    assert_eq!(hash_tree(&server.mnt().join("work")), live_before);
    // An image file gets a plain loop device of its own: backed by the
    // image itself, not by the live image of the (gone) front end.
    let src = run(
        "findmnt",
        &["-n", "-o", "SOURCE", server.mnt().to_str().unwrap()],
    );
    let backing = vss_sys::loopdev::backing_file(Path::new(src.trim())).unwrap();
    assert_eq!(backing.as_deref(), Some(server.config.device.as_path()));
    run("umount", &[server.mnt().to_str().unwrap()]);
}

#[test]
fn priv_cow_ext4_live_shadows_hold_their_instant() {
    live_shadows_hold_their_instant("ext4");
}

#[test]
fn priv_cow_xfs_live_shadows_hold_their_instant() {
    live_shadows_hold_their_instant("xfs");
}

#[test]
fn priv_cow_storage_full_drops_oldest_shadows_and_writes_go_on() {
    if !privileged("priv_cow_storage_full_drops_oldest_shadows_and_writes_go_on") {
        return;
    }
    let server = Server::start("ext4", 256);
    // Small on purpose (vssd enforces its minimum; the engine has none).
    server.add_storage(Some(24 << 20));
    let status = overflow_rounds(&server);
    for e in &status.evicted {
        assert!(e.reason.contains("maximum size"), "{e:?}");
    }
    let storage = status.storage.unwrap();
    assert!(storage.used_bytes <= (24 << 20) + (64 << 10), "{storage:?}");
}

/// The filesystem holding the shadow storage fills up (no maximum size):
/// growing the data file then meets ENOSPC, and the oldest shadows go
/// instead of any live write.
#[test]
fn priv_cow_full_storage_filesystem_drops_oldest_shadows_and_writes_go_on() {
    if !privileged("priv_cow_full_storage_filesystem_drops_oldest_shadows_and_writes_go_on") {
        return;
    }
    fill_storage_filesystem("ext4", 40);
}

/// The same on a btrfs filesystem, where an overwrite of a slot would take
/// new space too (copy-on-write) unless the storage files are created
/// no-copy-on-write.
#[test]
fn priv_cow_full_btrfs_storage_filesystem_drops_oldest_shadows_and_writes_go_on() {
    if !privileged("priv_cow_full_btrfs_storage_filesystem_drops_oldest_shadows_and_writes_go_on") {
        return;
    }
    fill_storage_filesystem("btrfs", 128);
}

/// Shadow storage on a small `fs_type` filesystem of `size_mb` MiB,
/// without a maximum size, through `overflow_rounds`.
fn fill_storage_filesystem(fs_type: &str, size_mb: u64) {
    let server = Server::start("ext4", 256);
    let small = vss_testkit::LoopFs::new(fs_type, size_mb);
    let r = server.call(&Request::AddStorage {
        dir: small.mount_point.join("diff"),
        max_bytes: None,
        chunk_size: 16 * 1024,
    });
    assert_eq!(r, Reply::Ok);
    let status = overflow_rounds(&server);
    for e in &status.evicted {
        assert!(e.reason.contains("is full"), "{e:?}");
    }
    drop(server);
}

/// Six rounds of 48 MiB rewritten between cuts, more than the storage
/// holds: every write must go through, some shadows must be evicted
/// (oldest first), and those left must hold exactly their instant.
fn overflow_rounds(server: &Server) -> Status {
    let dir = server.mnt().join("work");
    std::fs::create_dir_all(&dir).unwrap();
    // 12 files of 4 MiB, rewritten in turn between cuts.
    let write_round = |round: u8| {
        for f in 0..12 {
            let data = vec![round.wrapping_mul(13) ^ f; 4 << 20];
            std::fs::write(dir.join(format!("big{f}")), &data).unwrap();
        }
        run("sync", &[]);
    };
    write_round(0);
    let mut cut_ids = Vec::new();
    let mut expected = BTreeMap::new();
    for round in 1..=6u8 {
        let id = 0x200 + u128::from(round);
        server.cut(id);
        cut_ids.push(id);
        expected.insert(id_text(id), hash_tree(&dir));
        write_round(round); // every write goes through; none may fail
                            // Room is made by evicting the oldest, never by losing shadows.
        let lost: Vec<ShadowEntry> = server
            .status()
            .shadows
            .into_iter()
            .filter(|s| s.lost.is_some())
            .collect();
        assert!(lost.is_empty(), "shadows lost instead of evicted: {lost:?}");
    }
    let status = server.status();
    assert!(
        !status.evicted.is_empty(),
        "nothing was evicted: {status:?}"
    );
    let left: Vec<String> = status.shadows.iter().map(|s| s.shadow_id.clone()).collect();
    // Oldest first: what is left is the newest ones.
    let n = left.len();
    let newest: Vec<String> = cut_ids[cut_ids.len() - n..]
        .iter()
        .map(|&i| id_text(i))
        .collect();
    assert_eq!(left, newest);
    for s in &status.shadows {
        let exposed = Exposed::new(&s.image, "ext4");
        assert_eq!(exposed.files_at("work"), expected[&s.shadow_id]);
        exposed.check("ext4");
    }
    status
}

impl Exposed {
    fn files_at(&self, rel: &str) -> BTreeMap<String, String> {
        hash_tree(&self.dir.path().join(rel))
    }
}

#[test]
fn priv_cow_revert_restores_the_instant_and_keeps_other_shadows() {
    if !privileged("priv_cow_revert_restores_the_instant_and_keeps_other_shadows") {
        return;
    }
    let server = Server::start("ext4", 256);
    server.add_storage(None);
    let dir = server.mnt().join("work");
    std::fs::create_dir_all(&dir).unwrap();
    let fill = |tag: u8, n: usize| {
        for f in 0..n {
            std::fs::write(dir.join(format!("f{f}")), vec![tag ^ f as u8; 300 << 10]).unwrap();
        }
        run("sync", &[]);
    };
    fill(1, 8);
    let first = hash_tree(&dir);
    server.cut(0x301);
    fill(2, 12);
    let second = hash_tree(&dir);
    server.cut(0x302);
    fill(3, 5);
    std::fs::remove_file(dir.join("f0")).unwrap();
    run("sync", &[]);

    // A busy filesystem is not unmounted without force.
    let busy = std::fs::File::open(dir.join("f1")).unwrap();
    let refused = server.try_call(&Request::Revert {
        shadow_id: id_text(0x301),
        force: false,
    });
    assert!(
        matches!(&refused, Err(vss_volumed::client::ClientError::Server(e)) if e.kind == vss_volumed::protocol::ErrorKind::VolumeInUse),
        "{refused:?}"
    );
    drop(busy);

    assert_eq!(
        server.call(&Request::Revert {
            shadow_id: id_text(0x301),
            force: false
        }),
        Reply::Ok
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = server.status();
        let r = s.revert.expect("revert reported");
        match r.outcome {
            Some(Ok(())) => {
                assert_eq!(r.done_chunks, r.total_chunks);
                assert!(r.total_chunks > 0);
                assert!(s.mounted);
                break;
            }
            Some(Err(e)) => panic!("revert failed: {e}"),
            None => assert!(Instant::now() < deadline, "revert did not finish"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        hash_tree(&dir),
        first,
        "the live volume is back at the first shadow's instant"
    );
    // Both shadows stay, and stay exact: the revert went through copy-on-write.
    let status = server.status();
    assert_eq!(status.shadows.len(), 2);
    for (s, expected) in status.shadows.iter().zip([&first, &second]) {
        let exposed = Exposed::new(&s.image, "ext4");
        assert_eq!(&exposed.files_at("work"), expected);
        exposed.check("ext4");
    }
    let cfg = VolumeConfig::load(&server.config_path).unwrap();
    assert_eq!(cfg.revert_pending, None);
}

#[test]
fn priv_cow_btrfs_shadow_mounts_beside_the_live_filesystem() {
    if !privileged("priv_cow_btrfs_shadow_mounts_beside_the_live_filesystem") {
        return;
    }
    let server = Server::start("btrfs", 256);
    server.add_storage(None);
    let dir = server.mnt().join("work");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a"), b"one").unwrap();
    run("sync", &[]);
    let image = server.cut(0x401);
    std::fs::write(dir.join("a"), b"two").unwrap();
    std::fs::write(dir.join("b"), b"new").unwrap();
    run("sync", &[]);
    // Same fsid as the mounted live filesystem: the kernel mounts the copy
    // with a temporary fsid (single-device btrfs, kernel 6.7 and later).
    let exposed = Exposed::new(&image, "btrfs");
    let files = exposed.files_at("work");
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files["a"], blake3::hash(b"one").to_hex().to_string());
    let temp_fsid = std::fs::read_dir("/sys/fs/btrfs")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("temp_fsid")).ok())
        .any(|v| v.trim() == "1");
    assert!(temp_fsid, "the shadow was not given a temporary fsid");
    drop(exposed);
    run("btrfs", &["check", "--readonly", image.to_str().unwrap()]);
}
