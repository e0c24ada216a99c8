"""The connection single calls share, when Redis dies under it (see
tests/integration/test_shared_connection.py for the rest)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from bullfast import Queue
from bullfast.embedded import RedisServer
from bullfast.errors import OutcomeUnknownError, RedisUnavailableError


async def test_calls_in_flight_when_redis_dies_fail_typed_and_the_next_reconnects(debug_redis: RedisServer) -> None:
    """Redis is killed while commands wait in its socket (it is in a DEBUG SLEEP): every add
    raises OutcomeUnknownError, every read RedisUnavailableError; once it is back, the next
    add works."""
    prefix = "dies"
    queue = Queue("q", connection={"url": debug_redis.url, "socket_timeout": 5}, prefix=prefix)
    sleeper = aioredis.from_url(debug_redis.url)
    try:
        await queue.add("warm", {})
        stall = asyncio.ensure_future(sleeper.execute_command("DEBUG", "SLEEP", "2"))
        await asyncio.sleep(0.1)
        adds = [asyncio.ensure_future(queue.add("j", {"i": i})) for i in range(20)]
        reads = [asyncio.ensure_future(queue.get_job_counts("wait")) for _ in range(3)]
        await asyncio.sleep(0.1)  # written, waiting in the sleeping server's socket
        debug_redis.kill()
        results = await asyncio.gather(*adds, *reads, return_exceptions=True)
        assert all(isinstance(r, OutcomeUnknownError) for r in results[:20]), results
        assert all(
            isinstance(r, RedisUnavailableError) and not isinstance(r, OutcomeUnknownError) for r in results[20:]
        ), results
        stall.cancel()
        await asyncio.gather(stall, return_exceptions=True)
        with pytest.raises(RedisUnavailableError) as down:
            await queue.add("down", {})
        assert not isinstance(down.value, OutcomeUnknownError)  # refused connection: nothing sent
        debug_redis.start()
        job = await queue.add("back", {})
        assert job.id is not None
    finally:
        await queue.close()
        await sleeper.aclose()


async def test_a_stall_longer_than_the_timeout_fails_only_the_calls_older_than_it(debug_redis: RedisServer) -> None:
    """Redis stalls 1.6 s; the socket timeout is 1 s. The add made as the stall began gets no
    answer in time (OutcomeUnknownError; it is applied once Redis wakes up). One made 0.9 s
    into the stall is answered after it, on the same connection; one made after the first
    was given up on goes to a new connection, and is answered too."""
    prefix = "stall"
    queue = Queue("q", connection={"url": debug_redis.url, "socket_timeout": 1.0}, prefix=prefix)
    sleeper = aioredis.from_url(debug_redis.url)
    client = aioredis.from_url(debug_redis.url)
    try:
        await queue.add("warm", {})
        stall = asyncio.ensure_future(sleeper.execute_command("DEBUG", "SLEEP", "1.6"))
        await asyncio.sleep(0.05)
        first = asyncio.ensure_future(queue.add("first", {}, {"job_id": "first"}))
        await asyncio.sleep(0.85)
        young = asyncio.ensure_future(queue.add("young", {}, {"job_id": "young"}))
        await asyncio.sleep(0.3)  # the first one is given up on meanwhile
        late = asyncio.ensure_future(queue.add("late", {}, {"job_id": "late"}))
        with pytest.raises(OutcomeUnknownError):
            await first
        assert (await young).id == "young"
        assert (await late).id == "late"
        await stall
        assert await client.lrange(f"{prefix}:q:wait", 0, -1) == [b"late", b"young", b"first", b"1"]
    finally:
        await queue.close()
        await sleeper.aclose()
        await client.aclose()


async def test_outages_do_not_use_up_the_pool(own_redis: Any) -> None:
    """Each outage replaces the shared connection; the one it replaces goes back to the pool
    (with three connections at most, a leak of one per outage would hang the third add)."""
    server = own_redis()
    queue = Queue("q", connection=f"{server.url}?max_connections=3", prefix="outage")
    try:
        await queue.add("j", {})
        for _ in range(4):
            server.stop()
            for _ in range(3):
                with pytest.raises(RedisUnavailableError):
                    await queue.add("j", {})
            server.start()
            await asyncio.wait_for(queue.add("j", {}), 10)
            assert len(queue._redis._packed_pool._in_use_connections) == 1
    finally:
        await queue.close()


async def test_a_frozen_server_fails_busy_callers_within_their_timeout_and_together(own_redis: Any) -> None:
    """Redis freezes (SIGSTOP: no answer, no close) under steady traffic, with a socket timeout
    of 0.5 s. Every call in flight fails within its timeout, including those written behind
    others and one written behind a call whose caller gave up; the calls that then wait for a
    new connection fail together (one attempt, shared), not one timeout after another. Once
    Redis runs again, adds work."""
    import os
    import signal
    import time

    server = own_redis()
    queue = Queue("q", connection={"url": server.url, "socket_timeout": 0.5}, prefix="freeze")
    pid = server._proc.pid
    try:
        await queue.add("warm", {})
        os.kill(pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            # a call whose caller gives up first, then calls written behind it and each other
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(queue.add("abandoned", {}), 0.2)
            written = [asyncio.ensure_future(queue.add("j", {"i": i})) for i in range(20)]
            await asyncio.sleep(0.1)
            written += [asyncio.ensure_future(queue.add("j", {"i": i})) for i in range(20, 40)]
            done, pending = await asyncio.wait(written, timeout=3.0)
            assert not pending, f"{len(pending)} calls still waiting {time.monotonic() - t0:.1f} s into the freeze"
            assert all(isinstance(t.exception(), OutcomeUnknownError) for t in done)
            # now 50 calls wait for a new connection, which cannot be made: they fail together
            t1 = time.monotonic()
            waiting = [asyncio.ensure_future(queue.add("k", {"i": i})) for i in range(50)]
            done, pending = await asyncio.wait(waiting, timeout=5.0)
            assert not pending, f"{len(pending)} of 50 still waiting after {time.monotonic() - t1:.1f} s"
            assert all(isinstance(t.exception(), RedisUnavailableError) for t in done)
        finally:
            os.kill(pid, signal.SIGCONT)
        job = await asyncio.wait_for(queue.add("after", {}), 10)
        assert job.id is not None
    finally:
        await queue.close()


async def test_first_adds_made_at_once_to_a_paused_server_fail_together(own_redis: Any) -> None:
    """The first adds of a connection to a queue wait for one of them to check the queue's
    keys; when that one gets no answer (writes paused by CLIENT PAUSE, as in a failover), the
    others check for themselves: they fail together, within about two timeouts, not one
    timeout after the other."""
    import time

    server = own_redis()
    admin = aioredis.from_url(server.url)
    queue = Queue("q", connection={"url": server.url, "socket_timeout": 0.5}, prefix="paused")
    try:
        await queue.get_job_counts()  # (connected)
        await admin.execute_command("CLIENT", "PAUSE", "3000", "WRITE")
        t0 = time.monotonic()
        results = await asyncio.gather(*(queue.add("j", {"i": i}) for i in range(8)), return_exceptions=True)
        assert all(isinstance(r, RedisUnavailableError) for r in results), results
        assert time.monotonic() - t0 < 2.0
    finally:
        await admin.execute_command("CLIENT", "UNPAUSE")
        await queue.close()
        await admin.aclose()


async def test_a_big_add_waits_for_a_server_that_is_only_busy(own_redis: Any) -> None:
    """A transaction (an add of more than 2,000 jobs) whose reply is late because Redis holds
    it back (writes paused here; other clients' big transactions ahead of it, in real life)
    while it still answers: waited for, and written once. Before, it raised
    OutcomeUnknownError after one timeout though it was applied after all, and a retry wrote
    the flow twice."""
    from bullfast import FlowProducer

    server = own_redis()
    admin = aioredis.from_url(server.url)
    producer = FlowProducer(connection={"url": server.url, "socket_timeout": 0.3}, prefix="busy")
    try:
        await producer.add({"name": "warm", "queue_name": "w"})  # (connected, scripts loaded)

        async def loaded(scripts: object, what: str = "") -> None:
            """No SCRIPT EXISTS: Redis 6.2 holds it back in a write pause too (7 does not),
            and this is about the transaction's reply."""

        producer._redis.ensure_loaded = loaded  # type: ignore[method-assign]
        await admin.execute_command("CLIENT", "PAUSE", "1500", "WRITE")
        node = await producer.add({"name": "p", "queue_name": "q", "children": [
            {"name": "c", "queue_name": "c", "data": {"k": k}} for k in range(2500)
        ]})
        assert len(node.children or []) == 2500
        assert await admin.llen("busy:c:wait") == 2500
        assert await admin.zcard("busy:q:waiting-children") == 1
    finally:
        await admin.execute_command("CLIENT", "UNPAUSE")
        await producer.close()
        await admin.aclose()


async def test_a_plain_write_whose_reply_times_out_is_an_unknown_outcome(own_redis: Any) -> None:
    """A management write by a plain command (HSET of the global concurrency) whose reply
    timed out was reported as RedisUnavailableError, "nothing written", though it may have been
    applied (a review saw it applied once the server answered again; here the client's
    disconnect drops it). A read that times out stays a RedisUnavailableError."""
    server = own_redis()
    admin = aioredis.from_url(server.url)
    queue = Queue("q", connection={"url": server.url, "socket_timeout": 0.3}, prefix="plain")
    try:
        await queue.get_global_concurrency()  # (connected)
        await admin.execute_command("CLIENT", "PAUSE", "1000", "WRITE")
        with pytest.raises(OutcomeUnknownError):
            await queue.set_global_concurrency(7)
        await admin.execute_command("CLIENT", "PAUSE", "1000", "ALL")
        with pytest.raises(RedisUnavailableError) as read:
            await queue.get_global_concurrency()
        assert not isinstance(read.value, OutcomeUnknownError)
        await admin.execute_command("CLIENT", "UNPAUSE")
        assert await queue.get_global_concurrency() in (None, 7)  # (either: unknown)
    finally:
        await admin.execute_command("CLIENT", "UNPAUSE")
        await queue.close()
        await admin.aclose()
