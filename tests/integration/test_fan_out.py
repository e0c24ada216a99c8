"""Streaming fan-out: children from an iterable in bounded chunks; seal, resume, abort."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from bullfast import FlowProducer, Queue, Worker
from bullfast._removal import ONE_CALL_CHILDREN, SWEEP_WINDOW
from bullfast.errors import (
    DataNotSerializableError,
    InvalidFlowError,
    InvalidOptionError,
    JobExistsError,
    JobLockedError,
    WrongKeyTypeError,
)
from bullfast.fanout import FanOutClosedError

QUEUE_KEYS = {"meta", "id", "events", "marker", "wait", "paused", "delayed", "prioritized", "pc",
              "waiting-children", "completed", "failed", "active", "stalled-check"}


async def job_keys(client: Any, prefix: str, queue: str) -> list[bytes]:
    """Keys of jobs (hashes and their sub-keys) of one queue, not of the queue itself."""
    found = [k async for k in client.scan_iter(match=f"{prefix}:{queue}:*", count=5000)]
    return [k for k in found if k.decode().split(":", 2)[2] not in QUEUE_KEYS]


def rows(n: int, start: int = 0) -> Iterator[dict[str, Any]]:
    for i in range(start, n):
        yield {"name": "map", "data": {"i": i}}


async def run_workers(redis_url: str, prefix: str, until: asyncio.Event, **kw: Any) -> list[Worker]:
    async def square(job: Any) -> Any:
        return {"n": job.data["i"] ** 2}

    async def total(job: Any) -> Any:
        return await job.reduce_children_values(lambda acc, key, v: acc + v["n"], 0)

    mapper = Worker("map", square, connection=redis_url, prefix=prefix, concurrency=20, drain_delay=0.2, **kw)
    reducer = Worker("reduce", total, connection=redis_url, prefix=prefix, drain_delay=0.2)
    reducer.on("completed", lambda job, result: until.set())
    return [mapper, reducer]


async def test_stream_seal_and_reduce(redis_url: str, prefix: str, client: Any, each_core: str) -> None:
    done = asyncio.Event()
    workers = await run_workers(redis_url, prefix, done)
    async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
        async with fp.fan_out({"name": "reduce", "queue_name": "reduce"}, chunk_size=50) as fan:
            assert await fan.add_children(rows(1000), queue_name="map") == 1000
            # the parent cannot run while unsealed, even if every child is done
            assert await fan.job.get_state() == "waiting-children"
            assert await client.hget(fan.parent_key, "fanout") == b"open"
        assert fan.state == "sealed" and fan.added == 1000
        await asyncio.wait_for(done.wait(), 30)
        parent = await fan.job.queue.get_job(fan.job.id)
        assert parent is not None and parent.returnvalue == sum(i * i for i in range(1000))
        assert len(await parent.get_children_values()) == 1000
        assert await parent.get_dependencies_count() == {"processed": 1000, "unprocessed": 0, "ignored": 0, "failed": 0}
        assert await fan.job.get_state() == "completed"
    for w in workers:
        await w.close()


async def test_sealing_after_children_finished_releases_at_once(redis_url: str, prefix: str) -> None:
    async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
        fan = await fp.fan_out({"name": "reduce", "queue_name": "reduce"}).open()
        await fan.add_children(rows(30), queue_name="map")

        async def square(job: Any) -> Any:
            return {"n": job.data["i"] ** 2}

        counts: dict[str, int] = {}
        worker = Worker("map", square, connection=redis_url, prefix=prefix, concurrency=10, drain_delay=0.2)
        async with Queue("map", connection=redis_url, prefix=prefix) as q:
            while (await q.get_job_counts("completed"))["completed"] < 30:
                await asyncio.sleep(0.02)
            counts = await fan.job.get_dependencies_count()
        await worker.close()
        assert counts["unprocessed"] == 1  # only the placeholder
        assert await fan.job.get_state() == "waiting-children"
        await fan.seal()
        assert await fan.job.get_state() == "waiting"
        with pytest.raises(FanOutClosedError):
            await fan.seal()
        with pytest.raises(FanOutClosedError):
            await fan.add_children(rows(1), queue_name="map")


async def test_async_iterables_and_subtrees(redis_url: str, prefix: str, client: Any) -> None:
    async def source() -> AsyncIterator[dict[str, Any]]:
        for i in range(20):
            yield {"name": "group", "queue_name": "group", "data": {"g": i},
                   "children": [{"name": "leaf", "queue_name": "map", "data": {"i": i * 10 + k}} for k in range(3)]}

    async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
        async with fp.fan_out({"name": "reduce", "queue_name": "reduce"}, chunk_size=7) as fan:
            assert await fan.add_children(source()) == 20
        deps = await client.smembers(f"{fan.parent_key}:dependencies")
        assert len(deps) == 20 and all(d.startswith(f"{prefix}:group:".encode()) for d in deps)
        assert await client.zcard(f"{prefix}:group:waiting-children") == 20
        assert await client.llen(f"{prefix}:map:wait") == 60


async def test_an_item_with_a_big_sub_tree_is_a_fan_out_of_its_own(redis_url: str, prefix: str, client: Any) -> None:
    """A chunk writes an item's sub-tree whole, so a very big one goes as a nested fan-out: a
    fan-out whose parent is a child of the outer one. The outer parent waits for it."""
    done = asyncio.Event()

    async def square(job: Any) -> Any:
        return {"n": job.data["i"] ** 2}

    async def total(job: Any) -> Any:
        return await job.reduce_children_values(lambda acc, key, v: acc + (v["n"] if isinstance(v, dict) else v), 0)

    mapper = Worker("map", square, connection=redis_url, prefix=prefix, concurrency=20, drain_delay=0.2)
    groups = Worker("group", total, connection=redis_url, prefix=prefix, drain_delay=0.2)
    reducer = Worker("reduce", total, connection=redis_url, prefix=prefix, drain_delay=0.2)
    reducer.on("completed", lambda job, result: done.set())
    try:
        async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
            async with fp.fan_out({"name": "reduce", "queue_name": "reduce"}, chunk_size=20) as outer:
                await outer.add_children(rows(50), queue_name="map")
                inner_node = {"name": "group", "queue_name": "group",
                              "opts": {"parent": {"id": outer.job.id, "queue": outer.job.queue.qualified_name}}}
                async with fp.fan_out(inner_node, chunk_size=20) as inner:
                    await inner.add_children(rows(150, start=50), queue_name="map")
                assert await client.sismember(f"{outer.parent_key}:dependencies", inner.parent_key)
                await outer.add_children(rows(200, start=150), queue_name="map")
                # the outer parent cannot run before the inner one is done, sealed or not
            await asyncio.wait_for(done.wait(), 30)
            parent = await outer.job.queue.get_job(outer.job.id)
            assert parent is not None and parent.returnvalue == sum(i * i for i in range(200))
            assert len(await parent.get_children_values()) == 50 + 1 + 50
    finally:
        for w in (mapper, groups, reducer):
            await w.close()


async def test_bad_item_stops_the_stream_with_a_path(redis_url: str, prefix: str, client: Any) -> None:
    def items() -> Iterator[dict[str, Any]]:
        yield from rows(25)
        yield {"name": "map", "data": {"bad": object()}}

    async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
        fan = await fp.fan_out({"name": "reduce", "queue_name": "reduce"}, chunk_size=10).open()
        with pytest.raises(DataNotSerializableError) as info:
            await fan.add_children(items(), queue_name="map")
        assert "JSON" in str(info.value)
        await fan.refresh()
        assert fan.state == "open" and fan.added == 20  # whole chunks only
        assert await client.llen(f"{prefix}:map:wait") == 20
        with pytest.raises(InvalidFlowError):
            await fan.add_children([{"name": "x", "queue_name": "map", "opts": {"parent": {"id": "a", "queue": "b:c"}}}])


@pytest.mark.parametrize("error", [ValueError, KeyboardInterrupt])
async def test_a_source_that_fails_leaves_added_counting_what_was_written(
    redis_url: str, prefix: str, error: type[BaseException]
) -> None:
    """The chunks sent before the caller's source raised stand: fan.added counts them (before,
    it stayed behind, so skip=fan.added would have sent them again, and the next add was
    refused as if another producer had written meanwhile). Also when what the source raises
    is no Exception (Ctrl-C in a generator: KeyboardInterrupt)."""
    def rows_until(n: int, fail_at: int) -> Iterator[dict[str, Any]]:
        for i in range(n):
            if i == fail_at:
                raise error("source broke")
            yield {"name": "map", "data": {"i": i}}

    async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
        fan = await fp.fan_out({"name": "reduce", "queue_name": "reduce"}, chunk_size=10, window=3).open()
        with pytest.raises(error, match="source broke"):
            await fan.add_children(rows_until(100, 25), queue_name="map")
        assert fan.added == 20  # two whole chunks
        assert await fan.add_children(rows_until(30, -1), queue_name="map", skip=fan.added) == 10
        await fan.seal()
        assert fan.added == 30 and await fan.job.get_dependencies_count(unprocessed=True) == {"unprocessed": 30}


async def test_a_failed_child_closes_the_fan_out(redis_url: str, prefix: str) -> None:
    async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
        fan = await fp.fan_out({"name": "reduce", "queue_name": "reduce"}).open()
        await fan.add_children(rows(3), queue_name="map")

        async def boom(job: Any) -> None:
            raise RuntimeError("no")

        failed = asyncio.Event()
        worker = Worker("map", boom, connection=redis_url, prefix=prefix, drain_delay=0.2)
        worker.on("failed", lambda job, err: failed.set())
        await asyncio.wait_for(failed.wait(), 10)
        await worker.close()
        # the default policy (fail_parent_on_failure) released the parent to fail: no more children
        with pytest.raises(FanOutClosedError):
            await fan.add_children(rows(5), queue_name="map")
        # and the seal says the parent will not run as its end, tidying the placeholder away
        with pytest.raises(FanOutClosedError, match="stopped waiting"):
            await fan.seal()
        assert fan.state == "sealed"
        members = await fp._redis.client.smembers(f"{fan.parent_key}:dependencies")
        assert f"{fan.parent_key}:unsealed".encode() not in members


async def test_abort_fail_and_abort_remove(redis_url: str, prefix: str, client: Any) -> None:
    async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
        fan = await fp.fan_out({"name": "reduce", "queue_name": "reduce"}).open()
        await fan.add_children(rows(10), queue_name="map")
        await fan.abort(reason="source unavailable")
        parent = await fan.job.queue.get_job(fan.job.id)
        assert parent is not None and parent.deferred_failure == "source unavailable"
        assert await fan.job.get_state() == "waiting"
        assert await client.llen(f"{prefix}:map:wait") == 0  # pending children removed

        failed = asyncio.Event()
        reasons: list[str] = []

        async def reducer(job: Any) -> None:
            raise AssertionError("a failed fan-out's parent must not run")

        w = Worker("reduce", reducer, connection=redis_url, prefix=prefix, drain_delay=0.2)
        w.on("failed", lambda job, err: (reasons.append(str(err)), failed.set()))
        await asyncio.wait_for(failed.wait(), 10)
        await w.close()
        assert reasons == ["source unavailable"]

        other = await fp.fan_out({"name": "reduce", "queue_name": "reduce"}).open()
        await other.add_children(rows(10), queue_name="map")
        await other.abort(remove=True)
        assert await client.exists(other.parent_key) == 0
        assert await client.llen(f"{prefix}:map:wait") == 0


@pytest.mark.private_redis
async def test_script_flush_mid_stream_writes_every_child_once(redis_url: str, prefix: str, client: Any) -> None:
    async def items() -> AsyncIterator[dict[str, Any]]:
        for i in range(300):
            if i in (55, 160):
                await client.script_flush()
            yield {"name": "map", "data": {"i": i}}

    async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
        async with fp.fan_out({"name": "reduce", "queue_name": "reduce"}, chunk_size=20, window=4) as fan:
            assert await fan.add_children(items(), queue_name="map") == 300
    ids = await client.lrange(f"{prefix}:map:wait", 0, -1)
    data = sorted([int((await client.hget(f"{prefix}:map:{i.decode()}", "data"))[5:-1]) for i in ids])
    assert data == list(range(300))
    assert await client.scard(f"{fan.parent_key}:dependencies") == 300


PRODUCER = textwrap.dedent(
    """
    import asyncio, os, sys
    from bullfast import FlowProducer

    async def main(url, prefix):
        fp = FlowProducer(connection=url, prefix=prefix)
        fan = await fp.fan_out({"name": "reduce", "queue_name": "reduce", "opts": {"job_id": "big"}},
                               chunk_size=100).open()
        print("opened", flush=True)

        def items():
            for i in range(100_000):
                if i == 2_000:
                    print("halfway", flush=True)
                yield {"name": "map", "queue_name": "map", "data": {"i": i}}

        await fan.add_children(items())

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def test_producer_killed_mid_stream_then_resumed(redis_url: str, prefix: str, client: Any, tmp_path: Any) -> None:
    script = tmp_path / "producer.py"
    script.write_text(PRODUCER)
    proc = subprocess.Popen([sys.executable, str(script), redis_url, prefix], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "opened"
    assert proc.stdout.readline().strip() == "halfway"
    await asyncio.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()

    state, added = await client.hmget(f"{prefix}:reduce:big", "fanout", "fanoutAdded")
    assert state == b"open"
    added_n = int(added)
    assert 0 < added_n < 100_000
    # exactly the counted items are there: each chunk and its count were one atomic call
    assert await client.llen(f"{prefix}:map:wait") == added_n

    n = 3_000
    async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
        fan = await fp.resume_fan_out("reduce", "big")
        assert fan.added == added_n
        total = max(n, added_n + 500)
        await fan.add_children(rows(total), queue_name="map", skip=fan.added)
        await fan.seal()
    ids = await client.lrange(f"{prefix}:map:wait", 0, -1)
    assert len(ids) == total
    async with client.pipeline(transaction=False) as pipe:
        for i in ids:
            pipe.hget(f"{prefix}:map:{i.decode()}", "data")
        values = sorted(int(v[5:-1]) for v in await pipe.execute())
    assert values == list(range(total))


def test_blocking_twin(redis_url: str, prefix: str) -> None:
    from bullfast.sync import FlowProducer as SyncFlowProducer

    with SyncFlowProducer(connection=redis_url, prefix=prefix) as fp:
        with fp.fan_out({"name": "reduce", "queue_name": "reduce"}, chunk_size=100) as fan:
            assert fan.add_children(rows(250), queue_name="map") == 250
        assert fan.state == "sealed"
        assert fan.job.get_state() == "waiting-children"
        assert fan.job.get_dependencies_count()["unprocessed"] == 250




@pytest.mark.private_redis
@pytest.mark.parametrize("remove", [False, True], ids=["fail", "remove"])
async def test_abort_of_30000_children_never_blocks_redis(redis_url: str, prefix: str, client: Any,
                                                          remove: bool) -> None:
    """One script per child LREM-ing the wait list held Redis for seconds at 10,000 children and
    made it answer BUSY at 30,000; now the removal is many short calls, with about one LREM per
    list window instead of one per child, and a client pinging all along never meets BUSY."""
    n = 30_000
    async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
        fan = await fp.fan_out({"name": "reduce", "queue_name": "reduce"}).open()
        assert await fan.add_children(rows(n), queue_name="map") == n
        assert len(await job_keys(client, prefix, "map")) == n
        await client.config_resetstat()
        errors: list[BaseException] = []
        pings = 0
        stop = asyncio.Event()

        async def probe() -> None:
            nonlocal pings
            async with aioredis.from_url(redis_url) as other:
                while not stop.is_set():
                    try:
                        await other.ping()
                        pings += 1
                    except Exception as exc:  # BUSY is what the old abort caused
                        errors.append(exc)
                    await asyncio.sleep(0)

        prober = asyncio.create_task(probe())
        try:
            await fan.abort(remove=remove)
        finally:
            stop.set()
            await prober
        stats = await client.info("commandstats")
        if not remove:
            assert await fan.job.get_state() == "waiting"
            assert await client.scard(f"{fan.parent_key}:dependencies") == 0
    assert errors == [] and pings > 0
    assert stats["cmdstat_lrem"]["calls"] <= 2 * n // SWEEP_WINDOW + 10  # not one per child
    assert stats["cmdstat_evalsha"]["calls"] >= n // SWEEP_WINDOW  # many short calls
    assert await job_keys(client, prefix, "map") == []
    assert await client.llen(f"{prefix}:map:wait") == 0
    if remove:
        assert await job_keys(client, prefix, "reduce") == []


async def test_removing_a_big_parent_reaches_every_state(redis_url: str, prefix: str, client: Any) -> None:
    """A parent with more children than one call removes, in every state a child can wait in:
    wait, a (v5) paused list, delayed, prioritized, waiting for children of its own; a worker's
    child makes the whole removal refuse, before anything is removed."""
    n = ONE_CALL_CHILDREN * 2
    children: list[dict[str, Any]] = []
    for i in range(n):
        kind = i % 5
        if kind == 0:
            children.append({"name": "c", "queue_name": "map", "data": {"i": i}})
        elif kind == 1:
            children.append({"name": "c", "queue_name": "held", "data": {"i": i}})
        elif kind == 2:
            children.append({"name": "c", "queue_name": "map", "opts": {"delay": 60_000}})
        elif kind == 3:
            children.append({"name": "c", "queue_name": "map", "opts": {"priority": 3}})
        else:
            children.append({"name": "c", "queue_name": "map",
                             "children": [{"name": "leaf", "queue_name": "leaf"} for _ in range(2)]})
    async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
        fan = await fp.fan_out({"name": "reduce", "queue_name": "reduce"}).open()
        await fan.add_children(children)
        await fan.seal()
        # a queue paused by BullMQ v5 keeps its jobs in the legacy 'paused' list
        await client.rename(f"{prefix}:held:wait", f"{prefix}:held:paused")
        before = {q: len(await job_keys(client, prefix, q)) for q in ("map", "held", "leaf", "reduce")}
        assert before["held"] == n // 5 and before["leaf"] == 2 * n // 5
        # a worker holds one child: nothing is removed
        some = (await client.lrange(f"{prefix}:held:paused", 0, 0))[0].decode()
        await client.set(f"{prefix}:held:{some}:lock", "token", px=60_000)
        with pytest.raises(JobLockedError):
            await fan.job.remove()
        assert {q: len(await job_keys(client, prefix, q)) for q in before} == {**before, "held": before["held"] + 1}
        await client.delete(f"{prefix}:held:{some}:lock")
        await fan.job.remove()
    for q in ("map", "held", "leaf", "reduce"):
        assert await job_keys(client, prefix, q) == [], q
    for key in ("map:wait", "held:paused", "map:delayed", "map:prioritized", "map:waiting-children",
                "reduce:waiting-children"):
        assert await client.exists(f"{prefix}:{key}") == 0, key


def items_with_ids(n: int, tag: str = "c") -> list[dict[str, Any]]:
    return [{"name": "map", "queue_name": "map", "data": {"i": i}, "opts": {"job_id": f"{tag}-{i}"}} for i in range(n)]


@pytest.mark.parametrize("window", [3, 1])
async def test_resume_sends_again_from_the_start_and_no_child_is_added_twice(redis_url: str, prefix: str,
                                                                            client: Any, window: int) -> None:
    async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
        fan = await fp.fan_out({"name": "reduce", "queue_name": "reduce", "opts": {"job_id": "p"}},
                               chunk_size=7, window=window).open()
        assert await fan.add_children(items_with_ids(60)) == 60  # then the producer "died"
        again = await fp.resume_fan_out("reduce", "p")
        again.chunk_size, again.window = 7, window
        assert again.added == 60
        # the whole deterministic source once more: the first 60 are already there
        assert await again.add_children(items_with_ids(100)) == 40
        assert (again.present, again.added) == (60, 100)
        assert await client.hget(fan.parent_key, "fanoutAdded") == b"100"
        assert await client.llen(f"{prefix}:map:wait") == 100
        assert await client.scard(f"{fan.parent_key}:dependencies") == 101  # and the placeholder
        # the quick way, skip=fan.added, passes over what is counted
        assert await again.add_children(items_with_ids(130), skip=again.added) == 30
        assert (again.present, again.added) == (60, 130)
        await again.seal()
    assert await client.llen(f"{prefix}:map:wait") == 130


@pytest.mark.parametrize("policy", ["remove_dependency_on_failure", "ignore_dependency_on_failure"])
async def test_resume_from_the_start_knows_children_that_failed_and_left(redis_url: str, prefix: str,
                                                                         policy: str) -> None:
    """A child that failed with remove_dependency_on_failure is in none of the parent's groups,
    only its own parentKey names the parent: a re-send from the start refused it as another
    parent's child ("already exists as a child of <this very parent>")."""
    def items(n: int) -> Iterator[dict[str, Any]]:
        for i in range(n):
            yield {"name": "map", "queue_name": "map", "data": {"i": i},
                   "opts": {"job_id": f"c{i}", policy: True, "fail_parent_on_failure": False}}

    async def fail_some(job: Any) -> Any:
        if job.data["i"] % 3 == 0:
            raise RuntimeError("boom")
        return job.data["i"]

    async with FlowProducer(connection=redis_url, prefix=prefix) as fp, \
            Queue("map", connection=redis_url, prefix=prefix) as q:
        fan = await fp.fan_out({"name": "reduce", "queue_name": "reduce", "opts": {"job_id": "p"}}).open()
        await fan.add_children(items(10))
        worker = Worker("map", fail_some, connection=redis_url, prefix=prefix, concurrency=5, drain_delay=0.2)
        for _ in range(500):
            counts = await q.get_job_counts("completed", "failed")
            if counts["completed"] + counts["failed"] == 10:
                break
            await asyncio.sleep(0.01)
        await worker.close()
        assert counts == {"completed": 6, "failed": 4}
        again = await fp.resume_fan_out("reduce", "p")
        assert await again.add_children(items(20)) == 10
        assert (again.present, again.added) == (10, 20)
        await again.seal()
        assert await q.get_job_counts("wait") == {"wait": 10}


async def test_an_id_of_another_parent_or_of_a_plain_job_is_refused_clearly(redis_url: str, prefix: str,
                                                                           client: Any) -> None:
    async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
        await fp.add({"name": "other", "queue_name": "reduce", "opts": {"job_id": "other"},
                      "children": [{"name": "map", "queue_name": "map", "opts": {"job_id": "taken"}}]})
        async with Queue("map", connection=redis_url, prefix=prefix) as q:
            await q.add("plain", {}, {"job_id": "alone"})
        fan = await fp.fan_out({"name": "reduce", "queue_name": "reduce"}, chunk_size=5).open()
        items = items_with_ids(3) + [{"name": "map", "queue_name": "map", "opts": {"job_id": "taken"}}]
        with pytest.raises(JobExistsError, match=f"job {prefix}:map:taken already exists as a child of "
                                                 f"{prefix}:reduce:other, so it cannot be a child of"):
            await fan.add_children(items)
        with pytest.raises(JobExistsError, match="already exists as a job without a parent"):
            await fan.add_children([{"name": "map", "queue_name": "map", "opts": {"job_id": "alone"}}])
        assert fan.added == 0 and fan.state == "open"
        assert await client.scard(f"{fan.parent_key}:dependencies") == 1  # nothing of either chunk
        assert await client.exists(f"{prefix}:map:c-0") == 0


async def test_a_foreign_key_of_another_type_refuses_the_chunk_before_any_write(redis_url: str, prefix: str,
                                                                               client: Any) -> None:
    async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
        fan = await fp.fan_out({"name": "reduce", "queue_name": "reduce"}).open()
        await client.set(f"{prefix}:map:wait", "another application's string")
        with pytest.raises(WrongKeyTypeError, match=f"{prefix}:map:wait"):
            await fan.add_children(rows(10), queue_name="map")
        await fan.refresh()
        assert fan.added == 0 and await job_keys(client, prefix, "map") == []
        assert await client.get(f"{prefix}:map:wait") == b"another application's string"
        await client.delete(f"{prefix}:map:wait")
        assert await fan.add_children(rows(10), queue_name="map") == 10


async def test_children_run_while_the_stream_is_still_adding(redis_url: str, prefix: str) -> None:
    first_done = asyncio.Event()

    async def square(job: Any) -> Any:
        return job.data["i"] ** 2

    worker = Worker("map", square, connection=redis_url, prefix=prefix, concurrency=5, drain_delay=0.2)
    worker.on("completed", lambda job, result: first_done.set())

    async def source() -> AsyncIterator[dict[str, Any]]:
        for i in range(40):
            if i == 20:
                # the next chunk is only asked for once a worker finished a child of this one
                await asyncio.wait_for(first_done.wait(), 30)
            yield {"name": "map", "queue_name": "map", "data": {"i": i}}

    try:
        async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
            async with fp.fan_out({"name": "reduce", "queue_name": "reduce"}, chunk_size=10, window=1) as fan:
                assert await fan.add_children(source()) == 40
                done_before_seal = (await fan.job.get_dependencies_count())["processed"]
            assert done_before_seal >= 1
    finally:
        await worker.close()


async def test_streamed_reads_of_a_fan_out_page_through_everything(redis_url: str, prefix: str) -> None:
    async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
        fan = await fp.fan_out({"name": "reduce", "queue_name": "reduce"}, chunk_size=9).open()
        await fan.add_children(rows(50), queue_name="map")
        deps = [k async for k in fan.job.iter_dependencies(page=7)]
        assert len(deps) == len(set(deps)) == 51 and f"{fan.parent_key}:unsealed" in deps
        assert set(deps) - {f"{fan.parent_key}:unsealed"} == {
            m.decode() for m in await fp.client.smembers(f"{fan.parent_key}:dependencies")} - {f"{fan.parent_key}:unsealed"}

        async def fail_some(job: Any) -> Any:
            if job.data["i"] < 10:
                raise ValueError("no")
            return job.data["i"]

        w = Worker("map", fail_some, connection=redis_url, prefix=prefix, concurrency=10, drain_delay=0.2)
        try:
            while (await fan.job.get_dependencies_count())["unprocessed"] > 1:
                await asyncio.sleep(0.02)
        finally:
            await w.close()
        failed = [k async for k in fan.job.iter_failed_children(page=3)]
        assert len(failed) == len(set(failed)) == 10
        values = {k: v async for k, v in fan.job.iter_children_values(page=4)}
        assert sorted(values.values()) == list(range(10, 50))
        assert set(failed).isdisjoint(values)


async def test_two_producers_on_one_fan_out_never_write_a_child_twice(redis_url: str, prefix: str,
                                                                      client: Any) -> None:
    """Two producers feeding one fan-out at once: a chunk whose expected count another producer
    moved on is refused whole; the refused producer resumes by sending its items again (their
    ids make that safe), and every child is there exactly once."""
    async with FlowProducer(connection=redis_url, prefix=prefix) as a, \
            FlowProducer(connection=redis_url, prefix=prefix) as b:
        fan_a = await a.fan_out({"name": "reduce", "queue_name": "reduce", "opts": {"job_id": "p"}},
                                chunk_size=10).open()
        fan_b = await b.resume_fan_out("reduce", "p")
        fan_b.chunk_size = 10
        sources = {"a": items_with_ids(200, "a"), "b": items_with_ids(200, "b")}
        results = await asyncio.gather(fan_a.add_children(sources["a"]), fan_b.add_children(sources["b"]),
                                       return_exceptions=True)
        for fp, tag, result in ((a, "a", results[0]), (b, "b", results[1])):
            if isinstance(result, BaseException):
                assert isinstance(result, FanOutClosedError) and "another producer" in str(result)
                again = await fp.resume_fan_out("reduce", "p")
                await again.add_children(sources[tag])
        await fan_a.refresh()
        assert fan_a.added == 400
        ids = await client.lrange(f"{prefix}:map:wait", 0, -1)
        assert len(ids) == len(set(ids)) == 400
        assert await client.scard(f"{fan_a.parent_key}:dependencies") == 401


def test_blocking_twin_resume_and_abort(redis_url: str, prefix: str) -> None:
    from bullfast.sync import FlowProducer as SyncFlowProducer

    with SyncFlowProducer(connection=redis_url, prefix=prefix) as fp:
        fan = fp.fan_out({"name": "reduce", "queue_name": "reduce", "opts": {"job_id": "s"}}, chunk_size=40)
        with pytest.raises(RuntimeError):
            with fan:
                fan.add_children(items_with_ids(100))
                raise RuntimeError("the producer fails")  # leaves the fan-out open
        again = fp.resume_fan_out("reduce", "s")
        assert again.added == 100
        assert again.add_children(items_with_ids(150)) == 50 and again.present == 100
        again.abort(reason="given up")
        assert again.state == "aborted"
        assert again.job.get_state() == "waiting"
        assert again.job.get_dependencies_count()["unprocessed"] == 0
        removable = fp.fan_out({"name": "reduce", "queue_name": "reduce"})
        with removable:
            removable.add_children(rows(30), queue_name="map")
            removable.abort(remove=True)
        assert removable.state == "removed" and removable.job.get_state() == "unknown"


async def test_removing_a_big_parent_spares_a_job_after_a_child_whose_own_child_shares_the_list(
    redis_url: str, prefix: str, client: Any
) -> None:
    """A child waiting in a list, with a child of its own in the same list: removing it
    removes that one too and shifts the list; the walk must still take out exactly the
    parent's children, and never the unrelated job next to them."""
    async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
        node = await fp.add({"name": "p", "queue_name": "big", "opts": {"job_id": "p"}, "children": [
            {"name": "c", "queue_name": "sw", "opts": {"job_id": f"c{i}"}} for i in range(150)
        ]})
    async with Queue("sw", connection=redis_url, prefix=prefix) as q:
        bystander = await q.add("u", {}, job_id="bystander")
        grandchild = await q.add("g", {}, job_id="g", parent={"id": "c75", "queue": f"{prefix}:sw"})
        # the bystander sits between children in the list: move it there
        await client.lrem(f"{prefix}:sw:wait", 1, "bystander")
        await client.linsert(f"{prefix}:sw:wait", "BEFORE", "c80", "bystander")
    async with Queue("big", connection=redis_url, prefix=prefix) as parents:
        assert await parents.remove("p")
    assert await client.lrange(f"{prefix}:sw:wait", 0, -1) == [b"bystander"]
    assert await client.exists(f"{prefix}:sw:{bystander.id}") == 1
    assert await client.exists(f"{prefix}:sw:{grandchild.id}", *(c.job.key for c in node.children or [])) == 0


async def test_an_abort_keeps_the_parent_waiting_until_its_children_are_gone(
    redis_url: str, prefix: str, client: Any
) -> None:
    """The first step of an abort (the producer dies right after it) leaves a parent that no
    worker can take: 'aborting', still in waiting-children, refusing new children. Resumed,
    abort() removes the children and only then lets the parent go, to fail by the next worker."""
    async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
        fan = await fp.fan_out({"name": "reduce", "queue_name": "reduce", "opts": {"job_id": "p"}}).open()
        await fan.add_children(items_with_ids(300))
        await fan._end("fail", "given up")  # then the producer "died"
        assert await client.hget(fan.parent_key, "fanout") == b"aborting"
        assert await client.zscore(f"{prefix}:reduce:waiting-children", "p") is not None
        assert await client.llen(f"{prefix}:reduce:wait") == 0
        with pytest.raises(FanOutClosedError):
            await fan.add_children(items_with_ids(1, tag="late"))
        again = await fp.resume_fan_out("reduce", "p")
        assert again.state == "aborting"
        await again.abort(reason="given up")
        assert again.state == "aborted"
        assert await client.llen(f"{prefix}:map:wait") == 0
        assert await client.exists(*(f"{prefix}:map:c-{i}" for i in range(300))) == 0
        assert await client.lrange(f"{prefix}:reduce:wait", 0, -1) == [b"p"]
        failed: asyncio.Queue[Any] = asyncio.Queue()
        worker = Worker("reduce", lambda job: "ran", connection=redis_url, prefix=prefix)
        worker.on("failed", lambda job, err, *_: failed.put_nowait(str(err)))
        try:
            assert await asyncio.wait_for(failed.get(), 5) == "given up"
        finally:
            await worker.close()
        await again.abort()  # again: nothing left to do, no error


async def test_bad_chunk_size_or_window_is_refused_before_anything_is_written(
    redis_url: str, prefix: str, client: Any
) -> None:
    async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
        for kw in ({"window": 0}, {"window": -1}, {"chunk_size": 0}, {"chunk_size": 2.5}, {"window": True}):
            with pytest.raises(InvalidOptionError):
                fp.fan_out({"name": "reduce", "queue_name": "reduce"}, **kw)
    assert [k async for k in client.scan_iter(match=f"{prefix}:*")] == []


async def test_remove_unprocessed_children_of_an_open_fan_out_keeps_its_placeholder(redis_url: str, prefix: str, client: Any) -> None:
    """The placeholder of an open fan-out is no child: removing the unprocessed children of a
    small one (the one-call path) left the parent released to wait while still open, as the
    paged path of a big one never did."""
    async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
        fan = await fp.fan_out({"name": "reduce", "queue_name": "reduce"}).open()
        await fan.add_children(rows(3), queue_name="map")
        assert await fan.job.remove_unprocessed_children() == 3
        assert await fan.job.get_state() == "waiting-children"
        assert await client.smembers(f"{fan.parent_key}:dependencies") == {f"{fan.parent_key}:unsealed".encode()}
        await fan.add_children(rows(2), queue_name="map")  # still open
        await fan.seal()
        assert await fan.job.get_dependencies_count() == {"processed": 0, "unprocessed": 2, "ignored": 0, "failed": 0}
