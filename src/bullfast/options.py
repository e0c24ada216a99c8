"""Job options: validation, BullMQ's encoding, and the child-failure policy default.

Options are given as a mapping with snake_case names (``remove_on_complete``) or BullMQ's
camelCase names (``removeOnComplete``). :func:`normalize_options` merges them over the queue's
defaults, checks every value, and returns a :class:`JobOptions` that carries both the values
the server scripts need and the JSON that is stored in the job hash's ``opts`` field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import orjson

from . import _wire
from .errors import InvalidJobIdError, InvalidOptionError, InvalidQueueNameError, UnsupportedOptionError

MAX_PRIORITY = 2**21 - 1
POLICY_OPTIONS = (
    "fail_parent_on_failure",
    "continue_parent_on_failure",
    "ignore_dependency_on_failure",
    "remove_dependency_on_failure",
)
_DEDUP_NAMES = {
    "id": "id",
    "ttl": "ttl",
    "extend": "extend",
    "replace": "replace",
    "reschedule": "reschedule",
    "keep_last_if_active": "keepLastIfActive",
    "keepLastIfActive": "keepLastIfActive",
}
_REJECTED = {
    "debounce": "the 'debounce' option is obsolete in BullMQ; use 'deduplication'",
    "repeat": "repeatable jobs (job schedulers) are not supported by bullfast",
    "repeatJobKey": "repeatable jobs (job schedulers) are not supported by bullfast",
    "repeat_job_key": "repeatable jobs (job schedulers) are not supported by bullfast",
}
_CANONICAL_INT = re.compile(r"^-?(0|[1-9][0-9]*)$")


def canonical_option_name(name: str) -> str:
    """``removeOnComplete`` or ``remove_on_complete`` -> ``remove_on_complete``."""
    if name in _wire.OPTION_NAMES:
        return name
    ours = _wire.API_TO_OPTION.get(name) or _wire.STORED_TO_OPTION.get(name)
    if ours is None:
        if name in _REJECTED:
            if name == "debounce":
                raise InvalidOptionError(_REJECTED[name])
            raise UnsupportedOptionError(_REJECTED[name])
        raise InvalidOptionError(f"unknown job option {name!r}")
    return ours


def canonicalize(opts: Mapping[str, Any] | None, keep_none: bool = False) -> dict[str, Any]:
    """Options keyed by our names, ``None`` values dropped (BullMQ drops them too), or, with
    ``keep_none``, kept as None where no other spelling of the option has a value (a job's
    None unsets its queue's default, as in BullMQ's ``{...defaults, ...opts}``)."""
    if opts is None:
        return {}
    if not isinstance(opts, Mapping):
        raise InvalidOptionError(f"job options must be a mapping, not {type(opts).__name__}")
    out: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    for name, value in opts.items():
        if not isinstance(name, str):
            raise InvalidOptionError(f"option names must be strings, not {name!r}")
        ours = canonical_option_name(name)
        if value is not None:
            if out.get(ours) is not None and out[ours] != value:
                # which spelling should win is a guess; the caller must say
                raise InvalidOptionError(
                    f"option {given_as[ours]!r} and {name!r} are the same option, given different "
                    f"values ({out[ours]!r} and {value!r})"
                )
            out[ours] = value
            given_as[ours] = given_as.get(ours) or name
        elif keep_none and ours not in out:
            out[ours] = None
            given_as[ours] = ""
    return out


def merge_options(opts: Mapping[str, Any] | None, keywords: Mapping[str, Any]) -> dict[str, Any]:
    """``opts`` and keyword options as one mapping (``Queue.add(name, data, opts, **kw)``);
    one option given in both with different values is refused, as two spellings of it are."""
    merged = canonicalize(opts, keep_none=True)
    for name, value in canonicalize(keywords).items():
        if merged.get(name) is not None and merged[name] != value:
            raise InvalidOptionError(
                f"option {name!r} is given both in opts and as a keyword, with different values "
                f"({merged[name]!r} and {value!r})"
            )
        merged[name] = value
    return merged


def is_text(value: str) -> bool:
    """Encodable as UTF-8 (no lone surrogates), as every name of a key must be (other text
    with lone surrogates is written as ioredis writes it: see ``_json``)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _is_js_integer(job_id: str) -> bool:
    # BullMQ refuses an id that `${parseInt(id, 10)}` gives back unchanged ("123"): parseInt
    # makes a double, printed with its shortest digits (as Python's repr), zeros after them,
    # and in exponent form from 1e21. So not "-0", nor "12345678901234567168" (printed
    # "12345678901234567000")
    if not _CANONICAL_INT.match(job_id) or job_id == "-0":
        return False
    value = float(int(job_id))
    return abs(value) < 1e21 and str(int(Decimal(repr(value)))) == job_id


def check_job_id(job_id: Any) -> str:
    if not isinstance(job_id, str):
        raise InvalidJobIdError(f"job id must be a string, not {type(job_id).__name__} ({job_id!r})")
    if job_id == "":
        raise InvalidJobIdError("job id must not be empty")
    if not is_text(job_id):
        raise InvalidJobIdError(f"job id {job_id!r} is not valid text (a lone surrogate)")
    if _is_js_integer(job_id):
        raise InvalidJobIdError(f"custom job id {job_id!r} cannot be an integer")
    if ":" in job_id:
        raise InvalidJobIdError(f"job id {job_id!r} must not contain ':'")
    return job_id


def check_queue_name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidQueueNameError(f"queue name must be a non-empty string, not {name!r}")
    if ":" in name:
        raise InvalidQueueNameError(f"queue name {name!r} must not contain ':'")
    if not is_text(name):
        raise InvalidQueueNameError(f"queue name {name!r} is not valid text (a lone surrogate)")
    return name


def check_prefix(prefix: Any) -> str:
    if not isinstance(prefix, str) or not prefix:
        raise InvalidOptionError(f"prefix must be a non-empty string, not {prefix!r}")
    if not is_text(prefix):
        raise InvalidOptionError(f"prefix {prefix!r} is not valid text (a lone surrogate)")
    return prefix


# Options of BullMQ's constructors that mean nothing to bullfast (tracing, ioredis' blocking
# flag, the version check, the wait for ready, sandboxed processors): accepted, so that code
# written for BullMQ runs, and ignored.
_IGNORED_CONSTRUCTOR_OPTIONS = frozenset((
    "blockingConnection", "skipVersionCheck", "skipWaitingForReady", "telemetry",
    "useWorkerThreads", "workerForkOptions", "workerThreadsOptions",
))


def constructor_options(kind: str, opts: Mapping[str, Any] | None, names: Mapping[str, str]) -> dict[str, Any]:
    """BullMQ's opts dict of a constructor by our names; ``names`` maps its camelCase keys to
    ours, and our own names are accepted as keys too. An unknown key is an error: a misspelt
    option would otherwise be ignored without a word."""
    out: dict[str, Any] = {}
    for key, value in (opts or {}).items():
        if key in _IGNORED_CONSTRUCTOR_OPTIONS:
            continue
        if key == "backend":  # the PyPI port's choice of store: Redis is bullfast's only one
            if value not in (None, "redis"):
                raise UnsupportedOptionError(f"not supported by bullfast: the {value!r} backend; bullfast keeps jobs in Redis")
            continue
        ours = names.get(key)
        if ours is None and key in names.values():
            ours = key
        if ours is None:
            raise InvalidOptionError(f"unknown {kind} option {key!r}")
        out[ours] = value
    return out


# JavaScript's Number.MAX_SAFE_INTEGER: beyond it Node reads a stored number inexactly (and
# orjson writes no integer beyond 64 bits)
_MAX_SAFE_INTEGER = 2**53 - 1


def _int(name: str, value: Any, low: int | None = 0, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidOptionError(f"option {name!r} must be a number, not {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise InvalidOptionError(f"option {name!r} must be a whole number, not {value!r}")
        value = int(value)
    if low is not None and value < low:
        raise InvalidOptionError(f"option {name!r} must be >= {low}, not {value!r}")
    if high is not None and value > high:
        raise InvalidOptionError(f"option {name!r} must be <= {high}, not {value!r}")
    if abs(value) > _MAX_SAFE_INTEGER:
        raise InvalidOptionError(f"option {name!r} must be within +-(2**53 - 1), not {value!r}")
    return int(value)


def positive_int(owner: str, name: str, value: Any) -> int:
    """A size setting (``chunk_size``, ``batch_size``, ...): an integer >= 1, else
    InvalidOptionError (0 made a bare ValueError deep in an add, or a worker that never took
    a job)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidOptionError(f"{owner}'s {name} must be an integer >= 1, not {value!r}")
    return value


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidOptionError(f"option {name!r} must be True or False, not {value!r}")
    return value


def keep_jobs(name: str, value: Any) -> Any:
    """removeOnComplete / removeOnFail: bool, a count, or {count, age, limit} (None: none)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return _int(name, value, low=None)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if k not in ("count", "age", "limit"):
                raise InvalidOptionError(f"option {name!r} has unknown key {k!r}")
            if k == "age":
                out[k] = _seconds(f"{name}.age", v)
            else:
                out[k] = _int(f"{name}.{k}", v, low=None if k == "count" else 0)
        return out
    raise InvalidOptionError(f"option {name!r} must be a bool, a count or a mapping, not {value!r}")


def _seconds(name: str, value: Any) -> int | float:
    """A duration in seconds: fractions allowed (BullMQ's retention ages are)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise InvalidOptionError(f"option {name!r} must be a number of seconds >= 0, not {value!r}")
    if not value <= _MAX_SAFE_INTEGER:  # (NaN too)
        raise InvalidOptionError(f"option {name!r} must be a number of seconds up to 2**53 - 1, not {value!r}")
    return int(value) if float(value).is_integer() else value


def _backoff(value: Any) -> dict[str, Any]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"type": "fixed", "delay": _int("backoff", value)}
    if not isinstance(value, Mapping):
        raise InvalidOptionError(f"option 'backoff' must be a number or a mapping, not {value!r}")
    out: dict[str, Any] = {}
    for k, v in value.items():
        if k == "type":
            if not isinstance(v, str) or not v:
                raise InvalidOptionError(f"backoff type must be a non-empty string, not {v!r}")
            out["type"] = v
        elif k == "delay":
            out["delay"] = _int("backoff.delay", v)
        elif k == "jitter":
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise InvalidOptionError(f"backoff jitter must be a number in [0, 1], not {v!r}")
            out["jitter"] = v
        else:
            raise InvalidOptionError(f"option 'backoff' has unknown key {k!r}")
    if "type" not in out:
        raise InvalidOptionError("option 'backoff' needs a 'type' ('fixed', 'exponential' or custom)")
    return out


def parse_parent_ref(value: Any) -> tuple[str, str]:
    """The ``parent`` option ``{"id": ..., "queue": "<prefix>:<queue>"}`` -> (parent key, queue key)."""
    if not isinstance(value, Mapping):
        raise InvalidOptionError(f"option 'parent' must be a mapping {{id, queue}}, not {value!r}")
    pid = value.get("id")
    spellings = {k: value[k] for k in ("queue", "queue_key", "queueKey") if value.get(k) is not None}
    queues = list(spellings.values())
    if any(q != queues[0] for q in queues[1:]):
        raise InvalidOptionError(f"option 'parent' names its queue twice, differently: {spellings!r}")
    queue = value.get("queue", value.get("queue_key", value.get("queueKey")))
    if not isinstance(pid, str) or not pid or ":" in pid:
        raise InvalidOptionError(f"parent id must be a non-empty string without ':', not {pid!r}")
    if not isinstance(queue, str) or ":" not in queue:
        raise InvalidOptionError(
            f"parent queue must be the qualified name '<prefix>:<queue>', not {queue!r}"
        )
    if not is_text(pid) or not is_text(queue):
        raise InvalidOptionError(f"option 'parent' {value!r} is not valid text (a lone surrogate)")
    return f"{queue}:{pid}", queue


def _dedup(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidOptionError(f"option 'deduplication' must be a mapping, not {value!r}")
    out: dict[str, Any] = {}
    for k, v in value.items():
        name = _DEDUP_NAMES.get(k)
        if name is None:
            raise InvalidOptionError(f"option 'deduplication' has unknown key {k!r}")
        if name in out and out[name] != v:
            raise InvalidOptionError(
                f"option 'deduplication' has {name!r} under two names, with different values"
            )
        if name == "id":
            if not isinstance(v, str) or not v:
                raise InvalidOptionError(f"deduplication id must be a non-empty string, not {v!r}")
            if not is_text(v):
                raise InvalidOptionError(f"deduplication id {v!r} is not valid text (a lone surrogate)")
        elif name == "ttl":
            v = _int("deduplication.ttl", v)
        else:
            v = _bool(f"deduplication.{k}", v)
        out[name] = v
    if "id" not in out:
        raise InvalidOptionError("option 'deduplication' needs an 'id'")
    return out


class JobOptions:
    """Validated options of one job (or of many: the object is shared by every job added with
    the same options mapping)."""

    __slots__ = (
        "job_id",
        "delay",
        "priority",
        "lifo",
        "timestamp",
        "size_limit",
        "parent_key",
        "parent_queue_key",
        "policy",
        "explicit_policy",
        "dedup_json",
        "body",
        "body_as_child",
        "policy_flags",
        "policy_flags_as_child",
        "values",
    )

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values
        self.job_id: str | None = values.get("job_id")
        self.delay: int = values.get("delay", 0)
        self.priority: int = values.get("priority", 0)
        self.lifo: bool = values.get("lifo", False)
        # 0 is "not given", as BullMQ's `opts.timestamp ? opts.timestamp : Date.now()`
        self.timestamp: int | None = values.get("timestamp") or None
        self.size_limit: int | None = values.get("size_limit")
        parent = values.get("parent")
        self.parent_key: str | None = None
        self.parent_queue_key: str | None = None
        if parent is not None:
            self.parent_key, self.parent_queue_key = parse_parent_ref(parent)
        chosen = [name for name in POLICY_OPTIONS if values.get(name)]
        if len(chosen) > 1:
            raise InvalidOptionError(
                "the child-failure policies are mutually exclusive; got " + ", ".join(chosen)
            )
        self.policy = _wire.OPTION_NAMES[chosen[0]][1] if chosen else None
        # Any policy option given, even False, means the caller chose; else children default
        # to fail_parent_on_failure.
        self.explicit_policy = any(name in values for name in POLICY_OPTIONS)
        dedup = values.get("deduplication")
        if dedup is not None and parent is not None:
            # as BullMQ: a deduplicated add would leave the parent waiting for a child that
            # was never linked to it
            raise InvalidOptionError("deduplication and parent cannot be used together")
        self.dedup_json = orjson.dumps(dedup) if dedup is not None else None

        stored: dict[str, Any] = {"attempts": values.get("attempts", 0)}
        for name, value in values.items():
            if name in ("parent", "attempts"):
                continue
            stored[_wire.OPTION_NAMES[name][1]] = value
        self.body = orjson.dumps(stored)[1:-1]
        self.policy_flags = b',"%s":true' % self.policy.encode() if self.policy else b""
        if self.explicit_policy:
            self.body_as_child = self.body
            self.policy_flags_as_child = self.policy_flags
        else:
            self.body_as_child = self.body + b',"fpof":true'
            self.policy_flags_as_child = b',"fpof":true'

    def stored_opts(self, parent_id: str | None, parent_queue_key: str | None) -> dict[str, Any]:
        """The decoded ``opts`` as BullMQ's API names (what ``job.opts`` shows)."""
        body = self.body if parent_id is None else self.body_as_child
        stored = orjson.loads(b"{" + body + b"}")
        out: dict[str, Any] = {}
        if parent_id is not None:
            out["parent"] = {"id": parent_id, "queue": parent_queue_key}
        for k, v in stored.items():
            out[_wire.STORED_TO_API.get(k, k)] = v
        return out


def validate(values: dict[str, Any]) -> dict[str, Any]:
    """Check every value of canonical options; returns them with normalised forms."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name == "job_id":
            value = check_job_id(value)
        elif name == "priority":
            value = _int(name, value, 0, MAX_PRIORITY)
        elif name in ("delay", "timestamp"):
            value = _int(name, value)
        elif name == "attempts":
            value = _int(name, value)
        elif name in ("stacktrace_limit", "keep_logs"):
            value = _int(name, value)
        elif name == "size_limit":
            value = _int(name, value, 1)
        elif name == "lifo" or name in POLICY_OPTIONS:
            value = _bool(name, value)
        elif name == "backoff":
            value = _backoff(value)
        elif name in ("remove_on_complete", "remove_on_fail"):
            value = keep_jobs(name, value)
        elif name == "deduplication":
            value = _dedup(value)
        elif name == "parent":
            parse_parent_ref(value)
            value = dict(value)
        out[name] = value
    return out


def normalize_options(
    opts: Mapping[str, Any] | None, defaults: Mapping[str, Any] | None = None
) -> JobOptions:
    """Merge ``opts`` over ``defaults`` (a queue's default job options) and validate them."""
    merged = canonicalize(defaults)
    for name, value in canonicalize(opts, keep_none=True).items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    return JobOptions(validate(merged))


def normalize_defaults(defaults: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate a queue's default job options once, when the queue is created."""
    values = validate(canonicalize(defaults))
    for name in ("job_id", "parent", "deduplication"):
        if name in values:
            raise InvalidOptionError(f"option {name!r} cannot be a queue default")
    return values
