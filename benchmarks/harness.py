"""``bullfast bench`` (also ``python -m benchmarks``): bullfast against BullMQ, side by side.

Runs the standard scenarios for every implementation that is available here, interleaved on
the same Redis, several repetitions, and writes a terminal table, a JSON file of every run, a
Markdown report and PNG charts. See benchmarks/README.md for what is measured and how.

Implementations: ``bullfast`` (this checkout as installed for the running interpreter),
``bullfast-pure`` (the same with ``BULLFAST_PURE_PYTHON=1``), ``bullmq-py`` (``bullmq==3.4.4``
from PyPI in ``benchmarks/.venv-bullmq``), ``bullmq-node`` (Node ``bullmq`` 6.7.0 from
``benchmarks/package-lock.json``). Each measurement is a fresh process: ``runner.py`` for the
Python ones, ``node/bench.mjs`` for Node.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _common as common
from ._common import HERE, REPO, Impl

RUNNER = HERE / "runner.py"
NODE_RUNNER = HERE / "node" / "bench.mjs"
PROBE = HERE / "probe.py"
DEFAULT_OUT = HERE / "results"
README = HERE / "README.md"
README_CHARTS = HERE / "charts"
README_START = "<!-- bench report: start -->"
README_END = "<!-- bench report: end -->"

IMPLEMENTATIONS = common.IMPLEMENTATIONS  # bullfast, bullfast-pure, bullmq-py, bullmq-node


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    size_name: str  # what N counts
    sizes: tuple[int, ...]
    quick_sizes: tuple[int, ...]
    warmup: int  # size of the in-process warm-up round
    quick_warmup: int
    jobs_per_unit: int = 1  # jobs = N * jobs_per_unit + jobs_extra
    jobs_extra: int = 0
    latency: str | None = None  # what the p50/p99 time
    memory: bool = False  # Redis memory per job is meaningful (add scenarios)
    end_to_end: bool = False
    concurrency: bool = False  # has a C axis

    def jobs(self, n: int) -> int:
        return n * self.jobs_per_unit + self.jobs_extra


SCENARIOS: dict[str, Scenario] = {
    s.key: s
    for s in (
        Scenario("fanout", "Flow fan-out add: 1 parent + N children, one FlowProducer.add", "children",
                 (1_000, 10_000, 100_000), (100, 1_000), 10, 10, jobs_extra=1, memory=True),
        Scenario("flows", "Many small flows: N flows of 1 parent + 3 children, one FlowProducer.add_bulk", "flows",
                 (5_000,), (50,), 10, 5, jobs_per_unit=4, memory=True),
        Scenario("bulk", "Plain Queue.add_bulk of N jobs", "jobs", (10_000,), (200,), 10, 5, memory=True),
        Scenario("add", "Single Queue.add latency: N adds one after the other", "adds", (2_000,), (100,), 100, 10,
                 latency="add call", memory=True),
        Scenario("burst", "Concurrent Queue.add: N adds started at once (gather / Promise.all)", "adds",
                 (1_000, 10_000), (100,), 100, 10, memory=True),
        Scenario("start", "Job start latency: an idle worker, N jobs added one at a time", "jobs", (500,), (30,),
                 20, 5, latency="add to processor start"),
        Scenario("mapreduce", "Map-reduce end to end: add 1 + N, then workers (map: concurrency C), parent sums",
                 "children", (10_000, 100_000), (200,), 1_000, 20, jobs_extra=1, end_to_end=True, concurrency=True),
        Scenario("chain", "Deep chain end to end: depth N, each step the only child of the next", "depth",
                 (100,), (100,), 10, 5, end_to_end=True),
    )
}
DEFAULT_CONCURRENCY = (1, 50)


# ---------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str], prog: str | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=prog,
        description=__doc__.split("\n\n")[0],
        epilog="Scenarios: " + "; ".join(f"{s.key} = {s.title} (N = {s.size_name}, default "
                                          f"{','.join(map(str, s.sizes))})" for s in SCENARIOS.values()),
    )
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated (default: all)")
    p.add_argument("--sizes", action="append", default=[], metavar="[SCENARIO=]N,N",
                   help="sizes N for every selected scenario, or for one with SCENARIO=N,N (repeatable)")
    p.add_argument("--concurrency", default=",".join(map(str, DEFAULT_CONCURRENCY)),
                   help="map-reduce worker concurrencies C (default 1,50)")
    p.add_argument("--reps", type=int, default=None, help="repetitions (default 3; --quick: 1)")
    p.add_argument("--implementations", default=",".join(IMPLEMENTATIONS),
                   help=f"comma-separated, from {','.join(IMPLEMENTATIONS)} (default: all; those that cannot "
                   "run here are skipped with the reason)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: tiny sizes, 1 repetition, no waiting for an idle host")
    p.add_argument("--out", type=Path, default=None,
                   help=f"directory for the JSON, the Markdown report and charts/ (default {DEFAULT_OUT})")
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL") or None,
                   help="Redis to measure on (default $REDIS_URL, else a private redis-server)")
    p.add_argument("--no-install", action="store_true",
                   help="do not create benchmarks/.venv-bullmq or run npm ci (skip those implementations instead)")
    p.add_argument("--no-charts", action="store_true", help="no PNG charts")
    p.add_argument("--update-readme", action="store_true",
                   help="also write the report into benchmarks/README.md and its charts into benchmarks/charts/")
    p.add_argument("--report-only", type=Path, metavar="JSON",
                   help="measure nothing: write the report and charts again from a JSON file of an earlier run")
    p.add_argument("--max-seconds", type=float, default=120,
                   help="skip an (implementation, scenario, N) whose time, extrapolated linearly from its "
                   "largest smaller N measured in this run, exceeds this (0: never skip)")
    p.add_argument("--idle-threshold", type=float, default=0.3,
                   help="before each measurement wait until other processes use at most this many CPUs ...")
    p.add_argument("--idle-wait", type=float, default=None, help="... for at most this many seconds (default 20; --quick: 0)")
    p.add_argument("--probe-interval-ms", type=float, default=2.0, help="the stall probe's PING interval")
    p.add_argument("--timeout", type=float, default=600, help="seconds per measurement")
    args = p.parse_args(argv)
    if args.reps is None:
        args.reps = 1 if args.quick else 3
    if args.idle_wait is None:
        args.idle_wait = 0.0 if args.quick else 20.0
    if args.reps < 1:
        p.error("--reps must be at least 1")
    return args


def _ints(spec: str, what: str) -> list[int]:
    try:
        out = [int(s.strip().replace("_", "")) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"bullfast bench: {what}: expected comma-separated integers, got {spec!r}") from None
    if not out or min(out) < 1:
        raise SystemExit(f"bullfast bench: {what}: expected positive integers, got {spec!r}")
    return out


def plan_cells(args: argparse.Namespace) -> list[tuple[str, int, int]]:
    """(scenario, N, C) in run order; C is 0 for scenarios without a concurrency axis."""
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in names if s not in SCENARIOS]
    if unknown or not names:
        raise SystemExit(f"bullfast bench: unknown scenario(s) {', '.join(unknown) or '(none)'}; "
                         f"choose from {', '.join(SCENARIOS)}")
    sizes: dict[str, list[int]] = {}
    for spec in args.sizes:
        if "=" in spec:
            name, _, rest = spec.partition("=")
            if name.strip() not in SCENARIOS:
                raise SystemExit(f"bullfast bench: --sizes {spec!r}: unknown scenario {name!r}")
            sizes[name.strip()] = _ints(rest, f"--sizes {spec}")
        else:
            for name in names:
                sizes[name] = _ints(spec, "--sizes")
    concurrency = _ints(args.concurrency, "--concurrency")
    cells = []
    for name in names:
        s = SCENARIOS[name]
        for n in sorted(sizes.get(name) or (s.quick_sizes if args.quick else s.sizes)):
            for c in (concurrency if s.concurrency else [0]):
                cells.append((name, n, c))
    return cells


def check_impls(spec: str) -> list[str]:
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in IMPLEMENTATIONS]
    if unknown or not names:
        raise SystemExit(f"bullfast bench: unknown implementation(s) {', '.join(unknown) or '(none)'}; "
                         f"choose from {', '.join(IMPLEMENTATIONS)}")
    return names


# ---------------------------------------------------------------------------------------------
# Implementations
# ---------------------------------------------------------------------------------------------


def setup_impls(names: list[str], install: bool) -> tuple[list[Impl], dict[str, str]]:
    impls: list[Impl] = []
    skipped: dict[str, str] = {}
    for name in names:
        try:
            if name in ("bullfast", "bullfast-pure"):
                base = common.setup_bullfast(name, RUNNER)  # checks that bullfast is importable
                impls.append(Impl(name, [sys.executable, str(RUNNER), "--impl", "bullfast"], base.env))
            elif name == "bullmq-py":
                base = common.setup_bullmq_py(install, RUNNER)
                impls.append(Impl(name, [base.argv[0], "-I", str(RUNNER), "--impl", "bullmq-py"]))
            elif name == "bullmq-node":
                impls.append(common.setup_bullmq_node(install, NODE_RUNNER, ("--expose-gc",)))
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            skipped[name] = str(exc)
            print(f"[skip] {name}: {exc}", flush=True)
    return impls, skipped


# ---------------------------------------------------------------------------------------------
# Redis: the server, the probe, checking and cleaning what a measurement wrote
# ---------------------------------------------------------------------------------------------


class Probe:
    """probe.py in its own process for one measurement; ``stop()`` returns its samples."""

    def __init__(self, url: str, interval_ms: float) -> None:
        fd, self.path = tempfile.mkstemp(prefix="bullfast-bench-probe-")
        os.close(fd)
        self.proc: subprocess.Popen[str] | None = subprocess.Popen(
            [sys.executable, str(PROBE), "--url", url, "--interval-ms", str(interval_ms), "--out", self.path],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "READY":
            err = self.proc.stderr.read() if self.proc.stderr else ""
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            self.error = f"probe did not start: {common.tail(err, 2) or line}"
        else:
            self.error = ""

    def stop(self) -> list[tuple[int, int]]:
        if self.proc is None:
            return []
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        import array

        samples = array.array("q")
        try:
            with open(self.path, "rb") as f:
                samples.frombytes(f.read())
        finally:
            os.unlink(self.path)
        return list(zip(samples[0::2], samples[1::2]))


def stall_in_window(samples: list[tuple[int, int]], t0: int, t1: int) -> dict[str, Any]:
    """The probe's round trips that overlap [t0, t1]: longest and p99, in ms."""
    rtts = sorted(rtt for sent, rtt in samples if sent <= t1 and sent + rtt >= t0)
    if not rtts:
        return {}
    return {"max_ms": rtts[-1] / 1e6, "p99_ms": rtts[max(0, int(0.99 * len(rtts)) - 1)] / 1e6, "pings": len(rtts)}


def verify(client: Any, scenario: str, n: int, prefix: str, record: dict[str, Any]) -> str:
    """Check in Redis what the measurement left; returns what was checked, raises on a mismatch."""

    def llen(q: str, state: str = "wait") -> int:
        return int(client.llen(f"{prefix}:{q}:{state}"))

    def zcard(q: str, state: str) -> int:
        return int(client.zcard(f"{prefix}:{q}:{state}"))

    def returnvalue(q: str, job_id: str) -> Any:
        raw = client.hget(f"{prefix}:{q}:{job_id}", "returnvalue")
        return None if raw is None else json.loads(raw)

    checks: list[tuple[str, Any, Any]] = []  # (what, found, expected)
    if scenario == "fanout":
        checks += [("children in fanout-child:wait", llen("fanout-child"), n),
                   ("parents in fanout-parent:waiting-children", zcard("fanout-parent", "waiting-children"), 1),
                   ("the parent's hash", bool(client.exists(f"{prefix}:fanout-parent:{record.get('parent_id')}")), True)]
    elif scenario == "flows":
        checks += [("children in flows-child:wait", llen("flows-child"), 3 * n),
                   ("parents in flows-parent:waiting-children", zcard("flows-parent", "waiting-children"), n)]
    elif scenario in ("bulk", "add", "burst"):
        checks += [(f"jobs in {scenario}:wait", llen(scenario), n)]
    elif scenario == "start":
        checks += [("jobs in start:completed (N + 1 untimed first job)", zcard("start", "completed"), n + 1),
                   ("jobs in start:failed", zcard("start", "failed"), 0)]
    elif scenario == "mapreduce":
        checks += [("children in map:completed", zcard("map", "completed"), n),
                   ("children in map:failed", zcard("map", "failed"), 0),
                   ("parents in reduce:completed", zcard("reduce", "completed"), 1),
                   ("the parent's stored returnvalue", returnvalue("reduce", str(record.get("parent_id"))),
                    {"sum": n * (n - 1) // 2, "count": n})]
    elif scenario == "chain":
        checks += [("steps in chain:completed", zcard("chain", "completed"), n),
                   ("steps in chain:failed", zcard("chain", "failed"), 0),
                   ("the root's stored returnvalue", returnvalue("chain", str(record.get("parent_id"))), {"depth": n})]
    bad = [f"{what}: found {found!r}, expected {expected!r}" for what, found, expected in checks if found != expected]
    if bad:
        raise RuntimeError("Redis check failed: " + "; ".join(bad))
    return "; ".join(f"{what} = {found!r}" for what, found, _ in checks)


def clean(client: Any, prefix: str, own_server: bool) -> int:
    """Remove what a measurement wrote: FLUSHALL on the private server this run started (it
    holds nothing else), else only the keys under the measurement's prefix."""
    if own_server:
        count = int(client.dbsize())
        client.flushall()
        return count
    return common.delete_prefix(client, prefix)


# ---------------------------------------------------------------------------------------------
# One measurement
# ---------------------------------------------------------------------------------------------


def measure(impl: Impl, cell: tuple[str, int, int], rep: int, url: str, own_server: bool,
            args: argparse.Namespace) -> dict[str, Any]:
    import redis

    scenario, n, c = cell
    s = SCENARIOS[scenario]
    prefix = f"bfbench-{impl.name}-{scenario}-{uuid.uuid4().hex[:8]}"
    warmup = s.quick_warmup if args.quick else s.warmup
    cmd = [*impl.argv, "--scenario", scenario, "--n", str(n), "--c", str(max(c, 1)), "--url", url,
           "--prefix", prefix, "--warmup", str(warmup), "--deadline", str(max(10.0, args.timeout - 5))]
    record: dict[str, Any] = {"impl": impl.name, "scenario": scenario, "n": n, "c": c, "rep": rep,
                              "prefix": prefix, "warmup_size": warmup, "verified": False}
    probe = Probe(url, args.probe_interval_ms) if args.probe_interval_ms > 0 else None
    if probe is not None and probe.error:
        record["probe_error"] = probe.error
    try:
        record.update(common.run_child(cmd, impl.env, args.timeout))
    finally:
        samples = probe.stop() if probe is not None else []
    if "t_start_ns" in record and samples:
        stall = stall_in_window(samples, int(record["t_start_ns"]), int(record["t_end_ns"]))
        whole = stall_in_window(samples, 0, 2**62)
        record["probe"] = {**stall, "whole_process_max_ms": whole.get("max_ms")}
    client = redis.Redis.from_url(url)
    try:
        if "error" not in record:
            if record.get("jobs") != s.jobs(n):
                record["error"] = f"the runner timed {record.get('jobs')} jobs, expected {s.jobs(n)}"
            else:
                try:
                    record["verification"] = f"{record.get('self_check')}; in Redis: " + verify(
                        client, scenario, n, prefix, record)
                    record["verified"] = True
                except Exception as exc:  # noqa: BLE001 (a failed check is a failed measurement)
                    record["error"] = str(exc)
        record["keys_removed"] = clean(client, prefix, own_server)
    finally:
        client.close()
    return record


def predict_skip(records: list[dict[str, Any]], impl: str, cell: tuple[str, int, int], limit: float) -> str | None:
    """Why (impl, cell) is skipped, or None: its time extrapolated linearly in N from the same
    implementation's largest smaller N of this run (median seconds) exceeds ``limit``."""
    scenario, n, c = cell
    if limit <= 0:
        return None
    smaller = [r for r in records if r["impl"] == impl and r["scenario"] == scenario and r["c"] == c
               and r["n"] < n and "error" not in r]
    if not smaller:
        return None
    base_n = max(r["n"] for r in smaller)
    base = statistics.median(r["seconds"] for r in smaller if r["n"] == base_n)
    predicted = base * n / base_n
    if predicted <= limit:
        return None
    return (f"predicted ~{predicted:.0f} s from N={base_n:,} ({base:.2f} s) scaled by N, "
            f"over --max-seconds {limit:.0f}")


# ---------------------------------------------------------------------------------------------
# Summaries
# ---------------------------------------------------------------------------------------------


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(records: list[dict[str, Any]], impl_order: list[str], cells: list[tuple[str, int, int]],
              skips: dict[str, str]) -> list[dict[str, Any]]:
    rows = []
    for scenario, n, c in cells:
        for impl in impl_order:
            runs = [r for r in records if (r["impl"], r["scenario"], r["n"], r["c"]) == (impl, scenario, n, c)]
            ok = [r for r in runs if "error" not in r]
            key = cell_key(impl, (scenario, n, c))
            row: dict[str, Any] = {"impl": impl, "scenario": scenario, "n": n, "c": c, "runs": len(runs),
                                   "ok": len(ok), "verified": sum(bool(r.get("verified")) for r in runs)}
            if key in skips:
                row["skipped"] = skips[key]
            if ok:
                rates = [r["jobs"] / r["seconds"] for r in ok]
                secs = [r["seconds"] for r in ok]
                row.update(
                    jobs=ok[0]["jobs"],
                    jobs_per_s_median=statistics.median(rates), jobs_per_s_min=min(rates), jobs_per_s_max=max(rates),
                    seconds_median=statistics.median(secs), seconds_min=min(secs), seconds_max=max(secs),
                    client_cpu_seconds_median=_median([r["client_cpu_seconds"] for r in ok]),
                    redis_cpu_seconds_median=_median([r["redis_cpu_seconds"] for r in ok]),
                    peak_rss_mb_max=max(r["peak_rss_mb"] for r in ok),
                    setup_seconds_median=_median([r["setup_seconds"] for r in ok if "setup_seconds" in r]),
                    warmup_seconds_median=_median([r["warmup_seconds"] for r in ok if "warmup_seconds" in r]),
                    version=ok[0].get("version", ""),
                )
                other = [r["host_busy_cpu_seconds"] - r["client_cpu_seconds"] - r["redis_cpu_seconds"]
                         for r in ok if r.get("host_busy_cpu_seconds") is not None]
                if other:
                    row["other_cpu_seconds_median"] = statistics.median(other)
                mem = [r["redis_memory_bytes"] / r["jobs"] for r in ok if "redis_memory_bytes" in r]
                if mem:
                    row["redis_bytes_per_job_median"] = statistics.median(mem)
                lat = [r["latency"] for r in ok if r.get("latency")]
                if lat:
                    row["p50_ms_median"] = statistics.median(x["p50_ms"] for x in lat)
                    row["p99_ms_median"] = statistics.median(x["p99_ms"] for x in lat)
                    row["p99_ms_max"] = max(x["p99_ms"] for x in lat)
                stalls = [r["probe"]["max_ms"] for r in ok if r.get("probe", {}).get("max_ms") is not None]
                if stalls:
                    row["stall_ms_median"] = statistics.median(stalls)
                    row["stall_ms_max"] = max(stalls)
                for field in ("add_seconds", "process_seconds"):
                    vals = [r[field] for r in ok if field in r]
                    if vals:
                        row[f"{field}_median"] = statistics.median(vals)
                werr = sum(r.get("worker_error_count", 0) for r in ok)
                if werr:
                    row["worker_error_count"] = werr
                    row["worker_errors"] = [e for r in ok for e in r.get("worker_errors", [])][:3]
                hung = sum(r.get("close_timeouts", 0) for r in ok)
                if hung:
                    row["close_timeouts"] = hung
            errors = [r["error"] for r in runs if "error" in r]
            if errors:
                row["errors"] = errors
            rows.append(row)
    base = {(r["scenario"], r["n"], r["c"]): r["jobs_per_s_median"] for r in rows
            if r["impl"] == "bullfast" and "jobs_per_s_median" in r}
    for row in rows:
        b = base.get((row["scenario"], row["n"], row["c"]))
        if b and "jobs_per_s_median" in row:
            row["vs_bullfast"] = row["jobs_per_s_median"] / b
    return rows


def cell_key(impl: str, cell: tuple[str, int, int]) -> str:
    scenario, n, c = cell
    return f"{impl} {scenario} N={n}" + (f" C={c}" if c else "")


def cell_label(scenario: str, n: int, c: int) -> str:
    return f"{scenario} N={n:,}" + (f" C={c}" if c else "")


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def _r(x: float) -> str:
    return f"{x:,.0f}"


def _ms(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x:.2f}" if x < 10 else f"{x:,.0f}"


def _s(x: float) -> str:
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def _ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}x"


def headline(rows: list[dict[str, Any]], impls: list[str], cells: list[tuple[str, int, int]]) -> tuple[list[str], list[list[str]]]:
    """One line per scenario and size: median jobs/s per implementation (x bullfast)."""
    header = ["scenario", *impls]
    body = []
    by = {(r["impl"], r["scenario"], r["n"], r["c"]): r for r in rows}
    for scenario, n, c in cells:
        line = [cell_label(scenario, n, c)]
        for impl in impls:
            r = by.get((impl, scenario, n, c))
            if r is None:
                line.append("-")
            elif "jobs_per_s_median" in r:
                cell = _r(r["jobs_per_s_median"])
                if impl != "bullfast" and "vs_bullfast" in r:
                    cell += f" ({_ratio(r['vs_bullfast'])})"
                if "p50_ms_median" in r:
                    cell += f"; p50 {_ms(r['p50_ms_median'])} ms"
                line.append(cell)
            elif "skipped" in r:
                line.append("skipped")
            elif r["runs"] == 0:
                line.append("not run")
            else:
                line.append("FAILED")
        body.append(line)
    return header, body


DETAIL_HEADER = ["implementation", "N", "jobs/s median [min-max]", "x bullfast", "seconds median",
                 "p50 / p99 ms", "client CPU s", "Redis CPU s", "Redis bytes/job", "client peak RSS MB",
                 "longest stall ms", "setup ms"]


def detail_rows(rows: list[dict[str, Any]], scenario: str) -> list[list[str]]:
    body = []
    for r in rows:
        if r["scenario"] != scenario:
            continue
        n = f"{r['n']:,}" + (f" C={r['c']}" if r["c"] else "")
        if "jobs_per_s_median" in r:
            rate = f"{_r(r['jobs_per_s_median'])} [{_r(r['jobs_per_s_min'])}-{_r(r['jobs_per_s_max'])}]"
            if r["ok"] < r["runs"]:
                rate += f" ({r['runs'] - r['ok']} of {r['runs']} failed)"
            secs = _s(r["seconds_median"])
            if "add_seconds_median" in r:
                secs += f" (add {_s(r['add_seconds_median'])})"
            lat = (f"{_ms(r['p50_ms_median'])} / {_ms(r['p99_ms_median'])}" if "p50_ms_median" in r else "-")
            mem = _r(r["redis_bytes_per_job_median"]) if "redis_bytes_per_job_median" in r else "-"
            stall = _ms(r.get("stall_ms_max"))
            setup = _ms(r["setup_seconds_median"] * 1000) if r.get("setup_seconds_median") is not None else "n/a"
            body.append([r["impl"], n, rate, _ratio(r.get("vs_bullfast")), secs, lat,
                         f"{r['client_cpu_seconds_median']:.3f}", f"{r['redis_cpu_seconds_median']:.3f}", mem,
                         f"{r['peak_rss_mb_max']:.0f}", stall, setup])
        elif "skipped" in r:
            body.append([r["impl"], n, "skipped (see notes)", *["-"] * 9])
        elif r["runs"] == 0:
            body.append([r["impl"], n, "not run", *["-"] * 9])
        else:
            body.append([r["impl"], n, f"FAILED ({r['runs']} of {r['runs']})", *["-"] * 9])
    return body


def machine_lines(meta: dict[str, Any]) -> list[str]:
    m = meta["machine"]
    lines = [
        f"Run {meta['started']} to {meta.get('finished', '?')} on {m['nproc']} CPUs ({m.get('cpu', '?')}), "
        f"{m.get('mem_total_gb', '?')} GB RAM, {m['platform']}; Python {m['python']}; Redis {m['redis']} "
        f"({m['redis_url']})" + (f"; Node {m['node']}" if "node" in m else "")
        + (f"; bullfast checkout {m['bullfast_git']}" if "bullfast_git" in m else "")
        + f"; load average (1/5/15 min) {m['loadavg_at_start']} at start, {m.get('loadavg_at_end')} at end.",
    ]
    return lines


def notes(meta: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    out = [f"{name} not run: {why}" for name, why in meta.get("skipped_implementations", {}).items()]
    out += [f"{k} skipped: {why}" for k, why in meta.get("skips", {}).items()]
    for r in rows:
        label = cell_key(r["impl"], (r["scenario"], r["n"], r["c"]))
        for e in r.get("errors", []):
            out.append(f"{label} FAILED: {e.strip().splitlines()[-1] if e.strip() else e}")
        if r.get("worker_error_count"):
            out.append(f"{label}: {r['worker_error_count']} worker 'error' event(s) over the repetitions, e.g. "
                       f"{r['worker_errors'][0] if r.get('worker_errors') else '?'}")
        if r.get("close_timeouts"):
            out.append(f"{label}: {r['close_timeouts']} worker close() call(s) did not return within 10 s "
                       "(outside the timed region)")
    if meta.get("src_changed_during_run"):
        out.append(f"WARNING: {meta['src_changed_during_run']}")
    return out


def markdown_report(meta: dict[str, Any], rows: list[dict[str, Any]], charts: list[tuple[str, str]]) -> str:
    impls = meta["implementations"]
    cells = [tuple(c) for c in meta["cells"]]
    lines = [f"Command: `{meta['command']}`", "", *machine_lines(meta), ""]
    versions = sorted({(r["impl"], r["version"]) for r in rows if r.get("version")},
                      key=lambda x: impls.index(x[0]) if x[0] in impls else 99)
    if versions:
        lines += ["Versions: " + "; ".join(f"{impl}: {v}" for impl, v in versions) + ".", ""]
    verified = sum(r["verified"] for r in rows)
    total = sum(r["runs"] for r in rows)
    lines += [f"{meta['reps']} repetition(s), implementations interleaved; {total} measurements, "
              f"{verified} verified in Redis after the run. Medians; ratios are jobs/s ÷ bullfast's jobs/s "
              "in the same run.", ""]
    header, body = headline(rows, impls, cells)  # type: ignore[arg-type]
    lines += ["#### Jobs per second (median; x bullfast)", "", *common.markdown_table(header, body), ""]
    for file, caption in charts:
        lines += [f"![{caption}](charts/{file})", ""]
    for key in dict.fromkeys(c[0] for c in cells):
        s = SCENARIOS[key]
        lines += [f"#### `{key}`: {s.title}", ""]
        lines += common.markdown_table(DETAIL_HEADER, detail_rows(rows, key))
        lines.append("")
    extra = notes(meta, rows)
    if extra:
        lines += ["Notes:", "", *[f"- {x}" for x in extra], ""]
    return "\n".join(lines).rstrip() + "\n"


def text_report(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    impls = meta["implementations"]
    cells = [tuple(c) for c in meta["cells"]]
    header, body = headline(rows, impls, cells)  # type: ignore[arg-type]
    out = ["", "jobs/s, median (x bullfast):", *common.text_table(header, body)]
    for key in dict.fromkeys(c[0] for c in cells):
        out += ["", f"{key}: {SCENARIOS[key].title}", *common.text_table(DETAIL_HEADER, detail_rows(rows, key))]
    extra = notes(meta, rows)
    if extra:
        out += ["", *extra]
    return "\n".join(out)


def write_outputs(payload: dict[str, Any], out_dir: Path, charts_enabled: bool, update_readme: bool) -> int:
    """JSON, Markdown, charts (and README); returns 0, or 1 when a measurement failed."""
    meta, rows = payload["meta"], payload["summary"]
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = meta.get("stamp") or time.strftime("%Y%m%d-%H%M%S")
    charts: list[tuple[str, str]] = []
    if charts_enabled:
        try:
            from . import charts as charts_mod

            charts = charts_mod.render(payload, out_dir / "charts")
        except ImportError as exc:
            print(f"charts skipped: {exc} (pip install -e '.[bench]' brings matplotlib)")
    markdown = markdown_report(meta, rows, charts)
    (out_dir / f"bench-{stamp}.json").write_text(json.dumps(payload, indent=1) + "\n")
    (out_dir / f"bench-{stamp}.md").write_text(markdown)
    shutil.copyfile(out_dir / f"bench-{stamp}.json", out_dir / "bench-latest.json")
    shutil.copyfile(out_dir / f"bench-{stamp}.md", out_dir / "bench-latest.md")
    print(text_report(meta, rows))
    print(f"\nresults: {out_dir / f'bench-{stamp}.json'} and .md (also bench-latest.*)"
          + (f"; charts in {out_dir / 'charts'}" if charts else ""))
    failed = any(r.get("errors") for r in rows)
    if update_readme:
        if failed:
            print("benchmarks/README.md NOT updated: some measurements failed")
        elif not charts and charts_enabled:
            print("benchmarks/README.md NOT updated: no charts (matplotlib missing)")
        else:
            README_CHARTS.mkdir(exist_ok=True)
            for file, _ in charts:
                shutil.copyfile(out_dir / "charts" / file, README_CHARTS / file)
            if common.update_readme(markdown, README_START, README_END):
                print(f"benchmarks/README.md updated, charts copied to {README_CHARTS}")
            else:
                print(f"benchmarks/README.md not updated: no {README_START} / {README_END} markers")
    return 1 if failed else 0


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def _command_line(prog: str | None, argv: list[str]) -> str:
    if prog:
        return " ".join([prog, *argv])
    return " ".join([common.shown_path(sys.executable), "-m", "benchmarks", *argv])


def run(args: argparse.Namespace, argv: list[str], prog: str | None) -> int:
    cells = plan_cells(args)
    names = check_impls(args.implementations)
    out_dir = (args.out or DEFAULT_OUT).resolve()
    impls, skipped = setup_impls(names, not args.no_install)
    if not impls:
        print("bullfast bench: no implementation can run here", file=sys.stderr)
        return 1

    server = None
    url = args.redis_url
    if not url:
        try:
            from bullfast.embedded import RedisServer
        except ImportError:
            sys.path.insert(0, str(REPO / "src"))
            from bullfast.embedded import RedisServer
        server = RedisServer().start()
        url = server.url
    records: list[dict[str, Any]] = []
    skips: dict[str, str] = {}
    interrupted = False
    try:
        meta: dict[str, Any] = {
            "command": _command_line(prog, argv),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "stamp": time.strftime("%Y%m%d-%H%M%S"),
            "reps": args.reps,
            "quick": args.quick,
            "cells": [list(c) for c in cells],
            "implementations": [i.name for i in impls],
            "skipped_implementations": skipped,
            "probe_interval_ms": args.probe_interval_ms,
            "machine": common.machine_info(url, server is not None, impls),
        }
        if server is None:
            meta["machine"]["redis_url"] = "REDIS_URL / --redis-url (only the run's own key prefixes are touched)"
        print(f"bullfast bench: {len(impls)} implementation(s) ({', '.join(i.name for i in impls)}), "
              f"{len(cells)} scenario/size cells, {args.reps} repetition(s); Redis {meta['machine']['redis']} "
              f"({'private redis-server' if server else url})", flush=True)
        total = args.reps * len(cells) * len(impls)
        done = 0
        width = max(len(i.name) for i in impls)
        for rep in range(args.reps):
            order = impls[rep % len(impls):] + impls[:rep % len(impls)]  # rotate: no fixed position
            for cell in cells:
                for impl in order:
                    done += 1
                    key = cell_key(impl.name, cell)
                    head = (f"[{done:>{len(str(total))}}/{total}] rep {rep + 1}/{args.reps}  "
                            f"{cell_label(*cell):<24} {impl.name:<{width}}  ")
                    if key not in skips and rep == 0:
                        why = predict_skip(records, impl.name, cell, args.max_seconds)
                        if why:
                            skips[key] = why
                    if key in skips:
                        print(f"{head}skipped: {skips[key]}", flush=True)
                        continue
                    print(head, end="", flush=True)
                    if args.idle_wait > 0:
                        waited, busy = common.wait_for_idle(args.idle_threshold, args.idle_wait, sample=0.5)
                    else:
                        waited, busy = 0.0, None
                    record = measure(impl, cell, rep, url, server is not None, args)
                    record.update(idle_wait_seconds=round(waited, 2), host_busy_cpus_before=busy)
                    records.append(record)
                    if "error" in record:
                        print(f"FAILED: {record['error'].strip().splitlines()[-1] if record['error'].strip() else ''}",
                              flush=True)
                        print(f"!!! {key}:\n{record['error']}", file=sys.stderr, flush=True)
                        continue
                    parts = [f"{_s(record['seconds'])} s", f"{_r(record['jobs'] / record['seconds'])} jobs/s"]
                    if record.get("latency"):
                        parts.append(f"p50 {_ms(record['latency']['p50_ms'])} ms p99 {_ms(record['latency']['p99_ms'])} ms")
                    if record.get("probe", {}).get("max_ms") is not None:
                        parts.append(f"stall {_ms(record['probe']['max_ms'])} ms")
                    parts.append(f"RSS {record['peak_rss_mb']:.0f} MB")
                    if waited > 3:
                        parts.append(f"(waited {waited:.0f} s for an idle host)")
                    print(", ".join(parts) + "  verified", flush=True)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: reporting what was measured", flush=True)
    finally:
        if server is not None:
            server.cleanup()
    meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    meta["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    meta["skips"] = skips
    if interrupted:
        meta["interrupted"] = True
    if common.src_fingerprint() != meta["machine"].get("bullfast_src"):
        meta["src_changed_during_run"] = (f"bullfast's source changed during the run: now {common.src_state()}; "
                                          "measurements may mix versions")
    rows = summarize(records, meta["implementations"], cells, skips)
    payload = {"meta": meta, "summary": rows, "measurements": records}
    status = write_outputs(payload, out_dir, not args.no_charts, args.update_readme and not interrupted)
    return 130 if interrupted else status


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv, prog)
    if args.report_only:
        payload = json.loads(args.report_only.read_text())
        return write_outputs(payload, (args.out or DEFAULT_OUT).resolve(), not args.no_charts, args.update_readme)
    return run(args, argv, prog)
