"""``Worker.close()`` when Redis has gone away: it waits for the running jobs, gives Redis a
bounded time to record their outcomes, then gives up with ``RedisUnavailableError`` instead
of retrying forever. A Redis that comes back within that time gets the outcomes as usual."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from bullfast import Queue, Worker
from bullfast.embedded import RedisServer
from bullfast.errors import RedisUnavailableError


class HeldProcessor:
    """A processor whose job runs until the test lets it finish."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, job: Any) -> Any:
        self.started.set()
        await self.release.wait()
        return {"done": job.data["n"]}


async def worker_with_running_job(url: str, hold: HeldProcessor) -> tuple[Worker, str]:
    async with Queue("co", connection=url) as queue:
        job = await queue.add("held", {"n": 7})
    worker = Worker("co", hold, connection=url, drain_delay=0.2, stalled_interval=60_000)
    worker.on("error", lambda err: None)  # the outage is reported on every retry
    await asyncio.wait_for(hold.started.wait(), 10)
    return worker, str(job.id)


async def test_close_after_redis_went_away_raises_instead_of_hanging(
    own_redis: Callable[..., RedisServer],
) -> None:
    server = own_redis()
    hold = HeldProcessor()
    worker, _ = await worker_with_running_job(server.url, hold)
    server.stop()
    hold.release.set()  # the job ends while Redis is gone: its outcome cannot be written
    with pytest.raises(RedisUnavailableError, match="outcome of 1 job"):
        await asyncio.wait_for(worker.close(), 30)
    assert not worker.is_running()
    await worker.close()  # closed is closed: a second call returns at once


async def test_close_of_an_idle_worker_after_redis_went_away(own_redis: Callable[..., RedisServer]) -> None:
    server = own_redis()
    worker = Worker("co-idle", HeldProcessor(), connection=server.url, drain_delay=0.2)
    worker.on("error", lambda err: None)
    await worker.wait_until_ready()
    server.stop()
    await asyncio.wait_for(worker.close(), 30)  # nothing to record: no error
    assert not worker.is_running()


async def test_redis_back_within_the_bound_gets_the_outcome(own_redis: Callable[..., RedisServer]) -> None:
    server = own_redis(appendonly=True, appendfsync="always")
    hold = HeldProcessor()
    worker, job_id = await worker_with_running_job(server.url, hold)
    server.stop()
    hold.release.set()
    closing = asyncio.ensure_future(worker.close(redis_timeout=60))
    await asyncio.sleep(0.5)  # close is retrying the write against a dead server
    assert not closing.done()
    server.start()
    await asyncio.wait_for(closing, 30)
    async with Queue("co", connection=server.url) as queue:
        job = await queue.get_job(job_id)
        assert job is not None
        assert (await job.get_state(), job.returnvalue) == ("completed", {"done": 7})


async def test_run_returns_when_close_gives_up(own_redis: Callable[..., RedisServer]) -> None:
    """A caller awaiting ``worker.run()`` sees it return when close() gives up on a dead Redis
    (close raises, and says why), not a CancelledError it never asked for."""
    server = own_redis()
    async with Queue("co-run", connection=server.url) as queue:
        await queue.add("held", {"n": 1})
    hold = HeldProcessor()
    worker = Worker("co-run", hold, connection=server.url, drain_delay=0.2, autorun=False)
    worker.on("error", lambda err: None)
    runner = asyncio.ensure_future(worker.run())
    await asyncio.wait_for(hold.started.wait(), 10)
    server.stop()
    hold.release.set()
    with pytest.raises(RedisUnavailableError):
        await asyncio.wait_for(worker.close(redis_timeout=1), 30)
    await asyncio.wait_for(runner, 5)
    assert runner.done() and not runner.cancelled() and runner.exception() is None
