#!/usr/bin/env bash
# User-space instructions per proxied request of the whole server of benches/server.rs
# (system `demo`; release build,
# --unsecured, RS512 token from the cache) against the `cache` floor of benches/floor.rs
# (hyper's server and a per-thread cache of hyper-util's composable pool, the pieces the
# crate's client is built from, nothing else) and the `pool` floor (hyper-util's legacy
# pooled client), both in front of the same
# nginx upstream, counted by callgrind while wrk drives them over 127.0.0.1. Unlike
# benches/instructions.sh (the layer in process), this counts what the demo's server adds
# too; unlike benches/load.sh, the figures do not move with the machine's load.
#
# Usage: benches/demo-instructions.sh      (from anywhere; needs valgrind, wrk, nginx, curl)
#
# Environment (all optional):
#   DURATION=10       seconds of counted load per system (after 3 s of warm-up)
#   CONNECTIONS=32    wrk's connections
#   CACHE_SIM=1       also simulate the caches (callgrind --cache-sim=yes, slower) and print
#                     first-level data misses and last-level misses per request
#   CACHE_ARGS=...    callgrind's cache geometry for CACHE_SIM, e.g. --LL=1048576,8,64 to
#                     take this CPU's 1 MiB second-level cache as the last level
#   DEMO_BIN=path     use this server binary instead of building `--bench server`
#   FLOOR_BIN=path    use this floor binary instead of building `--bench floor`
#   KEEP=dir          keep the callgrind files in dir (for callgrind_annotate)
#
# Counts five systems: the demo; the `cache`, `pool` and `relay` floors (a byte relay, no HTTP);
# and nginx `proxy_pass` with upstream keepalive, the reference of benches/load.sh, in one
# process. Prints, per system, the instructions counted, the requests wrk completed and
# their ratio; then the demo's excess over the cache and pool floors and each system over nginx. Requests in flight when counting starts or
# stops (CONNECTIONS at most) make the per-request figure uncertain by about 0.2 %; three runs of
# the same binary here agreed within 0.5 %.
set -euo pipefail

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-32}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

missing=()
for tool in valgrind callgrind_control wrk nginx curl taskset; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    echo "demo-instructions.sh: missing: ${missing[*]}" >&2
    echo "On Debian: apt-get install -y valgrind wrk nginx curl util-linux." >&2
    echo "Nothing was installed; install them and run again." >&2
    exit 1
fi
if (($(nproc) < 2)); then
    echo "demo-instructions.sh: needs 2 CPUs (wrk on CPU 0, the server on CPU 1)" >&2
    exit 1
fi

# shellcheck source=benches/common.sh
source "$root/benches/common.sh"
workspace tip-instr

if [[ -z ${DEMO_BIN:-} || -z ${FLOOR_BIN:-} ]]; then
    (cd "$root" && cargo build --release --bench server --bench floor \
        --message-format=json-render-diagnostics >"$tmp/build.json")
    DEMO_BIN=${DEMO_BIN:-$(grep -o '"executable":"[^"]*/server-[^"]*"' "$tmp/build.json" |
        tail -n 1 | cut -d'"' -f4)}
    FLOOR_BIN=${FLOOR_BIN:-$(grep -o '"executable":"[^"]*/floor-[^"]*"' "$tmp/build.json" |
        tail -n 1 | cut -d'"' -f4)}
fi
for bin in "$DEMO_BIN" "$FLOOR_BIN"; do
    [[ -x $bin ]] || {
        echo "demo-instructions.sh: not an executable: $bin" >&2
        exit 1
    }
done

# The upstream: nginx answering every request with a fixed 12-byte body.
up_port=$(free_port)
nginx_conf "$tmp/upstream" 1 "
    server {
        listen 127.0.0.1:$up_port;
        location / { default_type text/plain; return 200 'Hello world!'; }
    }" >"$tmp/upstream.conf"
taskset -c 1 nginx -p "$tmp" -c "$tmp/upstream.conf" -g 'daemon off;' &
pids+=($!)
wait_http "http://127.0.0.1:$up_port/"

# The demo signs with a fixed key: no RSA key generation under valgrind.
mkdir -p "$tmp/keys"
cp "$root/tests/fixtures/rsa-pkcs8.pem" "$tmp/keys/private-key.pem"
cp "$root/tests/fixtures/rsa-public.pem" "$tmp/keys/public-key.pem"

declare -A per
count() { # name, address (empty: read from `listening on http://ADDR`), command...
    local name=$1 addr=$2
    shift 2
    # Not instrumented until the server is up: start-up is not counted, and fast.
    TOKIO_WORKER_THREADS=1 taskset -c 1 valgrind --tool=callgrind --instr-atstart=no \
        ${CACHE_SIM:+--cache-sim=yes ${CACHE_ARGS:-}} \
        --callgrind-out-file="$tmp/$name.out" "$@" >"$tmp/$name.stdout" 2>"$tmp/$name.log" &
    local pid=$!
    pids+=("$pid")
    # Under valgrind a server takes a while to start.
    if [[ -n $addr ]]; then
        wait_http "http://$addr/" || addr=""
    else
        addr=$(listening_addr "$tmp/$name.stdout" 60) || addr=""
    fi
    if [[ -z $addr ]]; then
        echo "demo-instructions.sh: $name did not start:" >&2
        cat "$tmp/$name.log" >&2
        exit 1
    fi
    callgrind_control -i on "$pid" >/dev/null 2>&1
    taskset -c 0 wrk -t1 -c"$CONNECTIONS" -d3s "http://$addr/proxy/" >/dev/null
    callgrind_control -z "$pid" >/dev/null 2>&1
    taskset -c 0 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" "http://$addr/proxy/" >"$tmp/$name.wrk"
    callgrind_control -d "$pid" >/dev/null 2>&1
    local total requests
    total=$(awk '/^totals:/ { print $2 }' "$tmp/$name.out.1")
    requests=$(awk '/requests in/ { print $1 }' "$tmp/$name.wrk")
    per[$name]=$(awk -v t="$total" -v r="$requests" 'BEGIN { printf "%.0f", t / r }')
    printf '%-5s %14s instructions for %7s requests: %s per request\n' \
        "$name" "$total" "$requests" "${per[$name]}"
    if [[ -n ${CACHE_SIM:-} ]]; then
        awk -v r="$requests" '
            /^events:/ { for (i = 2; i <= NF; i++) col[$i] = i }
            /^totals:/ {
                printf "      simulated cache misses per request: L1 instructions %.0f, L1 data %.0f, last level %.0f\n",
                    $col["I1mr"] / r, ($col["D1mr"] + $col["D1mw"]) / r,
                    ($col["ILmr"] + $col["DLmr"] + $col["DLmw"]) / r
            }' "$tmp/$name.out.1"
    fi
    if [[ -n ${KEEP:-} ]]; then
        mkdir -p "$KEEP"
        cp "$tmp/$name.out.1" "$KEEP/$name.callgrind"
    fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

count demo "" "$DEMO_BIN" --listen 127.0.0.1:0 --unsecured --keys "$tmp/keys" \
    --proxy-url "http://127.0.0.1:$up_port"
count pool "" "$FLOOR_BIN" --mode hyper-pool --listen 127.0.0.1:0 \
    --proxy-url "http://127.0.0.1:$up_port"
count cache "" "$FLOOR_BIN" --mode hyper-cache --listen 127.0.0.1:0 \
    --proxy-url "http://127.0.0.1:$up_port"
count relay "" "$FLOOR_BIN" --mode relay --listen 127.0.0.1:0 \
    --proxy-url "http://127.0.0.1:$up_port"

# nginx `proxy_pass` with upstream keepalive, configured as in benches/load.sh, in one
# process (no master) so that callgrind counts the process that serves.
px_port=$(free_port)
nginx_conf "$tmp/proxy" single "$(nginx_proxy "$px_port" "$up_port")" >"$tmp/proxy.conf"
count nginx "127.0.0.1:$px_port" nginx -p "$tmp" -c "$tmp/proxy.conf" -g 'daemon off;'

awk -v d="${per[demo]}" -v p="${per[pool]}" -v c="${per[cache]}" -v r="${per[relay]}" -v n="${per[nginx]}" 'BEGIN {
    printf "demo - cache: %+d instructions per request (%+.1f %%)\n", d - c, (d / c - 1) * 100
    printf "demo - pool: %+d instructions per request (%+.1f %%)\n", d - p, (d / p - 1) * 100
    printf "per request over nginx: demo %.2f  cache %.2f  pool %.2f  relay %.2f\n", d / n, c / n, p / n, r / n
}'
