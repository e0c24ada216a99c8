"""Ending an attempt: what happens to a job after its processor returned or raised.

BullMQ decides on the client whether a failed job is retried (attempts, backoff) and then runs
one server operation; bullfast builds the same decision as one entry of a ``finish_jobs`` call,
so a worker can end many jobs in one round trip (``Job.move_to_completed`` / ``move_to_failed``
send a single entry).
"""

from __future__ import annotations

import inspect
import math
import random
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import _scripts, core
from ._add import now_ms
from .errors import (
    DelayedError,
    RateLimitError,
    UnrecoverableError,
    WaitingChildrenError,
    WaitingError,
)

if TYPE_CHECKING:
    from ._connection import RedisConnection
    from .job import Job

RATE_LIMIT_MESSAGE = "bullmq:rateLimitExceeded"
BackoffStrategy = Callable[[int, str, BaseException, "Job"], Any]
KEEP_ALL = "-1||"


def keep_spec(value: Any, fallback: Any = None) -> str:
    """removeOnComplete / removeOnFail -> "count|age|limit" for the script (protocol 7.7)."""
    if value is None:
        value = fallback
    if value is None or value is False:
        return KEEP_ALL
    if value is True:
        return "0||"
    if isinstance(value, (int, float)):
        return f"{int(value)}||"
    if isinstance(value, Mapping):
        count = value.get("count")
        age = value.get("age")
        limit = value.get("limit")
        return "|".join((
            str(-1 if count is None else int(count)),
            "" if age is None else _seconds(age),
            "" if limit is None else str(int(limit)),
        ))
    return KEEP_ALL


def _seconds(age: Any) -> str:
    """An age in seconds as the script reads it: a fraction kept, as BullMQ keeps it (``{age:
    0.9}`` cut to 0 would remove the job the moment it finished)."""
    age = float(age)
    if not math.isfinite(age):
        raise ValueError(f"a retention age must be a finite number of seconds, not {age!r}")
    return str(int(age)) if age.is_integer() else repr(age)


class _UnknownBackoff(Exception):
    """A custom backoff type and no strategy to compute it."""


async def backoff_delay(job: Job, err: BaseException, strategy: BackoffStrategy | None) -> int | None:
    """Milliseconds to wait before the next attempt, 0 for at once, None for no retry."""
    backoff = job.opts.get("backoff")
    if backoff is None:
        return 0
    if isinstance(backoff, (int, float)):
        backoff = {"type": "fixed", "delay": backoff}
    kind = backoff.get("type")
    delay = backoff.get("delay") or 0
    jitter = backoff.get("jitter") or 0
    n = job.attempts_made + 1
    if kind == "fixed":
        base = float(delay)
    elif kind == "exponential":
        # (the exponent bounded: past 2**1023 a float overflows; 2**64 ms is ages anyway)
        base = float(round(2 ** min(n - 1, 64) * delay))
    elif strategy is not None:
        result = strategy(n, str(kind), err, job)
        if inspect.isawaitable(result):
            result = await result
        if result is None:
            return 0
        result = int(result)
        return None if result == -1 else result
    else:
        raise _UnknownBackoff(f"unknown backoff strategy {kind!r}: give the Worker a backoff_strategy")
    if 0 < jitter <= 1:
        return math.floor(random.random() * base * jitter + base * (1 - jitter))
    return int(base)


def stacktrace_of(job: Job, err: BaseException) -> bytes:
    lines = list(job.stacktrace) + ["".join(traceback.format_exception(err)).rstrip()]
    limit = job.opts.get("stackTraceLimit")
    if limit is not None:
        lines = lines[-int(limit) :] if int(limit) > 0 else []
    job.stacktrace = lines
    return core.encode_value(lines)  # (text with lone surrogates written as JavaScript writes it)


def reason_of(err: BaseException) -> str:
    return str(err) or type(err).__name__


def completion_entry(job: Job, token: str, value: bytes, keep_fallback: Any) -> list[Any]:
    keep = keep_spec(job.opts.get("removeOnComplete"), keep_fallback)
    return [job.id, token, "c", value, "", keep, job.opts.get("attempts") or 0, "", now_ms()]


async def failure_entry(
    job: Job,
    token: str,
    err: BaseException,
    *,
    keep_fallback: Any = None,
    strategy: BackoffStrategy | None = None,
    max_started_attempts: int | None = None,
) -> list[Any] | None:
    """The entry that ends this failed attempt: retry now ('r'), later ('d'), back to wait
    because of a rate limit ('w'), or fail for good ('f'). None when the processor already
    moved the job itself (DelayedError, WaitingChildrenError, WaitingError). Options stored
    with the wrong types (by another client) fail the job for good, saying why."""
    try:
        return await _failure_entry(job, token, err, keep_fallback, strategy, max_started_attempts)
    except (TypeError, ValueError, AttributeError) as exc:
        reason = f"{reason_of(err)} (and the job's options are invalid: {exc})"
        job.failed_reason = reason
        return [job.id, token, "f", reason, core.encode_value([reason]), KEEP_ALL, 0, "", now_ms()]


async def _failure_entry(
    job: Job,
    token: str,
    err: BaseException,
    keep_fallback: Any,
    strategy: BackoffStrategy | None,
    max_started_attempts: int | None,
) -> list[Any] | None:
    if isinstance(err, RateLimitError) or str(err) == RATE_LIMIT_MESSAGE:
        return [job.id, token, "w", "", "", "", 0, "", now_ms()]
    if isinstance(err, (DelayedError, WaitingChildrenError, WaitingError)):
        return None
    attempts = int(job.opts.get("attempts") or 0)
    reason = reason_of(err)
    retry = (
        job.attempts_made + 1 < attempts
        and not isinstance(err, UnrecoverableError)
        and not job.discarded
        and not (max_started_attempts and max_started_attempts <= job.attempts_started)  # 0: no limit
    )
    delay: int | None = None
    if retry:
        try:
            delay = await backoff_delay(job, err, strategy)
        # the job fails for good, saying why it was not retried (Node's worker reports the
        # missing strategy as an 'error' and leaves the job active until the stalled check)
        except UnrecoverableError as exc:  # the strategy's verdict
            reason, delay = str(exc), None
        except _UnknownBackoff as exc:
            reason, delay = f"{reason} (not retried: {exc})", None
        except Exception as exc:  # a custom strategy that raised
            reason, delay = f"{reason} (not retried: the backoff strategy raised {reason_of(exc)})", None
    stack = stacktrace_of(job, err)
    job.failed_reason = reason
    if retry and delay is not None:
        if delay:
            return [job.id, token, "d", reason, stack, "", attempts, max(delay, 0), now_ms()]
        return [job.id, token, "r", reason, stack, "", attempts, "1" if job.opts.get("lifo") else "", now_ms()]
    keep = keep_spec(job.opts.get("removeOnFail"), keep_fallback)
    return [job.id, token, "f", reason, stack, keep, attempts, "", now_ms()]


NO_FETCH = ("0", 0, "", "", "", 0)

# BullMQ's command for each way an attempt ends (named in the messages of refusals)
COMMAND_OF_ACTION = {
    "c": "moveToFinished", "f": "moveToFinished", "r": "retryJob", "d": "moveToDelayed",
    "D": "moveToDelayed", "w": "moveJobFromActiveToWait",
}


async def take_jobs(
    redis: RedisConnection, key_prefix: str, now: int, token: str, lock_duration: int,
    limiter: Mapping[str, Any] | None, worker_name: str | None, n: int,
) -> list[Any]:
    """One ``move_to_active`` call: up to n jobs locked with ``token``; its reply
    (``[taken, rate_limit_ttl, next_delayed_due, dropped ids, jobs]``, as ``run_entries``'s fetch)."""
    limiter = limiter or {}
    reply: list[Any] = await redis.run(
        "move_to_active",
        [key_prefix + "meta"],
        [key_prefix, now, token, lock_duration, limiter.get("max", ""), limiter.get("duration", ""),
         worker_name or "", n],
    )
    return reply


async def run_entries(
    redis: RedisConnection,
    key_prefix: str,
    entries: Sequence[Sequence[Any]],
    now: int,
    fetch_next: bool,
    fetch: Sequence[Any] = NO_FETCH,
    metrics_points: int | str = "",
) -> tuple[list[int], list[Any]]:
    """One ``finish_jobs`` call: the code of every entry, and what the fetch of new jobs
    answered (``[taken, rate_limit_ttl, next_delayed_due, dropped ids, jobs]``, ``jobs`` only
    when some were taken: ``[id, hash, ...]`` packed as MessagePack, for
    ``core.unpack_string_arrays``).

    ``fetch`` = (lock token of the jobs taken, lock duration, limiter max, limiter duration,
    worker name, n); ``metrics_points``: the worker's ``metrics={"maxDataPoints": n}`` (BullMQ's
    metrics of finished jobs are collected), or '' for none."""
    script = _scripts.get("finish_jobs")
    meta = key_prefix + "meta"
    args: list[Any] = [b"EVALSHA", script.sha, 1, meta, key_prefix, now, "1" if fetch_next else "0", *fetch,
                       metrics_points]
    for entry in entries:
        if entry[2] == "c":  # a completion has no stacktrace, attempts or extra to send
            args.extend((entry[0], entry[1], "c", entry[3], entry[5], entry[8]))
        else:
            args.extend(entry)
    # encoded by the core: redis-py's argument packing cost more client CPU than the job itself
    what = "finish_jobs" if entries else "finish_jobs (fetching jobs)"
    reply = await redis.call_packed(core.pack_command(args), meta, script, what)
    n = len(entries)
    return [int(c) for c in reply[:n]], reply[n:]
