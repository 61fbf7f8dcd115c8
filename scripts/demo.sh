#!/usr/bin/env bash
# The main job, end to end on a fresh machine (run as root): a loop-backed
# btrfs volume with a SQLite database under load and other files, vssd on a
# private bus, the SQLite writer, an application-consistent backup with
# vssbackup read from a shadow copy while the live data keeps changing, a
# restore checked by the writer, exec of tar against a shadow, and
# clean-up.
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
  [ -n "${load_pid:-}" ] && kill "$load_pid" 2>/dev/null
  [ -n "${writer_pid:-}" ] && kill "$writer_pid" 2>/dev/null
  [ -n "${vssd_pid:-}" ] && kill "$vssd_pid" 2>/dev/null && wait "$vssd_pid" 2>/dev/null
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

step "A database with its writer: the SQLite writer registers"
python3 - "$work/data/db/shop.db" <<'PY'
import os, sqlite3, sys
os.makedirs(os.path.dirname(sys.argv[1]), exist_ok=True)
c = sqlite3.connect(sys.argv[1])
c.execute("PRAGMA journal_mode=WAL")
c.execute("CREATE TABLE orders(id INTEGER PRIMARY KEY, placed_us INTEGER)")
c.commit()
PY
cat > "$work/sqlite-writer.toml" <<CONF
[[database]]
component = "shop"
path = "$work/data/db/shop.db"
CONF
"$bin/vss-writer-sqlite" --config "$work/sqlite-writer.toml" 2> "$work/writer.log" &
writer_pid=$!
for _ in $(seq 1 100); do "$bin/vssadmin" list writers | grep -q "SqliteWriter" && break; sleep 0.1; done
"$bin/vssadmin" list writers
"$bin/vssadmin" list providers

step "The application keeps writing: orders are placed continuously"
python3 - "$work/data/db/shop.db" "$work/orders.log" <<'PY' &
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
with open(sys.argv[2], "w", buffering=1) as log:
    n = 0
    while True:
        n += 1
        c.execute("INSERT INTO orders(id, placed_us) VALUES (?, ?)", (n, time.time_ns() // 1000))
        log.write(f"{n}\n")
        time.sleep(0.002)
PY
load_pid=$!
sleep 1

step "vssbackup backup: the database (application-consistent) and app/ (crash-consistent)"
"$bin/vssbackup" backup --to "$work/backup" --writer SqliteWriter --include "$work/data/app"
"$bin/vssbackup" list "$work/backup"
"$bin/vssbackup" verify "$work/backup"
grep -E "write lock (granted|released)" "$work/writer.log" | sed 's/^.*INFO //' || true

step "The live data changes after the backup"
sleep 0.5
echo "version 2" > "$work/data/app/state.txt"
rm "$work/data/app/file1.bin"
echo "orders placed so far: $(wc -l < "$work/orders.log")"

step "vssbackup restore --to $work/restored: the writer checks the database there"
"$bin/vssbackup" restore "$work/backup" --to "$work/restored"
python3 - "$work/restored$work/data/db/shop.db" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
ok = c.execute("PRAGMA integrity_check").fetchone()[0]
n, last = c.execute("SELECT count(*), max(id) FROM orders").fetchone()
assert ok == "ok" and n == last, (ok, n, last)
print(f"restored database: integrity_check {ok}, orders 1..{last} (every order up to the freeze, none after)")
PY
grep -q "version 1" "$work/restored$work/data/app/state.txt"
test -f "$work/restored$work/data/app/file1.bin"
echo "restored app/: state.txt says '$(cat "$work/restored$work/data/app/state.txt")', file1.bin present"

step "vssbackup exec: any backup tool (here tar) against a consistent shadow"
"$bin/vssbackup" exec --for "$work/data" -- tar -C {} -cf "$work/exec-backup.tar" app db
tar -tf "$work/exec-backup.tar" | head -5

step "vssadmin: a persistent shadow copy, listed, then deleted"
"$bin/vssadmin" create shadow "/for=$work/data"
"$bin/vssadmin" list shadows "/for=$work/data"
"$bin/vssadmin" delete shadows "/for=$work/data" /all /quiet
kill "$load_pid" 2>/dev/null; wait "$load_pid" 2>/dev/null || true
load_pid=
echo
echo "Demo complete."
