"""Queue: adding jobs and managing a queue (the producer side of BullMQ's ``Queue``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import orjson
from redis.exceptions import ResponseError

from . import _removal, _wire, core
from ._add import DEFAULT_CHUNK_SIZE, now_ms, write_plan
from ._compat import JOB_SCHEDULERS, camel_aliases, not_supported, port_keywords
from ._connection import _UNAVAILABLE, RedisConnection, client_command_refused, unavailable
from ._emitter import EventEmitter
from ._plan import Plan
from ._slots import hash_tag
from ._version import __version__
from .errors import (
    CrossSlotError,
    InvalidInputError,
    InvalidJobIdError,
    InvalidOptionError,
    QueueHasActiveJobsError,
    QueueNotPausedError,
    ServerError,
)
from .job import Job
from .options import (
    check_prefix,
    check_queue_name,
    constructor_options,
    is_text,
    merge_options,
    normalize_defaults,
    normalize_options,
    positive_int,
)

MAX_DEPTH = 1000
_Q = TypeVar("_Q", bound="QueueBase")

# jobs a get_jobs call reads of the states read whole (a window of each), a call each
_GET_JOBS_WINDOW = 10_000
# ranges a bounded get_jobs page reads per state to fill up past ids whose job is gone (BullMQ)
_GET_JOBS_MAX_RANGES = 5

# The queue keys BullMQ's Python port lists in ``queue.keys`` ("" is the bare qualified name).
_KEY_KINDS = (
    "", "active", "wait", "waiting-children", "paused", "completed", "failed", "delayed", "repeat",
    "stalled", "limiter", "prioritized", "id", "stalled-check", "meta", "pc", "events", "marker", "de",
)


def _number(text: str) -> int | float:
    """A number stored as text, read as JavaScript's ``Number`` would (NaN if it is none)."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return float("nan")


_QUEUE_OPTIONS = {
    "connection": "connection",
    "prefix": "prefix",
    "defaultJobOptions": "default_job_options",
    "streams": "streams",
    "skipMetasUpdate": "skip_metas_update",
    "settings": "settings",  # of BullMQ's repeatable jobs, which bullfast does not run
}


def _settings(opts: Mapping[str, Any] | None, **given: Any) -> dict[str, Any]:
    """Constructor settings from keyword arguments and/or BullMQ's opts dict (camelCase)."""
    out = {k: v for k, v in given.items() if v is not None}
    for key, value in constructor_options("queue", opts, _QUEUE_OPTIONS).items():
        out.setdefault(key, value)
    return out


def _unname_the_one_job(exc: InvalidInputError | ServerError) -> None:
    """An error of a single add names no list (``jobs[0]: ...`` is add_bulk's wording)."""
    path = exc.path
    if path is not None and path.startswith("jobs[0]"):
        rest = path[len("jobs[0]"):].lstrip(".")
        exc.path = rest or None
        exc.args = (f"{exc.path}: {exc.detail}" if exc.path else exc.detail,)


def _named(value: str, what: str = "job id") -> str:
    """An id a caller names a job (or a deduplication) by: text no key can hold is refused
    (Python cannot write a lone surrogate as UTF-8; ioredis writes U+FFFD for it, so Node
    would act on another job)."""
    if isinstance(value, str) and not is_text(value):
        raise InvalidJobIdError(f"{what} {value!r} is not valid text (a lone surrogate)")
    return value


class QueueBase:
    """What every class bound to one queue shares: its name, prefix, keys and connection."""

    def __init__(
        self,
        name: str,
        *,
        connection: Any = None,
        prefix: str | None = None,
        redis: RedisConnection | None = None,
    ) -> None:
        self.name = check_queue_name(name)
        self.prefix = check_prefix(prefix or _wire.DEFAULT_PREFIX)
        self.qualified_name = f"{self.prefix}:{name}"
        self.key_prefix = f"{self.qualified_name}:"
        self._redis = redis or RedisConnection(connection)
        if self._redis.cluster and hash_tag(self.key_prefix + "x") == self.key_prefix + "x":
            raise CrossSlotError(
                f"queue {self.qualified_name!r} has no hash tag: on Redis Cluster every key of a "
                "queue must be in one slot; use a prefix like '{bull}' (or a name like '{reports}')"
            )

    def key(self, suffix: str) -> str:
        return self.key_prefix + suffix

    def client_name(self, suffix: str = "") -> str:
        """The connection name of this queue's workers (CLIENT SETNAME), as BullMQ's
        ``clientName``: ``<prefix>:<base64(name)><suffix>``."""
        return _wire.client_name(self.prefix, self.name, suffix)

    @property
    def keys(self) -> dict[str, str]:
        """``{kind: key}`` of the queue's keys (``"wait"`` -> ``"bull:q:wait"``), as bullmq's
        ``queue.keys``."""
        return {kind: self.key(kind) for kind in _KEY_KINDS}

    @property
    def client(self) -> Any:
        """The underlying ``redis.asyncio.Redis`` (bytes in, bytes out)."""
        return self._redis.client

    async def close(self) -> None:
        await self._redis.close()

    # -- single jobs ----------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job | None:
        raw = await self._redis.commands.hgetall(self.key(_named(job_id)))
        if not raw:
            return None
        return Job.from_hash(self, job_id, raw)

    async def get_job_state(self, job_id: str) -> str:
        states: list[bytes] = await self._redis.run(
            "get_states", [self.key(_named(job_id))], [self.key_prefix, job_id], read_only=True
        )
        return states[0].decode()

    @port_keywords(opts="remove_children")
    async def remove(self, job_id: str, remove_children: bool | Mapping[str, Any] = True) -> bool:
        """Remove a job (and its children). False if the job or a pending child is locked by
        a worker; JobBelongsToSchedulerError for the next run of a job scheduler. (bullmq's
        ``remove(id, {"removeChildren": False})`` works too.)"""
        if isinstance(remove_children, Mapping):
            remove_children = bool(remove_children.get("removeChildren", remove_children.get("remove_children", True)))
        removed = await _removal.remove_job(self._redis, self.key_prefix, _named(job_id), bool(remove_children))
        if removed:
            self._emit_local("removed", job_id)
        return removed

    def _job_progressed(self, job: Job, progress: Any) -> None:
        """Called when a job of this queue reports progress."""
        self._emit_local("progress", job, progress)

    def _emit_local(self, event: str, *args: Any) -> None:
        """An in-process event of an operation made through this object, as BullMQ's Queue
        emits them (``paused``, ``removed``, ``cleaned``, ``progress``...); nothing where no
        one can listen (the queues a FlowProducer reads its jobs through)."""
        emit = getattr(self, "emit", None)
        if emit is not None:
            emit(event, *args)

    async def __aenter__(self: _Q) -> _Q:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


@camel_aliases(attributes=("qualified_name",))
class Queue(QueueBase, EventEmitter):
    """A BullMQ queue, for adding and managing jobs.

    ``Queue("reports", connection="redis://...", prefix="bull")``; BullMQ's form
    ``Queue("reports", {"connection": ..., "prefix": ..., "defaultJobOptions": ...})`` works too.
    ``opts`` reads back the options in BullMQ's form, whichever form was given.
    """

    def __init__(
        self,
        name: str,
        opts: Mapping[str, Any] | None = None,
        *,
        connection: Any = None,
        prefix: str | None = None,
        default_job_options: Mapping[str, Any] | None = None,
        max_len_events: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        _redis: RedisConnection | None = None,
    ) -> None:
        s = _settings(
            opts,
            connection=connection,
            prefix=prefix,
            default_job_options=default_job_options,
        )
        QueueBase.__init__(self, name, connection=s.get("connection"), prefix=s.get("prefix"), redis=_redis)
        EventEmitter.__init__(self)
        self.opts: dict[str, Any] = dict(opts or {})
        for ours, theirs in (("connection", "connection"), ("prefix", "prefix"),
                             ("default_job_options", "defaultJobOptions")):
            if s.get(ours) is not None:
                self.opts.setdefault(theirs, s[ours])
        self.default_job_options = normalize_defaults(s.get("default_job_options"))
        streams = s.get("streams") or {}
        self.max_len_events = max_len_events or streams.get("events", {}).get("maxLen") or _wire.DEFAULT_MAX_LEN_EVENTS
        self.chunk_size = positive_int("Queue", "chunk_size", chunk_size)
        self._meta_written = bool(s.get("skip_metas_update"))

    @property
    def jobs_opts(self) -> dict[str, Any]:
        """The default job options as given (bullmq's ``jobsOpts``)."""
        return dict(self.opts.get("defaultJobOptions") or {})

    def _meta(self) -> dict[str, Any]:
        # Like BullMQ's Queue constructor: the events cap, and who writes this queue.
        return {
            "opts.maxLenEvents": self.max_len_events,
            "version": f"{_wire.LIBRARY_VERSION_TAG}:{__version__}",
        }

    async def _write_meta(self) -> None:
        """Write the queue's meta now (the first add writes it otherwise, with its jobs)."""
        if not self._meta_written:
            await self._redis.commands.hset(self.key(_wire.META), mapping=self._meta())
            self._meta_written = True

    # -- adding -------------------------------------------------------------------------------

    async def add(
        self, name: str, data: Any = None, opts: Mapping[str, Any] | None = None, **options: Any
    ) -> Job:
        """Add one job; options as a mapping and/or keywords (``priority=3``).

        Adding with the ``job_id`` of an existing job adds nothing and returns that job's id
        (BullMQ's idempotent add); with ``parent``, the parent must exist. Emits ``waiting``
        (the job) on this Queue, as BullMQ's add does."""
        if options:
            opts = merge_options(opts, options)
        try:
            # (add_bulk's steps, not an add_bulk call: a coroutine fewer for each add waiting
            # for its reply, of which a burst may hold 10,000)
            plan = self._plan([{"name": name, "data": data, "opts": opts}])
            now = now_ms()
            ids = await write_plan(self._redis, plan, chunk_size=self.chunk_size, timestamp=now,
                                   before=self._first_add_directives())
        except (InvalidInputError, ServerError) as exc:
            _unname_the_one_job(exc)
            raise
        job = self._jobs_added(plan, ids, now)[0]
        self.emit("waiting", job)
        return job

    async def add_bulk(self, jobs: Sequence[Mapping[str, Any]]) -> list[Job]:
        """Add many jobs ``[{"name", "data", "opts"}]`` at once: all are added, or none."""
        plan = self._plan(jobs)
        if not len(plan):
            return []
        now = now_ms()
        ids = await write_plan(self._redis, plan, chunk_size=self.chunk_size, timestamp=now,
                               before=self._first_add_directives())
        return self._jobs_added(plan, ids, now)

    def _plan(self, jobs: Sequence[Mapping[str, Any]]) -> Plan:
        plan = core.plan_jobs(
            jobs,
            self.prefix,
            self.name,
            {self.name: self.default_job_options},
            normalize_options,
            os.urandom,
            MAX_DEPTH,
            False,
        )
        # An existing id is kept (BullMQ's idempotent add), but may not be moved to a parent
        # while it belongs to another live one: refused before anything is written.
        plan.checks += [
            ("P", plan.job_key(i), plan.parent_key(i) or "")
            for i in range(len(plan))
            if plan.opts_of[i].job_id and plan.opts_of[i].parent_key
        ]
        return plan

    def _first_add_directives(self) -> list[tuple[str, str, str]]:
        """The first add writes the meta too, before its jobs (which would otherwise trim the
        events to the default length), in the same atomic call: a refused add leaves none."""
        if self._meta_written:
            return []
        meta = {field: str(value) for field, value in self._meta().items()}
        return [("M", self.key(_wire.META), orjson.dumps(meta).decode())]

    def _jobs_added(self, plan: Plan, ids: list[str], now: int) -> list[Job]:
        self._meta_written = True
        out = []
        for i, job_id in enumerate(ids):
            opts = plan.opts_of[i]
            pkey = opts.parent_key
            parent_id = pkey[len(opts.parent_queue_key) + 1 :] if pkey else None
            out.append(Job.added(self, plan.nodes[i], opts, job_id, parent_id, opts.parent_queue_key, now))
        return out

    # -- reading ------------------------------------------------------------------------------

    async def get_job_counts(self, *states: str) -> dict[str, int]:
        """``{state: count}`` for the given states (BullMQ's default set when none), each
        under the name it was asked by ("wait" or "waiting")."""
        names = list(dict.fromkeys(states or _wire.DEFAULT_COUNT_STATES))
        self._states(names)
        # a wait or paused list may end in a legacy marker (BullMQ < 5 wrote "0:..."): no job
        with_marker = {_wire.WAIT, _wire.PAUSED}
        async with self._redis.commands.pipeline(transaction=False) as pipe:
            for state in names:
                key = self.key(_wire.STATE_KEYS[state])
                if _wire.STATE_KEYS[state] in _wire.LIST_STATES:
                    pipe.llen(key)
                    if _wire.STATE_KEYS[state] in with_marker:
                        pipe.lindex(key, -1)
                else:
                    pipe.zcard(key)
            replies = iter(await pipe.execute())
        counts: dict[str, int] = {}
        for state in names:
            counts[state] = int(next(replies))
            if _wire.STATE_KEYS[state] in with_marker and (next(replies) or b"").startswith(b"0:"):
                counts[state] -= 1
        return counts

    async def get_job_count_by_types(self, *states: str) -> int:
        return sum((await self.get_job_counts(*states)).values())

    async def count(self) -> int:
        """Jobs not yet run: waiting, delayed, prioritized and waiting-children, as BullMQ
        counts them (a legacy ``paused`` list, which BullMQ < 5 wrote, is not counted)."""
        return await self.get_job_count_by_types("waiting", "delayed", "prioritized", "waiting-children")

    @staticmethod
    def _states(states: Iterable[str]) -> list[str]:
        out = []
        for state in states:
            if state not in _wire.STATE_KEYS:
                raise InvalidOptionError(f"unknown job state {state!r}")
            out.append("waiting" if state == "wait" else state)
        return out

    @port_keywords(types="states")
    async def get_jobs(
        self,
        states: str | Sequence[str] | None = None,
        start: int = 0,
        end: int = -1,
        asc: bool = False,
    ) -> list[Job]:
        """Jobs in the given states, by index range per state, newest first unless ``asc``.

        A page with ``start`` and ``end`` both >= 0 keeps its size past ids whose job is gone
        (reading on for at most 5 ranges per state, as BullMQ); a job in two of the states
        is given once. All of a state from ``start`` (``end`` -1) is read in windows of 10,000
        jobs, a call each: not one snapshot (a job that moves meanwhile may be missed or given
        in two states), but Redis is not held for seconds by a state of a million jobs."""
        if isinstance(states, str):
            states = [states]
        # a state named twice ('wait' and 'waiting') is read once (BullMQ)
        names = list(dict.fromkeys(self._states(states or _wire.DEFAULT_COUNT_STATES)))
        keys = [_wire.STATE_KEYS[state] for state in names]
        start, end = int(start), int(end)
        order = "1" if asc else "0"
        meta = [self.key(_wire.META)]
        # per state: its answers, each [id, hash, id, hash, ..., ids read]
        answers: dict[str, list[list[Any]]] = {key: [] for key in keys}
        if start < 0 or end != -1:
            args = [self.key_prefix, start, end, order, _GET_JOBS_MAX_RANGES, *keys]
            for key, found in zip(keys, await self._redis.run("get_jobs", meta, args, read_only=True)):
                answers[key].append(found)
        else:
            window, unread = start, keys
            while unread:  # the states with more to read: all of them in the first call
                size = max(_GET_JOBS_WINDOW // len(unread), 1)  # (jobs a call, all states together)
                args = [self.key_prefix, window, window + size - 1, order, 1, *unread]
                per_state = await self._redis.run("get_jobs", meta, args, read_only=True)
                for key, found in zip(unread, per_state):
                    answers[key].append(found)
                unread = [key for key, found in zip(unread, per_state) if int(found[-1]) == size]
                window += size
        jobs: dict[str, Job] = {}
        for key in keys:  # state by state, as BullMQ lists them
            for found in answers[key]:
                for i in range(0, len(found) - 2, 2):  # (the last element: how many ids were read)
                    job_id = found[i].decode()
                    if job_id not in jobs:
                        jobs[job_id] = Job.from_hash(self, job_id, found[i + 1])
        return list(jobs.values())

    # the jobs of one state (BullMQ lists finished jobs newest first, the others oldest first)

    async def get_waiting(self, start: int = 0, end: int = -1) -> list[Job]:
        """Jobs in the 'waiting' state, oldest first."""
        return await self.get_jobs(["waiting"], start, end, asc=True)

    async def get_active(self, start: int = 0, end: int = -1) -> list[Job]:
        """Jobs in the 'active' state, oldest first."""
        return await self.get_jobs(["active"], start, end, asc=True)

    async def get_delayed(self, start: int = 0, end: int = -1) -> list[Job]:
        """Jobs in the 'delayed' state, oldest first."""
        return await self.get_jobs(["delayed"], start, end, asc=True)

    async def get_prioritized(self, start: int = 0, end: int = -1) -> list[Job]:
        """Jobs in the 'prioritized' state, oldest first."""
        return await self.get_jobs(["prioritized"], start, end, asc=True)

    async def get_completed(self, start: int = 0, end: int = -1) -> list[Job]:
        """Jobs in the 'completed' state, newest first."""
        return await self.get_jobs(["completed"], start, end, asc=False)

    async def get_failed(self, start: int = 0, end: int = -1) -> list[Job]:
        """Jobs in the 'failed' state, newest first."""
        return await self.get_jobs(["failed"], start, end, asc=False)

    async def get_waiting_children(self, start: int = 0, end: int = -1) -> list[Job]:
        """Jobs in the 'waiting-children' state, oldest first."""
        return await self.get_jobs(["waiting-children"], start, end, asc=True)

    # -- managing -----------------------------------------------------------------------------

    async def pause(self) -> None:
        """Pause the queue: workers take no new job (jobs stay where they are). Emits
        ``paused`` on this Queue."""
        await self._redis.run("pause", [self.key(_wire.META)], [self.key_prefix, "1"])
        self.emit("paused")

    async def resume(self) -> None:
        emit = "1"  # 'resumed' once, on the first call, as BullMQ (even if not paused)
        while await self._redis.run("pause", [self.key(_wire.META)], [self.key_prefix, "0", emit]):
            emit = "0"
        self.emit("resumed")

    async def is_paused(self) -> bool:
        return bool(await self._redis.commands.hexists(self.key(_wire.META), "paused"))

    async def get_metrics(self, state: str, start: int = 0, end: int = -1) -> dict[str, Any]:
        """BullMQ's metrics of finished jobs, collected by workers made with
        ``metrics={"maxDataPoints": n}``: ``{"meta": {"count", "prevTS", "prevCount"},
        "data": [jobs per minute, newest first, start..end], "count": points kept}``."""
        if state not in ("completed", "failed"):
            raise InvalidOptionError(f"metrics are of 'completed' or 'failed' jobs, not {state!r}")
        key = self.key(f"metrics:{state}")
        async with self._redis.commands.pipeline(transaction=False) as pipe:
            pipe.hmget(key, "count", "prevTS", "prevCount")
            pipe.lrange(f"{key}:data", int(start), int(end))
            pipe.llen(f"{key}:data")
            meta, data, count = await pipe.execute()
        return {
            "meta": dict(zip(("count", "prevTS", "prevCount"), (int(v or 0) for v in meta))),
            "data": [int(point) for point in data],
            "count": int(count),
        }

    async def get_meta(self) -> dict[str, Any]:
        """The queue's meta hash as BullMQ's ``getMeta`` gives it: numbers for concurrency,
        max, duration and maxLenEvents (stored as ``opts.maxLenEvents``), ``paused`` a bool."""
        raw = await self._redis.commands.hgetall(self.key(_wire.META))
        meta: dict[str, Any] = {k.decode(): v.decode("utf-8", "replace") for k, v in raw.items()}
        paused = meta.pop("paused", None)
        numbers = {"concurrency": "concurrency", "max": "max", "duration": "duration", "opts.maxLenEvents": "maxLenEvents"}
        for stored, name in numbers.items():
            value = meta.pop(stored, None)
            if value:
                meta[name] = _number(value)
        meta["paused"] = paused == "1"
        return meta

    async def get_version(self) -> str | None:
        """The library version that last wrote the queue's meta (``bullfast:0.1.0``,
        ``bullmq:6.7.0``, ...)."""
        version = await self._redis.commands.hget(self.key(_wire.META), "version")
        return None if version is None else version.decode()

    async def drain(self, delayed: bool = False) -> None:
        """Delete every job waiting to run (and the delayed ones if asked)."""
        args = [self.key_prefix, "1" if delayed else "0", 1000]
        while await self._redis.run("drain", [self.key(_wire.META)], args):
            pass

    async def obliterate(self, force: bool | Mapping[str, Any] = False, count: int = 1000) -> None:
        """Delete the whole queue and all its jobs. Refused while jobs are active unless
        ``force`` (:class:`~bullfast.errors.QueueHasActiveJobsError`, nothing deleted). Keys of
        other queues and applications are left alone. Emits ``paused`` on this Queue once the
        queue is paused for it (BullMQ's obliterate pauses first). BullMQ's form
        ``obliterate({"force": ..., "count": ...})`` works too."""
        if isinstance(force, Mapping):
            # (a dict given as ``force`` was truthy: it deleted a queue with active jobs)
            opts = force
            unknown = set(opts) - {"force", "count"}
            if unknown:
                raise InvalidOptionError(f"unknown obliterate options: {sorted(unknown)}")
            force, count = opts.get("force", False), opts.get("count", count)
        if not isinstance(force, bool):
            raise InvalidOptionError(f"obliterate's force must be True or False, not {force!r}")
        count = positive_int("obliterate", "count", count)
        pause_first = "1"
        while True:
            args = [self.key_prefix, "1" if force else "0", count, pause_first]
            result = await self._redis.run("obliterate", [self.key(_wire.META)], args)
            if result == -2:
                raise QueueHasActiveJobsError(
                    f"Cannot obliterate queue with active jobs: {self.name!r} (pass force=True)"  # BullMQ's words first
                )
            if result == -1:
                raise QueueNotPausedError(
                    f"Cannot obliterate non-paused queue: {self.name!r} was resumed while it was being "
                    "obliterated; it may be partly deleted"
                )
            if pause_first == "1":
                self.emit("paused")  # (the first call paused the queue, as BullMQ's pause() first)
            if result == 0:
                return
            pause_first = "0"

    @port_keywords(type="state")
    async def clean(self, grace: int, limit: int = 1000, state: str = "completed") -> list[str]:
        """Remove up to ``limit`` jobs (0: no limit) of a state older than ``grace`` ms;
        returns their ids (BullMQ's ``clean(grace, limit, type)``, in calls of at most 10,000).
        Each call emits ``cleaned`` (its ids, the state) on this Queue, as BullMQ's."""
        asked = state
        state = "wait" if state == "waiting" else state
        if state not in ("completed", "failed", "wait", "paused", "active", "delayed", "prioritized"):
            raise InvalidOptionError(f"cannot clean jobs in state {asked!r}")
        limit = int(limit)
        if limit < 0:
            return []  # as BullMQ's (its loop never runs); 0 is "no limit"
        per_call = min(10_000, limit) if limit > 0 else 10_000
        timestamp = now_ms() - int(grace)
        removed: list[str] = []
        while limit <= 0 or len(removed) < limit:
            ids = await self._redis.run("clean", [self.key(_wire.META)], [self.key_prefix, state, timestamp, per_call])
            cleaned = [i.decode() for i in ids]
            self.emit("cleaned", cleaned, state)
            removed += cleaned
            if len(ids) < per_call:
                break
        return removed

    async def retry_jobs(
        self, opts: Mapping[str, Any] | None = None, *, state: str = "failed", count: int = 1000,
        timestamp: int | None = None,
    ) -> None:
        """Send every failed (or completed) job finished before ``timestamp`` (default: now) back
        to wait, ``count`` per call."""
        if opts:
            state = opts.get("state", state)
            count = opts.get("count", count)
            timestamp = opts.get("timestamp", timestamp)
        if state not in ("failed", "completed"):
            raise InvalidOptionError("state must be 'failed' or 'completed'")
        count = positive_int("retry_jobs", "count", count)  # (0 looped for ever, as in BullMQ)
        args = [self.key_prefix, state, count, int(timestamp if timestamp is not None else now_ms())]
        while await self._redis.run("retry_jobs", [self.key(_wire.META)], args):
            pass

    async def promote_jobs(self, opts: Mapping[str, Any] | None = None, *, count: int = 1000) -> None:
        """Run every delayed job now, ``count`` per call."""
        if opts:
            count = opts.get("count", count)
        while await self._redis.run("promote_jobs", [self.key(_wire.META)], [self.key_prefix, int(count)]):
            pass

    async def get_job_logs(self, job_id: str, start: int = 0, end: int = -1, asc: bool = True) -> dict[str, Any]:
        """``{"logs": [...], "count": n}`` of a job."""
        job = Job(self, "", None, None, _named(job_id))
        return await job.get_logs(start, end, asc)

    async def get_completed_count(self) -> int:
        return await self.get_job_count_by_types("completed")

    async def get_failed_count(self) -> int:
        return await self.get_job_count_by_types("failed")

    async def get_delayed_count(self) -> int:
        return await self.get_job_count_by_types("delayed")

    async def get_active_count(self) -> int:
        return await self.get_job_count_by_types("active")

    async def get_prioritized_count(self) -> int:
        return await self.get_job_count_by_types("prioritized")

    async def get_waiting_count(self) -> int:
        return await self.get_job_count_by_types("waiting")

    async def get_waiting_children_count(self) -> int:
        return await self.get_job_count_by_types("waiting-children")

    async def get_counts_per_priority(self, priorities: Sequence[int]) -> dict[str, int]:
        """``{"<priority>": count}``; priority 0 counts the waiting (non-prioritized) jobs."""
        out: dict[str, int] = {}
        async with self._redis.commands.pipeline(transaction=False) as pipe:
            for p in priorities:
                if int(p) == 0:
                    pipe.llen(self.key(_wire.WAIT))
                else:
                    pipe.zcount(self.key(_wire.PRIORITIZED), int(p) * 2**32, (int(p) + 1) * 2**32 - 1)
            for p, n in zip(priorities, await pipe.execute()):
                out[str(p)] = int(n)
        return out

    @port_keywords(expire_time_ms="expire_ms")
    async def rate_limit(self, expire_ms: int) -> None:
        """Rate-limit the queue for ``expire_ms`` (workers take no job until then)."""
        await self._redis.commands.set(self.key(_wire.LIMITER), 9007199254740991, px=int(expire_ms))

    async def get_rate_limit_ttl(self, max_jobs: int | None = None) -> int:
        """Milliseconds until the queue's rate limit lifts, as BullMQ answers: with a maximum
        (``max_jobs``, else the global one of ``set_global_rate_limit``), 0 unless it is
        reached; with none, the limiter key's PTTL (-2: no key, -1: no expiry)."""
        async with self._redis.commands.pipeline(transaction=False) as pipe:
            pipe.get(self.key(_wire.LIMITER))
            pipe.pttl(self.key(_wire.LIMITER))
            pipe.hget(self.key(_wire.META), "max")
            used, ttl, global_max = await pipe.execute()
        maximum = max_jobs or (int(global_max) if global_max is not None else None)
        if maximum is None:
            return int(ttl)
        if maximum <= int(used or 0) and ttl > 0:
            return int(ttl)
        return 0

    async def remove_rate_limit_key(self) -> int:
        return int(await self._redis.commands.delete(self.key(_wire.LIMITER)))

    async def set_global_concurrency(self, concurrency: int) -> int:
        """At most ``concurrency`` jobs of this queue active at once, over all workers. Returns
        HSET's answer (fields new to the meta hash), as BullMQ."""
        return int(await self._redis.commands.hset(self.key(_wire.META), "concurrency", int(concurrency)))

    async def get_global_concurrency(self) -> int | None:
        value = await self._redis.commands.hget(self.key(_wire.META), "concurrency")
        return None if value is None else int(value)

    async def remove_global_concurrency(self) -> int:
        """Returns HDEL's answer (1 if a limit was set), as BullMQ."""
        return int(await self._redis.commands.hdel(self.key(_wire.META), "concurrency"))

    @port_keywords(duration_ms="duration")
    async def set_global_rate_limit(self, max_jobs: int, duration: int) -> int:
        """At most ``max_jobs`` jobs started per ``duration`` ms, over all workers. Returns
        HSET's answer, as BullMQ."""
        meta = {"max": int(max_jobs), "duration": int(duration)}
        return int(await self._redis.commands.hset(self.key(_wire.META), mapping=meta))

    async def get_global_rate_limit(self) -> dict[str, int] | None:
        m, d = await self._redis.commands.hmget(self.key(_wire.META), "max", "duration")
        return None if m is None else {"max": int(m), "duration": int(d or 0)}

    async def remove_global_rate_limit(self) -> int:
        """Returns HDEL's answer (the fields removed), as BullMQ."""
        return int(await self._redis.commands.hdel(self.key(_wire.META), "max", "duration"))

    @port_keywords(type="kind")
    def to_key(self, kind: str) -> str:
        return self.key(kind)

    @port_keywords(id="deduplication_id")
    async def get_deduplication_job_id(self, deduplication_id: str) -> str | None:
        """The id of the job that holds ``deduplication_id`` now, or None."""
        value = await self._redis.commands.get(self.key("de:" + _named(deduplication_id, "deduplication id")))
        return None if value is None else value.decode()

    @port_keywords(id="deduplication_id")
    async def remove_deduplication_key(self, deduplication_id: str) -> int:
        """Forget ``deduplication_id``, whichever job holds it: the next job added with it is
        added (BullMQ's ``removeDeduplicationKey``). Returns the keys deleted (0 or 1)."""
        return int(await self._redis.commands.delete(self.key("de:" + _named(deduplication_id, "deduplication id"))))

    remove_debounce_key = remove_deduplication_key  # (BullMQ's older name)

    async def is_maxed(self) -> bool:
        """Whether the queue has as many active jobs as its global concurrency allows."""
        async with self._redis.commands.pipeline(transaction=True) as pipe:
            pipe.hget(self.key(_wire.META), "concurrency")
            pipe.llen(self.key(_wire.ACTIVE))
            concurrency, active = await pipe.execute()
        return concurrency is not None and int(active) >= int(concurrency)

    @port_keywords(jobId="job_id")
    async def update_job_progress(self, job_id: str, progress: Any) -> None:
        """Store the progress of the job ``job_id`` without reading the job, and emit
        ``progress`` (the id, the progress) as BullMQ's ``updateJobProgress`` does."""
        job_id = _named(job_id)
        await Job.store_progress(self, job_id, progress)
        self._emit_local("progress", job_id, progress)  # (Node's: the id, not a job never read)

    @port_keywords(jobId="job_id", logRow="line", keepLogs="keep_logs")
    async def add_job_log(self, job_id: str, line: str, keep_logs: int = 0) -> int:
        """Append a line to the log of the job ``job_id`` (BullMQ's ``Queue.addJobLog``)."""
        return await Job.add_job_log(self, _named(job_id), line, keep_logs)

    async def remove_deprecated_priority_key(self) -> int:
        """Delete the ``priority`` key older BullMQ versions kept (bullfast never writes it)."""
        return int(await self._redis.commands.delete(self.key("priority")))

    # -- who is connected ---------------------------------------------------------------------

    async def get_workers(self) -> list[dict[str, str]]:
        """The workers of this queue connected now, bullfast's and BullMQ's alike, as CLIENT LIST
        shows their named connections (BullMQ's ``getWorkers``): one dict of CLIENT LIST's
        fields per worker, with ``name`` the queue's name and ``rawname`` the connection's
        (``…:w:<worker name>`` for a named worker). Empty where the server refuses CLIENT."""
        base = self.client_name()
        named = base + _wire.NAMED_WORKER_SUFFIX
        return await self._connected(lambda name: name == base or name.startswith(named))

    async def get_workers_count(self) -> int:
        return len(await self.get_workers())

    async def get_queue_events(self) -> list[dict[str, str]]:
        """The QueueEvents reading this queue now (BullMQ's ``getQueueEvents``), like
        :meth:`get_workers`."""
        wanted = self.client_name(_wire.QUEUE_EVENTS_SUFFIX)
        return await self._connected(lambda name: name == wanted)

    async def _connected(self, matches: Callable[[str], bool]) -> list[dict[str, str]]:
        self._redis.check_open()  # (the raw client would connect again after close)
        client = self._redis.client
        try:
            if self._redis.cluster:
                # every primary's clients; the list with most matches, as BullMQ takes
                await client.initialize()  # (the primaries are known once it has)
                replies = [await client.execute_command("CLIENT", "LIST", target_nodes=node)
                           for node in client.get_primaries()]
            else:
                replies = [await client.execute_command("CLIENT", "LIST")]
        except ResponseError as exc:
            if client_command_refused(exc):
                return []
            raise
        except _UNAVAILABLE as exc:
            raise unavailable(exc, "CLIENT LIST") from exc
        found: list[dict[str, str]] = []
        for reply in replies:
            text = reply.decode() if isinstance(reply, bytes) else str(reply)
            clients = []
            for line in text.splitlines():
                fields = dict(item.partition("=")[::2] for item in line.split(" ") if item)
                raw = fields.get("name", "")
                if raw and matches(raw):
                    clients.append({**fields, "name": self.name, "rawname": raw})
            if len(clients) > len(found):
                found = clients
        return found

    # -- BullMQ features bullfast does not implement (they raise NotSupportedError) ------------

    job_scheduler = property(not_supported(JOB_SCHEDULERS))
    upsert_job_scheduler = not_supported(JOB_SCHEDULERS)
    remove_job_scheduler = not_supported(JOB_SCHEDULERS)
    is_job_scheduler = not_supported(JOB_SCHEDULERS)
    get_job_scheduler = not_supported(JOB_SCHEDULERS)
    get_job_schedulers = not_supported(JOB_SCHEDULERS)
    get_job_schedulers_count = not_supported(JOB_SCHEDULERS)

    @port_keywords(maxLength="max_length")
    async def trim_events(self, max_length: int) -> int:
        return int(await self._redis.commands.xtrim(self.key(_wire.EVENTS), maxlen=max_length, approximate=True))
