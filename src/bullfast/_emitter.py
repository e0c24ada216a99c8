"""A small event emitter: ``on``/``once``/``off`` with plain or async callbacks."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("bullfast")

Listener = Callable[..., Any]


class EventEmitter:
    def __init__(self) -> None:
        self._listeners: dict[str, list[tuple[Listener, bool]]] = {}
        self._listener_tasks: set[asyncio.Task[Any]] = set()

    def on(self, event: str, listener: Listener) -> Listener:
        """Call ``listener(*args)`` on every ``event``; an async listener is scheduled."""
        self._listeners.setdefault(event, []).append((listener, False))
        return listener

    def once(self, event: str, listener: Listener) -> Listener:
        self._listeners.setdefault(event, []).append((listener, True))
        return listener

    def off(self, event: str, listener: Listener) -> None:
        self._listeners[event] = [(f, o) for f, o in self._listeners.get(event, []) if f is not listener]

    def listener_count(self, event: str) -> int:
        return len(self._listeners.get(event, ()))

    def emit(self, event: str, *args: Any) -> bool:
        listeners = self._listeners.get(event)
        if not listeners:
            return False
        self._listeners[event] = [(f, o) for f, o in listeners if not o]
        for listener, _ in listeners:
            try:
                result = listener(*args)
            except Exception:
                log.exception("bullfast: listener for %r raised", event)
                continue
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._listener_tasks.add(task)
                task.add_done_callback(self._listener_done)
        return True

    def _listener_done(self, task: asyncio.Task[Any]) -> None:
        self._listener_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("bullfast: async listener raised", exc_info=task.exception())

    async def _drain_listeners(self) -> None:
        if self._listener_tasks:
            await asyncio.gather(*self._listener_tasks, return_exceptions=True)
