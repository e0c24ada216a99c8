"""What a worker knows of the jobs it takes, and what it reads again when it ends them.

The fetch replies with each job's hash as the script read it (packed by Redis's cmsgpack);
the worker fills in what the script then wrote (processedOn, ats, pb). Ending a job reads the
fields it needs afresh: they can change while the job runs (another producer may make it the
child of a new parent).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from bullfast import FlowProducer, Job, Worker, core
from bullfast.queue import Queue

from .test_worker import until

KIDS = "wf-kids"


async def test_a_worker_knows_what_its_fetch_wrote(redis_url: str, prefix: str) -> None:
    """The job a worker runs agrees with Redis on processedOn, ats and pb, for batched and
    manual fetches."""
    client = aioredis.from_url(redis_url)
    queue = Queue(KIDS, connection=redis_url, prefix=prefix)
    seen: list[tuple[Any, ...]] = []
    stored: list[tuple[Any, ...]] = []

    async def processor(job: Job) -> int:
        seen.append((job.processed_on, job.attempts_started, job.processed_by))
        raw = await client.hmget(job.key, "processedOn", "ats", "pb")
        stored.append((int(raw[0]), int(raw[1]), raw[2].decode()))
        return 1

    try:
        await queue.add("a", {})
        await queue.add("b", {})
        await client.hset(f"{prefix}:{KIDS}:2", "ats", "4")
        async with Worker(KIDS, processor, connection=redis_url, prefix=prefix, worker_name="w-name") as worker:
            await until(lambda: len(seen) == 2, 10, "both jobs")
            await worker.pause()
            await queue.add("c", {})
            manual = Worker(KIDS, None, connection=redis_url, prefix=prefix, worker_name="m-name", autorun=False)
            try:
                job = await manual.get_next_job("manual-token")
                assert job is not None
                raw = await client.hmget(job.key, "processedOn", "ats", "pb")
                assert (job.processed_on, job.attempts_started, job.processed_by) == (
                    int(raw[0]), int(raw[1]), raw[2].decode())
                assert job.token == "manual-token"
            finally:
                await manual.close()
        assert seen == stored
        assert sorted(s[1] for s in seen) == [1, 5]
    finally:
        await queue.close()
        await client.aclose()


async def test_a_job_given_a_parent_while_it_runs_completes_into_that_parent(redis_url: str, prefix: str) -> None:
    """A flow added while a job runs names that job (by id) as a child: the job is attached to
    the new parent as it runs, and its completion must reach that parent, not the none the
    worker saw when it took the job."""
    queue = Queue(KIDS, connection=redis_url, prefix=prefix)
    running, release = asyncio.Event(), asyncio.Event()

    async def processor(job: Job) -> dict[str, int]:
        running.set()
        await release.wait()
        return {"n": 7}

    try:
        await queue.add("j", {}, {"job_id": "j"})
        async with Worker(KIDS, processor, connection=redis_url, prefix=prefix) as worker:
            await asyncio.wait_for(running.wait(), 10)
            async with FlowProducer(connection=redis_url, prefix=prefix) as producer:
                try:
                    tree = {"name": "p", "queue_name": "wf-parent", "opts": {"job_id": "p"},
                            "children": [{"name": "j", "queue_name": KIDS, "opts": {"job_id": "j"}}]}
                    parent = (await producer.add(tree, reuse_existing=True)).job
                    assert await parent.get_state() == "waiting-children"
                finally:
                    release.set()
                await until(lambda: not worker._running, 10, "the job to end")
                await until(lambda: _is_waiting(parent), 10, "the parent released")
                assert await parent.get_state() == "waiting"
                assert await parent.get_children_values() == {f"{prefix}:{KIDS}:j": {"n": 7}}
    finally:
        await queue.close()


async def _is_waiting(job: Job) -> bool:
    return await job.get_state() == "waiting"


async def test_the_core_reads_what_redis_cmsgpack_packs(redis_url: str) -> None:
    """Every header width Redis's own ``cmsgpack.pack`` writes for strings and arrays, as the
    fetch packs the jobs it took, is read back by the core in use (compiled, or the twin)."""
    client = aioredis.from_url(redis_url)
    script = r"""
      local out = {}
      for _, n in ipairs({0, 1, 31, 32, 255, 256, 65535, 65536}) do
        out[#out + 1] = string.rep('x', n)
      end
      local wide = {}
      for i = 1, tonumber(ARGV[1]) do wide[i] = tostring(i) end
      out[#out + 1] = wide
      out[#out + 1] = {'\0\255\r\n', {}}
      return cmsgpack.pack(out)
    """
    try:
        for width in (15, 16, 65535, 65536):
            blob = await client.eval(script, 0, width)
            value = core.unpack_string_arrays(blob)
            lengths = [0, 1, 31, 32, 255, 256, 65535, 65536]
            assert [len(s) for s in value[: len(lengths)]] == lengths
            assert value[len(lengths)] == [str(i).encode() for i in range(1, width + 1)]
            assert value[-1] == [b"\0\xff\r\n", []]
    finally:
        await client.aclose()


async def test_a_fetch_reply_the_worker_cannot_read_is_reported_and_its_jobs_recovered(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Packed jobs the core cannot decode (not what the script packs): an ``error`` event, the
    worker carries on, and the jobs that fetch took come back through the stalled check."""
    queue = Queue(KIDS, connection=redis_url, prefix=prefix)
    added = await queue.add_bulk([{"name": "j", "data": {"i": i}} for i in range(3)])
    decode = core.unpack_string_arrays
    refused: list[bytes] = []

    def refuse_once(blob: bytes) -> Any:
        if not refused:
            refused.append(blob)
            raise ValueError("MessagePack type 0xc1 where an array or a string was expected")
        return decode(blob)

    monkeypatch.setattr(core, "unpack_string_arrays", refuse_once)
    errors: list[BaseException] = []
    completed: list[str] = []

    async def processor(job: Job) -> int:
        return int(job.data["i"])

    worker = Worker(KIDS, processor, connection=redis_url, prefix=prefix, concurrency=3,
                    lock_duration=300, stalled_interval=100)
    worker.on("error", lambda err, *_: errors.append(err))
    worker.on("completed", lambda job, *_: completed.append(job.id))
    try:
        try:
            await until(lambda: len(completed) == 3, timeout=10, what="the three jobs to complete")
        finally:
            await worker.close()
        assert refused and isinstance(errors[0], ValueError) and "0xc1" in str(errors[0])
        assert sorted(completed) == sorted(job.id for job in added)
        unread = {job_id.decode() for job_id in decode(refused[0])[::2]}
        assert unread
        for job in added:
            stored = await Job.from_id(queue, job.id)
            assert stored is not None and stored.returnvalue == job.data["i"]
            # the jobs of the unread fetch came back through the stalled check
            assert stored.stalled_counter == (1 if job.id in unread else 0)
    finally:
        await queue.close()
