#!/usr/bin/env bash
# User-space instructions per proxied request, for headroom and nginx as a proxy, counted
# by valgrind's callgrind: repeatable on a shared, noisy machine where wall-clock time is
# not. Both proxies run one worker in front of the same nginx `return 200` upstream and
# serve the same requests (N GETs on 4 keep-alive connections, after a warm-up). A second
# headroom, whose one route has an API key ([route.auth]) and a rate limit that is never hit,
# serves the same GETs: the guard's cost per request. Every target gets the same requests,
# the x-api-key field included, so the difference is what the guard does with it.
# Then HTTP/2 with prior knowledge (h2load -c8 -m16, N requests after a warm-up): headroom's
# h2 listener next to HAProxy's (`bind proto h2`, `http-reuse always`), the proxy issue 14
# holds it to.
#
#   bash bench/instructions.sh          # N=2000
#   KEEP=/tmp/cg bash bench/instructions.sh   # keeps the callgrind files for callgrind_annotate
#   HEADROOM_BIN=/tmp/old/headroom bash bench/instructions.sh   # another build, e.g. the one before a change
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-2000}

need=()
command -v valgrind >/dev/null || need+=(valgrind)
command -v nginx >/dev/null || need+=(nginx)
command -v haproxy >/dev/null || need+=(haproxy)
command -v h2load >/dev/null || need+=(nghttp2-client)
if ((${#need[@]})); then
    sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi
if [ -n "${HEADROOM_BIN:-}" ]; then
    HEADROOM=$(realpath "$HEADROOM_BIN")
else
    cargo build --release -p headroom -q
    HEADROOM="${CARGO_TARGET_DIR:-$PWD/target}/release/headroom"
fi
[ -x "$HEADROOM" ] || { echo "bench/instructions.sh: $HEADROOM is not an executable" >&2; exit 1; }

TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(free_port); HR=$(free_port); AD=$(free_port); NX=$(free_port); HG=$(free_port); AG=$(free_port); HT=$(free_port); AT=$(free_port); HX=$(free_port)

cat > "$TMP/upstream.conf" <<CONF
worker_processes 1; daemon off; pid $TMP/up.pid; error_log $TMP/up.err;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000000;
  server { listen 127.0.0.1:$UP; location / { return 200 "ok"; } } }
CONF
cat > "$TMP/proxy.conf" <<CONF
worker_processes 1; master_process off; daemon off; pid $TMP/px.pid; error_log $TMP/px.err;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000000;
  upstream up { server 127.0.0.1:$UP; keepalive 64; }
  server { listen 127.0.0.1:$NX; location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
cat > "$TMP/headroom.toml" <<CONF
[global]
access_log = "off"
workers = 1
watch = false
[admin]
bind = "127.0.0.1:$AD"
[[listener]]
bind = "127.0.0.1:$HR"
[[route]]
service = "app"
[service.app]
replicas = ["127.0.0.1:$UP"]
CONF

KEY=bench-key-0123456789
sed -e "s/127.0.0.1:$HR/127.0.0.1:$HG/" -e "s/127.0.0.1:$AD/127.0.0.1:$AG/" "$TMP/headroom.toml" > "$TMP/guard.toml"
cat >> "$TMP/guard.toml" <<CONF
[[consumer]]
name = "bench"
keys = ["$("$HEADROOM" key hash "$KEY")"]
CONF
python3 - "$TMP/guard.toml" <<'PY'
import sys
p = sys.argv[1]
s = open(p).read().replace('service = "app"\n', 'service = "app"\n[route.auth]\n[[route.limit]]\nrate = "1000000000/s"\nkey = "consumer"\n', 1)
open(p, "w").write(s)
PY

# A third headroom traces 1% of requests ([watch.tracing], OTLP to the nginx upstream, which
# answers the POSTs with 200): what tracing costs the 99% that are not exported, and the 1%.
sed -e "s/127.0.0.1:$HR/127.0.0.1:$HT/" -e "s/127.0.0.1:$AD/127.0.0.1:$AT/" "$TMP/headroom.toml" > "$TMP/trace.toml"
printf '[watch.tracing]\nendpoint = "http://127.0.0.1:%s/v1/traces"\nsample = "1%%"\n' "$UP" >> "$TMP/trace.toml"

cat > "$TMP/haproxy.cfg" <<CONF
global
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend fe
    bind 127.0.0.1:$HX proto h2
    default_backend be
backend be
    http-reuse always
    server up 127.0.0.1:$UP
CONF

nginx -c "$TMP/upstream.conf" -e "$TMP/up.err" & PIDS+=($!)

# under_callgrind NAME PORT LOAD COMMAND...: starts COMMAND under callgrind, waits for PORT,
# runs LOAD (a function: warm up, `callgrind_control -z`, N requests, `callgrind_control -d`),
# and prints NAME and the user-space instructions per request of COMMAND's process tree.
under_callgrind() {
    local name=$1 port=$2 load=$3; shift 3
    valgrind --tool=callgrind --callgrind-out-file="$TMP/$name.%p" "$@" 2>"$TMP/$name.vg" &
    local vg=$!
    PIDS+=($vg)
    for _ in $(seq 1 150); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.2; done
    "$load" "$name" "$port"
    kill "$vg" 2>/dev/null || true
    wait "$vg" 2>/dev/null || true
    local total
    total=$(cat "$TMP"/"$name".*.1 2>/dev/null | awk '/^summary:/ {s += $2} END {print s+0}')
    if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$TMP"/"$name".* "$KEEP"/; fi
    echo "$name $((total / N))"
}

# N HTTP/1.1 GETs on 4 keep-alive connections (the x-api-key field when SEND_KEY is set).
h1_load() {
    python3 - "$2" "$N" "${SEND_KEY:-}" <<'PY'
import http.client, subprocess, sys
port, n, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
headers = {"x-api-key": key} if key else {}
def run(k):
    conns = [http.client.HTTPConnection("127.0.0.1", port) for _ in range(4)]
    for i in range(k):
        c = conns[i % 4]; c.request("GET", "/", headers=headers); r = c.getresponse(); r.read()
        assert r.status == 200, r.status
run(200)
subprocess.run(["callgrind_control", "-z"], capture_output=True)
run(n)
subprocess.run(["callgrind_control", "-d"], capture_output=True)
PY
}

# N h2c GETs from h2load: 8 connections, 16 streams each.
h2_load() {
    h2load -t1 -c8 -m16 -n 800 "http://127.0.0.1:$2/" >/dev/null
    callgrind_control -z >/dev/null 2>&1
    h2load -t1 -c8 -m16 -n "$N" "http://127.0.0.1:$2/" | grep -q "$N succeeded" \
        || echo "bench/instructions.sh: not every h2 request to $1 succeeded" >&2
    callgrind_control -d >/dev/null 2>&1
}

measure() { local name=$1 port=$2; shift 2; under_callgrind "$name" "$port" h1_load "$@"; }
measure_h2() { local name=$1 port=$2; shift 2; under_callgrind "$name" "$port" h2_load "$@"; }

echo "user-space instructions per proxied GET ($N requests, callgrind):"
H=$(SEND_KEY=$KEY measure headroom "$HR" "$HEADROOM" serve --config "$TMP/headroom.toml" --workers 1)
X=$(SEND_KEY=$KEY measure nginx "$NX" nginx -c "$TMP/proxy.conf" -e "$TMP/px.err")
G=$(SEND_KEY=$KEY measure headroom-key-limit "$HG" "$HEADROOM" serve --config "$TMP/guard.toml" --workers 1)
T=$(SEND_KEY=$KEY measure headroom-trace-1pct "$HT" "$HEADROOM" serve --config "$TMP/trace.toml" --workers 1)
echo "  $H"
echo "  $X"
echo "  $G"
echo "  $T"
awk -v h="${H#* }" -v x="${X#* }" 'BEGIN { printf "  headroom/nginx = %.2f\n", h / x }'
awk -v h="${H#* }" -v g="${G#* }" 'BEGIN { printf "  headroom-key-limit/headroom = %.2f (+%d instructions for the key and the limit)\n", g / h, g - h }'
awk -v h="${H#* }" -v t="${T#* }" 'BEGIN { printf "  headroom-trace-1pct/headroom = %.2f (+%d instructions for tracing at 1%%)\n", t / h, t - h }'

echo "user-space instructions per proxied h2c GET ($N requests, h2load -c8 -m16, callgrind):"
H2=$(measure_h2 headroom-h2c "$HR" "$HEADROOM" serve --config "$TMP/headroom.toml" --workers 1)
X2=$(measure_h2 haproxy-h2c "$HX" haproxy -f "$TMP/haproxy.cfg" -db)
echo "  $H2"
echo "  $X2"
awk -v h="${H2#* }" -v x="${X2#* }" 'BEGIN { printf "  headroom-h2c/haproxy-h2c = %.2f\n", h / x }'
