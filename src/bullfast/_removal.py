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

A job with at most :data:`ONE_CALL_CHILDREN` direct children and :data:`ONE_CALL_JOBS`
descendants is still removed in one call, as BullMQ does. A bigger one is first taken out of its
state (so that removing its last pending child cannot release it to a worker), then its children
go, then the job itself. A child met on a page goes with its own descendants in that call, unless
they are more than :data:`ONE_CALL_JOBS` (the reduce step under a map-reduce root, with 100,000
children): that child is removed the same way in steps of its own, and the page goes on after it.
Counting descendants stops at the limit, so it costs a call little however big the tree is.

Events differ from BullMQ's there, on purpose: BullMQ (and the one-call path) releases a
waiting-children parent as its last pending child goes, so listeners see ``waiting`` (prev
waiting-children) then ``removed`` (prev wait); a bigger parent is never released, and its one
event is ``removed`` (prev waiting-children), and so is each of its children that waits for
children of its own (taken out of its state with the page). Redis is left the same either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
# Jobs a remove_children call removes at most, counting each child's descendants (~10-20 ms
# of script time): a page of 200 children of 20 each was one call of 342 ms.
JOB_BUDGET = 250
# Descendants one call removes with a job or a child at most (~30 ms of script time): a child
# of 20,000 children was one call of 1.3 s, and 100,000 would make Redis answer BUSY.
ONE_CALL_JOBS = 1000

# how a remove_children call ended its page (see lua/remove_children-1.lua)
_PAGE_EARLY, _BIG_CHILD, _HELD = 1, 2, 3  # (0: the page is done)

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
                [queue_prefix, parent_key, which, start, SWEEP_WINDOW, state, JOB_BUDGET, ONE_CALL_JOBS],
            )
            removed += int(n)
    return removed


class _Walk:
    """The removal of one job's children, group by group and page by page, in a mode of
    remove_children-1.lua; ``detached``: the (queue prefix, id) of a big child taken out of its
    state, removed itself at the end."""

    __slots__ = ("key", "groups", "mode", "detached", "group", "cursor", "swept", "leave", "held_here")

    def __init__(self, key: str, groups: Sequence[str], mode: str, detached: tuple[str, str] | None = None) -> None:
        self.key = key
        self.groups = tuple(groups)
        self.mode = mode
        self.detached = detached
        self.group = 0
        self.cursor: bytes | int = 0
        self.swept: set[str] = set()
        self.leave: list[str] = []  # big children left: a worker holds one of their descendants
        self.held_here = 0


async def remove_children(
    redis: RedisConnection, parent_key: str, groups: Sequence[str], unprocessed: bool = False
) -> tuple[int, int]:
    """Remove the children of ``parent_key`` in ``groups`` that no worker holds; returns how
    many of them were removed and how many a worker holds (left). ``unprocessed``: as BullMQ's
    removeUnprocessedChildren, a failed child stays, and so do the finished children of those
    removed (see removeChildrenOf in lua/include/remove.lua)."""
    removed = held = 0
    # a stack, not recursion: a chain thousands deep has a big child at each of its levels
    walks = [_Walk(parent_key, groups, "unprocessed" if unprocessed else "remove")]
    while walks:
        walk = walks[-1]
        top = len(walks) == 1  # (counts are of the parent's own children)
        if walk.group == len(walk.groups):
            walks.pop()
            if walk.detached is not None:
                gone = await _remove_detached(redis, *walk.detached, held_too=walk.mode == "purge")
                removed += gone if len(walks) == 1 else 0
            continue
        group, mode = walk.groups[walk.group], walk.mode
        reply = await redis.run(
            "remove_children",
            [walk.key],
            [group, walk.cursor, PAGE, mode, JOB_BUDGET, ONE_CALL_JOBS, "", len(walk.swept), *sorted(walk.swept), *walk.leave],
        )
        cursor, n, h, to_sweep, ended = reply[:5]
        removed += int(n) if top else 0
        walk.held_here += int(h)
        if to_sweep:
            queue_prefix = to_sweep.decode()
            which = mode if mode in ("unprocessed", "purge") else "pending" if walk.groups == PENDING else "all"
            n = await _sweep(redis, queue_prefix, walk.key, which)
            removed += n if top else 0
            walk.swept.add(queue_prefix)
            walk.cursor, walk.held_here = 0, 0  # again from the start: what the walk missed is found
            continue
        if int(ended) == _BIG_CHILD:
            child_prefix, child_id = reply[6].decode(), reply[7].decode()
            child_key = child_prefix + child_id
            # its own lock was checked, as removeJob checks a pending child's tree; a finished
            # child goes with its whole sub-tree, a running job in it too, as in BullMQ
            if mode == "remove" and group != "pending":
                mode = "purge"
            held_below = mode == "remove" and await any_child_held(redis, child_key)
            if held_below or not await _detach(redis, child_prefix, child_id, held_too=mode == "purge"):
                walk.leave.append(child_key)  # (a worker holds it, or one of its descendants)
            else:
                groups_below = PENDING if mode == "unprocessed" else ALL_GROUPS
                walks.append(_Walk(child_key, groups_below, mode, (child_prefix, child_id)))
            continue
        if int(ended) == _PAGE_EARLY:
            continue  # the same page again, for the rest of it
        walk.cursor = cursor
        if int(cursor) == 0:
            held += walk.held_here if top else 0
            walk.held_here = 0
            walk.group += 1
    return removed, held


async def any_child_held(redis: RedisConnection, parent_key: str) -> bool:
    """Whether a worker holds one of the parent's pending children (or one of theirs); reads
    only, a page per call, a big child's own children in calls of their own."""
    # job key, page cursor, the child of the page after which to go on (b"": its start)
    walks: list[list[Any]] = [[parent_key, 0, b""]]
    while walks:
        walk = walks[-1]
        key, cursor, after = walk
        reply = await redis.run(
            "remove_children", [key], ["pending", cursor, CHECK_PAGE, "check", JOB_BUDGET, ONE_CALL_JOBS, after, 0]
        )
        next_cursor, ended, last = reply[0], int(reply[4]), reply[5]
        if ended == _HELD:
            return True
        if ended == _BIG_CHILD:
            walk[2] = last  # on after it, once its own children are looked at
            walks.append([reply[6].decode() + reply[7].decode(), 0, b""])
        elif ended == _PAGE_EARLY:
            walk[2] = last
        elif int(next_cursor) == 0:
            walks.pop()
        else:
            walk[1], walk[2] = next_cursor, b""
    return False


async def _detach(redis: RedisConnection, queue_prefix: str, job_id: str, held_too: bool = False) -> bool:
    """Take a job out of its state before its children go; False if a worker holds it (unless
    ``held_too``)."""
    args = [queue_prefix, job_id, "1", "", "detach", "1" if held_too else "0"]
    return bool(int(await redis.run("remove_job", [queue_prefix + job_id], args)))


async def _remove_detached(redis: RedisConnection, queue_prefix: str, job_id: str, held_too: bool = False) -> int:
    args = [queue_prefix, job_id, "1", "", "finish", "1" if held_too else "0"]
    return int(await redis.run("remove_job", [queue_prefix + job_id], args))


async def remove_job(redis: RedisConnection, queue_prefix: str, job_id: str, with_children: bool) -> bool:
    """job.remove(): False if the job, or (checked before anything is removed) one of its
    pending children, is held by a worker. A child a worker takes while a big parent's
    children are being removed is left to finish (its parent is gone by then)."""
    key = queue_prefix + job_id
    args = [queue_prefix, job_id, "1" if with_children else "0"]
    result = int(await redis.run("remove_job", [key], [*args, ONE_CALL_CHILDREN, "", ONE_CALL_JOBS]))
    if result < 0:
        raise server_error(result, job_id, "removeJob")
    if result != 2:
        return bool(result)
    if await any_child_held(redis, key):
        return False
    if not await _detach(redis, queue_prefix, job_id):
        return False
    await remove_children(redis, key, ALL_GROUPS)
    return bool(await _remove_detached(redis, queue_prefix, job_id))
