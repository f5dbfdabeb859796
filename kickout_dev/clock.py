"""Time for tests and tools that must not wait: a simulated clock, and the sandbox's skipped retry backoff.

SimulatedClock is the tests' one fake clock: it moves only when slept on or set, never with the wall clock, so a test
on it neither waits nor depends on today's date. InstantBackoff is not a clock of its own but real time plus the
backoff skipped: the sandbox's moto server and ZIM stand-in run on real time, so an invocation's clock must too. The
sandbox puts `InstantBackoff.sleep` in place of the function's backoff sleep (wiring.Parts' retry_sleep) and gives
each Lambda context `InstantBackoff.clock()`: the time an invocation has used counts the backoff it skipped, so the
function runs out of time as it would in Lambda, and a test does not wait the backoff out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from handler.core.deadline import Deadline

START = 1_800_000_000.0
"""Where a simulated clock starts unless told (2027-01-15T08:00:00Z): a fixed moment, so no test reads today's."""


def _checked(seconds: float) -> float:
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")  # as time.sleep
    return seconds


@dataclass
class SimulatedClock:
    """Simulated time, in seconds: `clock()` reads it (as time.time or time.monotonic would), `sleep` moves it on at
    once, and a test sets `now` to jump; nothing waits for real."""

    now: float = START
    slept: list[float] = field(default_factory=list)
    """Every sleep asked for, in seconds, in order."""

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(_checked(seconds))
        self.now += seconds

    def deadline_in(self, seconds: float) -> Deadline:
        """A deadline `seconds` from now on this clock."""
        from handler.core.deadline import Deadline  # the function's own; kickout_dev's tools run without src/

        return Deadline.after(seconds, self)


class InstantBackoff:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._skipped: dict[int, float] = {}
        self.sleeps: list[float] = []
        """Every backoff asked for, in seconds, in order."""

    def sleep(self, seconds: float) -> None:
        _checked(seconds)
        thread = threading.get_ident()
        with self._lock:
            self._skipped[thread] = self._skipped.get(thread, 0.0) + seconds
            self.sleeps.append(seconds)

    def clock(self) -> Callable[[], float]:
        """A monotonic clock for one invocation, ahead of the real one by the backoff skipped since it was made.

        The calls of a batch back off side by side on worker threads: on a worker, the clock counts that thread's
        own skipped backoff; on the thread that made it (the handler's, which waits for its workers), the longest
        any thread skipped, which is how far the wall clock would have moved at least.
        """
        mark = self._totals()
        home = threading.get_ident()

        def now() -> float:
            since = {thread: total - mark.get(thread, 0.0) for thread, total in self._totals().items()}
            thread = threading.get_ident()
            skipped = max(since.values(), default=0.0) if thread == home else since.get(thread, 0.0)
            return time.monotonic() + skipped

        return now

    def _totals(self) -> dict[int, float]:
        with self._lock:
            return dict(self._skipped)
