"""FlowProducer: adding trees of jobs atomically, and reading them back.

A flow node is a mapping ``{"name", "queue_name" (or "queueName"), "data", "opts", "children",
"prefix"}``. The whole tree is flattened and encoded by the compiled core and written with a
few bulk calls in one transaction: all of it appears at once, or nothing does.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

from . import _wire, core
from ._add import DEFAULT_CHUNK_SIZE, now_ms, write_plan
from ._compat import camel_aliases
from ._connection import RedisConnection
from ._emitter import EventEmitter
from ._plan import Plan
from .errors import InvalidOptionError
from .fanout import DEFAULT_FAN_OUT_CHUNK, DEFAULT_WINDOW, FanOut
from .job import Job
from .options import check_prefix, check_queue_name, normalize_defaults, normalize_options
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

    __slots__ = ("_job", "_children", "_plan", "_index", "_producer", "_now")

    def __init__(self, job: Job | None = None, children: list[JobNode] | None = None) -> None:
        self._job = job
        self._children = children
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
        todo = [self]
        while todo:
            node = todo.pop(0)
            yield node
            todo.extend(node.children or ())

    def __repr__(self) -> str:
        n = len(self.children or ())
        return f"<JobNode {self.job!r} children={n}>"


@camel_aliases()
class FlowProducer(EventEmitter):
    """Adds flows: ``await FlowProducer(connection=...).add(tree)``.

    BullMQ's form ``FlowProducer({"connection": ..., "prefix": ...})`` works too (``opts``
    reads it back).
    """

    def __init__(
        self,
        opts: Mapping[str, Any] | None = None,
        *,
        connection: Any = None,
        prefix: str | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        EventEmitter.__init__(self)
        opts = dict(opts or {})
        self.prefix = check_prefix(prefix or opts.get("prefix") or _wire.DEFAULT_PREFIX)
        self._redis = RedisConnection(connection if connection is not None else opts.get("connection"))
        self.chunk_size = chunk_size
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
        node = plan.nodes[i]
        opts = plan.opts_of[i]
        job = Job(queue, node["name"], node.get("data"), None, plan.ids[i])
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
        job.opts = opts.stored_opts(pid, pqueue)
        job.timestamp = opts.timestamp if opts.timestamp is not None else now
        if pid is not None:
            job.parent_key = f"{pqueue}:{pid}"
            job.parent = {"id": pid, "queueKey": pqueue}
            flag = opts.policy if opts.explicit_policy else "fpof"
            if flag:
                job.parent[flag] = True
        return job

    async def get_flow(
        self,
        queue_name: str,
        job_id: str,
        depth: int = 10,
        max_children: int = 20,
        prefix: str | None = None,
    ) -> JobNode | None:
        """Read a tree back from Redis: the job and up to ``max_children`` children per node
        (processed, pending, failed, then ignored ones), ``depth`` levels deep. Children whose
        hash is gone (removed on completion) are left out."""
        queue = self._queue(prefix or self.prefix, queue_name)
        return await _read_tree(queue, job_id, depth, max_children, self._queue)

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


async def _read_tree(queue: QueueBase, job_id: str, depth: int, max_children: int, queue_of: Any) -> JobNode | None:
    client = queue.client
    raw = await client.hgetall(queue.key(job_id))
    if not raw:
        return None
    job = Job.from_hash(queue, job_id, raw)
    node = JobNode(job, None)
    if depth <= 1:
        return node
    key = queue.key(job_id)
    async with client.pipeline(transaction=False) as pipe:
        pipe.hscan(f"{key}:{_wire.JOB_PROCESSED}", 0, count=max_children)
        pipe.sscan(f"{key}:{_wire.JOB_DEPENDENCIES}", 0, count=max_children)
        pipe.zrange(f"{key}:{_wire.JOB_UNSUCCESSFUL}", 0, max_children - 1)
        pipe.hscan(f"{key}:{_wire.JOB_FAILED_CHILDREN}", 0, count=max_children)
        (_, processed), (_, pending), failed, (_, ignored) = await pipe.execute()
    child_keys = [k.decode() for k in list(processed) + list(pending) + list(failed) + list(ignored)]
    children = []
    for child_key in child_keys[:max_children]:
        rest, _, cid = child_key.rpartition(":")
        cprefix, _, cqueue = rest.rpartition(":")
        child = await _read_tree(queue_of(cprefix, cqueue), cid, depth - 1, max_children, queue_of)
        if child is not None:
            children.append(child)
    if children:
        node._children = children
    return node
