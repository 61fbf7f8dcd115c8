//! The engine alone, on files (no FUSE, no loop device): sequential 1 MiB
//! writes over 256 MiB that existed at the cut, with 0 and 1 shadows, as a
//! ratio; and the same with every write followed by a flush. Separates the
//! engine's own cost of a first overwrite from the kernel path's.
//! `cargo bench -p vss-cow --bench engine`

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

fn run(shadows: u32, flush_each: bool) -> f64 {
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

fn main() {
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
