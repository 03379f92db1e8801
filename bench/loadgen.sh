#!/usr/bin/env bash
# bench/loadgen.sh — headroom bench next to wrk (and oha, when installed) against the same
# nginx `return 200` upstream, in one run, ROUNDS rounds.
#
#   1. closed loop, one thread, CONNS connections, DURATION per run: requests/s of wrk,
#      headroom bench (which records a full HdrHistogram of every request, as wrk does) and
#      oha; the order rotates from round to round; ratios are paired per round.
#   2. open loop: headroom bench --rate at 20%, 50% and 80% of its own median closed-loop
#      ceiling; how far the rate it sent and the responses it got are from the rate asked.
#
# The upstream (nginx, 1 worker) is pinned to CPU 0, the load generator to CPU 1.
# Env knobs: ROUNDS=5 DURATION=5s CONNS=64 KEEP_TMP=1 (keep configs and raw outputs)
#            INSTALL_OHA=1 (cargo install oha first when it is missing: several minutes)
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5s}
CONNS=${CONNS:-64}
KEEP_TMP=${KEEP_TMP:-0}
INSTALL_OHA=${INSTALL_OHA:-0}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="$PATH:/usr/sbin:/sbin:$HOME/.cargo/bin"

die() { echo "bench/loadgen.sh: error: $*" >&2; exit 1; }

missing=()
for t in nginx wrk; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
if ((${#missing[@]})); then
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them"
    echo "installing ${missing[*]} ..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" \
        || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"; } \
        || die "apt-get install ${missing[*]} failed"
fi
if ! command -v oha >/dev/null 2>&1 && [[ $INSTALL_OHA == 1 ]]; then
    cargo install --locked oha || echo "note: oha could not be installed; it is left out"
fi
HAVE_OHA=0
command -v oha >/dev/null 2>&1 && HAVE_OHA=1
for t in taskset python3 curl; do command -v "$t" >/dev/null 2>&1 || die "required tool '$t' not found"; done
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer (got '$ROUNDS')"
PIN_GEN=() PIN_UP=()
if (($(nproc) >= 2)); then PIN_GEN=(taskset -c 1) PIN_UP=(taskset -c 0); fi

echo "building headroom (release) ..."
(cd "$ROOT" && cargo build --release -q -p headroom) || die "cargo build failed"
HEADROOM="$ROOT/target/release/headroom"

TMP=$(mktemp -d /tmp/headroom-loadgen.XXXXXX)
NGINX_PID=""
cleanup() {
    [[ -n $NGINX_PID ]] && kill "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null
    if [[ $KEEP_TMP == 1 ]]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
USER_LINE=""
[[ $EUID -eq 0 ]] && USER_LINE="user $(id -un) $(id -gn);"
cat >"$TMP/nginx.conf" <<EOF
$USER_LINE
daemon off;
worker_processes 1;
pid $TMP/nginx.pid;
error_log $TMP/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000000;
    keepalive_timeout 120s;
    client_body_temp_path $TMP/body; proxy_temp_path $TMP/proxy;
    fastcgi_temp_path $TMP/fcgi; uwsgi_temp_path $TMP/uwsgi; scgi_temp_path $TMP/scgi;
    server { listen 127.0.0.1:$PORT; location / { return 200 "ok"; } }
}
EOF
"${PIN_UP[@]}" nginx -p "$TMP" -c "$TMP/nginx.conf" -e "$TMP/error.log" &
NGINX_PID=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/" >/dev/null 2>&1 && break; sleep 0.05; done
curl -fs "http://127.0.0.1:$PORT/" >/dev/null || die "nginx did not start (see $TMP/error.log)"
URL="http://127.0.0.1:$PORT/"

echo "versions: $(nginx -v 2>&1 | sed 's/.*: //'), $(wrk -v 2>&1 | awk 'NR==1 {print $1" "$2}'), $( ((HAVE_OHA)) && oha --version || echo 'oha not installed'), headroom $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "placement: nginx on CPU 0, the load generator on CPU 1; closed loop: 1 thread, $CONNS connections, $DURATION, $ROUNDS rounds"

# cpu FILE CMD...: runs CMD, writes its user+sys CPU seconds to FILE.
cpu() {
    local f=$1
    shift
    python3 -c 'import resource, subprocess, sys
rc = subprocess.call(sys.argv[2:], stdout=sys.stdout, stderr=sys.stderr)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write(str(r.ru_utime + r.ru_stime))
sys.exit(rc)' "$f" "$@"
}
run_wrk() { cpu "$1.cpu" "${PIN_GEN[@]}" wrk -t1 -c"$CONNS" -d"$DURATION" --latency "$URL" >"$1" 2>&1; awk '/^Requests\/sec:/ {print $2}' "$1"; }
run_headroom() {
    cpu "$1.cpu" "${PIN_GEN[@]}" "$HEADROOM" bench -q -t 1 -c "$CONNS" -d "$DURATION" --json "$URL" >"$1" 2>"$1.err"
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["run"]["throughput_rps"])' "$1"
}
run_oha() {
    cpu "$1.cpu" "${PIN_GEN[@]}" oha --no-tui -c "$CONNS" -z "$DURATION" --output-format json "$URL" >"$1" 2>&1
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["summary"]["requestsPerSec"])' "$1"
}

GENS=(wrk headroom)
((HAVE_OHA)) && GENS+=(oha)
declare -A RPS CPUREQ
for g in "${GENS[@]}"; do RPS[$g]="" CPUREQ[$g]=""; done
RATIOS_WRK="" RATIOS_OHA=""
for ((r = 1; r <= ROUNDS; r++)); do
    order=("${GENS[@]:$(((r - 1) % ${#GENS[@]}))}" "${GENS[@]:0:$(((r - 1) % ${#GENS[@]}))}")
    declare -A THIS=()
    for g in "${order[@]}"; do
        v=$("run_$g" "$TMP/$g.$r.out") || die "$g failed, see $TMP/$g.$r.out"
        THIS[$g]=$v
        RPS[$g]+="$v "
        secs=${DURATION%s}
        CPUREQ[$g]+="$(python3 -c "print($(cat "$TMP/$g.$r.out.cpu") / ($v * $secs) * 1e6)") "
    done
    line="round $r:"
    for g in "${GENS[@]}"; do line+=" $g $(printf '%.0f' "${THIS[$g]}")"; done
    echo "$line req/s"
    RATIOS_WRK+="$(python3 -c "print(${THIS[headroom]} / ${THIS[wrk]})") "
    ((HAVE_OHA)) && RATIOS_OHA+="$(python3 -c "print(${THIS[headroom]} / ${THIS[oha]})") "
    unset THIS
done

median() { python3 -c 'import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
echo
echo "closed loop, median of $ROUNDS rounds (min–max):"
for g in "${GENS[@]}"; do
    # shellcheck disable=SC2086
    python3 -c 'import statistics,sys; v=[float(x) for x in sys.argv[3:]]; c=statistics.median(float(x) for x in sys.argv[2].split()); print(f"  {sys.argv[1]:<10}{statistics.median(v):>10,.0f} req/s  ({min(v):,.0f}–{max(v):,.0f}), generator CPU {c:.2f} µs/request")' "$g" "${CPUREQ[$g]}" ${RPS[$g]}
done
# shellcheck disable=SC2086
echo "  headroom bench / wrk, paired per round: median $(printf '%.3f' "$(median $RATIOS_WRK)") (target >= 0.9); rounds: $RATIOS_WRK"
# shellcheck disable=SC2086
((HAVE_OHA)) && echo "  headroom bench / oha, paired per round: median $(printf '%.3f' "$(median $RATIOS_OHA)")"

# shellcheck disable=SC2086
CEILING=$(median ${RPS[headroom]})
echo
echo "open loop: headroom bench --rate at a share of its closed-loop ceiling ($(printf '%.0f' "$CEILING") req/s), $DURATION each:"
for share in 0.2 0.5 0.8; do
    rate=$(python3 -c "print(int($CEILING * $share))")
    out="$TMP/open.$share.json"
    "${PIN_GEN[@]}" "$HEADROOM" bench -q -t 1 --rate "$rate/s" -d "$DURATION" --json "$URL" >"$out" 2>"$out.err" || die "open loop at $rate/s failed, see $out"
    python3 - "$out" "$rate" "$share" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))["run"]
asked, share = float(sys.argv[2]), float(sys.argv[3])
sent, got = r["sent_rate"], r["throughput_rps"]
ok = abs(sent - asked) / asked <= 0.01
print(f"  {share:>4.0%} = {asked:>8,.0f}/s: sent {sent:>10,.1f}/s ({(sent - asked) / asked:+.2%}), answered {got:>10,.1f}/s ({(got - asked) / asked:+.2%}), "
      f"p99 {r['latency_ms']['p99']:.2f} ms, {r['late']} waited for a connection, {r['unsent']} never sent  "
      + ("within 1%" if ok else "OFF BY MORE THAN 1%"))
EOF
done
