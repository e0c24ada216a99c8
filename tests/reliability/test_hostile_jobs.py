"""Jobs written by someone else (another client, a migration script, a hand-edit), with
fields missing or corrupt.

A worker must fail such a job with a clear reason, or process it the way BullMQ would when it
is legitimately processable (no ``data`` → ``{}``, a garbage ``parent`` JSON next to a good
``parentKey`` → the parent named by ``parentKey``; a completion records its result there also
when the JSON names another job, as BullMQ's does, and releases that parent, where BullMQ's looks
for the job the JSON names and leaves it waiting; it leaves alone the parent that a JSON without
``parentKey`` names, as BullMQ's does), create no stray keys for references to
nowhere, and keep running: the good jobs queued with them complete, and its background duties
(lock renewal, stalled check) still run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bullfast import Queue

from ._util import Resources, until


@pytest.fixture
async def res(redis_url: str, prefix: str) -> AsyncIterator[Resources]:
    r = Resources(redis_url, prefix)
    try:
        yield r
    finally:
        await r.aclose()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def push_raw(client: Any, res: Resources, queue: str, job_id: str, fields: dict[str, Any],
                   state: str = "wait") -> None:
    """Write a job hash as another client would, and make it runnable (or active)."""
    if fields:
        await client.hset(res.key(queue, job_id), mapping=fields)
    await client.lpush(res.key(queue, state), job_id)
    if state == "wait":
        await client.zadd(res.key(queue, "marker"), {"0": 0})


def base(**fields: Any) -> dict[str, Any]:
    out = {"name": "raw", "data": "{}", "opts": "{}", "timestamp": now_ms(), "delay": 0, "priority": 0}
    out.update(fields)
    return {k: v for k, v in out.items() if v is not None}


async def test_corrupt_and_missing_fields(res: Resources, prefix: str) -> None:
    client = res.client()
    q = res.queue("hj")
    # a real parent (in another queue) waiting for two children written by hand below
    parent_key = res.key("hj-p", "par")
    await client.hset(parent_key, mapping=base(name="par", data='{"v":0}'))
    await client.zadd(res.key("hj-p", "waiting-children"), {"par": now_ms()})
    await client.sadd(f"{parent_key}:dependencies", res.key("hj", "garbage-parent-json"),
                      res.key("hj", "parent-json-not-object"), res.key("hj", "parent-json-names-another"))
    # a parent whose only child names it in its JSON alone (no parentKey): BullMQ's completion
    # leaves it waiting, and so does bullfast's
    lone_key = res.key("hj-p", "lone")
    await client.hset(lone_key, mapping=base(name="lone"))
    await client.zadd(res.key("hj-p", "waiting-children"), {"lone": now_ms()})
    await client.sadd(f"{lone_key}:dependencies", res.key("hj", "parent-json-without-key"))
    nowhere = f"{prefix}:nowhere:ghost"
    raw = {
        # processable, as BullMQ would
        "no-data": base(data=None),
        "no-name": base(name=None),
        "no-opts": base(opts=None),
        "data-is-a-number": base(data="42"),
        "data-is-null": base(data="null"),
        "data-is-a-list": base(data='[1,"two"]'),
        "garbage-numbers": base(atm="x", ats="y", priority="high", delay="soon", timestamp="now"),
        "parent-to-nowhere": base(parentKey=nowhere, parent=f'{{"id":"ghost","queueKey":"{prefix}:nowhere","fpof":true}}'),
        "parent-key-without-colon": base(parentKey=f"nocolon-{prefix}"),
        "garbage-parent-json": base(parentKey=parent_key, parent="{garbage"),
        "parent-json-not-object": base(parentKey=parent_key, parent="[1,2]"),
        "parent-json-without-queue": base(parentKey=nowhere, parent='{"id":"ghost"}'),
        "parent-json-without-key": base(parent=f'{{"id":"lone","queueKey":"{prefix}:hj-p"}}'),
        "parent-json-names-another": base(parentKey=parent_key, parent=f'{{"id":"ghost","queueKey":"{prefix}:hj-p"}}'),
        "bad-utf8-name": base(name=b"\xff\xfe-name"),
        # not processable: failed, with the reason
        "data-not-json": base(data="{not json", opts='{"attempts":3}'),
        "data-bad-utf8": base(data=b'{"a":"\xff"}'),
        "opts-not-json": base(opts="{not json"),
        "opts-not-an-object": base(opts="[1,2]"),
        "deferred-failure": base(defa="stalled too often, says another client"),
        "failing-child-of-nowhere": base(name="fail", parentKey=nowhere,
                                         parent=f'{{"id":"ghost","queueKey":"{prefix}:nowhere","fpof":true}}'),
    }
    for job_id, fields in raw.items():
        await push_raw(client, res, "hj", job_id, fields)
    good = await q.add("good", {"x": 1})
    seen: dict[str, Any] = {}

    async def processor(job: Any) -> Any:
        seen[job.id] = (job.name, job.data)
        if job.name == "fail":
            raise RuntimeError("processor failed")
        if job.id == "par":
            return {"children": await job.get_children_values()}
        return {"ok": job.id}

    w = res.worker("hj", processor, concurrency=4, stalled_interval=200, lock_duration=1000)
    res.worker("hj-p", processor)
    ended: dict[str, tuple[str, Any]] = {}
    w.on("completed", lambda job, result, prev: ended.setdefault(job.id, ("completed", result)))
    w.on("failed", lambda job, err, prev: ended.setdefault(job.id, ("failed", str(err))))
    await until(lambda: len(ended) >= len(raw) + 1, 10, f"every job to end (ended: {sorted(ended)})")

    assert ended[good.id][0] == "completed"
    assert seen["no-data"][1] == {}
    assert seen["no-name"][0] == ""
    assert seen["data-is-a-number"][1] == 42
    assert seen["data-is-null"][1] is None
    assert seen["data-is-a-list"][1] == [1, "two"]
    assert seen["bad-utf8-name"][0].endswith("-name")
    assert seen["data-bad-utf8"][1] == {"a": "\ufffd"}  # as Node reads invalid UTF-8
    processable = [k for k in raw if k not in (
        "data-not-json", "opts-not-json", "opts-not-an-object", "deferred-failure", "failing-child-of-nowhere")]
    for job_id in processable:
        assert ended[job_id] == ("completed", {"ok": job_id}), (job_id, ended[job_id])
        assert await q.get_job_state(job_id) == "completed"

    reasons = {job_id: (await q.get_job(job_id)).failed_reason for job_id in raw}
    for job_id, words in {
        "data-not-json": ("data", "JSON"),
        "opts-not-json": ("opts",),
        "opts-not-an-object": ("opts",),
        "deferred-failure": ("stalled too often",),
        "failing-child-of-nowhere": ("processor failed",),
    }.items():
        assert ended[job_id][0] == "failed", (job_id, ended[job_id])
        assert await q.get_job_state(job_id) == "failed"
        assert all(w in (reasons[job_id] or "") for w in words), (job_id, reasons[job_id])
    # failing for good because of the data is not retried (it would fail the same way)
    assert (await q.get_job("data-not-json")).attempts_made == 1
    assert "data-not-json" not in seen and "opts-not-json" not in seen

    # the real parent got its three hand-written children through parentKey, and ran once with them
    await until(lambda: client.zscore(res.key("hj-p", "completed"), "par"), 5, "the hand-made parent")
    children = (await Queue("hj-p", connection=res.url, prefix=prefix).get_job("par"))
    assert children is not None
    await children.queue.close()
    assert set((children.returnvalue or {}).get("children", {})) == {
        res.key("hj", "garbage-parent-json"), res.key("hj", "parent-json-not-object"),
        res.key("hj", "parent-json-names-another")}
    assert await q.get_job_state("parent-json-without-key") == "completed"
    assert await client.zscore(res.key("hj-p", "waiting-children"), "lone") is not None
    assert await client.smembers(f"{lone_key}:dependencies") == {res.key("hj", "parent-json-without-key").encode()}
    assert await client.exists(f"{lone_key}:processed") == 0
    # references to nowhere created nothing there
    assert await client.keys(f"{prefix}:nowhere*") == []
    assert await client.keys(f"nocolon-{prefix}*") == []  # (this test's own: REDIS_URL may hold others)
    # and the worker keeps going, background duties included
    later = await q.add("later", {})
    await until(lambda: later.id in ended, 5, "a job added afterwards")
    assert w.is_running()
    assert all(not task.done() for task in w._background), "a background loop of the worker died"


async def test_job_id_whose_key_is_not_a_hash(res: Resources, prefix: str) -> None:
    """An id in wait whose key holds a string (someone else's key under the queue's prefix):
    the worker reports the error, leaves that key alone and keeps serving the queue."""
    client = res.client()
    q = res.queue("wt")
    before = [await q.add("before", {"i": i}) for i in range(3)]
    await client.set(res.key("wt", "not-a-hash"), "someone else's value")
    await client.lpush(res.key("wt", "wait"), "not-a-hash")
    after = [await q.add("after", {"i": i}) for i in range(3)]
    good = {j.id for j in before + after}

    async def processor(job: Any) -> str:
        return job.id

    w = res.worker("wt", processor, concurrency=2, stalled_interval=150, lock_duration=600)

    async def completed() -> set[str]:
        return {m.decode() for m in await client.zrange(res.key("wt", "completed"), 0, -1)}

    await until(lambda: completed_all(completed, good), 10, "the six good jobs")
    assert res.errors["wt"], "the worker said nothing about the key it could not read"
    assert await client.get(res.key("wt", "not-a-hash")) == b"someone else's value"
    later = await q.add("later", {})
    await until(lambda: completed_all(completed, {later.id}), 5, "a job added afterwards")
    assert w.is_running()


async def completed_all(completed: Any, ids: set[str]) -> bool:
    return ids <= await completed()


async def test_jobs_completed_in_a_call_that_then_failed_get_their_events(res: Resources, prefix: str) -> None:
    """Concurrency 1: job A runs; behind it in wait is an id whose key is a string. A's
    completion and the fetch of the next id are one script call: A is completed in Redis, then
    the fetch fails. The worker should still say that A completed."""
    client = res.client()
    q = res.queue("we")
    a = await q.add("a", {})
    await client.set(res.key("we", "not-a-hash"), "someone else's value")
    await client.lpush(res.key("we", "wait"), "not-a-hash")
    events: list[str] = []

    async def processor(job: Any) -> str:
        await asyncio.sleep(0.05)
        return job.id

    w = res.worker("we", processor, concurrency=1)
    w.on("completed", lambda job, result, prev: events.append(job.id))
    await until(lambda: client.zscore(res.key("we", "completed"), a.id), 5, "A to complete in Redis")
    await until(lambda: res.errors["we"], 5, "the error")
    await asyncio.sleep(0.2)
    assert events == [a.id], "A completed in Redis without a 'completed' event"


async def test_corrupt_stalled_counter_of_an_abandoned_job(res: Resources, prefix: str) -> None:
    """A job left active by a dead worker, whose ``stc`` field is not a number. Expected: it is
    moved back to wait (or failed, with the reason), the worker reports the problem, and its
    stalled check keeps working for the other jobs."""
    client = res.client()
    q = res.queue("sc")
    await push_raw(client, res, "sc", "bad-stc", base(stc="many"), state="active")
    done: list[str] = []

    async def processor(job: Any) -> str:
        return job.id

    w = res.worker("sc", processor, stalled_interval=150, lock_duration=600)
    w.on("completed", lambda job, result, prev: done.append(job.id))
    w.on("failed", lambda job, err, prev: done.append(job.id))
    await asyncio.sleep(0.6)
    # another job abandoned later must still be recovered by this worker's stalled check
    other = await q.add("other", {})
    await client.lrem(res.key("sc", "wait"), 1, other.id)
    await client.lpush(res.key("sc", "active"), other.id)
    await until(lambda: other.id in done, 2, "the later abandoned job to be recovered")
    state = await q.get_job_state("bad-stc")
    assert state in ("waiting", "active", "completed", "failed"), f"bad-stc is {state}: lost"
    assert res.errors["sc"], "nothing was reported"
