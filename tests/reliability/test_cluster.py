"""bullfast on a real Redis Cluster: three masters started here on loopback ports.

Queues that share a hash-tagged prefix ({bull}) keep every key of a flow in one slot, so flows
work end to end; a flow whose keys would span slots is refused before anything is written;
queues with different tags spread over the masters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from bullfast import FlowProducer, Queue, QueueEvents, Worker
from bullfast._slots import key_slot
from bullfast.embedded import RedisClusterServers, RedisServerError
from bullfast.errors import CrossSlotError

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterServers]:
    try:
        servers = RedisClusterServers(3).start()
    except RedisServerError as exc:
        pytest.fail(f"could not start a local Redis Cluster: {exc}")
    try:
        yield servers
    finally:
        servers.cleanup()


def tagged(prefix: str) -> str:
    return "{" + prefix + "}"


async def test_flow_end_to_end_on_a_cluster(cluster: RedisClusterServers, prefix: str) -> None:
    p = tagged(prefix)
    done = asyncio.Event()
    async with FlowProducer(connection=cluster.url, prefix=p) as fp:
        node = await fp.add({
            "name": "reduce", "queue_name": "reduce",
            "children": [{"name": "map", "queue_name": "map", "data": {"i": i},
                          "children": [{"name": "leaf", "queue_name": "leaf", "data": {"i": i}}]} for i in range(20)],
        })

        async def leaf(job: Any) -> int:
            return int(job.data["i"])

        async def mid(job: Any) -> int:
            values = await job.get_children_values()
            return sum(values.values()) * 2

        async def top(job: Any) -> int:
            return sum((await job.get_children_values()).values())

        workers = [
            Worker("leaf", leaf, connection=cluster.url, prefix=p, concurrency=10, drain_delay=0.2),
            Worker("map", mid, connection=cluster.url, prefix=p, concurrency=10, drain_delay=0.2),
            Worker("reduce", top, connection=cluster.url, prefix=p, drain_delay=0.2),
        ]
        workers[2].on("completed", lambda job, result: done.set())
        async with QueueEvents("reduce", connection=cluster.url, prefix=p) as events:
            result = await node.job.wait_until_finished(events, timeout=30)
            # the named connections are found on whichever primary holds them
            listed = await node.job.queue.get_workers()
            assert [w["rawname"] for w in listed] == [node.job.queue.client_name()]
            assert len(await node.job.queue.get_queue_events()) == 1
        for w in workers:
            await w.close()
        assert result == 2 * sum(range(20))
        assert await node.job.get_dependencies_count() == {"processed": 20, "unprocessed": 0, "ignored": 0, "failed": 0}


async def test_flow_spanning_slots_is_refused_before_writing(cluster: RedisClusterServers, prefix: str) -> None:
    a, b = tagged(prefix + "a"), tagged(prefix + "b")
    assert key_slot(a + ":x") != key_slot(b + ":x")
    async with FlowProducer(connection=cluster.url, prefix=a) as fp:
        with pytest.raises(CrossSlotError, match="slot"):
            await fp.add({"name": "p", "queue_name": "A",
                          "children": [{"name": "c", "queue_name": "B", "prefix": b}]})
        with pytest.raises(CrossSlotError, match="hash tag"):
            await fp.add({"name": "p", "queue_name": "A", "prefix": prefix})
    client = aioredis.RedisCluster.from_url(cluster.url.split("?")[0])
    try:
        keys = [k async for k in client.scan_iter(match=f"*{prefix}*")]
    finally:
        await client.aclose()
    assert keys == []


async def test_queues_with_different_tags_spread_over_the_masters(cluster: RedisClusterServers, prefix: str) -> None:
    client = aioredis.RedisCluster.from_url(cluster.url.split("?")[0])
    nodes = set()
    processed: dict[str, int] = {}
    workers = []
    try:
        await client.initialize()
        names = [f"{{{prefix}q{i}}}" for i in range(12)]
        for name in names:
            nodes.add(client.get_node_from_key(f"bull:{name}:wait").name)
            async with Queue(name, connection=cluster.url) as q:
                await q.add_bulk([{"name": "j", "data": {"i": i}} for i in range(5)])

            workers.append(Worker(name, counter(processed, name), connection=cluster.url, concurrency=5, drain_delay=0.2))
        for _ in range(200):
            if sum(processed.values()) == 60:
                break
            await asyncio.sleep(0.05)
        assert processed == {name: 5 for name in names}
        assert len(nodes) == 3, "queues with different tags should live on different masters"
    finally:
        for w in workers:
            await w.close()
        await client.aclose()


def counter(counts: dict[str, int], name: str) -> Any:
    async def work(job: Any) -> None:
        counts[name] = counts.get(name, 0) + 1

    return work


async def test_untagged_queue_is_refused_at_construction(cluster: RedisClusterServers) -> None:
    with pytest.raises(CrossSlotError, match="hash tag"):
        Queue("plain", connection=cluster.url)
    q = Queue("{tagged}", connection=cluster.url)
    await q.close()


async def test_fan_out_on_a_cluster_and_its_chunks_spanning_slots_refused(cluster: RedisClusterServers,
                                                                        prefix: str) -> None:
    a, b = tagged(prefix + "a"), tagged(prefix + "b")
    async with FlowProducer(connection=cluster.url, prefix=a) as fp:
        async with fp.fan_out({"name": "reduce", "queue_name": "reduce"}, chunk_size=10) as fan:
            assert await fan.add_children({"name": "map", "queue_name": "map", "data": {"i": i}} for i in range(35)) == 35
            with pytest.raises(CrossSlotError, match="slot"):
                await fan.add_children([{"name": "map", "queue_name": "map", "prefix": b}])
            with pytest.raises(CrossSlotError, match="hash tag"):
                await fan.add_children([{"name": "map", "queue_name": "map", "prefix": prefix}])
        assert fan.state == "sealed" and fan.added == 35
        assert (await fan.job.get_dependencies_count())["unprocessed"] == 35
    client = aioredis.RedisCluster.from_url(cluster.url.split("?")[0])
    try:
        strays = [k async for k in client.scan_iter(match=f"*{prefix}b*")]
        strays += [k async for k in client.scan_iter(match=f"{prefix}:*")]
        mine = [k async for k in client.scan_iter(match=f"{a}:*")]
        if mine:
            for k in mine:
                await client.delete(k)
    finally:
        await client.aclose()
    assert strays == []


def _move_slot(cluster: RedisClusterServers, slot: int) -> None:
    """Reshard: the slot, with its keys, to another master (CLUSTER SETSLOT + MIGRATE)."""
    import redis as sync_redis

    nodes = [sync_redis.Redis(port=n.port) for n in cluster.nodes]
    try:
        ids = {n.connection_pool.connection_kwargs["port"]: n.execute_command("CLUSTER", "MYID").decode() for n in nodes}
        source = next(n for n in nodes if n.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) > 0)
        target = next(n for n in nodes if n is not source)
        sport, tport = (n.connection_pool.connection_kwargs["port"] for n in (source, target))
        target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[sport])
        source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[tport])
        keys = source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
        if keys:
            source.execute_command("MIGRATE", "127.0.0.1", tport, "", 0, 5000, "KEYS", *keys)
        for n in nodes:
            n.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[tport])
    finally:
        for n in nodes:
            n.close()


async def test_adds_and_workers_follow_a_resharded_slot(cluster: RedisClusterServers, prefix: str) -> None:
    """After the queue's slot moved to another master, packed calls follow the MOVED answer
    (the adds failed with it for ever, and a worker spun on it), as ioredis does for Node."""
    p = tagged(prefix)
    async with Queue("mv", connection=cluster.url, prefix=p) as q:
        await q.add("j", {"n": 1})
        done: list[int] = []
        w = Worker("mv", lambda job: done.append(job.data["n"]), connection=cluster.url, prefix=p, drain_delay=0.2)
        errors: list[Any] = []
        w.on("error", errors.append)
        try:
            deadline = asyncio.get_running_loop().time() + 10
            while not done and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.02)
            await asyncio.to_thread(_move_slot, cluster, key_slot(q.key("meta")))
            await q.add_bulk([{"name": "j", "data": {"n": n}} for n in (2, 3)])
            async with FlowProducer(connection=cluster.url, prefix=p, chunk_size=1) as fp:
                await fp.add({"name": "p", "queue_name": "mv-p",
                              "children": [{"name": "j", "queue_name": "mv", "data": {"n": 4}}]})
            while len(done) < 4 and asyncio.get_running_loop().time() < deadline + 10:
                await asyncio.sleep(0.02)
            assert sorted(done) == [1, 2, 3, 4]
            assert len(errors) < 20, errors[:3]  # (a few while its blocking wait follows the move)
        finally:
            await w.close()


def test_the_demo_runs_on_a_cluster(cluster: RedisClusterServers) -> None:
    """The demo's own prefix gets a hash tag on a cluster (it was refused: CrossSlotError)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "bullfast", "demo", "--children", "200", "--url", cluster.url],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


async def test_a_given_cluster_client_with_another_text_encoding_is_not_used_as_is(
    cluster: RedisClusterServers, prefix: str
) -> None:
    """bullfast writes keys as UTF-8 (a UTF-16 client computed other slots: MOVED, reported as
    a failed script)."""
    port = cluster.nodes[0].port
    given = aioredis.RedisCluster(host="127.0.0.1", port=port, encoding="utf-16")
    try:
        async with Queue("enc", connection=given, prefix="{" + prefix + "}") as q:
            job = await q.add("j", {"ü": 1})
            again = await q.get_job(job.id)
            assert again is not None and again.data == {"ü": 1}
    finally:
        await given.aclose()
