#!/usr/bin/env bash
# Runs every test of vss: unit, property, snapshot, privileged (loop
# devices) and system tests (vssd on a private bus), then the VM lane
# (scripts/vm-test.sh: device-mapper and LVM tests in a QEMU guest, see
# docs/VM-LANE.md). Run as root.
# Privileged tests fail loudly without root or loop devices; set
# VSS_ALLOW_SKIP=1 to let them skip (they say so) instead.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -eq 0 ]; then
  scripts/install-deps.sh
fi
# The build takes ~12 GB and the loop images live in $TMPDIR: a host disk
# that fills up shows as ENOSPC inside the test volumes, so say it first.
free_gb() { df -P --block-size=1G "$1" 2>/dev/null | awk 'NR == 2 { print $4 }'; }
for d in "${CARGO_TARGET_DIR:-target}" "${TMPDIR:-/tmp}"; do
  mkdir -p "$d"
  free=$(free_gb "$d")
  if [ -n "$free" ] && [ "$free" -lt 15 ]; then
    echo "test.sh: WARNING: only $free GB free under $d (about 15 GB needed);" \
      "tests may fail with 'No space left on device'" >&2
  fi
done
cargo build --workspace --bins --examples --locked
# vss-vmtest holds the VM lane's tests: they run only inside the guest
# (scripts/vm-test.sh below), never on the host.
host_rc=0
if command -v cargo-nextest >/dev/null 2>&1; then
  # Doc tests first (nextest does not run them), so the summary of the
  # whole suite is what closes the output.
  cargo test --workspace --exclude vss-vmtest --locked --doc
  cargo nextest run --workspace --locked --no-fail-fast -E 'not package(vss-vmtest)' || host_rc=$?
else
  cargo test --workspace --exclude vss-vmtest --locked --no-fail-fast || host_rc=$?
fi
vm_rc=0
scripts/vm-test.sh || vm_rc=$?
if [ "$host_rc" -ne 0 ] || [ "$vm_rc" -ne 0 ]; then
  echo "test.sh: FAILED (host tests exit $host_rc, VM lane exit $vm_rc)" >&2
  df -h "${CARGO_TARGET_DIR:-target}" "${TMPDIR:-/tmp}" >&2 || true
  exit 1
fi
