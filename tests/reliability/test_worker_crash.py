"""A worker process killed with SIGKILL while its jobs are active.

The worker runs in a subprocess (``_worker_proc.py``) with a short lock (1 s) and stalled
interval; every processor run is counted in Redis (``<ledger>:runs``), outside the process, so
the count survives the kill. After the kill nothing of the dead process renews its locks: the
stalled check of the next worker finds the jobs' locks gone at two consecutive checks and puts
them back in wait (protocol 7.8), where they run again.

Checked afterwards, for every job of the flows: completed exactly once (one ``completed``
event, in the completed set once, the right return value); every parent released exactly once
(one ``waiting prev waiting-children`` event), run with every child's value, nothing pending;
nothing left in wait/active/delayed/failed; only jobs that were active at a kill ran more than
once, and each of them was moved back by the stalled check.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ._util import Node, Resources, build_tree, until, verify_completed

# Short locks and checks so that a dead worker's jobs come back within ~1.5 s. A job may stall
# several times here (one kill each), so the stall limit is raised: with the default (1) a job
# caught by two kills fails with "job stalled more than allowable limit", as BullMQ's would.
TIMINGS = {"lock_duration": 1000, "stalled_interval": 250, "max_stalled_count": 50, "drain_delay": 0.3}


@pytest.fixture
async def res(redis_url: str, prefix: str) -> AsyncIterator[Resources]:
    r = Resources(redis_url, prefix)
    try:
        yield r
    finally:
        await r.aclose()


async def active_ids(client: Any, key: str) -> set[str]:
    return {m.decode() for m in await client.lrange(key, 0, -1)}


async def stalled_ids(client: Any, prefix: str, queues: list[str]) -> set[str]:
    out = set()
    for q in queues:
        for _, fields in await client.xrange(f"{prefix}:{q}:events"):
            if fields.get(b"event") == b"stalled":
                out.add(f"{prefix}:{q}:{fields[b'jobId'].decode()}")
    return out


async def test_sigkill_while_children_and_then_parents_are_active(res: Resources, prefix: str) -> None:
    client = res.client()
    fp = res.flow()
    ledger = f"{prefix}:ledger"
    queues = ["ck-root", "ck-mid", "ck-leaf"]
    levels = [("ck-root", 1), ("ck-mid", 4), ("ck-leaf", 5)]
    sleep = {"ck-leaf": 0.3, "ck-mid": 0.5, "ck-root": 0.1}
    nodes: list[Node] = []
    for k in range(2):
        flow, tree = build_tree(prefix, f"t{k}", levels, sleep, start=1000 * k + 1)
        await fp.add(flow)
        nodes += tree
    settings = {"url": res.url, "prefix": prefix, "ledger": ledger,
                "queues": {"ck-leaf": 6, "ck-mid": 4, "ck-root": 2}, **TIMINGS}

    # first kill: while six leaves run
    first = res.process(settings).start()
    await until(async_ge(client, res.key("ck-leaf", "active"), 6), 10, "six active leaves")
    first.kill()
    caught = {f"{prefix}:ck-leaf:{i}" for i in await active_ids(client, res.key("ck-leaf", "active"))}
    assert len(caught) >= 6

    # second kill: while parents (mids) run; their children are all done
    second = res.process(settings).start()
    await until(async_ge(client, res.key("ck-mid", "active"), 2), 30, "two active parents")
    second.kill()
    caught_mid = {f"{prefix}:ck-mid:{i}" for i in await active_ids(client, res.key("ck-mid", "active"))}
    caught_leaves = {f"{prefix}:ck-leaf:{i}" for i in await active_ids(client, res.key("ck-leaf", "active"))}
    assert caught_mid

    third = res.process(settings).start()
    roots = [n for n in nodes if n.parent is None]

    async def roots_done() -> bool:
        return all([await client.zscore(res.key(n.queue, "completed"), n.id) is not None for n in roots])

    try:
        await until(roots_done, 40, "the roots to complete")
    except AssertionError:
        raise AssertionError(f"flows did not finish; worker stderr: {third.stderr_text()}") from None
    third.stop()

    report = await verify_completed(client, prefix, nodes, ledger)
    runs = report["runs"]
    every_caught = caught | caught_mid | caught_leaves
    reran = {key for key, n in runs.items() if n > 1}
    assert reran <= every_caught, f"jobs ran twice without being caught by a kill: {reran - every_caught}"
    # every job caught by a kill was moved back by the stalled check (and none other was)
    stalled = await stalled_ids(client, prefix, queues)
    assert every_caught <= stalled
    assert stalled <= every_caught
    for key in caught | caught_mid:
        assert await client.hget(key, "stc") is not None, f"{key} was not counted as stalled"


def async_ge(client: Any, key: str, n: int) -> Any:
    async def check() -> bool:
        return int(await client.llen(key)) >= n

    return check


@pytest.mark.slow
async def test_repeated_sigkills_of_several_worker_processes(res: Resources, prefix: str) -> None:
    """Three worker processes, one of them killed (and replaced) at random every ~0.6 s while
    24 flows of 1 + 6 + 36 jobs run; the same checks, over 1,032 jobs."""
    client = res.client()
    fp = res.flow()
    ledger = f"{prefix}:ledger"
    levels = [("rk-root", 1), ("rk-mid", 6), ("rk-leaf", 6)]
    sleep = {"rk-leaf": 0.2, "rk-mid": 0.1, "rk-root": 0.05}
    nodes: list[Node] = []
    for k in range(24):
        flow, tree = build_tree(prefix, f"t{k}", levels, sleep, start=1000 * k + 1)
        await fp.add(flow)
        nodes += tree
    settings = {"url": res.url, "prefix": prefix, "ledger": ledger,
                "queues": {"rk-leaf": 8, "rk-mid": 4, "rk-root": 2}, **TIMINGS}
    procs = [res.process(settings).start() for _ in range(3)]
    roots = [n for n in nodes if n.parent is None]
    rng = random.Random(7)
    kills = 0

    async def roots_done() -> bool:
        return all([await client.zscore(res.key(n.queue, "completed"), n.id) is not None for n in roots])

    deadline = time.monotonic() + 100
    while not await roots_done():
        assert time.monotonic() < deadline, "the flows did not finish"
        await asyncio.sleep(rng.uniform(0.3, 0.9))
        if kills < 20:
            victim = rng.randrange(len(procs))
            procs[victim].kill()
            kills += 1
            procs[victim] = res.process(settings).start()
    for p in procs:
        p.stop()
    report = await verify_completed(client, prefix, nodes, ledger)
    stalled = await stalled_ids(client, prefix, ["rk-root", "rk-mid", "rk-leaf"])
    reran = {key for key, n in report["runs"].items() if n > 1}
    assert kills >= 8
    assert reran <= stalled, f"jobs ran twice without being recovered as stalled: {reran - stalled}"


async def test_in_process_worker_recovers_jobs_of_a_killed_process(res: Resources, prefix: str) -> None:
    """The dead process's jobs, including a parent it was running, are finished by an
    in-process Worker of bullfast (another client of the same queues)."""
    from ._worker_proc import make_processor

    client = res.client()
    fp = res.flow()
    ledger = f"{prefix}:ledger"
    flow, nodes = build_tree(prefix, "solo", [("ip-root", 1), ("ip-leaf", 8)], {"ip-leaf": 0.4, "ip-root": 0.6})
    await fp.add(flow)
    settings = {"url": res.url, "prefix": prefix, "ledger": ledger, "queues": {"ip-leaf": 8, "ip-root": 1},
                **TIMINGS}
    proc = res.process(settings).start()
    await until(async_ge(client, res.key("ip-leaf", "active"), 8), 15, "eight active leaves")
    proc.kill()
    process = make_processor(client, ledger)
    done = asyncio.Event()
    res.worker("ip-leaf", process, concurrency=8, **TIMINGS)
    root_worker = res.worker("ip-root", process, **TIMINGS)
    root_worker.on("completed", lambda job, result, prev: done.set())
    await asyncio.wait_for(done.wait(), 20)
    report = await verify_completed(client, prefix, nodes, ledger)
    leaves = [n for n in nodes if n.parent is not None]
    assert all(report["runs"][n.key] in (1, 2) for n in leaves)
    assert report["runs"][nodes[0].key] == 1
    assert res.errors.get("ip-leaf", []) == []


async def test_a_worker_frozen_past_its_locks_does_not_complete_jobs_twice(res: Resources, prefix: str) -> None:
    """A worker process stops dead (SIGSTOP: a blocked event loop, a long GC pause, a VM
    freeze) while its jobs run, for longer than their locks. Another worker's stalled check
    takes the jobs back and runs them. When the frozen worker wakes (SIGCONT), its processors
    finish, but it cannot complete those jobs a second time (their locks are gone); it goes on
    working on new jobs."""
    import signal

    client = res.client()
    ledger = f"{prefix}:ledger"
    levels = [("fz-root", 1), ("fz-leaf", 6)]
    flow, nodes = build_tree(prefix, "fz", levels, {"fz-leaf": 0.4}, start=1)
    await res.flow().add(flow)
    settings = {"url": res.url, "prefix": prefix, "ledger": ledger,
                "queues": {"fz-leaf": 6, "fz-root": 1}, **TIMINGS}
    frozen = res.process(settings).start()
    await until(async_ge(client, res.key("fz-leaf", "active"), 6), 10, "six active leaves")
    caught = {f"{prefix}:fz-leaf:{i}" for i in await active_ids(client, res.key("fz-leaf", "active"))}
    assert frozen.proc is not None
    frozen.proc.send_signal(signal.SIGSTOP)
    try:
        rescuer = res.process(settings).start()
        root = nodes[0]
        await until(lambda: client.zscore(res.key(root.queue, "completed"), root.id), 30, "the flow to finish")
    finally:
        frozen.proc.send_signal(signal.SIGCONT)
    # the woken worker's processors end now; give its refused completions time to happen
    await asyncio.sleep(1.5)
    report = await verify_completed(client, prefix, nodes, ledger)
    assert {k for k, n in report["runs"].items() if n > 1} <= caught
    assert all(report["runs"][k] == 2 for k in caught), report["runs"]
    # and it still works: a new job is taken by one of the two and completed once
    late, late_nodes = build_tree(prefix, "fz2", [("fz-root", 1), ("fz-leaf", 2)], {}, start=100)
    await res.flow().add(late)
    await until(lambda: client.zscore(res.key("fz-root", "completed"), late_nodes[0].id), 20, "a later flow")
    await verify_completed(client, prefix, nodes + late_nodes, ledger)
    rescuer.stop()
    frozen.stop()
