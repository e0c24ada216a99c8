"""Connections cut, partitioned, slowed down or losing replies, and a Redis that stops
answering for a while, under a worker that waits for jobs or completes them.

The worker under test talks to Redis through a TCP proxy written here (``_util.Proxy``) that
can reset every connection and refuse new ones, hold all traffic (a partition that heals),
delay every chunk, or drop a reply after the server executed the command. The ledger of
processor runs and the checks use direct connections.

After each fault: every job of the flow completed exactly once (one completed event, one
entry, the right value), the parent released once with every child's value, nothing left
active or waiting; a job ran again only after a failed attempt or a stall; and what went
wrong for the worker was reported through ``worker.on("error")``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from bullfast import Queue
from bullfast import worker as worker_module
from bullfast.embedded import RedisServer
from bullfast.errors import LockMismatchError, LockMissingError, RedisUnavailableError, ServerError

from ._util import Node, Proxy, Resources, build_tree, until, verify_completed
from ._worker_proc import make_processor


@pytest.fixture
async def res(redis_url: str, prefix: str) -> AsyncIterator[Resources]:
    r = Resources(redis_url, prefix)
    try:
        yield r
    finally:
        await r.aclose()


@pytest.fixture
async def proxy(redis_url: str, res: Resources) -> Proxy:
    """A proxy to the session's Redis, closed with the test's resources (after its workers)."""
    return res.track(await Proxy(redis_url).start())


def quick_retry(url: str) -> dict[str, Any]:
    """Connection settings whose command retries give up within ~0.2 s (redis-py's default
    retries for up to a few seconds, hiding short cuts; the errors then surface at once)."""
    return {"url": url, "retry": Retry(ExponentialBackoff(cap=0.05, base=0.01), 3)}


async def add_flow(res: Resources, tag: str, leaves: int, sleep: float, queue: str) -> list[Node]:
    flow, nodes = build_tree(res.prefix, tag, [(f"{queue}-p", 1), (queue, leaves)], {queue: sleep})
    await res.flow().add(flow)
    return nodes


async def parent_done(client: Any, res: Resources, nodes: list[Node]) -> bool:
    root = nodes[0]
    return await client.zscore(res.key(root.queue, "completed"), root.id) is not None


def completed_at_least(client: Any, key: str, n: int) -> Callable[[], Any]:
    """(Counted in Redis: when a reply is lost, a job completes without the worker's
    ``completed`` event; the retried call is refused and reported instead.)"""

    async def check() -> bool:
        return int(await client.zcard(key)) >= n

    return check


def kinds(errors: list[BaseException]) -> set[str]:
    return {type(e).__name__ for e in errors}


async def test_connection_cut_while_the_worker_waits(res: Resources, proxy: Proxy) -> None:
    client = res.client()
    ledger = f"{res.prefix}:ledger"
    process = make_processor(client, ledger)
    w = res.worker("cw", process, url=quick_retry(proxy.url), concurrency=4, drain_delay=0.5)
    res.worker("cw-p", process)
    drained = asyncio.Event()
    w.on("drained", drained.set)
    await asyncio.wait_for(drained.wait(), 5)
    await until(lambda: blocked_on_markers(client, 2), 5, "both workers to block on their markers")
    proxy.cut(refuse_for=2.0)
    # work arrives while the worker cannot reach Redis
    nodes = await add_flow(res, "cut-wait", 20, 0.01, "cw")
    await until(lambda: res.errors["cw"], 5, "the worker to report the cut")
    await until(lambda: parent_done(client, res, nodes), 15, "the flow to finish after the cut")
    await verify_completed(client, res.prefix, nodes, ledger)
    # (OutcomeUnknownError: a finish_jobs call was cut after it was sent; retried, it is refused
    # for the jobs it had already ended, and nothing is completed twice)
    assert kinds(res.errors["cw"]) <= {"RedisUnavailableError", "OutcomeUnknownError"}, res.errors["cw"]


async def blocked_on_markers(client: Any, n: int) -> bool:
    return sum(1 for c in await client.client_list() if c.get("cmd") == "bzpopmin") >= n


async def test_connection_cut_while_the_worker_completes_jobs(res: Resources, proxy: Proxy) -> None:
    client = res.client()
    ledger = f"{res.prefix}:ledger"
    process = make_processor(client, ledger)
    nodes = await add_flow(res, "cut-run", 150, 0.03, "cr")
    res.worker("cr", process, url=quick_retry(proxy.url), concurrency=10, lock_duration=1000,
               stalled_interval=200, max_stalled_count=20)
    res.worker("cr-p", process)
    for threshold in (30, 90):
        await until(completed_at_least(client, res.key("cr", "completed"), threshold), 15, f"{threshold} completions")
        proxy.cut(refuse_for=1.0)
    await until(lambda: parent_done(client, res, nodes), 20, "the flow to finish after the cuts")
    await verify_completed(client, res.prefix, nodes, ledger)
    assert any(isinstance(e, RedisUnavailableError) for e in res.errors["cr"]), res.errors["cr"]


async def test_partition_longer_than_the_lock_then_heals(res: Resources, proxy: Proxy) -> None:
    """The worker is cut off (traffic held, connections open) for longer than its locks last:
    another worker's stalled check takes its jobs and completes them. When the partition heals,
    the cut-off worker's completions are refused (reported as lock errors), never applied
    twice, and it goes on working."""
    client = res.client()
    ledger = f"{res.prefix}:ledger"
    process = make_processor(client, ledger)
    nodes = await add_flow(res, "part", 12, 0.4, "pt")
    timings = {"lock_duration": 800, "stalled_interval": 200, "max_stalled_count": 20}
    cut_off = res.worker("pt", process, url=proxy.url, concurrency=6, **timings)
    mine: list[str] = []
    cut_off.on("completed", lambda job, result, prev: mine.append(job.id))
    await until(lambda: client.llen(res.key("pt", "active")), 5, "active jobs")
    await until(lambda: cut_off._running, 5, "the worker to run jobs")
    held = {job_id for job_id, _ in cut_off._running}
    proxy.hold()
    rescuer = res.worker("pt", process, concurrency=6, **timings)
    res.worker("pt-p", process)
    await until(lambda: parent_done(client, res, nodes), 15, "the rescuer to finish the flow")
    proxy.release()
    await until(lambda: lock_errors(res.errors["pt"]), 10, "the cut-off worker to report its lost locks")
    report = await verify_completed(client, res.prefix, nodes, ledger)
    assert all(report["runs"][f"{res.prefix}:pt:{job_id}"] == 2 for job_id in held)
    assert not set(mine) & held, "a job completed by the rescuer was completed by the cut-off worker too"
    # the healed worker goes on: it takes new jobs (the rescuer is closed first)
    await rescuer.close()
    more = await add_flow(res, "after", 6, 0.01, "pt")
    await until(lambda: parent_done(client, res, more), 10, "the healed worker to run new jobs")
    assert {n.id for n in more[1:]} <= set(mine)


def lock_errors(errors: list[BaseException]) -> list[BaseException]:
    return [e for e in errors if isinstance(e, (LockMissingError, LockMismatchError))
            or "could not renew lock" in str(e)]


async def test_replies_lost_after_the_server_ran_the_command(res: Resources, proxy: Proxy) -> None:
    """A reply is dropped after Redis executed the command (connection reset): the worker
    does not know whether its completions and fetches happened. Retried completions are
    refused (reported), jobs fetched by a lost reply come back through the stalled check."""
    client = res.client()
    ledger = f"{res.prefix}:ledger"
    process = make_processor(client, ledger)
    nodes = await add_flow(res, "lost", 120, 0.02, "lr")
    res.worker("lr", process, url=proxy.url, concurrency=8, lock_duration=800, stalled_interval=200,
               max_stalled_count=20)
    res.worker("lr-p", process)
    rng = random.Random(3)
    for threshold in (10, 30, 50, 70, 90):
        await until(completed_at_least(client, res.key("lr", "completed"), threshold), 15, f"{threshold} completions")
        proxy.lose_next_replies(rng.randint(1, 2))
        await asyncio.sleep(0.05)
    await until(lambda: parent_done(client, res, nodes), 20, "the flow to finish")
    await verify_completed(client, res.prefix, nodes, ledger)
    assert proxy.lost_replies >= 5
    assert res.errors["lr"], "the worker reported nothing although replies were lost"


async def test_slow_network(res: Resources, proxy: Proxy) -> None:
    """Every chunk through the proxy is delayed by 30 ms in each direction: slower, nothing
    else: no error, every job once."""
    client = res.client()
    ledger = f"{res.prefix}:ledger"
    process = make_processor(client, ledger)
    proxy.delay = 0.03
    nodes = await add_flow(res, "slow", 40, 0.0, "sn")
    res.worker("sn", process, url=proxy.url, concurrency=10)
    res.worker("sn-p", process, url=proxy.url)
    await until(lambda: parent_done(client, res, nodes), 20, "the flow to finish")
    report = await verify_completed(client, res.prefix, nodes, ledger)
    assert set(report["runs"].values()) == {1}
    assert res.errors["sn"] == [] and res.errors["sn-p"] == []


async def test_redis_stops_answering_longer_than_the_lock(debug_redis: RedisServer) -> None:
    """DEBUG SLEEP: Redis answers nothing for 1.5 s while jobs whose locks last 0.8 s are
    running. When it answers again the locks have expired: the completions are refused
    (reported), the stalled check moves the jobs back and they complete once."""
    res = Resources(debug_redis.url, "ds")
    try:
        client = res.client()
        ledger = "ds:ledger"
        process = make_processor(client, ledger)
        nodes = await add_flow(res, "sleep", 24, 0.3, "ds")
        w = res.worker("ds", process, concurrency=8, lock_duration=800, stalled_interval=200,
                       max_stalled_count=20)
        res.worker("ds-p", process)
        await until(lambda: len(w._running) >= 8, 5, "eight running jobs")
        sleeper = res.client()
        await sleeper.execute_command("DEBUG", "SLEEP", "1.5")
        await until(lambda: parent_done(client, res, nodes), 20, "the flow to finish")
        report = await verify_completed(client, "ds", nodes, ledger)
        assert any(isinstance(e, ServerError) or "renew lock" in str(e) for e in res.errors["ds"]), res.errors
        assert max(report["runs"].values()) == 2
    finally:
        await res.aclose()


@pytest.mark.slow
async def test_flapping_connection_under_load(res: Resources, proxy: Proxy) -> None:
    """Two minutes' worth of faults compressed: cuts, partitions, lost replies and delays at
    random, every 0.2-0.6 s, under 1,200 jobs in 4 flows."""
    client = res.client()
    ledger = f"{res.prefix}:ledger"
    process = make_processor(client, ledger)
    nodes: list[Node] = []
    for k in range(4):
        nodes += await add_flow(res, f"flap{k}", 300, 0.01, "fl")
    timings = {"lock_duration": 1000, "stalled_interval": 250, "max_stalled_count": 100}
    res.worker("fl", process, url=quick_retry(proxy.url), concurrency=16, **timings)
    res.worker("fl", process, url=proxy.url, concurrency=16, **timings)
    res.worker("fl-p", process, url=proxy.url, **timings)
    rng = random.Random(11)

    async def done() -> bool:
        return all([await parent_done(client, res, nodes[k * 301 : (k + 1) * 301]) for k in range(4)])

    for _ in range(30):
        if await done():
            break
        fault = rng.choice(["cut", "hold", "lose", "delay"])
        if fault == "cut":
            proxy.cut(refuse_for=rng.uniform(0.1, 0.8))
        elif fault == "hold":
            proxy.hold()
            await asyncio.sleep(rng.uniform(0.1, 1.5))
            proxy.release()
        elif fault == "lose":
            proxy.lose_next_replies(rng.randint(1, 3))
        else:
            proxy.delay = rng.choice([0.0, 0.005, 0.02])
        await asyncio.sleep(rng.uniform(0.2, 0.6))
    proxy.delay = 0.0
    proxy.release()
    await until(done, 60, "the flows to finish")
    await verify_completed(client, res.prefix, nodes, ledger)


async def test_error_replies_for_a_second_do_not_stop_lock_renewal(
    own_redis: Callable[..., RedisServer], redis_url: str, prefix: str
) -> None:
    """Redis refuses writes (OOM) for a second while a long job runs. Expected: the worker
    reports the errors, renews the job's lock again once Redis accepts writes, and the job runs
    once. (The outage is shorter than the lock: a lock that expires during an outage is lost,
    in BullMQ too, and its job may then run twice.)"""
    server = own_redis()
    res = Resources(server.url, "oom")
    try:
        client = res.client()
        ledger_client = res.client(redis_url)
        ledger = f"{prefix}:ledger"
        process = make_processor(ledger_client, ledger)
        q = res.queue("om")
        timings = {"lock_duration": 2000, "stalled_interval": 200}
        w = res.worker("om", process, **timings)
        job = await q.add("long", {"v": 1, "sleep": 3.0})
        await until(lambda: w._running, 5, "the long job to run")
        await client.config_set("maxmemory", "1")
        await asyncio.sleep(1.0)
        await client.config_set("maxmemory", "0")
        # another worker's stalled check (no processor of its own)
        checker = res.worker("om", None, autorun=False, **timings)
        moved: list[str] = []
        deadline = time.monotonic() + 6
        while await client.zscore(res.key("om", "completed"), job.id) is None:
            # (without lock renewal a 3 s job with a 2 s lock is taken over again and again:
            # it never completes)
            assert time.monotonic() < deadline, f"the long job did not complete; stalled: {moved}"
            moved += await checker.check_stalled()
            await asyncio.sleep(0.1)
        assert res.errors["om"], "the OOM replies were not reported"
        assert moved == [], "the running job was declared stalled: its lock was not renewed"
        runs = await ledger_client.hget(f"{ledger}:runs", f"oom:om:{job.id}")
        assert runs == b"1"
    finally:
        await res.aclose()


async def test_high_concurrency_processors_calling_redis(res: Resources) -> None:
    q = res.queue("hc")
    await q.add_bulk([{"name": "j", "data": {}} for _ in range(300)])
    failed: list[BaseException] = []
    done: list[str] = []

    async def processor(job: Any) -> int:
        await job.update_progress(50)
        await job.log("halfway")
        return 1

    w = res.worker("hc", processor, concurrency=300)
    w.on("failed", lambda job, err, prev: failed.append(err))
    w.on("completed", lambda job, result, prev: done.append(job.id))
    await until(lambda: len(done) + len(failed) >= 300, 20, "every job to end")
    assert failed == [], f"{len(failed)} jobs failed, e.g. {failed[0]!r}"


async def test_a_silently_stuck_blocking_wait_is_noticed(
    res: Resources, proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection of an idle worker's marker wait stops carrying anything (no reset: a
    stuck link or a dead NAT entry). The wait has a finite client-side bound, so the worker
    reports it and, once the link works again, runs new work; with no bound it would wait on
    the dead socket forever."""
    monkeypatch.setattr(worker_module, "_MAX_DELAYED_WAIT", 0.5)
    monkeypatch.setattr(worker_module, "_BLOCKING_MARGIN", 0.5)
    client = res.client()
    w = res.worker("stuck", lambda job: job.data["v"], url=quick_retry(proxy.url), drain_delay=0.5)
    done: asyncio.Queue[Any] = asyncio.Queue()
    w.on("completed", lambda job, result, *_: done.put_nowait(result))
    await until(lambda: blocked_on_markers(client, 1), 5, "the worker to block on its marker")
    proxy.hold()
    await until(lambda: res.errors["stuck"], 5, "the worker to notice the stuck wait")
    # reported as bullfast's type, caused by the timeout
    assert any(isinstance(e, RedisUnavailableError) and "Timeout" in type(e.__cause__).__name__
               for e in res.errors["stuck"]), res.errors
    proxy.release()
    async with Queue("stuck", connection=res.url, prefix=res.prefix) as q:
        await q.add("j", {"v": 7})
    assert await asyncio.wait_for(done.get(), 10) == 7


async def test_a_tiny_drain_delay_waits_without_reporting_errors(
    res: Resources, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drain_delay below a millisecond waits 2 ms (BullMQ: 1 ms; it refuses 0, as bullfast
    does); BZPOPMIN's own 0 (block for ever) would outlast the worker's bound on the wait, and
    be reported as a stuck connection, and Redis 6.2 reads 0.001 s as 0."""
    monkeypatch.setattr(worker_module, "_BLOCKING_MARGIN", 0.2)
    w = res.worker("dz", lambda job: job.data["v"], drain_delay=0.0001)
    done: asyncio.Queue[Any] = asyncio.Queue()
    w.on("completed", lambda job, result, *_: done.put_nowait(result))
    await asyncio.sleep(1.0)
    assert res.errors["dz"] == []
    async with Queue("dz", connection=res.url, prefix=res.prefix) as q:
        await q.add("j", {"v": 3})
    assert await asyncio.wait_for(done.get(), 5) == 3
    assert res.errors["dz"] == []
