#!/usr/bin/env bash
# Benchmark: the longest commit latency each database's clients see while a
# shadow copy is created, beside their median commit latency without one, for
# SQLite, PostgreSQL 15 and MariaDB 10.11 with their vss writers.
#
# For each database, one after the other: the server (none for SQLite) with
# its data on a loop-mounted btrfs volume, its writer registered with vssd on
# a private bus, and a load (crates/vss-systest/examples/commit_load.rs) that
# commits single-row INSERTs back to back on a few connections, recording each
# commit's start time and latency. Phase A: WINDOW seconds with no shadow
# (median, p99, max). Phase B: SHADOWS shadows created with `vssadmin create
# shadow /for=VOLUME`, GAP seconds apart, under the same load; for each, the
# longest commit whose interval overlaps the creation. Also reported: the
# writer's own hold (from its log) and vssd's filesystem hold (hold_micros).
#
# Run as root: sudo bench/commit_latency.sh. It builds nothing: build first
# with `cargo build --workspace --bins --examples`. It uses
# ${CARGO_TARGET_DIR:-target}/debug. Everything it creates (servers, writers,
# vssd, the bus, shadows, mounts, the loop device, the temp dir) is removed on
# exit.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target}
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
bin="$target_dir/debug"

DBS=${DBS:-"sqlite postgres mariadb"}
WINDOW=${WINDOW:-8}          # seconds of phase A (no shadow)
SHADOWS=${SHADOWS:-5}        # shadows created in phase B
GAP=${GAP:-1}                # seconds between shadows in phase B
WARMUP=${WARMUP:-2}          # seconds of load before phase A
SQLITE_CONNS=${SQLITE_CONNS:-1}
POSTGRES_CONNS=${POSTGRES_CONNS:-2}
MARIADB_CONNS=${MARIADB_CONNS:-2}

for f in "$bin/vssd" "$bin/vssadmin" "$bin/vss-writer-sqlite" "$bin/vss-writer-postgres" \
         "$bin/vss-writer-mariadb" "$bin/examples/commit_load"; do
  if [ ! -x "$f" ]; then
    echo "error: $f is missing; build first with: cargo build --workspace --bins --examples" >&2
    exit 1
  fi
done
[ "$(id -u)" -eq 0 ] || { echo "error: run as root (sudo $0)" >&2; exit 1; }
for c in python3 dbus-daemon busctl mkfs.btrfs losetup runuser findmnt; do
  command -v "$c" >/dev/null || { echo "error: $c not found" >&2; exit 1; }
done
pg_bin=
for v in 15 16 17; do
  [ -x "/usr/lib/postgresql/$v/bin/pg_ctl" ] && { pg_bin="/usr/lib/postgresql/$v/bin"; break; }
done
maria_prog() { command -v "$1" 2>/dev/null || { [ -x "/usr/sbin/$1" ] && echo "/usr/sbin/$1"; } || { [ -x "/usr/bin/$1" ] && echo "/usr/bin/$1"; } || true; }
for db in $DBS; do
  case "$db" in
    sqlite) ;;
    postgres)
      [ -n "$pg_bin" ] && id postgres >/dev/null 2>&1 \
        || { echo "error: PostgreSQL 15 (and its postgres user) not found; run scripts/install-deps.sh" >&2; exit 1; } ;;
    mariadb)
      for p in mariadbd mariadb-install-db mariadb; do
        [ -n "$(maria_prog "$p")" ] || { echo "error: $p not found; run scripts/install-deps.sh" >&2; exit 1; }
      done ;;
    *) echo "error: unknown database '$db' in DBS (sqlite postgres mariadb)" >&2; exit 1 ;;
  esac
done

work=$(mktemp -d)
chmod 755 "$work"
vol="$work/vol"
sqlite_version= load_pid= writer_pid= maria_pid= pg_data= vssd_pid= bus_pid= loopdev=
stop_server() {
  if [ -n "$pg_data" ]; then
    runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_data" -m "${1:-fast}" -w -t 30 stop >/dev/null 2>&1
    pg_data=
  fi
  if [ -n "$maria_pid" ]; then
    kill "$maria_pid" 2>/dev/null; wait "$maria_pid" 2>/dev/null; maria_pid=
  fi
}
cleanup() {
  set +e
  if [ -n "${LOGS:-}" ]; then
    mkdir -p "$LOGS" && cp "$work"/*.log "$work"/*.err "$work"/*.csv "$work"/*.intervals "$work"/*.json "$LOGS"/ 2>/dev/null
  fi
  [ -n "$load_pid" ] && { kill "$load_pid" 2>/dev/null; wait "$load_pid" 2>/dev/null; }
  [ -n "$writer_pid" ] && { kill "$writer_pid" 2>/dev/null; wait "$writer_pid" 2>/dev/null; }
  stop_server immediate
  if [ -n "$vssd_pid" ] && kill -0 "$vssd_pid" 2>/dev/null; then
    "$bin/vssadmin" delete shadows "/for=$vol" /all /quiet >/dev/null 2>&1
    kill "$vssd_pid" 2>/dev/null; wait "$vssd_pid" 2>/dev/null
  fi
  for m in $(findmnt -rn -o TARGET | grep "^$work/" | sort -r); do umount "$m"; done
  mountpoint -q "$vol" && umount "$vol"
  [ -n "$loopdev" ] && losetup -d "$loopdev"
  [ -n "$bus_pid" ] && kill "$bus_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '== %s\n' "$*" >&2; }
now_us() { date +%s%6N; }
wait_until() { # seconds command... -> 0 once the command succeeds
  local n=$(( $1 * 10 )); shift
  for _ in $(seq 1 "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}

log "loop-backed btrfs volume"
truncate -s 2G "$work/volume.img"
mkfs.btrfs -q -f "$work/volume.img" >/dev/null
loopdev=$(losetup --find --show "$work/volume.img")
mkdir -p "$vol"
mount "$loopdev" "$vol"
chmod 755 "$vol"

log "vssd on a private system bus"
cat > "$work/bus.conf" <<CONF
<busconfig><type>system</type><listen>unix:path=$work/bus</listen><auth>EXTERNAL</auth>
<policy context="default"><allow user="*"/><allow own="*"/><allow send_type="method_call"/>
<allow send_type="signal"/><allow send_type="method_return"/><allow send_type="error"/>
<allow receive_type="*"/></policy>
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
wait_until 10 busctl --address "$DBUS_SYSTEM_BUS_ADDRESS" status org.vss.Vssd \
  || { echo "error: vssd did not come up; see log:" >&2; cat "$work/vssd.log" >&2; exit 1; }

# The analysis of one database's run: prints one tab-separated result line.
cat > "$work/analyze.py" <<'PY'
import json, re, statistics, sys
kind, csv, a0, a1, intervals, shadows, wlog = sys.argv[1:8]
a0, a1 = int(a0), int(a1)
commits = []  # (start_us, latency_us, ok)
for line in open(csv):
    s, lat, _conn, ok = line.strip().split(",")
    commits.append((int(s), int(lat), ok == "1"))
failed = sum(1 for c in commits if not c[2])
base = sorted(lat for s, lat, ok in commits if ok and a0 <= s and s + lat <= a1)
if len(base) < 10:
    sys.exit(f"{kind}: only {len(base)} commits in phase A")
def pct(v, p):
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]
med, p99, bmax = statistics.median(base), pct(base, 99), base[-1]
rate = len(base) / ((a1 - a0) / 1e6)
ivs = [tuple(map(int, l.split())) for l in open(intervals) if l.strip()]
ansi = re.compile(r"\x1b\[[0-9;]*m")
text = [ansi.sub("", l) for l in open(wlog, errors="replace")]
def times(what, key):
    out = []
    for l in text:
        if what in l:
            m = re.search(r"\b" + key + r"=(\d+)", l)
            if m:
                out.append(int(m.group(1)))
    return out
begin_end = {
    "sqlite": (("write lock granted", "granted_unix_us"), ("write lock released", "released_unix_us")),
    "mariadb": (("commits blocked", "blocked_unix_us"), ("commits unblocked", "released_unix_us")),
    "postgres": (("backup started", "started_unix_us"), ("backup stopped", "stopped_unix_us")),
}[kind]
wb, we = times(*begin_end[0]), times(*begin_end[1])
holds_w, wins_w = [], []
for t0, t1 in ivs:
    b = [x for x in wb if t0 <= x <= t1]
    e = [x for x in we if t0 <= x <= t1]
    if len(b) != 1 or len(e) != 1:
        sys.exit(f"{kind}: the writer's log shows {len(b)} begin / {len(e)} end lines during the "
                 f"creation {t0}..{t1}: the writer was not in the set (see {wlog})")
    holds_w.append(e[0] - b[0])
    wins_w.append((b[0], e[0]))
sh = json.load(open(shadows))["shadows"]
sh.sort(key=lambda s: s["created_unix_ms"])
holds_v = [s["hold_micros"] for s in sh]
if len(holds_v) != len(ivs):
    sys.exit(f"{kind}: {len(holds_v)} shadows listed, {len(ivs)} created")
def longest(t0, t1):  # the longest commit whose interval overlaps t0..t1
    over = [lat for s, lat, ok in commits if s <= t1 and s + lat >= t0]
    return max(over) if over else 0
worst = [longest(t0, t1) for t0, t1 in ivs]
worst_w = [longest(b, e) for b, e in wins_w]
creation = [t1 - t0 for t0, t1 in ivs]
ms = lambda us: "%.2f" % (us / 1000)
with open(csv + ".shadows", "w") as f:
    for i in range(len(ivs)):
        print(f"   shadow {i + 1}: creation {ms(creation[i])} ms, longest overlapping commit "
              f"{ms(worst[i])} ms ({ms(worst_w[i])} ms overlapping the writer's hold), "
              f"writer hold {ms(holds_w[i])} ms, vssd hold {ms(holds_v[i])} ms", file=sys.stderr)
        f.write("\t".join([str(i + 1), ms(creation[i]), ms(worst[i]), ms(worst_w[i]),
                           ms(holds_w[i]), ms(holds_v[i])]) + "\n")
print("\t".join([
    kind, str(len(base)), "%.0f" % rate, ms(med), ms(p99), ms(bmax),
    ms(statistics.median(worst)), ms(max(worst)),
    "%.1f" % (max(worst) / med), "%.1f" % (statistics.median(worst) / med),
    ms(statistics.median(holds_w)), ms(max(holds_w)),
    ms(statistics.median(holds_v)), ms(max(holds_v)),
    ms(statistics.median(creation)), str(failed), ms(max(worst_w)),
]))
PY

wait_writer() { # name
  wait_until 20 bash -c "'$bin/vssadmin' list writers | grep -q \"Writer name: '$1'\""
}

start_sqlite() {
  local file="$vol/sqlite/bench.db"
  sqlite_version=$("$bin/examples/commit_load" setup sqlite "$file")
  cat > "$work/sqlite-writer.toml" <<CONF
name = "SqliteWriter"

[[database]]
component = "bench"
path = "$file"
CONF
  writer_cfg="$work/sqlite-writer.toml"; writer_name=SqliteWriter
  load_args=(sqlite "$file" --conns "$SQLITE_CONNS")
}

start_postgres() {
  local data="$vol/pg/data" sock="$work/pgsock" port=54329
  mkdir -p "$data" "$sock"
  chown -R postgres:postgres "$vol/pg" "$sock"
  touch "$work/postgres.log"; chown postgres "$work/postgres.log"
  (cd / && runuser -u postgres -- "$pg_bin/initdb" -D "$data" --auth-local=trust -U postgres -N >/dev/null)
  pg_data="$data"
  (cd / && runuser -u postgres -- "$pg_bin/pg_ctl" -D "$data" -l "$work/postgres.log" -w -t 30 \
    -o "-c listen_addresses='' -c unix_socket_directories=$sock -p $port -c max_wal_size=96MB -c min_wal_size=32MB" \
    start >/dev/null) || { cat "$work/postgres.log" >&2; return 1; }
  (cd / && runuser -u postgres -- psql -q -h "$sock" -p "$port" -U postgres -d postgres -c \
    "CREATE TABLE bench(id bigserial PRIMARY KEY, conn bigint NOT NULL, v bigint NOT NULL)")
  cat > "$work/postgres-writer.toml" <<CONF
name = "PostgresWriter"
data-directory = "$data"
socket-directory = "$sock"
port = $port
CONF
  writer_cfg="$work/postgres-writer.toml"; writer_name=PostgresWriter
  load_args=(postgres "host=$sock port=$port user=postgres dbname=postgres" --conns "$POSTGRES_CONNS")
}

start_mariadb() {
  local data="$vol/maria/data" run="$work/maria"
  mkdir -p "$data" "$run"
  "$(maria_prog mariadb-install-db)" --no-defaults --datadir="$data" --user=root --skip-test-db >/dev/null 2>&1 \
    || { echo "error: mariadb-install-db failed" >&2; return 1; }
  "$(maria_prog mariadbd)" --no-defaults --datadir="$data" --socket="$run/sock" \
    --pid-file="$run/mariadbd.pid" --log-error="$work/mariadbd.err" --skip-networking --user=root \
    --innodb-buffer-pool-size=64M --innodb-log-file-size=48M </dev/null >/dev/null 2>&1 &
  maria_pid=$!
  maria_sql() { "$(maria_prog mariadb)" --no-defaults --socket="$run/sock" -uroot --batch -e "$1"; }
  wait_until 30 maria_sql "SELECT 1" || { echo "error: mariadbd did not start:" >&2; cat "$work/mariadbd.err" >&2; return 1; }
  maria_sql "CREATE USER 'vss'@'localhost' IDENTIFIED BY 'bench-vss-pw';
    GRANT RELOAD, PROCESS ON *.* TO 'vss'@'localhost';
    CREATE DATABASE app;
    CREATE USER 'app'@'localhost' IDENTIFIED BY 'bench-app-pw';
    GRANT ALL ON app.* TO 'app'@'localhost';
    CREATE TABLE app.bench(id BIGINT AUTO_INCREMENT PRIMARY KEY, conn BIGINT NOT NULL, v BIGINT NOT NULL) ENGINE=InnoDB;"
  echo bench-vss-pw > "$work/mariadb-writer.password"
  chmod 600 "$work/mariadb-writer.password"
  cat > "$work/mariadb-writer.toml" <<CONF
socket = "$run/sock"
user = "vss"
password-file = "$work/mariadb-writer.password"
CONF
  writer_cfg="$work/mariadb-writer.toml"; writer_name=MariadbWriter
  load_args=(mariadb "$run/sock" --user app --password bench-app-pw --conns "$MARIADB_CONNS")
}

results=()
for db in $DBS; do
  log "$db: server, writer, load"
  "start_$db"
  env -u JOURNAL_STREAM VSS_LOG=info "$bin/vss-writer-$db" --config "$writer_cfg" 2> "$work/$db-writer.log" &
  writer_pid=$!
  wait_writer "$writer_name" \
    || { echo "error: $writer_name did not register; its log:" >&2; cat "$work/$db-writer.log" >&2; exit 1; }
  rm -f "$work/stop" "$work/ready"
  "$bin/examples/commit_load" run "${load_args[@]}" --out "$work/$db.csv" \
    --stop-file "$work/stop" --ready-file "$work/ready" 2> "$work/$db-load.log" &
  load_pid=$!
  wait_until 30 test -e "$work/ready" \
    || { echo "error: the load did not start:" >&2; cat "$work/$db-load.log" >&2; exit 1; }
  sleep "$WARMUP"
  log "$db: phase A, ${WINDOW}s without a shadow"
  a0=$(now_us); sleep "$WINDOW"; a1=$(now_us)
  log "$db: phase B, $SHADOWS shadows ${GAP}s apart"
  : > "$work/$db.intervals"
  for _ in $(seq 1 "$SHADOWS"); do
    t0=$(now_us)
    "$bin/vssadmin" create shadow "/for=$vol" > "$work/create.out" 2>&1 \
      || { echo "error: vssadmin create shadow failed:" >&2; cat "$work/create.out" >&2; exit 1; }
    t1=$(now_us)
    echo "$t0 $t1" >> "$work/$db.intervals"
    sleep "$GAP"
  done
  touch "$work/stop"
  wait "$load_pid" || { echo "error: the load failed:" >&2; cat "$work/$db-load.log" >&2; exit 1; }
  load_pid=
  log "$db: $(tail -n 1 "$work/$db-load.log")"
  "$bin/vssadmin" list shadows --json > "$work/$db-shadows.json"
  "$bin/vssadmin" delete shadows "/for=$vol" /all /quiet >/dev/null
  kill "$writer_pid"; wait "$writer_pid" 2>/dev/null || true; writer_pid=
  stop_server fast
  wait_until 20 bash -c "! '$bin/vssadmin' list writers | grep -q \"Writer name: '$writer_name'\"" || true
  r=$(python3 "$work/analyze.py" "$db" "$work/$db.csv" "$a0" "$a1" "$work/$db.intervals" \
    "$work/$db-shadows.json" "$work/$db-writer.log")
  results+=("$r")
done

name() { case "$1" in sqlite) echo "SQLite $sqlite_version (WAL, synchronous=FULL)";;
  postgres) echo "PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}')";;
  mariadb) echo "MariaDB $("$(maria_prog mariadbd)" --version | grep -o '[0-9]*\.[0-9]*\.[0-9]*-MariaDB' | head -n1 | sed 's/-MariaDB//')";; esac; }
conns() { case "$1" in sqlite) echo "$SQLITE_CONNS";; postgres) echo "$POSTGRES_CONNS";; mariadb) echo "$MARIADB_CONNS";; esac; }
hold_name() { case "$1" in sqlite) echo "write lock";; postgres) echo "backup start→stop";; mariadb) echo "BLOCK_COMMIT";; esac; }

echo
echo "Phase A: ${WINDOW}s without a shadow; phase B: $SHADOWS shadows (\`vssadmin create shadow\`), ${GAP}s apart, under the same load."
echo
echo "| Database | Conns | Commits/s without | Median without (ms) | p99 without (ms) | Max without (ms) | Longest commit overlapping a creation, median of $SHADOWS / worst (ms) | Worst / median without | Longest overlapping the writer's hold, worst (ms) | Writer hold, median / max (ms) | vssd hold, median / max (ms) | Creation, median (ms) |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for r in "${results[@]}"; do
  IFS=$'\t' read -r kind n rate med p99 bmax wmed wmax ratio _ratio_med whmed whmax vhmed vhmax cmed failed wwmax <<<"$r"
  echo "| $(name "$kind") | $(conns "$kind") | $rate | $med | $p99 | $bmax | $wmed / **$wmax** | **${ratio}×** | $wwmax | $(hold_name "$kind"): $whmed / $whmax | $vhmed / $vhmax | $cmed |"
  [ "$failed" = 0 ] || echo "(warning: $failed commits of $kind failed)" >&2
done
echo
echo "Per shadow:"
echo
echo "| Database | Shadow | Creation (ms) | Longest commit overlapping the creation (ms) | … overlapping the writer's hold (ms) | Writer hold (ms) | vssd hold (ms) |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for db in $DBS; do
  while IFS=$'\t' read -r i c w ww wh vh; do
    echo "| $db | $i | $c | $w | $ww | $wh | $vh |"
  done < "$work/$db.csv.shadows"
done
