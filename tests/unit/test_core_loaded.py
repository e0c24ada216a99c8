"""The compiled core really loaded (kept apart from the parity tests, which are skipped
without it: this one must fail instead, or CI would silently test the twin twice)."""

from __future__ import annotations

import os

from bullfast import core


def _set(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def test_compiled_core_loaded_when_expected() -> None:
    if _set("BULLFAST_PURE_PYTHON"):
        assert not core.IS_COMPILED, "BULLFAST_PURE_PYTHON=1 but the compiled core is in use"
    elif not _set("BULLFAST_NO_EXTENSION"):
        assert core.IS_COMPILED, "the compiled core (bullfast._core) did not load"
