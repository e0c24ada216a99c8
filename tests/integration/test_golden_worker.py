"""What bullfast's workers leave in Redis equals what Node BullMQ 6.7's left (shared/golden).

Each scenario replays the steps of the golden file with bullfast: the manual API
(get_next_job / move_to_completed / move_to_failed) where the golden generator used Node's,
and bullfast Workers where it ran Node Workers. Volatile values are normalised on both sides.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from bullfast import FlowProducer, Queue, UnrecoverableError
from bullfast.worker import Worker
from tests.redis_state import drop_explicit_false, dump, normalize, normalize_golden

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
NO_POLICY = {"fail_parent_on_failure": False}


def golden(name: str) -> dict[str, Any]:
    return json.loads((GOLDEN / f"{name}.json").read_text())


async def compare(client: Any, prefix: str, name: str, ids: dict[str, str]) -> None:
    ours = normalize(drop_explicit_false(await dump(client, prefix)), prefix, ids)
    theirs = normalize_golden(golden(name))
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        assert ours[key] == theirs[key], key


async def until(predicate: Any, timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def flow_b(redis_url: str, prefix: str, fp: FlowProducer) -> Any:
    async with Queue("A", connection=redis_url, prefix=prefix) as qa, Queue(
        "B", connection=redis_url, prefix=prefix
    ) as qb:
        await qa._write_meta()
        await qb._write_meta()
        node = await fp.add(
            {
                "name": "parent-job", "queue_name": "A", "data": {"role": "parent"},
                "children": [
                    {"name": "child-1", "queue_name": "B", "data": {"role": "child-1", "x": 2}, "opts": NO_POLICY,
                     "children": [{"name": "grandchild", "queue_name": "B", "data": {"role": "grandchild", "x": 3},
                                   "opts": NO_POLICY}]},
                    {"name": "child-2", "queue_name": "B", "data": {"role": "child-2", "x": 5}, "opts": NO_POLICY},
                ],
            }
        )
    c1, c2 = node.children
    return node, {"PARENT_ID": node.job.id, "CHILD1_ID": c1.job.id, "CHILD2_ID": c2.job.id,
                  "GRANDCHILD_ID": c1.children[0].job.id}


async def test_c0_c_flow_processed_to_completion(redis_url: str, prefix: str, client: Any) -> None:
    async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
        await _c0_c(redis_url, prefix, client, fp)


async def _c0_c(redis_url: str, prefix: str, client: Any, fp: FlowProducer) -> None:
    node, ids = await flow_b(redis_url, prefix, fp)
    manual = Worker("B", None, connection=redis_url, prefix=prefix, worker_name="gold-worker", autorun=False)
    job = await manual.get_next_job("manual-token-1", block=False)
    assert job is not None and job.name == "child-2" and job.id == ids["CHILD2_ID"]
    await compare(client, prefix, "c0_after_move_to_active", ids)
    await job.move_to_completed({"from": "child-2", "doubled": 10}, "manual-token-1", fetch_next=False)
    await manual.close()

    async def child(job: Any) -> Any:
        return {"from": job.name, "doubled": job.data["x"] * 2}

    async def parent(job: Any) -> Any:
        values = await job.get_children_values()
        return {"sum": sum(v["doubled"] for v in values.values())}

    done = asyncio.Event()
    wa = Worker("A", parent, connection=redis_url, prefix=prefix, worker_name="gold-worker", drain_delay=0.2)
    wb = Worker("B", child, connection=redis_url, prefix=prefix, worker_name="gold-worker", drain_delay=0.2)
    wa.on("completed", lambda *_: done.set())
    await asyncio.wait_for(done.wait(), 10)
    # BullMQ's idle workers consume the wake-up markers before they are closed
    await until(lambda: _gone(client, f"{prefix}:A:marker", f"{prefix}:B:marker"))
    await wa.close()
    await wb.close()
    assert (await node.job.get_children_values())[f"{prefix}:B:{ids['CHILD1_ID']}"] == {"from": "child-1", "doubled": 4}
    await compare(client, prefix, "c_flow_processed_to_completion", ids)


async def _gone(client: Any, *keys: str) -> bool:
    return await client.exists(*keys) == 0


async def test_d_failure_policies_step_by_step(redis_url: str, prefix: str, client: Any) -> None:
    async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
        await _d(redis_url, prefix, client, fp)


async def _d(redis_url: str, prefix: str, client: Any, fp: FlowProducer) -> None:
    async with Queue("A", connection=redis_url, prefix=prefix) as qa, Queue("B", connection=redis_url, prefix=prefix) as qb:
        await qa._write_meta()
        await qb._write_meta()
        node = await fp.add(
            {"name": "parent-job", "queue_name": "A", "data": {"role": "parent"}, "children": [
                {"name": "ok-child", "queue_name": "B", "data": {"role": "ok"}, "opts": NO_POLICY},
                {"name": "idof-child", "queue_name": "B", "data": {"role": "idof"},
                 "opts": {"ignoreDependencyOnFailure": True}},
                {"name": "fpof-child", "queue_name": "B", "data": {"role": "fpof"}, "opts": {"failParentOnFailure": True}},
            ]}
        )
    ok, idof, fpof = node.children
    ids = {"PARENT_ID": node.job.id, "OK_CHILD_ID": ok.job.id, "IDOF_CHILD_ID": idof.job.id, "FPOF_CHILD_ID": fpof.job.id}
    manual = Worker("B", None, connection=redis_url, prefix=prefix, worker_name="gold-worker", autorun=False)
    job = await manual.get_next_job("tok-ok", block=False)
    assert job is not None and job.name == "ok-child"
    await job.move_to_completed({"ok": True}, "tok-ok")
    job = await manual.get_next_job("tok-idof", block=False)
    assert job is not None and job.name == "idof-child"
    await job.move_to_failed(Exception("idof child boom"), "tok-idof")
    await compare(client, prefix, "d1_after_ok_completed_and_idof_failed", ids)

    job = await manual.get_next_job("tok-fpof", block=False)
    assert job is not None and job.name == "fpof-child"
    await job.move_to_failed(Exception("fpof child boom"), "tok-fpof")
    await manual.close()
    await compare(client, prefix, "d2_after_fpof_failed", ids)
    parent = await node.job.queue.get_job(node.job.id)
    assert parent is not None and parent.deferred_failure == f"child {prefix}:B:{fpof.job.id} failed"

    called = []
    failed = asyncio.Event()
    errors: list[BaseException] = []

    async def processor(job: Any) -> None:
        called.append(job.id)

    wa = Worker("A", processor, connection=redis_url, prefix=prefix, worker_name="gold-worker", drain_delay=0.2)
    wa.on("failed", lambda job, err, prev: (errors.append(err), failed.set()))
    await asyncio.wait_for(failed.wait(), 10)
    await until(lambda: _gone(client, f"{prefix}:A:marker"))
    await wa.close()
    assert called == []
    assert isinstance(errors[0], UnrecoverableError) and str(errors[0]) == f"child {prefix}:B:{fpof.job.id} failed"
    await compare(client, prefix, "d3_parent_failed_by_worker", ids)
    assert await node.job.get_dependencies() == {
        "processed": {f"{prefix}:B:{ok.job.id}": {"ok": True}},
        "unprocessed": [],
        "failed": [f"{prefix}:B:{fpof.job.id}"],
        "ignored": {f"{prefix}:B:{idof.job.id}": "idof child boom"},
    }


async def test_f_retries_and_backoff(redis_url: str, prefix: str, client: Any) -> None:
    async with Queue("F", connection=redis_url, prefix=prefix) as q:
        await q.add("retry-me", {"i": 1}, attempts=3, backoff={"type": "fixed", "delay": 5000})
        await q.add("retry-now", {"i": 2}, attempts=2)
        await q.add("unrecoverable", {"i": 3}, attempts=5)
    manual = Worker("F", None, connection=redis_url, prefix=prefix, worker_name="gold-worker", autorun=False)
    j1 = await manual.get_next_job("tok-a", block=False)
    assert j1 is not None
    await j1.move_to_failed(Exception("first failure"), "tok-a")
    j2 = await manual.get_next_job("tok-b", block=False)
    assert j2 is not None
    await j2.move_to_failed(Exception("retry immediately"), "tok-b")
    j3 = await manual.get_next_job("tok-c", block=False)
    assert j3 is not None and j3.id == "3"
    await j3.move_to_failed(UnrecoverableError("cannot recover"), "tok-c")
    await manual.close()
    await compare(client, prefix, "f_retries_and_backoff", {})


async def test_h_stalled_check_two_passes(redis_url: str, prefix: str, client: Any) -> None:
    async with Queue("H", connection=redis_url, prefix=prefix) as q:
        await q.add("stall-me", {"i": 1})
        await q.add("stall-too-often", {"i": 2})
    w = Worker("H", None, connection=redis_url, prefix=prefix, worker_name="gold-worker", autorun=False,
               lock_duration=300, stalled_interval=300)
    assert await w.get_next_job("tok-1", block=False) is not None
    assert await w.get_next_job("tok-2", block=False) is not None
    await client.hset(f"{prefix}:H:2", "stc", 1)
    assert await w.check_stalled() == []
    await compare(client, prefix, "h0_stalled_check_first_pass", {})
    await asyncio.sleep(0.45)
    assert sorted(await w.check_stalled()) == ["1", "2"]
    await w.close()
    await compare(client, prefix, "h1_stalled_check_second_pass", {})


async def test_r_remove_on_complete_and_remove_parent(redis_url: str, prefix: str, client: Any) -> None:
    async with FlowProducer(connection=redis_url, prefix=prefix) as fp, Queue(
        "A", connection=redis_url, prefix=prefix
    ) as qa, Queue("B", connection=redis_url, prefix=prefix) as qb:
        await qa._write_meta()
        await qb._write_meta()
        node = await fp.add(
            {"name": "parent-job", "queue_name": "A", "children": [
                {"name": "kept-child", "queue_name": "B", "data": {"x": 1}, "opts": NO_POLICY},
                {"name": "removed-on-complete", "queue_name": "B", "data": {"x": 2},
                 "opts": {**NO_POLICY, "removeOnComplete": True}},
                {"name": "keep-last-1", "queue_name": "B", "data": {"x": 3},
                 "opts": {**NO_POLICY, "removeOnComplete": {"count": 1}}},
            ]}
        )
        ids = {"PARENT_ID": node.job.id, "KEPT_CHILD_ID": node.children[0].job.id,
               "ROC_CHILD_ID": node.children[1].job.id, "KEEP1_CHILD_ID": node.children[2].job.id}

        async def processor(job: Any) -> Any:
            # each job finishes in a later millisecond, as in the golden run: count trimming
            # ranks equal finish times by member (random ids here), as BullMQ's does
            await asyncio.sleep(0.003)
            return {"v": job.data["x"]}

        w = Worker("B", processor, connection=redis_url, prefix=prefix, worker_name="gold-worker", drain_delay=0.2)
        await until(lambda: _parent_waiting(node))
        await until(lambda: _gone(client, f"{prefix}:B:marker"))
        await w.close()
        await compare(client, prefix, "r0_remove_on_complete_children", ids)
        await node.job.remove()
        await compare(client, prefix, "r1_parent_removed_with_children", ids)


async def _parent_waiting(node: Any) -> bool:
    return await node.job.get_state() == "waiting"
