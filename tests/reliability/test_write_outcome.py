"""A write whose reply is late or lost: the caller is told the truth.

A flow add that keeps Redis busy for longer than the connection's socket timeout is not a
dead server: the reply is waited for in proportion to what was sent, and the add succeeds.
When a reply really does not come (Redis stalled, or the connection cut after the command
left), the error is an ``OutcomeUnknownError``: the write may have been applied, and here it
was. A server that cannot be reached at all is a plain ``RedisUnavailableError``: nothing was
sent.
"""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from bullfast import FlowProducer, Queue
from bullfast.embedded import RedisServer, free_port
from bullfast.errors import OutcomeUnknownError, RedisUnavailableError


async def test_a_transaction_longer_than_the_socket_timeout_succeeds(redis_url: str, prefix: str) -> None:
    """30,000 children take Redis well over 50 ms to write; the socket timeout is 50 ms."""
    n = 30_000
    flows = FlowProducer(connection={"url": redis_url, "socket_timeout": 0.05}, prefix=prefix)
    client = aioredis.from_url(redis_url)
    try:
        node = await flows.add({
            "name": "p", "queue_name": "q",
            "children": [{"name": "c", "queue_name": "q", "data": {"i": i, "pad": "x" * 64}} for i in range(n)],
        })
        assert len(node.children) == n
        assert await client.llen(f"{prefix}:q:wait") == n
        assert await client.zcard(f"{prefix}:q:waiting-children") == 1
    finally:
        await flows.close()
        await client.aclose()


async def test_a_reply_that_never_comes_is_an_unknown_outcome(debug_redis: RedisServer) -> None:
    """Redis stalls (DEBUG SLEEP) longer than the socket timeout while an add is in flight:
    the add raises OutcomeUnknownError, and once Redis wakes up the job is there."""
    prefix = "wo"
    sleeper = aioredis.from_url(debug_redis.url)
    client = aioredis.from_url(debug_redis.url)
    queue = Queue("q", connection={"url": debug_redis.url, "socket_timeout": 0.2,
                                   "retry_on_error": []}, prefix=prefix)
    try:
        await queue.add("warm", {}, {"job_id": "warm"})  # connection open, scripts loaded
        stall = asyncio.ensure_future(sleeper.execute_command("DEBUG", "SLEEP", "0.8"))
        await asyncio.sleep(0.05)
        with pytest.raises(OutcomeUnknownError, match="may have been applied"):
            await queue.add("late", {"k": 1}, {"job_id": "late"})
        await stall
        assert await client.hget(f"{prefix}:q:late", "name") == b"late"
        # retrying with the same id is safe: the job is not added twice
        job = await queue.add("late", {"k": 1}, {"job_id": "late"})
        assert job.id == "late"
        assert await client.llen(f"{prefix}:q:wait") == 2
    finally:
        await queue.close()
        await sleeper.aclose()
        await client.aclose()


async def test_a_flow_whose_reply_never_comes_is_an_unknown_outcome(debug_redis: RedisServer) -> None:
    """The same for a flow written as a MULTI/EXEC of several calls (chunks of 50 jobs, so
    that the whole transaction fits the socket buffers and reaches Redis during the stall)."""
    prefix = "wf"
    sleeper = aioredis.from_url(debug_redis.url)
    client = aioredis.from_url(debug_redis.url)
    flows = FlowProducer(connection={"url": debug_redis.url, "socket_timeout": 0.2,
                                     "retry_on_error": []}, prefix=prefix, chunk_size=50)
    try:
        # a flow of more than one call, so that a connection for transactions is kept (single
        # calls share another one)
        await flows.add({"name": "warm", "queue_name": "q", "children": [{"name": "c", "queue_name": "q"}] * 60})

        async def loaded(scripts: object, what: str = "") -> None:
            """The scripts are loaded (the warm-up did it): no SCRIPT EXISTS, which would meet
            the stall before anything is sent."""

        flows._redis.ensure_loaded = loaded  # type: ignore[method-assign]
        stall = asyncio.ensure_future(sleeper.execute_command("DEBUG", "SLEEP", "1"))
        await asyncio.sleep(0.05)
        with pytest.raises(OutcomeUnknownError):
            await flows.add({
                "name": "p", "queue_name": "q", "opts": {"job_id": "parent"},
                "children": [{"name": "c", "queue_name": "q", "data": {"i": i}} for i in range(200)],
            })
        await stall
        assert await client.llen(f"{prefix}:q:wait") == 200 + 60
        assert await client.zscore(f"{prefix}:q:waiting-children", "parent") is not None
    finally:
        await flows.close()
        await sleeper.aclose()
        await client.aclose()


async def test_no_server_is_unavailable_not_unknown() -> None:
    queue = Queue("q", connection=f"redis://127.0.0.1:{free_port()}", prefix="none")
    try:
        with pytest.raises(RedisUnavailableError) as info:
            await queue.add("j", {})
        assert not isinstance(info.value, OutcomeUnknownError)
    finally:
        await queue.close()


@pytest.mark.private_redis  # CLIENT KILL TYPE normal drops every client of the server
async def test_a_flow_whose_connection_is_cut_while_it_is_sent_fails_at_once(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection is killed while the MULTI is being sent: nothing is written, and the
    add says so at once. (A DISCARD sent after the failure made redis-py connect again, then
    wait for replies that never came: for ever without a socket timeout.)"""
    from bullfast import _add

    killer = aioredis.from_url(redis_url)
    client_name = f"cut-{prefix}"
    flows = FlowProducer(connection={"url": redis_url, "socket_timeout": None, "client_name": client_name},
                         prefix=prefix, chunk_size=100)
    encode = _add.core.encode_add_call
    calls = 0

    def cutting(*args: object, **kwargs: object) -> bytes:
        nonlocal calls
        calls += 1
        if calls == 3:
            import redis as sync_redis

            sync_redis.Redis.from_url(redis_url).client_kill_filter(_type="normal", skipme=True)
        return encode(*args, **kwargs)  # type: ignore[arg-type]

    try:
        await flows.add({"name": "warm", "queue_name": "q"})  # scripts loaded, connection kept
        monkeypatch.setattr(_add.core, "encode_add_call", cutting)
        tree = {"name": "p", "queue_name": "q", "children": [
            {"name": "c", "queue_name": "q", "data": {"pad": "x" * 20_000}} for _ in range(2_000)]}
        with pytest.raises(RedisUnavailableError) as info:
            await asyncio.wait_for(flows.add(tree), 20)
        assert not isinstance(info.value, OutcomeUnknownError)
        assert await killer.llen(f"{prefix}:q:wait") == 1  # the warm-up's job only
        assert await killer.zcard(f"{prefix}:q:waiting-children") == 0
        monkeypatch.setattr(_add.core, "encode_add_call", encode)
        await flows.add({"name": "after", "queue_name": "q"})  # the producer carries on
    finally:
        await flows.close()
        await killer.aclose()


async def test_a_script_reply_that_never_comes_is_an_unknown_outcome_and_runs_once(
    debug_redis: RedisServer,
) -> None:
    """The job methods' scripts too: a lost reply was reported as nothing written, and
    redis-py's retry ran the script again (a second log line)."""
    prefix = "ws"
    sleeper = aioredis.from_url(debug_redis.url)
    client = aioredis.from_url(debug_redis.url)
    queue = Queue("q", connection={"url": debug_redis.url, "socket_timeout": 0.2}, prefix=prefix)
    try:
        job = await queue.add("j", {})
        await job.log("warm")  # connection open, script loaded
        stall = asyncio.ensure_future(sleeper.execute_command("DEBUG", "SLEEP", "0.8"))
        await asyncio.sleep(0.05)
        with pytest.raises(OutcomeUnknownError, match="may have been applied"):
            await job.log("late")
        await stall
        assert await client.lrange(f"{prefix}:q:{job.id}:logs", 0, -1) == [b"warm", b"late"]
    finally:
        await queue.close()
        await sleeper.aclose()
        await client.aclose()
