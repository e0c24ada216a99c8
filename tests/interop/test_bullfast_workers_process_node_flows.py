"""Worker-side interop: flows added by the real Node ``bullmq`` FlowProducer, processed by
bullfast Workers (and, in the mixed tests, partly by Node Workers).

Each test has Node (tests/interop/node/run.mjs) add the flows, runs bullfast Workers on them,
then asks Node to read the same jobs back (``getChildrenValues``, ``getIgnoredChildrenFailures``,
``getDependencies``, ``getDependenciesCount``, state, result, reason, attempts) and checks that
both libraries agree. Children added by Node's FlowProducer have no failure policy unless one
is given (BullMQ's default), which bullfast's workers must honour from the ``parent`` field.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bullfast import Queue, QueueEvents, WaitingChildrenError
from bullfast.job import Job
from bullfast.worker import Worker

from .node import Report, run_node


def flow(name: str, queue: str, data: Any = None, opts: dict[str, Any] | None = None,
         children: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A node of a Node FlowProducer tree (bullmq's FlowJob)."""
    node: dict[str, Any] = {"name": name, "queueName": queue, "data": data if data is not None else {}}
    if opts:
        node["opts"] = opts
    if children:
        node["children"] = children
    return node


async def node_add(redis_url: str, prefix: str, flows: list[dict[str, Any]]) -> Report:
    """Node's FlowProducer adds the flows; nothing is processed."""
    report = await run_node({"redis": redis_url, "prefix": prefix, "flows": flows})
    assert report.processed == []
    return report


async def node_view(redis_url: str, prefix: str, queues: list[str]) -> Report:
    """Node's reading of every job of those queues (no workers)."""
    return await run_node({"redis": redis_url, "prefix": prefix, "reportQueues": queues})


def walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    out = [node]
    for child in node.get("children") or []:
        out += walk(child)
    return out


class Fleet:
    """bullfast Workers and Queues of one test, all closed at the end."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self.url, self.prefix = redis_url, prefix
        self.workers: list[Worker] = []
        self.queues: dict[str, Queue] = {}
        self.completed: list[tuple[str, str, Any]] = []
        self.failed: list[tuple[str, str, str]] = []

    def worker(self, queue: str, processor: Any, **kw: Any) -> Worker:
        w = Worker(queue, processor, connection=self.url, prefix=self.prefix, drain_delay=0.2, **kw)
        w.on("completed", lambda job, result, *_: self.completed.append((job.queue_name, job.id, result)))
        w.on("failed", lambda job, err, *_: self.failed.append((job.queue_name, job.id, str(err))))
        self.workers.append(w)
        return w

    def queue(self, name: str) -> Queue:
        if name not in self.queues:
            self.queues[name] = Queue(name, connection=self.url, prefix=self.prefix)
        return self.queues[name]

    async def job(self, queue: str, job_id: str) -> Job:
        job = await self.queue(queue).get_job(job_id)
        assert job is not None, f"{queue}:{job_id} is gone"
        return job

    async def state(self, queue: str, job_id: str) -> str:
        return await self.queue(queue).get_job_state(job_id)

    async def wait_state(self, queue: str, job_id: str, state: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while (actual := await self.state(queue, job_id)) != state:
            if time.monotonic() > deadline:
                raise AssertionError(f"{queue}:{job_id} is {actual}, not {state}; failed: {self.failed}")
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        hung = []
        for w in self.workers:
            try:
                await asyncio.wait_for(w.close(), 10)
            except asyncio.TimeoutError:
                hung.append(w.name)
        for q in self.queues.values():
            await q.close()
        assert not hung, f"Worker.close() did not return within 10s: {hung}"


@pytest.fixture
async def fleet(redis_url: str, prefix: str) -> AsyncIterator[Fleet]:
    f = Fleet(redis_url, prefix)
    try:
        yield f
    finally:
        await f.close()


def is_leaf(job: Job) -> bool:
    return job.name.startswith(("leaf", "bad", "flaky", "prio", "delayed", "plain"))


async def bullfast_processor(job: Job) -> Any:
    """Leaves double data.v (``bad*`` always fails, ``flaky*`` fails its first two attempts);
    parents report what bullfast reads of their children."""
    if job.name.startswith("bad"):
        raise RuntimeError(f"{job.name} failed in bullfast")
    if job.name.startswith("flaky") and job.attempts_made < 2:
        raise RuntimeError(f"flaky attempt {job.attempts_made + 1}")
    if is_leaf(job):
        return {"name": job.name, "queue": job.queue_name, "doubled": job.data["v"] * 2,
                "attempts": job.attempts_made + 1}
    return await parent_reading(job)


async def parent_reading(job: Job) -> dict[str, Any]:
    return {
        "name": job.name,
        "values": await job.get_children_values(),
        "ignored": await job.get_ignored_children_failures(),
        "counts": await job.get_dependencies_count(),
        "deps": await job.get_dependencies(),
    }


def assert_node_agrees(node_job: dict[str, Any], bf_reading: dict[str, Any]) -> None:
    """Node's getChildrenValues / getIgnoredChildrenFailures / getDependenciesCount /
    getDependencies of a parent equal bullfast's readings of the same parent."""
    assert node_job["childrenValues"] == bf_reading["values"]
    assert node_job["ignoredChildrenFailures"] == bf_reading["ignored"]
    assert node_job["dependenciesCount"] == bf_reading["counts"]
    deps = node_job["dependencies"]
    assert deps["processed"] == bf_reading["deps"]["processed"]
    assert sorted(deps["unprocessed"]) == sorted(bf_reading["deps"]["unprocessed"])
    assert sorted(deps.get("failed") or []) == sorted(bf_reading["deps"]["failed"])
    assert (deps.get("ignored") or {}) == bf_reading["deps"]["ignored"]


async def bf_reading(fleet: Fleet, queue: str, job_id: str) -> dict[str, Any]:
    return await parent_reading(await fleet.job(queue, job_id))


# ------------------------------------------------------------------------------------------


async def test_nested_multi_queue_node_flows(redis_url: str, prefix: str, fleet: Fleet) -> None:
    nested = flow("root", "ni-a", {"v": 0}, children=[
        flow("mid", "ni-b", {"v": 0}, children=[
            flow("leaf", "ni-c", {"v": 1}), flow("leaf", "ni-a", {"v": 2}), flow("leaf", "ni-b", {"v": 3}),
        ]),
        flow("leaf", "ni-c", {"v": 4}),
        flow("mid2", "ni-c", {"v": 0}, children=[flow("leaf", "ni-b", {"v": 5, "text": "héllo ✓"})]),
    ])
    multi = flow("root", "nm-root", {"v": 0}, children=[
        flow("leaf", "nm-1", {"v": 10}), flow("leaf", "nm-2", {"v": 20}),
        flow("leaf", "nm-2", {"v": 21}), flow("leaf", "nm-3", {"v": 30}),
    ])
    added = await node_add(redis_url, prefix, [nested, multi])
    calls: Counter[tuple[str, str]] = Counter()
    seq = iter(range(1000))
    started: dict[str, int] = {}
    ended: dict[str, int] = {}

    async def processor(job: Job) -> Any:
        calls[(job.queue_name, job.id)] += 1
        started[job.key] = next(seq)
        result = await bullfast_processor(job)
        ended[job.key] = next(seq)
        return result

    queues = ["ni-a", "ni-b", "ni-c", "nm-root", "nm-1", "nm-2", "nm-3"]
    for q in queues:
        fleet.worker(q, processor, concurrency=2)
    for root in added.flows:
        await fleet.wait_state(root["queue"], root["id"], "completed")
    all_nodes = [n for root in added.flows for n in walk(root)]
    assert len(calls) == len(all_nodes) == 13 and set(calls.values()) == {1}

    view = await node_view(redis_url, prefix, queues)
    for n in all_nodes:
        job = await fleet.job(n["queue"], n["id"])
        seen_by_node = view.job(n["queue"], n["id"])
        assert seen_by_node["state"] == "completed" and seen_by_node["attemptsMade"] == 1
        assert seen_by_node["returnvalue"] == job.returnvalue
        if n.get("children"):
            # the parent's get_children_values() is exactly its children's results
            expected = {c["key"]: (await fleet.job(c["queue"], c["id"])).returnvalue for c in n["children"]}
            assert job.returnvalue["values"] == expected
            assert job.returnvalue["counts"] == {"processed": len(expected), "unprocessed": 0, "ignored": 0,
                                                 "failed": 0}
            assert_node_agrees(seen_by_node, await bf_reading(fleet, n["queue"], n["id"]))
            # every child ended before the parent started (the finishedOn / processedOn stamps
            # are client clocks of different workers, taken before their calls reach Redis)
            for c in n["children"]:
                assert ended[c["key"]] < started[n["key"]]
        else:
            assert job.returnvalue["doubled"] == job.data["v"] * 2
            assert job.parent_key == seen_by_node["parentKey"]
    mid2_leaf = added.flows[0]["children"][2]["children"][0]
    assert (await fleet.job(mid2_leaf["queue"], mid2_leaf["id"])).data["text"] == "héllo ✓"


async def test_node_text_cut_inside_an_emoji_is_read_and_returned(redis_url: str, prefix: str, fleet: Fleet) -> None:
    """JSON.stringify writes a string cut inside an emoji ("ok 😀".slice(0, 4)) with an escaped
    lone surrogate; bullfast failed such a job unread ("job data is not valid JSON"), and lost
    such a result (None) where Node reads both."""
    texts = ["ok \ud83d", "\ude00 é"]
    added = await node_add(redis_url, prefix, [
        flow("sum", "su-p", children=[flow("echo", "su-c", {"t": t}) for t in texts])])

    async def processor(job: Job) -> Any:
        if job.name == "echo":
            return job.data["t"]
        return await job.get_children_values()

    events = QueueEvents("su-c", connection=redis_url, prefix=prefix, last_event_id="0-0")
    seen: list[Any] = []
    events.on("completed", lambda args, *_: seen.append(args["returnvalue"]))
    try:
        fleet.worker("su-c", processor, concurrency=2)
        fleet.worker("su-p", processor)
        root = added.flows[0]
        await fleet.wait_state("su-p", root["id"], "completed")
        assert not fleet.failed
        view = await node_view(redis_url, prefix, ["su-p", "su-c"])
        children = {c["key"]: c for c in root["children"]}
        expected = {key: (await fleet.job("su-c", c["id"])).data["t"] for key, c in children.items()}
        assert sorted(expected.values()) == sorted(texts)
        assert (await fleet.job("su-p", root["id"])).returnvalue == expected
        assert view.job("su-p", root["id"])["returnvalue"] == expected  # as Node reads it
        for key, c in children.items():
            assert view.job("su-c", c["id"])["returnvalue"] == expected[key]
        deadline = time.monotonic() + 5
        while len(seen) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert sorted(seen) == sorted(texts)
    finally:
        await events.close()


async def test_all_failure_policies_of_node_flows(redis_url: str, prefix: str, fleet: Fleet) -> None:
    flows = [
        flow("p-fpof", "po-p", children=[
            flow("bad-fpof", "po-c", {"v": 1}, {"failParentOnFailure": True}),
            flow("leaf", "po-c", {"v": 2})]),
        flow("p-idof", "po-p", children=[
            flow("bad-idof", "po-c", {"v": 1}, {"ignoreDependencyOnFailure": True, "attempts": 2}),
            flow("leaf", "po-c", {"v": 3})]),
        flow("p-rdof", "po-p", children=[
            flow("bad-rdof", "po-c", {"v": 1}, {"removeDependencyOnFailure": True}),
            flow("leaf", "po-c", {"v": 4})]),
        flow("p-cpof", "po-p", children=[
            flow("bad-cpof", "po-c", {"v": 1}, {"continueParentOnFailure": True}),
            flow("leaf", "po-late", {"v": 5})]),
        flow("p-none", "po-p", children=[flow("bad-none", "po-c", {"v": 1}), flow("leaf", "po-c", {"v": 6})]),
        flow("p-root", "po-p", children=[
            flow("p-mid", "po-mid", opts={"failParentOnFailure": True}, children=[
                flow("bad-deep", "po-c", {"v": 1}, {"failParentOnFailure": True})]),
            flow("leaf", "po-c", {"v": 7}, {"failParentOnFailure": True})]),
    ]
    added = await node_add(redis_url, prefix, flows)
    by_name = {f["name"]: f for f in added.flows}
    fpof, idof, rdof, cpof, none, root = (
        by_name[n] for n in ("p-fpof", "p-idof", "p-rdof", "p-cpof", "p-none", "p-root")
    )
    mid = root["children"][0]
    parent_runs: Counter[str] = Counter()
    cpof_first: dict[str, Any] = {}

    async def parent(job: Job, token: str) -> Any:
        parent_runs[job.name] += 1
        reading = await parent_reading(job)
        if reading["deps"]["unprocessed"]:
            # continueParentOnFailure: running while a sibling is still pending
            cpof_first.update(reading)
            assert await job.move_to_waiting_children(token)
            raise WaitingChildrenError()
        return reading

    fleet.worker("po-c", bullfast_processor, concurrency=3)
    fleet.worker("po-p", parent, concurrency=2)
    fleet.worker("po-mid", parent)

    def key(n: dict[str, Any]) -> str:
        return n["key"]

    await fleet.wait_state("po-p", fpof["id"], "failed")
    await fleet.wait_state("po-p", idof["id"], "completed")
    await fleet.wait_state("po-p", rdof["id"], "completed")
    await fleet.wait_state("po-p", cpof["id"], "waiting-children")
    await fleet.wait_state("po-p", root["id"], "failed")
    await fleet.wait_state("po-mid", mid["id"], "failed")
    for f in (fpof, idof, rdof, none):
        await fleet.wait_state("po-c", f["children"][1]["id"], "completed")
        await fleet.wait_state("po-c", f["children"][0]["id"], "failed")
    # the default policy of a Node flow child: the parent keeps waiting (8.3)
    assert await fleet.state("po-p", none["id"]) == "waiting-children"
    assert cpof_first["ignored"] == {key(cpof["children"][0]): "bad-cpof failed in bullfast"}
    assert cpof_first["deps"]["unprocessed"] == [key(cpof["children"][1])]

    fleet.worker("po-late", bullfast_processor)
    await fleet.wait_state("po-p", cpof["id"], "completed")

    # fpof: failed without running, with BullMQ's reason; climbs through fpof links
    assert "p-fpof" not in parent_runs and "p-root" not in parent_runs and "p-mid" not in parent_runs
    assert (await fleet.job("po-p", fpof["id"])).failed_reason == f"child {key(fpof['children'][0])} failed"
    assert (await fleet.job("po-mid", mid["id"])).failed_reason == f"child {key(mid['children'][0])} failed"
    assert (await fleet.job("po-p", root["id"])).failed_reason == f"child {key(mid)} failed"
    # idof: the failure is "ignored" and the parent ran after the other child
    idof_result = (await fleet.job("po-p", idof["id"])).returnvalue
    assert idof_result["ignored"] == {key(idof["children"][0]): "bad-idof failed in bullfast"}
    assert idof_result["counts"] == {"processed": 1, "unprocessed": 0, "ignored": 1, "failed": 0}
    assert (await fleet.job("po-c", idof["children"][0]["id"])).attempts_made == 2
    # rdof: as if the child never existed
    rdof_result = (await fleet.job("po-p", rdof["id"])).returnvalue
    assert rdof_result["counts"] == {"processed": 1, "unprocessed": 0, "ignored": 0, "failed": 0}
    assert list(rdof_result["values"]) == [key(rdof["children"][1])]
    # cpof: ran twice, the second time with everything done
    assert parent_runs["p-cpof"] == 2
    cpof_result = (await fleet.job("po-p", cpof["id"])).returnvalue
    assert cpof_result["counts"] == {"processed": 1, "unprocessed": 0, "ignored": 1, "failed": 0}

    view = await node_view(redis_url, prefix, ["po-p", "po-mid", "po-c", "po-late"])
    for f in (fpof, idof, rdof, cpof, none, root):
        assert_node_agrees(view.job("po-p", f["id"]), await bf_reading(fleet, "po-p", f["id"]))
    assert_node_agrees(view.job("po-mid", mid["id"]), await bf_reading(fleet, "po-mid", mid["id"]))
    node_fpof = view.job("po-p", fpof["id"])
    assert node_fpof["state"] == "failed"
    assert node_fpof["failedReason"] == f"child {key(fpof['children'][0])} failed"
    assert node_fpof["dependenciesCount"] == {"processed": 1, "unprocessed": 0, "ignored": 0, "failed": 1}
    assert view.job("po-p", root["id"])["failedReason"] == f"child {key(mid)} failed"
    node_none = view.job("po-p", none["id"])
    assert node_none["state"] == "waiting-children"
    assert node_none["dependencies"]["unprocessed"] == [key(none["children"][0])]
    assert view.job("po-p", idof["id"])["ignoredChildrenFailures"] == {
        key(idof["children"][0]): "bad-idof failed in bullfast"}
    assert view.job("po-p", cpof["id"])["returnvalue"] == cpof_result
    bad_idof = view.job("po-c", idof["children"][0]["id"])
    assert bad_idof["state"] == "failed" and bad_idof["attemptsMade"] == 2
    assert bad_idof["failedReason"] == "bad-idof failed in bullfast"


async def test_node_flow_retries_priorities_and_delays(redis_url: str, prefix: str, fleet: Fleet) -> None:
    added = await node_add(redis_url, prefix, [
        flow("parent", "rp-p", children=[
            flow("flaky", "rp-c", {"v": 1}, {"attempts": 3, "backoff": {"type": "exponential", "delay": 40}}),
            flow("flaky-fixed", "rp-c", {"v": 2}, {"attempts": 3, "backoff": {"type": "fixed", "delay": 60}}),
            flow("prio-3", "rp-o", {"v": 3}, {"priority": 3}),
            flow("delayed", "rp-o", {"v": 4}, {"delay": 300}),
            flow("prio-1", "rp-o", {"v": 5}, {"priority": 1}),
            flow("plain", "rp-o", {"v": 6}),
            flow("prio-2", "rp-o", {"v": 7}, {"priority": 2}),
        ]),
    ])
    (parent,) = added.flows
    children = {c["name"]: c for c in parent["children"]}
    starts: dict[str, list[float]] = {}
    order: list[str] = []

    async def processor(job: Job) -> Any:
        starts.setdefault(job.name, []).append(time.monotonic())
        if job.queue_name == "rp-o":
            order.append(job.name)
        return await bullfast_processor(job)

    fleet.worker("rp-c", processor, concurrency=2)
    fleet.worker("rp-o", processor)
    fleet.worker("rp-p", processor)
    await fleet.wait_state("rp-p", parent["id"], "completed")

    # waiting before prioritized, then by priority; the delayed child when due (where it comes
    # among them depends on when the workers start: once due it is waiting, before the
    # prioritized ones, in Node too)
    assert [name for name in order if name != "delayed"] == ["plain", "prio-1", "prio-2", "prio-3"]
    assert sorted(order) == sorted(["plain", "prio-1", "prio-2", "prio-3", "delayed"])
    delayed = await fleet.job("rp-o", children["delayed"]["id"])
    assert delayed.processed_on - delayed.timestamp >= 300
    # backoff between attempts (exponential 40, 80; fixed 60, 60)
    g = [(b - a) * 1000 for a, b in zip(starts["flaky"], starts["flaky"][1:])]
    assert len(g) == 2 and g[0] >= 35 and g[1] >= 75, g
    g = [(b - a) * 1000 for a, b in zip(starts["flaky-fixed"], starts["flaky-fixed"][1:])]
    assert len(g) == 2 and g[0] >= 55 and g[1] >= 55, g

    result = (await fleet.job("rp-p", parent["id"])).returnvalue
    expected = {c["key"]: (await fleet.job(c["queue"], c["id"])).returnvalue for c in parent["children"]}
    assert result["values"] == expected
    assert result["values"][children["flaky"]["key"]]["attempts"] == 3

    view = await node_view(redis_url, prefix, ["rp-p", "rp-c", "rp-o"])
    assert_node_agrees(view.job("rp-p", parent["id"]), await bf_reading(fleet, "rp-p", parent["id"]))
    for name in ("flaky", "flaky-fixed"):
        seen = view.job("rp-c", children[name]["id"])
        assert seen["state"] == "completed" and seen["attemptsMade"] == 3 and seen["attemptsStarted"] == 3
        assert seen["failedReason"] == "flaky attempt 2"
    assert view.job("rp-o", children["delayed"]["id"])["delay"] == 0


async def test_node_workers_children_bullfast_worker_parent(
    redis_url: str, prefix: str, fleet: Fleet
) -> None:
    leaf_return = {"name": {"$job": "name"}, "queue": {"$job": "queueName"},
                   "doubled": {"$mul": [{"$data": "v"}, 2]}}
    report = await run_node({
        "redis": redis_url, "prefix": prefix, "timeoutMs": 20000,
        "flows": [flow("parent", "mx-p", children=[
            flow("leaf", "mx-c", {"v": 1}), flow("leaf", "mx-d", {"v": 2}),
            flow("bad", "mx-c", {"v": 3}, {"ignoreDependencyOnFailure": True}),
            flow("mid", "mx-d", children=[flow("leaf", "mx-c", {"v": 4})]),
        ]), flow("parent-fpof", "mx-p", children=[
            flow("bad", "mx-c", {"v": 5}, {"failParentOnFailure": True}), flow("leaf", "mx-d", {"v": 6})])],
        "workers": [
            {"queue": "mx-c", "concurrency": 2,
             "processors": {"leaf": {"return": leaf_return}, "bad": {"throw": "node child failed"}}},
            {"queue": "mx-d", "processors": {"leaf": {"return": leaf_return},
                                             "mid": {"return": {"values": {"$childrenValues": True}}}}},
        ],
        "until": {"count": {"queues": ["mx-c", "mx-d"], "n": 7}},
    })
    parent, parent_fpof = report.flows
    assert report.job("mx-p", parent["id"])["state"] == "waiting"  # released, no Node worker for it
    node_parent = report.job("mx-p", parent["id"])

    fleet.worker("mx-p", bullfast_processor)
    await fleet.wait_state("mx-p", parent["id"], "completed")
    result = (await fleet.job("mx-p", parent["id"])).returnvalue
    children = parent["children"]
    expected = {c["key"]: report.job(c["queue"], c["id"])["returnvalue"]
                for c in children if c["name"] != "bad"}
    assert result["values"] == expected
    assert result["ignored"] == {children[2]["key"]: "node child failed"}
    assert result["counts"] == {"processed": 3, "unprocessed": 0, "ignored": 1, "failed": 0}
    # Node read the same parent (just before bullfast ran it) exactly as bullfast did
    assert_node_agrees(node_parent, result)
    assert report.job("mx-d", children[3]["id"])["returnvalue"] == {
        "values": {children[3]["children"][0]["key"]: {"name": "leaf", "queue": "mx-c", "doubled": 8}}}
    # a Node child failing with failParentOnFailure: the bullfast worker fails the parent from
    # the deferred failure Node wrote, without running the processor
    await fleet.wait_state("mx-p", parent_fpof["id"], "failed")
    bad_key = parent_fpof["children"][0]["key"]
    failed_parent = await fleet.job("mx-p", parent_fpof["id"])
    assert failed_parent.failed_reason == f"child {bad_key} failed" and failed_parent.deferred_failure is None
    assert failed_parent.attempts_started == 1 and failed_parent.returnvalue is None
    assert ("mx-p", parent_fpof["id"], f"child {bad_key} failed") in fleet.failed
    assert (await failed_parent.get_dependencies())["failed"] == [bad_key]


async def test_bullfast_workers_children_node_worker_parent(
    redis_url: str, prefix: str, fleet: Fleet
) -> None:
    added = await node_add(redis_url, prefix, [flow("parent", "rx-p", children=[
        flow("leaf", "rx-c", {"v": 1}), flow("leaf", "rx-c", {"v": 2}),
        flow("bad", "rx-c", {"v": 3}, {"ignoreDependencyOnFailure": True}),
        flow("bad-rdof", "rx-c", {"v": 4}, {"removeDependencyOnFailure": True}),
        flow("mid", "rx-c", children=[flow("leaf", "rx-c", {"v": 5})]),
    ]), flow("parent-fpof", "rx-p", children=[
        flow("bad-fpof", "rx-c", {"v": 6}, {"failParentOnFailure": True})])])
    parent, parent_fpof = added.flows
    fleet.worker("rx-c", bullfast_processor, concurrency=3)
    await fleet.wait_state("rx-p", parent["id"], "waiting")
    await fleet.wait_state("rx-p", parent_fpof["id"], "waiting")
    fpof_key = parent_fpof["children"][0]["key"]
    assert (await fleet.job("rx-p", parent_fpof["id"])).deferred_failure == f"child {fpof_key} failed"
    bf_before = await bf_reading(fleet, "rx-p", parent["id"])
    children = parent["children"]
    expected = {}
    for c in children:
        if not c["name"].startswith("bad"):
            expected[c["key"]] = (await fleet.job(c["queue"], c["id"])).returnvalue
    assert bf_before["values"] == expected
    assert bf_before["ignored"] == {children[2]["key"]: "bad failed in bullfast"}

    report = await run_node({
        "redis": redis_url, "prefix": prefix, "timeoutMs": 20000,
        "workers": [{"queue": "rx-p", "processors": {"parent": {"return": {
            "values": {"$childrenValues": True},
            "ignored": {"$ignoredChildrenFailures": True},
            "counts": {"$dependenciesCount": True},
            "deps": {"$dependencies": True},
        }}, "parent-fpof": {"return": "ran"}}}],
        "until": {"jobs": [{"queue": "rx-p", "id": parent["id"], "state": "completed"},
                           {"queue": "rx-p", "id": parent_fpof["id"], "state": "failed"}]},
    })
    # Node failed the parent from the deferred failure bullfast's worker wrote (8.3)
    node_fpof = report.job("rx-p", parent_fpof["id"])
    assert node_fpof["runs"] == [] and node_fpof["failedReason"] == f"child {fpof_key} failed"
    assert node_fpof["dependencies"]["failed"] == [fpof_key]
    assert node_fpof["dependenciesCount"] == {"processed": 0, "unprocessed": 0, "ignored": 0, "failed": 1}
    node_result = report.job("rx-p", parent["id"])["returnvalue"]
    # what the Node processor read equals what bullfast reads of the same parent
    assert node_result["values"] == bf_before["values"]
    assert node_result["ignored"] == bf_before["ignored"]
    assert node_result["counts"] == bf_before["counts"] == {"processed": 3, "unprocessed": 0, "ignored": 1,
                                                            "failed": 0}
    assert node_result["deps"]["processed"] == bf_before["deps"]["processed"]
    assert node_result["deps"]["unprocessed"] == []
    assert node_result["deps"].get("ignored", {}) == bf_before["deps"]["ignored"]
    assert_node_agrees(report.job("rx-p", parent["id"]), await bf_reading(fleet, "rx-p", parent["id"]))


async def test_idle_bullfast_worker_wakes_on_node_flow_markers(
    redis_url: str, prefix: str, fleet: Fleet
) -> None:
    """A bullfast worker blocked on the marker (long drain_delay) wakes when Node adds a flow."""
    w = Worker("wk-c", bullfast_processor, connection=redis_url, prefix=prefix, drain_delay=10)
    fleet.workers.append(w)
    drained = asyncio.Event()
    done = asyncio.Event()
    w.on("drained", lambda *_: drained.set())
    w.on("completed", lambda *_: done.set())
    await asyncio.wait_for(drained.wait(), 5)
    t0 = time.monotonic()
    added = await node_add(redis_url, prefix, [
        flow("parent", "wk-p", children=[flow("leaf", "wk-c", {"v": 1})])])
    await asyncio.wait_for(done.wait(), 5)
    assert time.monotonic() - t0 < 5
    await fleet.wait_state("wk-p", added.flows[0]["id"], "waiting")
