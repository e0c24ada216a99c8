"""The one error tree of bullfast.

Everything bullfast raises for a domain reason derives from :class:`BullfastError`. Errors about
the caller's input also derive from :class:`ValueError` (or :class:`TypeError`), so generic
handlers keep working. Codes returned by the server scripts map to classes in one table,
:data:`SERVER_ERRORS`.
"""

from __future__ import annotations

from . import _wire


class BullfastError(Exception):
    """Base class of every error bullfast raises on purpose."""


# -- the caller's input -----------------------------------------------------------------------


class InvalidInputError(BullfastError, ValueError):
    """Bad input. ``path`` names the flow node it was found at (``"root.children[2]"``) or is
    ``None`` outside flows. Nothing was written to Redis."""

    def __init__(self, message: str, path: str | None = None) -> None:
        self.path = path
        self.detail = message
        super().__init__(f"{path}: {message}" if path else message)


class InvalidFlowError(InvalidInputError):
    """A flow tree is malformed (missing name or queue, children not a list, too deep, a node
    reached twice)."""


class InvalidOptionError(InvalidInputError):
    """An unknown job option, or a known one with a value of the wrong type or range, or one
    given under two names (``jobId`` and ``job_id``) with different values."""


class InvalidConnectionError(InvalidOptionError, TypeError):
    """``connection=`` is neither a URL, a mapping of redis options, nor a redis client, or
    the mapping holds options redis-py does not know. (Also a ``TypeError``: that is what a
    wrong kind of argument has always raised in Python.)"""


class InvalidJobIdError(InvalidInputError):
    """A custom job id BullMQ cannot use (an integer, contains ``:``, empty...)."""


class InvalidQueueNameError(InvalidInputError):
    """A queue name that is empty or contains ``:``."""


class DataNotSerializableError(InvalidInputError):
    """Job data (or a return value, or progress) that cannot be encoded as JSON."""


class DataTooLargeError(InvalidInputError):
    """Job data larger than the job's ``size_limit``."""


# -- Redis and the server scripts -------------------------------------------------------------


class CrossSlotError(InvalidInputError):
    """On Redis Cluster, an operation whose keys would span several hash slots (queues without a
    shared hash tag in their prefix). Refused before anything is written."""


class ConnectionClosedError(BullfastError, RuntimeError):
    """The queue, flow producer, worker or QueueEvents (or the one a job came from) was closed;
    nothing was sent. (Before, a call reconnected, and left that connection open.)"""


class EventLoopError(BullfastError, RuntimeError):
    """A queue, flow producer, worker or QueueEvents used where its event loop is not: from an
    event loop other than the one it was first used in (a second ``asyncio.run``: its
    connections belong to that loop), made to start at once outside any loop, or a blocking
    call of :mod:`bullfast.sync` made inside a running loop. Nothing was sent. Make one per
    loop, or use :mod:`bullfast.sync` from plain code."""


class RedisUnavailableError(BullfastError, OSError):
    """Redis could not be reached, or the connection broke before the operation was sent, or
    a read got no answer: nothing of it was written. (:class:`OutcomeUnknownError` is the case
    where a write was sent.)"""


class OutcomeUnknownError(RedisUnavailableError):
    """A write was sent, then the connection broke or the reply did not come in time: Redis may
    or may not have applied it (atomic operations, such as a flow add, wholly or not at all).
    Retrying an add is safe with job ids of one's own (``Queue.add`` of an existing id returns
    the existing job; a flow refuses it with :class:`JobExistsError`), or after reading back
    what is there."""


class UnrecoverableError(BullfastError):
    """Raised by a processor: fail the job now, without using the remaining attempts."""


class ServerError(BullfastError):
    """A server script refused an operation. ``code`` is the script's code (BullMQ's numbering,
    see protocol section 10). ``path`` names the flow node (or the job of an ``add_bulk``) the
    refusal is about, as :class:`InvalidInputError` does, or is ``None``."""

    code: int = 0

    def __init__(self, message: str, code: int | None = None, path: str | None = None) -> None:
        if code is not None:
            self.code = code
        self.path = path
        self.detail = message
        super().__init__(f"{path}: {message}" if path else message)


class JobStateError(ServerError, TypeError):
    """The job, its lock, its state or its parent is not as the operation needs (BullMQ's codes
    -1 to -8). Also a :class:`TypeError`, as the bullmq Python port raises these, so that its
    users' ``except TypeError`` still catches them."""


class JobNotFoundError(JobStateError):
    code = _wire.ERR_JOB_NOT_EXIST


class LockMissingError(JobStateError):
    code = _wire.ERR_LOCK_NOT_EXIST


class JobNotInStateError(JobStateError):
    code = _wire.ERR_JOB_NOT_IN_STATE


class PendingChildrenError(JobStateError):
    code = _wire.ERR_PENDING_CHILDREN


class ParentNotFoundError(JobStateError):
    """The parent named by a child does not exist; nothing was written."""

    code = _wire.ERR_PARENT_NOT_EXIST


class LockMismatchError(JobStateError):
    code = _wire.ERR_LOCK_MISMATCH


class ParentCannotBeReplacedError(JobStateError):
    """A job id already belongs to another existing parent; nothing was written."""

    code = _wire.ERR_PARENT_CANNOT_BE_REPLACED


class JobBelongsToSchedulerError(JobStateError):
    code = _wire.ERR_JOB_BELONGS_TO_SCHEDULER


class JobHasFailedChildrenError(ServerError, UnrecoverableError):
    """A parent cannot complete or wait for more children: a child failed with
    fail_parent_on_failure. Unrecoverable, as in BullMQ: raised in a processor (by
    ``move_to_waiting_children``, say), it fails the job at once, its attempts left unused."""

    code = _wire.ERR_JOB_HAS_FAILED_CHILDREN


class JobFailedError(BullfastError):
    """Raised by ``Job.wait_until_finished`` when the job failed; the message is its reason."""

    def __init__(self, message: str, job_id: str | None = None) -> None:
        self.job_id = job_id
        super().__init__(message)


class NotSupportedError(BullfastError, NotImplementedError):
    """A BullMQ feature bullfast does not implement (job schedulers, job cancellation...).
    Raised at the call, before anything is sent to Redis; the message names the feature."""


class UnsupportedOptionError(InvalidOptionError, NotSupportedError):
    """A job option of a BullMQ feature bullfast does not implement (``repeat``: job
    schedulers): an :class:`InvalidOptionError`, and a :class:`NotSupportedError` as the
    feature's methods raise; nothing was written."""


class JobLockedError(BullfastError):
    """The job (or one of its pending children) is being processed by a worker."""


class ObliterateRefusedError(BullfastError):
    """``Queue.obliterate`` refused to delete the queue; see the subclasses."""


class QueueHasActiveJobsError(ObliterateRefusedError):
    """``obliterate()`` without ``force`` on a queue whose jobs are being processed. Nothing was
    deleted, and the queue is left paused or not as it was before the call."""


class QueueNotPausedError(ObliterateRefusedError):
    """The queue was resumed by someone else while ``obliterate`` was deleting it: it stopped
    there, and part of the queue may already be deleted."""


class JobExistsError(ServerError):
    """A flow node's custom id is already taken by a job; nothing was written."""

    code = _wire.ERR_JOB_EXISTS


class WrongKeyTypeError(ServerError):
    """A key bullfast must write (a queue's list, a parent's dependencies...) holds another
    type, probably another application's key; refused before anything was written."""

    code = _wire.ERR_KEY_WRONG_TYPE


class ScriptError(ServerError):
    """Redis stopped one of bullfast's scripts with an error of its own (out of memory, a key
    changed under it); ``__cause__`` is redis-py's ``ResponseError``."""


SERVER_ERRORS: dict[int, type[ServerError]] = {
    cls.code: cls
    for cls in (
        JobNotFoundError,
        LockMissingError,
        JobNotInStateError,
        PendingChildrenError,
        ParentNotFoundError,
        LockMismatchError,
        ParentCannotBeReplacedError,
        JobBelongsToSchedulerError,
        JobHasFailedChildrenError,
        JobExistsError,
        WrongKeyTypeError,
    )
}

# BullMQ's messages ({0} the job id or key, {1} the code, {2} the command, {3} the state the job
# was expected in)
_MESSAGES = {
    _wire.ERR_JOB_NOT_EXIST: "Missing key for job {0}. {2}",
    _wire.ERR_LOCK_NOT_EXIST: "Missing lock for job {0}. {2}",
    _wire.ERR_JOB_NOT_IN_STATE: "Job {0} is not in the {3} state. {2}",
    _wire.ERR_PENDING_CHILDREN: "Job {0} has pending dependencies. {2}",
    _wire.ERR_PARENT_NOT_EXIST: "Missing key for parent job {0}. {2}",
    _wire.ERR_LOCK_MISMATCH: "Lock mismatch for job {0}. Cmd {2} from {3}",
    _wire.ERR_PARENT_CANNOT_BE_REPLACED: "The parent job {0} cannot be replaced. {2}",
    _wire.ERR_JOB_BELONGS_TO_SCHEDULER: "Job {0} belongs to a job scheduler and cannot be removed directly. {2}",
    _wire.ERR_JOB_HAS_FAILED_CHILDREN: "Cannot complete job {0} because it has at least one failed child. {2}",
    _wire.ERR_JOB_EXISTS: "Job {0} already exists. {2}",
    _wire.ERR_KEY_WRONG_TYPE: "Key {0} holds another type than bullfast writes there (another application's key?). {2}",
}


def server_error(
    code: int, subject: str, command: str, path: str | None = None, state: str = "expected"
) -> ServerError:
    """The typed error for a script's negative ``code`` about ``subject`` (a job id or key);
    ``path``: the node of the caller's input it concerns; ``state``: the state the job had to
    be in. The message is BullMQ's, after the path."""
    cls = SERVER_ERRORS.get(code, ServerError)
    template = _MESSAGES.get(code, "Unknown code {1} error for {0}. {2}")
    return cls(template.format(subject, code, command, state), code, path)


def script_error(exc: Exception, what: str, state: str) -> ScriptError:
    """The typed error of a script Redis stopped with an error: ``what`` it was, and ``state``,
    what the caller knows of what stands written."""
    err = ScriptError(f"Redis stopped {what} with an error ({exc}); {state}")
    err.__cause__ = exc
    return err


# -- raised by processors to steer the worker (BullMQ's names) ---------------------------------


class DelayedError(BullfastError):
    """Raised by a processor after moving its job to delayed itself."""


class WaitingChildrenError(BullfastError):
    """Raised by a processor after moving its job to waiting-children itself."""


class WaitingError(BullfastError):
    """Raised by a processor after moving its job back to wait itself."""


class AbortError(BullfastError):
    """BullMQ's error for a cancelled job. bullfast never raises it (job cancellation is not
    supported); it exists so that code written for ``bullmq`` that catches it still imports."""


class RateLimitError(BullfastError):
    """Raised by a processor after rate-limiting the queue: the job goes back to wait."""

    def __init__(self, message: str = "bullmq:rateLimitExceeded") -> None:
        super().__init__(message)
