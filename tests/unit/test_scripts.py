"""Scripts keep only the helpers they reach: Redis makes every top-level closure on every call."""

from __future__ import annotations

from bullfast import _scripts


def defines(script: str, name: str) -> bool:
    source = _scripts.get(script).source.decode()
    return f"local function {name}(" in source or f"\n{name} = function(" in source


def test_unused_helpers_are_left_out() -> None:
    assert not defines("finish_jobs", "removeJobOutOfState")
    assert not defines("finish_jobs", "pauseQueue")
    assert defines("remove_job", "removeJobOutOfState")


def test_helpers_reached_through_helpers_are_kept() -> None:
    # finish_jobs -> applyRetention -> dropFinishedJob -> deleteJobKeys
    assert defines("finish_jobs", "applyRetention")
    assert defines("finish_jobs", "dropFinishedJob")
    assert defines("finish_jobs", "deleteJobKeys")


def test_a_forward_declaration_stays_with_its_assignment() -> None:
    source = _scripts.get("remove_job").source.decode()
    assert "\nlocal removeJob\n" in source and "\nremoveJob = function(" in source
    assert source.index("\nlocal removeJob\n") < source.index("\nremoveJob = function(")


def test_the_script_follows_its_helpers() -> None:
    source = _scripts.get("finish_jobs").source.decode()
    assert source.index("local rcall = redis.call") < source.index("local function finish(")
