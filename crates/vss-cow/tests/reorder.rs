//! Reordering copies while shadows are read and the volume is written: a
//! reader that races the moves (and the reuse of the slots they free) never
//! sees a wrong byte and no shadow is lost; afterwards the copies of a
//! shadow whose chunks were preserved in random order lie in chunk order.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use vss_cow::{CowVolume, MemBacking, MemStorage, Tuning};

const CHUNK: u32 = 4096;
const CHUNKS: u64 = 256;
const VOLUME: u64 = CHUNKS * CHUNK as u64;

/// Tiny deterministic generator.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn read_all(vol: &CowVolume, id: u128) -> Vec<u8> {
    let mut buf = vec![0; VOLUME as usize];
    vol.read_shadow(id, &mut buf, 0).expect("read the shadow");
    buf
}

#[test]
fn reads_racing_reorder_stay_exact() {
    let origin = MemBacking::new(VOLUME);
    let vol = Arc::new(
        CowVolume::create(
            Arc::new(origin),
            Arc::new(MemStorage::new(None)),
            common::options(CHUNK, None),
            Tuning::default(),
            None,
        )
        .unwrap(),
    );
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let fill = |vol: &CowVolume, rng: &mut Rng, byte: u8| {
        // Every chunk once, in random order: copies land scattered.
        let mut order: Vec<u64> = (0..CHUNKS).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        for c in order {
            let data = vec![byte ^ c as u8; 512];
            vol.write_live(&data, c * CHUNK as u64 + 512).unwrap();
        }
        vol.flush_held().unwrap();
    };
    fill(&vol, &mut rng, 1);
    vol.create_shadow(1, &[], 0).unwrap();
    let first = read_all(&vol, 1);
    fill(&vol, &mut rng, 2);

    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (vol, stop) = (vol.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(Ordering::SeqCst) {
                assert!(read_all(&vol, 1) == first, "shadow 1 read wrong");
                reads += 1;
            }
            reads
        })
    };
    // Moves, while a second shadow's copies take the slots they free.
    vol.create_shadow(2, &[], 0).unwrap();
    let second = read_all(&vol, 2);
    let mut moved = 0;
    loop {
        let n = vol.reorder_copies(8).unwrap();
        moved += n;
        if n == 0 {
            break;
        }
        let c = rng.below(CHUNKS);
        vol.write_live(&[3; 100], c * CHUNK as u64).unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    let reads = reader.join().expect("reader");
    assert!(moved >= CHUNKS, "moved {moved} copies");
    assert!(reads > 0);
    assert_eq!(read_all(&vol, 2), second);
    assert!(vol.shadows().iter().all(|s| s.lost.is_none()));
    // In order now: nothing more to move.
    assert_eq!(vol.reorder_copies(8).unwrap(), 0);
}
