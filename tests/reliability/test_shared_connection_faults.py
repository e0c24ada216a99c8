"""The connection single calls share, when Redis dies under it (see
tests/integration/test_shared_connection.py for the rest)."""

from __future__ import annotations

import asyncio

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
