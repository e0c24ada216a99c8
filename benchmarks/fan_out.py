#!/usr/bin/env python3
"""A million children: bullfast's streamed fan-out, end to end, and the Redis stall it avoids.

    python benchmarks/fan_out.py [--children 1000000] [--compare-children 50000] [--reps 3]
        [--modes sequential,overlapped] [--concurrency 50] [--quick] [--update-readme]

Main runs (``--children`` N, default 1,000,000): one parent (queue ``reduce``, data ``{"n": N}``)
whose N children (queue ``map``, data ``{"i": k, "payload": sha256(str(k)).hexdigest()}``, 64
characters) are added with ``FlowProducer.fan_out(parent)`` + ``fan.add_children(generator)``;
the generator makes each child when the fan-out asks for it, so the producer never holds the
list. A worker process runs a bullfast ``Worker`` on ``map`` (concurrency 50, returns
``{"n": i}``) and one on ``reduce`` (concurrency 1) whose parent job folds the children's values
with ``await job.reduce_children_values(...)`` into ``{"sum": ..., "count": ...}``; the result must
be ``sum(range(N))`` over N children (checked in the worker process and again in Redis).

* ``sequential``: the producer process adds everything while no worker runs (clean add numbers:
  add throughput, longest Redis command, PING probe, client RSS, Redis memory per job, measured
  after the producer exited and before any processing); then the worker process starts and
  processes. End-to-end = add seconds + processing seconds.
* ``overlapped``: a producer process and a worker process are started together; once both are
  ready (connected, imported), the workers are started and the producer begins adding, so
  children run while later chunks are still being added. End-to-end = (N + 1) / (time from
  the start of the add to the parent's ``completed`` event). Both processes take their
  timestamps from ``CLOCK_MONOTONIC`` (one clock for the whole host).

Comparison (``--compare-children``, default 50,000; ``--reps`` repetitions, interleaved): the
same 1+N shape added in one go, no workers, each in a fresh process after a warm-up add of the
same shape on other queues: Node ``bullmq`` 6.7.0 ``FlowProducer.add`` (one MULTI/EXEC holding
one EVALSHA per job), bullfast ``FlowProducer.add`` (one MULTI/EXEC of chunk calls), and
bullfast's streamed ``fan_out`` at the same N.

Redis-side measurements, every measurement: ``LATENCY`` monitor (``latency-monitor-threshold``
1 ms, reset at the start of each window; ``LATENCY LATEST``'s max over the ``command`` and
``fast-command`` events is the longest command, and an EXEC counts as one command of its whole
duration) and ``SLOWLOG`` (``slowlog-log-slower-than`` 5 ms: the slowest single command; EXEC
is never logged, so a transaction's stall does not show there). A probe process (separate
from the producer and the workers) sends a ``PING`` about every millisecond on its own
connection and records every round trip: its longest wait is the stall other clients see.
The server's settings are restored at the end.

Redis is a private ``redis-server`` (``bullfast.embedded.RedisServer``) unless ``REDIS_URL`` is
set; every measurement has its own key prefix, deleted afterwards. Results:
``benchmarks/results/fan_out-<stamp>.json`` / ``.md`` and ``fan_out-latest.*``;
``--update-readme`` replaces the fan-out section of ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import gc
import hashlib
import json
import os
import queue
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common

from _common import (  # noqa: E402  (standard library only, see _common.py)
    HERE,
    REPO,
    Impl,
    command_line,
    delete_prefix,
    fmt_rate,
    host_busy_seconds,
    machine_info,
    markdown_table,
    setup_bullmq_node,
    src_fingerprint,
    src_state,
    start_redis,
    tail,
    text_table,
    update_readme,
    wait_for_idle,
    write_results,
)

NODE_RUNNER = HERE / "node" / "fan_out.mjs"

MAP_Q, REDUCE_Q = "map", "reduce"
WARM_MAP_Q, WARM_REDUCE_Q = "warm-map", "warm-reduce"

README_START = "<!-- fan_out results: start -->"
README_END = "<!-- fan_out results: end -->"

TARGET_ADD_RATE = 60_000  # jobs/s, streamed add of 1,000,000 children (from the issue)
TARGET_CLIENT_MB = 200  # producer peak RSS (from the issue)
README_CLAIM_MS = 20  # README: "no command over ~20 ms however many children"

COMPARE_METHODS = ("bullmq-node-add", "bullfast-add", "bullfast-stream")
METHOD_LABELS = {
    "bullmq-node-add": "Node bullmq `FlowProducer.add` (one MULTI/EXEC)",
    "bullfast-add": "bullfast `FlowProducer.add` (one MULTI/EXEC)",
    "bullfast-stream": "bullfast `fan_out` + `add_children` (streamed)",
}

# ---------------------------------------------------------------------------------------------
# Inputs (keep in step with node/fan_out.mjs)
# ---------------------------------------------------------------------------------------------


def payload(k: int) -> str:
    return hashlib.sha256(str(k).encode()).hexdigest()  # 64 chars


def parent_node(n: int, reduce_q: str = REDUCE_Q) -> dict[str, Any]:
    return {"name": "reduce", "queue_name": reduce_q, "data": {"n": n}}


def children(n: int, map_q: str = MAP_Q) -> Iterator[dict[str, Any]]:
    """The children, made one at a time as the fan-out asks for them."""
    for k in range(n):
        yield {"name": "map", "queue_name": map_q, "data": {"i": k, "payload": payload(k)}}


def whole_tree(n: int, map_q: str = MAP_Q, reduce_q: str = REDUCE_Q) -> dict[str, Any]:
    return {**parent_node(n, reduce_q), "children": list(children(n, map_q))}


def expected_sum(n: int) -> int:
    return n * (n - 1) // 2


# ---------------------------------------------------------------------------------------------
# Child processes: producer, workers, probe (protocol: "READY {json}", "go", "ADDED|DONE {json}")
# ---------------------------------------------------------------------------------------------


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _say(word: str, data: dict[str, Any]) -> None:
    sys.stdout.write(f"{word} {json.dumps(data)}\n")
    sys.stdout.flush()


def _wait_go() -> None:
    word = sys.stdin.readline().strip()
    if word != "go":
        raise RuntimeError(f"expected 'go' on stdin, got {word!r}")


async def _producer(args: argparse.Namespace) -> None:
    """Add one 1+N fan-out with bullfast: ``stream`` (fan_out + add_children) or ``add``."""
    import bullfast
    from bullfast import FlowProducer, core

    fp = FlowProducer(connection=args.url, prefix=args.prefix)
    try:
        tree = None
        if args.method == "stream":
            async with fp.fan_out(parent_node(10, WARM_REDUCE_Q)) as warm:  # loads the scripts
                await warm.add_children(children(10, WARM_MAP_Q))
        else:
            await fp.add(whole_tree(10, WARM_MAP_Q, WARM_REDUCE_Q))
            tree = whole_tree(args.n)  # built before timing, as in flow_add.py
        gc.collect()
        before = _max_rss_mb()
        _say("READY", {"before_add_rss_mb": before})
        _wait_go()
        c0 = time.process_time()
        t0 = time.monotonic_ns()
        if args.method == "stream":
            async with fp.fan_out(parent_node(args.n), chunk_size=args.chunk_size, window=args.window) as fan:
                added = await fan.add_children(children(args.n))
            # leaving the block sealed it: the parent may run once every child is done
            assert fan.job is not None
            parent_id = str(fan.job.id)
        else:
            assert tree is not None
            root = await fp.add(tree)
            added = len(root.children or ())
            parent_id = str(root.job.id)
        t1 = time.monotonic_ns()
        cpu = time.process_time() - c0
        if added != args.n:
            raise RuntimeError(f"added {added} children, expected {args.n}")
        kind = "compiled" if core.IS_COMPILED else "pure-Python"
        _say("ADDED", {
            "seconds": (t1 - t0) / 1e9,
            "t_add_start_ns": t0,
            "t_add_end_ns": t1,
            "added": added,
            "parent_id": parent_id,
            "client_cpu_seconds": cpu,
            "before_add_rss_mb": before,
            "peak_rss_mb_self": _max_rss_mb(),
            "version": f"bullfast {bullfast.__version__} ({kind} core)",
        })
    finally:
        await fp.close()


async def _workers(args: argparse.Namespace) -> None:
    """The map worker (concurrency C) and the reduce worker (1); ends when the parent completes."""
    import redis.asyncio as aioredis

    from bullfast import Worker

    check = aioredis.Redis.from_url(args.url)
    await check.ping()
    await check.aclose()
    _say("READY", {})
    _wait_go()

    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()
    stats = {"children_completed": 0, "first_child_done_ns": 0, "last_child_done_ns": 0, "reduce_seconds": 0.0}
    errors: list[str] = []

    async def map_job(job: Any) -> Any:
        data = job.data
        if len(data["payload"]) != 64:
            raise ValueError(f"bad payload in {job.id}")
        return {"n": data["i"]}

    async def reduce_job(job: Any) -> Any:
        r0 = time.perf_counter()
        total, count = await job.reduce_children_values(lambda acc, key, v: (acc[0] + v["n"], acc[1] + 1), (0, 0))
        stats["reduce_seconds"] = time.perf_counter() - r0
        return {"sum": total, "count": count}

    per_tick: list[int] = []  # children completed per 100 ms since the workers started

    def child_done(job: Any, result: Any, *_: Any) -> None:
        now = time.monotonic_ns()
        tick = (now - t0) // 100_000_000
        while len(per_tick) <= tick:
            per_tick.append(0)
        per_tick[tick] += 1
        if not stats["first_child_done_ns"]:
            stats["first_child_done_ns"] = now
        stats["last_child_done_ns"] = now
        stats["children_completed"] += 1

    def parent_done(job: Any, result: Any, *_: Any) -> None:
        if not done.done():
            done.set_result((time.monotonic_ns(), str(job.id), result))

    def failed(job: Any, err: Any, *_: Any) -> None:
        if not done.done():
            done.set_exception(RuntimeError(f"job {getattr(job, 'id', '?')} failed: {err!r}"))

    c0 = time.process_time()
    t0 = time.monotonic_ns()
    opts = {"connection": args.url, "prefix": args.prefix}
    map_worker = Worker(MAP_Q, map_job, concurrency=args.concurrency, **opts)
    reduce_worker = Worker(REDUCE_Q, reduce_job, concurrency=1, **opts)
    map_worker.on("completed", child_done)
    reduce_worker.on("completed", parent_done)
    for w in (map_worker, reduce_worker):
        w.on("failed", failed)
        w.on("error", lambda err, *_: errors.append(repr(err)))
    try:
        t1, parent_id, result = await asyncio.wait_for(done, args.deadline)
    except asyncio.TimeoutError:
        raise RuntimeError(f"the parent did not complete within {args.deadline:.0f}s "
                           f"({stats['children_completed']} children completed)") from None
    cpu = time.process_time() - c0
    await asyncio.gather(map_worker.close(), reduce_worker.close())
    expected = {"sum": expected_sum(args.n), "count": args.n}
    if result != expected:
        raise RuntimeError(f"WRONG RESULT: the parent returned {result!r}, expected {expected!r}")
    _say("DONE", {
        "t_workers_start_ns": t0,
        "t_parent_done_ns": t1,
        "seconds": (t1 - t0) / 1e9,
        "parent_id": parent_id,
        "result": result,
        "client_cpu_seconds": cpu,
        "worker_errors": errors[:5],
        "worker_error_count": len(errors),
        "completed_per_100ms": per_tick,
        **stats,
    })


def _probe(args: argparse.Namespace) -> None:
    """PING every ``probe_interval_ms`` on one raw connection; on SIGTERM write (sent_ns, rtt_ns)
    pairs to ``args.out``. CLOCK_MONOTONIC, as the other processes."""
    url = urlsplit(args.url)
    if url.scheme != "redis":
        raise SystemExit(f"the probe speaks plain redis:// only, not {url.scheme}://")
    sock = socket.create_connection((url.hostname or "127.0.0.1", url.port or 6379))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def command(*parts: str) -> bytes:
        out = f"*{len(parts)}\r\n".encode()
        for p in parts:
            b = p.encode()
            out += b"$%d\r\n%s\r\n" % (len(b), b)
        sock.sendall(out)
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(256)
            if not chunk:
                raise ConnectionError("Redis closed the probe's connection")
            reply += chunk
        return reply

    if url.password:
        auth = ("AUTH", unquote(url.username), unquote(url.password)) if url.username else ("AUTH", unquote(url.password))
        if not command(*auth).startswith(b"+OK"):
            raise SystemExit("probe: AUTH failed")
    command("CLIENT", "SETNAME", "bfbench-probe")
    stop = False

    def on_term(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    ping = b"*1\r\n$4\r\nPING\r\n"
    samples = array.array("q")
    interval = int(args.probe_interval_ms * 1e6)
    sys.stdout.write("READY {}\n")
    sys.stdout.flush()
    due = time.monotonic_ns()
    while not stop:
        t0 = time.monotonic_ns()
        sock.sendall(ping)
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(64)
            if not chunk:
                raise ConnectionError("Redis closed the probe's connection")
            reply += chunk
        t1 = time.monotonic_ns()
        samples.append(t0)
        samples.append(t1 - t0)
        due += interval
        if due > t1:
            time.sleep((due - t1) / 1e9)
        else:
            due = t1  # a long wait: no burst of catch-up pings
    with open(args.out, "wb") as f:
        samples.tofile(f)
    sys.stdout.write(f"DONE {json.dumps({'samples': len(samples) // 2})}\n")
    sys.stdout.flush()


def role_main(args: argparse.Namespace) -> int:
    try:
        if args.role == "probe":
            _probe(args)
        elif args.role == "producer":
            asyncio.run(_producer(args))
        else:
            asyncio.run(_workers(args))
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        return 1
    return 0


# ---------------------------------------------------------------------------------------------
# Orchestration: child processes with a line protocol, and their rusage
# ---------------------------------------------------------------------------------------------


class Child:
    """A child process speaking the line protocol above; ``finish()`` reaps it with wait4."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err,
                                     env={**os.environ, **(env or {})})
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.rusage: Any = None
        self.exit_code: int | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.decode(errors="replace"))
        self.lines.put(None)

    def stderr(self) -> str:
        self.err.seek(0)
        return tail(self.err.read().decode(errors="replace"), 15)

    def expect(self, word: str, timeout: float) -> dict[str, Any]:
        """Wait for the line ``word {json}``; the process's failure (or a timeout) raises."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise RuntimeError(f"{self.name}: no {word} within {timeout:.0f}s\n{self.stderr()}") from None
            if line is None:
                self.finish(10)
                raise RuntimeError(f"{self.name} ended (exit code {self.exit_code}) before {word}:\n{self.stderr()}")
            if line.startswith(word + " "):
                return dict(json.loads(line[len(word) + 1:]))

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()
        self.proc.stdin.close()

    def terminate(self) -> None:
        if self.exit_code is None:
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.exit_code is None:
            self.proc.kill()

    def finish(self, timeout: float) -> int:
        """Reap the process (killed after ``timeout`` s); its rusage goes to ``self.rusage``."""
        if self.exit_code is not None:
            return self.exit_code
        deadline = time.monotonic() + timeout
        while True:
            pid, status, rusage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                self.proc.kill()
                _, status, rusage = os.wait4(self.proc.pid, 0)
                break
            time.sleep(0.01)
        self.rusage = rusage
        self.exit_code = self.proc.returncode = os.waitstatus_to_exitcode(status)
        return self.exit_code

    @property
    def peak_rss_mb(self) -> float:
        return self.rusage.ru_maxrss / 1024 if self.rusage is not None else float("nan")

    @property
    def cpu_seconds(self) -> float:
        return self.rusage.ru_utime + self.rusage.ru_stime if self.rusage is not None else 0.0


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Probe:
    """The PING probe process, for one measurement."""

    def __init__(self, url: str, interval_ms: float) -> None:
        fd, self.path = tempfile.mkstemp(prefix="bfbench-probe-", suffix=".bin")
        os.close(fd)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--role", "probe", "--url", url,
               "--out", self.path, "--probe-interval-ms", str(interval_ms)]
        self.child = Child("probe", cmd)
        self.child.expect("READY", 30)
        self.sent: list[int] = []
        self.rtt: list[int] = []

    def stop(self) -> None:
        self.child.terminate()
        self.child.expect("DONE", 60)
        self.child.finish(10)
        samples = array.array("q")
        with open(self.path, "rb") as f:
            samples.frombytes(f.read())
        os.unlink(self.path)
        self.sent, self.rtt = list(samples[0::2]), list(samples[1::2])

    def stats(self, start_ns: int, end_ns: int) -> dict[str, Any]:
        """PINGs sent in [start, end]: count, max / p99 / p50 round trip (ms)."""
        rtts = sorted(r for s, r in zip(self.sent, self.rtt) if start_ns <= s <= end_ns)
        if not rtts:
            return {"pings": 0}

        def q(p: float) -> float:
            return rtts[min(len(rtts) - 1, int(p * len(rtts)))] / 1e6

        worst = max(range(len(self.rtt)), key=lambda i: self.rtt[i] if start_ns <= self.sent[i] <= end_ns else -1)
        return {
            "pings": len(rtts),
            "max_ms": rtts[-1] / 1e6,
            "p99_ms": q(0.99),
            "p999_ms": q(0.999),
            "p50_ms": q(0.5),
            "over_10ms": sum(r > 10_000_000 for r in rtts),
            "max_at_s": (self.sent[worst] - start_ns) / 1e9,  # into the window
        }


# ---------------------------------------------------------------------------------------------
# Redis: settings, windows (SLOWLOG / LATENCY / CPU / memory)
# ---------------------------------------------------------------------------------------------


class RedisWatch:
    SETTINGS = ("slowlog-log-slower-than", "slowlog-max-len", "latency-monitor-threshold")

    def __init__(self, url: str, slowlog_ms: float, latency_ms: int) -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self.saved: dict[str, str] = {}
        self.problems: list[str] = []
        wanted = {
            "slowlog-log-slower-than": str(int(slowlog_ms * 1000)),
            "slowlog-max-len": "100000",
            "latency-monitor-threshold": str(latency_ms),
        }
        for name, value in wanted.items():
            try:
                self.saved[name] = str(self.client.config_get(name)[name])
                self.client.config_set(name, value)
            except Exception as exc:  # a managed Redis may refuse CONFIG
                self.problems.append(f"CONFIG SET {name} {value} failed: {exc}")
        self.slowlog_us = int(wanted["slowlog-log-slower-than"])
        self.latency_ms = latency_ms

    def restore(self) -> None:
        for name, value in self.saved.items():
            try:
                self.client.config_set(name, value)
            except Exception as exc:
                print(f"could not restore {name}={value}: {exc}", file=sys.stderr)
        self.client.close()

    def cpu(self) -> float:
        info = self.client.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

    def used_memory(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    def reset(self) -> dict[str, Any]:
        """Start a window: SLOWLOG and LATENCY reset, Redis CPU read."""
        self.client.slowlog_reset()
        self.client.execute_command("LATENCY", "RESET")  # type: ignore[no-untyped-call]
        return {"cpu": self.cpu()}

    def read(self, start: dict[str, Any], scripts: dict[str, str] | None = None) -> dict[str, Any]:
        """End a window: the longest command per the LATENCY monitor, the slowest SLOWLOG entry."""
        latest = self.client.execute_command("LATENCY", "LATEST")  # type: ignore[no-untyped-call]
        events = {(e[0].decode() if isinstance(e[0], bytes) else e[0]): int(e[3]) for e in latest}
        commands = [v for k, v in events.items() if k in ("command", "fast-command")]
        entries = self.client.slowlog_get(-1)
        out: dict[str, Any] = {
            "redis_cpu_seconds": self.cpu() - start["cpu"],
            "latency_events_max_ms": events,
            "longest_command_ms": max(commands) if commands else None,  # None: all under the threshold
            "slowlog_entries": len(entries),
        }
        if entries:
            # chunk calls over time: the median duration of each tenth of the entries (by id), to
            # see whether a command's time grows with what is already in Redis
            ordered = [e["duration"] / 1000 for e in sorted(entries, key=lambda e: e["id"])]
            tenths = [ordered[k * len(ordered) // 10:(k + 1) * len(ordered) // 10] for k in range(10)]
            out["slowlog_median_ms_by_tenth"] = [round(statistics.median(t), 2) for t in tenths if t]
            out["slowlog_p50_ms"] = statistics.median(ordered)
            out["slowlog_max_position"] = max(range(len(ordered)), key=ordered.__getitem__)  # 0-based, by id
            if len(ordered) <= 5000:
                out["slowlog_durations_ms"] = [round(x, 2) for x in ordered]
            top = max(entries, key=lambda e: e["duration"])
            words = top["command"].split(b" ")
            name = words[0].decode(errors="replace").upper()
            if name in ("EVALSHA", "EVAL") and len(words) > 1 and scripts:
                name += f" {scripts.get(words[1].decode(errors='replace'), words[1][:8].decode(errors='replace'))}"
            out.update(slowlog_max_ms=top["duration"] / 1000, slowlog_max_command=name,
                       slowlog_total_ms=sum(e["duration"] for e in entries) / 1000)
        return out


def bullfast_script_names() -> dict[str, str]:
    """sha -> script name, to name bullfast's EVALSHA entries in the slowlog."""
    try:
        from bullfast import _scripts
    except ImportError:
        return {}
    return {script.sha.decode(): name for name, script in _scripts.scripts().items()}


# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------


def _producer_cmd(method: str, url: str, prefix: str, n: int, args: argparse.Namespace,
                  node: Impl | None) -> tuple[list[str], dict[str, str]]:
    if method == "bullmq-node-add":
        assert node is not None
        return [*node.argv, "--url", url, "--prefix", prefix, "--n", str(n)], node.env
    bf_method = "stream" if method == "bullfast-stream" else "add"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--role", "producer", "--method", bf_method,
           "--url", url, "--prefix", prefix, "--n", str(n), "--chunk-size", str(args.chunk_size),
           "--window", str(args.window)]
    return cmd, {"BULLFAST_PURE_PYTHON": ""}


def _worker_cmd(url: str, prefix: str, n: int, args: argparse.Namespace) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--role", "workers", "--url", url, "--prefix", prefix,
            "--n", str(n), "--concurrency", str(args.concurrency), "--deadline", str(max(args.timeout - 30, 10))]


def _added_state(client: Any, prefix: str) -> dict[str, Any]:
    return {
        "map_wait": client.llen(f"{prefix}:{MAP_Q}:wait"),
        "reduce_waiting_children": client.zcard(f"{prefix}:{REDUCE_Q}:waiting-children"),
    }


def _final_state(client: Any, prefix: str, parent_id: str) -> dict[str, Any]:
    raw = client.hget(f"{prefix}:{REDUCE_Q}:{parent_id}", "returnvalue")
    return {
        "map_completed": client.zcard(f"{prefix}:{MAP_Q}:completed"),
        "map_failed": client.zcard(f"{prefix}:{MAP_Q}:failed"),
        "map_wait": client.llen(f"{prefix}:{MAP_Q}:wait"),
        "map_active": client.llen(f"{prefix}:{MAP_Q}:active"),
        "reduce_completed": client.zcard(f"{prefix}:{REDUCE_Q}:completed"),
        "parent_returnvalue": json.loads(raw) if raw else None,
    }


def measure_add(method: str, n: int, url: str, watch: RedisWatch, args: argparse.Namespace,
                node: Impl | None, scripts: dict[str, str]) -> dict[str, Any]:
    """One add of a 1+n fan-out by ``method`` with no worker running (the comparison)."""
    prefix = f"bfbench-fo-{method}-{uuid.uuid4().hex[:8]}"
    record: dict[str, Any] = {"kind": "compare", "method": method, "n": n, "prefix": prefix}
    cmd, env = _producer_cmd(method, url, prefix, n, args, node)
    host0, self0 = host_busy_seconds(), _self_cpu()
    probe = Probe(url, args.probe_interval_ms)
    producer = None
    try:
        producer = Child(method, cmd, env)
        record["ready"] = producer.expect("READY", args.timeout)
        mem0 = watch.used_memory()
        window = watch.reset()
        producer.send("go\n")
        added = producer.expect("ADDED", args.timeout)
        record.update(added)
        record["redis"] = watch.read(window, scripts)
        producer.finish(args.timeout)
        if producer.exit_code != 0:
            raise RuntimeError(f"{method} exited with {producer.exit_code}: {producer.stderr()}")
        record["used_memory_delta"] = watch.used_memory() - mem0
        probe.stop()
        t0, t1 = int(added["t_add_start_ns"]), int(added["t_add_end_ns"])
        record["probe"] = probe.stats(t0, t1)
        record["probe_before"] = probe.stats(0, t0 - 1)
    except Exception as exc:
        record["error"] = str(exc)
    finally:
        for child in (producer, probe.child):
            if child is not None and child.exit_code is None:
                child.kill()
                child.finish(10)
    if producer is not None and producer.rusage is not None:
        record["peak_rss_mb"] = producer.peak_rss_mb
        record["producer_cpu_seconds"] = producer.cpu_seconds
    _other_cpu(record, host0, self0, [producer, probe.child])
    state = _added_state(watch.client, prefix)
    record["state_after_add"] = state
    if "error" not in record and state != {"map_wait": n, "reduce_waiting_children": 1}:
        record["error"] = f"after the add Redis holds {state}, expected {n} children waiting and 1 parent"
    record["keys_deleted"] = delete_prefix(watch.client, prefix)
    return record


def measure_big(mode: str, n: int, url: str, watch: RedisWatch, args: argparse.Namespace,
                scripts: dict[str, str]) -> dict[str, Any]:
    """The streamed fan-out of n children processed by workers: ``sequential`` or ``overlapped``."""
    prefix = f"bfbench-fo-big-{mode}-{uuid.uuid4().hex[:8]}"
    record: dict[str, Any] = {"kind": "big", "mode": mode, "n": n, "prefix": prefix}
    cmd, env = _producer_cmd("bullfast-stream", url, prefix, n, args, None)
    host0, self0 = host_busy_seconds(), _self_cpu()
    probe = Probe(url, args.probe_interval_ms)
    producer = workers = None
    try:
        if mode == "overlapped":
            workers = Child("workers", _worker_cmd(url, prefix, n, args), {"BULLFAST_PURE_PYTHON": ""})
        producer = Child("producer", cmd, env)
        record["ready"] = producer.expect("READY", 120)
        if workers is not None:
            workers.expect("READY", 120)
        mem0 = watch.used_memory()
        window = watch.reset()
        if workers is not None:
            workers.send("go\n")
        producer.send("go\n")
        added = producer.expect("ADDED", args.timeout)
        record["add"] = added
        record["redis_add"] = watch.read(window, scripts)
        window = watch.reset()
        producer.finish(120)
        if producer.exit_code != 0:
            raise RuntimeError(f"the producer exited with {producer.exit_code}: {producer.stderr()}")
        if mode == "sequential":
            record["used_memory_delta"] = watch.used_memory() - mem0
            record["state_after_add"] = state = _added_state(watch.client, prefix)
            if state != {"map_wait": n, "reduce_waiting_children": 1}:
                raise RuntimeError(f"after the add Redis holds {state}, expected {n} children waiting and 1 parent")
            workers = Child("workers", _worker_cmd(url, prefix, n, args), {"BULLFAST_PURE_PYTHON": ""})
            workers.expect("READY", 120)
            window = watch.reset()
            workers.send("go\n")
        assert workers is not None
        result = workers.expect("DONE", args.timeout)
        record["workers"] = result
        record["redis_after_add"] = watch.read(window, scripts)  # the rest of the run (processing)
        workers.finish(120)
        if workers.exit_code != 0:
            raise RuntimeError(f"the worker process exited with {workers.exit_code}: {workers.stderr()}")
        probe.stop()
        t_add0, t_add1 = int(added["t_add_start_ns"]), int(added["t_add_end_ns"])
        t_done = int(result["t_parent_done_ns"])
        record["probe_add"] = probe.stats(t_add0, t_add1)
        # processing: from the workers' start (sequential: after the add) to the parent's completion
        record["probe_processing"] = probe.stats(max(t_add1 + 1, int(result["t_workers_start_ns"])), t_done)
        record["probe_before"] = probe.stats(0, t_add0 - 1)
        record["add_seconds"] = added["seconds"]
        record["processing_seconds"] = result["seconds"]
        if mode == "sequential":
            record["end_to_end_seconds"] = added["seconds"] + result["seconds"]
        else:
            record["end_to_end_seconds"] = (t_done - t_add0) / 1e9
            record["first_child_done_after_s"] = (int(result["first_child_done_ns"]) - t_add0) / 1e9
            ticks = (t_add1 - int(result["t_workers_start_ns"])) // 100_000_000
            record["children_done_by_add_end"] = sum(result["completed_per_100ms"][:ticks])  # to 0.1 s
        record["last_child_done_after_add_s"] = (int(result["last_child_done_ns"]) - t_add1) / 1e9
        final = _final_state(watch.client, prefix, result["parent_id"])
        record["state_final"] = final
        want = {"sum": expected_sum(n), "count": n}
        if (final["map_completed"], final["map_failed"], final["reduce_completed"]) != (n, 0, 1) or \
                final["parent_returnvalue"] != want:
            raise RuntimeError(f"after processing Redis holds {final}, expected {n} completed children, "
                               f"none failed, the parent completed with {want}")
        record["verified"] = f"parent returned {result['result']} = sum(range({n:,})) over {n:,} children; Redis agrees"
    except Exception as exc:
        record["error"] = str(exc)
    finally:
        for child in (producer, workers, probe.child):
            if child is not None and child.exit_code is None:
                child.kill()
                child.finish(10)
    if producer is not None and producer.rusage is not None:
        record["peak_rss_mb"] = producer.peak_rss_mb
        record["producer_cpu_seconds"] = producer.cpu_seconds
    if workers is not None and workers.rusage is not None:
        record["workers_peak_rss_mb"] = workers.peak_rss_mb
        record["workers_cpu_seconds"] = workers.cpu_seconds
    _other_cpu(record, host0, self0, [producer, workers, probe.child])
    t0 = time.monotonic()
    record["keys_deleted"] = delete_prefix(watch.client, prefix)
    record["delete_seconds"] = time.monotonic() - t0
    return record


def _other_cpu(record: dict[str, Any], host0: float | None, self0: float, children: list[Child | None]) -> None:
    """What the rest of the host used during the measurement (host busy - ours - Redis)."""
    host1 = host_busy_seconds()
    if host0 is None or host1 is None:
        return
    ours = sum(c.cpu_seconds for c in children if c is not None) + (_self_cpu() - self0)
    redis_cpu = record.get("redis", {}).get("redis_cpu_seconds", 0.0) + \
        record.get("redis_add", {}).get("redis_cpu_seconds", 0.0) + \
        record.get("redis_after_add", {}).get("redis_cpu_seconds", 0.0)
    record["host_busy_cpu_seconds"] = host1 - host0
    record["ours_cpu_seconds"] = ours + redis_cpu


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------


def _ms(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def _longest(redis_stats: dict[str, Any], watch_ms: int) -> str:
    v = redis_stats.get("longest_command_ms")
    return f"< {watch_ms}" if v is None else f"{v:,}"


def _slowlog(redis_stats: dict[str, Any], threshold_ms: float) -> str:
    if not redis_stats.get("slowlog_entries"):
        return f"none >= {threshold_ms:g} ms"
    return (f"{_ms(redis_stats['slowlog_max_ms'])} ({redis_stats['slowlog_max_command']}); "
            f"{redis_stats['slowlog_entries']:,} >= {threshold_ms:g} ms")


def _chunks(redis_stats: dict[str, Any], args: argparse.Namespace) -> str:
    """The slowlog of a streamed add: the chunk calls' median time, where the slowest one was."""
    if not redis_stats.get("slowlog_entries"):
        return f"no command took {args.slowlog_ms:g} ms or more"
    return (f"{redis_stats['slowlog_entries']:,} commands took >= {args.slowlog_ms:g} ms (median "
            f"{redis_stats['slowlog_p50_ms']:.1f} ms, by tenth of the add "
            f"{', '.join(f'{x:.1f}' for x in redis_stats['slowlog_median_ms_by_tenth'])}); the slowest "
            f"({redis_stats['slowlog_max_ms']:.1f} ms) was number {redis_stats['slowlog_max_position'] + 1:,}")


def _spread(values: list[float], fmt: Any = _ms) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return str(fmt(values[0]))
    return f"{fmt(statistics.median(values))} [{fmt(min(values))}-{fmt(max(values))}]"


def big_table(records: list[dict[str, Any]], args: argparse.Namespace, markdown: bool) -> list[str]:
    header = ["run", "N", "add s", "add jobs/s", "processing s", "end-to-end s", "end-to-end jobs/s",
              "longest command during add, ms (LATENCY)", "slowest single command during add, ms (SLOWLOG)",
              "probe PING during add: max / p99 ms", "producer peak RSS MB (before add)",
              "Redis memory per job, bytes"]
    body = []
    for r in records:
        label = {"sequential": "add, then process", "overlapped": "add and process together"}[r["mode"]]
        if "error" in r:
            body.append([label, f"{r['n']:,}", "FAILED", *["-"] * (len(header) - 3)])
            continue
        n = r["n"]
        mem = r.get("used_memory_delta")
        body.append([
            label,
            f"{n:,}",
            f"{r['add_seconds']:.2f}",
            fmt_rate(n / r["add_seconds"]),
            f"{r['processing_seconds']:.2f}",
            f"{r['end_to_end_seconds']:.2f}",
            fmt_rate((n + 1) / r["end_to_end_seconds"]),
            _longest(r["redis_add"], args.latency_ms),
            _slowlog(r["redis_add"], args.slowlog_ms),
            f"{_ms(r['probe_add'].get('max_ms'))} / {_ms(r['probe_add'].get('p99_ms'))}",
            f"{r['peak_rss_mb']:.0f} ({r['add']['before_add_rss_mb']:.0f})",
            f"{mem / n:,.0f}" if mem is not None else "n/a (workers running)",
        ])
    return markdown_table(header, body) if markdown else text_table(header, body)


def compare_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for method in COMPARE_METHODS:
        runs = [r for r in records if r.get("method") == method]
        ok = [r for r in runs if "error" not in r]
        row: dict[str, Any] = {"method": method, "runs": len(runs), "ok": len(ok)}
        if runs:
            row["n"] = runs[0]["n"]
        if ok:
            longest = [r["redis"]["longest_command_ms"] for r in ok if r["redis"].get("longest_command_ms") is not None]
            row.update(
                seconds=[r["seconds"] for r in ok],
                rate=[(r["n"] + 1) / r["seconds"] for r in ok],
                probe_max=[r["probe"]["max_ms"] for r in ok if r["probe"].get("pings")],
                probe_p99=[r["probe"]["p99_ms"] for r in ok if r["probe"].get("pings")],
                longest=longest,
                under_threshold=len(ok) - len(longest),
                slowlog_max=max((r["redis"].get("slowlog_max_ms", 0.0) for r in ok), default=0.0),
                slowlog_cmd=max(ok, key=lambda r: r["redis"].get("slowlog_max_ms", 0.0))["redis"].get("slowlog_max_command"),
                peak_rss=max(r["peak_rss_mb"] for r in ok),
                mem_per_job=statistics.median(r["used_memory_delta"] / r["n"] for r in ok),
                redis_cpu=statistics.median(r["redis"]["redis_cpu_seconds"] for r in ok),
                client_cpu=statistics.median(r["client_cpu_seconds"] for r in ok),
                version=ok[0].get("version", ""),
            )
        row["errors"] = [r["error"] for r in runs if "error" in r]
        rows.append(row)
    return rows


def compare_table(rows: list[dict[str, Any]], args: argparse.Namespace, markdown: bool) -> list[str]:
    header = ["method", "N", "seconds", "jobs/s", "probe: longest PING wait, ms", "probe p99, ms",
              "longest command, ms (LATENCY)", "slowest single command, ms (SLOWLOG)", "client CPU s",
              "Redis CPU s", "client peak RSS MB", "Redis memory per job, bytes"]
    body = []
    for row in rows:
        label = METHOD_LABELS[row["method"]] if markdown else row["method"]
        n = f"{row.get('n', 0):,}"
        if not row["ok"]:
            body.append([label, n, f"failed ({row['runs']} of {row['runs']})", *["-"] * (len(header) - 3)])
            continue
        longest = _spread([float(x) for x in row["longest"]], lambda x: f"{x:,.0f}")
        if row["under_threshold"]:
            longest += f" ({row['under_threshold']} run(s) < {args.latency_ms})"
        slow = "none" if not row["slowlog_max"] else f"{_ms(row['slowlog_max'])} ({row['slowlog_cmd']})"
        body.append([
            label, n,
            _spread(row["seconds"], lambda x: f"{x:.3f}"),
            _spread(row["rate"], fmt_rate),
            _spread(row["probe_max"]),
            _spread(row["probe_p99"]),
            longest,
            slow,
            f"{row['client_cpu']:.2f}",
            f"{row['redis_cpu']:.2f}",
            f"{row['peak_rss']:.0f}",
            f"{row['mem_per_job']:,.0f}",
        ])
    return markdown_table(header, body) if markdown else text_table(header, body)


def target_lines(big: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    out = []
    for r in big:
        if "error" in r:
            continue
        label = {"sequential": "add, then process", "overlapped": "add and process together"}[r["mode"]]
        rate = r["n"] / r["add_seconds"]
        out.append(f"add throughput, {label}: {fmt_rate(rate)} jobs/s (target >= {TARGET_ADD_RATE:,}): "
                   f"{'PASS' if rate >= TARGET_ADD_RATE else 'FAIL'}")
        out.append(f"producer peak RSS, {label}: {r['peak_rss_mb']:.0f} MB (target < {TARGET_CLIENT_MB} MB): "
                   f"{'PASS' if r['peak_rss_mb'] < TARGET_CLIENT_MB else 'FAIL'}")
        longest = r["redis_add"].get("longest_command_ms")
        shown = "under the monitor's threshold" if longest is None else f"{longest} ms"
        median, count = r["redis_add"].get("slowlog_p50_ms"), r["redis_add"].get("slowlog_entries", 0)
        out.append(f"longest Redis command during the add, {label}: {shown}"
                   + (f"; the {count:,} commands of >= {args.slowlog_ms:g} ms had a median of {median:.1f} ms"
                      if median else "")
                   + f" (the README says \"no command over ~{README_CLAIM_MS} ms\")")
    return out


def machine_line(meta: dict[str, Any]) -> str:
    m = meta["machine"]
    return (
        f"Run {meta['started']} on {m['nproc']} CPUs ({m.get('cpu', '?')}), {m.get('mem_total_gb', '?')} GB RAM, "
        f"{m['platform']}; Python {m['python']}; Redis {m['redis']} ({m['redis_url']})"
        + (f"; Node {m['node']}" if "node" in m else "")
        + f"; load average (1/5/15 min) {m['loadavg_at_start']} at start, {m.get('loadavg_at_end')} at end"
        + (f"; bullfast checkout {m['bullfast_git']}" if "bullfast_git" in m else "")
        + "."
    )


def markdown_report(meta: dict[str, Any], big: list[dict[str, Any]], rows: list[dict[str, Any]],
                    args: argparse.Namespace) -> str:
    lines = [f"Command: `{meta['command']}`", "", machine_line(meta), ""]
    versions = sorted({r["version"] for r in rows if r.get("version")} |
                      {r["add"]["version"] for r in big if "add" in r})
    if versions:
        lines += ["Versions: " + "; ".join(versions) + ".", ""]
    if big:
        lines += [f"**Streamed fan-out of {big[0]['n']:,} children**, processed by one worker process "
                  f"(map worker concurrency {args.concurrency}, reduce worker 1), chunk size "
                  f"{args.chunk_size}, window {args.window}:", ""]
        lines += big_table(big, args, markdown=True)
        lines.append("")
        for r in big:
            if "error" in r:
                lines.append(f"- {r['mode']}: FAILED: {r['error'].splitlines()[0]}")
                continue
            w = r["workers"]
            extra = (f"The first child completed {r['first_child_done_after_s']:.2f} s after the add began, "
                     f"~{r['children_done_by_add_end']:,} children were done when the add ended. "
                     if r["mode"] == "overlapped" else "")
            lines.append(
                f"- {r['mode']}: {r['verified']}. {extra}The last child completed "
                f"{r['last_child_done_after_add_s']:.2f} s after the add ended; the parent's "
                f"`reduce_children_values` took {w['reduce_seconds']:.2f} s. During the add: "
                f"{_chunks(r['redis_add'], args)}; Redis CPU "
                f"{r['redis_add']['redis_cpu_seconds']:.1f} s, producer CPU {r['add']['client_cpu_seconds']:.1f} s; "
                f"worker process CPU {r['workers_cpu_seconds']:.1f} s, peak RSS {r['workers_peak_rss_mb']:.0f} MB. "
                f"Longest command while processing (LATENCY): {_longest(r['redis_after_add'], args.latency_ms)} ms; "
                f"probe while processing: max {_ms(r['probe_processing'].get('max_ms'))} ms, "
                f"p99 {_ms(r['probe_processing'].get('p99_ms'))} ms; "
                f"worker `error` events: {w['worker_error_count']}; host CPU busy "
                f"{r.get('host_busy_cpu_seconds', 0):.0f} s of which ours {r.get('ours_cpu_seconds', 0):.0f} s."
            )
        lines.append("")
    if rows:
        n = next((row["n"] for row in rows if "n" in row), 0)
        lines += [f"**The same shape at {n:,} children, added in one go, no workers** "
                  f"({meta['reps']} repetition{'s, interleaved' if meta['reps'] != 1 else ''}; median [min-max]):", ""]
        lines += compare_table(rows, args, markdown=True)
        lines.append("")
    targets = target_lines(big, args)
    if targets:
        lines += ["Targets (from the issue) and the README's claim, this run:", ""]
        lines += [f"- {t}" for t in targets]
        lines.append("")
    notes = [f"- WARNING: {meta['src_changed_during_run']}"] if "src_changed_during_run" in meta else []
    notes += [f"- {p}" for p in meta.get("redis_config_problems", [])]
    notes += [f"- skipped {name}: {why}" for name, why in meta.get("skipped", {}).items()]
    notes += [f"- {row['method']}: {e.splitlines()[0]}" for row in rows for e in row.get("errors", [])]
    lines += notes
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--children", type=int, default=1_000_000, help="children of the streamed fan-out (N)")
    p.add_argument("--modes", default="sequential,overlapped", help="main runs: sequential, overlapped")
    p.add_argument("--compare-children", type=int, default=50_000, help="children of the one-go comparison (0: skip)")
    p.add_argument("--compare", default=",".join(COMPARE_METHODS), help="comparison methods")
    p.add_argument("--reps", type=int, default=3, help="repetitions of the comparison")
    p.add_argument("--concurrency", type=int, default=50, help="map worker concurrency")
    from bullfast.fanout import DEFAULT_FAN_OUT_CHUNK, DEFAULT_WINDOW

    p.add_argument("--chunk-size", type=int, default=DEFAULT_FAN_OUT_CHUNK,
                   help=f"fan-out chunk size (default {DEFAULT_FAN_OUT_CHUNK}, bullfast's own)")
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW,
                   help=f"fan-out chunks in flight (default {DEFAULT_WINDOW}, bullfast's own)")
    p.add_argument("--slowlog-ms", type=float, default=5, help="slowlog-log-slower-than, ms")
    p.add_argument("--latency-ms", type=int, default=1, help="latency-monitor-threshold, ms")
    p.add_argument("--probe-interval-ms", type=float, default=1.0)
    p.add_argument("--quick", action="store_true", help="smoke run: 20,000 children, comparison at 5,000, 1 rep")
    p.add_argument("--idle-threshold", type=float, default=0.3,
                   help="before each measurement, wait until other processes use at most this many CPUs")
    p.add_argument("--idle-wait", type=float, default=120, help="...for at most this many seconds (0: do not wait)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per step of a measurement")
    p.add_argument("--no-install", action="store_true", help="do not run npm ci")
    p.add_argument("--update-readme", action="store_true", help="write the tables into benchmarks/README.md")
    # child roles (internal)
    p.add_argument("--role", choices=("producer", "workers", "probe"), help=argparse.SUPPRESS)
    p.add_argument("--method", choices=("stream", "add"), help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--prefix", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, default=1770, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.children, args.compare_children, args.reps = 20_000, 5_000, 1
    return args


def _idle(args: argparse.Namespace, head: str) -> dict[str, Any]:
    if args.idle_wait <= 0:
        return {}
    waited, busy = wait_for_idle(args.idle_threshold, args.idle_wait)
    if busy is not None and busy > args.idle_threshold:
        print(f"{head} host still busy ({busy:.2f} CPUs) after waiting {waited:.0f}s; measuring anyway", flush=True)
    elif waited > 5:
        print(f"{head} waited {waited:.0f}s for the host to be idle", flush=True)
    return {"idle_wait_seconds": waited, "host_busy_before": busy}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.role:
        return role_main(args)

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        if m not in ("sequential", "overlapped"):
            raise SystemExit(f"unknown mode {m!r}")
    methods = [m.strip() for m in args.compare.split(",") if m.strip()] if args.compare_children > 0 else []
    for m in methods:
        if m not in COMPARE_METHODS:
            raise SystemExit(f"unknown comparison method {m!r}; choose from {', '.join(COMPARE_METHODS)}")
    skipped: dict[str, str] = {}
    node = None
    if "bullmq-node-add" in methods:
        try:
            node = setup_bullmq_node(not args.no_install, NODE_RUNNER)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            skipped["bullmq-node-add"] = str(exc)
            methods.remove("bullmq-node-add")
            print(f"skipping bullmq-node-add: {exc}")

    server, url = start_redis()
    watch = RedisWatch(url, args.slowlog_ms, args.latency_ms)
    scripts = bullfast_script_names()
    big: list[dict[str, Any]] = []
    compare: list[dict[str, Any]] = []
    try:
        meta: dict[str, Any] = {
            "command": command_line(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "children": args.children,
            "modes": modes,
            "compare_children": args.compare_children,
            "compare_methods": methods,
            "reps": args.reps,
            "concurrency": args.concurrency,
            "chunk_size": args.chunk_size,
            "window": args.window,
            "slowlog_ms": args.slowlog_ms,
            "latency_monitor_threshold_ms": args.latency_ms,
            "probe_interval_ms": args.probe_interval_ms,
            "skipped": skipped,
            "redis_config_problems": watch.problems,
            "machine": machine_info(url, server is not None, [node] if node else []),
        }
        print(f"Redis: {meta['machine']['redis']} at {url}; streamed fan-out of {args.children:,} children "
              f"({', '.join(modes)}); comparison at {args.compare_children:,} children: {', '.join(methods)} "
              f"x {args.reps}", flush=True)
        for p in watch.problems:
            print(f"WARNING: {p}", flush=True)
        total = args.reps * len(methods)
        done = 0
        for rep in range(args.reps):
            for method in methods:
                done += 1
                head = f"[compare {done}/{total}] rep {rep + 1} {method:16s} N={args.compare_children:,}"
                idle = _idle(args, head)
                r = measure_add(method, args.compare_children, url, watch, args, node, scripts)
                r.update(rep=rep, **idle)
                compare.append(r)
                if "error" in r:
                    print(f"{head}: ERROR {r['error']}", flush=True)
                else:
                    print(f"{head}: {r['seconds']:.3f} s, {(r['n'] + 1) / r['seconds']:,.0f} jobs/s, "
                          f"probe max {r['probe']['max_ms']:.1f} ms (p99 {r['probe']['p99_ms']:.2f}), "
                          f"longest command {_longest(r['redis'], args.latency_ms)} ms, "
                          f"slowlog {_slowlog(r['redis'], args.slowlog_ms)}, peak RSS {r['peak_rss_mb']:.0f} MB, "
                          f"Redis memory/job {r['used_memory_delta'] / r['n']:,.0f} B", flush=True)
        for mode in modes:
            head = f"[{mode}] N={args.children:,}"
            idle = _idle(args, head)
            print(f"{head}: running ...", flush=True)
            r = measure_big(mode, args.children, url, watch, args, scripts)
            r.update(idle)
            big.append(r)
            if "error" in r:
                print(f"{head}: ERROR {r['error']}", flush=True)
            else:
                mem = r.get("used_memory_delta")
                print(f"{head}: add {r['add_seconds']:.2f} s ({args.children / r['add_seconds']:,.0f} jobs/s), "
                      f"processing {r['processing_seconds']:.2f} s, end-to-end {r['end_to_end_seconds']:.2f} s "
                      f"({(args.children + 1) / r['end_to_end_seconds']:,.0f} jobs/s); during the add: longest "
                      f"command {_longest(r['redis_add'], args.latency_ms)} ms, slowlog "
                      f"{_slowlog(r['redis_add'], args.slowlog_ms)}, probe max {r['probe_add']['max_ms']:.1f} ms "
                      f"p99 {r['probe_add']['p99_ms']:.2f} ms; producer peak RSS {r['peak_rss_mb']:.0f} MB"
                      + (f"; Redis memory/job {mem / args.children:,.0f} B" if mem is not None else "")
                      + f"; {r['verified']}", flush=True)
    finally:
        watch.restore()
        if server is not None:
            server.cleanup()
    meta["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if src_fingerprint() != meta["machine"].get("bullfast_src"):
        meta["src_changed_during_run"] = (f"bullfast's source changed during the run (the repository is shared): "
                                          f"now {src_state()}; measurements may mix versions")
        print(f"\nWARNING: {meta['src_changed_during_run']}")

    rows = compare_rows(compare)
    print()
    if big:
        print("\n".join(big_table(big, args, markdown=False)))
        print()
    if rows:
        print("\n".join(compare_table(rows, args, markdown=False)))
        print()
    targets = target_lines(big, args)
    if targets:
        print("\n".join(targets))
    failed = [r for r in big + compare if "error" in r]
    for r in failed:
        print(f"\n!!! {r.get('mode') or r.get('method')} FAILED:\n{r['error']}", file=sys.stderr)

    payload_json = {"meta": meta, "big": big, "compare_summary": rows, "compare": compare}
    markdown = markdown_report(meta, big, rows, args)
    written = write_results("fan_out", payload_json, markdown)
    print(f"\nresults: {written.relative_to(REPO)} (and .md, fan_out-latest.*)")
    if args.update_readme:
        if failed:
            print("benchmarks/README.md NOT updated: some measurements failed")
        elif update_readme(markdown, README_START, README_END):
            print("benchmarks/README.md updated")
        else:
            print(f"benchmarks/README.md not updated (no {README_START} / {README_END} markers)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
