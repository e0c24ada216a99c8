"""QueueEvents: the events of a queue, as written to its stream by bullfast or Node BullMQ.

    async with QueueEvents("reports", connection=url) as events:
        events.on("completed", lambda args, event_id: print(args["jobId"], args["returnvalue"]))
        async for event in events:          # or iterate: typed QueueEvent objects
            ...

The reader blocks on ``XREAD BLOCK`` from ``$`` (events from now on) or a given stream id.
``completed`` return values and ``progress`` data are JSON-decoded, ``delayed`` times are
numbers, as BullMQ's QueueEvents delivers them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import orjson

from . import _json, _wire
from ._compat import camel_aliases
from ._connection import (
    RedisConnection,
    blocking_connection,
    client_command_refused,
    connect_blocking,
    retry_delay,
)
from ._emitter import EventEmitter, running_loop
from .errors import BullfastError, RedisUnavailableError
from .options import constructor_options
from .queue import QueueBase

# The fields BullMQ's QueueEvents decodes, by event; every other field stays text, as there.
_JSON_FIELDS = {"progress": "data", "completed": "returnvalue"}
_NUMBER_FIELDS = {"delayed": "delay"}

# BullMQ's QueueEvents options (its opts dict), by our names
_OPTIONS = {
    "connection": "connection",
    "prefix": "prefix",
    "autorun": "autorun",
    "lastEventId": "last_event_id",
    "blockingTimeout": "blocking_timeout",
    "bufferSize": "buffer_size",
}


@dataclass(frozen=True)
class QueueEvent:
    """One entry of a queue's events stream."""

    event: str
    id: str
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def job_id(self) -> str | None:
        return self.args.get("jobId")

    @property
    def returnvalue(self) -> Any:
        return self.args.get("returnvalue")

    @property
    def failed_reason(self) -> str | None:
        return self.args.get("failedReason")

    @property
    def prev(self) -> str | None:
        return self.args.get("prev")


def decode_entry(entry_id: bytes, fields: Mapping[bytes, bytes]) -> QueueEvent:
    args: dict[str, Any] = {k.decode(): v.decode("utf-8", "replace") for k, v in fields.items()}
    event = args.pop("event", "")
    json_field = _JSON_FIELDS.get(event)
    if json_field in args:
        try:
            args[json_field] = _json.loads(args[json_field])
        except orjson.JSONDecodeError:
            pass  # left as text
    number_field = _NUMBER_FIELDS.get(event)
    if number_field in args:
        try:
            args[number_field] = int(args[number_field])
        except ValueError:
            try:  # a custom backoff may give a fraction of a millisecond (Node's Number())
                args[number_field] = float(args[number_field])
            except ValueError:
                pass
    return QueueEvent(event, entry_id.decode(), args)


@camel_aliases(attributes=("qualified_name",))
class QueueEvents(QueueBase, EventEmitter):
    """Reads a queue's events. Listeners: ``on(event, callback(args, event_id))`` where
    ``args`` is BullMQ's dict (``{"jobId": ..., "returnvalue": ...}``), ``on("drained",
    callback(event_id))``, ``on("completed:<job id>", ...)`` for one job, and ``on("*",
    callback(event))`` for every :class:`QueueEvent`. ``async for event in queue_events``
    yields them too, from the start (up to ``buffer_size`` unread; ``dropped`` counts what was
    lost beyond). Starts reading at once unless ``autorun=False``."""

    def __init__(
        self,
        name: str,
        opts: Mapping[str, Any] | None = None,
        *,
        connection: Any = None,
        prefix: str | None = None,
        last_event_id: str = "$",
        blocking_timeout: int = 10000,
        autorun: bool = True,
        buffer_size: int = 10000,
    ) -> None:
        self.opts = dict(opts or {})
        given = constructor_options("queue events", opts, _OPTIONS)
        QueueBase.__init__(
            self,
            name,
            connection=connection if connection is not None else given.get("connection"),
            prefix=prefix or given.get("prefix"),
        )
        EventEmitter.__init__(self)

        def pick(key: str, keyword: Any, default: Any) -> Any:
            # a keyword given wins over BullMQ's opts dict, as for Worker (one left at its
            # default cannot be told from one not given: the dict's value then)
            return keyword if keyword != default else given.get(key, default)

        self.last_event_id = pick("last_event_id", last_event_id, "$")
        self.blocking_timeout = int(pick("blocking_timeout", blocking_timeout, 10000))
        buffer_size = int(pick("buffer_size", buffer_size, 10000))
        autorun = bool(pick("autorun", autorun, True))
        # the blocking connection (no socket timeout: it outlives the XREAD BLOCK timeout),
        # named as BullMQ names a QueueEvents' (its getQueueEvents, ours); made when reading starts
        self._reader: RedisConnection | None = None
        self._task: asyncio.Task[Any] | None = None
        self._closing = False
        self._closed = False
        # what `async for` will yield: events are kept from the start (a replay from
        # last_event_id included), the oldest dropped beyond buffer_size
        self._buffer: deque[QueueEvent] = deque(maxlen=buffer_size)
        self._buffered = asyncio.Event()
        self.dropped = 0
        self._started = asyncio.Event()
        if autorun:
            self.start()

    @property
    def running(self) -> bool:
        """True while the reader is reading the stream."""
        return self._task is not None and not self._task.done()

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has returned."""
        return self._closed

    def start(self) -> asyncio.Task[Any]:
        if self._task is None:
            self._task = running_loop(f"QueueEvents({self.name!r}) starts at once").create_task(self._consume())
        return self._task

    async def run(self) -> None:
        """Read events until :meth:`close` (then return), as BullMQ's ``run()``; raises if the
        reader is already running (it starts at creation unless ``autorun=False``)."""
        if self._closing:
            return
        if self._task is not None:
            raise BullfastError("Queue Events is already running.")
        task = self.start()
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            task.cancel()  # the caller gave up: so does the reader
            raise
        if not task.cancelled():
            task.result()  # (close() cancels the reader: that ends run() normally)

    async def wait_until_ready(self) -> None:
        """Until the reader has fixed its starting point (events from then on are seen)."""
        self.start()
        await self._started.wait()

    async def _consume(self) -> None:
        key = self.key(_wire.EVENTS)
        last = self.last_event_id
        failures = 0
        # a Redis that cannot be reached at start is retried like one lost later (with an
        # 'error' event each time), and wait_until_ready waits for it, as BullMQ's does
        while self._reader is None:
            try:
                if last == "$":
                    # pin "now" to a concrete id, so no event is lost between two XREADs
                    newest = await self._redis.commands.xrevrange(key, count=1)
                    last = newest[0][0].decode() if newest else "0-0"
                self._reader, _ = await connect_blocking(
                    self._redis.client, self.client_name(_wire.QUEUE_EVENTS_SUFFIX), 5.0
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                self.emit("error", RedisUnavailableError(f"starting to read events of {self.name!r}: {exc}"))
                await asyncio.sleep(retry_delay(failures, 0.1, 5.0))
        failures = 0
        self._started.set()
        while not self._closing:
            try:
                reply = await self._reader.client.xread({key: last}, block=self.blocking_timeout, count=1000)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if client_command_refused(exc):  # the server refuses CLIENT SETNAME: unnamed
                    await self._reader.close()
                    self._reader = blocking_connection(self._redis.client)
                    continue
                failures += 1
                self.emit("error", RedisUnavailableError(f"reading events of {self.name!r}: {exc}"))
                await asyncio.sleep(retry_delay(failures, 0.1, 5.0))
                continue
            for _stream, entries in reply or ():
                for entry_id, fields in entries:
                    last = entry_id.decode()
                    event = decode_entry(entry_id, fields)
                    if event.event == "drained":
                        self.emit("drained", event.id)
                    else:
                        self.emit(event.event, event.args, event.id)
                    if event.job_id is not None:
                        self.emit(f"{event.event}:{event.job_id}", event.args, event.id)
                    self.emit("*", event)
                    if len(self._buffer) == self._buffer.maxlen:
                        self.dropped += 1
                    self._buffer.append(event)
                    self._buffered.set()

    def __aiter__(self) -> AsyncIterator[QueueEvent]:
        self.start()
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[QueueEvent]:
        while True:
            while self._buffer:
                yield self._buffer.popleft()
            if self._closing:
                return
            self._buffered.clear()
            await self._buffered.wait()

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._buffered.set()
        await self._drain_listeners()
        if self._reader is not None:
            await self._reader.close()
        await self._redis.close()
        self._closed = True

    async def __aenter__(self) -> QueueEvents:
        await self.wait_until_ready()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
