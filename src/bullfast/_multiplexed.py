"""One Redis connection that concurrent calls share, as ioredis shares one for BullMQ.

Each call's command is written as it comes, together with the others made in the same pass
of the event loop, and the replies are given to the callers in the order the commands were
written (Redis answers one connection's commands in order). A thousand concurrent adds are
then a few writes and reads on one socket, not a thousand round trips on as many connections,
each of which had to be opened first.

Only for RESP2 connections, where nothing but the replies of what was sent arrives (no push
messages), and for commands that answer at once: blocking commands and transactions keep
connections of their own (see ``_connection.RedisConnection``).

Each call has its own reply timeout, counted from its write: the socket timeout, plus time in
proportion to the bytes Redis has to work through up to it. A call is given up on only when
its time is up *and* nothing came from Redis for a socket timeout: while replies keep coming
the connection is working through its queue. A call given up on keeps its place (its late
reply is dropped), and the connection takes no new calls (it is *retired*): it reads on for
the calls still waiting on it, and closes once none is. A connection that fails (closed,
reset) fails every call on it, saying whether each was written. At most ``_WRITE_BACKLOG``
bytes wait in the socket's buffer; the rest of a burst waits, unwritten, in our queue.
"""

from __future__ import annotations

import asyncio
import math
import select
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

try:
    import hiredis
except ImportError:  # pragma: no cover - redis[hiredis] is a dependency
    hiredis = None  # type: ignore[assignment]

READ_CHUNK = 1 << 16
# At most this much is handed to the socket's buffer at once; the rest waits in our queue until
# the buffer drains (asyncio's buffer is a bytearray from whose front every send is cut: 1 GB
# of queued adds made each send copy the rest, and the burst took seconds more).
_WRITE_BACKLOG = 1 << 22
# How long a reply may take beyond the socket timeout, per byte Redis has to work through up
# to the command (its own and those written before it, still unanswered): the EXEC of a big
# flow keeps Redis busy for about a second per 20 MB of arguments on the benchmark machine;
# this allows ten times that.
SECONDS_PER_BYTE_SENT = 1 / 2_000_000
_poll = getattr(select, "poll", None)


def socket_readable(writer: Any) -> bool | None:
    """Whether the connection's socket has bytes (or its end) to be read, asked of the socket
    itself, without the event loop; None where it cannot be asked."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return None
    try:
        if _poll is None:  # (no poll() on Windows; select's limit on descriptors is not its)
            return bool(select.select([sock], [], [], 0)[0])
        poller = _poll()
        poller.register(sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return None


def closed_by_server(conn: Any) -> bool:
    """Whether an idle connection was closed by the server. The event loop notes a close
    when it next polls; when it has not run since (a blocking call in the app, or the close
    came just now), the socket itself is asked: an idle RESP2 connection that can be read
    holds the end of the stream or bytes nobody asked for, and is not used either way."""
    reader = getattr(conn, "_reader", None)
    if reader is None:
        return False
    if reader.at_eof():
        return True
    writer = getattr(conn, "_writer", None)
    if writer is None or writer.get_extra_info("ssl_object") is not None:
        # (under TLS the socket also carries records that are not data, session tickets)
        return False
    readable = socket_readable(writer)
    return readable is None or readable


def answer_waiting(reader: Any, writer: Any) -> bool:
    """Whether bytes of a reply have arrived and wait to be read: in the stream's buffer (the
    loop took them off the socket) or on the socket itself."""
    return bool(getattr(reader, "_buffer", None)) or bool(socket_readable(writer))


def can_multiplex(conn: Any) -> bool:
    """A connected redis-py connection whose streams we can read ourselves: RESP2, with
    hiredis and ``asyncio.timeout_at`` (Python 3.11) at hand."""
    return (
        hiredis is not None
        and hasattr(asyncio, "timeout_at")
        and getattr(conn, "_reader", None) is not None
        and getattr(conn, "_writer", None) is not None
        and str(getattr(conn, "protocol", None) or 2) == "2"
    )


class Call:
    """One command's place in the connection's order: the command until it is written, its
    reply (a future), its size, when it is given up on (once written), and whether it was
    written before the connection failed."""

    __slots__ = ("packed", "reply", "size", "deadline", "written")

    def __init__(self, packed: bytes, reply: asyncio.Future[Any]) -> None:
        self.packed = packed
        self.reply = reply
        self.size = len(packed)
        self.deadline = math.inf
        self.written = False


class MultiplexedConnection:
    """A connected redis-py connection (RESP2), the task that reads its replies, and
    ``release``, called with the connection once it is closed (to give it back to its pool)."""

    def __init__(self, conn: Any, release: Callable[[Any], Awaitable[None]]) -> None:
        self.conn = conn
        self._release = release
        self._reader = conn._reader
        self._writer = conn._writer
        timeout = getattr(conn, "socket_timeout", None)
        self._base_timeout = math.inf if timeout is None else float(timeout)
        self._loop = asyncio.get_running_loop()
        self._unwritten: deque[Call] = deque()
        self._in_flight: deque[Call] = deque()
        self._in_flight_bytes = 0
        self._last_deadline = 0.0
        self._flush_due = False
        self._drainer: asyncio.Task[None] | None = None
        self._timer: asyncio.Timeout | None = None
        self._last_bytes = self._loop.time()  # when bytes last came from Redis
        self.failure: BaseException | None = None
        self.retired = False
        self._draining = False  # closing: no new calls, the ones taken are answered
        self.closed: asyncio.Future[None] = self._loop.create_future()  # done once closed
        self._closing: asyncio.Task[None] | None = None
        self._task = self._loop.create_task(self._read_replies())

    @property
    def usable(self) -> bool:
        """Takes new calls: not failed, not retired, not closing, and, when idle, not closed by
        the server meanwhile (asked of the socket: a command written into a closed connection
        would have an unknown outcome)."""
        if self.failure is not None or self.retired or self._draining:
            return False
        if self._writer.transport.is_closing() or self._reader.at_eof():
            return False
        if self._in_flight or self._unwritten:
            return True
        return not closed_by_server(self.conn)

    def send(self, packed: bytes) -> Call:
        """Queue one command, to be written in this pass of the loop (or as soon as the socket
        takes it); its reply comes in the returned call's ``reply``."""
        call = Call(packed, self._loop.create_future())
        if self.failure is not None:
            call.reply.set_exception(self.failure)
            return call
        self._unwritten.append(call)
        if not self._flush_due and self._drainer is None:
            self._flush_due = True
            self._loop.call_soon(self._flush)
        return call

    def _flush(self) -> None:
        """Write what is queued, as far as the socket's buffer has room for it (the rest once
        it has: a burst of big commands is not copied into it all at once)."""
        self._flush_due = False
        if self.failure is not None or not self._unwritten:
            return
        if self._writer.transport.is_closing() or self._reader.at_eof():
            # the connection is going: what would be written now would be lost unsent, and
            # must be said to be unsent (the caller sends it again, on a new connection)
            self._fail(RedisConnectionError("Connection closed by server."))
            return
        if self.retired:
            # (calls were given up on: these are not written behind them, but sent again)
            self._bounce_unwritten()
            return
        room = _WRITE_BACKLOG - self._writer.transport.get_write_buffer_size()
        unwritten = self._unwritten
        batch: list[Call] = []
        size = 0
        while unwritten and (not batch or size + unwritten[0].size <= room):
            call = unwritten.popleft()
            batch.append(call)
            size += call.size
        data = b"".join([call.packed for call in batch])
        was_idle = not self._in_flight
        now = self._loop.time()
        for call in batch:
            call.packed = b""
            call.written = True
            self._in_flight_bytes += call.size
            # (never before the one ahead: calls are given up on in their order)
            call.deadline = self._last_deadline = max(
                self._last_deadline, now + self._base_timeout + self._in_flight_bytes * SECONDS_PER_BYTE_SENT
            )
        self._in_flight.extend(batch)
        try:
            self._writer.write(data)
        except Exception as exc:  # (a transport already closing refuses writes)
            self._fail(RedisConnectionError(f"writing to Redis failed: {exc}"))
            return
        if was_idle:
            self._last_bytes = now
        timer = self._timer
        if timer is not None and timer.when() is None:
            # the reader waits with no deadline (nothing was in flight, or only calls whose
            # callers gave up): these calls' time starts now
            timer.reschedule(self._next_check())
        if unwritten and self._drainer is None:
            self._drainer = self._loop.create_task(self._flush_when_drained())

    async def _flush_when_drained(self) -> None:
        try:
            await self._writer.drain()
        except Exception:
            pass  # (the connection is lost: the reader fails the calls, which say how)
        finally:
            self._drainer = None
        self._flush()

    def _next_check(self) -> float | None:
        """When the oldest call still waited for may be given up on."""
        for call in self._in_flight:
            if not call.reply.done():
                if math.isinf(call.deadline):
                    return None
                return max(call.deadline, self._last_bytes + self._base_timeout)
        return None

    def _give_up_late_calls(self) -> None:
        """Nothing came for a socket timeout: the calls whose time is up get a timeout error
        (written: their outcome is unknown), and the connection takes no new ones."""
        now = self._loop.time()
        for call in self._in_flight:
            if call.deadline > now:
                break
            if not call.reply.done():
                call.reply.set_exception(
                    RedisTimeoutError(f"no reply in time (socket timeout {self._base_timeout:g} s), nothing from Redis since")
                )
                self.retired = True
        if self.retired:
            self._bounce_unwritten()

    def _bounce_unwritten(self) -> None:
        """The calls not written yet fail as unsent (their callers send them again)."""
        calls = list(self._unwritten)
        self._unwritten.clear()
        for call in calls:
            call.packed = b""
            if not call.reply.done():
                call.reply.set_exception(RedisConnectionError("Connection retired before the command was written."))

    def _nothing_to_wait_for(self) -> bool:
        return not self._unwritten and all(call.reply.done() for call in self._in_flight)

    async def _read_replies(self) -> None:
        parser = hiredis.Reader(replyError=ResponseError)
        in_flight = self._in_flight
        try:
            while not (self.retired and self._nothing_to_wait_for()):
                try:
                    async with asyncio.timeout_at(self._next_check()) as self._timer:
                        data = await self._reader.read(READ_CHUNK)
                except TimeoutError:
                    # Late, or only not read yet: an event loop busy with many other tasks
                    # runs this one long after the reply came. What came is read on.
                    if not answer_waiting(self._reader, self._writer):
                        self._give_up_late_calls()
                    continue
                finally:
                    self._timer = None
                if not data:
                    raise RedisConnectionError("Connection closed by server.")
                self._last_bytes = self._loop.time()
                parser.feed(data)
                while (reply := parser.gets()) is not False:
                    if not in_flight:
                        raise RedisConnectionError("Redis sent a reply to nothing that was asked")
                    call = in_flight.popleft()
                    self._in_flight_bytes -= call.size
                    if not call.reply.done():  # (given up on, or its caller was cancelled)
                        call.reply.set_result(reply)
            self._fail(RedisConnectionError("Connection retired: calls on it were given up on."))
        except asyncio.CancelledError:
            self._fail(RedisConnectionError("Connection closed."))
        except Exception as exc:
            self._fail(exc)
        # (a task of its own: a close() that cancels this one must not cut it short)
        self._closing = self._loop.create_task(self._close_socket())

    async def _close_socket(self) -> None:
        try:
            await self.conn.disconnect()
        except Exception:
            pass
        finally:
            # (redis-py's close waits for the buffer to drain, and gives up on a server that
            # reads nothing: the socket would stay open, its buffer held)
            self._writer.transport.abort()
            try:
                await self._release(self.conn)
            finally:
                if not self.closed.done():
                    self.closed.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
        waiting = [*self._in_flight, *self._unwritten]
        self._in_flight.clear()
        self._unwritten.clear()
        self._in_flight_bytes = 0
        for call in waiting:
            call.packed = b""
            if not call.reply.done():
                call.reply.set_exception(exc)

    async def close(self, grace: float) -> None:
        """Take no new calls; give the calls on the connection up to ``grace`` seconds (and no
        longer than their own timeouts) to be answered; then close it."""
        self._draining = True
        waiting = [call.reply for call in (*self._in_flight, *self._unwritten) if not call.reply.done()]
        if waiting and grace > 0:
            await asyncio.wait(waiting, timeout=grace)
        self._task.cancel()
        await asyncio.wait([self.closed])
