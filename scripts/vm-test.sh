#!/usr/bin/env bash
# Runs the VM lane (docs/VM-LANE.md): tests that need kernel features the
# host may lack (device-mapper, LVM thick and thin snapshots), in a QEMU guest
# that boots a stock Debian kernel. Run as root.
#
#   scripts/vm-test.sh [NAME...]
#
# Builds the guest (cached: a few minutes the first time, then nothing), the
# workspace binaries and the Rust lane tests (crate vss-vmtest), then runs
# every tests/vm/tests/*.sh (or only the NAMEs given, like `smoke`) in a
# fresh guest each, and prints a summary. Fails if any script fails, hangs
# or the guest crashes. Without root or QEMU it fails too, unless
# VSS_ALLOW_SKIP=1, which makes it skip (saying so).
set -euo pipefail
cd "$(dirname "$0")/.."

cannot_run() {
	if [ "${VSS_ALLOW_SKIP:-}" = 1 ]; then
		echo "SKIPPED: VM lane: $*" >&2
		exit 0
	fi
	echo "vm-test.sh: the VM lane cannot run: $*. Set VSS_ALLOW_SKIP=1 to skip it explicitly." >&2
	exit 1
}
[ "$(id -u)" -eq 0 ] || cannot_run "not running as root"
for tool in qemu-system-x86_64 mmdebstrap cpio; do
	command -v "$tool" >/dev/null || cannot_run "$tool is missing (run scripts/install-deps.sh)"
done

scripts=()
if [ $# -gt 0 ]; then
	for name in "$@"; do
		s=tests/vm/tests/${name%.sh}.sh
		[ -f "$s" ] || { echo "vm-test.sh: no lane test $s" >&2; exit 2; }
		scripts+=("$s")
	done
else
	scripts=(tests/vm/tests/*.sh)
fi

start=$SECONDS
echo "== VM lane: guest"
tests/vm/lane.sh build
build_s=$((SECONDS - start))

echo "== VM lane: workspace binaries and lane test binaries"
cargo build --workspace --bins --locked
target=$(cargo metadata --format-version 1 --no-deps --locked |
	grep -o '"target_directory":"[^"]*"' | sed 's/^"target_directory":"//; s/"$//')
[ -n "$target" ] || { echo "vm-test.sh: cannot find the cargo target directory" >&2; exit 1; }
mkdir -p "$target/vm-lane"
cargo test -p vss-vmtest --no-run --locked --message-format=json-render-diagnostics |
	grep -o '"executable":"[^"]*"' | sed 's/^"executable":"//; s/"$//' | sort -u \
	>"$target/vm-lane/rust-tests.txt"
[ -s "$target/vm-lane/rust-tests.txt" ] || { echo "vm-test.sh: no lane test binaries were built" >&2; exit 1; }
sed 's/^/  /' "$target/vm-lane/rust-tests.txt"

# A guest that crashed (no exit code recorded, or QEMU failed) is booted once
# more: a guest under single-threaded TCG still dies now and then. The
# summary says so, with what the console showed last; a script that failed,
# hung or ran into a kernel bug report is not retried.
results=()
notes=()
failed=0
for s in "${scripts[@]}"; do
	limit=$(sed -n 's/^# vm-lane-timeout: *\([0-9][0-9]*\).*/\1/p' "$s" | head -n 1)
	name=$(basename "$s" .sh)
	outcome=$target/vm-lane/logs/$name.outcome
	t0=$SECONDS
	attempt=1
	while :; do
		again=
		[ "$attempt" -gt 1 ] && again=", on boot $attempt"
		echo "== VM lane: $s${again:+ (boot $attempt)}"
		rc=0
		CARGO_TARGET_DIR=$target tests/vm/lane.sh run --timeout "${limit:-300}" "$s" || rc=$?
		how=$(cat "$outcome" 2>/dev/null || echo "no outcome recorded")
		if [ "$rc" -ne 0 ]; then
			notes+=("$s, boot $attempt: exit $rc: $how")
		fi
		if [ "$attempt" -eq 1 ] && [ "$rc" -eq 255 ] &&
			grep -qE '^(guest crash|QEMU exited)' "$outcome" 2>/dev/null; then
			echo "vm-test.sh: $s: the guest ended without an exit code ($how); booting it once more" >&2
			cp "$target/vm-lane/logs/$name.console.log" "$target/vm-lane/logs/$name.boot1.console.log" 2>/dev/null || true
			attempt=2
			continue
		fi
		break
	done
	took=$((SECONDS - t0))
	if [ "$rc" -eq 0 ]; then
		results+=("PASS  ${took}s  $s$again")
	else
		results+=("FAIL  ${took}s  $s (exit $rc$again: $how)")
		failed=$((failed + 1))
	fi
done

echo
echo "== VM lane summary (guest build or cache check ${build_s}s, total $((SECONDS - start))s)"
printf '  %s\n' "${results[@]}"
if [ ${#notes[@]} -gt 0 ]; then
	echo "Failed boots (console logs in $target/vm-lane/logs/):"
	printf '  %s\n' "${notes[@]}"
fi
if [ "$failed" -gt 0 ]; then
	echo "VM lane: $failed of ${#scripts[@]} scripts FAILED" >&2
	exit 1
fi
echo "VM lane: all ${#scripts[@]} scripts passed"
