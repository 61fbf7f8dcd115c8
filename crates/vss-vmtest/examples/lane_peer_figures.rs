//! Peer figures for docs/BENCHMARKS.md, run inside the VM lane
//! (`tests/vm/lane.sh run tests/vm/bench/peer_figures.sh`): the same write
//! load on a plain logical volume, with 1 and 8 thick LVM snapshots, with 1
//! and 8 thin snapshots, and on a vss copy-on-write volume with 1 and 8
//! shadows, each as a ratio to the plain volume. Under emulation absolute
//! numbers mean nothing; the ratios are what is compared.
//!
//! Load, inside an ext4 on each volume, with O_DIRECT: a 64 MiB file
//! overwritten sequentially in 1 MiB writes, and 1024 distinct random 4 KiB
//! blocks of a 16 MiB file; each once right after the snapshots were made
//! (first writes: every chunk is copied) and once more (rewrites: nothing
//! left to copy), each pass ending with fdatasync.

use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::Instant;

use vss_testkit::system::{Bus, Daemon};
use vss_vmtest::lvm::{mkfs, run, LaneVg, Mount};

/// `O_DIRECT` on x86_64 Linux, the lane's only architecture.
const O_DIRECT: i32 = 0o40000;
const SEQ_MIB: usize = 64;
const RND_MIB: usize = 16;
const RND_BLOCKS: usize = 1024;

/// A buffer aligned for O_DIRECT: a larger Vec, used from its first
/// 4096-aligned byte.
struct Aligned {
    buf: Vec<u8>,
    off: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let buf = vec![0u8; len + 4096];
        let off = buf.as_ptr().align_offset(4096);
        Aligned { buf, off, len }
    }

    fn slice(&mut self) -> &mut [u8] {
        &mut self.buf[self.off..self.off + self.len]
    }
}

/// Throughputs in MB/s: sequential first, sequential rewrite, random
/// first, random rewrite.
#[derive(Clone, Copy, Default)]
struct Figures([f64; 4]);

fn prepare_files(dir: &Path) {
    let fill = |name: &str, mib: usize| {
        let data = vec![0x5au8; mib << 20];
        std::fs::write(dir.join(name), &data).unwrap();
        std::fs::File::open(dir.join(name))
            .unwrap()
            .sync_all()
            .unwrap();
    };
    fill("seq.dat", SEQ_MIB);
    fill("rnd.dat", RND_MIB);
    run("sync", &[]);
}

fn load(dir: &Path) -> Figures {
    let open = |name: &str| {
        OpenOptions::new()
            .write(true)
            .custom_flags(O_DIRECT)
            .open(dir.join(name))
            .unwrap()
    };
    let mut big = Aligned::new(1 << 20);
    big.slice().fill(0xa5);
    let mut small = Aligned::new(4096);
    small.slice().fill(0x3c);
    // A fixed permutation: distinct blocks, the same in every case.
    let total = (RND_MIB << 20) / 4096;
    let blocks: Vec<u64> = (0..RND_BLOCKS as u64)
        .map(|i| (i * 7919 + 13) % total as u64)
        .collect();
    let mut f = Figures::default();
    for pass in 0..2 {
        let seq = open("seq.dat");
        let t = Instant::now();
        for i in 0..SEQ_MIB {
            seq.write_all_at(big.slice(), (i as u64) << 20).unwrap();
        }
        seq.sync_data().unwrap();
        f.0[pass] = SEQ_MIB as f64 * 1.048_576 / t.elapsed().as_secs_f64();
        let rnd = open("rnd.dat");
        let t = Instant::now();
        for &b in &blocks {
            rnd.write_all_at(small.slice(), b * 4096).unwrap();
        }
        rnd.sync_data().unwrap();
        f.0[2 + pass] = (RND_BLOCKS * 4096) as f64 / 1e6 / t.elapsed().as_secs_f64();
    }
    f
}

fn lvm_case(vg: &LaneVg, name: &str, thin: bool, snapshots: usize) -> Figures {
    let dev = if thin {
        vg.create_thin("pool", name, 160)
    } else {
        vg.create_thick(name, 160)
    };
    mkfs("ext4", &dev);
    let m = Mount::new(&dev, "");
    prepare_files(m.path());
    for i in 0..snapshots {
        let snap = format!("{name}-s{i}");
        if thin {
            run("lvcreate", &["-y", "-s", "-n", &snap, &vg.full_name(name)]);
        } else {
            run(
                "lvcreate",
                &["-y", "-s", "-n", &snap, "-L", "96m", &vg.full_name(name)],
            );
        }
    }
    let f = load(m.path());
    drop(m);
    for i in 0..snapshots {
        vg.remove(&format!("{name}-s{i}"));
    }
    vg.remove(name);
    f
}

fn cow_case(vg: &LaneVg, d: &Daemon, store: &Path, name: &str, shadows: usize) -> Figures {
    let dev = vg.create_thick(name, 160);
    mkfs("ext4", &dev);
    let dir = tempfile::Builder::new()
        .prefix("vss-cow-")
        .tempdir()
        .unwrap();
    let m = dir.path().display().to_string();
    d.vssadmin(&[
        "add",
        "volume",
        &format!("/device={dev}"),
        &format!("/mount={m}"),
    ])
    .ok();
    prepare_files(dir.path());
    d.vssadmin(&[
        "add",
        "shadowstorage",
        &format!("/for={m}"),
        &format!("/on={}", store.display()),
        "/maxsize=UNBOUNDED",
    ])
    .ok();
    for _ in 0..shadows {
        d.vssadmin(&["create", "shadow", &format!("/for={m}")]).ok();
    }
    let f = load(dir.path());
    d.vssadmin(&["delete", "shadows", &format!("/for={m}"), "/all", "/quiet"])
        .ok();
    d.vssadmin(&["delete", "volume", &format!("/for={m}"), "/quiet"])
        .ok();
    run("umount", &[&m]);
    vg.remove(name);
    f
}

fn main() {
    if !vss_vmtest::in_lane("lane_peer_figures") {
        return;
    }
    let vg = LaneVg::create("vssbench");
    vg.create_thin_pool("pool", 2048);
    let store_dev = vg.create_thick("store", 1024);
    mkfs("ext4", &store_dev);
    let store = Mount::new(&store_dev, "");
    let runs = tempfile::tempdir().unwrap();
    let bus = Bus::start();
    let d = Daemon::start(
        &bus,
        &format!(
            "volume-run-dir = \"{}\"\n[providers]\nlvm = false\n",
            runs.path().display()
        ),
    );
    let cases: Vec<(String, Figures)> = vec![
        (
            "plain logical volume".into(),
            lvm_case(&vg, "plain", false, 0),
        ),
        (
            "thick, 1 snapshot".into(),
            lvm_case(&vg, "thick1", false, 1),
        ),
        (
            "thick, 8 snapshots".into(),
            lvm_case(&vg, "thick8", false, 8),
        ),
        (
            "thin volume, no snapshot".into(),
            lvm_case(&vg, "thin0", true, 0),
        ),
        ("thin, 1 snapshot".into(), lvm_case(&vg, "thin1", true, 1)),
        ("thin, 8 snapshots".into(), lvm_case(&vg, "thin8", true, 8)),
        (
            "vss copy-on-write, 1 shadow".into(),
            cow_case(&vg, &d, store.path(), "cow1", 1),
        ),
        (
            "vss copy-on-write, 8 shadows".into(),
            cow_case(&vg, &d, store.path(), "cow8", 8),
        ),
    ];
    let base = cases[0].1;
    println!("| Volume | seq 1 MiB first | seq 1 MiB rewrite | random 4 KiB first | random 4 KiB rewrite |");
    println!("|---|---:|---:|---:|---:|");
    for (name, f) in &cases {
        let cells: Vec<String> = (0..4)
            .map(|i| format!("{:.2}× ({:.1} MB/s)", f.0[i] / base.0[i], f.0[i]))
            .collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
    drop(d);
    drop(store);
}
