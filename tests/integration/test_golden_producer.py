"""What bullfast writes equals what Node BullMQ 6.7 wrote (shared/golden), scenario by scenario.

Volatile values are normalised on both sides as shared/golden/README.md describes; JSON texts
are compared parsed (BullMQ's server re-encodes opts in Lua hash order). Golden dumps were made
with Node's defaults, so children that BullMQ wrote without a failure policy are added here with
``fail_parent_on_failure=False`` (bullfast's producers default to True).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bullfast import FlowProducer, Queue, Worker
from bullfast.errors import ParentCannotBeReplacedError, ParentNotFoundError
from tests.redis_state import drop_explicit_false, dump, normalize, normalize_golden

# A copy of ../shared/golden (Redis dumps written by Node BullMQ 6.7.0), so a clone can run alone.
GOLDEN = Path(__file__).resolve().parents[1] / "golden"
NO_POLICY = {"fail_parent_on_failure": False}


def golden(name: str) -> dict[str, Any]:
    return json.loads((GOLDEN / f"{name}.json").read_text())


async def assert_matches(client: Any, prefix: str, name: str, ids: dict[str, str]) -> None:
    ours = normalize(await dump(client, prefix), prefix, ids)
    theirs = normalize_golden(golden(name))
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        assert ours[key] == theirs[key], key


async def test_a_plain_job(redis_url: str, prefix: str, client: Any, each_core: str) -> None:
    async with Queue("A", connection=redis_url, prefix=prefix) as q:
        job = await q.add("plain", {"hello": "world", "n": 1})
    assert job.id == "1"
    await assert_matches(client, prefix, "a_queue_add_plain_job", {})


def flow_summary(node: Any) -> dict[str, Any]:
    out = {"queue": node.job.queue_name, "name": node.job.name, "returnvalue": node.job.returnvalue}
    if node.children is not None:
        out["children"] = sorted((flow_summary(c) for c in node.children), key=lambda c: c["name"])
    return out


def flow_summary_golden(node: dict[str, Any]) -> dict[str, Any]:
    out = {k: node[k] for k in ("queue", "name", "returnvalue")}
    if "children" in node:
        out["children"] = sorted((flow_summary_golden(c) for c in node["children"]), key=lambda c: c["name"])
    return out


async def test_b_two_level_flow(redis_url: str, prefix: str, client: Any, each_core: str) -> None:
    async with Queue("A", connection=redis_url, prefix=prefix) as qa, Queue(
        "B", connection=redis_url, prefix=prefix
    ) as qb, FlowProducer(connection=redis_url, prefix=prefix) as fp:
        await qa._write_meta()
        await qb._write_meta()
        node = await fp.add(
            {
                "name": "parent-job",
                "queueName": "A",
                "data": {"role": "parent"},
                "children": [
                    {
                        "name": "child-1",
                        "queueName": "B",
                        "data": {"role": "child-1", "x": 2},
                        "opts": NO_POLICY,
                        "children": [
                            {"name": "grandchild", "queueName": "B", "data": {"role": "grandchild", "x": 3}, "opts": NO_POLICY}
                        ],
                    },
                    {"name": "child-2", "queueName": "B", "data": {"role": "child-2", "x": 5}, "opts": NO_POLICY},
                ],
            }
        )
        read = await fp.get_flow("A", node.job.id)
    child1, child2 = node.children
    # BullMQ's getFlow of the same flow (children in SSCAN order, so compared by name)
    assert flow_summary(read) == flow_summary_golden(golden("b_flow_add_two_level")["api_results"]["getFlow"])
    ids = {
        "PARENT_ID": node.job.id,
        "CHILD1_ID": child1.job.id,
        "CHILD2_ID": child2.job.id,
        "GRANDCHILD_ID": child1.children[0].job.id,
    }
    # explicit False is stored in opts (as BullMQ stores an explicit false); Node left it out
    state = await dump(client, prefix)
    for entry in state.values():
        if entry["type"] == "hash" and "opts" in entry["value"]:
            opts = json.loads(entry["value"]["opts"])
            assert opts.pop("fpof", False) is False
            entry["value"]["opts"] = json.dumps(opts)
    ours = normalize(state, prefix, ids)
    theirs = normalize_golden(golden("b_flow_add_two_level"))
    assert ours == theirs


async def test_d0_failure_policies_flow(redis_url: str, prefix: str, client: Any, each_core: str) -> None:
    async with Queue("A", connection=redis_url, prefix=prefix) as qa, Queue(
        "B", connection=redis_url, prefix=prefix
    ) as qb, FlowProducer(connection=redis_url, prefix=prefix) as fp:
        await qa._write_meta()
        await qb._write_meta()
        node = await fp.add(
            {
                "name": "parent-job",
                "queue_name": "A",
                "data": {"role": "parent"},
                "children": [
                    {"name": "ok-child", "queue_name": "B", "data": {"role": "ok"}, "opts": {"failParentOnFailure": False}},
                    {"name": "idof-child", "queue_name": "B", "data": {"role": "idof"}, "opts": {"ignore_dependency_on_failure": True}},
                    {"name": "fpof-child", "queue_name": "B", "data": {"role": "fpof"}, "opts": {"failParentOnFailure": True}},
                ],
            }
        )
    ok, idof, fpof = node.children
    ids = {"PARENT_ID": node.job.id, "OK_CHILD_ID": ok.job.id, "IDOF_CHILD_ID": idof.job.id, "FPOF_CHILD_ID": fpof.job.id}
    state = await dump(client, prefix)
    ok_hash = state[f"{prefix}:B:{ok.job.id}"]["value"]
    opts = json.loads(ok_hash["opts"])
    assert opts.pop("fpof") is False
    ok_hash["opts"] = json.dumps(opts)
    assert normalize(state, prefix, ids) == normalize_golden(golden("d0_failure_flow_added"))


async def test_bullfast_default_policy_is_fail_parent(redis_url: str, prefix: str, client: Any) -> None:
    """Like d0's ok-child, but without options: bullfast writes fpof exactly as BullMQ writes an
    explicit failParentOnFailure (golden d0's fpof-child)."""
    async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
        node = await fp.add(
            {"name": "parent-job", "queue_name": "A", "children": [{"name": "c", "queue_name": "B", "data": {}}]}
        )
    child = node.children[0].job
    raw = await client.hgetall(f"{prefix}:B:{child.id}")
    assert json.loads(raw[b"parent"]) == {"id": node.job.id, "queueKey": f"{prefix}:A", "fpof": True}
    assert json.loads(raw[b"opts"]) == {"parent": {"id": node.job.id, "queue": f"{prefix}:A"}, "attempts": 0, "fpof": True}
    theirs = golden("d0_failure_flow_added")["normalized"]["bull:B:<FPOF_CHILD_ID>"]["value"]
    assert json.loads(theirs["parent"]).keys() == json.loads(raw[b"parent"]).keys()


async def test_e_single_queue_job_variants(redis_url: str, prefix: str, client: Any, each_core: str) -> None:
    async with Queue("E", connection=redis_url, prefix=prefix) as q:
        assert (await q.add("plain", {"i": 1})).id == "1"
        assert (await q.add("custom", {"i": 2}, {"jobId": "my-custom-id"})).id == "my-custom-id"
        assert (await q.add("custom-again", {"i": 3}, {"jobId": "my-custom-id"})).id == "my-custom-id"
        delayed = await q.add("delayed", {"i": 4}, {"delay": 60000})
        assert delayed.id == "4"
        same_ms = await q.add("delayed-same-ms", {"i": 5}, {"timestamp": delayed.timestamp, "delay": 60000})
        assert same_ms.id == "5"
        assert (await q.add("prio", {"i": 6}, {"priority": 5})).id == "6"
        assert (await q.add("prio2", {"i": 7}, {"priority": 1})).id == "7"
        assert (await q.add("lifo", {"i": 8}, {"lifo": True})).id == "8"
        job = await q.add(
            "with-opts",
            {"i": 9},
            {
                "attempts": 3,
                "backoff": {"type": "exponential", "delay": 1000, "jitter": 0.5},
                "removeOnComplete": {"count": 10, "age": 3600},
                "removeOnFail": 5,
                "keepLogs": 7,
                "deduplication": {"id": "dedup-1", "ttl": 100000},
                "stackTraceLimit": 3,
                "sizeLimit": 1000,
            },
        )
        assert job.id == "9"
        await job.log("first log line")
        await job.update_progress({"pct": 50})
        hit = await q.add("dedup-hit", {"i": 10}, {"deduplication": {"id": "dedup-1", "ttl": 100000}})
        assert hit.id == "9"
        assert await q.get_job_counts() == golden("e_single_queue_job_variants")["api_results"]["counts"]
    state = await dump(client, prefix)
    # the timestamp option of job 5 is a real timestamp (not normalised in the golden file)
    h5 = state[f"{prefix}:E:5"]["value"]
    opts = json.loads(h5["opts"])
    assert opts["timestamp"] == delayed.timestamp
    opts["timestamp"] = 1795917628682
    h5["opts"] = json.dumps(opts)
    assert state[f"{prefix}:E:de:dedup-1"]["ttl_ms"] > 0
    state[f"{prefix}:E:de:dedup-1"]["ttl_ms"] = -1  # the golden dump was taken the same way
    ours = normalize(state, prefix, {})
    theirs = normalize_golden(golden("e_single_queue_job_variants"))
    theirs["bull:E:de:dedup-1"]["ttl"] = "none"
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        assert ours[key] == theirs[key], key


async def test_p0_p1_pause_and_resume(redis_url: str, prefix: str, client: Any) -> None:
    async with Queue("P", connection=redis_url, prefix=prefix) as q:
        await q.add("before-pause", {"i": 1})
        await q.pause()
        await q.add("while-paused", {"i": 2})
        await q.add("while-paused-prio", {"i": 3}, priority=2)
        assert await q.is_paused()
        await assert_matches(client, prefix, "p0_paused", {})
        await q.resume()
        assert not await q.is_paused()
        await assert_matches(client, prefix, "p1_resumed", {})


async def _complete_next(worker: Any, value: Any, job_id: str) -> None:
    job = await worker.get_next_job(f"tok-{job_id}", block=False)
    assert job is not None and job.id == job_id
    await job.move_to_completed(value, f"tok-{job_id}", fetch_next=False)


async def test_g_parent_edge_cases(redis_url: str, prefix: str, client: Any) -> None:
    """Golden g replayed: what the producer writes for children of missing, completed and
    replaced parents, and for flows re-using existing jobs (``reuse_existing=True``). Jobs are
    completed with the manual worker API, which is the worker side's business (its events,
    ``active``/``completed``/``drained`` and the processing fields of the hashes, are tested by
    test_golden_worker.py): only the producer's part of the state is compared here."""
    a_parent = {"id": "done-parent", "queue": f"{prefix}:A"}
    async with Queue("A", connection=redis_url, prefix=prefix) as qa, Queue(
        "B", connection=redis_url, prefix=prefix
    ) as qb, FlowProducer(connection=redis_url, prefix=prefix) as fp:
        wa = Worker("A", None, connection=redis_url, prefix=prefix, worker_name="gold-worker", autorun=False)
        wb = Worker("B", None, connection=redis_url, prefix=prefix, worker_name="gold-worker", autorun=False)
        try:
            await qa._write_meta()
            # (1) a child of a missing parent: refused, nothing written
            with pytest.raises(ParentNotFoundError) as missing:
                await qb.add("orphan", {"i": 1}, parent={"id": "no-such-parent", "queue": f"{prefix}:A"})
            theirs_error = golden("g_parent_edge_cases")["api_results"]["child_of_missing_parent"]
            assert missing.value.code == theirs_error["code"]
            assert missing.value.detail == theirs_error["message"].replace("bull:", f"{prefix}:")
            assert missing.value.path is None  # (a single add names no list)
            assert await client.exists(f"{prefix}:B:id", f"{prefix}:B:events", f"{prefix}:B:wait") == 0
            # (2) a child added to a completed parent, then completed itself
            await qa.add("will-complete", {"i": 2}, job_id="done-parent")
            await _complete_next(wa, "parent-result", "done-parent")
            late = await qb.add("late-child", {"i": 3}, job_id="late-child", parent=a_parent, **NO_POLICY)
            assert late.id == "late-child"
            assert await qa.get_job_state("done-parent") == "completed"
            await _complete_next(wb, "late-value", "late-child")
            # (3) flow p1 -> shared-child; re-parenting shared-child under other-parent: -7
            await qa.add("other-parent", {"i": 4}, job_id="other-parent")
            p1 = await fp.add({"name": "p1", "queue_name": "A", "opts": {"job_id": "p1"}, "children": [
                {"name": "shared", "queue_name": "B", "opts": {"job_id": "shared-child", **NO_POLICY}}]})
            with pytest.raises(ParentCannotBeReplacedError) as replaced:
                await qb.add("shared-again", {}, job_id="shared-child",
                             parent={"id": "other-parent", "queue": f"{prefix}:A"}, **NO_POLICY)
            theirs_error = golden("g_parent_edge_cases")["api_results"]["same_child_id_under_other_parent"]
            assert replaced.value.code == theirs_error["code"]
            assert replaced.value.detail == theirs_error["message"].replace("bull:", f"{prefix}:")
            await _complete_next(wb, "shared-result", "shared-child")
            assert await p1.job.get_state() == "waiting"
            # (4) flow p2 whose child is late-child (completed, and a child of done-parent).
            # BullMQ 6.7 writes p2 and leaves it in waiting-children forever, with no
            # dependency; bullfast refuses the flow and writes nothing.
            before = await dump(client, prefix)
            with pytest.raises(ParentCannotBeReplacedError) as stuck:
                await fp.add({"name": "p2", "queue_name": "A", "opts": {"job_id": "p2"}, "children": [
                    {"name": "late", "queue_name": "B", "opts": {"job_id": "late-child", **NO_POLICY}}]},
                    reuse_existing=True)
            assert stuck.value.path == "root.children[0]"
            assert await dump(client, prefix) == before
            # (5) a completed job re-used as the only child of flow p3: p3 is released at once
            await qb.add("lonely", {"i": 5}, job_id="lonely-done")
            await _complete_next(wb, "lonely-result", "lonely-done")
            p3 = await fp.add({"name": "p3", "queue_name": "A", "opts": {"job_id": "p3"}, "children": [
                {"name": "lonely", "queue_name": "B", "opts": {"job_id": "lonely-done", **NO_POLICY}}]},
                reuse_existing=True)
            assert await p3.job.get_state() == "waiting"
            assert await p3.job.get_children_values() == {f"{prefix}:B:lonely-done": "lonely-result"}
        finally:
            await wa.close()
            await wb.close()

    ours = _producer_part(normalize(drop_explicit_false(await dump(client, prefix)), prefix, {}))
    theirs = _producer_part(normalize_golden(golden("g_parent_edge_cases")))
    # what BullMQ wrote for flow p2 (step 4), which bullfast refuses
    del theirs["bull:A:p2"]
    assert theirs["bull:A:waiting-children"]["value"] == [["p2", "<TS>"]]
    del theirs["bull:A:waiting-children"]
    theirs["bull:A:events"]["value"] = [e for e in theirs["bull:A:events"]["value"] if ["jobId", "p2"] not in e]
    # A refused add writes nothing in bullfast; BullMQ's script had already counted an id for
    # it: the -7 add of step 3 and the flow of step 4 (one in A, one in B)
    theirs["bull:A:id"]["value"] = str(int(theirs["bull:A:id"]["value"]) - 1)
    theirs["bull:B:id"]["value"] = str(int(theirs["bull:B:id"]["value"]) - 2)
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        assert ours[key] == theirs[key], key


# written when a worker takes and completes a job, not by the producer
_WORKER_FIELDS = ("processedOn", "pb", "ats", "atm", "returnvalue", "finishedOn")
_WORKER_EVENTS = ("active", "completed", "drained")


def _producer_part(state: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, entry in state.items():
        if key.endswith(":completed"):
            continue
        if entry["type"] == "hash":
            entry = {**entry, "value": {k: v for k, v in entry["value"].items() if k not in _WORKER_FIELDS}}
        elif entry["type"] == "stream":
            entry = {**entry, "value": [e for e in entry["value"] if e[0][1] not in _WORKER_EVENTS]}
        out[key] = entry
    return out

