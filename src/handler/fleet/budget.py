"""ZEGO's rate limit as one budget for the whole fleet, kept in DynamoDB.

ZEGO allows `limit` KickoutRoomUser calls per second per AppId, whichever execution environment sends them. So
every call books a slot first: a moment at which it may leave. Slots lie `1 / (limit * (1 - margin))` apart on
one timeline, kept as one item of KickoutStateTable (`next_slot`, the first slot nobody holds). A booking is one
atomic UpdateItem, `next_slot = next_slot + count * interval`: DynamoDB applies concurrent updates one after the
other, so no two calls ever hold the same slot, and a busy budget has no race to lose and nothing to retry. One
round trip books a block: as many slots as this environment has calls waiting.

Why slots rather than leased shares of the rate (Doorman): a lease must be sized before the demand is known, so
an idle API's lease is wasted and a 500-user API request outgrows it; slots go to whoever asks, in order, and a
block booking costs at most one store round trip per call (0.1 when ten calls wait).

The API comes first: a caller is waiting on it. The queue books only while the next free slot lies within
`horizon` of now, and the API books regardless, so at most `horizon` of queue work ever stands between an API
call and ZEGO, and an idle API costs the queue nothing.

ZEGO's window is unforgiving: the margin keeps the spacing a few percent wider than ZEGO's limit (a call that
leaves a little late must not make a second hold 21 calls), a slot found stale is dropped rather than used late,
and the first call of an idle budget leaves a couple of store round trips ahead, so that it cannot be overtaken
by a call booked just after it.

When the store fails (unreachable, throttled, slow), this environment paces itself alone at `fallback`, a share
small enough that every environment the function may run stays under ZEGO's limit together, counts the failure,
and asks the store again STORE_RETRY_SECONDS later.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from handler.fleet.pacing import Pacer
from handler.fleet.slot_book import Booked, Busy, SlotBook, StoreUnavailable

MARGIN: Final = 0.04
"""Slots are 4 % wider than ZEGO's limit: twenty of them span 1.04 s, so a call may leave 40 ms late."""
QUEUE_HORIZON: Final = 0.25
"""The queue books no block that ends further ahead than this: the most an API call waits behind the queue (s)."""
MAX_LATENESS: Final = 0.02
"""A slot this late when its call would leave is dropped, not used: a late call crowds the next second."""
STORE_RETRY_SECONDS: Final = 5.0
"""After a store failure, this environment paces itself alone this long before asking the store again."""
MIN_LEAD: Final = 0.01
"""The least lead of the first slot of an idle budget, in seconds (else two store round trips; at most an interval)."""
API_MAX_BLOCK: Final = 10
"""The most slots an API environment books at once: the calls of one 500-user request."""


class Lane(StrEnum):
    API = "api"
    """A caller is waiting (the API, a direct invoke): book at once, whatever the queue holds."""
    QUEUE = "queue"
    """Work that can wait: book only within the horizon, leaving the rest to the API."""


Observe = Callable[[str, float], None]
"""observe(event, value): `slot_wait` (seconds), `store_calls`, `store_error`, `stale_slot`."""


def _ignore(_event: str, _value: float) -> None:
    return None


@dataclass
class FleetBudget:
    """One lane's gate in this execution environment: ZimClient calls `acquire` before each attempt.

    The threads of a batch share it: the first one without a slot books for every thread then waiting, and hands
    the others their slots, so a batch of ten calls costs one store round trip, not ten.
    """

    book: SlotBook
    limit: float
    lane: Lane
    fallback: Pacer
    observe: Observe = _ignore
    margin: float = MARGIN
    horizon: float = QUEUE_HORIZON
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    _reserve: deque[float] = field(init=False, default_factory=deque)
    _waiting: int = field(init=False, default=0)
    _booking: bool = field(init=False, default=False)
    _retry_at: float = field(init=False, default=float("-inf"))
    _store_failed_at: float = field(init=False, default=float("-inf"))
    _round_trip: float = field(init=False, default=0.0)
    _expect_idle: bool = field(init=False, default=True)
    """This lane's last booking found the budget idle: the next one tries to start a new run first."""
    _widen: float = field(init=False, default=1.0)
    _lock: threading.Condition = field(init=False, default_factory=threading.Condition)

    @property
    def interval(self) -> float:
        """Seconds between two slots of the fleet, as this environment books them (wider after a rate limit)."""
        return self._widen / (self.limit * (1 - self.margin))

    def acquire(self, max_wait: float) -> bool:
        """Wait for this call's slot; False (and no slot used) when none comes within `max_wait` seconds."""
        started = self.clock()
        deadline = started + max_wait
        while True:
            with self._lock:
                self._waiting += 1
                try:
                    slot = self._take(deadline)
                finally:
                    self._waiting -= 1
            if slot is None:
                return False
            if isinstance(slot, _PaceLocally):
                return self.fallback.acquire(max(0.0, deadline - self.clock()))
            wait = slot - self.clock()
            if wait > 0:
                self.sleep(wait)
            if self.clock() - slot <= MAX_LATENESS:
                self.observe("slot_wait", self.clock() - started)
                return True
            # Woken too late (a busy machine): leaving now would crowd the next second. Let the slot go.
            self.observe("stale_slot", 1)

    def slow_down(self) -> None:
        """ZEGO said "over the limit" (someone else uses the AppId, or a clock is off): book wider slots."""
        with self._lock:
            self._widen = min(8.0, self._widen * 2)
        self.fallback.slow_down()

    def speed_up(self) -> None:
        with self._lock:
            self._widen = max(1.0, self._widen * 0.9)
        self.fallback.speed_up()

    def _take(self, deadline: float) -> float | _PaceLocally | None:
        """This call's slot, `_PACE_LOCALLY` while the store fails, or None when no slot comes before `deadline`."""
        while True:
            now = self.clock()
            while self._reserve and self._reserve[0] < now - MAX_LATENESS:
                self._reserve.popleft()
                self.observe("stale_slot", 1)
            if self._reserve:
                return self._reserve.popleft() if self._reserve[0] <= deadline else None
            if now - self._store_failed_at < STORE_RETRY_SECONDS:
                return _PACE_LOCALLY
            if self._booking:
                # Another thread is booking for this one too: its answer comes within a store round trip.
                if deadline <= now:
                    return None
                self._lock.wait(deadline - now)
                continue
            if now < self._retry_at:
                # The queue's horizon is full until then.
                if self._retry_at > deadline:
                    return None
                wake = self._retry_at
                self._lock.release()
                try:
                    self.sleep(wake - now)
                finally:
                    self._lock.acquire()
                if self._retry_at == wake:
                    self._retry_at = float("-inf")  # waited out: the store's answer decides, not this clock
                continue
            self._book_for_waiting(now, deadline)

    def _book_for_waiting(self, now: float, deadline: float) -> None:
        """Book one block for every thread now waiting; called with the lock held, released for the round trip."""
        self._booking = True
        count = min(self._waiting, self._max_block())
        interval = self.interval
        # The queue's whole block, not only its first slot, must lie within the horizon: an API call then never
        # waits for more than the horizon's worth of queue work.
        reach = self.horizon - (count - 1) * interval if self.lane is Lane.QUEUE else float("inf")
        latest = min(deadline, now + reach)
        # Never more than one interval: the lead only keeps the new run's first call off the old run's last one.
        lead = min(interval, max(MIN_LEAD, 2 * self._round_trip))
        idle = self._expect_idle
        self._lock.release()
        began = time.monotonic()
        try:
            outcome: Booked | Busy | StoreUnavailable = self.book.book(
                count, interval, now=now, latest=latest, lead=lead, idle=idle
            )
        except StoreUnavailable as failure:
            outcome = failure
        finally:
            elapsed = time.monotonic() - began
            self._lock.acquire()
            self._booking = False
            self._lock.notify_all()
        self.observe("store_calls", 1 if isinstance(outcome, StoreUnavailable) else outcome.round_trips)
        match outcome:
            case Booked(first=first, started_run=started_run):
                self._expect_idle = started_run
                if self.lane is Lane.QUEUE and count == self._max_block():
                    # A full block ends near the horizon: asking for another before the horizon can take it would
                    # only be answered Busy. Come back when it can.
                    self._retry_at = first + count * interval - (self.horizon - (count - 1) * interval)
                self._round_trip = elapsed if self._round_trip == 0 else 0.8 * self._round_trip + 0.2 * elapsed
                self._reserve.extend(first + index * interval for index in range(count))
            case Busy(next_free=next_free):
                self._expect_idle = False
                # The queue's horizon is full (or the API's deadline too near): come back when it has moved on.
                self._retry_at = next_free - (latest - now)
                if self._retry_at <= now:
                    self._retry_at = now + interval
            case StoreUnavailable():
                self._store_failed_at = now
                self.observe("store_error", 1)

    def _max_block(self) -> int:
        if self.lane is Lane.API:
            return API_MAX_BLOCK
        return max(1, int(self.horizon / self.interval))


class _PaceLocally:
    """What `_take` gives while the store is failing: the caller paces on the local fallback instead."""


_PACE_LOCALLY: Final = _PaceLocally()
