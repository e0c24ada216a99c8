#!/usr/bin/env python3
"""Producer-side flow benchmark: bullfast vs the official BullMQ ports, on the same Redis.

    python benchmarks/flow_add.py [--sizes 1000,10000,100000] [--small-flows 2000] [--reps 3]
        [--implementations bullfast,bullfast-pure,bullmq-py,bullmq-node]

Scenarios (the same trees and payloads for every implementation):

* ``fanout``: one parent (queue ``parent-q``) with N children (queue ``child-q``), child data
  ``{"i": k, "payload": sha256(str(k)).hexdigest()}`` (64 chars); one ``FlowProducer.add``.
  jobs/s = (N + 1) / seconds.
* ``small``: ``--small-flows`` flows of 1 parent + 3 children (queues ``small-parent-q`` and
  ``small-child-q``), all added by one ``add_bulk`` / ``addBulk`` call.
  jobs/s = flows * 4 / seconds.

Implementations:

* ``bullfast``: this package as installed for the running interpreter (its compiled core when
  built, else the pure-Python core; the table says which).
* ``bullfast-pure``: the same with ``BULLFAST_PURE_PYTHON=1``.
* ``bullmq-py``: ``bullmq==3.4.4`` from PyPI (the official Python port), in its own virtualenv
  ``benchmarks/.venv-bullmq`` (created here on demand: it pins its own redis-py).
* ``bullmq-node``: Node ``bullmq`` 6.7.0 + ``ioredis`` 6.0.0 (``benchmarks/package.json`` and
  its lock file; ``npm ci`` run here on demand), driven by ``benchmarks/node/flow_add.mjs``.

Method: every measurement is a fresh process (so its peak RSS, read by the parent with
``wait4`` = the child's ``ru_maxrss``, belongs to that measurement alone and includes the
interpreter, the library and the input tree). In that process: connect, one warm-up add of a
small tree of the same shape on other queues (loads the Lua scripts), build the input, then
time the one real call. Implementations are interleaved (A B C A B C ...), each repetition
runs every scenario for every implementation; the table gives median [min-max] over
repetitions. Redis is a private ``redis-server`` (``bullfast.embedded.RedisServer``) unless
``REDIS_URL`` is set; every measurement uses its own key prefix, and its keys are counted
(to check that each implementation wrote the same jobs) and deleted right after it.

Results: a table on stdout, ``benchmarks/results/flow_add-<stamp>.json`` and ``.md`` (and
``latest.json`` / ``latest.md``); ``--update-readme`` replaces the results section of
``benchmarks/README.md``.

The worker half of this file (``--worker``) imports only the standard library and the
library under test, so the same file runs under the ``bullmq-py`` virtualenv.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import resource
import statistics
import sys
import time
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
    machine_info,
    machine_sentence,
    markdown_table,
    redis_cpu_seconds,
    run_child,
    setup,
    start_redis,
    text_table,
    update_readme,
    write_results,
)
from _common import fmt_rate as _fmt_rate  # noqa: E402

NODE_RUNNER = HERE / "node" / "flow_add.mjs"

PARENT_Q, CHILD_Q = "parent-q", "child-q"
SMALL_PARENT_Q, SMALL_CHILD_Q = "small-parent-q", "small-child-q"
WARM_PARENT_Q, WARM_CHILD_Q = "warm-parent-q", "warm-child-q"

README_START = "<!-- flow_add results: start -->"
README_END = "<!-- flow_add results: end -->"

# ---------------------------------------------------------------------------------------------
# Inputs (keep in step with node/flow_add.mjs)
# ---------------------------------------------------------------------------------------------


def payload(k: int) -> str:
    return hashlib.sha256(str(k).encode()).hexdigest()  # 64 chars


def fanout_tree(n: int, parent_q: str = PARENT_Q, child_q: str = CHILD_Q) -> dict[str, Any]:
    children = [{"name": "child", "queueName": child_q, "data": {"i": k, "payload": payload(k)}} for k in range(n)]
    return {"name": "parent", "queueName": parent_q, "data": {"n": n}, "children": children}


def small_flows(count: int, parent_q: str = SMALL_PARENT_Q, child_q: str = SMALL_CHILD_Q) -> list[dict[str, Any]]:
    flows = []
    for f in range(count):
        children = [
            {"name": "child", "queueName": child_q, "data": {"i": k, "payload": payload(k)}}
            for k in range(f * 3, f * 3 + 3)
        ]
        flows.append({"name": "parent", "queueName": parent_q, "data": {"flow": f}, "children": children})
    return flows


# ---------------------------------------------------------------------------------------------
# Worker: one measurement in this process (stdlib + the library under test only)
# ---------------------------------------------------------------------------------------------


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


async def _worker_bullfast(url: str, prefix: str, scenario: str, n: int) -> dict[str, Any]:
    import bullfast
    from bullfast import FlowProducer, core

    fp = FlowProducer(connection=url, prefix=prefix)
    baseline = _max_rss_mb()
    try:
        if scenario == "fanout":
            await fp.add(fanout_tree(10, WARM_PARENT_Q, WARM_CHILD_Q))
            tree = fanout_tree(n)
            before_call = _max_rss_mb()
            t0, c0 = time.perf_counter(), time.process_time()
            root = await fp.add(tree)
            elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
            assert root.children is not None and len(root.children) == n
            jobs = n + 1
        else:
            await fp.add_bulk(small_flows(10, WARM_PARENT_Q, WARM_CHILD_Q))
            flows = small_flows(n)
            before_call = _max_rss_mb()
            t0, c0 = time.perf_counter(), time.process_time()
            roots = await fp.add_bulk(flows)
            elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
            assert len(roots) == n
            jobs = n * 4
        peak = _max_rss_mb()
    finally:
        await fp.close()
    core_kind = "compiled" if core.IS_COMPILED else "pure-Python"
    return {
        "seconds": elapsed,
        "client_cpu_seconds": cpu,
        "jobs": jobs,
        "peak_rss_mb_self": peak,
        "baseline_rss_mb": baseline,
        "before_call_rss_mb": before_call,
        "version": f"bullfast {bullfast.__version__} ({core_kind} core)",
        "core": core_kind,
    }


async def _worker_bullmq_py(url: str, prefix: str, scenario: str, n: int) -> dict[str, Any]:
    from importlib.metadata import version

    from bullmq import FlowProducer

    fp = FlowProducer({"connection": url, "prefix": prefix})
    baseline = _max_rss_mb()
    try:
        if scenario == "fanout":
            await fp.add(fanout_tree(10, WARM_PARENT_Q, WARM_CHILD_Q))
            tree = fanout_tree(n)
            before_call = _max_rss_mb()
            t0, c0 = time.perf_counter(), time.process_time()
            root = await fp.add(tree)
            elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
            assert root is not None and len(root["children"]) == n
            jobs = n + 1
        else:
            await fp.addBulk(small_flows(10, WARM_PARENT_Q, WARM_CHILD_Q))
            flows = small_flows(n)
            before_call = _max_rss_mb()
            t0, c0 = time.perf_counter(), time.process_time()
            roots = await fp.addBulk(flows)
            elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
            assert roots is not None and len(roots) == n
            jobs = n * 4
        peak = _max_rss_mb()
    finally:
        await fp.close()
    return {
        "seconds": elapsed,
        "client_cpu_seconds": cpu,
        "jobs": jobs,
        "peak_rss_mb_self": peak,
        "baseline_rss_mb": baseline,
        "before_call_rss_mb": before_call,
        "version": f"bullmq {version('bullmq')} (redis-py {version('redis')})",
    }


def worker_main(args: argparse.Namespace) -> int:
    run = {"bullfast": _worker_bullfast, "bullmq-py": _worker_bullmq_py}[args.worker]
    result = asyncio.run(run(args.url, args.prefix, args.scenario, args.n))
    result["python"] = platform.python_version()
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


# ---------------------------------------------------------------------------------------------
# Setting up the implementations
# ---------------------------------------------------------------------------------------------


def measure(impl: Impl, url: str, scenario: str, n: int, timeout: float) -> dict[str, Any]:
    prefix = f"bfbench-{impl.name}-{uuid.uuid4().hex[:10]}"
    cmd = [*impl.argv, "--url", url, "--prefix", prefix, "--scenario", scenario, "--n", str(n)]
    record: dict[str, Any] = {"impl": impl.name, "scenario": scenario, "n": n, "prefix": prefix}
    redis_cpu_before = redis_cpu_seconds(url)
    record.update(run_child(cmd, impl.env, timeout))
    # Redis's CPU over the child's whole life: the warm-up add is tiny, the rest is the timed add.
    record["redis_cpu_seconds"] = redis_cpu_seconds(url) - redis_cpu_before
    return record


def check_and_clean(url: str, record: dict[str, Any]) -> None:
    """Count what the measurement wrote (same jobs for everyone?), then delete its keys."""
    import redis

    prefix, n = record["prefix"], record["n"]
    client = redis.Redis.from_url(url)
    try:
        if record["scenario"] == "fanout":
            parent_q, child_q, parents, children = PARENT_Q, CHILD_Q, 1, n
        else:
            parent_q, child_q, parents, children = SMALL_PARENT_Q, SMALL_CHILD_Q, n, 3 * n
        got_children = client.llen(f"{prefix}:{child_q}:wait")
        got_parents = client.zcard(f"{prefix}:{parent_q}:waiting-children")
        record["written"] = {"waiting_children": got_parents, "wait": got_children}
        if "error" not in record and (got_children, got_parents) != (children, parents):
            record["warning"] = (
                f"expected {parents} parents waiting-children and {children} children waiting, found "
                f"{got_parents} and {got_children}"
            )
        record["keys_deleted"] = delete_prefix(client, prefix)
    finally:
        client.close()


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------


def _scenario_label(scenario: str, n: int) -> tuple[str, str]:
    if scenario == "fanout":
        return "fan-out 1+N", f"{n:,}"
    return "small flows 1+3 (add_bulk)", f"{n:,} flows"


def summarize(records: list[dict[str, Any]], impl_order: list[str], scenarios: list[tuple[str, int]]) -> list[dict[str, Any]]:
    rows = []
    medians: dict[tuple[str, str, int], float] = {}
    for scenario, n in scenarios:
        for impl in impl_order:
            runs = [r for r in records if r["impl"] == impl and r["scenario"] == scenario and r["n"] == n]
            ok = [r for r in runs if "error" not in r]
            row: dict[str, Any] = {"impl": impl, "scenario": scenario, "n": n, "runs": len(runs), "ok": len(ok)}
            if ok:
                rates = [r["jobs"] / r["seconds"] for r in ok]
                row.update(
                    jobs=ok[0]["jobs"],
                    jobs_per_s_median=statistics.median(rates),
                    jobs_per_s_min=min(rates),
                    jobs_per_s_max=max(rates),
                    seconds_median=statistics.median(r["seconds"] for r in ok),
                    peak_rss_mb_max=max(r["peak_rss_mb"] for r in ok),
                    peak_rss_mb_median=statistics.median(r["peak_rss_mb"] for r in ok),
                    baseline_rss_mb_median=statistics.median(r.get("baseline_rss_mb", 0.0) for r in ok),
                    before_call_rss_mb_median=statistics.median(r.get("before_call_rss_mb", 0.0) for r in ok),
                    client_cpu_seconds_median=statistics.median(r.get("client_cpu_seconds", 0.0) for r in ok),
                    redis_cpu_seconds_median=statistics.median(r["redis_cpu_seconds"] for r in ok),
                    version=ok[0].get("version", ""),
                )
                medians[(impl, scenario, n)] = row["jobs_per_s_median"]
            errors = [r["error"] for r in runs if "error" in r]
            warnings = [r["warning"] for r in runs if "warning" in r]
            if errors:
                row["errors"] = errors
            if warnings:
                row["warnings"] = warnings
            rows.append(row)
    for row in rows:
        base = medians.get(("bullfast", row["scenario"], row["n"]))
        if base and "jobs_per_s_median" in row:
            row["ratio_vs_bullfast"] = row["jobs_per_s_median"] / base
    return rows


def table_lines(rows: list[dict[str, Any]], markdown: bool) -> list[str]:
    header = [
        "implementation",
        "scenario",
        "N",
        "jobs/s median [min-max]",
        "seconds (median)",
        "peak RSS MB (max)",
        "RSS before call MB",
        "client CPU s",
        "Redis CPU s",
        "ratio vs bullfast",
    ]
    body = []
    for row in rows:
        label, n = _scenario_label(row["scenario"], row["n"])
        if "jobs_per_s_median" in row:
            rate = (
                f"{_fmt_rate(row['jobs_per_s_median'])} "
                f"[{_fmt_rate(row['jobs_per_s_min'])}-{_fmt_rate(row['jobs_per_s_max'])}]"
            )
            if row["ok"] < row["runs"]:
                rate += f" ({row['runs'] - row['ok']} of {row['runs']} failed)"
            ratio = f"{row['ratio_vs_bullfast']:.2f}x" if "ratio_vs_bullfast" in row else "n/a"
            cells = [
                row["impl"],
                label,
                n,
                rate,
                f"{row['seconds_median']:.3f}",
                f"{row['peak_rss_mb_max']:.0f}",
                f"{row['before_call_rss_mb_median']:.0f}",
                f"{row['client_cpu_seconds_median']:.3f}",
                f"{row['redis_cpu_seconds_median']:.3f}",
                ratio,
            ]
        else:
            cells = [row["impl"], label, n, f"failed ({row['runs']} of {row['runs']})", *["-"] * 6]
        body.append(cells)
    return markdown_table(header, body) if markdown else text_table(header, body)


def target_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, checked against bullfast's numbers of this run."""
    by = {(r["impl"], r["scenario"], r["n"]): r for r in rows}
    out = []
    for n in (10_000, 100_000):
        bf = by.get(("bullfast", "fanout", n))
        if not bf or "jobs_per_s_median" not in bf:
            continue
        rate = bf["jobs_per_s_median"]
        out.append(f"bullfast fan-out N={n:,}: {_fmt_rate(rate)} jobs/s (target >= 60,000): "
                   f"{'PASS' if rate >= 60_000 else 'FAIL'}")
        py = by.get(("bullmq-py", "fanout", n))
        if py and "jobs_per_s_median" in py:
            speedup = rate / py["jobs_per_s_median"]
            out.append(f"bullfast / bullmq-py fan-out N={n:,}: {speedup:.2f}x (target >= 4.5x): "
                       f"{'PASS' if speedup >= 4.5 else 'FAIL'}")
        if n == 100_000:
            rss = bf["peak_rss_mb_max"]
            out.append(f"bullfast peak RSS fan-out N=100,000: {rss:.0f} MB (target < 150 MB): "
                       f"{'PASS' if rss < 150 else 'FAIL'}")
    return out


def markdown_report(meta: dict[str, Any], rows: list[dict[str, Any]], skipped: dict[str, str]) -> str:
    lines = [f"Command: `{meta['command']}`", "", machine_sentence(meta), ""]
    versions = sorted({(r["impl"], r["version"]) for r in rows if r.get("version")})
    if versions:
        lines.append("Versions: " + "; ".join(f"{impl}: {v}" for impl, v in versions) + ".")
        lines.append("")
    lines += table_lines(rows, markdown=True)
    lines.append("")
    targets = target_lines(rows)
    if targets:
        lines.append("Targets (from the issue), bullfast medians of this run:")
        lines.append("")
        lines += [f"- {t}" for t in targets]
        lines.append("")
    for name, reason in skipped.items():
        lines.append(f"- skipped {name}: {reason}")
    problems = [(r["impl"], r["scenario"], r["n"], e) for r in rows for e in r.get("errors", []) + r.get("warnings", [])]
    for impl, scenario, n, e in problems:
        lines.append(f"- {impl} {scenario} N={n}: {e.splitlines()[-1] if e else e}")
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1000,10000,100000", help="fan-out sizes N (comma-separated)")
    p.add_argument("--small-flows", type=int, default=2000, help="number of 1+3 flows (0: skip)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--implementations", default=",".join(IMPLEMENTATIONS))
    p.add_argument("--timeout", type=float, default=900, help="seconds per measurement")
    p.add_argument("--no-install", action="store_true", help="do not create the bullmq venv or run npm ci")
    p.add_argument("--update-readme", action="store_true", help="write the table into benchmarks/README.md")
    # worker mode (internal)
    p.add_argument("--worker", choices=("bullfast", "bullmq-py"), help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--prefix", help=argparse.SUPPRESS)
    p.add_argument("--scenario", choices=("fanout", "small"), help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.worker:
        return worker_main(args)

    names = check_names(args.implementations)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    scenarios = [("fanout", n) for n in sizes] + ([("small", args.small_flows)] if args.small_flows > 0 else [])

    impls, skipped = setup(names, not args.no_install, Path(__file__).resolve(), NODE_RUNNER)
    for name, reason in skipped.items():
        print(f"skipping {name}: {reason}")
    if not impls:
        print("nothing to run")
        return 1

    server, url = start_redis()
    try:
        started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        meta = {
            "command": command_line(),
            "started": started,
            "reps": args.reps,
            "sizes": sizes,
            "small_flows": args.small_flows,
            "implementations": [i.name for i in impls],
            "skipped": skipped,
            "machine": machine_info(url, server is not None, impls),
        }
        print(f"Redis: {meta['machine']['redis']} at {url}; {len(impls)} implementations, "
              f"{len(scenarios)} scenarios, {args.reps} reps", flush=True)
        records = []
        total = args.reps * len(scenarios) * len(impls)
        done = 0
        for rep in range(args.reps):
            for scenario, n in scenarios:
                for impl in impls:  # interleaved: A B C A B C ...
                    done += 1
                    record = measure(impl, url, scenario, n, args.timeout)
                    record["rep"] = rep
                    check_and_clean(url, record)
                    records.append(record)
                    label, shown = _scenario_label(scenario, n)
                    if "error" in record:
                        status = "ERROR " + record["error"].splitlines()[-1]
                    else:
                        status = (f"{record['jobs'] / record['seconds']:,.0f} jobs/s, {record['seconds']:.3f} s, "
                                  f"peak RSS {record['peak_rss_mb']:.0f} MB")
                    if "warning" in record:
                        status += f"  WARNING {record['warning']}"
                    print(f"[{done}/{total}] rep {rep + 1} {impl.name:12s} {label} {shown}: {status}", flush=True)
    finally:
        if server is not None:
            server.cleanup()
    meta["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]

    rows = summarize(records, [i.name for i in impls], scenarios)
    print()
    print("\n".join(table_lines(rows, markdown=False)))
    targets = target_lines(rows)
    if targets:
        print()
        print("\n".join(targets))
    for row in rows:
        for e in row.get("errors", []):
            print(f"\n{row['impl']} {row['scenario']} N={row['n']} failed:\n{e}")

    payload_json = {"meta": meta, "summary": rows, "measurements": records}
    markdown = markdown_report(meta, rows, skipped)
    written = write_results("flow_add", payload_json, markdown)
    print(f"\nresults: {written.relative_to(REPO)} (and .md, latest.*)")
    if args.update_readme:
        if update_readme(markdown, README_START, README_END):
            print("benchmarks/README.md updated")
        else:
            print(f"benchmarks/README.md not updated (no {README_START} / {README_END} markers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
