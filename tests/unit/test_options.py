"""Job options: names, encoding, validation, and the child-failure policy default."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bullfast.errors import InvalidJobIdError, InvalidOptionError
from bullfast.options import merge_options, normalize_defaults, normalize_options


def body(opts: dict, child: bool = False) -> dict:
    o = normalize_options(opts)
    return json.loads(b"{" + (o.body_as_child if child else o.body) + b"}")


def test_snake_and_camel_names_encode_to_bullmq_keys() -> None:
    snake = body({"remove_on_complete": True, "keep_logs": 3, "stacktrace_limit": 2, "ignore_dependency_on_failure": True})
    camel = body({"removeOnComplete": True, "keepLogs": 3, "stackTraceLimit": 2, "ignoreDependencyOnFailure": True})
    assert snake == camel == {"attempts": 0, "removeOnComplete": True, "kl": 3, "stackTraceLimit": 2, "idof": True}


def test_retention_age_keeps_its_fraction() -> None:
    """BullMQ keeps a job {age: 0.9} for 0.9 s; cut to 0 it was removed as it finished."""
    from bullfast._finish import keep_spec

    assert body({"remove_on_complete": {"age": 0.9, "count": 5}})["removeOnComplete"] == {"age": 0.9, "count": 5}
    assert body({"remove_on_fail": {"age": 60.0}})["removeOnFail"] == {"age": 60}
    assert keep_spec({"age": 0.9}) == "-1|0.9|"
    assert keep_spec({"age": 60.0, "count": 3, "limit": 10}) == "3|60|10"
    assert keep_spec(None, {"age": 1.5}) == "-1|1.5|"  # a worker's fallback


def test_backoff_number_becomes_fixed() -> None:
    assert body({"backoff": 500})["backoff"] == {"type": "fixed", "delay": 500}


def test_none_values_vanish_and_defaults_merge() -> None:
    o = normalize_options({"priority": None, "delay": 5}, {"attempts": 3, "delay": 1})
    assert json.loads(b"{" + o.body + b"}") == {"attempts": 3, "delay": 5}
    assert o.delay == 5 and o.priority == 0


def test_a_jobs_none_unsets_a_queue_default() -> None:
    """As BullMQ's {...defaultJobOptions, ...opts}: removeOnComplete null over a default of
    true leaves the job without it."""
    o = normalize_options({"removeOnComplete": None, "delay": 5}, {"remove_on_complete": True, "attempts": 2})
    assert json.loads(b"{" + o.body + b"}") == {"attempts": 2, "delay": 5}
    # a None spelling beside a valued one of the same option is no conflict: the value wins
    o = normalize_options({"removeOnComplete": None, "remove_on_complete": 3}, {"remove_on_complete": True})
    assert json.loads(b"{" + o.body + b"}")["removeOnComplete"] == 3
    assert merge_options({"priority": None}, {"priority": 2}) == {"priority": 2}
    assert merge_options({"priority": None}, {}) == {"priority": None}


def test_child_defaults_to_fail_parent_on_failure() -> None:
    assert body({}, child=True) == {"attempts": 0, "fpof": True}
    assert normalize_options({}).policy_flags_as_child == b',"fpof":true'
    # any explicit choice, even False, is respected
    o = normalize_options({"fail_parent_on_failure": False})
    assert o.policy_flags_as_child == b"" and body({"fail_parent_on_failure": False}, child=True)["fpof"] is False
    o = normalize_options({"continue_parent_on_failure": True})
    assert o.policy_flags_as_child == b',"cpof":true'


def test_policies_are_mutually_exclusive() -> None:
    with pytest.raises(InvalidOptionError, match="mutually exclusive"):
        normalize_options({"fail_parent_on_failure": True, "remove_dependency_on_failure": True})


@pytest.mark.parametrize(
    "opts, match",
    [
        ({"prority": 1}, "unknown job option 'prority'"),
        ({"priority": 1.5}, "whole number"),
        ({"priority": 2**21}, "<= 2097151"),
        ({"priority": True}, "must be a number"),
        ({"delay": -1}, ">= 0"),
        ({"attempts": "3"}, "must be a number"),
        ({"attempts": 10**30}, "2\\*\\*53"),
        ({"delay": 2**53}, "2\\*\\*53"),
        ({"backoff": {"type": "fixed", "delay": 2**64}}, "2\\*\\*53"),
        ({"removeOnComplete": {"count": -(2**60)}}, "2\\*\\*53"),
        ({"lifo": 1}, "True or False"),
        ({"backoff": {"delay": 5}}, "needs a 'type'"),
        ({"backoff": {"type": "fixed", "jitter": 2}}, "jitter"),
        ({"removeOnComplete": "yes"}, "bool, a count"),
        ({"removeOnFail": {"cnt": 1}}, "unknown key"),
        ({"removeOnFail": {"age": -0.5}}, "seconds >= 0"),
        ({"removeOnFail": {"age": float("nan")}}, "number of seconds"),
        ({"removeOnFail": {"age": 1e20}}, "2\\*\\*53"),
        ({"removeOnFail": {"age": 10**400}}, "2\\*\\*53"),
        ({"removeOnComplete": {"age": True}}, "seconds >= 0"),
        ({"deduplication": {"ttl": 5}}, "needs an 'id'"),
        ({"deduplication": {"id": "cut \ud83d"}}, "not valid text"),
        ({"debounce": {"id": "x"}}, "obsolete"),
        ({"repeat": {"every": 10}}, "not supported"),
        ({"parent": {"id": "p", "queue": "A"}}, "qualified name"),
        ("nope", "must be a mapping"),
    ],
)
def test_bad_options_raise_typed_errors(opts: object, match: str) -> None:
    with pytest.raises(InvalidOptionError, match=match):
        normalize_options(opts)  # type: ignore[arg-type]


@pytest.mark.parametrize("job_id", ["123", "0", "-4", "a:b", "", 12, "9007199254740992", "100000000000000000000"])
def test_bad_job_ids(job_id: object) -> None:
    with pytest.raises(InvalidJobIdError):
        normalize_options({"job_id": job_id})


def test_odd_but_valid_job_ids() -> None:
    # (the last four: Node's `${parseInt(id, 10)}` prints them otherwise, so BullMQ takes them)
    for job_id in ("0123", "1.5", "a b", "ü/é", "x" * 300, "-0", "12345678901234567168", "9007199254740993",
                   "1000000000000000000000"):
        assert normalize_options({"jobId": job_id}).job_id == job_id


def test_queue_defaults_cannot_hold_per_job_options() -> None:
    with pytest.raises(InvalidOptionError, match="job_id"):
        normalize_defaults({"jobId": "x"})


@pytest.mark.parametrize(
    ("opts", "names"),
    [
        ({"jobId": "a", "job_id": "b"}, ("jobId", "job_id")),
        ({"remove_on_complete": True, "removeOnComplete": 5}, ("remove_on_complete", "removeOnComplete")),
        ({"keepLogs": 3, "kl": 4}, ("keepLogs", "kl")),
        ({"fail_parent_on_failure": True, "failParentOnFailure": False}, ("fail_parent_on_failure", "failParentOnFailure")),
    ],
)
def test_one_option_under_two_names_with_different_values_is_refused(opts: dict, names: tuple[str, str]) -> None:
    with pytest.raises(InvalidOptionError) as info:
        normalize_options(opts)
    assert names[0] in str(info.value) and names[1] in str(info.value)


def test_one_option_under_two_names_with_the_same_value_is_fine() -> None:
    o = normalize_options({"jobId": "a", "job_id": "a", "priority": 2, "delay": None, "keep_logs": 1, "keepLogs": 1})
    assert o.job_id == "a" and o.priority == 2 and body({"keep_logs": 1, "keepLogs": 1})["kl"] == 1
    # None means "not given", as it does alone
    assert normalize_options({"jobId": None, "job_id": "b"}).job_id == "b"


def test_nested_spellings_of_one_key_must_agree() -> None:
    with pytest.raises(InvalidOptionError, match="keepLastIfActive"):
        normalize_options({"deduplication": {"id": "d", "keep_last_if_active": True, "keepLastIfActive": False}})
    with pytest.raises(InvalidOptionError, match="queueKey"):
        normalize_options({"parent": {"id": "p", "queue": "bull:a", "queueKey": "bull:b"}})
    assert normalize_options({"parent": {"id": "p", "queue": "bull:a", "queueKey": "bull:a"}}).parent_key == "bull:a:p"


def test_opts_and_keywords_naming_one_option_must_agree() -> None:
    from bullfast.options import merge_options

    with pytest.raises(InvalidOptionError, match="job_id"):
        merge_options({"jobId": "a"}, {"job_id": "b"})
    with pytest.raises(InvalidOptionError, match="priority"):
        merge_options({"priority": 1}, {"priority": 2})
    assert merge_options({"jobId": "a"}, {"job_id": "a", "delay": 5}) == {"job_id": "a", "delay": 5}


def test_repeat_is_not_supported_and_says_so() -> None:
    """Refused as the job schedulers' methods are (NotSupportedError), and still an
    InvalidOptionError: nothing is written."""
    from bullfast import NotSupportedError

    for name in ("repeat", "repeatJobKey"):
        with pytest.raises(NotSupportedError, match="job schedulers") as info:
            normalize_options({name: {"every": 1000}}, {})
        assert isinstance(info.value, InvalidOptionError)


@pytest.mark.parametrize("size", [0, -1, 2.5, True, "10"])
def test_size_settings_are_refused_unless_whole_and_positive(size: Any) -> None:
    """chunk_size 0 was a bare ValueError deep inside an add (-1 an IndexError), and a worker
    with batch_size 0 waited forever without taking a job."""
    from bullfast import FlowProducer, Queue, Worker

    for make in (
        lambda: Queue("sizes", chunk_size=size),
        lambda: FlowProducer(chunk_size=size),
        lambda: Worker("sizes", None, batch_size=size, autorun=False),
    ):
        with pytest.raises(InvalidOptionError, match="must be an integer >= 1"):
            make()
