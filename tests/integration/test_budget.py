"""ZEGO's rate limit as one fleet-wide budget: slots booked in DynamoDB (moto), the API first, a safe local pace
when the store fails."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import boto3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from moto import mock_aws

from handler.fleet.budget import (
    MARGIN,
    MAX_BOOKINGS,
    MAX_LATE_BOOKINGS,
    MAX_LATENESS,
    MAX_LEAD,
    MIN_LEAD,
    QUEUE_HORIZON,
    STORE_RETRY_SECONDS,
    FleetBudget,
    Lane,
    departing,
    impossible_ahead,
)
from handler.fleet.pacing import Pacer
from handler.fleet.slot_book import ROUND_TRIPS, Ask, Booked, Busy, DynamoSlotBook, StoreUnavailable
from kickout_dev.clock import SimulatedClock
from kickout_dev.moto_server import make_dynamodb_updates_atomic
from kickout_dev.sandbox import REGION, create_state_table

LIMIT = 20.0
INTERVAL = 1 / (LIMIT * (1 - MARGIN))


@dataclass
class Events:
    seen: list[tuple[str, float]] = field(default_factory=list)
    details: list[dict[str, str]] = field(default_factory=list)

    def __call__(self, event: str, value: float, /, **detail: str) -> None:
        self.seen.append((event, value))
        self.details.append(detail)

    def count(self, event: str) -> int:
        """How often `event` was observed."""
        return sum(1 for name, _ in self.seen if name == event)

    def total(self, event: str) -> float:
        """What `event`'s values add up to: for `store_calls`, the BudgetStoreCalls metric (store calls made)."""
        return sum(value for name, value in self.seen if name == event)


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for name, value in {
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    make_dynamodb_updates_atomic()
    with mock_aws():
        yield create_state_table(boto3.client("dynamodb", region_name=REGION))


def slot_book(table: str, updates: list[str] | None = None) -> DynamoSlotBook:
    """The budget's slot book on moto's table; each UpdateItem it sends recorded in `updates`, if given."""
    client = boto3.client("dynamodb", region_name=REGION)
    if updates is not None:
        real_update = client.update_item

        def counted_update(**kwargs: object) -> object:
            updates.append(str(kwargs["UpdateExpression"]))
            return real_update(**kwargs)  # type: ignore[arg-type]

        client.update_item = counted_update  # type: ignore[method-assign,assignment]
    return DynamoSlotBook(client=lambda: client, table=table, key="budget#1234567890")


def gate(
    book: DynamoSlotBook, lane: Lane, clock: SimulatedClock, events: Events | None = None, fallback_share: float = 1.0
) -> FleetBudget:
    return FleetBudget(
        book=book,
        limit=LIMIT,
        lane=lane,
        fallback=Pacer(share=fallback_share, clock=clock, sleep=clock.sleep),
        observe=events or Events(),
        clock=clock,
        sleep=clock.sleep,
    )


def ask(clock: SimulatedClock, *, reach: float, lead: float = 0.01) -> Ask:
    """What a gate would ask of the slot book, on the simulated clock."""
    return Ask(
        clock=clock,
        lead=lead,
        reach=reach,
        latest=float("inf"),
        impossible=impossible_ahead(LIMIT),
        restart=QUEUE_HORIZON + 10 * INTERVAL,
    )


def most_in_any_second(times: list[float]) -> int:
    ordered = sorted(times)
    return max(sum(1 for other in ordered[index:] if other - start < 1.0) for index, start in enumerate(ordered))


def test_two_environments_share_one_timeline_of_slots_spaced_wider_than_zegos_limit(table: str) -> None:
    # GIVEN two environments' queue gates on one table
    clock = SimulatedClock()
    first, second = gate(slot_book(table), Lane.QUEUE, clock), gate(slot_book(table), Lane.QUEUE, clock)
    # WHEN they take turns for 100 calls
    sent = []
    for index in range(100):
        assert (first if index % 2 else second).acquire(max_wait=10)
        sent.append(clock.now)
    # THEN no two calls share a moment, none is closer than the interval, and no second holds more than 20
    gaps = [later - earlier for earlier, later in itertools.pairwise(sent)]
    assert min(gaps) >= INTERVAL - 1e-6
    assert most_in_any_second(sent) <= LIMIT


def test_the_first_call_of_an_idle_budget_leaves_a_little_ahead_of_now(table: str) -> None:
    clock = SimulatedClock()
    api = gate(slot_book(table), Lane.API, clock)
    started = clock.now
    assert api.acquire(max_wait=1)
    assert clock.now - started >= MIN_LEAD - 1e-6
    # and a budget idle for a while starts over from now, not from its old slots
    clock.now += 60
    restarted = clock.now
    assert api.acquire(max_wait=1)
    assert MIN_LEAD - 1e-6 <= clock.now - restarted < 0.1


def test_the_queue_books_no_further_ahead_than_its_horizon_and_the_api_goes_first(table: str) -> None:
    # GIVEN a queue environment that booked everything its horizon allows (its calls have not left yet)
    clock = SimulatedClock()
    book = slot_book(table)
    queue_booked = 0
    while isinstance(book.book(1, INTERVAL, ask(clock, reach=QUEUE_HORIZON)), Booked):
        queue_booked += 1
    assert queue_booked == pytest.approx(QUEUE_HORIZON / INTERVAL, abs=2)
    # WHEN more queue work and an API call ask for slots at this same moment
    queue = gate(book, Lane.QUEUE, clock)
    api = gate(book, Lane.API, clock)
    frozen = clock.now
    queue_had_one = queue.acquire(max_wait=0.05)
    clock.now = frozen
    api_had_one = api.acquire(max_wait=5)
    # THEN the queue waits for the horizon to move on, while the API's slot comes right after the horizon
    assert not queue_had_one
    assert api_had_one
    assert clock.now - frozen <= QUEUE_HORIZON + 2 * INTERVAL


def test_a_busy_answer_names_the_next_free_slot_and_books_nothing(table: str) -> None:
    clock = SimulatedClock()
    book = slot_book(table)
    first = book.book(5, INTERVAL, ask(clock, reach=10))
    assert isinstance(first, Booked)
    busy = book.book(1, INTERVAL, ask(clock, reach=0))
    assert isinstance(busy, Busy)
    assert busy.next_free == pytest.approx(first.first + 5 * INTERVAL, abs=1e-5)
    after = book.book(1, INTERVAL, ask(clock, reach=10))
    assert isinstance(after, Booked)
    assert after.first == pytest.approx(busy.next_free, abs=1e-5)


def test_threads_waiting_together_share_one_store_round_trip(table: str) -> None:
    # GIVEN ten threads of one environment wanting a slot at the same moment (a batch's calls), at a high limit
    events, updates = Events(), list[str]()
    budget = FleetBudget(
        book=slot_book(table, updates), limit=200, lane=Lane.API, fallback=Pacer(share=1), observe=events
    )
    start = threading.Barrier(10)
    granted: list[bool] = []

    def call() -> None:
        start.wait()
        granted.append(budget.acquire(max_wait=5))

    threads = [threading.Thread(target=call) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    # THEN every one got a slot, for fewer UpdateItems than calls
    assert granted == [True] * 10
    assert 1 <= len(updates) < 10
    # AND the store calls the budget reports (its BudgetStoreCalls metric) are the UpdateItems it sent
    assert events.total("store_calls") == len(updates)


def test_concurrent_environments_never_hold_the_same_slot(table: str) -> None:
    # GIVEN three environments of eight threads each booking at once (moto's writes made atomic, as DynamoDB's are)
    slots: list[float] = []
    lock = threading.Lock()

    @dataclass(frozen=True)
    class Recording:
        inner: DynamoSlotBook

        def book(self, count: int, interval: float, ask: Ask) -> Booked | Busy:
            outcome = self.inner.book(count, interval, ask)
            if isinstance(outcome, Booked):
                with lock:
                    slots.extend(outcome.first + index * interval for index in range(count))
            return outcome

        def push_back(self, seconds: float, ask: Ask) -> None:
            self.inner.push_back(seconds, ask)

    @dataclass
    class CountingPace(Pacer):
        """The local pace, counting the calls it let go (a loaded machine's bookings may come back too late)."""

        granted: int = 0

        def acquire(self, max_wait: float) -> bool:
            if granted := super().acquire(max_wait):
                with lock:
                    self.granted += 1
            return granted

    paces = [CountingPace(share=400) for _ in range(3)]
    budgets = [FleetBudget(book=Recording(slot_book(table)), limit=400, lane=Lane.API, fallback=pace) for pace in paces]
    answers: list[bool] = []

    def calls(budget: FleetBudget) -> None:
        for _ in range(10):
            answer = budget.acquire(max_wait=10)
            with lock:
                answers.append(answer)

    threads = [threading.Thread(target=calls, args=(budget,)) for budget in budgets for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    # THEN every call was let go, from the fleet's timeline or (its booking answered after its slot, on a loaded
    # machine) at the local pace, most of them from the timeline
    assert answers == [True] * 240
    ordered = sorted(slots)
    assert len(ordered) + sum(pace.granted for pace in paces) >= 240
    assert len(ordered) >= 200
    # AND the slots the timeline handed out are all distinct and spaced by at least the interval
    assert min(later - earlier for earlier, later in itertools.pairwise(ordered)) >= (1 / (400 * (1 - MARGIN)) - 1e-5)


def test_an_unreachable_store_falls_back_to_the_local_pace_says_so_and_comes_back(table: str) -> None:
    # GIVEN a gate whose store fails
    clock = SimulatedClock()
    events = Events()
    book = slot_book(table)
    working = book

    @dataclass(frozen=True)
    class Failing:
        def book(self, count: int, interval: float, ask: Ask) -> Booked | Busy:
            raise StoreUnavailable("DynamoDB could not be reached (EndpointConnectionError)")

        def push_back(self, seconds: float, ask: Ask) -> None:
            raise StoreUnavailable("DynamoDB could not be reached (EndpointConnectionError)")

    budget = gate(working, Lane.QUEUE, clock, events, fallback_share=2)
    budget.book = Failing()
    # WHEN it keeps sending for a few seconds
    sent = []
    for _ in range(6):
        assert budget.acquire(max_wait=10)
        sent.append(clock.now)
    # THEN it went on at its fallback share (2/s), said so once, and did not ask the failing store again
    assert min(later - earlier for earlier, later in itertools.pairwise(sent)) >= 0.5 - 1e-9
    assert events.count("store_error") == 1
    # AND once the store is back, after the pause, the fleet's timeline is used again
    budget.book = working
    clock.now += STORE_RETRY_SECONDS
    before = len(events.seen)
    assert budget.acquire(max_wait=10)
    assert ("store_calls", 1) in events.seen[before:]


def test_a_slot_gone_stale_is_dropped_not_used_late(table: str) -> None:
    clock = SimulatedClock()
    events = Events()
    budget = gate(slot_book(table), Lane.API, clock, events)
    # GIVEN slots booked for two threads, of which only one came to use its slot
    budget._reserve.extend([clock.now + 0.01, clock.now + 0.06])  # what a block booking leaves behind
    clock.now += 1.0
    # WHEN a call comes a second later
    assert budget.acquire(max_wait=1)
    # THEN the old slots were dropped and counted, and the call booked a fresh one, in one store call
    assert events.count("stale_slot") == 2
    assert events.total("store_calls") == 1


def test_rate_limit_answers_widen_this_environments_slots_and_successes_narrow_them_back(table: str) -> None:
    budget = gate(slot_book(table), Lane.QUEUE, SimulatedClock())
    budget.slow_down()
    assert budget.interval == pytest.approx(2 * INTERVAL)
    for _ in range(20):
        budget.speed_up()
    assert budget.interval == pytest.approx(INTERVAL)


def test_the_budget_item_expires_by_ttl(table: str) -> None:
    clock = SimulatedClock()
    assert gate(slot_book(table), Lane.API, clock).acquire(max_wait=1)
    item = boto3.client("dynamodb", region_name=REGION).get_item(
        TableName=table, Key={"id": {"S": "budget#1234567890"}}
    )
    assert int(item["Item"]["expiration"]["N"]) > clock.now


def test_a_call_that_finds_the_fleet_quiet_costs_one_store_round_trip(table: str) -> None:
    # GIVEN an environment that has booked before, and a fleet quiet since
    updates: list[str] = []
    clock = SimulatedClock()
    api = gate(slot_book(table, updates), Lane.API, clock)
    assert api.acquire(max_wait=1)
    clock.now += 30
    updates.clear()
    # WHEN the next call comes
    assert api.acquire(max_wait=1)
    # THEN one UpdateItem started a new run of slots (not a failed "book behind" first), with a lead of an interval
    assert updates == ["SET next_slot = :next, expiration = :expiration"]


# --- a slow store, the bounds of a call, late departures: a scripted store on the simulated clock ----------------


@dataclass
class ScriptedStore:
    """A slot book that answers after `latency(n)` seconds of the simulated clock (n: its n-th booking), as an
    idle timeline would: a new run from the earliest moment asked for; or Busy when `busy` says so."""

    clock: SimulatedClock
    latency: Callable[[int], float] = lambda _: 0.0
    busy: bool = False
    asks: list[Ask] = field(default_factory=list)
    pushed_back: list[float] = field(default_factory=list)

    def book(self, count: int, interval: float, ask: Ask) -> Booked | Busy:
        self.asks.append(ask)
        earliest = self.clock.now + ask.lead
        self.clock.now += self.latency(len(self.asks))
        if self.busy:
            return Busy(next_free=earliest + ask.reach + 1.0)
        return Booked(first=earliest, started_run=True)

    def push_back(self, seconds: float, ask: Ask) -> None:
        self.pushed_back.append(seconds)


def scripted_gate(store: ScriptedStore, events: Events, lane: Lane = Lane.API) -> FleetBudget:
    clock = store.clock
    return FleetBudget(
        book=store,
        limit=LIMIT,
        lane=lane,
        fallback=Pacer(share=1.0, clock=clock, sleep=clock.sleep),
        observe=events,
        clock=clock,
        sleep=clock.sleep,
    )


def test_a_slow_store_is_booked_ahead_by_its_round_trip_so_its_slots_are_not_lost() -> None:
    # GIVEN a store that takes 200 ms a booking (four slots' worth)
    clock = SimulatedClock()
    store = ScriptedStore(clock, latency=lambda _: 0.2)
    events = Events()
    budget = scripted_gate(store, events)
    # WHEN ten calls go one after the other
    for _ in range(10):
        assert budget.acquire(max_wait=5)
    # THEN after the first, every booking asked for slots a round trip ahead (less the lateness a slot may have when
    # its answer comes), and none was lost after it
    assert all(ask.lead >= 0.2 - MAX_LATENESS / 2 for ask in store.asks[1:])
    assert events.count("stale_slot") <= 1
    assert len(store.asks) <= 11
    # AND each slow booking was counted as such
    assert events.count("store_slow") == len(store.asks)


def test_a_call_waits_for_a_booking_no_longer_than_its_max_wait() -> None:
    # GIVEN a store whose answer takes two seconds of real time
    answered = threading.Event()

    @dataclass(frozen=True)
    class Stuck:
        def book(self, count: int, interval: float, ask: Ask) -> Booked | Busy:
            answered.wait(2.0)
            return Booked(first=time.time())

        def push_back(self, seconds: float, ask: Ask) -> None: ...

    budget = FleetBudget(book=Stuck(), limit=LIMIT, lane=Lane.API, fallback=Pacer(share=1.0))
    # WHEN a call may wait 0.2 s
    started = time.monotonic()
    granted = budget.acquire(max_wait=0.2)
    # THEN it had no slot and returned long before the store answered
    assert not granted
    assert time.monotonic() - started < 1.5
    answered.set()


def test_a_call_books_a_bounded_number_of_times_however_busy_the_budget() -> None:
    clock = SimulatedClock()
    store = ScriptedStore(clock, busy=True)
    budget = scripted_gate(store, Events(), Lane.QUEUE)
    assert not budget.acquire(max_wait=600)
    assert len(store.asks) == MAX_BOOKINGS


Answer = tuple[str, int]
"""A scripted booking's answer: busy, late (its slot past when it comes) or booked; and the UpdateItems it took."""


@settings(max_examples=60, deadline=None)
@given(
    answers=st.lists(
        st.tuples(st.sampled_from(["busy", "late", "booked"]), st.integers(1, ROUND_TRIPS + 1)),
        min_size=1,
        max_size=MAX_BOOKINGS + 5,
    ),
    lane=st.sampled_from(Lane),
)
def test_a_call_costs_the_store_at_most_max_bookings_bookings_of_round_trips_each_and_reports_each(
    answers: list[Answer], lane: Lane
) -> None:
    # GIVEN a store whose bookings are answered busy, too late or booked, each after 1 to ROUND_TRIPS + 1 UpdateItems
    # (ROUND_TRIPS tries, and one more to repair the timeline), the script's last answer repeating
    clock = SimulatedClock()
    taken: list[int] = []

    @dataclass(frozen=True)
    class Contended:
        def book(self, count: int, interval: float, ask: Ask) -> Booked | Busy:
            kind, round_trips = answers[min(len(taken), len(answers) - 1)]
            taken.append(round_trips)
            earliest = clock.now + ask.lead
            if kind == "busy":
                return Busy(next_free=earliest + ask.reach + 1.0, round_trips=round_trips)
            if kind == "late":
                clock.now = earliest + 2 * MAX_LATENESS
            return Booked(first=earliest, round_trips=round_trips, started_run=True)

        def push_back(self, seconds: float, ask: Ask) -> None: ...

    events = Events()
    budget = FleetBudget(
        book=Contended(),
        limit=LIMIT,
        lane=lane,
        fallback=Pacer(share=1.0, clock=clock, sleep=clock.sleep),
        observe=events,
        clock=clock,
        sleep=clock.sleep,
    )
    # WHEN one call asks for a slot, willing to wait ten minutes
    budget.acquire(max_wait=600)
    # THEN it started at most MAX_BOOKINGS bookings, so it cost at most MAX_BOOKINGS * (ROUND_TRIPS + 1) UpdateItems
    assert 1 <= len(taken) <= MAX_BOOKINGS
    assert sum(taken) <= MAX_BOOKINGS * (ROUND_TRIPS + 1)
    # AND the store calls it reports (BudgetStoreCalls) are every one its bookings took, no fewer, no more
    assert events.total("store_calls") == sum(taken)


def test_bookings_answered_after_their_slots_leave_the_environment_to_its_local_pace() -> None:
    # GIVEN a store whose every answer comes later than the one before it led to expect (0.1, 0.5, 0.9 s)
    clock = SimulatedClock()
    store = ScriptedStore(clock, latency=lambda n: (0.1, 0.5, 0.9)[min(n, 3) - 1])
    events = Events()
    budget = scripted_gate(store, events)
    # WHEN a call asks for a slot
    assert budget.acquire(max_wait=60)
    # THEN after three bookings answered too late, it went on at the local pace, and said why
    assert len(store.asks) == MAX_LATE_BOOKINGS
    assert events.count("store_too_slow") == 1
    assert events.count("store_error") == 0


def test_a_store_slower_than_max_lead_leaves_the_environment_to_its_local_pace_at_once() -> None:
    clock = SimulatedClock()
    store = ScriptedStore(clock, latency=lambda _: MAX_LEAD + 0.5)
    events = Events()
    budget = scripted_gate(store, events)
    assert budget.acquire(max_wait=60)
    assert budget.acquire(max_wait=60)
    assert len(store.asks) == 1
    assert events.count("store_too_slow") == 1


def test_a_call_that_leaves_late_moves_the_fleets_next_free_slot_back_by_the_excess() -> None:
    # GIVEN a call given its slot, which then stalls 80 ms before it leaves
    clock = SimulatedClock()
    store = ScriptedStore(clock)
    budget = scripted_gate(store, Events())
    budget.spawn = lambda work: work()
    assert budget.acquire(max_wait=5)
    clock.now += 0.08
    # WHEN it leaves
    departing()
    departing()  # once per slot
    # THEN the timeline moved back by what it was late beyond MAX_LATENESS
    assert store.pushed_back == [pytest.approx(0.08 - MAX_LATENESS, abs=1e-6)]


def test_a_call_that_leaves_on_time_moves_nothing() -> None:
    clock = SimulatedClock()
    store = ScriptedStore(clock)
    budget = scripted_gate(store, Events())
    budget.spawn = lambda work: work()
    assert budget.acquire(max_wait=5)
    clock.now += MAX_LATENESS / 2
    departing()
    assert store.pushed_back == []


def test_calls_announced_together_are_booked_as_one_block_in_one_write(table: str) -> None:
    # GIVEN an API lane told that ten calls of one request are about to ask (on the real clock, moto's table)
    bookings: list[int] = []

    @dataclass(frozen=True)
    class Counting:
        inner: DynamoSlotBook

        def book(self, count: int, interval: float, ask: Ask) -> Booked | Busy:
            bookings.append(count)
            return self.inner.book(count, interval, ask)

        def push_back(self, seconds: float, ask: Ask) -> None:
            self.inner.push_back(seconds, ask)

    budget = FleetBudget(book=Counting(slot_book(table)), limit=LIMIT, lane=Lane.API, fallback=Pacer(share=LIMIT))
    granted: list[float] = []
    lock = threading.Lock()

    def call() -> None:
        assert budget.acquire(max_wait=10)
        with lock:
            granted.append(time.time())

    budget.expect(10)
    # WHEN they ask one after another, as threads started in turn do
    threads = [threading.Thread(target=call) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    # THEN the first booked for all ten, in one store call, and each was granted a slot (of it, unless a loaded
    # machine woke a thread past its slot: that one books again)
    assert bookings[0] == 10
    assert len(granted) == 10
