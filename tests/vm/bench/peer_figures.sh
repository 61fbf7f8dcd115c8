#!/usr/bin/env bash
# Peer figures for docs/BENCHMARKS.md, in the VM lane: the same write load
# on a plain logical volume, with 1 and 8 thick and thin LVM snapshots, and
# on a vss copy-on-write volume with 1 and 8 shadows, as ratios to the
# plain volume (crates/vss-vmtest/examples/lane_peer_figures.rs).
#
#   cargo build --workspace --bins --examples
#   tests/vm/lane.sh run --timeout 1200 tests/vm/bench/peer_figures.sh
#
# Not part of the test run: it measures, it checks nothing.
# vm-lane-timeout: 1200
set -euo pipefail
[ "${VSS_VM_LANE:-}" = 1 ] || { echo "peer_figures.sh: not in the VM lane" >&2; exit 1; }
exe=${CARGO_TARGET_DIR:?}/debug/examples/lane_peer_figures
[ -x "$exe" ] || { echo "peer_figures.sh: $exe is missing: cargo build -p vss-vmtest --examples" >&2; exit 1; }
"$exe"
