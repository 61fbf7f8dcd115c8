#!/usr/bin/env bash
# Benchmark: backup throughput of `vssbackup backup` (shadow copy made,
# exposed and read; files hashed and written with the manifest) against
# `tar -cf` of the same tree, in the same run, alternating, page cache
# dropped before every run. Also `.tar.zst` against `tar -I zstd`.
# Prints a markdown table (see docs/BENCHMARKS.md).
#
# Run as root from anywhere: sudo bench/backup_throughput.sh
# It builds vssd and vssbackup in release mode. Everything it creates
# (mounts, loop device, processes, temp dir) is removed on exit.
# Settings: ROUNDS (3), SMALL_FILES (6000), BIG_FILES (16, of 16 MiB each).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

[ "$(id -u)" -eq 0 ] || { echo "error: run as root (sudo $0)" >&2; exit 1; }
for c in cargo dbus-daemon busctl mkfs.btrfs losetup tar zstd; do
  command -v "$c" >/dev/null || { echo "error: $c not found" >&2; exit 1; }
done
ROUNDS=${ROUNDS:-3}
SMALL_FILES=${SMALL_FILES:-6000}
BIG_FILES=${BIG_FILES:-16}

cargo build --release -q -p vssd -p vssbackup
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin="$target/release"

work=$(mktemp -d)
chmod 700 "$work"
cleanup() {
  set +e
  [ -n "${vssd_pid:-}" ] && kill "$vssd_pid" 2>/dev/null && wait "$vssd_pid" 2>/dev/null
  for m in $(findmnt -rn -o TARGET | grep "^$work/" | sort -r); do umount "$m"; done
  [ -n "${loopdev:-}" ] && losetup -d "$loopdev"
  [ -n "${bus_pid:-}" ] && kill "$bus_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { printf '== %s\n' "$*" >&2; }

log "loop-backed btrfs volume with a tree of $SMALL_FILES small and $BIG_FILES big files"
truncate -s 3G "$work/volume.img"
mkfs.btrfs -q -f "$work/volume.img" >/dev/null
loopdev=$(losetup --find --show "$work/volume.img")
mkdir -p "$work/data" "$work/out"
mount "$loopdev" "$work/data"
python3 - "$work/data/tree" "$SMALL_FILES" "$BIG_FILES" <<'PY'
import os, random, sys
root, small, big = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(7)
for i in range(small):
    d = os.path.join(root, f"d{i % 60}", f"e{i % 7}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i}"), "wb") as f:
        f.write(rnd.randbytes(rnd.choice([512, 4096, 16384, 65536, 200000])))
os.makedirs(os.path.join(root, "big"), exist_ok=True)
for i in range(big):
    with open(os.path.join(root, "big", f"b{i}"), "wb") as f:
        for _ in range(16):
            f.write(rnd.randbytes(1 << 20))
PY
sync
bytes=$(du -sb "$work/data/tree" | cut -f1)

log "vssd on a private system bus"
cat > "$work/bus.conf" <<CONF
<busconfig><type>system</type><listen>unix:path=$work/bus</listen><auth>EXTERNAL</auth>
<policy context="default"><allow user="*"/><allow own="*"/><allow send_type="method_call"/>
<allow send_type="signal"/><allow send_type="method_return"/><allow send_type="error"/>
<allow receive_type="*"/></policy></busconfig>
CONF
dbus-daemon --config-file="$work/bus.conf" --fork --print-pid > "$work/bus.pid"
bus_pid=$(cat "$work/bus.pid")
export DBUS_SYSTEM_BUS_ADDRESS="unix:path=$work/bus"
printf 'state-dir = "%s/state"\nwriters-dir = "%s/writers.d"\n' "$work" "$work" > "$work/vss.toml"
"$bin/vssd" --config "$work/vss.toml" 2> "$work/vssd.log" &
vssd_pid=$!
for _ in $(seq 1 100); do busctl --address "$DBUS_SYSTEM_BUS_ADDRESS" status org.vss.Vssd >/dev/null 2>&1 && break; sleep 0.1; done

now_ns() { date +%s%N; }
cold() { sync; echo 3 > /proc/sys/vm/drop_caches; }
# Times a command (ms), including the sync of what it wrote.
timed() { cold; local t0; t0=$(now_ns); "$@" >/dev/null; sync; echo $(( ($(now_ns) - t0) / 1000000 )); }
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

declare -A t
for r in $(seq 1 "$ROUNDS"); do
  log "round $r of $ROUNDS"
  rm -rf "$work/out"/*
  t[tar]+="$(timed tar -C "$work/data" -cf "$work/out/t.tar" tree) "
  t[vss]+="$(timed "$bin/vssbackup" backup --to "$work/out/v" --include "$work/data/tree") "
  t[tarzst]+="$(timed tar -C "$work/data" -I 'zstd -3 -T0' -cf "$work/out/t.tar.zst" tree) "
  t[vsszst]+="$(timed "$bin/vssbackup" backup --to "$work/out/v.tar.zst" --include "$work/data/tree") "
done

row() { # label vss-key peer-key
  local v p
  v=$(echo "${t[$2]}" | tr ' ' '\n' | grep . | median)
  p=$(echo "${t[$3]}" | tr ' ' '\n' | grep . | median)
  awk -v l="$1" -v v="$v" -v p="$p" -v b="$bytes" 'BEGIN {
    printf "| %s | %.0f | %.0f | %.0f | %.0f | %.2f |\n", l, p, v, b/1048576/(p/1000), b/1048576/(v/1000), p/v }'
}
echo
echo "Tree: $SMALL_FILES small files and $BIG_FILES x 16 MiB, $((bytes / 1048576)) MiB; median of $ROUNDS cold runs."
echo
echo "| Destination | tar (ms) | vssbackup (ms) | tar MiB/s | vssbackup MiB/s | ratio vssbackup/tar |"
echo "|---|---:|---:|---:|---:|---:|"
row "directory vs tar -cf" vss tar
row ".tar.zst vs tar -I 'zstd -3 -T0'" vsszst tarzst
