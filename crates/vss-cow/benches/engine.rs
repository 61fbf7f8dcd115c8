//! The engine alone, on files (no FUSE, no loop device): sequential 1 MiB
//! writes over 256 MiB that existed at the cut, with 0 and 1 shadows, as a
//! ratio; and the same with every write followed by a flush. Separates the
//! engine's own cost of a first overwrite from the kernel path's. Then warm
//! shadow reads (1 MiB, sequential, page cache warm) of copies made in order
//! and of copies made by random 16 KiB writes and then reordered, as a
//! ratio to live reads of the same size.
//! `cargo bench -p vss-cow --bench engine` (`COW_BENCH_PART=reads` or
//! `writes` runs one part).

use std::sync::Arc;
use std::time::Instant;

use vss_cow::{CowVolume, CreateOptions, DirStorage, FileBacking, Tuning};

const SIZE: u64 = 256 << 20;
/// Write size: 1 MiB, or `COW_BENCH_BLOCK_KIB` (the loop driver may split
/// requests before they reach the volume server).
fn block() -> usize {
    std::env::var("COW_BENCH_BLOCK_KIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(1 << 20, |k| k << 10)
}

struct Bench {
    _dir: tempfile::TempDir,
    vol: CowVolume,
}

/// A volume of `SIZE` bytes of ones on files, with `shadows` shadows.
fn volume(shadows: u32) -> Bench {
    let dir = tempfile::tempdir_in(std::env::var("TMPDIR").unwrap_or("/var/tmp".into())).unwrap();
    let img = dir.path().join("volume.img");
    std::fs::write(&img, vec![1u8; SIZE as usize]).unwrap();
    std::fs::create_dir(dir.path().join("storage")).unwrap();
    let origin = Arc::new(FileBacking::open(&img, true).unwrap());
    let storage = Arc::new(DirStorage::create(&dir.path().join("storage")).unwrap());
    let vol = CowVolume::create(
        origin,
        storage,
        CreateOptions {
            storage_id: 1,
            volume_id: 2,
            chunk_size: 16 * 1024,
            max_bytes: None,
            created_unix: 0,
        },
        Tuning::default(),
        None,
    )
    .unwrap();
    for i in 0..shadows {
        vol.create_shadow(u128::from(i) + 1, &[], 0).unwrap();
    }
    Bench { _dir: dir, vol }
}

fn run(shadows: u32, flush_each: bool) -> f64 {
    let b = volume(shadows);
    let vol = &b.vol;
    let data = vec![2u8; block()];
    let start = Instant::now();
    let mut off = 0;
    while off < SIZE {
        vol.write_live(&data, off).unwrap();
        if flush_each {
            vol.flush_live().unwrap();
        }
        off += data.len() as u64;
    }
    vol.flush_live().unwrap();
    (SIZE >> 20) as f64 / start.elapsed().as_secs_f64()
}

/// MiB/s of sequential 1 MiB reads over the volume by `read`: with `cold`,
/// one pass after the page cache was dropped (needs root); else `passes`
/// after one pass to warm the page cache.
fn read_passes(cold: bool, passes: u32, read: &dyn Fn(&mut [u8], u64)) -> f64 {
    let mut buf = vec![0u8; 1 << 20];
    let pass = |buf: &mut [u8]| {
        for off in (0..SIZE).step_by(buf.len()) {
            read(buf, off);
        }
    };
    let passes = if cold {
        std::fs::write("/proc/sys/vm/drop_caches", "3").expect("dropping caches needs root");
        1
    } else {
        pass(&mut buf);
        passes
    };
    let start = Instant::now();
    for _ in 0..passes {
        pass(&mut buf);
    }
    (SIZE >> 20) as f64 * f64::from(passes) / start.elapsed().as_secs_f64()
}

/// Cold and warm shadow reads against live reads, copies made by a
/// sequential or a random first overwrite (then reordered): [cold, warm] of
/// (live, shadow).
fn reads(random: bool) -> [(f64, f64); 2] {
    let b = volume(1);
    let vol = &b.vol;
    let cs = 16 * 1024u64;
    let data = vec![2u8; cs as usize];
    let mut chunks: Vec<u64> = (0..SIZE / cs).collect();
    if random {
        // A fixed permutation (multiplicative, odd step): no rand needed.
        let n = chunks.len() as u64;
        chunks = (0..n).map(|i| (i * 7919 + 13) % n).collect();
    }
    for c in chunks {
        vol.write_live(&data, c * cs).unwrap();
    }
    vol.flush_live().unwrap();
    while vol.reorder_copies(256).unwrap() > 0 {}
    let passes = std::env::var("COW_BENCH_READ_PASSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    [true, false].map(|cold| {
        let live = read_passes(cold, passes, &|buf, off| vol.read_live(buf, off).unwrap());
        let shadow = read_passes(cold, passes, &|buf, off| {
            vol.read_shadow(1, buf, off).unwrap()
        });
        (live, shadow)
    })
}

fn main() {
    let part = std::env::var("COW_BENCH_PART").unwrap_or_default();
    if part != "reads" {
        for flush_each in [false, true] {
            let base = run(0, flush_each);
            let one = run(1, flush_each);
            println!(
                "first overwrite, seq {} KiB{}: 0 shadows {base:.0} MiB/s, 1 shadow {one:.0} MiB/s, ratio {:.2}",
                block() >> 10,
                if flush_each { ", flush after each write" } else { "" },
                one / base
            );
        }
    }
    if part != "writes" {
        for random in [false, true] {
            let copies = if random {
                "of random writes, reordered"
            } else {
                "of a sequential overwrite"
            };
            for ((live, shadow), cache) in reads(random).into_iter().zip(["cold", "warm"]) {
                println!(
                    "{cache} reads, 1 MiB, copies {copies}: live {live:.0} MiB/s, shadow {shadow:.0} MiB/s, ratio {:.2}",
                    shadow / live
                );
            }
        }
    }
}
