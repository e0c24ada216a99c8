"""A small event emitter: ``on``/``once``/``off`` with plain or async callbacks."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
from collections.abc import Callable
from typing import Any

from ._compat import port_keywords
from .errors import EventLoopError

log = logging.getLogger("bullfast")

# Inside an async listener's task, and every task it starts (wait_for, gather and create_task
# copy the context): the listener's task. A close() called from there must not wait for it.
_LISTENER_TASK: contextvars.ContextVar[list[asyncio.Task[Any]] | None] = contextvars.ContextVar(
    "bullfast_listener_task", default=None
)

Listener = Callable[..., Any]


def running_loop(what: str) -> asyncio.AbstractEventLoop:
    """The running event loop, or an error that says what to do instead (asyncio's own is
    "no running event loop")."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        raise EventLoopError(
            f"{what} and needs a running event loop: make it inside async code (asyncio.run), "
            "pass autorun=False and call run() from async code later, or use bullfast.sync"
        ) from None


def _arity(listener: Listener) -> int | None:
    """How many positional arguments a listener takes (None: any number)."""
    try:
        params = inspect.signature(listener).parameters.values()
    except (TypeError, ValueError):
        return None
    count = 0
    for p in params:
        if p.kind == p.VAR_POSITIONAL:
            return None
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            count += 1
    return count


class EventEmitter:
    def __init__(self) -> None:
        self._listeners: dict[str, list[tuple[Listener, bool, int | None]]] = {}
        self._listener_tasks: set[asyncio.Task[Any]] = set()

    @port_keywords(event_name="event", function="listener")
    def on(self, event: str, listener: Listener) -> Listener:
        """Call ``listener(*args)`` on every ``event``; an async listener is scheduled.

        A listener that takes fewer positional arguments than the event carries gets the first
        ones: ``on("completed", lambda job, result: ...)`` (bullmq's Python port) and
        ``lambda job, result, prev: ...`` (Node's) both work."""
        self._add(event, (listener, False, _arity(listener)))
        return listener

    @port_keywords(event_name="event", function="listener")
    def once(self, event: str, listener: Listener) -> Listener:
        self._add(event, (listener, True, _arity(listener)))
        return listener

    def _add(self, event: str, entry: tuple[Listener, bool, int | None]) -> None:
        # a new list, never an append: an emit going on iterates the old one, so a listener
        # added by a listener is first called by the next emit (as in Node)
        self._listeners[event] = [*self._listeners.get(event, ()), entry]

    @port_keywords(event_name="event", function="listener")
    def off(self, event: str, listener: Listener) -> None:
        """Remove ``listener`` from ``event``: the registration added last, if it was added
        more than once (as Node's ``removeListener``)."""
        entries = self._listeners.get(event, [])
        for at in range(len(entries) - 1, -1, -1):
            if entries[at][0] is listener:
                self._set(event, [*entries[:at], *entries[at + 1:]])
                return

    def remove_all_listeners(self, event: str | None = None) -> None:
        """Remove every listener of ``event``, or of every event."""
        if event is None:
            self._listeners.clear()
        else:
            self._listeners.pop(event, None)

    def _set(self, event: str, entries: list[tuple[Listener, bool, int | None]]) -> None:
        if entries:
            self._listeners[event] = entries
        else:
            # (an event per job, "completed:<id>", must not leave an entry per job behind)
            self._listeners.pop(event, None)

    # Node's EventEmitter names
    add_listener = addListener = on
    remove_listener = removeListener = off
    removeAllListeners = remove_all_listeners

    def listener_count(self, event: str) -> int:
        return len(self._listeners.get(event, ()))

    listenerCount = listener_count

    def emit(self, event_name: str, *args: Any) -> bool:
        event = event_name  # (the PyPI port's parameter name)
        listeners = self._listeners.get(event)
        if not listeners:
            if event == "error":
                # not dropped in silence (Node's emitter throws an 'error' nobody listens to):
                # a worker pointed at a wrong URL would otherwise just wait, saying nothing
                log.error("bullfast: %s (an 'error' event; listen with on('error', ...))", args[0] if args else "")
            return False
        if any(once for _, once, _ in listeners):
            self._set(event, [e for e in listeners if not e[1]])
        for listener, _, arity in listeners:
            try:
                result = listener(*(args if arity is None else args[:arity]))
            except Exception as exc:
                # reported as an 'error', as BullMQ's emit reports a listener that throws (the
                # other listeners still run); a raising 'error' listener is only logged
                if event == "error" or not self.listener_count("error"):
                    log.exception("bullfast: listener for %r raised", event)
                else:
                    self.emit("error", exc)
                continue
            if result is not None and inspect.isawaitable(result):
                # the task runs in a context that names it (see _LISTENER_TASK)
                holder: list[asyncio.Task[Any]] = []
                context = contextvars.copy_context()
                context.run(_LISTENER_TASK.set, holder)
                task = context.run(asyncio.ensure_future, result)
                holder.append(task)
                self._listener_tasks.add(task)
                task.add_done_callback(self._listener_done)
        return True

    def _listener_done(self, task: asyncio.Task[Any]) -> None:
        self._listener_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("bullfast: async listener raised", exc_info=task.exception())

    async def _drain_listeners(self) -> None:
        """Wait for the async listeners still running, but those that wait for this very
        drain (a listener that closes the emitter): waiting for them would never end."""
        closers = self._closers() | {asyncio.current_task()} | set(_LISTENER_TASK.get() or ())
        waiting = [t for t in self._listener_tasks if t not in closers]
        if waiting:
            # (asyncio.wait: a close that is itself cancelled leaves the listeners running)
            await asyncio.wait(waiting)

    def _closers(self) -> set[asyncio.Task[Any]]:
        """The tasks waiting for the emitter to close (its subclasses' close() record them)."""
        return set()
