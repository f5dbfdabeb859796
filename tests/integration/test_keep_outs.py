"""Keep-out windows through the real handler: a kickout with `keep_out_seconds` records `(app, room, user) -> until`
in the state table (moto, held to AWS's limits), extended only, the same on every SQS redelivery; a store that
fails costs the keep-out (counted, logged), never the kick."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from handler.core.models import MAX_KEEP_OUT_SECONDS
from handler.entry.direct import InvalidKickoutRequest
from handler.fleet.keep_outs import item_key
from kickout_dev.clock import SimulatedClock
from kickout_dev.events import api_event, sqs_record
from kickout_dev.sandbox import APP_ID, REGION, SERVER_SECRET, STATE_TABLE, Sandbox
from tests.conftest import Invoke, Printed, rewired_wall_clock

NOW = 1_900_000_000.25
"""The function's wall clock in these tests (a simulated one: no assertion meets today's date)."""


@pytest.fixture
def clock(box: Sandbox) -> SimulatedClock:
    return rewired_wall_clock(box, NOW)


def stored(room_id: str, user_id: str) -> dict[str, Any] | None:
    """The keep-out item of `user_id` in `room_id`, as DynamoDB holds it (None: there is none)."""
    item = boto3.client("dynamodb", region_name=REGION).get_item(
        TableName=STATE_TABLE, Key={"id": {"S": item_key(APP_ID, room_id, user_id)}}, ConsistentRead=True
    )
    return item.get("Item")


def until_of(room_id: str, user_id: str) -> int:
    item = stored(room_id, user_id)
    assert item is not None, f"no keep-out for {user_id} in {room_id}"
    assert item["expiration"] == item["until"], "the TTL is the window's end"
    return int(item["until"]["N"])


def sent_at(body: str, sent: float, *, receive_count: int = 1, message_id: str = "m-1") -> dict[str, Any]:
    record = sqs_record(body, receive_count=receive_count, message_id=message_id)
    record["attributes"]["SentTimestamp"] = str(round(sent * 1000))
    return record


def test_a_kickout_with_a_window_keeps_each_user_out_until_the_decision_plus_the_window(
    invoke: Invoke, clock: SimulatedClock, printed: Printed
) -> None:
    # GIVEN a direct kickout of two users, one of them in a room whose id holds the key's separator
    payload = {
        "room_id": "stream #42 (EU)",
        "user_ids": ["troll&co", "raid_bot_1"],
        "reason": "raid",
        "operator_id": "mod-anna",
        "keep_out_seconds": 3600,
    }

    # WHEN it is invoked
    result = invoke(payload)

    # THEN both are kicked, and each is kept out until the decision's second (rounded up) plus the hour
    assert result["kicked_user_ids"] == ["troll&co", "raid_bot_1"]
    item = stored("stream #42 (EU)", "troll&co")
    assert item is not None
    assert item["id"]["S"] == f"keepout#{APP_ID}#stream%20%2342%20%28EU%29#troll%26co"
    assert int(item["until"]["N"]) == 1_900_000_001 + 3600
    assert (item["room_id"]["S"], item["user_id"]["S"], item["reason"]["S"], item["operator_id"]["S"]) == (
        "stream #42 (EU)",
        "troll&co",
        "raid",
        "mod-anna",
    )
    assert until_of("stream #42 (EU)", "raid_bot_1") == 1_900_000_001 + 3600
    # AND the audit line says until when, the count says two
    [done] = [line for line in printed.logs if line["message"] == "kickout done"]
    assert done["keep_out_until"] == 1_900_000_001 + 3600
    assert printed.metric("KeepOutsRecorded") == 2
    assert printed.metric("KeepOutsNotRecorded") == 0


def test_a_kickout_without_a_window_records_nothing(invoke: Invoke, clock: SimulatedClock, printed: Printed) -> None:
    invoke({"room_id": "lobby-7", "user_ids": ["spammer_01"]})
    invoke({"room_id": "lobby-7", "user_ids": ["spammer_02"], "keep_out_seconds": 0})

    assert stored("lobby-7", "spammer_01") is None
    assert stored("lobby-7", "spammer_02") is None
    assert printed.metric("KeepOutsRecorded") == 0
    assert "keep_out_until" not in next(line for line in printed.logs if line["message"] == "kickout done")


def test_a_later_end_extends_the_window_and_a_sooner_one_never_shortens_it(
    invoke: Invoke, clock: SimulatedClock
) -> None:
    # GIVEN a user kept out for a day
    invoke({"room_id": "lobby-7", "user_ids": ["spammer_01"], "keep_out_seconds": 86_400, "reason": "spam"})
    day = until_of("lobby-7", "spammer_01")

    # WHEN an hour later a kickout keeps them out for a minute
    clock.now += 3600
    invoke({"room_id": "lobby-7", "user_ids": ["spammer_01"], "keep_out_seconds": 60, "reason": "again"})

    # THEN the day stands, with its reason
    assert until_of("lobby-7", "spammer_01") == day
    assert stored("lobby-7", "spammer_01")["reason"]["S"] == "spam"  # type: ignore[index]

    # WHEN a kickout then keeps them out for a week
    invoke({"room_id": "lobby-7", "user_ids": ["spammer_01"], "keep_out_seconds": MAX_KEEP_OUT_SECONDS})

    # THEN the window ends a week after that decision, and the day's reason is not left on the week's item
    assert until_of("lobby-7", "spammer_01") == 1_900_000_001 + 3600 + MAX_KEEP_OUT_SECONDS
    assert "reason" not in stored("lobby-7", "spammer_01")  # type: ignore[operator]


def test_a_user_not_in_the_room_is_kept_out_too(box: Sandbox, clock: SimulatedClock) -> None:
    # GIVEN a room the user is not in
    box.zim.rooms = {"lobby-7": {"someone_else"}}

    # WHEN they are kicked with a window through the API
    response = box.handler(
        api_event(json.dumps({"room_id": "lobby-7", "user_ids": ["lurker"], "keep_out_seconds": 600})), box.context()
    )

    # THEN the API says not in the room, and the user is kept out all the same: they may enter a second later
    body = json.loads(response["body"])
    assert (response["statusCode"], body["result"]["absent_user_ids"]) == (404, ["lurker"])
    assert until_of("lobby-7", "lurker") == 1_900_000_001 + 600


def test_a_redelivered_message_keeps_the_same_end_whenever_it_is_received(
    box: Sandbox, clock: SimulatedClock, printed: Printed
) -> None:
    # GIVEN a message sent 10 s before the function's clock, with a window of 5 minutes
    body = json.dumps({"room_id": "lobby-7", "user_ids": ["spammer_01"], "keep_out_seconds": 300})
    sent = NOW - 10

    # WHEN it is received, then redelivered 90 s later (its first answer lost), then once more
    box.handler({"Records": [sent_at(body, sent)]}, box.context())
    first = until_of("lobby-7", "spammer_01")
    for receive_count in (2, 3):
        clock.now += 90
        response = box.handler({"Records": [sent_at(body, sent, receive_count=receive_count)]}, box.context())
        assert response == {"batchItemFailures": []}

    # THEN the window ends 5 minutes after the message was sent, every time
    assert first == until_of("lobby-7", "spammer_01") == 1_899_999_991 + 300
    # AND the kick was done on every receive, the keep-out recorded each time (two of them left as they were)
    assert len(box.zim.kickouts) == 3
    assert printed.metric("KeepOutsRecorded") == 3
    done = [line for line in printed.logs if line["message"] == "kickout done"]
    assert [line["keep_out_until"] for line in done] == [1_899_999_991 + 300] * 3


def test_messages_merged_into_one_call_keep_their_own_windows(
    box: Sandbox, clock: SimulatedClock, printed: Printed
) -> None:
    # GIVEN two messages for one room, merged into one ZEGO call, one with a window and one without
    with_window = json.dumps({"room_id": "lobby-7", "user_ids": ["spammer_01"], "keep_out_seconds": 120})
    without = json.dumps({"room_id": "lobby-7", "user_ids": ["spammer_02"]})

    # WHEN the batch is handled
    response = box.handler(
        {"Records": [sent_at(with_window, NOW, message_id="a"), sent_at(without, NOW, message_id="b")]},
        box.context(),
    )

    # THEN one call kicked both, and only the first is kept out
    assert response == {"batchItemFailures": []}
    assert [kickout.user_ids for kickout in box.zim.kickouts] == [("spammer_01", "spammer_02")]
    assert until_of("lobby-7", "spammer_01") == 1_900_000_001 + 120
    assert stored("lobby-7", "spammer_02") is None


def test_a_window_that_ended_before_zego_answered_records_nothing(box: Sandbox, clock: SimulatedClock) -> None:
    # GIVEN a message with a minute's window, received two minutes after it was sent (ZEGO was down meanwhile)
    body = json.dumps({"room_id": "lobby-7", "user_ids": ["spammer_01"], "keep_out_seconds": 60})

    # WHEN it is handled
    box.handler({"Records": [sent_at(body, NOW - 120)]}, box.context())

    # THEN the user is kicked, and no keep-out that ended already is written
    assert box.zim.kicked_user_ids == ["spammer_01"]
    assert stored("lobby-7", "spammer_01") is None


def test_a_store_that_fails_costs_the_keep_out_never_the_kick(box: Sandbox, printed: Printed) -> None:
    # GIVEN the keep-outs' client asks a Region where the table does not exist (DynamoDB: ResourceNotFound)
    box.rewire(
        wall_clock=SimulatedClock(now=NOW), keep_out_dynamodb=lambda: boto3.client("dynamodb", region_name="us-west-2")
    )

    # WHEN a kickout with a window is invoked, and one through the queue
    result = box.handler(
        {"room_id": "lobby-7", "user_ids": ["spammer_01", "spammer_02"], "keep_out_seconds": 60}, box.context()
    )
    response = box.handler(
        {"Records": [sent_at(json.dumps({"room_id": "r", "user_ids": ["u"], "keep_out_seconds": 60}), NOW)]},
        box.context(),
    )

    # THEN both kicks are done and acknowledged
    assert result["kicked_user_ids"] == ["spammer_01", "spammer_02"]
    assert response == {"batchItemFailures": []}
    assert box.zim.kicked_user_ids == ["spammer_01", "spammer_02", "u"]
    # AND the lost keep-outs are counted and said, naming DynamoDB's answer and the rooms, and nothing secret
    assert printed.metric("KeepOutsNotRecorded") == 3
    assert printed.metric("KeepOutsRecorded") == 0
    warnings = [line for line in printed.logs if line["message"].startswith("keep-outs not recorded")]
    assert [(line["keep_outs_not_recorded"], line["room_ids"]) for line in warnings] == [(2, ["lobby-7"]), (1, ["r"])]
    assert all("ResourceNotFoundException" in line["error"] for line in warnings)
    assert SERVER_SECRET not in printed.text
    assert stored("lobby-7", "spammer_01") is None


def test_keep_outs_are_not_started_without_time_for_a_store_call(
    box: Sandbox, clock: SimulatedClock, printed: Printed
) -> None:
    # GIVEN the secret read and cached (a kickout before), and an invocation with 2.5 s left: enough for ZEGO's
    # call, not for a keep-out's worst case of 3 s
    box.handler({"room_id": "lobby-7", "user_ids": ["earlier"]}, box.context())
    payload = {"room_id": "lobby-7", "user_ids": ["spammer_01"], "keep_out_seconds": 60}

    # WHEN it is invoked
    result = box.handler(payload, box.context(timeout_seconds=2.5))

    # THEN the kick is done, and the keep-out is counted as not recorded, out of time
    assert result["kicked_user_ids"] == ["spammer_01"]
    assert printed.metric("KeepOutsNotRecorded") == 1
    [warning] = [line for line in printed.logs if line["message"].startswith("keep-outs not recorded")]
    assert warning["error"].startswith("out of time")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (-1, "greater than or equal to 0"),
        (MAX_KEEP_OUT_SECONDS + 1, f"less than or equal to {MAX_KEEP_OUT_SECONDS}"),
        (1.5, "a valid integer"),
        ("60", "a valid integer"),
        (True, "a valid integer"),
        (None, "a valid integer"),
    ],
)
def test_a_window_out_of_range_or_not_a_whole_number_is_refused_naming_the_field(
    invoke: Invoke, box: Sandbox, clock: SimulatedClock, value: Any, problem: str
) -> None:
    # WHEN a payload carries the window as `value`
    with pytest.raises(InvalidKickoutRequest) as raised:
        invoke({"room_id": "lobby-7", "user_ids": ["spammer_01"], "keep_out_seconds": value})

    # THEN it is refused naming the field and the rule; ZEGO got nothing, nothing was recorded
    assert f"keep_out_seconds: Input should be {problem}" in str(raised.value)
    assert box.zim.requests_seen == 0
    assert stored("lobby-7", "spammer_01") is None


def test_the_api_refuses_a_bad_window_with_422_naming_the_field(box: Sandbox, clock: SimulatedClock) -> None:
    response = box.handler(
        api_event(json.dumps({"room_id": "lobby-7", "user_ids": ["spammer_01"], "keep_out_seconds": 10**9})),
        box.context(),
    )

    body = json.loads(response["body"])
    assert response["statusCode"] == 422
    assert [problem["field"] for problem in body["fields"]] == ["keep_out_seconds"]
    assert box.zim.requests_seen == 0


def test_an_invalid_window_in_a_queue_message_parks_the_message(box: Sandbox, clock: SimulatedClock) -> None:
    body = json.dumps({"room_id": "lobby-7", "user_ids": ["spammer_01"], "keep_out_seconds": -5})

    response = box.handler({"Records": [sent_at(body, NOW)]}, box.context())

    assert response == {"batchItemFailures": []}
    [parked] = box.parked()
    assert parked["MessageAttributes"]["KickoutFailure"]["StringValue"] == "invalid_payload"
    assert "keep_out_seconds" in parked["MessageAttributes"]["KickoutDetail"]["StringValue"]
    assert box.zim.requests_seen == 0
