#!/usr/bin/env bash
# The VM test lane: runs a test script as root inside a QEMU guest that boots
# a stock Debian kernel (bookworm-backports), for tests that need kernel
# features the host may lack (device-mapper, LVM thin pools, ublk, nbd, ...).
# See docs/VM-LANE.md.
#
#   tests/vm/lane.sh build
#       Builds the guest once and caches it in $VSS_VM_CACHE (default
#       /var/cache/vss-vm-lane), keyed by a hash of tests/vm/recipe/*: a
#       changed recipe builds a new guest, an unchanged one is reused.
#   tests/vm/lane.sh run [--timeout SECS] [--env NAME=VALUE]... SCRIPT [ARGS...]
#       Boots the guest (building it first if needed) and runs SCRIPT ARGS as
#       root in it, from the workspace root. The workspace root (and
#       CARGO_TARGET_DIR, if it lies outside) is shared into the guest at the
#       same absolute path. SCRIPT gets VSS_VM_LANE=1, VSS_VM_DISK (a fresh,
#       empty 8 GiB test disk), VSS_WORKSPACE and CARGO_TARGET_DIR (absolute).
#       Prints the script's output and exits with its exit code. A kernel
#       panic, a hang past the timeout (default 600 s) or any other end without
#       a recorded exit code is a failure (124 for a timeout, 255 otherwise),
#       reported with the tail of the guest console; so is a script that
#       passed while the guest kernel reported a bug (Oops, BUG, panic). The
#       whole console log of the last run of each script is kept in
#       $CARGO_TARGET_DIR/vm-lane/logs/SCRIPTNAME.console.log, and a line
#       saying how it ended in SCRIPTNAME.outcome beside it.
#   tests/vm/lane.sh clean
#       Removes the cache.
#
# Environment: VSS_VM_CACHE, VSS_VM_MEM (MiB, default 2560), VSS_VM_SMP
# (default 2), VSS_VM_DISK_SIZE (default 8G), VSS_VM_VERBOSE=1 (stream the
# whole console, kernel messages included, instead of the script output only),
# VSS_VM_MIRROR and VSS_VM_SECURITY_MIRROR (Debian mirrors for the build).
set -euo pipefail

lane_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$lane_dir/../.." && pwd)
recipe=$lane_dir/recipe
cache=${VSS_VM_CACHE:-/var/cache/vss-vm-lane}

die() {
	echo "lane: $*" >&2
	exit 1
}

usage() {
	sed -n '/^#   tests/,/^# Environment/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
}

# 16 hex digits over the names and contents of the recipe files.
recipe_key() {
	(cd "$recipe" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) |
		sha256sum | cut -c1-16
}

guest_dir() {
	echo "$cache/guest-$(recipe_key)"
}

cmd_build() {
	local guest key tmp start
	key=$(recipe_key)
	guest=$cache/guest-$key
	if [ -f "$guest/rootfs.ext4" ]; then
		echo "lane: guest $key is cached in $guest"
		return 0
	fi
	[ "$(id -u)" -eq 0 ] || die "building the guest needs root (mmdebstrap, chroot)"
	mkdir -p "$cache"
	# One build at a time; a second caller waits and then finds the guest.
	exec 9>"$cache/lock"
	flock 9
	if [ -f "$guest/rootfs.ext4" ]; then
		exec 9>&-
		echo "lane: guest $key is cached in $guest"
		return 0
	fi
	tmp=$cache/building-$key.$$
	# --one-file-system: never follow a mount a killed build left behind.
	# shellcheck disable=SC2064
	trap "rm -rf --one-file-system '$tmp'" EXIT
	start=$SECONDS
	echo "lane: building guest $key in $cache (a few minutes)"
	"$recipe/build-image.sh" "$tmp"
	mv "$tmp" "$guest"
	trap - EXIT
	# Older guests are of no further use.
	find "$cache" -mindepth 1 -maxdepth 1 -name 'guest-*' ! -name "guest-$key" \
		-exec rm -rf --one-file-system {} +
	exec 9>&-
	echo "lane: guest $key built in $((SECONDS - start)) s"
}

cmd_clean() {
	[ -d "$cache" ] || return 0
	rm -rf --one-file-system "$cache"
	echo "lane: removed $cache"
}

# The QEMU (timeout) and tail processes and the run directory of cmd_run,
# cleaned up on exit, also on errors and signals.
qpid=
tpid=
lane_run_dir=
lane_cleanup() {
	if [ -n "$qpid" ]; then
		kill "$qpid" 2>/dev/null
		wait "$qpid" 2>/dev/null
	fi
	[ -z "$tpid" ] || kill "$tpid" 2>/dev/null
	[ -z "$lane_run_dir" ] || rm -rf --one-file-system "$lane_run_dir"
	return 0
}

# Kernel messages that mean the guest kernel is broken, whatever the script
# said.
kernel_trouble='Kernel panic|BUG: |Oops: |general protection fault|blocked for more than'

# Writes how a run ended to file $1: the reason $2 and, if console log $3 is
# given, its first kernel trouble line or else its last line (so that a
# summary printed much later still says what happened).
lane_outcome() {
	local file=$1 reason=$2 log=$3 detail=
	if [ -n "$log" ] && [ -s "$log" ]; then
		detail=$(grep -E "$kernel_trouble" "$log" | head -n 1 | tr -d '\r')
		[ -n "$detail" ] || detail=$(grep -v '^[[:space:]]*$' "$log" | tail -n 1 | tr -d '\r')
	fi
	if [ -n "$detail" ]; then
		printf '%s; console: %s\n' "$reason" "${detail:0:200}" >"$file" 2>/dev/null
	else
		printf '%s\n' "$reason" >"$file" 2>/dev/null
	fi
	return 0
}

# Prints the last lines of the console log and any kernel trouble in it, for
# failures.
show_console_tail() {
	local log=$1
	echo "lane: ---- last lines of the guest console (whole log: $log) ----" >&2
	if [ -s "$log" ]; then
		tail -n 40 "$log" | tr -d '\r' >&2
	else
		echo "(empty: the guest printed nothing)" >&2
	fi
	echo "lane: ---- end of console ----" >&2
	if grep -qE "$kernel_trouble" "$log" 2>/dev/null; then
		echo "lane: kernel trouble on the console:" >&2
		grep -E "$kernel_trouble" "$log" | tr -d '\r' | head -n 10 >&2
	fi
}

cmd_run() {
	local timeout=600 envs=() script
	while [ $# -gt 0 ]; do
		case $1 in
		--timeout) timeout=${2:?--timeout needs seconds}; shift 2 ;;
		--timeout=*) timeout=${1#*=}; shift ;;
		--env) envs+=("${2:?--env needs NAME=VALUE}"); shift 2 ;;
		--env=*) envs+=("${1#*=}"); shift ;;
		--) shift; break ;;
		-*) usage ;;
		*) break ;;
		esac
	done
	[ $# -ge 1 ] || usage
	[[ $timeout =~ ^[0-9]+$ ]] || die "--timeout wants whole seconds, not $timeout"
	script=$(realpath "$1")
	shift
	[ -f "$script" ] || die "no such script: $script"
	command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 is missing (run scripts/install-deps.sh)"

	cmd_build >&2
	local guest
	guest=$(guest_dir)
	[ -f "$guest/rootfs.ext4" ] || die "guest build failed"

	# Shared directories: the workspace root and the cargo target directory.
	local target shares=("$root")
	target=$(realpath -m "${CARGO_TARGET_DIR:-$root/target}")
	case $target/ in
	"$root"/*) ;;
	*) shares+=("$target") ;;
	esac
	local in_share=0 s
	for s in "${shares[@]}"; do
		case $script in "$s"/*) in_share=1 ;; esac
	done

	local run ctl
	run=$(mktemp -d "${TMPDIR:-/tmp}/vss-vm-run.XXXXXX")
	ctl=$run/share
	mkdir "$ctl"
	: >"$ctl/out.log"
	lane_run_dir=$run
	trap lane_cleanup EXIT
	trap 'exit 130' INT TERM
	local shown=${script#"$root"/}
	if [ "$in_share" = 0 ]; then
		cp "$script" "$ctl/script"
		script=/lane/script
	fi

	local qshares=() conf_shares=() i=0
	for s in "${shares[@]}"; do
		qshares+=(-virtfs "local,path=$s,mount_tag=share$i,security_model=none,multidevs=remap")
		conf_shares+=("share$i=$s")
		i=$((i + 1))
	done
	local genv=("VSS_WORKSPACE=$root" "CARGO_TARGET_DIR=$target" "RUST_BACKTRACE=${RUST_BACKTRACE:-1}")
	[ -n "${RUST_LOG:-}" ] && genv+=("RUST_LOG=$RUST_LOG")
	genv+=("${envs[@]}")
	{
		# shellcheck disable=SC2034
		LANE_SHARES=("${conf_shares[@]}") LANE_SCRIPT=$script LANE_ARGS=("$@") \
			LANE_ENV=("${genv[@]}") LANE_WORKDIR=$root
		declare -p LANE_SHARES LANE_SCRIPT LANE_ARGS LANE_ENV LANE_WORKDIR
	} >"$ctl/lane.conf"

	truncate -s "${VSS_VM_DISK_SIZE:-8G}" "$run/test-disk.img"
	local bios=() loglevel=5
	[ -f /usr/share/qemu/qboot.rom ] && bios=(-bios /usr/share/qemu/qboot.rom)
	[ "${VSS_VM_VERBOSE:-0}" = 1 ] && loglevel=7
	# Single-threaded TCG: multi-threaded TCG occasionally panics the guest
	# early in boot (a race in the kernel's live code patching), and KVM is
	# not assumed (nested or paravirtual KVM can be slower than TCG).
	# shellcheck disable=SC2054 # commas inside QEMU option values
	local qemu=(qemu-system-x86_64 -nodefaults -no-user-config -display none
		-machine pc -accel tcg,thread=single -smp "${VSS_VM_SMP:-2}" -m "${VSS_VM_MEM:-2560}"
		"${bios[@]}" -no-reboot
		-kernel "$guest/vmlinuz" -initrd "$guest/initramfs.cpio"
		-append "console=ttyS0 panic=-1 loglevel=$loglevel mitigations=off"
		-drive "if=none,id=root,file=$guest/rootfs.ext4,format=raw,snapshot=on"
		-device virtio-blk-pci,drive=root,serial=lane-root
		-drive "if=none,id=td0,file=$run/test-disk.img,format=raw,cache=unsafe,discard=unmap"
		-device virtio-blk-pci,drive=td0,serial=lane-test0
		-virtfs "local,path=$ctl,mount_tag=lane,security_model=none"
		"${qshares[@]}"
		-serial "file:$run/console.log" -monitor none)

	local start=$SECONDS
	echo "lane: booting the guest for $shown (timeout ${timeout} s)" >&2
	: >"$run/console.log"
	rm -f "$target/vm-lane/logs/$(basename "$shown" .sh).outcome"
	timeout --kill-after=10 "$timeout" "${qemu[@]}" </dev/null >"$run/qemu.log" 2>&1 &
	qpid=$!
	if [ "${VSS_VM_VERBOSE:-0}" = 1 ]; then
		tail -n +1 -s 0.2 -f --pid="$qpid" "$run/console.log" | tr -d '\r' &
	else
		tail -n +1 -s 0.2 -f --pid="$qpid" "$ctl/out.log" &
	fi
	tpid=$!
	local qrc=0
	wait "$qpid" || qrc=$?
	qpid=
	wait "$tpid" 2>/dev/null || true
	tpid=
	local took=$((SECONDS - start))
	# The console log outlives the run, for a look after a failure.
	local console
	console=$target/vm-lane/logs/$(basename "$shown" .sh).console.log
	if mkdir -p "${console%/*}" 2>/dev/null && cp "$run/console.log" "$console" 2>/dev/null; then
		:
	else
		console=$run/console.log
	fi

	# One line saying how the run ended, for the caller's summary.
	local outcome=${console%.console.log}.outcome
	if [ "$qrc" -eq 124 ] || [ "$qrc" -eq 137 ]; then
		show_console_tail "$console"
		lane_outcome "$outcome" "hang: no end within ${timeout} s" "$console"
		echo "lane: FAILED: the guest did not finish within ${timeout} s (hang); killed" >&2
		return 124
	fi
	if [ "$qrc" -ne 0 ]; then
		cat "$run/qemu.log" >&2
		show_console_tail "$console"
		lane_outcome "$outcome" "QEMU exited with status $qrc after ${took} s" "$console"
		echo "lane: FAILED: QEMU exited with status $qrc after ${took} s" >&2
		return 255
	fi
	if ! [ -f "$ctl/rc" ] || ! [[ $(cat "$ctl/rc") =~ ^[0-9]+$ ]]; then
		show_console_tail "$console"
		lane_outcome "$outcome" "guest crash: no exit code recorded after ${took} s" "$console"
		echo "lane: FAILED: the guest recorded no exit code (kernel panic, crash or failure in its init) after ${took} s" >&2
		return 255
	fi
	local rc
	rc=$(cat "$ctl/rc")
	if grep -qE "$kernel_trouble" "$console"; then
		show_console_tail "$console"
		lane_outcome "$outcome" "guest kernel trouble (script exit code $rc) after ${took} s" "$console"
		echo "lane: FAILED: the guest kernel reported a bug (script exit code $rc) after ${took} s" >&2
		[ "$rc" -ne 0 ] && return "$rc"
		return 255
	fi
	lane_outcome "$outcome" "script exit code $rc after ${took} s" ""
	echo "lane: guest script exited with $rc (boot, run and power-off: ${took} s)" >&2
	return "$rc"
}

case ${1:-} in
build) shift; [ $# -eq 0 ] || usage; cmd_build ;;
run) shift; cmd_run "$@" ;;
clean) shift; cmd_clean ;;
*) usage ;;
esac
