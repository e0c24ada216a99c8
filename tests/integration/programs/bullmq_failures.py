"""A second program written for ``bullmq`` (the official Python port, 3.4.4) and nothing else:
retries with backoff, an unrecoverable failure, a child that fails its parent, QueueEvents
listeners, and managing jobs by hand (promote, changePriority, retry, remove, log).

tests/integration/test_bullmq_compat.py runs it under bullmq and, with only its
``from bullmq import`` line changed, under bullfast, and compares what it prints.
Usage: python bullmq_failures.py REDIS_URL PREFIX
"""

import asyncio
import json
import sys

from bullmq import FlowProducer, Job, Queue, QueueEvents, UnrecoverableError, Worker


async def main(url, prefix):
    opts = {"connection": url, "prefix": prefix}
    out = {}
    events = QueueEvents("jobs", {**opts, "lastEventId": "0"})
    seen = {"completed": [], "failed": []}
    events.on("completed", lambda args, event_id: seen["completed"].append(args["jobId"]))
    events.on("failed", lambda args, event_id: seen["failed"].append(args["jobId"]))

    queue = Queue("jobs", opts)
    await queue.add("flaky", {"fail": 2}, {"jobId": "flaky", "attempts": 3, "backoff": {"type": "fixed", "delay": 50}})
    await queue.add("fatal", {}, {"jobId": "fatal", "attempts": 5})
    await queue.add("later", {}, {"jobId": "later", "delay": 60_000})
    await queue.add("low", {}, {"jobId": "low", "priority": 9})
    await queue.add("gone", {}, {"jobId": "gone", "delay": 60_000})
    later = await Job.fromId(queue, "later")
    await later.promote()
    low = await Job.fromId(queue, "low")
    await low.changePriority({"priority": 1})
    gone = await Job.fromId(queue, "gone")
    await gone.remove()
    out["after_management"] = [await later.getState(), await low.getState(), await Job.fromId(queue, "gone") is None]

    flow = FlowProducer(opts)
    tree = await flow.add({
        "name": "parent", "queueName": "parents",
        "children": [
            {"name": "bad", "queueName": "jobs", "opts": {"jobId": "bad-child", "failParentOnFailure": True}},
            {"name": "ok", "queueName": "jobs", "opts": {"jobId": "ok-child"}},
        ],
    })

    async def process(job, token):
        await job.log(f"run {job.attemptsMade + 1}")
        if job.name == "flaky" and job.attemptsMade < job.data["fail"]:
            raise ValueError(f"attempt {job.attemptsMade + 1} failed")
        if job.name == "fatal":
            raise UnrecoverableError("cannot go on")
        if job.name == "bad":
            raise RuntimeError("bad child")
        return job.name

    worker = Worker("jobs", process, {**opts, "concurrency": 2})
    parents = Worker("parents", lambda job, token: "never", opts)
    for _ in range(400):
        counts = await queue.getJobCounts("completed", "failed")
        if counts["completed"] >= 4 and counts["failed"] >= 2:
            break
        await asyncio.sleep(0.05)
    flaky = await Job.fromId(queue, "flaky")
    fatal = await Job.fromId(queue, "fatal")
    out["flaky"] = [flaky.returnvalue, flaky.attemptsMade, await flaky.isCompleted()]
    out["fatal"] = [fatal.failedReason, fatal.attemptsMade, await fatal.isFailed()]
    parent = await Job.fromId(Queue("parents", opts), tree["job"].id)
    for _ in range(100):
        if await parent.isFailed():
            break
        await asyncio.sleep(0.05)
        parent = await Job.fromId(Queue("parents", opts), tree["job"].id)
    out["parent"] = [await parent.getState(), parent.failedReason is not None]
    out["counts"] = await queue.getJobCounts("completed", "failed", "waiting", "delayed")

    await fatal.retry("failed")
    for _ in range(100):
        if (await Job.fromId(queue, "fatal")).attemptsMade >= 2:
            break
        await asyncio.sleep(0.05)
    fatal = await Job.fromId(queue, "fatal")
    out["fatal_again"] = [await fatal.getState(), fatal.attemptsMade]
    for _ in range(100):
        if len(seen["failed"]) >= 3 and len(seen["completed"]) >= 4:
            break
        await asyncio.sleep(0.05)
    out["events"] = {k: sorted(set(v)) for k, v in seen.items()}
    print(json.dumps(out, sort_keys=True), flush=True)

    await worker.close()
    await parents.close()
    await events.close()
    await queue.close()
    await flow.close()


asyncio.run(main(sys.argv[1], sys.argv[2]))
