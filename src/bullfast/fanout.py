"""Streaming fan-out: a parent whose children arrive from an iterable, in bounded chunks.

    async with producer.fan_out({"name": "reduce", "queue_name": "reduce"}) as fan:
        await fan.add_children({"name": "map", "queue_name": "map", "data": row} for row in rows)
    # leaving the block seals the fan-out: the parent runs once every child is done

Unlike ``FlowProducer.add`` (one transaction, all or nothing), a fan-out writes its children in
chunks, each one short atomic script call, so Redis keeps serving other clients however many
children there are, and client memory is bounded by the chunk size. Children may run while
later chunks are still being added. The parent holds a placeholder dependency
(``<parent key>:unsealed``) until :meth:`FanOut.seal`, so it cannot run early; Node BullMQ
workers see an ordinary parent with an ordinary dependencies set.

Each chunk also advances the parent's ``fanoutAdded`` counter, in the same atomic call and only
if the counter still has the value the producer expects: a producer that dies mid-stream
leaves a visibly unsealed parent (``fanout`` = ``open``) whose counter says exactly how many
items were written; :meth:`FlowProducer.resume_fan_out` continues from there (``skip=``) and
:meth:`FanOut.abort` gives up. Two producers cannot both write the same items.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import _removal, _scripts, core
from ._add import now_ms, write_plan
from ._connection import is_noscript
from .errors import BullfastError, InvalidFlowError, InvalidOptionError, server_error
from .job import Job

if TYPE_CHECKING:
    from .flow import FlowProducer

DEFAULT_FAN_OUT_CHUNK = 500
DEFAULT_WINDOW = 3


class FanOutClosedError(BullfastError):
    """The fan-out is sealed or aborted, or its parent stopped waiting (a child failed it), or
    another producer wrote to it meanwhile: nothing of the refused chunk was written."""


async def _batches(children: Iterable[Any] | AsyncIterable[Any], size: int, skip: int) -> AsyncIterator[list[Any]]:
    batch: list[Any] = []
    if isinstance(children, AsyncIterable):
        async for item in children:
            if skip:
                skip -= 1
                continue
            batch.append(item)
            if len(batch) >= size:
                yield batch
                batch = []
    else:
        for item in children:
            if skip:
                skip -= 1
                continue
            batch.append(item)
            if len(batch) >= size:
                yield batch
                batch = []
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
        self._producer = producer
        self._node = parent
        self._queues_options = queues_options
        self.chunk_size = chunk_size
        self.window = window
        self.job: Job | None = None
        self.added = 0  # items written so far (the parent's fanoutAdded)
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
        if fan.state != "open":
            raise FanOutClosedError(f"the fan-out of {job.key} is {fan.state}, not open")
        return fan

    async def refresh(self) -> None:
        """Read the fan-out's state and count back from Redis."""
        state, added = await self._producer.client.hmget(self.parent_key, "fanout", "fanoutAdded")
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
        first (to resume after a crash: ``skip=fan.added``). Returns how many were added."""
        if self.job is None:
            await self.open()
        script = _scripts.get("add_jobs")
        redis = self._producer._redis
        await redis.ensure_loaded([script])
        pending: deque[list[Any]] = deque()  # batches sent, reply not read yet (oldest first)
        sent = self.added  # the counter value after every batch sent so far
        written = 0

        async def settle() -> None:
            nonlocal written, sent
            batch = pending[0]
            reply = await redis._read(conn)
            if is_noscript(reply):
                # the script cache was flushed: nothing of this batch (nor of the ones after
                # it, refused for their counts) was written; send them all again
                rest = list(pending)
                pending.clear()
                for _ in rest[1:]:
                    await redis._read(conn)
                await redis.load(script)
                await self.refresh()
                sent = self.added
                for again in rest:
                    await conn.send_packed_command(self._encode(again, sent, queue_name), check_health=False)
                    sent += len(again)
                    pending.append(again)
                return
            pending.popleft()
            if isinstance(reply, Exception):
                raise reply
            code = int(reply[0])
            if code < 0:
                await self.refresh()
                raise FanOutClosedError(
                    f"fan-out of {self.parent_key} refused a chunk (code {code}): it is {self.state}, "
                    f"{self.added} items were written; nothing of this chunk was"
                )
            self.added += len(batch)
            written += len(batch)

        async with redis.borrow(self.parent_key, "fan-out add") as borrowed:
            conn = borrowed.conn
            async for batch in _batches(children, self.chunk_size, skip):
                packed = self._encode(batch, sent, queue_name)
                # a chunk on the wire may be written even if its reply is lost (resume knows)
                borrowed.sent = True
                await conn.send_packed_command(packed, check_health=False)
                sent += len(batch)
                pending.append(batch)
                while len(pending) >= self.window:
                    await settle()
            while pending:
                await settle()
            borrowed.clean = True
        return written

    def _encode(self, batch: list[Any], expected: int, queue_name: str | None) -> bytes:
        if queue_name is not None:
            batch = [b if ("queue_name" in b or "queueName" in b) else {**b, "queue_name": queue_name} for b in batch]
        plan = self._producer._plan(batch, self._queues_options)
        for r in plan.roots:
            if plan.opts_of[r].parent_key is not None:
                raise InvalidFlowError("a fan-out child cannot name another parent", plan.path(r))
            if plan.opts_of[r].dedup_json is not None:
                raise InvalidOptionError("deduplication and a parent cannot be used together", plan.path(r))
        assert self.job is not None
        plan.root_parent = (self.job.key, self.job.queue.qualified_name)
        checks = [("F", self.job.key, f"{expected}+{len(batch)}")]
        checks += [("N", plan.job_key(i), "") for i in range(len(plan)) if plan.opts_of[i].job_id]
        return core.encode_add_call(plan, 0, len(plan), _scripts.get("add_jobs").sha, "", "", checks, now_ms())

    # -- ending -------------------------------------------------------------------------------

    async def seal(self) -> None:
        """No more children: the parent runs once every child is done (at once if they are)."""
        await self._end("seal", "")
        self.state = "sealed"

    async def abort(self, remove: bool = False, reason: str = "fan-out aborted") -> None:
        """Give up: ``remove=True`` removes the parent and every child added; otherwise the
        parent fails (with ``reason``, by the next worker that takes it) and the children that
        are not running are removed.

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
            if self.state != "aborted":
                raise
        await _removal.remove_children(self._producer._redis, self.parent_key, _removal.PENDING)
        self.state = "aborted"

    async def _end(self, mode: str, reason: str) -> None:
        assert self.job is not None, "the fan-out is not open"
        reply = await self._producer._redis.run("fan_out_end", [self.parent_key], [mode, now_ms(), reason])
        code = int(reply[0])
        if code == -21:
            self.state = reply[1].decode()
            raise FanOutClosedError(f"the fan-out of {self.parent_key} is {self.state}, not open")
        if code < 0:
            raise server_error(code, str(self.job.id), "fanOutEnd")
        self.added = int(reply[1])

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

