"""PNG charts of a ``bullfast bench`` run (matplotlib: ``pip install -e '.[bench]'``).

``render(payload, directory)`` writes the charts it has data for and returns
``[(file name, caption)]``; the report embeds them as ``charts/<file name>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

COLORS = {"bullfast": "#d62728", "bullfast-pure": "#ff9896", "bullmq-py": "#1f77b4", "bullmq-node": "#2ca02c"}
MARKERS = {"bullfast": "o", "bullfast-pure": "s", "bullmq-py": "^", "bullmq-node": "D"}


def _thousands(x: float, _pos: Any = None) -> str:
    if x >= 1000:
        return f"{x / 1000:,.0f}k" if x % 1000 == 0 or x >= 10_000 else f"{x / 1000:,.1f}k"
    return f"{x:,.0f}" if x >= 1 else f"{x:g}"


def _rows(payload: dict[str, Any], scenario: str) -> list[dict[str, Any]]:
    return [r for r in payload["summary"] if r["scenario"] == scenario and "jobs_per_s_median" in r]


def _stamp(fig: Any, payload: dict[str, Any]) -> None:
    meta = payload["meta"]
    m = meta["machine"]
    fig.text(0.01, 0.005, f"{meta['started']}, {m['nproc']} CPUs, Redis {m['redis'].split(' ')[0]}, "
             f"{meta['reps']} rep(s), median with min-max", fontsize=7, color="#666666")


def fanout_chart(payload: dict[str, Any], path: Path) -> bool:
    rows = _rows(payload, "fanout")
    sizes = sorted({r["n"] for r in rows})
    if not rows or len(sizes) < 1:
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.4))
    for impl in payload["meta"]["implementations"]:
        mine = sorted((r for r in rows if r["impl"] == impl), key=lambda r: r["n"])
        if not mine:
            continue
        xs = [r["n"] for r in mine]
        ys = [r["jobs_per_s_median"] for r in mine]
        err = [[y - r["jobs_per_s_min"] for y, r in zip(ys, mine)], [r["jobs_per_s_max"] - y for y, r in zip(ys, mine)]]
        ax1.errorbar(xs, ys, yerr=err, label=impl, color=COLORS.get(impl), marker=MARKERS.get(impl), capsize=3)
        stalls = [(r["n"], r["stall_ms_max"]) for r in mine if "stall_ms_max" in r]
        if stalls:
            ax2.plot([s[0] for s in stalls], [s[1] for s in stalls], label=impl, color=COLORS.get(impl),
                     marker=MARKERS.get(impl))
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(sizes)
        ax.xaxis.set_major_formatter(FuncFormatter(_thousands))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda *_: ""))
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(_thousands))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("children N (1 parent + N children, one FlowProducer.add)")
        ax.grid(True, which="both", alpha=0.3)
    ax1.set_ylabel("jobs/s (higher is better)")
    ax1.set_title("Flow fan-out add: throughput")
    ax2.set_ylabel("longest PING wait of another client, ms")
    ax2.set_title("Redis stall seen by a probe during the add")
    ax1.legend()
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    _stamp(fig, payload)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def mapreduce_chart(payload: dict[str, Any], path: Path) -> bool:
    rows = _rows(payload, "mapreduce")
    if not rows:
        return False
    groups = sorted({(r["n"], r["c"]) for r in rows})
    impls = [i for i in payload["meta"]["implementations"] if any(r["impl"] == i for r in rows)]
    fig, ax = plt.subplots(figsize=(max(6.0, 2.6 * len(groups) + 1.5), 4.4))
    width = 0.8 / max(1, len(impls))
    for j, impl in enumerate(impls):
        for g, (n, c) in enumerate(groups):
            r = next((r for r in rows if r["impl"] == impl and (r["n"], r["c"]) == (n, c)), None)
            if r is None:
                continue
            x = g + (j - (len(impls) - 1) / 2) * width
            y = r["seconds_median"]
            add = r.get("add_seconds_median", 0.0)
            ax.bar(x, add, width * 0.95, color=COLORS.get(impl), alpha=0.45, edgecolor=COLORS.get(impl))
            ax.bar(x, y - add, width * 0.95, bottom=add, color=COLORS.get(impl),
                   label=impl if g == 0 else None)
            ax.errorbar(x, y, yerr=[[y - r["seconds_min"]], [r["seconds_max"] - y]], color="black", capsize=2, lw=0.8)
            ax.annotate(f"{y:.2f} s", (x, r["seconds_max"]), textcoords="offset points", xytext=(0, 3),
                        ha="center", fontsize=7)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"N = {n:,} children\nmap concurrency C = {c}" for n, c in groups])
    ax.set_ylabel("seconds (lower is better)")
    ax.set_title("Map-reduce end to end: the flow's add (light) + processing to the parent's completion",
                 fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    _stamp(fig, payload)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def overview_chart(payload: dict[str, Any], path: Path) -> bool:
    """Every scenario cell: jobs/s per implementation relative to bullfast (log scale)."""
    rows = [r for r in payload["summary"] if "vs_bullfast" in r]
    if not rows:
        return False
    cells = [tuple(c) for c in payload["meta"]["cells"]]
    cells = [c for c in cells if any((r["scenario"], r["n"], r["c"]) == c for r in rows)]
    impls = [i for i in payload["meta"]["implementations"]
             if i != "bullfast" and any(r["impl"] == i for r in rows)]
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(cells) * max(1, len(impls)) / 2 + 1.6))
    height = 0.8 / max(1, len(impls))
    for j, impl in enumerate(impls):
        ys, xs = [], []
        for i, cell in enumerate(cells):
            r = next((r for r in rows if r["impl"] == impl and (r["scenario"], r["n"], r["c"]) == cell), None)
            if r is not None:
                ys.append(i + (j - (len(impls) - 1) / 2) * height)
                xs.append(r["vs_bullfast"])
        ax.barh(ys, xs, height * 0.95, color=COLORS.get(impl), label=impl, left=0)
    ax.set_xscale("log")
    ax.axvline(1.0, color=COLORS["bullfast"], lw=1.5, label="bullfast (1x)")
    ax.set_yticks(range(len(cells)))
    ax.set_yticklabels([f"{s} N={n:,}" + (f" C={c}" if c else "") for s, n, c in cells], fontsize=8)
    ax.invert_yaxis()
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _p: f"{x:g}x"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("jobs/s relative to bullfast in the same run (log scale; < 1 is slower than bullfast)")
    ax.set_title("All scenarios, median jobs/s ÷ bullfast's")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    _stamp(fig, payload)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def latency_chart(payload: dict[str, Any], path: Path) -> bool:
    rows = [r for r in payload["summary"] if "p50_ms_median" in r]
    if not rows:
        return False
    groups = sorted({(r["scenario"], r["n"]) for r in rows}, key=lambda g: g[0])
    impls = [i for i in payload["meta"]["implementations"] if any(r["impl"] == i for r in rows)]
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4), squeeze=False)
    titles = {"add": "Queue.add call latency", "start": "Job start latency (add to processor start)"}
    for ax, (scenario, n) in zip(axes[0], groups):
        for j, impl in enumerate(impls):
            r = next((r for r in rows if r["impl"] == impl and (r["scenario"], r["n"]) == (scenario, n)), None)
            if r is None:
                continue
            ax.bar(j - 0.2, r["p50_ms_median"], 0.4, color=COLORS.get(impl))
            ax.bar(j + 0.2, r["p99_ms_median"], 0.4, color=COLORS.get(impl), alpha=0.5, hatch="//")
            ax.annotate(f"{r['p50_ms_median']:.2f}", (j - 0.2, r["p50_ms_median"]), textcoords="offset points",
                        xytext=(0, 2), ha="center", fontsize=7)
            ax.annotate(f"{r['p99_ms_median']:.2f}", (j + 0.2, r["p99_ms_median"]), textcoords="offset points",
                        xytext=(0, 2), ha="center", fontsize=7)
        ax.set_xticks(range(len(impls)))
        ax.set_xticklabels(impls, fontsize=8)
        ax.set_ylabel("ms (lower is better); solid p50, hatched p99")
        ax.set_title(f"{titles.get(scenario, scenario)}, N = {n:,}", fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    _stamp(fig, payload)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


CHARTS = (
    ("fanout_throughput.png", "Flow fan-out add: jobs/s and the Redis stall vs fan-out size", fanout_chart),
    ("mapreduce_time.png", "Map-reduce end to end: seconds per implementation", mapreduce_chart),
    ("latency.png", "Single add and job start latency, p50 and p99", latency_chart),
    ("overview.png", "Every scenario: jobs/s relative to bullfast", overview_chart),
)


def render(payload: dict[str, Any], directory: Path) -> list[tuple[str, str]]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for file, caption, fn in CHARTS:
        if fn(payload, directory / file):
            written.append((file, caption))
    return written
