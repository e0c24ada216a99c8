"""Malformed trees raise typed errors that say where (the node's path)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from bullfast import _core_py, core
from bullfast.errors import (
    DataNotSerializableError,
    DataTooLargeError,
    InvalidFlowError,
    InvalidInputError,
    InvalidOptionError,
    InvalidQueueNameError,
)
from bullfast.options import normalize_options

IMPLS = [_core_py] + ([core] if core.IS_COMPILED else [])


def plan(impl: Any, roots: Any, max_depth: int = 100) -> Any:
    return impl.plan_jobs(roots, "bull", None, {}, normalize_options, os.urandom, max_depth, True)


def leaf(name: str = "c", queue: str = "B", **extra: Any) -> dict[str, Any]:
    return {"name": name, "queue_name": queue, **extra}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    "root, error, path, match",
    [
        ({"queue_name": "A"}, InvalidFlowError, "root", "name must be a string"),
        ({"name": "p"}, InvalidFlowError, "root", "queue name"),
        (leaf(queue="a:b"), InvalidFlowError, "root", "must not contain ':'"),
        (leaf(children="x"), InvalidFlowError, "root", "children must be a list"),
        (leaf(children=[leaf(), leaf(queue_name=None)]), InvalidFlowError, "root.children[1]", "queue name"),
        (leaf(children=[leaf(children=[5])]), InvalidFlowError, "root.children[0].children[0]", "must be a mapping"),
        (leaf(chidren=[]), InvalidFlowError, "root", "unknown key 'chidren'"),
        (leaf(children=[leaf(opts={"priorty": 1})]), InvalidOptionError, "root.children[0]", "unknown job option"),
        (leaf(children=[leaf(opts={"parent": {"id": "x", "queue": "bull:A"}})]), InvalidFlowError,
         "root.children[0]", "only the root"),
        (leaf(children=[leaf(opts={"jobId": "x"}), leaf(opts={"jobId": "x"})]), InvalidFlowError,
         "root.children[1]", "used twice"),
        (leaf(opts={"deduplication": {"id": "d"}}, children=[leaf()]), InvalidFlowError, "root", "deduplication"),
        (leaf(children=[leaf(), leaf(opts={"deduplication": {"id": "d"}})]), InvalidOptionError,
         "root.children[1]", "deduplication and a parent"),
        (leaf(opts={"deduplication": {"id": "d"}, "parent": {"id": "x", "queue": "bull:A"}}), InvalidOptionError,
         "root", "deduplication and parent"),
        (leaf(prefix=""), InvalidFlowError, "root", "prefix"),
    ],
)
def test_malformed_trees(impl: Any, root: Any, error: type, path: str, match: str) -> None:
    with pytest.raises(error, match=match) as info:
        plan(impl, [root])
    assert info.value.path == path


@pytest.mark.parametrize("impl", IMPLS)
def test_the_same_node_twice_is_two_jobs(impl: Any) -> None:
    """[child] * 3 and [tree, tree] add that many jobs, as Node's FlowProducer does."""
    child = leaf("c", "B")
    p = plan(impl, [leaf("p", "A", children=[child] * 3)])
    assert len(p) == 4 and p.parents == [-1, 0, 0, 0]
    shared = leaf("m", "B", children=[child, child])
    p = plan(impl, [leaf("p", "A", children=[shared, shared]), leaf("q", "A", children=[shared])])
    assert len(p) == 11


@pytest.mark.parametrize("impl", IMPLS)
def test_a_node_twice_with_a_job_id_is_refused_as_a_duplicate(impl: Any) -> None:
    child = leaf("c", "B", opts={"job_id": "c1"})
    with pytest.raises(InvalidFlowError, match="used twice") as info:
        plan(impl, [leaf("p", "A", children=[child, child])])
    assert info.value.path == "root.children[1]"


@pytest.mark.parametrize("impl", IMPLS)
def test_a_flat_list_may_repeat_a_spec(impl: Any) -> None:
    """Queue.add_bulk([spec] * 3) adds three jobs, as BullMQ (no tree, so no cycle)."""
    spec = {"name": "j", "data": {"n": 1}, "opts": {"priority": 2}}
    p = impl.plan_jobs([spec] * 3, "bull", "Q", {}, normalize_options, os.urandom, 10, False)
    assert len(p) == 3 and [o.priority for o in p.opts_of] == [2, 2, 2]


class FreshOpts(Mapping[str, Any]):
    """A node whose "opts" is a new dict at every access (a lazy mapping): each dies at once,
    and the next one may get its id."""

    def __init__(self, name: str, priority: int) -> None:
        self._fields = {"name": name, "queue_name": "B"}
        self._priority = priority

    def __getitem__(self, key: str) -> Any:
        if key == "opts":
            return {"priority": self._priority}
        return self._fields[key]

    def __iter__(self) -> Iterator[str]:
        return iter([*self._fields, "opts"])

    def __len__(self) -> int:
        return len(self._fields) + 1


@pytest.mark.parametrize("impl", IMPLS)
def test_each_node_gets_its_own_options_from_a_lazy_mapping(impl: Any) -> None:
    children = [FreshOpts(f"c{i}", 10 + i) for i in range(5)]
    p = plan(impl, [leaf("p", "A", children=children)])
    assert [o.priority for o in p.opts_of[1:]] == [10, 11, 12, 13, 14]


@pytest.mark.parametrize("impl", IMPLS)
def test_cycle_is_caught(impl: Any) -> None:
    node = leaf()
    node["children"] = [node]
    with pytest.raises(InvalidFlowError, match="contains itself"):
        plan(impl, [node])
    root = leaf("r", "A")
    middle = leaf("m", "B", children=[leaf("x", "B"), root])
    root["children"] = [leaf("y", "B"), middle]
    with pytest.raises(InvalidFlowError, match="contains itself") as info:
        plan(impl, [root])
    assert info.value.path == "root.children[1].children[1]"


@pytest.mark.parametrize("impl", IMPLS)
def test_depth_limit(impl: Any) -> None:
    root = leaf()
    node = root
    for _ in range(100):
        child = leaf()
        node["children"] = [child]
        node = child
    with pytest.raises(InvalidFlowError, match="deeper than 100"):
        plan(impl, [root], max_depth=100)
    assert len(plan(impl, [root], max_depth=101)) == 101


@pytest.mark.parametrize("impl", IMPLS)
def test_encoding_errors_name_the_node(impl: Any) -> None:
    p = plan(impl, [leaf(children=[leaf(), leaf(data={"x": object()})])])
    with pytest.raises(DataNotSerializableError) as info:
        impl.encode_add_call(p, 0, len(p), b"0" * 40, "", "", [], 0)
    assert info.value.path == "root.children[1]"
    p = plan(impl, [leaf(data="x" * 50, opts={"size_limit": 10})])
    with pytest.raises(DataTooLargeError):
        impl.encode_add_call(p, 0, 1, b"0" * 40, "", "", [], 0)


def test_errors_are_value_errors() -> None:
    assert issubclass(InvalidInputError, ValueError)
    assert issubclass(InvalidQueueNameError, InvalidInputError)


def test_plain_jobs_path_uses_index() -> None:
    with pytest.raises(InvalidOptionError) as info:
        _core_py.plan_jobs([{"name": "a"}, {"name": "b", "opts": {"x": 1}}], "bull", "Q", {}, normalize_options, os.urandom, 10, False)
    assert info.value.path == "jobs[1]"


@pytest.mark.parametrize("impl", IMPLS)
def test_queue_name_and_queueName_must_agree(impl: Any) -> None:
    root = leaf("p", "A", children=[leaf(), leaf(queueName="C")])
    with pytest.raises(InvalidFlowError) as info:
        plan(impl, [root])
    assert info.value.path == "root.children[1]" and "queueName" in str(info.value)
    p = plan(impl, [leaf("p", "A", queueName="A")])
    assert p.queue_names == ["A"]
