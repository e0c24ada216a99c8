"""The Job API on a private Redis: each method is checked by what it leaves in Redis (which
list or sorted set holds the job, its score, its hash fields, its parent's dependency sets,
the events stream), not only by what it returns.

Scores follow protocol sections 4.4 and 4.5: ``delayed`` = due ms x 4096 + k,
``prioritized`` = priority x 2^32 + the queue's ``pc`` counter.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bullfast import FlowProducer, Queue, Worker, _removal
from bullfast.errors import (
    InvalidOptionError,
    JobNotFoundError,
    JobNotInStateError,
    LockMismatchError,
    ParentNotFoundError,
    UnrecoverableError,
)
from bullfast.job import Job

PRIORITY_UNIT = 2**32


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Env:
    def __init__(self, url: str, prefix: str, client: Any) -> None:
        self.url, self.prefix, self.client = url, prefix, client
        self.closers: list[Any] = []

    def queue(self, name: str) -> Queue:
        q = Queue(name, connection=self.url, prefix=self.prefix)
        self.closers.append(q)
        return q

    def flow(self) -> FlowProducer:
        f = FlowProducer(connection=self.url, prefix=self.prefix)
        self.closers.append(f)
        return f

    def worker(self, name: str, processor: Any, **kw: Any) -> Worker:
        w = Worker(name, processor, connection=self.url, prefix=self.prefix, drain_delay=0.2, **kw)
        self.closers.insert(0, w)  # workers close first
        return w

    def key(self, queue: str, suffix: str) -> str:
        return f"{self.prefix}:{queue}:{suffix}"

    async def wait_list(self, queue: str) -> list[str]:
        return [m.decode() for m in await self.client.lrange(self.key(queue, "wait"), 0, -1)]

    async def field(self, job: Job, name: str) -> str | None:
        value = await self.client.hget(job.key, name)
        return None if value is None else value.decode()

    async def events(self, queue: str) -> list[dict[str, str]]:
        entries = await self.client.xrange(self.key(queue, "events"))
        return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]


@pytest.fixture
async def env(redis_url: str, prefix: str, client: Any) -> AsyncIterator[Env]:
    e = Env(redis_url, prefix, client)
    try:
        yield e
    finally:
        for c in e.closers:
            await c.close()


async def until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def state_is(queue: Queue, job_id: str, state: str, what: str = "") -> None:
    async def check() -> bool:
        return await queue.get_job_state(job_id) == state

    await until(check, what=what or f"job {job_id} to be {state}")


# ------------------------------------------------------------------------------------------
# change_delay, promote, change_priority: where the job is, with which score
# ------------------------------------------------------------------------------------------


async def test_change_delay_moves_the_due_time_of_a_delayed_job(env: Env) -> None:
    q = env.queue("cd")
    job = await q.add("x", {}, {"delay": 60_000})
    first = await env.client.zscore(env.key("cd", "delayed"), job.id)
    before = now_ms()
    await job.change_delay(120_000)
    after = now_ms()
    score = int(await env.client.zscore(env.key("cd", "delayed"), job.id))
    assert score != first
    assert before + 120_000 <= score // 4096 <= after + 120_000
    assert await env.field(job, "delay") == "120000" and job.delay == 120_000
    assert await job.get_state() == "delayed"
    # the event carries the absolute due time; the marker says when the earliest job is due
    last = (await env.events("cd"))[-1]
    assert last == {"event": "delayed", "jobId": job.id, "delay": str(score // 4096)}
    (_, marker_score), = await env.client.zrange(env.key("cd", "marker"), 0, -1, withscores=True)
    assert int(marker_score) == score // 4096

    # only a delayed job's delay can change; nothing is touched otherwise
    waiting = await q.add("y", {})
    with pytest.raises(JobNotInStateError, match=f"^Job {waiting.id} is not in the delayed state. changeDelay$"):
        await waiting.change_delay(5_000)
    assert await env.wait_list("cd") == [waiting.id]
    assert await env.field(waiting, "delay") == "0"
    with pytest.raises(JobNotFoundError):
        await Job(q, "gone", None, None, "no-such-job").change_delay(1)

    # a delay <= 0 makes the job due now, not in the past (BullMQ)
    before = now_ms()
    await job.change_delay(-5_000)
    score = int(await env.client.zscore(env.key("cd", "delayed"), job.id))
    assert before <= score // 4096 <= now_ms()
    assert (await env.events("cd"))[-1]["delay"] == str(score // 4096)
    assert await env.field(job, "delay") == "-5000"


async def test_state_errors_name_the_state_and_command_as_bullmq(env: Env) -> None:
    q = env.queue("msg")
    job = await q.add("x", {})
    with pytest.raises(JobNotInStateError, match=f"^Job {job.id} is not in the delayed state. promote$"):
        await job.promote()
    for state in ("failed", "completed"):
        with pytest.raises(JobNotInStateError, match=f"^Job {job.id} is not in the {state} state. reprocessJob$"):
            await job.retry(state)
    w = env.worker("msg", None, autorun=False)
    taken = await w.get_next_job("tok", block=False)
    assert taken is not None and taken.id == job.id
    taken.opts["attempts"] = 3  # a failure that would be retried: BullMQ's retryJob
    with pytest.raises(LockMismatchError, match=f"^Lock mismatch for job {job.id}. Cmd retryJob from active$"):
        await taken.move_to_failed(ValueError("x"), "not-the-token")


async def test_retry_with_resets_resets_the_job_object_too(env: Env) -> None:
    q = env.queue("rr")
    job = await q.add("x", {})
    w = env.worker("rr", None, autorun=False)
    taken = await w.get_next_job("tok", block=False)
    assert taken is not None
    await taken.move_to_failed(ValueError("no"), "tok")
    assert (taken.attempts_made, taken.attempts_started) == (1, 1)
    await taken.retry("failed", {"resetAttemptsMade": True, "resetAttemptsStarted": True})
    assert (taken.attempts_made, taken.attempts_started) == (0, 0)
    stored = await q.get_job(job.id)
    assert (stored.attempts_made, stored.attempts_started) == (0, 0)


async def test_promote_sends_a_delayed_job_to_wait_or_by_its_priority(env: Env) -> None:
    q = env.queue("pm")
    plain = await q.add("plain", {}, {"delay": 60_000})
    urgent = await q.add("urgent", {}, {"delay": 60_000, "priority": 3})
    await q.add("other", {})

    await plain.promote()
    assert await env.client.zscore(env.key("pm", "delayed"), plain.id) is None
    # LPUSH: behind the job that was already waiting (workers take from the tail)
    assert await env.wait_list("pm") == [plain.id, "3"]
    assert await env.field(plain, "delay") == "0" and plain.delay == 0
    assert (await env.events("pm"))[-1] == {"event": "waiting", "jobId": plain.id, "prev": "delayed"}

    await urgent.promote()
    pc = int(await env.client.get(env.key("pm", "pc")))
    score = await env.client.zscore(env.key("pm", "prioritized"), urgent.id)
    assert int(score) == 3 * PRIORITY_UNIT + pc
    assert urgent.id not in await env.wait_list("pm")
    assert await env.client.zcard(env.key("pm", "delayed")) == 0
    assert await urgent.get_state() == "prioritized"

    with pytest.raises(JobNotInStateError):
        await plain.promote()  # no longer delayed
    assert await env.wait_list("pm") == [plain.id, "3"]


async def test_change_priority_requeues_a_waiting_job(env: Env) -> None:
    q = env.queue("cp")
    first = await q.add("first", {})
    job = await q.add("job", {})
    assert await env.wait_list("cp") == [job.id, first.id]

    await job.change_priority(5)
    pc = int(await env.client.get(env.key("cp", "pc")))
    assert int(await env.client.zscore(env.key("cp", "prioritized"), job.id)) == 5 * PRIORITY_UNIT + pc
    assert await env.wait_list("cp") == [first.id]
    assert await env.field(job, "priority") == "5" and job.priority == 5

    await job.change_priority(2)  # a new counter value: behind jobs of priority 2 already there
    pc2 = int(await env.client.get(env.key("cp", "pc")))
    assert pc2 == pc + 1
    assert int(await env.client.zscore(env.key("cp", "prioritized"), job.id)) == 2 * PRIORITY_UNIT + pc2

    await job.change_priority(2, lifo=True)  # lifo: first of its priority, no counter
    assert int(await env.client.zscore(env.key("cp", "prioritized"), job.id)) == 2 * PRIORITY_UNIT
    assert int(await env.client.get(env.key("cp", "pc"))) == pc2

    await job.change_priority(0)  # back to wait, at the head (runs after `first`)
    assert await env.client.zcard(env.key("cp", "prioritized")) == 0
    assert await env.wait_list("cp") == [job.id, first.id]
    await job.change_priority({"priority": 0, "lifo": True})  # lifo: at the tail, runs next
    assert await env.wait_list("cp") == [first.id, job.id]
    assert await env.field(job, "priority") == "0"


async def test_change_priority_of_a_delayed_job_keeps_it_delayed(env: Env) -> None:
    q = env.queue("cpd")
    job = await q.add("x", {}, {"delay": 60_000})
    score = await env.client.zscore(env.key("cpd", "delayed"), job.id)
    await job.change_priority(7)
    assert await env.client.zscore(env.key("cpd", "delayed"), job.id) == score
    assert await env.client.zcard(env.key("cpd", "prioritized")) == 0
    assert await env.field(job, "priority") == "7"
    await job.promote()  # and it is promoted by its new priority
    pc = int(await env.client.get(env.key("cpd", "pc")))
    assert int(await env.client.zscore(env.key("cpd", "prioritized"), job.id)) == 7 * PRIORITY_UNIT + pc


# ------------------------------------------------------------------------------------------
# children: is_waiting_children, remove_child_dependency, remove_unprocessed_children
# ------------------------------------------------------------------------------------------


def child(name: str, queue: str = "kids", **opts: Any) -> dict[str, Any]:
    return {"name": name, "queue_name": queue, "data": {"name": name}, "opts": opts}


async def test_is_waiting_children_follows_the_parent(env: Env) -> None:
    node = await env.flow().add({"name": "p", "queue_name": "iw", "children": [child("a", "iw-k")]})
    parent, kid = node.job, node["children"][0].job
    assert await parent.is_waiting_children() is True
    assert await kid.is_waiting_children() is False
    assert await env.client.zscore(env.key("iw", "waiting-children"), parent.id) is not None

    async def run(job: Job) -> Any:
        return job.name

    env.worker("iw-k", run)
    await state_is(parent.queue, parent.id, "waiting")  # released to wait, nothing runs it
    assert await parent.is_waiting_children() is False
    assert await env.client.zscore(env.key("iw", "waiting-children"), parent.id) is None
    assert await env.wait_list("iw") == [parent.id]


async def test_remove_child_dependency_detaches_the_child(env: Env) -> None:
    node = await env.flow().add({"name": "p", "queue_name": "rc", "children": [child("a"), child("b")]})
    parent = node.job
    a, b = (c.job for c in node["children"])
    deps = parent.key + ":dependencies"

    assert a.parent_key == parent.key and a.parent is not None
    assert await a.remove_child_dependency() is True
    assert a.parent_key is None and a.parent is None  # the object says so too, as BullMQ's
    assert sorted(m.decode() for m in await env.client.smembers(deps)) == [b.key]
    assert await env.field(a, "parentKey") is None and await env.field(a, "parent") is None
    assert await a.get_state() == "waiting"  # the child itself stays, as a job of its own
    assert await parent.is_waiting_children()  # b is still pending

    # detached: it has no parent any more
    with pytest.raises(ParentNotFoundError):
        await a.remove_child_dependency()

    assert await b.remove_child_dependency() is True  # the last one: the parent is released
    assert await env.client.exists(deps) == 0
    assert await parent.get_state() == "waiting" and await env.wait_list("rc") == [parent.id]
    assert (await env.events("rc"))[-1] == {"event": "waiting", "jobId": parent.id, "prev": "waiting-children"}


async def test_remove_child_dependency_of_a_finished_child_is_false(env: Env) -> None:
    node = await env.flow().add({"name": "p", "queue_name": "rf", "children": [child("a", "rf-k"), child("b", "rf-k")]})
    parent = node.job
    a = node["children"][0].job
    worker = env.worker("rf-k", None)
    taken = await worker.get_next_job("tok")
    assert taken is not None and taken.id == a.id
    await taken.move_to_completed("done", "tok")
    assert await a.remove_child_dependency() is False  # not pending: nothing changes
    assert await parent.get_children_values() == {a.key: "done"}
    assert await env.field(a, "parentKey") == parent.key
    assert await parent.is_waiting_children()


async def test_remove_unprocessed_children_spares_locked_and_finished_ones(env: Env) -> None:
    node = await env.flow().add({
        "name": "p", "queue_name": "ru", "children": [
            child("done", "ru-k"),
            child("running", "ru-k"),
            child("idle", "ru-k"),
            {"name": "mid", "queue_name": "ru-m", "children": [child("grandchild", "ru-k")]},
        ],
    })
    parent = node.job
    done, running, idle, mid = (c.job for c in node["children"])
    grandchild = node["children"][3]["children"][0].job
    worker = env.worker("ru-k", None)
    first = await worker.get_next_job("t1")
    second = await worker.get_next_job("t2")
    assert (first.id, second.id) == (done.id, running.id)  # type: ignore[union-attr]
    await first.move_to_completed(1, "t1")  # type: ignore[union-attr]

    assert await parent.remove_unprocessed_children() == 2  # idle, and mid with its child
    for gone in (idle, mid, grandchild):
        assert await env.client.exists(gone.key) == 0
    deps = {m.decode() for m in await env.client.smembers(parent.key + ":dependencies")}
    assert deps == {running.key}  # locked by a worker: kept
    assert await parent.get_children_values() == {done.key: 1}
    assert await parent.is_waiting_children()

    await second.move_to_completed(2, "t2")  # type: ignore[union-attr]
    assert await parent.get_state() == "waiting"
    assert await parent.get_children_values() == {done.key: 1, running.key: 2}
    assert await parent.remove_unprocessed_children() == 0


@pytest.mark.parametrize("path", ["one call", "short calls"])
async def test_remove_unprocessed_children_keeps_what_failed_or_finished_below(
    env: Env, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As BullMQ 6.7's removeUnprocessedChildren: a failed child (no policy, so still a
    dependency) stays, and of a pending child that is removed only its own pending children
    go: its finished ones stay (before, bullfast removed both)."""
    if path == "short calls":
        monkeypatch.setattr(_removal, "ONE_CALL_CHILDREN", 0)
    node = await env.flow().add({
        "name": "p", "queue_name": "rf", "children": [
            child("bad", "rf-k", fail_parent_on_failure=False),
            child("later", "rf-k", delay=60_000),
            {"name": "mid", "queue_name": "rf-m", "children": [
                child("done", "rf-k"), child("pending", "rf-k", delay=60_000)]},
        ],
    })
    parent = node.job
    bad, later, mid = (c.job for c in node["children"])
    done, pending = (c.job for c in node["children"][2]["children"])
    worker = env.worker("rf-k", None)
    first = await worker.get_next_job("t1")
    second = await worker.get_next_job("t2")
    assert {first.id, second.id} == {bad.id, done.id}  # type: ignore[union-attr]
    for job, token in ((first, "t1"), (second, "t2")):
        assert job is not None
        if job.id == bad.id:
            await job.move_to_failed(UnrecoverableError("no"), token)
        else:
            await job.move_to_completed("v", token)

    assert await parent.remove_unprocessed_children() == 2  # later, and mid (with pending)
    for gone in (later, mid, pending):
        assert await env.client.exists(gone.key) == 0
    for kept in (bad, done):
        assert await env.client.exists(kept.key) == 1
    assert await bad.get_state() == "failed" and await done.get_state() == "completed"
    deps = {m.decode() for m in await env.client.smembers(parent.key + ":dependencies")}
    assert deps == {bad.key}
    assert await parent.is_waiting_children()


@pytest.mark.parametrize("path", ["one call", "short calls"])
async def test_remove_unprocessed_children_takes_a_child_whose_own_child_runs(
    env: Env, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As BullMQ 6.7 (it checks a child's own lock only): a pending child goes with its pending
    children even while one of its children runs; the running one stays, without a parent,
    and the parent, with nothing left to wait for, is released (bullfast kept the child, so
    the parent waited for the whole sub-tree)."""
    if path == "short calls":
        monkeypatch.setattr(_removal, "ONE_CALL_CHILDREN", 0)
    node = await env.flow().add({
        "name": "p", "queue_name": "rl", "children": [
            child("w", "rl-c", delay=60_000),
            {"name": "g", "queue_name": "rl-d", "children": [
                child("g1", "rl-e"), child("g2", "rl-e", delay=60_000)]},
        ],
    })
    parent = node.job
    w, g = (c.job for c in node["children"])
    g1, g2 = (c.job for c in node["children"][1]["children"])
    worker = env.worker("rl-e", None)
    running = await worker.get_next_job("t1")
    assert running is not None and running.id == g1.id

    assert await parent.remove_unprocessed_children() == 2  # w, and g (with g2)
    for gone in (w, g, g2):
        assert await env.client.exists(gone.key) == 0
    assert await env.client.exists(g1.key) == 1 and await g1.get_state() == "active"
    assert await parent.get_state() == "waiting"
    await running.move_to_completed("v", "t1")  # its parent is gone: nothing to release
    assert await g1.get_state() == "completed"


@pytest.mark.parametrize("path", ["one call", "short calls"])
async def test_remove_unprocessed_children_drops_a_dependency_whose_job_is_gone(
    env: Env, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As BullMQ: a pending dependency whose job hash was deleted by hand goes too, and the
    parent, with nothing left to wait for, is released (the paged path used to keep it)."""
    if path == "short calls":
        monkeypatch.setattr(_removal, "ONE_CALL_CHILDREN", 0)
    node = await env.flow().add({"name": "p", "queue_name": "rg", "children": [child("c", "rg-k", delay=60_000)]})
    parent = node.job
    gone = node["children"][0].job
    await env.client.delete(gone.key)
    assert await parent.remove_unprocessed_children() == 1
    assert await env.client.scard(parent.key + ":dependencies") == 0
    assert await parent.get_state() == "waiting"


@pytest.mark.private_redis  # reads the server's command counts
async def test_remove_unprocessed_children_of_a_big_parent_in_short_calls(env: Env) -> None:
    """3,000 pending children (more than one call removes: they are walked in pages and their
    wait list in windows), two of them held by a worker and kept; the last one finishing
    releases the parent."""
    n = 3_000
    node = await env.flow().add({
        "name": "p", "queue_name": "rub", "children": [child(f"c{i}", "rub-k") for i in range(n)],
    })
    parent = node.job
    worker = env.worker("rub-k", None)
    held = [await worker.get_next_job(f"t{i}") for i in range(2)]
    await env.client.config_resetstat()
    assert await parent.remove_unprocessed_children() == n - 2
    stats = await env.client.info("commandstats")
    # one LREM per window of the walk, not one per child
    assert stats.get("cmdstat_lrem", {}).get("calls", 0) < n // 10, stats.get("cmdstat_lrem")
    assert await env.client.llen(env.key("rub-k", "wait")) == 0
    deps = {m.decode() for m in await env.client.smembers(parent.key + ":dependencies")}
    assert deps == {j.key for j in held if j is not None}
    assert await env.client.exists(*(c.job.key for c in node.children or [])) == 2
    for i, job in enumerate(held):
        assert job is not None
        await job.move_to_completed(i, f"t{i}")
    assert await parent.get_state() == "waiting"


@pytest.mark.private_redis  # reads the server's command counts
@pytest.mark.parametrize("how", ["remove", "remove_unprocessed_children"])
async def test_a_page_of_children_with_children_reads_their_wait_list_once(env: Env, how: str) -> None:
    """A parent of 150 children with 20 children each, behind 2,000 other jobs in their wait
    list: a call's grandchildren leave that list in one pass, where each child's sub-tree
    read it in turn (150 passes over 5,000 entries: a page held Redis for a second at 1,000
    such children)."""
    node = await env.flow().add({
        "name": "p", "queue_name": "pg-p", "children": [
            {**child(f"c{i}", "pg-c"), "children": [child(f"g{i}-{k}", "pg-g") for k in range(20)]}
            for i in range(150)
        ],
    })
    others = env.queue("pg-g")
    await others.add_bulk([{"name": "other", "data": {"k": k}} for k in range(2000)])
    await env.client.config_resetstat()
    if how == "remove":
        await node.job.remove()
    else:
        assert await node.job.remove_unprocessed_children() == 150
    stats = await env.client.info("commandstats")
    # a pass (a few LRANGE windows) per remove_children call of at most JOB_BUDGET jobs, where
    # it was one per child (150 passes)
    assert stats.get("cmdstat_lrange", {}).get("calls", 0) < 60, stats.get("cmdstat_lrange")
    assert await env.client.llen(env.key("pg-g", "wait")) == 2000
    assert await env.client.zcard(env.key("pg-c", "waiting-children")) == 0
    grandchildren = [g.job.key for c in node.children or [] for g in c.children or []]
    assert len(grandchildren) == 3000 and await env.client.exists(*grandchildren) == 0
    assert await env.client.exists(node.job.key) == (0 if how == "remove" else 1)
    removed = [e for e in await env.events("pg-g") if e.get("event") == "removed"]
    assert len(removed) == 3000 and {e["prev"] for e in removed} == {"wait"}


# ------------------------------------------------------------------------------------------
# paging a big parent's dependencies, all four groups
# ------------------------------------------------------------------------------------------

GROUP_SIZES = {"processed": 1000, "ignored": 300, "failed": 200, "unprocessed": 250}


async def test_paged_get_dependencies_inside_parent(env: Env) -> None:
    """A running parent of 1,751 children pages through all four groups at once, with bullmq's
    call form and cursor names: every child comes back exactly once, in its group.

    The groups are made in an order that keeps the parent running: children that complete
    (processed), that fail with ignore_dependency_on_failure (ignored), one that fails with
    continue_parent_on_failure (ignored too; it releases the parent at once), then the parent
    is taken by hand, then children fail with fail_parent_on_failure while it runs (failed:
    recorded, the parent only gets a deferred failure), and the rest stay pending."""
    children = (
        [child(f"ok{i}", "pg-ok", remove_on_complete=True) for i in range(GROUP_SIZES["processed"])]
        + [child(f"ign{i}", "pg-ign", ignore_dependency_on_failure=True) for i in range(GROUP_SIZES["ignored"])]
        + [child("trigger", "pg-go", continue_parent_on_failure=True)]
        + [child(f"bad{i}", "pg-bad", fail_parent_on_failure=True) for i in range(GROUP_SIZES["failed"])]
        + [child(f"wait{i}", "pg-wait") for i in range(GROUP_SIZES["unprocessed"])]
    )
    node = await env.flow().add({"name": "parent", "queue_name": "pg", "children": children})
    parent_queue = node.job.queue
    keys: dict[str, set[str]] = {group: set() for group in GROUP_SIZES}
    for c in node["children"]:
        group = {"pg-ok": "processed", "pg-ign": "ignored", "pg-go": "ignored", "pg-bad": "failed",
                 "pg-wait": "unprocessed"}[c.job.queue_name]
        keys[group].add(c.job.key)

    async def ok(job: Job) -> Any:
        return {"n": int(job.name[2:])}

    async def boom(job: Job) -> Any:
        raise RuntimeError(f"{job.name} failed")

    async def counted(group: str, n: int) -> bool:
        return (await node.job.get_dependencies_count())[group] >= n

    for queue_name, processor in (("pg-ok", ok), ("pg-ign", boom), ("pg-go", boom)):
        env.worker(queue_name, processor, concurrency=50)
    await until(lambda: counted("processed", 1000), what="1,000 processed children")
    await until(lambda: counted("ignored", 301), what="301 ignored failures")
    await state_is(parent_queue, node.job.id, "waiting", "the parent to be released by the cpof failure")
    parent = await env.worker("pg", None).get_next_job("parent-token")
    assert parent is not None and parent.id == node.job.id
    env.worker("pg-bad", boom, concurrency=50)
    await until(lambda: counted("failed", 200), what="200 failed children")
    assert await parent.get_state() == "active"
    assert await parent.get_dependencies_count() == {"processed": 1000, "unprocessed": 250, "ignored": 301, "failed": 200}

    seen: dict[str, list[str]] = {group: [] for group in GROUP_SIZES}
    values: dict[str, Any] = {}
    cursors = {group: 0 for group in GROUP_SIZES}
    open_groups = set(GROUP_SIZES)
    pages = 0
    while open_groups:
        page = await parent.getDependencies({g: {"cursor": cursors[g], "count": 37} for g in open_groups})
        pages += 1
        assert set(page) == {k for g in open_groups for k in (g, f"next{g.capitalize()}Cursor", f"next_{g}_cursor")}
        for group in list(open_groups):
            got = page[group]
            seen[group] += list(got)
            if group == "processed":
                values.update(got)
            cursors[group] = page[f"next{group.capitalize()}Cursor"]
            assert page[f"next_{group}_cursor"] == cursors[group]
            if cursors[group] == 0:
                open_groups.discard(group)
    assert pages > 1000 // 37 / 2  # really paged (SCAN pages may hold more than COUNT)
    for group, members in seen.items():
        assert len(members) == len(set(members)), f"{group}: a child came back twice"
        assert set(members) == keys[group], group
    assert sorted(v["n"] for v in values.values()) == list(range(1000))
    # the same as the whole read
    whole = await parent.get_dependencies()
    assert whole["processed"] == values
    assert sorted(whole["unprocessed"]) == sorted(seen["unprocessed"])
    assert set(whole["ignored"]) == set(seen["ignored"]) and sorted(whole["failed"]) == sorted(seen["failed"])
    assert whole["ignored"][next(k for k in keys["ignored"] if ":pg-go:" in k)] == "trigger failed"


async def test_get_dependencies_call_forms(env: Env) -> None:
    node = await env.flow().add({"name": "p", "queue_name": "gf", "children": [child("a"), child("b")]})
    parent = node.job
    pending = sorted(c.job.key for c in node["children"])
    whole = {"processed": {}, "unprocessed": pending, "failed": [], "ignored": {}}
    assert await parent.get_dependencies() == whole
    assert await parent.get_dependencies({}) == whole  # bullmq's call with no group named
    page = await parent.get_dependencies({"unprocessed": {"count": 10}})
    assert sorted(page["unprocessed"]) == pending and page["nextUnprocessedCursor"] == 0
    assert set(page) == {"unprocessed", "nextUnprocessedCursor", "next_unprocessed_cursor"}
    assert (await parent.get_dependencies(unprocessed=True))["next_unprocessed_cursor"] == 0
    # as in BullMQ (JavaScript truth): {} asks for a first page, False for nothing
    first = await parent.getDependencies({"unprocessed": {}})
    assert sorted(first["unprocessed"]) == pending and first["nextUnprocessedCursor"] == 0
    assert await parent.get_dependencies(processed=False) == whole
    # by keyword, {} is the group's first page (by position it is BullMQ's dict, naming none)
    kw = await parent.get_dependencies(processed={})
    assert kw == {"processed": {}, "nextProcessedCursor": 0, "next_processed_cursor": 0}
    assert (await parent.get_dependencies({"cursor": 0, "count": 5}))["next_processed_cursor"] == 0
    assert await parent.get_dependencies({"processed": False}) == whole
    with pytest.raises(InvalidOptionError):
        await parent.get_dependencies(failed="all")  # type: ignore[arg-type]
    # refused, not read otherwise: a misspelt group (it read the processed group with the
    # default count), groups given both ways (the keywords were dropped), an empty page
    for call in (
        lambda: parent.get_dependencies({"processed": {"count": 5}, "unprocesed": {"count": 5}}),
        lambda: parent.get_dependencies({"unprocesed": {"count": 5}}),
        lambda: parent.get_dependencies({"processed": {"count": 5}}, unprocessed={"count": 5}),
        lambda: parent.get_dependencies(processed={"count": 0}),
        lambda: parent.get_dependencies(processed={"cursor": -1}),
        lambda: parent.get_dependencies(processed={"cursr": 3}),
        lambda: parent.get_dependencies_count({"processed": True}, failed=True),
    ):
        with pytest.raises(InvalidOptionError):
            await call()
    # counts: keywords, or BullMQ's one dict whose true keys name the groups
    assert await parent.get_dependencies_count(unprocessed=True) == {"unprocessed": 2}
    assert await parent.getDependenciesCount({"unprocessed": True}) == {"unprocessed": 2}
    assert await parent.getDependenciesCount({"processed": False, "unprocessed": True, "failed": True}) == {
        "unprocessed": 2, "failed": 0}
    assert await parent.get_dependencies_count({}) == {"processed": 0, "unprocessed": 2, "ignored": 0, "failed": 0}
    with pytest.raises(InvalidOptionError):
        await parent.get_dependencies_count({"pending": True})


# ------------------------------------------------------------------------------------------
# BullMQ's smaller Queue / Job methods: logs, progress by id, deduplication keys, is_maxed
# ------------------------------------------------------------------------------------------


async def test_logs_progress_by_id_and_clear_logs(env: Env) -> None:
    q = env.queue("small-api")
    job = await q.add("j", {})
    assert await q.add_job_log(job.id, "one") == 1
    assert await q.addJobLog(job.id, "two", 5) == 2
    await job.log("three")
    seen: list[Any] = []
    q.on("progress", lambda j, progress: seen.append((j, progress)))
    await q.update_job_progress(job.id, {"half": True})
    assert (await q.get_job(job.id)).progress == {"half": True}  # type: ignore[union-attr]
    assert seen == [(job.id, {"half": True})]  # (Node's: the id, not a job never read)
    await job.clear_logs(2)
    assert (await q.get_job_logs(job.id))["logs"] == ["two", "three"]
    await job.clearLogs()
    assert (await q.get_job_logs(job.id))["logs"] == []
    with pytest.raises(JobNotFoundError):
        await q.update_job_progress("missing", 1)


async def test_deduplication_keys_removed_by_queue_and_by_job(env: Env) -> None:
    """As BullMQ: the queue's removal forgets the id whoever holds it; the job's only while it
    holds it. Either way the next add with that id is added, not ignored."""
    q = env.queue("dedup-rm")
    first = await q.add("j", {}, deduplication={"id": "d"})
    assert (await q.add("j", {}, deduplication={"id": "d"})).id == first.id  # ignored
    assert await first.remove_deduplication_key()
    assert not await first.remove_deduplication_key()  # (no longer its)
    second = await q.add("j", {}, deduplication={"id": "d"})
    assert second.id != first.id
    assert not await first.remove_deduplication_key()  # held by the second: left alone
    assert await q.get_deduplication_job_id("d") == second.id
    assert await q.remove_deduplication_key("d") == 1
    assert await q.get_deduplication_job_id("d") is None
    plain = await q.add("j", {})
    assert not await plain.removeDeduplicationKey()


async def test_is_maxed_and_discard(env: Env) -> None:
    q = env.queue("maxed")
    assert not await q.is_maxed()
    await q.set_global_concurrency(1)
    assert not await q.isMaxed()
    await q.add("j", {})
    worker = env.worker("maxed", None, autorun=False)
    job = await worker.get_next_job("t", block=False)
    assert job is not None and await q.is_maxed()
    job.discard()
    assert job.discarded
