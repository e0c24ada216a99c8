"""bullfast: BullMQ-compatible job flows for Python, with a compiled core for huge fan-outs."""

from ._version import __version__
from .errors import (
    BullfastError,
    DelayedError,
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
    "BullfastError",
    "DelayedError",
    "FlowProducer",
    "Job",
    "JobNode",
    "Queue",
    "QueueEvent",
    "QueueEvents",
    "RateLimitError",
    "UnrecoverableError",
    "WaitingChildrenError",
    "WaitingError",
    "Worker",
]
