"""The Node harness itself: run.mjs adds flows with bullmq's FlowProducer and reports its ids,
and a run whose conditions are not met is an error with Node's report attached."""

from __future__ import annotations

import pytest

from bullfast import FlowProducer

from .node import NodeRunError, run_node


async def test_node_flow_producer_reports_created_ids(redis_url: str, prefix: str) -> None:
    flow = {
        "name": "root",
        "queueName": "np-a",
        "data": {"n": 1},
        "children": [
            {"name": "kid", "queueName": "np-b", "data": {"n": 2}, "opts": {"jobId": "kid-1"}},
            {
                "name": "mid",
                "queueName": "np-b",
                "children": [{"name": "leaf", "queueName": "np-a", "data": {"n": 3}}],
            },
        ],
    }
    report = await run_node({"redis": redis_url, "prefix": prefix, "flows": [flow]})

    (root,) = report.flows
    assert (root["queue"], root["name"], root["key"]) == ("np-a", "root", f"{prefix}:np-a:{root['id']}")
    kid, mid = root["children"]
    assert (kid["queue"], kid["id"], kid["name"]) == ("np-b", "kid-1", "kid")
    (leaf,) = mid["children"]
    # Nothing ran: the root and mid wait for children, the leaves wait for a worker.
    assert report.processed == []
    states = {(j["queue"], j["id"]): j["state"] for j in report.jobs()}
    assert states == {
        ("np-a", root["id"]): "waiting-children",
        ("np-b", "kid-1"): "waiting",
        ("np-b", mid["id"]): "waiting-children",
        ("np-a", leaf["id"]): "waiting",
    }

    # The ids Node reports are the ones in Redis: bullfast reads the same tree back.
    async with FlowProducer(connection=redis_url, prefix=prefix) as producer:
        tree = await producer.get_flow("np-a", root["id"])
    assert tree is not None and tree.job.name == "root" and tree.job.data == {"n": 1}
    assert sorted(c.job.id for c in tree.children or []) == sorted([kid["id"], mid["id"]])


async def test_unmet_conditions_raise_with_the_report(redis_url: str, prefix: str) -> None:
    with pytest.raises(NodeRunError, match="conditions not met") as info:
        await run_node(
            {
                "redis": redis_url,
                "prefix": prefix,
                "timeoutMs": 300,
                "workers": [{"queue": "np-idle", "processors": {}}],
                "until": {"jobs": [{"queue": "np-idle", "id": "nope", "state": "completed"}]},
            }
        )
    assert '"actual": "unknown"' in str(info.value)


async def test_bad_spec_raises_with_node_stderr(redis_url: str) -> None:
    with pytest.raises(NodeRunError, match=r"(?s)exited with status 2.*\"redis\" URL"):
        await run_node({"prefix": "x"})
