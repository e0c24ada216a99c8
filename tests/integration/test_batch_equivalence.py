"""A batched fetch and a batched finish leave exactly what the same moves made one by one leave.

The worker takes and ends jobs many at a time (one ``finish_jobs`` call); BullMQ does one job
per call. The same flow is set up under two prefixes; one is driven by single-job calls, the
other by one call for all the fetches and one for all the endings, with the same clock and
tokens. The two Redis states, every key, hash field, list order, score and event, must be
equal (job timestamps, which come from the add, and stream ids aside).
"""

from __future__ import annotations

from typing import Any

import orjson
import redis.asyncio as aioredis

from bullfast import FlowProducer, core
from bullfast._connection import RedisConnection
from bullfast._finish import NO_FETCH, run_entries

from ..redis_state import dump, normalize

NOW = 1_900_000_000_000
KIDS = "be-kids"


def flow() -> dict[str, Any]:
    kid = lambda i, **opts: {"name": f"k{i}", "queue_name": KIDS, "data": {"i": i}, "opts": {"job_id": f"k{i}", **opts}}  # noqa: E731
    return {
        "name": "parent", "queue_name": "be-parent", "opts": {"job_id": "p"},
        "children": [
            kid(1),
            kid(2, priority=2),
            kid(3, priority=1),
            kid(4, ignore_dependency_on_failure=True),
            kid(5, attempts=3, backoff={"type": "fixed", "delay": 1000}),
            kid(6, remove_on_complete=1),
            kid(7, remove_dependency_on_failure=True),
        ],
    }


def taken_ids(fetched: list[Any]) -> list[str]:
    """The ids of the jobs a fetch took (its reply packs them with their hashes)."""
    if not int(fetched[0]):
        return []
    jobs = core.unpack_string_arrays(fetched[4])
    return [job_id.decode() for job_id in jobs[::2]]


def endings(tokens: dict[str, str]) -> list[list[Any]]:
    """One ending per job: completions, a final failure of each policy, a retry later."""
    ok = orjson.dumps({"ok": True})
    stack = orjson.dumps(["Error: boom"])
    plan = {
        "k1": ("c", ok, "", "-1||", 0, ""),
        "k2": ("c", ok, "", "-1||", 0, ""),
        "k3": ("c", ok, "", "-1||", 0, ""),
        "k4": ("f", "boom", stack, "-1||", 0, ""),
        "k5": ("d", "boom", stack, "", 3, 1000),
        "k6": ("c", ok, "", "1||", 0, ""),
        "k7": ("f", "boom", stack, "-1||", 0, ""),
    }
    out = []
    for n, (job_id, token) in enumerate(tokens.items()):
        action, value, st, keep, attempts, extra = plan[job_id]
        out.append([job_id, token, action, value, st, keep, attempts, extra, NOW + 10 + n])
    return out


def same_state(states: dict[str, Any]) -> dict[str, Any]:
    """The single-call and the batched state, equal key by key; the first is returned."""
    single, batched = states["single"], states["batched"]
    assert sorted(batched) == sorted(single)
    for key in single:
        assert batched[key] == single[key], key
    return single


async def end_attempts(conn: RedisConnection, kp: str, entries: list[list[Any]], mode: str) -> None:
    """One finish_jobs call per entry ("single"), or one for them all."""
    if mode == "single":
        for entry in entries:
            codes, _ = await run_entries(conn, kp, [entry], entry[8], True, NO_FETCH)
            assert codes == [0], (entry, codes)
    else:
        codes, _ = await run_entries(conn, kp, entries, NOW + 10, True, NO_FETCH)
        assert codes == [0] * len(entries), codes


async def test_batched_calls_leave_what_single_calls_leave(redis_url: str, prefix: str) -> None:
    client = aioredis.from_url(redis_url)
    conn = RedisConnection(redis_url)
    states = {}
    try:
        for mode in ("single", "batched"):
            p = f"{prefix}-{mode}"
            async with FlowProducer(connection=redis_url, prefix=p) as producer:
                await producer.add(flow())
            kp = f"{p}:{KIDS}:"
            tokens: dict[str, str] = {}

            def took(fetched: list[Any], call: int) -> None:
                for job_id in taken_ids(fetched):
                    tokens[job_id] = f"wk:{call}"

            fetch = lambda call, n: (f"wk:{call}", 30_000, "", "", "w1", n)  # noqa: E731
            if mode == "single":
                for k in range(7):
                    _, fetched = await run_entries(conn, kp, [], NOW, True, fetch(k, 1))
                    took(fetched, k)
                for entry in endings(tokens):
                    codes, _ = await run_entries(conn, kp, [entry], entry[8], True, NO_FETCH)
                    assert codes == [0], (entry, codes)
            else:
                _, fetched = await run_entries(conn, kp, [], NOW, True, fetch(0, 7))
                took(fetched, 0)
                entries = endings(tokens)
                codes, _ = await run_entries(conn, kp, entries, NOW + 10, True, NO_FETCH)
                assert codes == [0] * 7, codes
            assert len(tokens) == 7
            states[mode] = normalize(await dump(client, p), p, {})
        single = same_state(states)
        # the scenario did what it says: the parent waits for the delayed retry alone
        kid = f"bull:{KIDS}:"
        assert single["bull:be-parent:p:dependencies"]["value"] == [kid + "k5"]
        assert sorted(single["bull:be-parent:p:processed"]["value"]) == [kid + k for k in ("k1", "k2", "k3", "k6")]
        assert list(single["bull:be-parent:p:failed"]["value"]) == [kid + "k4"]
        assert [m for m, _ in single[f"{kid}delayed"]["value"]] == ["k5"]
        # k6 (count 1) trimmed k1, finished before it; k3 and k2 (prioritized) came later
        assert sorted(m for m, _ in single[f"{kid}completed"]["value"]) == ["k2", "k3", "k6"]
        assert f"{kid}k1" not in single
    finally:
        await conn.close()
        await client.aclose()


SAME = "be-same"


async def test_batched_children_release_their_parent_where_single_calls_do(redis_url: str, prefix: str) -> None:
    """A batch counts a parent's pending children down instead of reading the count after each
    child, so the parent must still be released by its last child, not before or after. One
    queue holds everything, so the order of the events in its stream shows where the parent
    was released: a parent whose last child is mid-batch (completions follow it), a child that
    is no longer a dependency, a child removed on completion, and an active job that completes
    (and is removed) in the batch that completed the children it was given meanwhile."""
    client = aioredis.from_url(redis_url)
    conn = RedisConnection(redis_url)
    states = {}
    kid = lambda i, **opts: {"name": f"c{i}", "queue_name": SAME, "data": {"i": i}, "opts": {"job_id": f"c{i}", **opts}}  # noqa: E731
    try:
        for mode in ("single", "batched"):
            p = f"{prefix}-{mode}"
            kp = f"{p}:{SAME}:"
            tokens: dict[str, str] = {}
            fetch = lambda call, n: (f"wk:{call}", 30_000, "", "", "w1", n)  # noqa: E731

            async def take(n: int, first: int) -> None:
                if mode == "single":
                    for k in range(n):
                        _, fetched = await run_entries(conn, kp, [], NOW, True, fetch(first + k, 1))
                        assert int(fetched[0]) == 1
                        tokens[taken_ids(fetched)[0]] = f"wk:{first + k}"
                else:
                    _, fetched = await run_entries(conn, kp, [], NOW, True, fetch(first, n))
                    assert int(fetched[0]) == n
                    for job_id in taken_ids(fetched):
                        tokens[job_id] = f"wk:{first}"

            async with FlowProducer(connection=redis_url, prefix=p) as producer:
                # x runs first (alone in wait), then is given two children while it runs
                await producer.add({"name": "x", "queue_name": SAME, "opts": {"job_id": "x"}})
                await take(1, 0)
                await producer.add_bulk([
                    {**kid(7), "opts": {"job_id": "c7", "parent": {"id": "x", "queue": f"{p}:{SAME}"}}},
                    {**kid(8), "opts": {"job_id": "c8", "parent": {"id": "x", "queue": f"{p}:{SAME}"}}},
                ])
                await producer.add({"name": "p", "queue_name": SAME, "opts": {"job_id": "p"},
                                    "children": [kid(1), kid(2), kid(3, remove_on_complete=True), kid(4)]})
                await producer.add({"name": "q", "queue_name": SAME, "opts": {"job_id": "q"},
                                    "children": [kid(5), kid(6)]})
            # c2 is no longer one of p's dependencies (as after remove_child_dependency)
            await client.srem(f"{kp}p:dependencies", f"{kp}c2")
            await take(8, 1)
            ok = orjson.dumps({"ok": True})
            order = ["c7", "c1", "c2", "c3", "c4", "c5", "c8", "x", "c6"]
            entries = []
            for n, job_id in enumerate(order):
                keep = "0||" if job_id in ("c3", "x") else "-1||"
                entries.append([job_id, tokens[job_id], "c", ok, "", keep, 0, "", NOW + 10 + n])
            await end_attempts(conn, kp, entries, mode)
            states[mode] = normalize(await dump(client, p), p, {})
        single = same_state(states)
        # the scenario did what it says
        k = f"bull:{SAME}:"
        events = [dict(e) for e in single[f"{k}events"]["value"]]
        seen = [(e["event"], e.get("jobId")) for e in events if e["event"] in ("completed", "waiting")]
        assert seen.index(("waiting", "p")) == seen.index(("completed", "c4")) - 1
        assert seen.index(("waiting", "q")) == seen.index(("completed", "c6")) - 1
        assert ("completed", "x") in seen  # its children were done before it
        assert sorted(single[f"{k}p:processed"]["value"]) == [k + "c1", k + "c3", k + "c4"]
        assert f"{k}c3" not in single
        assert f"{k}x" not in single and f"{k}x:processed" not in single  # removed on completion
        assert single[f"{k}wait"]["value"] == ["p", "q"]
    finally:
        await conn.close()
        await client.aclose()


async def test_a_child_ended_twice_in_one_batch_counts_once(redis_url: str, prefix: str) -> None:
    """A job listed twice in active (as after a foreign write) and ended twice in one call
    without a lock: its parent counts it once, and is released by its real last child."""
    client = aioredis.from_url(redis_url)
    conn = RedisConnection(redis_url)
    states = {}
    kid = lambda i: {"name": f"d{i}", "queue_name": SAME, "opts": {"job_id": f"d{i}"}}  # noqa: E731
    try:
        for mode in ("single", "batched"):
            p = f"{prefix}-{mode}"
            kp = f"{p}:{SAME}:"
            async with FlowProducer(connection=redis_url, prefix=p) as producer:
                await producer.add({"name": "p", "queue_name": SAME, "opts": {"job_id": "p"},
                                    "children": [kid(1), kid(2), kid(3)]})
            _, fetched = await run_entries(conn, kp, [], NOW, True, ("0", 30_000, "", "", "w1", 3))
            assert int(fetched[0]) == 3
            await client.lpush(f"{kp}active", "d1")  # d1 twice in active
            ok = orjson.dumps({"ok": True})
            entries = [[job_id, "0", "c", ok, "", "-1||", 0, "", NOW + 10 + n]
                       for n, job_id in enumerate(["d1", "d1", "d2", "d3"])]
            await end_attempts(conn, kp, entries, mode)
            states[mode] = normalize(await dump(client, p), p, {})
        single = same_state(states)
        k = f"bull:{SAME}:"
        assert single[f"{k}wait"]["value"] == ["p"]  # released, by d3
        assert sorted(single[f"{k}p:processed"]["value"]) == [k + "d1", k + "d2", k + "d3"]
    finally:
        await conn.close()
        await client.aclose()


async def test_failures_that_drop_dependencies_mid_batch_are_counted(redis_url: str, prefix: str) -> None:
    """Children that fail with remove_dependency_on_failure or ignore_dependency_on_failure
    leave their parent's dependencies by another path than completion, between completions of
    the same batch: the parent is still released by its last child."""
    client = aioredis.from_url(redis_url)
    conn = RedisConnection(redis_url)
    states = {}
    kid = lambda i, **opts: {"name": f"e{i}", "queue_name": SAME, "opts": {"job_id": f"e{i}", **opts}}  # noqa: E731
    try:
        for mode in ("single", "batched"):
            p = f"{prefix}-{mode}"
            kp = f"{p}:{SAME}:"
            async with FlowProducer(connection=redis_url, prefix=p) as producer:
                await producer.add({"name": "p", "queue_name": SAME, "opts": {"job_id": "p"}, "children": [
                    kid(1), kid(2, remove_dependency_on_failure=True), kid(3, ignore_dependency_on_failure=True), kid(4),
                ]})
            _, fetched = await run_entries(conn, kp, [], NOW, True, ("t", 30_000, "", "", "w1", 4))
            assert int(fetched[0]) == 4
            ok, stack = orjson.dumps({"ok": True}), orjson.dumps(["Error: boom"])
            plan = {"e1": ("c", ok, ""), "e2": ("f", "boom", stack), "e3": ("f", "boom", stack), "e4": ("c", ok, "")}
            entries = [[job_id, "t", action, value, st, "-1||", 0, "", NOW + 10 + n]
                       for n, (job_id, (action, value, st)) in enumerate(plan.items())]
            await end_attempts(conn, kp, entries, mode)
            states[mode] = normalize(await dump(client, p), p, {})
        single = same_state(states)
        k = f"bull:{SAME}:"
        assert single[f"{k}wait"]["value"] == ["p"]  # released, by e4
        assert sorted(single[f"{k}p:processed"]["value"]) == [k + "e1", k + "e4"]
    finally:
        await conn.close()
        await client.aclose()
