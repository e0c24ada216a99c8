"""The ``bullfast`` command, run in a subprocess through both entry points
(``python -m bullfast`` and the installed ``bullfast`` console script) with ``REDIS_URL`` set to
the test server: ``demo``, ``worker`` (processing, SIGTERM), ``inspect`` (counts, job trees,
``--json``) and the error path (one line on stderr, non-zero status; ``--debug`` shows the
traceback). One test runs ``demo`` without ``REDIS_URL`` and checks that the private
redis-server it starts is gone afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from bullfast import FlowProducer, Queue, QueueEvents, Worker, __version__
from bullfast.embedded import free_port
from bullfast.errors import JobFailedError

SCRIPT = shutil.which("bullfast", path=str(Path(sys.executable).parent))
ENTRY_POINTS = {
    "module": [sys.executable, "-m", "bullfast"],
    "script": [SCRIPT or "bullfast"],
}
needs_script = pytest.mark.skipif(SCRIPT is None, reason=f"no bullfast console script next to {sys.executable}")
entry_points = pytest.mark.parametrize(
    "entry", [pytest.param("module"), pytest.param("script", marks=needs_script)]
)

PROCESSOR_MODULE = textwrap.dedent(
    """
    import asyncio, os

    async def handle(job):
        await asyncio.sleep(job.data.get("sleep", 0.05))
        if job.name == "explode":
            raise ValueError("exploded on purpose")
        return {"pid": os.getpid(), "doubled": job.data["n"] * 2}
    """
)


def cli_env(redis_url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    env.update(extra)
    return env


def run_cli(entry: str, args: list[str], env: dict[str, str], cwd: Path | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ENTRY_POINTS[entry] + args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


async def until(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


# ------------------------------------------------------------------------------------------
# demo
# ------------------------------------------------------------------------------------------


@entry_points
def test_demo_with_redis_url(entry: str, redis_url: str, prefix: str) -> None:
    result = run_cli(entry, ["demo", "--children", "200"], cli_env(redis_url))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "on REDIS_URL" in " ".join(out.split())  # rich wraps lines at 80 columns
    expected = sum(i * i for i in range(200))
    reduced = json.dumps({"children": 200, "sum_of_squares": expected})
    assert re.search(r"parent's reduced result\s*│\s*" + re.escape(reduced), out), out
    assert re.search(rf"expected sum of squares\s*│\s*{expected}\b", out), out
    # the demo's queues are obliterated afterwards
    demo_prefix = re.search(r"prefix\s+(bullfast-demo-[0-9a-f]{8})", out)
    assert demo_prefix, out
    client = redis.Redis.from_url(redis_url)
    try:
        assert list(client.scan_iter(match=f"{demo_prefix.group(1)}:*")) == []
    finally:
        client.close()


def test_demo_without_redis_url_stops_its_private_server(tmp_path: Path) -> None:
    env = cli_env(None, TMPDIR=str(tmp_path))
    with open(tmp_path / "out.txt", "w+") as stdout, open(tmp_path / "err.txt", "w+") as stderr:
        proc = subprocess.Popen(ENTRY_POINTS["module"] + ["demo", "--children", "100"], env=env,
                                stdout=stdout, stderr=stderr, text=True)
        servers: dict[int, psutil.Process] = {}
        try:
            parent = psutil.Process(proc.pid)
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    for child in parent.children(recursive=True):
                        if child.pid not in servers and "redis-server" in child.name():
                            servers[child.pid] = child
                except psutil.NoSuchProcess:
                    break
                time.sleep(0.005)
            proc.wait(timeout=max(deadline - time.monotonic(), 1))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        stdout.seek(0)
        stderr.seek(0)
        out, err = stdout.read(), stderr.read()
    assert proc.returncode == 0, err
    assert "on a private redis-server" in " ".join(out.split())  # rich wraps lines at 80 columns
    assert json.dumps({"children": 100, "sum_of_squares": sum(i * i for i in range(100))}) in out
    assert servers, "no redis-server child was seen while the demo ran"
    for server in servers.values():
        assert not server.is_running(), f"redis-server {server.pid} still running after the demo"
    # nothing else started from its temporary directory, which is gone
    assert list(tmp_path.glob("bullfast-redis-*")) == []
    leftovers = []
    for p in psutil.process_iter(["name", "cwd"]):
        if "redis-server" in (p.info["name"] or "") and str(tmp_path) in (p.info["cwd"] or ""):
            leftovers.append(p.pid)
    assert leftovers == []


def redis_servers_under(pid: int, timeout: float = 10) -> dict[int, psutil.Process]:
    """The redis-server children of process ``pid``, once one has appeared."""
    parent = psutil.Process(pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = {c.pid: c for c in parent.children(recursive=True) if "redis-server" in c.name()}
        if found:
            return found
        time.sleep(0.005)
    raise AssertionError("no redis-server child appeared")


@pytest.mark.parametrize(
    "sig, code",
    [
        pytest.param(signal.SIGINT, 130, id="SIGINT"),
        pytest.param(signal.SIGTERM, 128 + signal.SIGTERM, id="SIGTERM"),
    ],
)
def test_demo_without_redis_url_interrupted_stops_its_private_server(
    tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    env = cli_env(None, TMPDIR=str(tmp_path))
    proc = subprocess.Popen(ENTRY_POINTS["module"] + ["demo", "--children", "100000"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    servers: dict[int, psutil.Process] = {}
    try:
        servers = redis_servers_under(proc.pid)
        time.sleep(0.2)  # the demo is adding or processing its 100,001 jobs (seconds of work)
        assert proc.poll() is None, "the demo ended before it could be interrupted"
        proc.send_signal(sig)
        assert proc.wait(30) == code  # SIGINT: the demo obliterates its queues first
        time.sleep(0.1)
        assert [s.pid for s in servers.values() if s.is_running()] == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for server in servers.values():  # do not leave an orphan behind when it fails
            if server.is_running():
                server.terminate()
                server.wait(5)


# ------------------------------------------------------------------------------------------
# worker
# ------------------------------------------------------------------------------------------


async def start_worker(entry: str, redis_url: str, prefix: str, tmp_path: Path, queue: str,
                       *extra: str) -> asyncio.subprocess.Process:
    (tmp_path / "cli_jobs.py").write_text(PROCESSOR_MODULE)
    proc = await asyncio.create_subprocess_exec(
        *ENTRY_POINTS[entry], "worker", "cli_jobs:handle", "--queue", queue, "--prefix", prefix, *extra,
        cwd=str(tmp_path), env=cli_env(redis_url),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    line = await asyncio.wait_for(proc.stderr.readline(), 15)
    assert line.decode().startswith(f"bullfast worker: processing {prefix}:{queue} with cli_jobs:handle"), line
    return proc


@entry_points
async def test_worker_processes_jobs_and_stops_cleanly_on_sigterm(
    entry: str, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    proc = await start_worker(entry, redis_url, prefix, tmp_path, "cw", "--concurrency", "2")
    try:
        async with (
            Queue("cw", connection=redis_url, prefix=prefix) as queue,
            QueueEvents("cw", connection=redis_url, prefix=prefix) as events,
        ):
            jobs = await queue.add_bulk([{"name": "double", "data": {"n": n}} for n in range(4)])
            bad = await queue.add("explode", {"n": 0})
            # all waits start before any job can finish (each takes 50 ms)
            results = await asyncio.gather(
                *(job.wait_until_finished(events, timeout=10) for job in [*jobs, bad]), return_exceptions=True
            )
            assert results[:4] == [{"pid": proc.pid, "doubled": n * 2} for n in range(4)]
            assert isinstance(results[4], JobFailedError) and str(results[4]) == "exploded on purpose"

            # a running job is finished before the worker exits
            slow = await queue.add("double", {"n": 21, "sleep": 0.5})

            async def active() -> bool:
                return await queue.get_job_state(slow.id) == "active"

            await until(active, what="the slow job to be active")
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 10)
            stderr = (await proc.stderr.read()).decode() if proc.stderr else ""
            assert code == 0, stderr
            assert "stopping; running jobs finish first" in stderr
            assert "Traceback" not in stderr
            done = await queue.get_job(slow.id)
            assert done is not None
            assert (await done.get_state(), done.returnvalue) == ("completed", {"pid": proc.pid, "doubled": 42})
            assert await queue.get_job_counts("active", "waiting") == {"active": 0, "waiting": 0}
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_idle_worker_exits_zero_on_sigint(redis_url: str, prefix: str, tmp_path: Path) -> None:
    proc = await start_worker("module", redis_url, prefix, tmp_path, "idle")
    try:
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


# ------------------------------------------------------------------------------------------
# inspect
# ------------------------------------------------------------------------------------------


async def test_inspect_queue_counts(redis_url: str, prefix: str) -> None:
    async with Queue("iq", connection=redis_url, prefix=prefix) as queue:
        await queue.add("a", {})
        await queue.add("b", {})
        await queue.add("c", {}, {"delay": 60_000})
        await queue.add("d", {}, {"priority": 3})
        await queue.pause()
    expected = {
        "active": 0, "completed": 0, "delayed": 1, "failed": 0, "prioritized": 1, "waiting": 2,
        "waiting-children": 0, "paused": 1,
    }

    text = await asyncio.to_thread(run_cli, "module", ["inspect", "iq", "--prefix", prefix], cli_env(redis_url))
    assert text.returncode == 0, text.stderr
    rows = [line.split() for line in text.stdout.splitlines()]
    assert {state: int(count) for state, count in rows} == expected
    assert [state for state, _ in rows] == list(expected)

    as_json = await asyncio.to_thread(
        run_cli, "script" if SCRIPT else "module", ["inspect", "iq", "--prefix", prefix, "--json"],
        cli_env(redis_url),
    )
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == expected


async def kids_processor(job: Any) -> Any:
    if job.name == "bad":
        raise ValueError("kaput")
    return {"v": 42}


async def make_tree(redis_url: str, prefix: str) -> str:
    """root (it) -> k1 ok (completed), k3 mid (it-mid, waiting) -> g1 ok (completed),
    k2 bad (failed, ignored by the parent). Returns the root's id."""
    async with FlowProducer(connection=redis_url, prefix=prefix) as flows:
        root = await flows.add(
            {
                "name": "root",
                "queue_name": "it",
                "children": [
                    {"name": "ok", "queue_name": "it-kids", "opts": {"jobId": "k1"}},
                    {"name": "bad", "queue_name": "it-kids",
                     "opts": {"jobId": "k2", "ignoreDependencyOnFailure": True}},
                    {"name": "mid", "queue_name": "it-mid", "opts": {"jobId": "k3"},
                     "children": [{"name": "ok", "queue_name": "it-kids", "opts": {"jobId": "g1"}}]},
                ],
            }
        )
    async with Queue("it-mid", connection=redis_url, prefix=prefix) as mid:
        worker = Worker("it-kids", kids_processor, connection=redis_url, prefix=prefix, drain_delay=0.2)
        try:
            async def settled() -> bool:
                return await mid.get_job_state("k3") == "waiting"

            await until(settled, what="k3 to be released by its child")
            kids = Queue("it-kids", connection=redis_url, prefix=prefix)
            try:
                async def finished() -> bool:
                    return await kids.get_job_counts("completed", "failed") == {"completed": 2, "failed": 1}

                await until(finished, what="the kids to finish")
            finally:
                await kids.close()
        finally:
            await worker.close()
    return str(root.job.id)


async def test_inspect_job_tree(redis_url: str, prefix: str) -> None:
    root_id = await make_tree(redis_url, prefix)

    text = await asyncio.to_thread(
        run_cli, "module", ["inspect", "it", root_id, "--prefix", prefix], cli_env(redis_url)
    )
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines() == [
        f"it:{root_id} root [waiting-children, attempts 0] (1 pending)",
        '  it-kids:k1 ok [completed, attempts 1] -> {"v": 42}',
        "  it-mid:k3 mid [waiting, attempts 0]",
        '    it-kids:g1 ok [completed, attempts 1] -> {"v": 42}',
        "  it-kids:k2 bad [failed, attempts 1] !! kaput",
    ]

    as_json = await asyncio.to_thread(
        run_cli, "script" if SCRIPT else "module", ["inspect", "it", root_id, "--prefix", prefix, "--json"],
        cli_env(redis_url),
    )
    assert as_json.returncode == 0, as_json.stderr
    tree = json.loads(as_json.stdout)
    assert tree == {
        "queue": "it", "id": root_id, "name": "root", "state": "waiting-children", "attempts_made": 0,
        "pending_children": 1,
        "children": [
            {"queue": "it-kids", "id": "k1", "name": "ok", "state": "completed", "attempts_made": 1,
             "returnvalue": {"v": 42}, "children": []},
            {"queue": "it-mid", "id": "k3", "name": "mid", "state": "waiting", "attempts_made": 0,
             "children": [
                 {"queue": "it-kids", "id": "g1", "name": "ok", "state": "completed", "attempts_made": 1,
                  "returnvalue": {"v": 42}, "children": []},
             ]},
            {"queue": "it-kids", "id": "k2", "name": "bad", "state": "failed", "attempts_made": 1,
             "failed_reason": "kaput", "children": []},
        ],
    }

    # a leaf, and --depth 1 (the job alone)
    leaf = await asyncio.to_thread(
        run_cli, "module", ["inspect", "it-kids", "k1", "--prefix", prefix], cli_env(redis_url)
    )
    assert leaf.stdout.splitlines() == ['it-kids:k1 ok [completed, attempts 1] -> {"v": 42}']
    shallow = await asyncio.to_thread(
        run_cli, "module", ["inspect", "it", root_id, "--prefix", prefix, "--depth", "1"], cli_env(redis_url)
    )
    assert shallow.stdout.splitlines() == [f"it:{root_id} root [waiting-children, attempts 0] (1 pending)"]


# ------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------

ERRORS = [
    pytest.param(["worker", "no_such_module_xyz:handle", "--queue", "q"],
                 "bullfast worker: CliError: cannot import 'no_such_module_xyz'", id="unknown-module"),
    pytest.param(["worker", "cli_jobs", "--queue", "q"],
                 "bullfast worker: CliError: expected MODULE:FUNCTION, got 'cli_jobs'", id="no-function"),
    pytest.param(["worker", "cli_jobs:nope", "--queue", "q"],
                 "bullfast worker: CliError: module 'cli_jobs' has no attribute 'nope'", id="unknown-function"),
    pytest.param(["inspect", "q", "no-such-job", "--prefix", "{prefix}"],
                 "bullfast inspect: CliError: no job 'no-such-job' in queue {prefix}:q", id="unknown-job"),
    pytest.param(["demo", "--children", "0"],
                 "bullfast demo: CliError: --children must be at least 1", id="bad-children"),
]


@entry_points
@pytest.mark.parametrize("args, message", ERRORS)
def test_errors_are_one_readable_line(
    entry: str, args: list[str], message: str, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    (tmp_path / "cli_jobs.py").write_text(PROCESSOR_MODULE)
    result = run_cli(entry, [a.format(prefix=prefix) for a in args], cli_env(redis_url), cwd=tmp_path)
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(message.format(prefix=prefix)), lines[0]
    assert "Traceback" not in result.stderr


def test_unreachable_redis_is_one_line(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}"
    result = run_cli("module", ["inspect", "q"], cli_env(url), cwd=tmp_path)
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bullfast inspect: "), result.stderr
    assert "Traceback" not in result.stderr


@entry_points
def test_debug_shows_the_traceback(entry: str, redis_url: str, prefix: str, tmp_path: Path) -> None:
    result = run_cli(entry, ["--debug", "inspect", "q", "no-such-job", "--prefix", prefix], cli_env(redis_url))
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr
    assert f"CliError: no job 'no-such-job' in queue {prefix}:q" in result.stderr

    result = run_cli(entry, ["--debug", "worker", "no_such_module_xyz:f", "--queue", "q"], cli_env(redis_url),
                     cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr
    assert "cannot import 'no_such_module_xyz'" in result.stderr


@entry_points
def test_version(entry: str) -> None:
    result = run_cli(entry, ["--version"], cli_env(None))
    assert result.returncode == 0
    assert result.stdout.strip() == f"bullfast {__version__}"
