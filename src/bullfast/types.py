"""The option dicts of bullmq's Python port (``bullmq.types``), as ``TypedDict`` types for
code written against it: ``WorkerOptions(concurrency=5)`` is a plain dict. They list the
camelCase keys of the port; bullfast takes the snake_case spellings, and options the port
lacks, as well (README, "Options")."""

from __future__ import annotations

from typing import Any, TypedDict

import redis.asyncio as aioredis

ConnectionOptions = str | dict[str, Any] | aioredis.Redis | aioredis.RedisCluster
"""A Redis URL, redis-py keyword arguments, or a ``redis.asyncio`` client (or cluster)."""


class BackoffOptions(TypedDict, total=False):
    type: str | dict[str, Any]
    delay: int
    jitter: float


class KeepJobs(TypedDict, total=False):
    age: int
    count: int
    limit: int


class DeduplicationOptions(TypedDict, total=False):
    id: str
    ttl: int
    extend: bool
    replace: bool
    keepLastIfActive: bool


class ParentOptions(TypedDict, total=False):
    id: str
    queue: str


class JobOptions(TypedDict, total=False):
    backoff: int | BackoffOptions
    jobId: str
    timestamp: int
    delay: int
    attempts: int
    priority: int
    lifo: bool
    removeOnComplete: bool | int | KeepJobs
    removeOnFail: bool | int | KeepJobs
    stackTraceLimit: int
    keepLogs: int
    sizeLimit: int
    deduplication: DeduplicationOptions
    parent: ParentOptions
    failParentOnFailure: bool
    continueParentOnFailure: bool
    ignoreDependencyOnFailure: bool
    removeDependencyOnFailure: bool


class QueueBaseOptions(TypedDict, total=False):
    prefix: str
    connection: ConnectionOptions
    defaultJobOptions: JobOptions
    skipVersionCheck: bool
    skipWaitingForReady: bool


class WorkerOptions(TypedDict, total=False):
    name: str
    autorun: bool
    concurrency: int
    maxStalledCount: int
    stalledInterval: int
    lockDuration: int
    lockRenewTime: int
    drainDelay: float
    limiter: dict[str, int]
    removeOnComplete: bool | int | KeepJobs
    removeOnFail: bool | int | KeepJobs
    prefix: str
    connection: ConnectionOptions
    skipVersionCheck: bool
    skipWaitingForReady: bool


class QueueEventsOptions(TypedDict, total=False):
    prefix: str
    connection: ConnectionOptions
    autorun: bool
    blockingTimeout: int
    lastEventId: str
    skipVersionCheck: bool


class QueueEventsProducerOptions(TypedDict, total=False):
    prefix: str
    connection: ConnectionOptions
    skipVersionCheck: bool


class PromoteJobsOptions(TypedDict, total=False):
    count: int


class RetryJobsOptions(TypedDict, total=False):
    state: str
    count: int
    timestamp: int


class RepeatOptions(TypedDict, total=False):
    pattern: str
    every: int
    limit: int
    startDate: int | str | float
    endDate: int | str | float
    tz: str
    offset: int
    immediately: bool
    count: int


class JobSchedulerTemplateJson(TypedDict, total=False):
    data: object
    opts: dict[str, Any]


class JobSchedulerJson(TypedDict, total=False):
    key: str
    name: str
    next: int | None
    id: str | None
    iterationCount: int
    limit: int
    startDate: int
    endDate: int
    tz: str
    pattern: str
    every: int
    offset: int
    template: JobSchedulerTemplateJson


__all__ = [
    "BackoffOptions", "ConnectionOptions", "DeduplicationOptions", "JobOptions", "JobSchedulerJson",
    "JobSchedulerTemplateJson", "KeepJobs", "ParentOptions", "PromoteJobsOptions", "QueueBaseOptions",
    "QueueEventsOptions", "QueueEventsProducerOptions", "RepeatOptions", "RetryJobsOptions", "WorkerOptions",
]
