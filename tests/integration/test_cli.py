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

    def handle_plain(job):  # a plain function: run in a thread
        import time
        time.sleep(job.data.get("sleep", 0.05))
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
    t0 = time.perf_counter()
    result = run_cli(entry, ["demo", "--children", "200"], cli_env(redis_url))
    elapsed = time.perf_counter() - t0
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "on REDIS_URL" in " ".join(out.split())  # rich wraps lines at 80 columns
    expected = sum(i * i for i in range(200))
    reduced = json.dumps({"children": 200, "sum_of_squares": expected})
    assert re.search(r"parent's reduced result\s*│\s*" + re.escape(reduced), out), out
    assert re.search(rf"expected sum of squares\s*│\s*{expected}\b", out), out
    # the wall time is the whole command's, not the sum of its two timed phases
    add = float(re.search(r"│\s*add\s*│[^│]* in ([0-9.]+)s", out).group(1))  # type: ignore[union-attr]
    process = float(re.search(r"│\s*process\s*│[^│]* in ([0-9.]+)s", out).group(1))  # type: ignore[union-attr]
    wall = float(re.search(r"│\s*wall time\s*│\s*([0-9.]+)s", out).group(1))  # type: ignore[union-attr]
    assert add + process < wall <= elapsed, (add, process, wall, elapsed)
    # the demo's queues are obliterated afterwards
    demo_prefix = re.search(r"prefix\s+(bullfast-demo-[0-9a-f]{8})", out)
    assert demo_prefix, out
    client = redis.Redis.from_url(redis_url)
    try:
        assert list(client.scan_iter(match=f"{demo_prefix.group(1)}:*")) == []
    finally:
        client.close()


def test_one_signal_after_the_summary_does_not_stop_the_clean_up(redis_url: str) -> None:
    """Ctrl-C once the summary is out, while the demo removes its jobs from the user's server:
    they are still removed (the signal cancelled the clean-up: ~10,000 keys were left)."""
    env = cli_env(redis_url, COLUMNS="200")
    proc = subprocess.Popen(ENTRY_POINTS["module"] + ["demo", "--children", "20000"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "wall time" in line:
                proc.send_signal(signal.SIGINT)
                break
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = "".join(lines) + out
    assert proc.returncode in (0, 130), err
    demo_prefix = re.search(r"prefix\s+(bullfast-demo-[0-9a-f]{8})", text)
    assert demo_prefix, text
    client = redis.Redis.from_url(redis_url)
    try:
        assert list(client.scan_iter(match=f"{demo_prefix.group(1)}:*", count=1000)) == []
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


class RunningDemo:
    """``bullfast demo`` without REDIS_URL, in a session of its own (so a signal can go to its
    whole process group, as Ctrl-C in a terminal does, without reaching pytest)."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        env = cli_env(None, TMPDIR=str(tmp_path), COLUMNS="200")  # no rich line wrapping
        self.stderr_file = open(tmp_path / "stderr.txt", "w+")
        self.proc = subprocess.Popen(
            ENTRY_POINTS["module"] + ["demo", *args], env=env, stdout=subprocess.PIPE,
            stderr=self.stderr_file, text=True, start_new_session=True,
        )
        assert self.proc.stdout is not None
        self.stdout = self.proc.stdout
        self.lines: list[str] = []
        self.server: psutil.Process | None = None

    def read_until(self, marker: str) -> str:
        for line in self.stdout:
            self.lines.append(line)
            if marker in line:
                return line
        raise AssertionError(f"the demo ended before printing {marker!r}: {''.join(self.lines)}")

    def redis_server(self) -> psutil.Process:
        found = [c for c in psutil.Process(self.proc.pid).children() if "redis-server" in c.name()]
        assert len(found) == 1, found
        self.server = found[0]
        return found[0]

    def worker_processes(self, count: int) -> list[psutil.Process]:
        """The demo's worker processes once ``count`` of them run (multiprocessing's resource
        tracker is a Python child too, but not one of them)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = [c for c in psutil.Process(self.proc.pid).children()
                     if "spawn_main" in " ".join(c.cmdline()) and "resource_tracker" not in " ".join(c.cmdline())]
            if len(found) >= count:
                return found
            time.sleep(0.01)
        raise AssertionError("the worker processes did not start")

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        out, _ = self.proc.communicate(timeout=timeout)
        self.stderr_file.seek(0)
        return self.proc.returncode, "".join(self.lines) + out, self.stderr_file.read()

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self.server is not None and self.server.is_running():  # no orphan when a test fails
            self.server.kill()
        self.stderr_file.close()


def completed_map_jobs(server: psutil.Process, demo_prefix: str) -> int:
    port = next(c.laddr.port for c in server.net_connections("tcp") if c.status == psutil.CONN_LISTEN)
    client = redis.Redis(port=port)
    try:
        return int(client.zcard(f"{demo_prefix}:demo-map:completed"))
    finally:
        client.close()


SIGNALS = [
    pytest.param(signal.SIGINT, 130, id="SIGINT"),
    pytest.param(signal.SIGTERM, 143, id="SIGTERM"),
]


@pytest.mark.parametrize("sig, code", SIGNALS)
@pytest.mark.parametrize("phase", ["adding", "processing"])
def test_demo_interrupted_cleans_up_and_says_so(tmp_path: Path, sig: signal.Signals, code: int, phase: str) -> None:
    # 200,000 children take seconds to add; 100,000 seconds to process
    demo = RunningDemo(tmp_path, "--children", "200000" if phase == "adding" else "100000")
    try:
        header = demo.read_until("map-reduce demo")
        server = demo.redis_server()
        if phase == "processing":
            demo.read_until("added ")
            demo_prefix = re.search(r"bullfast-demo-[0-9a-f]{8}", header).group(0)  # type: ignore[union-attr]
            deadline = time.monotonic() + 30
            while completed_map_jobs(server, demo_prefix) == 0:
                assert time.monotonic() < deadline, "no map job completed"
                time.sleep(0.01)
        demo.proc.send_signal(sig)
        status, out, err = demo.finish()
        assert status == code, (err, out)
        assert err == f"bullfast demo: interrupted by {sig.name}\n"
        assert "summary" not in out
        if phase == "adding":
            assert "added " not in out, "the add had ended before the signal"
        assert not server.is_running(), f"redis-server {server.pid} outlived the demo"
        assert list(tmp_path.glob("bullfast-redis-*")) == []
    finally:
        demo.cleanup()


def test_ctrl_c_to_the_process_group_with_worker_processes(tmp_path: Path) -> None:
    """Ctrl-C in a terminal: SIGINT to every process of the group. The private redis-server is
    not in it (it must serve the cleanup), the worker processes ignore it (no KeyboardInterrupt
    tracebacks) and are stopped by the demo."""
    demo = RunningDemo(tmp_path, "--children", "100000", "--workers", "2", "--concurrency", "20")
    try:
        header = demo.read_until("map-reduce demo")
        server = demo.redis_server()
        demo.read_until("added ")
        workers = demo.worker_processes(2)
        demo_prefix = re.search(r"bullfast-demo-[0-9a-f]{8}", header).group(0)  # type: ignore[union-attr]
        deadline = time.monotonic() + 30
        while completed_map_jobs(server, demo_prefix) == 0:
            assert time.monotonic() < deadline, "no map job completed"
            time.sleep(0.01)
        os.killpg(demo.proc.pid, signal.SIGINT)
        status, out, err = demo.finish()
        assert status == 130, err
        assert err == "bullfast demo: interrupted by SIGINT\n"
        assert "summary" not in out
        assert not server.is_running()
        assert [w.pid for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE] == []
    finally:
        demo.cleanup()


@pytest.mark.parametrize(
    "args, message",
    [
        pytest.param(["--children", "0"], "argument --children: must be at least 1, not 0", id="zero-children"),
        pytest.param(["--children", "-5"], "argument --children: must be at least 1, not -5", id="negative-children"),
        pytest.param(["--concurrency", "0"], "argument --concurrency: must be at least 1, not 0", id="zero-concurrency"),
        pytest.param(["--concurrency", "many"], "argument --concurrency: not a whole number: 'many'", id="bad-concurrency"),
        pytest.param(["--workers", "-1"], "argument --workers: must be 0 or more, not -1", id="negative-workers"),
    ],
)
def test_demo_refuses_bad_arguments_before_starting_anything(tmp_path: Path, args: list[str], message: str) -> None:
    # nothing listens at this REDIS_URL: a demo that got as far as connecting would fail with
    # a connection error (status 1) instead; without REDIS_URL it would start a server in TMPDIR
    unused = f"redis://127.0.0.1:{free_port()}"
    for env in (cli_env(unused), cli_env(None, TMPDIR=str(tmp_path))):
        result = run_cli("module", ["demo", *args], env)
        assert result.returncode == 2, result.stderr
        assert result.stdout == ""
        assert result.stderr.startswith("usage: bullfast demo")
        assert result.stderr.splitlines()[-1] == f"bullfast demo: error: {message}"
    assert list(tmp_path.iterdir()) == []


def test_demo_without_rich_prints_a_hint_and_plain_progress(redis_url: str, tmp_path: Path) -> None:
    hidden = tmp_path / "no_rich"
    (hidden / "rich").mkdir(parents=True)
    (hidden / "rich" / "__init__.py").write_text("raise ImportError('rich is hidden by the test')\n")
    env = cli_env(redis_url, PYTHONPATH=str(hidden))
    result = run_cli("module", ["demo", "--children", "300"], env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "bullfast demo: rich is not installed, so no progress bars (pip install 'bullfast[demo]'); "
        "plain progress follows"
    ]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("bullfast ") and "300 children on REDIS_URL" in lines[0]
    assert lines[1].startswith("added 301 jobs atomically in ")
    assert "demo-map completed 300/300, failed 0; demo-reduce completed 1/1" in lines
    expected = json.dumps({"children": 300, "sum_of_squares": sum(i * i for i in range(300))})
    assert f"  parent's reduced result  {expected}" in lines
    assert any(re.fullmatch(r"  wall time\s+[0-9.]+s", line) for line in lines), lines


# ------------------------------------------------------------------------------------------
# worker
# ------------------------------------------------------------------------------------------


async def start_worker(entry: str, redis_url: str, prefix: str, tmp_path: Path, queue: str,
                       *extra: str, target: str = "cli_jobs:handle") -> asyncio.subprocess.Process:
    (tmp_path / "cli_jobs.py").write_text(PROCESSOR_MODULE)
    proc = await asyncio.create_subprocess_exec(
        *ENTRY_POINTS[entry], "worker", target, "--queue", queue, "--prefix", prefix, *extra,
        cwd=str(tmp_path), env=cli_env(redis_url),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    line = await asyncio.wait_for(proc.stderr.readline(), 15)
    assert line.decode().startswith(f"bullfast worker: processing {prefix}:{queue} with {target}"), line
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


@pytest.mark.parametrize("target", ["cli_jobs:handle", "cli_jobs:handle_plain"])
async def test_second_signal_abandons_running_jobs(redis_url: str, prefix: str, tmp_path: Path, target: str) -> None:
    """Also with a plain function, whose thread Python would wait for at exit."""
    proc = await start_worker("module", redis_url, prefix, tmp_path, "cw2", target=target)
    assert proc.stderr is not None
    try:
        async with Queue("cw2", connection=redis_url, prefix=prefix) as queue:
            slow = await queue.add("double", {"n": 1, "sleep": 60})

            async def active() -> bool:
                return await queue.get_job_state(slow.id) == "active"

            await until(active, what="the slow job to be active")
            proc.send_signal(signal.SIGTERM)
            line = await asyncio.wait_for(proc.stderr.readline(), 10)
            assert line.decode().startswith("bullfast worker: stopping; running jobs finish first"), line
            proc.send_signal(signal.SIGINT)
            assert await asyncio.wait_for(proc.wait(), 20) == 130
            rest = (await proc.stderr.read()).decode()
            assert rest == "bullfast worker: interrupted by SIGINT\n"
            # abandoned, not lost: still active (its lock expires and the stalled check returns it)
            assert await queue.get_job_state(slow.id) == "active"
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
    assert shallow.stdout.splitlines() == [
        f"it:{root_id} root [waiting-children, attempts 0] (1 pending)",
        "  ... 3 children below --depth",
    ]


async def test_inspect_counts_the_children_it_does_not_show(redis_url: str, prefix: str) -> None:
    async with FlowProducer(connection=redis_url, prefix=prefix) as flows:
        await flows.add({
            "name": "root", "queue_name": "wide", "opts": {"jobId": "w"},
            "children": [{"name": "kid", "queue_name": "wide-kids", "opts": {"jobId": f"c{i:02}"}} for i in range(25)],
        })

    def inspect(*extra: str) -> subprocess.CompletedProcess[str]:
        return run_cli("module", ["inspect", "wide", "w", "--prefix", prefix, *extra], cli_env(redis_url))

    capped = await asyncio.to_thread(inspect)
    assert capped.returncode == 0, capped.stderr
    lines = capped.stdout.splitlines()
    assert lines[0] == "wide:w root [waiting-children, attempts 0] (25 pending)"
    assert len([line for line in lines if line.startswith("  wide-kids:c")]) == 20
    assert lines[-1] == ("  ... and 5 more not shown (beyond --max-children, or removed from Redis; "
                         "--all lists every child still in Redis)")

    fewer = await asyncio.to_thread(inspect, "--max-children", "3")
    assert fewer.stdout.splitlines()[-1].startswith("  ... and 22 more not shown")

    every = await asyncio.to_thread(inspect, "--all")
    lines = every.stdout.splitlines()
    assert sorted(line.split()[0] for line in lines[1:]) == [f"wide-kids:c{i:02}" for i in range(25)]

    as_json = json.loads((await asyncio.to_thread(inspect, "--json")).stdout)
    assert len(as_json["children"]) == 20
    assert (as_json["children_not_shown"], as_json["children_not_shown_why"]) == (5, "max_children")
    assert "children_not_shown" not in json.loads((await asyncio.to_thread(inspect, "--json", "--all")).stdout)

    # children removed from Redis are counted too, and said to be gone
    async with Queue("wide-kids", connection=redis_url, prefix=prefix) as kids:
        await kids.client.delete(*(kids.key(f"c{i:02}") for i in range(22)))
    gone = await asyncio.to_thread(inspect, "--all")
    lines = gone.stdout.splitlines()
    assert sorted(lines[1:4]) == [f"  wide-kids:c{i} kid [waiting, attempts 0]" for i in (22, 23, 24)]
    assert lines[4:] == ["  ... and 22 more whose job hash is gone (removed from Redis)"]


# ------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------

ERRORS = [
    pytest.param(["worker", "no_such_module_xyz:handle", "--queue", "q"],
                 "bullfast worker: cannot import 'no_such_module_xyz'", id="unknown-module"),
    pytest.param(["worker", "cli_jobs", "--queue", "q"],
                 "bullfast worker: expected MODULE:FUNCTION, got 'cli_jobs'", id="no-function"),
    pytest.param(["worker", "cli_jobs:nope", "--queue", "q"],
                 "bullfast worker: module 'cli_jobs' has no attribute 'nope'", id="unknown-function"),
    pytest.param(["inspect", "q", "no-such-job", "--prefix", "{prefix}"],
                 "bullfast inspect: no job 'no-such-job' in queue {prefix}:q", id="unknown-job"),
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


@pytest.mark.parametrize("command", ["worker", "inspect", "diagnose"])
def test_commands_on_queues_connect_to_url_then_redis_url_then_localhost(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bullfast import cli

    words = {"worker": ["worker", "m:f", "--queue", "q"], "inspect": ["inspect", "q"],
             "diagnose": ["diagnose", "q", "j"]}[command]
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert cli._server_url(cli.parser().parse_args(words)) == "redis://localhost:6379"
    monkeypatch.setenv("REDIS_URL", "redis://from-env:1")
    assert cli._server_url(cli.parser().parse_args(words)) == "redis://from-env:1"
    assert cli._server_url(cli.parser().parse_args([*words, "--url", "redis://given:2"])) == "redis://given:2"

    help_text = run_cli("module", [command, "--help"], cli_env(None)).stdout
    assert "--url" in help_text and "redis://localhost:6379" in help_text and "REDIS_URL" in " ".join(help_text.split())


def test_inspect_never_starts_a_private_server(redis_url: str, prefix: str, tmp_path: Path) -> None:
    """Without REDIS_URL it uses --url (or localhost), not an empty redis-server of its own."""
    async def add() -> None:
        async with Queue("uq", connection=redis_url, prefix=prefix) as queue:
            await queue.add("a", {})

    asyncio.run(add())
    env = cli_env(None, TMPDIR=str(tmp_path))
    given = run_cli("module", ["inspect", "uq", "--prefix", prefix, "--url", redis_url, "--json"], env)
    assert given.returncode == 0, given.stderr
    assert json.loads(given.stdout)["waiting"] == 1
    # a server nobody listens on: one line naming it, and no redis-server started instead
    port = free_port()
    for command in (["inspect", "uq"], ["diagnose", "uq", "1"]):
        down = run_cli("module", [*command, "--url", f"redis://127.0.0.1:{port}"], env)
        assert down.returncode == 1
        assert len(down.stderr.splitlines()) == 1 and str(port) in down.stderr, down.stderr
    assert list(tmp_path.glob("bullfast-redis-*")) == []


async def test_worker_with_url_and_no_redis_url(redis_url: str, prefix: str, tmp_path: Path) -> None:
    (tmp_path / "cli_jobs.py").write_text(PROCESSOR_MODULE)
    proc = await asyncio.create_subprocess_exec(
        *ENTRY_POINTS["module"], "worker", "cli_jobs:handle", "--queue", "uw", "--prefix", prefix,
        "--url", redis_url, cwd=str(tmp_path), env=cli_env(None), stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        await asyncio.wait_for(proc.stderr.readline(), 15)
        async with (
            Queue("uw", connection=redis_url, prefix=prefix) as queue,
            QueueEvents("uw", connection=redis_url, prefix=prefix) as events,
        ):
            job = await queue.add("double", {"n": 4})
            assert await job.wait_until_finished(events, timeout=10) == {"pid": proc.pid, "doubled": 8}
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


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


def test_demo_on_an_unreachable_redis_url_tells_the_first_error(tmp_path: Path) -> None:
    """The clean-up's own failure (obliterate, with the server gone) hid the add's."""
    result = run_cli("module", ["demo", "--children", "10"], cli_env(f"redis://127.0.0.1:{free_port()}"),
                     cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "RedisUnavailableError" in lines[0], result.stderr
    assert "obliterate" not in lines[0], lines[0]


def test_inspect_of_a_queue_that_is_not_there_says_so(redis_url: str, prefix: str) -> None:
    result = run_cli("module", ["inspect", "no-such-queue", "--prefix", prefix], cli_env(redis_url))
    assert result.returncode == 0
    assert f"no queue {prefix}:no-such-queue in this Redis" in result.stderr
