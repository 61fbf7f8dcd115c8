#!/usr/bin/env bash
# Runs every test of vss: unit, property, snapshot, privileged (loop
# devices) and system tests (vssd on a private bus). Run as root.
# Privileged tests fail loudly without root or loop devices; set
# VSS_ALLOW_SKIP=1 to let them skip (they say so) instead.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -eq 0 ]; then
  scripts/install-deps.sh
fi
cargo build --workspace --bins --examples --locked
if command -v cargo-nextest >/dev/null 2>&1; then
  # Doc tests first (nextest does not run them), so the summary of the
  # whole suite is what closes the output.
  cargo test --workspace --locked --doc
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
