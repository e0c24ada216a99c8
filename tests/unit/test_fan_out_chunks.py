"""How a fan-out cuts its stream into chunks: by jobs written, an item's sub-tree included."""

from __future__ import annotations

from typing import Any

from bullfast.fanout import _batches, _node_count


def leaf(i: int) -> dict[str, Any]:
    return {"name": f"l{i}"}


def tree(i: int, width: int) -> dict[str, Any]:
    return {"name": f"t{i}", "children": [{"name": "mid", "children": [leaf(k)]} for k in range(width)]}


async def chunks(items: Any, size: int, skip: int = 0) -> list[list[Any]]:
    return [batch async for batch in _batches(items, size, skip)]


def test_node_count() -> None:
    assert _node_count(leaf(0)) == 1
    assert _node_count(tree(0, 3)) == 1 + 3 * 2
    assert _node_count({"name": "x", "children": "not a list"}) == 1
    assert _node_count("not a node") == 1


async def test_leaves_go_size_at_a_time() -> None:
    got = await chunks([leaf(i) for i in range(10)], 4)
    assert [len(c) for c in got] == [4, 4, 2]


async def test_items_with_children_count_with_them() -> None:
    # 1 + 2 * 10 = 21 jobs an item: 250 jobs hold 12 of them
    got = await chunks([tree(i, 10) for i in range(30)], 250)
    assert [len(c) for c in got] == [12, 12, 6]
    assert [item["name"] for c in got for item in c] == [f"t{i}" for i in range(30)]


async def test_an_item_bigger_than_a_chunk_goes_alone_and_whole() -> None:
    items = [leaf(0), tree(1, 300), leaf(2), leaf(3)]
    got = await chunks(items, 250)
    assert [[item["name"] for item in c] for c in got] == [["l0", "t1"], ["l2", "l3"]]


async def test_skip_and_async_sources() -> None:
    async def source() -> Any:
        for i in range(7):
            yield tree(i, 1) if i % 2 else leaf(i)

    got = await chunks(source(), 4, skip=2)
    # items 2..6 = leaf(1), tree(3), leaf(1), tree(3), leaf(1) jobs
    assert [[item["name"] for item in c] for c in got] == [["l2", "t3"], ["l4", "t5"], ["l6"]]


def test_a_node_that_is_its_own_descendant_is_counted_once() -> None:
    # (the planner then refuses it with a path; counting must not loop first)
    node: dict[str, Any] = {"name": "loop", "children": []}
    node["children"].append({"name": "mid", "children": [node]})
    assert _node_count(node) == 2
