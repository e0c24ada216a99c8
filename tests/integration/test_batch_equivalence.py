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

from bullfast import FlowProducer
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

            def took(fetched: list[Any], first: int) -> None:
                for k in range(int(fetched[0])):
                    tokens[fetched[4 + 2 * k].decode()] = f"wk:{first + k}"

            fetch = lambda first, n: ("wk", first, 30_000, "", "", "w1", n)  # noqa: E731
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
        single, batched = states["single"], states["batched"]
        assert sorted(batched) == sorted(single)
        for key in single:
            assert batched[key] == single[key], key
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
