"""Removing a parent with its sub-tree in one call and in pages (the path of parents of more
than ``ONE_CALL_CHILDREN`` children, and of children of more than ``ONE_CALL_JOBS``
descendants, forced here on small random trees with tiny pages and sweep windows) leaves the
same Redis state: the same jobs removed and kept, the same lists
and sorted sets. The paged path takes a page's grandchildren out of their lists ahead of
their removal, in one pass; this checks that doing so changes no outcome.

Each tree is built twice, under two prefixes, with the same job ids and the same sequence of
worker operations (some jobs completed, failed or held by a worker, some delayed or
prioritized, other jobs of the same queues around them)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from bullfast import FlowProducer, Queue, Worker, _removal

QUEUES = ("rp-a", "rp-b")


def random_tree(rng: random.Random) -> dict[str, Any]:
    counter = iter(range(10_000))

    def node(depth: int) -> dict[str, Any]:
        opts: dict[str, Any] = {"job_id": f"j{next(counter)}"}
        roll = rng.random()
        if roll < 0.15:
            opts["delay"] = 60_000
        elif roll < 0.3:
            opts["priority"] = rng.randint(1, 5)
        spec: dict[str, Any] = {"name": "n", "queue_name": rng.choice(QUEUES), "opts": opts}
        if depth < 2:
            width = rng.randint(0, 14 if depth == 1 else 12)
            if width:
                spec["children"] = [node(depth + 1) for _ in range(width)]
        return spec

    root = node(0)
    root["children"] = root.get("children") or [node(1)]
    return root


async def build(
    url: str, prefix: str, tree: dict[str, Any], rng: random.Random, client: Any
) -> tuple[Queue, list[Worker]]:
    async with FlowProducer(connection=url, prefix=prefix) as fp:
        await fp.add(tree)
    queue = Queue(tree["queue_name"], connection=url, prefix=prefix)
    for name in QUEUES:  # other jobs around the tree's, in the same lists
        async with Queue(name, connection=url, prefix=prefix) as q:
            await q.add_bulk([{"name": "other", "opts": {"job_id": f"o-{name}-{k}"}} for k in range(rng.randint(0, 8))])
    workers = [Worker(name, None, connection=url, prefix=prefix, autorun=False) for name in QUEUES]
    for worker in workers:
        for n in range(rng.randint(0, 6)):
            job = await worker.get_next_job(f"t{n}", block=False)
            if job is None:
                break
            roll = rng.random()
            if roll < 0.45 and not await client.exists(f"{job.key}:dependencies", f"{job.key}:unsuccessful"):
                await job.move_to_completed({"n": n}, f"t{n}")
            elif roll < 0.75:
                await job.move_to_failed(ValueError("no"), f"t{n}")
            # else: held by the worker (locked) while the removal runs
    return queue, workers


async def snapshot(client: Any, prefix: str) -> dict[str, Any]:
    state: dict[str, Any] = {}
    async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        name = key.decode()[len(prefix):]
        kind = (await client.type(key)).decode()
        if name.endswith(":events") or name.endswith(":meta") or name.endswith(":id"):
            continue
        if kind == "list":
            state[name] = [v.decode().replace(prefix, "P") for v in await client.lrange(key, 0, -1)]
        elif kind == "zset":
            state[name] = sorted(v.decode().replace(prefix, "P") for v in await client.zrange(key, 0, -1))
        elif kind == "set":
            state[name] = sorted(v.decode().replace(prefix, "P") for v in await client.smembers(key))
        elif kind == "hash":
            state[name] = sorted(k.decode().replace(prefix, "P") for k in await client.hkeys(key))
        else:
            state[name] = kind
    return state


@pytest.mark.parametrize("seed", range(int(__import__("os").environ.get("SEEDS", "12"))))
@pytest.mark.parametrize("how", ["remove", "unprocessed"])
async def test_paged_removal_leaves_what_one_call_leaves(
    redis_url: str, prefix: str, client: Any, monkeypatch: pytest.MonkeyPatch, seed: int, how: str
) -> None:
    tree = random_tree(random.Random(seed))
    results: list[Any] = []
    for paged in (False, True):
        p = f"{prefix}-{'paged' if paged else 'one'}"
        queue, workers = await build(redis_url, p, tree, random.Random(seed), client)
        try:
            if paged:
                monkeypatch.setattr(_removal, "ONE_CALL_CHILDREN", 0)
                monkeypatch.setattr(_removal, "PAGE", 2)
                monkeypatch.setattr(_removal, "SWEEP_WINDOW", 3)
                monkeypatch.setattr(_removal, "JOB_BUDGET", 2)
                # odd seeds: a child of more than 2 children is removed in steps of its own too
                monkeypatch.setattr(_removal, "ONE_CALL_JOBS", 2 if seed % 2 else 10_000)
            else:
                monkeypatch.setattr(_removal, "ONE_CALL_CHILDREN", 10_000)
                monkeypatch.setattr(_removal, "ONE_CALL_JOBS", 10_000)
            parent = await queue.get_job(tree["opts"]["job_id"])
            assert parent is not None
            if how == "remove":
                outcome: Any = await queue.remove(str(parent.id))
            else:
                outcome = await parent.remove_unprocessed_children()
            results.append((outcome, await snapshot(client, p)))
        finally:
            monkeypatch.undo()
            for worker in workers:
                await worker.close(force=True)
            await queue.close()
    (one_outcome, one), (paged_outcome, paged) = results
    assert one_outcome == paged_outcome
    differ = {k: (one.get(k), paged.get(k)) for k in sorted(set(one) | set(paged)) if one.get(k) != paged.get(k)}
    assert differ == {}
