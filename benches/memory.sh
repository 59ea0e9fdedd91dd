#!/usr/bin/env bash
# Peak memory of the proxy server (benches/server.rs) while it proxies large bodies: not a test, a measurement.
#
#   benches/memory.sh              # 1 GiB up and back, then a slow reader
#   SIZE=268435456 benches/memory.sh
#
# Builds the server in release, starts a loopback echo target (benches/memory.py echo),
# runs the server under `/usr/bin/time -v` pointed at it (`--unsecured`: every caller is
# anonymous, the token is signed with RS512 and cached), streams SIZE bytes up through
# /proxy and reads them back (checked byte for byte), then stops the demo and prints its
# peak RSS ("Maximum resident set size"). Second scenario: a client that reads the echo
# back at SLOW_RATE bytes/s, so the proxy's buffers fill and must stay bounded.
#
# Needs: cargo, python3, GNU time (`apt-get install time`). Target: peak RSS < 64 MiB.
set -euo pipefail

cd "$(dirname "$0")/.."
SIZE=${SIZE:-1073741824}
SLOW_SIZE=${SLOW_SIZE:-268435456}
SLOW_RATE=${SLOW_RATE:-33554432}
LIMIT_KB=$((64 * 1024))

if [ ! -x /usr/bin/time ]; then
    echo "GNU time is missing: apt-get install time" >&2
    exit 1
fi
command -v python3 >/dev/null || { echo "python3 is missing" >&2; exit 1; }

DEMO=$(cargo build --release --bench server --message-format=json |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
[ -x "$DEMO" ] || { echo "the server did not build" >&2; exit 1; }

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

python3 benches/memory.py echo >"$WORK/echo.port" &
PIDS+=($!)
for _ in $(seq 50); do [ -s "$WORK/echo.port" ] && break; sleep 0.1; done
ECHO="127.0.0.1:$(head -1 "$WORK/echo.port")"

# run NAME CLIENT_ARGS... : one demo process under time -v, one client run through it.
run() {
    local name=$1
    shift
    /usr/bin/time -v -o "$WORK/$name.time" "$DEMO" --listen 127.0.0.1:0 --unsecured \
        --proxy-url "http://$ECHO" >"$WORK/$name.out" 2>"$WORK/$name.err" &
    local time_pid=$!
    PIDS+=("$time_pid")
    local addr=""
    for _ in $(seq 100); do
        addr=$(sed -n 's|^listening on http://||p' "$WORK/$name.out" 2>/dev/null | head -1 || true)
        [ -n "$addr" ] && break
        sleep 0.1
    done
    [ -n "$addr" ] || { cat "$WORK/$name.err" >&2; echo "the demo did not start" >&2; exit 1; }
    local demo_pid
    demo_pid=$(pgrep -P "$time_pid")
    local idle_kb
    idle_kb=$(awk '/VmRSS/ {print $2}' "/proc/$demo_pid/status")
    python3 benches/memory.py client "http://$addr/proxy/echo" "$@"
    kill -TERM "$demo_pid"
    wait "$time_pid" 2>/dev/null || true
    local peak_kb
    peak_kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/$name.time")
    printf '%-10s idle RSS %6d KiB, peak RSS %6d KiB (%.1f MiB) %s\n' "$name" "$idle_kb" \
        "$peak_kb" "$(awk -v k="$peak_kb" 'BEGIN {print k / 1024}')" \
        "$([ "$peak_kb" -lt "$LIMIT_KB" ] && echo "< 64 MiB: ok" || echo ">= 64 MiB: OVER")"
}

echo "demo: $DEMO ($(git rev-parse --short HEAD 2>/dev/null || echo '?')), echo target $ECHO"
run fast "$SIZE"
run slow "$SLOW_SIZE" "$SLOW_RATE"
