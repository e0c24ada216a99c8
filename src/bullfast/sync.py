"""The blocking API: ``Queue``, ``FlowProducer`` and ``Job`` with the same methods as the async
ones, for scripts and synchronous web apps.

    from bullfast.sync import FlowProducer, Queue

    with Queue("emails", connection="redis://localhost:6379") as queue:
        job = queue.add("welcome", {"to": "a@b.c"})
        print(job.get_state())

These are not a second copy of the library: every call runs the async implementation (the same
compiled core, scripts and command builders) on one private event loop in a background thread,
and waits for its result. Async iterators (``job.iter_children_values()``, ``for event in
queue_events``) become plain iterators that fetch a batch per hop to that loop. Do not call
them from inside a running event loop; use the async API there.
"""

from __future__ import annotations

import asyncio
import atexit
import inspect
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, TypeVar

from . import events as _events
from . import fanout as _fanout
from . import flow as _flow
from . import job as _job
from . import queue as _queue

T = TypeVar("T")


class _LoopThread:
    """One event loop in a daemon thread, shared by every blocking object of the process."""

    _lock = threading.Lock()
    _instance: _LoopThread | None = None

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bullfast-sync", daemon=True)
        self.thread.start()
        atexit.register(self.stop)

    @classmethod
    def get(cls) -> _LoopThread:
        with cls._lock:
            if cls._instance is None or not cls._instance.thread.is_alive():
                cls._instance = cls()
            return cls._instance

    @staticmethod
    def check_not_in_loop() -> None:
        """Blocking calls from a coroutine would stall its loop: refuse them (before any
        coroutine is built, so none is left un-awaited)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        raise RuntimeError("bullfast.sync called from inside an event loop; use the async API")

    def run(self, coro: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()  # type: ignore[arg-type]

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` (a coroutine function) on the loop and wait for it."""
        self.check_not_in_loop()
        return self.run(fn(*args, **kwargs))

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
        if not self.loop.is_running() and not self.loop.is_closed():
            self.loop.close()


def _wrap(value: Any) -> Any:
    if isinstance(value, _job.Job):
        return Job._of(value)
    if isinstance(value, _flow.JobNode):
        return JobNode(value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


class BlockingIterator(Iterator[Any]):
    """A plain iterator over an async iterator that lives on bullfast's loop: items are
    fetched ``batch`` at a time (one hop to the loop thread per batch, not per item). The
    async iterator is closed on that loop when this one is exhausted, closed, leaves a
    ``with`` block, or is garbage-collected, so none is left suspended in the loop."""

    def __init__(self, source: AsyncIterator[Any], batch: int = 1000) -> None:
        self._source: AsyncIterator[Any] | None = source
        self._batch = batch
        self._items: list[Any] = []
        self._done = False

    async def _take(self) -> tuple[list[Any], bool]:
        assert self._source is not None
        items: list[Any] = []
        try:
            while len(items) < self._batch:
                items.append(await self._source.__anext__())
        except StopAsyncIteration:
            return items, True
        return items, False

    def __next__(self) -> Any:
        if not self._items:
            if self._done or self._source is None:
                self.close()
                raise StopIteration
            items, self._done = _LoopThread.get().call(self._take)
            self._items = list(reversed(items))
            if not self._items:
                self.close()
                raise StopIteration
        return _wrap(self._items.pop())

    def close(self) -> None:
        """Close the async iterator (on the loop); idempotent."""
        source, self._source = self._source, None
        aclose = getattr(source, "aclose", None)
        if aclose is None:
            return
        loop = _LoopThread.get()
        try:
            loop.check_not_in_loop()
        except RuntimeError:
            # dropped inside some event loop (not ours): close it without waiting here
            asyncio.run_coroutine_threadsafe(aclose(), loop.loop)
            return
        loop.run(aclose())

    def __enter__(self) -> BlockingIterator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if self._source is not None:
            try:
                self.close()
            except Exception:  # interpreter shutdown: the loop may be gone already
                pass


class _Blocking:
    """Forwards attribute reads to the async object: coroutine methods become blocking, async
    generator methods return a :class:`BlockingIterator`, and the job's or node's objects it
    hands out are blocking ones too."""

    _target: Any

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if inspect.iscoroutinefunction(attr):
            def call(*args: Any, **kwargs: Any) -> Any:
                return _wrap(_LoopThread.get().call(attr, *args, **kwargs))

            call.__name__ = name
            call.__doc__ = attr.__doc__
            return call
        if inspect.isasyncgenfunction(attr):
            def iterate(*args: Any, **kwargs: Any) -> BlockingIterator:
                _LoopThread.check_not_in_loop()
                return BlockingIterator(attr(*args, **kwargs))

            iterate.__name__ = name
            iterate.__doc__ = attr.__doc__
            return iterate
        return attr

    def __repr__(self) -> str:
        return f"<sync {self._target!r}>"


class _Closable(_Blocking):
    def close(self) -> None:
        _LoopThread.get().call(self._target.close)

    def __enter__(self) -> Any:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _construct(factory: Callable[[], T]) -> T:
    async def make() -> T:
        return factory()

    return _LoopThread.get().call(make)


class Queue(_Closable):
    """Blocking :class:`bullfast.Queue` (same constructor and methods)."""

    def __init__(self, name: str, opts: Any = None, **kwargs: Any) -> None:
        self._target = _construct(lambda: _queue.Queue(name, opts, **kwargs))

    @classmethod
    def _of(cls, queue: Any) -> Queue:
        """The blocking view of an async queue (a job's ``queue``)."""
        q = cls.__new__(cls)
        q._target = queue
        return q


class FlowProducer(_Closable):
    """Blocking :class:`bullfast.FlowProducer` (same constructor and methods)."""

    def __init__(self, opts: Any = None, **kwargs: Any) -> None:
        self._target = _construct(lambda: _flow.FlowProducer(opts, **kwargs))

    def fan_out(self, parent: Any, queues_options: Any = None, **kwargs: Any) -> FanOut:
        """``with producer.fan_out(node) as fan: fan.add_children(rows)`` (see bullfast.fanout)."""
        return FanOut(self._target.fan_out(parent, queues_options, **kwargs))

    def resume_fan_out(self, queue_name: str, job_id: str, prefix: str | None = None) -> FanOut:
        return FanOut(_LoopThread.get().call(self._target.resume_fan_out, queue_name, job_id, prefix))


class FanOut(_Blocking):
    """Blocking :class:`bullfast.fanout.FanOut`; a plain iterable is read in bullfast's
    background thread, a chunk at a time."""

    def __init__(self, fan: _fanout.FanOut) -> None:
        self._target = fan

    @property
    def job(self) -> Job | None:
        return None if self._target.job is None else Job._of(self._target.job)

    def __enter__(self) -> FanOut:
        _LoopThread.get().call(self._target.open)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _LoopThread.get().call(self._target.__aexit__, exc_type, exc, tb)


class QueueEvents(_Closable):
    """Blocking :class:`bullfast.QueueEvents`, for ``Job.wait_until_finished``, listeners
    (called in bullfast's thread) and ``for event in queue_events`` (blocks for each)."""

    def __init__(self, name: str, opts: Any = None, **kwargs: Any) -> None:
        self._target = _construct(lambda: _events.QueueEvents(name, opts, **kwargs))
        _LoopThread.get().call(self._ready_or_raise)

    async def _ready_or_raise(self) -> None:
        # the async reader retries a Redis it cannot reach; a blocking constructor raises the
        # first such error instead of waiting for ever
        target = self._target
        failed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

        def on_error(err: BaseException, *_: Any) -> None:
            if not failed.done():
                failed.set_result(err)

        target.on("error", on_error)
        ready = asyncio.ensure_future(target.wait_until_ready())
        try:
            await asyncio.wait({ready, failed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            target.off("error", on_error)
        if not ready.done():
            ready.cancel()
            await target.close()
            raise failed.result()

    def __iter__(self) -> BlockingIterator:
        _LoopThread.check_not_in_loop()
        # one event at a time: a batch would wait for events that may never come
        return BlockingIterator(self._target.__aiter__(), batch=1)


class Job(_Blocking):
    """Blocking view of a :class:`bullfast.Job`: attributes as they are, methods blocking."""

    @classmethod
    def _of(cls, job: _job.Job) -> Job:
        j = cls.__new__(cls)
        j._target = job
        return j

    @property
    def queue(self) -> Queue:
        """The job's queue, blocking too."""
        return Queue._of(self._target.queue)

    def wait_until_finished(self, queue_events: QueueEvents, timeout: float | None = None) -> Any:
        target = queue_events._target if isinstance(queue_events, QueueEvents) else queue_events
        return _LoopThread.get().call(self._target.wait_until_finished, target, timeout)

    @classmethod
    def from_id(cls, queue: Queue, job_id: str) -> Job | None:
        job = _LoopThread.get().call(queue._target.get_job, job_id)
        return None if job is None else cls._of(job)

    fromId = from_id
    waitUntilFinished = wait_until_finished


class JobNode(Mapping[str, Any]):
    """Blocking view of a :class:`bullfast.JobNode`; like it, also bullmq's read-only dict
    ``{"job": ..., "children": [...]}`` (a leaf has only ``"job"``)."""

    __eq__ = object.__eq__
    __hash__ = object.__hash__

    def __init__(self, node: _flow.JobNode) -> None:
        self._node = node

    @property
    def job(self) -> Job:
        return Job._of(self._node.job)

    @property
    def children(self) -> list[JobNode] | None:
        children = self._node.children
        return None if children is None else [JobNode(c) for c in children]

    @property
    def state(self) -> str | None:
        return self._node.state

    def __getitem__(self, key: str) -> Any:
        if key == "job":
            return self.job
        if key == "children" and "children" in self._node:
            return self.children
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._node)

    def __len__(self) -> int:
        return len(self._node)

    def walk(self) -> Iterator[JobNode]:
        """This node and all its descendants, breadth-first."""
        for node in self._node.walk():
            yield JobNode(node)


__all__ = ["BlockingIterator", "FanOut", "FlowProducer", "Job", "JobNode", "Queue", "QueueEvents"]
