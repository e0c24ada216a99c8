"""removeOnComplete trimming: bullfast's worker leaves the set Node's worker leaves.

The same three situations are set up twice, once for a Node ``bullmq`` Worker and once for a
bullfast Worker: jobs that finished long ago (scores set by hand) and then one new job whose
``removeOnComplete`` trims them. What is left in ``completed`` (and which job hashes still
exist) must be the same, job for job.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis

from bullfast import Queue, Worker

from .node import run_node

HOUR_MS = 3_600_000
# name -> (the trimming option of the new job, the scores of the old jobs relative to now)
SCENARIOS: dict[str, tuple[dict[str, Any], list[int]]] = {
    # of four expired jobs, `limit` 2 removes two: which two?
    "age-limit": ({"age": 60, "limit": 2}, [-HOUR_MS, -HOUR_MS + 1, -HOUR_MS + 2, -HOUR_MS + 3]),
    # age 0: everything finished up to now, the new job included
    "age-zero": ({"age": 0}, [-HOUR_MS]),
    # a fraction of a second: the new job, finished just now, is kept (cut to 0, it went too)
    "age-fraction": ({"age": 0.9}, [-HOUR_MS]),
    # count 1 while an old job carries a later score (a clock step back): who is kept?
    "count-rank": ({"count": 1}, [HOUR_MS]),
}


async def _prepare(client: aioredis.Redis, redis_url: str, prefix: str, side: str) -> dict[str, str]:
    """The old jobs, completed by hand; returns {queue: id of the new job}, the new jobs
    waiting for the worker of that side."""
    new_ids = {}
    now = int((await client.time())[0]) * 1000
    for name, (keep, offsets) in SCENARIOS.items():
        queue = f"{side}-{name}"
        async with Queue(queue, connection=redis_url, prefix=prefix) as q:
            old = await q.add_bulk(
                [{"name": "old", "data": {}, "opts": {"job_id": f"old{k}"}} for k in range(len(offsets))]
            )
            for job, offset in zip(old, offsets):
                await client.lrem(f"{prefix}:{queue}:wait", 1, job.id)
                await client.zadd(f"{prefix}:{queue}:completed", {job.id: now + offset})
                await client.hset(f"{prefix}:{queue}:{job.id}", mapping={"finishedOn": now + offset, "returnvalue": "1"})
            new = await q.add("new", {}, {"job_id": "new", "remove_on_complete": keep})
            new_ids[queue] = str(new.id)
    return new_ids


async def _left(client: aioredis.Redis, prefix: str, queue: str) -> tuple[list[str], list[str]]:
    in_set = sorted(m.decode() for m in await client.zrange(f"{prefix}:{queue}:completed", 0, -1))
    ids = ["new", *(f"old{k}" for k in range(len(SCENARIOS[queue.split("-", 1)[1]][1])))]
    hashes = sorted([i for i in ids if await client.exists(f"{prefix}:{queue}:{i}")])
    return in_set, hashes


async def test_trimming_by_age_limit_and_count_matches_node(redis_url: str, prefix: str) -> None:
    client = aioredis.from_url(redis_url)
    try:
        node_new = await _prepare(client, redis_url, prefix, "node")
        await run_node({
            "redis": redis_url, "prefix": prefix, "timeoutMs": 30000,
            "workers": [{"queue": q, "processors": {"*": {"return": 1}}, "drainDelay": 0.05} for q in node_new],
            "until": {"count": {"queues": list(node_new), "n": len(node_new)}},
        })
        py_new = await _prepare(client, redis_url, prefix, "py")
        completed: asyncio.Queue[str] = asyncio.Queue()
        workers = [
            Worker(queue, lambda job: 1, connection=redis_url, prefix=prefix, drain_delay=0.05)
            for queue in py_new
        ]
        for w in workers:
            w.on("completed", lambda job, *_: completed.put_nowait(job.queue_name))
        try:
            seen = {await asyncio.wait_for(completed.get(), 10) for _ in py_new}
        finally:
            for w in workers:
                await w.close()
        assert seen == set(py_new)
        for name in SCENARIOS:
            node_left = await _left(client, prefix, f"node-{name}")
            py_left = await _left(client, prefix, f"py-{name}")
            assert py_left == node_left, (name, "bullfast", py_left, "node", node_left)
    finally:
        await client.aclose()
