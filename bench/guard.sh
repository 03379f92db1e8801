#!/usr/bin/env bash
# bench/guard.sh — what the guard costs a request: headroom proxying plain, with an API key
# and a rate limit, with the limit in Redis, and nginx with limit_req; same upstream, same
# load, ROUNDS interleaved rounds, paired ratios.
#
# Runs on loopback only, everything in a temp dir, everything killed on exit. The upstream is
# nginx (1 worker) answering /small with 100 bytes. Measured, each with wrk -t1 -c$CONNS:
#   upstream        the upstream alone
#   hr-plain        headroom proxying, no guard on the route
#   hr-key-limit    headroom, [route.auth] (an API key in x-api-key) and a local rate limit
#                   by consumer that is never hit (10^9/s)
#   hr-redis-limit  headroom, the same limit by client address kept in Redis (one script
#                   call per request to a real redis-server)
#   nginx-limit     nginx proxying with limit_req (a zone by $binary_remote_addr, never hit)
#                   and the same API key checked by a `map` (401 without it; the key
#                   removed and the consumer's name sent upstream, as headroom does)
#   nginx-plain     nginx proxying, for reference
#   hr-jwt-limit    headroom, [route.auth] with an RS256 bearer token (PEM key) and the
#                   same local limit
# Then, once each:
#   accuracy        three headroom instances share one 500/s limit (burst 500) in Redis;
#                   three wrk runs hammer them at once for 10 s; admitted vs 500 + 500 x 10
#   overload        a demo upstream of capacity 400/s (--concurrency 8 --delay-ms 20)
#                   offered 1600/s (4x) by `headroom bench --rate`: goodput (200s/s), p99
#                   and 503s with adaptive shedding and without
# Every target but hr-jwt-limit gets the same request, x-api-key included, so a ratio is
# what the guard does with it, not the bytes the client sent (one more field costs a proxy
# ~1,200 instructions to parse, store and forward).
# Each target is checked before it is measured (the key works and a wrong one is refused,
# RateLimit fields present, X-Forwarded-... as expected), and every run must be all 2xx.
#
# Env knobs:
#   ROUNDS=5 DURATION=5s WARMUP=1s CONNS=64   as in bench/cache.sh
#   QUICK=1        smoke test: ROUNDS=1 DURATION=2s unless set explicitly
#   PLACEMENT=shared|split|none               as in bench/cache.sh
#   HEADROOM_BIN=path  measure this headroom binary instead of building one
#   KEEP_TMP=1     keep the temp dir
set -euo pipefail

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    ROUNDS=${ROUNDS:-1} DURATION=${DURATION:-2s}
fi
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
CONNS=${CONNS:-64}
PLACEMENT=${PLACEMENT:-shared}
KEEP_TMP=${KEEP_TMP:-0}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

declare -A PKG_OF=([nginx]=nginx [redis-server]=redis-server [wrk]=wrk [curl]=curl [openssl]=openssl)
missing=()
for t in nginx redis-server wrk curl openssl; do
    command -v "$t" >/dev/null 2>&1 || missing+=("${PKG_OF[$t]}")
done
if ((${#missing[@]})); then
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them"
    say "installing ${missing[*]} ..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" \
        || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"; } \
        || die "apt-get install ${missing[*]} failed"
fi
for t in nginx redis-server redis-cli wrk openssl python3 taskset getconf pgrep curl awk; do
    command -v "$t" >/dev/null 2>&1 || die "required tool '$t' not found in PATH"
done

# shellcheck source=bench/targets.sh
source "$ROOT/bench/targets.sh"
setup_placement
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer (got '$ROUNDS')"
[[ $CONNS =~ ^[1-9][0-9]*$ ]] || die "CONNS must be a positive integer (got '$CONNS')"
setup_run guard

read -r P_UP P_HR P_HR_ADMIN P_NGINX P_REDIS P_A1 P_A2 P_A3 P_SLOW P_OV P_OV_ADMIN < <(free_ports 11)
[[ -n ${P_OV_ADMIN:-} ]] || die "could not find 11 free ports in 20000-21999"

fetch() { # fetch NAME URL [HEADER] — one GET; headers in $TMP/last.h; prints "CODE SIZE"
    local extra=()
    [[ -n ${3:-} ]] && extra=(-H "$3")
    curl -s --max-time 5 -D "$TMP/last.h" -o "$TMP/last.b" -w '%{http_code} %{size_download}' "${extra[@]}" "$2" \
        || die "$1: curl $2 failed"
}
header() { # header NAME — that header's value in the last fetch ("" if absent)
    awk -v h="$(echo "$1" | tr 'A-Z' 'a-z')" -F': *' 'tolower($1) == h { sub(/\r$/, "", $2); print $2; exit }' "$TMP/last.h"
}

# ---------------------------------------------------------------- configs
SMALL_SIZE=100
mkdir -p "$TMP/nginx-up" "$TMP/nginx-px" "$TMP/redis"
nginx_conf() { # nginx_conf DIR SERVER_BLOCK
    nginx_common "$1"
    cat <<EOF
http {
    access_log off;
    keepalive_requests 1000000000;
    keepalive_timeout 120s;
    client_body_temp_path $1/body; proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fcgi; uwsgi_temp_path $1/uwsgi; scgi_temp_path $1/scgi;
$2
}
EOF
}
nginx_conf "$TMP/nginx-up" "    server {
        listen 127.0.0.1:$P_UP;
        location = /small { return 200 \"$(head -c $SMALL_SIZE /dev/zero | tr '\0' 'a')\"; }
    }" >"$TMP/nginx-up.conf"
KEY="hr_bench_$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
nginx_conf "$TMP/nginx-px" "    map \$http_x_api_key \$bench_consumer { \"$KEY\" bench; default \"\"; }
    limit_req_zone \$binary_remote_addr zone=bench:16m rate=100000000r/s;
    upstream app { server 127.0.0.1:$P_UP; keepalive 64; keepalive_requests 1000000000; }
    server {
        listen 127.0.0.1:$P_NGINX;
        proxy_http_version 1.1;
        proxy_set_header Connection \"\";
        location /plain/ { proxy_pass http://app/; }
        location /limit/ {
            if (\$bench_consumer = \"\") { return 401; }
            limit_req zone=bench burst=1000 nodelay;
            proxy_set_header Connection \"\";
            proxy_set_header x-api-key \"\";
            proxy_set_header x-consumer \$bench_consumer;
            proxy_pass http://app/;
        }
    }" >"$TMP/nginx-px.conf"
KEY_HASH=$("$HEADROOM" key hash "$KEY") || die "$HEADROOM has no 'key hash' (a binary without the guard?)"
hr_head() { # hr_head PORT [ADMIN_PORT] — a one-worker headroom's [global], listener and admin
    printf '[global]\nworkers = 1\naccess_log = "off"\nwatch = false\n[[listener]]\nname = "web"\nbind = "127.0.0.1:%s"\n' "$1"
    if [[ -n ${2:-} ]]; then printf '[admin]\nbind = "127.0.0.1:%s"\n' "$2"; else printf '[admin]\nenabled = false\n'; fi
}
{ hr_head "$P_HR" "$P_HR_ADMIN"; cat <<EOF

[[route]]
name = "plain"
service = "origin"
match.path_prefix = "/plain/"
strip_prefix = "/plain"

[[route]]
name = "key-limit"
service = "origin"
match.path_prefix = "/key/"
strip_prefix = "/key"
[route.auth]
[[route.limit]]
name = "per-consumer"
rate = "1000000000/s"
key = "consumer"
shared = false

[[route]]
name = "jwt-limit"
service = "origin"
match.path_prefix = "/jwt/"
strip_prefix = "/jwt"
[route.auth]
methods = ["jwt"]
jwt = "bench"
[[route.limit]]
name = "per-consumer"
rate = "1000000000/s"
key = "consumer"
shared = false

[jwt.bench]
pem_file = "$ROOT/crates/headroom-guard/tests/data/jwt/rsa.pub.pem"

[[route]]
name = "redis-limit"
service = "origin"
match.path_prefix = "/redis/"
strip_prefix = "/redis"
[[route.limit]]
name = "per-ip"
rate = "1000000000/s"

[service.origin]
replicas = ["127.0.0.1:$P_UP"]

[[consumer]]
name = "bench"
keys = ["$KEY_HASH"]

[guard.redis]
url = "redis://127.0.0.1:$P_REDIS"
timeout = "100ms"
EOF
} >"$TMP/headroom.toml"
"$HEADROOM" check --config "$TMP/headroom.toml" >"$TMP/check.log" 2>&1 \
    || die "headroom refuses the guard config:"$'\n'"$(cat "$TMP/check.log")"
cat >"$TMP/key.lua" <<EOF
wrk.headers["x-api-key"] = "$KEY"
EOF
# An RS256 token for the jwt target, signed with the test key (openssl: no Python crypto
# needed): header.claims.signature, base64url.
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
JWT_HEAD=$(printf '{"alg":"RS256","typ":"JWT"}' | b64url)
JWT_BODY=$(printf '{"sub":"bench","exp":%d}' $(($(date +%s) + 86400)) | b64url)
JWT_SIG=$(printf '%s.%s' "$JWT_HEAD" "$JWT_BODY" | openssl dgst -sha256 -sign "$ROOT/crates/headroom-guard/tests/data/jwt/rsa.key.pem" -binary | b64url)
TOKEN="$JWT_HEAD.$JWT_BODY.$JWT_SIG"
cat >"$TMP/jwt.lua" <<EOF
wrk.headers["authorization"] = "Bearer $TOKEN"
EOF

# ---------------------------------------------------------------- start
start_bg upstream nginx -p "$TMP/nginx-up" -c "$TMP/nginx-up.conf" -e "$TMP/nginx-up/error.log"
PID_UP=$LAST_PID
start_bg nginx nginx -p "$TMP/nginx-px" -c "$TMP/nginx-px.conf" -e "$TMP/nginx-px/error.log"
PID_NGINX=$LAST_PID
start_bg redis redis-server --port "$P_REDIS" --bind 127.0.0.1 --save "" --appendonly no --dir "$TMP/redis"
PID_REDIS=$LAST_PID
wait_port redis "$P_REDIS" "$PID_REDIS"
start_bg headroom "$HEADROOM" serve --config "$TMP/headroom.toml" --workers 1
PID_HR=$LAST_PID
wait_port upstream "$P_UP" "$PID_UP"
wait_port nginx "$P_NGINX" "$PID_NGINX"
wait_port headroom "$P_HR" "$PID_HR"

H="http://127.0.0.1"
URL_OF=([upstream]=$H:$P_UP/small [hr-plain]=$H:$P_HR/plain/small [hr-key-limit]=$H:$P_HR/key/small
    [hr-redis-limit]=$H:$P_HR/redis/small [nginx-limit]=$H:$P_NGINX/limit/small [nginx-plain]=$H:$P_NGINX/plain/small
    [hr-jwt-limit]=$H:$P_HR/jwt/small)
ROOTS_OF=([hr-plain]=$PID_HR [hr-key-limit]=$PID_HR [hr-redis-limit]=$PID_HR [nginx-limit]=$PID_NGINX [nginx-plain]=$PID_NGINX
    [hr-jwt-limit]=$PID_HR)
XROOT_OF=([hr-redis-limit]=$PID_REDIS)
LUA_OF=([hr-plain]=$TMP/key.lua [hr-key-limit]=$TMP/key.lua [hr-redis-limit]=$TMP/key.lua [nginx-limit]=$TMP/key.lua
    [nginx-plain]=$TMP/key.lua [hr-jwt-limit]=$TMP/jwt.lua)

expect() { # expect NAME URL "CODE SIZE" WANT
    [[ $3 == "$4" ]] || die "$1: $2 answered '$3' (status, bytes), expected '$4'"$'\n'"$(cat "$TMP/last.h")"
}
check_plain() { # check_plain NAME — 200 with the body
    local got
    got=$(fetch "$1" "${URL_OF[$1]}"); expect "$1" "${URL_OF[$1]}" "$got" "200 $SMALL_SIZE"
}
check_key() { # the key passes with RateLimit fields; no key and a wrong key get 401
    local got u=${URL_OF[hr-key-limit]}
    got=$(fetch hr-key-limit "$u" "x-api-key: $KEY"); expect hr-key-limit "$u" "$got" "200 $SMALL_SIZE"
    [[ $(header ratelimit-policy) == *per-consumer* ]] || die "hr-key-limit: no RateLimit-Policy:"$'\n'"$(cat "$TMP/last.h")"
    got=$(fetch hr-key-limit "$u"); [[ $got == 401* ]] || die "hr-key-limit: no key answered $got, not 401"
    got=$(fetch hr-key-limit "$u" "x-api-key: wrong"); [[ $got == 401* ]] || die "hr-key-limit: a wrong key answered $got, not 401"
}
check_nginx_key() { # nginx's map lets the key through and refuses a request without it
    local got u=${URL_OF[nginx-limit]}
    got=$(fetch nginx-limit "$u" "x-api-key: $KEY"); expect nginx-limit "$u" "$got" "200 $SMALL_SIZE"
    got=$(fetch nginx-limit "$u"); [[ $got == 401* ]] || die "nginx-limit: no key answered $got, not 401"
}
check_redis() { # decided by Redis: its decision counter grows
    local before after
    before=$(redis_decisions)
    check_plain hr-redis-limit
    [[ $(header ratelimit-policy) == *per-ip* ]] || die "hr-redis-limit: no RateLimit-Policy"
    after=$(redis_decisions)
    ((after > before)) || die "hr-redis-limit: headroom_guard_redis_decisions_total{by=\"redis\"} did not grow ($before -> $after)"
}
redis_decisions() {
    curl -s --max-time 5 "$H:$P_HR_ADMIN/metrics" | awk '/^headroom_guard_redis_decisions_total\{by="redis"\}/ { print $2 + 0; f = 1 } END { if (!f) print 0 }'
}
check_jwt() { # the token passes; a tampered one gets 401
    local got u=${URL_OF[hr-jwt-limit]}
    got=$(fetch hr-jwt-limit "$u" "authorization: Bearer $TOKEN"); expect hr-jwt-limit "$u" "$got" "200 $SMALL_SIZE"
    got=$(fetch hr-jwt-limit "$u" "authorization: Bearer ${TOKEN}x"); [[ $got == 401* ]] || die "hr-jwt-limit: a tampered token answered $got"
}
CHECK_OF=([upstream]="check_plain upstream" [hr-plain]="check_plain hr-plain" [hr-key-limit]=check_key [hr-jwt-limit]=check_jwt
    [hr-redis-limit]=check_redis  [nginx-limit]=check_nginx_key [nginx-plain]="check_plain nginx-plain")

GROUPS_=("hr-plain hr-key-limit hr-jwt-limit hr-redis-limit nginx-limit nginx-plain")

MODEL=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
say ""
say "machine: $NCPU CPUs ($(nproc --all) total), ${MODEL:-unknown CPU}; $(uname -sr)"
say "versions: $(nginx -v 2>&1 | sed 's/.*: //'), redis $(redis-server --version | awk '{print $3}' | sed 's/v=//'), $(wrk -v 2>&1 | awk 'NR==1 {print $1" "$2}'), headroom ${HEADROOM_BIN:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')}"
say "load: $ROUNDS rounds of wrk -t1 -c$CONNS -d$DURATION --latency per target (order rotates each round; one $WARMUP warm-up per target before round 1)"
say_placement
[[ $PLACEMENT == split ]] && pin_tree "$WRK_CPU" "$PID_REDIS"
say ""

say "warm-up: $WARMUP per target ..."
warm upstream
[[ $PLACEMENT == split ]] && pin_tree "$WRK_CPU" "$PID_UP"
for t in ${GROUPS_[0]}; do warm "$t"; done
ALL_TARGETS=(upstream)
for t in ${GROUPS_[0]}; do ALL_TARGETS+=("$t"); done
for ((r = 1; r <= ROUNDS; r++)); do
    read -r -a order <<<"$(round_order "$r" "${GROUPS_[@]}")"
    say ""
    say "round $r/$ROUNDS: upstream, then ${order[*]}"
    [[ $PLACEMENT == split ]] && pin_tree "$SRV_CPU" "$PID_UP"
    bench upstream "$r"
    [[ $PLACEMENT == split ]] && pin_tree "$WRK_CPU" "$PID_UP"
    for t in "${order[@]}"; do bench "$t" "$r"; done
done
summarize "${ALL_TARGETS[@]}"

say ""
say "=== summary ($NCPU CPUs: ${MODEL:-unknown CPU}; placement=$PLACEMENT; wrk -t1 -c$CONNS -d$DURATION; median of $ROUNDS rounds) ==="
printf '%-15s %10s %9s %9s %11s %11s   %s\n' target "req/s" "p50 ms" "p99 ms" "cpu µs/req" "of it sys" "req/s min-max"
for t in "${ALL_TARGETS[@]}"; do
    printf '%-15s %10.0f %9.3f %9.3f %11s %11s   %.0f-%.0f\n' "$t" "${RPS[$t]}" "${P50[$t]}" "${P99[$t]}" "${CPU[$t]}" \
        "${SYS[$t]}" "${RPS_MIN[$t]}" "${RPS_MAX[$t]}"
done
say "(hr-redis-limit: its cpu is headroom's; redis-server adds ${XCPU[hr-redis-limit]} µs/req)"
say ""
say "API key + local limit vs plain proxying (target: req/s ratio >= 0.90):"
ratio_lines hr-key-limit hr-plain
say "API key + local limit vs nginx limit_req (target: req/s ratio >= 1.2):"
ratio_lines hr-key-limit nginx-limit
say "JWT (RS256) + local limit vs plain proxying:"
ratio_lines hr-jwt-limit hr-plain
say "limit in Redis vs plain proxying:"
ratio_lines hr-redis-limit hr-plain
say "nginx limit_req vs nginx plain (for comparison):"
ratio_lines nginx-limit nginx-plain

# ---------------------------------------------------------------- accuracy: 3 instances, one Redis limit
say ""
say "accuracy: three instances share \"500/s\" (burst 500) in Redis; three wrk -c16 runs of 10 s at once"
redis-cli -p "$P_REDIS" flushall >/dev/null
for i in 1 2 3; do
    port_var="P_A$i"
    { hr_head "${!port_var}"; cat <<EOF
[[route]]
name = "shared"
service = "origin"
[[route.limit]]
name = "shared"
rate = "500/s"
key = "route"
[service.origin]
replicas = ["127.0.0.1:$P_UP"]
[guard.redis]
url = "redis://127.0.0.1:$P_REDIS"
timeout = "100ms"
EOF
    } >"$TMP/acc$i.toml"
    start_bg "acc$i" "$HEADROOM" serve --config "$TMP/acc$i.toml" --workers 1
    wait_port "acc$i" "${!port_var}" "$LAST_PID"
done
ACC_START=$(date +%s.%N)
for i in 1 2 3; do
    port_var="P_A$i"
    "${PIN_WRK[@]}" wrk -t1 -c16 -d10s "$H:${!port_var}/small" >"$TMP/acc$i.txt" 2>&1 &
    PIDS+=("$!")
done
wait "${PIDS[@]: -3}" 2>/dev/null || true
ACC_END=$(date +%s.%N)
admitted=0 total=0
for i in 1 2 3; do
    all=$(awk '/requests in/ {print $1}' "$TMP/acc$i.txt")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $5}' "$TMP/acc$i.txt")
    total=$((total + ${all:-0}))
    admitted=$((admitted + ${all:-0} - ${non2xx:-0}))
done
awk -v a="$admitted" -v t="$total" -v s="$ACC_START" -v e="$ACC_END" 'BEGIN {
    d = e - s; x = 500 + 500 * d
    printf "accuracy: admitted %d of %d requests in %.2f s; expected %.0f (500 + 500/s x %.2f s): %.3f (target within 5%%)\n", a, t, d, x, d, a / x }'

# ---------------------------------------------------------------- overload: 4x capacity, shedding on and off
say ""
say "overload: demo upstream of capacity 400/s (8 at once, 20 ms each), offered 1600/s for 10 s by headroom bench"
start_bg slow "$HEADROOM" demo-upstream --bind "127.0.0.1:$P_SLOW" --name slow --concurrency 8 --delay-ms 20
wait_port slow "$P_SLOW" "$LAST_PID"
{ hr_head "$P_OV" "$P_OV_ADMIN"; cat <<EOF
[[route]]
name = "shed"
service = "shed"
match.path_prefix = "/shed/"
strip_prefix = "/shed"
[[route]]
name = "noshed"
service = "noshed"
match.path_prefix = "/noshed/"
strip_prefix = "/noshed"
[service.shed]
replicas = ["127.0.0.1:$P_SLOW"]
request_timeout = "30s"
[service.shed.shed]
adaptive = true
max_inflight = 200
[service.noshed]
replicas = ["127.0.0.1:$P_SLOW"]
request_timeout = "30s"
EOF
} >"$TMP/overload.toml"
start_bg overload "$HEADROOM" serve --config "$TMP/overload.toml" --workers 1
wait_port overload "$P_OV" "$LAST_PID"
for mode in shed noshed; do
    "$HEADROOM" bench --rate 1600/s -d 10s -c 400 --timeout 30s --json "$H:$P_OV/$mode/x" >"$TMP/ov-$mode.json" 2>"$TMP/ov-$mode.err" \
        || die "overload $mode: headroom bench failed: $(tail -n 3 "$TMP/ov-$mode.err")"
    python3 - "$mode" "$TMP/ov-$mode.json" <<'EOF'
import json, sys
mode, path = sys.argv[1], sys.argv[2]
r = json.load(open(path))["run"]
st = r.get("status", {})
dur = r.get("duration_s") or r.get("elapsed_s") or 10.0
ok = st.get("200", 0)
shed = st.get("503", 0)
lat = r.get("latency_ms", {})
print(f"overload {mode:7s}: goodput {ok / dur:7.0f}/s  200s {ok:6d}  503s {shed:6d}  p50 {lat.get('p50', 0):8.1f} ms  p99 {lat.get('p99', 0):8.1f} ms  errors {sum(r.get('errors', {}).values())}")
EOF
done
say "(p99 is over every answer; with shedding the 503s are the fast ones, so it is the admitted requests' tail)"
