"""ZEGO's rate limit as one budget for the whole fleet, kept in DynamoDB.

ZEGO allows `limit` KickoutRoomUser calls per second per AppId, whichever execution environment sends them. So
every call books a slot first: a moment at which it may leave. Slots lie `1 / (limit * (1 - margin))` apart on
one timeline, kept as one item of KickoutStateTable (`next_slot`, the first slot nobody holds). A booking is one
atomic UpdateItem, `next_slot = next_slot + count * interval`: DynamoDB applies concurrent updates one after the
other, so no two calls ever hold the same slot, and a busy budget has no race to lose and nothing to retry. One
round trip books a block: as many slots as this environment has calls waiting, or has been told are coming (the
calls of one API request, sent side by side: `expect`).

Why slots rather than leased shares of the rate (Doorman): a lease must be sized before the demand is known, so
an idle API's lease is wasted and a 500-user API request outgrows it; slots go to whoever asks, in order, and a
block booking costs at most one store round trip per call (0.1 when ten calls wait).

The API comes first: a caller is waiting on it. The queue books only while the next free slot lies within
`horizon` of the earliest slot it could use, and the API books regardless, so at most `horizon` of queue work ever
stands between an API call and ZEGO, and an idle API costs the queue nothing.

ZEGO's window is unforgiving: the margin keeps the spacing a few percent wider than ZEGO's limit (a call that
leaves a little late must not make a second hold 21 calls); a slot found stale is dropped rather than used late;
and a call that leaves later than that all the same (its machine stalled between its slot and the send) moves the
fleet's next free slot back by its lateness, so that the calls a second after it keep their distance.

A slow store: each booking asks for no slot sooner than the round trip it is expected to take (measured, as TCP
measures its round trips), so a slot booked still lies ahead when the answer arrives, at any latency. A booking
slower than SLOW_ROUND_TRIP is counted. When bookings cannot keep up (the round trip expected beyond MAX_LEAD, or a
call's bookings all answered too late to use), and when the store fails (unreachable, throttled), this
environment paces itself alone at `fallback`, a share small enough that every environment the function may run
stays under ZEGO's limit together, counts it, and asks the store again STORE_RETRY_SECONDS later. One call starts
at most MAX_BOOKINGS bookings, and never waits for one past its own `max_wait`: the booking runs on a thread of its
own, so a store that answers late delays the slots, never the caller's deadline.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, Protocol

from handler.fleet.pacing import Pacer
from handler.fleet.slot_book import Ask, Booked, Busy, SlotBook, StoreUnavailable

MARGIN: Final = 0.04
"""Slots are 4 % wider than ZEGO's limit: twenty of them span 1.04 s, so a call may leave 40 ms late."""
QUEUE_HORIZON: Final = 0.25
"""The queue books no block that ends further ahead than this: the most an API call waits behind the queue (s)."""
MAX_LATENESS: Final = 0.02
"""A slot this late when its call would leave is dropped, not used; a call that leaves later moves the next free slot
back by the excess. Half the margin's 40 ms: the other half is for the way to ZEGO."""
STORE_RETRY_SECONDS: Final = 5.0
"""After the store failed or could not keep up, this environment paces itself alone this long before asking again."""
MIN_LEAD: Final = 0.01
"""The least lead of a slot booked, at most one interval: a new run's first call kept off the old run's last."""
MAX_LEAD: Final = 1.0
"""A store expected to take longer than this a round trip (only its client's retries answer that late) cannot be
booked by: this environment paces alone."""
SLOW_ROUND_TRIP: Final = 0.05
"""A booking slower than this is counted as slow: about one slot at ZEGO's 20/s, where DynamoDB takes milliseconds."""
MAX_BOOKINGS: Final = 20
"""The most bookings one call starts: each gives it its slot, or is answered busy (and the next waits until the
horizon has moved on), too late or not at all."""
MAX_LATE_BOOKINGS: Final = 3
"""A call whose bookings came back after their slots this often finds the store too slow: the environment paces
alone."""
API_MAX_BLOCK: Final = 10
"""The most slots an API environment books at once: the calls of one 500-user request."""
REACH: Final = 10.0
"""No booking reaches further ahead than this: a caller willing to wait longer books once its slot comes within it
(the API waits at most 28 s, a busy API backlog holds a few seconds). Bounds what a legitimate timeline can hold."""
MAX_WIDEN: Final = 8.0
"""Rate-limit answers widen this environment's slots up to this factor."""
CLOCK_ALLOWANCE: Final = 1.0
"""How far apart two environments' clocks may be before a timeline one wrote looks impossible to another (Lambda's
clocks agree to well under a millisecond)."""


class Lane(StrEnum):
    API = "api"
    """A caller is waiting (the API, a direct invoke): book at once, whatever the queue holds."""
    QUEUE = "queue"
    """Work that can wait: book only within the horizon, leaving the rest to the API."""


class Observe(Protocol):
    """observe(event, value, **detail): `slot_wait` (s), `store_calls`, `store_slow`, `stale_slot` (slots' worth
    given up), `store_error` and `store_too_slow` (pacing alone, with `reason`), `repaired` (with `found`)."""

    def __call__(self, event: str, value: float, /, **detail: str) -> None: ...


def _ignore(_event: str, _value: float, /, **_detail: str) -> None:
    return None


def impossible_ahead(limit: float, margin: float = MARGIN) -> float:
    """How far ahead of now no environment can have booked: where a timeline is repaired rather than waited for.

    Every booking moves `next_slot` only while it lies within MAX_LEAD + REACH of now (a new run or a repair sets it
    at most MAX_LEAD + REACH ahead), and by at most one block of API_MAX_BLOCK slots at the widest interval; plus
    the clocks' allowance. 16.2 s at 20 calls/s.
    """
    widest = MAX_WIDEN / (limit * (1 - margin))
    return MAX_LEAD + REACH + API_MAX_BLOCK * widest + CLOCK_ALLOWANCE


@dataclass
class RoundTrip:
    """The store's round trip as this environment has measured it (RFC 6298's estimator, TCP's)."""

    smoothed: float = 0.0
    deviation: float = 0.0
    samples: int = 0

    def add(self, seconds: float) -> None:
        if self.samples == 0:
            # RFC 6298 starts the deviation at half the first sample; a quarter expects twice it, as ever here.
            self.smoothed, self.deviation = seconds, seconds / 4
        else:
            self.deviation = 0.75 * self.deviation + 0.25 * abs(self.smoothed - seconds)
            self.smoothed = 0.875 * self.smoothed + 0.125 * seconds
        self.samples += 1

    @property
    def expected(self) -> float:
        """A round trip longer than this is unlikely: the smoothed one and four deviations."""
        return self.smoothed + 4 * self.deviation


@dataclass(eq=False)
class _Booking:
    """One booking in flight, for `count` calls; the call that started it gets the first usable slot, `own`."""

    count: int
    done: bool = False
    own: float | None = None
    failed: str = ""
    """Why it gave its caller no slot: `busy`, `late` (answered after its slots), `error`."""
    next_free: float = float("-inf")
    """When busy: the first slot nobody holds."""
    abandoned: bool = False
    """The caller's wait ended first: its slot goes to whoever comes next."""


@dataclass(slots=True)
class _Call:
    deadline: float
    bookings: int = 0
    """Bookings this call started that gave it no slot."""
    late: int = 0
    """Of which answered after their slots, or slots it woke too late for."""


class _PaceLocally:
    """What `_take` gives while the store is failing: the caller paces on the local fallback instead."""


_PACE_LOCALLY: Final = _PaceLocally()


class _NothingYet:
    """A booking gave its caller no slot (busy, late, failed): the caller looks again."""


_NOTHING_YET: Final = _NothingYet()
_granted = threading.local()
"""The slot this thread was last given and by whom, until its call leaves (`departing`)."""


def departing() -> None:
    """Called right before a call leaves for ZEGO on this thread: a call leaving late gives its lateness back."""
    grant: tuple[FleetBudget, float] | None = getattr(_granted, "grant", None)
    _granted.grant = None
    if grant is not None:
        grant[0].left(grant[1])


def _start_thread(work: Callable[[], None]) -> None:
    threading.Thread(target=work, name="budget-booking", daemon=True).start()


@dataclass
class FleetBudget:
    """One lane's gate in this execution environment: ZimClient calls `acquire` before each attempt.

    The threads of a batch share it: the first one without a slot books for every thread then waiting, and the
    others take their slots from what it booked, so a batch of ten calls costs one store round trip, not ten.
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
    spawn: Callable[[Callable[[], None]], None] = _start_thread
    """Runs a booking apart from its caller (a thread; service.py keeps the trace on it)."""
    _reserve: deque[float] = field(init=False, default_factory=deque)
    _waiting: int = field(init=False, default=0)
    _booking: _Booking | None = field(init=False, default=None)
    _retry_at: float = field(init=False, default=float("-inf"))
    _alone_until: float = field(init=False, default=float("-inf"))
    _round_trip: RoundTrip = field(init=False, default_factory=RoundTrip)
    _expect_idle: bool = field(init=False, default=True)
    """This lane's last booking found the budget idle: the next one tries to start a new run first."""
    _coming: int = field(init=False, default=0)
    """Calls announced by `expect` that have not yet asked: the next booking books for them too."""
    _widen: float = field(init=False, default=1.0)
    _lock: threading.Condition = field(init=False, default_factory=threading.Condition)

    @property
    def interval(self) -> float:
        """Seconds between two slots of the fleet, as this environment books them (wider after a rate limit)."""
        return self._widen / (self.limit * (1 - self.margin))

    def expect(self, calls: int) -> None:
        """`calls` calls of one request are about to ask side by side: the first to ask books for them all, one
        conditional write for the block (threads started one after another would otherwise book 1, then the rest).

        Set, not added: each request announces its own (an announced call that never asks, its secret unreadable,
        leaves at most one request's slots to the reserve, used by the next call or dropped as stale)."""
        with self._lock:
            self._coming = max(0, min(calls, self._max_block()))

    def acquire(self, max_wait: float) -> bool:
        """Wait for this call's slot; False (and no slot used) when none comes within `max_wait` seconds."""
        _granted.grant = None
        started = self.clock()
        call = _Call(deadline=started + max_wait)
        asking = True
        while True:
            with self._lock:
                if asking:  # this call asks now: it counts among the waiting, no longer among those coming
                    self._coming, asking = max(0, self._coming - 1), False
                self._waiting += 1
                try:
                    slot = self._take(call)
                finally:
                    self._waiting -= 1
            if slot is None:
                return False
            if isinstance(slot, _PaceLocally):
                return self.fallback.acquire(max(0.0, call.deadline - self.clock()))
            wait = slot - self.clock()
            if wait > 0:
                self.sleep(wait)
            if self.clock() - slot <= MAX_LATENESS:
                _granted.grant = (self, slot)
                self.observe("slot_wait", self.clock() - started)
                return True
            # Woken too late (a busy machine): leaving now would crowd the next second. Let the slot go.
            self.observe("stale_slot", 1)
            call.late += 1

    def left(self, slot: float) -> None:
        """The call given `slot` leaves now: if later than MAX_LATENESS, the fleet's next free slot moves back by
        the excess, so that the twentieth call after it still leaves a second after it (in the background)."""
        excess = self.clock() - slot - MAX_LATENESS
        if excess <= 0:
            return
        self.observe("stale_slot", excess / self.interval)
        ask = self._ask(idle=False, reach=REACH, latest=float("inf"))

        def push_back() -> None:
            try:
                self.book.push_back(min(excess, API_MAX_BLOCK * self.interval), ask)
            except StoreUnavailable:
                return  # the fleet's next second may crowd; ZEGO's rate-limit answer is retried and slows us
            self.observe("store_calls", 1)

        self.spawn(push_back)

    def slow_down(self) -> None:
        """ZEGO said "over the limit" (someone else uses the AppId, or a clock is off): book wider slots."""
        with self._lock:
            self._widen = min(MAX_WIDEN, self._widen * 2)
        self.fallback.slow_down()

    def speed_up(self) -> None:
        with self._lock:
            self._widen = max(1.0, self._widen * 0.9)
        self.fallback.speed_up()

    def _take(self, call: _Call) -> float | _PaceLocally | None:
        """This call's slot, `_PACE_LOCALLY` while the store fails, or None when no slot comes before its deadline."""
        while True:
            now = self.clock()
            while self._reserve and self._reserve[0] < now - MAX_LATENESS:
                self._reserve.popleft()
                self.observe("stale_slot", 1)
            if self._reserve:
                return self._reserve.popleft() if self._reserve[0] <= call.deadline else None
            if now < self._alone_until:
                return _PACE_LOCALLY
            if now >= call.deadline:
                return None
            if call.late >= MAX_LATE_BOOKINGS:
                self._go_alone(now, "store_too_slow", "its bookings were answered after their slots")
                return _PACE_LOCALLY
            if call.bookings >= MAX_BOOKINGS:
                return None
            if self._booking is not None:
                # Another thread is booking, maybe for this one too: its answer wakes this one.
                self._lock.wait(call.deadline - now)
            elif now < self._retry_at:
                # The queue's horizon is full until then.
                if self._retry_at > call.deadline:
                    return None
                self._wait_out_retry(now)
            elif not isinstance(slot := self._book_for(call), _NothingYet):
                return slot

    def _wait_out_retry(self, now: float) -> None:
        wake = self._retry_at
        self._lock.release()
        try:
            self.sleep(wake - now)
        finally:
            self._lock.acquire()
        if self._retry_at == wake:
            self._retry_at = float("-inf")  # waited out: the store's answer decides, not this clock

    def _book_for(self, call: _Call) -> float | _NothingYet | None:
        """Book for every thread waiting and wait for the answer: this call's own slot, None (its deadline came
        first, or the timeline is booked beyond it), or _NOTHING_YET (a failure counted: look again)."""
        booking = self._start_booking(call.deadline)
        while not booking.done:
            left = call.deadline - self.clock()
            if left <= 0:
                booking.abandoned = True
                if booking.own is not None:  # booked, not yet counted: someone else may use it
                    self._reserve.appendleft(booking.own)
                    booking.own = None
                return None
            self._lock.wait(left)
        if booking.own is not None:
            if booking.own <= call.deadline:
                return booking.own
            self._reserve.appendleft(booking.own)
            return None
        if booking.failed == "busy" and booking.next_free > call.deadline:
            return None  # the timeline is booked beyond this call's wait
        call.bookings += 1
        call.late += booking.failed == "late"
        return _NOTHING_YET

    def _ask(self, *, idle: bool, reach: float, latest: float) -> Ask:
        interval = self.interval
        return Ask(
            clock=self.clock,
            # A slot still ahead, or at most half MAX_LATENESS behind, when the answer comes as late as expected.
            lead=min(MAX_LEAD, max(min(interval, MIN_LEAD), self._round_trip.expected - MAX_LATENESS / 2)),
            reach=reach,
            latest=latest,
            impossible=impossible_ahead(self.limit, self.margin),
            # A repaired timeline starts after what the usual rules let anyone hold: the queue's horizon and a block.
            restart=self.horizon + API_MAX_BLOCK * interval,
            idle=idle,
        )

    def _start_booking(self, deadline: float) -> _Booking:
        """Book one block for every thread now waiting, on a thread of its own; called with the lock held."""
        count = min(self._waiting + self._coming, self._max_block())
        self._coming = max(0, self._coming - max(0, count - self._waiting))
        interval = self.interval
        # The queue's whole block, not only its first slot, must lie within the horizon: an API call then never
        # waits for more than the horizon's worth of queue work.
        reach = self.horizon - (count - 1) * interval if self.lane is Lane.QUEUE else REACH
        ask = self._ask(idle=self._expect_idle, reach=reach, latest=deadline)
        booking = _Booking(count)
        self._booking = booking

        def run() -> None:
            began = self.clock()
            try:
                outcome: Booked | Busy | StoreUnavailable = self.book.book(count, interval, ask)
            except StoreUnavailable as failure:
                outcome = failure
            except BaseException:
                with self._lock:  # a bug: the waiters must not wait for ever
                    booking.failed, booking.done, self._booking = "error", True, None
                    self._lock.notify_all()
                raise
            self._settle(booking, outcome, ask, interval, elapsed=self.clock() - began)

        self.spawn(run)
        return booking

    def _settle(
        self, booking: _Booking, outcome: Booked | Busy | StoreUnavailable, ask: Ask, interval: float, elapsed: float
    ) -> None:
        """A booking's answer: slots to its caller and the reserve, or when to ask again, or pacing alone."""
        events: list[tuple[str, float, dict[str, str]]] = []
        with self._lock:
            self._booking = None
            now = self.clock()
            match outcome:
                case Booked(first=first, round_trips=round_trips, started_run=started_run, repaired=repaired):
                    self._measured(outcome.round_trip or elapsed / round_trips, events)
                    self._expect_idle = started_run
                    slots = [first + index * interval for index in range(booking.count)]
                    usable = [slot for slot in slots if slot >= now - MAX_LATENESS]
                    if len(usable) < len(slots):
                        events.append(("stale_slot", len(slots) - len(usable), {}))
                    if usable and not booking.abandoned:
                        booking.own = usable.pop(0)
                    elif not usable:
                        booking.failed = "late"
                    self._reserve.extend(usable)
                    if self.lane is Lane.QUEUE and booking.count == self._max_block():
                        # A full block ends near the horizon: asking for another before the horizon can take it
                        # would only be answered Busy. Come back when it can, half an interval later: another
                        # environment just answered Busy asks first, so that two do not race for every block.
                        self._retry_at = slots[-1] + 1.5 * interval - ask.reach - ask.lead
                    if repaired is not None:
                        events.append(("repaired", 1, {"found": repaired}))
                    events.append(("store_calls", round_trips, {}))
                case Busy(next_free=next_free, round_trips=round_trips):
                    self._measured(outcome.round_trip or elapsed / round_trips, events)
                    self._expect_idle = False
                    booking.failed, booking.next_free = "busy", next_free
                    # The queue's horizon is full (or the API's deadline too near): come back once it has moved on.
                    self._retry_at = max(next_free - ask.reach - ask.lead, now + interval)
                    events.append(("store_calls", round_trips, {}))
                case StoreUnavailable() as failure:
                    booking.failed = "error"
                    events.append(("store_calls", 1, {}))
                    events.append(self._go_alone(now, "store_error", str(failure), emit=False))
            if self._round_trip.smoothed > MAX_LEAD and now >= self._alone_until:
                events.append(self._go_alone(now, "store_too_slow", "its round trip is over MAX_LEAD", emit=False))
            self._lock.notify_all()  # the others may take their slots now
        # Counted before the caller goes on: its invocation's metrics must hold its booking.
        for event, value, detail in events:
            self.observe(event, value, **detail)
        with self._lock:
            booking.done = True
            self._lock.notify_all()

    def _measured(self, round_trip: float, events: list[tuple[str, float, dict[str, str]]]) -> None:
        self._round_trip.add(round_trip)
        if round_trip > SLOW_ROUND_TRIP:
            events.append(("store_slow", 1, {}))

    def _go_alone(self, now: float, event: str, reason: str, *, emit: bool = True) -> tuple[str, float, dict[str, str]]:
        """Pace this environment alone for STORE_RETRY_SECONDS; the round trip is measured afresh afterwards."""
        self._alone_until = now + STORE_RETRY_SECONDS
        self._round_trip = RoundTrip()
        self._lock.notify_all()
        if emit:
            self.observe(event, 1, reason=reason)
        return (event, 1, {"reason": reason})

    def _max_block(self) -> int:
        if self.lane is Lane.API:
            return API_MAX_BLOCK
        return max(1, int(self.horizon / self.interval))
