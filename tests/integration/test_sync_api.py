"""bullfast.sync, the blocking API: Queue, FlowProducer, Job, JobNode and QueueEvents from
plain (non-async) code, with workers running in a background asyncio thread or in another
process; the clear error when it is called from inside a running event loop; context managers.
"""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis

from bullfast import Worker, sync
from bullfast.embedded import free_port
from bullfast.errors import JobFailedError, RedisUnavailableError


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


@contextmanager
def worker_thread(redis_url: str, prefix: str, queue: str, processor: Any, **opts: Any) -> Iterator[None]:
    """An async Worker running on its own event loop in a background thread."""
    ready = threading.Event()
    stop = threading.Event()

    async def main() -> None:
        worker = Worker(queue, processor, connection=redis_url, prefix=prefix, drain_delay=0.2, **opts)
        try:
            await worker.wait_until_ready()
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.01)
        finally:
            await worker.close()

    thread = threading.Thread(target=asyncio.run, args=(main(),), name=f"worker-{queue}")
    thread.start()
    try:
        assert ready.wait(5), "the worker thread did not start"
        yield
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive()


WORKER_PROCESS = textwrap.dedent(
    """
    import asyncio, sys
    from bullfast import Worker

    async def process(job):
        await asyncio.sleep(0.1)  # not finished before wait_until_finished listens (see below)
        if job.name == "fail":
            raise ValueError("failed in another process: " + job.data["why"])
        return {"sum": sum(job.data["numbers"]), "pid": __import__("os").getpid()}

    async def main():
        url, prefix, queue = sys.argv[1:4]
        worker = Worker(queue, process, connection=url, prefix=prefix, drain_delay=0.2)
        await worker.wait_until_ready()
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until stdin closes
        await worker.close()
        print("closed", flush=True)

    asyncio.run(main())
    """
)


@contextmanager
def worker_process(redis_url: str, prefix: str, queue: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER_PROCESS, redis_url, prefix, queue],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", proc.stderr
        yield proc
    finally:
        try:
            out, err = proc.communicate(timeout=10)  # closes stdin: the worker closes and exits
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        assert proc.returncode == 0, err
        assert out.strip() == "closed", (out, err)


async def add_children(job: Any) -> Any:
    # Jobs take a moment, so none finishes while wait_until_finished checks its state: see
    # test_wait_until_finished_survives_the_job_finishing_while_it_checks_the_state.
    await asyncio.sleep(0.05)
    if job.name == "leaf":
        return job.data["n"] * 10
    values = await job.get_children_values()
    return {"total": sum(values.values()), "children": len(values)}


# ------------------------------------------------------------------------------------------
# Queue
# ------------------------------------------------------------------------------------------


def test_queue_add_read_and_count(redis_url: str, prefix: str) -> None:
    with sync.Queue("sq", connection=redis_url, prefix=prefix) as q:
        job = q.add("email", {"to": "a@b.c"})
        assert isinstance(job, sync.Job)
        assert (job.id, job.name, job.data, job.queue_name) == ("1", "email", {"to": "a@b.c"}, "sq")
        assert job.get_state() == "waiting"

        bulk = q.add_bulk([{"name": "b", "data": {"i": i}} for i in range(3)])
        assert [type(j) for j in bulk] == [sync.Job] * 3
        assert [j.id for j in bulk] == ["2", "3", "4"]
        later = q.add("later", {}, {"delay": 60_000})
        prio = q.add("prio", {}, priority=3)

        again = q.get_job("3")
        assert isinstance(again, sync.Job)
        assert (again.name, again.data, again.attempts_made, again.attemptsMade) == ("b", {"i": 1}, 0, 0)
        assert q.get_job("nope") is None
        counts = q.get_job_counts("waiting", "delayed", "prioritized")
        assert counts == {"waiting": 4, "delayed": 1, "prioritized": 1}
        assert q.getJobCounts("delayed") == {"delayed": 1}  # camelCase works here too
        assert q.get_job_state(later.id) == "delayed" and prio.get_state() == "prioritized"
        assert [j.id for j in q.get_waiting()] == ["1", "2", "3", "4"]
        assert all(isinstance(j, sync.Job) for j in q.get_jobs(["waiting", "delayed"]))

        assert q.is_paused() is False
        q.pause()
        assert q.is_paused() is True
        q.resume()
        assert q.is_paused() is False

        # job methods block too
        later.promote()
        assert later.get_state() == "waiting"
        job.update_data({"to": "x@y.z"})
        assert q.get_job(job.id).data == {"to": "x@y.z"}


def test_queue_bullmq_style_constructor(redis_url: str, prefix: str) -> None:
    with sync.Queue("sq", {"connection": redis_url, "prefix": prefix, "defaultJobOptions": {"attempts": 4}}) as q:
        job = q.add("a", {})
        assert job.opts["attempts"] == 4
        assert q.getJob(job.id).opts["attempts"] == 4


# ------------------------------------------------------------------------------------------
# FlowProducer, JobNode and job reads
# ------------------------------------------------------------------------------------------


def test_flow_producer_returns_blocking_job_nodes(redis_url: str, prefix: str) -> None:
    with sync.FlowProducer(connection=redis_url, prefix=prefix) as flows:
        root = flows.add(
            {
                "name": "sum",
                "queue_name": "parents",
                "children": [
                    {"name": "leaf", "queue_name": "leaves", "data": {"n": 1}},
                    {
                        "name": "mid",
                        "queue_name": "parents",
                        "children": [{"name": "leaf", "queue_name": "leaves", "data": {"n": 2}}],
                    },
                ],
            }
        )
        assert isinstance(root, sync.JobNode)
        assert isinstance(root.job, sync.Job) and root["job"].id == root.job.id
        kids = root.children
        assert kids is not None and [type(k) for k in kids] == [sync.JobNode] * 2
        assert root["children"] is not None and len(root["children"]) == 2
        leaf, mid = kids
        assert leaf.children is None
        assert (leaf.job.name, leaf.job.data) == ("leaf", {"n": 1})
        assert leaf.job.parent_key == f"{prefix}:parents:{root.job.id}"
        (grandchild,) = mid.children or []

        assert root.job.get_state() == "waiting-children"
        assert mid.job.get_state() == "waiting-children"
        assert leaf.job.get_state() == "waiting" and grandchild.job.get_state() == "waiting"
        assert root.job.get_dependencies_count() == {"processed": 0, "unprocessed": 2, "ignored": 0, "failed": 0}
        assert root.job.getDependenciesCount(unprocessed=True) == {"unprocessed": 2}
        assert root.job.get_children_values() == {}

        read = flows.get_flow("parents", root.job.id)
        assert isinstance(read, sync.JobNode) and isinstance(read.job, sync.Job)
        assert sorted(c.job.id for c in read.children or []) == sorted([leaf.job.id, mid.job.id])

        bulk = flows.add_bulk(
            [{"name": "solo", "queue_name": "leaves", "data": {"n": k}} for k in (7, 8)]
        )
        assert [type(n) for n in bulk] == [sync.JobNode] * 2
        assert [n.job.data for n in bulk] == [{"n": 7}, {"n": 8}]


def test_flow_processed_by_a_worker_thread(redis_url: str, prefix: str) -> None:
    with (
        sync.FlowProducer(connection=redis_url, prefix=prefix) as flows,
        sync.QueueEvents("parents", connection=redis_url, prefix=prefix) as events,
    ):
        root = flows.add(
            {
                "name": "sum",
                "queue_name": "parents",
                "children": [{"name": "leaf", "queue_name": "leaves", "data": {"n": n}} for n in (1, 2, 3)],
            }
        )
        with (
            worker_thread(redis_url, prefix, "leaves", add_children, concurrency=3),
            worker_thread(redis_url, prefix, "parents", add_children),
        ):
            result = root.job.wait_until_finished(events, timeout=10)
        assert result == {"total": 60, "children": 3}
        assert root.job.get_state() == "completed"
        values = root.job.get_children_values()
        assert values == {f"{prefix}:leaves:{c.job.id}": c.job.data["n"] * 10 for c in root.children or []}
        assert root.job.get_dependencies_count() == {"processed": 3, "unprocessed": 0, "ignored": 0, "failed": 0}
        assert all(c.job.get_state() == "completed" for c in root.children or [])


# ------------------------------------------------------------------------------------------
# wait_until_finished
# ------------------------------------------------------------------------------------------


def test_wait_until_finished_with_a_worker_in_another_process(redis_url: str, prefix: str) -> None:
    with (
        sync.Queue("px", connection=redis_url, prefix=prefix) as q,
        sync.QueueEvents("px", connection=redis_url, prefix=prefix) as events,
    ):
        ok = q.add("sum", {"numbers": [1, 2, 3]})
        bad = q.add("fail", {"why": "no reason"})
        with worker_process(redis_url, prefix, "px") as proc:
            result = ok.wait_until_finished(events, timeout=10)
            assert result == {"sum": 6, "pid": proc.pid}
            with pytest.raises(JobFailedError, match="^failed in another process: no reason$") as info:
                bad.wait_until_finished(events, timeout=10)
            assert info.value.job_id == bad.id
        assert q.get_job(ok.id).returnvalue == {"sum": 6, "pid": proc.pid}
        assert q.get_job(bad.id).failed_reason == "failed in another process: no reason"


def test_queue_events_of_an_unreachable_redis_raise(prefix: str) -> None:
    """The blocking constructor raises the reader's first error rather than wait for ever."""
    with pytest.raises(RedisUnavailableError, match="starting to read events"):
        sync.QueueEvents("q", connection=f"redis://127.0.0.1:{free_port()}", prefix=prefix)


def test_wait_until_finished_times_out_then_succeeds_then_answers_at_once(redis_url: str, prefix: str) -> None:
    with (
        sync.Queue("to", connection=redis_url, prefix=prefix) as q,
        sync.QueueEvents("to", connection=redis_url, prefix=prefix) as events,
    ):
        job = q.add("leaf", {"n": 4})
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            job.wait_until_finished(events, timeout=0.3)
        assert 0.25 < time.monotonic() - t0 < 2
        with worker_thread(redis_url, prefix, "to", add_children):
            assert job.wait_until_finished(events, timeout=5) == 40
        # finished already: answered from the job's state (and by BullMQ's name too)
        t0 = time.monotonic()
        assert job.wait_until_finished(events, timeout=5) == 40
        assert job.waitUntilFinished(events, 5) == 40
        assert q.get_job(job.id).wait_until_finished(events) == 40
        assert time.monotonic() - t0 < 1


# ------------------------------------------------------------------------------------------
# inside a running event loop
# ------------------------------------------------------------------------------------------


async def test_blocking_calls_inside_a_running_loop_raise_a_clear_error(redis_url: str, prefix: str) -> None:
    from bullfast.errors import EventLoopError

    message = r"^bullfast\.sync called from inside an event loop; use the async API$"
    with pytest.raises(EventLoopError, match=message):  # (a RuntimeError, as it was)
        sync.Queue("loop", connection=redis_url, prefix=prefix)
    with pytest.raises(RuntimeError, match="inside an event loop"):
        sync.FlowProducer(connection=redis_url, prefix=prefix)

    # an object made outside the loop refuses to block inside it, too
    q = await asyncio.to_thread(sync.Queue, "loop", connection=redis_url, prefix=prefix)
    try:
        with pytest.raises(RuntimeError, match="inside an event loop; use the async API"):
            q.add("x", {})
        with pytest.raises(RuntimeError, match="inside an event loop"):
            q.get_job_counts()
        # nothing was added
        assert await asyncio.to_thread(q.get_job_counts, "waiting") == {"waiting": 0}
    finally:
        await asyncio.to_thread(q.close)


def test_blocking_objects_refuse_on_a_sync_workers_loop(redis_url: str, prefix: str) -> None:
    """An async processor of a sync.Worker runs on bullfast's loop: a blocking Queue it calls
    there refuses (it returned an un-awaited coroutine, the add silently lost, once the async
    methods were offered on the loop to every blocking object, not only a processor's job)."""
    failed: list[str] = []
    with (
        sync.Queue("onloop-in", connection=redis_url, prefix=prefix) as q_in,
        sync.Queue("onloop-out", connection=redis_url, prefix=prefix) as q_out,
        warnings.catch_warnings(),
    ):
        warnings.filterwarnings("ignore", "coroutine .* was never awaited", RuntimeWarning)

        async def processor(job: Any) -> str:
            q_out.add("copied", {})  # a blocking call, on the loop
            return "done"

        worker = sync.Worker("onloop-in", processor, connection=redis_url, prefix=prefix)
        worker.on("failed", lambda job, err, *_: failed.append(str(err)))
        q_in.add("j", {})
        wait_for(lambda: failed, what="the job failed")
        worker.close()
        assert "inside an event loop" in failed[0]
        assert q_out.get_job_counts("waiting") == {"waiting": 0}


async def test_refused_blocking_call_leaves_no_unawaited_coroutine(redis_url: str, prefix: str) -> None:
    q = await asyncio.to_thread(sync.Queue, "loop", connection=redis_url, prefix=prefix)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                q.get_job_counts()
            except RuntimeError:
                pass
            gc.collect()
        assert [str(w.message) for w in caught if "never awaited" in str(w.message)] == []
    finally:
        await asyncio.to_thread(q.close)


# ------------------------------------------------------------------------------------------
# context managers close what they opened
# ------------------------------------------------------------------------------------------


def clients_named(redis_url: str, name: str) -> int:
    admin = redis.Redis.from_url(redis_url)
    try:
        return sum(1 for c in admin.client_list() if c.get("name") == name)
    finally:
        admin.close()


@pytest.mark.parametrize("kind", ["Queue", "FlowProducer", "QueueEvents"])
def test_context_managers_close_their_connections(redis_url: str, prefix: str, kind: str) -> None:
    name = f"bft-sync-{uuid.uuid4().hex[:8]}"
    connection = {"url": redis_url, "client_name": name}
    if kind == "Queue":
        obj: Any = sync.Queue("cm", connection=connection, prefix=prefix)
    elif kind == "FlowProducer":
        obj = sync.FlowProducer(connection=connection, prefix=prefix)
    else:
        obj = sync.QueueEvents("cm", connection=connection, prefix=prefix)
    with obj as entered:
        assert entered is obj
        if kind == "Queue":
            entered.add("x", {})
        elif kind == "FlowProducer":
            entered.add({"name": "x", "queue_name": "cm"})
        assert clients_named(redis_url, name) >= 1
    wait_for(lambda: clients_named(redis_url, name) == 0, 2, f"{kind}'s connections to close")


def test_queue_closes_on_error_in_with_block(redis_url: str, prefix: str) -> None:
    name = f"bft-sync-{uuid.uuid4().hex[:8]}"
    with pytest.raises(KeyError):
        with sync.Queue("cm", connection={"url": redis_url, "client_name": name}, prefix=prefix) as q:
            q.add("x", {})
            raise KeyError("boom")
    wait_for(lambda: clients_named(redis_url, name) == 0, 2, "the queue's connections to close")


# ------------------------------------------------------------------------------------------
# parity with the async API
# ------------------------------------------------------------------------------------------


def test_sync_job_from_id(redis_url: str, prefix: str) -> None:
    with sync.Queue("fi", connection=redis_url, prefix=prefix) as q:
        job = q.add("a", {"k": 1})
        found = sync.Job.from_id(q, job.id)  # type: ignore[attr-defined]
        assert isinstance(found, sync.Job) and found.data == {"k": 1}


def test_sync_job_class_methods_of_the_port(redis_url: str, prefix: str) -> None:
    """bullmq's Job.addJobLog and Job.fromJSON, blocking (the port's code calls them so)."""
    with sync.Queue("fj", connection=redis_url, prefix=prefix) as q:
        job = q.add("a", {"k": 1})
        assert sync.Job.addJobLog(q, job.id, "one") == 1
        assert sync.Job.add_job_log(q, job.id, "two", keep_logs=1) == 1
        assert q.get_job_logs(job.id)["logs"] == ["two"]
        # the port's keyword names
        assert sync.Job.addJobLog(q, jobId=job.id, logRow="three", keepLogs=5) == 2
        assert sync.Job.fromJSON(q, rawData={"name": "a", "data": "{}"}, jobId=job.id).id == job.id
        raw = {"name": "a", "data": '{"k": 2}', "opts": "{}", "timestamp": "1", "attemptsMade": "0"}
        made = sync.Job.fromJSON(q, raw, job.id)
        assert isinstance(made, sync.Job) and made.id == job.id and made.data == {"k": 2}
        made.update_progress(5)  # its methods block like any blocking job's
        assert q.get_job(job.id).progress == 5


def test_sync_job_node_get_like_the_async_one(redis_url: str, prefix: str) -> None:
    with sync.FlowProducer(connection=redis_url, prefix=prefix) as flows:
        root = flows.add({"name": "p", "queue_name": "jn", "children": [{"name": "c", "queue_name": "jn"}]})
        (child,) = root.get("children")  # type: ignore[attr-defined]
        assert child.get("children") is None and child.get("job").name == "c"


# ------------------------------------------------------------------------------------------
# async generators and the job's queue, blocking too
# ------------------------------------------------------------------------------------------


def test_job_iterators_are_plain_iterators(redis_url: str, prefix: str) -> None:
    n = 2_500  # more than one batch of the blocking iterator (1,000)
    with sync.FlowProducer(connection=redis_url, prefix=prefix) as flows:
        root = flows.add({"name": "p", "queue_name": "it",
                          "children": [{"name": "leaf", "queue_name": "it-k", "data": {"n": i}} for i in range(n)]})
        n_of = {c.job.key: c.job.data["n"] for c in root.children or []}
        keys = set(n_of)
        pending = root.job.iter_dependencies(page=300)
        assert isinstance(pending, sync.BlockingIterator)
        got = list(pending)
        assert len(got) == n and set(got) == keys

        done = 1_200
        with worker_thread(redis_url, prefix, "it-k", add_children, concurrency=50):
            wait_for(lambda: root.job.get_dependencies_count(processed=True)["processed"] >= done, 30,
                     "children to complete")
        values = dict(root.job.iter_children_values(page=250))
        assert len(values) >= done and set(values) <= keys
        assert all(value == 10 * n_of[k] for k, value in values.items())
        assert list(root.job.iter_failed_children()) == []
        assert list(root.job.iter_ignored_children_failures()) == []


def test_abandoned_job_iterators_are_closed_on_the_loop(redis_url: str, prefix: str) -> None:
    with sync.FlowProducer(connection=redis_url, prefix=prefix) as flows:
        n = 2_500  # more than one batch (1,000): the first next() leaves the generator suspended
        root = flows.add({"name": "p", "queue_name": "ab",
                          "children": [{"name": "leaf", "queue_name": "ab-k"} for _ in range(n)]})
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            # stopped early, then closed
            it = root.job.iter_dependencies(page=5)
            source = it._source
            assert next(it) and source is not None and source.ag_frame is not None  # type: ignore[attr-defined]
            it.close()
            assert source.ag_frame is None  # type: ignore[attr-defined]
            # left in a with block
            with root.job.iter_dependencies(page=5) as it:
                source = it._source
                next(it)
            assert source.ag_frame is None  # type: ignore[attr-defined]
            # dropped
            it = root.job.iter_dependencies(page=5)
            source = it._source
            next(it)
            del it
            gc.collect()
            wait_for(lambda: source.ag_frame is None, 2, "the dropped iterator to be closed")  # type: ignore[attr-defined]
            # run to the end: closed too
            it = root.job.iter_dependencies(page=7)
            source = it._source
            assert len(list(it)) == n and source.ag_frame is None  # type: ignore[attr-defined]


def test_a_jobs_queue_is_blocking_too(redis_url: str, prefix: str) -> None:
    with sync.Queue("jq", connection=redis_url, prefix=prefix) as q:
        job = q.add("x", {"k": 1})
        assert isinstance(job.queue, sync.Queue)
        assert job.queue.get_job_counts("waiting") == {"waiting": 1}
        assert job.queue.get_job(job.id).data == {"k": 1}
        assert isinstance(q.get_job(job.id).queue, sync.Queue)
    with sync.FlowProducer(connection=redis_url, prefix=prefix) as flows:
        root = flows.add({"name": "p", "queue_name": "jq", "children": [{"name": "c", "queue_name": "jq-k"}]})
        (kid,) = root["children"]
        assert isinstance(kid["job"].queue, sync.Queue) and kid["job"].queue.name == "jq-k"
        assert kid["job"].queue.get_job_state(kid["job"].id) == "waiting"
        assert list(dict(kid)) == ["job"] and dict(kid)["job"].id == kid.job.id
        assert list(root) == ["job", "children"] and "children" not in kid
        assert kid.get("children", []) == []


def test_queue_events_iterate_blocking(redis_url: str, prefix: str) -> None:
    with (
        sync.QueueEvents("ev", connection=redis_url, prefix=prefix) as events,
        sync.Queue("ev", connection=redis_url, prefix=prefix) as q,
    ):
        job = q.add("x", {})
        stream = iter(events)
        first = next(stream)
        assert (first.event, first.job_id) == ("added", job.id)
        stream.close()


# ------------------------------------------------------------------------------------------
# Worker, and listeners that use the blocking API
# ------------------------------------------------------------------------------------------


def test_worker_with_a_plain_function_and_blocking_job_methods(redis_url: str, prefix: str) -> None:
    """A synchronous program processes a flow: the plain processor runs in the worker's pool
    and its job's methods block (update_progress, log, get_children_values); listeners run in
    a thread of the worker's own, where the blocking API works (bullfast.sync had no Worker)."""
    seen: list[tuple[str, Any]] = []
    threads: set[str] = set()

    def process(job: Any) -> Any:
        assert isinstance(job.queue, sync.Worker)  # the worker, as in BullMQ (was a Queue that was not)
        job.update_progress(50)
        job.log(f"processing {job.name}")
        if job.name == "leaf":
            return job.data["n"] * 10
        return sum(job.get_children_values().values())

    with (
        sync.FlowProducer(connection=redis_url, prefix=prefix) as flows,
        sync.Queue("sw-p", connection=redis_url, prefix=prefix) as parents,
    ):
        root = flows.add({"name": "sum", "queue_name": "sw-p", "children": [
            {"name": "leaf", "queue_name": "sw-c", "data": {"n": n}} for n in (1, 2, 3)]})
        leaves = sync.Worker("sw-c", process, connection=redis_url, prefix=prefix, concurrency=3, drain_delay=0.2)
        worker = sync.Worker("sw-p", process, {"connection": redis_url, "prefix": prefix, "drainDelay": 0.2})

        def completed(job: Any, result: Any) -> None:
            threads.add(threading.current_thread().name)
            # the blocking API, in the listener's thread
            seen.append((job.id, parents.get_job(job.id).returnvalue))

        worker.on("completed", completed)
        wait_for(lambda: seen, timeout=10, what="the parent completed")
        leaves.close()
        worker.close()
        assert seen == [(root.job.id, 60)]
        assert threads and all(name.startswith("bullfast-listeners") for name in threads)
        job = parents.get_job(root.job.id)
        assert job.get_state() == "completed" and job.progress == 50
        assert parents.get_job_logs(job.id)["logs"] == ["processing sum"]


def test_worker_manual_processing(redis_url: str, prefix: str) -> None:
    with sync.Queue("sw-m", connection=redis_url, prefix=prefix) as q:
        added = q.add("j", {"x": 1})
        worker = sync.Worker("sw-m", None, connection=redis_url, prefix=prefix)
        try:
            job = worker.get_next_job("my-token")
            assert job is not None and job.id == added.id and job.data == {"x": 1}
            job.update_progress(10)
            job.move_to_completed({"ok": True}, "my-token")
            assert q.get_job(added.id).returnvalue == {"ok": True}
            assert worker.get_next_job("my-token", block=False) is None
        finally:
            worker.close()


def test_worker_run_blocks_until_closed_from_a_listener(redis_url: str, prefix: str) -> None:
    with sync.Queue("sw-r", connection=redis_url, prefix=prefix) as q:
        q.add("j", {})
        worker = sync.Worker("sw-r", lambda job: "done", connection=redis_url, prefix=prefix, autorun=False)
        worker.on("completed", lambda job, result: worker.close())
        started = time.monotonic()
        worker.run()  # returns once the listener has closed the worker
        assert time.monotonic() - started < 10
        assert q.get_job_counts("completed") == {"completed": 1}


def test_queue_events_listeners_may_use_the_blocking_api(redis_url: str, prefix: str) -> None:
    """They ran on bullfast's loop thread, where the blocking API refuses to run: the error
    was only logged, and the listener did nothing."""
    got: list[Any] = []
    with (
        sync.Queue("se", connection=redis_url, prefix=prefix) as q,
        sync.QueueEvents("se", connection=redis_url, prefix=prefix) as events,
    ):
        events.on("added", lambda args, event_id: got.append(q.get_job(args["jobId"]).data))
        q.add("a", {"n": 1})
        q.add("b", {"n": 2})
        wait_for(lambda: len(got) == 2, what="two listener calls")
    assert got == [{"n": 1}, {"n": 2}]  # in order


def test_a_raising_sync_listener_becomes_an_error_event(redis_url: str, prefix: str) -> None:
    errors: list[str] = []
    with (
        sync.Queue("se2", connection=redis_url, prefix=prefix) as q,
        sync.QueueEvents("se2", connection=redis_url, prefix=prefix) as events,
    ):
        def bad(args: Any, event_id: str) -> None:
            raise ValueError(f"bad {args['jobId']}")

        events.on("added", bad)
        events.on("error", lambda err: errors.append(str(err)))
        job = q.add("a", {})
        wait_for(lambda: errors, what="an error event")
        events.off("added", bad)
        q.add("b", {})
        time.sleep(0.2)
    assert errors == [f"bad {job.id}"]


FORK_PROGRAM = textwrap.dedent(
    """
    import os, sys
    from bullfast import sync
    url, prefix = sys.argv[1:3]
    q = sync.Queue("fork", connection=url, prefix=prefix)
    q.add("parent", {})
    pid = os.fork()
    if pid == 0:
        try:
            q.add("child", {})
            os._exit(3)
        except Exception as exc:
            print(type(exc).__name__, exc, flush=True)
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    print("counts", q.get_job_counts("wait")["wait"], os.waitstatus_to_exitcode(status), flush=True)
    q.close()
    """
)


def test_objects_made_before_fork_are_refused_in_the_child(redis_url: str, prefix: str) -> None:
    """They wrote through the parent's connection, then failed on a loop of another thread:
    the job was added, and the caller told it failed."""
    out = subprocess.run([sys.executable, "-c", FORK_PROGRAM, redis_url, prefix],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("BullfastError Queue objects of bullfast.sync were made before os.fork()"), out
    assert lines[1] == "counts 1 0", out


EXIT_PROGRAM = textwrap.dedent(
    """
    import signal, sys, threading, os
    from bullfast import sync
    signal.signal(signal.SIGINT, signal.default_int_handler)  # (inherited as ignored in a background job)
    url, prefix = sys.argv[1:3]
    q = sync.Queue("exit", connection=url, prefix=prefix)
    events = sync.QueueEvents("exit", connection=url, prefix=prefix)
    job = q.add("never-processed", {})
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
    try:
        job.wait_until_finished(events, timeout=30)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    # leaves without closing q or events
    """
)


def test_an_interrupted_call_and_an_exit_without_close_are_quiet(redis_url: str, prefix: str) -> None:
    """Ctrl-C in a blocking call cancels it on the loop; objects never closed are cancelled at
    exit (Python printed 'Task was destroyed but it is pending!' and a traceback)."""
    out = subprocess.run([sys.executable, "-c", EXIT_PROGRAM, redis_url, prefix],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "interrupted", out
    assert out.stderr == "", out.stderr


def test_close_lets_the_queued_listeners_use_the_connection(redis_url: str, prefix: str) -> None:
    """close() closed the connection before the listeners still queued had run: they failed
    with ConnectionClosedError."""
    states: list[str] = []
    with sync.Queue("slow-listeners", connection=redis_url, prefix=prefix) as q:
        q.add_bulk([{"name": "j", "data": {}} for _ in range(5)])
        worker = sync.Worker("slow-listeners", lambda job: "ok", connection=redis_url, prefix=prefix,
                             concurrency=5, drain_delay=0.2)

        def slow(job: Any, result: Any) -> None:
            time.sleep(0.1)
            states.append(job.get_state())

        worker.on("completed", slow)
        wait_for(lambda: q.get_job_counts("completed")["completed"] == 5, what="5 completed")
        worker.close()
    assert states == ["completed"] * 5


def test_off_removes_one_listener_added_twice_and_once_listeners_go(redis_url: str, prefix: str) -> None:
    calls: list[str] = []
    with (
        sync.Queue("offq", connection=redis_url, prefix=prefix) as q,
        sync.QueueEvents("offq", connection=redis_url, prefix=prefix) as events,
    ):
        def f(args: Any, event_id: str) -> None:
            calls.append("f")

        def g(args: Any, event_id: str) -> None:
            calls.append("g")

        events.on("added", f)
        events.on("added", f)
        events.off("added", f)  # one of the two (Node removes the last added)
        events.once("added", g)
        events.once("added", g)
        q.add("a", {})
        wait_for(lambda: len(calls) == 3, what="f once, g twice")
        events.off("added", f)
        events.off("added", g)  # both once-listeners fired: nothing left to remove
        assert events.listener_count("added") == 0
        q.add("b", {})
        time.sleep(0.2)
    assert sorted(calls) == ["f", "g", "g"]


def test_queue_events_with_autorun_false_reads_nothing_until_run(redis_url: str, prefix: str) -> None:
    """As Node's: run() starts reading (it raised "already running": the blocking constructor
    started the reader whatever autorun said)."""
    seen: list[str] = []
    with (
        sync.Queue("autoq", connection=redis_url, prefix=prefix) as q,
        sync.QueueEvents("autoq", {"connection": redis_url, "prefix": prefix, "autorun": False}) as events,
    ):
        events.on("added", lambda args, *_: seen.append(args["name"]))
        q.add("before", {})
        time.sleep(0.2)
        assert not events.running and seen == []
        runner = threading.Thread(target=events.run)
        runner.start()
        wait_for(lambda: events.running, what="the reader running")
        events.wait_until_ready()  # (run() reads the events added from then on, as Node's)
        q.add("after", {})
        wait_for(lambda: seen == ["after"], what="the event added after run()")
        events.close()
        runner.join(5)
        assert not runner.is_alive()


def test_node_emitter_names_on_blocking_objects(redis_url: str, prefix: str) -> None:
    """addListener / removeListener / removeAllListeners act on the listeners added through
    the blocking view (they reached the async object with the caller's function, which it
    never had: nothing was removed)."""
    calls: list[str] = []
    with (
        sync.Queue("nameq", connection=redis_url, prefix=prefix) as q,
        sync.QueueEvents("nameq", connection=redis_url, prefix=prefix) as events,
    ):
        def f(args: Any, event_id: str) -> None:
            calls.append("f")

        def g(args: Any, event_id: str) -> None:
            calls.append("g")

        events.addListener("added", f)
        events.add_listener("added", g)
        events.removeListener("added", f)
        q.add("a", {})
        wait_for(lambda: calls == ["g"], what="g alone")
        events.on("added", f)
        events.removeAllListeners("added")
        assert events.listener_count("added") == 0
        events.on("added", f)
        events.remove_listener("added", f)
        q.add("b", {})
        time.sleep(0.2)
    assert calls == ["g"]


def test_queue_listeners_run_in_a_thread_and_get_blocking_jobs(redis_url: str, prefix: str) -> None:
    seen: list[Any] = []
    with sync.Queue("qlisten", connection=redis_url, prefix=prefix) as q:
        q.on("waiting", lambda job: seen.append((type(job).__name__, q.get_job(job.id).data)))
        q.add("a", {"n": 1})
        wait_for(lambda: seen, what="the waiting listener")
    assert seen == [("Job", {"n": 1})] and isinstance(q, sync.Queue)


FORK_EXIT_PROGRAM = textwrap.dedent(
    """
    import os, sys, time
    from bullfast import sync
    q = sync.Queue("forkexit", connection=sys.argv[1], prefix=sys.argv[2])
    q.get_job_counts()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        sys.exit(0)  # atexit runs here too
    os.waitpid(pid, 0)
    print(f"{time.monotonic() - started:.2f}")
    q.close()
    """
)


def test_a_forked_child_exits_at_once(redis_url: str, prefix: str) -> None:
    """The parent's clean-up at exit ran in the child too, and waited 5 s for a loop that no
    thread of the child runs."""
    out = subprocess.run([sys.executable, "-c", FORK_EXIT_PROGRAM, redis_url, prefix],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) < 2.0, out.stdout


def run_in_thread(fn: Callable[[], Any], timeout: float = 20) -> None:
    """Run ``fn`` in a thread and fail (rather than hang) if it does not return in time."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "deadlocked"
    assert errors == [], errors


def test_closing_from_listeners_never_deadlocks(redis_url: str, prefix: str) -> None:
    """Closing through a job's queue (a view of its own) from a listener, and two objects'
    listeners each closing both: they deadlocked, each close waiting for a listener that
    waited in the other."""
    def scenario() -> None:
        with sync.Queue("cl", connection=redis_url, prefix=prefix) as q:
            q.add_bulk([{"name": "j", "data": {"i": i}} for i in range(4)])
            worker = sync.Worker("cl", lambda job: job.data["i"], connection=redis_url, prefix=prefix,
                                 drain_delay=0.2)
            events = sync.QueueEvents("cl", connection=redis_url, prefix=prefix, last_event_id="0")
            closed = threading.Event()

            def shutdown(*_: Any) -> None:
                worker.close()
                events.close()
                closed.set()

            worker.on("completed", lambda job, result: shutdown() if result == 3 else None)
            events.on("completed", lambda args, event_id: shutdown() if args["returnvalue"] == 3 else None)
            assert closed.wait(15)
            worker.close()
            events.close()

        with sync.Queue("cl2", connection=redis_url, prefix=prefix) as q2:
            q2.add("j", {})
            other = sync.Worker("cl2", lambda job: "ok", connection=redis_url, prefix=prefix, drain_delay=0.2)
            done = threading.Event()
            other.on("completed", lambda job, result: (job.queue.close(), done.set()))
            assert done.wait(15)
            other.close()

    run_in_thread(scenario)


def test_events_after_a_close_from_a_listener_still_reach_listeners(redis_url: str, prefix: str) -> None:
    errors: list[str] = []
    with sync.Queue("late", connection=redis_url, prefix=prefix) as q:
        q.add_bulk([{"name": "j", "data": {"i": i}} for i in range(3)])
        worker = sync.Worker("late", lambda job: job.data["i"], connection=redis_url, prefix=prefix,
                             concurrency=3, drain_delay=0.2)
        worker.on("error", lambda err: errors.append(str(err)))

        def completed(job: Any, result: Any) -> None:
            if result == 0:
                time.sleep(0.3)
                worker.close()
            else:
                raise ValueError(f"listener failed for {result}")

        worker.on("completed", completed)
        wait_for(lambda: len(errors) == 2, timeout=10, what="two error events")
        worker.close()
    assert sorted(errors) == ["listener failed for 1", "listener failed for 2"]


EXIT_WORKER_PROGRAM = textwrap.dedent(
    """
    import sys, time
    from bullfast import sync
    url, prefix = sys.argv[1:3]
    q = sync.Queue("exitw", connection=url, prefix=prefix)
    q.add_bulk([{"name": "x", "data": {}} for _ in range(5000)])
    w = sync.Worker("exitw", lambda job: time.sleep(0.001), connection=url, prefix=prefix, concurrency=50)
    w.on("completed", lambda job, result: time.sleep(0.01))
    time.sleep(0.3)
    print("exiting", flush=True)
    # leaves without closing: the running jobs stay active, for the stalled check
    """
)


def test_leaving_with_a_worker_running_fails_no_job_and_is_quick(redis_url: str, prefix: str) -> None:
    """Python shut the thread pools down before bullfast's exit hook: the worker failed the
    jobs it could no longer hand to its pool (for good), and ran the listeners' backlog."""
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", EXIT_WORKER_PROGRAM, redis_url, prefix],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "exiting", out
    assert time.monotonic() - started < 20
    assert "Traceback" not in out.stderr, out.stderr
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.zcard(f"{prefix}:exitw:failed") == 0
    finally:
        client.close()


@pytest.mark.parametrize("kind", ["plain", "async"])
@pytest.mark.parametrize("raised", [SystemExit(2), KeyboardInterrupt()])
def test_a_processor_that_raises_system_exit_fails_its_job_only(
    redis_url: str, prefix: str, kind: str, raised: BaseException
) -> None:
    """sys.exit() (argparse on bad input) or a KeyboardInterrupt raised by a job's own code:
    the job fails, and the worker and every other blocking object go on. Before, it stopped
    bullfast.sync's shared loop thread: the job stayed active, nothing was processed any more,
    and every later call raised a misleading EventLoopError."""
    queue_name = f"exit-{kind}-{type(raised).__name__}"

    def plain(job: Any) -> Any:
        if job.name == "bad":
            raise raised
        return "ok"

    async def coroutine(job: Any) -> Any:
        return plain(job)

    with sync.Queue(queue_name, connection=redis_url, prefix=prefix) as q:
        worker = sync.Worker(queue_name, plain if kind == "plain" else coroutine,
                             connection=redis_url, prefix=prefix, drain_delay=0.2)
        try:
            bad = q.add("bad", {})
            wait_for(lambda: q.get_job_state(bad.id) == "failed", what="the bad job failed")
            reason = q.get_job(bad.id).failed_reason
            assert reason.startswith(f"the processor raised {type(raised).__name__}"), reason
            good = q.add("good", {})  # the shared loop still runs, and so does the worker
            wait_for(lambda: q.get_job_state(good.id) == "completed", what="the next job completed")
        finally:
            worker.close()


def test_blocking_worker_close_force_and_settings(redis_url: str, prefix: str) -> None:
    """close(force=True) reaches the async worker (it raised TypeError: no arguments), and so
    does a setting changed on the blocking view (concurrency was set on the view only)."""
    release = threading.Event()
    running: list[str] = []

    def stuck(job: Any) -> Any:
        running.append(job.id)
        release.wait(10)
        return 1

    with sync.Queue("close-force", connection=redis_url, prefix=prefix) as q:
        worker = sync.Worker("close-force", stuck, connection=redis_url, prefix=prefix, drain_delay=0.2)
        try:
            worker.concurrency = 3
            assert worker._target.concurrency == 3 and worker.concurrency == 3
            worker.label = "mine"  # (not a setting of the async worker: the view's own)
            assert worker.label == "mine" and not hasattr(worker._target, "label")
            q.add_bulk([{"name": "j", "data": {}} for _ in range(3)])
            wait_for(lambda: len(running) == 3, what="three jobs running at once")
            started = time.monotonic()
            worker.close(force=True)
            assert time.monotonic() - started < 3
            assert q.get_job_counts("active")["active"] == 3  # left for the stalled check
        finally:
            release.set()


def test_blocking_queue_events_start_after_autorun_false(redis_url: str, prefix: str) -> None:
    """start() in a blocking program (it asked for a running event loop, "or use bullfast.sync")."""
    seen: list[str] = []
    with (
        sync.Queue("events-start", connection=redis_url, prefix=prefix) as q,
        sync.QueueEvents("events-start", connection=redis_url, prefix=prefix, autorun=False) as events,
    ):
        events.on("added", lambda args, *_: seen.append(args["name"]))
        events.start()
        events.wait_until_ready()
        q.add("after", {})
        wait_for(lambda: seen == ["after"], what="the event added after start()")


BLOCKED_AT_EXIT = textwrap.dedent("""
    import sys, threading, time
    from bullfast import sync
    url, prefix, kind, daemon = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "daemon"
    if kind == "run":
        w = sync.Worker("exit-run", lambda job: 1, connection=url, prefix=prefix, autorun=False)
        target = w.run
    elif kind == "iter":
        events = sync.QueueEvents("exit-iter", connection=url, prefix=prefix)
        target = lambda: [e for e in events]
    else:
        q = sync.Queue("exit-wait", connection=url, prefix=prefix)
        events = sync.QueueEvents("exit-wait", connection=url, prefix=prefix)
        job = q.add("x", {})
        target = lambda: job.wait_until_finished(events)
    threading.Thread(target=target, daemon=daemon).start()
    time.sleep(0.3)
    print("done")
""")


@pytest.mark.parametrize("daemon", ["daemon", "plain"])
@pytest.mark.parametrize("kind", ["run", "iter", "wait"])
def test_threads_blocked_in_calls_at_exit_are_quiet(redis_url: str, prefix: str, kind: str, daemon: str) -> None:
    """A thread of the program still in worker.run(), in a QueueEvents loop or in
    wait_until_finished when the program ends (a web app's worker thread): the exit is quiet
    (threading printed the CancelledError of the call cancelled at exit)."""
    out = subprocess.run([sys.executable, "-c", BLOCKED_AT_EXIT, redis_url, prefix, kind, daemon],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "done", out
    assert out.stderr == "", out.stderr


def test_subclasses_of_blocking_objects_keep_their_own_attributes(redis_url: str, prefix: str) -> None:
    """Attributes a subclass sets are its own, before its super().__init__() too, and even
    when the async object has one of the same name (a review found a label in `name` moving a
    subclassed Queue to another queue, and an attribute set before __init__ raising "made
    before os.fork()")."""

    class Counting(sync.Worker):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.handled = 0
            super().__init__(*args, **kwargs)

    class Labelled(sync.Queue):
        def __init__(self, name: str, label: str) -> None:
            super().__init__(name, connection=redis_url, prefix=prefix)
            self.name = label

    worker = Counting("subclassed", None, connection=redis_url, prefix=prefix, autorun=False)
    worker.close()
    assert worker.handled == 0
    with Labelled("orders", "the orders queue") as q:
        job = q.add("x", {})
        assert q.name == "the orders queue" and q._target.name == "orders" and job.queue_name == "orders"


@pytest.mark.parametrize("how", ["worker", "job.queue"])
def test_a_processor_that_closes_its_own_worker_stops_after_its_job(redis_url: str, prefix: str, how: str) -> None:
    """"Stop after this job": a plain processor closing its own worker waited for its own job
    for ever (run() never returned). The close starts and returns; the worker closes once
    the job has ended, and takes no other job."""
    returned: list[float] = []

    def process(job: Any) -> Any:
        started = time.monotonic()
        (worker.close if how == "worker" else job.queue.close)()
        returned.append(time.monotonic() - started)
        return "last"

    with sync.Queue(f"own-close-{how}", connection=redis_url, prefix=prefix) as q:
        first = q.add("first", {})
        q.add("second", {})
        worker = sync.Worker(f"own-close-{how}", process, connection=redis_url, prefix=prefix, autorun=False)
        runner = threading.Thread(target=worker.run, daemon=True)
        runner.start()
        runner.join(10)
        assert not runner.is_alive() and returned and returned[0] < 1
        assert q.get_job(first.id).returnvalue == "last"
        assert q.get_job_counts("completed", "wait", "active") == {"completed": 1, "wait": 1, "active": 0}


@pytest.mark.parametrize("how", ["await", "gather", "task", "wait_for"])
async def test_an_async_processor_awaiting_its_workers_close_stops_after_its_job(
    redis_url: str, prefix: str, how: str
) -> None:
    """Also through a task the processor starts (gather, create_task; wait_for makes one on
    Python 3.10-3.11): those waited for the job that waited for them (a review found it)."""
    from bullfast import Queue

    async def process(job: Any) -> Any:
        if how == "await":
            await worker.close()
        elif how == "gather":
            await asyncio.gather(worker.close(), asyncio.sleep(0))
        elif how == "task":
            await asyncio.create_task(worker.close())
        else:
            await asyncio.wait_for(worker.close(), 3)
        return "last"

    async with Queue(f"own-close-{how}", connection=redis_url, prefix=prefix) as q:
        job = await q.add("first", {})
        await q.add("second", {})
        worker = Worker(f"own-close-{how}", process, connection=redis_url, prefix=prefix, autorun=False)
        await asyncio.wait_for(worker.run(), 10)  # (it waited for itself for ever)
        assert (await q.get_job(job.id)).returnvalue == "last"  # type: ignore[union-attr]
        assert await q.get_job_counts("completed", "wait", "active") == {"completed": 1, "wait": 1, "active": 0}


STUCK_PROGRAM = textwrap.dedent("""
    import sys, threading
    from bullfast import sync
    url, prefix = sys.argv[1:3]
    started = threading.Event()

    def hangs(job):
        started.set()
        threading.Event().wait()  # a call that never returns

    with sync.Queue("stuck", connection=url, prefix=prefix) as q:
        q.add("j", {})
        worker = sync.Worker("stuck", hangs, connection=url, prefix=prefix)
        assert started.wait(10)
        worker.close(force=True)
        print(q.get_job_counts("active")["active"], flush=True)
""")


def test_a_program_ends_after_giving_up_on_a_hung_plain_processor(redis_url: str, prefix: str) -> None:
    """close(force=True) gives up on a job whose processor never returns; the program then
    ends (the pool's threads were joined at exit: it hung for ever), the job left active for
    the stalled check."""
    out = subprocess.run([sys.executable, "-c", STUCK_PROGRAM, redis_url, prefix],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "1", out


async def test_a_close_started_by_a_job_that_fails_is_reported(redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A close the worker's own job started is not waited for: its failure (Redis did not
    take the last outcomes) comes as an 'error' event, where it was lost."""
    from bullfast import Queue
    from bullfast.errors import RedisUnavailableError as Unavailable

    async def failing_close(self: Any, force: bool, redis_timeout: float) -> None:
        raise Unavailable("Redis did not take the outcome of 1 job(s)")

    async def process(job: Any) -> Any:
        await worker.close()
        return "last"

    monkeypatch.setattr(Worker, "_close", failing_close)
    async with Queue("own-close-error", connection=redis_url, prefix=prefix) as q:
        await q.add("first", {})
        worker = Worker("own-close-error", process, connection=redis_url, prefix=prefix)
        errors: list[BaseException] = []
        worker.on("error", errors.append)
        for _ in range(100):
            if errors:
                break
            await asyncio.sleep(0.05)
        assert [str(e) for e in errors] == ["Redis did not take the outcome of 1 job(s)"]
        monkeypatch.undo()
        worker._close_task = None
        await worker.close(force=True)


async def test_closes_that_are_not_the_jobs_own_wait_for_the_close(redis_url: str, prefix: str) -> None:
    """Only the job itself gets the early return: a listener of an event the job emits, and a
    task the job started that runs on after it, wait for the close as any caller (both
    returned at once, the worker still open; a review found it)."""
    from bullfast import Queue

    seen: dict[str, bool] = {}

    async def closing_listener(job: Any, progress: Any) -> None:
        await worker.close()
        seen["progress"] = worker.closed

    async def process(job: Any) -> Any:
        if job.name == "progress":
            await job.update_progress(50)
        else:
            async def later() -> None:
                await asyncio.sleep(0.3)
                await worker.close()
                seen["task"] = worker.closed
            keep.append(asyncio.ensure_future(later()))
        return 1

    keep: list[asyncio.Future[None]] = []
    for name in ("progress", "task"):
        async with Queue(f"not-own-{name}", connection=redis_url, prefix=prefix) as q:
            await q.add(name, {})
            worker = Worker(f"not-own-{name}", process, connection=redis_url, prefix=prefix)
            if name == "progress":
                worker.on("progress", closing_listener)
            for _ in range(100):
                if name in seen:
                    break
                await asyncio.sleep(0.05)
            assert seen.get(name) is True, seen
            await worker.close()


async def test_close_under_a_task_factory_of_the_old_signature(redis_url: str, prefix: str) -> None:
    """A loop whose task factory takes (loop, coro), as many did before Python 3.11: close()
    raised TypeError (a task made with context=, which Python 3.10 has not either)."""
    loop = asyncio.get_running_loop()
    loop.set_task_factory(lambda loop, coro: asyncio.Task(coro, loop=loop))
    try:
        worker = Worker("factory", None, connection=redis_url, prefix=prefix)
        await worker.close()
        assert worker.closed
    finally:
        loop.set_task_factory(None)


@pytest.mark.private_redis  # (pauses the server)
def test_a_plain_processors_close_that_fails_is_reported(redis_url: str, prefix: str) -> None:
    """The same for a plain processor of a blocking worker: the close it started was only
    known as the job's by then over, and its failure was lost."""
    errors: list[BaseException] = []
    admin = redis.Redis.from_url(redis_url)

    def process(job: Any) -> Any:
        worker.close(redis_timeout=0.3)
        admin.client_pause(1500)  # (the job's outcome cannot be written in time)
        return 1

    with sync.Queue("plain-close-error", connection=redis_url, prefix=prefix) as q:
        q.add("j", {})
        worker = sync.Worker("plain-close-error", process, connection=redis_url, prefix=prefix, autorun=False)
        worker.on("error", errors.append)
        runner = threading.Thread(target=worker.run, daemon=True)
        runner.start()
        wait_for(lambda: errors, timeout=10, what="the close's error")
        assert isinstance(errors[0], RedisUnavailableError) and "closed without recording" in str(errors[0])
        runner.join(5)
    admin.close()


@pytest.mark.private_redis  # (pauses the server)
async def test_a_close_error_no_waiting_close_raises_is_emitted(redis_url: str, prefix: str) -> None:
    """The close's failure reaches someone: raised by a close() still waiting for it, else
    emitted. A job started the close and a close() that waited was cancelled: it was lost."""
    from bullfast import Queue

    admin = redis.asyncio.Redis.from_url(redis_url)

    async def process(job: Any) -> Any:
        await worker.close(redis_timeout=0.3)
        await admin.client_pause(1500)
        return 1

    async with Queue("close-error-waiter", connection=redis_url, prefix=prefix) as q:
        await q.add("j", {})
        worker = Worker("close-error-waiter", process, connection=redis_url, prefix=prefix)
        errors: list[BaseException] = []
        worker.on("error", errors.append)
        while not worker.closing:
            await asyncio.sleep(0.01)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(worker.close(), 0.1)  # gives up waiting
        for _ in range(100):
            if errors:
                break
            await asyncio.sleep(0.05)
        assert [type(e) for e in errors] == [RedisUnavailableError]
        await worker.close()  # (closed is closed: returns)
    await admin.aclose()


def test_a_worker_closed_by_its_own_job_ends_its_listeners_thread(redis_url: str, prefix: str) -> None:
    def process(job: Any) -> Any:
        job.queue.close()
        return 1

    before = {t.ident for t in threading.enumerate()}
    with sync.Queue("own-close-listeners", connection=redis_url, prefix=prefix) as q:
        q.add("j", {})
        worker = sync.Worker("own-close-listeners", process, connection=redis_url, prefix=prefix, autorun=False)
        worker.on("completed", lambda job, result: None)
        runner = threading.Thread(target=worker.run, daemon=True)
        runner.start()
        runner.join(10)
        assert not runner.is_alive()
        wait_for(lambda: worker.closed, what="the worker closed")
        wait_for(lambda: not [t for t in threading.enumerate()
                              if t.ident not in before and t.name.startswith("bullfast-listeners")],
                 what="the listeners' thread ended")


async def test_a_close_error_reaches_someone_when_its_waiter_is_cancelled_as_it_ends(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The close failed, and the one close() waiting for it was cancelled just after (a timeout
    firing in that same loop iteration): neither raised nor emitted, it was lost."""
    from bullfast.errors import RedisUnavailableError as Unavailable

    async def failing_close(self: Any, force: bool, redis_timeout: float) -> None:
        raise Unavailable("Redis did not take the outcome of 1 job(s)")

    worker = Worker("close-cancelled-waiter", None, connection=redis_url, prefix=prefix, autorun=False)
    errors: list[BaseException] = []
    worker.on("error", errors.append)
    monkeypatch.setattr(Worker, "_close", failing_close)
    waiter = asyncio.ensure_future(worker.close())
    await asyncio.sleep(0)  # (the close task is made, the waiter waits for it)
    assert worker._close_task is not None
    worker._close_task.add_done_callback(lambda _: waiter.cancel())
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await asyncio.sleep(0.05)
    assert [str(e) for e in errors] == ["Redis did not take the outcome of 1 job(s)"]
    monkeypatch.undo()
    worker._close_task = None
    await worker.close()


def test_a_wrong_argument_to_a_jobs_own_close_fails_the_job(redis_url: str, prefix: str) -> None:
    """It raised in a task no one read: the job completed and the worker never closed."""
    def process(job: Any) -> Any:
        job.queue.close(timeout=0.3)
        return 1

    with sync.Queue("own-close-badkw", connection=redis_url, prefix=prefix) as q:
        job = q.add("j", {})
        worker = sync.Worker("own-close-badkw", process, connection=redis_url, prefix=prefix)
        try:
            wait_for(lambda: q.get_job_state(job.id) == "failed", what="the job failed")
            assert "unexpected keyword argument 'timeout'" in q.get_job(job.id).failed_reason
        finally:
            worker.close()
