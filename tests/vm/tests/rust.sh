#!/usr/bin/env bash
# Runs the Rust tests meant for the VM lane (the integration tests of
# crates/vss-vmtest) in the guest. scripts/vm-test.sh builds them on the host
# and lists their executables in $CARGO_TARGET_DIR/vm-lane/rust-tests.txt;
# this script runs each of them. Arguments are passed to every test binary
# (for example a test name filter).
# vm-lane-timeout: 480
set -uo pipefail

[ "${VSS_VM_LANE:-}" = 1 ] || { echo "rust.sh: not in the VM lane" >&2; exit 1; }
list=${CARGO_TARGET_DIR:?}/vm-lane/rust-tests.txt
if ! [ -s "$list" ]; then
	echo "rust.sh: $list is missing or empty: scripts/vm-test.sh builds the lane's test binaries and writes it" >&2
	exit 1
fi

failed=()
n=0
while read -r exe; do
	[ -n "$exe" ] || continue
	n=$((n + 1))
	echo "== ${exe#"$CARGO_TARGET_DIR"/}"
	if ! [ -x "$exe" ]; then
		echo "rust.sh: $exe is missing" >&2
		failed+=("$exe")
		continue
	fi
	"$exe" "$@" || failed+=("$exe")
done <"$list"

if [ ${#failed[@]} -gt 0 ]; then
	echo "rust.sh: ${#failed[@]} of $n test binaries failed:" >&2
	printf '  %s\n' "${failed[@]}" >&2
	exit 1
fi
echo "rust.sh: all $n test binaries passed"
