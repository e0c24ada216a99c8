"""bullfast: BullMQ-compatible job flows for Python, with a compiled core for huge fan-outs."""

from . import custom_errors, types  # (the modules of bullmq's Python port, for its users)
from ._compat import AbortController, AbortSignal, JobScheduler, QueueEventsProducer
from ._version import __version__
from .errors import (
    AbortError,
    BullfastError,
    DelayedError,
    NotSupportedError,
    RateLimitError,
    UnrecoverableError,
    WaitingChildrenError,
    WaitingError,
)
from .events import QueueEvent, QueueEvents
from .flow import FlowProducer, JobNode
from .job import Job
from .queue import Queue
from .worker import Worker

__all__ = [
    "__version__",
    "AbortController",
    "AbortError",
    "AbortSignal",
    "BullfastError",
    "DelayedError",
    "FlowProducer",
    "Job",
    "JobNode",
    "JobScheduler",
    "NotSupportedError",
    "Queue",
    "QueueEvent",
    "QueueEvents",
    "QueueEventsProducer",
    "RateLimitError",
    "UnrecoverableError",
    "WaitingChildrenError",
    "WaitingError",
    "Worker",
    "custom_errors",
    "types",
]
