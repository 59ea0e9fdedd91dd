# Shared by benches/load.sh and benches/demo-instructions.sh (sourced, not run): a
# temporary workspace whose processes are stopped and files removed on exit, a free port on
# 127.0.0.1, waits for a server to listen and for a URL to answer, and nginx's
# configurations (the reference proxy's among them, so that both scripts measure the same
# nginx).

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

# listening_addr FILE SECONDS: the ADDR of a server's first line `listening on http://ADDR`
# in FILE, polled every 0.1 s for SECONDS at most; fails if it never appears.
listening_addr() {
    local addr
    for _ in $(seq 1 $(($2 * 10))); do
        addr=$(sed -n '1s|^listening on http://||p' "$1")
        if [[ -n $addr ]]; then
            echo "$addr"
            return 0
        fi
        sleep 0.1
    done
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

# nginx_conf PREFIX WORKERS BODY: on stdout, an nginx configuration whose pid, error log and
# temporary directories are PREFIX.pid, PREFIX-error.log, PREFIX-body and so on; WORKERS
# worker processes, or `single` for one process without a master (what callgrind needs to
# count the process that serves); BODY goes inside `http { }`. Start it with
# `nginx -p DIR -c FILE -g 'daemon off;'`.
nginx_conf() {
    local prefix=$1 workers=$2 body=$3 processes
    if [[ $workers == single ]]; then
        processes=$'worker_processes 1;\nmaster_process off;'
    else
        processes="worker_processes $workers;"
    fi
    cat <<CONF
$processes
pid $prefix.pid;
error_log $prefix-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $prefix-body;
    proxy_temp_path $prefix-proxy;
    fastcgi_temp_path $prefix-fastcgi;
    uwsgi_temp_path $prefix-uwsgi;
    scgi_temp_path $prefix-scgi;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
$body
}
CONF
}

# nginx_proxy PORT UPSTREAM_PORT: the body of the reference proxy's configuration, nginx
# `proxy_pass` on 127.0.0.1:PORT with keepalive to 127.0.0.1:UPSTREAM_PORT, setting
# X-Forwarded-Proto and -Host as the demo does.
nginx_proxy() {
    cat <<CONF
    upstream backend {
        server 127.0.0.1:$2;
        keepalive 128;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$1;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection '';
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$http_host;
            # Buffers that hold a 1 MiB response in memory: twice the throughput of the
            # defaults here (which spill large responses to a temporary file).
            proxy_buffers 32 64k;
            proxy_buffer_size 64k;
            proxy_busy_buffers_size 128k;
            proxy_max_temp_file_size 0;
        }
    }
CONF
}
