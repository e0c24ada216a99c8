"""bullfast's QueueEvents reading the events Node BullMQ 6.7 writes (its FlowProducer and
Workers, run by node/run.mjs), and Job.wait_until_finished on jobs Node workers process."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from bullfast import Queue, QueueEvent, QueueEvents
from bullfast.errors import JobFailedError

from .node import NodeRun, run_node


async def until(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


async def test_queue_events_decodes_events_written_by_node(redis_url: str, prefix: str) -> None:
    async with QueueEvents("nev", connection=redis_url, prefix=prefix) as events:
        seen: list[QueueEvent] = []
        events.on("*", seen.append)
        completed: dict[str, Any] = {}
        events.on("completed", lambda args, event_id: completed.__setitem__(args["jobId"], args["returnvalue"]))

        report = await run_node(
            {
                "redis": redis_url,
                "prefix": prefix,
                "flows": [
                    {
                        "name": "root",
                        "queueName": "nev",
                        "opts": {"jobId": "root-1"},
                        "children": [
                            {"name": "ok", "queueName": "nev", "data": {"v": 3}, "opts": {"jobId": "ok-1"}},
                            {
                                "name": "bad",
                                "queueName": "nev",
                                "opts": {"jobId": "bad-1", "ignoreDependencyOnFailure": True},
                            },
                        ],
                    },
                    {"name": "later", "queueName": "nev", "opts": {"jobId": "later-1", "delay": 60000}},
                ],
                "workers": [
                    {
                        "queue": "nev",
                        "processors": {
                            "ok": {"return": {"value": {"$mul": [{"$data": "v"}, 2]}, "tags": ["a", None]}},
                            "bad": {"throw": "node says no"},
                            "root": {"return": {"$childrenValues": True}},
                        },
                    }
                ],
                "until": {"jobs": [{"queue": "nev", "id": "root-1", "state": "completed"}]},
            }
        )
        await until(lambda: "root-1" in completed, what="root-1's completed event")

    def of(event: str, job_id: str) -> list[dict[str, Any]]:
        return [e.args for e in seen if e.event == event and e.job_id == job_id]

    assert of("added", "root-1") == [{"jobId": "root-1", "name": "root"}]
    assert of("added", "later-1") == [{"jobId": "later-1", "name": "later"}]
    assert of("waiting-children", "root-1") == [{"jobId": "root-1"}]
    assert of("active", "ok-1") == [{"jobId": "ok-1", "prev": "waiting"}]
    # Node JSON-encodes return values; bullfast hands them over decoded
    assert completed["ok-1"] == {"value": 6, "tags": ["a", None]}
    assert of("completed", "ok-1") == [
        {"jobId": "ok-1", "returnvalue": {"value": 6, "tags": ["a", None]}, "prev": "active"}
    ]
    assert completed["root-1"] == {f"{prefix}:nev:ok-1": {"value": 6, "tags": ["a", None]}}
    (failed,) = [e for e in seen if e.event == "failed"]
    assert (failed.job_id, failed.failed_reason, failed.prev) == ("bad-1", "node says no", "active")
    # delayed: the due time as a number
    (delayed,) = of("delayed", "later-1")
    assert isinstance(delayed["delay"], int)
    assert delayed["delay"] == report.job("nev", "later-1")["timestamp"] + 60000
    # ids as Node wrote them, in stream order
    ids = [tuple(map(int, e.id.split("-"))) for e in seen]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


async def test_wait_until_finished_on_jobs_processed_by_node(redis_url: str, prefix: str) -> None:
    async with (
        Queue("nwf", connection=redis_url, prefix=prefix) as queue,
        QueueEvents("nwf", connection=redis_url, prefix=prefix) as events,
    ):
        ok = await queue.add("ok", {"v": 5}, {"jobId": "w-ok"})
        bad = await queue.add("bad", {}, {"jobId": "w-bad"})
        spec = {
            "redis": redis_url,
            "prefix": prefix,
            "workers": [
                {
                    "queue": "nwf",
                    "processors": {
                        "ok": {"sleepMs": 100, "return": {"tripled": {"$mul": [{"$data": "v"}, 3]}}},
                        "bad": {"sleepMs": 100, "throw": "kaput"},
                    },
                }
            ],
            "until": {
                "jobs": [
                    {"queue": "nwf", "id": "w-ok", "state": "completed"},
                    {"queue": "nwf", "id": "w-bad", "state": "failed"},
                ]
            },
        }
        async with NodeRun(spec) as run:
            assert await ok.wait_until_finished(events, timeout=20) == {"tripled": 15}
            with pytest.raises(JobFailedError, match="^kaput$"):
                await bad.wait_until_finished(events, timeout=20)
            report = await run.report()
        assert report.job("nwf", "w-ok")["returnvalue"] == {"tripled": 15}
        # and once finished, waiting again answers from the job's state
        assert await ok.wait_until_finished(events, timeout=1) == {"tripled": 15}
