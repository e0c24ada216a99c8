"""Shared plumbing of the benchmarks in this directory (``flow_add.py``, ``map_reduce.py``).

Setting up the four implementations (this checkout of bullfast, the same with its pure-Python
core, ``bullmq==3.4.4`` from PyPI in its own virtualenv, Node ``bullmq`` 6.7.0 from
``package-lock.json``), running one measurement in a fresh process (its rusage from
``wait4``), the embedded Redis, machine information and the README's results sections.

Module level imports only the standard library: a benchmark's worker half imports this file
too, also when it runs under the ``bullmq-py`` virtualenv (``python -I``), where neither this
checkout nor its dependencies are importable. ``redis`` (redis-py) is imported inside the
functions that need it, which only run in the orchestrating process.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS_DIR = HERE / "results"
BULLMQ_VENV = HERE / ".venv-bullmq"
BULLMQ_PY_REQUIREMENT = "bullmq==3.4.4"

IMPLEMENTATIONS = ("bullfast", "bullfast-pure", "bullmq-py", "bullmq-node")


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


def run(cmd: list[str], cwd: Path | None = None, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def tail(text: str, lines: int = 8) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def shown_path(path: str) -> str:
    """``path`` relative to the current directory when it is inside it (keeps symlinks)."""
    absolute = os.path.abspath(path)
    rel = os.path.relpath(absolute)
    return rel if not rel.startswith("..") else absolute


def command_line() -> str:
    """How this benchmark was started, for the report (``.venv/bin/python benchmarks/x.py ...``)."""
    return " ".join([shown_path(sys.executable), shown_path(sys.argv[0]), *sys.argv[1:]])


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


# ---------------------------------------------------------------------------------------------
# Setting up the implementations
# ---------------------------------------------------------------------------------------------


class Impl:
    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv  # the command before the measurement's own arguments
        self.env = env or {}


def setup_bullfast(name: str, script: Path) -> Impl:
    """``script --worker bullfast`` under this interpreter; ``bullfast-pure`` forces the
    pure-Python core."""
    env = {"BULLFAST_PURE_PYTHON": "1"} if name == "bullfast-pure" else {"BULLFAST_PURE_PYTHON": ""}
    probe = run([sys.executable, "-c", "import bullfast, bullfast.core as c; print(bullfast.__version__, c.IS_COMPILED)"])
    if probe.returncode != 0:
        raise RuntimeError(f"bullfast is not importable by {sys.executable}: {tail(probe.stderr, 3)}")
    return Impl(name, [sys.executable, str(script), "--worker", "bullfast"], env)


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def setup_bullmq_py(install: bool, script: Path) -> Impl:
    """``script --worker bullmq-py`` under ``benchmarks/.venv-bullmq`` (created on demand)."""
    py = venv_python(BULLMQ_VENV)
    check = [str(py), "-c", f"import bullmq, importlib.metadata as m; assert m.version('bullmq') == "
             f"{BULLMQ_PY_REQUIREMENT.split('==')[1]!r}"]
    if not py.exists() or run(check).returncode != 0:
        if not install:
            raise RuntimeError(f"{BULLMQ_VENV} has no {BULLMQ_PY_REQUIREMENT} (and --no-install was given)")
        print(f"[setup] creating {BULLMQ_VENV} with {BULLMQ_PY_REQUIREMENT} ...", file=sys.stderr)
        if not py.exists():
            made = run([sys.executable, "-m", "venv", str(BULLMQ_VENV)])
            if made.returncode != 0:
                raise RuntimeError(f"python -m venv failed: {tail(made.stderr, 3)}")
        pip = run([str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q", BULLMQ_PY_REQUIREMENT])
        if pip.returncode != 0:
            raise RuntimeError(f"pip install {BULLMQ_PY_REQUIREMENT} failed: {tail(pip.stderr, 1)[:300]}")
        final = run(check)
        if final.returncode != 0:
            raise RuntimeError(f"{BULLMQ_PY_REQUIREMENT} installed but not importable: {tail(final.stderr, 3)}")
    # -I: isolated mode, so nothing from this checkout or PYTHONPATH leaks into that venv.
    return Impl("bullmq-py", [str(py), "-I", str(script), "--worker", "bullmq-py"])


def setup_bullmq_node(install: bool, runner: Path, node_args: tuple[str, ...] = ()) -> Impl:
    """``node [node_args] runner`` with ``benchmarks/node_modules`` (``npm ci`` on demand)."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not on PATH")
    installed = HERE / "node_modules" / "bullmq" / "package.json"
    if not installed.exists() or not (HERE / "node_modules" / "ioredis" / "package.json").exists():
        npm = shutil.which("npm")
        if not install:
            raise RuntimeError("benchmarks/node_modules is missing (and --no-install was given)")
        if npm is None:
            raise RuntimeError("benchmarks/node_modules is missing and npm is not on PATH")
        print("[setup] npm ci in benchmarks/ ...", file=sys.stderr)
        done = run([npm, "ci", "--no-audit", "--no-fund"], cwd=HERE)
        if done.returncode != 0:
            raise RuntimeError(f"npm ci failed: {tail(done.stderr, 2)[:300]}")
    return Impl("bullmq-node", [node, *node_args, str(runner)])


def setup(
    names: list[str], install: bool, script: Path, node_runner: Path, node_args: tuple[str, ...] = ()
) -> tuple[list[Impl], dict[str, str]]:
    """The implementations that can run here, and why the others cannot."""
    impls, skipped = [], {}
    for name in names:
        try:
            if name in ("bullfast", "bullfast-pure"):
                impls.append(setup_bullfast(name, script))
            elif name == "bullmq-py":
                impls.append(setup_bullmq_py(install, script))
            elif name == "bullmq-node":
                impls.append(setup_bullmq_node(install, node_runner, node_args))
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            skipped[name] = str(exc)
            print(f"[skip] {name}: {exc}", file=sys.stderr)
    return impls, skipped


def check_names(spec: str) -> list[str]:
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in IMPLEMENTATIONS]
    if unknown:
        raise SystemExit(f"unknown implementation(s): {', '.join(unknown)}; choose from {', '.join(IMPLEMENTATIONS)}")
    return names


# ---------------------------------------------------------------------------------------------
# One measurement: a fresh process, its rusage from wait4, its result as the last stdout line
# ---------------------------------------------------------------------------------------------


def run_child(cmd: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Run ``cmd`` to its end (killed after ``timeout`` s). Returns ``peak_rss_mb`` (the child's
    ``ru_maxrss``), ``child_cpu_seconds`` (its whole life), and either the fields of the JSON
    object on its last stdout line or ``error``; ``stderr`` holds its stderr's tail if any."""
    record: dict[str, Any] = {}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env={**os.environ, **env})
        deadline = time.monotonic() + timeout
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                _, status, rusage = os.wait4(proc.pid, 0)
                record["error"] = f"timed out after {timeout:.0f}s"
                break
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    record["peak_rss_mb"] = rusage.ru_maxrss / 1024  # KiB on Linux
    record["child_cpu_seconds"] = rusage.ru_utime + rusage.ru_stime
    if proc.returncode != 0 and "error" not in record:
        record["error"] = f"exit code {proc.returncode}: {tail(stderr, 12)}"
    if "error" not in record:
        try:
            record.update(json.loads(stdout.strip().splitlines()[-1]))
        except (ValueError, IndexError):
            record["error"] = f"no result line on stdout: {tail(stdout + stderr, 8)}"
    if "error" in record and stderr.strip() and tail(stderr, 12) not in record["error"]:
        record["error"] += f"\n{tail(stderr, 12)}"
    if stderr.strip() and "error" not in record:
        record["stderr"] = tail(stderr, 12)
    return record


# ---------------------------------------------------------------------------------------------
# The host's CPU (the machine may be shared: see how busy it is before and while measuring)
# ---------------------------------------------------------------------------------------------


def host_busy_seconds() -> float | None:
    """CPU seconds the host has spent busy so far (all CPUs, from the first line of /proc/stat:
    user + nice + system + irq + softirq; steal time is left out), or None off Linux. Interrupt
    time counts because it may be charged to the interrupted process too (so the host's figure
    is at least the sum of its processes'), and loopback traffic is mostly softirq."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(x) for x in fields[1:9]]
    busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]
    return busy / os.sysconf("SC_CLK_TCK")


def wait_for_idle(threshold: float, max_wait: float, sample: float = 1.0) -> tuple[float, float | None]:
    """Wait (up to ``max_wait`` s) until the host's other work uses at most ``threshold`` CPUs,
    measured over ``sample`` s while this benchmark is idle. Returns (seconds waited, CPUs busy
    in the last sample, or None when /proc/stat is unreadable)."""
    start = time.monotonic()
    while True:
        b0 = host_busy_seconds()
        time.sleep(sample)
        b1 = host_busy_seconds()
        if b0 is None or b1 is None:
            return time.monotonic() - start, None
        busy = (b1 - b0) / sample
        waited = time.monotonic() - start
        if busy <= threshold or waited >= max_wait:
            return waited, busy
        time.sleep(min(2.0, max(0.0, max_wait - waited)))


# ---------------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------------


def start_redis() -> tuple[Any, str]:
    """(server, url): ``$REDIS_URL`` (server None) or a private embedded redis-server."""
    url = os.environ.get("REDIS_URL")
    if url:
        return None, url
    try:
        from bullfast.embedded import RedisServer
    except ImportError:
        sys.path.insert(0, str(REPO / "src"))
        from bullfast.embedded import RedisServer
    server = RedisServer().start()
    return server, server.url


def redis_cpu_seconds(url: str) -> float:
    """redis-server's CPU time so far (``INFO cpu``: user + sys, all its threads)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        cpu = client.info("cpu")
    finally:
        client.close()
    return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


def delete_prefix(client: Any, prefix: str) -> int:
    """Delete every key under ``prefix:``; returns how many."""
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{prefix}:*", count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            deleted += client.delete(*batch)
            batch = []
    if batch:
        deleted += client.delete(*batch)
    return deleted


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------


def src_fingerprint() -> str | None:
    """What bullfast's source is, independent of where HEAD points: the git tree of src/ at HEAD,
    plus ``+ uncommitted changes in src/ (N files, diff sha1 X)`` when the work tree differs
    from it (X fingerprints ``git diff HEAD -- src``; untracked files count in N only). None
    outside a git checkout."""
    tree = run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD:src"])
    if tree.returncode != 0:
        return None
    state = f"src tree {tree.stdout.strip()}"
    dirty = run(["git", "-C", str(REPO), "status", "--porcelain", "--", "src"]).stdout.strip()
    if dirty:
        diff = run(["git", "-C", str(REPO), "diff", "HEAD", "--", "src"]).stdout
        sha = hashlib.sha1(diff.encode()).hexdigest()[:12]
        state += f" + uncommitted changes in src/ ({len(dirty.splitlines())} files, diff sha1 {sha})"
    return state


def src_state() -> str | None:
    """Which bullfast is measured, for the report: ``<commit> (<src_fingerprint()>)``."""
    commit = run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    fingerprint = src_fingerprint()
    if commit.returncode != 0 or fingerprint is None:
        return None
    return f"{commit.stdout.strip()} ({fingerprint})"


def machine_info(url: str, embedded: bool, impls: list[Impl]) -> dict[str, Any]:
    import redis

    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "redis_url": "embedded redis-server (bullfast.embedded.RedisServer)" if embedded else url,
    }
    try:
        with open("/proc/cpuinfo") as f:
            models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        info["cpu"] = models[0] if models else platform.processor()
    except OSError:
        info["cpu"] = platform.processor()
    try:
        with open("/proc/meminfo") as f:
            info["mem_total_gb"] = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    state = src_state()
    if state is not None:
        info["bullfast_git"] = state
        info["bullfast_src"] = src_fingerprint()
    client = redis.Redis.from_url(url)
    try:
        server = client.info("server")
        info["redis"] = f"{server.get('redis_version')} ({server.get('redis_mode')}, {server.get('os')})"
    finally:
        client.close()
    for impl in impls:
        if impl.name == "bullmq-node":
            info["node"] = run([impl.argv[0], "--version"]).stdout.strip()
        if impl.name == "bullmq-py":
            info["python_bullmq_venv"] = run([impl.argv[0], "--version"]).stdout.strip()
    return info


def machine_sentence(meta: dict[str, Any]) -> str:
    """One line: when, where, what ran (for the markdown report)."""
    m = meta["machine"]
    return (
        f"Run {meta['started']} on {m['nproc']} CPUs ({m.get('cpu', '?')}), {m.get('mem_total_gb', '?')} GB RAM, "
        f"{m['platform']}; Python {m['python']}; Redis {m['redis']} ({m['redis_url']})"
        + (f"; Node {m['node']}" if "node" in m else "")
        + f"; {meta['reps']} repetitions, interleaved"
        + f"; load average (1/5/15 min) {m['loadavg_at_start']} at start, {m.get('loadavg_at_end')} at end"
        + (f"; bullfast checkout {m['bullfast_git']}" if "bullfast_git" in m else "")
        + "."
    )


def markdown_table(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(c) + " |" for c in body]


def text_table(header: list[str], body: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    return [fmt(header), fmt(["-" * w for w in widths]), *[fmt(c) for c in body]]


def write_results(name: str, payload: dict[str, Any], markdown: str) -> Path:
    """``results/<name>-<stamp>.json`` and ``.md``, and ``results/<name>-latest.*`` (plus
    ``latest.*`` for flow_add, as before). Returns the stamped JSON path."""
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    latest = "latest" if name == "flow_add" else f"{name}-latest"
    for base in (f"{name}-{stamp}", latest):
        (RESULTS_DIR / f"{base}.json").write_text(json.dumps(payload, indent=2) + "\n")
        (RESULTS_DIR / f"{base}.md").write_text(markdown)
    return RESULTS_DIR / f"{name}-{stamp}.json"


def update_readme(markdown: str, start: str, end: str) -> bool:
    """Replace what is between the ``start`` and ``end`` markers of benchmarks/README.md."""
    readme = HERE / "README.md"
    if not readme.exists():
        return False
    text = readme.read_text()
    if start not in text or end not in text:
        return False
    head, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{markdown}{end}{after}")
    return True
