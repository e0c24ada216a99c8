"""JSON and text as JavaScript writes and reads them, where orjson and Python differ.

A JavaScript string may hold lone UTF-16 surrogates (``"ok 😀".slice(0, 4)``). ``JSON.stringify``
writes one escaped, ``"ok \\ud83d"``, and ``JSON.parse`` reads it back; ioredis writes such a
string to Redis as UTF-8 with U+FFFD in its place; and Node reads invalid UTF-8 with U+FFFD.
orjson refuses all of these (it holds text to valid UTF-8), so data a Node producer wrote would
fail its job unread, and the same text could not be returned or stored. orjson stays the codec;
these are the fallbacks the cores (and the other readers of stored JSON) use once it refused.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

from .options import is_text


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")  # json accepts NaN / Infinity; JSON.parse does not


def loads_refused(text: bytes | str, refused: Exception) -> Any:
    """``text``, which orjson refused with ``refused``, read as Node reads it (bytes as UTF-8,
    U+FFFD for what is not, then ``JSON.parse``); ``refused`` is raised again for what is
    not JSON to JavaScript either."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        text = bytes(text).decode("utf-8", "replace")
    try:
        return json.loads(text, parse_constant=_not_json)
    except (ValueError, RecursionError):  # (RecursionError: nested deeper than json reads)
        raise refused from None


def loads(text: bytes | str) -> Any:
    """Stored JSON text as a value (orjson, then :func:`loads_refused`)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return loads_refused(text, exc)


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return not is_text(value)
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_has_lone_surrogate(v) for v in value)
    return False


def _key(key: Any) -> str:
    """A dict key as orjson writes it (OPT_NON_STR_KEYS)."""
    if isinstance(key, str):
        return key
    written: dict[str, int] = orjson.loads(orjson.dumps({key: 0}, option=orjson.OPT_NON_STR_KEYS))
    return next(iter(written))


def _as_orjson_writes(value: Any) -> Any:
    """``value`` made of what json.dumps writes as orjson would: NaN and infinities as null,
    integers beyond orjson's 64 bits refused, other objects (datetime, enum, dataclass...) as
    orjson writes them (TypeError for what it refuses)."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, int):
        if not -(2**63) <= value < 2**64:
            raise TypeError("Integer exceeds 64-bit range")
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {_key(k): _as_orjson_writes(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_orjson_writes(v) for v in value]
    return orjson.loads(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS))


def dumps_refused(value: Any, refused: TypeError) -> bytes:
    """``value``, which orjson refused with ``refused``, as ``JSON.stringify`` writes text with
    lone surrogates (escaped, so the bytes are UTF-8; the rest as orjson writes it);
    ``refused`` again when that is not why."""
    if not _has_lone_surrogate(value):
        raise refused
    try:
        plain = _as_orjson_writes(value)
        return json.dumps(plain, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError, RecursionError):
        raise refused from None


def utf8(text: str) -> bytes:
    """``text`` as ioredis writes a JavaScript string: UTF-8, surrogate pairs joined, a lone
    surrogate as U+FFFD (Python's encoder refuses it)."""
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace").encode()
