"""A worker completes the jobs it took with the fields it read when it took them ('C' entries:
parent key, attempts, deduplication id), so ``finish_jobs`` does not read the job's hash again.
That must leave exactly what the completion that reads the hash ('c') leaves, and a job the
worker cannot know about (gone, overwritten, given children meanwhile) must be refused as
before, before anything of it is written.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from bullfast import FlowProducer, Job, Worker
from bullfast._connection import RedisConnection
from bullfast._finish import NO_FETCH, completion_entry, run_entries, taken_fields
from bullfast.queue import Queue

from ..redis_state import dump, normalize
from .test_batch_equivalence import NOW, same_state

KIDS = "tc-kids"
OTHER = "tc-other"


def flow() -> dict[str, Any]:
    kid = lambda i, **opts: {"name": f"k{i}", "queue_name": KIDS, "data": {"i": i}, "opts": {"job_id": f"k{i}", **opts}}  # noqa: E731
    return {
        "name": "parent", "queue_name": "tc-parent", "opts": {"job_id": "p"},
        "children": [
            kid(1),
            kid(2),
            kid(3, remove_on_complete=True),
            kid(4, remove_on_complete={"count": 1}),
            kid(5),  # retried twice before (atm 2)
            kid(6),  # detached from the parent while it runs
            {"name": "mid", "queue_name": OTHER, "opts": {"job_id": "m"},
             "children": [kid(7)]},  # a parent in another queue
        ],
    }


async def test_a_taken_completion_leaves_what_a_reading_one_leaves(redis_url: str, prefix: str) -> None:
    client = aioredis.from_url(redis_url)
    conn = RedisConnection(redis_url)
    states = {}
    try:
        for mode in ("read", "taken"):
            p = f"{prefix}-{mode}"
            kp = f"{p}:{KIDS}:"
            async with FlowProducer(connection=redis_url, prefix=p) as producer:
                await producer.add(flow())
            await client.hset(f"{kp}k5", "atm", "2")
            queue = Queue(KIDS, connection=redis_url, prefix=p)
            try:
                await queue.add("solo", {}, {"job_id": "s", "deduplication": {"id": "dedup-s"}})
                _, fetched = await run_entries(conn, kp, [], NOW, True, ("wk", 0, 30_000, "", "", "w1", 8))
                assert int(fetched[0]) == 8
                jobs = [Job.from_hash(queue, fetched[4 + 2 * k].decode(), fetched[5 + 2 * k]) for k in range(8)]
            finally:
                await queue.close()
            # k6 leaves its parent while it runs, as remove_child_dependency does it
            await client.srem(f"{p}:tc-parent:p:dependencies", f"{kp}k6")
            await client.hdel(f"{kp}k6", "parentKey", "parent")
            ok = orjson.dumps({"ok": True})
            entries = []
            for n, job in enumerate(jobs):
                taken = taken_fields(job) if mode == "taken" else None
                if mode == "taken":
                    assert taken is not None, job.id
                entry = completion_entry(job, f"wk:{n}", ok, None, taken)
                entry[8] = NOW + 10 + n
                entries.append(entry)
            assert {e[2] for e in entries} == ({"C"} if mode == "taken" else {"c"})
            codes, _ = await run_entries(conn, kp, entries, NOW + 10, True, NO_FETCH)
            assert codes == [0] * 8, codes
            states[mode] = normalize(await dump(client, p), p, {})
        single = same_state({"single": states["read"], "batched": states["taken"]})
        # the scenario did what it says
        k = f"bull:{KIDS}:"
        assert single[f"{k}k5"]["value"]["atm"] == "3"
        assert f"{k}k3" not in single
        assert f"{k}de:dedup-s" not in single and single[f"{k}s"]["value"]["deid"] == "dedup-s"
        assert sorted(single["bull:tc-parent:p:processed"]["value"]) == [k + i for i in ("k1", "k2", "k3", "k4", "k5")]
        assert single[f"bull:{OTHER}:m:processed"]["value"] == {k + "k7": {"ok": True}}
        assert single[f"bull:{OTHER}:wait"]["value"] == ["m"]  # released by k7
    finally:
        await conn.close()
        await client.aclose()


async def test_a_taken_completion_is_refused_where_the_job_changed(redis_url: str, prefix: str) -> None:
    """Gone (-1), overwritten by a value that is not a hash (-1, and its parent does not count
    it), given children it waits for (-4): as the completion that reads the hash answers."""
    client = aioredis.from_url(redis_url)
    conn = RedisConnection(redis_url)
    kp = f"{prefix}:{KIDS}:"
    try:
        async with FlowProducer(connection=redis_url, prefix=prefix) as producer:
            await producer.add({"name": "p", "queue_name": "tc-parent", "opts": {"job_id": "p"}, "children": [
                {"name": f"k{i}", "queue_name": KIDS, "opts": {"job_id": f"k{i}"}} for i in (1, 2, 3)]})
        _, fetched = await run_entries(conn, kp, [], NOW, True, ("wk", 0, 30_000, "", "", "", 3))
        assert int(fetched[0]) == 3
        parent_key = f"{prefix}:tc-parent:p"
        await client.delete(f"{kp}k1")
        await client.delete(f"{kp}k2")
        await client.set(f"{kp}k2", "someone else's value")
        await client.sadd(f"{kp}k3:dependencies", f"{kp}elsewhere")
        ok = orjson.dumps(1)
        entries = [[f"k{i}", f"wk:{i - 1}", "C", ok, parent_key, "-1||", "1", "", NOW + 10] for i in (1, 2, 3)]
        codes, _ = await run_entries(conn, kp, entries, NOW + 10, True, NO_FETCH)
        assert codes == [-1, -1, -4]
        assert await client.exists(f"{parent_key}:processed") == 0
        assert await client.scard(f"{parent_key}:dependencies") == 3
        assert await client.get(f"{kp}k2") == b"someone else's value"
        assert await client.zcard(f"{kp}completed") == 0
    finally:
        await conn.close()
        await client.aclose()


@pytest.mark.parametrize(
    ("parent", "parent_key", "expected"),
    [
        (None, None, ""),
        (None, "bull:A:1", "bull:A:1"),
        ({"id": "1", "queueKey": "bull:B"}, "bull:A:1", "bull:B:1"),  # the JSON wins, as in the script
        ({"id": "1"}, "bull:A:1", "bull:A:1"),  # no queueKey: the key field
        ({"id": 1, "queueKey": "bull:B"}, "bull:A:1", None),  # a number: left to the script
        ({"id": None, "queueKey": "bull:B"}, "bull:A:1", None),  # JSON null is truthy in Lua
        (None, "", None),  # an empty field is truthy in Lua
    ],
)
def test_taken_fields_name_the_parent_the_script_would(parent: Any, parent_key: Any, expected: Any) -> None:
    job = Job.__new__(Job)
    job.parent, job.parent_key, job.deduplication_id, job._stored_atm = parent, parent_key, None, 4
    fields = taken_fields(job)
    assert (fields if fields is None else fields[0]) == expected
    if fields is not None:
        assert fields[1:] == ("5", "")


async def test_a_worker_knows_what_its_fetch_wrote(redis_url: str, prefix: str) -> None:
    """The fetch replies with the job's hash as read; the worker fills in what the script then
    wrote (processedOn, ats, pb): the job it runs agrees with Redis, for batched and manual
    fetches."""
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
            for _ in range(200):
                if len(seen) == 2:
                    break
                await asyncio.sleep(0.02)
            await queue.add("c", {})
            manual = Worker(KIDS, None, connection=redis_url, prefix=prefix, worker_name="m-name", autorun=False)
            try:
                await worker.pause()
                job = await manual.get_next_job("manual-token")
                assert job is not None
                raw = await client.hmget(job.key, "processedOn", "ats", "pb")
                assert (job.processed_on, job.attempts_started, job.processed_by) == (
                    int(raw[0]), int(raw[1]), raw[2].decode())
                assert job.token == "manual-token"
            finally:
                await manual.close()
        assert len(seen) == 2 and seen == stored
        assert sorted(s[1] for s in seen) == [1, 5]
    finally:
        await queue.close()
        await client.aclose()
