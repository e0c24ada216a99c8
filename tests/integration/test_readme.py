"""The README's quick start runs as written (against the test server)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_quick_start_runs(redis_url: str, prefix: str, tmp_path: Path) -> None:
    code = re.search(r"```python\n(import asyncio.*?)```", README.read_text(), re.S)
    assert code is not None, "the README lost its quick start"
    source = code.group(1).replace('URL = "redis://localhost:6379"', f"URL = {redis_url!r}")
    # keep the test's keys under its own prefix
    source = source.replace("connection=URL", f"connection=URL, prefix={prefix!r}")
    script = tmp_path / "quick_start.py"
    script.write_text(source)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "49500"


def test_readme_opens_with_the_two_commands() -> None:
    text = README.read_text()
    main = text.index("<!-- main-command -->")
    tests = text.index("<!-- test-command -->")
    assert main < tests < text.index("## Quick start")
    assert "bullfast demo" in text[main:tests]
    assert "pytest" in text[tests : tests + 400]
