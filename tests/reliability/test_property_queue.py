"""Property: every ``Queue.add`` / ``Queue.add_bulk`` either succeeds and leaves exactly the
Redis state the protocol specifies, or raises a typed bullfast error having written nothing.

Random jobs (up to 8 per bulk add): options of every kind (priority, delay, lifo, attempts,
backoff, removal, timestamps, policies), custom ids with odd characters, unicode names and
data of every JSON shape; the bulk is cut into several calls of one MULTI/EXEC (small
``chunk_size``) in some examples. Faults are injected on purpose (bad options, unserialisable
data, a size limit exceeded, a missing parent, a name that is no string): such an add must
fail, and one without them must succeed. The options, ids and data come from the strategies of
test_property_flows.py, and the expected hash from its ``expected_opts``.

Checked for every job: its hash holds exactly ``name``, ``data``, ``opts``, ``timestamp``,
``delay``, ``priority``; it is in ``delayed`` (delay > 0, score (timestamp + delay) * 4096 + n),
else ``prioritized`` (priority > 0), else ``wait``; a custom id is kept, the others are the
counter's values in order; the queue's ``id`` counter counts every job and its events stream
has one ``added`` per job; no other key exists under the prefix.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import orjson
import redis
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bullfast import Queue
from bullfast.errors import BullfastError

from .conftest import RUN_SLOW
from .test_property_flows import (
    QUEUE_KEYS,
    Spec,
    expected_opts,
    json_values,
    names,
    odd_ids,
    options,
    snapshot,
)


@st.composite
def bulk(draw: Any) -> tuple[list[Spec], list[str]]:
    faults: list[str] = []
    specs: list[Spec] = []
    n = draw(st.sampled_from([1, 1, 1, 2, 3, 8]))
    faulty = draw(st.integers(0, n - 1)) if draw(st.booleans()) else None
    seen_ids: set[str] = set()
    for k in range(n):
        fault_here = faulty == k
        opts, option_faults = draw(options(fault_here and draw(st.booleans())))
        faults.extend(option_faults)
        if "job_id" not in opts and draw(st.integers(0, 2)) == 0:
            job_id = draw(odd_ids)
            if job_id not in seen_ids:  # a repeated id is BullMQ's idempotent add, not tested here
                opts["job_id"] = job_id
        if "job_id" in opts and isinstance(opts["job_id"], str):
            seen_ids.add(opts["job_id"])
        data = draw(json_values)
        node: dict[str, Any] = {"name": draw(names), "data": data, "opts": opts}
        if fault_here and not option_faults:
            kind = draw(st.sampled_from(["data", "big-int", "size-limit", "name", "parent", "lone-surrogate"]))
            faults.append(f"job {kind}")
            if kind == "data":
                node["data"] = {"x": {1, 2}}
            elif kind == "big-int":
                node["data"] = [2**70]
            elif kind == "size-limit":
                node["data"] = {"text": "x" * 64}
                opts["size_limit"] = 16
            elif kind == "name":
                node["name"] = 42
            elif kind == "parent":
                opts["parent"] = {"id": "nobody", "queue": "nowhere:q"}
            else:
                node["name"] = "x\udc00"
        specs.append(Spec(node, "", None, opts, node["data"]))
    return specs, faults


def check_state(client: redis.Redis, qk: str, specs: list[Spec], ids: list[str], before: list[str],
                t0: int, t1: int) -> list[str]:
    """``before``: the ids of the jobs the queue held already."""
    problems: list[str] = []
    counter = len(before)
    expected_keys = {f"{qk}:{job_id}".encode() for job_id in before}
    for spec, job_id in zip(specs, ids):
        counter += 1
        if "job_id" in spec.opts:
            if job_id != spec.opts["job_id"]:
                problems.append(f"custom id {spec.opts['job_id']!r} became {job_id!r}")
        elif job_id != str(counter):
            problems.append(f"job {counter} got id {job_id!r}")
        key = f"{qk}:{job_id}"
        expected_keys.add(key.encode())
        fields = {k.decode(): v for k, v in client.hgetall(key).items()}
        if set(fields) != {"name", "data", "opts", "timestamp", "delay", "priority"}:
            problems.append(f"{key}: fields {sorted(fields)}")
            continue
        if fields["name"].decode() != spec.node["name"]:
            problems.append(f"{key}: name {fields['name']!r}")
        if orjson.loads(fields["data"]) != ({} if spec.data is None else spec.data):
            problems.append(f"{key}: data differs")
        if orjson.loads(fields["opts"]) != expected_opts(spec, None):
            problems.append(f"{key}: opts {fields['opts']!r} != {expected_opts(spec, None)}")
        ts = int(fields["timestamp"])
        given = spec.opts.get("timestamp")  # 0 is "not given", as in BullMQ
        if ts != (given or ts) or (not given and not t0 <= ts <= t1):
            problems.append(f"{key}: timestamp {ts}")
        delay, priority = spec.opts.get("delay", 0), spec.opts.get("priority", 0)
        if (int(fields["delay"]), int(fields["priority"])) != (delay, priority):
            problems.append(f"{key}: delay/priority {fields['delay']!r}/{fields['priority']!r}")
        if delay > 0:
            score = client.zscore(f"{qk}:delayed", job_id)
            if score is None or not (ts + delay) * 4096 <= score <= (ts + delay) * 4096 + 4095:
                problems.append(f"{key}: delayed score {score}")
        elif priority > 0:
            if client.zscore(f"{qk}:prioritized", job_id) is None:
                problems.append(f"{key}: not prioritized")
        elif job_id.encode() not in client.lrange(f"{qk}:wait", 0, -1):
            problems.append(f"{key}: not in wait")
    if int(client.get(f"{qk}:id") or 0) != counter:
        problems.append(f"{qk}:id = {client.get(f'{qk}:id')!r}, want {counter}")
    added = sum(1 for _, f in client.xrange(f"{qk}:events") if f[b"event"] == b"added")
    if added != counter:
        problems.append(f"{added} 'added' events for {counter} jobs")
    for key in client.scan_iter(match=f"{qk}:*", count=1000):
        if key not in expected_keys and key.decode().rpartition(":")[2] not in QUEUE_KEYS:
            problems.append(f"unexpected key {key!r}")
    return problems


counter = itertools.count()
EXAMPLES = 300 if RUN_SLOW else 60


@settings(max_examples=EXAMPLES, deadline=None, derandomize=not RUN_SLOW,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
async def test_queue_add_writes_the_specified_state_or_nothing(data: Any, redis_url: str, prefix: str) -> None:
    base = f"{prefix}-{next(counter)}"
    specs, faults = data.draw(bulk())
    how = data.draw(st.sampled_from(["add", "add-keywords", "add_bulk"]) if len(specs) == 1 else st.just("add_bulk"))
    warm = data.draw(st.booleans())  # the queue has jobs (and its meta) already
    chunk_size = data.draw(st.sampled_from([2000, 2000, 3]))
    queue_name = data.draw(st.sampled_from(["q", "ü-queue", "q{tag}", "q with space"]))
    event(f"fault: {faults[0] if faults else 'none'}")
    event(f"{how}, chunk_size {chunk_size}")
    sync = redis.Redis.from_url(redis_url)
    q = Queue(queue_name, connection=redis_url, prefix=base, chunk_size=chunk_size)
    qk = f"{base}:{queue_name}"
    try:
        if warm:
            await q.add("warm", {})
        before = snapshot(sync, [f"{base}:*"])
        t0 = time.time_ns() // 1_000_000
        try:
            if how == "add_bulk":
                jobs = await q.add_bulk([s.node for s in specs])
            elif how == "add":
                jobs = [await q.add(specs[0].node["name"], specs[0].node["data"], specs[0].node["opts"])]
            else:
                jobs = [await q.add(specs[0].node["name"], specs[0].node["data"], **specs[0].node["opts"])]
        except Exception as exc:  # noqa: BLE001 - the property is about what is raised
            assert isinstance(exc, BullfastError), f"untyped error {type(exc).__name__}: {exc}"
            assert faults, f"a valid add was refused: {exc!r}"
            assert snapshot(sync, [f"{base}:*"]) == before, f"{type(exc).__name__} but something was written"
            return
        t1 = time.time_ns() // 1_000_000
        assert not faults, f"accepted despite {faults}"
        problems = check_state(sync, qk, specs, [str(j.id) for j in jobs], ["1"] if warm else [], t0, t1)
        assert not problems, "\n".join(problems[:20])
    finally:
        await q.close()
        keys = list(sync.scan_iter(match=f"{base}:*", count=1000))
        for i in range(0, len(keys), 500):
            sync.delete(*keys[i : i + 500])
        sync.close()
