#!/usr/bin/env bash
# scripts/pg-local.sh — local PostgreSQL servers for headroom's PostgreSQL proxy: a primary,
# a streaming replica of it, and two independent shard primaries, all on loopback.
#
# Usage:
#   bash scripts/pg-local.sh start DIR   init (first time) and start the servers; prints the env lines
#   bash scripts/pg-local.sh stop DIR    stop them (pg_ctl stop -m fast); the data stays
#   bash scripts/pg-local.sh env DIR     print the env lines again
#
# start prints to stdout, and nothing else (progress goes to stderr), one line per server and
# the dir, and writes the same lines to DIR/env:
#   PRIMARY_PORT=NNNN  REPLICA_PORT=NNNN  SHARD0_PORT=NNNN  SHARD1_PORT=NNNN  PG_DIR=DIR
# so `eval "$(bash scripts/pg-local.sh start /tmp/pg)"` sets them. It also writes
# DIR/headroom.toml (a [[postgres]] proxy in front of the primary on a free port).
#
# Layout: data in DIR/primary, DIR/replica, DIR/shard0, DIR/shard1; logs in DIR/NAME.log;
# unix sockets in DIR (nothing touches /var/run/postgresql). Every server listens on
# 127.0.0.1 only, on a port the OS picked as free the first time (kept in DIR/env). A DIR that
# already has data is not re-initialised: start just starts what is not running.
# Logins: superuser postgres/postgres; role app/app owning database app (on the primary, the
# replica gets it by replication, and on each shard). Local socket: trust; TCP: scram-sha-256.
#
# Env knobs:
#   ONLY="primary replica"   start a subset (primary replica shard0 shard1); a replica
#                            needs its primary, shards need nothing else
#   MAX_CONNECTIONS=300      max_connections of every server (set at initdb time)
#   PG_BIN=/usr/lib/postgresql/15/bin   where initdb, pg_ctl, pg_basebackup, postgres live
#
# Run as root: the servers run as the `postgres` OS user (created if missing), via runuser;
# DIR is chowned to it. Run as another user: the servers run as that user.
set -euo pipefail

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
MAX_CONNECTIONS=${MAX_CONNECTIONS:-300}
ALL=(primary replica shard0 shard1)

log() { echo "pg-local: $*" >&2; }
die() { echo "pg-local: error: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit "${1:-1}"; }

[[ ${1:-} == -h || ${1:-} == --help ]] && usage 0
(($# == 2)) || usage 1
CMD=$1
case $CMD in start | stop | env) ;; *) usage 1 ;; esac
[[ -n $2 ]] || die "DIR is empty"
# The pg tools must not pick up the caller's connection defaults.
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGPASSWORD PGPASSFILE PGSERVICE PGSERVICEFILE PGOPTIONS PGSSLMODE PGTARGETSESSIONATTRS

for t in initdb pg_ctl pg_basebackup postgres psql pg_isready; do
    [[ -x $PG_BIN/$t ]] || die "$PG_BIN/$t not found (set PG_BIN to the PostgreSQL bin dir)"
done
[[ $MAX_CONNECTIONS =~ ^[1-9][0-9]*$ ]] || die "MAX_CONNECTIONS must be a positive integer (got '$MAX_CONNECTIONS')"

# ---------------------------------------------------------------- who runs the servers
AS_PG=()
PG_OWNER=$(id -un)
if ((EUID == 0)); then
    if ! id postgres >/dev/null 2>&1; then
        [[ $CMD == start ]] || die "no postgres OS user (start creates it)"
        log "creating the postgres OS user"
        useradd -r -m postgres || die "useradd -r -m postgres failed"
    fi
    AS_PG=(runuser -u postgres --)
    PG_OWNER=postgres
fi
pg() { "${AS_PG[@]}" "$@"; } # run as the servers' owner

# ---------------------------------------------------------------- the dir and its env file
if [[ $CMD == start ]]; then
    mkdir -p "$2" || die "cannot create $2"
fi
[[ -d $2 ]] || die "$2 is not a directory"
DIR=$(cd "$2" && pwd -P)
ENVF=$DIR/env
((${#DIR} <= 80)) || die "DIR path is too long for unix sockets (${#DIR} chars, keep it under 80): $DIR"

declare -A PORT=()
var_of() { local n=${1^^}; echo "${n}_PORT"; } # primary -> PRIMARY_PORT
read_env() {
    local n v
    for n in "${ALL[@]}"; do
        v=""
        [[ -f $ENVF ]] && v=$(sed -n "s/^$(var_of "$n")=\([0-9][0-9]*\)\$/\1/p" "$ENVF" | tail -n 1)
        # no env line (file lost?) but data: the port the server's own config has
        [[ -z $v && -f $DIR/$n/postgresql.conf ]] &&
            v=$(sed -n 's/^port = \([0-9][0-9]*\)$/\1/p' "$DIR/$n/postgresql.conf" | tail -n 1)
        [[ -n $v ]] && PORT[$n]=$v
    done
    return 0
}
env_lines() {
    local n
    for n in "${ALL[@]}"; do [[ -n ${PORT[$n]:-} ]] && echo "$(var_of "$n")=${PORT[$n]}"; done
    echo "PG_DIR=$DIR"
}
read_env

if [[ $CMD == env ]]; then
    [[ -f $ENVF ]] || die "no $ENVF (run: bash $0 start $DIR)"
    env_lines
    exit 0
fi

has_data() { [[ -f $DIR/$1/PG_VERSION ]]; }
running() { has_data "$1" && pg "$PG_BIN/pg_ctl" status -D "$DIR/$1" >/dev/null 2>&1; }
log_tail() { # log_tail NAME — the tail of a server's log, to stderr
    if [[ -f $DIR/$1.log ]]; then
        echo "--- tail of $DIR/$1.log:" >&2
        tail -n 25 "$DIR/$1.log" >&2
    fi
}
fail() { # fail NAME MESSAGE — the message, the server's log, exit 1
    echo "pg-local: error: $1: $2" >&2
    log_tail "$1"
    exit 1
}

# ---------------------------------------------------------------- stop
if [[ $CMD == stop ]]; then
    stopped=0
    for n in replica primary shard0 shard1; do # the replica before its primary
        if running "$n"; then
            log "stopping $n"
            pg "$PG_BIN/pg_ctl" stop -D "$DIR/$n" -m fast -w -t 60 >&2 || fail "$n" "pg_ctl stop failed"
            stopped=$((stopped + 1))
        fi
    done
    log "stopped $stopped server(s); data kept in $DIR"
    exit 0
fi

# ---------------------------------------------------------------- start
WANT=()
for n in ${ONLY:-${ALL[*]}}; do
    case $n in primary | replica | shard0 | shard1) ;; *) die "ONLY: unknown server '$n' (servers: ${ALL[*]})" ;; esac
    [[ " ${WANT[*]} " == *" $n "* ]] || WANT+=("$n")
done
((${#WANT[@]})) || die "ONLY is empty"
want() { [[ " ${WANT[*]} " == *" $1 "* ]]; }
if want replica && ! want primary && ! running primary; then
    log "the replica needs its primary: starting the primary too"
    WANT=(primary "${WANT[@]}")
fi

if ((EUID == 0)); then
    chown "$PG_OWNER:" "$DIR" || die "cannot chown $DIR to $PG_OWNER"
fi
chmod 755 "$DIR"
pg test -w "$DIR" -a -x "$DIR" ||
    die "$PG_OWNER cannot write $DIR (a parent dir is not searchable by it?): choose a dir under /tmp, or chmod o+x the parents"

free_ports() { # free_ports N — N distinct ports the OS gives out as free, on one line
    python3 -c '
import socket, sys
ss = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); ss.append(s)
print(*[s.getsockname()[1] for s in ss])' "$1"
}

HR_TOML=$DIR/headroom.toml
HEADROOM_PORT=""
[[ -f $HR_TOML ]] && HEADROOM_PORT=$(sed -n 's/^bind = "127\.0\.0\.1:\([0-9]*\)"$/\1/p' "$HR_TOML" | head -n 1)
need=()
for n in "${WANT[@]}"; do [[ -n ${PORT[$n]:-} ]] || need+=("$n"); done
nports=${#need[@]}
[[ -z $HEADROOM_PORT ]] && nports=$((nports + 1))
if ((nports)); then
    read -r -a got < <(free_ports "$nports") || die "could not get free ports from the OS"
    ((${#got[@]} == nports)) || die "could not get $nports free ports from the OS"
    i=0
    for n in "${need[@]}"; do PORT[$n]=${got[$i]}; i=$((i + 1)); done
    [[ -z $HEADROOM_PORT ]] && HEADROOM_PORT=${got[$i]}
fi
env_lines >"$ENVF.tmp" && mv "$ENVF.tmp" "$ENVF"

psql_su() { # psql_su NAME ARGS... — as superuser postgres over the unix socket in DIR (trust)
    local n=$1; shift
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$DIR" -p "${PORT[$n]}" -U postgres -d postgres "$@"
}

write_conf() { # write_conf NAME — our settings, appended to postgresql.conf (later lines win)
    cat >>"$DIR/$1/postgresql.conf" <<EOF

# ---- scripts/pg-local.sh ($1)
# TEST / BENCHMARK SERVER ONLY: fsync, synchronous_commit and full_page_writes are off, so a
# crash of this machine can lose or corrupt the data. Never copy these settings to production.
port = ${PORT[$1]}
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
max_connections = $MAX_CONNECTIONS
shared_buffers = 128MB
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
max_slot_wal_keep_size = 1GB
hot_standby = on
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
}

init_primary() { # init_primary NAME — initdb, our settings, pg_hba for replication
    local n=$1 d=$DIR/$1
    log "initdb $n (port ${PORT[$n]})"
    rm -rf "$d"
    printf 'postgres\n' >"$DIR/.pwfile.$n"
    chmod 600 "$DIR/.pwfile.$n"
    ((EUID == 0)) && chown "$PG_OWNER:" "$DIR/.pwfile.$n"
    if ! pg "$PG_BIN/initdb" -D "$d" -U postgres --pwfile="$DIR/.pwfile.$n" --auth-local=trust \
        --auth-host=scram-sha-256 -E UTF8 --locale=C --no-sync >"$DIR/$n.initdb.log" 2>&1; then
        rm -f "$DIR/.pwfile.$n"
        echo "--- $DIR/$n.initdb.log:" >&2
        tail -n 25 "$DIR/$n.initdb.log" >&2
        rm -rf "$d"
        die "initdb of $n failed"
    fi
    rm -f "$DIR/.pwfile.$n"
    write_conf "$n"
    # initdb's pg_hba already has `host replication all 127.0.0.1/32 scram-sha-256`; make sure.
    grep -Eq '^host[[:space:]]+replication[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+scram-sha-256' "$d/pg_hba.conf" ||
        echo "host    replication     all             127.0.0.1/32            scram-sha-256" >>"$d/pg_hba.conf"
}

start_server() { # start_server NAME — pg_ctl start unless running, then wait for pg_isready
    local n=$1 i
    if running "$n"; then
        log "$n already running"
    else
        log "starting $n on 127.0.0.1:${PORT[$n]}"
        pg "$PG_BIN/pg_ctl" start -D "$DIR/$n" -l "$DIR/$n.log" -w -t 120 >/dev/null 2>&1 ||
            fail "$n" "pg_ctl start failed (port ${PORT[$n]} taken? see the log)"
    fi
    for i in $(seq 600); do # 60s, polled
        "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "${PORT[$n]}" -t 1 && return 0
        running "$n" || fail "$n" "the server exited"
        sleep 0.1
    done
    fail "$n" "not accepting connections on 127.0.0.1:${PORT[$n]} after 60s"
}

create_app() { # create_app NAME — role app/app and database app, if missing
    psql_su "$1" <<'EOF' || fail "$1" "could not create role/database app"
SELECT 'CREATE ROLE app LOGIN PASSWORD ''app''' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app') \gexec
SELECT 'CREATE DATABASE app OWNER app' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'app') \gexec
EOF
}

init_replica() { # pg_basebackup -R of the running primary, with a physical slot
    local d=$DIR/replica
    log "pg_basebackup primary -> replica (port ${PORT[replica]})"
    rm -rf "$d"
    psql_su primary -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'replica' AND NOT active" >/dev/null ||
        fail primary "could not drop the stale slot 'replica'"
    if ! pg env PGPASSWORD=postgres "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "${PORT[primary]}" -U postgres \
        -D "$d" -R -X stream -C -S replica --checkpoint=fast --no-sync >"$DIR/replica.basebackup.log" 2>&1; then
        echo "--- $DIR/replica.basebackup.log:" >&2
        tail -n 25 "$DIR/replica.basebackup.log" >&2
        rm -rf "$d"
        die "pg_basebackup of the primary failed"
    fi
    grep -q "password=" "$d/postgresql.auto.conf" ||
        { rm -rf "$d"; die "pg_basebackup -R wrote no password into primary_conninfo"; }
    cat >>"$d/postgresql.conf" <<EOF

# ---- scripts/pg-local.sh (replica of the primary on port ${PORT[primary]}; standby.signal and
# primary_conninfo come from pg_basebackup -R)
port = ${PORT[replica]}
hot_standby = on
EOF
}

wait_streaming() { # until the primary has a streaming walsender and the replica sees app
    local i s r
    for i in $(seq 600); do # 60s, polled
        s=$(psql_su primary -Atc "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'" 2>/dev/null || echo 0)
        r=$(psql_su replica -Atc "SELECT pg_is_in_recovery() AND EXISTS (SELECT FROM pg_database WHERE datname = 'app')" 2>/dev/null || echo f)
        if ((s > 0)) && [[ $r == t ]]; then
            log "replica streaming from the primary"
            return 0
        fi
        running replica || fail replica "the replica exited"
        sleep 0.1
    done
    log_tail primary
    fail replica "not streaming from the primary after 60s (pg_stat_replication streaming=$s, replica in recovery with app=$r)"
}

for n in primary shard0 shard1; do
    want "$n" || continue
    has_data "$n" || init_primary "$n"
    start_server "$n"
    create_app "$n"
done
if want replica; then
    running primary || die "the replica needs the primary running"
    if has_data replica && [[ ! -f $DIR/replica/standby.signal ]]; then
        die "$DIR/replica has data but no standby.signal (was it promoted?); remove it to re-clone"
    fi
    has_data replica || init_replica
    start_server replica
    wait_streaming
fi

# ---------------------------------------------------------------- headroom config
if [[ -n ${PORT[primary]:-} ]]; then
    cat >"$HR_TOML" <<EOF
[global]
workers = 1

[[postgres]]
name = "main"
bind = "127.0.0.1:$HEADROOM_PORT"
primary = "127.0.0.1:${PORT[primary]}"
pool_mode = "transaction"   # or "session"
pool_size = 20              # server connections per (database, user)
[[postgres.user]]
name = "app"
password = "app"
EOF
fi

# ---------------------------------------------------------------- output
env_lines
{
    echo
    echo "try it:"
    for n in "${WANT[@]}"; do
        printf '  %-8s PGPASSWORD=app psql -h 127.0.0.1 -p %s -U app app\n' "$n" "${PORT[$n]}"
    done
    if want primary; then
        echo "  pgbench: PGPASSWORD=app pgbench -i -s 10 -h 127.0.0.1 -p ${PORT[primary]} -U app app"
        echo "           PGPASSWORD=app pgbench -n -S -T 10 -c 20 -j 2 -h 127.0.0.1 -p ${PORT[primary]} -U app app"
        echo
        echo "headroom in front of the primary ($HR_TOML):"
        sed 's/^/    /' "$HR_TOML"
        echo "  headroom serve --config $HR_TOML"
        echo "  PGPASSWORD=app psql -h 127.0.0.1 -p $HEADROOM_PORT -U app app"
        echo "  PGPASSWORD=app pgbench -n -S -T 10 -c 20 -j 2 -h 127.0.0.1 -p $HEADROOM_PORT -U app app"
    fi
    echo "  stop: bash scripts/pg-local.sh stop $DIR"
} >&2
