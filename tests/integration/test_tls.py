"""A Redis reached over TLS (``rediss://``, as managed services are): a flow is added and run
to the end by workers, on connections that are kept, not made again for every call."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from bullfast import FlowProducer, Worker
from bullfast.embedded import find_redis_server, free_port


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[str]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl to make the test's certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)
    port = free_port()
    proc = subprocess.Popen(
        [find_redis_server(), "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
         "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                pytest.skip(f"this redis-server does not serve TLS: {output.strip().splitlines()[-1:]}")
            try:
                with socket_to(port):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"rediss://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()


def socket_to(port: int) -> Any:
    import socket

    return socket.create_connection(("127.0.0.1", port), timeout=0.2)


async def test_a_flow_runs_over_tls_on_kept_connections(tls_redis: str) -> None:
    connection = {"url": tls_redis, "ssl_cert_reqs": "none"}
    admin = aioredis.from_url(tls_redis, ssl_cert_reqs="none")
    try:
        for _ in range(100):  # the server may still be starting its TLS listener
            try:
                await admin.ping()
                break
            except Exception:
                await asyncio.sleep(0.05)
        before = (await admin.info("stats"))["total_connections_received"]
        async with FlowProducer(connection=connection) as flows:
            node = await flows.add({"name": "sum", "queue_name": "tls-p", "children": [
                {"name": "c", "queue_name": "tls-c", "data": {"i": i}} for i in range(1000)]})
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        async def total(job: Any) -> int:
            return sum((await job.get_children_values()).values())

        children = Worker("tls-c", lambda job: job.data["i"], connection=connection, concurrency=20)
        parent = Worker("tls-p", total, connection=connection)
        parent.on("completed", lambda job, result, *_: done.done() or done.set_result(result))
        try:
            assert await asyncio.wait_for(done, 30) == sum(range(1000))
        finally:
            await children.close()
            await parent.close()
        assert node.job.id
        # ~60 calls of the children's worker: each on a kept connection, none made anew
        made = (await admin.info("stats"))["total_connections_received"] - before
        assert made < 30, made
    finally:
        await admin.aclose()
