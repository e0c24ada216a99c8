"""Packed calls (the worker's finish_jobs, the fan-out's chunks) bypass redis-py's per-call
machinery: a reply read by our own hiredis reader, on the connection single calls share (or
on connections kept between transactions). They must read exactly what redis-py reads, map
errors to the same classes, and survive a connection the server dropped."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import pytest
import redis as sync_redis
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bullfast import _scripts, core
from bullfast._connection import RedisConnection, _exchange
from bullfast._multiplexed import MultiplexedConnection
from bullfast._scripts import Script
from bullfast.errors import OutcomeUnknownError, RedisUnavailableError

REPLIES = [
    "return 1",
    "return {}",
    "return 'text'",
    "return {1, 'a', {2, {'b', false}}, -7}",
    "return {ARGV[1], string.rep('x', 200000)}",  # a reply longer than one read
    "return redis.status_reply('FINE')",
    "return redis.error_reply('MYERR something went wrong')",
    "return redis.call('HGETALL', KEYS[1])",
]


# keeps Redis busy for a second (TIME's seconds and microseconds: a whole second, not a change
# of the seconds' digit)
BUSY_FOR_A_SECOND = """
local function now() local t = redis.call('TIME') return t[1] * 1000000 + t[2] end
local start = now()
repeat until now() - start >= 1000000
return 1
"""


def _script(source: str) -> Script:
    body = source.encode()
    return Script("t", 1, body, hashlib.sha1(body).hexdigest().encode())


def _packed(script: Script, key: str, *args: Any) -> bytes:
    return core.pack_command([b"EVALSHA", script.sha, 1, key, *args])


@pytest.mark.parametrize("source", REPLIES)
async def test_the_reply_is_what_redis_py_reads(redis_url: str, prefix: str, source: str) -> None:
    conn = RedisConnection(redis_url)
    key = f"{prefix}:h"
    try:
        await conn.client.hset(key, mapping={"a": "1", "b": "2"})
        script = _script(source)
        await conn.load(script)
        packed = _packed(script, key, "é\x00arg")
        pool = conn.client.connection_pool
        raw = await pool.get_connection()
        try:
            ours = await _exchange(raw, packed, 5.0)
            await raw.send_packed_command(packed, check_health=False)
            theirs = await RedisConnection._read(raw, 5.0)
        finally:
            await pool.release(raw)
        if isinstance(theirs, ResponseError):
            assert type(ours) is type(theirs) and str(ours) == str(theirs)
        else:
            assert ours == theirs
    finally:
        await conn.close()


async def test_a_nil_reply_is_none(redis_url: str, prefix: str) -> None:
    # (redis-py's read with a timeout answers None when the timeout expires, so this one is
    # not compared: none of our scripts returns a bare nil)
    conn = RedisConnection(redis_url)
    try:
        script = _script("return nil")
        await conn.load(script)
        assert await conn.call_packed(_packed(script, f"{prefix}:k"), f"{prefix}:k", script, "t") is None
    finally:
        await conn.close()


async def test_errors_get_redis_py_classes(redis_url: str, prefix: str) -> None:
    conn = RedisConnection(redis_url)
    try:
        unknown = _script(f"return '{prefix}'")  # never loaded
        raw = await conn.client.connection_pool.get_connection()
        try:
            reply = await _exchange(raw, _packed(unknown, f"{prefix}:k"), 5.0)
        finally:
            await conn.client.connection_pool.release(raw)
        assert isinstance(reply, NoScriptError)
        # call_packed loads a missing script and runs it; a script's error is raised
        assert await conn.call_packed(_packed(unknown, f"{prefix}:k"), f"{prefix}:k", unknown, "t") == prefix.encode()
        failing = _script("return redis.error_reply('MYERR no')")
        with pytest.raises(ResponseError, match="MYERR no"):
            await conn.call_packed(_packed(failing, f"{prefix}:k"), f"{prefix}:k", failing, "t")
    finally:
        await conn.close()


async def _client_id(conn: RedisConnection) -> int:
    """The id of the connection single calls share, asked on it."""
    return int(await conn.read_packed(core.pack_command((b"CLIENT", b"ID")), "", "CLIENT ID"))


async def test_a_shared_connection_the_server_dropped_is_replaced(redis_url: str, prefix: str) -> None:
    conn = RedisConnection(redis_url)
    admin = aioredis.from_url(redis_url)
    script = _script("return redis.call('INCR', KEYS[1])")
    key = f"{prefix}:k"
    try:
        assert await conn.call_packed(_packed(script, key), key, script, "t") == 1
        client_id = await _client_id(conn)
        assert await admin.client_kill_filter(_id=client_id) == 1
        assert await conn.call_packed(_packed(script, key), key, script, "t") == 2
        assert await conn.call_packed(_packed(script, key), key, script, "t") == 3
        assert await _client_id(conn) != client_id
    finally:
        await conn.close()
        await admin.aclose()


async def test_a_shared_connection_dropped_while_the_loop_was_blocked_is_replaced(redis_url: str, prefix: str) -> None:
    """The server closes an idle connection while the event loop is busy (a blocking call in
    the app): the loop has not seen the close when the next command is sent, which must not
    go into the dead socket (an OutcomeUnknownError for a command that never reached Redis)."""
    conn = RedisConnection(redis_url)
    script = _script("return redis.call('INCR', KEYS[1])")
    key = f"{prefix}:k"
    try:
        assert await conn.call_packed(_packed(script, key), key, script, "t") == 1
        client_id = await _client_id(conn)
        admin = sync_redis.Redis.from_url(redis_url)  # blocking: no loop iteration from here on
        try:
            assert admin.client_kill_filter(_id=client_id) == 1
            time.sleep(0.05)  # the FIN reaches the socket; the loop does not run
        finally:
            admin.close()
        assert await conn.call_packed(_packed(script, key), key, script, "t") == 2
    finally:
        await conn.close()


async def test_a_reply_that_came_in_time_is_read_however_late_the_loop_runs(redis_url: str, prefix: str) -> None:
    """The event loop is kept from running (by many other tasks, or a blocking call) longer than
    the reply timeout while a reply is on its way: the reply arrives in time and must be read,
    not reported as an unknown outcome (50,000 concurrent adds raised 500 of those, for jobs
    that had been added). A reply that really does not come still times out."""
    conn = RedisConnection({"url": redis_url, "socket_timeout": 0.2})
    script = _script("return redis.call('INCR', KEYS[1])")
    key = f"{prefix}:k"
    try:
        assert await conn.call_packed(_packed(script, key), key, script, "t") == 1
        call = asyncio.ensure_future(conn.call_packed(_packed(script, key), key, script, "t"))
        await asyncio.sleep(0)  # it sends its command, and waits for the reply
        time.sleep(0.5)  # the loop runs nothing, past the call's timeout
        assert await call == 2
        slow = _script(BUSY_FOR_A_SECOND)
        with pytest.raises(OutcomeUnknownError):  # the server is busy, and answers nothing in time
            await conn.call_packed(_packed(slow, key), key, slow, "t")
    finally:
        await conn.close()


async def test_a_read_that_gets_no_answer_says_nothing_was_written(redis_url: str, prefix: str) -> None:
    """A read-only script (get_jobs, get_states) that times out is RedisUnavailableError, not
    OutcomeUnknownError: it wrote nothing, whatever Redis did with it."""
    conn = RedisConnection({"url": redis_url, "socket_timeout": 0.2})
    busy = RedisConnection(redis_url)
    slow = _script(BUSY_FOR_A_SECOND)
    key = f"{prefix}:k"
    try:
        await conn.load(_scripts.get("get_states"))
        blocking = asyncio.ensure_future(busy.call_packed(_packed(slow, key), key, slow, "slow"))
        await asyncio.sleep(0.1)  # Redis runs the slow script: nothing else is answered
        with pytest.raises(RedisUnavailableError) as info:
            await conn.run("get_states", [key], [f"{prefix}:q:", "1"], read_only=True)
        assert not isinstance(info.value, OutcomeUnknownError)
        assert await blocking == 1
    finally:
        await conn.close()
        await busy.close()


async def test_a_callers_client_gets_its_connections_back_after_every_call(redis_url: str, prefix: str) -> None:
    client = aioredis.from_url(redis_url)  # the caller's client: bullfast must not close it
    conn = RedisConnection(client)
    script = _script("return 1")
    key = f"{prefix}:k"
    try:
        for _ in range(3):
            assert await conn.call_packed(_packed(script, key), key, script, "t") == 1
            assert conn._kept == [] and len(client.connection_pool._in_use_connections) == 0
        await conn.close()
        assert await client.ping()
    finally:
        await client.aclose()


async def test_our_own_client_shares_a_resp2_connection_and_closes_it(redis_url: str, prefix: str) -> None:
    script = _script("return 1")
    key = f"{prefix}:k"
    conn = RedisConnection(redis_url)
    try:
        assert await conn.call_packed(_packed(script, key), key, script, "t") == 1
        # (redis-py's own connections speak RESP3 by default; the packed calls' pool RESP2)
        assert conn._shared_conn is not None
        shared = conn._shared_conn.conn
        assert str(shared.protocol) == "2" and conn._kept == []
    finally:
        await conn.close()
    assert conn._shared_conn is None and not shared.is_connected
    # a URL that insists on RESP3 gets it, and redis-py's own reading of the replies, on
    # connections of their own (a RESP3 connection may carry push messages between replies)
    conn = RedisConnection(f"{redis_url}?protocol=3")
    try:
        assert await conn.call_packed(_packed(script, key), key, script, "t") == 1
        assert conn._shared_conn is None and str(conn._kept[0].protocol) == "3"
    finally:
        await conn.close()


async def test_a_packed_read_is_what_redis_py_reads_and_is_tried_twice(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = RedisConnection(redis_url)
    key = f"{prefix}:h"
    fields = {f"bull:q:{i}".encode(): f'{{"n":{i}}}'.encode() for i in range(3000)}  # a reply over many reads
    hgetall = core.pack_command((b"HGETALL", key))
    try:
        await conn.client.hset(key, mapping=fields)
        flat = await conn.read_packed(hgetall, key, "HGETALL")
        assert dict(zip(flat[0::2], flat[1::2])) == await conn.client.hgetall(key) == fields
        assert await conn.read_packed(core.pack_command((b"HGETALL", f"{prefix}:none")), key, "HGETALL") == []
        await conn.client.set(f"{prefix}:s", "x")
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await conn.read_packed(core.pack_command((b"HGETALL", f"{prefix}:s")), key, "HGETALL")
        # a connection that fails during a read: the read is made again, on a fresh connection
        failures = _fail_after_writing(monkeypatch, lambda: RedisConnectionError("connection reset"), 1)
        assert await conn.read_packed(hgetall, key, "HGETALL") == flat
        assert len(failures) == 1
        # twice: a typed error
        failures = _fail_after_writing(monkeypatch, lambda: RedisConnectionError("connection reset"), 2)
        with pytest.raises(RedisUnavailableError, match="HGETALL"):
            await conn.read_packed(hgetall, key, "HGETALL")
        assert len(failures) == 2
        # a read that timed out is not made again
        failures = _fail_after_writing(monkeypatch, lambda: RedisTimeoutError("no reply within 5.0 s"), 2)
        with pytest.raises(RedisUnavailableError, match="HGETALL"):
            await conn.read_packed(hgetall, key, "HGETALL")
        assert len(failures) == 1
    finally:
        await conn.close()


def _fail_after_writing(monkeypatch: pytest.MonkeyPatch, error: Any, times: int) -> list[Any]:
    """The shared connection fails with ``error()`` once the next ``times`` commands sent on
    it (one each) are written; the calls it failed are listed."""
    real = MultiplexedConnection.send
    failed: list[Any] = []

    def send(self: MultiplexedConnection, packed: bytes) -> Any:
        call = real(self, packed)
        if len(failed) < times:
            failed.append(call)
            # (after the write, which send scheduled first)
            asyncio.get_running_loop().call_soon(self._fail, error())
        return call

    monkeypatch.setattr(MultiplexedConnection, "send", send)
    return failed
