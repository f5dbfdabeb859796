"""The sandbox's retry backoff (kickout_dev.clock): skipped, so that replays of many faults run fast, but counted
as time the invocation spent, so that what the tests show of deadlines still holds."""

from __future__ import annotations

import threading
import time

import pytest

from handler.core.errors import ZegoUnavailable
from handler.zego.client import RetryPolicy
from kickout_dev.clock import InstantBackoff
from kickout_dev.sandbox import Sandbox
from kickout_dev.zim_server import Fault
from tests.conftest import Invoke


def test_an_invocation_still_runs_out_of_time_when_its_backoff_is_skipped(
    invoke: Invoke, box: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN ZEGO failing every call, and a retry policy whose attempts would outlast a 12 s invocation
    box.zim.fault_for = lambda _: Fault.http(503)
    policy = RetryPolicy(max_attempts=1000)
    box.rewire(retry_policy=policy)
    started = time.monotonic()

    # WHEN the function is invoked directly with 12 s to run
    with pytest.raises(ZegoUnavailable, match="gave up after"):
        invoke({"room_id": "lobby-7", "user_ids": ["spammer_01"]}, timeout_seconds=12)

    # THEN it backed off without waiting, gave up on time rather than attempts, and within its deadline as counted
    assert box.backoff is not None
    real = time.monotonic() - started
    skipped = sum(box.backoff.sleeps)
    assert real < skipped
    assert box.zim.requests_seen < policy.max_attempts
    assert real + skipped <= 12 - policy.safety_margin + policy.min_request_time


def test_each_thread_counts_its_own_skipped_backoff_and_the_handler_the_longest() -> None:
    # GIVEN an invocation's clock, and two worker threads backing off side by side
    backoff = InstantBackoff()
    clock = backoff.clock()
    seen: dict[str, float] = {}

    def worker(name: str, delays: list[float]) -> None:
        before = clock() - time.monotonic()
        for delay in delays:
            backoff.sleep(delay)
        seen[name] = clock() - time.monotonic() - before

    threads = [
        threading.Thread(target=worker, args=("short", [0.2, 0.4])),
        threading.Thread(target=worker, args=("long", [0.2, 0.4, 0.8])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # THEN each worker's clock moved by its own backoff, the handler's thread's by the longest
    assert seen == pytest.approx({"short": 0.6, "long": 1.4}, abs=0.05)
    assert clock() - time.monotonic() == pytest.approx(1.4, abs=0.05)
    # AND a clock made afterwards (the next invocation) starts from none
    assert backoff.clock()() - time.monotonic() == pytest.approx(0.0, abs=0.05)
    with pytest.raises(ValueError, match="non-negative"):
        backoff.sleep(-1)
