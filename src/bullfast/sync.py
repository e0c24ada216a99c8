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
import concurrent.futures
import contextlib
import inspect
import logging
import os
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, TypeVar

from . import events as _events
from . import fanout as _fanout
from . import flow as _flow
from . import job as _job
from . import queue as _queue
from . import worker as _worker
from ._compat import port_keywords
from ._emitter import _arity as _emitter_arity
from .errors import BullfastError, EventLoopError

log = logging.getLogger("bullfast")

T = TypeVar("T")


class _Runner:
    """Runs the async API's coroutines on one event loop, for threads outside it: each call
    waits for its result (interrupted, e.g. by Ctrl-C, it cancels what it started)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    @staticmethod
    def check_not_in_loop() -> None:
        """Blocking calls from a coroutine would stall its loop: refuse them (before any
        coroutine is built, so none is left un-awaited)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        raise EventLoopError("bullfast.sync called from inside an event loop; use the async API")

    def on_own_loop(self) -> bool:
        """Whether a call is made on this runner's loop and should get the async method (see
        _ProcessorRunner); elsewhere, such a call is refused by ``check_not_in_loop``."""
        return False

    exiting = False  # the interpreter exits: the loop's tasks were cancelled (see stop)

    def run(self, coro: Awaitable[T]) -> T:
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            if self.exiting and threading.current_thread() is not threading.main_thread():
                _end_of_thread_at_exit()
            raise
        except BaseException:
            future.cancel()  # (KeyboardInterrupt: the call must not run on unattended)
            raise

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` (a coroutine function) on the loop and wait for it."""
        self.check_not_in_loop()
        return self.run(fn(*args, **kwargs))


def _end_of_thread_at_exit() -> None:
    """A thread of the program blocked in a call (``worker.run()``, ``for e in events``) while
    the interpreter exits: a daemon thread waits here to be stopped with the interpreter, as
    it would have in the call, and another one ends (SystemExit ends a thread quietly); a
    CancelledError would print a traceback from threading's hook."""
    if threading.current_thread().daemon:
        threading.Event().wait()
    raise SystemExit


class _ProcessorRunner(_Runner):
    """The runner of a plain-function processor's job (and of its ``job.queue``): blocking in
    the worker's pool thread; on the worker's loop, where a plain function's coroutine is
    awaited (a lambda, a decorator without ``async``), the async methods."""

    def on_own_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False


class _LoopThread(_Runner):
    """One event loop in a daemon thread, shared by every blocking object of the process."""

    _lock = threading.Lock()
    _instance: _LoopThread | None = None

    def __init__(self) -> None:
        super().__init__(asyncio.new_event_loop())
        self.pid = os.getpid()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bullfast-sync", daemon=True)
        self.thread.start()
        # at exit, before Python shuts the thread pools down (a worker still running would fail
        # the jobs it could no longer hand to its pool, for good): threading's exit hooks run
        # first, the last registered first
        register = getattr(threading, "_register_atexit", atexit.register)
        register(self.stop)

    @classmethod
    def get(cls) -> _LoopThread:
        with cls._lock:
            if cls._instance is None or not cls._instance.thread.is_alive():
                cls._instance = cls()
            return cls._instance

    def stop(self) -> None:
        if self.pid != os.getpid():
            return  # a forked child: the loop's thread is the parent's (it does not run here)
        if self.loop.is_running():
            # what still runs (a QueueEvents' reader, a worker never closed: its jobs stay
            # active, for the stalled check) is cancelled and given a moment to end, and the
            # listeners not yet run are dropped, so the exit is quiet and quick
            self.exiting = True
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(_cancel_tasks(), self.loop).result(5)
            for state in list(_listening.values()):
                state.shut_down(wait=False)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
        if not self.loop.is_running() and not self.loop.is_closed():
            self.loop.close()


async def _cancel_tasks() -> None:
    # in rounds: a task cancelled may start another (a worker's run() starts its close), which
    # left pending would be reported as destroyed when the loop closes
    for _ in range(3):
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
        if not tasks:
            return
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=3)


def _runner_of(runner: _Runner | None) -> _Runner:
    """The runner of a blocking object: the given loop's, or bullfast's own loop thread (whose
    objects belong to the process that made them: after os.fork() they are refused)."""
    if runner is not None:
        return runner
    return _LoopThread.get()


def _wrap(value: Any, runner: _Runner | None = None) -> Any:
    if isinstance(value, _job.Job):
        return Job._of(value, runner)
    if isinstance(value, _flow.JobNode):
        return JobNode(value, runner)
    if isinstance(value, list):
        return [_wrap(v, runner) for v in value]
    return value


class BlockingIterator(Iterator[Any]):
    """A plain iterator over an async iterator that lives on bullfast's loop: items are
    fetched ``batch`` at a time (one hop to the loop thread per batch, not per item). The
    async iterator is closed on that loop when this one is exhausted, closed, leaves a
    ``with`` block, or is garbage-collected, so none is left suspended in the loop."""

    def __init__(self, source: AsyncIterator[Any], batch: int = 1000, runner: _Runner | None = None) -> None:
        self._source: AsyncIterator[Any] | None = source
        self._batch = batch
        self._items: list[Any] = []
        self._done = False
        self._runner = _runner_of(runner)

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
            items, self._done = self._runner.call(self._take)
            self._items = list(reversed(items))
            if not self._items:
                self.close()
                raise StopIteration
        return _wrap(self._items.pop(), self._runner)

    def close(self) -> None:
        """Close the async iterator (on the loop); idempotent."""
        source, self._source = self._source, None
        aclose = getattr(source, "aclose", None)
        if aclose is None or self._runner.exiting:
            return  # (at exit the loop's tasks are cancelled, and it may not run any more)
        try:
            self._runner.check_not_in_loop()
        except RuntimeError:
            # dropped inside some event loop (not ours): close it without waiting here
            asyncio.run_coroutine_threadsafe(aclose(), self._runner.loop)
            return
        self._runner.run(aclose())

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
    _runner: _Runner | None = None  # None: bullfast's loop thread
    _pid = 0

    def _bind(self, target: Any, runner: _Runner | None = None) -> None:
        self._target = target
        self._runner = runner
        self._pid = os.getpid()

    def _loop(self) -> _Runner:
        """The runner of this object's calls, in the process that made it."""
        if self._pid != os.getpid():
            # its connections and loop are the parent's: a call would write through the
            # parent's socket, then fail on a loop that no longer runs
            raise BullfastError(
                f"{type(self).__name__} objects of bullfast.sync were made before os.fork(); "
                "make new ones in the child process"
            )
        return _runner_of(self._runner)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if inspect.iscoroutinefunction(attr):
            def call(*args: Any, **kwargs: Any) -> Any:
                runner = self._loop()
                if runner.on_own_loop():
                    return attr(*args, **kwargs)
                return _wrap(runner.call(attr, *args, **kwargs), self._runner)

            call.__name__ = name
            call.__doc__ = attr.__doc__
            return call
        if inspect.isasyncgenfunction(attr):
            def iterate(*args: Any, **kwargs: Any) -> Any:
                runner = self._loop()
                if runner.on_own_loop():
                    return attr(*args, **kwargs)
                runner.check_not_in_loop()
                return BlockingIterator(attr(*args, **kwargs), runner=runner)

            iterate.__name__ = name
            iterate.__doc__ = attr.__doc__
            return iterate
        return attr

    def __setattr__(self, name: str, value: Any) -> None:
        # the async object's settable properties (a worker's concurrency), set on its loop;
        # everything else is this view's own, as before (a subclass's attributes, even one
        # named as a plain attribute of the async object: a Queue's name)
        target = self.__dict__.get("_target")
        if target is None or not isinstance(getattr(type(target), name, None), property) or hasattr(type(self), name):
            object.__setattr__(self, name, value)
            return
        runner = self._loop()
        if runner.on_own_loop():
            setattr(self._target, name, value)
        else:
            runner.call(_set_attribute, self._target, name, value)

    def __repr__(self) -> str:
        return f"<sync {self._target!r}>"


async def _set_attribute(target: Any, name: str, value: Any) -> None:
    setattr(target, name, value)


def _construct(factory: Callable[[], T]) -> T:
    async def make() -> T:
        return factory()

    return _LoopThread.get().call(make)


# in a listener's thread, while it runs: the async object whose listener it is
_in_listener = threading.local()


class _ListenState:
    """The listeners' thread of one async object, shared by its blocking views (a job's
    ``queue`` is a view of its own)."""

    def __init__(self) -> None:
        self.dispatch = ThreadPoolExecutor(1, thread_name_prefix="bullfast-listeners")
        self.dispatched: set[asyncio.Future[None]] = set()
        self.closed_by_listener = False
        self.shut = False

    def shut_down(self, wait: bool) -> None:
        self.shut = True
        self.dispatch.shutdown(wait=wait, cancel_futures=not wait)


_listening: weakref.WeakKeyDictionary[Any, _ListenState] = weakref.WeakKeyDictionary()


class _Listening(_Blocking):
    """``on`` / ``once`` / ``off`` for plain code: listeners run in a thread of this object's
    own, one event after the other, in order, and may use the blocking API there (they would
    stall bullfast's loop if run on it, and the blocking API refuses to run there); the jobs
    they get are blocking ones. ``close()`` lets the listeners of the events before it finish
    first, while the connection is still open; called from a listener (of any object), it
    does not wait for them: those queued behind it run after, and may find it closed. A
    ``with`` block closes it too."""

    _listeners: dict[tuple[str, Any], list[Callable[..., Any]]]

    def _bind(self, target: Any, runner: _Runner | None = None) -> None:
        super()._bind(target, runner)
        self._listeners = {}

    def _state(self) -> _ListenState:
        state = _listening.get(self._target)
        if state is None:
            state = _listening[self._target] = _ListenState()
        return state

    @port_keywords(event_name="event", function="listener")
    def on(self, event: str, listener: Callable[..., Any]) -> Callable[..., Any]:
        self._target.on(event, self._in_thread(event, listener, once=False))
        return listener

    @port_keywords(event_name="event", function="listener")
    def once(self, event: str, listener: Callable[..., Any]) -> Callable[..., Any]:
        self._target.once(event, self._in_thread(event, listener, once=True))
        return listener

    @port_keywords(event_name="event", function="listener")
    def off(self, event: str, listener: Callable[..., Any]) -> None:
        """Remove the listener (the one added last, if it was added more than once, as Node)."""
        forwards = self._listeners.get((event, listener))
        if forwards:
            self._target.off(event, forwards.pop())

    def remove_all_listeners(self, event: str | None = None) -> None:
        """Remove every listener of ``event``, or of every event."""
        self._target.remove_all_listeners(event)
        for key in [key for key in self._listeners if event is None or key[0] == event]:
            del self._listeners[key]

    # Node's EventEmitter names
    add_listener = addListener = on
    remove_listener = removeListener = off
    removeAllListeners = remove_all_listeners

    def _in_thread(self, event: str, listener: Callable[..., Any], once: bool) -> Callable[..., Any]:
        state, runner, target = self._state(), self._runner, self._target
        loop = self._loop().loop
        arity = _emitter_arity(listener)
        forwards = self._listeners.setdefault((event, listener), [])

        def call(args: tuple[Any, ...], done: asyncio.Future[None]) -> None:
            _in_listener.owner = target
            try:
                listener(*args)
            except Exception as exc:
                # an 'error' event, as the async emitter reports a listener that raises
                if event == "error" or not target.listener_count("error"):
                    log.exception("bullfast: listener for %r raised", event)
                else:
                    loop.call_soon_threadsafe(target.emit, "error", exc)
            finally:
                _in_listener.owner = None
                with contextlib.suppress(RuntimeError):  # (the loop is gone: at exit)
                    loop.call_soon_threadsafe(_resolve, done)

        def forward(*args: Any) -> asyncio.Future[None] | None:
            # on bullfast's loop: the listener is handed to its thread, and the future given
            # back to the emitter lets close() wait for it
            if once and forward in forwards:
                forwards.remove(forward)
            if state.shut:
                return None  # (closed: no thread to run it)
            args = tuple(_wrap(a, runner) for a in args)
            done: asyncio.Future[None] = loop.create_future()
            state.dispatched.add(done)
            done.add_done_callback(state.dispatched.discard)
            state.dispatch.submit(call, args if arity is None else args[:arity], done)
            # (closed by a listener: what comes now runs after it, and is not waited for)
            return None if state.closed_by_listener else done

        forwards.append(forward)
        return forward

    def close(self, *args: Any, **kwargs: Any) -> None:
        """As the async object's ``close`` (a Worker's ``force``, ``redis_timeout``). Called
        from one of the worker's own jobs ("stop after this job"), it starts the close and
        returns: the worker closes once that job has ended."""
        from_listener = getattr(_in_listener, "owner", None) is not None
        target = self._target
        if isinstance(target, _worker.Worker) and target._closes_from_own_job():
            # (made here: a wrong argument raises in the job, not in a task no one reads)
            closing = target._close_from_own_job(*args, **kwargs)
            asyncio.run_coroutine_threadsafe(_after_own_job_close(target, closing), self._loop().loop)
            return
        self._loop().call(self._close, from_listener, args, kwargs)
        state = _listening.get(self._target)
        if state is not None and not from_listener:
            # (from a listener, the thread must outlive this call: it runs that listener, and
            # the ones queued behind it)
            state.shut_down(wait=True)

    def __enter__(self) -> Any:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def _close(self, from_listener: bool, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> None:
        target = self._target
        state = _listening.get(target)
        if from_listener and state is not None:
            # a listener waits in this close: the listeners queued behind it (or, closing
            # another object, that object's listener that may wait for this one) cannot end
            # first; they are not waited for
            state.closed_by_listener = True
            for done in state.dispatched:
                target._listener_tasks.discard(done)
        elif not from_listener:
            await target._drain_listeners()  # (a Queue's close does not)
        await target.close(*args, **(kwargs or {}))


async def _after_own_job_close(target: _worker.Worker, closing: Awaitable[None]) -> None:
    """A worker closed by one of its own jobs: the close starts (the job goes on), and once
    it is over the listeners' thread ends, after the listeners already queued have run (its
    'error', 'closed', and an 'error' one of those raises)."""
    await closing
    if target._close_task is not None:
        await asyncio.wait({target._close_task})
    state = _listening.get(target)
    if state is None:
        return
    for _ in range(10):  # (a listener that raises queues its 'error': a few rounds)
        if not state.dispatched:
            break
        await asyncio.wait(set(state.dispatched))
    state.shut = True
    state.dispatch.shutdown(wait=False)


def _resolve(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


class Queue(_Listening):
    """Blocking :class:`bullfast.Queue` (same constructor and methods)."""

    def __init__(self, name: str, opts: Any = None, **kwargs: Any) -> None:
        self._bind(_construct(lambda: _queue.Queue(name, opts, **kwargs)))

    @classmethod
    def _of(cls, queue: Any, runner: _Runner | None = None) -> Queue:
        """The blocking view of an async queue (a job's ``queue``)."""
        q = cls.__new__(cls)
        q._bind(queue, runner)
        return q


class FlowProducer(_Listening):
    """Blocking :class:`bullfast.FlowProducer` (same constructor and methods)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._bind(_construct(lambda: _flow.FlowProducer(*args, **kwargs)))

    def fan_out(self, parent: Any, queues_options: Any = None, **kwargs: Any) -> FanOut:
        """``with producer.fan_out(node) as fan: fan.add_children(rows)`` (see bullfast.fanout)."""
        self._loop()
        return FanOut(self._target.fan_out(parent, queues_options, **kwargs))

    def resume_fan_out(self, queue_name: str, job_id: str, prefix: str | None = None) -> FanOut:
        return FanOut(self._loop().call(self._target.resume_fan_out, queue_name, job_id, prefix))


class FanOut(_Blocking):
    """Blocking :class:`bullfast.fanout.FanOut`; a plain iterable is read in bullfast's
    background thread, a chunk at a time."""

    def __init__(self, fan: _fanout.FanOut) -> None:
        self._bind(fan)

    @property
    def job(self) -> Job | None:
        return None if self._target.job is None else Job._of(self._target.job)

    def __enter__(self) -> FanOut:
        self._loop().call(self._target.open)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._loop().call(self._target.__aexit__, exc_type, exc, tb)


class QueueEvents(_Listening):
    """Blocking :class:`bullfast.QueueEvents`, for ``Job.wait_until_finished``, listeners
    (each in a thread of the QueueEvents' own, in order; they may use the blocking API) and
    ``for event in queue_events`` (blocks for each)."""

    def __init__(self, name: str, opts: Any = None, **kwargs: Any) -> None:
        self._bind(_construct(lambda: _events.QueueEvents(name, opts, **kwargs)))
        if self._target.running:  # (with autorun=False, nothing is read until run())
            self._loop().call(self._ready_or_raise)

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

    def start(self) -> None:
        """Start reading (after ``autorun=False``), in bullfast's background thread."""
        self._loop().call(self._start)

    async def _start(self) -> None:
        self._target.start()

    def __iter__(self) -> BlockingIterator:
        runner = self._loop()
        runner.check_not_in_loop()
        # one event at a time: a batch would wait for events that may never come
        return BlockingIterator(self._target.__aiter__(), batch=1, runner=runner)


class Worker(_Listening):
    """Blocking :class:`bullfast.Worker` (same constructor and methods). It processes jobs in
    bullfast's background thread and starts at once (unless ``autorun=False``: then ``run()``
    processes until the worker is closed from another thread or a listener). A plain-function
    processor runs in the worker's thread pool and gets a blocking :class:`Job`; an ``async
    def`` one runs on bullfast's loop. ``close()`` waits for the running jobs, as the async one.
    The manual API works too: ``job = worker.get_next_job(token)``, then
    ``job.move_to_completed(value, token)``."""

    def __init__(self, name: str, processor: Any = None, opts: Any = None, **kwargs: Any) -> None:
        self._bind(_construct(lambda: _worker.Worker(name, processor, opts, **kwargs)))

    @classmethod
    def _of(cls, worker: _worker.Worker, runner: _Runner | None = None) -> Worker:
        """The blocking view of an async worker (a processor's ``job.queue``)."""
        w = cls.__new__(cls)
        w._bind(worker, runner)
        return w

    def resume(self) -> None:
        self._loop().call(self._resume)

    async def _resume(self) -> None:
        await self._target.resume()

    def start(self) -> None:
        self._loop().call(self._start)

    async def _start(self) -> None:
        self._target.start()


class Job(_Blocking):
    """Blocking view of a :class:`bullfast.Job`: attributes as they are, methods blocking."""

    @classmethod
    def _of(cls, job: _job.Job, runner: _Runner | None = None) -> Job:
        j = cls.__new__(cls)
        j._bind(job, runner)
        return j

    @property
    def discarded(self) -> bool:
        """The port's flag, on the job itself: set by a processor, a failing attempt is not retried."""
        return bool(self._target.discarded)

    @discarded.setter
    def discarded(self, value: bool) -> None:
        self._target.discarded = value

    @property
    def queue(self) -> Queue | Worker:
        """The job's queue, blocking too; a processor's job has its worker there, as in BullMQ
        (``job.queue.rate_limit(ms)``)."""
        target = self._target.queue
        if isinstance(target, _worker.Worker):
            return Worker._of(target, self._runner)
        return Queue._of(target, self._runner)

    def wait_until_finished(self, queue_events: QueueEvents, timeout: float | None = None) -> Any:
        target = queue_events._target if isinstance(queue_events, QueueEvents) else queue_events
        return self._loop().call(self._target.wait_until_finished, target, timeout)

    @classmethod
    def from_id(cls, queue: Queue, job_id: str) -> Job | None:
        job = queue._loop().call(queue._target.get_job, job_id)
        return None if job is None else cls._of(job, queue._runner)

    @classmethod
    @port_keywords(rawData="raw", jobId="job_id")
    def from_json(cls, queue: Queue, raw: Mapping[Any, Any], job_id: str | None = None) -> Job:
        """A job from its hash's fields already read, as :meth:`bullfast.Job.from_json`."""
        return cls._of(_job.Job.from_json(queue._target, raw, job_id), queue._runner)

    @staticmethod
    @port_keywords(jobId="job_id", logRow="line", keepLogs="keep_logs")
    def add_job_log(queue: Queue, job_id: str, line: str, keep_logs: int = 0) -> int:
        """Append a line to a job's log without reading the job (bullmq's ``Job.addJobLog``)."""
        return queue._loop().call(_job.Job.add_job_log, queue._target, job_id, line, keep_logs)

    fromId = from_id
    fromJSON = from_json
    addJobLog = add_job_log
    waitUntilFinished = wait_until_finished


class JobNode(Mapping[str, Any]):
    """Blocking view of a :class:`bullfast.JobNode`; like it, also bullmq's read-only dict
    ``{"job": ..., "children": [...]}`` (a leaf has only ``"job"``)."""

    __eq__ = object.__eq__
    __hash__ = object.__hash__

    def __init__(self, node: _flow.JobNode, runner: _Runner | None = None) -> None:
        self._node = node
        self._runner = runner

    @property
    def job(self) -> Job:
        return Job._of(self._node.job, self._runner)

    @property
    def children(self) -> list[JobNode] | None:
        children = self._node.children
        return None if children is None else [JobNode(c, self._runner) for c in children]

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
            yield JobNode(node, self._runner)


def job_in_thread(job: _job.Job, loop: asyncio.AbstractEventLoop) -> Job:
    """The blocking view a plain-function processor gets, in the worker's pool thread: its
    methods run on the worker's loop (``job.update_progress(50)``, ``job.get_children_values()``).
    Called on that loop (from the coroutine of a lambda or a decorator without ``async``, which
    the worker awaits there), they are the async methods."""
    return Job._of(job, _ProcessorRunner(loop))


__all__ = ["BlockingIterator", "FanOut", "FlowProducer", "Job", "JobNode", "Queue", "QueueEvents", "Worker"]
