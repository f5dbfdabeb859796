"""An SQS batch: its calls run concurrently, same-room messages share a call, and each message still gets
its own fair outcome."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kickout_dev.events import sqs_event
from kickout_dev.sandbox import Sandbox
from kickout_dev.zim_server import Fault
from tests.conftest import Invoke, Printed


def body(room: str, *users: str, reason: str = "spam") -> str:
    return json.dumps({"room_id": room, "user_ids": list(users), "reason": reason})


def test_ten_messages_for_one_room_become_one_zego_call(invoke: Invoke, box: Sandbox, printed: Printed) -> None:
    event = sqs_event(*(body("lobby", f"u{index}") for index in range(10)))
    response = invoke(event)
    assert response == {"batchItemFailures": []}
    assert len(box.zim.kickouts) == 1
    assert list(box.zim.kickouts[0].user_ids) == [f"u{index}" for index in range(10)]
    # each message is still audited on its own, with the shared call's RequestId
    audits = [line for line in printed.logs if line["message"] == "kickout done"]
    assert sorted(line["message_id"] for line in audits) == sorted(r["messageId"] for r in event["Records"])
    assert {tuple(line["zego_request_ids"]) for line in audits} == {("343649807833778782",)}
    assert printed.metric("ZegoCallsPerUser") == 0.1


def test_calls_for_different_rooms_are_sent_concurrently(invoke: Invoke, box: Sandbox) -> None:
    box.zim.latency = 0.2
    response = invoke(sqs_event(*(body(f"room-{index}", "u") for index in range(10))))
    assert response == {"batchItemFailures": []}
    assert len(box.zim.kickouts) == 10
    assert box.zim.max_in_flight >= 5  # sequential sending would never exceed 1


def test_one_bad_message_does_not_sink_the_messages_it_was_merged_with(invoke: Invoke, box: Sandbox) -> None:
    # GIVEN ZEGO refuses for good any call that names user "bad"
    box.zim.fault_for = lambda params: Fault.code(660000002) if "bad" in params.get("UserId[]", []) else None
    event = sqs_event(body("lobby", "good-1"), body("lobby", "bad"), body("lobby", "good-2"))
    # WHEN the three are merged into one call, which ZEGO refuses
    response = invoke(event)
    # THEN each is tried alone: the good ones are kicked, only the bad one is parked
    assert response == {"batchItemFailures": []}
    assert sorted(box.zim.kicked_user_ids) == ["good-1", "good-2"]
    parked = box.parked()
    assert [message["Body"] for message in parked] == [body("lobby", "bad")]


def test_a_merged_call_zego_cannot_take_now_is_retried_for_every_member(invoke: Invoke, box: Sandbox) -> None:
    box.zim.fault_for = lambda params: Fault.http(503)
    event = sqs_event(body("lobby", "u1"), body("lobby", "u2"))
    response = invoke(event, timeout_seconds=10)
    assert sorted(item["itemIdentifier"] for item in response["batchItemFailures"]) == sorted(
        record["messageId"] for record in event["Records"]
    )
    assert box.parked() == []


def test_a_room_that_does_not_exist_acknowledges_every_merged_member(invoke: Invoke, box: Sandbox) -> None:
    box.zim.rooms = {}
    response = invoke(sqs_event(body("gone", "u1"), body("gone", "u2")))
    assert response == {"batchItemFailures": []}
    assert box.zim.requests_seen == 1
    assert box.parked() == []


def test_users_not_in_the_room_are_acknowledged_per_message(invoke: Invoke, box: Sandbox, printed: Printed) -> None:
    # GIVEN only u1 is in the room, and ZEGO answers the merged call "user not in room"; asked alone, u1 is kicked
    box.zim.rooms = {"lobby": {"u1"}}
    box.zim.fault_for = lambda params: Fault.code(660300002) if params.get("UserId[]") == ["u1", "u2", "u3"] else None
    response = invoke(sqs_event(body("lobby", "u1"), body("lobby", "u2"), body("lobby", "u3")))
    assert response == {"batchItemFailures": []}
    assert box.zim.kicked_user_ids == ["u1"]
    outcomes = sorted(line["outcome"] for line in printed.logs if line["message"] == "kickout done")
    assert outcomes == ["kicked", "nothing_to_do", "nothing_to_do"]


def test_a_refusal_that_holds_for_the_whole_group_is_not_retried_per_message(invoke: Invoke, box: Sandbox) -> None:
    # GIVEN ZEGO refuses the operator of a group of merged messages (the operator is shared by the group)
    box.zim.fault_for = lambda params: Fault.code(660500002)
    bodies = [json.dumps({"room_id": "lobby", "user_ids": [f"u{n}"], "operator_id": "ghost"}) for n in range(3)]
    # WHEN the batch is settled
    response = invoke(sqs_event(*bodies))
    # THEN one call was enough to know: all three are parked, none was tried again alone
    assert response == {"batchItemFailures": []}
    assert box.zim.requests_seen == 1
    assert sorted(message["Body"] for message in box.parked()) == sorted(bodies)


def test_a_bug_in_one_group_costs_that_group_a_retry_not_the_batch(
    invoke: Invoke, box: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN settling room "cursed" hits an unexpected error (a bug), room "fine" does not
    from handler.zego import transport

    def send(url: str, timeout: float) -> Any:
        if "RoomId=cursed&" in url:
            raise KeyError("a bug")
        return transport.send(url, timeout)

    box.rewire(send=send)
    event = sqs_event(body("cursed", "u1"), body("fine", "u2"))
    # WHEN the batch is settled
    response = invoke(event)
    # THEN only the cursed message goes back to SQS; the other is done
    assert [item["itemIdentifier"] for item in response["batchItemFailures"]] == [event["Records"][0]["messageId"]]
    assert box.zim.kicked_user_ids == ["u2"]


def test_a_field_name_with_control_characters_is_parked_with_a_printable_detail(invoke: Invoke, box: Sandbox) -> None:
    poison = json.dumps({"room_id": "r", "user_ids": ["u"], "\u0000\u0007bad": 1})
    response = invoke(sqs_event(poison))
    assert response == {"batchItemFailures": []}
    (parked,) = box.parked()
    detail = parked["MessageAttributes"]["KickoutDetail"]["StringValue"]
    assert detail.isprintable()
    assert "\\x00\\x07bad" in detail
    assert parked["Body"] == poison
