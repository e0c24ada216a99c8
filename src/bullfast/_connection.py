"""Turning ``connection=`` into a Redis client, and running our scripts on it.

``connection`` may be a URL string, a mapping of ``redis.asyncio.Redis`` keyword arguments
(``{"host": ..., "port": ...}``, or ``{"url": ...}``), an existing ``redis.asyncio.Redis`` (which
bullfast then never closes), or ``None`` for ``$REDIS_URL`` (default ``redis://localhost:6379``).
bullfast always talks bytes: a client made with ``decode_responses=True`` is cloned without it.
"""

from __future__ import annotations

import asyncio
import math
import os
import sys
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.exceptions import (
    AskError,
    AuthenticationError,
    BusyLoadingError,
    MovedError,
    NoScriptError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

try:
    import hiredis
except ImportError:  # pragma: no cover - redis[hiredis] is a dependency
    hiredis = None  # type: ignore[assignment]

from . import _scripts, core
from ._multiplexed import (
    READ_CHUNK,
    SECONDS_PER_BYTE_SENT,
    MultiplexedConnection,
    answer_waiting,
    can_multiplex,
    closed_by_server,
)
from ._scripts import Script
from .errors import (
    ConnectionClosedError,
    EventLoopError,
    InvalidConnectionError,
    OutcomeUnknownError,
    RedisUnavailableError,
)

_NOSCRIPT_ATTEMPTS = 5
# How many more timeouts a transaction's reply is waited for while Redis answers meanwhile
_LIVE_WAITS = 10
# How long close() lets calls on a shared connection finish (each also within its own timeout)
_CLOSE_GRACE = 10.0
# MOVED / ASK answers followed (a Redis Cluster resharding) before one is given to the caller
_REDIRECT_ATTEMPTS = 5


def is_redirect(reply: Any) -> bool:
    """A Redis Cluster's MOVED or ASK answer: the command went to a node that no longer (or
    not yet) serves its slot, and did not run."""
    # (redis-py's reader gives MovedError / AskError, ours the reply's text)
    return isinstance(reply, AskError) or (
        isinstance(reply, ResponseError) and str(reply).startswith(("MOVED ", "ASK "))
    )
# connections a RedisConnection keeps between the calls that borrow one (transactions, fan-out
# streams; on a cluster or a caller's client, every call)
_KEPT_CONNECTIONS = 4
_MULTI = b"*1\r\n$5\r\nMULTI\r\n"
_EXEC = b"*1\r\n$4\r\nEXEC\r\n"
_DISCARD = b"*1\r\n$7\r\nDISCARD\r\n"
_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)


def default_url() -> str:
    return os.environ.get("REDIS_URL") or "redis://localhost:6379"


# A command that meets a connection the server closed (restart, CLIENT KILL, idle timeout)
# reconnects and is sent again, as ioredis does for BullMQ.
_RETRY: dict[str, Any] = {"retry_on_error": [RedisConnectionError, RedisTimeoutError]}
# A busy worker (high concurrency, processors that log or report progress) waits for a free
# connection rather than failing with "Too many connections".
_POOL: dict[str, Any] = {"max_connections": 500, "timeout": None}

# what a node's connection settings may carry over to a new RedisCluster client
_CLUSTER_KWARGS = ("username", "password", "socket_connect_timeout", "socket_keepalive", "client_name")


# URL query options bullfast does not pass on to redis-py: ``cluster`` is ours; redis-py lets
# the others override its keyword arguments, and bullfast reads replies as bytes
_TEXT_OPTIONS = frozenset({"decode_responses", "encoding", "encoding_errors"})
_NOT_PASSED_ON = _TEXT_OPTIONS | {"cluster"}


def _redis_py_url(url: str) -> tuple[str, bool]:
    """(the URL for redis-py, whether it names a Redis Cluster: ``redis://host:port?cluster=1``)."""
    parts = urlsplit(url)
    given = parse_qsl(parts.query)
    query = [(k, v) for k, v in given if k not in _NOT_PASSED_ON]
    cluster = any(k == "cluster" and v.lower() in ("1", "true", "yes") for k, v in given)
    return urlunsplit(parts._replace(query=urlencode(query))), cluster


def _utf8(kwargs: Mapping[str, Any]) -> bool:
    return str(kwargs.get("encoding", "utf-8")).lower().replace("_", "-") in ("utf-8", "utf8")


def _without_encoding(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """redis-py's options without a text encoding: bullfast's commands are UTF-8 (another
    encoding would write other keys than Node's), its replies bytes."""
    return {k: v for k, v in kwargs.items() if k not in _TEXT_OPTIONS}


def make_client(connection: Any, **overrides: Any) -> tuple[Any, bool]:
    """(client, owned): ``owned`` clients are closed by bullfast, borrowed ones are not.

    A Redis Cluster is named by a ``redis.asyncio.RedisCluster``, a URL with ``?cluster=1``, or
    a mapping with ``"cluster": True``."""
    if connection is None:
        connection = default_url()
    if isinstance(connection, str):
        try:
            url, cluster = _redis_py_url(connection)
            if cluster:
                return aioredis.RedisCluster.from_url(url, **{**overrides, "decode_responses": False}), True
            pool = aioredis.BlockingConnectionPool.from_url(
                url, **{**_POOL, **_RETRY, **overrides, "decode_responses": False}
            )
        except ValueError as exc:  # redis-py's word for a malformed URL ("must specify ...")
            raise InvalidConnectionError(f"connection {connection!r} is not a Redis URL: {exc}") from None
        return aioredis.Redis(connection_pool=pool), True
    if isinstance(connection, aioredis.RedisCluster):
        encoder = connection.get_encoder()
        if encoder.decode_responses or not _utf8({"encoding": encoder.encoding}) or overrides:
            node = connection.get_default_node() or connection.startup_nodes[0]
            kwargs = {k: v for k, v in node.connection_kwargs.items() if k in _CLUSTER_KWARGS}
            return aioredis.RedisCluster(
                host=node.host, port=node.port, **{**kwargs, **overrides, "decode_responses": False}
            ), True
        return connection, False
    if isinstance(connection, aioredis.Redis):
        kwargs = connection.connection_pool.connection_kwargs
        if kwargs.get("decode_responses") or not _utf8(kwargs) or overrides:
            cloned = connection.connection_pool.__class__(
                connection_class=connection.connection_pool.connection_class,
                **{**_without_encoding(kwargs), **overrides, "decode_responses": False},
            )
            return aioredis.Redis(connection_pool=cloned), True
        return connection, False
    if isinstance(connection, Mapping):
        opts = _without_encoding(connection)
        url = opts.pop("url", None)
        cluster = bool(opts.pop("cluster", False))
        opts.update(overrides)
        opts["decode_responses"] = False
        if url is not None:
            if not isinstance(url, str):
                raise InvalidConnectionError(f"connection['url'] must be a string, not {url!r}")
            try:
                url, in_url = _redis_py_url(url)
            except ValueError as exc:
                raise InvalidConnectionError(f"connection['url'] {url!r} is not a Redis URL: {exc}") from None
            cluster = cluster or in_url
        if not cluster:
            opts = {**_RETRY, **opts}
        try:
            if url is not None:
                return (aioredis.RedisCluster.from_url if cluster else aioredis.from_url)(url, **opts), True
            return (aioredis.RedisCluster if cluster else aioredis.Redis)(**opts), True
        except TypeError as exc:
            # redis-py's word for an option it does not know ("unexpected keyword argument")
            raise InvalidConnectionError(f"connection has an option redis-py does not accept: {exc}") from None
        except ValueError as exc:
            raise InvalidConnectionError(f"connection['url'] {url!r} is not a Redis URL: {exc}") from None
    raise InvalidConnectionError(
        "connection must be a URL, a mapping of redis options, a redis.asyncio.Redis or "
        f"a redis.asyncio.RedisCluster, not {type(connection).__name__}"
    )


def _may_have_run(exc: BaseException) -> bool:
    """Whether a command sent and answered (or not) by ``exc`` may have run: not if Redis said
    it is still loading its data (-LOADING), which it says instead of running anything."""
    return not isinstance(exc, BusyLoadingError)


def is_noscript(reply: Any) -> bool:
    """A NOSCRIPT reply (redis-py maps it to NoScriptError and drops the code word)."""
    return isinstance(reply, NoScriptError) or (isinstance(reply, ResponseError) and str(reply).startswith("NOSCRIPT"))


def unavailable(exc: BaseException, what: str, sent: bool = False) -> RedisUnavailableError:
    """The typed error of a connection failure; ``sent``: the write had reached the wire, so
    Redis may have applied it (an :class:`OutcomeUnknownError`)."""
    if _asks_for_authentication(exc):
        err: RedisUnavailableError = _authentication_error(exc, what)
    elif sent:
        err = OutcomeUnknownError(f"Redis did not answer {what} ({exc}); it was sent and may have been applied")
    else:
        err = RedisUnavailableError(f"Redis unavailable during {what}: {exc}")
    err.__cause__ = exc
    return err


def _asks_for_authentication(error: BaseException) -> bool:
    """A server that wants a password (or another one) refuses a command before running it:
    NOAUTH (a connection's naming, on Redis 6.2), "unauthenticated multibulk length" (a long
    command, an add's EVALSHA, on Redis 7), HELLO refused, or a wrong password."""
    if isinstance(error, AuthenticationError):
        return True
    text = str(error)
    return isinstance(error, ResponseError) and (
        text.startswith("NOAUTH") or "unauthenticated" in text or "already authenticated" in text
    )


def _authentication_error(error: BaseException, what: str) -> RedisUnavailableError:
    return RedisUnavailableError(
        f"Redis asks for authentication before {what}: give the password (and user) in the "
        f"connection, e.g. redis://:PASSWORD@host:port ({error}); nothing was run"
    )


def _raise_if_unauthenticated(reply: Any, what: str) -> None:
    """Such a refusal in a reply is said as such (it was taken for a script's failure, "what
    it wrote before the error stands")."""
    if _asks_for_authentication(reply):
        raise _authentication_error(reply, what) from None


def retry_delay(failures: int, first: float, most: float) -> float:
    """Seconds to wait after ``failures`` failed tries in a row: ``first`` doubled each time,
    at most ``most``. (The exponent is bounded: ``2.0 ** 1024`` overflows, which ended the
    reader of a QueueEvents, or a worker's loop, after a long enough outage.)"""
    return float(min(first * 2.0 ** min(failures, 16), most))


def blocking_connection(client: Any, name: str | None = None) -> RedisConnection:
    """A connection for blocking waits: no socket timeout (the wait bounds itself) and, given a
    name, CLIENT SETNAME on every connect, so that CLIENT LIST shows it (BullMQ's getWorkers).
    A name Redis would refuse (spaces, other characters outside ``!``..``~``) is not set."""
    if name is None or not all("!" <= c <= "~" for c in name):
        return RedisConnection(client, socket_timeout=None)
    return RedisConnection(client, socket_timeout=None, client_name=name)


async def connect_blocking(client: Any, name: str | None, bound: float) -> tuple[RedisConnection, str | None]:
    """A blocking connection (see :func:`blocking_connection`) connected now, so that CLIENT
    LIST shows its name at once, and the name it carries: None where the server refuses CLIENT
    SETNAME (it is unnamed then). On a cluster, the connections the client opened to discover
    the nodes are closed: they carry the name too. Trouble reaching Redis is left to the
    caller's waits, which report it and retry (on a fresh connection)."""
    conn = blocking_connection(client, name)
    task = asyncio.ensure_future(conn.client.ping())
    try:
        done, _ = await asyncio.wait({task}, timeout=bound)
        if not done:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        exc = None if not done else task.exception()
        if done and exc is None:
            await conn.close_discovery_connections()
            return conn, name
        await conn.close()
    except BaseException:  # (a worker closing while it connects, say: nothing stays open)
        task.cancel()
        await conn.close()
        raise
    if exc is not None and client_command_refused(exc):
        name = None
    return blocking_connection(client, name), name


def client_command_refused(exc: BaseException) -> bool:
    """The server refuses CLIENT (managed services disable it, ACLs may): connections stay
    unnamed there and no worker can be listed, as with BullMQ. (Redis 6.2 quotes the command
    name with backticks, 7 with apostrophes.)"""
    text = str(exc).lower().replace("`", "'")
    return isinstance(exc, ResponseError) and (
        "unknown command 'client'" in text or ("noperm" in text and "'client" in text)
    )


# the plain commands bullfast only reads with (a timeout of any other may hide a write done)
_READ_COMMANDS = frozenset((
    "get", "hget", "hmget", "hgetall", "hexists", "hlen", "exists", "type", "llen", "lrange",
    "lindex", "lpos", "scard", "smembers", "sismember", "sscan", "zscore", "zcard", "zrange",
    "zrangebyscore", "zrevrange", "zscan", "hscan", "scan", "xrange", "xrevrange", "xlen",
    "ping", "info", "time", "script_exists", "client_list", "config_get",
))


class Commands:
    """The client's commands as bullfast's read and admin methods use them: the same methods
    (``hgetall``, ``pipeline``...), but a connection that fails raises
    :class:`RedisUnavailableError` instead of redis-py's own errors, so that every public method
    fails the same typed way whether it runs a script or plain commands."""

    __slots__ = ("_client", "_owner")

    def __init__(self, client: Any, owner: RedisConnection) -> None:
        self._client = client
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if name == "pipeline":
            return lambda *args, **kwargs: _Pipeline(method(*args, **kwargs), self._owner)

        async def call(*args: Any, **kwargs: Any) -> Any:
            self._owner.check_open()
            try:
                return await method(*args, **kwargs)
            except _UNAVAILABLE as exc:
                # a write whose reply timed out was sent: it may have been applied
                sent = isinstance(exc, RedisTimeoutError) and name not in _READ_COMMANDS
                raise unavailable(exc, name.upper(), sent) from exc

        return call


class _Pipeline:
    """A redis-py pipeline whose ``execute`` raises :class:`RedisUnavailableError` (see
    :class:`Commands`); queuing commands does no I/O and is passed through."""

    __slots__ = ("_pipe", "_owner")

    def __init__(self, pipe: Any, owner: RedisConnection) -> None:
        self._pipe = pipe
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        self._owner.check_open()
        try:
            result: list[Any] = await self._pipe.execute(raise_on_error=raise_on_error)
        except _UNAVAILABLE as exc:
            raise unavailable(exc, "a pipelined read") from exc
        return result

    async def __aenter__(self) -> _Pipeline:
        await self._pipe.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._pipe.__aexit__(*exc_info)


class _Borrowed:
    """A raw connection taken for a few packed commands; ``clean`` False on exit means it is
    mid-reply and must be dropped, not reused. ``sent`` is set once a write may have reached
    Redis: a failure after that point leaves its outcome unknown."""

    __slots__ = ("conn", "clean", "sent")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.clean = False
        self.sent = False

    def reply_timeout(self, sent_bytes: int) -> float:
        """The read timeout for the reply of a write of ``sent_bytes``: the connection's socket
        timeout (none: none) plus time in proportion to the work, because a reply that is late
        only because Redis is still running a big write must not be mistaken for a dead server."""
        base = getattr(self.conn, "socket_timeout", None)
        if base is None:
            return math.inf
        return float(base) + sent_bytes * SECONDS_PER_BYTE_SENT


class RedisConnection:
    """A Redis client as bullfast uses it: scripts by SHA, packed commands, transactions.
    Works on a single server and on a Redis Cluster (every call is routed by one key)."""

    def __init__(self, connection: Any, **overrides: Any) -> None:
        self.client, self._owned = make_client(connection, **overrides)
        self.cluster = isinstance(self.client, aioredis.RedisCluster)
        # how to make the packed calls' own pool: only from a URL or options (not a client)
        self._spec = (connection, overrides) if isinstance(connection, (str, Mapping, type(None))) else None
        # packed calls of a client bullfast made (not a caller's) use a RESP2 pool of their own,
        # and keep up to four of its connections between the calls that borrow one (see borrow)
        self._packed_pool: Any = None
        self._kept: list[Any] = []
        # the connection that single calls share (see _multiplexed), opened on first use;
        # None while there is none, and for ever where calls cannot share one (_shared)
        self._shared_conn: MultiplexedConnection | None = None
        self._all_shared: set[MultiplexedConnection] = set()  # with those winding down
        self._opening: asyncio.Future[MultiplexedConnection | None] | None = None
        self._can_share: bool | None = None
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None  # of the first call
        # what the read and admin methods call (the raw client stays for the write paths)
        self.commands = Commands(self.client, self)
        # queue prefixes whose keys an add found of the right type (see _add.key_type_checks):
        # checked once, as 9 TYPE checks would cost a single add 40 % more Redis time
        self.type_checked: set[str] = set()
        # ... and those an add is checking now (done when it ends), see _add._types_to_check
        self.types_being_checked: dict[str, asyncio.Future[None]] = {}

    def check_open(self) -> None:
        """Refuse a call once closed: redis-py would connect again, and that connection would
        stay open (Node's BullMQ refuses it too: "Connection is closed."). And one from another
        event loop than the first call's: a connection made in a loop that has ended (one
        ``asyncio.run`` after another) wrote the command, then failed to read the reply."""
        if self._closed:
            raise ConnectionClosedError(
                "Connection is closed: the queue, flow producer, worker or QueueEvents it belongs to was closed"
            )
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._loop is not None:
                raise EventLoopError(
                    "this queue, flow producer, worker or QueueEvents was first used in another event loop "
                    "(its connections belong to it): make one per loop (per asyncio.run), or use bullfast.sync"
                )
            self._loop = loop

    async def close(self) -> None:
        self._closed = True
        # the calls made before are answered first (as ioredis's quit), each within its time
        if self._opening is not None:  # (a shared connection being opened is opened, then closed)
            await asyncio.wait([self._opening])
        self._shared_conn = None
        await asyncio.gather(*(shared.close(_CLOSE_GRACE) for shared in list(self._all_shared)))
        kept, self._kept = self._kept, []
        if self._packed_pool is not None:
            for conn in kept:
                await self._packed_pool.release(conn)
            await self._packed_pool.disconnect()
        if self._owned:
            if self.cluster:
                await self.client.aclose()
            else:
                await self.client.aclose(close_connection_pool=True)

    async def close_discovery_connections(self) -> None:
        """On a cluster, close the connections the client opened to discover the nodes: they
        carry its name too, and would be listed (CLIENT LIST) beside the one that waits."""
        if self.cluster:
            # node by node: NodesManager.aclose() also forgets the default node, and redis-py
            # 8.2's RedisCluster.aclose() then takes the client for closed and closes nothing
            startup = self.client.nodes_manager.startup_nodes.values()
            await asyncio.gather(*(node.disconnect() for node in startup))

    @asynccontextmanager
    async def borrow(self, route_key: str, what: str) -> AsyncIterator[_Borrowed]:
        """A raw connection to the server (the cluster node) that holds ``route_key``."""
        self.check_open()
        try:
            if self.cluster:
                await self.client.initialize()
                node = self.client.get_node_from_key(route_key)
                borrowed = _Borrowed(node.acquire_connection())
            elif self._kept:
                # redis-py's pool costs ~40 us of client CPU per get and release (locks, health
                # checks, observability hooks); the worker borrows for every batch
                borrowed = _Borrowed(self._kept.pop())
            else:
                borrowed = _Borrowed(await self._pool_for_packed().get_connection())
            if closed_by_server(borrowed.conn):
                # (restart, CLIENT KILL, timeout): a fresh one, rather than a command sent
                # into a dead socket, whose outcome would then be unknown
                await borrowed.conn.disconnect()
        except _UNAVAILABLE as exc:
            raise unavailable(exc, what) from exc
        try:
            yield borrowed
        except _UNAVAILABLE as exc:
            raise unavailable(exc, what, borrowed.sent and _may_have_run(exc)) from exc
        finally:
            if not borrowed.clean:
                await borrowed.conn.disconnect()
            if self.cluster:
                node.release(borrowed.conn)
            elif self._packed_pool is None:
                await self.client.connection_pool.release(borrowed.conn)
            elif borrowed.clean and not self._closed and len(self._kept) < _KEPT_CONNECTIONS:
                self._kept.append(borrowed.conn)
            else:
                await self._packed_pool.release(borrowed.conn)

    def _pool_for_packed(self) -> Any:
        """Where packed calls take their connections. A client bullfast made from a URL or
        options gets a RESP2 pool of its own, whose replies ``_exchange`` reads off the socket
        (a RESP3 connection may receive push messages, which a reader of our own could take for
        the reply); a caller's client is used as it is, its connections given back each time."""
        if self._spec is None:
            return self.client.connection_pool
        if self._packed_pool is None:
            connection, overrides = self._spec
            client, _ = make_client(connection, **{**overrides, "protocol": 2})
            self._packed_pool = client.connection_pool
        return self._packed_pool

    # -- scripts --------------------------------------------------------------------------

    async def load(self, script: Script, what: str = "") -> None:
        """SCRIPT LOAD; ``what``: the operation it is for, named in an error."""
        self.check_open()
        try:
            await self.client.script_load(script.source)
        except _UNAVAILABLE as exc:
            doing = f"{what} (loading its script {script.name})" if what else f"loading script {script.name}"
            raise unavailable(exc, doing) from exc

    async def ensure_loaded(self, scripts: Iterable[Script], what: str = "") -> None:
        """One SCRIPT EXISTS for the given scripts, and a LOAD for each missing one."""
        self.check_open()
        todo = list(scripts)
        try:
            present = await self.client.script_exists(*[s.sha.decode() for s in todo])
        except _UNAVAILABLE as exc:
            raise unavailable(exc, f"{what} (checking its scripts)" if what else "checking scripts") from exc
        for script, there in zip(todo, present):
            if not there:
                await self.load(script, what)

    async def run(self, command: str, keys: Sequence[Any], args: Sequence[Any], read_only: bool = False) -> Any:
        """EVALSHA one of our scripts (loaded on NOSCRIPT), sent as the packed calls are: a
        failure before it was sent is :class:`RedisUnavailableError`, after it
        :class:`OutcomeUnknownError` (a ``read_only`` script's: RedisUnavailableError, it wrote
        nothing), and it is sent once. (Through redis-py, a reply that timed out was reported
        as nothing written, and redis-py's retry ran the script again: a second log line, a
        completion refused for the lock the first had already released.)"""
        script = _scripts.get(command)
        packed = core.pack_command([b"EVALSHA", script.sha, len(keys), *keys, *args])
        return await self.call_packed(packed, keys[0] if keys else "", script, command, read_only)

    # -- packed commands (built by the compiled core) -----------------------------------------

    async def follow_redirect(self, reply: Any, attempt: int) -> bool:
        """For a MOVED / ASK answer of a cluster (``attempt`` redirects followed so far): the
        client's slot table is read again, and True says to send the command again (it did
        not run). False when it is no redirect, or too many came."""
        if not self.cluster or attempt >= _REDIRECT_ATTEMPTS or not is_redirect(reply):
            return False
        if str(reply).startswith("ASK ") or (isinstance(reply, AskError) and not isinstance(reply, MovedError)):
            await asyncio.sleep(0.05 * (attempt + 1))  # a slot being migrated: soon MOVED
        try:
            await self.client.nodes_manager.initialize()
        except _UNAVAILABLE as exc:
            raise unavailable(exc, "reading the cluster's slots") from exc
        return True

    async def _shared(self, what: str) -> MultiplexedConnection | None:
        """The connection single calls share (see :mod:`._multiplexed`), opened on first use
        and again once it fails or is retired; None where calls cannot share one: on a
        cluster, on a caller's own client, on a RESP3 connection (a URL asking for
        ``protocol=3``). The calls that find none wait for one attempt to open it, and share
        its outcome: against a server that does not answer, a thousand waiting calls fail
        together, not one socket timeout after the other."""
        shared = self._shared_conn
        if shared is not None and shared.usable:
            return shared
        if self._can_share is False or self.cluster or self._spec is None:
            return None
        self.check_open()
        opening = self._opening
        if opening is None:
            opening = self._opening = asyncio.ensure_future(self._open_shared())
            opening.add_done_callback(self._opened)
        try:
            return await asyncio.shield(opening)
        except _UNAVAILABLE as exc:
            raise unavailable(exc, what) from exc

    def _opened(self, opening: asyncio.Future[MultiplexedConnection | None]) -> None:
        if self._opening is opening:
            self._opening = None
        if not opening.cancelled():
            opening.exception()  # (read: the calls that waited for it may all have gone)

    async def _open_shared(self) -> MultiplexedConnection | None:
        self._shared_conn = None  # (one that failed or was retired closes by itself)
        pool = self._pool_for_packed()
        conn = await pool.get_connection()  # connected, or given back to the pool
        if self._closed or not can_multiplex(conn):
            await pool.release(conn)
            self.check_open()  # (closed meanwhile: ConnectionClosedError)
            self._can_share = False
            return None
        self._can_share = True
        shared = MultiplexedConnection(conn, pool.release)
        self._all_shared.add(shared)
        shared.closed.add_done_callback(lambda _: self._all_shared.discard(shared))
        self._shared_conn = shared
        return shared

    async def _send(self, packed: bytes, route_key: str, what: str, read_only: bool) -> Any:
        """One command's reply (a ``ResponseError`` is returned, not raised): on the shared
        connection where there is one, else on a borrowed one. A command the shared connection
        had not written when it failed is sent once more, on a new one."""
        self.check_open()
        failed = 0
        while True:
            shared = await self._shared(what)
            if shared is None:
                async with self.borrow(route_key, what) as b:
                    if not b.conn.is_connected:
                        # connected before it counts as sent: a refused connection sent nothing
                        await b.conn.connect()
                    b.sent = not read_only
                    result = await _exchange(b.conn, packed, b.reply_timeout(len(packed)))
                    b.clean = True
                _raise_if_unauthenticated(result, what)
                return result
            call = shared.send(packed)
            try:
                reply = await call.reply
            except _UNAVAILABLE as exc:
                failed += 1
                if call.written or failed > 1:
                    raise unavailable(exc, what, call.written and not read_only) from exc
                continue
            if isinstance(reply, ResponseError):
                _raise_if_unauthenticated(reply, what)
                # the class redis-py gives this error (NoScriptError, BusyLoadingError...)
                err = shared.conn._parser.parse_error(str(reply))
                if not isinstance(err, ResponseError):
                    raise unavailable(err, what, not read_only and _may_have_run(err)) from err
                return err
            return reply

    async def call_packed(
        self, packed: bytes, route_key: str, script: Script, what: str, read_only: bool = False
    ) -> Any:
        """Send one command already encoded as RESP (an EVALSHA of ``script``); return its reply."""
        loads = redirects = 0
        while True:
            result = await self._send(packed, route_key, what, read_only)
            if is_noscript(result):
                loads += 1
                if loads >= _NOSCRIPT_ATTEMPTS:
                    raise RedisUnavailableError(f"the script cache keeps being flushed; {what} could not run")
                await self.load(script, what)
                continue
            if self.cluster and await self.follow_redirect(result, redirects):
                redirects += 1
                continue
            if isinstance(result, ResponseError):
                raise result
            return result

    async def read_packed(self, packed: bytes, route_key: str, what: str) -> Any:
        """Send one read command already encoded as RESP and return its reply as our own
        parser gives it (an HGETALL: a flat list), without redis-py's per-call machinery: the
        parent of a big fan-out reads its children's results in half the time. A read is safe
        to repeat, so a connection that fails is tried once more (a read that timed out is not:
        it would only wait as long again)."""
        failed = redirects = 0
        while True:
            try:
                result = await self._send(packed, route_key, what, read_only=True)
            except RedisUnavailableError as exc:
                failed += 1
                if failed > 1 or isinstance(exc.__cause__, RedisTimeoutError):
                    raise
                continue
            if self.cluster and await self.follow_redirect(result, redirects):
                redirects += 1
                continue
            if isinstance(result, ResponseError):
                raise result
            return result

    async def transaction(
        self, packed: Iterable[bytes], route_key: str, scripts: Iterable[Script], what: str
    ) -> list[Any]:
        """MULTI, every packed command as it is produced, EXEC: the replies of EXEC.

        If producing the commands raises (bad input found half-way), the transaction is
        discarded and the exception propagates: nothing was written. Scripts are loaded before
        MULTI; the replies are checked for NOSCRIPT by the caller (see _add.write_plan)."""
        await self.ensure_loaded(scripts, what)
        async with self.borrow(route_key, what) as b:
            conn = b.conn
            await conn.send_packed_command(_MULTI, check_health=False)
            sent = sent_bytes = 0
            try:
                for command in packed:
                    await conn.send_packed_command(command, check_health=False)
                    sent += 1
                    sent_bytes += len(command)
            except Exception:
                # bad input found half-way: discard. A send that failed has dropped the
                # connection, which discarded the transaction with it: a DISCARD would make
                # redis-py connect again and then wait for replies that never come
                if conn.is_connected:
                    await conn.send_packed_command(_DISCARD, check_health=False)
                    for _ in range(sent + 2):
                        await self._read(conn)
                    b.clean = True
                raise
            # Until EXEC is sent, a broken connection discards the transaction: nothing written.
            b.sent = True
            await conn.send_packed_command(_EXEC, check_health=False)
            # Redis may hold back even the QUEUED replies until EXEC has run: every read waits
            # as long as the transaction may take, and longer while Redis is alive (see
            # _read_while_alive)
            timeout = b.reply_timeout(sent_bytes)
            replies = [await self._read_while_alive(conn, timeout) for _ in range(sent + 2)]
            b.clean = True
        queued, result = replies[:-1], replies[-1]
        for reply in queued:
            if isinstance(reply, ResponseError):
                raise reply
        if isinstance(result, ResponseError):
            raise result
        return list(result)

    async def _read_while_alive(self, conn: Any, timeout: float) -> Any:
        """A transaction's reply, waited for as long as Redis answers a PING on another
        connection meanwhile (up to _LIVE_WAITS more timeouts): other clients' big
        transactions queued ahead of this one send this connection nothing while they run, and
        giving up on a server that is only busy made an OutcomeUnknownError of an add that was
        applied, which a retry then wrote twice."""
        for waits in range(_LIVE_WAITS + 1):
            try:
                return await self._read(conn, timeout)
            except RedisTimeoutError:
                if waits == _LIVE_WAITS or not await self._answers_ping():
                    raise
        raise AssertionError("unreachable")

    async def _answers_ping(self) -> bool:
        try:
            await self.client.ping()
        except ResponseError:
            return True  # BUSY (a script runs long): alive
        except Exception:
            return False
        return True

    @staticmethod
    async def _read(conn: Any, timeout: float | None = None) -> Any:
        """One reply (a ``ResponseError`` is returned, not raised). ``timeout`` replaces the
        connection's socket timeout for this read (``math.inf``: none)."""
        try:
            reply = await conn.read_response(timeout=timeout)
        except ResponseError as exc:
            return exc
        if reply is None and timeout is not None:
            # redis-py's answer when a caller's timeout expires (none of the replies read here
            # is ever a nil); the connection is left mid-reply, and is dropped by borrow()
            raise RedisTimeoutError(f"no reply within {timeout:.1f} s")
        return reply


_HAS_TIMEOUT = sys.version_info >= (3, 11)


async def _exchange(conn: Any, packed: bytes, timeout: float) -> Any:
    """Send one packed command on a connection redis-py has set up and read its one reply
    (a ``ResponseError`` is returned, not raised), straight off the connection's streams with a
    hiredis reader of our own. redis-py wraps every send and every read in ``wait_for`` (a task
    and a timer each): about 50 us of client CPU per call, more than the round trip itself,
    which the worker pays for every batch. Only on RESP2 connections, where nothing but the
    replies of what was sent arrives (no push messages: no tracking, no subscription on a pooled
    connection). Falls back to redis-py's path otherwise, where its streams are not there (not
    connected), or without hiredis or ``asyncio.timeout`` (Python 3.10)."""
    reader = getattr(conn, "_reader", None)
    writer = getattr(conn, "_writer", None)
    resp2 = str(getattr(conn, "protocol", None) or 2) == "2"
    if reader is None or writer is None or hiredis is None or not _HAS_TIMEOUT or not resp2:
        await conn.send_packed_command(packed, check_health=False)
        return await RedisConnection._read(conn, timeout)
    parser = hiredis.Reader(replyError=ResponseError)
    reply = False
    written = False
    while True:
        try:
            async with asyncio.timeout(None if math.isinf(timeout) else timeout):
                if not written:
                    writer.write(packed)
                    written = True
                    if writer.transport.get_write_buffer_size() > READ_CHUNK:
                        await writer.drain()
                while reply is False:
                    data = await reader.read(READ_CHUNK)
                    if not data:
                        raise RedisConnectionError("Connection closed by server.")
                    parser.feed(data)
                    reply = parser.gets()
            break
        except TimeoutError:
            # Late, or only not read yet: an event loop busy with many other tasks (a burst of
            # 50,000 adds) runs this one long after the reply came. What came is read on.
            if not answer_waiting(reader, writer):
                raise RedisTimeoutError(f"no reply within {timeout:.1f} s") from None
    if isinstance(reply, ResponseError):
        # the class redis-py gives this error (NoScriptError, BusyLoadingError...)
        err = conn._parser.parse_error(str(reply))
        if not isinstance(err, ResponseError):
            raise err
        return err
    return reply
