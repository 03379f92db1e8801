#!/usr/bin/env bash
# bench/proxy.sh — headroom next to nginx and HAProxy, same upstream, same load, ROUNDS rounds.
#
# Runs on loopback only, everything in a temp dir, everything killed on exit:
#   1. upstream alone: nginx `return 200 "ok"` (1 worker), hit directly by wrk
#   2. nginx reverse proxy   (1 worker, upstream keepalive 64)
#   3. HAProxy               (nbthread 1, http-reuse always)
#   4. headroom              (serve --workers 1)
# then, unless TWO_WORKERS=0, a second set of rounds with two workers each, unpinned:
#   nginx `worker_processes 2`, HAProxy `nbthread 2`, headroom `workers = 2` (the machine's
#   cores are shared by the two workers, wrk and the upstream: on 2 cores this measures how
#   each proxy shares them, not how it scales).
# For each: req/s, p50, p99 (wrk --latency); for the proxies also CPU time per request
# (utime+stime from /proc/PID/stat over the measured run / requests served).
# On a shared, noisy machine one run per target is not enough, so the measurements are
# repeated ROUNDS times: each round measures every target once (upstream first, then the three
# proxies in an order that rotates from round to round, so slow drifts in machine load do not
# favour one proxy). Reported per target: the median over rounds of req/s, p50, p99 and CPU/req,
# plus the min-max range of req/s; ratios come from the medians, and the per-round (paired)
# ratio of CPU/req between headroom and each proxy is printed with its median.
# Then, once, RSS of each proxy idle and holding IDLE_CONNS idle keep-alive connections.
#
# Env knobs:
#   ROUNDS=5       measurement rounds (each target measured once per round)
#   DURATION=5s    measured run per target per round (wrk -d)
#   WARMUP=1s      warm-up per target, once before the first round, not measured
#   CONNS=64       wrk connections (always one wrk thread)
#   IDLE_CONNS=10000   idle keep-alive connections for the memory run (0 skips it)
#   PLACEMENT=shared   CPU placement on 2+ cores:
#       shared: wrk on CPU 1; upstream and the proxy under test both on CPU 0
#       split:  wrk on CPU 1; proxy under test alone on CPU 0; upstream moved to CPU 1
#               (beside wrk) for the proxy runs, on CPU 0 for its own direct run
#       none:   no pinning
#   TWO_WORKERS=1  also measure the two-worker row (0 skips it)
#   WATCH=1        also measure the watch plane's cost (0 skips it): headroom with the access
#                  log on (to a file), without [watch], with it (two SLOs, a rule, a history
#                  file), and with it and [watch.tracing] at 1% (exporting OTLP to the origin),
#                  one worker, pinned as above, interleaved rounds, paired ratios
#   HEADROOM_BIN=path  measure this headroom binary instead of building one (before/after runs)
#   KEEP_TMP=1     keep the temp dir (configs, logs, raw wrk output)
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
CONNS=${CONNS:-64}
IDLE_CONNS=${IDLE_CONNS:-10000}
PLACEMENT=${PLACEMENT:-shared}
KEEP_TMP=${KEEP_TMP:-0}
TWO_WORKERS=${TWO_WORKERS:-1}
WATCH=${WATCH:-1}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
export PATH="$PATH:/usr/sbin:/sbin"

# ---------------------------------------------------------------- tools
missing=()
for t in nginx haproxy wrk; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
if ((${#missing[@]})); then
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them"
    say "installing ${missing[*]} ..."
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"; then
        apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" \
            || die "apt-get install ${missing[*]} failed"
    fi
fi
for t in nginx haproxy wrk cargo python3 taskset getconf timeout pgrep curl awk; do
    command -v "$t" >/dev/null 2>&1 || die "required tool '$t' not found in PATH"
done

# shellcheck source=bench/targets.sh
source "$ROOT/bench/targets.sh"
setup_placement
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer (got '$ROUNDS')"
# File descriptors: 10k idle connections need >10k fds in headroom/nginx/haproxy and in the
# client (setup_placement raised the limit as far as it goes).
if ((IDLE_CONNS > 0 && NOFILE < IDLE_CONNS + 500)); then
    say "note: open-file limit is $NOFILE (hard limit $(ulimit -Hn)); memory run skipped"
    IDLE_CONNS=0
fi

setup_run proxy

# ---------------------------------------------------------------- ports
read -r P_UP P_NGINX P_HAPROXY P_HEADROOM P_ADMIN P_NGINX2 P_HAPROXY2 P_HEADROOM2 P_ADMIN2 P_LOG P_LOG_ADMIN P_WATCH P_WATCH_ADMIN P_TRACE P_TRACE_ADMIN < <(free_ports 15)
[[ -n ${P_TRACE_ADMIN:-} ]] || die "could not find 15 free ports in 18000-19999"

# ---------------------------------------------------------------- helpers
start_free() { # start_free NAME cmd... (not pinned: the two-worker row); sets LAST_PID
    local name=$1; shift
    "$@" >"$TMP/$name.stdout" 2>"$TMP/$name.log" &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

check_ok() { # one request through, body must be "ok"
    local name=$1 port=$2 body
    body=$(curl -s --max-time 5 "http://127.0.0.1:$port/") || die "$name: curl to 127.0.0.1:$port failed"
    [[ $body == ok ]] || die "$name: expected body 'ok' from 127.0.0.1:$port, got '$body'"
}

# Per-round results are keyed "NAME,ROUND"; RPS/P50/P99/CPU keyed by NAME hold the medians.
declare -A R_RPS R_P50 R_P99 R_CPU R_USR R_SYS R_REQS
declare -A RPS P50 P99 CPU USR SYS RPS_MIN RPS_MAX RSS_IDLE RSS_WITH RSS_OPEN

warm() { # warm NAME PORT — one unmeasured run
    local name=$1 port=$2 out="$TMP/$1.warm.txt"
    "${PIN_WRK[@]}" wrk -t1 -c"$CONNS" -d"$WARMUP" "http://127.0.0.1:$port/" >"$out" \
        || die "$name: wrk warm-up failed: $(cat "$out")"
    show_errors "$name" "$out"
}

bench() { # bench NAME PORT ROUND [PROXY_ROOT_PID] — one measured run, stored under "NAME,ROUND"
    local name=$1 port=$2 r=$3 root=${4:-} c0="0 0" c1="0 0" tck out k
    k="$name,$r"
    out="$TMP/$name.r$r.wrk.txt"
    printf '[round %d/%d] %-9s ' "$r" "$ROUNDS" "$name"
    [[ -n $root ]] && c0=$(cpu_ticks "$root")
    "${PIN_WRK[@]}" wrk -t1 -c"$CONNS" -d"$DURATION" --latency "http://127.0.0.1:$port/" >"$out" \
        || { echo; die "$name: wrk failed: $(cat "$out")"; }
    [[ -n $root ]] && c1=$(cpu_ticks "$root")

    local parsed
    parsed=$(parse_wrk "$out")
    read -r R_RPS[$k] R_P50[$k] R_P99[$k] R_REQS[$k] <<<"$parsed"
    [[ ${R_REQS[$k]:-0} -gt 0 ]] || { echo; die "$name: could not parse wrk output:"$'\n'"$(cat "$out")"; }
    if [[ -n $root ]]; then
        tck=$(getconf CLK_TCK)
        read -r R_CPU[$k] R_USR[$k] R_SYS[$k] < <(awk -v a="$c0" -v b="$c1" -v t="$tck" -v n="${R_REQS[$k]}" 'BEGIN {
            split(a, x, " "); split(b, y, " "); u = (y[1] - x[1]) / t * 1e6 / n; s = (y[2] - x[2]) / t * 1e6 / n
            printf "%.2f %.2f %.2f\n", u + s, u, s }')
    else
        R_CPU[$k]="-" R_USR[$k]="-" R_SYS[$k]="-"
    fi
    printf '%10.0f req/s  p50 %7.3f ms  p99 %7.3f ms  cpu %s µs/req (user %s, sys %s)  (%s requests)\n' \
        "${R_RPS[$k]}" "${R_P50[$k]}" "${R_P99[$k]}" "${R_CPU[$k]}" "${R_USR[$k]}" "${R_SYS[$k]}" "${R_REQS[$k]}"
    show_errors "$name" "$out"
}

summarize() { # summarize TARGET... — medians and req/s range per target over all rounds
    local t vals
    for t in "$@"; do
        mapfile -t vals < <(round_values R_RPS "$t")
        RPS[$t]=$(median "${vals[@]}")
        RPS_MIN[$t]=$(printf '%s\n' "${vals[@]}" | sort -g | head -n 1)
        RPS_MAX[$t]=$(printf '%s\n' "${vals[@]}" | sort -g | tail -n 1)
        mapfile -t vals < <(round_values R_P50 "$t"); P50[$t]=$(median "${vals[@]}")
        mapfile -t vals < <(round_values R_P99 "$t"); P99[$t]=$(median "${vals[@]}")
        mapfile -t vals < <(round_values R_CPU "$t"); CPU[$t]=$(median "${vals[@]}")
        [[ ${CPU[$t]} == - ]] || CPU[$t]=$(awk -v c="${CPU[$t]}" 'BEGIN { printf "%.2f", c }')
        mapfile -t vals < <(round_values R_USR "$t"); USR[$t]=$(median "${vals[@]}")
        mapfile -t vals < <(round_values R_SYS "$t"); SYS[$t]=$(median "${vals[@]}")
    done
}

HOLDER="$TMP/hold.py"
cat >"$HOLDER" <<'EOF'
# Open N keep-alive connections, do one complete request on each, then hold them idle.
import select, signal, socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(req)
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(4096)
        if not d:
            sys.exit(f"connection {i}: closed before a response")
        buf += d
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    if lines[0].split()[1] != b"200":
        sys.exit(f"connection {i}: {lines[0].decode(errors='replace')}")
    hdrs = {k.strip().lower(): v.strip() for k, _, v in (l.partition(b":") for l in lines[1:])}
    if b"content-length" in hdrs:
        want = int(hdrs[b"content-length"])
        while len(body) < want:
            d = s.recv(4096)
            if not d:
                sys.exit(f"connection {i}: closed mid-body")
            body += d
    elif hdrs.get(b"transfer-encoding", b"").lower() == b"chunked":
        while not body.endswith(b"0\r\n\r\n"):
            d = s.recv(4096)
            if not d:
                sys.exit(f"connection {i}: closed mid-body")
            body += d
    else:
        sys.exit(f"connection {i}: response is neither content-length nor chunked")
    socks.append(s)
time.sleep(1)
# Any socket readable now was closed (or sent junk) by the server.
poller = select.poll()
for s in socks:
    poller.register(s, select.POLLIN)
closed = len(poller.poll(0))
print(f"ready {n - closed}", flush=True)
signal.pause()
EOF

mem_run() { # mem_run NAME PORT ROOT_PID
    local name=$1 port=$2 root=$3 hp i open
    sleep 1
    RSS_IDLE[$name]=$(rss_kib "$root")
    "${PIN_WRK[@]}" python3 "$HOLDER" "$port" "$IDLE_CONNS" >"$TMP/hold.$name.out" 2>"$TMP/hold.$name.log" &
    hp=$!
    PIDS+=("$hp")
    for i in $(seq 1200); do # up to 120 s
        grep -q '^ready' "$TMP/hold.$name.out" 2>/dev/null && break
        kill -0 "$hp" 2>/dev/null || die "$name: idle-connection client failed: $(tail -n 5 "$TMP/hold.$name.log")"
        sleep 0.1
    done
    grep -q '^ready' "$TMP/hold.$name.out" || die "$name: $IDLE_CONNS idle connections not open within 120s"
    open=$(awk '/^ready/ {print $2}' "$TMP/hold.$name.out")
    RSS_WITH[$name]=$(rss_kib "$root")
    RSS_OPEN[$name]=$open
    kill -TERM "$hp" 2>/dev/null || true
    { wait "$hp"; } 2>/dev/null || true
    awk -v n="$name" -v a="${RSS_IDLE[$name]}" -v b="${RSS_WITH[$name]}" -v c="$IDLE_CONNS" -v o="$open" 'BEGIN {
        printf "%-9s RSS idle %7.1f MiB, with %d idle conns %7.1f MiB -> %.2f KiB/conn  (%d of %d still open when measured)\n",
            n, a / 1024, c, b / 1024, (b - a) / c, o, c }'
}

# ---------------------------------------------------------------- configs
ME_USER=$(id -un) ME_GROUP=$(id -gn)
NGINX_USER=""
[[ $EUID -eq 0 ]] && NGINX_USER="user $ME_USER $ME_GROUP;" # workers stay root instead of nobody
WCONN=$((NOFILE > 30000 ? 30000 : NOFILE))
mkdir -p "$TMP/nginx-up" "$TMP/nginx-proxy"
nginx_common() { # nginx_common DIR
    cat <<EOF
$NGINX_USER
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile $NOFILE;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections $WCONN; }
EOF
}
# keepalive_requests raised everywhere: nginx's default of 1000 would close client and
# upstream keep-alive connections every 1000 requests, for every proxy alike.
{
    nginx_common "$TMP/nginx-up"
    cat <<EOF
http {
    access_log off;
    keepalive_requests 1000000000;
    keepalive_timeout 120s;
    client_body_temp_path $TMP/nginx-up/body; proxy_temp_path $TMP/nginx-up/proxy;
    fastcgi_temp_path $TMP/nginx-up/fcgi; uwsgi_temp_path $TMP/nginx-up/uwsgi; scgi_temp_path $TMP/nginx-up/scgi;
    server {
        listen 127.0.0.1:$P_UP;
        location / { return 200 "ok"; }
    }
}
EOF
} >"$TMP/nginx-up.conf"
{
    nginx_common "$TMP/nginx-proxy"
    cat <<EOF
http {
    access_log off;
    keepalive_requests 1000000000;
    keepalive_timeout 120s;
    client_body_temp_path $TMP/nginx-proxy/body; proxy_temp_path $TMP/nginx-proxy/proxy;
    fastcgi_temp_path $TMP/nginx-proxy/fcgi; uwsgi_temp_path $TMP/nginx-proxy/uwsgi; scgi_temp_path $TMP/nginx-proxy/scgi;
    upstream app {
        server 127.0.0.1:$P_UP;
        keepalive 64;
        keepalive_requests 1000000000;
    }
    server {
        listen 127.0.0.1:$P_NGINX;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
} >"$TMP/nginx-proxy.conf"

# maxconn must exceed IDLE_CONNS; HAProxy reserves 2 fds per connection and by default refuses
# to start when the fd limit is lower than that ("strict-limits"). Idle client connections
# need only one fd each, so let it start with a warning instead.
HAP_MAXCONN=$((IDLE_CONNS + 1000 > 4096 ? IDLE_CONNS + 1000 : 4096))
cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $HAP_MAXCONN
    no strict-limits
defaults
    mode http
    timeout connect 5s
    timeout client 120s
    timeout server 30s
    timeout http-request 120s
    timeout http-keep-alive 120s
frontend fe
    bind 127.0.0.1:$P_HAPROXY
    default_backend be
backend be
    http-reuse always
    server up 127.0.0.1:$P_UP
EOF

# max_connections / header_timeout only matter for the idle-connection memory run (defaults
# 10000 and 15s would cap and reap those); at 64 busy connections they change nothing.
cat >"$TMP/headroom.toml" <<EOF
[global]
access_log = "off"
workers = 1
watch = false
[admin]
bind = "127.0.0.1:$P_ADMIN"
[[listener]]
bind = "127.0.0.1:$P_HEADROOM"
max_connections = 20000
header_timeout = "120s"
[[route]]
service = "app"
[service.app]
balance = "round-robin"
replicas = ["127.0.0.1:$P_UP"]
retry = { attempts = 1 }
EOF

# The two-worker row: the same configs with two workers, on their own ports.
mkdir -p "$TMP/nginx-proxy2"
sed -e "s#$TMP/nginx-proxy/#$TMP/nginx-proxy2/#g" \
    -e "s/^worker_processes 1;/worker_processes 2;/" -e "s/listen 127.0.0.1:$P_NGINX;/listen 127.0.0.1:$P_NGINX2;/" \
    "$TMP/nginx-proxy.conf" >"$TMP/nginx-proxy2.conf"
sed -e "s/^    nbthread 1$/    nbthread 2/" -e "s/bind 127.0.0.1:$P_HAPROXY$/bind 127.0.0.1:$P_HAPROXY2/" \
    "$TMP/haproxy.cfg" >"$TMP/haproxy2.cfg"
sed -e "s/^workers = 1$/workers = 2/" -e "s/127.0.0.1:$P_ADMIN/127.0.0.1:$P_ADMIN2/" \
    -e "s/127.0.0.1:$P_HEADROOM\"/127.0.0.1:$P_HEADROOM2\"/" "$TMP/headroom.toml" >"$TMP/headroom2.toml"
grep -q "worker_processes 2;" "$TMP/nginx-proxy2.conf" && grep -q ":$P_NGINX2;" "$TMP/nginx-proxy2.conf" \
    && grep -q "nbthread 2" "$TMP/haproxy2.cfg" && grep -q ":$P_HAPROXY2" "$TMP/haproxy2.cfg" \
    && grep -q "^workers = 2" "$TMP/headroom2.toml" && grep -q ":$P_HEADROOM2\"" "$TMP/headroom2.toml" \
    || die "could not derive the two-worker configs"

# The watch row: the access log on (to a file), then the same with [watch].
sed -e 's/^access_log = "off"$/access_log = "json"\naccess_log_path = "access-log.json"/' \
    -e "s/127.0.0.1:$P_ADMIN\"/127.0.0.1:$P_LOG_ADMIN\"/" -e "s/127.0.0.1:$P_HEADROOM\"/127.0.0.1:$P_LOG\"/" \
    -e 's/^\[\[route\]\]$/[[route]]\nname = "app"/' "$TMP/headroom.toml" >"$TMP/headroom-log.toml"
sed -e "s/127.0.0.1:$P_LOG_ADMIN\"/127.0.0.1:$P_WATCH_ADMIN\"/" -e "s/127.0.0.1:$P_LOG\"/127.0.0.1:$P_WATCH\"/" \
    -e 's/^access_log_path = "access-log.json"$/access_log_path = "access-log-watch.json"/' \
    "$TMP/headroom-log.toml" >"$TMP/headroom-watch.toml"
cat >>"$TMP/headroom-watch.toml" <<WATCH_EOF
[watch]
history = "history.redb"
[[watch.slo]]
route = "app"
objective = "99.9%"
[[watch.slo]]
route = "app"
objective = "99%"
latency = "25ms"
[[watch.rule]]
name = "errors"
route = "app"
error_rate = "1%"
WATCH_EOF
# The tracing row: the same with [watch.tracing] at 1%, exporting to the origin (nginx answers
# the OTLP POSTs with 200, as a collector would).
sed -e "s/127.0.0.1:$P_WATCH_ADMIN\"/127.0.0.1:$P_TRACE_ADMIN\"/" -e "s/127.0.0.1:$P_WATCH\"/127.0.0.1:$P_TRACE\"/" \
    -e 's/^access_log_path = "access-log-watch.json"$/access_log_path = "access-log-trace.json"/' \
    -e 's/^history = "history.redb"$/history = "history-trace.redb"/' \
    "$TMP/headroom-watch.toml" >"$TMP/headroom-trace.toml"
printf '[watch.tracing]\nendpoint = "http://127.0.0.1:%s/v1/traces"\nsample = "1%%"\n' "$P_UP" >>"$TMP/headroom-trace.toml"
grep -q ":$P_TRACE\"" "$TMP/headroom-trace.toml" && grep -q '^sample = "1%"' "$TMP/headroom-trace.toml" \
    || die "could not derive the tracing-row config"
grep -q ":$P_LOG\"" "$TMP/headroom-log.toml" && grep -q '^access_log_path' "$TMP/headroom-log.toml" \
    && grep -q '^name = "app"' "$TMP/headroom-log.toml" && grep -q ":$P_WATCH\"" "$TMP/headroom-watch.toml" \
    || die "could not derive the watch-row configs"
if ((WATCH)); then
    "$HEADROOM" check --config "$TMP/headroom-watch.toml" >/dev/null || die "headroom refuses the watch-row config"
    "$HEADROOM" check --config "$TMP/headroom-trace.toml" >/dev/null || die "headroom refuses the tracing-row config"
fi

# ---------------------------------------------------------------- start everything
start_bg upstream nginx -p "$TMP/nginx-up" -c "$TMP/nginx-up.conf" -e "$TMP/nginx-up/error.log"
PID_UP=$LAST_PID
start_bg nginx nginx -p "$TMP/nginx-proxy" -c "$TMP/nginx-proxy.conf" -e "$TMP/nginx-proxy/error.log"
PID_NGINX=$LAST_PID
start_bg haproxy haproxy -db -f "$TMP/haproxy.cfg"
PID_HAPROXY=$LAST_PID
start_bg headroom "$HEADROOM" serve --config "$TMP/headroom.toml" --workers 1
PID_HEADROOM=$LAST_PID
if ((TWO_WORKERS)); then
    start_free nginx2 nginx -p "$TMP/nginx-proxy2" -c "$TMP/nginx-proxy2.conf" -e "$TMP/nginx-proxy2/error.log"
    PID_NGINX2=$LAST_PID
    start_free haproxy2 haproxy -db -f "$TMP/haproxy2.cfg"
    PID_HAPROXY2=$LAST_PID
    start_free headroom2 "$HEADROOM" serve --config "$TMP/headroom2.toml" --workers 2
    PID_HEADROOM2=$LAST_PID
fi

if ((WATCH)); then
    start_bg headroom-log "$HEADROOM" serve --config "$TMP/headroom-log.toml" --workers 1
    PID_LOG=$LAST_PID
    start_bg headroom-watch "$HEADROOM" serve --config "$TMP/headroom-watch.toml" --workers 1
    PID_WATCH=$LAST_PID
    start_bg headroom-trace "$HEADROOM" serve --config "$TMP/headroom-trace.toml" --workers 1
    PID_TRACE=$LAST_PID
    wait_port headroom-log "$P_LOG" "$PID_LOG"
    wait_port headroom-watch "$P_WATCH" "$PID_WATCH"
    wait_port headroom-trace "$P_TRACE" "$PID_TRACE"
fi
wait_port upstream "$P_UP" "$PID_UP"
wait_port nginx "$P_NGINX" "$PID_NGINX"
wait_port haproxy "$P_HAPROXY" "$PID_HAPROXY"
wait_port headroom "$P_HEADROOM" "$PID_HEADROOM"
check_ok upstream "$P_UP"
check_ok nginx "$P_NGINX"
check_ok haproxy "$P_HAPROXY"
check_ok headroom "$P_HEADROOM"
if ((TWO_WORKERS)); then
    wait_port nginx2 "$P_NGINX2" "$PID_NGINX2"
    wait_port haproxy2 "$P_HAPROXY2" "$PID_HAPROXY2"
    wait_port headroom2 "$P_HEADROOM2" "$PID_HEADROOM2"
    check_ok nginx2 "$P_NGINX2"
    check_ok haproxy2 "$P_HAPROXY2"
    check_ok headroom2 "$P_HEADROOM2"
fi

MODEL=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
say ""
say "machine: $NCPU CPUs ($(nproc --all) total), ${MODEL:-unknown CPU}; $(uname -sr)"
say "versions: $(nginx -v 2>&1 | sed 's/.*: //'), HAProxy $(haproxy -v | awk 'NR==1 {print $3}'), $(wrk -v 2>&1 | awk 'NR==1 {print $1" "$2}'), headroom ${HEADROOM_BIN:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')}"
say "load: $ROUNDS rounds of wrk -t1 -c$CONNS -d$DURATION --latency per target (proxy order rotates each round; one ${WARMUP} warm-up per target before round 1), ports $P_UP/$P_NGINX/$P_HAPROXY/$P_HEADROOM"
case $PLACEMENT in
    shared) say "placement: wrk pinned to CPU $WRK_CPU; upstream nginx and the proxy under test both pinned to CPU $SRV_CPU" ;;
    split) say "placement: wrk pinned to CPU $WRK_CPU; proxy under test alone on CPU $SRV_CPU; upstream on CPU $WRK_CPU (beside wrk) during proxy runs, CPU $SRV_CPU for its direct run" ;;
    none) say "placement: no CPU pinning" ;;
esac
say ""

# ---------------------------------------------------------------- throughput
PROXIES=(nginx haproxy headroom)
declare -A PORT_OF=([upstream]=$P_UP [nginx]=$P_NGINX [haproxy]=$P_HAPROXY [headroom]=$P_HEADROOM)
declare -A ROOT_OF=([upstream]="" [nginx]=$PID_NGINX [haproxy]=$PID_HAPROXY [headroom]=$PID_HEADROOM)

say "warm-up: $WARMUP per target ..."
warm upstream "$P_UP"
[[ $PLACEMENT == split ]] && pin_tree "$WRK_CPU" "$PID_UP"
for t in "${PROXIES[@]}"; do warm "$t" "${PORT_OF[$t]}"; done

for ((r = 1; r <= ROUNDS; r++)); do
    order=()
    for i in 0 1 2; do order+=("${PROXIES[$(((r - 1 + i) % 3))]}"); done
    say ""
    say "round $r/$ROUNDS: upstream, then ${order[*]}"
    [[ $PLACEMENT == split ]] && pin_tree "$SRV_CPU" "$PID_UP"
    bench upstream "$P_UP" "$r"
    [[ $PLACEMENT == split ]] && pin_tree "$WRK_CPU" "$PID_UP"
    for t in "${order[@]}"; do bench "$t" "${PORT_OF[$t]}" "$r" "${ROOT_OF[$t]}"; done
done
summarize upstream nginx haproxy headroom

# ---------------------------------------------------------------- two workers, unpinned
PROXIES2=(nginx2 haproxy2 headroom2)
if ((TWO_WORKERS)); then
    PORT_OF+=([nginx2]=$P_NGINX2 [haproxy2]=$P_HAPROXY2 [headroom2]=$P_HEADROOM2)
    ROOT_OF+=([nginx2]=$PID_NGINX2 [haproxy2]=$PID_HAPROXY2 [headroom2]=$PID_HEADROOM2)
    saved_pin_wrk=("${PIN_WRK[@]}")
    PIN_WRK=()
    # The upstream may run on any CPU too while the two-worker proxies are measured.
    if [[ $PLACEMENT != none ]]; then
        for p in $(tree_pids "$PID_UP"); do taskset -a -p -c "0-$((NCPU - 1))" "$p" >/dev/null; done
    fi
    say ""
    say "two workers per proxy, nothing pinned (wrk, the upstream and the two workers share the $NCPU CPUs)"
    say "warm-up: $WARMUP per target ..."
    for t in "${PROXIES2[@]}"; do warm "$t" "${PORT_OF[$t]}"; done
    for ((r = 1; r <= ROUNDS; r++)); do
        order=()
        for i in 0 1 2; do order+=("${PROXIES2[$(((r - 1 + i) % 3))]}"); done
        say ""
        say "round $r/$ROUNDS (two workers): ${order[*]}"
        for t in "${order[@]}"; do bench "$t" "${PORT_OF[$t]}" "$r" "${ROOT_OF[$t]}"; done
    done
    summarize "${PROXIES2[@]}"
    PIN_WRK=("${saved_pin_wrk[@]}")
    if [[ $PLACEMENT == shared || $PLACEMENT == split ]]; then pin_tree "$SRV_CPU" "$PID_UP"; fi
fi

# ---------------------------------------------------------------- the watch plane's cost
if ((WATCH)); then
    check_ok headroom-log "$P_LOG"
    check_ok headroom-watch "$P_WATCH"
    check_ok headroom-trace "$P_TRACE"
    PORT_OF+=([headroom-log]=$P_LOG [headroom-watch]=$P_WATCH [headroom-trace]=$P_TRACE)
    ROOT_OF+=([headroom-log]=$PID_LOG [headroom-watch]=$PID_WATCH [headroom-trace]=$PID_TRACE)
    WATCHED=(headroom-log headroom-watch headroom-trace)
    say ""
    say "the watch plane's cost: access log on, without [watch], with it, and with tracing at 1% (pinned as the first row)"
    for t in "${WATCHED[@]}"; do warm "$t" "${PORT_OF[$t]}"; done
    for ((r = 1; r <= ROUNDS; r++)); do
        order=("${WATCHED[$(((r - 1) % 3))]}" "${WATCHED[$((r % 3))]}" "${WATCHED[$(((r + 1) % 3))]}")
        say ""
        say "round $r/$ROUNDS (watch): ${order[*]}"
        for t in "${order[@]}"; do bench "$t" "${PORT_OF[$t]}" "$r" "${ROOT_OF[$t]}"; done
    done
    summarize "${WATCHED[@]}"
    # The history holds what the watch plane sampled (every 10 s): it did run in the rounds.
    SAMPLED=$(curl -s --max-time 5 "http://127.0.0.1:$P_WATCH_ADMIN/status" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["watch"]["slos"][0]["total"])' 2>/dev/null || echo 0)
    ((SAMPLED > 0)) || die "headroom-watch: /status shows no sampled requests"
    # The tracing target did export spans to the origin.
    EXPORTED=$(curl -s --max-time 5 "http://127.0.0.1:$P_TRACE_ADMIN/metrics" \
        | awk '$1 == "headroom_trace_spans_exported_total" { print $2 }')
    [[ ${EXPORTED:-0} != 0 ]] || die "headroom-trace: no span was exported"
fi

# ---------------------------------------------------------------- memory
if ((IDLE_CONNS > 0)); then
    say ""
    say "memory: RSS idle, then holding $IDLE_CONNS idle keep-alive connections (each served one request)"
    mem_run headroom "$P_HEADROOM" "$PID_HEADROOM"
    mem_run nginx "$P_NGINX" "$PID_NGINX"
    mem_run haproxy "$P_HAPROXY" "$PID_HAPROXY"
fi

# ---------------------------------------------------------------- summary
# ratio_lines SUBJECT BASE... — SUBJECT's ratios to each BASE: of the medians, then paired per
# round (both proxies met the same machine state within seconds of each other, so the paired
# ratios are steadier than ratios of medians taken over different rounds).
ratio_lines() {
    local h=$1 b what label r
    shift
    for b in "$@"; do
        printf 'ratios: %s/%-8s req/s=%s (higher better)  p99=%s (lower better)  cpu=%s (lower better)\n' "$h" "$b" \
            "$(ratio "${RPS[$h]}" "${RPS[$b]}")" "$(ratio "${P99[$h]}" "${P99[$b]}")" \
            "$(ratio "${CPU[$h]}" "${CPU[$b]}")"
    done
    for what in R_RPS R_CPU; do
        label="cpu/req"; [[ $what == R_RPS ]] && label="req/s"
        declare -n vals=$what
        for b in "$@"; do
            local paired=()
            for ((r = 1; r <= ROUNDS; r++)); do paired+=("$(ratio "${vals[$h,$r]}" "${vals[$b,$r]}")"); done
            printf 'paired %-7s per round: %s/%-8s %s  -> median %s\n' "$label" "$h" "$b" "${paired[*]}" \
                "$(awk -v m="$(median "${paired[@]/n\/a/-}")" 'BEGIN { if (m == "-") print "n/a"; else printf "%.2f", m }')"
        done
        unset -n vals
    done
}

say ""
say "=== summary ($NCPU CPUs: ${MODEL:-unknown CPU}; placement=$PLACEMENT; wrk -t1 -c$CONNS -d$DURATION; median of $ROUNDS rounds) ==="
printf '%-12s %10s %9s %9s %11s   %s\n' target "req/s" "p50 ms" "p99 ms" "cpu µs/req" "req/s min-max"
for t in upstream nginx haproxy headroom; do
    printf '%-12s %10.0f %9.3f %9.3f %11s   %.0f-%.0f\n' "$t" "${RPS[$t]}" "${P50[$t]}" "${P99[$t]}" "${CPU[$t]}" \
        "${RPS_MIN[$t]}" "${RPS_MAX[$t]}"
done
ratio_lines headroom nginx haproxy
for t in nginx haproxy headroom; do
    awk -v n="$t" -v u="${USR[$t]}" -v k="${SYS[$t]}" 'BEGIN {
        printf "cpu split: %-8s user %5.2f µs/req, sys %5.2f µs/req (kernel %.0f%%)\n", n, u, k, 100 * k / (u + k) }'
done
# The kernel's part is the same four socket calls for every proxy here (read the client,
# write the upstream, read it, write the client); this line shows how low headroom/nginx
# could go if headroom's user time were zero.
awk -v k="${SYS[headroom]}" -v c="${CPU[nginx]}" 'BEGIN {
    if (c + 0 > 0) printf "floor: headroom sys alone / nginx cpu = %.2f\n", k / c }'
awk -v h="${P50[headroom]}" -v u="${P50[upstream]}" -v n="${P50[nginx]}" -v x="${P50[haproxy]}" 'BEGIN {
    printf "added p50 over direct: headroom +%.3f ms, nginx +%.3f ms, haproxy +%.3f ms\n", h - u, n - u, x - u }'
if ((IDLE_CONNS > 0)); then
    for t in headroom nginx haproxy; do
        awk -v n="$t" -v a="${RSS_IDLE[$t]}" -v b="${RSS_WITH[$t]}" -v c="$IDLE_CONNS" 'BEGIN {
            printf "memory: %-8s idle %.1f MiB, with %d idle conns %.1f MiB -> %.2f KiB/conn\n", n, a / 1024, c, b / 1024, (b - a) / c }'
    done
fi
if ((TWO_WORKERS)); then
    say ""
    say "=== two workers per proxy, unpinned (wrk -t1 -c$CONNS -d$DURATION; median of $ROUNDS rounds) ==="
    printf '%-12s %10s %9s %9s %11s   %s\n' target "req/s" "p50 ms" "p99 ms" "cpu µs/req" "req/s min-max"
    for t in "${PROXIES2[@]}"; do
        printf '%-12s %10.0f %9.3f %9.3f %11s   %.0f-%.0f\n' "$t" "${RPS[$t]}" "${P50[$t]}" "${P99[$t]}" "${CPU[$t]}" \
            "${RPS_MIN[$t]}" "${RPS_MAX[$t]}"
    done
    ratio_lines headroom2 nginx2 haproxy2
fi
if ((WATCH)); then
    say ""
    say "=== the watch plane's cost: access log on; [watch] off, on, on with tracing at 1% (targets: req/s ratio >= 0.95 and >= 0.92) ==="
    printf '%-15s %10s %9s %9s %11s   %s\n' target "req/s" "p50 ms" "p99 ms" "cpu µs/req" "req/s min-max"
    for t in "${WATCHED[@]}"; do
        printf '%-15s %10.0f %9.3f %9.3f %11s   %.0f-%.0f\n' "$t" "${RPS[$t]}" "${P50[$t]}" "${P99[$t]}" "${CPU[$t]}" \
            "${RPS_MIN[$t]}" "${RPS_MAX[$t]}"
    done
    ratio_lines headroom-watch headroom-log
    ratio_lines headroom-trace headroom-log
    say "(the watch plane had sampled $SAMPLED requests into the history; tracing exported $EXPORTED spans)"
fi
