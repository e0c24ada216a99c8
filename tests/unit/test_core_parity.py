"""The compiled core and its pure-Python twin give the same results, byte for byte."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bullfast import _core_py, core
from bullfast.errors import InvalidInputError
from bullfast.options import normalize_options

pytestmark = pytest.mark.skipif(not core.IS_COMPILED, reason="compiled core not built")


def _rng(seed: int) -> Any:
    r = random.Random(seed)
    return lambda n: bytes(r.getrandbits(8) for _ in range(n))


def _plan(impl: Any, roots: Any, flow: bool = True, queue: str | None = None, defaults: Any = None) -> Any:
    return impl.plan_jobs(roots, "bull", queue, defaults or {}, normalize_options, _rng(7), 200, flow)


def _both(roots: Any, flow: bool = True, queue: str | None = None, defaults: Any = None) -> tuple[Any, Any]:
    from bullfast import _core  # type: ignore[attr-defined]

    return _plan(_core, roots, flow, queue, defaults), _plan(_core_py, roots, flow, queue, defaults)


def _same_plan(a: Any, b: Any) -> None:
    for name in ("ids", "parents", "queue_of", "first_child", "n_children", "prefixes", "queue_names",
                 "queue_prefixes", "roots", "checks", "auto_ids", "root_label"):
        assert getattr(a, name) == getattr(b, name), name
    assert [o.body for o in a.opts_of] == [o.body for o in b.opts_of]


def _same_calls(a: Any, b: Any, size: int = 3) -> None:
    from bullfast import _core  # type: ignore[attr-defined]

    n = len(a)
    directives = [("E", "bull:X:p", ""), ("N", "bull:A:x", "")]
    for start in range(0, n, size):
        stop = min(start + size, n)
        x = _core.encode_add_call(a, start, stop, b"f" * 40, "g", "RG", directives, 1700000000000)
        y = _core_py.encode_add_call(b, start, stop, b"f" * 40, "g", "RG", directives, 1700000000000)
        assert x == y


FLOW = {
    "name": "root",
    "queue_name": "A",
    "data": {"x": 1, "é": "ü"},
    "opts": {"priority": 3, "parent": {"id": "ext", "queue": "bull:X"}},
    "children": [
        {"name": "c1", "queue_name": "B", "data": [1, 2.5, None], "opts": {"delay": 100}},
        {"name": "c2", "queueName": "B", "prefix": "{other}", "opts": {"jobId": "custom", "lifo": True,
         "ignoreDependencyOnFailure": True},
         "children": [{"name": "g", "queue_name": "C", "data": "s",
                       "opts": {"attempts": 3, "backoff": {"type": "exponential", "delay": 10}}}]},
        {"name": "c3", "queue_name": "B", "opts": {"fail_parent_on_failure": False, "timestamp": 5}},
    ],
}


def test_plan_and_encoding_match_on_a_mixed_flow() -> None:
    a, b = _both([FLOW])
    _same_plan(a, b)
    _same_calls(a, b, 1)
    _same_calls(a, b, 4)


def test_plain_jobs_match() -> None:
    jobs = [{"name": "j", "data": {"i": i}, "opts": {"priority": i % 3}} for i in range(20)]
    jobs += [{"name": "d", "data": None, "opts": {"deduplication": {"id": "d", "ttl": 100}}}]
    a, b = _both(jobs, flow=False, queue="Q", defaults={"Q": {"attempts": 2}})
    _same_plan(a, b)
    _same_calls(a, b, 7)


def test_pack_command_matches() -> None:
    from bullfast import _core  # type: ignore[attr-defined]

    args = [b"SET", b"k\r\n", b"", "é".encode()]
    assert _core.pack_command(args) == _core_py.pack_command(args) == b"*4\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$0\r\n\r\n$2\r\n\xc3\xa9\r\n"


def test_uuid_ids_are_version_4() -> None:
    import uuid

    a, _ = _both([FLOW])
    for job_id in a.ids:
        if job_id != "custom":
            u = uuid.UUID(job_id)
            assert u.version == 4 and str(u) == job_id


class _J:
    pass


@pytest.mark.parametrize(
    "raw",
    [
        {},
        {b"name": b"n", b"data": b'{"a":1}', b"timestamp": b"12", b"atm": b"2", b"ats": b"3", b"progress": b"50",
         b"returnvalue": b'{"r":[1]}', b"parent": b'{"id":"x","queueKey":"bull:A"}', b"parentKey": b"bull:A:x",
         b"stacktrace": b'["a","b"]', b"failedReason": b"boom", b"defa": b"child failed", b"pb": b"w"},
        {b"data": b"{not json", b"opts": b"[1]", b"attemptsMade": b"4", b"atm": b"1", b"stacktrace": b'"x"',
         b"returnvalue": b"nope", b"delay": b"1.5"},
        {b"ats": b"inf", b"processedOn": b"1e400", b"atm": b"nan", b"timestamp": b"-inf"},  # no OverflowError
        # numbers the compiled core parses itself, and those it leaves to int()
        {b"timestamp": b"-5", b"delay": b" 7 ", b"priority": b"1_0", b"atm": b"007", b"ats": b"+3",
         b"stc": b"1234567890123456789012", b"processedOn": b"-", b"finishedOn": b"", b"progress": b"999999999999999999"},
        {b"timestamp": b"-999999999999999999", b"delay": b"--1", b"priority": b"1-", b"ats": b"\xd9\xa3"},
    ],
)
def test_decode_job_hash_matches(raw: dict[bytes, bytes]) -> None:
    from bullfast import _core  # type: ignore[attr-defined]

    a, b = _J(), _J()
    _core.decode_job_hash(a, raw)
    _core_py.decode_job_hash(b, raw)
    assert vars(a) == vars(b)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([b"timestamp", b"delay", b"priority", b"atm", b"ats", b"stc",
                                        b"processedOn", b"finishedOn", b"attemptsMade"]),
                       st.binary(max_size=22) | st.integers(-(10**20), 10**20).map(lambda i: str(i).encode()),
                       max_size=9))
def test_decode_job_hash_numbers_match(raw: dict[bytes, bytes]) -> None:
    from bullfast import _core  # type: ignore[attr-defined]

    a, b = _J(), _J()
    _core.decode_job_hash(a, raw)
    _core_py.decode_job_hash(b, raw)
    assert vars(a) == vars(b)


def test_decode_job_hash_keeps_the_last_of_a_repeated_field() -> None:
    """A field named twice keeps its last value (as a hash written in two steps would)."""
    from bullfast import _core  # type: ignore[attr-defined]

    flat = [b"name", b"n", b"ats", b"1", b"processedOn", b"5", b"processedOn", b"9", b"ats", b"2", b"pb", b"w"]
    for impl in (_core, _core_py):
        job = _J()
        impl.decode_job_hash(job, flat)
        assert (job.attempts_started, job.processed_on, job.processed_by) == (2, 9, "w"), impl


def test_decode_values_match() -> None:
    from bullfast import _core  # type: ignore[attr-defined]

    raw = {b"bull:B:1": b'{"n":1}', b"bull:B:2": b"not json", b"bull:B:3": b"null", b"bull:B:\xc3\xa9": b"\xff"}
    flat = [part for pair in raw.items() for part in pair]  # HGETALL as our own parser reads it
    expected = {"bull:B:1": {"n": 1}, "bull:B:2": "not json", "bull:B:3": None, "bull:B:\u00e9": "\ufffd"}
    for read in (raw, flat):
        assert _core.decode_json_values(read) == _core_py.decode_json_values(read) == expected
        assert _core.decode_str_values(read) == _core_py.decode_str_values(read)
    assert _core_py.decode_str_values(flat)["bull:B:1"] == '{"n":1}'
    assert _core.decode_json_values([]) == _core_py.decode_json_values([]) == {}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
option_sets = st.fixed_dictionaries(
    {},
    optional={
        "priority": st.integers(0, 2**21 - 1),
        "delay": st.integers(0, 10**6),
        "lifo": st.booleans(),
        "attempts": st.integers(0, 10),
        "jobId": st.text("abcdef-_é", min_size=1, max_size=6).filter(lambda s: not s.isdigit()),
        "removeOnComplete": st.booleans() | st.integers(0, 5),
        "ignore_dependency_on_failure": st.booleans(),
    },
)


@st.composite
def trees(draw: Any, depth: int = 0) -> dict[str, Any]:
    node: dict[str, Any] = {
        "name": draw(st.text(max_size=6)),
        "queue_name": draw(st.sampled_from(["A", "B", "ü"])),
        "data": draw(json_values),
    }
    if draw(st.booleans()):
        node["opts"] = draw(option_sets)
    if depth < 3 and draw(st.booleans()):
        node["children"] = draw(st.lists(trees(depth + 1), max_size=3))
    return node


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(trees(), min_size=1, max_size=3))
def test_random_trees_match(roots: list[dict[str, Any]]) -> None:
    from bullfast import _core  # type: ignore[attr-defined]

    errors: list[Any] = []
    plans = []
    for impl in (_core, _core_py):
        try:
            plans.append(_plan(impl, roots))
            errors.append(None)
        except InvalidInputError as exc:
            errors.append((type(exc), str(exc)))
    if errors[0] or errors[1]:
        assert errors[0] == errors[1]
        return
    a, b = plans
    _same_plan(a, b)
    _same_calls(a, b, 2)


@given(st.lists(st.one_of(
    st.binary(max_size=40),
    st.text(max_size=40),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
), min_size=1, max_size=30))
@settings(max_examples=300, deadline=None)
def test_pack_command_encodes_arguments_as_redis_py_does(args: list[Any]) -> None:
    from redis.asyncio.connection import Connection

    from bullfast import _core  # type: ignore[attr-defined]

    expected = b"".join(Connection().pack_command(b"EVALSHA", *args))
    assert _core.pack_command([b"EVALSHA", *args]) == expected
    assert _core_py.pack_command([b"EVALSHA", *args]) == expected


@pytest.mark.parametrize("bad", [True, None, object(), [1]])
def test_pack_command_refuses_other_types(bad: Any) -> None:
    from bullfast import _core  # type: ignore[attr-defined]

    for impl in (_core, _core_py):
        with pytest.raises(TypeError, match="bytes, str, int or float"):
            impl.pack_command([b"SET", bad])


# -- the MessagePack a fetch replies with (arrays and strings, as Redis's cmsgpack.pack writes)

def _msgpack(value: Any, wide: bool = False) -> bytes:
    """Test oracle: strings and arrays as MessagePack; ``wide`` uses the longest headers
    (str 32 / bin 32 / array 32), which an encoder may always choose."""
    if isinstance(value, bytes):
        n = len(value)
        if wide:
            return b"\xdb" + n.to_bytes(4, "big") + value
        if n < 32:
            return bytes([0xA0 | n]) + value
        for tag, width in ((0xD9, 1), (0xDA, 2), (0xDB, 4)):
            if n < 1 << (8 * width):
                return bytes([tag]) + n.to_bytes(width, "big") + value
    n = len(value)
    if wide:
        head = b"\xdd" + n.to_bytes(4, "big")
    elif n < 16:
        head = bytes([0x90 | n])
    else:
        head = (b"\xdc" + n.to_bytes(2, "big")) if n < 1 << 16 else (b"\xdd" + n.to_bytes(4, "big"))
    return head + b"".join(_msgpack(v, wide) for v in value)


def _unpack_both(blob: bytes) -> Any:
    from bullfast import _core  # type: ignore[attr-defined]

    outcomes = []
    for impl in (_core, _core_py):
        try:
            outcomes.append(("value", impl.unpack_string_arrays(blob)))
        except ValueError as exc:
            outcomes.append(("error", str(exc)))
    assert outcomes[0] == outcomes[1]
    return outcomes[0]


_nested_strings = st.recursive(st.binary(max_size=300), lambda inner: st.lists(inner, max_size=20), max_leaves=60)


@settings(max_examples=300, deadline=None)
@given(st.lists(_nested_strings, max_size=20), st.booleans())
def test_unpack_string_arrays_matches_and_round_trips(value: list[Any], wide: bool) -> None:
    assert _unpack_both(_msgpack(value, wide)) == ("value", value)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_unpack_string_arrays_agrees_on_any_bytes(blob: bytes) -> None:
    _unpack_both(blob)  # the same value, or the same error


def test_unpack_string_arrays_reads_every_header_width() -> None:
    fetched = [b"7", [b"name", b"map", b"data", b'{"k":7}'], b"8", [b"name", b"x" * 70_000]]
    assert _unpack_both(_msgpack(fetched)) == ("value", fetched)
    assert _unpack_both(b"\xc4\x02ab") == ("value", b"ab")  # bin 8, 16, 32 read as strings too
    assert _unpack_both(b"\xc5\x00\x01a") == ("value", b"a")
    assert _unpack_both(b"\xc6\x00\x00\x00\x00") == ("value", b"")
    assert _unpack_both(b"\x90") == ("value", [])
    many = [str(k).encode() for k in range(70_000)]
    assert _unpack_both(_msgpack(many)) == ("value", many)


@pytest.mark.parametrize("not_bytes", [None, bytearray(b"\x90"), memoryview(b"\x90"), "\x90"])
def test_unpack_string_arrays_takes_bytes_only(not_bytes: Any) -> None:
    from bullfast import _core  # type: ignore[attr-defined]

    for impl in (_core, _core_py):
        with pytest.raises(TypeError):
            impl.unpack_string_arrays(not_bytes)


@pytest.mark.parametrize(
    ("blob", "says"),
    [
        (b"", "ends before"),
        (b"\x92\xa1a", "ends before"),
        (b"\xa3ab", "string longer"),
        (b"\xda\x00", "inside a length"),
        (b"\xdd\xff\xff\xff\xff", "array longer"),
        (b"\xa1a\xa1b", "2 bytes after"),
        (b"\x01", "type 0x01"),
        (b"\xc0", "type 0xc0"),  # nil: a fetch never packs one
        (b"\x91" * 17 + b"\xa0", "nested too deep"),
    ],
)
def test_unpack_string_arrays_refuses_what_a_fetch_never_writes(blob: bytes, says: str) -> None:
    kind, message = _unpack_both(blob)
    assert kind == "error" and says in message


_json_keys = st.one_of(st.text(max_size=5), st.integers(-(2**63), 2**63 - 1), st.booleans(), st.none(),
                       st.floats(allow_nan=False, allow_infinity=False))
_json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=8)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_json_keys, inner, max_size=4),
    max_leaves=12,
)


@given(_json_values)
def test_encode_value_matches_and_writes_keys_as_pythons_json_does(value: Any) -> None:
    import json

    from bullfast import _core  # type: ignore[attr-defined]

    encoded = _core.encode_value(value)
    assert encoded == _core_py.encode_value(value)
    # non-string keys become the strings json.dumps makes of them (floats aside: orjson and
    # json spell some differently, e.g. 1e+16 / 1e16), and the text is JSON
    assert json.loads(encoded) == json.loads(json.dumps(value)) or _has_float_key(value)


def _has_float_key(value: Any) -> bool:
    if isinstance(value, dict):
        return any(isinstance(k, float) or _has_float_key(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_float_key(v) for v in value)
    return False


@pytest.mark.parametrize("bad", [{1, 2}, {"big": 2**64}, {(1, 2): "tuple key"}, object()])
def test_encode_value_refuses_what_json_cannot_hold(bad: Any) -> None:
    from bullfast import _core  # type: ignore[attr-defined]

    for impl in (_core, _core_py):
        with pytest.raises(TypeError):
            impl.encode_value(bad)


# JSON.stringify of a string cut inside an emoji ("ok 😀".slice(0, 4)): an escaped lone surrogate
_CUT = b'{"t":"ok \\ud83d","u":"\\udE00 \xc3\xa9"}'


def test_json_with_lone_surrogates_reads_and_writes_as_javascripts() -> None:
    """orjson refuses lone surrogates both ways; JSON.parse / JSON.stringify take them (a job a
    Node producer wrote failed unread, and its text could not be returned)."""
    from bullfast import _core  # type: ignore[attr-defined]

    value = {"t": "ok \ud83d", "u": "\ude00 é"}
    for impl in (_core, _core_py):
        job = _J()
        impl.decode_job_hash(job, {b"name": b"n", b"data": _CUT, b"returnvalue": b'"\\ud83d"',
                                   b"opts": b'{"jobId":"x\\ud83d"}'})
        assert (job.data, job.returnvalue, job.opts["jobId"], job.decode_error) == (value, "\ud83d", "x\ud83d", None)
        assert impl.decode_json_values({b"k": _CUT, b"bad": b"NaN", b"cut": b'"\\ud83d'}) == {
            "k": value, "bad": "NaN", "cut": '"\\ud83d'}
        written = impl.encode_value([value, 1.5, {2: None}])
        assert written == b'[{"t":"ok \\ud83d","u":"\\ude00 \\u00e9"},1.5,{"2":null}]'
        # still refused: what JSON cannot hold, with a lone surrogate or without
        for bad in ({"t": "\ud83d", "s": {1}}, {"big": 2**64}):
            with pytest.raises(TypeError):
                impl.encode_value(bad)
    for not_json in (b"NaN", b'{"a": Infinity}', b'{"a":'):
        job = _J()
        _core.decode_job_hash(job, {b"data": not_json})
        assert job.data is None and job.decode_error.startswith("job data is not valid JSON")
        job2 = _J()
        _core_py.decode_job_hash(job2, {b"data": not_json})
        assert job2.decode_error == job.decode_error


def test_what_javascript_refuses_or_reads_otherwise_is_not_taken_by_the_fallback() -> None:
    """The fallback reader (orjson refused) reads as Node does: invalid UTF-8 as U+FFFD; a BOM,
    other encodings, NaN and nesting deeper than it reads are refused (a RecursionError got
    past every caller: a worker's batch was left active, a QueueEvents reader died)."""
    from bullfast import _core  # type: ignore[attr-defined]
    from bullfast.events import decode_entry

    deep = b"[" * 1100 + b"]" * 1100
    for impl in (_core, _core_py):
        for data, expected in ((b'{"a":"\xff"}', {"a": "\ufffd"}), (b'"\xed\xa0\xbd"', "\ufffd" * 3)):
            job = _J()
            impl.decode_job_hash(job, {b"data": data})
            assert (job.data, job.decode_error) == (expected, None)
        for refused in (b"\xef\xbb\xbf{}", "{}".encode("utf-16"), "{}".encode("utf-32"), deep):
            job = _J()
            impl.decode_job_hash(job, {b"data": refused, b"returnvalue": refused})
            assert job.data is None and job.decode_error.startswith("job data is not valid JSON")
            assert job.returnvalue is None
        assert impl.decode_json_values({b"k": deep})["k"] == deep.decode()
    event = decode_entry(b"1-0", {b"event": b"completed", b"jobId": b"1", b"returnvalue": deep})
    assert event.args["returnvalue"] == deep.decode()


def test_written_text_with_lone_surrogates_is_what_javascript_writes() -> None:
    """Command arguments: as ioredis writes a JS string (U+FFFD for a lone surrogate, a pair
    joined); JSON values: escaped, everything else as orjson writes it."""
    import datetime

    from bullfast import _core  # type: ignore[attr-defined]

    for impl in (_core, _core_py):
        assert impl.pack_command(["x\ud83d", "a\ud83d\ude00b", b"\xff"]) == (
            b"*3\r\n$4\r\nx\xef\xbf\xbd\r\n$6\r\na\xf0\x9f\x98\x80b\r\n$1\r\n\xff\r\n")
        value = {"t": "\ud83d", "nan": float("nan"), "when": datetime.date(2024, 1, 2), 1: [1.5, None, True]}
        assert impl.encode_value(value) == b'{"t":"\\ud83d","nan":null,"when":"2024-01-02","1":[1.5,null,true]}'
        for bad in ({"t": "\ud83d", "big": 2**64}, {"t": "\ud83d", "s": {1}}, ["\ud83d", b"bytes"]):
            with pytest.raises(TypeError):
                impl.encode_value(bad)
