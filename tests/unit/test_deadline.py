"""Each thread's calls on a shared store are bounded by that thread's own deadline, and by none after it."""

from __future__ import annotations

import threading

from handler.core.deadline import Deadline, ThreadDeadlines
from kickout_dev.clock import SimulatedClock


def test_a_thread_sees_only_its_own_deadline_and_none_once_it_is_done() -> None:
    clock = SimulatedClock(now=100.0)
    deadlines = ThreadDeadlines()
    seen_on_the_other_thread: list[bool] = []

    with deadlines.bounded_by(Deadline(101.0, clock)):
        assert deadlines.allow(1.0)
        assert not deadlines.allow(1.5)
        other = threading.Thread(target=lambda: seen_on_the_other_thread.append(deadlines.allow(1.5)))
        other.start()
        other.join()

    assert seen_on_the_other_thread == [True]
    assert deadlines.allow(3600.0)


def test_the_deadline_is_cleared_when_the_work_fails() -> None:
    clock = SimulatedClock(now=100.0)
    deadlines = ThreadDeadlines()

    try:
        with deadlines.bounded_by(Deadline(100.0, clock)):
            assert not deadlines.allow(0.1)
            raise TimeoutError
    except TimeoutError:
        pass

    assert deadlines.allow(0.1)
