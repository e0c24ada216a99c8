"""The README's programs run as written (against the test server), print what their comments
say, and its performance figures are the ones in benchmarks/README.md."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PROGRAMS = re.findall(r"```python\n(import asyncio\n.*?)```", README.read_text(), re.S)
# print(...)  # what it prints
EXPECTED = re.compile(r"print\(.*\)\s*#\s*(.+)$", re.M)


def test_the_readme_has_its_programs() -> None:
    assert len(PROGRAMS) >= 6, "the README lost its quick start or pattern programs"
    for source in PROGRAMS:
        assert EXPECTED.search(source), f"a program without its expected output:\n{source}"


@pytest.mark.parametrize("index", range(len(PROGRAMS)))
def test_program_runs_as_written(index: int, redis_url: str, prefix: str, tmp_path: Path) -> None:
    source = PROGRAMS[index]
    assert "URL = redis_url()" in source  # $REDIS_URL, else a private server: as the demo
    # keep the test's keys under its own prefix
    source = source.replace("connection=URL", f"connection=URL, prefix={prefix!r}")
    script = tmp_path / f"readme_{index}.py"
    script.write_text(source)
    env = {**os.environ, "REDIS_URL": redis_url}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=90, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [m.strip() for m in EXPECTED.findall(PROGRAMS[index])]


def test_readme_opens_with_the_two_commands() -> None:
    text = README.read_text()
    main = text.index("<!-- main-command -->")
    tests = text.index("<!-- test-command -->")
    assert main < tests < text.index("## Quick start")
    assert "bullfast demo" in text[main:tests]
    assert "pytest" in text[tests : tests + 400]


def test_performance_figures_come_from_the_benchmarks_readme() -> None:
    text = README.read_text()
    section = text[text.index("## Performance") : text.index("## Layout")]
    bench = (ROOT / "benchmarks" / "README.md").read_text()
    figures = re.findall(r"\b\d{1,3}(?:,\d{3})+\b|\b\d+\.\d+x?\b|\b\d+ MB\b", section)
    assert len(figures) >= 10, section
    plain_bench = bench.replace(" MB", "")
    for figure in figures:
        number = figure.removesuffix(" MB")
        # peak RSS is written without a thousands separator in the benchmark tables
        assert number in plain_bench or number.replace(",", "") in plain_bench, (
            f"{figure} is not in benchmarks/README.md"
        )
