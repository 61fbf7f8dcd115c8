//! Promise 3 when the shadow storage fails outright: a shadow that had to be
//! marked lost while even the journal could not be written must still be
//! reported lost after a restart, never read back as if it were exact.

mod common;

use std::sync::Arc;

use vss_cow::{Backing, CowError, CowVolume, MemBacking, MemStorage, Tuning};

const CHUNK: u32 = 16 * 1024;
const SIZE: u64 = 64 * CHUNK as u64;

fn open(origin: &MemBacking, storage: &MemStorage) -> (CowVolume, vss_cow::Recovery) {
    CowVolume::open(
        Arc::new(origin.clone()),
        Arc::new(storage.clone()),
        Tuning::default(),
        None,
    )
    .unwrap()
}

fn create(origin: &MemBacking, storage: &MemStorage) -> CowVolume {
    CowVolume::create(
        Arc::new(origin.clone()),
        Arc::new(storage.clone()),
        common::options(CHUNK, None),
        Tuning::default(),
        None,
    )
    .unwrap()
}

#[test]
fn a_loss_the_journal_could_not_record_survives_a_restart() {
    let origin = MemBacking::new(SIZE);
    origin.write_at(&vec![1u8; SIZE as usize], 0).unwrap();
    let storage = MemStorage::new(None);
    let vol = create(&origin, &storage);
    vol.create_shadow(7, &[], 0).unwrap();
    // The disk holding the shadow storage dies: data and journal fail.
    storage.data.set_failing(true);
    storage.journal_backing().set_failing(true);
    // The live write still goes through; the shadow cannot stay exact.
    vol.write_live(&vec![9u8; CHUNK as usize], 0).unwrap();
    vol.flush_live().unwrap();
    let mut buf = vec![0u8; CHUNK as usize];
    assert!(matches!(
        vol.read_shadow(7, &mut buf, 0),
        Err(CowError::ShadowLost { .. })
    ));
    drop(vol);

    // Restart with the disk readable again: the journal never heard of the
    // loss, and the chunk's old content is gone from the live volume.
    storage.data.set_failing(false);
    storage.journal_backing().set_failing(false);
    let (vol, recovery) = open(&origin, &storage);
    assert_eq!(recovery.lost.len(), 1, "{:?}", recovery.lost);
    assert_eq!(recovery.lost[0].0, 7);
    assert!(matches!(
        vol.read_shadow(7, &mut buf, 0),
        Err(CowError::ShadowLost { .. })
    ));
    drop(vol);

    // Now the journal holds the loss and the marker is cleared: a second
    // restart finds it lost from the journal alone.
    let marker = storage.superblock.snapshot();
    assert!(
        marker[2 * 4096..3 * 4096].iter().all(|&b| b == 0),
        "the marker was not cleared"
    );
    let (vol, recovery) = open(&origin, &storage);
    assert!(recovery.lost.is_empty(), "{:?}", recovery.lost);
    assert!(matches!(
        vol.read_shadow(7, &mut buf, 0),
        Err(CowError::ShadowLost { .. })
    ));
}

#[test]
fn healthy_storage_has_no_marker_and_shadows_stay_readable() {
    let origin = MemBacking::new(SIZE);
    let storage = MemStorage::new(None);
    let vol = create(&origin, &storage);
    vol.create_shadow(3, &[], 0).unwrap();
    vol.write_live(&vec![5u8; CHUNK as usize], 0).unwrap();
    vol.flush_live().unwrap();
    drop(vol);
    let (vol, recovery) = open(&origin, &storage);
    assert!(recovery.lost.is_empty());
    let mut buf = vec![1u8; CHUNK as usize];
    vol.read_shadow(3, &mut buf, 0).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
}
