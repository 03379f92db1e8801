#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine with a Rust toolchain (rustup, Rust >= 1.85).
# Installs what the tests need when it is missing, then runs fmt, clippy and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v cc >/dev/null || need+=(gcc)              # ring (TLS) builds a little C
command -v openssl >/dev/null || need+=(openssl)     # the TLS test makes its certificate
[ -x /bin/kill ] || [ -x /usr/bin/kill ] || need+=(procps)  # tests send SIGHUP/SIGTERM/SIGUSR1
command -v prlimit >/dev/null || need+=(util-linux)  # the admin test runs headroom out of file descriptors
command -v redis-server >/dev/null || need+=(redis-server)  # headroom-redis tests run real servers
command -v redis-cli >/dev/null || need+=(redis-tools)       # ... and join six into a cluster
command -v gzip >/dev/null || need+=(gzip)                 # the compression test decodes as a client would
command -v promtool >/dev/null || need+=(prometheus)       # /metrics is linted by promtool and scraped by a real Prometheus
command -v prometheus-alertmanager >/dev/null || need+=(prometheus-alertmanager)  # alerts are pushed to a real Alertmanager
command -v chromium >/dev/null || need+=(chromium)          # the dashboard is loaded in headless Chromium
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need+=(rabbitmq-server)  # the autoscaler reads a real RabbitMQ queue's depth
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15)      # [[postgres]] runs in front of real PostgreSQL 15 servers (and pgbench)
command -v psql >/dev/null || need+=(postgresql-client-15)
if ((${#need[@]})); then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    echo "installing: ${need[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# headroom-redis's tests get its `testing` harness from its self dev-dependency: no flag needed.
# --no-fail-fast: every failing test binary is reported, not only the first; the run still fails.
cargo test --workspace --no-fail-fast 2>&1 | tee /tmp/headroom-test.log
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "%d passed, %d failed, %d skipped\n", p, f, i }' /tmp/headroom-test.log
