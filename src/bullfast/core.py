"""The core in use: the compiled ``_core`` or, with ``BULLFAST_PURE_PYTHON=1`` or when the
extension is missing, its pure-Python twin ``_core_py``. ``IS_COMPILED`` tells which."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING or os.environ.get("BULLFAST_PURE_PYTHON", "") not in ("", "0"):
    from ._core_py import *  # noqa: F403
    from ._core_py import IS_COMPILED
else:
    try:
        from ._core import *  # type: ignore[import-not-found]  # noqa: F403
        from ._core import IS_COMPILED  # type: ignore[import-not-found]
    except ImportError:
        from ._core_py import *  # noqa: F403
        from ._core_py import IS_COMPILED

__all__ = ["IS_COMPILED"]
