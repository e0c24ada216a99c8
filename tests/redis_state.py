"""Reading a prefix's whole Redis state, in the shape of the golden dumps (shared/golden)."""

from __future__ import annotations

import json
import re
from typing import Any

import redis.asyncio as aioredis

TS = "<TS>"


async def dump(client: aioredis.Redis, prefix: str) -> dict[str, Any]:
    """key -> {type, ttl, value} for every key under ``prefix:`` (golden 'raw' format)."""
    out: dict[str, Any] = {}
    async for raw_key in client.scan_iter(match=f"{prefix}:*", count=1000):
        key = raw_key.decode()
        kind = (await client.type(raw_key)).decode()
        ttl = await client.pttl(raw_key)
        if kind == "string":
            value: Any = (await client.get(raw_key)).decode()
        elif kind == "hash":
            value = {k.decode(): v.decode() for k, v in (await client.hgetall(raw_key)).items()}
        elif kind == "list":
            value = [v.decode() for v in await client.lrange(raw_key, 0, -1)]
        elif kind == "set":
            value = sorted(v.decode() for v in await client.smembers(raw_key))
        elif kind == "zset":
            value = [[m.decode(), _score(s)] for m, s in await client.zrange(raw_key, 0, -1, withscores=True)]
        elif kind == "stream":
            value = [
                {"id": i.decode(), "fields": [[k.decode(), v.decode()] for k, v in fields.items()]}
                for i, fields in await client.xrange(raw_key)
            ]
        else:
            value = None
        out[key] = {"type": kind, "ttl_ms": ttl, "value": value}
    return out


def _score(s: float) -> str:
    return str(int(s)) if s == int(s) else repr(s)


def normalize(
    state: dict[str, Any], prefix: str, ids: dict[str, str], *, golden_prefix: str = "bull"
) -> dict[str, Any]:
    """Replace volatile values the way shared/golden/README.md describes: timestamps, stream
    ids, generated job ids (``ids`` maps placeholder -> id), TTLs; our prefix -> ``bull``.
    JSON texts are parsed so that key order does not matter."""
    by_id = sorted(ids.items(), key=lambda kv: -len(kv[1]))

    def text(s: str) -> str:
        if s.startswith(prefix + ":"):
            s = golden_prefix + s[len(prefix) :]
        s = s.replace(f'"{prefix}:', f'"{golden_prefix}:').replace(f"{prefix}:", f"{golden_prefix}:")
        for name, value in by_id:
            s = s.replace(value, f"<{name}>")
        return s

    out: dict[str, Any] = {}
    for key, entry in state.items():
        kind, value = entry["type"], entry["value"]
        nkey = text(key)
        if kind == "hash":
            value = {text(k): _hash_field(nkey, k, text(v)) for k, v in value.items()}
            if nkey.endswith(":meta") and "version" in value:
                value["version"] = "<VERSION>"
        elif kind == "list":
            value = [text(v) for v in value]
        elif kind == "set":
            value = sorted(text(v) for v in value)
        elif kind == "zset":
            value = _order_ts(nkey, [[text(m), _zscore(nkey, m, s)] for m, s in value])
        elif kind == "stream":
            value = [
                [[k, _event_field(e["fields"], k, text(v))] for k, v in e["fields"]] for e in value
            ]
        elif kind == "string":
            value = TS if nkey.endswith(":stalled-check") else text(value)
        ttl = "none" if entry["ttl_ms"] == -1 else "<PX>"
        out[nkey] = {"type": kind, "ttl": ttl, "value": value}
    return out


def _hash_field(key: str, field: str, value: str) -> Any:
    if field in ("timestamp", "processedOn", "finishedOn"):
        return TS
    if field == "stacktrace":
        return ["<STACK TRACE STRING>" for _ in json.loads(value)]
    if field in ("opts", "data", "parent", "returnvalue", "progress") or key.endswith(":processed"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _order_ts(key: str, members: list[list[str]]) -> list[list[str]]:
    """Members whose score is a timestamp: their order is only the order of their clocks
    (same-millisecond ties fall back to member order), so compare them as a set."""
    if members and all(score == TS for _, score in members):
        return sorted(members)
    return members


def _zscore(key: str, member: str, score: str) -> str:
    if key.endswith((":completed", ":failed", ":waiting-children", ":unsuccessful")):
        return TS
    if key.endswith(":delayed"):
        return f"{TS}*4096+{int(score) % 4096}"
    if key.endswith(":marker") and member == "1":
        return "<TS(ms, may be fractional)>"
    return score


def _event_field(fields: list[list[str]], name: str, value: str) -> Any:
    event = fields[0][1]
    if event == "delayed" and name == "delay":
        return TS
    if name in ("returnvalue", "data"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def drop_explicit_false(state: dict[str, Any]) -> dict[str, Any]:
    """Children added here with fail_parent_on_failure=False store "fpof":false in opts (as
    BullMQ stores an explicit false); Node's defaults left the key out."""
    for entry in state.values():
        if entry["type"] == "hash" and "opts" in entry["value"]:
            opts = json.loads(entry["value"]["opts"])
            if opts.get("fpof") is False:
                del opts["fpof"]
                entry["value"]["opts"] = json.dumps(opts)
    return state


def normalize_golden(golden: dict[str, Any]) -> dict[str, Any]:
    """The golden file's ``normalized`` section, with JSON texts parsed the same way, streams
    without their ids, and ``meta.version`` masked."""
    out: dict[str, Any] = {}
    for key, entry in golden["normalized"].items():
        kind, value = entry["type"], entry["value"]
        if kind == "hash":
            value = {k: _hash_field(key, k, v) if k != "stacktrace" else v for k, v in value.items()}
            if isinstance(value.get("stacktrace"), str):
                value["stacktrace"] = json.loads(value["stacktrace"])
            if key.endswith(":meta") and "version" in value:
                value["version"] = "<VERSION>"
        elif kind == "stream":
            value = [[[k, _event_field(e["fields"], k, v)] for k, v in e["fields"]] for e in value]
        elif kind == "zset":
            value = _order_ts(key, value)
        out[key] = {"type": kind, "ttl": entry["ttl"], "value": value}
    return out


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
