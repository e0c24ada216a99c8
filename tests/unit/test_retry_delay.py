"""The back-off of the reconnecting loops (a worker's, a QueueEvents' reader)."""

from __future__ import annotations

from bullfast._connection import retry_delay


def test_doubles_up_to_the_bound() -> None:
    assert [retry_delay(n, 0.1, 5.0) for n in range(1, 8)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]


def test_any_number_of_failures_has_a_delay() -> None:
    """2.0 ** 1024 overflows: after 1,024 failures in a row (85 minutes of outage at 5 s) the
    QueueEvents reader died of an OverflowError, and a worker's loop after 34 minutes."""
    for failures in (1023, 1024, 10**6):
        assert retry_delay(failures, 0.1, 5.0) == 5.0
        assert retry_delay(failures, 0.05, 2.0) == 2.0
