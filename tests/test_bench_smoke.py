"""Smoke test of the benchmark harness (``benchmarks/``): ``python -m benchmarks --quick`` and
``bullfast bench --quick`` (the console script) against the test Redis, with bullfast and
bullfast-pure only (no npm, no bullmq venv), tiny sizes, no charts, outputs in a temp dir.
Every measurement must have verified its result in Redis.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

REPO = Path(__file__).resolve().parent.parent
SCRIPT = shutil.which("bullfast", path=str(Path(sys.executable).parent))

pytestmark = pytest.mark.skipif(not (REPO / "benchmarks" / "harness.py").is_file(), reason="no benchmarks/ here")


def bench_env(redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("BULLFAST_PURE_PYTHON",)}
    env["REDIS_URL"] = redis_url
    return env


def run(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = 50) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def load_results(out: Path) -> tuple[dict[str, Any], str]:
    jsons = sorted(p for p in out.glob("bench-*.json") if p.name != "bench-latest.json")
    mds = sorted(p for p in out.glob("bench-*.md") if p.name != "bench-latest.md")
    assert len(jsons) == 1 and len(mds) == 1, sorted(p.name for p in out.iterdir())
    assert (out / "bench-latest.json").is_file() and (out / "bench-latest.md").is_file()
    return json.loads(jsons[0].read_text()), mds[0].read_text()


def keys_under(url: str, pattern: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return sum(1 for _ in client.scan_iter(match=pattern, count=1000))
    finally:
        client.close()


def test_python_m_benchmarks_quick(redis_url: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    before = keys_under(redis_url, "bfbench-*")
    proc = run([sys.executable, "-m", "benchmarks", "--quick", "--implementations", "bullfast,bullfast-pure",
                "--no-charts", "--out", str(out)], bench_env(redis_url), REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    payload, markdown = load_results(out)

    meta, rows, records = payload["meta"], payload["summary"], payload["measurements"]
    assert meta["implementations"] == ["bullfast", "bullfast-pure"]
    assert meta["quick"] is True and meta["reps"] == 1
    scenarios = {c[0] for c in meta["cells"]}
    assert scenarios == {"fanout", "flows", "bulk", "add", "burst", "start", "mapreduce", "chain"}
    assert {(c[0], c[2]) for c in meta["cells"] if c[0] == "mapreduce"} == {("mapreduce", 1), ("mapreduce", 50)}
    # every measurement ran and verified its result (in the runner and in Redis afterwards)
    assert len(records) == len(meta["cells"]) * 2
    for r in records:
        assert "error" not in r, r
        assert r["verified"] is True, r
        assert "in Redis:" in r["verification"]
        assert r["seconds"] > 0 and r["jobs"] > 0 and r["peak_rss_mb"] > 0
        assert r["client_cpu_seconds"] >= 0 and r["redis_cpu_seconds"] >= 0
        assert "setup_seconds" in r and "version" in r
    assert {r["impl"]: r["version"] for r in records}["bullfast-pure"].endswith("(pure-Python core)")
    by = {(r["impl"], r["scenario"]): r for r in records}
    assert by[("bullfast", "add")]["latency"]["p99_ms"] >= by[("bullfast", "add")]["latency"]["p50_ms"] > 0
    assert by[("bullfast", "start")]["latency"]["count"] == 30
    assert by[("bullfast", "fanout")]["redis_memory_bytes"] > 0
    assert any("max_ms" in r.get("probe", {}) for r in records)  # the stall probe ran
    # ratios against bullfast, in the same run
    assert all(r["vs_bullfast"] == pytest.approx(1.0) for r in rows if r["impl"] == "bullfast")
    assert all("vs_bullfast" in r for r in rows)
    # the Markdown report: machine, versions, the headline table and one table per scenario
    assert "Versions: bullfast: bullfast" in markdown and "Redis " in markdown
    assert "| scenario | bullfast | bullfast-pure |" in markdown
    for scenario in scenarios:
        assert f"#### `{scenario}`" in markdown
    assert "FAILED" not in markdown
    # the run removed every key it wrote (REDIS_URL: only its own prefixes), and the terminal
    # table was printed
    assert keys_under(redis_url, "bfbench-*") == before
    assert "jobs/s, median (x bullfast)" in proc.stdout
    assert "[1/" in proc.stdout.replace(" ", "")


@pytest.mark.skipif(SCRIPT is None, reason=f"no bullfast console script next to {sys.executable}")
def test_bullfast_bench_console_script(redis_url: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert SCRIPT is not None
    proc = run([SCRIPT, "bench", "--quick", "--implementations", "bullfast,bullfast-pure", "--scenarios",
                "fanout,mapreduce", "--sizes", "fanout=50", "--concurrency", "10", "--no-charts", "--out", str(out)],
               bench_env(redis_url), tmp_path)  # not the checkout: found through the editable install
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    payload, markdown = load_results(out)
    assert payload["meta"]["cells"] == [["fanout", 50, 0], ["mapreduce", 200, 10]]
    assert payload["meta"]["command"].startswith("bullfast bench --quick")
    assert all(r["verified"] for r in payload["measurements"]) and len(payload["measurements"]) == 4
    assert "fanout N=50" in markdown


def test_bench_outside_a_checkout_fails_in_one_line(tmp_path: Path) -> None:
    code = (
        "import sys, bullfast.cli as c; c.__file__ = '/nonexistent/src/bullfast/cli.py'; "
        "sys.exit(c.main(['bench', '--quick']))"
    )
    proc = run([sys.executable, "-c", code], dict(os.environ), tmp_path, timeout=30)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bullfast bench: no benchmarks/ harness found"), proc.stderr


def test_fan_out_benchmark_defaults_are_bullfasts_own() -> None:
    """``benchmarks/fan_out.py --help`` states the defaults it really uses, which are the
    library's (only the argument parser runs: no benchmark)."""
    from bullfast.fanout import DEFAULT_FAN_OUT_CHUNK, DEFAULT_WINDOW

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import fan_out
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    args = fan_out.parse_args([])
    assert (args.chunk_size, args.window) == (DEFAULT_FAN_OUT_CHUNK, DEFAULT_WINDOW)
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "fan_out.py"), "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    help_text = " ".join(out.stdout.split())
    assert f"fan-out chunk size (default {DEFAULT_FAN_OUT_CHUNK}" in help_text
    assert f"chunks in flight (default {DEFAULT_WINDOW}" in help_text


def test_worker_client_cost_runs_and_leaves_no_keys(redis_url: str, tmp_path: Path) -> None:
    """``benchmarks/worker_client_cost.py`` (Redis answered by canned replies) processes its
    jobs and reports a CPU time a job; its one real flow is deleted afterwards."""
    proc = run([sys.executable, str(REPO / "benchmarks" / "worker_client_cost.py"), "--jobs", "300", "--reps", "1"],
               bench_env(redis_url), tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "us of client CPU a job" in proc.stdout, proc.stdout
    assert keys_under(redis_url, "wcc*") == 0
