"""The event emitter shared by Worker and QueueEvents: Node's rules for on / once / off."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bullfast._emitter import EventEmitter


def test_listeners_get_the_arguments_they_take() -> None:
    emitter = EventEmitter()
    seen: list[tuple[Any, ...]] = []
    emitter.on("completed", lambda job, result: seen.append((job, result)))
    emitter.on("completed", lambda *args: seen.append(args))
    assert emitter.emit("completed", "job", {"n": 1}, "active") is True
    assert seen == [("job", {"n": 1}), ("job", {"n": 1}, "active")]
    assert emitter.emit("failed", "job") is False


def test_a_listener_added_during_an_emit_is_first_called_by_the_next() -> None:
    emitter = EventEmitter()
    calls: list[str] = []

    def first(*_: Any) -> None:
        calls.append("first")
        if len(calls) == 1:
            emitter.on("e", lambda *_: calls.append("added"))

    emitter.on("e", first)
    emitter.emit("e")
    assert calls == ["first"]
    emitter.emit("e")
    assert calls == ["first", "first", "added"]


def test_once_listeners_run_once_even_when_the_event_is_emitted_inside_them() -> None:
    emitter = EventEmitter()
    calls: list[str] = []

    def once(*_: Any) -> None:
        calls.append("once")
        emitter.emit("e")

    emitter.once("e", once)
    emitter.on("e", lambda *_: calls.append("on"))
    emitter.emit("e")
    assert calls == ["once", "on", "on"]
    emitter.emit("e")
    assert calls == ["once", "on", "on", "on"]
    assert emitter.listener_count("e") == 1


def test_a_listener_removed_during_an_emit_still_gets_that_emit() -> None:
    emitter = EventEmitter()
    calls: list[str] = []

    def second(*_: Any) -> None:
        calls.append("second")

    emitter.on("e", lambda *_: emitter.off("e", second))
    emitter.on("e", second)
    emitter.emit("e")
    emitter.emit("e")
    assert calls == ["second"]


def test_async_listeners_are_scheduled_and_drained() -> None:
    async def main() -> list[str]:
        emitter = EventEmitter()
        calls: list[str] = []

        async def listener(value: str) -> None:
            await asyncio.sleep(0)
            calls.append(value)

        emitter.on("e", listener)
        emitter.emit("e", "a")
        assert calls == []
        await emitter._drain_listeners()
        return calls

    assert asyncio.run(main()) == ["a"]


def test_a_raising_listener_becomes_an_error_event_and_the_others_still_run() -> None:
    """As BullMQ's emit (Queue, Worker, QueueEvents): the exception is emitted as 'error'."""
    emitter = EventEmitter()
    errors: list[BaseException] = []
    calls: list[str] = []

    def bad() -> None:
        raise ValueError("listener bug")

    emitter.on("e", bad)
    emitter.on("e", lambda: calls.append("after"))
    emitter.on("error", errors.append)
    emitter.emit("e")
    assert [str(e) for e in errors] == ["listener bug"] and calls == ["after"]


def test_a_raising_error_listener_is_logged_not_looped(caplog: pytest.LogCaptureFixture) -> None:
    emitter = EventEmitter()

    def bad(*_: object) -> None:
        raise ValueError("error listener bug")

    emitter.on("error", bad)
    emitter.on("e", bad)
    emitter.emit("e")  # 'e' raises, then 'error' raises: logged, no recursion
    assert [r.getMessage() for r in caplog.records] == ["bullfast: listener for 'error' raised"]


def test_an_event_without_listeners_leaves_no_entry_behind() -> None:
    """wait_until_finished listens to one event per job ("completed:<id>"): what it removes
    (off, or a once listener that ran) must not stay as an empty entry per job."""
    emitter = EventEmitter()
    for n in range(100):
        listener = emitter.on(f"completed:{n}", lambda *args: None)
        emitter.once(f"failed:{n}", lambda *args: None)
        emitter.off(f"completed:{n}", listener)
        emitter.emit(f"failed:{n}", {}, "1-0")
    emitter.off("never-added", print)
    assert emitter._listeners == {}


def test_off_removes_the_registration_added_last_and_node_names_work() -> None:
    """Node's removeListener removes one registration of a listener added twice (bullfast's
    off removed them all); removeAllListeners, addListener, listenerCount as Node's."""
    emitter = EventEmitter()
    calls: list[str] = []

    def f(tag: str) -> None:
        calls.append(f"f {tag}")

    def g(tag: str) -> None:
        calls.append(f"g {tag}")

    emitter.on("e", f)
    emitter.addListener("e", g)
    emitter.add_listener("e", f)
    emitter.emit("e", "1")
    emitter.off("e", f)  # the second f goes, the first stays ahead of g
    emitter.emit("e", "2")
    emitter.removeListener("e", f)
    emitter.remove_listener("e", f)  # (not registered any more: nothing happens)
    emitter.emit("e", "3")
    assert calls == ["f 1", "g 1", "f 1", "f 2", "g 2", "g 3"]
    emitter.on("other", f)
    emitter.removeAllListeners("e")
    assert (emitter.listener_count("e"), emitter.listener_count("other")) == (0, 1)
    emitter.remove_all_listeners()
    assert emitter.listener_count("other") == 0 and emitter.emit("other", "4") is False
