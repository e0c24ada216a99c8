"""JSON as JavaScript writes and reads it, where orjson differs: lone UTF-16 surrogates.

``JSON.stringify`` writes a string cut inside an emoji (``"ok 😀".slice(0, 4)``) with an
escaped lone surrogate, ``"ok \\ud83d"``, and ``JSON.parse`` reads it back. orjson refuses
both ways (it holds text to valid UTF-8), so data a Node producer wrote would fail its job
unread, and the same text could not be returned. orjson stays the codec; these are the
fallbacks the cores (and the other readers of stored JSON) use once it has refused.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")  # json accepts NaN / Infinity; JSON.parse does not


def loads_refused(text: bytes | str, refused: Exception) -> Any:
    """``text``, which orjson refused with ``refused``, read as ``JSON.parse`` would read it;
    ``refused`` is raised again for what is not JSON to JavaScript either."""
    try:
        return json.loads(text, parse_constant=_not_json)
    except ValueError:  # (a json.JSONDecodeError, or bytes that are not UTF-8)
        raise refused from None


def loads(text: bytes | str) -> Any:
    """Stored JSON text as a value (orjson, then :func:`loads_refused`)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return loads_refused(text, exc)


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= ch <= "\udfff" for ch in value)
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_has_lone_surrogate(v) for v in value)
    return False


def dumps_refused(value: Any, refused: TypeError) -> bytes:
    """``value``, which orjson refused with ``refused``, as ``JSON.stringify`` writes text with
    lone surrogates (escaped, so the bytes are UTF-8); ``refused`` again when that is not why."""
    if not _has_lone_surrogate(value):
        raise refused
    try:
        return json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError):
        raise refused from None
