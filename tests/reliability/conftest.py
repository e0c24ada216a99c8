"""Fault and hostile-input tests: heavier variants are marked ``slow`` and skipped unless
``BULLFAST_SLOW=1`` (the default run, which CI runs, stays fast)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bullfast.embedded import RedisServer

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
