"""The processor of the fault tests, and a worker process built on it.

Imported by the tests (``make_processor``) and run as a script by them (a worker process they
can SIGKILL): ``python _worker_proc.py '<json settings>'``. The process prints ``ready`` once
its workers run, and runs until it is killed or gets SIGTERM (then it closes its workers).

What a job does (its data): record one run (``HINCRBY <ledger>:runs <job key> 1``, a side
effect that survives the process), sleep ``sleep`` seconds, raise while ``attempts_made <
fail_times``, and return ``{"v": v + the sum of its children's v}``. A parent (``n`` > 0) reads
its children's values first; if it does not see exactly ``n`` of them it records a violation
(``RPUSH <ledger>:violations "<processedOn: when it was fetched> <job key> ..."``). So the root of a tree returns the sum of every node's ``v``.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from typing import Any

import redis.asyncio as aioredis


def make_processor(client: aioredis.Redis, ledger: str) -> Any:
    async def process(job: Any) -> dict[str, int]:
        started = job.processed_on or time.time_ns() // 1_000_000  # when the job was fetched
        await client.hincrby(f"{ledger}:runs", job.key, 1)
        data = job.data
        sleep = data.get("sleep", 0)
        if sleep:
            await asyncio.sleep(sleep)
        total = int(data.get("v", 0))
        n = int(data.get("n", 0))
        if n:
            values = await job.get_children_values()
            if len(values) != n:
                await client.rpush(
                    f"{ledger}:violations", f"{started} {job.key} ran with {len(values)} of {n} children values"
                )
            total += sum(int(value["v"]) for value in values.values())
        if job.attempts_made < int(data.get("fail_times", 0)):
            raise RuntimeError(f"planned failure of attempt {job.attempts_made + 1}")
        return {"v": total}

    return process


async def main(settings: dict[str, Any]) -> None:
    from bullfast import Worker

    url = settings["url"]
    ledger_client = aioredis.from_url(settings.get("ledger_url", url))
    process = make_processor(ledger_client, settings["ledger"])
    workers = [
        Worker(
            name,
            process,
            connection=url,
            prefix=settings["prefix"],
            concurrency=concurrency,
            lock_duration=settings.get("lock_duration", 30000),
            stalled_interval=settings.get("stalled_interval", 30000),
            max_stalled_count=settings.get("max_stalled_count", 1),
            drain_delay=settings.get("drain_delay", 0.5),
        )
        for name, concurrency in settings["queues"].items()
    ]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    for worker in workers:
        await worker.close()
    await ledger_client.aclose()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
