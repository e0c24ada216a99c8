"""Pure-Python twin of ``_core.pyx``: the same functions, the same results, byte for byte.

It is the reference the compiled core is tested against, and what runs where the extension
is missing or ``BULLFAST_PURE_PYTHON=1`` is set. Sans-IO: plain data in, bytes and lists out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from ._json import dumps_refused, loads, utf8
from ._plan import Plan
from ._wire import STORED_TO_API, nest_telemetry
from .errors import (
    DataNotSerializableError,
    DataTooLargeError,
    InvalidFlowError,
    InvalidInputError,
    InvalidOptionError,
)
from .options import JobOptions, check_queue_name, is_text

IS_COMPILED = False

_NODE_KEYS = frozenset(("name", "queue_name", "queueName", "data", "opts", "children", "prefix"))
_HEX = "0123456789abcdef"


def _uuid4(raw: bytes) -> str:
    """An RFC 4122 version-4 UUID string from 16 random bytes."""
    b = bytearray(raw)
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def plan_jobs(
    roots: Sequence[Any],
    prefix: str,
    queue_name: str | None,
    defaults_by_queue: Mapping[str, Any],
    normalize: Callable[[Any, Any], JobOptions],
    random_bytes: Callable[[int], bytes],
    max_depth: int,
    flow: bool,
) -> Plan:
    """Flatten job trees breadth-first, validating every node and normalising its options.

    ``flow`` trees are nodes ``{name, queue_name, data, opts, children, prefix}`` and get UUIDs;
    otherwise the roots are plain jobs ``{name, data, opts}`` of ``queue_name`` whose ids come
    from the queue's counter unless given.
    """
    plan = Plan()
    plan.auto_ids = not flow
    if not flow:
        plan.root_label = "jobs"
    if not isinstance(roots, (list, tuple)):
        raise InvalidFlowError(f"expected a list of jobs, not {type(roots).__name__}")
    queue_index: dict[tuple[str, str], int] = {}
    # normalised options by the identity of the opts object (and queue)...
    by_identity: dict[tuple[int, str], JobOptions] = {}
    # ...each object held, so that its id is not reused: a mapping may build a new opts dict
    # at each access, which would die at once
    held: list[Any] = []
    by_content: dict[tuple[bytes, str], JobOptions] = {}
    custom_keys: set[str] = set()
    nodes = plan.nodes
    parents = plan.parents
    depth_of: list[int] = []

    for node in roots:
        nodes.append(node)
        parents.append(-1)
        depth_of.append(1)
        plan.roots.append(len(nodes) - 1)

    i = 0
    while i < len(nodes):
        node = nodes[i]
        if not isinstance(node, Mapping):
            raise InvalidFlowError(f"a job must be a mapping, not {type(node).__name__}", plan.path(i))
        if flow:
            # a node may appear twice (it is added twice, as by Node's FlowProducer), but not
            # inside itself: a cycle would expand without end
            k = parents[i]
            while k >= 0:
                if nodes[k] is node:
                    raise InvalidFlowError("a node contains itself (a cycle in the tree)", plan.path(i))
                k = parents[k]
        for key in node:
            if key not in _NODE_KEYS or (not flow and key in ("children", "queue_name", "queueName", "prefix")):
                raise InvalidFlowError(f"unknown key {key!r} in a job node", plan.path(i))
        name = node.get("name")
        if not isinstance(name, str):
            raise InvalidFlowError(f"job name must be a string, not {name!r}", plan.path(i))
        if not is_text(name):
            raise InvalidFlowError(f"job name {name!r} is not valid text (a lone surrogate)", plan.path(i))

        if flow:
            qname = node.get("queue_name", node.get("queueName"))
            if "queueName" in node and "queue_name" in node and node["queueName"] != qname:
                raise InvalidFlowError(
                    f"queue_name {qname!r} and queueName {node['queueName']!r} differ", plan.path(i)
                )
            try:
                check_queue_name(qname)
            except InvalidInputError as exc:
                raise InvalidFlowError(exc.detail, plan.path(i)) from None
            qprefix = node.get("prefix")
            if qprefix is None:
                qprefix = prefix
            elif not isinstance(qprefix, str) or not qprefix:
                raise InvalidFlowError(f"prefix must be a non-empty string, not {qprefix!r}", plan.path(i))
            elif not is_text(qprefix):
                raise InvalidFlowError(f"prefix {qprefix!r} is not valid text (a lone surrogate)", plan.path(i))
        else:
            qname = queue_name
            qprefix = prefix
        qkey = (qprefix, qname)
        qi = queue_index.get(qkey)
        if qi is None:
            qi = queue_index[qkey] = len(plan.queue_names)
            plan.prefixes.append(qprefix)
            plan.queue_names.append(qname)
            plan.queue_prefixes.append(f"{qprefix}:{qname}:")
        plan.queue_of.append(qi)

        raw_opts = node.get("opts")
        opts = by_identity.get((id(raw_opts), qname))
        if opts is None:
            try:
                content = orjson.dumps(raw_opts, option=orjson.OPT_SORT_KEYS)
            except TypeError:
                content = None
            opts = by_content.get((content, qname)) if content is not None else None
            if opts is None:
                try:
                    opts = normalize(raw_opts, defaults_by_queue.get(qname))
                except InvalidInputError as exc:
                    raise type(exc)(exc.detail, plan.path(i)) from None
                if content is not None:
                    by_content[(content, qname)] = opts
            by_identity[(id(raw_opts), qname)] = opts
            held.append(raw_opts)
        plan.opts_of.append(opts)

        if parents[i] >= 0 and opts.parent_key is not None:
            raise InvalidFlowError("only the root of a flow may name a parent in its options", plan.path(i))
        if parents[i] >= 0 and opts.dedup_json is not None:
            # a deduplicated child would be dropped from its parent, which then waits forever
            raise InvalidOptionError("deduplication and a parent cannot be used together", plan.path(i))
        if opts.job_id is not None and flow:  # add_bulk: a second add of an id is a duplicate
            key = plan.queue_prefixes[qi] + opts.job_id
            if key in custom_keys:
                raise InvalidFlowError(f"job id {opts.job_id!r} is used twice in {qname!r}", plan.path(i))
            custom_keys.add(key)

        children = node.get("children") if flow else None
        if children is not None and not isinstance(children, (list, tuple)):
            raise InvalidFlowError(f"children must be a list, not {type(children).__name__}", plan.path(i))
        plan.first_child.append(len(nodes))
        if not children:
            plan.n_children.append(0)
        else:
            if depth_of[i] >= max_depth:
                raise InvalidFlowError(f"the tree is deeper than {max_depth} levels", plan.path(i))
            if opts.dedup_json is not None:
                raise InvalidFlowError("a node with children cannot use deduplication", plan.path(i))
            plan.n_children.append(len(children))
            d = depth_of[i] + 1
            for child in children:
                nodes.append(child)
                parents.append(i)
                depth_of.append(d)
        i += 1

    n_generated = 0
    for i in range(len(nodes)):
        if plan.opts_of[i].job_id is None:
            n_generated += 1
    raw = random_bytes(16 * n_generated) if flow and n_generated else b""
    k = 0
    for i in range(len(nodes)):
        job_id = plan.opts_of[i].job_id
        if job_id is None:
            if flow:
                job_id = _uuid4(raw[16 * k : 16 * k + 16])
                k += 1
            else:
                job_id = ""
        plan.ids.append(job_id)
    return plan


def encode_value(value: Any) -> bytes:
    """A user's value (job data, a result, progress) as JSON text; TypeError for what JSON
    cannot hold. Dict keys that are not strings (``{1: 2}``) are written as strings, as
    Python's json module writes them (and so the PyPI port, and what a Node object can hold);
    only such a value pays for orjson's slower option, on a second try. Text with lone
    surrogates is written as JavaScript writes it (``_json``)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        try:
            return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
        except TypeError as exc:
            return dumps_refused(value, exc)


def _json(value: str) -> bytes:
    return orjson.dumps(value)


def encode_add_call(
    plan: Plan,
    start: int,
    stop: int,
    sha: bytes,
    guard: str,
    flags: str,
    directives: Sequence[tuple[str, str, str]],
    now_ms: int,
) -> bytes:
    """One ``EVALSHA add_jobs`` call for nodes ``start .. stop - 1``, encoded as RESP."""
    strings: list[bytes] = []
    string_index: dict[Any, int] = {}
    records: list[bytes] = []
    ids = plan.ids
    nodes = plan.nodes
    parents = plan.parents
    queue_of = plan.queue_of
    opts_of = plan.opts_of
    n_children = plan.n_children
    qprefixes = plan.queue_prefixes
    root_parent = plan.root_parent

    def intern(key: Any, make: Callable[[], bytes]) -> int:
        si = string_index.get(key)
        if si is None:
            strings.append(make())
            si = string_index[key] = len(strings)
        return si

    for i in range(start, stop):
        node = nodes[i]
        opts = opts_of[i]
        p = parents[i]
        if p >= 0:
            pid = ids[p]
            pqueue = qprefixes[queue_of[p]][:-1]
            pkey = f"{pqueue}:{pid}"
        elif root_parent is not None:
            pkey, pqueue = root_parent
            pid = pkey[len(pqueue) + 1 :]
        elif opts.parent_key is not None:
            pkey = opts.parent_key
            pqueue = opts.parent_queue_key
            pid = pkey[len(pqueue) + 1 :]
        else:
            pkey = None

        if pkey is None:
            oi = intern((id(opts), None), lambda: b"{" + opts.body + b"}")
            pi = 0
        else:
            # The parent JSON carries the child's policy flags; the key string precedes it.
            policy = opts.policy_flags_as_child
            found = string_index.get(("parent", pkey, policy))
            if found is None:
                strings.append(pkey.encode())
                pi = string_index[("parent", pkey, policy)] = len(strings)
                strings.append(b'{"id":' + _json(pid) + b',"queueKey":' + _json(pqueue) + policy + b"}")
            else:
                pi = found
            body = opts.body_as_child
            oi = intern(
                (id(opts), pkey),
                lambda: b'{"parent":{"id":' + _json(pid) + b',"queue":' + _json(pqueue) + b"}"
                + (b"," + body if body else b"") + b"}",
            )

        data = node.get("data")
        try:
            data_json = b"{}" if data is None else encode_value(data)
        except TypeError as exc:
            raise DataNotSerializableError(f"job data is not JSON-serialisable: {exc}", plan.path(i)) from None
        if opts.size_limit is not None and len(data_json) > opts.size_limit:
            raise DataTooLargeError(
                f"job data is {len(data_json)} bytes, over the size limit of {opts.size_limit}", plan.path(i)
            )

        if n_children[i]:
            kind = "w"
        elif opts.delay > 0:
            kind = "d"
        elif opts.priority:
            kind = "p"
        elif opts.lifo:
            kind = "l"
        else:
            kind = "s"
        if opts.dedup_json is not None:
            kind = f"{kind}:{intern(('dedup', id(opts)), lambda: opts.dedup_json)}"

        records += (
            str(queue_of[i] + 1).encode(),
            ids[i].encode(),
            node["name"].encode(),
            data_json,
            str(oi).encode(),
            b"" if opts.timestamp is None else str(opts.timestamp).encode(),
            str(opts.delay).encode(),
            str(opts.priority).encode(),
            kind.encode(),
            str(pi).encode(),
        )

    args = [b"EVALSHA", sha, b"1", (qprefixes[queue_of[start]] + "meta").encode(), guard.encode(), flags.encode(), str(now_ms).encode()]
    args.append(str(len(directives)).encode())
    for kind, a, b in directives:
        args += (kind.encode(), a.encode(), b.encode())
    args.append(str(len(qprefixes)).encode())
    args += (p.encode() for p in qprefixes)
    args.append(str(len(strings)).encode())
    args += strings
    args += records
    return pack_command(args)


def _argument(v: Any) -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        try:
            return v.encode()
        except UnicodeEncodeError:  # lone surrogates: U+FFFD, as ioredis writes them
            return utf8(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"a command argument must be bytes, str, int or float, not {type(v).__name__}")
    if isinstance(v, int):
        return str(int(v)).encode()
    return repr(float(v)).encode()


def pack_command(args: Sequence[bytes | str | int | float]) -> bytes:
    """RESP encoding of one command: a sequence of bytes, str, int or float (encoded as
    redis-py encodes them)."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = _argument(a)
        out.append(b"$%d\r\n" % len(b))
        out.append(b)
        out.append(b"\r\n")
    return b"".join(out)


# -- decoding replies ---------------------------------------------------------------------------


def _int_value(v: bytes | None, default: Any) -> Any:
    if v is None:
        return default
    try:
        return int(v)
    except ValueError:
        try:
            return int(float(v))
        except (ValueError, OverflowError):  # not a number, or inf / nan
            return default


def _json_value(v: bytes | None, default: Any) -> Any:
    if v is None:
        return default
    try:
        return loads(v)
    except orjson.JSONDecodeError:
        return default


def _text_value(v: bytes | None) -> str | None:
    return None if v is None else v.decode("utf-8", "replace")


# the fields decode_job_hash reads, by their place in its table of values
_JOB_FIELDS = {
    name: i
    for i, name in enumerate(
        (b"name", b"data", b"opts", b"timestamp", b"delay", b"priority", b"progress", b"attemptsMade", b"atm",
         b"ats", b"stc", b"processedOn", b"finishedOn", b"returnvalue", b"failedReason", b"stacktrace",
         b"parentKey", b"parent", b"defa", b"pb", b"rjk", b"deid")
    )
}


def decode_job_hash(job: Any, raw: Mapping[bytes, bytes] | Sequence[bytes]) -> None:
    """Set a job's attributes from the fields of its hash (like BullMQ's ``Job.fromJSON``):
    a mapping (HGETALL) or the flat list a script returns.

    Corrupt JSON in ``data`` leaves ``data`` None and says why in ``decode_error``; other
    corrupt JSON fields decode to their defaults, as in BullMQ. One pass over the fields the
    hash holds (a repeated field keeps its last value)."""
    f: list[Any] = [None] * len(_JOB_FIELDS)
    place = _JOB_FIELDS.get
    if isinstance(raw, list):
        for i in range(0, len(raw) - 1, 2):
            at = place(raw[i])
            if at is not None:
                f[at] = raw[i + 1]
    else:
        pairs = raw.items() if isinstance(raw, Mapping) else zip(raw[::2], raw[1::2])
        for k, v in pairs:
            at = place(k)
            if at is not None:
                f[at] = v
    (name, data, opts, timestamp, delay, priority, progress, attempts_made, atm, ats, stc, processed_on,
     finished_on, returnvalue, failed_reason, stacktrace, parent_key, parent, defa, pb, rjk, deid) = f
    job.name = _text_value(name) or ""
    job.decode_error = None
    job._raw_data = data
    if data is None:
        job.data = {}
    else:
        try:
            job.data = loads(data)
        except orjson.JSONDecodeError as exc:
            job.data = None
            job.decode_error = f"job data is not valid JSON: {exc}"
    job.opts = {}
    if opts is not None:
        try:
            decoded = loads(opts)
            if not isinstance(decoded, dict):
                raise ValueError
            job.opts = {STORED_TO_API.get(k, k): v for k, v in decoded.items()}
            if "tm" in job.opts or "omc" in job.opts:
                nest_telemetry(job.opts)
        except ValueError:
            job.decode_error = job.decode_error or "job opts are not a JSON object"
    job.timestamp = _int_value(timestamp, 0)
    job.delay = _int_value(delay, 0)
    job.priority = _int_value(priority, 0)
    job.progress = _json_value(progress, 0)
    job.attempts_made = _int_value(attempts_made if attempts_made is not None else atm, 0)
    job.attempts_started = _int_value(ats, 0)
    job.stalled_counter = _int_value(stc, 0)
    job.processed_on = _int_value(processed_on, None)
    job.finished_on = _int_value(finished_on, None)
    job.returnvalue = _json_value(returnvalue, None)
    job.failed_reason = _text_value(failed_reason)
    stack = _json_value(stacktrace, [])
    job.stacktrace = stack if isinstance(stack, list) else []
    job.parent_key = _text_value(parent_key)
    parent = _json_value(parent, None)
    job.parent = parent if isinstance(parent, dict) else None
    job.deferred_failure = _text_value(defa)
    job.processed_by = _text_value(pb)
    job.repeat_job_key = _text_value(rjk)
    job.deduplication_id = _text_value(deid)


def _flat_pairs(raw: Mapping[bytes, bytes] | list[bytes]) -> list[bytes]:
    """The fields and values of a hash as read: HGETALL's flat list, or a mapping."""
    if isinstance(raw, list):
        return raw
    return [part for pair in raw.items() for part in pair]


def decode_json_values(raw: Mapping[bytes, bytes] | list[bytes]) -> dict[str, Any]:
    """``{child key: JSON text}`` (a ``:processed`` hash, as HGETALL's flat list or a mapping)
    -> ``{child key: value}``; a value that is not JSON is given as text."""
    flat = _flat_pairs(raw)
    out: dict[str, Any] = {}
    for i in range(0, len(flat) - 1, 2):
        k, v = flat[i], flat[i + 1]
        try:
            out[k.decode()] = loads(v)
        except orjson.JSONDecodeError:
            out[k.decode()] = v.decode("utf-8", "replace")
    return out


def decode_str_values(raw: Mapping[bytes, bytes] | list[bytes]) -> dict[str, str]:
    flat = _flat_pairs(raw)
    return {flat[i].decode(): flat[i + 1].decode("utf-8", "replace") for i in range(0, len(flat) - 1, 2)}


# -- the jobs a fetch took: MessagePack, as a script's cmsgpack.pack writes arrays of strings --

# cmsgpack writes nil below 16 levels, so a deeper array is not a script's reply; the limit
# also bounds the recursion
_MAX_NESTING = 16
_STRING_WIDTH = {0xD9: 1, 0xC4: 1, 0xDA: 2, 0xC5: 2, 0xDB: 4, 0xC6: 4}
_ARRAY_WIDTH = {0xDC: 2, 0xDD: 4}


def _be_length(blob: bytes, pos: int, width: int) -> tuple[int, int]:
    if pos + width > len(blob):
        raise ValueError("MessagePack reply ends inside a length")
    return int.from_bytes(blob[pos : pos + width], "big"), pos + width


def _unpack_value(blob: bytes, pos: int, depth: int) -> tuple[Any, int]:
    if pos >= len(blob):
        raise ValueError("MessagePack reply ends before its last value")
    t = blob[pos]
    pos += 1
    if 0xA0 <= t <= 0xBF:
        n = t & 0x1F
    elif t in _STRING_WIDTH:
        n, pos = _be_length(blob, pos, _STRING_WIDTH[t])
    else:
        if 0x90 <= t <= 0x9F:
            n = t & 0x0F
        elif t in _ARRAY_WIDTH:
            n, pos = _be_length(blob, pos, _ARRAY_WIDTH[t])
        else:
            raise ValueError(f"MessagePack type 0x{t:02x} where an array or a string was expected")
        if depth >= _MAX_NESTING:
            raise ValueError("MessagePack arrays nested too deep")
        if n > len(blob) - pos:  # every element takes a byte at least
            raise ValueError("MessagePack array longer than the reply")
        items = []
        for _ in range(n):
            item, pos = _unpack_value(blob, pos, depth + 1)
            items.append(item)
        return items, pos
    if n > len(blob) - pos:
        raise ValueError("MessagePack string longer than the reply")
    return blob[pos : pos + n], pos + n


def unpack_string_arrays(blob: bytes) -> Any:
    """A MessagePack value made of arrays and strings (str or bin) only, what Redis's
    ``cmsgpack.pack`` writes for a Lua table of strings -> nested lists of bytes. A fetch
    returns the jobs it took as one such value (``[id, [field, value, ...], id, ...]``): Redis
    converts a script's reply element by element, and one string costs it less than a table
    of them."""
    if type(blob) is not bytes:
        raise TypeError(f"unpack_string_arrays() takes bytes, not {type(blob).__name__}")
    value, pos = _unpack_value(blob, 0, 0)
    if pos != len(blob):
        raise ValueError(f"{len(blob) - pos} bytes after the MessagePack value")
    return value


__all__ = [
    "IS_COMPILED",
    "encode_value",
    "plan_jobs",
    "encode_add_call",
    "pack_command",
    "decode_job_hash",
    "decode_json_values",
    "decode_str_values",
    "unpack_string_arrays",
]
