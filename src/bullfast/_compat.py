"""BullMQ's camelCase names as aliases of ours, so code written for ``bullmq`` (the official
Python port, or a port of Node code) runs with ``import bullfast as bullmq``.

:func:`camel_aliases` adds, for every public snake_case method, property or slot of a class,
the same member under its camelCase name (``get_job_counts`` -> ``getJobCounts``).
"""

from __future__ import annotations

from typing import Any, TypeVar

C = TypeVar("C", bound=type)


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def camel_aliases(extra: dict[str, str] | None = None) -> Any:
    """Class decorator: camelCase aliases of the public snake_case members (and ``extra``:
    alias -> our name, for names that do not follow the rule)."""

    def decorate(cls: C) -> C:
        names: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            for name in vars(klass):
                if name.startswith("_") or "_" not in name:
                    continue
                names[camel(name)] = name
        names.update(extra or {})
        for alias, name in names.items():
            if alias not in vars(cls) and not any(alias in vars(k) for k in cls.__mro__[1:]):
                setattr(cls, alias, getattr(cls, name))
        return cls

    return decorate
