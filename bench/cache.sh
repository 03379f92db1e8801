#!/usr/bin/env bash
# bench/cache.sh — headroom's response cache next to Varnish and nginx proxy_cache: same
# upstream, same load, ROUNDS interleaved rounds.
#
# Runs on loopback only, everything in a temp dir, everything killed on exit. The upstream is
# nginx (1 worker) sending `Cache-Control: public, max-age=3600` with every answer, so every
# cache stores it: /small (100 B, `return 200`), /64k (64 KiB, a static file: nginx's config
# parser caps a `return` string at 4 KiB) and /obj (1 KiB, for the memory run).
# Measured, each with wrk -t1 -c$CONNS --latency:
#   upstream-s, upstream-64k   the upstream alone
#   headroom-s, headroom-64k   headroom cache hit (serve --workers 1, memory tier)
#   varnish-s,  varnish-64k    Varnish hit (-s malloc, -p thread_pools=1, default VCL via -b)
#   nginx-s,    nginx-64k      nginx proxy_cache hit (1 worker; disk cache = the page cache)
#   hr-uncached                headroom proxying without a cache (a route without [route.cache])
#   hr-miss                    headroom with a cache where every request misses: a wrk Lua
#                              script adds a unique ?r=<n> to each request, so each is a new
#                              key, fetched and stored (miss + store). hr-uncached runs the
#                              same script, so the two differ only by the cache.
#   varnish-miss, varnish-pass the same pair on Varnish (a miss stored in -s malloc, and
#   nginx-miss, nginx-pass     `return (pass)` for /nocache/) and on nginx (proxy_cache, and a
#                              /nocache/ location without it): the cost of a miss that stores
#                              next to forwarding, for each cache, so headroom's ratio can be
#                              held against theirs.
#   hr-redis-s                 headroom hit from the Redis tier ([cache.redis], memory = "0B"
#                              (or the smallest accepted) so hits come from redis-server; the
#                              share Redis answered is reported); skipped with a reason if the
#                              binary refuses the config or never answers a hit from Redis.
# Before each cache target is measured, in every round, one request warms it and a second must
# show a hit (x-cache: HIT, two ids in X-Varnish, X-Cache-Status: HIT), else the run fails.
# Each round measures the upstream first, then groups of targets compared with each other
# (small hits, 64 KiB hits, miss vs uncached, Redis); the order of the groups and the order
# inside each group rotate from round to round, so slow drifts in machine load do not favour
# one server. Reported per target: the median over rounds of req/s, p50, p99 and CPU/req
# (utime+stime from /proc/PID/stat, summed over the server's process tree: for Varnish the
# manager and its cache child; and the stime part alone), plus the req/s range; ratios of the medians, and the paired
# per-round ratios with their median.
# Then, once, memory per cached object: OBJECTS distinct 1 KiB objects (/obj?id=1..OBJECTS,
# walked once each by wrk with a Lua script) loaded into a fresh headroom (memory = 1GiB) and
# a fresh Varnish (-s malloc,1g); RSS growth / OBJECTS for each, and their ratio.
#
# Env knobs:
#   ROUNDS=5       measurement rounds (each target measured once per round)
#   DURATION=5s    measured run per target per round (wrk -d)
#   WARMUP=1s      warm-up per target, once before the first round, not measured
#   CONNS=64       wrk connections (always one wrk thread)
#   OBJECTS=100000 distinct objects for the memory run (0 skips it)
#   QUICK=1        smoke test: ROUNDS=1 DURATION=2s OBJECTS=10000 unless set explicitly
#   PLACEMENT=shared   CPU placement on 2+ cores:
#       shared: wrk on CPU 1; the upstream, redis-server and the server under test on CPU 0
#       split:  wrk on CPU 1; server under test alone on CPU 0; upstream and redis-server
#               on CPU 1 (beside wrk), the upstream on CPU 0 for its own direct run
#       none:   no pinning
#   HEADROOM_BIN=path  measure this headroom binary instead of building one
#   KEEP_TMP=1     keep the temp dir (configs, logs, raw wrk output)
set -euo pipefail

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    ROUNDS=${ROUNDS:-1} DURATION=${DURATION:-2s} OBJECTS=${OBJECTS:-10000}
fi
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
CONNS=${CONNS:-64}
OBJECTS=${OBJECTS:-100000}
PLACEMENT=${PLACEMENT:-shared}
KEEP_TMP=${KEEP_TMP:-0}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
export PATH="$PATH:/usr/sbin:/sbin"

# ---------------------------------------------------------------- tools
declare -A PKG_OF=([nginx]=nginx [varnishd]=varnish [varnishstat]=varnish [redis-server]=redis-server
    [redis-cli]=redis-tools [wrk]=wrk)
missing=()
for t in nginx varnishd varnishstat redis-server redis-cli wrk; do
    command -v "$t" >/dev/null 2>&1 || missing+=("${PKG_OF[$t]}")
done
if ((${#missing[@]})); then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them"
    say "installing ${missing[*]} ..."
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"; then
        apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" \
            || die "apt-get install ${missing[*]} failed"
    fi
fi
for t in nginx varnishd varnishstat redis-server redis-cli wrk python3 taskset getconf timeout pgrep curl awk; do
    command -v "$t" >/dev/null 2>&1 || die "required tool '$t' not found in PATH"
done

# shellcheck source=bench/targets.sh
source "$ROOT/bench/targets.sh"
setup_placement
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer (got '$ROUNDS')"
[[ $OBJECTS =~ ^[0-9]+$ ]] || die "OBJECTS must be a non-negative integer (got '$OBJECTS')"
[[ $CONNS =~ ^[1-9][0-9]*$ ]] || die "CONNS must be a positive integer (got '$CONNS')"

setup_run cache

# ---------------------------------------------------------------- ports
read -r P_UP P_HR P_HR_ADMIN P_HRR P_HRR_ADMIN P_VARNISH P_NGINX P_REDIS P_HRM P_HRM_ADMIN P_VARNISHM < <(free_ports 11)
[[ -n ${P_VARNISHM:-} ]] || die "could not find 11 free ports in 20000-21999"

# ---------------------------------------------------------------- helpers
fetch() { # fetch NAME URL — one GET; headers in $TMP/last.h, body in $TMP/last.b; prints the body size
    curl -s --max-time 5 -D "$TMP/last.h" -o "$TMP/last.b" -w '%{http_code} %{size_download}' "$2" \
        || die "$1: curl $2 failed"
}

header() { # header NAME — that header's value in the last fetch ("" if absent)
    awk -v h="$(echo "$1" | tr 'A-Z' 'a-z')" -F': *' 'tolower($1) == h { sub(/\r$/, "", $2); print $2; exit }' "$TMP/last.h"
}

expect_body() { # expect_body NAME URL "CODE SIZE" — the fetch's status and body size must match
    [[ $3 == "200 $4" ]] || die "$1: $2 answered '$3' (status, bytes), expected '200 $4'"$'\n'"$(cat "$TMP/last.h")"
}

# is_hit KIND — did the last fetch come from the cache?
is_hit() {
    case $1 in
        headroom) [[ $(header x-cache) == HIT ]] ;;
        varnish) [[ $(header x-varnish) =~ ^[0-9]+\ [0-9]+$ ]] ;;
        nginx) [[ $(header x-cache-status) == HIT ]] ;;
    esac
}

prime_hit() { # prime_hit NAME KIND URL SIZE — warm the object, then a second fetch must be a hit
    local name=$1 kind=$2 url=$3 size=$4 got
    got=$(fetch "$name" "$url"); expect_body "$name" "$url" "$got" "$size"
    got=$(fetch "$name" "$url"); expect_body "$name" "$url" "$got" "$size"
    is_hit "$kind" || die "$name: the second GET $url is not a cache hit:"$'\n'"$(cat "$TMP/last.h")"
}



# ---------------------------------------------------------------- bodies, upstream
SMALL_SIZE=100 BIG_SIZE=65536 OBJ_SIZE=1024
body() { head -c "$1" /dev/zero | tr '\0' 'a'; } # letters only: safe inside an nginx string
mkdir -p "$TMP/www" "$TMP/nginx-up" "$TMP/nginx-cache/store" "$TMP/redis"
body "$BIG_SIZE" >"$TMP/www/64k"

# keepalive_requests raised everywhere: nginx's default of 1000 would close client and
# upstream keep-alive connections every 1000 requests.
{
    nginx_common "$TMP/nginx-up"
    cat <<EOF
http {
    access_log off;
    keepalive_requests 1000000000;
    keepalive_timeout 120s;
    sendfile on;
    open_file_cache max=16 inactive=1h;
    open_file_cache_valid 1h;
    default_type text/plain;
    client_body_temp_path $TMP/nginx-up/body; proxy_temp_path $TMP/nginx-up/proxy;
    fastcgi_temp_path $TMP/nginx-up/fcgi; uwsgi_temp_path $TMP/nginx-up/uwsgi; scgi_temp_path $TMP/nginx-up/scgi;
    server {
        listen 127.0.0.1:$P_UP;
        add_header Cache-Control "public, max-age=3600" always;
        location = /small { return 200 "$(body $SMALL_SIZE)"; }
        location = /obj { return 200 "$(body $OBJ_SIZE)"; }
        location = /64k { root $TMP/www; }
    }
}
EOF
} >"$TMP/nginx-up.conf"

# ---------------------------------------------------------------- nginx proxy_cache
{
    nginx_common "$TMP/nginx-cache"
    cat <<EOF
http {
    access_log off;
    keepalive_requests 1000000000;
    keepalive_timeout 120s;
    sendfile on;
    client_body_temp_path $TMP/nginx-cache/body; proxy_temp_path $TMP/nginx-cache/proxy;
    fastcgi_temp_path $TMP/nginx-cache/fcgi; uwsgi_temp_path $TMP/nginx-cache/uwsgi; scgi_temp_path $TMP/nginx-cache/scgi;
    proxy_cache_path $TMP/nginx-cache/store levels=1:2 keys_zone=bench:32m max_size=1g inactive=1h use_temp_path=off;
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
            proxy_cache bench;
            proxy_cache_valid 200 1h;
            add_header X-Cache-Status \$upstream_cache_status;
        }
        location /nocache/ {
            proxy_pass http://app/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
} >"$TMP/nginx-cache.conf"

# ---------------------------------------------------------------- headroom configs
# headroom_config PORT ADMIN_PORT MEMORY [REDIS_URL] — the cached route, plus /nocache/ (the same
# upstream path, no [route.cache]) on the main instance.
headroom_config() {
    cat <<EOF
[global]
workers = 1
access_log = "off"
watch = false
[[listener]]
name = "web"
bind = "127.0.0.1:$1"
[admin]
bind = "127.0.0.1:$2"
[[route]]
name = "uncached"
service = "origin"
match.path_prefix = "/nocache/"
strip_prefix = "/nocache"
[[route]]
name = "cached"
service = "origin"
[route.cache]
[service.origin]
replicas = ["127.0.0.1:$P_UP"]
[cache]
memory = "$3"
EOF
    if [[ -n ${4:-} ]]; then printf '[cache.redis]\nurl = "%s"\n' "$4"; fi
}
headroom_config "$P_HR" "$P_HR_ADMIN" 256MiB >"$TMP/headroom.toml"
headroom_config "$P_HRM" "$P_HRM_ADMIN" 1GiB >"$TMP/headroom-mem.toml"
"$HEADROOM" check --config "$TMP/headroom.toml" >"$TMP/check.log" 2>&1 \
    || die "headroom $HEADROOM refuses the cache config (a binary without the cache?):"$'\n'"$(cat "$TMP/check.log")"

# The Redis tier: the smallest memory tier the binary accepts, so hits come from redis-server.
# With "0B" nothing is kept in memory; with a tiny tier a hit read from Redis is put in memory
# and may answer the next requests until it is evicted: each run reports the share of its
# requests that Redis answered (headroom_cache_redis_hits_total).
REDIS_SKIP="" REDIS_MEM=""
for m in 0B 1B 1KiB; do
    headroom_config "$P_HRR" "$P_HRR_ADMIN" "$m" "redis://127.0.0.1:$P_REDIS" >"$TMP/headroom-redis.toml"
    if "$HEADROOM" check --config "$TMP/headroom-redis.toml" >"$TMP/check-redis.log" 2>&1; then
        REDIS_MEM=$m
        break
    fi
done
if [[ -z $REDIS_MEM ]]; then
    REDIS_SKIP="config refused: $(grep -m1 -iE 'error|expected' "$TMP/check-redis.log" || head -n 1 "$TMP/check-redis.log")"
fi

# ---------------------------------------------------------------- Lua scripts
# Every request a new key: ?r=<tag>-<n>, the tag naming the target and the round, so no run
# meets a key stored by an earlier one.
cat >"$TMP/miss.lua" <<'EOF'
local tag, n = "x", 0
function init(args) tag = args[1] or "x" end
function request()
    n = n + 1
    return wrk.format(nil, wrk.path .. "?r=" .. tag .. "-" .. n)
end
EOF
# The memory run: ids 1..N once each, then the already stored id 0 until the script's marker
# file (written when N+1 responses are in) makes the caller stop wrk. wrk 4.1 calls request()
# once before the run to check what it returns, and never sends that one: the first call
# returns the stored id 0, so id 1 is the first request sent (or the second, after id 0, on a
# wrk that does not make that call).
cat >"$TMP/walk.lua" <<'EOF'
local n, done, N, marker = 0, 0, 0, nil
function init(args) N = tonumber(args[1]); marker = args[2] end
function request()
    local id = n
    n = n + 1
    if id > N then id = 0 end
    return wrk.format(nil, wrk.path .. "?id=" .. id)
end
function response(status, headers, body)
    if status ~= 200 then io.stderr:write("status " .. status .. "\n") end
    done = done + 1
    if done == N + 1 then local f = io.open(marker, "w"); f:write("done\n"); f:close() end
end
EOF

# ---------------------------------------------------------------- start everything
start_bg upstream nginx -p "$TMP/nginx-up" -c "$TMP/nginx-up.conf" -e "$TMP/nginx-up/error.log"
PID_UP=$LAST_PID
start_bg nginx-cache nginx -p "$TMP/nginx-cache" -c "$TMP/nginx-cache.conf" -e "$TMP/nginx-cache/error.log"
PID_NGINX=$LAST_PID
# -j none: no privilege separation (the child runs as the invoking user, and can read the 0700
# temp dir); -T none: no management port; thread_pools=1 for a one-core server (default 2).
VARNISH_COMMON=(-j none -F -T none -p thread_pools=1)
# The measured Varnish: the builtin VCL, plus /nocache/ passed (not looked up, not stored).
cat >"$TMP/varnish.vcl" <<EOF
vcl 4.1;
backend default { .host = "127.0.0.1"; .port = "$P_UP"; }
sub vcl_recv {
    if (req.url ~ "^/nocache/") {
        set req.url = regsub(req.url, "^/nocache", "");
        return (pass);
    }
}
EOF
start_bg varnish varnishd "${VARNISH_COMMON[@]}" -f "$TMP/varnish.vcl" -a "127.0.0.1:$P_VARNISH" -s malloc,256m -n "$TMP/varnish"
PID_VARNISH=$LAST_PID
start_bg headroom "$HEADROOM" serve --config "$TMP/headroom.toml" --workers 1
PID_HR=$LAST_PID
if [[ -z $REDIS_SKIP ]]; then
    start_bg redis redis-server --port "$P_REDIS" --bind 127.0.0.1 --save "" --appendonly no --dir "$TMP/redis"
    PID_REDIS=$LAST_PID
    wait_port redis "$P_REDIS" "$PID_REDIS"
    start_bg headroom-redis "$HEADROOM" serve --config "$TMP/headroom-redis.toml" --workers 1
    PID_HRR=$LAST_PID
fi
wait_port upstream "$P_UP" "$PID_UP"
wait_port nginx-cache "$P_NGINX" "$PID_NGINX"
wait_port varnish "$P_VARNISH" "$PID_VARNISH"
wait_port headroom "$P_HR" "$PID_HR"
[[ -z $REDIS_SKIP ]] && wait_port headroom-redis "$P_HRR" "$PID_HRR"

got=$(fetch upstream "http://127.0.0.1:$P_UP/small"); expect_body upstream /small "$got" $SMALL_SIZE
[[ $(header cache-control) == "public, max-age=3600" ]] || die "upstream: no Cache-Control on /small"
got=$(fetch upstream "http://127.0.0.1:$P_UP/64k"); expect_body upstream /64k "$got" $BIG_SIZE
[[ $(header cache-control) == "public, max-age=3600" ]] || die "upstream: no Cache-Control on /64k"
got=$(fetch upstream "http://127.0.0.1:$P_UP/obj?id=1"); expect_body upstream /obj "$got" $OBJ_SIZE

redis_hits() { # hits the Redis tier answered, from headroom's metrics (0 when absent)
    curl -s --max-time 5 "$H:$P_HRR_ADMIN/metrics" | awk '/^headroom_cache_redis_hits_total/ { n += $2 } END { print n + 0 }'
}

# ---------------------------------------------------------------- targets
H="http://127.0.0.1"
URL_OF=([upstream-s]=$H:$P_UP/small [upstream-64k]=$H:$P_UP/64k
    [headroom-s]=$H:$P_HR/small [headroom-64k]=$H:$P_HR/64k
    [varnish-s]=$H:$P_VARNISH/small [varnish-64k]=$H:$P_VARNISH/64k
    [nginx-s]=$H:$P_NGINX/small [nginx-64k]=$H:$P_NGINX/64k
    [hr-uncached]=$H:$P_HR/nocache/small [hr-miss]=$H:$P_HR/small
    [varnish-pass]=$H:$P_VARNISH/nocache/small [varnish-miss]=$H:$P_VARNISH/small
    [nginx-pass]=$H:$P_NGINX/nocache/small [nginx-miss]=$H:$P_NGINX/small)
ROOTS_OF=([headroom-s]=$PID_HR [headroom-64k]=$PID_HR [varnish-s]=$PID_VARNISH [varnish-64k]=$PID_VARNISH
    [nginx-s]=$PID_NGINX [nginx-64k]=$PID_NGINX [hr-uncached]=$PID_HR [hr-miss]=$PID_HR
    [varnish-pass]=$PID_VARNISH [varnish-miss]=$PID_VARNISH [nginx-pass]=$PID_NGINX [nginx-miss]=$PID_NGINX)
LUA_OF=([hr-uncached]=$TMP/miss.lua [hr-miss]=$TMP/miss.lua [varnish-pass]=$TMP/miss.lua
    [varnish-miss]=$TMP/miss.lua [nginx-pass]=$TMP/miss.lua [nginx-miss]=$TMP/miss.lua)
CHECK_OF=([headroom-s]="prime_hit headroom-s headroom ${URL_OF[headroom-s]} $SMALL_SIZE"
    [headroom-64k]="prime_hit headroom-64k headroom ${URL_OF[headroom-64k]} $BIG_SIZE"
    [varnish-s]="prime_hit varnish-s varnish ${URL_OF[varnish-s]} $SMALL_SIZE"
    [varnish-64k]="prime_hit varnish-64k varnish ${URL_OF[varnish-64k]} $BIG_SIZE"
    [nginx-s]="prime_hit nginx-s nginx ${URL_OF[nginx-s]} $SMALL_SIZE"
    [nginx-64k]="prime_hit nginx-64k nginx ${URL_OF[nginx-64k]} $BIG_SIZE"
    [hr-uncached]="check_pass hr-uncached headroom" [hr-miss]="check_miss hr-miss headroom"
    [varnish-pass]="check_pass varnish-pass varnish" [varnish-miss]="check_miss varnish-miss varnish"
    [nginx-pass]="check_pass nginx-pass nginx" [nginx-miss]="check_miss nginx-miss nginx")

check_pass() { # check_pass NAME KIND — twice the same URL on /nocache/: never a hit
    local got name=$1 kind=$2 u="${URL_OF[$1]}?r=check"
    got=$(fetch "$name" "$u"); expect_body "$name" "$u" "$got" $SMALL_SIZE
    got=$(fetch "$name" "$u"); expect_body "$name" "$u" "$got" $SMALL_SIZE
    ! is_hit "$kind" || die "$name: $u was answered from a cache:"$'\n'"$(cat "$TMP/last.h")"
}
MISS_CHECKS=0
check_miss() { # check_miss NAME KIND — a new key misses, and is a hit right after (so misses are stored)
    local got name=$1 kind=$2 u
    MISS_CHECKS=$((MISS_CHECKS + 1))
    u="${URL_OF[$name]}?r=check-$MISS_CHECKS"
    got=$(fetch "$name" "$u"); expect_body "$name" "$u" "$got" $SMALL_SIZE
    ! is_hit "$kind" || die "$name: a new key $u was a hit:"$'\n'"$(cat "$TMP/last.h")"
    if [[ $kind == headroom && $(header x-cache) != MISS ]]; then
        die "$name: a new key $u is not x-cache: MISS:"$'\n'"$(cat "$TMP/last.h")"
    fi
    got=$(fetch "$name" "$u"); expect_body "$name" "$u" "$got" $SMALL_SIZE
    is_hit "$kind" || die "$name: $u was not stored by its miss:"$'\n'"$(cat "$TMP/last.h")"
    [[ $kind == headroom ]] && HR_STORED=$(hr_stored)
    return 0
}
# After each measured miss run, the misses were stored: headroom counts what it stored
# (headroom_cache_stored_total), at least 90% of the run's responses; Varnish and nginx
# must answer one of the run's recent keys from their cache. (headroom's memory tier, full,
# may then decline to keep a one-off key: TinyLFU admission keeps what is asked again.)
HR_STORED=0
hr_stored() {
    curl -s --max-time 5 "$H:$P_HR_ADMIN/metrics" | awk '/^headroom_cache_stored_total/ { n += $2 } END { print n + 0 }'
}
check_miss_stored() { # check_miss_stored NAME KIND
    local got name=$1 kind=$2 reqs=${R_REQS[$1,$r]:-0} n u
    if [[ $kind == headroom ]]; then
        n=$(hr_stored)
        ((n - HR_STORED >= reqs * 9 / 10)) \
            || die "$name: stored $((n - HR_STORED)) of the run's $reqs responses (headroom_cache_stored_total)"
        return
    fi
    n=$((reqs - 1000))
    ((n < 100)) && n=100
    u="${URL_OF[$1]}?r=$1-r$r-$n"
    got=$(fetch "$name" "$u"); expect_body "$name" "$u" "$got" $SMALL_SIZE
    is_hit "$kind" || die "$name: $u (a recent request of the run) was not stored:"$'\n'"$(cat "$TMP/last.h")"
}
POSTCHECK_OF=([hr-miss]="check_miss_stored hr-miss headroom" [varnish-miss]="check_miss_stored varnish-miss varnish"
    [nginx-miss]="check_miss_stored nginx-miss nginx")

check_redis() { # still a hit (whether Redis answered is counted over the run)
    prime_hit hr-redis-s headroom "${URL_OF[hr-redis-s]}" $SMALL_SIZE
}

GROUPS_=("headroom-s varnish-s nginx-s" "headroom-64k varnish-64k nginx-64k"
    "hr-miss hr-uncached varnish-miss varnish-pass nginx-miss nginx-pass")
if [[ -z $REDIS_SKIP ]]; then
    URL_OF[hr-redis-s]=$H:$P_HRR/small
    ROOTS_OF[hr-redis-s]=$PID_HRR
    XROOT_OF[hr-redis-s]=$PID_REDIS
    # Is it a hit at all, and from Redis? Decide once, before the rounds.
    u=${URL_OF[hr-redis-s]}
    got=$(fetch hr-redis-s "$u"); expect_body hr-redis-s "$u" "$got" $SMALL_SIZE
    sleep 0.2 # the store to Redis may complete after the response
    h0=$(redis_hits)
    got=$(fetch hr-redis-s "$u"); expect_body hr-redis-s "$u" "$got" $SMALL_SIZE
    h1=$(redis_hits)
    REDIS_STATUS="$(header cache-status)"
    if ! is_hit headroom; then
        REDIS_SKIP="the second GET is not x-cache: HIT (x-cache: '$(header x-cache)', cache-status: '$REDIS_STATUS')"
    elif ((h1 <= h0)); then
        REDIS_SKIP="hits come from the memory tier ($REDIS_MEM): headroom_cache_redis_hits_total did not grow"
    else
        CHECK_OF[hr-redis-s]=check_redis
        COUNT_OF[hr-redis-s]=redis_hits
        GROUPS_+=("hr-redis-s")
    fi
fi

MODEL=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
say ""
say "machine: $NCPU CPUs ($(nproc --all) total), ${MODEL:-unknown CPU}; $(uname -sr)"
say "versions: $(nginx -v 2>&1 | sed 's/.*: //'), $(varnishd -V 2>&1 | awk 'NR==1 {gsub(/[()]/, "", $2); print $2}'), redis $(redis-server --version | awk '{print $3}' | sed 's/v=//'), $(wrk -v 2>&1 | awk 'NR==1 {print $1" "$2}'), headroom ${HEADROOM_BIN:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')}"
say "load: $ROUNDS rounds of wrk -t1 -c$CONNS -d$DURATION --latency per target (group and in-group order rotate each round; one $WARMUP warm-up per target before round 1)"
say "bodies: small $SMALL_SIZE B, 64k $BIG_SIZE B; upstream sends Cache-Control: public, max-age=3600"
say_placement
if [[ -n $REDIS_SKIP ]]; then say "redis tier: not measured ($REDIS_SKIP)"; else say "redis tier: memory = \"$REDIS_MEM\", redis-server on 127.0.0.1:$P_REDIS"; fi
[[ $PLACEMENT == split && -z $REDIS_SKIP ]] && pin_tree "$WRK_CPU" "$PID_REDIS"
say ""

# ---------------------------------------------------------------- throughput
say "warm-up: $WARMUP per target ..."
warm upstream-s
warm upstream-64k
[[ $PLACEMENT == split ]] && pin_tree "$WRK_CPU" "$PID_UP"
for g in "${GROUPS_[@]}"; do for t in $g; do warm "$t"; done; done

ALL_TARGETS=(upstream-s upstream-64k)
for g in "${GROUPS_[@]}"; do for t in $g; do ALL_TARGETS+=("$t"); done; done

for ((r = 1; r <= ROUNDS; r++)); do
    read -r -a order <<<"$(round_order "$r" "${GROUPS_[@]}")"
    say ""
    say "round $r/$ROUNDS: upstream, then ${order[*]}"
    [[ $PLACEMENT == split ]] && pin_tree "$SRV_CPU" "$PID_UP"
    bench upstream-s "$r"
    bench upstream-64k "$r"
    [[ $PLACEMENT == split ]] && pin_tree "$WRK_CPU" "$PID_UP"
    for t in "${order[@]}"; do bench "$t" "$r"; done
done
summarize "${ALL_TARGETS[@]}"

# ---------------------------------------------------------------- memory per cached object
declare -A MEM_BEFORE MEM_AFTER MEM_NOTE
mem_run() { # mem_run NAME KIND PORT ROOT_PID
    local name=$1 kind=$2 port=$3 root=$4 wp i got url="$H:$3/obj"
    # Warm: the object id=0 (served again at the walk's tail), connections and worker threads.
    prime_hit "$name" "$kind" "$url?id=0" $OBJ_SIZE
    "${PIN_WRK[@]}" wrk -t1 -c"$CONNS" -d"$WARMUP" "$url?id=0" >"$TMP/$name.memwarm.txt" \
        || die "$name: wrk warm-up failed"
    sleep 1
    MEM_BEFORE[$name]=$(rss_kib "$root")
    rm -f "$TMP/$name.walked"
    "${PIN_WRK[@]}" wrk -t1 -c"$CONNS" -d300s -s "$TMP/walk.lua" "$url" -- "$OBJECTS" "$TMP/$name.walked" \
        >"$TMP/$name.walk.txt" 2>&1 &
    wp=$!
    PIDS+=("$wp")
    for i in $(seq 1200); do # up to 120 s
        [[ -e $TMP/$name.walked ]] && break
        kill -0 "$wp" 2>/dev/null || break
        sleep 0.1
    done
    [[ -e $TMP/$name.walked ]] || die "$name: $OBJECTS requests not answered within 120 s: $(tail -n 5 "$TMP/$name.walk.txt")"
    sleep 0.3 # the last in-flight requests of the walk
    kill -INT "$wp" 2>/dev/null || true
    { wait "$wp"; } 2>/dev/null || true
    grep -q '^status' "$TMP/$name.walk.txt" && die "$name: non-200 answers during the walk: $(grep -m3 '^status' "$TMP/$name.walk.txt")"
    sleep 1
    MEM_AFTER[$name]=$(rss_kib "$root")
    # Nothing evicted: the first and the last objects are still hits.
    for i in 1 "$OBJECTS"; do
        got=$(fetch "$name" "$url?id=$i"); expect_body "$name" "$url?id=$i" "$got" $OBJ_SIZE
        is_hit "$kind" || MEM_NOTE[$name]+=" id=$i is no longer a hit (evicted?);"
    done
    awk -v n="$name" -v a="${MEM_BEFORE[$name]}" -v b="${MEM_AFTER[$name]}" -v c="$OBJECTS" -v s="$(awk '/requests in/ {sub(/,$/, "", $4); print $1" requests in "$4}' "$TMP/$name.walk.txt")" 'BEGIN {
        printf "%-12s RSS %7.1f MiB -> %7.1f MiB after %d objects: %.0f B/object (walk: %s)\n", n, a / 1024, b / 1024, c, (b - a) * 1024 / c, s }'
}

if ((OBJECTS > 0)); then
    say ""
    say "memory: $OBJECTS distinct $OBJ_SIZE B objects (/obj?id=1..$OBJECTS) into a fresh headroom (memory = 1GiB) and a fresh Varnish (-s malloc,1g)"
    start_bg headroom-mem "$HEADROOM" serve --config "$TMP/headroom-mem.toml" --workers 1
    PID_HRM=$LAST_PID
    start_bg varnish-mem varnishd "${VARNISH_COMMON[@]}" -b "127.0.0.1:$P_UP" -a "127.0.0.1:$P_VARNISHM" -s malloc,1g -n "$TMP/varnish-mem"
    PID_VARNISHM=$LAST_PID
    wait_port headroom-mem "$P_HRM" "$PID_HRM"
    wait_port varnish-mem "$P_VARNISHM" "$PID_VARNISHM"
    # Only the server being filled runs beside the upstream: stop the throughput servers' load (idle anyway).
    mem_run headroom-mem headroom "$P_HRM" "$PID_HRM"
    mem_run varnish-mem varnish "$P_VARNISHM" "$PID_VARNISHM"
    VARNISH_OBJS=$(varnishstat -n "$TMP/varnish-mem" -1 -f MAIN.n_object 2>/dev/null | awk '{print $2}' || true)
    VARNISH_NUKED=$(varnishstat -n "$TMP/varnish-mem" -1 -f MAIN.n_lru_nuked 2>/dev/null | awk '{print $2}' || true)
    say "varnish-mem  MAIN.n_object=${VARNISH_OBJS:-?} MAIN.n_lru_nuked=${VARNISH_NUKED:-?}"
    HR_CACHE_METRICS=$(curl -s --max-time 5 "$H:$P_HRM_ADMIN/metrics" | grep -E '^headroom_cache_(entries|objects|bytes|memory|stored)' | head -n 6 || true)
    [[ -n $HR_CACHE_METRICS ]] && say "headroom-mem $(echo "$HR_CACHE_METRICS" | tr '\n' ' ')"
fi

# ---------------------------------------------------------------- summary

say ""
say "=== summary ($NCPU CPUs: ${MODEL:-unknown CPU}; placement=$PLACEMENT; wrk -t1 -c$CONNS -d$DURATION; median of $ROUNDS rounds) ==="
printf '%-13s %10s %9s %9s %11s %11s   %s\n' target "req/s" "p50 ms" "p99 ms" "cpu µs/req" "of it sys" "req/s min-max"
for t in "${ALL_TARGETS[@]}"; do
    printf '%-13s %10.0f %9.3f %9.3f %11s %11s   %.0f-%.0f\n' "$t" "${RPS[$t]}" "${P50[$t]}" "${P99[$t]}" "${CPU[$t]}" \
        "${SYS[$t]}" "${RPS_MIN[$t]}" "${RPS_MAX[$t]}"
done
[[ -z $REDIS_SKIP ]] && say "(hr-redis-s: memory = \"$REDIS_MEM\"; Redis answered ${SHARE[hr-redis-s]}% of its requests; its cpu is headroom's, redis-server adds ${XCPU[hr-redis-s]} µs/req)"
say ""
say "cache hit, small body:"
ratio_lines headroom-s varnish-s nginx-s
say "cache hit, 64 KiB body:"
ratio_lines headroom-64k varnish-64k nginx-64k
say "miss + store vs uncached proxying (target: req/s ratio >= 0.90), and the same for Varnish and nginx:"
ratio_lines hr-miss hr-uncached
ratio_lines varnish-miss varnish-pass
ratio_lines nginx-miss nginx-pass
say "misses, headroom vs the others:"
ratio_lines hr-miss varnish-miss nginx-miss
if [[ -z $REDIS_SKIP ]]; then
    say "redis-tier hit vs memory-tier hit:"
    ratio_lines hr-redis-s headroom-s
else
    say "redis tier: not measured ($REDIS_SKIP)"
fi
if ((OBJECTS > 0)); then
    say ""
    for n in headroom-mem varnish-mem; do
        awk -v n="$n" -v a="${MEM_BEFORE[$n]}" -v b="${MEM_AFTER[$n]}" -v c="$OBJECTS" -v s="$OBJ_SIZE" -v note="${MEM_NOTE[$n]:-}" 'BEGIN {
            printf "memory: %-12s %.0f B per cached %d B object (%.0f B over the body)%s\n", n, (b - a) * 1024 / c, s, (b - a) * 1024 / c - s, note }'
    done
    awk -v h="$((${MEM_AFTER[headroom-mem]} - ${MEM_BEFORE[headroom-mem]}))" \
        -v v="$((${MEM_AFTER[varnish-mem]} - ${MEM_BEFORE[varnish-mem]}))" 'BEGIN {
        if (v > 0) printf "memory ratio: headroom/varnish = %.2f (lower better)\n", h / v }'
fi
