"""`bullfast diagnose` (and its function): why a parent is still waiting."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

from bullfast import FlowProducer, Queue, Worker
from bullfast.cli import diagnose


async def stuck_parent(redis_url: str, prefix: str) -> None:
    async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
        await fp.add({"name": "P", "queue_name": "A", "opts": {"job_id": "stuck"}, "children": [
            {"name": "ok", "queue_name": "B"},
            {"name": "fails", "queue_name": "B", "opts": {"fail_parent_on_failure": False, "job_id": "f1"}},
            {"name": "later", "queue_name": "B", "opts": {"delay": 60000, "job_id": "later"}},
            {"name": "gone", "queue_name": "B", "opts": {"job_id": "gone"}},
            {"name": "elsewhere", "queue_name": "C", "prefix": prefix + "-other", "opts": {"job_id": "far"}},
        ]})
        await fp.client.delete(f"{prefix}:B:gone")
        fan = await fp.fan_out({"name": "R", "queue_name": "A", "opts": {"job_id": "fan"}}).open()
        await fan.add_children([{"name": "c", "queue_name": "B", "opts": {"job_id": "fanned"}}])

    async def proc(job: Any) -> int:
        if job.name == "fails":
            raise ValueError("boom")
        return 1

    done = asyncio.Event()
    w = Worker("B", proc, connection=redis_url, prefix=prefix, concurrency=5, drain_delay=0.2)
    w.on("failed", lambda job, err: done.set())
    await asyncio.wait_for(done.wait(), 10)
    async with Queue("B", connection=redis_url, prefix=prefix) as q:
        while (await q.get_job_counts("completed"))["completed"] < 2:
            await asyncio.sleep(0.02)
    await w.close()


async def test_diagnose_explains_each_pending_child(redis_url: str, prefix: str, client: Any) -> None:
    await stuck_parent(redis_url, prefix)
    try:
        async with Queue("A", connection=redis_url, prefix=prefix) as q:
            report = await diagnose(q, "stuck")
            fan = await diagnose(q, "fan")
        where = {c["key"].rsplit(":", 1)[1]: c["where"] for c in report["pending"]}
        assert report["state"] == "waiting-children" and report["pending_count"] == 4
        assert "failed" in where["f1"] and "no failure policy" in where["f1"] and "boom" in where["f1"]
        assert where["later"].startswith("delayed") and "60000" in where["later"]
        # the worker of B has closed: a child waiting there is told so
        assert f"no worker is connected to {prefix}:B" in where["later"]
        assert where["gone"].startswith("missing")
        assert "another prefix" in where["far"]
        assert any("unsealed fan-out" in f for f in fan["findings"])
        assert fan["pending_count"] == 0  # its one child is done; only the seal is missing
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}-other:*")]
        if keys:
            await client.delete(*keys)


async def test_diagnose_command_line(redis_url: str, prefix: str, client: Any) -> None:
    await stuck_parent(redis_url, prefix)
    env = {**os.environ, "REDIS_URL": redis_url}
    try:
        out = subprocess.run([sys.executable, "-m", "bullfast", "diagnose", "A", "stuck", "--prefix", prefix],
                             env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "no failure policy" in out.stdout and "missing" in out.stdout
        js = subprocess.run([sys.executable, "-m", "bullfast", "diagnose", "A", "fan", "--prefix", prefix, "--json"],
                            env=env, capture_output=True, text=True, timeout=60)
        assert js.returncode == 0, js.stderr
        assert any("unsealed" in f for f in json.loads(js.stdout)["findings"])
        bad = subprocess.run([sys.executable, "-m", "bullfast", "diagnose", "A", "nope", "--prefix", prefix],
                             env=env, capture_output=True, text=True, timeout=60)
        assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "no job 'nope'" in bad.stderr
        inspect = subprocess.run([sys.executable, "-m", "bullfast", "inspect", "A", "fan", "--prefix", prefix],
                                 env=env, capture_output=True, text=True, timeout=60)
        assert "[fan-out open, 1 added]" in inspect.stdout
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}-other:*")]
        if keys:
            await client.delete(*keys)


async def test_streamed_reads_page_through_every_child(redis_url: str, prefix: str) -> None:
    async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
        node = await fp.add({"name": "P", "queue_name": "A", "children": [
            {"name": "c", "queue_name": "B", "data": {"i": i},
             "opts": {"ignore_dependency_on_failure": i % 10 == 0}} for i in range(250)]})

        async def proc(job: Any) -> int:
            if job.data["i"] % 10 == 0:
                raise ValueError(f"no {job.data['i']}")
            return int(job.data["i"])

        w = Worker("B", proc, connection=redis_url, prefix=prefix, concurrency=20, drain_delay=0.2)
        while (await node.job.get_dependencies_count())["unprocessed"]:
            await asyncio.sleep(0.02)
        await w.close()
        values = {k: v async for k, v in node.job.iter_children_values(page=17)}
        assert sorted(values.values()) == [i for i in range(250) if i % 10]
        ignored = {k: v async for k, v in node.job.iter_ignored_children_failures(page=7)}
        assert sorted(ignored.values()) == sorted(f"no {i}" for i in range(0, 250, 10))
        assert [k async for k in node.job.iter_dependencies(page=5)] == []
        assert [k async for k in node.job.iter_failed_children()] == []
        total = await node.job.reduce_children_values(lambda acc, key, v: acc + v, 0, page=33)
        assert total == sum(i for i in range(250) if i % 10)


async def test_diagnose_reports_an_unsealed_fan_out_with_more_pending_children_than_its_limit(
        redis_url: str, prefix: str) -> None:
    async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
        fan = await fp.fan_out({"name": "R", "queue_name": "A", "opts": {"job_id": "wide"}}).open()
        await fan.add_children({"name": "c", "queue_name": "B", "data": {"i": i}} for i in range(3000))
        async with Queue("A", connection=redis_url, prefix=prefix) as q:
            report = await diagnose(q, "wide", limit=10)
            assert len(report["pending"]) == 10 and report["pending_count"] == 3000
            assert [f for f in report["findings"] if "unsealed fan-out" in f] == [
                "unsealed fan-out (3000 children added): it runs only after FanOut.seal(); resume it "
                "with FlowProducer.resume_fan_out or give up with abort()"]
            await fan.seal()
            sealed = await diagnose(q, "wide", limit=10)
            assert not any("fan-out" in f for f in sealed["findings"])


async def test_diagnose_names_a_paused_child_queue_and_one_without_workers(redis_url: str, prefix: str) -> None:
    async with FlowProducer(connection=redis_url, prefix=prefix) as fp, Queue("B", connection=redis_url, prefix=prefix) as qb:
        await fp.add({"name": "P", "queue_name": "A", "opts": {"job_id": "p"}, "children": [
            {"name": "c", "queue_name": "B", "opts": {"job_id": "in-b"}},
            {"name": "c", "queue_name": "C", "opts": {"job_id": "in-c"}}]})
        await qb.pause()
        idle = Worker("C", None, connection=redis_url, prefix=prefix, autorun=False)
        await idle.get_next_job("t", block=False)  # connected, takes nothing more
        try:
            async with Queue("A", connection=redis_url, prefix=prefix) as q:
                report = await diagnose(q, "p")
        finally:
            await idle.close()
    where = {c["key"].rsplit(":", 1)[1]: c["where"] for c in report["pending"]}
    assert f"its queue {prefix}:B is paused" in where["in-b"] and "no worker" in where["in-b"]
