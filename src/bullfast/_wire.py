"""BullMQ's vocabulary on the wire: key suffixes, job hash fields, option names.

The camelCase names of BullMQ live here and only here; the rest of bullfast speaks snake_case
and translates through these tables.
"""

from __future__ import annotations

import base64
from typing import Any

DEFAULT_PREFIX = "bull"
DEFAULT_MAX_LEN_EVENTS = 10000
LIBRARY_VERSION_TAG = "bullfast"

# Queue-level key suffixes (protocol 1.2).
WAIT = "wait"
PAUSED = "paused"
ACTIVE = "active"
PRIORITIZED = "prioritized"
PRIORITY_COUNTER = "pc"
DELAYED = "delayed"
WAITING_CHILDREN = "waiting-children"
COMPLETED = "completed"
FAILED = "failed"
STALLED = "stalled"
STALLED_CHECK = "stalled-check"
LIMITER = "limiter"
META = "meta"
ID_COUNTER = "id"
EVENTS = "events"
MARKER = "marker"
REPEAT = "repeat"

# Per-job key suffixes (protocol 1.3).
JOB_LOCK = "lock"
JOB_LOGS = "logs"
JOB_DEPENDENCIES = "dependencies"
JOB_PROCESSED = "processed"
JOB_FAILED_CHILDREN = "failed"  # the public API calls these "ignored"
JOB_UNSUCCESSFUL = "unsuccessful"  # the public API calls these "failed"

# The states a job can be read in, and where each lives.
LIST_STATES = ("wait", "paused", "active")
ZSET_STATES = ("prioritized", "delayed", "waiting-children", "completed", "failed")
DEFAULT_COUNT_STATES = (
    "active",
    "completed",
    "delayed",
    "failed",
    "prioritized",
    "waiting",
    "waiting-children",
)
STATE_KEYS = {
    "waiting": WAIT,
    "wait": WAIT,
    "paused": PAUSED,
    "active": ACTIVE,
    "prioritized": PRIORITIZED,
    "delayed": DELAYED,
    "waiting-children": WAITING_CHILDREN,
    "completed": COMPLETED,
    "failed": FAILED,
}

# Job options: our snake_case name -> BullMQ's API name -> the key stored in the `opts` JSON.
OPTION_NAMES: dict[str, tuple[str, str]] = {
    "job_id": ("jobId", "jobId"),
    "priority": ("priority", "priority"),
    "delay": ("delay", "delay"),
    "lifo": ("lifo", "lifo"),
    "attempts": ("attempts", "attempts"),
    "backoff": ("backoff", "backoff"),
    "remove_on_complete": ("removeOnComplete", "removeOnComplete"),
    "remove_on_fail": ("removeOnFail", "removeOnFail"),
    "parent": ("parent", "parent"),
    "fail_parent_on_failure": ("failParentOnFailure", "fpof"),
    "continue_parent_on_failure": ("continueParentOnFailure", "cpof"),
    "ignore_dependency_on_failure": ("ignoreDependencyOnFailure", "idof"),
    "remove_dependency_on_failure": ("removeDependencyOnFailure", "rdof"),
    "timestamp": ("timestamp", "timestamp"),
    "stacktrace_limit": ("stackTraceLimit", "stackTraceLimit"),
    "keep_logs": ("keepLogs", "kl"),
    "size_limit": ("sizeLimit", "sizeLimit"),
    "deduplication": ("deduplication", "de"),
}

# Stored opts key -> our snake_case name (for decoding opts read back from Redis).
STORED_TO_OPTION = {stored: ours for ours, (_, stored) in OPTION_NAMES.items()}
API_TO_OPTION = {api: ours for ours, (api, _) in OPTION_NAMES.items()}
# Decoding also accepts the API spelling (BullMQ clients store a few keys unencoded).
STORED_TO_API = {stored: api for _, (api, stored) in OPTION_NAMES.items()}

# Node stores its telemetry options flat, as "tm" and "omc"; its Job.fromJSON nests them again
# under "telemetry".
TELEMETRY_STORED = {"tm": "metadata", "omc": "omitContext"}


def nest_telemetry(opts: dict[str, Any]) -> None:
    """Decoded opts holding "tm" / "omc": those moved into ``opts["telemetry"]``, as BullMQ."""
    telemetry = dict(opts.get("telemetry") or {})
    for stored, name in TELEMETRY_STORED.items():
        if stored in opts:
            telemetry[name] = opts.pop(stored)
    opts["telemetry"] = telemetry

# Codes returned by the server operations (protocol 10), and bullfast's own.
ERR_JOB_NOT_EXIST = -1
ERR_LOCK_NOT_EXIST = -2
ERR_JOB_NOT_IN_STATE = -3
ERR_PENDING_CHILDREN = -4
ERR_PARENT_NOT_EXIST = -5
ERR_LOCK_MISMATCH = -6
ERR_PARENT_CANNOT_BE_REPLACED = -7
ERR_JOB_BELONGS_TO_SCHEDULER = -8
ERR_JOB_HAS_FAILED_CHILDREN = -9
ERR_JOB_EXISTS = -20
# bullfast's own: a fan-out that is not open / that another producer moved on; a key of the
# queue's namespace that holds another type than the one written there
ERR_FAN_OUT_NOT_OPEN = -21
ERR_FAN_OUT_MOVED_ON = -22
ERR_KEY_WRONG_TYPE = -23


# Connection names (CLIENT SETNAME, protocol 7.11): how CLIENT LIST shows a queue's workers and
# QueueEvents to BullMQ's getWorkers() / getQueueEvents() and to ours.
NAMED_WORKER_SUFFIX = ":w:"
QUEUE_EVENTS_SUFFIX = ":qe"


def client_name(prefix: str, queue_name: str, suffix: str = "") -> str:
    """``<prefix>:<base64(queue name)><suffix>``."""
    return f"{prefix}:{base64.b64encode(queue_name.encode()).decode()}{suffix}"
