"""Writing a plan to Redis: the one add path of Queue.add, Queue.add_bulk and the flows.

A plan that fits one call of ``add_jobs`` is one EVALSHA (atomic by itself). A larger plan is
cut into calls of at most ``chunk_size`` jobs, each short, sent inside one MULTI/EXEC: the first
call checks the operation's preconditions and, if one fails, leaves a guard that makes the
other calls of the transaction write nothing. Either way the operation is all or nothing.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

from redis.exceptions import OutOfMemoryError, ResponseError

from . import _scripts, _wire, core
from ._connection import _REDIRECT_ATTEMPTS, RedisConnection, is_noscript, is_redirect
from ._plan import Plan
from ._slots import hash_tag, key_slot
from .errors import BullfastError, CrossSlotError, RedisUnavailableError, script_error, server_error

DEFAULT_CHUNK_SIZE = 2000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def check_one_slot(plan: Plan, external: list[str]) -> None:
    """On a Redis Cluster one operation's keys must share a slot: every queue's prefix (or
    name) must carry the same hash tag. Refused before anything is written."""
    slots = {}
    for qp in plan.queue_prefixes:
        tag = hash_tag(qp + "x")
        if tag == qp + "x":
            raise CrossSlotError(
                f"queue {qp[:-1]!r} has no hash tag: on Redis Cluster use a prefix like '{{bull}}' "
                "so that every key of a queue (and of a flow's queues) is in one slot"
            )
        slots[key_slot(qp + "x")] = qp[:-1]
    for key in external:
        slots.setdefault(key_slot(key), key)
    if len(slots) > 1:
        raise CrossSlotError(
            "on Redis Cluster the keys of one flow must share a hash slot; these are in different "
            f"slots: {', '.join(sorted(slots.values()))} (give every queue the same hash-tagged prefix)"
        )


_QUEUE_KEY_TYPES = (
    (_wire.WAIT, "list"), (_wire.DELAYED, "zset"), (_wire.PRIORITIZED, "zset"),
    (_wire.WAITING_CHILDREN, "zset"), (_wire.MARKER, "zset"), (_wire.EVENTS, "stream"),
    (_wire.META, "hash"), (_wire.ID_COUNTER, "string"), (_wire.PRIORITY_COUNTER, "string"),
)


def key_type_checks(queue_prefixes: Iterable[str], parent_keys: Iterable[str]) -> list[tuple[str, str, str]]:
    """add_jobs checks that the keys an add writes to, where they exist, are of the type it
    writes: the queues' keys, and each parent's hash and dependencies. Redis does not undo a
    script stopped half-way by a WRONGTYPE, so a foreign key must refuse the add (nothing
    written, WrongKeyTypeError) before its first write."""
    checks = [("T", qp + name, kind) for qp in queue_prefixes for name, kind in _QUEUE_KEY_TYPES]
    for key in parent_keys:
        checks += [("T", key, "hash"), ("T", f"{key}:{_wire.JOB_DEPENDENCIES}", "set")]
    return checks


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def path_of(plan: Plan, key: str, code: int = 0) -> str | None:
    """The input path of the node a refusal is about: the job whose key is ``key``, or the
    first root whose parent it is (first, for a missing parent). Only called on a refusal."""
    own = (i for i in range(len(plan)) if plan.ids[i] and plan.job_key(i) == key)
    child = (r for r in plan.roots if plan.opts_of[r].parent_key == key)
    for i in (child if code == _wire.ERR_PARENT_NOT_EXIST else own):
        return plan.path(i)
    for i in (own if code == _wire.ERR_PARENT_NOT_EXIST else child):
        return plan.path(i)
    return None


def is_out_of_memory(reply: Any) -> bool:
    """A script refused for maxmemory. Redis refuses only a script's first write (Redis 6.2:
    a write while the script has written nothing), so nothing of it was written. Redis 7
    replies -OOM; 6.2 wraps it in the script's error ("... @user_script:460: -OOM ...")."""
    if isinstance(reply, OutOfMemoryError):
        return True
    return isinstance(reply, ResponseError) and str(reply).startswith("Error running script") and ": -OOM " in str(reply)


def _results(reply: Any, what: str, plan: Plan) -> list[Any]:
    """The per-job results of one call, or the typed error of its refusal."""
    if is_out_of_memory(reply) or is_redirect(reply):
        # refused at its first write (maxmemory reached), or sent to a node that does not
        # serve its slot: nothing of it was written
        raise script_error(reply, what, "nothing was written")
    if isinstance(reply, Exception):
        raise script_error(reply, what, "what it wrote before the error stands (Redis does not undo a script)")
    code = int(reply[0])
    if code < 0:
        detail = _text(reply[1])
        subject = _text(reply[2]) if len(reply) > 2 else detail
        raise server_error(code, detail, what, path_of(plan, subject, code))
    if code == 1:
        return []
    return list(reply[1:])


async def _write_in_transaction(
    redis: RedisConnection,
    plan: Plan,
    script: _scripts.Script,
    chunk_size: int,
    flags: str,
    checks: list[tuple[str, str, str]],
    releases: list[tuple[str, str, str]],
    now: int,
    route_key: str,
    what: str,
) -> list[Any]:
    """A plan of more than one call: the calls in one MULTI/EXEC (see the module's doc), and
    their per-job results. (A function of its own: the names its generator reads would make
    every single add keep them in cells.)"""
    guard = f"{plan.queue_prefixes[plan.queue_of[0]]}bf:guard:{os.urandom(8).hex()}"
    n = len(plan)
    bounds = [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]

    def calls() -> Iterator[bytes]:
        last = len(bounds) - 1
        for k, (start, stop) in enumerate(bounds):
            directives = (checks if k == 0 else []) + (releases if k == last else [])
            call_flags = flags + ("G" if k == last else "")
            yield core.encode_add_call(plan, start, stop, script.sha, guard, call_flags, directives, now)

    redirects = 0
    for _ in range(5 + _REDIRECT_ATTEMPTS):
        try:
            replies = await redis.transaction(calls(), route_key, [script], what)
        except ResponseError as exc:  # MULTI/EXEC refused as a whole (out of memory, ...)
            if await redis.follow_redirect(exc, redirects):  # (a cluster resharding)
                redirects += 1
                continue
            raise script_error(exc, what, "nothing was written (Redis refused the transaction)") from exc
        # Every call of the transaction runs the same script: NOSCRIPT is all or nothing.
        if not is_noscript(replies[0]):
            break
        await redis.load(script, what)
    else:
        raise RedisUnavailableError(f"the script cache keeps being flushed; {what} could not run")
    results = []
    for reply in replies:
        results += _results(reply, what, plan)
    return results


async def write_plan(
    redis: RedisConnection,
    plan: Plan,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    reuse_existing: bool = False,
    what: str = "addJob",
    timestamp: int | None = None,
    before: list[tuple[str, str, str]] | None = None,
    after: list[tuple[str, str, str]] | None = None,
) -> list[str]:
    """Write every job of ``plan``; return the job ids in plan order (the server's answer for
    counter ids, deduplicated adds and re-added ids). ``before``: directives of add_jobs that
    apply once every check passed, before the jobs (a queue's meta); ``after``: ones that apply
    once every job is written (opening a fan-out)."""
    script = _scripts.get("add_jobs")
    now = now_ms() if timestamp is None else timestamp
    n = len(plan)
    route_key = plan.queue_prefixes[plan.queue_of[0]] + "meta"
    if redis.cluster:
        check_one_slot(plan, _external_parents(plan))
    unchecked, claimed = await _types_to_check(redis, plan.queue_prefixes)
    try:
        # (the call's parts are made and dropped in one expression: 10,000 adds waiting for
        # their replies would otherwise each keep their lists, which the GC walks again and again)
        if n <= chunk_size:
            packed = _encode_one_call(plan, script, now, *_call_parts(plan, reuse_existing, before, after, unchecked))
            try:
                reply = await redis.call_packed(packed, route_key, script, what)
            except ResponseError as exc:
                reply = exc
            results = _results(reply, what, plan)
        else:
            results = await _write_in_transaction(
                redis, plan, script, chunk_size, *_call_parts(plan, reuse_existing, before, after, unchecked),
                now, route_key, what,
            )
        redis.type_checked.update(unchecked)
    finally:
        for qp in claimed:
            redis.types_being_checked.pop(qp).set_result(None)

    if not plan.auto_ids:
        # a deduplicated flow root (only a leaf root may be) is answered by the id of the job
        # that keeps the deduplication id, as BullMQ's flow add answers
        for root in plan.roots:
            if plan.opts_of[root].dedup_json is None:
                continue
            answer = results[root]
            if isinstance(answer, int):
                raise server_error(answer, plan.parent_key(root) or plan.job_key(root), what, plan.path(root))
            plan.ids[root] = _text(answer)
        return plan.ids
    ids = [r.decode() if isinstance(r, bytes) else r for r in results]
    for i, r in enumerate(ids):
        if isinstance(r, int):
            raise server_error(r, plan.parent_key(i) or plan.job_key(i), what, plan.path(i))
    if len(ids) != n:
        raise BullfastError(f"add_jobs answered {len(ids)} ids for {n} jobs")
    return ids


def _external_parents(plan: Plan) -> list[str]:
    """The parents outside the plan, which must exist: checked first, so a missing one writes
    nothing. A parent the same add writes before the job that names it (add_bulk([parent,
    child])) is not outside, as BullMQ adds them one after the other."""
    named_parents = [(r, k) for r in plan.roots if (k := plan.opts_of[r].parent_key)]
    if not named_parents:
        return []
    n = len(plan)
    written_at: dict[str, int] = {}
    for i in range(n):
        if plan.ids[i]:
            written_at.setdefault(plan.job_key(i), i)  # an id given twice: its first add
    return sorted({k for r, k in named_parents if written_at.get(k, n) >= r})


def _call_parts(
    plan: Plan,
    reuse_existing: bool,
    before: list[tuple[str, str, str]] | None,
    after: list[tuple[str, str, str]] | None,
    unchecked: list[str],
) -> tuple[str, list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    """(flags, checks, releases) of the add_jobs calls of a plan (see add_jobs-1.lua); the
    key-type checks for the queues in ``unchecked``."""
    dedup_roots = not plan.auto_ids and any(plan.opts_of[r].dedup_json is not None for r in plan.roots)
    flags = "R" if plan.auto_ids or dedup_roots else ""
    external = _external_parents(plan)
    # the parents a plan makes have fresh keys, unless the caller named their ids; a queue's
    # keys are checked by the first add of this connection that writes to it
    named = [plan.job_key(i) for i in range(len(plan)) if plan.n_children[i] and plan.opts_of[i].job_id]
    if reuse_existing:
        flags += "D"
        releases = [("L", plan.job_key(i), "") for i in range(len(plan)) if plan.n_children[i]]
        releases += [("L", key, "") for key in external]
    else:
        releases = []
    releases += after or []
    checks = [("E", key, "") for key in external] + plan.checks + key_type_checks(unchecked, external + named)
    return flags, checks + (before or []), releases


def _encode_one_call(
    plan: Plan,
    script: _scripts.Script,
    now: int,
    flags: str,
    checks: list[tuple[str, str, str]],
    releases: list[tuple[str, str, str]],
) -> bytes:
    return core.encode_add_call(plan, 0, len(plan), script.sha, "", flags, checks + releases, now)


async def _types_to_check(redis: RedisConnection, queue_prefixes: list[str]) -> tuple[list[str], list[str]]:
    """The queues whose keys this add checks (see key_type_checks): those no add of this
    connection has checked yet; and those of them this add checks for the others. Adds made
    at once (a burst of 10,000) do not all check: the first does, and the others wait for it
    (a check costs Redis more than the add of a small job). If it did not succeed, they wait
    no more: each checks for itself, so that none waits for more than one other add."""
    unchecked = [qp for qp in queue_prefixes if qp not in redis.type_checked]
    checking = [redis.types_being_checked[qp] for qp in unchecked if qp in redis.types_being_checked]
    if checking:
        await asyncio.wait(checking)
        unchecked = [qp for qp in queue_prefixes if qp not in redis.type_checked]
    loop = asyncio.get_running_loop()
    claimed = [qp for qp in unchecked if qp not in redis.types_being_checked]
    for qp in claimed:
        redis.types_being_checked[qp] = loop.create_future()
    return unchecked, claimed
