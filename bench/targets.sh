# bench/targets.sh — the run machinery bench/proxy.sh, cache.sh and guard.sh share: CPU
# placement, the build, the temp dir and its cleanup, free ports, target tables and one
# measured wrk run per target per round, medians, and paired ratios. Sourced after
# bench/lib.sh; reads the caller's knobs (ROOT, ROUNDS, DURATION, WARMUP, CONNS, PLACEMENT,
# KEEP_TMP, HEADROOM_BIN).
# shellcheck shell=bash

setup_placement() { # CPU placement from PLACEMENT; sets NCPU WRK_CPU SRV_CPU PIN_WRK PIN_SRV NOFILE
    NCPU=$(nproc)
    if [[ $PLACEMENT != none ]] && ((NCPU < 2)); then
        say "note: only $NCPU CPU, pinning disabled"
        PLACEMENT=none
    fi
    case $PLACEMENT in
        shared | split | none) ;;
        *) die "PLACEMENT must be shared, split or none (got '$PLACEMENT')" ;;
    esac
    WRK_CPU=1 SRV_CPU=0
    PIN_WRK=() PIN_SRV=() # command prefixes; taskset execs, so "${PIN_SRV[@]}" cmd & gives cmd's own pid in $!
    if [[ $PLACEMENT != none ]]; then PIN_WRK=(taskset -c "$WRK_CPU") PIN_SRV=(taskset -c "$SRV_CPU"); fi
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    NOFILE=$(ulimit -n)
    if [[ $NOFILE == unlimited ]]; then NOFILE=1048576; fi
}

setup_run() { # setup_run NAME — the headroom binary (HEADROOM), the temp dir (TMP), cleanup on exit
    # ---------------------------------------------------------------- build
    if [[ -n ${HEADROOM_BIN:-} ]]; then
        HEADROOM=$(realpath "$HEADROOM_BIN") || die "HEADROOM_BIN=$HEADROOM_BIN not found"
        [[ -x $HEADROOM ]] || die "HEADROOM_BIN=$HEADROOM_BIN is not executable"
    else
        say "building headroom (release) ..."
        (cd "$ROOT" && cargo build --release -p headroom) || die "cargo build --release -p headroom failed"
        HEADROOM="${CARGO_TARGET_DIR:-$ROOT/target}/release/headroom"
        [[ -x $HEADROOM ]] || die "$HEADROOM not found after build"
    fi

    # ---------------------------------------------------------------- temp dir, cleanup
    TMP=$(mktemp -d /tmp/headroom-$1-bench.XXXXXX)
    PIDS=()
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
        if [[ $KEEP_TMP == 1 ]]; then echo "temp dir kept: $TMP" >&2; else rm -rf "$TMP"; fi
        exit "$rc"
    }
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

free_ports() { # free_ports N — N free loopback ports in 20000-21999, on one line
    python3 - "$1" <<'EOF'
import random, socket, sys
n = int(sys.argv[1])
out, p = [], 20000 + random.randrange(0, 1500)
while len(out) < n and p < 22000:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
        out.append(p)
    except OSError:
        pass
    finally:
        s.close()
    p += 1
print(*out)
EOF
}

# Per-round results are keyed "NAME,ROUND"; the arrays without R_ hold the medians.
declare -A R_RPS R_P50 R_P99 R_CPU R_SYS R_REQS R_XCPU R_SHARE
declare -A RPS P50 P99 CPU SYS XCPU SHARE RPS_MIN RPS_MAX

# Target tables: URL, process roots whose CPU is counted, an optional wrk Lua script, an
# optional extra process measured separately (redis-server behind hr-redis-s), and a check
# run before each measurement.
declare -A URL_OF ROOTS_OF LUA_OF XROOT_OF CHECK_OF COUNT_OF

wrk_args() { # wrk_args TARGET TAG — the wrk command line's script part for TARGET
    local t=$1
    if [[ -n ${LUA_OF[$t]:-} ]]; then echo "-s ${LUA_OF[$t]} ${URL_OF[$t]} -- $t-$2"; else echo "${URL_OF[$t]}"; fi
}

warm() { # warm TARGET — one unmeasured run
    local t=$1 out="$TMP/$1.warm.txt"
    ${CHECK_OF[$t]:-true}
    # shellcheck disable=SC2046
    "${PIN_WRK[@]}" wrk -t1 -c"$CONNS" -d"$WARMUP" $(wrk_args "$t" warm) >"$out" \
        || die "$t: wrk warm-up failed: $(cat "$out")"
    show_errors "$t" "$out"
}

bench() { # bench TARGET ROUND — one measured run, stored under "TARGET,ROUND"
    local t=$1 r=$2 c0="0 0" c1="0 0" x0="0 0" x1="0 0" n0=0 n1=0 out k roots xroot parsed tck
    k="$t,$r"
    out="$TMP/$t.r$r.wrk.txt"
    roots=${ROOTS_OF[$t]:-} xroot=${XROOT_OF[$t]:-}
    ${CHECK_OF[$t]:-true}
    printf '[round %d/%d] %-12s ' "$r" "$ROUNDS" "$t"
    # shellcheck disable=SC2086
    [[ -n $roots ]] && c0=$(cpu_ticks $roots)
    [[ -n $xroot ]] && x0=$(cpu_ticks "$xroot")
    [[ -n ${COUNT_OF[$t]:-} ]] && n0=$(${COUNT_OF[$t]})
    # shellcheck disable=SC2046
    "${PIN_WRK[@]}" wrk -t1 -c"$CONNS" -d"$DURATION" --latency $(wrk_args "$t" "r$r") >"$out" \
        || { echo; die "$t: wrk failed: $(cat "$out")"; }
    # shellcheck disable=SC2086
    [[ -n $roots ]] && c1=$(cpu_ticks $roots)
    [[ -n $xroot ]] && x1=$(cpu_ticks "$xroot")
    [[ -n ${COUNT_OF[$t]:-} ]] && n1=$(${COUNT_OF[$t]})

    parsed=$(parse_wrk "$out")
    read -r R_RPS[$k] R_P50[$k] R_P99[$k] R_REQS[$k] <<<"$parsed"
    [[ ${R_REQS[$k]:-0} -gt 0 ]] || { echo; die "$t: could not parse wrk output:"$'\n'"$(cat "$out")"; }
    tck=$(getconf CLK_TCK)
    per_req() { awk -v a="$1" -v b="$2" -v t="$tck" -v n="${R_REQS[$k]}" 'BEGIN {
        split(a, x, " "); split(b, y, " "); printf "%.2f\n", ((y[1] - x[1]) + (y[2] - x[2])) / t * 1e6 / n }'; }
    R_CPU[$k]="-" R_XCPU[$k]="-"
    R_SYS[$k]="-"
    if [[ -n $roots ]]; then
        R_CPU[$k]=$(per_req "$c0" "$c1")
        R_SYS[$k]=$(per_req "0 ${c0#* }" "0 ${c1#* }") # the kernel's part alone
    fi
    [[ -n $xroot ]] && R_XCPU[$k]=$(per_req "$x0" "$x1")
    printf '%10.0f req/s  p50 %7.3f ms  p99 %7.3f ms  cpu %6s µs/req (sys %s)' "${R_RPS[$k]}" "${R_P50[$k]}" "${R_P99[$k]}" \
        "${R_CPU[$k]}" "${R_SYS[$k]}"
    [[ -n $xroot ]] && printf ' (+ redis-server %s µs/req)' "${R_XCPU[$k]}"
    if [[ -n ${COUNT_OF[$t]:-} ]]; then
        R_SHARE[$k]=$(awk -v a="$n0" -v b="$n1" -v n="${R_REQS[$k]}" 'BEGIN { printf "%.0f", 100 * (b - a) / n }')
        printf ' [%s%% answered by Redis]' "${R_SHARE[$k]}"
    fi
    printf '  (%s requests)\n' "${R_REQS[$k]}"
    show_errors "$t" "$out"
    ${POSTCHECK_OF[$t]:-true}
}
declare -A POSTCHECK_OF

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
        mapfile -t vals < <(round_values R_SYS "$t"); SYS[$t]=$(median "${vals[@]}")
        mapfile -t vals < <(round_values R_XCPU "$t"); XCPU[$t]=$(median "${vals[@]}")
        mapfile -t vals < <(round_values R_SHARE "$t"); SHARE[$t]=$(median "${vals[@]}")
    done
}

round_order() { # round_order ROUND GROUP... — the targets of one round: the groups, and the
    # targets inside each, rotated by the round number, so slow drifts favour no server
    local r=$1 ng i j m members order=()
    shift
    ng=$#
    local groups=("$@")
    for ((i = 0; i < ng; i++)); do
        read -r -a members <<<"${groups[$(((r - 1 + i) % ng))]}"
        m=${#members[@]}
        for ((j = 0; j < m; j++)); do order+=("${members[$(((r - 1 + j) % m))]}"); done
    done
    echo "${order[*]}"
}

say_placement() {
    case $PLACEMENT in
        shared) say "placement: wrk pinned to CPU $WRK_CPU; upstream, redis-server and the server under test pinned to CPU $SRV_CPU" ;;
        split) say "placement: wrk pinned to CPU $WRK_CPU; server under test alone on CPU $SRV_CPU; upstream and redis-server on CPU $WRK_CPU (the upstream on CPU $SRV_CPU for its direct run)" ;;
        none) say "placement: no CPU pinning" ;;
    esac
}

# ratio_lines SUBJECT BASE... — SUBJECT's ratios to each BASE: of the medians, then paired per
# round (both met the same machine state within seconds of each other, so the paired ratios
# are steadier than ratios of medians taken over different rounds).
ratio_lines() {
    local h=$1 b what label r
    shift
    for b in "$@"; do
        printf 'ratios: %s/%-12s req/s=%s (higher better)  p99=%s (lower better)  cpu=%s (lower better)\n' "$h" "$b" \
            "$(ratio "${RPS[$h]}" "${RPS[$b]}")" "$(ratio "${P99[$h]}" "${P99[$b]}")" \
            "$(ratio "${CPU[$h]}" "${CPU[$b]}")"
    done
    for what in R_RPS R_P99 R_CPU; do
        case $what in R_RPS) label="req/s" ;; R_P99) label="p99" ;; R_CPU) label="cpu/req" ;; esac
        declare -n vals=$what
        for b in "$@"; do
            local paired=()
            for ((r = 1; r <= ROUNDS; r++)); do paired+=("$(ratio "${vals[$h,$r]:-}" "${vals[$b,$r]:-}")"); done
            printf '  paired %-7s per round: %s/%-12s %s  -> median %s\n' "$label" "$h" "$b" "${paired[*]}" \
                "$(awk -v m="$(median "${paired[@]}")" 'BEGIN { if (m == "-") print "n/a"; else printf "%.2f", m }')"
        done
        unset -n vals
    done
}

nginx_common() { # nginx_common DIR — the main-context lines of a one-worker nginx kept in DIR
    local user=""
    # Workers stay root when run as root: the temp dir is 0700.
    [[ $EUID -eq 0 ]] && user="user $(id -un) $(id -gn);"
    cat <<EOF
$user
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile $NOFILE;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections $((NOFILE > 30000 ? 30000 : NOFILE)); }
EOF
}
