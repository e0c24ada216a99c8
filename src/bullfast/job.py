"""A job: what was added, and what happened to it, read from its hash.

Attributes are snake_case (``attempts_made``); BullMQ's camelCase names (``attemptsMade``,
``getChildrenValues``) are readable too, so code written for ``bullmq`` keeps working.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from . import _json, _removal, _wire, core
from ._add import now_ms
from ._compat import camel_aliases, port_keywords
from .errors import DataNotSerializableError, InvalidOptionError, JobFailedError, JobLockedError, server_error

if TYPE_CHECKING:
    from .options import JobOptions
    from .queue import QueueBase


# the groups of a parent's children, in get_dependencies' order
_GROUP_ORDER = ("processed", "unprocessed", "ignored", "failed")
_GROUPS = frozenset(_GROUP_ORDER)
_PAGE_KEYS = frozenset(("cursor", "count"))


def encode_json(value: Any, what: str) -> bytes:
    try:
        return core.encode_value(value)
    except TypeError as exc:
        raise DataNotSerializableError(f"{what} is not JSON-serialisable: {exc}") from None


def _zero_until_set(name: str) -> Any:
    """A property reading attribute ``name`` with 0 for None, and writing None for 0."""
    return property(lambda job: getattr(job, name) or 0, lambda job, value: setattr(job, name, value or None))


# what _StoredOutcomes.read says of a job that exists and has not finished
_UNFINISHED: Any = object()


def _returned_value(raw: bytes | None) -> Any:
    """A finished job's stored returnvalue, as its completed event gives it (text that is not
    JSON as text)."""
    if not raw:
        return None
    try:
        return _json.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")


class _StoredOutcomes:
    """Reads the stored outcome of jobs of one queue for wait_until_finished: the reads asked
    for while the event loop turns go together in one pipeline (1,000 jobs a round trip), where
    20,000 waits started at once would each send their commands on a pooled connection of its
    own."""

    def __init__(self, queue: Any) -> None:
        # (weakly: the readers are kept per queue in a WeakKeyDictionary, which a strong
        # reference from the value to its key would keep for ever)
        self.queue = weakref.ref(queue)
        self.asked: dict[str, list[asyncio.Future[Any]]] = {}
        self.flushing: set[asyncio.Task[None]] = set()

    async def read(self, job_id: str) -> Any:
        """(True, returnvalue) or (False, failedReason) if the job finished, ``_UNFINISHED``
        if not yet, None if there is no such job."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self.asked:
            loop.call_soon(self._start_flush)
        self.asked.setdefault(job_id, []).append(future)
        return await future

    def _start_flush(self) -> None:
        task = asyncio.ensure_future(self._flush())
        self.flushing.add(task)  # (a task nobody holds may be collected before it ends)
        task.add_done_callback(self.flushing.discard)

    async def _flush(self) -> None:
        asked, self.asked = self.asked, {}
        ids = list(asked)
        queue = self.queue()
        if queue is None:  # no waiter is left: each one's job holds the queue
            return
        try:
            for start in range(0, len(ids), 1000):
                chunk = ids[start:start + 1000]
                async with queue._redis.commands.pipeline(transaction=False) as pipe:
                    for job_id in chunk:
                        key = queue.key(job_id)
                        pipe.hmget(key, "finishedOn", "returnvalue", "failedReason")
                        pipe.exists(key)
                        pipe.zscore(queue.key(_wire.COMPLETED), job_id)
                        pipe.zscore(queue.key(_wire.FAILED), job_id)
                    replies = await pipe.execute()
                for n, job_id in enumerate(chunk):
                    raw, exists, in_completed, in_failed = replies[4 * n:4 * n + 4]
                    if not exists:
                        stored = None
                    elif raw[0] is not None and in_completed is not None:
                        stored = (True, _returned_value(raw[1]))
                    elif raw[0] is not None and in_failed is not None:
                        stored = (False, (raw[2] or b"").decode())
                    else:
                        stored = _UNFINISHED
                    for future in asked.pop(job_id):
                        if not future.done():
                            future.set_result(stored)
        except BaseException as exc:
            for futures in asked.values():
                for future in futures:
                    if future.done():
                        continue
                    if isinstance(exc, asyncio.CancelledError):
                        future.cancel()
                    else:
                        future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise


_outcome_readers: weakref.WeakKeyDictionary[Any, _StoredOutcomes] = weakref.WeakKeyDictionary()


def _stored_outcomes(queue: Any) -> _StoredOutcomes:
    reader = _outcome_readers.get(queue)
    if reader is None:
        reader = _outcome_readers[queue] = _StoredOutcomes(queue)
    return reader


@camel_aliases({"stackTrace": "stacktrace", "asJSON": "as_dict", "isInZSet": "is_in_zset", "fromJSON": "from_json"})
class Job:
    """One job of a queue. Built by ``Queue.add``, ``Queue.get_job``, workers and flows."""

    __slots__ = (
        "queue",
        "id",
        "name",
        "data",
        "opts",
        "timestamp",
        "delay",
        "priority",
        "progress",
        "attempts_made",
        "attempts_started",
        "stalled_counter",
        "processed_on",
        "finished_on",
        "returnvalue",
        "failed_reason",
        "stacktrace",
        "parent_key",
        "parent",
        "deferred_failure",
        "processed_by",
        "repeat_job_key",
        "deduplication_id",
        "token",
        "decode_error",
        "discarded",
        "_raw_data",
    )

    def __init__(
        self,
        queue: QueueBase,
        name: str,
        data: Any = None,
        opts: Mapping[str, Any] | None = None,
        job_id: str | None = None,
    ) -> None:
        self.queue = queue
        self.name = name
        self.data = {} if data is None else data
        self.opts: dict[str, Any] = dict(opts) if opts else {}
        # BullMQ's Job(queue, name, data, {jobId}) takes its id from the options
        self.id = job_id if job_id is not None else self.opts.get("jobId", self.opts.get("job_id"))
        self.timestamp: int = 0
        self.delay: int = int(self.opts.get("delay") or 0)
        self.priority: int = int(self.opts.get("priority") or 0)
        self.progress: Any = 0
        self.attempts_made = 0
        self.attempts_started = 0
        self.stalled_counter = 0
        self.processed_on: int | None = None
        self.finished_on: int | None = None
        self.returnvalue: Any = None
        self.failed_reason: str | None = None
        self.stacktrace: list[str] = []
        self.parent_key: str | None = None
        self.parent: dict[str, Any] | None = None
        self.deferred_failure: str | None = None
        self.processed_by: str | None = None
        self.repeat_job_key: str | None = None
        self.deduplication_id: str | None = None
        self.token: str | None = None
        self.decode_error: str | None = None
        # the PyPI port's flag: set by a processor, the attempt that fails is not retried
        self.discarded = False
        self._raw_data: bytes | None = None

    # The port's camelCase names of the two times read 0 for "not yet", as its Job gives them
    # (port code writes `job.finishedOn > 0`); the snake_case ones are None then.
    processedOn = _zero_until_set("processed_on")
    finishedOn = _zero_until_set("finished_on")

    # -- construction from Redis ----------------------------------------------------------

    @classmethod
    def from_hash(cls, queue: QueueBase, job_id: str, raw: Mapping[bytes, bytes] | list[bytes]) -> Job:
        """A job from the fields of its hash (HGETALL), decoded like BullMQ's ``Job.fromJSON``."""
        job = cls.__new__(cls)
        job.queue = queue
        job.id = job_id
        job.token = None
        job.discarded = False
        core.decode_job_hash(job, raw)
        return job

    @classmethod
    def added(cls, queue: QueueBase, node: Mapping[str, Any], opts: JobOptions, job_id: str,
              parent_id: str | None, parent_queue_key: str | None, now: int) -> Job:
        """A job an add just wrote, as BullMQ's add returns it: ``node`` its spec, ``opts``
        its normalised options, ``now`` the time the add gave it when it named none."""
        job = cls(queue, node["name"], node.get("data"), None, job_id)
        job.opts = opts.stored_opts(parent_id, parent_queue_key)
        job.timestamp = opts.timestamp if opts.timestamp is not None else now
        job.delay = opts.delay
        job.priority = opts.priority
        dedup = opts.values.get("deduplication")
        if dedup:
            job.deduplication_id = dedup["id"]
        if parent_id is not None:
            job.parent_key = f"{parent_queue_key}:{parent_id}"
            job.parent = {"id": parent_id, "queueKey": parent_queue_key}
            flag = opts.policy if opts.explicit_policy else "fpof"
            if flag:
                job.parent[flag] = True
        return job

    @classmethod
    def taken(cls, queue: QueueBase, job_id: bytes, raw: list[bytes], taken_at: int, token: str,
              worker_name: str | None) -> Job:
        """A job a fetch just took: its hash as the script read it, and what the script then
        wrote (processedOn, ats + 1, pb)."""
        job = cls.from_hash(queue, job_id.decode(), raw)
        job.processed_on = taken_at
        job.attempts_started += 1
        if worker_name:
            job.processed_by = worker_name
        job.token = token
        return job

    @classmethod
    @port_keywords(jobId="job_id")
    async def from_id(cls, queue: QueueBase, job_id: str) -> Job | None:
        return await queue.get_job(job_id)

    @classmethod
    @port_keywords(rawData="raw", jobId="job_id")
    def from_json(cls, queue: QueueBase, raw: Mapping[Any, Any], job_id: str | None = None) -> Job:
        """A job from its hash's fields already read (``str`` or ``bytes`` keys and values),
        as bullmq's ``Job.fromJSON``; the id is ``job_id``, else the ``id`` field."""
        fields = {
            (k if isinstance(k, bytes) else str(k).encode()): (v if isinstance(v, bytes) else str(v).encode())
            for k, v in raw.items()
        }
        if job_id is None:
            job_id = fields.get(b"id", b"").decode()
        return cls.from_hash(queue, job_id, fields)

    @staticmethod
    @port_keywords(jobId="job_id", logRow="line", keepLogs="keep_logs")
    async def add_job_log(queue: QueueBase, job_id: str, line: str, keep_logs: int = 0) -> int:
        """Append a line to the log of the job ``job_id`` of ``queue`` without reading the job
        (bullmq's ``Job.addJobLog``); ``keep_logs`` > 0 keeps the last that many lines."""
        keep = int(keep_logs) if keep_logs else ""
        code = await queue._redis.run("add_log", [queue.key(job_id)], [str(line), keep])
        if code == -1:
            raise server_error(code, str(job_id), "addLog")
        return int(code)

    # -- naming -------------------------------------------------------------------------------

    @property
    def queue_name(self) -> str:
        return self.queue.name

    @property
    def prefix(self) -> str:
        return self.queue.prefix

    @property
    def queue_qualified_name(self) -> str:
        return self.queue.qualified_name

    @property
    def key(self) -> str:
        return f"{self.queue.qualified_name}:{self.id}"

    # options bullmq's Python port also exposes as attributes

    @property
    def attempts(self) -> int:
        """How many attempts the job may take (its ``attempts`` option, 1 by default)."""
        return int(self.opts.get("attempts") or 1)

    @property
    def remove_on_complete(self) -> Any:
        """The job's own ``removeOnComplete`` option (None: the worker's setting applies)."""
        return self.opts.get("removeOnComplete")

    @property
    def remove_on_fail(self) -> Any:
        """The job's own ``removeOnFail`` option (None: the worker's setting applies)."""
        return self.opts.get("removeOnFail")

    @property
    def data_json(self) -> bytes:
        """The ``data`` field as stored (JSON text)."""
        if self._raw_data is not None:
            return self._raw_data
        return core.encode_value(self.data)

    def __repr__(self) -> str:
        return f"<Job {self.queue.name}:{self.id} {self.name!r}>"

    def as_dict(self) -> dict[str, Any]:
        """The job as plain data (snake_case keys)."""
        return {
            "id": self.id,
            "name": self.name,
            "queue_name": self.queue.name,
            "data": self.data,
            "opts": self.opts,
            "timestamp": self.timestamp,
            "delay": self.delay,
            "priority": self.priority,
            "progress": self.progress,
            "attempts_made": self.attempts_made,
            "attempts_started": self.attempts_started,
            "processed_on": self.processed_on,
            "finished_on": self.finished_on,
            "returnvalue": self.returnvalue,
            "failed_reason": self.failed_reason,
            "stacktrace": self.stacktrace,
            "parent_key": self.parent_key,
            "parent": self.parent,
        }

    # -- children results (section 8.5 of the protocol) --------------------------------------

    async def get_children_values(self) -> dict[str, Any]:
        """``{child key: returned value}`` of every completed child."""
        return core.decode_json_values(await self._read_hash(f"{self.key}:{_wire.JOB_PROCESSED}"))

    async def get_ignored_children_failures(self) -> dict[str, str]:
        """``{child key: failure reason}`` of children that failed with
        ``ignore_dependency_on_failure`` or ``continue_parent_on_failure``."""
        return core.decode_str_values(await self._read_hash(f"{self.key}:{_wire.JOB_FAILED_CHILDREN}"))

    async def _read_hash(self, key: str) -> list[bytes]:
        """HGETALL as a flat list, read off the connection by our own parser (for a parent of
        10,000 children, half the time of redis-py's path and its dict)."""
        return await self.queue._redis.read_packed(core.pack_command((b"HGETALL", key)), key, "HGETALL")  # type: ignore[no-any-return]

    async def get_failed_children_values(self) -> dict[str, str]:
        """BullMQ's deprecated name of :meth:`get_ignored_children_failures`."""
        return await self.get_ignored_children_failures()

    # -- children results, streamed (for parents of a million children) -------------------

    async def iter_children_values(self, page: int = 1000) -> AsyncIterator[tuple[str, Any]]:
        """``(child key, value)`` of every completed child, read a page at a time (HSCAN) and
        decoded by the compiled core: memory is bounded by the page, not by the children.
        (HSCAN can repeat an entry only if the hash changes while it is read; when a parent
        runs, its children are done and the hash is final.)"""
        async for key, value in self._hscan(f"{self.key}:{_wire.JOB_PROCESSED}", page, core.decode_json_values):
            yield key, value

    async def iter_ignored_children_failures(self, page: int = 1000) -> AsyncIterator[tuple[str, str]]:
        """``(child key, failure reason)`` of ignored failures, a page at a time."""
        async for key, value in self._hscan(f"{self.key}:{_wire.JOB_FAILED_CHILDREN}", page, core.decode_str_values):
            yield key, value

    async def iter_failed_children(self, page: int = 1000) -> AsyncIterator[str]:
        """Keys of children that failed with fail_parent_on_failure, a page at a time."""
        key = f"{self.key}:{_wire.JOB_UNSUCCESSFUL}"
        start = 0
        while True:
            members = await self.queue._redis.commands.zrange(key, start, start + page - 1)
            for m in members:
                yield m.decode()
            if len(members) < page:
                return
            start += page

    async def iter_dependencies(self, page: int = 1000) -> AsyncIterator[str]:
        """Keys of children still pending, a page at a time (SSCAN)."""
        client = self.queue._redis.commands
        key = f"{self.key}:{_wire.JOB_DEPENDENCIES}"
        cursor = 0
        while True:
            cursor, members = await client.sscan(key, cursor, count=page)
            for m in members:
                yield m.decode()
            if int(cursor) == 0:
                return

    async def reduce_children_values(
        self, fold: Callable[[Any, str, Any], Any], initial: Any = None, page: int = 1000
    ) -> Any:
        """Fold every completed child's value into an accumulator as the values stream in:
        ``total = await job.reduce_children_values(lambda acc, key, v: acc + v["n"], 0)``."""
        acc = initial
        async for key, value in self.iter_children_values(page):
            acc = fold(acc, key, value)
        return acc

    async def _hscan(self, key: str, page: int, decode: Callable[[Any], dict[str, Any]]) -> AsyncIterator[tuple[str, Any]]:
        client = self.queue._redis.commands
        cursor = 0
        while True:
            cursor, items = await client.hscan(key, cursor, count=page)
            for item in decode(items).items():
                yield item
            if int(cursor) == 0:
                return

    async def get_dependencies(
        self,
        opts: Mapping[str, Any] | bool | None = None,
        /,
        *,
        processed: Mapping[str, Any] | bool | None = None,
        unprocessed: Mapping[str, int] | bool | None = None,
        ignored: Mapping[str, int] | bool | None = None,
        failed: Mapping[str, int] | bool | None = None,
    ) -> dict[str, Any]:
        """Children by group: ``processed`` {key: value}, ``unprocessed`` [keys], ``failed``
        [keys] (failed with fail_parent_on_failure), ``ignored`` {key: reason}.

        With no argument every group is read whole. Naming groups reads only those, a page at a
        time: pass ``{"cursor": c, "count": n}`` (or ``True``, or ``{}``, for the first page)
        and read the next cursor from ``next_processed_cursor`` etc. (0 when done), as BullMQ
        does. BullMQ's form, one dict given by position
        ``get_dependencies({"processed": {"cursor": c, "count": n}, ...})``, works too (``{}``
        there names no group, so reads them all), and each next cursor is also under BullMQ's
        name (``nextProcessedCursor``).
        A page may hold more or fewer than ``count`` entries (Redis' SCAN); paging until the
        cursor is 0 returns each child once, unless the parent's groups change meanwhile.
        (The ``failed`` group too: BullMQ 6.7 reads its pages past the first as empty, and
        never gives cursor 0 for it; bullfast pages it like the others.)
        The groups come in one dict or as keywords, not both. An unknown group (BullMQ ignores
        it: a misspelt one read the wrong group), a count below 1 or a negative cursor is an
        InvalidOptionError.
        """
        if opts is not None:
            if any(spec is not None for spec in (processed, unprocessed, ignored, failed)):
                raise InvalidOptionError(
                    "get_dependencies takes the groups in one dict (BullMQ's form) or as keywords, not both"
                )
            if isinstance(opts, Mapping) and (not opts or not set(opts) <= _PAGE_KEYS):
                unknown = sorted(str(k) for k in set(opts) - _GROUPS)
                if unknown:
                    raise InvalidOptionError(
                        f"get_dependencies: unknown group(s) {unknown}; the groups are {list(_GROUP_ORDER)}"
                    )
                # BullMQ's one dict; {} names no group, so reads them all, as in BullMQ
                processed, unprocessed, ignored, failed = (opts.get(g) for g in _GROUP_ORDER)
            else:
                processed = opts  # the processed group's page, given by position
        # a group is asked for with True or a page, even {} (as BullMQ reads an object); False
        # and None ask for nothing; other values (0, 1, "all"...) are refused by page()
        processed, unprocessed, ignored, failed = (
            None if spec is False else spec for spec in (processed, unprocessed, ignored, failed)
        )
        client = self.queue._redis.commands
        key = self.key
        if processed is None and unprocessed is None and ignored is None and failed is None:
            async with client.pipeline(transaction=False) as pipe:
                pipe.hgetall(f"{key}:{_wire.JOB_PROCESSED}")
                pipe.smembers(f"{key}:{_wire.JOB_DEPENDENCIES}")
                pipe.hgetall(f"{key}:{_wire.JOB_FAILED_CHILDREN}")
                pipe.zrange(f"{key}:{_wire.JOB_UNSUCCESSFUL}", 0, -1)
                p, u, i, f = await pipe.execute()
            return {
                "processed": core.decode_json_values(p),
                "unprocessed": sorted(m.decode() for m in u),
                "failed": [m.decode() for m in f],
                "ignored": core.decode_str_values(i),
            }
        out: dict[str, Any] = {}

        def page(spec: Mapping[str, int] | bool) -> tuple[int, int]:
            if spec is True:
                return 0, 20
            if not isinstance(spec, Mapping):
                raise InvalidOptionError(f"a dependencies page is True or {{'cursor', 'count'}}, not {spec!r}")
            unknown = sorted(str(k) for k in set(spec) - _PAGE_KEYS)
            if unknown:
                raise InvalidOptionError(f"a dependencies page is {{'cursor', 'count'}}; unknown {unknown}")
            cursor, count = spec.get("cursor", 0), spec.get("count", 20)
            if not isinstance(cursor, int) or isinstance(cursor, bool) or cursor < 0:
                raise InvalidOptionError(f"a dependencies page's cursor is a whole number >= 0, not {cursor!r}")
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise InvalidOptionError(f"a dependencies page's count is a whole number >= 1, not {count!r}")
            return cursor, count

        def cursor_of(group: str, nxt: int) -> None:
            out[f"next_{group}_cursor"] = out[f"next{group.capitalize()}Cursor"] = nxt

        if processed is not None:
            cursor, count = page(processed)
            nxt, items = await client.hscan(f"{key}:{_wire.JOB_PROCESSED}", cursor, count=count)
            out["processed"] = core.decode_json_values(items)
            cursor_of("processed", int(nxt))
        if unprocessed is not None:
            cursor, count = page(unprocessed)
            nxt, members = await client.sscan(f"{key}:{_wire.JOB_DEPENDENCIES}", cursor, count=count)
            out["unprocessed"] = [m.decode() for m in members]
            cursor_of("unprocessed", int(nxt))
        if ignored is not None:
            cursor, count = page(ignored)
            nxt, items = await client.hscan(f"{key}:{_wire.JOB_FAILED_CHILDREN}", cursor, count=count)
            out["ignored"] = core.decode_str_values(items)
            cursor_of("ignored", int(nxt))
        if failed is not None:
            cursor, count = page(failed)
            members = await client.zrange(f"{key}:{_wire.JOB_UNSUCCESSFUL}", cursor, cursor + count - 1)
            out["failed"] = [m.decode() for m in members]
            cursor_of("failed", cursor + count if len(members) == count else 0)
        return out

    async def get_dependencies_count(
        self,
        processed: bool | Mapping[str, bool] = False,
        unprocessed: bool = False,
        ignored: bool = False,
        failed: bool = False,
    ) -> dict[str, int]:
        """How many children are in each group (all four when none is asked). BullMQ's form,
        one dict ``get_dependencies_count({"unprocessed": True, ...})``, works too."""
        if isinstance(processed, Mapping):
            unknown = set(processed) - _GROUPS
            if unknown:
                raise InvalidOptionError(
                    f"get_dependencies_count: unknown group(s) {sorted(unknown)}; the groups are {list(_GROUP_ORDER)}"
                )
            if unprocessed or ignored or failed:
                raise InvalidOptionError(
                    "get_dependencies_count takes the groups in one dict (BullMQ's form) or as keywords, not both"
                )
            asked: Mapping[str, bool] = processed
            processed, unprocessed, ignored, failed = (bool(asked.get(g)) for g in _GROUP_ORDER)
        if not (processed or unprocessed or ignored or failed):
            processed = unprocessed = ignored = failed = True
        client = self.queue._redis.commands
        key = self.key
        async with client.pipeline(transaction=True) as pipe:
            names = []
            if processed:
                pipe.hlen(f"{key}:{_wire.JOB_PROCESSED}")
                names.append("processed")
            if unprocessed:
                pipe.scard(f"{key}:{_wire.JOB_DEPENDENCIES}")
                names.append("unprocessed")
            if ignored:
                pipe.hlen(f"{key}:{_wire.JOB_FAILED_CHILDREN}")
                names.append("ignored")
            if failed:
                pipe.zcard(f"{key}:{_wire.JOB_UNSUCCESSFUL}")
                names.append("failed")
            counts = await pipe.execute()
        return dict(zip(names, (int(c) for c in counts)))

    # -- state ------------------------------------------------------------------------------

    async def get_state(self) -> str:
        """``completed``, ``failed``, ``delayed``, ``prioritized``, ``active``, ``waiting``,
        ``waiting-children`` or ``unknown``."""
        return await self.queue.get_job_state(str(self.id))

    async def is_completed(self) -> bool:
        return await self.get_state() == "completed"

    async def is_failed(self) -> bool:
        return await self.get_state() == "failed"

    async def is_delayed(self) -> bool:
        return await self.get_state() == "delayed"

    async def is_active(self) -> bool:
        return await self.get_state() == "active"

    async def is_waiting(self) -> bool:
        return await self.get_state() == "waiting"

    async def is_waiting_children(self) -> bool:
        return await self.get_state() == "waiting-children"

    @port_keywords(set="set_name")
    async def is_in_zset(self, set_name: str) -> bool:
        """Whether the job is in the queue's sorted set ``set_name`` (``"delayed"``...)."""
        return await self.queue._redis.commands.zscore(self.queue.key(set_name), str(self.id)) is not None

    async def is_in_list(self, list_name: str) -> bool:
        """Whether the job is in the queue's list ``list_name`` (``"wait"``, ``"active"``...)."""
        return await self.queue._redis.commands.lpos(self.queue.key(list_name), str(self.id)) is not None

    @port_keywords(opts="remove_children")
    async def remove(self, remove_children: bool | Mapping[str, Any] = True) -> None:
        """Remove the job (and, by default, its children) from Redis. Refused with
        :class:`~bullfast.errors.JobLockedError` while it or a pending child is being processed."""
        if isinstance(remove_children, Mapping):  # bullmq's {"removeChildren": ...}
            remove_children = bool(remove_children.get("removeChildren", remove_children.get("remove_children", True)))
        queue = self.queue
        if not await _removal.remove_job(queue._redis, queue.key_prefix, str(self.id), bool(remove_children)):
            raise JobLockedError(f"Job {self.id} could not be removed because it is locked by another worker")
        queue._emit_local("removed", self)

    # -- waiting for the outcome ------------------------------------------------------------

    async def wait_until_finished(self, queue_events: Any, timeout: float | None = None) -> Any:
        """The job's return value once it completes; raises
        :class:`~bullfast.errors.JobFailedError` if it fails for good, ``TimeoutError`` after
        ``timeout`` seconds. ``queue_events`` is a running :class:`~bullfast.QueueEvents` of
        the job's queue (BullMQ's ``waitUntilFinished``). Many jobs may be waited for at once:
        each listens to its own events (``completed:<id>``), and the waits that start together
        read what Redis already holds in one round trip."""
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[tuple[bool, Any]] = loop.create_future()
        job_id = str(self.id)

        def completed(args: dict[str, Any], _id: str) -> None:
            if not outcome.done():
                outcome.set_result((True, args.get("returnvalue")))

        def failed(args: dict[str, Any], _id: str) -> None:
            if not outcome.done():
                outcome.set_result((False, args.get("failedReason")))

        async def settled() -> tuple[bool, Any]:
            await queue_events.wait_until_ready()
            # it may have finished (or been removed) before we listened
            stored = await _stored_outcomes(self.queue).read(job_id)
            if not outcome.done():
                if stored is None:
                    raise server_error(_wire.ERR_JOB_NOT_EXIST, job_id, "isFinished")
                if stored is not _UNFINISHED:
                    outcome.set_result(stored)
            return await outcome

        on_completed, on_failed = f"completed:{job_id}", f"failed:{job_id}"
        queue_events.on(on_completed, completed)
        queue_events.on(on_failed, failed)
        try:
            try:
                # the timeout covers the wait for the events reader too (it may be reconnecting)
                ok, value = await asyncio.wait_for(settled(), timeout)
            except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
                raise TimeoutError(f"job {job_id} did not finish within {timeout} s") from None
        finally:
            queue_events.off(on_completed, completed)
            queue_events.off(on_failed, failed)
        if not ok:
            raise JobFailedError(str(value), job_id)
        return value

    # -- moving -----------------------------------------------------------------------------

    async def _run(self, script: str, args: list[Any], command: str, state: str = "expected") -> int:
        code = int(await self.queue._redis.run(script, [self.key], args))
        if code < 0:
            raise server_error(code, str(self.id), command, state=state)
        return code

    @port_keywords(opts="reset_attempts_made")
    async def retry(
        self,
        state: str = "failed",
        reset_attempts_made: bool | Mapping[str, Any] = False,
        reset_attempts_started: bool = False,
    ) -> None:
        """Run a failed (or completed) job again; a child rejoins its parent's pending children.
        (bullmq's form ``retry(state, {"resetAttemptsMade": ..., "resetAttemptsStarted": ...})``
        works too.)"""
        if isinstance(reset_attempts_made, Mapping):
            opts = reset_attempts_made
            reset_attempts_made = bool(opts.get("resetAttemptsMade", opts.get("reset_attempts_made", False)))
            reset_attempts_started = bool(opts.get("resetAttemptsStarted", opts.get("reset_attempts_started", False)))
        if state not in ("failed", "completed"):
            raise InvalidOptionError(f"state must be 'failed' or 'completed', not {state!r}")
        await self._run(
            "retry_job",
            [self.queue.key_prefix, self.id, state, "1" if reset_attempts_made else "0",
             "1" if reset_attempts_started else "0"],
            "reprocessJob",
            state,
        )
        self.failed_reason = None
        self.finished_on = None
        self.processed_on = None
        self.returnvalue = None
        if reset_attempts_made:
            self.attempts_made = 0
        if reset_attempts_started:
            self.attempts_started = 0

    async def promote(self) -> None:
        """Run a delayed job now."""
        await self._run("promote", [self.queue.key_prefix, self.id], "promote", "delayed")
        self.delay = 0

    async def change_delay(self, delay: int) -> None:
        """A delayed job becomes due ``delay`` ms from now."""
        await self._run("change_delay", [self.queue.key_prefix, self.id, int(delay), now_ms()], "changeDelay", "delayed")
        self.delay = int(delay)

    @port_keywords(opts="priority")
    async def change_priority(self, priority: int | Mapping[str, Any] = 0, lifo: bool = False) -> None:
        """New priority (0 = none); ``lifo`` puts it first among equals. bullmq's form
        ``change_priority({"priority": p, "lifo": b})`` works too."""
        if isinstance(priority, Mapping):
            lifo = bool(priority.get("lifo", lifo))
            priority = int(priority.get("priority", 0))
        await self._run(
            "change_priority", [self.queue.key_prefix, self.id, int(priority), "1" if lifo else "0"], "changePriority"
        )
        self.priority = int(priority)

    async def remove_child_dependency(self) -> bool:
        """Detach this child from its parent, which stops waiting for it (runs now if it was
        the last one). False if it was not pending."""
        if await self._run("remove_child_dependency", [], "removeChildDependency") != 1:
            return False
        self.parent_key = self.parent = None
        return True

    async def remove_unprocessed_children(self) -> int:
        """Remove the pending children, and recursively their pending children, as BullMQ
        6.7: what a worker holds, what failed and what finished stays. Returns how many of
        this job's children were removed. (As in BullMQ, a child is held only by its own lock:
        a pending child goes even while a child of its own runs, which then has no parent.)

        A parent with many pending children is worked through in short calls (see
        ``_removal``), so that Redis is never held for long, whatever their number."""
        removed = int(await self.queue._redis.run(
            "remove_unprocessed_children", [self.key], [_removal.ONE_CALL_CHILDREN, _removal.ONE_CALL_JOBS]
        ))
        if removed >= 0:
            return removed
        removed, _ = await _removal.remove_children(self.queue._redis, self.key, _removal.PENDING, unprocessed=True)
        return removed

    # -- updating ---------------------------------------------------------------------------

    async def update_progress(self, progress: Any) -> None:
        """Store the job's progress (a number, or any JSON value) and emit a ``progress`` event."""
        await Job.store_progress(self.queue, str(self.id), progress)
        self.progress = progress
        self.queue._job_progressed(self, progress)

    @staticmethod
    async def store_progress(queue: QueueBase, job_id: str, progress: Any) -> None:
        """Store the progress of the job ``job_id`` with its event in the stream, reading nothing."""
        text = encode_json(progress, "progress")
        code = await queue._redis.run("update_progress", [queue.key(job_id)], [queue.key_prefix, job_id, text])
        if code == -1:
            raise server_error(code, job_id, "updateProgress")

    async def update_data(self, data: Any) -> None:
        """Replace the job's data."""
        text = encode_json(data, "data")
        code = await self.queue._redis.run("update_data", [self.key], [text])
        if code == -1:
            raise server_error(code, str(self.id), "updateData")
        self.data = data
        self._raw_data = text

    @port_keywords(keepLogs="keep_logs")
    async def clear_logs(self, keep_logs: int | None = None) -> None:
        """Delete the job's log, or all but its last ``keep_logs`` lines (BullMQ's ``clearLogs``)."""
        key = f"{self.key}:{_wire.JOB_LOGS}"
        if keep_logs:
            await self.queue._redis.commands.ltrim(key, -int(keep_logs), -1)
        else:
            await self.queue._redis.commands.delete(key)

    async def remove_deduplication_key(self) -> bool:
        """Release this job's deduplication id if the job still holds it, so that the next job
        added with it is added (BullMQ's ``removeDeduplicationKey``); False otherwise."""
        if not self.deduplication_id:
            return False
        key = self.queue.key("de:" + str(self.deduplication_id))
        return int(await self.queue._redis.run("remove_deduplication_key", [key], [str(self.id)])) > 0

    def discard(self) -> None:
        """Fail the current attempt for good: it is not retried (older BullMQ's ``discard``;
        the ``discarded`` flag of the Python port)."""
        self.discarded = True

    @port_keywords(logRow="line")
    async def log(self, line: str) -> int:
        """Append a line to the job's log (``keep_logs`` keeps the last n); returns the count."""
        keep = self.opts.get("keepLogs", self.opts.get("kl"))
        return await Job.add_job_log(self.queue, str(self.id), line, keep or 0)

    # -- ending the current attempt by hand (BullMQ's manual processing API) -----------------

    @port_keywords(return_value="returnvalue", fetchNext="fetch_next")
    async def move_to_completed(self, returnvalue: Any, token: str, fetch_next: bool = False) -> Job | None:
        """Complete this active job (taken with ``Worker.get_next_job(token)``). With
        ``fetch_next``, then take the next job, locked with ``token``, and return it (None if
        there was none), as BullMQ's moveToCompleted does."""
        from ._finish import completion_entry

        value = encode_json(returnvalue, "the return value")
        # like BullMQ: the job's own policy, else that of the worker it was taken by
        entry = completion_entry(self, token, value, getattr(self.queue, "remove_on_complete", None))
        following = await self._end_attempt(entry, token, fetch_next)
        self.returnvalue = returnvalue
        return following

    @port_keywords(fetchNext="fetch_next")
    async def move_to_failed(self, err: BaseException, token: str, fetch_next: bool = False) -> Job | None:
        """End this active job's attempt with ``err``: retried per its attempts and backoff,
        else failed (the parent's failure policy applies). ``fetch_next`` as for
        :meth:`move_to_completed`."""
        from ._finish import failure_entry

        entry = await failure_entry(self, token, err, keep_fallback=getattr(self.queue, "remove_on_fail", None))
        if entry is None:
            return None
        return await self._end_attempt(entry, token, fetch_next)

    async def _end_attempt(self, entry: list[Any], token: str, fetch_next: bool) -> Job | None:
        from ._finish import COMMAND_OF_ACTION, NO_FETCH, run_entries, take_jobs

        queue = self.queue
        ended_at = entry[8]
        # (a worker's metrics, when it took the job)
        metrics_points = getattr(queue, "_metrics_points", "")
        codes, _ = await run_entries(queue._redis, queue.key_prefix, [entry], ended_at, fetch_next, NO_FETCH,
                                     metrics_points)
        if codes[0] < 0:
            raise server_error(codes[0], str(self.id), COMMAND_OF_ACTION[entry[2]], state="active")
        self.attempts_made += 1
        if entry[2] in ("c", "f"):
            self.finished_on = ended_at
        if not fetch_next or entry[2] == "r":  # (BullMQ's retry now takes no next job)
            return None
        # the next job in a call of its own, taken only once this end was accepted (as BullMQ,
        # which refuses before it fetches), with the settings of the worker it is taken by
        worker_name = getattr(queue, "worker_name", None)
        reply = await take_jobs(queue._redis, queue.key_prefix, ended_at, token, getattr(queue, "lock_duration", 30000),
                                getattr(queue, "limiter", None), worker_name, 1)
        if not int(reply[0]):
            return None
        job_id, raw = core.unpack_string_arrays(reply[4])[:2]
        return Job.taken(queue, job_id, raw, ended_at, token, worker_name)

    async def move_to_delayed(self, timestamp: int, token: str | None = None) -> None:
        """Called by a processor: run this job again at ``timestamp`` (ms) without counting an
        attempt; then raise :class:`~bullfast.errors.DelayedError`."""
        from ._finish import run_entries

        now = now_ms()
        entry = [self.id, token or self.token or "0", "D", self.failed_reason or "", "", "", 0,
                 max(int(timestamp) - now, 0), now]
        code = (await run_entries(self.queue._redis, self.queue.key_prefix, [entry], now, False))[0][0]
        if code < 0:
            raise server_error(code, str(self.id), "moveToDelayed", state="active")

    async def move_to_wait(self, token: str | None = None) -> int:
        """Called by a processor: put this job back at the end of wait (or of its priority)
        without counting an attempt, then raise :class:`~bullfast.errors.WaitingError`.
        Returns the queue's rate-limit TTL in ms (0 when not limited), as BullMQ."""
        from ._finish import run_entries

        now = now_ms()
        entry = [self.id, token or self.token or "0", "w", "", "", "", 0, "", now]
        code = (await run_entries(self.queue._redis, self.queue.key_prefix, [entry], now, False))[0][0]
        if code < 0:
            raise server_error(code, str(self.id), "moveJobFromActiveToWait", state="active")
        return int(code)

    async def move_to_waiting_children(self, token: str | None = None, opts: Mapping[str, Any] | None = None) -> bool:
        """Called by a running parent that added children: wait for them (True; then raise
        :class:`~bullfast.errors.WaitingChildrenError`), or False if none is pending."""
        child = (opts or {}).get("child")
        child_key = ""
        if child:
            child_key = f"{child['queue']}:{child['id']}"
        code = await self.queue._redis.run(
            "move_to_waiting_children",
            [self.key],
            [self.queue.key_prefix, self.id, token or self.token or "0", child_key, now_ms()],
        )
        if code < 0:
            raise server_error(code, str(self.id), "moveToWaitingChildren", state="active")
        return bool(code == 0)

    async def extend_lock(self, token: str, duration: int) -> bool:
        lost = await self.queue._redis.run(
            "extend_locks", [self.queue.key(_wire.META)], [self.queue.key_prefix, duration, self.id, token]
        )
        return not lost

    async def get_logs(self, start: int = 0, end: int = -1, asc: bool = True) -> dict[str, Any]:
        """``{"logs": [...], "count": n}`` like BullMQ's ``Queue.getJobLogs``."""
        key = f"{self.key}:{_wire.JOB_LOGS}"
        async with self.queue._redis.commands.pipeline(transaction=False) as pipe:
            if asc:
                pipe.lrange(key, start, end)
            else:
                pipe.lrange(key, -(end + 1), -(start + 1))
            pipe.llen(key)
            logs, count = await pipe.execute()
        lines = [line.decode() for line in logs]
        return {"logs": lines if asc else list(reversed(lines)), "count": int(count)}
