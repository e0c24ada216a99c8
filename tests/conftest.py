"""Shared fixtures: a private Redis for the whole run, a unique key prefix per test.

With REDIS_URL set the tests use that server and touch only keys under their own prefixes
(deleted afterwards); otherwise one private redis-server is started for the session.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import redis
import redis.asyncio as aioredis

from bullfast import _core_py, core
from bullfast.embedded import RedisServer


@pytest.fixture(scope="session")
def shared_redis_url() -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    with RedisServer() as server:
        yield server.url


@pytest.fixture(scope="session")
def private_redis_url(shared_redis_url: str) -> Iterator[str]:
    """A server nobody else uses: the session's own, or, when REDIS_URL names a shared one,
    a private server started for the tests that do server-wide things (SCRIPT FLUSH)."""
    if not os.environ.get("REDIS_URL"):
        yield shared_redis_url
        return
    with RedisServer() as server:
        yield server.url


@pytest.fixture
def redis_url(request: pytest.FixtureRequest, shared_redis_url: str) -> str:
    """The server of this test: ``REDIS_URL`` or the session's private one; tests marked
    ``private_redis`` never run on a server given by ``REDIS_URL``."""
    if request.node.get_closest_marker("private_redis"):
        url: str = request.getfixturevalue("private_redis_url")
        return url
    return shared_redis_url


def redis_options(url: str) -> dict[str, Any]:
    """redis-py's options naming the server of ``url``: host and port, and its database and
    credentials when it has them (a REDIS_URL may name db 5 of a server with a password)."""
    parts = urlsplit(url)
    opts: dict[str, Any] = {"host": parts.hostname or "127.0.0.1", "port": parts.port or 6379}
    if parts.path.strip("/"):
        opts["db"] = int(parts.path.strip("/"))
    if parts.username:
        opts["username"] = unquote(parts.username)
    if parts.password:
        opts["password"] = unquote(parts.password)
    return opts


def delete_prefix(url: str, prefix: str, pattern: str = "{}:*") -> None:
    """Delete the keys under ``prefix`` (``pattern``: which keys, ``{}`` standing for it)."""
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=pattern.format(prefix), count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
    finally:
        client.close()


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards: every key that holds
    it, also those of the prefixes tests derive from it (``f"{prefix}-single"``) and of queues
    named with it under another prefix (``bull:<prefix>-forms:...``)."""
    p = f"bft-{uuid.uuid4().hex[:10]}"
    yield p
    delete_prefix(redis_url, p, "*{}*")


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.from_url(redis_url)
    yield c
    await c.aclose()


_COMPILED_FUNCTIONS = {name: getattr(core, name) for name in _core_py.__all__ if name != "IS_COMPILED"}


@pytest.fixture(params=["compiled", "pure"])
def each_core(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test once with the compiled core and once with the pure-Python twin."""
    if request.param == "pure":
        for name in _COMPILED_FUNCTIONS:
            monkeypatch.setattr(core, name, getattr(_core_py, name))
    elif not core.IS_COMPILED:
        pytest.skip("the compiled core is not built (BULLFAST_PURE_PYTHON / BULLFAST_NO_EXTENSION)")
    return request.param
