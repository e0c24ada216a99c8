"""The errors a processor raises to steer its job, where bullmq's Python port keeps them
(``bullmq.custom_errors``): the same classes as :mod:`bullfast.errors`."""

from __future__ import annotations

from .errors import DelayedError, RateLimitError, UnrecoverableError, WaitingChildrenError, WaitingError

__all__ = ["DelayedError", "RateLimitError", "UnrecoverableError", "WaitingChildrenError", "WaitingError"]
