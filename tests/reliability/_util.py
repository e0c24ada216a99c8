"""Helpers of the fault tests: polling, closing, trees with known results and the check of
their final state, worker processes to SIGKILL, and a TCP proxy that breaks connections."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import redis.asyncio as aioredis

from bullfast import FlowProducer, Queue, Worker

WORKER_SCRIPT = Path(__file__).with_name("_worker_proc.py")
CLOSE_TIMEOUT = 15


async def until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


# -- closing everything a test opened ------------------------------------------------------------


async def close_or_stop(w: Worker, timeout: float = CLOSE_TIMEOUT) -> bool:
    """Close the worker; if close() hangs, stop its tasks and connections by hand (so the run
    neither hangs nor leaks sockets) and return False."""
    try:
        await asyncio.wait_for(w.close(), timeout)
        return True
    except asyncio.TimeoutError:
        pass
    tasks = [getattr(w, "_main", None), getattr(w, "_wait_task", None), *getattr(w, "_background", [])]
    tasks += [r.task for r in getattr(w, "_running", {}).values()]
    tasks = [t for t in tasks if t is not None and not t.done()]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for conn in (getattr(w, "_blocking", None), getattr(w, "_redis", None)):
        if conn is not None:
            await conn.close()
    executor = getattr(w, "_executor", None)
    if executor is not None:
        executor.shutdown(wait=False)
    return False


class Resources:
    """Queues, workers, producers and clients of one test, closed at its end (workers first)."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self._items: list[Any] = []
        self.errors: dict[str, list[BaseException]] = {}

    def queue(self, name: str, url: str | None = None, **kw: Any) -> Queue:
        q = Queue(name, connection=url or self.url, prefix=self.prefix, **kw)
        self._items.append(q)
        return q

    def flow(self, url: str | None = None, **kw: Any) -> FlowProducer:
        fp = FlowProducer(connection=url or self.url, prefix=self.prefix, **kw)
        self._items.append(fp)
        return fp

    def worker(self, name: str, processor: Any, url: str | None = None, **kw: Any) -> Worker:
        opts = {"drain_delay": 0.3, **kw}
        w = Worker(name, processor, connection=url or self.url, prefix=self.prefix, **opts)
        errors = self.errors.setdefault(name, [])
        w.on("error", errors.append)
        self._items.append(w)
        return w

    def client(self, url: str | None = None) -> aioredis.Redis:
        c = aioredis.from_url(url or self.url)
        self._items.append(c)
        return c

    def process(self, settings: dict[str, Any]) -> WorkerProcess:
        """A worker process (not started yet), stopped at the end of the test."""
        wp = WorkerProcess(settings)
        self._items.append(wp)
        return wp

    def track(self, item: Any) -> Any:
        self._items.append(item)
        return item

    def key(self, queue: str, suffix: str) -> str:
        return f"{self.prefix}:{queue}:{suffix}"

    async def aclose(self) -> None:
        hung = []
        for item in [i for i in self._items if isinstance(i, Worker)]:
            if not await close_or_stop(item):
                hung.append(item.name)
        for item in reversed([i for i in self._items if not isinstance(i, Worker)]):
            if isinstance(item, aioredis.Redis):
                await item.aclose()
            elif isinstance(item, WorkerProcess):
                item.stop()
                item.close_log()
            else:
                await item.close()
        self._items.clear()
        assert not hung, f"Worker.close() did not return within {CLOSE_TIMEOUT}s: {hung}"


# -- trees whose results are known -----------------------------------------------------------------


@dataclass
class Node:
    queue: str
    id: str
    value: int  # what the job returns: the sum of v over its subtree
    key: str
    children: list[Node] = field(default_factory=list)
    parent: Node | None = None


def build_tree(
    prefix: str,
    tag: str,
    levels: list[tuple[str, int]],
    sleep: dict[str, float] | None = None,
    start: int = 1,
    opts: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], list[Node]]:
    """A flow: one root in ``levels[0][0]``, ``levels[1][1]`` children per root in
    ``levels[1][0]``, and so on. Every node has a custom id (``<tag>-<path>``), ``v`` (its own
    number, counting from ``start``) and ``n`` (its number of children); ``opts`` are added to
    every node's options. Returns the flow node for FlowProducer.add and every node (root
    first)."""
    sleep = sleep or {}
    nodes: list[Node] = []
    counter = [start]

    def make(depth: int, path: str, parent: Node | None) -> tuple[dict[str, Any], Node]:
        queue = levels[depth][0]
        width = levels[depth + 1][1] if depth + 1 < len(levels) else 0
        job_id = f"{tag}-{path}"
        v = counter[0]
        counter[0] += 1
        node = Node(queue, job_id, v, f"{prefix}:{queue}:{job_id}", parent=parent)
        nodes.append(node)
        data = {"v": v, "n": width}
        if sleep.get(queue):
            data["sleep"] = sleep[queue]
        flow: dict[str, Any] = {"name": queue, "queue_name": queue, "data": data, "opts": {**(opts or {}), "job_id": job_id}}
        if width:
            kids = [make(depth + 1, f"{path}.{k}", node) for k in range(width)]
            flow["children"] = [k[0] for k in kids]
            node.children = [k[1] for k in kids]
            node.value = v + sum(k[1].value for k in kids)
        return flow, node

    flow, _ = make(0, "r", None)
    return flow, nodes


async def keep_events(client: aioredis.Redis, prefix: str, queues: Iterable[str], n: int = 10**6) -> None:
    """Raise the queues' event stream cap (BullMQ's ``streams.events.maxLen``, 10,000 by
    default): the checks count every job's events."""
    for queue in queues:
        await client.hset(f"{prefix}:{queue}:meta", "opts.maxLenEvents", n)


async def read_events(client: aioredis.Redis, key: str) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in await client.xrange(key)]


async def event_counts(client: aioredis.Redis, prefix: str, queues: Iterable[str]) -> Counter[tuple[str, str, str]]:
    """(queue, event, jobId) -> how many times; releases of parents are counted as
    ``released`` (a ``waiting`` event with ``prev`` = ``waiting-children``)."""
    counts: Counter[tuple[str, str, str]] = Counter()
    for queue in queues:
        for e in await read_events(client, f"{prefix}:{queue}:events"):
            name = e.get("event", "")
            if name == "waiting" and e.get("prev") == "waiting-children":
                name = "released"
            counts[(queue, name, e.get("jobId", ""))] += 1
    return counts


async def verify_completed(
    client: aioredis.Redis,
    prefix: str,
    nodes: list[Node],
    ledger: str | None = None,
    ledger_client: aioredis.Redis | None = None,
    bounded_runs: bool = True,
    runs_since: int = 0,
) -> dict[str, Any]:
    """Every node completed exactly once with the right value; every parent released exactly
    once, holding every child's value in its processed hash and nothing pending; nothing left
    in any other state; no violation recorded by a parent (in ``ledger``, on ``ledger_client``,
    by default the same Redis); with ``bounded_runs``, a job ran at most once per attempt that
    ended plus once per time it was found stalled (``runs <= atm + stc``: it runs again only
    after a failed attempt or a stall). Returns what was observed: processor runs per job key
    and the event counts. Violations of runs fetched before ``runs_since`` (ms) are ignored
    (runs against a state that a simulated crash rolled back)."""
    queues = sorted({n.queue for n in nodes})
    counts = await event_counts(client, prefix, queues)
    problems: list[str] = []
    for queue in queues:
        for state in ("wait", "active", "paused"):
            left = await client.lrange(f"{prefix}:{queue}:{state}", 0, -1)
            if left:
                problems.append(f"{queue}:{state} still holds {left[:5]}")
        for state in ("delayed", "prioritized", "waiting-children", "failed"):
            left = await client.zrange(f"{prefix}:{queue}:{state}", 0, -1)
            if left:
                problems.append(f"{queue}:{state} still holds {left[:5]}")
    async with client.pipeline(transaction=False) as pipe:
        for n in nodes:
            pipe.zscore(f"{prefix}:{n.queue}:completed", n.id)
            pipe.hget(n.key, "returnvalue")
            pipe.hgetall(f"{n.key}:processed")
            pipe.exists(f"{n.key}:dependencies")
            pipe.hmget(n.key, "atm", "stc")
        replies = await pipe.execute()
    ended: dict[str, int] = {}
    for k, n in enumerate(nodes):
        score, rv, processed, pending, (atm, stc) = replies[5 * k : 5 * k + 5]
        ended[n.key] = int(atm or 0) + int(stc or 0)
        if score is None:
            problems.append(f"{n.key} is not completed")
            continue
        if rv is None or orjson.loads(rv) != {"v": n.value}:
            problems.append(f"{n.key} returned {rv!r}, not v={n.value}")
        done = counts[(n.queue, "completed", n.id)]
        if done != 1:
            problems.append(f"{n.key} has {done} completed events")
        if n.children:
            releases = counts[(n.queue, "released", n.id)]
            if releases != 1:
                problems.append(f"parent {n.key} was released {releases} times")
            want = {c.key: {"v": c.value} for c in n.children}
            got = {k.decode(): orjson.loads(v) for k, v in processed.items()}
            if got != want:
                problems.append(f"parent {n.key} processed hash differs: {len(got)} entries, want {len(want)}")
            if pending:
                problems.append(f"parent {n.key} still has pending dependencies")
    runs: dict[str, int] = {}
    if ledger is not None:
        lc = ledger_client or client
        violations = await lc.lrange(f"{ledger}:violations", 0, -1)
        problems += [v.decode() for v in violations if int(v.split()[0]) >= runs_since]
        runs = {k.decode(): int(v) for k, v in (await lc.hgetall(f"{ledger}:runs")).items()}
        for n in nodes:
            if runs.get(n.key, 0) < 1:
                problems.append(f"{n.key} completed without running")
            elif bounded_runs and runs[n.key] > ended[n.key]:
                problems.append(f"{n.key} ran {runs[n.key]} times with atm + stc = {ended[n.key]}")
    assert not problems, "\n".join(problems[:40])
    return {"runs": runs, "events": counts}


# -- worker processes -------------------------------------------------------------------------------


class WorkerProcess:
    """A worker process (``_worker_proc.py``) that the test can SIGKILL."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()

    def start(self, timeout: float = 20.0) -> WorkerProcess:
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER_SCRIPT), json.dumps(self.settings)],
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        deadline = time.monotonic() + timeout
        out = b""
        while b"ready" not in out:
            if self.proc.poll() is not None:
                self.stop()
                raise AssertionError(f"the worker process exited at start: {self.stderr_text()}")
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError("the worker process did not start")
            out += self.proc.stdout.read() or b""
            time.sleep(0.02)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: no close(), no completion in flight gets out, locks stay until they expire."""
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.kill()
            proc.wait()
            self._close_pipes(proc)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._close_pipes(proc)

    def stderr_text(self) -> str:
        """What the process wrote to stderr so far (for failure messages)."""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-4000:]

    @staticmethod
    def _close_pipes(proc: subprocess.Popen[bytes]) -> None:
        if proc.stdout is not None:
            proc.stdout.close()

    def close_log(self) -> None:
        self._log.close()


# -- a TCP proxy that can blackhole, cut, slow down or lose replies ---------------------------------


class Proxy:
    """Forwards 127.0.0.1:<port> to a Redis. Faults, switched at any time:

    * ``hold()`` / ``release()``: traffic stops in both directions (held, not lost) — a network
      partition that heals; connections stay open;
    * ``cut(refuse_for)``: every connection is reset and new ones are refused for a while;
    * ``delay``: seconds added to every chunk forwarded (a slow network or server);
    * ``lose_next_replies(n)``: the next n replies are dropped and their connections reset: the
      command ran on the server, the client never learns it.
    """

    def __init__(self, target_url: str) -> None:
        # (the target's credentials, database and options stay in the proxy's own URL)
        self.target = urlsplit(target_url)
        self.target_host = self.target.hostname or "127.0.0.1"
        self.target_port = self.target.port or 6379
        self.port = 0
        self.delay = 0.0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._refuse_until = 0.0
        self._lose = 0
        self._server: asyncio.base_events.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.connections = 0
        self.lost_replies = 0

    @property
    def url(self) -> str:
        auth, _, _ = self.target.netloc.rpartition("@")
        netloc = f"{auth}@127.0.0.1:{self.port}" if auth else f"127.0.0.1:{self.port}"
        return urlunsplit(self.target._replace(netloc=netloc))

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def hold(self) -> None:
        self._flowing.clear()

    def release(self) -> None:
        self._flowing.set()

    def cut(self, refuse_for: float = 0.0) -> None:
        self._refuse_until = time.monotonic() + refuse_for
        for pair in list(self._pairs):
            self._abort(pair)

    def accept(self) -> None:
        """End a refusal started by ``cut``."""
        self._refuse_until = 0.0

    def lose_next_replies(self, n: int = 1) -> None:
        self._lose = n

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if time.monotonic() < self._refuse_until:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        pair = (writer, up_writer)
        self._pairs.add(pair)
        for task in (
            asyncio.ensure_future(self._pump(reader, up_writer, pair, upstream=True)),
            asyncio.ensure_future(self._pump(up_reader, writer, pair, upstream=False)),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _abort(self, pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter]) -> None:
        self._pairs.discard(pair)
        for w in pair:
            w.transport.abort()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
        upstream: bool,
    ) -> None:
        try:
            while True:
                data = await reader.read(1 << 16)
                if not data:
                    break
                await self._flowing.wait()
                if self.delay:
                    await asyncio.sleep(self.delay)
                if not upstream and self._lose > 0:
                    self._lose -= 1
                    self.lost_replies += 1
                    break
                if writer.transport.is_closing():
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._abort(pair)

    async def close(self) -> None:
        self.release()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for pair in list(self._pairs):
            self._abort(pair)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
