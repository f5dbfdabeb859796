"""A slow but healthy store: every DynamoDB call answered correctly, each one late by a fixed or varying delay
(a botocore hook on the function's DynamoDB client, as throttling retries or a starved CPU would make it). The real
handler against the ZIM stand-in at ZEGO's 20 calls/s, which refuses a 21st call in any second. Bounded: each case
a few seconds, every invocation within its Lambda timeout."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest

from handler.fleet.budget import MAX_BOOKINGS, MAX_LEAD, SLOW_ROUND_TRIP
from handler.fleet.slot_book import ROUND_TRIPS
from kickout_dev.events import api_event, sqs_event
from kickout_dev.sandbox import Sandbox, sandbox
from tests.conftest import Printed

ZEGO_LIMIT = 20


@dataclass
class SlowStore:
    """Delays every call of the function's DynamoDB client by `delay()` seconds, and counts its UpdateItems."""

    delay: Callable[[], float] = lambda: 0.0
    updates: int = 0
    calls: list[str] = field(default_factory=list)

    def __call__(self, event_name: str, **_: Any) -> None:
        self.calls.append(event_name)
        if event_name.endswith(".UpdateItem"):
            self.updates += 1
        time.sleep(self.delay())


@pytest.fixture
def limited() -> Iterator[Sandbox]:
    with sandbox(rate_limit_per_second=ZEGO_LIMIT, max_requests_per_second=ZEGO_LIMIT) as box:
        yield box


@pytest.fixture
def store(limited: Sandbox) -> SlowStore:
    slow = SlowStore()
    limited.function.dynamodb().meta.events.register("before-send.dynamodb", slow)
    return slow


LATENCIES: dict[str, Callable[[], float]] = {
    "10 ms": lambda: 0.01,
    "50 ms": lambda: 0.05,
    "100 ms": lambda: 0.1,
    "200 ms": lambda: 0.2,
    "0 to 300 ms at random": partial(random.Random(21).uniform, 0.0, 0.3),
}


def kickout(room: str, *users: str) -> str:
    return json.dumps({"room_id": room, "user_ids": list(users)})


def bounded_bookings(store: SlowStore, zego_calls: int) -> bool:
    """Store writes stay within what the bound allows: a call starts MAX_BOOKINGS bookings of ROUND_TRIPS updates
    at most, and gives one push back when it leaves late."""
    return store.updates <= (MAX_BOOKINGS * ROUND_TRIPS + 1) * max(1, zego_calls)


@pytest.mark.parametrize("latency", LATENCIES.values(), ids=LATENCIES.keys())
def test_with_a_slow_store_the_api_still_kicks_within_zegos_limit_and_its_deadline(
    limited: Sandbox, store: SlowStore, printed: Printed, latency: Callable[[], float]
) -> None:
    # GIVEN a store that answers every call late
    store.delay = latency
    body = json.dumps({"room_id": "lobby", "user_ids": [f"user-{index}" for index in range(150)]})
    timeout = 29.0
    # WHEN a 150-user request (3 ZEGO calls) comes to the API
    started = time.monotonic()
    response = limited.handler(api_event(body), limited.context(timeout))
    elapsed = time.monotonic() - started
    # THEN it is done (200, not 503), within the invocation's deadline and ZEGO's limit, with bounded bookings
    assert response["statusCode"] == 200, response["body"]
    assert elapsed < timeout
    assert len(limited.zim.kicked_user_ids) == 150
    assert limited.zim.refusals == []
    assert bounded_bookings(store, len(limited.zim.kickouts))


@pytest.mark.parametrize("latency", LATENCIES.values(), ids=LATENCIES.keys())
def test_with_a_slow_store_a_queue_batch_returns_before_its_deadline_within_zegos_limit(
    limited: Sandbox, store: SlowStore, printed: Printed, latency: Callable[[], float]
) -> None:
    # GIVEN a store that answers every call late, and a batch of 20 rooms (a second of ZEGO's budget)
    store.delay = latency
    timeout = 10.0
    # WHEN a queue invocation with a 10 s timeout takes it
    started = time.monotonic()
    response = limited.handler(
        sqs_event(*(kickout(f"room-{index}", "u") for index in range(20))), limited.context(timeout)
    )
    elapsed = time.monotonic() - started
    # THEN it returned before its deadline, handed nothing back to SQS, and every message was kicked or deferred
    assert elapsed < timeout
    assert response == {"batchItemFailures": []}
    assert len(limited.zim.kicked_user_ids) + printed.metric("MessagesDeferred") == 20
    assert limited.zim.refusals == []
    assert bounded_bookings(store, len(limited.zim.kickouts))


def test_a_store_slower_than_a_booking_can_wait_for_is_left_for_the_local_pace_and_counted(
    limited: Sandbox, store: SlowStore, printed: Printed
) -> None:
    # GIVEN a store whose every answer takes longer than MAX_LEAD (only its client's retries are that slow)
    store.delay = lambda: MAX_LEAD + 0.2
    body = json.dumps({"room_id": "lobby", "user_ids": [f"user-{index}" for index in range(100)]})
    timeout = 29.0
    # WHEN a 100-user request (2 ZEGO calls) comes to the API
    started = time.monotonic()
    response = limited.handler(api_event(body), limited.context(timeout))
    elapsed = time.monotonic() - started
    # THEN it is done at the local pace, counted as the store failing the budget and as slow, and said once
    assert response["statusCode"] == 200, response["body"]
    assert elapsed < timeout
    assert limited.zim.refusals == []
    assert printed.metric("BudgetStoreErrors") == 1
    assert printed.metric("BudgetStoreSlow") >= 1
    assert [line["message"] for line in printed.logs if "budget" in line["message"]] == [
        "rate budget store too slow: pacing this environment alone"
    ]


def test_a_booking_slower_than_the_slow_mark_is_counted(limited: Sandbox, store: SlowStore, printed: Printed) -> None:
    store.delay = lambda: SLOW_ROUND_TRIP * 2
    response = limited.handler(api_event(kickout("lobby", "spammer")), limited.context(29.0))
    assert response["statusCode"] == 200
    assert printed.metric("BudgetStoreSlow") >= 1
    assert printed.metric("BudgetStoreErrors") == 0
