"""A server that refuses CLIENT (managed services disable it): workers and QueueEvents, which
name their connections with CLIENT SETNAME, carry on unnamed, as BullMQ's do, and listing the
workers answers an empty list."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from bullfast import Queue, QueueEvents, Worker
from bullfast.embedded import RedisServer


async def test_no_client_command_no_names_and_no_trouble(own_redis: Callable[..., RedisServer]) -> None:
    server = own_redis(extra_args=("--rename-command", "CLIENT", "client-is-off"))
    url = server.url
    errors: list[Any] = []
    done = asyncio.Event()

    async def double(job: Any) -> Any:
        return job.data["x"] * 2

    worker = Worker("nc", double, connection=url, worker_name="w1", drain_delay=0.2)
    worker.on("error", errors.append)
    events = QueueEvents("nc", connection=url)
    events.on("error", errors.append)
    results: list[Any] = []
    events.on("completed", lambda args, _id: (results.append(args["returnvalue"]), done.set()))
    queue = Queue("nc", connection=url)
    try:
        await events.wait_until_ready()
        await asyncio.sleep(0.2)  # the worker is idle, waiting on its (unnamed) connection
        await queue.add("j", {"x": 21})
        await asyncio.wait_for(done.wait(), 10)
        assert results == [42]
        assert await queue.get_workers() == [] and await queue.get_workers_count() == 0
        assert await queue.get_queue_events() == []
        assert errors == []
    finally:
        await worker.close()
        await events.close()
        await queue.close()
