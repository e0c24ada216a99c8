"""Producer-side interop: bullfast adds jobs and flows, the real Node ``bullmq`` Workers run them.

Each test writes with bullfast's FlowProducer/Queue under its own prefix, then runs one Node
process (tests/interop/node/run.mjs) with workers for all the scenarios of that test, and checks
what Node saw and left behind (states, return values, reasons, attempts, processing order).
"""

from __future__ import annotations

import asyncio
from typing import Any

from bullfast import FlowProducer, JobNode, Queue

from .node import NodeRun, Report, run_node

# What the Node processors do, by job name (see run.mjs for the expression language).
LEAF = {
    "return": {
        "name": {"$job": "name"},
        "queue": {"$job": "queueName"},
        "doubled": {"$mul": [{"$data": "v"}, 2]},
    }
}
PARENT = {
    "return": {
        "name": {"$job": "name"},
        "values": {"$childrenValues": True},
        "ignored": {"$ignoredChildrenFailures": True},
        "counts": {"$dependenciesCount": True},
    }
}


def worker(queue: str, processors: dict[str, Any], concurrency: int = 1, **options: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"queue": queue, "processors": processors, "concurrency": concurrency}
    if options:
        spec["options"] = options
    return spec


def spec(
    redis_url: str, prefix: str, workers: list[dict[str, Any]], until: dict[str, Any]
) -> dict[str, Any]:
    return {"redis": redis_url, "prefix": prefix, "timeoutMs": 30000, "workers": workers, "until": until}


def final(node: JobNode, state: str = "completed") -> dict[str, Any]:
    return {"queue": node.job.queue_name, "id": node.job.id, "state": state}


def rec(report: Report, node: JobNode) -> dict[str, Any]:
    """Node's final record of the job of a bullfast JobNode."""
    return report.job(node.job.queue_name, node.job.id)


def assert_children_before_parents(report: Report, node: JobNode) -> None:
    for child in node.children or []:
        assert rec(report, child)["firstRun"] < rec(report, node)["firstRun"]
        assert rec(report, child)["finishedOn"] <= rec(report, node)["processedOn"]
        assert_children_before_parents(report, child)


async def test_nested_and_multi_queue_flows(redis_url: str, prefix: str) -> None:
    async with FlowProducer(connection=redis_url, prefix=prefix) as producer:
        nested = await producer.add(
            {
                "name": "root",
                "queue_name": "nest-a",
                "data": {"v": 1, "text": "héllo ✓", "nested": {"list": [1, 2.5, None, True]}},
                "children": [
                    {
                        "name": "mid",
                        "queue_name": "nest-b",
                        "data": {"v": 2},
                        "children": [
                            {"name": "leaf", "queue_name": "nest-a", "data": {"v": 3}},
                            {"name": "leaf", "queue_name": "nest-b", "data": {"v": 4}},
                        ],
                    },
                    {"name": "leaf", "queue_name": "nest-b", "data": {"v": 5}},
                ],
            }
        )
        multi = await producer.add(
            {
                "name": "root",
                "queue_name": "multi-root",
                "data": {"v": 0},
                "children": [
                    {"name": "leaf", "queue_name": "multi-1", "data": {"v": 10}},
                    {"name": "leaf", "queue_name": "multi-2", "data": {"v": 20}},
                    {"name": "leaf", "queue_name": "multi-2", "data": {"v": 21}},
                    {"name": "leaf", "queue_name": "multi-3", "data": {"v": 30}},
                ],
            }
        )

        report = await run_node(
            spec(
                redis_url,
                prefix,
                [
                    worker("nest-a", {"root": PARENT, "leaf": LEAF}, concurrency=2),
                    worker("nest-b", {"mid": PARENT, "leaf": LEAF}, concurrency=2),
                    worker("multi-root", {"root": PARENT}),
                    worker("multi-1", {"leaf": LEAF}),
                    worker("multi-2", {"leaf": LEAF}),
                    worker("multi-3", {"leaf": LEAF}),
                ],
                {"jobs": [final(nested), final(multi)]},
            )
        )

        for root in (nested, multi):
            for node in root.walk():
                r = rec(report, node)
                assert r["state"] == "completed", r
                assert r["name"] == node.job.name
                assert r["data"] == node.job.data
                assert r["attemptsMade"] == 1
                assert r["runs"] and len(r["runs"]) == 1
                if node.children:
                    # getChildrenValues() in Node: exactly the children's results, keyed by
                    # their full keys <prefix>:<queue>:<id>.
                    expected = {}
                    for child in node.children:
                        key = f"{prefix}:{child.job.queue_name}:{child.job.id}"
                        assert child.job.key == key
                        expected[key] = rec(report, child)["returnvalue"]
                    assert r["returnvalue"]["values"] == expected
                    assert r["returnvalue"]["counts"] == {
                        "processed": len(node.children),
                        "unprocessed": 0,
                        "ignored": 0,
                        "failed": 0,
                    }
                    assert r["returnvalue"]["ignored"] == {}
                else:
                    assert r["returnvalue"] == {
                        "name": "leaf",
                        "queue": node.job.queue_name,
                        "doubled": node.job.data["v"] * 2,
                    }
                    assert r["parentKey"] == node.job.parent_key
            assert_children_before_parents(report, root)

        # Three levels: the root sees the mid node's result, which holds the grandchildren's.
        mid = nested.children[0]
        root_values = rec(report, nested)["returnvalue"]["values"]
        assert root_values[mid.job.key]["values"] == {
            mid.children[0].job.key: {"name": "leaf", "queue": "nest-a", "doubled": 6},
            mid.children[1].job.key: {"name": "leaf", "queue": "nest-b", "doubled": 8},
        }
        assert {p["queue"] for p in report.processed} == {
            "nest-a", "nest-b", "multi-root", "multi-1", "multi-2", "multi-3"
        }

        # And bullfast reads back what Node wrote.
        tree = await producer.get_flow("nest-a", nested.job.id)
        assert tree is not None
        assert tree.job.returnvalue == rec(report, nested)["returnvalue"]
        assert {c.job.id: c.job.returnvalue for c in tree.children or []} == {
            c.job.id: rec(report, c)["returnvalue"] for c in nested.children or []
        }


async def test_priorities(redis_url: str, prefix: str) -> None:
    jobs = [("a", 5), ("b", 0), ("c", 1), ("d", 5), ("e", 2), ("f", 0), ("g", 1), ("h", 2_097_151)]
    async with Queue("prio", connection=redis_url, prefix=prefix) as queue:
        await queue.add_bulk(
            [{"name": name, "data": {"p": p}, "opts": {"priority": p} if p else {}} for name, p in jobs]
        )
        # Added one at a time too, interleaving the two lists.
        for name, p in [("i", 1), ("j", 0)]:
            await queue.add(name, {"p": p}, priority=p)
    async with FlowProducer(connection=redis_url, prefix=prefix) as producer:
        flow = await producer.add(
            {
                "name": "parent",
                "queue_name": "prio-parent",
                "children": [
                    {"name": f"k{p}", "queue_name": "prio-kids", "data": {"v": p}, "opts": {"priority": p}}
                    for p in (3, 1, 0, 2)
                ],
            }
        )

    name_of = {"name": {"$job": "name"}, "priority": {"$job": "priority"}}
    report = await run_node(
        spec(
            redis_url,
            prefix,
            [
                worker("prio", {"*": {"return": name_of}}),
                worker("prio-kids", {"*": {"return": name_of}}),
                worker("prio-parent", {"parent": PARENT}),
            ],
            {"count": {"queues": ["prio"], "n": len(jobs) + 2}, "jobs": [final(flow)]},
        )
    )

    names = [p["name"] for p in report.processed if p["queue"] == "prio"]
    # Jobs in wait first (FIFO), then prioritized ones by priority, ties in insertion order.
    assert names == ["b", "f", "j", "c", "g", "i", "e", "a", "d", "h"]
    for r in report.jobs("prio"):
        assert r["state"] == "completed"
        assert r["priority"] == r["data"]["p"]
        assert r["returnvalue"] == {"name": r["name"], "priority": r["data"]["p"]}
    assert [p["name"] for p in report.processed if p["queue"] == "prio-kids"] == ["k0", "k1", "k2", "k3"]
    assert rec(report, flow)["state"] == "completed"
    assert len(rec(report, flow)["returnvalue"]["values"]) == 4


async def test_delayed_children(redis_url: str, prefix: str) -> None:
    delays = [900, 0, 450]
    async with FlowProducer(connection=redis_url, prefix=prefix) as producer:
        flow = await producer.add(
            {
                "name": "parent",
                "queue_name": "delay-parent",
                # A parent's delay counts from its release, when its last child is done.
                "opts": {"delay": 300},
                "children": [
                    {"name": "leaf", "queue_name": "delay-kids", "data": {"v": d}, "opts": {"delay": d}}
                    for d in delays
                ],
            }
        )
    async with Queue("delay-plain", connection=redis_url, prefix=prefix) as queue:
        plain = await queue.add("leaf", {"v": 1}, delay=600)

    report = await run_node(
        spec(
            redis_url,
            prefix,
            [
                worker("delay-kids", {"leaf": LEAF}, concurrency=3),
                worker("delay-parent", {"parent": PARENT}),
                worker("delay-plain", {"leaf": LEAF}),
            ],
            {"jobs": [final(flow), {"queue": "delay-plain", "id": plain.id, "state": "completed"}]},
        )
    )

    kids = flow.children or []
    for child, d in zip(kids, delays):
        r = rec(report, child)
        assert r["state"] == "completed"
        # The hash's delay is reset to 0 when the job is promoted; the option stays.
        assert r["opts"].get("delay", 0) == d
        (run,) = report.runs("delay-kids", child.job.id)
        # Not before it is due (Node and Python share the clock), and not much later.
        assert r["timestamp"] + d <= r["processedOn"] <= run["t"]
        assert r["processedOn"] - (r["timestamp"] + d) < 1500
    assert [report.job("delay-kids", i)["data"]["v"] for i in report.order("delay-kids")] == sorted(delays)

    parent = rec(report, flow)
    assert parent["state"] == "completed"
    last_child_done = max(rec(report, c)["finishedOn"] for c in kids)
    assert parent["processedOn"] >= last_child_done + 300
    assert parent["returnvalue"]["values"] == {c.job.key: rec(report, c)["returnvalue"] for c in kids}

    p = report.job("delay-plain", plain.id)
    assert p["timestamp"] + 600 <= p["processedOn"] < p["timestamp"] + 600 + 1500


async def test_attempts_with_backoff(redis_url: str, prefix: str) -> None:
    async with Queue("retry", connection=redis_url, prefix=prefix) as queue:
        fixed = await queue.add("fixed", {}, attempts=3, backoff={"type": "fixed", "delay": 300})
        expo = await queue.add("expo", {}, attempts=4, backoff={"type": "exponential", "delay": 150})
        exhausted = await queue.add("exhausted", {}, attempts=2, backoff=100)
        unrecoverable = await queue.add("unrecoverable", {}, attempts=5, backoff=100)
    async with FlowProducer(connection=redis_url, prefix=prefix) as producer:
        flow = await producer.add(
            {
                "name": "parent",
                "queue_name": "retry-parent",
                "children": [
                    {
                        "name": "flaky",
                        "queue_name": "retry",
                        "data": {"v": 7},
                        "opts": {"attempts": 2, "backoff": {"type": "fixed", "delay": 100}},
                    }
                ],
            }
        )

    report = await run_node(
        spec(
            redis_url,
            prefix,
            [
                worker(
                    "retry",
                    {
                        "fixed": {"failAttempts": 2, "return": "fixed done"},
                        "expo": {"failAttempts": 3, "return": "expo done"},
                        "exhausted": {"failAttempts": 99},
                        "unrecoverable": {"unrecoverable": "give up now"},
                        "flaky": {"failAttempts": 1, **LEAF},
                    },
                    concurrency=5,
                ),
                worker("retry-parent", {"parent": PARENT}),
            ],
            {
                "jobs": [
                    {"queue": "retry", "id": fixed.id, "state": "completed"},
                    {"queue": "retry", "id": expo.id, "state": "completed"},
                    {"queue": "retry", "id": exhausted.id, "state": "failed"},
                    {"queue": "retry", "id": unrecoverable.id, "state": "failed"},
                    final(flow),
                ]
            },
        )
    )

    def starts(job_id: str) -> list[int]:
        return [run["t"] for run in report.runs("retry", job_id)]

    def gaps(job_id: str) -> list[int]:
        t = starts(job_id)
        return [b - a for a, b in zip(t, t[1:])]

    r = report.job("retry", fixed.id)
    assert (r["returnvalue"], r["attemptsMade"], len(starts(fixed.id))) == ("fixed done", 3, 3)
    assert [run["attemptsMade"] for run in report.runs("retry", fixed.id)] == [0, 1, 2]
    assert all(g >= 300 for g in gaps(fixed.id)), gaps(fixed.id)

    r = report.job("retry", expo.id)
    assert (r["returnvalue"], r["attemptsMade"], len(starts(expo.id))) == ("expo done", 4, 4)
    assert all(g >= want for g, want in zip(gaps(expo.id), [150, 300, 600])), gaps(expo.id)

    r = report.job("retry", exhausted.id)
    assert (r["failedReason"], r["attemptsMade"], len(starts(exhausted.id))) == ("attempt 2 failed", 2, 2)
    assert all(g >= 100 for g in gaps(exhausted.id))

    r = report.job("retry", unrecoverable.id)
    assert (r["failedReason"], r["attemptsMade"], len(starts(unrecoverable.id))) == ("give up now", 1, 1)

    # A retried child is not a failed child: the parent (default policy fpof) completes.
    (child,) = flow.children or []
    assert rec(report, child)["attemptsMade"] == 2
    assert rec(report, flow)["state"] == "completed"
    assert rec(report, flow)["returnvalue"]["values"] == {
        child.job.key: {"name": "flaky", "queue": "retry", "doubled": 14}
    }


async def test_child_failure_policies(redis_url: str, prefix: str) -> None:
    def scenario(name: str, policy: dict[str, Any] | None, *, slow_ok: bool = False) -> dict[str, Any]:
        ok: dict[str, Any] = {"name": "ok", "queue_name": "pol-kids", "data": {"v": name}}
        if slow_ok:
            ok["opts"] = {"delay": 4000}
        boom: dict[str, Any] = {"name": "boom", "queue_name": "pol-kids", "data": {"v": name}}
        if policy is not None:
            boom["opts"] = policy
        return {
            "name": "cpof-parent" if slow_ok else "parent",
            "queue_name": "pol-parents",
            "data": {"scenario": name},
            "children": [ok, boom],
        }

    async with FlowProducer(connection=redis_url, prefix=prefix) as producer:
        fpof, idof, rdof, cpof, default, no_fpof = await producer.add_bulk(
            [
                scenario("fpof", {"fail_parent_on_failure": True}),
                scenario("idof", {"ignore_dependency_on_failure": True}),
                scenario("rdof", {"remove_dependency_on_failure": True}),
                scenario("cpof", {"continue_parent_on_failure": True}, slow_ok=True),
                scenario("default", None),
                scenario("no-fpof", {"fail_parent_on_failure": False}),
            ]
        )

    def kids(node: JobNode) -> tuple[JobNode, JobNode]:
        ok, boom = node.children or []
        return ok, boom

    report = await run_node(
        spec(
            redis_url,
            prefix,
            [
                worker(
                    "pol-kids",
                    {"ok": {"return": {"ok": {"$data": "v"}}}, "boom": {"throw": "boom"}},
                    concurrency=4,
                ),
                worker(
                    "pol-parents",
                    {"parent": PARENT, "cpof-parent": {**PARENT, "removeUnprocessedChildren": True}},
                    concurrency=4,
                ),
            ],
            {
                "jobs": [
                    final(fpof, "failed"),
                    final(idof),
                    final(rdof),
                    final(cpof),
                    final(default, "failed"),
                    final(kids(no_fpof)[0]),
                    final(kids(no_fpof)[1], "failed"),
                ],
                # Long enough for a worker to take no_fpof's parent if it had been released.
                "settleMs": 700,
            },
        )
    )

    for parent in (fpof, idof, rdof, cpof, default, no_fpof):
        boom = kids(parent)[1]
        r = rec(report, boom)
        assert (r["state"], r["failedReason"], r["attemptsMade"]) == ("failed", "boom", 1)

    # fail_parent_on_failure, given or by bullfast's default: Node fails the parent without
    # running it.
    for parent in (fpof, default):
        ok, boom = kids(parent)
        assert rec(report, boom)["parent"] == {
            "id": parent.job.id,
            "queueKey": f"{prefix}:pol-parents",
            "fpof": True,
        }
        assert rec(report, boom)["opts"].get("failParentOnFailure") is True
        r = rec(report, parent)
        assert r["state"] == "failed"
        assert r["failedReason"] == f"child {prefix}:pol-kids:{boom.job.id} failed"
        assert r["runs"] == []

    # ignore_dependency_on_failure: the parent completes and sees the child's reason.
    ok, boom = kids(idof)
    r = rec(report, idof)
    assert r["state"] == "completed"
    assert r["returnvalue"]["values"] == {ok.job.key: {"ok": "idof"}}
    assert r["returnvalue"]["ignored"] == {boom.job.key: "boom"}
    assert r["returnvalue"]["counts"] == {"processed": 1, "unprocessed": 0, "ignored": 1, "failed": 0}
    assert rec(report, boom)["parent"].get("idof") is True

    # remove_dependency_on_failure: the parent completes as if the child never existed.
    ok, boom = kids(rdof)
    r = rec(report, rdof)
    assert r["state"] == "completed"
    assert r["returnvalue"]["values"] == {ok.job.key: {"ok": "rdof"}}
    assert boom.job.key not in r["returnvalue"]["values"]
    assert r["returnvalue"]["ignored"] == {}
    assert r["returnvalue"]["counts"] == {"processed": 1, "unprocessed": 0, "ignored": 0, "failed": 0}
    assert rec(report, boom)["parent"].get("rdof") is True

    # continue_parent_on_failure: the parent runs as soon as the child fails, its other child
    # (delayed 4 s) still pending; it then removes that child and completes.
    slow, boom = kids(cpof)
    r = rec(report, cpof)
    assert r["state"] == "completed"
    assert r["returnvalue"]["ignored"] == {boom.job.key: "boom"}
    assert r["returnvalue"]["counts"] == {"processed": 0, "unprocessed": 1, "ignored": 1, "failed": 0}
    assert r["returnvalue"]["values"] == {}
    (run,) = report.runs("pol-parents", cpof.job.id)
    assert run["t"] < slow.job.timestamp + 4000
    assert report.runs("pol-kids", slow.job.id) == []
    assert rec(report, boom)["parent"].get("cpof") is True

    # fail_parent_on_failure=False: no policy written; the parent waits for its failed child.
    ok, boom = kids(no_fpof)
    assert rec(report, boom)["parent"] == {"id": no_fpof.job.id, "queueKey": f"{prefix}:pol-parents"}
    # (opts keeps "fpof": false, as bullmq's own FlowProducer writes it; only `parent` matters)
    assert rec(report, boom)["opts"].get("failParentOnFailure") is False
    r = rec(report, no_fpof)
    assert r["state"] == "waiting-children"
    assert r["runs"] == []
    assert r["dependenciesCount"] == {"processed": 1, "unprocessed": 1, "ignored": 0, "failed": 0}


async def test_idle_node_workers_wake_on_bullfast_markers(redis_url: str, prefix: str) -> None:
    """With bullmq's longest block (drainDelay 10 s), jobs bullfast adds to idle workers still
    start at once: bullfast writes the wake-up markers (and the delayed one with its due time)."""
    idle = {"drainDelay": 10}
    names = ["mk-wait", "mk-prio", "mk-delay", "mk-kid", "mk-parent"]
    async with NodeRun(
        spec(
            redis_url,
            prefix,
            [worker(q, {"leaf": LEAF, "parent": PARENT}, **idle) for q in names],
            {"count": {"queues": names, "n": len(names)}},
        )
    ) as run:
        await run.ready()
        await asyncio.sleep(0.5)  # let every worker block on its marker
        async with Queue("mk-wait", connection=redis_url, prefix=prefix) as q:
            await q.add("leaf", {"v": 1})
        async with Queue("mk-prio", connection=redis_url, prefix=prefix) as q:
            await q.add("leaf", {"v": 2}, priority=4)
        async with Queue("mk-delay", connection=redis_url, prefix=prefix) as q:
            delayed = await q.add("leaf", {"v": 3}, delay=700)
        async with FlowProducer(connection=redis_url, prefix=prefix) as producer:
            await producer.add(
                {
                    "name": "parent",
                    "queue_name": "mk-parent",
                    "children": [{"name": "leaf", "queue_name": "mk-kid", "data": {"v": 4}}],
                }
            )
        report = await run.report()

    for q in names:
        (r,) = report.jobs(q)
        assert r["state"] == "completed", r
        due = r["timestamp"] + r["opts"].get("delay", 0)
        # Without a marker the worker would only look again after drainDelay (10 s).
        assert due <= r["processedOn"] < due + 2500, (q, r["processedOn"] - due)
    assert report.job("mk-delay", delayed.id)["opts"]["delay"] == 700
