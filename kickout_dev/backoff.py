"""ZEGO retry backoff that takes no time, for tests that replay many faults, yet still costs the invocation its time.

The sandbox puts `InstantBackoff.sleep` in place of the function's backoff sleep (handler.entry.service.retry_sleep) and
gives each Lambda context `InstantBackoff.clock()`: the time an invocation has used counts the backoff it skipped,
so the function runs out of time as it would in Lambda, and a test does not wait the backoff out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class InstantBackoff:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._skipped: dict[int, float] = {}
        self.sleeps: list[float] = []
        """Every backoff asked for, in seconds, in order."""

    def sleep(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("sleep length must be non-negative")  # as time.sleep
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
