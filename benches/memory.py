#!/usr/bin/env python3
"""The echo target and the client of benches/memory.sh (standard library only).

    memory.py echo                      # loopback echo target; prints its port, serves forever
    memory.py client URL BYTES [RATE]   # streams BYTES up through URL, reads the echo back

The echo target answers every request with `200` and the request body streamed back as
it arrives, with the request's Content-Length: nothing is buffered beyond one read.

The client sends `POST URL` with `Content-Length: BYTES` and a body of pseudo-random
bytes, writing and reading at the same time. With RATE (bytes per second) it reads the
response slowly, a slow client pressing on the proxy's buffers. It checks the byte count
and a checksum of what comes back, and prints one line of figures.
"""

import hashlib
import socket
import sys
import threading
import time

CHUNK = 256 * 1024


def pattern(i):
    """Deterministic 256 KiB block number i (cheap to regenerate on both sides)."""
    seed = hashlib.sha256(i.to_bytes(8, "little")).digest()
    return (seed * (CHUNK // len(seed)))[:CHUNK]


def read_head(sock):
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            return None, b""
        buf += data
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head.decode("latin-1"), rest


def content_length(head):
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            return int(value.strip())
    return 0


def serve_echo(conn):
    try:
        while True:
            head, rest = read_head(conn)
            if head is None:
                return
            length = content_length(head)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                + b"Content-Length: %d\r\n\r\n" % length
            )
            left = length
            if rest:
                conn.sendall(rest[:left])
                left -= len(rest[:left])
            while left > 0:
                data = conn.recv(min(left, CHUNK))
                if not data:
                    return
                conn.sendall(data)
                left -= len(data)
    except OSError:
        pass
    finally:
        conn.close()


def echo():
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    print(srv.getsockname()[1], flush=True)
    while True:
        conn, _ = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=serve_echo, args=(conn,), daemon=True).start()


def client(url, total, rate=None):
    assert url.startswith("http://")
    hostport, _, path = url[len("http://"):].partition("/")
    host, _, port = hostport.partition(":")
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sent_hash = hashlib.sha256()
    errors = []

    def writer():
        try:
            sock.sendall(
                b"POST /%s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\n"
                % (path.encode(), hostport.encode())
                + b"Content-Length: %d\r\n\r\n" % total
            )
            left, i = total, 0
            while left > 0:
                block = pattern(i)[: min(CHUNK, left)]
                sent_hash.update(block)
                sock.sendall(block)
                left -= len(block)
                i += 1
        except OSError as e:
            errors.append(e)

    started = time.monotonic()
    t = threading.Thread(target=writer, daemon=True)
    t.start()
    head, rest = read_head(sock)
    if head is None or not head.startswith("HTTP/1.1 200"):
        sys.exit("unexpected response head: %r" % head)
    length = content_length(head)
    got_hash = hashlib.sha256()
    got_hash.update(rest)
    received = len(rest)
    while received < length:
        data = sock.recv(CHUNK)
        if not data:
            break
        got_hash.update(data)
        received += len(data)
        if rate:
            time.sleep(len(data) / rate)
    t.join()
    elapsed = time.monotonic() - started
    sock.close()
    if errors or received != total or got_hash.digest() != sent_hash.digest():
        sys.exit(
            "FAILED: sent %d, announced %d, received %d, same bytes: %s, errors: %s"
            % (total, length, received, got_hash.digest() == sent_hash.digest(), errors)
        )
    print(
        "streamed %d MiB up and %d MiB back in %.1f s (%.0f MiB/s each way), bytes identical"
        % (total >> 20, received >> 20, elapsed, (total >> 20) / elapsed)
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["echo"]:
        echo()
    elif sys.argv[1:2] == ["client"]:
        client(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]) if len(sys.argv) > 4 else None)
    else:
        sys.exit(__doc__)
