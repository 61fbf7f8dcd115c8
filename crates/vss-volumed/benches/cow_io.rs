//! I/O cost of the software provider's copy-on-write path, as ratios
//! against baselines measured in the same run (see docs/BENCHMARKS.md,
//! "Software provider (copy-on-write)").
//!
//! Needs root, fio, /dev/fuse and loop devices; run it with
//! `sudo bench/cow_io.sh` or `cargo bench -p vss-volumed --bench cow_io`.
//!
//! 1. fio write throughput inside the mounted ext4 (image of 2 GiB on a
//!    loop device with direct I/O over the server's FUSE live image), after
//!    0, 1, 8 or 64 shadows were cut, in three phases: writing a new file
//!    (into space that was free at the cut), overwriting files that existed
//!    at the cut for the first time, and overwriting them again. Each both
//!    as sequential 1 MiB and random 4 KiB writes (`--direct=1
//!    --ioengine=psync`, `--end_fsync=1`). Baselines: the same phase with 0
//!    shadows (storage added, no shadow), and the same fio load on ext4 on
//!    a plain loop device (`losetup --direct-io=on`) over a plain image of
//!    the same size. All volumes are set up first; each phase then runs in
//!    rounds, every volume in turn within a round, and a ratio is the median
//!    of the per-round ratios, so that the machine's drift over minutes
//!    falls on both sides of a ratio.
//! 2. Sequential reads of files inside an exposed shadow (`losetup -r
//!    --direct-io=on`, `mount -o ro,noload`) against the same files in the
//!    live mount.
//! 3. The longest gap between completions of a small O_DSYNC writer while
//!    the filesystem goes through a bare FIFREEZE/FITHAW cycle, and while a
//!    shadow is cut (freeze, GETFSMAP, Cut request, thaw), interleaved.
//!
//! Everything it sets up lives under one temporary directory (in
//! `COW_BENCH_DIR`, else the system temp dir) and is taken down on the way
//! out, also after a failure or Ctrl-C.
//!
//! Settings (environment): `COW_BENCH_SHADOWS` (default "0 1 8 64"; 0 is
//! always run), `COW_BENCH_FILE_MB` (256), `COW_BENCH_IMAGE_MB` (2048),
//! `COW_BENCH_RAND_SECS` (8).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vss_testkit::run;
use vss_volumed::client::call;
use vss_volumed::protocol::{id_text, Reply, Request, Status};
use vss_volumed::VolumeConfig;

const CHUNK_SIZE: u32 = 16 * 1024;
const RAND_SEED: &str = "4242";

// ---- settings --------------------------------------------------------

struct Settings {
    shadow_counts: Vec<usize>,
    file_mb: u64,
    image_mb: u64,
    rand_secs: u64,
    base: PathBuf,
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

impl Settings {
    fn from_env() -> Settings {
        let mut counts: Vec<usize> = std::env::var("COW_BENCH_SHADOWS")
            .unwrap_or_else(|_| "0 1 8 64".into())
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            .filter(|&n| n <= 64)
            .collect();
        counts.push(0);
        counts.sort_unstable();
        counts.dedup();
        Settings {
            shadow_counts: counts,
            file_mb: env_u64("COW_BENCH_FILE_MB", 256),
            image_mb: env_u64("COW_BENCH_IMAGE_MB", 2048),
            rand_secs: env_u64("COW_BENCH_RAND_SECS", 8),
            base: std::env::var_os("COW_BENCH_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir),
        }
    }
}

// ---- interruption ----------------------------------------------------

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C / SIGTERM only set a flag: the run stops at its next step by
/// panicking, so every guard below unwinds and cleans up.
fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe; the function pointer has the C ABI signal(2)
        // expects.
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

fn check_interrupt() {
    if INTERRUPTED.load(Ordering::SeqCst) {
        panic!("interrupted");
    }
}

fn sleep(d: Duration) {
    std::thread::sleep(d);
    check_interrupt();
}

// ---- setup helpers ---------------------------------------------------

fn quiet(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `COW_BENCH_REORDER=0` leaves the copies where the writes put them
/// (no reorder into chunk order before the shadow reads), to measure
/// shadow reads of scattered copies.
fn reorder_enabled() -> bool {
    std::env::var("COW_BENCH_REORDER").as_deref() != Ok("0")
}

/// A fully allocated image with a fresh ext4 (inode tables and journal
/// written at mkfs time, so no lazy init runs in the background while we
/// measure).
fn make_image(path: &Path, size_mb: u64) {
    run(
        "fallocate",
        &["-l", &format!("{size_mb}M"), path.to_str().unwrap()],
    );
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-E",
            "lazy_itable_init=0,lazy_journal_init=0",
            path.to_str().unwrap(),
        ],
    );
}

fn drop_caches() {
    run("sync", &[]);
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

/// Keeps a filesystem frozen until dropped (thaws on every path).
struct Frozen<'a>(&'a Path);

impl<'a> Frozen<'a> {
    fn new(mnt: &'a Path) -> Frozen<'a> {
        vss_sys::freeze(mnt).unwrap_or_else(|e| panic!("freeze {}: {e}", mnt.display()));
        Frozen(mnt)
    }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        if let Err(e) = vss_sys::thaw(self.0) {
            eprintln!("cow_io: thaw {} failed: {e}", self.0.display());
        }
    }
}

// ---- the volume server (as in tests/volume_e2e.rs) --------------------

struct Server {
    dir: tempfile::TempDir,
    config: VolumeConfig,
    config_path: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    loop_dev: Option<PathBuf>,
}

impl Server {
    fn start(base: &Path, size_mb: u64) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("cow-")
            .tempdir_in(base)
            .unwrap();
        let image = dir.path().join("volume.img");
        make_image(&image, size_mb);
        // Written as text and loaded, so that settings added to the file
        // later take their defaults here.
        let config_path = dir.path().join("volume.toml");
        let text = format!(
            "volume-id = {:?}\ndevice = {:?}\nmount-point = {:?}\nfs-type = \"ext4\"\nrun-dir = {:?}\nreorder-copies-when-idle = false\n",
            id_text(0xbe4c),
            image.to_str().unwrap(),
            dir.path().join("mnt").to_str().unwrap(),
            dir.path().join("run").to_str().unwrap(),
        );
        std::fs::write(&config_path, text).unwrap();
        let config = VolumeConfig::load(&config_path).unwrap();
        let log = dir.path().join("server.log");
        let mut server = Server {
            dir,
            config,
            config_path,
            log,
            child: None,
            loop_dev: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(&self.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_vss-volumed"))
            .args(["serve", "--config", self.config_path.to_str().unwrap()])
            .env("VSS_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Reply::Status(s)) = self.try_call(&Request::Status) {
                if s.mounted {
                    self.loop_dev = s.loop_device.clone();
                    return;
                }
            }
            sleep(Duration::from_millis(50));
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

    fn used_bytes(&self) -> u64 {
        self.status().storage.map_or(0, |s| s.used_bytes)
    }

    fn mnt(&self) -> &Path {
        &self.config.mount_point
    }

    fn add_storage(&self) {
        let r = self.call(&Request::AddStorage {
            dir: self.dir.path().join("storage"),
            max_bytes: None,
            chunk_size: CHUNK_SIZE,
        });
        assert_eq!(r, Reply::Ok);
    }

    /// Freeze, learn free space, cut, thaw: what vssd does for this
    /// provider. Returns the shadow's image and how long each step took.
    fn cut(&self, id: u128) -> (PathBuf, CutTimes) {
        let t0 = Instant::now();
        let frozen = Frozen::new(self.mnt());
        let t1 = Instant::now();
        let free = vss_sys::fsmap::free_extents(self.mnt())
            .unwrap()
            .unwrap_or_default();
        let t2 = Instant::now();
        let reply = self.try_call(&Request::Cut {
            shadow_id: id_text(id),
            free,
            created_unix_ns: 0,
        });
        let t3 = Instant::now();
        drop(frozen);
        let t4 = Instant::now();
        let times = CutTimes {
            freeze: t1 - t0,
            fsmap: t2 - t1,
            request: t3 - t2,
            thaw: t4 - t3,
        };
        match reply.unwrap() {
            Reply::Shadow(s) => (s.image, times),
            other => panic!("{other:?}"),
        }
    }
}

/// The steps of one cut (or, with `fsmap` and `request` zero, of a bare
/// freeze/thaw cycle).
#[derive(Clone, Copy, Debug, Default)]
struct CutTimes {
    freeze: Duration,
    fsmap: Duration,
    request: Duration,
    thaw: Duration,
}

impl CutTimes {
    fn total(&self) -> Duration {
        self.freeze + self.fsmap + self.request + self.thaw
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = vss_sys::thaw(self.mnt());
        if let Some(mut c) = self.child.take() {
            let _ = self.try_call(&Request::Stop);
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
        let _ = quiet("umount", &["-l", self.mnt().to_str().unwrap()]);
        if let Some(dev) = &self.loop_dev {
            // Still attached only if the server did not stop cleanly; on a
            // busy device the kernel detaches it when its last user goes.
            if vss_sys::loopdev::backing_file(dev)
                .ok()
                .flatten()
                .is_some_and(|b| b.starts_with(self.dir.path()))
            {
                let _ = quiet("losetup", &["-d", dev.to_str().unwrap()]);
            }
        }
        let _ = quiet(
            "umount",
            &["-l", self.config.images_dir().to_str().unwrap()],
        );
        if std::thread::panicking() {
            if let Ok(text) = std::fs::read_to_string(&self.log) {
                let lines: Vec<&str> = text.lines().collect();
                eprintln!("cow_io: last lines of the volume server's log:");
                for l in &lines[lines.len().saturating_sub(20)..] {
                    eprintln!("  {l}");
                }
            }
        }
    }
}

/// ext4 on a plain loop device with direct I/O over a plain image: the
/// baseline without FUSE and engine.
struct Plain {
    /// Holds the image; removed after the drop below has unmounted it.
    _dir: tempfile::TempDir,
    loop_dev: String,
    mnt: PathBuf,
}

impl Plain {
    fn start(base: &Path, size_mb: u64) -> Plain {
        let dir = tempfile::Builder::new()
            .prefix("plain-")
            .tempdir_in(base)
            .unwrap();
        let image = dir.path().join("volume.img");
        make_image(&image, size_mb);
        let loop_dev = run(
            "losetup",
            &["--direct-io=on", "-f", "--show", image.to_str().unwrap()],
        )
        .trim()
        .to_owned();
        let mnt = dir.path().join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        let plain = Plain {
            _dir: dir,
            loop_dev,
            mnt,
        };
        run(
            "mount",
            &["-t", "ext4", &plain.loop_dev, plain.mnt.to_str().unwrap()],
        );
        plain
    }
}

impl Drop for Plain {
    fn drop(&mut self) {
        if !quiet("umount", &[self.mnt.to_str().unwrap()]) {
            let _ = quiet("umount", &["-l", self.mnt.to_str().unwrap()]);
        }
        let _ = quiet("losetup", &["-d", &self.loop_dev]);
    }
}

/// A shadow attached read-only (direct I/O, like the live loop device) and
/// mounted; taken down on drop.
struct Exposed {
    loop_dev: String,
    dir: tempfile::TempDir,
}

impl Exposed {
    fn new(base: &Path, image: &Path) -> Exposed {
        let loop_dev = run(
            "losetup",
            &[
                "-r",
                "--direct-io=on",
                "-f",
                "--show",
                image.to_str().unwrap(),
            ],
        )
        .trim()
        .to_owned();
        let dir = tempfile::Builder::new()
            .prefix("exposed-")
            .tempdir_in(base)
            .unwrap();
        let e = Exposed { loop_dev, dir };
        run(
            "mount",
            &[
                "-o",
                "ro,noload",
                &e.loop_dev,
                e.dir.path().to_str().unwrap(),
            ],
        );
        e
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Exposed {
    fn drop(&mut self) {
        if !quiet("umount", &[self.dir.path().to_str().unwrap()]) {
            let _ = quiet("umount", &["-l", self.dir.path().to_str().unwrap()]);
        }
        let _ = quiet("losetup", &["-d", &self.loop_dev]);
    }
}

// ---- fio -------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct FioResult {
    /// bytes/s of the job's direction
    bw: f64,
    iops: f64,
    ios: u64,
    runtime_ms: u64,
}

fn fio(args: &[String]) -> FioResult {
    fio_jobs(args).swap_remove(0)
}

/// Runs fio and returns what each of its jobs did (in the direction it
/// did it: write if it wrote, else read).
fn fio_jobs(args: &[String]) -> Vec<FioResult> {
    check_interrupt();
    let out = Command::new("fio")
        .args(args)
        .arg("--output-format=json")
        .output()
        .unwrap_or_else(|e| panic!("cannot run fio: {e}"));
    check_interrupt();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "fio {} failed ({}): {}{}",
        args.join(" "),
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let json_start = stdout.find('{').expect("fio printed no JSON");
    let v: serde_json::Value = serde_json::from_str(&stdout[json_start..])
        .unwrap_or_else(|e| panic!("fio JSON: {e}: {stdout}"));
    let jobs = v["jobs"].as_array().expect("fio printed no jobs");
    assert!(!jobs.is_empty(), "fio printed no jobs: {stdout}");
    jobs.iter()
        .map(|job| {
            assert_eq!(job["error"].as_i64(), Some(0), "fio job error: {job}");
            let dir = if job["write"]["total_ios"].as_u64().unwrap_or(0) > 0 {
                &job["write"]
            } else {
                &job["read"]
            };
            FioResult {
                bw: dir["bw_bytes"].as_f64().unwrap_or(0.0),
                iops: dir["iops"].as_f64().unwrap_or(0.0),
                ios: dir["total_ios"].as_u64().unwrap_or(0),
                runtime_ms: dir["runtime"].as_u64().unwrap_or(0),
            }
        })
        .collect()
}

fn common(name: &str, file: &Path, size_mb: u64) -> Vec<String> {
    vec![
        format!("--name={name}"),
        format!("--filename={}", file.display()),
        format!("--size={size_mb}M"),
        "--direct=1".into(),
        "--ioengine=psync".into(),
    ]
}

fn seq_write(file: &Path, size_mb: u64) -> FioResult {
    let mut a = common("seq", file, size_mb);
    a.extend(["--rw=write", "--bs=1M", "--end_fsync=1"].map(String::from));
    fio(&a)
}

/// Random 4 KiB writes in `region` (offset and size in MiB) for `secs`
/// seconds, or, with `number_ios`, exactly that many (the same offsets as
/// a timed run of the same job: same name, region and seed, no repeats
/// within a pass).
fn rand_write(file: &Path, region: (u64, u64), secs: f64, number_ios: Option<u64>) -> FioResult {
    let mut a = common("rand", file, region.1);
    a.extend(
        [
            "--rw=randwrite",
            "--bs=4k",
            "--end_fsync=1",
            "--randrepeat=1",
        ]
        .map(String::from),
    );
    a.push(format!("--offset={}M", region.0));
    a.push(format!("--randseed={RAND_SEED}"));
    let ms = (secs * 1000.0) as u64;
    match number_ios {
        None => a.extend([format!("--runtime={ms}ms"), "--time_based".into()]),
        Some(n) => a.extend([
            format!("--number_ios={n}"),
            format!("--runtime={}ms", ms * 4),
        ]),
    }
    fio(&a)
}

fn seq_read(file: &Path, size_mb: u64, loops: u32) -> FioResult {
    let mut a = common("read", file, size_mb);
    a.extend(["--rw=read", "--bs=1M", "--readonly"].map(String::from));
    a.push(format!("--loops={loops}"));
    fio(&a)
}

// ---- part 1: write phases ---------------------------------------------

const PHASES: [&str; 3] = ["into free space", "first overwrite", "rewrite"];
const TARGETS: [f64; 3] = [0.9, 0.45, 0.9];
const LOADS: [&str; 2] = ["seq 1 MiB", "rand 4 KiB"];
/// Rounds of the sequential phases that can repeat unchanged (a new file
/// written again after `rm` still lands in space free at the cuts; a
/// rewrite stays a rewrite). Each takes a few hundred ms.
const SEQ_ROUNDS: usize = 5;
/// Files overwritten sequentially for the first time, one per round: a
/// first overwrite happens once per file.
const SEQ_FIRST_FILES: usize = 3;
/// The random loads run in this many rounds of `rand_secs / RAND_ROUNDS`;
/// the first overwrite and its rewrite take one region of the file per
/// round, so that each round is a first overwrite.
const RAND_ROUNDS: usize = 4;

/// A volume the write phases run on: the plain loop baseline, or a server
/// with its shadows.
struct Volume {
    label: String,
    /// None for the plain loop.
    shadows: Option<usize>,
    kind: VolumeKind,
    /// Images of the shadows cut, oldest first.
    images: Vec<PathBuf>,
    /// How long each cut held the filesystem frozen.
    holds: Vec<Duration>,
}

enum VolumeKind {
    Plain(Plain),
    Cow(Box<Server>),
}

impl Volume {
    fn mnt(&self) -> &Path {
        match &self.kind {
            VolumeKind::Plain(p) => &p.mnt,
            VolumeKind::Cow(s) => s.mnt(),
        }
    }

    /// Shadow storage in use (None on the plain loop).
    fn used(&self) -> Option<u64> {
        match &self.kind {
            VolumeKind::Plain(_) => None,
            VolumeKind::Cow(s) => Some(s.used_bytes()),
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.mnt().join("bench").join(name)
    }
}

/// What the write phases measured on one volume.
#[derive(Default, Clone)]
struct PhaseRun {
    /// [phase][load]: one value per round, MiB/s for sequential, IOPS for
    /// random.
    value: [[Vec<f64>; 2]; 3],
    /// [phase][load]: bytes the shadow storage grew by over all rounds.
    preserved: [[Option<u64>; 2]; 3],
    /// Writes of each round of the random first overwrite (what the
    /// rewrite replays).
    rand_ios: Vec<u64>,
}

impl PhaseRun {
    fn median(&self, phase: usize, load: usize) -> f64 {
        median(&mut self.value[phase][load].clone())
    }

    /// Median and range over the rounds of this volume's value divided by
    /// `base`'s value in the same round.
    fn ratio_to(&self, base: &PhaseRun, phase: usize, load: usize) -> (f64, f64, f64) {
        let mut r: Vec<f64> = self.value[phase][load]
            .iter()
            .zip(&base.value[phase][load])
            .map(|(v, b)| v / b)
            .collect();
        let m = median(&mut r);
        (m, r[0], r[r.len() - 1])
    }
}

fn mib(b: f64) -> f64 {
    b / (1u64 << 20) as f64
}

/// The disk's own limit for a first overwrite, which costs three I/Os per
/// MiB: three concurrent direct 1 MiB streams on the filesystem holding
/// the images (read a file written before, write into a newly allocated
/// one, overwrite a third), each `size_mb`. Returns the slowest stream's
/// MiB/s: the rate at which the disk serves a read, a copy and a live
/// write of each MiB at once.
fn disk_mix(dir: &Path, size_mb: u64) -> f64 {
    let (old, copies, live) = (
        dir.join("mix-old"),
        dir.join("mix-copies"),
        dir.join("mix-live"),
    );
    for f in [&old, &live] {
        if !f.exists() {
            seq_write(f, size_mb);
        }
    }
    let _ = std::fs::remove_file(&copies);
    run(
        "fallocate",
        &["-l", &format!("{size_mb}M"), &copies.display().to_string()],
    );
    let mut args: Vec<String> = ["--direct=1", "--ioengine=psync", "--bs=1M"]
        .map(String::from)
        .to_vec();
    args.push(format!("--size={size_mb}M"));
    for (name, file, rw) in [
        ("old", &old, "read"),
        ("copies", &copies, "write"),
        ("live", &live, "write"),
    ] {
        args.push(format!("--name={name}"));
        args.push(format!("--filename={}", file.display()));
        args.push(format!("--rw={rw}"));
    }
    fio_jobs(&args)
        .iter()
        .map(|j| mib(j.bw))
        .fold(f64::INFINITY, f64::min)
}

/// The files that exist, fully written and synced, at the cuts.
fn old_files() -> Vec<String> {
    let mut v: Vec<String> = (0..SEQ_FIRST_FILES)
        .map(|k| format!("old_seq{k}"))
        .collect();
    v.push("old_rand".into());
    v
}

/// Writes the files that exist at the cuts on `vol`.
fn prepare(s: &Settings, vol: &Volume) {
    std::fs::create_dir_all(vol.mnt().join("bench")).unwrap();
    for name in old_files() {
        seq_write(&vol.file(&name), s.file_mb);
    }
    run("sync", &[]);
}

/// Runs one phase and load for `rounds` rounds on every volume, the
/// volumes in turn within a round (a different one first each round), so
/// that the volumes compared share the machine's drift. `f` runs round
/// `round` on a volume.
fn measure(
    vols: &[Volume],
    runs: &mut [PhaseRun],
    (phase, load): (usize, usize),
    rounds: usize,
    f: &dyn Fn(&Volume, usize, &PhaseRun) -> FioResult,
) {
    for round in 0..rounds {
        for i in 0..vols.len() {
            let k = (i + round) % vols.len();
            let vol = &vols[k];
            let before = vol.used();
            let res = f(vol, round, &runs[k]);
            let after = vol.used();
            let r = &mut runs[k];
            let value = if load == 0 { mib(res.bw) } else { res.iops };
            r.value[phase][load].push(value);
            if let Some(grew) = before.zip(after).map(|(b, a)| a.saturating_sub(b)) {
                *r.preserved[phase][load].get_or_insert(0) += grew;
            }
            if (phase, load) == (1, 1) {
                r.rand_ios.push(res.ios);
            }
            eprintln!(
                "cow_io: {}: {} / {}, round {round}: {value:.1} {} ({} ios in {} ms, storage +{})",
                vol.label,
                PHASES[phase],
                LOADS[load],
                if load == 0 { "MiB/s" } else { "IOPS" },
                res.ios,
                res.runtime_ms,
                before.zip(after).map_or("-".into(), |(b, a)| format!(
                    "{:.1} MiB",
                    mib(a.saturating_sub(b) as f64)
                ))
            );
        }
    }
}

/// The three phases, each load in rounds over all volumes (see
/// `measure`). The random rounds last `rand_secs / RAND_ROUNDS` each; the
/// first overwrite's round k writes the k-th region of `old_rand`, and the
/// rewrite's round k replays exactly those writes.
/// Also returns the disk's limit for a first overwrite (`disk_mix`,
/// median of `SEQ_FIRST_FILES` runs right after that phase).
fn write_phases(s: &Settings, vols: &[Volume]) -> (Vec<PhaseRun>, f64) {
    let mut runs = vec![PhaseRun::default(); vols.len()];
    let secs = (s.rand_secs as f64 / RAND_ROUNDS as f64).max(1.0);
    let region_mb = s.file_mb / RAND_ROUNDS as u64;
    measure(vols, &mut runs, (0, 0), SEQ_ROUNDS, &|v, _, _| {
        let _ = std::fs::remove_file(v.file("new_seq"));
        seq_write(&v.file("new_seq"), s.file_mb)
    });
    measure(vols, &mut runs, (0, 1), RAND_ROUNDS, &|v, _, _| {
        let _ = std::fs::remove_file(v.file("new_rand"));
        rand_write(&v.file("new_rand"), (0, s.file_mb), secs, None)
    });
    measure(vols, &mut runs, (1, 0), SEQ_FIRST_FILES, &|v, round, _| {
        seq_write(&v.file(&format!("old_seq{round}")), s.file_mb)
    });
    let mix_dir = tempfile::Builder::new()
        .prefix("vss-cow-bench-mix-")
        .tempdir_in(&s.base)
        .expect("cannot create the disk mix directory");
    let mut mix: Vec<f64> = (0..SEQ_FIRST_FILES)
        .map(|round| {
            let m = disk_mix(mix_dir.path(), s.file_mb);
            eprintln!("cow_io: disk mix (read + write + overwrite), round {round}: {m:.1} MiB/s per stream");
            m
        })
        .collect();
    drop(mix_dir);
    measure(vols, &mut runs, (1, 1), RAND_ROUNDS, &|v, round, _| {
        let region = (round as u64 * region_mb, region_mb);
        rand_write(&v.file("old_rand"), region, secs, None)
    });
    measure(vols, &mut runs, (2, 0), SEQ_ROUNDS, &|v, round, _| {
        seq_write(
            &v.file(&format!("old_seq{}", round % SEQ_FIRST_FILES)),
            s.file_mb,
        )
    });
    measure(vols, &mut runs, (2, 1), RAND_ROUNDS, &|v, round, r| {
        let region = (round as u64 * region_mb, region_mb);
        replay(&v.file("old_rand"), region, secs, r.rand_ios[round])
    });
    (runs, median(&mut mix))
}

/// The median of `v` (sorted in place).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Replays a first overwrite's `ios` random writes in `region` (the same
/// offsets, all preserved already) until at least `secs` of fio runtime
/// add up, so the rewrite is measured over as long as the first overwrite.
fn replay(file: &Path, region: (u64, u64), secs: f64, ios: u64) -> FioResult {
    let mut total = FioResult {
        bw: 0.0,
        iops: 0.0,
        ios: 0,
        runtime_ms: 0,
    };
    let mut runs = 0;
    while (total.runtime_ms as f64) < secs * 1000.0 && runs < 1000 {
        let r = rand_write(file, region, secs, Some(ios));
        total.ios += r.ios;
        total.runtime_ms += r.runtime_ms.max(1);
        runs += 1;
    }
    total.iops = total.ios as f64 * 1000.0 / total.runtime_ms as f64;
    total.bw = total.iops * 4096.0;
    total
}

fn cut_n(server: &Server, n: usize, first_id: u128) -> Vec<(PathBuf, CutTimes)> {
    (0..n)
        .map(|i| {
            check_interrupt();
            server.cut(first_id + i as u128)
        })
        .collect()
}
// ---- part 2: shadow reads ---------------------------------------------

/// Puts every copy in chunk order, what the server's idle-time reorder
/// does by itself (off in the bench, so that an idle volume's reorder does
/// not run beside another volume's measurement).
fn reorder_now(server: &Server) {
    let started = Instant::now();
    // In bursts: the server answers one request at a time.
    while server.call(&Request::ReorderCopies) != (Reply::Reordered { done: true }) {
        check_interrupt();
    }
    eprintln!(
        "cow_io: copies put in chunk order in {:.1} s (storage used {:.1} MiB)",
        started.elapsed().as_secs_f64(),
        mib(server.used_bytes() as f64)
    );
}

struct ReadRow {
    file: &'static str,
    cache: &'static str,
    live: f64,
    shadow: f64,
}

/// Sequential 1 MiB reads of the same files in the live mount and in the
/// exposed shadow, alternating live and shadow, median of three rounds.
/// Cold: caches dropped before each read (one pass). Warm: four passes in
/// one fio run, so all but the first come from the host page cache.
fn shadow_reads(s: &Settings, server: &Server, image: &Path) -> Vec<ReadRow> {
    let exposed = Exposed::new(&s.base, image);
    let mut rows = Vec::new();
    for file in ["old_seq0", "old_rand"] {
        for cold in [true, false] {
            let mut runs: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
            for _ in 0..3 {
                for (k, root) in [server.mnt(), exposed.path()].into_iter().enumerate() {
                    if cold {
                        drop_caches();
                    }
                    let path = root.join("bench").join(file);
                    let r = seq_read(&path, s.file_mb, if cold { 1 } else { 4 });
                    runs[k].push(mib(r.bw));
                }
            }
            let (live, shadow) = (median(&mut runs[0]), median(&mut runs[1]));
            eprintln!(
                "cow_io: read {file} ({}): live {live:.1} MiB/s, shadow {shadow:.1} MiB/s (runs: {:?} / {:?})",
                if cold { "cold" } else { "warm" },
                runs[0],
                runs[1]
            );
            rows.push(ReadRow {
                file,
                cache: if cold {
                    "cold (caches dropped)"
                } else {
                    "warm (host page cache)"
                },
                live,
                shadow,
            });
        }
    }
    rows
}

// ---- part 3: write stall ----------------------------------------------

struct StallResult {
    /// Per operation: the longest completion gap overlapping it.
    bare_stalls: Vec<Duration>,
    cut_stalls: Vec<Duration>,
    /// Per operation: its steps.
    bare_times: Vec<CutTimes>,
    cut_times: Vec<CutTimes>,
    /// Longest gap overlapping no operation (the writer's own jitter).
    other_max: Duration,
    median_gap: Duration,
    writes: usize,
}

/// A 4 KiB O_DSYNC writer runs in a loop over a 1 MiB file while bare
/// freeze/thaw cycles and shadow cuts alternate, 400 ms apart. For each
/// operation, the longest completion gap that overlaps it is its stall.
fn write_stall(server: &Server, first_id: u128, cycles: usize) -> StallResult {
    let path = server.mnt().join("bench").join("stall");
    std::fs::write(&path, vec![0x5au8; 1 << 20]).unwrap();
    std::fs::File::open(&path).unwrap().sync_all().unwrap();
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DSYNC)
        .open(&path)
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let writer = std::thread::spawn(move || {
        let buf = vec![0xa5u8; 4096];
        let mut done = Vec::with_capacity(1 << 16);
        done.push(Instant::now());
        let mut i = 0u64;
        while !stop2.load(Ordering::Relaxed) {
            file.write_all_at(&buf, (i % 256) * 4096).unwrap();
            done.push(Instant::now());
            i += 1;
        }
        done
    });
    let pause = Duration::from_millis(400);
    // (is_cut, start, end)
    let mut ops: Vec<(bool, Instant, Instant)> = Vec::new();
    let (mut bare_times, mut cut_times) = (Vec::new(), Vec::new());
    let stopper = StopOnDrop(stop.clone());
    sleep(Duration::from_millis(1000));
    for i in 0..cycles {
        let t0 = Instant::now();
        let frozen = Frozen::new(server.mnt());
        let t1 = Instant::now();
        drop(frozen);
        let t2 = Instant::now();
        ops.push((false, t0, t2));
        bare_times.push(CutTimes {
            freeze: t1 - t0,
            thaw: t2 - t1,
            ..CutTimes::default()
        });
        sleep(pause);
        let t = Instant::now();
        let (_, times) = server.cut(first_id + i as u128);
        ops.push((true, t, Instant::now()));
        cut_times.push(times);
        sleep(pause);
    }
    drop(stopper);
    let done = writer.join().expect("the writer failed");
    let mut stalls = vec![Duration::ZERO; ops.len()];
    let mut other_max = Duration::ZERO;
    let mut gaps: Vec<Duration> = Vec::new();
    for w in done.windows(2) {
        let (a, b) = (w[0], w[1]);
        let g = b - a;
        gaps.push(g);
        let mut overlapped = false;
        for (k, &(_, s, e)) in ops.iter().enumerate() {
            if a <= e && b >= s {
                overlapped = true;
                stalls[k] = stalls[k].max(g);
            }
        }
        if !overlapped {
            other_max = other_max.max(g);
        }
    }
    gaps.sort_unstable();
    let pick = |cut: bool, v: &[Duration]| -> Vec<Duration> {
        ops.iter()
            .zip(v)
            .filter(|((c, _, _), _)| *c == cut)
            .map(|(_, &d)| d)
            .collect()
    };
    StallResult {
        bare_stalls: pick(false, &stalls),
        cut_stalls: pick(true, &stalls),
        bare_times,
        cut_times,
        other_max,
        median_gap: gaps.get(gaps.len() / 2).copied().unwrap_or_default(),
        writes: done.len() - 1,
    }
}

struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

// ---- report -----------------------------------------------------------

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median_ms(v: &[Duration]) -> f64 {
    let mut v: Vec<f64> = v.iter().map(|&d| ms(d)).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

#[allow(clippy::too_many_arguments)]
fn report(
    s: &Settings,
    vols: &[Volume],
    (runs, mix): (&[PhaseRun], f64),
    phases_secs: f64,
    reads: &[ReadRow],
    read_on: usize,
    stall: &StallResult,
    total: Duration,
) {
    let mut o = String::new();
    // Index 0 is the plain loop, then the shadow counts in order.
    let plain = &runs[0];
    let cows: Vec<(usize, &PhaseRun)> = vols
        .iter()
        .zip(runs)
        .filter_map(|(v, r)| v.shadows.map(|n| (n, r)))
        .collect();
    let base = cows
        .iter()
        .find(|(n, _)| *n == 0)
        .map(|(_, r)| *r)
        .expect("0 shadows is always run");
    let rounds = |p: usize, l: usize| plain.value[p][l].len();
    o += &format!(
        "\n## cow_io results\n\nImage {} MiB ext4, files of {} MiB, fio `--direct=1 --ioengine=psync --end_fsync=1`; \
         sequential `--rw=write --bs=1M` (size-bounded), random `--rw=randwrite --bs=4k` \
         ({} rounds of {:.1} s; the rewrite replays the first overwrite's offsets). \
         Every phase ran on all {} volumes in turn, round by round; a ratio is the median over the rounds \
         of the two volumes' values in the same round (rounds: into free space {}/{}, first overwrite {}/{}, \
         rewrite {}/{}, seq/rand). Chunk size {} KiB. Machine: {} CPUs, Linux {}.\n\n",
        s.image_mb,
        s.file_mb,
        RAND_ROUNDS,
        (s.rand_secs as f64 / RAND_ROUNDS as f64).max(1.0),
        vols.len(),
        rounds(0, 0),
        rounds(0, 1),
        rounds(1, 0),
        rounds(1, 1),
        rounds(2, 0),
        rounds(2, 1),
        CHUNK_SIZE / 1024,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        run("uname", &["-r"]).trim(),
    );
    let header = |o: &mut String, cols: &[usize]| {
        for n in cols {
            *o += &format!(" {n} shadows |");
        }
        *o += "\n|---|---|---:|";
        for _ in cols {
            *o += "---:|";
        }
        *o += "\n";
    };
    let counts: Vec<usize> = cows.iter().map(|(n, _)| *n).collect();
    o += "### Write throughput, ratio to the plain loop device (median over rounds)\n\n| Phase | Load | Target |";
    header(&mut o, &counts);
    for (p, phase) in PHASES.iter().enumerate() {
        for (l, load) in LOADS.iter().enumerate() {
            o += &format!("| {} | {} | ≥ {:.2} |", phase, load, TARGETS[p]);
            for (_, r) in &cows {
                o += &format!(" {:.2} |", r.ratio_to(plain, p, l).0);
            }
            o += "\n";
        }
    }
    let shadowed: Vec<usize> = counts.iter().copied().filter(|&n| n > 0).collect();
    o += "\n### Write throughput, ratio to the same phase with 0 shadows (storage added, no shadow): median over rounds (lowest–highest round)\n\n| Phase | Load | Target |";
    header(&mut o, &shadowed);
    for (p, phase) in PHASES.iter().enumerate() {
        for (l, load) in LOADS.iter().enumerate() {
            o += &format!("| {} | {} | ≥ {:.2} |", phase, load, TARGETS[p]);
            for (_, r) in cows.iter().filter(|(n, _)| *n > 0) {
                let (m, lo, hi) = r.ratio_to(base, p, l);
                o += &format!(" {m:.2} ({lo:.2}–{hi:.2}) |");
            }
            o += "\n";
        }
    }
    let first = base.median(1, 0);
    o += &format!(
        "\n### Sequential first overwrite against the disk's own limit\n\n\
         A first overwrite costs three I/Os per MiB (read the old contents, write the copy, write the live chunk). \
         The same disk running three concurrent direct 1 MiB streams of those kinds (read a file written before, \
         write a newly allocated one, overwrite a third; median of {SEQ_FIRST_FILES} runs after the phase) gives \
         **{mix:.0} MiB/s** per stream: the most a first overwrite can reach on this disk, \
         **{:.2}×** the 0-shadow volume's {first:.0} MiB/s. Reached, as a share of that limit:",
        mix / first
    );
    for (n, r) in cows.iter().filter(|(n, _)| *n > 0) {
        o += &format!(" {n} shadows {:.2};", r.median(1, 0) / mix);
    }
    o.pop();
    o += ".\n";
    o += "\n### Absolute numbers (context only; median over rounds, MiB/s for seq, IOPS for rand) and shadow storage growth per phase (all rounds)\n\n| Phase | Load | plain |";
    for n in &counts {
        o += &format!(" {n} sh |");
    }
    for n in &counts {
        o += &format!(" +MiB stored, {n} sh |");
    }
    o += "\n|---|---|---:|";
    for _ in 0..counts.len() * 2 {
        o += "---:|";
    }
    o += "\n";
    for (p, phase) in PHASES.iter().enumerate() {
        for (l, load) in LOADS.iter().enumerate() {
            o += &format!("| {} | {} | {:.0} |", phase, load, plain.median(p, l));
            for (_, r) in &cows {
                o += &format!(" {:.0} |", r.median(p, l));
            }
            for (_, r) in &cows {
                o += &format!(" {:.1} |", r.preserved[p][l].map_or(0.0, |b| mib(b as f64)));
            }
            o += "\n";
        }
    }
    o += "\n| Configuration | Cuts | Cut hold median / max (ms) |\n|---|---:|---:|\n";
    for v in vols.iter().filter(|v| v.shadows.is_some()) {
        let hold = if v.holds.is_empty() {
            "–".to_owned()
        } else {
            format!(
                "{:.1} / {:.1}",
                median_ms(&v.holds),
                v.holds.iter().map(|&d| ms(d)).fold(0.0, f64::max)
            )
        };
        o += &format!("| {} | {} | {hold} |\n", v.label, v.holds.len());
    }
    o += &format!("\nThe write phases took {phases_secs:.0} s in all.\n");
    o += &format!(
        "\n### Shadow reads (sequential 1 MiB, `--direct=1`, median of 3; volume with {read_on} shadows, oldest shadow exposed)\n\n\
         | File | Cache | Live MiB/s | Shadow MiB/s | Ratio shadow/live |\n|---|---|---:|---:|---:|\n"
    );
    for r in reads {
        o += &format!(
            "| {} | {} | {:.0} | {:.0} | {:.2} |\n",
            r.file,
            r.cache,
            r.live,
            r.shadow,
            r.shadow / r.live
        );
    }
    let max_ms = |v: &[Duration]| v.iter().map(|&d| ms(d)).fold(0.0, f64::max);
    let step = |v: &[CutTimes], f: fn(&CutTimes) -> Duration| {
        let d: Vec<Duration> = v.iter().map(f).collect();
        format!("{:.1} / {:.1}", median_ms(&d), max_ms(&d))
    };
    o += &format!(
        "\n### Write stall ({} bare freeze/thaw cycles and {} cuts, interleaved 400 ms apart; volume with {read_on} shadows; \
         4 KiB O_DSYNC writer over a 1 MiB file, {} writes, median gap {:.2} ms)\n\n\
         | Operation | Longest stall (ms) | Median stall (ms) |\n|---|---:|---:|\n\
         | bare `FIFREEZE`/`FITHAW` | {:.2} | {:.2} |\n\
         | shadow cut (freeze, GETFSMAP, Cut, thaw) | {:.2} | {:.2} |\n\
         | no operation (the writer's own jitter) | {:.2} | – |\n\n\
         Longest cut stall − longest bare stall: **{:+.2} ms**; medians: **{:+.2} ms** (target: within 5 ms).\n\n\
         | Step, median / max (ms) | FIFREEZE | GETFSMAP | Cut request | FITHAW | Frozen in all |\n|---|---:|---:|---:|---:|---:|\n\
         | bare cycle | {} | – | – | {} | {} |\n\
         | shadow cut | {} | {} | {} | {} | {} |\n",
        stall.bare_stalls.len(),
        stall.cut_stalls.len(),
        stall.writes,
        ms(stall.median_gap),
        max_ms(&stall.bare_stalls),
        median_ms(&stall.bare_stalls),
        max_ms(&stall.cut_stalls),
        median_ms(&stall.cut_stalls),
        ms(stall.other_max),
        max_ms(&stall.cut_stalls) - max_ms(&stall.bare_stalls),
        median_ms(&stall.cut_stalls) - median_ms(&stall.bare_stalls),
        step(&stall.bare_times, |t| t.freeze),
        step(&stall.bare_times, |t| t.thaw),
        step(&stall.bare_times, CutTimes::total),
        step(&stall.cut_times, |t| t.freeze),
        step(&stall.cut_times, |t| t.fsmap),
        step(&stall.cut_times, |t| t.request),
        step(&stall.cut_times, |t| t.thaw),
        step(&stall.cut_times, CutTimes::total),
    );
    o += &format!("\nTotal bench time: {:.0} s.\n", total.as_secs_f64());
    print!("{o}");
    let _ = std::io::stdout().flush();
}

// ---- main -------------------------------------------------------------

fn missing_prerequisite() -> Option<String> {
    if let Some(p) = vss_testkit::privilege_problem() {
        return Some(p);
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing".into());
    }
    for tool in ["fio", "mkfs.ext4", "losetup", "fallocate"] {
        if !quiet("sh", &["-c", &format!("command -v {tool}")]) {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

/// Focused mode (`COW_BENCH_SEQ_FIRST_ROUNDS=N`, at most 64): only the
/// sequential first overwrite, N rounds on a volume where a new shadow is
/// cut before each round (so every round overwrites chunks that shadow
/// needs) against N rounds on a volume with storage and no shadow,
/// alternating; prints the medians and their ratio. Long
/// enough to profile, and steadier than the single first overwrite of the
/// full run.
fn seq_first_rounds(s: &Settings, rounds: usize) {
    let root = tempfile::Builder::new()
        .prefix("vss-cow-bench-")
        .tempdir_in(&s.base)
        .expect("cannot create the bench directory");
    let servers: Vec<Server> = (0..2)
        .map(|_| {
            let server = Server::start(root.path(), s.image_mb);
            server.add_storage();
            let dir = server.mnt().join("bench");
            std::fs::create_dir_all(&dir).unwrap();
            seq_write(&dir.join("old_seq"), s.file_mb);
            server
        })
        .collect();
    run("sync", &[]);
    let reuse = std::env::var("COW_BENCH_SEQ_FIRST_REUSE").as_deref() == Ok("1");
    let mut results: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds.min(64) {
        for (k, server) in servers.iter().enumerate() {
            check_interrupt();
            if k == 1 {
                // With COW_BENCH_SEQ_FIRST_REUSE=1 the previous shadow goes
                // first, so the copies land in slots freed by it; else the
                // storage grows by the file's size every round.
                if round > 0 && reuse {
                    let r = server.call(&Request::Delete {
                        shadow_id: id_text(0x3000 + round as u128 - 1),
                    });
                    assert_eq!(r, Reply::Ok);
                }
                server.cut(0x3000 + round as u128);
            }
            let before = server.used_bytes();
            let r = seq_write(&server.mnt().join("bench").join("old_seq"), s.file_mb);
            eprintln!(
                "cow_io: seq first overwrite, round {round}, {} shadow: {:.1} MiB/s (storage +{:.1} MiB)",
                k,
                mib(r.bw),
                mib(server.used_bytes().saturating_sub(before) as f64)
            );
            results[k].push(mib(r.bw));
        }
    }
    let (zero, one) = (median(&mut results[0]), median(&mut results[1]));
    println!(
        "seq 1 MiB first overwrite, median of {rounds}: 0 shadows {zero:.0} MiB/s, 1 shadow {one:.0} MiB/s, ratio {:.2}",
        one / zero
    );
}

fn main() {
    if let Some(problem) = missing_prerequisite() {
        if std::env::var(vss_testkit::ALLOW_SKIP_ENV).as_deref() == Ok("1") {
            eprintln!("SKIPPED: cow_io: {problem}");
            return;
        }
        eprintln!(
            "cow_io: cannot run: {problem}. It needs root, fio, /dev/fuse and loop devices \
             (set {}=1 to skip instead).",
            vss_testkit::ALLOW_SKIP_ENV
        );
        std::process::exit(2);
    }
    install_signal_handlers();
    let started = Instant::now();
    let settings = Settings::from_env();
    if let Some(rounds) = std::env::var("COW_BENCH_SEQ_FIRST_ROUNDS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        seq_first_rounds(&settings, rounds.max(1));
        return;
    }
    let root = tempfile::Builder::new()
        .prefix("vss-cow-bench-")
        .tempdir_in(&settings.base)
        .expect("cannot create the bench directory");
    let s = Settings {
        base: root.path().to_owned(),
        ..settings
    };
    eprintln!("cow_io: working in {}", s.base.display());

    // Every volume is set up first (the plain loop baseline, then a server
    // per shadow count), so that the phases can run on all of them in turn.
    let mut vols = vec![Volume {
        label: "plain loop".into(),
        shadows: None,
        kind: VolumeKind::Plain(Plain::start(&s.base, s.image_mb)),
        images: Vec::new(),
        holds: Vec::new(),
    }];
    for &n in &s.shadow_counts {
        let server = Server::start(&s.base, s.image_mb);
        server.add_storage();
        vols.push(Volume {
            label: format!("{n} shadows"),
            shadows: Some(n),
            kind: VolumeKind::Cow(Box::new(server)),
            images: Vec::new(),
            holds: Vec::new(),
        });
    }
    for vol in &mut vols {
        prepare(&s, vol);
        if let (Some(n), VolumeKind::Cow(server)) = (vol.shadows, &vol.kind) {
            let cut = cut_n(server, n, 0x1000);
            vol.holds = cut.iter().map(|c| c.1.total()).collect();
            vol.images = cut.into_iter().map(|c| c.0).collect();
        }
    }
    let phases_started = Instant::now();
    let (runs, mix) = write_phases(&s, &vols);
    let phases_secs = phases_started.elapsed().as_secs_f64();

    // Shadow reads and the stall on the middle count (8 by default), else
    // the largest one below 64.
    let extra_on = *s
        .shadow_counts
        .iter()
        .filter(|&&n| n < 64)
        .find(|&&n| n == 8)
        .or_else(|| s.shadow_counts.iter().filter(|&&n| n < 64).max())
        .unwrap_or(&0);
    let extra = vols
        .iter()
        .find(|v| v.shadows == Some(extra_on))
        .expect("the volume for reads and the stall");
    let VolumeKind::Cow(server) = &extra.kind else {
        unreachable!("a shadow count is a server")
    };
    let mut reads = Vec::new();
    if let Some(oldest) = extra.images.first() {
        if reorder_enabled() {
            reorder_now(server);
        }
        reads = shadow_reads(&s, server, oldest);
    }
    let stall = write_stall(server, 0x2000, 5);
    report(
        &s,
        &vols,
        (&runs, mix),
        phases_secs,
        &reads,
        extra_on,
        &stall,
        started.elapsed(),
    );
    drop(vols);
    drop(root);
}
