"""Interop tests: bullfast against the real Node.js ``bullmq`` (pinned in package.json).

Every test here is marked ``interop`` (deselect with ``-m "not interop"``) and needs ``node``
and ``npm`` on PATH; without them the tests are skipped, with the reason printed in the
session header and summary. Otherwise the pinned packages are installed with ``npm ci`` when
``node_modules`` is missing or older than ``package-lock.json``; an npm failure fails the tests.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

INTEROP_DIR = Path(__file__).resolve().parent
LOCK_FILE = INTEROP_DIR / "package-lock.json"
NODE_MODULES = INTEROP_DIR / "node_modules"
NPM_TIMEOUT = 600

_skip_reason: list[str] = []


def missing_tools() -> list[str]:
    return [tool for tool in ("node", "npm") if shutil.which(tool) is None]


def _skip_message(missing: list[str]) -> str:
    return (
        f"interop tests skipped: {' and '.join(missing)} not found on PATH "
        "(install Node.js >= 20 with npm to run them against the real bullmq package)"
    )


def pytest_report_header(config: pytest.Config) -> str | None:
    missing = missing_tools()
    return _skip_message(missing) if missing else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if INTEROP_DIR in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.interop)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _skip_reason:
        terminalreporter.write_line(_skip_reason[0], yellow=True, bold=True)


def _installed_matches_lock() -> bool:
    """node_modules exists, is not older than package-lock.json, and holds the locked versions."""
    marker = NODE_MODULES / ".package-lock.json"  # written by npm on every install
    if not marker.exists() or marker.stat().st_mtime < LOCK_FILE.stat().st_mtime:
        return False
    locked = json.loads(LOCK_FILE.read_text())["packages"]
    for name in ("bullmq", "ioredis"):
        manifest = NODE_MODULES / name / "package.json"
        if not manifest.exists():
            return False
        if json.loads(manifest.read_text())["version"] != locked[f"node_modules/{name}"]["version"]:
            return False
    return True


@pytest.fixture(scope="session", autouse=True)
def node_modules(request: pytest.FixtureRequest) -> Iterator[Path]:
    """tests/interop/node_modules with the pinned bullmq, installed if needed."""
    missing = missing_tools()
    if missing:
        message = _skip_message(missing)
        if not _skip_reason:
            _skip_reason.append(message)
            reporter = request.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line(f"\n{message}", yellow=True)
        pytest.skip(message)
    # One installer at a time (parallel pytest processes share this directory).
    digest = hashlib.sha1(bytes(INTEROP_DIR)).hexdigest()[:12]
    lock_path = Path(tempfile.gettempdir()) / f"bullfast-interop-npm-{digest}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _installed_matches_lock():
            try:
                result = subprocess.run(
                    ["npm", "ci", "--no-audit", "--no-fund"],
                    cwd=INTEROP_DIR,
                    capture_output=True,
                    text=True,
                    timeout=NPM_TIMEOUT,
                )
            except subprocess.TimeoutExpired as exc:
                pytest.fail(
                    f"npm ci timed out after {NPM_TIMEOUT}s in {INTEROP_DIR}:\n{exc.stdout}\n{exc.stderr}"
                )
            if result.returncode != 0:
                pytest.fail(
                    f"npm ci failed (exit {result.returncode}) in {INTEROP_DIR}:\n"
                    f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
                )
            if not _installed_matches_lock():
                pytest.fail(f"npm ci succeeded but {NODE_MODULES} does not match package-lock.json")
    yield NODE_MODULES
