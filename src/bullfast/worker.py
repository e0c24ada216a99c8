"""Worker: takes jobs of one queue, runs a processor on them, ends each attempt.

Attempts are ended and jobs fetched in batches: one ``finish_jobs`` call ends every attempt
that finished while the previous call was in flight and, in the same script, takes new jobs
for the slots that frees (as BullMQ's fetch-next does, for many jobs at once). Up to four calls
of a quarter of the slots may be in flight, so Redis works on some batches while the processors
run the others: a worker with concurrency N keeps Redis and the CPU busy without one or two
round trips per job. The jobs one call takes share its lock token. What Redis
holds afterwards is what BullMQ's worker would leave. Idle workers block on the queue's marker
(BZPOPMIN), like BullMQ's, so producers of either library wake workers of either library.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import math
import os
import threading
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from types import TracebackType
from typing import Any

from redis.exceptions import TimeoutError as RedisTimeoutError

from . import _wire, core
from ._add import now_ms
from ._compat import CANCELLATION, camel_aliases, not_supported, port_keywords, unsupported_message
from ._connection import (
    _UNAVAILABLE,
    RedisConnection,
    blocking_connection,
    client_command_refused,
    connect_blocking,
    retry_delay,
    unavailable,
)
from ._emitter import _LISTENER_TASK, EventEmitter, running_loop
from ._finish import (
    COMMAND_OF_ACTION,
    BackoffStrategy,
    completion_entry,
    failure_entry,
    run_entries,
    take_jobs,
)
from ._pool import DaemonThreadPool
from .errors import (
    BullfastError,
    InvalidOptionError,
    NotSupportedError,
    OutcomeUnknownError,
    RateLimitError,
    RedisUnavailableError,
    UnrecoverableError,
    server_error,
)
from .job import Job
from .options import constructor_options, is_text, keep_jobs, positive_int
from .queue import QueueBase

Processor = Callable[..., Any]
# The longest marker wait while a delayed job is due later (re-checked after it), and how much
# longer than the wait asked of Redis the worker waits for its answer.
_MAX_DELAYED_WAIT = 10.0
_BLOCKING_MARGIN = 5.0
_MIN_BLOCK = 0.002  # seconds (see _wait_for_work)
# finish_jobs's codes of a completion refused for the job's children (pending, or failed)
_REFUSED_COMPLETION = (_wire.ERR_PENDING_CHILDREN, _wire.ERR_JOB_HAS_FAILED_CHILDREN)

_OPTION_NAMES: dict[str, str] = {
    "name": "worker_name",
    "concurrency": "concurrency",
    "autorun": "autorun",
    "lockDuration": "lock_duration",
    "lockRenewTime": "lock_renew_time",
    "stalledInterval": "stalled_interval",
    "maxStalledCount": "max_stalled_count",
    "drainDelay": "drain_delay",
    "limiter": "limiter",
    "removeOnComplete": "remove_on_complete",
    "removeOnFail": "remove_on_fail",
    "maxStartedAttempts": "max_started_attempts",
    "skipStalledCheck": "skip_stalled_check",
    "skipLockRenewal": "skip_lock_renewal",
    "maximumRateLimitDelay": "maximum_rate_limit_delay",
    "runRetryDelay": "run_retry_delay",
    "metrics": "metrics",
    "prefix": "prefix",
    "connection": "connection",
    "settings": "settings",
}


# what processors return most; never awaitable (inspect.isawaitable costs an ABC check a job)
_PLAIN_RESULTS = frozenset((dict, list, tuple, str, int, float, bool, type(None), bytes))


class _Running:
    __slots__ = ("job", "token", "task", "started", "ending", "resent")

    def __init__(self, job: Job, token: str) -> None:
        self.job = job
        self.token = token
        self.task: asyncio.Task[Any] | None = None
        self.started = time.monotonic()
        self.ending = False  # its attempt is being written: the lock is about to go
        self.resent = False  # its end was sent again: the first send's outcome was unknown


def _positive(name: str, value: Any, zero: bool = False) -> float:
    """``value`` if it is a finite number > 0 (>= 0 with ``zero``), else InvalidOptionError."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        if value > 0 or (zero and value == 0):
            return value
    raise InvalidOptionError(f"{name} must be a finite number {'>=' if zero else '>'} 0, not {value!r}")


# while a processor runs, in its task, the tasks it starts and the pool thread of a plain one:
# (the worker, the running job)
_JOB_OF: contextvars.ContextVar[tuple[Any, _Running] | None] = contextvars.ContextVar("bullfast_job_of", default=None)


def _exit_as_failure(exc: BaseException) -> RuntimeError:
    """The failure of a job whose processor raised SystemExit or KeyboardInterrupt itself."""
    return RuntimeError(f"the processor raised {type(exc).__name__}: {exc}" if str(exc) else
                        f"the processor raised {type(exc).__name__}")


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class _Done:
    """An awaitable of nothing: what a call that is done at once returns, so that both
    ``call()`` and ``await call()`` work."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # a generator function, so that ``await`` takes it


_DONE = _Done()


@camel_aliases({"runStalledJobsCheck": "check_stalled"}, attributes=("qualified_name", "worker_name"))
class Worker(QueueBase, EventEmitter):
    """Processes the jobs of ``queue_name`` with ``processor(job)`` (or ``processor(job, token)``).

    The processor may be ``async def`` or a plain function (run in a thread pool); its return
    value (JSON-serialisable) is the job's result. BullMQ's form
    ``Worker(name, processor, {"connection": ..., "concurrency": ...})`` works too. The worker
    starts at once unless ``autorun=False`` (then call :meth:`run`, or :meth:`start`).

    Events (``worker.on(event, callback)``): ``active`` (job), ``completed`` (job, result),
    ``failed`` (job, error), ``progress`` (job, progress), ``stalled`` (job_id, prev),
    ``drained`` (), ``paused`` (), ``resumed`` (), ``error`` (error), ``closed`` ().

    State, as bullmq's attributes: ``id``, ``opts`` (the settings in BullMQ's names),
    ``running``, ``paused``, ``closing``, ``closed``.
    """

    def __init__(
        self,
        name: str,
        processor: Processor | None = None,
        opts: Mapping[str, Any] | None = None,
        *,
        connection: Any = None,
        prefix: str | None = None,
        concurrency: int = 1,
        autorun: bool = True,
        worker_name: str | None = None,
        lock_duration: int = 30000,
        lock_renew_time: int | None = None,
        stalled_interval: int = 30000,
        max_stalled_count: int = 1,
        drain_delay: float = 5,
        limiter: Mapping[str, int] | None = None,
        remove_on_complete: Any = None,
        remove_on_fail: Any = None,
        backoff_strategy: BackoffStrategy | None = None,
        max_started_attempts: int | None = None,
        skip_stalled_check: bool = False,
        skip_lock_renewal: bool = False,
        maximum_rate_limit_delay: int = 30000,
        run_retry_delay: int = 15000,
        batch_size: int = 1000,
        metrics: Mapping[str, Any] | None = None,
    ) -> None:
        settings: dict[str, Any] = {}
        for key, value in constructor_options("worker", opts, _OPTION_NAMES).items():
            if key == "settings":
                if not isinstance(value, Mapping):
                    raise InvalidOptionError(f"worker option 'settings' must be a mapping, not {value!r}")
                if value.get("backoffStrategy") is not None:
                    settings["backoff_strategy"] = value["backoffStrategy"]
                continue
            settings[key] = value

        def pick(key: str, given: Any, default: Any) -> Any:
            return given if given != default else settings.get(key, default)

        QueueBase.__init__(
            self,
            name,
            connection=pick("connection", connection, None),
            prefix=pick("prefix", prefix, None),
        )
        EventEmitter.__init__(self)
        if processor is not None and not callable(processor):
            raise TypeError("processor must be callable")
        self.processor = processor
        self.batch_size = positive_int("Worker", "batch_size", batch_size)
        self._executor: DaemonThreadPool | None = None
        self.concurrency = pick("concurrency", concurrency, 1)
        self.worker_name = pick("worker_name", worker_name, None)
        if isinstance(self.worker_name, str) and not is_text(self.worker_name):
            raise InvalidOptionError(f"worker name {self.worker_name!r} is not valid text (a lone surrogate)")
        # refused as BullMQ refuses them (0 or less made the stalled check or the wait for work
        # spin)
        self.lock_duration = int(_positive("lock_duration", pick("lock_duration", lock_duration, 30000)))
        renew = pick("lock_renew_time", lock_renew_time, None)
        self.lock_renew_time = int(_positive("lock_renew_time", renew) if renew else self.lock_duration / 2)
        self.stalled_interval = int(_positive("stalled_interval", pick("stalled_interval", stalled_interval, 30000)))
        self.max_stalled_count = int(
            _positive("max_stalled_count", pick("max_stalled_count", max_stalled_count, 1), zero=True)
        )
        self.drain_delay = float(_positive("drain_delay", pick("drain_delay", drain_delay, 5)))
        self.limiter = pick("limiter", limiter, None)
        # (checked now: a bad value would otherwise fail every job that ends)
        self.remove_on_complete = keep_jobs("remove_on_complete", pick("remove_on_complete", remove_on_complete, None))
        self.remove_on_fail = keep_jobs("remove_on_fail", pick("remove_on_fail", remove_on_fail, None))
        self.backoff_strategy = pick("backoff_strategy", backoff_strategy, None)
        started = pick("max_started_attempts", max_started_attempts, None)
        if started is not None and (isinstance(started, bool) or not isinstance(started, int) or started < 0):
            raise InvalidOptionError(f"max_started_attempts must be an integer >= 0, not {started!r}")
        self.max_started_attempts = started or None  # 0: no limit, as in BullMQ
        self.skip_stalled_check = pick("skip_stalled_check", skip_stalled_check, False)
        self.skip_lock_renewal = pick("skip_lock_renewal", skip_lock_renewal, False)
        self.maximum_rate_limit_delay = int(pick("maximum_rate_limit_delay", maximum_rate_limit_delay, 30000))
        self.run_retry_delay = int(pick("run_retry_delay", run_retry_delay, 15000))
        autorun = pick("autorun", autorun, True)
        # BullMQ's metrics of finished jobs (Queue.get_metrics): {"maxDataPoints": n}
        self.metrics = pick("metrics", metrics, None)
        if self.metrics is not None:
            points = self.metrics.get("maxDataPoints") if isinstance(self.metrics, Mapping) else None
            if isinstance(points, bool) or not isinstance(points, int) or points < 0:
                raise InvalidOptionError(f"metrics must be {{'maxDataPoints': n}} with n >= 0, not {self.metrics!r}")
        # (0, as in BullMQ: jobs are counted, no per-minute point is kept)
        self._metrics_points: int | str = self.metrics["maxDataPoints"] if self.metrics else ""

        self._id = os.urandom(8).hex()
        self._call_counter = 0  # the lock token of a call's jobs: "<worker id>:<call number>"
        # by (job id, lock token): the stalled check may hand a job back to this worker while
        # its stale attempt still runs, and the two must not share an entry
        self._running: dict[tuple[str, str], _Running] = {}
        self._entries: list[tuple[list[Any], _Running, Any]] = []
        self._wake = asyncio.Event()
        self._idle_changed = asyncio.Event()
        self._idle_task: asyncio.Task[Any] | None = None
        self._calls: set[asyncio.Task[Any]] = set()
        self._in_flight = 0
        self._reserved = 0
        self._idle = False
        # no fetching before this time.monotonic() (a rate limit: the limiter's, or one set by
        # rate_limit() and a RateLimitError), as BullMQ's worker waits for limitUntil
        self._limited_until = 0.0
        self._next_due = 0
        self._failures = 0
        self._drained_emitted = False
        self._closing = False
        self._closed = asyncio.Event()
        self._close_task: asyncio.Task[None] | None = None
        self._close_waiters = 0  # close() calls waiting for _close_task (one raises its error)
        self._close_in_background: asyncio.Future[None] | None = None  # (kept: a task needs a reference)
        self._close_callers: set[asyncio.Task[Any]] = set()
        self._schedulers_reported: set[str] = set()
        self._threads_running = 0  # plain processors running in the pool's threads
        self._threads_lock = threading.Lock()
        self._forced = False
        self._paused = False
        self._given_opts = dict(opts or {})
        self._main: asyncio.Task[Any] | None = None
        self._background: list[asyncio.Task[Any]] = []
        # the stalled check's loop: one at a time; pause() ends it, resume() starts a new one
        self._stalled_task: asyncio.Task[None] | None = None
        self._stalled_stop = asyncio.Event()
        self._blocking: RedisConnection | None = None
        self._connecting: asyncio.Task[None] | None = None
        # the blocking connection's name, as BullMQ names a worker's (None: the server refuses it)
        suffix = _wire.NAMED_WORKER_SUFFIX + self.worker_name if self.worker_name else ""
        self._connection_name: str | None = self.client_name(suffix)
        self._wait_task: asyncio.Task[Any] | None = None
        self._call_with_token = False
        self._is_async = False
        self._ready_announced = False
        if processor is not None:
            self._inspect_processor(processor)
        if autorun and processor is not None:
            self.start()
        else:
            self._announce_once_connected()

    # -- life cycle ---------------------------------------------------------------------------

    def _announce_once_connected(self) -> None:
        """A worker that does not run (yet) says 'ready' once Redis answers, as Node's does
        from its constructor (made outside an event loop: on wait_until_ready() or start())."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return

        async def ping_then_announce() -> None:
            try:
                await self.client.ping()
            except Exception:
                return  # (a Redis that is not there is reported by the calls that need it)
            self._announce_ready()

        self._background.append(loop.create_task(ping_then_announce()))

    def _inspect_processor(self, processor: Processor) -> None:
        target = processor
        self._is_async = inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
            type(target).__call__ if not inspect.isroutine(target) else None
        )
        try:
            params = [
                p
                for p in inspect.signature(target).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
            ]
            self._call_with_token = len(params) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)
        except (TypeError, ValueError):
            params, self._call_with_token = [], False
        required = [p for p in params if p.kind != p.VAR_POSITIONAL and p.default is p.empty]
        if len(required) > 2:
            # bullmq's third argument is the job's AbortSignal: refused here rather than as a
            # TypeError failing every job
            raise NotSupportedError(
                f"the processor takes {len(required)} arguments; bullfast passes (job) or (job, token): "
                + unsupported_message(CANCELLATION)
            )
        if not self._is_async:
            self._executor = DaemonThreadPool(self.concurrency, "bullfast-worker")

    @property
    def concurrency(self) -> int:
        """How many jobs run at once; may be changed while the worker runs, as in BullMQ."""
        return self._concurrency

    @concurrency.setter
    def concurrency(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 1:
            raise InvalidOptionError(f"concurrency must be a finite number greater than 0, not {value!r}")
        self._concurrency = int(value)
        # each call fetches for a quarter of the slots (see _run_loop)
        self._per_call = min(self.batch_size, max(1, -(-self._concurrency // self._MAX_IN_FLIGHT)))
        executor = self._executor
        if executor is not None:
            # a plain processor runs in this pool: a new one of the new size takes the next
            # jobs, and the old one ends once the jobs it runs are done
            self._executor = DaemonThreadPool(self._concurrency, "bullfast-worker")
            executor.shutdown(wait=False)

    def start(self) -> asyncio.Task[Any]:
        """Start processing in the background (what ``autorun`` does); returns the task."""
        if self.processor is None:
            raise BullfastError("a worker without a processor cannot run; use get_next_job()")
        if self._closing and self._main is None:
            raise BullfastError("the worker is closing or closed; it cannot start")
        if self._main is None:
            loop = running_loop(f"Worker({self.name!r}) starts at once")
            self._main = loop.create_task(self._run_loop(), name=f"bullfast-worker-{self.name}")
        return self._main

    async def run(self) -> None:
        """Process jobs until :meth:`close` (BullMQ's ``run()``): raises if the worker already
        runs (``autorun``, or another ``run()``), returns at once if it is closing. Cancelled,
        it closes the worker as :meth:`close` does (await ``close()`` for the end of it)."""
        if self.is_running():
            raise BullfastError("Worker is already running.")
        if self._closing:
            return
        main = self.start()
        try:
            await asyncio.wait({main})
        except asyncio.CancelledError:
            # our caller was cancelled (Ctrl-C in bullfast.sync's run()): the worker closes, as
            # close() does, recording the attempts that end (cancelling its loop lost them:
            # finished jobs stayed active, to run again); close() waits for this very close
            # (its error, if any, is raised by a close() the caller awaits, or else emitted)
            self._close_in_background = asyncio.ensure_future(self._request_close(False, 5.0, wait=False))
            raise
        if main.cancelled() and self._closing:
            return  # close() stopped the loop (Redis did not take the last outcomes): it says so
        main.result()  # the loop's own error, if it crashed

    def is_running(self) -> bool:
        return self._main is not None and not self._main.done()

    # -- state under bullmq's attribute names ---------------------------------------------------

    @property
    def id(self) -> str:
        """This worker's id (the first part of its lock tokens)."""
        return self._id

    @property
    def running(self) -> bool:
        return self.is_running()

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def closing(self) -> bool:
        """True from the moment :meth:`close` is called (or the worker stopped)."""
        return self._closing

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def opts(self) -> dict[str, Any]:
        """The worker's settings under BullMQ's option names (``concurrency``,
        ``lockDuration``...), with the options dict it was given."""
        out = dict(self._given_opts)
        for theirs, ours in _OPTION_NAMES.items():
            if ours is not None and ours not in ("connection", "prefix", "autorun") and hasattr(self, ours):
                out[theirs] = getattr(self, ours)
        out["prefix"] = self.prefix
        return out

    async def wait_until_ready(self) -> None:
        await self.client.ping()
        self._announce_ready()

    async def close(self, force: bool = False, *, redis_timeout: float = 5.0) -> None:
        """Stop taking jobs and wait for the running ones to end (``force``: cancel them; they
        are recovered by the stalled check). Closes the connections bullfast opened.

        Running jobs may take as long as they take; once they have ended, Redis has
        ``redis_timeout`` seconds to record their outcomes. If it has not (it went away), close
        gives up on them, closes the connections and raises :class:`RedisUnavailableError`:
        those jobs are still active in Redis, and the stalled check returns them to wait.

        Called again while closing, it waits for the same close (emitting ``closing`` and
        ``closed`` once, as BullMQ); with ``force`` it first cancels the jobs still running.

        Called by one of this worker's own jobs ("stop after this job"), it starts the close
        and returns: the close waits for that job, and its failure comes as an ``error``."""
        await self._request_close(force, redis_timeout, wait=not self._closes_from_own_job())

    async def _close_from_own_job(self, force: bool = False, *, redis_timeout: float = 5.0) -> None:
        """close() as one of this worker's jobs asked for it, wherever that was (a plain
        processor's pool thread: by the time this runs on the loop, the job may be over)."""
        await self._request_close(force, redis_timeout, wait=False)

    async def _request_close(self, force: bool, redis_timeout: float, wait: bool) -> None:
        caller = asyncio.current_task()
        if caller is not None:
            self._close_callers.add(caller)  # (a listener may be the one closing: not waited for)
        self._close_callers.update(_LISTENER_TASK.get() or ())
        if self._close_task is None:
            # (in a context of its own: the close is no part of the job that may start it)
            self._close_task = contextvars.Context().run(
                asyncio.get_running_loop().create_task, self._close(force, redis_timeout)
            )
            if not self._closed.is_set():
                # at once, not when the task starts: a job closing its own worker ends right
                # after this returns, and its end must not fetch the next job
                self._closing = True
            # its error, if any, is raised to a close() that waits for it, or else emitted
            self._close_task.add_done_callback(self._close_done)
        elif self._close_task.done():
            return  # closed is closed (its error, if any, was raised to the close that ran)
        elif force:
            self._abandon_running()
        if not wait:
            return  # "stop after this job": the close waits for this very job, which is here
        self._close_waiters += 1
        try:
            await asyncio.shield(self._close_task)
        except asyncio.CancelledError:
            # cancelled once the close had failed (between its end and this call's resuming):
            # _close_done counted on this call to raise; the last such call reports it instead
            task = self._close_task
            if task.done() and not task.cancelled() and task.exception() is not None and self._close_waiters == 1:
                self.emit("error", task.exception())
            raise
        finally:
            self._close_waiters -= 1

    def _close_done(self, done: asyncio.Task[None]) -> None:
        # (called before the close() calls waiting for it resume: those still waiting raise
        # the error; with none, a close started by a job, or waited for by calls cancelled
        # since, it would reach no one)
        if done.cancelled():
            return
        error = done.exception()
        if error is not None and self._close_waiters == 0:
            self.emit("error", error)

    def _closes_from_own_job(self) -> bool:
        """Whether the caller is one of this worker's jobs while it runs (its processor, a task
        it started, the pool thread of a plain one), not a listener: a close it waited for
        would wait for itself. (A thread the processor starts itself cannot be told apart.)"""
        mark = _JOB_OF.get()
        if mark is None or mark[0] is not self or _LISTENER_TASK.get() is not None:
            return False
        task = mark[1].task
        return task is not None and not task.done()

    def _report_scheduler(self, job: Job) -> None:
        """A run of a (Node) job scheduler: run like any job, but BullMQ's worker would also
        schedule the next run, which bullfast does not do: said once per scheduler."""
        self._schedulers_reported.add(str(job.repeat_job_key))
        self.emit("error", NotSupportedError(
            f"job {job.id} is a run of the job scheduler {job.repeat_job_key!r}: bullfast workers run it but "
            "do not schedule its next run, as BullMQ's workers do (job schedulers are not supported); "
            "leave queues with job schedulers to Node workers"
        ))

    def _closers(self) -> set[asyncio.Task[Any]]:
        return self._close_callers

    def _abandon_running(self) -> None:
        """close(force=True): cancel the running jobs; they stay active in Redis, their locks
        expire and the stalled check returns them to wait."""
        self._forced = True
        for running in list(self._running.values()):
            if running.task is not None:
                running.task.cancel()
        for _, r, _ in self._entries:
            self._release(r)
        self._entries = []
        for call in list(self._calls):
            call.cancel()

    async def _close(self, force: bool, redis_timeout: float) -> None:
        if self._closed.is_set():
            return
        self._closing = True
        self.emit("closing", "closing queue")
        self._wake.set()
        if self._wait_task is not None:
            self._wait_task.cancel()
        running = [r.task for r in self._running.values() if r.task is not None]
        if force:
            self._abandon_running()
            if self._calls:
                await asyncio.gather(*self._calls, return_exceptions=True)
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        unwritten = 0
        if self._main is not None:
            # asyncio.wait, not wait_for: the loop goes on retrying until we decide to stop it
            done, _ = await asyncio.wait({self._main}, timeout=redis_timeout)
            if not done:
                unwritten = len(self._running)
                self._main.cancel()
                for call in list(self._calls):
                    call.cancel()
                await asyncio.gather(self._main, *self._calls, return_exceptions=True)
                for _, r, _ in self._entries:
                    self._release(r)
                self._entries = []
        for task in self._background:
            task.cancel()
        if self._connecting is not None:
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._drain_listeners()
        if self._blocking is not None:
            await self._blocking.close()
        if self._executor is not None:
            # (not after a forced close: the abandoned jobs' threads run on, and waiting for
            # them would block the event loop)
            self._executor.shutdown(wait=not self._forced)
        await self._redis.close()
        self._closed.set()
        self.emit("closed")
        if unwritten:
            raise RedisUnavailableError(
                f"worker {self.qualified_name} closed without recording the outcome of {unwritten} job(s): "
                f"Redis did not take them within {redis_timeout}s; they stay active until the stalled "
                "check returns them to wait"
            )

    async def __aenter__(self) -> Worker:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def pause(self, do_not_wait_active: bool = False) -> None:
        """Stop taking new jobs (this worker only); waits for running ones unless asked not to.
        Emits ``paused`` (once they have ended, when waiting) if the worker was not paused."""
        was_paused, self._paused = self._paused, True
        self._wake.set()
        self._stalled_stop.set()  # the stalled check stops too, as BullMQ's
        if self._wait_task is not None:
            self._wait_task.cancel()
        if not do_not_wait_active:
            await self._settled()
        if not was_paused:
            self.emit("paused")

    async def _settled(self) -> None:
        """Until every running job's attempt has ended and been written to Redis."""
        while self._running or self._entries or self._in_flight:
            self._idle_changed.clear()
            await self._idle_changed.wait()

    def resume(self) -> _Done:
        """Take jobs again; emits ``resumed`` if the worker was paused or is not running, and
        starts one that never ran (from inside an event loop), as BullMQ. Done at the call; ``await
        worker.resume()`` works too (BullMQ's resume is async, the Python port's is not)."""
        if self._paused or not self.is_running():
            self._paused = False
            self._wake.set()
            if self._main is None and self.processor is not None and not self._closing and _in_event_loop():
                self.start()
            elif self._main is not None and not self._main.done() and _in_event_loop():
                self._start_stalled_loop()
            self.emit("resumed")
        return _DONE

    def is_paused(self) -> bool:
        return self._paused

    # -- the main loop ------------------------------------------------------------------------
    #
    # One coroutine decides; script calls run as tasks. Each call ends the attempts that are
    # ready (finish_jobs) and, in the same script, takes new jobs for the slots that frees and
    # for slots already free. Up to four calls of a quarter of the slots each may be in
    # flight, so Redis always has a batch to work on while the processors run the jobs of the
    # others (measured at C=50: two calls of 25 left Redis idle a quarter of the time, more
    # than four cost more per-call overhead than they won; benchmarks/README.md).

    _MAX_IN_FLIGHT = 4

    async def _run_loop(self) -> None:
        loop = asyncio.get_running_loop()
        # the blocking connection is connected (and named) at once, so that CLIENT LIST shows
        # the worker even while it is too busy to wait, but beside the first fetches, not
        # before them
        self._connecting = loop.create_task(self._connect_blocking())
        self._start_stalled_loop()
        if not self.skip_lock_renewal:
            self._background.append(loop.create_task(self._lock_loop()))
        try:
            while True:
                self._wake.clear()
                busy = bool(self._running or self._entries or self._in_flight)
                if self._closing and not busy:
                    return
                fetching = not (self._closing or self._paused)
                limited = False
                if self._limited_until:  # (no clock read a turn while no limit holds)
                    limited = self._limited_until > time.monotonic()
                    if not limited:
                        self._limited_until = 0.0
                if self._in_flight < self._MAX_IN_FLIGHT:
                    entries = self._entries
                    free = self.concurrency - len(self._running) - self._reserved + len(entries)
                    # a quarter of the slots per call, so the batches overlap
                    want = min(free, self._per_call) if fetching and (entries or not self._idle) else 0
                    if limited or any(e[0][2] == "w" for e in entries):
                        want = 0  # rate limited (or back to wait for it): fetch again once it passes
                    # with a call in flight, wait for a full batch (its reply frees slots and
                    # wakes this loop): many small calls cost Redis more than a few full ones
                    full = max(len(entries), want) >= self._per_call or self._in_flight == 0
                    if (entries or want > 0) and full:
                        self._entries = []
                        self._launch(entries, max(want, 0))
                        continue
                free = self.concurrency - len(self._running) - self._reserved
                if fetching and (self._idle or limited) and free > 0 and self._idle_task is None:
                    # free slots and nothing fetched last time: wait for work (the marker) or
                    # for a rate limit to pass, while the running jobs go on
                    self._idle_task = asyncio.get_running_loop().create_task(self._idle_wait())
                await self._wake.wait()
        finally:
            self._closing = True
            if self._idle_task is not None:
                self._idle_task.cancel()
                await asyncio.gather(self._idle_task, return_exceptions=True)

    def _launch(self, entries: list[tuple[list[Any], _Running, Any]], want: int) -> None:
        self._in_flight += 1
        self._reserved += want
        self._call_counter += 1
        token = f"{self._id}:{self._call_counter}"
        task = asyncio.get_running_loop().create_task(self._call(entries, want, token))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _call(self, entries: list[tuple[list[Any], _Running, Any]], want: int, token: str) -> None:
        limiter = self.limiter or {}
        fetch = (token, self.lock_duration, limiter.get("max", ""), limiter.get("duration", ""),
                 self.worker_name or "", want)
        now = now_ms()
        try:
            try:
                codes, fetched = await run_entries(
                    self._redis, self.key_prefix, [e for e, _, _ in entries], now, True, fetch,
                    self._metrics_points,
                )
            except RedisUnavailableError as exc:
                # retry the entries after a pause: if the call was applied after all (an
                # OutcomeUnknownError), the retry is refused for them (their locks are gone)
                # and reported, and what it fetched is returned to wait by the stalled check
                self.emit("error", exc)
                if isinstance(exc, OutcomeUnknownError):
                    for _, running, _ in entries:
                        running.resent = True
                self._entries[:0] = entries
                self._failures += 1
                await asyncio.sleep(retry_delay(self._failures, 0.05, 2.0))
                return
            except asyncio.CancelledError:
                # close(force=True): the jobs stay active; the stalled check returns them
                for _, running, _ in entries:
                    self._release(running)
                raise
            except Exception as exc:
                # a script error: reported; the jobs of the batch stay active and the stalled
                # check returns them to wait once their locks expire
                self.emit("error", exc)
                for _, running, _ in entries:
                    self._release(running)
                return
            self._failures = 0
            refused = 0
            for (entry, running, outcome), code in zip(entries, codes):
                if code in _REFUSED_COMPLETION and entry[2] == "c":
                    refused += 1
                self._settle(entry, running, outcome, code)
            taken, rate_ttl, next_due = int(fetched[0]), int(fetched[1]), int(fetched[2])
            self._report_dropped(fetched[3])
            # (the script takes a job fewer per refused completion: its slot stays taken until
            # the job is failed, as BullMQ fails it before fetching; no job for that is no
            # sign of an empty queue)
            if want - refused > 0:
                if taken:
                    self._idle = False
                    self._drained_emitted = False
                else:
                    self._idle = True
                    self._limit_for(rate_ttl)
                    self._next_due = next_due
                    if not self._drained_emitted:
                        # as BullMQ: as soon as a fetch finds nothing, even while jobs run
                        self._drained_emitted = True
                        self.emit("drained")
            # the script took the new jobs at the latest time it was given
            taken_at = max(now, max(e[8] for e, _, _ in entries)) if entries else now
            if taken:
                try:
                    jobs = self._taken_jobs(fetched[4], taken_at, token)
                except ValueError as exc:
                    # not what the script packs (another server's scripting?): reported; the
                    # jobs it took stay active until the stalled check returns them to wait
                    self.emit("error", exc)
                    return
                for job in jobs:
                    self._start_job(job)
        finally:
            self._done_call(want)

    def _taken_jobs(self, packed: bytes, taken_at: int, token: str) -> list[Job]:
        """The jobs of a fetch's packed reply (id, hash fields, id, ...)."""
        ids_and_hashes = core.unpack_string_arrays(packed)
        return [
            Job.taken(self, ids_and_hashes[k], ids_and_hashes[k + 1], taken_at, token, self.worker_name)
            for k in range(0, len(ids_and_hashes) - 1, 2)
        ]

    def _report_dropped(self, ids: list[bytes]) -> None:
        for job_id in ids:
            self.emit(
                "error",
                BullfastError(
                    f"job {self.key_prefix}{job_id.decode()} could not be read (its key holds no job "
                    "hash: deleted, or another application's value); dropped from the queue"
                ),
            )

    def _limit_for(self, ttl_ms: int) -> None:
        """A rate limit of ``ttl_ms`` holds (0: none): no fetching until it passes (waited
        for in steps of at most ``maximum_rate_limit_delay``)."""
        if ttl_ms > 0:
            wait = min(ttl_ms, self.maximum_rate_limit_delay) / 1000
            self._limited_until = max(self._limited_until, time.monotonic() + wait)

    def _done_call(self, want: int) -> None:
        self._in_flight -= 1
        self._reserved -= want
        self._wake.set()
        self._idle_changed.set()

    async def _idle_wait(self) -> None:
        """No job to fetch: wait for a rate limit to pass, or for work (the marker)."""
        try:
            limited = self._limited_until - time.monotonic()
            if limited > 0:
                await self._sleep(limited)
            else:
                await self._wait_for_work(self._next_due)
            self._idle = False
        finally:
            self._idle_task = None
            self._wake.set()

    async def _sleep(self, seconds: float) -> None:
        task = asyncio.ensure_future(asyncio.sleep(seconds))
        self._wait_task = task
        try:
            await task
        except asyncio.CancelledError:
            if not task.cancelled():
                raise
        finally:
            self._wait_task = None

    async def _wait_for_work(self, next_due: int) -> None:
        """Block on the marker until a producer (of either library) says there is work."""
        # at least 2 ms: BZPOPMIN's 0 blocks for ever, past the bound below, and so does
        # BullMQ's floor of 1 ms on Redis 6.2 (which turns 0.001 s into 0 ms)
        connecting = self._connecting
        if connecting is not None and not connecting.done():
            await asyncio.wait({connecting})  # (not cancelled if this wait is)
            if self._closing or self._paused:
                return
        timeout = max(self.drain_delay, _MIN_BLOCK)
        if next_due:
            timeout = min(max((next_due - now_ms()) / 1000, _MIN_BLOCK), _MAX_DELAYED_WAIT)
        if self._blocking is None:
            # no socket timeout: with one, redis-py (on Python < 3.12) can swallow the
            # cancellation that close() and pause() send; the wait is bounded below instead
            self._blocking = blocking_connection(self._redis.client, self._connection_name)
        task = asyncio.ensure_future(self._blocking.client.bzpopmin(self.key(_wire.MARKER), timeout))
        self._wait_task = task
        # longer than the wait asked of Redis, yet finite: a connection that died silently
        # (no reset, no answer) is noticed
        bound = timeout + _BLOCKING_MARGIN
        try:
            try:
                done, _ = await asyncio.wait({task}, timeout=bound)
            except asyncio.CancelledError:
                task.cancel()
                raise
            if not done:
                task.cancel()
                raise RedisTimeoutError(f"the wait for work got no answer from Redis within {bound:.1f} s")
            task.result()
        except asyncio.CancelledError:
            # close()/pause() interrupted the wait: the blocking connection is mid-command
            await self._drop_blocking()
            if not task.cancelled() or not (self._closing or self._paused):
                raise
        except Exception as exc:  # connection trouble while waiting: report, back off, retry
            if client_command_refused(exc):
                self._connection_name = None  # (a server that began refusing CLIENT SETNAME)
            # a connection failure as bullfast's type, as on every other path
            self.emit("error", unavailable(exc, "the wait for work") if isinstance(exc, _UNAVAILABLE) else exc)
            await self._drop_blocking()
            self._failures += 1
            await asyncio.sleep(retry_delay(self._failures, 0.05, 2.0))
        else:
            self._failures = 0
        finally:
            self._wait_task = None

    async def _connect_blocking(self) -> None:
        self._blocking, self._connection_name = await connect_blocking(
            self._redis.client, self._connection_name, _BLOCKING_MARGIN
        )
        self._announce_ready()

    def _announce_ready(self) -> None:
        """'ready', once, as Node's worker: when its connections are first up (started, or
        asked with wait_until_ready(), as a worker fetching by hand is)."""
        if not self._ready_announced:
            self._ready_announced = True
            self.emit("ready")

    async def _drop_blocking(self) -> None:
        blocking, self._blocking = self._blocking, None
        if blocking is not None:
            await blocking.close()

    async def _move_to_active(self, n: int, token: str) -> tuple[list[Job], int, int]:
        """The manual fetch of ``get_next_job``: n jobs locked with exactly ``token``."""
        now = now_ms()
        reply = await take_jobs(self._redis, self.key_prefix, now, token, self.lock_duration, self.limiter,
                                self.worker_name, n)
        taken, rate_ttl, next_due = int(reply[0]), int(reply[1]), int(reply[2])
        self._report_dropped(reply[3])
        jobs = self._taken_jobs(reply[4], now, token) if taken else []
        return jobs, rate_ttl, next_due

    # -- running one job ----------------------------------------------------------------------

    def _start_job(self, job: Job) -> None:
        assert job.token is not None
        running = _Running(job, job.token)
        self._running[(str(job.id), running.token)] = running
        running.task = asyncio.get_running_loop().create_task(self._process(running))

    async def _call_sync_processor(self, running: _Running) -> Any:
        assert self.processor is not None
        job, token = running.job, running.token
        from .sync import job_in_thread  # (sync builds on this module)

        processor = self.processor
        # in the pool's thread, the job's methods block (they run on this loop)
        view = job_in_thread(job, asyncio.get_running_loop())
        args = (view, token) if self._call_with_token else (view,)

        def call() -> Any:
            with self._threads_lock:
                self._threads_running += 1
            in_job = _JOB_OF.set((self, running))  # (the pool thread's own context)
            try:
                return processor(*args)
            except Exception:
                raise
            except BaseException as exc:
                # sys.exit() or argparse in a job (no signal reaches this thread): the job
                # fails, as Node fails a job for anything thrown; passed on, it would stop the
                # loop that runs the worker (bullfast.sync's, shared by every blocking object)
                raise _exit_as_failure(exc) from exc
            finally:
                _JOB_OF.reset(in_job)
                with self._threads_lock:
                    self._threads_running -= 1

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def _has_running_threads(self) -> bool:
        """A plain processor still runs in a thread (after close(force=True), an abandoned job)."""
        return self._threads_running > 0

    async def _process(self, running: _Running) -> None:
        job, token = running.job, running.token
        try:
            # every job taken is announced, also one failed before it runs (as BullMQ)
            self.emit("active", job, "waiting")
            if job.repeat_job_key and job.repeat_job_key not in self._schedulers_reported:
                self._report_scheduler(job)
            if job.decode_error:
                raise UnrecoverableError(job.decode_error)
            if job.deferred_failure:
                raise UnrecoverableError(job.deferred_failure)
            if self.max_started_attempts is not None and job.attempts_started > self.max_started_attempts:
                raise UnrecoverableError("job started more than allowable limit")
            processor = self.processor
            # (what the processor runs, in this task or in tasks it starts, is this job)
            in_job = _JOB_OF.set((self, running))
            try:
                if not self._is_async:
                    result = await self._call_sync_processor(running)
                elif self._call_with_token:
                    result = await processor(job, token)  # type: ignore[misc]
                else:
                    result = await processor(job)  # type: ignore[misc]
                if type(result) not in _PLAIN_RESULTS and inspect.isawaitable(result):
                    result = await result
            finally:
                _JOB_OF.reset(in_job)
            try:
                value = core.encode_value(result)
            except TypeError as exc:
                raise UnrecoverableError(
                    f"the processor returned a value that is not JSON-serialisable: {exc}"
                ) from None
            self._queue_entry(completion_entry(job, token, value, self.remove_on_complete), running, result)
        except asyncio.CancelledError:
            # close(force=True): the job stays active in Redis; the stalled check recovers it
            self._release(running)
            raise
        except Exception as err:
            await self._fail(running, err)
        except BaseException as exc:
            # Ctrl-C lands in the main thread, and asyncio's handling of it must go on there;
            # elsewhere (bullfast.sync's loop thread) it was raised by the processor's own code
            if threading.current_thread() is threading.main_thread():
                raise
            await self._fail(running, _exit_as_failure(exc))

    async def _fail(self, running: _Running, err: BaseException) -> None:
        entry = await failure_entry(
            running.job,
            running.token,
            err,
            keep_fallback=self.remove_on_fail,
            strategy=self.backoff_strategy,
            max_started_attempts=self.max_started_attempts,
        )
        if entry is None:  # the processor moved the job itself
            self._release(running)
            return
        self._queue_entry(entry, running, err)

    def _queue_entry(self, entry: list[Any], running: _Running, outcome: Any) -> None:
        running.ending = True
        self._entries.append((entry, running, outcome))
        self._wake.set()

    def _release(self, running: _Running) -> None:
        self._running.pop((str(running.job.id), running.token), None)
        self._wake.set()
        self._idle_changed.set()

    def _settle(self, entry: list[Any], running: _Running, outcome: Any, code: int) -> None:
        """What a finish_jobs code means for one attempt; the slot frees unless it fails on."""
        job = running.job
        action = entry[2]
        if code < 0 and action == "c" and code in _REFUSED_COMPLETION:
            # pending children: a failure that may be retried; failed children: unrecoverable.
            # Reported as an error too, as BullMQ's worker reports a refused completion
            err = server_error(code, str(job.id), "moveToFinished", state="active")
            if not (self._paused or self._closing):
                self.emit("error", err)
            task = asyncio.get_running_loop().create_task(self._fail(running, err))
            self._background.append(task)
            task.add_done_callback(self._background.remove)
            return
        self._release(running)
        if code == _wire.ERR_LOCK_NOT_EXIST and running.resent and action in ("c", "f"):
            task = asyncio.get_running_loop().create_task(self._settle_resent(entry, running, outcome, code))
            self._background.append(task)
            task.add_done_callback(self._background.remove)
            return
        self._announce(entry, running, outcome, code)

    async def _settle_resent(self, entry: list[Any], running: _Running, outcome: Any, code: int) -> None:
        """A job's end sent again after an OutcomeUnknownError and refused (its lock is gone):
        when the first send wrote it after all (the job ended at this attempt's very time), it
        is announced as written then, not reported as a lost lock (dozens of false errors after
        a stall of a few seconds). A job that is gone proves nothing (another worker may have
        run it again and removed it on ending): still reported."""
        job = running.job
        try:
            ended_at = await self._redis.commands.hget(job.key, "finishedOn")
        except RedisUnavailableError:
            ended_at = None
        written = ended_at is not None and ended_at.decode() == str(entry[8])
        self._announce(entry, running, outcome, 0 if written else code)

    def _announce(self, entry: list[Any], running: _Running, outcome: Any, code: int) -> None:
        job = running.job
        action = entry[2]
        if code < 0:
            # the lock was lost (the stalled check or another worker took the job) or the job
            # is gone: reported, never completed twice
            self.emit("error", server_error(code, str(job.id), COMMAND_OF_ACTION[action], state="active"))
            return
        if action == "w":
            if code > 0:  # the queue is rate-limited for this long: no fetching until then
                self._limit_for(code)
                self._idle = True
            return
        job.attempts_made += 1
        if action == "c":
            job.returnvalue = outcome
            job.finished_on = entry[8]
            self.emit("completed", job, outcome, "active")
        else:
            if action == "f":
                job.finished_on = entry[8]
            self.emit("failed", job, outcome, "active")

    # -- background duties ----------------------------------------------------------------------

    async def _lock_loop(self) -> None:
        # Like BullMQ: every lock_renew_time / 2, renew the jobs that have run at least that
        # long, except those whose attempt is being written (their lock is going away).
        # Runs on while close() waits for the running jobs (close cancels it after them): a job
        # that outlived its lock would be taken again by another worker's stalled check.
        half = self.lock_renew_time / 2000
        while True:
            await asyncio.sleep(half)
            now = time.monotonic()
            due = [r for r in self._running.values() if not r.ending and now - r.started >= half]
            if not due:
                continue
            pairs: list[Any] = []
            for running in due:
                pairs += (str(running.job.id), running.token)
            try:
                lost = await self._redis.run(
                    "extend_locks", [self.key(_wire.META)], [self.key_prefix, self.lock_duration, *pairs]
                )
            except Exception as exc:  # reported; the next round tries again
                self.emit("error", exc)
                continue
            lost_set = {job_id.decode() for job_id in lost}
            renewed = [str(r.job.id) for r in due if str(r.job.id) not in lost_set]
            if renewed:
                self.emit("locksRenewed", {"count": len(renewed), "jobIds": renewed})
            lost_ids = sorted({
                job_id for (job_id, _token), running in self._running.items()
                if job_id in lost_set and not running.ending
            })
            for job_id in lost_ids:
                self.emit("error", BullfastError(f"could not renew lock for job {job_id}"))
            if lost_ids:
                self.emit("lockRenewalFailed", lost_ids)

    async def check_stalled(self) -> list[str]:
        """One pass of the stalled-jobs check (the worker runs one at start and then every
        ``stalled_interval``); returns the ids moved back to wait."""
        moved, repaired = await self._redis.run(
            "stalled_check",
            [self.key(_wire.META)],
            [self.key_prefix, now_ms(), self.max_stalled_count, self.stalled_interval],
        )
        for job_id in repaired:
            self.emit(
                "error",
                BullfastError(f"job {self.key_prefix}{job_id.decode()} had a stalled counter that is not a number; reset"),
            )
        stalled = [job_id.decode() for job_id in moved]
        for job_id in stalled:
            self.emit("stalled", job_id, "active")
        return stalled

    def _start_stalled_loop(self) -> None:
        """Start the stalled check's loop, after the one running (if any) has ended: two never
        check at once, and a pause or close ends it (BullMQ stops its checker while paused)."""
        if self.skip_stalled_check or self._closing:
            return
        previous = self._stalled_task
        self._stalled_stop.set()  # the previous loop ends at its next step
        stop = self._stalled_stop = asyncio.Event()
        task = asyncio.get_running_loop().create_task(self._stalled_loop(stop, previous))
        self._stalled_task = task
        self._background.append(task)
        task.add_done_callback(self._background.remove)

    async def _stalled_loop(self, stop: asyncio.Event, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await asyncio.wait({previous})
        while not (stop.is_set() or self._closing or self._paused):
            try:
                await self.check_stalled()
            except Exception as exc:  # reported; the next round tries again
                self.emit("error", exc)
            # close() cancels this loop; a cancellation that arrives during the check can be
            # swallowed by redis-py (Python < 3.12), so the sleep must not start after close
            if stop.is_set() or self._closing or self._paused:
                return
            try:
                await asyncio.wait_for(stop.wait(), self.stalled_interval / 1000)
            except asyncio.TimeoutError:
                pass

    # -- progress reported by jobs -------------------------------------------------------------

    def _job_progressed(self, job: Job, progress: Any) -> None:
        self.emit("progress", job, progress)

    # -- manual processing (BullMQ's getNextJob / moveToCompleted / moveToFailed) -------------

    async def get_next_job(self, token: str, block: bool = True) -> Job | None:
        """Take one job with the given lock token (BullMQ's manual API); None if none came
        within ``drain_delay`` (or at once with ``block=False``), or if the worker is paused or
        closing. Emits ``active`` for the job taken, ``drained`` when it finds none (once,
        until it takes a job again), as BullMQ."""
        deadline = time.monotonic() + (self.drain_delay if block else 0)
        while not (self._paused or self._closing):
            jobs, _, next_due = await self._move_to_active(1, token)
            if jobs:
                self._drained_emitted = False
                self.emit("active", jobs[0], "waiting")
                return jobs[0]
            if not self._drained_emitted:
                self._drained_emitted = True
                self.emit("drained")
            if time.monotonic() >= deadline:
                return None
            await self._wait_for_work(next_due)
        return None

    async def extend_job_locks(self, job_ids: Sequence[str], tokens: Sequence[str], duration: int) -> list[str]:
        """Extend the locks of these jobs (each with its token) to ``duration`` ms from now;
        returns the ids whose lock could not be extended (gone, or another token's)."""
        pairs: list[Any] = []
        for job_id, token in zip(job_ids, tokens, strict=True):
            pairs += (str(job_id), token)
        lost = await self._redis.run("extend_locks", [self.key(_wire.META)], [self.key_prefix, int(duration), *pairs])
        return [job_id.decode() for job_id in lost]

    async def start_stalled_check_timer(self) -> None:
        """Run the stalled check every ``stalled_interval`` (a worker that runs does so itself;
        this is for one that only fetches by hand). Replaces a loop already running; nothing
        with ``skip_stalled_check``, while paused, or once closing."""
        if not self._paused:
            self._start_stalled_loop()

    @port_keywords(expire_time_ms="expire_ms")
    async def rate_limit(self, expire_ms: int) -> None:
        """Rate-limit the whole queue for ``expire_ms`` (then raise RateLimitError in the
        processor to send the current job back to wait)."""
        await self.client.set(self.key(_wire.LIMITER), 9007199254740991, px=int(expire_ms))

    # -- BullMQ features bullfast does not implement (they raise NotSupportedError) ------------

    cancel_job = not_supported(CANCELLATION)
    cancel_all_jobs = not_supported(CANCELLATION)
    cancel_processing = not_supported(CANCELLATION)


__all__ = ["Worker", "Processor"]


# BullMQ's static ``Worker.RateLimitError()``: the error to raise after ``rate_limit``
Worker.RateLimitError = staticmethod(RateLimitError)  # type: ignore[attr-defined]
