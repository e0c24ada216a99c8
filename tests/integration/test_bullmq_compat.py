"""Small programs written for ``bullmq`` (the official Python port, 3.4.4) run unchanged with
``import bullfast as bullmq``.

Each ``program_*`` below uses only bullmq's documented Python API: constructors taking an opts
dict (``Queue(name, {"connection": ..., "prefix": ...})``), camelCase methods and attributes,
2-argument worker listeners, bullmq's error classes, dict-shaped flow results. Each test runs
one program on the private Redis and checks what it printed (returned) and what Redis holds.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import bullfast as bullmq  # the programs below are bullmq code

from ..conftest import delete_prefix, redis_options


def ms() -> int:
    return int(time.time() * 1000)


async def wait_until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.01)


# ------------------------------------------------------------------------------------------
# Queue
# ------------------------------------------------------------------------------------------


async def program_queue_basics(url: str, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    queue = bullmq.Queue("paint", {"connection": url, "prefix": prefix, "defaultJobOptions": {"attempts": 2}})
    job = await queue.add("cars", {"color": "blue"})
    custom = await queue.add("cars", {"color": "red"}, {"jobId": "car-red", "priority": 1})
    later = await queue.add("cars", {"color": "green"}, {"delay": 60000})
    bulk = await queue.addBulk(
        [{"name": "bikes", "data": {"n": i}, "opts": {"removeOnComplete": True}} for i in range(3)]
    )
    out["ids"] = [job.id, custom.id, later.id, [b.id for b in bulk]]
    out["opts"] = [job.opts.get("attempts"), bulk[0].opts.get("attempts"), bulk[0].opts.get("removeOnComplete")]
    out["counts"] = await queue.getJobCounts("waiting", "prioritized", "delayed")
    out["all_counts"] = await queue.getJobCounts()
    out["count_by_types"] = await queue.getJobCountByTypes("waiting", "delayed")
    out["states"] = [await queue.getJobState(j) for j in (job.id, "car-red", later.id, "nope")]
    fetched = await queue.getJob("car-red")
    out["fetched"] = [fetched.name, fetched.data, fetched.priority, fetched.attemptsMade]
    from_id = await bullmq.Job.fromId(queue, job.id)
    out["from_id"] = [from_id.id, from_id.data, from_id.timestamp == job.timestamp]
    out["missing"] = await queue.getJob("nope")
    out["waiting"] = [j.id for j in await queue.getWaiting()]
    out["listed"] = sorted(j.id for j in await queue.getJobs(["waiting", "delayed"]))
    out["paused"] = [await queue.isPaused()]
    await queue.pause()
    out["paused"].append(await queue.isPaused())
    await queue.resume()
    out["paused"].append(await queue.isPaused())
    await queue.obliterate()
    out["after_obliterate"] = [await queue.getJob(job.id), sum((await queue.getJobCounts()).values())]
    await queue.close()
    return out


async def test_queue_basics(redis_url: str, prefix: str, client: Any) -> None:
    out = await program_queue_basics(redis_url, prefix)
    # as in BullMQ, a custom jobId uses up a number of the id counter too
    assert out["ids"] == ["1", "car-red", "3", ["4", "5", "6"]]
    assert out["opts"] == [2, 2, True]
    assert out["counts"] == {"waiting": 4, "prioritized": 1, "delayed": 1}
    assert out["all_counts"] == {
        "active": 0, "completed": 0, "delayed": 1, "failed": 0, "prioritized": 1, "waiting": 4,
        "waiting-children": 0,
    }
    assert out["count_by_types"] == 5
    assert out["states"] == ["waiting", "prioritized", "delayed", "unknown"]
    assert out["fetched"] == ["cars", {"color": "red"}, 1, 0]
    assert out["from_id"] == ["1", {"color": "blue"}, True]
    assert out["missing"] is None
    assert out["waiting"] == ["1", "4", "5", "6"]
    assert out["listed"] == ["1", "3", "4", "5", "6"]
    assert out["paused"] == [False, True, False]
    assert out["after_obliterate"] == [None, 0]
    assert [k async for k in client.scan_iter(match=f"{prefix}:paint:*")] == []


# ------------------------------------------------------------------------------------------
# Worker
# ------------------------------------------------------------------------------------------


async def program_worker(url: str, prefix: str) -> dict[str, Any]:
    opts = {"connection": url, "prefix": prefix}
    queue = bullmq.Queue("render", opts)
    running = 0
    peak = 0

    async def process(job: Any, token: str) -> Any:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await job.updateProgress(50)
            await asyncio.sleep(0.05)
            if job.data.get("explode"):
                raise ValueError(f"cannot render {job.data['frame']}")
            await job.updateProgress({"done": True})
            return {"frame": job.data["frame"], "token_ok": isinstance(token, str) and bool(token)}
        finally:
            running -= 1

    completed: list[tuple[str, Any]] = []
    failed: list[tuple[str, str, str]] = []
    finished = asyncio.Event()

    def on_completed(job: Any, result: Any) -> None:
        completed.append((job.id, result))
        if len(completed) + len(failed) == 7:
            finished.set()

    def on_failed(job: Any, err: Exception) -> None:
        failed.append((job.id, type(err).__name__, str(err)))
        if len(completed) + len(failed) == 7:
            finished.set()

    worker = bullmq.Worker("render", process, {**opts, "concurrency": 3})
    worker.on("completed", on_completed)
    worker.on("failed", on_failed)
    await queue.addBulk([{"name": "frame", "data": {"frame": i}} for i in range(6)])
    await queue.add("frame", {"frame": 6, "explode": True})
    await asyncio.wait_for(finished.wait(), 10)
    await worker.close()

    done = await queue.getJob("1")
    bad = await queue.getJob("7")
    out = {
        "completed": sorted(completed, key=lambda c: int(c[0])),
        "failed": failed,
        "peak": peak,
        "done": [done.attemptsMade, done.returnvalue, done.failedReason, done.progress,
                 done.finishedOn >= done.processedOn > 0, await done.getState(), await done.isCompleted()],
        "bad": [bad.attemptsMade, bad.returnvalue, bad.failedReason, bad.finishedOn > 0,
                await bad.getState(), await bad.isFailed(), bool(bad.stacktrace)],
        "counts": await queue.getJobCounts("completed", "failed"),
        "completed_jobs": sorted(j.id for j in await queue.getJobs(["completed"])),
    }
    await queue.close()
    return out


async def test_worker_with_two_argument_listeners(redis_url: str, prefix: str) -> None:
    out = await program_worker(redis_url, prefix)
    assert out["completed"] == [(str(i + 1), {"frame": i, "token_ok": True}) for i in range(6)]
    assert out["failed"] == [("7", "ValueError", "cannot render 6")]
    assert out["peak"] == 3
    assert out["done"] == [1, {"frame": 0, "token_ok": True}, None, {"done": True}, True, "completed", True]
    assert out["bad"] == [1, None, "cannot render 6", True, "failed", True, True]
    assert out["counts"] == {"completed": 6, "failed": 1}
    assert out["completed_jobs"] == ["1", "2", "3", "4", "5", "6"]


async def program_unrecoverable(url: str, prefix: str) -> dict[str, Any]:
    opts = {"connection": url, "prefix": prefix}
    queue = bullmq.Queue("charge", opts)
    calls = 0

    async def process(job: Any, token: str) -> Any:
        nonlocal calls
        calls += 1
        raise bullmq.UnrecoverableError("card declined")

    failed = asyncio.Event()
    worker = bullmq.Worker("charge", process, opts)
    worker.on("failed", lambda job, err: failed.set())
    job = await queue.add("charge", {"amount": 10}, {"attempts": 5, "backoff": {"type": "fixed", "delay": 10}})
    await asyncio.wait_for(failed.wait(), 5)
    await worker.close()
    job = await queue.getJob(job.id)
    out = {"calls": calls, "state": await job.getState(), "attemptsMade": job.attemptsMade,
           "failedReason": job.failedReason}
    await queue.close()
    return out


async def test_unrecoverable_error_fails_without_retrying(redis_url: str, prefix: str) -> None:
    assert await program_unrecoverable(redis_url, prefix) == {
        "calls": 1, "state": "failed", "attemptsMade": 1, "failedReason": "card declined",
    }


async def program_step_job(url: str, prefix: str) -> dict[str, Any]:
    """bullmq's "process step jobs" pattern: moveToDelayed + DelayedError, then children
    added from the processor + moveToWaitingChildren + WaitingChildrenError."""
    opts = {"connection": url, "prefix": prefix}
    queue = bullmq.Queue("steps", opts)
    kids = bullmq.Queue("kids", opts)
    seen_steps: list[str] = []
    delayed_at: list[str] = []

    async def process(job: Any, token: str) -> Any:
        step = job.data.get("step", "initial")
        seen_steps.append(step)
        if step == "initial":
            await job.updateData({"step": "delayed"})
            await job.moveToDelayed(ms() + 150, token)
            delayed_at.append(await job.getState())
            raise bullmq.DelayedError()
        if step == "delayed":
            for i in range(3):
                await kids.add("kid", {"i": i}, {"parent": {"id": job.id, "queue": job.queueQualifiedName}})
            await job.updateData({"step": "children"})
            should_wait = await job.moveToWaitingChildren(token, {})
            if should_wait:
                raise bullmq.WaitingChildrenError()
        values = await job.getChildrenValues()
        return {"sum": sum(values.values()), "keys": sorted(values)}

    async def kid(job: Any, token: str) -> Any:
        await asyncio.sleep(0.1)  # still running when the parent moves to waiting-children
        return job.data["i"] * 10

    done = asyncio.Event()
    failures: list[str] = []
    worker = bullmq.Worker("steps", process, opts)
    kid_worker = bullmq.Worker("kids", kid, opts)
    worker.on("completed", lambda job, result: done.set())
    worker.on("failed", lambda job, err: failures.append(str(err)))
    t0 = time.monotonic()
    job = await queue.add("step", {})
    await asyncio.wait_for(done.wait(), 10)
    took = time.monotonic() - t0
    await worker.close()
    await kid_worker.close()
    job = await bullmq.Job.fromId(queue, job.id)
    out = {
        "steps": seen_steps, "delayed_at": delayed_at, "failures": failures, "took": took,
        "returnvalue": job.returnvalue, "attemptsMade": job.attemptsMade, "data": job.data,
        "state": await job.getState(), "deps": await job.getDependenciesCount(),
    }
    for q in (queue, kids):
        await q.obliterate()
        await q.close()
    return out


async def test_delayed_and_waiting_children_errors(redis_url: str, prefix: str) -> None:
    out = await program_step_job(redis_url, prefix)
    assert out["steps"] == ["initial", "delayed", "children"]
    assert out["delayed_at"] == ["delayed"]
    assert out["failures"] == []
    assert out["took"] >= 0.15
    assert out["returnvalue"] == {"sum": 30, "keys": [f"{prefix}:kids:{i}" for i in (1, 2, 3)]}
    assert out["attemptsMade"] == 1  # delaying and waiting for children are not attempts
    assert out["data"] == {"step": "children"}
    assert out["state"] == "completed"
    assert out["deps"] == {"processed": 3, "unprocessed": 0, "ignored": 0, "failed": 0}


async def program_manual_processing(url: str, prefix: str) -> dict[str, Any]:
    opts = {"connection": url, "prefix": prefix}
    queue = bullmq.Queue("manual", opts)
    await queue.add("a", {"x": 1})
    await queue.add("b", {"x": 2})
    worker = bullmq.Worker("manual", None, opts)
    token = "my-token"
    out: dict[str, Any] = {}
    job = await worker.getNextJob(token)
    out["first"] = [job.id, job.name, await job.getState()]
    await job.moveToCompleted({"ok": True}, token, False)
    job = await worker.getNextJob(token)
    out["second"] = [job.id, job.name, await job.getState()]
    await job.moveToFailed(Exception("manual failure"), token, False)
    await worker.close()
    a = await queue.getJob("1")
    b = await queue.getJob("2")
    out["a"] = [await a.getState(), a.returnvalue, a.attemptsMade, a.finishedOn > 0]
    out["b"] = [await b.getState(), b.failedReason, b.attemptsMade]
    await queue.close()
    return out


async def test_manual_processing_with_get_next_job(redis_url: str, prefix: str) -> None:
    assert await program_manual_processing(redis_url, prefix) == {
        "first": ["1", "a", "active"],
        "second": ["2", "b", "active"],
        "a": ["completed", {"ok": True}, 1, True],
        "b": ["failed", "manual failure", 1],
    }


def test_error_classes_are_exceptions_raisable_without_arguments() -> None:
    for cls in (bullmq.UnrecoverableError, bullmq.DelayedError, bullmq.WaitingChildrenError):
        assert issubclass(cls, Exception)
        with pytest.raises(cls):
            raise cls()
    assert str(bullmq.UnrecoverableError("why")) == "why"


# ------------------------------------------------------------------------------------------
# FlowProducer
# ------------------------------------------------------------------------------------------


async def program_flow(url: str, prefix: str) -> dict[str, Any]:
    opts = {"connection": url, "prefix": prefix}
    flow = bullmq.FlowProducer(opts)
    tree = await flow.add(
        {
            "name": "renovate",
            "queueName": "renovate",
            "data": {"house": 1},
            "children": [
                {"name": "paint", "queueName": "steps", "data": {"place": "ceiling", "cost": 3}},
                {"name": "paint", "queueName": "steps", "data": {"place": "walls", "cost": 5}},
                {"name": "fix", "queueName": "steps", "data": {"place": "floor", "cost": 7},
                 "opts": {"jobId": "fix-floor"}},
            ],
        }
    )
    out: dict[str, Any] = {}
    root = tree["job"]
    out["root"] = [root.name, root.data, root.queueName, await root.getState()]
    out["children"] = [
        [c["job"].name, c["job"].data["place"], c["job"].parentKey, await c["job"].getState()]
        for c in tree["children"]
    ]
    out["child_id"] = tree["children"][2]["job"].id
    out["deps_before"] = await root.getDependenciesCount()
    bulk = await flow.addBulk(
        [{"name": "solo", "queueName": "steps", "data": {"place": "door", "cost": k}} for k in (1, 2)]
    )
    out["bulk"] = [b["job"].data for b in bulk]

    async def step(job: Any, token: str) -> Any:
        return job.data["cost"] * 100

    async def renovate(job: Any, token: str) -> Any:
        values = await job.getChildrenValues()
        return {"total": sum(values.values())}

    done = asyncio.Event()
    steps = bullmq.Worker("steps", step, {**opts, "concurrency": 5})
    parents = bullmq.Worker("renovate", renovate, opts)
    parents.on("completed", lambda job, result: done.set())
    await asyncio.wait_for(done.wait(), 10)
    await steps.close()
    await parents.close()
    root = await bullmq.Job.fromId(bullmq.Queue("renovate", opts), root.id)
    out["result"] = root.returnvalue
    out["children_values"] = await root.getChildrenValues()
    out["deps_after"] = await root.getDependenciesCount()
    await root.queue.close()
    await flow.close()
    return out


async def test_flow_producer_dict_shaped_results(redis_url: str, prefix: str) -> None:
    out = await program_flow(redis_url, prefix)
    parent_key = f"{prefix}:renovate:{(out['children'][0][2] or '').rsplit(':', 1)[-1]}"
    assert out["root"] == ["renovate", {"house": 1}, "renovate", "waiting-children"]
    assert out["children"] == [
        ["paint", "ceiling", parent_key, "waiting"],
        ["paint", "walls", parent_key, "waiting"],
        ["fix", "floor", parent_key, "waiting"],
    ]
    assert out["child_id"] == "fix-floor"
    assert out["deps_before"] == {"processed": 0, "unprocessed": 3, "ignored": 0, "failed": 0}
    assert out["bulk"] == [{"place": "door", "cost": 1}, {"place": "door", "cost": 2}]
    assert out["result"] == {"total": 1500}
    assert out["children_values"][f"{prefix}:steps:fix-floor"] == 700
    assert sorted(out["children_values"].values()) == [300, 500, 700]
    assert out["deps_after"] == {"processed": 3, "unprocessed": 0, "ignored": 0, "failed": 0}


# ------------------------------------------------------------------------------------------
# QueueEvents
# ------------------------------------------------------------------------------------------


async def program_queue_events(url: str, prefix: str) -> dict[str, Any]:
    opts = {"connection": url, "prefix": prefix}
    events = bullmq.QueueEvents("notify", opts)
    await asyncio.sleep(0.1)  # let the reader start before producing
    got: dict[str, Any] = {"completed": [], "progress": [], "failed": []}
    events.on("completed", lambda args, event_id: got["completed"].append((args["jobId"], args["returnvalue"])))
    events.on("progress", lambda args, event_id: got["progress"].append((args["jobId"], args["data"])))
    events.on("failed", lambda args, event_id: got["failed"].append((args["jobId"], args["failedReason"])))
    queue = bullmq.Queue("notify", opts)

    async def process(job: Any, token: str) -> Any:
        await job.updateProgress({"pct": 10})
        if job.name == "bad":
            raise Exception("nope")
        return [job.data["n"], "ok"]

    worker = bullmq.Worker("notify", process, opts)
    await queue.add("good", {"n": 1})
    await queue.add("bad", {"n": 2})
    for _ in range(500):
        if got["completed"] and got["failed"]:
            break
        await asyncio.sleep(0.01)
    await worker.close()
    await events.close()
    await queue.close()
    return got


async def test_queue_events_listeners(redis_url: str, prefix: str) -> None:
    assert await program_queue_events(redis_url, prefix) == {
        "completed": [("1", [1, "ok"])],
        "progress": [("1", {"pct": 10}), ("2", {"pct": 10})],
        "failed": [("2", "nope")],
    }


async def test_queue_events_per_job_channel(redis_url: str, prefix: str) -> None:
    opts = {"connection": redis_url, "prefix": prefix}
    events = bullmq.QueueEvents("perjob", opts)
    await asyncio.sleep(0.1)
    queue = bullmq.Queue("perjob", opts)
    worker = None
    try:
        job = await queue.add("x", {"n": 3})
        done = asyncio.Event()
        got: list[Any] = []
        events.on(f"completed:{job.id}", lambda args, event_id: (got.append(args["returnvalue"]), done.set()))

        async def process(job: Any, token: str) -> Any:
            return job.data["n"] * 2

        worker = bullmq.Worker("perjob", process, opts)
        await asyncio.wait_for(done.wait(), 1)
        assert got == [6]
    finally:
        if worker is not None:
            await worker.close()
        await events.close()
        await queue.close()


async def test_queue_events_drained_listener_gets_the_event_id(redis_url: str, prefix: str) -> None:
    opts = {"connection": redis_url, "prefix": prefix}
    events = bullmq.QueueEvents("dr", opts)
    await asyncio.sleep(0.1)
    queue = bullmq.Queue("dr", opts)
    drained: list[Any] = []
    events.on("drained", lambda event_id: drained.append(event_id))

    async def process(job: Any, token: str) -> Any:
        return 1

    worker = bullmq.Worker("dr", process, opts)
    try:
        await queue.add("x", {})
        for _ in range(300):
            if drained:
                break
            await asyncio.sleep(0.01)
        assert drained and isinstance(drained[0], str) and "-" in drained[0], drained
    finally:
        await worker.close()
        await events.close()
        await queue.close()


# ------------------------------------------------------------------------------------------
# bullmq API shapes that were gaps once
# ------------------------------------------------------------------------------------------


async def test_flow_add_with_queues_options(redis_url: str, prefix: str) -> None:
    flow = bullmq.FlowProducer({"connection": redis_url, "prefix": prefix})
    try:
        tree = await flow.add(
            {"name": "p", "queueName": "qo", "children": [{"name": "c", "queueName": "qo-kids"}]},
            {"queuesOptions": {"qo-kids": {"defaultJobOptions": {"attempts": 3, "priority": 2}}}},
        )
        child = tree["children"][0]["job"]
        stored = await bullmq.Job.fromId(child.queue, child.id)
        assert (stored.opts.get("attempts"), stored.priority) == (3, 2)
    finally:
        await flow.close()


async def parent_with_two_children(url: str, prefix: str) -> tuple[Any, Any, Any, list[str]]:
    """(flow producer, queue, parent job, child ids); the parent job uses the producer's
    connection, so the producer is closed last."""
    opts = {"connection": url, "prefix": prefix}
    flow = bullmq.FlowProducer(opts)
    tree = await flow.add(
        {"name": "p", "queueName": "rm", "children": [{"name": "c", "queueName": "rm"} for _ in range(2)]}
    )
    queue = bullmq.Queue("rm", opts)
    return flow, queue, tree["job"], [c["job"].id for c in tree["children"]]


async def test_job_remove_keeping_children(redis_url: str, prefix: str) -> None:
    flow, queue, parent, kids = await parent_with_two_children(redis_url, prefix)
    try:
        await parent.remove({"removeChildren": False})
        assert await queue.getJob(parent.id) is None
        assert [await queue.getJobState(k) for k in kids] == ["waiting", "waiting"]
    finally:
        await queue.close()
        await flow.close()


async def test_queue_remove_keeping_children(redis_url: str, prefix: str) -> None:
    flow, queue, parent, kids = await parent_with_two_children(redis_url, prefix)
    try:
        await queue.remove(parent.id, {"removeChildren": False})
        assert await queue.getJob(parent.id) is None
        assert [await queue.getJobState(k) for k in kids] == ["waiting", "waiting"]
    finally:
        await queue.close()
        await flow.close()


async def test_change_priority_with_opts_dict(redis_url: str, prefix: str) -> None:
    queue = bullmq.Queue("cp", {"connection": redis_url, "prefix": prefix})
    try:
        job = await queue.add("x", {}, {"priority": 1})
        await job.changePriority({"priority": 5})
        assert (await queue.getJob(job.id)).priority == 5
    finally:
        await queue.close()


async def failed_job(url: str, prefix: str, name: str) -> tuple[Any, Any]:
    opts = {"connection": url, "prefix": prefix}
    queue = bullmq.Queue(name, opts)
    job = await queue.add("x", {})

    async def process(job: Any, token: str) -> Any:
        raise Exception("first run fails")

    worker = bullmq.Worker(name, process, opts)

    async def failed() -> bool:
        return await queue.getJobState(job.id) == "failed"

    await wait_until(failed)
    await worker.close()
    return queue, await queue.getJob(job.id)


async def test_retry_with_reset_attempts_made(redis_url: str, prefix: str) -> None:
    queue, job = await failed_job(redis_url, prefix, "rt")
    try:
        assert (job.attemptsMade, job.attemptsStarted) == (1, 1)
        await job.retry("failed", {"resetAttemptsMade": True})
        again = await queue.getJob(job.id)
        assert (await again.getState(), again.attemptsMade, again.failedReason) == ("waiting", 0, None)
    finally:
        await queue.close()


async def test_retry_with_reset_attempts_started(redis_url: str, prefix: str) -> None:
    queue, job = await failed_job(redis_url, prefix, "rs")
    try:
        await job.retry("failed", {"resetAttemptsStarted": True})
        again = await queue.getJob(job.id)
        assert (again.attemptsMade, again.attemptsStarted) == (1, 0)
    finally:
        await queue.close()


async def test_count_helpers(redis_url: str, prefix: str) -> None:
    queue = bullmq.Queue("cnt", {"connection": redis_url, "prefix": prefix})
    try:
        await queue.add("x", {})
        await queue.add("y", {}, {"delay": 60000})
        assert [
            await queue.getWaitingCount(), await queue.getDelayedCount(),
            await queue.getCompletedCount(), await queue.getFailedCount(),
        ] == [1, 1, 0, 0]
    finally:
        await queue.close()


async def test_job_logs_read_through_the_queue(redis_url: str, prefix: str) -> None:
    queue = bullmq.Queue("logs", {"connection": redis_url, "prefix": prefix})
    try:
        job = await queue.add("x", {})
        await job.log("first line")
        await job.log("second line")
        assert await queue.getJobLogs(job.id) == {"logs": ["first line", "second line"], "count": 2}
    finally:
        await queue.close()


async def test_clean_completed_jobs(redis_url: str, prefix: str) -> None:
    queue, job = await failed_job(redis_url, prefix, "cl")
    try:
        assert await queue.clean(0, 100, "failed") == [job.id]
        assert await queue.getJob(job.id) is None
    finally:
        await queue.close()


async def test_retry_all_failed_jobs(redis_url: str, prefix: str) -> None:
    queue, job = await failed_job(redis_url, prefix, "ra")
    try:
        await queue.retryJobs({"state": "failed"})
        assert await queue.getJobState(job.id) == "waiting"
    finally:
        await queue.close()


async def test_promote_all_delayed_jobs(redis_url: str, prefix: str) -> None:
    queue = bullmq.Queue("pr", {"connection": redis_url, "prefix": prefix})
    try:
        job = await queue.add("x", {}, {"delay": 60000})
        await queue.promoteJobs()
        assert await queue.getJobState(job.id) == "waiting"
    finally:
        await queue.close()


async def test_worker_accepts_skip_version_check(redis_url: str, prefix: str) -> None:
    async def process(job: Any, token: str) -> Any:
        return None

    worker = bullmq.Worker(
        "sv", process,
        {"connection": redis_url, "prefix": prefix, "skipVersionCheck": True, "skipWaitingForReady": True},
    )
    await worker.close()


# ------------------------------------------------------------------------------------------
# a program written for bullmq, run under bullmq and under bullfast
# ------------------------------------------------------------------------------------------

PROGRAM = Path(__file__).parent / "programs" / "bullmq_orders.py"


def run_program(path: Path, url: str, prefix: str, *, must_exit: bool) -> dict[str, Any]:
    """What the program printed (its one JSON line). bullmq 3.4.4's ``Worker.close()`` can
    hang (its blocking BZPOPMIN task stays cancelling, see benchmarks/README.md), so the
    program prints before closing, and a bullmq run that then hangs is killed: its output
    stands. A run that ``must_exit`` (bullfast's) must also close and exit 0."""
    proc = subprocess.Popen(
        [sys.executable, str(path), url, prefix], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        assert not must_exit, f"the program did not end: {err}"
    else:
        assert proc.returncode == 0 or not must_exit, err
    lines = out.splitlines()
    assert len(lines) == 1, (out, err)
    result: dict[str, Any] = json.loads(lines[0])
    return result


def test_a_bullmq_program_runs_with_only_its_import_line_changed(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    source = PROGRAM.read_text()
    ported = source.replace("from bullmq import ", "from bullfast import ")
    changed = [(a, b) for a, b in zip(source.splitlines(), ported.splitlines()) if a != b]
    assert changed == [(
        "from bullmq import FlowProducer, Job, Queue, Worker",
        "from bullfast import FlowProducer, Job, Queue, Worker",
    )]
    (tmp_path / "program.py").write_text(ported)

    with_bullfast = run_program(tmp_path / "program.py", redis_url, prefix, must_exit=True)
    assert with_bullfast == {
        "counts_before": {"prioritized": 1, "waiting": 2},
        "tree": ["report", 3, [1, 2, 3]],
        "child_parent": True,
        "report": [{"parts": 3, "sum": 14, "title": "daily"}, 1, "completed"],
        "children_values": [1, 4, 9],
        "section": [{"section": 1}, 1, "completed"],
        "order_a": [{"sku": "a", "total": 20}, 100, 2, True],
        "counts_after": {"completed": 3, "prioritized": 0, "waiting": 0},
    }
    # the same program under bullmq itself prints the same (so it is bullmq code, and the
    # expectations above are bullmq's behaviour, not bullfast's opinion)
    try:
        assert run_program(PROGRAM, redis_url, f"{prefix}-ref", must_exit=False) == with_bullfast
    finally:
        delete_prefix(redis_url, f"{prefix}-ref")


# ------------------------------------------------------------------------------------------
# attributes and methods bullmq code reads
# ------------------------------------------------------------------------------------------


async def test_worker_emits_paused_and_resumed(redis_url: str, prefix: str) -> None:
    opts = {"connection": redis_url, "prefix": prefix}
    queue = bullmq.Queue("pz", opts)
    seen: list[str] = []
    release = asyncio.Event()

    async def process(job: Any, token: str) -> Any:
        await release.wait()
        return job.data["n"]

    worker = bullmq.Worker("pz", process, opts)
    worker.on("paused", lambda: seen.append("paused"))
    worker.on("resumed", lambda: seen.append("resumed"))
    try:
        job = await queue.add("x", {"n": 1})

        async def active() -> bool:
            return await queue.getJobState(job.id) == "active"

        await wait_until(active)
        pausing = asyncio.ensure_future(worker.pause())
        await asyncio.sleep(0)
        assert seen == [] and worker.paused  # 'paused' waits for the running job
        release.set()
        await pausing
        assert seen == ["paused"] and await queue.getJobState(job.id) == "completed"
        await worker.pause()  # already paused: no second event
        assert seen == ["paused"]
        later = await queue.add("x", {"n": 2})
        worker.resume()
        worker.resume()  # not paused any more: no second event
        assert seen == ["paused", "resumed"] and not worker.paused

        async def done() -> bool:
            return await queue.getJobState(later.id) == "completed"

        await wait_until(done)
    finally:
        release.set()
        await worker.close()
        await queue.close()


async def test_worker_state_attributes_over_its_life(redis_url: str, prefix: str) -> None:
    opts = {"connection": redis_url, "prefix": prefix}

    async def process(job: Any, token: str) -> Any:
        return token.split(":")[0]

    worker = bullmq.Worker("st", process, {**opts, "autorun": False, "concurrency": 4})
    assert (worker.running, worker.closing, worker.closed) == (False, False, False)
    assert worker.opts["concurrency"] == 4 and worker.opts["prefix"] == prefix
    assert worker.qualifiedName == f"{prefix}:st"
    worker.start()
    assert worker.running
    queue = bullmq.Queue("st", opts)
    try:
        job = await queue.add("x", {})

        async def done() -> bool:
            return await queue.getJobState(job.id) == "completed"

        await wait_until(done)
        assert (await queue.getJob(job.id)).returnvalue == worker.id  # its lock tokens carry its id
    finally:
        await worker.close()
        await queue.close()
    assert (worker.running, worker.closing, worker.closed) == (False, True, True)


async def test_processor_taking_an_abort_signal_is_refused(redis_url: str, prefix: str) -> None:
    async def process(job: Any, token: str, signal: Any) -> Any:
        return None

    with pytest.raises(bullmq.NotSupportedError, match="job cancellation"):
        bullmq.Worker("sig", process, {"connection": redis_url, "prefix": prefix})


async def test_flow_result_is_bullmqs_dict(redis_url: str, prefix: str) -> None:
    flow = bullmq.FlowProducer({"connection": redis_url, "prefix": prefix})
    try:
        tree = await flow.add(
            {"name": "p", "queueName": "fd", "children": [{"name": "c", "queueName": "fd", "data": {"k": 1}}]}
        )
        assert list(tree) == ["job", "children"] and len(tree) == 2
        assert "job" in tree and "children" in tree and "other" not in tree
        as_dict = dict(tree)
        assert as_dict["job"] is tree.job and as_dict["children"] == tree.children
        (leaf,) = tree["children"]
        # a leaf is bullmq's {"job": job}: no "children" key
        assert dict(leaf) == {"job": leaf.job} and list(leaf.keys()) == ["job"]
        assert "children" not in leaf and leaf.get("children", []) == [] and leaf.children is None
        with pytest.raises(KeyError):
            leaf["children"]
        assert leaf["job"].data == {"k": 1} and tree.get("job") is tree.job
        assert {**leaf} == {"job": leaf.job}
        assert len({tree, leaf}) == 2  # still hashable, compared by identity
    finally:
        await flow.close()
    assert flow.closing


async def test_flow_producer_reads_back_its_options_and_disconnects(redis_url: str, prefix: str) -> None:
    flow = bullmq.FlowProducer({"connection": redis_url, "prefix": prefix})
    got: list[Any] = []
    flow.on("custom", got.append)
    flow.emit("custom", 1)
    assert (flow.opts, flow.closing, got) == ({"connection": redis_url, "prefix": prefix}, False, [1])
    await flow.add({"name": "x", "queueName": "dc"})
    await flow.disconnect()
    assert flow.closing


async def test_job_log_and_placement_helpers(redis_url: str, prefix: str, client: Any) -> None:
    queue = bullmq.Queue("hl", {"connection": redis_url, "prefix": prefix})
    try:
        waiting = await queue.add("w", {})
        delayed = await queue.add("d", {}, {"delay": 60000})
        assert (await waiting.isInList("wait"), await waiting.isInZSet("delayed")) == (True, False)
        assert (await delayed.isInList("wait"), await delayed.isInZSet("delayed")) == (False, True)
        assert await bullmq.Job.addJobLog(queue, waiting.id, "one") == 1
        assert await bullmq.Job.addJobLog(queue, waiting.id, "two", 1) == 1  # keeps the last line
        assert await queue.getJobLogs(waiting.id) == {"logs": ["two"], "count": 1}
        with pytest.raises(bullmq.BullfastError, match="Missing key for job nope"):
            await bullmq.Job.addJobLog(queue, "nope", "x")
        raw = await client.hgetall(f"{prefix}:hl:{delayed.id}")
        rebuilt = bullmq.Job.fromJSON(queue, {k.decode(): v.decode() for k, v in raw.items()}, delayed.id)
        assert (rebuilt.id, rebuilt.name, rebuilt.delay, rebuilt.timestamp) == (
            delayed.id, "d", 60000, delayed.timestamp)
        # the port's keyword names
        assert await bullmq.Job.addJobLog(queue, jobId=waiting.id, logRow="three", keepLogs=5) == 2
        assert bullmq.Job.fromJSON(queue, rawData={"name": "d", "data": "{}"}, jobId=delayed.id).id == delayed.id
    finally:
        await queue.close()


async def test_queue_deduplication_id_and_deprecated_priority_key(redis_url: str, prefix: str, client: Any) -> None:
    queue = bullmq.Queue("dd", {"connection": redis_url, "prefix": prefix})
    try:
        job = await queue.add("x", {}, {"deduplication": {"id": "once"}})
        again = await queue.add("x", {}, {"deduplication": {"id": "once"}})
        assert again.id == job.id
        assert await queue.getDeduplicationJobId("once") == job.id
        assert await queue.getDeduplicationJobId("other") is None
        await client.set(f"{prefix}:dd:priority", "1")
        assert await queue.removeDeprecatedPriorityKey() == 1
        assert await client.exists(f"{prefix}:dd:priority") == 0
    finally:
        await queue.close()


async def test_unsupported_features_fail_before_touching_redis(redis_url: str, prefix: str, client: Any) -> None:
    queue = bullmq.Queue("ns", {"connection": redis_url, "prefix": prefix})
    try:
        with pytest.raises(NotImplementedError, match="job schedulers"):
            await queue.upsertJobScheduler("every-minute", {"every": 60000}, "tick", {})
        # (listing workers is supported: none is connected)
        assert await queue.getWorkers() == [] and await queue.getWorkersCount() == 0
        assert [k async for k in client.scan_iter(match=f"{prefix}:*")] == []
    finally:
        await queue.close()


FAILURES_PROGRAM = Path(__file__).parent / "programs" / "bullmq_failures.py"


def test_a_bullmq_program_with_failures_runs_with_only_its_import_line_changed(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    """Retries with backoff, UnrecoverableError, failParentOnFailure, QueueEvents, promote,
    changePriority, remove and retry: the same output under bullmq and under bullfast."""
    source = FAILURES_PROGRAM.read_text()
    ported = source.replace("from bullmq import ", "from bullfast import ")
    assert sum(a != b for a, b in zip(source.splitlines(), ported.splitlines())) == 1
    (tmp_path / "program.py").write_text(ported)
    with_bullfast = run_program(tmp_path / "program.py", redis_url, prefix, must_exit=True)
    assert with_bullfast == {
        "after_management": ["waiting", "prioritized", True],
        "flaky": ["flaky", 3, True],
        "fatal": ["cannot go on", 1, True],
        "parent": ["failed", True],
        "counts": {"completed": 4, "failed": 2, "waiting": 0, "delayed": 0},
        "fatal_again": ["failed", 2],
        "events": {"completed": ["flaky", "later", "low", "ok-child"], "failed": ["bad-child", "fatal"]},
    }
    try:
        assert run_program(FAILURES_PROGRAM, redis_url, f"{prefix}-ref", must_exit=False) == with_bullfast
    finally:
        delete_prefix(redis_url, f"{prefix}-ref")


# ------------------------------------------------------------------------------------------
# the port's constructor of FlowProducer, its keyword names, its TypeErrors
# ------------------------------------------------------------------------------------------


async def program_port_flow_producer_forms(url: str, prefix: str) -> list[str]:
    """FlowProducer(redisOpts, opts): the connection first, as a URL or redis-py's options,
    alone or with the options (a lone {"host", "port"} was taken for options and ignored: the
    flow went to the default server)."""
    host_port = redis_options(url)  # (host and port, and REDIS_URL's database and password)
    made = [
        bullmq.FlowProducer(url, {"prefix": prefix}),
        bullmq.FlowProducer(host_port, {"prefix": prefix}),
        bullmq.FlowProducer(None, {"connection": url, "prefix": prefix}),
        bullmq.FlowProducer({"connection": url, "prefix": prefix}),
    ]
    ids = []
    for flow in made:
        node = await flow.add({"name": "p", "queueName": "forms", "children": [{"name": "c", "queueName": "forms"}]})
        ids.append(node["job"].id)
        await flow.close()
    made = [
        bullmq.FlowProducer(opts={"connection": url, "prefix": prefix}),
        bullmq.FlowProducer(redisOpts=url, opts={"prefix": prefix}),
        bullmq.FlowProducer(None, opts={"connection": url, "prefix": prefix}),
    ]
    for flow in made:
        node = await flow.add({"name": "p", "queueName": "forms"})
        ids.append(node["job"].id)
        await flow.close()
    lone = bullmq.FlowProducer(host_port)  # the default prefix, on the server named
    node = await lone.add({"name": "p", "queueName": f"{prefix}-forms"})
    ids.append(node["job"].id)
    await lone.close()
    return ids


async def test_port_flow_producer_forms(redis_url: str, prefix: str, client: Any) -> None:
    ids = await program_port_flow_producer_forms(redis_url, prefix)
    for job_id in ids[:7]:
        assert await client.hget(f"{prefix}:forms:{job_id}", "name") == b"p"
    assert await client.hget(f"bull:{prefix}-forms:{ids[7]}", "name") == b"p"
    await client.delete(*[k async for k in client.scan_iter(match=f"bull:{prefix}-forms:*")])


async def program_port_keywords(url: str, prefix: str) -> dict[str, Any]:
    queue = bullmq.Queue("kw", {"connection": url, "prefix": prefix})
    out: dict[str, Any] = {}
    job = await queue.add("j", {}, {"deduplication": {"id": "d1"}})
    out["jobs"] = [j.id for j in await queue.getJobs(types=["waiting"])]
    out["dedup"] = await queue.getDeduplicationJobId(id="d1")
    out["from_id"] = (await bullmq.Job.fromId(queue, jobId=job.id)).id
    out["log"] = await job.log(logRow="a line")
    await job.changePriority(opts={"priority": 5})
    out["priority"] = (await queue.getJob(job.id)).priority
    out["set_limit"] = await queue.setGlobalRateLimit(10, duration_ms=1000)
    out["remove_limit"] = [await queue.removeGlobalRateLimit(), await queue.removeGlobalRateLimit()]
    await queue.setGlobalConcurrency(3)
    out["remove_concurrency"] = [await queue.removeGlobalConcurrency(), await queue.removeGlobalConcurrency()]
    out["trimmed"] = await queue.trimEvents(maxLength=1)
    worker = bullmq.Worker("kw", None, {"connection": url, "prefix": prefix})
    taken = await worker.getNextJob("tok")
    await taken.moveToCompleted(return_value={"ok": 1}, token="tok", fetchNext=False)
    out["returnvalue"] = (await queue.getJob(job.id)).returnvalue
    out["cleaned"] = await queue.clean(0, 10, type="completed")
    await worker.close()
    await queue.close()
    return out


async def test_port_keywords(redis_url: str, prefix: str) -> None:
    out = await program_port_keywords(redis_url, prefix)
    assert out == {
        "jobs": ["1"], "dedup": "1", "from_id": "1", "log": 1, "priority": 5, "set_limit": 2,
        "remove_limit": [2, 0], "remove_concurrency": [1, 0], "trimmed": out["trimmed"],
        "returnvalue": {"ok": 1}, "cleaned": ["1"],
    }


async def program_port_type_errors(url: str, prefix: str) -> list[str]:
    """The port raises TypeError for the scripts' refusals; code catches them so."""
    queue = bullmq.Queue("te", {"connection": url, "prefix": prefix})
    caught = []
    job = await queue.add("j", {})
    try:
        await job.retry()  # waiting, not failed
    except TypeError as err:
        caught.append(str(err))
    try:
        await queue.add("c", {}, {"parent": {"id": "nope", "queue": f"{prefix}:te"}})
    except TypeError as err:
        caught.append(str(err))
    await job.remove()
    try:
        await job.updateData({"x": 1})
    except TypeError as err:
        caught.append(str(err))
    await queue.close()
    return caught


async def test_port_type_errors(redis_url: str, prefix: str) -> None:
    caught = await program_port_type_errors(redis_url, prefix)
    assert len(caught) == 3
    assert caught[0].startswith("Job 1 is not in the failed state")
    assert "Missing key for parent job" in caught[1]
    assert caught[2].startswith("Missing key for job 1")


async def test_objects_refuse_calls_after_close_and_open_no_connection(redis_url: str, prefix: str, client: Any) -> None:
    """A closed queue or flow producer (and a job from one) connected again, and that
    connection stayed open; as Node's, they now refuse ("Connection is closed.")."""
    from bullfast.errors import ConnectionClosedError

    name = f"closed-{prefix}"
    queue = bullmq.Queue("closed", {"connection": f"{redis_url}?client_name={name}", "prefix": prefix})
    flows = bullmq.FlowProducer({"connection": f"{redis_url}?client_name={name}", "prefix": prefix})
    job = await queue.add("j", {})
    node = await flows.add({"name": "p", "queueName": "closed"})
    await queue.close()
    await flows.close()
    calls = [lambda: queue.add("j", {}), lambda: queue.getJobCounts(), lambda: job.getState(),
             lambda: flows.add({"name": "p", "queueName": "closed"}), lambda: node["job"].getState(),
             lambda: queue.getJob(job.id), lambda: queue.getJobs(["waiting"]), lambda: queue.getWorkers()]
    for call in calls:
        with pytest.raises(ConnectionClosedError, match="Connection is closed"):
            await call()
    clients = await client.client_list()
    assert [c for c in clients if c.get("name") == name] == []
    assert await client.llen(f"{prefix}:closed:wait") == 2
