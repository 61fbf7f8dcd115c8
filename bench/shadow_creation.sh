#!/usr/bin/env bash
# Benchmark: (1) the longest write stall a concurrent writer sees while shadow
# copies are created, and (2) shadow-creation time with 0, 1, 10 and 100 no-op
# writers registered. Run as root from anywhere: sudo bench/shadow_creation.sh
# Uses the prebuilt binaries in target/debug (it builds nothing). Everything it
# creates (mounts, loop device, processes, temp dir) is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bin="$root/target/debug"

for f in "$bin/vssd" "$bin/vssadmin" "$bin/examples/noop_writer"; do
  if [ ! -x "$f" ]; then
    echo "error: $f is missing; build first with: cargo build --workspace --bins --examples" >&2
    exit 1
  fi
done
[ "$(id -u)" -eq 0 ] || { echo "error: run as root (sudo $0)" >&2; exit 1; }
for c in python3 dbus-daemon busctl mkfs.btrfs losetup; do
  command -v "$c" >/dev/null || { echo "error: $c not found" >&2; exit 1; }
done

WINDOW=${WINDOW:-6}          # seconds per stall-measurement window
STALL_SHADOWS=${STALL_SHADOWS:-5}
RUNS=${RUNS:-5}              # creations per writer count (median reported)
SIZES=${SIZES:-"0 1 10 100"}

work=$(mktemp -d)
chmod 755 "$work"
noop_pids=()
cleanup() {
  set +e
  [ -n "${load_pid:-}" ] && kill "$load_pid" 2>/dev/null && wait "$load_pid" 2>/dev/null
  for p in "${noop_pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${noop_pids[@]}"; do wait "$p" 2>/dev/null; done
  if [ -n "${vssd_pid:-}" ] && kill -0 "$vssd_pid" 2>/dev/null; then
    "$bin/vssadmin" delete shadows "/for=$work/data" /all /quiet >/dev/null 2>&1
    kill "$vssd_pid" 2>/dev/null && wait "$vssd_pid" 2>/dev/null
  fi
  # Any shadow still mounted under the work dir, then the volume itself.
  for m in $(findmnt -rn -o TARGET | grep "^$work/" | sort -r); do umount "$m"; done
  mountpoint -q "$work/data" && umount "$work/data"
  [ -n "${loopdev:-}" ] && losetup -d "$loopdev"
  [ -n "${bus_pid:-}" ] && kill "$bus_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '== %s\n' "$*" >&2; }

log "loop-backed btrfs volume"
truncate -s 1G "$work/volume.img"
mkfs.btrfs -q -f "$work/volume.img" >/dev/null
loopdev=$(losetup --find --show "$work/volume.img")
mkdir -p "$work/data"
mount "$loopdev" "$work/data"
mkdir -p "$work/data/app"
for i in $(seq 1 20); do head -c 65536 /dev/urandom > "$work/data/app/file$i.bin"; done

log "vssd on a private system bus"
cat > "$work/bus.conf" <<CONF
<busconfig><type>system</type><listen>unix:path=$work/bus</listen><auth>EXTERNAL</auth>
<policy context="default"><allow user="*"/><allow own="*"/><allow send_type="method_call"/>
<allow send_type="signal"/><allow send_type="method_return"/><allow send_type="error"/>
<allow receive_type="*"/></policy>
<limit name="max_connections_per_user">1000</limit><limit name="max_completed_connections">1000</limit>
</busconfig>
CONF
dbus-daemon --config-file="$work/bus.conf" --fork --print-pid > "$work/bus.pid"
bus_pid=$(cat "$work/bus.pid")
export DBUS_SYSTEM_BUS_ADDRESS="unix:path=$work/bus"
cat > "$work/vss.toml" <<CONF
state-dir = "$work/state"
writers-dir = "$work/writers.d"
CONF
"$bin/vssd" --config "$work/vss.toml" 2> "$work/vssd.log" &
vssd_pid=$!
for _ in $(seq 1 100); do busctl --address "$DBUS_SYSTEM_BUS_ADDRESS" status org.vss.Vssd >/dev/null 2>&1 && break; sleep 0.1; done
busctl --address "$DBUS_SYSTEM_BUS_ADDRESS" status org.vss.Vssd >/dev/null 2>&1 \
  || { echo "error: vssd did not come up; see log:" >&2; cat "$work/vssd.log" >&2; exit 1; }

create() { "$bin/vssadmin" create shadow "/for=$work/data" >/dev/null; }
delete_all() { "$bin/vssadmin" delete shadows "/for=$work/data" /all /quiet >/dev/null; }
now_ns() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

# The writer loop: open/write 4 KiB/fsync/close for DURATION seconds; prints
# one latency (microseconds) per iteration.
cat > "$work/load.py" <<'PY'
import os, sys, time
path, duration, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
buf = os.urandom(4096)
lat = []
end = time.monotonic() + duration
while time.monotonic() < end:
    t0 = time.monotonic_ns()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, buf)
    os.fsync(fd)
    os.close(fd)
    lat.append((time.monotonic_ns() - t0) // 1000)
with open(out, "w") as f:
    f.write("\n".join(map(str, lat)) + "\n")
PY
stats() { # file -> "max median count" (microseconds)
  python3 - "$1" <<'PY'
import sys, statistics
v = [int(x) for x in open(sys.argv[1]) if x.strip()]
print(max(v), int(statistics.median(v)), len(v))
PY
}

# ---- 1. write stall -------------------------------------------------------
log "stall: baseline window (${WINDOW}s, no shadows)"
python3 "$work/load.py" "$work/data/app/hot.dat" "$WINDOW" "$work/lat_base.txt"

log "stall: window with shadows created back to back (batches of $STALL_SHADOWS, deleted after each batch)"
python3 "$work/load.py" "$work/data/app/hot.dat" "$WINDOW" "$work/lat_shadow.txt" &
load_pid=$!
sleep 0.2
holds=""; created=0
while kill -0 "$load_pid" 2>/dev/null; do
  for _ in $(seq 1 "$STALL_SHADOWS"); do create; created=$((created + 1)); done
  holds+=" $("$bin/vssadmin" list shadows --json \
    | python3 -c 'import json,sys; print(" ".join(str(s["hold_micros"]) for s in json.load(sys.stdin)["shadows"]))')"
  delete_all
done
wait "$load_pid"; load_pid=
read -r base_max base_med base_n <<<"$(stats "$work/lat_base.txt")"
read -r shad_max shad_med shad_n <<<"$(stats "$work/lat_shadow.txt")"

# ---- 2. creation time vs. writer count -------------------------------------
count_writers() { "$bin/vssadmin" list writers --json 2>/dev/null \
  | python3 -c 'import json,sys
d=json.load(sys.stdin)
w=d["writers"] if isinstance(d,dict) else d
print(sum(1 for x in w if str(x.get("name","")).startswith("bench-noop-")))' 2>/dev/null || echo 0; }

declare -A create_ms
for n in $SIZES; do
  log "creation time with $n no-op writers"
  noop_pids=()
  for i in $(seq 1 "$n"); do
    "$bin/examples/noop_writer" --name "bench-noop-$i" --log "$work/noop-$i.log" >/dev/null 2>&1 &
    noop_pids+=($!)
  done
  for _ in $(seq 1 600); do [ "$(count_writers)" -ge "$n" ] && break; sleep 0.1; done
  got=$(count_writers)
  [ "$got" -ge "$n" ] || { echo "error: only $got of $n writers registered" >&2; exit 1; }
  create; delete_all   # warm-up, not timed
  times=()
  for _ in $(seq 1 "$RUNS"); do
    t0=$(now_ns); create; t1=$(now_ns)
    times+=($(( (t1 - t0) / 1000000 )))
    delete_all
  done
  create_ms[$n]=$(printf '%s\n' "${times[@]}" | median)
  log "  runs (ms): ${times[*]} -> median ${create_ms[$n]}"
  for p in "${noop_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${noop_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  noop_pids=()
  for _ in $(seq 1 100); do [ "$(count_writers)" -eq 0 ] && break; sleep 0.1; done
done

# ---- report ---------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
ms() { awk -v u="$1" 'BEGIN { printf "%.2f", u / 1000 }'; }
echo
echo "| Measurement | Without | With | Ratio (with/without) |"
echo "|---|---:|---:|---:|"
echo "| Writer max latency, ms (${WINDOW}s window; $created shadows created in the 'with' window) | $(ms "$base_max") | $(ms "$shad_max") | $(ratio "$shad_max" "$base_max") |"
echo "| Writer median latency, ms | $(ms "$base_med") | $(ms "$shad_med") | $(ratio "$shad_med" "$base_med") |"
echo "| Writer iterations in window | $base_n | $shad_n | $(ratio "$shad_n" "$base_n") |"
echo
echo "Hold times recorded by vssd (hold_micros) for the $created shadows: $(printf '%s\n' $holds | python3 -c 'import sys,statistics
v=[int(x) for x in sys.stdin if x.strip()]
print("median %.2f ms, max %.2f ms, min %.2f ms" % (statistics.median(v)/1000, max(v)/1000, min(v)/1000))')"
echo
echo "| No-op writers | Creation time, median of $RUNS (ms) | Ratio to 0 writers |"
echo "|---:|---:|---:|"
base=${create_ms[0]:-}
for n in $SIZES; do
  echo "| $n | ${create_ms[$n]} | $( [ -n "$base" ] && ratio "${create_ms[$n]}" "$base" || echo n/a) |"
done
