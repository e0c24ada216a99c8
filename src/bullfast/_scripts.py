"""Our Lua scripts: read once per process from the package, run with EVALSHA.

Each file ``lua/<command>-<numKeys>.lua`` may pull shared helpers in with a line
``--@include <name>`` (``lua/include/<name>.lua``, each included once). The SHA1 of every
script is computed once; a NOSCRIPT reply loads the script and retries. Callers that put
scripts inside MULTI/EXEC call :func:`ensure_loaded` first: a NOSCRIPT inside a transaction is
only reported at EXEC, after the other commands ran.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

_INCLUDE = re.compile(r"^--@include (\w+)\s*$", re.M)


@dataclass(frozen=True)
class Script:
    name: str
    num_keys: int
    source: bytes
    sha: bytes  # hex digest, as EVALSHA takes it


def _lua_dir() -> Any:
    return resources.files("bullfast") / "lua"


def _expand(text: str, included: set[str]) -> str:
    def include(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in included:
            return ""
        included.add(name)
        body = (_lua_dir() / "include" / f"{name}.lua").read_text(encoding="utf-8")
        return _expand(body, included)

    return _INCLUDE.sub(include, text)


@cache
def scripts() -> dict[str, Script]:
    """Every script of the package by command name, expanded and hashed (once per process)."""
    found: dict[str, Script] = {}
    for entry in _lua_dir().iterdir():
        name = entry.name
        if not name.endswith(".lua") or "-" not in name:
            continue
        command, _, keys = name[:-4].rpartition("-")
        source = _expand(entry.read_text(encoding="utf-8"), set()).encode()
        sha = hashlib.sha1(source).hexdigest().encode()
        found[command] = Script(command, int(keys), source, sha)
    return found


def get(command: str) -> Script:
    return scripts()[command]
