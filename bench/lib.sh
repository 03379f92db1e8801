# bench/lib.sh — what the benchmark scripts share: process trees and their CPU time and
# memory, pinning, starting and waiting for servers, medians and ratios. Sourced by
# bench/proxy.sh, bench/cache.sh and bench/guard.sh; the functions read the caller's globals (TMP, PIDS,
# PIN_SRV, PLACEMENT, ROUNDS) when they run.
# shellcheck shell=bash

die() { echo "bench/${0##*/}: error: $*" >&2; exit 1; }

say() { echo "$*"; }

tree_pids() { # a process and all its descendants
    local c
    echo "$1"
    for c in $(pgrep -P "$1" 2>/dev/null || true); do tree_pids "$c"; done
}

cpu_ticks() { # cpu_ticks PID... — "utime stime" (fields 14, 15 of /proc/PID/stat), summed over the trees
    local u=0 k=0 p s f root
    for root in "$@"; do
        for p in $(tree_pids "$root"); do
            s=$(cat "/proc/$p/stat" 2>/dev/null) || continue
            s=${s##*) } # drop "pid (comm) " — comm may contain spaces
            read -r -a f <<<"$s"
            u=$((u + f[11])) k=$((k + f[12])) # fields 14 and 15 overall = index 11 and 12 after comm
        done
    done
    echo "$u $k"
}

rss_kib() { # VmRSS summed over the tree, KiB
    local t=0 p v
    for p in $(tree_pids "$1"); do
        v=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
        t=$((t + ${v:-0}))
    done
    echo "$t"
}

pin_tree() { # pin_tree CPU ROOTPID — move a running process tree (all threads)
    [[ $PLACEMENT == none ]] && return 0
    local p
    for p in $(tree_pids "$2"); do taskset -a -p -c "$1" "$p" >/dev/null; done
}

start_bg() { # start_bg NAME cmd... (pinned like a server); sets LAST_PID
    local name=$1; shift
    "${PIN_SRV[@]}" "$@" >"$TMP/$name.stdout" 2>"$TMP/$name.log" &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

wait_port() { # wait_port NAME PORT PID
    local name=$1 port=$2 pid=$3 i
    for i in $(seq 150); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "--- $name log:" >&2; tail -n 30 "$TMP/$name.log" >&2 || true
            die "$name exited before listening on 127.0.0.1:$port"
        fi
        if timeout 1 bash -c "</dev/tcp/127.0.0.1/$port" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "--- $name log:" >&2; tail -n 30 "$TMP/$name.log" >&2 || true
    die "$name did not accept connections on 127.0.0.1:$port within 15s"
}

show_errors() { # show_errors NAME FILE — non-2xx responses, socket errors
    grep -E 'Non-2xx or 3xx responses|Socket errors' "$2" | sed "s/^ */  !! $1 ($(basename "$2" .txt)): /" || true
}

median() { # median VALUES... — numeric median ("-" and empty values ignored; "-" if none left)
    printf '%s\n' "$@" | awk '$1 != "" && $1 != "-" && $1 != "n/a"' | sort -g | awk '{ a[NR] = $1 }
        END { if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

round_values() { # round_values ARRAYNAME TARGET — that target's values for rounds 1..ROUNDS
    local -n arr=$1
    local r
    for ((r = 1; r <= ROUNDS; r++)); do echo "${arr[$2,$r]:-}"; done
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || a == "" || b == "" || b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'; }

parse_wrk() { # parse_wrk FILE — "req/s p50_ms p99_ms requests" from wrk --latency output
    awk '
        function ms(v,   n, u) { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
            if (u == "us") return n / 1000; if (u == "ms") return n; if (u == "s") return n * 1000
            if (u == "m") return n * 60000; if (u == "h") return n * 3600000; return -1 }
        $1 == "50%" { p50 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        / requests in / { reqs = $1 }
        $1 == "Requests/sec:" { rps = $2 }
        END { printf "%s %s %s %s\n", rps, p50, p99, reqs }' "$1"
}
