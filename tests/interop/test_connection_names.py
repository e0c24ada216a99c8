"""Who is connected: bullfast names its workers' and QueueEvents' connections as BullMQ does,
so Node's queue.getWorkers() / getQueueEvents() list bullfast's, and bullfast's
Queue.get_workers() lists Node's."""

from __future__ import annotations

import asyncio
import base64

from bullfast import Queue, QueueEvents, Worker

from .node import NodeRun


async def test_each_side_lists_the_others_workers(redis_url: str, prefix: str) -> None:
    base = f"{prefix}:{base64.b64encode(b'cq').decode()}"
    expected = sorted([base, f"{base}:w:py-w", base, f"{base}:w:node-w"])

    async def idle(job: object) -> None:
        return None

    ours = [
        Worker("cq", idle, connection=redis_url, prefix=prefix, worker_name="py-w", drain_delay=0.2),
        Worker("cq", idle, connection=redis_url, prefix=prefix, drain_delay=0.2),
    ]
    events = QueueEvents("cq", connection=redis_url, prefix=prefix)
    queue = Queue("cq", connection=redis_url, prefix=prefix)
    signal = Queue("sig", connection=redis_url, prefix=prefix)
    spec = {
        "redis": redis_url,
        "prefix": prefix,
        "workers": [
            {"queue": "cq", "options": {"name": "node-w"}},
            {"queue": "cq"},
            {"queue": "sig", "processors": {"*": {"return": 1}}},
        ],
        "until": {"jobs": [{"queue": "sig", "id": "go", "state": "completed"}]},
        "listConnections": ["cq"],
    }
    try:
        await events.wait_until_ready()
        async with NodeRun(spec) as run:
            await run.ready()
            for _ in range(100):
                workers = await queue.get_workers()
                if len(workers) == 4:
                    break
                await asyncio.sleep(0.05)
            assert sorted(w["rawname"] for w in workers) == expected
            assert {w["name"] for w in workers} == {"cq"}
            assert all("addr" in w and "id" in w for w in workers)
            assert await queue.get_workers_count() == 4 == await queue.getWorkersCount()
            assert [c["rawname"] for c in await queue.get_queue_events()] == [f"{base}:qe"]
            await signal.add("go", {}, job_id="go")
            report = await run.report()
        seen = report.raw["connections"]["cq"]
        assert sorted(seen["workers"]) == expected and seen["workersCount"] == 4
        assert seen["queueEvents"] == [f"{base}:qe"]
        # closed workers are gone from the list
        for w in ours:
            await w.close()
        for _ in range(100):
            if not await queue.get_workers():
                break
            await asyncio.sleep(0.05)
        assert await queue.get_workers() == []
    finally:
        for w in ours:
            await w.close()
        await events.close()
        await queue.close()
        await signal.close()
