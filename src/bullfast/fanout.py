"""Streaming fan-out: a parent whose children arrive from an iterable, in bounded chunks.

    async with producer.fan_out({"name": "reduce", "queue_name": "reduce"}) as fan:
        await fan.add_children({"name": "map", "queue_name": "map", "data": row} for row in rows)
    # leaving the block seals the fan-out: the parent runs once every child is done

Unlike ``FlowProducer.add`` (one transaction, all or nothing), a fan-out writes its children in
chunks of about ``chunk_size`` jobs (an item's sub-tree counted, and written whole), each one
short atomic script call, so Redis keeps serving other clients however many children there
are, and client memory is bounded by the chunk size. An item with a very large sub-tree can be
a fan-out of its own, whose parent names the outer parent (``opts.parent``). Children may run while
later chunks are still being added. The parent holds a placeholder dependency
(``<parent key>:unsealed``) until :meth:`FanOut.seal`, so it cannot run early; Node BullMQ
workers see an ordinary parent with an ordinary dependencies set.

Each chunk also advances the parent's ``fanoutAdded`` counter, in the same atomic call and only
if the counter still has the value the producer expects: a producer that dies mid-stream
leaves a visibly unsealed parent (``fanout`` = ``open``) whose counter says exactly how many
children were written; :meth:`FlowProducer.resume_fan_out` continues from there (``skip=``, or
sending items with job ids again: those already children are skipped) and :meth:`FanOut.abort`
gives up. Two producers cannot both write the same items: a chunk whose expected count another
producer moved on is refused whole. On a Redis Cluster a chunk whose keys would span slots is
refused before it is sent, and every chunk first checks the types of the keys it writes.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from . import _removal, _scripts, _wire, core
from ._add import check_one_slot, key_type_checks, now_ms, write_plan
from ._connection import is_noscript
from .errors import (
    BullfastError,
    InvalidFlowError,
    InvalidOptionError,
    JobExistsError,
    script_error,
    server_error,
)
from .job import Job
from .options import positive_int

if TYPE_CHECKING:
    from .flow import FlowProducer

DEFAULT_FAN_OUT_CHUNK = 250
DEFAULT_WINDOW = 3


class FanOutClosedError(BullfastError):
    """The fan-out is sealed or aborted, or its parent stopped waiting (a child failed it), or
    another producer wrote to it meanwhile: nothing of the refused chunk was written."""


def _node_count(item: Any) -> int:
    """Jobs in one streamed item: itself and every descendant (malformed items count 1; the
    planner says what is wrong with them)."""
    count = 0
    stack = [item]
    seen: set[int] = set()  # a node that is its own descendant: the planner says so
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        count += 1
        children = node.get("children") if isinstance(node, Mapping) else None
        if isinstance(children, (list, tuple)):
            stack.extend(children)
    return count


async def _batches(children: Iterable[Any] | AsyncIterable[Any], size: int, skip: int) -> AsyncIterator[list[Any]]:
    """The items in chunks of about ``size`` jobs: an item with children of its own counts
    with all of them (a chunk is one script call, whose length goes with the jobs it writes),
    and is never split (its sub-tree is written at once, so it alone may exceed ``size``)."""
    batch: list[Any] = []
    jobs = 0

    def take(item: Any) -> bool:
        nonlocal jobs
        batch.append(item)
        jobs += _node_count(item)
        return jobs >= size

    if isinstance(children, AsyncIterable):
        async for item in children:
            if skip:
                skip -= 1
                continue
            if take(item):
                yield batch
                batch, jobs = [], 0
    else:
        for item in children:
            if skip:
                skip -= 1
                continue
            if take(item):
                yield batch
                batch, jobs = [], 0
    if batch:
        yield batch


class FanOut:
    """A parent being fed children. Made by :meth:`FlowProducer.fan_out` (opened on ``async
    with`` or :meth:`open`) or :meth:`FlowProducer.resume_fan_out`."""

    def __init__(
        self,
        producer: FlowProducer,
        parent: Mapping[str, Any],
        queues_options: Mapping[str, Any] | None = None,
        *,
        chunk_size: int = DEFAULT_FAN_OUT_CHUNK,
        window: int = DEFAULT_WINDOW,
    ) -> None:
        for name, value in (("chunk_size", chunk_size), ("window", window)):
            positive_int("fan_out", name, value)
        self._producer = producer
        self._node = parent
        self._queues_options = queues_options
        self.chunk_size = chunk_size
        self.window = window
        self.job: Job | None = None
        self.added = 0  # items written so far (the parent's fanoutAdded)
        self.present = 0  # items sent again on resume and skipped: their job id was a child already
        self.state = "new"

    @property
    def parent_key(self) -> str:
        assert self.job is not None, "the fan-out is not open"
        return self.job.key

    # -- opening --------------------------------------------------------------------------------

    async def open(self) -> FanOut:
        """Create the parent (in waiting-children, holding the placeholder dependency)."""
        if self.job is not None:
            return self
        node = self._node
        if node.get("children"):
            raise InvalidFlowError("a fan-out parent gets its children from add_children(), not 'children'")
        plan = self._producer._plan([node], self._queues_options)
        plan.n_children[0] = 1  # it waits for children: the placeholder, then the stream
        if plan.opts_of[0].job_id is not None:
            plan.checks.append(("N", plan.job_key(0), ""))
        now = now_ms()
        await write_plan(
            self._producer._redis,
            plan,
            what="fanOut",
            timestamp=now,
            after=[("O", plan.job_key(0), "")],
        )
        self.job = self._producer._job_of(plan, 0, now)
        self.state = "open"
        return self

    @classmethod
    async def resume(cls, producer: FlowProducer, queue_name: str, job_id: str, prefix: str | None = None) -> FanOut:
        queue = producer._queue(prefix or producer.prefix, queue_name)
        job = await queue.get_job(job_id)
        if job is None:
            raise server_error(-1, job_id, "resumeFanOut")
        fan = cls(producer, {})
        fan.job = job
        await fan.refresh()
        if fan.state not in ("open", "aborting"):
            raise FanOutClosedError(f"the fan-out of {job.key} is {fan.state}, not open")
        return fan

    async def refresh(self) -> None:
        """Read the fan-out's state and count back from Redis."""
        state, added = await self._producer._redis.commands.hmget(self.parent_key, "fanout", "fanoutAdded")
        self.state = state.decode() if state else "none"
        self.added = int(added or 0)

    # -- adding -----------------------------------------------------------------------------

    async def add_children(
        self,
        children: Iterable[Mapping[str, Any]] | AsyncIterable[Mapping[str, Any]],
        *,
        queue_name: str | None = None,
        skip: int = 0,
    ) -> int:
        """Add the children (flow nodes; ``queue_name`` is the default queue of nodes that do
        not name one; a node may have children of its own). ``skip`` items are passed over
        first. Returns how many were added.

        An item whose ``job_id`` is already a child of this fan-out is skipped, and counted in
        :attr:`present`: after a crash the stream can be sent again from the start (or from
        any earlier point) and no child is added twice. Or, quicker, resume with
        ``skip=fan.added``: the fan-out counts the children written, so that many items are
        passed over unread. Either way the source must be deterministic: the same items in the
        same order, with the same job ids for a re-send (items without one would be added again).
        One child leaves no trace to be found by: one that failed with
        ``remove_dependency_on_failure`` and was removed by ``remove_on_fail``; sent again,
        it is added again. Resume with ``skip=fan.added`` where children may end so."""
        if self.job is None:
            await self.open()
        script = _scripts.get("add_jobs")
        redis = self._producer._redis
        await redis.ensure_loaded([script], "fanOut.addChildren")
        pending: deque[list[Any]] = deque()  # batches sent, reply not read yet (oldest first)
        sent = self.added  # the count expected after every batch sent so far
        written = 0

        async def send_again(batches: list[list[Any]]) -> None:
            # refused for their expected counts (or never run): nothing of them was written
            nonlocal sent
            await self.refresh()
            sent = self.added
            for again in batches:
                await conn.send_packed_command(self._encode(again, sent, queue_name), check_health=False)
                sent += len(again)
                pending.append(again)

        async def written_by(batch: list[Any], reply: Any) -> int:
            """Account for one chunk's reply (or raise its error); returns its items skipped
            as already present."""
            nonlocal written
            if isinstance(reply, ResponseError):
                await self.refresh()
                raise script_error(reply, f"a fan-out chunk of {self.parent_key}", f"{self.added} children are counted")
            code = int(reply[0])
            if code < 0:
                raise await self._refusal(code, reply[1].decode())
            present = int(reply[1])
            self.added += len(batch) - present
            self.present += present
            written += len(batch) - present
            return present

        async def settle() -> None:
            nonlocal sent
            batch = pending.popleft()
            reply = await redis._read(conn)
            if is_noscript(reply):
                # the script cache was flushed: nothing of this batch (nor of the ones after
                # it, refused for their counts) was written; send them all again
                rest = [batch, *pending]
                pending.clear()
                for _ in rest[1:]:
                    await redis._read(conn)
                await redis.load(script, "fanOut.addChildren")
                await send_again(rest)
                return
            present = await written_by(batch, reply)
            if present and not pending:
                sent -= present  # the next chunk expects the count as it is
            elif present:
                # the count moved on less than the batches sent after this one expect: they are
                # refused (-22), and sent again with the count as it is
                rest = list(pending)
                pending.clear()
                refused = []
                for later in rest:
                    reply = await redis._read(conn)
                    if isinstance(reply, list) and int(reply[0]) == _wire.ERR_FAN_OUT_MOVED_ON:
                        refused.append(later)
                    else:  # another producer moved the count just so: written after all
                        await written_by(later, reply)
                await send_again(refused)

        async with redis.borrow(self.parent_key, "fan-out add") as borrowed:
            conn = borrowed.conn
            try:
                async for batch in _batches(children, self.chunk_size, skip):
                    packed = self._encode(batch, sent, queue_name)
                    # a chunk on the wire may be written even if its reply is lost (resume knows)
                    borrowed.sent = True
                    await conn.send_packed_command(packed, check_health=False)
                    sent += len(batch)
                    pending.append(batch)
                    while len(pending) >= self.window:
                        await settle()
            except BaseException:
                # the source failed (or a chunk was refused, or the task was cancelled, or the
                # source raised KeyboardInterrupt): the chunks already sent stand, so their
                # replies are read before the error goes up, and `added` counts them (a resume
                # with skip=fan.added must not send them again); failing that, the count is
                # read afresh
                try:
                    while pending:
                        await settle()
                except Exception:
                    with contextlib.suppress(Exception):
                        await self.refresh()
                raise
            while pending:
                await settle()
            borrowed.clean = True
        return written

    async def _refusal(self, code: int, detail: str) -> BullfastError:
        """The error of a refused chunk (nothing of it was written)."""
        await self.refresh()
        where = f"the fan-out of {self.parent_key}"
        if code == _wire.ERR_JOB_EXISTS:
            other = await self._producer._redis.commands.hget(detail, "parentKey")
            owner = f"a child of {other.decode()}" if other else "a job without a parent"
            return JobExistsError(
                f"job {detail} already exists as {owner}, so it cannot be a child of {where}; "
                "nothing of this chunk was written", code
            )
        if code == _wire.ERR_FAN_OUT_MOVED_ON:
            return FanOutClosedError(
                f"another producer added to {where} meanwhile (it now counts {self.added} items): nothing of "
                "this chunk was written; to go on, resume_fan_out() and send the items again (with job ids, "
                "those already written are skipped)"
            )
        if code == _wire.ERR_FAN_OUT_NOT_OPEN:
            why = self.state if self.state != "open" else "open but its parent stopped waiting (a child failed it)"
            return FanOutClosedError(f"{where} is {why}: nothing of this chunk was written ({self.added} items are)")
        return server_error(code, detail, "fanOutAdd")

    def _encode(self, batch: list[Any], expected: int, queue_name: str | None) -> bytes:
        """The chunk call for ``batch`` when the fan-out counts ``expected`` children."""
        if queue_name is not None:
            batch = [b if ("queue_name" in b or "queueName" in b) else {**b, "queue_name": queue_name} for b in batch]
        plan = self._producer._plan(batch, self._queues_options)
        assert self.job is not None
        parent_key = self.job.key
        for r in plan.roots:
            if plan.opts_of[r].parent_key is not None:
                raise InvalidFlowError("a fan-out child cannot name another parent", plan.path(r))
            if plan.opts_of[r].dedup_json is not None:
                raise InvalidOptionError("deduplication and a parent cannot be used together", plan.path(r))
        if self._producer._redis.cluster:
            check_one_slot(plan, [parent_key])
        plan.root_parent = (parent_key, self.job.queue.qualified_name)
        checks = [("F", parent_key, f"{expected}+{len(batch)}")]
        checks += key_type_checks(plan.queue_prefixes, [parent_key])
        for i in range(len(plan)):
            if plan.opts_of[i].job_id:
                p = plan.parents[i]
                checks.append(("C", plan.job_key(i), plan.job_key(p) if p >= 0 else parent_key))
        return core.encode_add_call(plan, 0, len(plan), _scripts.get("add_jobs").sha, "", "", checks, now_ms())

    # -- ending -------------------------------------------------------------------------------

    async def seal(self) -> None:
        """No more children: the parent runs once every child is done (at once if they are).

        Raises :class:`~bullfast.errors.FanOutClosedError` (the fan-out sealed all the same) when
        a child's failure policy had already failed the parent or moved it on: it will not run
        as the end of this fan-out."""
        reply = await self._end("seal", "")
        self.state = "sealed"
        if len(reply) > 2 and int(reply[2]):
            raise FanOutClosedError(
                f"the fan-out of {self.parent_key} is sealed, but its parent had already stopped waiting for "
                "its children (a child's failure policy failed it or moved it on)"
            )

    async def abort(self, remove: bool = False, reason: str = "fan-out aborted") -> None:
        """Give up: the parent fails (with ``reason``, by the next worker that takes it) and
        the children that are not running are removed. ``remove=True`` removes the parent and
        every child added instead, as ``job.remove()`` does: refused with
        :class:`~bullfast.errors.JobLockedError`, nothing removed, while a child is running
        (abort() first, then remove once the running children have ended).

        However many children there are, this is a series of short script calls (see
        :mod:`bullfast._removal`), so Redis keeps serving other clients; if it is interrupted,
        calling ``abort`` again finishes the job (an aborted fan-out can be aborted again)."""
        assert self.job is not None, "the fan-out is not open"
        if remove:
            await self.job.remove()
            self.state = "removed"
            return
        try:
            await self._end("fail", reason)
        except FanOutClosedError:
            if self.state not in ("aborting", "aborted"):
                raise
        # the parent keeps waiting (for the placeholder) until its pending children are gone:
        # no worker can take it, or fail it and take its dependencies with it, meanwhile
        await _removal.remove_children(self._producer._redis, self.parent_key, _removal.PENDING)
        if self.state != "aborted":
            await self._end("release", reason)
        self.state = "aborted"

    async def _end(self, mode: str, reason: str) -> list[Any]:
        assert self.job is not None, "the fan-out is not open"
        reply: list[Any] = await self._producer._redis.run("fan_out_end", [self.parent_key], [mode, now_ms(), reason])
        code = int(reply[0])
        if code == _wire.ERR_FAN_OUT_NOT_OPEN:
            self.state = reply[1].decode()
            raise FanOutClosedError(f"the fan-out of {self.parent_key} is {self.state}, not open")
        if code < 0:
            raise server_error(code, str(self.job.id), "fanOutEnd")
        self.added = int(reply[1])
        return reply

    async def __aenter__(self) -> FanOut:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # on an error the fan-out stays open (visibly unsealed) for resume_fan_out or abort
        if exc_type is None and self.state == "open":
            await self.seal()

