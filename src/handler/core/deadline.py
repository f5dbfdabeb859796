"""The invocation's deadline, carried from the entry point down to every network call.

Pure: a moment on a clock the caller gives. Each call (a booking, ZEGO, SQS, Secrets Manager) is given at most
what is left of it, so that slowness anywhere ends as a clear outcome, never as a Lambda timeout.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


class ThreadDeadlines:
    """The deadline each thread's calls must end by, for a store shared by the threads of a batch.

    Powertools' stores take no deadline; the one set here bounds the calls they make meanwhile on this thread.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    @contextmanager
    def bounded_by(self, deadline: Deadline) -> Iterator[None]:
        """The calls made meanwhile, on this thread, must end by `deadline`."""
        self._local.deadline = deadline
        try:
            yield
        finally:
            self._local.deadline = None

    def allow(self, seconds: float) -> bool:
        """Whether a call of `seconds` started now on this thread would end by its deadline (no deadline: it would)."""
        deadline: Deadline | None = getattr(self._local, "deadline", None)
        return deadline is None or deadline.allows(seconds)
