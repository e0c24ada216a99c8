"""Several producers adding children to the same existing parent at once, while the children
already added complete.

A parent is released as soon as its dependencies set is empty (protocol 8.2), so a parent whose
children all completed would run, and children added later would land in a completed parent's
``processed`` hash. The tests therefore keep one child (the "anchor", in a queue without a
worker) pending until every child is added and done; then the anchor's worker starts.
Expected: the parent runs exactly once, after the anchor (its last child), with every child's
value; no child is lost, none counted twice, no parent released early or twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bullfast import Queue

from ._util import Node, Resources, keep_events, until, verify_completed
from ._worker_proc import make_processor


@pytest.fixture
async def res(redis_url: str, prefix: str) -> AsyncIterator[Resources]:
    r = Resources(redis_url, prefix)
    try:
        yield r
    finally:
        await r.aclose()


async def run_concurrent_adds(res: Resources, prefix: str, singles: int, bulks: int, subflows: int) -> None:
    client = res.client()
    ledger = f"{prefix}:ledger"
    process = make_processor(client, ledger)
    await keep_events(client, prefix, ["cc-p", "cc-c", "cc-s", "cc-anchor"])
    fp = res.flow()
    n_children = 1 + 2 * singles + bulks + subflows
    anchor_v = 10**6
    parent_node = Node("cc-p", "parent", 0, f"{prefix}:cc-p:parent")
    anchor = Node("cc-anchor", "anchor", anchor_v, f"{prefix}:cc-anchor:anchor", parent=parent_node)
    parent_node.children.append(anchor)
    await fp.add({
        "name": "cc-p", "queue_name": "cc-p", "data": {"v": 0, "n": n_children}, "opts": {"job_id": "parent"},
        "children": [{"name": "anchor", "queue_name": "cc-anchor", "data": {"v": anchor_v},
                      "opts": {"job_id": "anchor"}}],
    })
    parent_ref = {"id": "parent", "queue": f"{prefix}:cc-p"}

    def child(tag: str, i: int) -> Node:
        v = i + 1
        node = Node("cc-c", f"{tag}{i}", v, f"{prefix}:cc-c:{tag}{i}", parent=parent_node)
        parent_node.children.append(node)
        return node

    # the children's workers run from the start: children complete while more are added
    res.worker("cc-c", process, concurrency=16)
    res.worker("cc-s", process, concurrency=4)

    async def add_one_by_one(q: Queue, tag: str) -> None:
        for i in range(singles):
            node = child(tag, i)
            await q.add("c", {"v": node.value}, parent=parent_ref, job_id=node.id)

    async def add_in_bulks(q: Queue) -> None:
        for start in range(0, bulks, 25):
            nodes = [child("b", i) for i in range(start, min(start + 25, bulks))]
            await q.add_bulk([{"name": "c", "data": {"v": n.value}, "opts": {"parent": parent_ref, "job_id": n.id}}
                              for n in nodes])

    async def add_subflows() -> None:
        sub_fp = res.flow()
        for i in range(subflows):
            root = Node("cc-s", f"s{i}", 0, f"{prefix}:cc-s:s{i}", parent=parent_node)
            kids = [Node("cc-c", f"s{i}.{k}", k + 1, f"{prefix}:cc-c:s{i}.{k}", parent=root) for k in range(2)]
            root.children = kids
            root.value = sum(k.value for k in kids)
            parent_node.children.append(root)
            await sub_fp.add({
                "name": "cc-s", "queue_name": "cc-s", "data": {"v": 0, "n": 2},
                "opts": {"job_id": root.id, "parent": parent_ref},
                "children": [{"name": "c", "queue_name": "cc-c", "data": {"v": k.value}, "opts": {"job_id": k.id}}
                             for k in kids],
            })

    await asyncio.gather(
        add_one_by_one(res.queue("cc-c", max_len_events=10**6), "x"),
        add_one_by_one(res.queue("cc-c", max_len_events=10**6), "y"),
        add_in_bulks(res.queue("cc-c", max_len_events=10**6)),
        add_subflows(),
    )
    assert len(parent_node.children) == n_children
    parent_node.value = sum(c.value for c in parent_node.children)

    # every child but the anchor completes; the parent keeps waiting for the anchor
    others = parent_node.children[1:]

    async def others_done() -> bool:
        async with client.pipeline(transaction=False) as pipe:
            for n in others:
                pipe.zscore(f"{prefix}:{n.queue}:completed", n.id)
            return all(s is not None for s in await pipe.execute())

    await until(others_done, 30, "every child but the anchor to complete")
    assert await client.zscore(res.key("cc-p", "waiting-children"), "parent") is not None
    assert await client.smembers(f"{parent_node.key}:dependencies") == {anchor.key.encode()}
    assert await client.hlen(f"{parent_node.key}:processed") == n_children - 1

    started: list[int] = []
    pw = res.worker("cc-p", process)
    pw.on("active", lambda job, prev: started.append(int(job.processed_on or 0)))
    res.worker("cc-anchor", process)
    await until(lambda: client.zscore(res.key("cc-p", "completed"), "parent"), 15, "the parent to complete")
    nodes = [parent_node] + [n for c in parent_node.children for n in [c, *c.children]]
    report = await verify_completed(client, prefix, nodes, ledger)
    assert report["runs"][parent_node.key] == 1 and len(started) == 1
    last_child = max([int(await client.hget(c.key, "finishedOn")) for c in parent_node.children])
    assert started[0] >= last_child == int(await client.hget(anchor.key, "finishedOn"))


async def test_concurrent_producers_add_children_to_one_parent(res: Resources, prefix: str) -> None:
    """Two producers adding children one by one, a third in bulks of 25, a fourth adding
    sub-flows whose root names the parent: 431 children, 80 of them with children of their own."""
    await run_concurrent_adds(res, prefix, singles=100, bulks=150, subflows=80)


@pytest.mark.slow
async def test_concurrent_producers_add_thousands_of_children(res: Resources, prefix: str) -> None:
    await run_concurrent_adds(res, prefix, singles=1500, bulks=3000, subflows=500)
