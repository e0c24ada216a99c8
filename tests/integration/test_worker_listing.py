"""Queue.get_workers() with bullfast's own workers (the Node side is in tests/interop)."""

from __future__ import annotations

import asyncio
from typing import Any

from bullfast import Queue, Worker


async def test_named_unnamed_and_unnameable_workers(redis_url: str, prefix: str) -> None:
    errors: list[Any] = []
    done = asyncio.Event()

    async def echo(job: Any) -> Any:
        done.set()
        return job.data

    workers = [
        Worker("wl", echo, connection=redis_url, prefix=prefix, worker_name="alpha", drain_delay=0.2),
        Worker("wl", echo, connection=redis_url, prefix=prefix, drain_delay=0.2),
        # Redis refuses a connection name with a space: that worker works, unnamed (unlisted)
        Worker("wl", echo, connection=redis_url, prefix=prefix, worker_name="has space", drain_delay=0.2),
    ]
    for w in workers:
        w.on("error", errors.append)
    queue = Queue("wl", connection=redis_url, prefix=prefix)
    try:
        base = queue.client_name()
        for _ in range(100):
            listed = sorted(w["rawname"] for w in await queue.get_workers())
            if len(listed) == 2:
                break
            await asyncio.sleep(0.05)
        assert listed == sorted([base, f"{base}:w:alpha"])
        for _ in range(3):
            done.clear()
            await queue.add("j", {"x": 1})
            await asyncio.wait_for(done.wait(), 10)
        assert errors == []
        await workers[0].close()
        for _ in range(100):
            if await queue.get_workers_count() == 1:
                break
            await asyncio.sleep(0.05)
        assert [w["rawname"] for w in await queue.get_workers()] == [base]
    finally:
        for w in workers:
            await w.close()
        await queue.close()
