#!/usr/bin/env bash
# The main job, end to end on a fresh machine (run as root): a loop-backed
# btrfs volume with live data, vssd on a private bus, a writer, an
# application-consistent shadow copy, a backup read from the shadow while
# the live data keeps changing, and clean-up.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
scripts/install-deps.sh
cargo build --workspace --bins --examples --locked -q
bin="$root/target/debug"

work=$(mktemp -d)
chmod 755 "$work"
cleanup() {
  set +e
  [ -n "${writer_pid:-}" ] && kill "$writer_pid" 2>/dev/null
  [ -n "${vssd_pid:-}" ] && kill "$vssd_pid" 2>/dev/null && wait "$vssd_pid" 2>/dev/null
  mountpoint -q "$work/private/exposed" && umount "$work/private/exposed"
  mountpoint -q "$work/data" && umount "$work/data"
  [ -n "${loopdev:-}" ] && losetup -d "$loopdev"
  [ -n "${bus_pid:-}" ] && kill "$bus_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }

step "A btrfs volume on a loop device, with data"
truncate -s 512M "$work/volume.img"
mkfs.btrfs -q -f "$work/volume.img"
loopdev=$(losetup --find --show "$work/volume.img")
mkdir -p "$work/data"
mount "$loopdev" "$work/data"
mkdir -p "$work/data/app"
for i in $(seq 1 50); do head -c 65536 /dev/urandom > "$work/data/app/file$i.bin"; done
echo "version 1" > "$work/data/app/state.txt"

step "vssd on a private system bus"
cat > "$work/bus.conf" <<CONF
<busconfig><type>system</type><listen>unix:path=$work/bus</listen><auth>EXTERNAL</auth>
<policy context="default"><allow user="*"/><allow own="*"/><allow send_type="method_call"/>
<allow send_type="signal"/><allow send_type="method_return"/><allow send_type="error"/>
<allow receive_type="*"/></policy></busconfig>
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

step "A writer (the Python example) registers"
/usr/bin/python3 examples/python-writer/vss_writer_example.py --name demo-app --log "$work/writer.log" &
writer_pid=$!
for _ in $(seq 1 100); do "$bin/vssadmin" list writers | grep -q "demo-app" && break; sleep 0.1; done
"$bin/vssadmin" list writers
"$bin/vssadmin" list providers

step "vssadmin create shadow /for=$work/data"
out=$("$bin/vssadmin" create shadow "/for=$work/data")
echo "$out"
shadow=$(echo "$out" | sed -n 's/.*Shadow Copy ID: //p')
echo "The writer saw: $(tr '\n' ' ' < "$work/writer.log")"

step "The live data changes after the shadow"
echo "version 2" > "$work/data/app/state.txt"
rm "$work/data/app/file1.bin"
"$bin/vssadmin" list shadows "/for=$work/data"

step "Expose the shadow read-only and back it up with tar"
"$bin/vssadmin" expose shadow "/shadow=$shadow" "/to=$work/private/exposed"
tar -C "$work/private/exposed" -cf "$work/backup.tar" app
mkdir -p "$work/restored"
tar -C "$work/restored" -xf "$work/backup.tar"
grep -q "version 1" "$work/restored/app/state.txt"
test -f "$work/restored/app/file1.bin"
echo "backup holds the shadow's instant: state.txt says '$(cat "$work/restored/app/state.txt")', file1.bin present"
"$bin/vssadmin" unexpose shadow "/shadow=$shadow"

step "Delete the shadow"
"$bin/vssadmin" delete shadows "/for=$work/data" /all /quiet
"$bin/vssadmin" list shadows
echo
echo "Demo complete."
