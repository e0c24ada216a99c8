"""Single calls made at once share one connection (``_multiplexed``): each caller gets its
own reply, in any mix of sizes and errors; a failure fails what was written and says so; a
command not written yet is sent on the next connection; callers that give up do not shift the
replies of the others."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from bullfast import Queue, core
from bullfast._connection import RedisConnection
from bullfast._multiplexed import MultiplexedConnection
from bullfast._scripts import Script
from bullfast.errors import (
    ConnectionClosedError,
    OutcomeUnknownError,
    RedisUnavailableError,
    WrongKeyTypeError,
)

ECHO = "if ARGV[2] == 'fail' then return redis.error_reply('MYERR ' .. ARGV[1]) end " \
       "redis.call('INCR', KEYS[1]) return {ARGV[1], string.rep('x', tonumber(ARGV[2]))}"
SLEEPY = """
local function now() local t = redis.call('TIME') return t[1] * 1000000 + t[2] end
local start = now()
repeat until now() - start >= tonumber(ARGV[1])
return redis.call('INCR', KEYS[1])
"""


def _script(source: str) -> Script:
    body = source.encode()
    return Script("t", 1, body, hashlib.sha1(body).hexdigest().encode())


def _packed(script: Script, key: str, *args: Any) -> bytes:
    return core.pack_command([b"EVALSHA", script.sha, 1, key, *args])


async def test_concurrent_calls_get_their_own_replies_on_one_connection(redis_url: str, prefix: str) -> None:
    conn = RedisConnection(redis_url)
    admin = aioredis.from_url(redis_url)
    echo = _script(ECHO)
    key = f"{prefix}:n"
    # replies of every size, from nothing to many reads' worth, and errors among them
    sizes = [0, 10, 70_000, 5, 300_000, 1, "fail"] * 300

    async def one(i: int, size: Any) -> None:
        try:
            reply = await conn.call_packed(_packed(echo, key, f"call-{i}", str(size)), key, echo, "echo")
        except ResponseError as exc:
            assert size == "fail" and str(exc) == f"MYERR call-{i}"
        else:
            assert reply == [f"call-{i}".encode(), b"x" * int(size)]

    try:
        await conn.load(echo)  # (on redis-py's own connection)
        before = len(await admin.client_list())
        await asyncio.gather(*(one(i, size) for i, size in enumerate(sizes)))
        assert int(await admin.get(key)) == sum(1 for s in sizes if s != "fail")
        # one connection for all of them (and none kept for transactions)
        assert len(await admin.client_list()) - before == 1 and conn._kept == []
    finally:
        await conn.close()
        await admin.aclose()


async def test_a_thousand_concurrent_adds(redis_url: str, prefix: str) -> None:
    queue = Queue("q", connection=redis_url, prefix=prefix)
    admin = aioredis.from_url(redis_url)
    try:
        jobs = await asyncio.gather(*(queue.add("j", {"i": i}) for i in range(1000)))
        assert sorted(int(j.id) for j in jobs) == list(range(1, 1001))
        for job in jobs[::97]:
            assert await admin.hget(f"{prefix}:q:{job.id}", "data") == f'{{"i":{job.data["i"]}}}'.encode()
        assert await admin.llen(f"{prefix}:q:wait") == 1000
    finally:
        await queue.close()
        await admin.aclose()


async def test_a_caller_that_gives_up_does_not_shift_the_others_replies(redis_url: str, prefix: str) -> None:
    conn = RedisConnection(redis_url)
    echo = _script(ECHO)
    sleepy = _script(SLEEPY)
    key = f"{prefix}:n"
    try:
        await conn.load(echo)
        await conn.load(sleepy)
        slow = asyncio.ensure_future(conn.call_packed(_packed(sleepy, key, "200000"), key, sleepy, "slow"))
        calls = [
            asyncio.ensure_future(conn.call_packed(_packed(echo, key, f"c{i}", "3"), key, echo, "echo"))
            for i in range(20)
        ]
        await asyncio.sleep(0.05)  # all written; Redis is still in the slow one
        slow.cancel()
        for call in calls[::2]:
            call.cancel()
        results = await asyncio.gather(*calls, return_exceptions=True)
        for i, result in enumerate(results):
            if i % 2:
                assert result == [f"c{i}".encode(), b"xxx"]
            else:
                assert isinstance(result, asyncio.CancelledError)
        # the commands of the callers that gave up ran all the same (their outcome was unknown
        # to them), and the next call gets its own reply
        assert await conn.call_packed(_packed(echo, key, "after", "1"), key, echo, "echo") == [b"after", b"x"]
        assert int(await conn.commands.get(key)) == 1 + 20 + 1
    finally:
        await conn.close()


async def test_calls_behind_others_wait_while_replies_keep_coming(redis_url: str, prefix: str) -> None:
    """A call's timeout counts from its write, but it is not given up on while replies keep
    coming: 1,500 calls of 1 ms each, made at once, on a connection with a 0.5 s timeout. Redis
    answers them a read's worth at a time (16 kB: about 14 of these), the last 1.5 s after it
    was written."""
    conn = RedisConnection({"url": redis_url, "socket_timeout": 0.5})
    sleepy = _script(SLEEPY)
    key = f"{prefix}:n"
    pad = "p" * 1000
    try:
        await conn.load(sleepy)
        replies = await asyncio.gather(
            *(conn.call_packed(_packed(sleepy, key, "1000", pad), key, sleepy, "slow") for _ in range(1500))
        )
        assert sorted(replies) == list(range(1, 1501))
    finally:
        await conn.close()


async def test_a_server_that_stops_answering_fails_every_written_call(redis_url: str, prefix: str) -> None:
    """A script that runs past the reply timeout: the calls written behind it fail too (writes:
    outcome unknown; reads: unavailable), and the next call, once Redis answers again, runs on a
    new connection."""
    conn = RedisConnection({"url": redis_url, "socket_timeout": 0.2})
    sleepy = _script(SLEEPY)
    echo = _script(ECHO)
    key = f"{prefix}:n"
    try:
        await conn.load(sleepy)
        await conn.load(echo)
        before = int(await conn.read_packed(core.pack_command((b"CLIENT", b"ID")), key, "CLIENT ID"))
        writes = [conn.call_packed(_packed(sleepy, key, "600000"), key, sleepy, "slow")]
        writes += [conn.call_packed(_packed(echo, key, str(i), "1"), key, echo, "echo") for i in range(5)]
        reads = [conn.run("get_states", [key], [f"{prefix}:q:", "1"], read_only=True) for _ in range(3)]
        results = await asyncio.gather(*writes, *reads, return_exceptions=True)
        assert all(isinstance(r, OutcomeUnknownError) for r in results[: len(writes)]), results
        assert all(
            isinstance(r, RedisUnavailableError) and not isinstance(r, OutcomeUnknownError)
            for r in results[len(writes) :]
        ), results
        time.sleep(0.5)  # (Redis finishes the slow script and the calls behind it)
        assert await conn.call_packed(_packed(echo, key, "next", "0"), key, echo, "echo") == [b"next", b""]
        assert int(await conn.read_packed(core.pack_command((b"CLIENT", b"ID")), key, "CLIENT ID")) != before
        assert int(await conn.commands.get(key)) == 1 + 5 + 1
    finally:
        await conn.close()


async def test_a_command_not_written_when_the_connection_failed_is_sent_on_the_next(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = RedisConnection(redis_url)
    echo = _script(ECHO)
    key = f"{prefix}:n"
    real = MultiplexedConnection.send
    failed: list[Any] = []

    def send(self: MultiplexedConnection, packed: bytes) -> Any:
        call = real(self, packed)
        if not failed:  # the connection fails before this command is written
            self._fail(RedisConnectionError("Connection reset by peer"))
            failed.append(self)
        return call

    try:
        await conn.load(echo)
        assert await conn.call_packed(_packed(echo, key, "a", "0"), key, echo, "echo") == [b"a", b""]
        monkeypatch.setattr(MultiplexedConnection, "send", send)
        assert await conn.call_packed(_packed(echo, key, "b", "0"), key, echo, "echo") == [b"b", b""]
        assert failed and conn._shared_conn is not failed[0]
        assert int(await conn.commands.get(key)) == 2
    finally:
        await conn.close()


async def test_a_burst_of_big_commands_is_written_as_the_socket_takes_it(redis_url: str, prefix: str) -> None:
    """200 adds of 200 kB each at once: more than the socket buffers and the write backlog
    hold, so callers wait for the socket; every one is added."""
    queue = Queue("q", connection=redis_url, prefix=prefix)
    admin = aioredis.from_url(redis_url)
    try:
        jobs = await asyncio.gather(*(queue.add("big", {"i": i, "pad": "y" * 200_000}) for i in range(200)))
        assert len({j.id for j in jobs}) == 200
        assert await admin.llen(f"{prefix}:q:wait") == 200
    finally:
        await queue.close()
        await admin.aclose()


async def test_close_lets_the_calls_made_before_finish(redis_url: str, prefix: str) -> None:
    """As ioredis's quit: the adds in flight when the queue closes are answered (none raises,
    every one is in Redis); a call made after close() is refused, and nothing stays open."""
    queue = Queue("q", connection=redis_url, prefix=prefix)
    admin = aioredis.from_url(redis_url)
    try:
        await queue.add("warm", {})
        before = len(await admin.client_list())
        adds = [asyncio.ensure_future(queue.add("j", {"i": i})) for i in range(1000)]
        await asyncio.sleep(0)  # (sent: each add has made its call)
        await queue.close()
        jobs = await asyncio.gather(*adds)
        assert len({job.id for job in jobs}) == 1000
        assert await admin.llen(f"{prefix}:q:wait") == 1001
        with pytest.raises(ConnectionClosedError):
            await queue.add("late", {})
        assert len(await admin.client_list()) < before
    finally:
        await queue.close()
        await admin.aclose()


async def test_a_close_racing_the_first_call_leaves_nothing_open(redis_url: str, prefix: str) -> None:
    admin = aioredis.from_url(redis_url)
    try:
        before = len(await admin.client_list())
        for _ in range(20):
            queue = Queue("q", connection=redis_url, prefix=prefix)
            add = asyncio.ensure_future(queue.add("j", {}))
            await asyncio.sleep(0)
            await queue.close()
            result = (await asyncio.gather(add, return_exceptions=True))[0]
            assert not isinstance(result, BaseException) or isinstance(result, ConnectionClosedError), result
        await asyncio.sleep(0.05)
        assert len(await admin.client_list()) == before
        assert not [t for t in asyncio.all_tasks() if "_read_replies" in repr(t) or "_close_socket" in repr(t)]
    finally:
        await admin.aclose()


async def test_commands_queued_on_a_connection_that_is_going_are_sent_on_the_next(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection's transport closes after the commands were queued but before they are
    written: they are not written into it (asyncio would drop them silently, and they would be
    reported as unknown outcomes), but sent on a new connection."""
    queue = Queue("q", connection=redis_url, prefix=prefix)
    real = MultiplexedConnection.send
    aborted: list[Any] = []

    def send(self: MultiplexedConnection, packed: bytes) -> Any:
        call = real(self, packed)
        if not aborted:
            aborted.append(self)
            self._writer.transport.abort()  # (as a reset the loop has not reported yet)
        return call

    try:
        await queue.add("warm", {})
        monkeypatch.setattr(MultiplexedConnection, "send", send)
        jobs = await asyncio.gather(*(queue.add("j", {"i": i}) for i in range(20)))
        assert len({job.id for job in jobs}) == 20 and aborted
        assert queue._redis._shared_conn is not aborted[0]
    finally:
        await queue.close()


@pytest.mark.private_redis  # (counts the server's TYPE commands)
async def test_adds_made_at_once_check_a_new_queues_key_types_once(redis_url: str, prefix: str) -> None:
    """The first add of a connection to a queue checks that queue's keys are of the right type
    (a foreign key would stop a script half-way); 1,000 adds made at once do not all check:
    the others wait for the first's answer. When that check fails, each one checks, and none
    writes anything."""
    queue = Queue("q", connection=redis_url, prefix=prefix)
    admin = aioredis.from_url(redis_url)
    try:
        await admin.config_resetstat()
        jobs = await asyncio.gather(*(queue.add("j", {"i": i}) for i in range(1000)))
        assert len({j.id for j in jobs}) == 1000
        stats = await admin.info("commandstats")
        # one add's check: its queue's nine keys
        assert stats["cmdstat_type"]["calls"] == 9, stats.get("cmdstat_type")

        await admin.set(f"{prefix}:other:wait", "not a list")
        other = Queue("other", connection=redis_url, prefix=prefix)
        try:
            results = await asyncio.gather(*(other.add("j", {"i": i}) for i in range(50)), return_exceptions=True)
            assert all(isinstance(r, WrongKeyTypeError) for r in results), results[:3]
            assert [k async for k in admin.scan_iter(match=f"{prefix}:other:*")] == [f"{prefix}:other:wait".encode()]
        finally:
            await other.close()
    finally:
        await queue.close()
        await admin.aclose()
