#!/usr/bin/env bash
# bench/cache-instructions.sh — user-space instructions per request (callgrind, repeatable)
# for headroom's three paths behind the same nginx origin (`Cache-Control: public,
# max-age=3600`, body "ok"): uncached proxying (a route without a cache), a cache miss that
# stores (a distinct key per request), and a memory-tier hit. N GETs on 4 keep-alive
# connections each, after a warm-up; every miss is checked to be a MISS, every hit a HIT.
#
#   bash bench/cache-instructions.sh                 # N=2000, builds the release binary
#   HEADROOM_BIN=/tmp/old/headroom bash bench/cache-instructions.sh   # before/after runs
#   KEEP=1 bash bench/cache-instructions.sh          # keeps the callgrind files (path printed)
set -euo pipefail
N=${N:-2000}
cd "$(dirname "$0")/.."
if [ -n "${HEADROOM_BIN:-}" ]; then HEADROOM=$(realpath "$HEADROOM_BIN"); else cargo build --release -p headroom -q; HEADROOM="${CARGO_TARGET_DIR:-$PWD/target}/release/headroom"; fi
command -v valgrind >/dev/null && command -v nginx >/dev/null || { echo "bench/cache-instructions.sh: needs valgrind and nginx (apt-get install -y valgrind nginx)" >&2; exit 1; }
TMP=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$TMP"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(free_port); HR=$(free_port); AD=$(free_port)
cat > "$TMP/upstream.conf" <<CONF
worker_processes 1; daemon off; pid $TMP/up.pid; error_log $TMP/up.err;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000000;
  server { listen 127.0.0.1:$UP; location / { add_header Cache-Control "public, max-age=3600"; return 200 "ok"; } } }
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
name = "plain"
match = { path_prefix = "/plain" }
service = "app"
[[route]]
name = "cached"
service = "app"
[route.cache]
bypass_headers = ["x-bypass"]
[service.app]
replicas = ["127.0.0.1:$UP"]
CONF
nginx -c "$TMP/upstream.conf" -e "$TMP/up.err" & PIDS+=($!)
valgrind --tool=callgrind --callgrind-out-file="$TMP/hr.%p" "$HEADROOM" serve --config "$TMP/headroom.toml" --workers 1 2>"$TMP/vg" &
VG=$!; PIDS+=($VG)
for _ in $(seq 1 150); do (exec 3<>/dev/tcp/127.0.0.1/$HR) 2>/dev/null && break; sleep 0.2; done
for phase in plain bypass miss hit; do
python3 - "$HR" "$N" "$phase" <<'PY'
import http.client, subprocess, sys
port, n, phase = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
conns = [http.client.HTTPConnection("127.0.0.1", port) for _ in range(4)]
def path(i, tag):
    if phase == "plain": return f"/plain/x?r={tag}{i}"
    if phase == "bypass": return f"/c/b?r={tag}{i}"
    if phase == "miss": return f"/c/x?r={tag}{i}"
    return "/c/hot"
def run(k, tag):
    for i in range(k):
        # plain and bypass send the same request (the bypass header included), so they compare.
        hdrs = {"x-bypass": "1"} if phase in ("plain", "bypass") else {}
        c = conns[i % 4]; c.request("GET", path(i, tag), headers=hdrs); r = c.getresponse(); r.read()
        assert r.status == 200, r.status
        if phase == "hit" and tag == "m": assert r.getheader("x-cache") == "HIT"
        if phase == "miss": assert r.getheader("x-cache") == "MISS", r.getheader("x-cache")
        if phase == "bypass": assert r.getheader("x-cache") == "BYPASS", r.getheader("x-cache")
run(200, "w")
subprocess.run(["callgrind_control", "-z"], capture_output=True)
run(n, "m")
subprocess.run(["callgrind_control", "-d", phase], capture_output=True)
PY
done
kill "$VG"; wait "$VG" 2>/dev/null || true
for phase in plain bypass miss hit; do
  f=$(grep -l "^desc: Trigger: .*$phase" "$TMP"/hr.* | head -1)
  t=$(awk '/^summary:/ {s += $2} END {print s+0}' $f)
  echo "$phase $((t / N))"
done
if [ -n "${KEEP:-}" ]; then echo "kept $TMP"; fi
