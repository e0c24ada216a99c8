"""FlowProducer against a real Redis: trees of any shape, atomically, and nothing on bad input."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bullfast import FlowProducer, Queue
from bullfast._add import now_ms
from bullfast.embedded import free_port
from bullfast.errors import (
    DataNotSerializableError,
    InvalidFlowError,
    JobExistsError,
    ParentCannotBeReplacedError,
    ParentNotFoundError,
    RedisUnavailableError,
    WrongKeyTypeError,
)


async def keys(client: Any, prefix: str) -> list[str]:
    return sorted([k.decode() async for k in client.scan_iter(match=f"{prefix}:*")])


def fan_out(n: int, queue: str = "map", **child: Any) -> dict[str, Any]:
    return {
        "name": "reduce",
        "queue_name": "reduce",
        "data": {"n": n},
        "children": [{"name": "map", "queue_name": queue, "data": {"i": i}, **child} for i in range(n)],
    }


@pytest.mark.parametrize("chunk_size", [2000, 7])
async def test_fan_out_is_written_whole(redis_url: str, prefix: str, client: Any, chunk_size: int, each_core: str) -> None:
    async with FlowProducer(connection=redis_url, prefix=prefix, chunk_size=chunk_size) as fp:
        node = await fp.add(fan_out(50))
    pid = node.job.id
    assert await client.zscore(f"{prefix}:reduce:waiting-children", pid) is not None
    deps = await client.smembers(f"{prefix}:reduce:{pid}:dependencies")
    assert deps == {f"{prefix}:map:{c.job.id}".encode() for c in node.children}
    wait = [i.decode() for i in await client.lrange(f"{prefix}:map:wait", 0, -1)]
    assert wait == [c.job.id for c in reversed(node.children)]  # LPUSH: the first added is at the tail
    assert await client.get(f"{prefix}:map:id") == b"50"
    assert not [k for k in await keys(client, prefix) if ":bf:guard:" in k]
    raw = await client.hgetall(f"{prefix}:map:{node.children[3].job.id}")
    assert json.loads(raw[b"data"]) == {"i": 3}
    assert raw[b"parentKey"].decode() == f"{prefix}:reduce:{pid}"


async def test_nested_multi_queue_and_prefix(redis_url: str, prefix: str, client: Any) -> None:
    tree = {
        "name": "root", "queue_name": "A", "children": [
            {"name": "b", "queue_name": "B", "children": [
                {"name": "c", "queue_name": "C", "prefix": prefix + "2", "data": [1]},
            ]},
            {"name": "d", "queue_name": "C", "opts": {"priority": 4}},
            {"name": "e", "queue_name": "C", "opts": {"delay": 60000}},
        ],
    }
    async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
        node = await fp.add(tree)
        flow = await fp.get_flow("A", node.job.id)
    b, d, e = node.children
    c = b.children[0]
    try:
        assert await client.smembers(f"{prefix}:B:{b.job.id}:dependencies") == {f"{prefix}2:C:{c.job.id}".encode()}
        assert (await client.hget(f"{prefix}2:C:{c.job.id}", "parentKey")).decode() == f"{prefix}:B:{b.job.id}"
        assert await client.zscore(f"{prefix}:C:prioritized", d.job.id) == 4 * 2**32 + 1
        score = await client.zscore(f"{prefix}:C:delayed", e.job.id)
        assert score // 4096 == e.job.timestamp + 60000
        assert flow is not None and {n.job.name for n in flow.children or []} == {"b", "d", "e"}
        assert c.job.parent == {"id": b.job.id, "queueKey": f"{prefix}:B", "fpof": True}
        assert c.job.opts["parent"] == {"id": b.job.id, "queue": f"{prefix}:B"}
    finally:
        for k in await keys(client, prefix + "2"):
            await client.delete(k)


async def test_depth_100_chain(redis_url: str, prefix: str, client: Any) -> None:
    root: dict[str, Any] = {"name": "level-0", "queue_name": "deep"}
    node = root
    for level in range(1, 100):
        child = {"name": f"level-{level}", "queue_name": "deep"}
        node["children"] = [child]
        node = child
    async with FlowProducer(connection=redis_url, prefix=prefix, chunk_size=10) as fp:
        top = await fp.add(root)
    assert await client.zcard(f"{prefix}:deep:waiting-children") == 99
    assert await client.llen(f"{prefix}:deep:wait") == 1
    assert len(list(top.walk())) == 100


async def test_add_bulk_many_trees(redis_url: str, prefix: str, client: Any, each_core: str) -> None:
    flows = [fan_out(3) for _ in range(40)]
    async with FlowProducer(connection=redis_url, prefix=prefix, chunk_size=16) as fp:
        nodes = await fp.add_bulk(flows)
    assert len(nodes) == 40
    assert await client.zcard(f"{prefix}:reduce:waiting-children") == 40
    assert await client.llen(f"{prefix}:map:wait") == 120
    assert nodes[0]["job"].name == "reduce" and len(nodes[0]["children"]) == 3


async def test_the_same_node_object_twice_adds_it_twice(redis_url: str, prefix: str, client: Any, each_core: str) -> None:
    """[child] * 3, [tree, tree] and a repeated fan-out item are that many jobs, as with Node's
    FlowProducer (they were refused as "the same node object appears twice")."""
    import itertools

    child = {"name": "map", "queue_name": "map", "data": {"k": 1}}
    tree = {"name": "reduce", "queue_name": "reduce", "children": [child] * 3}
    async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
        node = await fp.add(tree)
        assert len({c.job.id for c in node.children}) == 3
        assert await node.job.get_dependencies_count() == {"processed": 0, "unprocessed": 3, "ignored": 0, "failed": 0}
        both = await fp.add_bulk([tree, tree])
        assert both[0].job.id != both[1].job.id
        async with fp.fan_out({"name": "reduce", "queue_name": "reduce"}) as fan:
            await fan.add_children(itertools.repeat(child, 5))
        assert fan.added == 5
    assert await client.llen(f"{prefix}:map:wait") == 3 + 6 + 5


@pytest.mark.parametrize("chunk_size", [2000, 5])
async def test_bad_data_late_in_the_tree_writes_nothing(redis_url: str, prefix: str, client: Any, chunk_size: int, each_core: str) -> None:
    tree = fan_out(30)
    tree["children"][27]["data"] = {"when": object()}
    async with FlowProducer(connection=redis_url, prefix=prefix, chunk_size=chunk_size) as fp:
        with pytest.raises(DataNotSerializableError) as info:
            await fp.add(tree)
        assert info.value.path == "root.children[27]"
        assert await keys(client, prefix) == []
        # the connection is still good
        await fp.add(fan_out(2))


@pytest.mark.parametrize("chunk_size", [2000, 4])
async def test_missing_parent_writes_nothing(redis_url: str, prefix: str, client: Any, chunk_size: int) -> None:
    tree = fan_out(10)
    tree["opts"] = {"parent": {"id": "nope", "queue": f"{prefix}:up"}}
    async with FlowProducer(connection=redis_url, prefix=prefix, chunk_size=chunk_size) as fp:
        with pytest.raises(ParentNotFoundError, match=f"{prefix}:up:nope") as info:
            await fp.add(tree)
    assert info.value.path == "root" and str(info.value).startswith("root: ")
    assert await keys(client, prefix) == []


@pytest.mark.parametrize("chunk_size", [2000, 4])
async def test_existing_job_id_writes_nothing(redis_url: str, prefix: str, client: Any, chunk_size: int) -> None:
    async with Queue("map", connection=redis_url, prefix=prefix) as q:
        await q.add("taken", {}, job_id="taken")
    before = await keys(client, prefix)
    tree = fan_out(10)
    tree["children"][8]["opts"] = {"job_id": "taken"}
    async with FlowProducer(connection=redis_url, prefix=prefix, chunk_size=chunk_size) as fp:
        with pytest.raises(JobExistsError, match=f"{prefix}:map:taken") as info:
            await fp.add(tree)
    # the node that failed is named, as for bad input
    assert info.value.path == "root.children[8]"
    assert str(info.value) == f"root.children[8]: Job {prefix}:map:taken already exists. addFlow"
    assert await keys(client, prefix) == before


@pytest.mark.parametrize("chunk_size", [2000, 2])
@pytest.mark.parametrize("foreign", ["b:waiting-children", "b:wait", "c:meta", "up:p:dependencies"])
async def test_a_foreign_key_of_another_type_refuses_the_whole_add(
    redis_url: str, prefix: str, client: Any, chunk_size: int, foreign: str
) -> None:
    """Redis does not undo a script stopped by WRONGTYPE half-way: every key an add writes is
    checked for its type first, so three trees whose second would hit another application's
    key write nothing at all (before: the first tree stood, stranded in waiting-children)."""
    async with Queue("up", connection=redis_url, prefix=prefix) as q:
        await q.add("p", {}, job_id="p")
    await client.delete(f"{prefix}:up:p:dependencies")
    before = await keys(client, prefix)
    await client.set(f"{prefix}:{foreign}", "another app's value")
    trees = [
        {"name": f"t{k}", "queue_name": qn, "children": [{"name": "c", "queue_name": qn} for _ in range(3)]}
        for k, qn in enumerate(("a", "b", "c"))
    ]
    trees[2]["opts"] = {"parent": {"id": "p", "queue": f"{prefix}:up"}}
    async with FlowProducer(connection=redis_url, prefix=prefix, chunk_size=chunk_size) as fp:
        with pytest.raises(WrongKeyTypeError, match=f"{prefix}:{foreign}"):
            await fp.add_bulk(trees)
    assert await keys(client, prefix) == sorted([*before, f"{prefix}:{foreign}"])
    assert await client.get(f"{prefix}:{foreign}") == b"another app's value"


@pytest.mark.parametrize("chunk_size", [2000, 3])
async def test_refusals_name_the_node_of_a_bulk_add(redis_url: str, prefix: str, client: Any, chunk_size: int) -> None:
    async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
        owner = await fp.add({"name": "owner", "queue_name": "A", "opts": {"job_id": "owner"},
                              "children": [{"name": "c", "queue_name": "B", "opts": {"job_id": "kept"}}]})
        other = await fp.add({"name": "other", "queue_name": "A", "opts": {"job_id": "other"},
                              "children": [{"name": "c", "queue_name": "B"}]})
    before = await keys(client, prefix)
    # the second flow of a bulk add re-parents a child of a live parent, two levels down
    flows = [fan_out(2), {"name": "p", "queue_name": "A", "children": [
        {"name": "mid", "queue_name": "A", "children": [
            {"name": "x", "queue_name": "B"}, {"name": "y", "queue_name": "B", "opts": {"job_id": "kept"}}]}]}]
    async with FlowProducer(connection=redis_url, prefix=prefix, chunk_size=chunk_size) as fp:
        with pytest.raises(ParentCannotBeReplacedError) as info:
            await fp.add_bulk(flows, reuse_existing=True)
    assert info.value.path == "root[1].children[0].children[1]"
    assert await keys(client, prefix) == before
    # the same for Queue.add_bulk: the job's index
    async with Queue("B", connection=redis_url, prefix=prefix, chunk_size=chunk_size) as q:
        with pytest.raises(ParentCannotBeReplacedError) as info:
            await q.add_bulk([{"name": "a"}, {"name": "b"}, {"name": "kept", "opts": {
                "job_id": "kept", "parent": {"id": other.job.id, "queue": f"{prefix}:A"}}}])
        assert info.value.path == "jobs[2]" and str(info.value).startswith("jobs[2]: The parent job")
        with pytest.raises(ParentNotFoundError) as missing:
            await q.add_bulk([{"name": "a"}, {"name": "b", "opts": {"parent": {"id": "gone", "queue": f"{prefix}:A"}}}])
        assert missing.value.path == "jobs[1]"
    assert await keys(client, prefix) == before
    assert owner.job.id == "owner"


@pytest.mark.parametrize("chunk_size", [2000, 1])
async def test_bulk_adds_as_bullmq_adds_them_in_order(redis_url: str, prefix: str, client: Any, chunk_size: int) -> None:
    """A parent written earlier in the same bulk add is found (BullMQ adds one after the
    other); one named later is still missing, and the refusal names the child; a job id given
    twice to Queue.add_bulk is a duplicate, as two Queue.add calls."""
    async with Queue("A", connection=redis_url, prefix=prefix, chunk_size=chunk_size) as q:
        jobs = await q.add_bulk([{"name": "p", "opts": {"job_id": "p"}},
                                 {"name": "c", "opts": {"parent": {"id": "p", "queue": f"{prefix}:A"}}}])
        assert jobs[0].id == "p" and await client.smembers(f"{prefix}:A:p:dependencies") == {
            f"{prefix}:A:{jobs[1].id}".encode()}
        before = await keys(client, prefix)
        with pytest.raises(ParentNotFoundError) as info:
            await q.add_bulk([{"name": "c", "opts": {"parent": {"id": "later", "queue": f"{prefix}:A"}}},
                              {"name": "later", "opts": {"job_id": "later"}}])
        assert info.value.path == "jobs[0]" and await keys(client, prefix) == before
        # a parent given twice: its first add is the one that counts
        again = await q.add_bulk([{"name": "p2", "opts": {"job_id": "p2"}},
                                  {"name": "c", "opts": {"parent": {"id": "p2", "queue": f"{prefix}:A"}}},
                                  {"name": "p2", "opts": {"job_id": "p2"}}])
        assert [j.id for j in again][::2] == ["p2", "p2"]
        twice = await q.add_bulk([{"name": "x", "data": {"n": 1}, "opts": {"job_id": "x"}},
                                  {"name": "x", "data": {"n": 2}, "opts": {"job_id": "x"}}])
        assert [j.id for j in twice] == ["x", "x"] and (await q.get_job("x")).data == {"n": 1}
        events = [f[b"event"] for _, f in await client.xrange(f"{prefix}:A:events")]
        assert events[-1] == b"duplicated"
    async with FlowProducer(connection=redis_url, prefix=prefix, chunk_size=chunk_size) as fp:
        await fp.add_bulk([
            {"name": "p1", "queue_name": "P", "opts": {"job_id": "p1"}, "children": [{"name": "a", "queue_name": "A"}]},
            {"name": "b", "queue_name": "A", "opts": {"job_id": "b", "parent": {"id": "p1", "queue": f"{prefix}:P"}}}])
        assert len(await client.smembers(f"{prefix}:P:p1:dependencies")) == 2


async def test_returned_jobs_carry_what_was_written(redis_url: str, prefix: str, client: Any) -> None:
    """delay, priority and the deduplication id on the jobs an add returns; a deduplicated
    flow root answers with the id of the job that keeps the deduplication id; a timestamp of
    0 means now (BullMQ)."""
    async with FlowProducer(connection=redis_url, prefix=prefix) as fp, Queue("A", connection=redis_url, prefix=prefix) as q:
        node = await fp.add({"name": "p", "queue_name": "A", "opts": {"delay": 1000, "priority": 4},
                             "children": [{"name": "c", "queue_name": "B", "opts": {"delay": 300, "priority": 2}}]})
        assert (node.job.delay, node.job.priority) == (1000, 4)
        assert (node.children[0].job.delay, node.children[0].job.priority) == (300, 2)
        first = await fp.add({"name": "solo", "queue_name": "A", "opts": {"job_id": "solo", "deduplication": {"id": "d"}}})
        again = await fp.add({"name": "solo2", "queue_name": "A", "opts": {"job_id": "solo2", "deduplication": {"id": "d"}}})
        auto = await fp.add({"name": "auto", "queue_name": "A", "opts": {"deduplication": {"id": "d"}}})
        assert first.job.id == again.job.id == auto.job.id == "solo"
        assert not await client.exists(f"{prefix}:A:solo2")
        job = await q.add("x", {}, deduplication={"id": "d1"})
        assert job.deduplication_id == "d1" == (await q.get_job(job.id)).deduplication_id
        before = now_ms()
        late = await q.add("t", {}, timestamp=0, delay=3_600_000)
        assert late.timestamp >= before and int(await client.hget(f"{prefix}:A:{late.id}", "timestamp")) >= before
        assert int(await client.zscore(f"{prefix}:A:delayed", late.id)) // 4096 >= before + 3_600_000


async def test_attach_flow_under_existing_parent(redis_url: str, prefix: str, client: Any) -> None:
    async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
        top = await fp.add(fan_out(1))
        sub = fan_out(2)
        sub["opts"] = {"parent": {"id": top.job.id, "queue": f"{prefix}:reduce"}}
        node = await fp.add(sub)
    deps = await client.smembers(f"{prefix}:reduce:{top.job.id}:dependencies")
    assert f"{prefix}:reduce:{node.job.id}".encode() in deps and len(deps) == 2


@pytest.mark.private_redis
async def test_script_cache_flushed_before_add(redis_url: str, prefix: str, client: Any) -> None:
    async with FlowProducer(connection=redis_url, prefix=prefix, chunk_size=3) as fp:
        await fp.add(fan_out(5))
        await client.script_flush()
        await fp.add(fan_out(5))  # a transaction: scripts are loaded before MULTI
        await client.script_flush()
        fp.chunk_size = 2000
        await fp.add(fan_out(5))  # a single call: NOSCRIPT, load, retry
    assert await client.zcard(f"{prefix}:reduce:waiting-children") == 3


async def test_redis_unreachable_is_a_typed_error() -> None:
    async with FlowProducer(connection=f"redis://127.0.0.1:{free_port()}") as fp:
        with pytest.raises(RedisUnavailableError):
            await fp.add(fan_out(2))


async def test_bad_input_raises_before_any_io() -> None:
    # no server at all: validation comes first
    async with FlowProducer(connection=f"redis://127.0.0.1:{free_port()}") as fp:
        with pytest.raises(InvalidFlowError):
            await fp.add({"name": "x", "queue_name": "a:b"})


async def test_reuse_existing_completed_child_releases_parent(redis_url: str, prefix: str, client: Any) -> None:
    """BullMQ 6.7's flow re-using a completed job (golden g, p3), behind reuse_existing=True."""
    async with Queue("B", connection=redis_url, prefix=prefix) as q:
        await q.add("lonely", {}, job_id="lonely-done")
    # complete it by hand, as a worker would have
    await client.lrem(f"{prefix}:B:wait", 0, "lonely-done")
    await client.zadd(f"{prefix}:B:completed", {"lonely-done": 1})
    await client.hset(f"{prefix}:B:lonely-done", mapping={"returnvalue": '"lonely-result"', "finishedOn": 1})
    tree = {"name": "p3", "queue_name": "A", "opts": {"jobId": "p3"},
            "children": [{"name": "x", "queue_name": "B", "opts": {"jobId": "lonely-done"}}]}
    async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
        with pytest.raises(JobExistsError):
            await fp.add(tree)
        node = await fp.add(tree, reuse_existing=True)
        assert await node.job.get_state() == "waiting"
        assert await node.job.get_children_values() == {f"{prefix}:B:lonely-done": "lonely-result"}


def chain(depth: int, queue: str = "chain", start: int = 0) -> dict[str, Any]:
    node: dict[str, Any] = {"name": f"n{start + depth - 1}", "queue_name": queue}
    for level in range(depth - 2, -1, -1):
        node = {"name": f"n{start + level}", "queue_name": queue, "children": [node]}
    return node


def levels(node: Any) -> list[str]:
    names = []
    while node is not None:
        names.append(node.job.name)
        assert len(node.children or []) <= 1
        node = (node.children or [None])[0]
    return names


async def test_get_flow_reads_a_chain_deeper_than_the_recursion_limit(redis_url: str, prefix: str) -> None:
    async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
        top = await fp.add(chain(600))
        bottom = top
        while bottom.children:
            bottom = bottom.children[0]
        lower = chain(600, start=600)
        lower["opts"] = {"parent": {"id": bottom.job.id, "queue": f"{prefix}:chain"}}
        await fp.add(lower)
        whole = await fp.get_flow("chain", top.job.id, depth=5000)
        assert levels(whole) == [f"n{i}" for i in range(1200)]
        assert levels(await fp.get_flow("chain", top.job.id, depth=1100)) == [f"n{i}" for i in range(1100)]


async def test_get_flow_honours_depth(redis_url: str, prefix: str) -> None:
    async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
        node = await fp.add(chain(4))
        for depth in (1, 2, 3, 4, 10):
            got = await fp.get_flow("chain", node.job.id, depth=depth)
            assert levels(got) == [f"n{i}" for i in range(min(depth, 4))]
        # a node without children has none, as in BullMQ's {job} (no children key)
        leaf = await fp.get_flow("chain", node.job.id, depth=1)
        assert leaf is not None and leaf.children is None and "children" not in leaf and leaf.get("children") is None
        assert await fp.get_flow("chain", "no-such-job") is None


async def test_get_flow_takes_up_to_max_children_of_each_kind(redis_url: str, prefix: str) -> None:
    from bullfast import Worker

    async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
        node = await fp.add(fan_out(30, "map"))
        worker = Worker("map", None, connection=redis_url, prefix=prefix, autorun=False)
        try:
            done = set()
            for i in range(3):
                job = await worker.get_next_job(f"t{i}", block=False)
                assert job is not None
                await job.move_to_completed(i, f"t{i}", fetch_next=False)
                done.add(job.id)
        finally:
            await worker.close()
        small = await fp.get_flow("reduce", node.job.id, max_children=2)
        assert small is not None and small.children is not None
        # processed ones first (2 of 3), then pending ones (2 of 27)
        assert [c.job.id in done for c in small.children] == [True, True, False, False]
        default = await fp.get_flow("reduce", node.job.id)
        assert default is not None and len(default.children or []) == 3 + 20
        assert {c.job.id for c in (default.children or [])[:3]} == done
        big = await fp.get_flow("reduce", node.job.id, max_children=1000)
        assert big is not None and {c.job.id for c in big.children or []} == {c.job.id for c in node.children or []}


async def test_get_flow_gives_every_node_its_state(redis_url: str, prefix: str) -> None:
    from bullfast import Worker

    async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
        node = await fp.add({
            "name": "root", "queue_name": "st-root",
            "children": [
                {"name": "mid", "queue_name": "st-mid", "children": [{"name": "leaf", "queue_name": "st-leaf"}]},
                {"name": "later", "queue_name": "st-leaf", "opts": {"delay": 60_000}},
                {"name": "urgent", "queue_name": "st-leaf", "opts": {"priority": 3}},
                {"name": "done", "queue_name": "st-done"},
                {"name": "running", "queue_name": "st-run"},
            ],
        })
        finisher = Worker("st-done", None, connection=redis_url, prefix=prefix, autorun=False)
        runner = Worker("st-run", None, connection=redis_url, prefix=prefix, autorun=False)
        try:
            done = await finisher.get_next_job("t1", block=False)
            assert done is not None
            await done.move_to_completed("ok", "t1", fetch_next=False)
            assert await runner.get_next_job("t2", block=False) is not None
            tree = await fp.get_flow("st-root", node.job.id)
        finally:
            await finisher.close()
            await runner.close(force=True)
        assert tree is not None and tree.state == "waiting-children"
        states = {c.job.name: c.state for c in tree.children or []}
        assert states == {"mid": "waiting-children", "later": "delayed", "urgent": "prioritized",
                          "done": "completed", "running": "active"}
        (mid,) = [c for c in tree.children or [] if c.job.name == "mid"]
        assert [c.state for c in mid.children or []] == ["waiting"]
        assert node.state is None  # an add's nodes do not read their state back


async def test_get_flow_takes_bullmq_options_mapping(redis_url: str, prefix: str) -> None:
    from bullfast.errors import InvalidOptionError

    async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
        node = await fp.add(chain(3))
        camel = await fp.get_flow({"id": node.job.id, "queueName": "chain", "depth": 2, "maxChildren": 5, "prefix": prefix})
        snake = await fp.get_flow({"job_id": node.job.id, "queue_name": "chain", "max_children": 5, "depth": 2})
        assert levels(camel) == levels(snake) == ["n0", "n1"]
        # the prefix of the mapping is used: none of this flow is under another one
        assert await fp.get_flow({"id": node.job.id, "queueName": "chain", "prefix": prefix + "x"}) is None
        for bad in (
            {"id": node.job.id},
            {"queueName": "chain"},
            {"id": node.job.id, "queueName": "chain", "maxChildren": 5, "max_children": 6},
            {"id": node.job.id, "queueName": "chain", "colour": "blue"},
            {"id": node.job.id, "queueName": "chain", "depth": 0},
            {"id": node.job.id, "queueName": "chain", "maxChildren": True},
        ):
            with pytest.raises(InvalidOptionError):
                await fp.get_flow(bad)
        with pytest.raises(InvalidOptionError):
            await fp.get_flow({"id": node.job.id, "queueName": "chain"}, node.job.id)


async def test_get_flow_reads_a_wide_level_in_few_commands(
    redis_url: str, prefix: str, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A level of 2,500 jobs (some parents of their own, one child gone) is read with a few
    script calls (read_jobs: hashes and child keys, 1,000 jobs a call; get_states), where
    every job's hash and four child groups were five commands through redis-py (26 s for a
    level of 100,000 leaves, in the client's reply handling)."""
    from bullfast import _connection

    sent: list[int] = []
    execute = _connection._Pipeline.execute

    async def counting(self: Any, raise_on_error: bool = True) -> list[Any]:
        sent.append(len(self._pipe.command_stack))
        return await execute(self, raise_on_error)

    monkeypatch.setattr(_connection._Pipeline, "execute", counting)
    kids = [{"name": "k", "queue_name": "wide", "opts": {"job_id": f"k{i}"},
             **({"children": [{"name": "g", "queue_name": "wide-g", "opts": {"job_id": f"g{i}"}}]} if i % 500 == 0 else {})}
            for i in range(2500)]
    async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
        await fp.add({"name": "p", "queue_name": "wide-p", "opts": {"job_id": "p"}, "children": kids})
        await client.delete(f"{prefix}:wide:k7")  # a child whose hash is gone is left out
        sent.clear()
        flow = await fp.get_flow("wide-p", "p", max_children=5000)
    assert flow is not None and flow.children is not None
    assert sorted(c.job.id for c in flow.children) == sorted(f"k{i}" for i in range(2500) if i != 7)
    grand = {c.job.id: [g.job.id for g in c.children or []] for c in flow.children if c.children}
    assert grand == {f"k{i}": [f"g{i}"] for i in range(0, 2500, 500)}
    assert {c.state for c in flow.children} == {"waiting", "waiting-children"}
    assert sum(sent) <= 12, sent


async def test_get_flow_reads_the_states_of_a_level_together(redis_url: str, prefix: str, client: Any) -> None:
    """get_flow reads the states of a level's jobs with a script call per queue (get_states),
    which must answer each job's state, in every state, whether it looks for a few jobs in a list
    (LPOS each) or many (the list read once), and as get_job_state does for one; a job at a
    time, the waiting children of a big parent each read the wait list (quadratic)."""
    from bullfast import _scripts

    async with FlowProducer(connection=redis_url, prefix=prefix) as fp, Queue("st", connection=redis_url, prefix=prefix) as q:
        kids = [{"name": "k", "queue_name": "st", "data": {}, "opts": {"job_id": f"k{i}"}} for i in range(120)]
        await fp.add({"name": "p", "queue_name": "st-p", "opts": {"job_id": "p"}, "children": kids})
        await q.add("late", {}, job_id="late", delay=60_000)
        await q.add("prio", {}, job_id="prio", priority=3)
        kp = f"{prefix}:st:"
        # move some children by hand into the other states (scores and lists only)
        for state, ids in {"completed": ["k0", "k1"], "failed": ["k2"]}.items():
            for i in ids:
                await client.lrem(kp + "wait", 1, i)
                await client.zadd(kp + state, {i: 1})
        await client.lrem(kp + "wait", 1, "k3")
        await client.lpush(kp + "active", "k3")
        await client.lrem(kp + "wait", 1, "k4")
        await client.lpush(kp + "paused", "k4")
        await client.zadd(kp + "waiting-children", {"k5": 1})
        await client.lrem(kp + "wait", 1, "k5")
        ids = [f"k{i}" for i in range(120)] + ["late", "prio", "nope"]
        many = _scripts.get("get_states")
        made = {"k0": "completed", "k1": "completed", "k2": "failed", "k3": "active", "k4": "waiting",
                "k5": "waiting-children", "late": "delayed", "prio": "prioritized", "nope": "unknown"}
        expected = [made.get(i, "waiting").encode() for i in ids]
        assert [(await q.get_job_state(i)).encode() for i in ids] == expected
        for chunk in (ids, ids[:10] + ids[-3:]):  # the list read once; LPOS each
            answer = await client.eval(many.source, 1, kp + "meta", kp, *chunk)
            assert answer == [expected[ids.index(i)] for i in chunk]
        assert set(expected) == {b"completed", b"failed", b"active", b"waiting", b"waiting-children", b"delayed",
                                 b"prioritized", b"unknown"}
        flow = await fp.get_flow("st-p", "p", max_children=200)
        states = {c.job.id: c.state for c in flow.children}
        assert states == {i: expected[ids.index(i)].decode() for i in ids[:120]}
