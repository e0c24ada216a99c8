"""Running tests/interop/node/run.mjs (the real Node ``bullmq``) from the tests.

``await run_node(spec)`` runs the script to the end and returns its :class:`Report`;
``NodeRun`` starts it, lets the caller wait for its workers to be up (``await run.ready()``),
act, and then collect the report (``await run.report()``). The spec format is described at
the top of run.mjs.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

INTEROP_DIR = Path(__file__).resolve().parent
RUNNER = INTEROP_DIR / "node" / "run.mjs"
DEFAULT_TIMEOUT = 60.0


class NodeRunError(AssertionError):
    """run.mjs failed, timed out, or its `until` conditions were not met."""


class Report:
    """run.mjs's JSON report, with lookups by queue and job id."""

    def __init__(self, raw: Mapping[str, Any], stderr: str = "") -> None:
        self.raw = dict(raw)
        self.stderr = stderr
        self.processed: list[dict[str, Any]] = list(raw.get("processed") or [])
        self.flows: list[dict[str, Any]] = list(raw.get("flows") or [])
        self.errors: list[str] = list(raw.get("errors") or [])
        self._jobs = {(j["queue"], j["id"]): j for j in raw.get("jobs") or []}

    def job(self, queue: str, job_id: str) -> dict[str, Any]:
        """The final record of a job (KeyError with the known jobs if it was not reported)."""
        try:
            return self._jobs[(queue, job_id)]
        except KeyError:
            raise KeyError(f"job {queue}:{job_id} not in the report; known: {sorted(self._jobs)}") from None

    def jobs(self, queue: str | None = None) -> list[dict[str, Any]]:
        return [j for (q, _), j in self._jobs.items() if queue is None or q == queue]

    def order(self, queue: str | None = None) -> list[str]:
        """Job ids in the order the Node processor first ran them (one queue or all)."""
        seen: list[str] = []
        for p in self.processed:
            if (queue is None or p["queue"] == queue) and p["id"] not in seen:
                seen.append(p["id"])
        return seen

    def runs(self, queue: str, job_id: str) -> list[dict[str, Any]]:
        """Every processor call for that job, in order (with the Node clock time ``t``)."""
        return [p for p in self.processed if p["queue"] == queue and p["id"] == job_id]

    def __repr__(self) -> str:
        return f"<Report {json.dumps(self.raw, indent=1)[:4000]}>"


class NodeRun:
    """One run of run.mjs: ``async with NodeRun(spec) as run: await run.ready(); ...;
    report = await run.report()``."""

    def __init__(
        self, spec: Mapping[str, Any], *, timeout: float = DEFAULT_TIMEOUT, check: bool = True
    ) -> None:
        self.spec = dict(spec)
        self.timeout = timeout
        self.check = check
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr: list[str] = []
        self._ready = asyncio.Event()
        self._stderr_task: asyncio.Task[None] | None = None
        self._stdout_task: asyncio.Task[bytes] | None = None

    async def start(self) -> NodeRun:
        self._proc = await asyncio.create_subprocess_exec(
            "node",
            str(RUNNER),
            cwd=str(INTEROP_DIR),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "NODE_NO_WARNINGS": "1"},
            start_new_session=True,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(self.spec).encode())
        await self._proc.stdin.drain()
        self._proc.stdin.close()
        self._stderr_task = asyncio.ensure_future(self._read_stderr())
        self._stdout_task = asyncio.ensure_future(self._proc.stdout.read())
        return self

    async def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        async for line in self._proc.stderr:
            text = line.decode(errors="replace")
            if text.strip() == "READY":
                self._ready.set()
            else:
                self._stderr.append(text)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    async def ready(self, timeout: float = 30.0) -> None:
        """Wait until every Node worker of the spec is connected and running."""
        assert self._stderr_task is not None
        waiter = asyncio.ensure_future(self._ready.wait())
        done, _ = await asyncio.wait(
            {waiter, self._stderr_task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if waiter not in done:
            waiter.cancel()
            await self._kill()
            raise NodeRunError(f"run.mjs did not get ready within {timeout}s; stderr:\n{self.stderr}")

    async def report(self) -> Report:
        """Wait for the script to end and return its report."""
        assert self._proc is not None and self._stdout_task is not None and self._stderr_task is not None
        try:
            stdout = await asyncio.wait_for(asyncio.shield(self._stdout_task), self.timeout)
            await asyncio.wait_for(self._proc.wait(), 10)
            await asyncio.wait_for(self._stderr_task, 10)
        except asyncio.TimeoutError:
            await self._kill()
            raise NodeRunError(
                f"run.mjs did not finish within {self.timeout}s; stderr:\n{self.stderr}"
            ) from None
        code = self._proc.returncode
        if code != 0:
            raise NodeRunError(f"run.mjs exited with status {code}; stderr:\n{self.stderr}")
        try:
            raw = json.loads(stdout.decode().strip().splitlines()[-1])
        except (ValueError, IndexError) as exc:
            raise NodeRunError(
                f"run.mjs printed no JSON report ({exc}); stdout:\n{stdout!r}\nstderr:\n{self.stderr}"
            ) from exc
        report = Report(raw, self.stderr)
        if self.check and (raw.get("timedOut") or report.errors):
            unmet = json.dumps(raw.get("unmet"))
            raise NodeRunError(
                "run.mjs: "
                + (f"conditions not met in time: {unmet}" if raw.get("timedOut") else "")
                + (f"\nworker errors: {report.errors}" if report.errors else "")
                + f"\nstderr:\n{self.stderr}\nreport: {json.dumps(raw, indent=1)[:20000]}"
            )
        return report

    async def _kill(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await self._proc.wait()
        for task in (self._stdout_task, self._stderr_task):
            if task is not None and not task.done():
                task.cancel()

    async def __aenter__(self) -> NodeRun:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self._kill()


async def run_node(
    spec: Mapping[str, Any], *, timeout: float = DEFAULT_TIMEOUT, check: bool = True
) -> Report:
    """Run run.mjs on ``spec`` to the end; raises :class:`NodeRunError` (with Node's stderr) if it
    fails, or (``check``) if its conditions were not met or a worker reported an error."""
    async with NodeRun(spec, timeout=timeout, check=check) as run:
        return await run.report()
