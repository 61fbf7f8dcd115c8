//! Crash test: a child process runs the engine on real files (random
//! writes, cuts, deletions, a small maximum size so the oldest shadows are
//! evicted) and reports each shadow it created with the BLAKE3 of its
//! content. The parent SIGKILLs it at a random moment, hundreds of times,
//! reopening the same shadow storage each time. After every recovery each
//! reported shadow must read back its recorded hash, or be reported lost;
//! it may be missing only if it was being deleted or was evicted (oldest
//! first).
//!
//! `VSS_COW_CRASH_ROUNDS` sets the number of kills (default 300).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Rng;
use vss_cow::{CowError, CowVolume, DirStorage, FileBacking, Tuning};

const CHUNK: u32 = 4096;
const VOLUME: u64 = 4 << 20;
const MAX_BYTES: u64 = 1536 << 10;
const CHILD_ENV: &str = "VSS_COW_CRASH_CHILD";

fn tuning() -> Tuning {
    Tuning {
        grow_step: 64 << 10,
        max_shadows: 12,
        evict_at_limit: true,
        compact_after_bytes: 32 << 10,
        prepare_ahead: 128 << 10,
    }
}

fn open(dir: &Path) -> (CowVolume, vss_cow::Recovery) {
    let origin = Arc::new(FileBacking::open(&dir.join("volume.img"), true).unwrap());
    let storage = Arc::new(DirStorage::open(&dir.join("diff")).unwrap());
    CowVolume::open(origin, storage, tuning(), None).unwrap()
}

fn shadow_hash(vol: &CowVolume, id: u128) -> Result<String, CowError> {
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut off = 0;
    while off < VOLUME {
        vol.read_shadow(id, &mut buf, off)?;
        h.update(&buf);
        off += buf.len() as u64;
    }
    Ok(h.finalize().to_hex().to_string())
}

fn live_hash(vol: &CowVolume) -> String {
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut off = 0;
    while off < VOLUME {
        vol.read_live(&mut buf, off).unwrap();
        h.update(&buf);
        off += buf.len() as u64;
    }
    h.finalize().to_hex().to_string()
}

/// The child: works until killed. Protocol on stdout, one line each:
/// `CREATED <id> <blake3>` after a cut returned, `DELETING <id>` before a
/// requested deletion.
fn child(dir: &Path, seed: u64) -> ! {
    let (vol, _) = open(dir);
    let mut out = std::io::stdout().lock();
    let mut rng = Rng(seed | 1);
    let mut next_id = u128::from(seed) << 32;
    writeln!(out, "READY").unwrap();
    out.flush().unwrap();
    loop {
        match rng.below(40) {
            0 => {
                next_id += 1;
                let info = vol.create_shadow(next_id, &[], 0).unwrap();
                // Nothing writes between the cut and this read: the live
                // content is the shadow's.
                let hash = live_hash(&vol);
                writeln!(out, "CREATED {} {hash}", info.shadow_id).unwrap();
                out.flush().unwrap();
            }
            1 => {
                let shadows = vol.shadows();
                if !shadows.is_empty() {
                    let s = &shadows[rng.below(shadows.len() as u64) as usize];
                    writeln!(out, "DELETING {}", s.shadow_id).unwrap();
                    out.flush().unwrap();
                    vol.delete_shadow(s.shadow_id).unwrap();
                }
            }
            2 => {
                // What the volume server's background threads do.
                vol.prepare_storage().unwrap();
                vol.flush_held().unwrap();
            }
            3 | 4 => {
                // The volume server's idle-time reordering of copies.
                vol.reorder_copies(1 + rng.below(64) as usize).unwrap();
            }
            _ => {
                let len = (1 + rng.below(16)) * 4096 - rng.below(3) * 512;
                let off = rng.below(VOLUME - len);
                let byte = rng.next() as u8;
                let data = vec![byte; len as usize];
                vol.write_live(&data, off).unwrap();
            }
        }
    }
}

#[test]
fn crash_child_entry() {
    // Runs only as the child of `shadows_survive_sigkill_at_any_point`.
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let seed = std::env::var("VSS_COW_CRASH_SEED")
            .unwrap()
            .parse()
            .unwrap();
        child(&PathBuf::from(dir), seed);
    }
}

#[derive(Default)]
struct Reported {
    /// id → hash, in creation order (ids grow).
    created: BTreeMap<u128, String>,
    deleting: Vec<u128>,
}

#[test]
fn shadows_survive_sigkill_at_any_point() {
    let rounds = common::env_u64("VSS_COW_CRASH_ROUNDS", 300);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::File::create(dir.join("volume.img"))
        .unwrap()
        .set_len(VOLUME)
        .unwrap();
    std::fs::create_dir(dir.join("diff")).unwrap();
    {
        let origin = Arc::new(FileBacking::open(&dir.join("volume.img"), true).unwrap());
        let storage = Arc::new(DirStorage::create(&dir.join("diff")).unwrap());
        common::create(origin, storage, CHUNK, Some(MAX_BYTES), tuning());
    }
    let exe = std::env::current_exe().unwrap();
    let mut reported = Reported::default();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut checked = 0usize;
    let mut lost_seen = 0usize;
    for round in 1..=rounds {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child_entry",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir)
            .env("VSS_COW_CRASH_SEED", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // Kill after a random time; the reader collects what the child
        // reported until then.
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => lines.push(l),
                    Err(_) => break,
                }
            }
            lines
        });
        let delay = Duration::from_micros(rng.below(60_000));
        let start = Instant::now();
        std::thread::sleep(delay);
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(!status.success(), "the child must not exit by itself");
        for line in reader.join().unwrap() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts.as_slice() {
                ["CREATED", id, hash] => {
                    reported
                        .created
                        .insert(id.parse().unwrap(), (*hash).to_owned());
                }
                ["DELETING", id] => reported.deleting.push(id.parse().unwrap()),
                _ => {}
            }
        }
        let (vol, recovery) = open(dir);
        let present: Vec<u128> = vol.shadows().iter().map(|s| s.shadow_id).collect();
        let oldest_present = present.iter().min().copied();
        for (&id, hash) in &reported.created {
            if present.contains(&id) {
                match shadow_hash(&vol, id) {
                    Ok(h) => {
                        assert_eq!(&h, hash, "round {round}: shadow {id} reads back wrong data")
                    }
                    Err(CowError::ShadowLost { .. }) => lost_seen += 1,
                    Err(e) => panic!("round {round}: shadow {id}: {e}"),
                }
                checked += 1;
            } else {
                // Gone: it was being deleted, or evicted, which takes the
                // oldest first — so it must be older than every shadow left.
                let deleting = reported.deleting.contains(&id);
                let evicted = oldest_present.is_none_or(|oldest| id < oldest);
                assert!(
                    deleting || evicted,
                    "round {round}: shadow {id} vanished (present: {present:?}, recovery: {recovery:?}, after {:?})",
                    start.elapsed()
                );
            }
        }
        // Forget shadows that are gone, so later rounds check the rest.
        reported.created.retain(|id, _| present.contains(id));
    }
    eprintln!("{rounds} kills; {checked} shadow checks after recovery; {lost_seen} reported lost");
    assert!(
        checked > rounds as usize / 2,
        "too few shadows were checked ({checked})"
    );
}
