"""``pip install .`` (not editable) builds the compiled core and ships the Lua scripts.

The suite itself runs on the editable install of the README's set-up; this test builds a wheel
of the checkout the way ``pip install .`` does (build isolation: setuptools and Cython fetched
for the build), installs it into a directory of its own and imports it from there: the
compiled core is the one that loads, and every script the library calls is in the package.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(os.environ.get("BULLFAST_PURE_PYTHON") == "1", reason="the pure-core pass does not rebuild the package")
@pytest.mark.timeout(600)
def test_a_wheel_of_the_checkout_has_the_compiled_core_and_the_scripts(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
        capture_output=True, text=True, timeout=540,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("bullfast-*.whl")
    assert "-none-any" not in wheel.name, f"{wheel.name}: a pure wheel, the core was not compiled"
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("bullfast/_core.") and n.endswith((".so", ".pyd")) for n in names), names
    lua = {n for n in names if n.startswith("bullfast/lua/")}
    source_lua = {f"bullfast/{p.relative_to(ROOT / 'src' / 'bullfast').as_posix()}"
                  for p in (ROOT / "src" / "bullfast" / "lua").rglob("*.lua")}
    assert lua == source_lua
    assert "bullfast/py.typed" in names

    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        capture_output=True, text=True, timeout=120,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    probe = (
        "import bullfast, bullfast.core as core, bullfast._scripts as s\n"
        "print(bullfast.__file__)\n"
        "print(core.IS_COMPILED)\n"
        "print(len(s.scripts()))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("BULLFAST_PURE_PYTHON", "PYTHONPATH")}
    env["PYTHONPATH"] = str(site)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    path, compiled, n_scripts = out.stdout.split()
    assert Path(path).is_relative_to(site), path
    assert compiled == "True"
    assert int(n_scripts) == len(list((ROOT / "src" / "bullfast" / "lua").glob("*.lua")))
