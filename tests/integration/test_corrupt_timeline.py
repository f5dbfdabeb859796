"""The budget's item is shared state anyone with access to the table can damage (a hand edit, a clock that jumped):
the real handler reads it defensively, repairs what no environment can have written, counts and says it, and never
fails or stalls a kickout because of it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from handler.fleet.budget import impossible_ahead
from kickout_dev.events import api_event, sqs_event
from kickout_dev.sandbox import APP_ID, REGION, Sandbox
from tests.conftest import Invoke, Printed

DAY_MICROS = 86_400 * 1_000_000


def now_micros(offset_seconds: float = 0.0) -> str:
    return str(round((time.time() + offset_seconds) * 1_000_000))


def put_next_slot(box: Sandbox, next_slot: dict[str, Any] | None) -> None:
    item: dict[str, Any] = {"id": {"S": f"budget#{APP_ID}"}, "expiration": {"N": str(int(time.time()) + 3600)}}
    if next_slot is not None:
        item["next_slot"] = next_slot
    boto3.client("dynamodb", region_name=REGION).put_item(TableName=box.environ["KICKOUT_STATE_TABLE"], Item=item)


def stored_next_slot(box: Sandbox) -> dict[str, Any]:
    item = boto3.client("dynamodb", region_name=REGION).get_item(
        TableName=box.environ["KICKOUT_STATE_TABLE"], Key={"id": {"S": f"budget#{APP_ID}"}}
    )["Item"]
    return dict(item["next_slot"])


REPAIRED: dict[str, Callable[[], dict[str, Any]]] = {
    "a string of digits": lambda: {"S": now_micros()},
    "the string NaN": lambda: {"S": "NaN"},
    "a boolean": lambda: {"BOOL": True},
    "null": lambda: {"NULL": True},
    "a list": lambda: {"L": [{"N": now_micros()}]},
    "a map": lambda: {"M": {"N": {"N": now_micros()}}},
    "bytes": lambda: {"B": b"\x00"},
    "a day ahead (a clock that jumped)": lambda: {"N": str(int(now_micros()) + DAY_MICROS)},
    "just past the impossible future": lambda: {"N": now_micros(impossible_ahead(1000) + 2)},
    "the largest number DynamoDB holds": lambda: {"N": "9.9999999999999999999999999999999999999E+125"},
}
"""Values no environment can have written: repaired."""

READ_AS_TIME: dict[str, Callable[[], dict[str, Any] | None]] = {
    "missing": lambda: None,
    "negative": lambda: {"N": "-5"},
    "the most negative number": lambda: {"N": "-9.9999999999999999999999999999999999999E+125"},
    "a fraction of a microsecond, a little ahead": lambda: {"N": now_micros(0.3) + ".5"},
    "the smallest positive number": lambda: {"N": "1E-130"},
}
"""Odd but harmless values: read as the time they say (the past: an idle budget) and overwritten by the next run."""


def one_kick(room: str = "lobby") -> str:
    return json.dumps({"room_id": room, "user_ids": ["spammer"]})


@pytest.mark.parametrize("value", REPAIRED.values(), ids=REPAIRED.keys())
def test_an_impossible_next_slot_is_repaired_counted_and_said_and_the_api_kicks(
    invoke: Invoke, box: Sandbox, printed: Printed, value: Callable[[], dict[str, Any]]
) -> None:
    # GIVEN a budget item whose next slot no environment can have written
    put_next_slot(box, value())
    # WHEN an API request comes
    began = time.time()
    response = invoke(api_event(one_kick()))
    # THEN the user is kicked (not 500, not 503), the repair counted and logged once with what was found
    assert response["statusCode"] == 200, response["body"]
    assert box.zim.kicked_user_ids == ["spammer"]
    assert printed.metric("BudgetRepairs") == 1
    assert printed.metric("BudgetStoreErrors") == 0
    repairs = [line for line in printed.logs if line["message"].startswith("rate budget timeline repaired")]
    assert len(repairs) == 1
    assert repairs[0]["found"]
    # AND the timeline holds a time again: whole microseconds, the end of the run the repair started
    repaired = stored_next_slot(box)
    assert set(repaired) == {"N"}
    assert began < int(repaired["N"]) / 1_000_000 < time.time() + 1


@pytest.mark.parametrize("value", READ_AS_TIME.values(), ids=READ_AS_TIME.keys())
def test_an_odd_but_harmless_next_slot_is_read_as_its_time_and_the_api_kicks(
    invoke: Invoke, box: Sandbox, printed: Printed, value: Callable[[], dict[str, Any] | None]
) -> None:
    put_next_slot(box, value())
    response = invoke(api_event(one_kick()))
    assert response["statusCode"] == 200, response["body"]
    assert box.zim.kicked_user_ids == ["spammer"]
    assert printed.metric("BudgetRepairs") == 0
    assert printed.metric("BudgetStoreErrors") == 0


@pytest.mark.parametrize("name", ["a string of digits", "a day ahead (a clock that jumped)"])
def test_a_queue_batch_on_a_damaged_timeline_is_kicked_not_failed_or_deferred(
    invoke: Invoke, box: Sandbox, printed: Printed, name: str
) -> None:
    put_next_slot(box, REPAIRED[name]())
    response = invoke(sqs_event(*(one_kick(f"room-{index}") for index in range(5))))
    assert response == {"batchItemFailures": []}
    assert len(box.zim.kicked_user_ids) == 5
    assert printed.metric("MessagesDeferred") == 0
    assert printed.metric("BudgetRepairs") == 1


def test_a_next_slot_within_reach_is_waited_for_not_repaired(invoke: Invoke, box: Sandbox, printed: Printed) -> None:
    # GIVEN a timeline booked a second ahead: what a busy fleet leaves (an API backlog)
    ahead = 1.0
    put_next_slot(box, {"N": now_micros(ahead)})
    # WHEN an API request comes
    started = time.monotonic()
    response = invoke(api_event(one_kick()))
    # THEN its call took the slot after the others' (it waited), and nothing was repaired
    assert response["statusCode"] == 200
    assert time.monotonic() - started >= ahead - 0.1
    assert printed.metric("BudgetRepairs") == 0
