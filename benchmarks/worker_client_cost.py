#!/usr/bin/env python3
"""Client CPU per job of the Worker, with Redis taken out of the loop.

    python benchmarks/worker_client_cost.py [--jobs 20000] [--concurrency 50] [--reps 3]
    python benchmarks/worker_client_cost.py --callgrind

The map-reduce benchmark's child worker (an ``async def`` processor returning ``{"n": k}``,
concurrency C) runs as usual, except that its ``finish_jobs`` calls never reach Redis: each is
answered, after one event-loop turn, with what Redis would answer (every ended job ``0``, and
as many new jobs as the call asked for, each the hash of a real child that bullfast's
``FlowProducer`` wrote, on ``$REDIS_URL`` or else a private ``redis-server``, and then
deleted). What is left is the worker's own work
per job: decoding the job (the MessagePack the fetch packs its jobs in, then the hash), its
task, the processor call, the result's JSON, the call's arguments (the socket I/O and the RESP
parsing of a real run are not in it; the canned reply's assembly, a bytes format a job, is).

``--callgrind`` counts the instructions the client executes per job instead of timing it: two
runs under valgrind's callgrind, of ``--jobs`` and 3 x ``--jobs`` jobs, and their difference
divided by the difference in jobs (start-up and imports cancel out). The count repeats to a
few instructions per job from run to run, where CPU times on a shared VM drift by 10 % and
more: the way to compare two versions of the worker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

import redis

from bullfast import FlowProducer, Worker, core
from bullfast._connection import RedisConnection
from bullfast.embedded import RedisServer

# finish_jobs's arguments: EVALSHA sha 1 meta prefix now fetch-next, the fetch (6), metrics,
# 6 a completed job
_HEAD_ARGS = 14
_WANT_ARG = 12
_ENTRY_ARGS = 6


def child_hash(url: str) -> list[bytes]:
    """The hash of a child of a one-child flow, as bullfast's producer writes it."""
    prefix = f"wcc-{uuid.uuid4().hex[:8]}"

    async def add() -> str:
        producer = FlowProducer(connection=url, prefix=prefix)
        try:
            node = await producer.add(
                {
                    "name": "reduce",
                    "queueName": "reduce",
                    "data": {"n": 1},
                    "children": [{"name": "map", "queueName": "map", "data": {"k": 7}}],
                }
            )
        finally:
            await producer.close()
        assert node.children
        return str(node.children[0].job.id)

    child_id = asyncio.run(add())
    client = redis.Redis.from_url(url)
    try:
        fields: dict[bytes, bytes] = client.hgetall(f"{prefix}:map:{child_id}")  # type: ignore[assignment]
        raw = [part for pair in fields.items() for part in pair]
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)
    finally:
        client.close()
    return raw


def msgpack_array_head(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    return b"\xdc" + n.to_bytes(2, "big") if n <= 0xFFFF else b"\xdd" + n.to_bytes(4, "big")


def msgpack_strings(value: Any) -> bytes:
    """Arrays of strings as MessagePack, as the fetch's ``cmsgpack.pack`` replies them."""
    if isinstance(value, bytes):
        n = len(value)
        if n < 32:
            return bytes([0xA0 | n]) + value
        if n <= 0xFF:
            return bytes([0xD9, n]) + value
        return (b"\xda" + n.to_bytes(2, "big") if n <= 0xFFFF else b"\xdb" + n.to_bytes(4, "big")) + value
    return msgpack_array_head(len(value)) + b"".join(msgpack_strings(v) for v in value)


def run(url: str, raw: list[bytes], jobs: int, concurrency: int) -> float:
    """Process ``jobs`` jobs against canned replies; CPU seconds of the processing."""
    if jobs >= 10**8:
        raise SystemExit("--jobs: at most 99,999,999 (the canned ids are 8 digits)")
    taken = 0
    ended = 0
    done = asyncio.Event()
    packed_hash = msgpack_strings(raw)  # the replies pack it as the fetch does, once

    async def canned_call(
        self: RedisConnection, packed: bytes, route_key: str, script: Any, what: str
    ) -> Any:
        nonlocal taken, ended
        parts = packed.split(b"\r\n")  # (no CR LF inside this benchmark's arguments)
        n_args = int(parts[0][1:])
        n_entries = (n_args - _HEAD_ARGS) // _ENTRY_ARGS
        want = int(parts[2 + 2 * _WANT_ARG])
        await asyncio.sleep(0)  # the round trip: the reply comes on a later turn of the loop
        give = min(want, jobs - taken)
        reply: list[Any] = [0] * n_entries + [give, 0, 0, []]
        if give:
            parts = [msgpack_array_head(2 * give)]
            for _ in range(give):
                taken += 1
                parts += [b"\xa8%08d" % taken, packed_hash]  # the id: 8 digits, a fixstr
            reply.append(b"".join(parts))
        ended += n_entries
        if ended >= jobs:
            done.set()
        return reply

    async def main() -> float:
        async def map_job(job: Any) -> Any:
            return {"n": job.data["k"]}

        worker = Worker(
            "map",
            map_job,
            connection=url,
            prefix="wcc",
            concurrency=concurrency,
            autorun=False,
            skip_stalled_check=True,
            skip_lock_renewal=True,
        )
        c0 = time.process_time()
        worker.start()
        await done.wait()
        c1 = time.process_time()
        await worker.close(force=True)
        return c1 - c0

    RedisConnection.call_packed = canned_call  # type: ignore[method-assign]
    return asyncio.run(main())


def callgrind_instructions(args: argparse.Namespace, jobs: int) -> int:
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        __file__,
        "--inner",
        "--jobs",
        str(jobs),
        "--concurrency",
        str(args.concurrency),
        "--url",
        args.url,
    ]
    # a fixed hash seed: set and dict layouts, and so the count, repeat from run to run
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    match = re.search(r"Collected : (\d+)", out.stderr)
    if not match:
        raise SystemExit(f"no callgrind total in:\n{out.stderr[-2000:]}")
    return int(match.group(1))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=20000)
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--callgrind", action="store_true", help="count instructions (valgrind) instead of timing")
    p.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    args = p.parse_args()
    kind = "compiled" if core.IS_COMPILED else "pure-Python"
    if args.inner:
        run(args.url, child_hash(args.url), args.jobs, args.concurrency)
        return 0
    with contextlib.ExitStack() as stack:
        args.url = os.environ.get("REDIS_URL") or stack.enter_context(RedisServer()).url
        if args.callgrind:
            if not shutil.which("valgrind"):
                raise SystemExit("--callgrind needs valgrind (apt install valgrind)")
            small = callgrind_instructions(args, args.jobs)
            large = callgrind_instructions(args, 3 * args.jobs)
            per_job = (large - small) / (2 * args.jobs)
            print(
                f"{kind} core, C = {args.concurrency}: {per_job:,.0f} instructions a job "
                f"(callgrind: {small:,} at {args.jobs:,} jobs, {large:,} at {3 * args.jobs:,})"
            )
            return 0
        raw = child_hash(args.url)
        run(args.url, raw, 2000, args.concurrency)  # warm-up
        seconds = [run(args.url, raw, args.jobs, args.concurrency) for _ in range(args.reps)]
    per_job = [s / args.jobs * 1e6 for s in seconds]
    print(
        f"{kind} core, C = {args.concurrency}, {args.jobs:,} jobs: {statistics.median(per_job):.2f} us of client "
        f"CPU a job (median of {args.reps}; {min(per_job):.2f}-{max(per_job):.2f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
