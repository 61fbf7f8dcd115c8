#!/usr/bin/env bash
# Benchmark of the software provider's copy-on-write path (vss-volumed over
# vss-cow): fio write throughput inside the mounted ext4 with 0, 1, 8 and 64
# shadows against a plain loop device, shadow reads against live reads, and
# the write stall of a shadow cut against a bare freeze/thaw. Prints ratios
# as markdown tables (see docs/BENCHMARKS.md). Takes about 4 minutes.
#
# Run as root from anywhere: sudo bench/cow_io.sh
# It installs nothing (fio: apt-get install fio, or scripts/install-deps.sh)
# and builds the bench and vss-volumed in release mode through cargo bench.
# Everything the bench creates lives in one temp dir; mounts, loop devices and
# servers left there by an interrupted run are removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" -eq 0 ] || { echo "error: run as root (sudo $0)" >&2; exit 1; }
command -v fio >/dev/null || { echo "error: fio not found (apt-get install fio)" >&2; exit 1; }
for c in cargo mkfs.ext4 losetup fallocate findmnt; do
  command -v "$c" >/dev/null || { echo "error: $c not found" >&2; exit 1; }
done
[ -e /dev/fuse ] || { echo "error: /dev/fuse is missing" >&2; exit 1; }

work=$(mktemp -d)
cleanup() {
  set +e
  # Servers of this run only (their config lives under $work).
  for d in /proc/[0-9]*; do
    if { tr '\0' ' ' <"$d/cmdline"; } 2>/dev/null | grep -q "vss-volumed serve --config $work/"; then
      kill -9 "${d#/proc/}" 2>/dev/null
    fi
  done
  for m in $(findmnt -rn -o TARGET | grep "^$work/" | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m"
  done
  losetup -nl -O NAME,BACK-FILE 2>/dev/null | while read -r dev file; do
    case "$file" in "$work"/*) losetup -d "$dev" ;; esac
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

COW_BENCH_DIR="$work" cargo bench -p vss-volumed --bench cow_io "$@"
