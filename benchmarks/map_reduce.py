#!/usr/bin/env python3
"""Map-reduce benchmark (worker side): bullfast vs the official BullMQ ports, on the same Redis.

    python benchmarks/map_reduce.py [--sizes 10000,100000] [--concurrency 1,50] [--reps 3]
        [--implementations bullfast,bullfast-pure,bullmq-py,bullmq-node]

One flow: a parent (queue ``reduce``) with N children (queue ``map``), child data ``{"k": k}``,
added by the implementation's own ``FlowProducer`` before timing starts. Then, in one process,
a child worker (concurrency C) whose processor returns ``{"n": job.data["k"]}`` and a parent
worker (concurrency 1) whose processor sums ``n`` over ``get_children_values()``
(``getChildrenValues()`` in both BullMQ ports) and returns ``{"sum": ..., "count": ...}``.
The timed region starts just before the two workers are created and ends when the parent
worker reports the parent completed (its completion written to Redis). jobs/s = (N + 1) /
seconds. The parent's result must be ``sum(range(N))`` over N children, else the measurement
fails (and the script exits non-zero).

Implementations:

* ``bullfast``: this package as installed for the running interpreter (its compiled core when
  built, else the pure-Python core; the table says which).
* ``bullfast-pure``: the same with ``BULLFAST_PURE_PYTHON=1``.
* ``bullmq-py``: ``bullmq==3.4.4`` from PyPI (the official Python port), in its own virtualenv
  ``benchmarks/.venv-bullmq`` (created here on demand: it pins its own redis-py).
* ``bullmq-node``: Node ``bullmq`` 6.7.0 + ``ioredis`` 6.0.0 (``benchmarks/package.json`` and
  its lock file; ``npm ci`` run here on demand), driven by ``benchmarks/node/map_reduce.mjs``.

Method: every measurement is a fresh process. In it: connect; a warm-up round of the same
shape on other queues (``warm-map`` / ``warm-reduce``, ``--warmup`` children; loads the Lua
scripts and warms the JIT), with its own workers, closed afterwards; add the real flow;
collect garbage; then the timed region, with ``INFO cpu`` read just before and just after it
(Redis CPU seconds), the process's own CPU time (client CPU seconds: all its threads) and the
host's (``/proc/stat``; "other CPU" = host - client - Redis, i.e. what other processes took
from the machine meanwhile). Before each measurement the script waits (``--idle-wait``, at most)
until other processes use at most ``--idle-threshold`` CPUs. Implementations are interleaved
(A B C D A B C D ...); the table gives median [min-max] over repetitions. A (implementation,
C, N) whose time, extrapolated linearly from the same implementation and C at the largest
smaller N of this run, would exceed
``--max-predicted-seconds`` (default 180) is skipped, and the output says so. Redis is a
private ``redis-server`` (``bullfast.embedded.RedisServer``) unless ``REDIS_URL`` is set;
every measurement uses its own key prefix; afterwards the script checks in Redis that N
children and the parent are completed and that the parent's stored return value is right,
and deletes the prefix's keys.

Results: a table on stdout, ``benchmarks/results/map_reduce-<stamp>.json`` and ``.md`` (and
``map_reduce-latest.*``); ``--update-readme`` replaces the map-reduce results section of
``benchmarks/README.md``.

The worker half of this file (``--worker``) imports only the standard library, ``_common``
(standard library only) and the library under test, so the same file runs under the
``bullmq-py`` virtualenv.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, also under `python -I`

from _common import (  # noqa: E402  (standard library only, see _common.py)
    HERE,
    IMPLEMENTATIONS,
    REPO,
    Impl,
    check_names,
    command_line,
    delete_prefix,
    fmt_rate,
    host_busy_seconds,
    machine_info,
    machine_sentence,
    markdown_table,
    run_child,
    setup,
    src_fingerprint,
    src_state,
    start_redis,
    text_table,
    update_readme,
    wait_for_idle,
    write_results,
)

NODE_RUNNER = HERE / "node" / "map_reduce.mjs"
NODE_ARGS = ("--expose-gc",)  # so the runner can collect garbage before the timed region

MAP_Q, REDUCE_Q = "map", "reduce"
WARM_MAP_Q, WARM_REDUCE_Q = "warm-map", "warm-reduce"

README_START = "<!-- map_reduce results: start -->"
README_END = "<!-- map_reduce results: end -->"

TARGET_RATE = 30_000  # jobs/s, bullfast at C=50, N=10,000 (from the issue)
TARGET_VS_NODE = 2.5  # x bullmq-node at C=50, same N, same run

# ---------------------------------------------------------------------------------------------
# Inputs (keep in step with node/map_reduce.mjs)
# ---------------------------------------------------------------------------------------------


def flow_tree(n: int, map_q: str = MAP_Q, reduce_q: str = REDUCE_Q) -> dict[str, Any]:
    children = [{"name": "map", "queueName": map_q, "data": {"k": k}} for k in range(n)]
    return {"name": "reduce", "queueName": reduce_q, "data": {"n": n}, "children": children}


def expected_sum(n: int) -> int:
    return n * (n - 1) // 2  # sum(range(n))


# ---------------------------------------------------------------------------------------------
# Worker: one measurement in this process (stdlib + the library under test only)
# ---------------------------------------------------------------------------------------------


class _Lib:
    """What differs between bullfast and bullmq-py: adding the flow, making a worker."""

    version = ""

    async def add(self, tree: dict[str, Any]) -> str:  # returns the parent's id
        raise NotImplementedError

    def worker(self, queue: str, role: str, concurrency: int) -> Any:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


def _sum_values(values: dict[str, Any]) -> dict[str, int]:
    total = count = 0
    for value in values.values():
        total += value["n"]
        count += 1
    return {"sum": total, "count": count}


class _Bullfast(_Lib):
    def __init__(self, url: str, prefix: str) -> None:
        import bullfast
        from bullfast import FlowProducer, Worker, core

        self.url, self.prefix, self._worker_cls = url, prefix, Worker
        self.producer = FlowProducer(connection=url, prefix=prefix)
        kind = "compiled" if core.IS_COMPILED else "pure-Python"
        self.version = f"bullfast {bullfast.__version__} ({kind} core)"

    async def add(self, tree: dict[str, Any]) -> str:
        root = await self.producer.add(tree)
        return str(root.job.id)

    def worker(self, queue: str, role: str, concurrency: int) -> Any:
        async def map_job(job: Any) -> Any:
            return {"n": job.data["k"]}

        async def reduce_job(job: Any) -> Any:
            return _sum_values(await job.get_children_values())

        processor = map_job if role == "map" else reduce_job
        return self._worker_cls(queue, processor, connection=self.url, prefix=self.prefix, concurrency=concurrency)

    async def close(self) -> None:
        await self.producer.close()


class _BullmqPy(_Lib):
    def __init__(self, url: str, prefix: str) -> None:
        from importlib.metadata import version

        from bullmq import FlowProducer, Worker

        self.url, self.prefix, self._worker_cls = url, prefix, Worker
        self.producer = FlowProducer({"connection": url, "prefix": prefix})
        self.version = f"bullmq {version('bullmq')} (redis-py {version('redis')})"

    async def add(self, tree: dict[str, Any]) -> str:
        root = await self.producer.add(tree)
        assert root is not None
        return str(root["job"].id)

    def worker(self, queue: str, role: str, concurrency: int) -> Any:
        async def map_job(job: Any, token: str) -> Any:
            return {"n": job.data["k"]}

        async def reduce_job(job: Any, token: str) -> Any:
            return _sum_values(await job.getChildrenValues())

        processor = map_job if role == "map" else reduce_job
        opts = {"connection": self.url, "prefix": self.prefix, "concurrency": concurrency}
        return self._worker_cls(queue, processor, opts)

    async def close(self) -> None:
        await self.producer.close()


async def _redis_cpu(client: Any) -> float:
    cpu = await client.info("cpu")
    return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


CLOSE_TIMEOUT = 10.0


async def _close(*workers: Any) -> int:
    """Close the workers (outside the timed region), each given CLOSE_TIMEOUT seconds; returns
    how many did not finish closing in time. (bullmq-py 3.4.4 with redis-py 8.1: ``close()``
    can hang for good while its blocking BZPOPMIN is being cancelled; such a worker is left
    behind, idle, and the process ends with ``os._exit``.)"""
    results = await asyncio.gather(
        *(asyncio.wait_for(asyncio.shield(w.close()), CLOSE_TIMEOUT) for w in workers), return_exceptions=True
    )
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, asyncio.TimeoutError):
            raise r
    return sum(isinstance(r, asyncio.TimeoutError) for r in results)


async def _round(
    lib: _Lib, info: Any, n: int, concurrency: int, map_q: str, reduce_q: str, deadline: float
) -> dict[str, Any]:
    """Add a 1+n flow (untimed), then time workers from their start to the parent's completion."""
    parent_id = await lib.add(flow_tree(n, map_q, reduce_q))
    gc.collect()
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()
    errors: list[str] = []

    def parent_completed(job: Any, result: Any, *_: Any) -> None:
        if str(job.id) == parent_id and not done.done():
            done.set_result(result)

    def job_failed(job: Any, err: Any, *_: Any) -> None:
        if not done.done():
            done.set_exception(RuntimeError(f"job {getattr(job, 'id', '?')} failed: {err!r}"))

    def worker_error(err: Any, *_: Any) -> None:
        errors.append(repr(err))

    redis_cpu0 = await _redis_cpu(info)
    h0 = host_busy_seconds()
    c0, t0 = time.process_time(), time.perf_counter()
    # -- timed region --
    map_worker = lib.worker(map_q, "map", concurrency)
    reduce_worker = lib.worker(reduce_q, "reduce", 1)
    reduce_worker.on("completed", parent_completed)
    for w in (map_worker, reduce_worker):
        w.on("failed", job_failed)
        w.on("error", worker_error)
    try:
        result = await asyncio.wait_for(done, deadline)
    except asyncio.TimeoutError:
        raise RuntimeError(f"the parent did not complete within {deadline:.0f}s") from None
    t1, c1 = time.perf_counter(), time.process_time()
    h1 = host_busy_seconds()
    # -- end of timed region --
    redis_cpu1 = await _redis_cpu(info)
    close_timeouts = await _close(map_worker, reduce_worker)
    if result != {"sum": expected_sum(n), "count": n}:
        raise RuntimeError(
            f"WRONG RESULT: the parent returned {result!r}, expected {{'sum': {expected_sum(n)}, 'count': {n}}}"
        )
    return {
        "seconds": t1 - t0,
        "client_cpu_seconds": c1 - c0,
        "redis_cpu_seconds": redis_cpu1 - redis_cpu0,
        "host_busy_cpu_seconds": None if h0 is None or h1 is None else h1 - h0,
        "parent_id": parent_id,
        "result": result,
        "worker_errors": errors[:5],
        "worker_error_count": len(errors),
        "close_timeouts": close_timeouts,
    }


async def _worker(kind: str, url: str, prefix: str, n: int, concurrency: int, warmup: int, deadline: float) -> dict[str, Any]:
    import redis.asyncio as aioredis

    lib: _Lib = _Bullfast(url, prefix) if kind == "bullfast" else _BullmqPy(url, prefix)
    info = aioredis.Redis.from_url(url)
    try:
        warm = await _round(lib, info, warmup, concurrency, WARM_MAP_Q, WARM_REDUCE_Q, deadline)
        out = await _round(lib, info, n, concurrency, MAP_Q, REDUCE_Q, deadline)
    finally:
        await lib.close()
        await info.aclose()
    out["warmup_seconds"] = warm["seconds"]
    out["close_timeouts"] += warm["close_timeouts"]
    out["version"] = lib.version
    out["python"] = platform.python_version()
    return out


def worker_main(args: argparse.Namespace) -> int:
    async def run_and_exit() -> None:
        # exit from here, also on failure: a worker that did not close (see _close) would keep
        # asyncio.run from returning, as it waits for the tasks it cancels
        try:
            result = await _worker(args.worker, args.url, args.prefix, args.n, args.c, args.warmup, args.deadline)
        except BaseException:
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(1)
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    asyncio.run(run_and_exit())
    return 1  # not reached


# ---------------------------------------------------------------------------------------------
# One measurement, and the check of what it left in Redis
# ---------------------------------------------------------------------------------------------


def measure(impl: Impl, url: str, n: int, c: int, warmup: int, timeout: float) -> dict[str, Any]:
    """One measurement in a fresh process: ``impl``'s workers, N children, concurrency C."""
    prefix = f"bfbench-mr-{impl.name}-{uuid.uuid4().hex[:10]}"
    deadline = max(timeout - 30, 10)  # the child gives up (with a message) before it is killed
    cmd = [*impl.argv, "--url", url, "--prefix", prefix, "--n", str(n), "--c", str(c),
           "--warmup", str(warmup), "--deadline", str(deadline)]
    record: dict[str, Any] = {"impl": impl.name, "n": n, "c": c, "prefix": prefix}
    t0 = time.monotonic()
    record.update(run_child(cmd, impl.env, timeout))
    record["wall_seconds_process"] = time.monotonic() - t0
    return record


def check_and_clean(url: str, record: dict[str, Any]) -> None:
    """What Redis holds after the run: N children and the parent completed, the parent's stored
    return value right. A mismatch is an error (not a warning). Then delete the prefix's keys."""
    import redis

    prefix, n = record["prefix"], record["n"]
    client = redis.Redis.from_url(url)
    try:
        state = {
            "map_completed": client.zcard(f"{prefix}:{MAP_Q}:completed"),
            "map_failed": client.zcard(f"{prefix}:{MAP_Q}:failed"),
            "map_wait": client.llen(f"{prefix}:{MAP_Q}:wait"),
            "map_active": client.llen(f"{prefix}:{MAP_Q}:active"),
            "reduce_completed": client.zcard(f"{prefix}:{REDUCE_Q}:completed"),
            "reduce_waiting_children": client.zcard(f"{prefix}:{REDUCE_Q}:waiting-children"),
        }
        record["state_after"] = state
        if "error" not in record:
            problems = []
            if (state["map_completed"], state["map_failed"], state["reduce_completed"]) != (n, 0, 1):
                problems.append(f"expected {n} children completed, 0 failed and 1 parent completed; found {state}")
            raw = client.hget(f"{prefix}:{REDUCE_Q}:{record.get('parent_id')}", "returnvalue")
            stored = json.loads(raw) if raw else None
            if stored != {"sum": expected_sum(n), "count": n}:
                problems.append(f"the parent's stored returnvalue is {stored!r}, expected sum {expected_sum(n)}")
            if problems:
                record["error"] = "CORRECTNESS CHECK FAILED: " + "; ".join(problems)
        if record.get("worker_error_count"):
            record["warning"] = f"{record['worker_error_count']} worker 'error' events, e.g. {record['worker_errors'][0]}"
        record["keys_deleted"] = delete_prefix(client, prefix)
    finally:
        client.close()


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------


def summarize(records: list[dict[str, Any]], impl_order: list[str], cells: list[tuple[int, int]],
              skips: dict[tuple[str, int, int], str]) -> list[dict[str, Any]]:
    rows = []
    for n, c in cells:
        for impl in impl_order:
            runs = [r for r in records if r["impl"] == impl and r["n"] == n and r["c"] == c]
            ok = [r for r in runs if "error" not in r]
            row: dict[str, Any] = {"impl": impl, "n": n, "c": c, "runs": len(runs), "ok": len(ok)}
            if (impl, n, c) in skips:
                row["skipped"] = skips[(impl, n, c)]
            if ok:
                rates = [(n + 1) / r["seconds"] for r in ok]
                seconds = [r["seconds"] for r in ok]
                row.update(
                    jobs=n + 1,
                    jobs_per_s_median=statistics.median(rates),
                    jobs_per_s_min=min(rates),
                    jobs_per_s_max=max(rates),
                    seconds_median=statistics.median(seconds),
                    seconds_min=min(seconds),
                    seconds_max=max(seconds),
                    client_cpu_seconds_median=statistics.median(r["client_cpu_seconds"] for r in ok),
                    redis_cpu_seconds_median=statistics.median(r["redis_cpu_seconds"] for r in ok),
                    other_cpu_seconds_median=_other_cpu_median(ok),
                    peak_rss_mb_max=max(r["peak_rss_mb"] for r in ok),
                    version=ok[0].get("version", ""),
                )
            errors = [r["error"] for r in runs if "error" in r]
            warnings = [r["warning"] for r in runs if "warning" in r]
            if errors:
                row["errors"] = errors
            if warnings:
                row["warnings"] = warnings
            rows.append(row)
    node50 = {r["n"]: r["jobs_per_s_median"] for r in rows
              if r["impl"] == "bullmq-node" and r["c"] == 50 and "jobs_per_s_median" in r}
    for row in rows:
        if "jobs_per_s_median" in row and row["n"] in node50:
            row["ratio_vs_node_c50"] = row["jobs_per_s_median"] / node50[row["n"]]
    return rows


def _other_cpu_median(runs: list[dict[str, Any]]) -> float | None:
    """CPU seconds the rest of the host spent during the timed region (host busy time minus the
    client's and redis-server's): other processes, and interrupt time charged to nobody. Near
    0 for an undisturbed measurement (/proc/stat counts 10 ms ticks)."""
    others = [r["host_busy_cpu_seconds"] - r["client_cpu_seconds"] - r["redis_cpu_seconds"]
              for r in runs if r.get("host_busy_cpu_seconds") is not None]
    return statistics.median(others) if others else None


def table_lines(rows: list[dict[str, Any]], markdown: bool) -> list[str]:
    header = ["implementation", "C", "N", "seconds median [min-max]", "jobs/s median [min-max]",
              "client CPU s", "Redis CPU s", "other CPU s", "vs bullmq-node C=50"]
    body = []
    for row in rows:
        if "jobs_per_s_median" in row:
            secs = f"{row['seconds_median']:.3f} [{row['seconds_min']:.3f}-{row['seconds_max']:.3f}]"
            rate = (f"{fmt_rate(row['jobs_per_s_median'])} "
                    f"[{fmt_rate(row['jobs_per_s_min'])}-{fmt_rate(row['jobs_per_s_max'])}]")
            if row["ok"] < row["runs"]:
                rate += f" ({row['runs'] - row['ok']} of {row['runs']} failed)"
            ratio = f"{row['ratio_vs_node_c50']:.2f}x" if "ratio_vs_node_c50" in row else "n/a"
            other = row["other_cpu_seconds_median"]
            cells = [row["impl"], str(row["c"]), f"{row['n']:,}", secs, rate,
                     f"{row['client_cpu_seconds_median']:.2f}", f"{row['redis_cpu_seconds_median']:.2f}",
                     "n/a" if other is None else f"{other:.2f}", ratio]
        elif "skipped" in row:
            cells = [row["impl"], str(row["c"]), f"{row['n']:,}", f"skipped: {row['skipped']}", *["-"] * 5]
        else:
            cells = [row["impl"], str(row["c"]), f"{row['n']:,}", f"FAILED ({row['runs']} of {row['runs']})", *["-"] * 5]
        body.append(cells)
    return markdown_table(header, body) if markdown else text_table(header, body)


def target_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, checked against this run's medians."""
    by = {(r["impl"], r["n"], r["c"]): r for r in rows}
    out = []
    bf, node = by.get(("bullfast", 10_000, 50)), by.get(("bullmq-node", 10_000, 50))
    if bf and "jobs_per_s_median" in bf:
        rate = bf["jobs_per_s_median"]
        out.append(f"bullfast C=50 N=10,000: {fmt_rate(rate)} jobs/s end to end (target >= {TARGET_RATE:,}): "
                   f"{'PASS' if rate >= TARGET_RATE else 'FAIL'}")
        if node and "jobs_per_s_median" in node:
            ratio = rate / node["jobs_per_s_median"]
            out.append(f"bullfast C=50 / bullmq-node C=50 at N=10,000: {ratio:.2f}x "
                       f"(target >= {TARGET_VS_NODE}x): {'PASS' if ratio >= TARGET_VS_NODE else 'FAIL'}")
    return out


def markdown_report(meta: dict[str, Any], rows: list[dict[str, Any]], skipped: dict[str, str]) -> str:
    lines = [f"Command: `{meta['command']}`", "", machine_sentence(meta), ""]
    versions = sorted({(r["impl"], r["version"]) for r in rows if r.get("version")})
    if versions:
        lines += ["Versions: " + "; ".join(f"{impl}: {v}" for impl, v in versions) + ".", ""]
    lines += table_lines(rows, markdown=True)
    lines.append("")
    targets = target_lines(rows)
    if targets:
        lines += ["Targets (from the issue), medians of this run:", ""]
        lines += [f"- {t}" for t in targets]
        lines.append("")
    notes = [f"- WARNING: {meta['src_changed_during_run']}"] if "src_changed_during_run" in meta else []
    notes += [f"- {note}" for note in meta.get("notes", [])]
    notes += [f"- skipped {name}: {reason}" for name, reason in skipped.items()]
    notes += [f"- {r['impl']} C={r['c']} N={r['n']:,} skipped: {r['skipped']}" for r in rows if "skipped" in r]
    notes += [f"- {r['impl']} C={r['c']} N={r['n']:,}: {e.splitlines()[0]}"
              for r in rows for e in r.get("errors", []) + r.get("warnings", [])]
    lines += notes
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10000,100000", help="numbers of children N (comma-separated)")
    p.add_argument("--concurrency", default="1,50", help="child worker concurrencies C (comma-separated)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--implementations", default=",".join(IMPLEMENTATIONS))
    p.add_argument("--warmup", type=int, default=1000, help="children of the warm-up round in each process")
    p.add_argument("--max-predicted-seconds", type=float, default=180,
                   help="skip a (implementation, C, N) predicted to take longer than this (0: never skip)")
    p.add_argument("--idle-threshold", type=float, default=0.3,
                   help="before each measurement, wait until other processes use at most this many CPUs")
    p.add_argument("--idle-wait", type=float, default=120,
                   help="...for at most this many seconds, then measure anyway (0: do not wait)")
    p.add_argument("--timeout", type=float, default=900, help="seconds per measurement (process)")
    p.add_argument("--no-install", action="store_true", help="do not create the bullmq venv or run npm ci")
    p.add_argument("--update-readme", action="store_true", help="write the table into benchmarks/README.md")
    # worker mode (internal)
    p.add_argument("--worker", choices=("bullfast", "bullmq-py"), help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--prefix", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--c", type=int, help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, default=870, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _ints(spec: str) -> list[int]:
    return [int(s.replace("_", "")) for s in spec.split(",") if s.strip()]


def predict(records: list[dict[str, Any]], impl: str, n: int, c: int, limit: float) -> tuple[bool, str | None]:
    """(skip?, why): (impl, c, n) is skipped when its time extrapolated from the largest smaller
    N of this run (same impl and C, median seconds x N ratio) exceeds ``limit``."""
    if limit <= 0:
        return False, None
    smaller = [r for r in records if r["impl"] == impl and r["c"] == c and r["n"] < n and "error" not in r]
    if not smaller:
        return False, None
    base_n = max(r["n"] for r in smaller)
    base = statistics.median(r["seconds"] for r in smaller if r["n"] == base_n)
    predicted = base * n / base_n
    why = f"predicted ~{predicted:.0f} s (N={base_n:,} took {base:.2f} s, scaled by N)"
    if predicted <= limit:
        return False, f"{why} <= --max-predicted-seconds {limit:.0f}: measuring"
    return True, f"{why} > --max-predicted-seconds {limit:.0f}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.worker:
        return worker_main(args)

    names = check_names(args.implementations)
    sizes = sorted(_ints(args.sizes))
    concurrencies = _ints(args.concurrency)
    cells = [(n, c) for n in sizes for c in concurrencies]

    impls, skipped = setup(names, not args.no_install, Path(__file__).resolve(), NODE_RUNNER, NODE_ARGS)
    for name, reason in skipped.items():
        print(f"skipping {name}: {reason}")
    if not impls:
        print("nothing to run")
        return 1

    server, url = start_redis()
    skips: dict[tuple[str, int, int], str] = {}
    records: list[dict[str, Any]] = []
    try:
        meta = {
            "command": command_line(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "reps": args.reps,
            "sizes": sizes,
            "concurrency": concurrencies,
            "warmup": args.warmup,
            "implementations": [i.name for i in impls],
            "skipped": skipped,
            "machine": machine_info(url, server is not None, impls),
        }
        print(f"Redis: {meta['machine']['redis']} at {url}; {len(impls)} implementations, sizes {sizes}, "
              f"concurrency {concurrencies}, {args.reps} reps", flush=True)
        total = args.reps * len(cells) * len(impls)
        done = 0
        for rep in range(args.reps):
            for n, c in cells:
                for impl in impls:  # interleaved: A B C D A B C D ...
                    done += 1
                    head = f"[{done}/{total}] rep {rep + 1} {impl.name:13s} C={c:<3d} N={n:<7,}"
                    key = (impl.name, n, c)
                    if key not in skips and rep == 0:
                        skip, why = predict(records, impl.name, n, c, args.max_predicted_seconds)
                        if skip:
                            skips[key] = str(why)
                        elif why and impl.name == "bullmq-py":  # the slow one: say why it runs
                            print(f"{head} {why}", flush=True)
                    if key in skips:
                        print(f"{head} SKIPPED: {skips[key]}", flush=True)
                        continue
                    waited, busy = (0.0, None)
                    if args.idle_wait > 0:
                        waited, busy = wait_for_idle(args.idle_threshold, args.idle_wait)
                        if busy is not None and busy > args.idle_threshold:
                            print(f"{head} host still busy ({busy:.2f} CPUs) after waiting {waited:.0f}s; "
                                  "measuring anyway", flush=True)
                        elif waited > 5:
                            print(f"{head} waited {waited:.0f}s for the host to be idle", flush=True)
                    record = measure(impl, url, n, c, args.warmup, args.timeout)
                    record.update(rep=rep, idle_wait_seconds=waited, host_busy_before=busy)
                    check_and_clean(url, record)
                    records.append(record)
                    if "error" in record:
                        status = "ERROR " + record["error"].splitlines()[0]
                    else:
                        status = (f"{record['seconds']:.3f} s, {(n + 1) / record['seconds']:,.0f} jobs/s, "
                                  f"client CPU {record['client_cpu_seconds']:.2f} s, "
                                  f"Redis CPU {record['redis_cpu_seconds']:.2f} s")
                    if "warning" in record:
                        status += f"  WARNING {record['warning']}"
                    print(f"{head} {status}", flush=True)
                    if "error" in record:
                        print(f"!!! {impl.name} C={c} N={n:,} FAILED:\n{record['error']}", file=sys.stderr, flush=True)
    finally:
        if server is not None:
            server.cleanup()
    meta["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if src_fingerprint() != meta["machine"].get("bullfast_src"):
        meta["src_changed_during_run"] = (f"bullfast's source changed during the run (the repository is shared): "
                                          f"now {src_state()}; measurements may mix versions")
        print(f"\nWARNING: {meta['src_changed_during_run']}")

    rows = summarize(records, [i.name for i in impls], cells, skips)
    print()
    print("\n".join(table_lines(rows, markdown=False)))
    targets = target_lines(rows)
    if targets:
        print()
        print("\n".join(targets))
    if skips:
        print()
    for key, reason in skips.items():
        print(f"skipped {key[0]} C={key[2]} N={key[1]:,}: {reason}")
    failed = [(row, e) for row in rows for e in row.get("errors", [])]
    for row, e in failed:
        print(f"\n!!! {row['impl']} C={row['c']} N={row['n']:,} FAILED:\n{e}")

    payload = {"meta": meta, "summary": rows, "measurements": records,
               "skips": [{"impl": k[0], "n": k[1], "c": k[2], "reason": v} for k, v in skips.items()]}
    markdown = markdown_report(meta, rows, skipped)
    written = write_results("map_reduce", payload, markdown)
    print(f"\nresults: {written.relative_to(REPO)} (and .md, map_reduce-latest.*)")
    if args.update_readme:
        if failed:
            print("benchmarks/README.md NOT updated: some measurements failed")
        elif update_readme(markdown, README_START, README_END):
            print("benchmarks/README.md updated")
        else:
            print(f"benchmarks/README.md not updated (no {README_START} / {README_END} markers)")
    if failed:
        print(f"\n{len(failed)} measurement(s) FAILED (see above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
