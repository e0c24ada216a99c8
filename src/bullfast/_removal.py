"""Removing a parent with many children, or many of its children, in bounded steps.

Removing one job from a queue list (wait, paused) costs an LREM, which reads the whole list;
removing N children of a fan-out that way, in one script, reads the list N times: 10,000
children held Redis for seconds, 30,000 made it answer BUSY to every other client. Here the
work is cut into script calls of bounded length, each atomic and each safe to run again:

* ``remove_children`` takes one page of one of the parent's child groups and removes the
  children that are in a sorted-set state (delayed, prioritized, waiting-children, finished);
* for the children in a list it names their queue, and ``sweep_children`` walks that queue's
  wait and paused lists once, a window per call, removing every child it meets; then the page
  scan starts over, so nothing the walk missed is left.

A job with at most :data:`ONE_CALL_CHILDREN` direct children is still removed in one call, as
BullMQ does. A bigger one is first taken out of its state (so that removing its last pending
child cannot release it to a worker), then its children go, then the job itself. Children of a
child (a fan-out item with children of its own) go with that child, in its call.

Events differ from BullMQ's there, on purpose: BullMQ (and the one-call path) releases a
waiting-children parent as its last pending child goes, so listeners see ``waiting`` (prev
waiting-children) then ``removed`` (prev wait); a bigger parent is never released, and its one
event is ``removed`` (prev waiting-children), and so is each of its children that waits for
children of its own (taken out of its state with the page). Redis is left the same either way.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import _wire
from ._connection import RedisConnection
from .errors import server_error

# One LREM per child in a list: kept to parents small enough for that to stay short.
ONE_CALL_CHILDREN = 100
# Children examined per remove_children call and list entries per sweep_children call: a
# removed job costs ~30 us of script time (about 20 Redis commands, with its 'removed' event),
# so a call stays under ~10 ms. The lock check only reads, but reads each child's sub-tree:
# a page of 1,000 children of 20 each took 39 ms.
PAGE = 200
SWEEP_WINDOW = 250
CHECK_PAGE = 200
# Jobs a remove_children call removes at most, counting each child's own children (~10-20 ms
# of script time): a page of 200 children of 20 each was one call of 342 ms.
JOB_BUDGET = 250

PENDING = ("pending",)
ALL_GROUPS = ("pending", "processed", "ignored", "failed")


async def _sweep(redis: RedisConnection, queue_prefix: str, parent_key: str, which: str) -> int:
    removed = 0
    for state in (_wire.WAIT, _wire.PAUSED):
        start = 0
        while start >= 0:
            start, n = await redis.run(
                "sweep_children",
                [queue_prefix + state],
                [queue_prefix, parent_key, which, start, SWEEP_WINDOW, state, JOB_BUDGET],
            )
            removed += int(n)
    return removed


async def remove_children(
    redis: RedisConnection, parent_key: str, groups: Sequence[str], unprocessed: bool = False
) -> tuple[int, int]:
    """Remove the children of ``parent_key`` in ``groups`` that no worker holds; returns
    (removed, held by a worker and left). ``unprocessed``: as BullMQ's
    removeUnprocessedChildren, a failed child stays, and so do the finished children of those
    removed (see removeChildrenOf in lua/include/remove.lua)."""
    which = "unprocessed" if unprocessed else "pending" if tuple(groups) == PENDING else "all"
    mode = "unprocessed" if unprocessed else "remove"
    swept: set[str] = set()
    removed = held = 0
    for group in groups:
        cursor: bytes | int = 0
        held_here = 0
        while True:
            cursor, n, h, to_sweep, partial = await redis.run(
                "remove_children", [parent_key], [group, cursor, PAGE, mode, JOB_BUDGET, *sorted(swept)]
            )
            removed += int(n)
            held_here += int(h)
            if to_sweep:
                queue_prefix = to_sweep.decode()
                removed += await _sweep(redis, queue_prefix, parent_key, which)
                swept.add(queue_prefix)
                cursor, held_here = 0, 0  # again from the start: what the walk missed is found
                continue
            if int(partial):
                continue  # the same page again, for the rest of it
            if int(cursor) == 0:
                break
        held += held_here
    return removed, held


async def any_child_held(redis: RedisConnection, parent_key: str) -> bool:
    """Whether a worker holds one of the parent's pending children (or one of theirs); reads
    only, a page per call."""
    cursor: bytes | int = 0
    while True:
        cursor, _, held, _, _ = await redis.run(
            "remove_children", [parent_key], ["pending", cursor, CHECK_PAGE, "check", JOB_BUDGET]
        )
        if int(held):
            return True
        if int(cursor) == 0:
            return False


async def remove_job(redis: RedisConnection, queue_prefix: str, job_id: str, with_children: bool) -> bool:
    """job.remove(): False if the job, or (checked before anything is removed) one of its
    pending children, is held by a worker. A child a worker takes while a big parent's
    children are being removed is left to finish (its parent is gone by then)."""
    key = queue_prefix + job_id
    args = [queue_prefix, job_id, "1" if with_children else "0"]
    result = int(await redis.run("remove_job", [key], [*args, ONE_CALL_CHILDREN, ""]))
    if result < 0:
        raise server_error(result, job_id, "removeJob")
    if result != 2:
        return bool(result)
    if await any_child_held(redis, key):
        return False
    if not int(await redis.run("remove_job", [key], [*args, "", "detach"])):
        return False
    await remove_children(redis, key, ALL_GROUPS)
    return bool(int(await redis.run("remove_job", [key], [*args, "", "finish"])))
