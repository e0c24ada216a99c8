"""Soak: N jobs in flows through several worker processes while faults are injected, then a
conservation check.

    .venv/bin/python benchmarks/soak.py                  # 1,000,000 jobs
    .venv/bin/python benchmarks/soak.py --jobs 100000    # a shorter run

Flows of one parent (queue ``soak-parent``) and ``--children`` children (queue ``soak-child``)
with a mix of options, added with ``FlowProducer.add_bulk`` (custom ids, so an add that meets a
dropped connection is simply added again: ``JobExistsError`` means it was written). Worker
processes run both queues. Meanwhile a random worker process is SIGKILLed (and replaced) every
``--kill-every`` seconds, and every ``--client-kill-every`` seconds every client connection of
the Redis under test is dropped (``CLIENT KILL TYPE normal``). Processor runs are counted in a
second Redis (the "ledger"), which faults do not touch.

Child kinds, by index ``i`` in its flow (``i mod 20``):

====  ==========  ======================================================  =================
i%20  kind        options                                                 expected end
====  ==========  ======================================================  =================
0     kept        -                                                       completed, kept
1-13  ok          ``remove_on_complete``                                  completed, removed
14,15 retry       fails once; ``attempts=3``, ``remove_on_complete``       completed, removed
16    ignored     always fails; ``attempts=2``, ``ignore_dependency_...``  failed, kept
17    dropped     always fails; ``remove_dependency_...``, ``remove_on_fail``  failed, removed
18    delayed     ``delay=100``, ``remove_on_complete``                    completed, removed
19    urgent      ``priority=5``, ``remove_on_complete``                   completed, removed
====  ==========  ======================================================  =================

Every 25th flow also has a "fatal" child that always fails with ``fail_parent_on_failure``: its
parent must fail ("child <key> failed") without running. Every other parent runs and checks what
it sees: exactly the values of its completed children (count and sum) and its ignored failures.

Checked at the end (the run fails, exit status 1, if any check fails):

* every parent: completed exactly once with the right result (or failed as above), its
  ``processed`` hash holding exactly its completed children's values, its ``failed`` hash
  exactly its ignored children; its processor ran once per attempt and per stall at most
  (``runs <= atm + stc``: more only when a kill caught it running), never for fatal flows;
* every child: in the state its options say (kept ones in completed / failed with the right
  value / reason and attempts; removed ones gone), every child ran (failing kinds as many times
  as their attempts, at least);
* the queues' completed / failed sets hold exactly the expected number of jobs (none twice);
* no leaked key: nothing under the prefix but the queues' own keys and the kept jobs (no
  ``processed`` / ``dependencies`` / ``lock`` / ``logs`` keys of removed jobs), nothing left
  waiting, active or delayed;
* after ``obliterate`` no key is left under the prefix, the key count is back to the baseline and
  Redis ``used_memory`` returns to its baseline (within ``--memory-tolerance``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from typing import Any

CHILD_Q = "soak-child"
PARENT_Q = "soak-parent"
KINDS = ["kept"] + ["ok"] * 13 + ["retry", "retry", "ignored", "dropped", "delayed", "urgent"]
FAIL_REASON = "planned failure"


# ---------------------------------------------------------------------------------------------
# The plan: what each job is and how it must end
# ---------------------------------------------------------------------------------------------


def kind_of(i: int, children: int) -> str:
    return "fatal" if i == children else KINDS[i % 20]


def child_opts(kind: str) -> tuple[dict[str, Any], int]:
    """(options, fail_times) of a child of this kind."""
    return {
        "kept": ({}, 0),
        "ok": ({"remove_on_complete": True}, 0),
        "retry": ({"attempts": 3, "remove_on_complete": True}, 1),
        "ignored": ({"attempts": 2, "ignore_dependency_on_failure": True}, 99),
        "dropped": ({"remove_dependency_on_failure": True, "remove_on_fail": True}, 99),
        "delayed": ({"delay": 100, "remove_on_complete": True}, 0),
        "urgent": ({"priority": 5, "remove_on_complete": True}, 0),
        "fatal": ({"fail_parent_on_failure": True}, 99),
    }[kind]


def n_children(flow: int, children: int) -> int:
    return children + (1 if flow % 25 == 24 else 0)


def value_of(flow: int, i: int) -> int:
    return (flow * 7919 + i * 104729) % 1000


def expected_parent(flow: int, children: int) -> dict[str, int]:
    completed = [i for i in range(n_children(flow, children)) if kind_of(i, children) not in ("ignored", "dropped", "fatal")]
    ignored = sum(1 for i in range(n_children(flow, children)) if kind_of(i, children) == "ignored")
    return {"sum": sum(value_of(flow, i) for i in completed), "n": len(completed), "ignored": ignored}


def make_flow(flow: int, children: int) -> dict[str, Any]:
    kids = []
    for i in range(n_children(flow, children)):
        kind = kind_of(i, children)
        opts, fail_times = child_opts(kind)
        kids.append({
            "name": kind,
            "queue_name": CHILD_Q,
            "data": {"v": value_of(flow, i), "fail_times": fail_times},
            "opts": {**opts, "job_id": f"f{flow}.{i}"},
        })
    expect = expected_parent(flow, children)
    return {
        "name": "parent",
        "queue_name": PARENT_Q,
        "data": {"expect": expect},
        # a parent reads its children's values from Redis: a dropped connection may fail an attempt
        "opts": {"job_id": f"f{flow}", "attempts": 5, "backoff": 100},
        "children": kids,
    }


# ---------------------------------------------------------------------------------------------
# Worker processes
# ---------------------------------------------------------------------------------------------


async def worker_main(settings: dict[str, Any]) -> None:
    import redis.asyncio as aioredis

    from bullfast import Worker

    # (redis-py's pools hold at most 100 connections by default; every processor may be in a call)
    ledger = aioredis.from_url(settings["ledger_url"], max_connections=100_000)
    prefix = settings["prefix"]

    async def child(job: Any) -> dict[str, int]:
        await ledger.hincrby("runs", job.key, 1)
        if job.attempts_made < int(job.data.get("fail_times", 0)):
            raise RuntimeError(f"{FAIL_REASON} {job.attempts_made + 1}")
        return {"v": int(job.data["v"])}

    async def parent(job: Any) -> dict[str, int]:
        await ledger.hincrby("runs", job.key, 1)
        values = await job.get_children_values()
        ignored = await job.get_ignored_children_failures()
        got = {"sum": sum(int(v["v"]) for v in values.values()), "n": len(values), "ignored": len(ignored)}
        if got != job.data["expect"]:
            await ledger.rpush("violations", f"{job.key} ran with {got}, expected {job.data['expect']}")
        return got

    timings = {"lock_duration": settings["lock_duration"], "stalled_interval": settings["stalled_interval"],
               "max_stalled_count": 1000, "drain_delay": 1}
    workers = [
        Worker(CHILD_Q, child, connection=settings["url"], prefix=prefix, concurrency=settings["concurrency"], **timings),
        Worker(PARENT_Q, parent, connection=settings["url"], prefix=prefix, concurrency=8, **timings),
    ]
    for w in workers:
        w.on("error", lambda err: None)  # expected under faults; counted by the checks, not here
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    for w in workers:
        await w.close()
    await ledger.aclose()


class WorkerProcess:
    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", json.dumps(self.settings)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if b"ready" not in line:
            raise RuntimeError("a worker process did not start")
        return self

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self._close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close()

    def _close(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


class Soak:
    def __init__(self, args: argparse.Namespace, url: str, ledger_url: str) -> None:
        self.args = args
        self.url = url
        self.ledger_url = ledger_url
        self.prefix = f"soak-{os.urandom(4).hex()}"
        self.children = args.children
        self.flows = -(-args.jobs // (args.children + 1))
        self.total_jobs = sum(1 + n_children(f, self.children) for f in range(self.flows))
        self.kills = 0
        self.client_kills = 0
        self.add_retries = 0
        self.problems: list[str] = []
        self.notes: dict[str, Any] = {}

    def problem(self, text: str) -> None:
        self.problems.append(text)

    async def run(self) -> int:
        import redis.asyncio as aioredis

        from bullfast import FlowProducer

        admin = aioredis.from_url(self.url)
        ledger = aioredis.from_url(self.ledger_url)
        try:
            await self.warm_up(admin)
            baseline = await self.memory(admin)
            print(f"soak: {self.total_jobs:,} jobs in {self.flows:,} flows of 1 + {self.children} (+1 fatal child "
                  f"every 25th); {self.args.workers} worker processes x concurrency {self.args.concurrency}; "
                  f"prefix {self.prefix}; baseline used_memory {baseline['used_memory']:,} B, "
                  f"{baseline['keys']:,} keys", flush=True)
            settings = {"url": self.url, "ledger_url": self.ledger_url, "prefix": self.prefix,
                        "concurrency": self.args.concurrency, "lock_duration": self.args.lock_duration,
                        "stalled_interval": self.args.stalled_interval}
            procs = [WorkerProcess(settings).start() for _ in range(self.args.workers)]
            producer = FlowProducer(connection=self.url, prefix=self.prefix)
            started = time.monotonic()
            stop_faults = asyncio.Event()
            faults = asyncio.ensure_future(self.inject_faults(procs, settings, admin, stop_faults))
            try:
                await self.produce(producer, admin)
                await self.wait_until_done(admin, started)
            finally:
                stop_faults.set()
                await faults
                for p in procs:
                    p.stop()
                await producer.close()
            elapsed = time.monotonic() - started
            self.notes["seconds"] = round(elapsed, 1)
            self.notes["jobs_per_second"] = round(self.total_jobs / elapsed)
            print(f"soak: processed in {elapsed:.1f} s ({self.total_jobs / elapsed:,.0f} jobs/s); checking...",
                  flush=True)
            await self.check(admin, ledger)
            await self.obliterate_and_compare(admin, baseline)
        finally:
            await ledger.delete("runs", "violations")
            await admin.aclose()
            await ledger.aclose()
        self.report()
        return 1 if self.problems else 0

    async def warm_up(self, admin: Any) -> None:
        """Load every script and let Redis allocate its structures before the baseline."""
        from bullfast import FlowProducer, Queue, Worker, _scripts

        for script in _scripts.scripts().values():
            await admin.script_load(script.source)
        prefix = f"{self.prefix}-warm"
        async with FlowProducer(connection=self.url, prefix=prefix) as fp:
            await fp.add({"name": "p", "queue_name": "w-p", "children": [
                {"name": "c", "queue_name": "w-c", "data": {"i": i}} for i in range(20)]})
        done = asyncio.Event()

        async def proc(job: Any) -> int:
            return 1

        workers = [Worker("w-c", proc, connection=self.url, prefix=prefix, drain_delay=1),
                   Worker("w-p", proc, connection=self.url, prefix=prefix, drain_delay=1)]
        workers[1].on("completed", lambda *a: done.set())
        await asyncio.wait_for(done.wait(), 30)
        for w in workers:
            await w.close()
        for q in ("w-c", "w-p"):
            async with Queue(q, connection=self.url, prefix=prefix) as queue:
                await queue.obliterate(force=True)

    async def memory(self, admin: Any) -> dict[str, int]:
        """Redis memory that holds data: ``used_memory`` minus client buffers, after ``CONFIG
        RESETSTAT`` on a private server (Redis 7 keeps a latency histogram per command name used,
        which would count against the run)."""
        if not self.args.redis_url:
            await admin.config_resetstat()
        info = await admin.info("memory")
        used = int(info["used_memory"]) - int(info.get("mem_clients_normal", 0))
        return {"used_memory": used, "keys": int(await admin.dbsize())}

    async def produce(self, producer: Any, admin: Any) -> None:
        from bullfast.errors import JobExistsError, RedisUnavailableError

        batch = self.args.batch
        for start in range(0, self.flows, batch):
            # keep at most --window flows unfinished, so that Redis holds a bounded amount
            while start - await self.finished_parents(admin) > self.args.window:
                await asyncio.sleep(0.05)
            flows = [make_flow(f, self.children) for f in range(start, min(start + batch, self.flows))]
            while True:
                try:
                    await producer.add_bulk(flows)
                    break
                except JobExistsError:
                    break  # written before the connection dropped: a bulk is all or nothing
                except RedisUnavailableError:
                    self.add_retries += 1
                    await asyncio.sleep(0.1)

    async def finished_parents(self, admin: Any) -> int:
        while True:
            try:
                return int(await admin.zcard(f"{self.prefix}:{PARENT_Q}:completed")) + int(
                    await admin.zcard(f"{self.prefix}:{PARENT_Q}:failed"))
            except Exception:  # a dropped connection of our own
                await asyncio.sleep(0.05)

    async def wait_until_done(self, admin: Any, started: float) -> None:
        last = time.monotonic()
        while True:
            finished = await self.finished_parents(admin)
            busy = 0
            try:
                for q in (CHILD_Q, PARENT_Q):
                    for state in ("wait", "active"):
                        busy += int(await admin.llen(f"{self.prefix}:{q}:{state}"))
                    for state in ("delayed", "prioritized"):
                        busy += int(await admin.zcard(f"{self.prefix}:{q}:{state}"))
            except Exception:
                busy = 1
            if finished >= self.flows and busy == 0:
                return
            if time.monotonic() - last > 10:
                last = time.monotonic()
                print(f"  {time.monotonic() - started:6.0f} s: {finished:,}/{self.flows:,} flows done, "
                      f"{self.kills} worker kills, {self.client_kills} connection drops", flush=True)
            if time.monotonic() - started > self.args.timeout:
                raise SystemExit(f"soak: not done after {self.args.timeout} s ({finished}/{self.flows} flows)")
            await asyncio.sleep(0.2)

    async def inject_faults(self, procs: list[WorkerProcess], settings: dict[str, Any], admin: Any,
                            stop: asyncio.Event) -> None:
        rng = random.Random(self.args.seed)
        loop = asyncio.get_running_loop()
        next_kill = time.monotonic() + self.args.kill_every
        next_drop = time.monotonic() + self.args.client_kill_every
        while not stop.is_set():
            now = time.monotonic()
            if self.args.kill_every and now >= next_kill:
                victim = rng.randrange(len(procs))
                procs[victim].kill()
                procs[victim] = await loop.run_in_executor(None, WorkerProcess(settings).start)
                self.kills += 1
                next_kill = now + self.args.kill_every * rng.uniform(0.5, 1.5)
            if self.args.client_kill_every and now >= next_drop:
                try:
                    await admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
                    self.client_kills += 1
                except Exception:
                    pass
                next_drop = now + self.args.client_kill_every * rng.uniform(0.5, 1.5)
            try:
                await asyncio.wait_for(stop.wait(), 0.1)
            except asyncio.TimeoutError:
                pass

    # -- the checks -------------------------------------------------------------------------

    async def check(self, admin: Any, ledger: Any) -> None:
        P = self.prefix
        runs = {k.decode(): int(v) for k, v in (await ledger.hgetall("runs")).items()}
        for v in await ledger.lrange("violations", 0, -1):
            self.problem(f"parent violation: {v.decode()}")
        completed = {q: {m.decode() for m in await admin.zrange(f"{P}:{q}:completed", 0, -1)} for q in (CHILD_Q, PARENT_Q)}
        failed = {q: {m.decode() for m in await admin.zrange(f"{P}:{q}:failed", 0, -1)} for q in (CHILD_Q, PARENT_Q)}
        want_completed: dict[str, set[str]] = {CHILD_Q: set(), PARENT_Q: set()}
        want_failed: dict[str, set[str]] = {CHILD_Q: set(), PARENT_Q: set()}
        kept_children: set[str] = set()
        reruns = Counter()
        stalls = 0
        step = 200
        for first in range(0, self.flows, step):
            flows = range(first, min(first + step, self.flows))
            async with admin.pipeline(transaction=False) as pipe:
                for f in flows:
                    key = f"{P}:{PARENT_Q}:f{f}"
                    pipe.hmget(key, "returnvalue", "failedReason", "atm", "stc")
                    pipe.hgetall(f"{key}:processed")
                    pipe.hkeys(f"{key}:failed")
                    pipe.zrange(f"{key}:unsuccessful", 0, -1)
                    for i in range(n_children(f, self.children)):
                        kind = kind_of(i, self.children)
                        if kind in ("kept", "ignored", "fatal"):
                            pipe.hmget(f"{P}:{CHILD_Q}:f{f}.{i}", "returnvalue", "failedReason", "atm", "stc")
                        else:
                            pipe.exists(f"{P}:{CHILD_Q}:f{f}.{i}")
                replies = iter(await pipe.execute())
            for f in flows:
                pkey = f"{P}:{PARENT_Q}:f{f}"
                (rv, reason, atm, stc), processed, ignored, unsuccessful = (next(replies) for _ in range(4))
                atm, stc = int(atm or 0), int(stc or 0)
                stalls += stc
                fatal = f % 25 == 24
                prun = runs.get(pkey, 0)
                if fatal:
                    want_failed[PARENT_Q].add(f"f{f}")
                    fatal_key = f"{P}:{CHILD_Q}:f{f}.{self.children}"
                    if (reason or b"").decode() != f"child {fatal_key} failed":
                        self.problem(f"{pkey}: failed reason {reason!r}")
                    if prun:
                        self.problem(f"{pkey}: a parent failed by its child ran {prun} times")
                    if [m.decode() for m in unsuccessful] != [fatal_key]:
                        self.problem(f"{pkey}: unsuccessful {unsuccessful}")
                else:
                    want_completed[PARENT_Q].add(f"f{f}")
                    if rv is None or json.loads(rv) != expected_parent(f, self.children):
                        self.problem(f"{pkey}: result {rv!r}, expected {expected_parent(f, self.children)}")
                    if not 1 <= prun <= atm + stc:
                        self.problem(f"{pkey}: ran {prun} times with {atm} attempts and {stc} stalls")
                    reruns["parent"] += max(0, prun - 1)
                want_processed = {}
                want_ignored = set()
                for i in range(n_children(f, self.children)):
                    kind = kind_of(i, self.children)
                    ckey = f"{P}:{CHILD_Q}:f{f}.{i}"
                    reply = next(replies)
                    opts, fail_times = child_opts(kind)
                    crun = runs.get(ckey, 0)
                    if kind in ("ignored", "dropped", "fatal"):
                        if crun < max(1, opts.get("attempts", 1)):
                            self.problem(f"{ckey}: ran {crun} times, fewer than its attempts")
                    else:
                        want_processed[ckey] = {"v": value_of(f, i)}
                        if crun < fail_times + 1:
                            self.problem(f"{ckey}: ran {crun} times")
                        reruns["child"] += crun - (fail_times + 1)
                    if kind == "ignored":
                        want_ignored.add(ckey)
                    if kind in ("kept", "ignored", "fatal"):
                        crv, creason, catm, cstc = reply
                        stalls += int(cstc or 0)
                        kept_children.add(ckey)
                        if kind == "kept":
                            want_completed[CHILD_Q].add(f"f{f}.{i}")
                            if crv is None or json.loads(crv) != {"v": value_of(f, i)}:
                                self.problem(f"{ckey}: returned {crv!r}")
                        else:
                            want_failed[CHILD_Q].add(f"f{f}.{i}")
                            if not (creason or b"").decode().startswith(FAIL_REASON):
                                self.problem(f"{ckey}: failed reason {creason!r}")
                            if int(catm or 0) != max(1, opts.get("attempts", 1)):
                                self.problem(f"{ckey}: {catm} attempts made")
                    elif reply:
                        self.problem(f"{ckey}: should have been removed")
                got = {k.decode(): json.loads(v) for k, v in processed.items()}
                if got != want_processed:
                    missing = set(want_processed) - set(got)
                    extra = set(got) - set(want_processed)
                    self.problem(f"{pkey}: processed hash: {len(missing)} missing, {len(extra)} extra, "
                                 f"{sum(1 for k in got if k in want_processed and got[k] != want_processed[k])} wrong")
                if {k.decode() for k in ignored} != want_ignored:
                    self.problem(f"{pkey}: ignored failures {sorted(k.decode() for k in ignored)}")
        for q in (CHILD_Q, PARENT_Q):
            if completed[q] != want_completed[q]:
                self.problem(f"{q}: completed set has {len(completed[q])}, expected {len(want_completed[q])} "
                             f"({len(completed[q] - want_completed[q])} unexpected)")
            if failed[q] != want_failed[q]:
                self.problem(f"{q}: failed set has {len(failed[q])}, expected {len(want_failed[q])}")
        self.notes["reruns_after_kills"] = dict(reruns)
        self.notes["stalled_recoveries_on_kept_jobs"] = stalls
        self.notes["kept_jobs"] = len(kept_children) + self.flows
        await self.check_keys(admin, kept_children)

    async def check_keys(self, admin: Any, kept_children: set[str]) -> None:
        P = self.prefix
        queue_keys = {"wait", "active", "paused", "prioritized", "delayed", "waiting-children", "completed",
                      "failed", "events", "meta", "id", "marker", "pc", "stalled", "stalled-check", "limiter",
                      "metrics:completed", "metrics:failed"}
        kept = kept_children | {f"{P}:{PARENT_Q}:f{f}" for f in range(self.flows)}
        leaks: Counter[str] = Counter()
        examples: list[str] = []
        async for raw in admin.scan_iter(match=f"{P}:*", count=5000):
            key = raw.decode()
            rest = key[len(P) + 1 :]
            queue, _, tail = rest.partition(":")
            if queue in (CHILD_Q, PARENT_Q) and tail in queue_keys:
                if tail in ("wait", "active", "paused", "prioritized", "delayed", "waiting-children"):
                    leaks["left in " + tail] += 1
                continue
            job_key, _, sub = key.rpartition(":") if tail.count(":") >= 1 else (key, "", "")
            if not sub:
                if key not in kept:
                    leaks["job hash of a removed job"] += 1
                    examples.append(key)
                continue
            if job_key in kept and sub in ("processed", "failed", "unsuccessful"):
                continue
            leaks[f":{sub} key" + ("" if job_key in kept else " of a removed job")] += 1
            examples.append(key)
        for what, n in leaks.items():
            self.problem(f"leaked keys: {n} x {what} (e.g. {examples[:3]})")
        self.notes["leaked_keys"] = sum(leaks.values())

    async def obliterate_and_compare(self, admin: Any, baseline: dict[str, int]) -> None:
        from bullfast import Queue

        for q in (CHILD_Q, PARENT_Q):
            async with Queue(q, connection=self.url, prefix=self.prefix) as queue:
                await queue.obliterate(force=True)
        left = [k async for k in admin.scan_iter(match=f"{self.prefix}*", count=5000)]
        if left:
            self.problem(f"{len(left)} keys left under the prefix after obliterate (e.g. {left[:3]})")
        # Redis frees some of it incrementally (its key table shrinks over a few cron cycles): give
        # it up to 15 s, and take a reading a second after the first one within the tolerance
        deadline = time.monotonic() + 15
        settled = False
        while True:
            now = await self.memory(admin)
            delta = now["used_memory"] - baseline["used_memory"]
            if settled or time.monotonic() > deadline:
                break
            settled = delta <= self.args.memory_tolerance
            await asyncio.sleep(1.0 if settled else 0.5)
        self.notes["memory"] = {"baseline": baseline["used_memory"], "after_obliterate": now["used_memory"],
                                "delta": delta, "keys_baseline": baseline["keys"], "keys_after": now["keys"]}
        if now["keys"] != baseline["keys"]:
            self.problem(f"{now['keys'] - baseline['keys']} more keys than at the baseline")
        if delta > self.args.memory_tolerance:
            self.problem(f"used_memory {delta:,} B above the baseline (tolerance {self.args.memory_tolerance:,} B)")

    def report(self) -> None:
        print()
        print("Soak report")
        print(f"  jobs                {self.total_jobs:,} in {self.flows:,} flows")
        print(f"  processing time     {self.notes.get('seconds')} s ({self.notes.get('jobs_per_second', 0):,} jobs/s)")
        print(f"  faults              {self.kills} worker SIGKILLs, {self.client_kills} CLIENT KILLs, "
              f"{self.add_retries} adds retried")
        print(f"  re-runs after kills {self.notes.get('reruns_after_kills')} (at-least-once execution)")
        print(f"  stalled recoveries  {self.notes.get('stalled_recoveries_on_kept_jobs')} (on kept jobs)")
        print(f"  leaked keys         {self.notes.get('leaked_keys')}")
        mem = self.notes.get("memory", {})
        print(f"  memory              baseline {mem.get('baseline', 0):,} B, after obliterate "
              f"{mem.get('after_obliterate', 0):,} B (delta {mem.get('delta', 0):+,} B); keys "
              f"{mem.get('keys_baseline')} -> {mem.get('keys_after')}")
        if self.problems:
            print(f"  FAILED: {len(self.problems)} problems")
            for p in self.problems[:50]:
                print(f"    - {p}")
        else:
            print("  conservation: OK (every job ended as its options say, every parent once, no leak)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000, help="jobs in all (default 1,000,000)")
    parser.add_argument("--children", type=int, default=99, help="children per flow (default 99)")
    parser.add_argument("--workers", type=int, default=3, help="worker processes (default 3)")
    parser.add_argument("--concurrency", type=int, default=100, help="child worker concurrency per process")
    parser.add_argument("--batch", type=int, default=20, help="flows per add_bulk call (default 20)")
    parser.add_argument("--window", type=int, default=200, help="max unfinished flows (default 200)")
    parser.add_argument("--kill-every", type=float, default=5.0, help="seconds between worker SIGKILLs (0: none)")
    parser.add_argument("--client-kill-every", type=float, default=3.0,
                        help="seconds between CLIENT KILLs (0: none)")
    parser.add_argument("--lock-duration", type=int, default=4000, help="workers' lock duration, ms")
    parser.add_argument("--stalled-interval", type=int, default=2000, help="workers' stalled interval, ms")
    parser.add_argument("--memory-tolerance", type=int, default=256 << 10,
                        help="bytes of used_memory above the baseline accepted after obliterate (default 256 KiB)")
    parser.add_argument("--timeout", type=float, default=6 * 3600, help="give up after this many seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--redis-url", default=None,
                        help="the Redis under test (default: a private redis-server); only the soak's "
                             "prefix is written, but CLIENT KILL drops every client connection of it")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(worker_main(json.loads(args.worker)))
        return 0

    from bullfast.embedded import RedisServer

    servers = []
    try:
        if args.redis_url:
            url = args.redis_url
        else:
            servers.append(RedisServer().start())
            url = servers[-1].url
        servers.append(RedisServer().start())
        ledger_url = servers[-1].url
        return asyncio.run(Soak(args, url, ledger_url).run())
    finally:
        for server in servers:
            server.cleanup()


if __name__ == "__main__":
    sys.exit(main())
