"""BullMQ's camelCase names as aliases of ours, so code written for ``bullmq`` (the official
Python port, or a port of Node code) runs with ``import bullfast as bullmq``.

:func:`camel_aliases` adds, for every public snake_case method, property or slot of a class,
the same member under its camelCase name (``get_job_counts`` -> ``getJobCounts``); plain
instance attributes (set in ``__init__``, invisible to the class) are named in ``attributes``
and get a read/write property under their camelCase name (``qualified_name`` ->
``qualifiedName``).

BullMQ features bullfast does not implement are still *names* here (:func:`not_supported` and
the stand-in classes below), so code that reaches them fails with a
:class:`~bullfast.errors.NotSupportedError` that says what is missing, not with an
``AttributeError`` that reads like a typo.

:func:`port_keywords` lets a method take the port's keyword names too (``getJobs(types=...)``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any, NoReturn, TypeVar

from .errors import NotSupportedError

C = TypeVar("C", bound=type)
F = TypeVar("F", bound=Callable[..., Any])

JOB_SCHEDULERS = (
    "job schedulers (BullMQ's upsertJobScheduler and the other *JobScheduler* methods)",
    "add repeating jobs from a timer or cron of your own with Queue.add",
)
CANCELLATION = (
    "job cancellation (BullMQ's cancelJob, cancelAllJobs and the processor's AbortSignal)",
    "a processor can watch a flag of its own; Worker.close(force=True) stops every running job "
    "(the stalled check puts them back in wait)",
)
CUSTOM_EVENTS = (
    "publishing custom events (BullMQ's QueueEventsProducer)",
    "XADD to the queue's events stream with the client of your choice",
)


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def attribute_alias(name: str) -> property:
    """A read/write property that is another name of the instance attribute ``name``."""

    def get(self: Any) -> Any:
        return getattr(self, name)

    def set_(self: Any, value: Any) -> None:
        setattr(self, name, value)

    return property(get, set_, doc=f"BullMQ's name of ``{name}``.")


def camel_aliases(extra: dict[str, str] | None = None, attributes: Iterable[str] = ()) -> Any:
    """Class decorator: camelCase aliases of the public snake_case members, of the instance
    ``attributes`` named, and ``extra`` (alias -> our name, for names that do not follow the
    rule)."""

    def decorate(cls: C) -> C:
        def taken(alias: str) -> bool:
            return any(alias in vars(k) for k in cls.__mro__)

        for name in attributes:
            if not taken(camel(name)):
                setattr(cls, camel(name), attribute_alias(name))
        names: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            for name in vars(klass):
                if name.startswith("_") or "_" not in name:
                    continue
                names[camel(name)] = name
        names.update(extra or {})
        for alias, name in names.items():
            if not taken(alias):
                # the member as the class holds it: a staticmethod or classmethod stays one
                setattr(cls, alias, inspect.getattr_static(cls, name))
        return cls

    return decorate


def port_keywords(**renames: str) -> Callable[[F], F]:
    """A method (async or not) that also takes the bullmq Python port's keyword names
    (``port_keywords(types="states")``: ``get_jobs(types=...)`` is ``get_jobs(states=...)``)."""

    def decorate(method: F) -> F:
        def ours(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
            for theirs, mine in renames.items():
                if theirs in kwargs:
                    if mine in kwargs:
                        raise TypeError(f"{name}() got both {theirs!r} and {mine!r}")
                    kwargs[mine] = kwargs.pop(theirs)
            return kwargs

        if not inspect.iscoroutinefunction(method):
            @functools.wraps(method)
            def call_plain(*args: Any, **kwargs: Any) -> Any:
                return method(*args, **ours(method.__name__, kwargs))

            call_plain.port_keywords = renames  # type: ignore[attr-defined]  # (read by the surface test)
            return call_plain  # type: ignore[return-value]

        @functools.wraps(method)
        async def call(*args: Any, **kwargs: Any) -> Any:
            return await method(*args, **ours(method.__name__, kwargs))

        call.port_keywords = renames  # type: ignore[attr-defined]
        return call  # type: ignore[return-value]

    return decorate


def unsupported_message(feature: tuple[str, str]) -> str:
    what, instead = feature
    return f"not supported by bullfast: {what}; {instead}"


def not_supported(feature: tuple[str, str]) -> Callable[..., NoReturn]:
    """A method that refuses, at the call, with what is missing and what to do instead."""
    what, instead = feature

    def refuse(*args: Any, **kwargs: Any) -> NoReturn:
        raise NotSupportedError(unsupported_message(feature))

    refuse.__doc__ = f"Not supported: {what}. {instead[:1].upper()}{instead[1:]}."
    return refuse


class _NotSupported:
    """A BullMQ class bullfast does not implement: importable, refused when constructed."""

    _feature: tuple[str, str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        not_supported(self._feature)()


class JobScheduler(_NotSupported):
    """Not supported: BullMQ's job schedulers (repeatable jobs)."""

    _feature = JOB_SCHEDULERS


class AbortController(_NotSupported):
    """Not supported: BullMQ's job cancellation."""

    _feature = CANCELLATION


class AbortSignal(_NotSupported):
    """Not supported: BullMQ's job cancellation."""

    _feature = CANCELLATION


class QueueEventsProducer(_NotSupported):
    """Not supported: publishing custom events."""

    _feature = CUSTOM_EVENTS
