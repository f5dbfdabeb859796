"""Pacing: evenly spaced calls at this environment's share, slower when ZEGO pushes back, and back again."""

from __future__ import annotations

import itertools
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handler.fleet.pacing import Pacer
from kickout_dev.clock import SimulatedClock


def new_clock() -> SimulatedClock:
    # Near 0, not at the clock's usual start: the 1e-9 a window check allows is finer than a float's step at 1.8e9.
    return SimulatedClock(now=100.0)


def pacer(share: float, clock: SimulatedClock) -> Pacer:
    return Pacer(share=share, clock=clock, sleep=clock.sleep)


def send_times(gate: Pacer, clock: SimulatedClock, count: int) -> list[float]:
    times = []
    for _ in range(count):
        assert gate.acquire(max_wait=60)
        times.append(clock.now)
    return times


@given(share=st.floats(0.5, 50), count=st.integers(2, 200))
def test_no_one_second_window_holds_more_than_the_share(share: float, count: int) -> None:
    clock = new_clock()
    times = send_times(pacer(share, clock), clock, count)
    for start in times:
        in_window = [time for time in times if start <= time < start + 1.0 - 1e-9]  # float noise aside
        assert len(in_window) <= max(1, int(share) + (0 if share == int(share) else 1))


def test_calls_are_spaced_by_one_over_the_share() -> None:
    clock = new_clock()
    times = send_times(pacer(9, clock), clock, 10)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert gaps == pytest.approx([1 / 9] * 9)


def test_a_slot_later_than_the_caller_can_wait_is_refused_and_not_taken() -> None:
    clock = new_clock()
    gate = pacer(1, clock)
    assert gate.acquire(max_wait=0)
    assert not gate.acquire(max_wait=0.5)  # the next slot is 1 s away
    clock.now += 1.0
    assert gate.acquire(max_wait=0)  # the refused caller did not push the schedule back


def test_a_rate_limit_answer_halves_the_rate_once_a_second_at_most() -> None:
    clock = new_clock()
    gate = pacer(8, clock)
    gate.slow_down()
    gate.slow_down()  # the same second: one signal
    assert gate.rate == 4
    clock.now += 1.0
    gate.slow_down()
    assert gate.rate == 2


def test_the_rate_never_falls_below_its_floor() -> None:
    clock = new_clock()
    gate = pacer(8, clock)
    for _ in range(20):
        gate.slow_down()
        clock.now += 1.0
    assert gate.rate == gate.floor


def test_successes_bring_the_rate_back_to_the_share_and_no_further() -> None:
    clock = new_clock()
    gate = pacer(8, clock)
    gate.slow_down()
    for _ in range(4):
        gate.speed_up()
    assert gate.rate == pytest.approx(7.2)
    for _ in range(10):
        gate.speed_up()
    assert gate.rate == 8


def test_concurrent_callers_each_wait_for_their_own_slot() -> None:
    # GIVEN ten threads asking at once at 50/s, with the real clock
    gate = Pacer(share=50)
    started = time.monotonic()
    threads = [threading.Thread(target=gate.acquire, kwargs={"max_wait": 5}) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    # THEN the last one could not go before nine intervals had passed (sleeps never end early)
    assert time.monotonic() - started >= 9 / 50


def test_a_share_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Pacer(share=0)
