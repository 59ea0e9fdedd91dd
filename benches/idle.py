#!/usr/bin/env python3
"""The client of benches/idle.sh (standard library only): idle keep-alive connections.

    idle.py URL N GO_FILE

Opens N connections to URL's host and port, one after the other, and on each sends one
`GET PATH HTTP/1.1` (keep-alive, the HTTP/1.1 default) and reads its whole response
(`Content-Length` or chunked). Then it leaves them all open and idle, prints
`ready N OK_COUNT` on stdout and waits (90 s at most) until GO_FILE exists: the script
measures the server meanwhile. Then it checks which connections are still open (none may
be readable: an idle connection that the server closed reads as end of file), prints
`open M`, closes them all and exits, with status 1 unless every response was `200` and
every connection was still open. It closes them with a reset (`SO_LINGER` 0), so as to
leave no socket in TIME_WAIT: N of them would hold N local ports for a minute, and no
server could listen on those meanwhile.
"""

import os
import resource
import select
import socket
import struct
import sys
import time


def read_response(sock, buf):
    """Reads one response from sock (buf: bytes already received); returns (status, rest)."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed before the response head")
        buf += data
    head, buf = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        length = int(headers["content-length"])
        while len(buf) < length:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("closed within the body")
            buf += data
        return status, buf[length:]
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            while b"\r\n" not in buf:
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("closed within the body")
                buf += data
            size_line, buf = buf.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            # The chunk, its CRLF; after the last (empty) chunk, no trailers expected.
            while len(buf) < size + 2:
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("closed within the body")
                buf += data
            buf = buf[size + 2:]
            if size == 0:
                return status, buf
    raise ValueError("a response without Content-Length nor chunked body")


def main(url, n, go_file):
    assert url.startswith("http://")
    hostport, _, path = url[len("http://"):].partition("/")
    host, _, port = hostport.partition(":")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 64), hard))
    request = b"GET /%s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path.encode(), hostport.encode())
    socks, statuses = [], {}
    started = time.monotonic()
    for _ in range(n):
        sock = socket.create_connection((host, int(port)), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.sendall(request)
            status, extra = read_response(sock, b"")
            if extra:
                raise ValueError("%d unexpected bytes after the response" % len(extra))
        except (OSError, ValueError) as e:
            status = str(e)
        statuses[status] = statuses.get(status, 0) + 1
        socks.append(sock)
    ok = statuses.get(200, 0)
    print("ready %d %d" % (len(socks), ok), flush=True)
    print(
        "idle.py: %d connections opened in %.1f s, responses: %s"
        % (len(socks), time.monotonic() - started,
           ", ".join("%s x%d" % (k, v) for k, v in sorted(statuses.items(), key=str))),
        file=sys.stderr,
    )
    deadline = time.monotonic() + 90
    while not os.path.exists(go_file):
        if time.monotonic() > deadline:
            sys.exit("idle.py: nobody measured within 90 s")
        time.sleep(0.05)
    # Still open: nothing to read (neither data nor end of file) and no error.
    poller = select.poll()
    for sock in socks:
        poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
    gone = len(poller.poll(0))
    print("open %d" % (len(socks) - gone), flush=True)
    linger = struct.pack("ii", 1, 0)
    for sock in socks:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        sock.close()
    if ok != n or gone:
        sys.exit(1)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
