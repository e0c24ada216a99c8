"""Keys of other applications in the same Redis are never touched.

Unrelated keys of every type, some with a TTL, are written around the test's prefix and queue
names — the prefix alone, the queues' qualified names, similar names (``fk-ax``, ``FK-A``,
``fk``), other prefixes with the same queue names (BullMQ's default ``bull``), names with glob
characters (``*``, ``?``, ``[...]``) that a careless SCAN/KEYS pattern would match — and, inside
the queues' own namespaces, names bullfast never uses (``<queue>:app-settings``, a key beside a
job's keys ``<queue>:1:notes``, ...). Then a full life cycle runs: flows, a fan-out, plain,
delayed, prioritized and deduplicated jobs, processing with failures, retries (per job and per
queue), clean, remove, pause/resume, drain and obliterate. Afterwards every foreign key is
byte for byte what it was (``DUMP``), with its TTL, and nothing of the queues is left.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ._util import Resources, build_tree, until
from ._worker_proc import make_processor

QA, QB, QC = "fk-a", "fk-b", "fk-c"


@pytest.fixture
async def res(redis_url: str, prefix: str) -> AsyncIterator[Resources]:
    r = Resources(redis_url, prefix)
    try:
        yield r
    finally:
        await r.aclose()


def foreign_keys(p: str) -> dict[str, tuple[str, Any]]:
    around = {
        p: ("string", b"the prefix itself"),
        f"{p}:": ("string", b"prefix and colon"),
        f"{p}:{QA}": ("hash", {"app": "uses the queue's qualified name"}),
        f"{p}:{QA}:": ("string", b"the queue's key prefix itself"),
        f"{p}:{QA}x:wait": ("list", [b"1", b"2"]),
        f"{p}:{QA}-other:1": ("hash", {"name": "not a job of fk-a", "data": "{}"}),
        f"{p}:fk:wait": ("list", [b"x"]),
        f"{p}:FK-A:wait": ("list", [b"1"]),
        f"{p}x:{QA}:wait": ("list", [b"1"]),
        f"{p}-x:{QA}:1": ("hash", {"name": "job of another prefix"}),
        f"x{p}:{QA}:meta": ("hash", {"paused": "1"}),
        f"{p}:{QA}*": ("string", b"glob star"),
        f"{p}:{QA}?:meta": ("hash", {"q": "mark"}),
        f"{p}:[{QA}]:wait": ("list", [b"bracket"]),
        f"{p}:{QA}\\:1": ("string", b"escaped colon"),
        f"bull-{p}:{QA}:wait": ("list", [b"1", b"2", b"3"]),
        f"bull-{p}:{QA}:1": ("hash", {"name": "a BullMQ job of another app"}),
        f"other:{p}:{QB}:completed": ("zset", {b"1": 1.0}),
        f"{p}:{QB}-archive:events": ("stream", {"event": "completed", "jobId": "1"}),
        f"{p}:{QC}s:1:dependencies": ("set", [f"{p}:{QB}:1".encode()]),
    }
    inside = {
        f"{p}:{QA}:app-settings": ("hash", {"colour": "blue", "bin": b"\x00\xff"}),
        f"{p}:{QA}:1:notes": ("string", b"next to job 1's keys"),
        f"{p}:{QA}:events:archive": ("stream", {"event": "archived"}),
        f"{p}:{QA}:bf:guard:not-ours": ("string", b"1"),
        f"{p}:{QB}:completed:backup": ("zset", {b"x": 2.0}),
        f"{p}:{QC}:wait-list": ("list", [b"not", b"jobs"]),
    }
    return {**around, **inside}


async def write_foreign(client: Any, keys: dict[str, tuple[str, Any]]) -> None:
    for n, (key, (kind, value)) in enumerate(keys.items()):
        if kind == "string":
            await client.set(key, value)
        elif kind == "hash":
            await client.hset(key, mapping=value)
        elif kind == "list":
            await client.rpush(key, *value)
        elif kind == "set":
            await client.sadd(key, *value)
        elif kind == "zset":
            await client.zadd(key, value)
        else:
            await client.xadd(key, value)
        if n % 3 == 0:
            await client.expire(key, 3600)


async def fingerprint(client: Any, keys: list[str]) -> dict[str, tuple[bytes | None, bool]]:
    return {k: (await client.dump(k), await client.pttl(k) > 0) for k in keys}


async def test_foreign_keys_survive_a_full_life_cycle(res: Resources, prefix: str) -> None:
    client = res.client()
    keys = foreign_keys(prefix)
    others = [k for k in keys if not k.startswith(f"{prefix}:")]
    try:
        await write_foreign(client, keys)
        before = await fingerprint(client, list(keys))
        ttls = {k: await client.pttl(k) for k in keys}
        await life_cycle(res, client, prefix)
        after = await fingerprint(client, list(keys))
        changed = [k for k in keys if after[k] != before[k]]
        assert not changed, f"foreign keys changed: {changed}"
        for k, ttl in ttls.items():
            if ttl > 0:
                assert 0 < await client.pttl(k) <= ttl
        # and nothing of the queues is left: only the foreign keys inside their namespaces
        left = set()
        for q in (QA, QB, QC):
            left |= {k.decode() async for k in client.scan_iter(match=f"{prefix}:{q}:*")}
        assert left == {k for k in keys if any(k.startswith(f"{prefix}:{q}:") for q in (QA, QB, QC))}
    finally:
        if others:
            await client.delete(*others)


async def life_cycle(res: Resources, client: Any, prefix: str) -> None:
    ledger = f"{prefix}:ledger"
    process = make_processor(client, ledger)
    qa, qb, qc = res.queue(QA), res.queue(QB), res.queue(QC)
    fp = res.flow()
    # flows: root in A, children in B (one fails for good with idof, one fails once), grandchildren in A
    roots = []
    for k in range(4):
        flow, nodes = build_tree(prefix, f"f{k}", [(QA, 1), (QB, 3), (QA, 2)], start=100 * k + 1)
        kids = flow["children"]
        kids[0]["data"]["fail_times"] = 99
        kids[0]["opts"]["ignore_dependency_on_failure"] = True
        kids[1]["data"]["fail_times"] = 1
        kids[1]["opts"]["attempts"] = 2
        kids[2]["opts"]["remove_on_complete"] = True
        await fp.add(flow)
        roots.append(nodes[0])
    # a fan-out in C with children in B
    async with fp.fan_out({"name": "fan", "queue_name": QC, "data": {"v": 0, "n": 30}}, chunk_size=7) as fan:
        await fan.add_children({"name": "c", "queue_name": QB, "data": {"v": i},
                                "opts": {"remove_on_complete": i % 2 == 0}} for i in range(30))
    # plain jobs of every kind
    await qa.add_bulk([{"name": "plain", "data": {"v": i}} for i in range(20)])
    await qa.add_bulk([{"name": "later", "data": {"v": i}, "opts": {"delay": 3_600_000}} for i in range(5)])
    await qa.add_bulk([{"name": "urgent", "data": {"v": i}, "opts": {"priority": 1 + i}} for i in range(3)])
    await qa.add_bulk([{"name": "dedup", "data": {"v": i}, "opts": {"deduplication": {"id": f"d{i % 2}"}}}
                       for i in range(4)])
    await qa.add_bulk([{"name": "bad", "data": {"v": i, "fail_times": 99}, "opts": {"attempts": 1}}
                       for i in range(5)])
    await qa.add_bulk([{"name": "bad-gone", "data": {"v": i, "fail_times": 99}, "opts": {"remove_on_fail": True}}
                       for i in range(5)])
    await qb.add("lifo", {"v": 1}, lifo=True)
    # process
    workers = [res.worker(QA, process, concurrency=8), res.worker(QB, process, concurrency=8),
               res.worker(QC, process)]

    async def settled() -> bool:
        done = all([await client.zscore(f"{prefix}:{QA}:completed", r.id) is not None for r in roots])
        fan_done = await client.zscore(f"{prefix}:{QC}:completed", fan.job.id) is not None
        waiting = sum([await client.llen(f"{prefix}:{q}:wait") + await client.llen(f"{prefix}:{q}:active")
                       + await client.zcard(f"{prefix}:{q}:prioritized") for q in (QA, QB, QC)])
        return done and fan_done and waiting == 0

    await until(settled, 20, "the first round to settle")
    assert await qa.get_failed_count() == 5
    # retries: one job by hand, then every failed one of A; they fail again
    failed = await qa.get_failed()
    await failed[0].retry()
    await qa.retry_jobs(state="failed")
    bad_keys = [f"{prefix}:{QA}:{j.id}" for j in failed]

    async def ran_again() -> bool:
        runs = [int(await client.hget(f"{ledger}:runs", k) or 0) for k in bad_keys]
        return runs[0] >= 2 and all(r >= 2 for r in runs) and await failed_again(qa)

    await until(ran_again, 10, "the retried jobs to fail again")
    assert await qb.get_failed_count() == 4  # the idof children
    assert await client.zscore(f"{prefix}:{QC}:completed", fan.job.id) is not None
    # clean, remove, pause/resume
    assert len(await qa.clean(0, 1000, "completed")) > 0
    assert len(await qb.clean(0, 1000, "failed")) > 0
    await qa.pause()
    await qa.resume()
    for w in workers:
        await w.close()
    # more work that nobody runs, then drain and obliterate
    await qb.add_bulk([{"name": "left", "data": {}} for _ in range(10)])
    await fp.add({"name": "waiting-parent", "queue_name": QA, "children": [{"name": "kid", "queue_name": QB}]})
    job = await qb.add("to-remove", {})
    await qb.remove(job.id)
    await qa.drain(delayed=True)
    await qb.drain(delayed=True)
    await asyncio.gather(qa.obliterate(force=True), qb.obliterate(force=True), qc.obliterate(force=True))
    await client.delete(f"{ledger}:runs", f"{ledger}:violations")


async def failed_again(q: Any) -> bool:
    return await q.get_failed_count() == 5 and await q.get_waiting_count() == 0 and await q.get_active_count() == 0
