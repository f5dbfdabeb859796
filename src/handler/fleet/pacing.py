"""Pacing ZEGO calls so that a fleet of execution environments stays under ZEGO's per-AppId limit.

Each environment may send `rate` requests per second (its share of the fleet's budget, set by the template).
Calls are spaced evenly rather than sent in bursts, so two environments at 9/s never put more than 18
requests into any one-second window. A rate-limit answer from ZEGO halves the rate (someone else is using
the budget too); each success gives back a tenth of the share, up to the share (additive increase,
multiplicative decrease, as TCP does).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Pacer:
    share: float
    """Requests per second this environment may send when ZEGO is not pushing back."""
    floor: float = 0.5
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    rate: float = field(init=False)
    _next_slot: float = field(init=False, default=0.0)
    _slowed_at: float = field(init=False, default=float("-inf"))
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.share <= 0:
            raise ValueError("share must be positive")
        self.rate = self.share

    def acquire(self, max_wait: float) -> bool:
        """Wait for this caller's slot; False (and no slot taken) when it would come later than `max_wait`."""
        with self._lock:
            now = self.clock()
            slot = max(now, self._next_slot)
            wait = slot - now
            if wait > max_wait:
                return False
            self._next_slot = slot + 1.0 / self.rate
        if wait > 0:
            self.sleep(wait)
        return True

    def expect(self, calls: int) -> None:
        """Nothing to book ahead: each call takes the next slot of the local pace."""

    def slow_down(self) -> None:
        """Halve the rate, once a second at most: concurrent calls refused together are one signal, not ten."""
        with self._lock:
            now = self.clock()
            if now - self._slowed_at < 1.0:
                return
            self._slowed_at = now
            self.rate = max(self.floor, self.rate / 2)
            # the next free slot moves a full new interval away: a retry does not go out at the old pace
            self._next_slot = max(self._next_slot, now) + 1.0 / self.rate

    def speed_up(self) -> None:
        with self._lock:
            self.rate = min(self.share, self.rate + self.share / 10)
