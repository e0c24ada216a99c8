"""Property: every ``FlowProducer.add`` either succeeds and leaves exactly the Redis state the
protocol specifies, or raises a typed bullfast error (a ``BullfastError``) having written
nothing.

Random trees: depth up to 4, up to 6 children per node (sometimes 40), options of every kind,
unicode names, data of every JSON shape, huge payloads, custom ids with odd characters, a
second key prefix, and a root attached to an existing (or missing) parent; the producer cuts
the tree into several calls of one MULTI/EXEC (small ``chunk_size``) in some examples. Faults are
injected on purpose (bad ids, bad options, unserialisable data, a size limit exceeded, bad
names...); such an add must fail, and one without them must succeed.

The specification (protocol sections 2, 4, 6, 8.1), checked for every node:
* its hash holds exactly ``name``, ``data`` (JSON of the data, ``{}`` for none), ``opts``
  (``{"attempts": 0}`` ∪ the options under their stored names, a bare backoff number as
  ``{"type": "fixed", "delay": n}``; a child's also ``parent: {id, queue}`` and ``fpof: true``
  unless a policy option was given), ``timestamp``, ``delay``, ``priority``, and for a child
  ``parentKey`` and ``parent`` (``{id, queueKey}`` plus the flag of its policy);
* a node with children is in ``waiting-children`` and its ``dependencies`` set is exactly its
  children's keys; a leaf is in ``delayed`` (delay > 0), else ``prioritized`` (priority > 0),
  else ``wait``;
* each queue's ``id`` counter counts its nodes, its events stream has one ``added`` per node,
  and no other key exists under the prefixes.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import redis
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bullfast import FlowProducer
from bullfast.errors import BullfastError

from .conftest import RUN_SLOW

POLICIES = ("fail_parent_on_failure", "continue_parent_on_failure", "ignore_dependency_on_failure",
            "remove_dependency_on_failure")
STORED = {
    "job_id": "jobId", "delay": "delay", "priority": "priority", "lifo": "lifo", "attempts": "attempts",
    "backoff": "backoff", "remove_on_complete": "removeOnComplete", "remove_on_fail": "removeOnFail",
    "timestamp": "timestamp", "stacktrace_limit": "stackTraceLimit", "keep_logs": "kl", "size_limit": "sizeLimit",
    "fail_parent_on_failure": "fpof", "continue_parent_on_failure": "cpof",
    "ignore_dependency_on_failure": "idof", "remove_dependency_on_failure": "rdof",
}
QUEUE_KEYS = {"wait", "prioritized", "delayed", "waiting-children", "events", "id", "marker", "pc", "meta"}

names = st.text(max_size=12)
queue_names = st.sampled_from(["q", "q2", "ü-queue", "q{tag}", "q*", "q with space", "ÿ"])
odd_ids = st.one_of(
    st.text(max_size=10).map(lambda s: "id-" + s.replace(":", ";")),
    st.sampled_from(["a b", "{x}", "*", "?", "[ab]", "new\nline", "nul\x00", "a/b", 'q"uote', "ü", "𝄞",
                     "01", "1.5", " 1", "x" * 300, "\u202eRTL", "e\u0301"]),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


def _is_int(s: str) -> bool:
    import re

    return re.fullmatch(r"-?(0|[1-9][0-9]*)", s) is not None


@dataclass
class Spec:
    """One node as generated, and what the add must do with it."""

    node: dict[str, Any]
    queue: str
    prefix: str | None
    opts: dict[str, Any]
    data: Any
    children: list[Spec] = field(default_factory=list)


@dataclass
class Case:
    root: Spec
    faults: list[str]
    chunk_size: int
    parent: str | None  # "existing", "missing" or None


@st.composite
def options(draw: Any, fault: bool) -> tuple[dict[str, Any], list[str]]:
    opts: dict[str, Any] = {}
    faults: list[str] = []
    if draw(st.booleans()):
        opts["delay"] = draw(st.sampled_from([0, 1, 1000, 86_400_000]))
    if draw(st.booleans()):
        opts["priority"] = draw(st.sampled_from([0, 1, 7, 2**21 - 1]))
    if draw(st.integers(0, 3)) == 0:
        opts["lifo"] = draw(st.booleans())
    if draw(st.booleans()):
        opts["attempts"] = draw(st.integers(0, 10))
    if draw(st.integers(0, 3)) == 0:
        opts["backoff"] = draw(st.one_of(st.integers(0, 10_000), st.fixed_dictionaries(
            {"type": st.sampled_from(["fixed", "exponential"]), "delay": st.integers(0, 10_000)})))
    if draw(st.integers(0, 3)) == 0:
        opts["remove_on_complete"] = draw(st.one_of(st.booleans(), st.integers(0, 100),
                                                    st.fixed_dictionaries({"count": st.integers(0, 9)})))
    if draw(st.integers(0, 3)) == 0:
        opts["remove_on_fail"] = draw(st.one_of(st.booleans(), st.integers(0, 100)))
    if draw(st.integers(0, 4)) == 0:
        opts["timestamp"] = draw(st.integers(0, 2_000_000_000_000))
    if draw(st.integers(0, 4)) == 0:
        opts["stacktrace_limit"] = draw(st.integers(0, 20))
    if draw(st.integers(0, 4)) == 0:
        opts["keep_logs"] = draw(st.integers(0, 20))
    policy = draw(st.sampled_from([None, None, *POLICIES, "explicit-false"]))
    if policy == "explicit-false":
        opts["fail_parent_on_failure"] = False
    elif policy:
        opts[policy] = True
    if fault:
        kind = draw(st.sampled_from(["delay", "priority", "lifo", "attempts", "unknown", "two-policies",
                                     "backoff", "int-id", "colon-id", "empty-id"]))
        faults.append(f"option {kind}")
        opts.update({
            "delay": {"delay": -1}, "priority": {"priority": 2**21}, "lifo": {"lifo": "yes"},
            "attempts": {"attempts": "3"}, "unknown": {"colour": "blue"},
            "two-policies": {"continue_parent_on_failure": True, "ignore_dependency_on_failure": True},
            "backoff": {"backoff": {"delay": 5}}, "int-id": {"job_id": "123"}, "colon-id": {"job_id": "a:b"},
            "empty-id": {"job_id": ""},
        }[kind])
    return opts, faults


@st.composite
def trees(draw: Any, base: str) -> Case:
    faults: list[str] = []
    fault_budget = draw(st.sampled_from([0, 0, 0, 1]))
    count = itertools.count()

    def make(depth: int) -> Spec:
        n = next(count)
        fault_here = fault_budget and draw(st.integers(0, 6)) == 0 and not faults
        queue = draw(queue_names)
        prefix = draw(st.sampled_from([None, None, None, f"{base}-2"]))
        opts, option_faults = draw(options(fault_here and draw(st.booleans())))
        faults.extend(option_faults)
        if draw(st.integers(0, 2)) == 0:
            opts["job_id"] = opts.get("job_id", draw(odd_ids))
        size = draw(st.sampled_from([0] * 20 + [1, 2]))
        data = draw(json_values) if not size else {"blob": "é✓𝄞 " * (size * 150_000)}
        node: dict[str, Any] = {"name": draw(names), "queue_name": queue, "data": data, "opts": opts}
        if prefix:
            node["prefix"] = prefix
        if fault_here and not option_faults:
            kind = draw(st.sampled_from(["data", "big-int", "size-limit", "queue", "empty-queue", "name",
                                         "prefix", "children"]))
            faults.append(f"node {kind}")
            if kind == "data":
                node["data"] = {"x": {1, 2}}
            elif kind == "big-int":
                node["data"] = [2**70]
            elif kind == "size-limit":
                node["data"] = {"text": "x" * 64}
                opts["size_limit"] = 16
            elif kind == "queue":
                node["queue_name"] = "bad:queue"
            elif kind == "empty-queue":
                node["queue_name"] = ""
            elif kind == "name":
                node["name"] = 42
            elif kind == "prefix":
                node["prefix"] = ""
            else:
                node["children"] = {"not": "a list"}
        spec = Spec(node, queue, prefix, opts, node["data"])
        if depth < 4 and "children" not in node:
            widths = [3, 0, 1, 6, 40, 2] if n == 0 else [0, 2, 0, 1, 0, 3]
            width = draw(st.sampled_from(widths))
            spec.children = [make(depth + 1) for _ in range(width)]
            if spec.children:
                node["children"] = [c.node for c in spec.children]
        return spec

    root = make(1)
    # a custom id used twice in one queue is refused (the generator may draw it by chance)
    seen: Counter[tuple[str | None, str, str]] = Counter()
    for spec in walk(root):
        if "job_id" in spec.opts:
            seen[(spec.prefix, spec.queue, spec.opts["job_id"])] += 1
    if any(n > 1 for n in seen.values()):
        faults.append("duplicate id")
    parent = draw(st.sampled_from([None, "existing", None, None, None, "missing"]))
    if parent == "missing":
        faults.append("missing parent")
    if parent:
        root.opts["parent"] = {"id": "ext-parent" if parent == "existing" else "nobody", "queue": f"{base}:ext"}
    return Case(root, faults, draw(st.sampled_from([2000, 2000, 3, 7])), parent)


def walk(spec: Spec) -> list[Spec]:
    out, todo = [], [spec]
    while todo:
        s = todo.pop(0)
        out.append(s)
        todo.extend(s.children)
    return out


def snapshot(client: redis.Redis, patterns: list[str]) -> dict[bytes, bytes]:
    out = {}
    for pattern in patterns:
        for key in client.scan_iter(match=pattern, count=1000):
            out[key] = client.dump(key)
    return out


def expected_opts(spec: Spec, parent: tuple[str, str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"attempts": 0}
    for name, value in spec.opts.items():
        if name == "parent":
            continue
        if name == "backoff" and isinstance(value, int):
            value = {"type": "fixed", "delay": value}
        out[STORED[name]] = value
    if parent is not None:
        out["parent"] = {"id": parent[0], "queue": parent[1]}
        if not any(p in spec.opts for p in POLICIES):
            out["fpof"] = True
    return out


def check_state(client: redis.Redis, case: Case, node: Any, base: str, t0: int, t1: int) -> list[str]:
    problems: list[str] = []
    per_queue: Counter[str] = Counter()
    expected_keys: set[bytes] = set()

    def visit(spec: Spec, jn: Any, parent: tuple[str, str, str] | None) -> None:
        prefix = spec.prefix or base
        qk = f"{prefix}:{spec.queue}"
        job_id = jn.job.id
        key = f"{qk}:{job_id}"
        per_queue[qk] += 1
        expected_keys.add(key.encode())
        if "job_id" in spec.opts and spec.opts["job_id"] != job_id:
            problems.append(f"{key}: custom id {spec.opts['job_id']!r} became {job_id!r}")
        ext = ("ext-parent", f"{base}:ext") if parent is None and case.parent == "existing" else None
        link = parent or ((f"{base}:ext:ext-parent", *ext) if ext else None)
        raw = client.hgetall(key)
        fields = {k.decode(): v for k, v in raw.items()}
        want = {"name", "data", "opts", "timestamp", "delay", "priority"}
        if link:
            want |= {"parentKey", "parent"}
        if set(fields) != want:
            problems.append(f"{key}: fields {sorted(fields)}, want {sorted(want)}")
            return
        if fields["name"].decode() != spec.node["name"]:
            problems.append(f"{key}: name {fields['name']!r}")
        stored_data = orjson.loads(fields["data"])
        if stored_data != ({} if spec.data is None else spec.data):
            problems.append(f"{key}: data differs")
        opts = orjson.loads(fields["opts"])
        want_opts = expected_opts(spec, (link[1], link[2]) if link else None)
        if opts != want_opts:
            problems.append(f"{key}: opts {opts} != {want_opts}")
        ts = int(fields["timestamp"])
        if spec.opts.get("timestamp"):  # 0 is "not given", as in BullMQ
            if ts != spec.opts["timestamp"]:
                problems.append(f"{key}: timestamp {ts}")
        elif not t0 <= ts <= t1:
            problems.append(f"{key}: timestamp {ts} not within the add")
        delay, priority = spec.opts.get("delay", 0), spec.opts.get("priority", 0)
        if int(fields["delay"]) != delay or int(fields["priority"]) != priority:
            problems.append(f"{key}: delay/priority {fields['delay']!r}/{fields['priority']!r}")
        if link:
            if fields["parentKey"].decode() != link[0]:
                problems.append(f"{key}: parentKey {fields['parentKey']!r}")
            pj = orjson.loads(fields["parent"])
            flags = [STORED[p] for p in POLICIES if spec.opts.get(p)]
            if not any(p in spec.opts for p in POLICIES):
                flags = ["fpof"]
            want_pj = {"id": link[1], "queueKey": link[2], **{f: True for f in flags}}
            if pj != want_pj:
                problems.append(f"{key}: parent {pj} != {want_pj}")
        children = jn.children or []
        if len(children) != len(spec.children):
            problems.append(f"{key}: {len(children)} children returned, {len(spec.children)} given")
            return
        if spec.children:
            deps = client.smembers(f"{key}:dependencies")
            want_deps = {f"{c.prefix or base}:{c.queue}:{cj.job.id}".encode() for c, cj in zip(spec.children, children)}
            if deps != want_deps:
                problems.append(f"{key}: dependencies differ")
            expected_keys.add(f"{key}:dependencies".encode())
            if client.zscore(f"{qk}:waiting-children", job_id) is None:
                problems.append(f"{key}: not in waiting-children")
        elif delay > 0:
            score = client.zscore(f"{qk}:delayed", job_id)
            due = ts + delay
            if score is None or not due * 4096 <= score <= due * 4096 + 4095:
                problems.append(f"{key}: delayed score {score}, due {due}")
        elif priority > 0:
            if client.zscore(f"{qk}:prioritized", job_id) is None:
                problems.append(f"{key}: not prioritized")
        elif job_id.encode() not in client.lrange(f"{qk}:wait", 0, -1):
            problems.append(f"{key}: not in wait")
        for c, cj in zip(spec.children, children):
            visit(c, cj, (key, job_id, qk))

    visit(case.root, node, None)
    if case.parent == "existing":
        deps = client.smembers(f"{base}:ext:ext-parent:dependencies")
        root_key = f"{case.root.prefix or base}:{case.root.queue}:{node.job.id}".encode()
        if root_key not in deps:
            problems.append("the root is not a dependency of the existing parent")
        # the pre-existing flow's keys
        expected_keys |= {k for k in client.scan_iter(match=f"{base}:ext*")}
    for qk, n in per_queue.items():
        if int(client.get(f"{qk}:id") or 0) != n:
            problems.append(f"{qk}:id = {client.get(f'{qk}:id')!r}, want {n}")
        added = sum(1 for _, f in client.xrange(f"{qk}:events") if f[b"event"] == b"added")
        if added != n:
            problems.append(f"{qk}: {added} 'added' events for {n} nodes")
    for key in snapshot(client, [f"{base}:*", f"{base}-2:*"]):
        if key in expected_keys:
            continue
        qk, _, suffix = key.decode().rpartition(":")
        if qk in per_queue and suffix in QUEUE_KEYS:
            continue
        problems.append(f"unexpected key {key!r}")
    return problems


counter = itertools.count()
EXAMPLES = 300 if RUN_SLOW else 50


@settings(max_examples=EXAMPLES, deadline=None, derandomize=not RUN_SLOW,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(data=st.data())
async def test_flow_add_writes_the_specified_state_or_nothing(data: Any, redis_url: str, prefix: str) -> None:
    base = f"{prefix}-{next(counter)}"
    case = data.draw(trees(base))
    nodes = walk(case.root)
    event(f"fault: {case.faults[0] if case.faults else 'none'}")
    event(f"nodes: {'1' if len(nodes) == 1 else '2-9' if len(nodes) < 10 else '10+'}")
    event(f"chunk_size: {case.chunk_size}, external parent: {case.parent}")
    if any(isinstance(n.data, dict) and "blob" in n.data for n in nodes):
        event("huge payload")
    sync = redis.Redis.from_url(redis_url)
    fp = FlowProducer(connection=redis_url, prefix=base, chunk_size=case.chunk_size)
    patterns = [f"{base}:*", f"{base}-2:*"]
    try:
        if case.parent == "existing":
            await fp.add({"name": "ext", "queue_name": "ext", "opts": {"job_id": "ext-parent"},
                          "children": [{"name": "anchor", "queue_name": "ext"}]})
        before = snapshot(sync, patterns)
        dbsize = sync.dbsize()
        t0 = time.time_ns() // 1_000_000
        try:
            node = await fp.add(case.root.node)
        except Exception as exc:  # noqa: BLE001 - the property is about what is raised
            assert isinstance(exc, BullfastError), f"untyped error {type(exc).__name__}: {exc}"
            assert case.faults, f"a valid flow was refused: {exc!r}"
            assert snapshot(sync, patterns) == before, f"{type(exc).__name__} but something was written"
            assert sync.dbsize() == dbsize
            return
        t1 = time.time_ns() // 1_000_000
        assert not case.faults, f"accepted despite {case.faults}"
        problems = check_state(sync, case, node, base, t0, t1)
        assert not problems, "\n".join(problems[:20])
    finally:
        await fp.close()
        for pattern in patterns:
            keys = list(sync.scan_iter(match=pattern, count=1000))
            for i in range(0, len(keys), 500):
                sync.delete(*keys[i : i + 500])
        sync.close()


@pytest.mark.parametrize("where", ["name", "queue_name", "prefix", "job_id"])
async def test_lone_surrogates_are_refused_with_a_typed_error(where: str, redis_url: str, prefix: str) -> None:
    node: dict[str, Any] = {"name": "n", "queue_name": "q", "data": {}}
    if where == "job_id":
        node["opts"] = {"job_id": "id\ud800"}
    else:
        node[where] = "x\udc00"
    async with FlowProducer(connection=redis_url, prefix=prefix) as fp:
        with pytest.raises(BullfastError):
            await fp.add(node)
