# Shared by benches/load.sh and benches/demo-instructions.sh (sourced, not run): a
# temporary workspace whose processes are stopped and files removed on exit, a free port on
# 127.0.0.1, and a wait for a URL to answer.

# workspace PREFIX: `tmp`, a fresh directory under $TMPDIR, and `pids`, the processes to
# stop; both are cleaned up when the script exits or is interrupted.
workspace() {
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    chmod 755 "$tmp" # nginx workers may run as another user
    pids=()
    trap cleanup EXIT
    trap 'exit 130' INT TERM
}

cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$tmp"
}

# A port nothing listens on at 127.0.0.1.
free_port() {
    local port
    for _ in $(seq 1 200); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    echo "${0##*/}: no free port found" >&2
    return 1
}

# wait_http URL: until it answers 2xx, 10 s at most.
wait_http() {
    for _ in $(seq 1 100); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "${0##*/}: $1 did not answer" >&2
    return 1
}
