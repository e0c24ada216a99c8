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

from bullfast import FlowProducer, Queue
from tests.redis_state import dump, normalize, normalize_golden

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
    child1, child2 = node.children
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
