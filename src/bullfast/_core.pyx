# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled core: flattening job trees, encoding script calls as RESP, decoding replies.

Sans-IO (no Redis here): plain data in, bytes and lists out. ``_core_py.py`` is its twin and
must give the same results byte for byte; the parity tests hold the two together.
"""

from collections.abc import Mapping

import orjson

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy

from ._plan import Plan
from .errors import (
    DataNotSerializableError,
    DataTooLargeError,
    InvalidFlowError,
    InvalidInputError,
    InvalidOptionError,
)
from ._json import dumps_refused, loads_refused, utf8
from ._wire import STORED_TO_API, nest_telemetry
from .options import check_queue_name, is_text

IS_COMPILED = True

cdef frozenset _NODE_KEYS = frozenset(("name", "queue_name", "queueName", "data", "opts", "children", "prefix"))
cdef frozenset _FLOW_ONLY_KEYS = frozenset(("children", "queue_name", "queueName", "prefix"))
cdef object _dumps = orjson.dumps
cdef object _loads = orjson.loads
cdef object _JSONDecodeError = orjson.JSONDecodeError
cdef int _SORT_KEYS = orjson.OPT_SORT_KEYS
cdef int _NON_STR_KEYS = orjson.OPT_NON_STR_KEYS
cdef const char* _HEX = b"0123456789abcdef"
cdef dict _STORED_TO_API = STORED_TO_API

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


# -- a user's value as JSON ----------------------------------------------------------------

def encode_value(value):
    """A user's value (job data, a result, progress) as JSON text; TypeError for what JSON
    cannot hold. Dict keys that are not strings (``{1: 2}``) are written as strings, as
    Python's json module writes them (and so the PyPI port, and what a Node object can hold);
    only such a value pays for orjson's slower option, on a second try. Text with lone
    surrogates is written as JavaScript writes it (``_json``)."""
    return _encode_value(value)


cdef inline object _encode_value(object value):
    try:
        return _dumps(value)
    except TypeError:
        try:
            return _dumps(value, option=_NON_STR_KEYS)
        except TypeError as exc:
            return dumps_refused(value, exc)


cdef inline object _loads_stored(object text):
    """Stored JSON: orjson, and what it refuses read as JSON.parse reads it (``_json``)."""
    try:
        return _loads(text)
    except _JSONDecodeError as exc:
        return loads_refused(text, exc)


# -- a growable C buffer of RESP bulk strings -------------------------------------------------

cdef class _Resp:
    """Bulk strings ("$<len>\\r\\n<bytes>\\r\\n") appended to one C buffer."""

    cdef char* buf
    cdef Py_ssize_t size
    cdef Py_ssize_t cap
    cdef Py_ssize_t count

    def __cinit__(self, Py_ssize_t cap=65536):
        self.buf = <char*>malloc(cap)
        if self.buf == NULL:
            raise MemoryError()
        self.cap = cap
        self.size = 0
        self.count = 0

    def __dealloc__(self):
        free(self.buf)

    cdef int reserve(self, Py_ssize_t extra) except -1:
        cdef Py_ssize_t need = self.size + extra
        cdef Py_ssize_t cap = self.cap
        cdef char* nbuf
        if need <= cap:
            return 0
        while cap < need:
            cap *= 2
        nbuf = <char*>realloc(self.buf, cap)
        if nbuf == NULL:
            raise MemoryError()
        self.buf = nbuf
        self.cap = cap
        return 0

    cdef inline Py_ssize_t _digits(self, char* out, long long v):
        cdef char tmp[24]
        cdef Py_ssize_t n = 0, j
        cdef bint neg = v < 0
        if neg:
            v = -v
        if v == 0:
            tmp[0] = 48
            n = 1
        while v > 0:
            tmp[n] = <char>(48 + v % 10)
            v //= 10
            n += 1
        j = 0
        if neg:
            out[0] = 45
            j = 1
        while n > 0:
            n -= 1
            out[j] = tmp[n]
            j += 1
        return j

    cdef int raw(self, const char* p, Py_ssize_t n) except -1:
        self.reserve(n)
        memcpy(self.buf + self.size, p, n)
        self.size += n
        return 0

    cdef int header(self, char kind, long long n) except -1:
        self.reserve(26)
        self.buf[self.size] = kind
        self.size += 1
        self.size += self._digits(self.buf + self.size, n)
        self.buf[self.size] = 13
        self.buf[self.size + 1] = 10
        self.size += 2
        return 0

    cdef int chars(self, const char* p, Py_ssize_t n) except -1:
        self.header(36, n)
        self.reserve(n + 2)
        memcpy(self.buf + self.size, p, n)
        self.size += n
        self.buf[self.size] = 13
        self.buf[self.size + 1] = 10
        self.size += 2
        self.count += 1
        return 0

    cdef int bytes_(self, bytes b) except -1:
        return self.chars(PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b))

    cdef int text(self, str s) except -1:
        cdef Py_ssize_t n
        cdef const char* p
        try:
            p = PyUnicode_AsUTF8AndSize(s, &n)
        except UnicodeEncodeError:  # lone surrogates: U+FFFD, as ioredis writes them
            return self.bytes_(utf8(s))
        return self.chars(p, n)

    cdef int integer(self, long long v) except -1:
        cdef char tmp[24]
        cdef Py_ssize_t n = self._digits(tmp, v)
        return self.chars(tmp, n)

    cdef int value(self, object v) except -1:
        """One argument as redis-py would encode it: bytes as is, text as UTF-8, numbers as
        their decimal text (floats by repr)."""
        if type(v) is bytes:
            return self.bytes_(<bytes>v)
        if type(v) is str:
            return self.text(<str>v)
        if type(v) is int and -(1 << 62) < v < (1 << 62):
            return self.integer(v)
        if isinstance(v, bool) or not isinstance(v, (bytes, str, int, float)):
            raise TypeError(f"a command argument must be bytes, str, int or float, not {type(v).__name__}")
        if isinstance(v, bytes):
            return self.bytes_(bytes(v))
        if isinstance(v, str):
            return self.text(str(v))
        if isinstance(v, int):
            return self.text(str(int(v)))
        return self.text(repr(float(v)))

    cdef bytes tobytes(self):
        return PyBytes_FromStringAndSize(self.buf, self.size)


def pack_command(args):
    """RESP encoding of one command: a sequence of bytes, str, int or float (encoded as
    redis-py encodes them)."""
    cdef _Resp out = _Resp(4096)
    cdef Py_ssize_t n = len(args)
    out.header(42, n)
    for a in args:
        out.value(a)
    return out.tobytes()


# -- planning --------------------------------------------------------------------------------

cdef str _uuid4(const unsigned char* raw):
    """An RFC 4122 version-4 UUID string from 16 random bytes."""
    cdef char out[36]
    cdef int i, j = 0
    cdef unsigned char b
    for i in range(16):
        if i == 4 or i == 6 or i == 8 or i == 10:
            out[j] = 45
            j += 1
        b = raw[i]
        if i == 6:
            b = (b & 0x0F) | 0x40
        elif i == 8:
            b = (b & 0x3F) | 0x80
        out[j] = _HEX[b >> 4]
        out[j + 1] = _HEX[b & 15]
        j += 2
    return out[:36].decode("ascii")


def plan_jobs(roots, str prefix, queue_name, defaults_by_queue, normalize, random_bytes,
              Py_ssize_t max_depth, bint flow):
    """Flatten job trees breadth-first, validating every node and normalising its options.

    See ``_core_py.plan_jobs``; the results are the same."""
    plan = Plan()
    plan.auto_ids = not flow
    if not flow:
        plan.root_label = "jobs"
    if not isinstance(roots, (list, tuple)):
        raise InvalidFlowError(f"expected a list of jobs, not {type(roots).__name__}")
    cdef dict queue_index = {}
    # normalised options by the identity of the opts object (and queue)...
    cdef dict by_identity = {}
    # ...each object held, so that its id is not reused: a mapping may build a new opts dict
    # at each access, which would die at once
    cdef list held = []
    cdef dict by_content = {}
    cdef set custom_keys = set()
    cdef list nodes = plan.nodes
    cdef list parents = plan.parents
    cdef list queue_of = plan.queue_of
    cdef list opts_of = plan.opts_of
    cdef list first_child = plan.first_child
    cdef list n_children = plan.n_children
    cdef list queue_prefixes = plan.queue_prefixes
    cdef list depth_of = []
    cdef Py_ssize_t i, d, n_generated, k
    cdef object node, name, qname, qprefix, qkey, qi, raw_opts, opts, content, children, key, child
    cdef object ident

    for node in roots:
        nodes.append(node)
        parents.append(-1)
        depth_of.append(1)
        plan.roots.append(len(nodes) - 1)

    i = 0
    while i < len(nodes):
        node = nodes[i]
        if type(node) is not dict and not isinstance(node, Mapping):
            raise InvalidFlowError(f"a job must be a mapping, not {type(node).__name__}", plan.path(i))
        if flow:
            # a node may appear twice (it is added twice, as by Node's FlowProducer), but not
            # inside itself: a cycle would expand without end
            ident = id(node)
            k = <Py_ssize_t>parents[i]
            while k >= 0:
                if id(nodes[k]) == ident:
                    raise InvalidFlowError("a node contains itself (a cycle in the tree)", plan.path(i))
                k = <Py_ssize_t>parents[k]
        for key in node:
            if key not in _NODE_KEYS or (not flow and key in _FLOW_ONLY_KEYS):
                raise InvalidFlowError(f"unknown key {key!r} in a job node", plan.path(i))
        name = node.get("name")
        if type(name) is not str and not isinstance(name, str):
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
            queue_prefixes.append(f"{qprefix}:{qname}:")
        queue_of.append(qi)

        raw_opts = node.get("opts")
        opts = by_identity.get((id(raw_opts), qname))
        if opts is None:
            try:
                content = _dumps(raw_opts, option=_SORT_KEYS)
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
        opts_of.append(opts)

        if <Py_ssize_t>parents[i] >= 0 and opts.parent_key is not None:
            raise InvalidFlowError("only the root of a flow may name a parent in its options", plan.path(i))
        if <Py_ssize_t>parents[i] >= 0 and opts.dedup_json is not None:
            # a deduplicated child would be dropped from its parent, which then waits forever
            raise InvalidOptionError("deduplication and a parent cannot be used together", plan.path(i))
        if opts.job_id is not None and flow:  # add_bulk: a second add of an id is a duplicate
            key = queue_prefixes[qi] + opts.job_id
            if key in custom_keys:
                raise InvalidFlowError(f"job id {opts.job_id!r} is used twice in {qname!r}", plan.path(i))
            custom_keys.add(key)

        children = node.get("children") if flow else None
        if children is not None and not isinstance(children, (list, tuple)):
            raise InvalidFlowError(f"children must be a list, not {type(children).__name__}", plan.path(i))
        first_child.append(len(nodes))
        if not children:
            n_children.append(0)
        else:
            if <Py_ssize_t>depth_of[i] >= max_depth:
                raise InvalidFlowError(f"the tree is deeper than {max_depth} levels", plan.path(i))
            if opts.dedup_json is not None:
                raise InvalidFlowError("a node with children cannot use deduplication", plan.path(i))
            n_children.append(len(children))
            d = <Py_ssize_t>depth_of[i] + 1
            pi = i
            for child in children:
                nodes.append(child)
                parents.append(pi)
                depth_of.append(d)
        i += 1

    cdef Py_ssize_t n = len(nodes)
    cdef list ids = plan.ids
    n_generated = 0
    for i in range(n):
        if opts_of[i].job_id is None:
            n_generated += 1
    cdef bytes raw = random_bytes(16 * n_generated) if flow and n_generated else b""
    cdef const unsigned char* rp = <const unsigned char*>PyBytes_AS_STRING(raw)
    k = 0
    for i in range(n):
        job_id = opts_of[i].job_id
        if job_id is None:
            if flow:
                job_id = _uuid4(rp + 16 * k)
                k += 1
            else:
                job_id = ""
        ids.append(job_id)
    return plan


# -- encoding an add_jobs call ----------------------------------------------------------------

cdef bytes _json_str(str s):
    return _dumps(s)


def encode_add_call(plan, Py_ssize_t start, Py_ssize_t stop, bytes sha, str guard, str flags,
                    directives, long long now_ms):
    """One ``EVALSHA add_jobs`` call for nodes ``start .. stop - 1``, encoded as RESP."""
    cdef list strings = []
    cdef dict string_index = {}
    cdef _Resp records = _Resp(256 * (stop - start) + 1024)
    cdef list ids = plan.ids
    cdef list nodes = plan.nodes
    cdef list parents = plan.parents
    cdef list queue_of = plan.queue_of
    cdef list opts_of = plan.opts_of
    cdef list n_children = plan.n_children
    cdef list qprefixes = plan.queue_prefixes
    cdef object root_parent = plan.root_parent
    cdef Py_ssize_t i, p, oi, pi, size_limit_n
    cdef object node, opts, pid, pqueue, pkey, policy, body, data, data_json, ikey, kind, size_limit
    cdef bytes b

    for i in range(start, stop):
        node = nodes[i]
        opts = opts_of[i]
        p = parents[i]
        if p >= 0:
            pid = ids[p]
            pqueue = (<str>qprefixes[<Py_ssize_t>queue_of[p]])[:-1]
            pkey = f"{pqueue}:{pid}"
        elif root_parent is not None:
            pkey, pqueue = root_parent
            pid = pkey[len(pqueue) + 1 :]
        elif opts.parent_key is not None:
            pkey = opts.parent_key
            pqueue = opts.parent_queue_key
            pid = pkey[len(pqueue) + 1:]
        else:
            pkey = None

        if pkey is None:
            ikey = (id(opts), None)
            oi = string_index.get(ikey, 0)
            if oi == 0:
                strings.append(b"{" + opts.body + b"}")
                oi = len(strings)
                string_index[ikey] = oi
            pi = 0
        else:
            policy = opts.policy_flags_as_child
            ikey = ("parent", pkey, policy)
            pi = string_index.get(ikey, 0)
            if pi == 0:
                strings.append(pkey.encode())
                pi = len(strings)
                string_index[ikey] = pi
                strings.append(b'{"id":' + _json_str(pid) + b',"queueKey":' + _json_str(pqueue) + policy + b"}")
            ikey = (id(opts), pkey)
            oi = string_index.get(ikey, 0)
            if oi == 0:
                body = opts.body_as_child
                strings.append(
                    b'{"parent":{"id":' + _json_str(pid) + b',"queue":' + _json_str(pqueue) + b"}"
                    + (b"," + body if body else b"") + b"}"
                )
                oi = len(strings)
                string_index[ikey] = oi

        data = node.get("data")
        if data is None:
            data_json = b"{}"
        else:
            try:
                data_json = _encode_value(data)
            except TypeError as exc:
                raise DataNotSerializableError(f"job data is not JSON-serialisable: {exc}", plan.path(i)) from None
        size_limit = opts.size_limit
        if size_limit is not None and len(data_json) > size_limit:
            raise DataTooLargeError(
                f"job data is {len(data_json)} bytes, over the size limit of {size_limit}", plan.path(i)
            )

        if <Py_ssize_t>n_children[i]:
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
            ikey = ("dedup", id(opts))
            if ikey not in string_index:
                strings.append(opts.dedup_json)
                string_index[ikey] = len(strings)
            kind = f"{kind}:{string_index[ikey]}"

        records.integer(<long long>queue_of[i] + 1)
        records.text(ids[i])
        records.text(node["name"])
        records.bytes_(data_json)
        records.integer(oi)
        if opts.timestamp is None:
            records.chars("", 0)
        else:
            records.integer(opts.timestamp)
        records.integer(opts.delay)
        records.integer(opts.priority)
        records.text(kind)
        records.integer(pi)

    cdef _Resp head = _Resp(4096 + 64 * len(strings))
    cdef Py_ssize_t nargs = 8 + 3 * len(directives) + 1 + len(qprefixes) + 1 + len(strings) + records.count
    head.header(42, nargs)
    head.chars("EVALSHA", 7)
    head.bytes_(sha)
    head.chars("1", 1)
    head.text(qprefixes[<Py_ssize_t>queue_of[start]] + "meta")
    head.text(guard)
    head.text(flags)
    head.integer(now_ms)
    head.integer(len(directives))
    for dkind, a, bb in directives:
        head.text(dkind)
        head.text(a)
        head.text(bb)
    head.integer(len(qprefixes))
    for q in qprefixes:
        head.text(q)
    head.integer(len(strings))
    for b in strings:
        head.bytes_(b)
    head.raw(records.buf, records.size)
    return head.tobytes()


# -- decoding replies -------------------------------------------------------------------------

cdef object _int_value(object v, object default):
    """int(v) of a hash field's text (default when absent); plain decimal digits, the common
    case, are parsed here."""
    cdef bytes b
    cdef const char* p
    cdef Py_ssize_t n, i = 0
    cdef long long x = 0
    cdef bint negative = False
    if v is None:
        return default
    if type(v) is bytes:
        b = <bytes>v
        n = PyBytes_GET_SIZE(b)
        p = PyBytes_AS_STRING(b)
        if 0 < n <= 18:
            if p[0] == 45:  # '-'
                negative = True
                i = 1
            if i < n:
                while i < n and 48 <= p[i] <= 57:
                    x = x * 10 + (p[i] - 48)
                    i += 1
                if i == n:
                    return -x if negative else x
    try:
        return int(v)
    except ValueError:
        try:
            return int(float(v))
        except (ValueError, OverflowError):  # not a number, or inf / nan
            return default


cdef object _json_value(object v, object default):
    if v is None:
        return default
    try:
        return _loads_stored(v)
    except _JSONDecodeError:
        return default


cdef inline object _text_value(object v):
    return None if v is None else (<bytes>v).decode("utf-8", "replace")


# the fields decode_job_hash reads, by their place in its table of values
cdef dict _JOB_FIELDS = {
    name: i for i, name in enumerate((
        b"name", b"data", b"opts", b"timestamp", b"delay", b"priority", b"progress", b"attemptsMade",
        b"atm", b"ats", b"stc", b"processedOn", b"finishedOn", b"returnvalue", b"failedReason",
        b"stacktrace", b"parentKey", b"parent", b"defa", b"pb", b"rjk", b"deid",
    ))
}
cdef Py_ssize_t _JOB_FIELD_COUNT = len(_JOB_FIELDS)


def decode_job_hash(job, raw):
    """Set a job's attributes from the fields of its hash; see ``_core_py.decode_job_hash``.

    One pass over the fields the hash holds (a job's hash holds a third of those read here),
    so that a worker's fetch of many jobs does not pay a lookup per absent field."""
    cdef list f = [None] * _JOB_FIELD_COUNT
    cdef list flat
    cdef Py_ssize_t i, n
    cdef object at
    if type(raw) is list:
        flat = <list>raw
        n = len(flat) - 1
        for i in range(0, n, 2):
            at = _JOB_FIELDS.get(flat[i])
            if at is not None:
                f[<Py_ssize_t>at] = flat[i + 1]
    else:
        if not isinstance(raw, Mapping):
            raw = dict(zip(raw[::2], raw[1::2]))
        for k, v in raw.items():
            at = _JOB_FIELDS.get(k)
            if at is not None:
                f[<Py_ssize_t>at] = v
    (name, data, opts, timestamp, delay, priority, progress, attempts_made, atm, ats, stc, processed_on,
     finished_on, returnvalue, failed_reason, stacktrace, parent_key, parent, defa, pb, rjk, deid) = f
    job.name = _text_value(name) or ""
    decode_error = None
    job._raw_data = data
    if data is None:
        job.data = {}
    else:
        try:
            job.data = _loads_stored(data)
        except _JSONDecodeError as exc:
            job.data = None
            decode_error = f"job data is not valid JSON: {exc}"
    cdef dict decoded = {}
    if opts is not None:
        try:
            opts = _loads_stored(opts)
            if not isinstance(opts, dict):
                raise ValueError
            for k, o in (<dict>opts).items():
                decoded[_STORED_TO_API.get(k, k)] = o
            if "tm" in decoded or "omc" in decoded:
                nest_telemetry(decoded)
        except ValueError:
            decoded = {}
            decode_error = decode_error or "job opts are not a JSON object"
    job.decode_error = decode_error
    job.opts = decoded
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


cdef list _flat_pairs(raw):
    """The fields and values of a hash as read: HGETALL's flat list, or a mapping."""
    if type(raw) is list:
        return <list>raw
    cdef list flat = []
    for k, v in raw.items():
        flat.append(k)
        flat.append(v)
    return flat


def decode_json_values(raw):
    """``{child key: JSON text}`` (a ``:processed`` hash, as HGETALL's flat list or a mapping)
    -> ``{child key: value}``; a value that is not JSON is given as text."""
    cdef list flat = _flat_pairs(raw)
    cdef dict out = {}
    cdef Py_ssize_t i, n = len(flat) - 1
    for i in range(0, n, 2):
        v = flat[i + 1]
        try:
            out[(<bytes>flat[i]).decode()] = _loads_stored(v)
        except _JSONDecodeError:
            out[(<bytes>flat[i]).decode()] = (<bytes>v).decode("utf-8", "replace")
    return out


def decode_str_values(raw):
    cdef list flat = _flat_pairs(raw)
    cdef dict out = {}
    cdef Py_ssize_t i, n = len(flat) - 1
    for i in range(0, n, 2):
        out[(<bytes>flat[i]).decode()] = (<bytes>flat[i + 1]).decode("utf-8", "replace")
    return out


# -- the jobs a fetch took: MessagePack, as a script's cmsgpack.pack writes arrays of strings --

# cmsgpack writes nil below 16 levels, so a deeper array is not a script's reply; the limit
# also bounds the recursion
cdef Py_ssize_t _MAX_NESTING = 16


cdef int _be_length(const unsigned char* p, Py_ssize_t size, Py_ssize_t* pos, int width,
                    unsigned long long* length) except -1:
    # unsigned and 64 bits wide: a 4-byte length fits whatever Py_ssize_t is
    cdef unsigned long long v = 0
    cdef int k
    if pos[0] + width > size:
        raise ValueError("MessagePack reply ends inside a length")
    for k in range(width):
        v = (v << 8) | p[pos[0] + k]
    pos[0] += width
    length[0] = v
    return 0


cdef object _unpack_value(const unsigned char* p, Py_ssize_t size, Py_ssize_t* pos, int depth):
    cdef unsigned char t
    cdef unsigned long long n
    cdef Py_ssize_t k
    cdef list items
    cdef object s
    if pos[0] >= size:
        raise ValueError("MessagePack reply ends before its last value")
    t = p[pos[0]]
    pos[0] += 1
    if 0xa0 <= t <= 0xbf:
        n = t & 0x1f
    elif t == 0xd9 or t == 0xc4:
        _be_length(p, size, pos, 1, &n)
    elif t == 0xda or t == 0xc5:
        _be_length(p, size, pos, 2, &n)
    elif t == 0xdb or t == 0xc6:
        _be_length(p, size, pos, 4, &n)
    else:
        if 0x90 <= t <= 0x9f:
            n = t & 0x0f
        elif t == 0xdc:
            _be_length(p, size, pos, 2, &n)
        elif t == 0xdd:
            _be_length(p, size, pos, 4, &n)
        else:
            raise ValueError(f"MessagePack type 0x{t:02x} where an array or a string was expected")
        if depth >= _MAX_NESTING:
            raise ValueError("MessagePack arrays nested too deep")
        if n > <unsigned long long>(size - pos[0]):  # every element takes a byte at least
            raise ValueError("MessagePack array longer than the reply")
        items = [None] * <Py_ssize_t>n
        for k in range(<Py_ssize_t>n):
            items[k] = _unpack_value(p, size, pos, depth + 1)
        return items
    if n > <unsigned long long>(size - pos[0]):
        raise ValueError("MessagePack string longer than the reply")
    s = PyBytes_FromStringAndSize(<const char*>p + pos[0], <Py_ssize_t>n)
    pos[0] += <Py_ssize_t>n
    return s


def unpack_string_arrays(bytes blob not None):
    """A MessagePack value made of arrays and strings (str or bin) only, what Redis's
    ``cmsgpack.pack`` writes for a Lua table of strings -> nested lists of bytes. A fetch
    returns the jobs it took as one such value (``[id, [field, value, ...], id, ...]``): Redis
    converts a script's reply element by element, and one string costs it less than a table
    of them."""
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(blob)
    cdef Py_ssize_t size = PyBytes_GET_SIZE(blob), pos = 0
    value = _unpack_value(p, size, &pos, 0)
    if pos != size:
        raise ValueError(f"{size - pos} bytes after the MessagePack value")
    return value
