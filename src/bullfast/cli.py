"""The ``bullfast`` command (also ``python -m bullfast``).

    bullfast demo [--children N] [--workers K] [--concurrency C]
    bullfast worker MODULE:FUNCTION --queue Q [--concurrency C]
    bullfast inspect QUEUE [JOB_ID] [--json]
    bullfast diagnose QUEUE JOB_ID [--json]
    bullfast bench [--quick] [--scenarios ...] [--sizes ...] [--reps N] [--implementations ...]

``bench`` runs the benchmark harness of a checkout (``benchmarks/``, not installed with the
package): found from the current directory up, or next to an editable install's ``src/``.
Every command uses ``$REDIS_URL`` when set, else a private Redis started for the command.
Errors are one line on stderr and a non-zero exit status (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__, core
from .embedded import redis_url
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
    async def main() -> None:
        worker = Worker(queue, _square, connection=url, prefix=prefix, concurrency=concurrency, drain_delay=0.5)
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await worker.close()

    asyncio.run(main())


async def _demo(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    console = Console()
    url = os.environ.get("REDIS_URL") or redis_url()
    prefix = f"bullfast-demo-{os.urandom(4).hex()}"
    n = args.children
    where = "REDIS_URL" if os.environ.get("REDIS_URL") else "a private redis-server"
    console.print(
        f"[bold]bullfast {__version__}[/] map-reduce demo: 1 parent + {n:,} children on {where} "
        f"({'compiled' if core.IS_COMPILED else 'pure-Python'} core), prefix [cyan]{prefix}[/]"
    )
    producer = FlowProducer(connection=url, prefix=prefix)
    map_queue = Queue("demo-map", connection=url, prefix=prefix)
    reduce_queue = Queue("demo-reduce", connection=url, prefix=prefix)
    stop = multiprocessing.get_context("spawn").Event()
    procs: list[Any] = []
    workers: list[Worker] = []
    try:
        tree = {
            "name": "reduce",
            "queue_name": "demo-reduce",
            "data": {"children": n},
            "children": [{"name": "square", "queue_name": "demo-map", "data": {"i": i}} for i in range(n)],
        }
        t0 = time.perf_counter()
        root = await producer.add(tree)
        add_seconds = time.perf_counter() - t0
        console.print(f"added {n + 1:,} jobs atomically in {add_seconds:.3f}s ({(n + 1) / add_seconds:,.0f} jobs/s)")

        done = asyncio.Event()
        outcome: dict[str, Any] = {}
        reducer = Worker("demo-reduce", _reduce, connection=url, prefix=prefix, drain_delay=0.5)
        def finished(key: str) -> Any:
            def listener(job: Any, value: Any) -> None:
                outcome[key] = value
                done.set()

            return listener

        reducer.on("completed", finished("result"))
        reducer.on("failed", finished("error"))
        workers.append(reducer)
        t1 = time.perf_counter()
        if args.workers > 0:
            ctx = multiprocessing.get_context("spawn")
            for _ in range(args.workers):
                p = ctx.Process(
                    target=_map_worker_process, args=(url, prefix, "demo-map", args.concurrency, stop), daemon=True
                )
                p.start()
                procs.append(p)
        else:
            workers.append(
                Worker("demo-map", _square, connection=url, prefix=prefix, concurrency=args.concurrency, drain_delay=0.5)
            )

        columns = (
            TextColumn("{task.description:<22}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, transient=False) as progress:
            added = progress.add_task("added", total=n + 1, completed=n + 1)
            mapped = progress.add_task("demo-map completed", total=n)
            failed = progress.add_task("demo-map failed", total=n)
            reduced = progress.add_task("demo-reduce completed", total=1)
            del added
            while True:
                m = await map_queue.get_job_counts("completed", "failed")
                r = await reduce_queue.get_job_counts("completed")
                progress.update(mapped, completed=m["completed"])
                progress.update(failed, completed=m["failed"])
                progress.update(reduced, completed=r["completed"])
                if done.is_set():
                    break
                try:
                    await asyncio.wait_for(done.wait(), 0.1)
                except asyncio.TimeoutError:
                    pass
            m = await map_queue.get_job_counts("completed", "failed")
            progress.update(mapped, completed=m["completed"])
            progress.update(failed, completed=m["failed"])
            progress.update(reduced, completed=1)
        process_seconds = time.perf_counter() - t1
        if "error" in outcome:
            raise CliError(f"the reduce job failed: {outcome['error']}")
        table = Table(title="summary", show_header=False)
        table.add_row("parent's reduced result", json.dumps(outcome["result"]))
        table.add_row("expected sum of squares", f"{sum(i * i for i in range(n))}")
        table.add_row("add", f"{n + 1:,} jobs in {add_seconds:.3f}s = {(n + 1) / add_seconds:,.0f} jobs/s")
        table.add_row(
            "process",
            f"{n + 1:,} jobs in {process_seconds:.3f}s = {(n + 1) / process_seconds:,.0f} jobs/s "
            f"({args.workers or 'in-process'} worker{'s' if args.workers != 1 else ''}, concurrency {args.concurrency})",
        )
        table.add_row("wall time", f"{add_seconds + process_seconds:.3f}s")
        console.print(table)
        del root
        return 0 if outcome["result"]["sum_of_squares"] == sum(i * i for i in range(n)) else 1
    finally:
        stop.set()
        for p in procs:
            p.join(10)
        for w in workers:
            await w.close()
        await map_queue.obliterate(force=True)
        await reduce_queue.obliterate(force=True)
        await producer.close()
        await map_queue.close()
        await reduce_queue.close()


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
    url = os.environ.get("REDIS_URL") or redis_url()
    worker = Worker(
        args.queue,
        processor,
        connection=url,
        prefix=args.prefix,
        concurrency=args.concurrency,
        autorun=False,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    worker.on("error", lambda err: print(f"bullfast worker: {err}", file=sys.stderr))
    task = worker.start()
    print(f"bullfast worker: processing {args.prefix}:{args.queue} with {args.target} (concurrency {args.concurrency})",
          file=sys.stderr, flush=True)
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    print("bullfast worker: stopping; running jobs finish first", file=sys.stderr, flush=True)
    await worker.close()
    stopper.cancel()
    return 0


# -- inspect -----------------------------------------------------------------------------------


async def _inspect(args: argparse.Namespace) -> int:
    url = os.environ.get("REDIS_URL") or redis_url()
    async with Queue(args.queue, connection=url, prefix=args.prefix) as queue:
        if args.job_id is None:
            counts = await queue.get_job_counts()
            counts["paused"] = int(await queue.is_paused())
            if args.json:
                print(json.dumps(counts))
            else:
                for state, count in counts.items():
                    print(f"{state:<18}{count}")
            return 0
        producer = FlowProducer(connection=url, prefix=args.prefix)
        try:
            tree = await producer.get_flow(args.queue, args.job_id, depth=args.depth, max_children=args.max_children)
            if tree is None:
                raise CliError(f"no job {args.job_id!r} in queue {args.prefix}:{args.queue}")
            described = await _describe(tree)
        finally:
            await producer.close()
        if args.json:
            print(json.dumps(described))
        else:
            _print_tree(described, "")
        return 0


async def _describe(node: Any) -> dict[str, Any]:
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
    out["children"] = [await _describe(child) for child in node.children or ()]
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


# -- diagnose ----------------------------------------------------------------------------------


def _split_key(key: str) -> tuple[str, str, str]:
    rest, _, job_id = key.rpartition(":")
    prefix, _, queue = rest.rpartition(":")
    return prefix, queue, job_id


async def _diagnose(args: argparse.Namespace) -> int:
    url = os.environ.get("REDIS_URL") or redis_url()
    async with Queue(args.queue, connection=url, prefix=args.prefix) as queue:
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
    elif raw[0] == b"aborted":
        findings.append("aborted fan-out: abort() again removes any pending child it left behind")
    pending: list[dict[str, Any]] = []
    placeholder = f"{job.key}:unsealed"
    parent_slot = key_slot(job.key)
    cluster = (await client.info("cluster")).get("cluster_enabled") == 1
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
        entry["where"] = "; ".join([where, *notes])
        pending.append(entry)
    real_pending = counts["unprocessed"] - (1 if raw[0] == b"open" else 0)
    if state == "waiting-children" and real_pending == 0 and raw[0] != b"open":
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


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    p = argparse.ArgumentParser(prog="bullfast", description="BullMQ-compatible job flows, fast.", parents=[common])
    p.add_argument("--version", action="version", version=f"bullfast {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=[common])

    demo = add("demo", "run a map-reduce flow end to end")
    demo.add_argument("--children", type=int, default=10_000)
    demo.add_argument("--workers", type=int, default=0, help="worker processes (0: in this process)")
    demo.add_argument("--concurrency", type=int, default=50)

    worker = add("worker", "run a worker for MODULE:FUNCTION")
    worker.add_argument("target", metavar="MODULE:FUNCTION")
    worker.add_argument("--queue", required=True)
    worker.add_argument("--concurrency", type=int, default=1)
    worker.add_argument("--prefix", default="bull")

    inspect = add("inspect", "job counts of a queue, or a job's flow as a tree")
    inspect.add_argument("queue")
    inspect.add_argument("job_id", nargs="?")
    inspect.add_argument("--prefix", default="bull")
    inspect.add_argument("--depth", type=int, default=10)
    inspect.add_argument("--max-children", type=int, default=20)
    inspect.add_argument("--json", action="store_true")

    diag = add("diagnose", "why a parent stuck in waiting-children has not run")
    diag.add_argument("queue")
    diag.add_argument("job_id")
    diag.add_argument("--prefix", default="bull")
    diag.add_argument("--limit", type=int, default=1000, help="pending children to examine")
    diag.add_argument("--json", action="store_true")

    # parsed by the harness itself (see main): listed here for --help
    add_bench = sub.add_parser(
        "bench",
        help="benchmark bullfast against BullMQ (Node and Python), from a checkout; bullfast bench --help",
        add_help=False,
    )
    del add_bench
    return p


def _terminate(signum: int, frame: Any) -> None:
    # SIGTERM ends the command like Ctrl-C: cleanup runs (a private redis-server is stopped)
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
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
    commands = {"demo": _demo, "worker": _worker, "inspect": _inspect, "diagnose": _diagnose}
    signal.signal(signal.SIGTERM, _terminate)
    try:
        if args.command == "demo" and args.children < 1:
            raise CliError("--children must be at least 1")
        return asyncio.run(commands[args.command](args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(f"bullfast {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
