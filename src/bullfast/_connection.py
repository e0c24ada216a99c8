"""Turning ``connection=`` into a Redis client, and running our scripts on it.

``connection`` may be a URL string, a mapping of ``redis.asyncio.Redis`` keyword arguments
(``{"host": ..., "port": ...}``, or ``{"url": ...}``), an existing ``redis.asyncio.Redis`` (which
bullfast then never closes), or ``None`` for ``$REDIS_URL`` (default ``redis://localhost:6379``).
bullfast always talks bytes: a client made with ``decode_responses=True`` is cloned without it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import _scripts
from ._scripts import Script
from .errors import RedisUnavailableError

ConnectionLike = "str | Mapping[str, Any] | aioredis.Redis | None"

_MULTI = b"*1\r\n$5\r\nMULTI\r\n"
_EXEC = b"*1\r\n$4\r\nEXEC\r\n"
_DISCARD = b"*1\r\n$7\r\nDISCARD\r\n"
_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)


def default_url() -> str:
    return os.environ.get("REDIS_URL") or "redis://localhost:6379"


def make_client(connection: Any, **overrides: Any) -> tuple[aioredis.Redis, bool]:
    """(client, owned): ``owned`` clients are closed by bullfast, borrowed ones are not."""
    if connection is None:
        connection = default_url()
    if isinstance(connection, str):
        return aioredis.from_url(connection, **{**overrides, "decode_responses": False}), True
    if isinstance(connection, aioredis.Redis):
        kwargs = connection.connection_pool.connection_kwargs
        if kwargs.get("decode_responses") or overrides:
            pool = connection.connection_pool.__class__(
                connection_class=connection.connection_pool.connection_class,
                **{**kwargs, **overrides, "decode_responses": False},
            )
            return aioredis.Redis(connection_pool=pool), True
        return connection, False
    if isinstance(connection, Mapping):
        opts = dict(connection)
        url = opts.pop("url", None)
        opts.update(overrides)
        opts["decode_responses"] = False
        if url is not None:
            return aioredis.from_url(url, **opts), True
        return aioredis.Redis(**opts), True
    raise TypeError(
        "connection must be a URL, a mapping of redis options or a redis.asyncio.Redis, "
        f"not {type(connection).__name__}"
    )


def is_noscript(reply: Any) -> bool:
    """A NOSCRIPT reply (redis-py maps it to NoScriptError and drops the code word)."""
    return isinstance(reply, NoScriptError) or (isinstance(reply, ResponseError) and str(reply).startswith("NOSCRIPT"))


def unavailable(exc: BaseException, what: str) -> RedisUnavailableError:
    err = RedisUnavailableError(f"Redis unavailable during {what}: {exc}")
    err.__cause__ = exc
    return err


class RedisConnection:
    """A Redis client as bullfast uses it: scripts by SHA, packed commands, transactions."""

    def __init__(self, connection: Any, **overrides: Any) -> None:
        self.client, self._owned = make_client(connection, **overrides)
        self._loaded: set[bytes] = set()

    async def close(self) -> None:
        if self._owned:
            await self.client.aclose(close_connection_pool=True)

    # -- scripts --------------------------------------------------------------------------

    async def load(self, script: Script) -> None:
        try:
            await self.client.execute_command("SCRIPT", "LOAD", script.source)
        except _UNAVAILABLE as exc:
            raise unavailable(exc, f"loading script {script.name}") from exc
        self._loaded.add(script.sha)

    async def ensure_loaded(self, scripts: Iterable[Script]) -> None:
        """One SCRIPT EXISTS for the given scripts, and a LOAD for each missing one."""
        todo = list(scripts)
        try:
            present = await self.client.execute_command("SCRIPT", "EXISTS", *[s.sha for s in todo])
        except _UNAVAILABLE as exc:
            raise unavailable(exc, "checking scripts") from exc
        for script, there in zip(todo, present):
            if not there:
                await self.load(script)

    async def run(self, command: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """EVALSHA one of our scripts; a NOSCRIPT loads it and retries once."""
        script = _scripts.get(command)
        try:
            try:
                return await self.client.execute_command(
                    "EVALSHA", script.sha, len(keys), *keys, *args
                )
            except NoScriptError:
                await self.load(script)
                return await self.client.execute_command(
                    "EVALSHA", script.sha, len(keys), *keys, *args
                )
        except _UNAVAILABLE as exc:
            raise unavailable(exc, command) from exc

    # -- packed commands (built by the compiled core) -----------------------------------------

    async def call_packed(self, packed: bytes, script: Script, what: str) -> Any:
        """Send one command already encoded as RESP (an EVALSHA of ``script``); return its reply."""
        for attempt in (0, 1):
            reply = await self._roundtrip(packed, 1, what)
            result = reply[0]
            if is_noscript(result):
                if attempt == 0:
                    await self.load(script)
                    continue
            if isinstance(result, ResponseError):
                raise result
            return result
        raise AssertionError("unreachable")

    async def transaction(self, packed: Iterable[bytes], scripts: Iterable[Script], what: str) -> list[Any]:
        """MULTI, every packed command as it is produced, EXEC: the replies of EXEC.

        If producing the commands raises (bad input found half-way), the transaction is
        discarded and the exception propagates: nothing was written. Scripts are loaded before
        MULTI; the replies are checked for NOSCRIPT by the caller (see :meth:`add`)."""
        await self.ensure_loaded(scripts)
        pool = self.client.connection_pool
        try:
            conn = await pool.get_connection()
        except _UNAVAILABLE as exc:
            raise unavailable(exc, what) from exc
        clean = False
        try:
            await conn.send_packed_command(_MULTI, check_health=False)
            sent = 0
            try:
                for command in packed:
                    await conn.send_packed_command(command, check_health=False)
                    sent += 1
            except Exception:
                await conn.send_packed_command(_DISCARD, check_health=False)
                for _ in range(sent + 2):
                    await self._read(conn)
                clean = True
                raise
            await conn.send_packed_command(_EXEC, check_health=False)
            replies = [await self._read(conn) for _ in range(sent + 2)]
            clean = True
        except _UNAVAILABLE as exc:
            raise unavailable(exc, what) from exc
        finally:
            if not clean:
                await conn.disconnect()
            await pool.release(conn)
        queued, result = replies[:-1], replies[-1]
        for reply in queued:
            if isinstance(reply, ResponseError):
                raise reply
        if isinstance(result, ResponseError):
            raise result
        return list(result)

    async def pipelined(self, packed: Iterable[bytes], window: int, what: str) -> AsyncIterator[Any]:
        """Send packed commands on one connection keeping up to ``window`` in flight, and
        yield their replies in order: the next command is encoded and sent while Redis runs
        the previous one. Replies that are errors are yielded, not raised."""
        pool = self.client.connection_pool
        try:
            conn = await pool.get_connection()
        except _UNAVAILABLE as exc:
            raise unavailable(exc, what) from exc
        in_flight = 0
        clean = False
        try:
            for command in packed:
                await conn.send_packed_command(command, check_health=False)
                in_flight += 1
                if in_flight >= window:
                    in_flight -= 1
                    yield await self._read(conn)
            while in_flight:
                in_flight -= 1
                yield await self._read(conn)
            clean = True
        except _UNAVAILABLE as exc:
            raise unavailable(exc, what) from exc
        finally:
            if not clean:
                # replies still owed (the caller stopped early, or an error): the connection
                # cannot be reused
                await conn.disconnect()
            await pool.release(conn)

    async def _roundtrip(self, packed: bytes, n_replies: int, what: str) -> list[Any]:
        pool = self.client.connection_pool
        try:
            conn = await pool.get_connection()
        except _UNAVAILABLE as exc:
            raise unavailable(exc, what) from exc
        clean = False
        try:
            await conn.send_packed_command(packed, check_health=False)
            replies = [await self._read(conn) for _ in range(n_replies)]
            clean = True
            return replies
        except _UNAVAILABLE as exc:
            raise unavailable(exc, what) from exc
        finally:
            if not clean:
                await conn.disconnect()
            await pool.release(conn)

    @staticmethod
    async def _read(conn: Any) -> Any:
        try:
            return await conn.read_response()
        except ResponseError as exc:
            return exc
