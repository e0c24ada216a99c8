"""A small program written for ``bullmq`` (the official Python port, 3.4.4) and nothing else:
orders processed by a worker, and a report flow whose parent sums its sections' results.

tests/integration/test_bullmq_compat.py runs it as it is under bullmq and, with only its
``from bullmq import`` line changed, under bullfast, and compares what it prints.
Usage: python bullmq_orders.py REDIS_URL PREFIX
"""

import asyncio
import json
import sys

from bullmq import FlowProducer, Job, Queue, Worker


async def main(url, prefix):
    opts = {"connection": url, "prefix": prefix}
    out = {}
    queue = Queue("orders", {**opts, "defaultJobOptions": {"attempts": 2, "removeOnComplete": False}})
    await queue.add("order", {"sku": "a", "qty": 2}, {"jobId": "order-a", "priority": 2})
    await queue.addBulk([{"name": "order", "data": {"sku": s, "qty": 1}} for s in ("b", "c")])
    out["counts_before"] = await queue.getJobCounts("waiting", "prioritized")

    flow = FlowProducer(opts)
    tree = await flow.add({
        "name": "report",
        "queueName": "reports",
        "data": {"title": "daily"},
        "children": [
            {"name": "section", "queueName": "sections", "data": {"n": n}, "opts": {"removeOnComplete": False}}
            for n in (1, 2, 3)
        ],
    })
    out["tree"] = [tree["job"].name, len(tree["children"]), sorted(c["job"].data["n"] for c in tree["children"])]
    out["child_parent"] = tree["children"][0]["job"].parentKey == f"{prefix}:reports:{tree['job'].id}"

    finished = asyncio.Event()

    async def process_order(job, token):
        await job.updateProgress(50)
        await job.updateProgress(100)
        return {"sku": job.data["sku"], "total": job.data["qty"] * 10}

    async def process_section(job, token):
        await job.updateProgress({"section": job.data["n"]})
        return job.data["n"] * job.data["n"]

    async def process_report(job, token):
        values = await job.getChildrenValues()
        return {"title": job.data["title"], "sum": sum(values.values()), "parts": len(values)}

    orders = Worker("orders", process_order, {**opts, "concurrency": 2})
    sections = Worker("sections", process_section, {**opts, "concurrency": 3})
    reports = Worker("reports", process_report, opts)
    reports.on("completed", lambda job, result: finished.set())
    await asyncio.wait_for(finished.wait(), 20)
    while (await queue.getJobCounts("completed"))["completed"] < 3:
        await asyncio.sleep(0.05)

    report = await Job.fromId(Queue("reports", opts), tree["job"].id)
    out["report"] = [report.returnvalue, report.attemptsMade, await report.getState()]
    out["children_values"] = sorted((await report.getChildrenValues()).values())
    section = await Job.fromId(Queue("sections", opts), tree["children"][0]["job"].id)
    out["section"] = [section.progress, section.returnvalue, await section.getState()]
    a = await queue.getJob("order-a")
    out["order_a"] = [a.returnvalue, a.progress, a.opts.get("attempts"), a.finishedOn >= a.processedOn > 0]
    out["counts_after"] = await queue.getJobCounts("completed", "waiting", "prioritized")
    print(json.dumps(out, sort_keys=True), flush=True)

    for worker in (orders, sections, reports):
        await worker.close()
    for q in (queue, report.queue, section.queue):
        await q.close()
    await flow.close()


asyncio.run(main(sys.argv[1], sys.argv[2]))
