"""The invocation's deadline, carried from the entry point down to every network call.

Pure: a moment on a clock the caller gives. Each call (a booking, ZEGO, SQS, Secrets Manager) is given at most
what is left of it, so that slowness anywhere ends as a clear outcome, never as a Lambda timeout.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Deadline:
    """Work must be done by `at` on `clock` (seconds, monotonic)."""

    at: float
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)

    @classmethod
    def after(cls, seconds: float, clock: Callable[[], float] = time.monotonic) -> Deadline:
        return cls(clock() + seconds, clock)

    @classmethod
    def counting_down(cls, remaining_seconds: Callable[[], float]) -> Deadline:
        """A deadline read off a countdown (Lambda's `get_remaining_time_in_millis`): it falls due at 0."""
        return cls(0.0, lambda: -remaining_seconds())

    def remaining(self) -> float:
        """Seconds left, never below 0."""
        return max(0.0, self.at - self.clock())

    def allows(self, seconds: float) -> bool:
        """Whether `seconds` of work started now would end by the deadline."""
        return self.at - self.clock() >= seconds

    def less(self, seconds: float) -> Deadline:
        """This deadline, `seconds` earlier: the time kept back for what must still follow."""
        return Deadline(self.at - seconds, self.clock)

    def within(self, seconds: float) -> Deadline:
        """The earlier of this deadline and `seconds` from now."""
        return Deadline(min(self.at, self.clock() + seconds), self.clock)
