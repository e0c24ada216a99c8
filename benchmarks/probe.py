#!/usr/bin/env python3
"""The stall probe of ``bullfast bench``: a separate client that PINGs Redis all along.

    python benchmarks/probe.py --url redis://127.0.0.1:6379 --interval-ms 2 --out FILE

Prints ``READY`` once connected, then sends a ``PING`` every ``--interval-ms`` on its own
connection and times each round trip with ``CLOCK_MONOTONIC`` (the clock of the runners'
timestamps). On SIGTERM it writes the (sent_ns, round_trip_ns) pairs to ``FILE`` (int64
native order) and exits. A round trip longer than the others means Redis was busy with
someone else's command for that long: the longest one during a measurement is the stall
that every other client of that Redis would have seen. Standard library only.
"""

from __future__ import annotations

import argparse
import array
import signal
import socket
import sys
import time
from typing import Any
from urllib.parse import unquote, urlsplit


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--interval-ms", type=float, default=2.0)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    url = urlsplit(args.url)
    if url.scheme != "redis":
        print(f"probe: only redis:// URLs, not {url.scheme}://", file=sys.stderr)
        return 2
    sock = socket.create_connection((url.hostname or "127.0.0.1", url.port or 6379))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def command(*parts: str) -> bytes:
        out = f"*{len(parts)}\r\n".encode()
        for part in parts:
            b = part.encode()
            out += b"$%d\r\n%s\r\n" % (len(b), b)
        sock.sendall(out)
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(256)
            if not chunk:
                raise ConnectionError("Redis closed the probe's connection")
            reply += chunk
        return reply

    if url.password:
        auth = (unquote(url.username), unquote(url.password)) if url.username else (unquote(url.password),)
        if not command("AUTH", *auth).startswith(b"+OK"):
            print("probe: AUTH failed", file=sys.stderr)
            return 2
    command("CLIENT", "SETNAME", "bullfast-bench-probe")

    stop = False

    def on_term(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    ping = b"*1\r\n$4\r\nPING\r\n"
    samples = array.array("q")
    interval = int(args.interval_ms * 1e6)
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    due = time.monotonic_ns()
    while not stop:
        t0 = time.monotonic_ns()
        sock.sendall(ping)
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(64)
            if not chunk:
                raise ConnectionError("Redis closed the probe's connection")
            reply += chunk
        t1 = time.monotonic_ns()
        samples.append(t0)
        samples.append(t1 - t0)
        due += interval
        if due > t1:
            time.sleep((due - t1) / 1e9)
        else:
            due = t1  # after a long wait: no burst of catch-up pings
    with open(args.out, "wb") as f:
        samples.tofile(f)
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
