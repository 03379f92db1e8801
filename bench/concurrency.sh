#!/usr/bin/env bash
# bench/concurrency.sh — headroom next to nginx and HAProxy at the loads a gateway carries:
# many HTTP/1.1 connections, and HTTP/2 clients multiplexing streams (issue 14). Same
# upstream, same load, ROUNDS rounds, interleaved (the order of the proxies rotates each
# round) and paired per round.
#
# Loopback only, everything in a temp dir, everything killed on exit. One worker each:
#   upstream  nginx `return 200 "ok"` (1 worker), HTTP/1.1 on one port and h2c on another;
#             its stub_status counts the connections every proxy opens to it
#   nginx     1 worker, `upstream { keepalive CEILING; }` (the same ceiling as headroom's pool)
#   haproxy   nbthread 1, http-reuse always
#   headroom  serve --workers 1, defaults (its pool ceiling is `max_idle`, CEILING here)
#   headroom-h2up  the same, with `protocol = "h2"` to the upstream's h2c port
# Rows:
#   h1-256, h1-1024   wrk -t1 -cN (HTTP/1.1 keep-alive), every proxy, plus headroom-h2up
#   h2-8x16, h2-64x100  h2load -t1 -cC -mM over TLS (ALPN h2), every proxy
#   h2c-8x16          h2load with prior knowledge on the plain port (nginx: `listen http2`,
#                     HAProxy: `bind proto h2`, headroom: the same listener as HTTP/1.1)
# For each: req/s, CPU µs per request of the proxy (utime+stime over the run / requests;
# "user" is the utime part: the kernel's part is the rest, nearly all syscalls and TCP),
# and upstream connects per 1,000 requests (stub_status accepts over the run). Medians over
# rounds; the ratios of headroom to each proxy are paired per round, then the median taken.
#
# Env knobs:
#   ROUNDS=3  DURATION=5 (seconds per run)  WARMUP=2 (seconds, once per target and row)
#   ROWS="h1-256 h1-1024 h2-8x16 h2-64x100 h2c-8x16"
#   CEILING=1024   nginx's upstream keepalive and headroom's max_idle
#   PLACEMENT=shared   shared: load generator on CPU 1, upstream and proxy on CPU 0; none
#   BODY_BYTES=2   the upstream's answer: "ok", or this many bytes (an API's JSON is
#                  hundreds: the h2 crate writes a DATA frame past 256 bytes by itself)
#   HEADROOM_BIN=path  measure this headroom binary instead of building one (before/after)
#   KEEP_TMP=1     keep the temp dir
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-2}
ROWS=${ROWS:-h1-256 h1-1024 h2-8x16 h2-64x100 h2c-8x16}
CEILING=${CEILING:-1024}
BODY_BYTES=${BODY_BYTES:-2}
PLACEMENT=${PLACEMENT:-shared}
KEEP_TMP=${KEEP_TMP:-0}
CONNS=0 # targets.sh reads it; the rows set their own

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
export PATH="$PATH:/usr/sbin:/sbin"

# ---------------------------------------------------------------- tools
declare -A PKG_OF=([nginx]=nginx [haproxy]=haproxy [wrk]=wrk [h2load]=nghttp2-client [openssl]=openssl)
missing=()
for t in nginx haproxy wrk h2load openssl; do command -v "$t" >/dev/null 2>&1 || missing+=("${PKG_OF[$t]}"); done
if ((${#missing[@]})); then
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them"
    say "installing ${missing[*]} ..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" \
        || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"; } \
        || die "apt-get install ${missing[*]} failed"
fi
for t in nginx haproxy wrk h2load openssl cargo python3 taskset getconf curl awk; do
    command -v "$t" >/dev/null 2>&1 || die "required tool '$t' not found in PATH"
done
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer (got '$ROUNDS')"
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "DURATION is whole seconds (got '$DURATION')"
[[ $CEILING =~ ^[1-9][0-9]*$ ]] || die "CEILING must be a positive integer (got '$CEILING')"
[[ $BODY_BYTES =~ ^[1-9][0-9]*$ ]] && ((BODY_BYTES <= 65536)) \
    || die "BODY_BYTES must be 1..65536 (got '$BODY_BYTES')"
if ((BODY_BYTES == 2)); then BODY=ok; else BODY=$(head -c "$BODY_BYTES" /dev/zero | tr '\0' x); fi

# shellcheck source=bench/targets.sh
source "$ROOT/bench/targets.sh"
setup_placement
((NOFILE >= 4096)) || die "open-file limit $NOFILE is too low for 1,024 connections through a proxy"
setup_run concurrency

read -r P_UP P_UP2 P_STAT P_N P_NT P_H P_HT P_HC P_R P_RT P_RA P_R2 P_R2A < <(free_ports 13)
[[ -n ${P_R2A:-} ]] || die "could not find 13 free ports"

# ---------------------------------------------------------------- certificate
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=localhost \
    -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null || die "openssl could not make a certificate"
cat "$TMP/cert.pem" "$TMP/key.pem" >"$TMP/haproxy.pem"

# ---------------------------------------------------------------- configs
mkdir -p "$TMP/nginx-up" "$TMP/nginx-proxy"
nginx_conf() { # nginx_conf DIR HTTP_BLOCK
    nginx_common "$1"
    cat <<EOF
http {
    access_log off;
    keepalive_requests 1000000000;
    keepalive_timeout 120s;
    http2_max_requests 1000000000;
    http2_max_concurrent_streams 128;
    client_body_temp_path $1/body; proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fcgi; uwsgi_temp_path $1/uwsgi; scgi_temp_path $1/scgi;
$2
}
EOF
}
nginx_conf "$TMP/nginx-up" "
    server { listen 127.0.0.1:$P_UP; location / { return 200 \"$BODY\"; } }
    server { listen 127.0.0.1:$P_UP2 http2; location / { return 200 \"$BODY\"; } }
    server { listen 127.0.0.1:$P_STAT; location / { stub_status; } }" >"$TMP/nginx-up.conf"
nginx_conf "$TMP/nginx-proxy" "
    upstream app { server 127.0.0.1:$P_UP; keepalive $CEILING; keepalive_requests 1000000000; keepalive_timeout 120s; }
    server {
        listen 127.0.0.1:$P_N;
        listen 127.0.0.1:$P_NT ssl http2;
        ssl_certificate $TMP/cert.pem; ssl_certificate_key $TMP/key.pem;
        location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
    }" >"$TMP/nginx-proxy.conf"
cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 20000
    no strict-limits
defaults
    mode http
    timeout connect 5s
    timeout client 120s
    timeout server 30s
    timeout http-request 120s
    timeout http-keep-alive 120s
frontend fe
    bind 127.0.0.1:$P_H
    bind 127.0.0.1:$P_HT ssl crt $TMP/haproxy.pem alpn h2,http/1.1
    bind 127.0.0.1:$P_HC proto h2
    default_backend be
backend be
    http-reuse always
    server up 127.0.0.1:$P_UP
EOF
headroom_conf() { # headroom_conf PORT TLS_PORT ADMIN UPSTREAM PROTOCOL
    cat <<EOF
[global]
access_log = "off"
workers = 1
watch = false
[admin]
bind = "127.0.0.1:$3"
[[listener]]
bind = "127.0.0.1:$1"
max_connections = 20000
[[listener]]
name = "tls"
bind = "127.0.0.1:$2"
max_connections = 20000
tls = { cert = "$TMP/cert.pem", key = "$TMP/key.pem" }
[[route]]
service = "app"
[service.app]
balance = "round-robin"
replicas = ["127.0.0.1:$4"]
protocol = "$5"
max_idle = $CEILING
retry = { attempts = 1 }
EOF
}
headroom_conf "$P_R" "$P_RT" "$P_RA" "$P_UP" http1 >"$TMP/headroom.toml"
P_R2T=$((P_R2A + 1))
headroom_conf "$P_R2" "$P_R2T" "$P_R2A" "$P_UP2" h2 >"$TMP/headroom-h2up.toml"
"$HEADROOM" check --config "$TMP/headroom.toml" >/dev/null || die "headroom refuses its config"

# ---------------------------------------------------------------- start
start_bg upstream nginx -p "$TMP/nginx-up" -c "$TMP/nginx-up.conf" -e "$TMP/nginx-up/error.log"
PID_UP=$LAST_PID
start_bg nginx nginx -p "$TMP/nginx-proxy" -c "$TMP/nginx-proxy.conf" -e "$TMP/nginx-proxy/error.log"
PID_NGINX=$LAST_PID
start_bg haproxy haproxy -db -f "$TMP/haproxy.cfg"
PID_HAPROXY=$LAST_PID
start_bg headroom "$HEADROOM" serve --config "$TMP/headroom.toml" --workers 1
PID_HEADROOM=$LAST_PID
start_bg headroom-h2up "$HEADROOM" serve --config "$TMP/headroom-h2up.toml" --workers 1
PID_H2UP=$LAST_PID
wait_port upstream "$P_STAT" "$PID_UP"
wait_port nginx "$P_N" "$PID_NGINX"
wait_port haproxy "$P_H" "$PID_HAPROXY"
wait_port headroom "$P_R" "$PID_HEADROOM"
wait_port headroom-h2up "$P_R2" "$PID_H2UP"

accepts() { # connections the upstream has accepted so far (less the stub_status reads themselves)
    curl -s --max-time 5 "http://127.0.0.1:$P_STAT/" | awk 'NR == 3 { print $1 }'
}

# ---------------------------------------------------------------- rows
declare -A TARGETS_OF=(
    [h1-256]="nginx haproxy headroom headroom-h2up" [h1-1024]="nginx haproxy headroom headroom-h2up"
    [h2-8x16]="nginx haproxy headroom" [h2-64x100]="nginx haproxy headroom" [h2c-8x16]="haproxy headroom"
)
declare -A PID_OF=([nginx]=$PID_NGINX [haproxy]=$PID_HAPROXY [headroom]=$PID_HEADROOM [headroom-h2up]=$PID_H2UP)
declare -A H1_PORT=([nginx]=$P_N [haproxy]=$P_H [headroom]=$P_R [headroom-h2up]=$P_R2)
declare -A TLS_PORT=([nginx]=$P_NT [haproxy]=$P_HT [headroom]=$P_RT)
declare -A H2C_PORT=([haproxy]=$P_HC [headroom]=$P_R)
for row in $ROWS; do [[ -n ${TARGETS_OF[$row]:-} ]] || die "unknown row '$row' (rows: ${!TARGETS_OF[*]})"; done

load_cmd() { # load_cmd ROW TARGET SECONDS — the load generator's command line
    local row=$1 t=$2 s=$3 c m
    case $row in
        h1-*) echo "wrk -t1 -c${row#h1-} -d${s}s http://127.0.0.1:${H1_PORT[$t]}/" ;;
        h2-* | h2c-*)
            c=${row#*-} m=${c#*x} c=${c%x*}
            if [[ $row == h2c-* ]]; then
                echo "h2load -t1 -c$c -m$m -D $s http://127.0.0.1:${H2C_PORT[$t]}/"
            else
                echo "h2load -t1 -c$c -m$m -D $s https://127.0.0.1:${TLS_PORT[$t]}/"
            fi
            ;;
    esac
}

parse_load() { # parse_load FILE — "req/s requests failed"
    awk '
        / requests in / { reqs = $1 }                         # wrk
        $1 == "Requests/sec:" { rps = $2 }
        /Non-2xx or 3xx responses:/ { bad += $NF }
        /Socket errors:/ { bad += 1 }
        /^finished in/ { rps = $4 + 0 }                       # h2load
        /^requests:/ { reqs = $8; bad += $10 + $12 }          # N total, N started, N done, N succeeded, F failed, E errored
        /^status codes:/ { gsub(",", ""); bad += $5 + $7 + $9 }  # 3xx 4xx 5xx
        END { printf "%s %s %d\n", rps, reqs, bad }' "$1"
}

declare -A R_RPS R_CPU R_USR R_CON R_BAD
run() { # run ROW TARGET ROUND — one measured run
    local row=$1 t=$2 r=$3 k="$1,$2,$3" out c0 c1 a0 a1 tck
    out="$TMP/$row.$t.r$r.txt"
    a0=$(accepts) c0=$(cpu_ticks "${PID_OF[$t]}")
    # shellcheck disable=SC2046
    timeout $((DURATION + 60)) "${PIN_WRK[@]}" $(load_cmd "$row" "$t" "$DURATION") >"$out" 2>&1 \
        || die "$row $t: load failed or hung: $(tail -n 5 "$out")"
    c1=$(cpu_ticks "${PID_OF[$t]}") a1=$(accepts)
    read -r R_RPS[$k] reqs R_BAD[$k] < <(parse_load "$out")
    [[ ${reqs:-0} -gt 0 ]] || die "$row $t: no requests in the output:"$'\n'"$(cat "$out")"
    tck=$(getconf CLK_TCK)
    R_CPU[$k]=$(awk -v a="$c0" -v b="$c1" -v t="$tck" -v n="$reqs" 'BEGIN {
        split(a, x, " "); split(b, y, " "); printf "%.2f", ((y[1] - x[1]) + (y[2] - x[2])) / t * 1e6 / n }')
    R_USR[$k]=$(awk -v a="$c0" -v b="$c1" -v t="$tck" -v n="$reqs" 'BEGIN {
        split(a, x, " "); split(b, y, " "); printf "%.2f", (y[1] - x[1]) / t * 1e6 / n }')
    R_CON[$k]=$(awk -v a="$a0" -v b="$a1" -v n="$reqs" 'BEGIN { printf "%.2f", (b - a - 1) * 1000 / n }')
    printf '[%s round %d/%d] %-14s %9.0f req/s  cpu %6s µs/req (user %6s)  upstream connects %7s per 1k requests' \
        "$row" "$r" "$ROUNDS" "$t" "${R_RPS[$k]}" "${R_CPU[$k]}" "${R_USR[$k]}" "${R_CON[$k]}"
    ((R_BAD[$k] == 0)) || printf '  !! %d failed or non-2xx' "${R_BAD[$k]}"
    echo
}

MODEL=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
say ""
say "machine: $NCPU CPUs, ${MODEL:-unknown CPU}; $(uname -sr)"
say "versions: $(nginx -v 2>&1 | sed 's/.*: //'), HAProxy $(haproxy -v | awk 'NR==1 {print $3}'), $(wrk -v 2>&1 | awk 'NR==1 {print $1" "$2}'), $(h2load --version | head -n 1), headroom ${HEADROOM_BIN:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')}"
say "load: $ROUNDS rounds of ${DURATION}s per target and row, proxy order rotating; pool ceiling $CEILING (nginx keepalive, headroom max_idle)"
[[ $PLACEMENT == none ]] && say "placement: none" || say "placement: load generator on CPU $WRK_CPU; upstream and the proxy under test on CPU $SRV_CPU"

for row in $ROWS; do
    read -r -a targets <<<"${TARGETS_OF[$row]}"
    say ""
    say "== $row: $(load_cmd "$row" "${targets[0]}" "$DURATION" | sed "s/ http.*//") — warm-up ${WARMUP}s per target"
    for t in "${targets[@]}"; do
        # shellcheck disable=SC2046
        timeout $((WARMUP + 60)) "${PIN_WRK[@]}" $(load_cmd "$row" "$t" "$WARMUP") >"$TMP/$row.$t.warm.txt" 2>&1 \
            || die "$row $t: warm-up failed: $(tail -n 5 "$TMP/$row.$t.warm.txt")"
    done
    n=${#targets[@]}
    for ((r = 1; r <= ROUNDS; r++)); do
        for ((i = 0; i < n; i++)); do run "$row" "${targets[$(((r - 1 + i) % n))]}" "$r"; done
    done
done

# ---------------------------------------------------------------- summary
say ""
say "summary (medians over $ROUNDS rounds; ratios paired per round, then the median)"
printf '%-10s %-14s %10s %10s %10s %12s %14s %14s\n' row target "req/s" "µs/req" "user µs" "conn/1k req" "headroom/this" "(range)"
for row in $ROWS; do
    read -r -a targets <<<"${TARGETS_OF[$row]}"
    for t in "${targets[@]}"; do
        rps=() cpu=() usr=() con=() rat=()
        for ((r = 1; r <= ROUNDS; r++)); do
            rps+=("${R_RPS[$row,$t,$r]}") cpu+=("${R_CPU[$row,$t,$r]}") usr+=("${R_USR[$row,$t,$r]}") con+=("${R_CON[$row,$t,$r]}")
            rat+=("$(ratio "${R_RPS[$row,headroom,$r]}" "${R_RPS[$row,$t,$r]}")")
        done
        range=$(printf '%s\n' "${rat[@]}" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%s-%s", lo, hi }')
        [[ $t == headroom ]] && { ratio_m="-"; range=""; } || ratio_m=$(median "${rat[@]}")
        printf '%-10s %-14s %10.0f %10s %10s %12s %14s %14s\n' "$row" "$t" "$(median "${rps[@]}")" "$(median "${cpu[@]}")" "$(median "${usr[@]}")" \
            "$(median "${con[@]}")" "$ratio_m" "$range"
    done
done
say ""
say "targets (issue 14): h1-256 and h1-1024 headroom >= 1.1x HAProxy and nginx with <= 1 upstream connect per 1k"
say "requests; h2 rows >= 1.1x HAProxy; headroom-h2up >= 1.2x headroom at h1-256 (the headroom/this column"
say "shows headroom over headroom-h2up: below 0.83 meets it)"
