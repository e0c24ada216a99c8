#!/usr/bin/env python3
"""One measurement of ``bullfast bench`` for a Python implementation, in a fresh process.

    python benchmarks/runner.py --impl bullfast|bullmq-py --scenario S --n N [--c C]
        --url redis://... --prefix P [--warmup W] [--deadline S]

Run by the harness (``benchmarks/harness.py``), never by hand. ``bullfast`` is the bullfast
importable by the interpreter (``BULLFAST_PURE_PYTHON=1`` in the environment selects the
pure-Python core: that is ``bullfast-pure``); ``bullmq-py`` is ``bullmq`` from PyPI, run by the
interpreter of ``benchmarks/.venv-bullmq`` in isolated mode (``python -I``). This file imports
only the standard library at module level, then the library under test and redis-py (which
both libraries depend on), so it runs in either environment.

Every scenario: build the library's objects, one small warm-up operation of the same shape on
other queues (connects, loads the Lua scripts: ``setup_seconds``), the rest of the warm-up
(``warmup_seconds``), build the input, collect garbage, then the timed region. Around the
timed region: ``INFO cpu`` (Redis CPU seconds), ``INFO memory`` (Redis memory per job, for
the add scenarios), the process's CPU time, ``CLOCK_MONOTONIC`` timestamps for the harness's
PING probe. The result is one JSON line on stdout; a wrong result is an error (exit status 1).
Inputs are identical to ``node/bench.mjs`` (keep the two in step).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import math
import os
import platform
import sys
import time
import traceback
from typing import Any

CLOSE_TIMEOUT = 10.0

# Queue names (the same in node/bench.mjs; the harness checks them in Redis afterwards).
QUEUES = {
    "fanout": ("fanout-parent", "fanout-child"),
    "flows": ("flows-parent", "flows-child"),
    "bulk": ("bulk",),
    "add": ("add",),
    "burst": ("burst",),
    "start": ("start",),
    "mapreduce": ("reduce", "map"),
    "chain": ("chain",),
}


def warm(name: str) -> str:
    return f"warm-{name}"


# ---------------------------------------------------------------------------------------------
# Inputs (keep in step with node/bench.mjs)
# ---------------------------------------------------------------------------------------------


def payload(k: int) -> str:
    return hashlib.sha256(str(k).encode()).hexdigest()  # 64 characters


def child_data(k: int) -> dict[str, Any]:
    return {"i": k, "payload": payload(k)}


def fanout_tree(n: int, parent_q: str, child_q: str) -> dict[str, Any]:
    children = [{"name": "child", "queueName": child_q, "data": child_data(k)} for k in range(n)]
    return {"name": "parent", "queueName": parent_q, "data": {"n": n}, "children": children}


def small_flows(count: int, parent_q: str, child_q: str) -> list[dict[str, Any]]:
    return [
        {
            "name": "parent",
            "queueName": parent_q,
            "data": {"flow": f},
            "children": [{"name": "child", "queueName": child_q, "data": child_data(k)} for k in range(3 * f, 3 * f + 3)],
        }
        for f in range(count)
    ]


def plain_jobs(n: int) -> list[dict[str, Any]]:
    return [{"name": "job", "data": child_data(k)} for k in range(n)]


def mapreduce_tree(n: int, reduce_q: str, map_q: str) -> dict[str, Any]:
    children = [{"name": "map", "queueName": map_q, "data": {"k": k}} for k in range(n)]
    return {"name": "reduce", "queueName": reduce_q, "data": {"n": n}, "children": children}


def chain_tree(depth: int, q: str) -> dict[str, Any]:
    """A chain: level 0 is the root, level depth-1 the leaf (which runs first)."""
    node: dict[str, Any] = {"name": "step", "queueName": q, "data": {"level": depth - 1, "payload": payload(depth - 1)}}
    for level in range(depth - 2, -1, -1):
        node = {"name": "step", "queueName": q, "data": {"level": level, "payload": payload(level)}, "children": [node]}
    return node


def expected_sum(n: int) -> int:
    return n * (n - 1) // 2


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    """p50 / p99 / max in milliseconds (nearest rank)."""
    s = sorted(samples_ns)
    if not s:
        return {}

    def rank(p: float) -> float:
        return s[max(0, math.ceil(p * len(s)) - 1)] / 1e6

    return {"p50_ms": rank(0.50), "p99_ms": rank(0.99), "max_ms": s[-1] / 1e6, "count": len(s)}


# ---------------------------------------------------------------------------------------------
# The two Python libraries behind one interface
# ---------------------------------------------------------------------------------------------


class Lib:
    version = ""

    def __init__(self, url: str, prefix: str) -> None:
        self.url, self.prefix = url, prefix
        self._closers: list[Any] = []

    def flow_producer(self) -> Any: ...
    async def flow_add(self, fp: Any, tree: dict[str, Any]) -> tuple[str, int]: ...  # (parent id, children)
    async def flow_add_bulk(self, fp: Any, trees: list[dict[str, Any]]) -> int: ...
    def queue(self, name: str) -> Any: ...
    async def add(self, q: Any, name: str, data: Any) -> str: ...
    async def add_bulk(self, q: Any, jobs: list[dict[str, Any]]) -> int: ...
    def worker(self, name: str, processor: Any, concurrency: int) -> Any: ...
    async def children_values(self, job: Any) -> dict[str, Any]: ...

    async def ready(self, worker: Any) -> None:
        # Neither Python library says when a worker's blocking connection is up: give it time
        # (outside the timed region).
        await asyncio.sleep(0.3)


class Bullfast(Lib):
    def __init__(self, url: str, prefix: str) -> None:
        super().__init__(url, prefix)
        import bullfast
        from bullfast import core

        self.mod = bullfast
        kind = "compiled" if core.IS_COMPILED else "pure-Python"
        self.version = f"bullfast {bullfast.__version__} ({kind} core)"

    def flow_producer(self) -> Any:
        return self.mod.FlowProducer(connection=self.url, prefix=self.prefix)

    async def flow_add(self, fp: Any, tree: dict[str, Any]) -> tuple[str, int]:
        root = await fp.add(tree)
        return str(root.job.id), len(root.children or ())

    async def flow_add_bulk(self, fp: Any, trees: list[dict[str, Any]]) -> int:
        return len(await fp.add_bulk(trees))

    def queue(self, name: str) -> Any:
        return self.mod.Queue(name, connection=self.url, prefix=self.prefix)

    async def add(self, q: Any, name: str, data: Any) -> str:
        return str((await q.add(name, data)).id)

    async def add_bulk(self, q: Any, jobs: list[dict[str, Any]]) -> int:
        return len(await q.add_bulk(jobs))

    def worker(self, name: str, processor: Any, concurrency: int) -> Any:
        return self.mod.Worker(name, processor, connection=self.url, prefix=self.prefix, concurrency=concurrency)

    async def children_values(self, job: Any) -> dict[str, Any]:
        return dict(await job.get_children_values())


class BullmqPy(Lib):
    def __init__(self, url: str, prefix: str) -> None:
        super().__init__(url, prefix)
        from importlib.metadata import version

        import bullmq

        self.mod = bullmq
        self.version = f"bullmq {version('bullmq')} (redis-py {version('redis')})"

    def flow_producer(self) -> Any:
        return self.mod.FlowProducer({"connection": self.url, "prefix": self.prefix})

    async def flow_add(self, fp: Any, tree: dict[str, Any]) -> tuple[str, int]:
        root = await fp.add(tree)
        return str(root["job"].id), len(root.get("children") or ())

    async def flow_add_bulk(self, fp: Any, trees: list[dict[str, Any]]) -> int:
        return len(await fp.addBulk(trees))

    def queue(self, name: str) -> Any:
        return self.mod.Queue(name, {"connection": self.url, "prefix": self.prefix})

    async def add(self, q: Any, name: str, data: Any) -> str:
        return str((await q.add(name, data)).id)

    async def add_bulk(self, q: Any, jobs: list[dict[str, Any]]) -> int:
        return len(await q.addBulk(jobs))

    def worker(self, name: str, processor: Any, concurrency: int) -> Any:
        opts = {"connection": self.url, "prefix": self.prefix, "concurrency": concurrency}
        return self.mod.Worker(name, processor, opts)

    async def children_values(self, job: Any) -> dict[str, Any]:
        return dict(await job.getChildrenValues())


async def close_all(*objs: Any) -> int:
    """Close producers, queues and workers (outside the timed region), each given
    CLOSE_TIMEOUT seconds; returns how many did not close in time (bullmq-py 3.4.4's
    ``Worker.close()`` can hang while its blocking pop is cancelled; the process then ends
    with ``os._exit``)."""
    results = await asyncio.gather(
        *(asyncio.wait_for(asyncio.shield(o.close()), CLOSE_TIMEOUT) for o in objs), return_exceptions=True
    )
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, asyncio.TimeoutError):
            raise r
    return sum(isinstance(r, asyncio.TimeoutError) for r in results)


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------


def host_busy_seconds() -> float | None:
    """CPU seconds the host has been busy (/proc/stat: user + nice + system + irq + softirq)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    t = [int(x) for x in fields[1:9]]
    return (t[0] + t[1] + t[2] + t[5] + t[6]) / os.sysconf("SC_CLK_TCK")


class Meter:
    """Redis CPU and memory, the process's CPU, the host's CPU and the monotonic clock around a
    timed region."""

    def __init__(self, info: Any) -> None:
        self.info = info
        self.out: dict[str, Any] = {}

    async def _redis(self) -> tuple[float, int]:
        cpu = await self.info.info("cpu")
        mem = await self.info.info("memory")
        return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]), int(mem["used_memory"])

    async def start(self) -> None:
        gc.collect()
        self.cpu0, self.mem0 = await self._redis()
        self.h0 = host_busy_seconds()
        self.c0 = time.process_time()
        self.t0 = time.monotonic_ns()

    async def stop(self, jobs: int, memory: bool) -> dict[str, Any]:
        t1 = time.monotonic_ns()
        c1 = time.process_time()
        h1 = host_busy_seconds()
        cpu1, mem1 = await self._redis()
        self.out.update(
            seconds=(t1 - self.t0) / 1e9,
            t_start_ns=self.t0,
            t_end_ns=t1,
            jobs=jobs,
            client_cpu_seconds=c1 - self.c0,
            redis_cpu_seconds=cpu1 - self.cpu0,
            host_busy_cpu_seconds=None if h1 is None or self.h0 is None else h1 - self.h0,
        )
        if memory:
            self.out["redis_memory_bytes"] = mem1 - self.mem0
        return self.out


async def scenario_fanout(lib: Lib, m: Meter, args: argparse.Namespace, st: dict[str, Any]) -> dict[str, Any]:
    parent_q, child_q = QUEUES["fanout"]
    fp = lib.flow_producer()
    try:
        t = time.perf_counter()
        await lib.flow_add(fp, fanout_tree(1, warm(parent_q), warm(child_q)))
        st["setup_seconds"] = time.perf_counter() - t
        t = time.perf_counter()
        await lib.flow_add(fp, fanout_tree(args.warmup, warm(parent_q), warm(child_q)))
        st["warmup_seconds"] = time.perf_counter() - t
        tree = fanout_tree(args.n, parent_q, child_q)
        await m.start()
        parent_id, children = await lib.flow_add(fp, tree)
        out = await m.stop(args.n + 1, memory=True)
    finally:
        await close_all(fp)
    if children != args.n:
        raise RuntimeError(f"WRONG RESULT: the flow has {children} children, expected {args.n}")
    out["parent_id"] = parent_id
    out["self_check"] = f"add returned the parent and {children} children"
    return out


async def scenario_flows(lib: Lib, m: Meter, args: argparse.Namespace, st: dict[str, Any]) -> dict[str, Any]:
    parent_q, child_q = QUEUES["flows"]
    fp = lib.flow_producer()
    try:
        t = time.perf_counter()
        await lib.flow_add_bulk(fp, small_flows(1, warm(parent_q), warm(child_q)))
        st["setup_seconds"] = time.perf_counter() - t
        t = time.perf_counter()
        await lib.flow_add_bulk(fp, small_flows(args.warmup, warm(parent_q), warm(child_q)))
        st["warmup_seconds"] = time.perf_counter() - t
        flows = small_flows(args.n, parent_q, child_q)
        await m.start()
        count = await lib.flow_add_bulk(fp, flows)
        out = await m.stop(4 * args.n, memory=True)
    finally:
        await close_all(fp)
    if count != args.n:
        raise RuntimeError(f"WRONG RESULT: add_bulk returned {count} flows, expected {args.n}")
    out["self_check"] = f"add_bulk returned {count} flows"
    return out


async def scenario_bulk(lib: Lib, m: Meter, args: argparse.Namespace, st: dict[str, Any]) -> dict[str, Any]:
    (name,) = QUEUES["bulk"]
    q, wq = lib.queue(name), lib.queue(warm(name))
    try:
        t = time.perf_counter()
        await lib.add_bulk(wq, plain_jobs(1))
        await lib.add_bulk(q, [])  # nothing written; lets a lazy queue connect before timing
        st["setup_seconds"] = time.perf_counter() - t
        t = time.perf_counter()
        await lib.add_bulk(wq, plain_jobs(args.warmup))
        st["warmup_seconds"] = time.perf_counter() - t
        jobs = plain_jobs(args.n)
        await m.start()
        count = await lib.add_bulk(q, jobs)
        out = await m.stop(args.n, memory=True)
    finally:
        await close_all(q, wq)
    if count != args.n:
        raise RuntimeError(f"WRONG RESULT: add_bulk returned {count} jobs, expected {args.n}")
    out["self_check"] = f"add_bulk returned {count} jobs"
    return out


async def warm_up_adds(lib: Lib, wq: Any, args: argparse.Namespace, st: dict[str, Any], at_once: bool) -> None:
    """The add scenarios' set-up (one add: connect, load the scripts) and warm-up round on the
    warm-up queue, one add after the other or all at once, as the measured adds."""
    t = time.perf_counter()
    await lib.add(wq, "job", child_data(0))
    st["setup_seconds"] = time.perf_counter() - t
    t = time.perf_counter()
    if at_once:
        await asyncio.gather(*(lib.add(wq, "job", child_data(k)) for k in range(args.warmup)))
    else:
        for k in range(args.warmup):
            await lib.add(wq, "job", child_data(k))
    st["warmup_seconds"] = time.perf_counter() - t


async def scenario_add(lib: Lib, m: Meter, args: argparse.Namespace, st: dict[str, Any]) -> dict[str, Any]:
    (name,) = QUEUES["add"]
    q, wq = lib.queue(name), lib.queue(warm(name))
    try:
        await warm_up_adds(lib, wq, args, st, at_once=False)
        inputs = [child_data(k) for k in range(args.n)]
        lat: list[int] = []
        ids = set()
        await m.start()
        for data in inputs:
            a = time.monotonic_ns()
            ids.add(await lib.add(q, "job", data))
            lat.append(time.monotonic_ns() - a)
        out = await m.stop(args.n, memory=True)
    finally:
        await close_all(q, wq)
    if len(ids) != args.n:
        raise RuntimeError(f"WRONG RESULT: {len(ids)} distinct job ids for {args.n} adds")
    out["latency"] = percentiles(lat)
    out["self_check"] = f"{args.n} adds returned {len(ids)} distinct ids"
    return out


async def scenario_burst(lib: Lib, m: Meter, args: argparse.Namespace, st: dict[str, Any]) -> dict[str, Any]:
    """N ``Queue.add`` calls started at once (``asyncio.gather``), as an app that adds from
    many tasks; the time until the last one returned."""
    (name,) = QUEUES["burst"]
    q, wq = lib.queue(name), lib.queue(warm(name))
    try:
        await warm_up_adds(lib, wq, args, st, at_once=True)
        inputs = [child_data(k) for k in range(args.n)]
        await m.start()
        ids = set(await asyncio.gather(*(lib.add(q, "job", data) for data in inputs)))
        out = await m.stop(args.n, memory=True)
    finally:
        await close_all(q, wq)
    if len(ids) != args.n:
        raise RuntimeError(f"WRONG RESULT: {len(ids)} distinct job ids for {args.n} adds")
    out["self_check"] = f"{args.n} concurrent adds returned {len(ids)} distinct ids"
    return out


async def scenario_start(lib: Lib, m: Meter, args: argparse.Namespace, st: dict[str, Any]) -> dict[str, Any]:
    """An idle worker (concurrency 1); jobs added one at a time, each once the previous one
    completed; latency = the processor's start minus the start of the ``add`` call."""
    (name,) = QUEUES["start"]
    loop = asyncio.get_running_loop()
    started: dict[int, int] = {}
    completed: dict[str, asyncio.Future[Any]] = {}

    async def processor(job: Any, *_: Any) -> Any:
        started[job.data["i"]] = time.monotonic_ns()
        return {"i": job.data["i"]}

    def on_completed(job: Any, result: Any, *_: Any) -> None:
        fut = completed.get(f"{job.data['i']}:{job.name}")
        if fut is not None and not fut.done():
            fut.set_result(result)

    def on_failed(job: Any, err: Any, *_: Any) -> None:
        fut = completed.get(f"{job.data['i']}:{job.name}")
        if fut is not None and not fut.done():
            fut.set_exception(RuntimeError(f"job {job.id} failed: {err!r}"))

    async def one(q: Any, k: int, job_name: str) -> int:
        fut = completed[f"{k}:{job_name}"] = loop.create_future()
        a = time.monotonic_ns()
        await lib.add(q, job_name, child_data(k))
        await asyncio.wait_for(fut, args.deadline)
        return started[k] - a

    q, wq = lib.queue(name), lib.queue(warm(name))
    ww = w = None
    try:
        ww = lib.worker(warm(name), processor, 1)
        ww.on("completed", on_completed)
        ww.on("failed", on_failed)
        await lib.ready(ww)
        t = time.perf_counter()
        await one(wq, 0, "warm")
        st["setup_seconds"] = time.perf_counter() - t
        t = time.perf_counter()
        for k in range(1, args.warmup):
            await one(wq, k, "warm")
        await close_all(ww)
        ww = None
        w = lib.worker(name, processor, 1)
        w.on("completed", on_completed)
        w.on("failed", on_failed)
        await lib.ready(w)
        await one(q, -1, "first")  # untimed: the queue connected, the worker taking jobs
        st["warmup_seconds"] = time.perf_counter() - t
        started.clear()
        lat: list[int] = []
        await m.start()
        for k in range(args.n):
            lat.append(await one(q, k, "job"))
        out = await m.stop(args.n, memory=False)
    finally:
        await close_all(*(o for o in (q, wq, w, ww) if o is not None))
    out["latency"] = percentiles(lat)
    out["self_check"] = f"{args.n} jobs started and completed, one at a time"
    return out


async def scenario_mapreduce(lib: Lib, m: Meter, args: argparse.Namespace, st: dict[str, Any]) -> dict[str, Any]:
    """Timed from the start of the flow's add to the parent's completion; the workers (map:
    concurrency C, reduce: 1) are created once the add has returned. (Not idle workers during
    the add: an idle bullmq-py 3.4.4 worker loses its wake-up when an add holds Redis longer
    than its 5 s block timeout, and the jobs then wait for good; see benchmarks/README.md.)"""
    reduce_q, map_q = QUEUES["mapreduce"]
    loop = asyncio.get_running_loop()
    errors: list[str] = []

    async def map_job(job: Any, *_: Any) -> Any:
        return {"n": job.data["k"]}

    async def reduce_job(job: Any, *_: Any) -> Any:
        total = count = 0
        for value in (await lib.children_values(job)).values():
            total += value["n"]
            count += 1
        return {"sum": total, "count": count}

    async def round_(n: int, rq: str, mq: str, timed: bool) -> tuple[dict[str, Any], Any]:
        done: asyncio.Future[Any] = loop.create_future()
        tree = mapreduce_tree(n, rq, mq)
        out: dict[str, Any] = {}
        if timed:
            await m.start()
        a = time.perf_counter()
        parent_id, _ = await lib.flow_add(fp, tree)
        added = time.perf_counter()

        def completed(job: Any, result: Any, *_: Any) -> None:
            if str(job.id) == parent_id and not done.done():
                done.set_result(result)

        def failed(job: Any, err: Any, *_: Any) -> None:
            if not done.done():
                done.set_exception(RuntimeError(f"job {getattr(job, 'id', '?')} failed: {err!r}"))

        mw = lib.worker(mq, map_job, args.c)
        rw = lib.worker(rq, reduce_job, 1)
        rw.on("completed", completed)
        for w in (mw, rw):
            w.on("failed", failed)
            w.on("error", lambda err, *_: errors.append(repr(err)))
        result = await asyncio.wait_for(done, args.deadline)
        if timed:
            out = await m.stop(n + 1, memory=False)
        out["add_seconds"] = added - a
        out["process_seconds"] = time.perf_counter() - added
        out["parent_id"] = parent_id
        out["close_timeouts"] = await close_all(mw, rw)
        if result != {"sum": expected_sum(n), "count": n}:
            raise RuntimeError(f"WRONG RESULT: the parent returned {result!r}, expected sum {expected_sum(n)} of {n}")
        return out, result

    fp = lib.flow_producer()
    try:
        t = time.perf_counter()
        await lib.flow_add(fp, fanout_tree(1, warm("setup-parent"), warm("setup-child")))  # connect, load scripts
        st["setup_seconds"] = time.perf_counter() - t
        t = time.perf_counter()
        warm_out, _ = await round_(args.warmup, warm(reduce_q), warm(map_q), timed=False)
        st["warmup_seconds"] = time.perf_counter() - t
        out, result = await round_(args.n, reduce_q, map_q, timed=True)
        out["close_timeouts"] += warm_out["close_timeouts"]
    finally:
        await close_all(fp)
    out["result"] = result
    out["worker_error_count"] = len(errors)
    out["worker_errors"] = errors[:5]
    out["self_check"] = f"the parent returned sum(range({args.n})) over {args.n} children"
    return out


async def scenario_chain(lib: Lib, m: Meter, args: argparse.Namespace, st: dict[str, Any]) -> dict[str, Any]:
    """A chain of depth D (each step the only child of the next), an idle worker
    (concurrency 1); timed from the start of the add to the root's completion."""
    (name,) = QUEUES["chain"]
    loop = asyncio.get_running_loop()
    errors: list[str] = []

    async def step(job: Any, *_: Any) -> Any:
        values = await lib.children_values(job)
        return {"depth": 1 + sum(v["depth"] for v in values.values())}

    async def round_(depth: int, q: str, timed: bool) -> tuple[dict[str, Any], Any]:
        done: asyncio.Future[Any] = loop.create_future()
        root: dict[str, str] = {}
        seen: dict[str, Any] = {}

        def completed(job: Any, result: Any, *_: Any) -> None:
            seen[str(job.id)] = result
            if str(job.id) == root.get("id") and not done.done():
                done.set_result(result)

        def failed(job: Any, err: Any, *_: Any) -> None:
            if not done.done():
                done.set_exception(RuntimeError(f"job {getattr(job, 'id', '?')} failed: {err!r}"))

        w = lib.worker(q, step, 1)
        w.on("completed", completed)
        w.on("failed", failed)
        w.on("error", lambda err, *_: errors.append(repr(err)))
        await lib.ready(w)
        tree = chain_tree(depth, q)
        out: dict[str, Any] = {}
        if timed:
            await m.start()
        a = time.perf_counter()
        root["id"], _ = await lib.flow_add(fp, tree)
        added = time.perf_counter()
        if root["id"] in seen and not done.done():  # completed before add() returned
            done.set_result(seen[root["id"]])
        result = await asyncio.wait_for(done, args.deadline)
        if timed:
            out = await m.stop(depth, memory=False)
        out["add_seconds"] = added - a
        out["process_seconds"] = time.perf_counter() - added
        out["parent_id"] = root["id"]
        out["close_timeouts"] = await close_all(w)
        if result != {"depth": depth}:
            raise RuntimeError(f"WRONG RESULT: the root returned {result!r}, expected {{'depth': {depth}}}")
        return out, result

    fp = lib.flow_producer()
    try:
        t = time.perf_counter()
        await lib.flow_add(fp, fanout_tree(1, warm("setup-parent"), warm("setup-child")))
        st["setup_seconds"] = time.perf_counter() - t
        t = time.perf_counter()
        warm_out, _ = await round_(max(2, args.warmup), warm(name), timed=False)
        st["warmup_seconds"] = time.perf_counter() - t
        out, result = await round_(args.n, name, timed=True)
        out["close_timeouts"] += warm_out["close_timeouts"]
    finally:
        await close_all(fp)
    out["result"] = result
    out["worker_error_count"] = len(errors)
    out["worker_errors"] = errors[:5]
    out["self_check"] = f"the root returned depth {args.n}, each step reading its child's value"
    return out


SCENARIOS = {
    "fanout": scenario_fanout,
    "flows": scenario_flows,
    "bulk": scenario_bulk,
    "add": scenario_add,
    "burst": scenario_burst,
    "start": scenario_start,
    "mapreduce": scenario_mapreduce,
    "chain": scenario_chain,
}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import redis.asyncio as aioredis

    t = time.perf_counter()
    lib: Lib = Bullfast(args.url, args.prefix) if args.impl == "bullfast" else BullmqPy(args.url, args.prefix)
    import_seconds = time.perf_counter() - t
    info = aioredis.Redis.from_url(args.url)
    try:
        await info.ping()
        state: dict[str, Any] = {}
        out = await SCENARIOS[args.scenario](lib, Meter(info), args, state)
    finally:
        await info.aclose()
    out.update(state)
    out["import_seconds"] = import_seconds
    out["version"] = lib.version
    out["python"] = platform.python_version()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--impl", choices=("bullfast", "bullmq-py"), required=True)
    p.add_argument("--scenario", choices=tuple(SCENARIOS), required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--c", type=int, default=1)
    p.add_argument("--url", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--deadline", type=float, default=600)
    args = p.parse_args(argv)

    async def run_and_exit() -> None:
        # os._exit, also on failure: a bullmq-py worker that did not close would keep
        # asyncio.run from returning
        try:
            result = await run(args)
        except BaseException:
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(1)
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    asyncio.run(run_and_exit())
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
