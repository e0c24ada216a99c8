"""The daemon thread pool of plain processors: an Executor as ThreadPoolExecutor is, with
daemon threads."""

from __future__ import annotations

import threading
import time

import pytest

from bullfast._pool import DaemonThreadPool


def test_results_errors_and_at_most_max_workers_daemon_threads() -> None:
    pool = DaemonThreadPool(3, "test-pool")
    running = 0
    most = 0
    lock = threading.Lock()

    def work(n: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.02)
        with lock:
            running -= 1
        if n == 7:
            raise ValueError("seven")
        return n * 2

    futures = [pool.submit(work, n) for n in range(12)]
    assert [f.result(5) for f in futures if f is not futures[7]] == [n * 2 for n in range(12) if n != 7]
    with pytest.raises(ValueError, match="seven"):
        futures[7].result(5)
    assert most == 3
    threads = [t for t in threading.enumerate() if t.name.startswith("test-pool_")]
    assert len(threads) == 3 and all(t.daemon for t in threads)
    pool.shutdown(wait=True)
    assert not any(t.is_alive() for t in threads)
    with pytest.raises(RuntimeError):
        pool.submit(work, 1)


def test_an_idle_thread_is_reused_and_cancelled_work_does_not_run() -> None:
    pool = DaemonThreadPool(2, "reuse-pool")
    assert pool.submit(lambda: 1).result(5) == 1
    time.sleep(0.05)
    assert pool.submit(lambda: 2).result(5) == 2
    assert len([t for t in threading.enumerate() if t.name.startswith("reuse-pool_")]) == 1
    gate = threading.Event()
    pool.submit(gate.wait, 5)
    pool.submit(gate.wait, 5)
    ran: list[int] = []
    queued = pool.submit(ran.append, 1)
    pool.shutdown(wait=False, cancel_futures=True)
    gate.set()
    assert queued.cancelled() and ran == []
