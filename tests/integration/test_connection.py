"""``connection=`` in each of its forms, a bad one, and a Redis that is not there: every public
method fails with a typed bullfast error, never with redis-py's own."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from bullfast import FlowProducer, Job, Queue
from bullfast.embedded import RedisServer, free_port
from bullfast.errors import (
    InvalidConnectionError,
    InvalidOptionError,
    OutcomeUnknownError,
    RedisUnavailableError,
    ScriptError,
)

from ..conftest import redis_options


async def test_a_decoding_client_is_cloned_and_left_open(redis_url: str, prefix: str) -> None:
    given = aioredis.from_url(redis_url, decode_responses=True)
    try:
        async with Queue("q", connection=given, prefix=prefix) as q:
            assert q.client is not given  # bullfast talks bytes
            job = await q.add("j", {"ü": 1}, job_id="x")
            again = await q.get_job(job.id)
            assert again is not None and again.data == {"ü": 1} and again.name == "j"
        # the caller's client was not closed with the queue, and still decodes
        assert await given.hget(f"{prefix}:q:x", "name") == "j"
    finally:
        await given.aclose()


@pytest.mark.parametrize("query", ["decode_responses=true", "decode_responses=False&encoding=latin-1"])
async def test_a_url_asking_to_decode_replies_is_read_as_bytes(redis_url: str, prefix: str, query: str) -> None:
    """redis-py lets a URL's query override keyword arguments: bullfast's bytes-only client
    was made decoding, and jobs came back blank (``decode_responses=False`` decodes too:
    any text is true to redis-py)."""
    for connection in (f"{redis_url}?{query}", {"url": f"{redis_url}?{query}"}):
        async with Queue("q", connection=connection, prefix=prefix) as q:
            job = await q.add("j", {"ü": 1})
            again = await q.get_job(job.id)
            assert again is not None and again.data == {"ü": 1} and again.name == "j"
            assert (await q.get_job_counts("waiting"))["waiting"] >= 1
            await q.obliterate(force=True)


async def test_a_text_encoding_in_options_or_a_given_client_is_not_used(redis_url: str, prefix: str) -> None:
    """bullfast writes keys and reads replies as UTF-8 bytes, whatever encoding the caller's
    options or client carry (utf-16 wrote other keys: jobs read back as None, counts 0)."""
    given = aioredis.from_url(redis_url, encoding="utf-16")
    try:
        for connection in ({"url": redis_url, "encoding": "utf-16"}, given):
            async with Queue("enc", connection=connection, prefix=prefix) as q:
                job = await q.add("j", {"ü": 1})
                again = await q.get_job(job.id)
                assert again is not None and again.data == {"ü": 1}
                assert await q.get_job_counts("waiting") == {"waiting": 1}
                await q.obliterate(force=True)
        assert given.connection_pool.connection_kwargs["encoding"] == "utf-16"  # (left as it was)
    finally:
        await given.aclose()


async def test_a_bytes_client_is_used_as_given_and_left_open(redis_url: str, prefix: str) -> None:
    given = aioredis.from_url(redis_url)
    try:
        async with Queue("q", connection=given, prefix=prefix) as q:
            assert q.client is given
            await q.add("j", {})
        assert await given.llen(f"{prefix}:q:wait") == 1
    finally:
        await given.aclose()


async def test_a_mapping_of_redis_options(redis_url: str, prefix: str) -> None:
    async with FlowProducer(connection=redis_options(redis_url), prefix=prefix) as fp:
        node = await fp.add({"name": "p", "queue_name": "q", "children": [{"name": "c", "queue_name": "q"}]})
        flow = await fp.get_flow("q", node.job.id)
    assert flow is not None and [c.job.id for c in flow.children or []] == [node.children[0].job.id]
    async with Queue("q", connection={"url": redis_url}, prefix=prefix) as q:
        assert await q.get_job_counts("waiting", "waiting-children") == {"waiting": 1, "waiting-children": 1}


@pytest.mark.parametrize("connection", [42, ["redis://x"], {"hots": "localhost"}, {"url": 6379}, "localhost:6379",
                                        "http://localhost:6379", {"url": "localhost:6379"},
                                        "redis://[::1:6379", {"url": "redis://[::1:6379"}])
def test_a_bad_connection_is_a_typed_error(connection: Any) -> None:
    with pytest.raises(InvalidConnectionError) as info:
        Queue("q", connection=connection)
    # an InvalidOptionError (a ValueError), and a TypeError as a wrong kind of argument always was
    assert isinstance(info.value, InvalidOptionError) and isinstance(info.value, TypeError)
    with pytest.raises(InvalidConnectionError):
        FlowProducer(connection=connection)


async def test_retry_of_a_state_it_cannot_be_in_is_a_typed_error(redis_url: str, prefix: str) -> None:
    async with Queue("q", connection=redis_url, prefix=prefix) as q:
        job = await q.add("j", {})
        with pytest.raises(InvalidOptionError, match="'waiting'"):
            await job.retry("waiting")
        assert await job.get_state() == "waiting"


# -- a Redis that is not there ------------------------------------------------------------------


def dead_url() -> str:
    return f"redis://127.0.0.1:{free_port()}"


QUEUE_CALLS = [
    ("get_job", lambda q: q.get_job("1")),
    ("get_jobs", lambda q: q.get_jobs(["waiting", "completed"])),
    ("get_job_counts", lambda q: q.get_job_counts()),
    ("get_job_state", lambda q: q.get_job_state("1")),
    ("get_waiting", lambda q: q.get_waiting()),
    ("count", lambda q: q.count()),
    ("is_paused", lambda q: q.is_paused()),
    ("pause", lambda q: q.pause()),
    ("resume", lambda q: q.resume()),
    ("drain", lambda q: q.drain()),
    ("obliterate", lambda q: q.obliterate()),
    ("remove", lambda q: q.remove("1")),
    ("clean", lambda q: q.clean(0)),
    ("get_counts_per_priority", lambda q: q.get_counts_per_priority([0, 1])),
    ("get_rate_limit_ttl", lambda q: q.get_rate_limit_ttl()),
    ("set_global_concurrency", lambda q: q.set_global_concurrency(3)),
    ("get_global_rate_limit", lambda q: q.get_global_rate_limit()),
    ("trim_events", lambda q: q.trim_events(10)),
    ("get_job_logs", lambda q: q.get_job_logs("1")),
]


@pytest.mark.parametrize("call", [c for _, c in QUEUE_CALLS], ids=[n for n, _ in QUEUE_CALLS])
async def test_queue_methods_without_redis_raise_redis_unavailable(call: Any) -> None:
    async with Queue("q", connection=dead_url()) as q:
        with pytest.raises(RedisUnavailableError) as info:
            await call(q)
    # nothing was sent: not a write of unknown outcome
    assert not isinstance(info.value, OutcomeUnknownError)


JOB_CALLS = [
    ("get_state", lambda j: j.get_state()),
    ("get_children_values", lambda j: j.get_children_values()),
    ("get_ignored_children_failures", lambda j: j.get_ignored_children_failures()),
    ("get_dependencies", lambda j: j.get_dependencies()),
    ("get_dependencies_paged", lambda j: j.get_dependencies(processed=True, unprocessed=True)),
    ("get_dependencies_count", lambda j: j.get_dependencies_count()),
    ("get_logs", lambda j: j.get_logs()),
    ("reduce_children_values", lambda j: j.reduce_children_values(lambda a, k, v: a, 0)),
    ("promote", lambda j: j.promote()),
    ("update_data", lambda j: j.update_data({"x": 1})),
]


@pytest.mark.parametrize("call", [c for _, c in JOB_CALLS], ids=[n for n, _ in JOB_CALLS])
async def test_job_methods_without_redis_raise_redis_unavailable(call: Any) -> None:
    async with Queue("q", connection=dead_url()) as q:
        job = Job(q, "j", {}, None, "1")
        with pytest.raises(RedisUnavailableError):
            await call(job)


async def test_iterating_children_without_redis_raises_redis_unavailable() -> None:
    async with Queue("q", connection=dead_url()) as q:
        job = Job(q, "j", {}, None, "1")
        for walk in (job.iter_children_values(), job.iter_dependencies(), job.iter_failed_children()):
            with pytest.raises(RedisUnavailableError):
                async for _ in walk:
                    pass


async def test_flow_producer_reads_without_redis_raise_redis_unavailable() -> None:
    async with FlowProducer(connection=dead_url()) as fp:
        with pytest.raises(RedisUnavailableError):
            await fp.get_flow("q", "1")
        with pytest.raises(RedisUnavailableError):
            await fp.resume_fan_out("q", "1")


async def test_a_server_gone_after_use_refuses_and_nothing_is_said_to_be_sent() -> None:
    """A producer whose kept connection died with its server reconnects to send; a refused
    connection sent nothing: RedisUnavailableError, not OutcomeUnknownError."""
    server = RedisServer().start()
    try:
        async with Queue("q", connection=server.url) as q, FlowProducer(connection=server.url) as fp:
            await q.add("a", {})
            await fp.add({"name": "p", "queue_name": "q"})
            server.stop()
            await asyncio.sleep(0.2)  # the kept connections see the server's close
            for call in (lambda: q.add("b", {}), lambda: fp.add({"name": "p", "queue_name": "q"})):
                with pytest.raises(RedisUnavailableError) as info:
                    await call()
                assert not isinstance(info.value, OutcomeUnknownError), info.value
    finally:
        server.cleanup()


@pytest.mark.private_redis
async def test_adds_refused_for_memory_are_typed_and_write_nothing(redis_url: str, prefix: str, client: Any) -> None:
    """Out of memory, an add sent as one call or as MULTI/EXEC raises ScriptError (the
    transaction gave redis-py's raw OutOfMemoryError) and writes nothing."""
    flow = {"name": "p", "queue_name": "q", "children": [{"name": "c", "queue_name": "q", "data": i} for i in range(20)]}
    async with FlowProducer(connection=redis_url, prefix=prefix) as one, \
            FlowProducer(connection=redis_url, prefix=prefix, chunk_size=5) as chunked:
        await one.add({"name": "warm", "queue_name": "q"})
        await chunked.add({"name": "warm", "queue_name": "q"})
        before = sorted([k async for k in client.scan_iter(match=f"{prefix}:*")])
        old = (await client.config_get("maxmemory"))["maxmemory"]
        await client.config_set("maxmemory", 1)
        try:
            for producer in (one, chunked):
                with pytest.raises(ScriptError, match="nothing was written"):
                    await producer.add(flow)
        finally:
            await client.config_set("maxmemory", old)
        assert sorted([k async for k in client.scan_iter(match=f"{prefix}:*")]) == before


def test_a_queue_used_in_a_second_event_loop_refuses_before_sending(redis_url: str, prefix: str) -> None:
    """One asyncio.run after another with the same Queue: the second wrote the job through a
    connection of the first (ended) loop, then raised a bare RuntimeError, so a retry added it
    twice. Now it is refused, typed, with nothing sent."""
    import asyncio

    import redis as sync_redis

    from bullfast import Queue
    from bullfast.errors import EventLoopError

    first = asyncio.new_event_loop()
    queue = Queue("loops", connection=redis_url, prefix=prefix)
    try:
        first.run_until_complete(queue.add("first", {}))
        for _ in range(2):
            with pytest.raises(EventLoopError, match="another event loop"):
                asyncio.run(queue.add("again", {}))
    finally:
        first.run_until_complete(queue.close())  # (in its own loop)
        first.close()
    client = sync_redis.Redis.from_url(redis_url)
    try:
        assert client.llen(f"{prefix}:loops:wait") == 1
    finally:
        client.close()


async def test_an_error_nobody_listens_to_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A worker pointed at a port where nothing listens said nothing at all (Node prints it)."""
    import asyncio

    from bullfast import Worker
    from bullfast.embedded import free_port

    worker = Worker("nobody", lambda job: None, connection=f"redis://127.0.0.1:{free_port()}")
    try:
        for _ in range(300):
            if any("an 'error' event" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.01)
    finally:
        await asyncio.wait_for(worker.close(), 10)
    assert any("Redis unavailable" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records), \
        [r.getMessage() for r in caplog.records]


async def test_a_server_asking_for_a_password_is_said_to() -> None:
    """No password given: the add is refused before it runs, and the error says why (it was a
    ScriptError, "what it wrote before the error stands")."""
    with RedisServer() as server:
        admin = aioredis.from_url(server.url)
        await admin.config_set("requirepass", "s3cret")
        await admin.aclose()
        async with Queue("q", connection=server.url) as q, FlowProducer(connection=server.url) as fp:
            for call in (lambda: q.add("a", {}), lambda: fp.add({"name": "p", "queue_name": "q"})):
                with pytest.raises(RedisUnavailableError, match="asks for authentication") as info:
                    await call()
                assert not isinstance(info.value, OutcomeUnknownError)
        authenticated = server.url.replace("redis://", "redis://:s3cret@")
        async with Queue("q", connection=authenticated) as q:
            job = await q.add("a", {})
            assert (await q.get_job(job.id)) is not None


async def test_a_big_add_without_redis_names_the_add_not_its_script_check() -> None:
    """The first call of a big add checks its scripts: its error named "checking scripts",
    not the add (a fault-injection review)."""
    from bullfast import FlowProducer

    async with FlowProducer(connection=dead_url()) as fp:
        with pytest.raises(RedisUnavailableError) as info:
            await fp.add({"name": "p", "queue_name": "q", "children": [{"name": "c", "queue_name": "q"}] * 2500})
    assert "addFlow (checking its scripts)" in str(info.value), info.value
