"""Our Lua scripts: read once per process from the package, run with EVALSHA.

Each file ``lua/<command>-<numKeys>.lua`` may pull shared helpers in with a line
``--@include <name>`` (``lua/include/<name>.lua``, each included once). Only the helpers the
script uses, directly or through other helpers, are kept: Redis runs a script's top level on
every call, and each helper defined there is a closure made anew each time. The SHA1 of every
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


# A top-level definition of an include file: ``local function f(``, ``local x`` (``= ...``) or
# ``f = function(`` (the assignment of a forward declaration), each at the start of a line.
_DEFINITION = re.compile(r"^(?:local function (\w+)|local (\w+)\b|(\w+) = function\b)", re.M)
_NAME = re.compile(r"[A-Za-z_]\w*")


def _definitions(text: str) -> list[tuple[str, str]]:
    """An include file as (name, text) parts: its header (name ''), then each definition up
    to the next one."""
    starts = [(m.start(), m.group(1) or m.group(2) or m.group(3)) for m in _DEFINITION.finditer(text)]
    bounds = [0] + [pos for pos, _ in starts] + [len(text)]
    names = [""] + [name for _, name in starts]
    return [(names[i], text[bounds[i] : bounds[i + 1]]) for i in range(len(names))]


def _expand(text: str, included: set[str]) -> str:
    """The script with its includes in place, less the helpers nothing in it reaches."""
    parts: list[tuple[str, str]] = []

    def include(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in included:
            included.add(name)
            body = (_lua_dir() / "include" / f"{name}.lua").read_text(encoding="utf-8")
            parts.extend(_definitions(_INCLUDE.sub(include, body)))
        return ""

    own = _INCLUDE.sub(include, text)
    defined = {name for name, _ in parts if name}
    uses: dict[str, set[str]] = {}
    for name, body in parts:
        uses.setdefault(name, set()).update(set(_NAME.findall(body)) & defined)
    needed = set(_NAME.findall(own)) & defined
    pending = list(needed)
    while pending:
        for used in uses.get(pending.pop(), ()):
            if used not in needed:
                needed.add(used)
                pending.append(used)
    return "".join(body for name, body in parts if not name or name in needed) + own


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
