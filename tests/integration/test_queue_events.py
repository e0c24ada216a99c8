"""QueueEvents on a private Redis: the events bullfast's producers and workers write to a
queue's stream, as listeners (``on(event)``, ``on("*")``) and as typed ``async for``
iteration; replay from a given stream id; ``Job.wait_until_finished``.

Every QueueEvents, queue, flow producer and worker is closed inside its test.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bullfast import FlowProducer, Queue, QueueEvent, QueueEvents, Worker
from bullfast.embedded import RedisServer, free_port
from bullfast.errors import (
    BullfastError,
    InvalidOptionError,
    JobFailedError,
    JobNotFoundError,
    RedisUnavailableError,
)

STREAM_ID = re.compile(r"^\d+-\d+$")
FAST = {"drain_delay": 0.2}


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


def stream_order(a: str, b: str) -> bool:
    """a < b as stream ids."""
    return tuple(map(int, a.split("-"))) < tuple(map(int, b.split("-")))


class Recorder:
    """Listeners for a set of events: ``calls[event]`` is a list of ``(args, event_id)``."""

    def __init__(self, events: QueueEvents, names: list[str]) -> None:
        self.calls: dict[str, list[tuple[dict[str, Any], str]]] = {n: [] for n in names}
        for name in names:
            events.on(name, self._listener(name))

    def _listener(self, name: str) -> Callable[..., None]:
        def listener(*payload: Any) -> None:
            # (args, event_id); 'drained' may carry the id alone, as in bullmq (see
            # test_bullmq_compat.py::test_queue_events_drained_listener_gets_the_event_id)
            args, event_id = payload if len(payload) == 2 else ({}, payload[0])
            self.calls[name].append((args, event_id))

        return listener

    def of(self, name: str, job_id: str | None = None) -> list[dict[str, Any]]:
        return [a for a, _ in self.calls[name] if job_id is None or a.get("jobId") == job_id]


@pytest.fixture
async def closers() -> AsyncIterator[list[Any]]:
    """Things to close at the end of the test (workers first, then the rest)."""
    items: list[Any] = []
    yield items
    for item in [i for i in items if isinstance(i, Worker)] + [i for i in items if not isinstance(i, Worker)]:
        await item.close()


# ------------------------------------------------------------------------------------------
# the events of a job's life, as listeners see them
# ------------------------------------------------------------------------------------------

LIFECYCLE = [
    "added", "waiting", "active", "completed", "failed", "progress", "delayed",
    "waiting-children", "removed", "drained",
]


async def test_lifecycle_events_reach_listeners_decoded(
    redis_url: str, prefix: str, closers: list[Any]
) -> None:
    events = QueueEvents("ev", connection=redis_url, prefix=prefix)
    closers.append(events)
    rec = Recorder(events, LIFECYCLE)
    await events.wait_until_ready()

    q = Queue("ev", connection=redis_url, prefix=prefix)
    flows = FlowProducer(connection=redis_url, prefix=prefix)
    closers += [q, flows]

    ok = await q.add("ok", {"n": 2})
    bad = await q.add("bad", {"n": 0})
    later = await q.add("later", {}, {"delay": 60_000})
    await q.remove(later.id)
    tree = await flows.add(
        {"name": "parent", "queue_name": "ev", "children": [{"name": "kid", "queue_name": "ev-other"}]}
    )
    parent_id = tree.job.id

    async def process(job: Any) -> Any:
        if job.name == "bad":
            raise ValueError("bad input")
        await job.update_progress({"pct": 50, "stage": "half"})
        return {"double": job.data["n"] * 2, "items": [1, "x", None], "ok": True}

    closers.append(Worker("ev", process, connection=redis_url, prefix=prefix, **FAST))
    await until(lambda: rec.calls["drained"], what="drained")

    assert rec.of("added", ok.id) == [{"jobId": ok.id, "name": "ok"}]
    assert rec.of("added", parent_id) == [{"jobId": parent_id, "name": "parent"}]
    assert {"jobId": ok.id} in rec.of("waiting", ok.id)
    assert rec.of("active", ok.id) == [{"jobId": ok.id, "prev": "waiting"}]
    # progress data and return values arrive JSON-decoded
    assert rec.of("progress", ok.id) == [{"jobId": ok.id, "data": {"pct": 50, "stage": "half"}}]
    assert rec.of("completed", ok.id) == [
        {"jobId": ok.id, "returnvalue": {"double": 4, "items": [1, "x", None], "ok": True}, "prev": "active"}
    ]
    assert rec.of("failed", bad.id) == [{"jobId": bad.id, "failedReason": "bad input", "prev": "active"}]
    assert rec.of("completed", bad.id) == []
    # delayed: the due time, as a number (timestamp + delay)
    (delayed,) = rec.of("delayed", later.id)
    assert isinstance(delayed["delay"], int)
    assert delayed["delay"] == later.timestamp + 60_000
    assert rec.of("removed", later.id) == [{"jobId": later.id, "prev": "delayed"}]
    assert rec.of("waiting-children", parent_id) == [{"jobId": parent_id}]
    assert rec.of("waiting", parent_id) == []

    # every listener got the entry's stream id; ids grow with the order of events
    ids = [event_id for calls in rec.calls.values() for _, event_id in calls]
    assert all(STREAM_ID.match(i) for i in ids), ids
    (added_ok,) = [i for a, i in rec.calls["added"] if a["jobId"] == ok.id]
    (active_ok,) = [i for a, i in rec.calls["active"] if a["jobId"] == ok.id]
    (completed_ok,) = [i for a, i in rec.calls["completed"] if a["jobId"] == ok.id]
    assert stream_order(added_ok, active_ok) and stream_order(active_ok, completed_ok)
    # drained comes once the queue is empty: after both jobs finished
    (_, drained_id), *_ = rec.calls["drained"]
    (_, failed_id), = rec.calls["failed"]
    assert stream_order(completed_ok, drained_id) and stream_order(failed_id, drained_id)


async def test_fields_are_decoded_as_bullmq_queue_events_does(
    redis_url: str, prefix: str, closers: list[Any]
) -> None:
    """Only progress data, a completed returnvalue and a delayed due time are decoded, as in
    BullMQ's QueueEvents; other fields (attemptsMade, count, ...) stay text."""
    q = Queue("evf", connection=redis_url, prefix=prefix)
    closers.append(q)
    entries = [
        {"event": "retries-exhausted", "jobId": "7", "attemptsMade": "2"},
        {"event": "cleaned", "count": "3"},
        {"event": "delayed", "jobId": "8", "delay": "1700000000000"},
        {"event": "progress", "jobId": "8", "data": '{"pct": 5}'},
        {"event": "completed", "jobId": "8", "returnvalue": "[1, null]", "prev": "active"},
        {"event": "failed", "jobId": "9", "failedReason": "42", "prev": "active"},
        {"event": "duplicated", "jobId": "9", "data": "{}"},
        {"event": "delayed", "jobId": "10", "delay": "1796628961411.5"},  # a custom backoff's
    ]
    for entry in entries:
        await q._redis.commands.xadd(q.key("events"), entry)
    events = QueueEvents("evf", connection=redis_url, prefix=prefix, last_event_id="0-0")
    closers.append(events)
    seen: list[QueueEvent] = []
    events.on("*", seen.append)
    await until(lambda: len(seen) == len(entries), what="all entries")
    assert [e.args for e in seen] == [
        {"jobId": "7", "attemptsMade": "2"},
        {"count": "3"},
        {"jobId": "8", "delay": 1700000000000},
        {"jobId": "8", "data": {"pct": 5}},
        {"jobId": "8", "returnvalue": [1, None], "prev": "active"},
        {"jobId": "9", "failedReason": "42", "prev": "active"},
        {"jobId": "9", "data": "{}"},
        {"jobId": "10", "delay": 1796628961411.5},
    ]


async def test_star_listener_sees_every_entry_of_the_stream_in_order(
    redis_url: str, prefix: str, client: Any, closers: list[Any]
) -> None:
    async with QueueEvents("star", connection=redis_url, prefix=prefix) as events:
        seen: list[QueueEvent] = []
        events.on("*", seen.append)
        q = Queue("star", connection=redis_url, prefix=prefix)
        closers.append(q)
        jobs = await q.add_bulk([{"name": "j", "data": {"i": i}} for i in range(5)])
        await q.add("d", {}, {"delay": 50})

        async def process(job: Any) -> Any:
            await job.update_progress(job.data.get("i", -1))
            return job.data.get("i", -1) * 10

        closers.append(Worker("star", process, connection=redis_url, prefix=prefix, concurrency=3, **FAST))
        await until(lambda: sum(e.event == "completed" for e in seen) == 6, what="6 completed events")
        await until(lambda: any(e.event == "drained" for e in seen), what="drained")
        await asyncio.sleep(0.05)

        raw = await client.xrange(f"{prefix}:star:events")
        assert [e.id for e in seen] == [i.decode() for i, _ in raw]
        assert [e.event for e in seen] == [f[b"event"].decode() for _, f in raw]
        assert all(isinstance(e, QueueEvent) for e in seen)
        done = {e.job_id: e.returnvalue for e in seen if e.event == "completed"}
        assert done == {**{j.id: int(j.data["i"]) * 10 for j in jobs}, "6": -10}
        progress = [(e.job_id, e.args["data"]) for e in seen if e.event == "progress"]
        assert sorted(progress) == sorted([(j.id, j.data["i"]) for j in jobs] + [("6", -1)])


# ------------------------------------------------------------------------------------------
# async for: typed events
# ------------------------------------------------------------------------------------------


async def test_async_for_yields_typed_events_until_closed(
    redis_url: str, prefix: str, closers: list[Any]
) -> None:
    events = QueueEvents("it", connection=redis_url, prefix=prefix)
    await events.wait_until_ready()
    collected: list[QueueEvent] = []

    async def consume() -> str:
        async for event in events:
            collected.append(event)
        return "ended"

    consumer = asyncio.ensure_future(consume())
    q = Queue("it", connection=redis_url, prefix=prefix)
    closers.append(q)
    good = await q.add("good", {"v": [1, 2]})
    bad = await q.add("bad", {})

    async def process(job: Any) -> Any:
        if job.name == "bad":
            raise RuntimeError("it broke")
        return {"got": job.data["v"]}

    closers.append(Worker("it", process, connection=redis_url, prefix=prefix, **FAST))
    await until(lambda: any(e.event == "failed" for e in collected), what="failed event")

    (completed,) = [e for e in collected if e.event == "completed"]
    assert isinstance(completed, QueueEvent)
    assert STREAM_ID.match(completed.id)
    assert completed.job_id == good.id
    assert completed.returnvalue == {"got": [1, 2]}
    assert completed.prev == "active"
    assert completed.failed_reason is None
    (failed,) = [e for e in collected if e.event == "failed"]
    assert (failed.job_id, failed.failed_reason, failed.returnvalue) == (bad.id, "it broke", None)
    (added_good,) = [e for e in collected if e.event == "added" and e.job_id == good.id]
    assert added_good.args == {"jobId": good.id, "name": "good"} and added_good.prev is None
    assert [e.event for e in collected if e.job_id == good.id] == ["added", "waiting", "active", "completed"]

    # closing ends the iteration (the loop returns by itself)
    await events.close()
    assert await asyncio.wait_for(consumer, 2) == "ended"


async def test_listeners_and_iteration_see_the_same_events(
    redis_url: str, prefix: str, closers: list[Any]
) -> None:
    async with QueueEvents("both", connection=redis_url, prefix=prefix) as events:
        heard: list[tuple[str, str]] = []
        events.on("added", lambda args, event_id: heard.append((args["jobId"], event_id)))

        async def first_three_added() -> list[tuple[str, str]]:
            iterated: list[tuple[str, str]] = []
            async for event in events:
                if event.event == "added":
                    iterated.append((event.job_id or "", event.id))
                    if len(iterated) == 3:
                        break
            return iterated

        iteration = asyncio.ensure_future(first_three_added())
        await asyncio.sleep(0)  # the iteration has begun
        q = Queue("both", connection=redis_url, prefix=prefix)
        closers.append(q)
        for i in range(3):
            await q.add("x", {"i": i})
        iterated = await asyncio.wait_for(iteration, 5)
        assert iterated == heard
        assert [job_id for job_id, _ in iterated] == ["1", "2", "3"]


async def test_async_for_yields_events_read_before_iteration_began(
    redis_url: str, prefix: str, closers: list[Any]
) -> None:
    q = Queue("early", connection=redis_url, prefix=prefix)
    closers.append(q)
    for i in range(3):
        await q.add("old", {"i": i})
    async with QueueEvents("early", connection=redis_url, prefix=prefix, last_event_id="0") as events:
        await asyncio.sleep(0.2)  # the reader has read the 6 replayed entries by now

        async def first_six() -> list[str]:
            got: list[str] = []
            async for event in events:
                got.append(event.event)
                if len(got) == 6:
                    break
            return got

        got = await asyncio.wait_for(first_six(), 1)
        assert got == ["added", "waiting"] * 3


# ------------------------------------------------------------------------------------------
# where reading starts
# ------------------------------------------------------------------------------------------


async def test_last_event_id_replays_the_stream_from_there(
    redis_url: str, prefix: str, client: Any, closers: list[Any]
) -> None:
    q = Queue("rp", connection=redis_url, prefix=prefix)
    closers.append(q)
    for i in range(3):
        await q.add("old", {"i": i})
    raw = [(i.decode(), f[b"event"].decode()) for i, f in await client.xrange(f"{prefix}:rp:events")]
    assert [e for _, e in raw] == ["added", "waiting"] * 3

    # from the start of the stream: everything, in order
    async with QueueEvents("rp", connection=redis_url, prefix=prefix, last_event_id="0") as everything:
        seen: list[QueueEvent] = []
        everything.on("*", seen.append)
        await until(lambda: len(seen) == 6, what="6 replayed events")
        assert [(e.id, e.event) for e in seen] == raw

    # from a given id (bullmq's option name): only what came after it
    after = raw[1][0]
    async with QueueEvents("rp", {"connection": redis_url, "prefix": prefix, "lastEventId": after}) as later:
        added: list[str] = []
        later.on("added", lambda args, event_id: added.append(args["jobId"]))
        got: list[str] = []
        later.on("*", lambda event: got.append(event.id))
        await until(lambda: len(got) == 4, what="4 replayed events")
        assert got == [i for i, _ in raw[2:]]
        assert added == ["2", "3"]

    # the default ("$"): only events written after it started reading
    async with QueueEvents("rp", connection=redis_url, prefix=prefix) as fresh:
        new: list[QueueEvent] = []
        fresh.on("*", new.append)
        await asyncio.sleep(0.1)
        assert new == []
        job = await q.add("new", {})
        await until(lambda: len(new) == 2, what="events of the new job")
        assert [(e.event, e.job_id) for e in new] == [("added", job.id), ("waiting", job.id)]


async def test_autorun_false_reads_nothing_until_started(redis_url: str, prefix: str, closers: list[Any]) -> None:
    q = Queue("ar", connection=redis_url, prefix=prefix)
    closers.append(q)
    events = QueueEvents("ar", connection=redis_url, prefix=prefix, autorun=False, last_event_id="0")
    closers.append(events)
    seen: list[QueueEvent] = []
    events.on("*", seen.append)
    await q.add("a", {})
    await asyncio.sleep(0.1)
    assert seen == []
    events.start()
    await until(lambda: len(seen) == 2, what="events after start()")
    assert [e.event for e in seen] == ["added", "waiting"]


async def test_run_reads_until_close_and_refuses_a_second_run(redis_url: str, prefix: str, closers: list[Any]) -> None:
    """As BullMQ's run(): it returns once close() is called (it raised CancelledError, so
    ``gather(worker.run(), events.run())`` ended in a traceback), and a QueueEvents already
    reading refuses to run again."""
    events = QueueEvents("run", connection=redis_url, prefix=prefix, autorun=False)
    closers.append(events)
    running = asyncio.ensure_future(events.run())
    await until(lambda: events.running, what="the reader")
    with pytest.raises(BullfastError, match="Queue Events is already running."):
        await events.run()
    await events.close()
    assert await asyncio.wait_for(running, 5) is None
    await events.run()  # after close: returns at once
    autorun = QueueEvents("run", connection=redis_url, prefix=prefix)
    closers.append(autorun)
    with pytest.raises(BullfastError, match="already running"):
        await autorun.run()


async def test_a_raising_listener_is_reported_as_an_error_event(
    redis_url: str, prefix: str, closers: list[Any]
) -> None:
    """As BullMQ's emit: a listener that raises becomes an 'error' event, and reading goes on."""
    q = Queue("boom", connection=redis_url, prefix=prefix)
    closers.append(q)
    events = QueueEvents("boom", connection=redis_url, prefix=prefix, last_event_id="0")
    closers.append(events)
    errors: list[BaseException] = []
    added: list[str] = []
    events.on("error", errors.append)

    def listener(args: dict[str, Any], event_id: str) -> None:
        added.append(args["jobId"])
        raise RuntimeError(f"listener boom {args['jobId']}")

    events.on("added", listener)
    jobs = [await q.add("j", {}) for _ in range(3)]
    await until(lambda: len(added) == 3, what="three added events")
    assert [str(e) for e in errors] == [f"listener boom {j.id}" for j in jobs]


@pytest.mark.parametrize(
    "opts, message",
    [({"lastEventID": "0"}, "unknown queue events option 'lastEventID'"),
     ({"blocking_timeot": 5}, "unknown queue events option 'blocking_timeot'")],
)
def test_unknown_options_are_refused(opts: dict[str, Any], message: str) -> None:
    """A misspelt option was ignored without a word (the reader then started at '$')."""
    with pytest.raises(InvalidOptionError, match=message):
        QueueEvents("q", opts, autorun=False)


def test_options_by_either_name() -> None:
    for opts in ({"lastEventId": "0", "blockingTimeout": 50}, {"last_event_id": "0", "blocking_timeout": 50}):
        events = QueueEvents("q", {**opts, "autorun": False, "skipVersionCheck": True})
        assert (events.last_event_id, events.blocking_timeout, events.running) == ("0", 50, False)


# ------------------------------------------------------------------------------------------
# Job.wait_until_finished
# ------------------------------------------------------------------------------------------


async def echo_or_fail(job: Any) -> Any:
    # Jobs take a moment, so none finishes while wait_until_finished checks its state: see
    # test_wait_until_finished_survives_the_job_finishing_while_it_checks_the_state.
    await asyncio.sleep(float(job.data.get("sleep", 0.05)))
    if job.name == "fail":
        raise ValueError(f"cannot do {job.data.get('what')}")
    if job.name == "flaky" and job.attempts_made == 0:
        raise ValueError("first attempt fails")
    return {"echo": job.data}


async def test_wait_until_finished_returns_the_result(
    redis_url: str, prefix: str, closers: list[Any]
) -> None:
    async with QueueEvents("wf", connection=redis_url, prefix=prefix) as events:
        q = Queue("wf", connection=redis_url, prefix=prefix)
        closers.append(q)
        job = await q.add("echo", {"sleep": 0.1, "x": [1, {"y": None}]})
        closers.append(Worker("wf", echo_or_fail, connection=redis_url, prefix=prefix, **FAST))
        result = await job.wait_until_finished(events, timeout=5)
        assert result == {"echo": {"sleep": 0.1, "x": [1, {"y": None}]}}
        # the listeners it added are gone
        assert events.listener_count("completed") == 0 and events.listener_count("failed") == 0


async def test_wait_until_finished_raises_job_failed_error(
    redis_url: str, prefix: str, closers: list[Any]
) -> None:
    async with QueueEvents("wf", connection=redis_url, prefix=prefix) as events:
        q = Queue("wf", connection=redis_url, prefix=prefix)
        closers.append(q)
        job = await q.add("fail", {"what": "that"})
        closers.append(Worker("wf", echo_or_fail, connection=redis_url, prefix=prefix, **FAST))
        with pytest.raises(JobFailedError, match="^cannot do that$") as info:
            await job.wait_until_finished(events, timeout=5)
        assert info.value.job_id == job.id
        assert events.listener_count("completed") == 0 and events.listener_count("failed") == 0


async def test_many_waits_at_once_share_round_trips_and_listen_per_job(
    redis_url: str, prefix: str, closers: list[Any], client: Any
) -> None:
    """3,000 waits started together: each listens to its own job's events (an event calls one
    listener, not 3,000: quadratic before, 211 s for 20,000 waits), and their first reads of
    the stored outcome go in shared pipelines over a few connections (before: one pooled
    connection each, up to the pool's 500). Jobs finished before the wait are found stored."""
    n = 3000
    async with QueueEvents("many", connection=redis_url, prefix=prefix) as events:
        q = Queue("many", connection=redis_url, prefix=prefix)
        closers.append(q)
        early = await q.add_bulk([{"name": "echo", "data": {"sleep": 0, "i": i}} for i in range(20)]
                                 + [{"name": "fail", "data": {"sleep": 0, "what": "early"}}])
        worker = Worker("many", echo_or_fail, connection=redis_url, prefix=prefix, **FAST)
        closers.append(worker)
        for job in early:
            state = None
            while state not in ("completed", "failed"):
                state = await q.get_job_state(job.id)
        await worker.close()
        jobs = await q.add_bulk([{"name": "fail" if i % 10 == 0 else "echo", "data": {"sleep": 0, "i": i}}
                                 for i in range(n)])
        clients_before = len(await client.client_list())
        waits = [asyncio.ensure_future(job.wait_until_finished(events, timeout=60)) for job in [*early, *jobs]]
        await asyncio.sleep(0.2)  # every wait has read the stored outcome
        assert len(await client.client_list()) - clients_before <= 10
        assert events.listener_count("completed") == 0
        assert events.listener_count(f"completed:{jobs[5].id}") == 1
        closers.append(Worker("many", echo_or_fail, connection=redis_url, prefix=prefix, **{**FAST, "concurrency": 50}))
        results = await asyncio.gather(*waits, return_exceptions=True)
    assert results[:20] == [{"echo": {"sleep": 0, "i": i}} for i in range(20)]
    assert isinstance(results[20], JobFailedError) and str(results[20]) == "cannot do early"
    for i, result in enumerate(results[21:]):
        if i % 10 == 0:
            assert isinstance(result, JobFailedError), (i, result)
        else:
            assert result == {"echo": {"sleep": 0, "i": i}}, (i, result)
    assert events.listener_count(f"completed:{jobs[5].id}") == 0


async def test_a_queue_whose_jobs_were_waited_for_is_freed(redis_url: str, prefix: str) -> None:
    """wait_until_finished keeps what it shares between waits per queue, weakly: a queue
    made per request and closed is freed (a reader holding its queue kept every one)."""
    import gc
    import weakref

    async with QueueEvents("free", connection=redis_url, prefix=prefix) as events:
        worker = Worker("free", echo_or_fail, connection=redis_url, prefix=prefix, **FAST)
        refs = []
        try:
            for n in range(3):
                q = Queue("free", connection=redis_url, prefix=prefix)
                job = await q.add("echo", {"n": n})
                assert await job.wait_until_finished(events, timeout=5) == {"echo": {"n": n}}
                await q.close()
                refs.append(weakref.ref(q))
                del q, job
        finally:
            await worker.close()
    gc.collect()
    assert [r() for r in refs] == [None, None, None]


async def test_wait_until_finished_waits_through_retries(
    redis_url: str, prefix: str, closers: list[Any]
) -> None:
    async with QueueEvents("wf", connection=redis_url, prefix=prefix) as events:
        q = Queue("wf", connection=redis_url, prefix=prefix)
        closers.append(q)
        job = await q.add("flaky", {"n": 1}, {"attempts": 2})
        closers.append(Worker("wf", echo_or_fail, connection=redis_url, prefix=prefix, **FAST))
        assert await job.wait_until_finished(events, timeout=5) == {"echo": {"n": 1}}
        again = await q.get_job(job.id)
        assert again is not None and again.attempts_made == 2


async def test_wait_until_finished_times_out(redis_url: str, prefix: str, closers: list[Any]) -> None:
    async with QueueEvents("wf", connection=redis_url, prefix=prefix) as events:
        q = Queue("wf", connection=redis_url, prefix=prefix)
        closers.append(q)
        job = await q.add("echo", {})
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            await job.wait_until_finished(events, timeout=0.3)
        assert 0.25 < time.monotonic() - t0 < 2
        assert events.listener_count("completed") == 0 and events.listener_count("failed") == 0
        # the job is untouched and can still be waited for
        closers.append(Worker("wf", echo_or_fail, connection=redis_url, prefix=prefix, **FAST))
        assert await job.wait_until_finished(events, timeout=5) == {"echo": {}}


async def test_a_redis_unreachable_at_start_is_retried_with_error_events(
    redis_url: str, prefix: str, closers: list[Any]
) -> None:
    """The reader retries a server it cannot reach at start, as one lost later (an 'error'
    event each time), and is ready once the server answers; wait_until_finished's timeout
    covers that wait (before, the reader died silently and both waited for ever)."""
    port = free_port()
    events = QueueEvents("late", connection=f"redis://127.0.0.1:{port}", prefix=prefix)
    closers.append(events)
    errors: list[BaseException] = []
    events.on("error", errors.append)
    q = Queue("late", connection=redis_url, prefix=prefix)
    closers.append(q)
    job = await q.add("j", {})
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        await job.wait_until_finished(events, timeout=0.5)
    assert 0.45 < time.monotonic() - t0 < 3
    assert errors and all(isinstance(e, RedisUnavailableError) for e in errors)
    with RedisServer(port=port):
        await asyncio.wait_for(events.wait_until_ready(), 10)
        assert events.running


async def test_wait_until_finished_after_the_job_already_finished(
    redis_url: str, prefix: str, closers: list[Any]
) -> None:
    q = Queue("wf", connection=redis_url, prefix=prefix)
    closers.append(q)
    ok = await q.add("echo", {"k": "v"})
    bad = await q.add("fail", {"what": "it"})
    worker = Worker("wf", echo_or_fail, connection=redis_url, prefix=prefix, **FAST)
    closers.append(worker)

    async def both_finished() -> bool:
        return await q.get_job_counts("completed", "failed") == {"completed": 1, "failed": 1}

    await until(both_finished, what="both jobs finished")
    await worker.close()

    # a QueueEvents started afterwards never sees their events: the job's own state answers
    async with QueueEvents("wf", connection=redis_url, prefix=prefix) as events:
        t0 = time.monotonic()
        assert await ok.wait_until_finished(events, timeout=5) == {"echo": {"k": "v"}}
        read_back = await q.get_job(ok.id)
        assert read_back is not None
        assert await read_back.wait_until_finished(events, timeout=5) == {"echo": {"k": "v"}}
        with pytest.raises(JobFailedError, match="^cannot do it$"):
            await bad.wait_until_finished(events, timeout=5)
        assert time.monotonic() - t0 < 1


async def test_wait_until_finished_for_a_removed_job_fails_at_once(
    redis_url: str, prefix: str, closers: list[Any]
) -> None:
    q = Queue("wf", connection=redis_url, prefix=prefix)
    closers.append(q)
    job = await q.add("echo", {}, {"removeOnComplete": True})
    closers.append(Worker("wf", echo_or_fail, connection=redis_url, prefix=prefix, **FAST))

    async def gone() -> bool:
        return await q.get_job(job.id) is None

    await until(gone, what="job removed on completion")
    async with QueueEvents("wf", connection=redis_url, prefix=prefix) as events:
        with pytest.raises(JobNotFoundError, match="Missing key for job"):
            await job.wait_until_finished(events, timeout=0.5)


async def test_wait_until_finished_survives_the_job_finishing_while_it_checks_the_state(
    redis_url: str, prefix: str, closers: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    q = Queue("race", connection=redis_url, prefix=prefix)
    closers.append(q)
    job = await q.add("echo", {"sleep": 0})
    worker = Worker("race", echo_or_fail, connection=redis_url, prefix=prefix, **FAST)
    closers.append(worker)

    async def completed() -> bool:
        return await q.get_job_state(job.id) == "completed"

    await until(completed, what="the job to complete")
    await worker.close()
    async with QueueEvents("race", connection=redis_url, prefix=prefix) as events:
        zscore = q.client.zscore

        async def zscore_while_the_event_arrives(*args: Any, **kwargs: Any) -> Any:
            # the reader delivers the job's completed event while this state check is in flight
            event = {"jobId": job.id, "returnvalue": {"echo": {"sleep": 0}}, "prev": "active"}
            events.emit("completed", event, "1-1")
            return await zscore(*args, **kwargs)

        monkeypatch.setattr(q.client, "zscore", zscore_while_the_event_arrives)
        assert await job.wait_until_finished(events, timeout=2) == {"echo": {"sleep": 0}}


@pytest.mark.parametrize("how", ["await", "wait_for"])
async def test_a_listener_may_close_its_queue_events(
    redis_url: str, prefix: str, closers: list[Any], how: str
) -> None:
    """close() from an async listener returns (it waited for that very listener, forever),
    also through wait_for, which runs close() in a task of its own."""
    events = QueueEvents(f"evclose-{how}", connection=redis_url, prefix=prefix)
    done = asyncio.Event()

    async def on_added(*_: Any) -> None:
        if how == "await":
            await events.close()
        else:
            await asyncio.wait_for(events.close(), 5)
        done.set()

    events.on("added", on_added)
    await events.wait_until_ready()
    q = Queue(f"evclose-{how}", connection=redis_url, prefix=prefix)
    closers.append(q)
    await q.add("a", {})
    await asyncio.wait_for(done.wait(), 3)


def test_a_keyword_wins_over_the_opts_dict_as_for_worker() -> None:
    """Options given both ways: the keyword, as Worker takes it (the dict won here; a review
    found the two classes disagreeing)."""
    events = QueueEvents("q", {"bufferSize": 10, "blockingTimeout": 7, "autorun": False}, buffer_size=5)
    assert events._buffer.maxlen == 5 and events.blocking_timeout == 7
