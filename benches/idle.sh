#!/usr/bin/env bash
# Memory per idle keep-alive client connection: the proxy server of benches/server.rs
# (system `demo`) beside nginx `proxy_pass`, both in front of the same nginx upstream.
#
# Usage: benches/idle.sh            (from the repository root; needs nginx, curl, ss, python3,
#                                    cargo; about 20 s once built, with FLOOR=1 and BASE_BIN)
#
# Environment (all optional):
#   N=8000          idle connections per system (the open files limit must allow N + 64:
#                   the script raises its soft limit to the hard one)
#   SETTLE=1        seconds between the last response and the measure (the demo frees an
#                   idle connection's HTTP/1.1 buffers after --release-idle-buffers-ms,
#                   100 ms by default)
#   TIMEOUT_MS=600000
#                   the demo's --header-read-timeout-ms and --idle-timeout-ms: longer than
#                   the measure, so that no idle connection is closed meanwhile
#   DEMO_BIN=path   use this binary instead of building `--bench server`
#   DEMO_ARGS=...   extra arguments for the demo (and for `base` unless BASE_ARGS is set)
#   BASE_BIN=path   also measure this build of the server (e.g. an earlier commit's) as
#                   system `base`, in the same run: the before/after measure of a change
#   BASE_ARGS=...   extra arguments for `base` instead of DEMO_ARGS
#   FLOOR=1         also measure the pool floor of benches/floor.rs (`--mode hyper-pool`:
#                   hyper's HTTP/1.1 server and hyper-util's pooled client, nothing of the
#                   crate, no timers), as system `pool`
#   FLOOR_BIN=path  use this binary instead of building `--bench floor`
#
# Each system in turn is started on 127.0.0.1 (nginx with `nproc` workers, the demo with
# its default of one server thread per CPU) and warmed by one request; then its RSS is read
# (VmRSS of /proc/PID/status; nginx: its master and workers summed), benches/idle.py opens
# N connections to it, one after the other, each sending one small GET (`/proxy/` to the
# demo, `/` to nginx) and reading the whole response, and leaves them idle; after SETTLE
# seconds the RSS is read again, with the connections the server holds (`ss`). The client
# then checks that every connection is still open and closes them (with a reset: no
# TIME_WAIT left behind), and the system is stopped.
# Prints, per system, the RSS before and after and the difference per connection in KiB.
# Everything listens on 127.0.0.1, lives in a temporary directory and is stopped on exit.
set -euo pipefail

N=${N:-8000}
SETTLE=${SETTLE:-1}
TIMEOUT_MS=${TIMEOUT_MS:-600000}
FLOOR=${FLOOR:-0}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

missing=()
for tool in nginx curl ss python3 awk; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [[ -z ${DEMO_BIN:-} || ($FLOOR == 1 && -z ${FLOOR_BIN:-}) ]] && ! command -v cargo >/dev/null 2>&1; then
    missing+=(cargo)
fi
if ((${#missing[@]})); then
    echo "idle.sh: missing: ${missing[*]}" >&2
    echo "On Debian: apt-get install -y nginx curl iproute2 python3 (cargo: rustup.rs)." >&2
    exit 1
fi

# Every server and the client hold N sockets at once.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if (($(ulimit -n) < N + 64)); then
    echo "idle.sh: the open files limit ($(ulimit -n)) is below N + 64 = $((N + 64)); lower N or raise the hard limit" >&2
    exit 1
fi

# shellcheck source=benches/common.sh
source "$root/benches/common.sh"
workspace tip-idle

build() { # bench name → the binary's path
    echo "building the $1 (release)..." >&2
    local bin
    bin=$(cd "$root" && cargo build --quiet --release --bench "$1" --message-format=json |
        sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
    [[ -x $bin ]] || { echo "idle.sh: the $1 did not build" >&2; exit 1; }
    echo "$bin"
}
[[ -n ${DEMO_BIN:-} ]] || DEMO_BIN=$(build server)
if [[ $FLOOR == 1 && -z ${FLOOR_BIN:-} ]]; then
    FLOOR_BIN=$(build floor)
fi

ncpu=$(nproc)
up_port=$(free_port)
nginx_conf "$tmp/upstream" "$ncpu" "
    server {
        listen 127.0.0.1:$up_port;
        location / { default_type text/plain; return 200 'Hello world!'; }
    }" >"$tmp/upstream.conf"
nginx -p "$tmp" -e "$tmp/upstream-error.log" -c "$tmp/upstream.conf" -g 'daemon off;' \
    >"$tmp/upstream.out" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$up_port/"

# The sum of VmRSS over these processes, in KiB.
rss_kb() {
    local pid total=0
    for pid in "$@"; do
        total=$((total + $(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")))
    done
    echo "$total"
}

# Starts system $1; sets `url` (what the client asks) and `procs` (whose RSS counts).
start_system() {
    local sys=$1 port addr bin args
    case $sys in
    nginx)
        port=$(free_port)
        # Room for N clients on one worker, and the upstream connections.
        nginx_conf "$tmp/proxy" "$ncpu" "$(nginx_proxy "$port" "$up_port")" $((N + 1024)) \
            >"$tmp/proxy.conf"
        nginx -p "$tmp" -e "$tmp/proxy-error.log" -c "$tmp/proxy.conf" -g 'daemon off;' \
            >"$tmp/proxy.out" 2>&1 &
        pids+=($!)
        sys_pid=$!
        url="http://127.0.0.1:$port/"
        wait_http "$url"
        mapfile -t procs < <(echo "$sys_pid"; pgrep -P "$sys_pid")
        return
        ;;
    demo | base)
        bin=$DEMO_BIN
        args=${DEMO_ARGS:-}
        if [[ $sys == base ]]; then
            bin=$BASE_BIN
            args=${BASE_ARGS-${DEMO_ARGS:-}}
        fi
        # shellcheck disable=SC2086 # the arguments are split on purpose
        "$bin" --listen 127.0.0.1:0 --unsecured --proxy-url "http://127.0.0.1:$up_port" \
            --header-read-timeout-ms "$TIMEOUT_MS" --idle-timeout-ms "$TIMEOUT_MS" $args \
            >"$tmp/$sys.out" 2>"$tmp/$sys.err" &
        ;;
    pool)
        "$FLOOR_BIN" --mode hyper-pool --listen 127.0.0.1:0 \
            --proxy-url "http://127.0.0.1:$up_port" >"$tmp/$sys.out" 2>"$tmp/$sys.err" &
        ;;
    esac
    pids+=($!)
    sys_pid=$!
    if ! addr=$(listening_addr "$tmp/$sys.out" 60); then
        echo "idle.sh: $sys did not start:" >&2
        cat "$tmp/$sys.err" >&2
        exit 1
    fi
    url="http://$addr/proxy/"
    wait_http "$url"
    procs=("$sys_pid")
}

stop_system() {
    kill "$sys_pid" 2>/dev/null || true
    wait "$sys_pid" 2>/dev/null || true
}

systems=(nginx demo)
[[ -n ${BASE_BIN:-} ]] && systems+=(base)
[[ $FLOOR == 1 ]] && systems+=(pool)

cat <<EOF
machine: $ncpu CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), kernel $(uname -r)
versions: $(nginx -v 2>&1 | cut -d' ' -f3), python $(python3 -c 'import platform; print(platform.python_version())'), demo $DEMO_BIN${BASE_BIN:+, base $BASE_BIN}${FLOOR_BIN:+, floor $FLOOR_BIN}
connections: N=$N per system, each one GET then idle; measured ${SETTLE}s after the last response
EOF
printf '%-6s %6s %6s %12s %12s %10s\n' system conns held "RSS before" "RSS after" "KiB/conn"
declare -A per_conn=()
status=0
for sys in "${systems[@]}"; do
    start_system "$sys"
    sleep 0.2
    before=$(rss_kb "${procs[@]}")
    rm -f "$tmp/go"
    python3 "$root/benches/idle.py" "$url" "$N" "$tmp/go" >"$tmp/client.out" 2>"$tmp/client.err" &
    client=$!
    pids+=("$client")
    for _ in $(seq 1 900); do
        grep -q '^ready' "$tmp/client.out" && break
        kill -0 "$client" 2>/dev/null || break
        sleep 0.1
    done
    if ! grep -q '^ready' "$tmp/client.out"; then
        echo "idle.sh: $sys: the client did not open its connections:" >&2
        cat "$tmp/client.err" >&2
        exit 1
    fi
    sleep "$SETTLE"
    after=$(rss_kb "${procs[@]}")
    # Connections the server side holds: the established sockets on its port.
    port=${url#http://127.0.0.1:}
    port=${port%%/*}
    held=$(ss -Htn state established "( sport = :$port )" | wc -l)
    : >"$tmp/go"
    wait "$client" || true
    read -r _ opened ok <"$tmp/client.out"
    open=$(awk '$1 == "open" { print $2 }' "$tmp/client.out")
    per_conn[$sys]=$(awk -v a="$after" -v b="$before" -v n="$N" 'BEGIN { printf "%.2f", (a - b) / n }')
    printf '%-6s %6d %6d %8.1f MiB %8.1f MiB %10s\n' "$sys" "$opened" "$held" \
        "$(awk -v k="$before" 'BEGIN { print k / 1024 }')" \
        "$(awk -v k="$after" 'BEGIN { print k / 1024 }')" "${per_conn[$sys]}"
    if ((ok != N || ${open:-0} != N || held < N)); then
        echo "idle.sh: $sys: $ok of $N responses were 200, ${open:-0} connections still open at the measure, $held held by the server:" >&2
        cat "$tmp/client.err" >&2
        status=1
    fi
    stop_system
done
echo "conns: connections the client opened; held: established on the server's port at the measure"
awk -v d="${per_conn[demo]}" -v n="${per_conn[nginx]}" 'BEGIN {
    printf "ratio: demo/nginx %.1f (KiB per idle connection)\n", (n > 0 ? d / n : 0) }'
if [[ -n ${per_conn[base]:-} ]]; then
    awk -v d="${per_conn[demo]}" -v b="${per_conn[base]}" 'BEGIN {
        printf "change: demo/base %.2f (%+.2f KiB per idle connection)\n", (b > 0 ? d / b : 0), d - b }'
fi
exit "$status"
