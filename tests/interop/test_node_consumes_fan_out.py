"""A streamed fan-out written by bullfast is consumed by real Node BullMQ workers: they see
ordinary jobs and an ordinary dependencies set, start on the children while later chunks are
still being added, and run the parent once, after the seal, with every child's value."""

from __future__ import annotations

from typing import Any

from bullfast import FlowProducer

from .node import NodeRun

N = 2000


async def test_node_workers_consume_a_streamed_fan_out(redis_url: str, prefix: str, client: Any) -> None:
    spec = {
        "redis": redis_url,
        "prefix": prefix,
        "timeoutMs": 60000,
        "workers": [
            {"queue": "map", "concurrency": 50, "drainDelay": 0.05,
             "processors": {"*": {"return": {"n": {"$mul": [{"$data": "i"}, 2]}}}}},
            {"queue": "reduce", "concurrency": 1, "drainDelay": 0.05,
             "processors": {"*": {"return": {"values": {"$childrenValues": True},
                                              "counts": {"$dependenciesCount": True}}}}},
        ],
        "until": {"jobs": [{"queue": "reduce", "id": "fan", "state": "completed"}]},
        "reportQueues": ["reduce"],
    }
    async with NodeRun(spec, timeout=90) as run:
        await run.ready()
        async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
            fan = await fp.fan_out({"name": "reduce", "queue_name": "reduce", "opts": {"job_id": "fan"}},
                                   chunk_size=100).open()

            def rows() -> Any:
                for i in range(N):
                    yield {"name": "map", "queue_name": "map", "data": {"i": i}}

            assert await fan.add_children(rows()) == N
            # Node's workers were busy while the stream went on, but the parent waits for the seal
            assert await fan.job.get_state() == "waiting-children"
            sealed_at = await client.time()
            await fan.seal()
        report = await run.report()
    parent = report.job("reduce", "fan")
    assert parent["state"] == "completed"
    values = parent["returnvalue"]["values"]
    assert len(values) == N
    assert sorted(v["n"] for v in values.values()) == [2 * i for i in range(N)]
    assert parent["returnvalue"]["counts"] == {"processed": N, "unprocessed": 0, "ignored": 0, "failed": 0}
    assert parent["processedOn"] >= sealed_at[0] * 1000 + sealed_at[1] // 1000 - 5
