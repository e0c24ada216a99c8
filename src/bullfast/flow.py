"""FlowProducer: adding trees of jobs atomically, and reading them back.

A flow node is a mapping ``{"name", "queue_name" (or "queueName"), "data", "opts", "children",
"prefix"}``. The whole tree is flattened and encoded by the compiled core and written with a
few bulk calls in one transaction: all of it appears at once, or nothing does.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

from . import _scripts, _wire, core
from ._add import DEFAULT_CHUNK_SIZE, now_ms, write_plan
from ._compat import camel_aliases, port_keywords
from ._connection import RedisConnection, is_noscript
from ._emitter import EventEmitter
from ._plan import Plan
from .errors import InvalidOptionError
from .fanout import DEFAULT_FAN_OUT_CHUNK, DEFAULT_WINDOW, FanOut
from .job import Job
from .options import (
    check_prefix,
    check_queue_name,
    constructor_options,
    normalize_defaults,
    normalize_options,
    positive_int,
)
from .queue import Queue, QueueBase

MAX_DEPTH = 1000


def _queues_options(value: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """``{queue: {default_job_options}}``, also given as bullmq's ``{"queuesOptions": {...}}``."""
    if value is not None and ("queuesOptions" in value or "queues_options" in value):
        inner: Mapping[str, Any] | None = value.get("queuesOptions", value.get("queues_options"))
        return inner
    return value


class JobNode(Mapping[str, Any]):
    """A job of a flow and its children: ``node.job``, ``node.children`` (a list of JobNode,
    None for a leaf).

    It is also the dict bullmq returns, ``{"job": ..., "children": [...]}``, read-only: a leaf
    has only the ``"job"`` key, as in bullmq (``node["job"]``, ``"children" in node``,
    ``node.get("children", [])``, ``dict(node)``). Equality and hashing stay those of an
    object. The nodes of an added flow are made on first access, so a fan-out of 100,000
    children costs nothing until it is walked."""

    __eq__ = object.__eq__
    __hash__ = object.__hash__

    __slots__ = ("_job", "_children", "_plan", "_index", "_producer", "_now", "state")

    def __init__(self, job: Job | None = None, children: list[JobNode] | None = None) -> None:
        self._job = job
        self._children = children
        # the job's state as ``get_flow`` read it ("completed", "waiting-children", ...); None
        # for the nodes an add returns
        self.state: str | None = None
        self._plan: Plan | None = None
        self._index = -1
        self._producer: FlowProducer | None = None
        self._now = 0

    @classmethod
    def _lazy(cls, producer: FlowProducer, plan: Plan, index: int, now: int) -> JobNode:
        node = cls()
        node._plan, node._index, node._producer, node._now = plan, index, producer, now
        return node

    @property
    def job(self) -> Job:
        if self._job is None:
            assert self._plan is not None and self._producer is not None
            self._job = self._producer._job_of(self._plan, self._index, self._now)
        return self._job

    @property
    def children(self) -> list[JobNode] | None:
        if self._children is None and self._plan is not None:
            plan, i = self._plan, self._index
            first, n = plan.first_child[i], plan.n_children[i]
            if n:
                assert self._producer is not None
                self._children = [
                    JobNode._lazy(self._producer, plan, c, self._now) for c in range(first, first + n)
                ]
        return self._children

    def __getitem__(self, key: str) -> Any:
        if key == "job":
            return self.job
        if key == "children" and self.children:
            return self.children
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(("job", "children") if self.children else ("job",))

    def __len__(self) -> int:
        return 2 if self.children else 1

    def walk(self) -> Iterator[JobNode]:
        """This node and all its descendants, breadth-first."""
        todo = deque([self])
        while todo:
            node = todo.popleft()
            yield node
            todo.extend(node.children or ())

    def __repr__(self) -> str:
        n = len(self.children or ())
        return f"<JobNode {self.job!r} children={n}>"


_OPTIONS = {"connection": "connection", "prefix": "prefix"}
# the keys that make a lone mapping BullMQ's options rather than the bullmq Python port's
# connection options (its redisOpts), as that port tells them apart
_OPTION_KEYS = frozenset(("connection", "prefix", "telemetry", "skipVersionCheck", "blockingConnection",
                          "skipWaitingForReady"))


def _constructor_forms(args: tuple[Any, ...], given: dict[str, Any]) -> Any:
    """The options of the constructor's forms: ``(opts)`` / ``(opts=)`` (BullMQ's options), and
    the bullmq Python port's ``(redis_opts, opts)`` / ``(redisOpts=, opts=)``, whose first
    argument is the connection, also alone (a URL, or redis-py's options: a mapping with none
    of the options' keys)."""
    unknown = set(given) - {"opts", "redisOpts"}
    if unknown or len(args) > 2:
        raise TypeError(f"FlowProducer() takes (opts) or (redis_opts, opts), not {sorted(unknown) or args!r}")
    port_form = len(args) == 2 or "redisOpts" in given or ("opts" in given and len(args) == 1)
    names = ("redisOpts", "opts")[: len(args)] if port_form else ("opts",)[: len(args)]
    values = dict(zip(names, args))
    for name in given:
        if name in values:
            raise TypeError(f"FlowProducer() got {name!r} twice")
    values.update(given)
    opts = values.get("opts")
    if "redisOpts" not in values:
        if opts is None or (isinstance(opts, Mapping) and (not opts or _OPTION_KEYS.intersection(opts))):
            return opts
        values = {"redisOpts": opts}  # a lone connection (the port's first argument)
    port_connection, opts = values.get("redisOpts"), dict(values.get("opts") or {})
    if port_connection:  # ({} as None: the default server)
        opts["connection"] = port_connection
    return opts


@camel_aliases()
class FlowProducer(EventEmitter):
    """Adds flows: ``await FlowProducer(connection=...).add(tree)``.

    BullMQ's form ``FlowProducer({"connection": ..., "prefix": ...})`` works too (``opts``
    reads it back), and so does the bullmq Python port's ``FlowProducer(redis_opts, opts)``,
    whose first argument is the connection (a URL or redis-py's options), alone or not.
    """

    def __init__(
        self,
        *args: Any,
        connection: Any = None,
        prefix: str | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        **given: Any,
    ) -> None:
        EventEmitter.__init__(self)
        opts = _constructor_forms(args, given)
        given = constructor_options("flow producer", opts, _OPTIONS)
        opts = dict(opts or {})
        self.prefix = check_prefix(prefix or given.get("prefix") or _wire.DEFAULT_PREFIX)
        self._redis = RedisConnection(connection if connection is not None else given.get("connection"))
        self.chunk_size = positive_int("FlowProducer", "chunk_size", chunk_size)
        self._queues: dict[tuple[str, str], QueueBase] = {}
        if connection is not None:
            opts.setdefault("connection", connection)
        opts.setdefault("prefix", self.prefix)
        self.opts = opts
        self.closing = False

    @property
    def client(self) -> Any:
        return self._redis.client

    def _queue(self, prefix: str, name: str) -> QueueBase:
        q = self._queues.get((prefix, name))
        if q is None:
            q = self._queues[(prefix, name)] = Queue(name, prefix=prefix, _redis=self._redis)
        return q

    def _plan(self, roots: Sequence[Any], queues_options: Mapping[str, Any] | None) -> Plan:
        defaults: dict[str, Any] = {}
        for qname, qopts in (queues_options or {}).items():
            check_queue_name(qname)
            if not isinstance(qopts, Mapping):
                raise InvalidOptionError(f"queues_options[{qname!r}] must be a mapping")
            value = qopts.get("default_job_options", qopts.get("defaultJobOptions"))
            defaults[qname] = normalize_defaults(value)
        return core.plan_jobs(roots, self.prefix, None, defaults, normalize_options, os.urandom, MAX_DEPTH, True)

    @port_keywords(opts="queues_options")
    async def add(
        self,
        flow: Mapping[str, Any],
        queues_options: Mapping[str, Any] | None = None,
        *,
        reuse_existing: bool = False,
    ) -> JobNode:
        """Add one tree atomically; returns its root :class:`JobNode`.

        A node whose ``job_id`` is already taken makes the whole add fail with
        :class:`~bullfast.errors.JobExistsError`, unless ``reuse_existing``: then, as in
        BullMQ 6.7, the existing job becomes the child (a completed one hands its result to
        the parent at once)."""
        return (await self.add_bulk([flow], queues_options, reuse_existing=reuse_existing))[0]

    async def add_bulk(
        self,
        flows: Sequence[Mapping[str, Any]],
        queues_options: Mapping[str, Any] | None = None,
        *,
        reuse_existing: bool = False,
    ) -> list[JobNode]:
        """Add many trees in one atomic operation."""
        queues_options = _queues_options(queues_options)
        plan = self._plan(flows, queues_options)
        if not reuse_existing:
            plan.checks += [("N", plan.job_key(i), "") for i in range(len(plan)) if plan.opts_of[i].job_id]
        else:
            plan.checks += [
                ("P", plan.job_key(i), plan.parent_key(i) or "")
                for i in range(len(plan))
                if plan.opts_of[i].job_id and plan.parent_key(i)
            ]
        now = now_ms()
        await write_plan(
            self._redis,
            plan,
            chunk_size=self.chunk_size,
            reuse_existing=reuse_existing,
            what="addFlow",
            timestamp=now,
        )
        return [JobNode._lazy(self, plan, r, now) for r in plan.roots]

    def fan_out(
        self,
        parent: Mapping[str, Any],
        queues_options: Mapping[str, Any] | None = None,
        *,
        chunk_size: int = DEFAULT_FAN_OUT_CHUNK,
        window: int = DEFAULT_WINDOW,
    ) -> FanOut:
        """A parent whose children are streamed in (see :mod:`bullfast.fanout`); use as
        ``async with producer.fan_out(node) as fan: await fan.add_children(iterable)``.
        For a million children; :meth:`add` remains for trees that must appear at once."""
        return FanOut(self, parent, _queues_options(queues_options), chunk_size=chunk_size, window=window)

    async def resume_fan_out(self, queue_name: str, job_id: str, prefix: str | None = None) -> FanOut:
        """The open fan-out of an existing parent (its producer died before sealing);
        continue with ``add_children(items, skip=fan.added)``, or ``seal()`` / ``abort()``."""
        return await FanOut.resume(self, queue_name, job_id, prefix)

    def _job_of(self, plan: Plan, i: int, now: int) -> Job:
        qi = plan.queue_of[i]
        queue = self._queue(plan.prefixes[qi], plan.queue_names[qi])
        opts = plan.opts_of[i]
        p = plan.parents[i]
        pid: str | None
        pqueue: str | None
        if p >= 0:
            pid, pqueue = plan.ids[p], plan.queue_prefixes[plan.queue_of[p]][:-1]
        elif opts.parent_key and opts.parent_queue_key:
            pqueue = opts.parent_queue_key
            pid = opts.parent_key[len(pqueue) + 1 :]
        else:
            pid = pqueue = None
        return Job.added(queue, plan.nodes[i], opts, plan.ids[i], pid, pqueue, now)

    async def get_flow(
        self,
        queue_name: str | Mapping[str, Any],
        job_id: str | None = None,
        depth: int = 10,
        max_children: int = 20,
        prefix: str | None = None,
    ) -> JobNode | None:
        """Read a tree back from Redis, ``depth`` levels deep (1: the job alone), with up to
        ``max_children`` children of each kind per node: processed, pending, failed, then
        ignored ones, in that order (so up to 4 x ``max_children``). A node without children
        has ``children`` None; children whose hash is gone (removed on completion) are left
        out; None if the job itself does not exist. Each node's ``state`` is its job's state as
        read then (what ``get_state`` answers).

        Two differences from BullMQ 6.7's ``getFlow``, on purpose: it keeps whatever one SCAN
        per kind answers, which can be more than ``maxChildren`` (SCAN's COUNT is a hint), and
        gives a child whose hash is gone as ``undefined``. Here ``max_children`` is a bound and
        such a child is left out.

        BullMQ's form ``get_flow({"id": ..., "queueName": ..., "depth": ..., "maxChildren": ...,
        "prefix": ...})`` works too (also with ``queue_name``, ``job_id``, ``max_children``)."""
        if isinstance(queue_name, Mapping):
            if job_id is not None:
                raise InvalidOptionError("get_flow takes a job id or a mapping of options, not both")
            spec = _flow_spec(queue_name)
            queue_name = spec["queue_name"]
            job_id = spec["id"]
            depth = spec.get("depth", depth)
            max_children = spec.get("max_children", max_children)
            prefix = spec.get("prefix", prefix)
        name = check_queue_name(queue_name)
        if not isinstance(job_id, str) or not job_id:
            raise InvalidOptionError(f"get_flow needs a job id (a non-empty string), not {job_id!r}")
        for option, value in (("depth", depth), ("max_children", max_children)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidOptionError(f"get_flow: {option} must be a whole number >= 1, not {value!r}")
        queue = self._queue(check_prefix(prefix or self.prefix), name)
        return await _read_tree(self._redis, queue, job_id, depth, max_children, self._queue)

    async def close(self) -> None:
        self.closing = True
        await self._redis.close()

    async def disconnect(self) -> None:
        """bullmq's other name of :meth:`close`."""
        await self.close()

    async def __aenter__(self) -> FlowProducer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


_FLOW_SPEC_NAMES = {
    "id": "id",
    "job_id": "id",
    "jobId": "id",
    "queueName": "queue_name",
    "queue_name": "queue_name",
    "depth": "depth",
    "maxChildren": "max_children",
    "max_children": "max_children",
    "prefix": "prefix",
}


def _flow_spec(given: Mapping[str, Any]) -> dict[str, Any]:
    """BullMQ's NodeOpts ``{id, queueName, depth, maxChildren, prefix}`` under our names."""
    out: dict[str, Any] = {}
    for key, value in given.items():
        name = _FLOW_SPEC_NAMES.get(key)
        if name is None:
            raise InvalidOptionError(f"get_flow: unknown option {key!r}")
        if value is None:
            continue
        if name in out and out[name] != value:
            raise InvalidOptionError(f"get_flow: {name!r} is given twice, with different values")
        out[name] = value
    for name in ("id", "queue_name"):
        if name not in out:
            raise InvalidOptionError(f"get_flow needs {'queueName' if name == 'queue_name' else 'id'}")
    return out


async def _read_tree(
    redis: RedisConnection,
    queue: QueueBase,
    job_id: str,
    depth: int,
    max_children: int,
    queue_of: Callable[[str, str], QueueBase],
) -> JobNode | None:
    """The tree under one job, read a level at a time (a loop, not recursion: a chain can be
    as deep as a flow may be, beyond Python's recursion limit), each level in pipelined round
    trips of 20 calls: per queue, a read_jobs call (the hashes and child keys) for each 1,000
    jobs and a get_states call for each 10,000."""
    commands = redis.commands
    scripts = [_scripts.get("read_jobs"), _scripts.get("get_states")]
    read_jobs, get_states = (script.sha.decode() for script in scripts)
    await redis.ensure_loaded(scripts, "getFlow")
    root: JobNode | None = None
    # (queue, id, parent node) of every job of the level being read, in tree order
    level: list[tuple[QueueBase, str, JobNode | None]] = [(queue, job_id, None)]
    for remaining in range(depth, 0, -1):
        wanted = max_children if remaining > 1 else 0
        by_queue: dict[str, list[int]] = {}
        for k, (q, _, _) in enumerate(level):
            by_queue.setdefault(q.key_prefix, []).append(k)
        # (script, extra argument, jobs) of each call; the states in bigger batches: each call
        # may read the queue's wait list, as far as the last of its jobs
        calls = [(read_jobs, [wanted], ks[s : s + _JOBS_PER_CALL])
                 for ks in by_queue.values() for s in range(0, len(ks), _JOBS_PER_CALL)]
        calls += [(get_states, [], ks[s : s + _STATES_PER_CALL])
                  for ks in by_queue.values() for s in range(0, len(ks), _STATES_PER_CALL)]
        replies: list[Any] = []
        for start in range(0, len(calls), _CALLS_PER_ROUND):
            round_calls = calls[start : start + _CALLS_PER_ROUND]
            for _ in range(2):  # once more if the script cache was flushed meanwhile
                async with commands.pipeline(transaction=False) as pipe:
                    for sha, extra, batch in round_calls:
                        q, jid, _ = level[batch[0]]
                        pipe.evalsha(sha, 1, q.key(jid), q.key_prefix, *extra, *(level[k][1] for k in batch))
                    answers = await pipe.execute(raise_on_error=False)
                if not any(is_noscript(r) for r in answers):
                    break
                for script in scripts:
                    await redis.load(script, "getFlow")
            for answer in answers:
                if isinstance(answer, Exception):
                    raise answer
            replies += answers
        raws: list[Any] = [None] * len(level)
        children: list[Any] = [None] * len(level)
        states: list[bytes] = [b""] * len(level)
        for (sha, _, batch), answer in zip(calls, replies):
            if sha == read_jobs:
                read = core.unpack_string_arrays(answer)
                for j, k in enumerate(batch):
                    raws[k], children[k] = read[2 * j], read[2 * j + 1]
            else:
                for j, k in enumerate(batch):
                    states[k] = answer[j]
        next_level: list[tuple[QueueBase, str, JobNode | None]] = []
        for (q, jid, parent), raw, keys, state in zip(level, raws, children, states):
            if not raw:
                continue
            node = JobNode(Job.from_hash(q, jid, raw), None)
            node.state = state.decode()
            if parent is None:
                root = node
            else:
                if parent._children is None:
                    parent._children = []
                parent._children.append(node)
            placeholder = f"{node.job.key}:unsealed"  # a streamed fan-out's: no job
            for member in keys:
                child_key = member.decode()
                if child_key == placeholder:
                    continue
                rest, _, cid = child_key.rpartition(":")
                cprefix, _, cqueue = rest.rpartition(":")
                next_level.append((queue_of(cprefix, cqueue), cid, node))
        level = next_level
        if not level:
            break
    return root


# jobs a read_jobs call reads (its reply stays a few MB), jobs a get_states call reads, and
# calls a round trip carries (its replies come back before the socket's timeout)
_JOBS_PER_CALL = 1_000
_STATES_PER_CALL = 10_000
_CALLS_PER_ROUND = 20
