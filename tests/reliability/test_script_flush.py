"""SCRIPT FLUSH between and during operations.

bullfast runs its Lua scripts by SHA. After a SCRIPT FLUSH (or a restart, or a failover to a
replica without the scripts) the next call gets NOSCRIPT, loads the script and runs it again;
inside a MULTI/EXEC (a flow cut into several calls) every call of the transaction gets
NOSCRIPT at EXEC, nothing of it is written, and the whole transaction is sent again. A
fan-out that meets NOSCRIPT between chunks re-reads how far it got and resends from there.
So a flush never leaves a half-written flow, never writes a chunk twice, and the call that
meets it succeeds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis

from bullfast import core
from bullfast.errors import BullfastError

from ._util import Node, Resources, build_tree, until, verify_completed
from ._worker_proc import make_processor

pytestmark = pytest.mark.private_redis


@pytest.fixture
async def res(redis_url: str, prefix: str) -> AsyncIterator[Resources]:
    r = Resources(redis_url, prefix)
    try:
        yield r
    finally:
        await r.aclose()


@pytest.fixture
def flusher(redis_url: str) -> Any:
    """A synchronous client, to flush from inside bullfast's own (synchronous) steps."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


async def assert_flow_written(client: Any, nodes: list[Node]) -> None:
    """Every node's hash with its name; every parent's dependencies = its children's keys;
    each queue's wait list holds exactly the flow's leaves of that queue (none twice)."""
    leaves: dict[str, list[str]] = {}
    for n in nodes:
        assert await client.hget(n.key, "name") == n.queue.encode(), f"{n.key} missing"
        deps = {m.decode() for m in await client.smembers(f"{n.key}:dependencies")}
        assert deps == {c.key for c in n.children}, f"{n.key} dependencies differ"
        if not n.children:
            leaves.setdefault(n.key.rsplit(":", 1)[0], []).append(n.id)
    for queue_key, ids in leaves.items():
        waiting = [m.decode() for m in await client.lrange(f"{queue_key}:wait", 0, -1)]
        assert sorted(waiting) == sorted(ids)


async def test_every_operation_after_a_flush_reloads_its_script(res: Resources, prefix: str) -> None:
    client = res.client()
    q = res.queue("sf-q")
    fp = res.flow(chunk_size=10)

    async def flush() -> None:
        await client.script_flush()

    await flush()
    job = await q.add("one", {"x": 1})
    await flush()
    await q.add_bulk([{"name": "bulk", "data": {"i": i}} for i in range(5)])
    await flush()
    small, small_nodes = build_tree(prefix, "small", [("sf-a", 1), ("sf-b", 3)])
    await fp.add(small)
    await flush()
    big, big_nodes = build_tree(prefix, "big", [("sf-c", 1), ("sf-d", 45)])
    await fp.add(big)  # five calls in one MULTI/EXEC
    await flush()
    async with fp.fan_out({"name": "sf-f", "queue_name": "sf-f", "data": {"v": 0, "n": 30}}, chunk_size=7) as fan:
        await fan.add_children({"name": "sf-g", "queue_name": "sf-g", "data": {"v": 1}} for _ in range(30))
    await flush()
    tree = await fp.get_flow("sf-a", "small-r")
    assert tree is not None and tree.state == "waiting-children"
    assert [c.state for c in tree.children or []] == ["waiting"] * 3
    await flush()
    assert await q.get_job_state(job.id) == "waiting"
    await flush()
    await q.pause()
    await flush()
    await q.resume()
    await assert_flow_written(client, small_nodes)
    await assert_flow_written(client, big_nodes)
    assert await client.scard(f"{fan.parent_key}:dependencies") == 30

    ledger = f"{prefix}:ledger"
    process = make_processor(client, ledger)
    for name in ("sf-b", "sf-a", "sf-d", "sf-c"):
        res.worker(name, process, concurrency=5)
    await until(lambda: client.zscore(res.key("sf-c", "completed"), "big-r"), 10, "the big flow")
    await flush()
    await until(lambda: client.zscore(res.key("sf-a", "completed"), "small-r"), 10, "the small flow")
    await verify_completed(client, prefix, small_nodes + big_nodes, ledger)
    await flush()
    removed = await q.clean(0, 100, "wait")
    assert len(removed) == 6
    await flush()
    await q.drain()
    await flush()
    await q.obliterate(force=True)
    assert await client.exists(res.key("sf-q", "meta")) == 0


async def test_flush_between_script_check_and_exec_of_a_multi_call_flow(
    res: Resources, prefix: str, flusher: Any
) -> None:
    """The flush lands after the scripts were checked and before the transaction runs."""
    client = res.client()
    fp = res.flow(chunk_size=8)
    flow, nodes = build_tree(prefix, "tx", [("tx-a", 1), ("tx-b", 6), ("tx-c", 5)])
    loaded = fp._redis.ensure_loaded
    flushed = []

    async def ensure_loaded_then_flush(scripts: Any, what: str = "") -> None:
        await loaded(scripts, what)
        if not flushed:
            flushed.append(True)
            await client.script_flush()

    fp._redis.ensure_loaded = ensure_loaded_then_flush  # type: ignore[method-assign]
    await fp.add(flow)
    assert flushed
    await assert_flow_written(client, nodes)


async def test_flush_inside_the_transaction_while_calls_are_queued(
    res: Resources, prefix: str, flusher: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another client's SCRIPT FLUSH arrives between MULTI and EXEC (while the flow's calls are
    still being encoded and queued): EXEC answers NOSCRIPT for every call, nothing of the flow
    was written, and it is sent again."""
    client = res.client()
    fp = res.flow(chunk_size=5)
    flow, nodes = build_tree(prefix, "mid", [("mx-a", 1), ("mx-b", 4), ("mx-c", 6)])
    encode = core.encode_add_call
    calls = []

    def encode_and_flush_once(*args: Any) -> bytes:
        calls.append(1)
        if len(calls) == 3:
            flusher.script_flush()
        return encode(*args)

    monkeypatch.setattr(core, "encode_add_call", encode_and_flush_once)
    await fp.add(flow)
    n_calls = -(-len(nodes) // 5)
    assert len(calls) == 2 * n_calls  # the transaction was sent twice
    await assert_flow_written(client, nodes)
    assert await client.keys(f"{prefix}:*bf:guard*") == []  # the transaction's guard is gone


async def test_flush_while_a_fan_out_streams_its_children(res: Resources, prefix: str, flusher: Any) -> None:
    client = res.client()
    fp = res.flow()
    total = 500
    async with fp.fan_out({"name": "ff", "queue_name": "ff", "data": {"v": 0, "n": total}},
                          chunk_size=20, window=4) as fan:
        encode = fan._encode
        batches = []

        def encode_and_flush(*args: Any) -> bytes:
            batches.append(1)
            if len(batches) in (3, 9, 10, 17):
                flusher.script_flush()
            return encode(*args)

        fan._encode = encode_and_flush  # type: ignore[method-assign]
        written = await fan.add_children(
            {"name": "fc", "queue_name": "fc", "data": {"v": i}, "opts": {"job_id": f"c{i}"}} for i in range(total)
        )
    assert written == total and fan.added == total
    assert int(await client.hget(fan.parent_key, "fanoutAdded")) == total
    deps = {m.decode() for m in await client.smembers(f"{fan.parent_key}:dependencies")}
    assert deps == {f"{prefix}:fc:c{i}" for i in range(total)}
    waiting = [m.decode() for m in await client.lrange(res.key("fc", "wait"), 0, -1)]
    assert sorted(waiting) == sorted(f"c{i}" for i in range(total))  # none twice


async def noscript_replies(client: Any) -> int:
    """How many NOSCRIPT errors the server has answered so far (INFO errorstats)."""
    stats = await client.info("errorstats")
    return int(stats.get("errorstat_NOSCRIPT", {}).get("count", 0))


class Gate:
    """Lets a flush happen only between operations: the flusher waits until no operation is
    inside RedisConnection.run / call_packed / transaction (where NOSCRIPT is answered by a
    reload and one retry) and holds new ones back while it flushes."""

    def __init__(self) -> None:
        self.inside = 0
        self.flushing = False
        self.cond = asyncio.Condition()

    def wrap(self, method: Any) -> Any:
        async def guarded(*args: Any, **kwargs: Any) -> Any:
            async with self.cond:
                await self.cond.wait_for(lambda: not self.flushing)
                self.inside += 1
            try:
                return await method(*args, **kwargs)
            finally:
                async with self.cond:
                    self.inside -= 1
                    self.cond.notify_all()

        return guarded

    async def flush(self, client: Any) -> None:
        async with self.cond:
            self.flushing = True
            await self.cond.wait_for(lambda: self.inside == 0)
        try:
            await client.script_flush()
        finally:
            async with self.cond:
                self.flushing = False
                self.cond.notify_all()


async def test_flushes_while_workers_run_and_producers_add(
    res: Resources, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SCRIPT FLUSH every 30 ms for the whole run, between the operations of producers (single
    calls and transactions) and workers (fetch, finish, lock renewal, stalled check) that run
    concurrently: every operation that follows a flush meets NOSCRIPT and reloads; every flow is
    whole and completes exactly once, every job runs once, nothing is reported. (A flush that
    lands between an operation's reload and its retry: the tests below.)"""
    from bullfast._connection import RedisConnection

    gate = Gate()
    for name in ("run", "call_packed", "transaction"):
        monkeypatch.setattr(RedisConnection, name, gate.wrap(getattr(RedisConnection, name)))
    client = res.client()
    ledger = f"{prefix}:ledger"
    process = make_processor(client, ledger)
    for name, concurrency in (("fl-c", 10), ("fl-b", 5), ("fl-a", 2)):
        res.worker(name, process, concurrency=concurrency, lock_duration=1000, stalled_interval=200)
    stop = asyncio.Event()

    async def flush_often() -> int:
        n = 0
        while not stop.is_set():
            await gate.flush(client)
            n += 1
            await asyncio.sleep(0.03)
        return n

    noscript_before = await noscript_replies(client)
    flushing = asyncio.ensure_future(flush_often())
    nodes: list[Node] = []
    producers = [res.flow(chunk_size=size) for size in (2000, 7)]
    for k in range(12):
        flow, tree = build_tree(prefix, f"p{k}", [("fl-a", 1), ("fl-b", 3), ("fl-c", 4)], {"fl-c": 0.05},
                                start=100 * k + 1)
        await producers[k % 2].add(flow)
        nodes += tree
        await asyncio.sleep(0.05)
    roots = [n for n in nodes if n.parent is None]

    async def done() -> bool:
        return all([await client.zscore(res.key("fl-a", "completed"), r.id) is not None for r in roots])

    try:
        await until(done, 20, "every flow to complete")
    finally:
        stop.set()
        flushes = await flushing
    assert flushes > 20
    assert await noscript_replies(client) - noscript_before > 20  # operations did meet NOSCRIPT
    report = await verify_completed(client, prefix, nodes, ledger)
    assert set(report["runs"].values()) == {1}
    assert all(not errors for errors in res.errors.values()), res.errors


async def add_or_typed_refusal(client: Any, fp: Any, flow: dict[str, Any], nodes: list[Node], prefix: str) -> None:
    try:
        await fp.add(flow)
    except BullfastError:
        assert await client.keys(f"{prefix}:*") == []  # refused, typed, nothing written
    else:
        await assert_flow_written(client, nodes)


async def test_flow_add_when_the_scripts_are_flushed_again_after_the_reload(
    res: Resources, prefix: str, flusher: Any
) -> None:
    """One call: NOSCRIPT, reload, and another client flushes again before the retry."""
    client = res.client()
    fp = res.flow()
    flow, nodes = build_tree(prefix, "again", [("ag-a", 1), ("ag-b", 7)])
    load = fp._redis.load
    reloads = []

    async def load_then_flush(script: Any, what: str = "") -> None:
        await load(script, what)
        reloads.append(script.name)
        if len(reloads) == 1:
            flusher.script_flush()

    fp._redis.load = load_then_flush  # type: ignore[method-assign]
    await client.script_flush()
    await add_or_typed_refusal(client, fp, flow, nodes, prefix)


async def test_flow_add_transaction_flushed_inside_both_attempts(
    res: Resources, prefix: str, flusher: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flow of several calls in one MULTI/EXEC: another client's flush lands between MULTI
    and EXEC, and again in the retried transaction."""
    client = res.client()
    fp = res.flow(chunk_size=3)
    flow, nodes = build_tree(prefix, "twice", [("tw-a", 1), ("tw-b", 8)])
    n_calls = -(-len(nodes) // 3)
    encode = core.encode_add_call
    calls = []

    def encode_and_flush(*args: Any) -> bytes:
        calls.append(1)
        if len(calls) in (2, n_calls + 2):
            flusher.script_flush()
        return encode(*args)

    monkeypatch.setattr(core, "encode_add_call", encode_and_flush)
    await add_or_typed_refusal(client, fp, flow, nodes, prefix)


async def test_worker_finishing_when_the_scripts_are_flushed_again_after_the_reload(
    res: Resources, prefix: str, flusher: Any
) -> None:
    client = res.client()
    ledger = f"{prefix}:ledger"
    process = make_processor(client, ledger)
    q = res.queue("wa")
    w = res.worker("wa", None, lock_duration=500, stalled_interval=100)
    load = w._redis.load
    armed: list[bool] = []

    async def load_then_flush(script: Any, what: str = "") -> None:
        await load(script, what)
        if armed and armed.pop():
            flusher.script_flush()

    sabotaged: list[bool] = []

    async def processor(job: Any) -> Any:
        if not sabotaged:
            sabotaged.append(True)
            flusher.script_flush()  # the attempt's end will meet NOSCRIPT...
            armed.append(True)  # ...and a second flush right after the worker reloads the script
        return await process(job)

    w._redis.load = load_then_flush  # type: ignore[method-assign]
    w.processor = processor
    w._inspect_processor(processor)
    w.start()
    job = await q.add("j", {"v": 1})
    await until(lambda: client.zscore(res.key("wa", "completed"), job.id), 10, "the job to complete")
    await asyncio.sleep(0.3)
    assert await client.hget(f"{ledger}:runs", f"{prefix}:wa:{job.id}") == b"1"
    assert res.errors["wa"] == []
