#!/usr/bin/env bash
# bench/sql.sh — headroom's PostgreSQL proxy next to PgBouncer and next to no proxy at all:
# the same PostgreSQL primary, the same pgbench load, ROUNDS rounds, interleaved (the order
# of the three targets rotates each round) and paired per round.
#
# Loopback only, everything in a temp dir, everything killed on exit:
#   postgres   scripts/pg-local.sh ONLY=primary (a test server: fsync off), pgbench -i -s SCALE
#   direct     pgbench straight to the primary
#   pgbouncer  Debian's pgbouncer (installed if missing), run as the postgres OS user from our
#              own ini: pool_mode=transaction, default_pool_size=POOL, max_client_conn=1000,
#              auth_type=scram-sha-256 with userlist "app" "app"
#   headroom   $HEADROOM_BIN serve with a [[postgres]] proxy: pool_mode="transaction",
#              pool_size=POOL, [global] workers=WORKERS. Skipped, with the reason, when the
#              binary is missing (and cannot be built), rejects the config, or does not serve
# Rows are WORKLOAD-PROTOCOL-CLIENTS: workload select (pgbench -S) or tpcb (the default
# TPC-B-like script), protocol simple / extended / prepared (pgbench -M), clients (-c, with
# -j THREADS). Each run is `pgbench -n -T DURATION`; its tps is pgbench's "tps = ... (without
# initial connection time)". A run that fails (pgbench exits non-zero: PgBouncer 1.18 has no
# prepared statements in transaction mode, say) is recorded as FAIL with its first error line.
# For the proxies also CPU µs per transaction (utime+stime of the proxy's process tree over the
# run / transactions; connection set-up included). Per row: tps per round, medians, and the
# paired per-round ratios headroom/pgbouncer, headroom/direct, pgbouncer/direct (median and
# range); at the end a summary table. Then memory per idle client: IDLE logged-in connections
# held open by bench/pg_idle.py (startup + SCRAM-SHA-256, then silence), (RSS after - RSS
# before) / IDLE, measured on each fresh proxy before any load.
#
# Env knobs:
#   ROUNDS=3  DURATION=5 (seconds per run)  WARMUP=2 (seconds, once per target and row; 0: none)
#   ROWS="select-simple-20 select-simple-200 select-prepared-20 select-prepared-200
#         tpcb-simple-20 tpcb-simple-200 tpcb-prepared-20"
#   SCALE=10       pgbench -i -s SCALE (10: 1M accounts, ~160 MB)
#   THREADS=2      pgbench -j (capped at the clients)
#   POOL=20        server connections per (database, user): PgBouncer's default_pool_size and
#                  headroom's pool_size
#   WORKERS=1      headroom's [global] workers
#   IDLE=500       idle client connections for the memory measurement (0 skips it)
#   PLACEMENT=shared   shared: pgbench on CPU 1; PostgreSQL and the proxy under test on CPU 0
#                      (the proxy's CPU is taken from the database's); none: no pinning
#   PG_DIR=dir     use (and keep) the scripts/pg-local.sh dir there instead of a temp one; a
#                  primary already running there is left running
#   HEADROOM_BIN=target/release/headroom   the binary; when the default is missing it is built
#                  (cargo build --release -p headroom) unless HEADROOM_BUILD=0
#   SKIP_HEADROOM=1    measure direct and pgbouncer only
#   KEEP_TMP=1     keep the temp dir (configs, logs, raw pgbench output)
set -euo pipefail

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 0
fi
(($# == 0)) || { echo "usage: bash bench/sql.sh [--help]   (knobs are env variables)" >&2; exit 2; }

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-2}
ROWS=${ROWS:-select-simple-20 select-simple-200 select-prepared-20 select-prepared-200 tpcb-simple-20 tpcb-simple-200 tpcb-prepared-20}
SCALE=${SCALE:-10}
THREADS=${THREADS:-2}
POOL=${POOL:-20}
WORKERS=${WORKERS:-1}
IDLE=${IDLE:-500}
PLACEMENT=${PLACEMENT:-shared}
SKIP_HEADROOM=${SKIP_HEADROOM:-0}
HEADROOM_BUILD=${HEADROOM_BUILD:-1}
KEEP_TMP=${KEEP_TMP:-0}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
# shellcheck source=bench/targets.sh
source "$ROOT/bench/targets.sh" # setup_placement, free_ports
export PATH="$PATH:/usr/sbin:/sbin"
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
export PG_BIN

# ---------------------------------------------------------------- tools
# (On a machine with systemd, installing pgbouncer also starts the system's own on port 6432;
# this script does not use it.)
declare -A PKG_OF=([pgbouncer]=pgbouncer [pgbench]=postgresql-client [psql]=postgresql-client)
missing=()
for t in pgbouncer pgbench psql; do
    command -v "$t" >/dev/null 2>&1 || [[ " ${missing[*]} " == *" ${PKG_OF[$t]} "* ]] || missing+=("${PKG_OF[$t]}")
done
if ((${#missing[@]})); then
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them"
    say "installing ${missing[*]} ..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" \
        || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"; } \
        || die "apt-get install ${missing[*]} failed"
fi
for t in pgbouncer pgbench psql python3 taskset getconf awk timeout; do
    command -v "$t" >/dev/null 2>&1 || die "required tool '$t' not found in PATH"
done
[[ -x $PG_BIN/pg_ctl ]] || die "$PG_BIN/pg_ctl not found (PostgreSQL server binaries; set PG_BIN)"
for k in ROUNDS DURATION SCALE THREADS POOL WORKERS; do
    [[ ${!k} =~ ^[1-9][0-9]*$ ]] || die "$k must be a positive integer (got '${!k}')"
done
for k in WARMUP IDLE; do [[ ${!k} =~ ^[0-9]+$ ]] || die "$k must be a whole number (got '${!k}')"; done
MAXC=0
for row in $ROWS; do
    [[ $row =~ ^(select|tpcb)-(simple|extended|prepared)-([1-9][0-9]*)$ ]] \
        || die "row '$row' is not WORKLOAD-PROTOCOL-CLIENTS (select|tpcb)-(simple|extended|prepared)-N"
    ((BASH_REMATCH[3] > MAXC)) && MAXC=${BASH_REMATCH[3]}
done
((MAXC <= 1000)) || die "at most 1000 clients (PgBouncer's max_client_conn)"
((IDLE <= 900)) || die "IDLE must be <= 900 (PgBouncer's max_client_conn is 1000)"
if ((EUID == 0)); then
    id postgres >/dev/null 2>&1 || useradd -r -m postgres || die "useradd postgres failed"
    # PgBouncer refuses to run as root. setpriv, not runuser: runuser opens a PAM session,
    # which drops the open-file limit to 1024, and stands between us and the process.
    command -v setpriv >/dev/null 2>&1 || die "required tool 'setpriv' (util-linux) not found"
    AS_PG=(setpriv --reuid=postgres --regid=postgres --init-groups)
else
    AS_PG=()
fi

setup_placement
((NOFILE >= 2 * MAXC + 2 * IDLE + 200)) || die "open-file limit $NOFILE is too low for $MAXC clients"

# ---------------------------------------------------------------- temp dir, cleanup
TMP=$(mktemp -d /tmp/headroom-sql-bench.XXXXXX)
chmod 711 "$TMP" # the postgres user reaches its own dirs inside
PIDS=()
PGD="" PG_STOP=0 PG_UNPIN=0
cleanup() {
    local rc=$? p all=()
    trap - EXIT INT TERM
    for p in "${PIDS[@]}"; do
        kill -0 "$p" 2>/dev/null || continue
        while read -r c; do all+=("$c"); done < <(tree_pids "$p")
    done
    for p in "${all[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 30); do
        local alive=0
        for p in "${all[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for p in "${all[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do { wait "$p"; } 2>/dev/null || true; done
    if ((PG_STOP)); then
        bash "$ROOT/scripts/pg-local.sh" stop "$PGD" >/dev/null 2>>"$TMP/pg-local.log" \
            || echo "bench/sql.sh: could not stop PostgreSQL in $PGD (see $TMP/pg-local.log)" >&2
    elif ((PG_UNPIN)); then # a server that was running before: give it its CPUs back
        for p in $(tree_pids "$PG_PID"); do taskset -a -p -c "0-$((NCPU - 1))" "$p" >/dev/null 2>&1 || true; done
    fi
    if [[ $KEEP_TMP == 1 ]]; then echo "temp dir kept: $TMP" >&2; else rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

export PGPASSWORD=app PGSSLMODE=disable PGCONNECT_TIMEOUT=10 # the same for every target
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGSERVICE PGOPTIONS PGPASSFILE

# ---------------------------------------------------------------- PostgreSQL
MAXCONN=$((MAXC + 2 * POOL + 50))
((MAXCONN >= 300)) || MAXCONN=300
if [[ -n ${PG_DIR:-} ]]; then
    mkdir -p "$PG_DIR"
    PGD=$(cd "$PG_DIR" && pwd -P)
    old=$(sed -n 's/^PRIMARY_PORT=//p' "$PGD/env" 2>/dev/null || true)
    if [[ -n $old ]] && "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$old" -t 1; then PG_UNPIN=1; else PG_STOP=1; fi
else
    PGD=$TMP/pg
    PG_STOP=1
fi
say "starting PostgreSQL (scripts/pg-local.sh, primary only) in $PGD ..."
PG_ENV=$(ONLY=primary MAX_CONNECTIONS=$MAXCONN bash "$ROOT/scripts/pg-local.sh" start "$PGD" 2>"$TMP/pg-local.log") \
    || { tail -n 30 "$TMP/pg-local.log" >&2; die "scripts/pg-local.sh start failed"; }
P_PG=$(sed -n 's/^PRIMARY_PORT=//p' <<<"$PG_ENV")
[[ -n $P_PG ]] || die "scripts/pg-local.sh printed no PRIMARY_PORT"
PG_PID=$(head -n 1 "$PGD/primary/postmaster.pid")
pin_tree "$SRV_CPU" "$PG_PID" # backends fork from the postmaster and inherit its CPU
psql_at() { psql -X -q -At -h 127.0.0.1 -p "$1" -U app -d app -c "$2"; }
have=$(psql_at "$P_PG" "SHOW max_connections") || die "cannot log in to PostgreSQL as app on port $P_PG"
((have >= MAXC + 2 * POOL + 5)) || die "PostgreSQL in $PGD has max_connections=$have; these rows need $MAXCONN"

say "pgbench -i -s $SCALE ..."
pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$P_PG" -U app app >"$TMP/pgbench-init.log" 2>&1 \
    || { tail -n 20 "$TMP/pgbench-init.log" >&2; die "pgbench -i failed"; }

read -r P_PGB P_HR < <(free_ports 2)
[[ -n ${P_HR:-} ]] || die "could not find 2 free ports"

# ---------------------------------------------------------------- pgbouncer
mkdir -p "$TMP/pgbouncer"
printf '"app" "app"\n' >"$TMP/pgbouncer/userlist.txt"
cat >"$TMP/pgbouncer/pgbouncer.ini" <<EOF
[databases]
app = host=127.0.0.1 port=$P_PG dbname=app

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $P_PGB
listen_backlog = 4096
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $TMP/pgbouncer/userlist.txt
pool_mode = transaction
default_pool_size = $POOL
max_client_conn = 1000
logfile = $TMP/pgbouncer/pgbouncer.log
pidfile = $TMP/pgbouncer/pgbouncer.pid
log_connections = 0
log_disconnections = 0
EOF
((EUID == 0)) && chown -R postgres: "$TMP/pgbouncer"
chmod 700 "$TMP/pgbouncer"
start_bg pgbouncer "${AS_PG[@]}" pgbouncer "$TMP/pgbouncer/pgbouncer.ini"
PID_PGB=$LAST_PID
wait_port pgbouncer "$P_PGB" "$PID_PGB"
psql_at "$P_PGB" "SELECT 1" >/dev/null 2>"$TMP/pgbouncer.check" \
    || die "cannot log in through pgbouncer: $(head -n 1 "$TMP/pgbouncer.check")"

# ---------------------------------------------------------------- headroom
HR_SKIP=""
if [[ $SKIP_HEADROOM == 1 ]]; then
    HR_SKIP="SKIP_HEADROOM=1"
else
    HEADROOM=${HEADROOM_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/headroom}
    if [[ ! -x $HEADROOM && -z ${HEADROOM_BIN:-} && $HEADROOM_BUILD != 0 ]]; then
        say "building headroom (release) ..."
        (cd "$ROOT" && cargo build --release -p headroom) >"$TMP/build.log" 2>&1 \
            || HR_SKIP="cargo build --release -p headroom failed: $(grep -m1 '^error' "$TMP/build.log" || tail -n 1 "$TMP/build.log")"
    fi
    if [[ -n $HR_SKIP ]]; then :
    elif [[ ! -x $HEADROOM ]]; then
        HR_SKIP="no executable $HEADROOM"
    else
        cat >"$TMP/headroom.toml" <<EOF
[global]
workers = $WORKERS

[[postgres]]
name = "main"
bind = "127.0.0.1:$P_HR"
primary = "127.0.0.1:$P_PG"
pool_mode = "transaction"   # or "session"
pool_size = $POOL              # server connections per (database, user)
[[postgres.user]]
name = "app"
password = "app"
EOF
        if ! "$HEADROOM" check --config "$TMP/headroom.toml" >"$TMP/headroom.check" 2>&1; then
            HR_SKIP="$HEADROOM does not accept the [[postgres]] config: $(grep -v '^[0-9]* error' "$TMP/headroom.check" | head -n 1)"
        else
            start_bg headroom "$HEADROOM" serve --config "$TMP/headroom.toml"
            PID_HR=$LAST_PID
            for _ in $(seq 150); do
                kill -0 "$PID_HR" 2>/dev/null || { HR_SKIP="headroom serve exited: $(tail -n 1 "$TMP/headroom.log")"; break; }
                timeout 1 bash -c "</dev/tcp/127.0.0.1/$P_HR" 2>/dev/null && break
                sleep 0.1
            done
            if [[ -z $HR_SKIP ]] && ! timeout 1 bash -c "</dev/tcp/127.0.0.1/$P_HR" 2>/dev/null; then
                HR_SKIP="headroom serve is not listening on 127.0.0.1:$P_HR after 15s"
            fi
            if [[ -z $HR_SKIP ]] && ! psql_at "$P_HR" "SELECT 1" >/dev/null 2>"$TMP/headroom.psql"; then
                HR_SKIP="cannot log in through headroom: $(head -n 1 "$TMP/headroom.psql")"
            fi
            [[ -n $HR_SKIP ]] && { kill "$PID_HR" 2>/dev/null || true; }
        fi
    fi
fi
TARGETS=(direct pgbouncer)
[[ -z $HR_SKIP ]] && TARGETS+=(headroom)
declare -A PORT_OF=([direct]=$P_PG [pgbouncer]=$P_PGB [headroom]=$P_HR)
declare -A PID_OF=([pgbouncer]=$PID_PGB [headroom]=${PID_HR:-})

MODEL=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
say ""
say "machine: $NCPU CPUs, ${MODEL:-unknown CPU}; $(uname -sr)"
say "versions: PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'), $(pgbouncer --version | head -n 1), pgbench $(pgbench --version | awk '{print $3}'), headroom ${HEADROOM_BIN:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')}"
say "load: $ROUNDS rounds of ${DURATION}s per target and row (warm-up ${WARMUP}s), target order rotating; pgbench -j $THREADS; scale $SCALE; pool $POOL server connections per (database, user); headroom workers $WORKERS"
[[ $PLACEMENT == none ]] && say "placement: none" || say "placement: pgbench on CPU $WRK_CPU; PostgreSQL and the proxy under test on CPU $SRV_CPU"
[[ -n $HR_SKIP ]] && say "headroom: SKIP ($HR_SKIP)"

# ---------------------------------------------------------------- idle clients' memory
declare -A IDLE_KIB IDLE_NOTE
idle_mem() { # idle_mem TARGET — (RSS with IDLE logged-in idle clients - RSS before) / IDLE
    local t=$1 pid=${PID_OF[$1]} before after out=$TMP/idle.$1.txt ipid i
    before=$(rss_kib "$pid")
    python3 "$ROOT/bench/pg_idle.py" --port "${PORT_OF[$t]}" -n "$IDLE" >"$out" 2>&1 &
    ipid=$!
    PIDS+=("$ipid")
    for i in $(seq 1200); do # 120s
        grep -q '^\(ready\|error\)' "$out" && break
        kill -0 "$ipid" 2>/dev/null || break
        sleep 0.1
    done
    if grep -q '^ready' "$out"; then
        after=$(rss_kib "$pid")
        IDLE_KIB[$t]=$(awk -v a="$before" -v b="$after" -v n="$IDLE" 'BEGIN { printf "%.1f", (b - a) / n }')
        IDLE_NOTE[$t]="RSS $before -> $after KiB; $(sed -n 's/^ready //p' "$out")"
    else
        IDLE_KIB[$t]="FAIL"
        IDLE_NOTE[$t]=$(head -n 1 "$out")
    fi
    kill "$ipid" 2>/dev/null || true
    wait "$ipid" 2>/dev/null || true
}
if ((IDLE > 0)); then
    say ""
    say "== idle clients: $IDLE logged-in connections held open by bench/pg_idle.py, each proxy fresh"
    for t in "${TARGETS[@]}"; do
        [[ $t == direct ]] && continue
        idle_mem "$t"
        say "  $t: ${IDLE_KIB[$t]} KiB per idle client (${IDLE_NOTE[$t]})"
    done
fi

# ---------------------------------------------------------------- rows
pgbench_args() { # pgbench_args ROW — the load part of the pgbench command line
    local w p c j
    IFS=- read -r w p c <<<"$1"
    j=$((THREADS < c ? THREADS : c))
    echo "-c $c -j $j -M $p$([[ $w == select ]] && echo " -S")"
}

declare -A TPS CPU LAT ERR
run() { # run ROW TARGET ROUND — one measured run; tps "-" and ERR set when it fails
    local row=$1 t=$2 r=$3 k="$1,$2,$3" out c0="0 0" c1="0 0" rc=0 xacts tck pid=${PID_OF[$2]:-}
    out="$TMP/$row.$t.r$r.txt"
    [[ -n $pid ]] && c0=$(cpu_ticks "$pid")
    # shellcheck disable=SC2046
    timeout $((DURATION + 60)) "${PIN_WRK[@]}" pgbench -n -T "$DURATION" $(pgbench_args "$row") \
        -h 127.0.0.1 -p "${PORT_OF[$t]}" -U app app >"$out" 2>&1 || rc=$?
    [[ -n $pid ]] && c1=$(cpu_ticks "$pid")
    TPS[$k]=$(awk '/^tps = .*without initial connection time/ { print $3 }' "$out")
    xacts=$(awk -F': ' '/^number of transactions actually processed/ { print $2 }' "$out")
    LAT[$k]=$(awk '/^latency average/ { print $4 }' "$out")
    CPU[$k]="-"
    if ((rc != 0)) || [[ -z ${TPS[$k]} || ${xacts:-0} -eq 0 ]]; then
        TPS[$k]="-"
        if ((rc == 0)); then # pgbench's -T clock includes its connecting: it can run out first
            ERR[$k]="no transaction completed in ${DURATION}s ($(grep -m1 '^initial connection time' "$out" || echo "no connection time")): raise DURATION"
        else
            # the server's message, without pgbench's prefixes (its threads' lines can interleave)
            ERR[$k]=$( (grep -m1 -oE '(ERROR|FATAL|PANIC): .*' "$out" || grep -m1 -E 'error|abort' "$out" || tail -n 1 "$out") |
                sed 's/  */ /g' | cut -c1-160)
        fi
        ((rc == 124)) && ERR[$k]="timed out after $((DURATION + 60))s; ${ERR[$k]}"
        printf '[%s round %d/%d] %-10s FAIL (exit %d): %s\n' "$row" "$r" "$ROUNDS" "$t" "$rc" "${ERR[$k]}"
        return 0
    fi
    tck=$(getconf CLK_TCK)
    [[ -n $pid ]] && CPU[$k]=$(awk -v a="$c0" -v b="$c1" -v t="$tck" -v n="$xacts" 'BEGIN {
        split(a, x, " "); split(b, y, " "); printf "%.1f", ((y[1] - x[1]) + (y[2] - x[2])) / t * 1e6 / n }')
    printf '[%s round %d/%d] %-10s %9.0f tps  latency %7s ms' "$row" "$r" "$ROUNDS" "$t" "${TPS[$k]}" "${LAT[$k]:-?}"
    [[ -n $pid ]] && printf '  cpu %6s µs/xact' "${CPU[$k]}"
    echo
}

vals() { # vals ARRAY ROW TARGET — the per-round values
    local -n a=$1
    local r
    for ((r = 1; r <= ROUNDS; r++)); do echo "${a[$2,$3,$r]:-}"; done
}
med() { # med ARRAY ROW TARGET — median over the rounds, FAIL when every round failed, "-" if not run
    local m
    [[ " ${TARGETS[*]} " == *" $3 "* ]] || { echo "-"; return; }
    m=$(median $(vals "$1" "$2" "$3"))
    if [[ $m == - && $1 == TPS ]]; then echo FAIL; else echo "$m"; fi
}
paired() { # paired ROW A B — "median (lo-hi)" of the per-round ratios A/B, n/a when none
    local r rs=() m
    for ((r = 1; r <= ROUNDS; r++)); do rs+=("$(ratio "${TPS[$1,$2,$r]:--}" "${TPS[$1,$3,$r]:--}")"); done
    m=$(median "${rs[@]}")
    [[ $m == - ]] && { echo "n/a"; return; }
    printf '%.2f (%s)\n' "$m" "$(printf '%s\n' "${rs[@]}" | awk '$1 != "n/a"' | sort -g |
        awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%s-%s", lo, hi }')"
}
fmt_tps() { [[ $1 =~ ^[0-9.]+$ ]] && printf '%.0f' "$1" || printf '%s' "$1"; }

for row in $ROWS; do
    say ""
    say "== $row: pgbench -n -T $DURATION $(pgbench_args "$row")"
    if ((WARMUP > 0)); then
        for t in "${TARGETS[@]}"; do
            # shellcheck disable=SC2046
            timeout $((WARMUP + 60)) "${PIN_WRK[@]}" pgbench -n -T "$WARMUP" $(pgbench_args "$row") \
                -h 127.0.0.1 -p "${PORT_OF[$t]}" -U app app >"$TMP/$row.$t.warm.txt" 2>&1 || true
        done
    fi
    n=${#TARGETS[@]}
    for ((r = 1; r <= ROUNDS; r++)); do
        for ((i = 0; i < n; i++)); do run "$row" "${TARGETS[$(((r - 1 + i) % n))]}" "$r"; done
    done
    line="  medians:"
    for t in direct pgbouncer headroom; do
        if [[ $t == headroom && -n $HR_SKIP ]]; then line+=" headroom SKIP"; continue; fi
        m=$(fmt_tps "$(med TPS "$row" "$t")")
        if [[ $m == FAIL ]]; then line+=" $t FAIL"; else line+=" $t $m tps"; fi
        [[ $t != direct && $m != FAIL ]] && line+=" ($(med CPU "$row" "$t") µs/xact)"
        [[ $t != headroom ]] && line+=","
    done
    say "$line"
    for pair in "headroom pgbouncer" "headroom direct" "pgbouncer direct"; do
        read -r a b <<<"$pair"
        say "  $a/$b tps, paired per round: $(paired "$row" "$a" "$b")"
    done
    for t in "${TARGETS[@]}"; do
        for ((r = 1; r <= ROUNDS; r++)); do
            if [[ ${TPS[$row,$t,$r]:-} == - ]]; then say "  $t FAIL: ${ERR[$row,$t,$r]}"; break; fi
        done
    done
done

# ---------------------------------------------------------------- summary
say ""
say "summary: tps medians over $ROUNDS rounds; ratios paired per round, median (range); µs/xact is the proxy's CPU"
[[ -n $HR_SKIP ]] && say "headroom: SKIP ($HR_SKIP)"
say ""
say "| row | direct tps | pgbouncer tps | headroom tps | headroom/pgbouncer | headroom/direct | pgbouncer/direct | pgbouncer µs/xact | headroom µs/xact |"
say "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for row in $ROWS; do
    say "| $row | $(fmt_tps "$(med TPS "$row" direct)") | $(fmt_tps "$(med TPS "$row" pgbouncer)") | $(fmt_tps "$(med TPS "$row" headroom)") | $(paired "$row" headroom pgbouncer) | $(paired "$row" headroom direct) | $(paired "$row" pgbouncer direct) | $(med CPU "$row" pgbouncer) | $(med CPU "$row" headroom) |"
done
for row in $ROWS; do
    for t in "${TARGETS[@]}"; do
        for ((r = 1; r <= ROUNDS; r++)); do
            if [[ ${TPS[$row,$t,$r]:-} == - ]]; then say "FAIL $row $t (round $r): ${ERR[$row,$t,$r]}"; break; fi
        done
    done
done
if ((IDLE > 0)); then
    say ""
    kib() { [[ ${IDLE_KIB[$1]:-} =~ ^-?[0-9] ]] && echo "${IDLE_KIB[$1]} KiB" || echo "${IDLE_KIB[$1]:-SKIP}"; }
    say "memory per idle client ($IDLE logged-in connections): pgbouncer $(kib pgbouncer), headroom $(kib headroom)"
fi
