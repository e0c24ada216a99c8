"""Worker.close() in the middle of a burst: producers still adding, a dozen jobs running, more
fetched. close() must let the running jobs finish and write their ends before it returns, take
nothing new, and leave nothing active; the jobs it did not take stay waiting for the next
worker. Afterwards every job completes exactly once and every processor run belongs to a
completed job.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis

from ._util import Node, Proxy, Resources, build_tree, until, verify_completed
from ._worker_proc import make_processor

BURST = 300


@pytest.fixture
async def res(redis_url: str, prefix: str) -> AsyncIterator[Resources]:
    r = Resources(redis_url, prefix)
    try:
        yield r
    finally:
        await r.aclose()


def sync_processor(client: redis.Redis, ledger: str) -> Any:
    """The processor of ``_worker_proc`` as a plain function (run in the worker's threads)."""

    def process(job: Any) -> dict[str, int]:
        client.hincrby(f"{ledger}:runs", job.key, 1)
        time.sleep(job.data.get("sleep", 0))
        total = int(job.data.get("v", 0))
        if job.data.get("n"):
            values = client.hvals(f"{job.key}:processed")
            if len(values) != job.data["n"]:
                client.rpush(f"{ledger}:violations", f"0 {job.key} ran with {len(values)} children values")
            total += sum(orjson.loads(v)["v"] for v in values)
        return {"v": total}

    return process


@pytest.mark.parametrize("kind", ["async", "threads"])
async def test_close_during_a_burst(res: Resources, prefix: str, redis_url: str, kind: str) -> None:
    client = res.client()
    ledger = f"{prefix}:ledger"
    sync_client = redis.Redis.from_url(redis_url)
    try:
        process = make_processor(client, ledger) if kind == "async" else sync_processor(sync_client, ledger)
        rng = random.Random(5)
        q = res.queue("cb")
        fp = res.flow()
        flow_nodes: list[Node] = []
        plain: list[str] = []

        async def burst() -> None:
            for k in range(BURST // 30):
                jobs = [{"name": "j", "data": {"v": 1, "sleep": rng.uniform(0.01, 0.08)},
                         "opts": {"job_id": f"j{k}.{i}"}} for i in range(30)]
                await q.add_bulk(jobs)
                plain.extend(j["opts"]["job_id"] for j in jobs)
                flow, nodes = build_tree(prefix, f"f{k}", [("cb-p", 1), ("cb", 3)], {"cb": 0.02}, start=10 * k + 1)
                await fp.add(flow)
                flow_nodes.extend(nodes)
                await asyncio.sleep(0.03)

        producing = asyncio.ensure_future(burst())
        w = res.worker("cb", process, concurrency=12)
        res.worker("cb-p", process)
        await until(lambda: client.zcard(res.key("cb", "completed")), 10, "first completions")
        await until(lambda: len(w._running) >= 8, 10, "a busy worker")
        running = {m.decode() for m in await client.lrange(res.key("cb", "active"), 0, -1)}
        assert running
        await w.close()
        # nothing left active: every job it had taken ended and was written before close returned
        assert await client.llen(res.key("cb", "active")) == 0
        completed = {m.decode() for m in await client.zrange(res.key("cb", "completed"), 0, -1)}
        assert running <= completed
        runs = {k.decode(): int(v) for k, v in (await client.hgetall(f"{ledger}:runs")).items()}
        ran = {k.rsplit(":", 1)[1] for k in runs if k.startswith(f"{prefix}:cb:")}
        assert ran == completed, "a job ran without completing, or completed without running"
        assert set(runs.values()) == {1}
        await producing
        # nothing was lost: what the closed worker did not take is still waiting
        waiting = {m.decode() for m in await client.lrange(res.key("cb", "wait"), 0, -1)}
        all_ids = set(plain) | {n.id for n in flow_nodes if n.queue == "cb"}
        assert completed | waiting == all_ids and not completed & waiting
        assert waiting, "the burst was over before close(): nothing was left for the next worker"

        res.worker("cb", process, concurrency=12)
        await until(lambda: completed_all(client, res, all_ids), 30, "the next worker to finish the burst")
        await until(lambda: roots_done(client, res, flow_nodes), 10, "every flow's parent")
        report = await verify_completed(client, prefix, flow_nodes, ledger)
        assert set(report["runs"].values()) == {1}
        assert res.errors["cb"] == []
    finally:
        sync_client.close()


async def completed_all(client: Any, res: Resources, ids: set[str]) -> bool:
    return int(await client.zcard(res.key("cb", "completed"))) == len(ids)


async def roots_done(client: Any, res: Resources, nodes: list[Node]) -> bool:
    roots = [n for n in nodes if n.parent is None]
    return all([await client.zscore(res.key(n.queue, "completed"), n.id) is not None for n in roots])


async def test_force_close_returns_while_redis_is_unreachable(res: Resources, redis_url: str) -> None:
    """close(force=True) is the way out when Redis is gone: it should return promptly and leave
    the unwritten ends to the stalled check, as it does for cancelled jobs."""
    proxy = res.track(await Proxy(redis_url).start())
    q = res.queue("fc")
    await q.add("j", {})
    gate = asyncio.Event()

    async def processor(job: Any) -> str:
        await gate.wait()
        return "done"

    w = res.worker("fc", processor, url=proxy.url, run_retry_delay=1000)
    await until(lambda: w._running, 5, "the job to run")
    proxy.cut(refuse_for=600)
    gate.set()  # the attempt ends; its completion cannot be written
    await until(lambda: res.errors["fc"], 5, "the worker to meet the outage")
    closing = asyncio.ensure_future(w.close(force=True))
    try:
        await asyncio.wait_for(asyncio.shield(closing), 3)
    finally:
        proxy.accept()  # let it finish closing either way
        await asyncio.wait_for(closing, 10)
