# Shared by benches/load.sh, benches/demo-instructions.sh and benches/idle.sh (sourced, not
# run): a temporary workspace whose processes are stopped and files removed on exit, a free
# port on 127.0.0.1, waits for a server to listen and for a URL to answer, and nginx's
# configurations (the reference proxy's among them, so that the scripts measure the same
# nginx), with HAProxy's and Caddy's set up like it.

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

# nginx_conf PREFIX WORKERS BODY [CONNECTIONS]: on stdout, an nginx configuration whose pid,
# error log and temporary directories are PREFIX.pid, PREFIX-error.log, PREFIX-body and so
# on; WORKERS worker processes, or `single` for one process without a master (what
# callgrind needs to count the process that serves); BODY goes inside `http { }`;
# CONNECTIONS connections per worker at most (default 4096; the open files limit must allow
# them). Start it with `nginx -p DIR -c FILE -g 'daemon off;'`.
nginx_conf() {
    local prefix=$1 workers=$2 body=$3 connections=${4:-4096} processes
    if [[ $workers == single ]]; then
        processes=$'worker_processes 1;\nmaster_process off;'
    else
        processes="worker_processes $workers;"
    fi
    cat <<CONF
$processes
pid $prefix.pid;
error_log $prefix-error.log warn;
events { worker_connections $connections; }
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

# haproxy_conf PORT UPSTREAM_PORT THREADS: HAProxy configured like nginx_proxy: HTTP on
# 127.0.0.1:PORT, THREADS threads, keep-alive connections to 127.0.0.1:UPSTREAM_PORT reused
# across client connections, X-Forwarded-Proto and -Host set, no log. Start it in the
# foreground with `haproxy -db -f FILE`.
haproxy_conf() {
    cat <<CONF
global
    nbthread $3
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
frontend proxy
    bind 127.0.0.1:$1
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    default_backend upstream
backend upstream
    server upstream 127.0.0.1:$2
CONF
}

# caddy_conf PORT UPSTREAM_PORT: a Caddyfile configured like nginx_proxy: `reverse_proxy` on
# 127.0.0.1:PORT, plain HTTP, no admin endpoint, keep-alive to 127.0.0.1:UPSTREAM_PORT with
# up to 128 idle connections; Caddy sets X-Forwarded-Proto and -Host itself, the
# X-Forwarded-For it would add too is dropped (nginx_proxy sends none), and so is the
# `Accept-Encoding: gzip` Go's client would add. No access log. Start it with
# `GOMAXPROCS=N caddy run --config FILE --adapter caddyfile`, XDG_CONFIG_HOME and
# XDG_DATA_HOME in a temporary directory (Caddy saves its configuration there).
caddy_conf() {
    cat <<CONF
{
    admin off
    auto_https off
    grace_period 1s
}
http://:$1 {
    bind 127.0.0.1
    reverse_proxy 127.0.0.1:$2 {
        header_up -X-Forwarded-For
        transport http {
            compression off
            keepalive 60s
            keepalive_idle_conns 128
            keepalive_idle_conns_per_host 128
        }
    }
}
CONF
}
