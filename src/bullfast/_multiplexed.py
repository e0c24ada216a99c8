"""One Redis connection that concurrent calls share, as ioredis shares one for BullMQ.

Each call's command is written as it comes, together with the others made in the same pass
of the event loop, and the replies are given to the callers in the order the commands were
written (Redis answers one connection's commands in order). A thousand concurrent adds are
then a few writes and reads on one socket, not a thousand round trips on as many connections,
each of which had to be opened first.

Only for RESP2 connections, where nothing but the replies of what was sent arrives (no push
messages), and for commands that answer at once: blocking commands and transactions keep
connections of their own (see ``_connection.RedisConnection``).

Failures are per connection, not per call: a reply that does not come in time (the socket
timeout, plus time in proportion to the size of the command Redis is working on, counted
from the last bytes that arrived) or a connection that closes fails every call waiting on it,
and the next call opens a new one. A call knows whether its command was written before the
failure, which decides whether its outcome is unknown.
"""

from __future__ import annotations

import asyncio
import math
import select
from collections import deque
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

try:
    import hiredis
except ImportError:  # pragma: no cover - redis[hiredis] is a dependency
    hiredis = None  # type: ignore[assignment]

READ_CHUNK = 1 << 16
# Callers wait for the socket to take what was written once this much is waiting to be sent
# (a burst of big adds would otherwise hold all of it in memory at once).
_WRITE_BACKLOG = 1 << 20
# How long a reply may take beyond the socket timeout, per byte of the command Redis is
# working on: the EXEC of a big flow keeps Redis busy for about a second per 20 MB of
# arguments on the benchmark machine; this allows ten times that.
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
    hiredis and ``asyncio.Timeout.reschedule`` (Python 3.11) at hand."""
    return (
        hiredis is not None
        and hasattr(asyncio, "timeout")
        and getattr(conn, "_reader", None) is not None
        and getattr(conn, "_writer", None) is not None
        and str(getattr(conn, "protocol", None) or 2) == "2"
    )


class Call:
    """One command's place in the connection's order: its reply (a future), its size, and
    whether it was written before the connection failed."""

    __slots__ = ("reply", "size", "written")

    def __init__(self, reply: asyncio.Future[Any], size: int) -> None:
        self.reply = reply
        self.size = size
        self.written = False


class MultiplexedConnection:
    """A connected redis-py connection (RESP2) and the task that reads its replies."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self._reader = conn._reader
        self._writer = conn._writer
        timeout = getattr(conn, "socket_timeout", None)
        self._base_timeout = math.inf if timeout is None else float(timeout)
        self._loop = asyncio.get_running_loop()
        self._unwritten: list[bytes] = []
        self._unwritten_calls: list[Call] = []
        self._in_flight: deque[Call] = deque()
        self._flush_due = False
        self._timer: asyncio.Timeout | None = None
        self._head_since = 0.0  # when the oldest call in flight became the oldest, or bytes last came
        self.failure: BaseException | None = None
        self._task = self._loop.create_task(self._read_replies())

    @property
    def usable(self) -> bool:
        """Not failed, and, when idle, not closed by the server meanwhile (asked of the socket:
        a command written into a closed connection would have an unknown outcome)."""
        if self.failure is not None:
            return False
        if self._in_flight or self._unwritten:
            return True
        return not closed_by_server(self.conn)

    def send(self, packed: bytes) -> Call:
        """Queue one command to be written in this pass of the loop; its reply comes in the
        returned call's ``reply``."""
        call = Call(self._loop.create_future(), len(packed))
        if self.failure is not None:
            call.reply.set_exception(self.failure)
            return call
        self._unwritten.append(packed)
        self._unwritten_calls.append(call)
        if not self._flush_due:
            self._flush_due = True
            self._loop.call_soon(self._flush)
        return call

    async def drain(self) -> None:
        """Wait while much of what was written has not been taken by the socket yet."""
        transport = self._writer.transport
        if transport.get_write_buffer_size() > _WRITE_BACKLOG and self.failure is None:
            try:
                await self._writer.drain()
            except OSError:
                pass  # (the connection is lost: the reader fails the calls, which say how)

    def _flush(self) -> None:
        self._flush_due = False
        if self.failure is not None or not self._unwritten:
            return
        data = b"".join(self._unwritten) if len(self._unwritten) > 1 else self._unwritten[0]
        calls = self._unwritten_calls
        self._unwritten = []
        self._unwritten_calls = []
        was_idle = not self._in_flight
        for call in calls:
            call.written = True
        self._in_flight.extend(calls)
        try:
            self._writer.write(data)
        except Exception as exc:  # (a transport already closing refuses writes)
            self._fail(RedisConnectionError(f"writing to Redis failed: {exc}"))
            return
        if was_idle:
            self._head_since = self._loop.time()
            timer = self._timer
            if timer is not None and timer.when() is None:  # (the reader waits with no deadline)
                timer.reschedule(self._deadline())

    def _deadline(self) -> float | None:
        if not self._in_flight or math.isinf(self._base_timeout):
            return None
        return self._head_since + self._base_timeout + self._in_flight[0].size * SECONDS_PER_BYTE_SENT

    async def _read_replies(self) -> None:
        parser = hiredis.Reader(replyError=ResponseError)
        in_flight = self._in_flight
        try:
            while True:
                try:
                    async with asyncio.timeout(self._deadline()) as self._timer:
                        data = await self._reader.read(READ_CHUNK)
                except TimeoutError:
                    # Late, or only not read yet: an event loop busy with many other tasks
                    # runs this one long after the reply came. What came is read on.
                    if answer_waiting(self._reader, self._writer):
                        continue
                    raise RedisTimeoutError(
                        f"no reply within {self._base_timeout + in_flight[0].size * SECONDS_PER_BYTE_SENT:.1f} s"
                    ) from None
                finally:
                    self._timer = None
                if not data:
                    raise RedisConnectionError("Connection closed by server.")
                self._head_since = self._loop.time()
                parser.feed(data)
                while (reply := parser.gets()) is not False:
                    if not in_flight:
                        raise RedisConnectionError("Redis sent a reply to nothing that was asked")
                    call = in_flight.popleft()
                    if not call.reply.done():  # (a caller that was cancelled waits no more)
                        call.reply.set_result(reply)
        except asyncio.CancelledError:
            self._fail(RedisConnectionError("Connection closed."))
            raise
        except Exception as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
        waiting = [*self._in_flight, *self._unwritten_calls]
        self._in_flight.clear()
        self._unwritten.clear()
        self._unwritten_calls.clear()
        for call in waiting:
            if not call.reply.done():
                call.reply.set_exception(exc)

    async def close(self) -> None:
        """Stop reading and drop the connection; calls still waiting fail."""
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._fail(RedisConnectionError("Connection closed."))
        await self.conn.disconnect()
