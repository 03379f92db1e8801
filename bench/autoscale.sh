#!/usr/bin/env bash
# The autoscaler under a step load, in one run: the same CPU-bound service (each replica a
# `headroom demo-upstream --cpu-ms` process, one thread busy CPU_MS per request) behind
# headroom with four replica policies, one after the other:
#   fixed-1    min = max = 1
#   fixed-max  min = max = MAX
#   hpa        Kubernetes' HPA on in-flight requests (interval 2s, scale-down window 10s)
#   requests   Knative's KPA on in-flight requests (stable window 20s)
# Each gets LOW closed-loop clients for PRE seconds, then HIGH clients for STEP seconds, then
# LOW again for POST seconds (`headroom bench -c`): a step up and a step back down. Printed
# per policy: time from the step to the first scale-up, to steady state (the last change of
# the replica count during the step), p99 of the whole step and p99 once steady (the largest
# of the one-second p99s from then on), errors during the step and during the step down, the
# time from the step down to the last scale-down, and replica-seconds used over the whole run
# (the count sampled every second from /status). Ratios against fixed-max close the table.
#
#   bash bench/autoscale.sh            # MAX=4 LOW=2 HIGH=16 CPU_MS=10 PRE=10 STEP=30 POST=60
#   HIGH=40 STEP=60 bash bench/autoscale.sh
#   SLOW_START=10s bash bench/autoscale.sh  # the service's slow_start (autoscaled default: 0s)
#   POLICIES="fixed-max hpa" bash bench/autoscale.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MAX=${MAX:-4}
LOW=${LOW:-2}
HIGH=${HIGH:-16}
CPU_MS=${CPU_MS:-10}
PRE=${PRE:-10}
STEP=${STEP:-30}
POST=${POST:-60}
SLOW_START=${SLOW_START:-}
POLICIES=${POLICIES:-fixed-1 fixed-max hpa requests}
slow_line=""
[ -z "$SLOW_START" ] || slow_line="slow_start = \"$SLOW_START\""

if [ -n "${HEADROOM_BIN:-}" ]; then
    HEADROOM=$(realpath "$HEADROOM_BIN")
else
    cargo build --release -p headroom -q
    HEADROOM="${CARGO_TARGET_DIR:-$PWD/target}/release/headroom"
fi
command -v python3 >/dev/null || { echo "bench/autoscale.sh needs python3" >&2; exit 1; }

TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The policy's [service.app.autoscale] lines.
policy() {
    case "$1" in
        fixed-1) echo "min = 1
max = 1
inflight = 1000" ;;
        fixed-max) echo "min = $MAX
max = $MAX
inflight = 1000" ;;
        hpa) echo "min = 1
max = $MAX
inflight = 2
interval = \"2s\"
[service.app.autoscale.scale_down]
stabilization = \"10s\"" ;;
        requests) echo "min = 1
max = $MAX
mode = \"requests\"
inflight = 3
utilization = \"100%\"
stable_window = \"20s\"" ;;
    esac
}

run_policy() {
    local name=$1 port admin
    port=$(free_port); admin=$(free_port)
    cat >"$TMP/$name.toml" <<EOF
[global]
access_log = "off"
[admin]
bind = "127.0.0.1:$admin"
[[listener]]
name = "public"
bind = "127.0.0.1:$port"
[[route]]
service = "app"
[service.app]
balance = "least-requests"
$slow_line
[service.app.autoscale]
$(policy "$name")
[service.app.autoscale.process]
command = ["$HEADROOM", "demo-upstream", "--bind", "127.0.0.1:{port}", "--cpu-ms", "$CPU_MS"]
grace = "2s"
EOF
    HEADROOM_LOG=warn "$HEADROOM" serve --config "$TMP/$name.toml" >"$TMP/$name.log" 2>&1 &
    local hr=$!
    PIDS+=("$hr")
    # Up once its first replicas are.
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$port/" >/dev/null 2>&1 && break
        sleep 0.1
    done
    # Replica count every second, with the time: the sampler runs for the whole policy.
    python3 - "$admin" "$TMP/$name.samples" <<'PY' &
import json, sys, time, urllib.request
admin, out = sys.argv[1], sys.argv[2]
with open(out, "w") as f:
    while True:
        try:
            s = json.load(urllib.request.urlopen(f"http://127.0.0.1:{admin}/status", timeout=1))
            f.write(f"{time.time():.3f} {s['autoscale']['app']['current']}\n"); f.flush()
        except Exception:
            pass
        time.sleep(1)
PY
    local sampler=$!
    PIDS+=("$sampler")
    "$HEADROOM" bench -c "$LOW" -d "${PRE}s" "http://127.0.0.1:$port/" >/dev/null 2>&1
    date +%s.%N >"$TMP/$name.step"
    "$HEADROOM" bench -c "$HIGH" -d "${STEP}s" --json-file "$TMP/$name.json" "http://127.0.0.1:$port/" >/dev/null 2>&1
    date +%s.%N >"$TMP/$name.end"
    "$HEADROOM" bench -c "$LOW" -d "${POST}s" --json-file "$TMP/$name.post.json" "http://127.0.0.1:$port/" >/dev/null 2>&1
    date +%s.%N >"$TMP/$name.done"
    kill "$sampler" 2>/dev/null || true
    kill -TERM "$hr"; wait "$hr" 2>/dev/null || true
}

echo "bench/autoscale.sh: replicas busy ${CPU_MS} ms of CPU per request; ${LOW} clients for ${PRE}s, then ${HIGH} for ${STEP}s, then ${LOW} for ${POST}s; max ${MAX}; $(nproc) cores"
for p in $POLICIES; do
    echo "  running $p ..." >&2
    run_policy "$p"
done

python3 - "$TMP" $POLICIES <<'PY'
import json, sys
tmp = sys.argv[1]
rows = {}
for p in sys.argv[2:]:
    step = float(open(f"{tmp}/{p}.step").read())
    end = float(open(f"{tmp}/{p}.end").read())
    done = float(open(f"{tmp}/{p}.done").read())
    samples = [tuple(map(float, l.split())) for l in open(f"{tmp}/{p}.samples") if l.strip()]
    # Replica-seconds: each sample's count held until the next one.
    rs = sum(c * (samples[i + 1][0] - t) for i, (t, c) in enumerate(samples[:-1]))
    before = [c for t, c in samples if t <= step]
    base = before[-1] if before else (samples[0][1] if samples else 0)
    during = [(t, c) for t, c in samples if step < t <= end]
    first_up = next((t - step for t, c in during if c > base), None)
    steady, prev = 0.0, base
    for t, c in during:
        if c != prev:
            steady, prev = t - step, c
    after = [(t, c) for t, c in samples if end < t <= done]
    down, prev = 0.0, (during[-1][1] if during else base)
    for t, c in after:
        if c != prev:
            down, prev = t - end, c
    def failed(run):
        return sum(run["errors"].values()) + sum(n for code, n in run["status"].items() if code.startswith("5"))
    run = json.load(open(f"{tmp}/{p}.json"))["run"]
    post = json.load(open(f"{tmp}/{p}.post.json"))["run"]
    # Once steady: the one-second rows that start after the last change of the count.
    tail = [r["p99_ms"] for r in run["timeline"] if r["t_s"] >= steady]
    rows[p] = dict(rs=rs, first_up=first_up, steady=steady, p99=run["latency_ms"]["p99"],
                   p99_steady=max(tail or [run["latency_ms"]["p99"]]), errors=failed(run),
                   errors_down=failed(post), down=down, rps=run["throughput_rps"],
                   peak=max([c for _, c in during] or [base]))
print(f"{'policy':<10} {'first up':>9} {'steady':>8} {'p99 step':>9} {'p99 steady':>11} {'req/s':>6} {'errors':>7} {'down after':>11} {'errors down':>12} {'peak':>5} {'replica-s':>10}")
for p, x in rows.items():
    fu = "-" if x["first_up"] is None else f"{x['first_up']:.1f}s"
    print(f"{p:<10} {fu:>9} {x['steady']:>7.1f}s {x['p99']:>7.1f}ms {x['p99_steady']:>9.1f}ms {x['rps']:>6.0f} {x['errors']:>7} {x['down']:>10.1f}s {x['errors_down']:>12} {x['peak']:>5.0f} {x['rs']:>10.0f}")
fm = rows.get("fixed-max")
for p in ("hpa", "requests"):
    x = rows.get(p)
    if not (x and fm):
        continue
    print(f"{p}/fixed-max: replica-seconds {x['rs'] / fm['rs']:.2f} (target <= 0.60), p99 of the step {x['p99'] / fm['p99']:.2f}, "
          f"p99 once steady {x['p99_steady'] / fm['p99_steady']:.2f} (target <= 1.50)")
PY
