#!/usr/bin/env python3
"""How long removing a big flow holds Redis: ``Queue.remove`` of a root, and the slowest call.

    python benchmarks/remove_tree.py [--children 20000] [--shapes reduce,ten,flat] [--reps 2]

Each measurement adds one flow with bullfast's ``FlowProducer`` (children waiting in their wait
list), then times ``Queue.remove`` of its root and reads every call of the removal from Redis's
``SLOWLOG`` (threshold 2 ms; the log keeps the last 128): the slowest call is how long every
other client of that Redis waited at worst. Shapes:

* ``reduce``: root -> one child -> N children (the reduce step under a map-reduce root);
* ``ten``: root -> 10 children -> N/10 children each;
* ``flat``: root -> N children.

Runs on ``$REDIS_URL`` (its SLOWLOG settings are changed, and its keys under the run's prefix
deleted) or a private ``redis-server``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._common import delete_prefix, start_redis  # noqa: E402
from bullfast import FlowProducer, Queue  # noqa: E402


def tree(shape: str, n: int) -> dict[str, Any]:
    def leaves(count: int) -> list[dict[str, Any]]:
        return [{"name": "leaf", "queue_name": "rt-leaf", "data": {"k": k}} for k in range(count)]

    if shape == "reduce":
        children = [{"name": "reduce", "queue_name": "rt-mid", "children": leaves(n)}]
    elif shape == "ten":
        children = [{"name": f"mid{j}", "queue_name": "rt-mid", "children": leaves(n // 10)} for j in range(10)]
    else:
        children = leaves(n)
    return {"name": "root", "queue_name": "rt-root", "children": children}


async def measure(url: str, shape: str, n: int) -> dict[str, float]:
    client = redis.Redis.from_url(url)
    prefix = f"bfbench-rt-{uuid.uuid4().hex[:8]}"
    try:
        async with FlowProducer(connection=url, prefix=prefix) as fp:
            node = await fp.add(tree(shape, n))
        client.config_set("slowlog-log-slower-than", 2000)
        client.slowlog_reset()
        async with Queue("rt-root", connection=url, prefix=prefix) as q:
            started = time.perf_counter()
            assert await q.remove(str(node.job.id))
            seconds = time.perf_counter() - started
        slow = [entry["duration"] / 1000 for entry in client.slowlog_get(128)]
        return {"seconds": seconds, "slowest_ms": max(slow or [0.0]), "slow_calls": len(slow)}
    finally:
        delete_prefix(client, prefix)
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--children", type=int, default=20_000)
    parser.add_argument("--shapes", default="reduce,ten,flat")
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    server, url = start_redis()
    try:
        print(f"{'shape':8} {'N':>8} {'seconds':>8} {'slowest call ms':>16} {'calls > 2 ms':>13}")
        for _ in range(args.reps):
            for shape in args.shapes.split(","):
                r = asyncio.run(measure(url, shape, args.children))
                print(f"{shape:8} {args.children:>8,} {r['seconds']:>8.2f} {r['slowest_ms']:>16.1f} {r['slow_calls']:>13}")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
