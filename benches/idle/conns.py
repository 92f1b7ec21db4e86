#!/usr/bin/env python3
"""Opens N mutual-TLS connections to a proxy, sends one keep-alive GET on each, and holds
them open without traffic: the "idle mTLS connection" of issue 4's memory goal.

    conns.py HOST PORT N CA CERT KEY READY_FILE RELEASE_FILE

Prints one line per phase to stderr. After every connection has its answer it writes
READY_FILE and waits (at most 120 s) until RELEASE_FILE exists, then closes everything.
Exits non-zero if any connection fails, so a figure never comes from fewer connections than
asked for.
"""

import os
import socket
import ssl
import sys
import time

REQUEST = b"GET /api/v1/items/42 HTTP/1.1\r\nHost: bench\r\nConnection: keep-alive\r\n\r\n"


def read_response(tls):
    """Reads one small response (headers plus Content-Length body); returns the status."""
    data = b""
    deadline = time.monotonic() + 10
    while b"\r\n\r\n" not in data:
        if time.monotonic() > deadline:
            raise TimeoutError("no response head within 10 s")
        chunk = tls.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the response head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = tls.recv(4096)
        if not chunk:
            raise ConnectionError("closed inside the response body")
        body += chunk
    return status


def main():
    host, port, count, ca, cert, key, ready, release = sys.argv[1:9]
    port, count = int(port), int(count)
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx.check_hostname = False
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    open_conns = []
    started = time.monotonic()
    for i in range(count):
        raw = socket.create_connection((host, port), timeout=10)
        tls = ctx.wrap_socket(raw)
        tls.sendall(REQUEST)
        status = read_response(tls)
        if status != 200:
            raise SystemExit(f"connection {i}: status {status}")
        open_conns.append(tls)
    print(f"{count} connections open and idle after {time.monotonic() - started:.1f} s",
          file=sys.stderr)
    with open(ready, "w") as f:
        f.write("ready\n")
    for _ in range(1200):
        if os.path.exists(release):
            break
        time.sleep(0.1)
    for tls in open_conns:
        tls.close()


if __name__ == "__main__":
    main()
