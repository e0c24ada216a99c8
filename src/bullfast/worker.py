"""Worker: takes jobs of one queue, runs a processor on them, ends each attempt.

Jobs are fetched in batches (one ``move_to_active`` call takes as many jobs as there are free
slots) and ended in batches (one ``finish_jobs`` call ends every attempt that finished while
the previous call was in flight), so a worker with concurrency N keeps Redis and the CPU busy
without one or two round trips per job. What Redis holds afterwards is what BullMQ's worker
would leave. Idle workers block on the queue's marker (BZPOPMIN), like BullMQ's, so producers
of either library wake workers of either library.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any

import orjson

from . import _wire, core
from ._add import now_ms
from ._connection import RedisConnection
from ._emitter import EventEmitter
from ._finish import BackoffStrategy, completion_entry, failure_entry, run_entries
from .errors import (
    BullfastError,
    JobHasFailedChildrenError,
    RedisUnavailableError,
    UnrecoverableError,
    server_error,
)
from .job import Job
from .queue import QueueBase

log = logging.getLogger("bullfast")

Processor = Callable[..., Any]

_OPTION_NAMES = {
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
    "prefix": "prefix",
    "connection": "connection",
}


class _Running:
    __slots__ = ("job", "token", "task")

    def __init__(self, job: Job, token: str) -> None:
        self.job = job
        self.token = token
        self.task: asyncio.Task[Any] | None = None


class Worker(QueueBase, EventEmitter):
    """Processes the jobs of ``queue_name`` with ``processor(job)`` (or ``processor(job, token)``).

    The processor may be ``async def`` or a plain function (run in a thread pool); its return
    value (JSON-serialisable) is the job's result. BullMQ's form
    ``Worker(name, processor, {"connection": ..., "concurrency": ...})`` works too. The worker
    starts at once unless ``autorun=False`` (then call :meth:`run`, or :meth:`start`).

    Events (``worker.on(event, callback)``): ``active`` (job), ``completed`` (job, result),
    ``failed`` (job, error), ``progress`` (job, progress), ``stalled`` (job_id, prev),
    ``drained`` (), ``error`` (error), ``closed`` ().
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
    ) -> None:
        settings: dict[str, Any] = {}
        for key, value in (opts or {}).items():
            if key == "settings" and isinstance(value, Mapping):
                if value.get("backoffStrategy") is not None:
                    settings["backoff_strategy"] = value["backoffStrategy"]
                continue
            ours = _OPTION_NAMES.get(key)
            if ours is None and key in _OPTION_NAMES.values():
                ours = key
            if ours is None:
                raise BullfastError(f"unknown worker option {key!r}")
            settings[ours] = value

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
        self.concurrency = int(pick("concurrency", concurrency, 1))
        if self.concurrency < 1:
            raise BullfastError("concurrency must be at least 1")
        self.worker_name = pick("worker_name", worker_name, None)
        self.lock_duration = int(pick("lock_duration", lock_duration, 30000))
        self.lock_renew_time = int(pick("lock_renew_time", lock_renew_time, None) or self.lock_duration / 2)
        self.stalled_interval = int(pick("stalled_interval", stalled_interval, 30000))
        self.max_stalled_count = int(pick("max_stalled_count", max_stalled_count, 1))
        self.drain_delay = float(pick("drain_delay", drain_delay, 5))
        self.limiter = pick("limiter", limiter, None)
        self.remove_on_complete = pick("remove_on_complete", remove_on_complete, None)
        self.remove_on_fail = pick("remove_on_fail", remove_on_fail, None)
        self.backoff_strategy = pick("backoff_strategy", backoff_strategy, None)
        self.max_started_attempts = pick("max_started_attempts", max_started_attempts, None)
        self.skip_stalled_check = pick("skip_stalled_check", skip_stalled_check, False)
        self.skip_lock_renewal = pick("skip_lock_renewal", skip_lock_renewal, False)
        self.maximum_rate_limit_delay = int(pick("maximum_rate_limit_delay", maximum_rate_limit_delay, 30000))
        self.run_retry_delay = int(pick("run_retry_delay", run_retry_delay, 15000))
        self.batch_size = batch_size
        autorun = pick("autorun", autorun, True)

        self._id = os.urandom(8).hex()
        self._token_counter = 0
        self._running: dict[str, _Running] = {}
        self._slot_freed = asyncio.Event()
        self._closing = False
        self._closed = asyncio.Event()
        self._paused = False
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._drained = False
        self._main: asyncio.Task[Any] | None = None
        self._background: list[asyncio.Task[Any]] = []
        self._blocking: RedisConnection | None = None
        self._wait_task: asyncio.Task[Any] | None = None
        self._finish_queue: list[tuple[list[Any], asyncio.Future[int]]] = []
        self._finish_ready = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._call_with_token = False
        self._is_async = False
        if processor is not None:
            self._inspect_processor(processor)
        if autorun and processor is not None:
            self.start()

    # -- life cycle ---------------------------------------------------------------------------

    def _inspect_processor(self, processor: Processor) -> None:
        target = processor
        self._is_async = inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
            getattr(target, "__call__", None)
        )
        try:
            params = [
                p
                for p in inspect.signature(target).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
            ]
            self._call_with_token = len(params) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)
        except (TypeError, ValueError):
            self._call_with_token = False
        if not self._is_async:
            self._executor = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="bullfast-worker")

    def start(self) -> asyncio.Task[Any]:
        """Start processing in the background (what ``autorun`` does); returns the task."""
        if self.processor is None:
            raise BullfastError("a worker without a processor cannot run; use get_next_job()")
        if self._main is None:
            self._main = asyncio.get_running_loop().create_task(self._run_loop(), name=f"bullfast-worker-{self.name}")
        return self._main

    async def run(self) -> None:
        """Process jobs until :meth:`close` (BullMQ's ``run()``)."""
        await self.start()

    def is_running(self) -> bool:
        return self._main is not None and not self._main.done()

    async def wait_until_ready(self) -> None:
        await self.client.ping()

    async def close(self, force: bool = False) -> None:
        """Stop taking jobs and wait for the running ones to end (``force``: cancel them; they
        are recovered by the stalled check). Closes the connections bullfast opened."""
        if self._closed.is_set():
            return
        self._closing = True
        self._resumed.set()
        self._slot_freed.set()
        if self._wait_task is not None:
            self._wait_task.cancel()
        running = [r.task for r in self._running.values() if r.task is not None]
        if force:
            for task in running:
                task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        if self._main is not None:
            await asyncio.gather(self._main, return_exceptions=True)
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._drain_listeners()
        if self._blocking is not None:
            await self._blocking.close()
        if self._executor is not None:
            self._executor.shutdown(wait=not force)
        await self._redis.close()
        self._closed.set()
        self.emit("closed")

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
        """Stop taking new jobs (this worker only); waits for running ones unless asked not to."""
        self._paused = True
        self._resumed.clear()
        if self._wait_task is not None:
            self._wait_task.cancel()
        if not do_not_wait_active:
            running = [r.task for r in self._running.values() if r.task is not None]
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    def resume(self) -> None:
        self._paused = False
        self._resumed.set()

    def is_paused(self) -> bool:
        return self._paused

    # -- the main loop ------------------------------------------------------------------------

    async def _run_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if not self.skip_stalled_check:
            self._background.append(loop.create_task(self._stalled_loop()))
        if not self.skip_lock_renewal:
            self._background.append(loop.create_task(self._lock_loop()))
        finisher = loop.create_task(self._finish_loop())
        failures = 0
        try:
            while not self._closing:
                if self._paused:
                    await self._resumed.wait()
                    continue
                free = self.concurrency - len(self._running)
                if free <= 0:
                    self._slot_freed.clear()
                    if self.concurrency - len(self._running) <= 0:
                        await self._slot_freed.wait()
                    continue
                try:
                    jobs, rate_ttl, next_due = await self._move_to_active(min(free, self.batch_size))
                    failures = 0
                except RedisUnavailableError as exc:
                    failures += 1
                    self.emit("error", exc)
                    await self._sleep(min(0.1 * 2**failures, self.run_retry_delay / 1000))
                    continue
                if jobs:
                    self._drained = False
                    for job in jobs:
                        self._start_job(job)
                    continue
                if rate_ttl > 0:
                    await self._sleep(min(rate_ttl, self.maximum_rate_limit_delay) / 1000)
                    continue
                if not self._drained and not self._running:
                    self._drained = True
                    self.emit("drained")
                await self._wait_for_work(next_due)
        finally:
            self._closing = True
            running = [r.task for r in self._running.values() if r.task is not None]
            if running:
                await asyncio.gather(*running, return_exceptions=True)
            self._finish_ready.set()
            await finisher

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
        timeout = self.drain_delay
        if next_due:
            timeout = min(max((next_due - now_ms()) / 1000, 0.001), 10)
        if self._blocking is None:
            self._blocking = RedisConnection(self._redis.client, socket_timeout=None)
        task = asyncio.ensure_future(self._blocking.client.bzpopmin(self.key(_wire.MARKER), timeout))
        self._wait_task = task
        try:
            await task
        except asyncio.CancelledError:
            # close()/pause() interrupted the wait: the blocking connection is mid-command
            await self._blocking.client.connection_pool.disconnect()
            if not task.cancelled() or not (self._closing or self._paused):
                raise
        except Exception as exc:  # connection trouble while waiting: report, back off, retry
            self.emit("error", exc)
            await asyncio.sleep(0.5)
        finally:
            self._wait_task = None

    async def _move_to_active(self, n: int, token: str | None = None) -> tuple[list[Job], int, int]:
        limiter = self.limiter or {}
        if token is None:
            base, first = self._id, self._token_counter
            self._token_counter += n
            first_arg: Any = first
        else:
            base, first_arg = token, ""
        reply = await self._redis.run(
            "move_to_active",
            [self.key(_wire.META)],
            [
                self.key_prefix,
                now_ms(),
                base,
                first_arg,
                self.lock_duration,
                limiter.get("max", ""),
                limiter.get("duration", ""),
                self.worker_name or "",
                n,
            ],
        )
        taken, rate_ttl, next_due = int(reply[0]), int(reply[1]), int(reply[2])
        jobs = []
        for k in range(taken):
            job_id = reply[3 + 2 * k].decode()
            flat = reply[4 + 2 * k]
            job = Job.from_hash(self, job_id, dict(zip(flat[::2], flat[1::2])))
            job.token = f"{base}:{first_arg + k}" if token is None else token
            jobs.append(job)
        return jobs, rate_ttl, next_due

    # -- running one job ----------------------------------------------------------------------

    def _start_job(self, job: Job) -> None:
        assert job.token is not None
        running = _Running(job, job.token)
        self._running[str(job.id)] = running
        running.task = asyncio.get_running_loop().create_task(self._process(job, job.token))

    async def _call_processor(self, job: Job, token: str) -> Any:
        assert self.processor is not None
        args = (job, token) if self._call_with_token else (job,)
        if self._is_async:
            result = await self.processor(*args)
        else:
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self._executor, lambda: self.processor(*args))  # type: ignore[misc]
        if inspect.isawaitable(result):
            result = await result
        return result

    async def _process(self, job: Job, token: str) -> None:
        entry: list[Any] | None
        try:
            try:
                if job.decode_error:
                    raise UnrecoverableError(job.decode_error)
                if job.deferred_failure:
                    raise UnrecoverableError(job.deferred_failure)
                if self.max_started_attempts is not None and job.attempts_started > self.max_started_attempts:
                    raise UnrecoverableError("job started more than allowable limit")
                self.emit("active", job, "waiting")
                result = await self._call_processor(job, token)
                try:
                    value = orjson.dumps(result)
                except TypeError as exc:
                    raise UnrecoverableError(f"the processor returned a value that is not JSON-serialisable: {exc}") from None
                entry = completion_entry(job, token, value, self.remove_on_complete)
                code = await self._finish(entry)
                if code == 0:
                    job.returnvalue = result
                    job.finished_on = now_ms()
                    job.attempts_made += 1
                    self.emit("completed", job, result, "active")
                    return
                if code == _wire.ERR_JOB_HAS_FAILED_CHILDREN:
                    raise server_error(code, str(job.id), "moveToFinished") from None
                if code == _wire.ERR_PENDING_CHILDREN:
                    raise server_error(code, str(job.id), "moveToFinished") from None
                self._lost(job, code)
                return
            except asyncio.CancelledError:
                raise
            except Exception as err:
                if isinstance(err, JobHasFailedChildrenError):
                    err = UnrecoverableError(str(err))
                await self._fail(job, token, err)
        finally:
            self._running.pop(str(job.id), None)
            self._slot_freed.set()

    async def _fail(self, job: Job, token: str, err: BaseException) -> None:
        entry = failure_entry(
            job,
            token,
            err,
            keep_fallback=self.remove_on_fail,
            strategy=self.backoff_strategy,
            max_started_attempts=self.max_started_attempts,
        )
        if entry is None:
            return
        code = await self._finish(entry)
        if code < 0:
            self._lost(job, code)
            return
        if entry[2] in ("d", "r", "f"):
            job.attempts_made += 1
        if entry[2] == "f":
            job.finished_on = now_ms()
        if entry[2] != "w":
            self.emit("failed", job, err, "active")

    def _lost(self, job: Job, code: int) -> None:
        """The attempt could not be ended: the lock was lost (another worker or the stalled
        check took the job) or the job is gone. Reported, never completed twice."""
        self.emit("error", server_error(code, str(job.id), "moveToFinished"))

    # -- ending attempts in batches -------------------------------------------------------------

    async def _finish(self, entry: list[Any]) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._finish_queue.append((entry, future))
        self._finish_ready.set()
        return await future

    async def _finish_loop(self) -> None:
        failures = 0
        while True:
            if not self._finish_queue:
                if self._closing and not self._running:
                    return
                self._finish_ready.clear()
                await self._finish_ready.wait()
                continue
            batch, self._finish_queue = self._finish_queue[: self.batch_size], self._finish_queue[self.batch_size :]
            try:
                codes = await run_entries(self._redis, self.key_prefix, [e for e, _ in batch], now_ms(), True)
                failures = 0
            except RedisUnavailableError as exc:
                # nothing of the batch was applied (one script call): retry it after a pause
                failures += 1
                self.emit("error", exc)
                self._finish_queue[:0] = batch
                await asyncio.sleep(min(0.1 * 2**failures, 5))
                continue
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), code in zip(batch, codes):
                if not future.done():
                    future.set_result(code)

    # -- background duties ----------------------------------------------------------------------

    async def _lock_loop(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.lock_renew_time / 2000)
            if not self._running:
                continue
            pairs: list[Any] = []
            for job_id, running in list(self._running.items()):
                pairs += (job_id, running.token)
            try:
                lost = await self._redis.run(
                    "extend_locks", [self.key(_wire.META)], [self.key_prefix, self.lock_duration, *pairs]
                )
            except RedisUnavailableError as exc:
                self.emit("error", exc)
                continue
            for job_id in lost:
                self.emit("error", BullfastError(f"could not renew lock for job {job_id.decode()}"))
                self.emit("lockRenewalFailed", [job_id.decode()])

    async def check_stalled(self) -> list[str]:
        """One pass of the stalled-jobs check (the worker runs one at start and then every
        ``stalled_interval``); returns the ids moved back to wait."""
        ids = await self._redis.run(
            "stalled_check",
            [self.key(_wire.META)],
            [self.key_prefix, now_ms(), self.max_stalled_count, self.stalled_interval],
        )
        stalled = [job_id.decode() for job_id in ids]
        for job_id in stalled:
            self.emit("stalled", job_id, "active")
        return stalled

    async def _stalled_loop(self) -> None:
        while not self._closing:
            try:
                await self.check_stalled()
            except RedisUnavailableError as exc:
                self.emit("error", exc)
            await asyncio.sleep(self.stalled_interval / 1000)

    # -- progress reported by jobs -------------------------------------------------------------

    def _job_progressed(self, job: Job, progress: Any) -> None:
        self.emit("progress", job, progress)

    # -- manual processing (BullMQ's getNextJob / moveToCompleted / moveToFailed) -------------

    async def get_next_job(self, token: str, block: bool = True) -> Job | None:
        """Take one job with the given lock token (BullMQ's manual API); None if none came
        within ``drain_delay`` (or at once with ``block=False``)."""
        deadline = time.monotonic() + (self.drain_delay if block else 0)
        while True:
            jobs, _, next_due = await self._move_to_active(1, token=token)
            if jobs:
                return jobs[0]
            if time.monotonic() >= deadline:
                return None
            await self._wait_for_work(next_due)

    async def start_stalled_check_timer(self) -> None:
        self._background.append(asyncio.get_running_loop().create_task(self._stalled_loop()))

    async def rate_limit(self, expire_ms: int) -> None:
        """Rate-limit the whole queue for ``expire_ms`` (then raise RateLimitError in the
        processor to send the current job back to wait)."""
        await self.client.set(self.key(_wire.LIMITER), 9007199254740991, px=int(expire_ms))


__all__ = ["Worker", "Processor"]
