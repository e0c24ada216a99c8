"""bullfast's Worker on a private Redis: processing, events, retries, retention, ordering,
flows and failure policies, dynamic children, delays and rate limits, stalled jobs, locks,
corrupt jobs, closing and pausing, lost connections.

References like "7.4" are sections of the protocol (shared/protocol.md). Every worker, queue
and flow producer is closed inside the test (the ``env`` fixture closes what it made).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bullfast import (
    DelayedError,
    FlowProducer,
    Queue,
    QueueEvents,
    RateLimitError,
    UnrecoverableError,
    WaitingChildrenError,
    WaitingError,
)
from bullfast.errors import (
    BullfastError,
    EventLoopError,
    InvalidOptionError,
    JobHasFailedChildrenError,
    JobNotFoundError,
    LockMismatchError,
    LockMissingError,
    NotSupportedError,
    PendingChildrenError,
    ServerError,
)
from bullfast.job import Job
from bullfast.worker import Worker

# Small timings so that every test stays fast.
FAST = {"drain_delay": 0.2}
NO_POLICY = {"fail_parent_on_failure": False}
CLOSE_TIMEOUT = 10


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def until(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


async def poll(predicate: Callable[[], Any], timeout: float) -> bool:
    """Like ``until`` but answers False on timeout instead of raising."""
    try:
        await until(predicate, timeout)
        return True
    except AssertionError:
        return False


class Events:
    """Records what a worker emits: ``events.of("completed")`` -> list of argument tuples."""

    NAMES = ("active", "completed", "failed", "progress", "drained", "error", "stalled", "closed",
             "lockRenewalFailed")

    def __init__(self, worker: Worker) -> None:
        self.log: list[tuple[str, tuple[Any, ...]]] = []
        for name in self.NAMES:
            worker.on(name, self._recorder(name))

    def _recorder(self, name: str) -> Callable[..., None]:
        def record(*args: Any) -> None:
            self.log.append((name, args))

        return record

    def of(self, name: str) -> list[tuple[Any, ...]]:
        return [args for n, args in self.log if n == name]

    def names(self) -> list[str]:
        return [n for n, _ in self.log]

    async def wait(self, name: str, n: int = 1, timeout: float = 5.0) -> list[tuple[Any, ...]]:
        await until(lambda: len(self.of(name)) >= n, timeout, f"{n} {name!r} events (got {self.names()})")
        return self.of(name)


class Env:
    """Makes queues, workers and flow producers bound to the test's Redis and prefix, and
    closes them all (workers first) when the test ends."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self.url = redis_url
        self.prefix = prefix
        self._closers: list[Any] = []

    def queue(self, name: str, **kw: Any) -> Queue:
        q = Queue(name, connection=self.url, prefix=self.prefix, **kw)
        self._closers.append(q)
        return q

    def worker(self, name: str, processor: Any = None, **kw: Any) -> Worker:
        opts = {**FAST, **kw}
        w = Worker(name, processor, connection=self.url, prefix=self.prefix, **opts)
        self._closers.append(w)
        return w

    def flow(self) -> FlowProducer:
        fp = FlowProducer(connection=self.url, prefix=self.prefix)
        self._closers.append(fp)
        return fp

    def key(self, queue: str, suffix: str) -> str:
        return f"{self.prefix}:{queue}:{suffix}"

    async def aclose(self) -> None:
        workers = [c for c in self._closers if isinstance(c, Worker)]
        others = [c for c in self._closers if not isinstance(c, Worker)]
        hung = []
        for w in workers:
            if id(w) in STOPPED_BY_HAND:
                continue
            # a close that hangs is a bug of its own; do not let it hang the test run
            if not await close_or_stop(w, CLOSE_TIMEOUT):
                hung.append(w.name)
        for c in others:
            await c.close()
        assert not hung, f"Worker.close() did not return within {CLOSE_TIMEOUT}s: {hung}"


@pytest.fixture
async def env(redis_url: str, prefix: str) -> AsyncIterator[Env]:
    e = Env(redis_url, prefix)
    try:
        yield e
    finally:
        await e.aclose()


STOPPED_BY_HAND: set[int] = set()


async def close(w: Worker) -> None:
    assert await close_or_stop(w, CLOSE_TIMEOUT), f"Worker.close() did not return within {CLOSE_TIMEOUT}s"


async def close_or_stop(w: Worker, timeout: float) -> bool:
    """Close the worker; if close() hangs, stop its tasks and connections by hand (so the test
    run neither hangs nor leaks sockets) and return False."""
    try:
        await asyncio.wait_for(w.close(), timeout)
        return True
    except asyncio.TimeoutError:
        pass
    tasks = [getattr(w, "_main", None), getattr(w, "_wait_task", None), *getattr(w, "_background", [])]
    tasks += [r.task for r in getattr(w, "_running", {}).values()]
    tasks = [t for t in tasks if t is not None and not t.done()]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for conn in (getattr(w, "_blocking", None), getattr(w, "_redis", None)):
        if conn is not None:
            await conn.close()
    executor = getattr(w, "_executor", None)
    if executor is not None:
        executor.shutdown(wait=False)
    STOPPED_BY_HAND.add(id(w))
    return False


async def state_of(q: Queue, job_id: str) -> str:
    return await q.get_job_state(job_id)


async def wait_state(q: Queue, job_id: str, state: str, timeout: float = 5.0) -> None:
    async def check() -> bool:
        return await q.get_job_state(job_id) == state

    try:
        await until(check, timeout, f"job {job_id} to be {state}")
    except AssertionError:
        raise AssertionError(f"job {job_id} is {await q.get_job_state(job_id)}, not {state}") from None


async def stream_events(client: Any, key: str) -> list[dict[str, str]]:
    return [
        {k.decode(): v.decode() for k, v in fields.items()} for _, fields in await client.xrange(key)
    ]


# ------------------------------------------------------------------------------------------
# processors and constructors
# ------------------------------------------------------------------------------------------


async def test_async_processor_completes_jobs_and_stores_results(env: Env, client: Any) -> None:
    q = env.queue("basic")
    jobs = [await q.add("sq", {"x": i}) for i in range(5)]

    async def processor(job: Job) -> Any:
        return {"sq": job.data["x"] ** 2, "name": job.name}

    w = env.worker("basic", processor)
    ev = Events(w)
    await ev.wait("completed", 5)
    for job in jobs:
        stored = await q.get_job(job.id)
        assert stored is not None
        assert stored.returnvalue == {"sq": job.data["x"] ** 2, "name": "sq"}
        assert stored.attempts_made == 1 and stored.attempts_started == 1
        assert stored.finished_on is not None and stored.processed_on is not None
        assert await state_of(q, job.id) == "completed"
    # the returnvalue is stored as compact JSON text (7.4)
    assert await client.hget(env.key("basic", jobs[2].id), "returnvalue") == b'{"sq":4,"name":"sq"}'
    counts = await q.get_job_counts("waiting", "active", "completed")
    assert counts == {"waiting": 0, "active": 0, "completed": 5}


async def test_dicts_with_non_string_keys_are_stored_as_pythons_json_writes_them(env: Env, client: Any) -> None:
    """{1: 2} is ordinary Python: the PyPI port (json.dumps) stores it as {"1": 2}, and so
    does bullfast, in the data, the result, progress and update_data (orjson alone refuses it)."""
    q = env.queue("intkeys")
    job = await q.add("count", {"words": ["a", "bb", "c"], "seen": {1: "x", 2.5: None, False: 0}})
    assert await client.hget(env.key("intkeys", job.id), "data") == (
        b'{"words":["a","bb","c"],"seen":{"1":"x","2.5":null,"false":0}}')

    async def processor(job: Job) -> Any:
        lengths: dict[int, int] = {}
        for word in job.data["words"]:
            lengths[len(word)] = lengths.get(len(word), 0) + 1
        await job.update_progress({100: "done"})
        await job.update_data({"by_len": lengths})
        return lengths

    env.worker("intkeys", processor)
    async def completed() -> bool:
        return await state_of(q, job.id) == "completed"

    await until(completed, 5, "the job to complete")
    stored = await q.get_job(job.id)
    assert stored is not None
    assert stored.returnvalue == {"1": 2, "2": 1}
    assert stored.progress == {"100": "done"}
    assert stored.data == {"by_len": {"1": 2, "2": 1}}


async def test_sync_processor_runs_in_a_thread_pool(env: Env) -> None:
    q = env.queue("sync")
    for i in range(4):
        await q.add("t", {"i": i})
    threads: list[str] = []
    main = threading.current_thread().name

    def processor(job: Job) -> int:
        threads.append(threading.current_thread().name)
        time.sleep(0.01)
        return job.data["i"] + 100

    w = env.worker("sync", processor, concurrency=2)
    ev = Events(w)
    await ev.wait("completed", 4)
    assert sorted(r for _, r, *_ in ev.of("completed")) == [100, 101, 102, 103]
    assert all(name != main for name in threads)
    assert all(name.startswith("bullfast-worker") for name in threads)


async def test_processor_taking_job_and_token_gets_the_lock_token(env: Env, client: Any) -> None:
    q = env.queue("tok")
    job = await q.add("t", {})
    seen: dict[str, Any] = {}

    async def processor(job: Job, token: str) -> str:
        seen["token"] = token
        seen["lock"] = await client.get(env.key("tok", f"{job.id}:lock"))
        return token

    w = env.worker("tok", processor)
    ev = Events(w)
    await ev.wait("completed")
    assert seen["token"] and seen["lock"] == seen["token"].encode()
    assert (await q.get_job(job.id)).returnvalue == seen["token"]
    # the lock is deleted when the job ends (7.3)
    assert await client.exists(env.key("tok", f"{job.id}:lock")) == 0


async def test_sync_processor_taking_token(env: Env) -> None:
    q = env.queue("synctok")
    await q.add("t", {})

    def processor(job: Job, token: str) -> str:
        return f"{job.id}/{token}"

    w = env.worker("synctok", processor)
    ev = Events(w)
    (job, result, *_), = await ev.wait("completed")
    assert result.startswith(f"{job.id}/") and len(result) > len(job.id) + 1


async def test_plain_functions_that_return_coroutines_get_a_job_that_works_on_the_loop(env: Env) -> None:
    """A lambda or a decorator without ``async`` that hands back an async processor's
    coroutine: the function runs in the pool, its coroutine on the worker's loop, where the
    job's methods are awaitable (they refused, failing every job, when only blocking)."""
    import functools

    queues = {"wrapped-lambda": env.queue("wrapped-lambda"), "wrapped-decorated": env.queue("wrapped-decorated")}
    for q in queues.values():
        for i in range(2):
            await q.add("t", {"i": i})
    blocking_progress: list[Any] = []

    async def handle(job: Any) -> int:
        await job.update_progress(40 + job.data["i"])
        await job.log(f"handled {job.data['i']}")
        assert isinstance(await job.get_children_values(), dict)
        return job.data["i"] * 10

    def traced(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(job: Any) -> Any:  # not async: returns the coroutine
            blocking_progress.append(job.update_progress(1))  # in the pool's thread: blocks
            return fn(job)

        return wrapper

    events = [
        Events(env.worker("wrapped-lambda", lambda job, token: handle(job))),
        Events(env.worker("wrapped-decorated", traced(handle))),
    ]
    for ev in events:
        await ev.wait("completed", 2)
        assert not ev.of("failed")
    assert blocking_progress == [None, None]
    for (name, q), ev in zip(queues.items(), events):
        for job, result, *_ in ev.of("completed"):
            stored = await q.get_job(job.id)
            assert stored.returnvalue == result == stored.data["i"] * 10, name
            assert stored.progress == 40 + stored.data["i"]
            assert (await q.get_job_logs(job.id))["logs"] == [f"handled {stored.data['i']}"]


async def test_bullmq_style_constructor(env: Env, redis_url: str, prefix: str) -> None:
    q = env.queue("style")
    for i in range(10):
        await q.add("j", {"i": i})
    running = 0
    peak = 0

    async def processor(job: Job) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.03)
        running -= 1
        return job.data["i"]

    w = Worker(
        "style",
        processor,
        {"connection": redis_url, "prefix": prefix, "concurrency": 5, "drainDelay": 0.2, "lockDuration": 5000,
         "name": "styled"},
    )
    try:
        assert w.concurrency == 5 and w.prefix == prefix and w.lock_duration == 5000 and w.drain_delay == 0.2
        ev = Events(w)
        await ev.wait("completed", 10)
        assert 1 < peak <= 5
        done = await q.get_job("3")
        assert done is not None and done.processed_by == "styled"
    finally:
        await close(w)


def test_unknown_worker_option_is_refused() -> None:
    with pytest.raises(Exception, match="unknown worker option"):
        Worker("q", None, {"connection": "redis://localhost:1", "noSuchOption": 1})


async def test_autorun_false_then_start_and_run(env: Env) -> None:
    q = env.queue("manual-start")
    job = await q.add("j", {"v": 1})
    calls: list[str] = []

    async def processor(job: Job) -> int:
        calls.append(job.id)
        return 1

    w = env.worker("manual-start", processor, autorun=False)
    ev = Events(w)
    assert not w.is_running()
    await asyncio.sleep(0.1)  # nothing may happen before start
    assert calls == [] and await state_of(q, job.id) == "waiting"
    task = w.start()
    assert w.start() is task  # idempotent
    assert w.is_running()
    await ev.wait("completed")
    await close(w)
    assert task.done() and not w.is_running()

    # run() processes until close()
    w2 = env.worker("manual-start", processor, autorun=False)
    ev2 = Events(w2)
    runner = asyncio.ensure_future(w2.run())
    job2 = await q.add("j", {"v": 2})
    await ev2.wait("completed")
    assert not runner.done()
    await close(w2)
    await asyncio.wait_for(runner, 5)
    assert calls == [job.id, job2.id]


async def test_worker_without_processor_cannot_start(env: Env) -> None:
    w = env.worker("noproc", None, autorun=False)
    with pytest.raises(Exception, match="without a processor"):
        w.start()


async def test_worker_as_async_context_manager(env: Env, redis_url: str, prefix: str) -> None:
    q = env.queue("ctx")
    await q.add("j", {})
    closed = asyncio.Event()

    async def processor(job: Job) -> str:
        await asyncio.sleep(0.05)
        return "ok"

    async with Worker("ctx", processor, connection=redis_url, prefix=prefix, drain_delay=0.2) as w:
        w.on("closed", closed.set)
        ev = Events(w)
        await ev.wait("active")
    # leaving the block closed the worker, after the running job ended
    assert closed.is_set() and not w.is_running()
    assert await state_of(q, "1") == "completed"


# ------------------------------------------------------------------------------------------
# concurrency
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 3, 8])
async def test_concurrency_is_never_exceeded_and_each_job_runs_once(env: Env, concurrency: int) -> None:
    q = env.queue("conc")
    n = 40
    await q.add_bulk([{"name": "j", "data": {"i": i}} for i in range(n)])
    running = 0
    peak = 0
    calls: Counter[str] = Counter()

    async def processor(job: Job) -> int:
        nonlocal running, peak
        calls[job.id] += 1
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.005 if job.data["i"] % 3 else 0.015)
        running -= 1
        return job.data["i"]

    w = env.worker("conc", processor, concurrency=concurrency)
    ev = Events(w)
    await ev.wait("completed", n, timeout=15)
    assert peak <= concurrency
    if concurrency > 1:
        assert peak > 1
    assert len(calls) == n and set(calls.values()) == {1}
    assert await q.get_job_counts("completed") == {"completed": n}


async def test_two_workers_share_a_queue_without_double_processing(env: Env) -> None:
    q = env.queue("shared")
    n = 60
    await q.add_bulk([{"name": "j", "data": {"i": i}} for i in range(n)])
    calls: Counter[str] = Counter()
    by_worker: Counter[str] = Counter()

    def make(tag: str) -> Any:
        async def processor(job: Job) -> str:
            calls[job.id] += 1
            by_worker[tag] += 1
            await asyncio.sleep(0.002)
            return tag

        return processor

    w1 = env.worker("shared", make("a"), concurrency=3)
    w2 = env.worker("shared", make("b"), concurrency=3)
    e1, e2 = Events(w1), Events(w2)
    await until(lambda: len(e1.of("completed")) + len(e2.of("completed")) >= n, 15, "all jobs")
    assert len(calls) == n and set(calls.values()) == {1}
    assert by_worker["a"] > 0 and by_worker["b"] > 0


async def test_sync_processor_concurrency_is_bounded_by_the_thread_pool(env: Env) -> None:
    q = env.queue("sync-conc")
    await q.add_bulk([{"name": "j", "data": {}} for _ in range(12)])
    lock = threading.Lock()
    running = 0
    peak = 0

    def processor(job: Job) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1

    w = env.worker("sync-conc", processor, concurrency=3)
    ev = Events(w)
    await ev.wait("completed", 12)
    assert 1 < peak <= 3


async def test_all_slots_are_used(env: Env) -> None:
    q = env.queue("fill")
    await q.add_bulk([{"name": "j", "data": {}} for _ in range(8)])
    running = 0
    peak = 0
    full = asyncio.Event()

    async def processor(job: Job) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == 4:
            full.set()
        await asyncio.wait_for(full.wait(), 2)
        await asyncio.sleep(0.01)
        running -= 1

    w = env.worker("fill", processor, concurrency=4)
    ev = Events(w)
    await ev.wait("completed", 8)
    assert peak == 4 and ev.of("failed") == []


async def test_free_slot_takes_a_new_job_while_another_runs(env: Env) -> None:
    q = env.queue("freeslot")
    gate = asyncio.Event()

    async def processor(job: Job) -> str:
        if job.name == "long":
            await gate.wait()
        return job.name

    w = env.worker("freeslot", processor, concurrency=2, drain_delay=5)
    ev = Events(w)
    await q.add("long", {})
    await ev.wait("active")
    await asyncio.sleep(0.1)  # the worker has looked for more work and found none
    await q.add("quick", {})
    quick_done = await poll(lambda: any(a[1] == "quick" for a in ev.of("completed")), 1.0)
    gate.set()
    await ev.wait("completed", 2)
    assert quick_done, "the second slot stayed idle while 'long' ran"


# ------------------------------------------------------------------------------------------
# events
# ------------------------------------------------------------------------------------------


async def test_events_active_completed_failed_progress_drained(env: Env, client: Any) -> None:
    q = env.queue("ev")
    ok = await q.add("ok", {"n": 1})
    bad = await q.add("bad", {"n": 2})

    async def processor(job: Job) -> Any:
        await job.update_progress(50)
        await job.update_progress({"step": "half", "pct": 0.5})
        if job.name == "bad":
            raise ValueError("bad job")
        return {"done": job.data["n"]}

    w = env.worker("ev", processor)
    ev = Events(w)
    await ev.wait("completed")
    await ev.wait("failed")
    await ev.wait("drained")

    active = ev.of("active")
    assert [a[0].id for a in active] == [ok.id, bad.id]
    (job, result, *rest), = ev.of("completed")
    assert job.id == ok.id and result == {"done": 1} and job.returnvalue == {"done": 1}
    (fjob, err, *_), = ev.of("failed")
    assert fjob.id == bad.id and isinstance(err, ValueError) and str(err) == "bad job"
    assert fjob.failed_reason == "bad job"
    progress = ev.of("progress")
    assert [(p[0].id, p[1]) for p in progress] == [
        (ok.id, 50), (ok.id, {"step": "half", "pct": 0.5}),
        (bad.id, 50), (bad.id, {"step": "half", "pct": 0.5}),
    ]
    # per job: active, then progress, then its outcome
    names = [n for n in ev.names() if n in ("active", "progress", "completed", "failed")]
    assert names == ["active", "progress", "progress", "completed",
                     "active", "progress", "progress", "failed"]
    # drained comes after the last job ended
    assert ev.names().index("drained") > ev.names().index("failed")
    stored = await q.get_job(ok.id)
    assert stored.progress == {"step": "half", "pct": 0.5}
    # the same in the queue's event stream (5)
    stream = await stream_events(client, env.key("ev", "events"))
    kinds = [e["event"] for e in stream]
    for kind in ("active", "progress", "completed", "failed", "drained"):
        assert kind in kinds, kinds
    done = next(e for e in stream if e["event"] == "completed")
    assert done == {"event": "completed", "jobId": ok.id, "returnvalue": '{"done":1}', "prev": "active"}
    failed = next(e for e in stream if e["event"] == "failed")
    assert failed == {"event": "failed", "jobId": bad.id, "failedReason": "bad job", "prev": "active"}


async def test_async_listeners_are_awaited_before_close(env: Env) -> None:
    q = env.queue("alist")
    await q.add("j", {})
    seen: list[str] = []

    async def listener(job: Job, result: Any, *_: Any) -> None:
        await asyncio.sleep(0.05)
        seen.append(job.id)

    async def processor(job: Job) -> int:
        return 1

    w = env.worker("alist", processor)
    w.on("completed", listener)
    ev = Events(w)
    await ev.wait("completed")
    await close(w)
    assert seen == ["1"]


async def test_listener_exceptions_do_not_break_the_worker(env: Env) -> None:
    q = env.queue("badlistener")
    await q.add_bulk([{"name": "j", "data": {}} for _ in range(3)])

    def explode(*_: Any) -> None:
        raise RuntimeError("listener bug")

    async def processor(job: Job) -> int:
        return 1

    w = env.worker("badlistener", processor, autorun=False)
    w.on("completed", explode)
    w.on("active", explode)
    ev = Events(w)
    w.start()
    await ev.wait("completed", 3)


# ------------------------------------------------------------------------------------------
# retries and backoff (7.5, 7.6)
# ------------------------------------------------------------------------------------------


def failing(times: dict[str, list[float]], fail_first: int = 10**9, message: str = "boom") -> Any:
    """A processor that records its start times per job and fails the first N attempts."""

    async def processor(job: Job) -> Any:
        times.setdefault(job.id, []).append(time.monotonic())
        if len(times[job.id]) <= fail_first:
            raise RuntimeError(f"{message} {len(times[job.id])}")
        return {"ok": len(times[job.id])}

    return processor


def gaps(ts: list[float]) -> list[float]:
    return [(b - a) * 1000 for a, b in zip(ts, ts[1:])]


async def test_fixed_backoff_retries_then_fails_for_good(env: Env, client: Any) -> None:
    q = env.queue("fixed")
    job = await q.add("j", {}, attempts=3, backoff={"type": "fixed", "delay": 150})
    times: dict[str, list[float]] = {}
    w = env.worker("fixed", failing(times))
    ev = Events(w)
    await ev.wait("failed", 1)
    # after the first failure: delayed, with the reason and stack of attempt 1 (7.5, 7.6)
    mid = await q.get_job(job.id)
    assert await state_of(q, job.id) == "delayed"
    assert mid.attempts_made == 1 and mid.delay == 150
    assert mid.failed_reason == "boom 1" and len(mid.stacktrace) == 1
    await ev.wait("failed", 3)
    await wait_state(q, job.id, "failed")
    final = await q.get_job(job.id)
    assert final.attempts_made == 3 and final.attempts_started == 3
    assert final.failed_reason == "boom 3"
    assert len(final.stacktrace) == 3
    assert [round(g) >= 145 for g in gaps(times[job.id])] == [True, True], gaps(times[job.id])
    assert all(g < 1500 for g in gaps(times[job.id]))
    stream = await stream_events(client, env.key("fixed", "events"))
    assert [e for e in stream if e["event"] == "retries-exhausted"] == [
        {"event": "retries-exhausted", "jobId": job.id, "attemptsMade": "3"}
    ]
    assert sum(1 for e in stream if e["event"] == "delayed") == 2
    assert len(ev.of("failed")) == 3  # one 'failed' event per failed attempt, as in BullMQ


async def test_backoff_as_a_bare_number_is_fixed(env: Env) -> None:
    q = env.queue("bare")
    job = await q.add("j", {}, attempts=2, backoff=100)
    times: dict[str, list[float]] = {}
    w = env.worker("bare", failing(times, fail_first=1))
    ev = Events(w)
    await ev.wait("completed")
    assert gaps(times[job.id])[0] >= 95
    assert (await q.get_job(job.id)).returnvalue == {"ok": 2}


async def test_exponential_backoff(env: Env) -> None:
    q = env.queue("expo")
    job = await q.add("j", {}, attempts=4, backoff={"type": "exponential", "delay": 60})
    times: dict[str, list[float]] = {}
    delays: list[int] = []
    w = env.worker("expo", failing(times))

    async def record(job: Job, err: Any, *_: Any) -> None:
        if len(delays) < 3:
            stored = await q.get_job(job.id)
            delays.append(stored.delay)

    w.on("failed", record)
    ev = Events(w)
    await ev.wait("failed", 4, timeout=10)
    await wait_state(q, job.id, "failed")
    # 2^(n-1) * delay for attempt n (7.5)
    assert delays == [60, 120, 240]
    g = gaps(times[job.id])
    assert g[0] >= 55 and g[1] >= 115 and g[2] >= 235, g
    assert g[2] < 2000
    final = await q.get_job(job.id)
    assert final.attempts_made == 4 and final.failed_reason == "boom 4"


@pytest.mark.parametrize(
    "backoff, rnd, expected",
    [
        ({"type": "fixed", "delay": 10000, "jitter": 0.5}, 0.0, 5000),
        ({"type": "fixed", "delay": 10000, "jitter": 0.5}, 0.5, 7500),
        ({"type": "fixed", "delay": 10000, "jitter": 1}, 0.25, 2500),
        ({"type": "exponential", "delay": 10000, "jitter": 0.5}, 0.0, 5000),
    ],
)
async def test_jitter_formula(
    env: Env, client: Any, monkeypatch: pytest.MonkeyPatch, backoff: dict[str, Any], rnd: float, expected: int
) -> None:
    import bullfast._finish

    monkeypatch.setattr(bullfast._finish.random, "random", lambda: rnd)
    q = env.queue("jit")
    job = await q.add("j", {}, attempts=2, backoff=backoff)
    w = env.worker("jit", failing({}))
    ev = Events(w)
    await ev.wait("failed")
    await wait_state(q, job.id, "delayed")
    assert int(await client.hget(env.key("jit", job.id), "delay")) == expected


async def test_jitter_spreads_delays_within_range(env: Env, client: Any) -> None:
    q = env.queue("jit2")
    jobs = await q.add_bulk(
        [{"name": "j", "data": {}, "opts": {"attempts": 2, "backoff": {"type": "fixed", "delay": 10000,
                                                                       "jitter": 0.5}}} for _ in range(12)]
    )
    w = env.worker("jit2", failing({}), concurrency=4)
    ev = Events(w)
    await ev.wait("failed", 12)
    delays = [int(await client.hget(env.key("jit2", j.id), "delay")) for j in jobs]
    assert all(5000 <= d <= 10000 for d in delays), delays
    assert len(set(delays)) > 1


async def test_custom_backoff_strategy(env: Env) -> None:
    q = env.queue("custom")
    job = await q.add("j", {"k": 1}, attempts=3, backoff={"type": "linear", "delay": 40})
    calls: list[tuple[Any, ...]] = []

    def strategy(attempts_made: int, kind: str, err: BaseException, job: Job) -> int:
        calls.append((attempts_made, kind, str(err), job.id, job.opts["backoff"]["delay"]))
        return attempts_made * job.opts["backoff"]["delay"]

    times: dict[str, list[float]] = {}
    w = env.worker("custom", failing(times), backoff_strategy=strategy)
    ev = Events(w)
    await ev.wait("failed", 3)
    await wait_state(q, job.id, "failed")
    assert calls == [(1, "linear", "boom 1", job.id, 40), (2, "linear", "boom 2", job.id, 40)]
    g = gaps(times[job.id])
    assert g[0] >= 35 and g[1] >= 75, g


async def test_custom_backoff_strategy_minus_one_means_no_retry(env: Env) -> None:
    q = env.queue("custom-stop")
    job = await q.add("j", {}, attempts=5, backoff={"type": "stop"})
    times: dict[str, list[float]] = {}
    w = env.worker("custom-stop", failing(times), backoff_strategy=lambda *a: -1)
    ev = Events(w)
    await ev.wait("failed")
    await wait_state(q, job.id, "failed")
    assert len(times[job.id]) == 1
    final = await q.get_job(job.id)
    assert final.attempts_made == 1 and final.failed_reason == "boom 1"


async def test_custom_backoff_strategy_zero_retries_at_once(env: Env) -> None:
    q = env.queue("custom-zero")
    job = await q.add("j", {}, attempts=3, backoff={"type": "now"})
    times: dict[str, list[float]] = {}
    w = env.worker("custom-zero", failing(times, fail_first=2), backoff_strategy=lambda *a: 0)
    ev = Events(w)
    await ev.wait("completed")
    assert len(times[job.id]) == 3
    assert (await q.get_job(job.id)).attempts_made == 3


async def test_custom_backoff_strategy_from_bullmq_settings(env: Env, redis_url: str, prefix: str) -> None:
    q = env.queue("custom-settings")
    job = await q.add("j", {}, attempts=2, backoff={"type": "mine"})
    times: dict[str, list[float]] = {}
    w = Worker("custom-settings", failing(times, fail_first=1),
               {"connection": redis_url, "prefix": prefix, "drainDelay": 0.2,
                "settings": {"backoffStrategy": lambda n, kind, err, job: 60}})
    try:
        ev = Events(w)
        await ev.wait("completed")
        assert gaps(times[job.id])[0] >= 55
    finally:
        await close(w)


async def test_awaitable_custom_backoff_strategy(env: Env) -> None:
    """BullMQ awaits a backoffStrategy that returns a promise (7.5); the Python equivalent is a
    strategy returning an awaitable (``async def`` or a future)."""
    q = env.queue("custom-async")
    job = await q.add("j", {}, attempts=2, backoff={"type": "later"})

    def strategy(attempts_made: int, kind: str, err: BaseException, job: Job) -> Any:
        # a resolved future (an unawaited coroutine would also raise a warning)
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(50)
        return fut

    times: dict[str, list[float]] = {}
    w = env.worker("custom-async", failing(times, fail_first=1), backoff_strategy=strategy)
    ev = Events(w)
    await until(lambda: ev.of("completed") or ev.of("failed"), 5, "the first attempt to end")

    async def ended() -> bool:
        return await q.get_job_state(job.id) in ("completed", "failed")

    await until(ended, 5, "the job to end")
    final = await q.get_job(job.id)
    assert final.returnvalue == {"ok": 2}, final.failed_reason
    assert gaps(times[job.id])[0] >= 45


async def test_unknown_backoff_type_without_strategy_fails_with_reason(env: Env) -> None:
    q = env.queue("unknown-backoff")
    job = await q.add("j", {}, attempts=3, backoff={"type": "mystery", "delay": 10})
    times: dict[str, list[float]] = {}
    w = env.worker("unknown-backoff", failing(times))
    ev = Events(w)
    await ev.wait("failed")
    await wait_state(q, job.id, "failed")
    assert len(times[job.id]) == 1
    assert "mystery" in (await q.get_job(job.id)).failed_reason


async def test_backoff_strategy_that_raises_fails_the_job(env: Env) -> None:
    q = env.queue("raising-backoff")
    job = await q.add("j", {}, attempts=3, backoff={"type": "x"})

    def strategy(*_: Any) -> int:
        raise KeyError("no such thing")

    w = env.worker("raising-backoff", failing({}), backoff_strategy=strategy)
    ev = Events(w)
    await ev.wait("failed")
    await wait_state(q, job.id, "failed")
    reason = (await q.get_job(job.id)).failed_reason
    # the processor's error first, as the 'failed' event has it, then why it was not retried
    assert reason.startswith("boom 1 (not retried: the backoff strategy raised") and "no such thing" in reason


async def test_custom_backoff_type_without_a_strategy_fails_the_job_saying_why(env: Env) -> None:
    q = env.queue("no-strategy")
    job = await q.add("j", {}, attempts=3, backoff={"type": "lin"})
    w = env.worker("no-strategy", failing({}))
    ev = Events(w)
    await ev.wait("failed")
    await wait_state(q, job.id, "failed")
    final = await q.get_job(job.id)
    assert final.attempts_made == 1
    assert final.failed_reason == "boom 1 (not retried: unknown backoff strategy 'lin': give the Worker a backoff_strategy)"


async def test_retry_without_backoff_is_immediate(env: Env, client: Any) -> None:
    q = env.queue("immediate")
    job = await q.add("j", {}, attempts=3)
    times: dict[str, list[float]] = {}
    w = env.worker("immediate", failing(times, fail_first=2))
    ev = Events(w)
    await ev.wait("completed")
    final = await q.get_job(job.id)
    assert final.attempts_made == 3 and final.returnvalue == {"ok": 3}
    # the failure of attempt 2 is still recorded (7.5: fields written on non-final failures)
    assert final.failed_reason == "boom 2" and len(final.stacktrace) == 2
    stream = await stream_events(client, env.key("immediate", "events"))
    retried = [e for e in stream
               if e["event"] == "waiting" and e["jobId"] == job.id and e.get("prev") == "active"]
    assert len(retried) == 2
    assert not [e for e in stream if e["event"] == "delayed"]


async def test_unrecoverable_error_fails_at_once(env: Env, client: Any) -> None:
    q = env.queue("unrec")
    job = await q.add("j", {}, attempts=5, backoff=10)
    calls = 0

    async def processor(job: Job) -> None:
        nonlocal calls
        calls += 1
        raise UnrecoverableError("cannot go on")

    w = env.worker("unrec", processor)
    ev = Events(w)
    (fjob, err, *_), = await ev.wait("failed")
    await wait_state(q, job.id, "failed")
    assert calls == 1 and isinstance(err, UnrecoverableError)
    final = await q.get_job(job.id)
    assert final.failed_reason == "cannot go on" and final.attempts_made == 1
    stream = await stream_events(client, env.key("unrec", "events"))
    assert not [e for e in stream if e["event"] == "retries-exhausted"]  # golden f, job 3


@pytest.mark.parametrize("plain", [False, True])
async def test_a_discarded_job_is_not_retried(env: Env, plain: bool) -> None:
    """The PyPI port's flag: a processor sets job.discarded, and its failing attempt is the
    last, whatever attempts remain (a plain function's job is a blocking view: the flag goes
    through to the job)."""
    q = env.queue("discard")
    job = await q.add("j", {}, attempts=5, backoff=10)
    kept = await q.add("k", {}, attempts=2)
    calls: list[str] = []

    def plain_processor(job: Any) -> None:
        calls.append(job.name)
        if job.name == "j":
            job.discarded = True
        raise ValueError("no luck")

    async def processor(job: Job) -> None:
        plain_processor(job)

    env.worker("discard", plain_processor if plain else processor)
    await wait_state(q, job.id, "failed")
    await wait_state(q, kept.id, "failed")
    final = await q.get_job(job.id)
    assert final.failed_reason == "no luck" and final.attempts_made == 1
    assert calls.count("j") == 1 and calls.count("k") == 2


async def test_text_with_lone_surrogates_in_errors_logs_and_results(env: Env, client: Any) -> None:
    """Text cut inside an emoji (as Node's data may hold) in an error's message, a log line,
    progress and the result: stored as ioredis / JSON.stringify store it (the failing job was
    left active, silently: its stacktrace and reason could not be encoded)."""
    q = env.queue("cut")
    failing = await q.add("fail", {"s": "ok \ud83d"})
    passing = await q.add("pass", {"s": "ok \ud83d"})

    async def processor(job: Job) -> Any:
        await job.log("line " + job.data["s"])
        await job.update_progress({"at": job.data["s"]})
        if job.name == "fail":
            raise ValueError("bad input: " + job.data["s"])
        return job.data["s"]

    ev = Events(env.worker("cut", processor))
    await ev.wait("failed")
    await ev.wait("completed")
    assert not ev.of("error")
    failed = await q.get_job(failing.id)
    assert await failed.get_state() == "failed"
    assert failed.failed_reason == "bad input: ok \ufffd"  # as ioredis writes a lone surrogate
    assert "bad input: ok \ud83d" in failed.stacktrace[0]  # JSON: escaped, as JSON.stringify
    assert failed.progress == {"at": "ok \ud83d"}
    assert (await q.get_job_logs(failing.id))["logs"] == ["line ok \ufffd"]
    assert (await q.get_job(passing.id)).returnvalue == "ok \ud83d"
    assert await client.hget(env.key("cut", failing.id), "failedReason") == "bad input: ok \ufffd".encode()


@pytest.mark.parametrize("value", [{1, 2}, object(), {"when": 1j}])
async def test_non_json_return_value_fails_with_clear_reason(env: Env, value: Any) -> None:
    q = env.queue("nonjson")
    bad = await q.add("bad", {}, attempts=3)
    good = await q.add("good", {})

    async def processor(job: Job) -> Any:
        return value if job.name == "bad" else "fine"

    w = env.worker("nonjson", processor)
    ev = Events(w)
    await ev.wait("failed")
    await ev.wait("completed")
    await wait_state(q, bad.id, "failed")
    stored = await q.get_job(bad.id)
    assert "JSON" in stored.failed_reason and "serial" in stored.failed_reason, stored.failed_reason
    assert stored.attempts_made == 1  # not retried
    assert (await q.get_job(good.id)).returnvalue == "fine"


async def test_none_and_scalar_return_values(env: Env, client: Any) -> None:
    q = env.queue("scalars")
    values = [None, "text", 3, 2.5, True, [1, "a"], {"nested": {"x": [None]}}]
    jobs = await q.add_bulk([{"name": "j", "data": {"i": i}} for i in range(len(values))])

    async def processor(job: Job) -> Any:
        return values[job.data["i"]]

    w = env.worker("scalars", processor)
    ev = Events(w)
    await ev.wait("completed", len(values))
    for job, value in zip(jobs, values):
        assert (await q.get_job(job.id)).returnvalue == value
    assert await client.hget(env.key("scalars", jobs[0].id), "returnvalue") == b"null"


async def test_max_started_attempts(env: Env) -> None:
    q = env.queue("msa")
    job = await q.add("j", {}, attempts=5)
    times: dict[str, list[float]] = {}
    w = env.worker("msa", failing(times), max_started_attempts=2)
    ev = Events(w)
    await ev.wait("failed", 2)
    await wait_state(q, job.id, "failed")
    # retried once; at the second start maxStartedAttempts <= ats stops the retries (7.5)
    assert len(times[job.id]) == 2
    final = await q.get_job(job.id)
    assert final.attempts_started == 2 and final.failed_reason == "boom 2"


async def test_job_started_too_often_fails_without_running(env: Env, client: Any) -> None:
    q = env.queue("msa2")
    job = await q.add("j", {}, attempts=5)
    ok = await q.add("ok", {})
    await client.hset(env.key("msa2", job.id), "ats", 3)  # started 3 times already (stalls)
    calls: list[str] = []

    async def processor(job: Job) -> str:
        calls.append(job.id)
        return "ran"

    w = env.worker("msa2", processor, max_started_attempts=3)
    ev = Events(w)
    (fjob, err, *_), = await ev.wait("failed")
    await ev.wait("completed")
    assert calls == [ok.id]
    assert isinstance(err, UnrecoverableError)
    assert {a[0].id for a in ev.of("active")} == {job.id, ok.id}  # both announced, as BullMQ
    final = await q.get_job(job.id)
    assert final.failed_reason == "job started more than allowable limit"
    assert await state_of(q, job.id) == "failed"


async def test_locks_are_renewed_while_close_waits_for_running_jobs(env: Env) -> None:
    """A graceful close() waits for the running jobs and keeps their locks alive meanwhile (it
    stopped renewing them, so another worker's stalled check took the job and it ran twice)."""
    q = env.queue("close-lock")
    job = await q.add("j", {})
    runs: list[str] = []
    started = asyncio.Event()

    async def slow(job: Job) -> str:
        runs.append(job.id)
        started.set()
        await asyncio.sleep(2.5)
        return "done"

    w = env.worker("close-lock", slow, lock_duration=1000)
    ev = Events(w)
    checker = env.worker("close-lock", None, autorun=False, stalled_interval=200)
    stalled: list[str] = []
    checker.on("stalled", lambda job_id, prev: stalled.append(job_id))
    await checker.start_stalled_check_timer()
    await asyncio.wait_for(started.wait(), 5)
    await w.close()
    assert ev.of("error") == [] and stalled == [] and runs == [job.id]
    assert [a[0].id for a in ev.of("completed")] == [job.id]
    assert (await q.get_job(job.id)).returnvalue == "done"


async def test_a_plain_processor_calls_its_jobs_methods_blocking(env: Env) -> None:
    """In the pool's thread a job's methods block, run on the worker's loop: before, they
    returned coroutines that never ran (update_progress did nothing)."""
    fp = env.flow()
    node = await fp.add({"name": "p", "queue_name": "plain-p", "children": [leaf("c", "plain-c", 4)]})

    def process(job: Any) -> Any:
        job.update_progress(42)
        job.log("in a thread")
        if job.name == "p":
            return job.get_children_values()
        assert job.queue.get_job(job.id).data == job.data  # the job's queue blocks too
        return threading.current_thread().name

    wc = env.worker("plain-c", process)
    wp = env.worker("plain-p", process)
    evp = Events(wp)
    (pjob, result, *_), = await evp.wait("completed")
    child = node["children"][0].job
    assert result == {child.key: "bullfast-worker_0"}
    for job in (node.job, child):
        stored = await job.queue.get_job(job.id)
        assert stored.progress == 42
        assert (await job.queue.get_job_logs(job.id))["logs"] == ["in a thread"]
    await close(wc)


def count_stalled_checks(worker: Worker) -> list[float]:
    """Record when each of the worker's stalled checks starts."""
    starts: list[float] = []
    check = worker.check_stalled

    async def counted() -> list[str]:
        starts.append(time.monotonic())
        return await check()

    worker.check_stalled = counted  # type: ignore[method-assign]
    return starts


async def test_start_stalled_check_timer_runs_one_loop_and_honours_skip(env: Env, client: Any) -> None:
    """As BullMQ: a second start replaces the loop (three starts ran three loops side by side),
    and skip_stalled_check means no check at all (the timer checked anyway)."""
    w = env.worker("sct", None, autorun=False, stalled_interval=400)
    starts = count_stalled_checks(w)
    for _ in range(3):
        await w.start_stalled_check_timer()
    await asyncio.sleep(1.0)
    assert 2 <= len(starts) <= 4, starts  # checks at about 0, 0.4 and 0.8 s: one loop
    skipping = env.worker("sct-skip", None, autorun=False, stalled_interval=100, skip_stalled_check=True)
    skipped = count_stalled_checks(skipping)
    await skipping.start_stalled_check_timer()
    await asyncio.sleep(0.4)
    assert skipped == [] and await client.exists(env.key("sct-skip", "stalled-check")) == 0


async def test_pause_stops_the_stalled_check_and_resume_restarts_it(env: Env) -> None:
    """BullMQ's pause() stops the worker's stalled checker, resume() starts it again."""
    w = env.worker("sct-pause", ok_processor, stalled_interval=100)
    starts = count_stalled_checks(w)
    await until(lambda: len(starts) >= 1, what="a stalled check")
    await w.pause()
    await asyncio.sleep(0.05)  # a check that had started may end
    paused_at = len(starts)
    await asyncio.sleep(0.5)
    assert len(starts) == paused_at
    await w.resume()
    await until(lambda: len(starts) >= paused_at + 2, what="stalled checks after resume")


async def test_max_started_attempts_0_is_no_limit(env: Env, client: Any) -> None:
    """BullMQ tests ``maxStartedAttempts &&``: 0 sets no limit (it failed every job here)."""
    q = env.queue("msa0")
    job = await q.add("j", {})
    await client.hset(env.key("msa0", job.id), "ats", 3)
    w = env.worker("msa0", lambda job: "ran", max_started_attempts=0)
    ev = Events(w)
    await ev.wait("completed")
    assert (await q.get_job(job.id)).returnvalue == "ran"
    for bad in (-1, 1.5, "2", True):
        with pytest.raises(InvalidOptionError):
            Worker("msa0", None, connection=env.url, prefix=env.prefix, autorun=False, max_started_attempts=bad)


async def test_move_to_wait_and_waiting_error(env: Env, client: Any) -> None:
    """job.move_to_wait puts a running job back at the end of wait without counting an
    attempt (BullMQ's moveToWait + WaitingError)."""
    q = env.queue("mtw")
    job = await q.add("j", {"step": 0}, attempts=1)
    answers: list[int] = []

    async def processor(job: Job, token: str) -> Any:
        if job.data["step"] == 0:
            await job.update_data({"step": 1})
            answers.append(await job.move_to_wait(token))
            raise WaitingError()
        return "again"

    w = env.worker("mtw", processor)
    ev = Events(w)
    await ev.wait("completed")
    assert answers == [0] and ev.of("failed") == []
    stored = await q.get_job(job.id)
    assert stored.returnvalue == "again" and stored.attempts_made == 1 and stored.attempts_started == 2
    stream = await stream_events(client, env.key("mtw", "events"))
    assert {"event": "waiting", "jobId": job.id, "prev": "active"} in stream
    with pytest.raises(LockMissingError):  # not active any more
        await stored.move_to_wait("some-token")


# ------------------------------------------------------------------------------------------
# stack traces and failure reasons
# ------------------------------------------------------------------------------------------


def raising_here(job: Job) -> None:
    raise LookupError(f"lookup failed for {job.data['key']}")


@pytest.mark.parametrize("limit, expected_len", [(None, 3), (2, 2), (1, 1), (0, 0)])
async def test_stacktrace_and_stack_trace_limit(env: Env, limit: int | None, expected_len: int) -> None:
    q = env.queue("stack")
    opts: dict[str, Any] = {"attempts": 3}
    if limit is not None:
        opts["stacktrace_limit"] = limit
    job = await q.add("j", {"key": "abc"}, opts)

    async def processor(job: Job) -> None:
        raising_here(job)

    w = env.worker("stack", processor)
    ev = Events(w)
    await ev.wait("failed", 3)
    await wait_state(q, job.id, "failed")
    final = await q.get_job(job.id)
    assert final.failed_reason == "lookup failed for abc"
    assert isinstance(final.stacktrace, list) and len(final.stacktrace) == expected_len
    for entry in final.stacktrace:
        assert isinstance(entry, str)
        assert "Traceback" in entry and "raising_here" in entry
        assert "LookupError: lookup failed for abc" in entry


async def test_stacktrace_limit_camel_case(env: Env) -> None:
    q = env.queue("stack2")
    job = await q.add("j", {"key": "k"}, {"attempts": 2, "stackTraceLimit": 1})

    async def processor(job: Job) -> None:
        raising_here(job)

    w = env.worker("stack2", processor)
    ev = Events(w)
    await ev.wait("failed", 2)
    await wait_state(q, job.id, "failed")
    assert len((await q.get_job(job.id)).stacktrace) == 1


async def test_failed_reason_is_the_raw_message(env: Env, client: Any) -> None:
    q = env.queue("reason")
    messages = ['quoted "text" and \\ backslash', "multi\nline", "ünïcødé ✓", ""]
    jobs = await q.add_bulk([{"name": "j", "data": {"i": i}} for i in range(len(messages))])

    async def processor(job: Job) -> None:
        raise RuntimeError(messages[job.data["i"]])

    w = env.worker("reason", processor)
    ev = Events(w)
    await ev.wait("failed", len(messages))
    for job, message in zip(jobs[:3], messages[:3]):
        assert await client.hget(env.key("reason", job.id), "failedReason") == message.encode()
    # an empty message still leaves a reason
    assert (await q.get_job(jobs[3].id)).failed_reason


# ------------------------------------------------------------------------------------------
# removeOnComplete / removeOnFail (7.7)
# ------------------------------------------------------------------------------------------


async def ok_processor(job: Job) -> Any:
    return {"id": job.id}


async def fail_processor(job: Job) -> Any:
    raise RuntimeError(f"fail {job.id}")


async def test_remove_on_complete_true(env: Env, client: Any) -> None:
    q = env.queue("roc")
    removed = await q.add("gone", {}, remove_on_complete=True)
    kept = await q.add("kept", {})
    w = env.worker("roc", ok_processor)
    ev = Events(w)
    await ev.wait("completed", 2)
    assert await client.exists(env.key("roc", removed.id)) == 0
    assert await q.get_job(removed.id) is None
    assert [j.id for j in await q.get_completed()] == [kept.id]
    # the completed event is still emitted for the deleted job
    stream = await stream_events(client, env.key("roc", "events"))
    value = json.dumps({"id": removed.id}).replace(" ", "")
    assert {"event": "completed", "jobId": removed.id, "returnvalue": value, "prev": "active"} in stream
    assert [args[0].id for args in ev.of("completed")] == [removed.id, kept.id]


async def test_remove_on_complete_count_keeps_the_newest(env: Env, client: Any) -> None:
    q = env.queue("roc-count")
    jobs = await q.add_bulk([{"name": "j", "data": {}, "opts": {"remove_on_complete": 2}} for _ in range(6)])
    w = env.worker("roc-count", ok_processor)
    ev = Events(w)
    await ev.wait("completed", 6)
    completed = await client.zrange(env.key("roc-count", "completed"), 0, -1)
    assert sorted(c.decode() for c in completed) == sorted(j.id for j in jobs[-2:])
    for job in jobs[:-2]:
        assert await client.exists(env.key("roc-count", job.id)) == 0


async def test_remove_on_complete_count_and_age(env: Env, client: Any) -> None:
    q = env.queue("roc-age")
    old = await q.add_bulk([{"name": "old", "data": {}} for _ in range(3)])
    w = env.worker("roc-age", ok_processor)
    ev = Events(w)
    await ev.wait("completed", 3)
    # make two of them look finished an hour ago
    hour_ago = now_ms() - 3_600_000
    for job in old[:2]:
        await client.zadd(env.key("roc-age", "completed"), {job.id: hour_ago})
    new = await q.add("new", {}, remove_on_complete={"age": 60, "count": 10})
    await ev.wait("completed", 4)
    left = sorted(c.decode() for c in await client.zrange(env.key("roc-age", "completed"), 0, -1))
    assert left == sorted([old[2].id, new.id])
    for job in old[:2]:
        assert await client.exists(env.key("roc-age", job.id)) == 0
    # count trimming applies on top of age
    last = await q.add("last", {}, remove_on_complete={"age": 60, "count": 1})
    await ev.wait("completed", 5)
    assert [c.decode() for c in await client.zrange(env.key("roc-age", "completed"), 0, -1)] == [last.id]


async def test_remove_on_complete_camel_case_and_zero(env: Env, client: Any) -> None:
    q = env.queue("roc-camel")
    a = await q.add("a", {}, {"removeOnComplete": 0})
    b = await q.add("b", {}, {"removeOnComplete": {"count": 0}})
    w = env.worker("roc-camel", ok_processor)
    ev = Events(w)
    await ev.wait("completed", 2)
    assert await client.exists(env.key("roc-camel", a.id), env.key("roc-camel", b.id)) == 0
    assert await client.zcard(env.key("roc-camel", "completed")) == 0


async def test_remove_on_fail_true_and_count(env: Env, client: Any) -> None:
    q = env.queue("rof")
    gone = await q.add("gone", {}, remove_on_fail=True, attempts=2)
    counted = await q.add_bulk([{"name": "c", "data": {}, "opts": {"remove_on_fail": 1}} for _ in range(3)])
    w = env.worker("rof", fail_processor)
    ev = Events(w)
    await ev.wait("failed", 5)
    # removed only after the final attempt
    assert await client.exists(env.key("rof", gone.id)) == 0
    assert [c.decode() for c in await client.zrange(env.key("rof", "failed"), 0, -1)] == [counted[-1].id]
    stream = await stream_events(client, env.key("rof", "events"))
    assert any(e["event"] == "failed" and e["jobId"] == gone.id for e in stream)


async def test_remove_on_fail_age(env: Env, client: Any) -> None:
    q = env.queue("rof-age")
    first = await q.add("a", {})
    w = env.worker("rof-age", fail_processor)
    ev = Events(w)
    await ev.wait("failed")
    await client.zadd(env.key("rof-age", "failed"), {first.id: now_ms() - 120_000})
    second = await q.add("b", {}, remove_on_fail={"age": 60})
    await ev.wait("failed", 2)
    assert [c.decode() for c in await client.zrange(env.key("rof-age", "failed"), 0, -1)] == [second.id]
    assert await client.exists(env.key("rof-age", first.id)) == 0


async def test_age_trimming_with_a_limit_removes_the_newest_expired_jobs_first(env: Env, client: Any) -> None:
    """As BullMQ: of the jobs older than `age`, the `limit` most recent go (the oldest wait
    for later trims)."""
    q = env.queue("roc-limit")
    old = await q.add_bulk([{"name": "old", "data": {}} for _ in range(4)])
    w = env.worker("roc-limit", ok_processor)
    ev = Events(w)
    await ev.wait("completed", 4)
    hour_ago = now_ms() - 3_600_000
    for k, job in enumerate(old):
        await client.zadd(env.key("roc-limit", "completed"), {job.id: hour_ago + k})
    new = await q.add("new", {}, remove_on_complete={"age": 60, "limit": 2})
    await ev.wait("completed", 5)
    left = sorted(c.decode() for c in await client.zrange(env.key("roc-limit", "completed"), 0, -1))
    assert left == sorted([old[0].id, old[1].id, new.id])
    assert await client.exists(env.key("roc-limit", old[2].id), env.key("roc-limit", old[3].id)) == 0
    assert await client.exists(env.key("roc-limit", old[0].id)) == 1


async def test_age_zero_removes_the_job_just_finished(env: Env, client: Any) -> None:
    q = env.queue("roc-age0")
    job = await q.add("now", {}, remove_on_complete={"age": 0})
    w = env.worker("roc-age0", ok_processor)
    ev = Events(w)
    await ev.wait("completed")
    assert await client.zcard(env.key("roc-age0", "completed")) == 0
    assert await client.exists(env.key("roc-age0", job.id)) == 0
    stream = await stream_events(client, env.key("roc-age0", "events"))
    assert any(e["event"] == "completed" and e["jobId"] == job.id for e in stream)


async def test_count_trimming_does_not_favour_the_job_just_finished(env: Env, client: Any) -> None:
    """As BullMQ: count trimming keeps the `count` highest scores of the set, whichever job
    just finished (here an older entry carries a later score, as after a clock step back)."""
    q = env.queue("roc-rank")
    await q.add("a", {}, job_id="kept")
    w = env.worker("roc-rank", ok_processor)
    ev = Events(w)
    await ev.wait("completed")
    done_at = await client.zscore(env.key("roc-rank", "completed"), "kept")
    await client.zadd(env.key("roc-rank", "completed"), {"kept": done_at + 3_600_000})
    job = await q.add("z", {}, job_id="trimmed", remove_on_complete=1)
    await ev.wait("completed", 2)
    assert [c.decode() for c in await client.zrange(env.key("roc-rank", "completed"), 0, -1)] == ["kept"]
    assert await client.exists(env.key("roc-rank", job.id)) == 0
    assert await client.exists(env.key("roc-rank", "kept")) == 1


async def test_worker_level_retention_fallbacks(env: Env, client: Any) -> None:
    q = env.queue("fallback")
    plain = await q.add("ok", {})
    keep = await q.add("ok", {}, remove_on_complete=False)
    count = await q.add_bulk([{"name": "ok", "data": {}, "opts": {"remove_on_complete": 5}}])
    bad_plain = await q.add("bad", {})
    bad_keep = await q.add("bad", {}, remove_on_fail=False)

    async def processor(job: Job) -> Any:
        if job.name == "bad":
            raise RuntimeError("bad")
        return 1

    w = env.worker("fallback", processor, remove_on_complete=True, remove_on_fail=True)
    ev = Events(w)
    await ev.wait("completed", 3)
    await ev.wait("failed", 2)
    # no option on the job: the worker's applies; an explicit job option wins (7.7)
    assert await client.exists(env.key("fallback", plain.id)) == 0
    assert await client.exists(env.key("fallback", bad_plain.id)) == 0
    assert await state_of(q, keep.id) == "completed"
    assert await state_of(q, count[0].id) == "completed"
    assert await state_of(q, bad_keep.id) == "failed"


async def test_worker_level_retention_count_from_bullmq_options(env: Env, redis_url: str, prefix: str,
                                                               client: Any) -> None:
    q = env.queue("fallback2")
    jobs = await q.add_bulk([{"name": "j", "data": {}} for _ in range(4)])
    w = Worker("fallback2", ok_processor, {"connection": redis_url, "prefix": prefix, "drainDelay": 0.2,
                                           "removeOnComplete": {"count": 2}, "removeOnFail": {"count": 1}})
    try:
        ev = Events(w)
        await ev.wait("completed", 4)
    finally:
        await close(w)
    left = sorted(c.decode() for c in await client.zrange(env.key("fallback2", "completed"), 0, -1))
    assert left == sorted(j.id for j in jobs[2:])


async def test_failed_child_without_policy_removed_on_fail_releases_parent(env: Env, client: Any) -> None:
    """7.4 step 9 / 8.3: a default-policy child deleted at once by removeOnFail leaves the
    parent's dependencies, and the parent runs with no trace of the failure."""
    fp = env.flow()
    node = await fp.add({
        "name": "parent", "queue_name": "rel-p", "children": [
            {"name": "ok", "queue_name": "rel-c", "data": {}, "opts": NO_POLICY},
            {"name": "bad", "queue_name": "rel-c", "data": {}, "opts": {**NO_POLICY, "remove_on_fail": True}},
        ],
    })
    parent_seen: dict[str, Any] = {}

    async def child(job: Job) -> Any:
        if job.name == "bad":
            raise RuntimeError("child broke")
        return "ok-value"

    async def parent(job: Job) -> Any:
        parent_seen["deps"] = await job.get_dependencies()
        parent_seen["counts"] = await job.get_dependencies_count()
        return "parent-done"

    env.worker("rel-c", child)
    wp = env.worker("rel-p", parent)
    evp = Events(wp)
    await evp.wait("completed")
    ok, bad = node.children
    assert await client.exists(env.key("rel-c", bad.job.id)) == 0
    assert parent_seen["deps"] == {
        "processed": {ok.job.key: "ok-value"}, "unprocessed": [], "failed": [], "ignored": {},
    }
    assert parent_seen["counts"] == {"processed": 1, "unprocessed": 0, "ignored": 0, "failed": 0}
    stored = await node.job.queue.get_job(node.job.id)
    assert stored.deferred_failure is None and stored.returnvalue == "parent-done"
    stream = await stream_events(client, env.key("rel-p", "events"))
    assert {"event": "waiting", "jobId": node.job.id, "prev": "waiting-children"} in stream


async def test_failed_child_without_policy_trimmed_by_count_releases_parent(env: Env, client: Any) -> None:
    """7.7: a failed default-policy child trimmed out of `failed` by another job's removeOnFail
    count is unlinked from its parent, which is then released."""
    fp = env.flow()
    node = await fp.add({
        "name": "parent", "queue_name": "trim-p", "children": [
            {"name": "bad", "queue_name": "trim-c", "data": {}, "opts": NO_POLICY},
        ],
    })
    wc = env.worker("trim-c", fail_processor)
    evc = Events(wc)
    await evc.wait("failed")
    await wait_state(node.job.queue, node.job.id, "waiting-children")
    qc = env.queue("trim-c")
    await qc.add("other", {}, remove_on_fail=1)
    await evc.wait("failed", 2)
    await wait_state(node.job.queue, node.job.id, "waiting")
    assert await client.exists(env.key("trim-c", node.children[0].job.id)) == 0


# ------------------------------------------------------------------------------------------
# order: priorities, delays, lifo
# ------------------------------------------------------------------------------------------


def recorder(order: list[str], times: dict[str, float] | None = None) -> Any:
    async def processor(job: Job) -> str:
        order.append(job.name)
        if times is not None:
            times[job.name] = now_ms()
        return job.name

    return processor


async def test_priorities_are_processed_in_order(env: Env) -> None:
    q = env.queue("prio")
    await q.add("p5", {}, priority=5)
    await q.add("p1-a", {}, priority=1)
    await q.add("plain-1", {})
    await q.add("p3", {}, priority=3)
    await q.add("p1-b", {}, priority=1)
    await q.add("p10", {}, priority=10)
    await q.add("plain-2", {})
    order: list[str] = []
    w = env.worker("prio", recorder(order))
    ev = Events(w)
    await ev.wait("completed", 7)
    # waiting (FIFO) jobs first, then by priority, FIFO within a priority (7.2 steps 5-6)
    assert order == ["plain-1", "plain-2", "p1-a", "p1-b", "p3", "p5", "p10"]


async def test_priority_with_batched_fetch_and_concurrency(env: Env, client: Any) -> None:
    q = env.queue("prio-batch")
    jobs = await q.add_bulk([{"name": f"p{p}-{i}", "data": {}, "opts": {"priority": p}}
                             for i in range(3) for p in (9, 2, 5)])
    prio_of = {j.id: j.priority for j in jobs}
    w = env.worker("prio-batch", ok_processor, concurrency=3)
    ev = Events(w)
    await ev.wait("completed", 9)
    # the order in which the (batched) moves to active took them, as recorded in the stream;
    # processors of one batch may start in any order
    stream = await stream_events(client, env.key("prio-batch", "events"))
    taken = [prio_of[e["jobId"]] for e in stream if e["event"] == "active"]
    assert taken == sorted(taken) and len(taken) == 9


async def test_delayed_jobs_run_in_due_order_and_not_early(env: Env) -> None:
    q = env.queue("delay")
    added = now_ms()
    await q.add("d300", {}, delay=300)
    await q.add("d100", {}, delay=100)
    await q.add("d200", {}, delay=200)
    await q.add("now", {})
    order: list[str] = []
    times: dict[str, float] = {}
    w = env.worker("delay", recorder(order, times))
    ev = Events(w)
    await ev.wait("completed", 4)
    assert order == ["now", "d100", "d200", "d300"]
    for name, delay in (("d100", 100), ("d200", 200), ("d300", 300)):
        assert times[name] - added >= delay - 2, (name, times[name] - added)
        assert times[name] - added < delay + 600, (name, times[name] - added)
    for job in await q.get_completed():
        if job.name != "now":
            assert job.delay == 0  # reset when promoted (2.1)


async def test_delayed_job_added_while_worker_idle_wakes_it(env: Env) -> None:
    q = env.queue("delay-idle")
    order: list[str] = []
    times: dict[str, float] = {}
    w = env.worker("delay-idle", recorder(order, times), drain_delay=5)
    ev = Events(w)
    await ev.wait("drained")
    added = now_ms()
    await q.add("later", {}, delay=150)
    await ev.wait("completed")
    assert 148 <= times["later"] - added < 1000


async def test_delayed_prioritized_job_goes_by_priority_when_due(env: Env) -> None:
    q = env.queue("delay-prio")
    added = now_ms()
    await q.add("d-p1", {}, delay=100, priority=1)
    await q.add("p5", {}, priority=5)
    await q.add("p7", {}, priority=7)
    order: list[str] = []
    gate = asyncio.Event()

    async def processor(job: Job) -> str:
        order.append(job.name)
        if job.name == "p5":
            await gate.wait()
        return job.name

    w = env.worker("delay-prio", processor)
    ev = Events(w)
    await ev.wait("active")
    # let the delayed job become due while p5 runs: it then beats p7 thanks to its priority
    await until(lambda: now_ms() - added > 110, 2, "the delayed job to be due")
    gate.set()
    await ev.wait("completed", 3)
    assert order == ["p5", "d-p1", "p7"]


async def test_lifo_job_runs_first(env: Env) -> None:
    q = env.queue("lifo")
    await q.add("a", {})
    await q.add("b", {})
    await q.add("c", {}, lifo=True)
    await q.add("d", {})
    await q.add("e", {}, lifo=True)
    order: list[str] = []
    w = env.worker("lifo", recorder(order))
    ev = Events(w)
    await ev.wait("completed", 5)
    assert order == ["e", "c", "a", "b", "d"]


async def test_lifo_retry_goes_to_the_front(env: Env) -> None:
    q = env.queue("lifo-retry")
    await q.add("first", {}, attempts=2, lifo=True)
    await q.add_bulk([{"name": f"other-{i}", "data": {}} for i in range(3)])
    order: list[str] = []

    async def processor(job: Job) -> str:
        order.append(job.name)
        if job.name == "first" and job.attempts_made == 0:
            raise RuntimeError("again")
        return job.name

    w = env.worker("lifo-retry", processor)
    ev = Events(w)
    await ev.wait("completed", 4)
    # lifo: the immediate retry is RPUSHed (7.6), so it runs before the older waiting jobs
    assert order[:2] == ["first", "first"]


# ------------------------------------------------------------------------------------------
# flows end to end (8.2 - 8.5)
# ------------------------------------------------------------------------------------------


async def leaf_or_parent(job: Job) -> Any:
    """Leaves double data.v; parents report what they see of their children."""
    values = await job.get_children_values()
    if not values and not (await job.get_dependencies_count())["ignored"]:
        return {"v": job.data["v"] * 2, "name": job.name}
    return {
        "name": job.name,
        "sum": sum(v["v"] if "v" in v else v["sum"] for v in values.values()),
        "values": values,
        "deps": await job.get_dependencies(),
        "counts": await job.get_dependencies_count(),
        "ignored": await job.get_ignored_children_failures(),
    }


def leaf(name: str, queue: str, v: int, **opts: Any) -> dict[str, Any]:
    return {"name": name, "queue_name": queue, "data": {"v": v}, "opts": opts}


async def test_nested_flow_three_levels_across_queues(env: Env) -> None:
    fp = env.flow()
    node = await fp.add({
        "name": "root", "queue_name": "fa", "data": {"v": 0}, "children": [
            {"name": "mid-1", "queue_name": "fb", "data": {"v": 0}, "children": [
                leaf("leaf-1a", "fc", 1), leaf("leaf-1b", "fc", 2), leaf("leaf-1c", "fa", 3),
            ]},
            {"name": "mid-2", "queue_name": "fb", "data": {"v": 0}, "children": [
                leaf("leaf-2a", "fc", 10),
            ]},
            leaf("leaf-3", "fc", 100),
        ],
    })
    calls: Counter[str] = Counter()
    seq = iter(range(1000))
    started: dict[str, int] = {}
    ended: dict[str, int] = {}

    async def processor(job: Job) -> Any:
        calls[job.key] += 1
        started[job.key] = next(seq)
        result = await leaf_or_parent(job)
        ended[job.key] = next(seq)
        return result

    workers = [env.worker(q, processor, concurrency=2) for q in ("fa", "fb", "fc")]
    evs = [Events(w) for w in workers]
    await until(lambda: any(a[0].id == node.job.id for a in evs[0].of("completed")), 10, "the root")
    assert set(calls.values()) == {1} and len(calls) == 8

    async def check(n: Any) -> Any:
        job = await n.job.queue.get_job(n.job.id)
        assert await n.job.get_state() == "completed"
        if not n.children:
            assert job.returnvalue == {"v": n.job.data["v"] * 2, "name": n.job.name}
            return job
        kids = [await check(c) for c in n.children]
        expected = {c.job.key: k.returnvalue for c, k in zip(n.children, kids)}
        # the parent saw exactly its children's results, keyed by full child keys (8.5)
        assert job.returnvalue["values"] == expected
        assert await n.job.get_children_values() == expected
        assert job.returnvalue["counts"] == {"processed": len(kids), "unprocessed": 0, "ignored": 0,
                                             "failed": 0}
        assert job.returnvalue["deps"] == {"processed": expected, "unprocessed": [], "failed": [],
                                           "ignored": {}}
        # (the timestamps are client clocks of different workers: compare the order instead)
        for c in n.children:
            assert ended[c.job.key] < started[n.job.key]
        return job

    root = await check(node)
    assert root.returnvalue["sum"] == 2 * (1 + 2 + 3 + 10 + 100)
    # the parent ran exactly once, after everything (no early release)
    assert root.attempts_started == 1


async def test_parent_waits_for_slow_child(env: Env) -> None:
    fp = env.flow()
    node = await fp.add({"name": "p", "queue_name": "slow-p", "children": [
        leaf("fast", "slow-c", 1), leaf("slow", "slow-c", 2)]})
    gate = asyncio.Event()

    async def child(job: Job) -> Any:
        if job.name == "slow":
            await gate.wait()
        return {"v": job.data["v"]}

    wc = env.worker("slow-c", child, concurrency=2)
    wp = env.worker("slow-p", leaf_or_parent)
    evc, evp = Events(wc), Events(wp)
    await evc.wait("completed")
    await wait_state(node.job.queue, node.job.id, "waiting-children")
    deps = await node.job.get_dependencies()
    assert deps["unprocessed"] == [node.children[1].job.key]
    assert await node.job.get_dependencies_count(unprocessed=True) == {"unprocessed": 1}
    assert evp.of("active") == []
    gate.set()
    await evp.wait("completed")


async def test_big_fan_out_with_mixed_outcomes_in_batches(env: Env) -> None:
    """Many children of one parent end in the same batched calls (completions, idof and rdof
    failures, removeOnComplete): the parent runs exactly once, after the last, and sees every
    result. The parent lives in the children's queue, so it may be taken by the very call that
    releases it."""
    n = 240
    children = []
    for i in range(n):
        opts: dict[str, Any] = {}
        if i % 10 == 3:
            opts["ignore_dependency_on_failure"] = True
        elif i % 15 == 7:
            opts["remove_dependency_on_failure"] = True
        if i % 4 == 0:
            opts["remove_on_complete"] = True
        children.append({"name": "child", "queue_name": "fan", "data": {"i": i}, "opts": opts})
    fp = env.flow()
    node = await fp.add({"name": "parent", "queue_name": "fan", "children": children})
    calls: Counter[str] = Counter()

    async def processor(job: Job) -> Any:
        calls[job.id] += 1
        if job.name == "parent":
            return {"counts": await job.get_dependencies_count(),
                    "values": await job.get_children_values(),
                    "ignored": await job.get_ignored_children_failures()}
        i = job.data["i"]
        if i % 10 == 3 or i % 15 == 7:
            raise RuntimeError(f"child {i} failed")
        return i

    w = env.worker("fan", processor, concurrency=16)
    ev = Events(w)
    await until(lambda: any(a[0].id == node.job.id for a in ev.of("completed")), 15, "the parent")
    assert set(calls.values()) == {1} and len(calls) == n + 1
    result = (await node.job.queue.get_job(node.job.id)).returnvalue
    ok = [i for i in range(n) if not (i % 10 == 3 or i % 15 == 7)]
    ignored = [i for i in range(n) if i % 10 == 3]
    assert result["counts"] == {"processed": len(ok), "unprocessed": 0, "ignored": len(ignored), "failed": 0}
    keys = {c.job.data["i"]: c.job.key for c in node.children}
    assert result["values"] == {keys[i]: i for i in ok}
    assert result["ignored"] == {keys[i]: f"child {i} failed" for i in ignored}


async def test_fail_parent_on_failure_climbs_the_tree(env: Env, client: Any) -> None:
    fp = env.flow()
    node = await fp.add({
        "name": "root", "queue_name": "fp-a", "data": {}, "children": [
            {"name": "mid", "queue_name": "fp-b", "data": {}, "opts": {"fail_parent_on_failure": True},
             "children": [
                 {"name": "bad-leaf", "queue_name": "fp-c", "data": {"v": 1},
                  "opts": {"fail_parent_on_failure": True, "attempts": 2}},
                 leaf("ok-leaf", "fp-c", 2, fail_parent_on_failure=True),
             ]},
            leaf("sibling", "fp-b", 3, fail_parent_on_failure=True),
        ],
    })
    called: list[str] = []
    gate = asyncio.Event()

    async def processor(job: Job) -> Any:
        called.append(job.name)
        if job.name == "bad-leaf":
            raise RuntimeError("leaf exploded")
        if job.name == "ok-leaf":
            await gate.wait()
        return {"v": 1}

    wa = env.worker("fp-a", processor)
    wb = env.worker("fp-b", processor)
    env.worker("fp-c", processor, concurrency=2)
    eva, evb = Events(wa), Events(wb)
    (root_job, root_err, *_), = await eva.wait("failed", timeout=10)
    mid, sibling = node.children
    bad, ok = mid.children
    # the leaf used its retries first (retries are not failures for the parent, 8.3)
    assert called.count("bad-leaf") == 2
    # neither the mid nor the root processor ran: each failed from its deferred failure
    assert "mid" not in called and "root" not in called
    mid_failed = [a for a in evb.of("failed") if a[0].id == mid.job.id]
    assert len(mid_failed) == 1 and isinstance(mid_failed[0][1], UnrecoverableError)
    assert str(mid_failed[0][1]) == f"child {bad.job.key} failed"
    assert isinstance(root_err, UnrecoverableError) and str(root_err) == f"child {mid.job.key} failed"
    stored_mid = await mid.job.queue.get_job(mid.job.id)
    stored_root = await node.job.queue.get_job(node.job.id)
    assert stored_mid.failed_reason == f"child {bad.job.key} failed"
    assert stored_root.failed_reason == f"child {mid.job.key} failed"
    assert stored_mid.deferred_failure is None and stored_root.deferred_failure is None  # defa removed
    assert await mid.job.get_state() == "failed" and await node.job.get_state() == "failed"
    assert (await mid.job.get_dependencies())["failed"] == [bad.job.key]
    assert (await node.job.get_dependencies())["failed"] == [mid.job.key]
    # a sibling still pending when the parent failed completes normally afterwards
    gate.set()
    await wait_state(ok.job.queue, ok.job.id, "completed")
    await wait_state(sibling.job.queue, sibling.job.id, "completed")


async def test_default_policy_in_bullfast_fails_the_parent(env: Env) -> None:
    fp = env.flow()
    node = await fp.add({"name": "p", "queue_name": "def-p", "children": [
        {"name": "bad", "queue_name": "def-c", "data": {}}, leaf("ok", "def-c", 1)]})
    assert node.children[0].job.parent.get("fpof") is True
    called: list[str] = []

    async def parent(job: Job) -> None:
        called.append(job.id)

    async def child(job: Job) -> Any:
        if job.name == "bad":
            raise RuntimeError("nope")
        return 1

    env.worker("def-c", child)
    wp = env.worker("def-p", parent)
    evp = Events(wp)
    (pjob, err, *_), = await evp.wait("failed")
    assert called == []
    assert str(err) == f"child {node.children[0].job.key} failed"
    assert await node.job.get_state() == "failed"


async def test_default_policy_for_children_added_with_queue_add(env: Env) -> None:
    q = env.queue("qadd-p")
    qc = env.queue("qadd-c")
    parent = await q.add("p", {})
    await q.client.zadd(env.key("qadd-p", "waiting-children"), {parent.id: 1})
    await q.client.lrem(env.key("qadd-p", "wait"), 0, parent.id)
    child = await qc.add("c", {}, parent={"id": parent.id, "queue": q.qualified_name})
    env.worker("qadd-c", fail_processor)
    wp = env.worker("qadd-p", ok_processor)
    evp = Events(wp)
    (pjob, err, *_), = await evp.wait("failed")
    assert str(err) == f"child {child.key} failed"


async def test_fpof_stops_at_a_child_without_policy(env: Env) -> None:
    fp = env.flow()
    node = await fp.add({
        "name": "root", "queue_name": "stop-a", "children": [
            {"name": "mid", "queue_name": "stop-b", "data": {}, "opts": NO_POLICY,
             "children": [{"name": "bad", "queue_name": "stop-c", "data": {},
                           "opts": {"fail_parent_on_failure": True}}]},
        ],
    })
    env.worker("stop-c", fail_processor)
    wb = env.worker("stop-b", ok_processor)
    wa = env.worker("stop-a", ok_processor)
    evb, eva = Events(wb), Events(wa)
    await evb.wait("failed")
    mid = node.children[0]
    assert await mid.job.get_state() == "failed"
    # the root is not told: mid's link has no policy, so the root keeps waiting (8.3)
    assert await node.job.get_state() == "waiting-children"
    assert (await node.job.get_dependencies())["unprocessed"] == [mid.job.key]
    assert eva.of("active") == [] and eva.of("failed") == []


async def test_ignore_dependency_on_failure(env: Env) -> None:
    fp = env.flow()
    node = await fp.add({"name": "p", "queue_name": "idof-p", "children": [
        leaf("bad", "idof-c", 1, ignore_dependency_on_failure=True, attempts=2),
        leaf("slow", "idof-c", 2),
    ]})
    gate = asyncio.Event()

    async def child(job: Job) -> Any:
        if job.name == "bad":
            raise RuntimeError(f"bad attempt {job.attempts_made + 1}")
        await gate.wait()
        return {"v": 20}

    wc = env.worker("idof-c", child, concurrency=2)
    wp = env.worker("idof-p", leaf_or_parent)
    evc, evp = Events(wc), Events(wp)
    await evc.wait("failed", 2)
    bad, slow = node.children
    await wait_state(bad.job.queue, bad.job.id, "failed")
    # the parent waits for the other child (8.3 idof)
    assert await node.job.get_state() == "waiting-children"
    assert await node.job.get_ignored_children_failures() == {bad.job.key: "bad attempt 2"}
    gate.set()
    (pjob, result, *_), = await evp.wait("completed")
    assert result["values"] == {slow.job.key: {"v": 20}}
    assert result["ignored"] == {bad.job.key: "bad attempt 2"}
    assert result["counts"] == {"processed": 1, "unprocessed": 0, "ignored": 1, "failed": 0}
    assert result["deps"]["ignored"] == {bad.job.key: "bad attempt 2"}
    assert await node.job.get_failed_children_values() == {bad.job.key: "bad attempt 2"}


async def test_remove_dependency_on_failure(env: Env) -> None:
    fp = env.flow()
    node = await fp.add({"name": "p", "queue_name": "rdof-p", "children": [
        leaf("bad", "rdof-c", 1, remove_dependency_on_failure=True),
        leaf("ok", "rdof-c", 2),
    ]})

    async def child(job: Job) -> Any:
        if job.name == "bad":
            raise RuntimeError("removed from the parent")
        return {"v": 4}

    env.worker("rdof-c", child)
    wp = env.worker("rdof-p", leaf_or_parent)
    evp = Events(wp)
    (pjob, result, *_), = await evp.wait("completed")
    bad, ok = node.children
    assert result["values"] == {ok.job.key: {"v": 4}}
    assert result["counts"] == {"processed": 1, "unprocessed": 0, "ignored": 0, "failed": 0}
    assert result["ignored"] == {}
    assert await bad.job.get_state() == "failed"


async def test_remove_dependency_on_failure_last_child_releases_parent(env: Env) -> None:
    fp = env.flow()
    await fp.add({"name": "p", "queue_name": "rdof2-p", "children": [
        leaf("bad", "rdof2-c", 1, remove_dependency_on_failure=True)]})
    env.worker("rdof2-c", fail_processor)
    seen: dict[str, Any] = {}

    async def parent(job: Job) -> str:
        seen["deps"] = await job.get_dependencies()
        return "ran"

    wp = env.worker("rdof2-p", parent)
    evp = Events(wp)
    await evp.wait("completed")
    assert seen["deps"] == {"processed": {}, "unprocessed": [], "failed": [], "ignored": {}}


async def test_continue_parent_on_failure_runs_parent_while_siblings_pending(env: Env) -> None:
    fp = env.flow()
    node = await fp.add({"name": "p", "queue_name": "cpof-p", "data": {}, "children": [
        leaf("bad", "cpof-c", 1, continue_parent_on_failure=True),
        leaf("pending", "cpof-other", 2),
    ]})
    bad, pending = node.children
    runs: list[dict[str, Any]] = []

    async def parent(job: Job, token: str) -> Any:
        runs.append({
            "deps": await job.get_dependencies(),
            "ignored": await job.get_ignored_children_failures(),
            "counts": await job.get_dependencies_count(),
        })
        if await job.move_to_waiting_children(token):
            raise WaitingChildrenError()
        return {"runs": len(runs)}

    env.worker("cpof-c", fail_processor)
    wp = env.worker("cpof-p", parent)
    evp = Events(wp)
    await evp.wait("active")
    # the parent ran although its other child has not run at all (8.3 cpof)
    await wait_state(node.job.queue, node.job.id, "waiting-children")
    assert runs[0]["ignored"] == {bad.job.key: f"fail {bad.job.id}"}
    assert runs[0]["deps"]["unprocessed"] == [pending.job.key]
    assert runs[0]["counts"] == {"processed": 0, "unprocessed": 1, "ignored": 1, "failed": 0}
    assert evp.of("failed") == [] and evp.of("completed") == []

    env.worker("cpof-other", leaf_or_parent)
    (pjob, result, *_), = await evp.wait("completed")
    assert result == {"runs": 2}
    assert runs[1]["deps"]["processed"] == {pending.job.key: {"v": 4, "name": "pending"}}
    assert runs[1]["counts"] == {"processed": 1, "unprocessed": 0, "ignored": 1, "failed": 0}
    stored = await node.job.queue.get_job(node.job.id)
    assert stored.attempts_started == 2 and stored.attempts_made == 1


async def test_continue_parent_on_failure_completing_with_pending_children_fails(env: Env) -> None:
    fp = env.flow()
    node = await fp.add({"name": "p", "queue_name": "cpof2-p", "children": [
        leaf("bad", "cpof2-c", 1, continue_parent_on_failure=True),
        leaf("pending", "cpof2-other", 2),
    ]})
    env.worker("cpof2-c", fail_processor)
    wp = env.worker("cpof2-p", ok_processor)
    evp = Events(wp)
    (pjob, err, *_), = await evp.wait("failed")
    # completing while a child is pending is refused (-4, 7.4 step 2), reported as an error
    # first, as BullMQ's worker reports a refused moveToCompleted
    assert isinstance(err, PendingChildrenError)
    assert "pending dependencies" in str(err)
    assert await node.job.get_state() == "failed"
    assert [n for n in evp.names() if n in ("error", "failed")] == ["error", "failed"]
    assert evp.of("error")[0][0] is err


async def test_fpof_child_fails_while_parent_is_delayed(env: Env) -> None:
    """8.3: a parent released (by a cpof sibling) into `delayed` because of its delay option is
    taken back when an fpof child fails: delay zeroed, to wait with the deferred failure."""
    fp = env.flow()
    node = await fp.add({"name": "p", "queue_name": "fpd-p", "opts": {"delay": 60_000}, "children": [
        leaf("cpof", "fpd-c", 1, continue_parent_on_failure=True),
        leaf("fpof", "fpd-late", 2, fail_parent_on_failure=True),
    ]})
    env.worker("fpd-c", fail_processor)
    await wait_state(node.job.queue, node.job.id, "delayed")
    called: list[str] = []

    async def parent(job: Job) -> None:
        called.append(job.id)

    wp = env.worker("fpd-p", parent)
    evp = Events(wp)
    env.worker("fpd-late", fail_processor)
    (pjob, err, *_), = await evp.wait("failed")
    assert str(err) == f"child {node.children[1].job.key} failed"
    assert called == []
    stored = await node.job.queue.get_job(node.job.id)
    assert stored.delay == 0 and stored.failed_reason == str(err)


async def test_parent_completing_after_an_fpof_child_failed_fails(env: Env) -> None:
    """7.4 step 2: completing a job whose :unsuccessful set is not empty returns -9, which the
    worker turns into an unrecoverable failure (no retry)."""
    fp = env.flow()
    node = await fp.add({"name": "p", "queue_name": "m9-p", "opts": {"attempts": 3}, "children": [
        leaf("cpof", "m9-c", 1, continue_parent_on_failure=True),
        leaf("fpof", "m9-late", 2, fail_parent_on_failure=True),
    ]})
    gate = asyncio.Event()
    runs = 0

    async def parent(job: Job) -> str:
        nonlocal runs
        runs += 1
        await gate.wait()
        return "done?"

    env.worker("m9-c", fail_processor)
    wp = env.worker("m9-p", parent)
    evp = Events(wp)
    await evp.wait("active")
    wl = env.worker("m9-late", fail_processor)
    evl = Events(wl)
    await evl.wait("failed")
    gate.set()
    (pjob, err, *_), = await evp.wait("failed")
    assert isinstance(err, UnrecoverableError)
    assert "failed child" in str(err)
    await wait_state(node.job.queue, node.job.id, "failed")
    assert runs == 1
    assert (await node.job.get_dependencies())["failed"] == [node.children[1].job.key]


async def test_explicit_no_policy_leaves_parent_waiting_for_children(env: Env, client: Any) -> None:
    fp = env.flow()
    node = await fp.add({"name": "p", "queue_name": "nop-p", "children": [
        leaf("bad", "nop-c", 1, fail_parent_on_failure=False), leaf("ok", "nop-c", 2)]})
    bad, ok = node.children
    assert "fpof" not in (bad.job.parent or {})

    async def child(job: Job) -> Any:
        if job.name == "bad":
            raise RuntimeError("bad child")
        return {"v": 1}

    wc = env.worker("nop-c", child)
    wp = env.worker("nop-p", ok_processor)
    evc, evp = Events(wc), Events(wp)
    await evc.wait("failed")
    await evc.wait("completed")
    await wait_state(bad.job.queue, bad.job.id, "failed")
    assert await node.job.get_state() == "waiting-children"
    deps = await node.job.get_dependencies()
    assert deps == {"processed": {ok.job.key: {"v": 1}}, "unprocessed": [bad.job.key], "failed": [],
                    "ignored": {}}
    assert (await node.job.queue.get_job(node.job.id)).deferred_failure is None
    assert evp.of("active") == []
    # retrying the failed child (it now succeeds) releases the parent (8.6)
    await client.hset(env.key("nop-c", bad.job.id), "name", "fixed")
    stored_bad = await bad.job.queue.get_job(bad.job.id)
    await stored_bad.retry()
    await evp.wait("completed")


# ------------------------------------------------------------------------------------------
# processors that move their own job (7.6, 7.9, 7.10)
# ------------------------------------------------------------------------------------------


async def test_move_to_waiting_children_with_dynamic_children(env: Env, client: Any) -> None:
    q = env.queue("dyn-p")
    qc = env.queue("dyn-c")
    parent = await q.add("parent", {"step": 0})
    steps: list[int] = []

    async def parent_processor(job: Job, token: str) -> Any:
        step = job.data["step"]
        steps.append(step)
        if step == 0:
            for i in range(3):
                await qc.add("child", {"v": i}, parent={"id": job.id, "queue": job.queue_qualified_name})
            await job.update_data({"step": 1})
            assert await job.move_to_waiting_children(token) is True
            raise WaitingChildrenError()
        values = await job.get_children_values()
        return {"sum": sum(v["v"] for v in values.values()), "n": len(values)}

    async def child(job: Job) -> Any:
        return {"v": job.data["v"] * 10}

    wp = env.worker("dyn-p", parent_processor)
    evp = Events(wp)
    await wait_state(q, parent.id, "waiting-children")
    assert evp.of("failed") == [] and evp.of("completed") == []
    env.worker("dyn-c", child)
    (pjob, result, *_), = await evp.wait("completed")
    assert steps == [0, 1]
    assert result == {"sum": 30, "n": 3}
    stored = await q.get_job(parent.id)
    assert stored.attempts_started == 2 and stored.attempts_made == 1
    stream = await stream_events(client, env.key("dyn-p", "events"))
    assert {"event": "waiting-children", "jobId": parent.id, "prev": "active"} in stream


async def test_move_to_waiting_children_without_pending_children_returns_false(env: Env) -> None:
    q = env.queue("dyn2")
    job = await q.add("p", {})
    answers: list[bool] = []

    async def processor(job: Job, token: str) -> str:
        answers.append(await job.move_to_waiting_children(token))
        return "went on"

    w = env.worker("dyn2", processor)
    ev = Events(w)
    await ev.wait("completed")
    assert answers == [False]
    assert (await q.get_job(job.id)).returnvalue == "went on"


async def test_move_to_waiting_children_for_one_child(env: Env) -> None:
    q = env.queue("dyn3-p")
    qc = env.queue("dyn3-c")
    parent = await q.add("parent", {"step": 0})
    answers: list[bool] = []

    async def parent_processor(job: Job, token: str) -> Any:
        if job.data["step"] == 0:
            c = await qc.add("child", {}, parent={"id": job.id, "queue": job.queue_qualified_name})
            await job.update_data({"step": 1})
            other = {"id": "not-a-child", "queue": qc.qualified_name}
            answers.append(await job.move_to_waiting_children(token, {"child": other}))
            mine = {"id": c.id, "queue": qc.qualified_name}
            answers.append(await job.move_to_waiting_children(token, {"child": mine}))
            raise WaitingChildrenError()
        return "second run"

    wp = env.worker("dyn3-p", parent_processor)
    evp = Events(wp)
    await wait_state(q, parent.id, "waiting-children")
    env.worker("dyn3-c", ok_processor)
    await evp.wait("completed")
    assert answers == [False, True]


async def test_waiting_for_children_after_one_failed_fails_at_once(env: Env) -> None:
    """A running parent whose fail_parent_on_failure child failed cannot wait for children:
    the refusal (-9) is unrecoverable, as in BullMQ, so the parent fails at its first attempt
    with BullMQ's reason (it was retried, then failed on the child's failure)."""
    pq, cq = env.queue("wcf-p"), env.queue("wcf-c")
    parent = await pq.add("p", {}, attempts=3)
    child_id = "c-" + str(parent.id)

    async def parent_processor(job: Job, token: str) -> Any:
        await cq.add("c", {}, job_id=child_id, parent={"id": job.id, "queue": job.queue_qualified_name},
                     fail_parent_on_failure=True)
        await until(lambda: cq.get_job_state(child_id), 5, "the child to fail")
        while await cq.get_job_state(child_id) != "failed":
            await asyncio.sleep(0.02)
        await job.move_to_waiting_children(token)
        raise WaitingChildrenError()

    def child_processor(job: Job) -> None:
        raise ValueError("child boom")

    env.worker("wcf-c", child_processor)
    wp = env.worker("wcf-p", parent_processor)
    ev = Events(wp)
    (fjob, err, *_), = await ev.wait("failed")
    assert isinstance(err, JobHasFailedChildrenError) and isinstance(err, UnrecoverableError)
    await wait_state(pq, parent.id, "failed")
    stored = await pq.get_job(parent.id)
    assert stored.attempts_made == 1
    assert stored.failed_reason == (
        f"Cannot complete job {parent.id} because it has at least one failed child. moveToWaitingChildren"
    )


async def test_move_to_delayed_and_delayed_error(env: Env, client: Any) -> None:
    q = env.queue("mtd")
    job = await q.add("j", {"step": 0}, attempts=1)
    runs: list[int] = []

    async def processor(job: Job, token: str) -> Any:
        runs.append(now_ms())
        if job.data["step"] == 0:
            await job.update_data({"step": 1})
            await job.move_to_delayed(now_ms() + 150, token)
            raise DelayedError()
        return "resumed"

    w = env.worker("mtd", processor)
    ev = Events(w)
    await ev.wait("completed")
    assert len(runs) == 2 and runs[1] - runs[0] >= 145
    stored = await q.get_job(job.id)
    # no attempt counted (skipAttempt), no failure recorded (7.6)
    assert stored.attempts_made == 1 and stored.attempts_started == 2
    assert ev.of("failed") == []
    assert stored.returnvalue == "resumed"
    stream = await stream_events(client, env.key("mtd", "events"))
    assert any(e["event"] == "delayed" and e["jobId"] == job.id for e in stream)


async def test_move_to_delayed_writes_no_failed_reason(env: Env, client: Any) -> None:
    """job.moveToDelayed sends no fields to update (7.6): the job hash gets no failedReason."""
    q = env.queue("mtd2")
    job = await q.add("j", {})
    w = env.worker("mtd2", None, autorun=False)
    taken = await w.get_next_job("tok", block=False)
    assert taken is not None
    await taken.move_to_delayed(now_ms() + 60_000, "tok")
    assert await q.get_job_state(job.id) == "delayed"
    assert int(await client.hget(env.key("mtd2", job.id), "atm") or 0) == 0
    assert await client.hexists(env.key("mtd2", job.id), "failedReason") == 0


async def test_worker_rate_limit_and_rate_limit_error(env: Env, client: Any) -> None:
    q = env.queue("rl")
    job = await q.add("j", {})
    await q.add("other", {})
    runs: list[tuple[str, int]] = []
    w: Worker

    async def processor(job: Job) -> str:
        runs.append((job.name, now_ms()))
        if len(runs) == 1:
            await w.rate_limit(300)
            raise RateLimitError()
        return job.name

    w = env.worker("rl", processor, limiter={"max": 100, "duration": 1000})
    ev = Events(w)
    await ev.wait("completed", 2)
    # the limited job went back to the front of wait without using an attempt (7.9)
    assert [r[0] for r in runs] == ["j", "j", "other"]
    assert runs[1][1] - runs[0][1] >= 250
    stored = await q.get_job(job.id)
    assert stored.attempts_made == 1 and stored.attempts_started == 2
    assert ev.of("failed") == []


async def test_rate_limit_error_without_a_worker_limiter_waits_for_the_limit(env: Env) -> None:
    """Node's worker waits the ttl returned by the back-to-wait operation whatever its own
    limiter options (7.9); the job must not spin in a busy loop until the limit expires."""
    q = env.queue("rl2")
    await q.add("j", {})
    runs: list[int] = []
    w: Worker

    async def processor(job: Job) -> str:
        runs.append(now_ms())
        if len(runs) == 1:
            await w.rate_limit(300)
            raise RateLimitError()
        return "ok"

    w = env.worker("rl2", processor)
    ev = Events(w)
    await ev.wait("completed")
    assert len(runs) == 2, f"{len(runs)} runs"
    assert runs[1] - runs[0] >= 250


@pytest.mark.parametrize("concurrency", [5, 50])
async def test_rate_limit_error_stops_every_slot_until_the_limit_passes(env: Env, concurrency: int) -> None:
    """At concurrency > 1 the other slots' calls went on fetching (132 jobs started within a
    1.5 s limit, and the limited job ran again 15 ms later); as Node's worker, none starts
    until the limit has passed, whatever the worker's limiter options."""
    q = env.queue("rl3")
    await q.add_bulk([{"name": "j", "data": {"i": i}} for i in range(40)])
    starts: list[tuple[int, float]] = []
    limited_at: list[float] = []
    w: Worker

    async def processor(job: Job) -> str:
        starts.append((job.data["i"], time.monotonic()))
        if job.data["i"] == 3 and not limited_at:
            await w.rate_limit(1000)
            limited_at.append(time.monotonic())
            raise RateLimitError()
        await asyncio.sleep(0.01)
        return "ok"

    w = env.worker("rl3", processor, concurrency=concurrency)
    ev = Events(w)
    await ev.wait("completed", 40, timeout=15)
    t = limited_at[0]
    # (jobs taken by a call already in flight may start just after the limit was set)
    inside = [i for i, at in starts if t + 0.2 < at < t + 0.9]
    assert inside == [], inside
    again = [at for i, at in starts if i == 3][1]
    assert again - t >= 0.9


async def test_limiter_caps_throughput(env: Env) -> None:
    q = env.queue("limiter")
    await q.add_bulk([{"name": "j", "data": {"i": i}} for i in range(6)])
    starts: list[int] = []

    async def processor(job: Job) -> int:
        starts.append(now_ms())
        return job.data["i"]

    w = env.worker("limiter", processor, concurrency=6, limiter={"max": 2, "duration": 300})
    ev = Events(w)
    await ev.wait("completed", 6, timeout=10)
    first = starts[0]
    # at most 2 jobs per 300 ms window: 6 jobs need at least 3 windows
    assert starts[-1] - first >= 550, [s - first for s in starts]
    for i in range(len(starts)):
        in_window = [s for s in starts if starts[i] <= s < starts[i] + 250]
        assert len(in_window) <= 2, [s - first for s in starts]


async def test_limiter_from_bullmq_options(env: Env, redis_url: str, prefix: str) -> None:
    q = env.queue("limiter2")
    await q.add_bulk([{"name": "j", "data": {}} for _ in range(3)])
    starts: list[int] = []

    async def processor(job: Job) -> None:
        starts.append(now_ms())

    w = Worker("limiter2", processor, {"connection": redis_url, "prefix": prefix, "drainDelay": 0.2,
                                       "concurrency": 3, "limiter": {"max": 1, "duration": 200}})
    try:
        ev = Events(w)
        await ev.wait("completed", 3, timeout=10)
    finally:
        await close(w)
    assert starts[2] - starts[0] >= 340


# ------------------------------------------------------------------------------------------
# stalled jobs (7.8) and locks (7.3)
# ------------------------------------------------------------------------------------------


async def test_stalled_jobs_are_recovered_and_completed_exactly_once(env: Env, client: Any) -> None:
    q = env.queue("stall")
    jobs = await q.add_bulk([{"name": "j", "data": {"i": i}} for i in range(3)])
    dead = env.worker("stall", None, autorun=False, lock_duration=150)
    taken = [await dead.get_next_job(f"dead-{i}", block=False) for i in range(3)]
    assert all(t is not None for t in taken)
    assert await q.get_job_counts("active") == {"active": 3}
    calls: Counter[str] = Counter()

    async def processor(job: Job) -> str:
        calls[job.id] += 1
        return "recovered"

    w = env.worker("stall", processor, stalled_interval=100)
    ev = Events(w)
    await ev.wait("completed", 3)
    assert dict(calls) == {j.id: 1 for j in jobs}
    assert sorted(args[0] for args in ev.of("stalled")) == sorted(j.id for j in jobs)
    for job in jobs:
        stored = await q.get_job(job.id)
        assert stored.stalled_counter == 1 and stored.returnvalue == "recovered"
        assert stored.attempts_started == 2 and stored.attempts_made == 1
    stream = await stream_events(client, env.key("stall", "events"))
    assert sorted(e["jobId"] for e in stream if e["event"] == "stalled") == sorted(j.id for j in jobs)
    # the dead worker cannot end them any more
    with pytest.raises((LockMissingError, LockMismatchError, ServerError)):
        await taken[0].move_to_completed("late", "dead-0")
    assert (await q.get_job(taken[0].id)).returnvalue == "recovered"
    # nothing runs twice later either
    await asyncio.sleep(0.25)
    assert set(calls.values()) == {1}


async def test_a_job_handed_back_to_the_same_worker_keeps_its_new_attempt(env: Env, client: Any) -> None:
    """The first attempt loses its lock while it runs; the stalled check hands the job back to
    the same worker, which starts a second attempt. The stale attempt's end is refused, and
    must not take the second attempt's place: the second keeps its lock renewed and completes
    (before, the refusal dropped it from the worker's books, its lock expired, and the job
    stalled again and failed)."""
    q = env.queue("again")
    job = await q.add("j", {})
    tokens: list[str] = []

    async def processor(job: Job, token: str) -> str:
        tokens.append(token)
        if len(tokens) == 1:
            await client.delete(env.key("again", f"{job.id}:lock"))  # as when a lock expires
            await asyncio.sleep(0.8)
            return "stale"
        await asyncio.sleep(1.5)  # outlives the stale attempt and two lock durations
        return "second"

    w = env.worker("again", processor, concurrency=2, lock_duration=600, stalled_interval=150)
    ev = Events(w)
    await ev.wait("completed", 1, timeout=10)
    assert [args[1] for args in ev.of("completed")] == ["second"]
    assert len(tokens) == 2 and tokens[0] != tokens[1]
    assert any(isinstance(args[0], LockMismatchError) for args in ev.of("error"))
    stored = await q.get_job(job.id)
    assert stored.returnvalue == "second" and stored.stalled_counter == 1
    assert not ev.of("failed") and await stored.get_state() == "completed"


async def test_lock_renewal_keeps_a_long_job_from_stalling(env: Env) -> None:
    q = env.queue("renew")
    job = await q.add("long", {})
    calls = 0

    async def processor(job: Job) -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.7)
        return "done"

    w = env.worker("renew", processor, lock_duration=200, stalled_interval=100)
    checker = env.worker("renew", None, autorun=False, stalled_interval=50)
    ev = Events(w)
    # another worker's stalled checks while the job runs find it locked every time
    moved: list[str] = []
    while not ev.of("completed"):
        moved += await checker.check_stalled()
        await asyncio.sleep(0.05)
    assert calls == 1 and moved == [] and ev.of("stalled") == [] and ev.of("error") == []
    assert (await q.get_job(job.id)).stalled_counter == 0


async def stall_once(dead: Worker, checker: Worker, token: str) -> str:
    """Take a job with a worker that then 'dies' and wait until the stalled check moves it."""
    job = await dead.get_next_job(token, block=False)
    assert job is not None

    async def moved() -> list[str]:
        return await checker.check_stalled()

    ids = await until(moved, 5, "the stalled check to move the job")
    assert ids == [job.id]
    return job.id


async def test_job_stalled_too_often_fails_and_its_parent_policy_applies(env: Env, client: Any) -> None:
    fp = env.flow()
    node = await fp.add({"name": "p", "queue_name": "stall-p", "children": [
        {"name": "c", "queue_name": "stall-c", "data": {}, "opts": {"attempts": 5}}]})
    child = node.children[0]
    dead = env.worker("stall-c", None, autorun=False, lock_duration=60)
    checker = env.worker("stall-c", None, autorun=False, stalled_interval=40, max_stalled_count=1)
    await stall_once(dead, checker, "dead-1")
    assert await client.hget(env.key("stall-c", child.job.id), "defa") is None
    await stall_once(dead, checker, "dead-2")
    # past maxStalledCount: back in wait with a deferred failure (golden h1)
    defa = await client.hget(env.key("stall-c", child.job.id), "defa")
    assert defa == b"job stalled more than allowable limit"
    assert await child.job.get_state() == "waiting"

    calls: list[str] = []

    async def processor(job: Job) -> str:
        calls.append(job.name)
        return "ran"

    wc = env.worker("stall-c", processor)
    wp = env.worker("stall-p", processor)
    evc, evp = Events(wc), Events(wp)
    (cjob, cerr, *_), = await evc.wait("failed")
    assert isinstance(cerr, UnrecoverableError) and str(cerr) == "job stalled more than allowable limit"
    (pjob, perr, *_), = await evp.wait("failed")
    assert str(perr) == f"child {child.job.key} failed"
    assert calls == []
    # announced 'active' before failing, as BullMQ's worker does for every job it takes
    assert [a[0].id for a in evc.of("active")] == [cjob.id] and evc.names().index("active") < evc.names().index("failed")
    stored = await child.job.queue.get_job(child.job.id)
    assert stored.failed_reason == "job stalled more than allowable limit"
    assert stored.stalled_counter == 2 and stored.deferred_failure is None
    assert await child.job.get_state() == "failed"  # no retry despite attempts=5


async def test_max_stalled_count_of_the_worker_is_used(env: Env) -> None:
    q = env.queue("stall-max")
    job = await q.add("j", {})
    dead = env.worker("stall-max", None, autorun=False, lock_duration=60)
    checker = env.worker("stall-max", None, autorun=False, stalled_interval=40, max_stalled_count=2)
    for i in range(2):
        await stall_once(dead, checker, f"dead-{i}")
    assert (await q.get_job(job.id)).deferred_failure is None
    await stall_once(dead, checker, "dead-x")
    assert (await q.get_job(job.id)).deferred_failure == "job stalled more than allowable limit"


async def test_stalled_event_and_worker_stalled_loop(env: Env) -> None:
    q = env.queue("stall-ev")
    job = await q.add("j", {})
    dead = env.worker("stall-ev", None, autorun=False, lock_duration=80)
    assert await dead.get_next_job("dead", block=False) is not None
    w = env.worker("stall-ev", ok_processor, stalled_interval=60)
    ev = Events(w)
    (job_id, prev), = await ev.wait("stalled")
    assert job_id == job.id and prev == "active"
    await ev.wait("completed")


async def test_lock_lost_manual_completion_raises(env: Env, client: Any) -> None:
    q = env.queue("lock")
    job = await q.add("j", {})
    w = env.worker("lock", None, autorun=False)
    taken = await w.get_next_job("token-A", block=False)
    assert taken is not None and taken.token == "token-A"
    lock = env.key("lock", f"{job.id}:lock")
    assert await client.get(lock) == b"token-A"

    await client.delete(lock)
    with pytest.raises(LockMissingError):
        await taken.move_to_completed("x", "token-A")
    with pytest.raises(LockMissingError):
        await taken.move_to_failed(RuntimeError("x"), "token-A")
    await client.set(lock, "token-B")
    with pytest.raises(LockMismatchError):
        await taken.move_to_completed("x", "token-A")
    with pytest.raises(LockMismatchError):
        await taken.move_to_failed(RuntimeError("x"), "token-A")
    # nothing happened to the job
    assert await q.get_job_state(job.id) == "active"
    raw = await client.hgetall(env.key("lock", job.id))
    assert b"returnvalue" not in raw and b"finishedOn" not in raw and b"atm" not in raw
    assert await client.get(lock) == b"token-B"
    # the owner of the lock can complete it
    await taken.move_to_completed("owner", "token-B")
    assert await q.get_job_state(job.id) == "completed"
    assert await client.exists(lock) == 0


@pytest.mark.parametrize("kind", ["plain", "async"])
async def test_concurrency_changed_while_running_is_what_runs(env: Env, kind: str) -> None:
    """As BullMQ's setter: the new concurrency is how many jobs run at once, for a plain
    processor too (its thread pool was sized once, so 4 jobs were locked and 1 ran); values
    below 1 or not finite numbers are refused."""
    q = env.queue(f"conc-{kind}")
    running, peak = 0, 0
    lock = threading.Lock()

    def enter() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)

    def leave() -> None:
        nonlocal running
        with lock:
            running -= 1

    def plain(job: Job) -> None:
        enter()
        time.sleep(0.3)
        leave()

    async def async_(job: Job) -> None:
        enter()
        await asyncio.sleep(0.3)
        leave()

    w = env.worker(f"conc-{kind}", plain if kind == "plain" else async_, concurrency=1)
    w.concurrency = 4
    ev = Events(w)
    await q.add_bulk([{"name": "j"} for _ in range(8)])
    await ev.wait("completed", 8, timeout=10)
    assert peak == 4
    for bad in (0, -1, float("inf"), float("nan"), True, "4"):
        with pytest.raises(InvalidOptionError, match="concurrency"):
            w.concurrency = bad  # type: ignore[assignment]
    assert w.concurrency == 4
    with pytest.raises(InvalidOptionError):
        env.worker(f"conc-{kind}", plain, concurrency=0)


async def test_manual_endings_keep_per_the_workers_policy(env: Env, client: Any) -> None:
    """Jobs ended by hand (get_next_job + move_to_completed / move_to_failed) are kept as the
    worker's remove_on_complete / remove_on_fail say when the job has no policy of its own
    (BullMQ falls back to the options of the worker the job was taken by)."""
    q = env.queue("keep-manual")
    jobs = [await q.add(f"j{i}", {}) for i in range(5)]
    own = await q.add("own", {}, remove_on_complete=False)
    w = env.worker("keep-manual", None, autorun=False, remove_on_complete={"count": 1}, remove_on_fail=True)
    for i in range(3):
        taken = await w.get_next_job(f"t{i}", block=False)
        assert taken is not None
        await taken.move_to_completed(i, f"t{i}")
    assert await q.get_completed() and [j.id for j in await q.get_completed()] == [jobs[2].id]
    failing = await w.get_next_job("tf", block=False)
    assert failing is not None and failing.id == jobs[3].id
    await failing.move_to_failed(RuntimeError("boom"), "tf")
    assert not await client.exists(env.key("keep-manual", jobs[3].id))
    # a job's own policy wins: kept although the worker keeps only one
    await client.lrem(env.key("keep-manual", "wait"), 0, jobs[4].id)
    mine = await w.get_next_job("to", block=False)
    assert mine is not None and mine.id == own.id
    await mine.move_to_completed("kept", "to")
    assert sorted(j.id for j in await q.get_completed()) == sorted([jobs[2].id, own.id])


async def test_manual_completion_of_a_missing_job(env: Env, client: Any) -> None:
    q = env.queue("lock2")
    job = await q.add("j", {})
    w = env.worker("lock2", None, autorun=False)
    taken = await w.get_next_job("tok", block=False)
    await client.delete(env.key("lock2", job.id))
    with pytest.raises(JobNotFoundError):
        await taken.move_to_completed("x", "tok")


async def test_worker_does_not_complete_a_job_whose_lock_was_lost(env: Env, client: Any) -> None:
    q = env.queue("lock3")
    job = await q.add("j", {})
    calls = 0

    async def processor(job: Job, token: str) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            await client.delete(env.key("lock3", f"{job.id}:lock"))
            return "first"
        return "second"

    w = env.worker("lock3", processor, stalled_interval=80, lock_duration=1000)
    ev = Events(w)
    (err,), = await ev.wait("error")
    assert isinstance(err, LockMissingError)
    assert ev.of("completed") == []
    # the stalled check returns the job to wait and it runs again
    (cjob, result, *_), = await ev.wait("completed")
    assert result == "second" and calls == 2
    assert (await q.get_job(job.id)).returnvalue == "second"


async def test_lock_taken_by_another_worker_is_reported(env: Env, client: Any) -> None:
    q = env.queue("lock4")
    job = await q.add("j", {})

    async def processor(job: Job) -> str:
        await client.set(env.key("lock4", f"{job.id}:lock"), "someone-else", px=5000)
        await asyncio.sleep(0.2)  # long enough for a lock renewal (every 50 ms here)
        return "mine?"

    w = env.worker("lock4", processor, lock_duration=200)
    ev = Events(w)
    await until(lambda: any(isinstance(a[0], LockMismatchError) for a in ev.of("error")), 5,
                "a lock mismatch")
    assert ev.of("lockRenewalFailed") and ev.of("lockRenewalFailed")[0][0] == [job.id]
    assert ev.of("completed") == []
    assert await q.get_job_state(job.id) == "active"
    assert await client.get(env.key("lock4", f"{job.id}:lock")) == b"someone-else"


# ------------------------------------------------------------------------------------------
# jobs written by someone else
# ------------------------------------------------------------------------------------------


async def push_raw_job(client: Any, env: Env, queue: str, job_id: str, fields: dict[str, Any]) -> None:
    if fields:
        await client.hset(env.key(queue, job_id), mapping=fields)
    await client.lpush(env.key(queue, "wait"), job_id)
    await client.zadd(env.key(queue, "marker"), {"0": 0})


async def test_corrupt_data_fails_the_job_and_the_worker_goes_on(env: Env, client: Any) -> None:
    q = env.queue("corrupt")
    ts = now_ms()
    await push_raw_job(client, env, "corrupt", "bad-data", {
        "name": "bad", "data": "{not json", "opts": '{"attempts":3}', "timestamp": ts, "delay": 0,
        "priority": 0})
    await push_raw_job(client, env, "corrupt", "bad-opts", {
        "name": "bad", "data": "{}", "opts": "[not, an object", "timestamp": ts, "delay": 0, "priority": 0})
    good = await q.add("good", {"x": 1})
    calls: list[str] = []

    async def processor(job: Job) -> str:
        calls.append(job.id)
        return "ok"

    w = env.worker("corrupt", processor)
    ev = Events(w)
    await ev.wait("failed", 2)
    await ev.wait("completed")
    assert calls == [good.id]
    bad_data = await q.get_job("bad-data")
    assert await q.get_job_state("bad-data") == "failed"
    assert "JSON" in bad_data.failed_reason and "data" in bad_data.failed_reason, bad_data.failed_reason
    assert bad_data.attempts_made == 1  # not retried: it would fail the same way
    bad_opts = await q.get_job("bad-opts")
    assert await q.get_job_state("bad-opts") == "failed"
    assert "opts" in bad_opts.failed_reason, bad_opts.failed_reason
    # the worker keeps working
    later = await q.add("later", {})
    await ev.wait("completed", 2)
    assert calls == [good.id, later.id]


async def test_job_with_missing_fields_is_processed_with_defaults(env: Env, client: Any) -> None:
    q = env.queue("sparse")
    await push_raw_job(client, env, "sparse", "bare", {"name": "bare"})
    seen: dict[str, Any] = {}

    async def processor(job: Job) -> str:
        seen.update(data=job.data, opts=job.opts, attempts=job.attempts_made, ts=job.timestamp)
        return "fine"

    w = env.worker("sparse", processor)
    ev = Events(w)
    await ev.wait("completed")
    assert seen == {"data": {}, "opts": {}, "attempts": 0, "ts": 0}
    assert await q.get_job_state("bare") == "completed"


async def test_job_id_without_hash_does_not_stop_the_worker(env: Env, client: Any) -> None:
    q = env.queue("ghost")
    await push_raw_job(client, env, "ghost", "ghost", {})
    good = await q.add("good", {})
    names: list[str] = []

    async def processor(job: Job) -> str:
        names.append(job.name)
        return "ok"

    w = env.worker("ghost", processor)
    ev = Events(w)
    await until(lambda: any(a[0].id == good.id for a in ev.of("completed")), 5, "the good job")
    assert w.is_running()

    # processed as an empty job (what BullMQ's move to active would do) or dropped; never
    # left in wait or active
    async def ghost_gone() -> bool:
        return await q.get_job_state("ghost") in ("completed", "failed", "unknown")

    await until(ghost_gone, 5, "the ghost id to leave wait/active")


async def run_odd_jobs(env: Env, client: Any, queue: str, odd: dict[str, str]) -> list[str]:
    """Push jobs with the given stored ``opts`` (name "fail": the processor raises, "ok": it
    returns) and a good job; returns what went wrong."""
    q = env.queue(queue)
    for job_id, opts in odd.items():
        await push_raw_job(client, env, queue, job_id, {
            "name": "ok" if job_id.startswith("ok") else "fail", "data": "{}", "opts": opts,
            "timestamp": now_ms(), "delay": 0, "priority": 0})
    good = await q.add("good", {})

    async def processor(job: Job) -> str:
        if job.name == "fail":
            raise RuntimeError("processor failed")
        return "ok"

    w = env.worker(queue, processor)
    ev = Events(w)

    async def all_ended() -> bool:
        return all([await q.get_job_state(i) in ("completed", "failed") for i in odd])

    problems = []
    if not await poll(lambda: any(a[0].id == good.id for a in ev.of("completed")), 0.6):
        problems.append("the worker stopped processing other jobs")
    if not await poll(all_ended, 0.3):
        problems.append(f"jobs left unfinished: {[(i, await q.get_job_state(i)) for i in odd]}")
    if not await close_or_stop(w, 1):
        problems.append("Worker.close() hangs")
    for job_id in odd:
        stored = await q.get_job(job_id)
        if await q.get_job_state(job_id) == "failed" and not stored.failed_reason:
            problems.append(f"{job_id} failed without a reason")
    return problems


async def test_badly_typed_options_end_the_job_with_a_reason(env: Env, client: Any) -> None:
    """Options written by another client with wrong types must not leave the job active
    forever: the attempt ends (failed, with a reason) and the worker goes on."""
    problems = await run_odd_jobs(env, client, "badopts", {
        "fail-backoff": '{"attempts":2,"backoff":"soon"}',
        "ok-remove": '{"removeOnComplete":{"count":"x"}}',
    })
    assert problems == []


@pytest.mark.parametrize(
    "opts", ['{"attempts":"three"}', '{"stackTraceLimit":"x"}', '{"removeOnFail":{"count":"x"}}']
)
async def test_badly_typed_failure_options_end_the_job_with_a_reason(
    env: Env, client: Any, opts: str
) -> None:
    problems = await run_odd_jobs(env, client, "badopts2", {"fail-odd": opts})
    assert problems == []


# ------------------------------------------------------------------------------------------
# closing and pausing
# ------------------------------------------------------------------------------------------


async def test_close_waits_for_running_jobs(env: Env) -> None:
    q = env.queue("close")
    await q.add_bulk([{"name": "j", "data": {}} for _ in range(3)])
    finished: list[str] = []

    async def processor(job: Job) -> str:
        await asyncio.sleep(0.15)
        finished.append(job.id)
        return "done"

    w = env.worker("close", processor, concurrency=2)
    ev = Events(w)
    await ev.wait("active", 2)
    await close(w)
    # the two running jobs ended normally; the third was not taken
    assert sorted(finished) == ["1", "2"]
    counts = await q.get_job_counts("completed", "active", "waiting")
    assert counts == {"completed": 2, "active": 0, "waiting": 1}
    assert ev.of("closed") == [()]
    assert not w.is_running()
    await close(w)  # twice is fine


async def test_close_of_a_sync_processor_waits_for_the_thread(env: Env) -> None:
    q = env.queue("close-sync")
    await q.add("j", {})
    started = threading.Event()
    finished: list[str] = []

    def processor(job: Job) -> str:
        started.set()
        time.sleep(0.15)
        finished.append(job.id)
        return "done"

    w = env.worker("close-sync", processor)
    await until(started.is_set, 5, "the processor to start")
    await close(w)
    assert finished == ["1"] and await q.get_job_state("1") == "completed"


async def test_force_close_leaves_the_job_to_the_stalled_check(env: Env, client: Any) -> None:
    q = env.queue("force")
    job = await q.add("j", {})
    cancelled: list[str] = []
    calls = 0

    async def slow(job: Job) -> str:
        nonlocal calls
        calls += 1
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(job.id)
            raise
        return "never"

    # (a short stalled_interval here too: its first check guards the queue for that long)
    w = env.worker("force", slow, lock_duration=150, stalled_interval=80)
    ev = Events(w)
    await ev.wait("active")
    t0 = time.monotonic()
    await asyncio.wait_for(w.close(force=True), CLOSE_TIMEOUT)
    assert time.monotonic() - t0 < 1.0
    assert cancelled == [job.id]
    # still active, never completed or failed by the closing worker
    assert await q.get_job_state(job.id) == "active"
    raw = await client.hgetall(env.key("force", job.id))
    assert b"finishedOn" not in raw and b"failedReason" not in raw
    assert ev.of("completed") == [] and ev.of("failed") == []

    async def quick(job: Job) -> str:
        return "recovered"

    w2 = env.worker("force", quick, stalled_interval=80)
    ev2 = Events(w2)
    (rjob, result, *_), = await ev2.wait("completed")
    assert rjob.id == job.id and result == "recovered"
    assert [a[0] for a in ev2.of("stalled")] == [job.id]
    assert calls == 1


async def test_pause_and_resume_the_worker(env: Env) -> None:
    q = env.queue("wpause")
    processed: list[str] = []
    gate = asyncio.Event()

    async def processor(job: Job) -> str:
        processed.append(job.name)
        if job.name == "running":
            await gate.wait()
        return job.name

    w = env.worker("wpause", processor)
    ev = Events(w)
    await q.add("running", {})
    await ev.wait("active")
    pausing = asyncio.ensure_future(w.pause())
    await asyncio.sleep(0.05)
    assert not pausing.done()  # pause() waits for the running job
    assert w.is_paused()
    gate.set()
    await asyncio.wait_for(pausing, 5)
    assert ev.of("completed")[0][1] == "running"
    await q.add("while-paused", {})
    await asyncio.sleep(0.3)
    assert processed == ["running"]
    assert await q.get_job_state("2") == "waiting"
    w.resume()
    assert not w.is_paused()
    await ev.wait("completed", 2)
    assert processed == ["running", "while-paused"]


async def test_close_run_and_resume_guards_as_bullmq(env: Env) -> None:
    q = env.queue("guards")
    await q.add("a", {})
    w = env.worker("guards", ok_processor)
    ev = Events(w)
    closing: list[Any] = []
    w.on("closing", lambda msg: closing.append(msg))
    with pytest.raises(BullfastError, match="already running"):
        await w.run()
    await ev.wait("completed")
    await asyncio.gather(w.close(), w.close())  # two closes at once: one close
    assert closing == ["closing queue"] and ev.names().count("closed") == 1
    await w.close()
    await w.run()  # returns at once: closed
    assert not w.is_running() and await q.get_workers_count() == 0

    # resume() starts a worker that never ran (emitting 'resumed'), and may be awaited
    await q.add("b", {})
    idle = env.worker("guards", ok_processor, autorun=False)
    ev2 = Events(idle)
    resumed: list[Any] = []
    idle.on("resumed", lambda: resumed.append(1))
    await idle.resume()
    await ev2.wait("completed")
    assert resumed == [1] and idle.is_running()
    idle.resume()  # running and not paused: nothing
    assert resumed == [1]


async def test_close_from_a_listener_and_force_during_a_graceful_close(env: Env) -> None:
    """A listener may close its worker (close waited for that listener, forever); a forced
    close during a graceful one does not wait for a plain processor's thread."""
    q = env.queue("close-in")
    await q.add("a", {})
    w = env.worker("close-in", ok_processor)
    closed: list[int] = []
    w.on("closed", lambda: closed.append(1))

    async def closer(*_: Any) -> None:
        await w.close()

    w.on("completed", closer)
    await until(lambda: closed, 5, "the worker to be closed by its listener")

    # the same through wait_for and gather, which run close() in tasks of their own
    for how in ("wait_for", "gather"):
        await q.add("a", {})
        wx = env.worker("close-in", ok_processor)
        done: list[str] = []

        async def closer_x(*_: Any, wx: Worker = wx, how: str = how) -> None:
            if how == "wait_for":
                await asyncio.wait_for(wx.close(), 5)
            else:
                await asyncio.gather(wx.close(), asyncio.sleep(0))
            done.append(how)

        wx.on("completed", closer_x)
        await until(lambda: done, 3, f"a listener's close through {how}")

    started = threading.Event()

    def blocking(job: Job) -> str:
        started.set()
        time.sleep(1.5)
        return "late"

    await q.add("b", {})
    w2 = env.worker("close-in", blocking)
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
    graceful = asyncio.ensure_future(w2.close())
    await asyncio.sleep(0.05)
    t0 = time.monotonic()
    await asyncio.wait_for(w2.close(force=True), 5)
    assert time.monotonic() - t0 < 1.0  # not the thread's 1.5 s
    await graceful


def test_resume_outside_an_event_loop_does_not_start(redis_url: str, prefix: str) -> None:
    # (constructing a worker needs no event loop; starting one does)
    w = Worker("resume-out", ok_processor, connection=redis_url, prefix=prefix, autorun=False)
    resumed: list[int] = []
    w.on("resumed", lambda: resumed.append(1))
    w.resume()  # no loop: not started (it raised RuntimeError), but emitted, as asked
    assert resumed == [1] and not w.is_running() and not w.paused
    asyncio.run(w.close())


async def test_a_run_of_a_job_scheduler_is_run_and_reported_once(env: Env, client: Any) -> None:
    """bullfast does not schedule a (Node) job scheduler's next run as BullMQ's worker does: it
    runs the job and says so, once per scheduler, with NotSupportedError."""
    env.queue("sched")
    for millis in (1, 2):
        job_id = f"repeat:every5:{millis}"
        await client.hset(env.key("sched", job_id), mapping={
            "name": "tick", "data": "{}", "opts": "{}", "timestamp": 1, "delay": 0, "priority": 0, "rjk": "every5"})
        await client.lpush(env.key("sched", "wait"), job_id)
    w = env.worker("sched", ok_processor)
    ev = Events(w)
    await ev.wait("completed", 2)
    (err,), = ev.of("error")
    assert isinstance(err, NotSupportedError) and "every5" in str(err)


async def test_metrics_of_finished_jobs_as_bullmq_collects_them(env: Env, client: Any) -> None:
    """metrics={"maxDataPoints": n}: a count of finished jobs and per-minute points, as BullMQ's
    collectMetrics keeps them (Node's getMetrics reads what a bullfast worker wrote)."""
    q = env.queue("metrics")
    for i in range(3):
        await q.add("j", {"i": i})
    w = env.worker("metrics", ok_processor, metrics={"maxDataPoints": 10})
    ev = Events(w)
    await ev.wait("completed", 3)
    first = await q.get_metrics("completed")
    assert first["meta"]["count"] == 3 and first["meta"]["prevCount"] == 0 and first["data"] == []
    # three minutes later (moved back by hand): the count of the first minute, then two empty ones
    key = env.key("metrics", "metrics:completed")
    await client.hset(key, "prevTS", first["meta"]["prevTS"] - 180_000)
    await q.add("j", {"i": 3})
    await ev.wait("completed", 4)
    later = await q.get_metrics("completed")
    assert later["meta"]["count"] == 4 and later["meta"]["prevCount"] == 3
    assert later["data"] == [0, 0, 3] and later["count"] == 3
    assert (await q.getMetrics("completed", 0, 0))["data"] == [0]
    assert (await q.get_metrics("failed")) == {"meta": {"count": 0, "prevTS": 0, "prevCount": 0}, "data": [], "count": 0}
    with pytest.raises(InvalidOptionError):
        Worker("metrics", None, connection=env.url, prefix=env.prefix, autorun=False, metrics={"maxDataPoints": -1})
    # without the option, nothing is collected
    plain = env.queue("metrics-off")
    await plain.add("j", {})
    w2 = env.worker("metrics-off", ok_processor)
    await Events(w2).wait("completed")
    assert not await client.exists(env.key("metrics-off", "metrics:completed"))


async def test_a_duplicate_parked_by_keep_last_if_active_is_added_when_the_job_finishes(
    env: Env, client: Any
) -> None:
    """A Node producer's deduplication.keepLastIfActive parks the latest duplicate of a running
    job in 'dn:<id>' (protocol 4.9; the hash below is laid out as Node 6.7.0 writes it). When
    the job finishes, BullMQ's worker adds the parked one; bullfast's did not, and it was lost.
    (Compared with Node's worker on the same scenario: the same hash and events.)"""
    q = env.queue("keep-last")
    release = asyncio.Event()
    opts = '{"de":{"id":"d1","keepLastIfActive":true},"attempts":0}'
    await client.hset(env.key("keep-last", "1"), mapping={
        "name": "j", "data": '{"n":1}', "opts": opts, "timestamp": 1, "delay": 0, "priority": 0, "deid": "d1"})
    await client.set(env.key("keep-last", "de:d1"), "1")
    await client.set(env.key("keep-last", "id"), 2)
    await client.lpush(env.key("keep-last", "wait"), "1")
    seen: list[Any] = []

    async def processor(job: Job) -> Any:
        seen.append(job.data)
        if job.id == "1":
            # a duplicate added meanwhile, parked by a Node producer
            await client.hset(env.key("keep-last", "dn:d1"), mapping={
                "name": "j", "data": '{"n":2}', "opts": opts, "jid": "2"})
            await release.wait()
        return job.data["n"]

    w = env.worker("keep-last", processor)
    ev = Events(w)
    await ev.wait("active")
    release.set()
    await ev.wait("completed", 2)
    assert seen == [{"n": 1}, {"n": 2}]
    parked = await q.get_job("2")
    assert parked is not None and parked.returnvalue == 2 and parked.deduplication_id == "d1"
    assert not await client.exists(env.key("keep-last", "dn:d1"))
    assert int(await client.get(env.key("keep-last", "id"))) == 3  # BullMQ counts the id
    events = [(f[b"event"], f.get(b"jobId")) for _, f in await client.xrange(env.key("keep-last", "events"))]
    assert events.index((b"added", b"2")) < events.index((b"waiting", b"2")) < events.index((b"completed", b"1"))


async def test_keep_last_if_active_end_to_end(env: Env, client: Any) -> None:
    """bullfast's producer parks the latest duplicate of a running job (events and state as
    Node 6.7.0 leaves them on the same scenario), and its worker adds it when the job ends."""
    q = env.queue("klia")
    seen: list[Any] = []
    go = asyncio.Event()

    async def processor(job: Job) -> Any:
        seen.append(job.data["n"])
        if job.data["n"] == 1:
            await go.wait()
        return job.data["n"]

    w = env.worker("klia", processor)
    ev = Events(w)
    dedup = {"deduplication": {"id": "d1", "keep_last_if_active": True, "ttl": 60_000}}
    first = await q.add("j", {"n": 1}, dedup)
    await ev.wait("active")
    assert (await q.add("j", {"n": 2}, dedup)).id == first.id
    assert (await q.add("j", {"n": 3}, dedup)).id == first.id
    parked = await client.hgetall(env.key("klia", "dn:d1"))
    assert parked[b"data"] == b'{"n":3}' and parked[b"jid"] == b"3"
    assert await client.pttl(env.key("klia", "de:d1")) == -1  # no TTL with keepLastIfActive
    go.set()
    await ev.wait("completed", 2)
    assert seen == [1, 3]
    events = [(f[b"event"], f.get(b"jobId"), f.get(b"deduplicatedJobId"))
              for _, f in await client.xrange(env.key("klia", "events"))]
    assert [e for e in events if e[0] == b"deduplicated"] == [(b"deduplicated", b"1", b"2"), (b"deduplicated", b"1", b"3")]
    assert events.index((b"added", b"3", None)) < events.index((b"completed", b"1", None))
    assert not await client.exists(env.key("klia", "de:d1"))


async def test_drained_as_soon_as_a_fetch_finds_nothing(env: Env) -> None:
    """With jobs still running, 'drained' comes when a fetch finds the queue empty (it came
    only after the next wait for work, seconds later)."""
    q = env.queue("drained-now")
    release = asyncio.Event()

    async def slow(job: Job) -> str:
        await release.wait()
        return "ok"

    await q.add("a", {})
    w = env.worker("drained-now", slow, concurrency=2, drain_delay=5)
    ev = Events(w)
    await ev.wait("active")
    await ev.wait("drained", timeout=1.5)
    assert ev.of("completed") == []
    release.set()
    await ev.wait("completed")


async def test_worker_settings_refused_as_bullmq(env: Env) -> None:
    for kw in ({"stalled_interval": 0}, {"stalled_interval": -5}, {"drain_delay": 0}, {"max_stalled_count": -1},
               {"lock_duration": 0}, {"drain_delay": "5"}, {"stalled_interval": float("nan")}):
        with pytest.raises(InvalidOptionError):
            Worker("settings", None, connection=env.url, prefix=env.prefix, autorun=False, **kw)
    ok = env.worker("settings", None, autorun=False, max_stalled_count=0)
    assert ok.max_stalled_count == 0


async def test_ready_locks_renewed_and_extend_job_locks(env: Env, client: Any) -> None:
    q = env.queue("renew")
    job = await q.add("a", {})
    release = asyncio.Event()

    async def slow(job: Job) -> str:
        await release.wait()
        return "ok"

    w = env.worker("renew", slow, lock_duration=400)
    ev = Events(w)
    ready: list[Any] = []
    renewed: list[Any] = []
    w.on("ready", lambda: ready.append(1))
    w.on("locksRenewed", lambda info: renewed.append(info))
    await ev.wait("active")
    await until(lambda: renewed, 3, "a lock renewal")
    assert renewed[0] == {"count": 1, "jobIds": [job.id]} and ready == [1]
    (running,) = [a[0] for a in ev.of("active")]
    assert await w.extend_job_locks([job.id, "nope"], [running.token, "x"], 60_000) == ["nope"]
    assert await w.extendJobLocks([job.id], ["not-the-token"], 60_000) == [job.id]
    assert 50_000 < await client.pttl(env.key("renew", f"{job.id}:lock")) <= 60_000
    release.set()
    await ev.wait("completed")
    assert isinstance(Worker.RateLimitError(), RateLimitError)


@pytest.mark.private_redis  # CLIENT KILL TYPE normal drops every client of the server
async def test_ready_is_emitted_once_also_for_a_worker_that_fetches_by_hand(env: Env, client: Any) -> None:
    """Node emits 'ready' once a worker's connections are up, whether or not it runs (bullfast
    emitted it only from its run loop, and again on every reconnect of the blocking connection)."""
    manual = env.worker("readyq", None, autorun=False)
    ready: list[str] = []
    manual.on("ready", lambda: ready.append("manual"))
    await until(lambda: ready, 5, "the manual worker's ready")  # from its constructor, as Node's
    await manual.wait_until_ready()
    assert await manual.get_next_job("token", block=False) is None
    assert ready == ["manual"]

    async def processor(job: Job) -> str:
        return "ok"

    running = env.worker("readyq", processor, autorun=False, drain_delay=0.2)
    running.on("ready", lambda: ready.append("running"))
    running.on("error", lambda *_: None)
    running.start()
    await until(lambda: ready == ["manual", "running"], 5, "the running worker's ready")
    # the blocking connection dropped and made again: no second 'ready'
    await client.client_kill_filter(_type="normal", skipme=True)
    await env.queue("readyq").add("a", {})
    events = Events(running)
    await events.wait("completed")
    assert ready == ["manual", "running"]


async def test_pause_without_waiting_for_active_jobs(env: Env) -> None:
    q = env.queue("wpause2")
    gate = asyncio.Event()

    async def processor(job: Job) -> str:
        await gate.wait()
        return "ok"

    w = env.worker("wpause2", processor)
    ev = Events(w)
    await q.add("j", {})
    await ev.wait("active")
    await asyncio.wait_for(w.pause(True), 1)
    gate.set()
    await ev.wait("completed")
    w.resume()


async def test_paused_queue_is_not_processed_until_resumed(env: Env) -> None:
    q = env.queue("qpause")
    await q.pause()
    await q.add("j", {})
    w = env.worker("qpause", ok_processor)
    ev = Events(w)
    await asyncio.sleep(0.3)
    assert ev.of("active") == []
    await q.resume()
    await ev.wait("completed")


async def test_closing_an_idle_worker_is_quick(env: Env) -> None:
    w = env.worker("idle", ok_processor, drain_delay=5)
    ev = Events(w)
    await ev.wait("drained")
    t0 = time.monotonic()
    await close(w)
    assert time.monotonic() - t0 < 1.0


# ------------------------------------------------------------------------------------------
# a lost Redis connection
# ------------------------------------------------------------------------------------------


async def blocked_clients(client: Any) -> int:
    return sum(1 for c in await client.client_list() if c.get("cmd") in ("bzpopmin", "bzpopmax"))


@pytest.mark.private_redis  # CLIENT KILL TYPE normal drops every client of the server
async def test_worker_survives_client_kill_while_waiting(env: Env, client: Any) -> None:
    q = env.queue("kill")
    w = env.worker("kill", ok_processor, drain_delay=1)
    ev = Events(w)
    await ev.wait("drained")
    await until(lambda: blocked_clients(client), 5, "the worker to block on the marker")
    await client.execute_command("CLIENT", "KILL", "TYPE", "normal")
    # the test's own client was killed too; redis-py reconnects
    await until(lambda: client.ping(), 5, "the test client to reconnect")
    job = await q.add("after-kill", {})
    (cjob, result, *_), = await ev.wait("completed", timeout=10)
    assert cjob.id == job.id and result == {"id": job.id}
    assert w.is_running()
    # and it keeps going
    await q.add("again", {})
    await ev.wait("completed", 2, timeout=10)


@pytest.mark.private_redis  # CLIENT KILL TYPE normal drops every client of the server
async def test_worker_survives_client_kill_while_processing(env: Env, client: Any) -> None:
    q = env.queue("kill2")
    gate = asyncio.Event()

    async def processor(job: Job) -> str:
        await gate.wait()
        return job.name

    w = env.worker("kill2", processor, concurrency=2)
    ev = Events(w)
    await q.add("a", {})
    await ev.wait("active")
    await client.execute_command("CLIENT", "KILL", "TYPE", "normal")
    await until(lambda: client.ping(), 5, "the test client to reconnect")
    gate.set()
    await ev.wait("completed", timeout=10)
    q2 = env.queue("kill2")  # (a fresh producer: see test_queue_add_after_client_kill)
    await q2.add("b", {})
    await ev.wait("completed", 2, timeout=10)
    assert sorted(a[1] for a in ev.of("completed")) == ["a", "b"]
    assert await q2.get_job_counts("completed") == {"completed": 2}


@pytest.mark.private_redis  # CLIENT KILL TYPE normal drops every client of the server
async def test_queue_add_after_client_kill(env: Env, client: Any) -> None:
    q = env.queue("kill3")
    await q.add("before", {})
    await client.execute_command("CLIENT", "KILL", "TYPE", "normal")
    await until(lambda: client.ping(), 5, "the test client to reconnect")
    job = await q.add("after", {})
    assert await q.get_job_state(job.id) == "waiting"
    # getters that use a pipeline fail the same way
    assert await q.get_job_counts("waiting") == {"waiting": 2}


# ------------------------------------------------------------------------------------------
# more: parents with delay / priority, global limits, manual fetching, logs, drained
# ------------------------------------------------------------------------------------------


async def test_released_parent_honours_its_delay_and_priority(env: Env) -> None:
    fp = env.flow()
    delayed = await fp.add({"name": "delayed-parent", "queue_name": "rel2-p", "opts": {"delay": 200},
                            "children": [leaf("c1", "rel2-c", 1)]})
    prio = await fp.add({"name": "prio-parent", "queue_name": "rel2-q", "opts": {"priority": 3},
                         "children": [leaf("c2", "rel2-c", 2)]})
    times: dict[str, float] = {}
    done_children: dict[str, float] = {}

    async def child(job: Job) -> int:
        return 1

    wc = env.worker("rel2-c", child)
    evc = Events(wc)
    await evc.wait("completed", 2)
    for args in evc.of("completed"):
        done_children[args[0].id] = args[0].finished_on
    # a parent with a delay goes to delayed when released, counted from the release (8.2)
    await wait_state(delayed.job.queue, delayed.job.id, "delayed")
    # a parent with a priority goes to prioritized
    await wait_state(prio.job.queue, prio.job.id, "prioritized")
    wp = env.worker("rel2-p", recorder([], times))
    wq = env.worker("rel2-q", recorder([], times))
    evp, evq = Events(wp), Events(wq)
    await evp.wait("completed")
    await evq.wait("completed")
    released_at = done_children[delayed.children[0].job.id]
    assert times["delayed-parent"] - released_at >= 195


async def test_global_concurrency_from_meta_is_respected(env: Env, client: Any) -> None:
    q = env.queue("gconc")
    await client.hset(env.key("gconc", "meta"), "concurrency", 2)
    await q.add_bulk([{"name": "j", "data": {}} for _ in range(10)])
    running = 0
    peak = 0

    async def processor(job: Job) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1

    w1 = env.worker("gconc", processor, concurrency=5)
    w2 = env.worker("gconc", processor, concurrency=5)
    e1, e2 = Events(w1), Events(w2)
    await until(lambda: len(e1.of("completed")) + len(e2.of("completed")) >= 10, 10, "all jobs")
    assert peak <= 2


async def test_global_rate_limit_from_meta_is_respected(env: Env, client: Any) -> None:
    q = env.queue("grate")
    await client.hset(env.key("grate", "meta"), mapping={"max": 1, "duration": 150})
    await q.add_bulk([{"name": "j", "data": {}} for _ in range(3)])
    starts: list[int] = []

    async def processor(job: Job) -> None:
        starts.append(now_ms())

    w = env.worker("grate", processor, concurrency=3)
    ev = Events(w)
    await ev.wait("completed", 3, timeout=10)
    # (limiter windows are measured by Redis; processor start times lag a little behind)
    assert starts[1] - starts[0] >= 110 and starts[2] - starts[1] >= 110, starts


async def test_get_next_job_blocks_until_a_job_arrives(env: Env) -> None:
    q = env.queue("manual")
    w = env.worker("manual", None, autorun=False, drain_delay=2)
    assert await w.get_next_job("t0", block=False) is None

    async def add_later() -> None:
        await asyncio.sleep(0.1)
        await q.add("late", {"x": 1})

    adder = asyncio.ensure_future(add_later())
    t0 = time.monotonic()
    job = await w.get_next_job("t1")
    await adder
    assert job is not None and job.name == "late" and job.data == {"x": 1}
    assert time.monotonic() - t0 < 1.5
    await job.move_to_completed({"ok": True}, "t1")
    assert (await q.get_job(job.id)).returnvalue == {"ok": True}


async def test_manual_move_to_failed_retries_per_options(env: Env) -> None:
    q = env.queue("manual-fail")
    job = await q.add("j", {}, attempts=2)
    w = env.worker("manual-fail", None, autorun=False)
    taken = await w.get_next_job("t1", block=False)
    await taken.move_to_failed(RuntimeError("first"), "t1")
    assert await q.get_job_state(job.id) == "waiting"
    taken = await w.get_next_job("t2", block=False)
    assert taken.attempts_made == 1
    await taken.move_to_failed(RuntimeError("second"), "t2")
    assert await q.get_job_state(job.id) == "failed"
    assert (await q.get_job(job.id)).failed_reason == "second"


async def test_manual_endings_fetch_next_and_finished_on(env: Env, client: Any) -> None:
    """move_to_completed / move_to_failed with fetch_next then take the next job,
    locked with the same token (BullMQ's fetchNext), and set finished_on."""
    q = env.queue("manual-next")
    first = await q.add("a", {})
    second = await q.add("b", {})
    w = env.worker("manual-next", None, autorun=False)
    taken = await w.get_next_job("tok", block=False)
    assert taken is not None and taken.id == first.id
    following = await taken.move_to_completed("done", "tok", fetch_next=True)
    assert taken.finished_on and taken.attempts_made == 1
    assert following is not None and following.id == second.id and following.token == "tok"
    assert following.attempts_started == 1 and following.processed_on
    assert await client.get(env.key("manual-next", f"{second.id}:lock")) == b"tok"
    assert await q.get_job_state(second.id) == "active"
    assert await following.move_to_failed(RuntimeError("no"), "tok", fetch_next=True) is None
    assert following.finished_on and await q.get_job_state(second.id) == "failed"
    # an end refused (another token) takes no next job: it stays waiting, as in BullMQ
    third = await q.add("c", {})
    fourth = await q.add("d", {})
    taken = await w.get_next_job("mine", block=False)
    assert taken is not None and taken.id == third.id
    with pytest.raises(LockMismatchError):
        await taken.move_to_completed("x", "not-mine", fetch_next=True)
    assert await q.get_job_state(fourth.id) == "waiting"
    await q.drain()
    # a retry now (attempts left, no backoff) takes no next job, as BullMQ's retryJob
    retried = await q.add("r", {}, attempts=2)
    waiting = await q.add("w", {})
    taken = await w.get_next_job("tok2", block=False)
    assert taken is not None and taken.id == retried.id
    assert await taken.move_to_failed(RuntimeError("again"), "tok2", fetch_next=True) is None
    assert await q.get_job_state(retried.id) == "waiting" and await q.get_job_state(waiting.id) == "waiting"


async def test_get_next_job_follows_the_worker_state_and_emits(env: Env) -> None:
    """As BullMQ: None while the worker is paused or closed; 'active' for a job taken,
    'drained' when none is found."""
    q = env.queue("manual-state")
    job = await q.add("a", {})
    w = env.worker("manual-state", None, autorun=False)
    ev = Events(w)
    await w.pause()
    assert await w.get_next_job("tok", block=False) is None
    await w.resume()
    taken = await w.get_next_job("tok", block=False)
    assert taken is not None and [a[0].id for a in ev.of("active")] == [job.id]
    assert await w.get_next_job("tok2", block=False) is None
    assert len(ev.of("drained")) == 1
    await q.add("b", {})
    await w.close()
    assert await w.get_next_job("tok3", block=False) is None
    assert await q.get_job_counts("waiting") == {"waiting": 1}


async def test_job_log_inside_processor(env: Env) -> None:
    q = env.queue("logs")
    job = await q.add("j", {}, keep_logs=2)

    async def processor(job: Job) -> int:
        for i in range(3):
            await job.log(f"line {i}")
        return 1

    w = env.worker("logs", processor)
    ev = Events(w)
    await ev.wait("completed")
    stored = await q.get_job(job.id)
    assert (await stored.get_logs()) == {"logs": ["line 1", "line 2"], "count": 2}


async def test_sync_processor_failure(env: Env) -> None:
    q = env.queue("sync-fail")
    job = await q.add("j", {}, attempts=2)

    def processor(job: Job) -> None:
        raise ValueError(f"sync failure {job.attempts_made}")

    w = env.worker("sync-fail", processor)
    ev = Events(w)
    await ev.wait("failed", 2)
    await wait_state(q, job.id, "failed")
    stored = await q.get_job(job.id)
    assert stored.failed_reason == "sync failure 1"
    assert "ValueError: sync failure 1" in stored.stacktrace[-1]


async def test_drained_is_emitted_again_after_new_work(env: Env) -> None:
    q = env.queue("drained")
    w = env.worker("drained", ok_processor)
    ev = Events(w)
    await ev.wait("drained")
    await q.add("j", {})
    await ev.wait("completed")
    await ev.wait("drained", 2)
    names = [n for n in ev.names() if n in ("drained", "completed")]
    assert names[:3] == ["drained", "completed", "drained"]


async def test_processor_class_instances_and_bound_methods(env: Env) -> None:
    q = env.queue("callables")
    await q.add_bulk([{"name": "j", "data": {"i": i}} for i in range(2)])

    class Handler:
        def __init__(self) -> None:
            self.seen: list[tuple[str, str]] = []

        async def __call__(self, job: Job, token: str) -> str:
            self.seen.append((job.id, token))
            return "call"

        async def method(self, job: Job) -> str:
            return "method"

    h = Handler()
    w = env.worker("callables", h)
    ev = Events(w)
    await ev.wait("completed", 2)
    assert [s[0] for s in h.seen] == ["1", "2"] and all(s[1] for s in h.seen)
    await close(w)
    await q.add("j", {"i": 9})
    w2 = env.worker("callables", h.method)
    ev2 = Events(w2)
    (job, result, *_), = await ev2.wait("completed")
    assert result == "method"


async def test_a_worker_closed_as_it_starts_closes_at_once(redis_url: str, prefix: str) -> None:
    """close() in the first milliseconds, while the worker connects and runs its first stalled
    check: a cancellation redis-py swallows there must not leave the check's loop asleep."""
    for k in range(12):
        worker = Worker("starting", lambda job: None, connection=redis_url, prefix=prefix)
        await asyncio.sleep(0.0005 * k)
        started = time.monotonic()
        await asyncio.wait_for(worker.close(), 10)
        assert time.monotonic() - started < 3, k


@pytest.mark.parametrize("kind", ["worker", "queue events"])
def test_made_outside_an_event_loop_says_what_to_do(kind: str) -> None:
    """asyncio's own words were 'no running event loop'."""
    with pytest.raises(EventLoopError, match="needs a running event loop.*bullfast.sync"):
        if kind == "worker":
            Worker("outside", lambda job: None, connection="redis://127.0.0.1:1")
        else:
            QueueEvents("outside", connection="redis://127.0.0.1:1")


async def test_a_cancelled_run_closes_the_worker_and_records_what_ends(env: Env) -> None:
    """Cancelling run() (Ctrl-C in bullfast.sync's blocking run()) cancelled the worker's loop:
    the jobs that then finished stayed active, to run a second time; now the worker closes as
    close() does, and a close() after it waits for that close."""
    q = env.queue("cancel-run")
    await q.add_bulk([{"name": "j", "data": {}} for _ in range(6)])

    async def slow(job: Job) -> str:
        await asyncio.sleep(0.5)
        return "done"

    w = env.worker("cancel-run", slow, concurrency=3, autorun=False)
    running = asyncio.ensure_future(w.run())
    await until(lambda: q.get_job_counts("active"), what="jobs running")
    await asyncio.sleep(0.1)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    await asyncio.wait_for(w.close(), 10)
    assert await q.get_job_counts("active", "completed", "wait") == {"active": 0, "completed": 3, "wait": 3}


async def test_a_workers_retention_options_are_checked_when_it_is_made(env: Env) -> None:
    """A bad worker-level remove_on_complete / remove_on_fail is refused at once, not found
    when every job ends; a fractional age is kept (BullMQ's {age: 0.9} keeps a job 0.9 s)."""
    from bullfast.errors import InvalidOptionError

    async def ok(job: Any) -> Any:
        return 1

    for bad in ({"age": -1}, {"age": float("nan")}, {"cnt": 1}, "yes"):
        with pytest.raises(InvalidOptionError):
            env.worker("keep-bad", ok, remove_on_complete=bad)
        with pytest.raises(InvalidOptionError):
            env.worker("keep-bad", ok, remove_on_fail=bad)
    q = env.queue("keep-frac")
    job = await q.add("j", {})
    w = env.worker("keep-frac", ok, remove_on_complete={"age": 0.9})
    assert w.remove_on_complete == {"age": 0.9}
    await Events(w).wait("completed")
    assert await q.get_job_state(job.id) == "completed"  # kept: finished less than 0.9 s ago


@pytest.mark.parametrize("remove_on_complete", [False, True])
async def test_ends_resent_after_an_unknown_outcome_that_was_applied_are_not_errors(
    env: Env, monkeypatch: pytest.MonkeyPatch, remove_on_complete: bool
) -> None:
    """A finish_jobs call is applied but its reply lost (OutcomeUnknownError, as after a stall
    of a few seconds): the worker sends the same ends again, which Redis refuses (the locks
    are gone). Those jobs ended as asked: announced once as completed, not reported as lost
    locks (a review counted 167 false LockMissingErrors in one run). A job removed as it ended
    proves nothing (another worker may have run it again after the stalled check): each is
    reported as missing, as before, and never announced as completed."""
    from bullfast import worker as worker_module
    from bullfast.errors import OutcomeUnknownError

    real = worker_module.run_entries
    lost: list[int] = []

    async def run_entries(redis: Any, prefix: str, entries: list[Any], *args: Any) -> Any:
        reply = await real(redis, prefix, entries, *args)
        if entries and not lost:
            lost.append(len(entries))
            raise OutcomeUnknownError("the reply was lost")
        return reply

    monkeypatch.setattr(worker_module, "run_entries", run_entries)
    q = env.queue("resent")
    jobs = await q.add_bulk([{"name": "j", "data": {"i": i}, "opts": {"removeOnComplete": remove_on_complete}}
                             for i in range(20)])
    # (the jobs the lost call took, unknown to the worker, come back by the stalled check)
    w = env.worker("resent", lambda job: job.data["i"], concurrency=5, lock_duration=1000, stalled_interval=300)
    events = Events(w)
    await until(lambda: len(events.of("completed")) + len(events.of("error")) >= 21, 10, "every job settled")
    await asyncio.sleep(0.2)
    assert lost and lost[0] > 0
    errors = [args[0] for args in events.of("error")]
    completed = sorted(args[0].id for args in events.of("completed"))
    if remove_on_complete:
        missing = [e for e in errors if isinstance(e, JobNotFoundError)]
        assert len(missing) == lost[0] and len(errors) == lost[0] + 1, errors
        assert len(completed) == 20 - lost[0] and len(set(completed)) == len(completed)
    else:
        assert [type(e) for e in errors] == [OutcomeUnknownError], errors
        assert completed == sorted(j.id for j in jobs)
    counts = await q.get_job_counts("completed", "active", "failed")
    assert counts == {"completed": 0 if remove_on_complete else 20, "active": 0, "failed": 0}


async def test_a_refused_completion_is_failed_before_the_next_job_is_taken(env: Env) -> None:
    """Concurrency 1: a parent's completion refused (a child still pending) keeps its slot
    until the parent is failed; only then is the next job taken, as in BullMQ (the next job
    was taken in the call that sent the completion: two active at once, in another order than
    Node's; a differential review against Node found it changing what remove_on_complete
    trimmed)."""
    fp = env.flow()
    node = await fp.add({"name": "p", "queue_name": "rf-p", "children": [
        leaf("bad", "rf-c", 1, continue_parent_on_failure=True),
        leaf("pending", "rf-other", 2),
    ]})
    env.worker("rf-c", fail_processor)
    await wait_state(node.job.queue, node.job.id, "waiting")
    after = await env.queue("rf-p").add("next", {})
    running: list[str] = []
    most = 0

    async def processor(job: Job) -> str:
        nonlocal most
        running.append(str(job.id))
        most = max(most, len(running))
        await asyncio.sleep(0.05)
        running.remove(str(job.id))
        return "ok"

    w = env.worker("rf-p", processor, concurrency=1)
    ev = Events(w)
    await ev.wait("completed")
    order = [(n, str(args[0].id) if args else "") for n, args in ev.log if n in ("active", "failed", "completed", "drained")]
    # (and no 'drained' while the next job waited: the fetch skipped for the refused
    # completion's slot is no sign of an empty queue)
    assert order[:4] == [("active", node.job.id), ("failed", node.job.id), ("active", after.id), ("completed", after.id)], order
    assert most == 1
