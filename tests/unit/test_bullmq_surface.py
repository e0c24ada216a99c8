"""Every public name of bullmq's (the Python port's) Queue, Worker, Job, FlowProducer and
QueueEvents exists on bullfast's, so ``import bullfast as bullmq`` code finds what it uses.

The names are read from the installed ``bullmq`` package itself (a test dependency): its
classes' public methods and properties, and the attributes their methods assign
(``self.attemptsMade = ...``, found in their source). A name bullfast deliberately leaves out is
in ``NOT_OFFERED`` below with the reason; a feature bullfast does not implement is still a name
that raises :class:`~bullfast.errors.NotSupportedError` (checked in ``UNSUPPORTED``).
No Redis is needed: objects are built without connecting.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from typing import Any

import bullmq
import pytest

import bullfast
from bullfast.errors import NotSupportedError

CLASSES = ("Queue", "Worker", "Job", "FlowProducer", "QueueEvents")

# bullmq's objects that hold its own machinery: bullfast has its own and does not pretend to
# have bullmq's (``client``, a redis.asyncio client, is offered on every class).
QUEUE_MACHINERY = {"backend", "redisConnection", "scripts"}

NOT_OFFERED: dict[str, dict[str, str]] = {
    "Queue": {
        **dict.fromkeys(QUEUE_MACHINERY, "bullmq's internal machinery"),
        "sanitizeJobTypes": "a helper of bullmq's getJobs; bullfast checks state names itself",
    },
    "Worker": {
        **dict.fromkeys(QUEUE_MACHINERY | {"lockManager"}, "bullmq's internal machinery"),
        # the steps of bullmq's fetch loop; bullfast fetches and finishes in batches instead
        # (Worker.get_next_job is the public way to take a job by hand)
        "bclient": "bullmq's blocking client; bullfast's is private",
        "blockingRedisConnection": "bullmq's blocking connection; bullfast's is private",
        "blockUntil": "fetch-loop state",
        "limitUntil": "fetch-loop state",
        "drained": "fetch-loop state (listen to the 'drained' event)",
        "waiting": "fetch-loop state",
        "processing": "fetch-loop state (the running tasks)",
        "jobs": "fetch-loop state",
        "resume_event": "fetch-loop state",
        "forceClosing": "close() state; bullfast's close(force=True) is not observable",
        "stalledCheckTimer": "bullmq's timer object; bullfast runs the check as a task",
        "getBlockTimeout": "fetch-loop step",
        "minimumBlockTimeout": "fetch-loop constant",
        "maximumBlockTimeout": "fetch-loop constant",
        "waitForJob": "fetch-loop step",
        "moveToActive": "fetch-loop step (bullfast moves jobs in batches)",
        "nextJobFromJobData": "fetch-loop step",
        "processJob": "fetch-loop step",
        "retryIfFailed": "fetch-loop step",
        "isConnectionError": "fetch-loop helper",
        "extendLocks": "lock-renewal step (bullfast renews in bulk; Job.extend_lock for one job)",
        "jobScheduler": "bullmq's scheduler hook inside the worker; job schedulers are not supported",
    },
    "Job": {
        "backend": "bullmq's internal machinery",
        "updateStacktrace": "a step of bullmq's moveToFailed",
    },
    "FlowProducer": {
        "backend": "bullmq's internal machinery",
        # the steps of bullmq's add, which bullfast plans in its compiled core
        "addChildren": "a step of bullmq's add",
        "addNode": "a step of bullmq's add",
        "addNodes": "a step of bullmq's add",
        "queueFromNode": "a step of bullmq's add",
    },
    "QueueEvents": {
        "redisConnection": "bullmq's internal machinery",
    },
}

# Names that exist and raise NotSupportedError: (class, name, call it?) -- a property raises
# when read.
UNSUPPORTED = [
    ("Queue", "upsertJobScheduler", True),
    ("Queue", "removeJobScheduler", True),
    ("Queue", "isJobScheduler", True),
    ("Queue", "getJobScheduler", True),
    ("Queue", "getJobSchedulers", True),
    ("Queue", "getJobSchedulersCount", True),
    ("Queue", "jobScheduler", False),
    ("Worker", "cancelJob", True),
    ("Worker", "cancelAllJobs", True),
    ("Worker", "cancelProcessing", True),
]

# bullmq's top-level names that bullfast leaves out, and why.
NOT_OFFERED_AT_TOP = {"LockManager": "bullmq's lock-renewal machinery"}
# bullmq's top-level classes bullfast has only as refusals.
UNSUPPORTED_AT_TOP = ("JobScheduler", "AbortController", "AbortSignal", "QueueEventsProducer")


def assigned_attributes(cls: type) -> set[str]:
    """Public attributes bullmq's own methods assign on ``self``, read from its source."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if not klass.__module__.startswith("bullmq"):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and isinstance(node.value, ast.Name)
                and node.value.id == "self"
            ):
                names.add(node.attr)
    return {n for n in names if not n.startswith("_")}


def bullmq_names(class_name: str) -> set[str]:
    cls = getattr(bullmq, class_name)
    return {n for n in dir(cls) if not n.startswith("_")} | assigned_attributes(cls)


async def instances() -> dict[str, Any]:
    """One bullfast object of each class, built without connecting to anything."""
    url = "redis://127.0.0.1:9"  # never contacted: nothing here sends a command
    queue = bullfast.Queue("surface", {"connection": url, "prefix": "surface"})
    return {
        "Queue": queue,
        "Worker": bullfast.Worker("surface", None, {"connection": url, "autorun": False}),
        "Job": bullfast.Job(queue, "name", {"a": 1}, {"attempts": 3, "removeOnComplete": 10}, "1"),
        "FlowProducer": bullfast.FlowProducer({"connection": url}),
        "QueueEvents": bullfast.QueueEvents("surface", {"connection": url, "autorun": False}),
    }


def offers(obj: Any, name: str) -> bool:
    """Whether ``obj`` has ``name``, without running a property (one that refuses counts)."""
    try:
        inspect.getattr_static(obj, name)
        return True
    except AttributeError:
        return False


def test_bullmq_classes_are_introspected() -> None:
    # guards the test itself: an empty name list would let everything below pass
    assert {"addBulk", "getJobCounts", "qualifiedName", "opts"} <= bullmq_names("Queue")
    assert {"attemptsMade", "returnvalue", "failedReason", "parentKey", "getChildrenValues"} <= bullmq_names("Job")
    assert {"id", "running", "closing", "opts", "getNextJob"} <= bullmq_names("Worker")


@pytest.mark.parametrize("class_name", CLASSES)
async def test_every_public_bullmq_name_exists_on_bullfast(class_name: str) -> None:
    obj = (await instances())[class_name]
    allowed = NOT_OFFERED[class_name]
    missing = sorted(n for n in bullmq_names(class_name) - set(allowed) if not offers(obj, n))
    assert missing == [], f"{class_name} lacks bullmq's {missing}"
    # the allow-list holds only names bullmq really has and bullfast really lacks
    stale = sorted(n for n in allowed if n not in bullmq_names(class_name) or offers(obj, n))
    assert stale == [], f"NOT_OFFERED[{class_name!r}] is out of date: {stale}"


def keywords_taken(member: Any) -> tuple[set[str], bool]:
    """The keyword names a bullfast method takes (its own and the port's, see
    ``port_keywords``), and whether it takes any (``**kwargs``)."""
    names: set[str] = set()
    layer = member
    while layer is not None:
        names |= set(getattr(layer, "port_keywords", {}))
        layer = getattr(layer, "__wrapped__", None)
    params = inspect.signature(member).parameters.values()
    names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def call_parameters(cls: type, name: str) -> list[inspect.Parameter]:
    """The parameters a caller of ``cls.name`` passes (``self`` / ``cls`` left out)."""
    params = list(inspect.signature(getattr(cls, name)).parameters.values())
    plain_method = not isinstance(inspect.getattr_static(cls, name), (staticmethod, classmethod))
    return params[1:] if plain_method else params


@pytest.mark.parametrize("class_name", CLASSES)
def test_bullmq_methods_keyword_names_are_taken(class_name: str) -> None:
    """Port code calls methods with its keyword names (``queue.remove(id, opts={...})``,
    ``job.isInZSet(set="delayed")``): each one a bullfast method of the same name takes."""
    theirs = getattr(bullmq, class_name)
    ours = getattr(bullfast, class_name)
    unsupported = {n for c, n, _ in UNSUPPORTED if c == class_name}
    refused = []
    checked = 0
    for name, _ in inspect.getmembers(theirs, inspect.isfunction):
        if name.startswith("_") or name in NOT_OFFERED[class_name] or name in unsupported or not hasattr(ours, name):
            continue
        taken, anything = keywords_taken(getattr(ours, name))
        checked += 1
        for param in call_parameters(theirs, name):
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or anything:
                continue
            if param.name not in taken:
                refused.append(f"{name}({param.name}=)")
    assert checked >= 5  # guards the test itself
    assert refused == [], f"bullfast's {class_name} refuses the port's keywords {refused}"


def test_every_top_level_bullmq_name_exists_on_bullfast() -> None:
    public = {n for n in vars(bullmq) if not n.startswith("_")}
    names = {n for n in public if inspect.isclass(getattr(bullmq, n))}
    assert {"Queue", "Worker", "UnrecoverableError"} <= names
    missing = sorted(n for n in names - set(NOT_OFFERED_AT_TOP) if not hasattr(bullfast, n))
    assert missing == []
    assert not any(hasattr(bullfast, n) for n in NOT_OFFERED_AT_TOP)


def test_the_ports_error_and_option_type_modules_exist_on_bullfast() -> None:
    """``bullmq.custom_errors.UnrecoverableError`` and ``bullmq.types.WorkerOptions`` (used by
    the port's users in imports and annotations) under ``import bullfast as bullmq``."""
    import bullmq.custom_errors
    import bullmq.types

    import bullfast.types

    for module in ("custom_errors", "types"):
        theirs, ours = getattr(bullmq, module), getattr(bullfast, module)
        names = {n for n, v in vars(theirs).items() if not n.startswith("_") and not inspect.ismodule(v)}
        assert len(names) >= 3
        assert sorted(n for n in names if not hasattr(ours, n)) == [], module
    assert bullfast.custom_errors.UnrecoverableError is bullfast.UnrecoverableError
    # TypedDicts: plain dicts, with the keys the port's have
    assert bullfast.types.WorkerOptions(concurrency=5, drainDelay=0.1) == {"concurrency": 5, "drainDelay": 0.1}
    for name in ("JobOptions", "WorkerOptions", "QueueBaseOptions", "QueueEventsOptions", "KeepJobs"):
        assert set(getattr(bullmq.types, name).__annotations__) <= set(getattr(bullfast.types, name).__annotations__)


@pytest.mark.parametrize("name", UNSUPPORTED_AT_TOP)
def test_unsupported_bullmq_classes_refuse_to_be_built(name: str) -> None:
    with pytest.raises(NotSupportedError, match="not supported by bullfast"):
        getattr(bullfast, name)()


@pytest.mark.parametrize(("class_name", "name", "call"), UNSUPPORTED)
async def test_unsupported_features_raise_a_typed_error(class_name: str, name: str, call: bool) -> None:
    assert name in bullmq_names(class_name)  # still one of bullmq's names
    obj = (await instances())[class_name]
    with pytest.raises(NotSupportedError, match="not supported by bullfast") as info:
        member = getattr(obj, name)
        if call:
            member("some-id", {"every": 1000})
    assert isinstance(info.value, NotImplementedError)
    assert not isinstance(info.value, AttributeError)


async def test_instance_attributes_have_their_camel_case_names() -> None:
    objs = await instances()
    queue, worker, job, events = objs["Queue"], objs["Worker"], objs["Job"], objs["QueueEvents"]
    assert queue.qualifiedName == queue.qualified_name == "surface:surface"
    assert queue.opts == {"connection": "redis://127.0.0.1:9", "prefix": "surface"}
    assert queue.jobsOpts == {}
    assert queue.keys["wait"] == "surface:surface:wait" and queue.keys[""] == "surface:surface:"
    assert worker.qualifiedName == "bull:surface"
    assert (worker.running, worker.closing, worker.closed, worker.paused) == (False, False, False, False)
    assert worker.id and isinstance(worker.id, str)
    assert worker.opts["concurrency"] == 1 and worker.opts["lockDuration"] == 30000
    assert worker.opts["autorun"] is False  # what it was given is kept
    worker.workerName = "w1"
    assert worker.worker_name == "w1"
    assert events.qualifiedName == "bull:surface" and events.opts == {"connection": "redis://127.0.0.1:9", "autorun": False}
    assert (events.running, events.closing, events.closed) == (False, False, False)
    # a Job's slots and properties
    assert (job.attempts, job.removeOnComplete, job.removeOnFail) == (3, 10, None)
    job.attempts_made = 2
    job.failedReason = "why"
    assert (job.attemptsMade, job.failed_reason, job.queueQualifiedName) == (2, "why", "surface:surface")
    for snake, camel in [("returnvalue", "returnvalue"), ("processed_on", "processedOn"),
                         ("finished_on", "finishedOn"), ("parent_key", "parentKey"),
                         ("attempts_started", "attemptsStarted"), ("stalled_counter", "stalledCounter"),
                         ("deferred_failure", "deferredFailure"), ("repeat_job_key", "repeatJobKey")]:
        setattr(job, snake, f"v-{snake}")
        assert getattr(job, camel) == f"v-{snake}"


def test_a_job_made_by_hand_takes_its_id_from_the_options() -> None:
    """bullmq's Job(queue, name, data, {"jobId": ...}) has that id."""
    assert bullfast.Job(None, "n", {}, {"jobId": "x"}).id == "x"  # type: ignore[arg-type]
    assert bullfast.Job(None, "n", {}, {"jobId": "x"}, "given").id == "given"  # type: ignore[arg-type]
    assert bullfast.Job(None, "n").id is None  # type: ignore[arg-type]


def test_camel_aliases_keep_static_and_class_methods() -> None:
    """Job.addJobLog is a staticmethod like add_job_log, and Job.fromJSON a classmethod (a
    subclass's makes the subclass); they were a plain function and a method bound to Job."""
    import inspect

    from bullfast import Job

    assert isinstance(inspect.getattr_static(Job, "addJobLog"), staticmethod)
    assert isinstance(inspect.getattr_static(Job, "fromJSON"), classmethod)

    class MyJob(Job):
        pass

    made = MyJob.fromJSON(object(), {"name": "a", "data": "{}"}, "1")  # type: ignore[arg-type]
    assert type(made) is MyJob


async def test_the_times_of_a_job_not_yet_run_read_zero_by_the_ports_names() -> None:
    """The port's Job has processedOn / finishedOn 0 until set (code compares them with 0);
    bullfast's snake_case names say None."""
    job = (await instances())["Job"]
    assert (job.processedOn, job.finishedOn) == (0, 0)
    assert (job.processed_on, job.finished_on) == (None, None)
    job.finished_on = 1700000000000
    assert job.finishedOn == 1700000000000 and job.finishedOn > 0
    job.processedOn = 1700000000001
    assert job.processed_on == 1700000000001


@pytest.mark.parametrize("class_name", CLASSES)
async def test_the_ports_backend_option_redis_is_taken_and_others_refused(class_name: str) -> None:
    """bullmq's opts may name its store: {"backend": "redis"} is bullfast's own; "postgres"
    is refused at once with a typed error (nothing connects)."""
    url = "redis://127.0.0.1:9"
    make = {
        "Queue": lambda opts: bullfast.Queue("surface", opts),
        "Worker": lambda opts: bullfast.Worker("surface", None, {**opts, "autorun": False}),
        "Job": lambda opts: bullfast.Queue("surface", opts),
        "FlowProducer": lambda opts: bullfast.FlowProducer(opts),
        "QueueEvents": lambda opts: bullfast.QueueEvents("surface", {**opts, "autorun": False}),
    }[class_name]
    assert make({"connection": url, "backend": "redis"}) is not None
    with pytest.raises(NotSupportedError, match="'postgres' backend") as info:
        make({"connection": url, "backend": "postgres"})
    assert isinstance(info.value, bullfast.errors.InvalidOptionError)
