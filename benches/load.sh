#!/usr/bin/env bash
# Load test: the proxy server of benches/server.rs, system `demo` (release build, --unsecured, identity signed with RS512 through the
# token cache) against nginx `proxy_pass` with upstream keepalive, HAProxy and Caddy
# configured alike, all in front of the same nginx upstream, and against that upstream served
# directly.
#
# Usage: benches/load.sh            (from the repository root; needs wrk, nginx, curl, cargo;
#                                    haproxy and caddy if installed, see PEERS)
#
# Environment (all optional):
#   ROUNDS=5        rounds per scenario; each round runs direct, nginx, haproxy, caddy, demo
#                   in turn
#   DURATION=3      seconds per wrk run
#   WARMUP=1        seconds of unrecorded wrk before each system's first round (0: none)
#   SCENARIOS="small-32 small-100 1mib-32 auth-32"
#                   auth-32: a second demo, secured (--user), small GETs at 32 connections
#                   as `anon` (no credentials), `basic` (a valid user, HTTP Basic), `bearer`
#                   (a token the demo signed, sent back as a target would) and `flood`
#                   (`basic` again while a second wrk sends wrong passwords over 32 more
#                   connections), in turn within each round; prints basic/anon and
#                   bearer/anon requests/s and the flood's p99 over the quiet basic p99
#   PEERS="haproxy caddy"
#                   the other proxies measured beside nginx, in the same rounds (HAProxy
#                   `mode http` with `http-reuse always`, Caddy `reverse_proxy`: see
#                   benches/common.sh); one that is not installed is skipped with a note on
#                   stderr; PEERS="" measures neither
#   PIN=split       split: wrk on CPU 0, the servers on the other CPUs (a 2-core machine:
#                   CPU 1); none: no pinning, every process on every CPU
#   DEMO_BIN=path   use this binary instead of building `--bench server`
#   DEMO_ARGS=...   extra arguments for the server (the demo's options; and for `base`
#                   unless BASE_ARGS is set)
#   BASE_ARGS=...   extra arguments for `base` instead of DEMO_ARGS: the same binary with
#                   and without an option (e.g. DEMO_ARGS="--redis redis://127.0.0.1:6379",
#                   BASE_ARGS="" to measure what the shared state costs per request;
#                   DEMO_ARGS="--metrics-listen 127.0.0.1:0", BASE_ARGS="" for what
#                   recording metrics into a Prometheus recorder costs)
#   DEMO_UPSTREAM=h1  h1: the demo (and base) speak HTTP/1.1 to the upstream, as nginx does;
#                   h2c: HTTP/2 with prior knowledge (`--upstream-h2c`) to a second listener
#                   of the same nginx upstream (`listen ... http2`), one multiplexed
#                   connection instead of one per request in flight
#   BASE_BIN=path   also measure this build of the server (e.g. an earlier commit's) as
#                   system `base`, in the same rounds: prints demo/base ratios, the
#                   before/after measure of a change
#   FLOOR=1         also measure the floors of `benches/floor.rs` in the same rounds:
#                   `relay` (bytes copied between a client connection and an upstream
#                   connection of its own, no HTTP), `pool` (hyper's server and hyper-util's
#                   legacy pooled client alone), `cache` (hyper's server and a per-thread
#                   cache of hyper-util's composable pool alone, the pieces the crate's
#                   client is built from) and `sticky` (hyper's server, one upstream
#                   connection per client connection, no pool)
#
# Prints, per scenario, requests/s, p50 and p99 (medians over the rounds) for each system
# and the ratios demo/nginx and demo/direct, then (`peers:`) demo/haproxy and demo/caddy;
# each round's figures are printed as they come.
# Everything listens on 127.0.0.1, lives in a temporary directory and is stopped on exit.
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-3}
WARMUP=${WARMUP:-1}
SCENARIOS=${SCENARIOS:-"small-32 small-100 1mib-32 auth-32"}
PIN=${PIN:-split}
DEMO_UPSTREAM=${DEMO_UPSTREAM:-h1}
FLOOR=${FLOOR:-0}
PEERS=${PEERS-haproxy caddy}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# --- what is needed -------------------------------------------------------------------
missing=()
for tool in wrk nginx curl awk sort taskset; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [[ -z ${DEMO_BIN:-} ]] && ! command -v cargo >/dev/null 2>&1; then
    missing+=(cargo)
fi
if ((${#missing[@]})); then
    echo "load.sh: missing: ${missing[*]}" >&2
    echo "On Debian: apt-get install -y wrk nginx curl util-linux (cargo: rustup.rs)." >&2
    echo "Nothing was installed; install them and run again." >&2
    exit 1
fi
# HAProxy and Caddy are measured when installed: skipped with a note otherwise.
peers=()
for peer in $PEERS; do
    case $peer in
    haproxy | caddy) ;;
    *)
        echo "load.sh: PEERS: unknown system $peer (haproxy, caddy)" >&2
        exit 1
        ;;
    esac
    if command -v "$peer" >/dev/null 2>&1; then
        peers+=("$peer")
    else
        echo "load.sh: $peer is not installed: not measuring it (on Debian: apt-get install -y $peer; PEERS chooses the peers, PEERS=\"\" none)" >&2
    fi
done

ncpu=$(nproc)
case $PIN in
split)
    if ((ncpu < 2)); then
        echo "load.sh: PIN=split needs 2 CPUs; use PIN=none" >&2
        exit 1
    fi
    client_cpus=0
    server_cpus=1-$((ncpu - 1))
    server_n=$((ncpu - 1))
    wrk_threads=1
    ;;
none)
    client_cpus=0-$((ncpu - 1))
    server_cpus=0-$((ncpu - 1))
    server_n=$ncpu
    wrk_threads=$ncpu
    ;;
*)
    echo "load.sh: PIN must be split or none" >&2
    exit 1
    ;;
esac

# --- workspace and clean-up -----------------------------------------------------------
# shellcheck source=benches/common.sh
source "$root/benches/common.sh"
workspace tip-load

# --- the demo binary ------------------------------------------------------------------
if [[ -z ${DEMO_BIN:-} ]]; then
    echo "building the server (release)..." >&2
    DEMO_BIN=$(cd "$root" && cargo build --quiet --release --bench server --message-format=json |
        sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
    [[ -x $DEMO_BIN ]] || { echo "load.sh: the server did not build" >&2; exit 1; }
fi
if [[ $FLOOR == 1 ]]; then
    if ! command -v cargo >/dev/null 2>&1; then
        echo "load.sh: FLOOR=1 needs cargo (it builds benches/floor.rs)" >&2
        exit 1
    fi
    echo "building the floors (release)..." >&2
    FLOOR_BIN=$(cd "$root" && cargo build --quiet --release --bench floor --message-format=json |
        sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
    [[ -x $FLOOR_BIN ]] || { echo "load.sh: the floor did not build" >&2; exit 1; }
fi

# --- nginx upstream and nginx proxy -----------------------------------------------------
up_port=$(free_port)
px_port=$(free_port)
up_h2_port=$(free_port)
case $DEMO_UPSTREAM in
h1) demo_upstream=(--proxy-url "http://127.0.0.1:$up_port") ;;
h2c) demo_upstream=(--proxy-url "http://127.0.0.1:$up_h2_port" --upstream-h2c) ;;
*)
    echo "load.sh: DEMO_UPSTREAM must be h1 or h2c" >&2
    exit 1
    ;;
esac
mkdir -p "$tmp/www/files"
head -c $((1024 * 1024)) /dev/zero | tr '\0' 'x' >"$tmp/www/files/1m"
chmod -R a+rX "$tmp/www"

nginx_conf "$tmp/upstream" "$server_n" "
    server {
        listen 127.0.0.1:$up_port;
        listen 127.0.0.1:$up_h2_port http2;
        location / { default_type text/plain; return 200 'Hello world!'; }
        location = /auth { default_type text/plain; return 200 \$http_authorization; }
        location /files/ { root $tmp/www; }
        # The relay floor (FLOOR=1) forwards paths as they come, /proxy included.
        location /proxy/files/ { alias $tmp/www/files/; }
    }" >"$tmp/upstream.conf"

nginx_conf "$tmp/proxy" "$server_n" "$(nginx_proxy "$px_port" "$up_port")" >"$tmp/proxy.conf"

declare -A master=()
start_nginx() { # name
    taskset -c "$server_cpus" nginx -p "$tmp" -e "$tmp/$1-error.log" -c "$tmp/$1.conf" \
        -g 'daemon off;' >"$tmp/$1.out" 2>&1 &
    pids+=($!)
    master[$1]=$!
}
start_nginx upstream
start_nginx proxy
wait_http "http://127.0.0.1:$up_port/"
wait_http "http://127.0.0.1:$px_port/"

# --- HAProxy and Caddy, configured like the nginx proxy -----------------------------------
declare -A peer_port=() peer_pid=()
for peer in "${peers[@]}"; do
    peer_port[$peer]=$(free_port)
    case $peer in
    haproxy)
        haproxy_conf "${peer_port[$peer]}" "$up_port" "$server_n" >"$tmp/haproxy.cfg"
        taskset -c "$server_cpus" haproxy -db -f "$tmp/haproxy.cfg" >"$tmp/haproxy.out" 2>&1 &
        ;;
    caddy)
        caddy_conf "${peer_port[$peer]}" "$up_port" >"$tmp/Caddyfile"
        mkdir -p "$tmp/caddy-config" "$tmp/caddy-data"
        GOMAXPROCS=$server_n XDG_CONFIG_HOME=$tmp/caddy-config XDG_DATA_HOME=$tmp/caddy-data \
            taskset -c "$server_cpus" caddy run --config "$tmp/Caddyfile" --adapter caddyfile \
            >"$tmp/caddy.out" 2>&1 &
        ;;
    esac
    pids+=($!)
    peer_pid[$peer]=$!
    if ! wait_http "http://127.0.0.1:${peer_port[$peer]}/"; then
        echo "load.sh: $peer did not start:" >&2
        cat "$tmp/$peer.out" >&2
        exit 1
    fi
done

# --- the demo (and the baseline build, if any) --------------------------------------------
declare -A demo_pid=() demo_addr=()
# Records the process just started in the background as system `name`, and its address
# once it prints `listening on http://ADDR`.
await_listening() { # name, what it is (for the error)
    pids+=($!)
    demo_pid[$1]=$!
    local addr
    if ! addr=$(listening_addr "$tmp/$1.out" 10); then
        echo "load.sh: $2 did not start:" >&2
        cat "$tmp/$1.err" >&2
        exit 1
    fi
    demo_addr[$1]=$addr
}
start_demo() { # name, binary, extra arguments
    TOKIO_WORKER_THREADS=$server_n taskset -c "$server_cpus" "$2" \
        --listen 127.0.0.1:0 --unsecured "${demo_upstream[@]}" \
        $3 >"$tmp/$1.out" 2>"$tmp/$1.err" &
    await_listening "$1" "$2"
    local addr=${demo_addr[$1]}
    wait_http "http://$addr/proxy/"
    # The identity really is signed: the upstream echoes the Authorization it received.
    auth=$(curl -fsS "http://$addr/proxy/auth")
    if [[ $auth != "Bearer ey"* ]]; then
        echo "load.sh: $2 did not send a signed identity (got: ${auth:0:40})" >&2
        exit 1
    fi
}
start_demo demo "$DEMO_BIN" "${DEMO_ARGS:-}"
# The secured demo of `auth-32`: one Basic user; its token comes back from the upstream's
# /auth, which echoes the Authorization the demo sent.
auth_user=bench
auth_password=bench-password-1
if [[ " $SCENARIOS " == *" auth-32 "* ]]; then
    TOKIO_WORKER_THREADS=$server_n taskset -c "$server_cpus" "$DEMO_BIN" \
        --listen 127.0.0.1:0 --user "$auth_user:$auth_password:ROLE_USER" "${demo_upstream[@]}" \
        ${DEMO_ARGS:-} >"$tmp/authn.out" 2>"$tmp/authn.err" &
    await_listening authn "$DEMO_BIN (secured)"
    wait_http "http://${demo_addr[authn]}/proxy/"
fi
alg=$(printf '%s' "${auth#Bearer }" | cut -d. -f1 | tr '_-' '/+' | base64 -d 2>/dev/null || true)
[[ -n ${BASE_BIN:-} ]] && start_demo base "$BASE_BIN" "${BASE_ARGS-${DEMO_ARGS:-}}"
floors=()
start_floor() { # name, mode
    TOKIO_WORKER_THREADS=$server_n taskset -c "$server_cpus" "$FLOOR_BIN" --mode "$2" \
        --listen 127.0.0.1:0 --proxy-url "http://127.0.0.1:$up_port" >"$tmp/$1.out" 2>"$tmp/$1.err" &
    await_listening "$1" "the $2 floor"
    floors+=("$1")
}
if [[ $FLOOR == 1 ]]; then
    start_floor relay relay
    start_floor pool hyper-pool
    start_floor cache hyper-cache
    start_floor sticky hyper-sticky
fi
demo_urls=()
for sys in demo ${BASE_BIN:+base} "${floors[@]}"; do
    demo_urls+=("http://${demo_addr[$sys]}/proxy")
done
peer_urls=()
for peer in "${peers[@]}"; do
    peer_urls+=("http://127.0.0.1:${peer_port[$peer]}")
done
for url in "http://127.0.0.1:$up_port" "http://127.0.0.1:$px_port" "${peer_urls[@]}" "${demo_urls[@]}"; do
    body=$(curl -fsS "$url/")
    [[ $body == "Hello world!" ]] || { echo "load.sh: $url/ answered '$body'" >&2; exit 1; }
    size=$(curl -fsS -o /dev/null -w '%{size_download}' "$url/files/1m")
    [[ $size == 1048576 ]] || { echo "load.sh: $url/files/1m gave $size bytes" >&2; exit 1; }
done

# --- measuring ----------------------------------------------------------------------------
to_ms() { # wrk latency such as 812.00us, 1.23ms, 1.02s
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n = n / 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n = n * 1000
        printf "%.3f", n }'
}
to_mib() { # wrk transfer such as 1.02GB, 512.3MB
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /GB$/) n = n * 1024; else if (v ~ /MB$/) n = n; else if (v ~ /KB$/) n = n / 1024
        else if (v ~ /B$/) n = n / 1048576
        printf "%.1f", n }'
}
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# CPU time (user + system, in clock ticks) of these processes and their threads.
cpu_ticks() {
    local pid total=0
    for pid in "$@"; do
        total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
    done
    echo "$total"
}
hz=$(getconf CLK_TCK)

run_wrk() { # conns, seconds, url, server pids[, Authorization] → "rps p50 p99 mib errors cpu_us_per_request"
    local out rps p50 p99 mib errs c0 c1 n auth=()
    [[ -n ${5:-} ]] && auth=(-H "Authorization: $5")
    c0=$(cpu_ticks $4)
    out=$(taskset -c "$client_cpus" wrk -t"$wrk_threads" -c"$1" -d"$2"s --latency "${auth[@]}" "$3")
    c1=$(cpu_ticks $4)
    rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
    p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
    p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
    mib=$(to_mib "$(awk '/^Transfer\/sec:/ { print $2 }' <<<"$out")")
    errs=$(awk '/Non-2xx|Socket errors/ { gsub(/[^0-9 ]/, " "); for (i = 1; i <= NF; i++) s += $i } END { print s + 0 }' <<<"$out")
    n=$(awk '/ requests in / { print $1 }' <<<"$out")
    cpu=$(awk -v t=$((c1 - c0)) -v hz="$hz" -v n="$n" 'BEGIN { printf "%.1f", (n > 0 ? t * 1e6 / hz / n : 0) }')
    echo "$rps $p50 $p99 $mib $errs $cpu"
}

# Whose CPU time is counted per request: the upstream's workers for `direct`, the proxy
# nginx's workers for `nginx`, the HAProxy and Caddy processes (all their threads) for
# `haproxy` and `caddy`, the demo process (all its threads) for `demo`.
declare -A cpu_pids=(
    [direct]="$(pgrep -P "${master[upstream]}" | tr '\n' ' ')"
    [nginx]="$(pgrep -P "${master[proxy]}" | tr '\n' ' ')"
    [demo]="${demo_pid[demo]}"
)
systems=(direct nginx)
for peer in "${peers[@]}"; do
    cpu_pids[$peer]=${peer_pid[$peer]}
    systems+=("$peer")
done
systems+=(demo)
if [[ -n ${BASE_BIN:-} ]]; then
    cpu_pids[base]=${demo_pid[base]}
    systems+=(base)
fi
for sys in "${floors[@]}"; do
    cpu_pids[$sys]=${demo_pid[$sys]}
    systems+=("$sys")
done

peer_versions=
for peer in "${peers[@]}"; do
    case $peer in
    haproxy) peer_versions+=", haproxy $(haproxy -v | head -1 | cut -d' ' -f3)" ;;
    caddy) peer_versions+=", caddy $(caddy version | cut -d' ' -f1)" ;;
    esac
done
servers="nginx x2"
for peer in "${peers[@]}"; do
    servers+=", $peer"
done
servers+=" and the demo"
cat <<EOF
machine: $ncpu CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), kernel $(uname -r)
versions: $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), $(nginx -v 2>&1 | cut -d' ' -f3), demo $DEMO_BIN${BASE_BIN:+, base $BASE_BIN}$peer_versions
token header: $alg
demo to upstream: $DEMO_UPSTREAM
pinning: PIN=$PIN (wrk -t$wrk_threads on CPUs $client_cpus; $servers on CPUs $server_cpus, $server_n worker(s) each)
rounds: $ROUNDS x ${DURATION}s per system, systems in turn within each round; medians below
cpu us/req: CPU time (user + system) per request of the system under test: the upstream for
  direct, the proxy's workers for nginx, its process for haproxy and caddy, the demo process for
  demo (never wrk's)
EOF

# auth-32: anonymous, Basic and Bearer callers of the secured demo, and Basic under a flood
# of wrong passwords, in the same rounds.
auth_scenario() {
    local url="http://${demo_addr[authn]}/proxy/" pid=${demo_pid[authn]} basic bearer wrong
    basic="Basic $(printf '%s:%s' "$auth_user" "$auth_password" | base64 -w0)"
    wrong="Basic $(printf '%s:%s' "$auth_user" wrong-password | base64 -w0)"
    # A fresh token (5 minutes), as a target receives it.
    bearer=$(curl -fsS -H "Authorization: $basic" "http://${demo_addr[authn]}/proxy/auth")
    [[ $bearer == "Bearer ey"* ]] || { echo "load.sh: no token from the secured demo" >&2; exit 1; }
    for auth in "$basic" "$bearer"; do
        code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: $auth" "$url")
        [[ $code == 200 ]] || { echo "load.sh: the secured demo answered $code" >&2; exit 1; }
    done
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: $wrong" "$url")
    [[ $code == 401 ]] || { echo "load.sh: a wrong password got $code" >&2; exit 1; }
    declare -A auth_of=([anon]="" [basic]="$basic" [bearer]="$bearer" [flood]="$basic")
    local systems=(anon basic bearer flood) sys round flooder
    echo
    echo "== auth-32: GET /, 32 connections, secured demo: anonymous, Basic, Bearer; Basic under a 32-connection wrong-password flood =="
    for sys in anon basic bearer; do
        ((WARMUP > 0)) || break
        run_wrk 32 "$WARMUP" "$url" "$pid" "${auth_of[$sys]}" >/dev/null
    done
    : >"$tmp/auth-32.txt"
    for round in $(seq 1 "$ROUNDS"); do
        for sys in "${systems[@]}"; do
            flooder=
            if [[ $sys == flood ]]; then
                taskset -c "$client_cpus" wrk -t1 -c32 -d$((DURATION + 2))s -H "Authorization: $wrong" \
                    "$url" >"$tmp/flood-$round.txt" 2>&1 &
                flooder=$!
                sleep 1
            fi
            read -r rps p50 p99 mib errs cpu < <(run_wrk 32 "$DURATION" "$url" "$pid" "${auth_of[$sys]}")
            [[ -n $flooder ]] && wait "$flooder"
            echo "$sys $rps $p50 $p99 $mib $errs $cpu" >>"$tmp/auth-32.txt"
            printf '  round %d %-6s %9.0f req/s  p50 %7.3f ms  p99 %7.3f ms  cpu %5.1f us/req  errors %s\n' \
                "$round" "$sys" "$rps" "$p50" "$p99" "$cpu" "$errs"
            if [[ -n $flooder ]]; then
                printf '           flood: %s requests, answered %s\n' \
                    "$(awk '/ requests in / { print $1 }' "$tmp/flood-$round.txt")" \
                    "$(awk '/Non-2xx/ { print $NF " non-2xx (401/429)" }' "$tmp/flood-$round.txt")"
            fi
        done
    done
    printf '  %-8s %10s %9s %9s %11s %7s\n' system "req/s" "p50 ms" "p99 ms" "cpu us/req" errors
    declare -A med_rps=() med_p99=()
    for sys in "${systems[@]}"; do
        col() { awk -v s="$sys" -v c="$1" '$1 == s { print $c }' "$tmp/auth-32.txt" | median; }
        med_rps[$sys]=$(col 2)
        med_p99[$sys]=$(col 4)
        errs=$(awk -v s="$sys" '$1 == s { e += $6 } END { print e + 0 }' "$tmp/auth-32.txt")
        printf '  %-8s %10.0f %9.3f %9.3f %11.1f %7s\n' "$sys" "${med_rps[$sys]}" "$(col 3)" \
            "${med_p99[$sys]}" "$(col 7)" "$errs"
    done
    awk -v a="${med_rps[anon]}" -v b="${med_rps[basic]}" -v t="${med_rps[bearer]}" \
        -v bp="${med_p99[basic]}" -v fp="${med_p99[flood]}" 'BEGIN {
        printf "  ratios: basic/anon %.2f  bearer/anon %.2f  p99 flood/basic %.2f\n", b / a, t / a, fp / bp }'
}

for scenario in $SCENARIOS; do
    if [[ $scenario == auth-32 ]]; then
        auth_scenario
        continue
    fi
    case $scenario in
    small-32) conns=32 path=/ ;;
    small-100) conns=100 path=/ ;;
    1mib-32) conns=32 path=/files/1m ;;
    *) echo "load.sh: unknown scenario $scenario" >&2; exit 1 ;;
    esac
    declare -A url=(
        [direct]="http://127.0.0.1:$up_port$path"
        [nginx]="http://127.0.0.1:$px_port$path"
        [demo]="http://${demo_addr[demo]}/proxy$path"
        [base]="http://${demo_addr[base]:-}/proxy$path"
    )
    for sys in "${floors[@]}"; do
        url[$sys]="http://${demo_addr[$sys]}/proxy$path"
    done
    for peer in "${peers[@]}"; do
        url[$peer]="http://127.0.0.1:${peer_port[$peer]}$path"
    done
    echo
    echo "== $scenario: GET $path, $conns connections =="
    for sys in "${systems[@]}"; do
        ((WARMUP > 0)) || break
        run_wrk "$conns" "$WARMUP" "${url[$sys]}" "${cpu_pids[$sys]}" >/dev/null
    done
    : >"$tmp/$scenario.txt"
    for round in $(seq 1 "$ROUNDS"); do
        for sys in "${systems[@]}"; do
            read -r rps p50 p99 mib errs cpu < <(run_wrk "$conns" "$DURATION" "${url[$sys]}" "${cpu_pids[$sys]}")
            echo "$sys $rps $p50 $p99 $mib $errs $cpu" >>"$tmp/$scenario.txt"
            printf '  round %d %-6s %9.0f req/s  p50 %7.3f ms  p99 %7.3f ms  %7.1f MiB/s  cpu %5.1f us/req  errors %s\n' \
                "$round" "$sys" "$rps" "$p50" "$p99" "$mib" "$cpu" "$errs"
        done
    done
    printf '  %-8s %10s %9s %9s %9s %11s %7s\n' system "req/s" "p50 ms" "p99 ms" "MiB/s" "cpu us/req" errors
    declare -A med_rps=() med_p99=() med_cpu=()
    for sys in "${systems[@]}"; do
        col() { awk -v s="$sys" -v c="$1" '$1 == s { print $c }' "$tmp/$scenario.txt" | median; }
        med_rps[$sys]=$(col 2)
        med_p99[$sys]=$(col 4)
        med_cpu[$sys]=$(col 7)
        errs=$(awk -v s="$sys" '$1 == s { e += $6 } END { print e + 0 }' "$tmp/$scenario.txt")
        printf '  %-8s %10.0f %9.3f %9.3f %9.1f %11.1f %7s\n' "$sys" "${med_rps[$sys]}" "$(col 3)" \
            "${med_p99[$sys]}" "$(col 5)" "${med_cpu[$sys]}" "$errs"
    done
    awk -v d="${med_rps[demo]}" -v n="${med_rps[nginx]}" -v r="${med_rps[direct]}" \
        -v dp="${med_p99[demo]}" -v np="${med_p99[nginx]}" \
        -v dc="${med_cpu[demo]}" -v nc="${med_cpu[nginx]}" 'BEGIN {
        printf "  ratios: demo/nginx %.2f  demo/direct %.2f  nginx/direct %.2f  p99 demo/nginx %.2f  cpu/req demo/nginx %.2f\n",
            d / n, d / r, n / r, dp / np, (nc > 0 ? dc / nc : 0) }'
    if ((${#peers[@]})); then
        # req/s, p99 and CPU per request of the demo over each peer's, laid out like `ratios:`.
        line="  peers:"
        for what in "" "p99 " "cpu/req "; do
            for peer in "${peers[@]}"; do
                case $what in
                "") d=${med_rps[demo]} p=${med_rps[$peer]} ;;
                "p99 ") d=${med_p99[demo]} p=${med_p99[$peer]} ;;
                *) d=${med_cpu[demo]} p=${med_cpu[$peer]} ;;
                esac
                line+=$(awk -v d="$d" -v p="$p" -v w="$what" -v s="$peer" \
                    'BEGIN { printf " %sdemo/%s %.2f ", w, s, (p > 0 ? d / p : 0) }')
            done
        done
        echo "${line% }"
    fi
    if [[ -n ${BASE_BIN:-} ]]; then
        awk -v d="${med_rps[demo]}" -v b="${med_rps[base]}" -v dp="${med_p99[demo]}" \
            -v bp="${med_p99[base]}" -v dc="${med_cpu[demo]}" -v bc="${med_cpu[base]}" 'BEGIN {
            printf "  change: demo/base req/s %.2f  p99 %.2f  cpu/req %.2f\n", d / b, dp / bp, (bc > 0 ? dc / bc : 0) }'
    fi
    if ((${#floors[@]})); then
        line="  floors/nginx req/s:"
        for sys in "${floors[@]}"; do
            line+=$(awk -v f="${med_rps[$sys]}" -v n="${med_rps[nginx]}" -v s="$sys" \
                'BEGIN { printf "  %s %.2f", s, f / n }')
        done
        echo "$line"
    fi
done
